"""vmap as a graph rewrite: one batching rule per primitive, and `batch_graph`.

A value under batching is a pair (value, batch_dim): `batch_dim` is the axis of `value`
that indexes the batch, or None when the value is the same for every batch entry
(unbatched). A rule receives a node's input values and their batch dims and emits the
batched computation through `ir/lax.py`; it returns the outputs with their batch dims.
Rules keep unbatched inputs unbatched (a weight is never broadcast to the batch unless the
primitive needs it) and move batch dims only where the primitive needs them somewhere
particular. See docs/vmap.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from transfuse.ir import lax
from transfuse.ir.core import Aval, Graph
from transfuse.ir.errors import BatchingError
from transfuse.ir.primitives import (
    BINARY_FLOAT,
    BINARY_NUMERIC,
    COMPARISONS,
    LOGICAL,
    PRIMITIVES,
    UNARY_FLOAT,
    UNARY_NUMERIC,
    UNARY_TO_BOOL,
    Primitive,
)
from transfuse.ir.source import with_location
from transfuse.ir.tracing import bind, source_of, trace_to_graph

P = PRIMITIVES
Dim = int | None
# rule(axis_size, args, dims, **params) -> (out, out_dim), or (outs, out_dims) for
# primitives with multiple results.
BatchRule = Callable[..., tuple[Any, Any]]
BATCH_RULES: dict[Primitive, BatchRule] = {}


# ---------------------------------------------------------------------------------------
# The rewrite


def batched_aval(aval: Aval, dim: Dim, axis_size: int) -> Aval:
    """The aval of a value whose per-example aval is `aval`, batched at `dim`."""
    if dim is None:
        return aval
    return aval.update(shape=aval.shape[:dim] + (axis_size,) + aval.shape[dim:])


def _normalize_in_dims(graph: Graph, in_dims: Sequence[Dim]) -> list[Dim]:
    if len(in_dims) != len(graph.inputs):
        raise BatchingError(f"batch_graph: {len(in_dims)} in_dims for a graph with "
                            f"{len(graph.inputs)} inputs")
    out = []
    for v, d in zip(graph.inputs, in_dims):
        if d is not None:
            rank = v.aval.ndim + 1
            if not -rank <= d < rank:
                raise BatchingError(f"batch_graph: in_dim {d} out of range for an input of "
                                    f"per-example shape {v.aval.shape}")
            d %= rank
        out.append(d)
    return out


def batch_graph(graph: Graph, in_dims: Sequence[Dim], axis_size: int
                ) -> tuple[Graph, list[Dim]]:
    """The batched graph of `graph`, and the batch dim of each of its outputs.

    Input i of the result is input i of `graph` with a batch axis of size `axis_size`
    inserted at `in_dims[i]` (None: unbatched). The graph must be pure (see `prepare`).
    Implicit inputs keep their places: the result has graph's num_captures and has_rng.
    """
    dims = _normalize_in_dims(graph, in_dims)
    in_avals = [batched_aval(v.aval, d, axis_size) for v, d in zip(graph.inputs, dims)]
    out_dims: list[list[Dim]] = []

    def body(*args: Any) -> list[Any]:
        outs, odims = batch_values(graph, args, dims, axis_size)
        out_dims.append(odims)
        return outs

    batched, _ = trace_to_graph(body, in_avals, graph.name)
    result = Graph(batched.inputs, batched.nodes, batched.outputs, batched.consts,
                   num_captures=graph.num_captures, has_rng=graph.has_rng, name=graph.name,
                   mutated_inputs=graph.mutated_inputs)
    return result, out_dims[0]


def batch_values(graph: Graph, args: Sequence[Any], dims: Sequence[Dim], axis_size: int
                 ) -> tuple[list[Any], list[Dim]]:
    """Evaluate `graph` on batched values through the rules: emits into the current trace."""
    env: dict[Any, tuple[Any, Dim]] = dict(zip(graph.inputs, zip(args, dims)))
    env.update((v, (a, None)) for v, a in graph.consts.items())
    for node in graph.nodes:
        vals = [env[v][0] for v in node.inputs]
        in_dims = [env[v][1] for v in node.inputs]
        with source_of(node.source):
            outs, out_dims = apply_rule(node.prim, axis_size, vals, in_dims, node.params,
                                        node.source)
        env.update(zip(node.outputs, zip(outs, out_dims)))
    results = [env[v] for v in graph.outputs]
    return [r[0] for r in results], [r[1] for r in results]


def apply_rule(prim: Primitive, axis_size: int, vals: list[Any], dims: list[Dim],
               params: dict[str, Any], source: Any = None) -> tuple[list[Any], list[Dim]]:
    """Batch one primitive application: its outputs and their batch dims, as lists."""
    if all(d is None for d in dims):
        # Nothing batched flows in: the node runs once, as it was.
        outs = bind(prim, *vals, **params)
        outs = outs if prim.multiple_results else [outs]
        return list(outs), [None] * len(outs)
    rule = BATCH_RULES.get(prim)
    if rule is None:
        raise BatchingError(with_location(
            f"vmap: primitive {prim.name} has no batching rule", source))
    out, out_dim = rule(axis_size, vals, dims, **params)
    if prim.multiple_results:
        return list(out), list(out_dim)
    return [out], [out_dim]


# ---------------------------------------------------------------------------------------
# Helpers


def _ndim(x: Any) -> int:
    return len(lax.shape(x))


def move_axis(x: Any, src: int, dst: int) -> Any:
    """x with axis `src` moved to position `dst` (the others keep their order)."""
    if src == dst:
        return x
    perm = list(range(_ndim(x)))
    perm.pop(src)
    perm.insert(dst, src)
    return lax.transpose(x, perm)


def to_front(x: Any, dim: Dim, axis_size: int) -> Any:
    """x with its batch dim at 0; an unbatched x is broadcast along a new axis 0."""
    if dim is None:
        shape = lax.shape(x)
        return lax.broadcast_in_dim(x, (axis_size,) + shape, range(1, len(shape) + 1))
    return move_axis(x, dim, 0)


def move_batch_dim(x: Any, dim: Dim, dst: int, axis_size: int) -> Any:
    """x with its batch dim at `dst`; an unbatched x is broadcast there."""
    return move_axis(to_front(x, dim, axis_size), 0, dst)


def full_axis(axis: int, dim: int) -> int:
    """Where per-example axis `axis` sits in a value batched at `dim`."""
    return axis + 1 if axis >= dim else axis


def _full_axes(axes: Sequence[int], dim: int) -> tuple[int, ...]:
    return tuple(full_axis(a, dim) for a in axes)


def _insert(seq: Sequence[Any], pos: int, item: Any) -> tuple:
    out = list(seq)
    out.insert(pos, item)
    return tuple(out)


def _per_example_aval(x: Any, dim: Dim) -> Aval:
    a = lax.aval(x)
    if dim is None:
        return a
    return a.update(shape=a.shape[:dim] + a.shape[dim + 1:])


def _index(x: Any) -> Any:
    """Integer indices as int64 (folding batch offsets into them must not overflow)."""
    return lax.convert(x, np.int64)


# ---------------------------------------------------------------------------------------
# Elementwise (NumPy broadcasting)


def _elementwise(prim: Primitive) -> BatchRule:
    """Elementwise n-ary: align operands so the batch axis cannot meet broadcasting."""
    def rule(axis_size: int, args: list, dims: list, **params: Any) -> tuple[Any, Dim]:
        ranks = [_ndim(a) - (d is not None) for a, d in zip(args, dims)]
        out_rank = max(ranks)
        batched_dims = {d for d in dims if d is not None}
        if len(batched_dims) == 1:
            d = next(iter(batched_dims))
            # Unbatched operands broadcast from the right: they must not reach dim d.
            in_place = all(r == out_rank if bd is not None else r <= out_rank - d
                           for r, bd in zip(ranks, dims))
            if in_place:
                return bind(prim, *args, **params), d
        aligned = [a if d is None else _expand_batched(a, d, out_rank - r)
                   for a, d, r in zip(args, dims, ranks)]
        return bind(prim, *aligned, **params), 0
    return rule


def _expand_batched(x: Any, dim: int, missing: int) -> Any:
    """Batch dim to 0, then size-1 axes so the per-example part has the output's rank."""
    x = move_axis(x, dim, 0)
    return lax.expand_dims(x, range(1, 1 + missing))


