"""How a study runs: stages and phases, on Ray Tune, recorded in MLflow.

    check            before anything: the study's code, keys and data (study.check)
    stage upstream   (only if an arm uses an upstream artifact: study.stages)
        phase tune       Optuna + ASHA per upstream, on its stage's validation metric
        phase replicate  the best config trained on every seed (replicate seeds + tune seed)
    stage classify
        phase tune       Optuna + ASHA per arm and seed (a tuning on the seed's own split and
                         initialisation), the same trial budget for every one, validation only
        phase replicate  each tuning's choice trained on its seed, full length, evaluated on the
                         test set; only these runs feed the tables, and their spread over seeds
                         includes the tuning's (study.tuning)

Each phase is one Tune experiment (all arms share it; see ``study.phases``). Progress is kept
in the parent MLflow run's tags, so ``--resume`` skips finished phases and restores the
interrupted one from its Tune experiment directory. What the record holds, and how the
analysis reads it, is ``study.records``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import replace
from typing import Any, Mapping

from search_spaces import default_point
from study import cluster, records, terminal, tracking
from study.check import check_code, check_data
from study.declared import schema_defaults
from study.cluster import TrialResources, UsageError
from study.configs import artifact_ref, classify_config
from study.looks import run_looks
from study.options import RunOptions
from study.plan import CostModel, estimate_phases, per_trial_estimates
from study.phases import (PhaseContext, PhaseResult, StudyInterrupted, TrainableFailed, phase_once, phase_runs,
                          run_phase)
from study.records import PHASE_REPLICATE, PHASE_TUNE, STAGE_CLASSIFY, Outcome, RunKind, StudyStatus, Tag, tuning_file
from study.searchers import ListSearcher
from study.tuning import Tuning, chosen, tune_phase
from study.spec import Arm, Budget, Study
from study.terminal import log
from study.tracking import ParentRun
from study.version import Version, changes, study_version
from study.upstream import ref_label


EXIT_TRAINABLE_FAILED = 1      # a phase stopped on a repeated error of the trainable's own code


# -- the study -----------------------------------------------------------------------------
def run_study(opts: RunOptions) -> int:
    """Runs (or resumes) a whole study; returns the process exit code. A study that cannot run
    raises ``study.loader.StudyError`` before any MLflow record or trial (``study.check``)."""
    from study.loader import ship_user_code

    study, budget = opts.study, opts.budget
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")   # diverged trials omit it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

    tracking.check_reachable(opts.tracking_uri)
    trainables = check_code(study, opts.origin or study.name)
    version = study_version(study, budget, trainables, opts.origin or study.name)
    earlier = _earlier_run(opts, version)
    if earlier and earlier[0] and earlier[0].status == StudyStatus.FINISHED:
        log(f"{study.name} ({opts.budget_name}, {budget.dataset}) already finished in run "
            f"{earlier[0].run_id}, this very version of it; nothing to do. Pass --fresh to run it again.")
        print_epilogue(opts, earlier[0])
        return 0
    ray, loaded, dry = _check_while_ray_starts(opts, trainables)
    log(f"checked: the trainables, the study's keys, the data ({budget.dataset}); one epoch of {dry.arm} "
        f"in {dry.seconds:.1f} s reported {study.metric}")
    records.mark_output_folder(opts.results_dir)
    experiment_id = tracking.ensure_experiment(opts.tracking_uri, study.name, opts.results_dir / "mlartifacts")
    previous, number = earlier or _previous_run(opts, experiment_id, version)

    ship_user_code()
    resources = cluster.plan_trials(ray.cluster_resources(), opts)
    base_tags = {**_base_tags(opts, loaded.data_sha256, resources), **_version_tags(version, number)}
    parent = _open_parent(opts, experiment_id, previous, base_tags, version)
    ctx = PhaseContext(opts, parent, experiment_id, loaded, resources, base_tags,
                       estimates=_estimates(study, budget, CostModel(resources.device, loaded.trainables, dry)))

    # SIGTERM (`ray job stop`, a scheduler's preemption) gets the same graceful save as Ctrl-C:
    # Tune only handles SIGINT.
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT)) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        phases = train_seeds(ctx)
        if budget.max_seeds:
            phases += run_looks(ctx, train_seeds)
    except StudyInterrupted as e:
        tracking.set_parent_status(opts.tracking_uri, parent, StudyStatus.INTERRUPTED)
        log(f"interrupted ({e}). Continue with: {opts.resume_command or _resume_command(opts)}")
        return 130
    except TrainableFailed as e:
        tracking.set_parent_status(opts.tracking_uri, parent, StudyStatus.FAILED)
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_TRAINABLE_FAILED
    except BaseException:
        tracking.set_parent_status(opts.tracking_uri, parent, StudyStatus.FAILED)
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    tracking.set_parent_status(opts.tracking_uri, parent, StudyStatus.FINISHED)
    print_summary(phases)
    replicate = [p for p in phases if p.name == f"{STAGE_CLASSIFY}/{PHASE_REPLICATE}"]
    if replicate and not replicate[0].outcomes.get(Outcome.COMPLETED):
        print("error: no replicate completed, so the study has no result (the failures above say why)", file=sys.stderr)
        return EXIT_TRAINABLE_FAILED
    print_epilogue(opts, parent)
    return 0


def _check_while_ray_starts(opts: RunOptions, trainables: Mapping[str, Any]):
    """The check's seconds-long part (study.check: the data and the dry trial) on a thread while
    Ray starts (seconds too) on this one: ``ray``, what the check loaded, the dry trial. Its quick
    part (``check_code``: code, keys, the ``trainables``) came first: a study that cannot run
    starts nothing."""
    origin = opts.origin or opts.study.name
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="study-check") as pool:
        checking = pool.submit(check_data, opts.study, opts.budget, origin, opts.data_dir, trainables)
        try:
            ray = cluster.connect(opts.address, opts.verbose)
        finally:
            loaded, dry = checking.result()          # its StudyError, if any, first
    return ray, loaded, dry


def _earlier_run(opts: RunOptions, version: Version) -> tuple[ParentRun | None, int] | None:
    """``_previous_run`` before Ray starts and before the dry trial, when the store already holds
    the study's experiment: a finished study says so at once, an unfinished one without --resume
    (or a changed one with it) is refused at once. None when there is no such experiment yet
    (nothing to look up, and nothing is created)."""
    experiment_id = tracking.existing_experiment(opts.tracking_uri, opts.study.name)
    return None if experiment_id is None else _previous_run(opts, experiment_id, version)


def _previous_run(opts: RunOptions, experiment_id: str, version: Version) -> tuple[ParentRun | None, int]:
    """The earlier run of this study at this budget that this run continues or repeats (None to
    start a new one: there is none, --fresh, or the study changed since), and this run's version
    number (``study_version``: one more than the earlier run's when the study changed)."""
    study, budget = opts.study, opts.budget
    previous = tracking.latest_parent(opts.tracking_uri, experiment_id, opts.budget_name, budget.dataset)
    number = int(previous.tags.get(Tag.STUDY_VERSION) or 1) if previous else 1
    if previous is None or opts.fresh:
        if opts.resume:
            log("nothing to resume: starting the study")
        return None, number
    if (previous.tags.get(Tag.DEFINITION_SHA256), previous.tags.get(Tag.CODE_SHA256)) != \
            (version.definition_sha256, version.code_sha256):
        changed = changes(tracking.read_study_definition(opts.tracking_uri, previous.run_id), version)
        what = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        if opts.resume:
            raise UsageError(
                f"{study.name} changed since its {previous.status} run {previous.run_id} (changed: {what}); resuming "
                "would mix two versions of the study. Run it without --resume to start this version (the earlier "
                "runs stay apart), or undo the change to resume.")
        log(f"{study.name} changed since run {previous.run_id} (changed: {what}): running it as version "
            f"{number + 1}; the analysis reports the latest version, the earlier runs stay in MLflow apart")
        return None, number + 1
    if previous.status != StudyStatus.FINISHED and not opts.resume:
        raise UsageError(
            f"an unfinished run of {study.name} ({opts.budget_name}) exists (MLflow run {previous.run_id}, "
            f"status {previous.status}). Pass --resume to continue it, or --fresh to start over.")
    return previous, number


def _version_tags(version: Version, number: int) -> dict[str, str]:
    """The version tags of every run of this study run (``study.version``)."""
    tags = {Tag.DEFINITION_SHA256: version.definition_sha256, Tag.CODE_SHA256: version.code_sha256,
            Tag.STUDY_VERSION: str(number)}
    if version.user_git:
        tags.update({Tag.USER_GIT_COMMIT: version.user_git["commit"],
                     Tag.USER_GIT_DIRTY: str(version.user_git["dirty"]).lower()})
    return tags


def _estimates(study: Study, budget: Budget, cost: CostModel) -> dict[tuple[str, str], float]:
    """(stage, phase) -> the plan's trial-seconds of one trial, for the progress display's ETA."""
    try:
        return per_trial_estimates(estimate_phases(study, budget, cost))
    except Exception as error:  # noqa: BLE001 - an estimate must never stop a study
        log(f"no ETA: the cost estimate failed ({type(error).__name__}: {error})")
        return {}


def _resume_command(opts: RunOptions) -> str:
    """The command that continues a run made by code, not by the command line."""
    return f"python -m study.run {opts.target or opts.study.name} --budget {opts.budget_name} --resume"


def _base_tags(opts: RunOptions, data_sha256: str, resources: TrialResources) -> dict[str, str]:
    """The tags every run of this study run shares (the parent and each trial)."""
    commit, dirty = records.git_state()
    return {Tag.STUDY: opts.study.name, Tag.BUDGET: opts.budget_name, Tag.DATASET: opts.budget.dataset,
            Tag.DATA_SHA256: data_sha256, Tag.GIT_COMMIT: commit, Tag.GIT_DIRTY: str(dirty).lower(),
            Tag.HARDWARE: tracking.hardware(), Tag.GPUS_PER_TRIAL: f"{resources.gpus:g}",
            Tag.CPUS_PER_TRIAL: f"{resources.cpus:g}",
            **{f"{Tag.VERSIONS}{k}": v for k, v in tracking.package_versions().items()}}


def _open_parent(opts: RunOptions, experiment_id: str, previous: ParentRun | None,
                 base_tags: Mapping[str, str], version: Version) -> ParentRun:
    """The study's parent run (the interrupted one with --resume, else a new one) with its
    ``study.json``."""
    study, budget = opts.study, opts.budget
    if previous is not None:
        parent = previous
        tracking.set_parent_status(opts.tracking_uri, parent, StudyStatus.RUNNING)
        log(f"resuming MLflow parent run {parent.run_id}")
    else:
        parent = tracking.create_parent(
            opts.tracking_uri, experiment_id, run_name=f"{study.name}-{opts.budget_name}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={**base_tags, Tag.RUN_KIND: RunKind.STUDY,
                  Tag.BASELINE_ARM: next(a.name for a in study.arms() if a.is_baseline),
                  Tag.DESIGN: study.design, Tag.FACTORS: json.dumps([f.name for f in study.factors]),
                  Tag.COMMAND: opts.command, Tag.METRIC: study.metric, Tag.MODE: study.mode,
                  Tag.SEEDS: json.dumps(list(budget.seeds)), Tag.ARMS: json.dumps([a.name for a in study.arms()])},
            params={"budget." + k: v for k, v in budget.__dict__.items()})
        log(f"MLflow parent run {parent.run_id} in experiment {study.name!r}")
    tracking.log_study_definition(opts.tracking_uri, parent, {**version.definition, "version": version.record()})
    return parent


