"""The contract between the runner (``study/``) and the analysis (``analysis/``): where a study's
record lives, the tags its runs are found by, and how the links between runs are written and
read back. Of ``study/`` the analysis imports this module and the pure statistics
(``study.inference``, ``study.spending``, ``study.sequential``); this one imports no Ray, MLflow
or torch at import time. docs/architecture.md §2 lists the record in prose.

    where        the default results folder and tracking URI, the files a study logs
    tags         the names runs are found by; run kinds, stages, phases, statuses, outcomes
    provenance   the git state a study or a report was made at
    references   the upstream file a trial loads (``<upstream key>/<seed>/<file>``), written
                 as tags; the upstream runs a study used (the parent's ``upstream_runs``)
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# -- where ---------------------------------------------------------------------------------
STUDY_DEFINITION_FILE = "study.json"   # the parent run's: the study as study.spec defines it
MODEL_NAME = "model"                   # a replicate run's MLflow model: runs:/<run id>/model
ERROR_TRACEBACK_FILE = "error_traceback.txt"   # a run the trainable's own code failed: the traceback


SEQUENTIAL_FILE = "sequential.json"    # the parent's: each look's analysis (study.looks)


def tuning_file(stage: str) -> str:
    """The parent run's record of what each tuning of a stage chose (study.tuning.choose)."""
    return f"tuning-{stage}.json"


def default_dir(kind: str) -> Path:
    """Where a study's ``results`` (its SQLite store, artifacts, Tune state) or ``reports`` go
    when no option says: ``$STUDY_RESULTS_DIR`` / ``$STUDY_REPORTS_DIR``, else that folder in the
    current directory (as MLflow's ``./mlruns``): a user's own project folder holds its own."""
    if kind not in ("results", "reports"):
        raise ValueError(f"kind must be 'results' or 'reports', got {kind!r}")
    return Path(os.environ.get(f"STUDY_{kind.upper()}_DIR") or Path.cwd() / kind).resolve()


def mark_output_folder(folder: Path) -> Path:
    """Creates ``folder`` with a ``.rayignore`` of ``*``: ``ray job submit --working-dir .`` from
    a user's project folder then leaves the runner's own output (stores, reports) behind."""
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".rayignore"
    if not ignore.exists():
        ignore.write_text("# written by the study runner: its output never goes up with --working-dir\n*\n")
    return folder


def default_results_dir() -> Path:
    return default_dir("results")


def default_tracking_uri(results_dir: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the results folder. Absolute: Ray trials
    change directory, and a relative SQLite URI would make one store per folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(results_dir or default_results_dir()) / 'mlflow.db'}"


_PREPARED: set[str] = set()


def prepare_store(tracking_uri: str) -> None:
    """Creates and upgrades a SQLite store once, under a file lock, before a process uses it.
    MLflow's own first connection migrates the schema, and two processes doing that at once on
    a new file fail (two studies started together into one results folder). Also switches the
    store to SQLite's write-ahead log (the driver commits twice per logged result; readers no
    longer block it). Other stores (servers, databases) migrate themselves: nothing to do."""
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _PREPARED:
        return
    import sqlite3

    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    db = Path(tracking_uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=300):
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)   # creates and migrates
        with sqlite3.connect(db, timeout=30) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    _PREPARED.add(tracking_uri)


