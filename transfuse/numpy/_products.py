"""NumPy 2's vector and matrix products on traced values: the gufuncs np.vecdot, np.matvec,
np.vecmat and the array-API names np.linalg.vecdot, outer, tensordot, matmul, diagonal,
trace and np.matrix_transpose — each written with the contractions of _functions.py.

vecdot and vecmat conjugate their first operand, as NumPy does; vecdot is a multiply and
a sum (it fuses into one loop), matvec and vecmat a matmul (one dot_general: BLAS on CPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.errors import ShapeError, TransfuseValueError
from transfuse.ir.source import with_location

from . import linalg
from ._core import (
    asarray,
    call_ufunc,
    cast_operand,
    implements,
    normalize_axis,
    result_type,
    shape_of,
)
from ._functions import diagonal, matmul, outer, tensordot, trace, transpose

LINALG_NAMES = ("vecdot", "outer", "tensordot", "matmul", "diagonal", "trace",
                "matrix_transpose")


def _linalg(np_func):
    return implements(np_func, exports=linalg.EXPORTS)


def _promoted(x1: Any, x2: Any) -> tuple[Any, Any]:
    a, b = asarray(x1), asarray(x2)
    dt = result_type(a, b)
    return cast_operand(a, dt), cast_operand(b, dt)


def _core_dims(name: str, signature: str, shapes: tuple, needed: tuple[int, int]) -> None:
    """NumPy's gufunc checks: enough dimensions for the core of each operand."""
    for i, (shape, k) in enumerate(zip(shapes, needed)):
        if len(shape) < k:
            raise TransfuseValueError(with_location(
                f"{name}: Input operand {i} does not have enough dimensions (has "
                f"{len(shape)}, gufunc core with signature {signature} requires {k})"))


def _core_match(name: str, signature: str, n: int, m: int) -> None:
    if n != m:
        raise ShapeError(with_location(
            f"{name}: Input operand 1 has a mismatch in its core dimension 0, with gufunc "
            f"signature {signature} (size {m} is different from {n})"))


def _conj(x: Any) -> Any:
    return lax.conj(x) if lax.is_complex(x) else x


@implements(np.vecdot)
def vecdot(x1, x2, out=None, *, axis=-1):
    """sum(conj(x1) * x2) over an axis, the others broadcast (np.vecdot, np.linalg.vecdot)."""
    if out is not None:
        raise TransfuseValueError(with_location("vecdot: out= is not supported on traced "
                                                "values; use the returned array"))
    a, b = _promoted(x1, x2)
    _core_dims("vecdot", "(n),(n)->()", (shape_of(a), shape_of(b)), (1, 1))
    a = _axis_last(a, axis)
    b = _axis_last(b, axis)
    _core_match("vecdot", "(n),(n)->()", shape_of(a)[-1], shape_of(b)[-1])
    products = call_ufunc(np.multiply, _conj(a), b)
    return lax.reduce_sum(products, (len(shape_of(products)) - 1,))


def _axis_last(x: Any, axis: int) -> Any:
    ax = normalize_axis(axis, len(shape_of(x)))
    rest = [i for i in range(len(shape_of(x))) if i != ax]
    return x if ax == len(rest) else lax.transpose(x, rest + [ax])


@implements(np.matvec)
def matvec(x1, x2, out=None):
    """x1[..., m, n] @ x2[..., n] -> [..., m], batch dimensions broadcast."""
    a, b = _promoted(x1, x2)
    _core_dims("matvec", "(m,n),(n)->(m)", (shape_of(a), shape_of(b)), (2, 1))
    _core_match("matvec", "(m,n),(n)->(m)", shape_of(a)[-1], shape_of(b)[-1])
    column = lax.expand_dims(b, (len(shape_of(b)),))
    product = matmul(a, column, out)
    return lax.squeeze(product, (len(shape_of(product)) - 1,))


@implements(np.vecmat)
def vecmat(x1, x2, out=None):
    """conj(x1[..., n]) @ x2[..., n, m] -> [..., m], batch dimensions broadcast."""
    a, b = _promoted(x1, x2)
    _core_dims("vecmat", "(n),(n,m)->(m)", (shape_of(a), shape_of(b)), (1, 2))
    _core_match("vecmat", "(n),(n,m)->(m)", shape_of(a)[-1], shape_of(b)[-2])
    row = lax.expand_dims(_conj(a), (len(shape_of(a)) - 1,))
    product = matmul(row, b, out)
    return lax.squeeze(product, (len(shape_of(product)) - 2,))


# ---------------------------------------------------------------------------------------
# np.linalg's array-API names


@_linalg(np.linalg.vecdot)
def linalg_vecdot(x1, x2, /, *, axis=-1):
    return vecdot(x1, x2, axis=axis)


@_linalg(np.linalg.outer)
def linalg_outer(x1, x2, /):
    a, b = asarray(x1), asarray(x2)
    if len(shape_of(a)) != 1 or len(shape_of(b)) != 1:
        raise TransfuseValueError(with_location(
            f"Input arrays must be one-dimensional, but they are x1.ndim={len(shape_of(a))} "
            f"and x2.ndim={len(shape_of(b))}."))
    return outer(a, b)


@_linalg(np.linalg.tensordot)
def linalg_tensordot(x1, x2, /, *, axes=2):
    return tensordot(x1, x2, axes)


@_linalg(np.linalg.matmul)
def linalg_matmul(x1, x2, /):
    return matmul(x1, x2)


@_linalg(np.linalg.diagonal)
def linalg_diagonal(x, /, *, offset=0):
    return diagonal(x, offset, -2, -1)


@_linalg(np.linalg.trace)
def linalg_trace(x, /, *, offset=0, dtype=None):
    return trace(x, offset, -2, -1, dtype)


@implements(np.matrix_transpose)
def matrix_transpose(x, /):
    """The last two axes swapped: a view, as NumPy's."""
    x = asarray(x)
    nd = len(shape_of(x))
    if nd < 2:
        raise TransfuseValueError(with_location(
            f"Input array must be at least 2-dimensional, but it is {nd}"))
    return transpose(x, list(range(nd - 2)) + [nd - 1, nd - 2])


_linalg(np.linalg.matrix_transpose)(matrix_transpose)
# tnp.linalg took its names from linalg.EXPORTS when it was imported: add these.
vars(linalg).update({name: linalg.EXPORTS[name] for name in LINALG_NAMES})
