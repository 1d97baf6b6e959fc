"""Every registered study, end to end at its smoke budget, on real Ray, Optuna, ASHA and MLflow.

The studies share one MLflow store (as a user's results folder would), so the autoencoders
trained by the first study that needs them are found and reused by the later ones.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from study import tracking
from study.registry import STUDIES
from study.run import main

REQUIRED_TAGS = ("study", "stage", "arm", "phase", "seed", "trial_id", "config_hash", "git_commit",
                 "git_dirty", "dataset", "data_sha256", "versions.torch", "versions.ray", "outcome",
                 "mlflow.parentRunId")
# Pretraining studies first so the reuse check below sees both a first run and a reuse.
SMOKE_MIN_ACCURACY = 0.80      # issue 9: every non-degraded arm, mean over the smoke seeds
SMOKE_MIN_PSNR_DB = 18.0       # autoencoders' validation PSNR at smoke
ORDER = ["ablation_pretraining", "even_odd", "ablation_noise", "ablation_dropout", "ablation_optimizer",
         "cnn_sweep"]


def test_every_study_is_in_the_run_order():
    assert sorted(ORDER) == sorted(STUDIES)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    return results, f"sqlite:///{results / 'mlflow.db'}"


def _runs(uri, study_name):
    c = tracking.client(uri)
    experiment = c.get_experiment_by_name(study_name)
    return c.search_runs([experiment.experiment_id], max_results=10000)


@pytest.mark.slow
@pytest.mark.parametrize("name", ORDER)
def test_study_smoke_end_to_end(name, store, ray_local, capsys):
    results, uri = store
    study = STUDIES[name]
    budget = study.budgets["smoke"]
    code = main([name, "--budget", "smoke", "--results-dir", str(results), "--tracking-uri", uri, "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"python -m analysis.compare {name}" in out.splitlines()[-1]

    runs = _runs(uri, name)
    parents = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    assert len(parents) == 1 and parents[0].data.tags["study_status"] == "finished"
    parent = parents[0]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    for run in trials:
        missing = [t for t in REQUIRED_TAGS if t not in run.data.tags]
        assert not missing, f"run {run.info.run_id} lacks tags {missing}"
        assert run.data.tags["outcome"] in ("completed", "pruned", "failed")
    # One MLflow run per Tune trial: trial keys are unique and the counts match the plan.
    keys = Counter(r.data.tags["trial_key"] for r in trials)
    assert max(keys.values()) == 1
    arms = study.arms()
    classify = [r for r in trials if r.data.tags["stage"] == "classify"]
    tune = [r for r in classify if r.data.tags["phase"] == "tune"]
    replicate = [r for r in classify if r.data.tags["phase"] == "replicate"]
    assert len(tune) == len(arms) * budget.trials_per_arm
    assert Counter(r.data.tags["arm"] for r in tune) == {a.name: budget.trials_per_arm for a in arms}
    assert {r.data.tags["seed"] for r in tune} == {str(budget.tune_seed)}
    # Paired replicates: every arm on exactly the same seeds, evaluated on the test set.
    seeds_by_arm = defaultdict(set)
    for r in replicate:
        seeds_by_arm[r.data.tags["arm"]].add(int(r.data.tags["seed"]))
        assert r.data.tags["outcome"] == "completed"
        assert "test/acc" in r.data.metrics and "test/f1_macro" in r.data.metrics
        assert r.data.params["evaluate_test"] == "True"
        assert {a.path for a in tracking.client(uri).list_artifacts(r.info.run_id)} >= {
            "model.pt", "history.csv", "evaluation.json", "confusion_matrix.csv"}
    assert seeds_by_arm == {a.name: set(budget.seeds) for a in arms}
    assert all(r.data.params["evaluate_test"] == "False" for r in tune), "tuning must never see the test set"
    # Metrics per epoch with their step.
    history = tracking.client(uri).get_metric_history(replicate[0].info.run_id, "val/acc")
    assert [m.step for m in history] == list(range(1, budget.epochs + 1))

    # Every number the smoke budget prints means something: every arm far above chance, except
    # arms the study declares degraded (a clean-trained model scored on corrupted inputs).
    accuracy = defaultdict(list)
    for r in replicate:
        accuracy[r.data.tags["arm"]].append(r.data.metrics["test/acc"])
        assert 1 <= r.data.metrics["val/best_epoch"] <= budget.epochs
    for arm in arms:
        mean = sum(accuracy[arm.name]) / len(accuracy[arm.name])
        if study.is_degraded(arm.levels):
            continue
        assert mean >= SMOKE_MIN_ACCURACY, f"{arm.name}: mean test accuracy {mean:.3f} at smoke"

    # Pretraining: once per (autoencoder, seed) in the whole store, reused by later studies.
    if study.pretrainings():
        used = json.loads(parent.data.tags["pretrained_runs"])
        expected_seeds = set(budget.seeds) | {budget.tune_seed}
        assert set(used) == {f"{p.key}/{s}" for p in study.pretrainings() for s in expected_seeds}
        c = tracking.client(uri)
        all_experiments = [e.experiment_id for e in c.search_experiments()]
        pretrain_runs = [r for r in c.search_runs(all_experiments, "tags.stage = 'pretrain'", max_results=10000)
                         if "pretrain_cache_key" in r.data.tags]
        per_key = Counter(r.data.tags["pretrain_cache_key"] for r in pretrain_runs)
        assert max(per_key.values()) == 1, "an autoencoder was trained twice"
        assert {r.info.run_id for r in pretrain_runs} >= set(used.values())
        # the autoencoders this study trained reconstruct (>= 18 dB), with early stopping
        for r in trials:
            if r.data.tags["stage"] == "pretrain" and r.data.tags["phase"] == "replicate":
                assert r.data.metrics["val/psnr"] >= SMOKE_MIN_PSNR_DB, (r.data.tags["arm"], r.data.metrics["val/psnr"])
        trained_here = {r.data.tags["arm"] for r in trials if r.data.tags["stage"] == "pretrain"}
        if name == "even_odd":
            assert trained_here == set(), "even_odd must reuse ablation_pretraining's autoencoder"
        if name == "ablation_noise":
            assert trained_here == {"dae-gaussian-0.3"}, trained_here

    if name != "ablation_dropout":
        return
    # Running a finished study again does nothing and says so.
    code = main([name, "--budget", "smoke", "--results-dir", str(results), "--tracking-uri", uri, "--quiet"])
    assert code == 0
    assert "already finished" in capsys.readouterr().out
    assert len(_runs(uri, name)) == len(runs)
