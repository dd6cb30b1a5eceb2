"""Sorting and selection on traced values: np.sort, argsort, partition, argpartition,
lexsort, searchsorted, median, percentile, quantile and their nan-variants.

Everything sorts with the one `sort` primitive (ir/sort.py, as jax.lax.sort): the sorted
axis (or the merged reduced axes) moved last, stable whatever `kind` says, floats NaN last.
A partition is a full stable sort (a valid partition). Quantiles gather the sorted values
at indices computed as NumPy 2's methods compute them (numpy/lib/_function_base_impl.py),
then interpolate with NumPy's two-sided lerp, so results agree to the bit; their gradients
flow through the gathered values and the sort's permutation, as JAX's do. A traced `q`
is differentiable (as in JAX); a concrete one is checked to lie in [0, 1]. Conventions:
docs/numpy.md, "Sorting and selection".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.core import is_inexact
from transfuse.ir.errors import (
    TransfuseAxisError,
    TransfuseIndexError,
    TransfuseTypeError,
    TransfuseValueError,
)
from transfuse.ir.source import with_location
from transfuse.ir.tracing import Tracer

from ._core import asarray, implements, normalize_axes, normalize_axis, shape_of, unsupported

KINDS = (None, "quicksort", "mergesort", "heapsort", "stable")

# ---------------------------------------------------------------------------------------
# The sorted axis moved last, and back


def _to_last(a: Any, axes: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    """a with `axes` (sorted) moved last and merged into one: (that array, the other axes'
    shape)."""
    shape = shape_of(a)
    others = [d for d in range(len(shape)) if d not in axes]
    order = others + list(axes)
    if order != list(range(len(shape))):
        a = lax.transpose(a, tuple(order))
    rest = tuple(shape[d] for d in others)
    n = int(np.prod([shape[d] for d in axes], dtype=np.int64))
    if len(axes) != 1:
        a = lax.reshape(a, rest + (n,))
    return a, rest


def _from_last(x: Any, axis: int) -> Any:
    """x with its last axis moved back to `axis`."""
    nd = len(shape_of(x))
    if axis == nd - 1:
        return x
    order = list(range(nd - 1))
    order.insert(axis, nd - 1)
    return lax.transpose(x, tuple(order))


def _flat_or_axis(a: Any, axis: Any) -> tuple[Any, int]:
    """axis=None sorts the flattened array (NumPy's rule), else a normalised axis."""
    a = asarray(a)
    if axis is None:
        return lax.reshape(a, (int(np.prod(shape_of(a), dtype=np.int64)),)), 0
    return a, normalize_axis(int(axis), len(shape_of(a)))


def _check_kind(kind: Any, order: Any, name: str) -> None:
    if order is not None:
        raise unsupported(f"np.{name}(..., order=...) (structured arrays)")
    if kind not in KINDS:
        raise TransfuseValueError(with_location(
            f"sort kind must be one of 'quick', 'heap', or 'stable' (got {kind!r})"))


def _keys(a: Any) -> list[Any]:
    """The sort keys of a: itself, or (real, imag) for complex (NumPy's lexicographic
    order of complex numbers)."""
    if lax.dtype(a).kind == "c":
        return [lax.real(a), lax.imag(a)]
    return [a]


def _sort_last(a: Any, *, values: bool = True) -> Any:
    """a sorted along its last axis (values) or the permutation (values=False)."""
    keys = _keys(a)
    # A differentiable sort returns its permutation too, so its VJP sorts no second time.
    want_perm = not values or is_inexact(lax.dtype(a))
    outs = lax.sort(keys + ([a] if len(keys) > 1 else []), len(keys), want_perm)
    return outs[len(keys) if len(keys) > 1 else 0] if values else outs[-1]


def sort_along(a: Any, axis: Any, *, values: bool = True) -> Any:
    """a sorted along axis (None: flattened), or the permutation (values=False)."""
    a, ax = _flat_or_axis(a, axis)
    moved, _ = _to_last(a, (ax,))
    return _from_last(_sort_last(moved, values=values), ax)


@implements(np.sort)
def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    _check_kind(kind, order, "sort")
    return sort_along(a, axis)


@implements(np.argsort)
def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    _check_kind(kind, order, "argsort")
    return sort_along(a, axis, values=False)


def _check_kth(kth: Any, a: Any, axis: Any) -> None:
    if isinstance(kth, Tracer):
        raise unsupported("a traced kth in np.partition/argpartition", "pass Python ints")
    kth = np.asarray(kth)
    if kth.dtype.kind not in "iu":
        raise TransfuseTypeError(with_location("Partition index must be integer"))
    if kth.ndim > 1:
        raise TransfuseValueError(with_location("kth array must have dimension <= 1"))
    n = shape_of(a)[_flat_or_axis(a, axis)[1]] if axis is not None else int(
        np.prod(shape_of(a), dtype=np.int64))
    for k in kth.reshape(-1):
        if not -n <= int(k) < n:
            raise TransfuseValueError(with_location(f"kth(={int(k)}) out of bounds ({n})"))


@implements(np.partition)
def partition(a, kth, axis=-1, kind="introselect", order=None):
    """A full stable sort: a valid partition for every kth."""
    if order is not None:
        raise unsupported("np.partition(..., order=...) (structured arrays)")
    _check_kth(kth, a, axis)
    return sort_along(a, axis)


@implements(np.argpartition)
def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """The stable argsort: a valid argpartition for every kth."""
    if order is not None:
        raise unsupported("np.argpartition(..., order=...) (structured arrays)")
    _check_kth(kth, a, axis)
    return sort_along(a, axis, values=False)


@implements(np.lexsort)
def lexsort(keys, axis=-1):
    """The stable order by the last key, ties broken by the one before, and so on."""
    if isinstance(keys, (list, tuple)):
        keys = [asarray(k) for k in keys]
    else:
        keys = asarray(keys)
        keys = [keys[i] for i in range(shape_of(keys)[0])] if len(shape_of(keys)) else []
    if not keys:
        raise TransfuseTypeError(with_location("need sequence of keys with len > 0 in lexsort"))
    shape = np.broadcast_shapes(*(shape_of(k) for k in keys))
    if len(shape) == 0:
        raise TransfuseValueError(with_location("lexsort needs keys of at least one axis"))
    ax = normalize_axis(int(axis), len(shape))
    moved = [_to_last(lax.broadcast_to(k, shape), (ax,))[0] for k in reversed(keys)]
    parts = [part for k in moved for part in _keys(k)]
    return _from_last(lax.sort(parts, len(parts), True)[-1], ax)


# ---------------------------------------------------------------------------------------
# searchsorted: a composite (a count of the sorted entries before each query)


COUNT_WORK = 1 << 14  # len(a) * len(v) up to which searchsorted counts instead of sorting


@implements(np.searchsorted)
def searchsorted(a, v, side="left", sorter=None):
    """For each v, the index where it would go in the sorted 1-d a: the number of entries
    of a before it (side='left') or not after it (side='right'). Small problems count
    (one fused loop, len(a) len(v) comparisons), large ones sort a and v together."""
    a = asarray(a)
    if len(shape_of(a)) != 1:
        raise TransfuseValueError(with_location("object too deep for desired array"))
    if side not in ("left", "right"):
        raise TransfuseValueError(with_location(
            f"search side must be 'left' or 'right' (got {side!r})"))
    if sorter is not None:
        a = lax.gather(a, asarray(sorter, np.int64), 0)
    v = asarray(v)
    common = np.result_type(lax.dtype(a), lax.dtype(v))
    a, v = lax.convert(a, common), lax.convert(v, common)
    n, m = shape_of(a)[0], int(np.prod(shape_of(v), dtype=np.int64))
    if n * m <= COUNT_WORK:
        return _search_by_counting(a, v, side)
    return lax.reshape(_search_by_sorting(a, lax.reshape(v, (m,)), side), shape_of(v))


def _search_by_counting(a: Any, v: Any, side: str) -> Any:
    row = lax.reshape(a, (1,) * len(shape_of(v)) + shape_of(a))
    col = lax.expand_dims(v, (len(shape_of(v)),))
    if side == "left":
        hits = _nan_last_less(row, col)  # a[i] before v
    else:
        hits = np.logical_not(_nan_last_less(col, row))  # v not before a[i]
    return np.sum(hits, axis=-1, dtype=np.int64)


def _search_by_sorting(a: Any, v: Any, side: str) -> Any:
    """a and the queries v (1-d) sorted together, ties ordered so that a query comes
    before equal entries of a (left) or after them (right): a query's answer is its sorted
    position less the queries before it. O((n + m) log) instead of O(n m)."""
    n, m = shape_of(a)[0], shape_of(v)[0]
    is_query = np.concatenate([np.zeros(n, np.int64), np.ones(m, np.int64)])
    # the second key: 0 sorts first among equal values
    tie = is_query if side == "right" else 1 - is_query
    keys = _keys(lax.concatenate([a, v], 0))
    outs = lax.sort(keys + [tie, is_query], len(keys) + 1, permutation=True)
    query_sorted, perm = outs[-2], outs[-1]
    queries_before = lax.sub(lax.cumsum(query_sorted, 0), query_sorted)
    answer = lax.sub(lax.iota(np.int64, (n + m,)), queries_before)  # entries of a before
    return lax.slice_axis(lax.put_along_last(answer, perm, n + m), 0, n, m)


def _nan_last_less(x: Any, y: Any) -> Any:
    """x < y in NumPy's sort order, NaN last (x, y of one dtype, broadcast together)."""
    lt = np.less(x, y)
    if lax.dtype(x).kind not in "fc":
        return lt
    return np.logical_or(lt, np.logical_and(np.isnan(y), np.logical_not(np.isnan(x))))


# ---------------------------------------------------------------------------------------
# Quantiles: NumPy 2's methods (Hyndman & Fan), with n a static size or a traced count


def _virtual_linear(alpha: float, beta: float):
    return lambda n, q: n * q + (alpha + q * (1 - alpha - beta)) - 1


def _discrete(shift: float, odd: bool):
    """inverted_cdf (odd=False) and closest_observation (odd=True): integer indices."""
    def index(n, q):
        at = n * q - 1 - shift
        previous = np.floor(at)
        pick_previous = np.equal(at - previous, 0)
        if odd:
            pick_previous = np.logical_and(pick_previous, np.equal(np.mod(previous, 2), 1))
        res = np.where(pick_previous, previous, previous + 1)
        return np.maximum(res, 0).astype(np.int64)
    return index


def _midpoint_index(n, q):
    return 0.5 * (np.floor((n - 1) * q) + np.ceil((n - 1) * q))


def _gamma_as_is(gamma, index):
    return gamma


# method -> (virtual index (n, q) -> index, gamma fix or None for integer indices)
METHODS = {
    "inverted_cdf": (_discrete(0.0, False), None),
    "averaged_inverted_cdf": (lambda n, q: n * q - 1,
                              lambda g, index: np.where(np.equal(g, 0), 0.5, 1.0)),
    "closest_observation": (_discrete(0.5, True), None),
    "interpolated_inverted_cdf": (_virtual_linear(0, 1), _gamma_as_is),
    "hazen": (_virtual_linear(0.5, 0.5), _gamma_as_is),
    "weibull": (_virtual_linear(0, 0), _gamma_as_is),
    "linear": (lambda n, q: (n - 1) * q, _gamma_as_is),
    "median_unbiased": (_virtual_linear(1 / 3.0, 1 / 3.0), _gamma_as_is),
    "normal_unbiased": (_virtual_linear(3 / 8.0, 3 / 8.0), _gamma_as_is),
    "lower": (lambda n, q: np.floor((n - 1) * q).astype(np.int64), None),
    "higher": (lambda n, q: np.ceil((n - 1) * q).astype(np.int64), None),
    "midpoint": (_midpoint_index,
                 lambda g, index: np.where(np.equal(np.mod(index, 1), 0), 0.0, 0.5)),
    "nearest": (lambda n, q: np.around((n - 1) * q).astype(np.int64), None),
}


def _bounded_indexes(virtual: Any, count: Any) -> tuple[Any, Any]:
    """NumPy's _get_indexes: floor and floor + 1, both the last entry (-1) at or past
    count - 1 and at a NaN index, both 0 below 0."""
    previous = np.floor(virtual)
    last = np.logical_or(np.greater_equal(virtual, count - 1), np.isnan(virtual))
    below = np.less(virtual, 0)
    previous_index = np.where(below, 0, np.where(last, -1, previous))
    next_index = np.where(below, 0, np.where(last, -1, previous + 1))
    return previous_index.astype(np.int64), next_index.astype(np.int64)


def _take(sorted_x: Any, index: Any, count: Any) -> Any:
    """sorted_x[..., index] with NumPy's negative indices counted from `count`."""
    n = shape_of(sorted_x)[-1]
    index = np.where(np.less(index, 0), index + count, index)
    index = np.clip(index, 0, n - 1)  # an all-NaN slice's indices: its result is NaN anyway
    rows = shape_of(sorted_x)[:-1]
    index = lax.broadcast_to(asarray(index), rows + shape_of(index)[-1:])
    return lax.take_along_last(sorted_x, index)


def _lerp(a: Any, b: Any, t: Any, weak_dtype: Any = None) -> Any:
    """NumPy's _lerp: a + (b - a) t, or b - (b - a)(1 - t) where t >= 0.5 (exact ends).
    With weak_dtype (a Python-scalar q), t and 1 - t are formed in t's precision and then
    rounded to it, as NumPy's float(gamma) meets a float32 array."""
    diff = np.subtract(b, a)
    upper = np.greater_equal(t, 0.5)
    rest = np.subtract(1, t)
    if weak_dtype is not None:
        t, rest = t.astype(weak_dtype), rest.astype(weak_dtype)
    low = np.add(a, np.multiply(diff, t))
    high = np.subtract(b, np.multiply(diff, rest))
    return np.where(upper, high, low).astype(lax.dtype(low))


def _quantiles_of_sorted(sorted_x: Any, count: Any, q: np.ndarray, method: str,
                         weak: bool) -> Any:
    """The q (flat, shape (k,)) quantiles of each row of sorted_x along its last axis, of
    which the first `count` entries count (an int, or (rows..., 1) int64 when traced)."""
    get_index, fix_gamma = METHODS[method]
    virtual = get_index(count, q)
    if fix_gamma is None:
        return _take(sorted_x, virtual, count)
    previous, following = _bounded_indexes(virtual, count)
    gamma = np.asarray(fix_gamma(np.subtract(virtual, previous), virtual)) if not isinstance(
        virtual, Tracer) else fix_gamma(np.subtract(virtual, previous), virtual)
    gamma = gamma.astype(lax.dtype(virtual) if isinstance(virtual, Tracer) else virtual.dtype)
    # A Python-scalar q promotes weakly, as NumPy's float(gamma) does.
    weak_dtype = np.result_type(lax.dtype(sorted_x), 0.0) if weak else None
    return _lerp(_take(sorted_x, previous, count), _take(sorted_x, following, count), gamma,
                 weak_dtype)


def _check_q(q: Any, what: str, scale: float) -> tuple[Any, bool]:
    """q / scale, and whether it promotes weakly (a Python scalar); a concrete q is checked
    to lie in [0, 1], a traced one (differentiable, as in JAX) cannot be."""
    weak = type(q) in (int, float)
    if isinstance(q, Tracer):
        q = np.true_divide(q, scale) if scale != 1 else q
        if len(shape_of(q)) > 2:
            raise TransfuseValueError(with_location("q must be a scalar or 1d"))
        return q, False
    q = np.asarray(np.true_divide(q, scale) if scale != 1 else q)
    if q.size and not (q.min() >= 0 and q.max() <= 1):
        bound = "Percentiles must be in the range [0, 100]" if scale != 1 else \
            "Quantiles must be in the range [0, 1]"
        raise TransfuseValueError(with_location(bound))
    if q.ndim > 2:
        raise TransfuseValueError(with_location("q must be a scalar or 1d"))
    return q, weak


def _reduce_layout(a: Any, axis: Any) -> tuple[Any, tuple[int, ...], tuple[int, ...]]:
    """a with the reduced axes merged last: (that array, the reduced axes, the rest's
    shape)."""
    if axis is not None and len(shape_of(a)) == 0:  # NumPy: a 0-d array has no axis 0
        first = axis[0] if isinstance(axis, (tuple, list)) and axis else axis
        raise TransfuseAxisError(with_location(
            f"axis {first} is out of bounds for array of dimension 0"), first, 0)
    axes = normalize_axes(axis, len(shape_of(a)))
    moved, rest = _to_last(a, axes)
    return moved, axes, rest


def _finish(result: Any, q_shape: tuple[int, ...], a_shape: tuple[int, ...],
            axes: tuple[int, ...], keepdims: bool) -> Any:
    """(rest..., k) -> q_shape + rest (with ones at the reduced axes under keepdims)."""
    nd = len(shape_of(result))
    if nd > 1:
        result = lax.transpose(result, (nd - 1,) + tuple(range(nd - 1)))
    kept = tuple(1 if d in axes else n for d, n in enumerate(a_shape)) if keepdims else \
        tuple(n for d, n in enumerate(a_shape) if d not in axes)
    return lax.reshape(result, tuple(q_shape) + kept)


def _quantile(a, q, axis, method, keepdims, *, what: str, scale: float, skip_nan: bool,
              out=None, overwrite_input=False, weights=None, interpolation=None):
    if out is not None:
        raise unsupported(f"np.{what}(..., out=...) on traced values",
                          "assign the result instead")
    if weights is not None:
        raise unsupported(f"np.{what}(..., weights=...)")
    if interpolation is not None:
        method = interpolation
    if method not in METHODS:
        raise TransfuseValueError(with_location(
            f"{method!r} is not a valid method. Use one of: {tuple(METHODS)}"))
    a = asarray(a)
    if lax.dtype(a).kind == "c":
        raise TransfuseTypeError(with_location("a must be an array of real numbers"))
    q, weak = _check_q(q, what, scale)
    moved, axes, rest = _reduce_layout(a, axis)
    n = shape_of(moved)[-1]
    if n == 0:
        raise TransfuseIndexError(with_location(
            f"np.{what} of an empty slice (NumPy: index -1 is out of bounds for size 0)"))
    sorted_x = _sort_last(moved)
    inexact = is_inexact(lax.dtype(a))
    if skip_nan and inexact:
        count = n - np.sum(np.isnan(moved), axis=-1, keepdims=True, dtype=np.int64)
    else:
        count = n
    flat_q = lax.reshape(q, (int(np.prod(shape_of(q), dtype=np.int64)),))
    result = _quantiles_of_sorted(sorted_x, count, flat_q, method, weak)
    if inexact:
        # NumPy: NaN for a slice holding a NaN (skip_nan: a slice of NaNs only)
        empty = np.equal(count, 0) if skip_nan else np.isnan(
            lax.slice_axis(sorted_x, len(shape_of(sorted_x)) - 1, n - 1, 1))
        result = np.where(empty, np.nan, result).astype(lax.dtype(result))
    return _finish(result, shape_of(q), shape_of(a), axes, keepdims)


@implements(np.quantile)
def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
             keepdims=False, *, weights=None, interpolation=None):
    return _quantile(a, q, axis, method, keepdims, what="quantile", scale=1, skip_nan=False,
                     out=out, weights=weights, interpolation=interpolation)


