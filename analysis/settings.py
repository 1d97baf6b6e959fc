"""Which settings a reader must see per arm: the scientific ones (they differ across arms), the
tuned ones (the tune phase searched them), and the fixed ones that differ from a default a
reader would assume: the trainable's schema default, or, for the optimizer's own arguments
(momentum, weight_decay, ...), PyTorch's default for the arm's optimizer (RMSprop runs with
momentum 0 in PyTorch; AdamW decays by 0.01 there).

The schema defaults are those the study recorded for its own trainable (study.json
``trainables``: ``analysis.definition.trainable_schema``). A store recorded before trainables
were recorded falls back to our classifier's or autoencoder's schema (``our_defaults``) only
when the stage's trainable was ours; for another trainable the defaults are unknown and no
fixed setting is compared with one (``recorded_defaults``).

``settings_table(runs, tune_runs, defaults)``   rows: one per arm (index ``arm``); columns: the
    param keys shown, values as MLflow stores them (strings), "unused by <optimizer>" where an
    optimizer argument does not apply to the arm's optimizer. ``roles``: key -> "factor",
    "tuned", "fixed; default <value>" or "fixed; differs from PyTorch's default".
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping

import pandas as pd

from analysis.bookkeeping import tuned_hyperparameters
from analysis.definition import trainable_labels, trainable_schema
from study.records import STAGE_UPSTREAM

# Run plumbing, not a setting of the experiment: where data and weights come from, the device,
# the seed (varies within an arm), test evaluation (on for every replicate).
IGNORE = {"seed", "dataset", "data_dir", "device", "encoder_checkpoint", "denoiser_checkpoint",
          "evaluate_test", "bf16", "channels_last"}


# our trainables, by the label the runner records (``meta.trainable``, study.json "trainable")
OUR_TRAINABLES = {"trainables.classifier:train_classifier", "trainables.autoencoder:train_autoencoder"}


def recorded_defaults(definition: Mapping | None, stage: str, runs: pd.DataFrame) -> dict[str, Any] | None:
    """The schema defaults of the stage's trainable: as study.json records them; for an older
    store, ours when the stage's trainables (study.json "trainable", else the runs'
    ``meta.trainable`` params) are ours or not recorded at all; None when unknown."""
    schema = trainable_schema(definition, stage)
    if schema is not None:
        return schema
    labels = set(trainable_labels(definition, stage))
    if not labels and "params.meta.trainable" in runs:
        labels = set(runs["params.meta.trainable"].dropna())
    return our_defaults(stage) if labels <= OUR_TRAINABLES else None


def our_defaults(stage: str) -> dict[str, Any]:
    """Schema defaults of our trainable of the stage (classifier or autoencoder): what a store
    recorded before study.json named its trainables' schemas ran; {} if unavailable."""
    try:
        from trainables.config import AUTOENCODER_SCHEMA, CLASSIFIER_SCHEMA
    except ImportError:          # analysis of a store without the trainables' code
        return {}
    schema = AUTOENCODER_SCHEMA if stage == STAGE_UPSTREAM else CLASSIFIER_SCHEMA
    return {k: f.default for k, f in schema.items()}


def _trainable_optimizers() -> tuple[str, ...]:
    try:
        from trainables.config import OPTIMIZERS
    except ImportError:
        return ()
    return tuple(OPTIMIZERS)


def optimizer_defaults(name: str) -> dict[str, Any] | None:
    """PyTorch's defaults of ``torch.optim.<name>`` (matched case-insensitively: "adamw" ->
    AdamW), None when there is no such optimizer."""
    try:
        import torch.optim
    except ImportError:
        return None
    for attr in dir(torch.optim):
        cls = getattr(torch.optim, attr)
        if attr.lower() == str(name).lower() and inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer):
            return {p.name: p.default for p in inspect.signature(cls).parameters.values()
                    if p.default is not inspect.Parameter.empty and isinstance(p.default, (int, float, bool))}
    return None


def same(value: Any, default: Any) -> bool:
    """An MLflow param string equals a default (numbers compared as numbers)."""
    if default is None:
        return str(value) in ("None", "")
    if isinstance(default, bool):
        return str(value).lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(value) == float(default)
        except (TypeError, ValueError):
            return False
    return str(value) == str(default)


def settings_table(runs: pd.DataFrame, tune_runs: pd.DataFrame | None, defaults: Mapping[str, Any] | None,
                   ignore: set[str] = frozenset()) -> tuple[pd.DataFrame, dict[str, str]]:
    """See the module doc. ``runs``: the completed replicate runs of the stage (rows: one per
    run; ``arm`` and ``params.<key>``); ``tune_runs``: that stage's tune trials; ``defaults``:
    the schema defaults of the stage's trainable (None: unknown, no fixed setting shown)."""
    skip = IGNORE | set(ignore)
    shown = tuned_hyperparameters(runs, tune_runs, ignore=skip)
    searched = set()
    if tune_runs is not None and len(tune_runs) > 1:
        # tuned = varied between the tune trials of one arm (across arms, factors vary too)
        searched = {c.removeprefix("params.") for c in tune_runs.columns if c.startswith("params.")
                    and (tune_runs.groupby("arm")[c].nunique(dropna=False) > 1).any()}
    roles = {k: "tuned" if k in searched else "factor" for k in shown.columns}
    if runs.empty:
        return shown, roles
    # rows: one per arm: each param's value (constant within the arm)
    per_arm = runs.groupby("arm", sort=False).first()
    optimizers = per_arm["params.optimizer"] if "params.optimizer" in per_arm else pd.Series(dtype=object)
    torch_defaults = {arm: optimizer_defaults(o) for arm, o in optimizers.items()}
    # an optimizer argument: one that some optimizer the trainable offers takes (momentum is
    # one even in a study of Adam arms only: there it is unused, not a setting to show)
    optimizer_args = set()
    if len(optimizers):
        for name in {*_trainable_optimizers(), *optimizers}:
            optimizer_args |= set(optimizer_defaults(name) or {})
    extra: dict[str, pd.Series] = {}
    for col in per_arm.columns:
        key = col.removeprefix("params.")
        if not col.startswith("params.") or key in skip or key in shown.columns or key.startswith("meta."):
            continue
        if (runs.groupby("arm")[col].nunique(dropna=False) > 1).any():
            continue                                     # varies within an arm: not a setting
        values = per_arm[col]
        if values.isna().all():
            continue                                     # not logged by these runs
        if key in optimizer_args:
            # the optimizer's own argument: against PyTorch's default for each arm's optimizer
            cells, differs = {}, False
            for arm, value in values.items():
                d = torch_defaults.get(arm) or {}
                if key not in d:
                    cells[arm] = f"unused by {optimizers.get(arm, '?')}"
                else:
                    cells[arm] = value
                    differs |= pd.notna(value) and not same(value, d[key])
            if differs:
                extra[key] = pd.Series(cells)
                roles[key] = "fixed; differs from PyTorch's default"
        elif key in (defaults or {}) and not all(same(v, defaults[key]) for v in values.dropna()):
            extra[key] = values
            roles[key] = f"fixed; default {defaults[key]}"
    if extra:
        shown = pd.concat([shown, pd.DataFrame(extra)], axis=1) if len(shown.columns) else pd.DataFrame(extra)
        shown = shown.reindex(per_arm.index)
        shown.index.name = "arm"
    return shown, roles
