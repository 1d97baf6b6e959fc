"""cluster.yaml, checked offline: Ray's own autoscaler validation plus our invariants.

``prepare_config`` + ``validate_config`` is what ``ray up`` runs before it touches the
cloud (``commands.py::_bootstrap_config``): it merges Ray's aws/defaults.yaml and checks
ray-schema.json. It needs no AWS credentials. These functions are private API, which is
why ray is pinned and this test exists.

Ray 2.60's validator accepts a node type with ``min_workers`` > ``max_workers`` (as long as
the sum of min_workers fits the global max_workers) and a negative ``min_workers``.
``check_node_type_bounds`` adds those checks.
"""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


def load_cluster_yaml() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def validate_with_ray(config: dict) -> dict:
    """What `ray up` checks before launching anything; returns the config with defaults."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def check_node_type_bounds(config: dict) -> None:
    """0 <= min_workers <= max_workers <= global max_workers, per node type."""
    cap = config["max_workers"]
    for name, node_type in config["available_node_types"].items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers", cap)
        if not 0 <= low <= high <= cap:
            raise ValueError(f"node type {name!r}: need 0 <= min_workers ({low}) <= "
                             f"max_workers ({high}) <= global max_workers ({cap})")


def pinned_ray_version() -> str:
    """The version in pyproject.toml's `"ray[...]==X"` dependency (tomllib needs 3.11)."""
    (version,) = re.findall(r'"ray(?:\[[^\]]*\])?==([^"\s;]+)"',
                            (ROOT / "pyproject.toml").read_text())
    return version


# ----------------------------------------------------------------------------- the real file


@pytest.fixture(scope="module")
def config() -> dict:
    return load_cluster_yaml()


@pytest.fixture(scope="module")
def prepared(config) -> dict:
    return validate_with_ray(config)


def test_ray_accepts_cluster_yaml(prepared):
    check_node_type_bounds(prepared)


def test_image_ray_version_matches_the_pins(config):
    ray_version = pinned_ray_version()
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(rf"^ray=={re.escape(ray_version)}\s*$", constraints, re.M), \
        "constraints.txt pins another ray than pyproject.toml"
    image = config["docker"]["image"]
    assert re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py\d+-gpu", image), image
    assert image.split(":")[1].split("-")[0] == ray_version
    assert "head_image" not in config["docker"] and "worker_image" not in config["docker"]
    for node_type in config["available_node_types"].values():
        assert "worker_image" not in node_type.get("docker", {})
    # The setup command that fails fast on a drifted image asserts the same version.
    asserted = re.findall(r"ray\.__version__ == '([^']+)'", "\n".join(config["setup_commands"]))
    assert asserted == [ray_version]


def test_dashboard_binds_localhost_and_nothing_binds_all_interfaces(config):
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()  # comments included
    head_start = " ".join(config["head_start_ray_commands"])
    assert re.search(r"ray start --head\b", head_start)
    assert re.findall(r"--dashboard-host[= ](\S+)", head_start) == ["127.0.0.1"]
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    # No inbound rule beyond the SSH + intra-cluster ones Ray creates.
    assert "IpPermissions" not in config["provider"].get("security_group", {})


def test_token_auth_is_on_for_every_node(config):
    run_options = config["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in run_options
    (token_path,) = [o.split("=", 1)[1] for o in run_options
                     if o.startswith("--env RAY_AUTH_TOKEN_PATH=")]
    remote = {p.replace("~/", "/home/ray/"): local for p, local in config["file_mounts"].items()}
    assert remote[token_path] == "~/.ray/auth_token"


def test_head_runs_no_trials_and_workers_are_single_gpu_from_zero(config):
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        assert node_type["resources"]["GPU"] == 1, name
        assert node_type["resources"]["CPU"] >= 1, name
        assert node_type["min_workers"] == 0, name
        worker_options = node_type["docker"]["worker_run_options"]
        assert any(o.startswith("--shm-size=") for o in worker_options), name
        assert "--gpus all" in worker_options, name
    assert any(o.startswith("--shm-size=") for o in config["docker"]["head_run_options"])


def test_project_installed_at_pinned_versions_from_synced_dir(config):
    assert config["file_mounts"]["~/ablation-studies"] == "."
    assert any("pip install" in c and "-c constraints.txt -e ." in c
               and c.startswith("cd ~/ablation-studies") for c in config["setup_commands"])


def test_mlflow_server_on_private_ip_with_db_backend_and_s3_artifacts(config):
    (cmd,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in cmd
    assert "--workers 1" in cmd
    assert re.search(r"--backend-store-uri (sqlite:////|postgresql)", cmd)
    assert "--host \"$MLFLOW_HOST\"" in cmd and "get_node_ip_address" in cmd
    env = dict(o.removeprefix("--env ").split("=", 1) for o in config["docker"]["run_options"]
               if o.startswith("--env "))
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["STUDY_STORAGE"].startswith("s3://")
    # Workers and the driver on the head learn the server's private address.
    assert "export MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in \
        " ".join(config["worker_start_ray_commands"])
    assert "export MLFLOW_TRACKING_URI=http://" in " ".join(config["head_start_ray_commands"])


# ----------------------------------------------------------------------------- broken variants


def broken(mutate) -> dict:
    config = load_cluster_yaml()
    mutate(config)
    return config


def test_typo_in_a_top_level_key_is_rejected():
    config = broken(lambda c: c.__setitem__("max_worker", c.pop("max_workers")))
    with pytest.raises(jsonschema.ValidationError, match="'max_worker' was unexpected"):
        validate_with_ray(config)


def test_typo_in_a_node_type_key_is_rejected():
    config = broken(lambda c: c["available_node_types"]["gpu_worker"].__setitem__(
        "min_worker", c["available_node_types"]["gpu_worker"].pop("min_workers")))
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        validate_with_ray(config)


def test_fractional_gpu_in_node_resources_is_rejected():
    config = broken(lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5))
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'integer'"):
        validate_with_ray(config)


def test_head_node_type_must_be_a_declared_node_type():
    config = broken(lambda c: c.__setitem__("head_node_type", "ray.head.default"))
    with pytest.raises(ValueError, match="must be one of `available_node_types`"):
        validate_with_ray(config)


def test_min_workers_above_global_max_workers_is_rejected_by_ray():
    config = broken(lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=5))
    with pytest.raises(ValueError, match="global `max_workers` is smaller"):
        validate_with_ray(config)


@pytest.mark.parametrize("low, high", [(3, 2), (-1, 2)])
def test_bad_node_type_bounds_pass_ray_but_fail_our_check(low, high):
    config = broken(lambda c: c["available_node_types"]["gpu_worker"].update(
        min_workers=low, max_workers=high))
    prepared = validate_with_ray(config)  # Ray 2.60 accepts these
    with pytest.raises(ValueError, match="gpu_worker"):
        check_node_type_bounds(prepared)
