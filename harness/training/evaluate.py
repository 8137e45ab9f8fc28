"""Held-out evaluation: teacher-forced and free-running metrics of a task's split."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lstm_harness.tasks.base import PAD, ForecastTask, Task, TaskBase, strip_special

Split = Literal["valid", "test"]


def evaluate(model: torch.nn.Module, task: TaskBase, split: Split, batch_size: int,
             device: torch.device) -> dict[str, float]:
    """Metrics on a whole split, for either kind of task (see the two functions below)."""
    if isinstance(task, ForecastTask):
        return evaluate_forecast(model, task, split, batch_size, device)
    return evaluate_seq2seq(model, task, split, batch_size, device)


@torch.no_grad()
def evaluate_seq2seq(model: torch.nn.Module, task: Task, split: Split, batch_size: int,
                     device: torch.device) -> dict[str, float]:
    """``<m>``: free-running (greedy decoding from the model's own predictions);
    ``<m>_tf``: teacher-forced (argmax at each step given the true prefix); ``loss``: the
    teacher-forced cross entropy per target token, ``ppl = exp(loss)``.
    """
    was_training = model.training
    model.eval()
    tf_hyps: list[list[int]] = []
    free_hyps: list[list[int]] = []
    refs: list[list[int]] = []
    nll, tokens = 0.0, 0
    for batch in task.eval_batches(split, batch_size):
        batch = batch.to(device)
        logits = model(batch)
        nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                     batch.tgt.reshape(-1), ignore_index=PAD,
                                     reduction="sum"))
        tokens += int((batch.tgt != PAD).sum())
        tf_hyps += [strip_special(row) for row in logits.argmax(-1).tolist()]
        free = model.greedy(batch.src, batch.src_len, task.max_target_len + 1)
        free_hyps += [strip_special(row) for row in free.tolist()]
        refs += [strip_special(row) for row in batch.tgt.tolist()]
    model.train(was_training)
    metrics = dict(task.score(free_hyps, refs))
    metrics.update({f"{k}_tf": v for k, v in task.score(tf_hyps, refs).items()})
    loss = nll / max(tokens, 1)
    metrics["loss"] = loss
    metrics["ppl"] = float(torch.tensor(loss).exp())
    return metrics


@torch.no_grad()
def evaluate_forecast(model: torch.nn.Module, task: ForecastTask, split: Split,
                      batch_size: int, device: torch.device) -> dict[str, float]:
    """``<m>``: free-running (each prediction fed back for the whole horizon); ``<m>_tf``:
    teacher-forced (one step ahead, the true previous value fed at every step); ``loss``: the
    teacher-forced mean squared error on the model's scale. Metrics on the original scale."""
    was_training = model.training
    model.eval()
    free, forced, targets, ids = [], [], [], []
    for batch in task.eval_batches(split, batch_size):
        batch = batch.to(device)
        forced.append(model(batch).cpu())
        free.append(model.free_running(batch, batch.target.shape[1]).cpu())
        targets.append(batch.target.cpu())
        ids.append(batch.ids.cpu())
    model.train(was_training)
    target, index = torch.cat(targets), torch.cat(ids)
    forced_all = torch.cat(forced)
    metrics = dict(task.score(torch.cat(free), target, index, split=split))
    metrics.update({f"{k}_tf": v for k, v in
                    task.score(forced_all, target, index, split=split).items()
                    if k in task.metrics})
    metrics["loss"] = float(F.mse_loss(forced_all, target))
    return metrics
