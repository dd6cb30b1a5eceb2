"""NumPy functions on traced values, under NumPy's names and signatures."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.core import check_dtype
from transfuse.ir.errors import ShapeError, TransfuseValueError
from transfuse.ir.source import with_location
from transfuse.ir.tracing import NUMPY_TABLE, Tracer

from ._core import (
    EXPORTS,
    any_traced,
    asarray,
    call_ufunc,
    cast_operand,
    conjugate,
    dtype_of,
    implements,
    is_traced,
    ndim_of,
    normalize_axes,
    normalize_axis,
    result_type,
    shape_of,
    to_bool,
    unsupported,
)
from ._indexing import layout_of, reshape_maybe_view, view_broadcast, view_slice, view_transpose
from ._scalars import as_arrays

_builtin_max = builtins.max


def _keep(out: Any, x_shape: tuple, axes: tuple, keepdims: bool) -> Any:
    if not keepdims:
        return out
    return lax.reshape(out, tuple(1 if i in axes else d for i, d in enumerate(x_shape)))


def _no_out(out: Any, name: str) -> None:
    if out is not None:
        raise unsupported(f"np.{name}(..., out=...) on traced values",
                          "assign the result instead: out[...] = result")


# ---------------------------------------------------------------------------------------
# Reductions


def _sum_dtype(dtype: np.dtype) -> np.dtype:
    """NumPy's default accumulator: small ints and bools sum as the platform int."""
    if dtype.kind == "b" or (dtype.kind == "i" and dtype.itemsize < 8):
        return np.dtype(np.int64)
    if dtype.kind == "u" and dtype.itemsize < 8:
        return np.dtype(np.uint64)
    return dtype


def _where_mask(where: Any, a: Any) -> Any:
    """A reduction's where= as a bool mask of a's shape; None when it keeps every element."""
    if where is None or (isinstance(where, bool) and where):
        return None
    return lax.broadcast_to(to_bool(asarray(where)), shape_of(a))


def _masked(x: Any, mask: Any, fill: Any) -> Any:
    """x with the elements outside mask replaced by the reduction's identity."""
    return x if mask is None else lax.select(mask, x, fill)


def _count(a: Any, axes: tuple, mask: Any, dtype: np.dtype) -> Any:
    """How many elements each reduction over axes sees (NumPy's _count_reduce_items)."""
    if mask is None:
        count = int(np.prod([shape_of(a)[i] for i in axes], dtype=np.int64))
        return np.asarray(count, dtype=dtype)
    return lax.reduce_sum(lax.convert(mask, dtype), axes)


def _accumulation(reducer, combine, unit: int, name: str):
    """sum and prod: accumulate in NumPy's default dtype, masked by where=, from initial."""
    def impl(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
        _no_out(out, name)
        a = asarray(a)
        axes = normalize_axes(axis, ndim_of(a))
        acc = np.dtype(dtype) if dtype is not None else _sum_dtype(a.dtype)
        r = reducer(_masked(lax.convert(a, acc), _where_mask(where, a), unit), axes)
        if initial is not None:
            r = combine(r, initial)
        return _keep(r, shape_of(a), axes, keepdims)
    impl.__name__ = name
    return impl


sum = implements(np.sum)(_accumulation(lax.reduce_sum, lax.add, 0, "sum"))
prod = implements(np.prod)(_accumulation(lax.reduce_prod, lax.mul, 1, "prod"))


def _extremum(reducer, name):
    def impl(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        _no_out(out, name)
        a = asarray(a)
        axes = normalize_axes(axis, ndim_of(a))
        if initial is not None:
            raise unsupported(f"np.{name}(..., initial=...) on traced values")
        if _where_mask(where, a) is not None:  # NumPy needs initial= with where= here
            raise unsupported(f"np.{name}(..., where=...) on traced values")
        return _keep(reducer(a, axes), shape_of(a), axes, keepdims)
    impl.__name__ = name
    return impl


max = implements(np.max)(_extremum(lax.reduce_max, "max"))
min = implements(np.min)(_extremum(lax.reduce_min, "min"))
EXPORTS["amax"] = EXPORTS["max"]
EXPORTS["amin"] = EXPORTS["min"]
NUMPY_TABLE[np.amax] = max
NUMPY_TABLE[np.amin] = min


@implements(np.any)
def any(a, axis=None, out=None, keepdims=False, where=None):
    _no_out(out, "any")
    a = to_bool(asarray(a))
    axes = normalize_axes(axis, ndim_of(a))
    if not a.size:
        return _empty_reduce(a, axes, keepdims, False)
    r = lax.reduce_max(_masked(a, _where_mask(where, a), False), axes)
    return _keep(r, shape_of(a), axes, keepdims)


@implements(np.all)
def all(a, axis=None, out=None, keepdims=False, where=None):
    _no_out(out, "all")
    a = to_bool(asarray(a))
    axes = normalize_axes(axis, ndim_of(a))
    if not a.size:
        return _empty_reduce(a, axes, keepdims, True)
    r = lax.reduce_min(_masked(a, _where_mask(where, a), True), axes)
    return _keep(r, shape_of(a), axes, keepdims)


def _empty_reduce(a, axes, keepdims, value):
    shape = tuple(1 if i in axes else d for i, d in enumerate(a.shape)) if keepdims else \
        tuple(d for i, d in enumerate(a.shape) if i not in axes)
    return lax.full(shape, value, bool)


@implements(np.mean)
def mean(a, axis=None, dtype=None, out=None, keepdims=False, where=None):
    _no_out(out, "mean")
    a = asarray(a)
    axes = normalize_axes(axis, ndim_of(a))
    acc = np.dtype(dtype) if dtype is not None else _mean_dtype(a.dtype)
    mask = _where_mask(where, a)
    total = lax.reduce_sum(_masked(lax.convert(a, acc), mask, 0), axes)
    return _keep(lax.div(total, _count(a, axes, mask, acc)), shape_of(a), axes, keepdims)


@implements(np.var)
def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, where=None, mean=None,
        correction=None):
    _no_out(out, "var")
    if correction is not None:
        ddof = correction
    a = asarray(a)
    axes = normalize_axes(axis, ndim_of(a))
    acc = np.dtype(dtype) if dtype is not None else _mean_dtype(a.dtype)
    mask = _where_mask(where, a)
    count = _count(a, axes, mask, acc)
    x = lax.convert(a, acc)
    # The same steps as NumPy's _var, so results agree to the last bit.
    if mean is None:
        mu = _keep(lax.reduce_sum(_masked(x, mask, 0), axes), shape_of(a), axes, True)
        mu = lax.div(mu, count if mask is None else _keep(count, shape_of(a), axes, True))
    else:  # the caller's mean, in the accumulator's dtype (NumPy: arr - mean)
        mu = asarray(mean, acc)
    centered = lax.sub(x, mu)
    if lax.is_complex(centered):  # |x - mu|^2 as NumPy forms it: re^2 + im^2, real
        re, im = lax.real(centered), lax.imag(centered)
        squares = lax.add(lax.mul(re, re), lax.mul(im, im))
        count = lax.real(count)
    else:
        squares = lax.mul(centered, centered)
    total = lax.reduce_sum(_masked(squares, mask, 0), axes)
    r = lax.div(total, lax.max(lax.sub(count, ddof), 0))
    return _keep(r, shape_of(a), axes, keepdims)


def _mean_dtype(dtype: np.dtype) -> np.dtype:
    """What mean and var accumulate in: floats and complex as they are, others float64."""
    return dtype if dtype.kind in "fc" else np.dtype(np.float64)


@implements(np.std)
def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, where=None, mean=None,
        correction=None):
    # At zero variance the derivative is 0, torch's subgradient (JAX: NaN).
    from ._subgradients import sqrt_zero_subgradient
    return sqrt_zero_subgradient(var(a, axis, dtype, out, ddof, keepdims, where=where,
                                     mean=mean, correction=correction))


