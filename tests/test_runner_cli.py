"""The CLI as a user types it: listing, planning, and bad input (clear message, exit 2,
nothing trained, nothing lost)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study import tracking
from study.protocol import RunOptions, run_study
from builtin_studies.mnist import CLASSIFIER, MNIST, SMOKE
from study.registry import STUDIES
from study.run import main
from study.spec import Budget, Factor, Level, Study
from search_spaces import Param, SearchSpace

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "study.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_list_names_every_study():
    out = cli("--list").stdout
    for name, study in STUDIES.items():
        assert name in out and study.description in out


def test_help_explains_every_option():
    out = cli("--help").stdout
    for option in ("--budget", "--dataset", "--seeds", "--gpus-per-trial", "--cpus-per-trial", "--address",
                   "--resume", "--fresh", "--dry-run", "--tracking-uri", "--storage", "--list"):
        assert option in out


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_dry_run_prints_the_plan_and_trains_nothing(name, tmp_path, capsys):
    code = main([name, "--dry-run", "--budget", "full", "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    study = STUDIES[name]
    for arm in study.arms():
        assert arm.name in out
    assert "classify replicate" in " ".join(out.split()) and "CPU-seconds" in out
    assert not any(tmp_path.iterdir()), "a dry run must not create any file"


def test_dry_run_with_gpus_estimates_gpu_seconds(tmp_path, capsys):
    assert main(["ablation_pretraining", "--dry-run", "--gpus-per-trial", "0.25", "--results-dir", str(tmp_path)]) == 0
    assert "GPU-seconds" in capsys.readouterr().out


def test_unknown_study_lists_the_studies():
    result = cli("no_such_study")
    assert result.returncode == 2
    assert "no_such_study" in result.stderr and "ablation_pretraining" in result.stderr


@pytest.mark.parametrize("args, option", [
    (["--gpus-per-trial", "0"], "--gpus-per-trial"),
    (["--gpus-per-trial", "1.5"], "--gpus-per-trial"),
    (["--seeds", "0,-1"], "--seeds"),
    (["--seeds", "a,b"], "--seeds"),
    (["--budget", "huge"], "--budget"),
    (["--cpus-per-trial", "-2"], "--cpus-per-trial"),
    (["--dataset", "cifar"], "--dataset"),
    (["--resume", "--fresh"], "--resume"),
])
def test_invalid_option_is_a_usage_error_naming_it(args, option):
    result = cli("ablation_dropout", *args)
    assert result.returncode == 2, result.stderr
    assert option in result.stderr


def test_unreachable_tracking_server_fails_fast_before_training(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens there
    start = time.time()
    result = cli("ablation_dropout", "--tracking-uri", f"http://user:pw@127.0.0.1:{port}",
                 "--results-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unreachable" in result.stderr and "pw" not in result.stderr
    assert time.time() - start < 30
    assert not (tmp_path / "tune").exists()


@pytest.mark.slow
def test_gpus_requested_on_a_cpu_cluster_is_refused_before_any_trial(tmp_path, ray_local, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["ablation_dropout", "--gpus-per-trial", "0.5", "--results-dir", str(tmp_path), "--tracking-uri", uri])
    assert code == 2
    assert "GPU" in capsys.readouterr().err
    c = tracking.client(uri)
    experiment = c.get_experiment_by_name("ablation_dropout")
    assert not c.search_runs([experiment.experiment_id], "tags.run_kind = 'trial'")


@pytest.mark.slow
def test_diverging_trials_fail_with_a_reason_and_the_study_goes_on(tmp_path, ray_local, capsys):
    """An arm whose learning rate makes the loss NaN: its runs are FAILED with the reason;
    the other arm is replicated (one trial per tuning, so no search); the summary lists the failures."""
    study = Study(
        name="diverging_test", description="one sane arm, one diverging arm", question="test",
        factors=(Factor("lr", (Level("sane", {"lr": 1e-3}), Level("huge", {"lr": 10.0, "weight_decay": 1.0, "optimizer": "sgd"}))),),
        baseline={"lr": "sane"}, design="one_at_a_time",
        search_space=SearchSpace("bs", (Param("batch_size", choices=(128, 256), reason="test"),)),
        fixed={"model": "encoder_head"}, budgets={"smoke": SMOKE, "full": SMOKE}, trainable=CLASSIFIER, data=MNIST)
    budget = Budget(dataset="mnist-5k", epochs=1, trials_per_tuning=1, seeds=(0,))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opts = RunOptions(study=study, budget_name="smoke", budget=budget, tracking_uri=uri, results_dir=tmp_path,
                      verbose=0, command="test")
    assert run_study(opts) == 0
    out = capsys.readouterr().out
    assert "FAILED 1 (lr=huge)" in out
    c = tracking.client(uri)
    runs = c.search_runs([c.get_experiment_by_name("diverging_test").experiment_id], "tags.run_kind = 'trial'")
    failed = [r for r in runs if r.data.tags["arm"] == "lr=huge"]
    assert failed and all(r.info.status == "FAILED" and r.data.tags["outcome"] == "failed" for r in failed)
    assert all("loss" in r.data.tags["failure_reason"].lower() for r in failed)
    sane = [r for r in runs if r.data.tags["arm"] == "lr=sane"]
    assert {r.data.tags["phase"] for r in sane} == {"replicate"}      # one trial per tuning, first guess in full
    assert all(r.data.tags["outcome"] == "completed" for r in sane)
