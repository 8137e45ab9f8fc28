"""LR schedulers step by step against the SPEC formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from pydantic import ValidationError

from lstm_harness.training.lr_schedules import LRScheduleConfig, make_lr_scheduler

ETA0 = 0.1


def lrs(cfg: LRScheduleConfig, total_steps: int, steps: int) -> list[float]:
    """The optimizer's lr at t = 0 .. steps (after t scheduler steps)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=ETA0)
    scheduler = make_lr_scheduler(optimizer, cfg, total_steps)
    out = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        out.append(optimizer.param_groups[0]["lr"])
    return out


def check(got: list[float], formula: Callable[[int], float]) -> None:
    want = [formula(t) for t in range(len(got))]
    assert got == pytest.approx(want, abs=1e-9, rel=0)


def cosine(t: float, period: float, eta_min: float, eta_max: float = ETA0) -> float:
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t / period))


def test_constant() -> None:
    check(lrs(LRScheduleConfig(), 10, 10), lambda t: ETA0)


def test_exponential() -> None:
    cfg = LRScheduleConfig(kind="exponential", lam=0.05)
    check(lrs(cfg, 100, 100), lambda t: ETA0 * math.exp(-0.05 * t))


def test_step() -> None:
    cfg = LRScheduleConfig(kind="step", step_size=3, gamma=0.5)
    check(lrs(cfg, 20, 20), lambda t: ETA0 * 0.5 ** (t // 3))


def test_cosine_defaults_to_total_steps() -> None:
    cfg = LRScheduleConfig(kind="cosine", eta_min=0.01)
    got = lrs(cfg, 20, 20)
    check(got, lambda t: cosine(t, 20, 0.01))
    assert got[-1] == pytest.approx(0.01, abs=1e-12)


def test_cosine_given_t_max() -> None:
    cfg = LRScheduleConfig(kind="cosine", t_max=10)
    check(lrs(cfg, 100, 10), lambda t: cosine(t, 10, 0.0))


def test_warm_restarts() -> None:
    def sgdr(t: int, t0: int, mult: int) -> float:
        period = t0
        while t >= period:  # restart: t counts from the start of the current period
            t -= period
            period *= mult
        return cosine(t, period, 0.001)

    cfg = LRScheduleConfig(kind="warm_restarts", t0=5, t_mult=1, eta_min=0.001)
    got = lrs(cfg, 30, 30)
    check(got, lambda t: sgdr(t, 5, 1))
    assert got[5] == got[10] == pytest.approx(ETA0)  # back to eta_max at each T_0
    cfg = LRScheduleConfig(kind="warm_restarts", t0=5, t_mult=2, eta_min=0.001)
    got = lrs(cfg, 40, 40)
    check(got, lambda t: sgdr(t, 5, 2))  # periods 5, 10, 20: restarts at 5 and 15
    assert got[5] == got[15] == pytest.approx(ETA0) and got[14] < 0.01


def test_warmup_then_cosine() -> None:
    cfg = LRScheduleConfig(kind="cosine", warmup=4, warmup_start=0.2)

    def want(t: int) -> float:
        if t < 4:
            return ETA0 * (0.2 + 0.8 * t / 4)
        return cosine(t - 4, 20, 0.0)  # T = 24 - 4 steps left after warmup

    check(lrs(cfg, 24, 24), want)


def test_warmup_then_exponential() -> None:
    cfg = LRScheduleConfig(kind="exponential", lam=0.1, warmup=2, warmup_start=0.5)
    check(lrs(cfg, 20, 20),
          lambda t: ETA0 * (0.5 + 0.5 * t / 2) if t < 2 else ETA0 * math.exp(-0.1 * (t - 2)))


def test_config_checks() -> None:
    with pytest.raises(ValidationError):
        LRScheduleConfig(kind="poly")
    with pytest.raises(ValidationError):
        LRScheduleConfig(gamma=0.0)
    with pytest.raises(ValidationError):
        LRScheduleConfig(warmup_start=0.0)
    with pytest.raises(ValidationError):
        LRScheduleConfig(steps=3)
