"""The training loop: read it top to bottom.

Each step draws the task's batch for that step (a pure function of seed and step, so a resumed
trial continues exactly), computes the teacher-forced loss, and updates the parameters. Every
``log_every`` steps the training loss is handed to ``on_log``; every ``eval_every`` steps (and
at the last step) the validation metrics are handed to ``on_eval``, which also checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from harness.config import TrainConfig
from harness.models.seq2seq import Seq2Seq
from harness.training.evaluate import evaluate
from tasks.base import PAD, Task


@dataclass
class TrainState:
    """What a checkpoint must carry besides the weights to resume a trial exactly."""

    step: int = 0
    tokens: int = 0  # non-padding source + target tokens trained on
    train_seconds: float = 0.0  # time in training steps only (evaluation excluded)

    def as_dict(self) -> dict:
        return asdict(self)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the trial cannot go on."""


def train(model: Seq2Seq, optimizer: torch.optim.Optimizer, task: Task, cfg: TrainConfig,
          seed: int, state: TrainState, device: torch.device,
          on_log: Callable[[TrainState, dict[str, float]], None],
          on_eval: Callable[[TrainState, dict[str, float]], None]) -> None:
    model.train()
    while state.step < cfg.steps:
        started = time.perf_counter()
        batch = task.train_batch(state.step, cfg.batch_size, seed).to(device)
        loss = model.loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at step {state.step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        state.step += 1
        state.tokens += int((batch.src != PAD).sum() + (batch.tgt != PAD).sum())
        state.train_seconds += time.perf_counter() - started
        if state.step % cfg.log_every == 0:
            on_log(state, {"train.loss": loss.item()})
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            metrics = evaluate(model, task, "valid", cfg.eval_batch_size, device)
            on_eval(state, metrics)
