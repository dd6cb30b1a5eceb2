"""Small Numba helpers that generated CPU kernels call (scalar functions and block reductions).

Generated modules import the helpers they use by name from here. They are plain `@njit`
functions (LLVM inlines them into the kernel), cached on disk by Numba so that a new
process does not compile them again. Their source is part of the disk-cache key
(see runtime/cache.py), so editing this file invalidates cached kernels.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype
from rocket_fft import c2c as _fft_c2c  # pocketfft (DUCC0) for Numba: the fft kernels
from rocket_fft import c2r as _fft_c2r
from rocket_fft import r2c as _fft_r2c
from transfuse.compiler.mathlib import _full_width as full_width  # the width attribute

from . import complex_bodies, linalg_bodies, scalar_bodies
from .errors import SignatureMismatch  # noqa: F401  (generated entry points raise it)
from .expm import linalg_expm  # noqa: F401  (the expm primitive's kernel, in its own module)
from .helper_options import HELPER
from .sort_kernels import sort_rows_by, take_rows  # noqa: F401  (sort)

scalar_bodies.register_for_numba()  # its bodies call one another in compiled code

# ---------------------------------------------------------------------------------------
# Random numbers, NaN-propagating max/min (runtime/scalar_bodies.py, the CUDA kernels' too)

mix64 = njit(**HELPER)(scalar_bodies.mix64)
rng_word = njit(**HELPER)(scalar_bodies.rng_word)
unit64 = njit(**HELPER)(scalar_bodies.unit64)
unit32 = njit(**HELPER)(scalar_bodies.unit32)
split_key = njit(**HELPER)(scalar_bodies.split_key)
fmax = njit(**HELPER)(scalar_bodies.fmax)
fmin = njit(**HELPER)(scalar_bodies.fmin)
clamp_start = njit(**HELPER)(scalar_bodies.clamp_start)


@njit(**HELPER)
def rng_normal(base, i):
    """The i-th standard normal draw, as float64 (NumPy's math, as the interpreter's)."""
    u1, u2 = scalar_bodies.normal_units(base, i)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(scalar_bodies.TWO_PI * u2)


complex_expm1 = njit(**HELPER)(complex_bodies.complex_expm1)
complex_log1p = njit(**HELPER)(complex_bodies.complex_log1p)
complex_divide = njit(**HELPER)(complex_bodies.complex_divide)


@njit(**HELPER)
def ipow(base, exp):
    """Integer power by squaring, as np.power on integers (negative powers raise)."""
    if exp < 0:
        raise ValueError("Integers to negative integer powers are not allowed.")
    return scalar_bodies.ipow(base, exp)


@njit(**HELPER)
def take_index(i, n):
    """An index as np.take reads it: negative counts from the end; out of range raises."""
    if i < 0:
        i += n
    if i < 0 or i >= n:
        raise IndexError("index out of bounds in a gather or scatter (np.take semantics)")
    return i


@njit(**HELPER)
def layout_mismatch(shape, strides, itemsize, want):
    """1 unless an array of this shape and strides has shape `want` in C order, else 0
    (the generated entry point's guard; it takes the array's shape and strides rather
    than the array so that Numba compiles it once per rank, not per dtype and rank).
    Along an axis of extent 1, and in an empty array, NumPy's strides say nothing about
    the layout, so they are not checked there."""
    if shape != want:
        return 1
    size = 1
    for extent in shape:
        size *= extent
    if size == 0:
        return 0
    step = itemsize
    for d in range(len(shape) - 1, -1, -1):
        if shape[d] > 1 and strides[d] != step:
            return 1
        step *= shape[d]
    return 0


# ---------------------------------------------------------------------------------------
# Large buffers: transparent huge pages, as NumPy asks for its own large arrays (without
# them, first-touch page faults cost several times the work of a memory-bound kernel)

HUGE_PAGE_MIN_BYTES = 1 << 22
_MADV_HUGEPAGE = 14


if sys.platform.startswith("linux"):
    @intrinsic
    def _madvise(typingctx, address, length, advice):
        """madvise(2), called by symbol name (so cached kernels stay valid across runs)."""
        from llvmlite import ir

        def codegen(context, builder, sig, args):
            fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(8).as_pointer(),
                                                    ir.IntType(64), ir.IntType(32)])
            fn = builder.module.globals.get("madvise") or ir.Function(
                builder.module, fnty, "madvise")
            addr = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
            size = builder.zext(args[1], ir.IntType(64)) if args[1].type.width < 64 \
                else args[1]
            flag = builder.trunc(args[2], ir.IntType(32))
            return builder.call(fn, [addr, size, flag])
        return types.int32(address, length, advice), codegen

    @njit(**HELPER)
    def advise_huge_pages(a):
        """Ask for transparent huge pages on a's page-aligned interior (as NumPy does), if
        a holds HUGE_PAGE_MIN_BYTES or more (the source may ask for a batch of one)."""
        start = a.ctypes.data
        offset = (4096 - start % 4096) % 4096
        if a.nbytes <= offset or a.nbytes < HUGE_PAGE_MIN_BYTES:
            return 0
        return _madvise(start + offset, np.uint64(a.nbytes - offset), np.int64(_MADV_HUGEPAGE))
else:  # pragma: no cover - other platforms have no MADV_HUGEPAGE
    @njit(**HELPER)
    def advise_huge_pages(a):
        """No transparent huge pages to ask for on this platform."""
        return 0


# ---------------------------------------------------------------------------------------
# Matrix products: BLAS gemm on strided matrices, called in a loop nest over batch dims.
# `gemm_strided(x, y, c, args)`: c = op(x) @ op(y) in BLAS's column-major terms, once per
# point of three loops. x, y, c: flat views of whole buffers. args (int64): kind (ord 's'
# or 'd'), transpose x, transpose y (0/1), M, N, K, ldx, ldy, ldc, then per loop level:
# count, x step, y step, c step (in elements). An array rather than a tuple, so that Numba
# compiles the helper once per dtype rather than once per tuple of literal values.
#
# It calls NumPy's own OpenBLAS when NumPy bundles one (the library NumPy's `@` uses, its
# threads shared with NumPy's; as of NumPy 2.4 its sgemm is also about 25% faster here than
# SciPy's older copy), else SciPy's BLAS through Numba's C wrapper.


def _numpy_openblas() -> bool:
    """Make the cblas gemm of NumPy's bundled OpenBLAS (ILP64) callable from Numba code."""
    import glob
    import os

    import llvmlite.binding as llvm
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*.so"))):
        try:
            llvm.load_library_permanently(path)
        except RuntimeError:
            continue
        if all(llvm.address_of_symbol(f"scipy_cblas_{k}{f}64_") for k in "sd"
               for f in ("gemm", "gemv")):
            return True
    return False


