"""Sequential and permuted pixel digits (Le et al. 2015 form on scikit-learn's 8x8 digits):
splits, pure batches, the fixed permutation, the upsampled variant, metrics and reference
rows."""

from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from lstm_harness.registry import load_task_class
from lstm_harness.tasks.pixel_sequence import (
    PixelSequenceParams,
    PixelSequenceTask,
    split_indices,
)


def make(**params) -> PixelSequenceTask:
    return PixelSequenceTask(PixelSequenceParams(**params))


def split_inputs(task: PixelSequenceTask, split: str, batch_size: int = 64):
    batches = list(task.eval_batches(split, batch_size))
    return (torch.cat([b.inputs for b in batches]), torch.cat([b.labels for b in batches]))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    raw = load_digits()
    return torch.tensor(raw.images, dtype=torch.float32), torch.tensor(raw.target)


def test_registry_finds_the_task() -> None:
    cls = load_task_class("pixel_sequence")
    assert cls is PixelSequenceTask
    assert cls.kind == "classify" and cls.output == "classes"
    assert cls.metrics == {"accuracy": "max", "error": "min"}


def test_params_refuse_unknown_keys_and_bad_values() -> None:
    for bad in ({"size": 16}, {"colour": True}, {"n_valid": 0},
                {"n_valid": 1000, "n_test": 797}):
        with pytest.raises(pydantic.ValidationError):
            PixelSequenceParams(**bad)
    assert PixelSequenceParams(size=28).size == 28


def test_shapes_dtypes_and_scaling() -> None:
    task = make()
    assert task.sequence_length == 64 and task.n_outputs == 10 and task.input_features == 1
    assert task.length_bounds == (64, 64)
    batch = task.train_batch(0, 5, 0)
    assert batch.inputs.shape == (5, 64, 1) and batch.inputs.dtype == torch.float32
    assert batch.labels.shape == (5,) and batch.labels.dtype == torch.long
    assert batch.lengths is None and batch.tokens == 5 * 64
    inputs, labels = split_inputs(task, "test")
    assert inputs.min() >= 0 and inputs.max() <= 1 and inputs.max() == 1.0
    assert set(labels.tolist()) == set(range(10))


def test_sequences_are_the_scaled_images_row_major(digits) -> None:
    images, targets = digits
    task = make(n_valid=40, n_test=30, data_seed=5)
    idx = split_indices(len(targets), 40, 30, 5)
    inputs, labels = split_inputs(task, "valid", 7)
    assert torch.equal(labels, targets[idx["valid"]])
    assert torch.equal(inputs[:, :, 0], images[idx["valid"]].reshape(40, 64) / 16)


def test_splits_are_disjoint_and_cover_the_digits(digits) -> None:
    images, _ = digits
    task = make()
    train = task.pool_batch(list(range(task.train_pool_size))).inputs
    valid, _ = split_inputs(task, "valid")
    test, _ = split_inputs(task, "test")
    assert (len(train), len(valid), len(test)) == (1297, 250, 250)
    idx = split_indices(len(images), 250, 250, 0)
    everything = torch.cat([idx["train"], idx["valid"], idx["test"]])
    assert sorted(everything.tolist()) == list(range(len(images)))
    # no image (as a row of pixels) in two splits, by content too: the digits set holds
    # no exact duplicates across these splits
    rows = {k: {tuple(x.flatten().tolist()) for x in v}
            for k, v in (("train", train), ("valid", valid), ("test", test))}
    assert not rows["train"] & rows["valid"]
    assert not rows["train"] & rows["test"]
    assert not rows["valid"] & rows["test"]
    # another data_seed moves images between splits
    assert not torch.equal(split_inputs(make(data_seed=1), "test")[0], test)


def test_training_batches_are_a_pure_function_of_seed_and_step() -> None:
    task, other = make(), make()
    a, b = task.train_batch(3, 16, 1), other.train_batch(3, 16, 1)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, task.train_batch(4, 16, 1).ids)
    assert not torch.equal(a.ids, task.train_batch(3, 16, 2).ids)
    # a training batch is the pool examples draw_pool_ids picks
    ids = task.draw_pool_ids(3, 16, 1)
    assert a.ids.tolist() == ids
    assert torch.equal(task.pool_batch(ids).inputs, a.inputs)
    assert task.pool_lengths() == [64] * task.train_pool_size
    # a length bound the task cannot meet falls back to its one length (the whole pool)
    assert torch.equal(task.train_batch(3, 16, 1, lengths=(1, 10)).ids, a.ids)