# -- tags ----------------------------------------------------------------------------------
class Tag:
    """The names of the tags the runner writes and the analysis reads."""
    # every run of a study
    STUDY = "study"
    RUN_KIND = "run_kind"                  # RunKind
    BUDGET = "budget"
    DATASET = "dataset"
    DATA_SHA256 = "data_sha256"
    GIT_COMMIT = "git_commit"
    GIT_DIRTY = "git_dirty"                # "true" | "false"
    HARDWARE = "hardware"
    GPUS_PER_TRIAL = "gpus_per_trial"
    CPUS_PER_TRIAL = "cpus_per_trial"
    VERSIONS = "versions."                 # + package name: its version
    DEFINITION_SHA256 = "definition_sha256"   # the study's definition as run (study.version)
    CODE_SHA256 = "code_sha256"            # the study file's and its trainables' code (study.version)
    STUDY_VERSION = "study_version"        # 1, 2, ...: how many times the study changed since its first run
    USER_GIT_COMMIT = "user_git_commit"    # the commit of the study file's own repository (not ours)
    USER_GIT_DIRTY = "user_git_dirty"
    # the parent run (one per invocation of a study)
    STUDY_STATUS = "study_status"          # StudyStatus
    DESIGN = "design"
    FACTORS = "factors"                    # JSON list of factor names
    BASELINE_ARM = "baseline_arm"
    ARMS = "arms"                          # JSON list, registry order
    SEEDS = "seeds"                        # JSON list of replicate seeds
    METRIC = "metric"
    MODE = "mode"
    COMMAND = "command"
    CHOSEN = "best_configs."               # + stage: JSON, per arm the tune phase's choice (stores before
                                           # tuning inside the replication; now the file tuning_file(stage))
    FAILED_ARMS = "failed_arms"            # JSON list: arms no tune trial of which produced the metric
    UPSTREAM_RUNS = "upstream_runs"        # see upstream_runs() (stores before it: "pretrained_runs")
    PHASE_DONE = "phase_done."             # + "<stage>.<phase>[.look<k>]" = "true": what --resume skips
    SEQUENTIAL_LOOK = "sequential_look"    # the last look a sequential study analysed (study.looks)
    # a trial run (one per Tune trial, a child of the parent run)
    PARENT = "mlflow.parentRunId"
    STAGE = "stage"
    PHASE = "phase"
    ARM = "arm"                            # for an upstream stage: the upstream's key
    TUNING = "tuning"                      # the search a trial belongs to, or whose choice a replicate trains
    LOOK = "look"                          # 1, 2, ...: the sequential look whose seeds a trial trained (study.looks)
    SEED = "seed"
    FACTOR = "factor."                     # + factor name: the arm's level
    IS_BASELINE = "is_baseline"            # "true" | "false"
    OUTCOME = "outcome"                    # Outcome
    FAILURE_REASON = "failure_reason"
    ERROR_WHERE = "error_where"            # JSON [file, line, function]: where the trainable's code raised
    STOP_REASON = "stop_reason"
    TRIAL_ID = "trial_id"
    TRIAL_KEY = "trial_key"                # "<Tune experiment>/<trial id>": a resumed trial's run
    CONFIG_HASH = "config_hash"
    UPSTREAM = "upstream"                      # upstream stage runs: the upstream's key
    UPSTREAM_CACHE_KEY = "upstream_cache_key"   # a trained upstream any later study may reuse
    USES = "uses."                         # + "<slot>.upstream|seed|file": see ArtifactRef


# names a trainable's own string values (study.trial.to_tune) may not take as run tags
RESERVED_TAGS = frozenset(v for k, v in vars(Tag).items() if k.isupper() and isinstance(v, str))


class RunKind:
    STUDY = "study"                        # the parent run
    TRIAL = "trial"


STAGE_UPSTREAM, STAGE_CLASSIFY = "upstream", "classify"     # upstream stages, the arms
# stage names of older stores, read as today's ("pretrain" before the stages were named after study.api's Stage)
LEGACY_STAGES = {"pretrain": STAGE_UPSTREAM}


def stage_of(tags: Mapping[str, Any]) -> str | None:
    """A run's stage, today's name for an older store's."""
    stage = tags.get(Tag.STAGE)
    return LEGACY_STAGES.get(stage, stage)
PHASE_TUNE, PHASE_REPLICATE = "tune", "replicate"


class StudyStatus:
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"            # --resume continues it
    FAILED = "failed"


class Outcome:
    RUNNING = "running"                    # also a trial a resume reopened
    COMPLETED = "completed"                # trained its whole budget
    PRUNED = "pruned"                      # stopped early by ASHA
    FAILED = "failed"                      # diverged or crashed: failure_reason says why
    INTERRUPTED = "interrupted"            # the study stopped while it ran
    ORPHANED = "orphaned"                  # a duplicate of a killed driver's attempt, soft-deleted


def run_filter(tags: Mapping[str, str], *more: str) -> str:
    """An MLflow search filter: every tag of ``tags`` equal to its value, and the ``more`` clauses."""
    quoted = {f"`{k}`" if "." in k else k: str(v).replace("'", "\\'") for k, v in tags.items()}
    return " and ".join([f"tags.{k} = '{v}'" for k, v in quoted.items()] + list(more))


