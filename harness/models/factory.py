"""The model a trial trains, chosen by the task's kind."""

from __future__ import annotations

from harness.config import ModelConfig
from harness.models.seq2seq import Seq2Seq
from tasks.base import Task


def build_model(cfg: ModelConfig, task: Task) -> Seq2Seq:
    if task.kind != "seq2seq":
        raise ValueError(f"task '{task.name}' is of kind '{task.kind}'; trials train "
                         "sequence-to-sequence tasks only so far")
    return Seq2Seq(cfg, task.src_vocab_size, task.tgt_vocab_size)
