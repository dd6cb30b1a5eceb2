"""transfuse.scipy.linalg: scipy.linalg's solvers, factorizations and expm, traced.

Built on ir/linalg.py's primitives, on stacked (..., n, n) inputs as recent SciPy accepts
them; with NumPy arrays alone each function is SciPy's own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg  # noqa: F401  (SciPy's own functions are the untraced fallback)

from transfuse.ir import lax
from transfuse.ir.errors import TransfuseLinAlgError
from transfuse.ir.source import with_location
from transfuse.numpy import linalg as tnp_linalg
from transfuse.numpy._core import any_traced, asarray, cast_operand, unsupported
from transfuse.numpy._patches import original

__all__ = ["solve_triangular", "cho_factor", "cho_solve", "cholesky", "inv", "det", "solve",
           "lu_factor", "lu_solve", "expm"]
# transfuse/scipy/__init__.py routes scipy.linalg.<name> here while tracing: keep in step.


def _traced(name: str) -> Callable[[Callable], Callable]:
    """The public function: SciPy's own unless an argument is traced."""
    def decorate(impl: Callable) -> Callable:
        @functools.wraps(impl)
        def public(*args: Any, **kwargs: Any) -> Any:
            flat = [x for a in args for x in (a if isinstance(a, tuple) else (a,))]
            if any_traced(flat, kwargs):
                return impl(*args, **kwargs)
            # SciPy's own: this module may be first imported while a trace has replaced
            # scipy.linalg.<name> by the function that calls this one.
            return original("scipy.linalg", name)(*args, **kwargs)
        return public
    return decorate


def _matrix_and_rhs(a: Any, b: Any) -> tuple[Any, Any, bool]:
    """a and b as float stacks of one dtype, b as matrices; whether b was one vector."""
    a, b = asarray(a), asarray(b)
    dt = tnp_linalg._float_dtype(a, b)
    a, b = cast_operand(a, dt), cast_operand(b, dt)
    vector = b.ndim == 1
    if vector:
        b = lax.reshape(b, (b.shape[0], 1))
    batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return (lax.broadcast_to(a, batch + a.shape[-2:]),
            lax.broadcast_to(b, batch + b.shape[-2:]), vector)


def _restore_vector(x: Any, vector: bool) -> Any:
    return lax.reshape(x, x.shape[:-1]) if vector else x


@_traced("solve_triangular")
def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False,
                     check_finite=True):
    op = _trans_op(trans)
    a, b, vector = _matrix_and_rhs(a, b)
    if unit_diagonal:
        eye = np.eye(a.shape[-1], dtype=a.dtype)
        a = lax.add(lax.mul(a, 1 - eye), eye)
    return _restore_vector(_op_solve(a, b, bool(lower), op), vector)


def _trans_op(trans: Any) -> str:
    """SciPy's trans argument as 'N' (A), 'T' (A^T) or 'C' (A^H)."""
    op = {0: "N", "N": "N", 1: "T", "T": "T", 2: "C", "C": "C"}.get(trans)
    if op is None:
        raise ValueError(f"invalid trans argument {trans!r}")
    return op


def _op_solve(tri: Any, b: Any, lower: bool, op: str) -> Any:
    """X with op(T) X = B, T the lower (upper) triangle of tri, op one of 'N', 'T', 'C'
    (the conjugate transpose solves with the conjugated triangle, transposed)."""
    if op == "C" and lax.is_complex(tri):
        tri = lax.conj(tri)
    return lax.triangular_solve(tri, b, lower=lower, transpose_a=op != "N")


@_traced("cholesky")
def cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    low = tnp_linalg.cholesky(a)
    return low if lower else lax.adjoint(low)


@_traced("cho_factor")
def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """(c, lower): the factor in c's chosen triangle, a's entries in the other (as SciPy)."""
    a = asarray(a)
    low = tnp_linalg.cholesky(a)
    if lower:
        return lax.add(low, _strict_upper(cast_operand(a, low.dtype))), True
    return lax.add(lax.adjoint(low),
                   lax.matrix_transpose(_strict_upper(lax.matrix_transpose(
                       cast_operand(a, low.dtype))))), False


def _strict_upper(x: Any) -> Any:
    return lax.sub(x, lax.lower_triangle(x))


@_traced("cho_solve")
def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    c, lower = c_and_lower
    c, b, vector = _matrix_and_rhs(c, b)
    # lower: L L^H x = b; upper: U^H U x = b
    y = _op_solve(c, b, bool(lower), "N" if lower else "C")
    x = _op_solve(c, y, bool(lower), "C" if lower else "N")
    return _restore_vector(x, vector)