def train_seeds(ctx: PhaseContext) -> list[PhaseResult]:
    """Both stages for the seeds of ``ctx.opts.budget``: the upstreams the arms build on, then
    every arm's tuning and replicate on each seed."""
    from study.stages import upstream_stage

    upstream_phases, shipped = upstream_stage(ctx)
    return upstream_phases + classify_stage(replace(ctx, artifacts=shipped))


# -- stage classify ------------------------------------------------------------------------
def classify_stage(ctx: PhaseContext) -> list[PhaseResult]:
    """Tunes every arm on every seed (its own search on that seed's split and initialisation),
    then trains each tuning's choice on its seed and evaluates it on the test set."""
    study = ctx.opts.study
    tunings = arm_tunings(ctx)
    phases = phase_once(ctx, STAGE_CLASSIFY, PHASE_TUNE, lambda: _tune_arms(ctx, tunings))
    picked = chosen(ctx, STAGE_CLASSIFY)
    configs = [{**tuning.config, "phase": PHASE_REPLICATE, "evaluate_test": True, **picked[label]["params"]}
               for label, tuning in tunings.items() if label in picked]
    phases += phase_once(ctx, STAGE_CLASSIFY, PHASE_REPLICATE, lambda: run_phase(
        ctx, STAGE_CLASSIFY, PHASE_REPLICATE, ListSearcher(configs, study.metric, study.mode), None,
        len(configs), _arm_tags(study)))
    _warn_mixed(ctx, "precision")
    return phases


