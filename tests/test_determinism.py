"""Same seed, same metrics on CPU; a trial resumed from a checkpoint ends where an
uninterrupted one does."""

from __future__ import annotations

import io

import pytest
import torch

from harness.suite import load_suite
from harness.trial import Runtime, execute_trial

RUNTIME = Runtime(tracking_uri=None, experiment_id=None, parent_run_id=None)


def quality(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("test.")}


@pytest.fixture
def trials(tiny_suite):
    return load_suite(tiny_suite(steps=60)).trials()


def test_same_seed_same_metrics(trials):
    first = quality(execute_trial(trials[0], RUNTIME))
    second = quality(execute_trial(trials[0], RUNTIME))
    assert first == second


def test_other_seed_other_metrics(trials):
    seed0, seed1 = trials[0], trials[1]
    assert seed0["seed"] != seed1["seed"]
    assert quality(execute_trial(seed0, RUNTIME)) != quality(execute_trial(seed1, RUNTIME))


def test_resume_from_checkpoint_equals_uninterrupted_run(trials):
    checkpoints: list[bytes] = []

    def keep(metrics, payload):
        if payload is not None:
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            checkpoints.append(buffer.getvalue())

    full = quality(execute_trial(trials[0], RUNTIME, report=keep))
    assert len(checkpoints) == 3  # eval_every 20 over 60 steps
    first = torch.load(io.BytesIO(checkpoints[0]), weights_only=True)
    assert first["state"]["step"] == 20
    resumed = quality(execute_trial(trials[0], RUNTIME, resume=first))
    assert resumed == full
