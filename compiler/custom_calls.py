"""Before lowering, a custom-derivative call is what it computes: a `call` of its `fun`
(of its `fwd` in reverse mode's form, `with_stored_residuals`).

After every transform has run (jit traces its function, transforms included, before it
optimises), the user's rules have done their work; the backends only need the primal
function, which `inline_calls` then inlines. Custom calls inside other nodes' sub-graphs
(control-flow bodies) are inlined into those sub-graphs.
"""

from __future__ import annotations

from typing import Any

from transfuse.ir.core import Graph, Node, Var, subgraphs
from transfuse.ir.custom import CUSTOM_CALLS
from transfuse.ir.primitives import PRIMITIVES

from .simplify import _rebuild, inline_calls

P = PRIMITIVES


def has_custom_calls(graph: Graph) -> bool:
    """Whether a custom call appears in graph, also inside sub-graphs."""
    return any(node.prim.name in CUSTOM_CALLS or any(
        has_custom_calls(g) for g in subgraphs(node)) for node in graph.nodes)


def _primal(p: Any) -> Any:
    """A sub-graph param with its custom calls inlined (tuples of graphs too)."""
    if isinstance(p, Graph) and has_custom_calls(p):
        return inline_calls(custom_calls_as_calls(p))
    if isinstance(p, tuple) and any(isinstance(g, Graph) for g in p):
        return tuple(_primal(g) for g in p)
    return p


def custom_calls_as_calls(graph: Graph) -> Graph:
    """graph with each custom call replaced by a `call` of its primal function."""
    if not has_custom_calls(graph):
        return graph
    nodes = []
    for node in graph.nodes:
        if node.prim.name in CUSTOM_CALLS:
            computes = node.params["fwd"] if node.params.get("saved") else node.params["fun"]
            node = Node(P["call"], node.inputs, {"graph": _primal(computes)}, node.outputs,
                        node.source)
        elif subgraphs(node):
            node = Node(node.prim, node.inputs,
                        {k: _primal(v) for k, v in node.params.items()}, node.outputs,
                        node.source)
        nodes.append(node)
    return _rebuild(graph, nodes, graph.outputs)


def _stores(node: Node) -> bool:
    return node.prim is P["custom_vjp_call"] and node.params["bwd"] is not None and \
        not node.params["saved"]


def with_stored_residuals(graph: Graph) -> Graph:
    """Reverse mode's form of graph's custom_vjp calls: each computes its `fwd`, the
    residuals extra outputs, so the forward pass stores them and the backward reads them
    (as JAX), instead of the backward running fwd again."""
    if not any(_stores(n) for n in graph.nodes):
        return graph
    nodes = []
    for node in graph.nodes:
        if _stores(node):
            fwd = node.params["fwd"]
            residuals = [Var(a) for a in fwd.out_avals[len(node.outputs):]]
            node = Node(node.prim, node.inputs, dict(node.params, saved=True),
                        node.outputs + residuals, node.source)
        nodes.append(node)
    return _rebuild(graph, nodes, graph.outputs)
