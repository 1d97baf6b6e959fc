"""The runner's terminal output (study/terminal.py, study/progress.py) without Ray: progress lines and bars, the
ETA from the plan's estimate, outcome counts, the closing lines, the verbosity flags."""
from __future__ import annotations

import io
import pickle
import re
from types import SimpleNamespace

import pytest

from study import progress, terminal
from study.run import build_parser


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def trial(status, **result):
    return SimpleNamespace(status=status, last_result=result)


def display(clock, **kw):
    kw = {"stream": io.StringIO(), "tty": False, "interval_s": 10.0, **kw}
    p = progress.PhaseProgress("classify/tune", 4, 2, 10.0, clock=clock, **kw)
    p.setup()
    return p


def test_outcomes_are_counted_as_the_mlflow_records_name_them():
    trials = [trial("TERMINATED", final=1.0), trial("TERMINATED", final=0.0), trial("TERMINATED", diverged=1.0, final=1.0),
              trial("ERROR"), trial("RUNNING"), trial("PENDING")]
    assert progress.trial_counts(trials) == {"completed": 1, "pruned": 1, "failed": 2, "running": 1}


def test_plain_lines_are_throttled_and_only_printed_on_change():
    clock = Clock()
    p = display(clock)
    p.draw([trial("RUNNING"), trial("RUNNING")])
    clock.now += 1
    p.draw([trial("TERMINATED", final=1.0), trial("RUNNING")])       # changed, but 1 s later
    clock.now += 10
    p.draw([trial("TERMINATED", final=1.0), trial("RUNNING")])       # 11 s later: printed
    clock.now += 20
    p.draw([trial("TERMINATED", final=1.0), trial("RUNNING")])       # unchanged: not printed
    clock.now += progress.HEARTBEAT_S
    p.draw([trial("TERMINATED", final=1.0), trial("RUNNING")])       # a minute of silence: printed
    lines = p.stream.getvalue().splitlines()
    assert len(lines) == 3 == p.lines, lines
    assert re.fullmatch(r"\[study \d\d:\d\d:\d\d\] classify/tune  1/4 trials: 1 completed, 0 pruned, 0 failed, "
                        r"1 running; 0:11 elapsed, ETA \d+:\d\d", lines[1]), lines[1]
    assert "\r" not in p.stream.getvalue()


def test_a_terminal_gets_one_bar_redrawn_in_place():
    clock = Clock()
    p = display(clock, tty=True)
    for done in range(4):
        clock.now += 1
        p.draw([trial("TERMINATED", final=1.0)] * done + [trial("RUNNING")] * (4 - done))
    p.on_experiment_end([trial("TERMINATED", final=1.0)] * 3 + [trial("TERMINATED", final=0.0)])
    out = p.stream.getvalue()
    assert out.count("\n") <= 1 and "\r" in out, out      # one line, redrawn
    assert "classify/tune 4/4" in out and "3 completed, 1 pruned, 0 failed, 0 running" in out


def test_eta_is_the_plans_estimate_scaled_by_the_finished_trials():
    clock = Clock()
    p = display(clock)          # 4 trials, 2 at a time, the plan says 10 s each
    counts = {"completed": 0, "pruned": 0, "failed": 0, "running": 0}
    assert p.eta_s([trial("PENDING")] * 4, counts, 0.0) == pytest.approx(20.0)
    # two finished in 20 s each: twice the plan, so the other two take 2 x 20 s / 2 at a time
    trials = [trial("TERMINATED", final=1.0, time_total_s=20.0)] * 2 + [trial("PENDING")] * 2
    counts = progress.trial_counts(trials)
    assert p.eta_s(trials, counts, 40.0) == pytest.approx(20.0)
    # a running trial 15 s in has 5 s left of its 20
    trials[2] = trial("RUNNING", time_total_s=15.0)
    assert p.eta_s(trials, progress.trial_counts(trials), 55.0) == pytest.approx((20 + 5) / 2)
    assert p.eta_s([trial("TERMINATED", final=1.0)] * 4, progress.trial_counts([trial("TERMINATED", final=1.0)] * 4),
                   9.0) == 0.0


