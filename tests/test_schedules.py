"""Step schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from lstm_harness.training.schedules import (
    DifficultyConfig,
    DropoutScheduleConfig,
    RunningAccuracy,
    SamplingConfig,
    curriculum_length,
    dropout_scale,
    hard_fraction,
    task_weights,
    teacher_forcing_prob,
)

# -- scheduled sampling ---------------------------------------------------------------------


def test_teacher_forcing_and_always() -> None:
    tf, always = SamplingConfig(), SamplingConfig(schedule="always")
    for step in (0, 1, 10_000):
        assert teacher_forcing_prob(tf, step) == 1.0
        assert teacher_forcing_prob(always, step) == 0.0


def test_linear_decays_to_floor() -> None:
    cfg = SamplingConfig(schedule="linear", eps0=1.0, alpha=0.1, eps_min=0.25)
    got = [teacher_forcing_prob(cfg, i) for i in (0, 3, 7, 8, 100)]
    assert got == pytest.approx([1.0, 0.7, 0.3, 0.25, 0.25], abs=1e-12)


def test_exponential() -> None:
    cfg = SamplingConfig(schedule="exponential", k=0.5)
    assert [teacher_forcing_prob(cfg, i) for i in (0, 1, 3)] == [1.0, 0.5, 0.125]
    floored = SamplingConfig(schedule="exponential", k=0.5, eps_min=0.2)
    assert teacher_forcing_prob(floored, 3) == 0.2


def test_inverse_sigmoid_plain_and_centred() -> None:
    plain = SamplingConfig(schedule="inverse_sigmoid", k=10)
    assert teacher_forcing_prob(plain, 0) == pytest.approx(10 / 11, abs=1e-12)
    assert teacher_forcing_prob(plain, 10) == pytest.approx(10 / (10 + math.e), abs=1e-12)
    centred = SamplingConfig(schedule="inverse_sigmoid", k=10, c=20)
    assert teacher_forcing_prob(centred, 20) == pytest.approx(10 / 11, abs=1e-12)
    assert teacher_forcing_prob(centred, 30) == pytest.approx(10 / (10 + math.e), abs=1e-12)
    assert teacher_forcing_prob(plain, 10**7) == 0.0  # no overflow far out


def test_sampling_config_checks_k() -> None:
    with pytest.raises(ValidationError, match="'k'"):
        SamplingConfig(schedule="exponential")  # default k = 100
    with pytest.raises(ValidationError, match="'k'"):
        SamplingConfig(schedule="exponential", k=1.0)
    with pytest.raises(ValidationError, match="'k'"):
        SamplingConfig(schedule="inverse_sigmoid", k=0.5)
    with pytest.raises(ValidationError, match="eps_min"):
        SamplingConfig(schedule="linear", eps0=0.5, eps_min=0.6)
    with pytest.raises(ValidationError):
        SamplingConfig(schedule="sometimes")
    with pytest.raises(ValidationError):
        SamplingConfig(rate=0.5)  # unknown key
    assert SamplingConfig(feed="sample").feed == "sample"


# -- length curriculum ----------------------------------------------------------------------


def test_linear_length() -> None:
    got = [curriculum_length("linear", t, 10, start=2, alpha=0.1) for t in (0, 9, 10, 30, 1000)]
    assert got == [2, 2, 3, 5, 10]
    # 1 + 0.7 * 90 = 63.99999999999999 in floating point: 64 on paper
    assert curriculum_length("linear", 90, 100, start=1, alpha=0.7) == 64


def test_exponential_length() -> None:
    got = [curriculum_length("exponential", t, 50, start=2, beta=2.0, tau=100)
           for t in (0, 100, 150, 400, 500, 10**9)]
    assert got == [2, 4, 5, 32, 50, 50]  # 2 * 2^1.5 = 5.66 -> 5


def test_length_bounds() -> None:
    assert curriculum_length("none", 0, 7) == 7  # none: L_max
    assert curriculum_length("linear", 0, 7, start=20, alpha=0.0) == 7
    with pytest.raises(ValueError):
        curriculum_length("linear", 0, 0, start=20, alpha=0.0)
    with pytest.raises(ValueError, match="unknown length curriculum 'cubic'"):
        curriculum_length("cubic", 0, 7)


# -- dropout, difficulty, multi-task --------------------------------------------------------


def test_dropout_scale() -> None:
    assert dropout_scale("constant", 0.5, 100) == 1.0
    assert dropout_scale("exponential", 0.01, 0) == 1.0
    assert dropout_scale("exponential", 0.01, 100) == pytest.approx(math.exp(-1), abs=1e-15)
    cfg = DropoutScheduleConfig(kind="exponential", lam=0.02)
    assert dropout_scale(cfg.kind, cfg.lam, 50) == pytest.approx(math.exp(-1), abs=1e-15)
    with pytest.raises(ValueError):
        dropout_scale("cosine", 0.1, 1)  # type: ignore[arg-type]


def test_hard_fraction() -> None:
    assert hard_fraction(0.2, 0.5, 0.6) == pytest.approx(0.5)
    assert hard_fraction(0.5, 1.0, 0.9) == 1.0
    assert hard_fraction(0.1, 2.0, 0.0) == pytest.approx(0.1)
    with pytest.raises(ValidationError):
        DifficultyConfig(p0=1.5)


def test_running_accuracy() -> None:
    acc = RunningAccuracy(beta=0.5)
    assert acc.value == 0.0
    assert [acc.update(a) for a in (1.0, 1.0, 0.0)] == [0.5, 0.75, 0.375]
    other = RunningAccuracy(beta=0.9)
    other.load_state_dict(acc.state_dict())
    assert (other.beta, other.value) == (0.5, 0.375)
    with pytest.raises(ValueError):
        RunningAccuracy(beta=1.0)


def test_task_weights() -> None:
    assert task_weights([1.0, 2.0, 4.0]) == pytest.approx([1 / 7, 2 / 7, 4 / 7], abs=1e-12)
    root2 = math.sqrt(2)
    assert task_weights([1.0, 2.0, 4.0], tau=2.0) == pytest.approx(
        [1 / (3 + root2), root2 / (3 + root2), 2 / (3 + root2)], abs=1e-12)
    weights = task_weights([0.9, 0.1], tau=0.5)  # better task, higher weight
    assert weights[0] > weights[1] and sum(weights) == pytest.approx(1.0)
    assert task_weights([1e-300, 1.0], tau=1e-3) == pytest.approx([0.0, 1.0])  # no overflow
    with pytest.raises(ValueError):
        task_weights([0.0, 1.0])
    with pytest.raises(ValueError):
        task_weights([1.0], tau=0)
