"""Indexing, views and in-place writes on traced values, with NumPy's aliasing rules.

Basic indexing, reshapes NumPy can do without copying, transposes and flips are recorded
as view primitives (their output aliases the input's buffer); writes are recorded as
`assign` nodes into a buffer or a view of it. compiler/functionalize.py removes both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.errors import (
    MutationError,
    TransfuseIndexError,
    TransfuseTypeError,
    UnsupportedError,
)
from transfuse.ir.primitives import PRIMITIVES, numpy_slices
from transfuse.ir.source import with_location
from transfuse.ir.tracing import NUMPY_TABLE, Tracer, bind, current_builder, fresh_layout

from ._core import asarray, cast_operand, dtype_of, shape_of
from ._scalars import is_scalar

P = PRIMITIVES


# ---------------------------------------------------------------------------------------
# Memory layouts: a zero-byte strided stand-in per value tells view from copy, as NumPy.


def layout_of(x: Tracer) -> np.ndarray:
    layouts = x._builder.layouts
    if x._var not in layouts:
        layouts[x._var] = fresh_layout(x.shape)
    return layouts[x._var]


def _record_layout(view: Tracer, layout: np.ndarray) -> Tracer:
    view._builder.layouts[view._var] = layout
    return view


def view_slice(x: Tracer, starts, steps, sizes) -> Tracer:
    if is_scalar(x):  # a NumPy scalar has no buffer to view: s[...] is a new 0-d array
        return lax.copy(x)
    if tuple(sizes) == x.shape and all(s == 1 for s in steps) and not any(starts):
        return x
    out = bind(P["view_slice"], x, starts=tuple(starts), steps=tuple(steps),
               sizes=tuple(sizes))
    return _record_layout(out, layout_of(x)[numpy_slices(starts, steps, sizes)])


def view_transpose(x: Tracer, permutation) -> Tracer:
    if is_scalar(x):
        return lax.copy(x)
    out = bind(P["view_transpose"], x, permutation=tuple(permutation))
    return _record_layout(out, layout_of(x).transpose(permutation))


def view_broadcast(x: Any, shape: tuple[int, ...]) -> Any:
    """np.broadcast_to: a read-only view of x (right-aligned), so that a later write into
    x shows through it, as in NumPy."""
    if not isinstance(x, Tracer) or is_scalar(x):  # no buffer to view: a new array
        return lax.broadcast_to(x, shape)
    dims = tuple(range(len(shape) - x.ndim, len(shape)))
    out = bind(P["view_broadcast"], x, shape=tuple(shape), broadcast_dimensions=dims)
    return _record_layout(out, np.broadcast_to(layout_of(x), shape))


def reshape_maybe_view(x: Any, new_shape: tuple[int, ...]) -> Any:
    """NumPy's reshape: a view when the layout allows, otherwise a copy."""
    if not isinstance(x, Tracer):
        return lax.reshape(x, new_shape)
    if is_scalar(x):  # a NumPy scalar has no buffer to view: its reshape is a new array
        out = lax.reshape(x, new_shape)
        return lax.copy(x) if out is x else out
    layout = layout_of(x)
    candidate = layout.view()
    try:
        candidate.shape = new_shape
    except (AttributeError, ValueError):
        return lax.reshape(x, new_shape)  # NumPy would copy here too
    out = bind(P["view_reshape"], x, new_sizes=tuple(new_shape))
    return _record_layout(out, candidate)


# ---------------------------------------------------------------------------------------
# Index normalisation


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_advanced(x: Any) -> bool:
    return isinstance(x, (Tracer, np.ndarray, list)) or (
        isinstance(x, (bool, np.bool_)))


def _expand(index: Any, ndim: int) -> list:
    """The index as a list with Ellipsis replaced by full slices; bool masks kept whole."""
    items = list(index) if isinstance(index, tuple) else [index]
    consumed = 0
    for it in items:
        if it is None or it is Ellipsis:
            continue
        if isinstance(it, (np.ndarray, Tracer)) and dtype_of(it) == np.bool_:
            consumed += max(len(shape_of(it)), 1)
        else:
            consumed += 1
    if consumed > ndim:
        raise TransfuseIndexError(with_location(
            f"too many indices for array: array is {ndim}-dimensional, but {consumed} were "
            "indexed"))
    n_ell = sum(1 for it in items if it is Ellipsis)
    if n_ell > 1:
        raise TransfuseIndexError("an index can only have a single ellipsis ('...')")
    fill = [slice(None)] * (ndim - consumed)
    if n_ell:
        i = next(k for k, it in enumerate(items) if it is Ellipsis)
        items = items[:i] + fill + items[i + 1:]
    else:
        items = items + fill
    return items


