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
    latent_dim: int = 32           # seed 003's bottleneck; the classifier's encoder must match

    @property
    def kind(self) -> str:
        return "ae" if self.corruption == "none" else "dae"

    @property
    def key(self) -> str:
        key = "ae" if self.kind == "ae" else f"dae-{self.corruption}-{self.noise_level:g}"
        return key if self.latent_dim == 32 else f"{key}-z{self.latent_dim}"

    def trainable_settings(self) -> dict[str, Any]:
        return {"corruption": self.corruption, "noise_level": self.noise_level, "latent_dim": self.latent_dim}


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
class DegradedCell(InvalidCell):
    """A valid cell whose design predicts a low score (a clean-trained classifier scored on
    corrupted inputs): it runs and is reported, but the smoke test's accuracy floor does not
    apply to it. The reason says why the low score is the expected answer, not a bug."""


Cell = Mapping[str, str]            # factor name -> level name; a partial cell averages arms


@dataclass(frozen=True)
class Contrast:
    """A planned comparison: a weighted sum of cell means, named in words.

    ``terms`` pairs a (partial) cell with a weight. A partial cell (some factors left out)
    stands for the mean of every valid arm it matches, so an averaged effect always names
    the cells it averaged (``Study.contrast_arms``). Weights sum to zero.
    """
    name: str
    terms: tuple[tuple[Cell, float], ...]

    def __post_init__(self):
        object.__setattr__(self, "terms", tuple((frozen_map(c), float(w)) for c, w in self.terms))
        if abs(sum(w for _, w in self.terms)) > 1e-9:
            raise ValueError(f"contrast {self.name!r}: weights must sum to 0, got "
                             f"{[w for _, w in self.terms]}")


def difference(name: str, a: Cell, b: Cell) -> Contrast:
    """mean(a) - mean(b)."""
    return Contrast(name, ((a, 1.0), (b, -1.0)))


def interaction(name: str, a1: Cell, b1: Cell, a2: Cell, b2: Cell) -> Contrast:
    """A difference of differences: (a1 - b1) - (a2 - b2)."""
    return Contrast(name, ((a1, 1.0), (b1, -1.0), (a2, -1.0), (b2, 1.0)))


@dataclass(frozen=True)
class Budget:
    dataset: str
    epochs: int                      # classifier epochs (ASHA's max_t; replicate length)
    trials_per_arm: int              # Optuna trials per arm in the tune phase (same for all)
    seeds: tuple[int, ...]           # replicate seeds, identical for every arm (paired)
    pretrain_epochs: int = 0         # autoencoder epochs at most (early stopping may end sooner)
    pretrain_trials: int = 0
    pretrain_patience: int = 3       # autoencoder early stopping on val/loss; best epoch kept
    grace_period: int = 1            # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: int = 2        # ASHA: keep the top 1/rf at each rung
    startup_trials: int = 10         # TPE's random start per arm (Optuna's default: 10)
    tune_seed: int = 1000            # tuning uses its own seed, never one of the replicate seeds

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if self.epochs < 1 or self.trials_per_arm < 1 or not self.seeds:
            raise ValueError("a budget needs epochs >= 1, trials_per_arm >= 1 and at least one seed")
        if self.grace_period > self.epochs:
            raise ValueError(f"grace_period {self.grace_period} exceeds epochs {self.epochs}")
        if self.tune_seed in self.seeds:
            # the tuned configuration was selected on the tune seed's split and initialisation:
            # replicating on that seed would score the winner on the draw it was chosen for
            raise ValueError(f"the tune seed {self.tune_seed} is one of the replicate seeds "
                             f"{list(self.seeds)}; pick replicate seeds without it")


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
    degraded: tuple[DegradedCell, ...] = ()   # valid cells expected to score low, with a reason
    contrasts: tuple[Contrast, ...] = ()      # the planned comparisons: one Holm family
    equivalence_margin: float = 0.005         # smallest effect of interest on test/acc (0.5 pp)
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
        for cell in (*self.invalid, *self.degraded):
            self._check_cell(cell.levels, "a declared cell")
        names = [c.name for c in self.contrasts]
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name}: two contrasts share a name")
        for contrast in self.contrasts:
            self.contrast_arms(contrast)        # raises on a cell that matches no valid arm

    def _check_cell(self, cell: Cell, what: str) -> None:
        for f, level in cell.items():
            factor = next((x for x in self.factors if x.name == f), None)
            if factor is None:
                raise ValueError(f"study {self.name}: {what} names factor {f!r}; factors: "
                                 f"{[x.name for x in self.factors]}")
            try:
                factor.level(level)
            except KeyError as e:
                raise ValueError(f"study {self.name}: {what}: {e.args[0]}") from None

    # -- contrasts --------------------------------------------------------------------------
    def contrast_arms(self, contrast: Contrast) -> list[tuple[float, tuple[str, ...]]]:
        """Per term: its weight and the arms (names) whose mean stands for the term's cell."""
        arms = self.arms()
        out = []
        for cell, weight in contrast.terms:
            self._check_cell(cell, f"contrast {contrast.name!r}")
            matched = tuple(a.name for a in arms if all(a.levels[f] == l for f, l in cell.items()))
            if not matched:
                raise ValueError(f"study {self.name}: contrast {contrast.name!r} names cell {dict(cell)}, "
                                 "which matches no valid arm")
            out.append((weight, matched))
        return out

    def contrast_weights(self, contrast: Contrast) -> dict[str, float]:
        """Arm name -> weight: each term's weight spread evenly over the arms it averages."""
        weights: dict[str, float] = {}
        for weight, matched in self.contrast_arms(contrast):
            for arm in matched:
                weights[arm] = weights.get(arm, 0.0) + weight / len(matched)
        return {arm: w for arm, w in weights.items() if abs(w) > 1e-12}

    def is_degraded(self, levels: Cell) -> str | None:
        """The declared reason when the cell is expected to score low, else None."""
        for cell in self.degraded:
            if cell.matches(levels):
                return cell.reason
        return None

    def definition(self) -> dict[str, Any]:
        """What analysis needs to know about the study, as JSON-ready data (``study.json``)."""
        return {
            "name": self.name, "description": self.description, "question": self.question,
            "design": self.design, "metric": self.metric, "mode": self.mode,
            "equivalence_margin": self.equivalence_margin,
            "factors": [{"name": f.name, "reason": f.reason, "levels": [l.name for l in f.levels]}
                        for f in self.factors],
            "baseline": dict(self.baseline),
            "arms": [{"name": a.name, "levels": dict(a.levels), "is_baseline": a.is_baseline,
                      "degraded": self.is_degraded(a.levels)} for a in self.arms()],
            "invalid": [{"levels": dict(c.levels), "reason": c.reason} for c in self.invalid],
            "degraded": [{"levels": dict(c.levels), "reason": c.reason} for c in self.degraded],
            "contrasts": [{"name": c.name,
                           "terms": [{"cell": dict(cell), "weight": w, "arms": list(arms)}
                                     for (cell, w), (_, arms) in zip(c.terms, self.contrast_arms(c))],
                           "weights": self.contrast_weights(c)}
                          for c in self.contrasts],
        }

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
        if pretraining is not None and settings.get("latent_dim", 32) != pretraining.latent_dim:
            raise ValueError(f"study {self.name}: cell {dict(cell)} fine-tunes a latent_dim="
                             f"{pretraining.latent_dim} autoencoder with latent_dim={settings.get('latent_dim', 32)}")
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
