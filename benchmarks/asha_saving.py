"""ASHA's saving: the compute of one study's tune phase with per-arm ASHA vs. every trial to full
length, and the accuracy given up by the configurations ASHA chooses.

Claim under test: per-arm ASHA spends <= 1/3 of the compute of running every tune trial to full
length (FIFO), and the configurations it chooses are within 0.2 percentage points of FIFO's
choices in accuracy. Both runs are the real runner, `study.protocol.run_study`, on a study from
the registry with a custom budget, each in its own results directory (own MLflow store, own
Tune storage), with the same Optuna seeds:

  ASHA  the protocol as it is: PerArmASHA(max_t=epochs, grace_period, reduction_factor)
  FIFO  the same protocol with grace_period = epochs: ASHA's only rung is the last epoch, so
        no trial is stopped early (checked: the FIFO run must have no pruned trial)

With trials_per_tuning below Optuna's 10 random start-up trials, every arm's sampler draws the
same configurations in both runs whatever the results (checked: the two tune phases must hold
the same configurations), so the runs differ only in which trials ASHA stops. Compute is read
back from MLflow, as the study records it: the epochs each tune trial ran (its last `epoch`)
and its `cost/wall_seconds_trial`. Accuracy: each arm's chosen configuration's validation
accuracy (full length: the protocol prefers completed trials) and the test accuracy of the
replicate phase, which trains each chosen configuration to full length on --seeds.

    python -m benchmarks.asha_saving                                   # ablation_dropout, ~6-10 min
    python -m benchmarks.asha_saving --study ablation_optimizer --trials-per-tuning 8

Ray is started as ray.init(address="local", num_cpus=2, include_dashboard=False,
_node_ip_address="127.0.0.1") in this process and shut down at the end; a one-trial-per-arm
warm-up run comes first, untimed. The last line is
ASHA's compute as a share of FIFO's and the accuracy gaps, against the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import machine_line, verdict

TARGET_SHARE = 1 / 3          # ASHA compute / FIFO compute
TARGET_GAP_PP = 0.2           # accuracy gap, percentage points


def run_one(name: str, study, budget, root: Path) -> dict:
    """Run the study once with `budget`; return what MLflow recorded of it."""
    from study import tracking
    from study.protocol import RunOptions, run_study

    results = root / name
    uri = f"sqlite:///{results / 'mlflow.db'}"
    opts = RunOptions(study=replace(study, budgets={"smoke": budget, "full": budget}), budget_name=f"bench-{name}",
                      budget=budget, results_dir=results, tracking_uri=uri, cpus_per_trial=1.0, verbose=0,
                      command=f"python -m benchmarks.asha_saving ({name})")
    started = time.perf_counter()
    code = run_study(opts)
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{name}: run_study exited with {code}")

    c = tracking.client(uri)
    experiment = c.get_experiment_by_name(study.name).experiment_id
    parent = tracking.latest_parent(uri, experiment, opts.budget_name, budget.dataset)
    runs = c.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.run_id}' and tags.stage = 'classify'",
                         max_results=10000)
    tune_runs = [r for r in runs if r.data.tags["phase"] == "tune"]
    replicate = [r for r in runs if r.data.tags["phase"] == "replicate"]
    chosen = json.loads(parent.tags["best_configs.classify"])
    tuned = sorted({p for v in chosen.values() for p in v["params"]})      # the nuisance parameters
    test: dict[str, list[float]] = {}
    for r in replicate:
        test.setdefault(r.data.tags["arm"], []).append(r.data.metrics["test/acc"])
    outcomes: dict[str, int] = {}
    for r in tune_runs:
        outcomes[r.data.tags["outcome"]] = outcomes.get(r.data.tags["outcome"], 0) + 1
    return {
        "wall": wall,
        "epochs": sum(int(r.data.metrics.get("epoch", 0)) for r in tune_runs),
        "trial_seconds": sum(r.data.metrics.get("cost/wall_seconds_trial", 0.0) for r in tune_runs),
        "trials": len(tune_runs),
        "outcomes": outcomes,
        "configs": sorted((r.data.tags["arm"], tuple(r.data.params.get(p) for p in tuned)) for r in tune_runs),
        "tuned": tuned,
        "chosen": {arm: (v["params"], v["val_metric"]) for arm, v in chosen.items()},
        "test": {arm: sum(v) / len(v) for arm, v in test.items()},
        "full_val": {(r.data.tags["arm"], tuple(r.data.params.get(p) for p in tuned)): r.data.metrics.get("val/acc")
                     for r in tune_runs if r.data.tags["outcome"] == "completed"},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="ablation_dropout", choices=("ablation_dropout", "ablation_optimizer"))
    parser.add_argument("--trials-per-tuning", type=int, default=8,
                        help="Optuna trials per arm (default 8; keep it under 10 so both runs draw the same configs)")
    parser.add_argument("--epochs", type=int, default=6, help="full length of a trial (ASHA's max_t; default 6)")
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA grace period (default 1, the Budget default)")
    parser.add_argument("--reduction-factor", type=int, default=2,
                        help="ASHA reduction factor (default 2, as both registered budgets)")
    parser.add_argument("--seeds", default="0,1", help="replicate seeds for the test accuracy (default 0,1)")
    parser.add_argument("--dataset", default="mnist-5k")
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    from study.registry import get_study
    from study.spec import Budget

    from trainables.data import load_dataset

    study = get_study(args.study)
    dataset = load_dataset(args.dataset)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    asha = Budget(dataset=args.dataset, epochs=args.epochs, trials_per_tuning=args.trials_per_tuning, seeds=seeds,
                  grace_period=args.grace_period, reduction_factor=args.reduction_factor)
    fifo = replace(asha, grace_period=args.epochs)
    n_arms = len(study.arms())
    print(machine_line())
    print(f"study {study.name}: {n_arms} arms x {args.trials_per_tuning} trials x {args.epochs} epochs on {args.dataset}; "
          f"ASHA grace {args.grace_period}, reduction factor {args.reduction_factor}; FIFO = grace {args.epochs}; "
          f"Optuna seed {asha.tune_seed}; replicate seeds {', '.join(map(str, seeds))}; n = 1 run each")

    root = Path(tempfile.mkdtemp(prefix="asha-saving-"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        # untimed warm-up: the first Tuner in a fresh Ray pays cold imports and worker start-up
        # inside its first trials' seconds; neither measured run should carry that alone
        run_one("warmup", study, replace(asha, trials_per_tuning=1, epochs=1, seeds=seeds[:1]), root)
        a = run_one("asha", study, asha, root)
        f = run_one("fifo", study, fifo, root)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    same = a["configs"] == f["configs"]
    print()
    print(f"{'tune phase':<8}{'trials':>7}{'epochs':>8}{'trial-s':>9}{'study wall s':>14}  outcomes")
    for name, r in (("ASHA", a), ("FIFO", f)):
        print(f"{name:<8}{r['trials']:>7}{r['epochs']:>8}{r['trial_seconds']:>9.1f}{r['wall']:>14.1f}  "
              + ", ".join(f"{n} {o}" for o, n in sorted(r["outcomes"].items())))
    print(f"same configurations drawn in both runs: {'yes' if same else 'NO (the comparison is not paired)'}; "
          f"FIFO pruned none: {'yes' if 'pruned' not in f['outcomes'] else 'NO'}")
    print()
    print(f"{'arm':<14}{'chosen by ASHA':<46}{'chosen by FIFO':<46}{'val ASHA':>9}{'val FIFO':>9}"
          f"{'test ASHA':>10}{'test FIFO':>10}")
    val_gaps, test_gaps = [], []
    for arm in sorted(f["chosen"]):
        pa, va = a["chosen"].get(arm, ({}, float("nan")))
        pf, vf = f["chosen"][arm]
        # ASHA's choice at full length: its own completed run (the protocol prefers those), or
        # the same configuration's run in FIFO if ASHA's choice was stopped early
        key = (arm, tuple(str(pa.get(p)) if p in pa else None for p in a["tuned"]))
        va_full = f["full_val"].get(key, va)
        ta, tf = a["test"].get(arm, float("nan")), f["test"].get(arm, float("nan"))
        val_gaps.append(100 * (vf - va_full))
        test_gaps.append(100 * (tf - ta))
        fmt = lambda p: ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(p.items()))  # noqa: E731
        print(f"{arm:<14}{fmt(pa):<46}{fmt(pf):<46}{100 * va_full:>8.2f}%{100 * vf:>8.2f}%{100 * ta:>9.2f}%{100 * tf:>9.2f}%")
    share_epochs = a["epochs"] / f["epochs"]
    share_seconds = a["trial_seconds"] / f["trial_seconds"]
    val_gap, test_gap = sum(val_gaps) / len(val_gaps), sum(test_gaps) / len(test_gaps)
    n_val, n_test = round(0.1 * len(dataset.train_labels)), len(dataset.test_labels)
    print(f"gap FIFO - ASHA per arm, percentage points: validation {', '.join(f'{g:+.2f}' for g in val_gaps)}; "
          f"test {', '.join(f'{g:+.2f}' for g in test_gaps)} (test: mean over {len(seeds)} replicate seed(s); "
          f"one image is {100 / n_val:.2f} pp of the {n_val:,}-image validation split and {100 / n_test:.2f} pp "
          f"of the {n_test:,}-image test set)")
    ok = share_epochs <= TARGET_SHARE and max(val_gaps) <= TARGET_GAP_PP and max(test_gaps) <= TARGET_GAP_PP
    print(f"summary: ASHA used {share_epochs:.2f} of FIFO's trial epochs ({a['epochs']} vs {f['epochs']}) and "
          f"{share_seconds:.2f} of its trial-seconds; mean gap {val_gap:+.2f} pp validation, {test_gap:+.2f} pp test "
          f"(worst arm {max(val_gaps):+.2f} / {max(test_gaps):+.2f}); target <= 1/3 of the compute with a gap <= "
          f"{TARGET_GAP_PP} pp: {verdict(ok)}")


if __name__ == "__main__":
    main()
