"""MLflow records of a study: one experiment per study, one parent run per invocation, one
child run per Tune trial (written by ``study.trial_logger``), found again by tags (never by
parsing names). Here: the store, the parent run, provenance and secrets.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from study import run_contents
from study.records import STUDY_DEFINITION_FILE, Outcome, RunKind, StudyStatus, Tag, prepare_store, run_filter

# Environment variables whose values must never reach MLflow (tokens, cloud keys, passwords).
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY|API_KEY|AUTH",
                         re.IGNORECASE)
PACKAGES = ("torch", "torchvision", "ray", "optuna", "mlflow", "numpy", "pandas", "scikit-learn", "scipy")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised before any training starts."""


# -- secrets -------------------------------------------------------------------------------
def secret_values() -> list[str]:
    """Values of secret-looking environment variables (at least 6 characters, to avoid
    redacting words like 'token' set to '1')."""
    return [v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6]


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """Removes credentials from ``text``: URL user-info and any secret env var's value."""
    text = re.sub(r"(?<=://)[^/@\s:]+(:[^/@\s]*)?@", "***@", str(text))
    for secret in secrets if secrets is not None else secret_values():
        text = text.replace(secret, "***")
    return text


# -- provenance (the git state: study.records) ---------------------------------------------
def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def hardware() -> str:
    import torch
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}; {cpu}"
    return cpu


def config_hash(config: Mapping[str, Any]) -> str:
    blob = json.dumps({k: config[k] for k in sorted(config)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: redact(json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:6000]
            for k, v in config.items()}


# -- store ---------------------------------------------------------------------------------
def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast (before any training) when the tracking store cannot be reached."""
    parsed = urllib.parse.urlparse(tracking_uri)
    if parsed.scheme in ("http", "https"):
        url = tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status != 200:
                    raise TrackingError(f"MLflow server {redact(tracking_uri)} answered {response.status}")
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(
                f"MLflow tracking server {redact(tracking_uri)} is unreachable ({e}). Start it, fix "
                f"--tracking-uri / MLFLOW_TRACKING_URI, or leave both unset for the local SQLite store."
            ) from None
    elif parsed.scheme == "sqlite":
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_absolute():
            raise TrackingError(f"use an absolute SQLite path (sqlite:////abs/path.db), not {tracking_uri}: "
                                "Ray trials change directory")
        db.parent.mkdir(parents=True, exist_ok=True)
    elif parsed.scheme not in ("postgresql", "mysql", "mssql", "databricks", "file", ""):
        raise TrackingError(f"unsupported tracking URI scheme {parsed.scheme!r} in {redact(tracking_uri)}")


def client(tracking_uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=tracking_uri)


def existing_experiment(tracking_uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store, or None; creates neither (a SQLite file that
    does not exist is left so)."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).exists():
        return None
    prepare_store(tracking_uri)
    experiment = client(tracking_uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else None


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path | None) -> str:
    prepare_store(tracking_uri)
    c = client(tracking_uri)
    experiment = c.get_experiment_by_name(name)
    if experiment is not None:
        # Experiments of older runs (or inferred by the UI) open on the GenAI overview page.
        kind = experiment.tags.get(run_contents.EXPERIMENT_KIND_TAG, "")
        if kind != run_contents.EXPERIMENT_KIND and (not kind or kind.endswith("inferred") or kind == "no_inferred_type"):
            c.set_experiment_tag(experiment.experiment_id, run_contents.EXPERIMENT_KIND_TAG, run_contents.EXPERIMENT_KIND)
        return experiment.experiment_id
    location = None
    if artifact_root is not None and not tracking_uri.startswith(("http://", "https://")):
        # MLflow would put artifacts in ./mlruns of the current directory: inside a Ray job
        # that is a temporary folder. An absolute location keeps them with the database.
        location = (artifact_root / name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location,
                               tags={run_contents.EXPERIMENT_KIND_TAG: run_contents.EXPERIMENT_KIND})


@dataclass
class ParentRun:
    run_id: str
    tags: dict[str, str]

    @property
    def status(self) -> str:
        return self.tags.get(Tag.STUDY_STATUS, StudyStatus.RUNNING)


def latest_parent(tracking_uri: str, experiment_id: str, budget: str, dataset: str) -> Optional[ParentRun]:
    runs = client(tracking_uri).search_runs(
        [experiment_id],
        filter_string=run_filter({Tag.RUN_KIND: RunKind.STUDY, Tag.BUDGET: budget, Tag.DATASET: dataset}),
        order_by=["attributes.start_time DESC"], max_results=1)
    return ParentRun(runs[0].info.run_id, dict(runs[0].data.tags)) if runs else None


def create_parent(tracking_uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str],
                  params: Mapping[str, Any]) -> ParentRun:
    from mlflow.entities import Param
    c = client(tracking_uri)
    tags = {k: redact(str(v)) for k, v in tags.items()}
    tags = {**tags, Tag.STUDY_STATUS: StudyStatus.RUNNING}
    run = c.create_run(experiment_id, run_name=run_name, tags=tags)
    c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten_params(params).items()])
    return ParentRun(run.info.run_id, tags)


def set_parent_status(tracking_uri: str, parent: ParentRun, study_status: str) -> None:
    """running -> RUNNING; finished -> FINISHED; interrupted/failed -> KILLED/FAILED. Children
    still RUNNING are closed as KILLED (a resume reopens them): none is left RUNNING."""
    c = client(tracking_uri)
    c.set_tag(parent.run_id, Tag.STUDY_STATUS, study_status)
    parent.tags[Tag.STUDY_STATUS] = study_status
    if study_status == StudyStatus.RUNNING:
        c.update_run(parent.run_id, status="RUNNING")
        return
    experiment_id = c.get_run(parent.run_id).info.experiment_id
    for child in c.search_runs([experiment_id], filter_string=run_filter(
            {Tag.PARENT: parent.run_id}, "attributes.status = 'RUNNING'"), max_results=10000):
        c.set_tag(child.info.run_id, Tag.OUTCOME, Outcome.INTERRUPTED)
        c.set_terminated(child.info.run_id, status="KILLED")
    c.set_terminated(parent.run_id, status={StudyStatus.FINISHED: "FINISHED",
                                            StudyStatus.FAILED: "FAILED"}.get(study_status, "KILLED"))


def log_study_definition(tracking_uri: str, parent: ParentRun, definition: Mapping[str, Any]) -> None:
    """The study's definition (factors, arms, contrasts, metric) as the parent run's
    ``study.json``: analysis reads it from MLflow alone, without the code that defined it."""
    log_parent_json(tracking_uri, parent, STUDY_DEFINITION_FILE, definition)


def log_parent_json(tracking_uri: str, parent: ParentRun, name: str, content: Any) -> None:
    """``content`` as the parent run's JSON file ``name`` (replacing an earlier one)."""
    with tempfile.TemporaryDirectory(prefix="study-record-") as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(content, indent=2, sort_keys=False, default=repr))
        client(tracking_uri).log_artifact(parent.run_id, str(path))


def read_study_definition(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """A parent run's ``study.json`` ({} when it has none)."""
    with tempfile.TemporaryDirectory(prefix="study-definition-") as tmp:
        try:
            path = client(tracking_uri).download_artifacts(run_id, STUDY_DEFINITION_FILE, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            return {}
        return json.loads(Path(path).read_text())


def set_parent_tags(tracking_uri: str, parent: ParentRun, tags: Mapping[str, str]) -> None:
    c = client(tracking_uri)
    for k, v in tags.items():
        c.set_tag(parent.run_id, k, v)
        parent.tags[k] = v