def _arg_extremum(reducer, name):
    def impl(a, axis=None, out=None, *, keepdims=False):
        _no_out(out, name)
        a = asarray(a)
        if axis is None:
            r = reducer(lax.reshape(a, (a.size,)), 0)
            return lax.reshape(r, (1,) * a.ndim) if keepdims else r
        ax = normalize_axis(axis, a.ndim)
        return _keep(reducer(a, ax), a.shape, (ax,), keepdims)
    impl.__name__ = name
    return impl


argmax = implements(np.argmax)(_arg_extremum(lax.argmax, "argmax"))
argmin = implements(np.argmin)(_arg_extremum(lax.argmin, "argmin"))


def _scan(prim_fn, name):
    def impl(a, axis=None, dtype=None, out=None):
        _no_out(out, name)
        a = asarray(a)
        if axis is None:
            a = ravel(a)
            axis = 0
        acc = np.dtype(dtype) if dtype is not None else _sum_dtype(a.dtype)
        return prim_fn(lax.convert(a, acc), normalize_axis(axis, a.ndim))
    impl.__name__ = name
    return impl


cumsum = implements(np.cumsum)(_scan(lax.cumsum, "cumsum"))
cumprod = implements(np.cumprod)(_scan(lax.cumprod, "cumprod"))


@implements(None, name="logsumexp")
def logsumexp(a, axis=None, keepdims=False):
    """log(sum(exp(a))) along axis, computed stably (scipy.special.logsumexp)."""
    a = asarray(a)
    if not is_traced(a):
        import scipy.special
        return scipy.special.logsumexp(a, axis=axis, keepdims=keepdims)
    if a.dtype.kind != "f":
        a = lax.convert(a, np.float64)
    axes = normalize_axes(axis, a.ndim)
    m = _keep(lax.reduce_max(a, axes), a.shape, axes, True)
    m = lax.select(lax.isfinite(m), m, lax.zeros_like(m))
    s = lax.reduce_sum(lax.exp(lax.sub(a, m)), axes)
    out = lax.add(lax.log(s), lax.reshape(m, s.shape) if not keepdims else lax.reshape(
        m, tuple(d for i, d in enumerate(m.shape) if i not in axes)))
    return _keep(out, a.shape, axes, keepdims)


# ---------------------------------------------------------------------------------------
# Shapes and views


def _resolve_shape(shape: Any, size: int) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = [int(d) for d in shape]
    if shape.count(-1) > 1:
        raise ShapeError("can only specify one unknown dimension")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ShapeError(with_location(
                f"cannot reshape array of size {size} into shape {tuple(shape)}"))
        shape[shape.index(-1)] = size // known
    if int(np.prod(shape, dtype=np.int64)) != size:
        raise ShapeError(with_location(
            f"cannot reshape array of size {size} into shape {tuple(shape)}"))
    return tuple(shape)