def _cblas_gemm(scalar):
    return types.ExternalFunction(f"scipy_cblas_{'s' if scalar is types.float32 else 'd'}gemm64_",
                                  types.void(types.int32, types.int32, types.int32, types.int64,
                                             types.int64, types.int64, scalar, types.voidptr,
                                             types.int64, types.voidptr, types.int64, scalar,
                                             types.voidptr, types.int64))


def _cblas_gemv(scalar):
    return types.ExternalFunction(f"scipy_cblas_{'s' if scalar is types.float32 else 'd'}gemv64_",
                                  types.void(types.int32, types.int32, types.int64, types.int64,
                                             scalar, types.voidptr, types.int64, types.voidptr,
                                             types.int64, scalar, types.voidptr, types.int64))


_SGEMM, _DGEMM = _cblas_gemm(types.float32), _cblas_gemm(types.float64)
_SGEMV, _DGEMV = _cblas_gemv(types.float32), _cblas_gemv(types.float64)
_COL_MAJOR, _NO_TRANS = 102, 111  # cblas enums; transposed is _NO_TRANS + 1


@njit(**HELPER)
def _gemv(c, trans, rows, cols, a, lda, v, inc_v, out, inc_out):
    """out = op(a) @ v by cblas ?gemv (a: rows x cols, column-major)."""
    if c.itemsize == 4:
        _SGEMV(_COL_MAJOR, _NO_TRANS + trans, rows, cols, 1.0, a, lda, v, inc_v, 0.0, out,
               inc_out)
    else:
        _DGEMV(_COL_MAJOR, _NO_TRANS + trans, rows, cols, 1.0, a, lda, v, inc_v, 0.0, out,
               inc_out)


@njit(**HELPER)
def _one_product(x, y, c, args, ox, oy, oc):
    """One gemm of gemm_strided, or a gemv where M or N is 1 at run time: a batch of one
    shares the kernel of every batch (compiler/gemm_plan.py), and gemm with one row packs
    the whole other matrix (2-3x slower than gemv or a loop nest at 512 x 512)."""
    tx, ty, m, n, k = args[1], args[2], args[3], args[4], args[5]
    if n == 1:  # c = op(x) @ op(y), op(y) a column of k
        rows, cols = (m, k) if tx == 0 else (k, m)
        _gemv(c, tx, rows, cols, x[ox:].ctypes, args[6], y[oy:].ctypes,
              1 if ty == 0 else args[7], c[oc:].ctypes, 1)
    elif m == 1:  # c^T = op(y)^T @ op(x)^T, op(x) a row of k
        rows, cols = (k, n) if ty == 0 else (n, k)
        _gemv(c, 1 - ty, rows, cols, y[oy:].ctypes, args[7], x[ox:].ctypes,
              args[6] if tx == 0 else 1, c[oc:].ctypes, args[8])
    elif c.itemsize == 4:
        _SGEMM(_COL_MAJOR, _NO_TRANS + tx, _NO_TRANS + ty, m, n, k, 1.0, x[ox:].ctypes,
               args[6], y[oy:].ctypes, args[7], 0.0, c[oc:].ctypes, args[8])
    else:
        _DGEMM(_COL_MAJOR, _NO_TRANS + tx, _NO_TRANS + ty, m, n, k, 1.0, x[ox:].ctypes,
               args[6], y[oy:].ctypes, args[7], 0.0, c[oc:].ctypes, args[8])


