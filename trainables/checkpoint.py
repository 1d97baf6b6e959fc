"""A run's course and its checkpoints: what a checkpoint directory holds, how a run resumes
from one bit-identically, and the end of an epoch that writes one and hands it to the reporter.

Every checkpoint holds state.pt (model, optimizer, epoch, RNG states, progress) and meta.json
(trainable, config, model shapes); the final one also the delivered weights and history.csv
(docs/architecture.md §1). Nothing here knows which model or task it serves.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import torch
from torch import nn

from trainables.models import state_shapes

if TYPE_CHECKING:
    from trainables.data import ImageDataset

STATE_FILE = "state.pt"
META_FILE = "meta.json"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"


class CheckpointError(ValueError):
    """A checkpoint is missing, of another trainable, or of another model shape."""


class Reporter(Protocol):
    """Called once per epoch: the report (floats, and the string "precision") and a checkpoint
    directory that is deleted when the call returns."""

    def __call__(self, metrics: dict[str, float | str], checkpoint_dir: str) -> None: ...


# ---------------------------------------------------------------------------------------------
# The course of a run: what a checkpoint carries besides model and optimizer
# ---------------------------------------------------------------------------------------------

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
    # train_seconds at the end of each epoch's training pass (1-based epoch e at [e - 1]): the
    # time a run took to reach an accuracy (time_to/seconds_*), resumes included
    train_seconds_by_epoch: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0  # whole-run wall time up to the last checkpoint
    last_metrics: dict[str, float | str] | None = None  # what resuming a finished run returns
    finished: bool = False

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "stopper"}
        state["stopper"] = self.stopper.state_dict()
        return state

    def epoch_done(self, epoch: int, val_loss: float, epochs: int) -> bool:
        """Count `epoch` done, its validation loss seen by early stopping; True when it is the
        run's last: the configured `epochs`, or the patience ran out."""
        self.stopper.step(val_loss, epoch)
        self.epoch = epoch
        return epoch == epochs or self.stopper.should_stop

    @classmethod
    def from_state(cls, state: Mapping) -> "Progress":
        state = dict(state)
        return cls(stopper=EarlyStopping(**state.pop("stopper")), **state)


class Stopwatch:
    """Wall time of a run across resumes: `offset` is what earlier segments already spent."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset, self.start = offset, time.perf_counter()

    def seconds(self) -> float:
        return self.offset + time.perf_counter() - self.start


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's state dict (for best-so-far weights and files)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
# RNG state
# ---------------------------------------------------------------------------------------------

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
# Start or resume, end of an epoch
# ---------------------------------------------------------------------------------------------

def start_or_resume(resume_from: str | None, trainable: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generators: Mapping[str, torch.Generator], built: str, patience: int,
                    clock: Stopwatch) -> tuple[Progress, Stopwatch]:
    """A fresh run's progress and `clock`; or, from checkpoint directory `resume_from`, model,
    optimizer and RNG streams restored in place, its progress, and a clock that goes on from
    its wall time. `built` describes the model this config builds (for a shape mismatch);
    `patience` is the config's, so a resumed run may be given another one."""
    if resume_from is None:
        return Progress(stopper=EarlyStopping(patience)), clock
    state, meta = read_checkpoint(resume_from, trainable)
    load_weights(model, state["model"], f"checkpoint {resume_from}", built, meta.get("model_description", "?"))
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"], generators)
    progress = Progress.from_state(state["progress"])
    progress.stopper.patience = patience
    return progress, Stopwatch(progress.wall_seconds)


def checkpoint_meta(trainable: str, cfg: Mapping[str, Any], description: str, dataset: ImageDataset,
                    **extra: Any) -> dict:
    """What meta.json says in every checkpoint of a run: the trainable that wrote it (resume
    checks it), the resolved config, the model in words, the data's name and checksum, and
    the torch version; `extra` adds the trainable's own keys. Each checkpoint adds its epoch,
    whether it is final, and the model's tensor shapes."""
    return {"trainable": trainable, "config": cfg, "model_description": description, "dataset": dataset.name,
            "data_sha256": dataset.sha256, **extra, "torch": torch.__version__}


def end_epoch(progress: Progress, metrics: Mapping[str, float | str], final: bool, clock: Stopwatch,
              weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
              generators: Mapping[str, torch.Generator]) -> dict:
    """Close epoch `progress.epoch`: append its history row, record its metrics, wall time and
    whether the run is finished; return the content of state.pt, built from the closed progress.

    `weights` are this epoch's (a CPU copy taken before the final epoch loads the delivered
    ones): with optimizer and RNG streams, enough to continue bit-identically after this epoch."""
    progress.history.append(dict(metrics))
    progress.last_metrics = dict(metrics)
    progress.wall_seconds = clock.seconds()
    progress.finished = final
    return {"model": weights, "optimizer": optimizer.state_dict(), "epoch": progress.epoch,
            "rng": rng_state(generators), "progress": progress.state_dict()}


def report_checkpoint(reporter: Reporter, metrics: dict[str, float | str], state: Mapping, meta: Mapping,
                      files: Mapping[str, Any] | None = None, json_files: Mapping[str, Any] | None = None) -> None:
    """Write a complete checkpoint into a fresh temporary directory, hand it to the reporter,
    then delete it (the reporter copies what it keeps, as Tune's Checkpoint.from_directory does).

    The directory holds state.pt and meta.json (plus epoch, final and the model's tensor
    shapes), `files` (torch.save) and `json_files`, and on the final epoch history.csv."""
    final = state["progress"]["finished"]
    directory = Path(tempfile.mkdtemp(prefix="checkpoint-"))
    try:
        write_checkpoint(directory, state, {**meta, "epoch": state["epoch"], "final": final,
                                            "model_shapes": state_shapes(state["model"])})
        for name, content in (files or {}).items():
            torch.save(content, directory / name)
        for name, content in (json_files or {}).items():
            (directory / name).write_text(json.dumps(content, indent=2))
        if final:
            write_history(directory / HISTORY_FILE, state["progress"]["history"])
        reporter(metrics, str(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Files
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


def write_history(path: str | Path, history: list[Mapping[str, float | str]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def read_upstream_payload(path: Path) -> dict:
    """The dict an upstream checkpoint holds (``encoder.pt`` / ``autoencoder.pt`` written by
    trainables.autoencoder): ``state_dict``, ``latent_dim``, ``dataset``, ``data_sha256``,
    ``corruption``, ``noise_level``, ``epoch``. Raises ValueError for any other file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not readable ({err})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "latent_dim" not in payload:
        raise ValueError(f"{path} is not an encoder.pt/autoencoder.pt of trainables.autoencoder "
                         "(no state_dict / latent_dim)")
    return payload
