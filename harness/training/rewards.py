"""Sentence-level rewards on token ids for sequence-level training (R(y) of REINFORCE,
self-critical training and MRT: Williams 1992, Rennie et al. 2017, Shen et al. 2016), exact
and batched.

Token rewards take ``hyp`` [N, Lh] and ``ref`` [N, Lr] integer token ids (>= 0), right-padded
with anything after ``hyp_len`` / ``ref_len`` [N] (lengths may be 0), and return [N] rewards in
[0, 1] in the default float dtype (computed in float64). Row i compares h = hyp[i, :hyp_len[i]]
with r = ref[i, :ref_len[i]]; the results equal the reference libraries on the ids joined by
spaces (REFERENCE "Metrics"), to float rounding:

- ``sentence_bleu``: sacrebleu ``BLEU(effective_order=True, tokenize="none").sentence_score(h,
  [r]).score / 100``. With m_n = clipped n-gram matches sum_g min(c_h(g), c_r(g)), t_n =
  max(|h| - n + 1, 0) and E = min(|h|, 4) (effective order: orders without hypothesis n-grams
  are dropped), "exp" smoothing (mteval-v13a) p_n = m_n / t_n if m_n > 0 else
  1 / (2^k_n t_n), k_n = #{n' <= n : m_n' = 0}, and BP = 1 if |h| >= |r| else exp(1 - |r|/|h|):
      BLEU = BP * exp(sum_{n<=E} log p_n / E),   and 0 if m_1 = ... = m_4 = 0 (this covers
      an empty hypothesis or reference).
- ``rouge_n``: rouge-score ``rougeN`` F1: P = m_n / max(t_n, 1), R = m_n / max(|r| - n + 1, 1),
  F = 2PR / (P + R), 0 if P + R = 0.
- ``rouge_l``: rouge-score ``rougeL`` F1 with P = LCS(h, r) / |h|, R = LCS(h, r) / |r|; 0 if
  either is empty.

Candidates of one source may share its reference: ``ref`` [N / K, Lr] (with ``ref_len``
[N / K]) gives row s as the reference of the K consecutive hypotheses s*K .. s*K + K - 1, as
decoding lays candidates out (example-major); the reference side is then done once per source.

How (no per-sentence loop): ``ngram_match.ngram_stats`` computes the clipped n-gram matches and
LCS lengths of the whole batch with bit-parallel masks, vectorised over the batch and the
candidates in NumPy on the tensors' memory (inputs on another device are copied to the CPU; the
rewards come back on the input's device).

Regression rewards: ``neg_mse`` = -mean((pred - target)^2), ``neg_mae`` = -mean|pred - target|,
per row over all dimensions but the first.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from lstm_harness.training.ngram_match import ngram_stats

__all__ = ["REWARDS", "neg_mae", "neg_mse", "rouge_l", "rouge_n", "sentence_bleu",
           "token_reward", "token_rewards"]

REWARDS = ("bleu", "rouge1", "rouge2", "rougeL")

BLEU_ORDER = 4
_ORDERS = np.arange(BLEU_ORDER)[:, None]
_NUMPY_FLOAT = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}
_SMALL_IDS = 1 << 16  # larger ids (or negative ones) anywhere: find the largest within lengths


class _Pairs:
    """Validated inputs as int64 NumPy arrays (hypotheses cut to their longest length), the
    number K of hypotheses per reference, the largest id within the lengths (an upper bound)
    and the device of the inputs."""

    def __init__(self, hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor) -> None:
        if (hyp.dim() != 2 or ref.dim() != 2 or (len(ref) == 0) != (len(hyp) == 0)
                or (len(ref) and len(hyp) % len(ref))):
            raise ValueError(f"hyp and ref must be [N, L] with the same N, or ref [N / K, L] "
                             f"with one reference for each K consecutive hypotheses; got "
                             f"{tuple(hyp.shape)} and {tuple(ref.shape)}")
        if hyp_len.shape != (len(hyp),) or ref_len.shape != (len(ref),):
            raise ValueError(f"hyp_len and ref_len must be [{len(hyp)}] and [{len(ref)}], got "
                             f"{tuple(hyp_len.shape)} and {tuple(ref_len.shape)}")
        if hyp.is_floating_point() or ref.is_floating_point():
            raise TypeError("hyp and ref must hold integer token ids")
        self.device = hyp.device
        self.group = len(hyp) // max(len(ref), 1)
        h, r, hl, rl = (_int64(t) for t in (hyp, ref, hyp_len, ref_len))
        self.top = 0
        if len(h):
            lh, lr = int(hl.max()), int(rl.max())
            if min(hl.min(), rl.min()) < 0 or lh > h.shape[1] or lr > r.shape[1]:
                raise ValueError("lengths must lie in [0, L]")
            h, r = h[:, :lh], r[:, :lr]
            if lh and lr:
                self.top = _largest_id(h, hl, r, rl)
        self.ref_len_per_hyp = np.repeat(rl, self.group)
        if self.group == 1 and len(r) > 1:  # references repeated for their candidates:
            repeats = _run_length(r, rl)   # look each one up once
            r, rl, self.group = r[::repeats], rl[::repeats], repeats
        self.hyp, self.hyp_len, self.ref, self.ref_len = h, hl, r, rl

    def stats(self, max_order: int, lcs: bool) -> tuple[np.ndarray, np.ndarray]:
        """Clipped matches [max_order, N] and LCS lengths [N] (``ngram_match.ngram_stats``)."""
        return ngram_stats(self.hyp, self.hyp_len, self.ref, self.ref_len, self.top, max_order,
                           lcs)

    def finish(self, reward: np.ndarray) -> Tensor:
        """[N] float64 -> a tensor in the default dtype on the inputs' device."""
        dtype = torch.get_default_dtype()
        out = torch.from_numpy(reward.astype(_NUMPY_FLOAT[dtype]) if dtype in _NUMPY_FLOAT
                               else reward).to(dtype)
        return out if self.device.type == "cpu" else out.to(self.device)


