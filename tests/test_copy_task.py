"""Tests of the copy / reverse / copy-memory task."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from lstm_harness.tasks.base import EOS, N_SPECIAL, PAD, Seq2SeqBatch
from lstm_harness.tasks.copy import CopyParams, CopyTask


def make(**kwargs: object) -> CopyTask:
    return CopyTask(CopyTask.Params(**kwargs))


def rows(batch: Seq2SeqBatch) -> list[tuple[list[int], list[int]]]:
    """(src, tgt-without-EOS) token lists of every example in a batch."""
    out = []
    for i in range(batch.size):
        s = batch.src[i, : int(batch.src_len[i])].tolist()
        t = batch.tgt[i, : int(batch.tgt_len[i]) - 1].tolist()
        out.append((s, t))
    return out


# ---------------------------------------------------------------------- params


def test_params_defaults() -> None:
    p = CopyTask.Params()
    assert CopyTask.Params is CopyParams
    assert (p.variant, p.vocab, p.min_len, p.max_len, p.delay) == ("copy", 10, 5, 20, 10)
    assert (p.n_valid, p.n_test, p.data_seed) == (256, 512, 1234)
    assert CopyTask.name == "copy" and CopyTask.kind == "seq2seq"
    assert CopyTask.metric_names() == [
        "exact_match", "exact_match_tf", "token_accuracy", "token_accuracy_tf"]


def test_params_min_len_above_max_len() -> None:
    with pytest.raises(ValidationError, match="min_len"):
        CopyTask.Params(min_len=8, max_len=7)


def test_params_unknown_key() -> None:
    with pytest.raises(ValidationError, match="vocab_size") as info:
        CopyTask.Params(vocab_size=5)
    assert info.value.errors()[0]["type"] == "extra_forbidden"


def test_params_bad_variant() -> None:
    with pytest.raises(ValidationError, match="variant") as info:
        CopyTask.Params(variant="sort")
    assert "'copy', 'reverse' or 'memory'" in str(info.value)


@pytest.mark.parametrize("field,value", [("vocab", 1), ("min_len", 0), ("delay", -1),
                                         ("n_valid", 0), ("n_test", 0)])
def test_params_field_bounds(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        CopyTask.Params(**{field: value})


# ---------------------------------------------------------------------- variants


def test_copy_variant() -> None:
    task = make(variant="copy", vocab=7)
    assert (task.src_vocab_size, task.tgt_vocab_size, task.max_target_len) == (10, 10, 20)
    for src, tgt in rows(task.train_batch(0, 32, seed=1)):
        assert src == tgt


def test_reverse_variant() -> None:
    task = make(variant="reverse", vocab=7)
    assert (task.src_vocab_size, task.tgt_vocab_size) == (10, 10)
    assert task.make_example([3, 4, 5]) == ([3, 4, 5], [5, 4, 3])
    for src, tgt in rows(task.train_batch(0, 32, seed=1)):
        assert tgt == src[::-1]


def test_memory_variant() -> None:
    task = make(variant="memory", vocab=8, delay=6, min_len=3, max_len=9)
    blank, delim = N_SPECIAL + 8, N_SPECIAL + 9
    assert (task.blank_id, task.delimiter_id) == (blank, delim)
    assert (task.src_vocab_size, task.tgt_vocab_size, task.max_target_len) == (13, 11, 9)
    assert task.make_example([3, 4]) == ([3, 4] + [blank] * 6 + [delim], [3, 4])
    batch = task.train_batch(3, 32, seed=5)
    for src, tgt in rows(batch):
        n = len(tgt)
        assert len(src) == n + 6 + 1
        assert src[:n] == tgt
        assert src[n:n + 6] == [blank] * 6
        assert src[-1] == delim
        assert all(N_SPECIAL <= t < N_SPECIAL + 8 for t in tgt)
    assert int(batch.src.max()) == delim < task.src_vocab_size
    assert int(batch.tgt.max()) < task.tgt_vocab_size


def test_memory_zero_delay() -> None:
    task = make(variant="memory", vocab=4, delay=0)
    assert task.make_example([5, 6]) == ([5, 6, task.delimiter_id], [5, 6])


@pytest.mark.parametrize("variant", ["copy", "reverse", "memory"])
def test_lengths_and_symbols_within_bounds(variant: str) -> None:
    task = make(variant=variant, vocab=5, min_len=2, max_len=6, delay=3,
                n_valid=50, n_test=50)
    batches = [task.train_batch(s, 64, seed=0) for s in range(5)]
    batches += list(task.eval_batches("valid", 16)) + list(task.eval_batches("test", 16))
    seen_lengths: set[int] = set()
    for batch in batches:
        for _, tgt in rows(batch):
            assert 2 <= len(tgt) <= 6
            assert all(N_SPECIAL <= t < N_SPECIAL + 5 for t in tgt)
            seen_lengths.add(len(tgt))
    assert seen_lengths == {2, 3, 4, 5, 6}


def test_tgt_eos_and_padding() -> None:
    task = make(variant="memory", min_len=1, max_len=12, delay=2)
    batch = task.train_batch(0, 40, seed=3)
    assert batch.tgt.shape == (40, int(batch.tgt_len.max()))
    assert batch.src.shape == (40, int(batch.src_len.max()))
    assert batch.ids.tolist() == [-1] * 40
    for i in range(batch.size):
        t_len, s_len = int(batch.tgt_len[i]), int(batch.src_len[i])
        assert int(batch.tgt[i, t_len - 1]) == EOS
        assert (batch.tgt[i, : t_len - 1] >= N_SPECIAL).all()
        assert (batch.tgt[i, t_len:] == PAD).all()
        assert (batch.src[i, :s_len] >= N_SPECIAL).all()  # no EOS on the source
        assert (batch.src[i, s_len:] == PAD).all()
        assert s_len == t_len - 1 + 2 + 1


# ---------------------------------------------------------------------- determinism


def test_train_batch_deterministic() -> None:
    a = make(variant="reverse").train_batch(7, 16, seed=42)
    b = make(variant="reverse").train_batch(7, 16, seed=42)
    for name in ("src", "src_len", "tgt", "tgt_len", "ids"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    c = make(variant="reverse").train_batch(8, 16, seed=42)
    d = make(variant="reverse").train_batch(7, 16, seed=43)
    assert not torch.equal(a.tgt[:, :5], c.tgt[:, :5])
    assert not torch.equal(a.tgt[:, :5], d.tgt[:, :5])


def test_train_batch_pure_wrt_call_order() -> None:
    task = make()
    first = task.train_batch(3, 8, seed=0)
    task.train_batch(4, 8, seed=0)
    again = task.train_batch(3, 8, seed=0)
    assert torch.equal(first.src, again.src) and torch.equal(first.tgt, again.tgt)


def test_held_out_fixed_across_trial_seeds_and_instances() -> None:
    t1, t2 = make(), make()
    t1.train_batch(0, 4, seed=1)
    t2.train_batch(0, 4, seed=999)
    for split in ("valid", "test"):
        b1 = list(t1.eval_batches(split, 64))
        b2 = list(t2.eval_batches(split, 64))
        assert len(b1) == len(b2)
        for x, y in zip(b1, b2, strict=True):
            assert torch.equal(x.src, y.src) and torch.equal(x.tgt, y.tgt)
    assert t1.split_sequences("valid") != t1.split_sequences("test")[:256]
    other = make(data_seed=1235)
    assert other.split_sequences("valid") != t1.split_sequences("valid")


def test_no_training_example_in_held_out_sets() -> None:
    # 2**4 = 16 possible sequences; up to 8 of them are held out.
    task = make(vocab=2, min_len=4, max_len=4, n_valid=4, n_test=4)
    held = {tuple(x) for s in ("valid", "test") for x in task.split_sequences(s)}
    assert 1 <= len(held) <= 8
    seen: set[tuple[int, ...]] = set()
    for step in range(200):
        for _, tgt in rows(task.train_batch(step, 32, seed=step % 3)):
            seen.add(tuple(tgt))
    assert not seen & held
    assert len(seen) == 16 - len(held)  # every other sequence does occur


def test_exhausted_training_space_is_an_error() -> None:
    task = make(vocab=2, min_len=1, max_len=1, n_valid=50, n_test=50)
    with pytest.raises(ValueError, match="no training data"):
        task.train_batch(0, 4, seed=0)


# ---------------------------------------------------------------------- eval batches


@pytest.mark.parametrize("split,n", [("valid", 23), ("test", 40)])
def test_eval_batches_cover_split_once(split: str, n: int) -> None:
    task = make(n_valid=23, n_test=40)
    batches = list(task.eval_batches(split, 8))
    assert [b.size for b in batches] == [8] * (n // 8) + ([n % 8] if n % 8 else [])
    ids = torch.cat([b.ids for b in batches]).tolist()
    assert ids == list(range(n))
    targets = [t for b in batches for _, t in rows(b)]
    assert targets == task.split_sequences(split)


def test_eval_batches_bad_split() -> None:
    with pytest.raises(ValueError, match="valid, test"):
        make().eval_batches("train", 8)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- score


def test_score_hand_computed() -> None:
    task = make()
    got = task.score([[3, 4, 5], [3, 4]], [[3, 4, 5], [3, 5, 6]])
    assert got["exact_match"] == pytest.approx(0.5)
    assert got["token_accuracy"] == pytest.approx(4 / 6)
    assert set(got) == set(CopyTask.metrics)


def test_score_short_and_long_hyps() -> None:
    task = make()
    # Missing positions count as wrong; extra tokens are ignored for token accuracy.
    got = task.score([[], [3, 4, 5, 6, 7]], [[3, 4], [3, 4, 5]])
    assert got == {"exact_match": 0.0, "token_accuracy": pytest.approx(3 / 5)}
    assert task.score([[3]], [[3]]) == {"exact_match": 1.0, "token_accuracy": 1.0}


def test_score_errors() -> None:
    task = make()
    with pytest.raises(ValueError):
        task.score([], [])
    with pytest.raises(ValueError):
        task.score([[3]], [[3], [4]])
