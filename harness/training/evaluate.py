"""Held-out evaluation: teacher-forced and free-running metrics of a task's split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from lstm_harness.tasks.base import (
    PAD,
    ForecastTask,
    SequenceTask,
    StreamTask,
    Task,
    TaskBase,
    length_bucket_metric,
    strip_special,
)

Split = Literal["valid", "test"]


def evaluate(model: torch.nn.Module, task: TaskBase, split: Split, batch_size: int,
             device: torch.device, mc_samples: int = 0,
             length_buckets: list[int] | None = None) -> dict[str, float]:
    """Metrics on a whole split, for every kind of task (see the functions below);
    ``mc_samples`` > 0 adds MC-dropout metrics (``<m>_mc``) where the kind has them;
    ``length_buckets`` adds per-source-length metrics of sequence-to-sequence tasks."""
    if isinstance(task, ForecastTask):
        return evaluate_forecast(model, task, split, batch_size, device)
    if isinstance(task, StreamTask):
        return evaluate_stream(model, task, split, batch_size, device, mc_samples)
    if isinstance(task, SequenceTask):
        return evaluate_sequences(model, task, split, batch_size, device, mc_samples)
    return evaluate_seq2seq(model, task, split, batch_size, device, length_buckets)


@torch.no_grad()
def evaluate_seq2seq(model: torch.nn.Module, task: Task, split: Split, batch_size: int,
                     device: torch.device,
                     length_buckets: list[int] | None = None) -> dict[str, float]:
    """``<m>``: free-running (greedy decoding from the model's own predictions);
    ``<m>_tf``: teacher-forced (argmax at each step given the true prefix); ``loss``: the
    teacher-forced cross entropy per target token, ``ppl = exp(loss)``; with
    ``length_buckets`` also the free-running metrics per source-length bucket
    (:func:`bucketed_scores`).
    """
    was_training = model.training
    model.eval()
    tf_hyps: list[list[int]] = []
    free_hyps: list[list[int]] = []
    refs: list[list[int]] = []
    src_lengths: list[int] = []
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
        src_lengths += batch.src_len.tolist()
    model.train(was_training)
    metrics = dict(task.score(free_hyps, refs))
    if length_buckets:
        metrics.update(bucketed_scores(task, free_hyps, refs, src_lengths, length_buckets))
    metrics.update({f"{k}_tf": v for k, v in task.score(tf_hyps, refs).items()})
    loss = nll / max(tokens, 1)
    metrics["loss"] = loss
    metrics["ppl"] = float(torch.tensor(loss).exp())
    return metrics


def bucketed_scores(task: Task, hyps: list[list[int]], refs: list[list[int]],
                    src_lengths: list[int], edges: list[int]) -> dict[str, float]:
    """The task's metrics on each source-length bucket (e_{k-1}, e_k] of ``edges``, named
    ``<metric>_len<e_{k-1}+1>-<e_k>``; buckets without examples are left out, and so are
    the task's extra (undeclared) values."""
    out: dict[str, float] = {}
    for lo, hi in zip(edges, edges[1:], strict=False):
        rows = [i for i, n in enumerate(src_lengths) if lo < n <= hi]
        if not rows:
            continue
        scores = task.score([hyps[i] for i in rows], [refs[i] for i in rows])
        out.update({length_bucket_metric(k, lo + 1, hi): v for k, v in scores.items()
                    if k in task.metrics})
    return out


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


def with_mc_dropout(model: torch.nn.Module, mc_samples: int,
                    metrics_of: Callable[[int], dict[str, float]]) -> dict[str, float]:
    """``metrics_of(1)`` with the deterministic model (eval mode) and, for ``mc_samples`` =
    N > 0, ``metrics_of(N)`` with every dropout mask drawn as in training, as ``<m>_mc``;
    the model's mode is restored."""
    was_training = model.training
    model.eval()
    metrics = metrics_of(1)
    if mc_samples > 0:
        model.train()
        metrics.update({f"{k}_mc": v for k, v in metrics_of(mc_samples).items()})
    model.train(was_training)
    return metrics


@torch.no_grad()
def evaluate_stream(model: torch.nn.Module, task: StreamTask, split: Split, batch_size: int,
                    device: torch.device, mc_samples: int = 0) -> dict[str, float]:
    """The task's metrics from the negative log likelihood of every counted target of the
    split, read in order with the states carried from batch to batch (reset where a batch
    starts new streams); ``loss``: the mean NLL per counted target (nats).

    ``mc_samples`` = N > 0 adds ``<m>_mc`` for every metric: MC-dropout evaluation (Gal &
    Ghahramani 2016), p^(y_t) = 1/N sum_s p_s(y_t), each of the N passes with every dropout
    mask drawn as in training and its own carried states; the standard metrics use the
    deterministic model (dropout off, zoneout's expectation)."""
    return with_mc_dropout(model, mc_samples, lambda passes: _stream_metrics(
        model, task, split, batch_size, device, passes))


def _stream_metrics(model: torch.nn.Module, task: StreamTask, split: Split, batch_size: int,
                    device: torch.device, passes: int) -> dict[str, float]:
    """Metrics of the split from ``passes`` forward passes averaged in probability (one pass:
    the model as it is)."""
    states: list = [None] * passes
    nll, correct, targets = [], [], []
    for batch in task.eval_batches(split, batch_size):
        batch = batch.to(device)
        if batch.reset:
            states = [None] * passes
        if passes == 1:
            logits, states[0] = model.predict(batch.inputs, states[0])
            log_p = F.log_softmax(logits.float(), dim=-1)
        else:
            probs = 0.0
            for s in range(passes):
                logits, states[s] = model.predict(batch.inputs, states[s])
                probs = probs + F.softmax(logits.float(), dim=-1)
            log_p = (probs / passes).log()
        mask = batch.counted
        target = batch.targets[mask]
        log_p = log_p[mask]
        nll.append(-log_p.gather(1, target.unsqueeze(1)).squeeze(1).double().cpu())
        correct.append((log_p.argmax(1) == target).cpu())
        targets.append(target.cpu())
    nll_all = torch.cat(nll)
    metrics = dict(task.score(nll_all, torch.cat(correct), torch.cat(targets)))
    metrics["loss"] = float(nll_all.mean()) if nll_all.numel() else 0.0
    return metrics


@torch.no_grad()
def evaluate_sequences(model: torch.nn.Module, task: SequenceTask, split: Split,
                       batch_size: int, device: torch.device,
                       mc_samples: int = 0) -> dict[str, float]:
    """The task's metrics from the classifier's outputs on the whole split (class
    probabilities, or predicted values); ``loss``: the mean cross entropy (classes) or mean
    squared error (values).

    ``mc_samples`` = N > 0 adds ``<m>_mc``: MC-dropout evaluation (Gal & Ghahramani 2016),
    p^(y) = 1/N sum_s p_s(y) for classes (the mean prediction for values), each pass with
    every dropout mask drawn as in training; the standard metrics use the deterministic
    model."""
    return with_mc_dropout(model, mc_samples, lambda passes: _sequence_metrics(
        model, task, split, batch_size, device, passes))


def _sequence_metrics(model: torch.nn.Module, task: SequenceTask, split: Split,
                      batch_size: int, device: torch.device, passes: int) -> dict[str, float]:
    outputs, labels = [], []
    for batch in task.eval_batches(split, batch_size):
        batch = batch.to(device)
        out = sum(model.predict(batch).float() for _ in range(passes)) / passes
        outputs.append(out.cpu())
        labels.append(batch.labels.cpu())
    out_all, labels_all = torch.cat(outputs), torch.cat(labels)
    metrics = dict(task.score(out_all, labels_all))
    if task.output == "classes":
        picked = out_all.gather(1, labels_all.unsqueeze(1)).squeeze(1)
        metrics["loss"] = float(-picked.double().clamp_min(1e-45).log().mean())
    else:
        metrics["loss"] = float(F.mse_loss(out_all.double(), labels_all.double()))
    return metrics
