"""Run a trial in-process and keep its checkpoints as a Ray trial would see them."""

from __future__ import annotations

import io
from typing import Any

import torch

from lstm_harness.trial import Runtime, execute_trial
from lstm_harness.trial_spec import TrialSpec


def run_keeping_checkpoints(trial: TrialSpec, runtime: Runtime
                            ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The trial's final metrics and every checkpoint it reported, each round-tripped through
    ``torch.save`` / ``torch.load(weights_only=True)`` like a checkpoint file."""
    saved: list[bytes] = []

    def keep(metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        if payload is not None:
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            saved.append(buffer.getvalue())

    final = execute_trial(trial, runtime, report=keep)
    return final, [torch.load(io.BytesIO(b), weights_only=True) for b in saved]


def final_test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("test.")}
