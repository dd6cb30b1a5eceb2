"""Linear-algebra primitives: factorizations and solves on stacked (..., n, n) matrices.

Each primitive works on the trailing two axes and keeps every leading (batch) axis, as
NumPy's `np.linalg` does, so vmap folds its batch axis into them. The reference
implementations are NumPy's LAPACK-backed functions; matrix right-hand sides only (the
NumPy-named wrappers in transfuse/numpy/linalg.py handle vectors and broadcasting).
"""

from __future__ import annotations

import numpy as np

from .core import Aval
from .errors import DTypeError, ShapeError
from .primitives import define, real_dtype


def _square(name: str, a: Aval) -> int:
    """The order n of a stack of square float or complex matrices (..., n, n)."""
    if a.dtype.kind not in "fc":
        raise DTypeError(f"{name} needs floating or complex matrices, got {a.dtype}")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ShapeError(f"{name} needs square matrices (..., n, n), got shape {a.shape}")
    return a.shape[-1]


def _rhs(name: str, a: Aval, b: Aval) -> Aval:
    """The aval of X in A X = B: B's, after checking it matches A's stack and order."""
    n = _square(name, a)
    if b.dtype != a.dtype:
        raise DTypeError(f"{name}: the matrix is {a.dtype} and the right-hand side {b.dtype}")
    if b.ndim != a.ndim or b.shape[:-2] != a.shape[:-2] or b.shape[-2] != n:
        raise ShapeError(f"{name}: a right-hand side of shape {b.shape} does not fit matrices "
                         f"of shape {a.shape} (expected {a.shape[:-2] + (n, 'k')})")
    return b


def _same(name: str):
    def rule(a: Aval) -> Aval:
        _square(name, a)
        return a
    return rule


def _triangle(a: np.ndarray, lower: bool) -> np.ndarray:
    return np.tril(a) if lower else np.triu(a)


def _triangular_solve_impl(a, b, *, lower, transpose_a):
    tri = _triangle(np.asarray(a), lower)
    if transpose_a:
        tri = np.swapaxes(tri, -1, -2)
    if tri.shape[-1] == 0:
        return np.array(b, copy=True)
    return np.linalg.solve(tri, b)


def _solve_impl(a, b):
    if np.shape(a)[-1] == 0:
        return np.array(b, copy=True)
    return np.linalg.solve(a, b)


def _solve_by_cholesky_rule(a: Aval, low: Aval, b: Aval, *, transpose_a: bool) -> Aval:
    if low != a:
        raise ShapeError(f"solve_by_cholesky: a factor of {low} for matrices of {a}")
    return _rhs("solve_by_cholesky", a, b)


def _is_symmetric(a: np.ndarray) -> bool:
    """Exactly symmetric (a NaN entry is not equal to itself, so never)."""
    return bool(np.array_equal(a, a.T))


def _solve_by_cholesky_impl(a, low, b, *, transpose_a):
    a, low, b = np.asarray(a), np.asarray(low), np.asarray(b)
    out = np.array(b, copy=True)
    for index in np.ndindex(*a.shape[:-2]):
        if a.shape[-1] == 0:
            continue
        if _is_symmetric(a[index]):
            half = np.linalg.solve(np.tril(low[index]), b[index])
            out[index] = np.linalg.solve(np.tril(low[index]).T, half)
        else:
            out[index] = np.linalg.solve(a[index].T if transpose_a else a[index], b[index])
    return out


def _slogdet_by_cholesky_rule(a: Aval, low: Aval) -> list[Aval]:
    if low != a:
        raise ShapeError(f"slogdet_by_cholesky: a factor of {low} for matrices of {a}")
    return _slogdet_rule(a)


def _slogdet_by_cholesky_impl(a, low):
    sign, logabsdet = _slogdet_impl(a)
    for index in np.ndindex(*np.shape(a)[:-2]):
        if _is_symmetric(np.asarray(a)[index]):
            sign[index] = 1
            logabsdet[index] = 2 * np.sum(np.log(np.diagonal(np.asarray(low)[index])))
    return [sign, logabsdet]