def _warn_mixed(ctx: PhaseContext, tag: str) -> None:
    """Says so when the replicates of one arm ran with different values of a run tag a trainable
    reports (``precision``: "auto" decides per node, and a cluster's nodes can differ); arms that
    set it differently on purpose (a study of it) are not mixed."""
    values: dict[str, dict[str, int]] = {}
    for run in phase_runs(ctx, STAGE_CLASSIFY, PHASE_REPLICATE):
        if tag in run.data.tags:
            arm = values.setdefault(run.data.tags.get(Tag.ARM, "?"), {})
            arm[run.data.tags[tag]] = arm.get(run.data.tags[tag], 0) + 1
    mixed = {arm: counts for arm, counts in values.items() if len(counts) > 1}
    for arm, counts in mixed.items():
        log(f"warning: the replicates of {arm} ran with mixed {tag} "
            f"({', '.join(f'{v} on {n}' for v, n in sorted(counts.items()))}): its mean mixes them; set {tag} in "
            "the study's fixed settings to pin it")


def arm_tunings(ctx: PhaseContext) -> dict[str, Tuning]:
    """One tuning per (arm, replicate seed), labelled ``<arm>@<seed>``: the arm's nuisance space
    from its hand-picked first guess, on the seed's split and initialisation, its Optuna sampler
    seeded from the seed (``tune_seed + seed``: every arm of a seed draws alike)."""
    opts, study, budget = ctx.opts, ctx.opts.study, ctx.opts.budget
    defaults = schema_defaults(ctx.loaded.trainables[ref_label(study.trainable)])
    tunings = {}
    for seed in budget.seeds:
        for arm in study.arms():
            params = study.search_space.resolve(arm.settings)
            label = f"{arm.name}@{seed}"
            config = {**classify_config(arm, study, budget, seed, PHASE_TUNE, opts.data_dir), "tuning": label}
            tunings[label] = Tuning(config, params, default_point(params, {**defaults, **arm.settings}),
                                    budget.tune_seed + seed)
    return tunings


