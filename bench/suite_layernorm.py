"""layernorm: layer normalisation of 4096 rows of 1024 float32 features, with scale and shift."""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import (
    Case,
    jax_system,
    numba_system,
    numpy_system,
    torch_system,
)

NAME = "layernorm"
EPS = 1e-5


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance)."""
    mean = np.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + EPS) * gamma + beta


def _numba_layernorm(numba):
    @numba.njit
    def layernorm_rows(x, gamma, beta):
        out = np.empty_like(x)
        n = x.shape[1]
        for i in range(x.shape[0]):
            total = np.float32(0.0)
            for j in range(n):
                total += x[i, j]
            mean = total / n
            squares = np.float32(0.0)
            for j in range(n):
                d = x[i, j] - mean
                squares += d * d
            inv_std = np.float32(1.0) / np.sqrt(squares / n + np.float32(EPS))
            for j in range(n):
                out[i, j] = (x[i, j] - mean) * inv_std * gamma[j] + beta[j]
        return out

    return layernorm_rows


def _jax_layernorm(jax, jnp):
    def layernorm_jax(x, gamma, beta):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + EPS) * gamma + beta

    return jax.jit(layernorm_jax)


def _torch_layernorm(torch):
    return lambda x, gamma, beta: torch.nn.functional.layer_norm(
        x, (x.shape[-1],), gamma, beta, eps=EPS)


def cases(quick: bool) -> list[Case]:
    """LayerNorm of (4096, 1024) float32 ((64, 128) under --quick)."""
    rows, cols = (64, 128) if quick else (4096, 1024)

    def setup() -> tuple:
        rng = np.random.default_rng(2)
        x = (3 * rng.standard_normal((rows, cols)) + 1).astype(np.float32)
        gamma = (1 + 0.1 * rng.standard_normal(cols)).astype(np.float32)
        beta = (0.1 * rng.standard_normal(cols)).astype(np.float32)
        return x, gamma, beta

    return [Case(
        NAME, "rows", f"LayerNorm over the last axis of ({rows}, {cols}) float32, "
                      f"eps {EPS}", setup, transform=lambda tx: layernorm, plain=True,
        baselines={
            "numpy": numpy_system(layernorm),
            "numba": numba_system(_numba_layernorm),
            "jax": jax_system(_jax_layernorm),
            "torch": torch_system(_torch_layernorm),
            "torch.compile": torch_system(_torch_layernorm, compiled=True),
        })]
