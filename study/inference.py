"""Inference for one contrast: hierarchical paired bootstrap interval, equivalence (TOST), the
minimal-effect test, minimum detectable effect, seeds needed, P(A>B) and the four verdicts
("different, at least the SESOI", "different, smaller than the SESOI", "equivalent within
±SESOI", "inconclusive"; defined where ``VERDICTS`` is). Pure numpy/scipy.

Input of ``hierarchical_estimate``: the contrast's value per (seed, test example),
``c[s, i] = sum_a w_a * correct[a, s, i]`` (arms paired by seed and by test example), shape
(seeds, examples); or per seed only, shape (seeds,), when no per-example data exists.

Why this interval (and not a percentile interval of a single two-level resample):
* every seed is scored on the *same* test images, so seeds and test examples are crossed, not
  nested. Resampling examples independently within each seed treats each seed's test set as a
  fresh draw and undercounts the test-set noise by a factor of the number of seeds (64%
  coverage of a nominal 95% interval in our simulation where the test set dominates);
* with 5 seeds a percentile interval is too narrow when the seed noise dominates (87%).
So each level is resampled on its own, pairing kept (the same seeds, resp. the same example
indices, for every arm): the seed-level bootstrap variance of the mean (with the (S-1)/S
small-sample bias undone) plus the example-level bootstrap variance of the mean over seeds,
less the seed x example residual both contain (counted once), give the standard error; the
interval uses Student's t with Welch-Satterthwaite degrees of freedom (S - 1 when seeds
dominate, more when the test set does). Coverage of the 95% interval on the simulated designs
of tests/test_analysis_inference.py (400 studies per design; seeds, test set or residual
dominating): 94-98% at 5 and 10 seeds, 92-98% at 3, 89-98% at 2 (where no verdict is given).
scipy.stats.bootstrap resamples one level only, hence this small vectorised version, seeded
for reproducible reports. For the mean (our statistic) the bootstrap variances converge to
s^2/n; resampling keeps the same code valid for per-seed statistics that are not means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
POWER = 0.8
CONFIDENCE = 0.95
MIN_VERDICT_N = 3           # no better/worse/different/equivalent verdict below this many seeds
N_BOOT = 4000               # bootstrap resamples per level
RNG_SEED = 2021             # fixed: the same store gives the same report
MAX_SEEDS = 1000            # "needs about N seeds" looks no further
_REL_TOL = 1e-9             # differences equal up to float rounding count as equal


def is_constant(values) -> bool:
    """True when the finite values are all equal up to float rounding (or fewer than two)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return True
    return float(np.ptp(x)) <= _REL_TOL * max(1.0, float(np.abs(x).max()))


@dataclass(frozen=True)
class Estimate:
    """A contrast's estimate and its interval; NaN fields and ``estimable=False`` (with the
    reason in ``why``) when the data cannot support an interval."""
    n: int                  # paired seeds
    n_examples: int         # paired test examples per seed (0: seed level only)
    estimate: float
    se: float
    se_seeds: float         # seed-level part of the standard error
    se_examples: float      # test-example part (0 without per-example data)
    df: float
    low: float
    high: float
    p: float                # two-sided, H0: contrast = 0
    estimable: bool
    why: str = ""
    se_residual: float = 0.0  # seed x example part, included in se_seeds (shrinks with seeds)

    @property
    def method(self) -> str:
        return ("hierarchical paired bootstrap (seeds x test examples)" if self.n_examples
                else "paired bootstrap over seeds")


def not_estimable(n: int, n_examples: int, estimate: float, why: str) -> Estimate:
    nan = math.nan
    return Estimate(n, n_examples, estimate, nan, nan, nan, nan, nan, nan, nan, False, why)


def _boot_var_seeds(means: np.ndarray, rng: np.random.Generator, n_boot: int) -> float:
    """Bootstrap variance of the mean of ``means`` (seeds resampled), bias (S-1)/S undone."""
    s = len(means)
    # idx: (resamples, seeds)
    idx = rng.integers(0, s, size=(n_boot, s))
    return float(means[idx].mean(axis=1).var(ddof=1)) * s / (s - 1)


