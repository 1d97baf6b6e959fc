"""The driver-side Tune callback that records a study's trials in MLflow: one child run per
trial, per-epoch metrics with their step, the trainable's string values as tags, dataset inputs,
artifacts from the final checkpoint, the model of replicate runs, outcome tags (completed /
pruned / failed / interrupted). The runs it writes are found by tags (``study.records``).

All writes happen on the driver, so trial processes never contend for the SQLite file. The
callback finds a trial's run by its ``trial_key`` tag, so a retried trial or a resumed study
continues the same run instead of creating a duplicate, and it skips epochs it has already
logged (a trial resumed from an older checkpoint repeats a few epochs).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping

from study import run_contents
from study.records import ERROR_TRACEBACK_FILE, RESERVED_TAGS, Outcome, RunKind, Tag, run_filter
from study.tracking import client, config_hash, flatten_params, redact
from study.trial import failed

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
