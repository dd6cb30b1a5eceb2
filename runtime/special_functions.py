"""scipy.special's functions for generated CPU kernels (the special-function primitives).

Each unary function calls SciPy's own scalar implementation (scipy.special.cython_special,
the code behind scipy.special's ufuncs) in float64, so a kernel agrees with SciPy to the
rounding of a float32 result. The C functions are bound by symbol name (`llvm.add_symbol`,
done when this module is imported, before any cached kernel is loaded): Numba's cached
machine code refers to the name, not to an address, so kernels stay cacheable across
processes. Hurwitz's zeta, which cython_special does not export, is Cephes' algorithm
(as SciPy's) from runtime/special_device.py.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

from .helper_options import HELPER
from .special_device import make_zeta

_DOUBLE_SIGNATURE = "double (double, int __pyx_skip_dispatch)"
# our symbol -> cython_special's function (its float64 specialisation)
CYTHON_FUNCTIONS = {
    "transfuse_erfc": "erfc", "transfuse_erfinv": "erfinv", "transfuse_ndtr": "ndtr",
    "transfuse_ndtri": "ndtri",
    "transfuse_log_ndtr": "log_ndtr", "transfuse_gammaln": "gammaln",
    "transfuse_psi": "psi", "transfuse_i0e": "i0e", "transfuse_i1e": "i1e",
}


def cython_export(symbol: str) -> tuple[str, str] | None:
    """(module, export) of the C function bound to `symbol` (for the direct back end,
    which sets a function pointer from it when it loads a kernel), or None."""
    name = CYTHON_FUNCTIONS.get(symbol)
    if name is None:
        return None
    return "scipy.special.cython_special", _float64_capsule_name(name)


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


# Hurwitz zeta (Cephes' Euler-Maclaurin summation, as SciPy's): the body the CUDA kernels
# compile too (runtime/special_device.py)
_zeta = njit(**HELPER)(make_zeta(np.floor))


@njit(**HELPER)
def special_zeta(s, q):
    """scipy.special.zeta(s, q) in float64."""
    return _zeta(np.float64(s), np.float64(q))
