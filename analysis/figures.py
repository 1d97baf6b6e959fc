"""Figures of a study report (matplotlib, PNG).

Two layers:
* plotting functions take plain frames/arrays and return a ``Figure`` (no MLflow, no torch);
* ``make_figures`` fetches what they need from a ``Study`` (metric histories, artifacts,
  the dataset, model weights), writes the PNGs and says why any figure was skipped.

Images are float arrays in [0, 1] of shape (n, 28, 28) unless stated otherwise.
"""
from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import stats  # noqa: E402

DPI = 100


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
    path: Path | None                # None when skipped
    skipped: str = ""                # why it was skipped


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 28) -> str:
    return "\n".join(textwrap.wrap(str(text).replace(",", ", "), width)) or str(text)


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


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
            b = bands[(bands["arm"] == arm) & (bands["key"] == key)].sort_values("step")
            if b.empty:
                continue
            n = int(b["n"].max())
            style = dict(color=colors[arm], lw=2.2 if arm == baseline else 1.4,
                         ls="--" if arm == baseline else "-")
            ax.plot(b["step"], b["mean"], marker="o", ms=3,
                    label=f"{arm}{' (baseline)' if arm == baseline else ''} (n={n})", **style)
            ok = b["low"].notna()
            if ok.any():
                ax.fill_between(b["step"][ok], b["low"][ok], b["high"][ok], color=colors[arm], alpha=0.18)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key}: mean and 95% CI band over seeds")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.45, 0.06 * legend_rows + 0.04), 1, 1))
    return fig


_OUTCOME_STYLE = {"completed": dict(ls="-", lw=1.4, alpha=0.9),
                  "pruned": dict(ls="-", lw=1.0, alpha=0.55, color="0.45"),
                  "failed": dict(ls=":", lw=1.2, alpha=0.9, color="tab:red"),
                  "running": dict(ls="--", lw=1.0, alpha=0.8, color="tab:blue"),
                  "interrupted": dict(ls="--", lw=1.0, alpha=0.8, color="tab:orange")}


def plot_tune_phase(history: pd.DataFrame, key: str, arms: Sequence[str], title: str) -> Figure:
    """Validation curves of the tune-phase trials as ASHA saw them, one panel per arm.

    ``history``: rows: one per (run, key, step) with ``outcome``. Pruned trials are grey and
    end in an ×, completed ones in colour with a dot, failed ones red and dotted.
    """
    arms = [a for a in arms if (history["arm"] == a).any()] or ["(no tune trials)"]
    nrows, ncols = _grid(len(arms), 3)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.6), squeeze=False)
    colors = _colors(arms)
    for ax, arm in zip(axes.flat, arms):
        h = history[(history["arm"] == arm) & (history["key"] == key)]
        counts = h.groupby("outcome")["run_id"].nunique().to_dict()
        for run_id, g in h.groupby("run_id"):
            g = g.sort_values("step")
            outcome = g["outcome"].iloc[0]
            style = dict(_OUTCOME_STYLE.get(outcome, _OUTCOME_STYLE["completed"]))
            style.setdefault("color", colors[arm])
            ax.plot(g["step"], g["value"], **style)
            marker = "x" if outcome == "pruned" else ("o" if outcome == "completed" else "s")
            ax.plot(g["step"].iloc[-1], g["value"].iloc[-1], marker=marker, ms=6,
                    color=style["color"], ls="none")
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


# -- evaluation -------------------------------------------------------------------------------