def _cholesky_inverse_rule(low: Aval, w: Aval) -> Aval:
    n = _square("cholesky_inverse", low)
    if w.dtype != low.dtype or w.shape != low.shape[:-2] + (n,):
        raise ShapeError(f"cholesky_inverse: weights {w} for factors {low} (expected "
                         f"{low.shape[:-2] + (n,)} of {low.dtype})")
    return low


def _cholesky_inverse_impl(low, w):
    low = np.tril(np.asarray(low))
    if low.shape[-1] == 0:
        return np.array(low, copy=True)
    inverse = np.linalg.solve(low, np.broadcast_to(np.eye(low.shape[-1], dtype=low.dtype),
                                                   low.shape))
    return np.swapaxes(inverse, -1, -2) @ (np.asarray(w)[..., :, None] * inverse)


def _slogdet_rule(a: Aval) -> list[Aval]:
    _square("slogdet", a)
    return [Aval(a.shape[:-2], a.dtype), Aval(a.shape[:-2], real_dtype(a.dtype))]


def _slogdet_impl(a):
    sign, logabsdet = np.linalg.slogdet(a)
    return [np.asarray(sign, a.dtype), np.asarray(logabsdet, real_dtype(a.dtype))]


def _eigh_rule(a: Aval) -> list[Aval]:
    n = _square("eigh", a)
    return [Aval(a.shape[:-2] + (n,), real_dtype(a.dtype)), a]


def _eigh_impl(a):
    w, v = np.linalg.eigh(a, UPLO="L")
    return [w, v]


def _expm_impl(a):
    import scipy.linalg  # on first use: importing it costs `import transfuse` 0.1 s

    a = np.asarray(a)
    if a.size == 0:  # SciPy's is np.empty_like
        return np.zeros_like(a)
    return np.asarray(scipy.linalg.expm(a), a.dtype)


def _matrix(name: str, a: Aval) -> tuple[int, int]:
    """The shape (m, n) of a stack of float or complex matrices (..., m, n)."""
    if a.dtype.kind not in "fc":
        raise DTypeError(f"{name} needs floating or complex matrices, got {a.dtype}")
    if a.ndim < 2:
        raise ShapeError(f"{name} needs matrices (..., m, n), got shape {a.shape}")
    return a.shape[-2], a.shape[-1]


def _svd_rule(a: Aval, *, full_matrices: bool, compute_uv: bool) -> list[Aval]:
    m, n = _matrix("svd", a)
    k, batch = min(m, n), a.shape[:-2]
    s = Aval(batch + (k,), real_dtype(a.dtype))
    if not compute_uv:
        return [s]
    u_cols, vt_rows = (m, n) if full_matrices else (k, k)
    return [Aval(batch + (m, u_cols), a.dtype), s, Aval(batch + (vt_rows, n), a.dtype)]


def _svd_impl(a, *, full_matrices, compute_uv):
    if not compute_uv:
        return [np.linalg.svd(a, compute_uv=False)]
    u, s, vt = np.linalg.svd(a, full_matrices=full_matrices)
    return [u, s, vt]


def _qr_rule(a: Aval, *, complete: bool) -> list[Aval]:
    m, n = _matrix("qr", a)
    k = m if complete else min(m, n)
    return [Aval(a.shape[:-2] + (m, k), a.dtype), Aval(a.shape[:-2] + (k, n), a.dtype)]


def _qr_impl(a, *, complete):
    q, r = np.linalg.qr(a, mode="complete" if complete else "reduced")
    return [q, r]


def _lu_rule(a: Aval) -> list[Aval]:
    m, n = _matrix("lu", a)
    batch = a.shape[:-2]
    return [a, Aval(batch + (min(m, n),), np.dtype(np.int32)), Aval(batch + (m,), np.dtype(
        np.int32))]


