"""Language modelling at the word or character level, trained with truncated BPTT.

The corpus (``source``) is the built-in English prose of the Python documentation
(``python_docs``, see :mod:`lstm_harness.tasks.lm_corpus`) or the user's own
train/valid/test files (``files``: PTB's ``ptb.*.txt`` or WikiText-2's ``wiki.*.tokens`` work
as they are). Every line is one sentence; its tokens are followed by ``<eos>``:

- ``level: word``: whitespace tokens; the vocabulary is the ``vocab_size`` - 2 most frequent
  words of the training split (ties alphabetical), ``<unk>`` and ``<eos>``; any other word is
  ``<unk>`` (a literal ``<unk>`` in the files is that token, as in PTB).
- ``level: char``: every character of the line (the space included) and ``<eos>`` for the line
  break; characters not in the training split are ``<unk>``.

Batches follow Zaremba et al. (2014) and Merity et al. (2017): a split's tokens, concatenated,
are cut into B equal streams (the rows of a [B, N / B] matrix); batch k holds columns
[k bptt, (k + 1) bptt) of every stream as inputs and the same shifted by one as targets, and
the model carries its state from batch k to k + 1 (``reset`` only on the first batch of an
epoch). Training step i reads batch i mod K of the training streams (K batches an epoch), so
batches are a pure function of (batch size, step); the seed changes only the model.

Metrics, from the negative log likelihood of every target of a split (nats):
  perplexity = exp(mean NLL per token)                 (per word, or per character)
  bpc        = sum NLL / ln 2 / characters of the text  (bits per character of the same text at
                                                        both levels: the word level counts each
                                                        word's letters and the space or line
                                                        break after it)
  accuracy   = share of targets that were the most probable token
Reference row: the unigram model of the training split (add-one smoothed counts) on the same
split.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from lstm_harness.tasks.base import Direction, StreamBatch, StreamTask, TaskParams
from lstm_harness.tasks.lm_corpus import python_docs_sentences, read_text_splits

UNK, EOS_TOKEN = "<unk>", "<eos>"
UNK_ID, EOS_ID = 0, 1


class LanguageModelParams(TaskParams):
    source: Literal["python_docs", "files"] = Field(
        "python_docs", description="python_docs: the built-in English corpus (Python "
        "documentation prose, PTB-style normalised); files: your train/valid/test text files")
    roots: Literal["stdlib", "all"] = Field(
        "stdlib", description="python_docs: the standard library only (the same on every "
        "machine with this Python version) or site-packages too (larger, machine-dependent)")
    files: str | dict[str, str] | None = Field(
        None, description="source files: a folder with train/valid/test files (train.txt, "
        "ptb.train.txt, wiki.train.tokens, ...) or {train: ..., valid: ..., test: ...}; one "
        "sentence per line; relative to the suite file")
    level: Literal["word", "char"] = "word"
    vocab_size: int = Field(10_000, ge=3, description="word level: the most frequent words of "
                            "train + <unk> + <eos> (PTB: 10,000)")
    bptt: int = Field(70, ge=2, description="steps per batch (truncated BPTT length)")

    @model_validator(mode="after")
    def check(self) -> LanguageModelParams:
        if self.source == "files" and self.files is None:
            raise ValueError("source 'files' needs 'files': a folder or {train, valid, test}")
        if self.source != "files" and self.files is not None:
            raise ValueError(f"'files' applies to source 'files' (source is '{self.source}')")
        return self


class Vocabulary:
    """Token strings <-> ids; id 0 is ``<unk>``, id 1 ``<eos>``."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = [UNK, EOS_TOKEN, *(t for t in tokens if t not in (UNK, EOS_TOKEN))]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, units: list[str]) -> list[int]:
        return [self.index.get(u, UNK_ID) for u in units]


def line_units(line: str, level: str) -> list[str]:
    """A line's tokens (words, or characters) followed by ``<eos>``."""
    units = line.split() if level == "word" else list(line)
    return [*units, EOS_TOKEN]


def build_vocabulary(lines: list[str], level: str, vocab_size: int) -> Vocabulary:
    """Word level: the ``vocab_size`` - 2 most frequent training words (ties alphabetical);
    char level: every training character (sorted)."""
    counts = Counter(u for line in lines for u in line_units(line, level)[:-1])
    counts.pop(UNK, None)
    if level == "char":
        return Vocabulary(sorted(counts))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return Vocabulary([w for w, _ in ranked[: vocab_size - 2]])


