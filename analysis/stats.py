"""Statistics on tidy frames: pure functions, no MLflow, no plotting.

The input of most functions is a *scores* frame (see ``analysis.load``):
rows: one per (arm, seed, metric), columns ``arm``, ``seed``, ``metric``, ``value``.

Conventions
* Confidence intervals are two-sided Student-t intervals over seeds (``scipy.stats.t``).
* Comparisons with the baseline are paired by seed: only seeds present in both arms count.
* Effect size is Cohen's d_z = mean(diff) / sd(diff) (paired differences, ddof=1).
* Multiple comparisons: Holm's step-down correction, within one metric (the family is every
  comparison made on that metric), separately for the t-test and the Wilcoxon test;
  ``wilcoxon_can_reject`` says where the exact Wilcoxon test cannot reject at the study's n
  (its smallest p is 2 / 2^n: 0.0625 at n = 5), and the tables blank it there.
* With fewer than two paired seeds nothing is claimed: CIs and p-values are NaN; with fewer
  than three no verdict word is given; constant differences are "not estimable".
* These are the exploratory comparisons; the planned ones are in ``analysis.contrasts``.
"""
from __future__ import annotations

import itertools
import json
import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.bookkeeping import completeness, cost_table, run_costs, tuned_hyperparameters  # noqa: F401
from study.inference import MIN_VERDICT_N, is_constant

ALPHA = 0.05
CONFIDENCE = 0.95


def is_proportion(metric: str) -> bool:
    """Metrics bounded to [0, 1]: accuracies, F1, precision, recall, ROC-AUC."""
    name = metric.rsplit("/", 1)[-1]
    return name.startswith(("acc", "f1", "precision", "recall", "roc_auc"))


def lower_is_better(metric: str) -> bool:
    """Losses (``test/log_loss``, ``val/loss``) are minimised; everything else is maximised."""
    return "loss" in metric.rsplit("/", 1)[-1]


# -- intervals and paired tests ------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """Mean and two-sided t confidence interval; ``low``/``high`` are NaN when n < 2."""
    mean: float
    low: float
    high: float
    n: int
    sd: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def cohens_dz(diffs: Iterable[float]) -> float:
    """Cohen's d_z for paired differences: mean / sd (ddof=1). NaN (not estimable) when n < 2
    or the differences are all equal up to float rounding, never +-inf."""
    d = _finite(diffs)
    if len(d) < 2 or is_constant(d):
        return math.nan
    return float(d.mean()) / float(d.std(ddof=1))


@dataclass(frozen=True)
class PairedResult:
    """``treatment - baseline`` over the seeds both have."""
    n: int
    diff: Interval              # mean difference and its t-interval
    t: float
    p_t: float                  # paired t-test, two-sided
    w: float
    p_wilcoxon: float           # Wilcoxon signed-rank, two-sided (exact for small n w/o ties)
    d_z: float
    estimable: bool = True      # False: n < 2 or constant differences (everything NaN)


