"""The looks of a sequential study (``--until-decided``): what the runner decided at each look,
read from the parent's ``sequential.json`` ({"design": ``study.sequential.decide``'s "design",
"looks": each look's ``decide`` output, in order; a look may also be recorded as {"look",
"seeds", "statistics", "decision": decide output}}).

With the record, each planned contrast's verdict is the sequential one, in the four verdicts'
words (``verdict``): the fixed-design tests on the seeds in the store do not hold after optional
stopping, the group-sequential boundaries and the repeated interval do. Without it nothing
changes.

``columns(frame, record)`` adds to the planned contrasts (rows: one per contrast):
    seq_decision ("different" | "equivalent" | "inconclusive" | "undecided"), seq_look (the
    look it was decided at, or the latest), seq_looks (looks planned), seq_n (paired seeds
    then), seq_cap (the most seeds the design allows), seq_estimate, seq_low, seq_high (the
    repeated confidence interval at that look: level alpha / m, simultaneous over the family
    and the looks), seq_test ("difference" | "equivalence" | ""), seq_level (the Holm level
    it was tested at), seq_nominal_p, seq_t_critical (the boundary crossed), seq_t, seq_p (the
    look's statistic), seq_boundary_low, seq_boundary_high (the interval at the level the
    boundary was crossed: it excludes 0 for "different" and lies inside +-SESOI for
    "equivalent"; narrower than the repeated interval when Holm had raised the level),
    seq_not_zero (equivalent, and different from zero at that look), seq_next_n (seeds at the
    next look while undecided); and sets ``verdict``.
"""
from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np
import pandas as pd

from analysis.contrasts import amount, margin_text
from analysis.load import StudyRecord
from study import inference, records

FILE = getattr(records, "SEQUENTIAL_FILE", "sequential.json")
SEQ_COLUMNS = ["seq_decision", "seq_look", "seq_looks", "seq_n", "seq_cap", "seq_estimate", "seq_low", "seq_high",
               "seq_test", "seq_level", "seq_nominal_p", "seq_t_critical", "seq_t", "seq_p", "seq_boundary_low",
               "seq_boundary_high", "seq_not_zero", "seq_next_n"]


def read(study: StudyRecord) -> dict | None:
    """The parent's sequential record, each look as ``decide``'s output; None without one."""
    path = study.artifact(study.parent_run_id, FILE)
    try:
        record = json.loads(path.read_text()) if path is not None else None
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, Mapping) or not record.get("looks"):
        return None
    looks = [look.get("decision", look) if "contrasts" not in look else look for look in record["looks"]]
    return {"design": record.get("design") or looks[-1].get("design", {}), "looks": looks}


def columns(frame: pd.DataFrame, record: dict, alpha: float) -> pd.DataFrame:
    """See the module doc. A contrast the record does not name keeps its fixed-design verdict."""
    last = record["looks"][-1]
    design = record["design"]
    out = frame.copy()
    rows = [_columns(last["contrasts"].get(name), last, design) for name in out["contrast"]]
    for col in SEQ_COLUMNS:
        out[col] = [r.get(col, math.nan) if r else math.nan for r in rows]
    out["seq_decision"] = [r["seq_decision"] if r else "" for r in rows]
    out["seq_test"] = [r["seq_test"] if r else "" for r in rows]
    out["verdict"] = [verdict(r, row.margin, row.metric, alpha) if r else row.verdict
                      for r, row in zip(rows, out.itertuples(index=False))]
    out["verdict_kind"] = [kind(r, row.margin) if r else row.verdict_kind
                           for r, row in zip(rows, out.itertuples(index=False))]
    return out


def _columns(entry: Mapping | None, last: Mapping, design: Mapping) -> dict | None:
    if not entry:
        return None
    interval = entry.get("interval") or [None, None]
    boundary = entry.get("boundary") or {}
    crossed = boundary.get("interval") or [None, None]
    return {"seq_decision": entry.get("decision", ""), "seq_look": entry.get("look"),
            "seq_looks": len(design.get("looks") or []), "seq_n": entry.get("n"), "seq_cap": design.get("max_seeds"),
            "seq_estimate": entry.get("estimate"), "seq_low": interval[0], "seq_high": interval[1],
            "seq_test": boundary.get("test", ""), "seq_level": boundary.get("level"),
            "seq_nominal_p": boundary.get("nominal_p"), "seq_t_critical": boundary.get("t_critical"),
            "seq_t": boundary.get("t"), "seq_p": boundary.get("p"),
            "seq_boundary_low": crossed[0], "seq_boundary_high": crossed[1], "seq_not_zero": bool(entry.get("not_zero")),
            "seq_next_n": last.get("next_n") if entry.get("decision") == "undecided" else None}


