"""softmax: row-wise softmax of a 4096x1024 float32 matrix (a reduction, a map, a reduction)."""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import (
    Case,
    jax_system,
    numba_system,
    numpy_system,
    torch_system,
)

NAME = "softmax"


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _numba_softmax(numba):
    @numba.njit
    def softmax_rows(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            row_max = x[i, 0]
            for j in range(1, x.shape[1]):
                row_max = max(row_max, x[i, j])
            total = np.float32(0.0)
            for j in range(x.shape[1]):
                e = np.exp(x[i, j] - row_max)
                out[i, j] = e
                total += e
            scale = np.float32(1.0) / total
            for j in range(x.shape[1]):
                out[i, j] *= scale
        return out

    return softmax_rows


def cases(quick: bool) -> list[Case]:
    """Softmax over rows of (4096, 1024) float32 ((64, 128) under --quick)."""
    rows, cols = (64, 128) if quick else (4096, 1024)

    def setup() -> tuple:
        return (np.random.default_rng(1).standard_normal((rows, cols), dtype=np.float32),)

    def torch_softmax(torch):
        return lambda x: torch.softmax(x, dim=-1)

    return [Case(
        NAME, "rows", f"softmax over the last axis of ({rows}, {cols}) float32", setup,
        transform=lambda tx: softmax, plain=True,
        baselines={
            "numpy": numpy_system(softmax),
            "numba": numba_system(_numba_softmax),
            "jax": jax_system(lambda jax, jnp: jax.jit(lambda x: jax.nn.softmax(x, axis=-1))),
            "torch": torch_system(torch_softmax),
            "torch.compile": torch_system(torch_softmax, compiled=True),
        })]
