"""Batching rules for structured control flow: cond, while_loop, scan (issue #17).

A loop or branch whose control does not depend on the batch stays one node with a batched
body. Control that differs per lane (a batched branch index, a batched while predicate)
becomes a loop over the lanes, a `scan` with no carry whose body is the original node on
one lane's values: each lane runs its own branch and its own number of iterations, where
JAX runs both branches and selects, or runs every lane until the last one stops. See
docs/vmap.md, "Control flow".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfuse.ir import lax
from transfuse.ir.control import scan_parts
from transfuse.ir.core import Graph
from transfuse.ir.errors import BatchingError
from transfuse.ir.primitives import PRIMITIVES, Primitive
from transfuse.ir.tracing import bind, current_builder, source_of, trace_to_graph

from .batching import Dim, _per_example_aval, batch_values, batched_aval, move_axis, to_front

P = PRIMITIVES


# ---------------------------------------------------------------------------------------
# Helpers


def _closed(fn: Any, in_avals: list, name: str) -> Graph:
    """fn traced into a closed graph (a control-flow body takes no captures); its nodes
    keep the user's line of the node being batched."""
    outer = current_builder()
    source = None if outer is None else outer.source_override

    def located(*args: Any) -> Any:
        with source_of(source):
            return fn(*args)

    graph, implicit = trace_to_graph(located, in_avals, name)
    if implicit:
        raise BatchingError(f"vmap: the batched body of {name} captured outer values")
    return graph


def batch_body(graph: Graph, dims: Sequence[Dim], axis_size: int, force: Sequence[bool]
               ) -> tuple[Graph, list[Dim]]:
    """graph batched with its inputs at `dims`; every batched output moved to dim 0, and
    the outputs marked in `force` broadcast to dim 0 when they come out unbatched."""
    out_dims: list[list[Dim]] = []

    def body(*args: Any) -> list[Any]:
        outs, odims = batch_values(graph, args, dims, axis_size)
        moved = [o if d is None and not f else to_front(o, d, axis_size)
                 for o, d, f in zip(outs, odims, force)]
        out_dims.append([None if d is None and not f else 0 for d, f in zip(odims, force)])
        return moved

    in_avals = [batched_aval(v.aval, d, axis_size) for v, d in zip(graph.inputs, dims)]
    return _closed(body, in_avals, graph.name), out_dims[0]


def _carry_fixpoint(graph: Graph, lead_dims: list[Dim], carried: list[bool],
                    rest_dims: list[Dim], axis_size: int) -> tuple[Graph, list[Dim], list[bool]]:
    """A loop body batched with its carry at dim 0 where `carried` (grown until the
    carry out is batched only where the carry in is): (graph, out dims, carried)."""
    num_carry = len(carried)
    while True:
        dims = lead_dims + [0 if c else None for c in carried] + rest_dims
        extra = len(graph.outputs) - num_carry
        batched, out_dims = batch_body(graph, dims, axis_size, carried + [False] * extra)
        grown = [c or d is not None for c, d in zip(carried, out_dims)]
        if grown == carried:
            return batched, out_dims, carried
        carried = grown


def _consts_to_front(args: Sequence[Any], dims: Sequence[Dim]) -> tuple[list, list[Dim]]:
    """Loop-invariant operands with their batch dim at 0 (moved once, outside the loop)."""
    return ([x if d is None else move_axis(x, d, 0) for x, d in zip(args, dims)],
            [None if d is None else 0 for d in dims])


def _init_carry(args: Sequence[Any], dims: Sequence[Dim], carried: Sequence[bool],
                axis_size: int) -> list[Any]:
    """Initial carries at dim 0 where carried (broadcast if unbatched), else as they are."""
    return [to_front(x, d, axis_size) if c else x for x, d, c in zip(args, dims, carried)]


def lane_by_lane(prim: Primitive, axis_size: int, args: Sequence[Any], dims: Sequence[Dim],
                 params: dict[str, Any]) -> tuple[list, list[Dim]]:
    """prim run once per lane: a scan with no carry (a map) over the batch axis whose body
    is prim on that lane's values; unbatched operands are the scan's consts."""
    shared = [i for i, d in enumerate(dims) if d is None]
    per_lane = [i for i, d in enumerate(dims) if d is not None]

    def one_lane(*values: Any) -> list[Any]:
        full: list[Any] = [None] * len(args)
        for i, v in zip(shared + per_lane, values):
            full[i] = v
        outs = bind(prim, *full, **params)
        return list(outs) if prim.multiple_results else [outs]

    in_avals = ([lax.aval(args[i]) for i in shared]
                + [_per_example_aval(args[i], dims[i]) for i in per_lane])
    body = _closed(one_lane, in_avals, f"{prim.name}_per_lane")
    xs = [move_axis(args[i], dims[i], 0) for i in per_lane]
    outs = bind(P["scan"], *(args[i] for i in shared), *xs, body=body, length=axis_size,
                reverse=False, num_consts=len(shared), num_carry=0)
    return list(outs), [0] * len(outs)


