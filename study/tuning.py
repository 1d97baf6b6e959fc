"""The tune phase of any stage: independent searches ("tunings") that share one Tune experiment.

A tuning is one seeded Optuna search over one nuisance space with its own ASHA brackets (its
trials are only ever compared with each other), asked for a fixed number of trials, the first
of which is the hand-picked first guess. The classify stage runs one tuning per (arm, seed):
each replicate seed is tuned on its own split and initialisation before its replicate, so the
spread over seeds includes how far one tuning draw moves an arm (docs/protocol.md, "Tuning
inside the replication"). An upstream stage runs one tuning per upstream, on the tune seed.
A tuning of one trial compares nothing: it trains nothing either (``untrained_choices``).

``tune_phase`` runs the searches and returns, per tuning, what it chose and how the search went
(``choose``): the record a resumed study reads back (``chosen``) and the report's diagnostics.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from search_spaces import Param
from study import tracking
from study.phases import PhaseContext, PhaseResult, phase_runs, run_phase
from study.records import PHASE_TUNE, Outcome, Tag, tuning_file
from study.searchers import TUNING_KEY, PerArmASHA, PerArmOptunaSearch, space_function
from study.terminal import log

# The outcome of a tuning of one trial, which trains nothing: its first guess was given in full,
# or the tuning's seeded sampler drew the parameters the guess leaves open.
FIRST_GUESS, FIRST_DRAW = "first guess", "first draw"


@dataclass(frozen=True)
class Tuning:
    """One search: the trial config it starts from (with its ``tuning`` label), the nuisance
    parameters it tunes, the first point it tries, and its Optuna sampler's seed."""
    config: Mapping[str, Any]
    params: tuple[Param, ...]
    first_point: Mapping[str, Any]
    seed: int


def tune_phase(ctx: PhaseContext, stage: str, tunings: Mapping[str, Tuning], trials: int, metric: str, mode: str,
               max_t: int, grace: int, tags_for: Callable, log_weights: bool = False) -> PhaseResult:
    """Runs every tuning (``trials`` each) in one Tune experiment; the result decides, per
    tuning, what it chose (the parent's ``tuning-<stage>.json``)."""
    budget = ctx.opts.budget
    earlier = _recorded(ctx, stage) if ctx.look > 1 else {}     # the tunings of the earlier looks' seeds
    searcher = PerArmOptunaSearch(
        {label: dict(t.config) for label, t in tunings.items()}, lambda label: space_function(tunings[label].params),
        trials, metric, mode, seeds={label: t.seed for label, t in tunings.items()},
        startup_trials=budget.startup_trials, first_points={label: dict(t.first_point) for label, t in tunings.items()})
    if trials == 1:
        # one trial per tuning: nothing to compare, so its choice is the point it would train (the
        # first guess, any parameter the guess leaves open drawn by the tuning's seeded sampler,
        # exactly as that trial would have drawn it), and no trial trains twice
        log(f"{stage}/{PHASE_TUNE}: no search: one trial per tuning, so each of the {len(tunings)} tunings "
            "chooses its first point without training it")
        result = PhaseResult(f"{stage}/{PHASE_TUNE}", 0, {}, [])
        result.decided_files = {tuning_file(stage): {**earlier, **untrained_choices(searcher, tunings)}}
        return result
    scheduler = PerArmASHA(metric, mode, max_t, min(grace, max_t), budget.reduction_factor)
    result = run_phase(ctx, stage, PHASE_TUNE, searcher, scheduler, trials * len(tunings), tags_for,
                       log_weights=log_weights)
    history = _history(ctx, metric)
    result.decided_files = {tuning_file(stage): {**earlier, **choose(phase_runs(ctx, stage, PHASE_TUNE), tunings,
                                                                       metric, mode, history)}}
    return result


def _history(ctx: PhaseContext, metric: str) -> Callable[[str], dict[int, float]]:
    """run id -> {epoch: the metric}, from MLflow (the per-epoch values the trial reported)."""
    client = tracking.client(ctx.opts.tracking_uri)
    return lambda run_id: {int(m.step): m.value for m in client.get_metric_history(run_id, metric)}


