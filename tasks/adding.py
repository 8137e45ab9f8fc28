"""The adding problem (Hochreiter & Schmidhuber 1997, Experiment 4), in the form of Le, Jaitly &
Hinton 2015 (Sec. 4.1) and Arjovsky, Shah & Bengio 2016 (Sec. 4.2).

An input is T steps of two channels ([T, 2]): channel 0 holds values v_t ~ U(0, 1), channel 1
a marker m_t that is 1 at exactly two positions and 0 elsewhere. For a sequence of length L
(0-based steps, h = floor(L / 2)) the first marked position p1 is uniform on {0, .., h - 1}
(the first half) and the second p2 uniform on {h, .., L - 1} (the second half), as Arjovsky et
al. 2016 state it. The label is the sum y = v_p1 + v_p2 ([1] per sequence, a regression:
``output = "values"``). (Hochreiter & Schmidhuber's original draws values from [-1, 1], puts
the first marker among the first ten steps and scales the target to 0.5 + y / 4; Le et al. and
Arjovsky et al. simplified it to the form here, the one later studies use.)

``length`` is T (100 by default). With ``min_length`` set, training sequences have lengths L
drawn uniformly from [min_length, length] per example (within a curriculum's ``lengths``
bounds), zero-padded after their end, with ``SequenceBatch.lengths``; the markers follow each
sequence's own halves. Valid and test sequences always have the full length T.

Metrics on a split of N sequences with predictions yhat: ``mse`` = (1/N) sum_i
(yhat_i - y_i)^2, and ``success`` = 1 if mse < ``success_mse`` else 0, so a table's mean over
seeds is the success rate. The default threshold 0.01 is this harness's choice (Pascanu,
Mikolov & Bengio 2013 and Martens & Sutskever 2011 count runs of these pathological problems
as successful by a small test error; 0.01 is about 6 % of the memoryless error below).

Reference row ``memoryless``: always predict 1, the mean of the sum. Its expected mse is
Var(v_p1 + v_p2) = 2 / 12 = 1/6 ~ 0.167 (Le et al. 2015 quote about 0.1767); the row reports the
mse measured on the split.

Training batches are drawn fresh for every step (a pure function of seed and step); the valid
and test sets are fixed by ``data_seed``, the same for every trial.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from lstm_harness.tasks.base import Direction, TaskParams
from lstm_harness.tasks.generated import GeneratedSequenceTask


class AddingParams(TaskParams):
    length: int = Field(100, ge=2, description="T: steps of every sequence (the longest when "
                        "min_length is set)")
    min_length: int | None = Field(None, ge=2, description="shortest training sequence; "
                                   "training lengths are uniform on [min_length, length] "
                                   "(None: all T)")
    success_mse: float = Field(0.01, gt=0, description="test mse under which a trial counts "
                               "as a success (this harness's choice)")
    n_valid: int = Field(500, ge=1, description="validation sequences (full length T)")
    n_test: int = Field(1000, ge=1, description="test sequences (full length T)")
    data_seed: int = Field(1234, description="seed of the fixed valid/test sets")

    @model_validator(mode="after")
    def _lengths_ordered(self) -> AddingParams:
        if self.min_length is not None and self.min_length > self.length:
            raise ValueError(f"min_length {self.min_length} > length {self.length}")
        return self


def adding_examples(lengths: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [n, max L, 2], labels [n, 1]) for sequences of the given ``lengths`` [n]:
    values U(0, 1), markers at p1 in [0, L/2) and p2 in [L/2, L), y = v_p1 + v_p2; zeros
    after each sequence's end."""
    n, steps = int(lengths.shape[0]), int(lengths.max())
    values = torch.rand(n, steps, generator=generator)
    half = lengths // 2
    first = torch.minimum((torch.rand(n, generator=generator) * half).long(), half - 1)
    second = half + (torch.rand(n, generator=generator) * (lengths - half)).long()
    second = torch.minimum(second, lengths - 1)
    values = values * (torch.arange(steps) < lengths.unsqueeze(1))
    markers = torch.zeros(n, steps)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    labels = (values[rows, first] + values[rows, second]).unsqueeze(1)
    return torch.stack([values, markers], dim=-1), labels


def regression_scores(outputs: torch.Tensor, labels: torch.Tensor,
                      success_mse: float) -> dict[str, float]:
    """mse = mean (yhat - y)^2; success = [mse < success_mse]."""
    diff = outputs.detach().cpu().double().reshape(labels.shape) - labels.detach().cpu().double()
    mse = float((diff ** 2).mean())
    return {"mse": mse, "success": float(mse < success_mse)}


class AddingTask(GeneratedSequenceTask):
    """Sum the two marked values of a sequence (see the module)."""

    name: ClassVar[str] = "adding"
    Params: ClassVar[type[TaskParams]] = AddingParams
    metrics: ClassVar[dict[str, Direction]] = {"mse": "min", "success": "max"}
    output: ClassVar[Literal["classes", "values"]] = "values"

    def __init__(self, params: AddingParams) -> None:
        super().__init__(params)
        self.params: AddingParams = params

    @property
    def input_features(self) -> int:
        return 2

    @property
    def n_outputs(self) -> int:
        return 1

    def examples(self, sizes: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return adding_examples(sizes, generator)

    def score(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """mse = mean (yhat - y)^2 over the split; success = [mse < success_mse]."""
        return regression_scores(outputs, labels, self.params.success_mse)

    def reference_scores(self, split: Literal["valid", "test"]) -> dict[str, dict[str, float]]:
        """``memoryless``: always 1, the mean of the sum (expected mse 1/6)."""
        labels = self.held_out[split][1]
        return {"memoryless": regression_scores(torch.ones_like(labels), labels,
                                                self.params.success_mse)}
