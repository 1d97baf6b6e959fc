"""Planned contrasts: the comparisons a study declares (its ``study.json``), estimated on the
paired replicates, one Holm family per study, a verdict and one sentence per contrast.

Frames (columns documented once)

``contrast_frame(...)``   rows: one per contrast
    family ("planned" | "baseline comparisons"), contrast (its name), formula (the cells and
    arms it weighs, each averaged cell naming its arms), metric, n (paired seeds), seeds,
    n_examples (paired test examples per seed; 0 = seed level only), left_out (seeds without
    every arm, and why), failed_replicates (arms of the contrast with failed replicates),
    estimate, low, high (95% interval), se, se_seeds, se_examples, df, method, p, p_holm,
    t_seed, p_seed, p_seed_holm (seed-level paired t-test), d_z, p_superiority, wins (seeds
    with contrast > 0), margin, p_tost, p_tost_holm, mde, seeds_needed, estimable, verdict,
    finding (the sentence).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis import inference, stats
from analysis.load import METRIC_LABELS

DEFAULT_MARGIN = 0.005       # study/spec.py's default smallest effect of interest on test/acc
MARGIN_METRIC = "test/acc"   # the metric the declared margin is on
PER_EXAMPLE_METRIC = "test/acc"   # accuracy is a mean over test examples: pairable per example
_PERCENT_METRICS = ("acc", "f1", "precision", "recall", "roc_auc")


@dataclass(frozen=True)
class Term:
    cell: Mapping[str, str]          # factor -> level; a partial cell averages arms
    weight: float
    arms: tuple[str, ...]            # the arms whose mean stands for the cell


@dataclass(frozen=True)
class ContrastSpec:
    name: str
    terms: tuple[Term, ...]
    weights: Mapping[str, float]     # arm -> weight (a term's weight spread over its arms)
    family: str = "planned"

    @property
    def formula(self) -> str:
        """The contrast in cells: ``+1 [noise=gaussian, training=denoised] −1 [...]``; a term
        that averages arms lists them: ``+0.5 mean of 2 arms {a; b}``."""
        parts = []
        for t in self.terms:
            sign = "+" if t.weight >= 0 else "−"
            cell = ", ".join(f"{f}={l}" for f, l in t.cell.items()) or "all arms"
            text = f"{sign}{abs(t.weight):g} [{cell}]"
            if len(t.arms) > 1:
                text += f" = mean of {len(t.arms)} arms {{{'; '.join(t.arms)}}}"
            parts.append(text)
        return " ".join(parts)

    @property
    def difference(self) -> tuple[str, str] | None:
        """(A, B) when the contrast is one arm minus another, else None."""
        pos = [a for a, w in self.weights.items() if w > 0]
        neg = [a for a, w in self.weights.items() if w < 0]
        if len(pos) == len(neg) == 1 and abs(self.weights[pos[0]] - 1) < 1e-9:
            return pos[0], neg[0]
        return None


def from_definition(definition: Mapping) -> list[ContrastSpec]:
    """The planned contrasts of a ``study.json`` (study/spec.py ``Study.definition``)."""
    out = []
    for c in definition.get("contrasts", []):
        terms = tuple(Term(dict(t["cell"]), float(t["weight"]), tuple(t["arms"])) for t in c["terms"])
        weights = {str(a): float(w) for a, w in c["weights"].items()}
        out.append(ContrastSpec(str(c["name"]), terms, weights))
    return out


def versus_baseline(arms: Sequence[str], baseline: str) -> list[ContrastSpec]:
    """Every arm minus the baseline: the family of a study recorded without study.json."""
    return [ContrastSpec(f"{arm} vs baseline", (Term({}, 1.0, (arm,)), Term({}, -1.0, (baseline,))),
                         {arm: 1.0, baseline: -1.0}, family="baseline comparisons")
            for arm in arms if arm != baseline]


# -- per-example data ------------------------------------------------------------------------

def correct_per_example(evaluations: Mapping[tuple[str, int], dict],
                        logged_acc: Mapping[tuple[str, int], float]) -> tuple[dict, list[str]]:
    """(arm, seed) -> bool array (prediction == target, test-set order) from each replicate's
    evaluation.json, and notes on what could not be used.

    Used only when every evaluation has ``predictions`` and ``targets``, all of one length
    with the same targets (the same test set in the same order), and the accuracy they give
    matches the run's logged test/acc; otherwise ``{}`` and the reason."""
    if not evaluations:
        return {}, ["no evaluation.json with per-example predictions: intervals are seed level only"]
    lacking = sorted(f"{a} seed {s}" for (a, s), ev in evaluations.items()
                     if not ev or "predictions" not in ev or "targets" not in ev)
    if lacking:
        return {}, [f"evaluation.json without per-example predictions ({', '.join(lacking[:3])}"
                    f"{', ...' if len(lacking) > 3 else ''}; recorded before they were logged): "
                    "intervals are seed level only"]
    targets = {k: np.asarray(ev["targets"]) for k, ev in evaluations.items()}
    first = next(iter(targets.values()))
    if any(t.shape != first.shape or not np.array_equal(t, first) for t in targets.values()):
        return {}, ["the replicates' test targets differ (not the same test set): intervals are seed level only"]
    correct = {k: np.asarray(ev["predictions"]) == targets[k] for k, ev in evaluations.items()}
    off = sorted(f"{a} seed {s}" for (a, s), c in correct.items()
                 if (a, s) in logged_acc and abs(c.mean() - logged_acc[(a, s)]) > 1e-6)
    if off:
        return {}, [f"per-example predictions disagree with the logged test/acc ({', '.join(off[:3])}): "
                    "intervals are seed level only"]
    return correct, []


