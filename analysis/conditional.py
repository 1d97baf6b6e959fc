"""Conditional contrasts: a planned contrast that averages over a factor, shown level by level,
and whether its per-level contrasts disagree (an interaction the average hides).

A term of a planned contrast averages over factor F when its cell leaves F out and its arms
hold two levels of F or more. The contrast restricted to level L of F adds F=L to every term
that leaves F out (a term that names F keeps its own level); it exists only where every term
still matches an arm, and is shown only when two levels or more exist. Such a per-level
contrast is a contrast like any other (``contrasts.contrast_frame``: the same interval,
tests and verdicts), in the family "conditional", Holm over every per-level contrast of the
report that no planned contrast already estimates; one that a planned contrast estimates (the
same arm weights, either sign) shows that contrast's row: one computation, one verdict.

The disagreement rule: the per-level contrasts of F disagree when the difference of two of
them (level j minus level i: an interaction contrast, estimated the same way, in the family
"interaction", Holm over every such difference in the report) differs from zero at the
Holm-adjusted level (its difference test; 3 seeds or more). Its own verdict then says whether
that interaction is at least the SESOI (the average hides it), smaller than it, or of a size
not settled. Estimates of opposite sign, or one level decided and another not, without such a
difference are said, and said not to be evidence of an interaction: a difference in
significance is not a significant difference (Gelman & Stern 2006).

``conditional_frame(specs, planned, arm_levels, factor_levels, estimate)``   rows: one per
    per-level contrast and per difference, each parent's rows together: the columns of
    ``contrasts.COLUMNS`` plus conditional_of (the planned contrast), factor, level ("10%", or
    "10% minus 100%" for a difference), same_as (the planned contrast a per-level one is,
    "" when none), disagree (difference rows: True when it differs from zero at the
    Holm-adjusted level; "" on per-level rows).
"""
from __future__ import annotations

import itertools
from typing import Callable, Mapping, Sequence

import pandas as pd

from analysis.contrasts import COLUMNS, ContrastSpec, Term, amount, interval_text, p_text
from analysis.overlap import same_contrast
from study import inference

CONDITIONAL, INTERACTION = "conditional", "interaction"
EXTRA = ["conditional_of", "factor", "level", "same_as", "disagree"]