def kind(r: Mapping, margin: float) -> str:
    """The sequential decision as one of the four verdicts: "different" is "at least the SESOI"
    when the repeated interval (simultaneous over the family and the looks) lies wholly beyond
    +-margin, else inconclusive about the size; "equivalent" with ``not_zero`` is "smaller than
    the SESOI"."""
    decision = r["seq_decision"]
    has_margin = margin is not None and np.isfinite(margin)
    if decision == "equivalent":
        return inference.SMALLER if r["seq_not_zero"] else inference.EQUIVALENT
    if decision == "different":
        if not has_margin:
            return inference.DIFFERENT
        beyond = _finite(r["seq_low"], r["seq_high"]) and (r["seq_low"] > margin or r["seq_high"] < -margin)
        return inference.AT_LEAST if beyond else inference.INCONCLUSIVE
    return decision if decision == "undecided" else inference.INCONCLUSIVE


def verdict(r: Mapping, margin: float, metric: str, alpha: float) -> str:
    """The sequential verdict in words (the fixed design's words where they mean the same)."""
    k = kind(r, margin)
    text = margin_text(margin, metric)
    if k in (inference.AT_LEAST, inference.SMALLER):
        return f"{k} ({text.lstrip('±')})"
    if k == inference.EQUIVALENT:
        return f"equivalent within {text}"
    if k == inference.DIFFERENT:
        return "different (no smallest effect of interest declared for this metric)"
    if k == "undecided":
        return f"undecided — the next look has {_int(r['seq_next_n'])} seeds"
    if r["seq_decision"] == "different":
        return (f"inconclusive — different from zero, but neither at least {text.lstrip('±')} nor within {text} "
                "is shown (sequential looks)")
    return f"inconclusive — undecided at the cap ({_int(r['seq_cap'])} seeds)"


def _finite(*xs) -> bool:
    return all(x is not None and np.isfinite(x) for x in xs)


def _int(x) -> str:
    return f"{int(x)}" if x is not None and np.isfinite(x) else "?"


def text(r, metric: str) -> str:
    """One phrase of a contrast's looks: when and how it was decided, the boundary, the interval
    adjusted for the looks."""
    if not r.seq_decision:
        return "not analysed by the looks"
    at = f"n = {_int(r.seq_n)} (look {_int(r.seq_look)} of {_int(r.seq_looks)}, cap {_int(r.seq_cap)} seeds)"
    interval = (f"interval adjusted for the looks {amount(r.seq_low, metric)} to {amount(r.seq_high, metric)}"
                if _finite(r.seq_low, r.seq_high) else "no interval adjusted for the looks")
    if r.seq_decision in ("different", "equivalent"):
        bound = ("|t|" if r.seq_test == "difference" else "each one-sided t")
        crossed = (f"crossed the {r.seq_test} boundary at Holm level {r.seq_level:.3g} (nominal p "
                   f"{r.seq_nominal_p:.2g}, {bound} ≥ {r.seq_t_critical:.3g}; look p {r.seq_p:.2g}"
                   f"{_at_level(r, metric)})"
                   if _finite(r.seq_level, r.seq_nominal_p, r.seq_t_critical, r.seq_p) else "crossed its boundary")
        return f"decided {r.seq_decision} at {at}: {crossed}; {interval}"
    if r.seq_decision == "undecided":
        return f"undecided at {at}; next look at {_int(r.seq_next_n)} seeds; {interval}"
    return f"cap reached at {at} without crossing a boundary; {interval}"


def _at_level(r, metric: str) -> str:
    """The interval at the level the boundary was crossed (older records lack it)."""
    low, high = getattr(r, "seq_boundary_low", None), getattr(r, "seq_boundary_high", None)
    return f"; interval at that level {amount(low, metric)} to {amount(high, metric)}" if _finite(low, high) else ""


def shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The planned contrasts as the headline shows them: where the looks decided a contrast, its
    estimate, interval and n at that look (what the forest plot and the exploratory rows a
    planned contrast estimates repeat); the fixed-design numbers elsewhere."""
    if "seq_decision" not in frame or frame.empty:
        return frame
    out = frame.copy()
    seq = out["seq_decision"].astype(str) != ""
    for col in ("estimate", "low", "high", "n"):
        out.loc[seq, col] = out.loc[seq, f"seq_{col}"]
    return out
