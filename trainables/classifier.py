"""Trainable: image classifier, from scratch or on a pretrained encoder (seeds 000-004).

Models: seed 003's encoder + dense head (scratch, fine-tuned or frozen on an `encoder.pt`
from trainables.autoencoder), or seed 002's 3-conv CNN (kernel size and stride from seed
004's sweep). Tasks: 10 digits, or even/odd with one logit and BCEWithLogitsLoss (seed 000).
Ablation knobs: label fraction (seed 003's 10% vs 100%), symmetric label noise on the training
and validation labels (seed 001's noisy MNIST), augmentation (seed 002), corrupted training
and/or test inputs (seed 004's Gaussian noise, seed 003's salt-and-pepper), and a frozen
denoising autoencoder in front of the classifier, in training and test (seed 004's "trained
on denoised") or at test time only (a clean-trained classifier deployed behind the denoiser).

    python -m trainables.classifier --dataset mnist-5k --model cnn --epochs 3
    python -m trainables.classifier --encoder-checkpoint /tmp/ae/encoder.pt --encoder-mode frozen \\
        --label-fraction 0.1 --epochs 3

Report per epoch: epoch, train/loss, val/loss, val/acc, final, and precision (the string "fp32" or
"bf16": what the run trained in). The last report adds the test metrics (when evaluate_test),
val/best_epoch, time_to/* (when the run first came within 1% of its delivered validation
accuracy: see time_to), model/trainable_params and cost/*. The test set is only looked at
after training ends: model selection (early stopping) uses the validation split.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.checkpoint import (
    MODEL_FILE, CheckpointError, Reporter, Stopwatch, checkpoint_meta, cpu_state, end_epoch, final_weights,
    keep_if_best, load_weights, read_upstream_payload, report_checkpoint, start_or_resume,
)
from trainables.common import (
    LossMeter, check_finite, close_training_pass, epoch_batches, final_costs, make_optimizer,
    keep_run_precision, optimizer_step, predict, print_reporter, run_cli, seed_init, select_backend, set_lr,
    trial_data,
)
from trainables.config import CLASSIFIER_SCHEMA, ConfigError, resolve_classifier_config
from trainables.data import ImageDataset
from trainables.models import (
    Autoencoder, ConvEncoder, DenoisedClassifier, EncoderClassifier, MLPHead, SmallCNN,
)
from trainables.seeds import stream
from trainables.splits import flip_labels, make_targets, task_class_names
from trainables.transforms import augment_batch, corrupt, corrupt_fixed

TRAINABLE = "classifier"
EVALUATION_FILE = "evaluation.json"
MAX_MISCLASSIFIED = 64  # images listed in evaluation.json for error analysis
TIME_TO_SHARE = 0.99  # time_to/*_99: first epoch within 1% of the delivered validation accuracy


def train_classifier(config: Mapping[str, Any] | None, reporter: Reporter | None = None, *,
                     dataset: ImageDataset | None = None, resume_from: str | None = None) -> dict:
    """Train a classifier; report once per epoch with a checkpoint; return the last report plus
    "checkpoint": None. See docs/architecture.md §1 for the contract."""
    # ============================================================================ config
    cfg = resolve_classifier_config(config)
    reporter = reporter or print_reporter
    backend = select_backend(cfg)
    clock = Stopwatch()
    seed, binary = cfg["seed"], cfg["task"] == "even_odd"

    # ============================================================================ data
    # label_fraction keeps a stratified share of the training AND the validation labels
    # (see make_splits): same seed -> same subset in every arm
    dataset, splits = trial_data(cfg, dataset, backend.device, label_fraction=cfg["label_fraction"])
    class_names = task_class_names(dataset, cfg["task"])
    # label noise after the split and the label fraction, on the task's own classes: the same
    # images get the same wrong labels in every arm of a seed; validation labels are as noisy
    # (no clean labels to select on), the test labels are left clean (see flip_labels)
    noisy = {"rate": cfg["label_noise"], "n_classes": len(class_names), "seed": seed,
             "pool_size": int(dataset.train_labels.numel())}
    clean_train_y, clean_val_y = make_targets(splits.train_y, cfg["task"]), make_targets(splits.val_y, cfg["task"])
    train_y = flip_labels(clean_train_y, splits.train_index, **noisy)
    val_y = flip_labels(clean_val_y, splits.val_index, **noisy)
    test_y = make_targets(splits.test_y, cfg["task"])
    # Test inputs are corrupted once per seed from their own stream: all arms are scored on
    # the same images. Validation follows the arm's TRAINING distribution (its own stream):
    # a practitioner selects hyperparameters on data like the data they train on, not on the
    # test-time corruption they do not know about (no oracle selection).
    test_input = corrupt_fixed(splits.test_x, cfg["test_corruption"], cfg["test_noise_level"],
                               stream(seed, "test_noise"))
    val_input = corrupt_fixed(splits.val_x, cfg["train_corruption"], cfg["train_noise_level"],
                              stream(seed, "val_noise"))
    # An epoch's budget in examples: the full training split's size under equal_steps, so a
    # 10%-label arm takes as many optimizer steps as the 100% arm (epochs scaled by 1/fraction)
    epoch_examples = splits.full_train_size if cfg["equal_steps"] else int(train_y.numel())
    order = stream(seed, "order")  # CPU: the same batch order on every device
    noise = stream(seed, "noise", backend.device)  # per-batch draws where the batch lives
    augment = stream(seed, "augment", backend.device)
    generators = {"order": order, "noise": noise, "augment": augment}

    # ============================================================================ model
    seed_init(seed)
    n_out = 1 if binary else len(class_names)  # binary: one logit, BCEWithLogitsLoss
    model, description = _build_model(cfg, n_out, dataset)
    # denoiser_at="test": the denoiser is loaded now (a bad file fails in the first epoch, not
    # after training) but sits in front of the classifier only for the test inputs
    test_denoiser = _test_time_denoiser(cfg, dataset)
    if test_denoiser is not None:
        test_denoiser = backend.prepare_model(test_denoiser)
    model = backend.prepare_model(model)
    optimizer = make_optimizer(cfg, model.parameters())
    progress, clock = start_or_resume(resume_from, TRAINABLE, model, optimizer, generators, description,
                                      cfg["early_stopping_patience"], clock)
    backend = keep_run_precision(backend, cfg, progress.last_metrics)  # a resumed run keeps its precision
    if progress.finished:  # the checkpoint is already the final one: nothing left to do
        return {**progress.last_metrics, "checkpoint": None}
    meta = checkpoint_meta(TRAINABLE, cfg, description, dataset, class_names=list(class_names),
                           n_train=int(train_y.numel()), n_val=int(val_y.numel()), precision=backend.precision,
                           labels_flipped={"train": int((train_y != clean_train_y).sum()),
                                           "val": int((val_y != clean_val_y).sum())})

    def loss_of(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if binary:
            return F.binary_cross_entropy_with_logits(logits.float().squeeze(1), target.float())
        return F.cross_entropy(logits.float(), target)

    # ============================================================================ train
    metrics: dict[str, float | str] = {}
    for epoch in range(progress.epoch + 1, cfg["epochs"] + 1):
        model.train()
        started = time.perf_counter()
        meter = LossMeter(backend.device)
        batches = epoch_batches(train_y.numel(), cfg["batch_size"], order, backend.device, epoch_examples)
        for step, index in enumerate(batches):
            set_lr(optimizer, cfg, (epoch - 1 + step / len(batches)) / cfg["epochs"])
            x = splits.train_x[index]
            if cfg["augment"]:
                x = augment_batch(x, augment)
            # corruption after augmentation: noise is a property of the sensor, not the digit
            x = corrupt(x, cfg["train_corruption"], cfg["train_noise_level"], noise)
            with backend.autocast():
                logits = model(backend.prepare_input(x))
            loss = loss_of(logits, train_y[index])
            optimizer_step(optimizer, loss)
            meter.add(loss, index.numel())
        train_loss = close_training_pass(meter, progress, started, epoch)

        # ======================================================================== validate
        val_logits = predict(model, val_input, backend)
        val_loss = check_finite(float(loss_of(val_logits, val_y)), "val/loss", epoch)
        val_acc = float((_predicted(val_logits, binary) == val_y).double().mean())
        if cfg["keep_best"]:  # selection on validation only: accuracy first, then loss
            keep_if_best(progress, model, epoch, (val_acc, -val_loss))
        final = progress.epoch_done(epoch, val_loss, cfg["epochs"])  # early stopping watches val/loss
        metrics = {"epoch": float(epoch), "train/loss": train_loss, "val/loss": val_loss,
                   "val/acc": val_acc, "val/examples": float(val_y.numel()),   # lead in examples (study.tuning)
                   "final": float(final), "precision": backend.precision}
        weights = cpu_state(model)  # this epoch's, in state.pt: what a resumed run continues from
        files: dict[str, Any] = {}
        json_files: dict[str, Any] = {}

        # ======================================================================== evaluate (test)
        if final:
            weights_epoch = final_weights(model, progress)  # the selected (best validation) epoch
            # the delivered model is what the test scores: with a test-time denoiser, both
            delivered = model if test_denoiser is None else DenoisedClassifier(test_denoiser, model)
            files[MODEL_FILE] = cpu_state(delivered)
            if cfg["evaluate_test"]:
                test_logits = predict(delivered, test_input, backend)
                test_metrics, evaluation = evaluate(test_logits, test_y, class_names, binary)
                evaluation.update({"weights_from_epoch": weights_epoch,
                                   "test_corruption": cfg["test_corruption"],
                                   "test_noise_level": cfg["test_noise_level"],
                                   "denoiser_at": cfg["denoiser_at"] if cfg["denoiser_checkpoint"] else None})
                json_files[EVALUATION_FILE] = evaluation
                metrics.update(test_metrics)
            metrics["val/best_epoch"] = float(weights_epoch)
            metrics.update(time_to(progress.history, val_acc, epoch, weights_epoch, len(batches),
                                   progress.train_seconds_by_epoch))
            metrics.update(final_costs(model, clock, progress))
        state = end_epoch(progress, metrics, final, clock, weights, optimizer, generators)
        report_checkpoint(reporter, metrics, state, meta, files, json_files)
        if final:
            break
    # no epoch ran when a resumed config asks for no more epochs than were done
    return {**(metrics or progress.last_metrics or {}), "checkpoint": None}


# What it declares (study/declared.py): the config keys it accepts, checked before any trial;
# the protocol's guarantees it keeps; how its replicates' models are logged to MLflow.
train_classifier.schema = CLASSIFIER_SCHEMA
train_classifier.claims = ("best_epoch", "equal_steps")
train_classifier.mlflow_model = "trainables.model_export:classifier_for_mlflow"
train_classifier.epoch_seconds = "trainables.cost:classifier_epoch_seconds"


# ---------------------------------------------------------------------------------------------
# Model assembly
# ---------------------------------------------------------------------------------------------

def _build_model(cfg: Mapping[str, Any], n_out: int, dataset: ImageDataset) -> tuple[nn.Module, str]:
    """The classifier the config asks for and a one-line description of its shape.

    Construction order is fixed (encoder, head, then loading weights over the random init), so
    the head starts from the same weights whether or not the encoder is pretrained: the
    pretraining arms differ from the scratch arm only in the encoder.
    """
    if cfg["model"] == "cnn":
        model: nn.Module = SmallCNN(n_out, kernel_size=cfg["cnn_kernel_size"], stride=cfg["cnn_stride"],
                                    dropout=cfg["dropout"])
        description = (f"SmallCNN(kernel_size={cfg['cnn_kernel_size']}, stride={cfg['cnn_stride']}, "
                       f"dropout={cfg['dropout']}, n_out={n_out})")
    else:
        encoder = ConvEncoder(cfg["latent_dim"])
        head = MLPHead(cfg["latent_dim"], n_out, hidden=cfg["head_hidden"], layers=cfg["head_layers"],
                       dropout=cfg["dropout"])
        if cfg["encoder_checkpoint"] is not None:
            _load_pretrained(encoder, cfg["encoder_checkpoint"], "encoder.pt", "encoder_checkpoint",
                             cfg["latent_dim"], dataset)
        # frozen with no checkpoint is allowed: a random-features baseline
        model = EncoderClassifier(encoder, head, frozen=cfg["encoder_mode"] == "frozen")
        description = (f"EncoderClassifier(latent_dim={cfg['latent_dim']}, head_hidden={cfg['head_hidden']}, "
                       f"head_layers={cfg['head_layers']}, n_out={n_out}, encoder={cfg['encoder_mode']})")
    if cfg["denoiser_checkpoint"] is not None and cfg["denoiser_at"] == "train_and_test":
        payload = _read_payload(cfg["denoiser_checkpoint"], "autoencoder.pt", "denoiser_checkpoint")
        denoiser = Autoencoder(int(payload["latent_dim"]))
        _load_pretrained(denoiser, cfg["denoiser_checkpoint"], "autoencoder.pt", "denoiser_checkpoint",
                         int(payload["latent_dim"]), dataset, payload)
        model = DenoisedClassifier(denoiser, model)
        description = f"DenoisedClassifier(denoiser latent_dim={payload['latent_dim']}, {description})"
    return model, description


def _test_time_denoiser(cfg: Mapping[str, Any], dataset: ImageDataset) -> nn.Module | None:
    """The frozen denoiser of denoiser_at="test" on the trial's device, else None.

    Built under a forked RNG: its random init (overwritten by the checkpoint) draws nothing
    from the global stream the classifier's dropout uses, so the classifier trains exactly as
    the same config without a denoiser would (the same seed gives the same classifier)."""
    if cfg["denoiser_at"] != "test":
        return None
    if cfg["denoiser_checkpoint"] is None:
        raise ConfigError("config key 'denoiser_at' = 'test' but no denoiser_checkpoint is set; allowed: "
                          "'train_and_test' (the default) without a denoiser, or a denoiser_checkpoint")
    payload = _read_payload(cfg["denoiser_checkpoint"], "autoencoder.pt", "denoiser_checkpoint")
    with torch.random.fork_rng(devices=[]):
        denoiser = Autoencoder(int(payload["latent_dim"]))
    _load_pretrained(denoiser, cfg["denoiser_checkpoint"], "autoencoder.pt", "denoiser_checkpoint",
                     int(payload["latent_dim"]), dataset, payload)
    return denoiser.requires_grad_(False).eval()


def _read_payload(path: str, filename: str, key: str) -> dict:
    """The dict in an encoder.pt / autoencoder.pt (a checkpoint directory holding it works too)."""
    file = Path(path)
    if file.is_dir():
        file = file / filename
    if not file.is_file():
        raise CheckpointError(f"config key {key!r}: {file} does not exist (expected a {filename} "
                              f"written by trainables.autoencoder)")
    try:
        return read_upstream_payload(file)
    except ValueError as err:
        raise CheckpointError(f"config key {key!r}: {err}") from None


def _load_pretrained(module: nn.Module, path: str, filename: str, key: str, latent_dim: int,
                     dataset: ImageDataset, payload: dict | None = None) -> None:
    payload = payload or _read_payload(path, filename, key)
    found = f"latent_dim={payload['latent_dim']}"
    load_weights(module, payload["state_dict"], f"config key {key!r}: {path}",
                 f"latent_dim={latent_dim}", found)
    if payload.get("data_sha256") not in (None, dataset.sha256):
        # transfer across datasets is a legitimate experiment, but never an accidental one
        warnings.warn(f"{key} {path} was pretrained on {payload.get('dataset')!r} "
                      f"(sha256 {str(payload.get('data_sha256'))[:12]}), not on this {dataset.name!r} "
                      f"(sha256 {dataset.sha256[:12]})", stacklevel=3)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def time_to(history: list[Mapping[str, Any]], val_acc: float, epoch: int, delivered_epoch: int,
            steps_per_epoch: int, train_seconds_by_epoch: list[float], share: float = TIME_TO_SHARE
            ) -> dict[str, float]:
    """When the run first came within (1 - share) of its own final validation accuracy.

    "Final" is the validation accuracy of the epoch whose weights the run delivers and tests
    (val/best_epoch: the best validation epoch under keep_best, else the last): the accuracy the
    run actually ends with, chosen on validation only. With it the answer always exists (that
    epoch reaches it) and a late dip after the best epoch does not lower the bar. `history`
    holds the reports of the epochs before `epoch`, whose validation accuracy is `val_acc`.

        time_to/epoch_<p>    the first epoch whose val/acc >= share x final: an epoch is the full
                             training split's worth of examples in every arm (equal_steps), so
                             epochs compare across arms, studies and machines
        time_to/step_<p>     optimizer steps to the end of that epoch (they depend on the tuned
                             batch size: updates, not examples)
        time_to/seconds_<p>  wall seconds of the training passes of epochs 1 to that one
                             (validation and checkpoints excluded): comparable only between
                             trials of one run on one machine (left out for a run resumed from a
                             checkpoint that did not record them)
    Validation runs at the end of each epoch, so the resolution is one epoch.
    """
    accuracy = {int(row["epoch"]): float(row["val/acc"]) for row in history}
    accuracy[epoch] = val_acc
    target = share * accuracy[delivered_epoch]
    first = min(e for e, acc in accuracy.items() if acc >= target)
    suffix = f"{round(share * 100)}"
    out = {f"time_to/epoch_{suffix}": float(first), f"time_to/step_{suffix}": float(first * steps_per_epoch)}
    if len(train_seconds_by_epoch) == epoch:
        out[f"time_to/seconds_{suffix}"] = float(train_seconds_by_epoch[first - 1])
    return out


def _predicted(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    return (logits.squeeze(1) > 0).long() if binary else logits.argmax(dim=1)


def evaluate(logits: torch.Tensor, target: torch.Tensor, class_names: tuple[str, ...], binary: bool
             ) -> tuple[dict[str, float], dict]:
    """Test metrics (report keys) and the evaluation.json content, with scikit-learn's functions.

    ROC-AUC is one-vs-rest over classes (plain AUC of the positive class when binary); it is
    NaN when the test labels hold a single class. Per-class accuracy is the recall of a class.
    """
    from sklearn import metrics as skm  # imported here: the CLI answers bad flags without it

    k = len(class_names)
    y = target.cpu().numpy()
    logits64 = logits.double().cpu()
    if binary:
        p1 = torch.sigmoid(logits64.squeeze(1)).numpy()
        probs = np.stack([1 - p1, p1], axis=1)
    else:
        probs = torch.softmax(logits64, dim=1).numpy()
    pred = probs.argmax(axis=1)
    labels = list(range(k))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y, pred, labels=labels, average="macro", zero_division=0)
    try:
        auc = skm.roc_auc_score(y, probs[:, 1]) if binary else skm.roc_auc_score(
            y, probs, multi_class="ovr", labels=labels)
    except ValueError:  # a class missing from the test labels: AUC undefined
        auc = float("nan")
    confusion = skm.confusion_matrix(y, pred, labels=labels)
    support = confusion.sum(axis=1)
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    metrics = {
        "test/acc": float(skm.accuracy_score(y, pred)),
        "test/precision_macro": float(precision),
        "test/recall_macro": float(recall),
        "test/f1_macro": float(f1),
        "test/roc_auc": float(auc),
        "test/log_loss": float(skm.log_loss(y, probs, labels=labels)),
    }
    metrics.update({f"test/acc_class_{c}": float(per_class[c]) for c in labels})
    wrong = np.flatnonzero(pred != y)[:MAX_MISCLASSIFIED]
    evaluation = {
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted class
        "per_class_accuracy": {name: float(per_class[c]) for c, name in enumerate(class_names)},
        "n_test": int(y.size),
        "misclassified": {"indices": wrong.tolist(), "true": y[wrong].tolist(), "pred": pred[wrong].tolist()},
        # every test example's prediction, in test-set order (the same order in every arm):
        # analysis pairs arms per example (hierarchical bootstrap over seeds and examples)
        "predictions": pred.tolist(),
        "targets": y.tolist(),
        "metrics": metrics,
    }
    return metrics, _json_safe(evaluation)


def _json_safe(value):
    """NaN (an undefined AUC or per-class accuracy) becomes null: evaluation.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    return run_cli(train_classifier, CLASSIFIER_SCHEMA, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
