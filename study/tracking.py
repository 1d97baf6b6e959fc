"""MLflow records of a study: one experiment per study, one parent run per invocation, one
child run per Tune trial, found again by tags (never by parsing names).

All writes happen on the driver (a Tune callback), so trial processes never contend for the
SQLite file. The callback finds a trial's run by its ``trial_key`` tag, so a retried trial or a
resumed study continues the same run instead of creating a duplicate, and it skips epochs it
has already logged (a trial resumed from an older checkpoint repeats a few epochs).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from study import run_contents
from study.trial import failed
from study.records import (ERROR_TRACEBACK_FILE, RESERVED_TAGS, STUDY_DEFINITION_FILE, Outcome, RunKind, StudyStatus, Tag,
                           prepare_store, run_filter)

# Environment variables whose values must never reach MLflow (tokens, cloud keys, passwords).
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY|API_KEY|AUTH",
                         re.IGNORECASE)
PACKAGES = ("torch", "torchvision", "ray", "optuna", "mlflow", "numpy", "pandas", "scikit-learn", "scipy")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised before any training starts."""


# -- secrets -------------------------------------------------------------------------------
def secret_values() -> list[str]:
    """Values of secret-looking environment variables (at least 6 characters, to avoid
    redacting words like 'token' set to '1')."""
    return [v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6]


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """Removes credentials from ``text``: URL user-info and any secret env var's value."""
    text = re.sub(r"(?<=://)[^/@\s:]+(:[^/@\s]*)?@", "***@", str(text))
    for secret in secrets if secrets is not None else secret_values():
        text = text.replace(secret, "***")
    return text


# -- provenance (the git state: study.records) ---------------------------------------------
def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def hardware() -> str:
    import torch
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}; {cpu}"
    return cpu


