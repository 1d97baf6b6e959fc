"""The upstream stage: trains what the arms build on, once per (upstream, seed), and ships it.

    stage pretrain   (only where an arm uses an upstream artifact)
        phase tune       Optuna + ASHA per upstream on its stage's validation metric, tune seed
        phase replicate  the chosen configuration on every replicate seed

Every trained upstream is found again by its ``pretrain_cache_key`` tag (``study.configs``),
in any experiment of the store: a rerun, or any study that needs the very same one (same
data, settings, budget, tuning and code), reuses it instead of training it again. Our
autoencoders and denoisers are upstreams of the ``autoencoder`` stage (``studies/mnist.py``);
a user's study declares its own stages the same way.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping

from search_spaces import default_point
from study import tracking
from study.check import schema_defaults
from study.configs import (PHASE_REPLICATE, PHASE_TUNE, STAGE_PRETRAIN, artifact_ref, pretrain_cache_key,
                           pretrain_config, pretrain_seeds)
from study.protocol import PhaseContext, PhaseResult, best_configs, chosen_configs, log, phase_once, run_phase
from study.searchers import ListSearcher, PerArmASHA, PerArmOptunaSearch, space_function
from study.upstream import Upstream, ref_label


def pretrain_stage(ctx: PhaseContext) -> list[PhaseResult]:
    """Trains the upstreams the arms need that no earlier run trained, then ships the files the
    arms use to the trials. Returns the phases it ran."""
    opts, study, budget = ctx.opts, ctx.opts.study, ctx.opts.budget
    needed = study.pretrainings()
    if not needed:
        return []
    seeds = pretrain_seeds(budget)
    cache_keys = {(p.key, s): pretrain_cache_key(p, study, budget, ctx.loaded.data_sha256, s)
                  for p in needed for s in seeds}
    trained = _find_trained(ctx, cache_keys)
    missing = [p for p in needed if any((p.key, s) not in trained for s in seeds)]
    results: list[PhaseResult] = []
    if trained:
        log(f"pretrain: reusing {len(trained)} trained upstream artifacts")
    if missing:
        log(f"pretrain: training {', '.join(p.key for p in missing)}")
        results += phase_once(ctx, STAGE_PRETRAIN, PHASE_TUNE, lambda: _tune(ctx, missing, cache_keys))
        chosen = chosen_configs(ctx, STAGE_PRETRAIN)
        failed = [p.key for p in missing if p.key not in chosen]
        if failed:
            raise RuntimeError(f"no pretraining trial of {failed} reported {_objective(missing)[0]}; see the "
                               "pretrain runs in MLflow (failure_reason)")
        trained = _find_trained(ctx, cache_keys)   # now with the tune seed's artifacts
        configs = [{**pretrain_config(p, study, budget, s, opts.data_dir), **chosen[p.key], "phase": PHASE_REPLICATE}
                   for p in missing for s in seeds if (p.key, s) not in trained]
        if configs:
            metric, mode = _objective(missing)
            results += phase_once(ctx, STAGE_PRETRAIN, PHASE_REPLICATE, lambda: (run_phase(
                ctx, STAGE_PRETRAIN, PHASE_REPLICATE, ListSearcher(configs, metric, mode),
                None, len(configs), pretrain_tags(cache_keys)), {}))
            trained = _find_trained(ctx, cache_keys)
    untrained = sorted(f"{k}/seed {s}" for (k, s) in cache_keys if (k, s) not in trained)
    if untrained:
        raise RuntimeError(f"pretraining produced no usable artifact for {', '.join(untrained)}; "
                           "see the failed pretrain runs in MLflow")
    _ship(ctx, trained)
    return results


def _objective(upstreams: list[Upstream]) -> tuple[str, str]:
    """The stages' shared metric and mode (``Study`` refuses stages that disagree)."""
    return upstreams[0].stage.metric, upstreams[0].stage.mode


