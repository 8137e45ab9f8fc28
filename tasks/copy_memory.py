"""The copy-memory problem with an output at every step (Hochreiter & Schmidhuber 1997;
in the form of Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks",
Sec. 4.1).

Ten categories a_0 .. a_9 (token ids 0 .. 9). An input is T + 2S steps (S = ``symbols``, 10 in
the paper): S symbols drawn uniformly from a_0 .. a_7, then T - 1 blanks a_8, the delimiter
a_9, then S blanks. The target at every step is the blank a_8, except at the last S steps,
where it is the S symbols in order. The loss and the metric ``cross_entropy`` are the mean
cross entropy over all T + 2S steps (nats).

Memoryless baseline (the reference row): predict a_8 for the first T + S steps and a uniform
guess over a_0 .. a_7 for the last S, cross entropy S log 8 / (T + 2S) (= 10 log 8 / (T + 20)
for S = 10). ``accuracy`` is the share of the S recalled symbols predicted right (1/8 for the
baseline); ``success`` is 1 when the test ``accuracy`` reaches ``success_accuracy`` (0.99 by
default; Arjovsky et al. report only the cross entropy, so the threshold is this harness's
choice) and 0 otherwise, so a table's mean over seeds is the success rate.

Training batches are drawn fresh for every step (a pure function of seed and step); the valid
and test sets are fixed by ``data_seed``, the same for every trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar, Literal

import torch
from pydantic import Field

from lstm_harness.tasks.base import Direction, StreamBatch, StreamTask, TaskParams

DATA_SYMBOLS, BLANK, DELIMITER = 8, 8, 9
VOCAB = 10


class CopyMemoryParams(TaskParams):
    delay: int = Field(100, ge=1, description="T: blanks between the symbols and their recall "
                       "(the delimiter is the last of them)")
    symbols: int = Field(10, ge=1, description="S: symbols to remember (10 in the paper)")
    success_accuracy: float = Field(0.99, gt=0, le=1, description="recall accuracy at which a "
                                    "trial counts as a success")
    n_valid: int = Field(500, ge=1)
    n_test: int = Field(1000, ge=1)
    data_seed: int = 1234


def copy_memory_examples(n: int, delay: int, symbols: int,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each [n, delay + 2 symbols]."""
    steps = delay + 2 * symbols
    data = torch.randint(0, DATA_SYMBOLS, (n, symbols), generator=generator)
    inputs = torch.full((n, steps), BLANK, dtype=torch.long)
    inputs[:, :symbols] = data
    inputs[:, symbols + delay - 1] = DELIMITER
    targets = torch.full((n, steps), BLANK, dtype=torch.long)
    targets[:, -symbols:] = data
    return inputs, targets


class CopyMemoryTask(StreamTask):
    """Remember S symbols over T blanks, recall them after the delimiter (see the module)."""

    name: ClassVar[str] = "copy_memory"
    Params: ClassVar[type[TaskParams]] = CopyMemoryParams
    metrics: ClassVar[dict[str, Direction]] = {
        "cross_entropy": "min", "accuracy": "max", "success": "max"}
    carries_state: ClassVar[bool] = False

    def __init__(self, params: CopyMemoryParams) -> None:
        super().__init__(params)
        self.params: CopyMemoryParams = params

    @property
    def vocab_size(self) -> int:
        return VOCAB

    @property
    def steps_per_batch(self) -> int:
        return self.params.delay + 2 * self.params.symbols

    def _examples(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed % 2**63)
        return copy_memory_examples(n, self.params.delay, self.params.symbols, generator)

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> StreamBatch:
        inputs, targets = self._examples(batch_size, seed * 1_000_003 + step)
        return StreamBatch(inputs, targets, torch.full((batch_size,), -1), reset=True)

    @cached_property
    def _held_out(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        p = self.params
        return {"valid": self._examples(p.n_valid, p.data_seed),
                "test": self._examples(p.n_test, p.data_seed + 1)}

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[StreamBatch]:
        inputs, targets = self._held_out[split]
        for start in range(0, len(inputs), batch_size):
            end = min(start + batch_size, len(inputs))
            yield StreamBatch(inputs[start:end], targets[start:end],
                              torch.arange(start, end), reset=True)

    def score(self, nll: torch.Tensor, correct: torch.Tensor,
              targets: torch.Tensor) -> dict[str, float]:
        """cross_entropy: mean NLL over every step; accuracy over the recall steps (the last S
        of each example: the only targets that are not the blank); success: accuracy >=
        success_accuracy."""
        recall = targets != BLANK
        accuracy = float(correct[recall].double().mean()) if recall.any() else 0.0
        return {"cross_entropy": float(nll.double().mean()), "accuracy": accuracy,
                "success": float(accuracy >= self.params.success_accuracy)}

    def reference_scores(self, split: Literal["valid", "test"]) -> dict[str, dict[str, float]]:
        """The memoryless strategy: cross entropy S log 8 / (T + 2S), recall accuracy 1/8."""
        p = self.params
        return {"memoryless": {"cross_entropy": p.symbols * math.log(DATA_SYMBOLS)
                               / self.steps_per_batch,
                               "accuracy": 1 / DATA_SYMBOLS, "success": 0.0}}
