"""The CPU kernel of the `expm` primitive: SciPy's scipy.linalg.expm per matrix, in Numba.

Al-Mohy & Higham (2009) as SciPy implements it (scipy/linalg/src/_matfuncs_expm.c,
`pick_pade_structure` and `pade_UV_calc`, and `expm` in _matfuncs.py): a Padé approximant
of degree 3, 5, 7, 9 or 13 chosen from the 1-norms of powers of A, and for degree 13 a
scaling 2^-s A followed by s squarings in a runtime loop. The degree and s are SciPy's,
computed in log2 on A scaled by its norm's power of two so that no power overflows
(exact: a power-of-two scaling rounds nothing). Diagonal matrices take SciPy's exact
shortcut, triangular ones its recomputed diagonal and first off-diagonal after each
squaring (Code Fragment 2.1), and a non-finite entry makes the matrix NaN.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import linalg_bodies
from .helper_options import HELPER

# theta_m: the largest eta for which degree m is accurate (SciPy's theta, one table for
# both precisions), for m = 3, 5, 7, 9, 13.
THETA = (1.495585217958292e-002, 2.539398330063230e-001, 9.504178996162932e-001,
         2.097847961257068e+000, 4.25)
# |c_{2m+1}| / u per precision: the truncation-error constants SciPy checks the norms of
# |A|^(2m+1) against (its `coeff`).
ERROR_CONSTANTS_64 = (1.1191048088221578e-11, 1.1167770708198077e-06,
                      4.9826124310493469e-01, 6.5662862500000000e+05,
                      1.2573361865339437e+19)
ERROR_CONSTANTS_32 = (6.0081481933593750e-03, 5.9956512451171875e+02,
                      2.6750196800000000e+08, 3.5252480874905600e+14,
                      6.7502722515508048e+27)
# The numerator coefficients b_0..b_m of each [m/m] Padé approximant of exp, zero-padded.
PADE = np.array([
    [120.0, 60.0, 12.0, 1.0] + [0.0] * 10,
    [30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0] + [0.0] * 8,
    [17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0] + [0.0] * 6,
    [17643225600.0, 8821612800.0, 2075673600.0, 302702400.0, 30270240.0, 2162160.0,
     110880.0, 3960.0, 90.0, 1.0] + [0.0] * 4,
    [64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
     129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0,
     40840800.0, 960960.0, 16380.0, 182.0, 1.0]])
DEGREE_13 = 4  # the row of THETA, ERROR_CONSTANTS_* and PADE for degree 13
# Partial pivoting as LAPACK's getrf/getrs, at every order: np.linalg.solve would add some
# ten seconds per dtype to the helper's first compile, for one solve among many products.
_eliminate = njit(**HELPER)(linalg_bodies.eliminate)


@njit(**HELPER)
def linalg_expm(a, out):
    """out[k] = exp(a[k]), as scipy.linalg.expm."""
    if a.shape[1] == 0:
        return
    for k in range(a.shape[0]):
        _expm(a[k], out[k])


# Loops rather than np.triu, np.diag, sums along an axis or whole-array arithmetic: each
# of those costs Numba seconds to compile per dtype, and a program calling this helper
# re-optimizes all of its code (Numba links callees in to inline them).


@njit(**HELPER)
def _expm(a, out):
    """out = exp(a) for one matrix of order n >= 1."""
    lower, upper = _has_off_diagonal(a, True), _has_off_diagonal(a, False)
    if not lower and not upper:  # SciPy's exact shortcut: inf on the diagonal stays inf
        _fill(out, 0.0)
        for i in range(a.shape[0]):
            out[i, i] = np.exp(a[i, i])
        return
    if _all_finite(a):
        _fill(out, 0.0)
        _add_scaled(out, 1.0, _scaling_and_squaring(a, lower, upper))
    else:
        _fill(out, np.nan)
    if lower != upper:  # SciPy zeroes the other triangle of a triangular matrix's exp
        _zero_off_triangle(out, upper)


@njit(**HELPER)
def _has_off_diagonal(a, below):
    """Whether a has a nonzero entry below (or above) its diagonal."""
    n = a.shape[0]
    for i in range(n):
        for j in range(i):
            if (a[i, j] if below else a[j, i]) != 0:
                return True
    return False


@njit(**HELPER)
def _all_finite(a):
    for value in a.ravel():
        if not np.isfinite(value):
            return False
    return True


@njit(**HELPER)
def _zero_off_triangle(x, upper):
    """Zero the entries below (upper) or above the diagonal of x."""
    n = x.shape[0]
    for i in range(n):
        for j in range(i):
            if upper:
                x[i, j] = 0
            else:
                x[j, i] = 0


@njit(**HELPER)
def _scaling_and_squaring(a, lower, upper):
    degree, s, powers = _pade_structure(a)
    x = _pade(degree, powers)
    if s == 0:
        return x
    if lower and upper:
        for _ in range(s):
            x = x @ x
        return x
    return _triangular_squarings(a, x, s, upper)


@njit(**HELPER)
def _triangular_squarings(a, x, s, upper):
    """s squarings of x ~ exp(2^-s a), a triangular, the diagonal and first off-diagonal
    set exactly after each (SciPy: Al-Mohy & Higham's Code Fragment 2.1)."""
    _set_diagonals(x, a, 2.0 ** -s, upper, False)
    for i in range(s - 1, -1, -1):
        x = x @ x
        _set_diagonals(x, a, 2.0 ** -i, upper, True)
    return x


@njit(**HELPER)
def _set_diagonals(x, a, scale, upper, with_off_diagonal):
    """x's diagonal = exp(scale diag(a)); its first off-diagonal the exact entries of the
    2x2 blocks' exp (Higham's formula 10.42: the off-diagonal entry of scale a times the
    divided difference of exp at the two diagonal entries)."""
    n = x.shape[0]
    for i in range(n):
        x[i, i] = np.exp(scale * a[i, i])
    if not with_off_diagonal:
        return
    for i in range(n - 1):
        d0, d1 = scale * a[i, i], scale * a[i + 1, i + 1]
        divided = np.exp(d0) if d1 == d0 else (np.exp(d1) - np.exp(d0)) / (d1 - d0)
        if upper:
            x[i, i + 1] = divided * (scale * a[i, i + 1])
        else:
            x[i + 1, i] = divided * (scale * a[i + 1, i])


@njit(**HELPER)
def _pade_structure(a):
    """(row, s, powers): SciPy's degree (its row of PADE) and squarings for a, and
    powers[j] = B^(2j) (B^0 = I) for B = 2^-s a, powers[5] = B."""
    constants = ERROR_CONSTANTS_32 if np.finfo(a.dtype).eps > 1e-10 else ERROR_CONSTANTS_64
    # a = 2^e unit, e >= 0: only large matrices are scaled (SciPy's own underflow below)
    e = max(0.0, np.floor(_log2(_norm1(a))))
    unit = np.zeros_like(a)
    _add_scaled(unit, 2.0 ** -e, a)
    powers = np.zeros((6,) + a.shape, a.dtype)
    powers[1] = unit @ unit
    powers[2] = powers[1] @ powers[1]
    powers[3] = powers[2] @ powers[1]
    log_d4, log_d6 = _log_root_norm(powers[2], 4, e), _log_root_norm(powers[3], 6, e)
    log_eta = max(log_d4, log_d6)
    # 1^T |unit|^k: its largest entry is ||(|unit|)^k||_1 (no cancellation: entries >= 0)
    magnitude = np.abs(unit)
    sums = np.ones((1, a.shape[0]), magnitude.dtype) @ magnitude
    norm_unit, spins = np.max(sums), 1
    log_d8 = 0.0
    for row in range(DEGREE_13):
        if row == 2:  # degrees 7 and 9 use max(d6, d8)
            powers[4] = powers[2] @ powers[2]
            log_d8 = _log_root_norm(powers[4], 8, e)
            log_eta = max(log_d6, log_d8)
        target = 4 * row + 7
        sums, spins = _spin(sums, magnitude, spins, target), target
        if log_eta < np.log2(THETA[row]) and _extra_squarings(
                sums, norm_unit, target - 1, e, constants[row]) == 0:
            _scale_powers(powers, unit, 0.0, e)
            return row, 0, powers
    log_d10 = _log_root_norm(powers[3] @ powers[2], 10, e)
    log_eta = min(log_eta, max(log_d8, log_d10))
    s = int(max(0.0, np.ceil(log_eta - np.log2(THETA[DEGREE_13]))))
    sums = _spin(sums, magnitude, spins, 27)
    s += _extra_squarings(sums, norm_unit, 26, e - s, constants[DEGREE_13])
    _scale_powers(powers, unit, float(s), e)
    return DEGREE_13, s, powers


@njit(**HELPER)
def _norm1(x):
    """The 1-norm of x: its largest column sum of magnitudes."""
    largest = 0.0
    for j in range(x.shape[1]):
        column = 0.0
        for i in range(x.shape[0]):
            column += abs(x[i, j])
        largest = max(largest, column)
    return largest


@njit(**HELPER)
def _log_root_norm(power, k, e):
    """log2 of d_k = ||A^k||_1^(1/k), power = (2^-e A)^k."""
    return e + _log2(_norm1(power)) / k


@njit(**HELPER)
def _log2(x):
    """log2 in float64 (-inf at 0; Numba's float32 log2 of a scalar does not compile)."""
    return np.log2(np.float64(x))


@njit(**HELPER)
def _spin(sums, magnitude, done, target):
    """1^T |unit|^target from 1^T |unit|^done."""
    for _ in range(target - done):
        sums = sums @ magnitude
    return sums


@njit(**HELPER)
def _extra_squarings(sums, norm_unit, k, e, constant):
    """SciPy's ell: max(0, ceil(log2(||(|B|)^(k+1)||_1 / ||B||_1 / constant) / k)) for
    B = 2^e unit, sums = 1^T |unit|^(k+1)."""
    log_ratio = _log2(np.max(sums) / norm_unit) + k * e
    return int(max(0.0, np.ceil((log_ratio - np.log2(constant)) / k)))


@njit(**HELPER)
def _scale_powers(powers, unit, s, e):
    """powers[j] *= 2^(2j(e - s)) (j >= 1), powers[0] = I, powers[5] = 2^(e - s) unit.
    One factor 2^(e - s) at a time: a zero power stays zero where 2^(2j(e - s)) is inf."""
    factor = 2.0 ** (e - s)
    _add_scaled(powers[5], factor, unit)
    for j in range(1, 5):
        for _ in range(2 * j):
            _scale(powers[j], factor)
    for i in range(unit.shape[0]):
        powers[0, i, i] = 1


@njit(**HELPER)
def _pade(row, powers):
    """The Padé approximant of exp(B): I + 2 (V - U)^-1 U, as SciPy's pade_UV_calc, with
    U = B sum_j b_{2j+1} B^(2j) and V = sum_j b_{2j} B^(2j) (b = PADE[row]); degree 13
    as B6 (B6 + b11 B4 + b9 B2) + b7 B6 + ... for U / B, and V likewise."""
    b = PADE[row]
    odd, even = np.zeros_like(powers[0]), np.zeros_like(powers[0])
    if row == DEGREE_13:
        for j in range(1, 4):
            _add_scaled(odd, b[2 * j + 7], powers[j])
            _add_scaled(even, b[2 * j + 6], powers[j])
        odd, even = powers[3] @ odd, powers[3] @ even
    for j in range(4 if row == DEGREE_13 else row + 2):
        _add_scaled(odd, b[2 * j + 1], powers[j])
        _add_scaled(even, b[2 * j], powers[j])
    u = powers[5] @ odd
    _add_scaled(even, -1.0, u)
    x = u.copy()
    _eliminate(even, x)  # (V - U) x = U: V - U is well conditioned at every degree
    _add_scaled(x, 1.0, x)
    _add_scaled(x, 1.0, powers[0])
    return x


@njit(**HELPER)
def _fill(x, value):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = value


@njit(**HELPER)
def _scale(x, c):
    """x *= c, elementwise."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] *= c


@njit(**HELPER)
def _add_scaled(out, c, x):
    """out += c x, elementwise (c a float64: a whole-array c * x would promote float32)."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] += c * x[i, j]
