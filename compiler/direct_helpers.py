"""The direct back end's rules for runtime/cpu_kernels.py's reduction and BLAS helpers.

Most helpers a generated kernel calls are plain Python that compiler/lower_direct.py
translates from source. These are not: they are written with what only Numba compiles (an
`overload`, intrinsics, a `fastmath={"reassoc"}` function), so each has an explicit rule
here that writes its algorithm's IR, in the same order of operations (runtime/
cpu_kernels.py documents them):

- `block_sum(buf)`: blocks of SUM_BLOCK elements summed with reassociation allowed (so
  LLVM keeps a partial sum per vector lane, as `_block_partial`), the block sums added to
  a float64 total, compensated with TwoSum for float64 data (`comp_add`), then rounded to
  buf's dtype; up to SUM_BLOCK elements the block sum alone;
- `block_max(buf)`, `block_min(buf)`: LLVM's NaN-propagating maximum / minimum over the
  row, starting from buf[0];
- `comp_add(total, comp, x)`, `comp_total(total, comp)`: the compensated float64 sum;
- `gemm_strided(x, y, c, plan)`, `gemm_batched(...)`: NumPy's OpenBLAS through cblas,
  once per point of the plan's loops. Where a `gemm_batched` call is a statement of the
  entry, compiler/lower_direct.py makes it a parallel step of its own (`emit_gemm_block`,
  `emit_gemm_extent`), each block's calls on one BLAS thread.

A rule takes the emitter and the call's arguments and returns the result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from llvmlite import ir

from .direct_plan import numpy_openblas
from .lower_direct import FLOAT64, Array, HelperRule, Scalar, Unsupported
from .mathlib_ops import declare, full_width

__all__ = ["HELPER_RULES", "HelperRule"]

SUM_BLOCK = 128  # runtime/cpu_kernels.py's SUM_BLOCK: NumPy's pairwise block
I1, I64 = ir.IntType(1), ir.IntType(64)
F64 = ir.DoubleType()


HELPER_RULES: dict[str, HelperRule] = {}


def _rule(name: str) -> Callable:
    def register(emit: Callable) -> Callable:
        HELPER_RULES[name] = HelperRule(name, emit)
        return emit
    return register


# ---------------------------------------------------------------------------------------
# Compensated float64 sums


def two_sum(b: ir.IRBuilder, a: ir.Value, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(a + x rounded, its exact rounding error): Knuth's TwoSum, as cpu_kernels.two_sum."""
    total = b.fadd(a, x)
    x_part = b.fsub(total, a)
    return total, b.fadd(b.fsub(a, b.fsub(total, x_part)), b.fsub(x, x_part))


def comp_add_values(b: ir.IRBuilder, total: ir.Value, comp: ir.Value, x: ir.Value
                    ) -> tuple[ir.Value, ir.Value]:
    """comp_add on LLVM values: float32 terms join the float64 total alone, float64 terms
    through TwoSum (cpu_kernels._comp_add)."""
    if isinstance(x.type, ir.FloatType):
        return b.fadd(total, b.fpext(x, F64)), comp
    total, err = two_sum(b, total, x)
    return total, b.fadd(comp, err)


def comp_total_value(b: ir.IRBuilder, total: ir.Value, comp: ir.Value) -> ir.Value:
    """total + comp, or total alone once it is inf or NaN (cpu_kernels.comp_total)."""
    finite = b.fcmp_ordered("==", b.fsub(total, total), ir.Constant(F64, 0.0))
    return b.select(finite, b.fadd(total, comp), total)


@_rule("comp_add")
def _comp_add(e: Any, args: list) -> tuple:
    total, comp, x = (e.as_scalar(a) for a in args)
    if total.dtype != FLOAT64 or comp.dtype != FLOAT64 or x.dtype.kind != "f":
        raise Unsupported(f"comp_add of {total.dtype}, {comp.dtype}, {x.dtype}")
    new_total, new_comp = comp_add_values(e.builder, total.value, comp.value, x.value)
    return Scalar(new_total, FLOAT64), Scalar(new_comp, FLOAT64)


