"""transfuse.lax's structured control flow: cond, switch, while_loop, fori_loop, scan, map.

Each call traces the user's functions once into closed sub-graphs and records one node
(ir/control.py), whatever the number of steps: a loop of 10,000 steps is one `scan` node,
and a branch on a traced value is a `cond` node instead of a ConcretizationError. Values
a body captures from the enclosing trace become leading operands of the node.
Signatures and semantics are JAX's (`jax.lax.cond` ...), see docs/control_flow.md.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transfuse.compiler.functionalize import prepare
from transfuse.ir import lax
from transfuse.ir.core import Aval, Graph
from transfuse.ir.errors import MutationError, TransfuseTypeError, TransfuseValueError
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location
from transfuse.ir.tracing import Tracer, bind
from transfuse.ir.tree import TreeDef, tree_flatten, tree_unflatten

from ._staging import leaf_aval, stage

P = PRIMITIVES


@dataclass
class Body:
    """A user function traced into a closed graph: inputs are captures, then arguments."""

    graph: Graph
    captures: list  # the enclosing trace's values for the graph's leading inputs
    out_tree: TreeDef

    @property
    def out_avals(self) -> list[Aval]:
        return self.graph.out_avals


def _as_leaf(x: Any) -> Any:
    """A traced value as it is; anything else as a NumPy array (Python scalars too)."""
    return x if isinstance(x, Tracer) else np.asarray(x)


def _flat_leaves(tree: Any, what: str) -> tuple[list, TreeDef]:
    leaves, treedef = tree_flatten(tree)
    try:
        return [_as_leaf(x) for x in leaves], treedef
    except Exception as e:  # an object np.asarray cannot take
        raise TransfuseTypeError(with_location(
            f"{what}: every leaf must be an array or a number ({e})")) from None


def _stand_in(aval: Aval) -> np.ndarray:
    """A zero-byte array of aval's shape and dtype: tracing reads only its aval."""
    return np.broadcast_to(np.zeros((), aval.dtype), aval.shape)


def trace_body(fn: Callable, args: Sequence[Any], what: str, name: str | None = None
               ) -> Body:
    """Trace fn(*args) (pytrees of arrays or tracers; only their avals matter)."""
    name = name or getattr(fn, "__name__", "body")
    staged = stage(fn, list(args), is_dynamic=lambda i, x: True,
                   name=name if name.isidentifier() else "body")
    graph = staged.graph
    if graph.has_rng:
        raise TransfuseValueError(with_location(
            f"{what} draws random numbers; random draws inside transfuse.lax control flow "
            "are not supported yet: draw them outside and pass them in as operands"))
    graph = _without_mutations(prepare(graph), what)
    n = graph.num_explicit_inputs
    closed = Graph(graph.inputs[n:] + graph.inputs[:n], graph.nodes, graph.outputs,
                   graph.consts, name=graph.name)
    return Body(closed, list(staged.implicit), staged.out_tree)


def _without_mutations(graph: Graph, what: str) -> Graph:
    """A body's writes into its own arguments stay local to the body (its arguments are
    fresh values, as in JAX); a write into a captured array cannot be expressed."""
    if not graph.mutated_inputs:
        return graph
    n = graph.num_explicit_inputs
    if any(i >= n for i in graph.mutated_inputs):
        raise MutationError(with_location(
            f"{what} writes into an array it captures from outside; inside transfuse.lax "
            "control flow, carry the array through the loop (or return it) instead"))
    kept = len(graph.outputs) - len(graph.mutated_inputs)
    return Graph(graph.inputs, graph.nodes, graph.outputs[:kept], graph.consts,
                 num_captures=graph.num_captures, name=graph.name)


def _describe(tree: TreeDef, avals: Sequence[Aval]) -> str:
    return f"{tree} with leaves {[str(a) for a in avals]}"


def check_same(what: str, got_tree: TreeDef, got: Sequence[Aval], want_tree: TreeDef,
               want: Sequence[Aval], expected: str = "the same structure, shapes and dtypes"
               ) -> None:
    """A TransfuseTypeError unless a function's outputs have the wanted tree and avals."""
    if got_tree != want_tree or list(got) != list(want):
        raise TransfuseTypeError(with_location(
            f"{what}: got {_describe(got_tree, got)}, expected {_describe(want_tree, want)} "
            f"({expected})"))


