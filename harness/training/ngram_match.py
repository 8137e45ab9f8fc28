"""Clipped n-gram matches and longest common subsequences of many token-id pairs at once,
bit-parallel on NumPy arrays: the kernels behind the sentence rewards (``rewards.py``).

Pairs: hypotheses ``hyp`` [N, Lh] and references ``ref`` [S, Lr] of int64 ids with N = S * K:
reference s serves the K consecutive hypotheses s*K .. s*K + K - 1 (K = 1: one reference per
hypothesis). Row lengths ``hyp_len`` [N] and ``ref_len`` [S]; ids after a length are ignored
(any value). ``top`` bounds the ids within the lengths.

Masks, oriented on the reference positions j < |r| (so that the reference-only half is done
once per source, not once per candidate). Positions are bits of 62-bit words (W =
ceil(max(Lh, Lr) / 62) words per mask):
    T(j) = the bits of the hypothesis positions i < |h| with h_i = r_j   (per hypothesis),
    F(j) = the bits of the reference positions j' < j with r_j' = r_j    (per source).
Both are read from per-row tables (row, id) -> sum of the bits of the positions holding that
id (``np.add.at``: the bits are distinct, so the sum is their OR), looked up at r_j
(``take``). Ids are split into digits of at most 8 bits with one small table per digit, and
the masks of the digits are ANDed (a position equal to r_j in every digit holds r_j), which
keeps the tables small for any vocabulary. For n-grams (X = T or F):
    X_n(j) = X_{n-1}(j) & (X_1(j + n - 1) >> (n - 1)).
Reference position j holds the (k+1)-th copy of its n-gram in r with k = popcount(F_n(j)), and
the hypothesis holds c = popcount(T_n(j)) copies, so the clipped matches are
    m_n = sum_g min(c_h(g), c_r(g)) = #{j : popcount(F_n(j)) < popcount(T_n(j))}.
LCS: the bit-parallel algorithm (Allison & Dix 1986; Hyyro 2004) over the hypothesis bits, one
vectorised step per reference position: U = V & T(j), V <- (V + U) | (V - U) from V = all
ones; LCS = |h| - popcount(V) (the LCS is symmetric).

Why NumPy: the work is ~100 array operations on a few hundred KB per batch. On the CPU,
NumPy's per-operation cost is about 0.7 us against torch's 3.5 us here, which decides the
throughput (``benchmarks/rewards.py``); the arrays are the tensors' own memory (no copy).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["ngram_stats"]

_B = 62  # bits per mask word: sums of two words stay below 2^63
_FULL = (1 << _B) - 1
_DIGIT_BITS = 8  # ids split into digits of at most 8 bits: tables of <= 256 entries per row


@functools.lru_cache(maxsize=128)
def _position_bits(length: int) -> tuple[np.ndarray, np.ndarray]:
    """The bit of each position in its word, [L], and each position's word, [L]."""
    pos = np.arange(length, dtype=np.int64)
    return np.left_shift(1, pos % _B), pos // _B


@functools.lru_cache(maxsize=128)
def _bits_below(length: int) -> np.ndarray:
    """[L + 1, L]: row l holds the bit of each position p < l in its word, 0 for p >= l."""
    bit = _position_bits(length)[0]
    return np.where(np.arange(length) < np.arange(length + 1)[:, None], bit, 0)


@functools.lru_cache(maxsize=128)
def _before(length: int, words: int) -> np.ndarray:
    """[W, L, 1]: for each position j, the bits of the positions j' < j (word by word)."""
    start = np.arange(words)[:, None] * _B
    count = np.clip(np.arange(length) - start, 0, _B)
    return (np.left_shift(1, count) - 1)[:, :, None]


def _low_bits(n: np.ndarray, words: int) -> np.ndarray:
    """[W, len(n)] masks with bits 0 .. n - 1 set (word by word)."""
    count = np.clip(n - np.arange(words)[:, None] * _B, 0, _B)
    return np.left_shift(1, count) - 1