def test_the_plan_has_an_estimate_for_every_phase_of_a_study():
    from study.check import check_code
    from study.plan import CostModel, estimate_phases, per_trial_estimates
    from study.registry import STUDIES
    study = STUDIES["ablation_pretraining"]
    budget = study.budgets["laptop"]        # smoke's tunings of one trial train nothing: no tune phase
    estimates = per_trial_estimates(estimate_phases(study, budget, CostModel("cpu", check_code(study, "test"))))
    for stage, phase in (("upstream", "tune"), ("upstream", "replicate"), ("classify", "tune"), ("classify", "replicate")):
        seconds = estimates.get((stage, phase))
        assert seconds is not None and 0.5 < seconds < 600, (stage, phase, seconds)


def test_the_progress_display_survives_tunes_pickling():
    p = progress.PhaseProgress("classify/tune", 4, 2, 10.0, stream=io.StringIO(), tty=True)
    p.setup()                             # an open bar and a stream: neither is pickled
    copy = pickle.loads(pickle.dumps(p))
    assert copy.total == 4 and copy.stream is None and copy._bar is None and copy.tty_arg is True


def test_closing_lines_say_where_results_are_and_what_to_run_next():
    lines = terminal.epilogue_lines("ablation_dropout", "abc123", "sqlite:////tmp/r/mlflow.db", False, "/tmp/r/tune/x/")
    assert lines[-1].startswith("Next: python -m analysis.compare ablation_dropout --tracking-uri sqlite:////tmp/r/mlflow.db")
    assert any("mlflow ui --backend-store-uri sqlite:////tmp/r/mlflow.db" in line for line in lines)
    assert any("/tmp/r/tune/x/" in line for line in lines)
    default = terminal.epilogue_lines("ablation_dropout", "abc123", "sqlite:////p/results/mlflow.db", True, "t",
                                      experiment_id="7")
    assert "--tracking-uri" not in default[-1]
    # MLflow 3.17's UI opens GenAI pages unless the URL asks for the model-training view
    assert any("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning" in line for line in default)
    server = terminal.epilogue_lines("s", "r", "http://10.0.0.5:5000/", False, "t", experiment_id="3")
    assert any("http://10.0.0.5:5000/#/experiments/3/runs?workflowType=machine_learning" in line for line in server)


def test_verbosity_flags():
    parser = build_parser()
    assert parser.parse_args(["ablation_dropout", "--verbose"]).verbose
    assert parser.parse_args(["ablation_dropout", "--quiet"]).quiet
    with pytest.raises(SystemExit):
        parser.parse_args(["ablation_dropout", "--verbose", "--quiet"])
    assert terminal.ray_init_kwargs(1)["log_to_driver"] is False
    assert terminal.ray_init_kwargs(2)["log_to_driver"] is True
    assert terminal.tune_verbosity(1) == 0 and terminal.tune_verbosity(2) == 1


def test_the_bar_is_drawn_on_a_pty_that_reports_no_size():
    """A bare pty (script(1), some CI runners) says 0 x 0: tqdm then hid the bar entirely."""
    import os
    import pty
    import sys
    code = ("import time; from types import SimpleNamespace as S; from study import progress\n"
            "p = progress.PhaseProgress('classify/tune', 3, 2, 5.0); p.setup(); assert p.tty\n"
            "p.draw([S(status='TERMINATED', last_result={'final': 1.0}), S(status='RUNNING', last_result={})])\n"
            "p.on_experiment_end([S(status='TERMINATED', last_result={'final': 1.0})] * 3)\n")
    pid, fd = pty.fork()
    if pid == 0:                      # the child: stdout is the pty
        os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)
        os.execv(sys.executable, [sys.executable, "-c", code])
    out = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert b"classify/tune 3/3" in out and b"3 completed, 0 pruned, 0 failed, 0 running" in out, out
