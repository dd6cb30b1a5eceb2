"""jacobians: per-example Jacobians of the 10 logits w.r.t. the 784 inputs, batch 64.

The model is the per-sample-grads MLP (784-512-512-10, tanh); reverse mode (`vmap(jacrev)`)
and forward mode (`vmap(jacfwd)`) are separate cases with the same answer, (64, 10, 784).
"""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

from ._mlp import init_mlp, jax_mlp, mlp, torch_mlp

NAME = "jacobians"
FULL_SIZES, QUICK_SIZES = (784, 512, 512, 10), (24, 16, 16, 10)


def make_inputs(quick: bool) -> tuple:
    """(params, x): the MLP and a batch of inputs."""
    sizes, batch = (QUICK_SIZES, 8) if quick else (FULL_SIZES, 64)
    rng = np.random.default_rng(5)
    return init_mlp(rng, sizes), rng.standard_normal((batch, sizes[0]), dtype=np.float32)


def numpy_input_jacobians(params: tuple, x: np.ndarray) -> np.ndarray:
    """J = W3^T diag(1-h2^2) W2^T diag(1-h1^2) W1^T per example, from the output side."""
    w1, b1, w2, b2, w3, _ = params
    h1 = np.tanh(x @ w1 + b1)
    h2 = np.tanh(h1 @ w2 + b2)
    m = w3.T[None] * (1 - h2 * h2)[:, None, :]  # (batch, 10, 512)
    m = (m @ w2.T) * (1 - h1 * h1)[:, None, :]
    return m @ w1.T  # (batch, 10, 784)


def _transform(mode: str):
    def transform(tx):
        jac = getattr(tx, mode)
        return tx.vmap(jac(mlp, argnums=1), in_dims=(None, 0))

    return transform


def _jax(mode: str):
    def build(jax, jnp):
        jac = getattr(jax, mode)
        return jax.jit(jax.vmap(jac(lambda p, x: jax_mlp(jnp, p, x), argnums=1),
                                in_axes=(None, 0)))

    return build


def _torch(mode: str):
    def build(torch):
        import torch.func
        jac = getattr(torch.func, mode)
        return torch.func.vmap(jac(lambda p, x: torch_mlp(torch, p, x), argnums=1),
                               in_dims=(None, 0))

    return build


def cases(quick: bool) -> list[Case]:
    """vmap(jacrev) and vmap(jacfwd) of the logits w.r.t. the inputs."""
    sizes, batch = (QUICK_SIZES, 8) if quick else (FULL_SIZES, 64)
    model = f"{'-'.join(map(str, sizes))} tanh MLP, batch {batch}, float32"
    return [Case(
        NAME, f"vmap-{mode}", f"vmap({mode}) of the logits w.r.t. the inputs, {model}",
        lambda: make_inputs(quick), transform=_transform(mode), needs=("vmap", mode),
        baselines={
            "numpy": numpy_system(numpy_input_jacobians),
            "jax": jax_system(_jax(mode)),
            "torch": torch_system(_torch(mode)),
        }) for mode in ("jacrev", "jacfwd")]
