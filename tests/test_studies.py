"""Every registered study, end to end at its smoke budget, on real Ray, Optuna, ASHA and MLflow.

The studies run once per session into one shared store (``smoke_runs`` in conftest.py), as a
user's results folder is, so an autoencoder one study trained is reused by the others. Each
test asks for the studies it reads; none depends on which test ran first.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from mlflow_runs import parent_runs, study_runs, trial_runs, tune_trials_per_tuning
from study import tracking
from study.registry import STUDIES
from study.run import main

REQUIRED_TAGS = ("study", "stage", "arm", "phase", "seed", "trial_id", "config_hash", "git_commit",
                 "git_dirty", "dataset", "data_sha256", "versions.torch", "versions.ray", "outcome",
                 "mlflow.parentRunId")
SMOKE_MIN_ACCURACY = 0.80      # issue 9: every non-degraded arm, mean over the smoke seeds
SMOKE_MIN_PSNR_DB = 18.0       # autoencoders' validation PSNR at smoke
PRETRAINING_STUDIES = sorted(n for n, s in STUDIES.items() if s.upstreams())


def _replicates(uri, name):
    return [r for r in trial_runs(uri, name) if r.data.tags["stage"] == "classify"
            and r.data.tags["phase"] == "replicate"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_smoke_records_every_trial(name, smoke_runs):
    out = smoke_runs(name)
    assert f"python -m analysis.compare {name}" in out.splitlines()[-1]
    study, uri = STUDIES[name], smoke_runs.uri
    budget = study.budgets["smoke"]
    parents = parent_runs(uri, name)
    assert len(parents) == 1 and parents[0].data.tags["study_status"] == "finished"
    trials = trial_runs(uri, name)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    assert not [r for r in study_runs(uri, name) if r.info.status == "RUNNING"], "a run was left RUNNING"
    for run in trials:
        missing = [t for t in REQUIRED_TAGS if t not in run.data.tags]
        assert not missing, f"run {run.info.run_id} lacks tags {missing}"
        assert run.data.tags["outcome"] in ("completed", "pruned", "failed")
    # One MLflow run per Tune trial: trial keys are unique and the counts match the plan.
    assert max(Counter(r.data.tags["trial_key"] for r in trials).values()) == 1
    arms = study.arms()
    tune = [r for r in trials if r.data.tags["stage"] == "classify" and r.data.tags["phase"] == "tune"]
    # every arm tuned on every replicate seed (a tuning per arm and seed), the same trials each
    expected = {(a.name, str(s)): tune_trials_per_tuning(budget) for a in arms for s in budget.seeds}
    assert Counter((r.data.tags["arm"], r.data.tags["seed"]) for r in tune) == {k: v for k, v in expected.items() if v}
    assert all(r.data.tags["tuning"] == f"{r.data.tags['arm']}@{r.data.tags['seed']}" for r in tune)
    assert all(r.data.params["evaluate_test"] == "False" for r in tune), "tuning must never see the test set"
    # Paired replicates: every arm on exactly the same seeds, evaluated on the test set.
    replicate = _replicates(uri, name)
    seeds_by_arm = defaultdict(set)
    for r in replicate:
        seeds_by_arm[r.data.tags["arm"]].add(int(r.data.tags["seed"]))
        assert r.data.tags["outcome"] == "completed"
        assert "test/acc" in r.data.metrics and "test/f1_macro" in r.data.metrics
        assert r.data.params["evaluate_test"] == "True"
        assert {a.path for a in tracking.client(uri).list_artifacts(r.info.run_id)} >= {
            "model.pt", "history.csv", "evaluation.json", "confusion_matrix.csv"}
        best_epoch = r.data.metrics["val/best_epoch"]     # the epoch whose weights were tested
        assert best_epoch in range(1, budget.epochs + 1), (r.data.tags["arm"], best_epoch)
    assert seeds_by_arm == {a.name: set(budget.seeds) for a in arms}
    # Metrics per epoch with their step.
    history = tracking.client(uri).get_metric_history(replicate[0].info.run_id, "val/acc")
    assert [m.step for m in history] == list(range(1, budget.epochs + 1))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_smoke_arms_learn(name, smoke_runs):
    """Every number the smoke budget prints means something: every arm far above chance, except
    arms the study declares degraded (a clean-trained model scored on corrupted inputs)."""
    smoke_runs(name)
    study = STUDIES[name]
    accuracy = defaultdict(list)
    for r in _replicates(smoke_runs.uri, name):
        accuracy[r.data.tags["arm"]].append(r.data.metrics["test/acc"])
    for arm in study.arms():
        mean = sum(accuracy[arm.name]) / len(accuracy[arm.name])
        if not study.is_degraded(arm.levels):
            assert mean >= SMOKE_MIN_ACCURACY, f"{arm.name}: mean test accuracy {mean:.3f} at smoke"


@pytest.mark.slow
@pytest.mark.parametrize("name", PRETRAINING_STUDIES)
def test_study_smoke_uses_one_reconstructing_autoencoder_per_key_and_seed(name, smoke_runs):
    smoke_runs(name)
    study, uri = STUDIES[name], smoke_runs.uri
    budget = study.budgets["smoke"]
    used = json.loads(parent_runs(uri, name)[0].data.tags["upstream_runs"])
    assert set(used) == {f"{p.key}/{s}" for p in study.upstreams() for s in budget.seeds}
    # the autoencoders this study trained (others were reused) reconstruct, with early stopping
    for r in trial_runs(uri, name):
        if r.data.tags["stage"] == "upstream" and r.data.tags["phase"] == "replicate":
            assert r.data.metrics["val/psnr"] >= SMOKE_MIN_PSNR_DB, (r.data.tags["arm"], r.data.metrics["val/psnr"])


@pytest.mark.slow
def test_autoencoders_are_trained_once_and_shared_between_studies(smoke_runs):
    """Pretraining happens once per (autoencoder, seed) in the whole store, whichever study
    needed it first; every study that needs it uses that same run."""
    used = {}
    for name in PRETRAINING_STUDIES:
        smoke_runs(name)
        used[name] = json.loads(parent_runs(smoke_runs.uri, name)[0].data.tags["upstream_runs"])
    c = tracking.client(smoke_runs.uri)
    experiments = [e.experiment_id for e in c.search_experiments()]
    trained = [r for r in c.search_runs(experiments, "tags.stage = 'upstream'", max_results=10000)
               if "upstream_cache_key" in r.data.tags]
    assert max(Counter(r.data.tags["upstream_cache_key"] for r in trained).values()) == 1, \
        "an autoencoder was trained twice"
    run_of = {}
    for name, runs in used.items():
        for key, run_id in runs.items():
            assert run_of.setdefault(key, run_id) == run_id, f"{name} trained its own {key}"
    assert set(run_of.values()) <= {r.info.run_id for r in trained}
    assert set(used["even_odd"]) <= set(used["ablation_pretraining"])
    assert set(used["ablation_noise"]) & set(used["ablation_pretraining"])


@pytest.mark.slow
def test_running_a_finished_study_again_does_nothing(smoke_runs, capsys):
    name = "ablation_dropout"
    smoke_runs(name)
    before = len(study_runs(smoke_runs.uri, name))
    code = main([name, "--budget", "smoke", "--results-dir", str(smoke_runs.results),
                 "--tracking-uri", smoke_runs.uri, "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "already finished" in out
    assert "checked:" not in out, "a finished study was checked (its dry trial run) before nothing was done"
    assert len(study_runs(smoke_runs.uri, name)) == before
