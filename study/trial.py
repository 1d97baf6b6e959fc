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
import json
import math
import numbers
import os
import sys
import tempfile
import traceback
from typing import Any, Callable, Mapping

# Keys the protocol adds to every trial config; an arm's artifact references (``Use.slot``:
# "<into minus _checkpoint>_artifact" = "<upstream key>/<seed>/<file>") come on top.
META_KEYS = ("arm", "stage", "phase", "trainable", "tuning")


def split_config(config: Mapping[str, Any], meta_keys=META_KEYS) -> tuple[dict, dict]:
    meta = {k: config[k] for k in meta_keys if k in config}
    own = {k: v for k, v in config.items() if k not in meta_keys}
    return meta, own


class NonFiniteMetric(ArithmeticError):
    """A report held NaN or an infinity: the configuration diverged (study.trial reports it as
    a failed trial before Tune, Optuna or ASHA see the value)."""


def _is_divergence(error: BaseException) -> bool:
    """Whether `error` means "this configuration diverged" (a failed trial, not a broken
    worker): trainables.common.TrainingDiverged, which a user's trainable imports too,
    FloatingPointError, or a non-finite reported metric. Imported here: the worker has torch
    loaded by now, the driver need not."""
    from trainables.common import TrainingDiverged

    return isinstance(error, (TrainingDiverged, FloatingPointError, NonFiniteMetric))


def failed(result: Mapping[str, Any]) -> bool:
    """Whether a trial's (last) result says it failed: diverged, or its own code raised."""
    return bool(result.get("diverged") or result.get("trainable_error"))


def non_finite(report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a (normalized) report that are NaN or infinite."""
    return {k: v for k, v in report.items() if isinstance(v, float) and not math.isfinite(v)}


def where_in_code(error: BaseException) -> tuple[str, int, str]:
    """(file, line, function) of the frame that raised ``error`` in the trainable's code: the
    innermost frame outside installed packages and this wrapper (else the innermost frame)."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if f.filename != __file__ and "site-packages" not in f.filename
           and "dist-packages" not in f.filename and not f.filename.startswith("<")]
    frame = (own or frames or [None])[-1]
    return (frame.filename, frame.lineno or 0, frame.name) if frame else ("?", 0, "?")


def error_report(error: BaseException, epoch: float) -> dict[str, Any]:
    """The last report of a trial whose own code raised: what the driver needs to stop the phase
    on a repeated error and to print where it came from (no retry: it would fail the same way)."""
    file, line, function = where_in_code(error)
    frames = traceback.format_exception(type(error), error, error.__traceback__)
    return {"trainable_error": 1.0, "final": 1.0, "epoch": epoch,
            "failure_reason": f"{type(error).__name__}: {error}"[:2000],
            "error_where": json.dumps([file, line, function]),
            "error_traceback": "".join(frames)[-6000:]}


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
    function; ``feeds``: an artifact reference's slot -> the config key that gets the local path."""
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
        for slot, config_key in feeds.items():
            ref = meta.get(slot)
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

        def reporter(metrics: Mapping[str, Any], checkpoint_dir: str) -> None:
            report = normalize(metrics, own.get("epochs"), int(last.get("epoch", 0)) + 1)
            bad = non_finite(report)
            if bad:
                raise NonFiniteMetric(f"epoch {report['epoch']:g} reported " + ", ".join(
                    f"{k} = {v}" for k, v in sorted(bad.items())))
            last.clear()
            last.update(report)
            try:
                tune.report({**to_tune(report), "node_id": node_id},
                            checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
            except BaseException as error:      # Tune's own failure: infrastructure, never the trainable's
                with contextlib.suppress(AttributeError, TypeError):
                    error.study_infrastructure = True
                raise

        train = trainables[meta["trainable"]]
        try:
            train(own, reporter, dataset=datasets.get(own.get("dataset")), resume_from=resume_from)
        except Exception as error:
            if getattr(error, "study_infrastructure", False):
                raise          # Tune retries from the last checkpoint (lost worker, killed process, ...)
            epoch = float(last.get("epoch", 0.0)) + 1
            if _is_divergence(error):
                # A diverged configuration fails the same way on every retry: record it as a
                # failed trial (the callback marks the MLflow run FAILED with this reason) and
                # leave the selection metric out, so Optuna and ASHA treat it as having no result.
                tune.report({"diverged": 1.0, "failure_reason": str(error), "final": 1.0, "epoch": epoch})
                return
            # The trainable's own code raised: a bug, which a retry repeats. One failed trial,
            # with where it happened; the driver stops the phase when the same error repeats.
            traceback.print_exc(file=sys.stderr)           # the trial's log file keeps it whole
            tune.report(error_report(error, epoch))


def to_tune(report: Mapping[str, Any]) -> dict[str, Any]:
    """A report as Tune gets it: numbers as they are; the trainable's strings (``"precision":
    "bf16"``) together as JSON under ``run_tags``, which the MLflow logger turns into run tags."""
    strings = {k: v for k, v in report.items() if isinstance(v, str)}
    out = {k: v for k, v in report.items() if k not in strings}
    if strings:
        out["run_tags"] = json.dumps(strings, sort_keys=True)
    return out
