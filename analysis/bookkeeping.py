"""Bookkeeping tables: the arm x seed completeness matrix, the configuration that tells the
arms apart, and the cost of every run. Pure pandas on ``StudyRecord.runs``-shaped frames (see
``analysis.load``); no statistics.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from study.records import Outcome, PHASE_REPLICATE, PHASE_TUNE, STAGE_CLASSIFY, STAGE_UPSTREAM

# -- bookkeeping tables: completeness, hyperparameters, cost --------------------------------

STATUS_ORDER = (Outcome.COMPLETED, Outcome.RUNNING, Outcome.INTERRUPTED, Outcome.FAILED, Outcome.PRUNED)


def completeness(runs: pd.DataFrame, arms: Sequence[str], seeds: Sequence[int]) -> pd.DataFrame:
    """Arm x seed matrix of the best outcome of the runs in each cell.

    ``runs``: rows: one per trial run (columns ``arm``, ``seed``, ``outcome``). Returns
    rows: one per arm (index), columns: one per seed; values "completed", "running",
    "failed", "pruned" or "missing"; a cell with several attempts gets "(k runs)" appended.
    """
    matrix = pd.DataFrame("missing", index=pd.Index(list(arms), name="arm"),
                          columns=pd.Index(list(seeds), name="seed"), dtype=object)
    # groups: one per (arm, seed) cell; its attempts
    for (arm, seed), g in runs.groupby(["arm", "seed"]):
        if arm not in matrix.index or seed not in matrix.columns:
            continue
        outcomes = list(g["outcome"].fillna("unknown"))
        best = next((s for s in STATUS_ORDER if s in outcomes), outcomes[0])
        matrix.loc[arm, seed] = best if len(outcomes) == 1 else f"{best} ({len(outcomes)} runs)"
    return matrix


def tuned_hyperparameters(runs: pd.DataFrame, tune_runs: pd.DataFrame | None = None,
                          ignore: Iterable[str] = ("seed",)) -> pd.DataFrame:
    """The configuration that tells the arms apart: per arm, the value of every param that
    differs across arms (the scientific settings and the tuned values) or that the tune phase
    varied (the nuisance search space), as long as it is constant within each arm.

    ``runs``: the replicate runs, rows: one per run; columns ``arm`` and ``params.<key>``.
    ``tune_runs``: the same stage's tune-phase trials (optional). Returns rows: one per arm;
    columns: the param keys (without prefix). Params that vary within an arm (the seed,
    per-run paths) are left out, as are those in ``ignore``.
    """
    ignore = set(ignore)
    cols = [c for c in runs.columns if c.startswith("params.") and c.removeprefix("params.") not in ignore]
    if runs.empty or not cols:
        return pd.DataFrame(index=pd.Index([], name="arm"))
    searched = set()
    if tune_runs is not None and len(tune_runs) > 1:
        searched = {c for c in cols if c in tune_runs and tune_runs[c].nunique(dropna=False) > 1}
    keep = []
    for c in cols:
        constant_in_arm = (runs.groupby("arm")[c].nunique(dropna=False) <= 1).all()
        logged = runs[c].notna().any()
        if logged and constant_in_arm and (runs[c].nunique(dropna=False) > 1 or c in searched):
            keep.append(c)
    # rows: one per arm; the (constant) value of each kept param
    table = runs.groupby("arm", sort=False)[keep].first()
    table.columns = [c.removeprefix("params.") for c in keep]
    return table


def run_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """Wall and GPU seconds of each run, from its cost metrics or, when a run never logged them
    (pruned, failed, still running), from its MLflow start and end times.

    rows: one per run; columns stage, arm, phase, outcome, wall_s, gpu_s, measured (True when
    both came from the ``cost/*`` metrics).
    """
    # The runner logs the whole trial's wall time (cost/wall_seconds_trial, pruned trials
    # too); the trainable's own cost/wall_seconds exists only for completed runs.
    wall_metric = _col(runs, "metrics.cost/wall_seconds_trial").fillna(
        _col(runs, "metrics.cost/wall_seconds"))
    gpu_metric = _col(runs, "metrics.cost/gpu_seconds")
    duration = _col(runs, "duration_s")
    gpus = pd.to_numeric(_col(runs, "gpus_per_trial"), errors="coerce").fillna(0.0)
    wall = wall_metric.fillna(duration)
    gpu = gpu_metric.fillna(gpus * wall)
    return pd.DataFrame({"stage": runs["stage"], "arm": runs["arm"], "phase": runs["phase"],
                         "outcome": runs["outcome"], "wall_s": wall, "gpu_s": gpu,
                         "measured": wall_metric.notna() & gpu_metric.notna()})


def cost_table(runs: pd.DataFrame, pretraining_of: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """rows: one per (stage, arm) plus a final ``total`` row; columns: tune trials (and how
    many were pruned), tune/replicate/total wall and GPU seconds, and how many runs' cost had
    to be estimated from MLflow timestamps.

    ``pretraining_of``: classify arm -> the pretraining arms (keys) it builds on. Their whole
    cost (tune + replicate) is added to the arm in ``wall_with_pretraining_s`` /
    ``gpu_with_pretraining_s``; shared pretraining thus counts once per arm there, and once
    in the total row.
    """
    c = run_costs(runs)
    rows = []
    # groups: one per (stage, arm); all its runs (pruned and failed included)
    for (stage, arm), g in c.groupby(["stage", "arm"], sort=False):
        rows.append(_cost_row(stage, arm, g))
    rows.append(_cost_row("all", "total", c))
    table = pd.DataFrame(rows)
    pre = c[c["stage"] == STAGE_UPSTREAM].groupby("arm")[["wall_s", "gpu_s"]].sum()
    extra = [[pre.loc[k] for k in (pretraining_of or {}).get(r.arm, ()) if k in pre.index]
             if r.stage == STAGE_CLASSIFY else [] for r in table.itertuples(index=False)]
    table["wall_with_pretraining_s"] = table["wall_s"] + [sum(float(e["wall_s"]) for e in x) for x in extra]
    table["gpu_with_pretraining_s"] = table["gpu_s"] + [sum(float(e["gpu_s"]) for e in x) for x in extra]
    return table


def _cost_row(stage, arm, g: pd.DataFrame) -> dict:
    tune = g[g["phase"] == PHASE_TUNE]
    rep = g[g["phase"] == PHASE_REPLICATE]
    return {"stage": stage, "arm": arm, "tune_trials": len(tune),
            "tune_pruned": int((tune["outcome"] == Outcome.PRUNED).sum()),
            "tune_wall_s": tune["wall_s"].sum(), "tune_gpu_s": tune["gpu_s"].sum(),
            "replicate_runs": len(rep), "replicate_wall_s": rep["wall_s"].sum(),
            "replicate_gpu_s": rep["gpu_s"].sum(), "wall_s": g["wall_s"].sum(),
            "gpu_s": g["gpu_s"].sum(), "estimated_runs": int((~g["measured"]).sum())}


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame:
        return pd.to_numeric(frame[name], errors="coerce")
    return pd.Series(np.nan, index=frame.index, dtype=float)
