"""transfuse.scipy.special: scipy.special's functions on traced values.

Primitives (ir/primitives.py SPECIAL_UNARY, lowered on the CPU to SciPy's own scalar code,
runtime/special_functions.py): erfc, erfinv, ndtr, ndtri, log_ndtr, gammaln, psi
(digamma), i0e, i1e, and Hurwitz's zeta behind polygamma. The rest are compositions
written as SciPy writes them: erf and expit (lax.erf, lax.logistic), erfcinv (ndtri),
logit, xlogy, xlog1py, softplus, polygamma, logsumexp, softmax, log_softmax.

SciPy's ufuncs reach these through Tracer.__array_ufunc__ once this module is imported
(transfuse/scipy/__init__.py imports it at the first trace after scipy.special is), its
Python functions (polygamma, logsumexp, softmax, log_softmax, softplus) through
`replace_while_tracing`. Operands take the dtype SciPy's ufunc loop would (float32 stays
float32, integers become float64). With NumPy arrays alone each function is SciPy's own.
Derivatives, conventions and accuracy: docs/numpy.md, "scipy.special".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.special as _sp

from transfuse.ir import lax
from transfuse.ir.tracing import NUMPY_TABLE
from transfuse.numpy._core import any_traced, asarray, cast_operand, is_traced, resolve_loop
from transfuse.numpy._patches import original

UFUNCS = ("erf", "erfc", "erfinv", "erfcinv", "expit", "logit", "gammaln", "digamma", "psi",
          "xlogy", "xlog1py", "ndtr", "log_ndtr", "ndtri", "i0e", "i1e")
FUNCTIONS = ("polygamma", "logsumexp", "softmax", "log_softmax", "softplus")
__all__ = list(UFUNCS + FUNCTIONS)
# transfuse/scipy/__init__.py routes scipy.special.<FUNCTIONS> here while tracing.

_SQRT1_2 = math.sqrt(0.5)


def _operands(ufunc: np.ufunc, *args: Any) -> list[Any]:
    """args cast to the loop SciPy's ufunc picks for them."""
    in_dtypes, _ = resolve_loop(ufunc, args)
    return [cast_operand(asarray(a), dt) for a, dt in zip(args, in_dtypes)]


def _in_float64(fn: Callable[[Any], Any], x: Any) -> Any:
    """fn(x) computed in float64 and rounded back to x's dtype, as SciPy's float32 loops
    do: where a float32 intermediate (y / 2 of a subnormal, logit's quotient) would cost
    digits."""
    if lax.dtype(x) == np.float64:
        return fn(x)
    return lax.convert(fn(lax.convert(x, np.float64)), lax.dtype(x))


def _traced(scipy_name: str) -> Callable[[Callable], Callable]:
    """Register `impl` as the traced scipy.special.<scipy_name>; the exported function is
    SciPy's own when no argument is traced."""
    def decorate(impl: Callable) -> Callable:
        scipys = getattr(_sp, scipy_name)
        if isinstance(scipys, np.ufunc):
            NUMPY_TABLE[scipys] = impl

        @functools.wraps(impl)
        def public(*args: Any, **kwargs: Any) -> Any:
            if not any_traced(args, kwargs):
                return original("scipy.special", scipy_name)(*args, **kwargs)
            return impl(*args, **kwargs)
        public.__doc__ = f"scipy.special.{scipy_name}, traceable. {impl.__doc__}"
        return public
    return decorate


# ---------------------------------------------------------------------------------------
# Elementwise: one primitive each


@_traced("erf")
def erf(x: Any) -> Any:
    """erf(x) = 2/sqrt(pi) integral_0^x exp(-t**2) dt."""
    return lax.erf(*_operands(_sp.erf, x))


@_traced("erfc")
def erfc(x: Any) -> Any:
    """1 - erf(x), without cancellation in the right tail."""
    return lax.erfc(*_operands(_sp.erfc, x))


@_traced("erfinv")
def erfinv(x: Any) -> Any:
    """The inverse of erf on (-1, 1)."""
    return lax.erf_inv(*_operands(_sp.erfinv, x))


@_traced("ndtri")
def ndtri(p: Any) -> Any:
    """The inverse of ndtr (the standard normal quantile function) on (0, 1)."""
    return lax.ndtri(*_operands(_sp.ndtri, p))


@_traced("log_ndtr")
def log_ndtr(x: Any) -> Any:
    """log(ndtr(x)), accurate in both tails."""
    return lax.log_ndtr(*_operands(_sp.log_ndtr, x))


@_traced("gammaln")
def gammaln(x: Any) -> Any:
    """log|Gamma(x)|."""
    return lax.lgamma(*_operands(_sp.gammaln, x))


