"""The README's command blocks, run as a newcomer runs them: pasted in order into one fresh
shell at the root of a fresh clone.

Which blocks run: the ``<!-- readme-test: ... -->`` marker above each ``bash`` block (the
convention is described and checked in tests/test_readme.py). ``run`` blocks go into one bash,
in README order, so what a block exports, activates or starts is there for the next one. A
``serve`` block is started in the background of that shell and stopped, by its process group,
once its URL answers. Every command must succeed (``set -e -o pipefail``): a failing command
fails the test with the block's name and the shell's output.

What the test changes, and nothing else:
  * the clone: the working tree's files (tracked and untracked-not-ignored) with a ``.git`` of
    their own and ``.venv`` linked to this repo's, in a temp folder; ``results/`` and
    ``reports/`` are therefore the clone's. The folder is the session's smoke folder (conftest.py:
    this test runs first, on an empty ``results/``), so the studies the README runs at smoke are
    the records the smoke tests read afterwards;
  * ports: every port number in a ``--...port N`` flag or after ``127.0.0.1:``/``localhost:``
    is replaced by a free port (the same number always by the same port), and the ports
    ``ray start --head`` would take by default (GCS 6379, dashboard 8265, client server 10001,
    agents 52365, worker ports 10002-19999, ...) are given explicitly: other people's Ray on a
    shared host may hold them;
  * the temp dir and home: ``RAY_TMPDIR`` (Ray's temp dir; also where a block sets it or
    ``--temp-dir``) and ``HOME`` (so ``~/.ray/auth_token`` is a new user's) point into the
    test's temp folder; ``RAY_*``, ``STUDY_*``, ``MLFLOW_*``
    variables and the venv are removed from the environment, as in a fresh terminal;
  * two fake secrets are in the environment of the shell, so of the Ray head and its jobs:
    they must not reach MLflow.

Between blocks the test checks what the block produced (CHECKS below: MLflow records, job
states, report files, processes), keyed by block name; a check whose block has disappeared from
the README fails the test. The README's own stop command (``kill $RAY_HEAD_PID``) must leave no
process behind; whatever is left at the end is killed by process id (never ``ray stop``).
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raycluster import (_WATCHDOG, MARKER_ENV, free_port, free_port_range, http_request,
                        kill_processes_referencing, processes_referencing, wait_http)
from mlflow_runs import tune_trials_per_tuning
from study import tracking
from study.registry import STUDIES
from test_readme import FORBIDDEN, Block, blocks

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SECRETS = {"AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789", "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-987654"}
# Seconds a block may take; the smoke main job takes 1.5 to 4.5 min on 2 busy cores. A head
# that never answers (no token, say) ends the README's wait loop after about 2 min.
TIMEOUTS = {"main-job": 900, "job-resume": 600, "ray-head": 240}
DEFAULT_TIMEOUT = 300
# A shell word: $(...), quoted strings and plain characters.
TEMP_DIR = re.compile(r"(?P<pre>\bRAY_TMPDIR=|--temp-dir[ =])(?P<dir>(?:\$\([^)]*\)|\"[^\"]*\"|'[^']*'|[^\s;&|])+)")
PORT = re.compile(r"(?P<pre>--[\w-]*port[ =]|\b(?:127\.0\.0\.1|localhost):)(?P<port>\d{2,5})\b")
# Ports `ray start --head` takes when not told: fixed defaults, and random ones (None).
RAY_HEAD_PORTS = {"port": 6379, "dashboard-port": 8265, "ray-client-server-port": 10001,
                  "dashboard-agent-listen-port": 52365, "dashboard-agent-grpc-port": None,
                  "runtime-env-agent-port": None, "metrics-export-port": None,
                  "node-manager-port": None, "object-manager-port": None}


# ----------------------------------------------------------------------------- substitution


class Ports:
    """README port -> free port, the same for every mention."""

    def __init__(self):
        self.map: dict[int, int] = {}

    def __getitem__(self, readme_port: int) -> int:
        if readme_port not in self.map:
            self.map[readme_port] = free_port()
        return self.map[readme_port]

    def substitute(self, text: str, ray_tmp: str) -> str:
        text = PORT.sub(lambda m: f"{m['pre']}{self[int(m['port'])]}", text)
        text = TEMP_DIR.sub(lambda m: m["pre"] + ray_tmp, text)
        return self._inject_ray_head_ports(text)

    def _inject_ray_head_ports(self, text: str) -> str:
        m = re.search(r"\bray start --head\b", text)
        if not m:
            return text
        extra = []
        for flag, default in RAY_HEAD_PORTS.items():
            if not re.search(rf"--{flag}\b", text):
                extra.append(f"--{flag} {self[default] if default else free_port()}")
        if "--min-worker-port" not in text:
            first, last = free_port_range(100)
            extra.append(f"--min-worker-port {first} --max-worker-port {last}")
        return text[:m.end()] + " " + " ".join(extra) + text[m.end():]


def _fresh_clone(dest: Path) -> None:
    """The working tree as a fresh clone would have it, plus this repo's .venv, linked. ``dest``
    may exist (the session's smoke folder): the clone's ``.git`` is made beside it, then moved in."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as bare:
        subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(ROOT), bare], check=True)
        dest.mkdir(exist_ok=True)
        shutil.move(Path(bare) / ".git", dest / ".git")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "reset", "-q"], cwd=dest, check=True)
    (dest / ".venv").symlink_to(ROOT / ".venv")


