import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One private local Ray for the in-process study tests (started once: ~5 s)."""
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=300 * 1024 ** 2, log_to_driver=False,
                 _temp_dir=str(tmp_path_factory.mktemp("ray", numbered=True)))
    yield ray
    ray.shutdown()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """The README walk-through first (a stable sort keeps the rest in order): its fresh clone is
    the folder of the session's smoke runs (``smoke_folder``), so the studies its commands run
    (the main job's ``ablation_pretraining``, the job's ``ablation_dropout``, both at smoke) are
    the session's records of them, and the autoencoders they trained are reused, instead of
    training them all again. Only the time depends on this order, never a result: a smoke run
    finds the study finished, or runs it.

    Then the slow tests, then the rest: the two workers (below) take modules in the order of
    their first test, so the long ones start early and the short ones fill the end."""
    items.sort(key=lambda item: (item.path.name != "test_readme_walkthrough.py", item.get_closest_marker("slow") is None))


# Two workers run the suite (pyproject.toml: ``-n 2``): a serial run left the CPU idle a quarter
# of its time (Ray heads starting, jobs, servers, autoscaler timeouts; vmstat over a full run).
# Each test module stays on one worker, so its module fixtures run once, and the modules that
# read the session's smoke records share one worker, the walk-through first, so each smoke study
# still trains once per session. (xdist's own ``loadgroup`` cannot do it under pytest 9: it
# renames node ids through an attribute pytest no longer reads: pytest-dev/pytest-xdist#1386.)
SMOKE_MODULES = frozenset(p.name for p in Path(__file__).parent.glob("test_*.py")
                          if re.search(r"\bsmoke_(runs|folder)\b", p.read_text()))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndSmokeRecords(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "smoke-records" if Path(module).name in SMOKE_MODULES else module

    return ModulesAndSmokeRecords(config, log)


@pytest.fixture(scope="session")
def smoke_folder(tmp_path_factory) -> Path:
    """The folder whose ``results/`` holds the session's smoke runs: the README walk-through
    clones the working tree into it while ``results/`` is still empty (it runs first), and the
    other tests' smoke runs go into the same ``results/``, as a user's next studies would."""
    return tmp_path_factory.mktemp("clone")


class SmokeRuns:
    """Each registered study at its smoke budget, run at most once per test session on demand,
    into one store shared as a user's results folder is (so autoencoders are reused between
    studies). Tests that only read a study's record share its run; none depends on the order.
    A study the README walk-through already ran there is found finished: the run then only
    checks the study and says so (``already finished``), and its tests read the walk-through's
    record, which is the same study at the same budget and version."""

    def __init__(self, results: Path):
        self.results = results
        self.uri = f"sqlite:///{results / 'mlflow.db'}"
        self.output: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        """Runs ``name`` at smoke unless done already; returns what it printed."""
        if name not in self.output:
            import contextlib
            import io

            from study.run import main

            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main([name, "--budget", "smoke", "--results-dir", str(self.results),
                             "--tracking-uri", self.uri, "--quiet"])
            assert code == 0, f"{name} at smoke exited with {code}:\n{out.getvalue()[-3000:]}"
            self.output[name] = out.getvalue()
        return self.output[name]


@pytest.fixture(scope="session")
def smoke_runs(smoke_folder, ray_local) -> SmokeRuns:
    return SmokeRuns(smoke_folder / "results")

