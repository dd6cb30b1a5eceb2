"""Two scans of the same operands whose bodies compute the same carry run as one loop.

Reverse mode makes them: `jit(grad(f))` of a scan holds the primal scan (its outputs feed
the cotangent) and, in the backward part, the same loop again returning the body's
residuals. Both run over the same constants, initial carry and inputs, and their bodies
compute the same carry; one loop whose body computes the carry once and returns both
scans' stacked outputs does the work of two.
"""

from __future__ import annotations

from transfuse.ir.core import Graph, Node, Var

SCAN_PARAMS = ("length", "reverse", "num_consts", "num_carry")


def find_twin(nodes: list[Node], node: Node) -> tuple[Node, Graph] | None:
    """A later scan of `nodes` with node's operands and carry, and the merged body (node's
    carry and stacked outputs, then the twin's stacked outputs)."""
    p = node.params
    start = next((i for i, n in enumerate(nodes) if n is node), None)
    if start is None:
        return None
    for other in nodes[start + 1:]:
        if other.prim is not node.prim or list(other.inputs) != list(node.inputs) or any(
                other.params[k] != p[k] for k in SCAN_PARAMS):
            continue
        body = merged_body(p["body"], other.params["body"], p["num_carry"])
        if body is not None:
            return other, body
    return None


def merged_body(first: Graph, second: Graph, num_carry: int) -> Graph | None:
    """One body computing first's outputs and second's stacked outputs, if (after common
    subexpressions are merged) both compute the same carry; else None."""
    from .simplify import cse

    rename = dict(zip(second.inputs, first.inputs))
    nodes = list(first.nodes) + [
        Node(n.prim, [rename.get(v, v) for v in n.inputs], n.params, n.outputs, n.source)
        for n in second.nodes]
    outs = [rename.get(v, v) for v in second.outputs]
    both = Graph(list(first.inputs), nodes, list(first.outputs) + outs,
                 {**first.consts, **second.consts}, name=first.name)
    merged = cse(both)
    n = len(first.outputs)
    carry_a, carry_b = merged.outputs[:num_carry], merged.outputs[n:n + num_carry]
    if any(a is not b for a, b in zip(carry_a, carry_b)):
        return None
    return Graph(merged.inputs, merged.nodes, merged.outputs[:n] + merged.outputs[n + num_carry:],
                 merged.consts, name=first.name)


def twin_outputs(node: Node, twin: Node) -> list[Var]:
    """The merged scan's outputs: node's, then the twin's stacked outputs."""
    return list(node.outputs) + list(twin.outputs[node.params["num_carry"]:])