def _boot_var_examples(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> float:
    """Bootstrap variance of the mean of ``values`` (examples resampled with replacement).

    Drawn as multinomial counts over the distinct values (an accuracy contrast takes few), so
    a resample costs O(distinct values), not O(examples)."""
    n = len(values)
    distinct, counts = np.unique(values, return_counts=True)
    # draws: (resamples, distinct values) -> resampled means
    draws = rng.multinomial(n, counts / n, size=n_boot)
    boot = draws @ distinct / n
    return float(boot.var(ddof=1)) * n / (n - 1)


def satterthwaite_df(var_seeds, n_seeds, var_examples, n_examples):
    """Welch-Satterthwaite degrees of freedom of var_seeds + var_examples, estimated from mean
    squares with S - 1 and N - 1 degrees of freedom: S - 1 when the seeds dominate, up to
    S + N - 2 when the test set does. ``var_examples`` is the test set's own share (the
    residual already taken out), so both parts are non-negative and the result never falls
    below min(S - 1, N - 1); a subtracted component would let it fall to 1 where the seeds
    alone give S - 1. Vectorised over ``var_seeds`` and ``n_seeds``."""
    var_seeds, n_seeds = np.asarray(var_seeds, dtype=float), np.asarray(n_seeds, dtype=float)
    total = var_seeds + var_examples
    denom = var_seeds ** 2 / (n_seeds - 1)
    if n_examples > 1:
        denom = denom + var_examples ** 2 / (n_examples - 1)
    df = np.where(denom > 0, total ** 2 / np.where(denom > 0, denom, 1.0), n_seeds - 1)
    df = np.maximum(df, 1.0)
    return float(df) if df.ndim == 0 else df


def hierarchical_estimate(c, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                          seed: int = RNG_SEED) -> Estimate:
    """Estimate, standard error, t interval and p of a paired contrast (see the module doc).

    ``c``: (seeds, examples) per-example contrast values, or (seeds,) per-seed values. Rows
    with a NaN are dropped (a seed some arm did not complete)."""
    c = np.asarray(c, dtype=float)
    if c.ndim == 1:
        c = c[:, None]
        n_examples = 0
    else:
        n_examples = c.shape[1]
    c = c[np.isfinite(c).all(axis=1)]
    n = c.shape[0]
    if n == 0:
        return not_estimable(0, n_examples, math.nan, "no seed has every arm of the contrast")
    estimate = float(c.mean())
    if n < 2:
        return not_estimable(n, n_examples, estimate, "one seed: no interval")
    rng = np.random.default_rng(seed)
    seed_means = c.mean(axis=1)
    var_s = 0.0 if is_constant(seed_means) else _boot_var_seeds(seed_means, rng, n_boot)
    var_e = var_r = 0.0
    if n_examples > 1:
        per_example = c.mean(axis=0)
        var_e = 0.0 if is_constant(per_example) else _boot_var_examples(per_example, rng, n_boot)
        # Both one-level variances hold the seed x example residual sigma_e^2 / (S N); summed,
        # it would count twice (a 99% interval where 95% is meant, in the tests' simulation).
        # The residual mean square of the two-way layout estimates it; it is subtracted once.
        resid = c - seed_means[:, None] - per_example[None, :] + estimate
        var_r = float((resid ** 2).sum()) / ((n - 1) * (n_examples - 1)) / (n * n_examples)
    # The test set's own share: the example-level variance less the residual it contains
    # (floored at 0: with few examples the difference can fall below 0 by chance). The seed
    # level keeps its residual share, which shrinks with more seeds.
    var_e_own = max(var_e - var_r, 0.0)
    total = var_s + var_e_own
    se = math.sqrt(total)
    if se <= _REL_TOL * max(1.0, abs(estimate)):
        return not_estimable(n, n_examples, estimate,
                             "the differences are constant (equal up to float rounding)")
    df = satterthwaite_df(var_s, n, var_e_own, n_examples)
    half = float(sps.t.ppf((1 + confidence) / 2, df)) * se
    p = float(2 * sps.t.sf(abs(estimate) / se, df))
    return Estimate(n, n_examples, estimate, se, math.sqrt(var_s), math.sqrt(var_e_own), df,
                    estimate - half, estimate + half, p, True, se_residual=math.sqrt(var_r))


# -- equivalence, power, sample size -------------------------------------------------------

def tost(estimate: float, se: float, df: float, margin: float) -> float:
    """p of the two one-sided tests of H0: contrast <= -margin and H0: contrast >= +margin
    (Schuirmann). Equivalence within +-margin when p < alpha, which is the same as the
    (1 - 2 alpha) interval lying inside (-margin, +margin). NaN when not estimable."""
    if not (np.isfinite(estimate) and np.isfinite(se) and se > 0 and margin > 0):
        return math.nan
    p_above_lower = sps.t.sf((estimate + margin) / se, df)     # H0: contrast <= -margin
    p_below_upper = sps.t.cdf((estimate - margin) / se, df)    # H0: contrast >= +margin
    return float(max(p_above_lower, p_below_upper))


def mde(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided t test at level alpha with the given power:
    (t_{1-alpha/2, df} + t_{power, df}) * se (the standard normal-shift approximation with t
    quantiles; tests check it against the noncentral t)."""
    if not (np.isfinite(se) and se > 0 and df > 0):
        return math.nan
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)


@dataclass(frozen=True)
class SeedsNeeded:
    """About how many paired seeds the decision a contrast's estimate points to needs
    (``seeds_needed``); ``n`` None with the reason in ``why`` when no number is given."""
    target: str              # EQUIVALENCE (|estimate| < margin) or AT_LEAST_TARGET
    n: int | None            # at the estimated seed variance
    low: int | None = None   # at the low end of the seed variance's PLAN_COVERAGE interval
    high: int | None = None  # at its high end; None: more than MAX_SEEDS
    why: str = ""


EQUIVALENCE, AT_LEAST_TARGET = "equivalence", "at least the SESOI"
PLAN_COVERAGE = 0.8         # the seed variance's chi-square interval behind the seeds-needed range
MIN_PLAN_DF = 4             # fewer degrees of freedom of the seed variance: no seeds needed given


def seeds_needed(estimate: float, se_seeds: float, n: int, se_examples: float, n_examples: int,
                 margin: float | None, level: float = ALPHA, power: float = POWER) -> SeedsNeeded | None:
    """About how many seeds give the decision the estimate points to ``power``, at the level
    ``level`` (the study passes its Holm-adjusted one, alpha / m): equivalence within +-margin
    (TOST) when |estimate| < margin, else "at least the SESOI" (the minimal-effect test), the
    true contrast taken to be the estimate. The range reruns the same sum at the ends of the
    ``PLAN_COVERAGE`` chi-square interval of the seed-level variance (n - 1 df); with fewer
    than ``MIN_PLAN_DF`` df no number is given (``why`` says so).

    The seed part of the variance (``se_seeds``, residual included) shrinks as 1/n, the test
    set's own part (``se_examples``) does not: every seed uses the same test images. None when
    there is no margin or no finite standard error."""
    if not (margin and np.isfinite(estimate) and np.isfinite(se_seeds) and np.isfinite(se_examples) and n >= 2):
        return None
    target = EQUIVALENCE if abs(estimate) < margin else AT_LEAST_TARGET
    df_seeds = n - 1
    if df_seeds < MIN_PLAN_DF:
        return SeedsNeeded(target, None, why=f"the seed-level variance has {df_seeds} degrees of freedom "
                                              f"(fewer than {MIN_PLAN_DF})")
    var_seed = se_seeds ** 2 * n                                   # one seed's variance
    args = (estimate, se_examples, n_examples, margin, level, power, target)
    needed = _needed_at(var_seed, *args)
    if needed is None:
        return SeedsNeeded(target, None, why=_why_none(*args))
    chi_low, chi_high = sps.chi2.ppf([(1 - PLAN_COVERAGE) / 2, (1 + PLAN_COVERAGE) / 2], df_seeds)
    low = _needed_at(var_seed * df_seeds / chi_high, *args)
    high = _needed_at(var_seed * df_seeds / chi_low, *args)
    return SeedsNeeded(target, needed, low, high)


def _power(se, df, estimate, margin, level, target):
    """Power of the target's test where the true contrast is ``estimate`` (shifted-t
    approximation, as ``mde``): TOST at ``level`` per side, or the minimal-effect test,
    two-sided at ``level``. Vectorised over ``se`` and ``df``."""
    d = abs(estimate)
    if target == EQUIVALENCE:
        crit = sps.t.ppf(1 - level, df)
        return sps.t.cdf((margin - d) / se - crit, df) + sps.t.cdf((margin + d) / se - crit, df) - 1
    return sps.t.cdf((d - margin) / se - sps.t.ppf(1 - level / 2, df), df)


def _needed_at(var_seed, estimate, se_examples, n_examples, margin, level, power, target) -> int | None:
    """The smallest n in 2..MAX_SEEDS whose power reaches ``power`` at seed variance ``var_seed``."""
    ns = np.arange(2, MAX_SEEDS + 1)
    var_s = var_seed / ns
    df = satterthwaite_df(var_s, ns, se_examples ** 2, n_examples)
    ok = np.flatnonzero(_power(np.sqrt(var_s + se_examples ** 2), df, estimate, margin, level, target) >= power)
    return int(ns[ok[0]]) if len(ok) else None


def _why_none(estimate, se_examples, n_examples, margin, level, power, target) -> str:
    df = max(n_examples - 1, 1) if n_examples else math.inf
    if se_examples > 0 and _power(se_examples, min(df, 1e6), estimate, margin, level, target) < power:
        return "the test set limits the precision"
    return f"more than {MAX_SEEDS} seeds: the estimate lies close to the margin"


def prob_superiority(per_seed) -> tuple[float, int, int]:
    """P(A > B) on a fresh seed (Bouthillier et al. 2021): the share of paired seeds on which
    the contrast is positive, ties (equal up to float rounding) counting half.
    Returns (probability, seeds with A > B, seeds)."""
    d = np.asarray(per_seed, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return math.nan, 0, 0
    tie = np.abs(d) <= _REL_TOL
    wins = int(((d > 0) & ~tie).sum())
    return float((wins + 0.5 * tie.sum()) / len(d)), wins, len(d)


# -- the verdict -------------------------------------------------------------------------------
# Four verdicts for a contrast whose metric declares a smallest effect of interest (SESOI, the
# margin), each from tests at the study's Holm-adjusted level (p values Holm-adjusted over the
# family, compared with alpha): D, the difference test (H0: contrast = 0); E, the equivalence
# test (TOST, H0: |contrast| >= margin); M, the minimal-effect test (H0: |contrast| <= margin).
# M implies D (its p is never smaller), and M and E exclude each other, so these are exhaustive
# and mutually exclusive (docs/protocol.md, "Inference"):
AT_LEAST = "different, at least the SESOI"        # M: the interval lies wholly beyond the margin
SMALLER = "different, smaller than the SESOI"     # D and E: not zero, and inside the margin
EQUIVALENT = "equivalent within ±SESOI"           # E, not D
INCONCLUSIVE = "inconclusive"                     # neither M nor E (D alone: a sign, not a size)
VERDICTS = (AT_LEAST, SMALLER, EQUIVALENT, INCONCLUSIVE)
DIFFERENT = "different"                           # D, for a metric without a margin (size not judged)
NO_VERDICT, NOT_ESTIMABLE = "no verdict", "not estimable"


def minimal_effect(estimate: float, se: float, df: float, margin: float) -> float:
    """p of the minimal-effect test of H0: |contrast| <= margin against |contrast| > margin,
    two-sided: 2 P(T > (|estimate| - margin) / se), capped at 1. p < alpha is the same as the
    (1 - alpha) interval lying wholly beyond +-margin (on the estimate's side); at a true
    contrast of +-margin it rejects with probability alpha / 2. NaN when not estimable."""
    if not (np.isfinite(estimate) and np.isfinite(se) and se > 0 and margin > 0):
        return math.nan
    return float(min(1.0, 2 * sps.t.sf((abs(estimate) - margin) / se, df)))


def verdict_kind(n: int, estimable: bool, p_holm: float, p_tost_holm: float, p_minimal_holm: float,
                 has_margin: bool, alpha: float = ALPHA) -> str:
    """One of ``VERDICTS``, ``DIFFERENT`` / ``INCONCLUSIVE`` without a margin, ``NO_VERDICT``
    (n < MIN_VERDICT_N) or ``NOT_ESTIMABLE``; the p values are Holm-adjusted."""
    if n >= 2 and not estimable:
        return NOT_ESTIMABLE
    if n < MIN_VERDICT_N:
        return NO_VERDICT
    different = _below(p_holm, alpha)
    if not has_margin:
        return DIFFERENT if different else INCONCLUSIVE
    if _below(p_minimal_holm, alpha):
        return AT_LEAST
    if _below(p_tost_holm, alpha):
        return SMALLER if different else EQUIVALENT
    return INCONCLUSIVE


def _below(p: float, alpha: float) -> bool:
    return p is not None and bool(np.isfinite(p)) and p < alpha


def verdict(n: int, estimable: bool, p_holm: float, p_tost_holm: float, margin: float | None,
            needed: SeedsNeeded | None = None, alpha: float = ALPHA, margin_text: str = "",
            p_minimal_holm: float = math.nan) -> str:
    """The verdict in words: "different, at least the SESOI (0.5 pp)", "different, smaller than
    the SESOI (0.5 pp)", "equivalent within ±0.5 pp", "inconclusive — needs about 14 seeds
    (9–33) to show equivalence" (or why no number is given), "no verdict (n=2 < 3)", "not
    estimable"; without a margin "different (...)" or "inconclusive (...)"."""
    kind = verdict_kind(n, estimable, p_holm, p_tost_holm, p_minimal_holm, margin is not None, alpha)
    size = margin_text.lstrip("±")
    if kind == NO_VERDICT:
        return f"no verdict (n={n} < {MIN_VERDICT_N})"
    if kind == NOT_ESTIMABLE:
        return kind
    if kind in (AT_LEAST, SMALLER):
        return f"{kind} ({size})"
    if kind == EQUIVALENT:
        return f"equivalent within {margin_text}"
    if margin is None:
        return f"{kind} (no smallest effect of interest declared for this metric)"
    sign = (f"different from zero, but neither at least {size} nor within {margin_text} is shown; "
            if _below(p_holm, alpha) else "")
    return f"inconclusive — {sign}{needed_text(needed, size)}"


def needed_text(needed: SeedsNeeded | None, size: str = "the SESOI") -> str:
    """"needs about 14 seeds (9–33) to show equivalence", or why no number is given."""
    if needed is None:
        return "seeds needed not estimated"
    goal = "equivalence" if needed.target == EQUIVALENCE else f"at least {size}"
    if needed.n is None:
        if needed.why == "the test set limits the precision":
            return f"more seeds alone would not show {goal}: the test set limits the precision"
        return f"seeds needed not given: {needed.why}"
    high = f"{needed.high}" if needed.high is not None else f"more than {MAX_SEEDS}"
    return f"needs about {needed.n} seeds ({needed.low}–{high}) to show {goal}"
