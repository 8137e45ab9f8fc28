"""Curricula: which training examples a batch holds at step t.

Difficulty here is target length (every task exposes ``length_bounds``; for a forecasting
task the length is the forecast horizon, so a length curriculum predicts near steps first), in
[L_min, L_max]:

- ``length_linear`` / ``length_exponential`` (Bengio et al. 2009, "Curriculum Learning"): only
  examples no longer than L_t = min(L_max, L_start + alpha t) or L_start beta^(t / tau).
- ``adaptive`` (README "Techniques"): a fraction p(hard) = min(1, p0 + alpha * accuracy) of
  each batch is hard (longer than the ``hard_from`` point of the length range),
  the rest easy; accuracy is a running average of training token accuracy (forecasting: the
  share of forecast values within a quarter standard deviation, ``models/accuracy.py``).
- ``perplexity`` (README "Techniques"; after Bengio et al. 2009): every example of the task's
  finite training pool is scored by PPL(x) = exp(-1/T sum_t log P(x_t | x_<t)) (forecasting: the
  window's mean squared error) under a pretrained model
  (the trial's own model after a teacher-forced pretraining stage of ``pretrain_steps``, or the
  final model of a named earlier trial, ``from_trial``), the pool is split into thirds (low,
  medium, high perplexity) and training runs three phases of configurable length over them,
  each phase adding the next third (``cumulative``) or using only its own.
- ``naive``, ``mix``, ``combined`` (Zaremba & Sutskever 2014, "Learning to Execute"): naive
  trains at one difficulty and moves up one stage (``stage_size`` lengths) when the running
  accuracy reaches ``advance_at``; mix draws every example from the whole range (the task's
  ``length_bounds``; uniform lengths for the copy task, uniform digit counts for addition, as
  in the paper); combined draws a ``mix_fraction`` of each batch as in mix and the rest as in
  naive. Without a curriculum the task's own distribution is used (for addition, as in the
  paper's baseline, only the target difficulty).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from lstm_harness import run_schema as rs
from lstm_harness.strict import Strict
from lstm_harness.tasks.base import PAD, ForecastBatch, Seq2SeqBatch, Task, TaskBase, concat_batches
from lstm_harness.training.multitask import TaskRef
from lstm_harness.training.schedules import (
    RunningAccuracy,
    curriculum_length,
    hard_fraction,
)

HARD_STREAM = 7919  # a second seed stream for the hard part of a mixed batch


class CurriculumConfig(Strict):
    kind: Literal["none", "length_linear", "length_exponential", "adaptive", "perplexity",
                  "naive", "mix", "combined", "multitask"] = "none"
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
    pretrain_steps: int = Field(200, ge=0, description="perplexity: teacher-forced steps on the "
                                "whole pool before scoring (ignored with from_trial)")
    from_trial: str | None = Field(None, description="perplexity: score with the final model "
                                   "of this trial key ('SUITE:KEY' for another suite)")
    phases: list[float] = Field(default_factory=lambda: [1 / 3, 1 / 3, 1 / 3], min_length=3,
                                max_length=3, description="perplexity: relative lengths of the "
                                "low, medium and high phases")
    cumulative: bool = Field(True, description="perplexity: later phases keep earlier thirds")
    tasks: list[TaskRef] = Field(default_factory=list, description="multitask: auxiliary "
                                 "tasks, in the order they are introduced")
    temperature: float = Field(1.0, gt=0, description="multitask: tau of the task weights")
    introduce_every: int = Field(0, ge=0, description="multitask: steps between task "
                                 "introductions (0: every task from the start)")
    main_first: bool = Field(False, description="multitask: introduce the trial's task first")
    perf_floor: float = Field(0.01, gt=0, le=1, description="multitask: floor of perf_i")

    @model_validator(mode="after")
    def check(self) -> CurriculumConfig:
        if self.kind == "multitask" and not self.tasks:
            raise ValueError("the multitask curriculum needs at least one auxiliary task in "
                             "'tasks'")
        if self.kind != "multitask" and self.tasks:
            raise ValueError("'tasks' is only used by kind multitask")
        return self


class Curriculum:
    """Builds each training batch and keeps the state the curriculum needs (checkpointed)."""

    def __init__(self, cfg: CurriculumConfig, task: Task, total_steps: int = 0,
                 scorer: torch.nn.Module | None = None) -> None:
        self.cfg, self.task = cfg, task
        self.total_steps = total_steps
        self.scorer = scorer
        self.order: list[int] | None = None  # pool ids by increasing perplexity
        if cfg.kind == "perplexity" and task.train_pool_size is None:
            raise ValueError(f"the perplexity curriculum needs a finite training pool; task "
                             f"'{task.name}' has none (for the copy task set params.n_train)")
        self.shortest, self.longest = task.length_bounds
        self.accuracy = RunningAccuracy(cfg.ema)
        self.stage_max = min(self.longest, max(self.shortest, cfg.start))
        self.last: dict[str, float] = {}

    def length_limit(self, step: int) -> int:
        """L_t of the length curricula."""
        cfg = self.cfg
        return max(self.shortest, curriculum_length(
            cfg.kind.removeprefix("length_"), step, self.longest, start=cfg.start,
            alpha=cfg.alpha, beta=cfg.beta, tau=cfg.tau))

    # -- perplexity ordering -------------------------------------------------------------
    @property
    def scoring_step(self) -> int:
        return 0 if self.cfg.from_trial else self.cfg.pretrain_steps

    def prepare(self, step: int, model: torch.nn.Module, device: torch.device) -> None:
        """Score the pool once the pretraining stage is over (perplexity curriculum)."""
        if self.cfg.kind != "perplexity" or self.order is not None or step < self.scoring_step:
            return
        ppl = pool_perplexity(self.scorer or model, self.task, device)
        self.order = sorted(range(len(ppl)), key=lambda i: (ppl[i], i))

    def phase(self, step: int) -> int:
        """0, 1, 2: the low, medium, high perplexity phase of ``step``."""
        fractions = self.cfg.phases
        span = max(self.total_steps - self.scoring_step, 1)
        ends, acc = [], 0.0
        for f in fractions:
            acc += f / sum(fractions)
            ends.append(self.scoring_step + acc * span)
        return next((k for k, end in enumerate(ends) if step < end), 2)

    def _perplexity_batch(self, step: int, batch_size: int, seed: int) -> Seq2SeqBatch:
        if self.order is None:  # the pretraining stage: the whole pool, uniformly
            self.last = {"curriculum.phase": -1.0}
            return self.task.train_batch(step, batch_size, seed)
        phase = self.phase(step)
        thirds = [self.order[k * len(self.order) // 3:(k + 1) * len(self.order) // 3]
                  for k in range(3)]
        allowed = [i for k in range(phase + 1) for i in thirds[k]] if self.cfg.cumulative \
            else thirds[phase]
        self.last = {"curriculum.phase": float(phase)}
        ids = self.task.draw_pool_ids(step, batch_size, seed, allowed=allowed)
        return self.task.pool_batch(ids)

    def batch(self, step: int, batch_size: int, seed: int) -> Seq2SeqBatch:
        kind, task = self.cfg.kind, self.task
        if kind == "perplexity":
            return self._perplexity_batch(step, batch_size, seed)
        if kind == "none":
            self.last = {}
            return task.train_batch(step, batch_size, seed)
        if kind == "mix":  # every example from the whole range, uniformly (the copy task's
            self.last = {}  # own distribution; the addition task's default is the hardest)
            return task.train_batch(step, batch_size, seed, (self.shortest, self.longest))
        if kind.startswith("length_"):
            limit = self.length_limit(step)
            self.last = {rs.CURRICULUM_LENGTH: float(limit)}
            return task.train_batch(step, batch_size, seed, (self.shortest, limit))
        if kind == "adaptive":
            p_hard = hard_fraction(self.cfg.p0, self.cfg.alpha, self.accuracy.value)
            cut = self.shortest + math.floor(self.cfg.hard_from * (self.longest - self.shortest))
            easy, hard = (self.shortest, cut), (cut + 1, self.longest)
            self.last = {rs.CURRICULUM_P_HARD: p_hard,
                         "curriculum.accuracy": self.accuracy.value}
            return self._mixed(step, batch_size, seed, p_hard, easy, hard)
        # naive and combined: the current stage, plus a mix share for combined
        stage = (self.shortest, self.stage_max)
        share = self.cfg.mix_fraction if kind == "combined" else 0.0
        self.last = {rs.CURRICULUM_LENGTH: float(self.stage_max),
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

    def parts(self, step: int, batch_size: int, seed: int
              ) -> list[tuple[int, float, Seq2SeqBatch]]:
        """(task index, loss weight, batch) for this step: one part, the trial's task."""
        return [(0, 1.0, self.batch(step, batch_size, seed))]

    def observe(self, token_accuracy: float, task_index: int = 0) -> None:
        """Feed the training batch's token accuracy (teacher-forced argmax)."""
        if self.cfg.kind not in ("adaptive", "naive", "combined"):
            return
        value = self.accuracy.update(token_accuracy)
        if self.cfg.kind != "adaptive" and value >= self.cfg.advance_at \
                and self.stage_max < self.longest:
            self.stage_max = min(self.longest, self.stage_max + self.cfg.stage_size)
            self.accuracy.value = 0.0  # a new stage starts from scratch

    def state_dict(self) -> dict:
        return {"accuracy": self.accuracy.value, "stage_max": self.stage_max,
                "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        self.accuracy.value = float(state["accuracy"])
        self.stage_max = int(state["stage_max"])
        self.order = None if state.get("order") is None else [int(i) for i in state["order"]]


@torch.no_grad()
def pool_perplexity(model: torch.nn.Module, task: TaskBase, device: torch.device,
                    batch_size: int = 256) -> list[float]:
    """Difficulty of every training-pool example under ``model``, teacher-forced.

    Token tasks: PPL(x) = exp(-1/T sum_t log P(y_t | y_<t, x)) (T counts the target tokens and
    the EOS). Forecasting tasks: the window's mean squared error 1/(T K) sum_t ||y^_t - y*_t||^2
    on the model's scale, its analogue (both grow with difficulty; only the order is used).
    """
    was_training = model.training
    model.eval()
    out: list[float] = []
    size = task.train_pool_size
    for start in range(0, size, batch_size):
        batch = task.pool_batch(list(range(start, min(size, start + batch_size)))).to(device)
        if isinstance(batch, ForecastBatch):
            mask = batch.step_mask.float()
            per_step = ((model(batch) - batch.target) ** 2).mean(-1)
            out += ((per_step * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
            continue
        logits = model(batch)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.tgt,
                                                ignore_index=PAD, reduction="none")
        tokens = (batch.tgt != PAD).sum(1).clamp(min=1)
        out += torch.exp(nll.sum(1) / tokens).tolist()
    model.train(was_training)
    return out
