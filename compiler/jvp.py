"""Forward-mode autodiff: one JVP rule per primitive and the `jvp_graph` rewrite.

A rule takes the primal inputs and their tangents (None stands for a symbolic zero: a
tangent known to be zero, which costs nothing) plus the node's params, emits ordinary
primitives through `ir/lax.py`, and returns the primal output and its tangent (lists for
multiple-result primitives). Because rules emit ordinary primitives, the rewritten graph
can be differentiated again (higher order, any nesting).

Non-differentiable primitives (comparisons, floor/ceil/round/sign, argmax/argmin,
integer and bool operations, iota/full, random draws) give zero tangents, as in JAX.
Ties follow JAX: max/min split the tangent 0.5/0.5 between equal operands, reduce_max/min
divide it equally among the tied locations, and clip passes it only where lo < x < hi.
abs gives 0 at x == 0 (like torch). See docs/autodiff.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from transfuse.compiler import special_slopes
from transfuse.compiler.functionalize import num_user_outputs, prepare
from transfuse.compiler.simplify import dce
from transfuse.ir import lax
from transfuse.ir.core import Aval, Graph, Var, is_inexact
from transfuse.ir.errors import DTypeError, UnsupportedError
from transfuse.ir.primitives import PRIMITIVES, Primitive
from transfuse.ir.source import with_location
from transfuse.ir.tracing import bind, inline, source_of, trace_to_graph

P = PRIMITIVES
JVP_RULES: dict[Primitive, Callable] = {}

Tangent = Any  # a traced or concrete array, or None for a symbolic zero


# ---------------------------------------------------------------------------------------
# Helpers


def is_float(x: Any) -> bool:
    """Whether x carries a tangent (floating or complex)."""
    return is_inexact(lax.dtype(x))


def zeros_like_aval(aval: Aval) -> Any:
    return lax.full(aval.shape, 0, aval.dtype)


def instantiate(tangent: Tangent, primal: Any) -> Any:
    """A concrete tangent: zeros of the primal's aval for a symbolic zero."""
    return lax.zeros_like(primal) if tangent is None else tangent


def add_tangents(*terms: Tangent) -> Tangent:
    """Sum of tangent terms, skipping symbolic zeros (None when all are zero)."""
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else lax.add(total, term)
    return total


def _scale(tangent: Tangent, factor_fn: Callable[[], Any]) -> Tangent:
    """tangent * factor, where the factor is only built when the tangent is nonzero."""
    return None if tangent is None else lax.mul(tangent, factor_fn())


def _def(name: str, rule: Callable) -> None:
    JVP_RULES[P[name]] = rule


# ---------------------------------------------------------------------------------------
# Rule factories


def zero_rule(prim: Primitive) -> Callable:
    """A non-differentiable primitive: the output's tangent is zero."""
    def rule(primals, tangents, **params):
        out = bind(prim, *primals, **params)
        if prim.multiple_results:
            return out, [None] * len(out)
        return out, None
    return rule


def linear_rule(prim: Primitive) -> Callable:
    """Linear in its first operand (the rest are indices): apply the op to the tangent."""
    def rule(primals, tangents, **params):
        out = bind(prim, *primals, **params)
        t = tangents[0]
        return out, None if t is None else bind(prim, t, *primals[1:], **params)
    return rule


def bilinear_rule(prim: Primitive) -> Callable:
    """f(l, r) linear in each operand: df = f(dl, r) + f(l, dr)."""
    def rule(primals, tangents, **params):
        lhs, rhs = primals
        t_lhs, t_rhs = tangents
        out = bind(prim, lhs, rhs, **params)
        left = None if t_lhs is None else bind(prim, t_lhs, rhs, **params)
        right = None if t_rhs is None else bind(prim, lhs, t_rhs, **params)
        return out, add_tangents(left, right)
    return rule


def unary_rule(prim: Primitive, derivative: Callable[[Any, Any], Any]) -> Callable:
    """Elementwise f(x): df = t * derivative(x, out), the factor depending on primals only."""
    def rule(primals, tangents, **params):
        (x,), (t,) = primals, tangents
        out = bind(prim, x, **params)
        return out, _scale(t, lambda: derivative(x, out))
    return rule


# ---------------------------------------------------------------------------------------
# Elementwise unary

