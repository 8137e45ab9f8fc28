"""Sequence tasks whose examples are generated (the adding and temporal-order problems): the
length handling, training batches and fixed held-out sets they share.

Training batches are fresh for every step, a pure function of (seed, step): lengths uniform in
the (curriculum-clipped) bounds [``min_length``, ``length``] (all ``length`` when
``min_length`` is unset), then the task's own examples. The valid and test sets are drawn once
from ``data_seed`` (valid) and ``data_seed + 1`` (test), at the full length, the same for
every trial.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from functools import cached_property
from typing import Literal

import torch

from lstm_harness.tasks.base import SequenceBatch, SequenceTask


class GeneratedSequenceTask(SequenceTask):
    """A :class:`SequenceTask` of generated examples; ``params`` has ``length``,
    ``min_length``, ``n_valid``, ``n_test`` and ``data_seed``."""

    @abstractmethod
    def examples(self, sizes: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw inputs, labels) of ``len(sizes)`` examples of the given lengths."""

    def encode(self, raw: torch.Tensor) -> torch.Tensor:
        """The model's inputs from raw examples (default: as they are)."""
        return raw

    @property
    def sequence_length(self) -> int:
        return self.params.length

    @property
    def length_bounds(self) -> tuple[int, int]:
        p = self.params
        return (p.length if p.min_length is None else p.min_length), p.length

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> SequenceBatch:
        """Fresh sequences for ``step``; lengths uniform within the (clipped) bounds."""
        g = torch.Generator().manual_seed((seed * 1_000_003 + step) % 2**63)
        lo, hi = self.clip_lengths(lengths)
        sizes = torch.randint(lo, hi + 1, (batch_size,), generator=g)
        raw, labels = self.examples(sizes, g)
        variable = self.params.min_length is not None
        return SequenceBatch(self.encode(raw), labels, torch.full((batch_size,), -1),
                             sizes if variable else None)

    @cached_property
    def held_out(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """split -> (raw inputs, labels), full length, fixed by ``data_seed``."""
        p = self.params
        out = {}
        for split, n, offset in (("valid", p.n_valid, 0), ("test", p.n_test, 1)):
            g = torch.Generator().manual_seed((p.data_seed + offset) % 2**63)
            out[split] = self.examples(torch.full((n,), p.length), g)
        return out

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[SequenceBatch]:
        raw, labels = self.held_out[split]
        for start in range(0, len(labels), batch_size):
            end = min(start + batch_size, len(labels))
            yield SequenceBatch(self.encode(raw[start:end]), labels[start:end],
                                torch.arange(start, end))
