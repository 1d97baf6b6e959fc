"""`ray job submit` of a smoke study to a real local head (free ports, token auth),
`ray job stop` in the middle, and a resubmitted `--resume` that completes it. The recorded runs must not
contain any secret from the job's environment."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from raycluster import RayHead, job_logs, processes_referencing, stop_job, submit_job, wait_job
from study import tracking
from test_resume import SMALL, STUDY, _check_complete, _trial_runs

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789", "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-987654"}


def _wait_for_trials(results, uri, n, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not (results / "tune").exists():      # the driver has not finished creating the store
            time.sleep(0.5)
            continue
        try:
            if len([r for r in _trial_runs(uri) if r.data.tags.get("outcome") == "completed"]) >= n:
                return
        except Exception:
            pass
        time.sleep(0.5)
    pytest.fail(f"fewer than {n} trials completed in {timeout} s")


def _everything_recorded(uri) -> str:
    """Params, tags and text artifacts of every run, as one string to search."""
    c = tracking.client(uri)
    experiments = [e.experiment_id for e in c.search_experiments()]
    parts = []
    for run in c.search_runs(experiments, max_results=10000):
        parts += [f"{k}={v}" for k, v in run.data.params.items()]
        parts += [f"{k}={v}" for k, v in run.data.tags.items()]
        for artifact in c.list_artifacts(run.info.run_id):
            if artifact.path.endswith((".json", ".csv", ".txt")):
                local = c.download_artifacts(run.info.run_id, artifact.path)
                parts.append(Path(local).read_text(errors="replace"))
    return "\n".join(parts)


@pytest.mark.slow
def test_job_submit_stop_and_resume(tmp_path):
    results = tmp_path / "results"
    uri = f"sqlite:///{results / 'mlflow.db'}"
    command = ["python", "-m", "study.run", STUDY, "--budget", "smoke", "--quiet",
               "--results-dir", str(results), "--tracking-uri", uri, *SMALL]
    # One node: with several raylets on ONE host, a worker node's runtime-env agent garbage-
    # collects the shared working_dir copy under the running driver (multi-node runs without
    # working_dir: test_scale_out.py).
    with RayHead(num_cpus=2, include_dashboard=True, auth="token", object_store_memory=200 * 1024 ** 2) as head:
        temp_dir, token = head.temp_dir, head.token
        env = {**SECRETS, "STUDY_GIT_COMMIT": "0123abc", "MLFLOW_DISABLE_TELEMETRY": "true"}
        first = submit_job(head, command, working_dir=ROOT, env_vars=env)
        _wait_for_trials(results, uri, n=1)
        assert stop_job(head, first, timeout=120) == "STOPPED"
        deadline = time.time() + 30           # job logs reach the dashboard with a lag
        while "--resume" not in job_logs(head, first) and time.time() < deadline:
            time.sleep(1)
        assert "--resume" in job_logs(head, first), job_logs(head, first)[-3000:]
        parent = tracking.client(uri).search_runs(
            [_trial_runs(uri)[0].info.experiment_id], "tags.run_kind = 'study'")[0]
        assert parent.data.tags["study_status"] == "interrupted"

        second = submit_job(head, command + ["--resume"], working_dir=ROOT, env_vars=env)
        status = wait_job(head, second, timeout=400)
        assert status == "SUCCEEDED", job_logs(head, second)[-4000:]
        assert f"python -m analysis.compare {STUDY}" in job_logs(head, second)

    assert not processes_referencing(temp_dir), "a Ray process outlived the cluster's stop()"
    _check_complete(uri)
    assert list((results / "tune").glob("*/*/checkpoint_*")), "no checkpoint in the shared storage"
    recorded = _everything_recorded(uri)
    assert "0123abc" in recorded                       # provenance from the submitter arrived
    for name, secret in {**SECRETS, "RAY_AUTH_TOKEN": token}.items():
        assert secret not in recorded, f"{name} leaked into MLflow"
