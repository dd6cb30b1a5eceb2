"""NumPy scalars: which 0-d results NumPy returns as scalars rather than as 0-d arrays.

A ufunc of 0-d operands, a full reduction (np.sum(x), x.max(), np.mean(x, axis=(0, 1))),
np.dot or `@` of two vectors, np.linalg.norm, np.median, ... return a NumPy scalar, and a
scalar is immutable: `s op= y` rebinds s (to a value of the promoted dtype and the
broadcast shape) instead of writing into a buffer, and a reshape or a `s[...]` of it is a
new array, not a view. transfuse marks the traced values that stand for NumPy scalars
(`Builder.scalars`): inplace_op (_core.py) rebinds them, the view functions (_indexing.py)
copy them. The functions below, and the view-like methods, give 0-d arrays as NumPy does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.tracing import NUMPY_TABLE, Tracer

# NumPy functions whose 0-d results are 0-d arrays: views, copies, constructors and the few
# that finish with np.asarray / np.empty (checked against NumPy 2.4; tests/test_scalars.py
# compares every catalogued function's 0-d results with NumPy's).
ARRAY_RESULTS = frozenset({
    np.reshape, np.ravel, np.transpose, np.swapaxes, np.moveaxis, np.rollaxis, np.squeeze,
    np.expand_dims, np.atleast_1d, np.atleast_2d, np.atleast_3d, np.broadcast_to,
    np.broadcast_arrays, np.matrix_transpose, np.real, np.imag, np.copy, np.roll, np.tile,
    np.resize, np.pad, np.diff, np.take_along_axis, np.where, np.select, np.piecewise,
    np.cov, np.cross, np.tensordot, np.zeros, np.ones, np.empty, np.full, np.zeros_like,
    np.ones_like, np.empty_like, np.full_like, np.linalg.tensordot, np.linalg.tensorsolve,
    np.linalg.matrix_power, np.linalg.matrix_transpose,
    "ndarray.conj", "ndarray.conjugate",  # methods (np.conjugate, the ufunc, gives a scalar)
})


def is_scalar(x: Any) -> bool:
    """Whether x is a traced value that stands for a NumPy scalar."""
    return isinstance(x, Tracer) and x._var in x._builder.scalars


def as_scalars(out: Any, args: tuple = ()) -> Any:
    """out with each 0-d traced value marked as a NumPy scalar (tuples and lists walked).

    A value that is one of the arguments (an implementation that returned its input) is
    copied first: the mark would otherwise reach the caller's array, whose `op=` writes.
    """
    if isinstance(out, (tuple, list)):
        parts = [as_scalars(part, args) for part in out]
        if isinstance(out, list):
            return parts
        return type(out)(*parts) if hasattr(out, "_fields") else tuple(parts)
    if not isinstance(out, Tracer) or out.shape:
        return out
    if any(out is a or (isinstance(a, Tracer) and a._var is out._var) for a in args):
        out = lax.copy(out)
    out._builder.scalars.add(out._var)
    return out


def as_arrays(out: Any) -> Any:
    """out with each traced NumPy scalar in it replaced by a 0-d array copy (NumPy makes a
    new array from a scalar: writes into it leave the scalar alone)."""
    if isinstance(out, (tuple, list)):
        parts = [as_arrays(part) for part in out]
        if isinstance(out, list):
            return parts
        return type(out)(*parts) if hasattr(out, "_fields") else tuple(parts)
    return lax.copy(out) if is_scalar(out) else out


def _gives_arrays(key: Any, args: tuple, kwargs: dict) -> bool:
    if key in ARRAY_RESULTS:
        return True
    if key is np.einsum:  # optimize= contracts pairs with np.tensordot: 0-d arrays
        return bool(kwargs.get("optimize", False)) and sum(
            not isinstance(a, str) for a in args) >= 2
    return False


def numpy_result(key: Any, args: tuple, kwargs: dict, out: Any) -> Any:
    """The result of NumPy function (or ndarray method) `key` as NumPy returns it: its 0-d
    values marked as NumPy scalars, unless NumPy gives 0-d arrays there."""
    if _gives_arrays(key, args, kwargs):
        return as_arrays(out)
    return as_scalars(out, args)


NUMPY_TABLE["result"] = numpy_result
