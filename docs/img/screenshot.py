"""Screenshot of `mlflow ui` on a study's runs table (docs/img/mlflow-runs-table.png).

    apt-get install -y chromium
    .venv/bin/python -m study.run ablation_pretraining --budget smoke --results-dir /tmp/shot
    .venv/bin/python docs/img/screenshot.py sqlite:////tmp/shot/mlflow.db ablation_pretraining docs/img/mlflow-runs-table.png

Starts `mlflow ui` on a free port of 127.0.0.1, stores the view (the classify/replicate runs,
grouped by arm, with the Dataset, Models, arm, seed and test/acc columns) as an MLflow shared
view (the experiment tag ``mlflow.sharedViewState.<key>`` that the UI's "share view" writes),
and takes the picture with headless Chromium in a fresh profile; the server is stopped by its
process id. ``?workflowType=machine_learning`` in the URL: MLflow 3.17's UI picks the view
(GenAI or model training) from a global switch, default GenAI, not from the experiment's
``mlflow.experimentKind`` tag.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARE_KEY = "study-replicates"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(uri: str, study: str, out: str) -> None:
    from study import tracking
    c = tracking.client(uri)
    experiment = c.get_experiment_by_name(study)
    if experiment is None:
        raise SystemExit(f"no experiment {study!r} in {uri}")
    where = "tags.stage = 'classify' and tags.phase = 'replicate'"
    arms = sorted({r.data.tags["arm"] for r in c.search_runs([experiment.experiment_id], where, max_results=1000)})
    view = {"searchFilter": where,
            "selectedColumns": ["attributes.`Dataset`", "attributes.`Models`", "tags.`arm`", "tags.`seed`",
                                "metrics.`test/acc`"],
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "arm"}]},
            "groupsExpanded": {f"tag.arm.{arm}": True for arm in arms}}
    c.set_experiment_tag(experiment.experiment_id, f"mlflow.sharedViewState.{SHARE_KEY}", json.dumps(view))

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        url = (f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs"
               f"?workflowType=machine_learning&viewStateShareKey={SHARE_KEY}")
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run",
                            f"--user-data-dir={profile}", f"--screenshot={os.path.abspath(out)}",
                            "--window-size=1600,1000", "--virtual-time-budget=20000", url],
                           check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"{out}: {url}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
