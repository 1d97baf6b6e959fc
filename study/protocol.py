"""How a study runs: stages and phases, on Ray Tune, recorded in MLflow.

    check            before anything: the study's code, keys and data (study.check)
    stage pretrain   (only if an arm uses an upstream artifact: study.stages)
        phase tune       Optuna + ASHA per upstream, on its stage's validation metric
        phase replicate  the best config trained on every seed (replicate seeds + tune seed)
    stage classify
        phase tune       Optuna + ASHA per arm, same trial budget for every arm, validation only
        phase replicate  each arm's best config, full length, the same seeds for every arm,
                         evaluated on the test set; only these runs feed the tables

Each phase is one Tune experiment (all arms share it; see ``searchers``). Progress is kept in
the parent MLflow run's tags, so ``--resume`` skips finished phases and restores the
interrupted one from its Tune experiment directory.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from search_spaces import default_point
from study import records, terminal, tracking
from study.check import Loaded, check, schema_defaults
from study.configs import PHASE_REPLICATE, PHASE_TUNE, STAGE_CLASSIFY, classify_config
from study.searchers import ListSearcher, PerArmASHA, PerArmOptunaSearch, space_function
from study.spec import Arm, Budget, Study
from study.tracking import ParentRun
from study.upstream import ref_label


class StudyInterrupted(Exception):
    """Tune saved its state after SIGINT/SIGTERM; ``--resume`` continues."""


class UsageError(ValueError):
    """Bad option value or cluster mismatch found before any trial starts (exit 2)."""


@dataclass
class RunOptions:
    study: Study
    budget_name: str
    budget: Budget
    gpus_per_trial: float | None = 0.0   # None: DEFAULT_GPUS_PER_TRIAL if the cluster has GPUs
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    address: str | None = None
    tracking_uri: str = ""
    results_dir: Path = field(default_factory=tracking.default_results_dir)
    storage: str | None = None
    data_dir: str | None = None
    resume: bool = False
    fresh: bool = False
    autoscaling: bool = False
    command: str = ""
    verbose: int = 1
    origin: str = ""                     # the file or module that defines the study (errors)
    target: str = ""                     # how the command named it (the --resume hint)                     # 0 --quiet, 1 progress per phase, 2 --verbose (study.terminal)

    @property
    def storage_path(self) -> str:
        return self.storage or str(self.results_dir / "tune")


@dataclass
class PhaseResult:
    name: str
    trials: int
    outcomes: dict[str, int]
    failures: list[tuple[str, str]]        # (arm, reason)
    best: dict[str, dict] = field(default_factory=dict)


def log(message: str) -> None:
    print(terminal.stamp(message), flush=True)


# -- Ray -----------------------------------------------------------------------------------
def connect_ray(opts: RunOptions):
    import ray
    if ray.is_initialized():
        return ray
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **terminal.ray_init_kwargs(opts.verbose))
    else:
        # A private local cluster on loopback; "local" never joins a stale cluster file.
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 **terminal.ray_init_kwargs(opts.verbose),
                 object_store_memory=min(2 * 1024 ** 3, _object_store_default()))
    return ray


def _object_store_default() -> int:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return int(pages * size * 0.1)
    except (ValueError, OSError):
        return 512 * 1024 ** 2


# Trials per GPU when the cluster has GPUs and --gpus-per-trial is not given: MNIST-sized
# trials leave a GPU mostly idle, so several share one (benchmarks/packing.py measures it).
DEFAULT_GPUS_PER_TRIAL = 0.25
AUTOSCALING_CONCURRENCY = 16     # with --autoscaling and no --max-concurrent


def check_resources(ray, opts: RunOptions) -> int:
    """Validates the request against the cluster and returns max concurrent trials."""
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if opts.gpus_per_trial is None:
        opts.gpus_per_trial = DEFAULT_GPUS_PER_TRIAL if gpus > 0 else 0.0
        if gpus > 0:
            log(f"the cluster has {gpus:g} GPUs: {DEFAULT_GPUS_PER_TRIAL:g} GPU per trial (--gpus-per-trial to change)")
    if opts.gpus_per_trial > 0 and gpus == 0 and not opts.autoscaling:
        raise UsageError(
            f"--gpus-per-trial {opts.gpus_per_trial:g} asks for GPUs but the Ray cluster has none "
            f"(resources: {int(cpus)} CPUs). Drop --gpus-per-trial to run on CPUs, connect to a GPU "
            f"cluster with --address, or pass --autoscaling if the cluster adds GPU nodes on demand.")
    if opts.cpus_per_trial > cpus and not opts.autoscaling:
        raise UsageError(f"--cpus-per-trial {opts.cpus_per_trial:g} exceeds the cluster's {cpus:g} CPUs")
    if opts.max_concurrent:
        return opts.max_concurrent
    if opts.autoscaling:
        # The cluster's size now says nothing about its size under load.
        log(f"autoscaling cluster: up to {AUTOSCALING_CONCURRENCY} trials at a time (--max-concurrent to change)")
        return AUTOSCALING_CONCURRENCY
    limits = [int(cpus // opts.cpus_per_trial) if opts.cpus_per_trial else 1]
    if opts.gpus_per_trial > 0 and gpus > 0:
        limits.append(int(round(gpus / opts.gpus_per_trial, 4)))
    return max(1, min(limits))


# -- one phase = one Tune experiment -------------------------------------------------------
@dataclass
class PhaseContext:
    opts: RunOptions
    parent: ParentRun
    experiment_id: str
    loaded: Loaded                       # the study's trainables and data (study.check)
    artifacts: dict[str, bytes]          # upstream artifacts by reference (study.stages)
    max_concurrent: int
    base_tags: dict[str, str]

    @property
    def datasets(self) -> dict[str, Any]:
        """Dataset name -> what the study's loader returned (shipped to every trial)."""
        data = self.loaded.data
        return {} if data is None else {self.opts.budget.dataset: data}

    @property
    def feeds(self) -> dict[str, str]:
        """Artifact reference key -> the config key that gets the file (study.trial)."""
        return {u.meta_key: u.into for arm in self.opts.study.arms() for u in arm.uses}


