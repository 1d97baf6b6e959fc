"""study.spending and study.sequential (issue 23): boundaries against published values
and scipy, the t boundaries' level at our n, the sequential design's error rates, power and
seeds by simulation (seeded, vectorised), and the runner's call ``decide``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from study import sequential as seq
from study import spending

ALPHA = 0.05
LOOKS = (5, 8, 11, 14, 17, 20)          # start 5, batches of 3, cap 20
STUDIES = 10_000                         # simulated sequential studies per scenario


def mc_bound(rate: float, n: int = STUDIES) -> float:
    """alpha plus two Monte Carlo standard errors of a rate estimated on n studies."""
    return rate + 2 * math.sqrt(rate * (1 - rate) / n)


# -- the schedule and the boundaries -------------------------------------------------------------

def test_planned_looks():
    assert spending.planned_looks(5, 3, 20) == list(LOOKS)
    assert spending.planned_looks(5, 4, 20) == [5, 9, 13, 17, 20]   # the cap is always a look
    assert spending.planned_looks(20, 3, 20) == [20]
    with pytest.raises(ValueError):
        spending.planned_looks(21, 3, 20)


@pytest.mark.parametrize("kind, published", [
    # two-sided 0.05, 5 equally spaced looks (Jennison & Turnbull 2000 ch. 7; gsDesign, ld98)
    ("obrien-fleming", (4.877, 3.357, 2.680, 2.290, 2.031)),
    ("pocock", (2.438, 2.427, 2.410, 2.397, 2.386)),
])
def test_boundaries_match_published_lan_demets_values(kind, published):
    c = spending.z_boundaries((0.2, 0.4, 0.6, 0.8, 1.0), ALPHA, 2, kind)
    np.testing.assert_allclose(c, published, atol=6e-4)


@pytest.mark.parametrize("sides", [1, 2])
def test_boundaries_spend_alpha_by_scipys_multivariate_normal(sides):
    t = np.array(LOOKS) / 20
    c = np.array(spending.z_boundaries(tuple(t), ALPHA, sides))
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))      # corr(Z_j, Z_k)
    lower = -c if sides == 2 else np.full(len(t), -np.inf)
    stay = sps.multivariate_normal(np.zeros(len(t)), cov).cdf(c, lower_limit=lower, rng=1)
    assert 1 - stay == pytest.approx(ALPHA, abs=2e-4)


def test_higher_levels_give_lower_boundaries_at_every_look():
    """Holm's shortcut of the closed test needs boundaries monotone in the level (Maurer &
    Bretz 2013): a hypothesis rejected at alpha/3 stays rejected at alpha/2 and alpha."""
    for sides in (1, 2):
        levels = [spending.t_nominal_levels(LOOKS, 20, ALPHA / j, sides) for j in (3, 2, 1)]
        assert np.all(np.diff(levels, axis=0) > 0)


def null_t_paths(paths: int, seed: int) -> np.ndarray:
    """(paths, looks) one-sample t statistics under H0 at LOOKS, fresh seeds."""
    x = np.random.default_rng(seed).standard_normal((paths, LOOKS[-1]))
    n = np.array(LOOKS)
    mean = np.stack([x[:, :k].mean(axis=1) for k in n], axis=1)
    sd = np.stack([x[:, :k].std(axis=1, ddof=1) for k in n], axis=1)
    return mean / sd * np.sqrt(n)


@pytest.mark.parametrize("sides", [1, 2])
def test_t_boundaries_hold_the_level_at_our_n(sides):
    """At 5..20 seeds the normal boundaries read as p-value levels (significance level
    approach) let a t statistic cross too often; the simulated t boundaries do not."""
    paths = 200_000
    t = null_t_paths(paths, seed=99)
    stat = np.abs(t) if sides == 2 else t
    df = np.array(LOOKS) - 1
    for level in (ALPHA, ALPHA / 3):
        tuned = spending.t_nominal_levels(LOOKS, 20, level, sides)
        normal = spending.nominal_levels(tuple(np.array(LOOKS) / 20), level, sides)
        crit = lambda nominal: sps.t.isf(nominal / sides, df)      # noqa: E731
        err_tuned = (stat > crit(tuned)).any(axis=1).mean()
        err_normal = (stat > crit(normal)).any(axis=1).mean()
        mc = math.sqrt(level / paths)
        assert abs(err_tuned - level) < 3 * mc, (level, err_tuned)
        assert err_normal > level + 3 * mc, (level, err_normal)


# -- the sequential design by simulation ---------------------------------------------------------

@pytest.fixture(scope="module")
def sims():
    """Scenarios -> simulate(...) results (sequential, naive and fixed designs on the same
    simulated scores); seed sd of a contrast in accuracy units (0.006 = 0.6 pp)."""
    run = lambda effects, sd, **kw: seq.simulate(effects, sd, n_studies=STUDIES, seed=7, **kw)  # noqa: E731
    return {
        "null, 1.0 pp": run((0.0, 0.0, 0.0), 0.010),
        "null, 0.6 pp": run((0.0, 0.0, 0.0), 0.006),
        "one null contrast, 1.0 pp": run((0.0,), 0.010),
        "partial null, 1.0 pp": run((0.02, 0.0, 0.0), 0.010),
        "margin, 0.3 pp": run((0.005, -0.005, 0.005), 0.003),
        "margin, 0.6 pp": run((0.005, -0.005, 0.005), 0.006),
        "sesoi, 0.6 pp": run((0.005,) * 3, 0.006),
        "sesoi, 0.3 pp": run((0.005,) * 3, 0.003),
        "sesoi, 0.6 pp, cap 23": run((0.005,) * 3, 0.006, cap=23),
    }


@pytest.mark.parametrize("name", ["null, 1.0 pp", "null, 0.6 pp", "one null contrast, 1.0 pp",
                                  "partial null, 1.0 pp"])
def test_false_different_verdicts_stay_within_alpha(sims, name):
    """(a) No true effect (or one real effect that Holm passes the level on from): the share
    of studies with any false 'different' stays at alpha within Monte Carlo error."""
    assert sims[name]["sequential"]["fwer_different"] <= mc_bound(ALPHA)


@pytest.mark.parametrize("name", ["null, 1.0 pp", "null, 0.6 pp", "one null contrast, 1.0 pp"])
def test_looking_after_every_batch_at_alpha_inflates_the_error(sims, name):
    """(c) The naive design (every look at the fixed design's Holm levels) on the same data."""
    naive = sims[name]["naive"]["fwer_different"]
    assert naive > mc_bound(ALPHA) and naive > 2 * sims[name]["sequential"]["fwer_different"]


@pytest.mark.parametrize("name", ["margin, 0.3 pp", "margin, 0.6 pp"])
def test_false_equivalent_verdicts_stay_within_alpha(sims, name):
    """True contrasts exactly at the margin (+-0.5 pp): 'equivalent' is the false verdict."""
    r = sims[name]
    assert r["sequential"]["fwer_equivalent"] <= mc_bound(ALPHA)
    assert r["naive"]["fwer_equivalent"] > mc_bound(ALPHA)


def test_effects_at_the_sesoi_are_found_with_fewer_seeds(sims):
    """(b) Every contrast at the SESOI, seed sd 0.6 pp: the sequential design gives up at most
    3 points of the fixed 20-seed design's power and stops 2.5 seeds per arm earlier; one more
    batch of headroom (cap 23) beats the fixed design's power with fewer seeds on average."""
    r = sims["sesoi, 0.6 pp"]
    fixed, sequential = r["fixed"], r["sequential"]
    assert fixed["expected_n"] == 20
    assert sequential["power"] >= fixed["power"] - 0.03
    assert sequential["expected_n"] <= 17.5
    assert sequential["expected_n"] < r["fixed_n_for_power"]
    headroom = sims["sesoi, 0.6 pp, cap 23"]["sequential"]
    assert headroom["power"] > fixed["power"] and headroom["expected_n"] < 20
    r = sims["sesoi, 0.3 pp"]                    # a precise study stops much earlier
    assert r["sequential"]["power"] >= 0.99 and r["sequential"]["expected_n"] < 12.5
    assert r["sequential"]["expected_n"] < r["fixed_n_for_power"]


# -- the runner's call ---------------------------------------------------------------------------

def looks_of(values: np.ndarray, looks=LOOKS) -> list[dict]:
    """Per-look statistics of per-seed contrast values, values: (contrasts, seeds)."""
    out = []
    for n in looks:
        x = values[:, :n]
        out.append({f"c{i}": {"n": n, "estimate": float(x[i].mean()),
                              "se": float(x[i].std(ddof=1) / math.sqrt(n)), "df": n - 1}
                    for i in range(len(values))})
    return out


MARGINS = {"c0": 0.005, "c1": 0.005, "c2": None}


def test_decide_agrees_with_the_simulation_and_replays_on_resume():
    """decide() on 40 studies reproduces the vectorised procedure of the simulation, is
    JSON-serialisable and deterministic, and a resumed study (the stored looks so far) sees
    the same decisions it saw at that look."""
    rng = np.random.default_rng(3)
    effects = np.array([0.004, 0.0, 0.003])[:, None]
    for _ in range(40):
        values = effects + rng.normal(0, 0.004, (3, 20))
        looks = looks_of(values)
        # the vectorised path: (1 study, contrasts, looks)
        est = np.array([[lk[c]["estimate"] for lk in looks] for c in MARGINS])[None]
        se = np.array([[lk[c]["se"] for lk in looks] for c in MARGINS])[None]
        margins = np.array([np.nan if v is None else v for v in MARGINS.values()])[None, :, None]
        p_diff, p_equiv = seq.stage_p(est, se, np.array(LOOKS)[None, None] - 1, margins)
        nom = {s: np.broadcast_to(seq._levels(LOOKS, 20, True, 3, ALPHA, s, "obrien-fleming")[None],
                                  (3, 3, 6)) for s in (2, 1)}
        code, look, _, _ = seq.run(p_diff, p_equiv, nom[2], nom[1], True, has_margin=[1, 1, 0])
        full = seq.decide(looks, MARGINS)
        assert json.loads(json.dumps(full, allow_nan=False)) == full
        assert [v["decision"] for v in full["contrasts"].values()] == [seq.DECISIONS[c] for c in code[0]]
        assert [v["look"] for v in full["contrasts"].values()] == list(look[0] + 1)
        for k in range(1, 6):
            now = seq.decide(looks[:k], MARGINS)
            assert not now["final"] and now["n_planned"] == LOOKS[k - 1]
            for name, v in now["contrasts"].items():
                later = full["contrasts"][name]
                if later["look"] <= k and later["decision"] != "inconclusive":
                    assert v == later                       # a decision is final
                else:
                    assert v["decision"] == "undecided"
            assert now["stop"] == all(v["decision"] != "undecided" for v in now["contrasts"].values())


def test_decide_reports_the_boundary_the_interval_and_the_n():
    rng = np.random.default_rng(5)
    values = np.array([0.02, 0.0, 0.0])[:, None] + rng.normal(0, 0.0005, (3, 20))
    out = seq.decide(looks_of(values)[:3], {"c0": 0.005, "c1": 0.005, "c2": None})
    big, null, no_margin = (out["contrasts"][c] for c in ("c0", "c1", "c2"))
    assert big["decision"] == "different" and big["n"] == 5 and big["look"] == 1
    b = big["boundary"]
    assert b["test"] == "difference" and b["t"] >= b["t_critical"] and b["p"] < b["nominal_p"]
    assert b["interval"][0] > 0 and big["interval"][0] <= b["interval"][0]   # alpha/m is wider
    assert null["decision"] == "equivalent" and null["n"] == LOOKS[null["look"] - 1]
    e = null["boundary"]
    assert e["test"] == "equivalence" and -0.005 < e["interval"][0] < e["interval"][1] < 0.005
    assert no_margin["decision"] == "undecided" and no_margin["boundary"] is None
    assert not out["stop"] and out["next_n"] == 14


def test_the_cap_spends_the_rest_and_leaves_the_undecided_inconclusive():
    """At the last planned look the undecided are inconclusive; a look whose new seeds all
    failed (n unchanged) is analysed again with what is left of alpha."""
    stat = lambda n, t: {"n": n, "estimate": t * 0.001, "se": 0.001, "df": n - 1}   # noqa: E731
    # t = 2.3 at 17 seeds: below look 5's boundary (t crit 2.50 at df 16), above the one the
    # cap's look gives the same 17 seeds (2.17)
    looks = [{"a": stat(n, 0.5)} for n in LOOKS[:4]] + [{"a": stat(17, 2.3)}, {"a": stat(17, 2.3)}]
    before = seq.decide(looks[:5], {"a": None})["contrasts"]["a"]
    after = seq.decide(looks, {"a": None})
    assert before["decision"] == "undecided"
    assert after["final"] and after["stop"] and after["next_n"] is None
    assert after["contrasts"]["a"]["decision"] == "different"
    assert after["contrasts"]["a"]["n"] == 17 and after["contrasts"]["a"]["look"] == 6
    weak = [{"a": stat(n, 0.5)} for n in LOOKS]
    assert seq.decide(weak, {"a": 0.0001})["contrasts"]["a"]["decision"] == "inconclusive"
    with pytest.raises(ValueError):
        seq.decide(weak + weak[-1:], {"a": None})


def test_look_statistic_and_plan():
    x = np.random.default_rng(1).normal(0.01, 0.005, 8)
    s = seq.look_statistic(x)
    assert s["n"] == 8 and s["df"] == pytest.approx(7)
    assert s["se"] == pytest.approx(x.std(ddof=1) / math.sqrt(8), rel=0.05)   # the bootstrap's se
    p = seq.plan(5, 3, 20, n_contrasts=3)
    assert p["looks"] == list(LOOKS) and p["max_seeds"] == 20 and p["extra_seeds"] == 15
    nominal = [lk["nominal_p"] for lk in p["difference"]]
    assert all(a < b for a, b in zip(nominal, nominal[1:])) and nominal[-1] < ALPHA / 3
    assert json.loads(json.dumps(p, allow_nan=False)) == p
