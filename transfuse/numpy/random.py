"""transfuse.numpy.random: NumPy's random functions, usable eagerly and inside transforms."""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.core import check_dtype
from transfuse.ir.tracing import current_builder
from transfuse.random import next_key, seed

from ._core import asarray, call_ufunc, result_type, shape_of

__all__ = ["seed", "normal", "uniform", "randn", "rand", "randint", "bernoulli",
           "standard_normal", "random"]


def _size(size: Any) -> tuple[int, ...] | None:
    if size is None:
        return None
    return (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(d) for d in size)


def _draw(kind: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """Draws from the trace's key (a fresh stream per call site) or the global state."""
    builder = current_builder()
    if builder is None:
        key, stream = next_key(), 0
    else:
        key, stream = builder.rng_key(), builder.next_stream()
    fn = lax.random_normal if kind == "normal" else lax.random_uniform
    return fn(key, shape, check_dtype(dtype), stream)


def _shape_for(size: Any, *params: Any) -> tuple[int, ...]:
    shape = _size(size)
    if shape is None:
        shape = tuple(np.broadcast_shapes(*[shape_of(p) for p in params]))
    return shape


def normal(loc: Any = 0.0, scale: Any = 1.0, size: Any = None, *, dtype: Any = None) -> Any:
    """Normal draws with mean loc and standard deviation scale (float64 unless told)."""
    dt = np.dtype(dtype) if dtype is not None else result_type(loc, scale, 1.0)
    z = _draw("normal", _shape_for(size, loc, scale), dt)
    if isinstance(loc, (int, float)) and loc == 0 and isinstance(scale, (int, float)) \
            and scale == 1:
        return z
    return call_ufunc(np.add, call_ufunc(np.multiply, z, asarray(scale, dt)), asarray(loc, dt))


def standard_normal(size: Any = None, *, dtype: Any = np.float64) -> Any:
    return _draw("normal", _size(size) or (), dtype)


def uniform(low: Any = 0.0, high: Any = 1.0, size: Any = None, *, dtype: Any = None) -> Any:
    """Uniform draws in [low, high) (float64 unless told)."""
    dt = np.dtype(dtype) if dtype is not None else result_type(low, high, 1.0)
    u = _draw("uniform", _shape_for(size, low, high), dt)
    low_, high_ = asarray(low, dt), asarray(high, dt)
    return call_ufunc(np.add, low_, call_ufunc(np.multiply, u,
                                               call_ufunc(np.subtract, high_, low_)))


def randn(*shape: int) -> Any:
    return _draw("normal", tuple(int(d) for d in shape), np.float64)


def rand(*shape: int) -> Any:
    return _draw("uniform", tuple(int(d) for d in shape), np.float64)


def random(size: Any = None) -> Any:
    return _draw("uniform", _size(size) or (), np.float64)


def randint(low: int, high: int | None = None, size: Any = None, dtype: Any = np.int64) -> Any:
    """Integers in [low, high), or [0, low) when high is None."""
    if high is None:
        low, high = 0, low
    u = _draw("uniform", _size(size) or (), np.float64)
    span = float(int(high) - int(low))
    value = lax.add(lax.floor(lax.mul(u, span)), float(low))
    return lax.convert(value, check_dtype(dtype))


def bernoulli(p: Any = 0.5, size: Any = None) -> Any:
    """Boolean draws that are True with probability p."""
    dt = result_type(p, 1.0)
    u = _draw("uniform", _shape_for(size, p), dt)
    return call_ufunc(np.less, u, asarray(p, dt))
