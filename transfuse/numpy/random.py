"""transfuse.numpy.random: NumPy's random functions, usable eagerly and inside transforms.

Every draw is a counter-based random primitive (see transfuse/random.py). `Draws` holds the
samplers over a source of keys: the global state eagerly, the trace's key inside a trace.
transfuse/numpy/_np_random.py routes `np.random.*` calls made while tracing here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.core import check_dtype
from transfuse.ir.tracing import current_builder
from transfuse.random import next_key, seed

from ._core import asarray, call_ufunc, result_type, shape_of, unsupported

__all__ = ["seed", "normal", "uniform", "randn", "rand", "randint", "bernoulli",
           "standard_normal", "random", "random_sample", "exponential",
           "standard_exponential", "choice", "Draws"]


def _size(size: Any) -> tuple[int, ...] | None:
    if size is None:
        return None
    return (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(d) for d in size)


def _shape_for(size: Any, *params: Any) -> tuple[int, ...]:
    shape = _size(size)
    if shape is None:
        shape = tuple(np.broadcast_shapes(*[shape_of(p) for p in params]))
    return shape


def _is_number(x: Any, value: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == value


class GlobalKeys:
    """Keys of the global state eagerly; inside a trace, streams of the trace's key."""

    def key_and_stream(self) -> tuple[Any, int]:
        builder = current_builder()
        if builder is None:
            return next_key(), 0
        return builder.rng_key(), builder.next_stream()


class Draws:
    """NumPy's samplers over one source of keys (module functions, or a generator's)."""

    def __init__(self, keys: GlobalKeys):
        self._keys = keys

    def _draw(self, kind: str, shape: tuple[int, ...], dtype: Any) -> Any:
        key, stream = self._keys.key_and_stream()
        fn = lax.random_normal if kind == "normal" else lax.random_uniform
        return fn(key, shape, check_dtype(dtype), stream)

    # -- continuous ---------------------------------------------------------------------
    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> Any:
        return self._draw("normal", _size(size) or (), dtype)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None, *,
               dtype: Any = None) -> Any:
        """Normal draws with mean loc and standard deviation scale (float64 unless told)."""
        dt = np.dtype(dtype) if dtype is not None else result_type(loc, scale, 1.0)
        z = self._draw("normal", _shape_for(size, loc, scale), dt)
        if _is_number(loc, 0) and _is_number(scale, 1):
            return z
        return call_ufunc(np.add, call_ufunc(np.multiply, z, asarray(scale, dt)),
                          asarray(loc, dt))

    def random(self, size: Any = None, dtype: Any = np.float64) -> Any:
        """Uniform draws in [0, 1)."""
        return self._draw("uniform", _size(size) or (), dtype)

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None, *,
                dtype: Any = None) -> Any:
        """Uniform draws in [low, high) (float64 unless told)."""
        dt = np.dtype(dtype) if dtype is not None else result_type(low, high, 1.0)
        u = self._draw("uniform", _shape_for(size, low, high), dt)
        low_, high_ = asarray(low, dt), asarray(high, dt)
        return call_ufunc(np.add, low_, call_ufunc(np.multiply, u,
                                                   call_ufunc(np.subtract, high_, low_)))

    def standard_exponential(self, size: Any = None, dtype: Any = np.float64) -> Any:
        u = self._draw("uniform", _size(size) or (), dtype)
        return call_ufunc(np.negative, call_ufunc(np.log1p, call_ufunc(np.negative, u)))

    def exponential(self, scale: Any = 1.0, size: Any = None) -> Any:
        """Exponential draws with the given scale (inverse transform of a uniform draw)."""
        dt = result_type(scale, 1.0)
        e = self.standard_exponential(_shape_for(size, scale), dt)
        return e if _is_number(scale, 1) else call_ufunc(np.multiply, e, asarray(scale, dt))

    # -- the legacy (RandomState) spellings ---------------------------------------------
    def rand(self, *shape: int) -> Any:
        return self.random(tuple(int(d) for d in shape))

    def randn(self, *shape: int) -> Any:
        return self.standard_normal(tuple(int(d) for d in shape))

    def random_sample(self, size: Any = None) -> Any:
        return self.random(size)

    # -- discrete -----------------------------------------------------------------------
    def integers(self, low: int, high: int | None = None, size: Any = None,
                 dtype: Any = np.int64, endpoint: bool = False) -> Any:
        """Integers in [low, high) ([low, high] with endpoint), [0, low) when high is None."""
        if high is None:
            low, high = 0, low
        span = float(int(high) - int(low) + int(bool(endpoint)))
        u = self._draw("uniform", _size(size) or (), np.float64)
        value = lax.add(lax.floor(lax.mul(u, span)), float(low))
        return lax.convert(value, check_dtype(dtype))

    def randint(self, low: int, high: int | None = None, size: Any = None,
                dtype: Any = np.int64) -> Any:
        return self.integers(low, high, size, dtype)

    def bernoulli(self, p: Any = 0.5, size: Any = None) -> Any:
        """Boolean draws that are True with probability p."""
        dt = result_type(p, 1.0)
        u = self._draw("uniform", _shape_for(size, p), dt)
        return call_ufunc(np.less, u, asarray(p, dt))

    def choice(self, a: Any, size: Any = None, replace: bool = True, p: Any = None) -> Any:
        """Draws from a (an int n stands for arange(n)), uniformly or with probabilities p."""
        if not replace:
            raise unsupported("numpy.random.choice(..., replace=False) inside a transform",
                              "it needs a random permutation, which transfuse cannot trace "
                              "yet; draw with replace=True or permute outside the function")
        n = int(a) if isinstance(a, (int, np.integer)) else shape_of(a)[0]
        shape = _size(size) or ()
        if p is None:
            index = self.integers(0, n, shape)
        else:
            index = self._index_by_probability(p, n, shape)
        if isinstance(a, (int, np.integer)):
            return index
        return asarray(a)[index]

    def _index_by_probability(self, p: Any, n: int, shape: tuple[int, ...]) -> Any:
        """The inverse of p's cumulative distribution at uniform draws."""
        cdf = np.cumsum(asarray(p, result_type(p, 1.0)))
        u = call_ufunc(np.multiply, self.random(shape), cdf[n - 1])
        below = call_ufunc(np.less_equal, cdf[: n - 1], np.expand_dims(u, -1))
        return np.sum(below.astype(np.int64), axis=-1)


_GLOBAL = Draws(GlobalKeys())

normal = _GLOBAL.normal
standard_normal = _GLOBAL.standard_normal
uniform = _GLOBAL.uniform
random = _GLOBAL.random
random_sample = _GLOBAL.random_sample
rand = _GLOBAL.rand
randn = _GLOBAL.randn
randint = _GLOBAL.randint
bernoulli = _GLOBAL.bernoulli
exponential = _GLOBAL.exponential
standard_exponential = _GLOBAL.standard_exponential
choice = _GLOBAL.choice
