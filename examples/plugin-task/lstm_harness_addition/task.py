"""Addition: read "a+b" digit by digit, write the digits of a + b.

Source: the digits of ``a``, a '+' token, the digits of ``b`` (e.g. "47+385").
Target: the digits of the sum, most significant first (e.g. "432"), then EOS.

Token ids follow ``lstm_harness.tasks.base``: 0 PAD, 1 BOS, 2 EOS; the digits 0-9 are ids 3-12
and '+' is id 13 (source only).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar, Literal

import torch
from lstm_harness.tasks.base import (
    N_SPECIAL,
    Direction,
    Seq2SeqBatch,
    Task,
    TaskParams,
    pad_sequences,
    strip_special,
)
from pydantic import Field, model_validator

SYMBOLS = "0123456789+"  # token id = N_SPECIAL + position in this string
PLUS = N_SPECIAL + SYMBOLS.index("+")
TEXT = ["<pad>", "<bos>", "<eos>", *SYMBOLS]  # the text of every token id

Pair = tuple[int, int]  # one example: the operands (a, b)


class AdditionParams(TaskParams):
    """What a suite may set under ``params:`` (unknown keys are errors)."""

    max_digits: int = Field(3, ge=1, le=18, description="longest operand, in digits")
    n_valid: int = Field(256, ge=1, description="examples in the validation split")
    n_test: int = Field(512, ge=1, description="examples in the test split")
    data_seed: int = Field(1234, description="seed of the held-out splits (not the trial seed)")

    @model_validator(mode="after")
    def _leave_training_data(self) -> AdditionParams:
        pairs = 10 ** (2 * self.max_digits)
        if self.n_valid + self.n_test > pairs // 2:
            raise ValueError(f"n_valid + n_test ({self.n_valid + self.n_test}) must be at most "
                             f"half of the {pairs} possible pairs with max_digits "
                             f"{self.max_digits}, to leave examples for training")
        return self


def digits(n: int) -> list[int]:
    """Token ids of the decimal digits of ``n``."""
    return [N_SPECIAL + int(c) for c in str(n)]


def correct_digits(hyp: list[int], ref: list[int]) -> int:
    """Positions i < len(ref) where hyp[i] == ref[i]; missing digits are wrong, extra ignored."""
    return sum(h == r for h, r in zip(hyp, ref, strict=False))


class AdditionTask(Task):
    """Add two non-negative integers of 1 to ``max_digits`` digits.

    Each operand's number of digits is uniform in 1..max_digits, then its value uniform among
    the numbers with that many digits, so short and long operands are equally common.

    The valid and test splits are distinct pairs drawn once from ``data_seed``: the same for
    every trial. Training pairs are drawn from (seed, step) and a pair that is in a held-out
    split is drawn again, so the model is never trained on a held-out example.
    """

    name: ClassVar[str] = "addition"
    kind: ClassVar[Literal["seq2seq", "forecast"]] = "seq2seq"
    Params: ClassVar[type[TaskParams]] = AdditionParams
    metrics: ClassVar[dict[str, Direction]] = {"exact_match": "max", "digit_accuracy": "max"}

    params: AdditionParams  # set by Task.__init__(params)

    # -- vocabulary and lengths -----------------------------------------------------------

    @property
    def src_vocab_size(self) -> int:
        return N_SPECIAL + len(SYMBOLS)  # digits and '+'

    @property
    def tgt_vocab_size(self) -> int:
        return N_SPECIAL + 10  # digits only

    @property
    def max_target_len(self) -> int:
        return self.params.max_digits + 1  # 999 + 999 = 1998

    def token_text(self, token: int, side: Literal["src", "tgt"] = "tgt") -> str:
        """One token's text (figure labels): "0".."9", "+", or <pad>, <bos>, <eos>."""
        return TEXT[token] if 0 <= token < len(TEXT) else str(token)

    def detokenize(self, ids: list[int], side: Literal["src", "tgt"] = "tgt") -> str:
        """Text of token ids, e.g. [7, 6, 5, EOS, PAD] -> "432" (cut at the first EOS)."""
        return "".join(self.token_text(t) for t in strip_special(ids))

    # -- examples ---------------------------------------------------------------------------

    def _operand(self, rng: random.Random) -> int:
        n = rng.randint(1, self.params.max_digits)
        return rng.randrange(0 if n == 1 else 10 ** (n - 1), 10**n)

    def _batch(self, pairs: list[Pair], ids: torch.Tensor) -> Seq2SeqBatch:
        src, src_len = pad_sequences([digits(a) + [PLUS] + digits(b) for a, b in pairs])
        tgt, tgt_len = pad_sequences([digits(a + b) for a, b in pairs], append_eos=True)
        return Seq2SeqBatch(src=src, src_len=src_len, tgt=tgt, tgt_len=tgt_len, ids=ids)

    @cached_property
    def held_out(self) -> dict[str, list[Pair]]:
        """The fixed pairs of the "valid" and "test" splits: distinct, drawn from data_seed."""
        p = self.params
        rng = random.Random(p.data_seed)
        pairs: dict[Pair, None] = {}  # a dict: no duplicates, and it keeps the drawing order
        while len(pairs) < p.n_valid + p.n_test:
            pairs[(self._operand(rng), self._operand(rng))] = None
        drawn = list(pairs)
        return {"valid": drawn[: p.n_valid], "test": drawn[p.n_valid:]}

    @cached_property
    def _held_out_set(self) -> set[Pair]:
        return set(self.held_out["valid"]) | set(self.held_out["test"])

    # -- the Task API -------------------------------------------------------------------------

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> Seq2SeqBatch:
        """Fresh pairs, a pure function of (seed, step); ``lengths`` bounds the sum's digits."""
        lo, hi = self.clip_lengths(lengths)
        rng = random.Random(seed * 1_000_003 + step)
        pairs: list[Pair] = []
        for _ in range(batch_size):
            for _tries in range(10_000):
                a, b = self._operand(rng), self._operand(rng)
                if (a, b) not in self._held_out_set and lo <= len(str(a + b)) <= hi:
                    break
            else:
                raise ValueError(f"no training pair with a sum of {lo}..{hi} digits found")
            pairs.append((a, b))
        return self._batch(pairs, torch.full((batch_size,), -1, dtype=torch.long))

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[Seq2SeqBatch]:
        pairs = self.held_out[split]
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            yield self._batch(chunk, torch.arange(start, start + len(chunk)))

    def score(self, hyps: list[list[int]], refs: list[list[int]]) -> dict[str, float]:
        """``exact_match``: share of sums entirely right; ``digit_accuracy``: share of the
        reference digits right at their position (counted over the whole split)."""
        exact = sum(h == r for h, r in zip(hyps, refs, strict=True))
        correct = sum(correct_digits(h, r) for h, r in zip(hyps, refs, strict=True))
        total = sum(len(r) for r in refs)
        return {"exact_match": exact / len(refs), "digit_accuracy": correct / max(total, 1)}

    def reward(self, hyps: list[list[int]], refs: list[list[int]]) -> list[float]:
        """Per-sum digit accuracy, for sequence-level training: right digits over the longer
        of hypothesis and reference, so that extra digits cost reward too."""
        return [correct_digits(h, r) / max(len(h), len(r), 1)
                for h, r in zip(hyps, refs, strict=True)]

    def reference_scores(self, split: Literal["valid", "test"]) -> dict[str, dict[str, float]]:
        """A trivial baseline: add digit by digit and forget every carry (47+385 -> 322)."""
        def no_carry(a: int, b: int) -> int:
            width = max(len(str(a)), len(str(b)))
            pairs = zip(str(a).zfill(width), str(b).zfill(width), strict=True)
            return int("".join(str((int(x) + int(y)) % 10) for x, y in pairs))

        pairs = self.held_out[split]
        hyps = [digits(no_carry(a, b)) for a, b in pairs]
        return {"no_carry": self.score(hyps, [digits(a + b) for a, b in pairs])}
