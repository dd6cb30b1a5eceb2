"""A pendulum integrated by RK4 in a Python loop (issue #15's compile-time program).

The loop unrolls when traced, so the program's size grows with the steps: the compile
suite times `jit(grad)` of it at several step counts, to show whether compile time grows
linearly with the program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

DT = 0.05


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """(initial state [angle, velocity], parameters [g, length]), float64."""
    return np.array([0.3, 0.1]), np.array([9.81, 1.0])


def energy_after(steps: int, xp: Any = np) -> Callable:
    """f(state, params): the sum of squares of the state after `steps` RK4 steps."""
    def f(state, params):
        g, length = params[0], params[1]

        def deriv(s):
            return xp.stack([s[1], -(g / length) * xp.sin(s[0])])

        s = state
        for _ in range(steps):
            k1 = deriv(s)
            k2 = deriv(s + DT / 2 * k1)
            k3 = deriv(s + DT / 2 * k2)
            k4 = deriv(s + DT * k3)
            s = s + DT / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return xp.sum(s ** 2)
    return f


def transform(steps: int) -> Callable:
    """What transfuse compiles: the gradient with respect to the parameters."""
    def make(tx):
        return tx.grad(energy_after(steps), argnums=1)
    return make


def jax_function(steps: int, jax: Any, jnp: Any) -> Callable:
    return jax.jit(jax.grad(energy_after(steps, jnp), argnums=1))
