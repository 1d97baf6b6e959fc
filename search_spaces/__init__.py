"""Optuna search spaces as data: each range carries its unit and the reason for its bounds.

A space is a tuple of ``Param``; ``suggest(trial, params)`` turns it into Optuna's
define-by-run calls, so the same data drives OptunaSearch, the dry-run plan and the report's
"tuned hyperparameters" table. Conditional ranges (the learning rate depends on the optimizer
an arm fixes) are resolved by ``resolve(space, fixed)`` before tuning starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence


@dataclass(frozen=True)
class Param:
    name: str                      # a trainable config key
    low: float | None = None       # numeric range, inclusive
    high: float | None = None
    log: bool = False              # sample on a log scale (rates, decays)
    choices: tuple = ()            # categorical alternatives (instead of low/high)
    integer: bool = False
    reason: str = ""               # why these bounds: shown by --dry-run and in the report
    start: Any = None              # the value tried first (a researcher's hand-picked guess);
                                   # None: the trainable's default, where it lies in the range

    def __post_init__(self):
        if bool(self.choices) == (self.low is not None):
            raise ValueError(f"search parameter {self.name!r}: give either choices or low/high")
        if self.low is not None and not self.low < self.high:
            raise ValueError(f"search parameter {self.name!r}: low {self.low} must be < high {self.high}")
        if not self.reason:
            raise ValueError(f"search parameter {self.name!r} needs a reason for its range")
        if self.start is not None and not self.contains(self.start):
            raise ValueError(f"search parameter {self.name!r}: start {self.start!r} is outside its range")

    def contains(self, value) -> bool:
        if self.choices:
            return value in self.choices
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def describe(self) -> str:
        if self.choices:
            return f"{self.name} in {list(self.choices)}"
        scale = "log" if self.log else "linear"
        return f"{self.name} in [{self.low:g}, {self.high:g}] ({scale})"


@dataclass(frozen=True)
class SearchSpace:
    """Named nuisance space; ``depends_on`` lets a range depend on a fixed setting of the arm."""
    name: str
    params: tuple[Param, ...]
    overrides: Mapping[str, Callable[[Mapping[str, Any]], Param | None]] = field(default_factory=dict)

    def resolve(self, fixed: Mapping[str, Any]) -> tuple[Param, ...]:
        """The concrete parameters for an arm with settings ``fixed``.

        A parameter the arm fixes itself (a scientific factor such as dropout in the dropout
        ablation) is not tuned; an override may replace a range given the arm's settings.
        """
        resolved = []
        for param in self.params:
            if param.name in fixed:
                continue
            override = self.overrides.get(param.name)
            param = override(fixed) if override else param
            if param is not None:
                resolved.append(param)
        return tuple(resolved)


def suggest(trial, params: Sequence[Param]) -> None:
    """Define-by-run: one ``trial.suggest_*`` per parameter (no work, as OptunaSearch requires)."""
    for p in params:
        if p.choices:
            trial.suggest_categorical(p.name, list(p.choices))
        elif p.integer:
            trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            trial.suggest_float(p.name, p.low, p.high, log=p.log)


def default_point(params: Sequence[Param], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Each parameter's ``start``, else the trainable's default where it lies in the range:
    Optuna evaluates this point first, so every arm's search includes the configuration a
    researcher would have tried by hand."""
    point = {}
    for p in params:
        value = p.start if p.start is not None else defaults.get(p.name)
        if value is not None and p.contains(value):
            point[p.name] = value
    return point
