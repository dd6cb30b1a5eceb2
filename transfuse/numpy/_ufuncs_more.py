"""More ufuncs written with primitives: copysign, fmod, heaviside, ldexp, frexp, logaddexp2,
float_power (reached as np.f(traced) through __array_ufunc__), and np.sinc."""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir import lax

from ._core import (
    UFUNC_COMPOSITES,
    asarray,
    call_ufunc,
    cast_operand,
    dtype_of,
    implements,
    resolve_loop,
)

_LN2 = float(np.log(2.0))


def _operands(ufunc: np.ufunc, *args: Any) -> list[Any]:
    """args converted to the dtypes of the loop NumPy picks for ufunc."""
    in_dts, _ = resolve_loop(ufunc, args)
    return [cast_operand(a, dt) for a, dt in zip(args, in_dts)]


def _signbit(x: Any) -> Any:
    return UFUNC_COMPOSITES[np.signbit](x)


def copysign(x1: Any, x2: Any) -> Any:
    """|x1| with the sign bit of x2 (-0.0 and -nan count as negative)."""
    x1, x2 = _operands(np.copysign, x1, x2)
    magnitude = lax.abs(x1)
    return lax.select(_signbit(x2), lax.neg(magnitude), magnitude)


def fmod(x1: Any, x2: Any) -> Any:
    """C's fmod: the remainder of truncated division, with x1's sign. On non-negative
    operands it equals Python's mod, so mod(|x1|, |x2|) signed like x1 is exact."""
    x1, x2 = _operands(np.fmod, x1, x2)
    if dtype_of(x1) == np.bool_:
        return lax.bitwise_and(x1, lax.logical_not(x2))  # NumPy: fmod(True, False) is 0
    r = lax.mod(lax.abs(x1), lax.abs(x2))
    if dtype_of(x1).kind in "iu":  # NumPy: an integer fmod by zero is 0
        r = lax.select(lax.eq(x2, 0), lax.zeros_like(r), r)
    return lax.select(_signbit(x1), lax.neg(r), r)


def heaviside(x1: Any, x2: Any) -> Any:
    """0 below zero, x2 at zero, 1 above; NaN stays NaN (as NumPy)."""
    x1, x2 = _operands(np.heaviside, x1, x2)
    x1, x2 = (lax.broadcast_to(a, np.broadcast_shapes(lax.shape(x1), lax.shape(x2)))
              for a in (x1, x2))
    one, zero = lax.full_like(x1, 1), lax.zeros_like(x1)
    steps = lax.select(lax.lt(x1, 0), zero, lax.select(lax.gt(x1, 0), one, x2))
    return lax.select(lax.isnan(x1), x1, steps)


def ldexp(x1: Any, x2: Any) -> Any:
    """x1 * 2**x2, the power split in two factors so that neither overflows alone."""
    in_dts, out_dt = resolve_loop(np.ldexp, (x1, x2))
    x1, x2 = cast_operand(x1, in_dts[0]), cast_operand(x2, np.int64)
    work = np.dtype(np.float64) if out_dt.itemsize < 8 else out_dt  # exact power-of-2 steps
    x2 = lax.clip(x2, -2200, 2200)  # beyond: 0 or inf whatever the (finite) x1 is
    scaled = _scale(lax.convert(x1, work), lax.convert(x2, work))
    return lax.convert(scaled, out_dt)


def frexp(x: Any) -> tuple[Any, Any]:
    """(mantissa, exponent) with x = mantissa * 2**exponent and 0.5 <= |mantissa| < 1; zero,
    inf and NaN give (x, 0). The exponent from log2, corrected by one step either way."""
    in_dt, _, exp_dt = np.frexp.resolve_dtypes((dtype_of(x), None, None))
    x = cast_operand(x, in_dt)
    work = np.dtype(np.float64)
    x64 = lax.convert(x, work)
    regular = lax.bitwise_and(lax.isfinite(x64), lax.ne(x64, 0))
    magnitude = lax.select(regular, lax.abs(x64), lax.full_like(x64, 1.0))
    exponent = lax.add(lax.floor(lax.div(lax.log(magnitude), _LN2)), 1.0)
    for _ in range(2):  # log2's rounding near powers of two: at most one step off
        mantissa = _scale(magnitude, lax.neg(exponent))
        exponent = lax.add(exponent, lax.sub(lax.convert(lax.ge(mantissa, 1.0), work),
                                             lax.convert(lax.lt(mantissa, 0.5), work)))
    mantissa = lax.select(regular, _scale(x64, lax.neg(exponent)), x64)
    exponent = lax.select(regular, exponent, lax.zeros_like(exponent))
    return lax.convert(mantissa, in_dt), lax.convert(exponent, exp_dt)


def _scale(v: Any, e: Any) -> Any:
    """v * 2**e for integral float64 |e| <= 3069, in three power-of-two factors of one sign
    (exact, and no factor overflows or underflows where the product does not)."""
    for parts in (3, 2, 1):
        piece = lax.floor(lax.div(e, float(parts)))
        v = lax.mul(v, lax.pow(2.0, piece))
        e = lax.sub(e, piece)
    return v


def logaddexp2(x1: Any, x2: Any) -> Any:
    """log2(2**x1 + 2**x2), computed from the larger argument (no overflow)."""
    x1, x2 = _operands(np.logaddexp2, x1, x2)
    m = lax.max(x1, x2)
    safe_m = lax.select(lax.isfinite(m), m, lax.zeros_like(m))
    powers = lax.add(lax.exp(lax.mul(lax.sub(x1, safe_m), _LN2)),
                     lax.exp(lax.mul(lax.sub(x2, safe_m), _LN2)))
    return lax.add(lax.div(lax.log(powers), _LN2), safe_m)


def float_power(x1: Any, x2: Any) -> Any:
    """x1 ** x2 computed in float64 (complex128), as NumPy's float_power."""
    x1, x2 = _operands(np.float_power, x1, x2)
    return lax.pow(x1, x2)


UFUNC_COMPOSITES.update({
    np.copysign: copysign, np.fmod: fmod, np.heaviside: heaviside, np.ldexp: ldexp,
    np.frexp: frexp, np.logaddexp2: logaddexp2, np.float_power: float_power,
})


@implements(np.sinc)
def sinc(x):
    """sin(pi x) / (pi x), 1 at 0: NumPy's steps (0 replaced by 1e-20)."""
    x = asarray(x)
    from ._functions import where
    y = call_ufunc(np.multiply, np.pi, where(call_ufunc(np.equal, x, 0), 1.0e-20, x))
    return call_ufunc(np.true_divide, call_ufunc(np.sin, y), y)