@implements(np.reshape)
def reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    if order != "C":
        raise unsupported(f"reshape with order={order!r}")
    a = asarray(a)
    new = _resolve_shape(shape if shape is not None else newshape, a.size)
    if copy:
        return lax.reshape(lax.copy(a), new)
    return reshape_maybe_view(a, new)


def _fortran_order(a: Any, order: str) -> bool:
    """Whether ravel/flatten with `order` reads a in Fortran (column-major) index order."""
    if order not in ("C", "F", "A", "K"):
        raise TransfuseValueError(with_location(
            f"order must be one of 'C', 'F', 'A', or 'K' (got {order!r})"))
    if order in ("C", "F") or ndim_of(a) < 2:
        return order == "F"
    flags = layout_of(a).flags if is_traced(a) else np.asarray(a).flags
    if flags.c_contiguous or (order == "A" and not flags.f_contiguous):
        return False
    if flags.f_contiguous:
        return True
    raise unsupported("ravel/flatten with order='K' of a traced array that is neither C- nor "
                      "F-contiguous", "use order='C' or order='F'")


@implements(np.ravel)
def ravel(a, order="C"):
    a = asarray(a)
    if _fortran_order(a, order):
        # Fortran order reads a.T in C order: a view exactly when a is F-contiguous, as NumPy.
        return ravel(transpose(a))
    if is_traced(a) and not layout_of(a).flags.c_contiguous:
        # NumPy's ravel copies unless C-contiguous, even where reshape could be a view.
        return lax.copy(a) if a.ndim == 1 else lax.reshape(a, (a.size,))
    return reshape_maybe_view(a, (a.size,))


def flatten(a, order="C"):
    a = asarray(a)
    if _fortran_order(a, order):
        a = transpose(a)
    return lax.reshape(lax.copy(a), (a.size,))


NUMPY_TABLE["flatten"] = flatten


@implements(np.transpose)
def transpose(a, axes=None):
    a = asarray(a)
    perm = tuple(reversed(range(a.ndim))) if axes is None else tuple(
        normalize_axis(int(p), a.ndim) for p in axes)
    if sorted(perm) != list(range(a.ndim)):
        raise TransfuseValueError(with_location(
            f"axes don't match array: {tuple(perm)} is not a permutation of the "
            f"{a.ndim} axes of an array of shape {a.shape}"))
    return view_transpose(a, perm) if is_traced(a) else lax.transpose(a, perm)


NUMPY_TABLE["T"] = lambda a: transpose(a)
EXPORTS["permute_dims"] = EXPORTS["transpose"]


@implements(np.swapaxes)
def swapaxes(a, axis1, axis2):
    a = asarray(a)
    perm = list(range(a.ndim))
    i, j = normalize_axis(axis1, a.ndim), normalize_axis(axis2, a.ndim)
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(a, perm)


