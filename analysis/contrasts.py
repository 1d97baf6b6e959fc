"""Planned contrasts: the comparisons a study declares (its ``study.json``), estimated on the
paired replicates, one Holm family per study, a verdict and one sentence per contrast.

Frames (columns documented once)

``contrast_frame(...)``   rows: one per contrast
    family ("planned" | "baseline comparisons"), contrast (its name), formula (the cells and
    arms it weighs, each averaged cell naming its arms), metric (the one it compares, with that
    metric's margin and direction), n (paired seeds), seeds, n_examples (paired test examples
    per seed; 0 = seed level only), interval_over ("seeds and test examples" | "seeds"),
    seeds_only_why (why the interval is over seeds only; "" otherwise), left_out (seeds without
    every arm, and why), failed_replicates (arms of the contrast with failed replicates),
    pruned_choice (its arms configured from a tune trial ASHA stopped early),
    interval_covers (the levels of variation the interval counts: tuning, seeds, test examples;
    set by ``analysis.headline``), estimate, low, high (95% interval), se, se_seeds,
    se_examples, df, method, p, p_holm, t_seed, p_seed, p_seed_holm (seed-level paired t-test),
    d_z, p_superiority, wins (seeds with contrast > 0), margin, p_tost, p_tost_holm (equivalence,
    TOST), p_minimal, p_minimal_holm (minimal-effect test: |contrast| > margin), holm_level (alpha /
    m of the family: the level seeds needed plan for), mde, seeds_needed (about how many seeds
    the decision the estimate points to needs), seeds_needed_low, seeds_needed_high (its range over
    the seed variance's 80% interval), seeds_needed_target ("equivalence" | "at least the SESOI"),
    seeds_needed_why (why no number), estimable, verdict_kind (one of ``inference.VERDICTS``, or
    "different" / "no verdict" / "not estimable"), verdict (in words), finding (the sentence).

Other families (``analysis.conditional``) use the same frame: "conditional" (a planned contrast
restricted to one level of a factor it averages over) and "interaction" (the difference of two
such per-level contrasts).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis import stats
from study import inference
from analysis.definition import MetricSpec, metric_spec
from analysis.load import METRIC_LABELS

_PERCENT_METRICS = ("acc", "f1", "precision", "recall", "roc_auc")
EXAMPLES, SEEDS_ONLY = "seeds and test examples", "seeds"     # what an interval resamples


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
    metric: str                      # the metric it compares
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


def from_definition(definition: Mapping, metric: str) -> list[ContrastSpec]:
    """The planned contrasts of a ``study.json`` (study/spec.py ``Study.definition``), each on
    its own ``metric``; a contrast recorded before contrasts named theirs compares ``metric``
    (the report's primary metric)."""
    out = []
    for c in definition.get("contrasts", []):
        terms = tuple(Term(dict(t["cell"]), float(t["weight"]), tuple(t["arms"])) for t in c["terms"])
        weights = {str(a): float(w) for a, w in c["weights"].items()}
        out.append(ContrastSpec(str(c["name"]), terms, weights, str(c.get("metric") or metric)))
    return out


def versus_baseline(arms: Sequence[str], baseline: str, metric: str) -> list[ContrastSpec]:
    """Every arm minus the baseline on ``metric``: the family of a study recorded without study.json."""
    return [ContrastSpec(f"{arm} vs baseline", (Term({"arm": arm}, 1.0, (arm,)), Term({"arm": baseline}, -1.0, (baseline,))),
                         {arm: 1.0, baseline: -1.0}, metric, family="baseline comparisons")
            for arm in arms if arm != baseline]


# -- per-example data ------------------------------------------------------------------------

NO_PREDICTIONS = "no replicate logged per-example predictions (evaluation.json with predictions and targets)"


def correct_per_example(evaluations: Mapping[tuple[str, int], dict]) -> tuple[dict, str]:
    """(arm, seed) -> bool array (prediction == target, test-set order) from each replicate's
    evaluation.json, and, when there is none, why.

    Used only when every evaluation has ``predictions`` and ``targets``, all of one length
    with the same targets (the same test set in the same order); otherwise ``{}`` and the
    reason. Which metrics it pairs per example: ``per_example_values``."""
    if not evaluations:
        return {}, NO_PREDICTIONS
    lacking = sorted(f"{a} seed {s}" for (a, s), ev in evaluations.items()
                     if not ev or "predictions" not in ev or "targets" not in ev)
    if lacking:
        return {}, (f"evaluation.json without per-example predictions ({', '.join(lacking[:3])}"
                    f"{', ...' if len(lacking) > 3 else ''})")
    targets = {k: np.asarray(ev["targets"]) for k, ev in evaluations.items()}
    first = next(iter(targets.values()))
    if any(t.shape != first.shape or not np.array_equal(t, first) for t in targets.values()):
        return {}, "the replicates' test targets differ (not the same test set)"
    return {k: np.asarray(ev["predictions"]) == targets[k] for k, ev in evaluations.items()}, ""


def per_example_values(correct: Mapping[tuple[str, int], np.ndarray], values: pd.DataFrame,
                       metric: str) -> str:
    """"" when every value of ``values`` (rows: one per seed; columns: one per arm) is the share
    of correct predictions of that run (an accuracy, a mean over test examples, whatever its
    name): then the metric is paired per example. Otherwise why it is not."""
    missing = [f"{a} seed {s}" for s in values.index for a in values.columns if (a, int(s)) not in correct]
    if missing:
        return f"no per-example predictions for {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}"
    off = [f"{a} seed {s}" for s in values.index for a in values.columns
           if abs(correct[(a, int(s))].mean() - float(values.loc[s, a])) > 1e-6]
    if off:
        return (f"{metric} is not the share of correct predictions in evaluation.json ({', '.join(off[:2])}"
                f"{', ...' if len(off) > 2 else ''}), so not a mean over test examples")
    return ""


# -- estimation ------------------------------------------------------------------------------

def percent_metric(metric: str) -> bool:
    return any(metric.rsplit("/", 1)[-1].startswith(p) for p in _PERCENT_METRICS)


def contrast_frame(specs: Sequence[ContrastSpec], scores: pd.DataFrame, metrics: Mapping[str, MetricSpec],
                   correct: Mapping[tuple[str, int], np.ndarray] | None = None, no_examples_why: str = NO_PREDICTIONS,
                   failures: Mapping[str, str] | None = None, pruned: Mapping[str, str] | None = None,
                   alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Each contrast on its own metric, with that metric's margin (``metrics``: the declared
    ones; an undeclared metric has none), paired by seed and, where the metric is the share of
    correct predictions in ``correct`` (``per_example_values``), by test example. Holm over
    each family. See the module doc.

    ``scores``: rows: one per (arm, seed, metric) (``StudyRecord.scores``). ``no_examples_why``: why
    ``correct`` is empty. ``failures``: arm -> a description of its failed replicates (marked,
    never averaged away); ``pruned``: arm -> how its configuration came from a pruned tune trial."""
    rows = [_estimate(spec, _wide(scores, spec.metric), metric_spec(spec.metric, metrics), correct or {},
                      no_examples_why if not correct else "", failures or {}) for spec in specs]
    for row, spec in zip(rows, specs):
        row["pruned_choice"] = ", ".join(a for a in spec.weights if a in (pruned or {}))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    for _, idx in frame.groupby("family", sort=False).groups.items():
        for col in ("p", "p_tost", "p_minimal", "p_seed"):
            frame.loc[idx, f"{col}_holm"] = stats.holm(frame.loc[idx, col])
        frame.loc[idx, "holm_level"] = alpha / max(int(frame.loc[idx, "p"].notna().sum()), 1)
    _judge(frame, alpha)
    frame["finding"] = [finding(r, int((frame["family"] == r.family).sum()), metric_spec(r.metric, metrics))
                        for r in frame.itertuples(index=False)]
    return frame[COLUMNS]


COLUMNS = ["family", "contrast", "formula", "metric", "n", "seeds", "n_examples", "interval_over",
           "seeds_only_why", "interval_covers", "left_out", "failed_replicates", "pruned_choice", "estimate", "low",
           "high", "se", "se_seeds", "se_examples", "df", "method", "p", "p_holm", "t_seed", "p_seed", "p_seed_holm",
           "d_z", "p_superiority", "wins", "margin", "p_tost", "p_tost_holm", "p_minimal", "p_minimal_holm",
           "holm_level", "mde", "seeds_needed", "seeds_needed_low", "seeds_needed_high", "seeds_needed_target",
           "seeds_needed_why", "estimable", "verdict_kind", "verdict", "finding"]


def _judge(frame: pd.DataFrame, alpha: float) -> None:
    """Seeds needed (at the family's Holm level, alpha / m) and the verdict of every row, in place."""
    needed = [inference.seeds_needed(r.estimate, r.se_seeds, int(r.n), r.se_examples, int(r.n_examples),
                                     None if pd.isna(r.margin) else r.margin, r.holm_level)
              if r.estimable else None for r in frame.itertuples(index=False)]
    frame["seeds_needed"] = [s.n if s and s.n is not None else math.nan for s in needed]
    frame["seeds_needed_low"] = [s.low if s and s.low is not None else math.nan for s in needed]
    frame["seeds_needed_high"] = [s.high if s and s.high is not None else math.nan for s in needed]
    frame["seeds_needed_target"] = [s.target if s else "" for s in needed]
    frame["seeds_needed_why"] = [s.why if s else "" for s in needed]
    margin = [None if pd.isna(r.margin) else r.margin for r in frame.itertuples(index=False)]
    frame["verdict_kind"] = [
        inference.verdict_kind(int(r.n), bool(r.estimable), r.p_holm, r.p_tost_holm, r.p_minimal_holm, m is not None,
                               alpha) for r, m in zip(frame.itertuples(index=False), margin)]
    frame["verdict"] = [
        inference.verdict(int(r.n), bool(r.estimable), r.p_holm, r.p_tost_holm, m, s, alpha,
                          margin_text(r.margin, r.metric), r.p_minimal_holm)
        for r, m, s in zip(frame.itertuples(index=False), margin, needed)]


def _wide(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """rows: one per seed; columns: one per arm; the metric's values."""
    return scores[scores["metric"] == metric].pivot_table(index="seed", columns="arm", values="value",
                                                          aggfunc="mean")


def _estimate(spec: ContrastSpec, wide: pd.DataFrame, metric: MetricSpec, correct, no_examples_why: str,
              failures) -> dict:
    arms = list(spec.weights)
    absent = [a for a in arms if a not in wide.columns]
    present = wide.reindex(columns=arms)
    complete = present.dropna()                       # rows: seeds where every arm completed
    seeds = [int(s) for s in complete.index]
    left_out = [f"seed {s} (no completed run of {', '.join(a for a in arms if pd.isna(present.loc[s, a]))})"
                for s in present.index if s not in complete.index]
    if absent:
        left_out.insert(0, f"{', '.join(absent)}: no completed replicate" if len(wide.columns)
                        else f"{metric.name} is not logged by the replicate runs")
    weights = np.array([spec.weights[a] for a in arms])
    per_seed = complete.to_numpy(dtype=float) @ weights if len(complete) else np.array([])
    why = no_examples_why or (per_example_values(correct, complete, metric.name) if seeds and not absent else "")
    if seeds and not absent and not why:
        # c: (seeds, examples) -> the contrast per test example, arms paired by example
        c = np.stack([sum(w * correct[(a, s)].astype(float) for a, w in zip(arms, weights)) for s in seeds])
    else:
        c = per_seed
    est = inference.hierarchical_estimate(c)
    low, high = est.low, est.high
    if percent_metric(metric.name) and est.estimable:
        # a contrast of proportions lies in [sum of negative weights, sum of positive weights]
        low, high = max(low, float(weights[weights < 0].sum())), min(high, float(weights[weights > 0].sum()))
    if absent:
        est = inference.not_estimable(0, 0, math.nan, left_out[0])
    seed_test = stats.paired_test(per_seed, np.zeros(len(per_seed))) if len(per_seed) else None
    p_sup, wins, _ = inference.prob_superiority(per_seed)
    margin = metric.margin
    mde = inference.mde(est.se, est.df) if est.estimable else math.nan
    return {
        "family": spec.family, "contrast": spec.name, "formula": spec.formula, "metric": metric.name,
        "n": est.n, "seeds": ",".join(map(str, seeds)), "n_examples": est.n_examples,
        "interval_over": EXAMPLES if est.n_examples else SEEDS_ONLY, "seeds_only_why": "" if est.n_examples else why,
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
        "p_minimal": inference.minimal_effect(est.estimate, est.se, est.df, margin) if margin else math.nan,
        "mde": mde, "estimable": est.estimable, "interval_covers": "",
    }


# -- words -----------------------------------------------------------------------------------

def amount(x: float, metric: str, signed: bool = True) -> str:
    """+0.42 pp (accuracy-like metrics, in percentage points) or +0.0123 (others)."""
    if x is None or not np.isfinite(x):
        return "n/a"
    text = (f"{x * 100:+.2f} pp" if signed else f"{x * 100:.2f} pp") if percent_metric(metric) \
        else (f"{x:+.4f}" if signed else f"{x:.4f}")
    return text.replace("-", "−")


def margin_text(margin: float | None, metric: str) -> str:
    """``±0.5 pp`` (accuracy-like metrics) or ``±0.01``; "" without a margin."""
    if margin is None or not np.isfinite(margin):
        return ""
    return f"±{margin * 100:g} pp" if percent_metric(metric) else f"±{margin:g}"


def metric_phrase(metric: MetricSpec) -> str:
    """How a sentence names a metric: "test accuracy" for one we know by name, else its own name
    ("test/auc"), with "(lower is better)" for a minimised one."""
    known = METRIC_LABELS.get(metric.name)
    text = f"test {known}" if known and metric.name.startswith("test/") else (known or metric.name)
    return text + (" (lower is better)" if metric.minimize else "")


def interval_text(r, metric: str) -> str:
    if not np.isfinite(r.low):
        return "no interval"
    return f"95% CI {amount(r.low, metric)} to {amount(r.high, metric)}"


def p_text(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def subject(r, spec: MetricSpec) -> str:
    """What a Finding is about: the contrast's name and its cells."""
    label = metric_phrase(spec)
    cells = [part.split("]")[0] for part in r.formula.split("[")[1:]]
    if len(cells) == 2 and "mean of" not in r.formula:
        return f"{r.contrast} — {label} of [{cells[0]}] minus [{cells[1]}]"
    # the arms each cell averages are listed in the table; the sentence names the cells
    cells_only = re.sub(r" = mean of (\d+) arms \{[^}]*\}", r" (\1 arms)", r.formula)
    return f"{r.contrast} — {label} contrast {cells_only}"


def finding(r, family_size: int, spec: MetricSpec) -> str:
    """One sentence a reader can paste into a paper (``r``: a row of ``contrast_frame``; ``spec``:
    its metric)."""
    metric, what = r.metric, subject(r, spec)
    sample = f"n = {r.n} seed{'s' * (r.n != 1)}" + (f" × {r.n_examples:,} test examples" if r.n_examples
                                                      else (", interval over seeds" if r.n else ""))
    extra = f"; left out: {r.left_out}" if r.left_out else ""
    extra += f"; failed replicates: {r.failed_replicates}" if r.failed_replicates else ""
    extra += (f"; configured from a tune trial ASHA stopped early: {r.pruned_choice}" if r.pruned_choice else "")
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
    if np.isfinite(r.mde):
        sentence += f"; minimum detectable effect at n = {r.n}: {amount(r.mde, metric, signed=False)}"
    return sentence + "."
