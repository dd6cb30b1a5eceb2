"""A transpose that reaches a contraction through elementwise ops is folded into it.

`dot_general(f(transpose(x)), y)`, f a chain of elementwise ops each used once, becomes
`dot_general(f'(x), y)` with the contraction's dimension numbers read through the
permutation and f's other operands (vectors, scalars) transposed instead: a
few-element transpose instead of a pass that reads all of x at a stride. BLAS takes
either layout of an operand (its transpose flags), so the product costs the same. The
Hessian has this shape: its basis product (compiler/structured_basis.py) is transposed,
scaled by the curvature and contracted with A again. Each element is computed by the same
operations on the same values, so results are unchanged bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transfuse.compiler.simplify import _rebuild, is_pure
from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.primitives import PRIMITIVES

P = PRIMITIVES


def sink_transposes(graph: Graph) -> Graph:
    """The graph with each such transpose folded into its contraction."""
    if not is_pure(graph) or not any(n.prim is P["dot_general"] for n in graph.nodes):
        return graph
    from transfuse.compiler.fusion import ELEMENTWISE, fusion_class  # fusion imports simplify

    uses = graph.use_counts()
    producer = graph.producers()
    replaced: dict[int, list[Node]] = {}  # id(old node) -> its replacement nodes
    for dot in graph.nodes:
        if dot.prim is not P["dot_general"]:
            continue
        for side in (0, 1):
            found = _chain(dot.inputs[side], producer, uses, graph, ELEMENTWISE, fusion_class)
            if found is None or any(id(n) in replaced for n in found[1] + [found[0], dot]):
                continue
            params = _folded_params(dot, side, found[0].params["permutation"])
            if params is not None:
                _rewrite(dot, side, params, *found, replaced)
                break
    if not replaced:
        return graph
    nodes = [new for n in graph.nodes for new in replaced.get(id(n), [n])]
    return _rebuild(graph, nodes, list(graph.outputs))


def _chain(v: Var, producer: dict, uses: dict, graph: Graph, elementwise: str,
           fusion_class) -> tuple[Node, list[Node]] | None:
    """(transpose, elementwise chain from it to v), each value used once, or None."""
    chain: list[Node] = []
    shape = v.aval.shape
    while True:
        node = producer.get(v)
        if node is None or uses.get(v) != 1 or v in graph.outputs:
            return None
        if node.prim is P["transpose"]:
            return node, chain[::-1]
        if (fusion_class(node) != elementwise or node.prim.effect is not None
                or node.prim.multiple_results or node.outputs[0].aval.shape != shape):
            return None
        links = [u for u in node.inputs if u.aval.shape == shape and u in producer]
        if not links or any(u is not links[0] for u in links):
            return None
        chain.append(node)
        v = links[0]


def _folded_params(dot: Node, side: int, perm: tuple[int, ...]) -> dict | None:
    """dot's dimension numbers with operand `side` un-transposed, if its free axes keep
    their order (the product's output layout stays the same)."""
    (lc, rc), (lb, rb) = dot.params["dimension_numbers"]
    contract, batch = (lc, lb) if side == 0 else (rc, rb)
    free = [a for a in range(len(perm)) if a not in contract and a not in batch]
    if [perm[a] for a in free] != sorted(perm[a] for a in free):
        return None
    contract = tuple(perm[a] for a in contract)
    batch = tuple(perm[a] for a in batch)
    if side == 0:
        return {"dimension_numbers": ((contract, tuple(rc)), (batch, tuple(rb)))}
    return {"dimension_numbers": ((tuple(lc), contract), (tuple(lb), batch))}


def _rewrite(dot: Node, side: int, params: dict, transpose: Node, chain: list[Node],
             replaced: dict[int, list[Node]]) -> None:
    """Record the chain recomputed on transpose's input, and the contraction of its end."""
    perm = tuple(transpose.params["permutation"])
    inverse = tuple(int(a) for a in np.argsort(perm))
    current, link = transpose.inputs[0], transpose.outputs[0]
    replaced[id(transpose)] = []
    for node in chain:
        new_nodes: list[Node] = []
        ins = [current if u is link else _untransposed(u, inverse, new_nodes, node.source)
               for u in node.inputs]
        out = Var(Aval(current.aval.shape, node.outputs[0].aval.dtype))
        new_nodes.append(Node(node.prim, ins, node.params, [out], node.source))
        replaced[id(node)] = new_nodes
        current, link = out, node.outputs[0]
    operands = list(dot.inputs)
    operands[side] = current
    replaced[id(dot)] = [Node(dot.prim, operands, params, list(dot.outputs), dot.source)]


def _untransposed(v: Var, inverse: tuple[int, ...], nodes: list[Node], source: Any) -> Var:
    """An operand broadcast against the transposed value, laid out for the untransposed."""
    ndim = len(inverse)
    if v.aval.ndim == 0:
        return v
    if v.aval.ndim < ndim:  # numpy broadcasting: leading unit axes
        lead = tuple(range(ndim - v.aval.ndim))
        expanded = Var(Aval((1,) * len(lead) + v.aval.shape, v.aval.dtype))
        nodes.append(Node(P["expand_dims"], [v], {"dimensions": lead}, [expanded], source))
        v = expanded
    out = Var(Aval(tuple(v.aval.shape[a] for a in inverse), v.aval.dtype))
    nodes.append(Node(P["transpose"], [v], {"permutation": inverse}, [out], source))
    return out
