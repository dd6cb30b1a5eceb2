"""Facts about a fused graph that the lowerings of both backends need.

Its top-level constants (the entry point's array arguments), a node alone as a graph,
the user's source lines of a region (for comments), and contraction regions flattened
into their kernel and epilogue.
"""

from __future__ import annotations

from transfuse.ir.core import Graph, Node, Var

from .fusion import FUSED


def top_level_consts(graph: Graph) -> list[Var]:
    """Constants the entry point receives as arguments (scalars inside regions are inlined)."""
    used: list[Var] = []
    for node in graph.nodes:
        for v in node.inputs:
            if v in graph.consts and v not in used:
                used.append(v)
        if node.prim is FUSED and node.params["kind"] == "contraction":
            for inner in node.params["graph"].nodes:
                for v in inner.inputs:
                    if v in graph.consts and v not in used:
                        used.append(v)
    for v in graph.outputs:
        if v in graph.consts and v not in used:
            used.append(v)
    return used


def flatten_contractions(nodes: list[Node]) -> list[Node]:
    """Top-level nodes with each contraction region replaced by its kernel and epilogue."""
    out = []
    for node in nodes:
        if node.prim is FUSED and node.params["kind"] == "contraction":
            out.extend(node.params["graph"].nodes)
        else:
            out.append(node)
    return out


def user_lines(nodes: list[Node]) -> str:
    """The user's source lines the nodes come from, at most four, for a comment."""
    seen: list[str] = []
    for n in nodes:
        if n.source is not None and n.source.short() not in seen:
            seen.append(n.source.short())
    if len(seen) > 4:
        seen = seen[:4] + ["..."]
    return ", ".join(seen)


def single_node_graph(node: Node) -> Graph:
    """A graph of the node alone (to fuse or lower it by itself)."""
    return Graph(list(node.inputs), [node], list(node.outputs), name=node.prim.name)