def _venv_is_current() -> bool:
    """scripts/setup.sh's stamp: in the clone it must find the linked .venv up to date, or it
    would reinstall the shared .venv from the temporary clone."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes())
    return (ROOT / ".venv" / f".installed-{digest.hexdigest()[:16]}").exists()


def _fresh_env(home: Path, ray_tmp: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "STUDY_", "MLFLOW_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
           and k not in ("AUTOSCALER_UPDATE_INTERVAL_S", MARKER_ENV)}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != Path(venv_bin).resolve())
    env.update(SECRETS, HOME=str(home), RAY_TMPDIR=ray_tmp, MLFLOW_DISABLE_TELEMETRY="true")
    env[MARKER_ENV] = ray_tmp      # every process started from the shell carries it: found at the end
    return env


# ----------------------------------------------------------------------------- the shell


class Shell:
    """One bash fed one block at a time, like a terminal; its output goes to ``log``.

    Job control is on (``set -m``), as in a terminal: a block's ``cmd &`` gets its own process
    group and does not ignore SIGINT. Each block is ``source``d with stdin from /dev/null.
    """

    def __init__(self, cwd: Path, env: dict[str, str], workdir: Path):
        self.dir, self.log = workdir, workdir / "shell.log"
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.n = 0
        self._send("set -m -e -o pipefail")

    def _send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _file(self, block: Block, text: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{block.name}.sh"
        path.write_text(text + "\n")
        return path

    def _wait_for(self, pattern: str, block: Block, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while (m := re.search(pattern, self.output())) is None:
            if self.proc.poll() is not None:
                pytest.fail(f"README block {block.name!r} (README.md:{block.line}) failed: the shell "
                            f"exited with {self.proc.returncode}\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"README block {block.name!r} still running after {timeout} s\n{self.tail()}")
            time.sleep(0.5)
        return m

    def run(self, block: Block, text: str, timeout: float) -> None:
        path = self._file(block, text)
        self._send(f"source {shlex.quote(str(path))} < /dev/null; echo @@block-{self.n}-done")
        self._wait_for(rf"@@block-{self.n}-done", block, timeout)

    def start(self, block: Block, text: str) -> int:
        """Start the block in the background; returns its process group id."""
        path = self._file(block, text)
        self._send(f"source {shlex.quote(str(path))} < /dev/null & echo @@block-{self.n}-pid $!")
        return int(self._wait_for(rf"@@block-{self.n}-pid (\d+)", block, 30)[1])

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-n:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._out.close()


def _stop_group(pgid: int, grace: float = 15.0) -> None:
    """Ctrl-C to a foreground server, by process group; SIGKILL if it does not go."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


