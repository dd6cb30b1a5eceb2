"""The verifier: a graph is well-formed SSA and every node agrees with its shape rule."""

from __future__ import annotations

from .core import Graph, Var, subgraphs
from .errors import VerificationError
from .primitives import PRIMITIVES


def verify(graph: Graph) -> Graph:
    """Check SSA form and avals; raise VerificationError naming the first fault."""
    defined: set[Var] = set()

    def define(v: Var, what: str) -> None:
        if v in defined:
            raise VerificationError(f"{graph.name}: {v} defined twice ({what})")
        defined.add(v)

    for v in graph.inputs:
        define(v, "input")
    for v in graph.consts:
        define(v, "const")
        if graph.consts[v].shape != v.aval.shape or graph.consts[v].dtype != v.aval.dtype:
            raise VerificationError(f"{graph.name}: constant {v} holds "
                                    f"{graph.consts[v].dtype}{graph.consts[v].shape}")
    if graph.num_captures + int(graph.has_rng) > len(graph.inputs):
        raise VerificationError(f"{graph.name}: more implicit inputs than inputs")
    for i, node in enumerate(graph.nodes):
        where = f"{graph.name}: node {i} ({node.prim.name})"
        if PRIMITIVES.get(node.prim.name) is not node.prim:
            raise VerificationError(f"{where}: unknown primitive")
        for v in node.inputs:
            if v not in defined:
                raise VerificationError(f"{where}: input {v} used before definition")
        try:
            expected = node.prim.out_avals([v.aval for v in node.inputs], node.params)
        except Exception as e:  # the shape rule rejected the node
            raise VerificationError(f"{where}: shape rule failed: {e}") from None
        actual = [v.aval for v in node.outputs]
        if expected != actual:
            raise VerificationError(f"{where}: outputs {[str(a) for a in actual]} but "
                                    f"shape rule gives {[str(a) for a in expected]}")
        for v in node.outputs:
            define(v, where)
        for sub in subgraphs(node):
            verify(sub)
    for v in graph.outputs:
        if v not in defined:
            raise VerificationError(f"{graph.name}: output {v} is not defined")
    return graph
