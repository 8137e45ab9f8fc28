"""The long_addition task (multi-digit addition; Zaremba & Sutskever 2014) and how curricula
draw from it."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from lstm_harness.tasks.base import N_SPECIAL, strip_special
from lstm_harness.tasks.long_addition import PLUS, AdditionParams, AdditionTask, operands
from lstm_harness.training.curriculum import Curriculum, CurriculumConfig


def number(ids: list[int]) -> int:
    return int("".join(str(t - N_SPECIAL) for t in ids))


def test_source_is_a_plus_b_and_target_is_the_sum() -> None:
    task = AdditionTask(AdditionParams(digits=5))
    batch = task.train_batch(0, 64, seed=3)
    for src, tgt in zip(batch.src.tolist(), batch.tgt.tolist(), strict=True):
        src = strip_special(src)
        plus = src.index(PLUS)
        a, b = number(src[:plus]), number(src[plus + 1:])
        assert len(str(a)) == len(str(b)) == 5  # the target difficulty, no leading zero
        assert number(strip_special(tgt)) == a + b
    assert task.detokenize(batch.src[0].tolist(), "src").count("+") == 1


def test_batches_are_pure_functions_of_seed_and_step() -> None:
    task = AdditionTask(AdditionParams(digits=4))
    first, again = task.train_batch(7, 16, seed=1), task.train_batch(7, 16, seed=1)
    assert torch.equal(first.src, again.src) and torch.equal(first.tgt, again.tgt)
    assert not torch.equal(first.src, task.train_batch(8, 16, seed=1).src)


def test_curriculum_lengths_choose_digit_counts() -> None:
    task = AdditionTask(AdditionParams(digits=6, min_digits=1))
    assert task.length_bounds == (1, 6)
    batch = task.train_batch(0, 400, seed=0, lengths=(2, 3))
    widths = {len(task.detokenize(row, "src").split("+")[0]) for row in batch.src.tolist()}
    assert widths == {2, 3}
    one_digit = operands(torch.ones(500, dtype=torch.long), torch.Generator().manual_seed(0))
    assert int(one_digit.min()) == 0 and int(one_digit.max()) == 9


def test_held_out_sets_are_fixed_and_at_the_target_difficulty() -> None:
    a, b = AdditionTask(AdditionParams(digits=3)), AdditionTask(AdditionParams(digits=3))
    test_a, test_b = next(a.eval_batches("test", 50)), next(b.eval_batches("test", 50))
    assert torch.equal(test_a.src, test_b.src)
    assert not torch.equal(test_a.src, next(a.eval_batches("valid", 50)).src)
    assert sum(x.size for x in a.eval_batches("test", 300)) == 1000
    for row in test_a.src.tolist():
        left, right = a.detokenize(row, "src").split("+")
        assert len(left) == len(right) == 3


def test_score_by_hand() -> None:
    task = AdditionTask(AdditionParams(digits=2))
    d = [N_SPECIAL + k for k in range(10)]
    refs = [[d[1], d[2], d[3]], [d[9], d[9]]]
    hyps = [[d[1], d[2], d[3]], [d[9], d[8]]]
    assert task.score(hyps, refs) == pytest.approx({"exact_match": 0.5,
                                                   "token_accuracy": 4 / 5})


def test_params_are_checked() -> None:
    with pytest.raises(ValidationError, match="min_digits"):
        AdditionParams(digits=2, min_digits=3)
    with pytest.raises(ValidationError):
        AdditionParams(digits=0)


def test_baseline_trains_at_the_target_and_mix_over_the_whole_range() -> None:
    task = AdditionTask(AdditionParams(digits=4, min_digits=1))

    def widths(kind: str) -> set[int]:
        curriculum = Curriculum(CurriculumConfig(kind=kind), task, total_steps=10)
        batch = curriculum.batch(0, 200, seed=0)
        return {len(task.detokenize(r, "src").split("+")[0]) for r in batch.src.tolist()}

    assert widths("none") == {4}
    assert widths("mix") == {1, 2, 3, 4}
