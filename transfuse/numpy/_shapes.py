"""Shape and index functions (cross, rot90, select, choose, ...), written with others.

Each is NumPy's own algorithm on traced values; integer results that depend only on
shapes (tril_indices, diag_indices) are NumPy's arrays. Index checks NumPy makes on the
data (choose's mode='raise', unravel_index) go through a gather, whose bounds check raises
when the graph runs, so they hold under jit too.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.concrete import concrete_value
from transfuse.ir.errors import TransfuseAxisError, TransfuseTypeError, TransfuseValueError
from transfuse.ir.source import with_location

from . import _functions as F
from ._core import (
    EXPORTS,
    asarray,
    call_ufunc,
    cast_operand,
    dtype_of,
    implements,
    ndim_of,
    normalize_axis,
    result_type,
    shape_of,
    to_bool,
)


def _component(x: Any, i: int) -> Any:
    """x[..., i] (last axis)."""
    return lax.squeeze(lax.slice_axis(x, ndim_of(x) - 1, i, 1), (ndim_of(x) - 1,))


# ---------------------------------------------------------------------------------------
# Rearranging


@implements(np.cross)
def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    if axis is not None:
        axisa = axisb = axisc = axis
    dt = result_type(a, b)
    a, b = (cast_operand(asarray(x), dt) for x in (a, b))
    a = F.moveaxis(a, normalize_axis(axisa, ndim_of(a)), -1)
    b = F.moveaxis(b, normalize_axis(axisb, ndim_of(b)), -1)
    na, nb = shape_of(a)[-1], shape_of(b)[-1]
    if na not in (2, 3) or nb not in (2, 3):
        raise TransfuseValueError(with_location(
            "incompatible dimensions for cross product (dimension must be 2 or 3)"))
    a_parts = [_component(a, i) for i in range(na)]
    b_parts = [_component(b, i) for i in range(nb)]

    def mul(x, y):
        return call_ufunc(np.multiply, x, y)

    def sub(x, y):
        return call_ufunc(np.subtract, x, y)

    z_part = sub(mul(a_parts[0], b_parts[1]), mul(a_parts[1], b_parts[0]))
    if na == nb == 2:
        return z_part
    if na == 2:  # the missing z component is 0
        x_part = mul(a_parts[1], b_parts[2])
        y_part = call_ufunc(np.negative, mul(a_parts[0], b_parts[2]))
    elif nb == 2:
        x_part = call_ufunc(np.negative, mul(a_parts[2], b_parts[1]))
        y_part = mul(a_parts[2], b_parts[0])
    else:
        x_part = sub(mul(a_parts[1], b_parts[2]), mul(a_parts[2], b_parts[1]))
        y_part = sub(mul(a_parts[2], b_parts[0]), mul(a_parts[0], b_parts[2]))
    out = F.stack(list(F.broadcast_arrays(x_part, y_part, z_part)), axis=-1)
    return F.moveaxis(out, -1, normalize_axis(axisc, ndim_of(out)))


@implements(np.rot90)
def rot90(m, k=1, axes=(0, 1)):
    m = asarray(m)
    axes = tuple(axes)
    if len(axes) != 2:
        raise TransfuseValueError(with_location("len(axes) must be 2."))
    nd = ndim_of(m)
    if axes[0] == axes[1] or abs(axes[0] - axes[1]) == nd:
        raise TransfuseValueError(with_location("Axes must be different."))
    if not (-nd <= axes[0] < nd and -nd <= axes[1] < nd):
        raise TransfuseValueError(with_location(
            f"Axes={axes} out of range for array of ndim={nd}."))
    k %= 4
    if k == 0:
        return F.copy(m)  # NumPy returns m[:], a view; a copy reads the same
    if k == 2:
        return F.flip(F.flip(m, axes[0]), axes[1])
    order = list(range(nd))
    order[axes[0]], order[axes[1]] = order[axes[1]], order[axes[0]]
    if k == 1:
        return F.transpose(F.flip(m, axes[1]), order)
    return F.flip(F.transpose(m, order), axes[1])


@implements(np.rollaxis)
def rollaxis(a, axis, start=0):
    a = asarray(a)
    n = ndim_of(a)
    axis = normalize_axis(axis, n)
    if start < 0:
        start += n
    if not 0 <= start < n + 1:
        raise TransfuseAxisError(with_location(
            f"'start' arg requires {-n} <= start < {n + 1}, but {start} was passed in"))
    if axis < start:
        start -= 1
    if axis == start:
        return a
    order = list(range(n))
    order.remove(axis)
    order.insert(start, axis)
    return F.transpose(a, order)


@implements(np.append)
def append(arr, values, axis=None):
    if axis is None:
        return F.concatenate([F.ravel(asarray(arr)), F.ravel(asarray(values))], axis=0)
    return F.concatenate([arr, values], axis=axis)


@implements(np.atleast_3d)
def atleast_3d(*arys):
    outs = []
    for a in arys:
        a = asarray(a)
        shape = shape_of(a)
        if len(shape) == 0:
            a = F.reshape(a, (1, 1, 1))
        elif len(shape) == 1:
            a = F.reshape(a, (1, shape[0], 1))
        elif len(shape) == 2:
            a = F.reshape(a, shape + (1,))
        outs.append(a)
    return outs[0] if len(outs) == 1 else tuple(outs)


@implements(np.dstack)
def dstack(tup):
    arrays = atleast_3d(*tup)
    arrays = [arrays] if not isinstance(arrays, tuple) else list(arrays)
    return F.concatenate(arrays, axis=2)


def _split_along(name: str, min_ndim: int, axis_of: Callable[[int], int]) -> Callable:
    def impl(ary, indices_or_sections):
        nd = ndim_of(ary)
        if nd < min_ndim:
            what = ("1 or more" if min_ndim == 1 else f"{min_ndim} or more")
            raise TransfuseValueError(with_location(
                f"{name} only works on arrays of {what} dimensions"))
        return F.split(ary, indices_or_sections, axis_of(nd))
    impl.__name__ = name
    return impl


implements(np.hsplit)(_split_along("hsplit", 1, lambda nd: 1 if nd > 1 else 0))
implements(np.vsplit)(_split_along("vsplit", 2, lambda nd: 0))
implements(np.dsplit)(_split_along("dsplit", 3, lambda nd: 2))


@implements(np.resize)
def resize(a, new_shape):
    new_shape = (int(new_shape),) if isinstance(new_shape, (int, np.integer)) else tuple(
        int(d) for d in new_shape)
    if builtins.any(d < 0 for d in new_shape):
        raise TransfuseValueError(with_location(
            "all elements of `new_shape` must be non-negative"))
    flat = F.ravel(asarray(a))
    size = shape_of(flat)[0]
    new_size = math.prod(new_shape)
    if size == 0 or new_size == 0:
        return lax.full(new_shape, 0, dtype_of(flat))
    repeats = -(-new_size // size)
    whole = F.concatenate([flat] * repeats, axis=0) if repeats > 1 else flat
    return F.reshape(lax.slice_axis(whole, 0, 0, new_size), new_shape)


@implements(np.diagflat)
def diagflat(v, k=0):
    return F.diag(F.ravel(asarray(v)), k)


@implements(np.diag_indices_from)
def diag_indices_from(arr):
    shape = shape_of(arr)
    if len(shape) < 2:
        raise TransfuseValueError(with_location("input array must be at least 2-d"))
    if len(set(shape)) != 1:
        raise TransfuseValueError(with_location("All dimensions of input must be of equal "
                                                "length"))
    return np.diag_indices(shape[0], len(shape))


def _tri_indices_from(name: str, upper: bool) -> Callable:
    def impl(arr, k=0):
        shape = shape_of(arr)
        if len(shape) != 2:
            raise TransfuseValueError(with_location("input array must be 2-d"))
        make = np.triu_indices if upper else np.tril_indices
        return make(shape[-2], k=k, m=shape[-1])
    impl.__name__ = name
    return impl


implements(np.tril_indices_from)(_tri_indices_from("tril_indices_from", False))
implements(np.triu_indices_from)(_tri_indices_from("triu_indices_from", True))
# Of shapes alone: NumPy's own arrays.
for _f in (np.diag_indices, np.tril_indices, np.triu_indices, np.indices):
    EXPORTS.setdefault(_f.__name__, _f)


# ---------------------------------------------------------------------------------------
# Choosing between values


@implements(np.select)
def select(condlist, choicelist, default=0):
    if len(condlist) != len(choicelist):
        raise TransfuseValueError(with_location(
            "list of cases must be same length as list of conditions"))
    if len(condlist) == 0:
        raise TransfuseValueError(with_location(
            "select with an empty condition list is not possible"))
    for i, cond in enumerate(condlist):
        if dtype_of(cond) != np.bool_:
            raise TransfuseTypeError(with_location(
                f"invalid entry {i} in condlist: should be boolean ndarray"))
    dt = result_type(*choicelist, default)
    out = cast_operand(asarray(default), dt)
    # The first true condition wins: apply them from the last to the first.
    for cond, choice in zip(reversed(condlist), reversed(choicelist)):
        out = lax.select(asarray(cond), cast_operand(asarray(choice), dt), out)
    shape = np.broadcast_shapes(*(shape_of(c) for c in condlist),
                                *(shape_of(c) for c in choicelist), shape_of(default))
    return lax.broadcast_to(out, shape)


@implements(np.choose)
def choose(a, choices, out=None, mode="raise"):
    if out is not None:
        raise TransfuseValueError(with_location("np.choose: out= is not supported on traced "
                                                "values; use the returned array"))
    if mode not in ("raise", "wrap", "clip"):
        raise TransfuseValueError(with_location(
            f"clipmode must be one of 'clip', 'raise', or 'wrap' (got {mode!r})"))
    choices = list(choices) if isinstance(choices, (list, tuple)) else [
        c for c in asarray(choices)]
    n = len(choices)
    a = asarray(a)
    if dtype_of(a).kind not in "iu":
        raise TransfuseTypeError(with_location(
            f"np.choose: the index array must be of integer type, got {dtype_of(a)}"))
    dt = result_type(*choices)
    shape = tuple(np.broadcast_shapes(shape_of(a), *(shape_of(c) for c in choices)))
    stacked = F.stack([lax.broadcast_to(cast_operand(asarray(c), dt), shape) for c in choices])
    index = lax.convert(lax.broadcast_to(a, shape), np.int64)
    if mode == "wrap":
        index = call_ufunc(np.mod, index, n)
    elif mode == "clip":
        index = lax.clip(index, 0, n - 1)
    elif isinstance(a, np.ndarray) and a.size and (a.min() < 0 or a.max() >= n):
        raise TransfuseValueError(with_location("invalid entry in choice array"))
    else:  # 'raise': an index outside 0..n-1 goes out of the gather's range, which raises
        index = lax.select(lax.bitwise_and(lax.ge(index, 0), lax.lt(index, n)), index,
                           n * math.prod(shape))
    size = math.prod(shape)
    flat = lax.add(lax.mul(index, size), lax.reshape(lax.iota(np.int64, (size,)), shape))
    return lax.gather(lax.reshape(stacked, (n * size,)), flat, 0)


@implements(np.piecewise)
def piecewise(x, condlist, funclist, *args, **kw):
    x = asarray(x)
    if isinstance(condlist, (bool, np.bool_)) or not isinstance(condlist, (list, tuple)) \
            or (ndim_of(x) != 0 and not isinstance(condlist[0], (list, tuple, np.ndarray,
                                                                 type(x)))):
        condlist = [condlist]
    conds = [lax.broadcast_to(to_bool(asarray(c)), shape_of(x)) for c in condlist]
    n, n2 = len(conds), len(funclist)
    if n == n2 - 1:  # the "otherwise" case: where no condition holds
        anything = conds[0]
        for c in conds[1:]:
            anything = lax.bitwise_or(anything, c)
        conds.append(lax.logical_not(anything))
    elif n != n2:
        raise TransfuseValueError(with_location(
            f"with {n} condition(s), either {n} or {n + 1} functions are expected"))
    if ndim_of(x) > 0 and builtins.any(callable(f) for f in funclist):
        known = [concrete_value(c) for c in conds]  # eagerly, under grad: NumPy's way
        if builtins.all(k is not None for k in known):
            return _piecewise_on_masks(x, known, funclist, args, kw)
    out = lax.full(shape_of(x), 0, dtype_of(x))
    # Later conditions overwrite earlier ones, as NumPy's assignments in order do. Under
    # jit and vmap each function sees all of x (as in JAX): it must be defined where its
    # condition is false, or its NaNs reach the gradient.
    for cond, func in zip(conds, funclist):
        value = func(x, *args, **kw) if callable(func) else func
        out = lax.select(cond, lax.broadcast_to(cast_operand(asarray(value), dtype_of(x)),
                                                shape_of(x)), out)
    return out


def _piecewise_on_masks(x: Any, masks: list, funclist: list, args: tuple, kw: dict) -> Any:
    """NumPy's piecewise with known conditions: each function sees x[cond] only."""
    out = lax.full(shape_of(x), 0, dtype_of(x))
    for mask, func in zip(masks, funclist):
        if not callable(func):
            out[mask] = func
        elif mask.any():
            out[mask] = func(x[mask], *args, **kw)
    return out


