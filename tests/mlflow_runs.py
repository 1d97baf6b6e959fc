"""A study's MLflow runs, found by their tags: the one lookup the tests that read a study's
record (smoke studies, resume, scale-out, user studies) share."""
from __future__ import annotations

from study import tracking


def study_runs(uri: str, study: str) -> list:
    """Every run of the study's experiment (parent and trials); none before it exists."""
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=10000)


def trial_runs(uri: str, study: str) -> list:
    """The study's trial runs (``run_kind = trial``): one per Tune trial."""
    return [r for r in study_runs(uri, study) if r.data.tags.get("run_kind") == "trial"]


def parent_runs(uri: str, study: str) -> list:
    """The study's parent runs (``run_kind = study``): one per run of the study."""
    return [r for r in study_runs(uri, study) if r.data.tags.get("run_kind") == "study"]


def tune_trials_per_tuning(budget) -> int:
    """Tune trials each (arm, seed) runs: none at one trial per tuning (study.tuning: nothing to
    compare, so no search and no tune phase)."""
    return 0 if budget.trials_per_tuning == 1 else budget.trials_per_tuning
