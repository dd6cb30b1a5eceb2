"""`Parameter`: the marker that tells a module "this array is a trainable parameter"."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_array(value: Any) -> bool:
    """Whether value can be a parameter or buffer: a NumPy array or a traced array."""
    # Duck typing keeps traced values (and other array objects) acceptable without importing
    # the tracer here.
    return (hasattr(value, "shape") and hasattr(value, "dtype")
            and not isinstance(value, (type, Parameter)))


class Parameter:
    """Marks an array as a parameter when assigned to a module attribute.

    A module stores the plain array it wraps: `module.weight` is an ordinary `np.ndarray`
    (the same object as `Parameter(a).data`), so user code only ever sees plain NumPy
    arrays. Assigning one `Parameter` to two modules ties their weights.
    """

    __slots__ = ("data",)

    def __init__(self, data: Any):
        if isinstance(data, Parameter):
            data = data.data
        self.data = data if is_array(data) and not isinstance(data, np.generic) \
            else np.asarray(data)

    @property
    def shape(self) -> tuple[int, ...]:
        """The wrapped array's shape."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """The wrapped array's dtype."""
        return self.data.dtype

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.array(self.data, dtype=dtype, copy=copy)

    def __repr__(self) -> str:
        return f"Parameter containing:\n{self.data!r}"
