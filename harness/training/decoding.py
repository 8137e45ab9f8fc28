"""Batched decoding for token encoder-decoders: greedy, sampling, beam search, and scoring.

Every decoder runs on the whole batch at once (k samples or beams per example are rows of one
batch, example-major: row b k + j); only the loop over time steps is in Python, and it stops as
soon as every row has produced EOS. The model is anything with the :class:`Decodable` interface
(:class:`~harness.models.seq2seq.Seq2Seq`): ``encode_batch`` -> memory, ``start(memory)`` ->
decoder state, ``step(embed_tgt(y_{t-1}), memory, state)`` -> features (mutating the state) and
``output(features)`` -> logits. Per step the model's distribution is

    log P(y_t | y_<t, x) = log_softmax(W_o f_t + b_o),  f_t = step(y_{t-1}, ...),  y_0 = BOS,

with the model's own output dropout applied to f_t when it has one (``output_dropout``: a no-op
in eval mode), as in its training forward. The caller chooses train/eval mode.

- :func:`greedy`: y_t = argmax_y log P(y | y_<t, x) (equals ``Seq2Seq.greedy`` in eval mode).
- :func:`sample`: y_t ~ softmax(logits / tau), optionally restricted to the top_k logits.
- :func:`beam_search`: keeps the ``beam_size`` best hypotheses by
  s(Y) = log P(Y | x) / lp(Y), lp(Y) = ((5 + |Y|) / 6) ** alpha (GNMT, Wu et al. 2016).
- :func:`sequence_logprob`: teacher-forced log P(Y | x) = sum_{t < |Y|} log P(y_t | y_<t, x).

k copies of the encoder output are made with :func:`expand_memory` (the source is encoded once);
beam search reorders the decoder state rows by their backpointers with :func:`reorder_state`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lstm_harness.tasks.base import BOS, EOS, PAD

T = TypeVar("T")
Choose = Callable[[Tensor], tuple[Tensor, Tensor]]

# per-step logs of a DecoderState (attention weights, coverage losses): not needed to decode,
# dropped when beam search reorders the state
_STEP_LOGS = ("alphas", "coverage_loss")


class Decodable(Protocol):
    """What decoding needs from a model (``Seq2Seq`` has it)."""

    def encode_batch(self, src: Tensor, src_len: Tensor) -> Any: ...
    def start(self, memory: Any) -> Any: ...
    def step(self, x_emb: Tensor, memory: Any, state: Any) -> Tensor: ...
    def output(self, feats: Tensor) -> Tensor: ...
    def embed_tgt(self, tokens: Tensor) -> Tensor: ...


@dataclass
class Decoded:
    """Decoded sequences, N = batch x samples (or batch for greedy / beam search).

    ``tokens`` [N, T]: ids, EOS included where produced, PAD after it; ``lengths`` [N]: tokens up
    to and including EOS (T where no EOS was produced); ``logprobs`` [N, T]: log P(y_t | y_<t, x)
    of each chosen token (0 after EOS); ``scores`` [N]: sum_t logprobs (beam search: the
    length-penalised score s(Y) it ranks by).
    """

    tokens: Tensor
    lengths: Tensor
    logprobs: Tensor
    scores: Tensor


def _map_tensors(obj: T, fn: Callable[[Tensor], Tensor]) -> T:
    """Apply ``fn`` to every tensor in ``obj`` (tensors, lists, tuples, dataclasses)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_tensors(x, fn) for x in obj]  # type: ignore[return-value]
    if isinstance(obj, tuple):
        return tuple(_map_tensors(x, fn) for x in obj)  # type: ignore[return-value]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _map_tensors(getattr(obj, f.name), fn)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def expand_memory(memory: T, k: int) -> T:
    """k copies of every example of the encoder memory, example-major: row b k + j is example b.

    Every tensor of ``memory`` (keys, mask, lengths, context, initial states, projected keys) is
    batch-first and goes through ``repeat_interleave(k, dim=0)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return memory if k == 1 else _map_tensors(memory, lambda t: t.repeat_interleave(k, dim=0))


def reorder_state(state: T, rows: Tensor) -> T:
    """The decoder state with row i taken from row ``rows[i]`` (beam backpointers): LSTM states
    (h, c) of every layer, Luong's input feed h~_{t-1}, coverage sum_{k<t} alpha_k. The per-step
    logs (attention weights, coverage losses) are dropped."""
    logs = {name: [] for name in _STEP_LOGS if hasattr(state, name)}
    if logs and dataclasses.is_dataclass(state):
        state = dataclasses.replace(state, **logs)
    return _map_tensors(state, lambda t: t.index_select(0, rows))


def _logits(model: Decodable, feats: Tensor) -> Tensor:
    """W_o dropout(f_t) + b_o, the model's output dropout as in its training forward."""
    dropout = getattr(model, "output_dropout", None)
    return model.output(dropout(feats) if dropout is not None else feats)


