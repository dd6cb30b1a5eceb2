"""Contractions with a structured operand, rewritten exactly: the identity basis that
jacfwd, hessian and jacrev push through a program, its one-hot blocks, diagonal matrices.

jacfwd (and so hessian) vmaps the tangent program over the rows of eye(n), jacrev pulls
eye(m) back, so their graphs hold `dot_general(X, E)` with E an identity (or a block of
one): n^3 multiply-adds, nearly all by zeros. Where E's values are known when jit
compiles — a constant, or built by nodes with no traced input (iota, eq, cast, reshape
...) — and each column of E (E viewed as contracted x free) holds at most one nonzero
d_m, at row p_m, the product reads one entry of X per output:

    out[r, m] = sum_k X[r, k] E[k, m] = X[r, p_m] d_m + sum_{k != p_m} 0 * X[r, k]

0 * x is +-0 for finite x and NaN for inf or NaN, so out[r, m] is NaN exactly when an
entry of row r other than p_m is not finite: a count of the row's non-finite entries
minus the entry's own decides it (no `0 * sum(x)` trick, which overflows to inf and
then NaN for large finite rows). Every dense product here (NumPy's einsum and matmul,
BLAS, the CPU backend's loops) sums from +0.0, and +0.0 + (-0.0) is +0.0, so a -0.0
product comes out +0.0: the rewrite adds +0.0 to do the same. The result is the dense
product's bit for bit, NaN positions included (tests/test_structured_basis.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from transfuse.compiler.simplify import _rebuild, _substitute, is_pure, splice
from transfuse.ir import lax
from transfuse.ir.core import Graph, Node, Var
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.tracing import source_of, trace_to_graph

P = PRIMITIVES
# E is evaluated while compiling: an operand larger than this (eye(2048)) stays a product.
STATIC_MAX_ELEMENTS = 1 << 22
# Nodes whose value depends on more than their inputs and params.
_NOT_STATIC = {"random_uniform", "random_normal", "random_split", "random_fold_in", "call"}


@dataclass(frozen=True)
class _Plan:
    """dot_general(X, E) as a gather: X's contracted axes, E's free shape, p and d."""

    x: Var
    x_contract: tuple[int, ...]
    e_first: bool  # E is the lhs: its free axes come first in the output
    e_free_shape: tuple[int, ...]
    rows: np.ndarray  # p_m: the contracted index column m reads, -1 for an all-zero column
    scale: np.ndarray  # d_m: E's nonzero in column m (0 where p_m is -1)


def structured_products(graph: Graph) -> Graph:
    """The graph with every contraction by a structured known operand rewritten."""
    if not is_pure(graph) or not any(n.prim is P["dot_general"] for n in graph.nodes):
        return graph
    static = _StaticValues(graph)
    plans = {id(n): p for n in graph.nodes
             if n.prim is P["dot_general"] and (p := _plan(n, static)) is not None}
    if not plans:
        return graph
    nodes: list[Node] = []
    rename: dict[Var, Var] = {}
    consts = dict(graph.consts)
    for node in graph.nodes:
        ins = _substitute(node.inputs, rename)
        plan = plans.get(id(node))
        if plan is None:
            nodes.append(Node(node.prim, ins, node.params, node.outputs, node.source))
            continue
        x = ins[node.inputs.index(plan.x)]
        splice(_replacement(plan, node), [x], node.outputs, nodes, rename, consts)
    return _rebuild(graph, nodes, _substitute(graph.outputs, rename), consts)


# ---------------------------------------------------------------------------------------
# Known operands


class _StaticValues:
    """Values of the graph's variables that need no input, evaluated on demand."""

    def __init__(self, graph: Graph):
        self.producer = graph.producers()
        self.values: dict[Var, np.ndarray | None] = dict(graph.consts)

    def value(self, var: Var) -> np.ndarray | None:
        if var not in self.values:
            self.values[var] = self._evaluate(var)
        return self.values[var]

    def _evaluate(self, var: Var) -> np.ndarray | None:
        node = self.producer.get(var)
        if (node is None or node.prim.effect is not None or node.prim.name in _NOT_STATIC
                or any(v.aval.size > STATIC_MAX_ELEMENTS for v in node.outputs)
                or any(isinstance(p, Graph) for p in node.params.values())):
            return None
        args = [self.value(v) for v in node.inputs]
        if any(a is None for a in args):
            return None
        with np.errstate(all="ignore"):
            outs = node.prim.impl(*args, **node.params)
        outs = outs if node.prim.multiple_results else [outs]
        for v, out in zip(node.outputs, outs):
            self.values[v] = np.asarray(out, dtype=v.aval.dtype).reshape(v.aval.shape)
        return self.values[var]


def _plan(node: Node, static: _StaticValues) -> _Plan | None:
    """How to read dot_general(X, E) off X, where E is known and structured."""
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    # An outer product (nothing contracted) sums nothing: no zeros to skip, and its -0.0
    # products stay -0.0 (compiler/fusion.py factors those that feed a contraction).
    if not lc or lb or rb or node.outputs[0].aval.dtype.kind != "f":
        return None
    for e_side in (1, 0):
        e_var, x_var = node.inputs[e_side], node.inputs[1 - e_side]
        e_contract, x_contract = (rc, lc) if e_side == 1 else (lc, rc)
        if e_var.aval.size > STATIC_MAX_ELEMENTS or e_var is x_var:
            continue
        e = static.value(e_var)
        columns = None if e is None else _columns(e, tuple(e_contract))
        if columns is not None:
            free = tuple(e.shape[a] for a in range(e.ndim) if a not in e_contract)
            return _Plan(x_var, tuple(x_contract), e_side == 0, free, *columns)
    return None


