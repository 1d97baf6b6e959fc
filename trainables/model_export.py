"""The classifier back from its weights, for the runner and the analysis: what the classifier
trainable declares as its ``mlflow_model`` (study/declared.py), so that every completed
replicate run logs it as an MLflow model, and what ``analysis.artifacts`` loads.

``model.pt`` holds the classifier's state dict (``cpu_state(model)``); the architecture follows
from the run's resolved config, as ``trainables.classifier`` builds it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from trainables.config import resolve_classifier_config
from trainables.models import Autoencoder, ConvEncoder, DenoisedClassifier, EncoderClassifier, MLPHead, SmallCNN


def load_classifier(model_pt: Path, config: Mapping[str, Any], n_classes: int) -> nn.Module:
    """Rebuild the classifier of ``config`` and load ``model.pt`` into it.

    Pretrained weights are already in ``model.pt``, so the checkpoint paths of the config
    (temporary paths of the trial) are not read; a denoiser in front is recognised by its
    ``denoiser.*`` keys and its latent size by the shape of its latent layer.
    """
    cfg = resolve_classifier_config({**dict(config), "encoder_checkpoint": None,
                                     "denoiser_checkpoint": None, "device": "cpu"})
    state = torch.load(model_pt, map_location="cpu", weights_only=True)
    n_out = 1 if cfg["task"] == "even_odd" else n_classes
    if cfg["model"] == "cnn":
        model: nn.Module = SmallCNN(n_out, kernel_size=cfg["cnn_kernel_size"], stride=cfg["cnn_stride"],
                                    dropout=cfg["dropout"])
    else:
        model = EncoderClassifier(ConvEncoder(cfg["latent_dim"]),
                                  MLPHead(cfg["latent_dim"], n_out, hidden=cfg["head_hidden"],
                                          layers=cfg["head_layers"], dropout=cfg["dropout"]),
                                  frozen=cfg["encoder_mode"] == "frozen")
    if any(k.startswith("denoiser.") for k in state):
        latent = int(state["denoiser.encoder.latent.weight"].shape[0])
        model = DenoisedClassifier(Autoencoder(latent), model)
    model.load_state_dict(state)
    return model.eval()


def classifier_for_mlflow(checkpoint_dir: str, config: Mapping[str, Any], dataset) -> tuple[nn.Module, np.ndarray]:
    """The classifier of a final checkpoint and an input example: two training images as the
    classifier takes them, float32 [2, 1, H, W] in [0, 1] (two, so torch.export keeps the batch
    dimension dynamic)."""
    model = load_classifier(Path(os.path.join(checkpoint_dir, "model.pt")), config, len(dataset.class_names))
    example = (dataset.train_images[:2].unsqueeze(1).float() / 255.0).numpy()
    return model, example
