"""Rendering of a study's report: Markdown, one self-contained HTML page, LaTeX tables, from
the tables (``analysis.tables.Table``), the provenance footer and the figures that
``analysis.report`` computed (``a``: an ``analysis.report.Analysis``). Figures come in three
kinds: drawn, skipped (with why), and left out because the study records no input of their
kind (with what a trainable must log to get them).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from analysis import headline, tables
from analysis.load import StudyRecord
from analysis.tables import Table


LEFT_OUT = "Figures left out: the study's records hold no input of their kind. What a trainable must log to get each:"


def status_line(study: StudyRecord) -> str | None:
    """The banner of a partial report, None for a finished study."""
    if not study.is_partial:
        return None
    running = study.running_trials
    what = {"running": "is still running", "interrupted": "was interrupted",
            "failed": "failed before it finished"}.get(
        study.status, f"has study_status={study.status!r}")
    return (f"PARTIAL REPORT: study {study.name!r} {what}"
            + (f"; {running} trial run(s) still running" if running else "")
            + ". Numbers will change; missing cells are listed in the completeness matrix.")


def render_markdown(a, tabs: Sequence[Table], footer: Sequence[tuple[str, str]],
                    figures: Sequence = ()) -> str:
    s = a.study
    parts = [f"# Study report: {s.name}", ""]
    banner = status_line(s)
    if banner:
        parts += [f"> **{banner}**", ""]
    if a.headline is not None:
        effects = next((f for f in figures if f.name == "effects" and f.path is not None), None)
        parts += headline.findings_markdown(a.headline, f"figures/{effects.path.name}" if effects else None)
    parts += [f"Primary metric {a.metric}; baseline arm {a.baseline}; best arm by "
              f"{tables.label(a.metric)}: {a.best_arm or 'n/a'}.", ""]
    for note in a.notes:
        parts += [f"- {note}"]
    if a.notes:
        parts.append("")
    for t in tabs:
        parts += [tables.table_markdown(t), ""]
    shown = [f for f in figures if f.path is not None]
    if shown:
        parts += ["### Figures", ""]
        parts += [f"- `figures/{f.path.name}`: {f.title}" for f in shown]
        parts.append("")
    skipped = [f for f in figures if f.path is None and not f.needs]
    if skipped:
        parts += ["Figures skipped:", ""] + [f"- {f.title}: {f.skipped}" for f in skipped] + [""]
    left_out = [f for f in figures if f.needs]
    if left_out:
        parts += [LEFT_OUT, ""] + [f"- {f.title}: {f.needs}." for f in left_out] + [""]
    parts += ["### Provenance", ""] + [f"- **{k}**: {v}" for k, v in footer]
    return "\n".join(parts) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f0f0f0}.note{color:#555;font-size:12px;max-width:1000px}.banner{background:#fff3cd;border:1px solid #e0b000;padding:.7em}
figure{margin:1.5em 0}figcaption{font-size:13px;color:#444;max-width:1000px}img{max-width:100%;border:1px solid #ddd}
dl.prov dt{font-weight:bold}dl.prov dd{margin:0 0 .4em 1.5em;font-family:monospace;font-size:12px}"""


def render_html(a, tabs: Sequence[Table], footer: Sequence[tuple[str, str]],
                figures: Sequence = (), embed: bool = True) -> str:
    """One page. ``embed``: figures as base64 data URIs (no file next to it is needed)."""
    s = a.study
    e = html.escape
    body = [f"<h1>Study report: {e(s.name)}</h1>"]
    banner = status_line(s)
    if banner:
        body.append(f'<p class="banner"><strong>{e(banner)}</strong></p>')
    effects = next((f for f in figures if f.name == "effects" and f.path is not None), None)
    if a.headline is not None:
        body += headline.findings_html(a.headline, _img_src(effects.path, embed) if effects else None)
    body.append(f"<p>Primary metric <code>{e(a.metric)}</code>; baseline arm <code>{e(a.baseline)}</code>; "
                f"best arm by {e(tables.label(a.metric))}: <code>{e(a.best_arm or 'n/a')}</code>.</p>")
    if a.notes:
        body.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in a.notes) + "</ul>")
    body += [tables.table_html(t) for t in tabs]
    shown = [f for f in figures if f.path is not None and f is not effects]   # effects: at the top
    if shown:
        body.append("<h2>Figures</h2>")
    for f in shown:
        src = _img_src(f.path, embed)
        body.append(f'<figure id="fig-{e(f.name)}"><img src="{src}" alt="{e(f.title)}">'
                    f"<figcaption><strong>{e(f.title)}.</strong> {e(f.caption)}</figcaption></figure>")
    skipped = [f for f in figures if f.path is None and not f.needs]
    if skipped:
        body.append("<h3>Figures skipped</h3><ul>"
                    + "".join(f"<li>{e(f.title)}: {e(f.skipped)}</li>" for f in skipped) + "</ul>")
    left_out = [f for f in figures if f.needs]
    if left_out:
        body.append(f'<p class="note">{e(LEFT_OUT)}</p><ul class="note">'
                    + "".join(f"<li>{e(f.title)}: {e(f.needs)}.</li>" for f in left_out) + "</ul>")
    body.append("<h2>Provenance</h2><dl class=\"prov\">"
                + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in footer) + "</dl>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(s.name)}: study report</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _img_src(path: Path, embed: bool) -> str:
    if embed:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return f"figures/{path.name}"


def render_latex(a, tabs: Sequence[Table], footer: Sequence[tuple[str, str]]) -> str:
    """Table environments to ``\\input`` (needs booktabs), provenance as a comment block."""
    head = [f"% Study report tables: {a.study.name} (generated; do not edit). Needs \\usepackage{{booktabs}}.",
            *[f"% {k}: {v}" for k, v in footer]]
    banner = status_line(a.study)
    if banner:
        head.append(f"% {banner}")
    return "\n".join(head) + "\n\n" + "\n".join(tables.table_latex(t) for t in tabs)
