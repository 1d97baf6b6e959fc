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
