"""Display tables (strings, "mean ± 95% CI (n=5)") from the statistics frames, and their
rendering as Markdown, HTML and LaTeX. The numeric frames themselves go to CSV unchanged."""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from study.inference import MIN_VERDICT_N
from analysis.load import METRIC_LABELS
from analysis.overlap import planned_estimate
from study.records import Outcome


@dataclass(frozen=True)
class Table:
    key: str                  # file stem of its CSV: ``<key>.csv``
    title: str
    display: pd.DataFrame     # strings, for Markdown / HTML / LaTeX
    data: pd.DataFrame        # numbers, for CSV
    note: str = ""            # one paragraph under the table


# -- formatting -------------------------------------------------------------------------------

def label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def num(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def mean_ci(mean: float, low: float, high: float, n: int, digits: int = 4, signed: bool = False) -> str:
    """``0.9812 ± 0.0040 (n=5)``; with fewer than two seeds ``0.9812 ± n/a (n=1)``."""
    if n == 0 or math.isnan(mean):
        return "no data (n=0)"
    m = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if n < 2 or math.isnan(low):
        return f"{m} ± n/a (n={n})"
    return f"{m} ± {(high - low) / 2:.{digits}f} (n={n})"


def pvalue(p: float, significant: bool | None = None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    return text if significant is None or significant else f"{text} n.s."


def seconds(s: float) -> str:
    if s is None or math.isnan(s):
        return "n/a"
    return f"{s:,.0f} s" if s < 3600 else f"{s:,.0f} s ({s / 3600:.2f} h)"


# -- the tables -------------------------------------------------------------------------------

def arms_table(summary: pd.DataFrame, metrics: Sequence[str], arms: Sequence[str],
               baseline: str, failed: Sequence[str] | None = None) -> Table:
    """rows: one per arm; columns: one per metric, ``mean ± CI (n)``; ``failed``: per arm (in
    ``arms`` order) its failed replicates, shown next to the means."""
    display = pd.DataFrame(index=pd.Index([_arm_name(a, baseline) for a in arms], name="arm"))
    by = summary.set_index(["arm", "metric"])
    for m in metrics:
        display[label(m)] = [mean_ci(*by.loc[(a, m), ["mean", "low", "high"]], int(by.loc[(a, m), "n"]))
                             if (a, m) in by.index else "no data (n=0)" for a in arms]
    if failed is not None:
        display["failed replicates"] = list(failed)
    return Table("comparison_arms", "Test metrics per arm: mean ± 95% CI over seeds (t-interval)",
                 display.reset_index(), summary,
                 "Only completed replicate runs of the classify stage count (one per arm and seed); "
                 "an arm's failed (diverged) replicates are counted next to its mean, not averaged away.")


def other_metrics_table(summary: pd.DataFrame, metrics: Sequence[str], arms: Sequence[str],
                        baseline: str) -> Table:
    """rows: one per metric the comparison runs logged beyond the arms table's; columns: one per
    arm, ``mean ± CI (n)``."""
    by = summary.set_index(["arm", "metric"])
    display = pd.DataFrame({"metric": [label(m) for m in metrics]})
    for a in arms:
        display[_arm_name(a, baseline)] = [
            mean_ci(*by.loc[(a, m), ["mean", "low", "high"]], int(by.loc[(a, m), "n"]))
            if (a, m) in by.index else "no data (n=0)" for m in metrics]
    return Table("comparison_arms_other", "Other test metrics per arm: mean ± 95% CI over seeds (t-interval)",
                 display, summary[summary["metric"].isin(metrics)],
                 "Every other test/* metric the replicate runs logged, as the arms table shows its metrics. "
                 "The study declares no smallest effect of interest for these and no contrast on them: no "
                 "verdict.")


def _linked(r) -> bool:
    """A row ``overlap.link`` tied to a planned contrast."""
    return bool(getattr(r, "planned_contrast", ""))


def _planned_cells(r, planned: pd.DataFrame, estimate: str, tests: Sequence[str]) -> dict[str, str]:
    """The statistics cells of an exploratory row a planned contrast estimates: its estimate."""
    return {estimate: planned_estimate(r.planned_contrast, r.planned_sign, planned),
            **{t: "see planned" for t in tests}}


def _effect_cells(r, alpha: float) -> dict[str, str]:
    """The statistics cells of a factorial effect: estimate, d_z, Holm-adjusted p of each test."""
    def holm_p(p):
        return pvalue(p, p < alpha if r.n >= MIN_VERDICT_N else None) if r.n >= 2 else "n/a"
    return {"estimate ± 95% CI": (mean_ci(r.estimate, r.low, r.high, r.n, signed=True) if r.averaged_over
                                  else "not estimable: a cell of the contrast is not in the design"),
            "d_z": num(r.d_z, 2) if r.n >= 2 else f"n/a (n={r.n})",
            "paired t: Holm p": holm_p(r.p_t_holm),
            "Wilcoxon: Holm p": holm_p(r.p_wilcoxon_holm) if _wilcoxon_ok(r) else _CANNOT.format(n=r.n)}


_CANNOT = "cannot reject at n={n}"


def _wilcoxon_ok(r) -> bool:
    return bool(getattr(r, "wilcoxon_can_reject", True))


def wilcoxon_column(display: pd.DataFrame, frame: pd.DataFrame, column: str, alpha: float) -> tuple[pd.DataFrame, str]:
    """The display without its Wilcoxon column when no row of ``frame`` can reject, and the
    note that says why (cells of rows that cannot reject say so themselves)."""
    if "wilcoxon_can_reject" not in frame or frame.empty or column not in display:
        return display, ""
    ns = sorted({int(n) for n in frame["n"] if n >= 1})
    can = frame["wilcoxon_can_reject"].astype(bool)
    if can.all():
        return display, ""
    if can.any():
        return display, (" Wilcoxon cells that say 'cannot reject': the exact test's smallest two-sided p at that n, "
                         f"2/2^n, is not below α = {alpha} (or, after Holm, α / m for every row of the metric).")
    smallest = ", ".join(f"{2 / 2 ** n:.3g} at n = {n}" for n in ns)
    return display.drop(columns=column), (
        f" The Wilcoxon signed-rank column is left out: its smallest attainable two-sided p ({smallest}) "
        f"cannot fall below α = {alpha} after Holm's correction, so it could never reject here.")


def differences_table(comparison: pd.DataFrame, metrics: Sequence[str], alpha: float,
                      baseline: str, planned: pd.DataFrame | None = None) -> Table:
    """rows: one per (metric, arm != baseline); a row that a planned contrast estimates too
    (``overlap.link``) shows that contrast's estimate and verdict."""
    rows = []
    for m in metrics:
        for r in comparison[comparison["metric"] == m].itertuples(index=False):
            if _linked(r):
                rows.append({"metric": label(m), "arm": r.arm,
                             **_planned_cells(r, planned, "Δ vs baseline ± 95% CI",
                                              ("d_z", "paired t: p / Holm", "Wilcoxon: p / Holm")),
                             "verdict": r.verdict})
                continue
            if r.n < 2:
                p_t = p_w = dz = f"n/a (n={r.n})"
            else:
                judged = r.n >= MIN_VERDICT_N          # below it, not even "n.s."
                p_t = f"{pvalue(r.p_t)} / {pvalue(r.p_t_holm, r.p_t_holm < alpha if judged else None)}"
                p_w = (f"{pvalue(r.p_wilcoxon)} / "
                       f"{pvalue(r.p_wilcoxon_holm, r.p_wilcoxon_holm < alpha if judged else None)}"
                       if _wilcoxon_ok(r) else _CANNOT.format(n=r.n))
                dz = num(r.d_z, 2)
            rows.append({"metric": label(m), "arm": r.arm,
                         "Δ vs baseline ± 95% CI": mean_ci(r.diff, r.low, r.high, r.n, signed=True),
                         "d_z": dz, "paired t: p / Holm": p_t, "Wilcoxon: p / Holm": p_w,
                         "verdict": r.verdict})
    display, wilcoxon = wilcoxon_column(
        pd.DataFrame(rows, columns=["metric", "arm", "Δ vs baseline ± 95% CI", "d_z", "paired t: p / Holm",
                                    "Wilcoxon: p / Holm", "verdict"]),
        comparison[comparison["metric"].isin(metrics)], "Wilcoxon: p / Holm", alpha)
    return Table("comparison_differences",
                 f"Exploratory: differences to the baseline arm ({baseline}), paired by seed",
                 display, comparison,
                 f"Δ = arm − baseline over the seeds both completed. d_z = mean(Δ)/sd(Δ). Holm's "
                 f"correction runs over the arms compared on one metric, separately per test; "
                 f"verdict from the Holm-adjusted paired t-test at α = {alpha} "
                 f"(lower is better for a metric the study declares so, and, undeclared, for losses); n.s. = "
                 f"not significant; no verdict below 3 pairs; "
                 f"constant differences are not estimable. Exploratory: not the study's planned "
                 f"questions (those are in the planned contrasts)." + wilcoxon
                 + _LINKED_NOTE * bool(comparison.get("planned_contrast", pd.Series(dtype=str)).astype(bool).any()))


_LINKED_NOTE = (" A row marked '= planned' is a difference a planned contrast estimates: it shows that "
                "contrast's estimate, interval and verdict (one computation; see the planned contrasts).")


def effects_table(effects: pd.DataFrame, metrics: Sequence[str], alpha: float,
                  planned: pd.DataFrame | None = None) -> Table:
    """rows: one per (metric, main effect or two-way interaction term); an effect that a planned
    contrast estimates too (``overlap.link``) shows that contrast's estimate and verdict."""
    rows = []
    for m in metrics:
        for r in effects[effects["metric"] == m].itertuples(index=False):
            if r.effect == "interaction":
                (la, lb), (ra, rb) = r.level.split(" x "), r.reference.split(" x ")
                contrast = f"({la} − {ra}) × ({lb} − {rb})"
            else:
                contrast = f"{r.level} − {r.reference}"
            numbers = (_planned_cells(r, planned, "estimate ± 95% CI", ("d_z", "paired t: Holm p", "Wilcoxon: Holm p"))
                       if _linked(r) else _effect_cells(r, alpha))
            rows.append({"metric": label(m), "effect": r.effect, "factor": r.factor, "contrast": contrast, **numbers,
                         "averaged over": (("none (no other factor)" if r.averaged_cells == "no other factor"
                                            else f"{r.averaged_over} cell(s): {r.averaged_cells}")
                                           if r.averaged_over else "nothing: not in design"),
                         "verdict": r.verdict})
    display, wilcoxon = wilcoxon_column(pd.DataFrame(rows), effects[effects["metric"].isin(metrics)],
                                        "Wilcoxon: Holm p", alpha)
    return Table("factorial_effects", "Exploratory: main effects and two-way interactions of the factorial design",
                 display, effects,
                 "Main effect of a level = per seed, the mean over the other factors' levels of "
                 "(cell at the level − cell at the reference level); interaction (a × b) = "
                 "[cell(a,b) − cell(a0,b)] − [cell(a,b0) − cell(a0,b0)] from the two-way cell "
                 "means. Only combinations of the other factors where every cell of the contrast "
                 "exists are averaged over (declared-invalid cells are skipped) and named; an "
                 "interaction whose reference cell is invalid is coded against the first levels "
                 "that complete a valid 2 × 2. CIs and tests over seeds; Holm over all effects of one metric. "
                 f"Verdict from the Holm-adjusted paired t-test at α = {alpha}: better or worse for a main effect, "
                 "different (from zero) for an interaction, whose sign depends on the levels it is coded against."
                 + wilcoxon + _LINKED_NOTE * bool(effects.get("planned_contrast", pd.Series(dtype=str)).astype(bool).any()))


def cell_means_table(cells: pd.DataFrame, metric: str) -> Table:
    rows = [{"factors": f"{r.factor_a} x {r.factor_b}", "cell": f"{r.level_a} x {r.level_b}",
             label(metric): mean_ci(r.mean, r.low, r.high, r.n),
             "averaged over": f"{r.averaged_over} cell(s)" if r.averaged_over else "not in design"}
            for r in cells.itertuples(index=False)]
    return Table("factorial_cell_means", f"Two-way cell means of {label(metric)} (over seeds)",
                 pd.DataFrame(rows), cells)


def completeness_table(matrix: pd.DataFrame, stage: str, baseline: str | None) -> Table:
    display = matrix.copy()
    display.index = [_arm_name(a, baseline) for a in matrix.index]
    display.index.name = "arm"
    display.columns = [f"seed {s}" for s in matrix.columns]
    missing = int((~matrix.isin([Outcome.COMPLETED])).to_numpy().sum())
    return Table(f"completeness_{stage}", f"Completeness of the {stage} replicates (arm × seed)",
                 display.reset_index(), matrix.reset_index(),
                 f"{matrix.size - missing} of {matrix.size} cells completed"
                 + (f"; {missing} not completed: those seeds are left out of that arm's statistics "
                    f"and of its pairing with the baseline." if missing else "."))


def hyperparameters_table(params: pd.DataFrame, stage: str, baseline: str | None,
                          roles: dict[str, str] | None = None) -> Table:
    """``roles``: param -> "factor", "tuned" or "fixed ≠ default (...)", shown in the header."""
    display = params.astype(object).where(params.notna(), "n/a").map(_short_number)
    display.index = [_arm_name(a, baseline) for a in params.index]
    display.index.name = "arm"
    note = ("The scientific settings of each arm and the values its tune phase chose for the "
            "nuisance hyperparameters (params the tune trials varied); params fixed for every "
            "arm are not shown.")
    if roles is not None:
        display.columns = [f"{c} ({roles[c]})" if c in roles else c for c in display.columns]
        note = ("Per arm: the scientific settings (factor), the values its tune phase chose (tuned), "
                "and every fixed setting that differs from the trainable's default or, for the "
                "optimizer's own arguments (momentum, weight decay), from PyTorch's default for that "
                "optimizer ('unused by' where the arm's optimizer has no such argument). Run plumbing "
                "(seed, device, data paths) is left out.")
    return Table(f"hyperparameters_{stage}",
                 f"Configuration of the {stage} replicate runs: factors, tuned values, non-default settings",
                 display.reset_index(), params.reset_index(), note)


def _short_number(value):
    """``0.00033894336065768647`` -> ``0.0003389`` (4 significant digits); others unchanged."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return value
    if x.is_integer() or not math.isfinite(x):
        return value
    return f"{x:.4g}"


def cost_display(cost: pd.DataFrame) -> Table:
    rows = [{"stage": r.stage, "arm": r.arm,
             "tune trials (pruned)": f"{r.tune_trials} ({r.tune_pruned})",
             "tune wall / GPU": f"{seconds(r.tune_wall_s)} / {seconds(r.tune_gpu_s)}",
             "replicates": r.replicate_runs,
             "replicate wall / GPU": f"{seconds(r.replicate_wall_s)} / {seconds(r.replicate_gpu_s)}",
             "total wall": seconds(r.wall_s), "total GPU": seconds(r.gpu_s),
             "GPU with its pretraining": (seconds(r.gpu_with_pretraining_s)
                                          if r.gpu_with_pretraining_s != r.gpu_s else ""),
             "estimated": r.estimated_runs}
            for r in cost.itertuples(index=False)]
    display = pd.DataFrame(rows)
    if not (cost["gpu_with_pretraining_s"] != cost["gpu_s"]).any():
        display = display.drop(columns="GPU with its pretraining")   # no arm builds on pretraining
    return Table("cost", "Cost per arm and in total (tune phase with pruned trials, replicates, pretraining)",
                 display, cost,
                 "Wall and GPU seconds from each run's cost/wall_seconds and cost/gpu_seconds "
                 "metrics; 'estimated' counts runs that did not log them (pruned, failed or still "
                 "running), whose cost is taken from the MLflow start/end times × gpus_per_trial. "
                 "'GPU with its pretraining' adds the whole cost of the pretraining an arm builds "
                 "on (shared by several arms, so it counts once per arm there and once in the total).")


def _arm_name(arm: str, baseline: str | None) -> str:
    return f"{arm} (baseline)" if arm == baseline else str(arm)


# -- rendering --------------------------------------------------------------------------------

def to_markdown(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, cols)) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def table_markdown(t: Table) -> str:
    parts = [f"### {t.title}", "", to_markdown(t.display) if len(t.display) else "(empty)"]
    if t.note:
        parts += ["", f"_{t.note}_"]
    return "\n".join(parts)


def table_html(t: Table) -> str:
    body = (t.display.to_html(index=False, escape=True, border=0, na_rep="")
            if len(t.display) else "<p>(empty)</p>")
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return f'<section id="{t.key}"><h3>{html.escape(t.title)}</h3>{body}{note}</section>'


_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "α": r"$\alpha$", "−": "-", "×": r"$\times$",
                  "<": r"$<$", ">": r"$>$", "→": r"$\to$", "≤": r"$\leq$", "†": r"$\dagger$",
                  "—": "---"}


def table_latex(t: Table) -> str:
    frame = t.display if len(t.display) else pd.DataFrame({"": ["(empty)"]})
    # pandas escapes the cells but not the caption
    caption = re.sub(r"([&%$#_{}])", r"\\\1", t.title)
    tex = frame.to_latex(index=False, escape=True, caption=caption, label=f"tab:{t.key}", na_rep="")
    for symbol, macro in _LATEX_SYMBOLS.items():
        tex = tex.replace(symbol, macro)
    return tex
