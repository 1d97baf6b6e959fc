"""analysis.arms and analysis.settings on hand-made frames: failed replicates counted, the
best-arm rule, and every non-default setting shown per arm."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis import arms, settings, stats


def replicate_runs(rows):
    return pd.DataFrame(columns=["arm", "seed", "outcome", "failure_reason"]) if not rows else pd.DataFrame([{"arm": a, "seed": s, "outcome": o, "failure_reason": r} for a, s, o, r in rows])


def test_failures_counted_not_averaged_away():
    runs = replicate_runs([
        ("a", 0, "completed", None), ("a", 1, "completed", None), ("a", 2, "completed", None),
        ("b", 0, "completed", None), ("b", 1, "failed", "TrainingDiverged: train/loss is nan in epoch 3"),
        ("b", 2, "failed", "trial process failed"), ("b", 2, "completed", None),     # retried: counts as done
        ("c", 0, "completed", None), ("c", 1, "running", None),
    ])
    f = arms.replicate_failures(runs, ["a", "b", "c", "d"], [0, 1, 2], never_replicated=["d"]).set_index("arm")
    assert f.loc["a", "failed"] == 0 and f.loc["a", "failure_rate"] == 0 and f.loc["a", "text"] == ""
    assert f.loc["b", "completed"] == 2 and f.loc["b", "failed"] == 1
    assert f.loc["b", "failure_rate"] == pytest.approx(1 / 3)
    assert f.loc["b", "text"] == "failed on 1 of 3 seeds (seed 1: diverged)"
    assert f.loc["c", "pending"] == 2 and math.isclose(f.loc["c", "failure_rate"], 0.0)   # running, missing
    assert f.loc["d", "failure_rate"] == 1.0 and "every tune trial failed" in f.loc["d", "text"]
    assert set(arms.failure_texts(f.reset_index())) == {"b", "d"}


def scores(values):
    return pd.DataFrame([{"arm": a, "seed": s, "metric": "test/acc", "value": v}
                         for a, vs in values.items() for s, v in enumerate(vs) if v is not None])


def test_best_arm_rule_skips_failed_arms_and_lists_ties():
    sc = scores({"base": [0.950, 0.952, 0.951, 0.949],
                 "close": [0.951, 0.951, 0.953, 0.950],          # tied with the best
                 "worse": [0.930, 0.931, 0.929, 0.930],
                 "diverged": [0.990, 0.991, None, 0.992]})       # highest mean, but one seed failed
    failures = arms.replicate_failures(
        replicate_runs([(a, s, "failed" if (a, s) == ("diverged", 2) else "completed", "nan loss")
                        for a in ("base", "close", "worse", "diverged") for s in range(4)]),
        ["base", "close", "worse", "diverged"], range(4))
    best, text = arms.best_arm(stats.summarize_arms(sc), sc, failures, "test/acc", "accuracy", False)
    assert best == "close"
    assert "not distinguishable from it: base" in text and "worse" not in text.split("Rule:")[0]
    assert "cannot be best" in text                             # the rule is stated


def test_no_best_arm_called_at_two_seeds():
    sc = scores({"a": [0.9, 0.91], "b": [0.95, 0.96]})
    failures = arms.replicate_failures(replicate_runs([]), ["a", "b"], [0, 1])
    best, text = arms.best_arm(stats.summarize_arms(sc), sc, failures, "test/acc", "accuracy", False)
    assert best == "b" and text.startswith("Best arm: none called at n = 2")


def optimizer_runs() -> pd.DataFrame:
    """Replicates of an optimizer study: momentum and weight decay fixed for every arm."""
    rows = []
    for arm, opt, lr in (("optimizer=adam", "adam", "0.001"), ("optimizer=adamw", "adamw", "0.002"),
                         ("optimizer=sgd", "sgd", "0.05"), ("optimizer=rmsprop", "rmsprop", "0.0005")):
        for seed in (0, 1):
            rows.append({"arm": arm, "params.optimizer": opt, "params.lr": lr, "params.momentum": "0.9",
                         "params.weight_decay": "0.0", "params.seed": str(seed), "params.epochs": "5",
                         "params.dropout": "0.25", "params.device": "cpu", "params.dataset": "mnist",
                         "params.batch_size": "128"})
    return pd.DataFrame(rows)


def test_every_non_default_optimizer_setting_is_shown():
    runs = optimizer_runs()
    tune = pd.concat([runs.assign(**{"params.lr": "0.01"}), runs])        # the tune phase searched lr
    table, roles = settings.settings_table(runs, tune, settings.our_defaults("classify"))
    assert roles["optimizer"] == "factor" and roles["lr"] == "tuned"
    # momentum 0.9 is the trainable's default, but not PyTorch's for SGD and RMSprop (0), and
    # Adam/AdamW have none: shown, with "unused" where it does not apply
    assert roles["momentum"] == "fixed; differs from PyTorch's default"
    assert table.loc["optimizer=sgd", "momentum"] == "0.9"
    assert table.loc["optimizer=adam", "momentum"] == "unused by adam"
    # weight decay 0 is Adam's default but not AdamW's (0.01): an unregularised "AdamW" shows
    assert "weight_decay" in roles and table.loc["optimizer=adamw", "weight_decay"] == "0.0"
    assert roles["dropout"] == "fixed; default 0.0"            # differs from the schema default
    assert table.loc["optimizer=adam", "dropout"] == "0.25"
    # run plumbing, values equal to the default (epochs 5, batch 128) and the seed stay out
    assert not {"seed", "device", "dataset", "epochs", "batch_size"} & set(table.columns)


def test_settings_equal_to_every_default_are_not_shown():
    runs = optimizer_runs()
    runs = runs[runs["params.optimizer"] == "adam"].assign(**{"params.dropout": "0.0"})
    table, roles = settings.settings_table(runs, None, settings.our_defaults("classify"))
    assert "momentum" not in table.columns and "weight_decay" not in table.columns
    assert "dropout" not in table.columns
