"""Nuisance space for autoencoder pretraining (tuned on validation reconstruction loss)."""
from __future__ import annotations

from search_spaces import Param, SearchSpace

AUTOENCODER = SearchSpace(
    name="autoencoder",
    params=(
        Param("lr", 3e-4, 1e-2, log=True, start=3e-3,
              reason="Adam on MSE reconstruction: below 3e-4 too slow for short budgets, above 1e-2 diverges; "
                     "3e-3 leaves the mean-digit plateau in one epoch (1e-3 took four)"),
        Param("batch_size", choices=(32, 64, 128, 256), start=32,
              reason="seed 003 used Keras' 32-128; 256 for throughput; 32 gives the most steps per epoch"),
        Param("weight_decay", 1e-7, 1e-4, log=True,
              reason="light L2 only: the bottleneck is the main regulariser of an autoencoder"),
    ),
)
