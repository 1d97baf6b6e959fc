"""MLflow -> tidy pandas frames for one study, found by tags (``study.records``, the contract
with the runner; docs/architecture.md §2).

Runs are found by their tags, never by their names: the study's parent run is the latest run
with ``run_kind=study`` and ``study=<name>`` (in any experiment of the store), its trials are
the runs whose ``mlflow.parentRunId`` is that parent and ``run_kind=trial``.

Frames (the columns are documented here once; later reshapes only say their rows)

``StudyRecord.runs``   rows: one per trial run of the study invocation
    run_id, stage ("upstream" | "classify"; an older store's "pretrain" reads "upstream"), arm,
    phase ("tune" | "replicate"),
    seed (Int64), trial_id, outcome ("completed" | "pruned" | "failed" | "running"),
    failure_reason, is_baseline (bool), config_hash, git_commit, git_dirty, gpus_per_trial
    (float), mlflow_status, start_time, end_time (UTC timestamps; end NaT while running),
    duration_s (end - start, or now - start while running),
    ``factor.<name>`` (str) per scientific factor,
    ``uses.<slot>.upstream``, ``uses.<slot>.seed``, ``uses.<slot>.file`` (str) per upstream file
    the trial loaded (``study.records.artifact_refs`` reads them back, for runs recorded before
    these tags too),
    ``params.<key>`` (str, as MLflow stores params) per resolved trainable config key,
    ``metrics.<key>`` (float) the latest value per metric key; for the final scalars
    (``test/*``, ``cost/*``) that is the value logged at the last step.

``StudyRecord.scores(metrics)``   rows: one per (arm, seed, metric) of the comparison runs
    (``stage=classify``, ``phase=replicate``, ``outcome=completed``)
    arm, seed, run_id, metric, value

``StudyRecord.history(keys, runs)``   rows: one per (run, key, step)
    run_id, arm, seed, phase, outcome, key, step, value
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from study import records
from study.records import PHASE_REPLICATE, STAGE_CLASSIFY, Outcome, RunKind, StudyStatus, Tag

# The four test metrics of the comparison table (docs/architecture.md §1), in table order.
DEFAULT_METRICS = ("test/acc", "test/f1_macro", "test/roc_auc", "test/log_loss")
METRIC_LABELS = {"test/acc": "accuracy", "test/f1_macro": "macro F1", "test/roc_auc": "ROC-AUC",
                 "test/log_loss": "log-loss", "test/precision_macro": "macro precision",
                 "test/recall_macro": "macro recall"}

_TAG_COLUMNS = (Tag.STAGE, Tag.ARM, Tag.PHASE, Tag.SEED, Tag.TRIAL_ID, Tag.OUTCOME, Tag.FAILURE_REASON,
                Tag.IS_BASELINE, Tag.CONFIG_HASH, Tag.GIT_COMMIT, Tag.GIT_DIRTY, Tag.GPUS_PER_TRIAL)


class AnalysisError(Exception):
    """A problem with the input the user can fix; the CLI prints it without a traceback."""


class StudyNotFound(AnalysisError):
    pass


class MetricNotFound(AnalysisError):
    pass


def _local_store_missing(uri: str) -> str | None:
    """For sqlite and file stores, the path when it does not exist (MLflow would silently
    create an empty store there)."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        path = "/" + path.lstrip("/") if uri.startswith("sqlite:////") else path
        return None if path == ":memory:" or Path(path).exists() else path
    if uri.startswith("file:") or "://" not in uri:
        path = uri.removeprefix("file://").removeprefix("file:")
        return None if Path(path).exists() else path
    return None


def make_client(tracking_uri: str | None = None):
    from mlflow.tracking import MlflowClient

    # artifact downloads print a progress bar per file by default: noise in a report's log
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri or records.default_tracking_uri()
    missing = _local_store_missing(uri)
    if missing is not None:
        raise StudyNotFound(f"no MLflow store at {missing} (tracking URI {uri}); "
                            "run a study first or pass --tracking-uri")
    records.prepare_store(uri)       # a study starting on the same new store at this moment
    return MlflowClient(tracking_uri=uri), uri


