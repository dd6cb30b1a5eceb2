"""Forward mode through structured control flow: JVP rules of cond, while_loop and scan.

Each rule differentiates the node's sub-graphs (jvp_eval traced into a new closed graph)
and binds ONE new node of the same primitive that carries primals and tangents together:
- cond: every branch is differentiated with the same nonzero operand tangents; an output
  whose tangent is nonzero in one branch gets instantiated zeros in the others.
- while_loop / scan: which carries have a nonzero tangent is a fixpoint (a carry whose
  tangent starts at zero may become nonzero after one step: its initial tangent is then
  instantiated as zeros). The while_loop's cond graph ignores the tangents. A scan's const
  and xs tangents become extra consts and xs.
Symbolic zeros (None) stay out of the new nodes: nothing is carried for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transfuse.compiler import jvp
from transfuse.ir import lax
from transfuse.ir.control import scan_parts
from transfuse.ir.core import Aval, Graph
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.tracing import bind, current_builder, inline, source_of, trace_to_graph

P = PRIMITIVES


def index_ranges(n_items: Sequence[int]) -> list[range]:
    """Consecutive index ranges of the given sizes."""
    out, start = [], 0
    for n in n_items:
        out.append(range(start, start + n))
        start += n
    return out


def jvp_subgraph(graph: Graph, nonzero: Sequence[bool], in_groups: Sequence[int],
                 out_groups: Sequence[int], out_nonzero: Sequence[bool] | None = None
                 ) -> tuple[Graph, list[bool]]:
    """The JVP of a closed sub-graph, laid out group by group (primals, then tangents).

    Inputs: for each input group, its primals then the tangents marked in `nonzero`.
    Outputs: for each output group, its primals then the tangents marked in
    `out_nonzero` (zeros instantiated where the tangent is symbolically zero); None: the
    outputs whose tangent comes out nonzero. Returns the graph and those natural flags.
    """
    natural: list[bool] = []
    want = None if out_nonzero is None else list(out_nonzero)

    def fn(*args: Any) -> list[Any]:
        given = iter(args)
        primals: list[Any] = [None] * len(graph.inputs)
        tangents: list[Any] = [None] * len(graph.inputs)
        for group in index_ranges(in_groups):
            for i in group:
                primals[i] = next(given)
            for i in group:
                if nonzero[i]:
                    tangents[i] = next(given)
        outs, out_tangents = jvp.jvp_eval(graph, primals, tangents)
        natural.extend(t is not None for t in out_tangents)
        keep = natural if want is None else want
        assert all(k or not n for k, n in zip(keep, natural)), "a nonzero tangent dropped"
        results: list[Any] = []
        for group in index_ranges(out_groups):
            results += [outs[i] for i in group]
            results += [jvp.instantiate(out_tangents[i], outs[i]) for i in group if keep[i]]
        return results

    in_avals = []
    for group in index_ranges(in_groups):
        in_avals += [graph.inputs[i].aval for i in group]
        in_avals += [graph.inputs[i].aval for i in group if nonzero[i]]
    return trace_closed(fn, in_avals, f"jvp_{graph.name}"), natural


def trace_closed(fn: Callable, in_avals: Sequence[Aval], name: str) -> Graph:
    """fn traced into a closed graph (a control-flow body), its nodes attributed to the
    node being differentiated unless a rule inside says better."""
    builder = current_builder()
    where = builder.source_override if builder is not None else None

    def at_node(*args: Any) -> list[Any]:
        with source_of(where):
            return fn(*args)

    graph, implicit = trace_to_graph(at_node, list(in_avals), name=name)
    assert not implicit and not graph.num_captures, f"{name} captured an outer value"
    return graph


def _nonzero(tangents: Sequence[Any]) -> list[bool]:
    return [t is not None for t in tangents]


def _present(tangents: Sequence[Any]) -> list[Any]:
    return [t for t in tangents if t is not None]


def _instantiated(primals: Sequence[Any], tangents: Sequence[Any], mask: Sequence[bool]
                  ) -> list[Any]:
    """The tangents marked in mask, zeros where a marked one is symbolically zero."""
    return [jvp.instantiate(t, p) for p, t, m in zip(primals, tangents, mask) if m]


def _split_outputs(outs: Sequence[Any], groups: Sequence[int], masks: Sequence[Sequence[bool]]
                   ) -> tuple[list[Any], list[Any]]:
    """A jvp_subgraph-laid-out node's outputs as (primals, tangents with None for zeros)."""
    given = iter(outs)
    primals: list[Any] = []
    tangents: list[Any] = []
    for n, mask in zip(groups, masks):
        primals += [next(given) for _ in range(n)]
        tangents += [next(given) if m else None for m in mask]
    return primals, tangents


# ---------------------------------------------------------------------------------------
# cond


