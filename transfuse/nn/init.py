"""Parameter initialisation, as torch.nn.init: in-place fills drawn from a seedable generator.

Layers draw their initial parameters from one module-level `numpy.random.Generator`.
`seed(n)` resets it, so building the same models after `seed(n)` gives the same numbers.
Like torch's default generator it starts from a fixed seed (0), so a script that never
calls `seed` is reproducible too. Every function here also takes `generator=` to draw
from a generator of your own instead. This generator is separate from `transfuse.random`
(which is for random numbers inside traced functions).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transfuse.ir.errors import TransfuseValueError

_DEFAULT_SEED = 0
_generator = np.random.default_rng(_DEFAULT_SEED)


def seed(n: int) -> None:
    """Reset the generator that layers draw their initial parameters from."""
    global _generator
    _generator = np.random.default_rng(n)


def get_generator() -> np.random.Generator:
    """The generator that initialisation draws from when no `generator=` is given."""
    return _generator


def _pick(generator: np.random.Generator | None) -> np.random.Generator:
    return _generator if generator is None else generator


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (torch.nn.init.calculate_gain)."""
    linear_like = ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "identity",
                   "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
    if nonlinearity in linear_like:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise TransfuseValueError(f"unsupported nonlinearity {nonlinearity!r} for calculate_gain")


def calculate_fan_in_and_fan_out(array: Any) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel)."""
    if array.ndim < 2:
        raise TransfuseValueError(
            f"fan in and fan out need an array with at least 2 dimensions, got shape "
            f"{tuple(array.shape)}")
    receptive_field = math.prod(array.shape[2:])
    return array.shape[1] * receptive_field, array.shape[0] * receptive_field


def _fan(array: Any, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise TransfuseValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(array: np.ndarray, a: float = 0.0, b: float = 1.0,
             generator: np.random.Generator | None = None) -> np.ndarray:
    """Fill array with U(a, b) draws; returns it."""
    array[...] = _pick(generator).uniform(a, b, size=array.shape)
    return array


def normal_(array: np.ndarray, mean: float = 0.0, std: float = 1.0,
            generator: np.random.Generator | None = None) -> np.ndarray:
    """Fill array with N(mean, std**2) draws; returns it."""
    array[...] = _pick(generator).normal(mean, std, size=array.shape)
    return array


def constant_(array: np.ndarray, val: float) -> np.ndarray:
    """Fill array with val; returns it."""
    array[...] = val
    return array


def zeros_(array: np.ndarray) -> np.ndarray:
    """Fill array with zeros; returns it."""
    return constant_(array, 0)


def ones_(array: np.ndarray) -> np.ndarray:
    """Fill array with ones; returns it."""
    return constant_(array, 1)


def kaiming_uniform_(array: np.ndarray, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu",
                     generator: np.random.Generator | None = None) -> np.ndarray:
    """He-uniform fill: U(-bound, bound), bound = gain * sqrt(3 / fan); returns array."""
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(array, mode))
    return uniform_(array, -bound, bound, generator)


def kaiming_normal_(array: np.ndarray, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu",
                    generator: np.random.Generator | None = None) -> np.ndarray:
    """He-normal fill: N(0, std**2), std = gain / sqrt(fan); returns array."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(array, mode))
    return normal_(array, 0.0, std, generator)


def xavier_uniform_(array: np.ndarray, gain: float = 1.0,
                    generator: np.random.Generator | None = None) -> np.ndarray:
    """Glorot-uniform fill: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound, generator)


def xavier_normal_(array: np.ndarray, gain: float = 1.0,
                   generator: np.random.Generator | None = None) -> np.ndarray:
    """Glorot-normal fill: N(0, std**2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    return normal_(array, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)