def pretrain_tags(cache_keys: Mapping[tuple[str, int], str]):
    def tags_for(config: Mapping[str, Any]) -> dict[str, str]:
        tags = {"arm": str(config["arm"]), "seed": str(config["seed"]), "pretraining": str(config["arm"])}
        key = cache_keys.get((config["arm"], config["seed"]))
        if key and config.get("phase") == PHASE_REPLICATE:
            tags["pretrain_cache_key"] = key
        return tags
    return tags_for


def _tune(ctx: PhaseContext, missing: list[Upstream], cache_keys) -> tuple[PhaseResult, dict]:
    """The pretrain tune phase on the tune seed; the best full-length trial of each upstream
    IS its tune seed's artifact (same config, seed and epochs), so it is registered as such
    instead of being trained again."""
    opts, study, budget = ctx.opts, ctx.opts.study, ctx.opts.budget
    configs = {p.key: {**pretrain_config(p, study, budget, budget.tune_seed, opts.data_dir), "phase": PHASE_TUNE}
               for p in missing}
    params = {p.key: p.stage.search_space.resolve(configs[p.key]) for p in missing}
    defaults = {p.key: schema_defaults(ctx.loaded.trainables[ref_label(p.stage.trainable)]) for p in missing}
    metric, mode = _objective(missing)
    searcher = PerArmOptunaSearch(
        configs, lambda key: space_function(params[key]), budget.pretrain_trials, metric, mode,
        seed=budget.tune_seed, startup_trials=budget.startup_trials,
        first_points={k: default_point(params[k], defaults[k]) for k in configs})
    scheduler = PerArmASHA(metric, mode, budget.pretrain_epochs,
                           min(budget.grace_period, budget.pretrain_epochs), budget.reduction_factor)
    result = run_phase(ctx, STAGE_PRETRAIN, PHASE_TUNE, searcher, scheduler,
                       budget.pretrain_trials * len(configs), pretrain_tags(cache_keys))
    best = best_configs(ctx, STAGE_PRETRAIN, metric, mode, {k: [q.name for q in v] for k, v in params.items()})
    c = tracking.client(opts.tracking_uri)
    for key, chosen in best.items():
        if chosen["outcome"] == "completed":
            c.set_tag(chosen["tune_run_id"], "pretrain_cache_key", cache_keys[(key, budget.tune_seed)])
    return result, {"best_configs.pretrain": json.dumps(best)}


def _ship(ctx: PhaseContext, trained: Mapping[tuple[str, int], str]) -> None:
    """The driver ships the files the arms use to the trials through the object store: worker
    nodes need not reach the tracking server's artifact store or the driver's disk."""
    client = tracking.client(ctx.opts.tracking_uri)
    uses = {(u.upstream.key, u.file): u for arm in ctx.opts.study.arms() for u in arm.uses}
    with tempfile.TemporaryDirectory(prefix="study-pretrained-") as tmp:
        for (key, file), use in sorted(uses.items()):
            for seed in pretrain_seeds(ctx.opts.budget):
                local = client.download_artifacts(trained[(key, seed)], file, tmp)
                ctx.artifacts[artifact_ref(use, seed)] = Path(local).read_bytes()
    tracking.set_parent_tags(ctx.opts.tracking_uri, ctx.parent,
                             {"pretrained_runs": json.dumps({f"{k}/{s}": r for (k, s), r in sorted(trained.items())})})


def _find_trained(ctx: PhaseContext, cache_keys: Mapping[tuple[str, int], str]) -> dict[tuple[str, int], str]:
    """Completed pretraining runs with a matching cache key, in any experiment of the store."""
    c = tracking.client(ctx.opts.tracking_uri)
    experiments = [e.experiment_id for e in c.search_experiments()]
    found = {}
    for (key, seed), cache_key in cache_keys.items():
        runs = c.search_runs(experiments, filter_string=(
            f"tags.pretrain_cache_key = '{cache_key}' and tags.outcome = 'completed'"),
            order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            found[(key, seed)] = runs[0].info.run_id
    return found