# ---------------------------------------------------------------------------------------
# Reductions and scans


def _reduction(prim: Primitive) -> BatchRule:
    def rule(axis_size: int, args: list, dims: list, *, axes) -> tuple[Any, Dim]:
        (x,), (d,) = args, dims
        out_dim = d - sum(a < d for a in axes)
        return bind(prim, x, axes=tuple(sorted(_full_axes(axes, d)))), out_dim
    return rule


def _arg_reduction(prim: Primitive) -> BatchRule:
    def rule(axis_size: int, args: list, dims: list, *, axis, index_dtype) -> tuple[Any, Dim]:
        (x,), (d,) = args, dims
        out_dim = d - 1 if axis < d else d
        return bind(prim, x, axis=full_axis(axis, d), index_dtype=index_dtype), out_dim
    return rule


def _scan(prim: Primitive) -> BatchRule:
    def rule(axis_size: int, args: list, dims: list, *, axis, reverse) -> tuple[Any, Dim]:
        (x,), (d,) = args, dims
        return bind(prim, x, axis=full_axis(axis, d), reverse=reverse), d
    return rule


# ---------------------------------------------------------------------------------------
# Contractions: one dot_general / one conv for the whole batch


def _dot_general(axis_size: int, args: list, dims: list, *, dimension_numbers
                 ) -> tuple[Any, Dim]:
    (lhs, rhs), (ld, rd) = args, dims
    (lc, rc), (lb, rb) = dimension_numbers
    if ld is not None and rd is not None:
        # Both batched: the batch becomes a leading batch dimension of the contraction.
        dn = ((_full_axes(lc, ld), _full_axes(rc, rd)),
              ((ld,) + _full_axes(lb, ld), (rd,) + _full_axes(rb, rd)))
        return lax.dot_general(lhs, rhs, dn), 0
    if ld is not None:
        # Only lhs batched: its batch dim is one more lhs free dim (rhs is not broadcast).
        lc2, lb2 = _full_axes(lc, ld), _full_axes(lb, ld)
        free = [i for i in range(_ndim(lhs)) if i not in lc2 and i not in lb2]
        out_dim = len(lb) + free.index(ld)
        return lax.dot_general(lhs, rhs, ((lc2, rc), (lb2, rb))), out_dim
    rc2, rb2 = _full_axes(rc, rd), _full_axes(rb, rd)
    free = [i for i in range(_ndim(rhs)) if i not in rc2 and i not in rb2]
    lhs_free = _ndim(lhs) - len(lc) - len(lb)
    out_dim = len(rb) + lhs_free + free.index(rd)
    return lax.dot_general(lhs, rhs, ((lc, rc2), (lb, rb2))), out_dim