def config_hash(config: Mapping[str, Any]) -> str:
    blob = json.dumps({k: config[k] for k in sorted(config)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: redact(json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:6000]
            for k, v in config.items()}


# -- store ---------------------------------------------------------------------------------
def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast (before any training) when the tracking store cannot be reached."""
    parsed = urllib.parse.urlparse(tracking_uri)
    if parsed.scheme in ("http", "https"):
        url = tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status != 200:
                    raise TrackingError(f"MLflow server {redact(tracking_uri)} answered {response.status}")
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(
                f"MLflow tracking server {redact(tracking_uri)} is unreachable ({e}). Start it, fix "
                f"--tracking-uri / MLFLOW_TRACKING_URI, or leave both unset for the local SQLite store."
            ) from None
    elif parsed.scheme == "sqlite":
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_absolute():
            raise TrackingError(f"use an absolute SQLite path (sqlite:////abs/path.db), not {tracking_uri}: "
                                "Ray trials change directory")
        db.parent.mkdir(parents=True, exist_ok=True)
    elif parsed.scheme not in ("postgresql", "mysql", "mssql", "databricks", "file", ""):
        raise TrackingError(f"unsupported tracking URI scheme {parsed.scheme!r} in {redact(tracking_uri)}")


def client(tracking_uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path | None) -> str:
    prepare_store(tracking_uri)
    c = client(tracking_uri)
    experiment = c.get_experiment_by_name(name)
    if experiment is not None:
        # Experiments of older runs (or inferred by the UI) open on the GenAI overview page.
        kind = experiment.tags.get(run_contents.EXPERIMENT_KIND_TAG, "")
        if kind != run_contents.EXPERIMENT_KIND and (not kind or kind.endswith("inferred") or kind == "no_inferred_type"):
            c.set_experiment_tag(experiment.experiment_id, run_contents.EXPERIMENT_KIND_TAG, run_contents.EXPERIMENT_KIND)
        return experiment.experiment_id
    location = None
    if artifact_root is not None and not tracking_uri.startswith(("http://", "https://")):
        # MLflow would put artifacts in ./mlruns of the current directory: inside a Ray job
        # that is a temporary folder. An absolute location keeps them with the database.
        location = (artifact_root / name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location,
                               tags={run_contents.EXPERIMENT_KIND_TAG: run_contents.EXPERIMENT_KIND})


@dataclass
class ParentRun:
    run_id: str
    tags: dict[str, str]

    @property
    def status(self) -> str:
        return self.tags.get(Tag.STUDY_STATUS, StudyStatus.RUNNING)


def latest_parent(tracking_uri: str, experiment_id: str, budget: str, dataset: str) -> Optional[ParentRun]:
    runs = client(tracking_uri).search_runs(
        [experiment_id],
        filter_string=run_filter({Tag.RUN_KIND: RunKind.STUDY, Tag.BUDGET: budget, Tag.DATASET: dataset}),
        order_by=["attributes.start_time DESC"], max_results=1)
    return ParentRun(runs[0].info.run_id, dict(runs[0].data.tags)) if runs else None


def create_parent(tracking_uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str],
                  params: Mapping[str, Any]) -> ParentRun:
    from mlflow.entities import Param
    c = client(tracking_uri)
    tags = {k: redact(str(v)) for k, v in tags.items()}
    tags = {**tags, Tag.STUDY_STATUS: StudyStatus.RUNNING}
    run = c.create_run(experiment_id, run_name=run_name, tags=tags)
    c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten_params(params).items()])
    return ParentRun(run.info.run_id, tags)


def set_parent_status(tracking_uri: str, parent: ParentRun, study_status: str) -> None:
    """running -> RUNNING; finished -> FINISHED; interrupted/failed -> KILLED/FAILED. Children
    still RUNNING are closed as KILLED (a resume reopens them): none is left RUNNING."""
    c = client(tracking_uri)
    c.set_tag(parent.run_id, Tag.STUDY_STATUS, study_status)
    parent.tags[Tag.STUDY_STATUS] = study_status
    if study_status == StudyStatus.RUNNING:
        c.update_run(parent.run_id, status="RUNNING")
        return
    experiment_id = c.get_run(parent.run_id).info.experiment_id
    for child in c.search_runs([experiment_id], filter_string=run_filter(
            {Tag.PARENT: parent.run_id}, "attributes.status = 'RUNNING'"), max_results=10000):
        c.set_tag(child.info.run_id, Tag.OUTCOME, Outcome.INTERRUPTED)
        c.set_terminated(child.info.run_id, status="KILLED")
    c.set_terminated(parent.run_id, status={StudyStatus.FINISHED: "FINISHED",
                                            StudyStatus.FAILED: "FAILED"}.get(study_status, "KILLED"))


def log_study_definition(tracking_uri: str, parent: ParentRun, definition: Mapping[str, Any]) -> None:
    """The study's definition (factors, arms, contrasts, metric) as the parent run's
    ``study.json``: analysis reads it from MLflow alone, without the code that defined it."""
    log_parent_json(tracking_uri, parent, STUDY_DEFINITION_FILE, definition)


def log_parent_json(tracking_uri: str, parent: ParentRun, name: str, content: Any) -> None:
    """``content`` as the parent run's JSON file ``name`` (replacing an earlier one)."""
    with tempfile.TemporaryDirectory(prefix="study-record-") as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(content, indent=2, sort_keys=False, default=repr))
        client(tracking_uri).log_artifact(parent.run_id, str(path))


