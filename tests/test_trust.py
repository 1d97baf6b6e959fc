"""A user's study the runner can trust (issue 19): what goes wrong in someone else's trainable
never becomes a number. Every study here is a user's own, written in the test: a small PyTorch
model on scikit-learn's wine data (178 samples, 13 features, 3 classes), which none of our
studies or examples use, with its own loader and trainable.

    a NaN reported without raising        -> a failed (diverged) trial, never a result
    an error in the trainable's epoch 2   -> no retry, the phase stops, exit 1, one short message
    an edited study file                  -> a new version that runs and says what changed
    two studies started at once           -> both run on one new store
    no options, from the user's folder    -> ./results and ./reports of that folder
    a folder named like our packages      -> runs, or exit 2 naming the folder
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.records import Outcome, StudyStatus, Tag
from mlflow_runs import parent_runs, trial_runs

ROOT = Path(__file__).resolve().parent.parent

STUDY_FILE = '''
"""A user's study: a one-hidden-layer MLP on scikit-learn's wine data, width 8 vs 32."""
import os, tempfile
import torch
from torch import nn
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from study.api import Budget, Data, Factor, Level, Param, SearchSpace, Study, difference

DEFAULTS = {{"seed": 0, "epochs": 20, "dataset": "wine", "evaluate_test": True, "lr": 0.02, "batch_size": 16,
            "hidden": 8, "nan_from": 0, "bug_in": 0, "attempts": ""}}


def load(name="wine", data_dir=None):
    x, y = load_wine(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    rest_x, test_x, rest_y, test_y = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    train_x, val_x, train_y, val_y = train_test_split(rest_x, rest_y, test_size=0.3, stratify=rest_y, random_state=0)
    return {{"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}}


def fit(config, report, *, dataset=None, resume_from=None):
    cfg = {{**DEFAULTS, **config}}
    if cfg["attempts"]:                       # one line per call: the test counts retries
        with open(cfg["attempts"], "a") as f:
            f.write(f"{{cfg['hidden']}} {{cfg['seed']}} {{cfg['lr']}}\\n")
    torch.manual_seed(cfg["seed"])
    (x, y), (vx, vy), (tx, ty) = [[torch.tensor(a) for a in dataset[s]] for s in ("train", "val", "test")]
    model = nn.Sequential(nn.Linear(13, cfg["hidden"]), nn.ReLU(), nn.Linear(cfg["hidden"], 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    for epoch in range(1, cfg["epochs"] + 1):
        if cfg["bug_in"] and epoch == cfg["bug_in"]:
            width = cfg["widht"]              # the user's typo, first reached in epoch 2
        for batch in torch.randperm(len(y)).split(cfg["batch_size"]):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = nn.functional.cross_entropy(model(vx), vy).item()
            metrics = {{"epoch": epoch, "val/loss": val_loss, "val/acc": (model(vx).argmax(1) == vy).float().mean().item()}}
            if cfg["nan_from"] and epoch >= cfg["nan_from"]:
                metrics["val/loss"] = float("nan")      # the loss went NaN, and nothing raised
            if epoch == cfg["epochs"] and cfg["evaluate_test"]:
                metrics["test/acc"] = (model(tx).argmax(1) == ty).float().mean().item()
        with tempfile.TemporaryDirectory() as checkpoint:
            report(metrics, checkpoint)


fit.schema = DEFAULTS

SPACE = SearchSpace("mlp", (Param("lr", {lr_low}, 0.1, log=True, reason="Adam on standardised features"),))
BUDGET = Budget(dataset="wine", epochs=3, trials_per_tuning=2, seeds=(0, 1), grace_period=3)

STUDY = Study(
    name="{name}", description="width 8 vs 32 on wine", question="does width matter on wine?",
    factors=(Factor("width", (Level("8", {{"hidden": 8}}), Level("32", {{"hidden": 32}}, ))),),
    baseline={{"width": "8"}}, design="one_at_a_time", search_space=SPACE,
    budgets={{"smoke": BUDGET, "full": BUDGET}}, trainable=fit, data=Data(load), fixed={fixed},
    metric="val/loss", mode="min", contrasts=(difference("32 vs 8", {{"width": "32"}}, {{"width": "8"}}),))
'''


def write_study(folder: Path, name: str, fixed: dict | None = None, lr_low: float = 1e-3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(STUDY_FILE.format(name=name, fixed=repr(fixed or {}), lr_low=lr_low))
    return path


def run(args: list[str], capsys) -> tuple[int, str]:
    from study.run import main
    code = main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


def cli_env() -> dict[str, str]:
    """The environment of a user's terminal: none of the test session's store settings."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("MLFLOW_TRACKING_URI", "STUDY_RESULTS_DIR", "STUDY_REPORTS_DIR", "RAY_ADDRESS")}
    return {**environ, "PYTHONPATH": str(ROOT)}


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user types it, in their folder, with a private Ray."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600)


