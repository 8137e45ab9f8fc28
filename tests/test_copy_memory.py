"""The copy-memory problem (Arjovsky et al. 2016 form): layout, baseline, metrics."""

from __future__ import annotations

import math

import pytest
import torch

from lstm_harness.tasks.copy_memory import (
    BLANK,
    DELIMITER,
    CopyMemoryParams,
    CopyMemoryTask,
    copy_memory_examples,
)


def test_layout_of_an_example() -> None:
    inputs, targets = copy_memory_examples(5, delay=7, symbols=3,
                                           generator=torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (5, 7 + 6)
    data = inputs[:, :3]
    assert bool((data < 8).all())
    assert bool((inputs[:, 3:9] == BLANK).all())  # delay - 1 blanks
    assert bool((inputs[:, 9] == DELIMITER).all())  # the delimiter ends the delay
    assert bool((inputs[:, 10:] == BLANK).all())
    assert bool((targets[:, :10] == BLANK).all())
    assert torch.equal(targets[:, 10:], data)


def test_batches_are_pure_and_held_out_sets_fixed() -> None:
    task = CopyMemoryTask(CopyMemoryParams(delay=10, n_valid=8, n_test=8))
    assert torch.equal(task.train_batch(3, 4, 1).inputs, task.train_batch(3, 4, 1).inputs)
    assert not torch.equal(task.train_batch(3, 4, 1).inputs, task.train_batch(4, 4, 1).inputs)
    assert all(b.reset for b in (task.train_batch(0, 4, 0), task.train_batch(9, 4, 0)))
    other = CopyMemoryTask(CopyMemoryParams(delay=10, n_valid=8, n_test=8))
    for split in ("valid", "test"):
        ours = torch.cat([b.inputs for b in task.eval_batches(split, 3)])
        theirs = torch.cat([b.inputs for b in other.eval_batches(split, 5)])
        assert torch.equal(ours, theirs) and len(ours) == 8


def test_memoryless_baseline_is_the_papers_formula() -> None:
    for delay in (100, 200, 500):
        task = CopyMemoryTask(CopyMemoryParams(delay=delay))
        ref = task.reference_scores("test")["memoryless"]
        assert ref["cross_entropy"] == pytest.approx(10 * math.log(8) / (delay + 20))
        assert ref["accuracy"] == pytest.approx(1 / 8)


def test_memoryless_strategy_scores_its_reference() -> None:
    """Scoring the memoryless predictions (blank for sure, then uniform over 8) gives the
    reference row's cross entropy."""
    task = CopyMemoryTask(CopyMemoryParams(delay=30, n_test=50))
    (batch,) = list(task.eval_batches("test", 50))
    probs = torch.zeros(*batch.targets.shape, 10)
    probs[:, : 30 + 10, BLANK] = 1.0
    probs[:, 30 + 10 :, :8] = 1 / 8
    nll = -probs.gather(2, batch.targets.unsqueeze(-1)).squeeze(-1).log().flatten().double()
    got = task.score(nll, torch.zeros_like(nll, dtype=torch.bool), batch.targets.flatten())
    assert got["cross_entropy"] == pytest.approx(
        task.reference_scores("test")["memoryless"]["cross_entropy"])


def test_accuracy_counts_recall_steps_and_success_threshold() -> None:
    task = CopyMemoryTask(CopyMemoryParams(delay=5, symbols=2, success_accuracy=0.75))
    targets = torch.tensor([BLANK] * 7 + [3, 4] + [BLANK] * 7 + [0, 1])  # 2 examples of 9
    correct = torch.ones(18, dtype=torch.bool)
    correct[7] = False  # one recall miss of four
    correct[2] = False  # blank misses do not count
    got = task.score(torch.zeros(18, dtype=torch.float64), correct, targets)
    assert got["accuracy"] == pytest.approx(0.75) and got["success"] == 1.0
    correct[8] = False
    assert task.score(torch.zeros(18), correct, targets)["success"] == 0.0
