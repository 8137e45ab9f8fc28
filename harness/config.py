"""The configuration of one trial: model and training settings (pydantic, unknown keys refused).

A suite's ``base`` is a partial :class:`TrialConfig`; each axis variant overrides dotted paths
in it. Only options that are built are accepted: an unknown name is an error that lists the
allowed ones.

One rule for where configs live: a technique's config is defined in the module that implements
the technique (dropout rates in ``models/dropout.py``, attention in ``models/attention.py``,
losses in ``models/losses.py``, clipping, curricula, schedules, learning-rate schedules and the
steps-to-target measurement in ``training/``, the monitors in ``diagnostics/monitor.py``); this
module only composes them into the model, training and trial configs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lstm_harness.diagnostics.monitor import MonitorConfig
from lstm_harness.models.attention import AttentionConfig
from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.losses import LossConfig
from lstm_harness.strict import Strict
from lstm_harness.training.clipping import ClipConfig
from lstm_harness.training.curriculum import CurriculumConfig
from lstm_harness.training.lr_schedules import LRScheduleConfig
from lstm_harness.training.schedules import DropoutScheduleConfig, SamplingConfig
from lstm_harness.training.target import TargetConfig


class ModelConfig(Strict):
    """Encoder-decoder LSTM (Sutskever et al. 2014; Cho et al. 2014) and its options."""

    embed: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    bidirectional: bool = False
    cell: Literal["lstm", "layernorm"] = "lstm"
    dropout: DropoutRates = Field(default_factory=DropoutRates)
    skip: Literal["none", "residual", "residual_step", "highway", "dense"] = "none"
    context: Literal["last", "hierarchical"] = "last"
    combine: Literal["concat", "sum", "mean", "project"] = "concat"
    fuse: Literal["concat", "sum", "attention"] = "concat"
    attention: AttentionConfig | None = None
    hidden_sizes: list[int] | None = Field(None, min_length=1, description=(
        "hidden size of each layer, bottom first (AWD-LSTM: [1150, 1150, 400], Merity et al. "
        "2017); sets the number of layers; language_model and classify heads"))
    tie_weights: bool = Field(False, description=(
        "output layer W_o = the embedding matrix (Inan et al. 2017; Press & Wolf 2017): the "
        "top layer's size must equal embed; language_model head"))
    readout: Literal["last", "mean"] = Field("last", description=(
        "what the classifier reads: the last state (the context, see 'context') or the mean "
        "of the top layer's outputs over the sequence; classify head"))

    def layer_sizes(self) -> list[int]:
        """Hidden size of every layer, bottom first."""
        return list(self.hidden_sizes) if self.hidden_sizes else [self.hidden] * self.layers

    @model_validator(mode="after")
    def check(self) -> ModelConfig:
        if self.hidden_sizes is not None:
            if any(size < 1 for size in self.hidden_sizes):
                raise ValueError(f"hidden_sizes must be positive (got {self.hidden_sizes})")
            if "layers" in self.model_fields_set and self.layers not in (
                    1, len(self.hidden_sizes)):
                raise ValueError(f"layers is {self.layers} but hidden_sizes has "
                                 f"{len(self.hidden_sizes)} sizes: leave layers out")
            self.layers = len(self.hidden_sizes)  # what a resolved config records
        att = self.attention
        if att is not None and att.score == "dot" and self.bidirectional:
            raise ValueError("attention score 'dot' needs equal decoder and encoder state "
                             f"sizes ({self.hidden} vs {2 * self.hidden} with a bidirectional "
                             "encoder): use score general or concat")
        return self


class TrainConfig(Strict):
    """``steps`` optimizer updates on batches of ``batch_size``, with the training techniques
    (scheduled sampling, curricula, losses, clipping, learning-rate and dropout schedules)."""

    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1.0e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(200, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    log_every: int = Field(20, ge=1)
    mc_samples: int = Field(0, ge=0, description=(
        "MC-dropout evaluation (Gal & Ghahramani 2016): the final test evaluation also "
        "averages the predictive distribution over this many dropout samples (every mask "
        "drawn as in training) and reports <metric>_mc; 0: off; language_model and classify "
        "heads"))
    length_buckets: list[int] | None = Field(None, min_length=2, description=(
        "edges e_0 < e_1 < ... of source-length buckets: the final test evaluation also "
        "reports every free-running metric on the examples whose source length lies in "
        "(e_{k-1}, e_k], as <metric>_len<e_{k-1}+1>-<e_k> (Bahdanau et al. 2015, Fig. 2; "
        "Luong et al. 2015, Fig. 6); encoder-decoder head"))
    steps_to_target: TargetConfig | None = Field(None, description=(
        "{metric, value}: report the first evaluation step at which the validation metric "
        "reaches value (the metric steps_to_target) and whether it did (cost.target_reached)"))
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    lr_schedule: LRScheduleConfig = Field(default_factory=LRScheduleConfig)
    dropout_schedule: DropoutScheduleConfig = Field(default_factory=DropoutScheduleConfig)
    init_from: dict[str, str] | None = Field(
        None, description="start from the final model of the suite's trial with the same task "
        "and seed and these variants (axis: variant; other axes as this trial), for example "
        "{objective: ce} to fine-tune a cross-entropy model; it runs first")

    @model_validator(mode="after")
    def check_buckets(self) -> TrainConfig:
        edges = self.length_buckets
        if edges is not None and (edges[0] < 0 or any(
                b <= a for a, b in zip(edges, edges[1:], strict=False))):
            raise ValueError(f"length_buckets must be increasing edges >= 0 (got {edges})")
        return self


class TrialConfig(Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)


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
