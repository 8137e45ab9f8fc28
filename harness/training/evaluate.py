"""Held-out evaluation: teacher-forced and free-running metrics of a task's split."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from harness.models.seq2seq import Seq2Seq
from tasks.base import PAD, Task, strip_special


@torch.no_grad()
def evaluate(model: Seq2Seq, task: Task, split: Literal["valid", "test"], batch_size: int,
             device: torch.device) -> dict[str, float]:
    """Metrics on a whole split.

    ``<m>``: free-running (greedy decoding from the model's own predictions);
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
