"""Ray Tune search algorithms and schedulers for running many tunings in one Tuner.

Every tuning (an arm on one seed, or an upstream) gets its own Optuna study and its own ASHA
brackets (tunings never compete with each other for survival), but all share one Tuner: one experiment to checkpoint and
resume, reused trial actors, and the cluster kept busy across arm boundaries. One Tuner per
arm would cost a few seconds of actor start-up per arm and leave cores idle at every tail.
"""
from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, List, Mapping, Optional

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

TUNING_KEY = "tuning"    # every tune trial's config names its search under this key


class PickleStateMixin:
    """Searchers and schedulers must save/restore for ``Tuner.restore`` to continue a search."""

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class PerArmOptunaSearch(PickleStateMixin, Searcher):
    """One seeded OptunaSearch per tuning (an arm and seed, or an upstream), each asked for
    exactly ``trials`` trials.

    Tunings are served round-robin, so with limited concurrency every one makes progress and an
    interrupted study has spread its work evenly. Each suggestion is the tuning's fixed config
    (constants) merged with Optuna's define-by-run choices for its nuisance space.
    """

    def __init__(self, tunings: Mapping[str, dict], space_for: Callable[[str], Callable],
                 trials: int, metric: str, mode: str, seeds: Mapping[str, int],
                 first_points: Optional[Mapping[str, dict]] = None, startup_trials: int = 10):
        super().__init__(metric=metric, mode=mode)
        self._fixed = {name: dict(cfg) for name, cfg in tunings.items()}
        self._order = list(tunings)
        self._remaining = {name: trials for name in tunings}
        self._searchers: Dict[str, OptunaSearch] = {}
        for name in self._order:
            points = [first_points[name]] if first_points and first_points.get(name) else None
            # Seeded per tuning, reproducibly (the classify stage seeds each from its replicate
            # seed: every arm of a seed draws alike where their spaces agree, which pairs them).
            # TPE samples at random for its first `startup_trials` trials, then models.
            sampler = optuna.samplers.TPESampler(seed=seeds[name], n_startup_trials=startup_trials)
            self._searchers[name] = OptunaSearch(
                space=space_for(name), metric=metric, mode=mode, sampler=sampler,
                points_to_evaluate=points)
        self._trial_arm: Dict[str, str] = {}
        self._next = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True       # metric and mode are fixed at construction (per the study spec)

    def suggest(self, trial_id: str) -> Optional[Dict]:
        if not any(self._remaining.values()):
            return Searcher.FINISHED
        for _ in range(len(self._order)):
            name = self._order[self._next % len(self._order)]
            self._next += 1
            if self._remaining[name] <= 0:
                continue
            suggestion = self._searchers[name].suggest(trial_id)
            if suggestion is None or suggestion == Searcher.FINISHED:
                continue
            self._remaining[name] -= 1
            self._trial_arm[trial_id] = name
            return {**self._fixed[name], **suggestion, TUNING_KEY: name}
        return None

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        # A diverged trial's last report has no metric (see study.trial): Optuna gets nothing.
        if trial_id in self._trial_arm and self._metric in result:
            self._searchers[self._trial_arm[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False):
        arm = self._trial_arm.pop(trial_id, None)
        if arm is not None:
            self._searchers[arm].on_trial_complete(trial_id, result=result, error=error)


class ListSearcher(PickleStateMixin, Searcher):
    """Runs a fixed list of complete configs once each, in order (the replicate phase)."""

    def __init__(self, configs: List[dict], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self._configs = [dict(c) for c in configs]
        self._next = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> Optional[Dict]:
        if self._next >= len(self._configs):
            return Searcher.FINISHED
        self._next += 1
        return dict(self._configs[self._next - 1])

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False):
        pass


class PerArmASHA(PickleStateMixin, FIFOScheduler):
    """ASHA early stopping with separate brackets per tuning: a trial is only ever compared with
    trials of its own search (its arm and seed), so a slow-starting arm (a frozen encoder, 10% of
    the labels) is not pruned for being unlike the others."""

    def __init__(self, metric: str, mode: str, max_t: int, grace_period: int, reduction_factor: int):
        super().__init__()
        self._metric, self._mode = metric, mode
        self._kwargs = dict(metric=metric, mode=mode, max_t=max_t, grace_period=grace_period,
                            reduction_factor=reduction_factor, time_attr="training_iteration")
        self._per_arm: Dict[str, ASHAScheduler] = {}
        self.stopped_trials: set[str] = set()

    def _for(self, trial) -> ASHAScheduler:
        arm = trial.config.get(TUNING_KEY, "")
        if arm not in self._per_arm:
            self._per_arm[arm] = ASHAScheduler(**self._kwargs)
        return self._per_arm[arm]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial):
        self._for(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: Dict) -> str:
        decision = self._for(trial).on_trial_result(tune_controller, trial, result)
        # Stopping at max_t is the end of the budget, not early stopping.
        if decision == TrialScheduler.STOP and not result.get("final"):
            self.stopped_trials.add(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller, trial, result: Dict):
        self._for(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        scheduler = self._for(trial)
        if trial.trial_id in scheduler._trial_info:
            scheduler.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"Per-tuning ASHA: {len(self.stopped_trials)} trials stopped early across {len(self._per_arm)} tunings"


def space_function(params) -> Callable:
    """A picklable define-by-run function for OptunaSearch over ``params``."""
    from search_spaces import suggest
    return _DefineByRun(tuple(params), suggest)


class _DefineByRun:
    def __init__(self, params, suggest_fn):
        self.params, self.suggest_fn = params, suggest_fn

    def __call__(self, trial) -> Optional[Dict[str, Any]]:
        self.suggest_fn(trial, self.params)
        return None
