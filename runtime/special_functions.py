"""scipy.special's functions for generated CPU kernels (the special-function primitives).

Each unary function calls SciPy's own scalar implementation (scipy.special.cython_special,
the code behind scipy.special's ufuncs) in float64, so a kernel agrees with SciPy to the
rounding of a float32 result. The C functions are bound by symbol name (`llvm.add_symbol`,
done when this module is imported, before any cached kernel is loaded): Numba's cached
machine code refers to the name, not to an address, so kernels stay cacheable across
processes. Hurwitz's zeta, which cython_special does not export, is Cephes' algorithm
(as SciPy's) written here.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

from .helper_options import HELPER

_DOUBLE_SIGNATURE = "double (double, int __pyx_skip_dispatch)"
# our symbol -> cython_special's function (its float64 specialisation)
CYTHON_FUNCTIONS = {
    "transfuse_erfc": "erfc", "transfuse_erfinv": "erfinv", "transfuse_ndtr": "ndtr",
    "transfuse_ndtri": "ndtri",
    "transfuse_log_ndtr": "log_ndtr", "transfuse_gammaln": "gammaln",
    "transfuse_psi": "psi", "transfuse_i0e": "i0e", "transfuse_i1e": "i1e",
}


def _float64_capsule_name(name: str) -> str:
    """The cython_special export of `name` taking and returning a double (fused functions
    have one export per specialisation: __pyx_fuse_<k><name>)."""
    import scipy.special.cython_special as cython_special

    capi = cython_special.__pyx_capi__
    for candidate in (name, *(f"__pyx_fuse_{k}{name}" for k in range(4))):
        capsule = capi.get(candidate)
        if capsule is not None and f'"{_DOUBLE_SIGNATURE}"' in repr(capsule):
            return candidate
    raise ImportError(f"scipy.special.cython_special has no float64 {name}")


def _bind_symbols() -> None:
    for symbol, name in CYTHON_FUNCTIONS.items():
        address = get_cython_function_address("scipy.special.cython_special",
                                              _float64_capsule_name(name))
        llvm.add_symbol(symbol, address)


_bind_symbols()
_SIGNATURE = types.float64(types.float64, types.intc)  # (x, skip_dispatch)
_ERFC, _ERFINV, _NDTR, _NDTRI, _LOG_NDTR, _GAMMALN, _PSI, _I0E, _I1E = (
    types.ExternalFunction(symbol, _SIGNATURE) for symbol in CYTHON_FUNCTIONS)


@njit(**HELPER)
def special_erfc(x):
    """scipy.special.erfc in float64."""
    return _ERFC(np.float64(x), 0)


@njit(**HELPER)
def special_erfinv(x):
    """scipy.special.erfinv in float64."""
    return _ERFINV(np.float64(x), 0)


@njit(**HELPER)
def special_ndtr(x):
    """scipy.special.ndtr in float64."""
    return _NDTR(np.float64(x), 0)


@njit(**HELPER)
def special_ndtri(x):
    """scipy.special.ndtri in float64."""
    return _NDTRI(np.float64(x), 0)


@njit(**HELPER)
def special_log_ndtr(x):
    """scipy.special.log_ndtr in float64."""
    return _LOG_NDTR(np.float64(x), 0)


@njit(**HELPER)
def special_gammaln(x):
    """scipy.special.gammaln in float64."""
    return _GAMMALN(np.float64(x), 0)


@njit(**HELPER)
def special_psi(x):
    """scipy.special.psi (digamma) in float64."""
    return _PSI(np.float64(x), 0)


@njit(**HELPER)
def special_i0e(x):
    """scipy.special.i0e in float64."""
    return _I0E(np.float64(x), 0)


@njit(**HELPER)
def special_i1e(x):
    """scipy.special.i1e in float64."""
    return _I1E(np.float64(x), 0)


# Hurwitz zeta: Euler-Maclaurin summation (Cephes zeta.c, as scipy.special.zeta). The
# coefficients are (2k)! / B_2k.
_ZETA_A = np.array([
    12.0, -720.0, 30240.0, -1209600.0, 47900160.0, -1.8924375803183791606e9, 7.47242496e10,
    -2.950130727918164224e12, 1.1646782814350067249e14, -4.5979787224074726105e15,
    1.8152105401943546773e17, -7.1661652561756670113e18])
_MACHEP = 1.11022302462515654042e-16


@njit(**HELPER)
def special_zeta(s, q):
    """Hurwitz's zeta(s, q) = sum over k >= 0 of (k + q)**-s (scipy.special.zeta(s, q))."""
    x, q = np.float64(s), np.float64(q)
    if x == 1.0:
        return np.inf
    if x < 1.0 or np.isnan(q):
        return np.nan
    if q <= 0.0:
        if q == np.floor(q):
            return np.inf
        if x != np.floor(x):
            return np.nan  # q**-x is not real
    if q > 1e8:  # the asymptotic expansion (DLMF 25.11.43)
        return (1.0 / (x - 1.0) + 1.0 / (2.0 * q)) * q ** (1.0 - x)
    total = q ** -x
    a = q
    b = 0.0
    i = 0
    while i < 9 or a <= 9.0:
        i += 1
        a += 1.0
        b = a ** -x
        total += b
        if abs(b / total) < _MACHEP:
            return total
    w = a
    total += b * w / (x - 1.0)
    total -= 0.5 * b
    factor = 1.0
    k = 0.0
    for j in range(12):
        factor *= x + k
        b /= w
        term = factor * b / _ZETA_A[j]
        total += term
        if abs(term / total) < _MACHEP:
            break
        k += 1.0
        factor *= x + k
        b /= w
        k += 1.0
    return total
