"""The progress display of one phase: a Tune callback that draws a bar on a terminal, and a
line every ``STUDY_PROGRESS_INTERVAL_S`` seconds elsewhere (``ray job logs``, a file). Apart from
study/terminal.py so that the command line's help, usage errors and ``--list`` never import
Ray Tune (about 1.4 s)."""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, Mapping, Sequence, TextIO

from ray.tune import Callback

from study.terminal import COMPACT, duration, stamp

PLAIN_INTERVAL_S = float(os.environ.get("STUDY_PROGRESS_INTERVAL_S", 10.0))
HEARTBEAT_S = 60.0


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


class PhaseProgress(Callback):
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


def phase_progress(opts, stage: str, phase: str, trials: int, concurrency: int, trial_estimate_s: float | None
                   ) -> PhaseProgress | None:
    """The progress display of a phase at the default verbosity (None at the others);
    ``trial_estimate_s``: the plan's trial-seconds of one trial (study.plan.per_trial_estimates)."""
    if opts.verbose != COMPACT:
        return None
    return PhaseProgress(f"{stage}/{phase}", trials, concurrency, trial_estimate_s)
