"""The configuration of one trial: model and training settings (pydantic, unknown keys refused).

A suite's ``base`` is a partial :class:`TrialConfig`; each axis variant overrides dotted paths
in it. Only options that are built are accepted: an unknown name is an error that lists the
allowed ones.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    """Encoder-decoder LSTM (Sutskever et al. 2014; Cho et al. 2014)."""

    embed: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    bidirectional: bool = False
    cell: Literal["lstm"] = "lstm"


class TrainConfig(Strict):
    """Teacher-forced training: ``steps`` optimizer updates on batches of ``batch_size``."""

    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1.0e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(200, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    log_every: int = Field(20, ge=1)


class TrialConfig(Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def set_dotted(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``path = "a.b.c"``, creating dicts on the way."""
    keys = path.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out
