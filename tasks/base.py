"""The Task API: what a task gives the harness.

A task owns its data (splits, tokenization or scaling), its batches, its metrics, its trivial
reference baselines and a sentence-level reward. The harness owns the model, the training loop
and the bookkeeping. Built-in tasks and plugins are registered the same way, under the
entry-point group ``lstm_harness.tasks`` (see ``docs/plugins.md``).

Four kinds of task share :class:`TaskBase`:

* :class:`Task` (kind ``"seq2seq"``): token ids in, token ids out (copy, translation,
  summarization); the harness trains an encoder-decoder with a softmax output.
* :class:`ForecastTask` (kind ``"forecast"``): a window of a (multivariate) time series in, the
  next ``horizon`` values out; the harness trains a forecaster with a linear output.
* :class:`StreamTask` (kind ``"lm"``): token streams with a target token at every step
  (language modelling, the copy-memory problem); the harness trains a language model
  (embedding, LSTM stack, softmax at every step), carrying its state across batches where the
  task says the batches continue one stream (truncated BPTT).
* :class:`SequenceTask` (kind ``"classify"``): a sequence in, one class or one vector of values
  out (pixel sequences, the adding and temporal-order problems); the harness trains a sequence
  classifier (LSTM stack, last state or mean-pool, linear output).

Token conventions for sequence-to-sequence tasks: id 0 is padding, 1 begins a target sequence,
2 ends one. ``Seq2SeqBatch.tgt`` holds the target tokens followed by EOS (no BOS); the model
prepends BOS itself when it builds decoder inputs.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from lstm_harness.strict import Strict

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3

Direction = Literal["max", "min"]
Kind = Literal["seq2seq", "forecast", "lm", "classify"]
IGNORE = -100  # target of a step that does not count (StreamBatch.targets)


class TaskParams(Strict):
    """Base class of a task's parameters: unknown keys are errors (the harness's one
    :class:`~lstm_harness.strict.Strict` base)."""


@dataclass
class Seq2SeqBatch:
    """A padded batch. ``src``: [B, S]; ``tgt``: [B, T] (targets then EOS, PAD after);
    ``src_len``/``tgt_len``: [B] true lengths (``tgt_len`` counts the EOS); ``ids``: [B]
    per-example ids (-1 where examples are generated on the fly)."""

    src: torch.Tensor
    src_len: torch.Tensor
    tgt: torch.Tensor
    tgt_len: torch.Tensor
    ids: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.src.shape[0])

    @property
    def tokens(self) -> int:
        """Non-padding source + target tokens (the throughput unit)."""
        return int((self.src != PAD).sum() + (self.tgt != PAD).sum())

    def to(self, device: torch.device | str) -> Seq2SeqBatch:
        return Seq2SeqBatch(*(t.to(device) for t in (self.src, self.src_len, self.tgt,
                                                      self.tgt_len, self.ids)))


@dataclass
class ForecastBatch:
    """Windows of a time series. ``history``: [B, S, F] with the forecast variables in its first
    K columns; ``target``: [B, T, K] the next T values; ``covariates``: extra input streams
    [B, S_j, F_j] (exogenous series, encoded by their own encoders and fused); ``ids``: [B];
    ``target_len``: [B] forecast steps that count per window (None: all T; set where windows
    of different horizons share a batch, the rest of ``target`` is padding)."""

    history: torch.Tensor
    target: torch.Tensor
    covariates: list[torch.Tensor]
    ids: torch.Tensor
    target_len: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.history.shape[0])

    @property
    def step_mask(self) -> torch.Tensor:
        """[B, T] True where a forecast step counts."""
        steps = self.target.shape[1]
        if self.target_len is None:
            return torch.ones(self.size, steps, dtype=torch.bool, device=self.target.device)
        return torch.arange(steps, device=self.target.device) < self.target_len.unsqueeze(1)

    @property
    def tokens(self) -> int:
        """Time steps read and predicted, history + covariates + target (the throughput unit)."""
        steps = self.history.shape[1] * self.size + int(self.step_mask.sum())
        steps += sum(c.shape[1] for c in self.covariates) * self.size
        return int(steps)

    def to(self, device: torch.device | str) -> ForecastBatch:
        return ForecastBatch(self.history.to(device), self.target.to(device),
                             [c.to(device) for c in self.covariates], self.ids.to(device),
                             None if self.target_len is None else self.target_len.to(device))


@dataclass
class StreamBatch:
    """Token streams with a target at every step. ``inputs``, ``targets``: [B, T] token ids
    (``targets`` is :data:`IGNORE` where a step does not count); ``reset``: True where these
    streams start (the model begins from a zero state), False where they continue the previous
    batch's streams (the model carries its final state over, detached: truncated BPTT,
    Williams & Peng 1990); ``ids``: [B] stream ids."""

    inputs: torch.Tensor
    targets: torch.Tensor
    ids: torch.Tensor
    reset: bool = True

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def tokens(self) -> int:
        """Steps read (the throughput unit)."""
        return int(self.inputs.numel())

    @property
    def counted(self) -> torch.Tensor:
        """[B, T] True where the target counts."""
        return self.targets != IGNORE

    def to(self, device: torch.device | str) -> StreamBatch:
        return StreamBatch(self.inputs.to(device), self.targets.to(device),
                           self.ids.to(device), self.reset)


@dataclass
class SequenceBatch:
    """Whole sequences with one label each. ``inputs``: [B, T, F] real values or [B, T] token
    ids; ``lengths``: [B] true lengths (None: all T); ``labels``: [B] class ids, or [B, K]
    values for a regression task; ``ids``: [B] example ids."""

    inputs: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    lengths: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def tokens(self) -> int:
        """Steps read (the throughput unit)."""
        if self.lengths is None:
            return int(self.inputs.shape[0] * self.inputs.shape[1])
        return int(self.lengths.sum())

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(self.inputs.to(device), self.labels.to(device),
                             self.ids.to(device),
                             None if self.lengths is None else self.lengths.to(device))


def pad_sequences(seqs: list[list[int]], append_eos: bool = False) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """Right-pad token lists with PAD into a LongTensor [B, max_len]; returns (tokens, lengths)."""
    if append_eos:
        seqs = [list(s) + [EOS] for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), max(int(lengths.max()), 1)), PAD, dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            out[row, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths


def concat_batches(batches: list):
    """One batch from several of the same kind (re-padded to the longest source and target,
    or sequence; forecast windows of different horizons get ``target_len``, sequences of
    different lengths ``lengths``)."""
    def cat(tensors: list[torch.Tensor], value: float = PAD) -> torch.Tensor:
        width = max(t.shape[1] for t in tensors)
        pads = [(0, 0) * (t.dim() - 2) + (0, width - t.shape[1]) for t in tensors]
        return torch.cat([torch.nn.functional.pad(t, pad, value=value)
                          for t, pad in zip(tensors, pads, strict=True)])
    if isinstance(batches[0], ForecastBatch):
        lengths = torch.cat([b.target_len if b.target_len is not None else
                             torch.full((b.size,), b.target.shape[1], dtype=torch.long)
                             for b in batches])
        target = cat([b.target for b in batches], 0.0)
        return ForecastBatch(
            history=torch.cat([b.history for b in batches]), target=target,
            covariates=[torch.cat(parts) for parts in zip(*(b.covariates for b in batches),
                                                           strict=True)],
            ids=torch.cat([b.ids for b in batches]),
            target_len=None if bool((lengths == target.shape[1]).all()) else lengths)
    if isinstance(batches[0], SequenceBatch):
        steps = [b.inputs.shape[1] for b in batches]
        lengths = torch.cat([b.lengths if b.lengths is not None else
                             torch.full((b.size,), b.inputs.shape[1], dtype=torch.long)
                             for b in batches])
        return SequenceBatch(inputs=cat([b.inputs for b in batches], 0),
                             labels=torch.cat([b.labels for b in batches]),
                             ids=torch.cat([b.ids for b in batches]),
                             lengths=None if len(set(steps)) == 1 and all(
                                 b.lengths is None for b in batches) else lengths)
    return Seq2SeqBatch(src=cat([b.src for b in batches]),
                        src_len=torch.cat([b.src_len for b in batches]),
                        tgt=cat([b.tgt for b in batches]),
                        tgt_len=torch.cat([b.tgt_len for b in batches]),
                        ids=torch.cat([b.ids for b in batches]))


_BUCKET_SUFFIX = re.compile(r"_len\d+-\d+$")


def length_bucket_metric(metric: str, lo: int, hi: int) -> str:
    """The name of ``metric`` on the examples of source length lo..hi: ``<metric>_len<lo>-<hi>``
    (``train.length_buckets``)."""
    return f"{metric}_len{lo}-{hi}"


def unbucketed(metric: str) -> str:
    """A metric name without its length-bucket suffix (``exact_match_len1-10`` ->
    ``exact_match``)."""
    return _BUCKET_SUFFIX.sub("", metric)


def strip_special(ids: list[int]) -> list[int]:
    """Cut a decoded sequence at its first EOS and drop PAD/BOS."""
    out: list[int] = []
    for token in ids:
        if token == EOS:
            break
        if token >= N_SPECIAL:
            out.append(token)
    return out


class TaskBase(ABC):
    """What every task declares: ``name``, ``kind``, ``Params`` (a :class:`TaskParams` model,
    validated from the suite's ``params``) and ``metrics`` (metric name -> "max" or "min", the
    better direction).

    Every metric is reported twice by the harness: free-running (the model reads its own
    predictions; name as declared) and teacher-forced (one step ahead given the true prefix;
    name + ``_tf``). The difference is the exposure-bias gap.

    Training data is a pure function of (seed, step): a resumed trial sees exactly the batches
    it would have seen. A task whose training data is a finite pool of examples exposes it
    through ``train_pool_size`` / ``pool_batch`` / ``pool_lengths`` (per-example ids and
    lengths; the curricula reorder and filter with them).
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    Params: ClassVar[type[TaskParams]]
    metrics: ClassVar[dict[str, Direction]]
    # the second reading of every metric: ``_tf`` (teacher-forced; seq2seq and forecast) or
    # ``_mc`` (MC-dropout evaluation, reported when ``train.mc_samples`` > 0; lm and classify)
    variant_suffix: ClassVar[str] = "_tf"

    def __init__(self, params: TaskParams) -> None:
        self.params = params

    @property
    @abstractmethod
    def max_target_len(self) -> int:
        """Longest target (tokens without EOS, or forecast steps)."""

    @property
    def length_bounds(self) -> tuple[int, int]:
        """(shortest, longest) target length of training examples, for length curricula."""
        return 1, self.max_target_len

    def clip_lengths(self, lengths: tuple[int, int] | None) -> tuple[int, int]:
        """Intersect requested (shortest, longest) target lengths with the task's bounds."""
        lo, hi = self.length_bounds
        if lengths is None:
            return lo, hi
        want_lo, want_hi = lengths
        lo, hi = max(lo, want_lo), min(hi, want_hi)
        return (lo, hi) if lo <= hi else (self.length_bounds[0],) * 2

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None):
        """The training batch for ``step``; a pure function of its arguments. ``lengths``:
        only examples whose target length lies in [shortest, longest] (curricula; see
        :meth:`clip_lengths`)."""

    @abstractmethod
    def eval_batches(self, split: Literal["valid", "test"], batch_size: int) -> Iterator:
        """Fixed batches of a held-out split (the same for every seed and every trial)."""

    def check_data(self) -> None:
        """Read the task's local data files now and raise ``DataError`` naming the file (and
        line) and what is wrong: ``validate`` and ``run`` call it before anything starts.
        Built-in, generated and hub data are left to the trials (nothing to do here)."""
        return None

    def reference_scores(self, split: Literal["valid", "test"]) -> dict[str, dict[str, float]]:
        """Trivial baselines on ``split``: baseline name -> {metric: value} for (some of) the
        declared metrics, free-running names. Tables show them as reference rows (for example
        copy-the-source BLEU, the lead sentence's ROUGE, the seasonal-naive forecast)."""
        return {}

    # -- a finite training pool (optional; needed by the perplexity curriculum) -------------
    @property
    def train_pool_size(self) -> int | None:
        """Number of training examples when the training data is a finite pool, else None."""
        return None

    def pool_batch(self, ids: list[int]):
        """The batch of training-pool examples ``ids`` (in that order)."""
        raise ValueError(f"task '{self.name}' has no finite training pool")

    def pool_lengths(self) -> list[int]:
        """Target length of every training-pool example."""
        raise ValueError(f"task '{self.name}' has no finite training pool")

    def draw_pool_ids(self, step: int, batch_size: int, seed: int,
                      lengths: tuple[int, int] | None = None,
                      allowed: list[int] | None = None) -> list[int]:
        """Pool ids for one batch, uniform over ``allowed`` (default: the whole pool) within
        the length bounds; a pure function of (step, seed). Falls back to the shortest
        allowed examples when none lies within the bounds."""
        ids = list(range(self.train_pool_size)) if allowed is None else list(allowed)
        if lengths is not None:
            lo, hi = lengths
            size = self.pool_lengths()
            within = [i for i in ids if lo <= size[i] <= hi]
            ids = within or sorted(ids, key=lambda i: size[i])[: max(1, len(ids) // 10)]
        g = torch.Generator().manual_seed((seed * 1_000_003 + step) % 2**63)
        picks = torch.randint(0, len(ids), (batch_size,), generator=g).tolist()
        return [ids[k] for k in picks]

    @classmethod
    def metric_names(cls) -> list[str]:
        """Every metric name the harness reports for this task: each declared name, then the
        same with :attr:`variant_suffix` (``_tf`` or ``_mc``)."""
        return [m for name in cls.metrics for m in (name, f"{name}{cls.variant_suffix}")]

    @classmethod
    def direction(cls, metric: str) -> Direction:
        return cls.metrics[unbucketed(metric).removesuffix(cls.variant_suffix)]


class Task(TaskBase):
    """A sequence-to-sequence task (token ids in, token ids out).

    Subclasses implement the vocabulary sizes, ``max_target_len``, ``train_batch`` and
    ``eval_batches`` (returning :class:`Seq2SeqBatch`), ``score`` and, for sequence-level
    training, ``reward`` (and ``default_reward``: the name of the fast token-id reward of
    ``harness/training/rewards.py`` that equals it, used by ``train.loss.reward: task``).
    ``detokenize`` turns ids into text for figures and evaluation.
    """

    kind: ClassVar[Kind] = "seq2seq"
    default_reward: ClassVar[str | None] = None  # bleu | rouge1 | rouge2 | rougeL on token ids

    @property
    @abstractmethod
    def src_vocab_size(self) -> int:
        """Number of source token ids, special ids included."""

    @property
    @abstractmethod
    def tgt_vocab_size(self) -> int:
        """Number of target token ids, special ids included."""

    @property
    @abstractmethod
    def max_target_len(self) -> int:
        """Longest target (without EOS): free-running decoding stops after this + 1 steps."""

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> Seq2SeqBatch:
        """The training batch for ``step`` (see :meth:`TaskBase.train_batch`)."""

    @abstractmethod
    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[Seq2SeqBatch]:
        """Fixed batches of a held-out split (the same for every seed and every trial)."""

    @abstractmethod
    def score(self, hyps: list[list[int]], refs: list[list[int]]) -> dict[str, float]:
        """Metrics of hypotheses against references (token ids, specials stripped); returns
        one value per name in ``metrics`` (extra diagnostic values are allowed)."""

    def reward(self, hyps: list[list[int]], refs: list[list[int]]) -> list[float]:
        """Sentence-level reward R(y, y*) of each hypothesis (token ids, specials stripped),
        for sequence-level training; higher is better."""
        raise ValueError(f"task '{self.name}' supplies no sentence-level reward")

    def detokenize(self, ids: list[int], side: Literal["src", "tgt"] = "tgt") -> str:
        """Text of a token-id sequence of the source or target side (specials stripped);
        default: the ids, space-separated."""
        return " ".join(str(t) for t in strip_special(ids))

    def token_text(self, token: int, side: Literal["src", "tgt"] = "tgt") -> str:
        """One token's text, for figure labels; default: its id."""
        return str(token)


class ForecastTask(TaskBase):
    """A forecasting task: a history window [S, F] (+ covariate streams) -> the next
    ``horizon`` values of the first K = ``n_targets`` columns.

    Batches are on the model's scale (the task's scaler fitted on the training range only);
    ``score`` maps predictions back to the original scale before computing its metrics.
    """

    kind: ClassVar[Kind] = "forecast"

    @property
    @abstractmethod
    def n_features(self) -> int:
        """Columns F of the history window (the forecast variables first)."""

    @property
    @abstractmethod
    def n_targets(self) -> int:
        """Number K of forecast variables."""

    @property
    def covariate_features(self) -> list[int]:
        """Columns of each extra input stream (exogenous covariates), in batch order."""
        return []

    @property
    @abstractmethod
    def horizon(self) -> int:
        """Steps T to forecast."""

    @property
    def max_target_len(self) -> int:
        return self.horizon

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> ForecastBatch:
        """Training windows for ``step``; ``lengths`` bounds the forecast horizon (curricula
        train on shorter horizons first)."""

    @abstractmethod
    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[ForecastBatch]:
        """Fixed windows of a held-out split, full horizon."""

    @abstractmethod
    def score(self, preds: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor,
              split: Literal["valid", "test"] = "test") -> dict[str, float]:
        """Metrics of predictions [N, T, K] against targets [N, T, K] (model scale) of the
        windows ``ids`` of ``split`` (as numbered by ``eval_batches``), on the original
        scale; one value per name in ``metrics`` (extra diagnostic values are allowed)."""

    def reward(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-window reward, the negative mean squared error on the model scale: [B]."""
        return -((preds - targets) ** 2).flatten(1).mean(1)


class StreamTask(TaskBase):
    """Token streams with a target token at every step (kind ``"lm"``): language modelling
    (the target is the next token) or aligned sequence labelling such as the copy-memory
    problem. The harness trains :class:`~lstm_harness.models.language_model.LanguageModel`.

    ``carries_state``: consecutive training batches continue the same streams (``reset``
    False after the first), so the model carries its final state into the next batch
    (truncated BPTT, as Zaremba et al. 2014 and Merity et al. 2017 train language models);
    evaluation batches of a split likewise continue each other from the split's first batch.
    Metrics have no teacher-forced reading (the model always reads the true inputs); with
    ``train.mc_samples`` > 0 the final evaluation also reports ``<metric>_mc``.
    """

    kind: ClassVar[Kind] = "lm"
    variant_suffix: ClassVar[str] = "_mc"
    carries_state: ClassVar[bool] = False

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids of inputs and targets (one vocabulary: weights can be tied)."""

    @property
    @abstractmethod
    def steps_per_batch(self) -> int:
        """T of the training batches (the BPTT length for a language model)."""

    @property
    def max_target_len(self) -> int:
        return self.steps_per_batch

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> StreamBatch:
        """The training batch for ``step`` (see :meth:`TaskBase.train_batch`)."""

    @abstractmethod
    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[StreamBatch]:
        """A held-out split in order (``batch_size`` streams; the first batch resets)."""

    @abstractmethod
    def score(self, nll: torch.Tensor, correct: torch.Tensor,
              targets: torch.Tensor) -> dict[str, float]:
        """Metrics from every counted step of a split, in order: ``nll`` [N] the negative log
        likelihood (nats, float64) of the target, ``correct`` [N] whether the most probable
        token was the target, ``targets`` [N] the target ids."""

    def token_text(self, token: int) -> str:
        """One token's text (figures, samples); default: its id."""
        return str(token)


class SequenceTask(TaskBase):
    """A sequence in, one label out (kind ``"classify"``): ``n_outputs`` classes
    (``output = "classes"``, cross entropy) or ``n_outputs`` real values (``"values"``, mean
    squared error). Inputs are real vectors of ``input_features`` per step, or token ids when
    ``input_vocab_size`` is set. The harness trains
    :class:`~lstm_harness.models.classifier.SequenceClassifier`. Metrics have no teacher-forced
    reading; with ``train.mc_samples`` > 0 the final evaluation also reports ``<metric>_mc``.
    """

    kind: ClassVar[Kind] = "classify"
    variant_suffix: ClassVar[str] = "_mc"
    output: ClassVar[Literal["classes", "values"]] = "classes"

    @property
    def input_features(self) -> int:
        """F of real-valued inputs [B, T, F] (ignored when :attr:`input_vocab_size` is set)."""
        return 1

    @property
    def input_vocab_size(self) -> int | None:
        """Number of input token ids for token inputs [B, T]; None for real-valued inputs."""
        return None

    @property
    @abstractmethod
    def n_outputs(self) -> int:
        """Number of classes, or of regression values."""

    @property
    @abstractmethod
    def sequence_length(self) -> int:
        """Longest input sequence T."""

    @property
    def max_target_len(self) -> int:
        return 1

    @property
    def length_bounds(self) -> tuple[int, int]:
        """(shortest, longest) input length of training sequences, for length curricula."""
        return self.sequence_length, self.sequence_length

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> SequenceBatch:
        """The training batch for ``step`` (see :meth:`TaskBase.train_batch`); ``lengths``
        bounds the input length where the task generates sequences of several lengths."""

    @abstractmethod
    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[SequenceBatch]:
        """Fixed batches of a held-out split (the same for every seed and every trial)."""

    @abstractmethod
    def score(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Metrics of the model's outputs on a whole split: ``outputs`` [N, n_outputs] (class
        probabilities for classes, predicted values for values) against ``labels`` ([N] class
        ids or [N, n_outputs] values)."""