def _conv(axis_size: int, args: list, dims: list, **params: Any) -> tuple[Any, Dim]:
    (lhs, rhs), (ld, rd) = args, dims
    groups = params["feature_group_count"]
    if axis_size == 0:
        per_example = P["conv"].out_avals(
            [_per_example_aval(lhs, ld), _per_example_aval(rhs, rd)], params)[0]
        return lax.full((0,) + per_example.shape, 0, per_example.dtype), 0
    if rd is None:
        return _conv_batched_lhs(axis_size, to_front(lhs, ld, axis_size), rhs, params), 0
    rhs = to_front(rhs, rd, axis_size)
    if ld is None:
        return _conv_batched_rhs(axis_size, lhs, rhs, groups, params), 1
    return _conv_both_batched(axis_size, to_front(lhs, ld, axis_size), rhs, groups, params), 1


def _conv_call(lhs: Any, rhs: Any, params: dict, groups: int) -> Any:
    return bind(P["conv"], lhs, rhs, **{**params, "feature_group_count": groups})


def _conv_batched_lhs(b: int, lhs: Any, rhs: Any, params: dict) -> Any:
    """Batch folded into N: (B, N, C, ...) -> (B*N, C, ...), one conv, unfold."""
    _, n, *rest = lax.shape(lhs)
    out = _conv_call(lax.reshape(lhs, (b * n, *rest)), rhs, params,
                     params["feature_group_count"])
    return lax.reshape(out, (b, n) + lax.shape(out)[1:])