def _tune_arms(ctx: PhaseContext, tunings: Mapping[str, Tuning]) -> PhaseResult:
    """The classify tune phase: every arm's tuning on every seed, in one Tune experiment."""
    study, budget = ctx.opts.study, ctx.opts.budget
    result = tune_phase(ctx, STAGE_CLASSIFY, tunings, budget.trials_per_tuning, study.metric, study.mode,
                        budget.epochs, budget.grace_period, _arm_tags(study))
    picked = result.decided_files[tuning_file(STAGE_CLASSIFY)]
    unchosen = sorted(set(tunings) - set(picked))
    if unchosen:
        # Every trial of these tunings failed (diverged): nothing to replicate on those seeds.
        # The study goes on; the summary, the parent's tags and the report's completeness
        # matrix say so.
        log(f"classify/tune: no trial of {', '.join(unchosen)} produced {study.metric}: not replicated")
    result.decided = {Tag.FAILED_ARMS: json.dumps(sorted({tunings[label].config["arm"] for label in unchosen}))}
    return result


def _arm_tags(study: Study):
    """The tags of an arm's trial run: arm, seed, factor levels, the upstream files it loads."""
    arms = {a.name: a for a in study.arms()}

    def tags_for(config: Mapping[str, Any]) -> dict[str, str]:
        arm = arms.get(config.get("arm"))
        tags = {Tag.ARM: str(config.get("arm")), Tag.SEED: str(config.get("seed")),
                Tag.TUNING: str(config.get("tuning"))}
        if arm is not None:
            tags[Tag.IS_BASELINE] = str(arm.is_baseline).lower()
            tags.update({f"{Tag.FACTOR}{f}": level for f, level in arm.levels.items()})
            for use in arm.uses:
                tags.update(artifact_ref(use, config["seed"]).tags(use.slot))
        return tags
    return tags_for


# -- what the terminal shows at the end ----------------------------------------------------
def print_summary(phases: list[PhaseResult]) -> None:
    for phase in phases:
        if not phase.trials:
            print(f"  {phase.name:<20} no search: one trial per tuning, so its first point is the choice, untrained")
            continue
        counts = ", ".join(f"{n} {o}" for o, n in sorted(phase.outcomes.items()))
        print(f"  {phase.name:<20} {phase.trials:>4} trials: {counts}")
        by_reason: dict[str, list[str]] = {}
        for arm, reason in phase.failures:
            by_reason.setdefault(reason, []).append(arm)
        for reason, arms in by_reason.items():
            print(f"      FAILED {len(arms)} ({', '.join(sorted(set(arms)))}): {reason}")


def print_epilogue(opts: RunOptions, parent: ParentRun) -> None:
    uri = tracking.redact(opts.tracking_uri)
    logs = f"{opts.storage_path.rstrip('/')}/{opts.study.name}-{parent.run_id[:8]}-<stage>-<phase>/<trial id>/"
    experiment_id = tracking.client(opts.tracking_uri).get_run(parent.run_id).info.experiment_id
    for line in terminal.epilogue_lines(opts.study.name, parent.run_id, uri,
                                        opts.tracking_uri == records.default_tracking_uri(), logs,
                                        experiment_id=experiment_id):
        print(line)