# ---------------------------------------------------------------------------------------
# Sample grids


@implements(np.logspace, creation=True)
def logspace(start, stop, num=50, endpoint=True, base=10.0, dtype=None, axis=0):
    y = F.linspace(start, stop, num=num, endpoint=endpoint, axis=axis)
    if ndim_of(base) > 0:
        base = F.expand_dims(asarray(base), axis)
    out = call_ufunc(np.power, base, y)
    return out if dtype is None else F.astype(out, dtype, copy=False)


@implements(np.geomspace, creation=True)
def geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    start = call_ufunc(np.multiply, asarray(start), 1.0)
    stop = call_ufunc(np.multiply, asarray(stop), 1.0)
    for end in (start, stop):
        if isinstance(end, np.ndarray) and np.any(end == 0):  # traced ones give NaN
            raise TransfuseValueError(with_location(
                "Geometric sequence cannot include zero"))
    dt = result_type(start, stop, float(num), np.zeros((), dtype))
    if dt.kind == "c":
        raise TransfuseTypeError(with_location(
            "np.geomspace of complex endpoints is not supported on traced values"))
    start, stop = cast_operand(start, dt), cast_operand(stop, dt)
    # Negative endpoints: the sequence of their magnitudes, with their sign, as NumPy.
    sign = call_ufunc(np.sign, start)
    start = call_ufunc(np.true_divide, start, sign)
    stop = call_ufunc(np.true_divide, stop, sign)
    out = logspace(call_ufunc(np.log10, start), call_ufunc(np.log10, stop), num=num,
                   endpoint=endpoint, base=10.0, dtype=dt)
    # The endpoints exactly, as NumPy writes them in.
    pieces = [out]
    if num > 0:
        first = F.expand_dims(asarray(start), 0)
        last_n = 1 if (num > 1 and endpoint) else 0
        middle = lax.slice_axis(out, 0, 1, num - 1 - last_n) if num > 1 else None
        pieces = [lax.broadcast_to(first, (1,) + shape_of(out)[1:])]
        if middle is not None:
            pieces.append(middle)
        if last_n:
            pieces.append(lax.broadcast_to(F.expand_dims(asarray(stop), 0),
                                           (1,) + shape_of(out)[1:]))
    out = F.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
    out = call_ufunc(np.multiply, out, sign)
    if axis != 0:
        out = F.moveaxis(out, 0, axis)
    return out if dtype is None else F.astype(out, dtype, copy=False)


