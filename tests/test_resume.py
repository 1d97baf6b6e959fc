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
from dataclasses import replace

import pytest

from mlflow_runs import trial_runs, tune_trials_per_tuning
from study import tracking
from study.registry import STUDIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = "ablation_dropout"


# Fewer trials than the smoke budget: the resume machinery, not the study, is under test.
SMALL = ("--trials-per-tuning", "1", "--seeds", "0")


def _start(results, uri, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "study.run", STUDY, "--budget", "smoke", "--quiet",
                             "--results-dir", str(results), "--tracking-uri", uri, *SMALL, *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _trial_runs(uri):
    return trial_runs(uri, STUDY)


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


def _check_complete(uri, trials_per_tuning=1, seeds=(0,), epochs=None):
    study = STUDIES[STUDY]
    budget = replace(study.budgets["smoke"], trials_per_tuning=trials_per_tuning, seeds=seeds)
    budget = replace(budget, epochs=epochs or budget.epochs)
    runs = _trial_runs(uri)
    assert max(Counter(r.data.tags["trial_key"] for r in runs).values()) == 1, "duplicate run for a trial"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.data.tags["outcome"] for r in runs} <= {"completed", "pruned"}
    arms = study.arms()
    tune = [r for r in runs if r.data.tags["phase"] == "tune"]
    replicate = [r for r in runs if r.data.tags["phase"] == "replicate"]
    assert len(tune) == len(arms) * len(budget.seeds) * tune_trials_per_tuning(budget)
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


def _kill_a_running_trial_worker(proc, results, uri, epochs, timeout=240):
    """SIGKILLs the worker process of a trial caught between its first and last epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        # Read the store only once the driver has created it (tune/ comes after): two
        # processes creating a fresh MLflow database at once race on its schema migration.
        for run in _trial_runs(uri) if (results / "tune").exists() else []:
            epoch = run.data.metrics.get("epoch", 0)
            if run.data.tags.get("outcome") == "running" and run.data.tags.get("worker_pid") and 1 <= epoch <= epochs - 2:
                os.kill(int(run.data.tags["worker_pid"]), signal.SIGKILL)
                return run
        time.sleep(0.3)
    pytest.fail("no trial was caught mid-run:\n" + (proc.stdout.read() if proc.poll() is not None else ""))


@pytest.mark.slow
def test_killed_trial_worker_and_killed_driver_then_resume(tmp_path):
    """SIGKILL a trial's worker mid-epoch (Tune retries it from its checkpoint), then SIGKILL
    the driver and the local Ray it started; `--resume` completes the study."""
    results = tmp_path / "results"
    uri = f"sqlite:///{results / 'mlflow.db'}"
    epochs = 4
    proc = _start(results, uri, "--epochs", str(epochs))
    try:
        victim = _kill_a_running_trial_worker(proc, results, uri, epochs)
        _wait_for_trials(proc, results, uri, n=2)
        os.killpg(proc.pid, signal.SIGKILL)     # driver and the local Ray it started
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    # Without --resume the runner refuses to start over silently.
    again = _start(results, uri, "--epochs", str(epochs))
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in out, out
    assert "checked:" not in out, "refused only after starting Ray and the dry trial"

    resumed = _start(results, uri, "--epochs", str(epochs), "--resume")
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    _check_complete(uri, epochs=epochs)

    same = [r for r in _trial_runs(uri) if r.data.tags["trial_key"] == victim.data.tags["trial_key"]]
    assert len(same) == 1 and same[0].data.tags["outcome"] in ("completed", "pruned")
    assert same[0].data.tags["worker_pid"] != victim.data.tags["worker_pid"], "the trial did not move to a new worker"
