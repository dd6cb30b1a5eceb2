"""maml: the second-order MAML meta-gradient on sine regression.

A 1-40-40-1 relu MLP; 8 tasks of 10 support and 10 query points; one inner SGD step at
lr 0.01 on the support loss, then the gradient of the mean query loss w.r.t. the
meta-parameters, differentiating through the inner step (second order).
"""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

from ._mlp import init_mlp, jax_mlp_relu, mlp_relu, torch_mlp_relu

NAME = "maml"
LR = 0.01
SIZES = (1, 40, 40, 1)


def make_inputs(quick: bool) -> tuple:
    """(params, xs, ys, xq, yq): support and query sets of sine tasks, (tasks, 10, 1) each."""
    tasks, points = (4, 5) if quick else (8, 10)
    rng = np.random.default_rng(7)
    params = init_mlp(rng, SIZES)
    amplitude = rng.uniform(0.1, 5.0, (tasks, 1, 1))
    phase = rng.uniform(0, np.pi, (tasks, 1, 1))

    def sample() -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(-5, 5, (tasks, points, 1))
        return x.astype(np.float32), (amplitude * np.sin(x + phase)).astype(np.float32)

    return (params, *sample(), *sample())


def mse(params: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    error = mlp_relu(params, x) - y
    return np.mean(error * error)


def transform(tx):
    """grad of the mean over tasks of the query loss after one inner step."""

    def query_loss_after_step(params, xs, ys, xq, yq):
        inner = tx.grad(mse)(params, xs, ys)
        adapted = tuple(p - LR * g for p, g in zip(params, inner))
        return mse(adapted, xq, yq)

    def meta_loss(params, xs, ys, xq, yq):
        per_task = tx.vmap(query_loss_after_step, in_dims=(None, 0, 0, 0, 0))
        return np.mean(per_task(params, xs, ys, xq, yq))

    return tx.grad(meta_loss)


# ---------------------------------------------------------------------------------------
# NumPy: the meta-gradient by hand, (I - lr H_support) grad_query per task, with the
# Hessian-vector product as the forward-mode derivative of the backward pass.


def _forward(params: tuple, x: np.ndarray) -> dict:
    """Activations for every task at once; params may carry a leading task axis."""
    w1, b1, w2, b2, w3, b3 = params
    a1 = x @ w1 + b1[..., None, :]
    m1 = a1 > 0
    h1 = a1 * m1
    a2 = h1 @ w2 + b2[..., None, :]
    m2 = a2 > 0
    h2 = a2 * m2
    return {"x": x, "m1": m1, "h1": h1, "m2": m2, "h2": h2, "out": h2 @ w3 + b3[..., None, :]}


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _backward(params: tuple, act: dict, y: np.ndarray) -> tuple[tuple, dict]:
    """Per-task gradient of the mean squared error, and the cotangents the HVP needs."""
    _, _, w2, _, w3, _ = params
    r = 2 * (act["out"] - y) / y.shape[-2]
    da2 = (r @ _t(w3)) * act["m2"]
    da1 = (da2 @ _t(w2)) * act["m1"]
    grads = (_t(act["x"]) @ da1, da1.sum(-2), _t(act["h1"]) @ da2, da2.sum(-2),
             _t(act["h2"]) @ r, r.sum(-2))
    return grads, {"r": r, "da2": da2}


def _hessian_vector(params: tuple, act: dict, cot: dict, v: tuple, n: int) -> tuple:
    """H v per task: the directional derivative of _backward along v (relu masks fixed)."""
    _, _, w2, _, w3, _ = params
    vw1, vb1, vw2, vb2, vw3, vb3 = v
    x, m1, h1, m2, h2 = act["x"], act["m1"], act["h1"], act["m2"], act["h2"]
    r, da2 = cot["r"], cot["da2"]
    th1 = (x @ vw1 + vb1[..., None, :]) * m1
    th2 = (th1 @ w2 + h1 @ vw2 + vb2[..., None, :]) * m2
    tr = 2 * (th2 @ w3 + h2 @ vw3 + vb3[..., None, :]) / n
    tda2 = (tr @ _t(w3) + r @ _t(vw3)) * m2
    tda1 = (tda2 @ _t(w2) + da2 @ _t(vw2)) * m1
    return (_t(x) @ tda1, tda1.sum(-2), _t(th1) @ da2 + _t(h1) @ tda2, tda2.sum(-2),
            _t(th2) @ r + _t(h2) @ tr, tr.sum(-2))


def numpy_maml(params: tuple, xs, ys, xq, yq) -> tuple:
    """Meta-gradient: mean over tasks of (I - lr H_s(params)) grad L_q(params - lr g_s)."""
    support = _forward(params, xs)
    inner, cot = _backward(params, support, ys)
    adapted = tuple(p - LR * g for p, g in zip(params, inner))
    outer, _ = _backward(adapted, _forward(adapted, xq), yq)
    hv = _hessian_vector(params, support, cot, outer, ys.shape[-2])
    return tuple((g - LR * h).mean(axis=0) for g, h in zip(outer, hv))


# ---------------------------------------------------------------------------------------


def _jax(jax, jnp):
    def mse_jax(params, x, y):
        return jnp.mean(jnp.square(jax_mlp_relu(jax, jnp, params, x) - y))

    def query_loss_after_step(params, xs, ys, xq, yq):
        inner = jax.grad(mse_jax)(params, xs, ys)
        adapted = tuple(p - LR * g for p, g in zip(params, inner))
        return mse_jax(adapted, xq, yq)

    def meta_loss(params, xs, ys, xq, yq):
        per_task = jax.vmap(query_loss_after_step, in_axes=(None, 0, 0, 0, 0))
        return jnp.mean(per_task(params, xs, ys, xq, yq))

    return jax.jit(jax.grad(meta_loss))


def _torch(torch):
    from torch.func import grad, vmap

    def mse_torch(params, x, y):
        return torch.mean(torch.square(torch_mlp_relu(torch, params, x) - y))

    def query_loss_after_step(params, xs, ys, xq, yq):
        inner = grad(mse_torch)(params, xs, ys)
        adapted = tuple(p - LR * g for p, g in zip(params, inner))
        return mse_torch(adapted, xq, yq)

    def meta_loss(params, xs, ys, xq, yq):
        per_task = vmap(query_loss_after_step, in_dims=(None, 0, 0, 0, 0))
        return torch.mean(per_task(params, xs, ys, xq, yq))

    return grad(meta_loss)


def cases(quick: bool) -> list[Case]:
    """One case: one meta-gradient over all tasks."""
    tasks, points = (4, 5) if quick else (8, 10)
    return [Case(
        NAME, "meta-grad", f"second-order MAML meta-gradient, 1-40-40-1 relu MLP, {tasks} "
                           f"sine tasks x {points}+{points} points, inner lr {LR}, float32",
        lambda: make_inputs(quick), transform=transform, needs=("grad", "vmap"),
        baselines={
            "numpy": numpy_system(numpy_maml),
            "jax": jax_system(_jax),
            "torch": torch_system(_torch),
        })]
