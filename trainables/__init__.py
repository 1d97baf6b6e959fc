"""Plain-PyTorch trainables of the ablation studies (no Ray import anywhere in this package).

    from trainables import train_autoencoder, train_classifier, load_dataset
    result = train_classifier({"dataset": "mnist-5k", "model": "cnn", "epochs": 3})

The contract (config, reporter, checkpoint files, report keys) is docs/architecture.md §1.
Names are imported lazily, so `import trainables.seeds` does not pull in scikit-learn.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train_autoencoder": "trainables.autoencoder",
    "train_classifier": "trainables.classifier",
    "load_dataset": "trainables.data",
    "ImageDataset": "trainables.data",
    "DATASET_NAMES": "trainables.data",
    "ConfigError": "trainables.config",
    "resolve_autoencoder_config": "trainables.config",
    "resolve_classifier_config": "trainables.config",
    "AUTOENCODER_SCHEMA": "trainables.config",
    "CLASSIFIER_SCHEMA": "trainables.config",
    "TrainingDiverged": "trainables.common",
    "CheckpointError": "trainables.checkpoint",
    "Reporter": "trainables.checkpoint",
    "stream": "trainables.seeds",
    "STREAM_NAMES": "trainables.seeds",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