@implements(np.moveaxis)
def moveaxis(a, source, destination):
    a = asarray(a)
    src = normalize_axes(source if isinstance(source, (tuple, list)) else (source,), a.ndim)
    src = [normalize_axis(s, a.ndim) for s in (source if isinstance(source, (tuple, list))
                                               else (source,))]
    dst = [normalize_axis(d, a.ndim) for d in (destination if isinstance(
        destination, (tuple, list)) else (destination,))]
    order = [n for n in range(a.ndim) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(a, order)


@implements(np.squeeze)
def squeeze(a, axis=None):
    a = asarray(a)
    if axis is None:
        axes = tuple(i for i, d in enumerate(a.shape) if d == 1)
    else:
        axes = normalize_axes(axis, a.ndim)
        for ax in axes:
            if a.shape[ax] != 1:
                raise TransfuseValueError(with_location(
                    f"cannot select an axis to squeeze out which has size not equal to one "
                    f"(axis {ax} of shape {a.shape})"))
    return reshape_maybe_view(a, tuple(d for i, d in enumerate(a.shape) if i not in axes))


@implements(np.expand_dims)
def expand_dims(a, axis):
    a = asarray(a)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    nd = a.ndim + len(axes)
    axes = sorted(normalize_axis(x, nd) for x in axes)
    it = iter(a.shape)
    return reshape_maybe_view(a, tuple(1 if i in axes else next(it) for i in range(nd)))


@implements(np.atleast_1d)
def atleast_1d(*arys):
    outs = [reshape(asarray(a), (1,)) if ndim_of(a) == 0 else asarray(a) for a in arys]
    return outs[0] if len(outs) == 1 else outs


@implements(np.atleast_2d)
def atleast_2d(*arys):
    outs = []
    for a in arys:
        a = asarray(a)
        outs.append(reshape(a, (1,) * (2 - a.ndim) + a.shape) if a.ndim < 2 else a)
    return outs[0] if len(outs) == 1 else outs


@implements(np.broadcast_to)
def broadcast_to(array, shape, subok=False):
    array = asarray(array)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
    try:
        target = np.broadcast_shapes(array.shape, shape)
    except ValueError:
        raise ShapeError(with_location(
            f"operands could not be broadcast together with remapped shapes "
            f"[original->remapped]: {array.shape} and requested shape {shape}")) from None
    if target != shape:
        raise ShapeError(with_location(f"cannot broadcast {array.shape} to {shape}"))
    return view_broadcast(array, shape)


@implements(np.broadcast_arrays)
def broadcast_arrays(*args, subok=False):
    shape = np.broadcast_shapes(*[shape_of(a) for a in args])
    return tuple(broadcast_to(a, shape) for a in args)


def _promote_all(arrays: Sequence[Any], dtype=None) -> list[Any]:
    dt = np.dtype(dtype) if dtype is not None else result_type(*arrays)
    return [cast_operand(asarray(a), dt) for a in arrays]


@implements(np.concatenate)
def concatenate(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    _no_out(out, "concatenate")
    arrays = _promote_all(arrays, dtype)
    if axis is None:
        arrays = [ravel(a) for a in arrays]
        axis = 0
    ax = normalize_axis(axis, ndim_of(arrays[0]))
    if len(arrays) == 1:
        return lax.copy(arrays[0])
    return lax.concatenate(arrays, ax)


EXPORTS["concat"] = EXPORTS["concatenate"]


@implements(np.stack)
def stack(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    _no_out(out, "stack")
    arrays = _promote_all(list(arrays), dtype)
    shapes = {shape_of(a) for a in arrays}
    if len(shapes) != 1:
        raise ShapeError(with_location("all input arrays must have the same shape"))
    ax = normalize_axis(axis, ndim_of(arrays[0]) + 1)
    expanded = [lax.expand_dims(a, (ax,)) for a in arrays]
    return expanded[0] if len(expanded) == 1 else lax.concatenate(expanded, ax)


@implements(np.vstack)
def vstack(tup, *, dtype=None, casting="same_kind"):
    return concatenate([atleast_2d(a) for a in tup], 0, dtype=dtype)


@implements(np.hstack)
def hstack(tup, *, dtype=None, casting="same_kind"):
    arrs = [atleast_1d(a) for a in tup]
    return concatenate(arrs, 0 if ndim_of(arrs[0]) == 1 else 1, dtype=dtype)


@implements(np.column_stack)
def column_stack(tup):
    cols = [reshape(asarray(a), (-1, 1)) if ndim_of(a) < 2 else asarray(a) for a in tup]
    return concatenate(cols, 1)


def _split_points(n: int, indices_or_sections: Any, strict: bool) -> list[int]:
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if strict and n % k:
            raise TransfuseValueError(with_location(
                "array split does not result in an equal division"))
        base, extra = divmod(n, k)
        sizes = [base + 1] * extra + [base] * (k - extra)
        return list(np.cumsum([0] + sizes))
    return [0] + [builtins.min(builtins.max(int(i), 0), n) for i in indices_or_sections] + [n]


def _split(ary, indices_or_sections, axis, strict):
    ary = asarray(ary)
    ax = normalize_axis(axis, ary.ndim)
    points = _split_points(ary.shape[ax], indices_or_sections, strict)
    outs = []
    for lo, hi in zip(points[:-1], points[1:]):
        starts = [0] * ary.ndim
        sizes = list(ary.shape)
        starts[ax], sizes[ax] = (lo if hi > lo else 0), builtins.max(hi - lo, 0)
        outs.append(view_slice(ary, starts, [1] * ary.ndim, sizes))
    return outs


@implements(np.split)
def split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, True)


@implements(np.array_split)
def array_split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, False)


@implements(np.flip)
def flip(m, axis=None):
    m = asarray(m)
    axes = normalize_axes(axis, m.ndim)
    starts = [d - 1 if (i in axes and d) else 0 for i, d in enumerate(m.shape)]
    steps = [-1 if i in axes else 1 for i in range(m.ndim)]
    if is_traced(m):
        return view_slice(m, starts, steps, list(m.shape))
    return lax.slice(m, starts, steps, list(m.shape))


@implements(np.fliplr)
def fliplr(m):
    return flip(m, 1)


@implements(np.flipud)
def flipud(m):
    return flip(m, 0)


@implements(np.roll)
def roll(a, shift, axis=None):
    a = asarray(a)
    if axis is None:
        return reshape(roll(ravel(a), shift, 0), a.shape)
    shifts = shift if isinstance(shift, (tuple, list)) else (shift,)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = a
    for s, ax in zip(shifts, axes):
        ax = normalize_axis(ax, a.ndim)
        n = a.shape[ax]
        if n == 0:
            continue
        s = int(s) % n
        if s:
            out = lax.concatenate([lax.slice_axis(out, ax, n - s, s),
                                   lax.slice_axis(out, ax, 0, n - s)], ax)
    return out if out is not a else lax.copy(a)


@implements(np.repeat)
def repeat(a, repeats, axis=None):
    a = asarray(a)
    if axis is None:
        a, axis = ravel(a), 0
    ax = normalize_axis(axis, a.ndim)
    idx = np.repeat(np.arange(a.shape[ax]), repeats)
    return lax.gather(a, idx, ax)


@implements(np.tile)
def tile(A, reps):
    A = asarray(A)
    reps = (reps,) if isinstance(reps, (int, np.integer)) else tuple(reps)
    nd = builtins.max(A.ndim, len(reps))
    shape = (1,) * (nd - A.ndim) + A.shape
    reps = (1,) * (nd - len(reps)) + reps
    x = lax.reshape(A, builtins.sum(((1, d) for d in shape), ()))
    big = lax.broadcast_to(x, builtins.sum(((r, d) for r, d in zip(reps, shape)), ()))
    return lax.reshape(big, tuple(r * d for r, d in zip(reps, shape)))


@implements(np.pad)
def pad(array, pad_width, mode="constant", **kwargs):
    if mode != "constant":
        raise unsupported(f"np.pad with mode={mode!r}", "only mode='constant' traces")
    array = asarray(array)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (array.ndim, 2))
    value = kwargs.get("constant_values", 0)
    if np.ndim(value) != 0:
        raise unsupported("np.pad with per-axis constant_values")
    config = [(int(lo), int(hi), 0) for lo, hi in widths]
    return lax.pad(array, np.asarray(value, dtype=array.dtype), config)