def run_phase(ctx: PhaseContext, stage: str, phase: str, searcher, scheduler, num_trials: int,
              tags_for_config, log_weights: bool = True) -> PhaseResult:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from study.trial import META_KEYS, run_trial

    opts, feeds = ctx.opts, ctx.feeds
    terminal.quiet_libraries(opts.verbose)
    name = f"{opts.study.name}-{ctx.parent.run_id[:8]}-{stage}-{phase}"
    path = f"{opts.storage_path.rstrip('/')}/{name}"
    resources = {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, datasets=ctx.datasets, artifacts=ctx.artifacts,
                             trainables=ctx.loaded.trainables, feeds=feeds, gpu_fraction=opts.gpus_per_trial),
        resources)
    progress = terminal.phase_progress(opts, stage, phase, num_trials, ctx.max_concurrent)
    # MLflow is the record: of Tune's own per-result loggers only result.json stays (the
    # TensorBoard and CSV copies cost the driver ~3 ms per result; benchmarks/runner_overhead.py).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if opts.verbose >= terminal.VERBOSE else "0"   # the new one prints a box at 0
    if tune.Tuner.can_restore(path):
        log(f"{stage}/{phase}: resuming Tune experiment {path}")
        # (with the callbacks it was started with: MLflow logger, progress display)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        logger = tracking.MlflowTrialLogger(
            opts.tracking_uri, ctx.experiment_id, ctx.parent.run_id, experiment_key=name,
            base_tags={**ctx.base_tags, "stage": stage, "phase": phase}, tags_for_config=tags_for_config,
            meta_keys=META_KEYS + tuple(feeds), resources=resources, log_weights=log_weights,
            datasets={n: records.dataset_entities(d, opts.data_dir) for n, d in _image_datasets(ctx).items()},
            models={"n_classes": _num_classes(ctx), "example": records.input_example(ctx.loaded.data)}
            if _logs_models(ctx, stage, phase) else None)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, num_samples=num_trials,
                max_concurrent_trials=ctx.max_concurrent, reuse_actors=True,
                trial_dirname_creator=lambda t: f"{t.trial_id}"),
            run_config=tune.RunConfig(
                name=name, storage_path=opts.storage_path,
                failure_config=tune.FailureConfig(max_failures=2),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[logger, JsonLoggerCallback()] + ([progress] if progress else []),
                # each trial's stdout/stderr files, next to its result.json in the storage path
                sync_config=tune.SyncConfig(sync_artifacts=True), log_to_file=True,
                verbose=terminal.tune_verbosity(opts.verbose)))
    log(f"{stage}/{phase}: {num_trials} trials, up to {ctx.max_concurrent} at a time "
        f"({opts.cpus_per_trial:g} CPU, {opts.gpus_per_trial:g} GPU each)")
    grid = tuner.fit()
    if _logs_models(ctx, stage, phase):
        records.log_missing_models(opts.tracking_uri, ctx.experiment_id, _phase_runs(ctx, stage, phase),
                                   _num_classes(ctx), records.input_example(ctx.loaded.data), log)
    return summarize_phase(ctx, grid, f"{stage}/{phase}", num_trials)


