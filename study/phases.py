"""One phase of a stage = one Tune experiment, which every arm (or upstream) of the stage shares
(``study.searchers`` keeps them apart), recorded in MLflow by ``trial_logger.MlflowTrialLogger``.

``phase_once`` runs a phase unless the parent run marks it done, then records what it decided
and marks it done; ``run_phase`` runs (or restores) the Tune experiment and reads how its trials
ended from MLflow. What a tune phase chose is ``study.tuning``'s.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Mapping

from study import declared, progress, run_contents, terminal, tracking, trial_logger
from study.check import Loaded
from study.cluster import TrialResources
from study.records import ERROR_TRACEBACK_FILE, PHASE_REPLICATE, PHASE_TUNE, STAGE_CLASSIFY, Outcome, Tag, run_filter
from study.terminal import log
from study.tracking import ParentRun
from study.upstream import ref_label


class StudyInterrupted(Exception):
    """Tune saved its state after SIGINT/SIGTERM; ``--resume`` continues."""


class TrainableFailed(Exception):
    """The trainable's own code raised the same error in ``max_failures`` trials: the phase
    stopped (exit 1). The message says what, where and in which trials."""


try:
    from ray.tune import Stopper as _TuneStopper
except ImportError:      # --check and --dry-run import this module without needing Ray
    _TuneStopper = object


class RepeatedErrorStopper(_TuneStopper):
    """Stops the phase once one error of the trainable's own code (same type, file and line)
    has failed ``max_failures`` trials: a bug fails every trial it reaches, and each retry or
    further trial would only print it again. Tune's own retries stay for lost workers."""

    def __init__(self, max_failures: int):
        self.max_failures = max_failures
        # (type, file, line) -> trial id -> its last result (Tune may show the stopper a result twice)
        self.errors: dict[tuple, dict[str, dict]] = {}

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        if result.get("trainable_error"):
            where = tuple(json.loads(result.get("error_where") or '["?", 0, "?"]'))
            kind = str(result.get("failure_reason", "")).partition(":")[0]
            self.errors.setdefault((kind, *where), {})[trial_id] = dict(result)
        return False

    def stop_all(self) -> bool:
        return bool(self.repeated())

    def repeated(self) -> list[dict]:
        """The failed trials' results of the first error that reached ``max_failures``."""
        return next((list(r.values()) for r in self.errors.values() if len(r) >= self.max_failures), [])

    def reason(self) -> str:
        first = self.repeated()
        return f"stopped: the phase stopped on a repeated error ({first[0]['failure_reason']})" if first else ""


@dataclass
class PhaseResult:
    """How a phase's trials ended, and what the phase decided (tags of the parent run)."""
    name: str                              # "<stage>/<phase>"
    trials: int
    outcomes: dict[str, int]               # outcome -> trials
    failures: list[tuple[str, str]]        # (arm, reason)
    decided: dict[str, str] = field(default_factory=dict)          # tags
    decided_files: dict[str, Any] = field(default_factory=dict)    # JSON files: file name -> content


@dataclass
class PhaseContext:
    """What every phase of a study run needs."""
    opts: Any                            # protocol.RunOptions
    parent: ParentRun
    experiment_id: str
    loaded: Loaded                       # the study's trainables and data (study.check)
    resources: TrialResources            # each trial's share, how many at once (study.cluster)
    base_tags: dict[str, str]            # tags every trial run shares
    artifacts: Mapping[str, bytes] = field(default_factory=dict)   # upstream files by ArtifactRef.path
    estimates: Mapping[tuple[str, str], float] = field(default_factory=dict)   # (stage, phase) -> s per trial
    look: int = 1                        # the sequential look whose seeds the phases train (study.looks)

    def experiment(self, stage: str, phase: str) -> str:
        """The Tune experiment of a phase of this study run (and look)."""
        look = f"-look{self.look}" if self.look > 1 else ""
        return f"{self.opts.study.name}-{self.parent.run_id[:8]}-{stage}-{phase}{look}"

    @property
    def datasets(self) -> dict[str, Any]:
        """Dataset name -> what the study's loader returned (shipped to every trial)."""
        data = self.loaded.data
        return {} if data is None else {self.opts.budget.dataset: data}

    @cached_property
    def feeds(self) -> dict[str, str]:
        """An artifact reference's slot -> the config key that gets the file (``Use.into``; study.trial)."""
        return {u.slot: u.into for arm in self.opts.study.arms() for u in arm.uses}


