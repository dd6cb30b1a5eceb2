"""functionalize: remove mutation and aliasing from a graph (a graph-to-graph rewrite).

STUB (to be replaced by the functionalize issue): handles graphs whose views are never
written through (views become pure copies); graphs with `assign` raise NotImplementedError.
"""

from __future__ import annotations

from transfuse.ir.core import Graph, Node, Var
from transfuse.ir.primitives import PRIMITIVES

P = PRIMITIVES
VIEW_TO_PURE = {"view_slice": "slice", "view_reshape": "reshape",
                "view_transpose": "transpose"}


def has_effects(graph: Graph) -> bool:
    return graph.has_effect("view") or graph.has_effect("mutation")


def functionalize_graph(graph: Graph, remove: str = "mutations") -> Graph:
    """A graph without `assign` nodes (and without views for 'mutations_and_views')."""
    if graph.has_effect("mutation"):
        raise NotImplementedError("functionalize of mutating graphs is not implemented yet")
    if remove == "mutations":
        return graph
    nodes = [Node(P[VIEW_TO_PURE[n.prim.name]], n.inputs, n.params, n.outputs, n.source)
             if n.prim.name in VIEW_TO_PURE else n for n in graph.nodes]
    return Graph(graph.inputs, nodes, graph.outputs, graph.consts, graph.num_captures,
                 graph.has_rng, graph.name, graph.in_tree, graph.out_tree)


def prepare(graph: Graph) -> Graph:
    """The pure graph every transform works on: no mutation, no views."""
    if not has_effects(graph):
        return graph
    return functionalize_graph(graph, remove="mutations_and_views")


__all__ = ["functionalize_graph", "prepare", "has_effects", "Var"]