def averaged_factors(spec: ContrastSpec, arm_levels: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The factors some term of ``spec`` averages over (its cell leaves them out, its arms hold
    two levels or more), in the order of the first arm's levels."""
    factors = list(next(iter(arm_levels.values()), {}))
    return [f for f in factors
            if any(f not in t.cell and len({arm_levels[a].get(f) for a in t.arms if a in arm_levels}) > 1
                   for t in spec.terms)]


def per_level(spec: ContrastSpec, factor: str, levels: Sequence[str],
              arm_levels: Mapping[str, Mapping[str, str]]) -> list[tuple[str, ContrastSpec]]:
    """(level, ``spec`` restricted to it) for each level of ``factor`` where every term still
    matches an arm."""
    out = []
    for level in levels:
        terms = []
        for t in spec.terms:
            arms = t.arms if factor in t.cell else tuple(a for a in t.arms if arm_levels.get(a, {}).get(factor) == level)
            if not arms:
                break
            terms.append(t if factor in t.cell else Term({**t.cell, factor: level}, t.weight, arms))
        else:
            out.append((level, ContrastSpec(f"{spec.name} | {factor}={level}", tuple(terms), _weights(terms),
                                            spec.metric, CONDITIONAL)))
    return out


def difference(parent: str, factor: str, low: tuple[str, ContrastSpec], high: tuple[str, ContrastSpec]) -> ContrastSpec:
    """The per-level contrast at ``high``'s level minus the one at ``low``'s: terms that both
    share cancel."""
    minus = [Term(t.cell, -t.weight, t.arms) for t in low[1].terms]
    shared = [t for t in high[1].terms if any(_opposite(t, m) for m in minus)]
    terms = [t for t in high[1].terms if t not in shared] + [m for m in minus if not any(_opposite(t, m) for t in shared)]
    return ContrastSpec(f"{parent}: {factor}={high[0]} minus {factor}={low[0]}", tuple(terms), _weights(terms),
                        high[1].metric, INTERACTION)


def _opposite(a: Term, b: Term) -> bool:
    return dict(a.cell) == dict(b.cell) and a.arms == b.arms and abs(a.weight + b.weight) < 1e-12


def _weights(terms: Sequence[Term]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for t in terms:
        for arm in t.arms:
            weights[arm] = weights.get(arm, 0.0) + t.weight / len(t.arms)
    return {a: w for a, w in weights.items() if abs(w) > 1e-12}


def conditional_frame(specs: Sequence[ContrastSpec], planned: pd.DataFrame,
                      arm_levels: Mapping[str, Mapping[str, str]], factor_levels: Mapping[str, Sequence[str]],
                      estimate: Callable[[list[ContrastSpec]], pd.DataFrame], alpha: float = inference.ALPHA
                      ) -> pd.DataFrame:
    """See the module doc. ``estimate``: specs -> ``contrasts.contrast_frame`` of them (the
    report's scores, metrics and ``alpha`` bound in)."""
    plan: list[tuple[str, str, str, ContrastSpec, tuple[ContrastSpec, int] | None]] = []
    for spec in specs:
        for factor in averaged_factors(spec, arm_levels):
            levels = per_level(spec, factor, factor_levels.get(factor, ()), arm_levels)
            if len(levels) < 2:
                continue
            for level, cond in levels:
                plan.append((spec.name, factor, level, cond, same_contrast(cond.weights, specs, cond.metric)))
            for low, high in itertools.combinations(levels, 2):
                plan.append((spec.name, factor, f"{high[0]} minus {low[0]}", difference(spec.name, factor, low, high), None))
    if not plan:
        return pd.DataFrame(columns=[*COLUMNS, *EXTRA])
    own = estimate([p[3] for p in plan if p[4] is None]).set_index("contrast")
    rows = []
    for parent, factor, level, cond, same in plan:
        row = _planned_row(planned, cond.name, *same) if same else own.loc[cond.name].to_dict() | {"contrast": cond.name}
        rows.append({**row, "conditional_of": parent, "factor": factor, "level": level,
                     "same_as": same[0].name if same else "",
                     "disagree": _significant(row, alpha) if cond.family == INTERACTION else ""})
    return pd.DataFrame(rows).reindex(columns=[*COLUMNS, *EXTRA])


def _significant(row: Mapping, alpha: float) -> bool:
    """The difference test rejects at the Holm-adjusted level (with a verdict: n >= 3)."""
    return (row["verdict_kind"] not in (inference.NO_VERDICT, inference.NOT_ESTIMABLE)
            and bool(pd.notna(row["p_holm"])) and row["p_holm"] < alpha)


def _planned_row(planned: pd.DataFrame, name: str, spec: ContrastSpec, sign: int) -> dict:
    """The planned contrast's row as the per-level contrast ``name`` (turned by ``sign``)."""
    row = planned.set_index("contrast").loc[spec.name].to_dict()
    if sign < 0:
        row |= {"estimate": -row["estimate"], "low": -row["high"], "high": -row["low"], "d_z": -row["d_z"],
                "t_seed": -row["t_seed"], "p_superiority": 1 - row["p_superiority"], "wins": row["n"] - row["wins"]}
    return {**row, "contrast": name, "family": CONDITIONAL}


# -- words ---------------------------------------------------------------------------------------

def summary(parent: str, frame: pd.DataFrame) -> str:
    """The sentences the Finding of ``parent`` adds: its per-level contrasts, factor by factor,
    and whether they disagree ("" when it averages over no factor)."""
    own = frame[frame["conditional_of"] == parent] if len(frame) else frame
    return " ".join(_factor_sentence(g) for _, g in own.groupby("factor", sort=False))


def _factor_sentence(rows: pd.DataFrame) -> str:
    levels = rows[rows["family"] == CONDITIONAL]
    diffs = rows[rows["family"] == INTERACTION]
    factor = str(rows["factor"].iloc[0])
    parts = [f"{factor}={r.level} {amount(r.estimate, r.metric)} ({_short(r)})" for r in levels.itertuples(index=False)]
    text = f"Per level of {factor}: " + "; ".join(parts) + "."
    judged = diffs[diffs["verdict_kind"] != inference.NO_VERDICT]
    if judged.empty:
        return text + " Whether they disagree is not judged below 3 seeds."
    split = judged[judged["disagree"].astype(bool)]
    if len(split):
        size = set(split["verdict_kind"])
        what = (f"the average hides an interaction with {factor}" if inference.AT_LEAST in size or inference.DIFFERENT
                in size else "an interaction smaller than the SESOI" if size == {inference.SMALLER}
                else "an interaction whose size relative to the SESOI is not settled")
        return text + " They disagree: " + "; ".join(_difference_text(r) for r in split.itertuples(index=False)) + \
            f" — {what}."
    kinds = set(levels["verdict_kind"])
    signs = {1 if e > 0 else -1 for e in levels["estimate"].dropna() if e != 0}
    if (judged["verdict_kind"] == inference.EQUIVALENT).all():
        return text + f" They agree within the margin ({'; '.join(_difference_text(r) for r in judged.itertuples(index=False))})."
    if len(kinds) > 1 or len(signs) > 1:
        what = "differ in sign" if len(signs) > 1 else "have different verdicts"
        return (text + f" They {what}, but no difference between them is significant ("
                + "; ".join(_difference_text(r) for r in judged.itertuples(index=False))
                + f"): no evidence that the contrast depends on {factor}.")
    return text


def _short(r) -> str:
    words = r.verdict_kind if r.verdict_kind not in (inference.NO_VERDICT,) else f"no verdict at n = {r.n}"
    if r.same_as:
        words += f"; planned “{r.same_as}”"
    return f"{interval_text(r, r.metric)}, {words}"


def _difference_text(r) -> str:
    return (f"{r.level} is {amount(r.estimate, r.metric)} ({interval_text(r, r.metric)}, Holm-adjusted p "
            f"{p_text(r.p_holm)}; {r.verdict_kind})")
