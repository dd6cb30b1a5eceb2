"""Jacobians, Hessians, hvp and more: composing function transforms
=================================================================

The Jacobian of `f: R^n -> R^m` is the m x n matrix of partial derivatives. transfuse
computes it two ways:

- `tx.jacrev` (reverse mode) runs the function forward once and pulls back each of the m
  basis vectors of the output: m vector-Jacobian products, batched with `vmap`.
- `tx.jacfwd` (forward mode) pushes forward each of the n basis vectors of the input:
  n Jacobian-vector products, batched with `vmap`.

Both give the same matrix. jacrev is cheaper for "wide" functions (many inputs, few
outputs), jacfwd for "tall" ones (few inputs, many outputs). Composing them gives
Hessians (`tx.hessian` is `jacfwd(jacrev(f))`), and `vmap` batches any of them.

This is the transfuse edition of torch.func's "Jacobians, Hessians, hvp, vhp, and more"
tutorial, with checks against closed forms.

Run it with `python docs/tutorials/jacobians_hessians.py`.
"""

# %% [markdown]
# ## Setup: a tanh layer
#
# `predict(weight, bias, x) = tanh(weight @ x + bias)`. Its Jacobian with respect to `x`
# has a closed form: `diag(1 - tanh(z)^2) @ weight` with `z = weight @ x + bias`.

# %%
from __future__ import annotations

import time

import numpy as np

import transfuse as tx
import transfuse.nn as nn
import transfuse.nn.functional as F
import transfuse.numpy as tnp

D = 16


def predict(weight, bias, x):
    """tanh(weight @ x + bias)."""
    return tnp.tanh(F.linear(x, weight, bias))


def predict_jacobian_closed_form(weight, bias, x) -> np.ndarray:
    """d predict / d x, by hand."""
    z = weight @ x + bias
    return (1 - np.tanh(z) ** 2)[:, None] * weight


def make_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((D, D)), rng.standard_normal(D), rng.standard_normal(D)


# %% [markdown]
# ## The Jacobian, row by row, with `vjp`
#
# `tx.vjp(f, x)` returns the output and a function that multiplies a (co)vector by the
# Jacobian from the left. Pulling back each basis vector of the output gives the rows.
# Batching that with `vmap` is exactly what `tx.jacrev` does.

# %%
def jacobian_by_vjp(weight, bias, x) -> np.ndarray:
    """The Jacobian of predict w.r.t. x: vmap of the pullback over the output basis."""
    _, vjp_fn = tx.vjp(lambda x: predict(weight, bias, x), x)
    unit_vectors = np.eye(D)
    (rows,) = tx.vmap(vjp_fn)(unit_vectors)
    return rows


# %% [markdown]
# ## `jacrev` and `jacfwd`
#
# `argnums` picks the arguments to differentiate: an int gives one Jacobian, a tuple gives
# a tuple of Jacobians (one per argument), each of shape `out.shape + arg.shape`.

# %%
def jacobians(weight, bias, x) -> dict:
    """Jacobians of predict by both modes, and w.r.t. (weight, x) with argnums."""
    jac_weight, jac_x = tx.jacrev(predict, argnums=(0, 2))(weight, bias, x)
    return {
        "jacrev": tx.jacrev(predict, argnums=2)(weight, bias, x),
        "jacfwd": tx.jacfwd(predict, argnums=2)(weight, bias, x),
        "by_vjp": jacobian_by_vjp(weight, bias, x),
        "closed_form": predict_jacobian_closed_form(weight, bias, x),
        "wrt_weight": jac_weight,  # (D, D, D): d out_i / d weight_jk
        "wrt_x_argnums": jac_x,
    }


# %% [markdown]
# ## When is each cheaper?
#
# jacrev does one backward pass per *output*, jacfwd one forward pass per *input*. For
# `tanh(W @ x)` with `W` of shape (16, 256) (256 inputs, 16 outputs), jacrev batches 16
# pullbacks; with `W` of shape (256, 16) jacfwd batches 16 pushforwards. The timings
# below (best of a few calls, after a first call that traces and caches the graphs)
# show the difference; the exact numbers depend on the machine.