def read_study_definition(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """A parent run's ``study.json`` ({} when it has none)."""
    with tempfile.TemporaryDirectory(prefix="study-definition-") as tmp:
        try:
            path = client(tracking_uri).download_artifacts(run_id, STUDY_DEFINITION_FILE, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            return {}
        return json.loads(Path(path).read_text())


def set_parent_tags(tracking_uri: str, parent: ParentRun, tags: Mapping[str, str]) -> None:
    c = client(tracking_uri)
    for k, v in tags.items():
        c.set_tag(parent.run_id, k, v)
        parent.tags[k] = v


# -- the Tune callback ---------------------------------------------------------------------
try:
    from ray.tune import Callback as _TuneCallback
except ImportError:      # analysis-only installs import this module without Ray
    _TuneCallback = object

FLUSH_INTERVAL_S = 2.0      # buffered metrics reach MLflow at least this often (and see flush())


class MlflowTrialLogger(_TuneCallback):
    """Driver-side Tune callback: one MLflow child run per trial, per-epoch metrics with their
    step, dataset inputs, artifacts from the final checkpoint, the model of replicate runs,
    outcome tags (completed / pruned / failed).

    **Batching** (why, and why not MLflow's async logging: benchmarks/RESULTS.md, row 4b):
    results are buffered and written as one ``log_batch`` per run at most every
    ``FLUSH_INTERVAL_S``, before a run is closed, at experiment end, and in ``get_state``, which
    Tune calls while it snapshots the experiment, before the snapshot is where ``--resume``
    reads it. Epochs a resumed trial re-runs were either written (skipped by their step) or
    lost with a killed driver's buffer (written now): one value per epoch, none missing.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 experiment_key: str, base_tags: Mapping[str, str],
                 tags_for_config: Callable[[Mapping[str, Any]], Mapping[str, str]],
                 meta_keys: Iterable[str], resources: Mapping[str, float],
                 log_weights: bool = True, datasets: Mapping[str, Mapping[str, Any]] | None = None,
                 models: bool = False, flush_interval_s: float = FLUSH_INTERVAL_S,
                 stop_reason: Callable[[], str] | None = None):
        """``datasets``: dataset name -> ``run_contents.dataset_entities`` (inputs of every run);
        ``models``: log each completed trial's model with what ``run_contents.model_inputs``
        holds for ``experiment_key`` (the declared ``mlflow_model`` and the data: never pickled
        with the experiment's state); ``stop_reason``: why the phase
        stopped its running trials, "" while it did not (``phases.RepeatedErrorStopper``)."""
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.experiment_key, self.base_tags, self.tags_for_config = experiment_key, dict(base_tags), tags_for_config
        self.meta_keys, self.resources, self.log_weights = frozenset(meta_keys), dict(resources), log_weights
        self.datasets, self.models = dict(datasets or {}), models
        self.flush_interval_s = flush_interval_s
        self.stop_reason = stop_reason or (lambda: "")
        self.model_logger = run_contents.ModelLogger()
        self._reset()

    def _reset(self):
        self._client = None
        self._runs: Dict[str, str] = {}
        self._last_step: Dict[str, int] = {}
        self._placement: Dict[str, tuple] = {}
        self._pending: Dict[str, tuple[list, list]] = {}     # run id -> (metrics, tags) not yet written
        self._run_tags: Dict[str, dict] = {}                 # run id -> the trainable's tags written
        self._completed: set[str] = set()                    # trial ids whose run is ended
        self._flushed_at = time.monotonic()
        self.model_failures: list[tuple[str, str]] = []

    def __getstate__(self):            # Tune pickles callbacks with the experiment state
        state = dict(self.__dict__)
        state.update(_client=None, _runs={}, _last_step={}, _placement={}, _pending={}, _run_tags={}, _completed=set())
        return state

    def setup(self, **info):
        self._reset()

    @property
    def mlflow(self):
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    def _trainable_config(self, config: Mapping[str, Any]) -> dict:
        return {k: v for k, v in config.items() if k not in self.meta_keys}

    def run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        from mlflow.entities import Param
        key = f"{self.experiment_key}/{trial.trial_id}"
        existing = self.mlflow.search_runs([self.experiment_id], filter_string=run_filter({Tag.TRIAL_KEY: key}),
                                           max_results=1)
        if existing:
            run_id = existing[0].info.run_id
            self.mlflow.update_run(run_id, status="RUNNING")
            self.mlflow.set_tag(run_id, Tag.OUTCOME, Outcome.RUNNING)
            history = self.mlflow.get_metric_history(run_id, "epoch")
            self._last_step[run_id] = max((m.step for m in history), default=0)
        else:
            config = self._trainable_config(trial.config)
            tags = {**self.base_tags, **self.tags_for_config(trial.config),
                    Tag.PARENT: self.parent_run_id, Tag.RUN_KIND: RunKind.TRIAL,
                    Tag.TRIAL_ID: trial.trial_id, Tag.TRIAL_KEY: key, Tag.CONFIG_HASH: config_hash(config),
                    Tag.OUTCOME: Outcome.RUNNING}
            tags = {k: redact(str(v)) for k, v in tags.items()}
            run = self.mlflow.create_run(self.experiment_id, run_name=f"{tags.get(Tag.ARM, '')}/{trial.trial_id}",
                                         tags=tags)
            run_id = run.info.run_id
            params = {**flatten_params(config), **{f"meta.{k}": str(trial.config[k]) for k in self.meta_keys
                                                   if k in trial.config}}
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.mlflow.log_batch(run_id, params=items[i:i + 100])
            entities = self.datasets.get(config.get("dataset"))
            if entities:
                self.mlflow.log_inputs(run_id, datasets=run_contents.dataset_inputs(entities, trial.config))
            self._last_step[run_id] = 0
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric, RunTag
        run_id = self.run_id(trial)
        metrics, tags = self._pending.setdefault(run_id, ([], []))
        if result.get("node_id") and self._placement.get(run_id) != (result["node_id"], result.get("pid")):
            # Where the trial runs now (it changes when a failed trial is retried elsewhere).
            self._placement[run_id] = (result["node_id"], result.get("pid"))
            tags += [RunTag("node_id", str(result["node_id"])), RunTag("worker_pid", str(result.get("pid", "")))]
        tags += self._new_run_tags(run_id, result.get("run_tags"))
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if not failed(result) and step > self._last_step.get(run_id, 0):
            # (an epoch repeated after a resume has a step logged already)
            now = int(time.time() * 1000)
            metrics += [Metric(k, float(v), now, step) for k, v in result.items()
                        if ("/" in k or k == "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool)]
            self._last_step[run_id] = step
        if failed(result):
            self._complete(trial, result)
        elif time.monotonic() - self._flushed_at >= self.flush_interval_s:
            self.flush()

    def _new_run_tags(self, run_id: str, run_tags: str | None) -> list:
        """The trainable's string values (``study.trial.to_tune``) that changed, as run tags; a
        name the runner's own tags use is left out."""
        from mlflow.entities import RunTag
        if not run_tags:
            return []
        seen = self._run_tags.setdefault(run_id, {})
        new = {k: str(v) for k, v in json.loads(run_tags).items() if k not in RESERVED_TAGS
               and not k.startswith("mlflow.") and seen.get(k) != str(v)}
        seen.update(new)
        return [RunTag(k, redact(v)[:5000]) for k, v in new.items()]

    def flush(self) -> None:
        """Writes every buffered metric and tag: one log_batch per run (1,000 values at most)."""
        pending, self._pending = self._pending, {}
        for run_id, (metrics, tags) in pending.items():
            for i in range(0, max(len(metrics), 1), 1000):
                if metrics[i:i + 1000] or (i == 0 and tags):
                    self.mlflow.log_batch(run_id, metrics=metrics[i:i + 1000], tags=tags if i == 0 else [])
        self._flushed_at = time.monotonic()

    def get_state(self):
        """Tune calls this while it saves the experiment state: see the class docstring."""
        self.flush()
        return None

    def on_experiment_end(self, trials, **info):
        self.flush()
        self.model_failures += self.model_logger.wait()

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id not in self._completed:
            self._complete(trial, trial.last_result or {})

    def _complete(self, trial, result: Mapping[str, Any]) -> None:
        """The trial's outcome, cost, files and end. A failed trial's last report ends it here,
        on that report: the phase may stop every trial before Tune completes this one."""
        self._completed.add(trial.trial_id)
        self.flush()
        run_id = self.run_id(trial)
        if result.get("diverged"):
            outcome, reason = Outcome.FAILED, str(result.get("failure_reason", "training diverged"))
        elif result.get("trainable_error"):
            outcome, reason = Outcome.FAILED, self._log_error(run_id, result)
        elif result.get("final"):
            outcome, reason = Outcome.COMPLETED, ""
        elif self.stop_reason():
            outcome, reason = Outcome.INTERRUPTED, self.stop_reason()
        else:
            outcome, reason = Outcome.PRUNED, "stopped early by ASHA"
        self._log_cost(run_id, result)
        if outcome != Outcome.FAILED:
            completed = outcome == Outcome.COMPLETED
            self._log_checkpoint(run_id, trial, weights=self.log_weights and completed,
                                 model=self.models and completed)
        self._finish(run_id, outcome, reason)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.flush()
        run_id = self.run_id(trial)
        self._log_cost(run_id, trial.last_result or {})
        reason = "trial process failed"
        if getattr(trial, "error_file", None) and os.path.exists(trial.error_file):
            reason = Path(trial.error_file).read_text(errors="replace").strip().splitlines()[-1][:500]
        self._finish(run_id, Outcome.FAILED, reason)

    def _log_error(self, run_id: str, result: Mapping[str, Any]) -> str:
        """Where the trainable's code raised (a tag) and its traceback (an artifact); the reason."""
        where = result.get("error_where") or '["?", 0, "?"]'
        file, line, function = json.loads(where)
        self.mlflow.set_tag(run_id, Tag.ERROR_WHERE, where)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ERROR_TRACEBACK_FILE
            path.write_text(redact(str(result.get("error_traceback", ""))))
            self.mlflow.log_artifact(run_id, str(path))
        return f"{result.get('failure_reason')} ({Path(file).name}, line {line}, in {function})"

    def _log_cost(self, run_id: str, result: Mapping[str, Any]) -> None:
        """Trial wall time (Tune's, across restores) and the resources it held meanwhile."""
        from mlflow.entities import Metric
        wall = float(result.get("time_total_s", 0.0))
        step = int(result.get("epoch", 0))
        now = int(time.time() * 1000)
        self.mlflow.log_batch(run_id, metrics=[
            Metric("cost/wall_seconds_trial", wall, now, step),
            Metric("cost/gpu_seconds", wall * self.resources.get("gpu", 0.0), now, step),
            Metric("cost/cpu_seconds", wall * self.resources.get("cpu", 1.0), now, step)])

    def _finish(self, run_id, outcome: str, reason: str):
        self.mlflow.set_tag(run_id, Tag.OUTCOME, outcome)
        if reason:
            self.mlflow.set_tag(run_id, Tag.FAILURE_REASON if outcome == Outcome.FAILED else Tag.STOP_REASON,
                                redact(reason)[:5000])
        self.mlflow.set_terminated(run_id, status={Outcome.FAILED: "FAILED", Outcome.INTERRUPTED: "KILLED"}.get(
            outcome, "FINISHED"))

    def _log_checkpoint(self, run_id: str, trial, weights: bool, model: bool = False):
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint.to_directory(tmp)
            for name in sorted(os.listdir(tmp)):
                path = os.path.join(tmp, name)
                is_weights = name.endswith(".pt")
                if name == "state.pt" or (is_weights and not weights):
                    continue          # optimizer state is for resuming, not for the record
                if name == "evaluation.json":
                    _log_confusion_matrix(self.mlflow, run_id, path, tmp)
                self.mlflow.log_artifact(run_id, path)
            if model:
                build, dataset = run_contents.model_inputs(self.experiment_key)
                self.model_logger.submit(
                    run_id, tmp, tracking_uri=self.tracking_uri, experiment_id=self.experiment_id, build=build,
                    config=self._trainable_config(trial.config), dataset=dataset,
                    step=int((trial.last_result or {}).get("epoch", 0)),
                    tags={k: str(trial.config.get(k)) for k in (Tag.ARM, Tag.SEED, Tag.PHASE)})


def _log_confusion_matrix(mlflow_client, run_id: str, evaluation_json: str, tmp: str) -> None:
    evaluation = json.loads(Path(evaluation_json).read_text())
    matrix = evaluation.get("confusion_matrix")
    if not matrix:
        return
    names = evaluation.get("class_names") or [str(i) for i in range(len(matrix))]
    path = os.path.join(tmp, "confusion_matrix.csv")
    with open(path, "w") as f:
        f.write("true\\pred," + ",".join(map(str, names)) + "\n")
        for name, row in zip(names, matrix):
            f.write(f"{name}," + ",".join(str(int(x)) for x in row) + "\n")
    mlflow_client.log_artifact(run_id, path)
