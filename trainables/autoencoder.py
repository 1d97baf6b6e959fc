"""Trainable: plain or denoising convolutional autoencoder (seed 003), the pretraining stage.

The denoising variant corrupts the input (Gaussian noise or salt-and-pepper) and is scored
against the clean image, so the encoder has to learn digit structure rather than copy
pixels. The product is `encoder.pt`, which the classifier fine-tunes or freezes, and
`autoencoder.pt`, which the classifier can put in front of itself as a denoiser.

    python -m trainables.autoencoder --dataset mnist-5k --epochs 3 --output /tmp/ae
    python -m trainables.autoencoder --corruption salt_pepper --noise-level 0.3 --patience 3

Report per epoch: epoch, train/loss (MSE on training batches), val/loss (MSE of the
reconstruction of the corrupted validation images against the clean ones), val/psnr (mean
per-image PSNR in dB, peak 1.0), final; the last report adds model/trainable_params and cost/*.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from trainables.common import (
    EarlyStopping, LossMeter, MODEL_FILE, HISTORY_FILE, Progress, Reporter, Stopwatch,
    check_finite, epoch_batches, final_weights, keep_if_best, make_optimizer, predict, print_reporter, report,
    resume, run_cli, seed_init, select_backend, training_state, checkpoint_writer, close_epoch,
    close_training_pass, final_costs, optimizer_step, set_lr,
)
from trainables.config import AUTOENCODER_SCHEMA, ConfigError, resolve_autoencoder_config
from trainables.data import ImageDataset, corrupt, corrupt_fixed, load_dataset, make_splits
from trainables.models import Autoencoder
from trainables.seeds import stream

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
    dataset = dataset if dataset is not None else load_dataset(cfg["dataset"], cfg["data_dir"])
    if dataset.name != cfg["dataset"]:
        raise ConfigError(f"config key 'dataset' = {cfg['dataset']!r} but the dataset passed in is "
                          f"{dataset.name!r}; allowed: the passed dataset's name")
    # The autoencoder never sees labels, so there is no label fraction: pretraining uses every
    # training image (seed 003 pretrains on the full training set).
    try:
        splits = make_splits(dataset, seed=seed, val_fraction=cfg["val_fraction"], device=backend.device)
    except ValueError as err:  # a validation split too small to hold every class
        raise ConfigError(str(err)) from None
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
    progress = Progress(stopper=EarlyStopping(cfg["patience"]))
    if resume_from is not None:
        progress = resume(resume_from, TRAINABLE, model, optimizer, generators, description)
        progress.stopper.patience = cfg["patience"]
        clock = Stopwatch(progress.wall_seconds)
        if progress.finished:  # the checkpoint is already the final one: nothing left to do
            return {**progress.last_metrics, "checkpoint": None}
    meta = {"trainable": TRAINABLE, "config": cfg, "model_description": description,
            "dataset": dataset.name, "data_sha256": dataset.sha256, "torch": torch.__version__}

    # ============================================================================ train
    metrics: dict[str, float] = {}
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
        progress.stopper.step(val_loss, epoch)
        keep_if_best(progress, model, epoch, (-val_loss,))  # delivers the best validation epoch
        progress.epoch = epoch
        final = epoch == cfg["epochs"] or progress.stopper.should_stop
        metrics = {"epoch": float(epoch), "train/loss": train_loss, "val/loss": val_loss,
                   "val/psnr": val_psnr, "final": float(final)}
        progress.history.append(dict(metrics))
        state = training_state(model, optimizer, generators, progress)  # last-epoch weights
        files: dict[str, Any] = {}
        if final:
            weights_epoch = final_weights(model, progress)  # the best validation epoch
            ae_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
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
            progress.history[-1] = dict(metrics)
            progress.finished = True
        close_epoch(progress, clock, metrics, state)
        report(reporter, metrics, checkpoint_writer(state, meta, epoch, final, files, progress, HISTORY_FILE))
        if final:
            break
    # no epoch ran when a resumed config asks for no more epochs than were done
    return {**(metrics or progress.last_metrics or {}), "checkpoint": None}


def main(argv: list[str] | None = None) -> int:
    return run_cli(train_autoencoder, AUTOENCODER_SCHEMA, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
