"""The report's headline figure: a forest plot of the planned contrasts (``figures/effects.png``).

One row per contrast: the estimate (dot) and its 95% interval (bar), the zero line, and the
equivalence band (± the smallest effect of interest of the contrast's metric); the colour is the
verdict (red: different, at least the SESOI; purple: different, smaller than the SESOI; green:
equivalent; orange: inconclusive; grey: no verdict). Contrasts on
different metrics go in panels of their own, one per metric (their units differ). Accuracy-like
metrics are drawn in percentage points. Rows without an interval show the estimate as a hollow
dot and say why.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.contrasts import percent_metric  # noqa: E402
from analysis.load import METRIC_LABELS  # noqa: E402

# first match wins: "different, smaller than the SESOI" before the other differences
_VERDICT_COLOURS = {"different, smaller": "tab:purple", "different": "tab:red", "equivalent": "tab:green",
                    "inconclusive": "tab:orange"}


def _colour(verdict: str) -> str:
    for word, colour in _VERDICT_COLOURS.items():
        if verdict.startswith(word):
            return colour
    return "0.35"          # no verdict, not estimable


def plot_effects(frame: pd.DataFrame, title: str, interval: str = "95% interval") -> Figure:
    """``frame``: rows of ``contrasts.contrast_frame`` (one per contrast, in the plot's top-down
    order); columns used: contrast, metric, estimate, low, high, n, margin, verdict. One panel
    per metric, in the order of first appearance."""
    metrics = list(dict.fromkeys(frame["metric"]))
    sizes = [int((frame["metric"] == m).sum()) for m in metrics]
    fig, axes = plt.subplots(len(metrics), 1, squeeze=False, gridspec_kw={"height_ratios": sizes},
                             figsize=(11, 1.3 + 0.62 * max(len(frame), 1) + 0.9 * (len(metrics) - 1)))
    for ax, metric in zip(axes[:, 0], metrics):
        _panel(ax, frame[frame["metric"] == metric], metric, interval)
    axes[0, 0].set_title(title, fontsize=10, loc="left")
    fig.tight_layout()              # makes room for the verdicts annotated right of the axes
    return fig


def _panel(ax, frame: pd.DataFrame, metric: str, interval: str) -> None:
    """The contrasts of one metric on ``ax``."""
    scale = 100.0 if percent_metric(metric) else 1.0
    unit = " (pp)" if scale == 100.0 else ""
    rows = len(frame)
    y = np.arange(rows)[::-1]                     # first contrast on top
    margin = frame["margin"].dropna()
    if len(margin):
        m = float(margin.iloc[0]) * scale
        ax.axvspan(-m, m, color="tab:green", alpha=0.12, lw=0,
                   label=f"equivalence band ±{m:g}{' pp' if scale == 100.0 else ''}")
    ax.axvline(0, color="0.2", lw=1.0, zorder=1)
    lo, hi = _limits(frame, scale, float(margin.iloc[0]) * scale if len(margin) else 0.0)
    for yi, r in zip(y, frame.itertuples(index=False)):
        colour = _colour(str(r.verdict))
        est = r.estimate * scale
        if np.isfinite(r.low):
            a, b = r.low * scale, r.high * scale
            ax.plot([max(a, lo), min(b, hi)], [yi, yi], color=colour, lw=2.4, solid_capstyle="butt")
            # an interval running past the axis ends in an arrow head there
            for end, edge, marker in ((a, lo, "<"), (b, hi, ">")):
                if (end < edge) if marker == "<" else (end > edge):
                    ax.plot(edge, yi, marker, color=colour, ms=7, clip_on=False)
            ax.plot(est, yi, "o", color=colour, ms=7, zorder=3)
        elif np.isfinite(est):
            ax.plot(est, yi, "o", mfc="white", mec=colour, ms=7, zorder=3)
        words = _short(str(r.verdict)) + ("" if "n=" in str(r.verdict) else f"  (n={int(r.n)})")
        ax.annotate(words, xy=(1.01, yi), xycoords=("axes fraction", "data"), va="center", fontsize=8,
                    color=colour)
    ax.set_yticks(y)
    ax.set_yticklabels([textwrap.fill(str(c), 48) for c in frame["contrast"]], fontsize=8)
    ax.set_ylim(-0.7, rows - 0.3)
    ax.set_xlim(lo, hi)
    ax.set_xlabel(f"difference in {METRIC_LABELS.get(metric, metric)}{unit}: estimate and {interval}")
    ax.grid(axis="x", alpha=0.3)
    if len(margin):
        ax.legend(loc="lower right", fontsize=8, frameon=False)


def _limits(frame: pd.DataFrame, scale: float, margin: float) -> tuple[float, float]:
    """x range: every estimate, the equivalence band and the intervals, except that intervals
    far wider than the typical one (two seeds: t = 12.7) are cut, with an arrow, at 3 times
    the larger of the estimates' reach, the margin and the median half-width."""
    est = frame["estimate"].to_numpy(dtype=float) * scale
    low, high = (frame[c].to_numpy(dtype=float) * scale for c in ("low", "high"))
    est, ok = est[np.isfinite(est)], np.isfinite(low)
    half = np.median((high[ok] - low[ok]) / 2) if ok.any() else 0.0
    reach = max(np.abs(est).max() if len(est) else 0.0, margin, half, 1e-9)
    lo = min(low[ok].min() if ok.any() else 0.0, est.min() if len(est) else 0.0, -margin)
    hi = max(high[ok].max() if ok.any() else 0.0, est.max() if len(est) else 0.0, margin)
    lo, hi = max(lo, -3 * reach), min(hi, 3 * reach)
    pad = 0.06 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def _short(verdict: str) -> str:
    return textwrap.shorten(verdict, 34, placeholder="…")


def write_effects_figure(frame: pd.DataFrame, out: Path, title: str, interval: str = "95% interval") -> Path:
    from analysis.plotting import save

    return save(plot_effects(frame, title, interval), Path(out) / "effects.png")
