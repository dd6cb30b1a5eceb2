"""Linear-algebra rewrites for jit: reuse a Cholesky factor the program already computed.

Both run on the pure graph jit compiles, after every transform (so the primitives they
introduce need lowering rules only), and both keep NumPy's results and errors:

- `solve(A, B)` or `solve(A^T, B)` after `cholesky(A)` (in program order) becomes
  `solve_by_cholesky(A, L, B)`: two triangular solves with L where A is exactly symmetric
  (checked at run time, O(n^2); an identity B, as from `inv`, takes trtri and lauum), the
  same LU solve as before otherwise; `slogdet(A)` likewise becomes `slogdet_by_cholesky`.
  A symmetric A whose Cholesky factorization succeeded is positive definite, so the LU
  could not have failed either; an A that is not positive definite raised at the
  `cholesky` already.
- The Cholesky VJP (compiler/vjp.py) with a diagonal cotangent diag(v), as from
  `sum(log(diagonal(L)))`, is S = L^-T Phi L^-1 with Phi = diag(w) diagonal: two
  triangular solves with full right-hand sides (2n^3 flops) and a product L^T diag(v)
  (2n^3) become `cholesky_inverse(L, w)` (trtri and a weighted lauum, 2n^3/3, as
  LAPACK's potri). w_i = (L_ii v_i) m_ii, rounded as the dense form rounds it (m: the
  mask's diagonal). The dense form's zeros are exact while v is finite; where v holds
  inf or NaN both give non-finite gradients, not necessarily in the same entries.
"""

from __future__ import annotations

import numpy as np
from transfuse.compiler.simplify import _rebuild, is_pure
from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.primitives import PRIMITIVES

P = PRIMITIVES
# Below this order a re-factorization costs about what the symmetry check and two
# triangular solves cost; and CUDA's thread-a-matrix kernels (order <= 32) stay in use.
REUSE_MIN_ORDER = 33


def reuse_cholesky(graph: Graph) -> Graph:
    """The graph with both rewrites applied wherever they match."""
    if not is_pure(graph) or not any(n.prim is P["cholesky"] for n in graph.nodes):
        return graph
    producer: dict[Var, Node] = {}
    factor_of: dict[Var, Var] = {}  # matrix -> the output of a cholesky node seen so far
    consts = dict(graph.consts)
    nodes: list[Node] = []
    for node in graph.nodes:
        replaced = (_solve_with_factor(node, producer, factor_of)
                    or _diagonal_cholesky_vjp(node, producer, consts) or [node])
        for new in replaced:
            nodes.append(new)
            producer.update((v, new) for v in new.outputs)
        if node.prim is P["cholesky"]:
            factor_of.setdefault(node.inputs[0], node.outputs[0])
    return _rebuild(graph, nodes, list(graph.outputs), consts)


# ---------------------------------------------------------------------------------------
# solve after cholesky


def _solve_with_factor(node: Node, producer: dict, factor_of: dict) -> list[Node] | None:
    """solve -> solve_by_cholesky, slogdet -> slogdet_by_cholesky, of a factored matrix."""
    if node.prim not in (P["solve"], P["slogdet"]):
        return None
    a = node.inputs[0]
    if a.aval.dtype.kind != "f" or a.aval.shape[-1] < REUSE_MIN_ORDER:
        return None
    matrix, transposed = a, False
    if a not in factor_of:  # A^T has the factor of A where A is symmetric (checked)
        matrix, transposed = _matrix_transposed(a, producer), True
    low = factor_of.get(matrix)
    if low is None:
        return None
    if node.prim is P["slogdet"]:  # det(A^T) = det(A)
        return [Node(P["slogdet_by_cholesky"], [matrix, low], {}, node.outputs, node.source)]
    return [Node(P["solve_by_cholesky"], [matrix, low, node.inputs[1]],
                 {"transpose_a": transposed}, node.outputs, node.source)]


def _matrix_transposed(v: Var, producer: dict) -> Var | None:
    """x where v = x with its last two axes swapped."""
    node = producer.get(v)
    if node is None or node.prim is not P["transpose"]:
        return None
    perm, k = tuple(node.params["permutation"]), v.aval.ndim
    return node.inputs[0] if perm == tuple(range(k - 2)) + (k - 1, k - 2) else None


# ---------------------------------------------------------------------------------------
# The Cholesky VJP of a diagonal cotangent:
#   phi = mul(dot_general(L^T, diag(v)), mask); T = trsm(L, phi, lower, transposed);
#   S = trsm(L, T^T, lower, transposed)          ->  S = cholesky_inverse(L, w)


def _diagonal_cholesky_vjp(node: Node, producer: dict, consts: dict) -> list[Node] | None:
    low = _second_solve_factor(node, producer)
    if low is None:
        return None
    first = producer.get(_matrix_transposed(node.inputs[1], producer))
    if not _is_lower_transposed_solve(first) or first.inputs[0] is not low:
        return None
    masked = _masked_product(first.inputs[1], producer, consts)
    if masked is None:
        return None
    left, right, mask_diagonal = masked
    v = _diagonal_entries(right, producer, consts)
    if _matrix_transposed(left, producer) is not low or v is None:
        return None
    return _weighted_inverse(low, v, mask_diagonal, node, consts)