# ---------------------------------------------------------------------------------------
# cond


def _cond(axis_size: int, args: list, dims: list, *, branches: tuple[Graph, ...]
          ) -> tuple[list, list[Dim]]:
    if dims[0] is not None:
        # Each lane runs its own branch (not every branch and a select).
        return lane_by_lane(P["cond"], axis_size, args, dims, {"branches": branches})
    operand_dims = list(dims[1:])
    num_outs = len(branches[0].outputs)
    first = [batch_body(b, operand_dims, axis_size, [False] * num_outs) for b in branches]
    # An output batched in one branch is batched in all: the others broadcast it.
    force = [any(out_dims[j] is not None for _, out_dims in first) for j in range(num_outs)]
    batched = tuple(g if [d is not None for d in out_dims] == force
                    else batch_body(b, operand_dims, axis_size, force)[0]
                    for b, (g, out_dims) in zip(branches, first))
    outs = bind(P["cond"], *args, branches=batched)
    return list(outs), [0 if f else None for f in force]


# ---------------------------------------------------------------------------------------
# while_loop


def _while_loop(axis_size: int, args: list, dims: list, *, cond_graph: Graph,
                body_graph: Graph, cond_nconsts: int, body_nconsts: int
                ) -> tuple[list, list[Dim]]:
    params = dict(cond_graph=cond_graph, body_graph=body_graph, cond_nconsts=cond_nconsts,
                  body_nconsts=body_nconsts)
    nconsts = cond_nconsts + body_nconsts
    consts, const_dims = _consts_to_front(args[:nconsts], dims[:nconsts])
    init, init_dims = args[nconsts:], dims[nconsts:]
    cond_dims, body_dims = const_dims[:cond_nconsts], const_dims[cond_nconsts:]
    body, _, carried = _carry_fixpoint(body_graph, body_dims,
                                       [d is not None for d in init_dims], [], axis_size)
    carry_dims = [0 if c else None for c in carried]
    test, (pred_dim,) = batch_body(cond_graph, cond_dims + carry_dims, axis_size, [False])
    if pred_dim is not None:
        # Each lane runs its own number of iterations (not all until the last one stops).
        return lane_by_lane(P["while_loop"], axis_size, args, dims, params)
    outs = bind(P["while_loop"], *consts, *_init_carry(init, init_dims, carried, axis_size),
                cond_graph=test, body_graph=body, cond_nconsts=cond_nconsts,
                body_nconsts=body_nconsts)
    return list(outs), carry_dims


# ---------------------------------------------------------------------------------------
# scan


def _scan(axis_size: int, args: list, dims: list, *, body: Graph, length: int,
          reverse: bool, num_consts: int, num_carry: int) -> tuple[list, list[Dim]]:
    consts, init, xs = scan_parts(args, num_consts, num_carry)
    const_dims, init_dims, x_dims = scan_parts(dims, num_consts, num_carry)
    consts, const_dims = _consts_to_front(consts, const_dims)
    # The scan axis stays 0, the batch axis goes to 1: a step's slice is batched at 0.
    xs = [x if d is None else move_axis(x, d, 1) for x, d in zip(xs, x_dims)]
    slice_dims = [None if d is None else 0 for d in x_dims]
    batched, out_dims, carried = _carry_fixpoint(
        body, const_dims, [d is not None for d in init_dims], slice_dims, axis_size)
    outs = bind(P["scan"], *consts, *_init_carry(init, init_dims, carried, axis_size), *xs,
                body=batched, length=length, reverse=reverse, num_consts=num_consts,
                num_carry=num_carry)
    y_dims = [None if d is None else 1 for d in out_dims[num_carry:]]
    return list(outs), [0 if c else None for c in carried] + y_dims


CONTROL_BATCH_RULES = {
    P["cond"]: _cond,
    P["while_loop"]: _while_loop,
    P["scan"]: _scan,
}

__all__ = ["CONTROL_BATCH_RULES", "batch_body", "lane_by_lane"]
