"""What one epoch of our trainables costs, for ``--dry-run``'s estimate and the progress ETA:
the ``epoch_seconds`` the classifier and the autoencoder declare (study/declared.py).

Training images per second of ONE trial. CPU figures: one core per trial on this project's
2-core reference machine with the other core busy too; GPU figures: one trial alone on an
H100. "denoiser" is the forward pass of an autoencoder put in front of a classifier.
Re-measure with ``python -m benchmarks.throughput --model MODEL``.
"""
from __future__ import annotations

from typing import Any, Mapping

IMAGES_PER_SECOND = {
    ("cpu", "cnn"): 2500.0,
    ("cpu", "encoder_head"): 3000.0,
    ("cpu", "autoencoder"): 700.0,
    ("cpu", "denoiser"): 2500.0,
    ("cuda", "cnn"): 200_000.0,
    ("cuda", "encoder_head"): 200_000.0,
    ("cuda", "autoencoder"): 150_000.0,
    ("cuda", "denoiser"): 400_000.0,
}
TRAIN_IMAGES = {"mnist-5k": 4000, "mnist": 60000, "fashion-mnist": 60000}   # the pool the splits come from
EPOCH_OVERHEAD_S = 0.3     # validation, checkpoint and report per epoch


def _training_images(config: Mapping[str, Any]) -> float:
    """An epoch is the full training split's worth of examples (10% held out for validation),
    whatever the label fraction."""
    return TRAIN_IMAGES.get(str(config.get("dataset")), 60000) * (1 - float(config.get("val_fraction", 0.1)))


def classifier_epoch_seconds(config: Mapping[str, Any], device: str) -> float:
    per_image = 1 / IMAGES_PER_SECOND[(device, str(config.get("model", "cnn")))]
    # a denoiser in the training loop costs its forward pass on every training image; one put in
    # front only at test time (denoiser_at="test") costs one pass over the test set, not counted
    denoised = config.get("denoiser_artifact") or config.get("denoiser_checkpoint")
    if denoised and config.get("denoiser_at", "train_and_test") == "train_and_test":
        per_image += 1 / IMAGES_PER_SECOND[(device, "denoiser")]
    return _training_images(config) * per_image + EPOCH_OVERHEAD_S


def autoencoder_epoch_seconds(config: Mapping[str, Any], device: str) -> float:
    return _training_images(config) / IMAGES_PER_SECOND[(device, "autoencoder")] + EPOCH_OVERHEAD_S
