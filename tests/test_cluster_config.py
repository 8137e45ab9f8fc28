"""cluster.yaml is checked against the Ray cluster launcher's own JSON schema, offline."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


def validate(config: dict) -> None:
    jsonschema.validate(config, json.loads(SCHEMA.read_text()))


def test_cluster_yaml_matches_ray_schema():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate(config)
    assert config["provider"]["type"] == "local"
    assert any("make install" in c for c in config["setup_commands"])
    assert any("mlflow server" in c for c in config["head_setup_commands"])


def test_a_typo_in_a_key_fails_the_check():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["setup_comands"] = config.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        validate(config)
