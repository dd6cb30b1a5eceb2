"""tnp.r_ and tnp.c_: NumPy's index tricks, for traced values too.

NumPy's np.r_ turns every item into a NumPy array itself (no hook a traced value can
answer); these follow the same steps (numpy/lib/_index_tricks_impl.py, AxisConcatenator)
with transfuse.numpy's functions. The matrix directives 'r' and 'c' are not supported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir.errors import TransfuseValueError, UnsupportedError
from transfuse.ir.source import with_location

from . import _functions as F
from ._core import EXPORTS, asarray, ndim_of, result_type

_PY_SCALARS = (int, float, complex, bool, np.generic)


class AxisConcatenator:
    """Concatenates slices, arrays and scalars along an axis (np.r_, np.c_)."""

    def __init__(self, axis: int = 0, ndmin: int = 1, trans1d: int = -1):
        self.axis, self.ndmin, self.trans1d = axis, ndmin, trans1d

    def __getitem__(self, key: Any) -> Any:
        items = key if isinstance(key, tuple) else (key,)
        axis, ndmin, trans1d = self.axis, self.ndmin, self.trans1d
        objs, kinds = [], []
        for k, item in enumerate(items):
            if isinstance(item, str):
                if k != 0:
                    raise TransfuseValueError(with_location(
                        "r_/c_: a string directive must come first"))
                axis, ndmin, trans1d = _directive(item, axis, ndmin, trans1d)
                continue
            if isinstance(item, slice):
                obj = _from_slice(item, ndmin, trans1d)
                kinds.append(obj.dtype)
            elif isinstance(item, _PY_SCALARS):
                obj = item
                kinds.append(item)
            else:
                obj = _with_ndmin(asarray(item), ndmin, trans1d)
                kinds.append(obj.dtype)
            objs.append(obj)
        if not objs:
            return np.array([])
        # Scalars do not upcast arrays unless needed (NumPy's result_type of the items).
        dtype = result_type(*kinds)
        objs = [_with_ndmin(asarray(o, dtype), ndmin, -1) for o in objs]
        return F.concatenate(objs, axis=axis)

    def __len__(self) -> int:
        return 0


def _directive(item: str, axis: int, ndmin: int, trans1d: int) -> tuple[int, int, int]:
    if item in ("r", "c"):
        raise UnsupportedError(with_location(
            f"the r_/c_ directive {item!r} makes an np.matrix, which transfuse does not "
            "support; use np.stack or tnp.r_ without it"))
    try:
        parts = [int(p) for p in item.split(",")]
    except ValueError:
        raise TransfuseValueError(with_location(
            f"unknown special directive {item!r}")) from None
    if len(parts) > 3:
        raise TransfuseValueError(with_location(f"unknown special directive {item!r}"))
    axis = parts[0]
    if len(parts) >= 2:
        ndmin = parts[1]
    if len(parts) == 3:
        trans1d = parts[2]
    return axis, ndmin, trans1d


def _from_slice(item: slice, ndmin: int, trans1d: int) -> Any:
    start = 0 if item.start is None else item.start
    step = 1 if item.step is None else item.step
    if isinstance(step, (complex, np.complexfloating)):  # 5j: that many points, linspace
        obj = F.linspace(start, item.stop, num=int(abs(step)))
    else:
        obj = F.arange(start, item.stop, step)
    if ndmin > 1:
        obj = _with_ndmin(obj, ndmin, -1)
        if trans1d != -1:
            obj = F.swapaxes(obj, -1, trans1d)
    return obj


def _with_ndmin(x: Any, ndmin: int, trans1d: int) -> Any:
    """x with leading 1s up to ndmin dims; trans1d moves its own axes as NumPy does."""
    nd = ndim_of(x)
    if nd >= ndmin:
        return x
    x = F.reshape(x, (1,) * (ndmin - nd) + tuple(x.shape))
    if trans1d != -1:
        k2, k1 = ndmin - nd, trans1d
        if k1 < 0:
            k1 += k2 + 1
        order = list(range(ndmin))
        x = F.transpose(x, order[:k1] + order[k2:] + order[k1:k2])
    return x


r_ = AxisConcatenator(0)
c_ = AxisConcatenator(-1, ndmin=2, trans1d=0)
EXPORTS["r_"] = r_
EXPORTS["c_"] = c_
