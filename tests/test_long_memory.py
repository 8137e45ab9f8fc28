"""The adding problem (Le et al. 2015 / Arjovsky et al. 2016 form) and the temporal order
problem (Hochreiter & Schmidhuber 1997, Experiment 6a): layouts recomputed from the inputs,
pure batches, fixed held-out sets, metrics by hand, reference rows."""

from __future__ import annotations

import pydantic
import pytest
import torch

from lstm_harness.registry import load_task_class
from lstm_harness.tasks.adding import AddingParams, AddingTask
from lstm_harness.tasks.temporal_order import (
    END,
    START,
    SYMBOLS,
    TemporalOrderParams,
    TemporalOrderTask,
    X,
    Y,
)


def cat_split(task, split: str, batch_size: int):
    batches = list(task.eval_batches(split, batch_size))
    return batches, torch.cat([b.inputs for b in batches]), torch.cat([b.labels for b in batches])


def test_registry_finds_both_tasks() -> None:
    assert load_task_class("adding") is AddingTask
    assert load_task_class("temporal_order") is TemporalOrderTask
    assert AddingTask.kind == TemporalOrderTask.kind == "classify"
    assert AddingTask.output == "values" and TemporalOrderTask.output == "classes"


@pytest.mark.parametrize("bad", [{"length": 0}, {"length": 1}, {"lenght": 100},
                                 {"min_length": 50, "length": 40}, {"success_mse": 0},
                                 {"n_test": 0}])
def test_adding_params_refuse_bad_values(bad) -> None:
    with pytest.raises(pydantic.ValidationError):
        AddingParams(**bad)


@pytest.mark.parametrize("bad", [{"length": 0}, {"length": 9}, {"symbols": 8},
                                 {"min_length": 120, "length": 110}, {"success_error": 2}])
def test_temporal_order_params_refuse_bad_values(bad) -> None:
    with pytest.raises(pydantic.ValidationError):
        TemporalOrderParams(**bad)


# -- adding ------------------------------------------------------------------------------------
def check_adding_layout(inputs: torch.Tensor, labels: torch.Tensor,
                        lengths: list[int]) -> None:
    """Exactly two markers, one in each half of each sequence's own length; label = the sum of
    the marked values (recomputed by hand); values in [0, 1); zeros after the end."""
    for row, length in enumerate(lengths):
        values, markers = inputs[row, :, 0], inputs[row, :, 1]
        marked = [t for t in range(inputs.shape[1]) if markers[t] != 0]
        assert len(marked) == 2 and all(markers[t] == 1.0 for t in marked)
        first, second = marked
        assert 0 <= first < length // 2 <= second < length
        assert float(labels[row, 0]) == pytest.approx(float(values[first] + values[second]),
                                                      abs=1e-6)
        assert bool((values[:length] >= 0).all() and (values[:length] < 1).all())
        assert bool((inputs[row, length:] == 0).all())


def test_adding_layout_shapes_and_labels() -> None:
    task = AddingTask(AddingParams(length=30, n_valid=20, n_test=20))
    assert (task.sequence_length, task.input_features, task.n_outputs) == (30, 2, 1)
    assert task.length_bounds == (30, 30)
    batch = task.train_batch(0, 50, 7)
    assert batch.inputs.shape == (50, 30, 2) and batch.inputs.dtype == torch.float32
    assert batch.labels.shape == (50, 1) and batch.labels.dtype == torch.float32
    assert batch.lengths is None
    check_adding_layout(batch.inputs, batch.labels, [30] * 50)
    _, inputs, labels = cat_split(task, "test", 6)
    check_adding_layout(inputs, labels, [30] * 20)
    # both halves are used: markers spread over their halves, not stuck at one position
    firsts = batch.inputs[:, :, 1].argmax(dim=1)
    assert len(set(firsts.tolist())) > 5


def test_adding_odd_length_halves() -> None:
    task = AddingTask(AddingParams(length=7))
    batch = task.train_batch(0, 200, 0)
    check_adding_layout(batch.inputs, batch.labels, [7] * 200)
    positions = batch.inputs[:, :, 1].nonzero()[:, 1]
    assert set(positions.tolist()) == set(range(7))  # every step can be marked