def _widen(body: Body, captures: list) -> Graph:
    """body's graph taking every capture of `captures` (in that order) before its
    arguments, ignoring those it does not read: branches of one cond share operands."""
    from transfuse.ir.core import Var

    mine = {id(c): v for c, v in zip(body.captures, body.graph.inputs)}
    n_own = len(body.captures)
    leading = [mine.get(id(c)) or Var(Aval(leaf_aval(c).shape, leaf_aval(c).dtype))
               for c in captures]
    return Graph(leading + body.graph.inputs[n_own:], body.graph.nodes, body.graph.outputs,
                 body.graph.consts, name=body.graph.name)


def _union(bodies: Sequence[Body]) -> list:
    seen: dict[int, Any] = {}
    for body in bodies:
        for c in body.captures:
            seen.setdefault(id(c), c)
    return list(seen.values())


# ---------------------------------------------------------------------------------------
# cond and switch


def switch(index: Any, branches: Sequence[Callable], *operands: Any) -> Any:
    """branches[index](*operands), index clamped to [0, len(branches) - 1] (jax.lax.switch)."""
    branches = list(branches)
    if not branches or not all(callable(b) for b in branches):
        raise TransfuseTypeError(with_location(
            "switch: branches must be a non-empty sequence of functions"))
    index = _as_leaf(index)
    if leaf_aval(index).shape != () or leaf_aval(index).dtype.kind not in "iub":
        raise TransfuseTypeError(with_location(
            f"switch: the index must be a 0-d integer, got {leaf_aval(index)}"))
    return _branch(lax.convert(index, np.int32), branches, operands, "switch")


def cond(pred: Any, true_fun: Callable, false_fun: Callable, *operands: Any) -> Any:
    """true_fun(*operands) if pred else false_fun(*operands) (jax.lax.cond)."""
    pred = _as_leaf(pred)
    aval = leaf_aval(pred)
    if aval.shape != () or aval.dtype.kind not in "biuf":
        raise TransfuseTypeError(with_location(
            f"cond: the predicate must be a 0-d bool or number, got {aval}"))
    if aval.dtype.kind != "b":
        pred = lax.ne(pred, 0)
    return _branch(lax.convert(pred, np.int32), [false_fun, true_fun], operands, "cond")


def _branch_name(fn: Callable, k: int) -> str:
    name = getattr(fn, "__name__", "")
    return name if name.isidentifier() else f"branch{k}"


def _branch(index: Any, branches: list[Callable], operands: Sequence[Any], what: str) -> Any:
    leaves, in_tree = _flat_leaves(tuple(operands), f"{what} operands")
    args = tree_unflatten(in_tree, leaves)
    bodies = [trace_body(fn, args, f"{what} branch {k}", _branch_name(fn, k))
              for k, fn in enumerate(branches)]
    for k, body in enumerate(bodies[1:], 1):
        check_same(f"{what}: branch {k} returns a different type than branch 0",
                    body.out_tree, body.out_avals, bodies[0].out_tree, bodies[0].out_avals)
    captures = _union(bodies)
    graphs = tuple(_widen(b, captures) for b in bodies)
    outs = bind(P["cond"], index, *captures, *leaves, branches=graphs)
    return tree_unflatten(bodies[0].out_tree, outs)


# ---------------------------------------------------------------------------------------
# while_loop and fori_loop


def while_loop(cond_fun: Callable, body_fun: Callable, init_val: Any) -> Any:
    """val = init_val; while cond_fun(val): val = body_fun(val) (jax.lax.while_loop)."""
    init, tree = _flat_leaves(init_val, "while_loop init_val")
    carry = tree_unflatten(tree, init)
    avals = [leaf_aval(x) for x in init]
    test = trace_body(cond_fun, [carry], "while_loop cond_fun")
    if test.out_avals != [Aval((), np.bool_)]:
        raise TransfuseTypeError(with_location(
            "while_loop: cond_fun must return a 0-d bool, got "
            f"{_describe(test.out_tree, test.out_avals)}"))
    step = trace_body(body_fun, [carry], "while_loop body_fun")
    check_same("while_loop: body_fun must return a carry of the same type as init_val",
                step.out_tree, step.out_avals, tree, avals)
    outs = bind(P["while_loop"], *test.captures, *step.captures, *init,
                cond_graph=test.graph, body_graph=step.graph,
                cond_nconsts=len(test.captures), body_nconsts=len(step.captures))
    return tree_unflatten(tree, outs)


