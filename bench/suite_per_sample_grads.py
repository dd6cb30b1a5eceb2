"""per-sample-grads: the gradient of each example's loss, `vmap(grad(loss), in_dims=(None, 0, 0))`.

The model is a 784-512-512-10 tanh MLP with mean cross-entropy on one-hot labels, batch 128.
NumPy's version is the hand-written backward pass with einsum outer products per example.
"""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

from ._mlp import (
    cross_entropy,
    init_mlp,
    jax_cross_entropy,
    one_hot_labels,
    torch_cross_entropy,
)

NAME = "per-sample-grads"
FULL_SIZES, QUICK_SIZES = (784, 512, 512, 10), (24, 16, 16, 10)


def make_inputs(quick: bool) -> tuple:
    """(params, x, y): the MLP's parameters, a batch of inputs and one-hot labels."""
    sizes, batch = (QUICK_SIZES, 8) if quick else (FULL_SIZES, 128)
    rng = np.random.default_rng(3)
    params = init_mlp(rng, sizes)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    return params, x, one_hot_labels(rng, batch, sizes[-1])


def transform(tx):
    """What transfuse runs: per-example gradients of the loss w.r.t. the parameters."""
    return tx.vmap(tx.grad(cross_entropy), in_dims=(None, 0, 0))


def numpy_per_sample_grads(params: tuple, x: np.ndarray, y: np.ndarray) -> tuple:
    """Forward over the batch, then the backward pass by hand, keeping the batch axis."""
    w1, b1, w2, b2, w3, b3 = params
    h1 = np.tanh(x @ w1 + b1)
    h2 = np.tanh(h1 @ w2 + b2)
    logits = h2 @ w3 + b3
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d3 = p * y.sum(axis=1, keepdims=True) - y  # d loss / d logits, per example
    d2 = (d3 @ w3.T) * (1 - h2 * h2)
    d1 = (d2 @ w2.T) * (1 - h1 * h1)
    return (np.einsum("bi,bj->bij", x, d1), d1,
            np.einsum("bi,bj->bij", h1, d2), d2,
            np.einsum("bi,bj->bij", h2, d3), d3)


def _jax(jax, jnp):
    loss = lambda params, x, y: jax_cross_entropy(jax, jnp, params, x, y)
    return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))


def _torch(torch):
    from torch.func import grad, vmap
    loss = lambda params, x, y: torch_cross_entropy(torch, params, x, y)
    return vmap(grad(loss), in_dims=(None, 0, 0))


def cases(quick: bool) -> list[Case]:
    """One case: the full batch's per-sample gradients."""
    sizes, batch = (QUICK_SIZES, 8) if quick else (FULL_SIZES, 128)
    return [Case(
        NAME, "vmap-grad", f"vmap(grad(cross_entropy)) of a {'-'.join(map(str, sizes))} tanh "
                           f"MLP, batch {batch}, float32",
        lambda: make_inputs(quick), transform=transform, needs=("vmap", "grad"),
        baselines={
            "numpy": numpy_system(numpy_per_sample_grads),
            "jax": jax_system(_jax),
            "torch": torch_system(_torch),
        })]
