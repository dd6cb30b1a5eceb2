"""Matrix products of a scan's steps with loop constants run for all steps at once.

In an RNN cell `tanh(h @ W + x @ U + b)` the product `x @ U` depends on the step's input
and a constant only, not on the carry: it is one product of the stacked inputs, `xs @ U`
with all steps' rows (one large BLAS call), computed before the loop and read a step at a
time, instead of one small product a step. The body keeps what depends on the carry.

A `dot_general` of the body whose operands depend only on the scan's constants and its
steps' inputs (and at least one on the inputs) moves out: the nodes computing its
operands are batched over the steps (compiler/batching.py), its result becomes a new
stacked input of the scan, and its body reads it as one more step input. JAX's scan does
not do this; the products round as BLAS rounds a larger product (to the last bits).
"""

from __future__ import annotations

from collections.abc import Sequence

from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.lax import transpose
from transfuse.ir.tracing import trace_to_graph

HOIST_MAX_BYTES = 1 << 30  # stacked products above this stay in the loop (memory)


def hoist_step_products(node: Node) -> tuple[Graph, Node] | None:
    """(the graph computing the stacked products from the scan's consts and xs, the scan
    reading them as extra xs), or None when the body has no such product."""
    p = node.params
    body: Graph = p["body"]
    nc, nk, length = p["num_consts"], p["num_carry"], p["length"]
    if length < 2:
        return None
    steps = _step_only(body, nc, nk)
    products = [n for n in body.nodes if n.prim.name == "dot_general"
                and all(v in steps for v in n.inputs) and any(steps[v] for v in n.inputs)]
    products = [n for n in products
                if length * n.outputs[0].aval.size * n.outputs[0].aval.dtype.itemsize
                <= HOIST_MAX_BYTES]
    if not products:
        return None
    stacked = _stacked_products(body, nc, nk, length, products)
    hoisted = {id(n) for n in products}
    outs = [n.outputs[0] for n in products]
    new_body = Graph(list(body.inputs) + outs, [n for n in body.nodes if id(n) not in hoisted],
                     list(body.outputs), body.consts, name=body.name)
    extra = [Var(v.aval) for v in stacked.outputs]
    scan = Node(node.prim, list(node.inputs) + extra, {**p, "body": new_body},
                list(node.outputs), node.source)
    return stacked, scan


def _step_only(body: Graph, nc: int, nk: int) -> dict[Var, bool]:
    """The body's values that do not depend on the carry, each with whether it depends on
    the step's inputs (xs) rather than on constants only."""
    known: dict[Var, bool] = {v: False for v in body.inputs[:nc]}
    known.update({v: True for v in body.inputs[nc + nk:]})
    known.update({v: False for v in body.consts})
    for n in body.nodes:
        if all(v in known for v in n.inputs):
            on_xs = any(known[v] for v in n.inputs)
            known.update({v: on_xs for v in n.outputs})
    return known


def _stacked_products(body: Graph, nc: int, nk: int, length: int, products: list[Node]
                      ) -> Graph:
    """A graph of (consts..., xs...) computing each product for every step, stacked on a
    leading axis of `length`."""
    from .batching import batch_values

    inputs = list(body.inputs[:nc]) + list(body.inputs[nc + nk:])
    needed = _producers(body, [v for n in products for v in n.inputs], set(inputs))
    nodes = [n for n in body.nodes if id(n) in needed] + products
    step = Graph(inputs, nodes, [n.outputs[0] for n in products], body.consts,
                 name=f"{body.name}_products")
    dims = [None] * nc + [0] * (len(inputs) - nc)
    avals = [v.aval for v in inputs[:nc]] + [
        Aval((length, *v.aval.shape), v.aval.dtype) for v in inputs[nc:]]

    def all_steps(*args):
        outs, out_dims = batch_values(step, args, dims, length)
        return [_leading(o, d) for o, d in zip(outs, out_dims)]

    graph, _ = trace_to_graph(all_steps, avals, step.name)
    return graph


def _leading(x, dim: int | None):
    """x with its batch axis first."""
    if dim in (0, None):  # a product of an x-slice is batched; None cannot occur
        return x
    perm = [dim] + [d for d in range(x.aval.ndim) if d != dim]
    return transpose(x, perm)


def _producers(body: Graph, wanted: Sequence[Var], stop: set[Var]) -> set[int]:
    """ids of the body's nodes computing `wanted` from `stop` (inputs) and constants."""
    producer = {v: n for n in body.nodes for v in n.outputs}
    found: set[int] = set()
    todo = list(wanted)
    while todo:
        v = todo.pop()
        n = producer.get(v)
        if v in stop or n is None or id(n) in found:
            continue
        found.add(id(n))
        todo.extend(n.inputs)
    return found

