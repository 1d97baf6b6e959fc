"""Models and evaluations back from a trial's MLflow artifacts (torch lives here, not in load).

What each file holds (trainables/, docs/architecture.md §1):
* ``encoder.pt``     {"state_dict": ConvEncoder weights, "latent_dim", "dataset",
                      "data_sha256", "corruption", "noise_level", "epoch"}
                     (``trainables.checkpoint.read_upstream_payload`` reads it)
* ``autoencoder.pt`` the same keys, "state_dict" of the whole ``Autoencoder``
* ``model.pt``       the classifier's state dict (``cpu_state(model)``); the architecture
                     follows from the run's resolved config (``meta.json`` "config", or the
                     run's params), as ``trainables.classifier._build_model`` builds it
* ``evaluation.json`` class_names, confusion_matrix (rows true, columns predicted),
                     per_class_accuracy {name: acc}, misclassified {indices, true, pred},
                     test_corruption, test_noise_level
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from trainables.checkpoint import read_upstream_payload
from trainables.config import CLASSIFIER_SCHEMA
from trainables.data import load_dataset
from trainables.model_export import load_classifier  # noqa: F401 - the analysis loads models through it
from trainables.models import Autoencoder, ConvEncoder, DenoisedClassifier
from trainables.seeds import stream
from trainables.splits import task_class_names
from trainables.transforms import corrupt_fixed


def read_evaluation(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def load_autoencoder(path: Path) -> tuple[Autoencoder, dict]:
    payload = read_upstream_payload(path)
    model = Autoencoder(int(payload["latent_dim"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


def load_encoder(path: Path) -> tuple[ConvEncoder, dict]:
    payload = read_upstream_payload(path)
    model = ConvEncoder(int(payload["latent_dim"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


def config_from_params(params: Mapping[str, str]) -> dict[str, Any]:
    """The resolved classifier config from a run's MLflow params (all strings): each value is
    parsed by its schema field's kind; ``meta.*`` params and unknown keys are left out."""
    config: dict[str, Any] = {}
    for key, value in params.items():
        field = CLASSIFIER_SCHEMA.get(key)
        if field is None or value is None:
            continue
        if field.kind == "path":
            config[key] = None if value in ("None", "") else value
        elif field.kind == "bool":
            config[key] = value.lower() == "true"
        elif field.kind == "int":
            config[key] = int(float(value))
        elif field.kind == "float":
            config[key] = float(value)
        else:
            config[key] = value
    return config


def own_classifier(model: nn.Module) -> nn.Module:
    """The classifier proper (without a denoiser in front)."""
    return model.classifier if isinstance(model, DenoisedClassifier) else model


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in own_classifier(model).modules() if isinstance(m, nn.Conv2d)) \
        if not isinstance(model, (ConvEncoder, Autoencoder)) else \
        next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@torch.inference_mode()
def capture(model: nn.Module, module: nn.Module, x: torch.Tensor, inputs: bool = False) -> torch.Tensor:
    """The output (or, with ``inputs``, the input) of ``module`` when ``model`` runs on ``x``."""
    seen: list[torch.Tensor] = []
    hook = module.register_forward_hook(
        lambda m, args, out: seen.append((args[0] if inputs else out).detach().clone()))
    try:
        model(x)
    finally:
        hook.remove()
    return seen[0]


@torch.inference_mode()
def embed(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> np.ndarray:
    """Latent codes: the encoder's output for an encoder/autoencoder; for a classifier, the
    input of its last linear layer (the penultimate representation)."""
    if isinstance(model, Autoencoder):
        return torch.cat([model.encoder(p) for p in x.split(batch)]).numpy()
    if isinstance(model, ConvEncoder):
        return torch.cat([model(p) for p in x.split(batch)]).numpy()
    last = [m for m in own_classifier(model).modules() if isinstance(m, nn.Linear)][-1]
    return torch.cat([capture(model, last, p, inputs=True) for p in x.split(batch)]).numpy()


def test_inputs(dataset_name: str, corruption: str = "none", level: float = 0.0,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(clean test images, the test images as the trial saw them, labels, class names).

    The corrupted set is recomputed as the classifier does it: ``corrupt_fixed`` of the whole
    test set with a fresh ``test_noise`` stream of the trial's seed (test first), so the shown
    images are bit-identical to the evaluated ones.
    """
    ds = load_dataset(dataset_name)
    clean = ds.test_images.unsqueeze(1).float().div_(255.0)
    seen = corrupt_fixed(clean, corruption, level, stream(seed, "test_noise"))
    return clean, seen, ds.test_labels, tuple(ds.class_names)


def class_names_for(dataset_name: str, task: str) -> tuple[str, ...]:
    return task_class_names(load_dataset(dataset_name), task)