@implements(np.diagonal)
def diagonal(a, offset=0, axis1=0, axis2=1):
    a = asarray(a)
    ax1, ax2 = normalize_axis(axis1, a.ndim), normalize_axis(axis2, a.ndim)
    rest = [i for i in range(a.ndim) if i not in (ax1, ax2)]
    moved = lax.transpose(a, rest + [ax1, ax2])
    n, m = a.shape[ax1], a.shape[ax2]
    rows = np.arange(builtins.max(0, -offset), n)
    cols = rows + offset
    keep = cols < m
    rows, cols = rows[keep], cols[keep]
    merged = lax.reshape(moved, tuple(a.shape[i] for i in rest) + (n * m,))
    return lax.gather(merged, (rows * m + cols).astype(np.int64), len(rest))


@implements(np.trace)
def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    _no_out(out, "trace")
    return sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


@implements(np.diag)
def diag(v, k=0):
    v = asarray(v)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise TransfuseValueError(with_location("Input must be 1- or 2-d."))
    n = v.shape[0] + abs(k)
    rows = np.arange(v.shape[0]) + builtins.max(0, -k)
    cols = rows + k
    flat = lax.full((n * n,), 0, v.dtype)
    flat = lax.scatter(flat, (rows * n + cols).astype(np.int64), v, 0)
    return lax.reshape(flat, (n, n))


def _tri_mask(n: int, m: int, k: int) -> np.ndarray:
    return np.tri(n, m, k, dtype=bool)


@implements(np.tril)
def tril(m, k=0):
    m = asarray(m)
    mask = _tri_mask(m.shape[-2], m.shape[-1], k)
    return lax.select(mask, m, np.zeros((), m.dtype))


@implements(np.triu)
def triu(m, k=0):
    m = asarray(m)
    mask = ~_tri_mask(m.shape[-2], m.shape[-1], k - 1)
    return lax.select(mask, m, np.zeros((), m.dtype))


# ---------------------------------------------------------------------------------------
# Elementwise helpers that are not ufuncs


@implements(np.where)
def where(condition, x=None, y=None, *, size=None, fill_value=None):
    if x is None and y is None:  # nonzero(condition); size= as in JAX
        from ._data_shapes import where_one_argument
        return where_one_argument(condition, size=size, fill_value=fill_value)
    dt = result_type(x, y)
    return lax.select(to_bool(asarray(condition)), cast_operand(x, dt), cast_operand(y, dt))


@implements(np.clip)
def clip(a, a_min=None, a_max=None, out=None, **kwargs):
    a_min = kwargs.pop("min", a_min)
    a_max = kwargs.pop("max", a_max)
    _no_out(out, "clip")
    if a_min is None and a_max is None:
        raise TransfuseValueError(with_location("One of max or min must be given"))
    if a_min is None:
        return call_ufunc(np.minimum, a, a_max)
    if a_max is None:
        return call_ufunc(np.maximum, a, a_min)
    dt = result_type(a, a_min, a_max)
    return lax.clip(*(cast_operand(v, dt) for v in (a, a_min, a_max)))


@implements(np.round)
def round(a, decimals=0, out=None):
    _no_out(out, "round")
    a = asarray(a)
    if a.dtype.kind in "iub":
        return lax.copy(a)
    if a.dtype.kind == "c":  # NumPy rounds the parts
        return lax.complex(round(lax.real(a), decimals), round(lax.imag(a), decimals))
    if decimals == 0:
        return lax.round(a)
    scale = np.asarray(10.0 ** decimals, dtype=a.dtype)
    return lax.div(lax.round(lax.mul(a, scale)), scale)


EXPORTS["around"] = EXPORTS["round"]
NUMPY_TABLE[np.around] = round  # NumPy 2's np.around dispatches as itself


@implements(np.nan_to_num)
def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    x = asarray(x)
    if x.dtype.kind != "f":
        return lax.copy(x)
    info = np.finfo(x.dtype)
    posinf = info.max if posinf is None else posinf
    neginf = info.min if neginf is None else neginf
    x = lax.select(lax.isnan(x), np.asarray(nan, x.dtype), x)
    x = lax.select(lax.eq(x, np.inf), np.asarray(posinf, x.dtype), x)
    return lax.select(lax.eq(x, -np.inf), np.asarray(neginf, x.dtype), x)


@implements(np.isclose)
def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    dt = result_type(a, b, 1.0)
    a, b = cast_operand(a, dt), cast_operand(b, dt)
    close = lax.le(lax.abs(lax.sub(a, b)), lax.add(atol, lax.mul(rtol, lax.abs(b))))
    close = lax.bitwise_or(close, lax.eq(a, b))
    if equal_nan:
        close = lax.bitwise_or(close, lax.bitwise_and(lax.isnan(a), lax.isnan(b)))
    return close


@implements(np.diff)
def diff(a, n=1, axis=-1):
    a = asarray(a)
    ax = normalize_axis(axis, a.ndim)
    for _ in range(n):
        k = a.shape[ax]
        hi = lax.slice_axis(a, ax, 1 if k > 1 else 0, builtins.max(k - 1, 0))
        lo = lax.slice_axis(a, ax, 0, builtins.max(k - 1, 0))
        a = call_ufunc(np.not_equal if a.dtype == np.bool_ else np.subtract, hi, lo)
    return a


