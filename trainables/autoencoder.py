"""Trainable: plain or denoising convolutional autoencoder (seed 003), the pretraining stage.

The denoising variant corrupts the input (Gaussian noise or salt-and-pepper) and is scored
against the clean image, so the encoder has to learn digit structure rather than copy
pixels. The product is `encoder.pt`, which the classifier fine-tunes or freezes, and
`autoencoder.pt`, which the classifier can put in front of itself as a denoiser.

    python -m trainables.autoencoder --dataset mnist-5k --epochs 3 --output /tmp/ae
    python -m trainables.autoencoder --corruption salt_pepper --noise-level 0.3 --patience 3

Report per epoch: epoch, train/loss (MSE on training batches), val/loss (MSE of the
reconstruction of the corrupted validation images against the clean ones), val/psnr (mean
per-image PSNR in dB, peak 1.0), final, precision (the string "fp32" or "bf16": what the run
trained in); the last report adds model/trainable_params and cost/*.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from trainables.checkpoint import (
    MODEL_FILE, Reporter, Stopwatch, checkpoint_meta, cpu_state, end_epoch, final_weights, keep_if_best,
    report_checkpoint, start_or_resume,
)
from trainables.common import (
    LossMeter, check_finite, close_training_pass, epoch_batches, final_costs, make_optimizer,
    keep_run_precision, optimizer_step, predict, print_reporter, run_cli, seed_init, select_backend, set_lr,
    trial_data,
)
from trainables.config import AUTOENCODER_SCHEMA, resolve_autoencoder_config
from trainables.data import ImageDataset
from trainables.models import Autoencoder
from trainables.seeds import stream
from trainables.transforms import corrupt, corrupt_fixed

TRAINABLE = "autoencoder"
ENCODER_FILE = "encoder.pt"
AUTOENCODER_FILE = "autoencoder.pt"


def train_autoencoder(config: Mapping[str, Any] | None, reporter: Reporter | None = None, *,
                      dataset: ImageDataset | None = None, resume_from: str | None = None) -> dict:
    """Train an autoencoder; report once per epoch with a checkpoint; return the last report
    plus "checkpoint": None. See docs/architecture.md §1 for the contract."""
    # ============================================================================ config
    cfg = resolve_autoencoder_config(config)
    reporter = reporter or print_reporter
    backend = select_backend(cfg)
    clock = Stopwatch()
    seed, corruption, level = cfg["seed"], cfg["corruption"], cfg["noise_level"]

    # ============================================================================ data
    # The autoencoder never sees labels, so there is no label fraction: pretraining uses every
    # training image (seed 003 pretrains on the full training set).
    dataset, splits = trial_data(cfg, dataset, backend.device)
    # Validation inputs are corrupted once, from their own stream: every epoch and every arm
    # with this seed and corruption scores the same noisy images.
    val_input = corrupt_fixed(splits.val_x, corruption, level, stream(seed, "val_noise"))
    order = stream(seed, "order")  # CPU: batch order is the same on every device
    noise = stream(seed, "noise", backend.device)  # drawn batch by batch where the batch lives
    generators = {"order": order, "noise": noise}

    # ============================================================================ model
    seed_init(seed)
    model = backend.prepare_model(Autoencoder(cfg["latent_dim"]))
    description = f"Autoencoder(latent_dim={cfg['latent_dim']})"
    optimizer = make_optimizer(cfg, model.parameters())
    progress, clock = start_or_resume(resume_from, TRAINABLE, model, optimizer, generators, description,
                                      cfg["patience"], clock)
    backend = keep_run_precision(backend, cfg, progress.last_metrics)  # a resumed run keeps its precision
    if progress.finished:  # the checkpoint is already the final one: nothing left to do
        return {**progress.last_metrics, "checkpoint": None}
    meta = checkpoint_meta(TRAINABLE, cfg, description, dataset, precision=backend.precision)

    # ============================================================================ train
    metrics: dict[str, float | str] = {}
    n_train = splits.train_x.shape[0]
    for epoch in range(progress.epoch + 1, cfg["epochs"] + 1):
        model.train()
        started = time.perf_counter()
        meter = LossMeter(backend.device)
        batches = epoch_batches(n_train, cfg["batch_size"], order, backend.device)
        for step, index in enumerate(batches):
            set_lr(optimizer, cfg, (epoch - 1 + step / len(batches)) / cfg["epochs"])
            clean = splits.train_x[index]
            # a fresh corruption every batch: the denoiser never sees the same noisy image twice
            noisy = corrupt(clean, corruption, level, noise)
            with backend.autocast():
                reconstruction = model(backend.prepare_input(noisy))
            loss = F.mse_loss(reconstruction.float(), clean)
            optimizer_step(optimizer, loss)
            meter.add(loss, index.numel())
        train_loss = close_training_pass(meter, progress, started, epoch)

        # ======================================================================== evaluate
        reconstruction = predict(model, val_input, backend)
        per_image_mse = (reconstruction - splits.val_x).square().mean(dim=(1, 2, 3))
        val_loss = check_finite(float(per_image_mse.mean()), "val/loss", epoch)
        val_psnr = float((-10.0 * torch.log10(per_image_mse.clamp_min(1e-10))).mean())
        keep_if_best(progress, model, epoch, (-val_loss,))  # delivers the best validation epoch
        final = progress.epoch_done(epoch, val_loss, cfg["epochs"])
        metrics = {"epoch": float(epoch), "train/loss": train_loss, "val/loss": val_loss,
                   "val/psnr": val_psnr, "final": float(final), "precision": backend.precision}
        weights = cpu_state(model)  # this epoch's, in state.pt: what a resumed run continues from
        files: dict[str, Any] = {}
        if final:
            weights_epoch = final_weights(model, progress)  # the best validation epoch
            ae_state = cpu_state(model)
            provenance = {"latent_dim": cfg["latent_dim"], "dataset": dataset.name,
                          "data_sha256": dataset.sha256, "corruption": corruption,
                          "noise_level": level, "epoch": weights_epoch}
            files = {
                MODEL_FILE: ae_state,
                ENCODER_FILE: {"state_dict": {k[len("encoder."):]: v for k, v in ae_state.items()
                                              if k.startswith("encoder.")}, **provenance},
                AUTOENCODER_FILE: {"state_dict": ae_state, **provenance},
            }
            metrics["val/best_epoch"] = float(weights_epoch)
            metrics.update(final_costs(model, clock, progress))
        state = end_epoch(progress, metrics, final, clock, weights, optimizer, generators)
        report_checkpoint(reporter, metrics, state, meta, files)
        if final:
            break
    # no epoch ran when a resumed config asks for no more epochs than were done
    return {**(metrics or progress.last_metrics or {}), "checkpoint": None}


# What it declares (study/declared.py): the config keys it accepts; it stops early and keeps its
# best validation epoch.
train_autoencoder.schema = AUTOENCODER_SCHEMA
train_autoencoder.claims = ("early_stopping",)
train_autoencoder.epoch_seconds = "trainables.cost:autoencoder_epoch_seconds"


def main(argv: list[str] | None = None) -> int:
    return run_cli(train_autoencoder, AUTOENCODER_SCHEMA, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
