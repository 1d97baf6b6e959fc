"""Statistics on tidy frames: pure functions, no MLflow, no plotting.

The input of most functions is a *scores* frame (see ``analysis.load``):
rows: one per (arm, seed, metric), columns ``arm``, ``seed``, ``metric``, ``value``.

Conventions
* Confidence intervals are two-sided Student-t intervals over seeds (``scipy.stats.t``).
* Comparisons with the baseline are paired by seed: only seeds present in both arms count.
* Effect size is Cohen's d_z = mean(diff) / sd(diff) (paired differences, ddof=1).
* Multiple comparisons: Holm's step-down correction, within one metric (the family is every
  comparison made on that metric), separately for the t-test and the Wilcoxon test.
* With fewer than two paired seeds nothing is claimed: CIs and p-values are NaN.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

ALPHA = 0.05
CONFIDENCE = 0.95


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
    """Cohen's d_z for paired differences: mean / sd (ddof=1). NaN when n < 2; +-inf when the
    differences are all equal and non-zero; 0 when they are all zero."""
    d = _finite(diffs)
    if len(d) < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    mean = float(d.mean())
    if sd == 0:
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / sd


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


def paired_test(treatment: Sequence[float], baseline: Sequence[float],
                confidence: float = CONFIDENCE) -> PairedResult:
    """Paired t-test and Wilcoxon signed-rank test of aligned samples (same seed order).

    Pairs with a NaN on either side are dropped. Degenerate cases scipy answers with NaN and a
    warning are decided here: all differences zero -> t = 0, p = 1 for both tests.
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
    if n < 2:
        return PairedResult(n, interval, math.nan, math.nan, math.nan, math.nan, math.nan)
    if np.all(d == 0):
        return PairedResult(n, interval, 0.0, 1.0, 0.0, 1.0, 0.0)
    with warnings.catch_warnings():
        # Constant non-zero differences: scipy returns t = +-inf, p = 0 (the limit) with a
        # precision warning; we keep the limit.
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
                      "t", "p_t", "p_t_holm", "w", "p_wilcoxon", "p_wilcoxon_holm",
                      "significant", "verdict"]


def compare_to_baseline(scores: pd.DataFrame, baseline: str, alpha: float = ALPHA,
                        confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Every non-baseline arm against ``baseline``, paired by seed, per metric.

    rows: one per (metric, arm != baseline). ``diff`` = arm - baseline (its mean over paired
    seeds), ``low``/``high`` its t-interval. ``significant``: Holm-adjusted paired t-test
    p < alpha (never with n < 2). ``verdict``: "better"/"worse" (direction-aware: lower
    is better for losses), "n.s.", or "n/a (n=1)" / "n/a (n=0)".
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
                                      if c not in ("p_t_holm", "p_wilcoxon_holm", "significant", "verdict")])
    return _adjust_and_judge(out, "diff", alpha)


def _adjust_and_judge(frame: pd.DataFrame, estimate: str, alpha: float) -> pd.DataFrame:
    """Adds Holm-adjusted p-values per metric, ``significant`` and ``verdict``."""
    frame = frame.copy()
    frame["p_t_holm"] = np.nan
    frame["p_wilcoxon_holm"] = np.nan
    for _, idx in frame.groupby("metric", sort=False).groups.items():
        frame.loc[idx, "p_t_holm"] = holm(frame.loc[idx, "p_t"])
        frame.loc[idx, "p_wilcoxon_holm"] = holm(frame.loc[idx, "p_wilcoxon"])
    frame["significant"] = (frame["n"] >= 2) & (frame["p_t_holm"] < alpha)
    frame["verdict"] = [_verdict(row, estimate) for row in frame.itertuples(index=False)]
    return frame


