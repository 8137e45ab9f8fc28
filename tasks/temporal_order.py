"""The temporal order problem (Hochreiter & Schmidhuber 1997, Experiment 6a; used by Martens &
Sutskever 2011 and by Pascanu, Mikolov & Bengio 2013, Sec. 4.1 and Fig. 7, to study gradient
clipping).

Eight symbols, fed as one-hot float vectors ([T, 8]) in this index order: the distractors
a, b, c, d (0..3), the relevant symbols X (4) and Y (5), the end (trigger) marker B (6) and the
start marker E (7). As in Hochreiter & Schmidhuber: a sequence of length L starts with E, ends
with B, and is otherwise random distractors drawn uniformly from {a, b, c, d}, except at two
positions t1 and t2 that hold X or Y (each uniform, independently). With T0 the shortest
sequence length (``min_length``, or ``length`` when it is unset), 0-based,

    t1 uniform on {max(1, floor(T0 / 10)), .., floor(T0 / 5)},
    t2 uniform on {floor(T0 / 2), .., floor(3 T0 / 5)},

so for T0 = 100: t1 in 10..20 and t2 in 50..60, Hochreiter & Schmidhuber's ranges. The class
is the order of the two: XX -> 0, XY -> 1, YX -> 2, YY -> 3 (their Q, R, S, U), i.e.
class = 2 [s_t1 = Y] + [s_t2 = Y].

``length`` is T (100 by default: every sequence has 100 steps). With ``min_length`` set,
training sequences have lengths L uniform on [min_length, length] per example (within a
curriculum's ``lengths`` bounds), padded with zero vectors after their B, with
``SequenceBatch.lengths``; ``min_length: 100, length: 110`` is Hochreiter & Schmidhuber's
setting exactly (lengths 100..110). Valid and test sequences always have the full length T.

Metrics on a split of N sequences with predicted class argmax_k p_ik: ``accuracy`` = (1/N)
sum_i [argmax_k p_ik = y_i], ``error`` = 1 - accuracy, and ``success`` = 1 if error <
``success_error`` else 0, so a table's mean over seeds is the success rate. The default
``success_error`` 0.01 follows the 1 % test-error criterion for these pathological problems
(Martens & Sutskever 2011; Pascanu et al. 2013 report success rates the same way); treat the
exact value as this harness's choice.

Reference row ``majority``: always the class most frequent on the split itself (the best
constant prediction there; classes are uniform by construction, so about 0.25 accuracy).

Training batches are drawn fresh for every step (a pure function of seed and step); the valid
and test sets are fixed by ``data_seed``, the same for every trial.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from lstm_harness.tasks.base import Direction, TaskParams
from lstm_harness.tasks.generated import GeneratedSequenceTask
from lstm_harness.tasks.pixel_sequence import classification_scores

SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
DISTRACTORS = 4
X, Y, END, START = 4, 5, 6, 7
N_SYMBOLS = len(SYMBOLS)
N_CLASSES = 4


class TemporalOrderParams(TaskParams):
    length: int = Field(100, ge=10, description="T: steps of every sequence (the longest when "
                        "min_length is set)")
    min_length: int | None = Field(None, ge=10, description="shortest training sequence; "
                                   "training lengths are uniform on [min_length, length] "
                                   "(None: all T; Hochreiter & Schmidhuber: 100 with "
                                   "length 110)")
    success_error: float = Field(0.01, gt=0, le=1, description="test error rate under which "
                                 "a trial counts as a success")
    n_valid: int = Field(500, ge=1, description="validation sequences (full length T)")
    n_test: int = Field(1000, ge=1, description="test sequences (full length T)")
    data_seed: int = Field(1234, description="seed of the fixed valid/test sets")

    @model_validator(mode="after")
    def _lengths_ordered(self) -> TemporalOrderParams:
        if self.min_length is not None and self.min_length > self.length:
            raise ValueError(f"min_length {self.min_length} > length {self.length}")
        return self


def relevant_positions(shortest: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The ranges (inclusive) of t1 and t2 for shortest sequence length T0: [max(1, T0 // 10),
    T0 // 5] and [T0 // 2, 3 T0 // 5]."""
    return (max(1, shortest // 10), shortest // 5), (shortest // 2, 3 * shortest // 5)


def temporal_order_examples(lengths: torch.Tensor, shortest: int,
                            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(symbols [n, max L] long, with -1 after each end; labels [n]) for sequences of the given
    ``lengths``: E, distractors, X/Y at t1 and t2, B last."""
    n, steps = int(lengths.shape[0]), int(lengths.max())
    (lo1, hi1), (lo2, hi2) = relevant_positions(shortest)
    symbols = torch.randint(0, DISTRACTORS, (n, steps), generator=generator)
    t1 = torch.randint(lo1, hi1 + 1, (n,), generator=generator)
    t2 = torch.randint(lo2, hi2 + 1, (n,), generator=generator)
    first_y = torch.randint(0, 2, (n,), generator=generator)
    second_y = torch.randint(0, 2, (n,), generator=generator)
    rows = torch.arange(n)
    symbols[:, 0] = START
    symbols[rows, t1] = X + first_y
    symbols[rows, t2] = X + second_y
    symbols[rows, lengths - 1] = END
    symbols[torch.arange(steps) >= lengths.unsqueeze(1)] = -1
    return symbols, 2 * first_y + second_y


def one_hot(symbols: torch.Tensor) -> torch.Tensor:
    """Symbols [n, T] (-1: padding) -> float one-hot vectors [n, T, 8] (zeros for padding)."""
    return F.one_hot(symbols.clamp(min=0), N_SYMBOLS).float() * (symbols >= 0).unsqueeze(-1)


class TemporalOrderTask(GeneratedSequenceTask):
    """Classify the order of two relevant symbols far apart in noise (see the module)."""

    name: ClassVar[str] = "temporal_order"
    Params: ClassVar[type[TaskParams]] = TemporalOrderParams
    metrics: ClassVar[dict[str, Direction]] = {
        "accuracy": "max", "error": "min", "success": "max"}
    output: ClassVar[Literal["classes", "values"]] = "classes"

    def __init__(self, params: TemporalOrderParams) -> None:
        super().__init__(params)
        self.params: TemporalOrderParams = params

    @property
    def input_features(self) -> int:
        return N_SYMBOLS

    @property
    def n_outputs(self) -> int:
        return N_CLASSES

    def examples(self, sizes: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(symbols [N, T], labels [N]); relevant positions scaled by the shortest length."""
        return temporal_order_examples(sizes, self.length_bounds[0], generator)

    def encode(self, raw: torch.Tensor) -> torch.Tensor:
        return one_hot(raw)

    def score(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """accuracy = mean [argmax_k p_ik = y_i]; error = 1 - accuracy; success =
        [error < success_error]."""
        scores = classification_scores(outputs, labels)
        return {**scores, "success": float(scores["error"] < self.params.success_error)}

    def reference_scores(self, split: Literal["valid", "test"]) -> dict[str, dict[str, float]]:
        """``majority``: the split's most frequent class, always (about 0.25 accuracy)."""
        labels = self.held_out[split][1]
        majority = int(torch.bincount(labels, minlength=N_CLASSES).argmax())
        outputs = F.one_hot(torch.full_like(labels, majority), N_CLASSES).float()
        return {"majority": self.score(outputs, labels)}
