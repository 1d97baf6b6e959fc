"""The report in MLflow: each arm's representative model, and the report on the parent run.

* ``models_table(a)``: per arm, the replicate run whose primary metric is closest to the arm's
  median over seeds (ties: the lower seed), with the URI its model loads from,
  ``runs:/<run id>/model``: ``mlflow.pytorch.load_model("runs:/<run id>/model")``. The runner
  logs a completed replicate run's model only for a trainable that declares ``mlflow_model``
  (study.json ``trainables``; study/run_contents.py); the table says per arm what the store
  holds, and counts the runs that hold one, never more.
* ``log_report(result)``: logs ``report.html`` and ``comparison.md`` to the study's parent run
  (the figures are logged by ``report.write_report`` under ``figures/``), so the MLflow UI
  holds the whole study: its runs, their models and its report.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from analysis import tables
from analysis.definition import declares_mlflow_model
from analysis.tables import Table
from study import records

REPORT_FILES = ("report.html", "comparison.md")


def model_uri(run_id: str) -> str:
    return f"runs:/{run_id}/{records.MODEL_NAME}"


def representative_runs(a) -> pd.DataFrame:
    """rows: one per arm with scores; arm, seed, run_id, value (primary metric), median (the
    arm's, over seeds), model_uri, has_model (bool: the run holds a logged model)."""
    scores = a.scores[a.scores["metric"] == a.metric]
    rows = []
    for arm in a.arms:
        runs = scores[scores["arm"] == arm]
        if runs.empty:
            continue
        median = float(runs["value"].median())
        # rows: the arm's runs, closest to its median first, then by seed (distances rounded:
        # 0.80 and 0.90 are equally far from 0.85, which floats do not say)
        ranked = runs.assign(distance=(runs["value"] - median).abs().round(12)).sort_values(["distance", "seed"])
        best = ranked.iloc[0]
        rows.append({"arm": arm, "seed": int(best["seed"]), "run_id": best["run_id"], "value": float(best["value"]),
                     "median": median, "model_uri": model_uri(best["run_id"]),
                     "has_model": _has_model(a.study.client, best["run_id"])})
    return pd.DataFrame(rows, columns=["arm", "seed", "run_id", "value", "median", "model_uri", "has_model"])


def _has_model(client, run_id: str) -> bool:
    try:
        return records.has_model(client, run_id)
    except Exception:  # noqa: BLE001 - a missing run shows as "no model", not as a crash
        return False


def models_table(a) -> Table:
    """rows: one per arm: its representative run and the model it holds (or why none)."""
    data = representative_runs(a)
    declared = declares_mlflow_model(a.study.definition())
    display = pd.DataFrame({
        "arm": data["arm"], "seed": data["seed"],
        tables.label(a.metric): [tables.num(v) for v in data["value"]],
        "arm median": [tables.num(v) for v in data["median"]],
        "MLflow model": [_model_text(run_id, ok, declared) for run_id, ok in zip(data["run_id"], data["has_model"])]})
    title = ("Representative model of each arm (load with mlflow.pytorch.load_model(URI))" if data["has_model"].any()
             else "Representative run of each arm")
    return Table("models", title, display, data,
                 f"The replicate run whose {tables.label(a.metric)} is closest to its arm's median over seeds "
                 f"(ties: the lower seed). {_holding(a, declared)}")


def _model_text(run_id: str, held: bool, declared: bool | None) -> str:
    if held:
        return model_uri(run_id)
    if declared is False:
        return f"no MLflow model: the trainable declares none (run {run_id})"
    return f"none logged (run {run_id})"


def _holding(a, declared: bool | None) -> str:
    """What the completed replicate runs of the report hold, counted."""
    run_ids = sorted(set(a.scores["run_id"]))
    held = sum(_has_model(a.study.client, run_id) for run_id in run_ids)
    if run_ids and held == len(run_ids):
        return f"Every completed replicate run holds its model ({held} of {len(run_ids)}): runs:/<run id>/model."
    if declared is False:
        which = (f"{held} of {len(run_ids)} completed replicate runs hold one" if held
                 else "no completed replicate run holds one")
        return ("The trainable declares no MLflow model (no mlflow_model; study.json records its declarations), "
                f"so {which}; its runs hold the files the trainable wrote.")
    return (f"{held} of {len(run_ids)} completed replicate runs hold an MLflow model"
            + (" although the trainable declares one." if declared else "."))


def log_report(result) -> list[str]:
    """Logs the report files of ``result`` (a report.ReportResult) to the study's parent run;
    returns the artifact paths logged. A failure is a warning: the files on disk remain."""
    study = result.analysis.study
    logged = []
    for name in REPORT_FILES:
        path = Path(result.output_dir) / name
        if not path.exists():
            continue
        try:
            study.client.log_artifact(study.parent_run_id, str(path))
            logged.append(name)
        except Exception as err:  # noqa: BLE001
            print(f"warning: {name} could not be logged to the parent run {study.parent_run_id}: "
                  f"{type(err).__name__}: {err}", file=sys.stderr)
    return logged
