"""Config schemas of the trainables: defaults, allowed ranges, and a one-line reason per key.

A config is a flat dict (the same keys as the Optuna search spaces and the MLflow params).
`resolve_config(schema, config)` fills in defaults and refuses unknown keys, wrong types and
out-of-range values with a `ConfigError` naming the key and what is allowed. The standalone
CLIs build their argparse flags from the same schema, so every key is a flag.
"""

from __future__ import annotations

import argparse
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Mapping

from trainables.data import DATASET_NAMES


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or is out of its allowed range."""


@dataclass(frozen=True)
class Field:
    """One config key. `kind` is one of int, float, bool, str, path (a str or None)."""

    default: Any
    kind: str
    help: str
    choices: tuple | None = None
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive unless high_open
    low_open: bool = False
    high_open: bool = False
    pattern: str | None = None  # regex a str value must match in full

    def allowed(self) -> str:
        """Human-readable allowed range, used in error messages and --help."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "path":
            return "a path or None"
        if self.pattern is not None:
            return f"a string matching {self.pattern}"
        if self.low is not None or self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            low = "-inf" if self.low is None else _num(self.low)
            high = "inf" if self.high is None else _num(self.high)
            return f"{self.kind} in {left}{low}, {high}{right}"
        return f"any {self.kind}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


Schema = Mapping[str, Field]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta")
CORRUPTIONS = ("none", "gaussian", "salt_pepper")
PRECISIONS = ("fp32", "bf16", "auto")
_DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"

# Keys both trainables share. The ranges are sanity bounds (what can run at all), not the
# search ranges: those live in search_spaces/ with their reasons.
_COMMON: dict[str, Field] = {
    "dataset": Field("mnist-5k", "str", "which dataset to load", choices=DATASET_NAMES),
    "data_dir": Field(None, "path", "folder with the standard IDX files (offline clusters)"),
    "seed": Field(0, "int", "trial seed; every random stream derives from it", low=0, high=2**62),
    "val_fraction": Field(
        0.1, "float", "share of the training set held out for validation (stratified)",
        low=0.0, high=0.5, low_open=True,
    ),
    "latent_dim": Field(32, "int", "width of the encoder's latent vector (seed 003: 32)", low=2, high=1024),
    "optimizer": Field("adam", "str", "optimizer name", choices=OPTIMIZERS),
    "lr": Field(1e-3, "float", "learning rate (the peak of the schedule)", low=0.0, high=10.0, low_open=True),
    "lr_schedule": Field("cosine", "str", "cosine = decay to 0 over the epochs; constant = lr throughout",
                         choices=("cosine", "constant")),
    "weight_decay": Field(0.0, "float", "L2 penalty (decoupled for adamw)", low=0.0, high=1.0),
    "momentum": Field(0.0, "float", "momentum for sgd and rmsprop (0 = PyTorch's default for both)",
                      low=0.0, high=1.0, high_open=True),
    "batch_size": Field(128, "int", "training batch size", low=2, high=65536),
    "device": Field("auto", "str", "auto = cuda when present, else cpu", pattern=_DEVICE_PATTERN),
    # fp32 stays the default until a precision study shows bf16 gives the same answers; every
    # report says what the run used ("precision": "fp32" | "bf16")
    "precision": Field("fp32", "str", "fp32 = full precision (default); bf16 = bf16 autocast of the training "
                       "forward pass (BatchNorm statistics, losses and evaluation stay fp32; emulated, with a "
                       "warning, where the node has no native bf16); auto = bf16 on nodes with native bf16 "
                       "(AVX512_BF16/AMX CPUs, CUDA compute capability >= 8), else fp32",
                       choices=PRECISIONS),
    "channels_last": Field(True, "bool", "channels_last (NHWC) memory format for model and inputs: oneDNN's "
                           "NHWC convolutions make a CPU train step up to 1.4x faster (the CNN; benchmarks/"
                           "RESULTS.md section 7); false = the NCHW layout used before issue 21"),
}

