"""Sentence rewards on token ids against sacrebleu and rouge-score on the same sentences."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU

import lstm_harness.training.rewards as rewards_mod
from lstm_harness.training.rewards import (
    REWARDS,
    neg_mae,
    neg_mse,
    rouge_l,
    rouge_n,
    sentence_bleu,
    token_reward,
    token_rewards,
)

TOL = 1e-6
BLEU_METRIC = BLEU(effective_order=True, tokenize="none")
SCORER = RougeScorer(["rouge1", "rouge2", "rouge3", "rougeL"], use_stemmer=False)

Pairs = list[tuple[list[int], list[int]]]


def reference(hyp: list[int], ref: list[int]) -> dict[str, float]:
    """The libraries' scores on the ids joined by spaces."""
    h, r = " ".join(map(str, hyp)), " ".join(map(str, ref))
    rouge = SCORER.score(r, h)  # target (reference) first
    return {"bleu": BLEU_METRIC.sentence_score(h, [r]).score / 100,
            **{k: rouge[k].fmeasure for k in ("rouge1", "rouge2", "rouge3", "rougeL")}}


def batch(pairs: Pairs, rng: random.Random, extra: int = 3,
          pad: int | None = None) -> tuple[torch.Tensor, ...]:
    """hyp, hyp_len, ref, ref_len with padding ``pad``, or random padding (negative and huge
    values too)."""
    lh = max(len(h) for h, _ in pairs) + extra
    lr = max(len(r) for _, r in pairs) + extra

    def padded(rows: list[list[int]], width: int) -> torch.Tensor:
        return torch.tensor([row + [rng.choice([-7, 0, 3, 10**9, rng.randrange(50)])
                                    if pad is None else pad for _ in range(width - len(row))]
                             for row in rows])

    return (padded([h for h, _ in pairs], lh), torch.tensor([len(h) for h, _ in pairs]),
            padded([r for _, r in pairs], lr), torch.tensor([len(r) for _, r in pairs]))


def ours(pairs: Pairs, rng: random.Random) -> dict[str, torch.Tensor]:
    b = batch(pairs, rng)
    out = token_rewards(*b)
    out["rouge3"] = rouge_n(*b, n=3)
    return out


def assert_matches(pairs: Pairs, seed: int = 0) -> float:
    """Compare every reward on every pair; returns the largest absolute difference."""
    got = ours(pairs, random.Random(seed))
    worst = 0.0
    for i, (h, r) in enumerate(pairs):
        for name, value in reference(h, r).items():
            diff = abs(got[name][i].item() - value)
            assert diff <= TOL, (name, h, r, got[name][i].item(), value)
            worst = max(worst, diff)
    return worst


def random_pairs(rng: random.Random, count: int, max_len: int, vocab: tuple[int, ...],
                 ids: list[int] | None = None) -> Pairs:
    """Pairs of random length 0..max_len; the reference is often a noisy copy of the
    hypothesis, so that n-grams (and repeated n-grams) match often."""
    pairs = []
    for _ in range(count):
        v = rng.choice(vocab)
        pool = ids[:v] if ids else list(range(v))
        h = [rng.choice(pool) for _ in range(rng.randint(0, max_len))]
        if h and rng.random() < 0.5:
            r = [t if rng.random() < 0.7 else rng.choice(pool) for t in h]
            r = r[rng.randint(0, 3):][: rng.randint(0, max_len)]
        else:
            r = [rng.choice(pool) for _ in range(rng.randint(0, max_len))]
        pairs.append((h, r))
    return pairs


def test_random_pairs_match_the_libraries() -> None:
    rng = random.Random(1234)
    pairs = random_pairs(rng, 400, 60, vocab=(2, 5, 12, 50))
    assert assert_matches(pairs) < 1e-7  # float32 output


def test_long_sentences_and_large_ids_match_the_libraries() -> None:
    """Several 62-bit mask words (length > 62) and ids split into several digits."""
    rng = random.Random(99)
    assert_matches(random_pairs(rng, 40, 160, vocab=(3, 8)), seed=1)
    # ids that share their low or high digits, so the per-digit tables collide a lot
    big = [(a << 20) | b for a in (1, 5) for b in (3, 7 << 10 | 3, 7)]
    assert max(big) >= 2**22
    assert_matches(random_pairs(rng, 80, 50, vocab=(3, 6), ids=big), seed=2)


