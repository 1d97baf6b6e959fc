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
from analysis import conditional, contrasts, looks, stats
from analysis import tuning as tuning_report
from study import inference
from analysis.definition import MetricSpec, chosen_configs, metric_spec, pruned_choices
from analysis.load import METRIC_LABELS, StudyRecord
from analysis.tables import Table, num, pvalue
from study.records import PHASE_REPLICATE, PHASE_TUNE, STAGE_CLASSIFY, STAGE_UPSTREAM, Tag


@dataclass
class Headline:
    contrasts: pd.DataFrame          # rows: one per contrast (``contrasts.contrast_frame``; ``looks`` columns
                                     # when the study ran sequential looks)
    specs: list[contrasts.ContrastSpec]   # the same contrasts: their arm weights
    source: str                      # where the family came from, in words
    metrics: dict[str, MetricSpec]   # the contrasts' metrics: margin and direction of each
    failures: pd.DataFrame           # rows: one per arm (``arms.replicate_failures``)
    best_arm: str | None
    best_text: str                   # the rule and what it gave
    pruned: dict[str, str] = field(default_factory=dict)   # arm -> its configuration came from a pruned trial
    notes: list[str] = field(default_factory=list)
    conditional: pd.DataFrame = field(default_factory=pd.DataFrame)   # ``conditional.conditional_frame``
    tuning: tuning_report.Diagnostics | None = None
    looks: dict | None = None        # the parent's sequential record (``looks.read``)

    @property
    def failed(self) -> dict[str, str]:
        return arm_rules.failure_texts(self.failures)

    @property
    def shown(self) -> pd.DataFrame:
        """The planned contrasts as the Findings, the forest plot and linked rows show them."""
        return looks.shown(self.contrasts)


def compute(study: StudyRecord, scores: pd.DataFrame, summary: pd.DataFrame, metric: str,
            declared: Mapping[str, MetricSpec], arms: Sequence[str], seeds: Sequence[int], baseline: str,
            alpha: float = stats.ALPHA) -> Headline:
    """The planned contrasts from the parent run's study.json, each on its own metric with that
    metric's declared margin (or, for a run recorded before study.json existed, every arm
    against the baseline on ``metric``), their per-level contrasts, the looks of a sequential
    study, how the tuning went, and the best arm by ``metric``."""
    notes: list[str] = []
    try:
        never = json.loads(study.parent_tags.get(Tag.FAILED_ARMS) or "[]")
    except json.JSONDecodeError:
        never = []
    failures = arm_rules.replicate_failures(study.select(stage=STAGE_CLASSIFY, phase=PHASE_REPLICATE),
                                            arms, seeds, never)
    best, best_text = arm_rules.best_arm(summary, scores, failures, metric, METRIC_LABELS.get(metric, metric),
                                         metric_spec(metric, declared).minimize, alpha)
    definition = study.definition()
    specs, source = _family(definition, arms, baseline, metric, declared, notes)
    pruned = pruned_texts(study)
    correct, why = {}, contrasts.NO_PREDICTIONS
    if len(scores):
        runs = study.comparison_runs()
        scored = runs[runs["run_id"].isin(set(scores["run_id"]))]
        correct, why = contrasts.correct_per_example(study.evaluations(scored))

    def estimate(some: list[contrasts.ContrastSpec]) -> pd.DataFrame:
        return contrasts.contrast_frame(some, scores, declared, correct, why, arm_rules.failure_texts(failures),
                                        pruned, alpha)

    frame = estimate(specs) if len(scores) else pd.DataFrame(columns=contrasts.COLUMNS)
    diagnostics, record = tuning_report.diagnose(study), looks.read(study)
    frame, cond = _beyond_the_family(study, definition, specs, frame, declared, diagnostics, record, estimate, alpha)
    used = {s.metric: metric_spec(s.metric, declared) for s in specs}
    return Headline(frame, specs, source, used, failures, best, best_text, pruned, notes, cond, diagnostics, record)