def paired_test(treatment: Sequence[float], baseline: Sequence[float],
                confidence: float = CONFIDENCE) -> PairedResult:
    """Paired t-test and Wilcoxon signed-rank test of aligned samples (same seed order).

    Pairs with a NaN on either side are dropped. Differences that are all equal up to float
    rounding (zero or not) are not estimable: t, p and d_z are NaN and ``estimable`` is False,
    never p = 0 or d_z = +-inf (scipy's limits for a zero standard deviation).
    """
    a = np.asarray(treatment, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    n = len(d)
    interval = t_interval(d, confidence)
    if n < 2 or is_constant(d):
        return PairedResult(n, interval, math.nan, math.nan, math.nan, math.nan, math.nan,
                            estimable=False)
    with warnings.catch_warnings():
        # ties and zeros make the Wilcoxon test fall back to its normal approximation (warned)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        t_res = sps.ttest_rel(a, b)
        w_res = sps.wilcoxon(d)
    return PairedResult(n, interval, float(t_res.statistic), float(t_res.pvalue),
                        float(w_res.statistic), float(w_res.pvalue), cohens_dz(d))


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values (NaNs stay NaN and do not count in m).

    Implemented here (a few lines) because statsmodels is not a dependency; it equals
    ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``: with the m p-values
    sorted ascending, p_adj(i) = max_{j <= i} min(1, (m - j + 1) * p(j)), j 1-based.
    """
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def _finite(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values) if not isinstance(values, (np.ndarray, pd.Series)) else values,
                   dtype=float)
    return x[np.isfinite(x)]


# -- per-arm summaries and comparisons with the baseline ----------------------------------

def summarize_arms(scores: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """rows: one per (arm, metric); columns arm, metric, mean, low, high, n, sd."""
    rows = []
    # groups: one per (arm, metric); values over seeds
    for (arm, metric), g in scores.groupby(["arm", "metric"], sort=False):
        ci = t_interval(g["value"], confidence)
        rows.append({"arm": arm, "metric": metric, "mean": ci.mean, "low": ci.low,
                     "high": ci.high, "n": ci.n, "sd": ci.sd})
    return pd.DataFrame(rows, columns=["arm", "metric", "mean", "low", "high", "n", "sd"])


COMPARISON_COLUMNS = ["metric", "arm", "baseline", "n", "diff", "low", "high", "d_z",
                      "t", "p_t", "p_t_holm", "w", "p_wilcoxon", "p_wilcoxon_holm", "wilcoxon_can_reject",
                      "significant", "verdict"]
_JUDGED = ("p_t_holm", "p_wilcoxon_holm", "wilcoxon_can_reject", "significant", "verdict")


def compare_to_baseline(scores: pd.DataFrame, baseline: str, alpha: float = ALPHA,
                        confidence: float = CONFIDENCE, minimize: Mapping[str, bool] | None = None) -> pd.DataFrame:
    """Every non-baseline arm against ``baseline``, paired by seed, per metric.

    rows: one per (metric, arm != baseline). ``diff`` = arm - baseline (its mean over paired
    seeds), ``low``/``high`` its t-interval. ``significant``: Holm-adjusted paired t-test
    p < alpha (never with n < 2). ``verdict``: "better"/"worse" (direction-aware: lower is
    better for a metric ``minimize`` says so of, else for losses), "n.s.", or "n/a (n=1)" /
    "n/a (n=0)".
    """
    if baseline not in set(scores["arm"]):
        raise KeyError(f"baseline arm {baseline!r} has no scores; arms: {sorted(set(scores['arm']))}")
    # wide: rows: one per seed; columns: one per arm (per metric, below)
    rows = []
    for metric, g in scores.groupby("metric", sort=False):
        wide = g.pivot_table(index="seed", columns="arm", values="value", aggfunc="mean")
        for arm in [a for a in g["arm"].unique() if a != baseline]:
            if baseline not in wide:
                base = np.full(len(wide), np.nan)
            else:
                base = wide[baseline].to_numpy()
            r = paired_test(wide[arm].to_numpy(), base, confidence)
            rows.append({"metric": metric, "arm": arm, "baseline": baseline, "n": r.n,
                         "diff": r.diff.mean, "low": r.diff.low, "high": r.diff.high,
                         "d_z": r.d_z, "t": r.t, "p_t": r.p_t, "w": r.w,
                         "p_wilcoxon": r.p_wilcoxon})
    out = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS
                                      if c not in _JUDGED])
    return _adjust_and_judge(out, "diff", alpha, minimize or {})


def _adjust_and_judge(frame: pd.DataFrame, estimate: str, alpha: float, minimize: Mapping[str, bool]) -> pd.DataFrame:
    """Adds Holm-adjusted p-values per metric, ``significant`` and ``verdict`` (``minimize``:
    metric -> lower is better; a metric not in it: ``lower_is_better``)."""
    frame = frame.copy()
    frame["p_t_holm"] = np.nan
    frame["p_wilcoxon_holm"] = np.nan
    for _, idx in frame.groupby("metric", sort=False).groups.items():
        frame.loc[idx, "p_t_holm"] = holm(frame.loc[idx, "p_t"])
        frame.loc[idx, "p_wilcoxon_holm"] = holm(frame.loc[idx, "p_wilcoxon"])
    frame["wilcoxon_can_reject"] = False
    for _, idx in frame.groupby("metric", sort=False).groups.items():
        frame.loc[idx, "wilcoxon_can_reject"] = wilcoxon_can_reject(frame.loc[idx, "n"], alpha)
    frame["significant"] = (frame["n"] >= MIN_VERDICT_N) & (frame["p_t_holm"] < alpha)
    frame["verdict"] = [_verdict(row, estimate, minimize.get(row.metric, lower_is_better(row.metric)))
                        for row in frame.itertuples(index=False)]
    return frame


def wilcoxon_min_p(n: int) -> float:
    """The exact Wilcoxon signed-rank test's smallest two-sided p with n pairs: 2 / 2^n."""
    return 2.0 / 2 ** n if n >= 1 else 1.0


def wilcoxon_can_reject(ns: pd.Series, alpha: float) -> np.ndarray:
    """Per comparison of one Holm family (``ns``: its pairs): whether its Holm-adjusted Wilcoxon p
    can fall below ``alpha``: not where its smallest p is >= alpha, nor where none reaches alpha / m."""
    smallest = np.array([wilcoxon_min_p(int(n)) for n in ns])
    family = bool(len(smallest)) and smallest.min() < alpha / len(smallest)
    return family & (smallest < alpha)


def _verdict(row, estimate: str, minimized: bool) -> str:
    if row.n < 2:
        return f"n/a (n={row.n})"
    if pd.isna(row.p_t):
        return "not estimable"
    if row.n < MIN_VERDICT_N:
        return f"no verdict (n={row.n} < {MIN_VERDICT_N})"
    if not row.significant:
        return "n.s."
    if getattr(row, "effect", "") == "interaction":
        # a difference of differences is not better or worse: its sign depends on which level
        # each factor is coded against (the contrast column says), so only that it is not zero
        return "different"
    value = getattr(row, estimate)
    improved = value < 0 if minimized else value > 0
    return "better" if improved else "worse"


# -- factorial designs ----------------------------------------------------------------------

def factor_levels(cells: pd.DataFrame, factors: Sequence[str],
                  reference: Mapping[str, str]) -> dict[str, list[str]]:
    """Levels per factor, the reference (baseline) level first, the others sorted."""
    levels = {}
    for f in factors:
        found = sorted(set(cells[f].dropna().astype(str)))
        ref = reference.get(f)
        levels[f] = ([ref] if ref in found else []) + [l for l in found if l != ref]
    return levels


def _cell_table(scores: pd.DataFrame, arm_levels: pd.DataFrame, factors: Sequence[str],
                metric: str) -> pd.DataFrame:
    """rows: one per seed; columns: MultiIndex of factor levels, one per design cell (arm)."""
    g = scores[scores["metric"] == metric].merge(arm_levels, on="arm", how="inner")
    return g.pivot_table(index="seed", columns=list(factors), values="value", aggfunc="mean")


def _contrast(wide: pd.DataFrame, factors: Sequence[str], terms: Mapping[tuple, float],
              on: Sequence[str]) -> tuple[np.ndarray, int]:
    """Per-seed value of a contrast on factors ``on``, averaged over the other factors' levels.

    ``terms`` maps a level tuple of ``on`` to its weight (e.g. main effect: {(a1,): 1,
    (a0,): -1}). Only combinations of the other factors for which every term's cell exists in
    the design are averaged over (declared-invalid cells make the others incomparable), so
    the estimate is "the mean over the other factors' levels where the contrast is defined".
    Returns (per-seed contrasts over the seeds that have every used cell, the other-factor
    combinations averaged over, each a dict factor -> level).
    """
    others = [f for f in factors if f not in on]
    present = set(wide.columns) if len(factors) > 1 else {(c,) for c in wide.columns}

    def cell(assign: tuple, combo: tuple) -> tuple:
        values = dict(zip(on, assign)) | dict(zip(others, combo))
        return tuple(values[f] for f in factors)

    combos = sorted({tuple(c[factors.index(f)] for f in others) for c in present})
    usable = [c for c in combos if all(cell(a, c) in present for a in terms)]
    if not usable:
        return np.array([]), []
    per_seed = np.zeros(len(wide))
    for combo in usable:
        for assign, weight in terms.items():
            key = cell(assign, combo)
            col = wide[key if len(factors) > 1 else key[0]].to_numpy(dtype=float)
            per_seed = per_seed + weight * col
    per_seed = per_seed / len(usable)
    return per_seed[np.isfinite(per_seed)], [dict(zip(others, c)) for c in usable]


def cells_text(combos: Sequence[Mapping[str, str]]) -> str:
    """The other factors' levels an effect was averaged over, in words: ``labels=100%, 10%;
    encoder=finetuned`` when they form a full grid, else each combination listed."""
    if not combos:
        return "not in design"
    if not combos[0]:
        return "no other factor"
    factors = list(combos[0])
    levels = {f: list(dict.fromkeys(c[f] for c in combos)) for f in factors}
    if len(combos) == math.prod(len(v) for v in levels.values()):
        return "; ".join(f"{f}={', '.join(v)}" for f, v in levels.items())
    return " | ".join(", ".join(f"{f}={l}" for f, l in c.items()) for c in combos)


EFFECT_COLUMNS = ["metric", "effect", "factor", "level", "reference", "n", "estimate", "low",
                  "high", "d_z", "p_t", "p_t_holm", "p_wilcoxon", "p_wilcoxon_holm", "wilcoxon_can_reject",
                  "averaged_over", "averaged_cells", "weights", "significant", "verdict"]


def factorial_effects(scores: pd.DataFrame, arm_levels: pd.DataFrame, factors: Sequence[str],
                      reference: Mapping[str, str], alpha: float = ALPHA,
                      confidence: float = CONFIDENCE, minimize: Mapping[str, bool] | None = None) -> pd.DataFrame:
    """Main effects and two-way interactions, with t-intervals and tests over seeds.

    ``arm_levels``: rows: one per arm; columns ``arm`` and one per factor (its level).
    Main effect of factor A at level a: per seed, the mean over the other factors' levels of
    cell(a) - cell(a0), a0 the reference (baseline) level. Two-way interaction A x B at
    (a, b): per seed, [cell(a,b) - cell(a0,b)] - [cell(a,b0) - cell(a0,b0)], the cells
    averaged over the remaining factors. When a cell of that 2 x 2 is not in the design (declared
    invalid), the interaction is coded on the valid part instead: the reference levels (a0, b0)
    are replaced by the first levels (in design order) that complete a valid 2 x 2; an
    interaction equal to one already listed is not repeated. Each per-seed contrast is then a
    paired difference: t-interval, one-sample t-test and Wilcoxon against 0, d_z; Holm over all
    effects of a metric; an interaction's verdict is "different" (from zero) or "n.s.", never
    better or worse. ``averaged_cells`` names the other factors' levels each effect averaged;
    ``weights`` (JSON) is the effect as arm -> weight (what a planned contrast is matched on).
    rows: one per (metric, effect term).
    """
    factors = list(factors)
    levels = factor_levels(arm_levels, factors, reference)
    # design cell (levels in ``factors`` order) -> its arm
    cell_arms = {tuple(str(r[f]) for f in factors): str(r["arm"]) for _, r in arm_levels.iterrows()}
    rows = []
    for metric in scores["metric"].unique():
        wide = _cell_table(scores, arm_levels, factors, metric)
        for f in factors:
            ref = levels[f][0]
            for level in levels[f][1:]:
                terms = {(level,): 1.0, (ref,): -1.0}
                d, combos = _contrast(wide, factors, terms, [f])
                rows.append(_effect_row(metric, "main", f, level, ref, d, combos, confidence,
                                        _arm_weights(cell_arms, factors, [f], terms, combos)))
        for fa, fb in itertools.combinations(factors, 2):
            seen: set[frozenset] = set()
            for la, lb in itertools.product(levels[fa][1:], levels[fb][1:]):
                d, k, (ra, rb) = _interaction(wide, factors, fa, fb, la, lb, levels)
                cells = frozenset({(la, lb), (ra, lb), (la, rb), (ra, rb)})
                if k and cells in seen:
                    continue                       # the same 2 x 2, already listed
                seen.add(cells)
                terms = {(la, lb): 1.0, (ra, lb): -1.0, (la, rb): -1.0, (ra, rb): 1.0}
                rows.append(_effect_row(metric, "interaction", f"{fa} x {fb}", f"{la} x {lb}",
                                        f"{ra} x {rb}", d, k, confidence,
                                        _arm_weights(cell_arms, factors, [fa, fb], terms, k)))
    out = pd.DataFrame(rows, columns=[c for c in EFFECT_COLUMNS
                                      if c not in _JUDGED])
    return _adjust_and_judge(out, "estimate", alpha, minimize or {})[EFFECT_COLUMNS]


def _arm_weights(cell_arms: Mapping[tuple, str], factors: Sequence[str], on: Sequence[str],
                 terms: Mapping[tuple, float], combos: Sequence[Mapping[str, str]]) -> str:
    """The effect as JSON arm -> weight: each term's weight, spread over the other factors'
    combinations it was averaged over (``combos``); "{}" when it was averaged over none."""
    weights: dict[str, float] = {}
    for combo in combos:
        for assign, weight in terms.items():
            values = {**dict(zip(on, assign)), **combo}
            arm = cell_arms[tuple(str(values[f]) for f in factors)]
            weights[arm] = weights.get(arm, 0.0) + weight / len(combos)
    return json.dumps({a: w for a, w in sorted(weights.items()) if abs(w) > 1e-12})


def _interaction(wide, factors, fa, fb, la, lb, levels):
    """The (la, lb) interaction against the baseline levels, or, when that 2 x 2 is not in
    the design, against the first other levels that complete a valid one."""
    refs = [(levels[fa][0], levels[fb][0])] + [
        (ra, rb) for ra, rb in itertools.product(levels[fa], levels[fb]) if ra != la and rb != lb]
    for ra, rb in refs:
        terms = {(la, lb): 1.0, (ra, lb): -1.0, (la, rb): -1.0, (ra, rb): 1.0}
        d, combos = _contrast(wide, factors, terms, [fa, fb])
        if combos:
            return d, combos, (ra, rb)
    return np.array([]), [], refs[0]


def _effect_row(metric, effect, factor, level, reference, d, combos, confidence, weights: str) -> dict:
    ci = t_interval(d, confidence)
    r = paired_test(d, np.zeros(len(d)), confidence)
    return {"metric": metric, "effect": effect, "factor": factor, "level": level,
            "reference": reference, "n": ci.n, "estimate": ci.mean, "low": ci.low,
            "high": ci.high, "d_z": r.d_z, "p_t": r.p_t, "p_wilcoxon": r.p_wilcoxon,
            "averaged_over": len(combos), "averaged_cells": cells_text(combos), "weights": weights}


def two_way_cell_means(scores: pd.DataFrame, arm_levels: pd.DataFrame, factors: Sequence[str],
                       reference: Mapping[str, str], metric: str,
                       confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Cell means of every factor pair, averaged over the remaining factors per seed, with
    t-intervals over seeds. rows: one per (factor pair, level of A, level of B)."""
    factors = list(factors)
    levels = factor_levels(arm_levels, factors, reference)
    wide = _cell_table(scores, arm_levels, factors, metric)
    rows = []
    for fa, fb in itertools.combinations(factors, 2):
        for la, lb in itertools.product(levels[fa], levels[fb]):
            v, combos = _contrast(wide, factors, {(la, lb): 1.0}, [fa, fb])
            ci = t_interval(v, confidence)
            rows.append({"metric": metric, "factor_a": fa, "factor_b": fb, "level_a": la,
                         "level_b": lb, "n": ci.n, "mean": ci.mean, "low": ci.low,
                         "high": ci.high, "averaged_over": len(combos)})
    return pd.DataFrame(rows, columns=["metric", "factor_a", "factor_b", "level_a", "level_b",
                                       "n", "mean", "low", "high", "averaged_over"])


# -- curves -----------------------------------------------------------------------------------

def curve_bands(history: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean and t-band over seeds of metric histories.

    ``history``: rows: one per (arm, seed, key, step) with ``value``. Returns rows: one per
    (arm, key, step); columns mean, low, high, n (low/high NaN where n < 2). Bands of
    proportions (accuracies, F1, AUC) are clipped to [0, 1], where the metric lives; bands of
    losses observed non-negative (cross-entropy, squared error) stop at 0.
    """
    rows = []
    for (arm, key, step), g in history.groupby(["arm", "key", "step"], sort=True):
        ci = t_interval(g["value"], confidence)
        low, high = ci.low, ci.high
        if is_proportion(key):
            low, high = max(low, 0.0), min(high, 1.0)    # NaN stays NaN
        elif lower_is_better(key) and (g["value"] >= 0).all():
            low = max(low, 0.0)
        rows.append({"arm": arm, "key": key, "step": step, "mean": ci.mean, "low": low,
                     "high": high, "n": ci.n})
    return pd.DataFrame(rows, columns=["arm", "key", "step", "mean", "low", "high", "n"])
