"""The script a Ray Tune user would write instead of our runner, for the speed comparison of
``benchmarks/end_to_end.py --versus-plain`` (issue 21): plain Tuner + OptunaSearch + ASHA +
MLflowLoggerCallback, our classifier trainable, the same configs (a study's arms, its search
space and first guesses), the same seeds, trials, epochs and concurrency as the runner's smoke
budget: each arm tuned on each seed, then each tuning's choice trained on its seed and tested.
What it leaves out is what a user would leave out: no check, no resume, no per-seed pairing of
the samplers, one Tuner per tuning.

    python -m benchmarks.plain_tune --study ablation_dropout --results-dir /tmp/plain
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile

import ray
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from search_spaces import default_point, suggest
from study.declared import schema_defaults
from study.registry import STUDIES
from trainables.classifier import train_classifier


def trainable(config: dict) -> None:
    """Our classifier, reporting through Tune (a checkpoint directory per epoch)."""
    def report(metrics, checkpoint_dir):
        tune.report({k: v for k, v in metrics.items() if not isinstance(v, str)},
                    checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
    train_classifier(dict(config), report)


def define_by_run(params, trial) -> None:
    """Optuna's define-by-run space (a module function: Tune pickles the searcher)."""
    suggest(trial, params)


def replicate(config: dict) -> None:
    """One tuning's choice, trained on its seed and tested."""
    trainable(config["chosen"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="ablation_dropout")
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--results-dir", required=True)
    args = parser.parse_args(argv)
    study, budget = STUDIES[args.study], STUDIES[args.study].budget(args.budget)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    mlflow = MLflowLoggerCallback(tracking_uri=f"sqlite:///{args.results_dir}/mlflow.db", experiment_name=study.name)
    storage = os.path.join(args.results_dir, "tune")
    chosen = []
    for seed in budget.seeds:
        for arm in study.arms():
            params = study.search_space.resolve(arm.settings)
            fixed = {**arm.settings, "seed": seed, "epochs": budget.epochs, "dataset": budget.dataset,
                     "evaluate_test": False}
            first = default_point(params, {**schema_defaults(train_classifier), **arm.settings})
            search = OptunaSearch(space=functools.partial(define_by_run, params), metric=study.metric,
                                  mode=study.mode, points_to_evaluate=[first])
            tuner = tune.Tuner(trainable, param_space=fixed, tune_config=tune.TuneConfig(
                search_alg=search, scheduler=ASHAScheduler(metric=study.metric, mode=study.mode, max_t=budget.epochs,
                                                           grace_period=budget.grace_period),
                num_samples=budget.trials_per_tuning, max_concurrent_trials=2),
                run_config=tune.RunConfig(storage_path=storage, callbacks=[mlflow], verbose=0))
            best = tuner.fit().get_best_result(metric=study.metric, mode=study.mode)
            chosen.append({**best.config, "evaluate_test": True})
    replicates = tune.Tuner(replicate, param_space={"chosen": tune.grid_search(chosen)},
                            tune_config=tune.TuneConfig(max_concurrent_trials=2),
                            run_config=tune.RunConfig(storage_path=storage, callbacks=[mlflow], verbose=0))
    grid = replicates.fit()
    print(f"{len(chosen)} tunings, {len(grid)} replicates; test/acc "
          f"{sum(r.metrics['test/acc'] for r in grid) / len(grid):.4f} on average")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
