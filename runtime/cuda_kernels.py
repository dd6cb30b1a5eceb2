"""Device functions that generated CUDA kernels call (the CUDA twins of cpu_kernels.py).

Generated CUDA modules import the helpers they use by name from here, as CPU modules
import from cpu_kernels.py; a name that exists in both computes the same thing. Helpers
that may fail (an index out of range, an integer to a negative power) cannot raise on a
GPU: they set a code in the kernel's `err` flag array instead, and the host raises after
the launch (runtime/cuda.py).

Math functions: numba-cuda compiles `math.*` to libdevice but not every NumPy ufunc on
scalars (np.exp, np.sqrt, np.floor fail to type), so the generated code calls the names
below. In the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) device code runs as Python, where
math.exp(1000.0) raises OverflowError and math.log(0.0) raises ValueError, so there the
same names are NumPy's ufuncs, which return inf and NaN as the GPU does.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
from numba import config, cuda

from . import complex_bodies, linalg_bodies, scalar_bodies
from .special_device import chebyshev, make_digamma, make_i0e, make_i1e, make_log_ndtr, make_zeta

scalar_bodies.register_for_numba()  # its bodies call one another in compiled code

SIMULATOR = bool(config.ENABLE_CUDASIM)
INDEX_ERROR = 1  # the codes the `err` flag array holds
NEGATIVE_POWER = 2
SINGULAR = 3
NOT_POSITIVE_DEFINITE = 4
SMALL_MATRIX_MAX = 32  # the largest order a thread factors (its scratch is local memory)

device = cuda.jit(device=True)

# ---------------------------------------------------------------------------------------
# Math: name -> (math-module function on the GPU, NumPy ufunc in the simulator)

MATH_NAMES = {
    "exp": ("exp", "exp"), "expm1": ("expm1", "expm1"), "log": ("log", "log"),
    "log1p": ("log1p", "log1p"), "sqrt": ("sqrt", "sqrt"), "sin": ("sin", "sin"),
    "cos": ("cos", "cos"), "tan": ("tan", "tan"), "arcsin": ("asin", "arcsin"),
    "arccos": ("acos", "arccos"), "arctan": ("atan", "arctan"), "sinh": ("sinh", "sinh"),
    "cosh": ("cosh", "cosh"), "tanh": ("tanh", "tanh"), "arcsinh": ("asinh", "arcsinh"),
    "arccosh": ("acosh", "arccosh"), "arctanh": ("atanh", "arctanh"), "erf": ("erf", None),
    "arctan2": ("atan2", "arctan2"),
}


def _math_helper(gpu_name: str, numpy_name: str | None):
    """A device function calling math.<gpu_name> (or NumPy's ufunc in the simulator)."""
    if SIMULATOR:
        if numpy_name is None:  # math.erf returns NaN and +-1 without raising
            return getattr(math, gpu_name)
        return getattr(np, numpy_name)
    fn = getattr(math, gpu_name)
    if gpu_name == "atan2":
        return device(lambda y, x: fn(y, x))
    return device(lambda x: fn(x))


for _name, (_gpu, _numpy) in MATH_NAMES.items():
    globals()["cu_" + _name] = _math_helper(_gpu, _numpy)


if SIMULATOR:
    cu_floor, cu_ceil, cu_round = np.floor, np.ceil, np.round
else:
    from numba.cuda import libdevice

    @device
    def cu_floor(x):
        """Floor as a float (math.floor would return an integer)."""
        return libdevice.floor(x)

    @device
    def cu_ceil(x):
        """Ceil as a float."""
        return libdevice.ceil(x)

    @device
    def cu_round(x):
        """Round half to even, as np.round."""
        return libdevice.rint(x)


# scipy.special's functions libdevice has (float32 ones computed in float64). The
# simulator runs SciPy's (math.lgamma raises at the poles, where gammaln is inf).
if SIMULATOR:
    import scipy.special

    cu_erfc, cu_erfinv = scipy.special.erfc, scipy.special.erfinv
    cu_ndtr, cu_ndtri, cu_lgamma = scipy.special.ndtr, scipy.special.ndtri, scipy.special.gammaln
    cu_digamma, cu_log_ndtr = scipy.special.psi, scipy.special.log_ndtr
    cu_zeta, cu_i0e, cu_i1e = scipy.special.zeta, scipy.special.i0e, scipy.special.i1e
else:
    @device
    def cu_erfc(x):
        """scipy.special.erfc."""
        return math.erfc(x)

    @device
    def cu_erfinv(x):
        """scipy.special.erfinv (libdevice in float64)."""
        return libdevice.erfinv(x + 0.0)

    @device
    def cu_ndtr(x):
        """scipy.special.ndtr (libdevice's normcdf, in float64)."""
        return libdevice.normcdf(x + 0.0)

    @device
    def cu_ndtri(x):
        """scipy.special.ndtri (libdevice's normcdfinv, in float64)."""
        return libdevice.normcdfinv(x + 0.0)

    @device
    def cu_lgamma(x):
        """scipy.special.gammaln."""
        return math.lgamma(x)

    # libdevice has no digamma, log_ndtr, i0e, i1e or Hurwitz zeta:
    # runtime/special_device.py's, in float64
    _digamma = device(make_digamma(libdevice.floor))
    _log_ndtr = device(make_log_ndtr(libdevice.floor))
    _zeta = device(make_zeta(libdevice.floor))
    _chebyshev = device(chebyshev)
    _i0e = device(make_i0e(_chebyshev))
    _i1e = device(make_i1e(_chebyshev))

    @device
    def cu_digamma(x):
        """scipy.special.digamma (Cephes' psi)."""
        return _digamma(x + 0.0)

    @device
    def cu_log_ndtr(x):
        """scipy.special.log_ndtr."""
        return _log_ndtr(x + 0.0)

    @device
    def cu_zeta(s, q):
        """Hurwitz's zeta (scipy.special.zeta(s, q))."""
        return _zeta(s + 0.0, q + 0.0)

    @device
    def cu_i0e(x):
        """scipy.special.i0e."""
        return _i0e(x + 0.0)

    @device
    def cu_i1e(x):
        """scipy.special.i1e."""
        return _i1e(x + 0.0)


# ---------------------------------------------------------------------------------------
# Complex math: cmath on the GPU (NumPy's ufuncs in the simulator). cmath has no expm1 or
# log1p: runtime/complex_bodies.py writes them with the real ones (the CPU's own).

CMATH_NAMES = {
    "exp": "exp", "log": "log", "sqrt": "sqrt", "sin": "sin", "cos": "cos", "tan": "tan",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh",
    "tanh": "tanh", "arcsinh": "asinh", "arccosh": "acosh", "arctanh": "atanh",
}


def _cmath_helper(gpu_name: str, numpy_name: str):
    if SIMULATOR:
        return getattr(np, numpy_name)
    fn = getattr(cmath, gpu_name)
    return device(lambda z: fn(z))


for _name, _gpu in CMATH_NAMES.items():
    globals()["cz_" + _name] = _cmath_helper(_gpu, _name)


cz_expm1 = complex_bodies.complex_expm1 if SIMULATOR else device(complex_bodies.complex_expm1)
cz_log1p = complex_bodies.complex_log1p if SIMULATOR else device(complex_bodies.complex_log1p)
complex_divide = (complex_bodies.complex_divide if SIMULATOR
                  else device(complex_bodies.complex_divide))


@device
def cz_pow(z, w):
    """z ** w = exp(w log z), with 0 ** w = 0 for Re w > 0 (and 1 for w = 0), as NumPy."""
    if w == 0:
        return complex(1.0, 0.0)
    if z == 0:
        return complex(0.0, 0.0) if w.real > 0 and w.imag == 0 else complex(math.nan,
                                                                              math.nan)
    return cmath.exp(w * cmath.log(z))


# ---------------------------------------------------------------------------------------
# Random numbers, NaN-propagating max/min, integer powers (runtime/scalar_bodies.py, the
# CPU kernels' too)

mix64 = device(scalar_bodies.mix64)
rng_word = device(scalar_bodies.rng_word)
unit64 = device(scalar_bodies.unit64)
unit32 = device(scalar_bodies.unit32)
split_key = device(scalar_bodies.split_key)
fmax = device(scalar_bodies.fmax)
fmin = device(scalar_bodies.fmin)
ipow = device(scalar_bodies.ipow)
clamp_start = device(scalar_bodies.clamp_start)


@device
def rng_normal(base, i):
    """The i-th standard normal draw, as float64 (libdevice's math)."""
    u1, u2 = scalar_bodies.normal_units(base, i)
    return cu_sqrt(-2.0 * cu_log(u1)) * cu_cos(scalar_bodies.TWO_PI * u2)  # noqa: F821


@device
def ipow_checked(base, exp, err):
    """np.power on integers; a negative exponent sets NEGATIVE_POWER in err (NumPy raises)."""
    if exp < 0:
        err[0] = NEGATIVE_POWER
        return base - base
    return ipow(base, exp)


@device
def take_index(i, n, err):
    """An index as np.take reads it: negative counts from the end; out of range sets
    INDEX_ERROR in err (the host raises IndexError after the launch) and reads 0."""
    if i < 0:
        i += n
    if i < 0 or i >= n:
        err[0] = INDEX_ERROR
        return 0
    return i



# ---------------------------------------------------------------------------------------
# Accurate sums (docs/reliability.md, "Accuracy of reductions"): a thread's running sum
# of n terms errs by up to n roundoffs; with the rounding error of each addition carried
# into the next one (Kahan's scheme, with Knuth's branch-free TwoSum), by about two,
# whatever n (up to a second-order n u^2 term). In the input's dtype: float64 arithmetic is
# slow on many GPUs. (The CPU's comp_add keeps its total in float64 instead.)


@device
def kahan_add(total, comp, x):
    """Add x to the compensated sum (total, comp), comp being the last rounding error."""
    y = x + comp
    new = total + y
    if new - new != 0:  # inf or NaN from here on: a zero keeps comp from adding NaN
        return new, comp * 0
    y_part = new - total
    return new, (total - (new - y_part)) + (y - y_part)


@device
def comp_total(total, comp):
    """The value of a compensated sum. Once the total is inf or NaN (an inf or NaN term,
    or overflow) the compensation is NaN, and the total alone is NumPy's answer."""
    return total + comp if total - total == 0 else total


# ---------------------------------------------------------------------------------------
# Linear algebra: a thread a matrix, the loops of runtime/linalg_bodies.py (the CPU's own)

_eliminate = device(linalg_bodies.eliminate)
_cholesky_lower = device(linalg_bodies.cholesky_lower)


@device
def solve_small(a, b, x, err):
    """x = a^-1 b for one matrix of order <= SMALL_MATRIX_MAX; SINGULAR in err."""
    n = a.shape[0]
    lu = cuda.local.array((SMALL_MATRIX_MAX, SMALL_MATRIX_MAX), np.float64)
    for i in range(n):
        for j in range(n):
            lu[i, j] = a[i, j]
        for c in range(b.shape[1]):
            x[i, c] = b[i, c]
    if not _eliminate(lu[:n, :n], x):
        err[0] = SINGULAR


@device
def cholesky_small(a, low, err):
    """low = the lower Cholesky factor of one matrix; NOT_POSITIVE_DEFINITE in err."""
    if not _cholesky_lower(a, low):
        err[0] = NOT_POSITIVE_DEFINITE
