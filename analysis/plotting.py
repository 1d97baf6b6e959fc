"""Drawing primitives of the report's figures: plain frames and arrays in, a matplotlib
``Figure`` out. No MLflow, no torch, no study: ``analysis.figure_inputs`` fetches the inputs
and ``analysis.figures`` says which figure is drawn from what.

Also here, because every figure of the report (``figures``, the forest plot of ``headline``)
shares them: ``save``, ``FigureOptions`` (sizes) and ``FigureResult`` (a drawn or skipped
figure). Importing this module is cheap (no torch), so the CLI can read the options.

Images are float arrays in [0, 1] of shape (n, 28, 28) unless stated otherwise.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import stats  # noqa: E402
from study.records import Outcome

DPI = 100
TILE = 28          # every image of a mosaic is resampled to TILE x TILE pixels


@dataclass(frozen=True)
class FigureOptions:
    tsne_points: int = 1000          # test digits embedded by t-SNE (cost grows ~n log n)
    top_k: int = 8                   # images per latent unit in the top-activation grid
    max_units: int = 16              # latent units shown in that grid
    n_reconstructions: int = 8       # digits in the reconstruction figure
    n_feature_digits: int = 4        # sample digits whose first-layer feature maps are shown
    max_feature_maps: int = 8        # channels shown per digit
    max_misclassified: int = 32
    seed: int = 0                    # picks sample digits and seeds t-SNE


@dataclass(frozen=True)
class FigureResult:
    name: str                        # file stem
    title: str
    caption: str
    path: Path | None                # None when skipped or left out
    skipped: str = ""                # why it was skipped
    needs: str = ""                  # left out: what a trainable must log to get it


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 28) -> str:
    return "\n".join(textwrap.wrap(str(text).replace(",", ", "), width)) or str(text)


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


# -- curves -----------------------------------------------------------------------------------

def plot_learning_curves(bands: pd.DataFrame, keys: Sequence[str], arms: Sequence[str],
                         baseline: str | None) -> Figure:
    """``bands``: rows: one per (arm, key, step) with mean/low/high/n (``stats.curve_bands``)."""
    colors = _colors(arms)
    legend_rows = math.ceil(len(arms) / 2)
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5 + 0.25 * legend_rows),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        for arm in arms:
            band = bands[(bands["arm"] == arm) & (bands["key"] == key)].sort_values("step")
            if band.empty:
                continue
            n = int(band["n"].max())
            style = dict(color=colors[arm], lw=2.2 if arm == baseline else 1.4,
                         ls="--" if arm == baseline else "-")
            ax.plot(band["step"], band["mean"], marker="o", ms=3,
                    label=f"{arm}{' (baseline)' if arm == baseline else ''} (n={n})", **style)
            has_interval = band["low"].notna()
            if has_interval.any():
                ax.fill_between(band["step"][has_interval], band["low"][has_interval],
                                band["high"][has_interval], color=colors[arm], alpha=0.18)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key}: mean and 95% CI band over seeds")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.45, 0.06 * legend_rows + 0.04), 1, 1))
    return fig


_OUTCOME_STYLE = {Outcome.COMPLETED: dict(ls="-", lw=1.4, alpha=0.9),
                  Outcome.PRUNED: dict(ls="-", lw=1.0, alpha=0.55, color="0.45"),
                  "failed": dict(ls=":", lw=1.2, alpha=0.9, color="tab:red"),
                  "running": dict(ls="--", lw=1.0, alpha=0.8, color="tab:blue"),
                  "interrupted": dict(ls="--", lw=1.0, alpha=0.8, color="tab:orange")}


def plot_tune_phase(history: pd.DataFrame, key: str, arms: Sequence[str], title: str) -> Figure:
    """Validation curves of the tune-phase trials as ASHA saw them, one panel per arm.

    ``history``: rows: one per (run, key, step) with ``outcome``. Pruned trials are grey and
    end in an ×, completed ones in colour with a dot, failed ones red and dotted.
    """
    arms = [arm for arm in arms if (history["arm"] == arm).any()] or ["(no tune trials)"]
    nrows, ncols = _grid(len(arms), 3)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.6), squeeze=False)
    colors = _colors(arms)
    for ax, arm in zip(axes.flat, arms):
        arm_history = history[(history["arm"] == arm) & (history["key"] == key)]
        counts = arm_history.groupby("outcome")["run_id"].nunique().to_dict()
        for _, trial in arm_history.groupby("run_id"):
            _plot_trial(ax, trial.sort_values("step"), colors[arm])
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        ax.set_title(f"{_wrap(arm, 40)}\n({summary or 'no trials'})", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(arms):]:
        ax.axis("off")
    fig.suptitle(f"{title}: grey × = pruned by ASHA, dot = completed, red dotted = failed", fontsize=10)
    fig.tight_layout()
    return fig


def _plot_trial(ax, trial: pd.DataFrame, arm_color) -> None:
    """One trial's curve (``trial``: its rows, by step), styled and marked by its outcome."""
    outcome = trial["outcome"].iloc[0]
    style = dict(_OUTCOME_STYLE.get(outcome, _OUTCOME_STYLE[Outcome.COMPLETED]))
    style.setdefault("color", arm_color)
    ax.plot(trial["step"], trial["value"], **style)
    marker = "x" if outcome == Outcome.PRUNED else ("o" if outcome == Outcome.COMPLETED else "s")
    ax.plot(trial["step"].iloc[-1], trial["value"].iloc[-1], marker=marker, ms=6,
            color=style["color"], ls="none")


