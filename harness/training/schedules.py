"""Step schedules of training: pure functions of the step (no torch state).

The papers' symbols throughout; ``step`` (i or t there) counts optimizer updates from 0.

- Scheduled sampling (Bengio et al. 2015, "Scheduled Sampling for Sequence Prediction with
  Recurrent Neural Networks"): eps_i, the probability of feeding the ground truth y*_{t-1} to
  the decoder at training step i (1 - eps_i: feed the model's own prediction).
- Length curriculum (Bengio et al. 2009, "Curriculum Learning"; README "Techniques",
  train.curriculum): the longest sequence length L_t trained on at step t.
- Dropout schedule (README "Techniques": train.dropout_schedule): p_t = p_0 exp(-lambda t),
  applied as a multiplier on every base dropout rate.
- Adaptive difficulty (README "Techniques": train.curriculum.kind adaptive):
  p(hard) = min(1, p_0 + alpha * accuracy), accuracy a running average.
- Multi-task weights (README "Techniques": train.curriculum.kind multitask):
  w_i(t) = softmax(log(performance_i(t)) / tau).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from lstm_harness.strict import Strict

# -- scheduled sampling ---------------------------------------------------------------------

SamplingSchedule = Literal["teacher_forcing", "always", "linear", "exponential",
                           "inverse_sigmoid"]


class SamplingConfig(Strict):
    """Scheduled sampling (Bengio et al. 2015): eps_i = P(feed ground truth at step i).

    schedule:
      - ``teacher_forcing``: eps_i = 1 (teacher forcing, h_t = LSTM(h_{t-1}, y*_{t-1}))
      - ``always``: eps_i = 0 (always feed the model's own prediction, "always sample")
      - ``linear``: eps_i = max(eps_min, eps0 - alpha * i)  (Bengio et al. 2015: linear decay)
      - ``exponential``: eps_i = max(eps_min, k^i), 0 < k < 1
      - ``inverse_sigmoid``: eps_i = max(eps_min, k / (k + exp((i - c) / k))), k >= 1;
        c = 0 gives the plain form k / (k + exp(i / k)) of the paper.
    ``eps_min`` is the floor of every decaying schedule (it is 0 by default, so the paper's
    exponential and inverse-sigmoid forms are unchanged unless it is set).
    feed: what "the model's prediction" is when it is fed back: the ``argmax`` token, or a
    token ``sample``d from the softmax (the paper samples; argmax is the common variant).
    """

    schedule: SamplingSchedule = "teacher_forcing"
    k: float = Field(100.0, gt=0)
    c: float = 0.0
    eps0: float = Field(1.0, ge=0, le=1)
    eps_min: float = Field(0.0, ge=0, le=1)
    alpha: float = Field(1e-4, ge=0)
    feed: Literal["argmax", "sample"] = "argmax"

    @model_validator(mode="after")
    def check(self) -> SamplingConfig:
        if self.schedule == "exponential" and not 0 < self.k < 1:
            raise ValueError(f"field 'k': the exponential schedule eps_i = k^i needs "
                             f"0 < k < 1 (got k={self.k})")
        if self.schedule == "inverse_sigmoid" and self.k < 1:
            raise ValueError(f"field 'k': the inverse_sigmoid schedule k / (k + exp((i - c) / k)) "
                             f"needs k >= 1 (got k={self.k})")
        if self.schedule == "linear" and self.eps_min > self.eps0:
            raise ValueError(f"field 'eps_min': the linear schedule decays from eps0 to eps_min, "
                             f"so eps_min <= eps0 (got eps_min={self.eps_min}, "
                             f"eps0={self.eps0})")
        return self


def teacher_forcing_prob(cfg: SamplingConfig, step: int) -> float:
    """eps_i: the probability of feeding the ground truth at training step ``step`` (= i)."""
    i = float(step)
    if cfg.schedule == "teacher_forcing":
        return 1.0
    if cfg.schedule == "always":
        return 0.0
    if cfg.schedule == "linear":
        eps = cfg.eps0 - cfg.alpha * i
    elif cfg.schedule == "exponential":
        eps = cfg.k ** i
    else:  # inverse_sigmoid; exp overflows past ~709, where eps is 0 to double precision
        z = (i - cfg.c) / cfg.k
        eps = 0.0 if z > 700 else cfg.k / (cfg.k + math.exp(z))
    return max(cfg.eps_min, eps)


# -- length curriculum ----------------------------------------------------------------------

def curriculum_length(kind: str, step: int, max_len: int, start: int = 2, alpha: float = 0.01,
                      beta: float = 2.0, tau: float = 1000.0) -> int:
    """L_t of a length curriculum (Bengio et al. 2009): train on sequences no longer than L_t
    at step t, with L_start = ``start`` and L_max = ``max_len`` (the task's longest length):

      - ``none``: L_t = L_max
      - ``linear``: L_t = min(L_max, L_start + alpha * t)
      - ``exponential``: L_t = min(L_max, L_start * beta^(t / tau))  (tau steps per factor
        beta)

    (the suite's ``train.curriculum`` with kind ``length_linear`` / ``length_exponential``
    holds and validates the parameters). Returned as an int: floor of the formula, at least 1
    and at most L_max.

    A 1e-9 slack is added before the floor so that a value that is an integer on paper
    (0.1 * 30 = 3) is not floored one below by rounding.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1 (got {max_len})")
    if kind == "none":
        return max_len
    t = float(step)
    if kind == "linear":
        length = start + alpha * t
    elif kind == "exponential":  # in log space so a large t cannot overflow
        log_len = math.log(start) + (t / tau) * math.log(beta)
        length = max_len if log_len >= math.log(max_len) else math.exp(log_len)
    else:
        raise ValueError(f"unknown length curriculum '{kind}'; allowed: none, linear, "
                         "exponential")
    return max(1, min(max_len, math.floor(length + 1e-9)))


# -- dropout schedule -----------------------------------------------------------------------

class DropoutScheduleConfig(Strict):
    """``constant``: p_t = p_0; ``exponential``: p_t = p_0 exp(-lam t) for every base rate."""

    kind: Literal["constant", "exponential"] = "constant"
    lam: float = Field(0.0, ge=0)


def dropout_scale(kind: Literal["constant", "exponential"], lam: float, step: int) -> float:
    """The multiplier exp(-lam * t) (1 for ``constant``) on every base dropout rate p_0."""
    if kind == "constant":
        return 1.0
    if kind == "exponential":
        if lam < 0:
            raise ValueError(f"lam must be >= 0 (got {lam})")
        return math.exp(-lam * step)
    raise ValueError(f"unknown dropout schedule '{kind}'; allowed: constant, exponential")


# -- adaptive difficulty --------------------------------------------------------------------

class DifficultyConfig(Strict):
    """p(hard) = min(1, p0 + alpha * accuracy), accuracy an EMA with decay ``beta``."""

    p0: float = Field(0.0, ge=0, le=1)
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.9, ge=0, lt=1)


def hard_fraction(p0: float, alpha: float, accuracy: float) -> float:
    """p(hard examples) = min(1, p0 + alpha * accuracy) (and not below 0)."""
    return max(0.0, min(1.0, p0 + alpha * accuracy))


class RunningAccuracy:
    """Exponential moving average a_t = beta * a_{t-1} + (1 - beta) * acc_t, with a_0 = 0.

    No bias correction: starting at 0 makes the curriculum start easy and only harden once
    accuracy has been sustained for about 1 / (1 - beta) updates.
    """

    def __init__(self, beta: float = 0.9, value: float = 0.0) -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1) (got {beta})")
        self.beta = beta
        self.value = value

    def update(self, accuracy: float) -> float:
        self.value = self.beta * self.value + (1 - self.beta) * accuracy
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta, "value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.beta, self.value = float(state["beta"]), float(state["value"])


# -- multi-task weights ---------------------------------------------------------------------

def task_weights(performance: Sequence[float], tau: float = 1.0) -> list[float]:
    """w_i = softmax(log(perf_i) / tau) = perf_i^(1/tau) / sum_j perf_j^(1/tau).

    Better tasks (higher performance) receive higher weight; tau > 0 is the
    temperature (tau -> 0: all weight on the best task; tau -> inf: uniform). Every
    performance must be > 0 (log).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0 (got {tau})")
    if not performance:
        return []
    for value in performance:
        if not value > 0:
            raise ValueError(f"every task performance must be > 0 (got {value})")
    logits = [math.log(value) / tau for value in performance]
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    total = sum(exps)
    return [e / total for e in exps]
