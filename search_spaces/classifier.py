"""Nuisance spaces for the classifier trainable (tuned per arm so comparisons are fair)."""
from __future__ import annotations

from search_spaces import Param, SearchSpace

# Learning-rate ranges per optimizer: one shared range would favour whichever optimizer
# happens to like it (seed 001 compared optimizers at a single lr). Each range spans about
# two decades around the optimizer's usual default for small convnets.
# (low, high, first guess, reason). The first guess is what Optuna tries first in every arm:
# for Adam 3e-3 rather than the textbook 1e-3, because the studies' budgets are short
# (10-15 epochs on 4,000 images) and 3e-3 converged in a third of the epochs here.
LR_RANGE = {
    "adam": (1e-4, 1e-2, 3e-3, "Adam's default 1e-3 sits mid-range; a decade either side"),
    "adamw": (1e-4, 1e-2, 3e-3, "same scale as Adam: decoupled decay does not move the lr optimum"),
    "sgd": (3e-3, 3e-1, 3e-2, "SGD with momentum 0.9 needs ~10-100x Adam's lr on small convnets"),
    "rmsprop": (1e-4, 1e-2, 1e-3, "plain RMSprop (momentum 0, as PyTorch and Keras): default 1e-2 is "
                                  "often unstable, so centred a decade lower"),
    "adagrad": (1e-3, 1e-1, 1e-2, "accumulated squared gradients shrink steps: default 1e-2 mid-range"),
    "adadelta": (5e-2, 5.0, 1.0, "Adadelta's lr is a multiplier, default 1.0 (seed 001's setting)"),
}


# Weight decay per optimizer. Adam, SGD, RMSprop, Adagrad and Adadelta add it to the gradient
# (L2), so its useful range is small; AdamW decouples it and multiplies it by the lr, so at
# lr ~1e-3 a decay of 1e-4 is nothing: its range is the one the AdamW paper and PyTorch's
# default (1e-2) use.
# (low, high, first guess, reason)
_L2 = (1e-6, 1e-3, 1e-5, "L2 added to the gradient: below 1e-6 it is off in effect, above 1e-3 it underfits MNIST")
WD_RANGE = {
    "adam": _L2,
    "adamw": (1e-4, 1e-1, 1e-2, "decoupled decay, scaled by lr: PyTorch's default 1e-2 mid-range (AdamW "
                                "paper's range)"),
    "sgd": _L2,
    "rmsprop": _L2,
    "adagrad": _L2,
    "adadelta": _L2,
}


def _lr_for_optimizer(fixed):
    low, high, start, reason = LR_RANGE[fixed.get("optimizer", "adam")]
    return Param("lr", low, high, log=True, reason=reason, start=start)


def _weight_decay_for_optimizer(fixed):
    low, high, start, reason = WD_RANGE[fixed.get("optimizer", "adam")]
    return Param("weight_decay", low, high, log=True, reason=reason, start=start)


CLASSIFIER = SearchSpace(
    name="classifier",
    params=(
        Param("lr", 1e-4, 1e-2, log=True, start=3e-3,
              reason="replaced per optimizer (LR_RANGE); Adam's range by default"),
        Param("weight_decay", 1e-6, 1e-3, log=True,
              reason="replaced per optimizer (WD_RANGE): coupled L2 by default, decoupled for adamw"),
        Param("batch_size", choices=(64, 128, 256), start=64,
              reason="seeds used 64-96; 256 keeps the device busy; smaller is noisier but finer"),
    ),
    overrides={"lr": _lr_for_optimizer, "weight_decay": _weight_decay_for_optimizer},
)

# Seed 004's sweep of the CNN's architecture knobs: kernel size and stride are the study's
# scientific factors (arms), the rest is tuned per arm.
CNN_SWEEP = SearchSpace(
    name="cnn_sweep",
    params=(
        Param("dropout", 0.0, 0.5, start=0.25,
              reason="seed 004 found 0.25 best on [0, 0.5]; above 0.5 the 3-conv CNN underfits"),
        Param("lr", 1e-4, 1e-2, log=True, start=3e-3, reason="Adam: default 1e-3 mid-range, a decade either side"),
        Param("batch_size", choices=(32, 64, 128, 256), start=64, reason="seed 004 swept 32-256 and chose 64"),
    ),
)