# -- provenance ----------------------------------------------------------------------------
def git_state(root: Path = PROJECT_ROOT) -> tuple[str, bool]:
    """(commit, dirty). A `ray job submit --working-dir` upload has no .git: then the
    submitter may pass STUDY_GIT_COMMIT / STUDY_GIT_DIRTY."""
    if os.environ.get("STUDY_GIT_COMMIT"):
        return os.environ["STUDY_GIT_COMMIT"], os.environ.get("STUDY_GIT_DIRTY", "") == "true"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


# -- references between runs ---------------------------------------------------------------
@dataclass(frozen=True)
class ArtifactRef:
    """A file of a trained upstream that a trial loads. ``path``, ``<upstream key>/<seed>/<file>``,
    names the file where the driver ships it and is the trial's ``meta.<slot>`` param; the trial
    run records it as tags (``tags(slot)``), which the analysis reads (``artifact_refs``). The
    slot is the arm's config key for the reference (``Use.slot``, ``encoder_artifact``)."""
    upstream: str                          # the upstream's key (the ``arm`` tag of its runs)
    seed: int
    file: str                              # "" in stores recorded before the file was named

    @property
    def path(self) -> str:
        return f"{self.upstream}/{self.seed}/{self.file}"

    def tags(self, slot: str) -> dict[str, str]:
        prefix = f"{Tag.USES}{slot}."
        return {prefix + "upstream": self.upstream, prefix + "seed": str(self.seed), prefix + "file": self.file}


def artifact_refs(tags: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> dict[str, ArtifactRef]:
    """Slot -> the upstream file a trial run loaded, from its ``uses.<slot>.*`` tags (a row of
    ``analysis.load``'s runs frame holds them as columns, and serves as ``tags``). A run recorded
    before those tags has only its reference params, ``meta.<slot>`` = ``<key>/<seed>`` or
    ``<key>/<seed>/<file>``: they are read from ``params`` then."""
    fields: dict[str, dict[str, str]] = {}
    for name, value in tags.items():
        if isinstance(name, str) and name.startswith(Tag.USES) and isinstance(value, str):
            slot, _, field = name.removeprefix(Tag.USES).rpartition(".")
            fields.setdefault(slot, {})[field] = value
    refs = {slot: ArtifactRef(f["upstream"], int(f["seed"]), f.get("file", ""))
            for slot, f in fields.items() if "upstream" in f and f.get("seed", "").isdigit()}
    for name, value in (params or {}).items():
        slot = name.removeprefix("meta.")
        if name.startswith("meta.") and slot.endswith("_artifact") and slot not in refs and isinstance(value, str):
            parts = value.split("/")
            if len(parts) >= 2 and parts[1].isdigit():
                refs[slot] = ArtifactRef(parts[0], int(parts[1]), "/".join(parts[2:]))
    return dict(sorted(refs.items()))


def upstream_runs_tag(runs: Mapping[tuple[str, int], str]) -> str:
    """The parent's ``upstream_runs`` tag: JSON ``{"<upstream key>/<seed>": run id}`` of the
    upstream runs whose files the study's trials loaded (trained by it or reused)."""
    return json.dumps({f"{key}/{seed}": run_id for (key, seed), run_id in sorted(runs.items())})


def upstream_runs(parent_tags: Mapping[str, Any]) -> dict[tuple[str, int], str]:
    """(upstream key, seed) -> run id, from a parent run's ``upstream_runs`` tag (an older store's
    ``pretrained_runs``; {} without)."""
    try:
        listed = json.loads(parent_tags.get(Tag.UPSTREAM_RUNS) or parent_tags.get("pretrained_runs") or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}
    out = {}
    for name, run_id in listed.items():
        key, _, seed = name.rpartition("/")
        if key and seed.isdigit():
            out[(key, int(seed))] = run_id
    return out


def has_model(client, run_id: str) -> bool:
    """Whether the run holds a logged MLflow model (``runs:/<run id>/model``)."""
    run = client.get_run(run_id)
    return bool(run.outputs and run.outputs.model_outputs)
