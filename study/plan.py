"""``--dry-run``: what a study will run and roughly what it will cost.

``CostModel`` says what one epoch and one trial's set-up cost, for any trainable: from the
``epoch_seconds`` it declares (study/declared.py; ours do, from a throughput table), else from a
dry trial of two epochs of the baseline arm, timed (``study.check``); ``estimate_phases`` turns
it into each phase's trial-seconds (also the progress display's ETA); ``print_plan`` prints the
plan with the arms and their search spaces, and the claims only a trainable that declares them
keeps.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from study import declared
from study.check import DryTrial, Timing
from study.cluster import TrialResources
from study.configs import classify_config, upstream_config, upstream_seeds
from study.options import RunOptions
from study.records import PHASE_REPLICATE, PHASE_TUNE, STAGE_CLASSIFY, STAGE_UPSTREAM
from study.spec import Budget, Study
from study.upstream import ref_label

TRIAL_OVERHEAD_S = 1.5     # actor reuse, dataset, checkpoints and MLflow logging per trial (2-core CPU)
PHASE_OVERHEAD_S = 4.0     # a Tune experiment's start, its MLflow records and its end
STUDY_OVERHEAD_S = 12.0    # the check, Ray's start and the MLflow store, once per study
# Share of a tune phase's full-length bound that ASHA (reduction factor 2) ran, measured by
# benchmarks/asha_saving.py: 0.62 of the trial-seconds.
ASHA_SHARE = 0.62


@dataclass(frozen=True)
class PhaseEstimate:
    stage: str
    phase: str
    what: str
    trials: int
    epochs: int              # per trial, at most
    bound_s: float           # trial-seconds if every trial ran to full length
    expected_s: float        # trial-seconds with ASHA's usual saving in tune phases


@dataclass(frozen=True)
class CostModel:
    """Seconds per epoch and per trial set-up of a trial config, on ``device`` ("cpu" | "cuda")."""
    device: str
    trainables: Mapping[str, Callable]     # label -> function (study.check.check_code)
    dry: DryTrial | None = None            # timed epochs, for trainables that declare no cost

    def epoch_s(self, config: Mapping[str, Any]) -> float:
        hook = declared.hook(self.trainables[config["trainable"]], "epoch_seconds")
        return hook(config, self.device) if hook else self._timing(config["trainable"]).per_epoch_s

    def setup_s(self, config: Mapping[str, Any]) -> float:
        declares = declared.hook(self.trainables[config["trainable"]], "epoch_seconds") is not None
        return 0.0 if declares else self._timing(config["trainable"]).setup_s

    def _timing(self, label: str) -> Timing:
        if self.dry is None:
            raise ValueError(f"trainable {label} declares no epoch_seconds and no dry trial timed it")
        return self.dry.upstream_timing.get(label, self.dry.timing)

    def needs_timing(self) -> bool:
        return any(declared.hook(fn, "epoch_seconds") is None for fn in self.trainables.values())

    def source(self) -> str:
        if not self.needs_timing():
            return "the throughput its trainables declare (epoch_seconds); nothing was trained"
        t = self.dry.timing
        epochs = "per epoch" if t.epoch_s is not None else "for one epoch, set-up included, as every epoch"
        return f"a timed dry trial of the baseline arm: {t.per_epoch_s:.2f} s {epochs}, {t.setup_s:.2f} s set-up"


def estimate_phases(study: Study, budget: Budget, cost: CostModel) -> list[PhaseEstimate]:
    """The trial-seconds of each phase."""
    rows = []
    upstreams = study.upstreams()
    if upstreams:
        per = [_trial_s(cost, upstream_config(u, study, budget, budget.tune_seed, None), budget.upstream_epochs)
               for u in upstreams]
        trials = _searched(budget.upstream_trials)
        bound = trials * sum(per)
        rows.append(PhaseEstimate(STAGE_UPSTREAM, PHASE_TUNE, _tunings_text(len(upstreams), "upstreams", trials),
                                  trials * len(upstreams), budget.upstream_epochs, bound, bound * ASHA_SHARE))
        n = len(budget.seeds) * len(upstreams)
        rows.append(PhaseEstimate(STAGE_UPSTREAM, PHASE_REPLICATE, f"{len(upstreams)} upstreams x {len(budget.seeds)} seeds",
                                  n, budget.upstream_epochs, len(budget.seeds) * sum(per), len(budget.seeds) * sum(per)))
    arms = study.arms()
    per = [_trial_s(cost, classify_config(a, study, budget, budget.tune_seed, PHASE_TUNE, None), budget.epochs)
           for a in arms]
    tunings, trials = len(arms) * len(budget.seeds), _searched(budget.trials_per_tuning)
    bound = trials * len(budget.seeds) * sum(per)
    rows.append(PhaseEstimate(STAGE_CLASSIFY, PHASE_TUNE, _tunings_text(tunings, "tunings", trials), tunings * trials,
                              budget.epochs, bound, bound * ASHA_SHARE))
    bound = len(budget.seeds) * sum(per)
    rows.append(PhaseEstimate(STAGE_CLASSIFY, PHASE_REPLICATE, f"{len(arms)} arms x {len(budget.seeds)} seeds",
                              len(arms) * len(budget.seeds), budget.epochs, bound, bound))
    return rows


def _searched(trials_per_tuning: int) -> int:
    """The trials a tuning trains: none for a tuning of one trial (study.tuning: nothing to compare)."""
    return trials_per_tuning if trials_per_tuning > 1 else 0


def _tunings_text(n: int, what: str, trials: int) -> str:
    return f"{n} {what} x {trials} trials" if trials else f"{n} {what}: no search (1 trial)"


def _trial_s(cost: CostModel, config: Mapping[str, Any], epochs: int) -> float:
    # every label fraction takes the same optimizer steps (equal_steps): cost does not shrink with it
    return TRIAL_OVERHEAD_S + cost.setup_s(config) + epochs * cost.epoch_s(config)


def per_trial_estimates(rows: list[PhaseEstimate]) -> dict[tuple[str, str], float]:
    """(stage, phase) -> the trial-seconds of one trial: what the progress display's ETA starts from."""
    return {(r.stage, r.phase): r.expected_s / r.trials for r in rows if r.trials}