def _family(definition: Mapping | None, arms: Sequence[str], baseline: str, metric: str,
            declared: Mapping[str, MetricSpec], notes: list[str]) -> tuple[list[contrasts.ContrastSpec], str]:
    """The planned contrasts and where they came from, in words (a note when not from study.json)."""
    if definition and definition.get("contrasts"):
        specs = contrasts.from_definition(definition, metric)
        return specs, (f"the {len(specs)} contrasts the study declares (its study.json on the parent "
                       "run): one Holm family")
    margin = contrasts.margin_text(metric_spec(metric, declared).margin, metric)
    source = ("every arm against the baseline: this invocation has no study.json with planned "
              "contrasts (recorded before they existed), so today's baseline comparisons "
              "form the family; smallest effect of interest: "
              + (f"the default {margin}" if margin else f"none declared for {metric}"))
    notes.append(f"No planned contrasts recorded for this invocation: the Findings compare {source}.")
    return contrasts.versus_baseline(arms, baseline, metric), source


def _beyond_the_family(study: StudyRecord, definition, specs, frame: pd.DataFrame, declared, diagnostics,
                       record: dict | None, estimate, alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The planned frame with what the interval covers, the looks' verdicts (a sequential
    study) and the per-level contrasts in its Findings; and the per-level frame."""
    upstream = bool(study.arms(STAGE_UPSTREAM)) or bool((definition or {}).get("upstreams"))
    frame["interval_covers"] = tuning_report.covers(diagnostics.per_seed, upstream, diagnostics.recorded)
    if record is not None and len(frame):
        frame = looks.columns(frame, record, alpha)
        frame["finding"] = [sequential_finding(r, metric_spec(r.metric, declared)) if r.seq_decision else r.finding
                            for r in frame.itertuples(index=False)]
    if not (len(frame) and definition and definition.get("contrasts")):
        return frame, pd.DataFrame()
    levels = arm_levels(study, definition)
    cond = conditional.conditional_frame(specs, looks.shown(frame), levels, factor_levels(definition, levels),
                                         estimate, alpha)
    if len(cond):
        cond["interval_covers"] = frame["interval_covers"].iloc[0]
        frame["finding"] = [f"{r.finding} {conditional.summary(r.contrast, cond)}".strip()
                            for r in frame.itertuples(index=False)]
    return frame, cond


def arm_levels(study: StudyRecord, definition: Mapping | None) -> dict[str, dict[str, str]]:
    """Arm -> factor -> level: study.json's arms, else the runs' factor tags."""
    if definition and definition.get("arms"):
        return {str(a["name"]): {str(f): str(l) for f, l in a.get("levels", {}).items()} for a in definition["arms"]}
    table = study.arm_levels()
    return {str(r["arm"]): {f: str(r[f]) for f in table.columns if f != "arm"} for _, r in table.iterrows()}


def factor_levels(definition: Mapping | None, levels: Mapping[str, Mapping[str, str]]) -> dict[str, list[str]]:
    """Factor -> its levels in the study's order (study.json), else in the order the arms show them."""
    if definition and definition.get("factors"):
        return {str(f["name"]): [str(l) for l in f.get("levels", [])] for f in definition["factors"]}
    out: dict[str, list[str]] = {}
    for lv in levels.values():
        for f, level in lv.items():
            known = out.setdefault(f, [])
            if level not in known:
                known.append(level)
    return out


def sequential_finding(r, spec: MetricSpec) -> str:
    """The Finding of a contrast the sequential looks analysed: its estimate and interval at the
    look that decided it (or the latest), the boundary, the verdict; the fixed-design numbers
    of every seed in the store follow when the store holds more seeds than that look."""
    sentence = (f"{contrasts.subject(r, spec)}: {contrasts.amount(r.seq_estimate, r.metric)} "
                f"({looks.text(r, r.metric)}). Verdict: {r.verdict}.")
    if r.estimable and r.n != r.seq_n:
        sentence += (f" All {r.n} seeds in the store, not adjusted for the looks: {contrasts.amount(r.estimate, r.metric)}"
                     f" ({contrasts.interval_text(r, r.metric)}).")
    return sentence