@_traced("psi")
def psi(x: Any) -> Any:
    """The digamma function Gamma'(x) / Gamma(x)."""
    return lax.digamma(*_operands(_sp.psi, x))


digamma = psi


@_traced("i0e")
def i0e(x: Any) -> Any:
    """exp(-|x|) I0(x), the exponentially scaled modified Bessel function of order 0."""
    return lax.bessel_i0e(*_operands(_sp.i0e, x))


@_traced("i1e")
def i1e(x: Any) -> Any:
    """exp(-|x|) I1(x), the exponentially scaled modified Bessel function of order 1."""
    return lax.bessel_i1e(*_operands(_sp.i1e, x))


@_traced("expit")
def expit(x: Any) -> Any:
    """The logistic sigmoid 1 / (1 + exp(-x))."""
    return lax.logistic(*_operands(_sp.expit, x))


# ---------------------------------------------------------------------------------------
# Elementwise compositions


@_traced("erfcinv")
def erfcinv(y: Any) -> Any:
    """The inverse of erfc on (0, 2): -ndtri(y / 2) / sqrt(2), in float64 (one rounding
    more than ndtri)."""
    (y,) = _operands(_sp.erfcinv, y)
    return _in_float64(_erfcinv, y)


def _erfcinv(y: Any) -> Any:
    return lax.mul(lax.ndtri(lax.mul(y, 0.5)), -_SQRT1_2)


@_traced("ndtr")
def ndtr(x: Any) -> Any:
    """The standard normal CDF."""
    return lax.ndtr(*_operands(_sp.ndtr, x))


@_traced("logit")
def logit(p: Any) -> Any:
    """log(p / (1 - p)); log1p(2 (p - 1/2) / (1 - p)) on (0.3, 0.65), as SciPy, where the
    quotient is near 1 (float32 computed in float64)."""
    (p,) = _operands(_sp.logit, p)
    return _in_float64(_logit, p)


def _logit(p: Any) -> Any:
    near_half = lax.bitwise_and(lax.gt(p, 0.3), lax.lt(p, 0.65))
    one_minus = lax.sub(1.0, p)
    centre = lax.log1p(lax.div(lax.mul(lax.sub(p, 0.5), 2.0), one_minus))
    return lax.select(near_half, centre, lax.log(lax.div(p, one_minus)))


def _x_times_log(x: Any, y: Any, log: Callable, inside: Callable, neutral: float) -> Any:
    """x * log(y), and 0 where x == 0 unless y is nan (SciPy's xlogy/xlog1py). Where x == 0
    and log(y) is finite the product is kept, so d/dx is log(y) there (JAX's); elsewhere
    at x == 0, y is replaced by `neutral` so no gradient is nan."""
    zero_x = lax.eq(x, 0.0)
    odd = lax.bitwise_and(zero_x, lax.logical_not(inside(y)))
    safe_y = lax.select(odd, lax.full_like(y, neutral), y)
    product = lax.mul(x, log(safe_y))
    at_odd = lax.select(lax.isnan(y), y, lax.full_like(product, 0.0))
    return lax.select(odd, at_odd, product)


def _positive_finite(y: Any) -> Any:
    return lax.bitwise_and(lax.gt(y, 0.0), lax.lt(y, np.inf))


def _above_minus_one_finite(y: Any) -> Any:
    return lax.bitwise_and(lax.gt(y, -1.0), lax.lt(y, np.inf))


@_traced("xlogy")
def xlogy(x: Any, y: Any) -> Any:
    """x * log(y), 0 where x == 0 (unless y is nan)."""
    x, y = _operands(_sp.xlogy, x, y)
    return _x_times_log(x, y, lax.log, _positive_finite, 1.0)


@_traced("xlog1py")
def xlog1py(x: Any, y: Any) -> Any:
    """x * log1p(y), 0 where x == 0 (unless y is nan)."""
    x, y = _operands(_sp.xlog1py, x, y)
    return _x_times_log(x, y, lax.log1p, _above_minus_one_finite, 0.0)


@_traced("softplus")
def softplus(x: Any, **kwargs: Any) -> Any:
    """log(1 + exp(x)) = np.logaddexp(0, x), as SciPy."""
    return np.logaddexp(0, x, **kwargs)


