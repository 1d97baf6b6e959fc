"""Scale-out on one machine: Ray's fake autoscaler adds raylet nodes for a study's
fractional-GPU demand, the trials run on several of them, and the idle nodes go away. (A
SIGKILLed trial worker and driver: test_resume.py; `ray job stop`: test_readme_walkthrough.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mlflow_runs import trial_runs
from raycluster import FAKE_CLUSTER_YAML, RayHead, processes_referencing

ROOT = Path(__file__).resolve().parent.parent


def _run_study(results: Path, env_extra: dict, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_extra}
    return subprocess.Popen(
        [sys.executable, "-m", "study.run", *args, "--budget", "smoke", "--quiet", "--results-dir", str(results),
         "--tracking-uri", f"sqlite:///{results / 'mlflow.db'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return out


def _assert_clean_records(runs):
    assert max(Counter(r.data.tags["trial_key"] for r in runs).values()) == 1
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_fake_autoscaler_adds_gpu_nodes_for_fractional_trials_and_removes_them(tmp_path):
    results = tmp_path / "results"
    with RayHead(num_cpus=1, num_gpus=0, auth="disabled", autoscaling_config=FAKE_CLUSTER_YAML) as head:
        temp_dir = head.temp_dir
        assert head.alive_nodes() == 1
        proc = _run_study(results, head.env, "ablation_dropout", "--epochs", "1", "--trials-per-tuning", "1",
                          "--seeds", "0", "--gpus-per-trial", "0.5", "--autoscaling", "--max-concurrent", "2")
        most = 1
        while proc.poll() is None:
            most = max(most, head.alive_nodes())
            time.sleep(1)
        out = _finish(proc, timeout=10)
        assert proc.returncode == 0, out
        assert most >= 2, "the autoscaler never added a GPU worker node"
        runs = trial_runs(f"sqlite:///{results / 'mlflow.db'}", "ablation_dropout")
        _assert_clean_records(runs)
        assert all(r.data.tags["gpus_per_trial"] == "0.5" for r in runs)
        gpu_seconds = [r.data.metrics["cost/gpu_seconds"] for r in runs]
        assert all(g > 0 for g in gpu_seconds)
        # Multi-node: the trials ran on the added worker nodes (one 1-CPU trial fits a node), and
        # their results and checkpoints landed in the one storage folder every node reaches.
        nodes = Counter(r.data.tags.get("node_id") for r in runs)
        assert None not in nodes and len(nodes) >= 2, f"trials ran on nodes {dict(nodes)}"
        assert list((results / "tune").glob("*/*/checkpoint_*"))
        # Idle workers go after the config's idle timeout (15 s).
        assert head.alive_nodes(at_least=0, timeout=0) >= 1
        deadline = time.time() + 120
        while head.alive_nodes() > 1 and time.time() < deadline:
            time.sleep(2)
        assert head.alive_nodes() == 1, "idle GPU workers were not removed"
    assert not processes_referencing(temp_dir), "a Ray process outlived the cluster's stop()"