@_traced("inv")
def inv(a, overwrite_a=False, check_finite=True):
    return tnp_linalg.inv(a)


@_traced("det")
def det(a, overwrite_a=False, check_finite=True):
    d = tnp_linalg.det(a)
    # SciPy returns float64 (complex128) whatever the input's precision
    return lax.convert(d, np.complex128 if lax.is_complex(d) else np.float64)


@_traced("solve")
def solve(a, b, lower=False, overwrite_a=False, overwrite_b=False, check_finite=True,
          assume_a=None, transposed=False):
    if assume_a not in (None, "gen", "general", "sym", "symmetric", "pos",
                        "positive definite"):
        raise unsupported(f"scipy.linalg.solve(..., assume_a={assume_a!r})",
                          "use assume_a='gen', 'sym' or 'pos'")
    a, b, vector = _matrix_and_rhs(a, b)
    if transposed:
        a = lax.matrix_transpose(a)
    return _restore_vector(lax.solve(a, b), vector)


@_traced("lu_factor")
def lu_factor(a, overwrite_a=False, check_finite=True):
    """(lu, piv) as SciPy: P A = L U packed in lu, row i swapped with piv[i] (0-based)."""
    a = asarray(a)
    packed, pivots, _ = lax.lu(cast_operand(a, tnp_linalg._float_dtype(a)))
    return packed, pivots


@_traced("lu_solve")
def lu_solve(lu_and_piv, b, trans=0, overwrite_b=False, check_finite=True):
    packed, pivots = lu_and_piv
    op = _trans_op(trans)
    packed, b, vector = _matrix_and_rhs(packed, b)
    n = packed.shape[-1]
    low = lax.add(lax.lower_triangle(packed, 0.0), np.eye(n, dtype=packed.dtype))
    perm = _permutation(pivots, n)
    if op == "N":  # A = P^T L U: L U x = P b
        y = lax.triangular_solve(low, lax.permute_rows(b, perm), lower=True)
        x = lax.triangular_solve(packed, y, lower=False)
    else:  # A^T = U^T L^T P: x = P^T L^-T U^-T b (conjugated for A^H)
        z = _op_solve(packed, b, False, op)
        w = _op_solve(low, z, True, op)
        x = lax.permute_rows(w, lax.inverse_permutation(perm))
    return _restore_vector(x, vector)


def _permutation(pivots: Any, n: int) -> Any:
    """The rows of A in P A, from LAPACK-style pivots: the lu node's own output when the
    pivots come from lu_factor in this trace, else NumPy's swaps (pivots must be concrete)."""
    from transfuse.ir.tracing import Tracer, current_builder

    if isinstance(pivots, Tracer):
        builder = current_builder()
        for node in reversed(builder.nodes if builder is not None else []):
            if node.prim.name == "lu" and node.outputs[1] is pivots._var:
                return Tracer(builder, node.outputs[2])
        raise unsupported("scipy.linalg.lu_solve with traced pivots not made by lu_factor "
                          "in the same function", "call lu_factor inside the function")
    pivots = np.asarray(pivots)
    perm = np.arange(n)
    for j, p in enumerate(pivots):
        perm[j], perm[p] = perm[p], perm[j]
    return perm


@_traced("expm")
def expm(A):  # noqa: N803  (SciPy's name)
    a = asarray(A)
    if a.ndim < 2 and math.prod(a.shape) == 1:  # SciPy: np.array([[np.exp(a.item())]])
        scalar = np.complex128 if a.dtype.kind == "c" else np.float64
        return lax.reshape(lax.exp(cast_operand(a, scalar)), (1, 1))
    if a.ndim < 2:
        raise TransfuseLinAlgError(with_location(
            "scipy.linalg.expm: the input array must be at least two-dimensional, got "
            f"shape {a.shape}"))
    if a.shape[-1] != a.shape[-2]:
        raise TransfuseLinAlgError(with_location(
            f"scipy.linalg.expm: last 2 dimensions of the array must be square, got shape "
            f"{a.shape}"))
    return lax.expm(cast_operand(a, _expm_dtype(a.dtype)))


def _expm_dtype(dtype: np.dtype) -> type:
    """SciPy's: single and double precision kept, float16 as float32, the rest float64."""
    if dtype in (np.float32, np.float64, np.complex64, np.complex128):
        return dtype.type
    return np.float32 if dtype == np.float16 else np.float64
