"""Figures of a study report: which PNG files there are and what each is drawn from.

``FIGURES`` (at the end) lists every figure: its file stem, its title, the function that draws
it, when it applies (a figure that does not apply is not listed at all: a pretrain tune phase
in a study without one), and when the study's records hold the kind of input it reads, with
one line saying what a trainable must log to get it (``needs``: the confusion matrix needs an
evaluation.json with confusion_matrix). Each drawing function takes the ``FigureInputs`` of the
study (runs, evaluations, models, pretraining, each fetched once) and returns the figure and
its caption; it raises ``MissingInputs`` with the reason when an input of a kind the study
records is not in the store (a run that logged none). ``make_figures`` writes the PNGs and
lists every figure: drawn, skipped with why, or left out with its ``needs`` line; the drawing
itself is ``analysis.plotting``'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from analysis import stats  # noqa: E402
from analysis.artifacts import capture, embed, first_conv, load_autoencoder, test_inputs  # noqa: E402
from analysis.figure_inputs import FigureInputs, LatentSource, MissingInputs, Pretraining  # noqa: E402
from analysis.plotting import (FigureOptions, FigureResult, mosaic, plot_confusion_matrix,  # noqa: E402
                               plot_feature_maps, plot_filters, plot_learning_curves,
                               plot_misclassified, plot_per_class_accuracy, plot_top_activating,
                               plot_tsne, plot_tune_phase, save, spread_over_classes)
from study.records import PHASE_TUNE, STAGE_CLASSIFY, STAGE_UPSTREAM  # noqa: E402
from trainables.data import DATASET_NAMES  # noqa: E402
from trainables.seeds import stream  # noqa: E402
from trainables.transforms import corrupt  # noqa: E402

Drawn = tuple[Figure, str]           # (the figure, its caption)


# -- history --------------------------------------------------------------------------------

def learning_curves(inputs: FigureInputs) -> Drawn:
    runs = inputs.study.comparison_runs()
    if runs.empty:
        raise MissingInputs("no completed replicate runs yet")
    # the selection metric (the parent's ``metric`` tag) and the training loss, where logged
    keys = [k for k in dict.fromkeys([inputs.study.parent_tags.get("metric", "val/acc"), "train/loss"])
            if f"metrics.{k}" in runs and runs[f"metrics.{k}"].notna().any()]
    if not keys:
        raise MissingInputs("the replicate runs logged neither the selection metric nor train/loss")
    # rows: one per (run, key, step) -> bands: one per (arm, key, step)
    bands = stats.curve_bands(inputs.study.history(keys, runs))
    figure = plot_learning_curves(bands, keys, inputs.analysis.arms, inputs.analysis.baseline)
    return figure, (f"{' and '.join(keys)} by epoch of the completed replicate runs: mean over seeds, "
                    "band = 95% t-interval (none where n = 1).")


def tune_phase(inputs: FigureInputs, stage: str) -> Drawn:
    study = inputs.study
    runs = study.select(stage=stage, phase=PHASE_TUNE)
    # the metric ASHA scheduled on: the parent's ``metric`` tag for the classify stage
    key = (study.parent_tags.get("metric", "val/acc") if stage == STAGE_CLASSIFY
           else study.parent_tags.get("pretrain_metric", "val/loss"))
    history = study.history([key], runs)
    arms = inputs.analysis.arms if stage == STAGE_CLASSIFY else study.arms(STAGE_UPSTREAM)
    counts = runs["outcome"].value_counts().to_dict()
    figure = plot_tune_phase(history, key, arms, f"{stage} tune phase ({key})")
    return figure, (f"{key} of every tune-phase trial per arm; {len(runs)} trials: "
                    + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                    + ". Pruned trials (outcome=pruned) end in a grey ×.")


def _has_tune_trials(stage: str, inputs: FigureInputs) -> bool:
    return len(inputs.study.select(stage=stage, phase=PHASE_TUNE)) > 0


# -- the best arm's evaluation ----------------------------------------------------------------

def _logged_evaluations(inputs: FigureInputs) -> list[dict]:
    """The best arm's ``evaluation.json`` files, one per seed."""
    arm = inputs.best_arm
    if not inputs.evaluations:
        raise MissingInputs(f"no evaluation.json logged by the replicate runs of {arm}")
    return list(inputs.evaluations.values())