@implements(np.real)
def real(val):
    val = asarray(val)
    return lax.real(val) if lax.is_complex(val) else val


@implements(np.imag)
def imag(val):
    val = asarray(val)
    return lax.imag(val) if lax.is_complex(val) else lax.zeros_like(val)


@implements(np.conj)
def conj(x):
    return conjugate(x)


@implements(np.angle)
def angle(z, deg=False):
    z = asarray(z)
    if z.dtype.kind != "c":
        z = cast_operand(z, result_type(z, 1.0))  # NumPy: angle of a real array is float
        im, re = lax.zeros_like(z), z
    else:
        im, re = lax.imag(z), lax.real(z)
    out = lax.arctan2(im, re)
    return lax.mul(out, 180 / np.pi) if deg else out


@implements(np.iscomplexobj)
def iscomplexobj(x):
    return dtype_of(x).kind == "c"


@implements(np.isrealobj)
def isrealobj(x):
    return dtype_of(x).kind != "c"


def astype(x, dtype, copy=True):
    dtype = check_dtype(dtype)
    if x.dtype == dtype and not copy:
        return x
    from transfuse.ir.primitives import PRIMITIVES
    from transfuse.ir.tracing import bind
    return bind(PRIMITIVES["cast"], x, dtype=dtype)  # keeps x's memory order, as astype


NUMPY_TABLE["astype"] = astype


@implements(None, name="astype")
def astype_fn(x, dtype, /, *, copy=True):
    """x as dtype (the array-API function)."""
    if not is_traced(x):
        return np.asarray(x).astype(dtype, copy=copy)
    return astype(x, dtype, copy)


@implements(np.copy)
def copy(a, order="K", subok=False):
    a = asarray(a)
    if order == "K" and is_traced(a):
        # A same-dtype cast is elementwise: its result keeps a's memory order, as np.copy.
        from transfuse.ir.primitives import PRIMITIVES
        from transfuse.ir.tracing import bind
        return bind(PRIMITIVES["cast"], a, dtype=a.dtype)
    return lax.copy(a)


@implements(np.shape)
def shape(a):
    return shape_of(a)


@implements(np.ndim)
def ndim(a):
    return ndim_of(a)


@implements(np.size)
def size(a, axis=None):
    s = shape_of(a)
    return int(np.prod(s, dtype=np.int64)) if axis is None else s[axis]


@implements(np.result_type)
def result_type_fn(*arrays_and_dtypes):
    return result_type(*arrays_and_dtypes)



# ---------------------------------------------------------------------------------------
# Contractions


def _promote_pair(a, b):
    dt = result_type(a, b)
    return cast_operand(asarray(a), dt), cast_operand(asarray(b), dt)


@implements(np.matmul)
def matmul(x1, x2, out=None, **kwargs):
    _no_out(out, "matmul")
    a, b = _promote_pair(x1, x2)
    if a.ndim == 0 or b.ndim == 0:
        raise TransfuseValueError(with_location(
            "matmul: Input operand does not have enough dimensions"))
    if b.ndim == 1:
        _check_contract(a.shape[-1], b.shape[0], a.shape, b.shape)
        return lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())))
    if a.ndim == 1:
        _check_contract(a.shape[0], b.shape[-2], a.shape, b.shape)
        return lax.dot_general(a, b, (((0,), (b.ndim - 2,)), ((), ())))
    _check_contract(a.shape[-1], b.shape[-2], a.shape, b.shape)
    if b.ndim == 2:
        return lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())))
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = lax.broadcast_to(a, batch + a.shape[-2:])
    b = lax.broadcast_to(b, batch + b.shape[-2:])
    nb = len(batch)
    return lax.dot_general(a, b, (((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb)))))


def _check_contract(n: int, m: int, ashape, bshape) -> None:
    if n != m:
        raise ShapeError(with_location(
            f"matmul: Input operand 1 has a mismatch in its core dimension 0 (size {m} is "
            f"different from {n}); shapes {ashape} and {bshape}"))


@implements(np.dot)
def dot(a, b, out=None):
    _no_out(out, "dot")
    a, b = _promote_pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return call_ufunc(np.multiply, a, b)
    if b.ndim == 1 or b.ndim == 2 or a.ndim == 1:
        return matmul(a, b)
    _check_contract(a.shape[-1], b.shape[-2], a.shape, b.shape)
    return lax.dot_general(a, b, (((a.ndim - 1,), (b.ndim - 2,)), ((), ())))


@implements(np.vdot)
def vdot(a, b):
    a = ravel(asarray(a))
    return dot(lax.conj(a) if lax.is_complex(a) else a, ravel(asarray(b)))  # conj(a) . b


@implements(np.inner)
def inner(a, b):
    a, b = _promote_pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return call_ufunc(np.multiply, a, b)
    return lax.dot_general(a, b, (((a.ndim - 1,), (b.ndim - 1,)), ((), ())))


@implements(np.outer)
def outer(a, b, out=None):
    _no_out(out, "outer")
    a, b = _promote_pair(ravel(asarray(a)), ravel(asarray(b)))
    return lax.dot_general(a, b, (((), ()), ((), ())))


