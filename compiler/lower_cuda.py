"""The CUDA backend: a fused graph becomes readable Python source for `numba.cuda`.

The generated module holds one `@cuda.jit` kernel per region and a plain-Python host
function `entry(inputs..., constants...)` that allocates device buffers, launches the
kernels in order through runtime/cuda.py's `launch` and returns device arrays. This module
only writes text: nothing here imports numba.cuda or touches a GPU.

Strategies (simple and correct first; see docs/cuda.md):

- loop regions (elementwise, broadcast, index maps, reductions): one thread per point of
  the kept axes, in a grid-stride loop over a flat index `j0` that is split into the loop
  indices `i0, i1, ...`; a reduction region loops over its reduced axes inside the thread,
  once per phase (softmax: max, sum, output), recomputing instead of stashing rows. Rows
  of BLOCK_MIN_ROW or more are reduced by a block of threads instead (partial results
  combined in shared memory). The scalar expressions are the CPU backend's `point` rules
  wherever they are valid in device code; the rest (math functions, checked indices) are
  CUDA rules below.
- dot_general and conv: one thread per output element with the contraction loop inside;
  an elementwise epilogue (bias + activation) runs in the same thread after the loop.
- cumsum/cumprod: one thread per scan line; argmax/argmin: one thread per kept element.
- scatter and scatter_add: one thread per line along the scattered axis, which copies
  its line of x and applies the updates in NumPy's order, so repeated indices give
  NumPy's answer (last writer wins; sums in the same order), deterministically, with
  no atomics.

`CUDA_LOWERING_RULES` has one `Rule` per primitive (tests/test_coverage.py checks it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transfuse.ir.core import Graph, Node, Var
from transfuse.ir.errors import CompileError
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location

from .codegen import (
    Block,
    LoopNest,
    LoopRegionCodegen,
    PointCtx,
    ProgramBuilder,
    RegionSplit,
    Rule,
    ctor,
    index_str,
    literal,
)
from .fusion import FUSED, REDUCTION, fuse, fusion_class
from .kernel_rules import arg_kernel, conv_kernel, dot_indices, scan_kernel
from .lowering_graph import single_node_graph, top_level_consts, user_lines
from .point_rules import NARROW_INTS, POINT_RULES, divide, exact

P = PRIMITIVES
CUDA_LOWERING_RULES: dict[Any, Rule] = {}
# Errors the kernels report through their `err` array (runtime/cuda_kernels.py).
ERROR_HELPERS = ("take_index", "ipow_checked", "solve_small", "cholesky_small")


def _rule(name: str, **kwargs: Any) -> None:
    CUDA_LOWERING_RULES[P[name]] = Rule(**kwargs)


def _as_on_the_cpu(*names: str) -> None:
    """The CPU backend's point (and reduce) rules for `names`: their expressions are valid
    device code as they stand."""
    for name in names:
        cpu = POINT_RULES[P[name]]
        _rule(name, point=cpu.point, reduce=cpu.reduce)


_as_on_the_cpu("neg", "abs", "square", "not", "integer_pow")
_as_on_the_cpu("add", "sub", "mul", "div", "floor_div", "mod", "max", "min")
_as_on_the_cpu("and", "or", "xor", "eq", "ne", "lt", "le", "gt", "ge")
_as_on_the_cpu("select", "clip", "cast", "random_fold_in", "real", "imag", "conj", "complex")
_as_on_the_cpu("stop_gradient")
_as_on_the_cpu("optimization_barrier")  # left alone: `lower_host` aliases x
_as_on_the_cpu("broadcast_in_dim", "transpose", "slice", "pad", "concatenate",
               "dynamic_slice", "update_slice", "dynamic_update_slice", "iota", "full")
_as_on_the_cpu("random_uniform", "random_normal", "random_split")
_as_on_the_cpu("reduce_sum", "reduce_prod", "reduce_max", "reduce_min")

# ---------------------------------------------------------------------------------------
# Point rules of their own: math through runtime/cuda_kernels.py, errors through `err`


def _math(helper: str) -> Callable[[PointCtx], str]:
    """A runtime/cuda_kernels.py math helper applied to the operands (its complex twin,
    cz_*, for complex operands)."""
    def point(c: PointCtx) -> str:
        name = "cz_" + helper[3:] if c.in_dtype.kind == "c" else helper
        return f"{ctor(c.out_dtype)}({c.helper(name)}({', '.join(c.args())}))"
    return point


def _logistic(c: PointCtx) -> str:
    one = c.lit(1)
    return f"{one} / ({one} + {ctor(c.out_dtype)}({c.helper('cu_exp')}(-{c.arg(0)})))"


def _rsqrt(c: PointCtx) -> str:
    sqrt = "cz_sqrt" if c.in_dtype.kind == "c" else "cu_sqrt"
    return divide(c, c.lit(1), f"{ctor(c.out_dtype)}({c.helper(sqrt)}({c.arg(0)}))")


_rule("exp", point=_math("cu_exp"))
_rule("expm1", point=_math("cu_expm1"))
_rule("log", point=_math("cu_log"))
_rule("log1p", point=_math("cu_log1p"))
_rule("sqrt", point=_math("cu_sqrt"))
_rule("rsqrt", point=_rsqrt)
_rule("sin", point=_math("cu_sin"))
_rule("cos", point=_math("cu_cos"))
_rule("tan", point=_math("cu_tan"))
_rule("arcsin", point=_math("cu_arcsin"))
_rule("arccos", point=_math("cu_arccos"))
_rule("arctan", point=_math("cu_arctan"))
_rule("sinh", point=_math("cu_sinh"))
_rule("cosh", point=_math("cu_cosh"))
_rule("tanh", point=_math("cu_tanh"))
_rule("arcsinh", point=_math("cu_arcsinh"))
_rule("arccosh", point=_math("cu_arccosh"))
_rule("arctanh", point=_math("cu_arctanh"))
_rule("logistic", point=_logistic)
_rule("erf", point=_math("cu_erf"))
_rule("floor", point=_math("cu_floor"))
_rule("ceil", point=_math("cu_ceil"))
_rule("round", point=_math("cu_round"))
_rule("reciprocal", point=lambda c: divide(c, c.lit(1), c.arg(0)))
_rule("arctan2", point=_math("cu_arctan2"))
# scipy.special: libdevice's erfc, erfinv, normcdf, normcdfinv and lgamma; digamma,
# log_ndtr, Hurwitz zeta, i0e and i1e written with libdevice (runtime/special_device.py)
_rule("erfc", point=_math("cu_erfc"))
_rule("erf_inv", point=_math("cu_erfinv"))
_rule("ndtr", point=_math("cu_ndtr"))
_rule("ndtri", point=_math("cu_ndtri"))
_rule("lgamma", point=_math("cu_lgamma"))
_rule("digamma", point=_math("cu_digamma"))
_rule("log_ndtr", point=_math("cu_log_ndtr"))
_rule("zeta", point=_math("cu_zeta"))


_rule("bessel_i0e", point=_math("cu_i0e"))
_rule("bessel_i1e", point=_math("cu_i1e"))


def _sign(c: PointCtx) -> str:
    if c.out_dtype.kind == "c":
        return POINT_RULES[P["sign"]].point(c)  # z / |z|: the same code on the device
    x = c.arg(0)
    if c.out_dtype.kind == "u":
        return exact(c, f"({c.lit(1)} if {x} > 0 else {x})")
    # NaN and zero return themselves, as np.sign does.
    return exact(c, f"({c.lit(1)} if {x} > 0 else ({c.lit(-1)} if {x} < 0 else {x}))")


def _class_test(which: str, x: str, inf: str) -> str:
    """isnan/isinf/isfinite of a real float x, as comparisons."""
    return {"isnan": f"{x} != {x}", "isinf": f"abs({x}) == {inf}",
            "isfinite": f"abs({x}) < {inf}"}[which]


def _is_class(which: str) -> Callable[[PointCtx], str]:
    def point(c: PointCtx) -> str:
        x = c.arg(0)
        if c.in_dtype.kind == "c":  # nan (inf) when either part is; finite when both are
            inf = literal(np.inf, np.float32 if c.in_dtype == np.complex64 else np.float64)
            parts = [_class_test(which, c.bind(f"{x}.{p}"), inf) for p in ("real", "imag")]
            return "(" + (" and " if which == "isfinite" else " or ").join(parts) + ")"
        if c.in_dtype.kind != "f":
            return "True" if which == "isfinite" else "False"
        return _class_test(which, x, literal(np.inf, c.in_dtype))
    return point


_rule("sign", point=_sign)
_rule("isnan", point=_is_class("isnan"))
_rule("isinf", point=_is_class("isinf"))
_rule("isfinite", point=_is_class("isfinite"))


def _pow(c: PointCtx) -> str:
    x, y = c.args()
    if c.out_dtype.kind == "c":
        return f"{ctor(c.out_dtype)}({c.helper('cz_pow')}({x}, {y}))"
    if c.out_dtype.kind == "f":
        return f"{x} ** {y}"
    return exact(c, f"{c.helper('ipow_checked')}({x}, {y}, err)")


_rule("pow", point=_pow)


def _gather_point(c: PointCtx) -> str:
    axis = c.params["axis"]
    x, idx = c.node.inputs
    k = idx.aval.ndim
    where = c.load(1, c.index[axis:axis + k])
    j = c.bind(f"{c.helper('take_index')}({where}, {x.aval.shape[axis]}, err)")
    return c.load(0, c.index[:axis] + [j] + c.index[axis + k:])


_rule("gather", point=_gather_point)


def _dot_point(c: PointCtx) -> str:
    """dot_general at one output point: the contraction loop, inside a thread that goes on
    to compute the epilogue (bias + activation) at that point."""
    lhs, rhs = (v.aval for v in c.node.inputs)
    dtype = c.out_dtype
    (lc, rc), (lb, rb) = c.params["dimension_numbers"]
    lfree = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rfree = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    out = list(c.index)
    lidx, ridx = [""] * lhs.ndim, [""] * rhs.ndim
    for a, b in zip(lb, rb):
        lidx[a] = ridx[b] = out.pop(0)
    for a in lfree:
        lidx[a] = out.pop(0)
    for b in rfree:
        ridx[b] = out.pop(0)
    first = len(c.region.domain)  # contraction loop indices follow the domain's
    knames = [f"i{first + j}" for j in range(len(lc))]
    for a, b, name in zip(lc, rc, knames):
        lidx[a] = ridx[b] = name
    nest = c.region.nest
    acc = nest.assign(c.region.program.local(), literal(0, dtype), "dot_general",
                      depth=nest.depth)
    for name, a in zip(knames, lc):
        nest.open(name, lhs.shape[a])
    x, y = c.load_expr(0, lidx), c.load_expr(1, ridx)
    term = f"({x} and {y})" if dtype == np.bool_ else f"{x} * {y}"
    comp = _compensation(nest, c.region.program, acc, dtype)
    nest.put(_acc_update(c.region.program, acc, comp, term, dtype))
    for _ in knames:
        nest.close()
    if comp:
        nest.put(f"{acc} = {c.region.program.helper('comp_total')}({acc}, {comp})")
    return acc


def _compensation(nest: LoopNest, program: ProgramBuilder, acc: str, dtype: np.dtype
                  ) -> str | None:
    """A float sum's compensation local, next to its accumulator (None for other dtypes):
    the sum then runs as kahan_add (runtime/cuda_kernels.py, docs/reliability.md)."""
    if dtype.kind != "f":
        return None
    comp = program.local()
    nest.assign(comp, literal(0, dtype), "its rounding error", depth=nest.depth_of[acc])
    return comp


def _acc_update(program: ProgramBuilder, acc: str, comp: str | None, term: str,
                dtype: np.dtype) -> str:
    """acc += term: compensated when comp is a compensation local."""
    if comp is None:
        return f"{acc} = {_acc_step(acc, term, dtype)}"
    return f"{acc}, {comp} = {program.helper('kahan_add')}({acc}, {comp}, {term})"


def with_epilogue(node: Node) -> Node | None:
    """A contraction region as one loop region computing the contraction at each point of
    its elementwise epilogue; None when the epilogue reduces (the contraction would be
    recomputed in every pass over the row)."""
    dot, epilogue = node.params["graph"].nodes
    if epilogue.params["reduce_axes"]:
        return None
    inner: Graph = epilogue.params["graph"]
    inputs: list[Var] = []
    for v in list(dot.inputs) + list(inner.inputs):
        if v is not dot.outputs[0] and v not in inputs:
            inputs.append(v)
    sub = Graph(inputs, [dot, *inner.nodes], list(inner.outputs), dict(inner.consts),
                name=inner.name)
    return Node(FUSED, inputs, {"graph": sub, "kind": "loop",
                                "shape": tuple(epilogue.params["shape"]), "reduce_axes": ()},
                list(inner.outputs), node.source)

# ---------------------------------------------------------------------------------------
# Kernel rules: nodes that fill whole buffers, one thread per output point or line


@dataclass
class KernelCtx:
    """What a CUDA kernel rule sees: the node, array names, and the kernel's loop nest."""

    program: ProgramBuilder
    node: Node
    ins: list[str]
    outs: list[str]
    nest: LoopNest
    total: int = 0  # threads' work items (the grid-stride loop's extent)

    @property
    def params(self) -> dict:
        return self.node.params

    def threads(self, names: list[str], extents: list[int]) -> None:
        """A grid-stride loop over the points of `extents`, split into `names`."""
        self.total = open_threads(self.nest, names, extents)

    def loops(self, names: list[str], extents: list[int]) -> None:
        for name, n in zip(names, extents):
            self.nest.open(name, n)

    def close(self, count: int) -> None:
        for _ in range(count):
            self.nest.close()

    def put(self, stmt: str) -> None:
        self.nest.put(stmt)

    def local(self, expr: str, depth: int | None = None) -> str:
        return self.nest.assign(self.program.local(), expr,
                                depth=self.nest.depth if depth is None else depth)

    # -- what the shared kernel rules (compiler/kernel_rules.py) ask of a backend --------
    def each(self, names: list[str], extents: list[int], work: int) -> None:
        """A thread per output point (a grid-stride loop)."""
        self.threads(names, extents)

    def accumulate(self, acc: str, term: str, dtype: np.dtype) -> str:
        return f"{acc} = {_acc_step(acc, term, dtype)}"

    def sum_start(self, dtype: np.dtype) -> tuple[str, str]:
        """A compensated float sum in dtype: its total and rounding error (kahan_add)."""
        acc = self.local(literal(0, dtype))
        return acc, _compensation(self.nest, self.program, acc, dtype)

    def sum_add(self, total: tuple[str, str], term: str) -> str:
        acc, comp = total
        return f"{acc}, {comp} = {self.program.helper('kahan_add')}({acc}, {comp}, {term})"

    def sum_value(self, total: tuple[str, str]) -> str:
        return f"{self.program.helper('comp_total')}({total[0]}, {total[1]})"


