"""The CPU backend's kernel rules: nodes that fill whole buffers with loops and calls.

`KERNEL_RULES[prim]` writes the statements of one node (contractions, convolutions,
scans, arg-reductions, scatters, linear algebra, FFTs, sorts, views and copies) from a
`KernelCtx`; compiler/lower_cpu.py's driver places them in the entry point. See
docs/compiler.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from transfuse.ir.core import Node
from transfuse.ir.primitives import PRIMITIVES

from .codegen import COLUMN_CHUNK, LoopNest, ProgramBuilder, index_str
from .gemm_plan import BLAS_KINDS, GEMM_LOOPS, GemmPlan, free_dims, gemm_plan, operand_order
from .kernel_rules import arg_kernel, conv_kernel, dot_indices, scan_kernel

P = PRIMITIVES
Kernel = Callable[["KernelCtx"], None]
KERNEL_RULES: dict[Any, Kernel] = {}
PARALLEL_MIN_FLOPS = 1 << 18
# A batch of gemm calls of at least this many multiply-adds each is shared by the threads,
# each call on one BLAS thread (runtime/cpu_kernels.py, gemm_batched; docs/decisions.md).
GEMM_BATCH_MIN_MACS = 1 << 16
NARROW_OUTPUT = 4  # at most this many output elements per row: one local sum each
# The local sum's type by dtype kind: an int product is 64-bit in Numba (and the wrapped
# sum equal to the narrow type's once stored); a float or complex stays its own type.
SUM_TYPES = {"f": None, "c": None, "i": "int64", "u": "uint64"}


def _kernel(name: str, kernel: Kernel) -> None:
    KERNEL_RULES[P[name]] = kernel


@dataclass
class KernelCtx:
    """What a kernel rule sees: the node, its operands' and outputs' array names, a nest."""

    program: ProgramBuilder
    node: Node
    ins: list[str]
    outs: list[str]
    nest: LoopNest
    allow_parallel: bool

    @property
    def params(self) -> dict:
        return self.node.params

    def work_is_large(self, flops: int) -> bool:
        return self.allow_parallel and flops >= PARALLEL_MIN_FLOPS

    def loops(self, names: list[str], extents: list[int], parallel_first: bool = False
              ) -> None:
        for k, (name, n) in enumerate(zip(names, extents)):
            parallel = parallel_first and k == 0 and n >= 2
            if parallel:
                self.program.uses_prange = True
            self.nest.open(name, n, parallel=parallel)

    def close(self, count: int) -> None:
        for _ in range(count):
            self.nest.close()

    def put(self, stmt: str) -> None:
        self.nest.put(stmt)

    # -- what the shared kernel rules (compiler/kernel_rules.py) ask of a backend --------
    def each(self, names: list[str], extents: list[int], work: int) -> None:
        """A loop nest over the output points, the outer loop parallel for large work."""
        self.loops(names, extents, self.work_is_large(work))

    def local(self, expr: str, what: str = "") -> str:
        return self.nest.assign(self.program.local(), expr, what, depth=self.nest.depth)

    def accumulate(self, acc: str, term: str, dtype: np.dtype) -> str:
        return f"{acc} += {term}"

    def sum_start(self, dtype: np.dtype) -> tuple[str, str]:
        """A compensated float sum: its float64 total and rounding errors (comp_add)."""
        return self.local("0.0"), self.local("0.0", "rounding errors")

    def sum_add(self, total: tuple[str, str], term: str) -> str:
        acc, comp = total
        return f"{acc}, {comp} = {self.program.helper('comp_add')}({acc}, {comp}, {term})"

    def sum_value(self, total: tuple[str, str]) -> str:
        return f"{self.program.helper('comp_total')}({total[0]}, {total[1]})"


def _view_kernel(k: KernelCtx) -> None:
    shape = k.node.outputs[0].aval.shape
    k.put(f"{k.outs[0]} = {k.ins[0]}.reshape({shape!r})")


def _copy_kernel(k: KernelCtx) -> None:
    k.put(f"{k.outs[0]} = {k.ins[0]}.copy()")




def _alias_kernel(k: KernelCtx) -> None:
    """x, once its `after` exists: an alias (a view), so a checkpoint copies no weights."""
    k.put(f"{k.outs[0]} = {k.ins[0]}")


_kernel("broadcast_in_dim", _view_kernel)
_kernel("squeeze", _view_kernel)
_kernel("expand_dims", _view_kernel)
_kernel("reshape", _view_kernel)
_kernel("copy", _copy_kernel)
_kernel("optimization_barrier", _alias_kernel)


def _dot_general_kernel(k: KernelCtx) -> None:
    lhs, rhs = (v.aval for v in k.node.inputs)
    out = k.node.outputs[0].aval
    (lc, _), _ = k.params["dimension_numbers"]
    if out.size == 0:
        return
    if any(lhs.shape[d] == 0 for d in lc):  # an empty sum: zeros (Numba has no 0-d fill)
        k.put(f"{k.outs[0]}.reshape({k.outs[0]}.size)[:] = 0")
        return
    plan = gemm_plan(k.node) if out.dtype in BLAS_KINDS else None
    if plan is None:
        _dot_loops(k, free_dims(k.node, 0), free_dims(k.node, 1))
    else:
        _dot_blas(k, plan)



def _operand_copy(k: KernelCtx, index: int) -> str:
    """Operand `index` copied by a loop nest into (batch, rows, cols) order."""
    name, aval = k.ins[index], k.node.inputs[index].aval
    order = operand_order(k.node, index)
    moved = k.program.local()
    k.put(f"{moved} = np.empty({tuple(aval.shape[d] for d in order)!r}, "
          f"np.{aval.dtype.name})  # {name} with its axes in the order BLAS needs")
    names = [f"i{j}" for j in range(aval.ndim)]
    src = [""] * aval.ndim
    for j, d in enumerate(order):
        src[d] = names[j]
    k.loops(names, [aval.shape[d] for d in order])
    k.put(f"{moved}[{index_str(names)}] = {name}[{index_str(src)}]")
    k.close(aval.ndim)
    return moved


def _dot_blas(k: KernelCtx, plan: GemmPlan) -> None:
    """One gemm_strided call: BLAS on strided views, looping over batch dims (no copies)."""
    flat = []
    for i in range(len(k.node.inputs)):
        name = _operand_copy(k, i) if plan.copies[i] else k.ins[i]
        # `.size` rather than the number: a product of extents would be a size of its own
        # (compiler/size_params.py), and equal to another size in some programs only
        flat.append(k.nest.assign(k.program.local(), f"{name}.reshape({name}.size)"))
    out = k.node.outputs[0].aval
    flat.append(k.nest.assign(k.program.local(), f"{k.outs[0]}.reshape({k.outs[0]}.size)"))
    x, y = (1, 0) if plan.swap else (0, 1)
    loops = [(a.size, a.strides[x], a.strides[y], a.strides[2]) for a in plan.loops]
    loops += [(1, 0, 0, 0)] * (GEMM_LOOPS - len(loops))
    args = (BLAS_KINDS[out.dtype],) + plan.blas + tuple(v for lp in loops for v in lp)
    m, n, kk = plan.mnk
    count = "".join(f"{a.size} x " for a in plan.loops)
    blas_args = k.program.int_args(args)
    helper = "gemm_batched" if _batched(k.node, plan) else "gemm_strided"
    k.put(f"{k.program.helper(helper)}({flat[x]}, {flat[y]}, {flat[2]}, "
          f"{blas_args})  # BLAS: {count}({m}x{kk} @ {kk}x{n})")


def _batched(node: Node, plan: GemmPlan) -> bool:
    """Whether a product's gemm calls form a batch the threads may share (gemm_batched):
    a loop around the call or a batch axis (of any extent, so that a batch of one renders
    the same source), and calls of at least GEMM_BATCH_MIN_MACS multiply-adds each."""
    (_, _), (lb, _) = node.params["dimension_numbers"]
    m, n, kk = plan.mnk
    return bool(plan.loops or lb) and m * n * kk >= GEMM_BATCH_MIN_MACS



def _dot_loops(k: KernelCtx, lfree: list[int], rfree: list[int]) -> None:
    """out[batch, lfree, rfree] (+)= lhs * rhs, contraction outside the rfree loop."""
    lhs, rhs = (v.aval for v in k.node.inputs)
    out = k.node.outputs[0].aval
    (lc, rc), (lb, rb) = k.params["dimension_numbers"]
    names, knames, lidx, ridx = dot_indices(k.node, lfree, rfree)
    nb, nl = len(lb), len(lfree)
    flops = out.size * max(1, int(np.prod([lhs.shape[a] for a in lc], dtype=np.int64)))
    outer = nb + nl
    # An outer product (no contracted axis) writes one product per element: bound by
    # memory like a copy, where a second thread gains little and Numba's parallel passes
    # cost a second of compile time (the per-sample-gradient step has one such kernel).
    k.loops(names[:outer], list(out.shape[:outer]), bool(lc) and k.work_is_large(flops))
    target = f"{k.outs[0]}[{index_str(names)}]"
    if not lc:  # an outer product: one write per element
        k.loops(names[outer:], list(out.shape[outer:]))
        k.put(f"{target} = {k.ins[0]}[{index_str(lidx)}] * {k.ins[1]}[{index_str(ridx)}]")
        k.close(out.ndim - outer)
        k.close(outer)
        return
    narrow = (int(np.prod(out.shape[outer:], dtype=np.int64)) <= NARROW_OUTPUT
              and out.dtype.kind in SUM_TYPES)
    chunked = out.dtype.kind == "f" and lhs.shape[lc[-1]] > COLUMN_CHUNK
    if chunked and outer == out.ndim:
        _dot_rows(k, target, knames, lidx, ridx)
    elif narrow:
        _dot_narrow(k, target, names[outer:], knames, lidx, ridx, chunked)
    elif chunked:
        _dot_chunked(k, target, names[outer:], knames, lidx, ridx)
    else:
        k.loops(names[outer:], list(out.shape[outer:]))
        k.put(f"{target} = 0")
        k.close(out.ndim - outer)
        k.loops(knames, [lhs.shape[a] for a in lc])
        a = k.nest.assign(k.program.local(), f"{k.ins[0]}[{index_str(lidx)}]")
        k.loops(names[outer:], list(out.shape[outer:]))
        k.put(f"{target} += {a} * {k.ins[1]}[{index_str(ridx)}]")
        k.close(out.ndim - outer + len(lc))
    k.close(outer)


def _dot_narrow(k: KernelCtx, target: str, rnames: list[str], knames: list[str],
                lidx: list[str], ridx: list[str], chunked: bool) -> None:
    """Each output element summed in a local, adding the products (and, when chunked,
    the chunks' sums) in the order of the row-update forms below, so with their bits: a
    narrow row (a matrix-vector product) has no vector to fill, and a sum kept in memory
    waits on a store and a load every step."""
    lhs = k.node.inputs[0].aval
    out = k.node.outputs[0].aval
    (lc, _), _ = k.params["dimension_numbers"]
    k.loops(rnames, list(out.shape[out.ndim - len(rnames):]))
    product = f"{k.ins[0]}[{index_str(lidx)}] * {k.ins[1]}[{index_str(ridx)}]"
    start = f"np.{SUM_TYPES[out.dtype.kind] or out.dtype.name}(0)"
    if not chunked:
        acc = k.local(start, "the element's sum")
        k.loops(knames, [lhs.shape[a] for a in lc])
        k.put(f"{acc} += {product}")
        k.close(len(knames))
        k.put(f"{target} = {acc}")
        k.close(len(rnames))
        return
    total = k.sum_start(out.dtype)
    k.loops(knames[:-1], [lhs.shape[a] for a in lc[:-1]])
    chunk, last, n = f"j{out.ndim + len(knames) - 1}", knames[-1], lhs.shape[lc[-1]]
    k.nest.open(chunk, f"0, {n}, {COLUMN_CHUNK}")
    acc = k.local(start, "the element's sum over a chunk")
    k.nest.open(last, f"min({chunk} + {COLUMN_CHUNK}, {n})", start=chunk)
    k.put(f"{acc} += {product}")
    k.close(1)
    k.put(k.sum_add(total, acc))
    k.close(1 + len(knames) - 1)
    k.put(f"{target} = {k.sum_value(total)}")
    k.close(len(rnames))


def _dot_rows(k: KernelCtx, target: str, knames: list[str], lidx: list[str],
              ridx: list[str]) -> None:
    """Each output element as block_dot of the two operands' 1-D views along the last
    contracted axis (vectorised, with block_sum's accuracy); compensated across the other
    contracted axes."""
    (lc, _), _ = k.params["dimension_numbers"]
    last = knames[-1]
    x = f"{k.ins[0]}[{index_str([':' if i == last else i for i in lidx])}]"
    y = f"{k.ins[1]}[{index_str([':' if i == last else i for i in ridx])}]"
    dot = f"{k.program.helper('block_dot')}({x}, {y})"
    if len(knames) == 1:
        k.put(f"{target} = {dot}")
        return
    acc, comp = (k.nest.assign(k.program.local(), "0.0", what, depth=k.nest.depth)
                 for what in ("compensated float64 total", "its rounding errors"))
    lhs = k.node.inputs[0].aval
    k.loops(knames[:-1], [lhs.shape[a] for a in lc[:-1]])
    k.put(f"{acc}, {comp} = {k.program.helper('comp_add')}({acc}, {comp}, {dot})")
    k.close(len(knames) - 1)
    k.put(f"{target} = {k.program.helper('comp_total')}({acc}, {comp})")


def _dot_chunked(k: KernelCtx, target: str, rnames: list[str], knames: list[str],
                 lidx: list[str], ridx: list[str]) -> None:
    """out[..., rfree] accumulated over chunks of COLUMN_CHUNK steps of the last contracted
    axis, each chunk's sums added to compensated totals (as column sums in codegen.py):
    the rfree loop stays innermost and vectorises, and the error does not grow with K."""
    lhs = k.node.inputs[0].aval
    out = k.node.outputs[0].aval
    (lc, _), _ = k.params["dimension_numbers"]
    rshape = list(out.shape[out.ndim - len(rnames):])
    cell = index_str(rnames)
    totals, comps = (k.nest.assign(k.program.local(), f"np.zeros({tuple(rshape)!r})", what,
                                   depth=k.nest.depth)
                     for what in ("compensated float64 totals", "their rounding errors"))
    k.loops(knames[:-1], [lhs.shape[a] for a in lc[:-1]])
    chunk, last, n = f"j{out.ndim + len(knames) - 1}", knames[-1], lhs.shape[lc[-1]]
    k.nest.open(chunk, f"0, {n}, {COLUMN_CHUNK}")
    k.loops(rnames, rshape)
    k.put(f"{target} = 0")
    k.close(len(rnames))
    k.nest.open(last, f"min({chunk} + {COLUMN_CHUNK}, {n})", start=chunk)
    a = k.nest.assign(k.program.local(), f"{k.ins[0]}[{index_str(lidx)}]")
    k.loops(rnames, rshape)
    k.put(f"{target} += {a} * {k.ins[1]}[{index_str(ridx)}]")
    k.close(len(rnames) + 1)
    k.loops(rnames, rshape)
    k.put(f"{totals}[{cell}], {comps}[{cell}] = {k.program.helper('comp_add')}("
          f"{totals}[{cell}], {comps}[{cell}], {target})")
    k.close(len(rnames) + 1 + len(knames) - 1)
    k.loops(rnames, rshape)
    k.put(f"{target} = {k.program.helper('comp_total')}({totals}[{cell}], {comps}[{cell}])")
    k.close(len(rnames))



def _scatter_kernel(accumulate: bool) -> Callable[[KernelCtx], None]:
    def kernel(k: KernelCtx) -> None:
        x, idx, upd = (v.aval for v in k.node.inputs)
        axis = k.params["axis"]
        k.put(f"{k.outs[0]}[...] = {k.ins[0]}" if x.ndim else
              f"{k.outs[0]}[()] = {k.ins[0]}[()]")
        if upd.size == 0:
            return
        names = [f"i{d}" for d in range(upd.ndim)]
        k.loops(names, list(upd.shape))
        where = f"{k.ins[1]}[{index_str(names[axis:axis + idx.ndim])}]"
        j = k.nest.assign(k.program.local(),
                          f"{k.program.helper('take_index')}({where}, {x.shape[axis]})")
        target = names[:axis] + [j] + names[axis + idx.ndim:]
        op = "+=" if accumulate else "="
        k.put(f"{k.outs[0]}[{index_str(target)}] {op} {k.ins[2]}[{index_str(names)}]")
        k.close(upd.ndim)
    return kernel


# Linear algebra: one call of a runtime/cpu_kernels helper on (stack, n, n) views.


def _stack_view(name: str, aval: Any, trailing: int) -> str:
    """name reshaped to (stack,) + its trailing axes (the leading axes merged)."""
    lead = int(np.prod(aval.shape[:aval.ndim - trailing], dtype=np.int64))
    return f"{name}.reshape({(lead,) + tuple(aval.shape[aval.ndim - trailing:])!r})"


def _linalg_kernel(helper: str, in_trailing: tuple[int, ...], out_trailing: tuple[int, ...],
                   *flags: str) -> Callable[[KernelCtx], None]:
    """A kernel calling `helper(inputs..., outputs..., flags...)` on stacked views."""
    def kernel(k: KernelCtx) -> None:
        if 0 in k.node.inputs[0].aval.shape[:-2]:
            return  # an empty stack: nothing to compute
        args = [_stack_view(name, var.aval, t)
                for name, var, t in zip(k.ins, k.node.inputs, in_trailing)]
        args += [_stack_view(name, var.aval, t)
                 for name, var, t in zip(k.outs, k.node.outputs, out_trailing)]
        args += [repr(bool(k.params[f])) for f in flags]
        k.put(f"{k.program.helper(helper)}({', '.join(args)})  # LAPACK per matrix")
    return kernel


_kernel("cholesky", _linalg_kernel("linalg_cholesky", (2,), (2,)))
_kernel("solve", _linalg_kernel("linalg_solve", (2, 2), (2,)))
def _triangular_solve_kernel(k: KernelCtx) -> None:
    # BLAS trsm from NumPy's OpenBLAS is bound for real data; complex data solves the
    # triangle with LAPACK.
    complex_data = k.node.outputs[0].aval.dtype.kind == "c"
    helper = "linalg_triangular_solve_lapack" if complex_data else "linalg_triangular_solve"
    _linalg_kernel(helper, (2, 2), (2,), "lower", "transpose_a")(k)


_kernel("triangular_solve", _triangular_solve_kernel)
_kernel("slogdet", _linalg_kernel("linalg_slogdet", (2,), (0, 0)))
_kernel("solve_by_cholesky", _linalg_kernel("linalg_solve_by_cholesky", (2, 2, 2), (2,),
                                                 "transpose_a"))
_kernel("slogdet_by_cholesky", _linalg_kernel("linalg_slogdet_by_cholesky", (2, 2),
                                                   (0, 0)))
_kernel("cholesky_inverse", _linalg_kernel("linalg_cholesky_inverse", (2, 1), (2,)))
_kernel("eigh", _linalg_kernel("linalg_eigh", (2,), (1, 2)))
_kernel("expm", _linalg_kernel("linalg_expm", (2,), (2,)))
_kernel("qr", _linalg_kernel("linalg_qr", (2,), (2, 2)))
_kernel("lu", _linalg_kernel("linalg_lu", (2,), (2, 1, 1)))


def _svd_kernel(k: KernelCtx) -> None:
    if k.params["compute_uv"]:
        _linalg_kernel("linalg_svd", (2,), (2, 1, 2), "full_matrices")(k)
    else:
        _linalg_kernel("linalg_singular_values", (2,), (1,))(k)


_kernel("svd", _svd_kernel)


def _fft_kernel(k: KernelCtx) -> None:
    """The Fourier transform over the trailing axes: one pocketfft call (rocket-fft) on
    (stack, *lengths) views of the operand and the output (runtime/cpu_kernels.py)."""
    x, out = k.node.inputs[0].aval, k.node.outputs[0].aval
    if out.size == 0:
        return  # an empty stack (lengths are positive): nothing to compute
    trailing = len(k.params["fft_lengths"])
    args = f"{_stack_view(k.ins[0], x, trailing)}, {_stack_view(k.outs[0], out, trailing)}"
    fft_type = k.params["fft_type"]
    if fft_type in ("fft", "ifft"):
        call = f"{k.program.helper('fft_c2c')}({args}, {fft_type == 'fft'!r})"
    else:
        call = f"{k.program.helper('fft_' + ('r2c' if fft_type == 'rfft' else 'c2r'))}({args})"
    k.put(f"{call}  # pocketfft: {fft_type} over {trailing} trailing axes")


_kernel("fft", _fft_kernel)


def _sort_kernel(k: KernelCtx) -> None:
    """Stable sort along the last axis (runtime/sort_kernels.py): each row's permutation by
    one merge sort per key, least significant first, then every operand gathered through it."""
    aval = k.node.inputs[0].aval
    if aval.size == 0:
        return
    rows, n = int(np.prod(aval.shape[:-1], dtype=np.int64)), aval.shape[-1]
    num_keys = k.params["num_keys"]
    views = [_stack_view(name, var.aval, 1) for name, var in zip(k.ins, k.node.inputs)]
    outs = [_stack_view(name, var.aval, 1) for name, var in zip(k.outs, k.node.outputs)]
    if k.params["permutation"]:
        perm = outs[-1]
    else:
        perm = k.nest.assign(k.program.local(), f"np.empty({(rows, n)!r}, np.int64)",
                             "the permutation (scratch)")
    for i in reversed(range(num_keys)):
        k.put(f"{k.program.helper('sort_rows_by')}({views[i]}, {perm}, {i == num_keys - 1})"
              f"  # merge sort by key {i}")
    for view, out in zip(views, outs):
        k.put(f"{k.program.helper('take_rows')}({view}, {perm}, {out})")


_kernel("sort", _sort_kernel)
_kernel("dot_general", _dot_general_kernel)
_kernel("conv", conv_kernel)
_kernel("cumsum", scan_kernel("+"))
_kernel("cumprod", scan_kernel("*"))
_kernel("argmax", arg_kernel("max"))
_kernel("argmin", arg_kernel("min"))
_kernel("scatter_add", _scatter_kernel(True))
_kernel("scatter", _scatter_kernel(False))
