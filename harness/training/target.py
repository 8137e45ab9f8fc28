"""Steps to a target validation value (Ba et al. 2016 compare how many updates LayerNorm LSTM
and LSTM need to reach a validation loss; Cooijmans et al. 2017 likewise).

  steps_to_target = min { t in eval steps : v_t >= target }   (a metric to maximise)
                    min { t in eval steps : v_t <= target }   (a metric to minimise, or loss)

read at every validation evaluation (``train.eval_every``), so the resolution is
``eval_every`` steps. A trial that never reaches the target reports ``cost.target_reached`` 0
and no ``test.steps_to_target`` (the metric column ``steps_to_target``).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from lstm_harness.strict import Strict


class TargetConfig(Strict):
    """``train.steps_to_target``: the first evaluation step at which the validation
    ``metric`` reaches ``value``."""

    metric: str = Field(description="a validation metric of every task (without 'valid.'), "
                        "or 'loss'")
    value: float

    @field_validator("metric")
    @classmethod
    def _bare_name(cls, metric: str) -> str:
        return metric.removeprefix("valid.")


def target_reached(value: float, target: float, direction: str) -> bool:
    """v >= target where higher is better (``"max"``), v <= target where lower is."""
    return value >= target if direction == "max" else value <= target
