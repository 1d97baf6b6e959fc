"""Machinery both trainables share: device, optimizer, checkpoints, RNG state, epoch helpers,
reporting and the standalone CLI. Nothing here knows which model or task it serves."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from trainables.config import ConfigError, Schema, build_arg_parser
from trainables.seeds import sub_seed

STATE_FILE = "state.pt"
META_FILE = "meta.json"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
EVAL_BATCH = 4096  # evaluation batch: large, no gradients, one sync per set


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and the reason."""


class CheckpointError(ValueError):
    """A checkpoint is missing, of another trainable, or of another model shape."""


class Reporter(Protocol):
    def __call__(self, metrics: dict[str, float], checkpoint_dir: str) -> None: ...


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


# ---------------------------------------------------------------------------------------------
# Seeding and RNG state
# ---------------------------------------------------------------------------------------------

def seed_init(seed: int) -> None:
    """Seed the global torch RNG from the trial's `init` stream before building the model.

    Layer constructors draw their initial weights from the global RNG; after init the same RNG
    drives dropout, so its state is saved in every checkpoint and restored on resume."""
    torch.manual_seed(sub_seed(seed, "init"))


def rng_state(generators: Mapping[str, torch.Generator]) -> dict:
    state = {"torch": torch.get_rng_state(), "generators": {k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping, generators: Mapping[str, torch.Generator]) -> None:
    """Restore the global and per-stream RNG states saved by `rng_state`.

    A checkpoint written on another kind of device (a CUDA stream's state does not fit a CPU
    generator) cannot continue the same random numbers: the run goes on with a warning, and
    only bit-identity with the uninterrupted run is lost."""
    torch.set_rng_state(state["torch"])
    try:
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for name, generator in generators.items():
            generator.set_state(state["generators"][name])
    except (RuntimeError, KeyError, IndexError) as err:
        warnings.warn(f"random streams could not be restored from the checkpoint ({err}); the resumed "
                      "run continues with the streams as they are, no longer bit-identical", stacklevel=2)


# ---------------------------------------------------------------------------------------------
# Epoch helpers
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


@dataclass
class EarlyStopping:
    """Stops after `patience` epochs without a new minimum of the monitored value (0 = never)."""

    patience: int
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True when it is a new best."""
        if value < self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's state dict (for best-so-far weights and files)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class Stopwatch:
    """Wall time of a run across resumes: `offset` is what earlier segments already spent."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset, self.start = offset, time.perf_counter()

    def seconds(self) -> float:
        return self.offset + time.perf_counter() - self.start


@dataclass
class Progress:
    """Everything about a run's course that a checkpoint must carry besides model and optimizer."""

    stopper: EarlyStopping
    epoch: int = 0  # epochs done
    history: list[dict[str, float]] = field(default_factory=list)
    best_model: dict | None = None  # CPU weights of the selected epoch (best on validation)
    best_epoch: int = 0
    best_score: list[float] | None = None  # the selection key of best_epoch (larger is better)
    images_seen: int = 0
    train_seconds: float = 0.0  # time in training steps only (for images/s)
    wall_seconds: float = 0.0  # whole-run wall time up to the last checkpoint
    last_metrics: dict[str, float] | None = None
    finished: bool = False

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "stopper"}
        state["stopper"] = self.stopper.state_dict()
        return state

    @classmethod
    def from_state(cls, state: Mapping) -> "Progress":
        state = dict(state)
        return cls(stopper=EarlyStopping(**state.pop("stopper")), **state)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, generators: Mapping[str, torch.Generator],
                   progress: Progress) -> dict:
    """The content of state.pt: enough to continue bit-identically after this epoch."""
    return {"model": cpu_state(model), "optimizer": optimizer.state_dict(), "epoch": progress.epoch,
            "rng": rng_state(generators), "progress": progress.state_dict()}


def resume(directory: str, trainable: str, model: nn.Module, optimizer: torch.optim.Optimizer,
           generators: Mapping[str, torch.Generator], built: str) -> Progress:
    """Restore model, optimizer, RNG streams and progress from a checkpoint directory."""
    state, meta = read_checkpoint(directory, trainable)
    load_weights(model, state["model"], f"checkpoint {directory}", built, meta.get("model_description", "?"))
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"], generators)
    return Progress.from_state(state["progress"])