def _image_datasets(ctx: PhaseContext) -> dict[str, Any]:
    """The datasets MLflow records as run inputs: our image datasets (study/records.py)."""
    from trainables.data import ImageDataset
    return {n: d for n, d in ctx.datasets.items() if isinstance(d, ImageDataset)}


def _logs_models(ctx: PhaseContext, stage: str, phase: str) -> bool:
    """Replicates of our classifier log an MLflow model (study.trial.logs_mlflow_models)."""
    from study.trial import logs_mlflow_models
    return (stage == STAGE_CLASSIFY and phase == PHASE_REPLICATE and bool(_image_datasets(ctx))
            and logs_mlflow_models(ctx.loaded.trainables[ref_label(ctx.opts.study.trainable)]))


def _num_classes(ctx: PhaseContext) -> int:
    return len(ctx.loaded.data.class_names)


def summarize_phase(ctx: PhaseContext, grid, label: str, expected: int) -> PhaseResult:
    """Reads outcomes from MLflow (the record) and detects an interrupted fit."""
    results = [grid[i] for i in range(len(grid))]
    runs = _phase_runs(ctx, label.split("/")[0], label.split("/")[1])
    trial_ids = {t.trial_id for t in getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []}
    if trial_ids:
        runs = _drop_orphans(ctx, runs, trial_ids)
    outcomes: dict[str, int] = {}
    failures = []
    for run in runs:
        outcome = run.data.tags.get("outcome", "unknown")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "failed":
            failures.append((run.data.tags.get("arm", "?"), run.data.tags.get("failure_reason", "")))
    unfinished = outcomes.get("running", 0) + outcomes.get("interrupted", 0)
    if len(results) < expected or unfinished or _interrupted(grid):
        raise StudyInterrupted(f"{label}: {len(results)} of {expected} trials started, {unfinished} unfinished")
    log(f"{label}: " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())))
    return PhaseResult(label, len(results), outcomes, failures)


def _drop_orphans(ctx: PhaseContext, runs, trial_ids: set[str]):
    """Runs of trials that Tune's restored state does not know (the driver was killed before
    its next experiment snapshot; the searcher re-suggested them under new trial ids). They
    would be duplicates: soft-delete them (MLflow can restore deleted runs) and say so."""
    c = tracking.client(ctx.opts.tracking_uri)
    kept = []
    for run in runs:
        if run.data.tags.get("trial_id") in trial_ids:
            kept.append(run)
            continue
        c.set_tag(run.info.run_id, "outcome", "orphaned")
        c.set_terminated(run.info.run_id, status="KILLED")
        c.delete_run(run.info.run_id)
        log(f"deleted orphaned run {run.info.run_id} (trial {run.data.tags.get('trial_id')} of a lost attempt)")
    return kept