# -- estimation ------------------------------------------------------------------------------

def percent_metric(metric: str) -> bool:
    return any(metric.rsplit("/", 1)[-1].startswith(p) for p in _PERCENT_METRICS)


def contrast_frame(specs: Sequence[ContrastSpec], scores: pd.DataFrame, metric: str,
                   correct: Mapping[tuple[str, int], np.ndarray] | None = None,
                   margin: float | None = DEFAULT_MARGIN, failures: Mapping[str, str] | None = None,
                   alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Each contrast on ``metric``, paired by seed and (``correct``: per-example data of the
    primary metric test/acc) by test example. Holm over each family. See the module doc.

    ``scores``: rows: one per (arm, seed, metric) (``Study.scores``). ``failures``: arm -> a
    description of its failed replicates (marked, never averaged away). ``margin``: the
    smallest effect of interest on this metric, or None (no equivalence test)."""
    # wide: rows: one per seed; columns: one per arm
    wide = scores[scores["metric"] == metric].pivot_table(index="seed", columns="arm", values="value",
                                                           aggfunc="mean")
    rows = [_estimate(spec, wide, metric, correct or {}, margin, failures or {}) for spec in specs]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    for _, idx in frame.groupby("family", sort=False).groups.items():
        for col in ("p", "p_tost", "p_seed"):
            frame.loc[idx, f"{col}_holm"] = stats.holm(frame.loc[idx, col])
    frame["verdict"] = [
        inference.verdict(int(r.n), bool(r.estimable), r.p_holm, r.p_tost_holm,
                          None if pd.isna(r.margin) else r.margin,
                          None if pd.isna(r.seeds_needed) else int(r.seeds_needed), alpha,
                          _margin_text(r.margin, metric))
        for r in frame.itertuples(index=False)]
    frame["finding"] = [finding(r, metric, int((frame["family"] == r.family).sum()))
                        for r in frame.itertuples(index=False)]
    return frame[COLUMNS]


COLUMNS = ["family", "contrast", "formula", "metric", "n", "seeds", "n_examples", "left_out",
           "failed_replicates", "estimate", "low", "high", "se", "se_seeds", "se_examples", "df",
           "method", "p", "p_holm", "t_seed", "p_seed", "p_seed_holm", "d_z", "p_superiority",
           "wins", "margin", "p_tost", "p_tost_holm", "mde", "seeds_needed", "estimable",
           "verdict", "finding"]


def _estimate(spec: ContrastSpec, wide: pd.DataFrame, metric: str, correct, margin, failures) -> dict:
    arms = list(spec.weights)
    absent = [a for a in arms if a not in wide.columns]
    present = wide.reindex(columns=arms)
    complete = present.dropna()                       # rows: seeds where every arm completed
    seeds = [int(s) for s in complete.index]
    left_out = [f"seed {s} (no completed run of {', '.join(a for a in arms if pd.isna(present.loc[s, a]))})"
                for s in present.index if s not in complete.index]
    if absent:
        left_out.insert(0, f"{', '.join(absent)}: no completed replicate")
    weights = np.array([spec.weights[a] for a in arms])
    per_seed = complete.to_numpy(dtype=float) @ weights if len(complete) else np.array([])
    use_examples = (metric == PER_EXAMPLE_METRIC and seeds and not absent
                    and all((a, s) in correct for a in arms for s in seeds))
    if use_examples:
        # c: (seeds, examples) -> the contrast per test example, arms paired by example
        c = np.stack([sum(w * correct[(a, s)].astype(float) for a, w in zip(arms, weights)) for s in seeds])
    else:
        c = per_seed
    est = inference.hierarchical_estimate(c)
    low, high = est.low, est.high
    if percent_metric(metric) and est.estimable:
        # a contrast of proportions lies in [sum of negative weights, sum of positive weights]
        low, high = max(low, float(weights[weights < 0].sum())), min(high, float(weights[weights > 0].sum()))
    if absent:
        est = inference.not_estimable(0, 0, math.nan, f"{', '.join(absent)} has no completed replicate")
    seed_test = stats.paired_test(per_seed, np.zeros(len(per_seed))) if len(per_seed) else None
    p_sup, wins, _ = inference.prob_superiority(per_seed)
    margin = margin if (margin is not None and metric == MARGIN_METRIC) else None
    mde = inference.mde(est.se, est.df) if est.estimable else math.nan
    needed = (inference.seeds_needed(est.se_seeds, est.n, est.se_examples, est.n_examples, margin)
              if est.estimable and margin else None)
    return {
        "family": spec.family, "contrast": spec.name, "formula": spec.formula, "metric": metric,
        "n": est.n, "seeds": ",".join(map(str, seeds)), "n_examples": est.n_examples,
        "left_out": "; ".join(left_out),
        "failed_replicates": "; ".join(f"{a}: {failures[a]}" for a in arms if a in failures),
        "estimate": est.estimate, "low": low, "high": high, "se": est.se,
        "se_seeds": est.se_seeds, "se_examples": est.se_examples, "df": est.df,
        "method": est.method if est.estimable else f"not estimable: {est.why}",
        "p": est.p, "t_seed": seed_test.t if seed_test else math.nan,
        "p_seed": seed_test.p_t if seed_test else math.nan,
        "d_z": seed_test.d_z if seed_test else math.nan,
        "p_superiority": p_sup, "wins": wins, "margin": margin if margin is not None else math.nan,
        "p_tost": inference.tost(est.estimate, est.se, est.df, margin) if margin else math.nan,
        "mde": mde, "seeds_needed": needed if needed is not None else math.nan,
        "estimable": est.estimable,
    }


# -- words -----------------------------------------------------------------------------------

def amount(x: float, metric: str, signed: bool = True) -> str:
    """+0.42 pp (accuracy-like metrics, in percentage points) or +0.0123 (others)."""
    if x is None or not np.isfinite(x):
        return "n/a"
    text = (f"{x * 100:+.2f} pp" if signed else f"{x * 100:.2f} pp") if percent_metric(metric) \
        else (f"{x:+.4f}" if signed else f"{x:.4f}")
    return text.replace("-", "−")


def _margin_text(margin: float, metric: str) -> str:
    if margin is None or not np.isfinite(margin):
        return ""
    return f"±{margin * 100:g} pp" if percent_metric(metric) else f"±{margin:g}"


def interval_text(r, metric: str) -> str:
    if not np.isfinite(r.low):
        return "no interval"
    return f"95% CI {amount(r.low, metric)} to {amount(r.high, metric)}"



def p_text(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def finding(r, metric: str, family_size: int) -> str:
    """One sentence a reader can paste into a paper (``r``: a row of ``contrast_frame``)."""
    label = ("test " if metric.startswith("test/") else "") + METRIC_LABELS.get(metric, metric)
    cells = [part.split("]")[0] for part in r.formula.split("[")[1:]]
    if len(cells) == 2 and "mean of" not in r.formula:
        what = f"{r.contrast} — {label} of [{cells[0]}] minus [{cells[1]}]"
    else:
        # the arms each cell averages are listed in the table; the sentence names the cells
        cells_only = re.sub(r" = mean of (\d+) arms \{[^}]*\}", r" (\1 arms)", r.formula)
        what = f"{r.contrast} — {label} contrast {cells_only}"
    sample = f"n = {r.n} seed{'s' * (r.n != 1)}" + (f" × {r.n_examples:,} test images" if r.n_examples else "")
    extra = f"; left out: {r.left_out}" if r.left_out else ""
    extra += f"; failed replicates: {r.failed_replicates}" if r.failed_replicates else ""
    if not r.estimable:
        if r.n == 0:
            return f"{what}: no paired seeds ({r.method}{extra}). Verdict: {r.verdict}."
        return (f"{what}: {amount(r.estimate, metric)} ({sample}; {r.method.removeprefix('not estimable: ')}"
                f"{extra}). Verdict: {r.verdict}.")
    sentence = (f"{what}: {amount(r.estimate, metric)} ({interval_text(r, metric)}; {sample}; Holm-adjusted "
                f"p {p_text(r.p_holm)} over {family_size} contrast{'s' * (family_size != 1)}; positive on "
                f"{r.wins} of {r.n} seeds{extra}).")
    if r.n < inference.MIN_VERDICT_N:
        return sentence + f" No verdict at n = {r.n} (fewer than {inference.MIN_VERDICT_N} seeds)."
    sentence += f" Verdict: {r.verdict}"
    if r.verdict.startswith("equivalent") and np.isfinite(r.p_holm) and r.p_holm < stats.ALPHA:
        sentence += " (though not zero)"
    if np.isfinite(r.mde):
        sentence += f"; minimum detectable effect at n = {r.n}: {amount(r.mde, metric, signed=False)}"
    return sentence + "."
