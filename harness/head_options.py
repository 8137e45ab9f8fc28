"""Which suite options each model head takes.

The harness trains one head per task kind: the encoder-decoder (``seq2seq``), the forecaster
(``forecast``), the language model (``lm``) and the sequence classifier (``classify``). Every
cell, dropout, skip, clipping and schedule option applies to all four unchanged; the options
below do not, and ``validate`` refuses them with a message that names the option, the head and
why. ``tests/test_head_options.py`` runs every option of the README's option table on every
head: it trains, or it is refused here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lstm_harness.tasks.base import TaskBase

HEAD_NAMES = {"seq2seq": "encoder-decoder", "forecast": "forecaster", "lm": "language model",
              "classify": "sequence classifier"}
DECODER_HEADS = frozenset({"seq2seq", "forecast"})
STACK_HEADS = frozenset({"lm", "classify"})  # one stack read at every step or at its end
SEQUENCE_LEVEL = frozenset({"reinforce", "scst", "mrt", "mixer"})
CLASSIFY_CURRICULA = frozenset({"none", "length_linear", "length_exponential", "adaptive",
                                "naive", "mix", "combined"})

Config = dict[str, Any]


@dataclass(frozen=True)
class HeadRule:
    """``path`` is set (``used``) in a config: only the ``heads`` take it, for ``why``."""

    path: str
    used: Callable[[Config], bool]
    heads: frozenset[str]
    why: str

    def problem(self, config: Config, kind: str) -> str | None:
        if kind in self.heads or not self.used(config):
            return None
        return f"{self.path}: the {HEAD_NAMES[kind]} head ({kind}) does not take it: {self.why}"


def _attention(config: Config) -> dict | None:
    return config["model"]["attention"]


RULES = [
    HeadRule("model.bidirectional", lambda c: c["model"]["bidirectional"],
             frozenset({"seq2seq", "forecast", "classify"}),
             "a language model predicts each token from the ones before it, so it reads "
             "left to right"),
    HeadRule("model.context", lambda c: c["model"]["context"] != "last",
             frozenset({"seq2seq", "forecast", "classify"}),
             "there is no encoder context: the softmax reads the top layer at every step"),
    HeadRule("model.fuse", lambda c: c["model"]["fuse"] != "concat", DECODER_HEADS,
             "it reads one input stream (fuse combines the encoders of several)"),
    HeadRule("model.attention", lambda c: _attention(c) is not None
             and _attention(c)["type"] != "self", DECODER_HEADS,
             "there is no decoder to attend from; {type: self} (intra-attention in the LSTM "
             "layers, Cheng et al. 2016) works"),
    HeadRule("model.hidden_sizes", lambda c: c["model"]["hidden_sizes"] is not None,
             STACK_HEADS, "the decoder starts from the encoder's final states, so the layers "
             "share model.hidden"),
    HeadRule("model.tie_weights", lambda c: c["model"]["tie_weights"], frozenset({"lm"}),
             "tying shares the input embedding with the softmax over the same vocabulary, "
             "which only the language model has"),
    HeadRule("model.readout", lambda c: c["model"]["readout"] != "last",
             frozenset({"classify"}), "only the classifier reads a summary of the sequence"),
    HeadRule("model.dropout.embedding", lambda c: c["model"]["dropout"]["embedding"] > 0,
             STACK_HEADS, "word-type embedding dropout is built for the language model and "
             "the classifier's token inputs"),
    HeadRule("train.sampling.schedule",
             lambda c: c["train"]["sampling"]["schedule"] != "teacher_forcing", DECODER_HEADS,
             "scheduled sampling feeds a decoder its own predictions; this head reads only "
             "true inputs"),
    HeadRule("train.curriculum.kind", lambda c: c["train"]["curriculum"]["kind"] != "none",
             frozenset({"seq2seq", "forecast", "classify"}),
             "a language model reads one stream in order (the curricula choose examples)"),
    HeadRule("train.curriculum.kind", lambda c: c["train"]["curriculum"]["kind"]
             not in CLASSIFY_CURRICULA, frozenset({"seq2seq", "forecast", "lm"}),
             "the classifier takes the length curricula and the accuracy-driven ones "
             f"({', '.join(sorted(CLASSIFY_CURRICULA - {'none'}))}); perplexity ordering "
             "and multi-task need sequence-to-sequence tasks"),
    HeadRule("train.loss.kind", lambda c: c["train"]["loss"]["kind"] in SEQUENCE_LEVEL,
             frozenset({"seq2seq"}), "sequence-level losses sample and score whole output "
             "sequences, which only the encoder-decoder decodes"),
    HeadRule("train.loss.ar", lambda c: c["train"]["loss"]["ar"] > 0, STACK_HEADS,
             "activation regularisation acts on the top layer of a language model or "
             "classifier (Merity et al. 2017)"),
    HeadRule("train.loss.tar", lambda c: c["train"]["loss"]["tar"] > 0, STACK_HEADS,
             "temporal activation regularisation acts on the top layer of a language model "
             "or classifier (Merity et al. 2017)"),
    HeadRule("train.length_buckets", lambda c: c["train"].get("length_buckets") is not None,
             frozenset({"seq2seq"}), "per-length metrics are taken by source length of "
             "sequence-to-sequence examples"),
    HeadRule("train.mc_samples", lambda c: c["train"]["mc_samples"] > 0, STACK_HEADS,
             "MC-dropout evaluation averages predictive distributions of the language model "
             "and the classifier; decoding averages no distribution"),
    HeadRule("monitor.gates", lambda c: c["monitor"]["gates"], DECODER_HEADS,
             "gate statistics are recorded for encoder-decoder stacks only so far"),
    HeadRule("monitor.cells", lambda c: c["monitor"]["cells"], DECODER_HEADS,
             "cell-state statistics are recorded for encoder-decoder stacks only so far"),
    HeadRule("monitor.info_flow", lambda c: c["monitor"]["info_flow"], DECODER_HEADS,
             "information flow is measured from a decoder's states"),
]


def head_problems(config: Config, task: type[TaskBase]) -> list[str]:
    """The options of a resolved trial config that the task's head refuses, one line each;
    and token losses on a classifier of values."""
    kind = task.kind
    lines = [p for rule in RULES if (p := rule.problem(config, kind)) is not None]
    loss = config["train"]["loss"]
    if kind == "classify" and getattr(task, "output", "classes") == "values" and (
            loss["kind"] != "ce" or loss["label_smoothing"] > 0):
        lines.append("train.loss: the sequence classifier of a regression task (values) "
                     "trains on the mean squared error; leave loss.kind at ce and "
                     "label_smoothing at 0 (token losses)")
    return lines