class LanguageModelTask(StreamTask):
    """Word- or character-level language modelling with truncated BPTT (see the module)."""

    name: ClassVar[str] = "language_model"
    Params: ClassVar[type[TaskParams]] = LanguageModelParams
    metrics: ClassVar[dict[str, Direction]] = {
        "perplexity": "min", "bpc": "min", "accuracy": "max"}
    carries_state: ClassVar[bool] = True

    def __init__(self, params: LanguageModelParams) -> None:
        super().__init__(params)
        self.params: LanguageModelParams = params
        self._streams: dict[tuple[str, int], torch.Tensor] = {}

    # -- data --------------------------------------------------------------------------------
    @cached_property
    def lines(self) -> dict[str, list[str]]:
        if self.params.source == "files":
            return read_text_splits(self.params.files)
        return python_docs_sentences(self.params.roots)

    @cached_property
    def vocab(self) -> Vocabulary:
        return build_vocabulary(self.lines["train"], self.params.level, self.params.vocab_size)

    @cached_property
    def ids(self) -> dict[str, torch.Tensor]:
        """Every split as one id sequence (each line's tokens, then <eos>)."""
        level = self.params.level
        return {split: torch.tensor([i for line in lines
                                     for i in self.vocab.encode(line_units(line, level))],
                                    dtype=torch.long)
                for split, lines in self.lines.items()}

    def streams(self, split: str, batch: int) -> torch.Tensor:
        """[B, N // B]: the split's ids cut into ``batch`` contiguous streams (the tail that
        does not fill a row is dropped)."""
        key = (split, batch)
        if key not in self._streams:
            ids = self.ids[split]
            length = len(ids) // batch
            if length < 2:
                raise ValueError(f"language_model: the {split} split has {len(ids)} tokens, "
                                 f"too few for {batch} streams")
            self._streams[key] = ids[: length * batch].view(batch, length)
        return self._streams[key]

    def batches_per_epoch(self, split: str, batch: int) -> int:
        """K: the batches of ``bptt`` steps a split's streams hold (a shorter last one too)."""
        return math.ceil((self.streams(split, batch).shape[1] - 1) / self.params.bptt)

    def chunk(self, split: str, batch: int, k: int) -> StreamBatch:
        data = self.streams(split, batch)
        start = k * self.params.bptt
        end = min(start + self.params.bptt, data.shape[1] - 1)
        return StreamBatch(inputs=data[:, start:end], targets=data[:, start + 1 : end + 1],
                           ids=torch.arange(batch), reset=k == 0)

    # -- the Task API ------------------------------------------------------------------------
    def check_data(self) -> None:
        """``source: files``: the three files read as text (see
        :func:`~lstm_harness.tasks.lm_corpus.read_text_file`)."""
        if self.params.source == "files":
            _ = self.lines

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def steps_per_batch(self) -> int:
        return self.params.bptt

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> StreamBatch:
        return self.chunk("train", batch_size, step % self.batches_per_epoch("train", batch_size))

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[StreamBatch]:
        """The split as ``batch_size`` streams (``train.eval_batch_size``; Merity et al. use
        10), fewer where a stream would be shorter than 2 bptt steps."""
        batch = min(batch_size, max(1, len(self.ids[split]) // (2 * self.params.bptt)))
        for k in range(self.batches_per_epoch(split, batch)):
            yield self.chunk(split, batch, k)

    def characters(self, targets: torch.Tensor) -> int:
        """Characters of the text the target tokens spell, line breaks included, as the char
        level counts them: a word is its letters and the space or line break after it
        (``<unk>`` its 5 characters, as PTB's text spells it), ``<eos>`` nothing more (the
        line break is the last word's separator); at the char level one per token."""
        if self.params.level == "char":
            return int(targets.numel())
        return int(self._characters_per_token[targets].sum())

    @cached_property
    def _characters_per_token(self) -> torch.Tensor:
        lengths = torch.tensor([len(t) + 1 for t in self.vocab.tokens])
        lengths[EOS_ID] = 0
        return lengths

    def score(self, nll: torch.Tensor, correct: torch.Tensor,
              targets: torch.Tensor) -> dict[str, float]:
        """perplexity = exp(mean NLL), bpc = sum NLL / ln 2 / characters, accuracy."""
        total = float(nll.double().sum())
        count = max(int(nll.numel()), 1)
        return {"perplexity": math.exp(total / count),
                "bpc": total / math.log(2) / max(self.characters(targets), 1),
                "accuracy": float(correct.double().mean()) if correct.numel() else 0.0,
                "nll": total / count}

    def unigram_log_probs(self) -> torch.Tensor:
        """log p(w) of the unigram model of the training split, add-one smoothed: (count + 1)
        / (N + V)."""
        counts = torch.bincount(self.ids["train"], minlength=self.vocab_size).double()
        return ((counts + 1) / (counts.sum() + self.vocab_size)).log()

    def reference_scores(self, split: Literal["valid", "test"]) -> dict[str, dict[str, float]]:
        targets = self.ids[split][1:]
        log_p = self.unigram_log_probs()
        nll = -log_p[targets]
        correct = targets == int(log_p.argmax())
        scores = self.score(nll, correct, targets)
        return {"unigram": {k: scores[k] for k in self.metrics}}

    def token_text(self, token: int) -> str:
        return self.vocab.tokens[token] if 0 <= token < self.vocab_size else str(token)
