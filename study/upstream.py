"""What a study builds on besides its factors: its data, its trainables, and upstream stages
whose trained artifacts feed its arms (docs/writing-a-study.md).

* ``Data``: a loader the driver calls once; what it returns reaches every trial.
* ``Stage``: an upstream trainable (our autoencoder pretraining is one), tuned once on the tune
  seed and trained once per seed.
* ``Upstream``: one trained thing a stage makes, a stage with its settings (the
  salt-and-pepper denoising autoencoder); its ``key`` names it in MLflow.
* ``Use``: an arm builds on an upstream artifact, a file of its final checkpoint passed to
  the arm's trainable under a config key (``encoder.pt`` -> ``encoder_checkpoint``).

A trainable or loader is named by import path (``"package.module:function"``) or given as the
function itself; nothing here imports it (``study.check`` does, before any trial).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Union

from search_spaces import SearchSpace

TrainableRef = Union[str, Callable[..., Any]]   # "package.module:function", or the function itself


def frozen_map(mapping: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


def ref_label(ref: TrainableRef) -> str:
    """The import path of a trainable or loader: its name in MLflow (``meta.trainable``)."""
    if isinstance(ref, str):
        return ref
    return f"{getattr(ref, '__module__', '?')}:{getattr(ref, '__qualname__', repr(ref))}"


@dataclass(frozen=True)
class Data:
    """Where a study's data comes from. The driver calls ``load(name, data_dir)`` once per
    study (``name``: the budget's ``dataset``); what it returns reaches every trial as the
    trainable's ``dataset`` argument through Ray's object store, so trials on other nodes need
    no copy of the files. A ``sha256`` attribute of it, when there is one, identifies the data
    in MLflow (``data_sha256``); otherwise a digest of the pickled object does."""
    load: TrainableRef
    names: tuple[str, ...] = ()      # dataset names the loader knows (checks --dataset); () = any

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))


@dataclass(frozen=True)
class Stage:
    """An upstream stage: a trainable whose trained artifact feeds the arms that use it.

    Each distinct ``Upstream`` of a stage is tuned on the tune seed (Optuna + ASHA on
    ``metric``, ``budget.upstream_trials`` trials), then trained once per seed and found again
    by its cache key (``study.configs.upstream_cache_key``): every arm, rerun and study that
    would train the very same one reuses it. Stage trials are tagged ``stage=upstream``.
    """
    name: str                           # default prefix of its upstreams' keys
    trainable: TrainableRef
    search_space: SearchSpace           # its nuisance hyperparameters
    metric: str = "val/loss"            # selection metric on validation data
    mode: str = "min"
    fixed: Mapping[str, Any] = field(default_factory=dict)   # settings of every upstream of the stage
    # setting -> its value when the study's fixed settings leave it out: taken from the study
    # otherwise (our autoencoder holds out the arms' validation split, val_fraction)
    inherit: Mapping[str, Any] = field(default_factory=dict)
    # 'module:function' returning a digest of the code that decides the weights (part of the
    # cache key); None: a digest of the trainable's own source file
    code_version: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "fixed", frozen_map(self.fixed))
        object.__setattr__(self, "inherit", frozen_map(self.inherit))
        if self.mode not in ("min", "max"):
            raise ValueError(f"stage {self.name!r}: mode must be 'min' or 'max', got {self.mode!r}")


@dataclass(frozen=True)
class Upstream:
    """One trained thing a stage makes: the stage with its settings.

    ``name`` is its key in MLflow (the ``arm`` tag of its runs, ``upstream_runs``), a
    ``str.format`` template over the settings (``"dae-{corruption}-{noise_level:g}"``); empty:
    the stage's name and the settings. ``settings_from`` takes stage settings from the settings
    of the arm that uses it: a denoiser trained on the corruption of the arm's own test inputs.
    """
    stage: Stage
    settings: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    settings_from: Mapping[str, str] = field(default_factory=dict)   # stage setting <- arm setting

    def __post_init__(self):
        object.__setattr__(self, "settings", frozen_map(self.settings))
        object.__setattr__(self, "settings_from", frozen_map(self.settings_from))

    def resolve(self, arm_settings: Mapping[str, Any], where: str) -> Upstream:
        """This upstream for an arm with ``arm_settings`` (``where`` names the arm in errors)."""
        missing = [src for src in self.settings_from.values() if src not in arm_settings]
        if missing:
            raise ValueError(f"{where}: upstream {self.name or self.stage.name!r} takes its settings from "
                             f"{missing}, which the arm does not set (its settings: {sorted(arm_settings)})")
        settings = {**self.settings, **{k: arm_settings[src] for k, src in self.settings_from.items()}}
        return Upstream(self.stage, settings, self.name)

    @property
    def key(self) -> str:
        if self.settings_from:
            raise ValueError(f"upstream {self.name!r} depends on an arm's settings: resolve it first")
        if not self.name:
            return "-".join([self.stage.name, *(f"{k}={v}" for k, v in sorted(self.settings.items()))])
        try:
            return self.name.format(**self.settings)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"upstream name {self.name!r} of stage {self.stage.name!r} does not format with "
                             f"its settings {dict(self.settings)}: {e!r}") from None


@dataclass(frozen=True)
class Use:
    """An arm builds on an upstream artifact: ``file`` of the upstream's final checkpoint
    reaches the arm's trainable as a local path under the config key ``into``. ``shared``
    settings belong to the artifact (an encoder's width): the arm takes the upstream's value,
    and a level that sets a different one is an error."""
    upstream: Upstream
    file: str                        # e.g. "encoder.pt"
    into: str                        # e.g. "encoder_checkpoint"
    shared: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "shared", tuple(self.shared))

    @property
    def slot(self) -> str:
        """The artifact reference's name: the trial config key that holds it (``<upstream key>/<seed>/
        <file>``), the ``uses.<slot>.*`` tags of the trial's run, and an older store's ``meta.<slot>``
        param. ``into`` is the other key: the one the trainable gets the file's local path under."""
        return self.into.removesuffix("_checkpoint") + "_artifact"

    def resolve(self, arm_settings: dict[str, Any], where: str) -> Use:
        """The use for one arm; copies the shared settings into ``arm_settings``."""
        upstream = self.upstream.resolve(arm_settings, where)
        for key in self.shared:
            if key not in upstream.settings:
                raise ValueError(f"{where}: {key!r} is shared with upstream {upstream.key!r}, which does not set it")
            if key in arm_settings and arm_settings[key] != upstream.settings[key]:
                raise ValueError(f"{where} sets {key}={arm_settings[key]!r} but builds on {upstream.key!r} "
                                 f"with {key}={upstream.settings[key]!r}")
            arm_settings[key] = upstream.settings[key]
        return Use(upstream, self.file, self.into, self.shared)