@njit(**HELPER)
def _gemm_strided_numpy_blas(x, y, c, args):
    """gemm_strided through NumPy's OpenBLAS (cblas interface)."""
    for i0 in range(args[9]):
        for i1 in range(args[13]):
            for i2 in range(args[17]):
                _one_product(x, y, c, args, i0 * args[10] + i1 * args[14] + i2 * args[18],
                             i0 * args[11] + i1 * args[15] + i2 * args[19],
                             i0 * args[12] + i1 * args[16] + i2 * args[20])


# numba's own C wrapper of scipy's BLAS gemm (Fortran interface, column-major)
_XXGEMM = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))
_N, _T_MINUS_N = ord("n"), ord("t") - ord("n")


@njit(**HELPER)
def _gemm_strided_scipy_blas(x, y, c, args):
    """gemm_strided through SciPy's BLAS (numba_xxgemm)."""
    one = np.ones(1, c.dtype)
    zero = np.zeros(1, c.dtype)
    tx, ty = _N + _T_MINUS_N * args[1], _N + _T_MINUS_N * args[2]
    for i0 in range(args[9]):
        for i1 in range(args[13]):
            for i2 in range(args[17]):
                ox = i0 * args[10] + i1 * args[14] + i2 * args[18]
                oy = i0 * args[11] + i1 * args[15] + i2 * args[19]
                oc = i0 * args[12] + i1 * args[16] + i2 * args[20]
                status = _XXGEMM(args[0], tx, ty, args[3], args[4], args[5], one.ctypes,
                                 x[ox:].ctypes, args[6], y[oy:].ctypes, args[7], zero.ctypes,
                                 c[oc:].ctypes, args[8])
                if status != 0:
                    raise RuntimeError("BLAS gemm is unavailable (numba could not load "
                                       "scipy.linalg.cython_blas)")


gemm_strided = _gemm_strided_numpy_blas if _numpy_openblas() else _gemm_strided_scipy_blas
# A batch of gemm calls large enough to share among threads (compiler/lower_cpu_kernels.py,
# _batched). Here, as gemm_strided: BLAS's threads share each call. The direct back end
# runs it as a parallel step whose blocks call BLAS on one thread each
# (compiler/direct_helpers.py, emit_gemm_block).
gemm_batched = gemm_strided


# ---------------------------------------------------------------------------------------
# Accurate sums (docs/reliability.md, "Accuracy of reductions"). A plain running sum of n
# terms errs by up to (n - 1) roundoffs times the sum of magnitudes: 1% at 10**7 float32
# terms. NumPy sums pairwise, for O(log n). Here a float sum adds partial sums of at most
# 16 terms each (the depth of NumPy's own pairwise blocks) to a float64 total, which for
# float64 data is *compensated*: Knuth's TwoSum keeps each addition's rounding error in a
# second accumulator. (Compensation alone is not enough in float32: its second-order
# error, (n u)^2 times the sum of magnitudes, is 0.36 at n = 10**7.) The error is then one
# final rounding plus the partial sums', at any n. No recursion, no stack, and fastmath
# stays off, except inside one block of block_sum (see _block_partial).

SUM_BLOCK = 128  # elements per compensated step of block_sum (NumPy's pairwise block)


def as_type_of(x, like):
    """x converted to the scalar type of `like` (in compiled code: np.float32(x), ...)."""
    return type(like)(x)


@overload(as_type_of)
def _as_type_of(x, like):
    convert = as_dtype(like).type
    return lambda x, like: convert(x)


@njit(cache=True, inline="always")
def two_sum(a, b):
    """(a + b rounded, its exact rounding error): Knuth's TwoSum, branch-free."""
    total = a + b
    b_part = total - a
    return total, (a - (total - b_part)) + (b - b_part)


def comp_add(total, comp, x):
    """Add x to the compensated float64 sum (total, comp); returns the new pair."""
    if np.asarray(x).dtype.itemsize < 8:
        return total + float(x), comp
    total, err = two_sum.py_func(total, float(x))
    return total, comp + err


