"""transfuse.numpy.linalg: np.linalg's functions on traced values.

Built on the primitives of ir/linalg.py (cholesky, triangular_solve, solve, slogdet, eigh,
svd, qr)
and on matmul/reductions; every function takes stacked (..., n, n) inputs as NumPy does.
`np.linalg.f(traced)` reaches these through NumPy's dispatch; `tnp.linalg.f` is the same
function (NumPy's own on NumPy arrays). Derivative conventions: docs/numpy.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.errors import TransfuseLinAlgError
from transfuse.ir.primitives import real_dtype
from transfuse.ir.source import with_location

from ._core import asarray, cast_operand, implements, result_type, unsupported
from ._subgradients import root_zero_subgradient, sqrt_zero_subgradient

EXPORTS: dict[str, Callable] = {}


def _linalg(np_func: Callable) -> Callable[[Callable], Callable]:
    return implements(np_func, exports=EXPORTS)


def _float_dtype(*xs: Any) -> np.dtype:
    """NumPy's result dtype of a linalg function: float32, complex64 and complex128 stay,
    the rest is float64."""
    dt = result_type(*xs)
    return dt if dt in (np.float32, np.complex64, np.complex128) else np.dtype(np.float64)


def _abs_squared(x: Any) -> Any:
    """|x|^2, real: x * x, or re^2 + im^2 for complex x (as NumPy's norm forms it)."""
    if not lax.is_complex(x):
        return np.multiply(x, x)
    re, im = lax.real(x), lax.imag(x)
    return lax.add(lax.mul(re, re), lax.mul(im, im))


def _matrices(a: Any, name: str) -> Any:
    """a as a stack of square float matrices, or NumPy's LinAlgError at the user's line."""
    a = _at_least_2d(a, name)
    if a.shape[-1] != a.shape[-2]:
        raise TransfuseLinAlgError(with_location(
            f"numpy.linalg.{name}: last 2 dimensions of the array must be square, got shape "
            f"{a.shape}"))
    return a


def _at_least_2d(a: Any, name: str) -> Any:
    """a as a stack of float matrices (..., m, n), or NumPy's LinAlgError at the line."""
    a = asarray(a)
    if a.ndim < 2:
        raise TransfuseLinAlgError(with_location(
            f"numpy.linalg.{name}: {a.ndim}-dimensional array given. Array must be at least "
            "two-dimensional"))
    return cast_operand(a, _float_dtype(a))


def _identity_like(a: Any) -> Any:
    n = a.shape[-1]
    return lax.broadcast_to(np.eye(n, dtype=a.dtype), a.shape)


@_linalg(np.linalg.cholesky)
def cholesky(a, /, *, upper=False):
    a = _matrices(a, "cholesky")
    low = lax.cholesky(a)
    return lax.adjoint(low) if upper else low


@_linalg(np.linalg.solve)
def solve(a, b):
    a = _matrices(a, "solve")
    b = asarray(b)
    dt = _float_dtype(a, b)
    a, b = cast_operand(a, dt), cast_operand(b, dt)
    n = a.shape[-1]
    if b.ndim == 1:  # one vector for every matrix of the stack
        b = lax.broadcast_to(lax.reshape(b, (n, 1)), a.shape[:-2] + (n, 1))
        return lax.reshape(lax.solve(a, b), a.shape[:-1])
    if b.shape[-2] != n:
        raise TransfuseLinAlgError(with_location(
            f"numpy.linalg.solve: right-hand side of shape {b.shape} does not fit matrices "
            f"of shape {a.shape}"))
    batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return lax.solve(lax.broadcast_to(a, batch + a.shape[-2:]),
                     lax.broadcast_to(b, batch + b.shape[-2:]))


@_linalg(np.linalg.inv)
def inv(a):
    a = _matrices(a, "inv")
    return lax.solve(a, _identity_like(a))


@_linalg(np.linalg.slogdet)
def slogdet(a):
    sign, logabsdet = lax.slogdet(_matrices(a, "slogdet"))
    return sign, logabsdet


@_linalg(np.linalg.det)
def det(a):
    sign, logabsdet = lax.slogdet(_matrices(a, "det"))
    return lax.mul(sign, lax.convert(lax.exp(logabsdet), sign.dtype))


@_linalg(np.linalg.eigh)
def eigh(a, UPLO="L"):  # noqa: N803  (NumPy's name)
    a = _matrices(a, "eigh")
    # UPLO='U': the Hermitian matrix of the upper triangle has (upper)^H as its lower one.
    w, v = lax.eigh(a if _lower(UPLO) else lax.adjoint(a))
    return w, v


@_linalg(np.linalg.eigvalsh)
def eigvalsh(a, UPLO="L"):  # noqa: N803
    a = _matrices(a, "eigvalsh")
    return lax.eigh(a if _lower(UPLO) else lax.adjoint(a))[0]


def _lower(uplo: str) -> bool:
    if uplo not in ("L", "U"):
        raise TransfuseLinAlgError(with_location(f"UPLO argument must be 'L' or 'U', got "
                                                 f"{uplo!r}"))
    return uplo == "L"


@_linalg(np.linalg.matrix_power)
def matrix_power(a, n):
    a = asarray(a)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        _matrices(a, "matrix_power")
    if not isinstance(n, (int, np.integer)):
        raise TypeError("exponent must be an integer")
    if n == 0:
        return lax.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape)
    if n < 0:
        a, n = inv(a), -n
    result, square = None, a
    while n:  # binary powering, as NumPy does
        if n & 1:
            result = square if result is None else np.matmul(result, square)
        n >>= 1
        if n:
            square = np.matmul(square, square)
    return result


