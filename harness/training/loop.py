"""The training loop: read it top to bottom.

Each step: the schedules give this step's teacher-forcing probability eps_i and dropout rates;
the curriculum picks the batch (a pure function of seed, step and the curriculum's state, so a
resumed trial continues exactly); the model computes the configured loss, with scheduled
sampling when eps_i < 1 (or, once a sequence-level loss is active, the reward-based loss of
``training/sequence_level.py``); gradients are clipped and the optimizer and learning-rate scheduler
step; the curriculum sees the batch's accuracy. The monitors (``harness/diagnostics``) check
the loss and gradients every step (a NaN or Inf fails the trial with its step) and log their
measurements every ``monitor.every`` steps. Every ``log_every`` steps the training numbers go
to ``on_log``; every ``eval_every`` steps (and at the last) the validation metrics go to
``on_eval``, which also checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from lstm_harness import run_schema as rs
from lstm_harness.tasks.base import TaskBase
from lstm_harness.training.evaluate import evaluate
from lstm_harness.training.techniques import Techniques

if TYPE_CHECKING:  # annotations only: the config layer sits above this one
    from lstm_harness.config import TrainConfig
    from lstm_harness.diagnostics.monitor import Monitors


@dataclass
class TrainState:
    """What a checkpoint must carry besides the weights to resume a trial exactly."""

    step: int = 0
    tokens: int = 0  # non-padding source + target tokens trained on
    train_seconds: float = 0.0  # time in training steps only (evaluation excluded)
    target_step: int | None = None  # first eval step at train.steps_to_target (None: not yet)

    def as_dict(self) -> dict:
        return asdict(self)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, task: TaskBase,
          cfg: TrainConfig, seed: int, state: TrainState, device: torch.device,
          techniques: Techniques, monitors: Monitors,
          on_log: Callable[[TrainState, dict[str, float]], None],
          on_eval: Callable[[TrainState, dict[str, float]], None]) -> None:
    model.train()
    while state.step < cfg.steps:
        started = time.perf_counter()
        eps = techniques.teacher_forcing_prob(state.step)
        rates = techniques.apply_dropout_schedule(model, state.step)
        techniques.curriculum.prepare(state.step, model, device)
        parts = techniques.curriculum.parts(state.step, cfg.batch_size, seed)

        loss, tokens, extra = 0.0, 0, {}
        for task_index, weight, batch in parts:  # one part unless the curriculum is multi-task
            batch = batch.to(device)
            model.select(task_index)
            if techniques.objective.active(state.step):  # sequence-level training
                part_loss, stats = techniques.objective.loss(model, batch, state.step)
                extra.update(stats)
            else:
                part_loss, output, decoded = model.training_loss(batch, cfg.loss, eps,
                                                                 cfg.sampling.feed)
                part_accuracy = model.batch_accuracy(output.detach(), batch)
                techniques.curriculum.observe(part_accuracy, task_index)
                if task_index == 0:
                    extra[rs.TRAIN_ACCURACY] = part_accuracy
                    extra[rs.TRAIN_TRUTH_FRACTION] = decoded.truth_fraction
            loss = loss + weight * part_loss
            tokens += batch.tokens
        model.select(0)
        loss = monitors.check_loss(loss, state.step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        skip, grad_metrics = monitors.after_backward(model, loss, state.step)  # NaN: raises
        clipped = techniques.clipper.clip(model)
        if not skip:
            optimizer.step()
        lr = techniques.lr()
        techniques.scheduler.step()

        state.step += 1
        state.tokens += tokens
        state.train_seconds += time.perf_counter() - started
        if state.step % cfg.log_every == 0 or rs.GRAD_ANOMALY in grad_metrics:
            on_log(state, {rs.TRAIN_LOSS: loss.item(), rs.TRAIN_EPS: eps, rs.TRAIN_LR: lr,
                           **extra, **rates, **clipped, **grad_metrics,
                           **techniques.curriculum.last})
        if monitors.due(state.step):
            on_log(state, monitors.periodic(model))
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            metrics = evaluate(model, task, "valid", cfg.eval_batch_size, device)
            on_eval(state, metrics)