def _static_int(x: Any) -> int | None:
    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return int(x)
    return None


def fori_loop(lower: Any, upper: Any, body_fun: Callable, init_val: Any) -> Any:
    """for i in range(lower, upper): val = body_fun(i, val) (jax.lax.fori_loop).

    With Python (or NumPy) integer bounds the trip count is static and the loop is a
    `scan`, so reverse mode works through it; traced bounds make a `while_loop`."""
    lo, hi = _static_int(lower), _static_int(upper)
    index_dtype = np.result_type(*(np.asarray(b).dtype for b in (lower, upper)
                                   if not isinstance(b, (int, Tracer)))) \
        if any(isinstance(b, np.integer) for b in (lower, upper)) else np.dtype(np.int64)
    if lo is not None and hi is not None:
        def step(carry, _):
            i, val = carry
            return (lax.add(i, np.asarray(1, index_dtype)), body_fun(i, val)), None

        start = np.asarray(lo, index_dtype)
        (_, val), _ = scan(step, (start, init_val), None, length=builtins.max(hi - lo, 0))
        return val
    lower = lax.convert(_as_leaf(lower), index_dtype)
    upper = lax.convert(_as_leaf(upper), index_dtype)

    def test(carry):
        return lax.lt(carry[0], carry[1])

    def advance(carry):
        i, stop, val = carry
        return lax.add(i, np.asarray(1, index_dtype)), stop, body_fun(i, val)

    return while_loop(test, advance, (lower, upper, init_val))[2]


# ---------------------------------------------------------------------------------------
# scan and map


def _scan_length(xs: list, length: int | None) -> int:
    lengths = {leaf_aval(x).shape[0] for x in xs if leaf_aval(x).ndim > 0}
    if any(leaf_aval(x).ndim == 0 for x in xs):
        raise TransfuseValueError(with_location(
            "scan: every leaf of xs needs a leading axis to scan over (a 0-d array was given)"))
    if length is not None:
        lengths.add(int(length))
    if len(lengths) > 1:
        raise TransfuseValueError(with_location(
            f"scan: the leading axes of xs (and length=) disagree: {sorted(lengths)}"))
    if not lengths:
        raise TransfuseValueError(with_location(
            "scan: with no xs, give the number of steps as length="))
    return lengths.pop()


def scan(f: Callable, init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False, unroll: int = 1) -> tuple[Any, Any]:
    """carry, y = f(carry, x) along xs' leading axis; returns (carry, stacked ys)
    (jax.lax.scan; `unroll` is accepted and ignored: the loop is always a real loop)."""
    init_leaves, carry_tree = _flat_leaves(init, "scan init")
    x_leaves, x_tree = _flat_leaves(xs, "scan xs")
    steps = _scan_length(x_leaves, length)
    carry_avals = [leaf_aval(c) for c in init_leaves]
    x_slices = [_stand_in(leaf_aval(x).update(shape=leaf_aval(x).shape[1:]))
                for x in x_leaves]
    args = [tree_unflatten(carry_tree, init_leaves), tree_unflatten(x_tree, x_slices)]

    def step(carry, x):
        out = f(carry, x)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TransfuseTypeError(with_location(
                f"scan: f must return a pair (carry, y), got {type(out).__name__}"))
        return out

    body = trace_body(step, args, "scan f", getattr(f, "__name__", None))
    carry_out_tree, y_tree = body.out_tree.children
    num_carry = len(init_leaves)
    check_same("scan: f must return a carry of the same type as init", carry_out_tree,
                body.out_avals[:num_carry], carry_tree, carry_avals)
    outs = bind(P["scan"], *body.captures, *init_leaves, *x_leaves, body=body.graph,
                length=steps, reverse=bool(reverse), num_consts=len(body.captures),
                num_carry=num_carry)
    return (tree_unflatten(carry_tree, outs[:num_carry]),
            tree_unflatten(y_tree, outs[num_carry:]))


def map(f: Callable, xs: Any) -> Any:  # noqa: A001 (jax.lax.map's name)
    """[f(x) for x in xs] stacked, as one loop (jax.lax.map)."""
    return scan(lambda carry, x: ((), f(x)), (), xs)[1]


__all__ = ["cond", "switch", "while_loop", "fori_loop", "scan", "map"]