def _int64(t: Tensor) -> np.ndarray:
    """The tensor as an int64 array (its own memory for a CPU int64 tensor)."""
    a = (t if t.device.type == "cpu" else t.cpu()).numpy()  # integer tensors carry no grad
    return a if a.dtype == np.int64 else a.astype(np.int64)


def _run_length(ref: np.ndarray, ref_len: np.ndarray) -> int:
    """K when the rows come in runs of K equal rows (ids, padding included, and lengths)
    starting at rows 0, K, 2K, ...; else 1."""
    if ref_len[0] != ref_len[1] or not np.array_equal(ref[0], ref[1]):
        return 1
    same = (ref[1:] == ref[:-1]).all(axis=1) & (ref_len[1:] == ref_len[:-1])
    first = int(np.argmin(same)) + 1 if not same.all() else len(ref)  # length of the first run
    if len(ref) % first:
        return 1
    expected = np.ones(len(same), dtype=bool)
    expected[first - 1 :: first] = False
    return first if np.array_equal(same, expected) else 1


def _largest_id(h: np.ndarray, hl: np.ndarray, r: np.ndarray, rl: np.ndarray) -> int:
    """The largest id (an upper bound: the largest anywhere when all ids are small and
    non-negative, else the largest within the lengths); raises for ids out of [0, 2^62)."""
    lo, hi = min(h.min(), r.min()), max(h.max(), r.max())
    if 0 <= lo and hi < _SMALL_IDS:
        return int(hi)
    vh = np.arange(h.shape[1]) < hl[:, None]
    vr = np.arange(r.shape[1]) < rl[:, None]
    lo = min(np.where(vh, h, 0).min(), np.where(vr, r, 0).min())
    hi = max(np.where(vh, h, 0).max(), np.where(vr, r, 0).max())
    if lo < 0 or hi >= 1 << 62:
        raise ValueError("token ids must lie in [0, 2^62)")
    return int(hi)


@functools.lru_cache(maxsize=16)
def _bleu_tables(length: int) -> tuple[np.ndarray, np.ndarray]:
    """For hypothesis lengths h = 0 .. ``length``: log m for m = 0 .. length (log 0 = -inf),
    [length + 1]; and per h, [9, length + 1]: log t_n (0 where t_n = 0) for n = 1 .. 4,
    [t_n > 0] for n = 1 .. 4, and 1 / E with E = min(h, 4) (1 for h = 0)."""
    lengths = np.arange(length + 1)
    with np.errstate(divide="ignore"):
        logs = np.log(lengths.astype(np.float64))
    total = lengths - _ORDERS
    counted = total > 0
    per_length = np.concatenate((logs.take(np.maximum(total, 1)) * counted, counted,
                                 1 / np.clip(lengths, 1, BLEU_ORDER)[None]))
    return logs, per_length