_UNARY_DERIVATIVES: dict[str, Callable[[Any, Any], Any]] = {
    "exp": lambda x, out: out,
    "expm1": lambda x, out: lax.add(out, 1),
    "sqrt": lambda x, out: lax.div(0.5, out),
    "rsqrt": lambda x, out: lax.div(lax.mul(out, -0.5), x),
    "sin": lambda x, out: lax.cos(x),
    "cos": lambda x, out: lax.neg(lax.sin(x)),
    "tan": lambda x, out: lax.add(lax.square(out), 1),
    "arcsin": lambda x, out: lax.rsqrt(lax.mul(lax.sub(1, x), lax.add(1, x))),
    "arccos": lambda x, out: lax.neg(lax.rsqrt(lax.mul(lax.sub(1, x), lax.add(1, x)))),
    "arctan": lambda x, out: lax.reciprocal(lax.add(lax.square(x), 1)),
    "sinh": lambda x, out: lax.cosh(x),
    "cosh": lambda x, out: lax.sinh(x),
    "tanh": lambda x, out: lax.sub(1, lax.square(out)),
    "arcsinh": lambda x, out: lax.rsqrt(lax.add(lax.square(x), 1)),
    "arccosh": lambda x, out: lax.rsqrt(lax.mul(lax.sub(x, 1), lax.add(x, 1))),
    "arctanh": lambda x, out: lax.reciprocal(lax.mul(lax.sub(1, x), lax.add(1, x))),
    "logistic": lambda x, out: lax.mul(out, lax.sub(1, out)),
    "erf": lambda x, out: lax.mul(lax.exp(lax.neg(lax.square(x))), float(2 / np.sqrt(np.pi))),
    "reciprocal": lambda x, out: lax.neg(lax.square(out)),
    "square": lambda x, out: lax.mul(x, 2),
    # scipy.special's (compiler/special_slopes.py)
    "erfc": special_slopes.erfc_slope,
    "erf_inv": special_slopes.erf_inv_slope,
    "ndtr": special_slopes.ndtr_slope,
    "ndtri": special_slopes.ndtri_slope,
    "log_ndtr": special_slopes.log_ndtr_slope,
    "lgamma": special_slopes.lgamma_slope,
    "digamma": special_slopes.digamma_slope,
    "bessel_i0e": special_slopes.bessel_i0e_slope,
    "bessel_i1e": special_slopes.bessel_i1e_slope,
}
for _name, _derivative in _UNARY_DERIVATIVES.items():
    _def(_name, unary_rule(P[_name], _derivative))


def _abs_rule(primals, tangents):
    """d|x| = sign(x) dx; for complex x, Re(conj(x) dx / |x|) (complex_abs_slope).

    sign(0) = 0: at x == 0 the tangent is 0, like torch and this project's VJP of abs
    (JAX passes +t there for real x).
    """
    (x,), (t,) = primals, tangents
    out = lax.abs(x)
    if t is None:
        return out, None
    if lax.is_complex(x):
        return out, lax.real(lax.mul(complex_abs_slope(x, out), t))
    return out, lax.mul(t, lax.sign(x))


def complex_abs_slope(z, modulus):
    """conj(z) / |z| (0 at z == 0), written with differentiable operations so that second
    derivatives are right (sign(z) = z / |z| has a zero derivative, as in JAX); shared with
    the VJP."""
    safe = lax.select(lax.eq(modulus, 0), lax.full((), 1, lax.dtype(modulus)), modulus)
    return lax.div(lax.conj(z), lax.convert(safe, lax.dtype(z)))


def _complex_rule(primals, tangents):
    (re, im), (t_re, t_im) = primals, tangents
    out = lax.complex(re, im)
    return out, lax.complex(instantiate(t_re, re), instantiate(t_im, im))


_def("abs", _abs_rule)
_def("complex", _complex_rule)


def _log_rule(primals, tangents):
    (x,), (t,) = primals, tangents
    return lax.log(x), None if t is None else lax.div(t, x)


def _log1p_rule(primals, tangents):
    (x,), (t,) = primals, tangents
    return lax.log1p(x), None if t is None else lax.div(t, lax.add(x, 1))


def _integer_pow_rule(primals, tangents, *, y):
    (x,), (t,) = primals, tangents
    out = lax.integer_pow(x, y)
    if t is None or y == 0:
        return out, None
    if y == 1:
        return out, t
    base = x if y == 2 else lax.integer_pow(x, y - 1)
    return out, lax.mul(t, lax.mul(base, y))


_def("log", _log_rule)
_def("log1p", _log1p_rule)
_def("integer_pow", _integer_pow_rule)
for _name in ("neg", "copy", "reshape", "transpose", "broadcast_in_dim", "squeeze",
              "expand_dims", "slice", "reduce_sum", "cumsum", "gather", "dynamic_slice",
              "real", "imag", "conj"):
    _def(_name, linear_rule(P[_name]))
for _name in ("floor", "ceil", "round", "sign", "isnan", "isinf", "isfinite", "not",
              "floor_div", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "xor",
              "argmax", "argmin", "iota", "full", "random_uniform", "random_normal",
              "random_fold_in", "random_split"):
    _def(_name, zero_rule(P[_name]))
for _name in ("mul", "dot_general", "conv"):
    _def(_name, bilinear_rule(P[_name]))

# ---------------------------------------------------------------------------------------
# Linear algebra (ir/linalg.py). Symmetric inputs (cholesky, eigh) take the symmetric part
# of their tangent, as JAX does: the derivative along symmetric perturbations.


def _cholesky_rule(primals, tangents):
    (a,), (ta,) = primals, tangents
    low = lax.cholesky(a)
    # dL = L phi(L^-1 dA L^-H), phi: the lower triangle with half the diagonal.
    left = lax.triangular_solve(low, lax.symmetrize(ta), lower=True)
    middle = lax.triangular_solve(low, lax.adjoint(left), lower=True)
    return low, lax.batch_matmul(low, lax.lower_triangle(middle, 0.5))


def _triangular_solve_rule(primals, tangents, *, lower, transpose_a):
    (a, b), (ta, tb) = primals, tangents
    x = lax.triangular_solve(a, b, lower=lower, transpose_a=transpose_a)
    # op(A) dX = dB - op(dA) X, dA restricted to the triangle the solve reads.
    rhs = tb
    if ta is not None:
        tri = lax.lower_triangle(ta) if lower else lax.upper_triangle(ta)
        op_ta = lax.matrix_transpose(tri) if transpose_a else tri
        rhs = add_tangents(rhs, lax.neg(lax.batch_matmul(op_ta, x)))
    return x, lax.triangular_solve(a, rhs, lower=lower, transpose_a=transpose_a)


