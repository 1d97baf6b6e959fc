"""The config of every trial a study runs, and the identity of a trained upstream artifact.

A trial config is the trainable's own keys (fixed, level and tuned settings) plus the runner's:
``seed``, ``epochs``, ``dataset``, ``data_dir`` (only with --data-dir), ``evaluate_test``
(arms: true in the replicate phase) or ``patience`` (upstream stages: early stopping), plus the
protocol keys the trial wrapper strips (``study.trial.META_KEYS``, artifact references).
No Ray import here: ``--check`` and ``--dry-run`` build configs too.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path

from study.records import PHASE_REPLICATE, STAGE_CLASSIFY, STAGE_UPSTREAM, ArtifactRef
from study.spec import Arm, Budget, Study
from study.trial import META_KEYS
from study.upstream import Upstream, Use, ref_label

# Keys that change where or how fast an upstream trains, not what it learns (the data is
# identified by its checksum): left out of its cache key.
RUN_ONLY_KEYS = ("dataset", "data_dir", "channels_last", "device")


def upstream_seeds(budget: Budget) -> list[int]:
    """The seeds an upstream is trained on: every replicate seed (an arm's tuning and replicate on
    seed s load seed s's upstream; the upstream's own tuning, on the tune seed, only chooses)."""
    return sorted(budget.seeds)


def artifact_ref(use: Use, seed: int) -> ArtifactRef:
    """The upstream file a trial of ``seed`` loads for ``use`` (its ``path`` is the config value)."""
    return ArtifactRef(use.upstream.key, seed, use.file)


def classify_config(arm: Arm, study: Study, budget: Budget, seed: int, phase: str, data_dir: str | None) -> dict:
    config = {**arm.settings, "dataset": budget.dataset, "epochs": budget.epochs, "seed": seed,
              "evaluate_test": phase == PHASE_REPLICATE,
              "trainable": ref_label(study.trainable), "stage": STAGE_CLASSIFY, "phase": phase, "arm": arm.name}
    if data_dir:
        config["data_dir"] = data_dir
    for use in arm.uses:
        config[use.slot] = artifact_ref(use, seed).path
    return config


def upstream_config(upstream: Upstream, study: Study, budget: Budget, seed: int, data_dir: str | None) -> dict:
    stage = upstream.stage
    inherited = {k: study.fixed.get(k, default) for k, default in stage.inherit.items()}
    config = {**stage.fixed, **inherited, **upstream.settings, "dataset": budget.dataset,
              "epochs": budget.upstream_epochs, "patience": budget.upstream_patience, "seed": seed,
              "trainable": ref_label(stage.trainable), "stage": STAGE_UPSTREAM, "arm": upstream.key}
    if data_dir:
        config["data_dir"] = data_dir
    return config


def upstream_cache_key(upstream: Upstream, study: Study, budget: Budget, data_sha256: str, seed: int) -> str:
    """Identity of a trained upstream artifact: everything that changes its weights or the data
    it saw (data, split, settings, budget, tuning, the trainable's code), so a study reuses it
    only where it would have trained the very same one."""
    from study.tracking import config_hash

    config = upstream_config(upstream, study, budget, seed, None)
    space = upstream.stage.search_space
    return config_hash({
        "upstream": upstream.key, "data": data_sha256,
        "config": {k: v for k, v in config.items() if k not in META_KEYS + RUN_ONLY_KEYS},
        "trials": budget.upstream_trials, "startup": budget.startup_trials, "space": space.name,
        "params": [q.describe() for q in space.params],
        "grace": budget.upstream_grace_period or budget.grace_period, "rf": budget.reduction_factor,
        "code": code_version(upstream)})


def code_version(upstream: Upstream) -> str:
    """The stage's ``code_version`` function's digest, else a digest of its trainable's file."""
    stage = upstream.stage
    if stage.code_version:
        module, _, name = stage.code_version.partition(":")
        return str(getattr(importlib.import_module(module), name)())
    trainable = resolve_ref(stage.trainable)
    return hashlib.sha256(Path(inspect.getsourcefile(trainable)).read_bytes()).hexdigest()[:16]


def resolve_ref(ref):
    """The function a reference names ("package.module:function", or the function). Raises
    ImportError / AttributeError; ``study.check`` turns them into errors naming the field."""
    if callable(ref):
        return ref
    module, _, name = str(ref).partition(":")
    if not module or not name:
        raise ImportError(f"{ref!r} is not 'package.module:function'")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target