# -------------------------------------------------------------------- fast: no Ray, no training
def test_the_resume_hint_repeats_every_option():
    from study.run import resume_command
    hint = resume_command(["my.py", "--budget", "laptop", "--results-dir", "/data/r", "--tracking-uri",
                           "sqlite:////data/r/m.db", "--fresh"])
    assert hint == ("python -m study.run my.py --budget laptop --results-dir /data/r --tracking-uri "
                    "sqlite:////data/r/m.db --resume")
    assert resume_command(["my.py", "--resume"]).count("--resume") == 1


def test_a_non_finite_report_and_an_error_are_told_apart():
    from study.trial import error_report, non_finite, normalize, to_tune
    report = normalize({"val/loss": float("nan"), "val/acc": 0.5, "precision": "bf16"}, 3, 1)
    assert non_finite(report) == {"val/loss": report["val/loss"]}
    assert json.loads(to_tune(report)["run_tags"]) == {"precision": "bf16"} and "precision" not in to_tune(report)
    try:
        {}["widht"]
    except KeyError as error:
        failed = error_report(error, 2.0)
    file, line, function = json.loads(failed["error_where"])
    assert file == __file__ and function == "test_a_non_finite_report_and_an_error_are_told_apart"
    assert failed["failure_reason"] == "KeyError: 'widht'" and failed["trainable_error"] == 1.0


def test_the_phase_stops_when_the_same_error_repeats():
    from study.phases import RepeatedErrorStopper
    stopper = RepeatedErrorStopper(max_failures=2)
    error = {"trainable_error": 1.0, "failure_reason": "KeyError: 'widht'", "error_where": '["u.py", 40, "fit"]'}
    other = {**error, "failure_reason": "ValueError: x", "error_where": '["u.py", 9, "fit"]'}
    stopper("a", error)
    stopper("a", error)                        # the same trial's result seen twice counts once
    stopper("b", other)
    assert not stopper.stop_all() and stopper.reason() == ""
    stopper("c", error)
    assert stopper.stop_all() and "KeyError" in stopper.reason()


def test_a_folder_named_like_our_packages(tmp_path, capsys):
    """``studies/`` is a name a user picks: it no longer clashes with ours. One of the names that
    remain ours (``analysis/`` here) stops the run before anything, naming the folder."""
    project = tmp_path / "project"
    path = write_study(project, "wine_width")
    (project / "studies").mkdir()
    (project / "studies" / "__init__.py").write_text("")
    code, out = run([str(path), "--check"], capsys)
    assert code == 0, out
    (project / "analysis").mkdir()
    (project / "analysis" / "__init__.py").write_text("")
    code, out = run([str(path), "--check"], capsys)
    assert code == 2 and str(project / "analysis") in out and "rename it" in out, out


