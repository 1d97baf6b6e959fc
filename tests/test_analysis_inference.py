"""study.inference against scipy and hand computations: interval coverage on a simulated
paired design with a known effect, TOST, MDE, seeds needed (target, range, when none is given),
P(A>B), the four verdicts (the dropout example, exhaustive and exclusive), degenerate inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from study import inference


# -- coverage on a simulated paired design ------------------------------------------------------

def simulate(rng, n_sims: int, seeds: int, examples: int, delta: float, seed_sd: float, noise: float,
             own: float):
    """Correct/incorrect per (simulation, arm, seed, example) with a known accuracy difference.

    Example i has a difficulty per arm, u_Xi ~ U(0, 1), the same for every seed (one test set:
    examples are crossed with seeds, not nested in them); with probability 1 - ``own`` it is
    shared by both arms. Arm X is right on it at seed s when u_Xi + e < q_X + a_Xs, with
    e ~ U(-noise, noise) per (arm, seed, example) and a_Xs ~ N(0, seed_sd). Away from 0 and 1,
    P(right) = q_X + a_Xs, so the population difference is exactly q_A - q_B = delta.
    Returns (sims, seeds, examples) per-example contrasts (A - B) in {-1, 0, 1}."""
    q = np.array([0.6 + delta, 0.6])
    shared = rng.random((n_sims, 1, 1, examples))
    u = np.where(rng.random((n_sims, 2, 1, examples)) < own, rng.random((n_sims, 2, 1, examples)), shared)
    a = rng.normal(0, seed_sd, (n_sims, 2, seeds, 1))
    e = rng.uniform(-noise, noise, (n_sims, 2, seeds, examples))
    correct = (u + e < q[None, :, None, None] + a).astype(float)
    return correct[:, 0] - correct[:, 1]


@pytest.mark.parametrize("regime, seed_sd, noise, own", [
    ("test set dominates", 0.002, 0.02, 0.1),   # the arms disagree on 10% of the images, every seed
    ("seeds dominate", 0.03, 0.05, 0.0),
    ("residual dominates", 0.0, 0.5, 0.0),      # images flip between seeds: typical of real runs
])
def test_interval_covers_the_known_effect(regime, seed_sd, noise, own):
    rng = np.random.default_rng(7)
    delta, sims = 0.01, 400
    c = simulate(rng, sims, seeds=5, examples=400, delta=delta, seed_sd=seed_sd, noise=noise, own=own)
    hits = t_hits = 0
    for k in range(sims):
        est = inference.hierarchical_estimate(c[k], n_boot=1000, seed=k)
        assert est.estimable and est.n == 5 and est.n_examples == 400
        hits += est.low <= delta <= est.high
        # the seed-level t-interval alone treats the test set as fixed
        m = c[k].mean(axis=1)
        half = sps.t.ppf(0.975, 4) * m.std(ddof=1) / math.sqrt(5)
        t_hits += m.mean() - half <= delta <= m.mean() + half
    coverage = hits / sims
    assert 0.91 <= coverage <= 0.99, (regime, coverage)      # nominal 95%; binomial sd 1.1%
    if regime == "test set dominates":
        # the simulation really has test-set noise: ignoring it fails, so this test can fail
        assert t_hits / sims < 0.8, t_hits / sims


def test_seed_level_only_equals_the_paired_t_interval():
    d = np.array([0.012, 0.004, 0.009, -0.002, 0.010])
    est = inference.hierarchical_estimate(d)
    low, high = sps.t.interval(0.95, 4, loc=d.mean(), scale=sps.sem(d))
    assert est.n_examples == 0 and est.df == 4 and est.estimate == pytest.approx(d.mean())
    # the bootstrap variance of a mean converges to s^2/n (Monte Carlo error ~2% at 4000)
    assert est.se == pytest.approx(sps.sem(d), rel=0.04)
    assert (est.low, est.high) == pytest.approx((low, high), abs=0.05 * (high - low) / 2)
    assert est.p == pytest.approx(sps.ttest_1samp(d, 0).pvalue, rel=0.15)
    assert inference.hierarchical_estimate(d) == est          # fixed RNG: reproducible


def test_variance_is_the_two_way_anova_estimate():
    """The bootstrap parts converge to the mean squares of the seeds x examples layout:
    se^2 = var(seed means)/S + var(example means)/N - MS_residual/(S N)."""
    rng = np.random.default_rng(3)
    example_effect = rng.choice([-1.0, 0.0, 1.0], p=[0.1, 0.75, 0.15], size=1000)
    flips = rng.random((4, 1000)) < 0.05                     # images that change with the seed
    c = np.where(flips, rng.choice([-1.0, 1.0], size=(4, 1000)), example_effect)
    est = inference.hierarchical_estimate(c)
    s, n = c.shape
    m, e = c.mean(axis=1), c.mean(axis=0)
    resid = c - m[:, None] - e[None, :] + c.mean()
    ms_res = (resid ** 2).sum() / ((s - 1) * (n - 1))
    by_formula = m.var(ddof=1) / s + e.var(ddof=1) / n - ms_res / (s * n)
    assert est.se ** 2 == pytest.approx(by_formula, rel=0.05)
    assert est.se_residual ** 2 == pytest.approx(ms_res / (s * n))
    # the test set's share (the arms disagree on a quarter of the images, on every seed)
    # dominates here, and it has many degrees of freedom
    assert est.se_examples > est.se_seeds and est.df > 20


# -- degenerate inputs -------------------------------------------------------------------------

@pytest.mark.parametrize("c", [
    np.zeros((3, 100)),                                        # identical predictions everywhere
    np.full(4, 0.02),                                          # constant per-seed differences
    np.array([0.1 - 0.05, 0.2 - 0.15, 0.95 - 0.9]),            # equal up to float rounding
])
def test_degenerate_is_not_estimable(c):
    est = inference.hierarchical_estimate(c)
    assert not est.estimable and "constant" in est.why
    assert math.isnan(est.p) and math.isnan(est.low) and math.isnan(est.se)   # never p = 0
    assert math.isnan(inference.tost(est.estimate, est.se, est.df, 0.005))
    assert math.isnan(inference.mde(est.se, est.df))
    assert inference.verdict(est.n, est.estimable, est.p, math.nan, 0.005, None) == "not estimable"


def test_one_seed_has_no_interval():
    est = inference.hierarchical_estimate(np.ones((1, 50)))
    assert est.n == 1 and not est.estimable and math.isnan(est.low)


# -- TOST ---------------------------------------------------------------------------------------

def test_tost_hand_computed():
    # estimate 0.1 pp, se 0.2 pp, df 4, margin 0.5 pp:
    #   H0 <= -0.5 pp: t = (0.001 + 0.005) / 0.002 = 3  -> p = P(T4 >= 3)  = 0.019970
    #   H0 >= +0.5 pp: t = (0.001 - 0.005) / 0.002 = -2 -> p = P(T4 <= -2) = 0.058058
    # For 4 df, P(T >= t) = 1/2 - (t/(2 sqrt(t^2+4))) * (1 + 2/(t^2+4)) (closed form).
    tail = lambda t: 0.5 - t / (2 * math.sqrt(t * t + 4)) * (1 + 2 / (t * t + 4))  # noqa: E731
    assert tail(3) == pytest.approx(0.019970, abs=1e-6) and tail(2) == pytest.approx(0.058058, abs=1e-6)
    assert inference.tost(0.001, 0.002, 4, 0.005) == pytest.approx(tail(2), abs=1e-9)
    # symmetric: the other sign gives the same p
    assert inference.tost(-0.001, 0.002, 4, 0.005) == pytest.approx(tail(2), abs=1e-9)


def test_tost_equals_scipy_one_sided_tests():
    d = np.array([0.001, -0.002, 0.0015, 0.0005, -0.0005, 0.002])
    se, df, m = sps.sem(d), len(d) - 1, 0.005
    lower = sps.ttest_1samp(d, -m, alternative="greater").pvalue
    upper = sps.ttest_1samp(d, m, alternative="less").pvalue
    p = inference.tost(d.mean(), se, df, m)
    assert p == pytest.approx(max(lower, upper))
    assert p < 0.05                                       # equivalent within +-0.5 pp
    # and that is the 90% interval inside the margin
    low, high = sps.t.interval(0.90, df, loc=d.mean(), scale=se)
    assert -m < low and high < m


# -- MDE and seeds needed ------------------------------------------------------------------------

def test_mde_t_formula():
    # (t_{0.975,4} + t_{0.8,4}) * se = (2.776445 + 0.940965) * 0.001
    assert inference.mde(0.001, 4) == pytest.approx(3.717410e-3, rel=1e-5)
    assert inference.mde(0.001, 4) == pytest.approx((sps.t.ppf(0.975, 4) + sps.t.ppf(0.8, 4)) * 0.001)
    # the approximation is calibrated: a true effect of one MDE is found about 80% of the time
    # (two-sided t test, power from the noncentral t)
    for df in (4, 9, 29):
        ncp = inference.mde(1.0, df)
        crit = sps.t.ppf(0.975, df)
        power = sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp)
        assert power == pytest.approx(0.8, abs=0.03), (df, power)


def test_seeds_needed_targets_the_decision_the_estimate_points_to():
    """|estimate| < margin: the TOST's power at the estimate; else the minimal-effect test's;
    both at the Holm-adjusted level given, the smallest such n (checked by hand)."""
    sd, n_now, level = 0.006, 5, 0.05 / 3                  # per-seed sd of the difference; Holm's alpha / m
    se = sd / math.sqrt(n_now)

    def power_tost(n, d):
        s, df = sd / math.sqrt(n), n - 1
        crit = sps.t.ppf(1 - level, df)
        return sps.t.cdf((0.005 - d) / s - crit, df) + sps.t.cdf((0.005 + d) / s - crit, df) - 1

    def power_min(n, d):
        s, df = sd / math.sqrt(n), n - 1
        return sps.t.cdf((d - 0.005) / s - sps.t.ppf(1 - level / 2, df), df)

    near = inference.seeds_needed(0.001, se, n_now, 0.0, 0, 0.005, level)
    assert near.target == inference.EQUIVALENCE
    assert near.n == next(n for n in range(2, 1000) if power_tost(n, 0.001) >= 0.8)
    far = inference.seeds_needed(-0.012, se, n_now, 0.0, 0, 0.005, level)
    assert far.target == inference.AT_LEAST_TARGET
    assert far.n == next(n for n in range(2, 1000) if power_min(n, 0.012) >= 0.8)
    # a stricter level needs more seeds
    assert inference.seeds_needed(0.001, se, n_now, 0.0, 0, 0.005, 0.05).n < near.n


def test_seeds_needed_range_follows_the_seed_variances_chi_square_interval():
    sd, n_now, level = 0.006, 6, 0.05
    got = inference.seeds_needed(0.0, sd / math.sqrt(n_now), n_now, 0.0, 0, 0.005, level)
    df = n_now - 1
    for var, expected in ((sd ** 2 * df / sps.chi2.ppf(0.9, df), got.low), (sd ** 2 * df / sps.chi2.ppf(0.1, df), got.high)):
        by_hand = inference.seeds_needed(0.0, math.sqrt(var / n_now), n_now, 0.0, 0, 0.005, level).n
        assert by_hand == expected
    assert got.low < got.n < got.high


def test_seeds_needed_says_why_it_gives_no_number():
    few = inference.seeds_needed(0.001, 0.002, 4, 0.0, 0, 0.005)            # 3 df < 4
    assert few.n is None and "3 degrees of freedom" in few.why and "fewer than 4" in few.why
    # the test set's share does not shrink with seeds: too large, and no n suffices
    assert inference.seeds_needed(0.001, 0.001, 5, 0.002, 1000, 0.005).why == "the test set limits the precision"
    # an estimate at the margin: no number of seeds shows it at least (or within) the margin
    at = inference.seeds_needed(0.0049, 0.001, 5, 0.0, 0, 0.005)
    assert at.n is None and "close to the margin" in at.why
    assert inference.seeds_needed(0.001, 0.001, 5, 0.0, 0, None) is None


# -- P(A>B) and verdicts ------------------------------------------------------------------------

def test_prob_superiority_counts_ties_half():
    assert inference.prob_superiority([0.01, 0.02, -0.01, 0.0]) == (pytest.approx(0.625), 2, 4)


NEEDED = inference.SeedsNeeded(inference.EQUIVALENCE, 9, 6, 20)


@pytest.mark.parametrize("args, expected", [
    ((5, True, 0.001, 0.40, 0.005, NEEDED, 0.05, "±0.5 pp", 0.01), "different, at least the SESOI (0.5 pp)"),
    ((5, True, 0.01, 0.01, 0.005, NEEDED, 0.05, "±0.5 pp", 0.9), "different, smaller than the SESOI (0.5 pp)"),
    ((5, True, 0.60, 0.01, 0.005, NEEDED, 0.05, "±0.5 pp", 1.0), "equivalent within ±0.5 pp"),
    ((5, True, 0.60, 0.40, 0.005, NEEDED, 0.05, "±0.5 pp", 1.0),
     "inconclusive — needs about 9 seeds (6–20) to show equivalence"),
    ((5, True, 0.01, 0.40, 0.005, NEEDED, 0.05, "±0.5 pp", 0.3),
     "inconclusive — different from zero, but neither at least 0.5 pp nor within ±0.5 pp is shown; "
     "needs about 9 seeds (6–20) to show equivalence"),
    ((5, True, 0.60, 0.40, 0.005, inference.SeedsNeeded(inference.EQUIVALENCE, None, why="the test set limits the "
      "precision"), 0.05, "±0.5 pp", 1.0),
     "inconclusive — more seeds alone would not show equivalence: the test set limits the precision"),
    ((4, True, 0.60, 0.40, 0.005, inference.SeedsNeeded(inference.AT_LEAST_TARGET, None, why="the seed-level "
      "variance has 3 degrees of freedom (fewer than 4)"), 0.05, "±0.5 pp", 1.0),
     "inconclusive — seeds needed not given: the seed-level variance has 3 degrees of freedom (fewer than 4)"),
    ((5, True, 0.01, math.nan, None, None, 0.05, "", math.nan),
     "different (no smallest effect of interest declared for this metric)"),
    ((2, True, 0.001, 0.001, 0.005, NEEDED, 0.05, "±0.5 pp", 0.001), "no verdict (n=2 < 3)"),
    ((5, False, math.nan, math.nan, 0.005, None, 0.05, "±0.5 pp", math.nan), "not estimable"),
])
def test_verdict_words(args, expected):
    assert inference.verdict(*args) == expected


def test_dropout_at_the_margin_is_not_called_at_least_the_sesoi():
    """docs/results' dropout 0.5 vs none: +0.48 pp [+0.03, +0.93] with a SESOI of 0.5 pp, Holm p 0.037
    over 2 contrasts, TOST Holm p 0.923: different from zero, but its size is not settled."""
    est, low, high, df = 0.0048, 0.0003, 0.0093, 4.0
    se = (high - low) / 2 / sps.t.ppf(0.975, df)
    p_min = inference.minimal_effect(est, se, df, 0.005)
    assert p_min == 1.0                                    # the estimate is inside the margin
    kind = inference.verdict_kind(5, True, 0.037, 0.923, min(1.0, 2 * p_min), True)
    assert kind == inference.INCONCLUSIVE
    needed = inference.seeds_needed(est, se / math.sqrt(1), 5, 0.0, 0, 0.005, 0.025)
    words = inference.verdict(5, True, 0.037, 0.923, 0.005, needed, 0.05, "±0.5 pp", min(1.0, 2 * p_min))
    assert words.startswith("inconclusive — different from zero") and "at least the SESOI" not in words
    assert "better" not in words


def test_the_four_verdicts_are_exhaustive_and_exclusive():
    """Over random contrasts: the minimal-effect test and TOST never both reject (the 95% interval
    beyond the margin and the 90% one inside it), 'at least' implies 'different', and each
    verdict is the one its definition gives."""
    rng = np.random.default_rng(5)
    for _ in range(3000):
        est, se, df, margin = rng.normal(0, 0.01), rng.uniform(1e-4, 0.006), rng.integers(2, 30), 0.005
        p = 2 * sps.t.sf(abs(est) / se, df)
        p_tost, p_min = inference.tost(est, se, df, margin), inference.minimal_effect(est, se, df, margin)
        assert not (p_min < 0.05 and p_tost < 0.05)
        assert p_min >= p
        kind = inference.verdict_kind(int(df) + 1, True, p, p_tost, p_min, True)
        expected = (inference.AT_LEAST if p_min < 0.05 else inference.SMALLER if p_tost < 0.05 and p < 0.05
                    else inference.EQUIVALENT if p_tost < 0.05 else inference.INCONCLUSIVE)
        assert kind == expected
        low, high = est - sps.t.ppf(0.975, df) * se, est + sps.t.ppf(0.975, df) * se
        assert (kind == inference.AT_LEAST) == (low > margin or high < -margin)


def test_seeds_needed_agrees_with_the_reported_mde():
    """Arms that differ on a few images per seed, differently on each (the residual
    dominates: the case of two good optimizers): the degrees of freedom stay near S - 1, and
    where the equivalence test at n is far from the margin, the seeds needed exceed n (a
    report once said "inconclusive — needs about 3 seeds" at n = 5)."""
    rng = np.random.default_rng(7)
    c = np.zeros((5, 1000))
    for s in range(5):
        hit = rng.choice(1000, size=8, replace=False)
        c[s, hit] = rng.choice([-1.0, 1.0], size=8)
    est = inference.hierarchical_estimate(c)
    assert est.df >= 3.5
    needed = inference.seeds_needed(0.0, est.se_seeds, est.n, est.se_examples, est.n_examples, 0.001)
    assert needed.n is None or needed.n > est.n
    # a margin the TOST at n already meets with the estimate at 0: n or fewer
    at_n = inference.seeds_needed(0.0, est.se_seeds, est.n, est.se_examples, est.n_examples, 0.1)
    assert at_n.n is not None and at_n.n <= est.n
