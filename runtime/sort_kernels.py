"""The CPU kernel of the `sort` primitive (ir/sort.py): a stable sort per row, in Numba.

The generated kernel views every operand as (rows, n), finds each row's permutation by one
stable sort per key, from the last key to the first (the first key decides, later keys
break its ties: np.lexsort's scheme), then gathers every operand through it. A row of at
least RADIX_MIN keys is radix sorted (least significant byte first, a counting pass a
byte, passes whose byte is the same everywhere skipped) on its keys mapped to unsigned
integers of the same order; a shorter row moves (key, position) pairs through insertion
sort on runs of 16 and bottom-up merges. Both are stable. Floats order NaN last, as
NumPy; -0.0 and 0.0 are equal keys.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from .helper_options import HELPER

RUN = 16  # the run length insertion sort orders before the merges
RADIX_MIN = 64  # rows this long are radix sorted (one pass a byte beats log2(n) merges)
_TOP = np.uint64(1 << 63)


@njit(**HELPER)
def _before(a, b):
    """a sorts strictly before b: NumPy's order, NaN last (integers: a < b)."""
    return a < b or (b != b and a == a)


@njit(**HELPER)
def _insertion_runs(keys, pos):
    n = keys.shape[0]
    for lo in range(0, n, RUN):
        hi = min(lo + RUN, n)
        for i in range(lo + 1, hi):
            k, p = keys[i], pos[i]
            j = i
            while j > lo and _before(k, keys[j - 1]):
                keys[j] = keys[j - 1]
                pos[j] = pos[j - 1]
                j -= 1
            keys[j] = k
            pos[j] = p


@njit(**HELPER)
def _merge_pass(src_k, src_p, dst_k, dst_p, width):
    """Merge neighbouring sorted runs of `width` from src into dst (left first on ties)."""
    n = src_k.shape[0]
    for lo in range(0, n, 2 * width):
        mid, hi = min(lo + width, n), min(lo + 2 * width, n)
        a, b, o = lo, mid, lo
        while a < mid and b < hi:
            if _before(src_k[b], src_k[a]):
                dst_k[o] = src_k[b]
                dst_p[o] = src_p[b]
                b += 1
            else:
                dst_k[o] = src_k[a]
                dst_p[o] = src_p[a]
                a += 1
            o += 1
        while a < mid:
            dst_k[o] = src_k[a]
            dst_p[o] = src_p[a]
            a += 1
            o += 1
        while b < hi:
            dst_k[o] = src_k[b]
            dst_p[o] = src_p[b]
            b += 1
            o += 1


@njit(**HELPER)
def _stable_sort(keys, pos, keys_tmp, pos_tmp):
    """Sort keys in place, stably, carrying pos along."""
    n = keys.shape[0]
    _insertion_runs(keys, pos)
    width, in_tmp = RUN, False
    while width < n:
        if in_tmp:
            _merge_pass(keys_tmp, pos_tmp, keys, pos, width)
        else:
            _merge_pass(keys, pos, keys_tmp, pos_tmp, width)
        in_tmp = not in_tmp
        width *= 2
    if in_tmp:
        keys[:] = keys_tmp
        pos[:] = pos_tmp


def ordered_bits(keys, bits):
    """bits[j] = an unsigned integer ordered as keys[j] is (NaN last, -0.0 == 0.0)."""


@overload(ordered_bits, jit_options={"fastmath": False, "error_model": "numpy"})
def _ordered_bits(keys, bits):
    dtype = keys.dtype
    if isinstance(dtype, types.Float):
        unsigned = np.uint32 if dtype.bitwidth == 32 else np.uint64
        width = np.uint64(dtype.bitwidth - 1)
        as_float = np.float32 if dtype.bitwidth == 32 else np.float64
        nan = as_float(np.nan)

        def floats(keys, bits):
            canonical = np.empty(keys.shape[0], keys.dtype)
            for j in range(keys.shape[0]):
                v = keys[j]
                canonical[j] = v + as_float(0.0) if v == v else nan  # one NaN, +0.0
            raw = canonical.view(unsigned)
            for j in range(keys.shape[0]):
                b = np.uint64(raw[j])
                # negatives: every bit flipped (larger magnitude first); others: the sign set
                top = np.uint64(1) << width
                bits[j] = b ^ (top | (top - np.uint64(1))) if b >> width else b | top
        return floats
    if isinstance(dtype, types.Integer) and dtype.signed:
        offset = 1 << (dtype.bitwidth - 1)
        if dtype.bitwidth == 64:
            return lambda keys, bits: _flip_top(keys, bits)

        def small_signed(keys, bits):
            for j in range(keys.shape[0]):
                bits[j] = np.uint64(np.int64(keys[j]) + offset)
        return small_signed

    def unsigned_or_bool(keys, bits):
        for j in range(keys.shape[0]):
            bits[j] = np.uint64(keys[j])
    return unsigned_or_bool


@njit(**HELPER)
def _flip_top(keys, bits):
    for j in range(keys.shape[0]):
        bits[j] = np.uint64(keys[j]) ^ _TOP


@njit(**HELPER)
def _radix_sort(bits, pos, bits_tmp, pos_tmp, count, passes):
    """Sort bits in place, stably, carrying pos: LSD radix, one byte a pass."""
    n = bits.shape[0]
    in_tmp = False
    for byte in range(passes):
        shift = np.uint64(8 * byte)
        src_b, src_p = (bits_tmp, pos_tmp) if in_tmp else (bits, pos)
        dst_b, dst_p = (bits, pos) if in_tmp else (bits_tmp, pos_tmp)
        count[:] = 0
        for j in range(n):
            count[(src_b[j] >> shift) & np.uint64(255)] += 1
        if count[(src_b[0] >> shift) & np.uint64(255)] == n:
            continue  # this byte is the same in every key: the pass moves nothing
        total = 0
        for d in range(256):
            c = count[d]
            count[d] = total
            total += c
        for j in range(n):
            d = (src_b[j] >> shift) & np.uint64(255)
            o = count[d]
            count[d] = o + 1
            dst_b[o] = src_b[j]
            dst_p[o] = src_p[j]
        in_tmp = not in_tmp
    if in_tmp:
        bits[:] = bits_tmp
        pos[:] = pos_tmp


@njit(**HELPER)
def sort_rows_by(key, perm, first):
    """perm[r] = the stable order of key[r] (first) or perm[r] reordered stably by
    key[r, perm[r]] (a later, more significant key)."""
    rows, n = key.shape
    keys, keys_tmp = np.empty(n, key.dtype), np.empty(n, key.dtype)
    pos, pos_tmp = np.empty(n, np.int64), np.empty(n, np.int64)
    bits, bits_tmp = np.empty(n, np.uint64), np.empty(n, np.uint64)
    count = np.empty(256, np.int64)
    radix = n >= RADIX_MIN
    for r in range(rows):
        for j in range(n):
            pos[j] = j if first else perm[r, j]
            keys[j] = key[r, pos[j]]
        if radix:
            ordered_bits(keys, bits)
            _radix_sort(bits, pos, bits_tmp, pos_tmp, count, key.itemsize)
        else:
            _stable_sort(keys, pos, keys_tmp, pos_tmp)
        perm[r, :] = pos


@njit(**HELPER)
def take_rows(x, perm, out):
    """out[r, j] = x[r, perm[r, j]]."""
    rows, n = perm.shape
    for r in range(rows):
        for j in range(n):
            out[r, j] = x[r, perm[r, j]]