def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """``matrix``: (true, pred) counts, pooled over seeds; cells show row-normalised shares."""
    m = np.asarray(matrix, dtype=float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.55 * k + 2), max(5, 0.5 * k + 1.5)))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if k > 10 or max(map(len, class_names)) > 3 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_wrap(title, 60), fontsize=9)
    fig.colorbar(im, ax=ax, label="share of the true class")
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(per_seed: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """``per_seed``: (seeds, classes) accuracies; bars = mean, whiskers = 95% t-interval."""
    per_seed = np.atleast_2d(np.asarray(per_seed, dtype=float))
    cis = [stats.t_interval(per_seed[:, c]) for c in range(per_seed.shape[1])]
    means = np.array([c.mean for c in cis])
    err = np.array([[c.mean - c.low, c.high - c.mean] if c.n >= 2 else [0, 0] for c in cis]).T
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(class_names) + 2), 4))
    ax.bar(range(len(class_names)), means, yerr=err, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(class_names)), class_names)
    low = np.nanmin(means) if len(means) else 0
    ax.set_ylim(max(0.0, min(low - 0.05, 0.9)), 1.0)
    ax.set_ylabel("test accuracy of the class")
    ax.set_title(_wrap(f"{title} (n={per_seed.shape[0]} seed{'s' * (per_seed.shape[0] != 1)})", 80), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


TILE = 28          # every image of a mosaic is resampled to TILE x TILE pixels


def _resample(img: np.ndarray, size: int = TILE) -> np.ndarray:
    """Nearest-neighbour resampling to size x size (feature maps of 14x14 or 7x7 -> 28x28)."""
    img = np.asarray(img, dtype=float)
    rows = np.arange(size) * img.shape[0] // size
    cols = np.arange(size) * img.shape[1] // size
    return img[np.ix_(rows, cols)]


def _mosaic(rows: Sequence[Sequence[np.ndarray]], title: str, row_labels: Sequence[str] = (),
            cell_labels: Sequence[Sequence[str]] | None = None, cmap: str = "gray",
            vmin: float = 0.0, vmax: float = 1.0, scale: float = 2.4) -> Figure:
    """Images as one tiled array drawn by a single ``imshow`` (hundreds of axes would make
    the figure slow to draw). ``rows``: a list of rows, each a list of 2-D images already
    scaled to [vmin, vmax]; ``cell_labels`` are printed above the tiles."""
    gap, top = 3, (13 if cell_labels is not None else 3)
    ncols = max(len(r) for r in rows)
    h, w = len(rows) * (TILE + top), ncols * (TILE + gap)
    canvas = np.full((h, w), np.nan)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = i * (TILE + top) + top, j * (TILE + gap)
            canvas[y:y + TILE, x:x + TILE] = _resample(img)
    left = 0.2 + 0.055 * max((len(label) for label in row_labels), default=0)  # inches, 8 pt text
    fig = plt.figure(figsize=(max(4.0, w * scale / DPI + left + 0.2), max(2.5, h * scale / DPI + 0.7)))
    ax = fig.add_axes((left / fig.get_figwidth(), 0.1 / fig.get_figheight(),
                       1 - (left + 0.2) / fig.get_figwidth(), 1 - 0.7 / fig.get_figheight()))
    colormap = plt.get_cmap(cmap).with_extremes(bad="white")
    ax.imshow(canvas, cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.axis("off")
    for i, label in enumerate(row_labels):
        ax.text(-2, i * (TILE + top) + top + TILE / 2, label, ha="right", va="center", fontsize=8)
    if cell_labels is not None:
        for i, labels in enumerate(cell_labels):
            for j, label in enumerate(labels):
                if label:
                    ax.text(j * (TILE + gap) + TILE / 2, i * (TILE + top) + top - 1, label,
                            ha="center", va="bottom", fontsize=6.5, linespacing=0.9)
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


def plot_reconstructions(original: np.ndarray, corrupted: np.ndarray, reconstructed: np.ndarray,
                         title: str) -> Figure:
    return _mosaic([list(original), list(corrupted), list(reconstructed)], title,
                   row_labels=["original", "corrupted", "reconstructed"])


def plot_filters(weights: np.ndarray, title: str) -> Figure:
    """``weights``: (c_out, k, k) first-layer kernels, each on its own symmetric scale
    (red positive, blue negative)."""
    w = np.asarray(weights, dtype=float)
    scaled = [k / (np.abs(k).max() or 1.0) for k in w]
    rows = [scaled[i:i + 8] for i in range(0, len(scaled), 8)]
    labels = [[str(i + j) for j in range(len(r))] for i, r in zip(range(0, len(scaled), 8), rows)]
    return _mosaic(rows, title, cell_labels=labels, cmap="RdBu_r", vmin=-1.0, vmax=1.0, scale=3.0)


def plot_feature_maps(images: np.ndarray, maps: np.ndarray, title: str) -> Figure:
    """``maps``: (digits, channels, h, w) first-layer activations of ``images``; each map is
    shown on its own scale."""
    rows = [[img] + [_normalise(c) for c in m] for img, m in zip(images, maps)]
    labels = [["input"] + [f"ch {c}" for c in range(maps.shape[1])] for _ in rows]
    return _mosaic(rows, title, cell_labels=labels, cmap="viridis", scale=2.6)


def _normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def top_activating(codes: np.ndarray, k: int, max_units: int) -> tuple[np.ndarray, np.ndarray]:
    """(units shown, indices (units, k) of the k test images with the largest activation of
    each unit). Units are ordered by their activation variance, most varied first."""
    codes = np.asarray(codes, dtype=float)
    units = np.argsort(-codes.var(axis=0), kind="stable")[:max_units]
    top = np.argsort(-codes[:, units], axis=0, kind="stable")[:k].T
    return units, top


def plot_top_activating(images: np.ndarray, codes: np.ndarray, k: int, max_units: int,
                        title: str) -> Figure:
    units, top = top_activating(codes, k, max_units)
    rows = [list(images[idx]) for idx in top]
    labels = [[f"{codes[i, u]:.2f}" for i in idx] for u, idx in zip(units, top)]
    return _mosaic(rows, title, row_labels=[f"unit {u}" for u in units], cell_labels=labels)


def tsne_embedding(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(codes)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    # 500 iterations (sklearn's default is 1000): the layout is settled by then on a few
    # thousand points and it halves the cost on a small CPU.
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity,
                max_iter=500).fit_transform(
        np.asarray(codes, dtype=np.float32))


def plot_tsne(embedding: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 6))
    colors = _colors(list(class_names))
    for c, name in enumerate(class_names):
        sel = labels == c
        if sel.any():
            ax.scatter(embedding[sel, 0], embedding[sel, 1], s=7, color=colors[name], label=name, alpha=0.8)
            cx, cy = np.median(embedding[sel], axis=0)
            ax.text(cx, cy, name, fontsize=11, weight="bold", ha="center", va="center",
                    bbox=dict(facecolor="white", alpha=0.6, lw=0, pad=1))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.legend(markerscale=2.5, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def plot_misclassified(images: np.ndarray, true: Sequence[int], pred: Sequence[int],
                       class_names: Sequence[str], title: str) -> Figure:
    ncols = 8
    rows = [list(images[i:i + ncols]) for i in range(0, len(images), ncols)]
    labels = [[f"{class_names[t]} → {class_names[p]}" for t, p in zip(true[i:i + ncols], pred[i:i + ncols])]
              for i in range(0, len(images), ncols)]
    return _mosaic(rows, f"{title} (true → predicted)", cell_labels=labels, scale=3.0)


# -- from a study to the figure files ---------------------------------------------------------

def make_figures(a, out: Path, opt: FigureOptions = FigureOptions()) -> list[FigureResult]:
    """Every figure of the report of ``a`` (an ``analysis.report.Analysis``) as PNG in ``out``.

    A figure whose inputs are missing (no pretraining in the study, an artifact not logged)
    or whose drawing fails is returned with ``path=None`` and the reason, never dropped.
    """
    out = Path(out)
    results = [_guard("learning_curves", "Learning curves per arm", lambda: _learning_curves(a, out))]
    results += [_guard(f"tune_{stage}", f"Tune phase of the {stage} stage as ASHA saw it",
                       lambda stage=stage: _tune(a, out, stage))
                for stage in ("classify", "pretrain") if len(a.study.select(stage=stage, phase="tune"))]
    results += _best_arm_figures(a, out, opt)
    results += _latent_figures(a, out, opt)
    return results


def _guard(name: str, title: str, draw: Callable[[], FigureResult]) -> FigureResult:
    try:
        return draw()
    except _Skip as why:
        return FigureResult(name, title, "", None, str(why))
    except Exception as err:  # one broken figure must not cost the whole report
        return FigureResult(name, title, "", None, f"failed: {type(err).__name__}: {err}")


class _Skip(Exception):
    """A figure's inputs are not in the store; the message says which."""


def _learning_curves(a, out: Path) -> FigureResult:
    runs = a.study.comparison_runs()
    if runs.empty:
        raise _Skip("no completed replicate runs yet")
    keys = ["val/acc", "train/loss"]
    # rows: one per (run, key, step) -> bands: one per (arm, key, step)
    bands = stats.curve_bands(a.study.history(keys, runs))
    fig = plot_learning_curves(bands, keys, a.arms, a.baseline)
    path = save(fig, out / "learning_curves.png")
    return FigureResult("learning_curves", "Learning curves per arm",
                        "Validation accuracy and training loss by epoch of the completed replicate "
                        "runs: mean over seeds, band = 95% t-interval (none where n = 1).", path)


def _tune(a, out: Path, stage: str) -> FigureResult:
    runs = a.study.select(stage=stage, phase="tune")
    # the metric ASHA scheduled on: the parent's ``metric`` tag for the classify stage
    key = (a.study.parent_tags.get("metric", "val/acc") if stage == "classify"
           else a.study.parent_tags.get("pretrain_metric", "val/loss"))
    history = a.study.history([key], runs)
    arms = a.arms if stage == "classify" else a.study.arms("pretrain")
    counts = runs["outcome"].value_counts().to_dict()
    fig = plot_tune_phase(history, key, arms, f"{stage} tune phase ({key})")
    path = save(fig, out / f"tune_{stage}.png")
    return FigureResult(f"tune_{stage}", f"Tune phase of the {stage} stage as ASHA saw it",
                        f"{key} of every tune-phase trial per arm; {len(runs)} trials: "
                        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                        + ". Pruned trials (outcome=pruned) end in a grey ×.", path)


def _representative_run(a, arm: str):
    """The completed replicate run of ``arm`` whose primary metric is closest to the arm mean."""
    runs = a.study.comparison_runs()
    runs = runs[runs["arm"] == arm]
    col = f"metrics.{a.metric}"
    if runs.empty:
        return None
    if col in runs and runs[col].notna().any():
        dist = (runs[col] - runs[col].mean()).abs()
        return runs.loc[dist.idxmin()]
    return runs.iloc[0]


def _best_arm_figures(a, out: Path, opt: FigureOptions) -> list[FigureResult]:
    titles = {"confusion_matrix": "Confusion matrix of the best arm",
              "per_class_accuracy": "Per-class accuracy of the best arm",
              "misclassified": "Misclassified test images of the best arm",
              "filters_classifier": "First-layer filters of the best arm's classifier",
              "feature_maps_classifier": "First-layer feature maps of the best arm's classifier"}
    if a.best_arm is None:
        return [FigureResult(k, t, "", None, "no completed replicate runs yet") for k, t in titles.items()]
    study, arm = a.study, a.best_arm
    runs = study.comparison_runs()
    runs = runs[runs["arm"] == arm].sort_values("seed")
    rep = _representative_run(a, arm)
    evaluations = {}
    for r in runs.itertuples(index=False):
        path = study.artifact(r.run_id, "evaluation.json")
        if path is not None:
            from analysis.artifacts import read_evaluation
            evaluations[int(r.seed)] = read_evaluation(path)
    results = []

    def need_eval():
        if not evaluations:
            raise _Skip(f"no evaluation.json logged by the replicate runs of {arm}")

    def confusion():
        need_eval()
        ev = list(evaluations.values())
        # (seeds, true, pred) -> pooled (true, pred): every seed's test set counts once
        pooled = np.sum([np.asarray(e["confusion_matrix"]) for e in ev], axis=0)
        fig = plot_confusion_matrix(pooled, ev[0]["class_names"],
                                    f"{arm}: test confusion matrix, summed over {len(ev)} seed(s)")
        return FigureResult("confusion_matrix", titles["confusion_matrix"],
                            f"Best arm by mean {a.metric}: {arm}. Counts summed over the seeds "
                            f"{sorted(evaluations)}; colour = share of the true class.",
                            save(fig, out / "confusion_matrix.png"))

    def per_class():
        need_eval()
        ev = list(evaluations.values())
        names = ev[0]["class_names"]
        # rows: one per seed; columns: one per class
        per_seed = np.array([[np.nan if e["per_class_accuracy"].get(n) is None else e["per_class_accuracy"][n]
                              for n in names] for e in ev], dtype=float)
        fig = plot_per_class_accuracy(per_seed, names, f"{arm}: per-class test accuracy")
        return FigureResult("per_class_accuracy", titles["per_class_accuracy"],
                            "Recall of each class on the test set: mean over seeds, whiskers = 95% "
                            "t-interval.", save(fig, out / "per_class_accuracy.png"))

    results += [_guard("confusion_matrix", titles["confusion_matrix"], confusion),
                _guard("per_class_accuracy", titles["per_class_accuracy"], per_class)]

    def misclassified():
        from analysis.artifacts import test_inputs
        seed = int(rep["seed"])
        ev = evaluations.get(seed)
        if ev is None:
            raise _Skip(f"the run of {arm}, seed {seed} logged no evaluation.json")
        wrong = ev["misclassified"]
        pick = spread_over_classes(wrong["true"], opt.max_misclassified)
        if len(pick) == 0:
            raise _Skip(f"{arm}, seed {seed} misclassified no test image")
        idx = np.asarray(wrong["indices"], dtype=int)[pick]
        true = [wrong["true"][i] for i in pick]
        pred = [wrong["pred"][i] for i in pick]
        _, seen, _, _ = test_inputs(_dataset(a, rep), ev.get("test_corruption", "none"),
                                    float(ev.get("test_noise_level", 0.0)), seed)
        fig = plot_misclassified(seen[idx, 0].numpy(), true, pred, ev["class_names"],
                                 f"{arm}, seed {seed}: misclassified test images")
        return FigureResult("misclassified", titles["misclassified"],
                            f"{len(idx)} of the misclassified test images listed in evaluation.json, "
                            "taken in turn from each true class (as the model saw them, "
                            f"test corruption {ev.get('test_corruption', 'none')}) of the seed closest "
                            f"to the arm's mean {a.metric}, with true and predicted label.",
                            save(fig, out / "misclassified.png"))

    results.append(_guard("misclassified", titles["misclassified"], misclassified))
    classifier = {}

    def model():
        if "model" not in classifier:
            classifier["model"] = _load_classifier(a, rep)
        return classifier["model"]

    def filters():
        from analysis.artifacts import first_conv
        conv = first_conv(model())
        fig = plot_filters(conv.weight.detach()[:, 0].numpy(),
                           f"{arm}, seed {int(rep['seed'])}: first-layer filters ({conv.weight.shape[0]})")
        return FigureResult("filters_classifier", titles["filters_classifier"],
                            "Kernels of the classifier's first convolution (red positive, blue "
                            "negative, each on its own scale).", save(fig, out / "filters_classifier.png"))

    def feature_maps():
        from analysis.artifacts import capture, first_conv, test_inputs
        _, seen, labels, _ = test_inputs(_dataset(a, rep))
        pick = _sample_digits(labels.numpy(), opt.n_feature_digits, opt.seed)
        m = model()
        maps = capture(m, first_conv(m), seen[pick])[:, :opt.max_feature_maps].relu()
        fig = plot_feature_maps(seen[pick, 0].numpy(), maps.numpy(),
                                f"{arm}: first-layer feature maps (after ReLU) of sample test digits")
        return FigureResult("feature_maps_classifier", titles["feature_maps_classifier"],
                            f"Activations of the first {maps.shape[1]} channels of the first "
                            "convolution for sample test digits, each map on its own scale.",
                            save(fig, out / "feature_maps_classifier.png"))

    results += [_guard("filters_classifier", titles["filters_classifier"], filters),
                _guard("feature_maps_classifier", titles["feature_maps_classifier"], feature_maps)]
    return results


def spread_over_classes(true: Sequence[int], n: int) -> list[int]:
    """Up to ``n`` positions into ``true``, taken round-robin over the true classes (the list
    in evaluation.json is in test-set order, which may be sorted by class)."""
    by_class: dict[int, list[int]] = {}
    for pos, t in enumerate(true):
        by_class.setdefault(int(t), []).append(pos)
    queues = [by_class[c] for c in sorted(by_class)]
    out: list[int] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _dataset(a, run) -> str:
    return str(run.get("params.dataset") or a.study.parent_tags.get("dataset") or "mnist-5k")


def _sample_digits(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` test indices of distinct classes where possible (reproducible)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:n]
    return np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes])


def _load_classifier(a, run):
    from analysis.artifacts import config_from_params, load_classifier

    study = a.study
    model_pt = study.artifact(run["run_id"], "model.pt")
    if model_pt is None:
        raise _Skip(f"run {run['run_id']} ({run['arm']}, seed {run['seed']}) logged no model.pt")
    meta_path = study.artifact(run["run_id"], "meta.json")
    if meta_path is not None:
        meta = json.loads(meta_path.read_text())
        config, n_classes = meta["config"], len(meta.get("class_names") or [])
    else:
        params = {c.removeprefix("params."): v for c, v in run.items()
                  if str(c).startswith("params.") and isinstance(v, str)}
        config, n_classes = config_from_params(params), 0
    if not n_classes:
        from analysis.artifacts import class_names_for
        n_classes = len(class_names_for(config.get("dataset", _dataset(a, run)), config.get("task", "digits")))
    return load_classifier(model_pt, config, n_classes)


def _pretraining_candidates(a) -> tuple[list[tuple[str, str, int | None]], int | None]:
    """Pretraining runs as (run_id, key, seed), best first: the pretraining the best arm
    builds on (same seed as its representative run), then replicate before tune runs.
    Returns the list and the preferred seed."""
    study = a.study
    rep = _representative_run(a, a.best_arm) if a.best_arm else None
    wanted_key, seed = None, None
    if rep is not None:
        for col in ("params.meta.encoder_artifact", "params.meta.denoiser_artifact"):
            ref = rep.get(col)
            if isinstance(ref, str) and "/" in ref:
                wanted_key = ref.split("/")[0]
                seed = int(rep["seed"])
                break
    candidates = study.select(stage="pretrain", outcome="completed")
    # Autoencoders reused from earlier invocations are listed in the parent's pretrained_runs
    # tag ({"key/seed": run_id}); they are trial runs of another parent.
    try:
        reused = json.loads(study.parent_tags.get("pretrained_runs", "{}"))
    except json.JSONDecodeError:
        reused = {}
    order: list[tuple[str, str, int | None]] = []
    if wanted_key is not None and f"{wanted_key}/{seed}" in reused:
        order.append((reused[f"{wanted_key}/{seed}"], wanted_key, seed))
    ranked = candidates.assign(
        _want=(candidates["arm"] != wanted_key), _rep=(candidates["phase"] != "replicate"),
        _seed=(candidates["seed"].fillna(-1) != (-1 if seed is None else seed)),
    ).sort_values(["_want", "_rep", "_seed", "seed"])
    order += [(r.run_id, r.arm, None if pd.isna(r.seed) else int(r.seed)) for r in ranked.itertuples(index=False)]
    order += [(rid, ks.split("/")[0], int(ks.split("/")[1])) for ks, rid in sorted(reused.items())
              if "/" in ks and ks.split("/")[1].isdigit()]
    seen, unique = set(), []
    for item in order:
        if item[0] not in seen:
            seen.add(item[0])
            unique.append(item)
    return unique, seed


def _pretraining_run(a):
    """(run, autoencoder.pt path or None, encoder.pt path or None) of the pretraining the best
    arm builds on, else of any completed pretraining run of the study; None when there is none."""
    order, _ = _pretraining_candidates(a)
    for run_id, key, run_seed in order:
        encoder = a.study.artifact(run_id, "encoder.pt")
        autoencoder = a.study.artifact(run_id, "autoencoder.pt")
        if encoder is not None or autoencoder is not None:
            return {"run_id": run_id, "key": key, "seed": run_seed}, autoencoder, encoder
    return None


def _autoencoders_by_key(a, seed: int | None) -> dict[str, tuple[dict, Path]]:
    """One autoencoder.pt per pretraining key (the given seed where there is one)."""
    order, _ = _pretraining_candidates(a)
    order = sorted(order, key=lambda item: item[2] != seed)     # stable: keeps the ranking
    found: dict[str, tuple[dict, Path]] = {}
    for run_id, key, run_seed in order:
        if key in found:
            continue
        path = a.study.artifact(run_id, "autoencoder.pt")
        if path is not None:
            found[key] = ({"run_id": run_id, "key": key, "seed": run_seed}, path)
    return dict(sorted(found.items()))


def _latent_figures(a, out: Path, opt: FigureOptions) -> list[FigureResult]:
    """Autoencoder figures (reconstructions, encoder filters and feature maps, top-activating
    images, t-SNE). Without a pretraining run, top-activating images and t-SNE use the best
    arm's classifier (its encoder's latent or its penultimate layer) instead."""
    from analysis.artifacts import load_autoencoder, load_encoder

    titles = {"reconstructions": "Autoencoder reconstructions",
              "filters_encoder": "First-layer filters of the pretrained encoder",
              "feature_maps_encoder": "First-layer feature maps of the pretrained encoder",
              "top_activating": "Test images that most activate each latent unit",
              "tsne": "t-SNE of the latent space"}
    net, source, corruption, level, seed = None, None, "none", 0.0, 0
    try:
        found = _pretraining_run(a)
        if found is not None:     # (a user's upstream stage writes files of its own: not drawn)
            net, payload = load_autoencoder(found[1]) if found[1] is not None else load_encoder(found[2])
    except Exception as err:  # noqa: BLE001 - reported, not raised
        found = None
        why = f"failed to find a pretraining run of trainables.autoencoder: {type(err).__name__}: {err}"
    else:
        why = "the study has no completed pretraining run with encoder.pt/autoencoder.pt"
    results: list[FigureResult] = []
    dataset = a.study.parent_tags.get("dataset", "mnist-5k")
    if found is not None:
        run = found[0]
        dataset = payload.get("dataset", dataset)
        corruption, level = payload.get("corruption", "none"), float(payload.get("noise_level", 0.0))
        seed = int(run["seed"]) if run["seed"] is not None else 0
        source = f"pretraining {run['key']}, seed {seed} (run {run['run_id'][:8]})"

        def reconstructions():
            import torch
            from analysis.artifacts import test_inputs
            from trainables.data import corrupt
            from trainables.seeds import stream
            nets = _autoencoders_by_key(a, seed)
            if not nets:
                raise _Skip(f"no pretraining run of the study logged autoencoder.pt ({source} "
                            "has only encoder.pt)")
            clean, _, labels, _ = test_inputs(dataset)
            pick = _sample_digits(labels.numpy(), opt.n_reconstructions, opt.seed)
            rows, names = [clean[pick, 0].numpy()], ["original"]
            for key, (run, path) in nets.items():
                ae, payload = load_autoencoder(path)
                kind, amount = payload.get("corruption", "none"), float(payload.get("noise_level", 0.0))
                # the corruption the autoencoder was trained against; a reproducible draw
                # from the run seed's test_noise stream
                noisy = corrupt(clean[pick], kind, amount, stream(run["seed"] or 0, "test_noise"))
                with torch.inference_mode():
                    recon = ae(noisy)
                if kind != "none":
                    rows.append(noisy[:, 0].numpy())
                    names.append(f"{key}: input ({kind} {amount:g})")
                rows.append(recon[:, 0].numpy())
                names.append(f"{key}: output")
            fig = _mosaic([list(r) for r in rows], f"Autoencoder reconstructions of test digits "
                          f"(seed {seed})", row_labels=names)
            return FigureResult("reconstructions", titles["reconstructions"],
                                "First row: clean test digits. Per pretraining: the corrupted input "
                                "(denoising autoencoders only) and the reconstruction; "
                                f"autoencoders: {', '.join(nets)}.", save(fig, out / "reconstructions.png"))

        def enc_filters():
            from analysis.artifacts import first_conv
            conv = first_conv(net)
            fig = plot_filters(conv.weight.detach()[:, 0].numpy(), f"{source}: first-layer filters")
            return FigureResult("filters_encoder", titles["filters_encoder"],
                                "Kernels of the encoder's first convolution (the low-level features "
                                "pretraining learned).", save(fig, out / "filters_encoder.png"))

        def enc_maps():
            from analysis.artifacts import capture, first_conv, test_inputs
            clean, _, labels, _ = test_inputs(dataset)
            pick = _sample_digits(labels.numpy(), opt.n_feature_digits, opt.seed)
            maps = capture(net, first_conv(net), clean[pick])[:, :opt.max_feature_maps].relu()
            fig = plot_feature_maps(clean[pick, 0].numpy(), maps.numpy(),
                                    f"{source}: first-layer feature maps (after ReLU)")
            return FigureResult("feature_maps_encoder", titles["feature_maps_encoder"],
                                "Activations of the encoder's first convolution for sample test digits.",
                                save(fig, out / "feature_maps_encoder.png"))

        results += [_guard("reconstructions", titles["reconstructions"], reconstructions),
                    _guard("filters_encoder", titles["filters_encoder"], enc_filters),
                    _guard("feature_maps_encoder", titles["feature_maps_encoder"], enc_maps)]
    else:
        results += [FigureResult(k, titles[k], "", None, why)
                    for k in ("reconstructions", "filters_encoder", "feature_maps_encoder")]
        rep = _representative_run(a, a.best_arm) if a.best_arm else None
        if rep is not None:
            try:
                net = _load_classifier(a, rep)
                dataset = _dataset(a, rep)
                source = f"best arm {a.best_arm}, seed {int(rep['seed'])} (classifier, no pretraining)"
            except Exception as err:  # noqa: BLE001
                why = f"{why}; the best arm's classifier could not be loaded either ({err})"

    def top():
        from analysis.artifacts import embed, test_inputs
        if net is None:
            raise _Skip(why)
        clean, _, _, _ = test_inputs(dataset)
        codes = embed(net, clean)
        fig = plot_top_activating(clean[:, 0].numpy(), codes, opt.top_k, opt.max_units,
                                  f"{source}: top-{opt.top_k} test images per latent unit")
        return FigureResult("top_activating", titles["top_activating"],
                            f"For the {min(opt.max_units, codes.shape[1])} most varied of "
                            f"{codes.shape[1]} latent units, the {opt.top_k} test images with the "
                            "largest activation (value above each).", save(fig, out / "top_activating.png"))

    def tsne():
        from analysis.artifacts import embed, test_inputs
        if net is None:
            raise _Skip(why)
        clean, _, labels, names = test_inputs(dataset)
        rng = np.random.default_rng(opt.seed)
        pick = np.sort(rng.choice(len(clean), size=min(opt.tsne_points, len(clean)), replace=False))
        emb = tsne_embedding(embed(net, clean[pick]), opt.seed)
        fig = plot_tsne(emb, labels.numpy()[pick], names, f"{source}: t-SNE of {len(pick)} test digits")
        return FigureResult("tsne", titles["tsne"], "Latent codes of test digits embedded in 2-D by "
                            "t-SNE (scikit-learn, PCA init), coloured by the true digit.",
                            save(fig, out / "tsne.png"))

    results += [_guard("top_activating", titles["top_activating"], top),
                _guard("tsne", titles["tsne"], tsne)]
    return results
