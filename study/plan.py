"""``--dry-run``: what a study will run and roughly what it will cost, without training."""
from __future__ import annotations

import math

from study.protocol import RunOptions
from study.registry import PRETRAIN_SPACE

# Training images per second of ONE trial, used only for estimates. CPU figures: one core per
# trial on this project's 2-core reference machine; GPU figures: one trial alone on an H100.
# Re-measure with `python -m benchmarks.throughput --model MODEL --device DEVICE`.
IMAGES_PER_SECOND = {
    ("cpu", "cnn"): 3000.0,
    ("cpu", "encoder_head"): 2500.0,
    ("cpu", "autoencoder"): 1500.0,
    ("cuda", "cnn"): 200_000.0,
    ("cuda", "encoder_head"): 200_000.0,
    ("cuda", "autoencoder"): 150_000.0,
}
TRAIN_IMAGES = {"mnist-5k": 4000, "mnist": 60000, "fashion-mnist": 60000}
TRIAL_OVERHEAD_S = 1.0     # actor reuse, checkpoint and MLflow logging per trial (2-core CPU)


def _seconds(device: str, model: str, images: float, epochs: float) -> float:
    return images * epochs / IMAGES_PER_SECOND[(device, model)]


def print_plan(opts: RunOptions) -> None:
    study, budget = opts.study, opts.budget
    device = "cuda" if opts.gpus_per_trial else "cpu"
    n_train = TRAIN_IMAGES.get(budget.dataset, 60000) * 0.9       # 10% held out for validation
    arms = study.arms()
    rows = []   # (stage, phase, what, trials, epochs, seconds of trial time)

    pretrainings = study.pretrainings()
    if pretrainings:
        seeds = sorted(set(budget.seeds) | {budget.tune_seed})
        n = budget.pretrain_trials * len(pretrainings)
        rows.append(("pretrain", "tune", f"{len(pretrainings)} autoencoders x {budget.pretrain_trials} trials",
                     n, budget.pretrain_epochs, n * _seconds(device, "autoencoder", n_train, budget.pretrain_epochs)))
        n = len(seeds) * len(pretrainings)
        rows.append(("pretrain", "replicate", f"{len(pretrainings)} autoencoders x {len(seeds)} seeds",
                     n, budget.pretrain_epochs, n * _seconds(device, "autoencoder", n_train, budget.pretrain_epochs)))
    tune_s = sum(budget.trials_per_arm * _seconds(device, a.settings.get("model", "cnn"),
                                                  n_train * a.settings.get("label_fraction", 1.0), budget.epochs)
                 for a in arms)
    rows.append(("classify", "tune", f"{len(arms)} arms x {budget.trials_per_arm} trials",
                 len(arms) * budget.trials_per_arm, budget.epochs, tune_s))
    rep_s = sum(len(budget.seeds) * _seconds(device, a.settings.get("model", "cnn"),
                                             n_train * a.settings.get("label_fraction", 1.0), budget.epochs)
                for a in arms)
    rows.append(("classify", "replicate", f"{len(arms)} arms x {len(budget.seeds)} seeds",
                 len(arms) * len(budget.seeds), budget.epochs, rep_s))

    print(f"Study {study.name} — {study.description}")
    print(f"  question: {study.question}")
    print(f"  budget {opts.budget_name}: dataset {budget.dataset}, {budget.epochs} epochs, "
          f"{budget.trials_per_arm} tune trials per arm, seeds {list(budget.seeds)} (tune seed {budget.tune_seed})")
    print(f"  selection: {study.metric} ({study.mode}) on validation; ASHA grace {budget.grace_period}, "
          f"reduction factor {budget.reduction_factor}; test set only in the replicate phase")
    print(f"  design: {study.design}; factors: "
          + "; ".join(f"{f.name} = {[l.name for l in f.levels]}" for f in study.factors))
    print(f"  arms ({len(arms)}):")
    for arm in arms:
        extra = [f"pretrained {arm.pretraining.key}" if arm.pretraining else "",
                 f"denoiser {arm.denoiser.key}" if arm.denoiser else ""]
        tuned = ", ".join(p.describe() for p in study.search_space.resolve(arm.settings))
        print(f"    {'*' if arm.is_baseline else ' '} {arm.name}  {' '.join(e for e in extra if e)}")
        print(f"        tunes: {tuned}")
    for cell, reason in study.invalid_cells():
        print(f"    x {','.join(f'{k}={v}' for k, v in cell.items())}  (invalid: {reason})")
    if pretrainings:
        print(f"  pretraining tunes: {', '.join(p.describe() for p in PRETRAIN_SPACE.params)}")
    print()
    print(f"  {'stage':<9}{'phase':<10}{'what':<34}{'trials':>7}{'epochs':>7}  est. trial-seconds")
    total = 0.0
    trials = 0
    for stage, phase, what, n, epochs, seconds in rows:
        seconds += n * TRIAL_OVERHEAD_S
        total += seconds
        trials += n
        print(f"  {stage:<9}{phase:<10}{what:<34}{n:>7}{epochs:>7}  {seconds:>10,.0f}  (upper bound)"
              if phase == "tune" else f"  {stage:<9}{phase:<10}{what:<34}{n:>7}{epochs:>7}  {seconds:>10,.0f}")
    unit = "GPU" if device == "cuda" else "CPU"
    share = opts.gpus_per_trial if device == "cuda" else opts.cpus_per_trial
    print(f"  total: {trials} trials, about {total:,.0f} trial-seconds = {total * share:,.0f} {unit}-seconds "
          f"({math.ceil(total * share / 60)} {unit}-minutes) before ASHA's early stopping; "
          f"tune phases usually cost a third of that bound")
    print("  (estimates from the per-model throughput table in study/plan.py; nothing was trained)")