def _concrete_masks_to_indices(items: list) -> list:
    out = []
    for it in items:
        if isinstance(it, list):
            it = np.asarray(it)
        if isinstance(it, np.ndarray) and it.dtype == np.bool_:
            out.extend(np.nonzero(it))
        elif isinstance(it, (bool, np.bool_)):
            raise UnsupportedError(with_location("indexing with a Python bool is not "
                                                 "supported on traced arrays"))
        else:
            out.append(it)
    return out


def _bound_int(i: int, n: int, axis: int) -> int:
    if not -n <= i < n:
        raise TransfuseIndexError(with_location(
            f"index {i} is out of bounds for axis {axis} with size {n}"))
    return i % n


def _basic_plan(shape: tuple[int, ...], items: list):
    """starts/steps/sizes of the strided region and the final shape (ints dropped, None added)."""
    starts, steps, sizes, final = [], [], [], []
    axis = 0
    for it in items:
        if it is None:
            final.append(1)
            continue
        n = shape[axis]
        if _is_int(it):
            starts.append(_bound_int(int(it), n, axis))
            steps.append(1)
            sizes.append(1)
        else:
            start, stop, step = it.indices(n)
            size = len(range(start, stop, step))
            starts.append(start if size else 0)
            steps.append(step)
            sizes.append(size)
            final.append(size)
        axis += 1
    return starts, steps, sizes, tuple(final)


# ---------------------------------------------------------------------------------------
# getitem


def getitem(x: Tracer, index: Any) -> Any:
    items = _expand(index, x.ndim)
    if any(isinstance(it, Tracer) and it.dtype == np.bool_ for it in items):
        from ._data_shapes import traced_mask_indices  # the mask's value: eager, grad
        items = [traced_mask_indices(it) if isinstance(it, Tracer) and it.dtype == np.bool_
                 else it for it in items]
    items = _concrete_masks_to_indices(items)
    if any(_is_advanced(it) for it in items):
        return _advanced_getitem(x, items)
    starts, steps, sizes, final = _basic_plan(x.shape, items)
    all_ints = all(_is_int(it) for it in items) and not isinstance(index, type(Ellipsis))
    if all_ints and index is not Ellipsis and not (
            isinstance(index, tuple) and any(i is Ellipsis for i in index)):
        # Integer indexing to a scalar: NumPy returns a copy, not a view, and a NumPy
        # scalar, which `op=` rebinds instead of writing into (see inplace_op).
        element = lax.reshape(lax.slice(x, starts, steps, sizes), final)
        if not final and isinstance(element, Tracer):
            element._builder.scalars.add(element._var)
        return element
    view = view_slice(x, starts, steps, sizes)
    return reshape_maybe_view(view, final) if view.shape != final else view


def _index_array(it: Any, n: int, axis: int, beyond: int | None = None) -> Any:
    """An integer index array with negative entries wrapped, as NumPy does.

    A traced entry still out of range after wrapping becomes `beyond` (n by default), an
    index the gather's own bounds check rejects: wrapping it a second time there, or adding
    it into a flat index over several axes, would read a wrong element instead of raising.
    """
    if isinstance(it, Tracer):
        if it.dtype.kind not in "iu":
            raise TransfuseIndexError(with_location(
                "arrays used as indices must be of integer (or boolean) type"))
        it = lax.convert(it, np.int64)
        wrapped = lax.select(lax.lt(it, 0), lax.add(it, n), it)
        in_range = lax.bitwise_and(lax.ge(wrapped, 0), lax.lt(wrapped, n))
        return lax.select(in_range, wrapped, n if beyond is None else beyond)
    arr = np.asarray(it)
    if arr.dtype.kind not in "iu":
        raise TransfuseIndexError(with_location(
            "arrays used as indices must be of integer (or boolean) type"))
    if arr.size and (arr.min() < -n or arr.max() >= n):
        bad = arr[(arr < -n) | (arr >= n)].flat[0]
        raise TransfuseIndexError(with_location(
            f"index {bad} is out of bounds for axis {axis} with size {n}"))
    return np.where(arr < 0, arr + n, arr).astype(np.int64)