def _second_solve_factor(node: Node, producer: dict) -> Var | None:
    """L where node is a lower, transposed triangular solve with L = cholesky(...)."""
    if not _is_lower_transposed_solve(node):
        return None
    low = node.inputs[0]
    made = producer.get(low)
    ok = made is not None and made.prim is P["cholesky"] and low.aval.dtype.kind == "f"
    return low if ok else None


def _is_lower_transposed_solve(node: Node | None) -> bool:
    return (node is not None and node.prim is P["triangular_solve"]
            and node.params["lower"] and node.params["transpose_a"])


def _masked_product(phi: Var, producer: dict, consts: dict):
    """(x, y, the mask's diagonal) where phi = mul(x @ y, mask), mask a constant with zeros
    above the diagonal (lower_triangle's); None otherwise."""
    node = producer.get(phi)
    if node is None or node.prim is not P["mul"]:
        return None
    product, mask = node.inputs
    if mask not in consts:
        product, mask = mask, product
    if mask not in consts or mask.aval.shape[-2:] != phi.aval.shape[-2:] \
            or mask.aval.ndim > phi.aval.ndim:
        return None
    values = np.broadcast_to(consts[mask], phi.aval.shape)  # mul broadcasts the mask
    if np.any(np.triu(values, 1) != 0) or not np.all(np.isfinite(values)):
        return None
    matmul = producer.get(product)
    if matmul is None or not _is_batch_matmul(matmul):
        return None
    return matmul.inputs[0], matmul.inputs[1], np.diagonal(values, 0, -2, -1).copy()


def _is_batch_matmul(node: Node) -> bool:
    """node is x @ y on stacks of matrices (lax.batch_matmul's dimension numbers)."""
    if node.prim is not P["dot_general"]:
        return False
    k = node.inputs[0].aval.ndim
    batch = tuple(range(k - 2))
    return (node.inputs[1].aval.ndim == k and tuple(map(tuple, node.params[
        "dimension_numbers"][0])) == ((k - 1,), (k - 2,)) and tuple(map(tuple, node.params[
            "dimension_numbers"][1])) == (batch, batch))


def _diagonal_entries(d: Var, producer: dict, consts: dict) -> Var | None:
    """v where d is the stack of diagonal matrices diag(v), written into zeros (the VJP of
    np.diagonal, or np.diag): reshape(scatter(full(0), i * (n + 1), v))."""
    reshaped = producer.get(d)
    if reshaped is None or reshaped.prim is not P["reshape"]:
        return None
    scattered = producer.get(reshaped.inputs[0])
    if scattered is None or scattered.prim not in (P["scatter"], P["scatter_add"]):
        return None
    zeros, index, v = scattered.inputs
    *batch, n, _ = d.aval.shape
    filled = producer.get(zeros)
    return v if (filled is not None and filled.prim is P["full"]
                 and filled.params["value"] == 0
                 and zeros.aval.shape == (*batch, n * n)
                 and scattered.params["axis"] == len(batch)
                 and v.aval.shape == (*batch, n)
                 and index in consts
                 and np.array_equal(consts[index], np.arange(n) * (n + 1))) else None


def _weighted_inverse(low: Var, v: Var, mask_diagonal: np.ndarray, node: Node,
                      consts: dict) -> list[Node]:
    """cholesky_inverse(L, w), w = (diagonal(L) * v) * mask_diagonal."""
    *batch, n, _ = low.aval.shape
    dtype = low.aval.dtype
    index = _constant(consts, np.arange(n, dtype=np.int64) * (n + 1))
    weights = _constant(consts, np.broadcast_to(mask_diagonal, (*batch, n)).astype(dtype))
    flat = Var(Aval((*batch, n * n), dtype))
    diagonal, scaled, w = (Var(Aval((*batch, n), dtype)) for _ in range(3))
    source = node.source
    return [Node(P["reshape"], [low], {"new_sizes": flat.aval.shape}, [flat], source),
            Node(P["gather"], [flat, index], {"axis": len(batch)}, [diagonal], source),
            Node(P["mul"], [diagonal, v], {}, [scaled], source),
            Node(P["mul"], [scaled, weights], {}, [w], source),
            Node(P["cholesky_inverse"], [low, w], {}, node.outputs, source)]


def _constant(consts: dict, value: np.ndarray) -> Var:
    """A constant holding value: an equal one the graph has (so CSE can merge the nodes
    reading it), else a new one."""
    for var, existing in consts.items():
        if (existing.dtype == value.dtype and existing.shape == value.shape
                and np.array_equal(existing, value)):
            return var
    var = Var(Aval(value.shape, value.dtype))
    consts[var] = value
    return var
