"""Dead-code elimination through control-flow nodes: drop the outputs of a `cond`,
`while_loop`, `scan` (or transfuse.compile's `aot_compiled`) that nothing reads, and then
what only they needed.

`dce` keeps or drops a node whole. A control-flow node computing primals and tangents
together (its JVP) whose tangent outputs are unused, as in the primal part of
`linearize`, would still run its tangent computation; `prune_outputs` shrinks it to
the outputs that are read. A loop carry stays while a kept output depends on it (a
fixpoint, as JAX's dce rules of scan and while do), and a while_loop keeps every carry its
condition reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transfuse.compiler.simplify import dce, is_pure
from transfuse.ir.core import Graph, Node, Var


def _reads(graph: Graph, outputs: Sequence[Var]) -> set[int]:
    """The input positions the given outputs depend on."""
    needed = set(outputs)
    for node in reversed(graph.nodes):
        if any(v in needed for v in node.outputs):
            needed.update(node.inputs)
    return {i for i, v in enumerate(graph.inputs) if v in needed}


def _restrict(graph: Graph, inputs: Sequence[int], outputs: Sequence[Var]) -> Graph:
    """graph on a subset of its inputs, returning `outputs`, pruned recursively."""
    return prune_outputs(Graph([graph.inputs[i] for i in inputs], graph.nodes, list(outputs),
                               graph.consts, name=graph.name))


def _live_carries(graph: Graph, first: int, live: list[bool], extra_outs: list[Var],
                  always: set[int] = frozenset()) -> tuple[list[bool], set[int]]:
    """The carries (inputs first.., outputs 0..) needed by the live ones and extra_outs,
    and the input positions those outputs read."""
    while True:
        outs = [v for v, keep in zip(graph.outputs, live) if keep] + extra_outs
        reads = _reads(graph, outs) | always
        grown = [keep or first + i in reads for i, keep in enumerate(live)]
        if grown == live:
            return live, reads
        live = grown


def _prune_cond(node: Node, used: list[bool]) -> Node:
    branches = node.params["branches"]
    outs = [[v for v, u in zip(b.outputs, used) if u] for b in branches]
    reads = set().union(*(_reads(b, o) for b, o in zip(branches, outs)))
    keep = sorted(reads)
    new = tuple(_restrict(b, keep, o) for b, o in zip(branches, outs))
    return Node(node.prim, [node.inputs[0]] + [node.inputs[1 + i] for i in keep],
                dict(node.params, branches=new), _kept(node.outputs, used), node.source)


def _prune_scan(node: Node, used: list[bool]) -> Node:
    p = node.params
    body, n_consts, n_carry = p["body"], p["num_consts"], p["num_carry"]
    ys = [v for v, u in zip(body.outputs[n_carry:], used[n_carry:]) if u]
    live, reads = _live_carries(body, n_consts, list(used[:n_carry]), ys)
    carries = [n_consts + i for i in range(n_carry) if live[i]]
    consts = [i for i in range(n_consts) if i in reads]
    xs = [i for i in range(n_consts + n_carry, len(body.inputs)) if i in reads]
    outs = [v for v, keep in zip(body.outputs, live) if keep] + ys
    new_body = _restrict(body, consts + carries + xs, outs)
    kept_outputs = _kept(node.outputs, live + list(used[n_carry:]))
    return Node(node.prim, [node.inputs[i] for i in consts + carries + xs],
                dict(p, body=new_body, num_consts=len(consts), num_carry=len(carries)),
                kept_outputs, node.source)


def _prune_while(node: Node, used: list[bool]) -> Node:
    p = node.params
    test, body = p["cond_graph"], p["body_graph"]
    n_cc, n_bc = p["cond_nconsts"], p["body_nconsts"]
    test_reads = _reads(test, test.outputs)
    in_test = {i - n_cc for i in test_reads if i >= n_cc}
    live, reads = _live_carries(body, n_bc, [u or i in in_test for i, u in enumerate(used)],
                                [], {n_bc + i for i in in_test})
    carries = [i for i in range(len(used)) if live[i]]
    cond_consts = [i for i in range(n_cc) if i in test_reads]
    body_consts = [i for i in range(n_bc) if i in reads]
    new_test = _restrict(test, cond_consts + [n_cc + i for i in carries], test.outputs)
    new_body = _restrict(body, body_consts + [n_bc + i for i in carries],
                         [body.outputs[i] for i in carries])
    inputs = ([node.inputs[i] for i in cond_consts]
              + [node.inputs[n_cc + i] for i in body_consts]
              + [node.inputs[n_cc + n_bc + i] for i in carries])
    return Node(node.prim, inputs,
                dict(p, cond_graph=new_test, body_graph=new_body,
                     cond_nconsts=len(cond_consts), body_nconsts=len(body_consts)),
                _kept(node.outputs, live), node.source)


def _prune_aot_compiled(node: Node, used: list[bool]) -> Node:
    # transfuse.compile's compiled graph (a CompiledGraph, transfuse/compile/compiled_call.py)
    # compiles its graph restricted to the read outputs: grad w.r.t. the parameters only
    # never computes the data's cotangents. A callable without `restricted` runs whole.
    restrict = getattr(node.params["fn"], "restricted", None)
    if restrict is None:
        return node
    fn = restrict(used)
    return Node(node.prim, node.inputs, dict(node.params, graph=fn.graph, fn=fn),
                _kept(node.outputs, used), node.source)


def _kept(values: Sequence[Var], flags: Sequence[bool]) -> list[Var]:
    return [v for v, keep in zip(values, flags) if keep]


PRUNERS: dict[str, Callable[[Node, list[bool]], Node]] = {
    "cond": _prune_cond, "scan": _prune_scan, "while_loop": _prune_while,
    "aot_compiled": _prune_aot_compiled}


def prune_outputs(graph: Graph) -> Graph:
    """`dce`, also dropping the unread outputs of control-flow nodes (recursively)."""
    live: set[Var] = set(graph.outputs)
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        used = [v in live for v in node.outputs]
        effectful = node.prim.effect in ("mutation", "view") and not is_pure(graph)
        if not (any(used) or effectful):
            continue
        if not all(used) and node.prim.name in PRUNERS:
            node = PRUNERS[node.prim.name](node, used)
        live.update(node.inputs)
        kept.append(node)
    kept.reverse()
    return dce(Graph(graph.inputs, kept, graph.outputs, graph.consts,
                     num_captures=graph.num_captures, has_rng=graph.has_rng, name=graph.name,
                     in_tree=graph.in_tree, out_tree=graph.out_tree,
                     mutated_inputs=graph.mutated_inputs))


__all__ = ["prune_outputs"]