@overload(comp_add, inline="always")
def _comp_add(total, comp, x):
    if isinstance(x, types.Float) and x.bitwidth < 64:
        # float32 terms: a float64 total alone errs by 2**-53 of the total per addition,
        # far below float32's epsilon up to 10**9 terms; no TwoSum needed (3x cheaper)
        return lambda total, comp, x: (total + np.float64(x), comp)

    def add(total, comp, x):
        total, err = two_sum(total, np.float64(x))
        return total, comp + err
    return add


@njit(cache=True, inline="always")
def comp_total(total, comp):
    """The value of a compensated sum (float64). Once the total is inf or NaN (an inf or
    NaN term, or overflow) the compensation is NaN, and the total alone is NumPy's answer."""
    return total + comp if total - total == 0 else total


@intrinsic
def _at_full_width(typingctx):
    """Mark the calling function to be vectorised at the target's full width: mathlib's
    "prefer-vector-width" (16 float32 lanes on Intel's AVX-512 CPUs, where LLVM's tuning
    alone gives 8; a no-op on AVX2)."""
    def codegen(context, builder, sig, args):
        full_width(builder)
        return context.get_dummy_value()
    return types.none(), codegen


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _block_partial(buf):
    """The sum of buf (1 to SUM_BLOCK elements) in buf's dtype, added in any order.

    The one reassociating loop of the CPU backend, alone in its function so that the flag
    reaches nothing else: it lets LLVM's loop vectoriser keep a partial sum per vector lane
    at the target's full width, and unroll (on AVX2, 4 vectors of 8 float32: 32 lanes of
    4 terms each), which is NumPy's 8 lanes of 16 or better, and about 4x faster than
    scalar lanes. The loop runs from 0 over a view, so its index needs no wraparound
    select (one would stop the vectoriser)."""
    _at_full_width()
    total = as_type_of(0, buf[0])  # not buf[0] - buf[0]: nan at inf
    for i in range(buf.shape[0]):
        total += buf[i]
    return total


@njit(**HELPER)
def block_sum(buf):
    """The sum of buf (not empty), as accurate as NumPy's pairwise sum at any length.

    Each block of SUM_BLOCK elements is summed by _block_partial (vector lanes), and the
    block partials go to a float64 total (compensated for float64 data); the result has
    buf's dtype. Up to SUM_BLOCK elements this is the lane sum alone."""
    n = buf.shape[0]
    if n <= SUM_BLOCK:
        return _block_partial(buf)
    total = comp = 0.0
    for start in range(0, n, SUM_BLOCK):
        total, comp = comp_add(total, comp, _block_partial(buf[start:start + SUM_BLOCK]))
    return as_type_of(comp_total(total, comp), buf[0])


@njit(**HELPER)
def block_dot(x, y):
    """The sum of x * y (1-D, not empty, any strides) with block_sum's accuracy; the
    products are rounded to the inputs' dtype first, as in NumPy's loops."""
    n = x.shape[0]
    zero = as_type_of(0, x[0] * y[0])
    total = comp = 0.0
    for start in range(0, n, SUM_BLOCK):
        stop = min(start + SUM_BLOCK, n)
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
        i = start
        while i + 8 <= stop:
            a0 += x[i] * y[i]
            a1 += x[i + 1] * y[i + 1]
            a2 += x[i + 2] * y[i + 2]
            a3 += x[i + 3] * y[i + 3]
            a4 += x[i + 4] * y[i + 4]
            a5 += x[i + 5] * y[i + 5]
            a6 += x[i + 6] * y[i + 6]
            a7 += x[i + 7] * y[i + 7]
            i += 8
        part = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        while i < stop:
            part += x[i] * y[i]
            i += 1
        total, comp = comp_add(total, comp, part)
    return as_type_of(comp_total(total, comp), zero)


# ---------------------------------------------------------------------------------------
# Block maxima and minima: LLVM's maximum/minimum intrinsics (IEEE 754-2019: NaN wins,
# -0.0 < +0.0), whose reductions the loop vectoriser widens without any fast-math flag;
# select-based lanes (fmax) it does not, and SLP left eight scalar lanes scalar (4x slower).


def _llvm_pair(name: str):
    """A Numba intrinsic f(a, b) calling the float LLVM intrinsic `name` (a, b one type)."""
    def typer(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, sig, args):
            from llvmlite import ir
            suffix = "f32" if isinstance(args[0].type, ir.FloatType) else "f64"
            fnty = ir.FunctionType(args[0].type, [args[0].type] * 2)
            fn = builder.module.globals.get(f"{name}.{suffix}") or ir.Function(
                builder.module, fnty, f"{name}.{suffix}")
            return builder.call(fn, args)
        return a(a, b), codegen
    return intrinsic(typer)


