"""The Ray Tune function trainable: a thin wrapper around the plain trainables.

Ray only orchestrates: the wrapper strips the protocol keys (arm, stage, phase, artifact
references) from the config, materialises pretrained weights the driver shipped through the
object store, resumes from Tune's checkpoint, and turns each epoch's report into
``tune.report`` with the checkpoint the trainable just wrote.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Mapping

# Keys the protocol adds to a trial config; everything else is the trainable's own config.
META_KEYS = ("arm", "stage", "phase", "trainable", "encoder_artifact", "denoiser_artifact")
# Where each artifact reference lands in the trainable's config.
ARTIFACT_TARGETS = {"encoder_artifact": ("encoder_checkpoint", "encoder.pt"),
                    "denoiser_artifact": ("denoiser_checkpoint", "autoencoder.pt")}


def split_config(config: Mapping[str, Any]) -> tuple[dict, dict]:
    meta = {k: config[k] for k in META_KEYS if k in config}
    own = {k: v for k, v in config.items() if k not in META_KEYS}
    return meta, own


def _trainable(name: str):
    if name == "autoencoder":
        from trainables.autoencoder import train_autoencoder
        return train_autoencoder
    if name == "classifier":
        from trainables.classifier import train_classifier
        return train_classifier
    raise ValueError(f"unknown trainable {name!r}; known: autoencoder, classifier")


def _is_divergence(error: BaseException) -> bool:
    return type(error).__name__ == "TrainingDiverged"


def run_trial(config: dict, *, datasets: Mapping[str, Any], artifacts: Mapping[str, bytes],
              gpu_fraction: float = 0.0) -> None:
    """Entry point Tune calls in the trial's worker process."""
    import ray
    import torch
    from ray import tune

    meta, own = split_config(config)
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    if torch.cuda.is_available() and 0 < gpu_fraction < 1:
        # Fractional GPUs are admission control only: cap our allocator below our share so
        # co-tenant trials (and their CUDA contexts) fit. The context itself is not counted.
        torch.cuda.set_per_process_memory_fraction(max(0.05, gpu_fraction * 0.9))

    with tempfile.TemporaryDirectory(prefix="study-artifacts-") as scratch, contextlib.ExitStack() as stack:
        for ref_key, (config_key, filename) in ARTIFACT_TARGETS.items():
            ref = meta.get(ref_key)
            if ref:
                if ref not in artifacts:
                    raise RuntimeError(f"artifact {ref!r} was not shipped with the trial")
                path = os.path.join(scratch, ref.replace("/", "_") + "-" + filename)
                with open(path, "wb") as f:
                    f.write(artifacts[ref])
                own[config_key] = path

        checkpoint = tune.get_checkpoint()
        resume_from = stack.enter_context(checkpoint.as_directory()) if checkpoint else None
        last: dict[str, float] = {}
        node_id = ray.get_runtime_context().get_node_id()   # which node ran it (multi-node runs)

        def reporter(metrics: Mapping[str, float], checkpoint_dir: str) -> None:
            last.clear()
            last.update(metrics)
            tune.report({**metrics, "node_id": node_id},
                        checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        train = _trainable(meta.get("trainable", "classifier"))
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
