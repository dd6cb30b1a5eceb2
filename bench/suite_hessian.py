"""hessian: the Hessian of sum(tanh(A @ x)) w.r.t. x, A 256x256, float64."""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

NAME = "hessian"


def objective(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.sum(np.tanh(a @ x))


def make_inputs(quick: bool) -> tuple:
    """(x, A) in float64."""
    n = 16 if quick else 256
    rng = np.random.default_rng(6)
    return rng.standard_normal(n), rng.standard_normal((n, n)) / np.sqrt(n)


def numpy_hessian(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """H = A^T diag(tanh''(A x)) A, with tanh'' = -2 tanh (1 - tanh^2)."""
    t = np.tanh(a @ x)
    curvature = -2 * t * (1 - t * t)
    return (a.T * curvature) @ a


def _jax(jax, jnp):
    return jax.jit(jax.hessian(lambda x, a: jnp.sum(jnp.tanh(a @ x))))


def _torch(torch):
    from torch.func import hessian
    return hessian(lambda x, a: torch.sum(torch.tanh(a @ x)))


def cases(quick: bool) -> list[Case]:
    """One case: hessian (forward-over-reverse) of a 256-dimensional objective."""
    n = 16 if quick else 256
    return [Case(
        NAME, "tanh-sum", f"hessian(sum(tanh(A @ x))) w.r.t. x, A {n}x{n}, float64",
        lambda: make_inputs(quick), transform=lambda tx: tx.hessian(objective),
        needs=("hessian",), rtol=1e-9, atol=1e-12,
        baselines={
            "numpy": numpy_system(numpy_hessian),
            "jax": jax_system(_jax),
            "torch": torch_system(_torch),
        })]
