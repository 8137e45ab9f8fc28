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

How: ids are split into digits of <= 10 bits; per digit, a per-row table (row, digit) -> bitmask
of the positions holding it (built with one ``index_add``) gives, for every hypothesis position
i, the bitmask of reference positions j with r_j = h_i and of earlier hypothesis positions
i' < i with h_i' = h_i (AND over digits, so exact for any vocabulary). Masks are words of 62
bits, [..., W] for longer sentences. The n-gram masks follow by shift-and:
X_n[i] = X_{n-1}[i] & (X_1[i + n - 1] >> (n - 1)); with c_r(i) = popcount(ref mask) and
k(i) = popcount(earlier-hypothesis mask), position i is the k(i)-th copy of its n-gram, so
m_n = #{i : k(i) < c_r(i)} = sum_g min(c_h(g), c_r(g)). The LCS is the bit-parallel algorithm
(Allison & Dix 1986; Hyyrö 2004) over the reference bits, one step per hypothesis position:
U = V & M(h_i), V <- (V + U) | (V - U), LCS = |r| - popcount(V) (V starts all ones).

Regression rewards: ``neg_mse`` = -mean((pred - target)^2), ``neg_mae`` = -mean|pred - target|,
per row over all dimensions but the first.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

try:  # NumPy >= 2 has a popcount ufunc: one op instead of the 12 of the bit-trick fallback.
    from numpy import bitwise_count as _np_bitwise_count
except ImportError:  # pragma: no cover - older NumPy
    _np_bitwise_count = None

__all__ = ["REWARDS", "neg_mae", "neg_mse", "rouge_l", "rouge_n", "sentence_bleu",
           "token_reward", "token_rewards"]

REWARDS = ("bleu", "rouge1", "rouge2", "rougeL")

BLEU_ORDER = 4
_B = 62  # bits per mask word: sums of two words stay below 2^63
_FULL = (1 << _B) - 1
_DIGIT_BITS = 10  # at most 2^10 table entries per row and digit


def _popcount(x: Tensor) -> Tensor:
    """Number of set bits of each (non-negative) int64."""
    if _np_bitwise_count is not None and x.device.type == "cpu":
        return torch.from_numpy(_np_bitwise_count(x.numpy()))
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


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


def _check(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor) -> tuple[int, int]:
    """Validate the shapes; returns the longest hypothesis and reference lengths."""
    if hyp.dim() != 2 or ref.dim() != 2 or len(ref) != len(hyp):
        raise ValueError(f"hyp and ref must be [N, L] with the same N, got {tuple(hyp.shape)} "
                         f"and {tuple(ref.shape)}")
    if hyp_len.shape != (len(hyp),) or ref_len.shape != (len(hyp),):
        raise ValueError(f"hyp_len and ref_len must be [{len(hyp)}], got "
                         f"{tuple(hyp_len.shape)} and {tuple(ref_len.shape)}")
    if len(hyp) == 0:
        return 0, 0
    hmin, hmax, rmin, rmax = torch.stack(
        (hyp_len.min(), hyp_len.max(), ref_len.min(), ref_len.max())).tolist()
    if hmin < 0 or rmin < 0 or hmax > hyp.shape[1] or rmax > ref.shape[1]:
        raise ValueError("lengths must lie in [0, L]")
    return hmax, rmax


