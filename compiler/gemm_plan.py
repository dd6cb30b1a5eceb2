"""dot_general as BLAS gemm calls: which axes merge into matrices, which become loops.

Every dimension of the product is a batch, row (M), column (N) or contraction (K) axis with
a stride in each operand (0 where it does not appear). The M, N and K axes that are
contiguous in both of their operands merge into one matrix dimension each; the rest (batch
axes, free axes that do not merge) become loops around one gemm call on strided 2-D views,
so neither a batch nor a broadcast is copied. compiler/lower_cpu_kernels.py writes the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transfuse.ir.core import Aval, Node, Var

BLAS_MIN_FLOPS = 1 << 13  # below this a loop nest beats a BLAS call
# A free axis of extent 1 (a batch of one) is planned as one of this extent: see gemm_plan.
UNIT_STAND_IN = 8

BLAS_KINDS = {np.dtype(np.float32): ord("s"), np.dtype(np.float64): ord("d")}
_N, _T = 0, 1  # gemm_strided's flags: a matrix used as stored, or transposed
GEMM_LOOPS = 3  # loop levels around the BLAS call in runtime/cpu_kernels.gemm_strided


@dataclass
class _Axis:
    """One dimension of a product: its extent and its strides in lhs, rhs and output."""

    size: int
    strides: tuple[int, int, int]


@dataclass
class GemmPlan:
    """How a dot_general runs as gemm calls: operands to copy first, then the BLAS args."""

    copies: tuple[bool, bool]  # copy lhs / rhs into (batch, rows, cols) order first
    swap: bool  # BLAS's x is the rhs (the output is row-major: C^T = B^T A^T)
    mnk: tuple[int, int, int]
    blas: tuple[int, ...]  # trans_x, trans_y, M, N, K, ldx, ldy, ldc
    loops: list[_Axis]


def free_dims(node: Node, index: int) -> list[int]:
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    taken = set((lc, rc)[index]) | set((lb, rb)[index])
    return [d for d in range(node.inputs[index].aval.ndim) if d not in taken]


def _c_strides(shape: tuple[int, ...], order: list[int]) -> list[int]:
    """Element strides per dimension of an array stored C-ordered with its dims in `order`."""
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = step
        step *= shape[d]
    return strides


def operand_order(node: Node, index: int) -> list[int]:
    """The dimension order a copied operand gets: batch, then rows (M) or K, then cols."""
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    free = free_dims(node, index)
    return list(lb) + free + list(lc) if index == 0 else list(rb) + list(rc) + free


def _product_axes(node: Node, copies: tuple[bool, bool]) -> dict[str, list[_Axis]]:
    """The product's axes by role ('b', 'm', 'n', 'k'), size-1 axes left out."""
    lhs, rhs = (v.aval for v in node.inputs)
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    ls, rs = [_c_strides(a.shape, operand_order(node, i) if copies[i] else
                         list(range(a.ndim))) for i, a in enumerate((lhs, rhs))]
    lfree, rfree = free_dims(node, 0), free_dims(node, 1)
    os_ = _c_strides(node.outputs[0].aval.shape, list(range(node.outputs[0].aval.ndim)))
    nb, nl = len(lb), len(lfree)
    axes = {"b": [_Axis(lhs.shape[a], (ls[a], rs[c], os_[j]))
                  for j, (a, c) in enumerate(zip(lb, rb))],
            "m": [_Axis(lhs.shape[a], (ls[a], 0, os_[nb + j])) for j, a in enumerate(lfree)],
            "n": [_Axis(rhs.shape[c], (0, rs[c], os_[nb + nl + j]))
                  for j, c in enumerate(rfree)],
            "k": [_Axis(lhs.shape[a], (ls[a], rs[c], 0)) for a, c in zip(lc, rc)]}
    return {role: [a for a in group if a.size != 1] for role, group in axes.items()}


def _merges(outer: _Axis, inner: _Axis, which: tuple[int, ...]) -> bool:
    return all(outer.strides[i] == inner.strides[i] * inner.size for i in which)


def _matrix_dim(group: list[_Axis], which: tuple[int, int]) -> tuple[_Axis, list[_Axis]]:
    """The axes of `group` that merge into one matrix dimension, and those left over."""
    if not group:
        return _Axis(1, (0, 0, 0)), []
    order = sorted(group, key=lambda a: -a.strides[which[0]])
    chain = [order[-1]]
    for axis in reversed(order[:-1]):
        if not _merges(axis, chain[0], which):
            break
        chain.insert(0, axis)
    size = int(np.prod([a.size for a in chain], dtype=np.int64))
    return _Axis(size, chain[-1].strides), order[:len(order) - len(chain)]


def _merged_loops(loops: list[_Axis]) -> list[_Axis]:
    """Loops ordered outermost first, neighbours that step as one merged."""
    merged: list[_Axis] = []
    for axis in sorted(loops, key=lambda a: tuple(-s for s in reversed(a.strides))):
        if merged and _merges(merged[-1], axis, (0, 1, 2)):
            merged[-1] = _Axis(merged[-1].size * axis.size, axis.strides)
        else:
            merged.append(axis)
    return merged


