"""Synthetic copy, reverse and delayed copy-memory tasks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from lstm_harness.tasks.base import (
    N_SPECIAL,
    Direction,
    Seq2SeqBatch,
    Task,
    TaskParams,
    pad_sequences,
)

_SEED_MOD = 2**63
_SPLITS = ("valid", "test")


def _mix_seed(seed: int, stream: int) -> int:
    """A deterministic, non-negative generator seed from a base seed and a stream index."""
    return (seed * 1_000_003 + stream) % _SEED_MOD


def sequence_accuracy(hyps: list[list[int]], refs: list[list[int]]) -> dict[str, float]:
    """Exact-match rate and per-token accuracy over reference positions.

    ``token_accuracy`` counts, over all references, the positions ``i < len(ref)`` where
    ``hyp[i] == ref[i]``, divided by the total reference length; missing hypothesis tokens
    count as wrong and extra ones are ignored (1.0 if every reference is empty).
    """
    if not hyps or not refs:
        raise ValueError("score() needs non-empty hyps and refs")
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    exact = sum(list(h) == list(r) for h, r in zip(hyps, refs, strict=True))
    correct = sum(sum(a == b for a, b in zip(h, r, strict=False))
                  for h, r in zip(hyps, refs, strict=True))
    total = sum(len(r) for r in refs)
    return {
        "exact_match": exact / len(refs),
        "token_accuracy": correct / total if total else 1.0,
    }


class CopyParams(TaskParams):
    """Parameters of :class:`CopyTask`."""

    variant: Literal["copy", "reverse", "memory"] = "copy"
    vocab: int = Field(10, ge=2, description="number of content symbols")
    min_len: int = Field(5, ge=1, description="shortest content sequence")
    max_len: int = Field(20, ge=1, description="longest content sequence")
    delay: int = Field(10, ge=0, description="blank tokens before the delimiter (memory only)")
    n_valid: int = Field(256, ge=1, description="examples in the validation split")
    n_test: int = Field(512, ge=1, description="examples in the test split")
    data_seed: int = Field(1234, description="seed of the held-out splits (not the trial seed)")
    n_train: int | None = Field(None, ge=1, description="a fixed training pool of this many "
                                "examples (drawn from data_seed); none: fresh examples each step")
    eval_max_len: int | None = Field(None, ge=1, description="longest valid/test sequence "
                                     "(length generalisation: train up to max_len, test up to "
                                     "this); none: max_len")

    @model_validator(mode="after")
    def _check_lengths(self) -> CopyParams:
        if self.min_len > self.max_len:
            raise ValueError(
                f"min_len ({self.min_len}) must be <= max_len ({self.max_len})"
            )
        if self.eval_max_len is not None and self.eval_max_len < self.max_len:
            raise ValueError(f"eval_max_len ({self.eval_max_len}) must be >= max_len "
                             f"({self.max_len})")
        return self

    @property
    def held_out_max_len(self) -> int:
        """Longest valid/test content sequence."""
        return self.eval_max_len if self.eval_max_len is not None else self.max_len


class CopyTask(Task):
    """Copy a random symbol sequence, possibly reversed or after a delay.

    A content sequence ``x`` has length ``L ~ uniform{min_len..max_len}`` and i.i.d. symbols
    uniform over the content ids ``N_SPECIAL .. N_SPECIAL + vocab - 1``.

    Variants:

    * ``"copy"``: source ``x``, target ``x`` -- the basic long-range memorisation probe used
      for LSTMs since Hochreiter & Schmidhuber (1997), "Long Short-Term Memory", Neural
      Computation 9(8).
    * ``"reverse"``: source ``x``, target ``x`` reversed.
    * ``"memory"``: the delayed copy-memory problem (Hochreiter & Schmidhuber 1997;
      Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks", ICML),
      in encoder-decoder form: source ``x`` followed by ``delay`` BLANK tokens and one
      DELIMITER token, target ``x``. BLANK (``N_SPECIAL + vocab``) and DELIMITER
      (``N_SPECIAL + vocab + 1``) are source-only ids.

    The valid and test splits are drawn once from ``data_seed`` (separate generator streams),
    so they are identical for every trial seed; with ``eval_max_len`` their lengths run up to
    it while training stays within ``max_len`` (the length-generalisation setting of
    Bahdanau et al. 2015, Fig. 2: train short, test longer). Training examples are generated
    on the fly from ``(seed, step)`` and never equal a held-out content sequence: a colliding
    example is resampled. With ``n_train`` the training data is instead a fixed pool (a third
    stream of ``data_seed``, held-out sequences excluded) from which batches are drawn by
    (seed, step); a finite pool is what the perplexity curriculum scores. Sources carry no EOS;
    targets are followed by EOS.
    """

    name: ClassVar[str] = "copy"
    kind: ClassVar[Literal["seq2seq", "forecast"]] = "seq2seq"
    Params: ClassVar[type[TaskParams]] = CopyParams
    metrics: ClassVar[dict[str, Direction]] = {"exact_match": "max", "token_accuracy": "max"}

    params: CopyParams

    def __init__(self, params: CopyParams | None = None) -> None:
        super().__init__(params if params is not None else CopyParams())
        self._splits: dict[str, list[list[int]]] = {}
        self._held_out: set[tuple[int, ...]] | None = None

    # ------------------------------------------------------------------ vocabulary

    @property
    def blank_id(self) -> int:
        """Source id of the BLANK filler token (used by the "memory" variant)."""
        return N_SPECIAL + self.params.vocab

    @property
    def delimiter_id(self) -> int:
        """Source id of the DELIMITER token (used by the "memory" variant)."""
        return N_SPECIAL + self.params.vocab + 1

    @property
    def src_vocab_size(self) -> int:
        extra = 2 if self.params.variant == "memory" else 0
        return N_SPECIAL + self.params.vocab + extra

    @property
    def tgt_vocab_size(self) -> int:
        return N_SPECIAL + self.params.vocab

    @property
    def max_target_len(self) -> int:
        return self.params.held_out_max_len

    # ------------------------------------------------------------------ examples

    def make_example(self, x: list[int]) -> tuple[list[int], list[int]]:
        """(source, target) token lists for a content sequence ``x`` (no EOS)."""
        variant = self.params.variant
        if variant == "copy":
            return list(x), list(x)
        if variant == "reverse":
            return list(x), list(reversed(x))
        return list(x) + [self.blank_id] * self.params.delay + [self.delimiter_id], list(x)

    def _sample_one(self, g: torch.Generator, bounds: tuple[int, int] | None = None
                    ) -> list[int]:
        """One content sequence drawn from ``g``."""
        p = self.params
        lo, hi = bounds or (p.min_len, p.max_len)
        length = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return torch.randint(N_SPECIAL, N_SPECIAL + p.vocab, (length,), generator=g).tolist()

    def _sample(self, n: int, g: torch.Generator, bounds: tuple[int, int] | None = None
                ) -> list[list[int]]:
        """``n`` content sequences drawn from ``g`` (vectorised over the batch)."""
        p = self.params
        lo, hi = bounds or (p.min_len, p.max_len)
        lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
        symbols = torch.randint(N_SPECIAL, N_SPECIAL + p.vocab, (n, hi),
                                generator=g).tolist()
        return [row[:length] for row, length in zip(symbols, lengths, strict=True)]

    def _batch(self, xs: list[list[int]], ids: torch.Tensor) -> Seq2SeqBatch:
        pairs = [self.make_example(x) for x in xs]
        src, src_len = pad_sequences([s for s, _ in pairs])
        tgt, tgt_len = pad_sequences([t for _, t in pairs], append_eos=True)
        return Seq2SeqBatch(src=src, src_len=src_len, tgt=tgt, tgt_len=tgt_len, ids=ids)

    # ------------------------------------------------------------------ held-out data

    def split_sequences(self, split: str) -> list[list[int]]:
        """The fixed content sequences of ``split`` ("valid" or "test"), generated once."""
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed splits: {', '.join(_SPLITS)}")
        if split not in self._splits:
            stream = _SPLITS.index(split)
            g = torch.Generator().manual_seed(_mix_seed(self.params.data_seed, stream))
            n = self.params.n_valid if split == "valid" else self.params.n_test
            self._splits[split] = self._sample(n, g, (self.params.min_len,
                                                      self.params.held_out_max_len))
        return self._splits[split]

    def _held_out_set(self) -> set[tuple[int, ...]]:
        if self._held_out is None:
            held = {tuple(x) for split in _SPLITS for x in self.split_sequences(split)}
            p = self.params
            space = sum(p.vocab**length for length in range(p.min_len, p.max_len + 1))
            if sum(len(x) <= p.max_len for x in held) >= space:
                raise ValueError(
                    f"the valid and test splits cover all {space} possible sequences; "
                    "no training data is left (raise vocab/max_len or lower n_valid/n_test)"
                )
            self._held_out = held
        return self._held_out

    # ------------------------------------------------------------------ Task API

    @property
    def length_bounds(self) -> tuple[int, int]:
        return self.params.min_len, self.params.max_len

    @property
    def train_pool_size(self) -> int | None:
        return self.params.n_train

    def _pool(self) -> list[list[int]]:
        if getattr(self, "_pool_cache", None) is None:
            held = self._held_out_set()
            g = torch.Generator().manual_seed(_mix_seed(self.params.data_seed, len(_SPLITS)))
            pool: list[list[int]] = []
            while len(pool) < self.params.n_train:
                pool += [x for x in self._sample(self.params.n_train, g) if tuple(x) not in held]
            self._pool_cache = pool[: self.params.n_train]
        return self._pool_cache

    def pool_batch(self, ids: list[int]) -> Seq2SeqBatch:
        if self.params.n_train is None:
            raise ValueError("this copy task has no training pool: set params.n_train")
        pool = self._pool()
        return self._batch([pool[i] for i in ids], torch.tensor(ids, dtype=torch.long))

    def pool_lengths(self) -> list[int]:
        return [len(self.make_example(x)[1]) for x in self._pool()]

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> Seq2SeqBatch:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bounds = self.clip_lengths(lengths)
        if self.params.n_train is not None:
            return self.pool_batch(self.draw_pool_ids(step, batch_size, seed, bounds))
        held = self._held_out_set()
        g = torch.Generator().manual_seed(_mix_seed(seed, step))
        xs = self._sample(batch_size, g, bounds)
        for i, x in enumerate(xs):
            tries = 0
            while tuple(x) in held:
                tries += 1
                if tries > 10_000:
                    raise ValueError(f"lengths {bounds} leave no training sequence outside "
                                     "the valid and test splits")
                x = self._sample_one(g, bounds)
            xs[i] = x
        return self._batch(xs, torch.full((batch_size,), -1, dtype=torch.long))

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[Seq2SeqBatch]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        xs = self.split_sequences(split)  # validates the split name eagerly

        def batches() -> Iterator[Seq2SeqBatch]:
            for start in range(0, len(xs), batch_size):
                chunk = xs[start:start + batch_size]
                ids = torch.arange(start, start + len(chunk), dtype=torch.long)
                yield self._batch(chunk, ids)

        return batches()

    def score(self, hyps: list[list[int]], refs: list[list[int]]) -> dict[str, float]:
        """Exact-match rate and per-token accuracy (:func:`sequence_accuracy`)."""
        return sequence_accuracy(hyps, refs)

    def reward(self, hyps: list[list[int]], refs: list[list[int]]) -> list[float]:
        """Per-sentence token accuracy: |{i < len(y*) : y_i = y*_i}| / max(len(y*), len(y)),
        so that extra tokens are penalised too (1.0 for two empty sequences)."""
        out = []
        for h, r in zip(hyps, refs, strict=True):
            correct = sum(a == b for a, b in zip(h, r, strict=False))
            out.append(correct / max(len(r), len(h)) if (r or h) else 1.0)
        return out
