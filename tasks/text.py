"""Sequence-to-sequence tasks on text pairs: the shared part of translation and summarization.

Data flow: a source of (input text, target text) pairs (built-in corpus, local files or a hub
dataset; ``tasks/data.py``) -> train/valid/test splits (given by the source, or carved from
it by a hash of the input text, so the split never depends on the order of the data) ->
a vocabulary trained on the training split only (``tasks/tokenizer.py``; cached) -> token ids.

Limits: inputs are truncated to ``max_src_len`` tokens in every split; training targets to
``max_tgt_len`` tokens (held-out references stay whole; free-running decoding stops after
``max_tgt_len`` + 1 steps). Held-out splits are capped at ``max_valid`` / ``max_test`` pairs
(the first ones in split order), so evaluation costs the same on large corpora.

Batches: the training split is a finite pool (ids and target lengths exposed for the
curricula). With ``bucket``, each training batch is drawn from one of ``n_buckets`` groups of
pairs of similar source + target length (chosen with probability proportional to its size),
which keeps padding low; batches stay a pure function of (seed, step). Held-out batches are
sorted by length; their ``ids`` are positions in the split.
"""

from __future__ import annotations

import functools
import json
import os
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from lstm_harness.tasks.base import Seq2SeqBatch, Task, TaskParams, pad_sequences, strip_special
from lstm_harness.tasks.data import (
    Pair,
    assign_splits,
    cache_dir,
    read_hub_pairs,
    read_pair_files,
    stable_hash,
)
from lstm_harness.tasks.tokenizer import TextTokenizer, TokenizerConfig

SPLITS = ("train", "valid", "test")
ENCODING_VERSION = 2  # bump when the encoding below changes


class TextParams(TaskParams):
    """Parameters shared by text-pair tasks (the ``source`` field is declared per task)."""

    files: str | dict[str, str] | None = Field(
        None, description="source files: one jsonl/csv/tsv file, or {train:, valid:, test:}")
    format: Literal["jsonl", "csv", "tsv"] | None = Field(
        None, description="file format (default: from the file extension)")
    dataset: str | None = Field(None, description="hub dataset name (source: hub)")
    config: str | None = Field(None, description="hub dataset configuration (source: hub)")
    columns: tuple[str, str] | None = Field(
        None, description="input and target column (files, hub; dotted for nested fields)")
    valid_fraction: float = Field(0.05, gt=0, lt=0.5, description="held-out share for "
                                  "valid when the source has no valid split")
    test_fraction: float = Field(0.05, gt=0, lt=0.5, description="held-out share for test "
                                 "when the source has no test split")
    max_valid: int = Field(500, ge=1, description="at most this many validation pairs")
    max_test: int = Field(2000, ge=1, description="at most this many test pairs")
    max_train: int | None = Field(None, ge=1, description="at most this many training pairs")
    max_src_len: int = Field(64, ge=1, description="inputs truncated to this many tokens")
    max_tgt_len: int = Field(48, ge=1, description="training targets truncated to this many "
                             "tokens; decoding stops after this + 1")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    shared_vocab: bool = Field(True, description="one vocabulary for inputs and targets")
    bucket: bool = Field(True, description="draw each training batch from one length bucket")
    n_buckets: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check_source(self) -> TextParams:
        source = getattr(self, "source", None)
        if source == "files" and (self.files is None or self.columns is None):
            raise ValueError("source 'files' needs 'files' (a path or {train:, valid:, test:}) "
                             "and 'columns' ([input column, target column])")
        if source == "hub" and (self.dataset is None or self.columns is None):
            raise ValueError("source 'hub' needs 'dataset' (and 'config' if it has one) and "
                             "'columns' ([input column, target column])")
        return self


@dataclass
class EncodedSplit:
    """One split: raw texts and token ids (inputs truncated; training targets truncated)."""

    pairs: list[Pair]
    src: list[list[int]]
    tgt: list[list[int]]