def test_adding_variable_lengths() -> None:
    task = AddingTask(AddingParams(length=40, min_length=10))
    assert task.length_bounds == (10, 40)
    batch = task.train_batch(2, 64, 0)
    assert batch.lengths is not None and batch.inputs.shape[1] == int(batch.lengths.max())
    assert int(batch.lengths.min()) >= 10 and len(set(batch.lengths.tolist())) > 3
    check_adding_layout(batch.inputs, batch.labels, batch.lengths.tolist())
    short = task.train_batch(2, 64, 0, lengths=(10, 12))
    assert set(short.lengths.tolist()) <= {10, 11, 12}
    check_adding_layout(short.inputs, short.labels, short.lengths.tolist())
    _, inputs, _ = cat_split(task, "valid", 100)
    assert inputs.shape[1] == 40  # held-out sequences at the full length
    assert next(iter(task.eval_batches("valid", 8))).lengths is None


def test_adding_batches_pure_and_held_out_fixed() -> None:
    task = AddingTask(AddingParams(length=20, n_valid=9, n_test=9))
    other = AddingTask(AddingParams(length=20, n_valid=9, n_test=9))
    assert torch.equal(task.train_batch(3, 4, 1).inputs, other.train_batch(3, 4, 1).inputs)
    assert torch.equal(task.train_batch(3, 4, 1).labels, other.train_batch(3, 4, 1).labels)
    assert not torch.equal(task.train_batch(3, 4, 1).inputs, task.train_batch(4, 4, 1).inputs)
    assert not torch.equal(task.train_batch(3, 4, 1).inputs, task.train_batch(3, 4, 2).inputs)
    for split in ("valid", "test"):
        ours, a_in, a_lab = cat_split(task, split, 4)
        _, b_in, b_lab = cat_split(other, split, 5)
        assert torch.equal(a_in, b_in) and torch.equal(a_lab, b_lab) and len(a_in) == 9
        assert torch.cat([b.ids for b in ours]).tolist() == list(range(9))
    assert not torch.equal(cat_split(task, "valid", 9)[1], cat_split(task, "test", 9)[1])


def test_adding_mse_and_success_threshold_by_hand() -> None:
    task = AddingTask(AddingParams(success_mse=0.01))
    labels = torch.tensor([[1.0], [0.5], [1.5], [0.2]])
    outputs = torch.tensor([[1.1], [0.5], [1.4], [0.2]])  # squared errors .01, 0, .01, 0
    got = task.score(outputs, labels)
    assert got["mse"] == pytest.approx(0.005) and got["success"] == 1.0
    outputs = torch.tensor([[1.2], [0.5], [1.4], [0.2]])  # .04, 0, .01, 0 -> 0.0125
    got = task.score(outputs, labels)
    assert got["mse"] == pytest.approx(0.0125) and got["success"] == 0.0
    lenient = AddingTask(AddingParams(success_mse=0.02))
    assert lenient.score(outputs, labels)["success"] == 1.0


def test_adding_memoryless_reference() -> None:
    task = AddingTask(AddingParams())
    for split in ("valid", "test"):
        ref = task.reference_scores(split)["memoryless"]
        assert ref["mse"] == pytest.approx(1 / 6, abs=0.02)
        assert ref["success"] == 0.0
        _, _, labels = cat_split(task, split, 256)
        assert ref["mse"] == pytest.approx(float(((labels.double() - 1) ** 2).mean()))
        assert task.score(torch.ones_like(labels), labels) == ref


# -- temporal order ----------------------------------------------------------------------------
def decode(inputs: torch.Tensor) -> list[list[str]]:
    """One-hot rows -> symbol names ('' for padding)."""
    out = []
    for seq in inputs:
        out.append([SYMBOLS[int(v.argmax())] if v.sum() > 0 else "" for v in seq])
    return out