def phase_once(ctx: PhaseContext, stage: str, phase: str, run: Callable[[], PhaseResult]) -> list[PhaseResult]:
    """``[run()]``, with what it decided and the mark that it is done written to the parent run
    in one go; ``[]`` for a phase the parent run marks done (a resumed study)."""
    done_tag = f"{Tag.PHASE_DONE}{stage}.{phase}" + (f".look{ctx.look}" if ctx.look > 1 else "")
    if ctx.parent.tags.get(done_tag) == "true":
        return []
    result = run()
    for name, content in result.decided_files.items():
        tracking.log_parent_json(ctx.opts.tracking_uri, ctx.parent, name, content)
    tracking.set_parent_tags(ctx.opts.tracking_uri, ctx.parent, {**result.decided, done_tag: "true"})
    return [result]


def run_phase(ctx: PhaseContext, stage: str, phase: str, searcher, scheduler, num_trials: int,
              tags_for_config, log_weights: bool = True) -> PhaseResult:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from study.trial import META_KEYS, run_trial

    opts, feeds, resources = ctx.opts, ctx.feeds, ctx.resources
    terminal.quiet_libraries(opts.verbose)
    name = ctx.experiment(stage, phase)
    path = f"{opts.storage_path.rstrip('/')}/{name}"
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, datasets=ctx.datasets, artifacts=dict(ctx.artifacts),
                             trainables=ctx.loaded.trainables, feeds=feeds, gpu_fraction=resources.gpus),
        resources.tune)
    display = progress.phase_progress(opts, stage, phase, num_trials, resources.max_concurrent,
                                      ctx.estimates.get((stage, phase)))
    # MLflow is the record: of Tune's own per-result loggers only result.json stays (the
    # TensorBoard and CSV copies cost the driver ~3 ms per result; benchmarks/runner_overhead.py).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if opts.verbose >= terminal.VERBOSE else "0"   # the new one prints a box at 0
    stopper = RepeatedErrorStopper(opts.max_failures)
    build = _model_builder(ctx, stage, phase)
    run_contents.set_model_inputs(name, build, ctx.loaded.data)
    if tune.Tuner.can_restore(path):
        log(f"{stage}/{phase}: resuming Tune experiment {path}")
        # (with the callbacks it was started with: MLflow logger, progress display)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        logger = trial_logger.MlflowTrialLogger(
            opts.tracking_uri, ctx.experiment_id, ctx.parent.run_id, experiment_key=name,
            base_tags={**ctx.base_tags, Tag.STAGE: stage, Tag.PHASE: phase, Tag.LOOK: str(ctx.look)},
            tags_for_config=tags_for_config,
            meta_keys=META_KEYS + tuple(feeds), resources=resources.tune, log_weights=log_weights,
            stop_reason=stopper.reason,
            datasets={n: run_contents.dataset_entities(d, opts.data_dir) for n, d in _image_datasets(ctx).items()},
            models=build is not None)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, num_samples=num_trials,
                max_concurrent_trials=resources.max_concurrent, reuse_actors=True,
                trial_dirname_creator=lambda t: f"{t.trial_id}"),
            run_config=tune.RunConfig(
                name=name, storage_path=opts.storage_path,
                # retries are for lost workers and killed processes; an error of the
                # trainable's own code is reported, not raised (study.trial), so never retried
                failure_config=tune.FailureConfig(max_failures=2), stop=stopper,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[logger, JsonLoggerCallback()] + ([display] if display else []),
                # each trial's stdout/stderr files, next to its result.json in the storage path
                sync_config=tune.SyncConfig(sync_artifacts=True), log_to_file=True,
                verbose=terminal.tune_verbosity(opts.verbose)))
    log(f"{stage}/{phase}: {num_trials} trials, up to {resources.max_concurrent} at a time "
        f"({resources.cpus:g} CPU, {resources.gpus:g} GPU each)")
    grid = tuner.fit()
    if build is not None:
        run_contents.log_missing_models(opts.tracking_uri, ctx.experiment_id, phase_runs(ctx, stage, phase), build,
                                        ctx.loaded.data, log)
    return _outcomes(ctx, grid, stage, phase, num_trials)


def _image_datasets(ctx: PhaseContext) -> dict[str, Any]:
    """The datasets MLflow records as run inputs: our image datasets (study/run_contents.py)."""
    from trainables.data import ImageDataset
    return {n: d for n, d in ctx.datasets.items() if isinstance(d, ImageDataset)}


def _model_builder(ctx: PhaseContext, stage: str, phase: str):
    """The ``mlflow_model`` the study's trainable declares (study.declared), for its replicate
    runs, which feed the tables; None for other phases, or when it declares none."""
    if stage != STAGE_CLASSIFY or phase != PHASE_REPLICATE:
        return None
    return declared.hook(ctx.loaded.trainables[ref_label(ctx.opts.study.trainable)], "mlflow_model")