nan_maximum = _llvm_pair("llvm.maximum")
nan_minimum = _llvm_pair("llvm.minimum")


@njit(**HELPER)
def block_max(buf):
    """The NaN-propagating maximum of buf (not empty), vectorised (+0.0 above -0.0)."""
    _at_full_width()
    top = buf[0]
    for i in range(buf.shape[0]):
        top = nan_maximum(top, buf[i])
    return top


@njit(**HELPER)
def block_min(buf):
    """The NaN-propagating minimum of buf (not empty), vectorised (-0.0 below +0.0)."""
    _at_full_width()
    low = buf[0]
    for i in range(buf.shape[0]):
        low = nan_minimum(low, buf[i])
    return low


# ---------------------------------------------------------------------------------------
# Linear algebra on stacks of matrices (batch, n, n): Numba's np.linalg (LAPACK) per matrix.
# Each writes its result into the caller's buffers; an empty stack or order 0 writes the
# values NumPy gives (an empty solve returns the right-hand side).


SMALL_MATRIX_MAX = 16  # up to this order a loop beats a LAPACK call per matrix
_eliminate = njit(**HELPER)(linalg_bodies.eliminate)
_cholesky_lower = njit(**HELPER)(linalg_bodies.cholesky_lower)


@njit(**HELPER)
def linalg_cholesky(a, out):
    """out[k] = the lower Cholesky factor of a[k]: small matrices by the loop CUDA shares
    (runtime/linalg_bodies.py), large ones by LAPACK."""
    if a.shape[1] == 0:
        return
    for k in range(a.shape[0]):
        if a.shape[1] > SMALL_MATRIX_MAX and _LAPACKE:
            _cholesky_lapack(a[k], out[k])
        elif a.shape[1] > SMALL_MATRIX_MAX:
            out[k] = np.linalg.cholesky(a[k])
        elif not _cholesky_lower(a[k], out[k]):
            raise np.linalg.LinAlgError("Matrix is not positive definite")


@njit(**HELPER)
def linalg_solve(a, b, out):
    """out[k] = a[k]^-1 b[k]: small matrices by an in-place elimination (the loop CUDA
    shares), large ones by LAPACK."""
    if a.shape[1] == 0:
        out[:] = b
        return
    if a.shape[1] > SMALL_MATRIX_MAX:
        for k in range(a.shape[0]):
            out[k] = np.linalg.solve(a[k], b[k])
        return
    lu = np.empty(a.shape[1:], a.dtype)
    for k in range(a.shape[0]):
        lu[:] = a[k]
        out[k] = b[k]
        if not _eliminate(lu, out[k]):
            raise np.linalg.LinAlgError("Singular matrix")


def _cblas_trsm(scalar):
    """cblas ?trsm of NumPy's bundled OpenBLAS (ILP64): enums as int32, sizes as int64."""
    kind = "s" if scalar is types.float32 else "d"
    return types.ExternalFunction(f"scipy_cblas_{kind}trsm64_", types.void(
        types.int32, types.int32, types.int32, types.int32, types.int32, types.int64,
        types.int64, scalar, types.voidptr, types.int64, types.voidptr, types.int64))


_STRSM, _DTRSM = _cblas_trsm(types.float32), _cblas_trsm(types.float64)
_ROW_MAJOR, _LEFT, _UPPER, _LOWER, _NON_UNIT = 101, 141, 121, 122, 131


@njit(**HELPER)
def _check_diagonal(a):
    """A triangular system with an exactly zero diagonal entry is singular (as NumPy)."""
    for k in range(a.shape[0]):
        for i in range(a.shape[1]):
            if a[k, i, i] == 0:
                raise np.linalg.LinAlgError("Singular matrix")


@njit(**HELPER)
def _triangular_solve_numpy_blas(a, b, out, lower, transpose_a):
    """op(T) X = B for each matrix by BLAS trsm (row-major, in place in out)."""
    n, k = b.shape[1], b.shape[2]
    out[:] = b
    if n == 0 or k == 0:
        return
    _check_diagonal(a)
    uplo = _LOWER if lower else _UPPER
    trans = _NO_TRANS + (1 if transpose_a else 0)
    for s in range(a.shape[0]):
        if out.itemsize == 4:
            _STRSM(_ROW_MAJOR, _LEFT, uplo, trans, _NON_UNIT, n, k, 1.0, a[s].ctypes, n,
                   out[s].ctypes, k)
        else:
            _DTRSM(_ROW_MAJOR, _LEFT, uplo, trans, _NON_UNIT, n, k, 1.0, a[s].ctypes, n,
                   out[s].ctypes, k)


