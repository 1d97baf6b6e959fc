"""How the tune phase went, per arm: the report's "Tuning" table, its warnings and what the
planned contrasts' intervals cover.

A store of a runner that tunes every arm on every replicate seed holds per tuning (one Optuna
search) what it chose and how the search went: the parent's ``tuning-<stage>.json``
(``study.tuning.choose``; label -> arm, seed, params, tune_run_id, val_metric, outcome,
epochs, trials, full_length, failed, first_guess_won, lead, lead_epoch, lead_examples: the
winner's validation lead over the runner-up at the last epoch both reached, the rung where ASHA
stopped the runner-up or the end when both ran to it; a record without lead_epoch measured it
at full length only). An older store
tuned each arm once, on the tune seed, and every replicate seed trained that one choice (the
parent's ``best_configs.<stage>`` tag): the diagnostics then come from its tune runs, and the
intervals leave the tuning out. Upstream stages are tuned once in either.

A tuning *compared at full length* when its chosen trial ran to full length and a second trial
did too. An arm's tuning is **degenerate** when none of its tunings compared at full length:
each had at most one full-length trial or chose a trial ASHA stopped early, so every choice
rests on an early rung of ASHA (where the lead was measured) or on nothing at all (no other
trial scored: the first guess winning with no runner-up is such a case).

``tuning_frame(study)``   rows: one per tuning
    stage, label, arm, seed, params (JSON), val_metric, outcome, epochs, trials, full_length,
    failed, first_guess_won (NaN: not recorded), lead (metric units), lead_epoch (where it was
    measured), lead_examples (validation examples; NaN where the trainable does not log
    ``val/examples``), per_seed

``arm_frame(tunings)``   rows: one per (stage, arm)
    stage, arm, tunings, per_seed (each seed tuned on its own), trials (per tuning, min),
    trials_max, full_length_min, full_length_median, full_length_max, failed (all tunings),
    pruned_choices, first_guess_won (tunings whose first guess won; NaN: not recorded),
    compared (tunings that compared at full length), runner_up (tunings with a lead at all),
    lead_median, lead_min, lead_max (over the tunings with a lead),
    lead_examples_median, lead_examples_min, lead_examples_max, chosen_values (JSON: param ->
    the values chosen, one per tuning), chosen_spread (in words), degenerate, degenerate_why
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from analysis.definition import chosen_configs
from analysis.load import StudyRecord
from analysis.tables import Table
from study import records
from study.records import PHASE_TUNE, STAGE_CLASSIFY, STAGE_UPSTREAM, Outcome, Tag

STAGES = (STAGE_CLASSIFY, STAGE_UPSTREAM)
COLUMNS = ["stage", "label", "arm", "seed", "params", "val_metric", "outcome", "epochs", "trials", "full_length",
           "failed", "first_guess_won", "lead", "lead_epoch", "lead_examples", "per_seed"]


@dataclass
class Diagnostics:
    tunings: pd.DataFrame            # rows: one per tuning (``tuning_frame``)
    arms: pd.DataFrame               # rows: one per (stage, arm) (``arm_frame``)
    per_seed: bool                   # the classify stage tuned every arm on every replicate seed
    recorded: bool = True            # the store records a classify tune phase at all

    @property
    def degenerate(self) -> pd.DataFrame:
        return self.arms[self.arms["degenerate"]] if len(self.arms) else self.arms


def diagnose(study: StudyRecord) -> Diagnostics:
    tunings = tuning_frame(study)
    classify = tunings[tunings["stage"] == STAGE_CLASSIFY]
    return Diagnostics(tunings, arm_frame(tunings), bool(classify["per_seed"].any()), len(classify) > 0)


# -- per tuning ----------------------------------------------------------------------------------

def tuning_frame(study: StudyRecord) -> pd.DataFrame:
    """See the module doc: the parent's record of each stage, else its tune runs."""
    parts = []
    for stage in STAGES:
        chosen = record(study, stage)
        rows = ([_row(stage, label, e, stage == STAGE_CLASSIFY) for label, e in chosen.items()]
                if chosen else _from_runs(study, stage))
        parts += rows
    return pd.DataFrame(parts, columns=COLUMNS)


def record(study: StudyRecord, stage: str) -> dict:
    """The parent's ``tuning-<stage>.json``: label -> what that tuning chose ({} without one)."""
    path = study.artifact(study.parent_run_id, records.tuning_file(stage))
    if path is None and stage == STAGE_UPSTREAM:                     # an older store's name
        path = study.artifact(study.parent_run_id, records.tuning_file("pretrain"))
    try:
        entries = json.loads(path.read_text()) if path is not None else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(k): v for k, v in entries.items() if isinstance(v, Mapping)} if isinstance(entries, Mapping) else {}