def _interrupted(grid) -> bool:
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return any(t.status in ("PENDING", "RUNNING", "PAUSED") for t in trials)


def _phase_runs(ctx: PhaseContext, stage: str, phase: str):
    c = tracking.client(ctx.opts.tracking_uri)
    return c.search_runs([ctx.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{ctx.parent.run_id}' and tags.stage = '{stage}' and tags.phase = '{phase}'"),
        max_results=50000)


def best_configs(ctx: PhaseContext, stage: str, metric: str, mode: str, tuned: Mapping[str, tuple]) -> dict:
    """Per arm, the tuned parameters of the best tune-phase trial on the validation metric.

    Trials that ran to full length are preferred over ASHA-stopped ones (an early value is
    not comparable to a final one); failed trials never win."""
    best: dict[str, tuple] = {}
    for run in _phase_runs(ctx, stage, PHASE_TUNE):
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        if tags.get("outcome") not in ("completed", "pruned") or metric not in metrics:
            continue
        arm = tags["arm"]
        value = metrics[metric] if mode == "max" else -metrics[metric]
        rank = (tags["outcome"] == "completed", value)
        if arm not in best or rank > best[arm][0]:
            chosen = {p: _parse_param(params[p]) for p in tuned.get(arm, ()) if p in params}
            best[arm] = (rank, chosen, run.info.run_id, metrics[metric], tags["outcome"])
    return {arm: {"params": v[1], "tune_run_id": v[2], "val_metric": v[3], "outcome": v[4]}
            for arm, v in best.items()}


def _parse_param(text: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


# -- the study -----------------------------------------------------------------------------
def run_study(opts: RunOptions) -> int:
    """Runs (or resumes) a whole study; returns the process exit code. A study that cannot run
    raises ``study.loader.StudyError`` before any MLflow record or trial (``study.check``)."""
    from study.loader import ship_user_code
    from study.stages import pretrain_stage

    study, budget = opts.study, opts.budget
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")   # diverged trials omit it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

    tracking.check_reachable(opts.tracking_uri)
    loaded, dry = check(study, budget, opts.origin or study.name, opts.data_dir)
    log(f"checked: the trainables, the study's keys, the data ({budget.dataset}); one epoch of {dry.arm} "
        f"in {dry.seconds:.1f} s reported {study.metric}")
    experiment_id = tracking.ensure_experiment(opts.tracking_uri, study.name, opts.results_dir / "mlartifacts")
    previous = tracking.latest_parent(opts.tracking_uri, experiment_id, opts.budget_name, budget.dataset)
    if previous and not opts.fresh:
        if previous.status == "finished":
            log(f"{study.name} ({opts.budget_name}, {budget.dataset}) already finished in run "
                f"{previous.run_id}; nothing to do. Pass --fresh to run it again.")
            print_epilogue(opts, previous)
            return 0
        if not opts.resume:
            raise UsageError(
                f"an unfinished run of {study.name} ({opts.budget_name}) exists (MLflow run {previous.run_id}, "
                f"status {previous.status}). Pass --resume to continue it, or --fresh to start over.")
    if opts.resume and (previous is None or opts.fresh):
        log("nothing to resume: starting the study")

    ray = connect_ray(opts)
    ship_user_code()
    max_concurrent = check_resources(ray, opts)
    parent, base_tags = _open_parent(opts, experiment_id, previous, loaded.data_sha256)
    ctx = PhaseContext(opts, parent, experiment_id, loaded, {}, max_concurrent, base_tags)

    # SIGTERM (`ray job stop`, a scheduler's preemption) gets the same graceful save as Ctrl-C:
    # Tune only handles SIGINT.
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT)) \
        if _main_thread() else None
    try:
        summary = pretrain_stage(ctx) + _classify_stage(ctx)
    except StudyInterrupted as e:
        tracking.set_parent_status(opts.tracking_uri, parent, "interrupted")
        log(f"interrupted ({e}). Continue with: python -m study.run {opts.target or study.name} "
            f"--budget {opts.budget_name} --resume")
        return 130
    except BaseException:
        tracking.set_parent_status(opts.tracking_uri, parent, "failed")
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    tracking.set_parent_status(opts.tracking_uri, parent, "finished")
    print_summary(summary)
    print_epilogue(opts, parent)
    return 0