AUTOENCODER_SCHEMA: dict[str, Field] = {
    **_COMMON,
    # early stopping, not the epoch budget, decides how long an autoencoder trains: a cosine
    # tied to the maximum epochs would decay on a schedule the run may not finish
    "lr_schedule": Field("constant", "str", "constant = lr throughout; cosine = decay to 0 over the epochs",
                         choices=("cosine", "constant")),
    "corruption": Field(
        "none", "str", "input corruption; 'none' = plain autoencoder, else denoising",
        choices=CORRUPTIONS,
    ),
    "noise_level": Field(
        0.0, "float", "gaussian sigma or salt-and-pepper amount, on [0,1] pixels", low=0.0, high=1.0,
    ),
    "epochs": Field(10, "int", "maximum number of epochs", low=1, high=10000),
    "patience": Field(
        0, "int", "early stopping: epochs without a val/loss improvement (0 = off); the best "
        "validation epoch's weights are delivered either way", low=0, high=10000,
    ),
}

CLASSIFIER_SCHEMA: dict[str, Field] = {
    **_COMMON,
    "task": Field("digits", "str", "digits = 10 classes; even_odd = binary (seed 000)", choices=("digits", "even_odd")),
    "model": Field("encoder_head", "str", "encoder_head = seed 003; cnn = seed 002", choices=("encoder_head", "cnn")),
    "encoder_checkpoint": Field(None, "path", "encoder.pt from pretraining; None = scratch init"),
    "encoder_mode": Field(
        "finetuned", "str", "frozen = encoder weights fixed and in eval mode",
        choices=("finetuned", "frozen"),
    ),
    "head_hidden": Field(16, "int", "width of the head's hidden layers (seed 003: 16)", low=1, high=4096),
    "head_layers": Field(2, "int", "hidden layers in the head (seed 003: 2; 0 = linear)", low=0, high=8),
    "dropout": Field(0.0, "float", "dropout probability in head / CNN (0 = off)", low=0.0, high=1.0, high_open=True),
    "cnn_kernel_size": Field(3, "int", "CNN kernel size (seed 004's sweep)", choices=(3, 5, 7)),
    "cnn_stride": Field(1, "int", "stride of the CNN's first conv (seed 004's sweep)", choices=(1, 2)),
    "label_fraction": Field(
        1.0, "float", "stratified share of training labels used (seed 003: 0.1 vs 1.0)",
        low=0.0, high=1.0, low_open=True,
    ),
    # seed 001's Q3: a network trained on MNIST with wrong labels (its "11%" is chance for 10
    # classes, or 1/9, what a network trained on all-wrong labels scores on such labels: label
    # noise, not input noise). The validation labels are as noisy: a user who selects on their own
    # data has no clean labels; the test labels stay clean. 1 is allowed: every label wrong is how
    # the task behind seed 001 built its noisy MNIST (each digit's folder held the nine other
    # digits, as another applicant to that task reports)
    "label_noise": Field(
        0.0, "float", "share of the training AND validation labels replaced by a wrong class (symmetric: "
        "uniform over the other classes, so the rate is the share of wrong labels; exactly round(rate * n) "
        "per class, after the split and the label fraction; the same images and wrong labels in every arm of "
        "a seed); test labels stay clean; 0 = the labels as they are; 0.9 (digits) = labels without "
        "information", low=0.0, high=1.0,
    ),
    "epochs": Field(5, "int", "maximum number of epochs", low=1, high=10000),
    "augment": Field(False, "bool", "random affine + brightness/contrast jitter (seed 002)"),
    "train_corruption": Field("none", "str", "corruption of training inputs", choices=CORRUPTIONS),
    "train_noise_level": Field(0.0, "float", "sigma or amount for train_corruption", low=0.0, high=1.0),
    "test_corruption": Field("none", "str", "fixed corruption of the test inputs (validation follows "
                             "train_corruption)", choices=CORRUPTIONS),
    "test_noise_level": Field(0.0, "float", "sigma or amount for test_corruption", low=0.0, high=1.0),
    "denoiser_checkpoint": Field(
        None, "path", "autoencoder.pt: inputs pass through this frozen denoiser first",
    ),
    # seed 004's pipeline (train on denoised images) or the other natural one: a classifier
    # trained as if there were no denoiser, the denoiser put in front of it when it is deployed
    "denoiser_at": Field(
        "train_and_test", "str", "where the denoiser_checkpoint sits: train_and_test = in front of the classifier "
        "in training, validation and test (seed 004); test = only in front of the test inputs: the classifier "
        "trains and validates on its training inputs as they are (train_corruption), and the delivered model "
        "(model.pt) is the denoiser + classifier that was tested", choices=("train_and_test", "test"),
    ),
    "early_stopping_patience": Field(
        0, "int", "epochs without a val/loss improvement before stopping (0 = off)", low=0, high=10000,
    ),
    "evaluate_test": Field(True, "bool", "evaluate on the test set after the last epoch"),
    "equal_steps": Field(True, "bool", "an epoch draws as many examples as the full training split holds, "
                         "so every label fraction takes the same optimizer steps (epochs x 1/label_fraction)"),
    "keep_best": Field(True, "bool", "deliver and test the weights of the best validation epoch (val/acc, "
                       "ties: lower val/loss) instead of the last epoch's"),
}


