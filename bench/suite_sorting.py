"""sorting: a loss built on sorting, and its gradient (issue #16).

- sort-quantile-grad: each of 1024 rows of 1024 float32 values sorted and matched to a
  reference distribution (a 1-d optimal-transport / sliced-Wasserstein term), plus a penalty
  on five quantiles of each row (linear interpolation); the loss and its gradient w.r.t. the
  input (`grad_and_value`). The gradient flows back through the sort's permutation and the
  quantiles' interpolation weights. NumPy baseline: the closed form (one argsort, the
  cotangent scattered back with put_along_axis).
"""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

NAME = "sorting"
QUANTILES = np.array([0.05, 0.25, 0.5, 0.75, 0.95], np.float32)


def sorting_loss(x: np.ndarray, reference: np.ndarray):
    """Each row sorted against a sorted reference, plus the squares of its quantiles."""
    matched = np.mean((np.sort(x, axis=-1) - reference) ** 2)
    return matched + np.mean(np.quantile(x, QUANTILES, axis=-1) ** 2)


def sorting_inputs(quick: bool) -> tuple:
    """(x (rows, n), reference (n,) sorted), float32."""
    rows, n = (16, 64) if quick else (1024, 1024)
    rng = np.random.default_rng(16)
    x = rng.standard_normal((rows, n), dtype=np.float32)
    reference = np.sort(rng.standard_normal(n, dtype=np.float32) * np.float32(0.5) + 1)
    return x, reference


def numpy_sorting_grad(x, reference):
    """(gradient, loss) in closed form: one argsort; the sorted values' cotangent (and the
    quantiles' interpolation weights) scattered back through the permutation."""
    n = x.shape[-1]
    order = np.argsort(x, axis=-1)
    ordered = np.take_along_axis(x, order, axis=-1)
    position = np.float32(n - 1) * QUANTILES
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    weight = position - below
    quantiles = ordered[:, below] * (1 - weight) + ordered[:, above] * weight
    residual = ordered - reference
    loss = np.mean(residual ** 2) + np.mean(quantiles ** 2)
    d_ordered = residual * np.float32(2.0 / residual.size)
    d_quantiles = quantiles * np.float32(2.0 / quantiles.size)
    np.add.at(d_ordered, (slice(None), below), d_quantiles * (1 - weight))
    np.add.at(d_ordered, (slice(None), above), d_quantiles * weight)
    grad = np.empty_like(x)
    np.put_along_axis(grad, order, d_ordered, axis=-1)
    return grad, np.float32(loss)


def _jax_sorting_grad(jax, jnp):
    def loss(x, reference):
        matched = jnp.mean((jnp.sort(x, axis=-1) - reference) ** 2)
        return matched + jnp.mean(jnp.quantile(x, jnp.asarray(QUANTILES), axis=-1) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    return lambda *args: tuple(reversed(value_and_grad(*args)))


def _torch_sorting_grad(torch):
    from torch.func import grad_and_value

    quantiles = torch.from_numpy(QUANTILES)

    def loss(x, reference):
        matched = torch.mean((torch.sort(x, dim=-1).values - reference) ** 2)
        return matched + torch.mean(torch.quantile(x, quantiles, dim=-1) ** 2)

    return grad_and_value(loss)


def cases(quick: bool) -> list[Case]:
    rows, n = (16, 64) if quick else (1024, 1024)
    return [Case(
        NAME, "sort-quantile-grad",
        f"{rows} rows of {n}: each row sorted against a reference plus five of its "
        "quantiles squared; the loss and its gradient w.r.t. the input, float32",
        lambda: sorting_inputs(quick), transform=lambda tx: tx.grad_and_value(sorting_loss),
        needs=("grad_and_value",), rtol=2e-3, atol=1e-7,
        baselines={
            "numpy": numpy_system(numpy_sorting_grad),
            "jax": jax_system(_jax_sorting_grad),
            "torch": torch_system(_torch_sorting_grad),
        })]