def _outcomes(ctx: PhaseContext, grid, stage: str, phase: str, expected: int) -> PhaseResult:
    """How the phase's trials ended, read from MLflow (the record). Raises StudyInterrupted when
    the fit stopped before every trial ended."""
    label = f"{stage}/{phase}" + (f" (look {ctx.look})" if ctx.look > 1 else "")
    started = len(grid)
    tune_trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    runs = phase_runs(ctx, stage, phase)
    if tune_trials:
        runs = _drop_orphans(ctx, runs, {t.trial_id for t in tune_trials})
    outcomes: dict[str, int] = {}
    failures = []
    for run in runs:
        outcome = run.data.tags.get(Tag.OUTCOME, "unknown")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == Outcome.FAILED:
            failures.append((run.data.tags.get(Tag.ARM, "?"), run.data.tags.get(Tag.FAILURE_REASON, "")))
    repeated = repeated_error(runs, ctx.opts.max_failures)
    if repeated:
        raise TrainableFailed(error_message(label, repeated, ctx.opts.max_failures))
    unfinished = outcomes.get(Outcome.RUNNING, 0) + outcomes.get(Outcome.INTERRUPTED, 0)
    if started < expected or unfinished or any(t.status in ("PENDING", "RUNNING", "PAUSED") for t in tune_trials):
        raise StudyInterrupted(f"{label}: {started} of {expected} trials started, {unfinished} unfinished")
    log(f"{label}: " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())))
    return PhaseResult(label, started, outcomes, failures)


def repeated_error(runs, max_failures: int) -> list:
    """The failed runs of the first error of the trainable's code (same type and place) that
    failed ``max_failures`` runs or more, else []."""
    groups: dict[tuple, list] = {}
    for run in runs:
        where = run.data.tags.get(Tag.ERROR_WHERE)
        if where and run.data.tags.get(Tag.OUTCOME) == Outcome.FAILED:
            kind = run.data.tags.get(Tag.FAILURE_REASON, "").partition(":")[0]
            groups.setdefault((kind, where), []).append(run)
    return next((g for g in groups.values() if len(g) >= max_failures), [])


def error_message(label: str, runs, max_failures: int) -> str:
    """What the terminal says when a phase stopped on a repeated error of the trainable."""
    import linecache

    file, line, function = json.loads(runs[0].data.tags[Tag.ERROR_WHERE])
    code = linecache.getline(file, int(line)).strip()
    reason = runs[0].data.tags.get(Tag.FAILURE_REASON, "").split(" (")[0]
    trials = "; ".join(f"arm {r.data.tags.get(Tag.ARM)}, seed {r.data.tags.get(Tag.SEED)}, after "
                       f"{int(r.data.metrics.get('epoch', 0))} epochs (run {r.info.run_id[:8]})" for r in runs[:3])
    return "\n".join([
        f"{label} stopped: the trainable's own code raised the same error in {len(runs)} trials "
        f"(--max-failures {max_failures}); none is retried, as a bug fails the same way every time:",
        f"  {reason}",
        f'  File "{file}", line {line}, in {function}' + (f"\n    {code}" if code else ""),
        f"  in: {trials}",
        f"  the whole traceback: the artifact {ERROR_TRACEBACK_FILE} of those MLflow runs",
        "Fix the trainable and run the study again: a changed trainable starts a new version of the study."])


def _drop_orphans(ctx: PhaseContext, runs, trial_ids: set[str]):
    """Runs of trials that Tune's restored state does not know (the driver was killed before
    its next experiment snapshot; the searcher re-suggested them under new trial ids). They
    would be duplicates: soft-delete them (MLflow can restore deleted runs) and say so."""
    c = tracking.client(ctx.opts.tracking_uri)
    kept = []
    for run in runs:
        if run.data.tags.get(Tag.TRIAL_ID) in trial_ids:
            kept.append(run)
            continue
        c.set_tag(run.info.run_id, Tag.OUTCOME, Outcome.ORPHANED)
        c.set_terminated(run.info.run_id, status="KILLED")
        c.delete_run(run.info.run_id)
        log(f"deleted orphaned run {run.info.run_id} (trial {run.data.tags.get(Tag.TRIAL_ID)} of a lost attempt)")
    return kept


def phase_runs(ctx: PhaseContext, stage: str, phase: str):
    """The trial runs of one phase of this study run (and look)."""
    return tracking.client(ctx.opts.tracking_uri).search_runs([ctx.experiment_id], filter_string=run_filter(
        {Tag.PARENT: ctx.parent.run_id, Tag.STAGE: stage, Tag.PHASE: phase, Tag.LOOK: str(ctx.look)}),
        max_results=50000)