def _digit_plan(top: int) -> tuple[int, int]:
    """(number of digits, bits per digit) covering ids 0 .. top."""
    bits = max(1, int(top).bit_length())
    digits = -(-bits // _DIGIT_BITS)
    return digits, -(-bits // digits)


def _lookup(keys: np.ndarray, bits: np.ndarray, at: np.ndarray, at_rows: np.ndarray,
            words: int, digits: int, dbits: int, word_of: np.ndarray | None) -> np.ndarray:
    """[W, L, C] masks: for each entry of ``at`` (ids, [L, C]), the bits (``bits`` [R, P]) of
    the positions of row ``at_rows[c]`` of ``keys`` ([R, P] ids) that hold the same id.
    ``word_of`` [P]: each position's mask word (None for one word)."""
    rows = len(keys)
    size = 1 << dbits
    low = size - 1
    key_off = (np.arange(rows, dtype=np.int64) * size)[:, None]
    if word_of is not None:
        key_off = key_off + word_of * (rows * size)
    at_off = at_rows * size
    out = np.empty((words, *at.shape), dtype=np.int64)
    for d in range(digits):
        key = np.bitwise_and(keys if d == 0 else keys >> (d * dbits), low)
        table = np.zeros(words * rows * size, dtype=np.int64)
        np.add.at(table, (key + key_off).ravel(), bits.ravel())
        where = np.bitwise_and(at if d == 0 else at >> (d * dbits), low)
        where |= at_off
        for w in range(words):
            part = table[w * rows * size : (w + 1) * rows * size]
            if d == 0:
                part.take(where, out=out[w], mode="clip")
            else:
                out[w] &= part.take(where, mode="clip")
    return out


@functools.lru_cache(maxsize=64)
def _candidate_major(sources: int, group: int) -> np.ndarray:
    """The hypothesis row of each column when columns run candidate-major (column k S + s is
    candidate k of source s, hypothesis row s K + k), [S K]."""
    col = np.arange(sources * group)
    return (col % sources) * group + col // sources


def _masks(hyp: np.ndarray, hyp_len: np.ndarray, ref: np.ndarray, ref_len: np.ndarray,
           top: int, earlier: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """T [W, Lr, N] with columns candidate-major (``_candidate_major``) and (if ``earlier``)
    F [W, Lr, S], int64, positions first (slices along them are contiguous). T is 0 at
    reference positions j >= ref_len; F is exact at j < ref_len. Reference positions past
    their length read the id top + 1 (no hypothesis position has it); positions past a
    length add no bits."""
    n, lh = hyp.shape
    s, lr = ref.shape
    words = -(-max(lh, lr) // _B)
    digits, dbits = _digit_plan(top + 1)
    ref_at = np.where(np.arange(lr)[:, None] < ref_len, ref.T, top + 1)  # [Lr, S]
    word_h = _position_bits(lh)[1] if words > 1 else None
    t = _lookup(hyp, _bits_below(lh).take(hyp_len, axis=0), np.tile(ref_at, n // s),
                _candidate_major(s, n // s), words, digits, dbits, word_h)
    if not earlier:
        return t, None
    word_r = _position_bits(lr)[1] if words > 1 else None
    f = _lookup(ref, _bits_below(lr).take(ref_len, axis=0), ref_at, np.arange(s), words,
                digits, dbits, word_r)
    f &= _before(lr, words)
    return t, f


def _shift_right(x: np.ndarray, s: int, out: np.ndarray) -> np.ndarray:
    """out = x >> s for multiword masks [W, L, X] (word dimension 0), 0 < s < 62."""
    np.right_shift(x, s, out=out)
    if x.shape[0] > 1:
        out[:-1] |= (x[1:] & ((1 << s) - 1)) << (_B - s)
    return out


def _popcounts(x: np.ndarray, max_order: int, count: type) -> np.ndarray:
    """[max_order, L, X] popcounts of the n-gram masks X_n of x [W, L, X] (0 at positions
    j > L - n)."""
    words, length, cols = x.shape
    pc = np.zeros((max_order, length, cols), dtype=count)
    shifted = np.empty_like(x[:, 1:]) if max_order > 1 and length > 1 else None
    xn = x
    for order in range(1, min(max_order, length) + 1):
        width = length - order + 1
        if order > 1:
            step = _shift_right(x[:, order - 1 :], order - 1, shifted[:, :width])
            if order == 2:
                xn = x[:, :width] & step
            else:
                xn = xn[:, :width]
                xn &= step
        if words == 1:
            np.bitwise_count(xn[0], out=pc[order - 1, :width])
        else:
            np.bitwise_count(xn).sum(axis=0, dtype=count, out=pc[order - 1, :width])
    return pc


def _matches(t: np.ndarray, f: np.ndarray, max_order: int) -> np.ndarray:
    """Clipped matches m_n, [max_order, N] int64 for n = 1 .. max_order, from ``_masks``."""
    words, lr, n = t.shape
    s = f.shape[2]
    count = np.uint8 if words <= 4 else np.uint16  # popcount per position: <= 62 W
    pc_t = _popcounts(t, max_order, count).reshape(max_order, lr, n // s, s)
    pc_f = _popcounts(f, max_order, count)[:, :, None]
    matched = np.less(pc_f, pc_t).view(np.uint8)  # [max_order, Lr, K, S]
    total = np.uint8 if lr < 256 else np.int64
    per_column = matched.sum(axis=1, dtype=total)  # [max_order, K, S]
    return per_column.transpose(0, 2, 1).reshape(max_order, n).astype(np.int64)


def _lcs(t: np.ndarray, hyp_len: np.ndarray) -> np.ndarray:
    """LCS lengths [N] by the bit-parallel recurrence over the hypothesis bits, from T [W, Lr,
    N] of ``_masks`` and the hypothesis lengths [N]."""
    words = t.shape[0]
    full = _low_bits(hyp_len, words)  # [W, N]
    v = full.copy()
    u, s = np.empty_like(v), np.empty_like(v)
    if words == 1:
        for m in t[0]:
            np.bitwise_and(v[0], m, out=u[0])
            np.add(v[0], u[0], out=s[0])
            np.bitwise_xor(v[0], u[0], out=v[0])
            v[0] |= s[0]
            v[0] &= full[0]
    else:
        for j in range(t.shape[1]):
            carry = 0
            for w in range(words):
                np.bitwise_and(v[w], t[w, j], out=u[w])
                s[w] = v[w] + u[w] + carry
                carry = s[w] >> _B
                v[w] = ((s[w] & _FULL) | (v[w] ^ u[w])) & full[w]
    return hyp_len - np.bitwise_count(v).sum(axis=0, dtype=np.int64)


def ngram_stats(hyp: np.ndarray, hyp_len: np.ndarray, ref: np.ndarray, ref_len: np.ndarray,
                top: int, max_order: int, lcs: bool) -> tuple[np.ndarray, np.ndarray]:
    """Clipped matches [max_order, N] for n = 1 .. max_order and LCS lengths [N] (zeros when
    not asked for) of hypothesis i against reference i // K (see the module docstring)."""
    n, lh = hyp.shape
    if n == 0 or lh == 0 or ref.shape[1] == 0 or not (max_order or lcs):
        return np.zeros((max_order, n), dtype=np.int64), np.zeros(n, dtype=np.int64)
    t, f = _masks(hyp, hyp_len, ref, ref_len, top, earlier=max_order > 0)
    matches = _matches(t, f, max_order) if max_order else np.zeros((0, n), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    if lcs:
        rows = _candidate_major(len(ref), n // len(ref))
        lengths[rows] = _lcs(t, hyp_len.take(rows))
    return matches, lengths
