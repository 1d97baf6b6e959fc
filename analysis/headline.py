"""What a report opens with: the planned contrasts (forest plot ``figures/effects.png`` and one
"Findings" sentence each), the best arm by a stated rule, and the marks of arms whose
replicates failed. ``compute`` runs on a loaded study; the rest renders its result.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import arms as arm_rules
from analysis import contrasts, inference, stats
from analysis.load import METRIC_LABELS, Study
from analysis.tables import Table, num, pvalue


@dataclass
class Headline:
    contrasts: pd.DataFrame          # rows: one per contrast (``contrasts.contrast_frame``)
    source: str                      # where the family came from, in words
    margin: float | None             # smallest effect of interest on the primary metric
    failures: pd.DataFrame           # rows: one per arm (``arms.replicate_failures``)
    best_arm: str | None
    best_text: str                   # the rule and what it gave
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> dict[str, str]:
        return arm_rules.failure_texts(self.failures)


def compute(study: Study, scores: pd.DataFrame, summary: pd.DataFrame, metric: str,
            arms: Sequence[str], seeds: Sequence[int], baseline: str,
            alpha: float = stats.ALPHA) -> Headline:
    """The planned contrasts from the parent run's study.json (or, for a run recorded before
    it existed, every arm against the baseline), estimated on the primary metric."""
    notes: list[str] = []
    try:
        never = json.loads(study.parent_tags.get("failed_arms") or "[]")
    except json.JSONDecodeError:
        never = []
    failures = arm_rules.replicate_failures(study.select(stage="classify", phase="replicate"),
                                            arms, seeds, never)
    best, best_text = arm_rules.best_arm(summary, scores, failures, metric,
                                         METRIC_LABELS.get(metric, metric), alpha)
    definition = study.definition()
    if definition and definition.get("contrasts"):
        specs = contrasts.from_definition(definition)
        margin = float(definition.get("equivalence_margin", contrasts.DEFAULT_MARGIN))
        source = (f"the {len(specs)} contrasts the study declares (its study.json on the parent "
                  "run): one Holm family")
    else:
        specs = contrasts.versus_baseline(arms, baseline)
        margin = contrasts.DEFAULT_MARGIN
        source = ("every arm against the baseline: this invocation has no study.json with planned "
                  "contrasts (recorded before they existed), so today's baseline comparisons "
                  f"form the family; smallest effect of interest: the default ±{margin * 100:g} pp")
        notes.append(f"No planned contrasts recorded for this invocation: the Findings compare {source}.")
    correct = {}
    if metric == contrasts.PER_EXAMPLE_METRIC and len(scores):
        ids = set(scores["run_id"])
        runs = study.comparison_runs()
        runs = runs[runs["run_id"].isin(ids)]
        primary = scores[scores["metric"] == metric]
        logged = {(str(a), int(s)): float(v) for a, s, v in zip(primary["arm"], primary["seed"], primary["value"])}
        correct, why = contrasts.correct_per_example(study.evaluations(runs), logged)
        notes += why
    frame = contrasts.contrast_frame(specs, scores, metric, correct, margin, failures=arm_rules.failure_texts(failures),
                                     alpha=alpha) if len(scores) else pd.DataFrame(columns=contrasts.COLUMNS)
    return Headline(frame, source, margin if metric == contrasts.MARGIN_METRIC else None, failures,
                    best, best_text, notes)


# -- tables ------------------------------------------------------------------------------------

def contrasts_table(h: Headline, metric: str) -> Table:
    """rows: one per contrast: estimate, interval, tests, equivalence, power, verdict."""
    rows = []
    for r in h.contrasts.itertuples(index=False):
        rows.append({
            "contrast": r.contrast, "cells (weight [cell] = arms averaged)": r.formula,
            "n seeds × test images": f"{r.n} × {r.n_examples:,}" if r.n_examples else f"{r.n} × (seed level)",
            "estimate [95% CI]": (f"{contrasts.amount(r.estimate, metric)} [{contrasts.amount(r.low, metric)}, "
                                  f"{contrasts.amount(r.high, metric)}]" if r.estimable
                                  else f"{contrasts.amount(r.estimate, metric)} [not estimable]"),
            "p / Holm": f"{pvalue(r.p)} / {pvalue(r.p_holm)}",
            "seed t-test: p / Holm, d_z": f"{pvalue(r.p_seed)} / {pvalue(r.p_seed_holm)}, {num(r.d_z, 2)}",
            "P(A>B)": f"{num(r.p_superiority, 2)} ({r.wins}/{r.n})",
            "TOST p (Holm)": pvalue(r.p_tost_holm),
            "MDE": contrasts.amount(r.mde, metric, signed=False),
            "verdict": r.verdict,
            "failed replicates / left out": "; ".join(x for x in (r.failed_replicates, r.left_out) if x) or "none",
        })
    margin = f"±{h.margin * 100:g} pp" if h.margin else "none declared for this metric"
    note = (f"Family: {h.source}. Estimate = Σ weight × mean of the cell's arms, paired by seed and by "
            "test image; 95% CI from a hierarchical paired bootstrap (seeds and test images resampled "
            "on their own, pairing kept, Student t with Welch-Satterthwaite df: see analysis/inference.py); "
            "p from that interval's t statistic, Holm-adjusted over the family; the seed-level paired "
            "t-test is shown next to it. P(A>B): share of seeds on which the contrast is positive "
            f"(Bouthillier et al. 2021). Smallest effect of interest: {margin}; TOST = two one-sided "
            "tests against it (Holm over the family). MDE: the effect the study could detect at its n "
            f"(α = {stats.ALPHA}, power {inference.POWER}, two-sided). No verdict below "
            f"{inference.MIN_VERDICT_N} seeds; constant differences are not estimable.")
    return Table("planned_contrasts", "Planned contrasts: the study's questions", pd.DataFrame(rows),
                 h.contrasts, note)


def mark_failed_arms(tabs: Sequence[Table], h: Headline) -> list[Table]:
    """Every table: arms with failed replicates get a † after their name, and a note says
    what failed (their statistics use the completed seeds only, never as if complete)."""
    failed = h.failed
    if not failed:
        return list(tabs)
    note = (f"{arm_rules.MARK} failed replicates: " + "; ".join(f"{a}: {t}" for a, t in failed.items())
            + ". Their means and contrasts use the completed seeds only and say so; the failure "
            "rate is in the arms table.")
    out = []
    for t in tabs:
        display = t.display.copy()
        for col in ("arm", "arm_a", "arm_b"):
            if col in display:
                display[col] = [_mark(v, failed) for v in display[col]]
        out.append(Table(t.key, t.title, display, t.data, f"{t.note} {note}".strip()))
    return out


def _mark(value, failed: dict[str, str]):
    name = str(value).removesuffix(" (baseline)")
    if name in failed:
        return f"{name} {arm_rules.MARK}" + (" (baseline)" if str(value).endswith(" (baseline)") else "")
    return value


def with_failures(summary: pd.DataFrame, h: Headline) -> pd.DataFrame:
    """The arms table's CSV rows (one per (arm, metric)) with each arm's replicate failures:
    planned, failed, failure_rate, failure_reasons."""
    cols = h.failures[["arm", "planned", "failed", "failure_rate", "reasons"]].rename(
        columns={"reasons": "failure_reasons"})
    return summary.merge(cols, on="arm", how="left")


def failure_column(h: Headline, arms: Sequence[str]) -> list[str]:
    """Per arm (in ``arms`` order): "0 of 5", "1 of 5 (20%): seed 2: diverged", ..."""
    by = h.failures.set_index("arm") if len(h.failures) else pd.DataFrame()
    out = []
    for arm in arms:
        if arm not in by.index:
            out.append("n/a")
            continue
        r = by.loc[arm]
        if r["text"].startswith("not replicated"):
            out.append(f"{arm_rules.MARK} {r['text']}")
            continue
        done = int(r["completed"] + r["failed"])
        text = f"{int(r['failed'])} of {done}"
        if r["failed"]:
            text = f"{arm_rules.MARK} {text} ({r['failure_rate']:.0%}): {r['reasons']}"
        if r["pending"]:
            text += f"; {int(r['pending'])} pending"
        out.append(text)
    return out


# -- the Findings --------------------------------------------------------------------------------

def findings_markdown(h: Headline, figure: str | None) -> list[str]:
    parts = []
    if figure:
        parts += [f"![Planned contrasts: estimates with 95% intervals]({figure})", ""]
    parts += ["## Findings", ""]
    if h.contrasts.empty:
        parts += ["No contrast can be estimated yet (no completed replicate runs).", ""]
    parts += [f"- {s}" for s in h.contrasts["finding"]]
    parts += ["", f"_Family: {h.source}._", "", h.best_text, ""]
    return parts


def findings_html(h: Headline, figure_src: str | None) -> list[str]:
    e = html.escape
    body = []
    if figure_src:
        body.append(f'<figure id="fig-effects"><img src="{figure_src}" alt="Planned contrasts: estimates '
                    f'with 95% intervals"><figcaption>{e(effects_caption(h))}</figcaption></figure>')
    body.append('<section id="findings"><h2>Findings</h2>')
    if h.contrasts.empty:
        body.append("<p>No contrast can be estimated yet (no completed replicate runs).</p>")
    else:
        body.append("<ul>" + "".join(f"<li>{e(s)}</li>" for s in h.contrasts["finding"]) + "</ul>")
    body.append(f'<p class="note">Family: {e(h.source)}.</p><p>{e(h.best_text)}</p></section>')
    return body


def effects_caption(h: Headline) -> str:
    band = f"; green band: ±{h.margin * 100:g} pp, the smallest effect of interest" if h.margin else ""
    return ("Each planned contrast's estimate (dot) and 95% interval (bar, hierarchical paired bootstrap "
            f"over seeds and test images){band}; black line: no difference. Colour: the verdict.")


def effects_figure(h: Headline, metric: str, study_name: str, out: Path):
    """``figures/effects.png`` as a ``plotting.FigureResult`` (skipped, with the reason, when
    there is nothing to draw)."""
    from analysis.plotting import FigureResult
    from analysis.forest import write_effects_figure

    title = "Planned contrasts (forest plot)"
    if h.contrasts.empty or not h.contrasts["estimate"].notna().any():
        return FigureResult("effects", title, "", None, "no contrast can be estimated yet")
    n = sorted(set(int(x) for x in h.contrasts["n"]))
    heading = (f"{study_name}: planned contrasts on {METRIC_LABELS.get(metric, metric)} "
               f"(n = {n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} seeds)")
    path = write_effects_figure(h.contrasts, metric, out, heading)
    return FigureResult("effects", title, effects_caption(h), path)
