"""Simplification passes: each a graph-to-graph function that keeps the verifier green.

They apply to pure graphs (no views, no mutation): `simplify` leaves other graphs alone,
since reordering or merging reads around writes would change what NumPy computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.primitives import PRIMITIVES

P = PRIMITIVES
# Folding these would bake in a draw or grow a constant to the size of its output.
_NO_FOLD = {"random_uniform", "random_normal", "random_split", "random_fold_in", "iota",
            "full", "broadcast_in_dim", "call"}
# Primitives whose params["graph"] inline_calls inlines.
INLINED_CALLS = {P["call"], P["aot_compiled"]}
_FOLD_MAX_ELEMENTS = 1 << 16


def _rebuild(graph: Graph, nodes: list[Node], outputs: list[Var],
             consts: dict[Var, np.ndarray] | None = None) -> Graph:
    return Graph(graph.inputs, nodes, outputs, graph.consts if consts is None else consts,
                 graph.num_captures, graph.has_rng, graph.name, graph.in_tree, graph.out_tree,
                 **_extra_fields(graph))


def _extra_fields(graph: Graph) -> dict[str, Any]:
    """Fields added to Graph by later issues (kept as they are)."""
    extra = {}
    if hasattr(graph, "mutated_inputs"):
        extra["mutated_inputs"] = graph.mutated_inputs
    return extra


def _substitute(vars_: list[Var], mapping: dict[Var, Var]) -> list[Var]:
    return [mapping.get(v, v) for v in vars_]


def is_pure(graph: Graph) -> bool:
    return not (graph.has_effect("view") or graph.has_effect("mutation"))


# ---------------------------------------------------------------------------------------
# Dead-code elimination


def dce(graph: Graph) -> Graph:
    """Drop nodes whose outputs are never used (effectful nodes are kept) and dead consts."""
    live: set[Var] = set(graph.outputs)
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        effectful = node.prim.effect in ("mutation", "view") and not is_pure(graph)
        if effectful or any(v in live for v in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    kept.reverse()
    consts = {v: a for v, a in graph.consts.items() if v in live}
    return _rebuild(graph, kept, list(graph.outputs), consts)


# ---------------------------------------------------------------------------------------
# Common-subexpression elimination


def _param_key(params: dict[str, Any]) -> tuple:
    items = []
    for k, v in sorted(params.items()):
        if isinstance(v, Graph):
            v = ("graph", v.structural_key())
        elif isinstance(v, np.dtype):
            v = ("dtype", v.str)
        items.append((k, v))
    return tuple(items)


def _const_key(arr: np.ndarray) -> tuple | None:
    if arr.size > 64:
        return None
    return (arr.dtype.str, arr.shape, arr.tobytes())


def cse(graph: Graph) -> Graph:
    """Merge nodes that apply the same primitive, params and inputs (and equal small consts)."""
    if not is_pure(graph):
        return graph
    mapping: dict[Var, Var] = {}
    seen_consts: dict[tuple, Var] = {}
    for v, arr in graph.consts.items():
        key = _const_key(arr)
        if key is None:
            continue
        if key in seen_consts:
            mapping[v] = seen_consts[key]
        else:
            seen_consts[key] = v
    seen: dict[tuple, list[Var]] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        inputs = _substitute(node.inputs, mapping)
        if node.prim.effect is None:
            key = (node.prim.name, tuple(v.uid for v in inputs), _param_key(node.params))
            if key in seen:
                mapping.update(zip(node.outputs, seen[key]))
                continue
            seen[key] = node.outputs
        nodes.append(Node(node.prim, inputs, node.params, node.outputs, node.source))
    return dce(_rebuild(graph, nodes, _substitute(graph.outputs, mapping)))


# ---------------------------------------------------------------------------------------
# Constant folding


def fold_constants(graph: Graph) -> Graph:
    """Evaluate small pure nodes whose inputs are all constants."""
    if not is_pure(graph):
        return graph
    consts = dict(graph.consts)
    nodes: list[Node] = []
    for node in graph.nodes:
        foldable = (node.prim.name not in _NO_FOLD and node.prim.effect is None
                    and node.inputs and all(v in consts for v in node.inputs)
                    and all(v.aval.size <= _FOLD_MAX_ELEMENTS for v in node.outputs))
        if not foldable:
            nodes.append(node)
            continue
        with np.errstate(all="ignore"):
            outs = node.prim.impl(*[consts[v] for v in node.inputs], **node.params)
        outs = outs if node.prim.multiple_results else [outs]
        for var, value in zip(node.outputs, outs):
            consts[var] = np.asarray(value, dtype=var.aval.dtype).reshape(var.aval.shape)
    return dce(_rebuild(graph, nodes, list(graph.outputs), consts))


# ---------------------------------------------------------------------------------------
# Algebraic identities


def _const_value(graph: Graph, consts: dict[Var, np.ndarray], v: Var) -> np.ndarray | None:
    arr = consts.get(v)
    if arr is None or arr.size == 0:
        return None
    flat = arr.reshape(-1)
    return flat[0] if np.all(flat == flat[0]) else None


def _is_identity_operand(value, target: float, negative_zero: bool = False) -> bool:
    """value == target; for a float zero also the right sign (-0.0 is x + _'s identity)."""
    if value is None or value != target:
        return False
    if target == 0 and isinstance(value, np.floating):
        return bool(np.signbit(value)) == negative_zero
    return True


def _identity(graph: Graph, node: Node, consts: dict) -> Var | None:
    """The input a node reduces to (x*1, x+0, x-0, x/1, no-op reshape/transpose/cast)."""
    name = node.prim.name
    out: Aval = node.outputs[0].aval if node.outputs else None
    if name in ("mul", "add", "sub", "div"):
        x, y = node.inputs
        unit = 1.0 if name in ("mul", "div") else 0.0
        # x + 0.0 turns -0.0 into +0.0: only x + (-0.0) and x - (+0.0) are the identity.
        negative_zero = name == "add"
        if _is_identity_operand(_const_value(graph, consts, y), unit, negative_zero) \
                and x.aval == out:
            return x
        if name in ("mul", "add") and _is_identity_operand(
                _const_value(graph, consts, x), unit, negative_zero) and y.aval == out:
            return y
    if name in ("reshape", "broadcast_in_dim", "cast", "squeeze", "expand_dims") and \
            node.inputs[0].aval == out:
        return node.inputs[0]
    if name == "transpose" and tuple(node.params["permutation"]) == tuple(
            range(len(node.params["permutation"]))):
        return node.inputs[0]
    if name == "reduce_sum" and not node.params["axes"]:
        return node.inputs[0]
    return None


def algebraic(graph: Graph) -> Graph:
    """x*1, x+0, transpose of transpose, reshape to the same shape or of a reshape, ..."""
    if not is_pure(graph):
        return graph
    mapping: dict[Var, Var] = {}
    producer: dict[Var, Node] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        node = Node(node.prim, _substitute(node.inputs, mapping), node.params, node.outputs,
                    node.source)
        same = _identity(graph, node, graph.consts)
        if same is not None:
            mapping[node.outputs[0]] = same
            continue
        node = _merge_with_producer(node, producer)
        nodes.append(node)
        for v in node.outputs:
            producer[v] = node
    return dce(_rebuild(graph, nodes, _substitute(graph.outputs, mapping)))


def _merge_with_producer(node: Node, producer: dict[Var, Node]) -> Node:
    """transpose(transpose(x)) -> one transpose; reshape(reshape(x)) -> one reshape."""
    name = node.prim.name
    if name not in ("transpose", "reshape") or node.inputs[0] not in producer:
        return node
    inner = producer[node.inputs[0]]
    if inner.prim.name != name:
        return node
    if name == "transpose":
        outer_perm = node.params["permutation"]
        inner_perm = inner.params["permutation"]
        perm = tuple(inner_perm[p] for p in outer_perm)
        if perm == tuple(range(len(perm))):
            return Node(P["reshape"], inner.inputs, {"new_sizes": node.outputs[0].aval.shape},
                        node.outputs, node.source)
        return Node(P["transpose"], inner.inputs, {"permutation": perm}, node.outputs,
                    node.source)
    return Node(P["reshape"], inner.inputs, node.params, node.outputs, node.source)


def inline_calls(graph: Graph) -> Graph:
    """The graph with every `call` node replaced by the nodes of its sub-graph.

    Each inlined copy gets fresh variables: a sub-graph called twice (chunked vmap) must
    not define the same SSA value twice.
    """
    if not any(n.prim in INLINED_CALLS for n in graph.nodes):
        return graph
    nodes: list[Node] = []
    rename: dict[Var, Var] = {}
    consts = dict(graph.consts)
    for node in graph.nodes:
        ins = _substitute(node.inputs, rename)
        if node.prim not in INLINED_CALLS:
            nodes.append(Node(node.prim, ins, node.params, node.outputs, node.source))
            continue
        splice(inline_calls(node.params["graph"]), ins, node.outputs, nodes, rename, consts)
    return _rebuild(graph, nodes, _substitute(graph.outputs, rename), consts)


def splice(sub: Graph, inputs: list[Var], outputs: list[Var], nodes: list[Node],
           rename: dict[Var, Var], consts: dict) -> None:
    """Append sub's nodes (fresh variables) applied to `inputs`, in place of a node whose
    `outputs` are then renamed to sub's results."""
    inner: dict[Var, Var] = dict(zip(sub.inputs, inputs))
    consts.update(sub.consts)
    for n in sub.nodes:
        fresh = [Var(v.aval) for v in n.outputs]
        inner.update(zip(n.outputs, fresh))
        nodes.append(Node(n.prim, _substitute(n.inputs, inner), n.params, fresh, n.source))
    rename.update(zip(outputs, _substitute(sub.outputs, inner)))


def simplify(graph: Graph, max_rounds: int = 4) -> Graph:
    """The passes in turn until nothing changes (or max_rounds)."""
    from transfuse.compiler.linalg_rewrites import reuse_cholesky  # it builds on this module
    from transfuse.compiler.structured_basis import structured_products  # likewise
    from transfuse.compiler.transpose_sinking import sink_transposes  # likewise
    from transfuse.compiler.unit_contractions import drop_unit_axes  # likewise

    if not is_pure(graph):
        return graph
    for _ in range(max_rounds):
        before = (len(graph.nodes), len(graph.consts))
        # reuse_cholesky first: it recognises the Cholesky VJP's product with a diagonal
        graph = structured_products(reuse_cholesky(cse(graph)))
        graph = dce(algebraic(fold_constants(sink_transposes(drop_unit_axes(graph)))))
        if (len(graph.nodes), len(graph.consts)) == before:
            break
    return graph