def _columns(e: np.ndarray, contract: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """(p, d) where E as a (contracted, free) matrix has at most one nonzero per column."""
    free = [a for a in range(e.ndim) if a not in contract]
    k = int(np.prod([e.shape[a] for a in contract], dtype=np.int64))
    m = int(np.prod([e.shape[a] for a in free], dtype=np.int64))
    if k == 0 or m == 0:
        return None
    matrix = np.transpose(e, list(contract) + free).reshape(k, m)
    if not np.all(np.isfinite(matrix)):
        return None
    nonzero = matrix != 0
    if np.any(np.count_nonzero(nonzero, axis=0) > 1):
        return None
    rows = np.where(nonzero.any(axis=0), nonzero.argmax(axis=0), -1).astype(np.int64)
    scale = np.where(rows >= 0, matrix[np.maximum(rows, 0), np.arange(m)], 0)
    return rows, scale.astype(e.dtype)


# ---------------------------------------------------------------------------------------
# The replacement


def _replacement(plan: _Plan, node: Node) -> Graph:
    """A graph of X computing the product as `plan` reads it (the dot's source line)."""
    def body(x: Any) -> list:
        with source_of(node.source):
            return [_read_off(plan, x)]
    graph, _ = trace_to_graph(body, [plan.x.aval], name="structured_product")
    return graph


def _read_off(plan: _Plan, x: Any) -> Any:
    """out[..., m] = X[..., p_m] d_m + 0.0, NaN where another entry of the row (X's
    contracted axes) is not finite, in the dot's output layout."""
    x2, row_shape = _rows_last(x, plan.x_contract)
    last = len(row_shape)
    rows, valid = plan.rows, plan.rows >= 0
    identity = lax.shape(x2)[last] == len(rows) and np.array_equal(rows, np.arange(len(rows)))
    gathered = x2 if identity else lax.gather(x2, np.maximum(rows, 0), last)
    bad_count = lax.reduce_sum(_bad(x2), (last,))
    # each output axis: ("r", i) X's i-th free axis, ("e", j) E's j-th free axis
    axes = [("r", i) for i in range(last)] + [("e", j) for j in range(len(plan.e_free_shape))]
    if plan.e_first:
        axes = axes[last:] + axes[:last]
    value = _arranged(lax.reshape(gathered, row_shape + plan.e_free_shape), axes, last)
    own = _bad(value)
    if not np.all(plan.scale[valid] == 1):
        value = lax.mul(value, _placed(plan.scale.reshape(plan.e_free_shape), axes, "e"))
    if not valid.all():
        valid_here = _placed(valid.reshape(plan.e_free_shape), axes, "e")
        value = lax.select(valid_here, value, lax.full((), 0, lax.dtype(x)))
        own = lax.select(valid_here, own, lax.full((), 0, np.int32))
    others_bad = lax.gt(lax.sub(_placed(bad_count, axes, "r"), own), np.zeros((), np.int32))
    # the dense sum starts from +0.0, so a -0.0 product comes out +0.0
    return lax.select(others_bad, lax.full((), np.nan, lax.dtype(x)), lax.add(value, 0.0))


def _rows_last(x: Any, contract: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    """X as (free axes..., flattened contracted axes) and its free shape."""
    shape = lax.shape(x)
    free = [a for a in range(len(shape)) if a not in contract]
    row_shape = tuple(shape[a] for a in free)
    x = _transposed(x, tuple(free) + tuple(contract))
    flat = row_shape + (int(np.prod([shape[a] for a in contract], dtype=np.int64)),)
    return (x if lax.shape(x) == flat else lax.reshape(x, flat)), row_shape


def _bad(x: Any) -> Any:
    """1 where x is inf or NaN (0 * x is NaN there), else 0, as int32."""
    return lax.convert(lax.logical_not(lax.isfinite(x)), np.int32)


def _arranged(value: Any, axes: list[tuple[str, int]], n_rows: int) -> Any:
    """value (X's free axes, then E's) with its axes in the order `axes` names them."""
    return _transposed(value, tuple(i if kind == "r" else n_rows + i for kind, i in axes))


def _placed(small: Any, axes: list[tuple[str, int]], kind: str) -> Any:
    """A value over only the `kind` axes, transposed and given unit axes to broadcast."""
    own = [i for k, i in axes if k == kind]
    spread = [q for q, (k, _) in enumerate(axes) if k != kind]
    if isinstance(small, np.ndarray):
        return np.expand_dims(np.transpose(small, own), spread)
    return lax.expand_dims(_transposed(small, tuple(own)), spread)


def _transposed(x: Any, permutation: tuple[int, ...]) -> Any:
    if permutation == tuple(range(len(permutation))):
        return x
    if isinstance(x, np.ndarray):
        return np.transpose(x, permutation)
    return lax.transpose(x, permutation)