def _verdict(row, estimate: str) -> str:
    if row.n < 2:
        return f"n/a (n={row.n})"
    if not row.significant:
        return "n.s."
    value = getattr(row, estimate)
    improved = value < 0 if lower_is_better(row.metric) else value > 0
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
    Returns (per-seed contrasts over the seeds that have every used cell, number of
    other-factor combinations averaged over).
    """
    others = [f for f in factors if f not in on]
    present = set(wide.columns) if len(factors) > 1 else {(c,) for c in wide.columns}

    def cell(assign: tuple, combo: tuple) -> tuple:
        values = dict(zip(on, assign)) | dict(zip(others, combo))
        return tuple(values[f] for f in factors)

    combos = sorted({tuple(c[factors.index(f)] for f in others) for c in present})
    usable = [c for c in combos if all(cell(a, c) in present for a in terms)]
    if not usable:
        return np.array([]), 0
    per_seed = np.zeros(len(wide))
    for combo in usable:
        for assign, weight in terms.items():
            key = cell(assign, combo)
            col = wide[key if len(factors) > 1 else key[0]].to_numpy(dtype=float)
            per_seed = per_seed + weight * col
    per_seed = per_seed / len(usable)
    return per_seed[np.isfinite(per_seed)], len(usable)


EFFECT_COLUMNS = ["metric", "effect", "factor", "level", "reference", "n", "estimate", "low",
                  "high", "d_z", "p_t", "p_t_holm", "p_wilcoxon", "p_wilcoxon_holm",
                  "averaged_over", "significant", "verdict"]


def factorial_effects(scores: pd.DataFrame, arm_levels: pd.DataFrame, factors: Sequence[str],
                      reference: Mapping[str, str], alpha: float = ALPHA,
                      confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Main effects and two-way interactions, with t-intervals and tests over seeds.

    ``arm_levels``: rows: one per arm; columns ``arm`` and one per factor (its level).
    Main effect of factor A at level a: per seed, the mean over the other factors' levels of
    cell(a) - cell(a0), a0 the reference (baseline) level. Two-way interaction A x B at
    (a, b): per seed, [cell(a,b) - cell(a0,b)] - [cell(a,b0) - cell(a0,b0)], the cells
    averaged over the remaining factors. Each per-seed contrast is then a paired difference:
    t-interval, one-sample t-test and Wilcoxon against 0, d_z; Holm over all effects of a
    metric. rows: one per (metric, effect term).
    """
    factors = list(factors)
    levels = factor_levels(arm_levels, factors, reference)
    rows = []
    for metric in scores["metric"].unique():
        wide = _cell_table(scores, arm_levels, factors, metric)
        for f in factors:
            ref = levels[f][0]
            for level in levels[f][1:]:
                d, k = _contrast(wide, factors, {(level,): 1.0, (ref,): -1.0}, [f])
                rows.append(_effect_row(metric, "main", f, level, ref, d, k, confidence))
        for fa, fb in itertools.combinations(factors, 2):
            ra, rb = levels[fa][0], levels[fb][0]
            for la, lb in itertools.product(levels[fa][1:], levels[fb][1:]):
                terms = {(la, lb): 1.0, (ra, lb): -1.0, (la, rb): -1.0, (ra, rb): 1.0}
                d, k = _contrast(wide, factors, terms, [fa, fb])
                rows.append(_effect_row(metric, "interaction", f"{fa} x {fb}", f"{la} x {lb}",
                                        f"{ra} x {rb}", d, k, confidence))
    out = pd.DataFrame(rows, columns=[c for c in EFFECT_COLUMNS
                                      if c not in ("p_t_holm", "p_wilcoxon_holm", "significant", "verdict")])
    return _adjust_and_judge(out, "estimate", alpha)[EFFECT_COLUMNS]