@njit(**HELPER)
def _triangular_solve_lapack(a, b, out, lower, transpose_a):
    """op(T) X = B for each matrix by a general LAPACK solve of the triangle."""
    for k in range(a.shape[0]):
        if a.shape[1] == 0:
            out[k] = b[k]
            continue
        tri = np.tril(a[k]) if lower else np.triu(a[k])
        if transpose_a:
            tri = np.ascontiguousarray(tri.T)
        out[k] = np.linalg.solve(tri, b[k])


linalg_triangular_solve_lapack = _triangular_solve_lapack  # for complex data


def _numpy_trsm() -> bool:
    import llvmlite.binding as llvm
    return _numpy_openblas() and all(llvm.address_of_symbol(f"scipy_cblas_{k}trsm64_")
                                     for k in "sd")


# out[k] = op(T)^-1 b[k], T the lower (or upper) triangle of a[k]
linalg_triangular_solve = (_triangular_solve_numpy_blas if _numpy_trsm()
                           else _triangular_solve_lapack)


# A factorization reused (compiler/linalg_rewrites.py): solves with a matrix whose Cholesky
# factor the program already computed, and the inverse-like products of a Cholesky VJP.

_SYMMETRY_TILE = 32  # square tiles compared at a time (both stay in the L1 cache)


@njit(**HELPER)
def _is_symmetric(a):
    """a == a^T exactly (a NaN never equals itself: such a matrix is not symmetric)."""
    n = a.shape[0]
    for i0 in range(0, n, _SYMMETRY_TILE):
        for j0 in range(i0, n, _SYMMETRY_TILE):
            for i in range(i0, min(i0 + _SYMMETRY_TILE, n)):
                for j in range(max(j0, i + 1), min(j0 + _SYMMETRY_TILE, n)):
                    if a[i, j] != a[j, i]:
                        return False
    return True


@njit(**HELPER)
def _is_identity(b):
    """b is the identity matrix (so a solve with it is an inverse)."""
    if b.shape[0] != b.shape[1]:
        return False
    for i in range(b.shape[0]):
        for j in range(b.shape[1]):
            if b[i, j] != (1 if i == j else 0):
                return False
    return True


@njit(**HELPER)
def linalg_slogdet_by_cholesky(a, low, sign, logabsdet):
    """sign[k], logabsdet[k] of a[k]: 1 and 2 sum(log(diag(low[k]))) where a[k] is exactly
    symmetric (low[k] its Cholesky factor), else by LU as `slogdet`."""
    for s in range(a.shape[0]):
        if _is_symmetric(a[s]):
            total = 0.0
            for i in range(a.shape[1]):
                total += np.log(low[s, i, i])
            sign[s] = 1
            logabsdet[s] = 2 * total
        else:
            linalg_slogdet(a[s:s + 1], sign[s:s + 1], logabsdet[s:s + 1])


@njit(**HELPER)
def linalg_solve_by_cholesky(a, low, b, out, transpose_a):
    """out[k] = op(a[k])^-1 b[k]: two triangular solves with low[k] (the Cholesky factor of
    a[k]) where a[k] is exactly symmetric, else the LU solve `solve` runs."""
    half = np.empty(b.shape[1:], b.dtype)
    ones = np.ones((1, a.shape[1]), a.dtype)
    for s in range(a.shape[0]):
        if _is_symmetric(a[s]) and _is_identity(b[s]):  # the inverse: as LAPACK's potri
            linalg_cholesky_inverse(low[s:s + 1], ones, out[s:s + 1])
        elif _is_symmetric(a[s]):
            linalg_triangular_solve(low[s:s + 1], b[s:s + 1], half.reshape((1,) + half.shape),
                                    True, False)
            linalg_triangular_solve(low[s:s + 1], half.reshape((1,) + half.shape),
                                    out[s:s + 1], True, True)
        elif transpose_a:
            n = a.shape[1]
            linalg_solve(np.ascontiguousarray(a[s].T).reshape((1, n, n)), b[s:s + 1],
                         out[s:s + 1])
        else:
            linalg_solve(a[s:s + 1], b[s:s + 1], out[s:s + 1])


def _lapacke(name: str, scalar, *args):
    """LAPACKE's ?name_work of NumPy's bundled OpenBLAS (ILP64): returns the info code."""
    kind = "s" if scalar is types.float32 else "d"
    return types.ExternalFunction(f"scipy_LAPACKE_{kind}{name}_work64_", types.int64(*args))


def _numpy_lapacke() -> bool:
    import llvmlite.binding as llvm
    return _numpy_openblas() and all(
        llvm.address_of_symbol(f"scipy_LAPACKE_{k}{name}_work64_")
        for k in "sd" for name in ("trtri", "lauum", "potrf"))


# Column-major ?trtri and ?lauum of the upper triangle: the lower triangle in row-major.
_STRTRI, _DTRTRI = (_lapacke("trtri", t, types.int32, types.int8, types.int8, types.int64,
                             types.voidptr, types.int64) for t in (types.float32, types.float64))
