"""dispatch: the per-call overhead of a trivial function, `x + 1` on 8 float32 elements.

What is measured is everything but the arithmetic: argument checks, signature lookup in the
compiled-code cache, the call into compiled code and the result's allocation.
"""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import (
    Case,
    jax_system,
    numba_system,
    numpy_system,
    torch_system,
)

NAME = "dispatch"


def add_one(x: np.ndarray) -> np.ndarray:
    return x + 1


def cases(quick: bool) -> list[Case]:
    """One case at the same size in both modes (it is tiny either way)."""
    return [Case(
        NAME, "add-one", "x + 1 on 8 float32 elements: per-call overhead",
        lambda: (np.arange(8, dtype=np.float32),), transform=lambda tx: add_one, plain=True,
        baselines={
            "numpy": numpy_system(add_one),
            "numba": numba_system(lambda numba: numba.njit(add_one)),
            "jax": jax_system(lambda jax, jnp: jax.jit(add_one)),
            "torch": torch_system(lambda torch: add_one),
        })]