def _open_parent(opts: RunOptions, experiment_id: str, previous: ParentRun | None,
                 data_sha256: str) -> tuple[ParentRun, dict[str, str]]:
    """The study's parent run (the interrupted one with --resume, else a new one) with its
    ``study.json``, and the tags every trial run shares."""
    study, budget = opts.study, opts.budget
    commit, dirty = tracking.git_state()
    versions = tracking.package_versions()
    base_tags = {"study": study.name, "budget": opts.budget_name, "dataset": budget.dataset,
                 "data_sha256": data_sha256, "git_commit": commit, "git_dirty": str(dirty).lower(),
                 "hardware": tracking.hardware(), "gpus_per_trial": f"{opts.gpus_per_trial:g}",
                 "cpus_per_trial": f"{opts.cpus_per_trial:g}",
                 **{f"versions.{k}": v for k, v in versions.items()}}
    if previous and opts.resume and not opts.fresh:
        parent = previous
        tracking.set_parent_status(opts.tracking_uri, parent, "running")
        log(f"resuming MLflow parent run {parent.run_id}")
    else:
        parent = tracking.create_parent(
            opts.tracking_uri, experiment_id, run_name=f"{study.name}-{opts.budget_name}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={**base_tags, "run_kind": "study", "baseline_arm": next(a.name for a in study.arms() if a.is_baseline),
                  "design": study.design, "factors": json.dumps([f.name for f in study.factors]),
                  "command": opts.command, "metric": study.metric, "mode": study.mode,
                  "seeds": json.dumps(list(budget.seeds)), "arms": json.dumps([a.name for a in study.arms()])},
            params={"budget." + k: v for k, v in budget.__dict__.items()})
        log(f"MLflow parent run {parent.run_id} in experiment {study.name!r}")
    tracking.log_study_definition(opts.tracking_uri, parent, study.definition())
    return parent, base_tags


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _factor_tags(study: Study):
    arms = {a.name: a for a in study.arms()}

    def tags_for(config: Mapping[str, Any]) -> dict[str, str]:
        arm = arms.get(config.get("arm"))
        tags = {"arm": str(config.get("arm")), "seed": str(config.get("seed"))}
        if arm is not None:
            tags["is_baseline"] = str(arm.is_baseline).lower()
            tags.update({f"factor.{f}": level for f, level in arm.levels.items()})
        return tags
    return tags_for


def phase_once(ctx: PhaseContext, stage: str, phase: str, run) -> list[PhaseResult]:
    """Runs a phase unless the parent run marks it done (a resumed study), then records the
    tags ``run() -> (PhaseResult, tags)`` returns and marks it done, in one write."""
    done = f"phase_done.{stage}.{phase}"
    if ctx.parent.tags.get(done) == "true":
        return []
    result, tags = run()
    tracking.set_parent_tags(ctx.opts.tracking_uri, ctx.parent, {**tags, done: "true"})
    return [result]


def chosen_configs(ctx: PhaseContext, stage: str) -> dict[str, dict]:
    """Per arm (or upstream), the tuned parameters the tune phase chose."""
    chosen = json.loads(ctx.parent.tags[f"best_configs.{stage}"])
    return {name: entry["params"] for name, entry in chosen.items()}


