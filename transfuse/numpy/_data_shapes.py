"""Functions whose output shape depends on the data: nonzero, argwhere, flatnonzero,
unique, one-argument where, boolean-mask indexing.

Eagerly and under grad/jvp/functionalize the data is known (ir/concrete.py): the indices
are computed from it and enter the graph as constants; the values flow through a gather,
so gradients reach the selected elements. Under jit and vmap the data is not known: as in
JAX, `size=` fixes the output length (the first `size` results, padded with `fill_value`),
and without it the error says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.concrete import concrete_value
from transfuse.ir.errors import ConcretizationError, TransfuseValueError
from transfuse.ir.source import with_location
from transfuse.ir.tracing import NUMPY_TABLE, Tracer

from . import _functions as F
from ._core import EXPORTS, asarray, call_ufunc, ndim_of, shape_of, to_bool


def needs_size_error(name: str) -> ConcretizationError:
    """The error for a data-dependent shape where the data is not known (jit, vmap)."""
    return ConcretizationError(with_location(
        f"np.{name} has an output shape that depends on the values of its input, which are "
        "not known under jit or vmap (the compiled graph serves every input). Pass size= "
        "(and optionally fill_value=) to fix the output length, as in JAX: "
        f"transfuse.numpy.{name}(..., size=n) gives the first n results, padded with "
        "fill_value. Without size= it works eagerly and under grad, jvp and functionalize"))


def _known_mask(x: Any, what: str) -> np.ndarray:
    """The truth values of x, from the data (eager, grad); the size= error otherwise."""
    value = concrete_value(to_bool(asarray(x)))
    if value is None:
        raise needs_size_error(what)
    return value


def _check_size(size: Any, what: str) -> int:
    if isinstance(size, Tracer) or not isinstance(size, (int, np.integer)) or size < 0:
        raise TransfuseValueError(with_location(
            f"{what}: size must be a non-negative Python int, got {size!r}"))
    return int(size)


def _first_true_positions(mask: Any, size: int) -> tuple[Any, Any]:
    """Flat positions of the first `size` true entries of a flat bool mask, and which of
    the `size` slots hold one (the rest are padding)."""
    n = shape_of(mask)[0]
    counts = lax.cumsum(lax.convert(mask, np.int64), 0)
    rank = lax.sub(counts, 1)
    keep = lax.bitwise_and(mask, lax.lt(rank, size))
    # Each kept position lands in slot `rank`; the others in a spare slot past the end.
    slot = lax.select(keep, rank, size)
    slots = lax.scatter(lax.full((size + 1,), 0, np.int64), slot,
                        lax.iota(np.int64, (n,)), 0)
    total = lax.reduce_sum(lax.convert(mask, np.int64), (0,))
    filled = lax.lt(lax.iota(np.int64, (size,)), total)
    return lax.slice_axis(slots, 0, 0, size), filled


def _fill_values(fill_value: Any, count: int, what: str) -> list[Any]:
    if fill_value is None:
        return [0] * count
    if isinstance(fill_value, (tuple, list)):
        if len(fill_value) != count:
            raise TransfuseValueError(with_location(
                f"{what}: fill_value must be a scalar or a tuple of length {count}, got "
                f"{len(fill_value)} values"))
        return list(fill_value)
    if ndim_of(fill_value) != 0:
        raise TransfuseValueError(with_location(
            f"{what}: fill_value must be a scalar or a tuple of length {count}"))
    return [fill_value] * count


def _sized_nonzero(x: Any, size: int, fill_value: Any, what: str) -> tuple[Any, ...]:
    """nonzero(x, size=size, fill_value=fill_value) as JAX defines it."""
    shape = shape_of(x)
    total = math.prod(shape)
    flat_mask = lax.reshape(to_bool(asarray(x)), (total,))
    flat, filled = _first_true_positions(flat_mask, size)
    outs, stride = [], total
    for d, fill in zip(shape, _fill_values(fill_value, len(shape), what)):
        stride //= max(d, 1)
        coord = call_ufunc(np.remainder, call_ufunc(np.floor_divide, flat, stride), d) \
            if total else flat
        outs.append(lax.select(filled, coord, lax.convert(asarray(fill), np.int64)))
    return tuple(outs)


def _check_0d(x: Any, what: str) -> None:
    if ndim_of(x) == 0:
        raise TransfuseValueError(with_location(
            f"Calling {what} on 0d arrays is not allowed. Use np.atleast_1d(scalar)."
            "nonzero() instead"))


def nonzero(a, *, size=None, fill_value=None):
    """np.nonzero; size=/fill_value= as jax.numpy.nonzero (needed under jit and vmap)."""
    _check_0d(a, "nonzero")
    if size is not None:
        return _sized_nonzero(a, _check_size(size, "nonzero"), fill_value, "nonzero")
    return tuple(np.nonzero(_known_mask(a, "nonzero")))


def flatnonzero(a, *, size=None, fill_value=None):
    """np.flatnonzero; size=/fill_value= as jax.numpy.flatnonzero."""
    flat = F.ravel(asarray(a))
    if size is not None:
        return _sized_nonzero(flat, _check_size(size, "flatnonzero"), fill_value,
                              "flatnonzero")[0]
    return np.flatnonzero(_known_mask(flat, "flatnonzero"))


def argwhere(a, *, size=None, fill_value=None):
    """np.argwhere; size=/fill_value= as jax.numpy.argwhere."""
    a = asarray(a)
    if ndim_of(a) == 0:  # NumPy: a (1, 0) or (0, 0) result, from the 1-d case
        rows = argwhere(F.reshape(a, (1,)), size=size, fill_value=fill_value)
        return lax.slice_axis(rows, 1, 0, 0) if not isinstance(rows, np.ndarray) \
            else rows[:, :0]
    if size is not None:
        cols = _sized_nonzero(a, _check_size(size, "argwhere"), fill_value, "argwhere")
        return F.stack(list(cols), axis=1)
    return np.argwhere(_known_mask(a, "argwhere"))


def where_one_argument(condition, size=None, fill_value=None):
    """np.where(condition): nonzero(condition)."""
    _check_0d(condition, "nonzero")
    if size is not None:
        return _sized_nonzero(condition, _check_size(size, "where"), fill_value, "where")
    return tuple(np.nonzero(_known_mask(condition, "where")))


def traced_mask_indices(mask: Tracer) -> np.ndarray:
    """x[mask] with a traced mask: the mask's value where known (it becomes integer
    indices), else the error naming the fixes."""
    value = concrete_value(mask)
    if value is None:
        raise ConcretizationError(with_location(
            "boolean-mask indexing x[mask] with a traced mask gives an array whose shape "
            "depends on the data, which is not known under jit or vmap. Use "
            "tnp.where(mask, x, 0) (or a sum with the mask), or take a fixed number of "
            "elements: x[tnp.nonzero(mask, size=n)] (x[mask] works eagerly and under grad)"))
    return value


def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None,
           *, equal_nan=True, sorted=True, size=None, fill_value=None):
    """np.unique: the values are gathered from ar (gradients reach each value's first
    occurrence); indices, inverse and counts come from the data. size= as in JAX."""
    ar = asarray(ar)
    if size is not None:
        return _sized_unique(ar, _check_size(size, "unique"), fill_value, return_index,
                             return_inverse, return_counts, axis, equal_nan)
    value = concrete_value(ar)
    if value is None:
        raise needs_size_error("unique")
    found = np.unique(value, return_index=True, return_inverse=return_inverse,
                      return_counts=return_counts, axis=axis, equal_nan=equal_nan)
    first = found[1]
    values = F.take(ar, first, axis=axis) if axis is not None else F.take(F.ravel(ar), first)
    extras = [first] if return_index else []
    extras += list(found[2:])
    return (values, *extras) if extras else values


def _sized_unique(ar, size, fill_value, return_index, return_inverse, return_counts, axis,
                  equal_nan):
    """jax.numpy.unique(..., size=size, fill_value=fill_value): a stable sort, the first of
    each run of equal values, and their first `size` positions (padding: the smallest
    value, or fill_value; index padding: the smallest value's index; counts: 0)."""
    if axis is not None:
        raise ConcretizationError(with_location(
            "np.unique with axis= under jit or vmap is not supported; use axis=None"))
    if lax.dtype(ar).kind == "c":
        raise ConcretizationError(with_location(
            "np.unique of complex values with size= is not supported"))
    shape = shape_of(ar)
    n = math.prod(shape)
    if n == 0:
        return _unique_of_nothing(ar, size, fill_value, return_index, return_inverse,
                                  return_counts)
    ordered, perm = lax.sort([F.ravel(ar)], 1, permutation=True)
    later, earlier = lax.slice_axis(ordered, 0, 1, n - 1), lax.slice_axis(ordered, 0, 0, n - 1)
    differs = lax.ne(later, earlier)
    if equal_nan and lax.dtype(ar).kind == "f":
        both_nan = lax.bitwise_and(lax.isnan(later), lax.isnan(earlier))
        differs = lax.bitwise_and(differs, lax.logical_not(both_nan))
    first = lax.concatenate([lax.full((1,), True, np.bool_), differs], 0)
    slots, filled = _first_true_positions(first, size)
    values = lax.gather(ordered, slots, 0)
    if fill_value is not None:
        values = lax.select(filled, values, lax.convert(asarray(fill_value), lax.dtype(ar)))
    extras = []
    if return_index:
        extras.append(lax.gather(perm, slots, 0))
    if return_inverse:
        group = lax.sub(lax.cumsum(lax.convert(first, np.int64), 0), 1)
        inverse = lax.scatter(lax.full((n,), 0, np.int64), perm, group, 0)
        extras.append(lax.reshape(inverse, shape))
    if return_counts:
        starts, started = _first_true_positions(first, size + 1)
        bounds = lax.select(started, starts, n)  # past the last run: the end, n
        extras.append(lax.sub(lax.slice_axis(bounds, 0, 1, size),
                              lax.slice_axis(bounds, 0, 0, size)))
    return (values, *extras) if extras else values


def _unique_of_nothing(ar, size, fill_value, return_index, return_inverse, return_counts):
    """unique of a size-0 array with size=: fill_value everywhere (JAX's rule)."""
    if size and fill_value is None:
        raise TransfuseValueError(with_location(
            "np.unique: for a size-0 input with a nonzero size, fill_value must be given"))
    values = lax.full((size,), 0, lax.dtype(ar)) if fill_value is None else \
        lax.broadcast_to(lax.convert(asarray(fill_value), lax.dtype(ar)), (size,))
    extras = []
    if return_index:
        extras.append(lax.full((0,), 0, np.int64))
    if return_inverse:
        extras.append(lax.full(shape_of(ar), 0, np.int64))
    if return_counts:
        extras.append(lax.full((0,), 0, np.int64))
    return (values, *extras) if extras else values


def known_masks(items: list) -> list | None:
    """An index's traced boolean masks replaced by their values, or None where one of
    them is not known (under jit or vmap)."""
    out = []
    for it in items:
        if isinstance(it, Tracer) and it.dtype == np.bool_:
            it = concrete_value(it)
            if it is None:
                return None
        out.append(it)
    return out


for _np_func, _impl in ((np.nonzero, nonzero), (np.flatnonzero, flatnonzero),
                        (np.argwhere, argwhere), (np.unique, unique)):
    NUMPY_TABLE[_np_func] = _impl
    EXPORTS[_np_func.__name__] = _impl