def _row(stage: str, label: str, e: Mapping, per_seed: bool) -> dict:
    return {"stage": stage, "label": label, "arm": str(e.get("arm") or label.split("@")[0]), "seed": e.get("seed"),
            "params": json.dumps(e.get("params") or {}, sort_keys=True), "val_metric": _float(e.get("val_metric")),
            "outcome": e.get("outcome"), "epochs": _float(e.get("epochs")), "trials": _float(e.get("trials")),
            "full_length": _float(e.get("full_length")), "failed": _float(e.get("failed")),
            "first_guess_won": _float(e.get("first_guess_won")), "lead": _float(e.get("lead")),
            "lead_epoch": _float(e.get("lead_epoch", e.get("epochs") if e.get("lead") is not None else None)),
            "lead_examples": _float(e.get("lead_examples")), "per_seed": per_seed}


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _from_runs(study: StudyRecord, stage: str) -> list[dict]:
    """An older store: one tuning per arm (on the tune seed), read from its tune runs and the
    parent's ``best_configs.<stage>`` (what it chose; else the best trial, full length first)."""
    tune = study.select(stage=stage, phase=PHASE_TUNE)
    chosen = chosen_configs(study.parent_tags, stage)
    metric = f"metrics.{study.parent_tags.get(Tag.METRIC, 'val/acc') if stage == STAGE_CLASSIFY else 'val/loss'}"
    sign = -1.0 if study.parent_tags.get(Tag.MODE, "max") == "min" or stage != STAGE_CLASSIFY else 1.0
    if metric not in tune:
        tune = tune.assign(**{metric: np.nan})
    rows = [_row(stage, arm, {"arm": arm, **pick}, False) for arm, pick in chosen.items() if arm not in set(tune["arm"])]
    for arm, runs in tune.groupby("arm", sort=False):
        scored = runs[runs["outcome"].isin([Outcome.COMPLETED, Outcome.PRUNED])]
        scored = scored[scored[metric].notna()]
        full = scored[scored["outcome"] == Outcome.COMPLETED].sort_values(metric, ascending=sign < 0)
        pick = chosen.get(str(arm), {})
        best_id = pick.get("tune_run_id") or (full["run_id"].iloc[0] if len(full) else
                                              scored.sort_values(metric, ascending=sign < 0)["run_id"].iloc[0]
                                              if len(scored) else None)
        best = scored[scored["run_id"] == best_id]
        others = full[full["run_id"] != best_id]
        lead = (sign * (best[metric].iloc[0] - others[metric].iloc[0])
                if len(best) and len(others) and best["outcome"].iloc[0] == Outcome.COMPLETED else None)
        entry = {"arm": arm, "seed": runs["seed"].dropna().iloc[0] if runs["seed"].notna().any() else None,
                 "params": pick.get("params", {}), "tune_run_id": best_id,
                 "val_metric": best[metric].iloc[0] if len(best) else pick.get("val_metric"),
                 "outcome": best["outcome"].iloc[0] if len(best) else pick.get("outcome"),
                 "trials": len(runs), "full_length": len(full),
                 "failed": int((runs["outcome"] == Outcome.FAILED).sum()), "lead": lead}
        rows.append(_row(stage, str(arm), entry, False))
    return rows


# -- per arm -------------------------------------------------------------------------------------

def arm_frame(tunings: pd.DataFrame) -> pd.DataFrame:
    """See the module doc."""
    rows = [_arm_row(stage, arm, g) for (stage, arm), g in tunings.groupby(["stage", "arm"], sort=False)]
    return pd.DataFrame(rows, columns=ARM_COLUMNS)


ARM_COLUMNS = ["stage", "arm", "tunings", "per_seed", "trials", "trials_max", "full_length_min",
               "full_length_median", "full_length_max", "failed", "pruned_choices", "first_guess_won", "compared",
               "runner_up",
               "lead_median", "lead_min", "lead_max", "lead_examples_median", "lead_examples_min",
               "lead_examples_max", "chosen_values", "chosen_spread", "degenerate", "degenerate_why"]