def cond_jvp(primals, tangents, *, branches):
    """One cond over the branches' JVPs, agreeing on which output tangents are nonzero."""
    index, *operands = primals
    nonzero = _nonzero(tangents[1:])
    n_ops, n_out = len(operands), len(branches[0].outputs)
    traced = [jvp_subgraph(b, nonzero, [n_ops], [n_out]) for b in branches]
    out_nonzero = [any(flags) for flags in zip(*(natural for _, natural in traced))]
    new_branches = tuple(_forced(b, nonzero, [n_ops], [n_out], out_nonzero, t)
                         for b, t in zip(branches, traced))
    outs = bind(P["cond"], index, *operands, *_present(tangents[1:]), branches=new_branches)
    return _split_outputs(outs, [n_out], [out_nonzero])


# ---------------------------------------------------------------------------------------
# while_loop and scan: the carries' nonzero tangents are a fixpoint


def _forced(graph: Graph, nonzero: list[bool], in_groups: list[int], out_groups: list[int],
            out_nonzero: list[bool], traced: tuple[Graph, list[bool]]) -> Graph:
    """jvp_subgraph with these output tangents: `traced` (a graph and its natural flags,
    from the same inputs) when it already has exactly them, else traced again."""
    if traced[1] == list(out_nonzero):
        return traced[0]
    return jvp_subgraph(graph, nonzero, in_groups, out_groups, out_nonzero)[0]


def _carry_fixpoint(body: Graph, lead: list[bool], carry: list[bool], tail: list[bool],
                    in_groups: list[int], out_groups: list[int]
                    ) -> tuple[list[bool], tuple[Graph, list[bool]]]:
    """Which carries have a nonzero tangent once the body has run any number of times,
    and the body's JVP traced with them (with its natural output flags)."""
    while True:
        traced = jvp_subgraph(body, lead + carry + tail, in_groups, out_groups)
        grown = [c or n for c, n in zip(carry, traced[1][:len(carry)])]
        if grown == carry:
            return carry, traced
        carry = grown


def while_jvp(primals, tangents, *, cond_graph, body_graph, cond_nconsts, body_nconsts):
    """One while_loop carrying the tangents; the cond graph reads only the primal carry."""
    n_cc, n_bc = cond_nconsts, body_nconsts
    cond_consts = list(primals[:n_cc])
    body_consts, init = list(primals[n_cc:n_cc + n_bc]), list(primals[n_cc + n_bc:])
    t_consts, t_init = list(tangents[n_cc:n_cc + n_bc]), list(tangents[n_cc + n_bc:])
    groups = [n_bc, len(init)]
    mask, traced = _carry_fixpoint(body_graph, _nonzero(t_consts), _nonzero(t_init), [],
                                   groups, [len(init)])
    body = _forced(body_graph, _nonzero(t_consts) + mask, groups, [len(init)], mask, traced)
    carry_tangent_avals = [lax.aval(x) for x, m in zip(init, mask) if m]
    test = trace_closed(lambda *args: inline(cond_graph, args[:n_cc + len(init)]),
                        [lax.aval(x) for x in cond_consts + init] + carry_tangent_avals,
                        f"jvp_{cond_graph.name}")
    outs = bind(P["while_loop"], *cond_consts, *body_consts, *_present(t_consts), *init,
                *_instantiated(init, t_init, mask), cond_graph=test, body_graph=body,
                cond_nconsts=n_cc, body_nconsts=n_bc + sum(_nonzero(t_consts)))
    return _split_outputs(outs, [len(init)], [mask])


def scan_jvp(primals, tangents, *, body, length, reverse, num_consts, num_carry):
    """One scan carrying the tangents; const and xs tangents ride as extra consts and xs."""
    consts, init, xs = scan_parts(primals, num_consts, num_carry)
    t_consts, t_init, t_xs = scan_parts(tangents, num_consts, num_carry)
    in_groups = [num_consts, num_carry, len(xs)]
    out_groups = [num_carry, len(body.outputs) - num_carry]
    lead, tail = _nonzero(t_consts), _nonzero(t_xs)
    mask, traced = _carry_fixpoint(body, lead, _nonzero(t_init), tail, in_groups, out_groups)
    y_mask = traced[1][num_carry:]
    new_body = _forced(body, lead + mask + tail, in_groups, out_groups, mask + y_mask, traced)
    outs = bind(P["scan"], *consts, *_present(t_consts), *init,
                *_instantiated(init, t_init, mask), *xs, *_present(t_xs), body=new_body,
                length=length, reverse=reverse, num_consts=num_consts + sum(lead),
                num_carry=num_carry + sum(mask))
    return _split_outputs(outs, out_groups, [mask, y_mask])


__all__ = ["index_ranges", "trace_closed", "jvp_subgraph", "cond_jvp", "while_jvp", "scan_jvp"]