@_linalg(np.linalg.multi_dot)
def multi_dot(arrays, *, out=None):
    if out is not None:
        raise unsupported("numpy.linalg.multi_dot(..., out=...)", "use the returned value")
    arrays = [asarray(x) for x in arrays]
    if len(arrays) < 2:
        raise ValueError("Expecting at least two arrays.")
    first_vector, last_vector = arrays[0].ndim == 1, arrays[-1].ndim == 1
    if first_vector:
        arrays[0] = lax.reshape(arrays[0], (1,) + arrays[0].shape)
    if last_vector:
        arrays[-1] = lax.reshape(arrays[-1], arrays[-1].shape + (1,))
    result = _chain(arrays, _chain_order([x.shape for x in arrays]), 0, len(arrays) - 1)
    if first_vector:
        result = lax.reshape(result, result.shape[1:])
    if last_vector:
        result = lax.reshape(result, result.shape[:-1])
    return result


def _chain_order(shapes: Sequence[tuple[int, ...]]) -> list[list[int]]:
    """Where to split each sub-chain: the cheapest order, as NumPy's multi_dot finds it."""
    dims = [s[0] for s in shapes] + [shapes[-1][1]]
    n = len(shapes)
    cost = [[0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            cost[i][j] = None
            for k in range(i, j):
                c = cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1]
                if cost[i][j] is None or c < cost[i][j]:
                    cost[i][j], split[i][j] = c, k
    return split


def _chain(arrays: list, split: list[list[int]], i: int, j: int) -> Any:
    if i == j:
        return arrays[i]
    k = split[i][j]
    return np.matmul(_chain(arrays, split, i, k), _chain(arrays, split, k + 1, j))


@_linalg(np.linalg.norm)
def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002  (NumPy's name)
    x = asarray(x)
    x = cast_operand(x, _float_dtype(x))
    if axis is None and ord is None:
        out = sqrt_zero_subgradient(np.sum(_abs_squared(x), axis=None))
        return lax.reshape(out, (1,) * x.ndim) if keepdims else out
    if axis is None:
        axis = tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes[0], keepdims)
    if len(axes) == 2:
        return _matrix_norm(x, ord, axes, keepdims)
    raise ValueError("Improper number of dimensions to norm.")


def _vector_norm(x: Any, ord: Any, axis: int, keepdims: bool) -> Any:  # noqa: A002
    mag = np.abs(x)
    if ord is None or ord == 2:
        return sqrt_zero_subgradient(np.sum(_abs_squared(x), axis=axis, keepdims=keepdims))
    if ord == np.inf:
        return np.max(mag, axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return np.min(mag, axis=axis, keepdims=keepdims)
    if ord == 0:
        return np.sum((x != 0).astype(mag.dtype), axis=axis, keepdims=keepdims)
    if ord == 1:
        return np.sum(mag, axis=axis, keepdims=keepdims)
    if isinstance(ord, str):
        raise ValueError(f"Invalid norm order '{ord}' for vectors")
    p = float(ord)
    return root_zero_subgradient(np.sum(mag ** p, axis=axis, keepdims=keepdims), p)


def _matrix_norm(x: Any, ord: Any, axes: tuple, keepdims: bool) -> Any:  # noqa: A002
    row, col = (int(a) % x.ndim for a in axes)
    if row == col:
        raise ValueError("Duplicate axes given.")
    mag = np.abs(x)
    if ord is None or ord == "fro":
        out = sqrt_zero_subgradient(np.sum(_abs_squared(x), axis=(row, col)))
    elif ord in (1, -1):
        sums = np.sum(mag, axis=row)
        out = (np.max if ord == 1 else np.min)(sums, axis=col - (col > row))
    elif ord in (np.inf, -np.inf):
        sums = np.sum(mag, axis=col)
        out = (np.max if ord == np.inf else np.min)(sums, axis=row - (row > col))
    elif ord in (2, -2, "nuc"):
        moved = lax.transpose(x, [d for d in range(x.ndim) if d not in (row, col)] + [row, col])
        s = lax.svd(moved, compute_uv=False)[0]
        reduce = {2: np.max, -2: np.min, "nuc": np.sum}[ord]
        out = reduce(s, axis=-1)
    else:
        raise ValueError("Invalid norm order for matrices.")
    if keepdims:
        shape = list(x.shape)
        shape[row] = shape[col] = 1
        out = lax.reshape(out, tuple(shape))
    return out


@_linalg(np.linalg.svd)
def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    a = _at_least_2d(a, "svd")
    if not compute_uv:
        return lax.svd(a, compute_uv=False)[0]
    u, s, vt = lax.svd(a, full_matrices=full_matrices)
    return u, s, vt


@_linalg(np.linalg.svdvals)
def svdvals(x, /):
    return lax.svd(_at_least_2d(x, "svdvals"), compute_uv=False)[0]


@_linalg(np.linalg.qr)
def qr(a, mode="reduced"):
    a = _at_least_2d(a, "qr")
    if mode not in ("reduced", "complete", "r"):
        raise unsupported(f"numpy.linalg.qr(..., mode={mode!r})",
                          "use mode='reduced', 'complete' or 'r'")
    q, r = lax.qr(a, complete=mode == "complete")
    return r if mode == "r" else (q, r)


def _cutoff_mask(s: Any, rcond: Any) -> Any:
    """Which singular values count: s > rcond * max(s) over each matrix."""
    return np.greater(s, np.multiply(rcond, np.max(s, axis=-1, keepdims=True)))


@_linalg(np.linalg.pinv)
def pinv(a, rcond=None, hermitian=False, *, rtol=None):
    a = _at_least_2d(a, "pinv")
    m, n = a.shape[-2:]
    if rcond is None:
        rcond = max(m, n) * np.finfo(a.dtype).eps if rtol is None else rtol
    if m == 0 or n == 0:
        return lax.full(a.shape[:-2] + (n, m), 0, a.dtype)
    u, s, vt = lax.svd(a, full_matrices=False)
    large = _cutoff_mask(s, rcond)
    s_inv = np.where(large, np.divide(1.0, np.where(large, s, 1.0)), 0.0).astype(a.dtype)
    return np.matmul(lax.adjoint(vt), np.multiply(np.expand_dims(s_inv, -1), lax.adjoint(u)))


@_linalg(np.linalg.lstsq)
def lstsq(a, b, rcond=None):
    a, b = _at_least_2d(a, "lstsq"), asarray(b)
    dt = _float_dtype(a, b)
    a, b = cast_operand(a, dt), cast_operand(b, dt)
    m, n = a.shape[-2:]
    if rcond is None:
        rcond = np.finfo(dt).eps * max(m, n)
    vector = b.ndim == 1
    b2 = lax.reshape(b, (m, 1)) if vector else b
    u, s, vt = lax.svd(a, full_matrices=False)
    large = _cutoff_mask(s, rcond)
    s_inv = np.where(large, np.divide(1.0, np.where(large, s, 1.0)), 0.0).astype(dt)
    x = np.matmul(lax.adjoint(vt), np.expand_dims(s_inv, -1) * np.matmul(lax.adjoint(u), b2))
    rank = np.sum(large.astype(np.int32), axis=-1).astype(np.int32)  # NumPy's dtype
    if m > n:  # NumPy leaves these empty when a is rank-deficient: traced, they are kept
        residuals = np.sum(_abs_squared(np.matmul(a, x) - b2), axis=-2)
    else:
        residuals = lax.full((0,), 0, real_dtype(dt))
    if vector:
        x = lax.reshape(x, (n,))
    return x, residuals, rank, s


@_linalg(np.linalg.matrix_rank)
def matrix_rank(A, tol=None, hermitian=False, *, rtol=None):  # noqa: N803
    a = asarray(A)
    if a.ndim < 2:
        return np.any(a != 0).astype(np.int64)
    a = cast_operand(a, _float_dtype(a))
    s = lax.svd(a, compute_uv=False)[0]
    if tol is None:
        rtol = max(a.shape[-2:]) * np.finfo(a.dtype).eps if rtol is None else rtol
        tol = np.max(s, axis=-1, keepdims=True) * rtol
    else:
        tol = np.expand_dims(asarray(tol), -1)
    return np.sum(np.greater(s, tol).astype(np.int64), axis=-1)


@_linalg(np.linalg.cond)
def cond(x, p=None):
    x = _matrices(x, "cond")
    if p is None or p in (2, -2):
        s = lax.svd(x, compute_uv=False)[0]
        first, last = s[..., 0], s[..., -1]
        return first / last if p != -2 else last / first
    return norm(x, p, axis=(-2, -1)) * norm(inv(x), p, axis=(-2, -1))


@_linalg(np.linalg.tensorsolve)
def tensorsolve(a, b, axes=None):
    a, b = asarray(a), asarray(b)
    if axes is not None:
        order = [k for k in range(a.ndim) if k not in [x % a.ndim for x in axes]]
        order += [x % a.ndim for x in axes]
        a = lax.transpose(a, order)
    rows = int(np.prod(b.shape, dtype=np.int64))
    x_shape = a.shape[b.ndim:]
    cols = int(np.prod(x_shape, dtype=np.int64))
    if rows != cols:
        raise TransfuseLinAlgError(with_location(
            f"numpy.linalg.tensorsolve: a of shape {a.shape} is not square over b's "
            f"{rows} entries"))
    x = solve(lax.reshape(a, (rows, cols)), lax.reshape(b, (rows,)))
    return lax.reshape(x, x_shape)


@_linalg(np.linalg.tensorinv)
def tensorinv(a, ind=2):
    a = asarray(a)
    if ind <= 0:
        raise ValueError("Invalid ind argument.")
    out_shape = a.shape[ind:] + a.shape[:ind]
    rows = int(np.prod(a.shape[:ind], dtype=np.int64))
    cols = int(np.prod(a.shape[ind:], dtype=np.int64))
    if rows != cols:
        raise TransfuseLinAlgError(with_location(
            f"numpy.linalg.tensorinv: the first {ind} axes of a {a.shape} array do not hold "
            "as many entries as the rest"))
    return lax.reshape(inv(lax.reshape(a, (rows, cols))), out_shape)


globals().update(EXPORTS)