@implements(np.tensordot)
def tensordot(a, b, axes=2):
    a, b = _promote_pair(a, b)
    if isinstance(axes, (int, np.integer)):
        k = int(axes)
        ca, cb = tuple(range(a.ndim - k, a.ndim)), tuple(range(k))
    else:
        ca, cb = axes
        ca = tuple(normalize_axis(x, a.ndim) for x in np.atleast_1d(ca))
        cb = tuple(normalize_axis(x, b.ndim) for x in np.atleast_1d(cb))
    return lax.dot_general(a, b, ((ca, cb), ((), ())))


@implements(np.kron)
def kron(a, b):
    a, b = _promote_pair(a, b)
    nd = builtins.max(a.ndim, b.ndim)
    a = lax.reshape(a, (1,) * (nd - a.ndim) + a.shape)
    b = lax.reshape(b, (1,) * (nd - b.ndim) + b.shape)
    prod_ = lax.dot_general(a, b, (((), ()), ((), ())))  # a dims then b dims
    perm = [p for i in range(nd) for p in (i, nd + i)]
    return lax.reshape(lax.transpose(prod_, perm), tuple(x * y for x, y in zip(a.shape,
                                                                               b.shape)))


# ---------------------------------------------------------------------------------------
# Gathering


@implements(np.take)
def take(a, indices, axis=None, out=None, mode=None):
    _no_out(out, "take")
    a = asarray(a)
    if axis is None:
        a, axis = ravel(a), 0
    ax = normalize_axis(axis, a.ndim)
    from ._indexing import _index_array
    n = a.shape[ax]
    if mode in ("wrap", "clip") and n:
        # Into range first, as NumPy: wrap is Python's modulo, clip sends negatives to 0.
        indices = asarray(indices)
        if indices.dtype.kind in "iu":
            indices = (call_ufunc(np.mod, indices, n) if mode == "wrap"
                       else lax.clip(indices, 0, n - 1))
    elif mode not in (None, "raise", "wrap", "clip"):
        raise TransfuseValueError(with_location(
            f"clipmode must be one of 'clip', 'raise', or 'wrap' (got {mode!r})"))
    return lax.gather(a, _index_array(indices, n, ax), ax)


@implements(np.take_along_axis)
def take_along_axis(arr, indices, axis=-1):
    arr = asarray(arr)
    if axis is None:  # NumPy: 1-d indices into the flattened array
        arr, axis = ravel(arr), 0
    ax = normalize_axis(axis, arr.ndim)
    from ._indexing import _index_array
    idx = _index_array(indices, arr.shape[ax], ax)
    shape = np.broadcast_shapes(shape_of(idx)[:ax] + (1,) + shape_of(idx)[ax + 1:],
                                arr.shape[:ax] + (1,) + arr.shape[ax + 1:])
    shape = shape[:ax] + (shape_of(idx)[ax],) + shape[ax + 1:]
    idx = lax.broadcast_to(idx, shape)
    arr = lax.broadcast_to(arr, shape[:ax] + (arr.shape[ax],) + shape[ax + 1:])
    # Flatten to one gather: position = row-major offset of (other dims, idx).
    ashape = shape_of(arr)
    strides = np.array([int(np.prod(ashape[i + 1:], dtype=np.int64)) for i in range(len(
        ashape))], dtype=np.int64)
    flat = None
    for d in range(len(shape)):
        term = idx if d == ax else lax.iota(np.int64, shape, d)
        if strides[d] != 1:
            term = lax.mul(term, int(strides[d]))
        flat = term if flat is None else lax.add(flat, term)
    return lax.gather(lax.reshape(arr, (int(np.prod(ashape, dtype=np.int64)),)), flat, 0)


# ---------------------------------------------------------------------------------------
# Creation


def _shape_arg(shape: Any) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in
                                                                           shape)


def _creation_dtype(dtype: Any, default=np.float64) -> np.dtype:
    return check_dtype(default if dtype is None else dtype)


@implements(np.zeros, creation=True)
def zeros(shape, dtype=float, order="C", *, like=None):
    return lax.full(_shape_arg(shape), 0, _creation_dtype(dtype))


@implements(np.ones, creation=True)
def ones(shape, dtype=None, order="C", *, like=None):
    return lax.full(_shape_arg(shape), 1, _creation_dtype(dtype))


@implements(np.empty, creation=True)
def empty(shape, dtype=float, order="C", *, like=None):
    return lax.full(_shape_arg(shape), 0, _creation_dtype(dtype))


@implements(np.full, creation=True)
def full(shape, fill_value, dtype=None, order="C", *, like=None):
    dt = check_dtype(dtype if dtype is not None else result_type(fill_value))
    return lax.full(_shape_arg(shape), fill_value if not is_traced(fill_value) else
                    asarray(fill_value), dt)


def _like(value):
    def impl(a, dtype=None, order="K", subok=True, shape=None, **kwargs):
        a_shape = shape_of(a) if shape is None else _shape_arg(shape)
        dt = check_dtype(dtype if dtype is not None else np.result_type(
            a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype))
        return lax.full(a_shape, value, dt)
    return impl


zeros_like = implements(np.zeros_like, creation=True)(_like(0))
ones_like = implements(np.ones_like, creation=True)(_like(1))
empty_like = implements(np.empty_like, creation=True)(_like(0))


@implements(np.full_like, creation=True)
def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    a_shape = shape_of(a) if shape is None else _shape_arg(shape)
    dt = check_dtype(dtype if dtype is not None else a.dtype)
    return full(a_shape, fill_value, dt)


