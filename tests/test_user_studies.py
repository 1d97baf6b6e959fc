"""Bring your own study (issue 12): a user's study file and trainable, through the same API as
ours. The examples run end to end at their smoke budget into one MLflow store, one of them as a
Ray job from a project folder of its own, which is then deleted: ``analysis.compare`` reports it
from MLflow alone. Bad input exits 2 with a message naming the file and the field, before
anything runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mlflow_runs import study_runs
from builtin_studies.mnist import AUTOENCODER, MNIST
from study import tracking
from study.loader import StudyError
from study.registry import find
from study.registry import ORIGINS, STUDIES
from study.run import main
from study.trial import normalize

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SMOKE_MIN_ACCURACY = 0.80      # 5 epochs of the digits MLP reach ~0.9; chance is 0.1

# A user's study file: {trainable}, {extra} and {study_extra} are filled in by each test.
STUDY_FILE = '''
from study.api import Budget, Factor, Level, Param, SearchSpace, Study
{imports}
SMOKE = Budget(dataset="digits", epochs=1, trials_per_tuning=1, seeds=(0,))
width = Study(
    name="{name}", description="a user's study", question="does width help?",
    factors=(Factor("width", (Level("16", {{"hidden": 16}}), Level("64", {{"hidden": 64}}))),),
    baseline={{"width": "{baseline}"}}, design="one_at_a_time",
    search_space=SearchSpace("s", (Param("{param}", 1e-4, 1e-2, log=True, start=1e-3, reason="test"),)),
    trainable={trainable}, data=Data(load), budgets={{"smoke": SMOKE, "full": SMOKE}},
)
{extra}
'''


def user_file(tmp_path: Path, name="width", baseline="64", param="lr", trainable="fit", imports="", extra="",
              filename="width.py") -> Path:
    """A study file in a folder of its own, next to a copy of the digits trainable."""
    folder = tmp_path / "my_studies"
    folder.mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "digits_mlp.py", folder / "digits_mlp.py")
    imports = "from study.api import Data\nfrom digits_mlp import fit, load\n" + imports
    path = folder / filename
    path.write_text(STUDY_FILE.format(name=name, baseline=baseline, param=param, trainable=trainable,
                                      imports=imports, extra=extra))
    return path


def run_cli(args, capsys, results: Path) -> tuple[int, str]:
    code = main([*args, "--results-dir", str(results), "--tracking-uri", f"sqlite:///{results / 'mlflow.db'}"])
    captured = capsys.readouterr()
    return code, captured.err + captured.out


# -- the API ---------------------------------------------------------------------------------------
def test_our_studies_are_study_files_written_with_the_public_api():
    files = {f"builtin_studies/{p.name}" for p in (ROOT / "builtin_studies").glob("*.py")
             if p.name not in ("__init__.py", "mnist.py")}
    assert set(ORIGINS.values()) == files and set(ORIGINS) == set(STUDIES)
    for name, origin in ORIGINS.items():
        source = (ROOT / origin).read_text()
        assert "from study.api import" in source and "study.spec" not in source, origin
        assert [f.study for f in find(origin)] == [STUDIES[name]]      # the file is the registered study


def test_no_level_uses_a_magic_key():
    for study in STUDIES.values():
        for factor in study.factors:
            for level in factor.levels:
                assert not {"pretraining", "denoiser", "train_on_test_noise", "denoise"} & set(level.settings)


def test_builtin_data_and_autoencoder_agree_with_the_trainables():
    from trainables.config import AUTOENCODER_SCHEMA, CLASSIFIER_SCHEMA
    from trainables.data import DATASET_NAMES
    assert MNIST.names == DATASET_NAMES
    # the autoencoder holds out the classifier's validation split when a study sets none
    assert AUTOENCODER.inherit["val_fraction"] == CLASSIFIER_SCHEMA["val_fraction"].default \
        == AUTOENCODER_SCHEMA["val_fraction"].default


def test_the_examples_are_user_studies_on_other_data_with_their_own_trainables():
    found = {f.study.name: f.study for target in ("examples/digits_width.py", "examples/digits_screening.py")
             for f in find(target)}
    assert set(found) == {"digits_width", "digits_screening"}
    for study in found.values():
        assert study.trainable.__module__ == "digits_mlp" and study.budgets["smoke"].dataset == "digits"
    ours = {s.design for s in STUDIES.values()}
    assert found["digits_screening"].design == "half_fraction" and "half_fraction" not in ours
    trainer = (EXAMPLES / "digits_mlp.py").read_text()
    assert "import ray" not in trainer and "from study" not in trainer


def test_a_half_fraction_runs_the_cells_that_differ_from_the_baseline_in_an_even_number_of_factors():
    study = find("examples/digits_screening.py")[0].study
    cells = [dict(a.levels) for a in study.arms()]
    assert len(cells) == 4 and dict(study.baseline) in cells
    assert all(sum(c[f] != study.baseline[f] for f in c) % 2 == 0 for c in cells)
    # each main effect: the two arms at one level against the two at the other
    for contrast in study.contrasts:
        assert sorted(study.contrast_weights(contrast).values()) == [-0.5, -0.5, 0.5, 0.5]
    # the pretrained arms build on the autoencoder of their own width
    keys = {a.levels["width"]: [u.upstream.key for u in a.uses] for a in study.arms() if a.uses}
    assert keys == {"32": ["digits-ae-h32"], "128": ["digits-ae-h128"]}


def test_list_accepts_a_study_file(capsys):
    assert main(["--list", "examples/digits_width.py"]) == 0
    out = capsys.readouterr().out
    assert "digits_width" in out and "ablation_dropout" not in out


def test_a_file_with_several_studies_asks_which(tmp_path, capsys):
    path = user_file(tmp_path, extra='narrow = __import__("dataclasses").replace(width, name="narrow")')
    code, out = run_cli([str(path), "--dry-run"], capsys, tmp_path / "results")
    assert code == 2 and "width, narrow" in out and f"{path}:width" in out
    assert main(["--list", str(path)]) == 0 and "narrow" in capsys.readouterr().out
    assert main([f"{path}:narrow", "--dry-run", "--results-dir", str(tmp_path / "results")]) == 0
    assert "Study narrow" in capsys.readouterr().out


def test_a_study_from_a_module(tmp_path, monkeypatch, capsys):
    """``package.module:NAME``: a study module on sys.path (an installed or working-dir package)."""
    package = tmp_path / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(EXAMPLES / "digits_mlp.py", package / "digits_mlp.py")
    (package / "studies.py").write_text(STUDY_FILE.format(
        name="width_from_module", baseline="64", param="lr", trainable='"my_package.digits_mlp:fit"',
        imports="from study.api import Data\nfrom my_package.digits_mlp import load\n", extra=""))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--list", "my_package.studies:width"]) == 0
    assert "width_from_module" in capsys.readouterr().out
    assert main(["my_package.studies:width_from_module", "--dry-run", "--results-dir", str(tmp_path / "r")]) == 0
    assert "Study width_from_module" in capsys.readouterr().out
    code, out = run_cli(["my_package.nope:width", "--dry-run"], capsys, tmp_path / "results")
    assert code == 2 and "my_package.nope" in out and "cannot be imported" in out


def test_reports_are_normalized_for_the_runner():
    assert normalize({"epoch": 3, "val/acc": 1}, 3, 3) == {"epoch": 3.0, "val/acc": 1.0, "final": 1.0}
    assert normalize({"val/acc": 0.5}, 5, 2) == {"val/acc": 0.5, "epoch": 2.0, "final": 0.0}
    assert normalize({"epoch": 2, "final": 1.0}, 5, 2)["final"] == 1.0      # stopped early, said so


def test_check_runs_one_epoch_and_nothing_else(tmp_path, capsys):
    code, out = run_cli(["examples/digits_width.py", "--check"], capsys, tmp_path / "results")
    assert code == 0, out
    assert "dry trial: arm width=64,depth=1, " in out and "s per epoch" in out and "val/acc" in out and "test/acc" in out
    assert "ok: python -m study.run examples/digits_width.py" in out
    results = tmp_path / "results"
    assert not results.exists() or not list(results.iterdir()), "--check must not touch MLflow or Tune"


PRETRAINED_BASELINE = """
from digits_mlp import fit, load, pretrain
from study.api import Budget, Data, Factor, Level, Param, SearchSpace, Stage, Study, Upstream, Use

