"""What a report opens with: the planned contrasts (forest plot ``figures/effects.png`` and one
"Findings" sentence each), the best arm by a stated rule, and the marks of arms whose
replicates failed. ``compute`` runs on a loaded study; the rest renders its result.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from analysis import arms as arm_rules
from analysis import contrasts, stats
from study import inference
from analysis.definition import MetricSpec, chosen_configs, metric_spec, pruned_choices
from analysis.load import METRIC_LABELS, Study
from analysis.tables import Table, num, pvalue
from study import records
from study.records import STAGE_CLASSIFY, Tag


@dataclass
class Headline:
    contrasts: pd.DataFrame          # rows: one per contrast (``contrasts.contrast_frame``)
    specs: list[contrasts.ContrastSpec]   # the same contrasts: their arm weights
    source: str                      # where the family came from, in words
    metrics: dict[str, MetricSpec]   # the contrasts' metrics: margin and direction of each
    failures: pd.DataFrame           # rows: one per arm (``arms.replicate_failures``)
    best_arm: str | None
    best_text: str                   # the rule and what it gave
    pruned: dict[str, str] = field(default_factory=dict)   # arm -> its configuration came from a pruned trial
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> dict[str, str]:
        return arm_rules.failure_texts(self.failures)


def compute(study: Study, scores: pd.DataFrame, summary: pd.DataFrame, metric: str,
            declared: Mapping[str, MetricSpec], arms: Sequence[str], seeds: Sequence[int], baseline: str,
            alpha: float = stats.ALPHA) -> Headline:
    """The planned contrasts from the parent run's study.json, each on its own metric with that
    metric's declared margin (or, for a run recorded before study.json existed, every arm
    against the baseline on ``metric``), and the best arm by ``metric``."""
    notes: list[str] = []
    try:
        never = json.loads(study.parent_tags.get(Tag.FAILED_ARMS) or "[]")
    except json.JSONDecodeError:
        never = []
    failures = arm_rules.replicate_failures(study.select(stage="classify", phase="replicate"),
                                            arms, seeds, never)
    best, best_text = arm_rules.best_arm(summary, scores, failures, metric, METRIC_LABELS.get(metric, metric),
                                         metric_spec(metric, declared).minimize, alpha)
    definition = study.definition()
    if definition and definition.get("contrasts"):
        specs = contrasts.from_definition(definition, metric)
        source = (f"the {len(specs)} contrasts the study declares (its study.json on the parent "
                  "run): one Holm family")
    else:
        specs = contrasts.versus_baseline(arms, baseline, metric)
        margin = contrasts.margin_text(metric_spec(metric, declared).margin, metric)
        source = ("every arm against the baseline: this invocation has no study.json with planned "
                  "contrasts (recorded before they existed), so today's baseline comparisons "
                  "form the family; smallest effect of interest: "
                  + (f"the default {margin}" if margin else f"none declared for {metric}"))
        notes.append(f"No planned contrasts recorded for this invocation: the Findings compare {source}.")
    pruned = pruned_texts(study)
    correct, why = {}, contrasts.NO_PREDICTIONS
    if len(scores):
        runs = study.comparison_runs()
        scored = runs[runs["run_id"].isin(set(scores["run_id"]))]
        correct, why = contrasts.correct_per_example(study.evaluations(scored))
    frame = (contrasts.contrast_frame(specs, scores, declared, correct, why, arm_rules.failure_texts(failures),
                                      pruned, alpha)
             if len(scores) else pd.DataFrame(columns=contrasts.COLUMNS))
    used = {s.metric: metric_spec(s.metric, declared) for s in specs}
    return Headline(frame, specs, source, used, failures, best, best_text, pruned, notes)


def pruned_texts(study: Study) -> dict[str, str]:
    """Arm -> the tune trials ASHA stopped early that its configuration was chosen from, in words
    (``pruned_sentence`` says what that means), for the arms configured so."""
    tune = study.select(stage="classify", phase="tune").set_index("run_id")
    metric = study.parent_tags.get(Tag.METRIC, "the selection metric")
    choices = _tuning_record(study) or chosen_configs(study.parent_tags)
    return {arm: "; ".join(_pruned_text(e, tune, metric) for e in entries)
            for arm, entries in pruned_choices(choices).items()}


def _tuning_record(study: Study) -> dict:
    """The parent's record of one tuning per (arm, seed), where the runner writes one; else {}."""
    name = getattr(records, "tuning_file", None)      # runners that tune each arm per seed
    path = study.artifact(study.parent_run_id, name(STAGE_CLASSIFY)) if name else None
    try:
        return json.loads(path.read_text()) if path is not None else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _pruned_text(choice: Mapping, tune: pd.DataFrame, metric: str) -> str:
    run_id = str(choice.get("tune_run_id", ""))
    epoch = choice.get("epochs")
    if epoch is None and "metrics.epoch" in tune:
        epoch = tune["metrics.epoch"].get(run_id)
    at = f" at epoch {int(epoch)}" if epoch is not None and pd.notna(epoch) else ""
    seed = f" (seed {choice['seed']})" if choice.get("seed") is not None else ""
    score = choice.get("val_metric")
    there = f"; {metric} {score:.4g} there" if isinstance(score, (int, float)) else ""
    return f"tune trial {run_id[:8]}{seed}, stopped by ASHA{at}{there}"


