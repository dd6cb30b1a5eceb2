"""linalg: a Gaussian-process likelihood with its hyper-gradient, and many small solves.

- gp-nll-grad: the negative log-likelihood of a GP with an RBF kernel on n = 512 points
  (Cholesky, a triangular solve pair, log-determinant) and its gradient with respect to the
  three log hyper-parameters. NumPy/SciPy baseline: the closed-form gradient
  0.5 tr((K^-1 - a a^T) dK/dtheta).
- batched-solve: vmap(np.linalg.solve) over 10,000 systems of 8 x 8 (float64).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

NAME = "linalg"


def gp_inputs(quick: bool) -> tuple:
    """(log hyper-parameters [lengthscale, signal, noise], x, y)."""
    n = 64 if quick else 512
    rng = np.random.default_rng(14)
    x = np.sort(rng.uniform(-5.0, 5.0, size=n))
    y = np.sin(x) + 0.1 * rng.standard_normal(n)
    return np.array([0.3, 0.1, -2.0]), x, y


def gp_nll(params, x, y):
    """The GP's negative log-likelihood, written as a NumPy user would."""
    log_scale, log_signal, log_noise = params[0], params[1], params[2]
    d2 = (x[:, None] - x[None, :]) ** 2
    k = np.exp(2 * log_signal) * np.exp(-0.5 * d2 / np.exp(2 * log_scale))
    k = k + np.exp(2 * log_noise) * np.eye(x.shape[0])
    low = np.linalg.cholesky(k)
    alpha = np.linalg.solve(k, y)
    return 0.5 * (y @ alpha) + np.sum(np.log(np.diagonal(low))) \
        + 0.5 * x.shape[0] * np.log(2 * np.pi)


def gp_transform(tx):
    return tx.grad_and_value(gp_nll)


def numpy_gp(params, x, y):
    """The closed form: K^-1 from one Cholesky factorization, then the three traces."""
    log_scale, log_signal, log_noise = params
    d2 = (x[:, None] - x[None, :]) ** 2
    rbf = np.exp(2 * log_signal) * np.exp(-0.5 * d2 / np.exp(2 * log_scale))
    k = rbf + np.exp(2 * log_noise) * np.eye(x.size)
    factor = scipy.linalg.cho_factor(k, lower=True)
    alpha = scipy.linalg.cho_solve(factor, y)
    k_inv = scipy.linalg.cho_solve(factor, np.eye(x.size))
    inner = k_inv - np.outer(alpha, alpha)
    dk = (rbf * d2 / np.exp(2 * log_scale), 2 * rbf, 2 * np.exp(2 * log_noise) * np.eye(x.size))
    grad = np.array([0.5 * np.sum(inner * d) for d in dk])
    nll = 0.5 * y @ alpha + np.sum(np.log(np.diag(factor[0]))) + 0.5 * x.size * np.log(
        2 * np.pi)
    return grad, nll


def _jax_gp(jax, jnp):
    def nll(params, x, y):
        d2 = (x[:, None] - x[None, :]) ** 2
        k = jnp.exp(2 * params[1]) * jnp.exp(-0.5 * d2 / jnp.exp(2 * params[0]))
        k = k + jnp.exp(2 * params[2]) * jnp.eye(x.shape[0])
        low = jnp.linalg.cholesky(k)
        alpha = jnp.linalg.solve(k, y)
        return 0.5 * (y @ alpha) + jnp.sum(jnp.log(jnp.diagonal(low))) \
            + 0.5 * x.shape[0] * jnp.log(2 * jnp.pi)

    value_and_grad = jax.jit(jax.value_and_grad(nll))
    return lambda p, x, y: tuple(reversed(value_and_grad(p, x, y)))


def _torch_gp(torch):
    from torch.func import grad_and_value

    def nll(params, x, y):
        d2 = (x[:, None] - x[None, :]) ** 2
        k = torch.exp(2 * params[1]) * torch.exp(-0.5 * d2 / torch.exp(2 * params[0]))
        k = k + torch.exp(2 * params[2]) * torch.eye(x.shape[0], dtype=x.dtype)
        low = torch.linalg.cholesky(k)
        alpha = torch.linalg.solve(k, y)
        return 0.5 * (y @ alpha) + torch.sum(torch.log(torch.diagonal(low))) \
            + 0.5 * x.shape[0] * float(np.log(2 * np.pi))

    return grad_and_value(nll)


def solve_inputs(quick: bool) -> tuple:
    """(a: (count, 8, 8) well-conditioned, b: (count, 8))."""
    count = 256 if quick else 10_000
    rng = np.random.default_rng(15)
    a = rng.standard_normal((count, 8, 8)) + 4 * np.eye(8)
    return a, rng.standard_normal((count, 8))


def solve_transform(tx):
    return tx.vmap(np.linalg.solve)


def _numpy_solve(a, b):
    return np.linalg.solve(a, b[..., None])[..., 0]


def _jax_solve(jax, jnp):
    return jax.jit(jax.vmap(jnp.linalg.solve))


def _torch_solve(torch):
    return lambda a, b: torch.linalg.solve(a, b)


def cases(quick: bool) -> list[Case]:
    n = 64 if quick else 512
    count = 256 if quick else 10_000
    return [
        Case(NAME, "gp-nll-grad",
             f"GP negative log-likelihood (RBF, n={n}) and its hyper-gradient, float64",
             lambda: gp_inputs(quick), transform=gp_transform, needs=("grad_and_value",),
             rtol=1e-7, atol=1e-8,
             baselines={"numpy": numpy_system(numpy_gp), "jax": jax_system(_jax_gp),
                        "torch": torch_system(_torch_gp)}),
        Case(NAME, "batched-solve", f"vmap(np.linalg.solve) over {count} systems of 8x8, "
             "float64", lambda: solve_inputs(quick), transform=solve_transform,
             needs=("vmap",), rtol=1e-9, atol=1e-9,
             baselines={"numpy": numpy_system(_numpy_solve), "jax": jax_system(_jax_solve),
                        "torch": torch_system(_torch_solve)}),
    ]