def _check_value(key: str, field: Field, value: Any) -> Any:
    """Return `value` as a plain Python value of the field's kind, or raise ConfigError."""

    def fail(why: str) -> ConfigError:
        return ConfigError(f"config key {key!r} = {value!r} {why}; allowed: {field.allowed()}")

    if field.kind == "path":
        if value is None:
            return None
        if not isinstance(value, str) and not hasattr(value, "__fspath__"):
            raise fail("is not a path")
        return str(value)
    if field.kind == "bool":
        if isinstance(value, bool):
            return value
        # numpy.bool_ and 0/1 from search spaces; anything else is a mistake
        if isinstance(value, numbers.Integral) and int(value) in (0, 1):
            return bool(value)
        if type(value).__name__ == "bool_":
            return bool(value)
        raise fail("is not a bool")
    if field.kind == "str":
        if not isinstance(value, str):
            raise fail("is not a string")
        if field.choices is not None and value not in field.choices:
            raise fail("is not allowed")
        if field.pattern is not None and not re.fullmatch(field.pattern, value):
            raise fail("is not allowed")
        return value
    if field.kind == "int":
        if isinstance(value, bool):
            raise fail("is not an integer")
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)  # 5.0 from a float search space is still 5
        else:
            raise fail("is not an integer")
    elif field.kind == "float":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise fail("is not a number")
        value = float(value)
        if not math.isfinite(value):
            raise fail("is not finite")
    else:  # pragma: no cover - schema bug
        raise AssertionError(f"unknown field kind {field.kind}")
    if field.choices is not None and value not in field.choices:
        raise fail("is not allowed")
    if field.low is not None and (value < field.low or (field.low_open and value == field.low)):
        raise fail("is out of range")
    if field.high is not None and (value > field.high or (field.high_open and value == field.high)):
        raise fail("is out of range")
    return value


def resolve_config(schema: Schema, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults + `config`, validated. Raises ConfigError on unknown keys or bad values."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(schema))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(schema)}"
        )
    return {key: _check_value(key, field, config.get(key, field.default)) for key, field in schema.items()}


def resolve_autoencoder_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full, validated autoencoder config."""
    return resolve_config(AUTOENCODER_SCHEMA, config)


def resolve_classifier_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full, validated classifier config, including checks that span several keys."""
    resolved = resolve_config(CLASSIFIER_SCHEMA, config)
    if resolved["model"] == "cnn":
        # The CNN has no encoder: a checkpoint or a frozen mode for it is a mistake in the
        # study definition, not something to ignore silently.
        if resolved["encoder_checkpoint"] is not None:
            raise ConfigError(
                "config key 'encoder_checkpoint' is set but model='cnn' has no encoder; "
                "allowed: None with model='cnn', or model='encoder_head'"
            )
        if resolved["encoder_mode"] != "finetuned":
            raise ConfigError(
                "config key 'encoder_mode' = 'frozen' but model='cnn' has no encoder; "
                "allowed: 'finetuned' with model='cnn', or model='encoder_head'"
            )
    return resolved


def build_arg_parser(schema: Schema, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per config key (`lr` -> `--lr`, `data_dir` -> `--data-dir`).

    Flags not given on the command line stay out of the namespace (argparse.SUPPRESS), so the
    schema's defaults apply and validation happens in one place, `resolve_config`.
    """
    parser = argparse.ArgumentParser(description=description)
    for key, field in schema.items():
        flag = "--" + key.replace("_", "-")
        help_text = f"{field.help} (default: {field.default!r}; {field.allowed()})"
        if field.kind == "bool":
            parser.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
            continue
        arg_type = {"int": int, "float": float, "str": str, "path": _path_or_none}[field.kind]
        parser.add_argument(flag, dest=key, type=arg_type, default=argparse.SUPPRESS,
                            metavar=key.upper(), help=help_text)
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="copy the final checkpoint directory into DIR")
    return parser


def _path_or_none(text: str) -> str | None:
    return None if text.lower() in ("", "none") else text
