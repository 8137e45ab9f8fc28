"""Long (multi-digit) addition as a sequence-to-sequence task (Zaremba & Sutskever 2014,
"Learning to Execute", the addition programs of Sec. 5 without the surrounding Python text).

Source: the digits of a, the symbol +, the digits of b (most significant digit first, one token
each); target: the digits of a + b. The difficulty of an example is the number of digits d of
both operands, each drawn uniformly from the d-digit numbers (leading digit not 0, except for
d = 1). The target difficulty is ``digits``: held-out examples (valid and test, fixed by
``data_seed``) have exactly ``digits`` digits, and so have training examples unless a curriculum
asks for others.

Curricula read the difficulty as the example's length: ``length_bounds`` is (``min_digits``,
``digits``) and ``train_batch(lengths=(lo, hi))`` draws d uniformly from [lo, hi] for every
example. So Zaremba & Sutskever's strategies map onto the suite's curricula: no curriculum (the
baseline: target difficulty only), ``naive`` (start easy, move up when the training accuracy
reaches a threshold), ``mix`` (every example of a uniformly drawn difficulty) and ``combined``
(a share of mix in every naive batch).

Metrics: ``exact_match`` (the whole sum right) and ``token_accuracy`` (per digit); the paper
reports the teacher-forced per-character accuracy, ``token_accuracy_tf`` here. With 2 x 10^d
possible pairs at d digits a training example equals a held-out one with negligible
probability for d >= 4 (it is not checked).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from lstm_harness.tasks.base import (
    N_SPECIAL,
    Direction,
    Seq2SeqBatch,
    Task,
    TaskParams,
    pad_sequences,
    strip_special,
)
from lstm_harness.tasks.copy import sequence_accuracy

PLUS = N_SPECIAL + 10  # source-only id of "+"; digit k is id N_SPECIAL + k


class AdditionParams(TaskParams):
    digits: int = Field(6, ge=1, le=15, description="target difficulty: digits of both "
                        "operands in the held-out sets (and in training without a curriculum)")
    min_digits: int = Field(1, ge=1, description="easiest difficulty a curriculum may ask for")
    n_valid: int = Field(500, ge=1)
    n_test: int = Field(1000, ge=1)
    data_seed: int = Field(1234, description="seed of the held-out sets (not the trial seed)")

    @model_validator(mode="after")
    def check(self) -> AdditionParams:
        if self.min_digits > self.digits:
            raise ValueError(f"min_digits ({self.min_digits}) must be <= digits "
                             f"({self.digits})")
        return self


def operands(digit_counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pairs (a, b) [n, 2] of numbers with the given digit counts [n], uniform over the
    d-digit numbers (10^(d-1) .. 10^d - 1; 0 .. 9 for d = 1)."""
    lo = torch.where(digit_counts == 1, 0, 10 ** (digit_counts - 1))
    hi = 10 ** digit_counts  # exclusive
    u = torch.rand(len(digit_counts), 2, generator=generator, dtype=torch.float64)
    return lo[:, None] + (u * (hi - lo)[:, None].double()).floor().long()


def digit_ids(number: int) -> list[int]:
    return [N_SPECIAL + int(c) for c in str(number)]


class AdditionTask(Task):
    """a + b, digit by digit (see the module)."""

    name: ClassVar[str] = "long_addition"
    Params: ClassVar[type[TaskParams]] = AdditionParams
    metrics: ClassVar[dict[str, Direction]] = {"exact_match": "max", "token_accuracy": "max"}

    def __init__(self, params: AdditionParams | None = None) -> None:
        super().__init__(params if params is not None else AdditionParams())
        self.params: AdditionParams

    @property
    def src_vocab_size(self) -> int:
        return PLUS + 1

    @property
    def tgt_vocab_size(self) -> int:
        return N_SPECIAL + 10

    @property
    def max_target_len(self) -> int:
        return self.params.digits + 1

    @property
    def length_bounds(self) -> tuple[int, int]:
        """Difficulty bounds in digits (what the curricula read as length)."""
        return self.params.min_digits, self.params.digits

    def _batch(self, pairs: torch.Tensor, ids: torch.Tensor) -> Seq2SeqBatch:
        sources, targets = [], []
        for a, b in pairs.tolist():
            sources.append(digit_ids(a) + [PLUS] + digit_ids(b))
            targets.append(digit_ids(a + b))
        src, src_len = pad_sequences(sources)
        tgt, tgt_len = pad_sequences(targets, append_eos=True)
        return Seq2SeqBatch(src=src, src_len=src_len, tgt=tgt, tgt_len=tgt_len, ids=ids)

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> Seq2SeqBatch:
        """``batch_size`` sums at the target difficulty, or with difficulties uniform in
        ``lengths`` (clipped to the task's bounds); a pure function of (seed, step)."""
        g = torch.Generator().manual_seed((seed * 1_000_003 + step) % 2**63)
        if lengths is None:
            counts = torch.full((batch_size,), self.params.digits)
        else:
            lo, hi = self.clip_lengths(lengths)
            counts = torch.randint(lo, hi + 1, (batch_size,), generator=g)
        return self._batch(operands(counts, g), torch.full((batch_size,), -1))

    @cached_property
    def _held_out(self) -> dict[str, torch.Tensor]:
        p = self.params
        out = {}
        for stream, (split, n) in enumerate((("valid", p.n_valid), ("test", p.n_test))):
            g = torch.Generator().manual_seed((p.data_seed * 1_000_003 + stream) % 2**63)
            out[split] = operands(torch.full((n,), p.digits), g)
        return out

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[Seq2SeqBatch]:
        pairs = self._held_out[split]
        for start in range(0, len(pairs), batch_size):
            end = min(start + batch_size, len(pairs))
            yield self._batch(pairs[start:end], torch.arange(start, end))

    def score(self, hyps: list[list[int]], refs: list[list[int]]) -> dict[str, float]:
        """Exact match of the sum and per-digit accuracy (see ``copy.sequence_accuracy``)."""
        return sequence_accuracy(hyps, refs)

    def reward(self, hyps: list[list[int]], refs: list[list[int]]) -> list[float]:
        """Per-sum digit accuracy |{i : y_i = y*_i}| / max(|y*|, |y|)."""
        return [sum(a == b for a, b in zip(h, r, strict=False)) / max(len(r), len(h), 1)
                for h, r in zip(hyps, refs, strict=True)]

    def detokenize(self, ids: list[int], side: Literal["src", "tgt"] = "tgt") -> str:
        return "".join("+" if t == PLUS else str(t - N_SPECIAL) for t in strip_special(ids))

    def token_text(self, token: int, side: Literal["src", "tgt"] = "tgt") -> str:
        return "+" if token == PLUS else str(token - N_SPECIAL)
