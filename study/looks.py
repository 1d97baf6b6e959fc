"""Sequential seeds (``--until-decided``): after the budget's seeds the runner looks at the
planned contrasts, and while one is undecided and the cap is not reached it adds a batch of
new paired seeds to every arm (each with its own tuning, as every seed has) and looks again.

The error control across looks is ``study.sequential`` (group-sequential boundaries with Holm
per family, docs/protocol.md "Sequential seeds"). A look's statistic is each planned contrast's
paired estimate over the seeds so far, seed by seed (``sequential.look_statistic`` on the
per-seed contrast of the replicates' metric). Every look's analysis is the parent run's
``sequential.json``; ``--resume`` of a stopped sequential study continues at its last look, and
the phases of a look that finished are not run again (their done tags carry the look).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from study import sequential, tracking
from study.phases import PhaseContext, PhaseResult
from study.records import PHASE_REPLICATE, SEQUENTIAL_FILE, STAGE_CLASSIFY, Outcome, Tag, run_filter
from study.spec import Budget, Study
from study.spending import planned_looks
from study.terminal import log


def seeds_for(budget: Budget, n: int) -> tuple[int, ...]:
    """The first ``n`` seeds of a sequential study: the budget's, then the next whole numbers
    after its largest (never the tune seed)."""
    seeds = list(budget.seeds)
    candidate = max(seeds) + 1
    while len(seeds) < n:
        if candidate != budget.tune_seed and candidate not in seeds:
            seeds.append(candidate)
        candidate += 1
    return tuple(seeds[:n])


def design(budget: Budget) -> list[int]:
    """The seeds at each planned look."""
    return planned_looks(len(budget.seeds), budget.seed_batch, budget.max_seeds)


def run_looks(ctx: PhaseContext, train_seeds: Callable[[PhaseContext], list[PhaseResult]]) -> list[PhaseResult]:
    """Looks until every planned contrast is decided or the cap is reached; ``train_seeds(ctx)``
    runs the stages for the seeds of ``ctx.opts.budget`` (the new batch) in look ``ctx.look``.
    The budget's own seeds, look 1, are trained before this is called."""
    study, budget = ctx.opts.study, ctx.opts.budget
    looks = _recorded(ctx)
    phases: list[PhaseResult] = []
    planned = design(budget)
    for k, n in enumerate(planned, start=1):
        if k > 1:
            new = seeds_for(budget, n)[planned[k - 2]:]
            log(f"look {k}: {len(new)} more seeds ({', '.join(map(str, new))}) for every arm, {n} in all")
            phases += train_seeds(replace(ctx, opts=replace(ctx.opts, budget=replace(budget, seeds=new)), look=k))
        if k > len(looks):
            stats = look_statistics(ctx, study, seeds_for(budget, n))
            decision = sequential.decide([*[look["statistics"] for look in looks], stats], margins(study),
                                         max_seeds=budget.max_seeds, seed_batch=budget.seed_batch,
                                         start_seeds=len(budget.seeds))
            looks.append({"look": k, "seeds": list(seeds_for(budget, n)), "statistics": stats, "decision": decision})
            _record(ctx, looks)
            _say(looks[-1])
        if looks[k - 1]["decision"]["stop"]:
            break
    return phases


def margins(study: Study) -> dict[str, float]:
    """Each planned contrast's smallest effect of interest, on its own metric."""
    return {c.name: study.contrast_metric(c).margin for c in study.contrasts}


def look_statistics(ctx: PhaseContext, study: Study, seeds: tuple[int, ...]) -> dict[str, dict]:
    """Per planned contrast, its statistic over ``seeds``: the completed replicates' metric,
    weighted per seed, seeds without every arm of the contrast left out."""
    scores = _scores(ctx)
    out = {}
    for contrast in study.contrasts:
        metric = study.contrast_metric(contrast).name
        weights = study.contrast_weights(contrast)
        per_seed = [sum(w * scores.get((arm, seed, metric), np.nan) for arm, w in weights.items()) for seed in seeds]
        out[contrast.name] = sequential.look_statistic(np.asarray(per_seed, dtype=float))
    return out


def _scores(ctx: PhaseContext) -> dict[tuple[str, int, str], float]:
    """(arm, seed, metric) -> the value of the study run's completed replicates, every look."""
    runs = tracking.client(ctx.opts.tracking_uri).search_runs([ctx.experiment_id], filter_string=run_filter(
        {Tag.PARENT: ctx.parent.run_id, Tag.STAGE: STAGE_CLASSIFY, Tag.PHASE: PHASE_REPLICATE,
         Tag.OUTCOME: Outcome.COMPLETED}), max_results=50000)
    return {(r.data.tags[Tag.ARM], int(r.data.tags[Tag.SEED]), metric): value
            for r in runs for metric, value in r.data.metrics.items()}


def _recorded(ctx: PhaseContext) -> list[dict[str, Any]]:
    """The looks a stopped run of this study analysed already ([] for a new one)."""
    c = tracking.client(ctx.opts.tracking_uri)
    if SEQUENTIAL_FILE not in {f.path for f in c.list_artifacts(ctx.parent.run_id)}:
        return []
    with tempfile.TemporaryDirectory(prefix="study-looks-") as tmp:
        return json.loads(Path(c.download_artifacts(ctx.parent.run_id, SEQUENTIAL_FILE, tmp)).read_text())["looks"]


def _record(ctx: PhaseContext, looks: list[dict[str, Any]]) -> None:
    """Every look so far on the parent run: ``sequential.json`` and the ``sequential_look`` tag."""
    tracking.log_parent_json(ctx.opts.tracking_uri, ctx.parent, SEQUENTIAL_FILE,
                             {"design": looks[-1]["decision"]["design"], "looks": looks})
    tracking.set_parent_tags(ctx.opts.tracking_uri, ctx.parent, {Tag.SEQUENTIAL_LOOK: str(len(looks)),
                                                                 Tag.SEEDS: json.dumps(looks[-1]["seeds"])})


def _say(look: dict[str, Any]) -> None:
    decision = look["decision"]
    counts: dict[str, int] = {}
    for contrast in decision["contrasts"].values():
        counts[contrast["decision"]] = counts.get(contrast["decision"], 0) + 1
    what = ", ".join(f"{n} {d}" for d, n in sorted(counts.items()))
    after = "stop" if decision["stop"] else f"next look at {decision['next_n']} seeds"
    log(f"look {look['look']} at {len(look['seeds'])} seeds: {what}; {after}")