def choose(runs, tunings: Mapping[str, Tuning], metric: str, mode: str,
           history: Callable[[str], dict[int, float]] | None = None) -> dict[str, dict]:
    """Per tuning that produced the metric: the tuned parameters of its best trial on the
    validation metric, that run, and how the search went (``history``: a run's metric per
    epoch, for the winner's lead; without it, no lead).

    Trials that ran to full length are preferred over ASHA-stopped ones (an early value is not
    comparable to a final one); failed trials never win."""
    sign = 1.0 if mode == "max" else -1.0
    by_tuning: dict[str, list] = {}
    for run in runs:
        by_tuning.setdefault(run.data.tags.get(Tag.TUNING) or run.data.tags.get(Tag.ARM), []).append(run)
    chosen = {}
    for label, tuning in tunings.items():
        scored = [r for r in by_tuning.get(label, [])
                  if r.data.tags.get(Tag.OUTCOME) in (Outcome.COMPLETED, Outcome.PRUNED) and metric in r.data.metrics]
        if not scored:
            continue
        ranked = sorted(scored, key=lambda r: (r.data.tags[Tag.OUTCOME] == Outcome.COMPLETED,
                                               sign * r.data.metrics[metric]), reverse=True)
        chosen[label] = _entry(ranked, by_tuning[label], tuning, metric, sign, history)
    return chosen


def _entry(ranked: list, runs: list, tuning: Tuning, metric: str, sign: float,
           history: Callable[[str], dict[int, float]] | None) -> dict[str, Any]:
    """What a tuning chose, and its diagnostics (the report's "tuning" table)."""
    best = ranked[0]
    params = {p.name: _parse(best.data.params[p.name]) for p in tuning.params if p.name in best.data.params}
    full = [r for r in ranked if r.data.tags[Tag.OUTCOME] == Outcome.COMPLETED]
    lead, lead_epoch = _lead(best, ranked[1] if len(ranked) > 1 else None, metric, sign, history)
    examples = best.data.metrics.get("val/examples")
    return {"arm": tuning.config.get("arm"), "seed": tuning.config.get("seed"), "params": params,
            "tune_run_id": best.info.run_id, "val_metric": best.data.metrics[metric],
            "outcome": best.data.tags[Tag.OUTCOME], "epochs": best.data.metrics.get("epoch"),
            "trials": len(runs), "full_length": len(full),
            "failed": sum(r.data.tags.get(Tag.OUTCOME) == Outcome.FAILED for r in runs),
            "first_guess_won": bool(tuning.first_point) and all(
                params.get(k) == v for k, v in tuning.first_point.items()),
            "lead": lead, "lead_epoch": lead_epoch,
            "lead_examples": round(lead * examples) if lead is not None and examples else None}


def untrained_choices(searcher: PerArmOptunaSearch, tunings: Mapping[str, Tuning]) -> dict[str, dict]:
    """Per tuning, the record of a search of one trial that did not train: the point its sampler
    gives first (the first guess in full, else completed by the seeded draw)."""
    asked = [searcher.suggest(f"first-point-{i}") for i in range(len(tunings))]
    records = {}
    for suggestion in asked:
        tuning = tunings[suggestion[TUNING_KEY]]
        params = {p.name: suggestion[p.name] for p in tuning.params if p.name in suggestion}
        guessed = set(tuning.first_point) == set(params)
        records[suggestion[TUNING_KEY]] = {
            "arm": tuning.config.get("arm"), "seed": tuning.config.get("seed"), "params": params,
            "tune_run_id": None, "val_metric": None, "outcome": FIRST_GUESS if guessed else FIRST_DRAW,
            "epochs": None, "trials": 0, "full_length": 0, "failed": 0, "first_guess_won": guessed or None,
            "lead": None, "lead_epoch": None, "lead_examples": None}
    return records


def _lead(best, runner_up, metric: str, sign: float, history) -> tuple[float | None, int | None]:
    """The winner's validation lead over the runner-up where both were measured last (the rung at
    which ASHA stopped the runner-up, or the end when both ran it): what the choice rested on."""
    if runner_up is None or history is None:
        return None, None
    mine, theirs = history(best.info.run_id), history(runner_up.info.run_id)
    shared = sorted(set(mine) & set(theirs))
    if not shared:
        return None, None
    epoch = shared[-1]
    return sign * (mine[epoch] - theirs[epoch]), epoch


def chosen(ctx: PhaseContext, stage: str) -> dict[str, dict]:
    """Per tuning, what the stage's tune phase chose (read back from the parent run)."""
    with tempfile.TemporaryDirectory(prefix="study-tuning-") as tmp:
        path = tracking.client(ctx.opts.tracking_uri).download_artifacts(ctx.parent.run_id, tuning_file(stage), tmp)
        return json.loads(Path(path).read_text())


def _recorded(ctx: PhaseContext, stage: str) -> dict[str, dict]:
    """``chosen``, or {} before the stage's first tune phase wrote its record."""
    names = {f.path for f in tracking.client(ctx.opts.tracking_uri).list_artifacts(ctx.parent.run_id)}
    return chosen(ctx, stage) if tuning_file(stage) in names else {}


def _parse(text: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text