def _conv_batched_rhs(b: int, lhs: Any, rhs: Any, groups: int, params: dict) -> Any:
    """An ensemble of kernels (B, O, I, ...): B*O output channels, ordered by group."""
    _, o, i, *sp = lax.shape(rhs)
    g = groups
    # Grouped conv wants output channels group-major: (g, B, O/g).
    w = lax.reshape(rhs, (b, g, o // g, i, *sp))
    w = lax.transpose(w, (1, 0) + tuple(range(2, 4 + len(sp))))
    out = _conv_call(lhs, lax.reshape(w, (g * b * (o // g), i, *sp)), params, g)
    n, _, *osp = lax.shape(out)
    out = lax.reshape(out, (n, g, b, o // g, *osp))
    out = lax.transpose(out, (0, 2, 1) + tuple(range(3, 4 + len(osp))))
    return lax.reshape(out, (n, b, o, *osp))


def _conv_both_batched(b: int, lhs: Any, rhs: Any, groups: int, params: dict) -> Any:
    """Per-entry inputs and kernels: batch folded into channels, B * groups groups."""
    _, n, c, *sp = lax.shape(lhs)
    _, o, i, *ksp = lax.shape(rhs)
    x = lax.reshape(move_axis(lhs, 0, 1), (n, b * c, *sp))
    out = _conv_call(x, lax.reshape(rhs, (b * o, i, *ksp)), params, b * groups)
    return lax.reshape(out, (n, b, o) + lax.shape(out)[2:])


# ---------------------------------------------------------------------------------------
# Shape manipulation


def _reshape(axis_size: int, args: list, dims: list, *, new_sizes) -> tuple[Any, Dim]:
    (x,), (d,) = args, dims
    return lax.reshape(move_axis(x, d, 0), (axis_size,) + tuple(new_sizes)), 0


def _transpose(axis_size: int, args: list, dims: list, *, permutation) -> tuple[Any, Dim]:
    (x,), (d,) = args, dims
    return lax.transpose(x, (d,) + _full_axes(permutation, d)), 0


def _broadcast_in_dim(axis_size: int, args: list, dims: list, *, shape, broadcast_dimensions
                      ) -> tuple[Any, Dim]:
    (x,), (d,) = args, dims
    bdims = (0,) + tuple(b + 1 for b in broadcast_dimensions)
    return lax.broadcast_in_dim(move_axis(x, d, 0), (axis_size,) + tuple(shape), bdims), 0


def _squeeze(axis_size: int, args: list, dims: list, *, dimensions) -> tuple[Any, Dim]:
    (x,), (d,) = args, dims
    out_dim = d - sum(a < d for a in dimensions)
    return lax.squeeze(x, _full_axes(dimensions, d)), out_dim


def _expand_dims(axis_size: int, args: list, dims: list, *, dimensions) -> tuple[Any, Dim]:
    (x,), (d,) = args, dims
    return lax.expand_dims(move_axis(x, d, 0), [a + 1 for a in dimensions]), 0


def _concatenate(axis_size: int, args: list, dims: list, *, dimension) -> tuple[Any, Dim]:
    # Every piece needs the batch axis: unbatched pieces are broadcast.
    parts = [to_front(x, d, axis_size) for x, d in zip(args, dims)]
    return lax.concatenate(parts, dimension + 1), 0


def _pad(axis_size: int, args: list, dims: list, *, padding_config) -> tuple[Any, Dim]:
    (x, value), (xd, vd) = args, dims
    if vd is None:
        return lax.pad(x, value, _insert(padding_config, xd, (0, 0, 0))), xd
    # A per-entry padding value: pad with zero, then select the value wherever `pad`
    # itself puts its value (asked by padding False with True, so this follows pad's
    # own convention for interior padding).
    x = to_front(x, xd, axis_size)
    per_shape = lax.shape(x)[1:]
    padded = lax.pad(x, 0, ((0, 0, 0),) + tuple(padding_config))
    mask = lax.pad(lax.full(per_shape, False, np.bool_), True, padding_config)
    value = lax.reshape(to_front(value, vd, axis_size),
                        (axis_size,) + (1,) * len(per_shape))
    return lax.select(mask, value, padded), 0


def _slice(axis_size: int, args: list, dims: list, *, starts, steps, sizes) -> tuple[Any, Dim]:
    (x,), (d,) = args, dims
    return lax.slice(x, _insert(starts, d, 0), _insert(steps, d, 1),
                     _insert(sizes, d, axis_size)), d


def _update_slice(axis_size: int, args: list, dims: list, *, starts, steps, sizes
                  ) -> tuple[Any, Dim]:
    (x, update), (xd, ud) = args, dims
    # A batched update makes the result batched, even for an unbatched (fresh) buffer.
    x = to_front(x, xd, axis_size)
    if ud is not None:
        rank = len(sizes)
        update = _expand_batched(update, ud, rank - (_ndim(update) - 1))
    # An unbatched update broadcasts from the right, so axis 0 of x stays the batch.
    return lax.update_slice(x, update, (0,) + tuple(starts), (1,) + tuple(steps),
                            (axis_size,) + tuple(sizes)), 0


def _zero_index() -> np.ndarray:
    return np.zeros((), np.int64)


def _clamped_start(start: Any, n: int, k: int) -> Any:
    """A start index clamped as dynamic_slice does, so the window stays in bounds."""
    return lax.clip(_index(start), 0, n - k)


def _dynamic_slice(axis_size: int, args: list, dims: list, *, slice_sizes) -> tuple[Any, Dim]:
    x, starts = args[0], list(args[1:])
    xd, start_dims = dims[0], list(dims[1:])
    if all(sd is None for sd in start_dims):
        return lax.dynamic_slice(x, _insert(starts, xd, _zero_index()),
                                 _insert(slice_sizes, xd, axis_size)), xd
    shape = _per_example_aval(x, xd).shape
    # Unbatched starts first (batched-start dims kept whole), then one gather per
    # batched-start dim with per-entry window indices.
    static_starts = [s if sd is None else _zero_index() for s, sd in zip(starts, start_dims)]
    static_sizes = [k if sd is None else n
                    for k, n, sd in zip(slice_sizes, shape, start_dims)]
    if any(sd is None for sd in start_dims):
        (x,), (xd,) = apply_rule(P["dynamic_slice"], axis_size, [x, *static_starts],
                                 [xd] + [None] * len(starts),
                                 {"slice_sizes": tuple(static_sizes)})
    for j, (s, sd) in enumerate(zip(starts, start_dims)):
        if sd is None:
            continue
        k = slice_sizes[j]
        s = lax.reshape(to_front(_clamped_start(s, shape[j], k), sd, axis_size),
                        (axis_size, 1))
        window = lax.add(s, lax.iota(np.int64, (k,), 0))
        x, xd = _gather(axis_size, [x, window], [xd, 0], axis=j)
    return x, xd


def _dynamic_update_slice(axis_size: int, args: list, dims: list) -> tuple[Any, Dim]:
    x, update, starts = args[0], args[1], list(args[2:])
    xd, ud, start_dims = dims[0], dims[1], list(dims[2:])
    x = to_front(x, xd, axis_size)
    update = to_front(update, ud, axis_size)
    if all(sd is None for sd in start_dims):
        return lax.dynamic_update_slice(x, update, [_zero_index()] + starts), 0
    # Per-entry starts: one scatter into the flattened entries at the window's offsets.
    shape, window = lax.shape(x)[1:], lax.shape(update)[1:]
    strides = _row_major_strides(shape)
    offsets = None
    for j, (s, sd) in enumerate(zip(starts, start_dims)):
        s = _clamped_start(s, shape[j], window[j])
        if sd is not None:
            s = lax.reshape(to_front(s, sd, axis_size), (axis_size,) + (1,) * len(window))
        term = lax.mul(lax.add(s, lax.iota(np.int64, window, j)), strides[j])
        offsets = term if offsets is None else lax.add(offsets, term)
    size, count = int(np.prod(shape, dtype=np.int64)), int(np.prod(window, dtype=np.int64))
    flat = lax.reshape(x, (axis_size, size))
    out, _ = _scatter_like(P["scatter"])(
        axis_size, [flat, lax.reshape(offsets, (axis_size, count)),
                    lax.reshape(update, (axis_size, count))], [0, 0, 0], axis=0)
    return lax.reshape(out, (axis_size,) + tuple(shape)), 0


def _row_major_strides(shape: Sequence[int]) -> list[int]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return list(reversed(strides))


# ---------------------------------------------------------------------------------------
# Gather and scatter: batched indices are folded into the indexed axis


def _fold_indices(idx: Any, n: int, axis_size: int) -> Any:
    """Indices (batch at 0) into the (B*n)-long fold of a batched axis of length n.

    Negative indices wrap per entry; an out-of-range index maps out of range of the fold
    too (B*n), so it still fails as it would have for that entry instead of reading a
    neighbour's data.
    """
    idx = _index(idx)
    idx = lax.select(lax.lt(idx, 0), lax.add(idx, n), idx)
    valid = lax.bitwise_and(lax.ge(idx, 0), lax.lt(idx, n))
    offset = lax.mul(lax.iota(np.int64, lax.shape(idx), 0), n)
    return lax.select(valid, lax.add(idx, offset), axis_size * n)


def _fold_axis(x: Any, axis: int) -> Any:
    """x (batch at 0) with per-example `axis` moved next to the batch and merged with it."""
    x = move_axis(x, axis + 1, 1)
    b, n, *rest = lax.shape(x)
    return lax.reshape(x, (b * n, *rest))


def _gather(axis_size: int, args: list, dims: list, *, axis) -> tuple[Any, Dim]:
    (x, idx), (xd, id_) = args, dims
    if id_ is None:
        fa = full_axis(axis, xd)
        out_dim = xd if xd < fa else xd - 1 + _ndim(idx)
        return lax.gather(x, idx, fa), out_dim
    if xd is None:
        return lax.gather(x, idx, axis), axis + id_
    x = move_axis(x, xd, 0)
    n = lax.shape(x)[axis + 1]
    idx = move_axis(idx, id_, 0)
    out = lax.gather(_fold_axis(x, axis), _fold_indices(idx, n, axis_size), 0)
    # out is (B, *idx, *x_before_axis, *x_after_axis): put x_before_axis back in front.
    k = _ndim(idx) - 1
    perm = [0, *range(1 + k, 1 + k + axis), *range(1, 1 + k),
            *range(1 + k + axis, _ndim(out))]
    return lax.transpose(out, perm), 0


def _scatter_like(prim: Primitive) -> BatchRule:
    def rule(axis_size: int, args: list, dims: list, *, axis) -> tuple[Any, Dim]:
        (x, idx, updates), (xd, id_, ud) = args, dims
        x = to_front(x, xd, axis_size)
        updates = to_front(updates, ud, axis_size)
        if id_ is None:
            return bind(prim, x, idx, updates, axis=axis + 1), 0
        n = lax.shape(x)[axis + 1]
        idx = move_axis(idx, id_, 0)
        k = _ndim(idx) - 1
        # updates (B, *x_before, *idx, *x_after) -> (B, *idx, *x_before, *x_after)
        perm = [0, *range(1 + axis, 1 + axis + k), *range(1, 1 + axis),
                *range(1 + axis + k, _ndim(updates))]
        out = bind(prim, _fold_axis(x, axis), _fold_indices(idx, n, axis_size),
                   lax.transpose(updates, perm), axis=0)
        rest = lax.shape(out)[1:]
        out = lax.reshape(out, (axis_size, n, *rest))
        return move_axis(out, 1, axis + 1), 0
    return rule


# ---------------------------------------------------------------------------------------
# Creation, calls


def _no_operands(prim: Primitive) -> BatchRule:
    def rule(axis_size: int, args: list, dims: list, **params: Any) -> tuple[Any, Dim]:
        # No operands, so never batched: apply_rule runs it as it is.
        return bind(prim, **params), None
    return rule


def _call(axis_size: int, args: list, dims: list, *, graph) -> tuple[list, list]:
    # Sub-graphs with effects were inlined by `prepare`: this one is pure.
    batched, out_dims = batch_graph(graph, dims, axis_size)
    return bind(P["call"], *args, graph=batched), out_dims


def _aot_compiled(axis_size: int, args: list, dims: list, *, graph, fn) -> tuple[list, list]:
    # transfuse.compile's compiled graph: batched as a call of its graph.
    return _call(axis_size, args, dims, graph=graph)


def _remat(axis_size: int, args: list, dims: list, **params: Any) -> tuple[list, list]:
    # The batched body, still checkpointed (a batched dot is one the policy sees anew).
    batched, out_dims = batch_graph(params["graph"], dims, axis_size)
    return bind(P["remat"], *args, **dict(params, graph=batched)), out_dims


# ---------------------------------------------------------------------------------------
# The table


# ---------------------------------------------------------------------------------------
# Linear algebra: the primitives act on the last two axes and keep leading (stack) axes,
# so the batch axis becomes one more leading axis (NumPy's stacked-matrix convention).


def _stacked(prim: Primitive) -> BatchRule:
    """Batch dims moved to the front (unbatched operands broadcast): one stacked call."""
    def rule(axis_size: int, args: list, dims: list, **params: Any) -> tuple[Any, Any]:
        front = [to_front(x, d, axis_size) for x, d in zip(args, dims)]
        out = bind(prim, *front, **params)
        if prim.multiple_results:
            return out, [0] * len(out)
        return out, 0
    return rule


def _register(names: Sequence[str], make: Callable[[Primitive], BatchRule]) -> None:
    for name in names:
        BATCH_RULES[P[name]] = make(P[name])


_register([*UNARY_FLOAT, *UNARY_NUMERIC, *UNARY_TO_BOOL, "not", "integer_pow",
           *BINARY_NUMERIC, *BINARY_FLOAT, *COMPARISONS, *LOGICAL, "select", "clip", "cast",
           "copy", "real", "imag", "conj", "complex",
           # Random draws have shape key.shape + shape: a batched key batches the draws.
           "random_uniform", "random_normal", "random_fold_in", "random_split"],
          _elementwise)
_register(["reduce_sum", "reduce_prod", "reduce_max", "reduce_min"], _reduction)
_register(["argmax", "argmin"], _arg_reduction)
_register(["cumsum", "cumprod"], _scan)
_register(["scatter", "scatter_add"], _scatter_like)
_register(["iota", "full"], _no_operands)
_register(["cholesky", "triangular_solve", "solve", "slogdet", "eigh", "svd", "qr", "lu",
           "expm"], _stacked)
# The Fourier transform acts on trailing axes: the batch axis is one more leading axis.
_register(["fft"], _stacked)
# sort acts on the last axis: the batch axis is one more leading (row) axis.
_register(["sort"], _stacked)


def _optimization_barrier(axis_size: int, args: list, dims: list) -> tuple[Any, Dim]:
    # x keeps its batch dim; a batched `after` (only an ordering token) is summed to 0-d.
    (x, after), (xd, ad) = args, dims
    if ad is not None:
        after = lax.reduce_sum(after, range(_ndim(after)))
    return bind(P["optimization_barrier"], x, after), xd


BATCH_RULES[P["optimization_barrier"]] = _optimization_barrier
BATCH_RULES.update({
    P["dot_general"]: _dot_general,
    P["conv"]: _conv,
    P["reshape"]: _reshape,
    P["transpose"]: _transpose,
    P["broadcast_in_dim"]: _broadcast_in_dim,
    P["squeeze"]: _squeeze,
    P["expand_dims"]: _expand_dims,
    P["concatenate"]: _concatenate,
    P["pad"]: _pad,
    P["slice"]: _slice,
    P["update_slice"]: _update_slice,
    P["dynamic_slice"]: _dynamic_slice,
    P["dynamic_update_slice"]: _dynamic_update_slice,
    P["gather"]: _gather,
    P["call"]: _call,
    P["aot_compiled"]: _aot_compiled,
    P["remat"]: _remat,
})

# ---------------------------------------------------------------------------------------
# stop_gradient and the user's rules (ir/custom.py): each sub-graph batched, with every
# batched operand and every output at dim 0, so the graphs of one node agree


def _placed(x: Any, dim: Dim, spec: Any, axis_size: int) -> Any:
    """An output at dim 0, or (spec "sum": a cotangent of an unbatched operand) summed."""
    if spec == "sum":
        return x if dim is None else lax.reduce_sum(x, (dim,))
    return to_front(x, dim, axis_size)


def _batched_front(graph: Graph, in_dims: list, axis_size: int, out_specs: list) -> Graph:
    """A closed sub-graph batched at `in_dims` (None or 0), its outputs placed by spec."""
    in_avals = [batched_aval(v.aval, d, axis_size) for v, d in zip(graph.inputs, in_dims)]

    def body(*args: Any) -> list:
        outs, dims = batch_values(graph, args, in_dims, axis_size)
        return [_placed(o, d, s, axis_size) for o, d, s in zip(outs, dims, out_specs)]

    return trace_to_graph(body, in_avals, graph.name)[0]


def _custom_call(prim: Primitive) -> BatchRule:
    def rule(axis_size: int, args: list, dims: list, **params: Any) -> tuple[list, list]:
        if params.get("vmap") is not None:  # transfuse.Function's vmap staticmethod
            return params["vmap"](axis_size, args, dims)
        front = [x if d is None else move_axis(x, d, 0) for x, d in zip(args, dims)]
        in_dims = [None if d is None else 0 for d in dims]
        tangent_dims = [d for d, flag in zip(in_dims, params["diff"]) if flag]
        n_out = len(params["fun"].outputs)
        new = dict(params, fun=_batched_front(params["fun"], in_dims, axis_size, [0] * n_out))
        if params.get("jvp") is not None:
            new["jvp"] = _batched_front(params["jvp"], in_dims + tangent_dims, axis_size,
                                        [0] * (2 * n_out))
        if params.get("fwd") is not None:
            new["fwd"] = _batched_front(params["fwd"], in_dims, axis_size,
                                        [0] * len(params["fwd"].outputs))
        if params.get("bwd") is not None:
            res_and_cts = [0] * (params["num_res"] + n_out)
            specs = [0 if d == 0 else "sum" for d in tangent_dims]
            new["bwd"] = _batched_front(params["bwd"], in_dims + res_and_cts, axis_size, specs)
        outs = bind(prim, *front, **new)  # with stored residuals, fwd's outputs
        return outs, [0] * len(outs)
    return rule


_register(["stop_gradient"], _elementwise)
_register(["custom_jvp_call", "custom_vjp_call"], _custom_call)

# Control flow (cond, while_loop, scan) has its rules in compiler/batching_control.py.
from .batching_control import CONTROL_BATCH_RULES  # noqa: E402 (it imports this module)

BATCH_RULES.update(CONTROL_BATCH_RULES)

__all__ = ["BATCH_RULES", "batch_graph", "batch_values", "apply_rule", "batched_aval",
           "move_axis", "move_batch_dim", "to_front", "full_axis"]