def pruned_texts(study: StudyRecord) -> dict[str, str]:
    """Arm -> the tune trials ASHA stopped early that its configuration was chosen from, in words
    (``pruned_sentence`` says what that means), for the arms configured so."""
    tune = study.select(stage=STAGE_CLASSIFY, phase=PHASE_TUNE).set_index("run_id")
    metric = study.parent_tags.get(Tag.METRIC, "the selection metric")
    choices = tuning_report.record(study, STAGE_CLASSIFY) or chosen_configs(study.parent_tags)
    return {arm: "; ".join(_pruned_text(e, tune, metric) for e in entries)
            for arm, entries in pruned_choices(choices).items()}


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
    """rows: one per contrast: estimate, interval, tests, equivalence, power, verdict; after a
    contrast that averages over a factor, its per-level contrasts and their differences
    (``conditional``); the looks of a sequential study in a column of their own. The CSV holds
    every row, the planned ones first."""
    cond = h.conditional
    rows = []
    for r in h.contrasts.itertuples(index=False):
        rows.append(_display_row(r, r.contrast, h.looks is not None))
        if len(cond):
            rows += [_display_row(c, _conditional_label(c), h.looks is not None)
                     for c in cond[cond["conditional_of"] == r.contrast].itertuples(index=False)]
    display = pd.DataFrame(rows)
    if len(h.metrics) == 1 and len(display):
        display = display.drop(columns="metric")          # one metric: the note names it
    note = (f"Family: {h.source}. Estimate = Σ weight × mean of the cell's arms, paired by seed. "
            f"{interval_note(h)} p from that interval's t statistic, Holm-adjusted over the family; the "
            "seed-level paired t-test is shown next to it. P(A>B): share of seeds on which the contrast is "
            f"positive (Bouthillier et al. 2021). {margins_note(h)}; TOST = two one-sided tests against it, "
            "minimal-effect test = the contrast beyond it (both Holm over the family). " + VERDICTS_NOTE
            + " MDE: the effect the study could detect at its n "
            f"(α = {stats.ALPHA}, power {inference.POWER}, two-sided). No verdict below "
            f"{inference.MIN_VERDICT_N} seeds; constant differences are not estimable."
            + (" " + conditional_note() if len(cond) else "") + (" " + looks_note(h) if h.looks else ""))
    data = pd.concat([h.contrasts, cond], ignore_index=True) if len(cond) else h.contrasts
    return Table("planned_contrasts", "Planned contrasts: the study's questions", display, data, note)


VERDICTS_NOTE = (
    "Verdicts, at the Holm-adjusted level: different, at least the SESOI = the minimal-effect test rejects "
    "(the interval lies wholly beyond ±SESOI); different, smaller than the SESOI = the contrast differs from zero "
    "and TOST shows it within ±SESOI; equivalent within ±SESOI = TOST does, and it does not differ from zero; "
    "inconclusive = neither test decides (a contrast that only differs from zero has a sign but no size and says "
    "so). Seeds needed: for the decision the estimate points to (equivalence when |estimate| < SESOI, else at "
    f"least the SESOI), power {inference.POWER} at α / m (Holm's first step) with the true contrast at the "
    f"estimate; the range reruns it at the ends of the seed variance's {inference.PLAN_COVERAGE:.0%} "
    f"chi-square interval, and no number is given below {inference.MIN_PLAN_DF} degrees of freedom.")


def _conditional_label(c) -> str:
    same = f" (= planned “{c.same_as}”)" if c.same_as else ""
    if c.family == conditional.INTERACTION:
        return f"↳ difference {c.factor}: {c.level}{' — they disagree' if bool(c.disagree) else ''}"
    return f"↳ {c.factor}={c.level}{same}"


def _display_row(r, name: str, sequential: bool) -> dict:
    m = r.metric
    row = {
        "contrast": name, "metric": m, "cells (weight [cell] = arms averaged)": r.formula,
        "n seeds × test examples": f"{r.n} × {r.n_examples:,}" if r.n_examples else f"{r.n} × (seed level)",
        "estimate [95% CI]": (f"{contrasts.amount(r.estimate, m)} [{contrasts.amount(r.low, m)}, "
                              f"{contrasts.amount(r.high, m)}]" if r.estimable
                              else f"{contrasts.amount(r.estimate, m)} [not estimable]"),
        "p / Holm": f"{pvalue(r.p)} / {pvalue(r.p_holm)}",
        "seed t-test: p / Holm, d_z": f"{pvalue(r.p_seed)} / {pvalue(r.p_seed_holm)}, {num(r.d_z, 2)}",
        "P(A>B)": f"{num(r.p_superiority, 2)} ({r.wins}/{r.n})",
        "TOST p (Holm)": pvalue(r.p_tost_holm), "minimal-effect p (Holm)": pvalue(r.p_minimal_holm),
        "MDE": contrasts.amount(r.mde, m, signed=False),
    }
    if sequential:
        row["sequential looks"] = looks.text(r, m) if getattr(r, "seq_decision", "") else "—"
    row["verdict"] = r.verdict
    row["failed replicates / left out"] = "; ".join(x for x in (r.failed_replicates, r.left_out) if x) or "none"
    return row


