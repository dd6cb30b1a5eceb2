"""The MLPs of the seed use cases, written once per library.

The NumPy versions are what transfuse traces (plain `np.*` on traced values) and also what
the NumPy baselines run forward; the JAX and torch versions mirror them op for op.
Parameters are flat tuples (W1, b1, W2, b2, ...), weights stored (fan_in, fan_out).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


def init_mlp(rng: np.random.Generator, sizes: tuple[int, ...], dtype: type = np.float32
             ) -> tuple[np.ndarray, ...]:
    """Scaled-normal weights and small biases for layers sizes[0] -> ... -> sizes[-1]."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append((rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(dtype))
        params.append((0.1 * rng.standard_normal(fan_out)).astype(dtype))
    return tuple(params)


def stack_mlps(rng: np.random.Generator, count: int, sizes: tuple[int, ...]
               ) -> tuple[np.ndarray, ...]:
    """`count` independent MLPs' parameters stacked on a new leading axis."""
    models = [init_mlp(rng, sizes) for _ in range(count)]
    return tuple(np.stack(leaves) for leaves in zip(*models))


def one_hot_labels(rng: np.random.Generator, batch: int, classes: int) -> np.ndarray:
    """Random class labels as one-hot float32 rows."""
    return np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]


# ---------------------------------------------------------------------------------------
# NumPy (traced by transfuse)


def mlp(params: tuple, x: np.ndarray, act=np.tanh) -> np.ndarray:
    """Dense layers with `act` between them; x is one example or a batch."""
    h = x
    for i in range(0, len(params) - 2, 2):
        h = act(h @ params[i] + params[i + 1])
    return h @ params[-2] + params[-1]


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - np.max(z, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def cross_entropy(params: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean cross-entropy of the tanh MLP on one example or a batch (y one-hot)."""
    return -np.mean(np.sum(y * log_softmax(mlp(params, x)), axis=-1))


def mlp_relu(params: tuple, x: np.ndarray) -> np.ndarray:
    return mlp(params, x, act=relu)


# ---------------------------------------------------------------------------------------
# JAX


def jax_mlp(jnp: ModuleType, params: tuple, x, act=None):
    act = act or jnp.tanh
    h = x
    for i in range(0, len(params) - 2, 2):
        h = act(h @ params[i] + params[i + 1])
    return h @ params[-2] + params[-1]


def jax_cross_entropy(jax: ModuleType, jnp: ModuleType, params: tuple, x, y):
    logits = jax_mlp(jnp, params, x)
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def jax_mlp_relu(jax: ModuleType, jnp: ModuleType, params: tuple, x):
    return jax_mlp(jnp, params, x, act=jax.nn.relu)


# ---------------------------------------------------------------------------------------
# torch


def torch_mlp(torch: ModuleType, params: tuple, x, act=None):
    act = act or torch.tanh
    h = x
    for i in range(0, len(params) - 2, 2):
        h = act(h @ params[i] + params[i + 1])
    return h @ params[-2] + params[-1]


def torch_cross_entropy(torch: ModuleType, params: tuple, x, y):
    logits = torch_mlp(torch, params, x)
    return -torch.mean(torch.sum(y * torch.log_softmax(logits, dim=-1), dim=-1))


def torch_mlp_relu(torch: ModuleType, params: tuple, x):
    return torch_mlp(torch, params, x, act=torch.relu)