# ----------------------------------------------------------------------------- checks


class Walk:
    """What the checks need to know about the run so far."""

    def __init__(self, clone: Path, home: Path, ray_tmp: str, ports: Ports, shell: Shell):
        self.clone, self.home, self.ray_tmp, self.ports, self.shell = clone, home, ray_tmp, ports, shell
        self.results = clone / "results"
        self.uri = f"sqlite:///{self.results / 'mlflow.db'}"
        self.started = time.time()
        self.dashboard = None         # set by the ray-head check
        self.main_study = None        # the study of the main job
        self.job_study = None         # the study the job blocks run
        self.own_pids = {shell.proc.pid}   # carry the marker but are not Ray's

    def runs(self, study: str, kind: str) -> list:
        c = tracking.client(self.uri)
        experiment = c.get_experiment_by_name(study)
        if experiment is None:
            return []
        return [r for r in c.search_runs([experiment.experiment_id], max_results=10000)
                if r.data.tags.get("run_kind") == kind]

    def jobs(self):
        from ray.job_submission import JobSubmissionClient
        token = (self.home / ".ray" / "auth_token").read_text().strip()
        return JobSubmissionClient(self.dashboard, headers={"Authorization": f"Bearer {token}"})

    def job(self, resumed: bool):
        """The walk-through's job whose entrypoint has (or has not) --resume."""
        found = [j for j in self.jobs().list_jobs() if ("--resume" in j.entrypoint) == resumed]
        assert len(found) == 1, [j.entrypoint for j in self.jobs().list_jobs()]
        return found[0]

    def report(self, study: str) -> Path:
        html = self.clone / "reports" / study / "report.html"
        assert html.exists() and html.stat().st_mtime >= self.started, f"no new {html}"
        return html


def _status(job) -> str:
    return str(getattr(job.status, "value", job.status))


def _study_of(block: Block, command: str) -> str:
    m = re.search(rf"{re.escape(command)} (\w+)", block.text)
    assert m, f"block {block.name!r} does not run `{command} NAME`"
    return m[1]


def check_main_job(w: Walk, block: Block) -> None:
    w.main_study = _study_of(block, "study.run")
    assert [p.data.tags["study_status"] for p in w.runs(w.main_study, "study")] == ["finished"]
    assert all(r.info.status != "RUNNING" for r in w.runs(w.main_study, "trial"))


def check_tour(w: Walk, block: Block) -> None:
    w.report(_study_of(block, "analysis.compare"))