AE = Stage("ae", pretrain, SearchSpace("ae", (Param("lr", 1e-3, 1e-2, log=True, start=3e-3, reason="test"),)))
SMOKE = Budget(dataset="digits", epochs=1, trials_per_tuning=1, seeds=(0,), upstream_epochs=1, upstream_trials=1)
pretrained = Study(
    name="pretrained", description="a baseline on an upstream", question="?",
    factors=(Factor("init", (Level("ae", {{"hidden": 32}}, uses=(Use(Upstream(AE, {{"hidden": 32}}, name="ae32"),
                                                                 "{file}", "encoder_checkpoint"),)),
                             Level("scratch", {{"hidden": 32}}))),),
    baseline={{"init": "ae"}}, design="one_at_a_time", search_space=SearchSpace("s", ()),
    trainable=fit, data=Data(load), budgets={{"smoke": SMOKE, "full": SMOKE}})
"""


def test_the_check_trains_the_upstream_a_baseline_builds_on(tmp_path, capsys):
    path = user_file(tmp_path)
    path.write_text(PRETRAINED_BASELINE.format(file="encoder.pt"))
    code, out = run_cli([str(path), "--check"], capsys, tmp_path / "results")
    assert code == 0 and "dry trial: arm init=ae, " in out, out
    path.write_text(PRETRAINED_BASELINE.format(file="weights.pt"))
    assert_refused(path, capsys, tmp_path, "width.py", "final checkpoint has no 'weights.pt'", "encoder_checkpoint",
                   args=["--check"])


# -- bad input: exit 2, the file and the field named, nothing run ----------------------------------
def assert_refused(path, capsys, tmp_path, *needles, args=()):
    code, out = run_cli([str(path), *args], capsys, tmp_path / "results")
    assert code == 2, out
    for needle in needles:
        assert needle in out, out
    results = tmp_path / "results"       # (the tracking check may create the folder, nothing in it)
    assert not results.exists() or not list(results.iterdir()), "nothing may run before the study is sound"
    return out


def test_a_missing_study_file(tmp_path, capsys):
    assert_refused(tmp_path / "nope.py", capsys, tmp_path, "nope.py", "no such study file")


def test_a_study_file_that_raises_shows_where(tmp_path, capsys):
    path = user_file(tmp_path, extra="x = 1\nundefined_name + 1")
    out = assert_refused(path, capsys, tmp_path, "width.py", "NameError", "undefined_name")
    assert f'line {len(path.read_text().splitlines())}' in out      # the traceback's last frame


def test_a_baseline_level_that_does_not_exist(tmp_path, capsys):
    path = user_file(tmp_path, baseline="128")
    assert_refused(path, capsys, tmp_path, "width.py", "baseline", "'128'", "levels: ['16', '64']")


def test_a_trainable_that_cannot_be_imported(tmp_path, capsys):
    path = user_file(tmp_path, trainable='"my_models.train:fit"')
    assert_refused(path, capsys, tmp_path, "width.py", "study 'width'", "trainable 'my_models.train:fit'",
                   "cannot be imported", "No module named 'my_models'")


def test_a_trainable_that_never_reports_the_metric_is_found_by_the_check(tmp_path, capsys):
    quiet = textwrap.dedent('''
        def renamed(config, report, *, dataset=None, resume_from=None):
            def rename(metrics, checkpoint):
                report({k.replace("val/acc", "val/accuracy"): v for k, v in metrics.items()}, checkpoint)
            return fit(config, rename, dataset=dataset, resume_from=resume_from)
        renamed.schema = fit.schema
    ''')
    path = user_file(tmp_path, trainable="renamed", imports=quiet)
    assert_refused(path, capsys, tmp_path, "width.py", "study 'width'", "metric", "val/accuracy", "'val/acc'")


def test_a_search_space_key_the_trainable_rejects(tmp_path, capsys):
    path = user_file(tmp_path, param="momentum")
    assert_refused(path, capsys, tmp_path, "width.py", "search_space 's'", "'momentum'", "does not accept")


def test_a_rejected_key_without_a_schema_is_found_by_the_dry_trial(tmp_path, capsys):
    bare = "def bare(config, report, *, dataset=None, resume_from=None):\n    return fit(config, report, dataset=dataset)\n"
    path = user_file(tmp_path, param="momentum", trainable="bare", imports=bare)
    assert_refused(path, capsys, tmp_path, "width.py", "dry trial", "unknown config keys ['momentum']",
                   "digits_mlp.py")


def test_two_studies_with_the_same_name(tmp_path, capsys):
    path = user_file(tmp_path, extra='twin = __import__("dataclasses").replace(width, description="another")')
    assert_refused(path, capsys, tmp_path, "width.py", "two studies are named 'width'", "width, twin")


def test_a_study_may_not_take_a_builtin_name(tmp_path, capsys):
    path = user_file(tmp_path, name="ablation_dropout")
    assert_refused(path, capsys, tmp_path, "width.py", "studies/ablation_dropout.py", "rename")


def test_bad_input_through_the_command_line(tmp_path):
    """As a user types it: a subprocess, exit status 2, one message on stderr."""
    path = user_file(tmp_path, baseline="128")
    result = subprocess.run([sys.executable, "-m", "study.run", str(path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "baseline" in result.stderr and "width.py" in result.stderr
    assert "Traceback (most recent call last)" not in result.stderr


def test_an_upstream_follows_the_settings_of_the_arm_that_uses_it():
    from study.api import Budget, Factor, Level, Param, SearchSpace, Stage, Study, Upstream, Use
    stage = Stage("s", "m:f", SearchSpace("x", (Param("lr", 1e-3, 1e-2, reason="t"),)))
    use = Use(Upstream(stage, {"depth": 2}, name="s-{width}", settings_from={"width": "hidden"}),
              file="w.pt", into="init_checkpoint", shared=("depth",))
    budget = Budget(dataset="d", epochs=1, trials_per_tuning=1, seeds=(0,))

    def study(level_b: Level, baseline_uses=()) -> Study:
        return Study(name="t", description="", question="", baseline={"f": "a"}, design="one_at_a_time",
                     factors=(Factor("f", (Level("a", {"hidden": 8}, uses=baseline_uses), level_b)),),
                     search_space=SearchSpace("y", ()), trainable="m:g", budgets={"smoke": budget, "full": budget})

    arm = study(Level("b", {"hidden": 16}, uses=(use,))).arm("f=b")
    assert arm.uses[0].upstream.key == "s-16" and arm.uses[0].slot == "init_artifact"
    assert arm.settings["depth"] == 2                      # shared: the arm takes the upstream's value
    with pytest.raises(ValueError, match="sets depth=3 but builds on 's-16' with depth=2"):
        study(Level("b", {"hidden": 16, "depth": 3}, uses=(use,)))
    other = Stage("o", "m:h", SearchSpace("z", ()), metric="val/acc", mode="max")
    with pytest.raises(ValueError, match="different metrics"):
        study(Level("b", {"hidden": 16}, uses=(use,)), baseline_uses=(Use(Upstream(other, name="o"), "o.pt", "o_ckpt"),))


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory, ray_local):
    """Runs an example at its smoke budget, once, into one MLflow store; returns (study, uri).

    digits_width runs as a user runs a study on a cluster: ``ray job submit --working-dir .
    -- python -m study.run my_studies/digits_width.py`` from a project folder of its own (not
    this repository) on a local head. The study file and the trainable next to it reach the
    workers inside the trials (pickled by value): the workers' sys.path holds the working dir,
    not my_studies/. The project is deleted once it has run: its report must come from MLflow
    alone."""
    root = tmp_path_factory.mktemp("user_studies")
    project = root / "project"
    (project / "my_studies").mkdir(parents=True)
    for name in ("digits_width.py", "digits_mlp.py"):
        shutil.copy(EXAMPLES / name, project / "my_studies" / name)
    results = root / "results"
    uri = f"sqlite:///{results / 'mlflow.db'}"
    done = {}

    def run(name: str):
        if name in done:
            return done[name], uri
        if name == "digits_width":
            done[name] = find(str(project / "my_studies" / "digits_width.py"))[0].study
            _submit(project, ["python", "-m", "study.run", "my_studies/digits_width.py", "--budget", "smoke",
                              "--quiet", "--results-dir", str(results), "--tracking-uri", uri])
            shutil.rmtree(project)
        else:
            path = ROOT / "examples" / f"{name}.py"
            done[name] = find(str(path))[0].study
            code = main([str(path), "--budget", "smoke", "--results-dir", str(results), "--tracking-uri", uri,
                         "--quiet"])
            assert code == 0, f"{name} exited with {code}"
        return done[name], uri
    return run


def _submit(project: Path, command: list[str]) -> None:
    from raycluster import RayHead, job_logs, submit_job, wait_job

    with RayHead(num_cpus=2, include_dashboard=True, auth="token", object_store_memory=200 * 1024 ** 2) as head:
        job = submit_job(head, command, working_dir=project, env_vars={"MLFLOW_DISABLE_TELEMETRY": "true"})
        status = wait_job(head, job, timeout=900)
        assert status == "SUCCEEDED", job_logs(head, job)[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_screening", "digits_width"])
def test_example_study_end_to_end(name, example):
    study, uri = example(name)
    budget = study.budgets["smoke"]
    runs = study_runs(uri, name)
    parent = next(r for r in runs if r.data.tags.get("run_kind") == "study")
    assert parent.data.tags["study_status"] == "finished" and parent.data.tags["design"] == study.design
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    replicate = [r for r in trials if r.data.tags["stage"] == "classify" and r.data.tags["phase"] == "replicate"]
    seeds = defaultdict(set)
    accuracy = defaultdict(list)
    for r in replicate:
        assert r.data.tags["outcome"] == "completed" and r.data.params["meta.trainable"] == "digits_mlp:fit"
        seeds[r.data.tags["arm"]].add(int(r.data.tags["seed"]))
        accuracy[r.data.tags["arm"]].append(r.data.metrics["test/acc"])
        assert {"model.pt", "evaluation.json"} <= {a.path for a in tracking.client(uri).list_artifacts(r.info.run_id)}
    assert seeds == {a.name: set(budget.seeds) for a in study.arms()}
    for arm, values in accuracy.items():
        assert sum(values) / len(values) >= SMOKE_MIN_ACCURACY, (arm, values)
    tune = [r for r in trials if r.data.tags["stage"] == "classify" and r.data.tags["phase"] == "tune"]
    assert Counter(r.data.tags["arm"] for r in tune) == {a.name: budget.trials_per_tuning * len(budget.seeds)
                                                         for a in study.arms()}
    if name != "digits_screening":
        return
    # the upstream stage: each autoencoder once per replicate seed, and used; its tuning of one
    # trial trains nothing (study.tuning)
    pretrained = json.loads(parent.data.tags["upstream_runs"])
    assert set(pretrained) == {f"digits-ae-h{w}/{s}" for w in (32, 128) for s in budget.seeds}
    assert not [r for r in trials if r.data.tags["stage"] == "upstream" and r.data.tags["phase"] == "tune"]
    keyed = [r for r in trials if r.data.tags["stage"] == "upstream" and "upstream_cache_key" in r.data.tags]
    assert keyed and Counter(r.data.tags["upstream_cache_key"] for r in keyed).most_common(1)[0][1] == 1
    assert {r.info.run_id for r in keyed} == set(pretrained.values())
    for r in replicate:
        ref = r.data.params.get("meta.encoder_artifact")
        assert (ref == f"digits-ae-h{r.data.tags['factor.width']}/{r.data.tags['seed']}/encoder.pt") == \
            (r.data.tags["factor.pretraining"] == "autoencoder")


@pytest.mark.slow
def test_a_user_study_is_reported_from_mlflow_alone(example, tmp_path):
    _, uri = example("digits_width")               # its project folder is deleted since
    result = subprocess.run([sys.executable, "-m", "analysis.compare", "digits_width", "--tracking-uri", uri,
                             "--output", str(tmp_path / "report"), "--no-log"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for contrast in ("width 16 vs 64", "width 256 vs 64", "two hidden layers vs one"):
        assert contrast in result.stdout
    assert (tmp_path / "report" / "report.html").exists()