def keep_if_best(progress: Progress, model: nn.Module, epoch: int, score: tuple[float, ...]) -> None:
    """Remember this epoch's weights when its validation `score` (a tuple compared
    lexicographically, larger is better) beats every earlier epoch's."""
    if progress.best_score is None or tuple(score) > tuple(progress.best_score):
        progress.best_model, progress.best_epoch, progress.best_score = cpu_state(model), epoch, list(score)


def final_weights(model: nn.Module, progress: Progress) -> int:
    """Load the weights the run delivers into `model`; return the epoch they come from: the
    selected (best validation) epoch when the run keeps one, else the last epoch. Selection
    is on validation data only, never on test data."""
    if progress.best_model is not None:
        model.load_state_dict(progress.best_model)
        return progress.best_epoch
    return progress.epoch


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def write_checkpoint(directory: str | Path, state: Mapping, meta: Mapping) -> None:
    directory = Path(directory)
    torch.save(dict(state), directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))


def read_checkpoint(directory: str | Path, trainable: str) -> tuple[dict, dict]:
    """(state, meta) of a checkpoint directory written by `trainable`."""
    directory = Path(directory)
    state_path, meta_path = directory / STATE_FILE, directory / META_FILE
    if not state_path.is_file() or not meta_path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint directory: it needs {STATE_FILE} and {META_FILE}")
    meta = json.loads(meta_path.read_text())
    if meta.get("trainable") != trainable:
        raise CheckpointError(f"{directory} was written by trainable {meta.get('trainable')!r}, "
                              f"not {trainable!r}: it cannot be resumed here")
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    return state, meta


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                 built: str, found: str) -> None:
    """Load `state_dict` into `model` after checking that every tensor's shape matches.

    `built` and `found` describe the two models in words (e.g. "latent_dim=32"), so the error
    names both shapes instead of printing PyTorch's list of size mismatches.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    differing = [k for k in expected if k in given and expected[k] != given[k]]
    if missing or unexpected or differing:
        if differing:
            k = differing[0]
            detail = f"{k}: checkpoint {list(given[k])} vs model {list(expected[k])}"
        else:
            detail = f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source} holds a model of another shape: checkpoint {found}, "
                              f"this config builds {built} ({detail})")
    model.load_state_dict(dict(state_dict))


def write_history(path: str | Path, history: list[Mapping[str, float]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def report(reporter: Reporter, metrics: dict[str, float], write: Callable[[Path], None]) -> None:
    """Write a complete checkpoint into a fresh temporary directory, hand it to the reporter,
    then delete it (the reporter copies what it keeps, as Tune's Checkpoint.from_directory does)."""
    directory = Path(tempfile.mkdtemp(prefix="checkpoint-"))
    try:
        write(directory)
        reporter(metrics, str(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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
    from trainables.data import DatasetError, DatasetUnavailableError

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


# -- end of an epoch: shared by both trainables --------------------------------------------
def final_costs(model: nn.Module, clock: "Stopwatch", progress: "Progress") -> dict[str, float]:
    """Scalars every trainable reports with its last epoch."""
    from trainables.models import count_trainable
    return {"model/trainable_params": float(count_trainable(model)),
            "cost/wall_seconds": clock.seconds(),
            "cost/images_per_second": progress.images_seen / max(progress.train_seconds, 1e-9)}


def close_epoch(progress: "Progress", clock: "Stopwatch", metrics: Mapping[str, float], state: dict) -> None:
    """Records the epoch's metrics and timing in the progress kept inside the checkpoint."""
    progress.wall_seconds = clock.seconds()
    progress.last_metrics = dict(metrics)
    state["progress"] = progress.state_dict()


def checkpoint_writer(state: Mapping, meta: Mapping, epoch: int, final: bool, files: Mapping[str, Any],
                      progress: "Progress", history_file: str,
                      extra: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """The function that fills a checkpoint directory: state + meta, weight files, and on the
    last epoch the metric history."""
    from trainables.models import state_shapes

    def write(directory: Path) -> None:
        write_checkpoint(directory, state, {**meta, "epoch": epoch, "final": final,
                                            "model_shapes": state_shapes(state["model"])})
        for name, content in files.items():
            torch.save(content, directory / name)
        if final:
            write_history(directory / history_file, progress.history)
        if extra is not None:
            extra(directory)
    return write


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


def close_training_pass(meter: "LossMeter", progress: "Progress", started: float, epoch: int) -> float:
    """The epoch's mean training loss (its one device sync) and the training-time accounting."""
    train_loss = check_finite(meter.mean(), "train/loss", epoch)
    progress.train_seconds += time.perf_counter() - started
    progress.images_seen += meter.count
    return train_loss
