"""The upstream stage: trains what the arms build on, once per (upstream, seed), and ships it.

    stage upstream   (only where an arm uses an upstream artifact)
        phase tune       Optuna + ASHA per upstream on its stage's validation metric, tune seed
        phase replicate  the chosen configuration on every replicate seed

Every trained upstream is found again by its ``upstream_cache_key`` tag (``study.configs``),
in any experiment of the store: a rerun, or any study that needs the very same one (same
data, settings, budget, tuning and code), reuses it instead of training it again. Our
autoencoders and denoisers are upstreams of the ``autoencoder`` stage (``builtin_studies/mnist.py``);
a user's study declares its own stages the same way.
"""
from __future__ import annotations

from dataclasses import replace
import tempfile
from pathlib import Path
from typing import Any, Mapping

from search_spaces import default_point
from study import tracking
from study.declared import schema_defaults
from study.configs import artifact_ref, upstream_cache_key, upstream_config, upstream_seeds
from study.phases import PhaseContext, PhaseResult, phase_once, run_phase
from study.records import (PHASE_REPLICATE, PHASE_TUNE, STAGE_UPSTREAM, Outcome, Tag, upstream_runs, upstream_runs_tag,
                           run_filter)
from study.searchers import ListSearcher
from study.tuning import Tuning, chosen, tune_phase
from study.terminal import log
from study.upstream import Upstream, ref_label


def upstream_stage(ctx: PhaseContext) -> tuple[list[PhaseResult], dict[str, bytes]]:
    """Trains the upstreams the arms need that no earlier run trained. Returns the phases it ran
    and the files the arms load, by reference (``ArtifactRef.path``)."""
    study, budget = ctx.opts.study, ctx.opts.budget
    needed = study.upstreams()
    if not needed:
        return [], {}
    seeds = upstream_seeds(budget)
    cache_keys = {(p.key, s): upstream_cache_key(p, study, budget, ctx.loaded.data_sha256, s)
                  for p in needed for s in seeds}
    reused = _trained_runs(ctx, cache_keys)
    if reused:
        log(f"upstream: reusing {len(reused)} trained upstream artifacts")
    untrained = [p for p in needed if any((p.key, s) not in reused for s in seeds)]
    phases = _train(ctx, untrained, cache_keys) if untrained else []
    runs = _trained_runs(ctx, cache_keys)
    missing = sorted(f"{k}/seed {s}" for (k, s) in cache_keys if (k, s) not in runs)
    if missing:
        raise RuntimeError(f"pretraining produced no usable artifact for {', '.join(missing)}; "
                           "see the failed upstream runs in MLflow")
    used = {**upstream_runs(ctx.parent.tags), **runs}        # with the earlier looks' seeds
    tracking.set_parent_tags(ctx.opts.tracking_uri, ctx.parent, {Tag.UPSTREAM_RUNS: upstream_runs_tag(used)})
    return phases, _ship(ctx, runs)


def _train(ctx: PhaseContext, upstreams: list[Upstream], cache_keys) -> list[PhaseResult]:
    """Tunes ``upstreams`` on the tune seed, then trains each one's chosen configuration on the
    replicate seeds it has no artifact for."""
    opts, study, budget = ctx.opts, ctx.opts.study, ctx.opts.budget
    log(f"upstream: training {', '.join(p.key for p in upstreams)}")
    # an upstream is tuned once, on the tune seed, whatever look's seeds it is trained for
    tune_ctx = replace(ctx, look=1)
    phases = phase_once(tune_ctx, STAGE_UPSTREAM, PHASE_TUNE, lambda: _tune(tune_ctx, upstreams, cache_keys))
    picked = {key: entry["params"] for key, entry in chosen(ctx, STAGE_UPSTREAM).items()}
    failed = [p.key for p in upstreams if p.key not in picked]
    if failed:
        raise RuntimeError(f"no pretraining trial of {failed} reported {_objective(upstreams)[0]}; see the "
                           "upstream runs in MLflow (failure_reason)")
    trained = _trained_runs(ctx, cache_keys)
    configs = [{**upstream_config(p, study, budget, s, opts.data_dir), **picked[p.key], "phase": PHASE_REPLICATE,
                "tuning": p.key}
               for p in upstreams for s in upstream_seeds(budget) if (p.key, s) not in trained]
    if configs:
        metric, mode = _objective(upstreams)
        phases += phase_once(ctx, STAGE_UPSTREAM, PHASE_REPLICATE, lambda: run_phase(
            ctx, STAGE_UPSTREAM, PHASE_REPLICATE, ListSearcher(configs, metric, mode),
            None, len(configs), upstream_tags(cache_keys)))
    return phases


