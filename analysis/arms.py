"""Per-arm bookkeeping the verdicts depend on: failed (diverged) replicates, and the rule that
picks the report's best arm.

``replicate_failures(...)``   rows: one per arm
    arm, planned (seeds the study planned), completed, failed (seeds whose replicate failed and
    none completed), pending (neither yet: running, interrupted, missing), failure_rate
    (failed / (completed + failed); 1.0 for an arm whose every tune trial failed, so that it
    was never replicated), reasons (short: "diverged" or the failure reason), text (one phrase,
    empty when nothing failed)
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis import stats
from study import inference
from study.records import Outcome

MARK = "†"     # appended to the name of an arm with failed replicates, in every table


def _short_reason(reason) -> str:
    text = str(reason or "").strip()
    low = text.lower()
    if "diverg" in low or " nan" in low or " inf" in low:
        return "diverged"
    return (text[:80] + "…") if len(text) > 80 else (text or "failed")


def replicate_failures(runs: pd.DataFrame, arms: Sequence[str], seeds: Sequence[int],
                       never_replicated: Sequence[str] = ()) -> pd.DataFrame:
    """See the module doc. ``runs``: the classify stage's replicate runs (all outcomes);
    ``never_replicated``: the parent's ``failed_arms`` (no tune trial produced the metric)."""
    rows = []
    for arm in arms:
        mine = runs[runs["arm"] == arm]
        completed, failed, reasons = [], [], []
        # groups: one per seed; its attempts
        for seed, g in mine.groupby("seed"):
            outcomes = set(g["outcome"])
            if Outcome.COMPLETED in outcomes:
                completed.append(int(seed))
            elif "failed" in outcomes:
                failed.append(int(seed))
                why = g.loc[g["outcome"] == "failed", "failure_reason"].iloc[-1]
                reasons.append(f"seed {int(seed)}: {_short_reason(why)}")
        planned = len(seeds)
        if arm in never_replicated and not completed and not failed:
            rate, text = 1.0, "not replicated: every tune trial failed"
        else:
            done = len(completed) + len(failed)
            rate = len(failed) / done if done else math.nan
            text = (f"failed on {len(failed)} of {done} seeds ({'; '.join(reasons)})" if failed else "")
        rows.append({"arm": arm, "planned": planned, "completed": len(completed), "failed": len(failed),
                     "pending": max(planned - len(completed) - len(failed), 0), "failure_rate": rate,
                     "reasons": "; ".join(reasons), "text": text})
    return pd.DataFrame(rows, columns=["arm", "planned", "completed", "failed", "pending",
                                       "failure_rate", "reasons", "text"])


def failure_texts(failures: pd.DataFrame) -> dict[str, str]:
    """arm -> its failure phrase, for the arms with failed replicates only."""
    return {r.arm: r.text for r in failures.itertuples(index=False) if r.text}


# -- the best arm ------------------------------------------------------------------------------

BEST_RULE = ("the arm with the {best} mean {label} over seeds among the arms none of whose "
             "replicates failed (an arm that diverged on some seed cannot be best); the arms whose "
             "paired difference to it is not significant (paired t-test over seeds, Holm over the "
             "comparisons with it, α = {alpha}) are listed as not distinguishable from it; with fewer "
             "than {min_n} seeds no arm is called best")


def best_arm(summary: pd.DataFrame, scores: pd.DataFrame, failures: pd.DataFrame, metric: str,
             label: str, minimize: bool, alpha: float = stats.ALPHA) -> tuple[str | None, str]:
    """(the arm the figures show, one paragraph: the rule and what it gave). ``minimize``: lower
    is better on ``metric``.

    ``summary``: rows: one per (arm, metric) with mean and n (``stats.summarize_arms``)."""
    rule = BEST_RULE.format(best="lowest" if minimize else "highest", label=label, alpha=alpha,
                            min_n=inference.MIN_VERDICT_N)
    s = summary[summary["metric"] == metric].dropna(subset=["mean"])
    if s.empty:
        return None, f"Best arm: none yet (no completed replicate). Rule: {rule}."
    failed = set(failures.loc[failures["failure_rate"] > 0, "arm"]) if len(failures) else set()
    candidates = s[~s["arm"].isin(failed)]
    if candidates.empty:
        candidates = s
        rule += "; here every arm has a failed replicate, so all are candidates"
    ranked = candidates.sort_values("mean", ascending=minimize)
    best = str(ranked["arm"].iloc[0])
    n = int(ranked["n"].iloc[0])
    if n < inference.MIN_VERDICT_N:
        return best, (f"Best arm: none called at n = {n} (fewer than {inference.MIN_VERDICT_N} seeds); "
                      f"the figures show {best}, the {'lowest' if minimize else 'highest'} mean. Rule: {rule}.")
    # wide: rows: one per seed; columns: one per candidate arm
    wide = scores[scores["metric"] == metric].pivot_table(index="seed", columns="arm", values="value")
    others = [str(a) for a in ranked["arm"].iloc[1:]]
    p = [stats.paired_test(wide[best].to_numpy(), wide[a].to_numpy()).p_t for a in others]
    adjusted = stats.holm(p)
    tied = [a for a, q in zip(others, adjusted) if not (np.isfinite(q) and q < alpha)]
    text = f"Best arm: {best} (n = {n})"
    text += (f"; not distinguishable from it: {', '.join(tied)}" if tied
             else "; every other candidate is significantly behind it")
    return best, f"{text}. Rule: {rule}."


def mark(arm: str, failures: Mapping[str, str]) -> str:
    return f"{arm} {MARK}" if arm in failures else arm