@implements(np.arange, creation=True)
def arange(start, stop=None, step=1, dtype=None, *, like=None):
    if stop is None:
        start, stop = 0, start
    if any_traced([start, stop, step]):
        raise unsupported("np.arange with traced bounds (its length would depend on data)")
    ref = np.arange(start, stop, step, dtype=dtype)
    dt = check_dtype(ref.dtype)
    if dt.kind in "iu":
        return lax.add(lax.iota(dt, (ref.size,)), np.asarray(start, dt)) if step == 1 else \
            lax.add(lax.mul(lax.iota(dt, (ref.size,)), np.asarray(step, dt)),
                    np.asarray(start, dt))
    i = lax.iota(np.float64, (ref.size,))
    return lax.convert(lax.add(lax.mul(i, float(step)), float(start)), dt)


@implements(np.linspace, creation=True)
def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    # Python scalars stay weak (NEP 50): linspace(float32 array, 2) is float32, as NumPy.
    start, stop = (x if type(x) in (int, float) else asarray(x) for x in (start, stop))
    dt = result_type(start, stop)
    dt = dt if dt.kind == "f" else np.dtype(np.float64)
    div = (num - 1) if endpoint else num
    delta = call_ufunc(np.subtract, stop, start)
    # As NumPy: the sample axis first, in front of the endpoints' (broadcast) shape.
    y = lax.iota(dt, (num,) + (1,) * ndim_of(delta), 0)
    # With div == 0 (one sample and endpoint, or none) the step is undefined: y * delta.
    step = call_ufunc(np.true_divide, delta, div) if div > 0 else np.nan
    y = call_ufunc(np.add, call_ufunc(np.multiply, y, step if div > 0 else delta), start)
    if endpoint and num > 1:
        last = lax.broadcast_to(cast_operand(asarray(stop), dt), (1,) + shape_of(y)[1:])
        y = lax.concatenate([lax.slice_axis(y, 0, 0, num - 1), last], 0)
    if axis != 0:
        y = moveaxis(y, 0, axis)
    if dtype is not None:
        if np.dtype(dtype).kind in "iu":
            y = call_ufunc(np.floor, y)
        y = lax.convert(y, dtype)
    return (y, step) if retstep else y


@implements(np.eye, creation=True)
def eye(N, M=None, k=0, dtype=float, order="C", *, like=None):
    M = N if M is None else M
    dt = check_dtype(dtype)
    mask = lax.eq(lax.add(lax.iota(np.int64, (N, M), 0), k), lax.iota(np.int64, (N, M), 1))
    return lax.convert(mask, dt)


@implements(np.identity, creation=True)
def identity(n, dtype=None, *, like=None):
    return eye(n, dtype=float if dtype is None else dtype)


@implements(np.tri, creation=True)
def tri(N, M=None, k=0, dtype=float, *, like=None):
    M = N if M is None else M
    mask = lax.ge(lax.add(lax.iota(np.int64, (N, M), 0), k), lax.iota(np.int64, (N, M), 1))
    return lax.convert(mask, check_dtype(dtype))


@implements(np.meshgrid)
def meshgrid(*xi, copy=True, sparse=False, indexing="xy"):
    xs = [ravel(asarray(x)) for x in xi]
    shape = [shape_of(x)[0] for x in xs]
    if indexing == "xy" and len(xs) >= 2:
        shape[0], shape[1] = shape[1], shape[0]
    outs = []
    for i, x in enumerate(xs):
        dim = i
        if indexing == "xy" and len(xs) >= 2 and i < 2:
            dim = 1 - i
        if sparse:  # 1 along every other axis, as NumPy
            outs.append(lax.reshape(x, tuple(n if d == dim else 1 for d, n in
                                             enumerate(shape))))
        else:
            outs.append(lax.broadcast_in_dim(x, shape, (dim,)))
    return outs


def array(obj, dtype=None, copy=True, order="K", ndmin=0, **kwargs):
    """np.array that also stacks lists of traced values."""
    if not any_traced([obj]) and not (isinstance(obj, (list, tuple)) and _nested_traced(obj)):
        return np.array(obj, dtype=dtype, copy=copy, ndmin=ndmin)
    x = _build_nested(obj)
    x = x if dtype is None else lax.convert(x, dtype)
    if copy and is_traced(obj):
        x = lax.copy(x)
    if ndmin > ndim_of(x):
        x = lax.reshape(x, (1,) * (ndmin - ndim_of(x)) + shape_of(x))
    return x


def _nested_traced(obj) -> bool:
    if isinstance(obj, Tracer):
        return True
    if isinstance(obj, (list, tuple)):
        return builtins.any(_nested_traced(o) for o in obj)
    return False


def _build_nested(obj):
    if isinstance(obj, (list, tuple)):
        return stack([_build_nested(o) for o in obj])
    return asarray(obj)


def asarray_fn(a, dtype=None, order=None, **kwargs):
    """np.asarray that keeps traced values traced (and stacks lists of them)."""
    if _nested_traced(a):
        x = _build_nested(a)
        # A NumPy scalar becomes a new 0-d array (writes into it leave the scalar alone).
        return as_arrays(x if dtype is None else lax.convert(x, dtype))
    return np.asarray(a, dtype=dtype)


EXPORTS["array"] = array
EXPORTS["asarray"] = asarray_fn
EXPORTS["asanyarray"] = asarray_fn
EXPORTS["ascontiguousarray"] = asarray_fn


