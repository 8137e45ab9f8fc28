"""Curricula: which training examples a batch holds at step t.

Difficulty here is target length (every seq2seq task exposes ``length_bounds``), in
[L_min, L_max]:

- ``length_linear`` / ``length_exponential`` (SPEC "Length-Based Curriculum"): only examples no
  longer than L_t = min(L_max, L_start + alpha t) or L_start beta^(t / tau).
- ``adaptive`` (SPEC "Adaptive Difficulty Adjustment"): a fraction p(hard) = min(1, p0 + alpha
  * accuracy) of each batch is hard (longer than the ``hard_from`` point of the length range),
  the rest easy; accuracy is a running average of training token accuracy.
- ``naive``, ``mix``, ``combined`` (Zaremba & Sutskever 2014, "Learning to Execute"): naive
  trains at one difficulty and moves up one stage (``stage_size`` lengths) when the running
  accuracy reaches ``advance_at``; mix draws every example from the whole range as the task
  samples it (uniform lengths for the copy task, as in the paper); combined draws a
  ``mix_fraction`` of each batch as in mix and the rest as in naive.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from harness.strict import Strict
from harness.training.schedules import (
    LengthCurriculumConfig,
    RunningAccuracy,
    curriculum_length,
    hard_fraction,
)
from tasks.base import Seq2SeqBatch, Task, concat_batches

HARD_STREAM = 7919  # a second seed stream for the hard part of a mixed batch


class CurriculumConfig(Strict):
    kind: Literal["none", "length_linear", "length_exponential", "adaptive", "naive", "mix",
                  "combined"] = "none"
    start: int = Field(2, ge=1, description="L_start of the length curricula and of naive")
    alpha: float = Field(0.01, ge=0, description="length_linear: L_t slope; adaptive: "
                         "p(hard) slope in accuracy")
    beta: float = Field(2.0, ge=1, description="length_exponential growth factor")
    tau: float = Field(1000.0, gt=0, description="length_exponential steps per factor beta")
    p0: float = Field(0.0, ge=0, le=1, description="adaptive: p(hard) at accuracy 0")
    hard_from: float = Field(0.5, gt=0, lt=1, description="adaptive: hard = longer than "
                             "L_min + hard_from (L_max - L_min)")
    ema: float = Field(0.9, ge=0, lt=1, description="decay of the running accuracy")
    stage_size: int = Field(1, ge=1, description="naive/combined: lengths added per stage")
    advance_at: float = Field(0.9, gt=0, le=1, description="naive/combined: running accuracy "
                              "that moves to the next stage")
    mix_fraction: float = Field(0.2, ge=0, le=1, description="combined: share drawn as in mix")


class Curriculum:
    """Builds each training batch and keeps the state the curriculum needs (checkpointed)."""

    def __init__(self, cfg: CurriculumConfig, task: Task) -> None:
        self.cfg, self.task = cfg, task
        self.shortest, self.longest = task.length_bounds
        self.accuracy = RunningAccuracy(cfg.ema)
        self.stage_max = min(self.longest, max(self.shortest, cfg.start))
        self.last: dict[str, float] = {}

    def length_limit(self, step: int) -> int:
        """L_t of the length curricula."""
        kind = self.cfg.kind.removeprefix("length_")
        length_cfg = LengthCurriculumConfig(kind=kind, start=self.cfg.start,
                                            alpha=self.cfg.alpha, beta=self.cfg.beta,
                                            tau=self.cfg.tau)
        return max(self.shortest, curriculum_length(length_cfg, step, self.longest))

    def batch(self, step: int, batch_size: int, seed: int) -> Seq2SeqBatch:
        kind, task = self.cfg.kind, self.task
        if kind == "none" or kind == "mix":
            self.last = {}
            return task.train_batch(step, batch_size, seed)
        if kind.startswith("length_"):
            limit = self.length_limit(step)
            self.last = {"curriculum.length": float(limit)}
            return task.train_batch(step, batch_size, seed, (self.shortest, limit))
        if kind == "adaptive":
            p_hard = hard_fraction(self.cfg.p0, self.cfg.alpha, self.accuracy.value)
            cut = self.shortest + math.floor(self.cfg.hard_from * (self.longest - self.shortest))
            easy, hard = (self.shortest, cut), (cut + 1, self.longest)
            self.last = {"curriculum.p_hard": p_hard,
                         "curriculum.accuracy": self.accuracy.value}
            return self._mixed(step, batch_size, seed, p_hard, easy, hard)
        # naive and combined: the current stage, plus a mix share for combined
        stage = (self.shortest, self.stage_max)
        share = self.cfg.mix_fraction if kind == "combined" else 0.0
        self.last = {"curriculum.length": float(self.stage_max),
                     "curriculum.accuracy": self.accuracy.value}
        return self._mixed(step, batch_size, seed, share, stage, (self.shortest, self.longest))

    def _mixed(self, step: int, batch_size: int, seed: int, share: float,
               first: tuple[int, int], second: tuple[int, int]) -> Seq2SeqBatch:
        """round((1 - share) * B) examples from ``first``, the rest from ``second``."""
        n_second = int(round(share * batch_size))
        n_first = batch_size - n_second
        parts = []
        if n_first:
            parts.append(self.task.train_batch(step, n_first, seed, first))
        if n_second:
            parts.append(self.task.train_batch(step, n_second, seed + HARD_STREAM, second))
        return parts[0] if len(parts) == 1 else concat_batches(parts)

    def observe(self, token_accuracy: float) -> None:
        """Feed the training batch's token accuracy (teacher-forced argmax)."""
        if self.cfg.kind not in ("adaptive", "naive", "combined"):
            return
        value = self.accuracy.update(token_accuracy)
        if self.cfg.kind != "adaptive" and value >= self.cfg.advance_at \
                and self.stage_max < self.longest:
            self.stage_max = min(self.longest, self.stage_max + self.cfg.stage_size)
            self.accuracy.value = 0.0  # a new stage starts from scratch

    def state_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy.value, "stage_max": self.stage_max}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.accuracy.value = float(state["accuracy"])
        self.stage_max = int(state["stage_max"])


def token_accuracy(logits: torch.Tensor, target: torch.Tensor, pad_id: int) -> float:
    """Fraction of non-pad target tokens whose argmax prediction is right."""
    mask = target != pad_id
    correct = (logits.argmax(-1) == target) & mask
    return float(correct.sum()) / max(int(mask.sum()), 1)