def open_threads(nest: LoopNest, names: list[str], extents: list[int], *, flat: str = "j0",
                 start: str = "cuda.grid(1)", step: str = "cuda.gridsize(1)") -> int:
    """Open `for j0 in range(cuda.grid(1), total, cuda.gridsize(1))` (a grid-stride loop)
    and bind each index name to its coordinate of j0 (C order). Returns total."""
    total = int(np.prod(extents, dtype=np.int64))
    nest.stack.append(Block(f"for {flat} in range({start}, {total}, {step}):", nest.depth + 1))
    nest.depth_of[flat] = nest.depth
    stride = 1
    for name, n in reversed(list(zip(names, extents))):
        if n == 1:
            expr = "0"
        elif stride == 1:
            expr = f"{flat} % {n}" if stride * n != total else flat
        elif stride * n == total:
            expr = f"{flat} // {stride}"
        else:
            expr = f"({flat} // {stride}) % {n}"
        nest.put(f"{name} = {expr}")
        nest.depth_of[name] = nest.depth
        stride *= n
    return total


def _acc_step(acc: str, term: str, dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return f"{acc} or {term}"
    step = f"{acc} + {term}"
    return f"{ctor(dtype)}({step})" if dtype in NARROW_INTS else step


def _dot_general_kernel(k: KernelCtx) -> None:
    """out[batch, lfree, rfree] = sum over the contracted dims, one thread per element."""
    lhs, rhs = (v.aval for v in k.node.inputs)
    out = k.node.outputs[0].aval
    (lc, rc), (lb, rb) = k.params["dimension_numbers"]
    lfree = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rfree = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    names, knames, lidx, ridx = dot_indices(k.node, lfree, rfree)
    k.threads(names, list(out.shape))
    acc = k.local(literal(0, out.dtype))
    comp = _compensation(k.nest, k.program, acc, out.dtype)
    k.loops(knames, [lhs.shape[a] for a in lc])
    term = f"{k.ins[0]}[{index_str(lidx)}] * {k.ins[1]}[{index_str(ridx)}]"
    if out.dtype == np.bool_:
        term = f"({k.ins[0]}[{index_str(lidx)}] and {k.ins[1]}[{index_str(ridx)}])"
    k.put(_acc_update(k.program, acc, comp, term, out.dtype))
    k.close(len(lc))
    if comp:
        acc = f"{k.program.helper('comp_total')}({acc}, {comp})"
    k.put(f"{k.outs[0]}[{index_str(names)}] = {acc}")


def _scatter_kernel(accumulate: bool) -> Callable[[KernelCtx], None]:
    """One thread per line along `axis`: copy x's line, then apply the updates in order."""
    def kernel(k: KernelCtx) -> None:
        x, idx, upd = (v.aval for v in k.node.inputs)
        axis = k.params["axis"]
        outer = [f"i{d}" for d in range(axis)]
        inner = [f"i{d}" for d in range(axis + 1, x.ndim)]
        k.threads(outer + inner, list(x.shape[:axis] + x.shape[axis + 1:]))
        line = outer + [f"i{axis}"] + inner
        k.nest.open(f"i{axis}", x.shape[axis])
        k.put(f"{k.outs[0]}[{index_str(line)}] = {k.ins[0]}[{index_str(line)}]")
        k.close(1)
        names = [f"i{x.ndim + d}" for d in range(idx.ndim)]  # the update's index dims
        k.loops(names, list(idx.shape))
        where = f"{k.ins[1]}[{index_str(names)}]"
        j = k.nest.assign(k.program.local(),
                          f"{k.program.helper('take_index')}({where}, {x.shape[axis]}, err)")
        target = index_str(outer + [j] + inner)
        value = f"{k.ins[2]}[{index_str(outer + names + inner)}]"
        if accumulate:
            k.put(f"{k.outs[0]}[{target}] = "
                  f"{_acc_step(f'{k.outs[0]}[{target}]', value, x.dtype)}")
        else:
            k.put(f"{k.outs[0]}[{target}] = {value}")
        k.close(idx.ndim)
    return kernel


_rule("dot_general", kernel=_dot_general_kernel, point=_dot_point)
_rule("conv", kernel=conv_kernel)
_rule("cumsum", kernel=scan_kernel("+"))
_rule("cumprod", kernel=scan_kernel("*"))
_rule("argmax", kernel=arg_kernel("max"))
_rule("argmin", kernel=arg_kernel("min"))
_rule("scatter_add", kernel=_scatter_kernel(True))
_rule("scatter", kernel=_scatter_kernel(False))


def _no_device_kernel(k: Any) -> None:
    """Linear algebra has no CUDA kernel yet: refuse while the program is built."""
    raise CompileError(with_location(
        f"{k.node.prim.name} (np.linalg) has no CUDA kernel yet; run this function on the "
        "CPU (jit without device='cuda')", k.node.source))


SMALL_MATRIX_MAX = 32  # runtime/cuda_kernels.py: the order a thread factors in local memory


def _per_matrix_kernel(helper: str) -> Callable[[Any], None]:
    """A thread a matrix of the stack, calling a runtime/cuda_kernels helper on its views
    (the loop body the CPU's helper runs too); larger matrices are refused at build time."""
    def kernel(k: Any) -> None:
        a = k.node.inputs[0].aval
        if a.shape[-1] > SMALL_MATRIX_MAX:
            raise CompileError(with_location(
                f"{k.node.prim.name} (np.linalg) of {a.shape[-1]}x{a.shape[-1]} matrices has "
                f"no CUDA kernel (a thread factors matrices up to {SMALL_MATRIX_MAX}x"
                f"{SMALL_MATRIX_MAX}); run this function on the CPU", k.node.source))
        lead = list(a.shape[:-2])
        names = [f"i{d}" for d in range(len(lead))]
        k.threads(names, lead)
        at = f"[{', '.join(names)}]" if names else ""
        views = [f"{name}{at}" for name in k.ins + k.outs]
        k.put(f"{k.program.helper(helper)}({', '.join(views)}, err)  # a thread a matrix")
    return kernel


_rule("cholesky", kernel=_per_matrix_kernel("cholesky_small"))
_rule("triangular_solve", kernel=_no_device_kernel)
_rule("solve", kernel=_per_matrix_kernel("solve_small"))
_rule("slogdet", kernel=_no_device_kernel)
_rule("solve_by_cholesky", kernel=_no_device_kernel)  # made for order > 32 only
_rule("slogdet_by_cholesky", kernel=_no_device_kernel)
_rule("cholesky_inverse", kernel=_no_device_kernel)
_rule("eigh", kernel=_no_device_kernel)
_rule("expm", kernel=_no_device_kernel)
_rule("svd", kernel=_no_device_kernel)
_rule("qr", kernel=_no_device_kernel)
_rule("lu", kernel=_no_device_kernel)


def _no_fft_kernel(k: Any) -> None:
    """The Fourier transform has no CUDA kernel yet: refuse while the program is built."""
    raise CompileError(with_location(
        f"{k.node.prim.name} ({k.params['fft_type']}: np.fft/scipy.fft) has no CUDA kernel "
        "yet; run this function on the CPU (jit without device='cuda')", k.node.source))


_rule("fft", kernel=_no_fft_kernel)


def _no_sort_kernel(k: Any) -> None:
    """Sorting has no CUDA kernel yet: refuse while the program is built."""
    raise CompileError(with_location(
        "sort (np.sort, argsort, partition, lexsort, median, quantile, ...) has no CUDA kernel "
        "yet; run this function on the CPU (jit without device='cuda')", k.node.source))


_rule("sort", kernel=_no_sort_kernel)

# Lowered by the driver: per-thread loops and branches on numbers, or a CompileError naming
# the primitive (compiler/lower_cuda_control.py).
for _name in ("cond", "while_loop", "scan"):
    _rule(_name)
# Views and copies left alone run on the host (a reshaped device array, a device-to-device
# copy: `lower_host`); inside a loop region they are the CPU's index maps.
_rule("reshape", point=POINT_RULES[P["reshape"]].point, kernel=lambda k: None)
_rule("squeeze", point=POINT_RULES[P["squeeze"]].point, kernel=lambda k: None)
_rule("expand_dims", point=POINT_RULES[P["expand_dims"]].point, kernel=lambda k: None)
_rule("copy", point=POINT_RULES[P["copy"]].point, kernel=lambda k: None)
CUDA_LOWERING_RULES[FUSED] = Rule()  # lowered by the driver (loop regions)

# ---------------------------------------------------------------------------------------
# Loop regions: the CPU region codegen with the kept loops replaced by threads


class CudaLoopCodegen(LoopRegionCodegen):
    """One fused loop region as the body of a kernel: a thread per kept point, or, for
    long rows, a block per kept point (`block_threads` threads and a tree reduction in
    shared memory)."""

    block_threads = 0  # threads per block of the block strategy (0: never used)
    block_min_row = 0  # rows at least this long are reduced by a block
    threads_per_point = 1  # 1, or block_threads when the block strategy was chosen

    def generate(self) -> Block:
        reductions = [n for n in self.graph.nodes if fusion_class(n) == REDUCTION]
        depth = self._dependency_depths()
        loops_of_red = {n: depth[n.inputs[0]] + 1 for n in reductions}
        full_outputs, kept_outputs = self._split_outputs()
        loops_of_out = {v: depth[v] + 1 for v in full_outputs}
        n_loops = max([*loops_of_red.values(), *loops_of_out.values(), 0])
        self.n_loops = n_loops if self.reduce_axes else 1
        row = int(np.prod([self.domain[a] for a in self.reduce_axes], dtype=np.int64))
        if self.reduce_axes and self.block_threads and row >= self.block_min_row:
            return self._generate_blocks(reductions, loops_of_red, full_outputs,
                                         loops_of_out, kept_outputs)
        self.total = open_threads(self.nest, [f"i{a}" for a in self.kept],
                                  [self.domain[a] for a in self.kept])
        self.inner_depth = 1
        if not self.reduce_axes:
            self.loop = 1
            for v in full_outputs + kept_outputs:
                self._store(v)
        for loop in range(1, n_loops + 1) if self.reduce_axes else ():
            self.loop = loop
            self._cuda_phase([n for n in reductions if loops_of_red[n] == loop],
                             [v for v in full_outputs if loops_of_out[v] == loop])
        if self.reduce_axes:
            self.loop = n_loops + 1
            for v in kept_outputs:
                self._store(v)
        while self.nest.depth > 0:
            self.nest.close()
        return self.nest.root

    def _cuda_phase(self, reductions: list[Node], outputs: list[Var]) -> None:
        """One pass of this thread over the reduced axes: fold, store full-level outputs."""
        accs = {}
        for node in reductions:
            init, _ = self.rules[node.prim].reduce
            acc = self.program.local()
            self.nest.assign(acc, init(node.outputs[0].aval.dtype), depth=self.inner_depth)
            accs[node] = acc
        comps = self._compensations(accs)
        for a in self.reduce_axes:
            self.nest.open(f"i{a}", self.domain[a])
        self._fold(accs, comps)
        for v in outputs:
            self._store(v)
        for _ in self.reduce_axes:
            self.nest.close()
        for node, acc in accs.items():
            self._finish_sum(acc, comps.get(node))
            self.values[node.outputs[0]] = acc
            self.nest.depth_of[acc] = self.inner_depth

    def _compensations(self, accs: dict) -> dict:
        """A compensation local for each float sum (summed with kahan_add: the error stays
        at a few roundoffs however long the row, docs/reliability.md)."""
        return {node: comp for node, acc in accs.items() if node.prim.name == "reduce_sum"
                and (comp := _compensation(self.nest, self.program, acc,
                                           node.outputs[0].aval.dtype)) is not None}

    def _fold(self, accs: dict, comps: dict) -> None:
        """Each reduction's step at the current point of the row."""
        for node, acc in accs.items():
            v = self.value(node.inputs[0], self.canonical(node.inputs[0]))
            if node in comps:
                dtype = node.outputs[0].aval.dtype
                self.nest.put(_acc_update(self.program, acc, comps[node], v, dtype))
            else:
                self.nest.put(f"{acc} = {self._combine(node, acc, v)}")

    def _finish_sum(self, acc: str, comp: str | None) -> None:
        if comp is not None:
            self.nest.put(f"{acc} = {self.program.helper('comp_total')}({acc}, {comp})")

    # -- the block strategy: long rows ---------------------------------------------------
    def _generate_blocks(self, reductions, loops_of_red, full_outputs, loops_of_out,
                         kept_outputs) -> Block:
        """A block per kept point: its threads stride over the row, then combine their
        partial results in shared memory (a tree), once per phase. Thread 0 stores the
        kept-level outputs."""
        threads = self.threads_per_point = self.block_threads
        self.nest.put("tid = cuda.threadIdx.x", 0)
        shared = {}
        for node in reductions:
            dtype = node.outputs[0].aval.dtype
            shared[node] = f"sh{len(shared)}"
            self.nest.put(f"{shared[node]} = cuda.shared.array({threads}, {ctor(dtype)})"
                          f"  # {node.prim.name}: one partial result per thread", 0)
        self.total = open_threads(self.nest, [f"i{a}" for a in self.kept],
                                  [self.domain[a] for a in self.kept],
                                  start="cuda.blockIdx.x", step="cuda.gridDim.x")
        self.inner_depth = 1
        for loop in range(1, self.n_loops + 1):
            self.loop = loop
            phase = [n for n in reductions if loops_of_red[n] == loop]
            self._block_phase(phase, [v for v in full_outputs if loops_of_out[v] == loop],
                              shared)
        self.loop = self.n_loops + 1
        for v in kept_outputs:
            idx = self.canonical(v)
            value = self.value(v, idx)
            self.nest.put("if tid == 0:")
            self.nest.put(f"    {self.out_names[v]}[{index_str(idx)}] = {value}")
        while self.nest.depth > 0:
            self.nest.close()
        return self.nest.root

    def _block_phase(self, reductions: list[Node], outputs: list[Var], shared: dict) -> None:
        accs = {}
        for node in reductions:
            init, _ = self.rules[node.prim].reduce
            accs[node] = self.nest.assign(self.program.local(),
                                          init(node.outputs[0].aval.dtype), depth=1)
        comps = self._compensations(accs)
        row_axes = list(self.reduce_axes)
        row = open_threads(self.nest, [f"i{a}" for a in row_axes],
                           [self.domain[a] for a in row_axes], flat="j1", start="tid",
                           step=str(self.block_threads))
        del row
        self._fold(accs, comps)
        for v in outputs:
            self._store(v)
        self.nest.close()
        if not accs:
            return
        for node, acc in accs.items():  # the tree below is pairwise
            self._finish_sum(acc, comps.get(node))
        for node, acc in accs.items():
            self.nest.put(f"{shared[node]}[tid] = {acc}")
        self.nest.put("cuda.syncthreads()")
        half = self.block_threads // 2
        while half:
            self.nest.put(f"if tid < {half}:")
            for node in accs:
                sh = shared[node]
                step = self._combine(node, f"{sh}[tid]", f"{sh}[tid + {half}]")
                self.nest.put(f"    {sh}[tid] = {step}")
            self.nest.put("cuda.syncthreads()")
            half //= 2
        for node, acc in accs.items():
            self.nest.put(f"{acc} = {shared[node]}[0]")
            self.values[node.outputs[0]] = acc
            self.nest.depth_of[acc] = 1
        self.nest.put("cuda.syncthreads()  # every thread has read the results")


# ---------------------------------------------------------------------------------------
# The program: kernels and the host entry that launches them


@dataclass
class KernelInfo:
    """One generated kernel: its name and parameters (array avals, for PTX checks)."""

    name: str
    params: list[str]
    param_avals: list  # aval of each parameter; None for the int32 error flag
    primitives: list[str]
    total: int  # work items of its grid-stride loop
    threads_per_item: int = 1  # block_threads for a row reduced by a block


@dataclass
class CudaProgram:
    """Generated CUDA source and how to call its host entry."""

    source: str
    entry: str
    arg_avals: list
    const_args: list[np.ndarray]
    num_outputs: int
    kernels: list[KernelInfo] = field(default_factory=list)
    checks_errors: bool = False


BLOCK_THREADS = 256  # threads per block reducing one row (a power of two)
BLOCK_MIN_ROW = 1024  # rows at least this long are reduced by a block, not a thread


def lower_cuda_program(graph: Graph, *, fastmath: bool = False, title: str = "",
                       block_threads: int = BLOCK_THREADS,
                       block_min_row: int = BLOCK_MIN_ROW) -> CudaProgram:
    """Source for `numba.cuda` kernels and a host entry computing the fused graph.

    block_threads (a power of two, 0 for never) and block_min_row choose when a reduction
    region reduces each row with a block of threads instead of one thread.
    """
    if block_threads & (block_threads - 1):
        raise CompileError(f"block_threads must be a power of two, got {block_threads}")
    return _CudaLowering(graph, fastmath, block_threads, block_min_row).run(title)


class _CudaLowering:
    def __init__(self, graph: Graph, fastmath: bool, block_threads: int, block_min_row: int):
        self.graph = graph
        self.fastmath = fastmath
        self.block = block_threads, block_min_row
        self.program = ProgramBuilder()
        self.names: dict[Var, str] = {}
        self.avals: dict[str, Any] = {}  # array name -> aval, for kernel signatures
        self.roots: dict[str, str] = {}  # a view's name -> the buffer it views
        self.const_vars: list[Var] = []
        self.body: list[str] = []
        self.kernels: list[list[str]] = []
        self.infos: list[KernelInfo] = []
        self.count = 0

    def run(self, title: str) -> CudaProgram:
        for i, v in enumerate(self.graph.inputs):
            self.bind(v, f"a{i}")
        for v in top_level_consts(self.graph):
            self.bind(v, f"c{len(self.const_vars)}")
            self.const_vars.append(v)
        for node in self.graph.nodes:
            self.lower_node(node)
        ret = self.returns()
        args = [self.names[v] for v in self.graph.inputs + self.const_vars]
        checks = any(name in self.program.helpers for name in ERROR_HELPERS)
        source = self.render(args, ret, title, checks)
        consts = [np.ascontiguousarray(self.graph.consts[v]) for v in self.const_vars]
        return CudaProgram(source, "entry", [v.aval for v in self.graph.inputs + self.const_vars],
                           consts, len(self.graph.outputs), self.infos, checks)

    def bind(self, var: Var, name: str) -> str:
        self.names[var] = name
        self.avals[name] = var.aval
        return name

    def buffer(self, var: Var) -> str:
        """A fresh device buffer for var (no reuse: device memory is plentiful here)."""
        name = self.bind(var, f"b{len(self.avals)}")
        self.body.append(f"    {name} = empty({var.aval.shape!r}, np.{var.aval.dtype.name})")
        return name

    # -- nodes ---------------------------------------------------------------------------
    def lower_node(self, node: Node) -> None:
        if node.prim is FUSED and node.params["kind"] == "loop":
            self.lower_loop(node)
            return
        if node.prim is FUSED and node.params["kind"] == "contraction":
            merged = with_epilogue(node)
            if merged is not None:
                self.lower_loop(merged)
                return
            for part in node.params["graph"].nodes:  # the epilogue reduces: run it after
                self.lower_node(part)
            return
        if node.prim is FUSED:
            raise CompileError(f"the CUDA backend cannot lower a fused region of kind "
                               f"{node.params['kind']}")
        name = node.prim.name
        if name in ("cond", "while_loop", "scan"):
            from .lower_cuda_control import lower_cuda_control_flow

            lower_cuda_control_flow(self, node)
            return
        rule = CUDA_LOWERING_RULES.get(node.prim)
        if name in ("reshape", "squeeze", "expand_dims", "copy", "optimization_barrier"):
            self.lower_host(node)  # the barrier: an alias of x, as a reshape to its shape
        elif rule is not None and rule.kernel is not None:
            self.lower_kernel(node, rule)
        elif rule is not None and (rule.point is not None or rule.reduce is not None):
            for part in fuse(single_node_graph(node), enabled=False).nodes:
                self.lower_node(part)
        else:
            raise CompileError(f"the CUDA backend has no lowering for primitive {name}"
                               + _where(node))

    def lower_host(self, node: Node) -> None:
        """Views and copies: a reshaped device array, or a device-to-device copy."""
        src, out = self.names[node.inputs[0]], node.outputs[0]
        self.comment([node], node.prim.name)
        name = self.bind(out, f"b{len(self.avals)}")
        if node.prim.name == "copy":
            self.body.append(f"    {name} = copy({src})")
        else:
            self.roots[name] = self.roots.get(src, src)
            self.body.append(f"    {name} = {src}.reshape({out.aval.shape!r})")

    def lower_kernel(self, node: Node, rule: Rule) -> None:
        mark = len(self.body)
        outs = [self.buffer(v) for v in node.outputs]
        nest = LoopNest()
        ctx = KernelCtx(self.program, node, [self.names[v] for v in node.inputs], outs, nest)
        rule.kernel(ctx)
        while nest.depth:
            nest.close()
        body = nest.root.render(1)
        if body:  # else an empty output: no work, no launch
            self.emit_kernel([node], body, ctx.total, mark=mark)

    def lower_loop(self, node: Node) -> None:
        sub: Graph = node.params["graph"]
        saved = self.program.counter, set(self.program.helpers)
        saved_body, saved_avals = list(self.body), dict(self.avals)
        mark = len(self.body)
        try:
            out_names = {v: self.buffer(v) for v in sub.outputs}
            inputs = {v: self.names[v] for v in sub.inputs}
            codegen = CudaLoopCodegen(self.program, CUDA_LOWERING_RULES, node, inputs,
                                      out_names, allow_parallel=False)
            codegen.block_threads, codegen.block_min_row = self.block
            block = codegen.generate()
        except RegionSplit as e:
            self.program.counter, self.program.helpers = saved
            self.body, self.avals = saved_body, saved_avals
            if len(sub.nodes) == 1:
                raise CompileError(f"the CUDA backend cannot lower {sub.nodes[0].prim.name}: "
                                   f"{e}{_where(sub.nodes[0])}") from None
            for part in fuse(sub, enabled=False).nodes:
                self.lower_node(part)
            return
        self.names.update(out_names)
        self.emit_kernel(sub.nodes, block.render(1), codegen.total,
                         f"loop over {tuple(node.params['shape'])}"
                         + (f", reducing axes {tuple(node.params['reduce_axes'])}"
                            if node.params["reduce_axes"] else ""), mark=mark,
                         threads=codegen.threads_per_point)

    def emit_kernel(self, nodes: list[Node], body: list[str], total: int,
                    what: str = "kernel", mark: int | None = None, threads: int = 1) -> None:
        """A `@cuda.jit` kernel of body, and its launch in the entry (commented at mark)."""
        self.count += 1
        name = f"k{self.count}"
        self.comment(nodes, what, name, at=mark)
        text = [line.split("#", 1)[0] for line in body]
        used = sorted({m for line in text for m in re.findall(r"\b([abc]\d+)\b", line)},
                      key=lambda n: (n[0], int(n[1:])))
        params = used + (["err"] if any(re.search(r"\berr\b", line) for line in text) else [])
        self.kernels.append([f"@cuda.jit(fastmath={self.fastmath})",
                             f"def {name}({', '.join(params)}):"] + body + ["", ""])
        if threads > 1:
            self.body.append(f"    launch_blocks({name}, {total}, {threads}, "
                             f"{', '.join(params)})")
        else:
            self.body.append(f"    launch({name}, {total}, {', '.join(params)})")
        self.infos.append(KernelInfo(name, params, [self.avals.get(p) for p in params],
                                     [n.prim.name for n in nodes], total, threads))

    def comment(self, nodes: list[Node], what: str, kernel: str | None = None,
                at: int | None = None) -> None:
        prims = ", ".join(n.prim.name for n in nodes)
        label = f"{kernel}: " if kernel else ""
        text = f"    # -- {label}{what}: {prims}"
        where = user_lines(nodes)
        if where:
            text += f"\n    #    from {where}"
        self.body.insert(len(self.body) if at is None else at, text)

    def returns(self) -> str:
        """Output expressions: fresh buffers, copied where they would alias another value."""
        names, done, seen = [], {}, set()
        written = {self.graph.inputs[i] for i in self.graph.mutated_inputs}
        for v in self.graph.outputs:
            if v in done or (v in self.graph.inputs and v not in written):
                names.append(done.get(v, self.names.get(v)))
                continue
            name = self.names[v]
            root = self.roots.get(name, name)
            if not root.startswith("b") or root in seen:
                name = f"copy({name})"
            seen.add(root)
            done[v] = name
            names.append(name)
        if len(names) == 1:
            return names[0]
        return "(" + ", ".join(names) + ")"

    def render(self, args: list[str], ret: str, title: str, checks: bool) -> str:
        ins = ", ".join(str(v.aval) for v in self.graph.inputs)
        outs = ", ".join(str(v.aval) for v in self.graph.outputs)
        head = [f"# transfuse: CUDA kernels for `{self.graph.name}` ({ins}) -> ({outs})",
                f"#   generated by transfuse {_version()} for numba-cuda",
                "#   entry(inputs..., constants...) takes device arrays, launches every kernel"
                " below in order and returns device arrays.",
                "#   In a kernel, j0 is the thread's flat work item (grid-stride loop) and"
                " i0, i1, ... its indices."]
        if title:
            head.append(f"#   {title}")
        imports = ["import numpy as np", "from numba import cuda", "",
                   "from transfuse.runtime.cuda import check_errors, copy, empty, error_flag,"
                   " launch, launch_blocks"]
        helpers = sorted(self.program.helpers)
        if helpers:
            imports.append(f"from transfuse.runtime.cuda_kernels import {', '.join(helpers)}")
        kernels = [line for k in self.kernels for line in k]
        entry = [f"def entry({', '.join(args)}):"]
        if checks:
            entry.append("    err = error_flag()  # set by kernels that find a bad index")
        entry += self.body
        if checks:
            entry.append("    check_errors(err)")
        entry.append(f"    return {ret}")
        return "\n".join(head + [""] + imports + ["", ""] + kernels + entry) + "\n"


def _where(node: Node) -> str:
    return f" (at {node.source.short()})" if node.source is not None else ""


def _version() -> str:
    import transfuse

    return transfuse.__version__


__all__ = ["CUDA_LOWERING_RULES", "CudaProgram", "KernelInfo", "lower_cuda_program"]
