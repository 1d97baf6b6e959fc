"""Machinery both trainables share: device and numerics, optimizer and learning rate, the
trial's data, the steps of an epoch, and the standalone CLI. A run's course and its
checkpoints are trainables.checkpoint. Nothing here knows which model or task it serves."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from trainables.checkpoint import CheckpointError, Progress, Stopwatch
from trainables.config import ConfigError, Schema, build_arg_parser
from trainables.data import DatasetError, DatasetUnavailableError, ImageDataset, load_dataset
from trainables.models import count_trainable
from trainables.seeds import sub_seed
from trainables.splits import Splits, make_splits

EVAL_BATCH = 4096  # evaluation batch: large, no gradients, one sync per set


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and the reason.

    The study runner (study.trial) records a trial that raises it, or FloatingPointError, as
    failed instead of retrying it: a user's trainable imports it from here to do the same."""


# ---------------------------------------------------------------------------------------------
# Device and numerics
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    device: torch.device
    bf16: bool  # effective: only on CUDA
    channels_last: bool

    def autocast(self):
        """bf16 autocast on CUDA when asked for (BatchNorm and losses stay fp32 under autocast)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def select_backend(config: Mapping[str, Any]) -> Backend:
    """CUDA when present (device='auto'), else CPU; bf16 only on CUDA."""
    name = config["device"]
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' = {config['device']!r} but CUDA is not available here; "
                          "allowed: 'auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("config key 'device' = 'mps' but MPS is not available here; allowed: 'auto' or 'cpu'")
    device = torch.device(name)
    bf16, channels_last = config["bf16"], config["channels_last"]
    if device.type != "cuda":
        # channels_last stays allowed on CPU: it is only a memory layout, and oneDNN's NHWC
        # convolutions ran seed 003's autoencoder 1.4x faster on one core here.
        if bf16:
            warnings.warn(f"config key 'bf16' = True is ignored on {device.type}: it only pays on CUDA",
                          stacklevel=3)
        bf16 = False
    else:
        # conv shapes are fixed within a trial, so autotuning the algorithms pays after one step
        torch.backends.cudnn.benchmark = True
    return Backend(device, bf16, channels_last)


def seed_init(seed: int) -> None:
    """Seed the global torch RNG from the trial's `init` stream before building the model.

    Layer constructors draw their initial weights from the global RNG; after init the same RNG
    drives dropout, so its state is saved in every checkpoint and restored on resume."""
    torch.manual_seed(sub_seed(seed, "init"))


# ---------------------------------------------------------------------------------------------
# Optimizer and learning rate
# ---------------------------------------------------------------------------------------------

def make_optimizer(config: Mapping[str, Any], params) -> torch.optim.Optimizer:
    """The optimizer named by config['optimizer'] with lr, weight_decay and (where used) momentum."""
    name, lr, wd = config["optimizer"], config["lr"], config["weight_decay"]
    params = [p for p in params if p.requires_grad]
    # foreach: one multi-tensor kernel per update instead of a Python loop over parameters (the
    # CUDA default already; on CPU it saves about 0.5 ms of a 25 ms step of the small CNN)
    common = {"lr": lr, "weight_decay": wd, "foreach": True}
    if name == "adam":
        return torch.optim.Adam(params, **common)
    if name == "adamw":
        return torch.optim.AdamW(params, **common)
    if name == "sgd":
        return torch.optim.SGD(params, momentum=config["momentum"], nesterov=False, **common)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, momentum=config["momentum"], **common)
    if name == "adagrad":
        return torch.optim.Adagrad(params, **common)
    if name == "adadelta":
        return torch.optim.Adadelta(params, **common)
    raise ConfigError(f"config key 'optimizer' = {name!r} is not allowed")


def set_lr(optimizer: torch.optim.Optimizer, config: Mapping[str, Any], progress: float) -> None:
    """The learning rate at `progress`, the share of the run's epochs done (0 at the first step):
    constant, or a cosine decay from config["lr"] to 0 over the configured epochs (the schedule
    of the fast MNIST/CIFAR recipes: large steps early, small ones to settle). A function of
    the step alone, so a resumed run continues the same schedule."""
    scale = 1.0 if config["lr_schedule"] == "constant" else 0.5 * (1.0 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        group["lr"] = config["lr"] * scale


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# ---------------------------------------------------------------------------------------------
# The trial's data
# ---------------------------------------------------------------------------------------------

def trial_data(cfg: Mapping[str, Any], dataset: ImageDataset | None, device: torch.device,
               label_fraction: float = 1.0) -> tuple[ImageDataset, Splits]:
    """The dataset a trial trains on and its splits on `device` (trainables.splits.make_splits).

    A dataset passed in (a study's shared copy) must be the one config["dataset"] names;
    without one, that dataset is loaded. A fraction too small to keep one example per class
    is the config's error."""
    if dataset is None:
        dataset = load_dataset(cfg["dataset"], cfg["data_dir"])
    elif dataset.name != cfg["dataset"]:
        raise ConfigError(f"config key 'dataset' = {cfg['dataset']!r} but the dataset passed in is "
                          f"{dataset.name!r}; allowed: the passed dataset's name")
    try:
        splits = make_splits(dataset, seed=cfg["seed"], val_fraction=cfg["val_fraction"],
                             label_fraction=label_fraction, device=device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return dataset, splits


# ---------------------------------------------------------------------------------------------
# The steps of an epoch
# ---------------------------------------------------------------------------------------------

def epoch_batches(n: int, batch_size: int, order: torch.Generator, device: torch.device,
                  examples: int | None = None) -> list[torch.Tensor]:
    """Random index batches for one epoch, drawn on the CPU `order` stream, moved to `device` once.

    `examples` (default `n`) is how many examples the epoch draws: more than `n` chains fresh
    permutations (a 10%-label arm makes 10 passes per epoch, so it takes as many optimizer
    steps as the 100% arm). A trailing batch of a single example is dropped: BatchNorm cannot
    normalise one value.
    """
    examples = examples or n
    passes = -(-examples // n)
    perm = torch.cat([torch.randperm(n, generator=order) for _ in range(passes)])[:examples].to(device)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and batches[-1].numel() < 2:
        batches.pop()
    return batches


class LossMeter:
    """Sums a per-batch mean loss weighted by batch size on the device; one sync per epoch."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device, dtype=torch.float64)
        self.count = 0

    def add(self, loss: torch.Tensor, n: int) -> None:
        self.total += loss.detach().double() * n
        self.count += n

    def mean(self) -> float:
        return float(self.total.item()) / max(self.count, 1)


def check_finite(value: float, what: str, epoch: int) -> float:
    if not math.isfinite(value):
        raise TrainingDiverged(f"{what} is {value} in epoch {epoch}: training diverged "
                               "(lower the learning rate or check the inputs)")
    return value


def close_training_pass(meter: LossMeter, progress: Progress, started: float, epoch: int) -> float:
    """The epoch's mean training loss (its one device sync) and the training-time accounting."""
    train_loss = check_finite(meter.mean(), "train/loss", epoch)
    progress.train_seconds += time.perf_counter() - started
    progress.images_seen += meter.count
    return train_loss


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, backend: Backend, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Model outputs for all of `x` in large batches, in eval mode, as float32 on the device."""
    was_training = model.training
    model.eval()
    outputs = []
    for part in x.split(batch_size):
        with backend.autocast():
            outputs.append(model(backend.prepare_input(part)).float())
    model.train(was_training)
    return torch.cat(outputs)


def final_costs(model: nn.Module, clock: Stopwatch, progress: Progress) -> dict[str, float]:
    """Scalars every trainable reports with its last epoch."""
    return {"model/trainable_params": float(count_trainable(model)),
            "cost/wall_seconds": clock.seconds(),
            "cost/images_per_second": progress.images_seen / max(progress.train_seconds, 1e-9)}


# ---------------------------------------------------------------------------------------------
# Reporting and the standalone CLI
# ---------------------------------------------------------------------------------------------

_LINE_KEYS = ("train/loss", "val/loss", "val/acc", "val/psnr", "test/acc", "test/f1_macro",
              "cost/wall_seconds", "cost/images_per_second")


def format_metrics(metrics: Mapping[str, float]) -> str:
    parts = [f"epoch {int(metrics['epoch']):3d}"]
    for key in _LINE_KEYS:
        if key in metrics:
            value = metrics[key]
            parts.append(f"{key} {value:.1f}" if key.startswith("cost/") else f"{key} {value:.4f}")
    if metrics.get("final"):
        parts.append("(final)")
    return "  ".join(parts)


def print_reporter(metrics: dict[str, float], checkpoint_dir: str) -> None:
    """Default reporter: one line per epoch on stdout."""
    print(format_metrics(metrics), flush=True)


def run_cli(train: Callable[..., dict], schema: Schema, description: str, argv: list[str] | None = None) -> int:
    """Parse flags (one per config key), train, print one line per epoch; `--output DIR` copies
    the final checkpoint directory into DIR. Bad input exits with status 2 and one line on stderr."""
    args = vars(build_arg_parser(schema, description).parse_args(argv))
    output = args.pop("output")

    def reporter(metrics: dict[str, float], checkpoint_dir: str) -> None:
        print_reporter(metrics, checkpoint_dir)
        if output and metrics.get("final"):
            shutil.copytree(checkpoint_dir, output, dirs_exist_ok=True)
            print(f"final checkpoint copied to {os.path.abspath(output)}: "
                  f"{', '.join(sorted(os.listdir(output)))}", flush=True)

    try:
        train(args, reporter)
    except (ConfigError, DatasetError, DatasetUnavailableError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"training diverged: {err}", file=sys.stderr)
        return 1
    return 0