def check_mlflow_ui(w: Walk, block: Block, url: str) -> None:
    """The server answers, and serves the clone's results/mlflow.db (the main job's study)."""
    status, body = http_request(url.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=100")
    assert status == 200, body[:500]
    assert f'"{w.main_study}"' in body, body[:500]


def check_ray_head(w: Walk, block: Block) -> None:
    m = re.search(r"--dashboard-port[ =](\d+)", block.text)
    w.dashboard = f"http://127.0.0.1:{w.ports[int(m[1]) if m else 8265]}"
    assert processes_referencing(w.ray_tmp), "the head does not run in the test's RAY_TMPDIR"
    assert w.jobs().list_jobs() == []


def check_job_submit(w: Walk, block: Block) -> None:
    """Wait, as a user watching `ray job logs -f` would, until a trial has completed."""
    w.job_study = _study_of(block, "study.run")
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if any(r.data.tags.get("outcome") == "completed" for r in w.runs(w.job_study, "trial")):
                break
        except Exception:          # the store is being created
            pass
        assert _status(w.job(resumed=False)) not in ("FAILED", "SUCCEEDED"), w.shell.tail()
        time.sleep(1)
    else:
        pytest.fail(f"no trial completed in 300 s\n{w.jobs().get_job_logs(w.job(False).submission_id)[-3000:]}")


def check_job_stop(w: Walk, block: Block) -> None:
    first = w.job(resumed=False)
    assert _status(first) == "STOPPED"
    deadline = time.time() + 30             # job logs reach the dashboard with a lag
    while "--resume" not in (logs := w.jobs().get_job_logs(first.submission_id)) and time.time() < deadline:
        time.sleep(1)
    assert "--resume" in logs, logs[-3000:]
    assert [p.data.tags["study_status"] for p in w.runs(w.job_study, "study")] == ["interrupted"]


def check_job_resume(w: Walk, block: Block) -> None:
    second = w.job(resumed=True)
    assert _status(second) == "SUCCEEDED"
    study, budget = STUDIES[w.job_study], STUDIES[w.job_study].budgets["smoke"]
    runs = w.runs(w.job_study, "trial")
    _assert_compact(w.jobs().get_job_logs(second.submission_id), w.job_study, len(study.arms()) * len(budget.seeds))
    for run in runs:       # stdout and stderr of every trial in its Tune trial directory
        trial_dir = next((w.results / "tune").glob(f"*/{run.data.tags['trial_id']}"))
        assert {"stderr", "stdout", "result.json"} <= {p.name for p in trial_dir.iterdir()}, trial_dir
    keys = [r.data.tags["trial_key"] for r in runs]
    assert len(keys) == len(set(keys)), "duplicate run for a trial"
    assert {r.data.tags["outcome"] for r in runs} <= {"completed", "pruned"}
    assert all(r.info.status != "RUNNING" for r in runs)
    phases = [r.data.tags["phase"] for r in runs]
    assert phases.count("tune") == len(study.arms()) * len(budget.seeds) * tune_trials_per_tuning(budget)
    assert phases.count("replicate") == len(study.arms()) * len(budget.seeds)
    c = tracking.client(w.uri)
    for run in runs:
        steps = [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)), f"epochs logged twice in {run.info.run_id}: {steps}"
    assert list((w.results / "tune").glob("*/*/checkpoint_*")), "no checkpoint in the shared storage"
    recorded = _everything_recorded(w.uri)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=w.clone, capture_output=True, text=True).stdout.strip()
    assert commit in recorded                              # STUDY_GIT_COMMIT arrived
    token = (w.home / ".ray" / "auth_token").read_text().strip()
    for name, secret in {**SECRETS, "the Ray token": token}.items():
        assert secret not in recorded, f"{name} leaked into MLflow"


def _assert_compact(out: str, study: str, replicates: int) -> None:
    """The runner's output as ``ray job logs`` shows it (no TTY): a few lines, progress lines of
    its phases, the closing lines last; none of Tune's status tables."""
    lines = out.splitlines()
    assert len(lines) < 30, out
    assert not re.search(r"Trial status|Configuration for experiment|Checkpoint successfully created|╭", out), out
    progress = [line for line in lines if re.search(rf"classify/replicate +\d+/{replicates} trials: ", line)]
    assert progress and all(re.search(r"\d+ completed, \d+ pruned, \d+ failed, \d+ running; \d+:\d\d elapsed, "
                                      r"ETA (\d+:\d\d|\?)$", line) for line in progress), out
    closing = [i for i, line in enumerate(lines) if line.startswith(f"Next: python -m analysis.compare {study}")]
    assert closing and closing[-1] >= len(lines) - 3, out
    assert any("mlflow ui --backend-store-uri" in line and "workflowType=machine_learning" in line for line in lines)


def check_job_analysis(w: Walk, block: Block) -> None:
    w.report(_study_of(block, "analysis.compare"))


def check_ray_head_stop(w: Walk, block: Block) -> None:
    """The README's way of stopping the head leaves nothing of it."""
    deadline = time.monotonic() + 60
    while (left := {p: c for p, c in processes_referencing(w.ray_tmp).items() if p not in w.own_pids}) \
            and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"processes left after the README's stop command: {left}"


