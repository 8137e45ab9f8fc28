"""Sentence-level rewards on token ids for sequence-level training (SPEC "Advanced Loss
Functions": R(y) of REINFORCE, self-critical training and MRT), exact and batched.

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

How (no per-sentence loop): ids are split into digits of <= 8 bits; per digit, a per-row table
(row, digit) -> bitmask of the positions holding it (``scatter_add``) gives, for every
hypothesis position i, the bitmask of the reference positions j with r_j = h_i and that of the
earlier hypothesis positions i' < i with h_i' = h_i (AND over the digits: exact for any
vocabulary, with small tables). Masks are words of 62 bits (several for sentences longer than
62). The n-gram masks follow by shift-and, X_n[i] = X_{n-1}[i] & (X_1[i + n - 1] >> (n - 1));
with c_r(i) = popcount(reference mask) and k(i) = popcount(earlier-hypothesis mask), position i
holds the (k(i)+1)-th copy of its n-gram in h, so
    m_n = #{i : k(i) < c_r(i)} = sum_g min(c_h(g), c_r(g)).
The LCS is the bit-parallel algorithm (Allison & Dix 1986; Hyyro 2004) over the reference bits,
one vectorised step per hypothesis position: U = V & M(h_i), V <- (V + U) | (V - U), starting
from V = all ones; LCS = |r| - popcount(V). Popcounts use NumPy's ``bitwise_count`` on CPU
tensors (a bit-trick fallback elsewhere).

Regression rewards: ``neg_mse`` = -mean((pred - target)^2), ``neg_mae`` = -mean|pred - target|,
per row over all dimensions but the first.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

try:  # NumPy >= 2 has a popcount ufunc: one op instead of the dozen of the bit-trick fallback
    from numpy import bitwise_count as _np_bitwise_count
except ImportError:  # pragma: no cover - older NumPy
    _np_bitwise_count = None

__all__ = ["REWARDS", "neg_mae", "neg_mse", "rouge_l", "rouge_n", "sentence_bleu",
           "token_reward", "token_rewards"]

REWARDS = ("bleu", "rouge1", "rouge2", "rougeL")

BLEU_ORDER = 4
_B = 62  # bits per mask word: sums of two words stay below 2^63
_FULL = (1 << _B) - 1
_DIGIT_BITS = 8  # ids split into digits of at most 8 bits: small tables (cache-friendly)


def _popcount(x: Tensor) -> Tensor:
    """Number of set bits of each (non-negative) int64."""
    if _np_bitwise_count is not None and x.device.type == "cpu":
        return torch.from_numpy(_np_bitwise_count(x.numpy()))
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    x = x + (x >> 8)
    x = x + (x >> 16)
    return (x + (x >> 32)) & 0x7F


def _lowmask(k: Tensor, words: int) -> Tensor:
    """[..., W] multiword masks with bits 0 .. k - 1 set."""
    start = torch.arange(words, device=k.device) * _B
    bits = (k.long().unsqueeze(-1) - start).clamp(0, _B)
    return torch.bitwise_left_shift(torch.ones_like(bits), bits) - 1


@functools.lru_cache(maxsize=64)
def _position_bits(length: int, words: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """One bit per position, [W, 1, L], and the bits of the positions before each, [W, 1, L]."""
    pos = torch.arange(length, device=device)
    before = _lowmask(pos, words)
    return (_lowmask(pos + 1, words) ^ before).t().unsqueeze(1), before.t().unsqueeze(1)


def _shr(x: Tensor, s: int) -> Tensor:
    """Right shift by s < 62 of multiword masks [L, C, W, N] (word dimension 2)."""
    out = x >> s
    if x.shape[2] > 1 and s:
        out[:, :, :-1] |= (x[:, :, 1:] & ((1 << s) - 1)) << (_B - s)
    return out


def _prepare(hyp: Tensor, hyp_len: Tensor, ref: Tensor,
             ref_len: Tensor) -> tuple[Tensor, Tensor, int]:
    """Validate; returns hyp and ref as int64 cut to their longest length, and the largest id
    (one device sync for the lengths and the ids)."""
    if hyp.dim() != 2 or ref.dim() != 2 or len(ref) != len(hyp):
        raise ValueError(f"hyp and ref must be [N, L] with the same N, got {tuple(hyp.shape)} "
                         f"and {tuple(ref.shape)}")
    if hyp_len.shape != (len(hyp),) or ref_len.shape != (len(hyp),):
        raise ValueError(f"hyp_len and ref_len must be [{len(hyp)}], got "
                         f"{tuple(hyp_len.shape)} and {tuple(ref_len.shape)}")
    if hyp.is_floating_point() or ref.is_floating_point():
        raise TypeError("hyp and ref must hold integer token ids")
    if len(hyp) == 0:
        return hyp.long(), ref.long(), 0
    stats = [*torch.aminmax(hyp_len), *torch.aminmax(ref_len)]
    if hyp.numel() and ref.numel():
        stats += [*torch.aminmax(hyp), *torch.aminmax(ref)]
    hmin, lh, rmin, lr, lo, hi, lo_r, hi_r = torch.stack(stats).tolist() + [0] * (8 - len(stats))
    lo, hi = min(lo, lo_r), max(hi, hi_r)
    if hmin < 0 or rmin < 0 or lh > hyp.shape[1] or lr > ref.shape[1]:
        raise ValueError("lengths must lie in [0, L]")
    hyp, ref = hyp[:, :lh].long(), ref[:, :lr].long()
    if (lo < 0 or hi >= 1 << 31) and lh and lr:  # maybe only in the padding: look within
        vh = torch.arange(lh, device=hyp.device) < hyp_len.unsqueeze(1)
        vr = torch.arange(lr, device=ref.device) < ref_len.unsqueeze(1)
        lo, hi = torch.stack((torch.minimum(hyp[vh].min(), ref[vr].min()),
                              torch.maximum(hyp[vh].max(), ref[vr].max()))).tolist()
        if lo < 0 or hi >= 1 << 62:
            raise ValueError("token ids must lie in [0, 2^62)")
    return hyp, ref, int(hi)


def _masks(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor, hi: int,
           earlier: bool = True) -> Tensor:
    """X [Lh, C, W, N] int64 multiword masks for each hypothesis position i < hyp_len: channel 0
    has the bits of the reference positions j < ref_len with ref[j] == hyp[i], channel 1 (if
    ``earlier``) those of the hypothesis positions i' < i with hyp[i'] == hyp[i]. Positions
    i >= hyp_len are all zero. (Positions first: slices along them are contiguous.) ``hi``
    bounds the ids within the lengths."""
    n, lh = hyp.shape
    lr = ref.shape[1]
    words = max(1, -(-max(lh, lr) // _B))
    channels = 2 if earlier else 1
    dev = hyp.device
    vh = torch.arange(lh, device=dev) < hyp_len.unsqueeze(1)
    vr = torch.arange(lr, device=dev) < ref_len.unsqueeze(1)
    # positions past the lengths read the id ``sink`` (no position within them has it) and
    # add no bits: they match nothing
    sink = hi + 1
    digits = -(-sink.bit_length() // _DIGIT_BITS)
    dbits = -(-sink.bit_length() // digits)
    bits_h, before_h = _position_bits(lh, words, dev)
    bits_r = _position_bits(lr, words, dev)[0]
    th, tr = torch.where(vh, hyp, sink), torch.where(vr, ref, sink)
    val_r = torch.where(vr, bits_r, 0)  # [W, N, Lr]
    val_h = torch.where(vh, bits_h, 0) if earlier else None
    x = None
    for d in range(digits):  # table column: digit d of the id
        if digits == 1:
            dh, dr, size = th, tr, sink + 1
        else:
            dh, dr, size = th >> (d * dbits), tr >> (d * dbits), 1 << dbits
            if d < digits - 1:
                dh, dr = dh & (size - 1), dr & (size - 1)
        table = hyp.new_zeros((channels, words, n, size))
        table[0].scatter_add_(2, dr.expand(words, n, lr), val_r)
        if val_h is not None:
            table[1].scatter_add_(2, dh.expand(words, n, lh), val_h)
        part = table.gather(3, dh.expand(channels, words, n, lh))
        x = part if x is None else x.bitwise_and_(part)
    if earlier:
        x[1] &= before_h
    return x.permute(3, 0, 1, 2).contiguous()


def _matches(x: Tensor, max_order: int) -> Tensor:
    """Clipped matches m_n = sum_g min(c_h(g), c_r(g)), [max_order, N] int64 for n = 1 ..
    max_order, from the masks of ``_masks(earlier=True)``."""
    lh = x.shape[0]
    out = []
    xn = x
    for order in range(1, max_order + 1):
        if order > lh:
            out.append(x.new_zeros(x.shape[-1]))
            continue
        if order > 1:
            xn = xn[: lh - order + 1] & _shr(x[order - 1 :], order - 1)
        pc = _popcount(xn)  # [L', C, W, N]
        pc = pc.sum(2) if pc.shape[2] > 1 else pc[:, :, 0]
        out.append((pc[:, 1] < pc[:, 0]).sum(0))
    return torch.stack(out)


def _lcs(x: Tensor, ref_len: Tensor) -> Tensor:
    """LCS lengths [N] by the bit-parallel recurrence, from channel 0 of ``_masks``."""
    words = x.shape[2]
    mask = _lowmask(ref_len, words).t().contiguous()  # [W, N]
    ms = x[:, 0]  # [Lh, W, N]
    if words == 1:
        v, full = mask[0].clone(), mask[0]
        u, s = torch.empty_like(v), torch.empty_like(v)
        for m in ms[:, 0]:
            torch.bitwise_and(v, m, out=u)
            torch.add(v, u, out=s)
            v.bitwise_xor_(u).bitwise_or_(s).bitwise_and_(full)
        ones = _popcount(v).long()
    else:
        vs = list(mask.clone())
        for m in ms:
            carry = None
            for w in range(words):
                v = vs[w]
                u = v & m[w]
                s = v + u if carry is None else v + u + carry
                carry = s >> _B
                vs[w] = ((s & _FULL) | (v ^ u)) & mask[w]
        ones = sum(_popcount(v).long() for v in vs)
    return ref_len.long() - ones


def _stats(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor, max_order: int,
           lcs: bool) -> tuple[Tensor, Tensor]:
    """Clipped matches [max_order, N] for n = 1 .. max_order and LCS lengths [N] (zeros when
    not asked for)."""
    hyp, ref, hi = _prepare(hyp, hyp_len, ref, ref_len)
    if not (hyp.shape[1] and ref.shape[1]):
        return hyp.new_zeros((max_order, len(hyp))), hyp.new_zeros(len(hyp))
    x = _masks(hyp, hyp_len, ref, ref_len, hi, earlier=max_order > 0)
    matches = _matches(x, max_order) if max_order else x.new_zeros((0, len(hyp)))
    return matches, _lcs(x, ref_len) if lcs else x.new_zeros(len(hyp))


def _bleu(matches: Tensor, hyp_len: Tensor, ref_len: Tensor) -> Tensor:
    """sacrebleu's compute_bleu with exp smoothing and effective order, / 100 (float64), from
    matches [4, N], in log space:
        log BLEU/100 = min(0, 1 - |r|/|h|) + sum_{n<=E} (log m_n - log t_n) / E
    with log m_n replaced by -k_n log 2 where m_n = 0, and 0 where m_1 = 0."""
    hl = hyp_len.double()
    correct = matches.double()
    zero = correct == 0
    lognum = torch.where(zero, zero.cumsum(0) * -math.log(2), correct.log())
    total = hl - _orders(BLEU_ORDER, hl.device)  # [4, N]
    logp = (lognum - total.clamp(min=1).log()).mul_(total > 0)
    log_bp = (1 - ref_len.double() / hl).clamp_(max=0)
    return (log_bp + logp.sum(0) / hl.clamp(1, BLEU_ORDER)).exp_().masked_fill_(zero[0], 0)


@functools.lru_cache(maxsize=8)
def _orders(k: int, device: torch.device) -> Tensor:
    """[[0], [1], ..., [k - 1]] float64."""
    return torch.arange(k, dtype=torch.float64, device=device).unsqueeze(1)


def _f1(hits: Tensor, n_pred: Tensor, n_target: Tensor) -> Tensor:
    """rouge-score's fmeasure 2PR / (P + R), 0 if P + R = 0, of P = hits / n_pred and
    R = hits / n_target (float64)."""
    hits = hits.double()
    p = hits / n_pred.double().clamp(min=1)
    r = hits / n_target.double().clamp(min=1)
    return (2 * p * r / (p + r)).masked_fill_(hits == 0, 0)


def _finish(reward: Tensor) -> Tensor:
    return reward.to(torch.get_default_dtype())


def sentence_bleu(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor) -> Tensor:
    """Sentence BLEU as a fraction, [N] (sacrebleu, effective order, exp smoothing)."""
    matches, _ = _stats(hyp, hyp_len, ref, ref_len, BLEU_ORDER, lcs=False)
    return _finish(_bleu(matches, hyp_len, ref_len))


def rouge_n(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor, n: int) -> Tensor:
    """ROUGE-n F1, [N] (rouge-score's ``rouge{n}``)."""
    if n < 1:
        raise ValueError(f"rouge_n needs n >= 1, got {n}")
    matches, _ = _stats(hyp, hyp_len, ref, ref_len, n, lcs=False)
    return _finish(_f1(matches[n - 1], hyp_len - n + 1, ref_len - n + 1))


def rouge_l(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor) -> Tensor:
    """ROUGE-L F1, [N] (rouge-score's sentence-level ``rougeL``)."""
    _, lcs = _stats(hyp, hyp_len, ref, ref_len, 0, lcs=True)
    return _finish(_f1(lcs, hyp_len, ref_len))


def token_rewards(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor,
                  names: tuple[str, ...] | list[str] = REWARDS) -> dict[str, Tensor]:
    """Several token rewards at once (``names`` from ``REWARDS``), sharing the match masks."""
    unknown = [k for k in names if k not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; allowed: {', '.join(REWARDS)}")
    orders = [BLEU_ORDER * (k == "bleu") or int(k[5:]) for k in names if k != "rougeL"]
    matches, lcs = _stats(hyp, hyp_len, ref, ref_len, max(orders, default=0),
                          lcs="rougeL" in names)
    out = {}
    for k in names:
        if k == "bleu":
            out[k] = _bleu(matches, hyp_len, ref_len)
        elif k == "rougeL":
            out[k] = _f1(lcs, hyp_len, ref_len)
        else:
            n = int(k[5:])
            out[k] = _f1(matches[n - 1], hyp_len - n + 1, ref_len - n + 1)
    return {k: _finish(v) for k, v in out.items()}


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