def wall_seconds(rows: list[PhaseEstimate], concurrency: int) -> float:
    """The study's wall time on ``concurrency`` trial slots, with the runner's own overheads."""
    return STUDY_OVERHEAD_S + sum(PHASE_OVERHEAD_S + r.expected_s / max(1, min(concurrency, r.trials))
                                  for r in rows if r.trials)


def print_plan(opts: RunOptions, cost: CostModel, resources: TrialResources) -> None:
    study, budget = opts.study, opts.budget
    claims = set(declared.claims(cost.trainables[ref_label(study.trainable)]))
    arms = study.arms()
    print(f"Study {study.name} — {study.description}")
    print(f"  question: {study.question}")
    steps = " (each the full training split's worth of examples, whatever the label fraction)" \
        if "equal_steps" in claims else ""
    print(f"  budget {opts.budget_name}: dataset {budget.dataset}, {budget.epochs} epochs{steps}, "
          f"each arm tuned on each seed: {budget.trials_per_tuning} trials per tuning (TPE after "
          f"{budget.startup_trials} random) on the seed's own split, then its choice trained on that seed; seeds "
          f"{list(budget.seeds)} (upstreams tuned on seed {budget.tune_seed})")
    weights = ", on the best validation epoch's weights" if "best_epoch" in claims else ""
    print(f"  selection: {study.metric} ({study.mode}) on validation; ASHA grace {budget.grace_period}, "
          f"reduction factor {budget.reduction_factor}; test set only in the replicate phase{weights}")
    print(f"  design: {study.design}; factors: "
          + "; ".join(f"{f.name} = {[l.name for l in f.levels]}" for f in study.factors))
    print(f"  arms ({len(arms)}):")
    for arm in arms:
        extra = [f"{u.into} <- {u.upstream.key}/{u.file}" for u in arm.uses]
        extra += [f"(expected low: {study.is_degraded(arm.levels)})"] if study.is_degraded(arm.levels) else []
        tuned = ", ".join(p.describe() for p in study.search_space.resolve(arm.settings))
        print(f"    {'*' if arm.is_baseline else ' '} {arm.name}  {' '.join(e for e in extra if e)}")
        print(f"        tunes: {tuned}")
    for cell, reason in study.invalid_cells():
        print(f"    x {','.join(f'{k}={v}' for k, v in cell.items())}  (invalid: {reason})")
    if study.contrasts:
        print(f"  planned contrasts ({len(study.contrasts)}, one Holm family), each on its metric with its smallest "
              "effect of interest:")
        for contrast in study.contrasts:
            metric = study.contrast_metric(contrast)
            print(f"    - {contrast.name}  ({metric.name}, ±{metric.margin:g}, {'higher' if metric.mode == 'max' else 'lower'}"
                  " is better)")
    if study.design == "half_fraction":
        print("  half fraction: every main effect is aliased with the interaction of all other factors")
    for upstream in study.upstreams():
        stage = upstream.stage
        stops = (f", early stopping after {budget.upstream_patience} epochs without a better {stage.metric}"
                 if "early_stopping" in declared.claims(cost.trainables[ref_label(stage.trainable)]) else "")
        print(f"  upstream {upstream.key} (stage {stage.name}, {ref_label(stage.trainable)}): tunes "
              f"{', '.join(p.describe() for p in stage.search_space.params)} on {stage.metric} ({stage.mode}); "
              f"trained for seeds {upstream_seeds(budget)}, at most {budget.upstream_epochs} epochs{stops}")
    print()
    print_cost(opts, estimate_phases(study, budget, cost), cost, resources)
    if budget.max_seeds:
        print_sequential(opts, cost, resources)


