"""Matrix products out of a scan's loop: before it (the steps' inputs) and after it (sums).

In an RNN cell `tanh(h @ W + x @ U + b)` the product `x @ U` depends on the step's input
and a constant only, not on the carry: it is one product of the stacked inputs, `xs @ U`
with all steps' rows (one large BLAS call), computed before the loop and read a step at a
time, instead of one small product a step. The body keeps what depends on the carry.

A `dot_general` of the body whose operands depend only on the scan's constants and its
steps' inputs (and at least one on the inputs) moves out: the nodes computing its
operands are batched over the steps (compiler/batching.py), its result becomes a new
stacked input of the scan, and its body reads it as one more step input. JAX's scan does
not do this; the products round as BLAS rounds a larger product (to the last bits).

The other way round, a carry that only accumulates products (`dW += h.T @ dz` in the
backward loop of an RNN) is one product over all steps after the loop: see
`sink_accumulations`.
"""

from __future__ import annotations

from collections.abc import Sequence

from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.lax import transpose
from transfuse.ir.tracing import trace_to_graph

HOIST_MAX_BYTES = 1 << 30  # stacks above this stay in the loop (memory)


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
    producer = body.producers()
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



# ---------------------------------------------------------------------------------------
# Accumulated products: summed after the loop


def sink_accumulations(node: Node) -> tuple[Node, Graph, list[Var], list[Var]] | None:
    """(the scan without its accumulated carries, stacking their products' operands
    instead; a graph computing those carries' final values; its inputs (initial carries,
    stacked operands) and outputs as the scan's values), or None.

    A carry updated only as `c = c + dot(p, q)` (a reverse-mode scan accumulating a weight
    gradient, `dW += h.T @ dz`) is `init + sum over the steps of dot(p, q)`: one product
    contracting the steps too, after the loop, instead of a small product and an
    accumulation of the whole carry each step. An operand that is a step's input is read
    from the scan's stacked inputs; any other is stacked as an extra output.
    """
    p = node.params
    body: Graph = p["body"]
    nc, nk, length = p["num_consts"], p["num_carry"], p["length"]
    if length < 2:
        return None
    found = [f for f in _accumulations(body, nc, nk)
             if sum(length * v.aval.size * v.aval.dtype.itemsize for v in f[2].inputs)
             <= HOIST_MAX_BYTES]
    if not found:
        return None
    dropped = {k for k, _, _, _ in found}
    removed = {id(n) for _, add, _, _ in found for n in _chain(body, add)}
    xs_inputs = list(body.inputs[nc + nk:])
    stacked_outs: list[Var] = []  # body values stacked as new ys
    sources: list[list[tuple[str, int]]] = []  # per accumulation, per operand: where from
    for _, _, dot, _ in found:
        where = []
        for v in dot.inputs:
            if v in xs_inputs:
                where.append(("xs", xs_inputs.index(v)))
            else:
                if v not in stacked_outs:
                    stacked_outs.append(v)
                where.append(("ys", stacked_outs.index(v)))
        sources.append(where)
    keep = [k for k in range(nk) if k not in dropped]
    new_body = Graph(list(body.inputs[:nc]) + [body.inputs[nc + k] for k in keep] + xs_inputs,
                     [n for n in body.nodes if id(n) not in removed],
                     [body.outputs[k] for k in keep] + list(body.outputs[nk:]) + stacked_outs,
                     body.consts, name=body.name)
    extra = [Var(Aval((length, *v.aval.shape), v.aval.dtype)) for v in stacked_outs]
    scan = Node(node.prim, list(node.inputs[:nc]) + [node.inputs[nc + k] for k in keep]
                + list(node.inputs[nc + nk:]), {**p, "body": new_body, "num_carry": len(keep)},
                [node.outputs[k] for k in keep] + list(node.outputs[nk:]) + extra, node.source)
    xs_outer = list(node.inputs[nc + nk:])
    operands = [[xs_outer[i] if kind == "xs" else extra[i] for kind, i in where]
                for where in sources]
    inits = [node.inputs[nc + k] for k, _, _, _ in found]
    dots = [(dot, perm) for _, _, dot, perm in found]
    finals = [node.outputs[k] for k, _, _, _ in found]
    graph, inputs = _summed_products(inits, operands, dots, finals)
    return scan, graph, inputs, finals


def _accumulations(body: Graph, nc: int, nk: int
                   ) -> list[tuple[int, Node, Node, tuple[int, ...] | None]]:
    """(carry index, its add node, the dot_general it adds, the permutation of a transpose
    between them) for each carry c whose only use is `c + dot(...)` (or `c +
    transpose(dot(...))`), the body's new value of c, the product used nowhere else."""
    uses = body.use_counts()
    for v in body.outputs:
        uses[v] = uses.get(v, 0) + 1
    producer = body.producers()
    found = []
    for k in range(nk):
        carry_in, carry_out = body.inputs[nc + k], body.outputs[k]
        add = producer.get(carry_out)
        if add is None or add.prim.name != "add" or uses.get(carry_in) != 1 or uses.get(
                carry_out) != 1 or carry_in not in add.inputs:
            continue
        other = add.inputs[1] if add.inputs[0] is carry_in else add.inputs[0]
        dot, perm = producer.get(other), None
        if dot is not None and dot.prim.name == "transpose" and uses.get(other) == 1:
            # reverse mode writes dW as transpose(dot(dz, h)): the sum of transposes is
            # the transpose of the sum
            perm, other = dot.params["permutation"], dot.inputs[0]
            dot = producer.get(other)
        if (dot is None or dot.prim.name != "dot_general" or uses.get(other) != 1
                or add.outputs[0].aval != carry_in.aval or carry_in.aval != carry_out.aval
                or any(v in body.inputs[:nc + nk] for v in dot.inputs)):
            continue
        found.append((k, add, dot, perm))
    return found


def _chain(body: Graph, add: Node) -> list[Node]:
    """The add node, the transpose (if any) and the dot_general it adds."""
    producer = body.producers()
    chain, node = [add], add
    while True:
        node = next((producer[v] for v in node.inputs if v in producer
                     and producer[v].prim.name in ("transpose", "dot_general")), None)
        if node is None:
            return chain
        chain.append(node)
        if node.prim.name == "dot_general":
            return chain


def _summed_products(inits: list[Var], operands: list[list[Var]],
                     dots: list[tuple[Node, tuple[int, ...] | None]],
                     finals: list[Var]) -> tuple[Graph, list[Var]]:
    """The graph of (inits..., stacked operands...) -> init + the product over all steps,
    and the values its inputs stand for."""
    from transfuse.ir.lax import add, dot_general

    flat = list(dict.fromkeys(v for pair in operands for v in pair))
    avals = [v.aval for v in inits] + [v.aval for v in flat]

    def total(*args):
        init, stacks = args[:len(inits)], dict(zip(flat, args[len(inits):]))
        outs = []
        for c0, (a, b), (dot, perm) in zip(init, operands, dots):
            (lc, rc), (lb, rb) = dot.params["dimension_numbers"]
            dims = (((0, *(d + 1 for d in lc)), (0, *(d + 1 for d in rc))),
                    (tuple(d + 1 for d in lb), tuple(d + 1 for d in rb)))
            total = dot_general(stacks[a], stacks[b], dims)
            outs.append(add(c0, total if perm is None else transpose(total, perm)))
        return outs

    graph, _ = trace_to_graph(total, avals, "summed_products")
    assert [v.aval for v in graph.outputs] == [v.aval for v in finals]
    return graph, inits + flat
