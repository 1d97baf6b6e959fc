"""The Ray Tune function trainable: a thin wrapper around any trainable that keeps the
trainable protocol (docs/writing-a-study.md, "The trainable"):

    fn(config: dict, report, *, dataset=None, resume_from=None)

Ray only orchestrates: the wrapper strips the protocol keys (arm, stage, phase, trainable,
artifact references) from the config, materialises the upstream artifacts the driver shipped
through the object store, resumes from Tune's checkpoint, and turns each report into
``tune.report`` with the checkpoint directory the trainable just wrote.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import tempfile
from typing import Any, Callable, Mapping

# Keys the protocol adds to every trial config; an arm's artifact references (``Use.meta_key``:
# "<into minus _checkpoint>_artifact" = "<upstream key>/<seed>/<file>") come on top.
META_KEYS = ("arm", "stage", "phase", "trainable")


def split_config(config: Mapping[str, Any], meta_keys=META_KEYS) -> tuple[dict, dict]:
    meta = {k: config[k] for k in meta_keys if k in config}
    own = {k: v for k, v in config.items() if k not in meta_keys}
    return meta, own


def _is_divergence(error: BaseException) -> bool:
    """Whether `error` means "this configuration diverged" (a failed trial, not a broken
    worker): trainables.common.TrainingDiverged, which a user's trainable imports too, or
    FloatingPointError. Imported here: the worker has torch loaded by now, the driver need not."""
    from trainables.common import TrainingDiverged

    return isinstance(error, (TrainingDiverged, FloatingPointError))


def normalize(metrics: Mapping[str, Any], epochs: Any, reports: int) -> dict[str, Any]:
    """A report as the runner reads it: numbers as floats, ``epoch`` (the count of reports when
    the trainable gives none), ``final`` = 1 on the report of the last epoch of the budget."""
    out = {k: float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else v for k, v in metrics.items()}
    out.setdefault("epoch", float(reports))
    if isinstance(epochs, numbers.Real) and out["epoch"] >= epochs:
        out["final"] = 1.0
    out.setdefault("final", 0.0)
    return out


def run_trial(config: dict, *, datasets: Mapping[str, Any], artifacts: Mapping[str, bytes],
              trainables: Mapping[str, Callable], feeds: Mapping[str, str], gpu_fraction: float = 0.0) -> None:
    """Entry point Tune calls in the trial's worker process. ``trainables``: label ->
    function; ``feeds``: artifact reference key -> the config key that gets the local path."""
    import ray
    import torch
    from ray import tune

    meta, own = split_config(config, META_KEYS + tuple(feeds))
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    if torch.cuda.is_available() and 0 < gpu_fraction < 1:
        # Fractional GPUs are admission control only: cap our allocator below our share so
        # co-tenant trials (and their CUDA contexts) fit. The context itself is not counted.
        torch.cuda.set_per_process_memory_fraction(max(0.05, gpu_fraction * 0.9))

    with tempfile.TemporaryDirectory(prefix="study-artifacts-") as scratch, contextlib.ExitStack() as stack:
        for ref_key, config_key in feeds.items():
            ref = meta.get(ref_key)
            if ref:
                if ref not in artifacts:
                    raise RuntimeError(f"artifact {ref!r} was not shipped with the trial")
                path = os.path.join(scratch, ref.replace("/", "_"))
                with open(path, "wb") as f:
                    f.write(artifacts[ref])
                own[config_key] = path

        checkpoint = tune.get_checkpoint()
        resume_from = stack.enter_context(checkpoint.as_directory()) if checkpoint else None
        last: dict[str, float] = {}
        node_id = ray.get_runtime_context().get_node_id()   # which node ran it (multi-node runs)

        def reporter(metrics: Mapping[str, float], checkpoint_dir: str) -> None:
            report = normalize(metrics, own.get("epochs"), int(last.get("epoch", 0)) + 1)
            last.clear()
            last.update(report)
            tune.report({**report, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        train = trainables[meta["trainable"]]
        try:
            train(own, reporter, dataset=datasets.get(own.get("dataset")), resume_from=resume_from)
        except Exception as error:
            if not _is_divergence(error):
                raise          # infrastructure errors: Tune retries from the last checkpoint
            # A diverged configuration fails the same way on every retry: record it as a
            # failed trial (the callback marks the MLflow run FAILED with this reason) and
            # leave the selection metric out, so Optuna and ASHA treat it as having no result.
            tune.report({"diverged": 1.0, "failure_reason": str(error), "final": 1.0,
                         "epoch": float(last.get("epoch", 0.0)) + 1})


def logs_mlflow_models(trainable: Callable) -> bool:
    """Whether replicate runs log an MLflow model: only for our classifier, whose architecture
    ``analysis.artifacts.load_classifier`` rebuilds from the config. Other trainables' weights
    are the run's ``model.pt`` artifact when their final checkpoint has one."""
    return getattr(trainable, "__module__", None) == "trainables.classifier" and \
        getattr(trainable, "__name__", None) == "train_classifier"
