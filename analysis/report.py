"""A study's report: statistics of the loaded study, tables in every format, figures, and one
self-contained ``report.html``.

    study = load_study("ablation_pretraining")
    analysis = analyze(study)               # primary metric: the study's test_metric (test/acc)
    paths = write_report(analysis, Path("reports/ablation_pretraining"))

or in one call (what ``python -m analysis.compare`` and the runner use):
``build_report("ablation_pretraining", output_dir=...)``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import contrasts, headline, overlap, settings, stats, tables, tuning
from analysis.definition import compared_metrics, metric_spec, primary_metric
from analysis.load import DEFAULT_METRICS, AnalysisError, StudyRecord, load_study
from analysis.render import render_html, render_latex, render_markdown
from analysis.tables import Table
from study import records
from study.records import Outcome, PHASE_REPLICATE, PHASE_TUNE, STAGE_CLASSIFY, STAGE_UPSTREAM

FORMATS = ("md", "csv", "html", "latex")


@dataclass
class Analysis:
    """Everything the tables and figures show, computed once from a ``StudyRecord``."""
    study: StudyRecord
    metric: str                          # primary metric (first column, picks the best arm)
    metrics: list[str]                   # the arms table's: primary first, declared, familiar ones logged
    baseline: str
    arms: list[str]                      # classify arms, baseline first
    seeds: list[int]
    scores: pd.DataFrame                 # rows: one per (arm, seed, metric), every test metric logged
    summary: pd.DataFrame                # rows: one per (arm, metric)
    comparison: pd.DataFrame             # rows: one per (metric of ``metrics``, arm != baseline)
    effects: pd.DataFrame | None         # rows: one per (metric, effect term); factorial only
    cell_means: pd.DataFrame | None      # rows: one per (factor pair, level pair); factorial only
    completeness: dict[str, pd.DataFrame]      # stage -> arm x seed matrix
    hyperparameters: dict[str, pd.DataFrame]   # stage -> rows: one per arm
    cost: pd.DataFrame                   # rows: one per (stage, arm) + total
    best_arm: str | None
    alpha: float = stats.ALPHA
    notes: list[str] = field(default_factory=list)
    headline: headline.Headline | None = None  # planned contrasts, failures, best-arm rule
    setting_roles: dict[str, dict[str, str]] = field(default_factory=dict)  # stage -> param -> role
    other_metrics: list[str] = field(default_factory=list)   # the other test/* metrics logged

    @property
    def n_per_arm(self) -> dict[str, int]:
        s = self.summary[self.summary["metric"] == self.metric]
        return dict(zip(s["arm"], s["n"].astype(int)))


def analyze(study: StudyRecord, metric: str | None = None, baseline: str | None = None,
            metrics: Sequence[str] | None = None, alpha: float = stats.ALPHA) -> Analysis:
    """Statistics of a study. ``metric``: the primary one (default: the study's test_metric).
    Raises ``AnalysisError`` for an unknown metric or baseline."""
    definition = study.definition()
    declared = compared_metrics(definition)
    metric = metric or primary_metric(definition)
    has_scores = len(study.comparison_runs()) > 0
    if has_scores:
        study.check_metric(metric)
    shown, other, notes = _metric_columns(study, metric, declared, metrics) if has_scores else ([metric], [], [])
    arms, baseline = _arms(study, baseline)
    seeds = study.seeds(STAGE_CLASSIFY)
    scores = (study.scores(shown + other) if has_scores
              else pd.DataFrame(columns=["arm", "seed", "run_id", "metric", "value"]))
    summary = stats.summarize_arms(scores)
    # the planned contrasts, failed replicates and the best arm by its stated rule
    head = headline.compute(study, scores, summary, metric, declared, arms, seeds, baseline, alpha)
    comparison, effects, cell_means, more = _exploratory(study, scores[scores["metric"].isin(shown)], metric,
                                                         declared, baseline, head, alpha)
    notes += more
    completeness, hyper, roles, more = _settings(study, arms, seeds, definition)
    notes += more
    reused = _reused_pretraining(study)
    if reused:
        notes.append(f"{len(reused)} pretrained autoencoder(s) were reused from earlier runs "
                     f"({', '.join(sorted(reused))}); their cost is not in the cost table.")
    notes += head.notes + ([headline.pruned_sentence(head)] if head.pruned else [])
    return Analysis(study=study, metric=metric, metrics=shown, baseline=baseline, arms=arms,
                    seeds=seeds, scores=scores, summary=summary, comparison=comparison,
                    effects=effects, cell_means=cell_means, completeness=completeness,
                    hyperparameters=hyper, cost=stats.cost_table(study.runs, _pretraining_of(study)),
                    best_arm=head.best_arm, alpha=alpha, notes=notes, headline=head, setting_roles=roles,
                    other_metrics=other)


def _metric_columns(study: StudyRecord, metric: str, declared, requested: Sequence[str] | None
                    ) -> tuple[list[str], list[str], list[str]]:
    """(the arms table's metrics: the primary, the declared ones, then ``requested`` or the
    familiar ``DEFAULT_METRICS``, each where logged; every other test/* metric logged; notes on
    the declared or requested metrics the comparison runs did not log)."""
    logged = set(study.metric_names())
    wanted = list(dict.fromkeys([metric, *declared, *(requested or DEFAULT_METRICS)]))
    shown = [m for m in wanted if m in logged]
    other = sorted(m for m in logged if m.startswith("test/") and m not in shown)
    absent = [m for m in dict.fromkeys([*declared, *(requested or ())]) if m not in logged]
    notes = [f"Declared but not logged by the comparison runs, so not shown: {', '.join(absent)}."] if absent else []
    return shown, other, notes


def _arms(study: StudyRecord, baseline: str | None) -> tuple[list[str], str]:
    """The classify arms, baseline first, and the baseline (``AnalysisError`` when unknown)."""
    arms = study.arms(STAGE_CLASSIFY)
    baseline = baseline or study.baseline_arm
    if baseline is None:
        raise AnalysisError(f"study {study.name!r} names no baseline arm (parent tag baseline_arm, "
                            f"trial tag is_baseline); pass --baseline, one of: {', '.join(arms)}")
    if baseline not in arms:
        raise AnalysisError(f"baseline arm {baseline!r} is not an arm of study {study.name!r}; "
                            f"arms: {', '.join(arms) or '(none yet)'}")
    return [baseline] + [a for a in arms if a != baseline], baseline


def _exploratory(study: StudyRecord, scores: pd.DataFrame, metric: str, declared, baseline: str,
                 head: headline.Headline, alpha: float):
    """(comparisons with the baseline, factorial effects, two-way cell means, notes), each
    comparison a planned contrast also estimates linked to it (``overlap.link``)."""
    notes: list[str] = []
    minimize = {m: metric_spec(m, declared).minimize for m in scores["metric"].unique()}
    if len(scores) and baseline in set(scores["arm"]):
        comparison = stats.compare_to_baseline(scores, baseline, alpha, minimize=minimize)
        comparison = overlap.link(comparison, overlap.difference_weights, head.specs, head.contrasts)
    else:
        comparison = pd.DataFrame(columns=stats.COMPARISON_COLUMNS)
        notes.append(f"The baseline arm {baseline!r} has no completed replicate run yet: no "
                     "differences to it can be computed.")
    effects = cell_means = None
    if study.design == "factorial" and len(scores):
        arm_levels = study.arm_levels()
        factors = [f for f in study.factors if f in arm_levels.columns]
        if factors:
            reference = study.reference_levels()
            effects = stats.factorial_effects(scores, arm_levels, factors, reference, alpha, minimize=minimize)
            effects = overlap.link(effects, overlap.effect_weights, head.specs, head.contrasts)
            cell_means = stats.two_way_cell_means(scores, arm_levels, factors, reference, metric) \
                if len(factors) >= 2 else None
        else:
            notes.append("The parent run says design=factorial but no trial has factor.<name> tags.")
    return comparison, effects, cell_means, notes


def _settings(study: StudyRecord, arms: list[str], seeds: list[int], definition):
    """Per stage: the arm x seed completeness matrix, the settings table and its roles; notes.
    The defaults are the study's trainable's schema as recorded (``settings.recorded_defaults``)."""
    completeness, hyper, roles, notes = {}, {}, {}, []
    for stage in (STAGE_CLASSIFY, STAGE_UPSTREAM):
        stage_arms = arms if stage == STAGE_CLASSIFY else study.arms(STAGE_UPSTREAM)
        if not stage_arms:
            continue
        replicate = study.select(stage=stage, phase=PHASE_REPLICATE)
        completeness[stage] = stats.completeness(replicate, stage_arms,
                                                 seeds if stage == STAGE_CLASSIFY else study.seeds(STAGE_UPSTREAM))
        done = replicate[replicate["outcome"] == Outcome.COMPLETED]
        # meta.* params are the runner's protocol keys (arm, phase, artifact references)
        ignore = {"seed"} | {c.removeprefix("params.") for c in study.runs.columns if c.startswith("params.meta.")}
        defaults = settings.recorded_defaults(definition, stage, replicate)
        if defaults is None:
            notes.append(f"The {stage} stage's trainable did not have its schema defaults recorded with this "
                         "study (a store older than that record): its fixed settings are not compared with defaults.")
        hyper[stage], roles[stage] = settings.settings_table(done, study.select(stage=stage, phase=PHASE_TUNE),
                                                             defaults, ignore=ignore)
        hyper[stage] = hyper[stage].reindex([a for a in stage_arms if a in set(done["arm"])])
    return completeness, hyper, roles, notes


def _pretraining_of(study: StudyRecord) -> dict[str, list[str]]:
    """Classify arm -> the upstream keys its trials load (the runs' ``uses.*`` tags)."""
    out: dict[str, set[str]] = {}
    for _, run in study.select(stage=STAGE_CLASSIFY).iterrows():
        for ref in records.artifact_refs(run).values():
            out.setdefault(run["arm"], set()).add(ref.upstream)
    return {arm: sorted(keys) for arm, keys in out.items()}


def _reused_pretraining(study: StudyRecord) -> dict[str, str]:
    """``key/seed`` -> run id of the parent's ``pretrained_runs`` that are not trials of this
    study invocation (the runner reuses autoencoders across studies by cache key)."""
    own = set(study.runs["run_id"])
    return {f"{key}/{seed}": run_id for (key, seed), run_id in records.upstream_runs(study.parent_tags).items()
            if run_id not in own}


# -- tables and provenance ---------------------------------------------------------------------

def build_tables(a: Analysis) -> list[Table]:
    h = a.headline
    out = [tables.arms_table(a.summary, a.metrics, a.arms, a.baseline,
                             headline.failure_column(h, a.arms) if h is not None else None)]
    if h is not None:
        out[0] = dataclasses.replace(out[0], data=headline.with_failures(a.summary, h))
    if a.other_metrics:
        out.append(tables.other_metrics_table(a.summary, a.other_metrics, a.arms, a.baseline))
    planned = h.shown if h is not None else None
    out += [headline.contrasts_table(h)] if h is not None else []
    out.append(tables.differences_table(a.comparison, a.metrics, a.alpha, a.baseline, planned))
    if a.effects is not None:
        out.append(tables.effects_table(a.effects, a.metrics, a.alpha, planned))
    if a.cell_means is not None:
        out.append(tables.cell_means_table(a.cell_means, a.metric))
    for stage, matrix in a.completeness.items():
        out.append(tables.completeness_table(matrix, stage, a.baseline if stage == STAGE_CLASSIFY else None))
    for stage, params in a.hyperparameters.items():
        out.append(tables.hyperparameters_table(params, stage, a.baseline if stage == STAGE_CLASSIFY else None,
                                                a.setting_roles.get(stage)))
    if h is not None and h.tuning is not None and len(h.tuning.arms):
        out.append(tuning.table(h.tuning, contrasts.percent_metric(a.metric)))
    out.append(tables.cost_display(a.cost))
    if len(a.scores):
        from analysis.publish import models_table      # each arm's runs:/<id>/model
        out.append(models_table(a))
    return headline.mark_failed_arms(out, h) if h is not None else out


def provenance(a: Analysis, command: str | None) -> list[tuple[str, str]]:
    """(label, value) pairs of the provenance footer."""
    s = a.study
    t = s.parent_tags
    n = sorted(set(a.n_per_arm.values()))
    n_text = (f"{n[0]} seed(s) per arm" if len(n) == 1 else f"{n[0]}-{n[-1]} seeds per arm") if n else "no completed replicates"
    commits = sorted(set(s.runs["git_commit"].dropna()) - {t.get("git_commit")}) if len(s.runs) else []
    dirty_trials = int(s.runs["git_dirty"].astype(str).str.lower().eq("true").sum()) if len(s.runs) else 0
    rows = [
        ("study", f"{s.name} (design {s.design}, budget {t.get('budget', '?')}, status {s.status})"),
        ("git commit", f"{t.get('git_commit', 'unknown')} (dirty: {t.get('git_dirty', 'unknown')})"
         + (f"; trials also ran at {', '.join(c[:12] for c in commits)}" if commits else "")
         + (f"; {dirty_trials} trial(s) from a dirty tree" if dirty_trials else "")),
        ("study command", t.get("command", "unknown")),
        ("dataset", f"{t.get('dataset', 'unknown')} (sha256 {t.get('data_sha256', 'unknown')})"),
        ("hardware", t.get("hardware", "unknown")),
        ("wall time", _wall_time(s)),
        ("versions", ", ".join(f"{k} {v}" for k, v in s.versions.items()) or "unknown"),
        ("n", f"{n_text}; seeds {', '.join(map(str, a.seeds)) or 'none'}; metric {a.metric}; "
              f"baseline {a.baseline}; α = {a.alpha}"),
        ("MLflow", f"parent run {s.parent_run_id} in experiment {s.experiment_id} at {s.tracking_uri}"
         + (f"; other invocations of this study: {', '.join(s.other_invocations)}" if s.other_invocations else "")),
        ("report command", command or "analysis.report.build_report (Python API)"),
        ("report written", f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} by analysis at "
                           f"git {_git_commit()}"),
    ]
    return rows


def _wall_time(s: StudyRecord) -> str:
    """The parent run's start to end: the whole study as the user waited for it (with any pause
    before a --resume), next to the trial-seconds its runs took."""
    trial_s = float(s.runs["duration_s"].sum()) if len(s.runs) else 0.0
    if not s.parent_start_ms or not s.parent_end_ms:
        return f"still running; {trial_s / 60:,.1f} trial-minutes so far"
    wall = (s.parent_end_ms - s.parent_start_ms) / 1000
    return (f"{int(wall // 60)} min {int(wall % 60)} s from the study's start to its end "
            f"({trial_s / 60:,.1f} trial-minutes in its runs)")


def _git_commit() -> str:
    """The analysis code's commit, short, and whether its tree had changes."""
    commit, dirty = records.git_state()
    return commit[:7] + (" (dirty tree)" if dirty else "")


# -- writing ---------------------------------------------------------------------------------

@dataclass
class ReportResult:
    output_dir: Path
    markdown: str
    files: list[Path]
    figures: list
    analysis: Analysis


def write_report(a: Analysis, output_dir: Path, formats: Sequence[str] = FORMATS,
                 figures: bool = True, log_figures: bool = True, command: str | None = None,
                 figure_options=None) -> ReportResult:
    """Writes the report files into ``output_dir`` and (``log_figures``) logs the figures to the
    study's parent run under ``figures/``. Returns what was written."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise AnalysisError(f"unknown format(s) {', '.join(unknown)}; formats: {', '.join(FORMATS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tabs = build_tables(a)
    footer = provenance(a, command)
    written: list[Path] = []

    figs = []
    if figures:
        from analysis.figures import FigureOptions, make_figures

        fig_dir = output_dir / "figures"
        for old in fig_dir.glob("*.png"):
            old.unlink()            # a figure skipped this time must not survive from last time
        figs = [] if a.headline is None else [_effects(a, fig_dir)]
        figs += make_figures(a, fig_dir, figure_options or FigureOptions())
        written += [f.path for f in figs if f.path is not None]
        if log_figures and any(f.path for f in figs):
            try:
                a.study.client.log_artifacts(a.study.parent_run_id, str(fig_dir), "figures")
            except Exception as err:  # noqa: BLE001 - the report on disk is still worth having
                a.notes.append(f"The figures could not be logged to the parent run "
                               f"{a.study.parent_run_id}: {type(err).__name__}: {err}")
                print(f"warning: {a.notes[-1]}", file=sys.stderr)

    markdown = render_markdown(a, tabs, footer, figs)
    if "md" in formats:
        written.append(_write(output_dir / "comparison.md", markdown))
    if "csv" in formats:
        for t in tabs:
            written.append(output_dir / f"{t.key}.csv")
            t.data.to_csv(written[-1], index=False)
        written.append(output_dir / "scores.csv")
        a.scores.to_csv(written[-1], index=False)
        written.append(output_dir / "runs.csv")
        a.study.runs.to_csv(written[-1], index=False)
        if a.headline is not None and a.headline.tuning is not None and len(a.headline.tuning.tunings):
            written.append(output_dir / "tunings.csv")          # rows: one per tuning
            a.headline.tuning.tunings.to_csv(written[-1], index=False)
    if "html" in formats:
        written.append(_write(output_dir / "comparison.html", render_html(a, tabs, footer, ())))
        written.append(_write(output_dir / "report.html", render_html(a, tabs, footer, figs)))
    if "latex" in formats:
        written.append(_write(output_dir / "comparison.tex", render_latex(a, tabs, footer)))
    return ReportResult(output_dir, markdown, written, figs, a)


def _effects(a: Analysis, fig_dir: Path):
    """The forest plot of the planned contrasts; a drawing failure costs only this figure."""
    from analysis.plotting import FigureResult

    try:
        return headline.effects_figure(a.headline, a.study.name, fig_dir)
    except Exception as err:  # noqa: BLE001 - as figures._draw: the report goes on
        return FigureResult("effects", "Planned contrasts (forest plot)", "", None,
                            f"failed: {type(err).__name__}: {err}")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def default_output_dir(name: str) -> Path:
    return records.mark_output_folder(records.default_dir("reports")) / name


def build_report(name: str, *, tracking_uri: str | None = None, output_dir: Path | None = None,
                 metric: str | None = None, baseline: str | None = None,
                 formats: Sequence[str] = FORMATS, figures: bool = True,
                 log_figures: bool = True, parent_run_id: str | None = None,
                 budget: str | None = None, command: str | None = None,
                 figure_options=None) -> ReportResult:
    """Load study ``name`` from MLflow and write its report (``reports/<name>/`` by default).

    The entry point for the runner: ``build_report(study.name, tracking_uri=uri)`` after a
    study finishes (or while it runs: the report then says it is partial).
    """
    study = load_study(name, tracking_uri, parent_run_id=parent_run_id, budget=budget)
    analysis = analyze(study, metric=metric, baseline=baseline)
    return write_report(analysis, Path(output_dir) if output_dir else default_output_dir(name),
                        formats=formats, figures=figures, log_figures=log_figures,
                        command=command, figure_options=figure_options)


def command_string(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    return "python -m analysis.compare " + " ".join(shlex.quote(x) for x in argv[1:])