def _effect_row(metric, effect, factor, level, reference, d, k, confidence) -> dict:
    ci = t_interval(d, confidence)
    r = paired_test(d, np.zeros(len(d)), confidence)
    return {"metric": metric, "effect": effect, "factor": factor, "level": level,
            "reference": reference, "n": ci.n, "estimate": ci.mean, "low": ci.low,
            "high": ci.high, "d_z": r.d_z, "p_t": r.p_t, "p_wilcoxon": r.p_wilcoxon,
            "averaged_over": k}


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
            v, k = _contrast(wide, factors, {(la, lb): 1.0}, [fa, fb])
            ci = t_interval(v, confidence)
            rows.append({"metric": metric, "factor_a": fa, "factor_b": fb, "level_a": la,
                         "level_b": lb, "n": ci.n, "mean": ci.mean, "low": ci.low,
                         "high": ci.high, "averaged_over": k})
    return pd.DataFrame(rows, columns=["metric", "factor_a", "factor_b", "level_a", "level_b",
                                       "n", "mean", "low", "high", "averaged_over"])


# -- bookkeeping tables: completeness, hyperparameters, cost --------------------------------

STATUS_ORDER = ("completed", "running", "interrupted", "failed", "pruned")


def completeness(runs: pd.DataFrame, arms: Sequence[str], seeds: Sequence[int]) -> pd.DataFrame:
    """Arm x seed matrix of the best outcome of the runs in each cell.

    ``runs``: rows: one per trial run (columns ``arm``, ``seed``, ``outcome``). Returns
    rows: one per arm (index), columns: one per seed; values "completed", "running",
    "failed", "pruned" or "missing"; a cell with several attempts gets "(k runs)" appended.
    """
    matrix = pd.DataFrame("missing", index=pd.Index(list(arms), name="arm"),
                          columns=pd.Index(list(seeds), name="seed"), dtype=object)
    # groups: one per (arm, seed) cell; its attempts
    for (arm, seed), g in runs.groupby(["arm", "seed"]):
        if arm not in matrix.index or seed not in matrix.columns:
            continue
        outcomes = list(g["outcome"].fillna("unknown"))
        best = next((s for s in STATUS_ORDER if s in outcomes), outcomes[0])
        matrix.loc[arm, seed] = best if len(outcomes) == 1 else f"{best} ({len(outcomes)} runs)"
    return matrix


def tuned_hyperparameters(runs: pd.DataFrame, tune_runs: pd.DataFrame | None = None,
                          ignore: Iterable[str] = ("seed",)) -> pd.DataFrame:
    """The configuration that tells the arms apart: per arm, the value of every param that
    differs across arms (the scientific settings and the tuned values) or that the tune phase
    varied (the nuisance search space), as long as it is constant within each arm.

    ``runs``: the replicate runs, rows: one per run; columns ``arm`` and ``params.<key>``.
    ``tune_runs``: the same stage's tune-phase trials (optional). Returns rows: one per arm;
    columns: the param keys (without prefix). Params that vary within an arm (the seed,
    per-run paths) are left out, as are those in ``ignore``.
    """
    ignore = set(ignore)
    cols = [c for c in runs.columns if c.startswith("params.") and c.removeprefix("params.") not in ignore]
    if runs.empty or not cols:
        return pd.DataFrame(index=pd.Index([], name="arm"))
    searched = set()
    if tune_runs is not None and len(tune_runs) > 1:
        searched = {c for c in cols if c in tune_runs and tune_runs[c].nunique(dropna=False) > 1}
    keep = []
    for c in cols:
        constant_in_arm = (runs.groupby("arm")[c].nunique(dropna=False) <= 1).all()
        logged = runs[c].notna().any()
        if logged and constant_in_arm and (runs[c].nunique(dropna=False) > 1 or c in searched):
            keep.append(c)
    # rows: one per arm; the (constant) value of each kept param
    table = runs.groupby("arm", sort=False)[keep].first()
    table.columns = [c.removeprefix("params.") for c in keep]
    return table


