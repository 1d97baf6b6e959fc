"""The MLflow callback without Ray: batched metrics reach the store before Tune snapshots the
experiment, and a driver killed with values still buffered leaves, after the resume, exactly
one value per epoch; new experiments carry the experiment kind; runs carry dataset inputs."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from study import run_contents, tracking, trial_logger

SHA = "ab" * 32


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module (creating one costs seconds); each test has its own trials."""
    tmp_path = tmp_path_factory.mktemp("records")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = tracking.ensure_experiment(uri, "records", tmp_path / "artifacts")
    parent = tracking.create_parent(uri, experiment_id, "p", {"study": "records", "run_kind": "study"}, {})
    return SimpleNamespace(uri=uri, experiment_id=experiment_id, parent=parent, client=tracking.client(uri))


def fake_dataset():
    return SimpleNamespace(name="mnist-5k", sha256=SHA, train_images=torch.zeros(8, 28, 28, dtype=torch.uint8),
                           train_labels=torch.zeros(8, dtype=torch.int64), test_labels=torch.zeros(2, dtype=torch.int64),
                           class_names=tuple(str(i) for i in range(10)))


def make_logger(store, key, **kw):
    logger = trial_logger.MlflowTrialLogger(
        store.uri, store.experiment_id, store.parent.run_id, experiment_key=key,
        base_tags={"study": "records", "stage": "classify", "phase": "tune"},
        tags_for_config=lambda c: {"arm": c["arm"], "seed": str(c["seed"])}, meta_keys=("arm",),
        resources={"cpu": 1.0}, datasets={"mnist-5k": run_contents.dataset_entities(fake_dataset())},
        flush_interval_s=3600.0, **kw)
    logger.setup()
    return logger


def trial():
    return SimpleNamespace(trial_id="t1", config={"arm": "a", "seed": 3, "dataset": "mnist-5k", "label_fraction": 0.1},
                           last_result={}, checkpoint=None, error_file=None)


def report(logger, t, epochs, last):
    for epoch in epochs:
        t.last_result = {"epoch": float(epoch), "train/loss": 1.0 / epoch, "val/acc": 0.5,
                         "final": float(epoch == last), "node_id": "n1", "pid": 7}
        logger.on_trial_result(0, [t], t, t.last_result)


def steps(store, run_id, key="train/loss"):
    return [m.step for m in store.client.get_metric_history(run_id, key)]


def test_new_experiments_open_on_the_training_runs(store):
    tags = store.client.get_experiment(store.experiment_id).tags
    assert tags[run_contents.EXPERIMENT_KIND_TAG] == run_contents.EXPERIMENT_KIND == "custom_model_development"


def test_metrics_are_buffered_and_written_before_tunes_snapshot(store):
    key = "buffered"
    logger, t = make_logger(store, key), trial()
    logger.on_trial_start(0, [t], t)
    run_id = logger.run_id(t)
    report(logger, t, [1, 2, 3], last=5)
    assert steps(store, run_id) == [], "written per result: not batched"
    assert logger.get_state() is None            # Tune calls it while it saves the experiment
    assert steps(store, run_id) == [1, 2, 3]
    assert store.client.get_run(run_id).data.tags["node_id"] == "n1"


@pytest.mark.parametrize("flushed_past_snapshot", [False, True])
def test_a_killed_driver_leaves_one_value_per_epoch_after_the_resume(store, flushed_past_snapshot):
    key = f"killed-{flushed_past_snapshot}"
    logger, t = make_logger(store, key), trial()
    logger.on_trial_start(0, [t], t)
    run_id = logger.run_id(t)
    report(logger, t, [1, 2, 3], last=6)
    logger.get_state()                            # Tune's snapshot: the trial's checkpoint is epoch 3
    report(logger, t, [4, 5], last=6)
    if flushed_past_snapshot:
        logger.flush()                            # the periodic flush wrote 4 and 5 before the kill
    del logger                                    # SIGKILL: whatever was buffered is gone

    resumed, t = make_logger(store, key), trial()      # --resume: the trial restarts from epoch 3
    resumed.on_trial_start(0, [t], t)
    assert resumed.run_id(t) == run_id            # the same run, found by its trial_key
    report(resumed, t, [4, 5, 6], last=6)
    resumed.on_trial_complete(0, [t], t)
    assert steps(store, run_id) == [1, 2, 3, 4, 5, 6]
    assert steps(store, run_id, "val/acc") == [1, 2, 3, 4, 5, 6]
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"


def test_runs_carry_their_dataset_inputs(store):
    key = "inputs"
    logger, t = make_logger(store, key), trial()
    logger.on_trial_start(0, [t], t)
    run = store.client.get_run(logger.run_id(t))
    inputs = {i.dataset.name: {tag.key: tag.value for tag in i.tags} for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"mnist-5k/train", "mnist-5k/validation"}    # no test set in a tune trial
    assert inputs["mnist-5k/train"] == {"mlflow.data.context": "train", "label_fraction": "0.1", "split_seed": "3"}
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {SHA[:36]}


def test_a_dataset_without_a_checksum_is_refused():
    with pytest.raises(ValueError, match="no sha256"):
        run_contents.dataset_entities(SimpleNamespace(**{**vars(fake_dataset()), "sha256": ""}))
