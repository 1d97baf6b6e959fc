"""``--dry-run``: what a study will run and roughly what it will cost, without training.

``estimate_phases`` is the cost model (also the ETA of the progress display); ``print_plan``
prints it with the arms and their search spaces.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from study.configs import pretrain_seeds
from study.protocol import RunOptions
from study.spec import Arm, Budget, Study
from study.upstream import ref_label

# Training images per second of ONE trial, used only for estimates. CPU figures: one core per
# trial on this project's 2-core reference machine with the other core busy too; GPU
# figures: one trial alone on an H100. "denoiser" is the forward pass of an autoencoder put in
# front of a classifier. Re-measure with `python -m benchmarks.throughput --model MODEL`. The
# figures are for our trainables (THROUGHPUT_OF); another trainable's study gets no estimate
# from --dry-run, and --check times one epoch of it.
IMAGES_PER_SECOND = {
    ("cpu", "cnn"): 2500.0,
    ("cpu", "encoder_head"): 3000.0,
    ("cpu", "autoencoder"): 700.0,
    ("cpu", "denoiser"): 2500.0,
    ("cuda", "cnn"): 200_000.0,
    ("cuda", "encoder_head"): 200_000.0,
    ("cuda", "autoencoder"): 150_000.0,
    ("cuda", "denoiser"): 400_000.0,
}
THROUGHPUT_OF = {"trainables.classifier:train_classifier": None,       # None: the arm's "model" setting
                 "trainables.autoencoder:train_autoencoder": "autoencoder"}
TRAIN_IMAGES = {"mnist-5k": 4000, "mnist": 60000, "fashion-mnist": 60000}
TRIAL_OVERHEAD_S = 1.5     # actor reuse, dataset, checkpoints and MLflow logging per trial (2-core CPU)
EPOCH_OVERHEAD_S = 0.3     # validation, checkpoint and report per epoch
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


def _epoch_seconds(device: str, model: str, images: float, denoiser: bool = False) -> float:
    per_image = 1 / IMAGES_PER_SECOND[(device, model)]
    if denoiser:
        per_image += 1 / IMAGES_PER_SECOND[(device, "denoiser")]
    return images * per_image + EPOCH_OVERHEAD_S


def _arm_seconds(device: str, arm: Arm, n_train: float, epochs: int) -> float:
    # every label fraction takes the same optimizer steps (equal_steps): cost does not shrink with it
    denoised = any(u.into == "denoiser_checkpoint" for u in arm.uses)
    return epochs * _epoch_seconds(device, arm.settings.get("model", "cnn"), n_train, denoised)


def has_estimate(study: Study) -> bool:
    """Whether the throughput table covers the study's trainables (ours)."""
    labels = [ref_label(study.trainable)] + [ref_label(p.stage.trainable) for p in study.pretrainings()]
    return all(label in THROUGHPUT_OF for label in labels)


def estimate_phases(study: Study, budget: Budget, device: str,
                    epoch_seconds: float | None = None) -> list[PhaseEstimate]:
    """The cost of each phase, from the throughput table, or from ``epoch_seconds`` (one epoch
    of the baseline arm as ``--check`` measured it, set-up included) for every epoch of every
    trial. No rows when neither applies (a user's trainable, no measurement)."""
    if epoch_seconds is None and not has_estimate(study):
        return []
    n_train = TRAIN_IMAGES.get(budget.dataset, 60000) * 0.9       # 10% held out for validation

    def arm_epoch(arm: Arm) -> float:
        return epoch_seconds if epoch_seconds is not None else _arm_seconds(device, arm, n_train, 1)

    rows = []
    pretrainings = study.pretrainings()
    if pretrainings:
        epoch = epoch_seconds if epoch_seconds is not None else _epoch_seconds(device, "autoencoder", n_train)
        one = budget.pretrain_epochs * epoch + TRIAL_OVERHEAD_S
        n = budget.pretrain_trials * len(pretrainings)
        rows.append(PhaseEstimate("pretrain", "tune", f"{len(pretrainings)} upstreams x {budget.pretrain_trials} trials",
                                  n, budget.pretrain_epochs, n * one, n * one * (ASHA_SHARE if n > len(pretrainings) else 1)))
        # the tune seed's upstream is the best tune trial: not trained again
        n = len(budget.seeds) * len(pretrainings)
        rows.append(PhaseEstimate("pretrain", "replicate", f"{len(pretrainings)} upstreams x {len(budget.seeds)} seeds",
                                  n, budget.pretrain_epochs, n * one, n * one))
    arms = study.arms()
    per_trial = [budget.epochs * arm_epoch(a) + TRIAL_OVERHEAD_S for a in arms]
    n = len(arms) * budget.trials_per_arm
    bound = budget.trials_per_arm * sum(per_trial)
    rows.append(PhaseEstimate("classify", "tune", f"{len(arms)} arms x {budget.trials_per_arm} trials", n,
                              budget.epochs, bound, bound * (ASHA_SHARE if budget.trials_per_arm > 1 else 1)))
    bound = len(budget.seeds) * sum(per_trial)
    rows.append(PhaseEstimate("classify", "replicate", f"{len(arms)} arms x {len(budget.seeds)} seeds",
                              len(arms) * len(budget.seeds), budget.epochs, bound, bound))
    return rows


