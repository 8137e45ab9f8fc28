"""The random-number generator states a checkpoint carries, so a resumed trial continues
exactly: the CPU generator's, and each CUDA device's once the process has used CUDA."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CPU_KEY", "CUDA_KEY", "restore_rng_state", "rng_state"]

CPU_KEY = "rng"  # torch.get_rng_state()
CUDA_KEY = "cuda_rng"  # torch.cuda.get_rng_state_all(): one state per visible device


def rng_state() -> dict[str, Any]:
    """``{"rng": CPU state}`` plus ``{"cuda_rng": [state per device]}`` when CUDA is available
    and initialised (a process that never touched CUDA has drawn nothing from it, and asking
    would start a CUDA context for nothing)."""
    out: dict[str, Any] = {CPU_KEY: torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out[CUDA_KEY] = torch.cuda.get_rng_state_all()
    return out


def restore_rng_state(saved: dict[str, Any]) -> None:
    """Set the generators from :func:`rng_state`'s keys in ``saved`` (a checkpoint): the CPU
    state, and each CUDA device's state for the devices present now (checkpoints without
    CUDA states restore the CPU state only)."""
    torch.set_rng_state(saved[CPU_KEY])
    states = saved.get(CUDA_KEY)
    if states and torch.cuda.is_available():
        for device, state in enumerate(states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