def _masks(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor,
           earlier: bool = True) -> Tensor:
    """X [Lh, C, W, N] int64 multiword masks for each hypothesis position i < hyp_len: channel 0
    has the bits of the reference positions j < ref_len with ref[j] == hyp[i], channel 1 (if
    ``earlier``) those of the hypothesis positions i' < i with hyp[i'] == hyp[i]. Positions
    i >= hyp_len are all zero. (Positions first: slices along them are contiguous.)"""
    n, lh = hyp.shape
    lr = ref.shape[1]
    words = max(1, -(-max(lh, lr) // _B))
    channels = 2 if earlier else 1
    dev = hyp.device
    hyp, ref = hyp.long(), ref.long()
    vh = torch.arange(lh, device=dev) < hyp_len.unsqueeze(1)
    vr = torch.arange(lr, device=dev) < ref_len.unsqueeze(1)
    lo, hi = torch.stack((torch.minimum(hyp.min(), ref.min()),
                          torch.maximum(hyp.max(), ref.max()))).tolist()
    if lo < 0:  # the padding may be negative: look at the ids within the lengths only
        lo, hi = torch.stack((torch.minimum(hyp[vh].min(), ref[vr].min()),
                              torch.maximum(hyp[vh].max(), ref[vr].max()))).tolist()
        if lo < 0:
            raise ValueError("token ids must be >= 0")
    digits = -(-(hi + 1).bit_length() // _DIGIT_BITS)
    dbits = -(-(hi + 1).bit_length() // digits)
    bits_h, before_h = _position_bits(lh, words, dev)
    bits_r = _position_bits(lr, words, dev)[0]
    x = None
    for d in range(digits):
        # table column = digit d of the id + 1; column 0 takes the positions past the lengths
        # and is cleared before the look-up
        if digits > 1:
            dh = torch.where(vh, (hyp >> (d * dbits)) & ((1 << dbits) - 1), -1) + 1
            dr = torch.where(vr, (ref >> (d * dbits)) & ((1 << dbits) - 1), -1) + 1
            size = (1 << dbits) + 1
        else:
            dh, dr, size = torch.where(vh, hyp + 1, 0), torch.where(vr, ref + 1, 0), hi + 2
        table = hyp.new_zeros((channels, words, n, size))
        table[0].scatter_add_(2, dr.expand(words, n, lr), bits_r.expand(words, n, lr))
        if earlier:
            table[1].scatter_add_(2, dh.expand(words, n, lh), bits_h.expand(words, n, lh))
        table[..., 0] = 0
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


def _f1(hits: Tensor, n_pred: Tensor, n_target: Tensor) -> Tensor:
    """rouge-score's fmeasure of P = hits / n_pred, R = hits / n_target (float64)."""
    p = hits / n_pred
    r = hits / n_target
    return torch.where(p + r > 0, 2 * p * r / (p + r), torch.zeros_like(p))


def _bleu(matches: Tensor, hyp_len: Tensor, ref_len: Tensor) -> Tensor:
    """sacrebleu's compute_bleu with exp smoothing and effective order, / 100 (float64).

    p_n = 100 m_n / t_n, or 100 2^-k_n / t_n for m_n = 0 (the same roundings as sacrebleu's
    100 / (2^k_n t_n)); orders with t_n = 0 (n > E) get weight 0; BP = exp(min(0, 1 - |r|/|h|)).
    """
    hl = hyp_len.double()
    correct = matches.t().double()
    total = hl.unsqueeze(1) - torch.arange(BLEU_ORDER, device=hl.device)
    used = total > 0
    zero = correct == 0
    num = torch.where(zero, torch.exp2(-zero.cumsum(1)), correct)
    logp = torch.log(100 * num / total.clamp_(min=1)).mul_(used)
    score = torch.exp(logp.sum(1) / hl.clamp(1, BLEU_ORDER))
    bp = torch.exp((1 - ref_len.double() / hl).clamp_(max=0))
    return (bp * score / 100).masked_fill_(zero[:, 0], 0).clamp_(max=1)


def _rouge_n(matches: Tensor, hyp_len: Tensor, ref_len: Tensor, n: int) -> Tensor:
    hits = matches.double()
    return _f1(hits, (hyp_len.double() - n + 1).clamp(min=1),
               (ref_len.double() - n + 1).clamp(min=1))


def _rouge_l(lcs: Tensor, hyp_len: Tensor, ref_len: Tensor) -> Tensor:
    f = _f1(lcs.double(), hyp_len.double().clamp(min=1), ref_len.double().clamp(min=1))
    return torch.where((hyp_len == 0) | (ref_len == 0), 0.0, f)


def token_rewards(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor,
                  names: tuple[str, ...] | list[str] = REWARDS) -> dict[str, Tensor]:
    """Several token rewards at once (``names`` from ``REWARDS``), sharing the match masks."""
    unknown = [k for k in names if k not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; allowed: {', '.join(REWARDS)}")
    lh, lr = _check(hyp, hyp_len, ref, ref_len)
    dtype = torch.get_default_dtype()
    if lh == 0 or lr == 0:
        return {k: hyp.new_zeros(len(hyp), dtype=dtype) for k in names}
    x = _masks(hyp[:, :lh], hyp_len, ref[:, :lr], ref_len,
               earlier=any(k != "rougeL" for k in names))
    orders = set(range(1, BLEU_ORDER + 1)) if "bleu" in names else set()
    orders |= {int(k[5:]) for k in names if k in ("rouge1", "rouge2")}
    matches = _matches(x, max(orders)) if orders else None
    out = {}
    for k in names:
        if k == "bleu":
            out[k] = _bleu(matches, hyp_len, ref_len)
        elif k == "rougeL":
            out[k] = _rouge_l(_lcs(x, ref_len), hyp_len, ref_len)
        else:
            n = int(k[5:])
            out[k] = _rouge_n(matches[n - 1], hyp_len, ref_len, n)
    return {k: v.to(dtype) for k, v in out.items()}


def sentence_bleu(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor) -> Tensor:
    """Sentence BLEU as a fraction, [N] (sacrebleu, effective order, exp smoothing)."""
    return token_rewards(hyp, hyp_len, ref, ref_len, ("bleu",))["bleu"]


def rouge_n(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor, n: int) -> Tensor:
    """ROUGE-n F1, [N] (rouge-score's ``rouge{n}``)."""
    if n < 1:
        raise ValueError(f"rouge_n needs n >= 1, got {n}")
    lh, lr = _check(hyp, hyp_len, ref, ref_len)
    if lh < n or lr < n:
        return hyp.new_zeros(len(hyp), dtype=torch.get_default_dtype())
    x = _masks(hyp[:, :lh], hyp_len, ref[:, :lr], ref_len)
    m = _matches(x, n)[n - 1]
    return _rouge_n(m, hyp_len, ref_len, n).to(torch.get_default_dtype())


def rouge_l(hyp: Tensor, hyp_len: Tensor, ref: Tensor, ref_len: Tensor) -> Tensor:
    """ROUGE-L F1, [N] (rouge-score's sentence-level ``rougeL``)."""
    return token_rewards(hyp, hyp_len, ref, ref_len, ("rougeL",))["rougeL"]


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