def check_temporal_layout(inputs: torch.Tensor, labels: torch.Tensor,
                          lengths: list[int], shortest: int) -> None:
    """E first, B last, X/Y only at one position in each relevant range, distractors
    elsewhere; the class recomputed from the two relevant symbols."""
    assert bool(((inputs == 0) | (inputs == 1)).all())
    classes = {("X", "X"): 0, ("X", "Y"): 1, ("Y", "X"): 2, ("Y", "Y"): 3}
    for row, (seq, length) in enumerate(zip(decode(inputs), lengths, strict=True)):
        assert seq[0] == "E" and seq[length - 1] == "B"
        assert all(s == "" for s in seq[length:])
        relevant = [t for t, s in enumerate(seq) if s in ("X", "Y")]
        assert len(relevant) == 2
        t1, t2 = relevant
        assert max(1, shortest // 10) <= t1 <= shortest // 5
        assert shortest // 2 <= t2 <= 3 * shortest // 5
        others = [s for t, s in enumerate(seq[1:length - 1], 1) if t not in relevant]
        assert set(others) <= {"a", "b", "c", "d"}
        assert int(labels[row]) == classes[(seq[t1], seq[t2])]


def test_temporal_order_hochreiter_ranges() -> None:
    task = TemporalOrderTask(TemporalOrderParams(n_valid=50, n_test=50))
    assert (task.sequence_length, task.input_features, task.n_outputs) == (100, 8, 4)
    assert SYMBOLS[X] == "X" and SYMBOLS[Y] == "Y" and SYMBOLS[START] == "E"
    assert SYMBOLS[END] == "B"
    batch = task.train_batch(0, 300, 3)
    assert batch.inputs.shape == (300, 100, 8) and batch.inputs.dtype == torch.float32
    assert batch.labels.shape == (300,) and batch.labels.dtype == torch.long
    assert batch.lengths is None
    check_temporal_layout(batch.inputs, batch.labels, [100] * 300, 100)
    # H&S's ranges: t1 over 10..20 and t2 over 50..60, all four classes
    relevant = (batch.inputs[:, :, X] + batch.inputs[:, :, Y]).nonzero()
    t1 = relevant[0::2, 1].tolist()
    t2 = relevant[1::2, 1].tolist()
    assert set(t1) == set(range(10, 21)) and set(t2) == set(range(50, 61))
    assert set(batch.labels.tolist()) == {0, 1, 2, 3}
    _, inputs, labels = cat_split(task, "test", 16)
    check_temporal_layout(inputs, labels, [100] * 50, 100)


def test_temporal_order_variable_lengths_as_hochreiter() -> None:
    task = TemporalOrderTask(TemporalOrderParams(length=110, min_length=100))
    assert task.length_bounds == (100, 110)
    batch = task.train_batch(1, 100, 0)
    assert batch.lengths is not None and batch.inputs.shape[1] == int(batch.lengths.max())
    assert set(batch.lengths.tolist()) <= set(range(100, 111))
    assert len(set(batch.lengths.tolist())) > 3
    check_temporal_layout(batch.inputs, batch.labels, batch.lengths.tolist(), 100)
    _, inputs, _ = cat_split(task, "valid", 100)
    assert inputs.shape[1] == 110
    small = TemporalOrderTask(TemporalOrderParams(length=10))
    check_temporal_layout(small.train_batch(0, 50, 0).inputs, small.train_batch(0, 50, 0).labels,
                          [10] * 50, 10)


def test_temporal_order_batches_pure_and_held_out_fixed() -> None:
    task = TemporalOrderTask(TemporalOrderParams(length=30, n_valid=7, n_test=7))
    other = TemporalOrderTask(TemporalOrderParams(length=30, n_valid=7, n_test=7))
    a, b = task.train_batch(5, 8, 2), other.train_batch(5, 8, 2)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs, task.train_batch(6, 8, 2).inputs)
    for split in ("valid", "test"):
        _, x1, y1 = cat_split(task, split, 3)
        _, x2, y2 = cat_split(other, split, 7)
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and len(x1) == 7


def test_temporal_order_metrics_by_hand() -> None:
    task = TemporalOrderTask(TemporalOrderParams(success_error=0.3))
    labels = torch.tensor([0, 1, 2, 3])
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1],
                          [0.2, 0.5, 0.2, 0.1],
                          [0.1, 0.1, 0.2, 0.6],   # wrong: predicts 3
                          [0.0, 0.0, 0.0, 1.0]])
    got = task.score(probs, labels)
    assert got["accuracy"] == pytest.approx(0.75) and got["error"] == pytest.approx(0.25)
    assert got["success"] == 1.0  # 0.25 < 0.3
    strict = TemporalOrderTask(TemporalOrderParams(success_error=0.25))
    assert strict.score(probs, labels)["success"] == 0.0  # 0.25 is not under 0.25


def test_temporal_order_majority_reference() -> None:
    task = TemporalOrderTask(TemporalOrderParams())
    for split in ("valid", "test"):
        _, _, labels = cat_split(task, split, 250)
        counts = [int((labels == k).sum()) for k in range(4)]
        ref = task.reference_scores(split)["majority"]
        assert ref["accuracy"] == pytest.approx(max(counts) / len(labels))
        assert ref["error"] == pytest.approx(1 - max(counts) / len(labels))
        assert ref["success"] == 0.0
        assert 0.2 < ref["accuracy"] < 0.32