def run_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """Wall and GPU seconds of each run, from its cost metrics or, when a run never logged them
    (pruned, failed, still running), from its MLflow start and end times.

    rows: one per run; columns stage, arm, phase, outcome, wall_s, gpu_s, measured (True when
    both came from the ``cost/*`` metrics).
    """
    # The runner logs the whole trial's wall time (cost/wall_seconds_trial, pruned trials
    # too); the trainable's own cost/wall_seconds exists only for completed runs.
    wall_metric = _col(runs, "metrics.cost/wall_seconds_trial").fillna(
        _col(runs, "metrics.cost/wall_seconds"))
    gpu_metric = _col(runs, "metrics.cost/gpu_seconds")
    duration = _col(runs, "duration_s")
    gpus = pd.to_numeric(_col(runs, "gpus_per_trial"), errors="coerce").fillna(0.0)
    wall = wall_metric.fillna(duration)
    gpu = gpu_metric.fillna(gpus * wall)
    return pd.DataFrame({"stage": runs["stage"], "arm": runs["arm"], "phase": runs["phase"],
                         "outcome": runs["outcome"], "wall_s": wall, "gpu_s": gpu,
                         "measured": wall_metric.notna() & gpu_metric.notna()})


def cost_table(runs: pd.DataFrame, pretraining_of: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """rows: one per (stage, arm) plus a final ``total`` row; columns: tune trials (and how
    many were pruned), tune/replicate/total wall and GPU seconds, and how many runs' cost had
    to be estimated from MLflow timestamps.

    ``pretraining_of``: classify arm -> the pretraining arms (keys) it builds on. Their whole
    cost (tune + replicate) is added to the arm in ``wall_with_pretraining_s`` /
    ``gpu_with_pretraining_s``; shared pretraining thus counts once per arm there, and once
    in the total row.
    """
    c = run_costs(runs)
    rows = []
    # groups: one per (stage, arm); all its runs (pruned and failed included)
    for (stage, arm), g in c.groupby(["stage", "arm"], sort=False):
        rows.append(_cost_row(stage, arm, g))
    rows.append(_cost_row("all", "total", c))
    table = pd.DataFrame(rows)
    pre = c[c["stage"] == "pretrain"].groupby("arm")[["wall_s", "gpu_s"]].sum()
    extra = [[pre.loc[k] for k in (pretraining_of or {}).get(r.arm, ()) if k in pre.index]
             if r.stage == "classify" else [] for r in table.itertuples(index=False)]
    table["wall_with_pretraining_s"] = table["wall_s"] + [sum(float(e["wall_s"]) for e in x) for x in extra]
    table["gpu_with_pretraining_s"] = table["gpu_s"] + [sum(float(e["gpu_s"]) for e in x) for x in extra]
    return table


def _cost_row(stage, arm, g: pd.DataFrame) -> dict:
    tune = g[g["phase"] == "tune"]
    rep = g[g["phase"] == "replicate"]
    return {"stage": stage, "arm": arm, "tune_trials": len(tune),
            "tune_pruned": int((tune["outcome"] == "pruned").sum()),
            "tune_wall_s": tune["wall_s"].sum(), "tune_gpu_s": tune["gpu_s"].sum(),
            "replicate_runs": len(rep), "replicate_wall_s": rep["wall_s"].sum(),
            "replicate_gpu_s": rep["gpu_s"].sum(), "wall_s": g["wall_s"].sum(),
            "gpu_s": g["gpu_s"].sum(), "estimated_runs": int((~g["measured"]).sum())}


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame:
        return pd.to_numeric(frame[name], errors="coerce")
    return pd.Series(np.nan, index=frame.index, dtype=float)


# -- curves -----------------------------------------------------------------------------------

def curve_bands(history: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean and t-band over seeds of metric histories.

    ``history``: rows: one per (arm, seed, key, step) with ``value``. Returns rows: one per
    (arm, key, step); columns mean, low, high, n (low/high NaN where n < 2).
    """
    rows = []
    for (arm, key, step), g in history.groupby(["arm", "key", "step"], sort=True):
        ci = t_interval(g["value"], confidence)
        rows.append({"arm": arm, "key": key, "step": step, "mean": ci.mean, "low": ci.low,
                     "high": ci.high, "n": ci.n})
    return pd.DataFrame(rows, columns=["arm", "key", "step", "mean", "low", "high", "n"])