@_rule("comp_total")
def _comp_total(e: Any, args: list) -> Any:
    total, comp = (e.cast(e.as_scalar(a), FLOAT64) for a in args)
    return Scalar(comp_total_value(e.builder, total.value, comp.value), FLOAT64)


# ---------------------------------------------------------------------------------------
# Block reductions: one function of the module per dtype, called with (data, length)


def _row(e: Any, args: list, name: str) -> tuple[Any, ir.Function]:
    """(the row, the module's function for its dtype) of a block helper's call."""
    (row,) = args
    if not isinstance(row, Array) or len(row.shape) != 1 or row.dtype.kind != "f":
        raise Unsupported(f"{name} of something other than a float row")
    suffix = "f32" if row.dtype.itemsize == 4 else "f64"
    fn = e.module.globals.get(f"tf_{name}_{suffix}")
    if fn is None:
        fn = _BUILDERS[name](e.module, row.ptr.type.pointee, f"tf_{name}_{suffix}")
    return row, fn


def _function(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]
              ) -> tuple[ir.Function, ir.IRBuilder]:
    fn = ir.Function(module, ir.FunctionType(ret, args), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    # Compiled once, called: inlined at each of a region's reductions, the vectorised
    # loop was compiled once a call (the softmax rows' region of the per-sample gradient,
    # five calls: 111 -> 60 ms of LLVM), and a call costs nothing beside a row's loop.
    fn.attributes.add("noinline")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def _loop(b: ir.IRBuilder, n: ir.Value, init: ir.Value,
          step: Callable[[ir.Value, ir.Value], ir.Value]) -> ir.Value:
    """acc = init; for i in range(n): acc = step(i, acc); the final acc."""
    before = b.block
    body = b.append_basic_block("loop")
    done = b.append_basic_block("done")
    b.cbranch(b.icmp_signed(">", n, ir.Constant(I64, 0)), body, done)
    b.position_at_end(body)
    i = b.phi(I64)
    acc = b.phi(init.type)
    i.add_incoming(ir.Constant(I64, 0), before)
    acc.add_incoming(init, before)
    new_acc = step(i, acc)
    new_i = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(new_i, b.block)
    acc.add_incoming(new_acc, b.block)
    b.cbranch(b.icmp_signed("<", new_i, n), body, done)
    b.position_at_end(done)
    out = b.phi(init.type)
    out.add_incoming(init, before)
    out.add_incoming(new_acc, body)
    return out


def _build_partial(module: ir.Module, lltype: ir.Type, name: str) -> ir.Function:
    """The sum of buf[0:n] in buf's type, added in any order (cpu_kernels._block_partial:
    the one reassociating loop, so the vectoriser keeps a partial sum per lane)."""
    fn, b = _function(module, name, lltype, [lltype.as_pointer(), I64])
    full_width(b)
    ptr, n = fn.args

    def add(i: ir.Value, acc: ir.Value) -> ir.Value:
        value = b.load(b.gep(ptr, [i], source_etype=lltype), typ=lltype)
        return b.fadd(acc, value, flags=("reassoc",))
    b.ret(_loop(b, n, ir.Constant(lltype, 0.0), add))
    return fn


def _build_sum(module: ir.Module, lltype: ir.Type, name: str) -> ir.Function:
    """block_sum: the block partial alone up to SUM_BLOCK elements, else block partials
    added to a compensated float64 total, rounded to the row's type."""
    suffix = name.rsplit("_", 1)[1]
    partial = module.globals.get(f"tf_block_partial_{suffix}") or _build_partial(
        module, lltype, f"tf_block_partial_{suffix}")
    fn, b = _function(module, name, lltype, [lltype.as_pointer(), I64])
    ptr, n = fn.args
    block = ir.Constant(I64, SUM_BLOCK)
    with b.if_then(b.icmp_signed("<=", n, block)):
        b.ret(b.call(partial, [ptr, n]))
    blocks = b.sdiv(b.add(n, ir.Constant(I64, SUM_BLOCK - 1)), block)
    zero = ir.Constant(F64, 0.0)
    pair_type = ir.LiteralStructType([F64, F64])
    init = ir.Constant(pair_type, [zero, zero])

    def add(k: ir.Value, pair: ir.Value) -> ir.Value:
        start = b.mul(k, block)
        rest = b.sub(n, start)
        length = b.select(b.icmp_signed("<", rest, block), rest, block)
        part = b.call(partial, [b.gep(ptr, [start], source_etype=lltype), length])
        total, comp = comp_add_values(b, b.extract_value(pair, 0), b.extract_value(pair, 1),
                                      part)
        return b.insert_value(b.insert_value(pair, total, 0), comp, 1)
    pair = _loop(b, blocks, init, add)
    total = comp_total_value(b, b.extract_value(pair, 0), b.extract_value(pair, 1))
    b.ret(b.fptrunc(total, lltype) if isinstance(lltype, ir.FloatType) else total)
    return fn


def _build_extreme(intrinsic: str) -> Callable[[ir.Module, ir.Type, str], ir.Function]:
    def build(module: ir.Module, lltype: ir.Type, name: str) -> ir.Function:
        """block_max / block_min: LLVM's NaN-propagating maximum / minimum from buf[0]."""
        fn, b = _function(module, name, lltype, [lltype.as_pointer(), I64])
        full_width(b)
        ptr, n = fn.args
        pick = declare(b, intrinsic, lltype, 2)

        def fold(i: ir.Value, acc: ir.Value) -> ir.Value:
            value = b.load(b.gep(ptr, [i], source_etype=lltype), typ=lltype)
            return b.call(pick, [acc, value])
        first = b.load(ptr, typ=lltype)
        b.ret(_loop(b, n, first, fold))
        return fn
    return build


_BUILDERS = {"block_sum": _build_sum, "block_max": _build_extreme("llvm.maximum"),
             "block_min": _build_extreme("llvm.minimum")}


def _block(name: str) -> Callable:
    def emit(e: Any, args: list) -> Any:
        row, fn = _row(e, args, name)
        return Scalar(e.builder.call(fn, [row.ptr, row.shape[0]]), row.dtype)
    return emit


_rule("block_sum")(_block("block_sum"))
_rule("block_max")(_block("block_max"))
_rule("block_min")(_block("block_min"))


# ---------------------------------------------------------------------------------------
# Matrix products: gemm_strided through NumPy's OpenBLAS (cpu_kernels.
# _gemm_strided_numpy_blas, _one_product, _gemv), one function of the module per dtype.

_COL_MAJOR, _NO_TRANS = 102, 111  # cblas enums; transposed is _NO_TRANS + 1
I8P, I32 = ir.IntType(8).as_pointer(), ir.IntType(32)


BLAS_LOCAL_THREADS = "openblas_set_num_threads_local"  # this thread's BLAS threads


def blas_symbols(kind: str) -> tuple[str, str]:
    """The cblas gemm and gemv of NumPy's bundled OpenBLAS (ILP64) for 's' or 'd'."""
    return f"scipy_cblas_{kind}gemm64_", f"scipy_cblas_{kind}gemv64_"


@_rule("gemm_strided")
def _gemm_strided(e: Any, args: list) -> None:
    x, y, c, plan = _gemm_operands(e, args)
    suffix = "f32" if c.dtype.itemsize == 4 else "f64"
    fn = e.shared_helper(f"tf_gemm_strided_{suffix}",
                         lambda module, name: _build_gemm(module, c.ptr.type.pointee, name))
    b = e.builder
    e.builder.call(fn, [b.bitcast(x.ptr, I8P), b.bitcast(y.ptr, I8P), b.bitcast(c.ptr, I8P),
                        plan.ptr])


# Where a batch cannot be a step of its own (inside a loop of the program), its calls run
# in order, BLAS's threads sharing each, as Numba's gemm_batched does.
_rule("gemm_batched")(_gemm_strided)


def count_loop(b: ir.IRBuilder, n: ir.Value, body: Callable[[ir.Value], None]) -> None:
    """for i in range(n): body(i), with the counter in a stack slot of the function's first
    block (LLVM promotes it); np.full's fill and gemm_strided's loops."""
    with b.goto_entry_block():  # stack slots belong in the first block, not in loops
        slot = b.alloca(I64)
    b.store(ir.Constant(I64, 0), slot)
    head = b.append_basic_block("count")
    inner = b.append_basic_block("count_body")
    done = b.append_basic_block("count_done")
    b.branch(head)
    b.position_at_end(head)
    i = b.load(slot, typ=I64)
    b.cbranch(b.icmp_signed("<", i, n), inner, done)
    b.position_at_end(inner)
    body(i)
    b.store(b.add(b.load(slot, typ=I64), ir.Constant(I64, 1)), slot)
    b.branch(head)
    b.position_at_end(done)


def _blas_functions(module: ir.Module, lltype: ir.Type) -> tuple[ir.Function, ir.Function]:
    """The module's declarations of the cblas gemm and gemv for lltype."""
    gemm_name, gemv_name = blas_symbols("s" if isinstance(lltype, ir.FloatType) else "d")
    gemm = module.globals.get(gemm_name) or ir.Function(module, ir.FunctionType(
        ir.VoidType(), [I32, I32, I32, I64, I64, I64, lltype, I8P, I64, I8P, I64, lltype,
                        I8P, I64]), gemm_name)
    gemv = module.globals.get(gemv_name) or ir.Function(module, ir.FunctionType(
        ir.VoidType(), [I32, I32, I64, I64, lltype, I8P, I64, I8P, I64, lltype, I8P, I64]),
        gemv_name)
    return gemm, gemv


def _gemm_product(b: ir.IRBuilder, lltype: ir.Type, fn: ir.Function) -> Callable:
    """product(ox, oy, oc): one gemm of gemm_strided's plan (fn's args: x, y, c, plan,
    ...) at these element offsets, or a gemv where M or N is 1 (cpu_kernels._one_product
    says why)."""
    gemm, gemv = _blas_functions(b.module, lltype)
    x, y, c, plan = fn.args[:4]
    size = ir.Constant(I64, 4 if isinstance(lltype, ir.FloatType) else 8)

    def arg(k: int) -> ir.Value:
        return b.load(b.gep(plan, [ir.Constant(I64, k)], source_etype=I64), typ=I64)

    def at(base: ir.Value, offset: ir.Value) -> ir.Value:
        return b.gep(base, [b.mul(offset, size)], source_etype=ir.IntType(8))

    one, zero = ir.Constant(lltype, 1.0), ir.Constant(lltype, 0.0)

    def trans(flag: ir.Value) -> ir.Value:
        return b.trunc(b.add(flag, ir.Constant(I64, _NO_TRANS)), I32)

    def product(ox: ir.Value, oy: ir.Value, oc: ir.Value) -> None:
        tx, ty, m, n, k = (arg(j) for j in range(1, 6))
        ldx, ldy, ldc = arg(6), arg(7), arg(8)
        order = ir.Constant(I32, _COL_MAJOR)
        is_zero = ir.Constant(I64, 0)
        unit = ir.Constant(I64, 1)
        n_is_1 = b.icmp_signed("==", n, unit)
        m_is_1 = b.icmp_signed("==", m, unit)
        with b.if_else(n_is_1) as (column, other):
            with column:  # c = op(x) @ op(y), op(y) a column of k
                x_plain = b.icmp_signed("==", tx, is_zero)
                rows, cols = b.select(x_plain, m, k), b.select(x_plain, k, m)
                inc = b.select(b.icmp_signed("==", ty, is_zero), unit, ldy)
                b.call(gemv, [order, trans(tx), rows, cols, one, at(x, ox), ldx, at(y, oy),
                              inc, zero, at(c, oc), unit])
            with other:
                with b.if_else(m_is_1) as (row, general):
                    with row:  # c^T = op(y)^T @ op(x)^T, op(x) a row of k
                        y_plain = b.icmp_signed("==", ty, is_zero)
                        rows, cols = b.select(y_plain, k, n), b.select(y_plain, n, k)
                        inc = b.select(b.icmp_signed("==", tx, is_zero), ldx, unit)
                        b.call(gemv, [order, trans(b.sub(unit, ty)), rows, cols, one,
                                      at(y, oy), ldy, at(x, ox), inc, zero, at(c, oc), ldc])
                    with general:
                        b.call(gemm, [order, trans(tx), trans(ty), m, n, k, one, at(x, ox),
                                      ldx, at(y, oy), ldy, zero, at(c, oc), ldc])
    return product


def _plan_arg(b: ir.IRBuilder, plan: ir.Value, k: int) -> ir.Value:
    return b.load(b.gep(plan, [ir.Constant(I64, k)], source_etype=I64), typ=I64)


def _loop_arg(b: ir.IRBuilder, plan: ir.Value, depth: int, field: int) -> ir.Value:
    """Loop `depth`'s count (field 0) or its step in x, y, c (fields 1-3) in the plan."""
    return _plan_arg(b, plan, 9 + 4 * depth + field)


def _loop_counts(b: ir.IRBuilder, plan: ir.Value) -> list[ir.Value]:
    return [_loop_arg(b, plan, depth, 0) for depth in range(3)]


def _build_gemm(module: ir.Module, lltype: ir.Type, name: str) -> ir.Function:
    """c = op(x) @ op(y) per point of three loops, in BLAS's column-major terms."""
    fn, b = _function(module, name, ir.VoidType(), [I8P, I8P, I8P, I64.as_pointer()])
    product, plan = _gemm_product(b, lltype, fn), fn.args[3]

    def level(depth: int, offsets: tuple) -> None:
        if depth == 3:
            product(*offsets)
            return

        def body(i: ir.Value) -> None:
            moved = tuple(b.add(o, b.mul(i, _loop_arg(b, plan, depth, 1 + j)))
                          for j, o in enumerate(offsets))
            level(depth + 1, moved)
        count_loop(b, _loop_arg(b, plan, depth, 0), body)

    start = ir.Constant(I64, 0)
    level(0, (start, start, start))
    b.ret_void()
    return fn


def _build_gemm_points(module: ir.Module, lltype: ir.Type, name: str) -> ir.Function:
    """Points [lo, hi) of gemm_strided's three loops, flattened (the last fastest). A block
    that is not every point runs its products on one BLAS thread (OpenBLAS's
    openblas_set_num_threads_local, then as it was): the pool's threads share the batch
    instead of BLAS's threads sharing each small product."""
    fn, b = _function(module, name, ir.VoidType(), [I8P, I8P, I8P, I64.as_pointer(), I64,
                                                     I64])
    product, plan = _gemm_product(b, lltype, fn), fn.args[3]
    lo, hi = fn.args[4:6]
    counts = _loop_counts(b, plan)
    local = module.globals.get(BLAS_LOCAL_THREADS) or ir.Function(
        module, ir.FunctionType(I32, [I32]), BLAS_LOCAL_THREADS)
    split = b.icmp_signed("<", b.sub(hi, lo), _all_points(b, counts))
    previous = b.alloca(I32)
    with b.if_then(split):
        b.store(b.call(local, [ir.Constant(I32, 1)]), previous)

    def point(k: ir.Value) -> None:
        p = b.add(lo, k)
        index = [b.sdiv(p, b.mul(counts[1], counts[2])),
                 b.srem(b.sdiv(p, counts[2]), counts[1]), b.srem(p, counts[2])]
        offsets = []
        for j in range(3):
            offset = ir.Constant(I64, 0)
            for depth in range(3):
                offset = b.add(offset, b.mul(index[depth], _loop_arg(b, plan, depth, 1 + j)))
            offsets.append(offset)
        product(*offsets)
    count_loop(b, b.sub(hi, lo), point)
    with b.if_then(split):
        b.call(local, [b.load(previous, typ=I32)])
    b.ret_void()
    return fn


def gemm_point_count(b: ir.IRBuilder, plan: ir.Value) -> ir.Value:
    """How many gemm calls a plan makes (its three loops' counts multiplied)."""
    return _all_points(b, _loop_counts(b, plan))


def _all_points(b: ir.IRBuilder, counts: list[ir.Value]) -> ir.Value:
    return b.mul(b.mul(counts[0], counts[1]), counts[2])


# A batch of products is shared by the pool's threads (each product on one BLAS thread)
# when it splits evenly enough: an even count, or at least this many (docs/decisions.md).
GEMM_SPLIT_MIN = 8


@functools.cache
def batched_gemm_available() -> bool:
    """Whether NumPy's OpenBLAS sets a thread's own BLAS thread count."""
    import ctypes

    path = numpy_openblas()
    return path is not None and hasattr(ctypes.CDLL(path), BLAS_LOCAL_THREADS)


def _gemm_operands(e: Any, args: list) -> tuple[Array, ...]:
    x, y, c, plan = args
    if not all(isinstance(a, Array) for a in args) or c.dtype.kind != "f" \
            or plan.dtype.name != "int64" or x.dtype != c.dtype or y.dtype != c.dtype:
        raise Unsupported("gemm_strided of these arguments")
    if numpy_openblas() is None:
        raise Unsupported("gemm without NumPy's bundled OpenBLAS")
    e.uses_blas = True
    return x, y, c, plan


def _gemm_splits(b: ir.IRBuilder, total: ir.Value) -> ir.Value:
    """Whether a batch of `total` products is shared by the pool's threads."""
    even = b.icmp_signed("==", b.srem(total, ir.Constant(I64, 2)), ir.Constant(I64, 0))
    many = b.icmp_signed(">=", total, ir.Constant(I64, GEMM_SPLIT_MIN))
    return b.and_(b.icmp_signed(">=", total, ir.Constant(I64, 2)), b.or_(even, many))


def emit_gemm_extent(e: Any, args: list) -> None:
    """A batched gemm step's extent: its product count, or 1 (one block, BLAS's threads
    within each product) when the batch does not split evenly enough."""
    *_, plan = _gemm_operands(e, args)
    b = e.builder
    total = gemm_point_count(b, plan.ptr)
    b.ret(b.select(_gemm_splits(b, total), total, ir.Constant(I64, 1)))


def emit_gemm_block(e: Any, args: list, lo: ir.Value, hi: ir.Value) -> None:
    """A batched gemm step's block [lo, hi) of products (all of them for an extent of 1)."""
    x, y, c, plan = _gemm_operands(e, args)
    suffix = "f32" if c.dtype.itemsize == 4 else "f64"
    fn = e.shared_helper(f"tf_gemm_points_{suffix}", lambda module, name: _build_gemm_points(
        module, c.ptr.type.pointee, name))
    b = e.builder
    total = gemm_point_count(b, plan.ptr)
    splits = _gemm_splits(b, total)
    lo = b.select(splits, lo, ir.Constant(I64, 0))
    hi = b.select(splits, hi, total)
    b.call(fn, [b.bitcast(x.ptr, I8P), b.bitcast(y.ptr, I8P), b.bitcast(c.ptr, I8P),
                plan.ptr, lo, hi])