def _solve_rule(primals, tangents):
    (a, b), (ta, tb) = primals, tangents
    x = lax.solve(a, b)
    rhs = tb if ta is None else add_tangents(tb, lax.neg(lax.batch_matmul(ta, x)))
    return x, lax.solve(a, rhs)


def _slogdet_rule(primals, tangents):
    (a,), (ta,) = primals, tangents
    sign, logabsdet = lax.slogdet(a)
    # d log det A = trace(A^-1 dA): its real part moves log|det A|, its imaginary part
    # (complex A) turns the sign: d sign = sign * i Im(trace).
    g = _trace(lax.solve(a, ta))
    if not lax.is_complex(a):
        return [sign, logabsdet], [None, g]
    d_log = lax.real(g)
    return [sign, logabsdet], [lax.mul(sign, lax.sub(g, lax.convert(d_log, lax.dtype(g)))),
                               d_log]


def _trace(x):
    return lax.reduce_sum(lax.matrix_diagonal(x), (len(lax.shape(x)) - 2,))


def _eigh_rule(primals, tangents):
    (a,), (ta,) = primals, tangents
    w, v = lax.eigh(a)
    # C = V^H dA V: dw = Re diag(C), dV = V (F * C), F_ij = 1 / (w_j - w_i) off the
    # diagonal (infinite at repeated eigenvalues, where eigenvectors are not unique, as in
    # JAX).
    c = lax.batch_matmul(lax.adjoint(v), lax.batch_matmul(lax.symmetrize(ta), v))
    dv = lax.batch_matmul(v, lax.mul(_like(eigen_gaps(w), c), c))
    return [w, v], [lax.real_part(lax.matrix_diagonal(c)), dv]


def _expm_rule(primals, tangents):
    (a,), (ta,) = primals, tangents
    return lax.expm(a), frechet_expm(a, ta)


def frechet_expm(a, e):
    """L(A, E), the Fréchet derivative of exp at A along E: the top-right block of
    exp([[A, E], [0, A]]) (Higham, Functions of Matrices, 3.16). One expm of order 2n, so
    derivatives of any order are expm's again (shared with the VJP)."""
    n, rank = lax.shape(a)[-1], len(lax.shape(a))
    zeros = lax.full(lax.shape(a), 0, lax.dtype(a))
    top = lax.concatenate([a, e], rank - 1)
    bottom = lax.concatenate([zeros, a], rank - 1)
    block = lax.expm(lax.concatenate([top, bottom], rank - 2))
    return lax.slice_axis(lax.slice_axis(block, rank - 2, 0, n), rank - 1, n, n)


def _like(x, ref):
    """x (real) in ref's dtype, to multiply a complex value."""
    return lax.convert(x, lax.dtype(ref))


def eigen_gaps(w):
    """F_ij = 1 / (w_j - w_i) for i != j, 0 on the diagonal (shared with the VJP)."""
    return _off_diagonal_reciprocal(lax.sub(_row(w), _column(w)))


def _row(d):
    """A stack of vectors (..., k) as rows (..., 1, k)."""
    return lax.expand_dims(d, (len(lax.shape(d)) - 1,))


def _column(d):
    """A stack of vectors (..., k) as columns (..., k, 1)."""
    return lax.expand_dims(d, (len(lax.shape(d)),))


def _off_diagonal_reciprocal(m):
    """1 / m off the diagonal, 0 on it (infinite where m is 0 off it, as in JAX)."""
    n = lax.shape(m)[-1]
    off = np.eye(n, dtype=bool) == 0
    safe = lax.select(off, m, np.ones((), lax.dtype(m)))
    return lax.select(off, lax.div(1.0, safe), np.zeros((), lax.dtype(m)))


def _safe_reciprocal(s):
    """1 / s, and 0 where s is 0 (a zero singular value's directions do not move)."""
    zero = lax.eq(s, 0.0)
    return lax.select(zero, np.zeros((), lax.dtype(s)),
                      lax.div(1.0, lax.select(zero, np.ones((), lax.dtype(s)), s)))