def _objective(upstreams: list[Upstream]) -> tuple[str, str]:
    """The stages' shared metric and mode (``Study`` refuses stages that disagree)."""
    return upstreams[0].stage.metric, upstreams[0].stage.mode


def upstream_tags(cache_keys: Mapping[tuple[str, int], str]):
    def tags_for(config: Mapping[str, Any]) -> dict[str, str]:
        tags = {Tag.ARM: str(config["arm"]), Tag.SEED: str(config["seed"]), Tag.UPSTREAM: str(config["arm"]),
                Tag.TUNING: str(config.get("tuning", config["arm"]))}
        cache_key = cache_keys.get((config["arm"], config["seed"]))
        if cache_key and config.get("phase") == PHASE_REPLICATE:
            tags[Tag.UPSTREAM_CACHE_KEY] = cache_key
        return tags
    return tags_for


def _tune(ctx: PhaseContext, upstreams: list[Upstream], cache_keys) -> PhaseResult:
    """The upstream tune phase on the tune seed: one tuning per upstream. Its trials only choose:
    no arm loads a tune seed's upstream (each arm's tuning and replicate on seed s load seed s's)."""
    opts, study, budget = ctx.opts, ctx.opts.study, ctx.opts.budget
    tunings = {}
    for p in upstreams:
        config = {**upstream_config(p, study, budget, budget.tune_seed, opts.data_dir), "phase": PHASE_TUNE,
                  "tuning": p.key}
        params = p.stage.search_space.resolve(config)
        defaults = schema_defaults(ctx.loaded.trainables[ref_label(p.stage.trainable)])
        tunings[p.key] = Tuning(config, params, default_point(params, defaults), budget.tune_seed)
    metric, mode = _objective(upstreams)
    return tune_phase(ctx, STAGE_UPSTREAM, tunings, budget.upstream_trials, metric, mode, budget.upstream_epochs,
                      budget.upstream_grace_period or budget.grace_period, upstream_tags(cache_keys), log_weights=True)


def _ship(ctx: PhaseContext, runs: Mapping[tuple[str, int], str]) -> dict[str, bytes]:
    """The files the arms use, by reference, fetched by the driver from the upstream runs: they
    reach the trials through the object store, so worker nodes need not reach the tracking
    server's artifact store or the driver's disk."""
    client = tracking.client(ctx.opts.tracking_uri)
    uses = {(u.upstream.key, u.file): u for arm in ctx.opts.study.arms() for u in arm.uses}
    shipped = {}
    with tempfile.TemporaryDirectory(prefix="study-pretrained-") as tmp:
        for (key, file), use in sorted(uses.items()):
            for seed in upstream_seeds(ctx.opts.budget):
                local = client.download_artifacts(runs[(key, seed)], file, tmp)
                shipped[artifact_ref(use, seed).path] = Path(local).read_bytes()
    return shipped


def _trained_runs(ctx: PhaseContext, cache_keys: Mapping[tuple[str, int], str]) -> dict[tuple[str, int], str]:
    """(upstream key, seed) -> the latest completed run with its cache key, in any experiment."""
    c = tracking.client(ctx.opts.tracking_uri)
    experiments = [e.experiment_id for e in c.search_experiments()]
    runs = {}
    for (key, seed), cache_key in cache_keys.items():
        latest = c.search_runs(experiments, filter_string=run_filter(
            {Tag.UPSTREAM_CACHE_KEY: cache_key, Tag.OUTCOME: Outcome.COMPLETED}),
            order_by=["attributes.start_time DESC"], max_results=1)
        if latest:
            runs[(key, seed)] = latest[0].info.run_id
    return runs