def test_eval_batches_are_fixed_and_in_order() -> None:
    for split in ("valid", "test"):
        ours_in, ours_lab = split_inputs(make(), split, 32)
        theirs_in, theirs_lab = split_inputs(make(), split, 100)
        assert torch.equal(ours_in, theirs_in) and torch.equal(ours_lab, theirs_lab)
    ids = torch.cat([b.ids for b in make().eval_batches("valid", 32)])
    assert ids.tolist() == list(range(250))


def test_permutation_is_fixed_and_reorders_every_image() -> None:
    plain, _ = split_inputs(make(), "test")
    permuted, _ = split_inputs(make(permute=True), "test")
    again, _ = split_inputs(make(permute=True), "test")
    other, _ = split_inputs(make(permute=True, permutation_seed=1), "test")
    task = make(permute=True)
    perm = task.permutation
    assert sorted(perm.tolist()) == list(range(64)) and perm.tolist() != list(range(64))
    assert torch.equal(permuted, plain[:, perm])  # the same order for every image
    assert torch.equal(permuted, again)
    assert not torch.equal(permuted, other)
    assert torch.equal(permuted.sort(dim=1).values, plain.sort(dim=1).values)
    assert not torch.equal(permuted, plain)
    # the training pool is permuted the same way
    pool_plain = make().pool_batch([0, 1, 2]).inputs
    assert torch.equal(task.pool_batch([0, 1, 2]).inputs, pool_plain[:, perm])
    assert make().permutation is None


def test_upsampled_variant_is_bilinear_interpolation(digits) -> None:
    images, _ = digits
    task = make(size=28, n_valid=20, n_test=20)
    assert task.sequence_length == 784
    inputs, _ = split_inputs(task, "test")
    assert inputs.shape == (20, 784, 1)
    idx = split_indices(len(images), 20, 20, 0)["test"]
    expected = F.interpolate((images[idx] / 16).unsqueeze(1), size=(28, 28), mode="bilinear",
                             align_corners=False)
    assert torch.allclose(inputs, expected.reshape(20, 784, 1), atol=1e-7)
    assert inputs.min() >= 0 and inputs.max() <= 1
    permuted = make(size=28, n_valid=20, n_test=20, permute=True)
    assert len(permuted.permutation) == 784
    assert torch.equal(split_inputs(permuted, "test")[0], inputs[:, permuted.permutation])
    assert permuted.train_batch(0, 2, 0).inputs.shape == (2, 784, 1)


def test_accuracy_and_error_by_hand() -> None:
    task = make()
    probs = torch.tensor([[0.1, 0.7, 0.2] + [0.0] * 7,   # predicts 1
                          [0.5, 0.2, 0.3] + [0.0] * 7,   # predicts 0
                          [0.0] * 9 + [1.0],             # predicts 9
                          [0.2, 0.2, 0.6] + [0.0] * 7])  # predicts 2
    labels = torch.tensor([1, 2, 9, 2])
    got = task.score(probs, labels)
    assert got["accuracy"] == pytest.approx(3 / 4)
    assert got["error"] == pytest.approx(1 / 4)


def test_majority_reference_is_the_hand_count(digits) -> None:
    _, targets = digits
    task = make()
    idx = split_indices(len(targets), 250, 250, 0)
    counts = torch.bincount(targets[idx["train"]], minlength=10)
    majority = int(counts.argmax())
    for split in ("valid", "test"):
        hand = float((targets[idx[split]] == majority).sum()) / 250
        ref = task.reference_scores(split)["majority"]
        assert ref["accuracy"] == pytest.approx(hand)
        assert ref["error"] == pytest.approx(1 - hand)
        assert 0.05 < hand < 0.2  # ten roughly balanced classes


def test_logistic_regression_reference() -> None:
    refs = make().reference_scores("test")
    logistic = refs["logistic_regression"]
    assert 0.85 <= logistic["accuracy"] <= 1.0
    assert logistic["error"] == pytest.approx(1 - logistic["accuracy"])
    # a permutation of the pixels does not change the linear model's row
    assert make(permute=True).reference_scores("test")["logistic_regression"] == logistic