def test_dry_run_and_check_estimate_a_users_trainable(tmp_path, capsys):
    path = write_study(tmp_path / "project", "wine_width")
    for option in ("--dry-run", "--check"):
        code, out = run([str(path), option, "--budget", "smoke"], capsys)
        assert code == 0, out
        assert "no cost estimate" not in out and "timed dry trial of the baseline arm" in out, out
        assert "s of wall time" in out, out
    # no claim the runner cannot guarantee for a trainable that does not declare it
    assert "best validation epoch's weights" not in out and "whatever the label fraction" not in out


def test_a_version_counts_only_its_own_study_files_code(tmp_path):
    """One process that loads several studies (the API, a notebook, this test session) gives
    each the version it has alone: another study file's modules are not its code. Its own helper
    module beside the study file is."""
    from study.check import check_code
    from study.registry import find
    from study.version import study_version

    def version(target):
        found = find(target)[0]
        return study_version(found.study, found.study.budgets["smoke"], check_code(found.study, found.origin),
                             found.origin)

    mine = write_study(tmp_path / "mine", "wine_mine")
    (tmp_path / "mine" / "wine_helpers.py").write_text("SCALE = 1.0\n")
    mine.write_text(mine.read_text().replace("import os, tempfile", "import os, tempfile\nimport wine_helpers"))
    alone = version(str(mine))
    assert str(tmp_path / "mine" / "wine_helpers.py") in alone.code
    other = write_study(tmp_path / "other", "wine_other")
    (tmp_path / "other" / "wine_other_helpers.py").write_text("X = 2\n")
    other.write_text(other.read_text().replace("import os, tempfile", "import os, tempfile\nimport wine_other_helpers"))
    version(str(other))
    again = version(str(mine))
    assert again.code == alone.code and again.code_sha256 == alone.code_sha256
    assert version("ablation_dropout").code == version("ablation_dropout").code
    assert not [f for f in version("ablation_dropout").code if "wine" in f]


# -------------------------------------------------------------------- studies that run
@pytest.mark.slow
def test_a_nan_reported_without_raising_is_a_failed_trial(tmp_path, capsys, ray_local):
    """Arm 32 reports val/loss = nan from epoch 2 on without raising: its trials fail with the
    reason, none is stored completed, and the arm has no result; arm 8 is untouched."""
    folder = tmp_path / "project"
    path = write_study(folder, "wine_nan")
    text = path.read_text().replace('Level("32", {"hidden": 32}, )', 'Level("32", {"hidden": 32, "nan_from": 2})')
    path.write_text(text)
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    code, out = run([str(path), "--results-dir", str(tmp_path / "results"), "--tracking-uri", uri, "--quiet"], capsys)
    assert code == 0, out
    runs = trial_runs(uri, "wine_nan")
    nan_arm = [r for r in runs if r.data.tags.get(Tag.ARM) == "width=32"]
    assert nan_arm and all(r.data.tags[Tag.OUTCOME] == Outcome.FAILED for r in nan_arm)
    assert all("val/loss = nan" in r.data.tags[Tag.FAILURE_REASON] for r in nan_arm)
    for r in runs:
        assert all(v == v for v in r.data.metrics.values()), f"a NaN was recorded as a result: {r.data.metrics}"
    completed = [r for r in runs if r.data.tags.get(Tag.OUTCOME) == Outcome.COMPLETED
                 and r.data.tags.get(Tag.PHASE) == "replicate"]
    assert {r.data.tags[Tag.ARM] for r in completed} == {"width=8"}
    assert "val/loss = nan" in out and "FAILED" in out


