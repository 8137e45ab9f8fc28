"""Same seed, same metrics on CPU; a trial resumed from a checkpoint ends where an
uninterrupted one does."""

from __future__ import annotations

import pytest
from checkpoints import final_test_metrics, run_keeping_checkpoints

from lstm_harness.suite import load_suite
from lstm_harness.trial import Runtime, execute_trial

RUNTIME = Runtime(tracking_uri=None, experiment_id=None, parent_run_id=None)


quality = final_test_metrics


@pytest.fixture
def trials(tiny_suite):
    return load_suite(tiny_suite(steps=60)).trials()


def test_same_seed_same_metrics(trials):
    first = quality(execute_trial(trials[0], RUNTIME))
    second = quality(execute_trial(trials[0], RUNTIME))
    assert first == second


def test_other_seed_other_metrics(trials):
    seed0, seed1 = trials[0], trials[1]
    assert seed0.seed != seed1.seed
    assert quality(execute_trial(seed0, RUNTIME)) != quality(execute_trial(seed1, RUNTIME))


def test_resume_from_checkpoint_equals_uninterrupted_run(trials):
    full, checkpoints = run_keeping_checkpoints(trials[0], RUNTIME)
    full = quality(full)
    assert len(checkpoints) == 3  # eval_every 20 over 60 steps
    first = checkpoints[0]
    assert first["state"]["step"] == 20
    resumed = quality(execute_trial(trials[0], RUNTIME, resume=first))
    assert resumed == full
