"""Complex scalar functions shared by the CPU and CUDA backends.

Numba's own complex expm1 and log1p (CPU) compute exp(z) - 1 and log(1 + z), which lose
every digit of a small argument; cmath (CUDA) has neither. These bodies are written with
the real expm1/log1p, compiled by runtime/cpu_kernels.py with `njit` and by
runtime/cuda_kernels.py as device functions.
"""

from __future__ import annotations

import math


def complex_expm1(z):
    """exp(z) - 1 as NumPy forms it: Re = expm1(x) cos y - 2 sin(y/2)^2, Im = exp(x) sin y."""
    x, y = z.real, z.imag
    half = math.sin(0.5 * y)
    return complex(math.expm1(x) * math.cos(y) - 2.0 * half * half, math.exp(x) * math.sin(y))


def complex_log1p(z):
    """log(1 + z), its real part log1p(2x + x^2 + y^2) / 2 near 0 (exact for tiny z, where
    log|1 + z| cancels), log|1 + z| elsewhere (no overflow of x^2 for huge z)."""
    x, y = z.real, z.imag
    if abs(x) < 0.5 and abs(y) < 0.5:
        re = 0.5 * math.log1p(x * (2.0 + x) + y * y)
    else:
        re = math.log(math.hypot(x + 1.0, y))
    return complex(re, math.atan2(y, x + 1.0))


def complex_divide(a, b):
    """a / b as NumPy divides complex numbers (Smith's method: no overflow of |b|^2; a zero
    divisor gives inf or nan, not an exception). Compile with error_model="numpy"."""
    ar, ai, br, bi = a.real, a.imag, b.real, b.imag
    if abs(br) >= abs(bi):
        if br == 0 and bi == 0:
            return complex(ar / abs(br), ai / abs(bi))
        ratio = bi / br
        scale = 1.0 / (br + bi * ratio)
        return complex((ar + ai * ratio) * scale, (ai - ar * ratio) * scale)
    ratio = br / bi
    scale = 1.0 / (bi + br * ratio)
    return complex((ar * ratio + ai) * scale, (ai * ratio - ar) * scale)
