"""analysis.stats on hand-made frames with known answers, checked against scipy."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import stats


def scores_frame(values: dict[str, list[float]], metric: str = "test/acc") -> pd.DataFrame:
    """rows: one per (arm, seed); seeds 0..n-1 in list order."""
    return pd.DataFrame([{"arm": arm, "seed": s, "metric": metric, "value": v}
                         for arm, vs in values.items() for s, v in enumerate(vs)])


# -- intervals, effect size, paired tests ---------------------------------------------------

def test_t_interval_matches_scipy():
    x = [0.91, 0.93, 0.92, 0.95, 0.94]
    ci = stats.t_interval(x)
    low, high = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert ci.n == 5 and ci.mean == pytest.approx(0.93)
    assert (ci.low, ci.high) == pytest.approx((low, high))
    # by hand: sd = 0.015811, t(0.975, 4) = 2.776445 -> half width 0.019632
    assert ci.half_width == pytest.approx(2.776445 * 0.0158114 / math.sqrt(5), rel=1e-5)


def test_t_interval_one_value_has_no_interval():
    ci = stats.t_interval([0.97])
    assert ci.n == 1 and ci.mean == 0.97 and math.isnan(ci.low) and math.isnan(ci.high)
    assert stats.t_interval([]).n == 0


def test_cohens_dz_by_hand():
    assert stats.cohens_dz([1.0, 2.0, 3.0]) == pytest.approx(2.0)      # mean 2, sd 1
    assert math.isnan(stats.cohens_dz([1.0]))


@pytest.mark.parametrize("diffs", [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0],
                                   [0.1 - 0.05, 0.2 - 0.15, 0.95 - 0.9]])   # equal up to rounding
def test_constant_differences_are_not_estimable(diffs):
    assert math.isnan(stats.cohens_dz(diffs))                 # never +-inf
    r = stats.paired_test(np.asarray(diffs) + 0.9, np.full(len(diffs), 0.9))
    assert not r.estimable and math.isnan(r.p_t) and math.isnan(r.d_z)   # never p = 0
    frame = scores_frame({"base": [0.9, 0.8, 0.7], "arm": list(np.array([0.9, 0.8, 0.7]) + diffs)})
    assert stats.compare_to_baseline(frame, "base")["verdict"].iloc[0] == "not estimable"


def test_paired_test_matches_scipy():
    base = np.array([0.90, 0.92, 0.91, 0.93, 0.89, 0.90])
    treat = base + np.array([0.010, 0.020, 0.005, 0.015, 0.012, -0.002])
    r = stats.paired_test(treat, base)
    t = sps.ttest_rel(treat, base)
    w = sps.wilcoxon(treat - base)
    assert r.n == 6
    assert r.t == pytest.approx(t.statistic) and r.p_t == pytest.approx(t.pvalue)
    assert r.w == pytest.approx(w.statistic) and r.p_wilcoxon == pytest.approx(w.pvalue)
    assert r.diff.mean == pytest.approx(np.mean(treat - base))
    assert r.d_z == pytest.approx(np.mean(treat - base) / np.std(treat - base, ddof=1))


def test_paired_test_drops_unpaired_and_handles_degenerate_cases():
    r = stats.paired_test([0.9, np.nan, 0.95], [0.8, 0.85, np.nan])
    assert r.n == 1 and math.isnan(r.p_t) and math.isnan(r.p_wilcoxon)
    same = stats.paired_test([0.9, 0.8], [0.9, 0.8])
    assert not same.estimable and math.isnan(same.p_t) and math.isnan(same.d_z)


# -- Holm ------------------------------------------------------------------------------------

def test_holm_hand_computed_example():
    # sorted: 0.005*4 = 0.02; 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> max(0.06, 0.04)
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_ignores_nan():
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adj = stats.holm([0.01, np.nan, 0.04])             # m = 2
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.04)
    assert len(stats.holm([])) == 0


# -- comparisons with the baseline -------------------------------------------------------------

def test_compare_to_baseline_pairs_by_seed_and_corrects():
    base = [0.90, 0.91, 0.92, 0.90, 0.93]
    better = [b + d for b, d in zip(base, [0.03, 0.031, 0.029, 0.032, 0.03])]
    same = [b + d for b, d in zip(base, [0.01, -0.012, 0.004, -0.003, 0.001])]
    frame = scores_frame({"base": base, "better": better, "same": same})
    out = stats.compare_to_baseline(frame, "base").set_index("arm")
    t_better = sps.ttest_rel(better, base).pvalue
    t_same = sps.ttest_rel(same, base).pvalue
    assert out.loc["better", "p_t"] == pytest.approx(t_better)
    assert out.loc["better", "p_t_holm"] == pytest.approx(stats.holm([t_better, t_same])[0])
    assert out.loc["better", "diff"] == pytest.approx(0.0304)
    assert out.loc["better", "verdict"] == "better" and out.loc["better", "significant"]
    assert out.loc["same", "verdict"] == "n.s." and not out.loc["same", "significant"]
    assert (out["n"] == 5).all()


def test_compare_lower_is_better_for_losses():
    frame = scores_frame({"base": [0.30, 0.32, 0.31, 0.33], "arm": [0.20, 0.21, 0.22, 0.215]},
                         metric="test/log_loss")
    out = stats.compare_to_baseline(frame, "base")
    assert out["verdict"].iloc[0] == "better" and out["diff"].iloc[0] < 0


def test_compare_one_seed_claims_nothing():
    frame = scores_frame({"base": [0.9], "arm": [0.99]})
    out = stats.compare_to_baseline(frame, "base").iloc[0]
    assert out["n"] == 1 and out["verdict"] == "n/a (n=1)" and not out["significant"]
    assert math.isnan(out["p_t"]) and math.isnan(out["low"])


def test_compare_missing_seed_reduces_pairs():
    frame = scores_frame({"base": [0.9, 0.91, 0.92], "arm": [0.95, 0.97, 0.97]})
    frame = frame[~((frame["arm"] == "arm") & (frame["seed"] == 2))]
    out = stats.compare_to_baseline(frame, "base").iloc[0]
    assert out["n"] == 2


def test_no_verdict_word_at_two_seeds():
    # a large, clean difference: still no better/worse/n.s. from two seeds
    frame = scores_frame({"base": [0.90, 0.91], "arm": [0.95, 0.97]})
    out = stats.compare_to_baseline(frame, "base").iloc[0]
    assert out["verdict"] == "no verdict (n=2 < 3)" and not out["significant"]
    assert np.isfinite(out["p_t"])                     # the test itself is still reported


# -- factorial designs ----------------------------------------------------------------------

def factorial_frame(invalid: set[tuple[str, str]] = frozenset()):
    """2 x 3 design: A in {a0, a1}, B in {b0, b1, b2}. Per seed s and cell:
    y = 0.8 + 0.05*[A=a1] + 0.02*[B=b1] + 0.04*[B=b2] + 0.03*[A=a1][B=b1] + noise(s, cell)."""
    rng = np.random.default_rng(0)
    rows, levels = [], []
    for a in ("a0", "a1"):
        for b in ("b0", "b1", "b2"):
            if (a, b) in invalid:
                continue
            arm = f"A={a},B={b}"
            levels.append({"arm": arm, "A": a, "B": b})
            for s in range(4):
                y = (0.8 + 0.05 * (a == "a1") + 0.02 * (b == "b1") + 0.04 * (b == "b2")
                     + 0.03 * (a == "a1" and b == "b1") + rng.normal(0, 0.005))
                rows.append({"arm": arm, "seed": s, "metric": "test/acc", "value": y})
    return pd.DataFrame(rows), pd.DataFrame(levels)


def test_factorial_main_effects_and_interaction_by_hand():
    scores, levels = factorial_frame()
    eff = stats.factorial_effects(scores, levels, ["A", "B"], {"A": "a0", "B": "b0"})
    wide = scores.pivot_table(index="seed", columns="arm", values="value")
    cell = lambda a, b: wide[f"A={a},B={b}"].to_numpy()  # noqa: E731
    # main effect of A: per seed, mean over B's three levels of cell(a1, b) - cell(a0, b)
    main_a = np.mean([cell("a1", b) - cell("a0", b) for b in ("b0", "b1", "b2")], axis=0)
    row = eff[(eff["effect"] == "main") & (eff["factor"] == "A")].iloc[0]
    ci = stats.t_interval(main_a)
    assert row["estimate"] == pytest.approx(main_a.mean())
    assert (row["low"], row["high"]) == pytest.approx((ci.low, ci.high))
    assert row["p_t"] == pytest.approx(sps.ttest_1samp(main_a, 0).pvalue)
    assert row["estimate"] == pytest.approx(0.05 + 0.03 / 3, abs=0.01)
    assert row["averaged_over"] == 3
    # interaction A x B at (a1, b1): [c(a1,b1) - c(a0,b1)] - [c(a1,b0) - c(a0,b0)]
    inter = (cell("a1", "b1") - cell("a0", "b1")) - (cell("a1", "b0") - cell("a0", "b0"))
    irow = eff[(eff["effect"] == "interaction") & (eff["level"] == "a1 x b1")].iloc[0]
    assert irow["estimate"] == pytest.approx(inter.mean())
    assert irow["estimate"] == pytest.approx(0.03, abs=0.015)
    # Holm over the 2 main-effect levels of B + 1 of A + 2 interactions
    assert len(eff) == 5
    assert eff["p_t_holm"].to_numpy() == pytest.approx(stats.holm(eff["p_t"]))


def test_factorial_skips_invalid_cells():
    scores, levels = factorial_frame(invalid={("a0", "b2")})
    eff = stats.factorial_effects(scores, levels, ["A", "B"], {"A": "a0", "B": "b0"})
    row = eff[(eff["effect"] == "main") & (eff["factor"] == "A")].iloc[0]
    assert row["averaged_over"] == 2                   # b2 has no a0 cell
    wide = scores.pivot_table(index="seed", columns="arm", values="value")
    expect = np.mean([wide[f"A=a1,B={b}"] - wide[f"A=a0,B={b}"] for b in ("b0", "b1")], axis=0)
    assert row["estimate"] == pytest.approx(expect.mean())
    assert row["averaged_cells"] == "B=b0, b1"             # names the cells it averaged
    # the (a1, b2) interaction against (a0, b0) needs the invalid (a0, b2) cell: it is coded on
    # the valid part of the design instead, which here has no 2 x 2 with b2 either
    irow = eff[eff["level"] == "a1 x b2"].iloc[0]
    assert irow["n"] == 0 and irow["averaged_over"] == 0 and irow["verdict"] == "n/a (n=0)"


def test_factorial_interaction_without_the_reference_cell():
    """The noise study's shape: the reference row's other cells are invalid, so every
    interaction against it is undefined; coded on the valid part they are estimable."""
    scores, levels = factorial_frame(invalid={("a0", "b1"), ("a0", "b2")})
    scores = scores.assign(arm=scores["arm"].str.replace("A=a0", "A=c0"))
    levels = levels.assign(arm=levels["arm"].str.replace("A=a0", "A=c0"), A=levels["A"].replace("a0", "c0"))
    # add a third A level, a2, with every B cell, equal to a1 minus 0.03 at b1
    extra = scores[scores["arm"].str.startswith("A=a1")].copy()
    extra["value"] -= np.where(extra["arm"].str.endswith("b1"), 0.03, 0.0)
    extra["arm"] = extra["arm"].str.replace("A=a1", "A=a2")
    scores = pd.concat([scores, extra])
    levels = pd.concat([levels, pd.DataFrame([{"arm": f"A=a2,B={b}", "A": "a2", "B": b} for b in ("b0", "b1", "b2")])])
    eff = stats.factorial_effects(scores, levels, ["A", "B"], {"A": "c0", "B": "b0"})
    inter = eff[eff["effect"] == "interaction"]
    assert len(inter) == 2 and (inter["n"] == 4).all()
    wide = scores.pivot_table(index="seed", columns="arm", values="value")
    row = inter[inter["level"] == "a1 x b1"].iloc[0]
    assert row["reference"] == "a2 x b0"                    # not the invalid c0 row
    expect = (wide["A=a1,B=b1"] - wide["A=a2,B=b1"]) - (wide["A=a1,B=b0"] - wide["A=a2,B=b0"])
    assert row["estimate"] == pytest.approx(expect.mean()) and row["estimate"] == pytest.approx(0.03, abs=1e-9)


def test_two_way_cell_means():
    scores, levels = factorial_frame()
    cells = stats.two_way_cell_means(scores, levels, ["A", "B"], {"A": "a0", "B": "b0"}, "test/acc")
    assert len(cells) == 6
    c = cells[(cells["level_a"] == "a1") & (cells["level_b"] == "b1")].iloc[0]
    assert c["mean"] == pytest.approx(scores[scores["arm"] == "A=a1,B=b1"]["value"].mean())


# -- bookkeeping ----------------------------------------------------------------------------

def test_completeness_marks_missing_failed_and_retries():
    runs = pd.DataFrame([
        {"arm": "base", "seed": 0, "outcome": "completed"},
        {"arm": "base", "seed": 1, "outcome": "completed"},
        {"arm": "x", "seed": 0, "outcome": "failed"},
        {"arm": "x", "seed": 1, "outcome": "failed"},
        {"arm": "x", "seed": 1, "outcome": "completed"},
    ])
    m = stats.completeness(runs, ["base", "x", "never"], [0, 1])
    assert m.loc["base", 0] == "completed"
    assert m.loc["x", 0] == "failed"
    assert m.loc["x", 1] == "completed (2 runs)"
    assert (m.loc["never"] == "missing").all()


def test_tuned_hyperparameters_keeps_what_differs_across_arms():
    runs = pd.DataFrame([
        {"arm": "a", "params.lr": "0.001", "params.seed": "0", "params.epochs": "5", "params.path": "/x/0"},
        {"arm": "a", "params.lr": "0.001", "params.seed": "1", "params.epochs": "5", "params.path": "/x/1"},
        {"arm": "b", "params.lr": "0.01", "params.seed": "0", "params.epochs": "5", "params.path": "/y/0"},
    ])
    t = stats.tuned_hyperparameters(runs)
    assert list(t.columns) == ["lr"] and t.loc["b", "lr"] == "0.01"


def test_cost_table_counts_pruned_and_estimates_missing_costs():
    start = pd.Timestamp("2024-01-01", tz="UTC")
    runs = pd.DataFrame([
        {"stage": "classify", "arm": "a", "phase": "tune", "outcome": "pruned", "gpus_per_trial": 0.5,
         "metrics.cost/wall_seconds_trial": 10.0, "metrics.cost/gpu_seconds": 5.0, "duration_s": 12.0},
        {"stage": "classify", "arm": "a", "phase": "tune", "outcome": "failed", "gpus_per_trial": 0.5,
         "metrics.cost/wall_seconds_trial": np.nan, "metrics.cost/gpu_seconds": np.nan, "duration_s": 4.0},
        {"stage": "classify", "arm": "a", "phase": "replicate", "outcome": "completed", "gpus_per_trial": 0.5,
         "metrics.cost/wall_seconds_trial": 20.0, "metrics.cost/gpu_seconds": 10.0, "duration_s": 21.0},
        {"stage": "upstream", "arm": "ae", "phase": "replicate", "outcome": "completed", "gpus_per_trial": 1.0,
         "metrics.cost/wall_seconds_trial": 30.0, "metrics.cost/gpu_seconds": 30.0, "duration_s": 31.0},
    ]).assign(start_time=start)
    cost = stats.cost_table(runs).set_index("arm")
    assert cost.loc["a", "tune_trials"] == 2 and cost.loc["a", "tune_pruned"] == 1
    assert cost.loc["a", "tune_wall_s"] == pytest.approx(14.0)       # 10 + 4 (from timestamps)
    assert cost.loc["a", "tune_gpu_s"] == pytest.approx(7.0)         # 5 + 0.5 * 4
    assert cost.loc["a", "estimated_runs"] == 1
    assert cost.loc["total", "wall_s"] == pytest.approx(64.0)
    assert cost.loc["total", "gpu_s"] == pytest.approx(47.0)


def test_curve_bands():
    history = pd.DataFrame([{"arm": "a", "key": "val/acc", "step": s, "seed": seed, "value": v}
                            for seed, vals in enumerate([[0.5, 0.7], [0.6, 0.8]])
                            for s, v in enumerate(vals, 1)])
    bands = stats.curve_bands(history)
    assert list(bands["mean"]) == pytest.approx([0.55, 0.75])
    assert (bands["n"] == 2).all() and bands["low"].notna().all()
    # t(0.975, 1) = 12.7: the raw band would reach past 0 and 1; accuracy bands stay inside
    assert bands["low"].min() >= 0.0 and bands["high"].max() <= 1.0
    assert bands["high"].iloc[1] == 1.0
    loss = stats.curve_bands(history.assign(key="train/loss"))
    assert loss["high"].max() > 1.0                    # a loss is not a proportion: not clipped
    assert loss["low"].min() == 0.0                     # ...but a non-negative loss stops at 0
    signed = stats.curve_bands(history.assign(key="train/loss", value=history["value"] - 0.6))
    assert signed["low"].min() < -0.5                   # a loss observed negative is left as it is


def test_tuned_hyperparameters_includes_what_the_tune_phase_searched():
    # both arms ended on the same lr, but the tune phase searched lr: it is a tuned value
    runs = pd.DataFrame([{"arm": "a", "params.lr": "0.001", "params.dropout": "0.0"},
                         {"arm": "b", "params.lr": "0.001", "params.dropout": "0.5"}])
    tune = pd.DataFrame([{"arm": "a", "params.lr": "0.01", "params.dropout": "0.0"},
                         {"arm": "a", "params.lr": "0.001", "params.dropout": "0.0"}])
    t = stats.tuned_hyperparameters(runs, tune)
    assert list(t.columns) == ["lr", "dropout"] and t.loc["b", "dropout"] == "0.5"
