"""Scalar helpers shared by the CPU and CUDA backends: random numbers, NaN-propagating
max/min, integer powers and dynamic_slice's clamp.

Plain Python, compiled by each backend as complex_bodies.py and linalg_bodies.py are:
runtime/cpu_kernels.py with `njit`, runtime/cuda_kernels.py as device functions. The
bodies that others call are `register_jitable`, so a call from one body to another
compiles for whichever target compiles the caller. What reports an error stays in the
backends' files (ipow's sign check, take_index): the CPU raises, a GPU thread sets the
kernel's `err` flag; so does rng_normal's last line, in each target's float64 math.
"""

from __future__ import annotations

import numpy as np

_JITABLE: list = []  # the bodies that other bodies call (register_for_numba)
_REGISTERED: list[bool] = [False]


def register_jitable(fn):
    """Mark a body that other bodies call. Numba's register_jitable makes such a function
    callable from compiled code; it is applied by register_for_numba(), which
    runtime/cpu_kernels.py and runtime/cuda_kernels.py call on import, so that this module
    imports no Numba and the direct back end (compiler/lower_direct.py) reads it without."""
    _JITABLE.append(fn)
    return fn


def register_for_numba() -> None:
    """Register the marked bodies with Numba (once per process)."""
    if _REGISTERED[0]:
        return
    from numba.extending import register_jitable as numba_register_jitable

    for fn in _JITABLE:
        numba_register_jitable(fn)
    _REGISTERED[0] = True

# The counter-based splitmix64 of ir/primitives.py (the reference interpreter's draws).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_S11, _S40 = np.uint64(11), np.uint64(40)
_ONE = np.uint64(1)
_TWO_M53 = 2.0 ** -53
_TWO_M24 = np.float32(2.0 ** -24)
TWO_PI = 2.0 * np.pi  # rng_normal's angle: u2 turns


@register_jitable
def mix64(z):
    """splitmix64's finaliser on a uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@register_jitable
def rng_word(base, i):
    """The i-th uint64 word of a key whose mixed base is `base` (i counts from 0)."""
    return mix64(base + (np.uint64(i) + _ONE) * _GOLDEN)


@register_jitable
def unit64(bits):
    """A float64 in [0, 1) from the top 53 bits."""
    return np.float64(bits >> _S11) * _TWO_M53


def unit32(bits):
    """A float32 in [0, 1) from the top 24 bits."""
    return np.float32(bits >> _S40) * _TWO_M24


@register_jitable
def normal_units(base, i):
    """The two uniforms of the i-th standard normal draw (words 2i and 2i+1): the draw is
    sqrt(-2 log u1) cos(TWO_PI u2) (Box-Muller), in the target's float64 math."""
    return 1.0 - unit64(rng_word(base, 2 * i)), unit64(rng_word(base, 2 * i + 1))


def split_key(key, i):
    """The i-th key of random_split."""
    return mix64(key ^ mix64((np.uint64(i) + _ONE) * _GOLDEN))


def fmax(a, b):
    """np.maximum for floats: NaN propagates; b when equal (as NumPy's SIMD loops)."""
    return a if (a > b or a != a) else b


def fmin(a, b):
    """np.minimum for floats: NaN propagates; b when equal (as NumPy's SIMD loops)."""
    return a if (a < b or a != a) else b


@register_jitable
def ipow(base, exp):
    """Integer power by squaring for a non-negative exponent (the callers check the sign:
    NumPy raises for a negative one)."""
    result = base - base + 1
    while exp > 0:
        if exp & 1:
            result = result * base
        base = base * base
        exp >>= 1
    return result


def clamp_start(start, size, n):
    """A dynamic_slice start index clamped so the slice stays in bounds (as in JAX)."""
    s = np.int64(start)
    hi = n - size
    if s > hi:
        s = hi
    if s < 0:
        s = 0
    return s
