"""elementwise: a fused chain of transcendental ufuncs, and one copy as the bandwidth floor.

The chain reads one float32 array and writes one; so does the copy. A fused kernel can
at best approach the copy's time, while eager NumPy makes a pass over memory per ufunc.
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

NAME = "elementwise"
HALF, ONE = np.float32(0.5), np.float32(1.0)


def chain(x: np.ndarray) -> np.ndarray:
    """tanh(x)*sigmoid(x) + 0.5*x*x - exp(-x*x) + sin(x)*cos(x)."""
    sigmoid = 1 / (1 + np.exp(-x))
    return np.tanh(x) * sigmoid + 0.5 * x * x - np.exp(-x * x) + np.sin(x) * np.cos(x)


def copy(x: np.ndarray) -> np.ndarray:
    return x.copy()


def chain_loop(x: np.ndarray) -> np.ndarray:
    """The chain as one hand-fused loop (compiled with numba.njit)."""
    out = np.empty_like(x)
    for i in range(x.size):
        v = x[i]
        sigmoid = ONE / (ONE + np.exp(-v))
        out[i] = np.tanh(v) * sigmoid + HALF * v * v - np.exp(-v * v) + np.sin(v) * np.cos(v)
    return out


def copy_loop(x: np.ndarray) -> np.ndarray:
    """One copy as a loop (compiled with numba.njit)."""
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = x[i]
    return out


def _jax_chain(jax, jnp):
    return jax.jit(lambda x: jnp.tanh(x) * jax.nn.sigmoid(x) + 0.5 * x * x - jnp.exp(-x * x)
                   + jnp.sin(x) * jnp.cos(x))


def _torch_chain(torch):
    return lambda x: (torch.tanh(x) * torch.sigmoid(x) + 0.5 * x * x - torch.exp(-x * x)
                      + torch.sin(x) * torch.cos(x))


def cases(quick: bool) -> list[Case]:
    """The chain and the copy on 4M float32 elements (4096 under --quick)."""
    size = 4096 if quick else 4 * 1024 * 1024

    def setup() -> tuple:
        return (np.random.default_rng(0).uniform(-3, 3, size).astype(np.float32),)

    chain_case = Case(
        NAME, "chain", f"tanh(x)*sigmoid(x) + 0.5*x*x - exp(-x*x) + sin(x)*cos(x), "
                       f"{size} float32", setup, transform=lambda tx: chain, plain=True,
        baselines={
            "numpy": numpy_system(chain),
            "numba": numba_system(lambda numba: numba.njit(chain_loop)),
            "jax": jax_system(_jax_chain),
            "torch": torch_system(_torch_chain),
            "torch.compile": torch_system(_torch_chain, compiled=True),
        })
    copy_case = Case(
        NAME, "copy", f"one copy of the same {size} float32 array: the memory-bandwidth "
                      "floor of the chain", setup, transform=lambda tx: copy, plain=True,
        baselines={
            "numpy": numpy_system(copy),
            "numba": numba_system(lambda numba: numba.njit(copy_loop)),
            "jax": jax_system(lambda jax, jnp: jax.jit(jnp.copy)),
            "torch": torch_system(lambda torch: torch.clone),
        })
    return [chain_case, copy_case]