@_traced("polygamma")
def polygamma(n: Any, x: Any) -> Any:
    """The n-th derivative of digamma: psi(x) for n = 0, else (-1)**(n+1) n! zeta(n+1, x)
    (SciPy's formula). n must be integral (else nan); it has no derivative."""
    n_dtype = asarray(n).dtype
    dtype = np.result_type(n_dtype if n_dtype.kind == "f" else np.float64, asarray(x).dtype)
    x = cast_operand(asarray(x), dtype)
    if is_traced(n):
        n = lax.convert(n, dtype)
        order = lax.add(n, 1.0)
        sign = lax.select(lax.eq(lax.mod(n, 2.0), 0.0), lax.full_like(n, -1.0),
                          lax.full_like(n, 1.0))
        factorial = lax.round(lax.exp(lax.lgamma(order)))  # exact while n! is
        factor = lax.select(lax.eq(n, lax.floor(n)), lax.mul(sign, factorial),
                            lax.full_like(n, np.nan))
        is_zero = lax.eq(n, 0.0)
    else:
        n = np.asarray(n, dtype)
        order = n + 1
        with np.errstate(invalid="ignore"):
            factor = np.asarray((-1.0) ** order * _sp.gamma(order), dtype)
        if n.ndim == 0 and n == 0:
            return lax.digamma(x)
        is_zero = n == 0
    series = lax.mul(factor, lax.zeta(order, x))
    if not is_traced(is_zero) and not is_zero.any():
        return series
    return lax.select(is_zero, lax.digamma(x), series)


# ---------------------------------------------------------------------------------------
# Reductions


def _float_array(a: Any) -> Any:
    """a as an array of its floating dtype (integers become float64)."""
    a = asarray(a)
    dtype = np.result_type(a.dtype, np.float16) if a.dtype.kind == "f" else np.float64
    return cast_operand(a, dtype)


@_traced("logsumexp")
def logsumexp(a: Any, axis: Any = None, b: Any = None, keepdims: bool = False,
              return_sign: bool = False) -> Any:
    """log(sum(b * exp(a))) along axis, as SciPy computes it: the largest term is taken
    out of the sum (log1p of the rest), so a dominant term loses no digits; where that
    gives no finite value, the direct log(sum(b * exp(a))). return_sign returns
    (log|sum|, sign(sum)); without it a negative sum gives nan."""
    a = _float_array(a)
    if b is not None:
        b = _float_array(b)
        dtype = np.result_type(a.dtype, b.dtype)
        a, b = np.broadcast_arrays(cast_operand(a, dtype), cast_operand(b, dtype))
        a = np.where(b == 0, -np.inf, a)  # a zero weight drops its term, even inf or nan
    a = np.atleast_1d(a)
    b = None if b is None else np.atleast_1d(b)
    axis = tuple(range(a.ndim)) if axis is None else axis
    if a.size == 0:  # an empty sum: log(0) = -inf, sign -1 (SciPy's)
        out = np.log(np.sum(np.exp(a), axis=axis, keepdims=True))
        sgn = np.sign(out)
    else:
        out, sgn = _logsumexp_nonempty(a, b, axis, return_sign)
    if not keepdims:
        out, sgn = np.squeeze(out, axis=axis), np.squeeze(sgn, axis=axis)
    return (out, sgn) if return_sign else out


def _logsumexp_nonempty(a: Any, b: Any, axis: Any, return_sign: bool) -> tuple[Any, Any]:
    a_max = np.max(a, axis=axis, keepdims=True)
    is_max = a == a_max
    shift = np.where(np.isfinite(a_max), a_max, 0)
    weights = np.where(is_max, 1.0 if b is None else b, 0).astype(a.dtype)
    count = np.sum(weights, axis=axis, keepdims=True)  # the max terms' total weight
    terms = np.exp(np.where(is_max, -np.inf, a) - shift)
    rest = np.sum(terms if b is None else b * terms, axis=axis, keepdims=True)
    rest = np.where(rest == 0, rest, rest / count)
    sgn = np.sign(rest + 1) * np.sign(count)
    rest = np.where(rest < -1, -rest - 2, rest)
    out = np.log1p(rest) + np.log(np.abs(count)) + a_max
    finite = np.isfinite(out)
    # the direct sum where that is not finite (inf, nan, all -inf), on a's values there
    # only: elsewhere exp(a) may overflow, and its gradient would be nan
    direct_a = np.where(finite, 0, a)
    direct = np.sum(np.exp(direct_a) if b is None else b * np.exp(direct_a), axis=axis,
                    keepdims=True)
    if return_sign:
        out = np.where(finite, out, np.log(np.abs(direct)))
        return out, np.where(finite, sgn, np.sign(direct))
    out = np.where(finite, out, np.log(direct))
    return np.where(sgn < 0, np.nan, out), sgn


@_traced("softmax")
def softmax(x: Any, axis: Any = None) -> Any:
    """exp(x) / sum(exp(x)) along axis, shifted by the maximum (SciPy's formula)."""
    x = _float_array(x)
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


@_traced("log_softmax")
def log_softmax(x: Any, axis: Any = None) -> Any:
    """x - logsumexp(x) along axis, shifted by the (finite) maximum (SciPy's formula)."""
    x = _float_array(x)
    x_max = np.max(x, axis=axis, keepdims=True)
    shifted = x - np.where(np.isfinite(x_max), x_max, 0)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