# -- evaluation -------------------------------------------------------------------------------

def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """``matrix``: (true, pred) counts, pooled over seeds; cells show row-normalised shares."""
    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.55 * k + 2), max(5, 0.5 * k + 1.5)))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for true in range(k):
        for pred in range(k):
            if counts[true, pred]:
                ax.text(pred, true, f"{int(counts[true, pred])}", ha="center", va="center", fontsize=7,
                        color="white" if share[true, pred] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if k > 10 or max(map(len, class_names)) > 3 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_wrap(title, 60), fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(per_seed: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """``per_seed``: (seeds, classes) accuracies; bars = mean, whiskers = 95% t-interval."""
    per_seed = np.atleast_2d(np.asarray(per_seed, dtype=float))
    cis = [stats.t_interval(per_seed[:, c]) for c in range(per_seed.shape[1])]
    means = np.array([ci.mean for ci in cis])
    err = np.array([[ci.mean - ci.low, ci.high - ci.mean] if ci.n >= 2 else [0, 0] for ci in cis]).T
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(class_names) + 2), 4))
    ax.bar(range(len(class_names)), means, yerr=err, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(class_names)), class_names)
    low = np.nanmin(means) if len(means) else 0
    ax.set_ylim(max(0.0, min(low - 0.05, 0.9)), 1.0)
    ax.set_ylabel("test accuracy of the class")
    n_seeds = per_seed.shape[0]
    ax.set_title(_wrap(f"{title} (n={n_seeds} seed{'s' * (n_seeds != 1)})", 80), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_tsne(embedding: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """``embedding``: (n, 2) t-SNE coordinates; ``labels``: (n,) class indices."""
    fig, ax = plt.subplots(figsize=(7, 6))
    colors = _colors(list(class_names))
    for c, name in enumerate(class_names):
        in_class = labels == c
        if in_class.any():
            ax.scatter(embedding[in_class, 0], embedding[in_class, 1], s=7, color=colors[name],
                       label=name, alpha=0.8)
            cx, cy = np.median(embedding[in_class], axis=0)
            ax.text(cx, cy, name, fontsize=11, weight="bold", ha="center", va="center",
                    bbox=dict(facecolor="white", alpha=0.6, lw=0, pad=1))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.legend(markerscale=2.5, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


# -- image mosaics ----------------------------------------------------------------------------

def _resample(image: np.ndarray, size: int = TILE) -> np.ndarray:
    """Nearest-neighbour resampling to size x size (feature maps of 14x14 or 7x7 -> 28x28)."""
    image = np.asarray(image, dtype=float)
    rows = np.arange(size) * image.shape[0] // size
    cols = np.arange(size) * image.shape[1] // size
    return image[np.ix_(rows, cols)]


def mosaic(rows: Sequence[Sequence[np.ndarray]], title: str, row_labels: Sequence[str] = (),
           cell_labels: Sequence[Sequence[str]] | None = None, cmap: str = "gray",
           vmin: float = 0.0, vmax: float = 1.0, scale: float = 2.4) -> Figure:
    """Images as one tiled array drawn by a single ``imshow`` (hundreds of axes would make
    the figure slow to draw). ``rows``: a list of rows, each a list of 2-D images already
    scaled to [vmin, vmax]; ``cell_labels`` are printed above the tiles."""
    gap, top = 3, (13 if cell_labels is not None else 3)
    ncols = max(len(row) for row in rows)
    height, width = len(rows) * (TILE + top), ncols * (TILE + gap)
    canvas = np.full((height, width), np.nan)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = i * (TILE + top) + top, j * (TILE + gap)
            canvas[y:y + TILE, x:x + TILE] = _resample(image)
    left = 0.2 + 0.055 * max((len(label) for label in row_labels), default=0)  # inches, 8 pt text
    fig = plt.figure(figsize=(max(4.0, width * scale / DPI + left + 0.2),
                              max(2.5, height * scale / DPI + 0.7)))
    ax = fig.add_axes((left / fig.get_figwidth(), 0.1 / fig.get_figheight(),
                       1 - (left + 0.2) / fig.get_figwidth(), 1 - 0.7 / fig.get_figheight()))
    colormap = plt.get_cmap(cmap).with_extremes(bad="white")
    ax.imshow(canvas, cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.axis("off")
    for i, label in enumerate(row_labels):
        ax.text(-2, i * (TILE + top) + top + TILE / 2, label, ha="right", va="center", fontsize=8)
    for i, labels in enumerate(cell_labels or ()):
        for j, label in enumerate(labels):
            if label:
                ax.text(j * (TILE + gap) + TILE / 2, i * (TILE + top) + top - 1, label,
                        ha="center", va="bottom", fontsize=6.5, linespacing=0.9)
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


def plot_reconstructions(original: np.ndarray, corrupted: np.ndarray, reconstructed: np.ndarray,
                         title: str) -> Figure:
    return mosaic([list(original), list(corrupted), list(reconstructed)], title,
                  row_labels=["original", "corrupted", "reconstructed"])


def plot_filters(weights: np.ndarray, title: str) -> Figure:
    """``weights``: (c_out, k, k) first-layer kernels, each on its own symmetric scale
    (red positive, blue negative)."""
    kernels = np.asarray(weights, dtype=float)
    scaled = [kernel / (np.abs(kernel).max() or 1.0) for kernel in kernels]
    rows = [scaled[i:i + 8] for i in range(0, len(scaled), 8)]
    labels = [[str(i + j) for j in range(len(row))] for i, row in zip(range(0, len(scaled), 8), rows)]
    return mosaic(rows, title, cell_labels=labels, cmap="RdBu_r", vmin=-1.0, vmax=1.0, scale=3.0)


def plot_feature_maps(images: np.ndarray, maps: np.ndarray, title: str) -> Figure:
    """``maps``: (digits, channels, h, w) first-layer activations of ``images``; each map is
    shown on its own scale."""
    rows = [[image] + [_normalise(channel) for channel in digit_maps]
            for image, digit_maps in zip(images, maps)]
    labels = [["input"] + [f"ch {c}" for c in range(maps.shape[1])] for _ in rows]
    return mosaic(rows, title, cell_labels=labels, cmap="viridis", scale=2.6)


def _normalise(image: np.ndarray) -> np.ndarray:
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def top_activating(codes: np.ndarray, k: int, max_units: int) -> tuple[np.ndarray, np.ndarray]:
    """(units shown, indices (units, k) of the k test images with the largest activation of
    each unit). Units are ordered by their activation variance, most varied first."""
    codes = np.asarray(codes, dtype=float)
    units = np.argsort(-codes.var(axis=0), kind="stable")[:max_units]
    top = np.argsort(-codes[:, units], axis=0, kind="stable")[:k].T
    return units, top


def plot_top_activating(images: np.ndarray, codes: np.ndarray, k: int, max_units: int,
                        title: str) -> Figure:
    """``codes``: (images, units) latent activations of ``images``."""
    units, top = top_activating(codes, k, max_units)
    rows = [list(images[indices]) for indices in top]
    labels = [[f"{codes[i, unit]:.2f}" for i in indices] for unit, indices in zip(units, top)]
    return mosaic(rows, title, row_labels=[f"unit {unit}" for unit in units], cell_labels=labels)


def spread_over_classes(true: Sequence[int], n: int) -> list[int]:
    """Up to ``n`` positions into ``true``, taken round-robin over the true classes (the list
    in evaluation.json is in test-set order, which may be sorted by class)."""
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(true):
        by_class.setdefault(int(label), []).append(position)
    queues = [by_class[c] for c in sorted(by_class)]
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def plot_misclassified(images: np.ndarray, true: Sequence[int], pred: Sequence[int],
                       class_names: Sequence[str], title: str) -> Figure:
    ncols = 8
    rows = [list(images[i:i + ncols]) for i in range(0, len(images), ncols)]
    labels = [[f"{class_names[t]} → {class_names[p]}" for t, p in zip(true[i:i + ncols], pred[i:i + ncols])]
              for i in range(0, len(images), ncols)]
    return mosaic(rows, f"{title} (true → predicted)", cell_labels=labels, scale=3.0)
