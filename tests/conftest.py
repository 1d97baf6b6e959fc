import os
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


class SmokeRuns:
    """Each registered study at its smoke budget, run at most once per test session on demand,
    into one store shared as a user's results folder is (so autoencoders are reused between
    studies). Tests that only read a study's record share its run; none depends on the order."""

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
def smoke_runs(tmp_path_factory, ray_local) -> SmokeRuns:
    return SmokeRuns(tmp_path_factory.mktemp("smoke_results"))
