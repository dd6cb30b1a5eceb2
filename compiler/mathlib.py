"""Vectorisable transcendental functions for the loops that the compiler generates.

Numba lowers `math.exp`, `np.tanh`, ... to scalar libm calls, and LLVM's loop vectoriser
cannot vectorise a loop that calls them (the llvmlite wheels have no SVML). The functions
here are written instead as straight-line, branch-free scalar code: range reduction, a
minimax polynomial, and explicit `select`s for the special cases. Inlined into a loop,
they let LLVM vectorise the whole loop body, as XLA's and Sleef's functions do. Bit
manipulation and the few LLVM operations used (compiler/mathlib_ops.py: fmuladd, rint,
floor, fabs, copysign, ...) all have vector forms.

Every function exists for float32 and float64 (`tf_exp_f32`, `tf_exp_f64`, ...), agrees
with NumPy (scipy.special for `erf` and `logistic`) to a few ulp over the whole float
range, and gives exactly NumPy's answer for NaN, infinities, signed zeros, subnormals,
overflow and underflow. Measured accuracy, speed and the approach are in docs/mathlib.md.

The functions are plain Python over mathlib_ops' operations, and this module imports
neither Numba nor llvmlite's binding: two compilers read them. The direct back end
(compiler/lower_direct.py) translates their source where a kernel calls them; for Numba,
compiler/mathlib_numba.py makes each an `njit(inline="always")` function and each
operation an intrinsic. `MATH_FUNCTIONS`, `SMALL_TRIG`, `OUT_OF_LINE` and `math_globals()`
are the Numba versions (made, and Numba imported, on first use); `PLAIN_FUNCTIONS` and
`PLAIN_SMALL_TRIG` the Python ones, keyed alike by (primitive, dtype) (`pow` takes two
arguments, the others one). The functions are inlined into the caller, so they compile
under its flags: do not use `fastmath` flags beyond `contract` there, since the
special-value handling relies on NaN compares and the range reductions on exact,
unreordered floating-point steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import mathlib_ops as ops
from .mathlib_ops import HAS_FMA

# (and, through __getattr__ below, the Numba tables MATH_FUNCTIONS, SMALL_TRIG, OUT_OF_LINE)
__all__ = ["PLAIN_FUNCTIONS", "PLAIN_SMALL_TRIG", "PRIMITIVES", "SMALL_TRIG_LIMIT",
           "math_globals", "plain_globals"]

PRIMITIVES = ("exp", "expm1", "log", "log1p", "tanh", "logistic", "sin", "cos", "tan",
              "erf", "sinh", "cosh", "arctan", "pow")


def _jit(fn: Callable) -> Callable:
    """Marks a function that kernels inline (each call site gets the function's body, so
    LLVM always sees straight-line code it can vectorise, however large the caller
    grows): compiler/mathlib_numba.py compiles every function of this module so."""
    return fn


# The operations, under the names the functions below use.
_fma, _fma_exact = ops.FMA, ops.FMA_EXACT
_rint, _floor, _fabs, _copysign = ops.RINT, ops.FLOOR, ops.FABS, ops.COPYSIGN
_div, _select = ops.DIV, ops.SELECT
_pow2, _exponent, _significand = ops.POW2, ops.EXPONENT, ops.SIGNIFICAND
_biased_exponent, _integer_significand = ops.BIASED_EXPONENT, ops.INTEGER_SIGNIFICAND
_polyval = ops.POLYVAL
_full_width = ops.full_width


# ---------------------------------------------------------------------------------------
# Coefficients. Minimax polynomials fitted with a Remez exchange in mpmath (60 digits) on
# the reduced intervals below, weighted for relative error, then rounded to the target
# precision; docs/mathlib.md has the fitting recipe. Comments give the approximated
# function, its interval, and the fit's relative error before rounding.

COEFFS = {
    # expm1(r) ~ r + r**2 * P(r), |r| <= ln2/2: 2**-32.0 / 2**-61.7
    "EXPM1": ((0.5, 0.1666666567325592, 0.041666362434625626, 0.008333389647305012,
               0.0013940654462203383, 0.00019845878705382347),
              (0.5, 0.16666666666666677, 0.04166666666666651, 0.008333333333321667,
               0.0013888888888962524, 0.00019841269886037202, 2.4801587172339496e-05,
               2.755724429463473e-06, 2.755740272558071e-07, 2.5109009102603142e-08,
               2.0875330984630077e-09)),
    # log((1+s)/(1-s)) ~ 2s + s * z * P(z), z = s**2 <= 0.02944 (|s| <= 3 - 2 sqrt 2):
    # P's relative error 2**-21.8 / 2**-51.0, of a term below 1% of the result
    "LOG_R": ((0.6666668653488159, 0.3998876214027405, 0.29580608010292053),
              (0.666666666666667, 0.39999999999899116, 0.28571428626132167,
               0.22222211111585474, 0.18182890678170277, 0.1533167374051126,
               0.1461700252770586)),
    # sin(r) ~ r + r**3 * P(r**2), |r| <= pi/4: 2**-27.0 / 2**-64.4
    "SIN": ((-0.1666666567325592, 0.008332678116858006, -0.00019571516895666718),
            (-0.16666666666666666, 0.008333333333333333, -0.0001984126984126873,
             2.7557319221521137e-06, -2.5052106759487664e-08, 1.6058585687249806e-10,
             -7.588573978362723e-13)),
    # cos(r) ~ 1 - r**2/2 + r**4 * P(r**2), |r| <= pi/4: 2**-31.6 / 2**-69.6
    "COS": ((0.0416666641831398, -0.0013888076646253467, 2.4508768547093496e-05),
            (0.041666666666666664, -0.001388888888888889, 2.480158730158668e-05,
             -2.7557319222615765e-07, 2.0876756084047674e-09, -1.1470490940932182e-11,
             4.7469150199780325e-14)),
    # tanh(x) ~ x + x**3 * P(x**2), |x| <= 0.55: 2**-26.8 / 2**-58.7
    "TANH": ((-0.3333333432674408, 0.1333325058221817, -0.05391939729452133,
              0.021316641941666603, -0.006571958772838116),
             (-0.3333333333333333, 0.13333333333333333, -0.05396825396825396,
              0.02186948853614205, -0.008863235527250015, 0.003592127884133654,
              -0.0014558306488768205, 0.0005899792966079668, -0.00023876795946984174,
              9.526535658206215e-05, -3.467869364567418e-05, 8.421183765228082e-06)),
    # arctan(t) ~ t + t**3 * P(t**2), |t| <= tan(pi/8): 2**-27.5 / 2**-57.2
    "ATAN": ((-0.3333333432674408, 0.19999828934669495, -0.14267683029174805,
              0.10749245434999466, -0.06411025673151016),
             (-0.3333333333333333, 0.2, -0.1428571428571427, 0.1111111111107277,
              -0.09090909077272258, 0.07692306308349228, -0.06666606661355727,
              0.058809841801826856, -0.05244926252527645, 0.04613372112671641,
              -0.03603357099642798, 0.017760444273790303)),
    # erf(x) ~ x + x * P(x**2), |x| <= 1: 2**-29.6 / 2**-56.7
    "ERF": ((0.12837916612625122, -0.3761262595653534, 0.1128358542919159,
             -0.026853812858462334, 0.005188327748328447, -0.0008010193705558777,
             7.853862189222127e-05),
            (0.1283791670955126, -0.37612638903183754, 0.11283791670955126,
             -0.026866170645131162, 0.00522397762543304, -0.0008548327021005123,
             0.00012055332720979514, -1.4925636265139868e-05, 1.6461676056214743e-06,
             -1.635747927569749e-07, 1.4706997836584445e-08, -1.154865400768069e-09,
             6.239724251712133e-11)),
    # erfc(x) * exp(x**2) ~ P(t), t = (x - A) / (x + A) for 1 <= x <= A**2, A = 2 (float32)
    # or sqrt(6) (float64), so that t is symmetric about 0: 2**-32.8 / 2**-58.0
    "ERFCX": ((0.25539568066596985, -0.4271858334541321, 0.24165819585323334,
               -0.07897847890853882, 0.003733167191967368, 0.006994093302637339,
               -0.0008514121873304248, -0.0009402455179952085, 6.686201231786981e-05),
              (0.2146263390698206, -0.37687425386567325, 0.2516668374219419,
               -0.1214514028402833, 0.036308131499959824, -0.002268926753232057,
               -0.0028574623139543823, 0.000685538322543744, 0.0002949770177769923,
               -0.00010325194509570453, -4.67062671406141e-05, 1.3409347123063051e-05,
               9.588011479425043e-06, -9.94006224494577e-07, -2.0251516360461866e-06,
               -1.6029290721898687e-07, 3.449340581133077e-07)),
    # (log((1+s)/(1-s)) - 2s - 2s**3/3) / s**5 ~ P(s**2), s**2 <= 0.02944, float64 only (for
    # pow's double-double logarithm): 2**-57.6
    "LOG_TAIL": ((), (0.4, 0.2857142857142937, 0.2222222222165491, 0.1818181833559128,
                      0.15384594943283428, 0.13334805650533124, 0.11706212748989014,
                      0.11723407122093416)),
    # sinh(x) ~ x + x**3 * P(x**2), |x| <= 1: 2**-31.4 / 2**-59.1
    "SINH": ((0.1666666716337204, 0.008333339355885983, 0.00019837771833408624,
              2.8101510451961076e-06),
             (0.16666666666666666, 0.008333333333333333, 0.000198412698412825,
              2.7557319206693126e-06, 2.505211541657406e-08, 1.6057823645133362e-10,
              7.743103722915353e-13)),
}


def _coeffs(name: str, dtype: type) -> tuple:
    """The coefficient tuple `name` as scalars of `dtype` (a Numba compile-time constant)."""
    return tuple(dtype(c) for c in COEFFS[name][dtype is np.float64])


# ---------------------------------------------------------------------------------------
# Payne-Hanek tables for the trigonometric range reduction. For |x| = M * 2**E with M the
# integer significand, x * 2/pi mod 4 (the quadrant and the fraction of it) is
# M * T[E] mod 4, where T[E] = (2**E * 2/pi) mod 4 is stored split into pieces short
# enough that M times each is exact in float64. Indexing by the exponent field makes the
# reduction exact for every finite x, with no branch.

# 2/pi to 1280 binary places (floor(2/pi * 2**1280)); the digits are a mathematical fact.
_TWO_OVER_PI = int(
    "a2f9836e4e441529fc2757d1f534ddc0db6295993c439041fe5163abdebbc561b7246e3a424dd2e006492e"
    "ea09d1921cfe1deb1cb129a73ee88235f52ebb4484e99c7026b45f7e413991d639835339f49c845f8bbdf9"
    "283b1ff897ffde05980fef2f118b5a0a6d1f6d367ecf27cb09b74f463f669e5fea2d7527bac7ebe5f17b3d"
    "0739f78a5292ea6bfb5fb11f8d5d0856033046fc7b6babf0cfbc209af4361d", 16)
_TWO_OVER_PI_BITS = 1280


def _two_over_pi_mod4(exponent: int, frac_bits: int) -> int:
    """floor(((2**exponent * 2/pi) mod 4) * 2**frac_bits), exactly."""
    shift = _TWO_OVER_PI_BITS - exponent - frac_bits
    assert shift >= 0
    return (_TWO_OVER_PI >> shift) & ((1 << (frac_bits + 2)) - 1)


def _f32_trig_table() -> tuple[np.ndarray, ...]:
    """Per float32 exponent field: T as three int32 pieces on a fixed grid (bits 2**1 to
    2**-27, 2**-28 to 2**-53, 2**-54 to 2**-84), so that M times each of the first two is
    exact in float64 and the two products add exactly. int32 holds 31 bits where float32
    holds 24, so three loads do the work of four; and none is a float64, whose load would
    halve the vector width of a float32 loop calling sin or cos."""
    frac = 400
    pieces = np.zeros((3, 256), np.int32)
    for field in range(1, 255):
        t = _two_over_pi_mod4(field - 150, frac)
        pieces[0, field] = t >> (frac - 27)
        pieces[1, field] = (t >> (frac - 53)) & ((1 << 26) - 1)
        pieces[2, field] = (t >> (frac - 84)) & ((1 << 31) - 1)
    return tuple(pieces)


_TRIG_F32_0, _TRIG_F32_1, _TRIG_F32_2 = _f32_trig_table()


def _f64_trig_table() -> tuple[np.ndarray, ...]:
    """Per float64 exponent field: T in 7 pieces of 26 bits on a fixed grid (bits 2**1 to
    2**-24, 2**-25 to 2**-50, ...), so each piece times a 27-bit half of M is exact and
    the products line up on known binary places."""
    frac = 24 + 26 * 6
    pieces = np.zeros((7, 2048))
    for field in range(1, 2047):
        t = _two_over_pi_mod4(field - 1075, frac)
        for j in range(7):
            low_bit = frac - 24 - 26 * j
            pieces[j, field] = math.ldexp((t >> low_bit) & ((1 << 26) - 1), -24 - 26 * j)
    return tuple(pieces)


(_TRIG_F64_0, _TRIG_F64_1, _TRIG_F64_2, _TRIG_F64_3, _TRIG_F64_4, _TRIG_F64_5,
 _TRIG_F64_6) = _f64_trig_table()


# ---------------------------------------------------------------------------------------
# Range reductions for sin, cos and tan: |x| * 2/pi = K + F with K an integer (only
# K mod 4 matters) and |F| <= 1/2, for every finite |x| of normal size (the callers
# answer tinier x directly). Both run in float64 and use only exact products and
# additions whose rounding is relative to the final F, so even the inputs closest to a
# multiple of pi/2 (|F| near 2**-62 for float64) keep full relative precision. Float64
# returns F as an unevaluated sum F_hi + F_lo.

@_jit
def _mod4(y):
    """y minus the nearest multiple of 4 (exact)."""
    return _fma(-4.0, _rint(0.25 * y), y)


@_jit
def _split_at(y, grid):
    """(y rounded to a multiple of `grid`, the exact remainder), for |y / grid| < 2**52."""
    high = _rint(y * (1.0 / grid)) * grid
    return high, y - high


@_jit
def _reduce_f32(a):
    """(F, K) in float64 for a normal float32 a = |x| >= 2**-12 (callers answer smaller x
    directly; T has 48 or more significant bits there). The first two products and their
    sum (below 1, on a 2**-53 grid) are exact; the last product is below 2**-29, and its
    sum rounds relative to F, whose smallest size over all float32 is 2**-29.86 (an
    exhaustive scan). Error below 2**-52 |F| + 2**-60."""
    m = np.float64(_integer_significand(a))
    field = _biased_exponent(a)
    p = (m * 2.0**-27) * np.float64(_TRIG_F32_0[field])  # exact: below 2**26, 2**-27 grid
    k = _rint(p)
    f = (p - k) + (m * 2.0**-53) * np.float64(_TRIG_F32_1[field])  # exact, as said
    k2 = _rint(f)
    f = (f - k2) + (m * 2.0**-84) * np.float64(_TRIG_F32_2[field])
    return f, k + k2


@_jit
def _reduce_f64(a):
    """(F_hi, F_lo, K) for a float64 a = |x| >= 2**-27, F = F_hi + F_lo. M is split into 27 + 26
    bits so that all 13 partial products are exact; they are summed level by level (each
    level a 26-bit binary band), carrying exact high parts up, so cancellation is exact."""
    m = _integer_significand(a)
    field = _biased_exponent(a)
    m_hi = _floor(m * 2.0**-26) * 2.0**26
    m_lo = m - m_hi
    t0, t1, t2 = _TRIG_F64_0[field], _TRIG_F64_1[field], _TRIG_F64_2[field]
    t3, t4, t5, t6 = _TRIG_F64_3[field], _TRIG_F64_4[field], _TRIG_F64_5[field], \
        _TRIG_F64_6[field]
    # Level 0 (grid 2**-24); m_hi * t0 is a multiple of 4 and drops out.
    level0 = _mod4(m_lo * t0) + _mod4(m_hi * t1)
    k = _rint(level0)
    f = level0 - k
    # Level 1 (grid 2**-50): strip integer parts, then the sum with f is exact.
    p, q = m_lo * t1, m_hi * t2
    kp, kq = _rint(p), _rint(q)
    f = f + (p - kp) + (q - kq)
    k = k + kp + kq
    # Levels 2 to 4: the part of each product on the next-higher grid joins that level.
    hi_a, g = _split_at(m_lo * t2, 2.0**-50)
    hi_b, g_b = _split_at(m_hi * t3, 2.0**-50)
    f = f + hi_a + hi_b
    hi_a, h = _split_at(m_lo * t3, 2.0**-76)
    hi_b, h_b = _split_at(m_hi * t4, 2.0**-76)
    g = g + g_b + hi_a + hi_b
    hi_a, i = _split_at(m_lo * t4, 2.0**-102)
    hi_b, i_b = _split_at(m_hi * t5, 2.0**-102)
    h = h + h_b + hi_a + hi_b
    i = i + i_b + _fma(m_lo, t5, m_hi * t6)
    # Make the limbs disjoint: f on the 2**-50 grid, |g| < 2**-50 on 2**-76, |h| < 2**-76.
    g_hi, g = _split_at(g, 2.0**-50)
    h_hi, h = _split_at(h, 2.0**-76)
    f = f + g_hi
    g = g + h_hi
    k2 = _rint(f)
    f = f - k2
    u = f + g  # |f| > |g| unless f == 0, so u_err is the exact rounding error
    u_err = g - (u - f)
    rest = (u_err + h) + i
    f_hi = u + rest
    return f_hi, (u - f_hi) + rest, k + k2


# The fast reduction for |x| < 2**15 (SMALL_TRIG_LIMIT): Cody-Waite, x - k pi/2 with pi/2
# in pieces of at most 38 significant bits, so that k * piece is exact for every k below
# 2**15 (15 + 38 bits), whether or not the CPU fuses multiply-adds; no table, so no gather.
# The pieces are facts: pi/2 rounded to 38 bits, the rest rounded to 38 bits, and so on.
SMALL_TRIG_LIMIT = 2.0**15
_TWO_OVER_PI_F64 = 0.6366197723675814
_CW_P1 = float.fromhex("0x1.921fb54440000p+0")  # 35 significant bits
_CW_P2 = float.fromhex("0x1.68c234c4c8000p-39")  # 38
_CW_P3 = float.fromhex("-0x1.9d747f23e0000p-79")  # 36
_CW_P4 = float.fromhex("-0x1.976b7ed8fbbadp-118")  # 53; pi/2 - P1 - ... - P4 is 2**-171
_CW_P34 = float.fromhex("-0x1.9d747f23e32edp-79")  # P3 + P4 rounded, for float32


@_jit
def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly, whatever their sizes."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@_jit
def _reduce_small_f32(a):
    """(r, k) in float64 with a - k pi/2 = r (to 2**-52 |r|), for a float32 a = |x| below
    2**15. a - k*P1 is exact (k*P1 is, and the difference is below 1 on a 2**-37 grid);
    the next two steps round once each relative to r, and |r| > 2**-30 for float32 a (the
    smallest over all float32 is 2**-29.86 quarter turns, docs/mathlib.md)."""
    w = np.float64(a)
    k = _rint(w * _TWO_OVER_PI_F64)
    r = _fma(-k, _CW_P1, w)
    r = _fma(-k, _CW_P2, r)
    return _fma(-k, _CW_P34, r), k


# float32 pieces of pi/2 (24, 24 and 24 bits, to 2**-73) for the FMA reduction below.
_CW32_P1 = np.float32(float.fromhex("0x1.921fb6p+0"))
_CW32_P2 = np.float32(float.fromhex("-0x1.777a5cp-25"))
_CW32_P3 = np.float32(float.fromhex("-0x1.ee59dap-50"))
_TWO_OVER_PI_F32 = np.float32(_TWO_OVER_PI_F64)


@_jit
def _reduce_small_f32_fma(a):
    """(r_hi, r_lo, k) in float32 with a - k pi/2 = r_hi + r_lo, for a float32 a = |x|
    below 2**15, on a CPU with FMA: all eight lanes of a float32 vector, where the float64
    reduction takes two registers per step. fma(-k, P1, a) is exact (k*P1 is exact inside
    the FMA, and a - k*P1 lies on a 2**-23 grid below 1, or a's 2**-24 grid for k = 1);
    k*P2 is split exactly by an FMA and subtracted with TwoSum; what is rounded is the
    tail, below 2**-34, against |r| >= 2**-27.8 (docs/mathlib.md)."""
    k = _rint(a * _TWO_OVER_PI_F32)
    r = _fma_exact(-k, _CW32_P1, a)
    p = k * _CW32_P2
    p_err = _fma_exact(k, _CW32_P2, -p)
    s, e = _two_sum(r, -p)
    tail = (e - p_err) - k * _CW32_P3
    r_hi = s + tail
    return r_hi, tail - (r_hi - s), k


@_jit
def _reduce_small_f64(a):
    """(r_hi, r_lo, k) with a - k pi/2 = r_hi + r_lo, for a float64 a = |x| below 2**15.
    a - k*P1 is exact as in float32; k*P2 and k*P3 are exact and subtracted with TwoSum,
    so the only roundings are of the tails (below 2**-100 |r| for |r| >= 2**-62)."""
    k = _rint(a * _TWO_OVER_PI_F64)
    r = _fma(-k, _CW_P1, a)
    s, e = _two_sum(r, -k * _CW_P2)
    s, e2 = _two_sum(s, -k * _CW_P3)
    tail = (e + e2) - k * _CW_P4
    r_hi = s + tail
    return r_hi, tail - (r_hi - s), k


@_jit
def _quadrant(k):
    """k mod 4 for an integral float64 k."""
    return _fma(-4.0, _floor(0.25 * k), k)


def _cos_coeffs(dtype: type) -> tuple:
    """cos(r) ~ P(r**2): the fitted coefficients behind the fixed 1 - r**2/2."""
    return (dtype(1.0), dtype(-0.5)) + _coeffs("COS", dtype)


_SIN_F32, _COS_F32 = _coeffs("SIN", np.float32), _cos_coeffs(np.float32)
_SIN_F32_WIDE = tuple(np.float64(c) for c in _SIN_F32)
_COS_F32_WIDE = tuple(np.float64(c) for c in _COS_F32)
_SIN_F64, _COS_F64 = _coeffs("SIN", np.float64), _cos_coeffs(np.float64)
_PIO2_HI, _PIO2_LO = 1.5707963267948966, 6.123233995736766e-17


@_jit
def _sin_cos_poly(r, c_sin, c_cos):
    """(sin r, cos r) for |r| <= pi/4, in r's type."""
    z = r * r
    return _fma(r * z, _polyval(z, c_sin), r), _polyval(z, c_cos)


@_jit
def _sin_cos_f32(a):
    """(sin r, cos r, q) in float32 for a normal float32 a = |x| (reduced even below pi/4:
    the table is exact there too, and one path is cheaper than a select between two).
    Only the reduction runs in float64; r leaves it as float32 r + r_lo, the tail entering
    to first order, so the rest of a float32 loop keeps its 8 lanes per instruction."""
    f, k = _reduce_f32(a)
    return _sin_cos_f32_of(f * (math.pi / 2), k)


@_jit
def _sin_cos_f32_of(r, k):
    """(sin r, cos r, q) in float32 for a float64 r from a reduction: r leaves float64 as
    float32 r + r_lo, the tail entering to first order."""
    r_hi = np.float32(r)
    r_lo = np.float32(r - np.float64(r_hi))
    s, c = _sin_cos_poly(r_hi, _SIN_F32, _COS_F32)
    return _fma(c, r_lo, s), _fma(-s, r_lo, c), np.float32(_quadrant(k))


@_jit
def _sin_cos_f32_wide(a):
    """(sin r, cos r, q) in float64 for a normal float32 a = |x|, for tan: its quotient
    would add the float32 roundings of both."""
    f, k = _reduce_f32(a)
    s, c = _sin_cos_poly(f * (math.pi / 2), _SIN_F32_WIDE, _COS_F32_WIDE)
    return s, c, _quadrant(k)


@_jit
def _sin_cos_f64(a):
    """(sin r, cos r, q) for a float64 a = |x| > 2**-27; r is carried as r + r_lo, and the
    tail enters to first order (sin(r + d) ~ sin r + d cos r)."""
    f_hi, f_lo, k = _reduce_f64(a)
    r = f_hi * _PIO2_HI
    r_lo = _fma(f_hi, _PIO2_HI, -r) + _fma(f_lo, _PIO2_HI, f_hi * _PIO2_LO)
    r_hi = r + r_lo
    r_lo = r_lo - (r_hi - r)
    s, c = _sin_cos_poly(r_hi, _SIN_F64, _COS_F64)
    return _fma(c, r_lo, s), _fma(-s, r_lo, c), _quadrant(k)


@_jit
def _sin_cos_small_f32_portable(a):
    """_sin_cos_f32 for a < SMALL_TRIG_LIMIT, by the table-free reduction in float64."""
    r, k = _reduce_small_f32(a)
    return _sin_cos_f32_of(r, k)


@_jit
def _sin_cos_small_f32_fma(a):
    """_sin_cos_f32 for a < SMALL_TRIG_LIMIT, by the float32 FMA reduction."""
    r_hi, r_lo, k = _reduce_small_f32_fma(a)
    s, c = _sin_cos_poly(r_hi, _SIN_F32, _COS_F32)
    quadrant = _fma(np.float32(-4.0), _floor(np.float32(0.25) * k), k)
    return _fma(c, r_lo, s), _fma(-s, r_lo, c), quadrant


_sin_cos_small_f32 = _sin_cos_small_f32_fma if HAS_FMA else _sin_cos_small_f32_portable


@_jit
def _sin_cos_small_f32_wide(a):
    """_sin_cos_f32_wide for a < SMALL_TRIG_LIMIT, by the table-free reduction."""
    r, k = _reduce_small_f32(a)
    s, c = _sin_cos_poly(r, _SIN_F32_WIDE, _COS_F32_WIDE)
    return s, c, _quadrant(k)


@_jit
def _sin_cos_small_f64(a):
    """_sin_cos_f64 for a < SMALL_TRIG_LIMIT, by the table-free reduction."""
    r_hi, r_lo, k = _reduce_small_f64(a)
    s, c = _sin_cos_poly(r_hi, _SIN_F64, _COS_F64)
    return _fma(c, r_lo, s), _fma(-s, r_lo, c), _quadrant(k)


# ---------------------------------------------------------------------------------------
# The functions, written once and instantiated per dtype: every constant is a scalar of
# that dtype, so float32 code never widens to float64 (the trig reduction, tan and pow
# do, on purpose, as their comments say; none loads a float64, which would narrow the
# caller's whole loop).

_CONSTANTS = {
    # name: (float32, float64)
    "EXP_LO": (-104.0, -746.0),  # exp underflows to 0 below (clamp; result rounds to 0)
    "EXP_HI": (89.0, 710.0),  # exp overflows to inf above (clamp; result rounds to inf)
    "EXPM1_LO": (-20.0, -45.0),  # expm1 rounds to -1 below
    "TANH_CLAMP": (10.0, 20.0),  # tanh rounds to +-1 above
    "HYP_CLAMP": (90.0, 711.0),  # sinh, cosh overflow above
    "ERF_A": (2.0, math.sqrt(6.0)),  # erf rounds to +-1 above ERF_A**2
    # scipy's expit(x) = 1/(1 + exp(-x)) is exactly 0 where exp(-x) overflows
    "EXPIT_ZERO_AT": (-88.72283935546875, -709.7827128933841),
    "MIN_NORMAL": (2.0**-126, 2.0**-1022),
    "TRIG_TINY": (2.0**-12, 2.0**-27),  # below, sin x and tan x round to x, cos x to 1
    "SUBNORMAL_BITS": (24.0, 54.0),  # scaling that makes any subnormal normal
    "LN2_HI": (0.693359375, 0.6931471803691238),  # few bits, so n * LN2_HI is exact
    "LN2_LO": (-2.1219444e-4, 1.9082149292705877e-10),
    "PIO2_HI": (1.5707963705062866, 1.5707963267948966),
    "PIO2_LO": (-4.371138828673793e-08, 6.123233995736766e-17),
    "PIO4_HI": (0.7853981852531433, 0.7853981633974483),
    "PIO4_LO": (-2.1855694143368964e-08, 3.061616997868383e-17),
}
_MID_N = 60.0  # expm1 uses 2**n (q + 1) - 1 up to this n, then just the exponential


@_jit
def max_nan_to(x, lo):
    """max(x, lo), with NaN mapped to lo (keeps junk out of integer conversions)."""
    return _select(x > lo, x, lo)


@_jit
def min_nan_to(x, hi):
    """min(x, hi), with NaN kept as NaN."""
    return _select(x > hi, hi, x)


def _build(dtype: type) -> tuple[dict[str, Callable], ...]:
    """The njit scalar functions for `dtype`, keyed by primitive name; the kernels behind
    them that pow reuses; and the table-free trigonometric functions for small |x|."""
    suffix = "f32" if dtype is np.float32 else "f64"
    lim = {k: dtype(v[dtype is np.float64]) for k, v in _CONSTANTS.items()}
    zero, quarter, half, one, two = (dtype(v) for v in (0.0, 0.25, 0.5, 1.0, 2.0))
    inf, nan = dtype(np.inf), dtype(np.nan)
    log2e, sqrt2 = dtype(1 / math.log(2)), dtype(math.sqrt(2))
    tan_pi8, tan_3pi8 = dtype(math.tan(math.pi / 8)), dtype(math.tan(3 * math.pi / 8))
    exp_lo, exp_hi, expm1_lo = lim["EXP_LO"], lim["EXP_HI"], lim["EXPM1_LO"]
    ln2_hi, ln2_lo, mid_n = lim["LN2_HI"], lim["LN2_LO"], dtype(_MID_N)
    min_normal, sub_bits = lim["MIN_NORMAL"], lim["SUBNORMAL_BITS"]
    sub_scale = dtype(2.0 ** float(sub_bits))
    tanh_clamp, hyp_clamp, erf_a = lim["TANH_CLAMP"], lim["HYP_CLAMP"], lim["ERF_A"]
    erf_clamp, expit_zero_at = erf_a * erf_a, lim["EXPIT_ZERO_AT"]
    tanh_small = dtype(0.55)  # below, tanh's polynomial; above, 1 - 2 / (exp(2|x|) + 1)
    pio2_hi, pio2_lo, pio4_hi, pio4_lo = (lim[k] for k in ("PIO2_HI", "PIO2_LO", "PIO4_HI",
                                                           "PIO4_LO"))
    c_expm1, c_log = _coeffs("EXPM1", dtype), _coeffs("LOG_R", dtype)
    c_tanh, c_atan, c_erf, c_erfcx, c_sinh = (
        _coeffs(k, dtype) for k in ("TANH", "ATAN", "ERF", "ERFCX", "SINH"))
    sin_cos = _sin_cos_f32 if dtype is np.float32 else _sin_cos_f64
    tan_parts = _sin_cos_f32_wide if dtype is np.float32 else _sin_cos_f64
    sin_cos_small = _sin_cos_small_f32 if dtype is np.float32 else _sin_cos_small_f64
    tan_parts_small = _sin_cos_small_f32_wide if dtype is np.float32 else _sin_cos_small_f64
    trig_tiny = lim["TRIG_TINY"]
    funcs = {}

    def public(fn: Callable) -> Callable:
        """Name `fn` tf_<name>_<suffix>, compile it, and record it under <name>."""
        name = fn.__name__.removeprefix("tf_")
        fn.__name__ = fn.__qualname__ = f"tf_{name}_{suffix}"
        funcs[name] = _jit(fn)
        return funcs[name]

    @_jit
    def exp_parts(x):
        """(q, n) with exp(x) = (1 + q) * 2**n, |q| < 0.42, for clamped, non-NaN x."""
        n = _rint(x * log2e)
        r = _fma(n, -ln2_hi, x)  # exact: n * ln2_hi has few bits
        r = _fma(n, -ln2_lo, r)
        return _fma(r * r, _polyval(r, c_expm1), r), n

    @_jit
    def scale(v, n):
        """v * 2**n with a single rounding, for |n| up to twice the exponent range."""
        n_half = _floor(n * half)
        return v * _pow2(n_half) * _pow2(n - n_half)

    # exp and expm1: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 in two pieces), then
    # exp(x) = (1 + expm1(r)) * 2**n. Clamping x makes the result overflow to inf or
    # round to 0 by itself, and keeps NaN and inf out of the integer conversions.
    @public
    def tf_exp(x):
        """exp(x)."""
        # NaN passes the clamp and reaches q, which carries it through every product (the
        # bit tricks on n make junk, never a trap, and junk * NaN is NaN): no select needed.
        q, n = exp_parts(min_nan_to(_select(x < exp_lo, exp_lo, x), exp_hi))
        return scale(one + q, n)

    @public
    def tf_expm1(x):
        """exp(x) - 1, accurate near 0."""
        q, n = exp_parts(min_nan_to(max_nan_to(x, expm1_lo), exp_hi))
        t = _pow2(_select(n < mid_n, n, mid_n))
        # 2**n q + (2**n - 1): both terms exact or nearly, no cancellation of rounded values
        near, far = _fma(t, q, t - one), scale(one + q, n)
        y = _select(n <= mid_n, near, far)
        y = _select(n == zero, q, y)  # keeps subnormals exact
        return _select(x == x, _select(x == zero, x, y), x)  # -0 -> -0

    # log and log1p: x = m 2**e with m in [sqrt(1/2), sqrt(2)), then log(m) from a short
    # polynomial in s = (m - 1) / (m + 1). log1p feeds 1 + x's rounding error in as c.
    @_jit
    def split(x):
        """(m, e) with x = m * 2**e and m in [sqrt(1/2), sqrt(2)), for finite x > 0."""
        tiny = x < min_normal
        xs = _select(tiny, x * sub_scale, x)
        e = _exponent(xs) - _select(tiny, sub_bits, zero)
        m = _significand(xs)
        big = m > sqrt2
        return _select(big, m * half, m), _select(big, e + one, e)

    @_jit
    def log_core(m, e, c):
        """log(m * 2**e) + c for m in [sqrt(1/2), sqrt(2)) and a tiny correction c.
        With f = m - 1 and s = f / (2 + f), log(m) = f - f**2/2 + s (f**2/2 + R(s**2)),
        where every term after f is small, so f's exactness carries the result."""
        f = m - one
        s = _div(f, two + f)
        z = s * s
        r = z * _polyval(z, c_log)
        hfsq = half * f * f
        return _fma(e, ln2_hi, f - (hfsq - _fma(s, hfsq + r, _fma(e, ln2_lo, c))))

    @public
    def tf_log(x):
        """Natural logarithm."""
        m, e = split(x)
        y = log_core(m, e, zero)
        y = _select(x < inf, y, x)
        return _select(x > zero, y, _select(x == zero, -inf, nan))

    @public
    def tf_log1p(x):
        """log(1 + x), accurate near 0."""
        u = one + x
        v = u - one
        err = (one - (u - v)) + (x - v)  # 1 + x == u + err exactly (TwoSum)
        m, e = split(u)
        y = log_core(m, e, _div(err, u))
        y = _select(x < inf, y, x)
        y = _select(x > -one, y, _select(x == -one, -inf, nan))
        return _select(x == zero, x, y)

    # tanh: a polynomial near 0, where 1 - 2/(exp(2|x|) + 1) would cancel; past 0.55 that
    # form loses under half an ulp, and saturates to 1 by itself.
    @public
    def tf_tanh(x):
        """Hyperbolic tangent."""
        a = _fabs(x)
        z = a * a
        small = _fma(a * z, _polyval(z, c_tanh), a)
        e = tf_exp(two * min_nan_to(a, tanh_clamp))
        big = one - _div(two, e + one)
        return _copysign(_select(a < tanh_small, small, big), x)

    @public
    def tf_logistic(x):
        """The logistic sigmoid 1 / (1 + exp(-x)) (scipy.special.expit)."""
        e = tf_exp(-_fabs(x))  # at most 1: no overflow, subnormals where they belong
        y = _div(_select(x >= zero, one, e), one + e)
        return _select(x <= expit_zero_at, zero, y)

    # sinh and cosh: E +- 1/(4E) with E = exp(|x|)/2 scaled by 2**(n-1) directly, so that
    # E stays finite up to the true overflow point; sinh uses a polynomial below 1, where
    # the difference would cancel.
    @_jit
    def half_exp(a):
        """exp(a) / 2 for 0 <= a <= hyp_clamp, rounded once."""
        q, n = exp_parts(a)
        return scale(one + q, n - one)

    @public
    def tf_sinh(x):
        """Hyperbolic sine."""
        a = _fabs(x)
        big = half_exp(min_nan_to(a, hyp_clamp))
        big = big - _div(quarter, big)
        small = _fma(a * (a * a), _polyval(a * a, c_sinh), a)
        y = _copysign(_select(a < one, small, big), x)
        return _select(x == x, y, x)

    @public
    def tf_cosh(x):
        """Hyperbolic cosine."""
        e = half_exp(min_nan_to(_fabs(x), hyp_clamp))
        y = e + _div(quarter, e)
        return _select(x == x, y, x)

    # erf: x + x P(x**2) below 1; above, 1 - exp(-x**2) erfcx(x) with erfcx = erfc exp(x**2)
    # smooth enough for one polynomial in t = (x - A)/(x + A). The rounding of x**2 costs
    # little there, because erfc(x) is small where x**2 is large.
    @public
    def tf_erf(x):
        """The error function (scipy.special.erf)."""
        a = _fabs(x)
        small = _fma(a, _polyval(a * a, c_erf), a)
        ac = min_nan_to(a, erf_clamp)
        t = _div(ac - erf_a, ac + erf_a)
        big = one - tf_exp(-(ac * ac)) * _polyval(t, c_erfcx)
        y = _copysign(_select(a < one, small, big), x)
        return _select(x == x, y, x)

    @public
    def tf_arctan(x):
        """Inverse tangent, in (-pi/2, pi/2)."""
        a = _fabs(x)
        big, mid = a > tan_3pi8, a > tan_pi8
        # arctan(a) = base + arctan(t), |t| <= tan(pi/8), with t = -1/a or (a-1)/(a+1)
        am1, ap1 = a - one, a + one
        t = _div(_select(big, -one, _select(mid, am1, a)), _select(big, a, _select(mid, ap1, one)))
        base_hi = _select(big, pio2_hi, _select(mid, pio4_hi, zero))
        base_lo = _select(big, pio2_lo, _select(mid, pio4_lo, zero))
        z = t * t
        y = base_hi + (t + _fma(t * z, _polyval(z, c_atan), base_lo))
        return _copysign(y, x)

    # sin, cos, tan: sin and cos of the reduced argument r, then the quadrant q picks and
    # signs them. float32 reduces in float64 and evaluates in float32.
    three = dtype(3.0)

    @_jit
    def sin_of(s, c, q):
        """sin x from sin and cos of its reduced argument and quadrant q."""
        y = _select((q == one) | (q == three), c, s)
        return _select(q >= two, -y, y)

    @_jit
    def cos_of(s, c, q):
        """cos x from sin and cos of its reduced argument and quadrant q."""
        y = _select((q == one) | (q == three), s, c)
        return _select((q == one) | (q == two), -y, y)

    def trig(sin_cos: Callable, tan_parts: Callable) -> tuple[Callable, ...]:
        """sin, cos and tan over a reduction (sin r, cos r, quadrant) of |x|."""
        def tf_sin(x):
            """Sine."""
            a = _fabs(x)
            s, c, q = sin_cos(a)
            y = sin_of(s, c, q) * _copysign(one, x)  # sin is odd
            y = _select(a < trig_tiny, x, y)  # also keeps zeros and subnormals exact
            return _select(a < inf, y, x - x)

        def tf_cos(x):
            """Cosine."""
            a = _fabs(x)
            s, c, q = sin_cos(a)
            y = _select(a < trig_tiny, one, cos_of(s, c, q))
            return _select(a < inf, y, x - x)

        def tf_tan(x):
            """Tangent."""
            a = _fabs(x)
            s, c, q = tan_parts(a)  # float64 for float32: the quotient is rounded once
            odd = (q == 1.0) | (q == 3.0)
            y = dtype(_div(_select(odd, -c, s), _select(odd, s, c))) * _copysign(one, x)
            y = _select(a < trig_tiny, x, y)
            return _select(a < inf, y, x - x)
        return tf_sin, tf_cos, tf_tan

    for fn in trig(sin_cos, tan_parts):
        public(fn)
    # The same for |x| < SMALL_TRIG_LIMIT (and NaN, inf) only, without table lookups: a
    # caller uses them where it can redo the elements with larger |x| (trig_large).
    small = {}
    for fn in trig(sin_cos_small, tan_parts_small):
        name = fn.__name__.removeprefix("tf_")
        fn.__name__ = fn.__qualname__ = f"tf_{name}_small_{suffix}"
        small[name] = _jit(fn)
    limit = dtype(SMALL_TRIG_LIMIT)

    def tf_trig_large(x):
        """Whether x is finite with |x| >= SMALL_TRIG_LIMIT: the _small functions' answer
        for it is wrong, and the caller must use the exact ones."""
        a = _fabs(x)
        return (a >= limit) & (a < inf)
    tf_trig_large.__name__ = tf_trig_large.__qualname__ = f"tf_trig_large_{suffix}"
    small["trig_large"] = _jit(tf_trig_large)

    return funcs, {"split": split, "log_core": log_core, "exp_parts": exp_parts,
                   "scale": scale}, small


_FUNCTIONS, _KERNELS, _SMALL = {}, {}, {}
for _dtype in (np.float32, np.float64):
    _FUNCTIONS[_dtype.__name__], _KERNELS[_dtype.__name__], _SMALL[_dtype.__name__] = \
        _build(_dtype)


# ---------------------------------------------------------------------------------------
# pow: |x|**y = exp(y log|x|), then C99's (NumPy's) sign rule and exact cases.

@_jit
def _pow_finish(x, y, r):
    """x**y from r = exp(y log|x|), all in float64: the sign for odd integer y and a
    negative x (or -0), NaN for a negative finite x and a non-integer y, and pow(x, 0) =
    pow(1, y) = pow(-1, +-inf) = 1 even where r is NaN."""
    y_odd = (_floor(y) == y) & (_floor(y * 0.5) * 2.0 != y)  # false for +-inf and NaN
    r = _select(y_odd & (_copysign(1.0, x) < 0.0), -r, r)
    r = _select((x < 0.0) & (x > -math.inf) & (_floor(y) != y), math.nan, r)
    r = _select((_fabs(x) == 1.0) & (_fabs(y) == math.inf), 1.0, r)
    return _select((y == 0.0) | (x == 1.0), 1.0, r)


_split_f64, _log_core_f64, _scale_f64 = (_KERNELS["float64"][k] for k in ("split", "log_core",
                                                                          "scale"))
_EXPM1_F64 = _coeffs("EXPM1", np.float64)


@_jit
def _log2_f64(a):
    """log2(a) for float64 a >= 0 (or NaN); exact for powers of two."""
    m, e = _split_f64(a)
    y = e + _log_core_f64(m, 0.0, 0.0) * (1 / math.log(2))
    y = _select(a < math.inf, y, a)
    return _select(a > 0.0, y, _select(a == 0.0, -math.inf, math.nan))


@_jit
def _exp2_f64(w):
    """2**w for float64 w; exact for integers (so exact powers round like NumPy's)."""
    wc = min_nan_to(max_nan_to(w, -2000.0), 2000.0)  # past every overflow, within scale
    n = _rint(wc)
    r = (wc - n) * math.log(2)
    y = _scale_f64(1.0 + _fma(r * r, _polyval(r, _EXPM1_F64), r), n)
    return _select(w == w, y, w)


def tf_pow_f32(x, y):
    """x ** y for float32, computed in float64: y log2|x| is then exact enough that the
    one rounding to float32 at the end dominates the error."""
    xw, yw = np.float64(x), np.float64(y)
    return np.float32(_pow_finish(xw, yw, _exp2_f64(yw * _log2_f64(_fabs(xw)))))


_FUNCTIONS["float32"]["pow"] = _jit(tf_pow_f32)

# float64 needs log2|x| to about 2**-64 (|y log2|x|| reaches 1075, and each of its ulps is
# an ulp of the result), so it is carried as a double-double: a hi + lo pair whose
# products come error-free from _fma_exact.
_LOG_TAIL_F64 = _coeffs("LOG_TAIL", np.float64)
_TWO_THIRDS_HI, _TWO_THIRDS_LO = 0.6666666666666666, 3.700743415417188e-17
_LOG2E_HI, _LOG2E_LO = 1.4426950408889634, 2.0355273740931033e-17


@_jit
def _two_prod(a, b):
    """(p, err) with p = fl(a*b) and p + err = a*b exactly."""
    p = a * b
    return p, _fma_exact(a, b, -p)


@_jit
def _log2_dd(a):
    """log2(a) as hi + lo for a finite float64 a > 0, exact for powers of two. With
    s = f / (2 + f), ln(1 + f) = 2s + 2s**3/3 + s**5 P(s**2); s and the s**3 term are
    double-doubles, the rest is below 2**-12 of the result."""
    m, e = _split_f64(a)
    f = m - 1.0
    t = 2.0 + f
    t_lo = f - (t - 2.0)  # 2 + f == t + t_lo exactly
    s = _div(f, t)
    p, p_err = _two_prod(s, t)
    s_lo = _div(((f - p) - p_err) - s * t_lo, t)
    z, z_err = _two_prod(s, s)
    c, c_err = _two_prod(z, s)
    c_lo = c_err + z_err * s + 3.0 * z * s_lo  # s**3 == c + c_lo
    g, g_err = _two_prod(_TWO_THIRDS_HI, c)
    g_lo = g_err + _TWO_THIRDS_HI * c_lo + _TWO_THIRDS_LO * c
    ln_hi = 2.0 * s + g  # |2s| > |g|, so the next line is its exact error
    ln_lo = (g - (ln_hi - 2.0 * s)) + (2.0 * s_lo + g_lo + z * z * s * _polyval(z, _LOG_TAIL_F64))
    l2, l2_err = _two_prod(ln_hi, _LOG2E_HI)
    l2_lo = l2_err + (ln_hi * _LOG2E_LO + ln_lo * _LOG2E_HI)
    hi = e + l2  # |l2| <= 1/2 <= |e| unless e == 0: exact error below
    return hi, (l2 - (hi - e)) + l2_lo


@_jit
def _exp2_dd(w, w_lo):
    """2**(w + w_lo) for float64 w (w_lo tiny); exact for integer w and w_lo == 0."""
    wc = min_nan_to(max_nan_to(w, -2000.0), 2000.0)  # past every overflow, within scale
    n = _rint(wc)
    r = ((wc - n) + w_lo) * math.log(2)
    return _scale_f64(1.0 + _fma(r * r, _polyval(r, _EXPM1_F64), r), n)


def tf_pow_f64(x, y):
    """x ** y for float64: exp2(y log2|x|) with y log2|x| as a double-double."""
    a = _fabs(x)
    l_hi, l_lo = _log2_dd(a)
    w, w_err = _two_prod(y, l_hi)
    r = _exp2_dd(w, _select(_fabs(w) < 2000.0, w_err + y * l_lo, 0.0))
    # |x| = 0 or inf, or y = +-inf: |x|**y is 0 or inf by the sign of y log|x|
    limit = _select((a > 1.0) == (y > 0.0), math.inf, 0.0)
    edge = ((a == 0.0) | (a == math.inf) | (_fabs(y) == math.inf)) & (a == a) & (y == y)
    r = _select(edge, limit, _select((w == w) & (a == a), r, math.nan))
    return _pow_finish(x, y, r)


_FUNCTIONS["float64"]["pow"] = _jit(tf_pow_f64)


PLAIN_FUNCTIONS: dict[tuple[str, str], Callable] = {
    (name, dtype): fn for dtype, funcs in _FUNCTIONS.items() for name, fn in funcs.items()}


# sin, cos, tan for |x| < SMALL_TRIG_LIMIT, NaN and inf (Cody-Waite, no table), and the
# test `trig_large` for the rest, keyed like PLAIN_FUNCTIONS: ("sin", "float32"), ...,
# ("trig_large", "float32"). A loop that uses them redoes the elements where trig_large
# holds with the exact functions (compiler/trig_fast_path.py).
PLAIN_SMALL_TRIG: dict[tuple[str, str], Callable] = {
    (name, dtype): fn for dtype, funcs in _SMALL.items() for name, fn in funcs.items()}


def plain_globals() -> dict[str, Callable]:
    """math_globals()'s names, bound to the plain functions (for the direct back end,
    which inlines every call: the `_call` names too)."""
    names = {fn.__name__: fn for table in (PLAIN_FUNCTIONS, PLAIN_SMALL_TRIG)
             for fn in table.values()}
    return {**names, **{f"{fn.__name__}_call": fn for fn in PLAIN_FUNCTIONS.values()}}


def math_globals() -> dict[str, Any]:
    """{function name: Numba function} for the namespace of generated source."""
    from .mathlib_numba import math_globals as numba_globals

    return numba_globals()


def __getattr__(name: str) -> Any:
    """MATH_FUNCTIONS, SMALL_TRIG and OUT_OF_LINE: the Numba versions, made on first use."""
    if name in ("MATH_FUNCTIONS", "SMALL_TRIG", "OUT_OF_LINE"):
        from . import mathlib_numba

        return getattr(mathlib_numba, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
