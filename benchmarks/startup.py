"""Seconds from the command to the first trial: how long a study sits idle before it trains.

Claim under test (issue 21): the check's dry epoch, Ray's start, the data load and the MLflow
store overlap instead of queueing. Each round runs ``python -m study.run STUDY --budget smoke``
as a user types it, in a fresh results folder, from each checkout given (the current tree, and
e.g. a worktree of the commit before), interleaved; it reads the first trial run's start time
from the study's MLflow store, then stops the study (SIGINT) and its Ray by process group.

    python -m benchmarks.startup                                   # this checkout, 3 rounds
    git worktree add /tmp/before HEAD~1
    python -m benchmarks.startup --checkout /tmp/before --checkout . --rounds 3

Prints the medians per checkout, with the load average: run it with the machine otherwise idle.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def first_trial_s(checkout: Path, study: str, timeout_s: float = 300.0) -> float:
    """Seconds from the command's start to the first trial run's start in MLflow."""
    results = Path(tempfile.mkdtemp(prefix="startup-"))
    uri = f"sqlite:///{results / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "STUDY_RESULTS_DIR", "RAY_ADDRESS")}
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", "study.run", study, "--budget", "smoke", "--results-dir",
                                str(results), "--tracking-uri", uri, "--quiet"], cwd=checkout, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.time() - started < timeout_s:
            time.sleep(0.5)
            first = _first_trial_start(uri, study) if (results / "mlflow.db").exists() else None
            if first is not None:
                return first - started
            if process.poll() is not None:
                raise RuntimeError(f"{study} ended (exit {process.returncode}) before a trial started")
        raise TimeoutError(f"no trial of {study} started within {timeout_s:.0f} s")
    finally:
        _stop(process)


def _first_trial_start(uri: str, study: str) -> float | None:
    from mlflow.tracking import MlflowClient

    from study.records import prepare_store
    try:
        prepare_store(uri)          # under the store's lock: never half-way through the study's own creation
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(study)
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id], "tags.run_kind = 'trial'",
                                  order_by=["attributes.start_time ASC"], max_results=1)
    except Exception:  # noqa: BLE001 - the store is being created by the study
        return None
    return runs[0].info.start_time / 1000 if runs else None


def _stop(process: subprocess.Popen) -> None:
    """SIGINT to the study (it saves and exits), then its whole process group (its Ray)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", action="append", type=Path, help="a checkout to run (default: this one)")
    parser.add_argument("--study", default="ablation_dropout")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    checkouts = [c.resolve() for c in (args.checkout or [Path(__file__).resolve().parent.parent])]
    seconds: dict[Path, list[float]] = {c: [] for c in checkouts}
    for round_ in range(args.rounds):
        for checkout in checkouts:
            seconds[checkout].append(first_trial_s(checkout, args.study))
            print(f"round {round_ + 1}: {checkout}: {seconds[checkout][-1]:.1f} s to the first trial", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    for checkout, values in seconds.items():
        print(f"{checkout}: median {statistics.median(values):.1f} s to the first trial "
              f"({', '.join(f'{v:.1f}' for v in values)}), {args.study} --budget smoke")
    return 0


if __name__ == "__main__":
    sys.exit(main())