# %%
def time_modes(n_in: int, n_out: int, repeats: int = 3, seed: int = 0) -> dict:
    """Best-of-`repeats` seconds of jacrev and jacfwd for tanh(W @ x), W (n_out, n_in)."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((n_out, n_in))
    x = rng.standard_normal(n_in)

    def f(weight, x):
        return tnp.tanh(weight @ x)

    timings = {}
    for name, transform in (("jacrev", tx.jacrev), ("jacfwd", tx.jacfwd)):
        jac_fn = transform(f, argnums=1)
        jac_fn(weight, x)  # trace and cache
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            jac_fn(weight, x)
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    return timings


# %% [markdown]
# ## Hessians, checked against closed forms
#
# - For `f(x) = sum(tanh(A @ x))`, the Hessian is `A^T diag(-2 t (1 - t^2)) A` with
#   `t = tanh(A @ x)`.
# - For a quadratic form `q(x) = x^T M x`, the Hessian is the constant `M + M^T`.
#
# `tx.hessian(f)` is `jacfwd(jacrev(f))`; every other composition of the two modes gives
# the same matrix.

# %%
def hessians(seed: int = 1) -> dict:
    """Hessians by four compositions of jacfwd/jacrev and tx.hessian, with closed forms."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((5, D))
    m = rng.standard_normal((D, D))
    x = rng.standard_normal(D)

    def f(x):
        return tnp.sum(tnp.tanh(a @ x))

    def quadratic(x):
        return x @ m @ x

    t = np.tanh(a @ x)
    return {
        "x": x, "A": a, "M": m, "f": f,
        "hessian": tx.hessian(f)(x),
        "jacfwd_jacrev": tx.jacfwd(tx.jacrev(f))(x),
        "jacrev_jacrev": tx.jacrev(tx.jacrev(f))(x),
        "jacrev_jacfwd": tx.jacrev(tx.jacfwd(f))(x),
        "jacfwd_jacfwd": tx.jacfwd(tx.jacfwd(f))(x),
        "closed_form": a.T @ np.diag(-2 * t * (1 - t ** 2)) @ a,
        "quadratic_hessian": tx.hessian(quadratic)(x),
        "quadratic_closed_form": m + m.T,
    }


# %% [markdown]
# ## Batched Jacobians and Hessians
#
# For a batch of inputs, `vmap(jacrev(predict, argnums=2), in_dims=(None, None, 0))` gives
# one Jacobian per example: (batch, D, D). Another way, when the examples are independent,
# is to sum the outputs over the batch first: the Jacobian of the sum with respect to the
# whole batch, (D, batch, D), holds the same blocks. `vmap(hessian(...))` batches Hessians.

# %%
def batched(weight, bias, batch) -> dict:
    """Per-example Jacobians and Hessians of predict w.r.t. x, and the sum trick."""
    def predict_summed(weight, bias, x):
        return tnp.sum(predict(weight, bias, x), axis=0)

    per_example = tx.vmap(tx.jacrev(predict, argnums=2), in_dims=(None, None, 0))
    summed = tx.jacrev(predict_summed, argnums=2)(weight, bias, batch)  # (D, B, D)
    hessian_fn = tx.vmap(tx.hessian(predict, argnums=2), in_dims=(None, None, 0))
    return {
        "jacobians": per_example(weight, bias, batch),
        "sum_trick": tnp.moveaxis(summed, 1, 0),
        "hessians": hessian_fn(weight, bias, batch),  # (B, D, D, D)
    }


# %% [markdown]
# ## Hessian-vector products
#
# The Hessian of a function of many variables is big; often only its product with a
# vector is needed. Forward-over-reverse computes it without forming the Hessian:
# `jvp(grad(f), (x,), (v,))`.

# %%
def hvp(f, primals: tuple, tangents: tuple):
    """H(f)(primals) @ tangents, forward-over-reverse."""
    return tx.jvp(tx.grad(f), primals, tangents)[1]


# %% [markdown]
# ## Jacobians with respect to model parameters
#
# With `tx.functional_call`, the parameters of a module are an argument like any other,
# so `jacrev` differentiates the outputs with respect to all of them at once. The result
# is a dict keyed like `named_parameters()`, each entry of shape
# `output.shape + parameter.shape`. The last layer's entries have closed forms: the
# Jacobian of the output w.r.t. the last bias is the identity for each example, and w.r.t.
# the last weight `[n, i, j, k] = delta_ij * hidden[n, k]`.

