"""The CPU kernel of the `sort` primitive (ir/sort.py): a stable merge sort per row, in Numba.

The generated kernel views every operand as (rows, n), finds each row's permutation by one
stable sort per key, from the last key to the first (the first key decides, later keys
break its ties: np.lexsort's scheme), then gathers every operand through it. A sort moves
(key, position) pairs through contiguous buffers: insertion sort on runs of 16, then
bottom-up merges. Floats order NaN last, as NumPy; -0.0 and 0.0 are equal (stable).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .helper_options import HELPER

RUN = 16  # the run length insertion sort orders before the merges


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


@njit(**HELPER)
def sort_rows_by(key, perm, first):
    """perm[r] = the stable order of key[r] (first) or perm[r] reordered stably by
    key[r, perm[r]] (a later, more significant key)."""
    rows, n = key.shape
    keys, keys_tmp = np.empty(n, key.dtype), np.empty(n, key.dtype)
    pos, pos_tmp = np.empty(n, np.int64), np.empty(n, np.int64)
    for r in range(rows):
        for j in range(n):
            pos[j] = j if first else perm[r, j]
            keys[j] = key[r, pos[j]]
        _stable_sort(keys, pos, keys_tmp, pos_tmp)
        perm[r, :] = pos


@njit(**HELPER)
def take_rows(x, perm, out):
    """out[r, j] = x[r, perm[r, j]]."""
    rows, n = perm.shape
    for r in range(rows):
        for j in range(n):
            out[r, j] = x[r, perm[r, j]]

