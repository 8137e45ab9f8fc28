"""Learning-rate schedules (README "Techniques": train.lr_schedule; Loshchilov & Hutter 2017
for cosine annealing and warm restarts), stepped once per training step.

t counts training steps (``scheduler.step()`` calls) after warmup; eta_0 = eta_max is the
optimizer's lr. ``kind``:

- ``constant``: eta_t = eta_0
- ``exponential``: eta_t = eta_0 exp(-lam t)  (ExponentialLR with gamma = exp(-lam))
- ``step``: eta_t = eta_0 gamma^floor(t / s), s = ``step_size``  (StepLR)
- ``cosine`` (Loshchilov & Hutter 2017, SGDR, without restarts):
  eta_t = eta_min + 1/2 (eta_max - eta_min)(1 + cos(pi t / T)), T = ``t_max``, by default the
  steps left after warmup (total_steps - warmup), so the run ends at eta_min  (CosineAnnealingLR)
- ``warm_restarts`` (Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm
  Restarts"): the cosine above with t counted from the last restart and T = T_i; the first
  period is T_0 = ``t0`` steps, each next one ``t_mult`` times longer; at a restart the lr
  jumps back to eta_max  (CosineAnnealingWarmRestarts)
- ``warmup`` > 0 (Goyal et al. 2017, linear warmup): first ``warmup`` steps go linearly from
  ``warmup_start`` * eta_0 to eta_0 (LinearLR), then the schedule above starts at its t = 0
  (SequentialLR).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch.optim import lr_scheduler as sched

from lstm_harness.strict import Strict


class LRScheduleConfig(Strict):
    """A learning-rate schedule (see the module text); fields unused by ``kind`` are ignored."""

    kind: Literal["constant", "exponential", "step", "cosine", "warm_restarts"] = "constant"
    lam: float = Field(1e-3, ge=0)  # exponential
    step_size: int = Field(1000, ge=1)  # step: s
    gamma: float = Field(0.5, gt=0, le=1)  # step
    t_max: int | None = Field(None, ge=1)  # cosine: T (default: total_steps - warmup)
    eta_min: float = Field(0.0, ge=0)  # cosine, warm_restarts
    t0: int = Field(500, ge=1)  # warm_restarts: T_0
    t_mult: int = Field(1, ge=1)  # warm_restarts: T_{i+1} = t_mult * T_i
    warmup: int = Field(0, ge=0)
    warmup_start: float = Field(0.01, gt=0, le=1)  # warmup: first lr = warmup_start * eta_0


def make_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: LRScheduleConfig,
                      total_steps: int) -> sched.LRScheduler:
    """The torch scheduler for ``cfg``; call its ``step()`` once after each optimizer step."""
    main_steps = max(1, total_steps - cfg.warmup)
    if cfg.kind == "constant":
        main: sched.LRScheduler = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif cfg.kind == "exponential":
        main = sched.ExponentialLR(optimizer, gamma=math.exp(-cfg.lam))
    elif cfg.kind == "step":
        main = sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    elif cfg.kind == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=cfg.t_max or main_steps,
                                       eta_min=cfg.eta_min)
    elif cfg.kind == "warm_restarts":
        main = sched.CosineAnnealingWarmRestarts(optimizer, T_0=cfg.t0, T_mult=cfg.t_mult,
                                                 eta_min=cfg.eta_min)
    else:
        raise ValueError(f"unknown lr schedule '{cfg.kind}'")
    if cfg.warmup == 0:
        return main
    warm = sched.LinearLR(optimizer, start_factor=cfg.warmup_start, end_factor=1.0,
                          total_iters=cfg.warmup)
    return sched.SequentialLR(optimizer, [warm, main], milestones=[cfg.warmup])