def conditional_note() -> str:
    return ("↳ rows: a contrast that averages over a factor, restricted to each level of it (that factor's "
            "level added to every term that leaves it out, where every term still matches an arm; Holm over every "
            "such per-level contrast that no planned contrast already is), and the difference of two levels' "
            "contrasts (Holm over every such difference). They disagree when such a difference differs from zero "
            "at the Holm-adjusted level (its verdict says whether by at least the SESOI); estimates of opposite sign or differing verdicts without it are not evidence of an "
            "interaction.")


def looks_note(h: Headline) -> str:
    d = h.looks["design"]
    return (f"Sequential looks ({d.get('spending', '?')} spending, looks at {d.get('looks')}, cap "
            f"{d.get('max_seeds')} seeds, α = {d.get('alpha')}): a contrast's verdict, its Finding and the forest "
            "plot use its look's estimate and the interval adjusted for the looks (repeated confidence interval, "
            "simultaneous over the family and the looks); the 95% CI and p columns analyse every seed in the store "
            "as a fixed design, which optional stopping invalidates: descriptive only, as are the per-level "
            "contrasts (↳) that no planned contrast is and their differences.")


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
    covers = frame["interval_covers"].iloc[0] if "interval_covers" in frame else ""
    return " ".join(parts + ([f"The intervals count {covers}."] if covers else []))


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


def footnotes(h: Headline) -> list[str]:
    """The Findings' closing notes: the family, what the intervals count, the looks, the
    tuning's warning and the arms configured from a pruned trial."""
    notes = [f"Family: {h.source}."]
    covers = h.contrasts["interval_covers"].iloc[0] if len(h.contrasts) else ""
    if covers:
        notes.append(f"The intervals count {covers}.")
    if h.looks:
        notes.append(looks_note(h))
    warning = tuning_report.warning(h.tuning) if h.tuning is not None else ""
    return notes + [x for x in (warning, pruned_sentence(h)) if x]


def findings_markdown(h: Headline, figure: str | None) -> list[str]:
    parts = []
    if figure:
        parts += [f"![Planned contrasts: estimates with 95% intervals]({figure})", ""]
    parts += ["## Findings", ""]
    if h.contrasts.empty:
        parts += ["No contrast can be estimated yet (no completed replicate runs).", ""]
    parts += [f"- {s}" for s in h.contrasts["finding"]]
    parts += [""] + [f"_{x}_" for x in footnotes(h)[:1]] + [""]
    for x in footnotes(h)[1:]:
        parts += [x, ""]
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
    notes = footnotes(h)
    body.append(f'<p class="note">{e(notes[0])}</p>')
    body += [f"<p>{e(x)}</p>" for x in notes[1:]]
    body.append(f"<p>{e(h.best_text)}</p></section>")
    return body


def effects_caption(h: Headline) -> str:
    bands = [f"{m} {contrasts.margin_text(spec.margin, m)}" for m, spec in h.metrics.items() if spec.margin]
    band = ("; green band: the smallest effect of interest (" + ", ".join(bands) + ")") if bands else ""
    over = set(h.contrasts["interval_over"]) if len(h.contrasts) else set()
    what = ("hierarchical paired bootstrap over seeds and test examples" if over == {contrasts.EXAMPLES}
            else "paired bootstrap over seeds" if contrasts.EXAMPLES not in over
            else "paired bootstrap over seeds, and over test examples where the table says so")
    if h.looks:
        what = "for a contrast the sequential looks analysed: its look's estimate and the interval adjusted for the looks"
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
    n = sorted(set(int(x) for x in h.shown["n"]))
    on = ", ".join(METRIC_LABELS.get(m, m) for m in h.metrics)
    heading = (f"{study_name}: planned contrasts on {on} "
               f"(n = {n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} seeds)")
    interval = "interval adjusted for the looks" if h.looks else "95% interval"
    path = write_effects_figure(h.shown, out, heading, interval)
    return FigureResult("effects", title, effects_caption(h), path)