@implements(np.percentile)
def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
               keepdims=False, *, weights=None, interpolation=None):
    return _quantile(a, q, axis, method, keepdims, what="percentile", scale=100,
                     skip_nan=False, out=out, weights=weights, interpolation=interpolation)


@implements(np.nanquantile)
def nanquantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                keepdims=False, *, weights=None, interpolation=None):
    return _quantile(a, q, axis, method, keepdims, what="nanquantile", scale=1, skip_nan=True,
                     out=out, weights=weights, interpolation=interpolation)


@implements(np.nanpercentile)
def nanpercentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                  keepdims=False, *, weights=None, interpolation=None):
    return _quantile(a, q, axis, method, keepdims, what="nanpercentile", scale=100,
                     skip_nan=True, out=out, weights=weights, interpolation=interpolation)


def _median(a, axis, keepdims, out, *, skip_nan: bool, what: str):
    if out is not None:
        raise unsupported(f"np.{what}(..., out=...) on traced values", "assign the result")
    a = asarray(a)
    moved, axes, rest = _reduce_layout(a, axis)
    n = shape_of(moved)[-1]
    inexact = is_inexact(lax.dtype(a))
    if n == 0:  # NumPy: the mean of an empty slice, NaN (with a warning)
        nan = np.mean(moved, axis=-1)
        return _finish(lax.expand_dims(nan, (len(rest),)), (), shape_of(a), axes, keepdims)
    sorted_x = _sort_last(moved)
    if skip_nan and inexact:
        count = n - np.sum(np.isnan(moved), axis=-1, keepdims=True, dtype=np.int64)
        lo = _take(sorted_x, (count - 1) // 2, count)
        hi = _take(sorted_x, count // 2, count)
        # NumPy: the mean of the middle one or two (a+b)/2; the single middle value as is
        mid = np.mean(lax.concatenate([lo, hi], len(rest)), axis=-1, keepdims=True)
        result = np.where(np.equal(count % 2, 1), lo, mid).astype(lax.dtype(mid))
        result = np.where(np.equal(count, 0), np.nan, result).astype(lax.dtype(mid))
    else:
        middle = lax.slice_axis(sorted_x, len(rest), (n - 1) // 2, 2 - n % 2)
        result = np.mean(middle, axis=-1, keepdims=True)
        if inexact:
            last = lax.slice_axis(sorted_x, len(rest), n - 1, 1)
            result = np.where(np.isnan(last), np.nan, result).astype(lax.dtype(result))
    return _finish(result, (), shape_of(a), axes, keepdims)


@implements(np.median)
def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    return _median(a, axis, keepdims, out, skip_nan=False, what="median")


@implements(np.nanmedian)
def nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    return _median(a, axis, keepdims, out, skip_nan=True, what="nanmedian")


__all__: Sequence[str] = ["sort", "argsort", "partition", "argpartition", "lexsort",
                          "searchsorted", "quantile", "percentile", "nanquantile",
                          "nanpercentile", "median", "nanmedian", "sort_along"]
