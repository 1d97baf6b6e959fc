"""What a study declares about itself, read from its parent run's ``study.json``
(study/spec.py ``Study.definition``) and tags, with what a store recorded before a field existed
falls back to. Pure functions on plain data: no MLflow.

* the compared metrics: each with its smallest effect of interest (margin) and direction
  (``"metrics"``: test_metric first); a store without them compares ``test/acc`` with the
  study's ``equivalence_margin`` (0.005 by default), as reports did then;
* the trainable's schema defaults per stage (``"trainables"``: label -> schema, claims,
  mlflow_model); a store without them gets ``None``, and the caller falls back to our
  classifier's or autoencoder's schema (``analysis.settings.our_defaults``);
* whether the trainable declares an MLflow model;
* the tune phase's choice per arm (the parent's ``best_configs.<stage>`` tag, or a record of
  one tuning per arm and seed): which arms were configured from a trial ASHA stopped early.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from analysis.stats import lower_is_better
from study.records import STAGE_CLASSIFY, Outcome, Tag

DEFAULT_PRIMARY = "test/acc"       # study/spec.py's default test_metric
DEFAULT_MARGIN = 0.005             # study/spec.py's default equivalence_margin (on test_metric)


@dataclass(frozen=True)
class MetricSpec:
    """A metric as the study compares it."""
    name: str
    margin: float | None           # smallest effect of interest, in the metric's units; None: not declared
    mode: str                      # "max": higher is better; "min": lower is better

    @property
    def minimize(self) -> bool:
        return self.mode == "min"


def primary_metric(definition: Mapping | None) -> str:
    """The study's test_metric, ``test/acc`` for a store recorded before it was declared."""
    return str((definition or {}).get("test_metric") or DEFAULT_PRIMARY)


def compared_metrics(definition: Mapping | None) -> dict[str, MetricSpec]:
    """Metric name -> its declaration, test_metric first. A store without ``"metrics"``: the
    primary metric with the study's ``equivalence_margin`` (on test/acc only, where it was
    declared), higher is better."""
    definition = definition or {}
    declared = definition.get("metrics")
    if declared:
        return {str(m["name"]): MetricSpec(str(m["name"]), _margin(m.get("margin")), str(m.get("mode") or "max"))
                for m in declared}
    primary = primary_metric(definition)
    margin = definition.get("equivalence_margin", DEFAULT_MARGIN) if primary == DEFAULT_PRIMARY else None
    return {primary: MetricSpec(primary, _margin(margin), "max")}


def metric_spec(metric: str, declared: Mapping[str, MetricSpec]) -> MetricSpec:
    """The declaration of ``metric``; an undeclared one has no margin and the direction its
    name suggests (``lower_is_better``)."""
    return declared.get(metric) or MetricSpec(metric, None, "min" if lower_is_better(metric) else "max")


def _margin(value: Any) -> float | None:
    try:
        margin = float(value)
    except (TypeError, ValueError):
        return None
    return margin if margin > 0 else None


# -- the trainables ----------------------------------------------------------------------------

def trainable_labels(definition: Mapping | None, stage: str) -> list[str]:
    """The labels of the trainables of a stage: the study's for the classify stage (the arms),
    every upstream's for an upstream stage."""
    definition = definition or {}
    if stage == STAGE_CLASSIFY:
        return [str(definition["trainable"])] if definition.get("trainable") else []
    return sorted({str(u["trainable"]) for u in definition.get("upstreams", []) if u.get("trainable")})


def trainable_schema(definition: Mapping | None, stage: str) -> dict[str, Any] | None:
    """The schema defaults of the stage's trainable as the study recorded them (``"trainables"``);
    ``None`` for a store recorded before they were (the caller then falls back to ours).
    Several upstream trainables: the keys on whose default they agree."""
    recorded = (definition or {}).get("trainables")
    if not isinstance(recorded, Mapping):
        return None
    schemas = [dict(recorded.get(label, {}).get("schema") or {}) for label in trainable_labels(definition, stage)]
    if not schemas:
        return {}
    return {k: v for k, v in schemas[0].items() if all(k in s and s[k] == v for s in schemas[1:])}


def declares_mlflow_model(definition: Mapping | None) -> bool | None:
    """Whether the study's trainable declares an MLflow model (``"trainables"``); ``None`` for a
    store recorded before trainables declared it."""
    recorded = (definition or {}).get("trainables")
    labels = trainable_labels(definition, STAGE_CLASSIFY)
    if not isinstance(recorded, Mapping) or not labels or labels[0] not in recorded:
        return None
    return bool(recorded[labels[0]].get("mlflow_model"))


# -- the tune phase's choice -------------------------------------------------------------------

def chosen_configs(parent_tags: Mapping[str, str], stage: str = STAGE_CLASSIFY) -> dict[str, dict]:
    """Arm -> what its tune phase chose (the parent's ``best_configs.<stage>`` tag: params,
    tune_run_id, val_metric, outcome); {} when the tag is absent or does not parse."""
    try:
        chosen = json.loads(parent_tags.get(f"{Tag.CHOSEN}{stage}") or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}
    return {str(arm): entry for arm, entry in chosen.items() if isinstance(entry, Mapping)} \
        if isinstance(chosen, Mapping) else {}


def pruned_choices(choices: Mapping[str, Mapping]) -> dict[str, list[dict]]:
    """Arm -> its choices that come from a tune trial ASHA stopped early (``outcome`` = pruned:
    never trained to full length in the tune phase). ``choices``: label -> choice, as
    ``chosen_configs`` reads them (label = arm) or a record of one tuning per (arm, seed)
    (each choice names its ``arm`` and ``seed``)."""
    out: dict[str, list[dict]] = {}
    for label, entry in choices.items():
        if isinstance(entry, Mapping) and entry.get("outcome") == Outcome.PRUNED:
            out.setdefault(str(entry.get("arm") or label), []).append(dict(entry))
    return out
