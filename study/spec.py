"""What a study is: frozen dataclasses, in the tuning playbook's vocabulary.

* scientific factors: what the study asks about (each has levels; arms are combinations);
* nuisance hyperparameters: tuned per arm by Optuna so every arm gets its best shot;
* fixed settings: the same for every arm.

Arms are derived from the baseline (one factor at a time), as the full factorial, or as the
half of a two-level factorial that holds the baseline, minus the cells the study declares
invalid (with a reason, shown by ``--dry-run``). Study files build these through ``study.api``
(docs/writing-a-study.md); what a study builds on (data, trainables, upstream stages) is
``study.upstream``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping

from search_spaces import SearchSpace
from study.upstream import Data, TrainableRef, Upstream, Use, frozen_map, ref_label

# half_fraction: two-level factors only; the cells that differ from the baseline in an even
# number of factors (a 2^(k-1) design; each main effect is aliased with the interaction of
# the other factors)
DESIGNS = ("one_at_a_time", "factorial", "half_fraction")


@dataclass(frozen=True)
class Level:
    """One level of a factor: a short name for tables and the settings it implies.

    ``settings`` are the trainable's config keys. ``uses`` are upstream artifacts the level
    builds on (a pretrained encoder, a denoiser in front). ``settings_from`` copies another
    setting of the same cell: ``{"train_corruption": "test_corruption"}`` trains on the
    corruption the cell tests on.
    """
    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    uses: tuple[Use, ...] = ()
    settings_from: Mapping[str, str] = field(default_factory=dict)   # setting <- another setting of the cell

    def __post_init__(self):
        object.__setattr__(self, "settings", frozen_map(self.settings))
        object.__setattr__(self, "uses", tuple(self.uses))
        object.__setattr__(self, "settings_from", frozen_map(self.settings_from))


@dataclass(frozen=True)
class Factor:
    name: str
    levels: tuple[Level, ...]
    reason: str = ""                # what question this factor asks

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(self.levels))
        names = [level.name for level in self.levels]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"factor {self.name!r}: levels need distinct names, got {names}")

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
class Metric:
    """A metric the replicates are compared on (a ``test/...`` key the trainable reports in its
    last report, or any other key of it, such as ``time_to/...``), with its smallest effect of
    interest: the margin of "equivalent" and of "at least the smallest effect"."""
    name: str
    margin: float                    # in the metric's own units (0.005 = 0.5 pp of accuracy)
    mode: str = "max"                # "max": higher is better; "min": lower is better

    def __post_init__(self):
        if not self.margin > 0:
            raise ValueError(f"metric {self.name!r}: margin must be > 0 (the smallest effect of interest, in "
                             f"the metric's units), got {self.margin!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"metric {self.name!r}: mode must be 'min' or 'max', got {self.mode!r}")


@dataclass(frozen=True)
class Contrast:
    """A planned comparison: a weighted sum of cell means, named in words.

    ``terms`` pairs a (partial) cell with a weight. A partial cell (some factors left out)
    stands for the mean of every valid arm it matches, so an averaged effect always names
    the cells it averaged (``Study.contrast_arms``). Weights sum to zero. ``metric``: the
    metric it compares (one of the study's ``metrics``); None: the study's ``test_metric``.
    """
    name: str
    terms: tuple[tuple[Cell, float], ...]
    metric: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "terms", tuple((frozen_map(c), float(w)) for c, w in self.terms))
        if abs(sum(w for _, w in self.terms)) > 1e-9:
            raise ValueError(f"contrast {self.name!r}: weights must sum to 0, got "
                             f"{[w for _, w in self.terms]}")


def difference(name: str, a: Cell, b: Cell, metric: str | None = None) -> Contrast:
    """mean(a) - mean(b), on ``metric`` (None: the study's test_metric)."""
    return Contrast(name, ((a, 1.0), (b, -1.0)), metric)


def interaction(name: str, a1: Cell, b1: Cell, a2: Cell, b2: Cell, metric: str | None = None) -> Contrast:
    """A difference of differences: (a1 - b1) - (a2 - b2)."""
    return Contrast(name, ((a1, 1.0), (b1, -1.0), (a2, -1.0), (b2, 1.0)), metric)


@dataclass(frozen=True)
class Budget:
    dataset: str
    epochs: int                      # classifier epochs (ASHA's max_t; replicate length)
    trials_per_tuning: int           # Optuna trials of each tuning: each arm is tuned on each seed (same for all)
    seeds: tuple[int, ...]           # replicate seeds, identical for every arm (paired)
    upstream_epochs: int = 0         # an upstream stage's epochs at most (its early stopping may end sooner)
    upstream_trials: int = 0         # Optuna trials of each upstream's one tuning (on the tune seed)
    upstream_patience: int = 3       # upstream early stopping: epochs without a better stage metric
    upstream_grace_period: int = 0   # ASHA's grace in an upstream's tuning (0: grace_period): epochs every
                                     # trial gets, so that more than one runs to its end and they compare
    grace_period: int = 1            # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: int = 2        # ASHA: keep the top 1/rf at each rung
    startup_trials: int = 10         # TPE's random start per tuning (Optuna's default: 10)
    tune_seed: int = 1000            # upstream stages are tuned on it (never a replicate seed); each arm's
                                     # tuning on seed s seeds its Optuna sampler with tune_seed + s
    max_seeds: int = 0               # > 0: sequential seeds up to this cap (--until-decided; study.looks)
    seed_batch: int = 3              # seeds added to every arm at each sequential look

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if self.epochs < 1 or self.trials_per_tuning < 1 or not self.seeds:
            raise ValueError("a budget needs epochs >= 1, trials_per_tuning >= 1 and at least one seed")
        if self.grace_period > self.epochs:
            raise ValueError(f"grace_period {self.grace_period} exceeds epochs {self.epochs}")
        if self.max_seeds and (self.max_seeds < len(self.seeds) or self.seed_batch < 1):
            raise ValueError(f"sequential seeds need max_seeds >= the {len(self.seeds)} seeds to start from and "
                             f"seed_batch >= 1, got max_seeds {self.max_seeds}, seed_batch {self.seed_batch}")
        if self.tune_seed in self.seeds:
            # the tuned configuration was selected on the tune seed's split and initialisation:
            # replicating on that seed would score the winner on the draw it was chosen for
            raise ValueError(f"the tune seed {self.tune_seed} is one of the replicate seeds "
                             f"{list(self.seeds)}; pick replicate seeds without it")


@dataclass(frozen=True)
class Arm:
    name: str
    levels: Mapping[str, str]        # factor -> level name
    settings: Mapping[str, Any]      # trainable config (fixed + level settings)
    uses: tuple[Use, ...]            # upstream artifacts, resolved for this arm
    is_baseline: bool

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        """The distinct upstreams this arm builds on."""
        return tuple({u.upstream.key: u.upstream for u in self.uses}.values())


@dataclass(frozen=True)
class Study:
    name: str
    description: str                 # one line, shown by --list
    question: str                    # the researcher's question, and which write-up asked it
    factors: tuple[Factor, ...]
    baseline: Mapping[str, str]      # factor -> level name of the reference arm
    design: str                      # one of DESIGNS
    search_space: SearchSpace        # nuisance hyperparameters, tuned per arm
    budgets: Mapping[str, Budget]
    trainable: TrainableRef | None = None     # trains one arm: "package.module:function" or the function
    data: Data | None = None                  # None: the trainable loads config["dataset"] itself
    fixed: Mapping[str, Any] = field(default_factory=dict)
    invalid: tuple[InvalidCell, ...] = ()
    degraded: tuple[DegradedCell, ...] = ()   # valid cells expected to score low, with a reason
    contrasts: tuple[Contrast, ...] = ()      # the planned comparisons: one Holm family
    equivalence_margin: float = 0.005         # smallest effect of interest on test_metric (0.5 pp)
    metric: str = "val/acc"          # selection metric (validation only, never test)
    mode: str = "max"
    test_metric: str = "test/acc"    # the replicates' primary comparison metric (higher is better)
    # other metrics compared, each with its own smallest effect of interest and direction
    metrics: tuple[Metric, ...] = ()

    def __post_init__(self):
        for name in ("baseline", "budgets", "fixed"):
            object.__setattr__(self, name, frozen_map(getattr(self, name)))
        for name in ("factors", "invalid", "degraded", "contrasts", "metrics"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check_fields()
        self._check_design()
        for cell in (*self.invalid, *self.degraded):
            self._check_cell(cell.levels, "a declared cell")
        if any(c.matches(self.baseline) for c in self.invalid):
            raise ValueError(f"study {self.name}: baseline: the baseline cell is declared invalid")
        self._check_upstreams(self.arms())
        names = [c.name for c in self.contrasts]
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name}: contrasts: two contrasts share a name")
        self._check_metrics()
        for contrast in self.contrasts:
            self.contrast_arms(contrast)        # raises on a cell that matches no valid arm

    def _check_fields(self) -> None:
        if not self.trainable:
            raise ValueError(f"study {self.name}: trainable: name the function that trains one arm, "
                             "as 'package.module:function' or the function itself")
        if self.design not in DESIGNS:
            raise ValueError(f"study {self.name}: design must be one of {DESIGNS}, got {self.design!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"study {self.name}: mode must be 'min' or 'max', got {self.mode!r}")
        names = [f.name for f in self.factors]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"study {self.name}: factors need distinct names, got {names}")
        if set(self.baseline) != set(names):
            raise ValueError(f"study {self.name}: baseline must set every factor {names}, got {dict(self.baseline)}")
        for f in self.factors:
            if self.baseline[f.name] not in [level.name for level in f.levels]:
                raise ValueError(f"study {self.name}: baseline: factor {f.name!r} has no level "
                                 f"{self.baseline[f.name]!r}; levels: {[level.name for level in f.levels]}")
        if {"smoke", "full"} - set(self.budgets):
            raise ValueError(f"study {self.name}: budgets: needs 'smoke' and 'full', got {sorted(self.budgets)}")

    def _check_metrics(self) -> None:
        names = [m.name for m in self.compared_metrics()]
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name}: metrics: a metric is declared twice ({names}); the test_metric "
                             f"{self.test_metric!r} takes its margin from equivalence_margin")
        if not self.equivalence_margin > 0:
            raise ValueError(f"study {self.name}: equivalence_margin must be > 0, got {self.equivalence_margin!r}")
        for contrast in self.contrasts:
            if contrast.metric is not None and contrast.metric not in names:
                raise ValueError(f"study {self.name}: contrast {contrast.name!r} compares {contrast.metric!r}, which "
                                 f"has no smallest effect of interest: add Metric({contrast.metric!r}, margin=..., "
                                 f"mode=...) to the study's metrics (declared: {names})")

    def compared_metrics(self) -> tuple[Metric, ...]:
        """Every metric the study compares with its margin: test_metric first."""
        return (Metric(self.test_metric, self.equivalence_margin, "max"), *self.metrics)

    def contrast_metric(self, contrast: Contrast) -> Metric:
        name = contrast.metric or self.test_metric
        return next(m for m in self.compared_metrics() if m.name == name)

    def _check_design(self) -> None:
        if self.design == "half_fraction":
            sizes = {f.name: len(f.levels) for f in self.factors}
            if len(sizes) < 3 or set(sizes.values()) != {2}:
                raise ValueError(f"study {self.name}: design 'half_fraction' needs three or more factors of "
                                 f"two levels each, got {sizes}")

    def _check_upstreams(self, arms: tuple[Arm, ...]) -> None:
        """One upstream per key; one tuning metric for every stage (they share a tune phase);
        artifact references that do not collide."""
        upstreams: dict[str, Upstream] = {}
        for arm in arms:
            if len({u.slot for u in arm.uses}) != len(arm.uses):
                raise ValueError(f"study {self.name}: arm {arm.name}: two uses of upstream artifacts go into "
                                 f"keys with the same reference {[u.slot for u in arm.uses]}")
            for u in arm.uses:
                seen = upstreams.setdefault(u.upstream.key, u.upstream)
                if seen != u.upstream:
                    raise ValueError(f"study {self.name}: two different upstreams share the key {u.upstream.key!r}; "
                                     "give them distinct names")
        objectives = {(u.stage.metric, u.stage.mode) for u in upstreams.values()}
        if len(objectives) > 1:
            raise ValueError(f"study {self.name}: its stages are tuned on different metrics {sorted(objectives)}; "
                             "the stages of one study share one tune phase and one metric")

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
            "equivalence_margin": self.equivalence_margin, "test_metric": self.test_metric,
            "metrics": [{"name": m.name, "margin": m.margin, "mode": m.mode} for m in self.compared_metrics()],
            "trainable": ref_label(self.trainable),
            "factors": [{"name": f.name, "reason": f.reason, "levels": [l.name for l in f.levels]}
                        for f in self.factors],
            "baseline": dict(self.baseline),
            "fixed": dict(self.fixed),
            "search_space": _space_definition(self.search_space),
            "arms": [{"name": a.name, "levels": dict(a.levels), "is_baseline": a.is_baseline,
                      "settings": dict(a.settings), "tuned": [p.describe() for p in self.search_space.resolve(a.settings)],
                      "degraded": self.is_degraded(a.levels),
                      "uses": [{"upstream": u.upstream.key, "file": u.file, "into": u.into} for u in a.uses]}
                     for a in self.arms()],
            "upstreams": [{"key": p.key, "stage": p.stage.name, "trainable": ref_label(p.stage.trainable),
                           "settings": dict(p.settings), "fixed": dict(p.stage.fixed), "metric": p.stage.metric,
                           "mode": p.stage.mode, "search_space": _space_definition(p.stage.search_space)}
                          for p in self.upstreams()],
            "invalid": [{"levels": dict(c.levels), "reason": c.reason} for c in self.invalid],
            "degraded": [{"levels": dict(c.levels), "reason": c.reason} for c in self.degraded],
            "contrasts": [{"name": c.name, "metric": self.contrast_metric(c).name,
                           "terms": [{"cell": dict(cell), "weight": w, "arms": list(arms)}
                                     for (cell, w), (_, arms) in zip(c.terms, self.contrast_arms(c))],
                           "weights": self.contrast_weights(c)}
                          for c in self.contrasts],
        }

    # -- arms -------------------------------------------------------------------------------
    def cells(self) -> list[dict[str, str]]:
        """Every combination the design asks for, invalid ones included (in a stable order)."""
        names = [f.name for f in self.factors]
        if self.design in ("factorial", "half_fraction"):
            combos = itertools.product(*[[l.name for l in f.levels] for f in self.factors])
            cells = [dict(zip(names, combo)) for combo in combos]
            if self.design == "half_fraction":
                cells = [c for c in cells if sum(c[f] != self.baseline[f] for f in names) % 2 == 0]
            return cells
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
        """The valid cells as arms, computed once per study (it is frozen)."""
        if "_arms" not in self.__dict__:
            invalid = [cell for cell, _ in self.invalid_cells()]
            object.__setattr__(self, "_arms", tuple(self._arm(cell) for cell in self.cells() if cell not in invalid))
        return self.__dict__["_arms"]

    def arm(self, name: str) -> Arm:
        for arm in self.arms():
            if arm.name == name:
                return arm
        raise KeyError(f"study {self.name} has no arm {name!r}")

    def _arm(self, cell: Mapping[str, str]) -> Arm:
        name = ",".join(f"{f}={level}" for f, level in cell.items())
        where = f"study {self.name}: arm {name}"
        levels = [f.level(cell[f.name]) for f in self.factors]
        settings: dict[str, Any] = dict(self.fixed)
        for level in levels:
            settings.update(level.settings)
        for level in levels:
            for key, source in level.settings_from.items():
                if source not in settings:
                    raise ValueError(f"{where}: level {level.name!r} copies {key!r} from {source!r}, which "
                                     f"neither the cell's levels nor the fixed settings set")
                settings[key] = settings[source]
        uses = tuple(use.resolve(settings, where) for level in levels for use in level.uses)
        return Arm(name=name, levels=frozen_map(cell), settings=frozen_map(settings), uses=uses,
                   is_baseline=dict(cell) == dict(self.baseline))

    def upstreams(self) -> tuple[Upstream, ...]:
        """Distinct upstreams the arms build on, each trained once per seed."""
        seen: dict[str, Upstream] = {}
        for arm in self.arms():
            for p in arm.upstreams:
                seen.setdefault(p.key, p)
        return tuple(seen.values())

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise KeyError(f"unknown budget {name!r}; budgets: {sorted(self.budgets)}")
        return self.budgets[name]


def _space_definition(space: SearchSpace) -> dict[str, Any]:
    """A search space as data: each range as ``--dry-run`` shows it, with its first guess."""
    return {"name": space.name, "params": [{"name": p.name, "range": p.describe(), "start": p.start,
                                            "reason": p.reason} for p in space.params]}
