"""Sequential and permuted pixel-by-pixel digit classification (Le, Jaitly & Hinton 2015,
"A Simple Way to Initialize Recurrent Networks of Rectified Linear Units", Sec. 4.2:
sequential and permuted MNIST; used by Cooijmans et al. 2017, recurrent batch normalization,
and Krueger et al. 2017, zoneout).

Data: scikit-learn's ``load_digits`` (the UCI optical-recognition handwritten digits: 1,797
images of 8 x 8 pixels with values 0..16, ten classes, shipped with scikit-learn, no
download). A pixel x is scaled to x / 16 in [0, 1]. The image is read one pixel per step in
row-major order, so an input is [T, 1]:

* ``size: 8``: the raw image, T = 64 steps;
* ``size: 28``: the scaled image upsampled to 28 x 28 with
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, T = 784 steps, the
  length of sequential MNIST (the long-range difficulty of the benchmark, on a small data set).

``permute: true`` reads the T pixels in a fixed random order pi (``torch.randperm(T)`` from a
generator seeded with ``permutation_seed``): step t reads pixel pi(t) of the row-major image.
The permutation is the same for every trial, seed and split (Le et al. 2015 fix one
permutation for the whole experiment); it scatters neighbouring pixels over the whole
sequence, so local structure no longer helps and the dependencies become long.

Splits: a permutation of the 1,797 images drawn from ``data_seed`` (the same for every trial)
gives the first ``n_valid`` (250) images to valid, the next ``n_test`` (250) to test and the
remaining 1,297 to training; no image is in two splits. Training batches draw
uniformly, with replacement, from the training pool with a generator seeded from (seed, step)
(:meth:`TaskBase.draw_pool_ids`), so they are a pure function of (seed, step); the pool is
exposed (``train_pool_size``, ``pool_batch``, ``pool_lengths``) for curricula.

Metrics on a split of N images with predicted class argmax_k p_ik: ``accuracy`` =
(1/N) sum_i [argmax_k p_ik = y_i] and ``error`` = 1 - accuracy (the error rate Krueger et al.
2017 report).

Reference rows, on the same split: ``majority``, always the most frequent training class;
``logistic_regression``, scikit-learn's multinomial ``LogisticRegression`` (L2, C = 1, lbfgs,
``max_iter`` 5,000, ``random_state`` 0) fitted on the flat training inputs (the T scaled pixel
values, in row-major order: a permutation of the features does not change what a linear
model can fit) and scored on the split. The fit is cached per process.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache, cached_property
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from lstm_harness.tasks.base import Direction, SequenceBatch, SequenceTask, TaskParams

N_CLASSES = 10
MAX_PIXEL = 16.0


class PixelSequenceParams(TaskParams):
    size: Literal[8, 28] = Field(8, description="8: the raw 8x8 digit, 64 steps; 28: upsampled "
                                 "bilinearly to 28x28, 784 steps (the MNIST length)")
    permute: bool = Field(False, description="read the pixels in a fixed random order "
                          "(permuted pixel task, Le et al. 2015)")
    permutation_seed: int = Field(0, description="seed of the fixed pixel permutation (the "
                                  "same for every trial and split)")
    n_valid: int = Field(250, ge=1, description="validation images")
    n_test: int = Field(250, ge=1, description="test images")
    data_seed: int = Field(0, description="seed of the fixed train/valid/test split")

    @model_validator(mode="after")
    def _leaves_training_images(self) -> PixelSequenceParams:
        if self.n_valid + self.n_test >= _n_images():
            raise ValueError(f"n_valid + n_test must leave training images: "
                             f"{self.n_valid} + {self.n_test} >= {_n_images()} digits")
        return self


@cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images [1797, 8, 8] float32 in [0, 1] (value / 16), labels [1797] long)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / MAX_PIXEL
    return images, torch.tensor(digits.target, dtype=torch.long)


def _n_images() -> int:
    return int(_digits()[1].shape[0])


def pixel_sequences(images: torch.Tensor, size: int,
                    permutation: torch.Tensor | None = None) -> torch.Tensor:
    """Images [N, 8, 8] in [0, 1] -> pixel sequences [N, size^2, 1]: upsampled bilinearly
    (align_corners=False) when size != 8, flattened row-major, steps reordered by
    ``permutation`` (step t reads pixel permutation[t])."""
    if size != images.shape[-1]:
        images = F.interpolate(images.unsqueeze(1), size=(size, size), mode="bilinear",
                               align_corners=False).squeeze(1)
    flat = images.reshape(images.shape[0], -1)
    if permutation is not None:
        flat = flat[:, permutation]
    return flat.unsqueeze(-1).contiguous()


def split_indices(n_images: int, n_valid: int, n_test: int,
                  data_seed: int) -> dict[str, torch.Tensor]:
    """Disjoint image indices of train/valid/test: a permutation drawn from ``data_seed``,
    valid first, test next, training the rest."""
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(data_seed % 2**63))
    return {"valid": order[:n_valid], "test": order[n_valid:n_valid + n_test],
            "train": order[n_valid + n_test:]}


@cache
def _logistic_regression_scores(size: int, n_valid: int, n_test: int,
                                data_seed: int) -> dict[str, float]:
    """Accuracy of the logistic regression fitted on the training split, per held-out split
    (unpermuted features; cached per process)."""
    from sklearn.linear_model import LogisticRegression

    images, labels = _digits()
    idx = split_indices(len(labels), n_valid, n_test, data_seed)
    flat = {k: pixel_sequences(images[v], size).squeeze(-1).numpy() for k, v in idx.items()}
    model = LogisticRegression(max_iter=5000, random_state=0)
    model.fit(flat["train"], labels[idx["train"]].numpy())
    return {split: float(model.score(flat[split], labels[idx[split]].numpy()))
            for split in ("valid", "test")}


def classification_scores(outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """accuracy = mean [argmax_k p_ik = y_i]; error = 1 - accuracy."""
    predicted = outputs.detach().cpu().argmax(dim=-1)
    accuracy = float((predicted == labels.detach().cpu()).double().mean())
    return {"accuracy": accuracy, "error": 1.0 - accuracy}


class PixelSequenceTask(SequenceTask):
    """Classify a digit read one pixel per step, in order or permuted (see the module)."""

    name: ClassVar[str] = "pixel_sequence"
    Params: ClassVar[type[TaskParams]] = PixelSequenceParams
    metrics: ClassVar[dict[str, Direction]] = {"accuracy": "max", "error": "min"}
    output: ClassVar[Literal["classes", "values"]] = "classes"

    def __init__(self, params: PixelSequenceParams) -> None:
        super().__init__(params)
        self.params: PixelSequenceParams = params

    @property
    def n_outputs(self) -> int:
        return N_CLASSES

    @property
    def sequence_length(self) -> int:
        return self.params.size ** 2

    @cached_property
    def permutation(self) -> torch.Tensor | None:
        """The fixed pixel order pi (step t reads pixel pi(t)), or None when not permuted."""
        if not self.params.permute:
            return None
        g = torch.Generator().manual_seed(self.params.permutation_seed % 2**63)
        return torch.randperm(self.sequence_length, generator=g)

    @cached_property
    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """split -> (inputs [N, T, 1], labels [N])."""
        p = self.params
        images, labels = _digits()
        idx = split_indices(len(labels), p.n_valid, p.n_test, p.data_seed)
        return {k: (pixel_sequences(images[v], p.size, self.permutation), labels[v])
                for k, v in idx.items()}

    # -- the training pool -------------------------------------------------------------------
    @property
    def train_pool_size(self) -> int:
        return int(self._splits["train"][1].shape[0])

    def pool_batch(self, ids: list[int]) -> SequenceBatch:
        inputs, labels = self._splits["train"]
        index = torch.tensor(ids, dtype=torch.long)
        return SequenceBatch(inputs[index], labels[index], index)

    def pool_lengths(self) -> list[int]:
        return [self.sequence_length] * self.train_pool_size

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> SequenceBatch:
        """``batch_size`` training images drawn uniformly with replacement; a pure function of
        (seed, step)."""
        return self.pool_batch(self.draw_pool_ids(step, batch_size, seed,
                                                  self.clip_lengths(lengths)))

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[SequenceBatch]:
        inputs, labels = self._splits[split]
        for start in range(0, len(labels), batch_size):
            end = min(start + batch_size, len(labels))
            yield SequenceBatch(inputs[start:end], labels[start:end], torch.arange(start, end))

    def score(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """accuracy = mean [argmax_k p_ik = y_i]; error = 1 - accuracy."""
        return classification_scores(outputs, labels)

    def reference_scores(self, split: Literal["valid", "test"]) -> dict[str, dict[str, float]]:
        """``majority``: the most frequent training class, always; ``logistic_regression``:
        a linear softmax classifier of the flat training inputs (see the module)."""
        p = self.params
        train_labels = self._splits["train"][1]
        labels = self._splits[split][1]
        majority = int(torch.bincount(train_labels, minlength=N_CLASSES).argmax())
        majority_accuracy = float((labels == majority).double().mean())
        logistic = _logistic_regression_scores(p.size, p.n_valid, p.n_test, p.data_seed)[split]
        return {"majority": {"accuracy": majority_accuracy, "error": 1.0 - majority_accuracy},
                "logistic_regression": {"accuracy": logistic, "error": 1.0 - logistic}}