def _advanced_plan(x: Any, items: list):
    """Strided region, the advanced positions, their flat index, and the result order."""
    if any(it is None for it in items):
        raise UnsupportedError(with_location(
            "combining None (np.newaxis) with integer-array indexing is not supported"))
    shape = shape_of(x)
    basic = [slice(None) if (_is_advanced(it) or _is_int(it)) else it for it in items]
    starts, steps, sizes, _ = _basic_plan(shape, basic)
    positions = [k for k, it in enumerate(items) if _is_advanced(it) or _is_int(it)]
    dims = [sizes[k] for k in positions]
    # An out-of-range entry on any axis makes the flat index at least the merged size.
    merged_size = int(np.prod(dims, dtype=np.int64))
    arrays = [_index_array(items[k] if not _is_int(items[k]) else np.asarray(items[k]),
                           shape[k], k, merged_size) for k in positions]
    idx_shape = tuple(np.broadcast_shapes(*[shape_of(a) for a in arrays]))
    flat = None
    for a, stride in zip(arrays, _row_major_strides(dims)):
        term = lax.mul(lax.broadcast_to(a, idx_shape), stride) if stride != 1 else \
            lax.broadcast_to(a, idx_shape)
        flat = term if flat is None else lax.add(flat, term)
    contiguous = positions == list(range(positions[0], positions[0] + len(positions)))
    return (starts, steps, sizes), positions, flat, idx_shape, contiguous


def _row_major_strides(dims: list[int]) -> list[int]:
    strides, step = [], 1
    for d in reversed(dims):
        strides.append(step)
        step *= d
    return list(reversed(strides))


def _gather_layout(region: Any, positions: list[int], contiguous: bool):
    """Move advanced dims together (to the front unless adjacent) and merge them."""
    nd = len(shape_of(region))
    rest = [k for k in range(nd) if k not in positions]
    axis = positions[0] if contiguous else 0
    perm = list(range(nd)) if contiguous else positions + rest
    moved = lax.transpose(region, perm)
    mshape = shape_of(moved)
    merged_size = int(np.prod([shape_of(region)[k] for k in positions], dtype=np.int64))
    merged = mshape[:axis] + (merged_size,) + mshape[axis + len(positions):]
    return lax.reshape(moved, merged), axis, perm


def _advanced_getitem(x: Any, items: list) -> Any:
    (starts, steps, sizes), positions, flat, idx_shape, contiguous = _advanced_plan(x, items)
    region = lax.slice(x, starts, steps, sizes)
    merged, axis, _ = _gather_layout(region, positions, contiguous)
    return lax.gather(merged, flat, axis)


# ---------------------------------------------------------------------------------------
# setitem and other writes


def _value_for(target: Any, value: Any) -> Any:
    """value cast (unsafe, as NumPy's setitem) to the target's dtype."""
    value = asarray(value)
    return cast_operand(value, target.dtype)


def _drop_leading_ones(value: Any, ndim: int) -> Any:
    vshape = shape_of(value)
    extra = len(vshape) - ndim
    if extra > 0 and all(d == 1 for d in vshape[:extra]):
        return lax.reshape(value, vshape[extra:])
    return value


def assign_into(target: Any, value: Any) -> None:
    """target[...] = value, recorded as an `assign` node (target may be a view)."""
    if not isinstance(target, Tracer):
        if isinstance(value, Tracer):
            raise MutationError(with_location(
                "cannot write a traced value into a plain NumPy array (made with np.zeros, "
                "np.empty, ...): it cannot hold traced values. Create the buffer with "
                "tnp.zeros(...) / tnp.empty(...) or np.zeros_like(x) instead"))
        np.copyto(target, value, casting="unsafe")
        return
    value = _drop_leading_ones(_value_for(target, value), target.ndim)
    bind(P["assign"], target, value)


def _basic_view_for_write(x: Tracer, items: list) -> Tracer:
    starts, steps, sizes, final = _basic_plan(x.shape, items)
    view = view_slice(x, starts, steps, sizes)
    if view.shape != final:
        view = reshape_maybe_view(view, final)
        if not isinstance(view, Tracer) or view._var not in view._builder.layouts:
            raise MutationError(with_location("cannot write through this index: NumPy "
                                              "would write into a copy"))
    return view


