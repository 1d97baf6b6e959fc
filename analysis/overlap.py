"""Exploratory comparisons that estimate what a planned contrast estimates: the report gives
such a comparison one estimate and one verdict, the planned contrast's.

A comparison with the baseline (``stats.compare_to_baseline``) and a factorial effect
(``stats.factorial_effects``) are weighted sums of arm means, as a planned contrast is
(``contrasts.ContrastSpec.weights``). When the weights are the same on the same metric, or the
same up to the sign (an effect coded against the other reference level), both estimate one
quantity: the exploratory row then shows the planned contrast's estimate and interval, turned
to the row's own sign, and the planned verdict (verdicts do not depend on the sign), so the
report never says "inconclusive" in one table and "better" in the next about the same
difference.

``link(frame, weights_of, specs, planned)`` adds to an exploratory frame (rows: one per
comparison; ``metric`` column): planned_contrast (the planned contrast's name, "" when none
estimates the same), planned_sign (+1 the same orientation, -1 the opposite one, 0 none), and
sets ``verdict`` of a linked row to the planned verdict.
"""
from __future__ import annotations

import json
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.contrasts import ContrastSpec, amount

_TOL = 1e-9


def difference_weights(row) -> dict[str, float]:
    """A row of ``stats.compare_to_baseline``: arm minus baseline."""
    return {str(row.arm): 1.0, str(row.baseline): -1.0}


def effect_weights(row) -> dict[str, float]:
    """A row of ``stats.factorial_effects``: its ``weights`` JSON."""
    return {str(a): float(w) for a, w in json.loads(row.weights or "{}").items()}


def same_contrast(weights: Mapping[str, float], specs: Sequence[ContrastSpec],
                  metric: str) -> tuple[ContrastSpec, int] | None:
    """The planned contrast on ``metric`` with these arm weights, and +1, or with the opposite
    ones, and -1; None when no planned contrast estimates the same."""
    if not weights:
        return None
    for spec in specs:
        if spec.metric != metric or set(spec.weights) != set(weights):
            continue
        for sign in (1, -1):
            if all(abs(sign * spec.weights[a] - w) <= _TOL for a, w in weights.items()):
                return spec, sign
    return None


def link(frame: pd.DataFrame, weights_of: Callable, specs: Sequence[ContrastSpec],
         planned: pd.DataFrame) -> pd.DataFrame:
    """See the module doc. ``planned``: ``contrasts.contrast_frame`` of ``specs``."""
    frame = frame.copy()
    verdicts = planned.set_index("contrast")["verdict"] if len(planned) else pd.Series(dtype=object)
    names, signs = [], []
    for row in frame.itertuples(index=False):
        found = same_contrast(weights_of(row), specs, row.metric)
        names.append(found[0].name if found and found[0].name in verdicts.index else "")
        signs.append(found[1] if names[-1] else 0)
    frame["planned_contrast"], frame["planned_sign"] = names, signs
    linked = frame["planned_contrast"] != ""
    if linked.any():
        frame.loc[linked, "verdict"] = [verdicts[name] for name in frame.loc[linked, "planned_contrast"]]
    return frame


def planned_estimate(name: str, sign: int, planned: pd.DataFrame) -> str:
    """The text an exploratory row shows for the planned contrast ``name``: its estimate and
    interval turned by ``sign``, e.g. ``= −1 × planned "width 64 vs 16": −1.20 pp [−2.10 pp, −0.30 pp]``."""
    r = planned.set_index("contrast").loc[name]
    est, low, high = (sign * r["estimate"], *sorted((sign * r["low"], sign * r["high"])))
    interval = (f" [{amount(low, r['metric'])}, {amount(high, r['metric'])}]"
                if np.isfinite(low) and np.isfinite(high) else " [no interval]")
    return (f"= {'−1 × ' if sign < 0 else ''}planned “{name}”: {amount(est, r['metric'])}{interval} "
            f"(n={int(r['n'])})")