def _bleu(matches: np.ndarray, hyp_len: np.ndarray, ref_len: np.ndarray,
          longest: int) -> np.ndarray:
    """sacrebleu's compute_bleu with exp smoothing and effective order, / 100 (float64), from
    matches [4, N] (hypotheses of at most ``longest`` tokens), in log space:
        log BLEU/100 = min(0, 1 - |r|/|h|) + sum_{n<=E} (log m_n - log t_n) / E
    with log m_n replaced by -k_n log 2 where m_n = 0, and 0 where m_1 = 0."""
    logs, per_length = _bleu_tables(longest)
    log_total, counted, inv_order = np.split(per_length.take(hyp_len, axis=1), (4, 8))
    zero = matches == 0
    k = zero.astype(np.float64)  # k_n = #{n' <= n : m_n' = 0}
    for n in range(1, len(k)):
        k[n] += k[n - 1]
    lognum = np.where(zero, k * -math.log(2), logs.take(matches))
    logp = (lognum * counted - log_total).sum(0)
    log_bp = np.minimum(1 - ref_len / np.maximum(hyp_len, 1), 0)
    bleu = np.exp(log_bp + logp * inv_order[0])
    bleu[zero[0]] = 0
    return bleu


def _f1(hits: np.ndarray, n_pred: np.ndarray, n_target: np.ndarray) -> np.ndarray:
    """rouge-score's fmeasure 2PR / (P + R), 0 if P + R = 0, of P = hits / n_pred and
    R = hits / n_target (float64)."""
    p = hits / np.maximum(n_pred, 1)
    r = hits / np.maximum(n_target, 1)
    with np.errstate(invalid="ignore"):
        f = 2 * p * r / (p + r)
    f[hits == 0] = 0
    return f


def sentence_bleu(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor) -> Tensor:
    """Sentence BLEU as a fraction, [N] (sacrebleu, effective order, exp smoothing)."""
    return token_reward("bleu", hyp, hyp_len, ref, ref_len)


def rouge_n(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor, n: int) -> Tensor:
    """ROUGE-n F1, [N] (rouge-score's ``rouge{n}``)."""
    if n < 1:
        raise ValueError(f"rouge_n needs n >= 1, got {n}")
    pairs = _Pairs(hyp, hyp_len, ref, ref_len)
    matches, _ = pairs.stats(n, lcs=False)
    return pairs.finish(_f1(matches[n - 1], pairs.hyp_len - n + 1,
                            pairs.ref_len_per_hyp - n + 1))


def rouge_l(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor) -> Tensor:
    """ROUGE-L F1, [N] (rouge-score's sentence-level ``rougeL``)."""
    return token_reward("rougeL", hyp, hyp_len, ref, ref_len)


def token_rewards(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor,
                  names: tuple[str, ...] | list[str] = REWARDS) -> dict[str, Tensor]:
    """Several token rewards at once (``names`` from ``REWARDS``), sharing the match masks."""
    unknown = [k for k in names if k not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; allowed: {', '.join(REWARDS)}")
    pairs = _Pairs(hyp, hyp_len, ref, ref_len)
    orders = [BLEU_ORDER if k == "bleu" else int(k[5:]) for k in names if k != "rougeL"]
    matches, lcs = pairs.stats(max(orders, default=0), lcs="rougeL" in names)
    hl, rl = pairs.hyp_len, pairs.ref_len_per_hyp
    out = {}
    for k in names:
        if k == "bleu":
            out[k] = _bleu(matches, hl, rl, pairs.hyp.shape[1])
        elif k == "rougeL":
            out[k] = _f1(lcs, hl, rl)
        else:
            n = int(k[5:])
            out[k] = _f1(matches[n - 1], hl - n + 1, rl - n + 1)
    return {k: pairs.finish(v) for k, v in out.items()}


def token_reward(name: str, hyp: Tensor, hyp_len: Tensor, ref: Tensor,
                 ref_len: Tensor) -> Tensor:
    """The token reward ``name`` (one of ``REWARDS``), [N]."""
    return token_rewards(hyp, hyp_len, ref, ref_len, (name,))[name]


def _per_row(d: Tensor) -> Tensor:
    return d if d.dim() == 1 else d.flatten(1).mean(1)


def _same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() == 0:
        raise ValueError(f"pred and target must have the same shape [N, ...], got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")


def neg_mse(pred: Tensor, target: Tensor) -> Tensor:
    """-mean((pred - target)^2) per row over all dimensions but the first, [N]."""
    _same_shape(pred, target)
    return -_per_row((pred - target).square())


def neg_mae(pred: Tensor, target: Tensor) -> Tensor:
    """-mean(|pred - target|) per row over all dimensions but the first, [N]."""
    _same_shape(pred, target)
    return -_per_row((pred - target).abs())