def print_sequential(opts: RunOptions, cost: CostModel, resources: TrialResources) -> None:
    """What ``--until-decided`` may cost: its looks, and the study at the cap."""
    from dataclasses import replace

    from study import sequential
    from study.looks import seeds_for

    study, budget = opts.study, opts.budget
    design = sequential.plan(len(budget.seeds), budget.seed_batch, budget.max_seeds, max(1, len(study.contrasts)))
    steps = ", ".join(f"{d['n']}: p < {d['nominal_p']:.2g}" for d in design["difference"])
    print(f"\n  sequential seeds (--until-decided): looks at {design['looks']} seeds per arm, at most "
          f"{budget.max_seeds} ({design['extra_seeds']} more than the budget's), O'Brien-Fleming spending with Holm "
          f"over {len(study.contrasts)} planned contrasts; a difference is decided at the first Holm step when "
          f"({steps})")
    print("  at the cap, if some contrast stays undecided to the end:")
    capped = replace(budget, seeds=seeds_for(budget, budget.max_seeds), max_seeds=0)
    print_cost(opts, estimate_phases(study, capped, cost), cost, resources)


def print_cost(opts: RunOptions, rows: list[PhaseEstimate], cost: CostModel, resources: TrialResources) -> None:
    """The phases with their estimated cost, and the study's wall time on ``resources``'s slots."""
    print(f"  {'stage':<9}{'phase':<10}{'what':<34}{'trials':>7}{'epochs':>7}  {'est. trial-seconds':>20}")
    for r in rows:
        bound = f"  (bound {r.bound_s:,.0f})" if r.bound_s != r.expected_s else ""
        print(f"  {r.stage:<9}{r.phase:<10}{r.what:<34}{r.trials:>7}{r.epochs:>7}  {r.expected_s:>20,.0f}{bound}")
    total = sum(r.expected_s for r in rows)
    unit = "GPU" if resources.device == "cuda" else "CPU"
    share = resources.gpus if resources.device == "cuda" else resources.cpus
    print(f"  total: {sum(r.trials for r in rows)} trials, about {total:,.0f} trial-seconds = "
          f"{total * share:,.0f} {unit}-seconds ({math.ceil(total * share / 60)} {unit}-minutes)")
    where = "on the cluster" if opts.address or os.environ.get("RAY_ADDRESS") else "on this machine"
    print(f"  {where} ({resources.max_concurrent} trials at a time, {resources.cpus:g} CPU and {resources.gpus:g} GPU "
          f"each): about {_minutes(wall_seconds(rows, resources.max_concurrent))} of wall time, the runner's start "
          "and phases included")
    print(f"  (estimates from {cost.source()}; budget {opts.budget_name})")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"