EDGES: Pairs = [
    ([], []), ([], [1, 2]), ([1, 2], []), ([3], [3]), ([3], [4]), ([3], [3, 3, 3, 5, 6]),
    ([1, 1, 1, 1], [1]), ([1], [1, 1, 1, 1]), ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
    ([1, 2, 3], [4, 5, 6]), ([1, 2], [2, 1]), ([7, 7, 7, 7, 7, 7], [7, 7, 7]),
    ([1, 2, 1, 2, 1, 2], [2, 1, 2, 1]), ([5, 6, 7], [5, 6, 7, 8, 9, 10, 11]),
    ([0], [0]), ([0, 0], [0]),
]


def test_edge_cases_match_the_libraries() -> None:
    assert_matches(EDGES)
    got = ours(EDGES, random.Random(0))
    for name in ("bleu", "rouge1", "rouge2", "rougeL"):
        assert got[name][:3].tolist() == [0.0, 0.0, 0.0]  # empty hypothesis or reference
        assert got[name][8].item() == 1.0  # identical
        assert got[name][9].item() == 0.0  # disjoint
    assert got["bleu"][3].item() == 1.0  # length-1 hypothesis, exact match


def test_rewards_lie_in_unit_interval_with_default_dtype() -> None:
    rng = random.Random(5)
    out = ours(random_pairs(rng, 100, 30, vocab=(3, 20)), rng)
    for value in out.values():
        assert value.dtype == torch.get_default_dtype() and value.shape == (100,)
        assert bool(((value >= 0) & (value <= 1)).all())


def test_padding_after_the_lengths_does_not_matter() -> None:
    rng = random.Random(7)
    pairs = random_pairs(rng, 60, 25, vocab=(4,))
    one = token_rewards(*batch(pairs, random.Random(1), extra=0))
    for other in (batch(pairs, random.Random(2), extra=9), batch(pairs, rng, pad=0),
                  batch(pairs, rng, pad=2**40)):  # random, 0, huge (more id digits)
        two = token_rewards(*other)
        for name in REWARDS:
            assert torch.equal(one[name], two[name])


def test_rows_are_independent() -> None:
    rng = random.Random(11)
    pairs = random_pairs(rng, 40, 30, vocab=(3, 10))
    hyp, hl, ref, rl = batch(pairs, rng)
    full = token_rewards(hyp, hl, ref, rl)
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))
    shuffled = token_rewards(hyp[perm], hl[perm], ref[perm], rl[perm])
    for name in REWARDS:
        assert torch.equal(shuffled[name], full[name][perm])
    for i in (0, 7, 39):
        alone = token_rewards(hyp[i : i + 1], hl[i : i + 1], ref[i : i + 1], rl[i : i + 1])
        for name in REWARDS:
            assert alone[name].item() == full[name][i].item()


def test_very_long_sentences_match_the_libraries() -> None:
    """Five mask words (popcounts summed in uint16) and more than 255 positions per row."""
    rng = random.Random(21)
    pairs = random_pairs(rng, 12, 320, vocab=(4, 30))
    pairs += [([1, 2] * 150, [2, 1] * 140), (list(range(300)), list(range(299, -1, -1)))]
    assert_matches(pairs, seed=3)


