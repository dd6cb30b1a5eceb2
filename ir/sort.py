"""The `sort` primitive (as JAX's `lax.sort`): several operands of one shape sorted together.

`sort(*operands, num_keys, permutation)` sorts along the LAST axis (every leading axis a
stack axis, so vmap puts its batch axis in front), ordering the positions of each row
lexicographically by the first `num_keys` operands, stably (equal keys keep their order),
and returns every operand permuted the same way; with `permutation=True` the permutation
itself (int64: which input position each output position came from) follows as one more
output. Keys are real numbers or bools: floats sort NaN last (NumPy's order), -0.0 and 0.0
are equal. The NumPy-named functions (transfuse/numpy/sorting.py) move the sorted axis to
the end: argsort is the permutation, lexsort several keys.
"""

from __future__ import annotations

import numpy as np

from .core import Aval
from .errors import DTypeError, ShapeError
from .primitives import define

INDEX_DTYPE = np.dtype(np.int64)


def _sort_rule(*operands: Aval, num_keys: int, permutation: bool) -> list[Aval]:
    if not 1 <= num_keys <= len(operands):
        raise ShapeError(f"sort: num_keys={num_keys} for {len(operands)} operands")
    shape = operands[0].shape
    if len(shape) == 0:
        raise ShapeError("sort: operands must have at least one axis (it sorts the last)")
    for x in operands:
        if x.shape != shape:
            raise ShapeError(f"sort: operands of shapes {[o.shape for o in operands]} "
                             "(one shape needed)")
    for key in operands[:num_keys]:
        if key.dtype.kind not in "fiub":
            raise DTypeError(f"sort: keys must be real numbers or bools, got {key.dtype}")
    index = [Aval(shape, INDEX_DTYPE)] if permutation else []
    return list(operands) + index


def order_keys(key: np.ndarray) -> list[np.ndarray]:
    """Keys np.lexsort orders as sort does: floats NaN last (a NaN flag first)."""
    key = np.asarray(key)
    if key.dtype.kind == "f":
        nan = np.isnan(key)
        return [np.where(nan, 0, key), nan]  # lexsort: the last key is the primary one
    return [key]


def stable_permutation(keys: list[np.ndarray]) -> np.ndarray:
    """The stable lexicographic order of each row along the last axis (keys[0] first)."""
    shape = np.shape(keys[0])
    perm = np.empty(shape, INDEX_DTYPE)
    for row in np.ndindex(*shape[:-1]):
        parts = [k for key in reversed(keys) for k in order_keys(np.asarray(key)[row])]
        perm[row] = np.lexsort(parts) if parts else []
    return perm


def _sort_impl(*operands, num_keys, permutation):
    operands = [np.asarray(x) for x in operands]
    perm = stable_permutation(operands[:num_keys])
    outs = [np.take_along_axis(x, perm, axis=-1) for x in operands]
    return outs + ([perm] if permutation else [])


define("sort", _sort_rule, _sort_impl, multiple_results=True,
       doc="the operands permuted along the last axis into the stable lexicographic order of "
           "the first num_keys of them (floats NaN last), plus the int64 permutation when "
           "permutation=True, as jax.lax.sort")