_SLAUUM, _DLAUUM = (_lapacke("lauum", t, types.int32, types.int8, types.int64, types.voidptr,
                             types.int64) for t in (types.float32, types.float64))
_SPOTRF, _DPOTRF = (_lapacke("potrf", t, types.int32, types.int8, types.int64, types.voidptr,
                             types.int64) for t in (types.float32, types.float64))
_U, _N_DIAG = ord("U"), ord("N")


@njit(**HELPER)
def _cholesky_lapack(a, m):
    """m := the lower Cholesky factor of a, in place by potrf (no copies beyond the one into
    m: Numba's np.linalg.cholesky makes three, and takes 1.7x as long at order 512)."""
    n = a.shape[0]
    m[:] = a
    if m.itemsize == 4:
        info = _SPOTRF(_COL_MAJOR, _U, n, m.ctypes, n)
    else:
        info = _DPOTRF(_COL_MAJOR, _U, n, m.ctypes, n)
    if info != 0:
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = 0


@njit(**HELPER)
def _invert_lower_lapack(m):
    """m (row-major, lower triangle) := its inverse, by LAPACK's trtri."""
    n = m.shape[0]
    if m.itemsize == 4:
        _STRTRI(_COL_MAJOR, _U, _N_DIAG, n, m.ctypes, n)
    else:
        _DTRTRI(_COL_MAJOR, _U, _N_DIAG, n, m.ctypes, n)


@njit(**HELPER)
def _gram_lower_lapack(m):
    """The lower triangle of m (row-major, lower-triangular W) := that of W^T W (lauum)."""
    n = m.shape[0]
    if m.itemsize == 4:
        _SLAUUM(_COL_MAJOR, _U, n, m.ctypes, n)
    else:
        _DLAUUM(_COL_MAJOR, _U, n, m.ctypes, n)


@njit(**HELPER)
def _invert_lower_trsm(m):
    """m (row-major, lower triangle) := its inverse, by a triangular solve with I."""
    n = m.shape[0]
    eye = np.eye(n, dtype=m.dtype).reshape((1, n, n))
    inverse = np.empty((1, n, n), m.dtype)
    linalg_triangular_solve(np.ascontiguousarray(m).reshape((1, n, n)), eye, inverse, True,
                            False)
    m[:] = inverse[0]


_LAPACKE = _numpy_lapacke()
_invert_lower = _invert_lower_lapack if _LAPACKE else _invert_lower_trsm


@njit(**HELPER)
def _nonnegative_finite(w):
    for x in w:
        if not (x >= 0 and x < np.inf):
            return False
    return True


@njit(**HELPER)
def _weighted_gram(m, w, use_lauum):
    """m (lower-triangular M) := M^T diag(w) M, both triangles: by lauum on sqrt(w) M when
    the weights allow (as LAPACK's potri does for w = 1), else by a product."""
    n = m.shape[0]
    if use_lauum and _nonnegative_finite(w):
        for i in range(n):
            root = np.sqrt(w[i])
            for j in range(i + 1):
                m[i, j] *= root
        _gram_lower_lapack(m)
    else:
        m[:] = m.T @ (w.reshape((n, 1)) * m)
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = m[j, i]


@njit(**HELPER)
def linalg_cholesky_inverse(low, w, out):
    """out[k] = L^-T diag(w[k]) L^-1, L the lower triangle of low[k]: L^-1 by trtri, then
    the weighted product (2n^3/3 flops, where two triangular solves with a full
    right-hand side take 2n^3)."""
    n = low.shape[1]
    if n == 0:
        return
    _check_diagonal(low)  # a zero on the diagonal: singular, as triangular_solve says
    for s in range(low.shape[0]):
        m = out[s]
        for i in range(n):
            for j in range(n):
                m[i, j] = low[s, i, j] if j <= i else 0
        _invert_lower(m)
        _weighted_gram(m, w[s], _LAPACKE)


@njit(**HELPER)
def linalg_slogdet(a, sign, logabsdet):
    """sign[k], logabsdet[k] = the sign and log|det| of a[k]."""
    for k in range(a.shape[0]):
        if a.shape[1] == 0:  # the empty product: det = 1
            sign[k] = 1
            logabsdet[k] = 0
            continue
        s, logdet = np.linalg.slogdet(a[k])
        sign[k] = s
        logabsdet[k] = logdet


@njit(**HELPER)
def linalg_eigh(a, w, v):
    """w[k], v[k] = the ascending eigenvalues and eigenvectors of a[k] (lower triangle)."""
    for k in range(a.shape[0]):
        if a.shape[1] == 0:
            continue
        vals, vecs = np.linalg.eigh(a[k])
        w[k] = vals
        v[k] = vecs