@pytest.mark.slow
def test_an_edited_study_is_a_new_version(tmp_path, capsys, ray_local):
    folder = tmp_path / "project"
    path = write_study(folder, "wine_edit")
    results = tmp_path / "results"
    uri = f"sqlite:///{results / 'mlflow.db'}"
    # one seed, one trial per tuning: versions, not the study, are under test
    args = [str(path), "--results-dir", str(results), "--tracking-uri", uri, "--quiet", "--seeds", "0",
            "--trials-per-tuning", "1"]
    assert run(args, capsys)[0] == 0
    code, out = run(args, capsys)
    assert code == 0 and "already finished" in out, out            # unchanged: nothing to do
    write_study(folder, "wine_edit", lr_low=3e-3)                   # one search-space range edited
    code, out = run(args, capsys)
    assert code == 0 and "already finished" not in out, out
    assert "changed since run" in out and "lr in [0.001, 0.1] (log) -> lr in [0.003, 0.1] (log)" in out, out
    assert f"code: {path}" in out, out
    parents = parent_runs(uri, "wine_edit")
    assert sorted(r.data.tags[Tag.STUDY_VERSION] for r in parents) == ["1", "2"]
    assert all(r.data.tags[Tag.STUDY_STATUS] == StudyStatus.FINISHED for r in parents)
    assert len({r.data.tags[Tag.CODE_SHA256] for r in parents}) == 2
    from analysis.load import load_study
    loaded = load_study("wine_edit", uri)
    assert loaded.parent_tags[Tag.STUDY_VERSION] == "2"
    assert set(loaded.runs["run_id"]).isdisjoint({r.info.run_id for r in trial_runs(uri, "wine_edit")
                                                   if r.data.tags.get(Tag.STUDY_VERSION) == "1"})


@pytest.mark.slow
def test_an_error_in_epoch_2_is_never_retried_and_stops_the_study(tmp_path):
    """What the user sees, as typed in their folder: exit 1, under 100 lines, the file and line
    of their typo, no retry, no "Next:" line."""
    folder = tmp_path / "project"
    attempts = tmp_path / "attempts.txt"
    write_study(folder, "wine_bug", fixed={"bug_in": 2, "attempts": str(attempts)})
    done = cli(["-m", "study.run", "wine_bug.py"], cwd=folder)
    printed = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(printed) < 100, "\n".join(printed)
    text = "\n".join(printed)
    assert "KeyError: 'widht'" in text and f'File "{folder / "wine_bug.py"}", line' in text
    assert 'width = cfg["widht"]' in text and "Next:" not in text and "Traceback" not in text
    calls = attempts.read_text().splitlines()
    # the dry trial's one epoch never reaches epoch 2; each trial that did ran once, no retry
    trials = calls[1:]
    assert 2 <= len(trials) <= 3 and len(set(trials)) == len(trials), calls
    assert (folder / "results" / "mlflow.db").is_file()       # the user's folder, not ours


@pytest.mark.slow
def test_two_studies_at_once_on_a_new_folder_and_the_analysis_without_options(tmp_path):
    """Two terminals, one new results folder, 2 s apart; then the report with no options, from
    the same folder: it finds ./results and writes ./reports there."""
    import time
    folder = tmp_path / "project"
    for name in ("wine_a", "wine_b"):
        write_study(folder, name)
    small = ["--seeds", "0", "--trials-per-tuning", "1"]      # the store and the folders are under test
    first = subprocess.Popen([sys.executable, "-m", "study.run", "wine_a.py", "--quiet", *small], cwd=folder,
                             env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    second = cli(["-m", "study.run", "wine_b.py", "--quiet", *small], cwd=folder)
    out_first = first.communicate(timeout=600)[0]
    assert first.returncode == 0, out_first
    assert second.returncode == 0, second.stdout + second.stderr
    report = cli(["-m", "analysis.compare", "wine_a"], cwd=folder)
    assert report.returncode == 0, report.stdout + report.stderr
    assert (folder / "reports" / "wine_a" / "report.html").is_file()
    assert (folder / "results" / ".rayignore").read_text().strip().endswith("*")
    assert not (ROOT / "reports" / "wine_a").exists() and not (ROOT / "results" / "mlruns").exists()

