"""scipy.special's digamma, log_ndtr, i0e, i1e and Hurwitz zeta for generated CUDA kernels
(libdevice lacks them); zeta is the CPU kernels' too (cython_special does not export it).

Plain Python over `math`, made by factories that take the `floor` of the target (Numba's
CPU math.floor returns an integer; libdevice's returns a float) or the compiled
`chebyshev`: runtime/cuda_kernels.py
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


# exp(-|x|) I0(x) and exp(-|x|) I1(x): Chebyshev series on [0, 8] in t = x/4 - 1 (of i0e,
# and of i1e / x) and on (8, inf) in t = 16/x - 1 (of sqrt(x) i0e, sqrt(x) i1e), Cephes'
# split; the coefficients computed with mpmath at 50 digits (Chebyshev interpolation at 64
# nodes, the terms above 2**-60 of the first kept).
_I0E_SMALL = np.array([
    0.6767952744094761, -0.3046826723431984, 0.17162090152220877, -0.09490109704804764,
    0.04930528423967071, -0.02373741480589947, 0.010546460394594998, -0.004324309995050576,
    0.0016394756169413357, -0.0005763755745385824, 0.00018850288509584165,
    -5.754195010082104e-05, 1.6448448070728896e-05, -4.4167383584587505e-06,
    1.1173875391201037e-06, -2.670793853940612e-07, 6.046995022541919e-08,
    -1.300025009986248e-08, 2.6598237246823866e-09, -5.189795601635263e-10,
    9.675809035373237e-11, -1.726826291441556e-11, 2.95505266312964e-12,
    -4.856446783111929e-13, 7.676185498604936e-14, -1.1685332877993451e-14,
    1.715391285555133e-15, -2.431279846547955e-16, 3.3307945188222384e-17,
    -4.4153416464793395e-18,
])
_I0E_LARGE = np.array([
    0.8044904110141088, 0.0033691164782556943, 6.889758346916825e-05, 2.8913705208347567e-06,
    2.0489185894690638e-07, 2.266668990498178e-08, 3.3962320257083865e-09,
    4.94060238822497e-10, 1.1889147107846439e-11, -3.1499165279632416e-11,
    -1.3215811840447713e-11, -1.7941785315068062e-12, 7.180124451383666e-13,
    3.8527783827421426e-13, 1.54008621752141e-14, -4.150569347287222e-14,
    -9.554846698828307e-15, 3.8116806693526224e-15, 1.7725601330565263e-15,
    -3.425485619677219e-16, -2.8276239805165836e-16, 3.461222867697461e-17,
    4.46562142029676e-17, -4.830504485944182e-18, -7.233180487874754e-18,
    9.921475412173699e-19, 1.193650890845982e-18,
])
_I1E_SMALL = np.array([
    0.25258718644363365, -0.17641651835783406, 0.1026436586898471, -0.05294598120809499,
    0.024726449030626516, -0.010564084894626197, 0.004156422944312888, -0.0015135724506312532,
    0.0005122859561685758, -0.00016176081582589674, 4.781565107550054e-05,
    -1.3273163656039436e-05, 3.4702513081376785e-06, -8.568720264695455e-07,
    2.0032947535521353e-07, -4.445059128796328e-08, 9.381537386495773e-09,
    -1.8872497517228294e-09, 3.625590281552117e-10, -6.663489723502027e-11,
    1.1736186298890901e-11, -1.9839743977649436e-12, 3.223793365945575e-13,
    -5.042185504727912e-14, 7.600684294735408e-15, -1.1055969477353862e-15,
    1.5536319577362005e-16, -2.111421214358166e-17, 2.7779141127610464e-18,
    -3.541581772542136e-19,
])
_I1E_LARGE = np.array([
    0.7785762350182801, -0.009761097491361469, -0.00011058893876262371, -3.882564808877691e-06,
    -2.512236237870209e-07, -2.6314688468895196e-08, -3.835380385964237e-09,
    -5.589743462196584e-10, -1.8974958123505413e-11, 3.2526035830154884e-11,
    1.4125807436613782e-11, 2.0356285441470896e-12, -7.198551776245908e-13,
    -4.0835511110921974e-13, -2.1015418427726643e-14, 4.272440016711951e-14,
    1.0420276984128802e-14, -3.8144030724370075e-15, -1.8803547755107825e-15,
    3.3082023109209285e-16, 2.96262899764595e-16, -3.209525921993424e-17,
    -4.6503053684893586e-17, 4.414348323071708e-18, 7.517296310842105e-18,
    -9.314178867326884e-19, -1.242193275194891e-18,
])


def chebyshev(coefficients: np.ndarray, t: float) -> float:
    """c0/2 + sum c_k T_k(t) by Clenshaw's recurrence."""
    b1 = 0.0
    b2 = 0.0
    for k in range(coefficients.shape[0] - 1, 0, -1):
        b1, b2 = coefficients[k] + 2.0 * t * b1 - b2, b1
    return 0.5 * coefficients[0] + t * b1 - b2


def make_i0e(chebyshev: Callable) -> Callable:
    """exp(-|x|) I0(x) (scipy.special.i0e), even."""
    def i0e(x):
        z = abs(x)
        if z <= 8.0:
            return chebyshev(_I0E_SMALL, 0.25 * z - 1.0)
        return chebyshev(_I0E_LARGE, 16.0 / z - 1.0) / math.sqrt(z)
    return i0e


def make_i1e(chebyshev: Callable) -> Callable:
    """exp(-|x|) I1(x) (scipy.special.i1e), odd."""
    def i1e(x):
        z = abs(x)
        if z <= 8.0:
            y = z * chebyshev(_I1E_SMALL, 0.25 * z - 1.0)
        else:
            y = chebyshev(_I1E_LARGE, 16.0 / z - 1.0) / math.sqrt(z)
        return -y if x < 0.0 else y
    return i1e