# ---------------------------------------------------------------------------------------
# Flat and multi-dimensional indices


def _checked_index(index: Any, size: int, message: str) -> Any:
    """index as int64. A concrete entry outside 0..size-1 raises NumPy's ValueError now; a
    traced one makes the graph raise IndexError when it runs (a gather out of range)."""
    if isinstance(index, (np.ndarray, np.generic, int)):
        index = np.asarray(index, np.int64)
        if index.size and (index.min() < 0 or index.max() >= size):
            bad = index[(index < 0) | (index >= size)].flat[0]
            raise TransfuseValueError(with_location(message.format(bad=bad, size=size)))
        return index
    index = lax.convert(asarray(index), np.int64)
    in_range = lax.bitwise_and(lax.ge(index, 0), lax.lt(index, size))
    beyond = lax.select(in_range, index, size)
    return lax.gather(lax.iota(np.int64, (size,)), beyond, 0) if size else index


def _strides(dims: tuple[int, ...], order: str) -> list[int]:
    if order not in ("C", "F"):
        raise TransfuseValueError(with_location("only 'C' or 'F' order is permitted"))
    axes = range(len(dims)) if order == "F" else reversed(range(len(dims)))
    strides, step = [0] * len(dims), 1
    for ax in axes:
        strides[ax] = step
        step *= dims[ax]
    return strides


