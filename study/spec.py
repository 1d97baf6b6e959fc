"""What a study is: frozen dataclasses, in the tuning playbook's vocabulary.

* scientific factors: what the study asks about (each has levels; arms are combinations);
* nuisance hyperparameters: tuned per arm by Optuna so every arm gets its best shot;
* fixed settings: the same for every arm.

Arms are derived from the baseline (one factor at a time) or as the full factorial, minus the
cells the study declares invalid (with a reason, shown by ``--dry-run``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from search_spaces import SearchSpace

DESIGNS = ("one_at_a_time", "factorial")


def frozen_map(mapping: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Pretraining:
    """An autoencoder the classifier builds on; run once per (kind, corruption, seed), shared
    by every arm (and every study on the same dataset and budget) that names the same one."""
    corruption: str = "none"       # "none" = plain autoencoder; else a denoising one
    noise_level: float = 0.0       # gaussian sigma or salt-and-pepper amount

    @property
    def kind(self) -> str:
        return "ae" if self.corruption == "none" else "dae"

    @property
    def key(self) -> str:
        return "ae" if self.kind == "ae" else f"dae-{self.corruption}-{self.noise_level:g}"

    def trainable_settings(self) -> dict[str, Any]:
        return {"corruption": self.corruption, "noise_level": self.noise_level}


@dataclass(frozen=True)
class Level:
    """One level of a factor: a short name for tables and the settings it implies.

    ``settings`` are trainable config keys, plus protocol keys: ``pretraining`` (a
    ``Pretraining`` whose encoder initialises the classifier), ``denoiser`` (a denoising
    ``Pretraining`` whose autoencoder cleans the inputs before the classifier), and for noise
    studies ``train_on_test_noise`` (train on the cell's test corruption) and ``denoise`` (a
    denoiser trained on the cell's test corruption).
    """
    name: str
    settings: Mapping[str, Any]

    def __post_init__(self):
        object.__setattr__(self, "settings", frozen_map(self.settings))


@dataclass(frozen=True)
class Factor:
    name: str
    levels: tuple[Level, ...]
    reason: str = ""                # what question this factor asks

    def level(self, name: str) -> Level:
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(f"factor {self.name!r} has no level {name!r}; levels: {[l.name for l in self.levels]}")


@dataclass(frozen=True)
class InvalidCell:
    levels: Mapping[str, str]       # factor name -> level name; a cell matches if all agree
    reason: str

    def __post_init__(self):
        object.__setattr__(self, "levels", frozen_map(self.levels))

    def matches(self, levels: Mapping[str, str]) -> bool:
        return all(levels.get(f) == l for f, l in self.levels.items())


@dataclass(frozen=True)
class Budget:
    dataset: str
    epochs: int                      # classifier epochs (ASHA's max_t; replicate length)
    trials_per_arm: int              # Optuna trials per arm in the tune phase (same for all)
    seeds: tuple[int, ...]           # replicate seeds, identical for every arm (paired)
    pretrain_epochs: int = 0
    pretrain_trials: int = 0
    grace_period: int = 1            # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: int = 2        # ASHA: keep the top 1/rf at each rung
    tune_seed: int = 1000            # tuning uses its own seed, never one of the replicate seeds

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if self.epochs < 1 or self.trials_per_arm < 1 or not self.seeds:
            raise ValueError("a budget needs epochs >= 1, trials_per_arm >= 1 and at least one seed")
        if self.grace_period > self.epochs:
            raise ValueError(f"grace_period {self.grace_period} exceeds epochs {self.epochs}")


@dataclass(frozen=True)
class Arm:
    name: str
    levels: Mapping[str, str]        # factor -> level name
    settings: Mapping[str, Any]      # trainable config (fixed + level settings), no protocol keys
    pretraining: Pretraining | None
    denoiser: Pretraining | None
    is_baseline: bool

    @property
    def pretrainings(self) -> tuple[Pretraining, ...]:
        return tuple(p for p in (self.pretraining, self.denoiser) if p is not None)


@dataclass(frozen=True)
class Study:
    name: str
    description: str                 # one line, shown by --list
    question: str                    # the researcher's question, and which write-up asked it
    factors: tuple[Factor, ...]
    baseline: Mapping[str, str]      # factor -> level name of the reference arm
    design: str                      # "one_at_a_time" or "factorial"
    search_space: SearchSpace        # nuisance hyperparameters, tuned per arm
    budgets: Mapping[str, Budget]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    invalid: tuple[InvalidCell, ...] = ()
    metric: str = "val/acc"          # selection metric (validation only, never test)
    mode: str = "max"
    pretrain_metric: str = "val/loss"
    pretrain_mode: str = "min"
    trainable: str = "classifier"

    def __post_init__(self):
        object.__setattr__(self, "baseline", frozen_map(self.baseline))
        object.__setattr__(self, "budgets", frozen_map(self.budgets))
        object.__setattr__(self, "fixed", frozen_map(self.fixed))
        if self.design not in DESIGNS:
            raise ValueError(f"study {self.name}: design must be one of {DESIGNS}")
        names = [f.name for f in self.factors]
        if set(self.baseline) != set(names):
            raise ValueError(f"study {self.name}: baseline must set every factor {names}")
        for f in self.factors:
            f.level(self.baseline[f.name])       # raises on an unknown level
        if any(c.matches(self.baseline) for c in self.invalid):
            raise ValueError(f"study {self.name}: the baseline is declared invalid")
        if {"smoke", "full"} - set(self.budgets):
            raise ValueError(f"study {self.name}: needs 'smoke' and 'full' budgets")

    # -- arms -------------------------------------------------------------------------------
    def cells(self) -> list[dict[str, str]]:
        """Every combination the design asks for, invalid ones included (in a stable order)."""
        if self.design == "factorial":
            combos = itertools.product(*[[l.name for l in f.levels] for f in self.factors])
            return [dict(zip([f.name for f in self.factors], combo)) for combo in combos]
        cells = [dict(self.baseline)]
        for f in self.factors:
            for level in f.levels:
                if level.name != self.baseline[f.name]:
                    cells.append({**self.baseline, f.name: level.name})
        return cells

    def invalid_cells(self) -> list[tuple[dict[str, str], str]]:
        out = []
        for cell in self.cells():
            for c in self.invalid:
                if c.matches(cell):
                    out.append((cell, c.reason))
                    break
        return out

    def arms(self) -> tuple[Arm, ...]:
        invalid = [cell for cell, _ in self.invalid_cells()]
        return tuple(self._arm(cell) for cell in self.cells() if cell not in invalid)

    def arm(self, name: str) -> Arm:
        for arm in self.arms():
            if arm.name == name:
                return arm
        raise KeyError(f"study {self.name} has no arm {name!r}")

    def _arm(self, cell: Mapping[str, str]) -> Arm:
        settings: dict[str, Any] = dict(self.fixed)
        for f in self.factors:
            settings.update(f.level(cell[f.name]).settings)
        pretraining = settings.pop("pretraining", None)
        denoiser = settings.pop("denoiser", None)
        # Settings that follow from the test-time corruption of the same cell (noise studies):
        # train on the same corruption, and/or put a denoiser trained on it in front.
        if settings.pop("train_on_test_noise", False):
            settings["train_corruption"] = settings.get("test_corruption", "none")
            settings["train_noise_level"] = settings.get("test_noise_level", 0.0)
        if settings.pop("denoise", False):
            denoiser = Pretraining(settings.get("test_corruption", "none"),
                                   settings.get("test_noise_level", 0.0))
        name = ",".join(f"{f}={level}" for f, level in cell.items())
        return Arm(name=name, levels=frozen_map(cell), settings=frozen_map(settings),
                   pretraining=pretraining, denoiser=denoiser,
                   is_baseline=dict(cell) == dict(self.baseline))

    def pretrainings(self) -> tuple[Pretraining, ...]:
        """Distinct autoencoders the arms need, each trained once per seed."""
        seen: dict[str, Pretraining] = {}
        for arm in self.arms():
            for p in arm.pretrainings:
                seen.setdefault(p.key, p)
        return tuple(seen.values())

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise KeyError(f"unknown budget {name!r}; budgets: {sorted(self.budgets)}")
        return self.budgets[name]
