"""scipy.special's digamma, log_ndtr and Hurwitz zeta for generated CUDA kernels (libdevice
lacks them); zeta is the CPU kernels' too (cython_special does not export it).

Plain Python over `math`, made by factories that take the `floor` of the target (Numba's
CPU math.floor returns an integer; libdevice's returns a float): runtime/cuda_kernels.py
compiles them as device functions, tests/test_special.py with njit on the CPU, where they
are checked against SciPy. The CPU backend itself calls SciPy's own code for the others
(runtime/special_functions.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_EULER = 0.57721566490153286061
_SQRT1_2 = 0.70710678118654752440
_HALF_LOG_2PI = 0.91893853320467274178


def make_digamma(floor: Callable) -> Callable:
    """Cephes' psi (as SciPy's before its series about the positive root): the reflection
    psi(1 - x) - pi / tan(pi x) for x <= 0, exact sums at integers up to 10, else the
    recurrence up to 10 and the asymptotic series log(s) - 1/(2s) - sum B_2k / (2k s^2k)."""
    def digamma(x):
        reflection = 0.0
        if x <= 0.0:
            whole = floor(x)
            if whole == x:  # a pole: -inf at +0, +inf at -0 (SciPy's), nan below
                return -math.copysign(math.inf, x) if x == 0.0 else math.nan
            fraction = x - whole
            if fraction != 0.5:
                if fraction > 0.5:
                    fraction = x - (whole + 1.0)
                reflection = math.pi / math.tan(math.pi * fraction)
            x = 1.0 - x
        if x <= 10.0 and x == floor(x):
            y = -_EULER
            k = 1.0
            while k < x:
                y += 1.0 / k
                k += 1.0
        else:
            s = x
            w = 0.0
            while s < 10.0:
                w += 1.0 / s
                s += 1.0
            series = 0.0
            if s < 1.0e17:
                z = 1.0 / (s * s)
                series = z * (((((((8.33333333333333333333e-2 * z - 2.10927960927960927961e-2)
                                   * z + 7.57575757575757575758e-3) * z
                                  - 4.16666666666666666667e-3) * z + 3.96825396825396825397e-3)
                                * z - 8.33333333333333333333e-3) * z
                               + 8.33333333333333333333e-2))
            y = math.log(s) - 0.5 / s - series - w
        return y - reflection
    return digamma


def make_log_ndtr(floor: Callable) -> Callable:
    """log of the standard normal CDF: log1p(-ndtr(-x)) for x > 0, log(ndtr(x)) down to
    -20, and below the asymptotic series -x^2/2 - log(-x) - log(2 pi)/2
    + log(sum (-1)^k (2k - 1)!! / x^2k) (SciPy's split)."""
    def log_ndtr(x):
        if x > 0.0:
            return math.log1p(-0.5 * math.erfc(x * _SQRT1_2))
        if x > -20.0:
            return math.log(0.5 * math.erfc(-x * _SQRT1_2))
        inverse_square = 1.0 / (x * x)
        term = 1.0
        total = 1.0
        k = 1.0
        while k < 20.0 and abs(term) > 1e-17 * total:
            term *= -(2.0 * k - 1.0) * inverse_square
            total += term
            k += 1.0
        return -0.5 * x * x - math.log(-x) - _HALF_LOG_2PI + math.log(total)
    return log_ndtr


# Hurwitz zeta: Euler-Maclaurin summation (Cephes zeta.c, as scipy.special.zeta). The
# coefficients are (2k)! / B_2k.
_ZETA_A = np.array([
    12.0, -720.0, 30240.0, -1209600.0, 47900160.0, -1.8924375803183791606e9, 7.47242496e10,
    -2.950130727918164224e12, 1.1646782814350067249e14, -4.5979787224074726105e15,
    1.8152105401943546773e17, -7.1661652561756670113e18])
_MACHEP = 1.11022302462515654042e-16


def make_zeta(floor: Callable) -> Callable:
    """Hurwitz's zeta(s, q) = sum over k >= 0 of (k + q)**-s (scipy.special.zeta(s, q)):
    the first terms summed until k + q > 9, then Euler-Maclaurin's correction."""
    def zeta(s, q):
        x = s
        if x == 1.0:
            return math.inf
        if x < 1.0 or q != q:
            return math.nan
        if q <= 0.0:
            if q == floor(q):
                return math.inf
            if x != floor(x):
                return math.nan  # q**-x is not real
        if q > 1e8:  # the asymptotic expansion (DLMF 25.11.43)
            return (1.0 / (x - 1.0) + 1.0 / (2.0 * q)) * math.pow(q, 1.0 - x)
        total = math.pow(q, -x)
        a = q
        b = 0.0
        i = 0
        while i < 9 or a <= 9.0:
            i += 1
            a += 1.0
            b = math.pow(a, -x)
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
    return zeta
