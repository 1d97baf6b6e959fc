"""What a tuning chose and how its search went (study.tuning.choose), on fake MLflow runs: the
full-length winner over a better-looking pruned trial, the first guess recognised, the lead
measured where ASHA compared the two (the last epoch both reached), failed trials never chosen."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from search_spaces import Param
from study.records import Outcome, Tag
from study.tuning import Tuning, choose

PARAMS = (Param("lr", 1e-4, 1e-1, log=True, reason="test"),)


def run(run_id: str, outcome: str, lr: float, curve: list[float], tuning: str = "a@0"):
    metrics = {"val/acc": curve[-1], "epoch": float(len(curve)), "val/examples": 400.0} if curve else {}
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id), data=SimpleNamespace(
        tags={Tag.TUNING: tuning, Tag.OUTCOME: outcome, Tag.ARM: "a"}, params={"lr": repr(lr)}, metrics=metrics)), \
        {i + 1: v for i, v in enumerate(curve)}


def test_a_tuning_chooses_its_full_length_best_and_says_how_the_search_went():
    trials = [run("guess", Outcome.COMPLETED, 3e-3, [0.90, 0.95, 0.96, 0.970]),
              run("pruned", Outcome.PRUNED, 1e-2, [0.93, 0.975]),           # better at epoch 2, stopped there
              run("slow", Outcome.COMPLETED, 1e-4, [0.80, 0.85, 0.90, 0.920]),
              run("nan", Outcome.FAILED, 1e-1, [])]
    runs = [r for r, _ in trials]
    curves = {r.info.run_id: c for r, c in trials}
    tuning = Tuning({"arm": "a", "seed": 0}, PARAMS, {"lr": 3e-3}, seed=1000)
    entry = choose(runs, {"a@0": tuning}, "val/acc", "max", curves.get)["a@0"]
    assert entry["tune_run_id"] == "guess" and entry["params"] == {"lr": 3e-3} and entry["first_guess_won"]
    assert (entry["trials"], entry["full_length"], entry["failed"]) == (4, 2, 1)
    # the runner-up is the other full-length trial; they compare at its last epoch, the 4th
    assert entry["lead_epoch"] == 4 and abs(entry["lead"] - 0.05) < 1e-12 and entry["lead_examples"] == 20


def test_a_tuning_whose_trials_all_failed_chooses_nothing():
    failed, _ = run("nan", Outcome.FAILED, 1e-1, [])
    assert choose([failed], {"a@0": Tuning({"arm": "a", "seed": 0}, PARAMS, {}, seed=1)}, "val/acc", "max") == {}


def test_a_lead_over_a_pruned_runner_up_is_measured_where_asha_stopped_it():
    trials = [run("winner", Outcome.COMPLETED, 3e-3, [0.90, 0.95, 0.96, 0.97]),
              run("pruned", Outcome.PRUNED, 1e-2, [0.88, 0.93])]
    curves = {r.info.run_id: c for r, c in trials}
    entry = choose([r for r, _ in trials], {"a@0": Tuning({"arm": "a", "seed": 0}, PARAMS, {"lr": 1e-3}, seed=1)},
                   "val/acc", "max", curves.get)["a@0"]
    assert entry["lead_epoch"] == 2 and abs(entry["lead"] - 0.02) < 1e-12 and not entry["first_guess_won"]


def test_a_tuning_of_one_trial_chooses_what_that_trial_would_have_drawn_without_training_it():
    """A first guess that leaves a parameter open: the seeded sampler draws it, exactly as the
    first trial of a real search of that tuning draws it; the record says so."""
    from study.searchers import PerArmOptunaSearch, space_function
    from study.tuning import FIRST_DRAW, FIRST_GUESS, untrained_choices

    params = (*PARAMS, Param("batch_size", choices=(32, 64, 128, 256), reason="test"))
    tunings = {f"a@{s}": Tuning({"arm": "a", "seed": s}, params, {"lr": 3e-3}, seed=1000 + s) for s in (0, 1)}
    tunings["b@0"] = Tuning({"arm": "b", "seed": 0}, params, {"lr": 3e-3, "batch_size": 64}, seed=1000)

    def searcher(trials):
        return PerArmOptunaSearch({k: dict(t.config) for k, t in tunings.items()},
                                  lambda k: space_function(tunings[k].params), trials, "val/acc", "max",
                                  seeds={k: t.seed for k, t in tunings.items()},
                                  first_points={k: dict(t.first_point) for k, t in tunings.items()})

    chosen = untrained_choices(searcher(1), tunings)
    assert chosen == untrained_choices(searcher(1), tunings)            # reproducible
    searched = searcher(4)
    first_trials = [searched.suggest(f"t{i}") for i in range(len(tunings))]
    for trial in first_trials:                    # what a real search's first trial of each tuning trains
        assert chosen[trial["tuning"]]["params"] == {"lr": trial["lr"], "batch_size": trial["batch_size"]}
    assert chosen["a@0"]["params"]["lr"] == 3e-3 and chosen["a@0"]["params"]["batch_size"] in (32, 64, 128, 256)
    assert chosen["b@0"]["params"] == {"lr": 3e-3, "batch_size": 64}
    assert [chosen[k]["outcome"] for k in ("a@0", "a@1", "b@0")] == [FIRST_DRAW, FIRST_DRAW, FIRST_GUESS]
    assert chosen["b@0"]["first_guess_won"] is True and chosen["a@0"]["first_guess_won"] is None
    assert all(c["trials"] == 0 and c["tune_run_id"] is None for c in chosen.values())


@pytest.mark.slow
def test_one_trial_per_tuning_with_a_full_first_guess_trains_it_once(tmp_path, capsys, ray_local):
    """Nothing to search, nothing to compare: no tune trial, the first guess is each tuning's
    choice, trained once per seed as the replicate."""
    import json
    from pathlib import Path


    from mlflow_runs import parent_runs, trial_runs
    from study import tracking
    from study.records import tuning_file
    from study.run import main
    from test_trust import write_study

    path = write_study(tmp_path / "project", "wine_once")
    text = path.read_text().replace('Param("lr", 0.001, 0.1, log=True,', 'Param("lr", 0.001, 0.1, log=True, start=0.02,')
    path.write_text(text.replace("trials_per_tuning=2", "trials_per_tuning=1"))
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    assert main([str(path), "--results-dir", str(tmp_path / "results"), "--tracking-uri", uri, "--quiet"]) == 0, \
        capsys.readouterr().out
    runs = trial_runs(uri, "wine_once")
    assert {r.data.tags["phase"] for r in runs} == {"replicate"} and len(runs) == 2 * 2
    parent = parent_runs(uri, "wine_once")[0]
    record = json.loads(Path(tracking.client(uri).download_artifacts(parent.info.run_id, tuning_file("classify"),
                                                                     str(tmp_path))).read_text())
    assert {e["outcome"] for e in record.values()} == {"first guess"}
    assert all(e["params"] == {"lr": 0.02} and e["trials"] == 0 for e in record.values())