def _svd_rule(primals, tangents, *, full_matrices, compute_uv):
    (a,), (ta,) = primals, tangents
    m, n = lax.shape(a)[-2:]
    if compute_uv and full_matrices and m != n:
        raise UnsupportedError(with_location(
            "the derivative of numpy.linalg.svd(..., full_matrices=True) of a non-square "
            "matrix is not unique (the extra singular vectors are arbitrary); pass "
            "full_matrices=False"))
    u, s, vt = lax.svd(a, full_matrices=False)
    v, uh = lax.adjoint(vt), lax.adjoint(u)
    ds_mat = lax.batch_matmul(uh, lax.batch_matmul(ta, v))
    ds = lax.real_part(lax.matrix_diagonal(ds_mat))
    if not compute_uv:
        return [s], [ds]
    # JAX's rule. F_ij = 1 / (s_j^2 - s_i^2); dU = U (F * (dS s + (dS s)^H) + D)
    # [+ the part outside U's span], dV = V (F * (s dS + (s dS)^H)) [+ outside V's span];
    # D = i Im(diag dS) / s fixes the phase of complex singular vectors (0 for real A).
    s_row, s_col = _like(_row(s), ds_mat), _like(_column(s), ds_mat)
    f = _like(_off_diagonal_reciprocal(
        lax.mul(lax.add(_row(s), _column(s)), lax.sub(_row(s), _column(s)))), ds_mat)
    ds_s = lax.mul(ds_mat, s_row)
    s_ds = lax.mul(s_col, ds_mat)
    inner_u = lax.mul(f, lax.add(ds_s, lax.adjoint(ds_s)))
    s_inv = _like(_row(_safe_reciprocal(s)), ds_mat)
    if lax.is_complex(a):
        phase = lax.sub(ds_mat, lax.convert(lax.real(ds_mat), lax.dtype(ds_mat)))
        inner_u = lax.add(inner_u, lax.mul(lax.diagonal_matrix(lax.matrix_diagonal(phase)),
                                           s_inv))
    du = lax.batch_matmul(u, inner_u)
    dv = lax.batch_matmul(v, lax.mul(f, lax.add(s_ds, lax.adjoint(s_ds))))
    if m > n:
        da_v = lax.batch_matmul(ta, v)
        outside = lax.sub(da_v, lax.batch_matmul(u, lax.batch_matmul(uh, da_v)))
        du = lax.add(du, lax.mul(outside, s_inv))
    if n > m:
        dah_u = lax.batch_matmul(lax.adjoint(ta), u)
        outside = lax.sub(dah_u, lax.batch_matmul(v, lax.batch_matmul(vt, dah_u)))
        dv = lax.add(dv, lax.mul(outside, s_inv))
    return [u, s, vt], [du, ds, lax.adjoint(dv)]


def _lu_rule(primals, tangents):
    (a,), (ta,) = primals, tangents
    m, n = lax.shape(a)[-2:]
    packed, pivots, permutation = lax.lu(a)
    if m != n:
        raise UnsupportedError(with_location(
            f"the derivative of an LU factorization is implemented for square matrices "
            f"(here {m}x{n})"))
    # P dA = dL U + L dU: with X = L^-1 P dA U^-1, dL = L tril(X, -1), dU = triu(X) U
    low = lax.add(lax.lower_triangle(packed, 0.0), np.eye(n, dtype=lax.dtype(a)))
    up = lax.upper_triangle(packed)
    rows = lax.permute_rows(ta, permutation)
    left = lax.triangular_solve(low, rows, lower=True)
    x = lax.matrix_transpose(lax.triangular_solve(up, lax.matrix_transpose(left), lower=False,
                                                  transpose_a=True))
    d_low = lax.batch_matmul(low, lax.lower_triangle(x, 0.0))
    d_up = lax.batch_matmul(lax.upper_triangle(x), up)
    return [packed, pivots, permutation], [lax.add(d_low, d_up), None, None]


def _qr_rule(primals, tangents, *, complete):
    (a,), (ta,) = primals, tangents
    m, n = lax.shape(a)[-2:]
    if m < n or (complete and m != n):
        raise UnsupportedError(with_location(
            "the derivative of numpy.linalg.qr is defined for matrices with at least as many "
            f"rows as columns in mode='reduced' (here {m}x{n}, mode="
            f"{'complete' if complete else 'reduced'!r})"))
    q, r = lax.qr(a, complete=complete)
    # dA R^-1, by a solve with R^T from the right
    da_rinv = lax.matrix_transpose(lax.triangular_solve(
        r, lax.matrix_transpose(ta), lower=False, transpose_a=True))
    qt_da_rinv = lax.batch_matmul(lax.adjoint(q), da_rinv)
    below = lax.lower_triangle(qt_da_rinv, 0.0)
    omega = lax.sub(below, lax.adjoint(below))  # skew-symmetric (skew-Hermitian)
    if lax.is_complex(a):  # ... plus the imaginary part of the diagonal (JAX's correction)
        diagonal = lax.matrix_diagonal(qt_da_rinv)
        omega = lax.add(omega, lax.diagonal_matrix(
            lax.sub(diagonal, lax.convert(lax.real(diagonal), lax.dtype(diagonal)))))
    dq = lax.add(lax.batch_matmul(q, lax.sub(omega, qt_da_rinv)), da_rinv)
    dr = lax.batch_matmul(lax.sub(qt_da_rinv, omega), r)
    return [q, r], [dq, dr]


_def("cholesky", _cholesky_rule)
_def("triangular_solve", _triangular_solve_rule)
_def("solve", _solve_rule)
_def("slogdet", _slogdet_rule)
_def("eigh", _eigh_rule)
_def("expm", _expm_rule)
_def("svd", _svd_rule)
_def("lu", _lu_rule)
_def("qr", _qr_rule)
_def("fft", linear_rule(P["fft"]))  # linear: the same transform of the tangent


def _sort_rule(primals, tangents, *, num_keys, permutation):
    # As JAX: sort with the permutation, then the tangents gathered through it (integer
    # outputs, the permutation among them, have none).
    outs = lax.sort(primals, num_keys, permutation=True)
    perm = outs[-1]
    out_t = [None if t is None else lax.take_along_last(t, perm) for t in tangents]
    if permutation:
        return outs, out_t + [None]
    return outs[:-1], out_t


