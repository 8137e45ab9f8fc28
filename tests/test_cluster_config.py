"""The cluster-launcher configs (cluster.yaml: cloud with CPU and GPU workers; cluster-local.yaml:
fixed machines) are checked against the Ray cluster launcher's own JSON schema, offline."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
CONFIGS = ["cluster.yaml", "cluster-local.yaml"]


def validate(config: dict) -> None:
    jsonschema.validate(config, json.loads(SCHEMA.read_text()))


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_matches_ray_schema(name):
    config = load(name)
    validate(config)
    assert any("make install" in c for c in config["setup_commands"])
    server = next(c for c in config["head_setup_commands"] if "mlflow server" in c)
    assert "--backend-store-uri sqlite:////" in server  # one database for every node
    assert "0.0.0.0" not in server  # the head's private address only
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)


def test_cloud_config_has_cpu_and_gpu_workers_and_a_trial_free_head():
    config = load("cluster.yaml")
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["cpu_worker"]["resources"]["CPU"] > 0 and "GPU" not in types["cpu_worker"][
        "resources"]
    assert types["gpu_worker"]["resources"]["GPU"] >= 1
    assert config["max_workers"] >= sum(t.get("max_workers", 0) for n, t in types.items()
                                        if n != config["head_node_type"])


def test_local_config_has_no_node_types():
    config = load("cluster-local.yaml")
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config  # the local provider refuses them


@pytest.mark.parametrize("name", CONFIGS)
def test_a_typo_in_a_key_fails_the_check(name):
    config = load(name)
    config["setup_comands"] = config.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        validate(config)


def test_a_typo_inside_a_node_type_fails_the_check():
    config = load("cluster.yaml")
    config["available_node_types"]["gpu_worker"]["resources"] = {"GPU": -1}
    with pytest.raises(jsonschema.ValidationError):
        validate(config)
    config = load("cluster.yaml")
    config["available_node_types"]["gpu_worker"]["node_confg"] = {}
    del config["available_node_types"]["gpu_worker"]["node_config"]
    with pytest.raises(jsonschema.ValidationError, match="node_config"):
        validate(config)