def _arm_row(stage: str, arm: str, g: pd.DataFrame) -> dict:
    compared = (g["full_length"] >= 2) & (g["outcome"] == Outcome.COMPLETED)
    full = g["full_length"]
    values = _chosen_values(g["params"])
    first = g["first_guess_won"]
    row = {"stage": stage, "arm": arm, "tunings": len(g), "per_seed": bool(g["per_seed"].any()),
           "trials": g["trials"].min(), "trials_max": g["trials"].max(), "full_length_min": full.min(),
           "full_length_median": full.median(), "full_length_max": full.max(), "failed": g["failed"].sum(min_count=1),
           "pruned_choices": int((g["outcome"] == Outcome.PRUNED).sum()),
           "first_guess_won": first.sum() if first.notna().all() else math.nan, "compared": int(compared.sum()),
           "runner_up": int(g["lead"].notna().sum()),
           "chosen_values": json.dumps(values), "chosen_spread": spread_text(values)}
    for col in ("lead", "lead_examples"):
        lead = g[col].dropna()
        row |= {f"{col}_median": lead.median() if len(lead) else math.nan,
                f"{col}_min": lead.min() if len(lead) else math.nan,
                f"{col}_max": lead.max() if len(lead) else math.nan}
    row["degenerate"] = not compared.any() and bool(full.notna().all())      # unknown without full-length counts
    row["degenerate_why"] = _why(g) if row["degenerate"] else ""
    return row


def _chosen_values(params: pd.Series) -> dict[str, list]:
    """param -> the value each tuning chose (in the tunings' order)."""
    values: dict[str, list] = {}
    for text in params:
        for k, v in json.loads(text or "{}").items():
            values.setdefault(k, []).append(v)
    return values


def spread_text(values: Mapping[str, list]) -> str:
    """``lr 3.1e-4 – 2.2e-3 (×7.1, 5 distinct); batch_size 64 ×3, 128 ×2``."""
    parts = []
    for name, vals in values.items():
        numbers = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(vals) and len(set(numbers)) > 2:
            lo, hi = min(numbers), max(numbers)
            ratio = f"×{hi / lo:.2g}, " if lo > 0 else ""
            parts.append(f"{name} {lo:.3g} – {hi:.3g} ({ratio}{len(set(numbers))} distinct)")
        else:
            counts = pd.Series([f"{v:.3g}" if isinstance(v, float) else str(v) for v in vals]).value_counts()
            parts.append(f"{name} " + ", ".join(f"{v} ×{c}" if len(vals) > 1 else v for v, c in counts.items()))
    return "; ".join(parts)


def _why(g: pd.DataFrame) -> str:
    full, trials = g["full_length"].max(), g["trials"].max()
    if trials == 0:
        return ("no search: one trial per tuning, so nothing to compare: its first point (the first guess, any "
                "parameter it leaves open drawn by the seeded sampler) trained as the choice")
    parts = [f"{'one trial' if trials == 1 else f'at most {int(full)} full-length trial' + 's' * bool(full != 1)} "
             "per tuning"]
    if g["lead"].notna().any() and trials > 1:
        parts.append(f"{int(g['lead'].notna().sum())} of {len(g)} compared the winner with a runner-up at an ASHA "
                     "rung only")
    if (g["outcome"] == Outcome.PRUNED).any():
        parts.append(f"{int((g['outcome'] == Outcome.PRUNED).sum())} of {len(g)} chose an ASHA-stopped trial")
    if g["first_guess_won"].notna().all() and g["first_guess_won"].all():
        parts.append(f"the first guess won {'every one' if len(g) > 1 else 'it'}")
    return f"no tuning compared two trials at full length ({'; '.join(parts)})"


# -- words ---------------------------------------------------------------------------------------

DEFINITION = ("Degenerate: no tuning of the arm compared two trials at full length (each had at most one "
              "full-length trial or chose a trial ASHA stopped early), so every choice rests on an early ASHA rung "
              "or on no comparison at all.")


def covers(per_seed: bool, upstream: bool, recorded: bool = True) -> str:
    """What a planned contrast's interval counts (the report's footnote and ``interval_covers``)."""
    if not recorded:
        return ("the seeds (initialisation, split, order) and the test examples (where paired per example); the store "
                "records no tune phase of the arms, so no tuning is counted")
    if per_seed:
        text = ("the tuning (each seed tuned on its own), the seeds (initialisation, split, order) and the test "
                "examples (where paired per example)")
        return text + ("; not the upstream stages' tuning, done once on the tune seed and shared by every seed"
                       if upstream else "")
    return ("the seeds (initialisation, split, order) and the test examples (where paired per example); it leaves "
            "the tuning out: one tuning per arm, on the tune seed, shared by every seed, so the interval is too "
            "narrow by what another tuning draw would move an arm")