# -- tables ------------------------------------------------------------------------------------

def contrasts_table(h: Headline) -> Table:
    """rows: one per contrast: estimate, interval, tests, equivalence, power, verdict."""
    rows = []
    for r in h.contrasts.itertuples(index=False):
        m = r.metric
        rows.append({
            "contrast": r.contrast, "metric": m, "cells (weight [cell] = arms averaged)": r.formula,
            "n seeds × test examples": f"{r.n} × {r.n_examples:,}" if r.n_examples else f"{r.n} × (seed level)",
            "estimate [95% CI]": (f"{contrasts.amount(r.estimate, m)} [{contrasts.amount(r.low, m)}, "
                                  f"{contrasts.amount(r.high, m)}]" if r.estimable
                                  else f"{contrasts.amount(r.estimate, m)} [not estimable]"),
            "p / Holm": f"{pvalue(r.p)} / {pvalue(r.p_holm)}",
            "seed t-test: p / Holm, d_z": f"{pvalue(r.p_seed)} / {pvalue(r.p_seed_holm)}, {num(r.d_z, 2)}",
            "P(A>B)": f"{num(r.p_superiority, 2)} ({r.wins}/{r.n})",
            "TOST p (Holm)": pvalue(r.p_tost_holm),
            "MDE": contrasts.amount(r.mde, m, signed=False),
            "verdict": r.verdict,
            "failed replicates / left out": "; ".join(x for x in (r.failed_replicates, r.left_out) if x) or "none",
        })
    display = pd.DataFrame(rows)
    if len(h.metrics) == 1 and len(display):
        display = display.drop(columns="metric")          # one metric: the note names it
    note = (f"Family: {h.source}. Estimate = Σ weight × mean of the cell's arms, paired by seed. "
            f"{interval_note(h)} p from that interval's t statistic, Holm-adjusted over the family; the "
            "seed-level paired t-test is shown next to it. P(A>B): share of seeds on which the contrast is "
            f"positive (Bouthillier et al. 2021). {margins_note(h)}; TOST = two one-sided tests against it "
            "(Holm over the family). MDE: the effect the study could detect at its n "
            f"(α = {stats.ALPHA}, power {inference.POWER}, two-sided). No verdict below "
            f"{inference.MIN_VERDICT_N} seeds; constant differences are not estimable.")
    return Table("planned_contrasts", "Planned contrasts: the study's questions", display, h.contrasts, note)


_EXAMPLES_NOTE = ("95% CI from a hierarchical paired bootstrap over seeds and test examples (each level "
                  "resampled on its own, pairing kept, Student t with Welch-Satterthwaite df: see "
                  "study/inference.py)")
_SEEDS_NOTE = "95% CI from a paired bootstrap over seeds (Student t, seeds − 1 df)"


