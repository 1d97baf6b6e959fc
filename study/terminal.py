"""What the runner prints: one progress line per phase, warnings and errors, and where things are.

Verbosity (``RunOptions.verbose``): 0 (``--quiet``) phase summaries only; 1 (default) plus one
progress display per phase; 2 (``--verbose``) Tune's own status tables and every trial's
output on the driver instead of the progress display. At every level each trial's stdout and
stderr are written to files in its Tune trial directory (``RunConfig(log_to_file=True)``).

The progress display itself is study/progress.py (it imports Ray Tune; this module imports
neither Ray nor MLflow, so the command line's help and usage errors answer at once). On a
terminal it is a tqdm bar redrawn in place; without one (``ray job logs``, a pipe, CI) it is a
plain line at most every ``PLAIN_INTERVAL_S`` seconds, when the counts changed, and at least
every ``HEARTBEAT_S``. Both show trials done of the phase's total (completed, pruned by ASHA,
failed), the running ones, the time elapsed and an ETA: the plan's estimate for the phase
(``study.plan.estimate_phases``) scaled by how long the finished trials took against it, over
the concurrency.
"""
from __future__ import annotations

import logging
import os
import sys
import time

QUIET, COMPACT, VERBOSE = 0, 1, 2


def stamp(message: str) -> str:
    return f"[study {time.strftime('%H:%M:%S')}] {message}"


def log(message: str) -> None:
    """One line of the runner's output, with the time."""
    print(stamp(message), flush=True)


def ray_init_kwargs(verbose: int) -> dict:
    """Worker output reaches the driver only with --verbose (trials keep their log files)."""
    return {"log_to_driver": verbose >= VERBOSE,
            "logging_level": logging.INFO if verbose >= VERBOSE else logging.WARNING}


def quiet_libraries(verbose: int) -> None:
    """Below --verbose: Ray, Tune and MLflow say only warnings and errors, and MLflow draws no
    download bars."""
    if verbose >= VERBOSE:
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")     # read when mlflow is imported
    for name in ("ray", "ray.tune", "ray.train", "ray.data", "mlflow", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Ray says on every new local cluster that token authentication is on, as it is by default:
    # the runner's private local Ray keeps it on, without the warning.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_TokenAuthNotice())
    if "optuna" in sys.modules:
        sys.modules["optuna"].logging.set_verbosity(logging.WARNING)


class _TokenAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def tune_verbosity(verbose: int) -> int:
    return 1 if verbose >= VERBOSE else 0


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


RUNS_VIEW = "/#/experiments/{}/runs?workflowType=machine_learning"   # MLflow 3.17 UI: the training runs table


def epilogue_lines(study: str, parent_run_id: str, uri: str, default_uri: bool, trial_logs: str,
                   resume_hint: str | None = None, experiment_id: str | None = None) -> list[str]:
    """The closing lines: where the results are and what to run next."""
    compare = f"python -m analysis.compare {study}" + ("" if default_uri else f" --tracking-uri {uri}")
    view = RUNS_VIEW.format(experiment_id) if experiment_id else ""
    browse = (f"mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000{view}" if uri.startswith("sqlite")
              else f"{uri.rstrip('/')}{view}")
    lines = [f"Results: MLflow experiment {study!r}, parent run {parent_run_id}, in {uri}",
             f"  trial logs (stdout/stderr per trial): {trial_logs}",
             f"  browse the runs: {browse}"]
    if resume_hint:
        lines.append(f"  continue: {resume_hint}")
    lines.append(f"Next: {compare}   (tables with CIs, tests, figures, report.html; logged to the parent run)")
    return lines
