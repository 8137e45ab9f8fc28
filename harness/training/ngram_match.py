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


def _low_bits(n: np.ndarray, words: int) -> np.ndarray:
    """[W, len(n)] masks with bits 0 .. n - 1 set (word by word)."""
    count = np.clip(n - np.arange(words)[:, None] * _B, 0, _B)
    return np.left_shift(1, count) - 1


@functools.lru_cache(maxsize=128)
def _before(length: int, words: int) -> np.ndarray:
    """[W, L, 1]: for each position j, the bits of the positions j' < j (word by word)."""
    return _low_bits(np.arange(length), words)[:, :, None]


def _digit_plan(top: int) -> tuple[int, int]:
    """(number of digits, bits per digit) covering ids 0 .. top."""
    bits = max(1, int(top).bit_length())
    digits = -(-bits // _DIGIT_BITS)
    return digits, -(-bits // digits)


@functools.lru_cache(maxsize=64)
def _column_rows(sources: int, group: int, earlier: bool) -> np.ndarray:
    """The table row that each mask column reads: columns k S + s (candidate-major) read
    hypothesis row s K + k (candidate k of source s); with ``earlier``, S more columns read the
    references, table rows N + s."""
    col = np.arange(sources * group)
    rows = (col % sources) * group + col // sources
    if earlier:
        rows = np.concatenate((rows, sources * group + np.arange(sources)))
    return rows


def _masks(hyp: np.ndarray, hyp_len: np.ndarray, ref: np.ndarray, ref_len: np.ndarray,
           top: int, earlier: bool) -> np.ndarray:
    """[W, Lr, N (+ S)] int64 masks, positions first (slices along them are contiguous):
    columns 0 .. N - 1 hold T, candidate-major (column k S + s is candidate k of source s);
    with ``earlier``, columns N .. N + S - 1 hold F of each source. T is 0 at reference
    positions j >= ref_len; F is exact at j < ref_len.

    One table per digit, entry (w R + row) size + digit for mask word w, with rows 0 .. N - 1
    for the hypotheses (T) and N .. N + S - 1 for the references (F). Reference positions past
    their length read the id top + 1 (no hypothesis position has it); positions past a
    length add no bits."""
    n, lh = hyp.shape
    s, lr = ref.shape
    group = n // s
    words = -(-max(lh, lr) // _B)
    digits, dbits = _digit_plan(top + 1)
    size = 1 << dbits
    low = size - 1
    ref_at = np.where(np.arange(lr)[:, None] < ref_len, ref.T, top + 1)  # [Lr, S]
    blocks = group + 1 if earlier else group  # columns: blocks x S
    at_off = (_column_rows(s, group, earlier) * size).reshape(blocks, s)
    rows = n + s if earlier else n
    keys = [(hyp, _bits_below(lh).take(hyp_len, axis=0), 0)]
    if earlier:
        keys.append((ref, _bits_below(lr).take(ref_len, axis=0), n))
    # table offset of each key position: its row, and its mask word
    offsets = [(np.arange(first, first + len(ids), dtype=np.int64) * size)[:, None]
               + (_position_bits(ids.shape[1])[1] * (rows * size) if words > 1 else 0)
               for ids, _, first in keys]
    x = np.empty((words, lr, blocks * s), dtype=np.int64)
    for d in range(digits):
        table = np.zeros(words * rows * size, dtype=np.int64)
        for (ids, bits, _), offset in zip(keys, offsets, strict=True):
            key = np.bitwise_and(ids if d == 0 else ids >> (d * dbits), low)
            key += offset
            np.add.at(table, key.ravel(), bits.ravel())
        digit = np.bitwise_and(ref_at if d == 0 else ref_at >> (d * dbits), low)
        where = (digit[:, None, :] + at_off).reshape(lr, blocks * s)  # [Lr, columns]
        for w in range(words):
            part = table[w * rows * size : (w + 1) * rows * size]
            if d == 0:
                part.take(where, out=x[w], mode="clip")
            else:
                x[w] &= part.take(where, mode="clip")
    if earlier:
        x[:, :, n:] &= _before(lr, words)
    return x


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


def _matches(x: np.ndarray, n: int, max_order: int) -> np.ndarray:
    """Clipped matches m_n, [max_order, N] int64 for n = 1 .. max_order, from ``_masks``
    (with ``earlier``) for N hypotheses."""
    words, lr, columns = x.shape
    s = columns - n
    count = np.uint8 if words <= 4 else np.uint16  # popcount per position: <= 62 W
    pc = _popcounts(x, max_order, count)
    pc_t = pc[:, :, :n].reshape(max_order, lr, n // s, s)
    matched = np.less(pc[:, :, None, n:], pc_t).view(np.uint8)  # [max_order, Lr, K, S]
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
    x = _masks(hyp, hyp_len, ref, ref_len, top, earlier=max_order > 0)
    matches = _matches(x, n, max_order) if max_order else np.zeros((0, n), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    if lcs:
        rows = _column_rows(len(ref), n // len(ref), False)
        lengths[rows] = _lcs(x[:, :, :n], hyp_len.take(rows))
    return matches, lengths