CHECKS = {"main-job": check_main_job, "tour": check_tour, "mlflow-ui": check_mlflow_ui,
          "ray-head": check_ray_head, "job-submit": check_job_submit, "job-stop": check_job_stop,
          "job-resume": check_job_resume, "job-analysis": check_job_analysis,
          "ray-head-stop": check_ray_head_stop}


def _everything_recorded(uri) -> str:
    """Params, tags and text artifacts of every run, as one string to search."""
    c = tracking.client(uri)
    parts = []
    for run in c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=10000):
        parts += [f"{k}={v}" for k, v in run.data.params.items()]
        parts += [f"{k}={v}" for k, v in run.data.tags.items()]
        for artifact in c.list_artifacts(run.info.run_id):
            if artifact.path.endswith((".json", ".csv", ".txt")):
                parts.append(Path(c.download_artifacts(run.info.run_id, artifact.path)).read_text(errors="replace"))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- the test


@pytest.mark.slow
def test_readme_walkthrough(tmp_path, smoke_folder):
    readme = [b for b in blocks() if b.runs]
    names = [b.name for b in readme]
    assert not set(CHECKS) - set(names), f"checks for blocks no longer in README.md: {set(CHECKS) - set(names)}"
    assert not [b.name for b in readme if FORBIDDEN.search(b.text)], "a README block runs `ray stop`/pkill"
    if not _venv_is_current():
        pytest.fail("the .venv is older than pyproject.toml/constraints.txt: run ./scripts/setup.sh")
    # the session's smoke folder while its results/ is empty (conftest.py runs this test first),
    # so the records the README's commands make serve the smoke tests; else a folder of its own
    clone = smoke_folder if not (smoke_folder / "results").exists() else tmp_path / "clone"
    home = tmp_path / "home"
    home.mkdir()
    _fresh_clone(clone)
    ray_tmp = tempfile.mkdtemp(prefix="rw", dir="/tmp")    # short: Ray's socket paths live below it
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), ray_tmp, str(HERE)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    ports = Ports()
    shell = Shell(clone, _fresh_env(home, ray_tmp), tmp_path)
    walk, servers, timings = Walk(clone, home, ray_tmp, ports, shell), [], []
    walk.own_pids.add(watchdog.pid)
    try:
        for block in readme:
            t0 = time.monotonic()
            text = ports.substitute(block.text, ray_tmp)
            if block.kind == "run":
                shell.run(block, text, TIMEOUTS.get(block.name, DEFAULT_TIMEOUT))
                if block.name in CHECKS:
                    CHECKS[block.name](walk, block)
            else:
                url = PORT.sub(lambda m: f"{m['pre']}{ports[int(m['port'])]}", block.arg)
                pgid = shell.start(block, text)
                servers.append(pgid)
                _wait_http(url, block, shell, pgid)
                CHECKS.get(block.name, lambda *a: None)(walk, block, url)
                _stop_group(pgid)
            timings.append(f"{block.name} {time.monotonic() - t0:.0f} s")
        print("README blocks:", ", ".join(timings))
    finally:
        for pgid in servers:
            _stop_group(pgid, grace=5)
        shell.close()
        watchdog.kill()
        watchdog.wait()
        for _ in range(5):    # a cluster killed while running may fork once more during a sweep
            if not kill_processes_referencing(ray_tmp):
                break
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert shell.proc.returncode == 0, shell.tail()
    if clone != smoke_folder:
        shutil.rmtree(clone / "results")      # ~300 MB; kept when the test fails


def _wait_http(url: str, block: Block, shell: Shell, pgid: int, timeout: float = 120) -> None:
    def alive():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            pytest.fail(f"README block {block.name!r} exited before {url} answered\n{shell.tail()}")
    try:
        wait_http(url, alive, timeout)
    except TimeoutError as e:
        pytest.fail(f"README block {block.name!r}: {e}\n{shell.tail()}")