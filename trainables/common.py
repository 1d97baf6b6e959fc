"""Machinery both trainables share: device and numerics, optimizer and learning rate, the
trial's data, the steps of an epoch, and the standalone CLI. A run's course and its
checkpoints are trainables.checkpoint. Nothing here knows which model or task it serves."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import torch
from torch import nn

from trainables.checkpoint import CheckpointError, Progress, Stopwatch
from trainables.config import PRECISIONS, ConfigError, Schema, build_arg_parser
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
    precision: str  # what this run trains in: "fp32" or "bf16" ("auto" is resolved on the node)
    channels_last: bool

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def autocast(self):
        """bf16 autocast of the training forward pass when the run trains in bf16.

        Under autocast convolutions and matmuls compute in bf16 from fp32 master weights;
        BatchNorm keeps fp32 weights and running statistics and reduces in fp32 (on CPU it reads
        and writes bf16 activations); the trainables compute every loss on `.float()` outputs."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def with_precision(self, precision: str) -> "Backend":
        return replace(self, precision=precision)


def select_backend(config: Mapping[str, Any]) -> Backend:
    """CUDA when present (device='auto'), else CPU; the precision the config asks for, resolved
    on this node (see resolve_precision); channels_last as configured (default on)."""
    name = config["device"]
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' = {config['device']!r} but CUDA is not available here; "
                          "allowed: 'auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("config key 'device' = 'mps' but MPS is not available here; allowed: 'auto' or 'cpu'")
    device = torch.device(name)
    if device.type == "cuda":
        # conv shapes are fixed within a trial, so autotuning the algorithms pays after one step
        torch.backends.cudnn.benchmark = True
    return Backend(device, resolve_precision(config["precision"], device), config["channels_last"])


def resolve_precision(asked: str, device: torch.device) -> str:
    """The precision a run trains in on `device`: "fp32" or "bf16".

    "auto" is bf16 where this node computes bf16 natively (native_bf16), fp32 elsewhere: it
    is decided where the trial runs, since a cluster's nodes can differ. An explicit "bf16"
    is honoured everywhere (a precision study needs bf16's numbers on every node), with a
    warning where bf16 is emulated (no speed-up to expect there)."""
    if asked not in PRECISIONS:
        raise ConfigError(f"config key 'precision' = {asked!r} is not allowed; allowed: "
                          + ", ".join(map(repr, PRECISIONS)))
    if asked == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if asked == "bf16" and not native_bf16(device):
        warnings.warn(f"config key 'precision' = 'bf16' on {device.type} without native bf16 instructions "
                      "here: bf16 is emulated, expect no speed-up over fp32 (the numbers are bf16's all the same)",
                      stacklevel=3)
    return asked


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 convolutions and matmuls in hardware: CUDA GPUs of compute
    capability 8.0 and up; CPUs with AVX512_BF16 or AMX-BF16 (cpu_has_native_bf16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False  # MPS and others: not measured, so not assumed


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """AVX512_BF16 or AMX-BF16 on this node's CPU (x86): oneDNN then runs bf16 convolutions and
    matmuls with bf16 dot-product instructions (measured on an AVX512_BF16 EPYC:
    benchmarks/RESULTS.md, section 7). Without them bf16 is emulated and not expected to pay
    (not measured here), so "auto" keeps fp32; ARM's bf16 extension is not counted either, for
    the same reason. Read from the kernel's CPU flags, else from torch's own CPU probes."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch API: guarded
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def keep_run_precision(backend: Backend, config: Mapping[str, Any], last_metrics: Mapping[str, Any] | None
                       ) -> Backend:
    """A resumed "auto" run keeps the precision its checkpoint was trained in, so every run
    has one precision (its "precision" report value), whichever node it continues on; an
    explicit "fp32" or "bf16" in the config always wins."""
    done = (last_metrics or {}).get("precision")
    if config["precision"] != "auto" or done is None or done == backend.precision:
        return backend
    if done == "bf16" and not native_bf16(backend.device):
        warnings.warn(f"resuming a bf16 run on {backend.device.type} without native bf16 instructions: "
                      "it stays bf16 (emulated, expect no speed-up over fp32)", stacklevel=3)
    return backend.with_precision(done)


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
    progress.train_seconds_by_epoch.append(progress.train_seconds)
    progress.images_seen += meter.count
    return train_loss


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, backend: Backend, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Model outputs for all of `x` in large batches, in eval mode, computed in fp32 on the device.

    Evaluation runs without autocast whatever the training precision: the run delivers fp32
    weights and they are used in fp32 (model.pt, the MLflow model), and argmax, losses and
    probabilities then come from fp32 logits (bf16 logits keep 8 bits of mantissa: ties and
    a coarser log-loss). It is a small share of a trial: one pass over validation per epoch."""
    was_training = model.training
    model.eval()
    outputs = [model(backend.prepare_input(part)).float() for part in x.split(batch_size)]
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


def format_metrics(metrics: Mapping[str, float | str]) -> str:
    parts = [f"epoch {int(metrics['epoch']):3d}"]
    if "precision" in metrics:
        parts.append(str(metrics["precision"]))
    for key in _LINE_KEYS:
        if key in metrics:
            value = metrics[key]
            parts.append(f"{key} {value:.1f}" if key.startswith("cost/") else f"{key} {value:.4f}")
    if metrics.get("final"):
        parts.append("(final)")
    return "  ".join(parts)


def print_reporter(metrics: dict[str, float | str], checkpoint_dir: str) -> None:
    """Default reporter: one line per epoch on stdout."""
    print(format_metrics(metrics), flush=True)


def run_cli(train: Callable[..., dict], schema: Schema, description: str, argv: list[str] | None = None) -> int:
    """Parse flags (one per config key), train, print one line per epoch; `--output DIR` copies
    the final checkpoint directory into DIR. Bad input exits with status 2 and one line on stderr."""
    args = vars(build_arg_parser(schema, description).parse_args(argv))
    output = args.pop("output")

    def reporter(metrics: dict[str, float | str], checkpoint_dir: str) -> None:
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