def confusion_matrix(inputs: FigureInputs) -> Drawn:
    evaluations, arm = _logged_evaluations(inputs), inputs.best_arm
    # (seeds, true, pred) -> pooled (true, pred): every seed's test set counts once
    pooled = np.sum([np.asarray(e["confusion_matrix"]) for e in evaluations], axis=0)
    figure = plot_confusion_matrix(pooled, evaluations[0]["class_names"],
                                   f"{arm}: test confusion matrix, summed over {len(evaluations)} seed(s)")
    return figure, (f"Best arm by mean {inputs.analysis.metric}: {arm}. Counts summed over the seeds "
                    f"{sorted(inputs.evaluations)}; colour = share of the true class.")


def per_class_accuracy(inputs: FigureInputs) -> Drawn:
    evaluations = _logged_evaluations(inputs)
    names = evaluations[0]["class_names"]
    # rows: one per seed; columns: one per class
    per_seed = np.array([[np.nan if e["per_class_accuracy"].get(n) is None else e["per_class_accuracy"][n]
                          for n in names] for e in evaluations], dtype=float)
    figure = plot_per_class_accuracy(per_seed, names, f"{inputs.best_arm}: per-class test accuracy")
    return figure, ("Recall of each class on the test set: mean over seeds, whiskers = 95% "
                    "t-interval.")


def misclassified(inputs: FigureInputs) -> Drawn:
    arm, run, options = inputs.best_arm, inputs.representative, inputs.options
    seed = int(run["seed"])
    evaluation = inputs.evaluations.get(seed)
    if evaluation is None:
        raise MissingInputs(f"the run of {arm}, seed {seed} logged no evaluation.json")
    wrong = evaluation["misclassified"]
    pick = spread_over_classes(wrong["true"], options.max_misclassified)
    if len(pick) == 0:
        raise MissingInputs(f"{arm}, seed {seed} misclassified no test image")
    indices = np.asarray(wrong["indices"], dtype=int)[pick]
    true, pred = [wrong["true"][i] for i in pick], [wrong["pred"][i] for i in pick]
    corruption = evaluation.get("test_corruption", "none")
    _, seen, _, _ = test_inputs(inputs.dataset_of(run), corruption,
                                float(evaluation.get("test_noise_level", 0.0)), seed)
    figure = plot_misclassified(seen[indices, 0].numpy(), true, pred, evaluation["class_names"],
                                f"{arm}, seed {seed}: misclassified test images")
    return figure, (f"{len(indices)} of the misclassified test images listed in evaluation.json, "
                    "taken in turn from each true class (as the model saw them, "
                    f"test corruption {corruption}) of the seed closest "
                    f"to the arm's mean {inputs.analysis.metric}, with true and predicted label.")


def classifier_filters(inputs: FigureInputs) -> Drawn:
    arm = inputs.best_arm
    conv = first_conv(inputs.classifier)
    figure = plot_filters(conv.weight.detach()[:, 0].numpy(), f"{arm}, seed "
                          f"{int(inputs.representative['seed'])}: first-layer filters ({conv.weight.shape[0]})")
    return figure, ("Kernels of the classifier's first convolution (red positive, blue "
                    "negative, each on its own scale).")


def classifier_feature_maps(inputs: FigureInputs) -> Drawn:
    arm, options = inputs.best_arm, inputs.options
    _, seen, labels, _ = test_inputs(inputs.dataset_of(inputs.representative))
    pick = _sample_digits(labels.numpy(), options.n_feature_digits, options.seed)
    model = inputs.classifier
    maps = capture(model, first_conv(model), seen[pick])[:, :options.max_feature_maps].relu()
    figure = plot_feature_maps(seen[pick, 0].numpy(), maps.numpy(),
                               f"{arm}: first-layer feature maps (after ReLU) of sample test digits")
    return figure, (f"Activations of the first {maps.shape[1]} channels of the first "
                    "convolution for sample test digits, each map on its own scale.")


