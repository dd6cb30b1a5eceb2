"""scipy.linalg.expm on traced stacks: scaling and squaring with a degree-13 Padé approximant.

SciPy (Al-Mohy & Higham 2009) picks the number of squarings s from the data and loops s
times. A transfuse graph has no data-dependent loop, so s is computed as SciPy computes it
(the same norms of A^6, A^8, A^10 and |A|^27), and the graph holds `max_squarings(dtype)`
squarings, each kept only while its index is below s: `where(i < s, X @ X, X)`. A matrix
needing more squarings than that is NaN (see max_squarings). Derivatives flow through the
Padé approximant, the solve and the squarings taken (an untaken branch gets a zero
cotangent); s is piecewise constant (a ceil), so it carries none. docs/numpy.md says more.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.errors import TransfuseLinAlgError
from transfuse.ir.source import with_location
from transfuse.numpy._core import asarray, cast_operand

# The numerator coefficients b_0..b_13 of the [13/13] Padé approximant of exp.
PADE13 = (64764752532480000.0, 32382376266240000.0, 7771770303897600.0,
          1187353796428800.0, 129060195264000.0, 10559470521600.0, 670442572800.0,
          33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0)
# SciPy's theta_13: 2^-s A is brought to this eta (its theta[4]; the paper's 5.37 with
# room for the |A|^27 correction below).
THETA13 = 4.25
# The truncation-error constant of the degree-13 approximant, |c_27| in the paper's
# ell(A, 13) (SciPy keeps u / c_27 per dtype).
C27 = 1.1102230246251565e-16 / 1.2573361865339437e19


def max_squarings(dtype: np.dtype) -> int:
    """The graph's squarings: enough for every A whose exp has a correct digit.

    s squarings mean eta > 2^(s-1) theta, and ||A|| >= eta. exp's relative condition
    number is at least ||A|| (Higham, Functions of Matrices, Lemma 10.15), so once
    ||A|| > 1/u the rounding of A's own entries can change exp(A) by 100%: 2^s theta =
    1/u gives 51 (float64) and 22 (float32).
    """
    unit_roundoff = float(np.finfo(dtype).eps) / 2
    return math.ceil(math.log2(1 / (unit_roundoff * THETA13)))


def expm(a: Any) -> Any:
    """exp of each matrix of a (..., n, n) stack, as scipy.linalg.expm."""
    a = asarray(a)
    if a.ndim < 2 and _size(a) == 1:  # SciPy: np.array([[np.exp(a.item())]]), float64
        return lax.reshape(lax.exp(cast_operand(a, np.float64)), (1, 1))
    if a.ndim < 2:
        raise TransfuseLinAlgError(with_location(
            "scipy.linalg.expm: the input array must be at least two-dimensional, got "
            f"shape {a.shape}"))
    if a.shape[-1] != a.shape[-2]:
        raise TransfuseLinAlgError(with_location(
            f"scipy.linalg.expm: last 2 dimensions of the array must be square, got shape "
            f"{a.shape}"))
    a = cast_operand(a, np.float32 if a.dtype == np.float32 else np.float64)
    if _size(a) == 0:
        return lax.full(a.shape, 0, a.dtype)
    if a.shape[-1] == 1:
        return lax.exp(a)
    general = _scaling_and_squaring(a)
    return lax.select(_is_diagonal(a), _exp_of_diagonal(a), general)


def _size(a: Any) -> int:
    return int(np.prod(a.shape, dtype=np.int64))


def _is_diagonal(a: Any) -> Any:
    """Per matrix, broadcast to a's shape: every off-diagonal entry is zero (SciPy's
    exact shortcut, which also gives exp(inf) = inf on a diagonal)."""
    n = a.shape[-1]
    off_diagonal = lax.broadcast_to(np.eye(n, dtype=bool) == 0, a.shape)
    off = lax.select(off_diagonal, lax.abs(a), lax.full(a.shape, 0, a.dtype))  # inf * 0
    zero = lax.eq(lax.reduce_max(off, (a.ndim - 2, a.ndim - 1)), 0)
    return _per_matrix(zero, a.shape)


def _exp_of_diagonal(a: Any) -> Any:
    """diag(exp(diag(a))), its off-diagonal zeros exact even where exp is inf."""
    n = a.shape[-1]
    d = lax.exp(lax.matrix_diagonal(a))
    rows = lax.broadcast_to(lax.expand_dims(d, (d.ndim,)), a.shape)
    on_diagonal = lax.broadcast_to(np.eye(n, dtype=bool), a.shape)
    return lax.select(on_diagonal, rows, lax.full(a.shape, 0, a.dtype))


def _per_matrix(x: Any, shape: tuple[int, ...]) -> Any:
    """A per-matrix value (...,) broadcast over each (n, n) matrix."""
    return lax.broadcast_to(lax.expand_dims(x, (len(shape) - 2, len(shape) - 1)), shape)


def _scaling_and_squaring(a: Any) -> Any:
    dt, limit = a.dtype, max_squarings(a.dtype)
    s = _squarings(a)
    # Past the limit (or for non-finite input) the matrix is replaced by zeros before any
    # arithmetic, so neither its value nor its derivative sees an overflow, and is NaN.
    fits = lax.le(s, float(limit))
    safe = lax.select(_per_matrix(fits, a.shape), a, lax.full(a.shape, 0, dt))
    s = lax.select(fits, s, lax.full(s.shape, 0, dt))
    scale = lax.pow(lax.full(s.shape, 2, dt), lax.neg(s))  # exact: s is an integer
    x = _pade13(lax.mul(safe, _per_matrix(scale, a.shape)))
    for i in range(limit):
        x = lax.select(_per_matrix(lax.lt(float(i), s), a.shape), lax.batch_matmul(x, x), x)
    return lax.select(_per_matrix(fits, a.shape), x, lax.full(a.shape, np.nan, dt))


def _pade13(b: Any) -> Any:
    """The [13/13] Padé approximant of exp(b): (V - U)^-1 (V + U), as SciPy's pade13."""
    c = PADE13
    eye = lax.broadcast_to(np.eye(b.shape[-1], dtype=b.dtype), b.shape)
    b2 = lax.batch_matmul(b, b)
    b4 = lax.batch_matmul(b2, b2)
    b6 = lax.batch_matmul(b4, b2)
    u_high = _combine(c[13], b6, c[11], b4, c[9], b2)
    u_low = lax.add(_combine(c[7], b6, c[5], b4, c[3], b2), lax.mul(eye, c[1]))
    u = lax.batch_matmul(b, lax.add(lax.batch_matmul(b6, u_high), u_low))
    v_high = _combine(c[12], b6, c[10], b4, c[8], b2)
    v_low = lax.add(_combine(c[6], b6, c[4], b4, c[2], b2), lax.mul(eye, c[0]))
    v = lax.add(lax.batch_matmul(b6, v_high), v_low)
    return lax.solve(lax.sub(v, u), lax.add(v, u))