@njit(**HELPER)
def linalg_svd(a, u, s, vt, full_matrices):
    """u[k], s[k], vt[k] = the SVD of a[k] (reduced or full)."""
    if a.shape[1] == 0 or a.shape[2] == 0:
        _identity_stack(u)
        _identity_stack(vt)
        return
    for k in range(a.shape[0]):
        uk, sk, vtk = np.linalg.svd(a[k], full_matrices=full_matrices)
        u[k] = uk
        s[k] = sk
        vt[k] = vtk


@njit(**HELPER)
def linalg_singular_values(a, s):
    """s[k] = the singular values of a[k], descending."""
    if a.shape[1] == 0 or a.shape[2] == 0:
        return
    for k in range(a.shape[0]):
        s[k] = np.linalg.svd(a[k], full_matrices=False)[1]


@njit(**HELPER)
def _identity_stack(x):
    """Each matrix of x (stack, m, n) set to the identity (what LAPACK gives when empty)."""
    x[:] = 0
    for k in range(x.shape[0]):
        for i in range(min(x.shape[1], x.shape[2])):
            x[k, i, i] = 1


@njit(**HELPER)
def linalg_qr(a, q, r):
    """q[k], r[k] = the QR decomposition of a[k]: reduced, or complete when q is square.

    Complete Q for a tall a[k] comes from the reduced QR of [a[k] | I]: its first columns
    are factored exactly as a[k]'s, and the identity's columns complete Q's basis.
    """
    m, n = a.shape[1], a.shape[2]
    if m == 0 or n == 0:
        _identity_stack(q)
        r[:] = 0
        return
    complete = q.shape[2] == m and m > n
    for k in range(a.shape[0]):
        if complete:
            wide = np.zeros((m, n + m), a.dtype)
            wide[:, :n] = a[k]
            for i in range(m):
                wide[i, n + i] = 1
            qk, rk = np.linalg.qr(wide)
            q[k] = qk
            r[k] = rk[:, :n]
        else:
            qk, rk = np.linalg.qr(a[k])
            q[k] = qk
            r[k] = rk


@njit(**HELPER)
def linalg_lu(a, lu, pivots, permutation):
    """lu[k], pivots[k], permutation[k] = the LU factorization of a[k] with partial
    pivoting, as LAPACK's getrf (0-based pivots, as scipy.linalg.lu_factor)."""
    m, n = a.shape[1], a.shape[2]
    for k in range(a.shape[0]):
        lu[k] = a[k]
        for i in range(m):
            permutation[k, i] = i
        for j in range(min(m, n)):
            pivot, best = j, abs(lu[k, j, j])
            for i in range(j + 1, m):
                if abs(lu[k, i, j]) > best:
                    pivot, best = i, abs(lu[k, i, j])
            pivots[k, j] = pivot
            if pivot != j:
                for c in range(n):
                    lu[k, j, c], lu[k, pivot, c] = lu[k, pivot, c], lu[k, j, c]
                permutation[k, j], permutation[k, pivot] = (permutation[k, pivot],
                                                            permutation[k, j])
            if lu[k, j, j] == 0:
                continue  # a singular column: nothing to eliminate (getrf goes on too)
            for i in range(j + 1, m):
                f = lu[k, i, j] / lu[k, j, j]
                lu[k, i, j] = f
                for c in range(j + 1, n):
                    lu[k, i, c] -= f * lu[k, j, c]


# ---------------------------------------------------------------------------------------
# The discrete Fourier transform (the `fft` primitive, ir/fft.py): rocket-fft's bindings of
# pocketfft (DUCC0, the library behind scipy.fft) on (stack, *lengths) views, writing into
# the kernel's output. The transform lengths come from the output's shape, so nothing here
# depends on a size the generated source holds as a literal (compiler/size_params.py).


@njit(**HELPER)
def fft_c2c(x, out, forward):
    """out[k] = fftn(x[k]) (forward) or ifftn(x[k]) over every axis but the first."""
    total = 1
    for d in range(1, out.ndim):
        total *= out.shape[d]
    _fft_c2c(x, out, np.arange(1, x.ndim), forward, 1.0 if forward else 1.0 / total, 1)


@njit(**HELPER)
def fft_r2c(x, out):
    """out[k] = rfftn(x[k]) over every axis but the first."""
    _fft_r2c(x, out, np.arange(1, x.ndim), True, 1.0, 1)


@njit(**HELPER)
def fft_c2r(x, out):
    """out[k] = irfftn(x[k], s=out.shape[1:]) over every axis but the first."""
    total = 1
    for d in range(1, out.ndim):
        total *= out.shape[d]
    _fft_c2r(x, out, np.arange(1, x.ndim), False, 1.0 / total, 1)