def _check_max_len(max_len: int) -> None:
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")


def _lengths(tokens: Tensor) -> Tensor:
    """Tokens up to and including the first EOS of each row; T where there is none."""
    eos = tokens == EOS
    first = eos.long().argmax(1)
    return torch.where(eos.any(1), first + 1, torch.full_like(first, tokens.shape[1]))


def _run(model: Decodable, src: Tensor, src_len: Tensor, max_len: int, k: int,
         choose: Choose) -> Decoded:
    """Free-running decoding of k rows per example; ``choose(logits)`` -> (y_t, log P(y_t)).
    Rows that have produced EOS get PAD and log-prob 0 (and read PAD)."""
    _check_max_len(max_len)
    memory = expand_memory(model.encode_batch(src, src_len), k)
    state = model.start(memory)
    prev = torch.full((src.shape[0] * k,), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros_like(prev, dtype=torch.bool)
    tokens, logprobs = [], []
    for _ in range(max_len):
        token, logprob = choose(_logits(model, model.step(model.embed_tgt(prev), memory, state)))
        prev = token.masked_fill(done, PAD)
        tokens.append(prev)
        logprobs.append(logprob.masked_fill(done, 0.0))
        done = done | (prev == EOS)
        if bool(done.all()):
            break
    out, logprob = torch.stack(tokens, 1), torch.stack(logprobs, 1)
    return Decoded(out, _lengths(out), logprob, logprob.sum(1))


@torch.no_grad()
def greedy(model: Decodable, src: Tensor, src_len: Tensor, max_len: int) -> Decoded:
    """y_t = argmax_y P(y | y_<t, x) for t = 1 .. max_len, batched; stops when all rows ended.

    The tokens equal ``Seq2Seq.greedy`` (in eval mode; in train mode this one also applies the
    output dropout of the training forward)."""

    def choose(logits: Tensor) -> tuple[Tensor, Tensor]:
        token = logits.argmax(-1)
        return token, F.log_softmax(logits, -1).gather(1, token[:, None]).squeeze(1)

    return _run(model, src, src_len, max_len, 1, choose)


def sample(model: Decodable, src: Tensor, src_len: Tensor, max_len: int, k: int = 1,
           temperature: float = 1.0, top_k: int = 0,
           generator: torch.Generator | None = None) -> Decoded:
    """k samples per example (rows example-major: row b k + j is sample j of example b).

    y_t ~ q(y | y_<t, x) = softmax(z_t / tau) with z_t the logits and tau = ``temperature``;
    with ``top_k`` > 0, q is renormalised over the top_k largest logits (0 elsewhere). The
    reported log-probs are log q, i.e. of the temperature-scaled (and truncated) distribution,
    equal to the model's log P only for tau = 1 and top_k = 0. They are differentiable when
    grad is enabled (REINFORCE: grad sum_t log q(y_t) flows to the parameters); the sampled
    tokens carry no gradient. The model's mode is the caller's (dropout on while sampling in
    train mode).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")

    def choose(logits: Tensor) -> tuple[Tensor, Tensor]:
        scaled = logits / temperature
        if 0 < top_k < scaled.shape[-1]:
            values, index = scaled.topk(top_k, dim=-1)
            scaled = torch.full_like(scaled, float("-inf")).scatter(-1, index, values)
        logq = F.log_softmax(scaled, -1)
        token = torch.multinomial(logq.detach().exp(), 1, generator=generator)
        return token.squeeze(1), logq.gather(1, token).squeeze(1)

    return _run(model, src, src_len, max_len, k, choose)


def length_penalty_factor(length: Tensor, alpha: float,
                          dtype: torch.dtype | None = None) -> Tensor:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha, |Y| counting EOS; alpha = 0 gives 1.
    Computed in float64, returned in ``dtype`` (default: torch's default dtype)."""
    factor = ((5.0 + length.to(torch.float64)) / 6.0) ** alpha
    return factor.to(dtype or torch.get_default_dtype())


@torch.no_grad()
def beam_search(model: Decodable, src: Tensor, src_len: Tensor, max_len: int,
                beam_size: int = 4, length_penalty: float = 0.0) -> Decoded:
    """Beam search over all examples at once; returns the best hypothesis of each example.

    Each step extends every open hypothesis Y by every token y and keeps the ``beam_size``
    candidates of highest s(Y y) = log P(Y y | x) / lp(|Y y|) with lp(n) = ((5 + n) / 6) ** alpha,
    alpha = ``length_penalty`` (0: plain sum of log-probs). A finished hypothesis (ended by EOS)
    stays in the beam with its final score, extended only by PAD at log-prob 0, so it competes
    with the open ones. Stops once no open hypothesis can still end above the best finished one
    (log-probs only decrease, so an open Y ends at most at log P(Y | x) / max(lp(|Y|),
    lp(max_len))): in particular when every kept hypothesis has finished; or after ``max_len``
    tokens (open hypotheses then count with |Y| = T). The early stop does not change the result.
    ``scores`` is s(Y) of the hypothesis returned, ``logprobs`` its per-token log P. Meant for
    eval mode (in train mode the per-sequence dropout masks drawn by ``start`` are not reordered
    with the beams).
    """
    _check_max_len(max_len)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    batch, k = src.shape[0], beam_size
    memory = expand_memory(model.encode_batch(src, src_len), k)
    state = model.start(memory)
    device = src.device
    prev = torch.full((batch * k,), BOS, dtype=torch.long, device=device)
    offsets = torch.arange(batch, device=device)[:, None] * k  # row of beam 0 of example b
    finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, k, dtype=torch.long, device=device)
    tokens = torch.zeros(batch, k, 0, dtype=torch.long, device=device)
    sums = logprobs = scores = None
    for t in range(max_len):
        logp = F.log_softmax(_logits(model, model.step(model.embed_tgt(prev), memory, state)), -1)
        vocab = logp.shape[-1]
        logp = logp.view(batch, k, vocab)
        if sums is None:  # only beam 0 is live at the first step: the beams start identical
            sums = torch.full((batch, k), float("-inf"), dtype=logp.dtype, device=device)
            sums[:, 0] = 0.0
            logprobs = logp.new_zeros(batch, k, 0)
        pad_only = torch.full((vocab,), float("-inf"), dtype=logp.dtype, device=device)
        pad_only[PAD] = 0.0
        logp = torch.where(finished[..., None], pad_only, logp)
        candidates = sums[..., None] + logp  # log P(Y y | x), [B, K, V]
        cand_len = torch.where(finished, lengths, torch.full_like(lengths, t + 1))
        ranked = candidates / length_penalty_factor(cand_len, length_penalty, logp.dtype)[
            ..., None]
        scores, flat = ranked.view(batch, -1).topk(k, dim=1)  # sorted: beam 0 is the best
        beam, token = flat // vocab, flat % vocab
        sums = candidates.view(batch, -1).gather(1, flat)
        step_logp = logp.view(batch, -1).gather(1, flat)
        was_finished = finished.gather(1, beam)
        lengths = torch.where(was_finished, lengths.gather(1, beam),
                              torch.full_like(lengths, t + 1))
        # dead beams (score -inf: fewer live candidates than beams) count as finished
        finished = was_finished | (token == EOS) | torch.isneginf(sums)
        history = beam[..., None].expand(-1, -1, t)
        tokens = torch.cat([tokens.gather(1, history), token[..., None]], 2)
        logprobs = torch.cat([logprobs.gather(1, history), step_logp[..., None]], 2)
        if t + 1 < max_len and _settled(scores, sums, finished, t, max_len, length_penalty):
            scores = scores.masked_fill(~finished, float("-inf"))  # the open ones cannot win
            break
        state = reorder_state(state, (offsets + beam).view(-1))
        prev = token.view(-1)
    best = scores.argmax(1, keepdim=True)
    pick = best[..., None].expand(-1, -1, tokens.shape[2])
    return Decoded(tokens.gather(1, pick).squeeze(1), lengths.gather(1, best).squeeze(1),
                   logprobs.gather(1, pick).squeeze(1), scores.gather(1, best).squeeze(1))


