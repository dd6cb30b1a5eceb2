"""ntk: the empirical neural tangent kernel of a 784-256-10 relu MLP between two batches of 32.

Jacobians of the logits w.r.t. every parameter, per example (vmap(jacrev)), contracted
over the parameters: NTK[n, m, a, b] = sum_p J1[n, a, p] J2[m, b, p], shape (32, 32, 10, 10).
"""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

from ._mlp import init_mlp, jax_mlp_relu, mlp_relu, torch_mlp_relu

NAME = "ntk"


def make_inputs(quick: bool) -> tuple:
    """(params, x1, x2)."""
    sizes, batch = ((24, 16, 10), 4) if quick else ((784, 256, 10), 32)
    rng = np.random.default_rng(8)
    params = init_mlp(rng, sizes)
    x1 = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    return params, x1, rng.standard_normal((batch, sizes[0]), dtype=np.float32)


def transform(tx):
    """Per-example parameter Jacobians of both batches, contracted parameter by parameter."""
    jacobians = tx.vmap(tx.jacrev(mlp_relu, argnums=0), in_dims=(None, 0))

    def ntk(params, x1, x2):
        kernel = 0
        for j1, j2 in zip(jacobians(params, x1), jacobians(params, x2)):
            j1 = j1.reshape(j1.shape[0], j1.shape[1], -1)
            j2 = j2.reshape(j2.shape[0], j2.shape[1], -1)
            kernel = kernel + np.einsum("naf,mbf->nmab", j1, j2)
        return kernel

    return ntk


def numpy_ntk(params: tuple, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """The same kernel from the Jacobians' structure, without materialising them.

    For logits = relu(x W1 + b1) W2 + b2 the W2 and b2 terms give delta_ab (h.h' + 1) and
    the W1 and b1 terms (x.x' + 1) sum_k W2[k,a] W2[k,b] m[k] m'[k] (m: relu masks).
    """
    w1, b1, w2, _ = params
    a1, a2 = x1 @ w1 + b1, x2 @ w1 + b1
    h1, h2 = np.maximum(a1, 0), np.maximum(a2, 0)
    g1 = (a1 > 0)[:, :, None] * w2  # (n, hidden, classes)
    g2 = (a2 > 0)[:, :, None] * w2
    hidden_part = np.einsum("nka,mkb->nmab", g1, g2, optimize=True)
    hidden_part *= (x1 @ x2.T + 1)[:, :, None, None]
    eye = np.eye(w2.shape[1], dtype=w2.dtype)
    return hidden_part + (h1 @ h2.T + 1)[:, :, None, None] * eye


def _jax(jax, jnp):
    fn = lambda p, x: jax_mlp_relu(jax, jnp, p, x)
    jacobians = jax.vmap(jax.jacrev(fn, argnums=0), in_axes=(None, 0))

    def ntk(params, x1, x2):
        pairs = zip(jacobians(params, x1), jacobians(params, x2))
        return sum(jnp.einsum("naf,mbf->nmab", a.reshape(a.shape[0], a.shape[1], -1),
                              b.reshape(b.shape[0], b.shape[1], -1)) for a, b in pairs)

    return jax.jit(ntk)


def _torch(torch):
    from torch.func import jacrev, vmap
    fn = lambda p, x: torch_mlp_relu(torch, p, x)
    jacobians = vmap(jacrev(fn, argnums=0), in_dims=(None, 0))

    def ntk(params, x1, x2):
        pairs = zip(jacobians(params, x1), jacobians(params, x2))
        return sum(torch.einsum("naf,mbf->nmab", a.flatten(2), b.flatten(2)) for a, b in pairs)

    return ntk


def cases(quick: bool) -> list[Case]:
    """One case: the (batch, batch, 10, 10) kernel."""
    what = "24-16-10 relu MLP, batches of 4" if quick else "784-256-10 relu MLP, batches of 32"
    return [Case(
        NAME, "jacobian-contraction", f"empirical NTK by Jacobian contraction, {what}, float32",
        lambda: make_inputs(quick), transform=transform, needs=("vmap", "jacrev"),
        baselines={
            "numpy": numpy_system(numpy_ntk),
            "jax": jax_system(_jax),
            "torch": torch_system(_torch),
        })]