def _search_all(client, experiment_ids: Sequence[str], filter_string: str,
                order_by: Sequence[str] | None = None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string, max_results=1000,
                                  order_by=list(order_by or []), page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_ids(client) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def list_studies(client) -> dict[str, int]:
    """Study name -> number of invocations (parent runs) in the store."""
    ids = _experiment_ids(client)
    if not ids:
        return {}
    counts: dict[str, int] = {}
    for run in _search_all(client, ids, records.run_filter({Tag.RUN_KIND: RunKind.STUDY})):
        name = run.data.tags.get(Tag.STUDY, "?")
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class StudyRecord:
    """One invocation of a study as recorded in MLflow: the parent run's tags and its trials."""
    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    parent_tags: dict[str, str]
    parent_status: str                  # MLflow status of the parent run (RUNNING, FINISHED...)
    runs: pd.DataFrame                  # see the module docstring
    other_invocations: tuple[str, ...]  # run ids of earlier/later parent runs of the same study
    client: object = field(repr=False)
    parent_start_ms: int | None = None  # the parent run's start and end (epoch ms; end None while running)
    parent_end_ms: int | None = None
    _artifact_dir: Path | None = field(default=None, repr=False)
    _history_cache: dict = field(default_factory=dict, repr=False)

    # -- the parent's tags -----------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.parent_tags.get(Tag.STUDY_STATUS, "unknown")

    @property
    def running_trials(self) -> int:
        return int((self.runs["outcome"] == Outcome.RUNNING).sum()) if len(self.runs) else 0

    @property
    def is_partial(self) -> bool:
        """True while the study runs (or was interrupted): the report is then partial."""
        return self.status != StudyStatus.FINISHED or self.running_trials > 0

    @property
    def design(self) -> str:
        return self.parent_tags.get(Tag.DESIGN, "one_at_a_time")

    @property
    def factors(self) -> list[str]:
        raw = self.parent_tags.get(Tag.FACTORS)
        if raw:
            try:
                return list(json.loads(raw))
            except (json.JSONDecodeError, TypeError):
                pass
        return sorted(c.removeprefix(Tag.FACTOR) for c in self.runs.columns if c.startswith(Tag.FACTOR))

    @property
    def baseline_arm(self) -> str | None:
        tag = self.parent_tags.get(Tag.BASELINE_ARM)
        if tag:
            return tag
        base = self.comparison_runs()
        base = base[base["is_baseline"]]
        return str(base["arm"].iloc[0]) if len(base) else None

    @property
    def versions(self) -> dict[str, str]:
        return {k.removeprefix(Tag.VERSIONS): v for k, v in sorted(self.parent_tags.items())
                if k.startswith(Tag.VERSIONS)}

    # -- selections ------------------------------------------------------------------------
    def select(self, stage: str | None = None, phase: str | None = None,
               outcome: str | None = None) -> pd.DataFrame:
        r = self.runs
        mask = pd.Series(True, index=r.index)
        for col, value in (("stage", stage), ("phase", phase), ("outcome", outcome)):
            if value is not None:
                mask &= r[col] == value
        return r[mask]

    def comparison_runs(self) -> pd.DataFrame:
        """The runs that feed the comparison tables (docs/architecture.md §2, last bullet)."""
        return self.select(stage=STAGE_CLASSIFY, phase=PHASE_REPLICATE, outcome=Outcome.COMPLETED)

    def arms(self, stage: str = STAGE_CLASSIFY) -> list[str]:
        """Arms in a stable order: the parent's ``arms`` tag (JSON list) when the runner sets
        it, else every arm with a run of this stage; the baseline first."""
        raw = self.parent_tags.get(Tag.ARMS) if stage == STAGE_CLASSIFY else None
        arms: list[str] = []
        if raw:
            try:
                arms = [str(a) for a in json.loads(raw)]
            except (json.JSONDecodeError, TypeError):
                arms = []
        seen = self.select(stage=stage)["arm"].dropna().unique().tolist()
        arms += sorted(a for a in seen if a not in arms)
        base = self.baseline_arm if stage == STAGE_CLASSIFY else None
        return ([base] if base in arms else []) + [a for a in arms if a != base]

    def seeds(self, stage: str = STAGE_CLASSIFY) -> list[int]:
        """Replicate seeds: the parent's ``seeds`` tag (JSON list) when set, else every seed of
        a replicate run of this stage."""
        raw = self.parent_tags.get(Tag.SEEDS)
        seeds: set[int] = set()
        if raw:
            try:
                seeds = {int(s) for s in json.loads(raw)}
            except (json.JSONDecodeError, TypeError, ValueError):
                seeds = set()
        rep = self.select(stage=stage, phase=PHASE_REPLICATE)
        seeds |= {int(s) for s in rep["seed"].dropna()}
        return sorted(seeds)

    def metric_names(self, runs: pd.DataFrame | None = None) -> list[str]:
        """Metric keys logged (with a value) by ``runs`` (default: the comparison runs)."""
        runs = self.comparison_runs() if runs is None else runs
        return sorted(c.removeprefix("metrics.") for c in runs.columns
                      if c.startswith("metrics.") and runs[c].notna().any())

    def check_metric(self, metric: str) -> None:
        if metric not in self.metric_names():
            raise MetricNotFound(
                f"metric {metric!r} was not logged by the comparison runs of study {self.name!r} "
                f"(stage=classify, phase=replicate, outcome=completed); metrics that exist: "
                f"{', '.join(self.metric_names()) or '(none)'}")

    def scores(self, metrics: Iterable[str]) -> pd.DataFrame:
        """rows: one per (arm, seed, metric) of the comparison runs; see the module docstring.

        Should a cell hold several completed replicate runs (a rerun), the latest counts.
        """
        metrics = list(metrics)
        for m in metrics:
            self.check_metric(m)
        runs = self.comparison_runs().sort_values("start_time")
        # rows: one per (arm, seed): the latest completed replicate run
        runs = runs.drop_duplicates(["arm", "seed"], keep="last")
        cols = {f"metrics.{m}": m for m in metrics}
        long = runs[["arm", "seed", "run_id", *cols]].rename(columns=cols).melt(
            id_vars=["arm", "seed", "run_id"], var_name="metric", value_name="value")
        # rows: one per (arm, seed, metric); a run that lacks a metric gives no row
        long = long.dropna(subset=["value"])
        long["seed"] = long["seed"].astype(int)
        return long.reset_index(drop=True)

    def arm_levels(self) -> pd.DataFrame:
        """rows: one per classify arm; columns ``arm`` and one per factor (its level)."""
        cols = [f"factor.{f}" for f in self.factors if f"factor.{f}" in self.runs]
        runs = self.select(stage=STAGE_CLASSIFY)
        table = runs[["arm", *cols]].dropna().drop_duplicates("arm")
        return table.rename(columns={c: c.removeprefix("factor.") for c in cols}).reset_index(drop=True)

    def reference_levels(self) -> dict[str, str]:
        """Factor -> level of the baseline arm."""
        levels = self.arm_levels()
        base = levels[levels["arm"] == self.baseline_arm]
        if base.empty:
            return {}
        return {f: str(base[f].iloc[0]) for f in levels.columns if f != "arm"}

    # -- metric histories and artifacts ----------------------------------------------------
    def history(self, keys: Sequence[str], runs: pd.DataFrame) -> pd.DataFrame:
        """Per-step metric history; rows: one per (run, key, step). Cached per (run, key)."""
        rows = []
        for run in runs.itertuples(index=False):
            for key in keys:
                cache_key = (run.run_id, key)
                if cache_key not in self._history_cache:
                    self._history_cache[cache_key] = [
                        (m.step, m.value) for m in self.client.get_metric_history(run.run_id, key)]
                for step, value in self._history_cache[cache_key]:
                    rows.append({"run_id": run.run_id, "arm": run.arm, "seed": run.seed,
                                 "phase": run.phase, "outcome": run.outcome, "key": key,
                                 "step": int(step), "value": float(value)})
        frame = pd.DataFrame(rows, columns=["run_id", "arm", "seed", "phase", "outcome", "key",
                                            "step", "value"])
        # a metric logged twice at one step (a resumed trial): keep the last
        return frame.drop_duplicates(["run_id", "key", "step"], keep="last")

    def artifact(self, run_id: str, path: str) -> Path | None:
        """Local copy of an artifact of a run, or None when the run did not log it."""
        if self._artifact_dir is None:
            self._artifact_dir = Path(tempfile.mkdtemp(prefix=f"analysis-{self.name}-"))
            # downloads live as long as the StudyRecord object
            weakref.finalize(self, shutil.rmtree, self._artifact_dir, True)
        dst = self._artifact_dir / run_id
        local = dst / path
        if local.exists():
            return local
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception:  # MLflow raises several types (OSError, MlflowException) for "absent"
            return None

    def definition(self) -> dict | None:
        """The parent run's ``study.json``: factors, arms, planned contrasts, equivalence
        margin (study/spec.py ``Study.definition``); None for a run recorded before it existed
        or when it does not parse."""
        key = ("definition", self.parent_run_id)
        if key not in self._history_cache:
            path = self.artifact(self.parent_run_id, records.STUDY_DEFINITION_FILE)
            try:
                self._history_cache[key] = json.loads(path.read_text()) if path is not None else None
            except (OSError, json.JSONDecodeError):
                self._history_cache[key] = None
        return self._history_cache[key]

    def evaluations(self, runs: pd.DataFrame) -> dict[tuple[str, int], dict]:
        """(arm, seed) -> the ``evaluation.json`` of each of ``runs`` that logged one."""
        out = {}
        for run in runs.itertuples(index=False):
            path = self.artifact(run.run_id, "evaluation.json")
            if path is not None:
                out[(str(run.arm), int(run.seed))] = json.loads(path.read_text())
        return out


def load_study(name: str, tracking_uri: str | None = None,
               parent_run_id: str | None = None, budget: str | None = None) -> StudyRecord:
    """The study's latest invocation (of ``budget`` when given, or exactly ``parent_run_id``)
    and its trial runs.

    Raises ``StudyNotFound`` naming the URI searched and the studies the store holds.
    """
    client, uri = make_client(tracking_uri)
    ids = _experiment_ids(client)
    parents = _search_all(client, ids, records.run_filter({Tag.RUN_KIND: RunKind.STUDY, Tag.STUDY: name}),
                          order_by=["attributes.start_time DESC"]) if ids else []
    if parents and budget is not None:
        budgets = sorted({p.data.tags.get(Tag.BUDGET, "?") for p in parents})
        parents = [p for p in parents if p.data.tags.get(Tag.BUDGET) == budget]
        if not parents:
            raise StudyNotFound(f"study {name!r} at {uri} has no run with budget {budget!r}; "
                                f"budgets: {', '.join(budgets)}")
    if not parents:
        held = list_studies(client) if ids else {}
        listing = (", ".join(f"{s} ({n} invocation{'s' * (n != 1)})" for s, n in held.items())
                   if held else "none (no runs tagged run_kind=study)")
        raise StudyNotFound(f"no study {name!r} in the MLflow store at {uri}; studies there: {listing}")
    if parent_run_id is not None:
        chosen = [p for p in parents if p.info.run_id == parent_run_id]
        if not chosen:
            raise StudyNotFound(f"run {parent_run_id} is not a parent run of study {name!r} at {uri}; "
                                f"its parent runs: {', '.join(p.info.run_id for p in parents)}")
        parent = chosen[0]
    else:
        parent = parents[0]
    children = _search_all(client, [parent.info.experiment_id],
                           records.run_filter({Tag.PARENT: parent.info.run_id, Tag.RUN_KIND: RunKind.TRIAL}))
    runs = runs_frame(children)
    return StudyRecord(name=name, tracking_uri=uri, experiment_id=parent.info.experiment_id,
                 parent_run_id=parent.info.run_id, parent_tags=dict(parent.data.tags),
                 parent_status=parent.info.status, runs=runs,
                 other_invocations=tuple(p.info.run_id for p in parents
                                         if p.info.run_id != parent.info.run_id),
                 client=client, parent_start_ms=parent.info.start_time, parent_end_ms=parent.info.end_time)


def runs_frame(runs: Sequence) -> pd.DataFrame:
    """MLflow ``Run`` objects -> rows: one per run, the columns of the module docstring."""
    now_ms = time.time() * 1000
    rows = []
    for run in runs:
        tags, info = run.data.tags, run.info
        row = {"run_id": info.run_id}
        for key in _TAG_COLUMNS:
            row[key] = tags.get(key)
        row[Tag.STAGE] = records.stage_of(tags)          # an older store's "pretrain" is "upstream"
        end = info.end_time if info.end_time else None
        row["mlflow_status"] = info.status
        row["start_time"] = info.start_time
        row["end_time"] = end
        row["duration_s"] = ((end or now_ms) - info.start_time) / 1000 if info.start_time else np.nan
        row.update({k: v for k, v in tags.items() if k.startswith(Tag.FACTOR)})
        for slot, ref in records.artifact_refs(tags, run.data.params).items():
            row.update(ref.tags(slot))
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"metrics.{k}": float(v) for k, v in run.data.metrics.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", *_TAG_COLUMNS, "mlflow_status", "start_time",
                                      "end_time", "duration_s"])
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    frame["is_baseline"] = frame["is_baseline"].astype(str).str.lower().eq("true")
    frame["gpus_per_trial"] = pd.to_numeric(frame["gpus_per_trial"], errors="coerce")
    frame["start_time"] = pd.to_datetime(frame["start_time"], unit="ms", utc=True)
    frame["end_time"] = pd.to_datetime(frame["end_time"], unit="ms", utc=True)
    # A run whose outcome tag is missing: derive it from the MLflow status, so it is shown.
    status_outcome = frame["mlflow_status"].map({"RUNNING": Outcome.RUNNING, "FAILED": Outcome.FAILED,
                                                 "KILLED": Outcome.FAILED, "FINISHED": Outcome.COMPLETED})
    frame["outcome"] = frame["outcome"].fillna(status_outcome)
    return frame.sort_values(["stage", "arm", "phase", "seed", "start_time"],
                             na_position="last").reset_index(drop=True)