def interval_note(h: Headline) -> str:
    """What each contrast's interval resamples, and why some only resample seeds."""
    frame = h.contrasts[h.contrasts["n"] > 0] if len(h.contrasts) else h.contrasts
    if frame.empty:
        return f"Intervals: {_EXAMPLES_NOTE} where per-example predictions pair the arms, else {_SEEDS_NOTE}."
    over_examples = frame[frame["interval_over"] == contrasts.EXAMPLES]
    seeds_only = frame[frame["interval_over"] != contrasts.EXAMPLES]
    parts = []
    if len(over_examples):
        which = ("every contrast" if seeds_only.empty
                 else f"contrasts on {', '.join(dict.fromkeys(over_examples['metric']))}")
        parts.append(f"For {which}: {_EXAMPLES_NOTE}.")
    if len(seeds_only):
        which = "every contrast" if over_examples.empty else ", ".join(seeds_only["contrast"])
        why = "; ".join(dict.fromkeys(w for w in seeds_only["seeds_only_why"] if w))
        parts.append(f"Over seeds only for {which}" + (f", because {why}" if why else "") + f": {_SEEDS_NOTE}.")
    return " ".join(parts)


def margins_note(h: Headline) -> str:
    """The smallest effect of interest of each metric the contrasts compare."""
    texts = [f"{m}: {contrasts.margin_text(spec.margin, m) or 'none declared'}"
             + (", lower is better" if spec.minimize else "") for m, spec in h.metrics.items()]
    return "Smallest effect of interest (declared per metric in the study): " + ("; ".join(texts) or "none")


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

def pruned_sentence(h: Headline) -> str:
    """One sentence on the arms configured from a pruned tune trial ("" when none was)."""
    if not h.pruned:
        return ""
    return ("Configured from a tune trial that ASHA stopped early, so never trained to full length in the tune "
            "phase (the choice rests on a partial learning curve): "
            + "; ".join(f"{arm} ({text})" for arm, text in h.pruned.items()) + ".")


def findings_markdown(h: Headline, figure: str | None) -> list[str]:
    parts = []
    if figure:
        parts += [f"![Planned contrasts: estimates with 95% intervals]({figure})", ""]
    parts += ["## Findings", ""]
    if h.contrasts.empty:
        parts += ["No contrast can be estimated yet (no completed replicate runs).", ""]
    parts += [f"- {s}" for s in h.contrasts["finding"]]
    parts += ["", f"_Family: {h.source}._", ""]
    parts += [pruned_sentence(h), ""] if h.pruned else []
    return parts + [h.best_text, ""]


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
    body.append(f'<p class="note">Family: {e(h.source)}.</p>')
    body += [f"<p>{e(pruned_sentence(h))}</p>"] if h.pruned else []
    body.append(f"<p>{e(h.best_text)}</p></section>")
    return body


def effects_caption(h: Headline) -> str:
    bands = [f"{m} {contrasts.margin_text(spec.margin, m)}" for m, spec in h.metrics.items() if spec.margin]
    band = ("; green band: the smallest effect of interest (" + ", ".join(bands) + ")") if bands else ""
    over = set(h.contrasts["interval_over"]) if len(h.contrasts) else set()
    what = ("hierarchical paired bootstrap over seeds and test examples" if over == {contrasts.EXAMPLES}
            else "paired bootstrap over seeds" if contrasts.EXAMPLES not in over
            else "paired bootstrap over seeds, and over test examples where the table says so")
    panels = "; one panel per metric" if len(h.metrics) > 1 else ""
    return (f"Each planned contrast's estimate (dot) and 95% interval (bar, {what}){band}; black line: no "
            f"difference{panels}. Colour: the verdict.")


def effects_figure(h: Headline, study_name: str, out: Path):
    """``figures/effects.png`` as a ``plotting.FigureResult`` (skipped, with the reason, when
    there is nothing to draw)."""
    from analysis.plotting import FigureResult
    from analysis.forest import write_effects_figure

    title = "Planned contrasts (forest plot)"
    if h.contrasts.empty or not h.contrasts["estimate"].notna().any():
        return FigureResult("effects", title, "", None, "no contrast can be estimated yet")
    n = sorted(set(int(x) for x in h.contrasts["n"]))
    on = ", ".join(METRIC_LABELS.get(m, m) for m in h.metrics)
    heading = (f"{study_name}: planned contrasts on {on} "
               f"(n = {n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} seeds)")
    path = write_effects_figure(h.contrasts, out, heading)
    return FigureResult("effects", title, effects_caption(h), path)
