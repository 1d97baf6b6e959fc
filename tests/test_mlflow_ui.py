"""What a user sees of a study in MLflow, from the session's smoke record of ablation_dropout
(``smoke_runs`` in conftest.py: the README walk-through's job made it, run as a user runs it on a
Ray cluster and resumed after ``ray job stop``, when that test ran first), shared by every test
here:

* the experiment opens on the training runs view (``mlflow.experimentKind``);
* every trial run has its dataset inputs; every replicate run a model that
  ``mlflow.pytorch.load_model("runs:/<id>/model")`` loads and that scores the logged test
  accuracy again on the test set;
* ``python -m analysis.compare`` puts the report on the parent run and names each arm's model;
* ``mlflow ui`` serves all of it (its REST API, as the UI's runs table reads it).

What the terminal shows of a run (compact progress lines, no Tune tables, each trial's output in
files) is checked on that job's own output: tests/test_readme_walkthrough.py, check_job_resume.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from study import run_contents, tracking
from study.registry import STUDIES

ROOT = Path(__file__).resolve().parent.parent
STUDY = "ablation_dropout"


def _env():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="module")
def record(smoke_runs):
    smoke_runs(STUDY)
    c = tracking.client(smoke_runs.uri)
    experiment = c.get_experiment_by_name(STUDY)
    runs = c.search_runs([experiment.experiment_id], max_results=1000)
    return SimpleNamespace(results=smoke_runs.results, uri=smoke_runs.uri, client=c, experiment=experiment,
                           parent=next(r for r in runs if r.data.tags.get("run_kind") == "study"),
                           trials=[r for r in runs if r.data.tags.get("run_kind") == "trial"])


@pytest.mark.slow
def test_experiment_opens_on_the_training_runs(record):
    assert record.experiment.tags[run_contents.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # an older experiment without the tag gets it when a study opens it again
    record.client.delete_experiment_tag(record.experiment.experiment_id, run_contents.EXPERIMENT_KIND_TAG)
    tracking.ensure_experiment(record.uri, STUDY, record.results / "mlartifacts")
    tags = record.client.get_experiment(record.experiment.experiment_id).tags
    assert tags[run_contents.EXPERIMENT_KIND_TAG] == "custom_model_development"


@pytest.mark.slow
def test_every_trial_run_has_its_dataset_inputs(record):
    sha = record.parent.data.tags["data_sha256"]
    smoke = STUDIES[STUDY].budgets["smoke"]
    # one replicate per arm and seed: smoke's one trial per tuning with a full first guess is no search
    assert len(record.trials) == len(STUDIES[STUDY].arms()) * len(smoke.seeds)
    for run in record.trials:
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        expected = {"mnist-5k/train", "mnist-5k/validation"} | (
            {"mnist-5k/test"} if run.data.tags["phase"] == "replicate" else set())
        assert set(inputs) == expected, run.info.run_id
        for name, item in inputs.items():
            assert item.dataset.digest == sha[:run_contents.DIGEST_CHARS]
            assert json.loads(item.dataset.profile)["sha256"] == sha
            assert json.loads(item.dataset.source)["uri"]
            tags = {t.key: t.value for t in item.tags}
            assert tags["mlflow.data.context"] == name.split("/")[1]
            assert tags["split_seed"] == run.data.tags["seed"]
        train_tags = {t.key: t.value for t in inputs["mnist-5k/train"].tags}
        assert float(train_tags["label_fraction"]) == float(run.data.params.get("label_fraction", 1.0))


@pytest.mark.slow
def test_replicate_models_load_back_and_score_the_logged_test_accuracy(record):
    import mlflow
    import mlflow.pytorch
    import torch

    from analysis.artifacts import test_inputs

    replicate = [r for r in record.trials if r.data.tags["phase"] == "replicate"]
    assert all(r.outputs.model_outputs for r in replicate), "a replicate run has no model"
    assert not any(r.outputs.model_outputs for r in record.trials if r.data.tags["phase"] == "tune")
    run = replicate[0]
    # as a user's script would: the store is the tracking URI (an in-process study run earlier
    # in this session may have set another one, which the environment would not override)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(record.uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(before)
    params = run.data.params
    _, seen, labels, _ = test_inputs(params["dataset"], params.get("test_corruption", "none"),
                                     float(params.get("test_noise_level", 0.0)), int(run.data.tags["seed"]))
    with torch.inference_mode():
        predicted = torch.cat([model(batch).argmax(1) for batch in seen.split(500)])
    accuracy = float((predicted == labels).double().mean())
    assert accuracy == pytest.approx(run.data.metrics["test/acc"], abs=0.5 / len(labels))
    logged = record.client.get_logged_model(run.outputs.model_outputs[0].model_id)
    assert logged.source_run_id == run.info.run_id and logged.experiment_id == record.experiment.experiment_id


@pytest.mark.slow
def test_compare_logs_the_report_to_the_parent_run_and_names_each_arms_model(record, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis.compare", STUDY, "--tracking-uri", record.uri,
                           "--output", str(tmp_path / "report"), "--tsne-points", "100"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    parent = record.parent.info.run_id
    artifacts = {a.path for a in record.client.list_artifacts(parent)}
    assert {"report.html", "comparison.md", "figures"} <= artifacts, artifacts
    assert any(a.path.endswith(".png") for a in record.client.list_artifacts(parent, "figures"))
    report = (tmp_path / "report" / "report.html").read_text()
    by_arm = {}
    for run in record.trials:
        if run.data.tags["phase"] == "replicate":
            by_arm.setdefault(run.data.tags["arm"], set()).add(run.info.run_id)
    for arm, run_ids in by_arm.items():
        named = set(re.findall(r"runs:/([0-9a-f]{32})/model", report)) & run_ids
        assert len(named) == 1, f"arm {arm}: the report names {len(named)} of its models"
    assert "runs:/" in (tmp_path / "report" / "comparison.md").read_text()


def test_representative_model_is_the_one_closest_to_the_arms_median():
    from analysis.publish import representative_runs
    scores = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 2, "seed": [0, 1, 2, 0, 1],
                           "run_id": ["a0", "a1", "a2", "b0", "b1"], "metric": "test/acc",
                           "value": [0.90, 0.97, 0.95, 0.80, 0.90]})
    client = SimpleNamespace(get_run=lambda run_id: SimpleNamespace(
        outputs=SimpleNamespace(model_outputs=[1] if run_id != "b0" else [])))
    a = SimpleNamespace(scores=scores, metric="test/acc", arms=["a", "b", "c"], study=SimpleNamespace(client=client))
    rows = representative_runs(a).set_index("arm")
    assert list(rows.index) == ["a", "b"]                  # c has no scores
    assert rows.loc["a", "run_id"] == "a2" and rows.loc["a", "model_uri"] == "runs:/a2/model"
    assert rows.loc["b", "run_id"] == "b0" and not rows.loc["b", "has_model"]   # a tie: the lower seed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_ui_serves_the_runs_table_with_datasets_and_models(record):
    port = _free_port()
    env = {**_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", record.uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not come up")
                time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/", timeout=10) as page:
            assert page.status == 200
        eid = record.experiment.experiment_id
        with urllib.request.urlopen(f"{base}/ajax-api/2.0/mlflow/experiments/get?experiment_id={eid}") as r:
            tags = {t["key"]: t["value"] for t in json.load(r)["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        body = json.dumps({"experiment_ids": [eid], "filter": "tags.phase = 'replicate'", "max_results": 100}).encode()
        request = urllib.request.Request(f"{base}/ajax-api/2.0/mlflow/runs/search", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as r:
            runs = json.load(r)["runs"]
        assert runs and all(run["inputs"]["dataset_inputs"] and run["outputs"]["model_outputs"] for run in runs)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.mark.slow
def test_models_a_killed_driver_did_not_log_are_logged_after_the_phase(record, tmp_path):
    """The recovery path of run_phase: a completed replicate run without a model (its driver was
    killed before the background thread logged it) gets one; runs with a model keep theirs."""
    import torch
    from mlflow.entities import Param

    c = record.client
    source = next(r for r in record.trials if r.data.tags["phase"] == "replicate")
    tags = {k: v for k, v in source.data.tags.items() if k not in ("mlflow.parentRunId", "trial_key")}
    orphan = c.create_run(record.experiment.experiment_id, tags=tags).info.run_id
    try:
        params = list(source.data.params.items())
        for i in range(0, len(params), 100):
            c.log_batch(orphan, params=[Param(k, v) for k, v in params[i:i + 100]])
        c.log_artifact(orphan, c.download_artifacts(source.info.run_id, "model.pt", str(tmp_path)))
        c.set_terminated(orphan)
        said = []
        from trainables.model_export import classifier_for_mlflow
        data = SimpleNamespace(train_images=torch.zeros(2, 28, 28, dtype=torch.uint8), class_names=tuple("0123456789"))
        run_contents.log_missing_models(record.uri, record.experiment.experiment_id,
                                        [c.get_run(orphan), c.get_run(source.info.run_id)], classifier_for_mlflow,
                                        data, said.append)
        assert said == ["logging the models of 1 replicate runs a stopped driver left without one"], said
        assert len(c.get_run(orphan).outputs.model_outputs) == 1
        assert len(c.get_run(source.info.run_id).outputs.model_outputs) == 1
    finally:
        c.delete_run(orphan)
