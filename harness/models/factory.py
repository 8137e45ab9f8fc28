"""The model a trial trains, chosen by the task's kind."""

from __future__ import annotations

from harness.config import ModelConfig
from harness.models.seq2seq import Seq2Seq
from tasks.base import Task


def build_model(cfg: ModelConfig, task: Task, aux_tasks: list[Task] | None = None) -> Seq2Seq:
    """The trial's model; ``aux_tasks`` (multi-task curriculum) share its encoder-decoder."""
    for t in [task, *(aux_tasks or [])]:
        if t.kind != "seq2seq":
            raise ValueError(f"task '{t.name}' is of kind '{t.kind}'; trials train "
                             "sequence-to-sequence tasks only so far")
    extra = [(t.src_vocab_size, t.tgt_vocab_size) for t in aux_tasks or []]
    return Seq2Seq(cfg, task.src_vocab_size, task.tgt_vocab_size, extra)
