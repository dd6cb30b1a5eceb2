"""ensembling: 16 MLPs (784-256-10, relu) on one batch of 64, by vmap over stacked parameters."""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

from ._mlp import jax_mlp_relu, mlp_relu, stack_mlps, torch_mlp_relu

NAME = "ensembling"


def make_inputs(quick: bool) -> tuple:
    """(stacked params, x): each parameter has a leading model axis; x is shared."""
    (models, sizes, batch) = (4, (24, 16, 10), 8) if quick else (16, (784, 256, 10), 64)
    rng = np.random.default_rng(4)
    params = stack_mlps(rng, models, sizes)
    return params, rng.standard_normal((batch, sizes[0]), dtype=np.float32)


def transform(tx):
    """Every model on the same batch: vmap over the parameters only."""
    return tx.vmap(mlp_relu, in_dims=(0, None))


def numpy_ensemble(params: tuple, x: np.ndarray) -> np.ndarray:
    """Batched matmuls over the model axis: (64, 784) @ (16, 784, 256) -> (16, 64, 256)."""
    w1, b1, w2, b2 = params
    h = np.maximum(x @ w1 + b1[:, None, :], 0)
    return h @ w2 + b2[:, None, :]


def _jax(jax, jnp):
    return jax.jit(jax.vmap(lambda p, x: jax_mlp_relu(jax, jnp, p, x), in_axes=(0, None)))


def _torch(torch):
    from torch.func import vmap
    return vmap(lambda p, x: torch_mlp_relu(torch, p, x), in_dims=(0, None))


def cases(quick: bool) -> list[Case]:
    """One case: the ensemble's logits, shape (models, batch, 10)."""
    what = "4 MLPs 24-16-10, batch 8" if quick else "16 MLPs 784-256-10, batch 64"
    return [Case(
        NAME, "vmap-models", f"vmap over stacked parameters of {what}, relu, float32",
        lambda: make_inputs(quick), transform=transform, needs=("vmap",),
        baselines={
            "numpy": numpy_system(numpy_ensemble),
            "jax": jax_system(_jax),
            "torch": torch_system(_torch),
        })]