def setitem(x: Tracer, index: Any, value: Any) -> None:
    if is_scalar(x):
        raise TransfuseTypeError(with_location(
            f"'numpy.{x.dtype}' object does not support item assignment: NumPy's result "
            "here is a NumPy scalar, not an array (`a = np.reshape(s, ())` makes a 0-d "
            "array of it that can be written)"))
    items = _expand(index, x.ndim)
    masks = [it for it in items if isinstance(it, Tracer) and it.dtype == np.bool_]
    if masks:
        from ._data_shapes import known_masks
        # A 0-d value: a where, whatever the data. Otherwise the masks' values where known
        # (eagerly, under grad) become indices.
        known = None if shape_of(value) == () else known_masks(items)
        if known is None:
            _masked_setitem(x, items, value)
            return
        items = known
    items = _concrete_masks_to_indices(items)
    if any(_is_advanced(it) for it in items):
        _advanced_setitem(x, items, value)
        return
    assign_into(_basic_view_for_write(x, items), value)


def _masked_setitem(x: Tracer, items: list, value: Any) -> None:
    """x[mask] = scalar -> x[...] = where(mask, scalar, x)."""
    mask = items[0]
    rest_ok = all(isinstance(it, slice) and it == slice(None) for it in items[1:])
    value = asarray(value)
    if len(items) - 1 + mask.ndim != x.ndim or not rest_ok or shape_of(value) != ():
        raise UnsupportedError(with_location(
            "x[mask] = value with a traced mask needs a 0-d value and a mask over x's "
            "leading dimensions; use x[...] = tnp.where(mask, value, x)"))
    if mask.shape != x.shape[:mask.ndim]:
        raise TransfuseIndexError(with_location(
            f"boolean index of shape {mask.shape} does not match array of shape {x.shape}"))
    full_mask = lax.broadcast_in_dim(mask, x.shape, tuple(range(mask.ndim)))
    assign_into(x, lax.select(full_mask, _value_for(x, value), x))


def _advanced_setitem(x: Tracer, items: list, value: Any) -> None:
    (starts, steps, sizes), positions, flat, idx_shape, contiguous = _advanced_plan(x, items)
    region = view_slice(x, starts, steps, sizes)
    merged, axis, perm = _gather_layout(region, positions, contiguous)
    mshape = shape_of(merged)
    upd_shape = mshape[:axis] + idx_shape + mshape[axis + 1:]
    upd = lax.broadcast_to(_drop_leading_ones(_value_for(x, value), len(upd_shape)), upd_shape)
    new_merged = lax.scatter(merged, flat, upd, axis)
    moved_shape = tuple(shape_of(region)[p] for p in perm)
    new_region = lax.transpose(lax.reshape(new_merged, moved_shape), np.argsort(perm))
    assign_into(region, new_region)


def add_at(x: Any, index: Any, values: Any) -> None:
    """np.add.at(x, index, values): unbuffered accumulation, recorded as scatter_add."""
    if not isinstance(x, Tracer):
        raise MutationError(with_location("np.add.at into a plain NumPy array cannot take "
                                          "traced values; create it with tnp.zeros"))
    items = _concrete_masks_to_indices(_expand(index, x.ndim))
    if not any(_is_advanced(it) for it in items):
        view = _basic_view_for_write(x, items)
        assign_into(view, lax.add(view, _value_for(view, values)))
        return
    (starts, steps, sizes), positions, flat, idx_shape, contiguous = _advanced_plan(x, items)
    region = view_slice(x, starts, steps, sizes)
    merged, axis, perm = _gather_layout(region, positions, contiguous)
    mshape = shape_of(merged)
    upd_shape = mshape[:axis] + idx_shape + mshape[axis + 1:]
    upd = lax.broadcast_to(_value_for(x, values), upd_shape)
    new_merged = lax.scatter_add(merged, flat, upd, axis)
    moved_shape = tuple(shape_of(region)[p] for p in perm)
    assign_into(region, lax.transpose(lax.reshape(new_merged, moved_shape), np.argsort(perm)))


def fill(x: Tracer, value: Any) -> None:
    assign_into(x, value)


def in_trace() -> bool:
    return current_builder() is not None


NUMPY_TABLE["getitem"] = getitem
NUMPY_TABLE["setitem"] = setitem
NUMPY_TABLE["fill"] = fill