def _stored(rows: int, cols: int, row_step: int, col_step: int) -> tuple[int, int] | None:
    """BLAS's (trans, leading dimension) of a rows x cols matrix with these steps, or None."""
    if rows == 1 or row_step == 1:  # column-major
        ld = col_step if cols > 1 else rows
        if ld >= rows:
            return _N, ld
    if cols == 1 or col_step == 1:  # row-major: its transpose is column-major
        ld = row_step if rows > 1 else cols
        if ld >= cols:
            return _T, ld
    return None


def _column_major_args(m: _Axis, n: _Axis, kk: _Axis, x: int, y: int) -> tuple | None:
    """gemm args for C = X @ Y with C column-major; x, y: which stride is X's, Y's."""
    c = _stored(m.size, n.size, m.strides[2], n.strides[2])
    xs = _stored(m.size, kk.size, m.strides[x], kk.strides[x])
    ys = _stored(kk.size, n.size, kk.strides[y], n.strides[y])
    if c is None or c[0] != _N or xs is None or ys is None:
        return None
    return (xs[0], ys[0], m.size, n.size, kk.size, xs[1], ys[1], c[1])


def _try_gemm(node: Node, copies: tuple[bool, bool], swap: bool | None = None
              ) -> GemmPlan | None:
    """The plan with these copies (and this swap, when given), or None."""
    axes = _product_axes(node, copies)
    m, mleft = _matrix_dim(axes["m"], (2, 0))
    n, nleft = _matrix_dim(axes["n"], (2, 1))
    kk, kleft = _matrix_dim(axes["k"], (0, 1))
    loops = _merged_loops(axes["b"] + mleft + nleft)
    if kleft or len(loops) > GEMM_LOOPS:
        return None
    mnk = (m.size, n.size, kk.size)
    args = _column_major_args(m, n, kk, 0, 1) if swap is not True else None
    if args is not None:
        return GemmPlan(copies, False, mnk, args, loops)
    args = _column_major_args(n, m, kk, 1, 0) if swap is not False else None  # C^T = B^T A^T
    return None if args is None else GemmPlan(copies, True, mnk, args, loops)


def gemm_plan(node: Node) -> GemmPlan | None:
    """The cheapest way to run a float dot_general as gemm calls, or None for loops.

    A product whose rows (or columns) are free axes of extent 1, the other side's not, is
    planned as if those axes had UNIT_STAND_IN entries: the choice of BLAS or loops, the
    copies and the operand order are those of any batch of 8 or more, so a batch of one
    renders the same source and shares its kernel (compiler/size_params.py); BLAS's
    arguments are the real ones (run-time data), and gemm_strided calls gemv when M or N
    is 1 (runtime/cpu_kernels.py)."""
    stand_in = _unit_stand_in(node)
    if stand_in is not None:
        plan = _sized_gemm_plan(stand_in)
        return None if plan is None else _try_gemm(node, plan.copies, plan.swap)
    return _sized_gemm_plan(node)


def _unit_stand_in(node: Node) -> Node | None:
    """node with its size-1 free axes at UNIT_STAND_IN, when one side only has them and the
    other side's free axes hold more than one entry; else None."""
    lhs, rhs = (v.aval for v in node.inputs)
    out = node.outputs[0].aval
    lfree, rfree = free_dims(node, 0), free_dims(node, 1)
    lunit = [j for j, d in enumerate(lfree) if lhs.shape[d] == 1]
    runit = [j for j, d in enumerate(rfree) if rhs.shape[d] == 1]
    other = rfree if lunit else lfree
    other_size = int(np.prod([(rhs if lunit else lhs).shape[d] for d in other], dtype=np.int64))
    if bool(lunit) == bool(runit) or other_size <= 1:
        return None
    nb = len(node.params["dimension_numbers"][1][0])
    shapes = [list(lhs.shape), list(rhs.shape), list(out.shape)]
    for j in lunit:
        shapes[0][lfree[j]] = shapes[2][nb + j] = UNIT_STAND_IN
    for j in runit:
        shapes[1][rfree[j]] = shapes[2][nb + len(lfree) + j] = UNIT_STAND_IN
    lhs_in, rhs_in, out_in = (Var(Aval(tuple(s), a.dtype)) for s, a in zip(shapes,
                                                                            (lhs, rhs, out)))
    return Node(node.prim, [lhs_in, rhs_in], node.params, [out_in])


def _sized_gemm_plan(node: Node) -> GemmPlan | None:
    for copies in ((False, False), (True, False), (False, True), (True, True)):
        plan = _try_gemm(node, copies)
        # small products (or vector ones) run faster as a loop nest than as BLAS calls
        if plan is not None and plan.mnk[0] > 1 and plan.mnk[1] > 1 and int(
                np.prod(plan.mnk, dtype=np.int64)) >= BLAS_MIN_FLOPS:
            return plan
    return None