def _classify_stage(ctx: PhaseContext) -> list[PhaseResult]:
    """Tunes every arm on the tune seed, then replicates each arm's choice on the seeds."""
    opts, study, budget = ctx.opts, ctx.opts.study, ctx.opts.budget
    arms = {a.name: a for a in study.arms()}
    results = phase_once(ctx, STAGE_CLASSIFY, PHASE_TUNE, lambda: _tune_arms(ctx, arms))
    chosen = chosen_configs(ctx, STAGE_CLASSIFY)
    configs = [{**classify_config(arm, study, budget, seed, PHASE_REPLICATE, opts.data_dir), **chosen[name]}
               for seed in budget.seeds for name, arm in arms.items() if name in chosen]
    results += phase_once(ctx, STAGE_CLASSIFY, PHASE_REPLICATE, lambda: (run_phase(
        ctx, STAGE_CLASSIFY, PHASE_REPLICATE, ListSearcher(configs, study.metric, study.mode), None,
        len(configs), _factor_tags(study)), {}))
    return results


def _tune_arms(ctx: PhaseContext, arms: Mapping[str, Arm]) -> tuple[PhaseResult, dict]:
    """The classify tune phase: one Optuna search and one set of ASHA brackets per arm."""
    opts, study, budget = ctx.opts, ctx.opts.study, ctx.opts.budget
    params = {name: study.search_space.resolve(arm.settings) for name, arm in arms.items()}
    configs = {name: classify_config(arm, study, budget, budget.tune_seed, PHASE_TUNE, opts.data_dir)
               for name, arm in arms.items()}
    defaults = schema_defaults(ctx.loaded.trainables[ref_label(study.trainable)])
    searcher = PerArmOptunaSearch(
        configs, lambda name: space_function(params[name]), budget.trials_per_arm, study.metric, study.mode,
        seed=budget.tune_seed, startup_trials=budget.startup_trials,
        first_points={name: default_point(params[name], {**defaults, **arms[name].settings}) for name in arms})
    scheduler = PerArmASHA(study.metric, study.mode, budget.epochs, budget.grace_period, budget.reduction_factor)
    result = run_phase(ctx, STAGE_CLASSIFY, PHASE_TUNE, searcher, scheduler, budget.trials_per_arm * len(arms),
                       _factor_tags(study), log_weights=False)
    best = best_configs(ctx, STAGE_CLASSIFY, study.metric, study.mode, {k: [q.name for q in v] for k, v in params.items()})
    failed = sorted(set(arms) - set(best))
    if failed:
        # Every tune trial of these arms failed (diverged): nothing to replicate. The study
        # goes on; the summary, the parent's tags and the report's completeness matrix say so.
        log(f"classify/tune: no trial of {failed} produced {study.metric}: they are not replicated")
    return result, {"best_configs.classify": json.dumps(best), "failed_arms": json.dumps(failed)}


def print_summary(summary: list[PhaseResult]) -> None:
    for phase in summary:
        counts = ", ".join(f"{n} {o}" for o, n in sorted(phase.outcomes.items()))
        print(f"  {phase.name:<20} {phase.trials:>4} trials: {counts}")
        for arm, reason in phase.failures:
            print(f"      FAILED {arm}: {reason}")


def print_epilogue(opts: RunOptions, parent: ParentRun) -> None:
    uri = tracking.redact(opts.tracking_uri)
    logs = f"{opts.storage_path.rstrip('/')}/{opts.study.name}-{parent.run_id[:8]}-<stage>-<phase>/<trial id>/"
    experiment_id = tracking.client(opts.tracking_uri).get_run(parent.run_id).info.experiment_id
    for line in terminal.epilogue_lines(opts.study.name, parent.run_id, uri,
                                        opts.tracking_uri == tracking.default_tracking_uri(), logs,
                                        experiment_id=experiment_id):
        print(line)