def _combine(c1: float, x1: Any, c2: float, x2: Any, c3: float, x3: Any) -> Any:
    return lax.add(lax.add(lax.mul(x1, c1), lax.mul(x2, c2)), lax.mul(x3, c3))


# ---------------------------------------------------------------------------------------
# The number of squarings, as SciPy's pick_pade_structure chooses it for degree 13.


def _squarings(a: Any) -> Any:
    """s per matrix (...,), as a float holding an integer; +inf for non-finite input.

    s = max(0, ceil(log2(eta / theta13))) + ell, eta = min(max(d6, d8), max(d8, d10)),
    d_k = ||A^k||_1^(1/k), ell the |A|^27 correction. Computed on A 2^-e (e: the exponent
    of ||A||_1, an exact scaling) in log2, so no power overflows however large A is.
    """
    dt = a.dtype
    norm = _norm1(a)
    finite = lax.isfinite(norm)
    e = _exponent(lax.select(finite, norm, lax.full(norm.shape, 1, dt)), dt)
    unit = lax.mul(a, _per_matrix(lax.pow(lax.full(e.shape, 2, dt), lax.neg(e)), a.shape))
    u2 = lax.batch_matmul(unit, unit)
    u4 = lax.batch_matmul(u2, u2)
    u6 = lax.batch_matmul(u4, u2)
    d6, d8, d10 = (lax.add(e, lax.div(_log2(_norm1(p)), float(k))) for p, k in (
        (u6, 6), (lax.batch_matmul(u4, u4), 8), (lax.batch_matmul(u4, u6), 10)))
    log_eta = lax.min(lax.max(d6, d8), lax.max(d8, d10))
    s = lax.max(lax.ceil(lax.sub(log_eta, math.log2(THETA13))), lax.full(e.shape, 0, dt))
    s = lax.add(s, _ell(unit, e, s))
    return lax.select(finite, s, lax.full(s.shape, np.inf, dt))


def _ell(unit: Any, e: Any, s: Any) -> Any:
    """Extra squarings so that the Padé error bound for 2^-s A holds (SciPy's lm):
    max(0, ceil(log2(||(|B|)^27||_1 / ||B||_1 / (u / c27)) / 26)), B = 2^-s A."""
    dt = unit.dtype
    mag = lax.abs(unit)
    m2 = lax.batch_matmul(mag, mag)
    m4 = lax.batch_matmul(m2, m2)
    m8 = lax.batch_matmul(m4, m4)
    m16 = lax.batch_matmul(m8, m8)
    row = lax.reduce_sum(m16, (unit.ndim - 2,))  # 1^T |B|^16: its column sums
    for factor in (m8, m2, mag):  # 1^T |B|^27 = ((1^T |B|^16) |B|^8) |B|^2 |B|
        row = lax.reduce_sum(lax.mul(lax.expand_dims(row, (row.ndim,)), factor),
                             (unit.ndim - 2,))
    # log2(||(|A|)^27|| / ||A||) - 26 s, with |A|^k = 2^(k e) |unit|^k
    log_ratio = lax.add(lax.sub(_log2(lax.reduce_max(row, (row.ndim - 1,))),
                                _log2(_norm1(unit))),
                        lax.mul(lax.sub(e, s), 26.0))
    u = float(np.finfo(dt).eps) / 2
    ell = lax.ceil(lax.div(lax.sub(log_ratio, math.log2(u / C27)), 26.0))
    return lax.max(ell, lax.full(ell.shape, 0, dt))


def _norm1(x: Any) -> Any:
    """The 1-norm (largest column sum of magnitudes) of each matrix: shape (...,)."""
    sums = lax.reduce_sum(lax.abs(x), (x.ndim - 2,))
    return lax.reduce_max(sums, (x.ndim - 2,))


def _log2(x: Any) -> Any:
    return lax.div(lax.log(x), math.log(2.0))


def _exponent(norm: Any, dt: np.dtype) -> Any:
    """floor(log2(norm)), kept where 2^-e is a finite float (zero and subnormal norms)."""
    top = float(np.finfo(dt).maxexp - 1)
    e = lax.floor(_log2(lax.select(lax.gt(norm, 0), norm, lax.full(norm.shape, 1, dt))))
    return lax.max(e, lax.full(e.shape, -top, dt))
