"""Private Ray clusters for tests: processes we start, own and stop by process id.

Each cluster is started with ``--node-ip-address 127.0.0.1``, its own free ports (no Ray
default port is used), its own short temp dir and an explicit ``RAY_AUTH_MODE``. It can
therefore run next to other clusters on a shared host. It never needs ``ray stop``, which
kills every Ray process on the machine, other people's clusters included.

    from raycluster import RayHead, submit_job, wait_job   # tests/ is on sys.path under pytest

    with RayHead(num_cpus=1) as head:                  # `ray start --head --block`, our child
        head.add_worker(num_cpus=1)                    # a second raylet node, also our child
        ray.init(address=head.address)
        ...
        ray.shutdown()
    # stop(): SIGTERM then SIGKILL to each process group, then SIGKILL to any process whose
    # command line names the temp dir or whose environment carries our marker; temp dir removed.

    with RayHead(num_cpus=1, include_dashboard=True, auth="token") as head:
        job_id = submit_job(head, "python -c 'print(1)'", working_dir=tmp_path)
        assert wait_job(head, job_id, timeout=60) == "SUCCEEDED"
        subprocess.run(["ray", "job", "list"], env={**os.environ, **head.env})

Ray 2.60 facts this module relies on (read in the wheel, checked here):
  * Ray reads ``RAY_AUTH_MODE`` once, when ``ray`` is imported (``ray._raylet.Config``).
    An in-process ``ray.init(address=head.address)`` therefore works only with clusters
    whose auth mode equals the test process's own mode at import time. Without
    ``RAY_AUTH_MODE`` that mode is "disabled", and an explicit address never turns token
    auth on. For token clusters, run drivers as subprocesses with ``env={**os.environ,
    **head.env}``. The job helpers below send the token in an explicit header, so they work
    in-process with any cluster.
  * ``ray start`` without ``RAY_AUTH_MODE`` turns token auth on as soon as
    ``~/.ray/auth_token`` exists, which any local ``ray.init()`` writes. So we always set
    the mode explicitly.
  * ``ray start`` writes ``<temp dir>/ray_current_cluster``. A private temp dir keeps
    ``/tmp/ray/ray_current_cluster`` of other users untouched.
  * Job drivers run in their own session (``job_supervisor.py``: ``start_new_session``), so
    a process-group kill misses them. The environment marker below finds them.
  * 127.0.0.1 does not confine Ray. It swaps loopback for the host's IP
    (``resolve_ip_for_localhost``): nodes show up as ``node:<host IP>``. The GCS, raylets
    and agents listen on all interfaces. Only the dashboard honours
    ``--dashboard-host 127.0.0.1``. Other users of the host can reach a cluster's ports;
    use auth="token" when that matters.
  * On SIGTERM, ``ray start --block`` first asks the GCS to drain its node and waits up to
    ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S`` (30 s). We set it to 0; otherwise each stop
    would wait out the drain after the GCS is already gone.
  * Job entrypoints are run by ``/bin/sh``, with the raylet's PATH. The venv's bin dir is
    put first, so ``python`` is this interpreter.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
FAKE_CLUSTER_YAML = HERE / "fake_cluster.yaml"

# The `ray` CLI of the interpreter that runs the tests (the project's venv), not whatever
# `ray` comes first on PATH.
RAY_CLI = str(Path(sys.executable).with_name("ray"))
if not os.path.exists(RAY_CLI):
    RAY_CLI = shutil.which("ray") or "ray"

MiB = 1024 * 1024
# Every process of a harness cluster inherits this variable, set to the cluster's temp dir.
# stop() kills what carries it: job drivers and raylets started by the fake autoscaler
# included.
MARKER_ENV = "RAYCLUSTER_HARNESS_DIR"
# `ray job stop` sends SIGTERM and then SIGKILL after 3 s by default. Tune saves its
# experiment state only on SIGINT, so every job submitted here gets these two variables.
GRACEFUL_STOP_ENV = {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "60"}
# Variables inherited from the calling shell that would point our processes at another
# cluster or another token.
_SCRUBBED_ENV = (
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_TMPDIR",
    "RAY_OVERRIDE_RESOURCES",
    "RAY_FAKE_CLUSTER",
    "AUTOSCALER_UPDATE_INTERVAL_S",
    MARKER_ENV,
)
_TERMINAL_JOB_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}

# Ports this process has handed out, so that two nodes started in one test never get the
# same one (the OS may hand a just-closed port out again).
_handed_out: set[int] = set()

# Started next to every head, in its own session: if the test process dies without calling
# stop() (SIGKILL, a crash in Ray's C++ core), it kills what is left of the cluster and
# removes the temp dir. stop() ends it first.
_WATCHDOG = """
import os, shutil, sys, time
sys.path.insert(0, sys.argv[3])
from raycluster import kill_processes_referencing
parent, temp_dir = int(sys.argv[1]), sys.argv[2]
while os.path.isdir(temp_dir):
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        kill_processes_referencing(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        break
    time.sleep(1)
"""


# ----------------------------------------------------------------------------- ports


def _can_bind(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now and that this process has not handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


def free_port_range(n: int = 100) -> tuple[int, int]:
    """(first, last) of ``n`` consecutive free ports below the OS's ephemeral range.

    Ports the OS picks for ``bind(0)`` (``free_port``, Ray's own random ports) come from the
    ephemeral range, so they can never fall into a range chosen here.
    """
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 20000, max(ephemeral_low, 20000 + 2 * n)
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(low, high - n)
        ports = range(first, first + n)
        if not _handed_out.isdisjoint(ports):
            continue
        if all(_can_bind(p) for p in ports):
            _handed_out.update(ports)
            return first, first + n - 1
    raise RuntimeError(f"no range of {n} free ports found in [{low}, {high})")


def _node_ports(n_worker_ports: int) -> dict[str, int]:
    """The ports every raylet node needs (head and worker alike)."""
    first, last = free_port_range(n_worker_ports)
    return {
        "node-manager-port": free_port(),
        "object-manager-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "metrics-export-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "min-worker-port": first,
        "max-worker-port": last,
    }


# ----------------------------------------------------------------------------- processes


class RayNode:
    """One ``ray start ... --block`` process (a head or a worker node) and its ports.

    The process leads its own session (``start_new_session=True``), so its process group
    holds the GCS, raylet, dashboard and the workers they fork. We can signal that group as
    a whole.
    """

    def __init__(self, name: str, cmd: list[str], env: Mapping[str, str], log_path: Path,
                 ports: Mapping[str, int]):
        self.name = name
        self.cmd = cmd
        self.ports = dict(ports)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=dict(env), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no log>"
        return "\n".join(lines[-n:])

    def wait_started(self, deadline: float) -> None:
        """Wait for "Ray runtime started." from ``ray start``; raise on exit or timeout."""
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: `ray start` exited with {self.proc.returncode}"
                                   f"\n{self.log_tail()}")
            try:
                if "Ray runtime started" in self.log_path.read_text(errors="replace"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: not started in time\n{self.log_tail()}")
            time.sleep(0.1)

    def terminate(self, grace: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds, then reap.

        The group is signalled only while its leader (our child) is not yet reaped: until
        then its pid, and so the group id, cannot belong to anyone else. Members that outlive
        the leader are left to ``kill_processes_referencing``, which checks identity.
        """
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            _wait_group_gone(self.pid, timeout=grace)  # only probes (signal 0)
        self._log.close()


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def processes_referencing(temp_dir: str | os.PathLike) -> dict[int, str]:
    """pid -> command line of every live process of ours that belongs to ``temp_dir``.

    A process belongs to it when its command line names the directory (GCS, raylet,
    dashboard, agents and workers all take ``--temp-dir`` or ``--session-dir``), or when
    its environment carries ``MARKER_ENV=temp_dir``. The marker catches job drivers, which
    run in their own session and have no such argument. Only /proc is read. Processes of
    other users cannot be read and are never listed.
    """
    temp_dir = os.fspath(temp_dir).rstrip("/")
    in_cmdline = re.compile(re.escape(temp_dir.encode()) + rb"(?=/|\x00|$|\s|['\"])")
    marker = f"{MARKER_ENV}={temp_dir}".encode()
    skip = {os.getpid()}
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        hit = bool(in_cmdline.search(cmdline))
        if not hit:
            try:
                hit = marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\x00")
            except OSError:
                hit = False
        if hit and not _is_zombie(pid):
            found[pid] = cmdline.replace(b"\x00", b" ").decode(errors="replace").strip()
    return found


def kill_processes_referencing(temp_dir: str | os.PathLike, timeout: float = 5.0) -> list[str]:
    """SIGKILL every process ``processes_referencing(temp_dir)`` lists; wait until gone.

    Returns the command lines that were killed (empty when nothing was left).
    """
    victims = processes_referencing(temp_dir)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(not _is_zombie(pid) for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(victims.values())


# ----------------------------------------------------------------------------- cluster


class RayHead:
    """A Ray head node (``ray start --head --block``) run as our child process.

    Args:
        num_cpus, num_gpus, resources: what the head advertises (GPUs may be logical).
        auth: "disabled" or "token". It is exported as ``RAY_AUTH_MODE`` to the cluster and
            in ``.env``, never left to Ray's default.
        token: the token for auth="token" (``RAY_AUTH_TOKEN``); a random one by default.
        include_dashboard: start the dashboard (job API), bound to 127.0.0.1. Needed by
            ``submit_job`` and ``ray job ...``.
        autoscaling_config: a path to a fake-autoscaler config (``FAKE_CLUSTER_YAML``), or
            a dict. The harness writes a copy into the temp dir with
            ``provider.gcs_address`` set to this head and the head type's CPU/GPU set to
            ``num_cpus``/``num_gpus``. It then starts the head with ``RAY_FAKE_CLUSTER=1``
            and ``AUTOSCALER_UPDATE_INTERVAL_S=1``.
        object_store_memory: bytes per node (Ray's minimum is 75 MiB).
        env: extra environment variables for the Ray processes (e.g. ``RAY_*`` settings).
        start_timeout: seconds allowed for each ``ray start`` until it answers.

    Attributes (valid after ``start()``):
        address: "127.0.0.1:<gcs port>", for ``ray.init(address=...)``.
        dashboard_url: "http://127.0.0.1:<dashboard port>", or None without dashboard.
        env: what a client process needs: ``RAY_ADDRESS``, ``RAY_AUTH_MODE``,
            ``RAY_AUTH_TOKEN`` (token auth only), ``RAY_API_SERVER_ADDRESS`` (with
            dashboard; ``ray job`` CLI) and ``RAY_TMPDIR`` (the private temp dir, so
            client-side Ray files stay in it too).
        auth_headers: ``{"Authorization": "Bearer <token>"}`` with token auth, else {}.
        temp_dir: the private temp dir (short: Ray's unix sockets live below it).
        nodes: the RayNode processes, head first.
    """

    def __init__(self, num_cpus: int = 1, num_gpus: int = 0,
                 resources: Mapping[str, float] | None = None, *,
                 auth: str = "disabled", token: str | None = None,
                 include_dashboard: bool = False,
                 autoscaling_config: str | os.PathLike | Mapping[str, Any] | None = None,
                 object_store_memory: int = 100 * MiB,
                 env: Mapping[str, str] | None = None,
                 start_timeout: float = 20.0):
        if auth not in ("disabled", "token"):
            raise ValueError(f"auth must be 'disabled' or 'token', not {auth!r}")
        if token is not None and auth != "token":
            raise ValueError("a token needs auth='token'")
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.resources = dict(resources or {})
        self.auth = auth
        self.token = (token or os.urandom(32).hex()) if auth == "token" else None
        self.include_dashboard = include_dashboard
        self.autoscaling_config = autoscaling_config
        self.object_store_memory = object_store_memory
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.temp_dir: str | None = None
        self.nodes: list[RayNode] = []
        self._watchdog: subprocess.Popen | None = None
        self.port: int | None = None
        self.dashboard_port: int | None = None
        self.ray_client_server_port: int | None = None

    # -- addresses and environments

    @property
    def address(self) -> str:
        self._require_started()
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str | None:
        self._require_started()
        return f"http://127.0.0.1:{self.dashboard_port}" if self.include_dashboard else None

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def env(self) -> dict[str, str]:
        self._require_started()
        env = {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": self.auth,
               "RAY_TMPDIR": self.temp_dir}
        if self.token:
            env["RAY_AUTH_TOKEN"] = self.token
        if self.include_dashboard:
            env["RAY_API_SERVER_ADDRESS"] = self.dashboard_url
        return env

    def _process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(RAY_AUTH_MODE=self.auth, RAY_TMPDIR=self.temp_dir,
                   RAY_USAGE_STATS_ENABLED="0",
                   # Ray 2.60: on SIGTERM `ray start --block` first asks the GCS to drain
                   # its node and waits up to 30 s. With the whole process group (GCS
                   # included) signalled at once that wait runs out; 0 = tear down now.
                   RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        env[MARKER_ENV] = self.temp_dir
        # Job entrypoints run through /bin/sh: `python` there must be this interpreter (the
        # venv's), even when the tests were started without activating the venv.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if self.token:
            env["RAY_AUTH_TOKEN"] = self.token
        if self.autoscaling_config is not None:
            env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
        env.update(self.extra_env)
        return env

    def _require_started(self) -> None:
        if self.port is None:
            raise RuntimeError("RayHead is not started")

    # -- life cycle

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> RayHead:
        if self.nodes:
            raise RuntimeError("already started")
        # mkdtemp gives /tmp/rt + 8 characters: short enough for the unix socket paths Ray
        # puts under <temp>/session_<date>_<pid>/sockets/ (the limit is 107 bytes).
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), self.temp_dir, str(HERE)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            self.port = free_port()
            self.dashboard_port = free_port()
            self.ray_client_server_port = free_port()
            ports = _node_ports(n_worker_ports=100)
            cmd = [RAY_CLI, "start", "--head", "--block",
                   "--node-ip-address", "127.0.0.1",
                   "--port", str(self.port),
                   "--ray-client-server-port", str(self.ray_client_server_port),
                   "--dashboard-port", str(self.dashboard_port),
                   "--include-dashboard", "true" if self.include_dashboard else "false",
                   "--dashboard-host", "127.0.0.1",
                   *self._node_args(self.num_cpus, self.num_gpus, self.resources,
                                    self.object_store_memory, ports),
                   "--disable-usage-stats"]
            if self.autoscaling_config is not None:
                cmd += ["--autoscaling-config", self._write_autoscaling_config()]
            deadline = time.monotonic() + self.start_timeout
            node = RayNode("head", cmd, self._process_env(),
                           Path(self.temp_dir) / "ray-start-head.log",
                           {"port": self.port, "dashboard-port": self.dashboard_port,
                            "ray-client-server-port": self.ray_client_server_port, **ports})
            self.nodes.append(node)
            node.wait_started(deadline)
            _wait_tcp("127.0.0.1", self.port, deadline, node)
            if self.include_dashboard:
                self._wait_job_api(deadline, node)
        except BaseException:
            self.stop()
            raise
        return self

    def _node_args(self, num_cpus, num_gpus, resources, object_store_memory, ports):
        args = ["--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
                "--object-store-memory", str(object_store_memory),
                "--temp-dir", self.temp_dir]
        if resources:
            args += ["--resources", json.dumps(dict(resources))]
        for flag, port in ports.items():
            args += [f"--{flag}", str(port)]
        return args

    def _write_autoscaling_config(self) -> str:
        src = self.autoscaling_config
        if isinstance(src, Mapping):
            config = json.loads(json.dumps(src))
        else:
            config = yaml.safe_load(Path(src).read_text())
        config.setdefault("provider", {})["gcs_address"] = self.address
        head = config["available_node_types"][config["head_node_type"]]
        head.setdefault("resources", {}).update(CPU=self.num_cpus, GPU=self.num_gpus)
        path = Path(self.temp_dir) / "autoscaling.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return str(path)

    def _wait_job_api(self, deadline: float, node: RayNode) -> None:
        """Until the dashboard answers ``GET /api/jobs/`` (with our token, if any)."""
        def alive():
            if node.proc.poll() is not None:
                raise RuntimeError(f"head exited during start\n{node.log_tail()}")
        try:
            wait_http(f"{self.dashboard_url}/api/jobs/", alive, deadline - time.monotonic(), headers=self.auth_headers)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{node.log_tail()}") from None

    def add_worker(self, num_cpus: int = 1, num_gpus: int = 0,
                   resources: Mapping[str, float] | None = None, *,
                   object_store_memory: int | None = None, wait: bool = True) -> RayNode:
        """Start another raylet node (``ray start --address ... --block``) as our child.

        With ``wait`` (default), returns once the GCS lists it as alive.
        """
        self._require_started()
        ports = _node_ports(n_worker_ports=100)
        cmd = [RAY_CLI, "start", "--address", self.address, "--block",
               "--node-ip-address", "127.0.0.1",
               *self._node_args(num_cpus, num_gpus, resources or {},
                                object_store_memory or self.object_store_memory, ports),
               "--disable-usage-stats"]
        n = len(self.nodes)
        node = RayNode(f"worker{n}", cmd, self._process_env(),
                       Path(self.temp_dir) / f"ray-start-worker{n}.log", ports)
        self.nodes.append(node)
        if wait:
            node.wait_started(time.monotonic() + self.start_timeout)
            self.wait_for_nodes(len(self.nodes), timeout=self.start_timeout)
        return node

    def alive_nodes(self, at_least: int = 0, timeout: float = 0.0) -> int:
        """Number of nodes the GCS lists as alive.

        Polls for up to ``timeout`` seconds until there are ``at_least`` of them. The query
        runs in a child process with this cluster's auth settings, because Ray fixes its
        auth mode per process at import.
        """
        script = (
            "import sys, time\n"
            "from ray._raylet import GcsClient\n"
            "from ray.core.generated.gcs_pb2 import GcsNodeInfo\n"
            "want, deadline = int(sys.argv[2]), time.monotonic() + float(sys.argv[3])\n"
            "client = GcsClient(address=sys.argv[1])\n"
            "while True:\n"
            "    nodes = client.get_all_node_info(timeout=5).values()\n"
            "    alive = sum(n.state == GcsNodeInfo.ALIVE for n in nodes)\n"
            "    if alive >= want or time.monotonic() > deadline:\n"
            "        print(alive); break\n"
            "    time.sleep(0.2)\n")
        out = subprocess.run([sys.executable, "-c", script, self.address, str(at_least),
                              str(timeout)], env={**self._process_env(), **self.env},
                             capture_output=True, text=True, timeout=timeout + 30)
        if out.returncode != 0:
            raise RuntimeError(f"GCS query failed: {out.stderr[-2000:]}")
        return int(out.stdout.split()[-1])

    def wait_for_nodes(self, n: int, timeout: float = 20.0) -> None:
        alive = self.alive_nodes(at_least=n, timeout=timeout)
        if alive < n:
            tails = "\n".join(f"--- {nd.name}\n{nd.log_tail(15)}" for nd in self.nodes)
            raise TimeoutError(f"{alive} of {n} nodes alive after {timeout} s\n{tails}")

    def leftover_processes(self) -> dict[int, str]:
        """Live processes that still belong to this cluster (empty after a clean stop)."""
        return processes_referencing(self.temp_dir) if self.temp_dir else {}

    def stop(self, grace: float = 10.0) -> list[str]:
        """Stop every node we started, kill leftovers, remove the temp dir. Idempotent.

        Returns the command lines of leftovers that needed the final /proc sweep. A non-empty
        list is not an error, but it shows which Ray processes survived their group's
        SIGTERM.
        """
        if self.temp_dir is None:
            return []
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        _shutdown_driver_of(self.address if self.port else None)
        for node in reversed(self.nodes):  # workers first: they outlive a dead GCS poorly
            node.terminate(grace)
        killed = kill_processes_referencing(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.nodes = []
        self.temp_dir = None
        self.port = None
        return killed


def _shutdown_driver_of(address: str | None) -> None:
    """``ray.shutdown()`` when this process is a driver connected to ``address``.

    Compares ports only: Ray reports the GCS under the host's IP, not the 127.0.0.1 we gave.
    """
    if address is None or "ray" not in sys.modules:
        return
    import ray

    if not ray.is_initialized():
        return
    try:
        connected = ray.get_runtime_context().gcs_address
    except Exception:  # a half-dead connection: shut it down anyway
        connected = address
    if connected.rsplit(":", 1)[-1] == address.rsplit(":", 1)[-1]:
        ray.shutdown()


def _wait_tcp(host: str, port: int, deadline: float, node: RayNode) -> None:
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if node.proc.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} does not answer\n{node.log_tail()}")
            time.sleep(0.1)


def wait_http(url: str, alive: Callable[[], None], timeout: float, *,
              headers: Mapping[str, str] | None = None) -> None:
    """Until ``url`` answers 200; ``alive()`` raises once the process that should serve it is
    gone; TimeoutError (with the last answer) after ``timeout`` seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        alive()
        try:
            status, _ = http_request(url, headers=headers, timeout=2)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in time ({last})")


def http_request(url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
                 timeout: float = 10.0) -> tuple[int, str]:
    """(status, body) of a plain HTTP request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


# ----------------------------------------------------------------------------- jobs


def job_client(head: RayHead):
    """A ``JobSubmissionClient`` for ``head`` that sends the token itself.

    Ray adds no header of its own when one is given, so this works whatever auth mode the
    calling process has.
    """
    from ray.job_submission import JobSubmissionClient

    if not head.include_dashboard:
        raise RuntimeError("jobs need RayHead(include_dashboard=True)")
    return JobSubmissionClient(head.dashboard_url, headers=head.auth_headers)


def submit_job(head: RayHead, entrypoint: str | Sequence[str],
               working_dir: str | os.PathLike | None = None,
               env_vars: Mapping[str, str] | None = None, *,
               runtime_env: Mapping[str, Any] | None = None,
               submission_id: str | None = None,
               entrypoint_num_cpus: float | None = None,
               timeout: float = 30.0) -> str:
    """Submit a job without waiting for it; returns its submission id.

    ``entrypoint`` is a shell command string, or an argv list (quoted with ``shlex.join``).
    The runtime_env always has ``env_vars`` RAY_JOB_STOP_SIGNAL=SIGINT and
    RAY_JOB_STOP_WAIT_TIME_S=60, so ``stop_job`` lets Tune save its state. ``env_vars`` may
    override them. Retries while the head's agent is not registered yet ("No available
    agent"), for up to ``timeout`` seconds.
    """
    if not isinstance(entrypoint, str):
        entrypoint = shlex.join(entrypoint)
    env = dict(runtime_env or {})
    env["env_vars"] = {**GRACEFUL_STOP_ENV, **env.get("env_vars", {}), **(env_vars or {})}
    if working_dir is not None:
        env["working_dir"] = os.fspath(working_dir)
    client = job_client(head)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=env,
                                     submission_id=submission_id,
                                     entrypoint_num_cpus=entrypoint_num_cpus)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def job_status(head: RayHead, job_id: str) -> str:
    return str(job_client(head).get_job_status(job_id).value)


def job_logs(head: RayHead, job_id: str) -> str:
    return job_client(head).get_job_logs(job_id)


def wait_job(head: RayHead, job_id: str, timeout: float = 120.0, poll: float = 0.5) -> str:
    """Wait until the job ends; returns "SUCCEEDED", "FAILED" or "STOPPED".

    Raises TimeoutError, with the job's log tail, if it is still running after ``timeout``.
    """
    client = job_client(head)
    deadline = time.monotonic() + timeout
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in _TERMINAL_JOB_STATES:
            return status
        if time.monotonic() > deadline:
            logs = client.get_job_logs(job_id)
            raise TimeoutError(f"job {job_id} still {status} after {timeout} s\n{logs[-3000:]}")
        time.sleep(poll)


def stop_job(head: RayHead, job_id: str, wait: bool = True, timeout: float = 90.0) -> str:
    """Ask the job to stop (SIGINT with our runtime_env); returns its final or current status."""
    client = job_client(head)
    client.stop_job(job_id)
    return wait_job(head, job_id, timeout=timeout) if wait else job_status(head, job_id)