# %%
def parameter_jacobian(seed: int = 2) -> dict:
    """jacrev and jacfwd of a small MLP's outputs w.r.t. its parameters."""
    nn.init.seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    params = dict(model.named_parameters())
    x = np.random.default_rng(seed).standard_normal((5, 4))

    def outputs(params, x):
        return tx.functional_call(model, params, (x,))

    return {
        "model": model, "params": params, "x": x,
        "jacrev": tx.jacrev(outputs)(params, x),
        "jacfwd": tx.jacfwd(outputs)(params, x),
        "hidden": model[1](model[0](x)),
    }


def _max_diff(a, b) -> float:
    if isinstance(a, dict):
        return max(_max_diff(a[k], b[k]) for k in a)
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# %%
def main(with_jit: bool = True) -> dict:
    """Run the tutorial; return its results. with_jit=False skips the tx.jit section."""
    weight, bias, x = make_inputs()
    jac = jacobians(weight, bias, x)
    hess = hessians()
    batch = np.random.default_rng(3).standard_normal((8, D))
    batch_results = batched(weight, bias, batch)
    v = np.random.default_rng(4).standard_normal(D)
    params = parameter_jacobian()
    hv = hvp(hess["f"], (hess["x"],), (v,))
    results = {
        "weight": weight, "bias": bias, "x": x, "batch": batch, "v": v,
        "jacobians": jac, "hessians": hess, "batched": batch_results,
        "hvp": hv,
        "parameter_jacobian": params,
        "wide_timings": time_modes(n_in=256, n_out=16),   # jacrev should win
        "tall_timings": time_modes(n_in=16, n_out=256),   # jacfwd should win
        "max_abs_diff": {
            "jacrev_vs_closed_form": _max_diff(jac["jacrev"], jac["closed_form"]),
            "jacfwd_vs_jacrev": _max_diff(jac["jacfwd"], jac["jacrev"]),
            "hessian_vs_closed_form": _max_diff(hess["hessian"], hess["closed_form"]),
            "quadratic_vs_closed_form": _max_diff(hess["quadratic_hessian"],
                                                  hess["quadratic_closed_form"]),
            "batched_vs_sum_trick": _max_diff(batch_results["jacobians"],
                                              batch_results["sum_trick"]),
            "hvp_vs_hessian": _max_diff(hv, hess["closed_form"] @ v),
            "parameter_jacrev_vs_jacfwd": _max_diff(params["jacrev"], params["jacfwd"]),
        },
    }
    if with_jit:
        results["jit_max_abs_diff"] = jit_max_abs_diff(weight, bias, batch,
                                                       batch_results["hessians"])
    return results


# %% [markdown]
# ## With `tx.jit`
#
# Any composition of transforms is an ordinary function, so `tx.jit` compiles it into
# fused kernels; the numbers are the same (to float rounding). The first call traces and
# compiles (seconds: one Numba compile per fused kernel); later calls with the same
# shapes and dtypes reuse the compiled code.

# %%
def jit_max_abs_diff(weight, bias, batch, expected) -> float:
    """How far jit(vmap(hessian(predict))) is from the uncompiled batched Hessians."""
    compiled = tx.jit(tx.vmap(tx.hessian(predict, argnums=2), in_dims=(None, None, 0)))
    return _max_diff(compiled(weight, bias, batch), expected)


def _summary(results: dict) -> None:
    for name, diff in results["max_abs_diff"].items():
        print(f"{name.replace('_', ' ')}: max |difference| = {diff:.2e}")
    for label in ("wide", "tall"):
        t = results[f"{label}_timings"]
        print(f"{label} function: jacrev {t['jacrev'] * 1e3:.2f} ms, "
              f"jacfwd {t['jacfwd'] * 1e3:.2f} ms")
    if "jit_max_abs_diff" in results:
        print(f"jit(vmap(hessian)) vs vmap(hessian): max |difference| = "
              f"{results['jit_max_abs_diff']:.2e}")


if __name__ == "__main__":
    _summary(main())