@pytest.mark.parametrize("max_len, ids", [(40, None), (150, [(a << 20) | 5 for a in range(9)])])
def test_shared_references_equal_repeated_references(max_len: int, ids: list[int] | None
                                                     ) -> None:
    """ref [N / K, L]: row s is the reference of hypotheses s*K .. s*K + K - 1 (also with
    several mask words and ids of several digits)."""
    rng = random.Random(17)
    k = 4
    refs = [r for _, r in random_pairs(rng, 15, max_len, vocab=(3, 8), ids=ids)]
    pairs = [(h, refs[i // k]) for i, (h, _) in
             enumerate(random_pairs(rng, 15 * k, max_len, vocab=(3, 8), ids=ids))]
    hyp, hl, ref, rl = batch(pairs, rng, pad=0)
    repeated = token_rewards(hyp, hl, ref, rl)  # runs of k equal rows: looked up once
    shared = token_rewards(hyp, hl, ref[::k], rl[::k])
    one_by_one = ref.clone()
    one_by_one[1::k, -1] = 5  # other padding: rows differ, no runs, one lookup per row
    independent = token_rewards(hyp, hl, one_by_one, rl)
    for name in REWARDS:
        assert torch.equal(shared[name], repeated[name])
        assert torch.equal(shared[name], independent[name])
    assert torch.equal(rouge_n(hyp, hl, ref[::k], rl[::k], n=3), rouge_n(hyp, hl, ref, rl, n=3))
    assert_matches(pairs)
    with pytest.raises(ValueError, match="one reference for each K"):
        token_rewards(hyp, hl, ref[:7], rl[:7])  # 60 hypotheses, 7 references
    with pytest.raises(ValueError, match=r"hyp_len and ref_len must be \[60\] and \[15\]"):
        token_rewards(hyp, hl, ref[::k], rl)


def test_runs_of_repeated_references_are_found() -> None:
    ref = np.array([[1, 2], [1, 2], [1, 2], [3, 4], [3, 4], [3, 4]])
    lengths = np.array([2, 2, 2, 2, 2, 2])
    assert rewards_mod._run_length(ref, lengths) == 3
    assert rewards_mod._run_length(ref[:4], lengths[:4]) == 1  # runs of 3 and 1
    assert rewards_mod._run_length(ref[[0, 1, 3, 4]], lengths[:4]) == 2
    assert rewards_mod._run_length(ref[:3], lengths[:3]) == 3  # one source
    assert rewards_mod._run_length(ref[2:], lengths[2:]) == 1  # first two differ
    assert rewards_mod._run_length(ref, np.array([2, 2, 1, 2, 2, 2])) == 1  # lengths differ
    assert rewards_mod._run_length(ref[[0, 3, 0, 3]], lengths[:4]) == 1


def test_other_integer_dtypes_give_the_same_rewards() -> None:
    rng = random.Random(8)
    hyp, hl, ref, rl = batch(random_pairs(rng, 30, 25, vocab=(5, 40)), rng, pad=0)
    want = token_rewards(hyp, hl, ref, rl)
    got = token_rewards(hyp.int(), hl.int(), ref.short(), rl.to(torch.uint8))
    for name in REWARDS:
        assert torch.equal(got[name], want[name])


def test_token_reward_dispatch_and_unknown_name() -> None:
    assert REWARDS == ("bleu", "rouge1", "rouge2", "rougeL")
    rng = random.Random(13)
    b = batch(random_pairs(rng, 30, 20, vocab=(5,)), rng)
    direct = {"bleu": sentence_bleu(*b), "rouge1": rouge_n(*b, n=1),
              "rouge2": rouge_n(*b, n=2), "rougeL": rouge_l(*b)}
    for name in REWARDS:
        assert torch.equal(token_reward(name, *b), direct[name])
    with pytest.raises(ValueError, match="bleu, rouge1, rouge2, rougeL") as err:
        token_reward("meteor", *b)
    assert "meteor" in str(err.value)
    with pytest.raises(ValueError, match="n >= 1"):
        rouge_n(*b, n=0)


def test_input_checks() -> None:
    hyp = torch.tensor([[1, 2, -5]])
    ok = (hyp, torch.tensor([2]), torch.tensor([[1, 2]]), torch.tensor([2]))
    assert sentence_bleu(*ok).item() == 1.0  # negative padding is fine
    with pytest.raises(ValueError, match="token ids must lie in"):
        sentence_bleu(hyp, torch.tensor([3]), *ok[2:])
    top = torch.iinfo(torch.int64).max  # a padding sentinel
    assert sentence_bleu(torch.tensor([[1, 2, top]]), *ok[1:]).item() == 1.0
    with pytest.raises(ValueError, match="lengths"):
        sentence_bleu(hyp, torch.tensor([4]), *ok[2:])
    with pytest.raises(ValueError, match="same N"):
        sentence_bleu(hyp, torch.tensor([2]), torch.tensor([[1], [2]]), torch.tensor([1, 1]))
    with pytest.raises(TypeError, match="integer"):
        sentence_bleu(hyp.double(), *ok[1:])
    empty = token_rewards(torch.zeros(0, 5, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                          torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert all(v.shape == (0,) for v in empty.values())


def test_neg_mse_and_neg_mae_by_hand() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    target = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    assert neg_mse(pred, target).tolist() == [-0.5, -10.0]  # -(0 + 1) / 2, -(4 + 16) / 2
    assert neg_mae(pred, target).tolist() == [-0.5, -3.0]  # -(0 + 1) / 2, -(2 + 4) / 2
    cube = torch.arange(12.0).view(2, 3, 2)
    assert neg_mse(cube, torch.zeros_like(cube)).tolist() == pytest.approx([-55 / 6, -451 / 6])
    assert neg_mae(torch.tensor([1.0, -2.0]), torch.zeros(2)).tolist() == [-1.0, -2.0]
    with pytest.raises(ValueError, match="same shape"):
        neg_mse(pred, target[:, :1])