_def("sort", _sort_rule)


# ---------------------------------------------------------------------------------------
# Elementwise binary (tangents of broadcast operands broadcast; jvp_graph fits shapes)


def _add_rule(primals, tangents):
    return lax.add(*primals), add_tangents(*tangents)


def _sub_rule(primals, tangents):
    tx, ty = tangents
    return lax.sub(*primals), add_tangents(tx, None if ty is None else lax.neg(ty))


def _div_rule(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    out = lax.div(x, y)
    left = None if tx is None else lax.div(tx, y)
    return out, add_tangents(left, _scale(ty, lambda: lax.neg(lax.div(out, y))))


def _extremum_rule(prim: Primitive, wins: Callable) -> Callable:
    """max/min: the tangent of the winning operand; ties split it 0.5/0.5 (like JAX)."""
    def rule(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        out = bind(prim, x, y)
        dtype = lax.dtype(out)

        def weight(a, b):
            tie = lax.mul(lax.convert(lax.eq(a, b), dtype), 0.5)
            return lax.add(lax.convert(wins(a, b), dtype), tie)
        return out, add_tangents(_scale(tx, lambda: weight(x, y)),
                                 _scale(ty, lambda: weight(y, x)))
    return rule


def _mod_rule(primals, tangents):
    # x mod y = x - y * floor(x / y): d/dx = 1, d/dy = -floor(x / y).
    (x, y), (tx, ty) = primals, tangents
    out = lax.mod(x, y)
    return out, add_tangents(tx, _scale(ty, lambda: lax.neg(lax.floor_div(x, y))))


def _pow_rule(primals, tangents):
    # Like JAX: d/dx is 0 where y == 0 (no 0 * inf at x == 0); d/dy uses log(1) at x == 0.
    (x, y), (tx, ty) = primals, tangents
    out = lax.pow(x, y)

    def d_base():
        return lax.select(lax.eq(y, 0), 0, lax.mul(y, lax.pow(x, lax.sub(y, 1))))

    def d_exponent():
        return lax.mul(lax.log(lax.select(lax.eq(x, 0), 1, x)), out)
    return out, add_tangents(_scale(tx, d_base), _scale(ty, d_exponent))


def _arctan2_rule(primals, tangents):
    # arctan2(a, b) = atan(a / b): d/da = b / (a² + b²), d/db = -a / (a² + b²).
    (a, b), (ta, tb) = primals, tangents
    out = lax.arctan2(a, b)

    def denominator():
        return lax.add(lax.square(a), lax.square(b))
    return out, add_tangents(_scale(ta, lambda: lax.div(b, denominator())),
                             _scale(tb, lambda: lax.neg(lax.div(a, denominator()))))


_def("add", _add_rule)
_def("sub", _sub_rule)
_def("div", _div_rule)
_def("max", _extremum_rule(P["max"], lax.gt))
_def("min", _extremum_rule(P["min"], lax.lt))
_def("mod", _mod_rule)
_def("pow", _pow_rule)
_def("arctan2", _arctan2_rule)


def _zeta_rule(primals, tangents):
    # Hurwitz zeta(s, q): the order s has no derivative (compiler/special_slopes.py)
    (s, q), (_, tq) = primals, tangents
    return lax.zeta(s, q), _scale(tq, lambda: special_slopes.zeta_q_slope(s, q))


_def("zeta", _zeta_rule)


def _select_rule(primals, tangents):
    (pred, on_true, on_false), (_, t_true, t_false) = primals, tangents
    out = lax.select(pred, on_true, on_false)
    if t_true is None and t_false is None:
        return out, None
    return out, lax.select(pred, instantiate(t_true, on_true), instantiate(t_false, on_false))


def _clip_rule(primals, tangents):
    # Like JAX's clamp: x passes where lo < x < hi, lo where x < lo < hi, hi where it wins.
    (x, lo, hi), (tx, tlo, thi) = primals, tangents
    out = lax.clip(x, lo, hi)

    def masked(t, mask_fn):
        return None if t is None else lax.select(mask_fn(), t, 0)
    return out, add_tangents(
        masked(tx, lambda: lax.bitwise_and(lax.gt(x, lo), lax.lt(x, hi))),
        masked(tlo, lambda: lax.bitwise_and(lax.gt(lo, x), lax.lt(lo, hi))),
        masked(thi, lambda: lax.bitwise_or(lax.lt(hi, x), lax.lt(hi, lo))))


def _cast_rule(primals, tangents, *, dtype):
    (x,), (t,) = primals, tangents
    out = bind(P["cast"], x, dtype=dtype)
    if t is None or not is_inexact(dtype):
        return out, None
    return out, lax.convert(t, dtype)


_def("select", _select_rule)
_def("clip", _clip_rule)
_def("cast", _cast_rule)

# ---------------------------------------------------------------------------------------
# Reductions and scans


def _reduce_prod_rule(primals, tangents, *, axes):
    # d prod = sum_i t_i * prod_{j != i} x_j, with the products of the others from
    # exclusive cumulative products (exact where x has zeros, unlike out / x).
    (x,), (t,) = primals, tangents
    out = lax.reduce_prod(x, axes)
    if t is None:
        return out, None
    shape = lax.shape(x)
    kept = [i for i in range(len(shape)) if i not in axes]
    perm = kept + list(axes)
    flat = tuple(shape[i] for i in kept) + (int(np.prod([shape[a] for a in axes])),)

    def gathered(v):
        return lax.reshape(lax.transpose(v, perm), flat)
    others = _products_of_others(gathered(x), len(flat) - 1)
    return out, lax.reduce_sum(lax.mul(gathered(t), others), [len(flat) - 1])


def _products_of_others(x: Any, axis: int) -> Any:
    """prod_{j != i} x_j along axis, from exclusive cumprods from both ends."""
    before = _shift(lax.cumprod(x, axis), axis, 1, False, 1)
    after = _shift(lax.cumprod(x, axis, reverse=True), axis, 1, True, 1)
    return lax.mul(before, after)


def _shift(x: Any, axis: int, distance: int, reverse: bool, fill: Any) -> Any:
    """x shifted along axis by distance (towards the end, or the start when reverse)."""
    config = [(0, 0, 0)] * len(lax.shape(x))
    config[axis] = (-distance, distance, 0) if reverse else (distance, -distance, 0)
    return lax.pad(x, fill, config)


def _extremum_reduce_rule(prim: Primitive) -> Callable:
    """reduce_max/min: the tangent at the extremum, divided equally among ties (like JAX)."""
    def rule(primals, tangents, *, axes):
        (x,), (t,) = primals, tangents
        out = bind(prim, x, axes=axes)
        if t is None:
            return out, None
        shape = lax.shape(x)
        kept = [i for i in range(len(shape)) if i not in axes]
        mask = lax.convert(lax.eq(x, lax.broadcast_in_dim(out, shape, kept)), lax.dtype(x))
        count = lax.broadcast_in_dim(lax.reduce_sum(mask, axes), shape, kept)
        return out, lax.reduce_sum(lax.mul(t, lax.div(mask, count)), axes)
    return rule


def _cumprod_rule(primals, tangents, *, axis, reverse):
    # The JVP of a Hillis-Steele scan of products: log2(n) steps of shifted multiplies,
    # exact where x has zeros.
    (x,), (t,) = primals, tangents
    out = lax.cumprod(x, axis, reverse)
    if t is None:
        return out, None
    n = lax.shape(x)[axis]
    partial, tangent = x, t
    distance = 1
    while distance < n:
        shifted = _shift(partial, axis, distance, reverse, 1)
        shifted_t = _shift(tangent, axis, distance, reverse, 0)
        tangent = lax.add(lax.mul(tangent, shifted), lax.mul(partial, shifted_t))
        partial = lax.mul(partial, shifted)
        distance *= 2
    return out, tangent


_def("reduce_prod", _reduce_prod_rule)
_def("reduce_max", _extremum_reduce_rule(P["reduce_max"]))
_def("reduce_min", _extremum_reduce_rule(P["reduce_min"]))
_def("cumprod", _cumprod_rule)

# ---------------------------------------------------------------------------------------
# Structural operations with several differentiable operands


def _concatenate_rule(primals, tangents, *, dimension):
    out = lax.concatenate(primals, dimension)
    if all(t is None for t in tangents):
        return out, None
    parts = [instantiate(t, x) for x, t in zip(primals, tangents)]
    return out, lax.concatenate(parts, dimension)


def _pad_rule(primals, tangents, *, padding_config):
    (x, value), (tx, tvalue) = primals, tangents
    out = lax.pad(x, value, padding_config)
    if tx is None and tvalue is None:
        return out, None
    return out, lax.pad(instantiate(tx, x), instantiate(tvalue, value), padding_config)


def _update_rule(prim: Primitive) -> Callable:
    """x with a region replaced by update: the same replacement on the tangents."""
    def rule(primals, tangents, **params):
        x, update, *indices = primals
        tx, tu = tangents[:2]
        out = bind(prim, *primals, **params)
        if tx is None and tu is None:
            return out, None
        return out, bind(prim, instantiate(tx, x), instantiate(tu, update), *indices,
                         **params)
    return rule


def _scatter_rule(prim: Primitive) -> Callable:
    """scatter/scatter_add(x, idx, updates): the same scatter of the tangents."""
    def rule(primals, tangents, *, axis):
        x, idx, updates = primals
        tx, _, tu = tangents
        out = bind(prim, x, idx, updates, axis=axis)
        if tu is None and (tx is None or prim is P["scatter_add"]):
            return out, tx
        return out, bind(prim, instantiate(tx, x), idx, instantiate(tu, updates), axis=axis)
    return rule


def _call_rule(primals, tangents, *, graph):
    """A call: the JVP of its body, evaluated in place (inlined)."""
    return jvp_eval(prepare(graph), primals, tangents)


_def("concatenate", _concatenate_rule)
_def("pad", _pad_rule)
_def("update_slice", _update_rule(P["update_slice"]))
_def("dynamic_update_slice", _update_rule(P["dynamic_update_slice"]))
_def("scatter_add", _scatter_rule(P["scatter_add"]))
_def("scatter", _scatter_rule(P["scatter"]))
_def("call", _call_rule)


def _aot_compiled_rule(primals, tangents, *, graph, fn):
    """transfuse.compile's compiled graph: differentiated as a call of its graph."""
    return _call_rule(primals, tangents, graph=graph)


_def("aot_compiled", _aot_compiled_rule)

# ---------------------------------------------------------------------------------------
# stop_gradient and the user's rules (ir/custom.py)

_def("stop_gradient", zero_rule(P["stop_gradient"]))


def _plain_tangents(fun: Graph, primals: list, tangents: list, diff: tuple) -> list:
    """The output tangents of the operands no rule covers (captures, nondiff_argnums
    arrays), through `fun` differentiated as ordinary code (None: zero)."""
    plain = [None if d else t for t, d in zip(tangents, diff)]
    if all(t is None for t in plain):
        return [None] * len(fun.outputs)
    return jvp_eval(fun, primals, plain)[1]


def _user_jvp(primals: list, tangents: list, fun: Graph, jvp: Graph, diff: tuple
              ) -> tuple[list, list]:
    """The user's JVP graph, inlined as ordinary primitives (so it differentiates again)."""
    given = [instantiate(t, p) for p, t, d in zip(primals, tangents, diff) if d]
    results = inline(jvp, list(primals) + given)
    n_out = len(fun.outputs)
    extra = _plain_tangents(fun, primals, tangents, diff)
    return results[:n_out], [add_tangents(t, e) for t, e in zip(results[n_out:], extra)]


def _has_rule_tangent(tangents: list, diff: tuple) -> bool:
    return any(t is not None for t, d in zip(tangents, diff) if d)


def _custom_jvp_call_rule(primals, tangents, *, fun, jvp, diff, name):
    if _has_rule_tangent(tangents, diff):
        return _user_jvp(primals, tangents, fun, jvp, diff)
    outs = bind(P["custom_jvp_call"], *primals, fun=fun, jvp=jvp, diff=diff, name=name)
    return outs, _plain_tangents(fun, primals, tangents, diff)


def _custom_vjp_call_rule(primals, tangents, **params):
    fun, jvp, diff, name = (params[k] for k in ("fun", "jvp", "diff", "name"))
    # The stored-residuals form computes fwd: its residuals are ordinary outputs of fwd.
    computes = params["fwd"] if params["saved"] else fun
    if not _has_rule_tangent(tangents, diff):
        outs = bind(P["custom_vjp_call"], *primals, **params)
        return outs, _plain_tangents(computes, primals, tangents, diff)
    if jvp is None:
        # As JAX: a custom_vjp function defines reverse mode only.
        raise UnsupportedError(with_location(
            f"can't apply forward-mode autodiff (jvp, jacfwd, hessian) to {name}: it defines "
            "reverse-mode rules only (use custom_jvp, or give a transfuse.Function a jvp "
            "staticmethod)"))
    outs, out_tangents = _user_jvp(primals, tangents, fun, jvp, diff)
    if params["saved"]:
        residuals, residual_tangents = jvp_eval(computes, primals, tangents)
        outs, out_tangents = (outs + residuals[len(outs):],
                              out_tangents + residual_tangents[len(outs):])
    return outs, out_tangents


_def("custom_jvp_call", _custom_jvp_call_rule)
_def("custom_vjp_call", _custom_vjp_call_rule)


def _remat_rule(primals, tangents, *, graph, policy, prevent_cse, num_saved):
    """A checkpoint: the JVP of its body, itself one remat node (values and tangents)."""
    n = len(primals)
    has_tangent = [t is not None for t in tangents]
    out_has_tangent: list[bool] = []

    def body(*args: Any) -> list:
        moving = iter(args[n:])
        outs, out_tangents = jvp_eval(graph, args[:n],
                                      [next(moving) if h else None for h in has_tangent])
        out_has_tangent.extend(t is not None for t in out_tangents)
        return list(outs) + [t for t in out_tangents if t is not None]

    avals = graph.in_avals + [a for a, h in zip(graph.in_avals, has_tangent) if h]
    body_graph, implicit = trace_to_graph(body, avals, graph.name + "_jvp")
    assert not implicit, "a remat body is closed"
    outs = bind(P["remat"], *primals, *[t for t in tangents if t is not None],
                graph=body_graph, policy=policy, prevent_cse=prevent_cse, num_saved=0)
    moving = iter(outs[len(graph.outputs):])
    return outs[:len(graph.outputs)], [next(moving) if h else None for h in out_has_tangent]


_def("remat", _remat_rule)
_def("optimization_barrier", linear_rule(P["optimization_barrier"]))

# ---------------------------------------------------------------------------------------
# Structured control flow: one new node of the same primitive (compiler/jvp_control.py)

from transfuse.compiler import jvp_control  # noqa: E402 (its rules call jvp_eval below)

_def("cond", jvp_control.cond_jvp)
_def("while_loop", jvp_control.while_jvp)
_def("scan", jvp_control.scan_jvp)

# ---------------------------------------------------------------------------------------
# The rewrite


def jvp_eval(graph: Graph, primals: Sequence[Any], tangents: Sequence[Tangent]
             ) -> tuple[list[Any], list[Tangent]]:
    """Evaluate a pure graph on primals and tangents (None = zero) through the JVP rules."""
    env: dict[Var, Any] = dict(zip(graph.inputs, primals))
    env.update(graph.consts)
    tangent_env: dict[Var, Any] = {v: t for v, t in zip(graph.inputs, tangents)
                                   if t is not None}
    for node in graph.nodes:
        args = [env[v] for v in node.inputs]
        arg_tangents = [tangent_env.get(v) for v in node.inputs]
        with source_of(node.source):
            outs, out_tangents = _apply_rule(node.prim, args, arg_tangents, node.params)
        for var, out, tangent in zip(node.outputs, outs, out_tangents):
            env[var] = out
            if tangent is not None and is_inexact(var.aval.dtype):
                tangent_env[var] = _fit(tangent, var.aval, node.prim)
    return [env[v] for v in graph.outputs], [tangent_env.get(v) for v in graph.outputs]


def _apply_rule(prim: Primitive, args: list, arg_tangents: list, params: dict
                ) -> tuple[list, list]:
    """Primal outputs and tangents of one node, as lists."""
    if all(t is None for t in arg_tangents):
        outs = bind(prim, *args, **params)  # nothing to differentiate: the primal only
        outs = outs if prim.multiple_results else [outs]
        return outs, [None] * len(outs)
    rule = JVP_RULES.get(prim)
    if rule is None:
        raise UnsupportedError(f"forward-mode differentiation of primitive {prim.name!r} "
                               "is not supported (no JVP rule)")
    outs, out_tangents = rule(args, arg_tangents, **params)
    if not prim.multiple_results:
        return [outs], [out_tangents]
    return list(outs), list(out_tangents)


def _fit(tangent: Any, aval: Aval, prim: Primitive) -> Any:
    """The tangent at the output's shape: tangents of broadcast operands broadcast."""
    t_aval = lax.aval(tangent)
    if t_aval.dtype != aval.dtype:
        raise AssertionError(f"JVP rule of {prim.name} gave a {t_aval} tangent for a "
                             f"{aval} output")
    if t_aval.shape != aval.shape:
        tangent = lax.broadcast_to(tangent, aval.shape)
    return tangent


def check_differentiable(aval: Aval, what: str) -> None:
    """Differentiating with respect to a non-floating value is an error."""
    if not is_inexact(aval.dtype):
        raise DTypeError(f"{what} has dtype {aval.dtype}; differentiation needs floating-"
                         "point or complex inputs (float32, float64, complex64, complex128)")


def jvp_graph_with_zeros(graph: Graph, nonzero: Sequence[bool], *, instantiate: bool = True
                         ) -> tuple[Graph, list[bool]]:
    """`jvp_graph`, and which output tangents are nonzero (False: symbolically zero).

    With instantiate=False, symbolically zero output tangents are left out of the outputs.
    """
    graph = prepare(graph)
    n_explicit = graph.num_explicit_inputs
    nonzero = list(nonzero)
    if len(nonzero) != n_explicit:
        raise ValueError(f"jvp_graph: nonzero has {len(nonzero)} entries for "
                         f"{n_explicit} explicit inputs")
    explicit, implicit = graph.inputs[:n_explicit], graph.inputs[n_explicit:]
    for i, (var, nz) in enumerate(zip(explicit, nonzero)):
        if nz:
            check_differentiable(var.aval, f"input {i} of {graph.name}")
    tangent_avals = [v.aval for v, nz in zip(explicit, nonzero) if nz]
    n_tangents = len(tangent_avals)
    n_user = num_user_outputs(graph)
    out_nonzero: list[bool] = []

    def fn(*args):
        primals = list(args[:n_explicit]) + list(args[n_explicit + n_tangents:])
        given = iter(args[n_explicit:n_explicit + n_tangents])
        tangents = [next(given) if nz else None for nz in nonzero] + [None] * len(implicit)
        outs, out_tangents = jvp_eval(graph, primals, tangents)
        # Mutated inputs' final values (trailing outputs) are primal values: no tangents.
        out_tangents = out_tangents[:n_user]
        out_nonzero.extend(t is not None for t in out_tangents)
        if instantiate:
            out_tangents = [zeros_like_aval(v.aval) if t is None else t
                            for v, t in zip(graph.outputs, out_tangents)]
        else:
            out_tangents = [t for t in out_tangents if t is not None]
        return outs[:n_user] + out_tangents + outs[n_user:]

    in_avals = [v.aval for v in explicit] + tangent_avals + [v.aval for v in implicit]
    new, _ = trace_to_graph(fn, in_avals, name=f"jvp_{graph.name}")
    mutated = tuple(i if i < n_explicit else i + n_tangents for i in graph.mutated_inputs)
    result = Graph(new.inputs, new.nodes, new.outputs, new.consts,
                   num_captures=graph.num_captures, has_rng=graph.has_rng, name=new.name,
                   mutated_inputs=mutated)
    return dce(result), out_nonzero


def jvp_graph(graph: Graph, nonzero: Sequence[bool]) -> Graph:
    """The JVP of a graph.

    Inputs: the explicit primal inputs, then the tangents of the inputs marked nonzero,
    then the graph's implicit inputs (captures, random key), which never carry tangents.
    Outputs: the primal outputs, then one tangent per output (zeros instantiated; integer
    outputs get integer zeros), then, when the program writes into its inputs, their final
    values (`mutated_inputs` indexes the new graph's inputs; see functionalize.prepare).
    """
    return jvp_graph_with_zeros(graph, nonzero)[0]


__all__ = ["JVP_RULES", "jvp_graph", "jvp_graph_with_zeros", "jvp_eval", "zero_rule",
           "linear_rule", "bilinear_rule", "unary_rule", "add_tangents", "instantiate"]
