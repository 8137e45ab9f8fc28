"""The model a trial trains, chosen by the task's kind."""

from __future__ import annotations

from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.models.classifier import SequenceClassifier
from lstm_harness.models.language_model import LanguageModel
from lstm_harness.models.seq2seq import Forecaster, Seq2Seq
from lstm_harness.tasks.base import ForecastTask, SequenceTask, StreamTask, TaskBase


def build_model(cfg: ModelConfig, task: TaskBase, aux_tasks: list[TaskBase] | None = None
                ) -> nn.Module:
    """A :class:`Seq2Seq` for token tasks (``aux_tasks``, of the multi-task curriculum, share
    its encoder-decoder); a :class:`Forecaster` for forecasting tasks; a
    :class:`LanguageModel` for token-stream tasks (kind ``lm``); a
    :class:`SequenceClassifier` for sequence-to-label tasks (kind ``classify``)."""
    if isinstance(task, SequenceTask):
        if aux_tasks:
            raise ValueError(f"task '{task.name}' is a classification task; multi-task "
                             "curricula combine sequence-to-sequence tasks only")
        return SequenceClassifier(cfg, task)
    if isinstance(task, StreamTask):
        if aux_tasks:
            raise ValueError(f"task '{task.name}' is a token-stream (lm) task; multi-task "
                             "curricula combine sequence-to-sequence tasks only")
        return LanguageModel(cfg, task.vocab_size)
    if isinstance(task, ForecastTask):
        if aux_tasks:
            raise ValueError(f"task '{task.name}' is a forecasting task; multi-task curricula "
                             "combine token (seq2seq) tasks only")
        return Forecaster(cfg, task.n_features, task.n_targets, task.covariate_features)
    for t in aux_tasks or []:
        if t.kind != "seq2seq":
            raise ValueError(f"auxiliary task '{t.name}' is of kind '{t.kind}'; multi-task "
                             "curricula combine token (seq2seq) tasks only")
    extra = [(t.src_vocab_size, t.tgt_vocab_size) for t in aux_tasks or []]
    return Seq2Seq(cfg, task.src_vocab_size, task.tgt_vocab_size, extra)