class TextPairTask(Task):
    """Base of text-pair tasks. Subclasses give ``builtin_pairs`` (their built-in corpus),
    ``score_texts`` (metrics on detokenized text), ``reward`` and ``baselines``."""

    params: TextParams

    # -- hooks -------------------------------------------------------------------------------
    @abstractmethod
    def builtin_pairs(self) -> list[Pair]:
        """The task's built-in corpus (``source`` other than files/hub)."""

    @abstractmethod
    def score_texts(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        """The task's metrics of detokenized hypotheses against references."""

    def baselines(self, sources: list[str]) -> dict[str, list[str]]:
        """Trivial hypotheses from the inputs alone: baseline name -> one text per input."""
        return {}

    # -- data --------------------------------------------------------------------------------
    def origin(self) -> str:
        p = self.params
        source = getattr(p, "source", "?")
        if source == "files":
            return f"files {p.files}"
        if source == "hub":
            return f"hub dataset '{p.dataset}'"
        return f"built-in corpus '{source}'"

    def raw_splits(self) -> dict[str, list[Pair]]:
        """train/valid/test pairs from the configured source, held-out splits capped."""
        p = self.params
        source = getattr(p, "source", None)
        if source == "files":
            parts = read_pair_files(p.files, p.columns, p.format)
        elif source == "hub":
            parts = read_hub_pairs(p.dataset, p.config, p.columns)
        else:
            parts = {"all": self.builtin_pairs()}
        splits = assign_splits(parts, p.valid_fraction, p.test_fraction, self.origin())
        splits["valid"] = splits["valid"][: p.max_valid]
        splits["test"] = splits["test"][: p.max_test]
        if p.max_train is not None:
            splits["train"] = splits["train"][: p.max_train]
        return splits

    @functools.cached_property
    def data(self) -> dict[str, EncodedSplit]:
        """The encoded splits; built once per task object, encoded ids cached on disk (keyed by
        the split texts and the vocabulary settings). ``prep_seconds`` records the stages."""
        p = self.params
        started = time.perf_counter()
        splits = self.raw_splits()
        read = time.perf_counter()
        train = splits["train"]
        if p.shared_vocab:
            tok = TextTokenizer.train([s for s, _ in train] + [t for _, t in train], p.tokenizer)
            self._tokenizers = (tok, tok)
        else:
            self._tokenizers = (TextTokenizer.train([s for s, _ in train], p.tokenizer),
                                TextTokenizer.train([t for _, t in train], p.tokenizer))
        vocab = time.perf_counter()
        out = self._encode_cached(splits)
        self.prep_seconds = {"read": read - started, "vocabulary": vocab - read,
                             "encode": time.perf_counter() - vocab}
        return out

    def _encode_cached(self, splits: dict[str, list[Pair]]) -> dict[str, EncodedSplit]:
        p = self.params
        key = stable_hash(ENCODING_VERSION, p.tokenizer.model_dump(), p.shared_vocab,
                          p.max_src_len, p.max_tgt_len, splits)
        path = cache_dir() / "encoded" / f"{key}.json"
        if path.exists():
            ids = json.loads(path.read_text())
        else:
            src_tok, tgt_tok = self._tokenizers
            ids = {}
            for name in SPLITS:
                pairs = splits[name]
                src = [x[: p.max_src_len] for x in src_tok.encode([s for s, _ in pairs])]
                tgt = tgt_tok.encode([t for _, t in pairs])
                if name == "train":
                    tgt = [x[: p.max_tgt_len] for x in tgt]
                ids[name] = {"src": src, "tgt": tgt}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(ids, separators=(",", ":")))
            tmp.replace(path)  # atomic: parallel trials may write the same file
        return {name: EncodedSplit(splits[name], ids[name]["src"], ids[name]["tgt"])
                for name in SPLITS}

    @property
    def tokenizers(self) -> tuple[TextTokenizer, TextTokenizer]:
        self.data  # noqa: B018 - builds the vocabularies
        return self._tokenizers

    # -- Task API: vocabulary ------------------------------------------------------------------
    @property
    def src_vocab_size(self) -> int:
        return self.tokenizers[0].vocab_size

    @property
    def tgt_vocab_size(self) -> int:
        return self.tokenizers[1].vocab_size

    @property
    def max_target_len(self) -> int:
        return self.params.max_tgt_len

    @property
    def length_bounds(self) -> tuple[int, int]:
        lengths = self.pool_lengths()
        return min(lengths), max(lengths)

    def detokenize(self, ids: list[int], side: Literal["src", "tgt"] = "tgt") -> str:
        tok = self.tokenizers[0 if side == "src" else 1]
        return tok.decode([strip_special(ids)])[0]

    def token_text(self, token: int, side: Literal["src", "tgt"] = "tgt") -> str:
        return self.tokenizers[0 if side == "src" else 1].token_text(token)

    # -- Task API: batches ---------------------------------------------------------------------
    def _batch(self, split: EncodedSplit, ids: list[int]) -> Seq2SeqBatch:
        src, src_len = pad_sequences([split.src[i] or [self._unk] for i in ids])
        tgt, tgt_len = pad_sequences([split.tgt[i] for i in ids], append_eos=True)
        return Seq2SeqBatch(src, src_len, tgt, tgt_len, torch.tensor(ids, dtype=torch.long))

    _unk = 3  # an empty input is read as one <unk> (the encoder needs one step)

    @property
    def train_pool_size(self) -> int | None:
        return len(self.data["train"].pairs)

    def pool_lengths(self) -> list[int]:
        return [len(t) for t in self.data["train"].tgt]

    def pool_batch(self, ids: list[int]) -> Seq2SeqBatch:
        return self._batch(self.data["train"], ids)

    @functools.cached_property
    def buckets(self) -> list[list[int]]:
        """Training ids in ``n_buckets`` groups of similar source + target length."""
        train = self.data["train"]
        order = sorted(range(len(train.src)),
                       key=lambda i: (len(train.src[i]) + len(train.tgt[i]), i))
        n = min(self.params.n_buckets, len(order))
        return [order[k * len(order) // n:(k + 1) * len(order) // n] for k in range(n)]

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> Seq2SeqBatch:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bounds = None if lengths is None else self.clip_lengths(lengths)
        allowed = None
        if self.params.bucket:
            buckets = self.buckets
            if bounds is not None:
                size = self.pool_lengths()
                buckets = [[i for i in b if bounds[0] <= size[i] <= bounds[1]] for b in buckets]
                buckets = [b for b in buckets if b] or self.buckets
            g = torch.Generator().manual_seed((seed * 7_919 + step * 104_729 + 1) % 2**63)
            weights = torch.tensor([len(b) for b in buckets], dtype=torch.float)
            allowed = buckets[int(torch.multinomial(weights, 1, generator=g))]
        return self.pool_batch(self.draw_pool_ids(step, batch_size, seed, bounds, allowed))

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[Seq2SeqBatch]:
        if split not in ("valid", "test"):
            raise ValueError(f"unknown split {split!r}; allowed splits: valid, test")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        data = self.data[split]
        order = sorted(range(len(data.src)), key=lambda i: (len(data.src[i]), i))

        def batches() -> Iterator[Seq2SeqBatch]:
            for start in range(0, len(order), batch_size):
                yield self._batch(data, order[start:start + batch_size])

        return batches()

    # -- Task API: metrics -------------------------------------------------------------------
    def score(self, hyps: list[list[int]], refs: list[list[int]]) -> dict[str, float]:
        if len(hyps) != len(refs) or not refs:
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
        tok = self.tokenizers[1]
        return self.score_texts(tok.decode(hyps), tok.decode(refs))

    def reference_scores(self, split: Literal["valid", "test"]) -> dict[str, dict[str, float]]:
        data = self.data[split]
        refs = self.tokenizers[1].decode(data.tgt)
        sources = [s for s, _ in data.pairs]
        return {name: self.score_texts(hyps, refs)
                for name, hyps in self.baselines(sources).items()}

