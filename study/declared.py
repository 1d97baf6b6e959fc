"""What a trainable declares about itself, and what the runner does with each declaration
(docs/writing-a-study.md, "What a trainable declares"). The runner never checks a trainable's
name: a user's trainable that declares what ours declare gets what ours get.

Attributes of the trainable function (all optional):

``schema``          mapping of its config keys to their defaults (or objects with a
                    ``default``): ``--check`` refuses keys it does not list; the first Optuna
                    trial starts from its defaults; the report's settings table names them.
``claims``          protocol guarantees it keeps, from ``CLAIMS``: ``--dry-run`` and the
                    report state only the claims a trainable makes.
``mlflow_model``    ``fn(checkpoint_dir, config, dataset) -> (torch.nn.Module, example_input)``:
                    each completed replicate run logs its model (``runs:/<run id>/model``),
                    rebuilt from the final checkpoint's files.
``epoch_seconds``   ``fn(config, device) -> seconds`` of one epoch of one trial of ``config``
                    (validation included; ``device`` "cpu" or "cuda"): ``--dry-run`` and the
                    progress ETA use it; without it ``--dry-run`` and ``--check`` time two
                    epochs of the baseline arm and estimate every trial from them.

A declaration may also be an import path ``"package.module:function"`` (resolved when used).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

CLAIMS = {
    "best_epoch": "the replicates' test metrics are those of the epoch with the best validation score, whose "
                  "weights the trainable keeps",
    "equal_steps": "an epoch is the full training split's worth of examples, whatever the label fraction",
    "early_stopping": "it stops after `patience` epochs without a better validation score and keeps the best "
                      "epoch's weights",
}


def schema_defaults(fn: Callable) -> dict[str, Any]:
    """A schema's defaults: a mapping's values (or their ``default`` attribute, as our Fields)."""
    schema = getattr(fn, "schema", None)
    if not isinstance(schema, Mapping):
        return {}
    return {k: getattr(v, "default", v) for k, v in schema.items()}


def schema_keys(fn: Callable) -> set[str] | None:
    schema = getattr(fn, "schema", None)
    return None if schema is None else set(schema)


def claims(fn: Callable) -> tuple[str, ...]:
    """The claims ``fn`` declares. Raises ValueError on one that ``CLAIMS`` does not know."""
    declared = getattr(fn, "claims", ()) or ()
    if isinstance(declared, str):
        declared = (declared,)
    unknown = sorted(set(declared) - set(CLAIMS))
    if unknown:
        raise ValueError(f"declares unknown claims {unknown}; known: {', '.join(sorted(CLAIMS))}")
    return tuple(sorted(declared))


def hook(fn: Callable, name: str) -> Callable | None:
    """The function a declaration ``name`` names (``mlflow_model``, ``epoch_seconds``), or None."""
    value = getattr(fn, name, None)
    if value is None or callable(value):
        return value
    from study.configs import resolve_ref
    return resolve_ref(value)


def record(trainables: Mapping[str, Callable]) -> dict[str, dict[str, Any]]:
    """Label -> what the trainable declares, JSON-ready: the study.json ``trainables`` entry the
    analysis reads (its schema defaults name the settings table's defaults)."""
    return {label: {"schema": {k: _json_safe(v) for k, v in schema_defaults(fn).items()},
                    "claims": list(claims(fn)),
                    "mlflow_model": getattr(fn, "mlflow_model", None) is not None,
                    "epoch_seconds": getattr(fn, "epoch_seconds", None) is not None}
            for label, fn in trainables.items()}


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