@implements(np.unravel_index)
def unravel_index(indices, shape, order="C"):
    dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in
                                                                             shape)
    if dtype_of(indices).kind not in "iu":
        raise TransfuseTypeError(with_location(
            f"only int indices permitted, got {dtype_of(indices)}"))
    index = _checked_index(indices, math.prod(dims),
                           "index {bad} is out of bounds for array with size {size}")
    return tuple(call_ufunc(np.remainder, call_ufunc(np.floor_divide, index, stride), d)
                 for stride, d in zip(_strides(dims, order), dims))


@implements(np.ravel_multi_index)
def ravel_multi_index(multi_index, dims, mode="raise", order="C"):
    dims = tuple(int(d) for d in dims)
    if len(multi_index) != len(dims):
        raise TransfuseValueError(with_location(
            f"parameter multi_index must be a sequence of length {len(dims)}"))
    modes = (mode,) * len(dims) if isinstance(mode, str) else tuple(mode)
    flat = None
    for idx, d, m, stride in zip(multi_index, dims, modes, _strides(dims, order)):
        if dtype_of(idx).kind not in "iu":
            raise TransfuseTypeError(with_location(
                f"only int indices permitted, got {dtype_of(idx)}"))
        idx = lax.convert(asarray(idx), np.int64)
        if m == "wrap":
            idx = call_ufunc(np.mod, idx, d)
        elif m == "clip":
            idx = lax.clip(idx, 0, d - 1)
        elif m == "raise":
            idx = _checked_index(idx, d, "invalid entry in coordinates array")
        else:
            raise TransfuseValueError(with_location(
                f"clipmode must be one of 'clip', 'raise', or 'wrap' (got {m!r})"))
        term = call_ufunc(np.multiply, idx, stride)
        flat = term if flat is None else call_ufunc(np.add, flat, term)
    return flat
