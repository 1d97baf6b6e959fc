"""What the runner prints: one progress line per phase, warnings and errors, and where things are.

Verbosity (``RunOptions.verbose``): 0 (``--quiet``) phase summaries only; 1 (default) plus one
progress display per phase; 2 (``--verbose``) Tune's own status tables and every trial's
output on the driver instead of the progress display. At every level each trial's stdout and
stderr are written to files in its Tune trial directory (``RunConfig(log_to_file=True)``).

On a terminal the progress display is a tqdm bar redrawn in place; without one (``ray job
logs``, a pipe, CI) it is a plain line at most every ``PLAIN_INTERVAL_S`` seconds, when the
counts changed, and at least every ``HEARTBEAT_S``. Both show trials done of the phase's total
(completed, pruned by ASHA, failed), the running ones, the time elapsed and an ETA: the plan's
estimate for the phase (``study.plan.estimate_phases``) scaled by how long the finished trials
took against it, over the concurrency.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Any, Mapping, Sequence, TextIO

PLAIN_INTERVAL_S = float(os.environ.get("STUDY_PROGRESS_INTERVAL_S", 10.0))
HEARTBEAT_S = 60.0
QUIET, COMPACT, VERBOSE = 0, 1, 2

try:
    from ray.tune import Callback as _TuneCallback
except ImportError:      # analysis-only installs
    _TuneCallback = object


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


def trial_counts(trials: Sequence[Any]) -> dict[str, int]:
    """Outcomes of Tune trials as the MLflow records name them (see trial_logger.MlflowTrialLogger)."""
    counts = {"completed": 0, "pruned": 0, "failed": 0, "running": 0}
    for trial in trials:
        result = trial.last_result or {}
        if trial.status == "RUNNING":
            counts["running"] += 1
        elif trial.status == "ERROR" or (trial.status == "TERMINATED" and (result.get("diverged")
                                                                           or result.get("trainable_error"))):
            counts["failed"] += 1
        elif trial.status == "TERMINATED":
            counts["completed" if result.get("final") else "pruned"] += 1
    return counts


class PhaseProgress(_TuneCallback):
    """A Tune callback drawing the progress of one phase (one Tune experiment)."""

    BAR = "{desc} {n}/{total} |{bar}|"      # tqdm sizes the bar to what the text leaves of the width

    def __init__(self, label: str, total: int, concurrency: int, trial_estimate_s: float | None,
                 stream: TextIO | None = None, tty: bool | None = None, interval_s: float = PLAIN_INTERVAL_S,
                 clock=time.monotonic):
        self.label, self.total, self.concurrency = label, total, max(1, concurrency)
        self.trial_estimate_s = trial_estimate_s
        self.stream = stream
        self.tty_arg = tty              # None: decided in setup, by the stream (a restore may differ)
        self.tty = False
        self.interval_s = interval_s
        self.clock = clock
        self._reset()

    def _reset(self) -> None:
        self._bar = None
        self._started = None
        self._printed_at = 0.0
        self._shown: tuple | None = None
        self._drawn_at = 0.0
        self.lines = 0

    def __getstate__(self):             # pickled with the Tune experiment: no open bar, no stream
        state = dict(self.__dict__)
        state.update(_bar=None, stream=None)
        return state

    @property
    def out(self) -> TextIO:
        return self.stream or sys.stdout

    def setup(self, **info):
        self._reset()
        self._started = self.clock()
        self.tty = self.tty_arg if self.tty_arg is not None else bool(getattr(self.out, "isatty", lambda: False)())
        if self.tty:
            from tqdm import tqdm
            # a terminal that reports its size as 0 x 0 (a bare pty) gets 120 x 20: tqdm would hide
            # a bar whose row is not above the screen's height, and draw nothing
            size = shutil.get_terminal_size((120, 20))
            self._bar = tqdm(total=self.total, desc=self.label, file=self.out, leave=True, ncols=size.columns,
                             nrows=size.lines,
                             bar_format=self.BAR, mininterval=0.5)

    def eta_s(self, trials: Sequence[Any], counts: Mapping[str, int], elapsed: float) -> float | None:
        """Remaining wall seconds: the plan's trial-seconds for the trials not finished, scaled by
        how the finished ones compared with the plan, over the concurrency."""
        done = counts["completed"] + counts["pruned"] + counts["failed"]
        if done >= self.total:
            return 0.0
        finished = [t.last_result.get("time_total_s") for t in trials
                    if t.status in ("TERMINATED", "ERROR") and (t.last_result or {}).get("time_total_s")]
        if self.trial_estimate_s:
            ratio = (sum(finished) / len(finished) / self.trial_estimate_s) if finished else 1.0
            per_trial = self.trial_estimate_s * ratio
        elif finished:
            per_trial = sum(finished) / len(finished)
        else:
            return None
        running = [t.last_result.get("time_total_s", 0.0) for t in trials if t.status == "RUNNING" and t.last_result]
        remaining = (self.total - done) * per_trial - sum(min(r, per_trial) for r in running)
        return max(0.0, remaining / min(self.concurrency, self.total - done))

    def text(self, trials: Sequence[Any]) -> tuple[tuple, str]:
        counts = trial_counts(trials)
        elapsed = self.clock() - (self._started or self.clock())
        done = counts["completed"] + counts["pruned"] + counts["failed"]
        key = (done, counts["running"], counts["failed"], counts["pruned"])
        line = (f"{counts['completed']} completed, {counts['pruned']} pruned, {counts['failed']} failed, "
                f"{counts['running']} running; {duration(elapsed)} elapsed, "
                f"ETA {duration(self.eta_s(trials, counts, elapsed))}")
        return key, line

    def draw(self, trials: Sequence[Any], final: bool = False) -> None:
        now = self.clock()
        if not final and now - self._drawn_at < 0.5:
            return                      # Tune steps every ~0.1 s: keep the driver's loop light
        self._drawn_at = now
        key, line = self.text(trials)
        if self._bar is not None:
            self._bar.n = key[0]
            self._bar.bar_format = self.BAR + " " + line.replace("{", "(").replace("}", ")")
            self._bar.refresh()
            return
        changed = key != self._shown
        if final or (changed and now - self._printed_at >= self.interval_s) or now - self._printed_at >= HEARTBEAT_S:
            if final and not changed:
                return
            print(stamp(f"{self.label}  {key[0]}/{self.total} trials: {line}"), file=self.out, flush=True)
            self.lines += 1
            self._printed_at, self._shown = now, key

    def on_step_end(self, iteration, trials, **info):
        self.draw(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.draw(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.draw(trials)

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self.draw(trials, final=True)
            self._bar.close()
            self._bar = None


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


def phase_progress(opts, stage: str, phase: str, trials: int, concurrency: int, trial_estimate_s: float | None
                   ) -> PhaseProgress | None:
    """The progress display of a phase at the default verbosity (None at the others);
    ``trial_estimate_s``: the plan's trial-seconds of one trial (study.plan.per_trial_estimates)."""
    if opts.verbose != COMPACT:
        return None
    return PhaseProgress(f"{stage}/{phase}", trials, concurrency, trial_estimate_s)