def local_concurrency(opts: RunOptions) -> int:
    """Trials at a time on a private local Ray on this machine (what the runner would use)."""
    if opts.max_concurrent:
        return opts.max_concurrent
    return max(1, int((os.cpu_count() or 1) // max(opts.cpus_per_trial, 1e-9)))


def print_plan(opts: RunOptions) -> None:
    study, budget = opts.study, opts.budget
    device = "cuda" if opts.gpus_per_trial else "cpu"
    arms = study.arms()
    print(f"Study {study.name} — {study.description}")
    print(f"  question: {study.question}")
    print(f"  budget {opts.budget_name}: dataset {budget.dataset}, {budget.epochs} epochs (each the full "
          f"training split's worth of examples, whatever the label fraction), {budget.trials_per_arm} tune "
          f"trials per arm (TPE after {budget.startup_trials} random), seeds {list(budget.seeds)} "
          f"(tune seed {budget.tune_seed})")
    print(f"  selection: {study.metric} ({study.mode}) on validation; ASHA grace {budget.grace_period}, "
          f"reduction factor {budget.reduction_factor}; test set only in the replicate phase, on the "
          f"best validation epoch's weights")
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
        print(f"  planned contrasts ({len(study.contrasts)}, one Holm family; equivalence margin "
              f"±{study.equivalence_margin:g}):")
        for contrast in study.contrasts:
            print(f"    - {contrast.name}")
    if study.design == "half_fraction":
        print("  half fraction: every main effect is aliased with the interaction of all other factors")
    for upstream in study.pretrainings():
        stage = upstream.stage
        print(f"  upstream {upstream.key} (stage {stage.name}, {ref_label(stage.trainable)}): tunes "
              f"{', '.join(p.describe() for p in stage.search_space.params)} on {stage.metric} ({stage.mode}); "
              f"trained for seeds {pretrain_seeds(budget)}, early stopping after {budget.pretrain_patience} "
              f"epochs without a better {stage.metric}")
    print()
    print_cost(opts, estimate_phases(study, budget, device))


def print_cost(opts: RunOptions, rows: list[PhaseEstimate],
               source: str = "the throughput table in study/plan.py; nothing was trained") -> None:
    """The phases with their estimated cost (or why there is no estimate)."""
    device = "cuda" if opts.gpus_per_trial else "cpu"
    if not rows:
        print(f"  no cost estimate: the throughput table in study/plan.py covers our trainables only; "
              f"`python -m study.run {opts.target or opts.study.name} --check` times one epoch of yours and "
              "estimates from it")
        return
    print(f"  {'stage':<9}{'phase':<10}{'what':<34}{'trials':>7}{'epochs':>7}  {'est. trial-seconds':>20}")
    for r in rows:
        bound = f"  (bound {r.bound_s:,.0f})" if r.bound_s != r.expected_s else ""
        print(f"  {r.stage:<9}{r.phase:<10}{r.what:<34}{r.trials:>7}{r.epochs:>7}  {r.expected_s:>20,.0f}{bound}")
    total = sum(r.expected_s for r in rows)
    unit = "GPU" if device == "cuda" else "CPU"
    share = opts.gpus_per_trial if device == "cuda" else opts.cpus_per_trial
    print(f"  total: {sum(r.trials for r in rows)} trials, about {total:,.0f} trial-seconds = "
          f"{total * share:,.0f} {unit}-seconds ({math.ceil(total * share / 60)} {unit}-minutes)")
    if device == "cpu" and not opts.address:
        concurrency = local_concurrency(opts)
        print(f"  on this machine ({os.cpu_count()} CPUs, {concurrency} trials at a time): about "
              f"{math.ceil(total / concurrency / 60)} minutes of wall time")
    print(f"  (estimates from {source})")
