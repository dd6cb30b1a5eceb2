"""Derivatives of scipy.special's primitives (ir/primitives.py SPECIAL_UNARY and zeta).

Each slope is f'(x) written with x and out = f(x), shared by the JVP table
(compiler/jvp.py: t * slope) and the VJP table (compiler/vjp.py: ct * slope). They are
differentiable compositions, so higher derivatives follow (d digamma = zeta(2, x), whose
derivative is -2 zeta(3, x), ...). Checked against mpmath and JAX in tests/test_special.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from transfuse.ir import lax

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_SQRT_PI_OVER_TWO = math.sqrt(math.pi) / 2.0
_SQRT_TWO_PI = math.sqrt(2.0 * math.pi)


def erfc_slope(x: Any, out: Any) -> Any:
    """d erfc(x) = -2 / sqrt(pi) exp(-x**2)."""
    return lax.mul(lax.exp(lax.neg(lax.square(x))), -_TWO_OVER_SQRT_PI)


def erf_inv_slope(x: Any, out: Any) -> Any:
    """d erfinv(x) = sqrt(pi) / 2 exp(erfinv(x)**2)."""
    return lax.mul(lax.exp(lax.square(out)), _SQRT_PI_OVER_TWO)


def ndtr_slope(x: Any, out: Any) -> Any:
    """d ndtr(x) = exp(-x**2 / 2) / sqrt(2 pi)."""
    return lax.mul(lax.exp(lax.mul(lax.square(x), -0.5)), 1.0 / _SQRT_TWO_PI)


def ndtri_slope(x: Any, out: Any) -> Any:
    """d ndtri(p) = sqrt(2 pi) exp(ndtri(p)**2 / 2)."""
    return lax.mul(lax.exp(lax.mul(lax.square(out), 0.5)), _SQRT_TWO_PI)


def log_ndtr_slope(x: Any, out: Any) -> Any:
    """d log_ndtr(x) = phi(x) / Phi(x) = exp(-x**2 / 2 - log_ndtr(x)) / sqrt(2 pi): one
    exponent, so neither tail overflows or divides 0 by 0."""
    return lax.mul(lax.exp(lax.sub(lax.mul(lax.square(x), -0.5), out)), 1.0 / _SQRT_TWO_PI)


def lgamma_slope(x: Any, out: Any) -> Any:
    """d gammaln(x) = digamma(x)."""
    return lax.digamma(x)


def digamma_slope(x: Any, out: Any) -> Any:
    """d digamma(x) = polygamma(1, x) = zeta(2, x)."""
    return lax.zeta(2.0, x)


def bessel_i0e_slope(x: Any, out: Any) -> Any:
    """d i0e(x) = i1e(x) - sign(x) i0e(x)."""
    return lax.sub(lax.bessel_i1e(x), lax.mul(lax.sign(x), out))


def bessel_i1e_slope(x: Any, out: Any) -> Any:
    """d i1e(x) = i0e(x) - i1e(x) (sign(x) + 1/x), and 1/2 at x = 0 (as JAX: 1/x is
    replaced near 0, where the limit is taken)."""
    tiny = float(np.finfo(lax.dtype(x)).eps)
    away = lax.gt(lax.abs(x), tiny)
    safe = lax.select(away, x, lax.full_like(x, tiny))
    slope = lax.sub(lax.bessel_i0e(safe),
                    lax.mul(lax.bessel_i1e(safe), lax.add(lax.sign(safe), lax.reciprocal(safe))))
    return lax.select(away, slope, lax.full_like(x, 0.5))


def zeta_q_slope(s: Any, q: Any) -> Any:
    """d zeta(s, q) / dq = -s zeta(s + 1, q). The order s has no derivative here (0, as for
    floor): polygamma's order n, its one use, is an integer."""
    return lax.mul(lax.neg(s), lax.zeta(lax.add(s, 1.0), q))
