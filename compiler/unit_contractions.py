"""reshape(dot_general(expand_dims(x), y)) that drops the unit axes again is dot_general(x, y).

A vmap over a basis of one row (jacrev of a scalar function, inside hessian) leaves a
unit axis on one operand of a contraction and a reshape that removes it from the result.
Without it the contraction writes the same numbers (the same sums, in the same order), and
a transpose of its result can then fold into the contraction (compiler/fusion.py
`fold_transposes`), so the Hessian's last copy goes.
"""

from __future__ import annotations

import numpy as np
from transfuse.compiler.simplify import _rebuild, is_pure
from transfuse.ir.core import Graph, Node, Var
from transfuse.ir.primitives import PRIMITIVES

P = PRIMITIVES


def drop_unit_axes(graph: Graph) -> Graph:
    """The graph with each such reshape of a contraction made a contraction of x."""
    if not is_pure(graph) or not any(n.prim is P["dot_general"] for n in graph.nodes):
        return graph
    uses = graph.use_counts()
    producer = graph.producers()
    replaced: dict[int, Node | None] = {}
    for node in graph.nodes:
        dot = producer.get(node.inputs[0]) if node.prim is P["reshape"] else None
        if (dot is None or dot.prim is not P["dot_general"] or uses[node.inputs[0]] != 1
                or node.inputs[0] in graph.outputs):
            continue
        new = _without_units(dot, node, producer)
        if new is not None:
            replaced[id(node)], replaced[id(dot)] = new, None
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes]
    return _rebuild(graph, [n for n in nodes if n is not None], list(graph.outputs))


def _without_units(dot: Node, reshape: Node, producer: dict[Var, Node]) -> Node | None:
    """dot_general of the operands before their expand_dims, if it has reshape's shape."""
    (lc, rc), (lb, rb) = dot.params["dimension_numbers"]
    if lb or rb:
        return None
    operands, contracts, free_shapes = [], [], []
    for v, contract in ((dot.inputs[0], lc), (dot.inputs[1], rc)):
        src = producer.get(v)
        units = tuple(src.params["dimensions"]) if (
            src is not None and src.prim is P["expand_dims"]
            and not set(src.params["dimensions"]) & set(contract)) else ()
        operand = src.inputs[0] if units else v
        # a contracted axis's index once the unit axes before it are gone
        contracts.append(tuple(int(a - np.sum(np.array(units) < a)) for a in contract))
        operands.append(operand)
        free_shapes.append(tuple(s for a, s in enumerate(v.aval.shape)
                                 if a not in contract and a not in units))
    if operands == list(dot.inputs):
        return None
    if free_shapes[0] + free_shapes[1] != tuple(reshape.params["new_sizes"]):
        return None
    params = {"dimension_numbers": ((contracts[0], contracts[1]), ((), ()))}
    return Node(dot.prim, operands, params, list(reshape.outputs), dot.source)