def _sample_digits(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` test indices of distinct classes where possible (reproducible)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:n]
    return np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes])


def _found(network):
    """A ``Pretraining`` or ``LatentSource`` whose network the store holds, else MissingInputs
    with the reason it does not."""
    if network.net is None:
        raise MissingInputs(network.why_missing)
    return network


# -- the pretrained encoder -------------------------------------------------------------------

def _pretraining(inputs: FigureInputs) -> Pretraining:
    return _found(inputs.pretraining)


def reconstructions(inputs: FigureInputs) -> Drawn:
    pretraining, options = _pretraining(inputs), inputs.options
    autoencoders = inputs.autoencoders_by_key(pretraining.seed)
    if not autoencoders:
        raise MissingInputs(f"no pretraining run of the study logged autoencoder.pt "
                            f"({pretraining.description} has only encoder.pt)")
    clean, _, labels, _ = test_inputs(pretraining.dataset)
    digits = clean[_sample_digits(labels.numpy(), options.n_reconstructions, options.seed)]
    rows, names = [digits[:, 0].numpy()], ["original"]
    for key, (run, path) in autoencoders.items():
        autoencoder, payload = load_autoencoder(path)
        kind, amount = payload.get("corruption", "none"), float(payload.get("noise_level", 0.0))
        # the corruption the autoencoder was trained against; a reproducible draw
        # from the run seed's test_noise stream
        noisy = corrupt(digits, kind, amount, stream(run.seed or 0, "test_noise"))
        with torch.inference_mode():
            reconstructed = autoencoder(noisy)
        if kind != "none":
            rows.append(noisy[:, 0].numpy())
            names.append(f"{key}: input ({kind} {amount:g})")
        rows.append(reconstructed[:, 0].numpy())
        names.append(f"{key}: output")
    figure = mosaic([list(row) for row in rows], f"Autoencoder reconstructions of test digits "
                    f"(seed {pretraining.seed})", row_labels=names)
    return figure, ("First row: clean test digits. Per pretraining: the corrupted input "
                    "(denoising autoencoders only) and the reconstruction; "
                    f"autoencoders: {', '.join(autoencoders)}.")


def encoder_filters(inputs: FigureInputs) -> Drawn:
    pretraining = _pretraining(inputs)
    conv = first_conv(pretraining.net)
    figure = plot_filters(conv.weight.detach()[:, 0].numpy(),
                          f"{pretraining.description}: first-layer filters")
    return figure, ("Kernels of the encoder's first convolution (the low-level features "
                    "pretraining learned).")


def encoder_feature_maps(inputs: FigureInputs) -> Drawn:
    pretraining, options = _pretraining(inputs), inputs.options
    clean, _, labels, _ = test_inputs(pretraining.dataset)
    pick = _sample_digits(labels.numpy(), options.n_feature_digits, options.seed)
    net = pretraining.net
    maps = capture(net, first_conv(net), clean[pick])[:, :options.max_feature_maps].relu()
    figure = plot_feature_maps(clean[pick, 0].numpy(), maps.numpy(),
                               f"{pretraining.description}: first-layer feature maps (after ReLU)")
    return figure, "Activations of the encoder's first convolution for sample test digits."


# -- the latent space (the pretrained encoder, else the best arm's classifier) ----------------

def _latent_source(inputs: FigureInputs) -> LatentSource:
    return _found(inputs.latent_source)


def top_activating(inputs: FigureInputs) -> Drawn:
    source, options = _latent_source(inputs), inputs.options
    clean, _, _, _ = test_inputs(source.dataset)
    codes = embed(source.net, clean)
    figure = plot_top_activating(clean[:, 0].numpy(), codes, options.top_k, options.max_units,
                                 f"{source.description}: top-{options.top_k} test images per latent unit")
    return figure, (f"For the {min(options.max_units, codes.shape[1])} most varied of "
                    f"{codes.shape[1]} latent units, the {options.top_k} test images with the "
                    "largest activation (value above each).")


def tsne(inputs: FigureInputs) -> Drawn:
    source, options = _latent_source(inputs), inputs.options
    clean, _, labels, names = test_inputs(source.dataset)
    rng = np.random.default_rng(options.seed)
    pick = np.sort(rng.choice(len(clean), size=min(options.tsne_points, len(clean)), replace=False))
    embedding = tsne_embedding(embed(source.net, clean[pick]), options.seed)
    figure = plot_tsne(embedding, labels.numpy()[pick], names,
                       f"{source.description}: t-SNE of {len(pick)} test digits")
    return figure, ("Latent codes of test digits embedded in 2-D by "
                    "t-SNE (scikit-learn, PCA init), coloured by the true digit.")


def tsne_embedding(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) t-SNE coordinates of ``codes`` (n, latent units)."""
    perplexity = float(min(30.0, max(2.0, (len(codes) - 1) / 3)))
    # 500 iterations (sklearn's default is 1000): the layout is settled by then on a few
    # thousand points and it halves the cost on a small CPU.
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity,
                max_iter=500).fit_transform(np.asarray(codes, dtype=np.float32))


# -- the table of figures, and writing them ---------------------------------------------------

def _always(inputs: FigureInputs) -> bool:
    return True


def _evaluations_hold(*keys: str) -> Callable[[FigureInputs], bool]:
    """Whether the best arm's evaluation.json files hold ``keys`` (judged once there is a best arm)."""
    def check(inputs: FigureInputs) -> bool:
        return inputs.analysis.best_arm is None or any(all(k in e for k in keys) for e in inputs.evaluations.values())
    return check


def _image_data(inputs: FigureInputs) -> bool:
    """Whether the study ran on an image dataset of trainables.data, whose test images a figure reloads."""
    run = inputs.representative
    return run is None or inputs.dataset_of(run) in DATASET_NAMES


def _classifier_model(inputs: FigureInputs) -> bool:
    """Whether the best arm's representative run holds a model.pt of our classifier to rebuild."""
    run = inputs.representative
    return run is None or (_image_data(inputs) and inputs.study.artifact(run["run_id"], "model.pt") is not None)


def _pretrained(inputs: FigureInputs) -> bool:
    return inputs.pretraining.net is not None


def _latent_network(inputs: FigureInputs) -> bool:
    return _pretrained(inputs) or _classifier_model(inputs)


def _misclassified_recorded(inputs: FigureInputs) -> bool:
    """The misclassified images: listed in evaluation.json, drawn from our image datasets' test sets."""
    return _evaluations_hold("misclassified", "class_names")(inputs) and _image_data(inputs)


_IMAGES = "an image dataset of trainables.data (" + ", ".join(DATASET_NAMES) + ")"
_CLASSIFIER = f"train with trainables.classifier on {_IMAGES}: the figure rebuilds its model.pt"
_AUTOENCODER = "an upstream stage trained by trainables.autoencoder, whose runs log {file}"


@dataclass(frozen=True)
class FigureSpec:
    name: str                                     # file stem: figures/<name>.png
    title: str
    draw: Callable[[FigureInputs], Drawn]         # raises MissingInputs(why)
    applies: Callable[[FigureInputs], bool] = _always     # False: not listed at all
    recorded: Callable[[FigureInputs], bool] = _always    # False: left out, with the needs line
    needs: str = ""                               # what a trainable must log to get the figure


FIGURES: list[FigureSpec] = [
    FigureSpec("learning_curves", "Learning curves per arm", learning_curves),
    *[FigureSpec(f"tune_{stage}", f"Tune phase of the {stage} stage as ASHA saw it",
                 partial(tune_phase, stage=stage), partial(_has_tune_trials, stage))
      for stage in (STAGE_CLASSIFY, STAGE_UPSTREAM)],
    FigureSpec("confusion_matrix", "Confusion matrix of the best arm", confusion_matrix,
               recorded=_evaluations_hold("confusion_matrix", "class_names"),
               needs="log evaluation.json with confusion_matrix (rows: true class, columns: predicted) and "
                     "class_names"),
    FigureSpec("per_class_accuracy", "Per-class accuracy of the best arm", per_class_accuracy,
               recorded=_evaluations_hold("per_class_accuracy", "class_names"),
               needs="log evaluation.json with per_class_accuracy ({class name: accuracy}) and class_names"),
    FigureSpec("misclassified", "Misclassified test images of the best arm", misclassified,
               recorded=_misclassified_recorded,
               needs=f"log evaluation.json with misclassified ({{indices, true, pred}}) and class_names, on {_IMAGES}"),
    FigureSpec("filters_classifier", "First-layer filters of the best arm's classifier",
               classifier_filters, recorded=_classifier_model, needs=_CLASSIFIER),
    FigureSpec("feature_maps_classifier", "First-layer feature maps of the best arm's classifier",
               classifier_feature_maps, recorded=_classifier_model, needs=_CLASSIFIER),
    FigureSpec("reconstructions", "Autoencoder reconstructions", reconstructions,
               recorded=_pretrained, needs=_AUTOENCODER.format(file="autoencoder.pt")),
    FigureSpec("filters_encoder", "First-layer filters of the pretrained encoder", encoder_filters,
               recorded=_pretrained, needs=_AUTOENCODER.format(file="encoder.pt")),
    FigureSpec("feature_maps_encoder", "First-layer feature maps of the pretrained encoder",
               encoder_feature_maps, recorded=_pretrained, needs=_AUTOENCODER.format(file="encoder.pt")),
    FigureSpec("top_activating", "Test images that most activate each latent unit", top_activating,
               recorded=_latent_network, needs=f"{_AUTOENCODER.format(file='encoder.pt')}, or {_CLASSIFIER}"),
    FigureSpec("tsne", "t-SNE of the latent space", tsne,
               recorded=_latent_network, needs=f"{_AUTOENCODER.format(file='encoder.pt')}, or {_CLASSIFIER}"),
]


def make_figures(analysis, out: Path, options: FigureOptions = FigureOptions()) -> list[FigureResult]:
    """Every figure of ``FIGURES`` that applies to ``analysis`` (an ``analysis.report.Analysis``),
    as PNG in ``out``.

    A figure whose kind of input the study does not record is returned with ``path=None`` and
    its ``needs`` line; one whose inputs are missing (an artifact a run did not log) or whose
    drawing fails, with ``path=None`` and the reason. None is dropped.
    """
    inputs = FigureInputs(analysis, options)
    return [_draw(spec, inputs, Path(out)) if _recorded(spec, inputs)
            else FigureResult(spec.name, spec.title, "", None, needs=spec.needs)
            for spec in FIGURES if spec.applies(inputs)]


def _recorded(spec: FigureSpec, inputs: FigureInputs) -> bool:
    """``spec.recorded``; a check that fails counts as recorded, so the drawing reports the error."""
    try:
        return spec.recorded(inputs)
    except Exception:  # noqa: BLE001 - _draw then says what failed
        return True


def _draw(spec: FigureSpec, inputs: FigureInputs, out: Path) -> FigureResult:
    try:
        figure, caption = spec.draw(inputs)
        return FigureResult(spec.name, spec.title, caption, save(figure, out / f"{spec.name}.png"))
    except MissingInputs as why:
        return FigureResult(spec.name, spec.title, "", None, str(why))
    except Exception as err:  # one broken figure must not cost the whole report
        return FigureResult(spec.name, spec.title, "", None, f"failed: {type(err).__name__}: {err}")
