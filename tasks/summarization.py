"""Summarization: a text -> its one-line summary.

Built-in corpus (``source: docstrings``, no download): docstrings of the installed Python
modules, read without importing them (``tasks/corpora.py``): the input is the docstring's body,
the target its summary line. Or local files / a hub dataset (for example
``abisee/cnn_dailymail`` config ``3.0.0`` with ``columns: [article, highlights]``, or
``EdinburghNLP/xsum`` with ``columns: [document, summary]``).

Metrics with rouge-score (Lin 2004): ROUGE-1, ROUGE-2 and ROUGE-L F1 averaged over the split,
x 100, with Porter stemming; and ``repeated_ngrams``: the percentage of the outputs' n-grams
(n = ``repeat_n``, 3) that repeat an earlier n-gram of the same output (See et al. 2017, Fig. 4;
``tasks/repetition.py``), lower is better. Reference row: the lead (first) sentence of the
input.
Reward: ROUGE-L F1 on the token ids.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field
from rouge_score import rouge_scorer

from lstm_harness.tasks.base import Direction, TaskParams
from lstm_harness.tasks.corpora import docstring_pairs
from lstm_harness.tasks.data import Pair
from lstm_harness.tasks.repetition import repeated_ngram_rate
from lstm_harness.tasks.text import TextPairTask, TextParams

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def lead_sentence(text: str) -> str:
    """The text up to its first sentence end (., ! or ? followed by whitespace)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


class SummarizationParams(TextParams):
    source: Literal["docstrings", "files", "hub"] = "docstrings"
    roots: Literal["stdlib", "all"] = Field("stdlib", description="docstrings of the standard "
                                            "library, or of site-packages too")
    min_body_words: int = Field(20, ge=1)
    max_body_words: int = Field(200, ge=1)
    max_summary_words: int = Field(30, ge=1)
    max_src_len: int = Field(128, ge=1, description="inputs truncated to this many tokens")
    max_tgt_len: int = Field(32, ge=1, description="training targets truncated to this many "
                             "tokens; decoding stops after this + 1")
    repeat_n: int = Field(3, ge=1, description="n of the repeated_ngrams metric (See et al. "
                          "2017 show 1- to 4-grams)")


class SummarizationTask(TextPairTask):
    """Summarization with ROUGE; see the module docstring."""

    name: ClassVar[str] = "summarization"
    Params: ClassVar[type[TaskParams]] = SummarizationParams
    metrics: ClassVar[dict[str, Direction]] = {**{k: "max" for k in ROUGE_TYPES},
                                               "repeated_ngrams": "min"}
    default_reward: ClassVar[str | None] = "rougeL"

    params: SummarizationParams

    def __init__(self, params: SummarizationParams | None = None) -> None:
        super().__init__(params if params is not None else SummarizationParams())
        self._scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
        self._id_scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def builtin_pairs(self) -> list[Pair]:
        p = self.params
        return docstring_pairs(p.roots, p.min_body_words, p.max_body_words, p.max_summary_words)

    def origin(self) -> str:
        if self.params.source == "docstrings":
            return f"docstrings of the installed modules ({self.params.roots})"
        return super().origin()

    def score_texts(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        totals = dict.fromkeys(ROUGE_TYPES, 0.0)
        for hyp, ref in zip(hyps, refs, strict=True):
            scores = self._scorer.score(ref, hyp)  # reference first
            for key in ROUGE_TYPES:
                totals[key] += scores[key].fmeasure
        metrics = {key: 100 * value / len(refs) for key, value in totals.items()}
        metrics["repeated_ngrams"] = repeated_ngram_rate([h.split() for h in hyps],
                                                         self.params.repeat_n)
        return metrics

    def baselines(self, sources: list[str]) -> dict[str, list[str]]:
        return {"lead sentence": [lead_sentence(s) for s in sources]}

    def reward(self, hyps: list[list[int]], refs: list[list[int]]) -> list[float]:
        """ROUGE-L F1 (rouge-score) of the token ids joined by spaces."""
        return [self._id_scorer.score(" ".join(map(str, r)), " ".join(map(str, h)))["rougeL"]
                .fmeasure for h, r in zip(hyps, refs, strict=True)]
