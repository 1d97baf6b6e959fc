"""Interrupting a study (Ctrl-C, SIGTERM, or SIGKILL of the driver) and resuming it with
``--resume`` ends with exactly the records of an uninterrupted run: one MLflow run per trial,
none left RUNNING, one metric value per epoch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from study import tracking
from study.registry import STUDIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = "ablation_dropout"


def _start(results, uri, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "study.run", STUDY, "--budget", "smoke", "--quiet",
                             "--results-dir", str(results), "--tracking-uri", uri, *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _trial_runs(uri):
    c = tracking.client(uri)
    experiment = c.get_experiment_by_name(STUDY)
    if experiment is None:
        return []
    return [r for r in c.search_runs([experiment.experiment_id], max_results=10000)
            if r.data.tags.get("run_kind") == "trial"]


def _wait_for_trials(proc, results, uri, n, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("study ended before it could be interrupted:\n" + proc.stdout.read())
        if not (results / "tune").exists():      # the driver has not finished creating the store
            time.sleep(0.5)
            continue
        try:
            done = [r for r in _trial_runs(uri) if r.data.tags.get("outcome") in ("completed", "pruned")]
            started = [r for r in _trial_runs(uri) if r.data.tags.get("outcome") == "running"]
        except Exception:        # the store is being created
            done, started = [], []
        if len(done) >= n and started:
            return
        time.sleep(0.5)
    pytest.fail(f"fewer than {n} trials finished in {timeout} s")


def _check_complete(uri):
    study = STUDIES[STUDY]
    budget = study.budgets["smoke"]
    runs = _trial_runs(uri)
    assert max(Counter(r.data.tags["trial_key"] for r in runs).values()) == 1, "duplicate run for a trial"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.data.tags["outcome"] for r in runs} <= {"completed", "pruned"}
    arms = study.arms()
    tune = [r for r in runs if r.data.tags["phase"] == "tune"]
    replicate = [r for r in runs if r.data.tags["phase"] == "replicate"]
    assert len(tune) == len(arms) * budget.trials_per_arm
    assert len(replicate) == len(arms) * len(budget.seeds)
    c = tracking.client(uri)
    for run in runs:
        steps = [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)), f"repeated epochs logged twice in {run.info.run_id}: {steps}"
        if run.data.tags["outcome"] == "completed":
            assert steps == list(range(1, budget.epochs + 1))
    parents = [r for r in c.search_runs([runs[0].info.experiment_id], "tags.run_kind = 'study'")]
    assert len(parents) == 1 and parents[0].data.tags["study_status"] == "finished"
    assert parents[0].info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_interrupted_study_resumes(tmp_path, how):
    results = tmp_path / "results"
    uri = f"sqlite:///{results / 'mlflow.db'}"
    proc = _start(results, uri)
    try:
        _wait_for_trials(proc, results, uri, n=2)
        if how == "sigint":
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 130, out
            assert "--resume" in out
            # Interrupted: nothing left RUNNING; the parent says so.
            assert not [r for r in _trial_runs(uri) if r.info.status == "RUNNING"]
        else:
            os.killpg(proc.pid, signal.SIGKILL)     # driver and the local Ray it started
            proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    # Without --resume the runner refuses to start over silently.
    again = _start(results, uri)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in out, out

    resumed = _start(results, uri, "--resume")
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    _check_complete(uri)