def warning(d: Diagnostics) -> str:
    """The Findings' sentence on degenerate tunings ("" when none was)."""
    bad = d.degenerate
    if bad.empty:
        return ""
    # arms that went the same way are named together
    groups = bad.groupby(["stage", "tunings", "degenerate_why"], sort=False)["arm"].apply(list)
    items = "; ".join(f"{', '.join(arms)} ({stage}, {n} tuning{'s' * (n != 1)}{' each' * (len(arms) > 1)}: "
                      f"{_reason(why)})" for (stage, n, why), arms in groups.items())
    many = len(bad) > 1
    return (f"Tuning was degenerate for {len(bad)} arm{'s' * many}: no tuning of {'them' if many else 'it'} "
            f"compared two trials at full length, so the configuration{'s' * many} {'they' if many else 'it'} "
            f"trained {'were' if many else 'was'} never shown better than another finished one: {items}.")


def _reason(why: str) -> str:
    """``_why``'s text inside the warning, which already says that no tuning compared two trials."""
    prefix = "no tuning compared two trials at full length ("
    return why[len(prefix):-1] if why.startswith(prefix) else why


def table(d: Diagnostics, metric_is_percent: bool) -> Table:
    """rows: one per (stage, arm)."""
    rows = []
    for r in d.arms.itertuples(index=False):
        shared = "" if r.per_seed else " (tune seed, shared by every seed)"
        rows.append({"stage": r.stage, "arm": r.arm, "tunings": f"{r.tunings}{shared}",
                     "trials per tuning": _span(r.trials, r.trials_max),
                     "full-length trials": _span(r.full_length_min, r.full_length_max, r.full_length_median),
                     "first guess won": (f"{int(r.first_guess_won)} of {r.tunings}" if np.isfinite(r.first_guess_won)
                                         else "not recorded"),
                     "winner's lead (validation examples)": _lead(r, metric_is_percent and r.stage == STAGE_CLASSIFY),
                     "chosen values across tunings": (r.chosen_spread or "none recorded") if r.tunings > 1
                     else f"one tuning: {r.chosen_spread or 'none recorded'}",
                     "warning": "degenerate" if r.degenerate else ""})
    note = ("Per tuning (one Optuna search): its trials, those that ran to full length (not stopped by ASHA, not "
            "failed), whether the hand-picked first guess won, and the chosen trial's validation lead over the "
            "runner-up where both were last measured (the end, or the rung where ASHA stopped the runner-up), in "
            "validation examples where the trainable logs val/examples, else in the selection metric's units: "
            "median [min – max] over the tunings that had a runner-up. "
            + ("Every arm of the classify stage is tuned on every replicate seed; upstream stages once, on the "
               "tune seed. " if d.per_seed else "This store tuned every arm once, on the tune seed, and every "
               "replicate seed trained that one choice. ") + DEFINITION)
    return Table("tuning", "Tuning: how each arm's search went", pd.DataFrame(rows), d.arms, note)


def _span(low, high, median=math.nan) -> str:
    if not np.isfinite(low):
        return "not recorded"
    text = f"{low:g}" if low == high else f"{low:g}–{high:g}"
    return text + (f" (median {median:g})" if np.isfinite(median) and low != high else "")


def _lead(r, percent: bool) -> str:
    if r.runner_up == 0:
        return "not recorded" if not np.isfinite(r.full_length_max) else "no runner-up"
    where = ("at full length" if r.compared == r.runner_up == r.tunings
             else f"{r.runner_up} of {r.tunings} had a runner-up, {r.compared} at full length")
    of = f" ({where})"
    if np.isfinite(r.lead_examples_median):
        return _spread(r.lead_examples_median, r.lead_examples_min, r.lead_examples_max, "{:g}") + of
    scale, unit = (100.0, " pp") if percent else (1.0, "")
    return (_spread(r.lead_median * scale, r.lead_min * scale, r.lead_max * scale, "{:.2f}") + unit + of
            + " (no val/examples logged)")


def _spread(median: float, low: float, high: float, fmt: str) -> str:
    """``3 [1 – 5]``: the median and range over tunings; one value when they agree."""
    if low == high:
        return fmt.format(median)
    return f"{fmt.format(median)} [{fmt.format(low)} – {fmt.format(high)}]"