def _settled(scores: Tensor, sums: Tensor, finished: Tensor, t: int, max_len: int,
             alpha: float) -> bool:
    """True when, in every example, no open hypothesis can end above the best finished one.

    An open Y of t + 1 tokens ends with log P <= log P(Y) <= 0 and length n in (t + 1, max_len],
    so its final score is at most log P(Y) / max(lp(t + 1), lp(max_len)) (lp is monotone in n).
    """
    best_finished = scores.masked_fill(~finished, float("-inf")).amax(1)
    bound = max(((5.0 + n) / 6.0) ** alpha for n in (t + 1, max_len))
    best_open = (sums / bound).masked_fill(finished, float("-inf")).amax(1)
    return bool((best_finished >= best_open).all())


def sequence_logprob(model: Decodable, src: Tensor, src_len: Tensor, tokens: Tensor,
                     lengths: Tensor) -> Tensor:
    """Teacher-forced log P(Y | x) = sum_{t < |Y|} log P(y_t | y_<t, x), [N]; differentiable.

    ``tokens`` [N, T] include EOS; ``lengths`` [N] count it; positions t >= length are ignored.
    N may be a multiple k of the batch of ``src``: then rows b k .. b k + k - 1 are candidates for
    example b (e.g. MRT's samples plus the reference), and the source is encoded once. Uses the
    model's ``teacher_forced`` when it has one, so the value is minus the summed cross entropy of
    the training forward (same dropout behaviour in train mode).
    """
    rows, steps = tokens.shape
    batch = src.shape[0]
    if rows % batch:
        raise ValueError(f"{rows} token rows are not a multiple of the batch of {batch}")
    memory = expand_memory(model.encode_batch(src, src_len), rows // batch)
    prev = torch.cat([tokens.new_full((rows, 1), BOS), tokens[:, :-1]], 1)  # y_{t-1}
    emb = model.embed_tgt(prev)
    teacher_forced = getattr(model, "teacher_forced", None)
    if teacher_forced is not None:
        feats, _ = teacher_forced(memory, emb)
    else:
        state = model.start(memory)
        feats = torch.stack([model.step(emb[:, t], memory, state) for t in range(steps)], 1)
    logp = F.log_softmax(_logits(model, feats), -1).gather(-1, tokens[..., None]).squeeze(-1)
    real = torch.arange(steps, device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
    return torch.where(real, logp, torch.zeros_like(logp)).sum(1)
