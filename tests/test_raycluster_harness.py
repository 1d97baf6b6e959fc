"""The test harness in tests/raycluster.py: private clusters start, work and leave nothing.

The slow tests start real Ray processes: about 10 s per node on a 2-core host.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import validate_config

from raycluster import (
    FAKE_CLUSTER_YAML,
    MARKER_ENV,
    RAY_CLI,
    RayHead,
    free_port,
    free_port_range,
    http_request,
    job_logs,
    kill_processes_referencing,
    processes_referencing,
    stop_job,
    submit_job,
    wait_job,
)


def ps_lines_naming(temp_dir: str) -> list[str]:
    """What `ps` shows that names ``temp_dir``: the check a person would run by hand."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if temp_dir in line]


def assert_nothing_left(temp_dir: str) -> None:
    assert processes_referencing(temp_dir) == {}
    assert ps_lines_naming(temp_dir) == []
    assert not os.path.exists(temp_dir)


# ----------------------------------------------------------------------------- fast


def test_free_ports_are_distinct_and_bindable():
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    first, last = free_port_range(50)
    assert last - first == 49
    low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert last < low_ephemeral  # never collides with ports the OS picks for bind(0)
    assert ports.isdisjoint(range(first, last + 1))


def test_sweep_kills_only_processes_of_its_own_temp_dir(tmp_path):
    """The /proc sweep must never touch another cluster's processes."""
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    procs = {
        "marker": subprocess.Popen(sleep, env={**os.environ, MARKER_ENV: ours}),
        "cmdline": subprocess.Popen([*sleep, f"--temp-dir={ours}"]),
        "other marker": subprocess.Popen(sleep, env={**os.environ, MARKER_ENV: theirs}),
        "prefix only": subprocess.Popen([*sleep, f"--temp-dir={ours}x"]),
    }
    try:
        time.sleep(0.3)  # until the children have exec'd
        found = processes_referencing(ours)
        assert set(found) == {procs["marker"].pid, procs["cmdline"].pid}
        killed = kill_processes_referencing(ours)
        assert len(killed) == 2
        assert procs["marker"].wait(5) == -signal.SIGKILL
        assert procs["cmdline"].wait(5) == -signal.SIGKILL
        assert procs["other marker"].poll() is None and procs["prefix only"].poll() is None
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_fake_cluster_yaml_passes_rays_schema():
    # prepare_config() cannot run here: for fake_multinode it loads
    # fake_multi_node/example.yaml, which the 2.60 wheel does not ship. The file spells out
    # every field instead, so validate_config() can check it as written.
    config = yaml.safe_load(FAKE_CLUSTER_YAML.read_text())
    validate_config(config)
    assert config["provider"]["type"] == "fake_multinode"
    assert config["available_node_types"][config["head_node_type"]]["resources"]["GPU"] == 0
    worker = config["available_node_types"]["ray.worker.gpu"]
    assert (worker["resources"]["CPU"], worker["resources"]["GPU"]) == (1, 1)
    assert (worker["min_workers"], worker["max_workers"]) == (0, 2)


# ----------------------------------------------------------------------------- slow


# Two-node clusters and the fake autoscaler are exercised with whole studies (and checked to
# leave no process behind) in test_scale_out.py.


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_jobs_with_token_auth_run_stop_gracefully_and_refuse_clients_without_token(tmp_path):
    (tmp_path / "marker.txt").write_text("shipped in working_dir")
    (tmp_path / "wait_for_sigint.py").write_text(
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    print('driver got SIGINT', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGINT, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n")
    with RayHead(num_cpus=1, include_dashboard=True, auth="token") as head:
        temp_dir = head.temp_dir
        assert head.env["RAY_AUTH_MODE"] == "token" and head.env["RAY_AUTH_TOKEN"] == head.token

        job = submit_job(head, ["python", "-c",
                                "import os, ray; ray.init(); print(ray.cluster_resources()); "
                                "print(open('marker.txt').read()); "
                                "print('stop signal', os.environ['RAY_JOB_STOP_SIGNAL'])"],
                         working_dir=tmp_path)
        assert wait_job(head, job, timeout=90) == "SUCCEEDED"
        logs = job_logs(head, job)
        assert "'CPU': 1.0" in logs
        assert "shipped in working_dir" in logs
        assert "stop signal SIGINT" in logs

        # `ray job stop` sends SIGINT (our runtime_env), so a Tune driver could save state.
        waiter = submit_job(head, ["python", "wait_for_sigint.py"], working_dir=tmp_path)
        deadline = time.monotonic() + 60
        while "ready" not in job_logs(head, waiter):
            assert time.monotonic() < deadline, job_logs(head, waiter)
            time.sleep(0.5)
        assert stop_job(head, waiter, timeout=60) == "STOPPED"
        assert "driver got SIGINT" in job_logs(head, waiter)

        # Without the token: the job API answers 401/403, the CLI fails, the GCS refuses.
        assert http_request(f"{head.dashboard_url}/api/jobs/")[0] == 401
        assert http_request(f"{head.dashboard_url}/api/jobs/",
                            headers={"Authorization": "Bearer not-the-token"})[0] in (401, 403)
        no_token = {**os.environ, **head.env, "RAY_AUTH_MODE": "disabled"}
        del no_token["RAY_AUTH_TOKEN"]
        refused = subprocess.run([RAY_CLI, "job", "list"], env=no_token,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert "Authentication" in refused.stdout + refused.stderr
        gcs = subprocess.run([sys.executable, "-c", "from ray._raylet import GcsClient; "
                              f"GcsClient(address='{head.address}')"],
                             env=no_token, capture_output=True, text=True, timeout=60)
        assert gcs.returncode != 0 and "InvalidAuthToken" in gcs.stderr
        # With head.env the same CLI works.
        listed = subprocess.run([RAY_CLI, "job", "list"], env={**os.environ, **head.env},
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert job in listed.stdout

    assert_nothing_left(temp_dir)