def _lu_impl(a):
    """LU with partial pivoting, LAPACK's getrf per matrix: (lu, pivots, permutation)."""
    import scipy.linalg  # on first use: importing it costs `import transfuse` 0.1 s

    a = np.asarray(a)
    m, n = a.shape[-2:]
    lu = np.array(a, copy=True)
    pivots = np.zeros(a.shape[:-2] + (min(m, n),), np.int32)
    permutation = np.broadcast_to(np.arange(m, dtype=np.int32), a.shape[:-2] + (m,)).copy()
    for index in np.ndindex(*a.shape[:-2]):
        if m and n:
            lu[index], piv = scipy.linalg.lu_factor(a[index], check_finite=False)
            pivots[index] = piv
        for j, p in enumerate(pivots[index]):
            perm = permutation[index]
            perm[j], perm[p] = perm[p], perm[j]
    return [lu, pivots, permutation]


define("lu", _lu_rule, _lu_impl, multiple_results=True,
       doc="(LU, pivots, permutation): P A = L U with unit lower L and upper U packed in LU; "
           "row j was swapped with pivots[j]; permutation: the rows of A in P A")
define("svd", _svd_rule, _svd_impl, multiple_results=True,
       doc="(U, s, V^T) of each matrix, s descending; (s,) alone without compute_uv")
define("qr", _qr_rule, _qr_impl, multiple_results=True,
       doc="(Q, R) of each matrix: reduced (Q m x k) or complete (Q m x m)")
define("cholesky", _same("cholesky"), lambda a: np.linalg.cholesky(a),
       doc="the lower Cholesky factor L of each positive-definite matrix (A = L L^H; "
           "reads A's lower triangle)")
define("triangular_solve",
       lambda a, b, *, lower, transpose_a: _rhs("triangular_solve", a, b),
       _triangular_solve_impl,
       doc="X with op(T) X = B, T the lower (or upper) triangle of A, op transposing when "
           "transpose_a")
define("solve", lambda a, b: _rhs("solve", a, b), _solve_impl,
       doc="X with A X = B for general square A (LU with partial pivoting)")
# MADE_BY_JIT: made by jit's optimiser (compiler/linalg_rewrites.py) after every
# transform, so they have lowering rules only.
define("solve_by_cholesky", _solve_by_cholesky_rule, _solve_by_cholesky_impl,
       doc="X with op(A) X = B (op transposing when transpose_a): by the Cholesky factor "
           "L of A where A is exactly symmetric, else as solve")
define("slogdet_by_cholesky", _slogdet_by_cholesky_rule, _slogdet_by_cholesky_impl,
       multiple_results=True,
       doc="(sign, log|det|) of each A: (1, 2 sum(log(diag(L)))) from its Cholesky factor L "
           "where A is exactly symmetric, else as slogdet")
define("cholesky_inverse", _cholesky_inverse_rule, _cholesky_inverse_impl,
       doc="L^-T diag(w) L^-1 for each lower-triangular L (with w = 1: (L L^T)^-1)")
define("slogdet", _slogdet_rule, _slogdet_impl, multiple_results=True,
       doc="(sign, log|det|) of each matrix (complex sign det/|det| for complex A)")
define("expm", _same("expm"), _expm_impl,
       doc="exp of each square matrix, as scipy.linalg.expm (scaling and squaring with "
           "a Padé approximant)")
define("eigh", _eigh_rule, _eigh_impl, multiple_results=True,
       doc="(w, V): ascending (real) eigenvalues and orthonormal eigenvectors of each "
           "symmetric or Hermitian matrix (reads A's lower triangle)")

LINALG = ("cholesky", "triangular_solve", "solve", "slogdet", "eigh", "svd", "qr", "lu",
          "expm")
# Made by jit's optimiser after every transform: lowering rules only, no transform rules.
MADE_BY_JIT = ("solve_by_cholesky", "slogdet_by_cholesky", "cholesky_inverse")
