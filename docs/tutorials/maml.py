"""Model-agnostic meta-learning (MAML) on sine regression
=======================================================

MAML looks for initial parameters from which *one or a few gradient steps* on a new task's
few examples give a good model for that task. Each task here is a sine wave
`amplitude * sin(x + phase)`; the model sees 10 points of it (the support set), takes one
SGD step on them (the inner loop), and is scored on 10 other points (the query set). The
meta-parameters are trained (the outer loop) on the query loss *after* adaptation.

The gradient of that query loss with respect to the meta-parameters goes through the
inner SGD step, which itself contains a gradient: differentiating it is a second-order
derivative, `grad` of a function that calls `grad`. With transfuse that is just function
composition, and `vmap` runs the inner loop of several tasks at once.

This is the transfuse edition of functorch's MAML sine-regression example. At the end the
meta-gradient is checked against float64 central finite differences.

Run it with `python docs/tutorials/maml.py`.
"""

# %% [markdown]
# ## Setup: the model and the tasks
#
# An MLP 1 -> 40 -> 40 -> 1 with ReLUs. A batch of tasks is drawn from a seeded generator:
# amplitudes in [0.1, 5], phases in [0, pi], inputs in [-5, 5].

# %%
from __future__ import annotations

import numpy as np

import transfuse as tx
import transfuse.nn as nn
import transfuse.nn.functional as F
import transfuse.numpy as tnp

INNER_LR = 0.01
OUTER_LR = 3e-3
TASKS_PER_STEP = 5
SUPPORT = QUERY = 10
OUTER_STEPS = 60


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(),
                         nn.Linear(40, 1))


def sample_tasks(rng: np.random.Generator, num_tasks: int = TASKS_PER_STEP,
                 dtype=np.float32) -> tuple[np.ndarray, ...]:
    """Support and query sets of sine tasks: (xs, ys, xq, yq), each (tasks, points, 1)."""
    amplitude = rng.uniform(0.1, 5.0, size=(num_tasks, 1, 1))
    phase = rng.uniform(0.0, np.pi, size=(num_tasks, 1, 1))
    xs = rng.uniform(-5.0, 5.0, size=(num_tasks, SUPPORT, 1))
    xq = rng.uniform(-5.0, 5.0, size=(num_tasks, QUERY, 1))
    ys = amplitude * np.sin(xs + phase)
    yq = amplitude * np.sin(xq + phase)
    return tuple(a.astype(dtype) for a in (xs, ys, xq, yq))


# %% [markdown]
# ## One task: adapt on the support set, score on the query set
#
# `loss(params, x, y)` is the mean squared error of the model run with `params` through
# `tx.functional_call`. The inner step is plain SGD with the gradient from `tx.grad`;
# because `fast_params` is computed *from* `params` (not detached), the query loss is a
# function of the meta-parameters through the inner step, gradient included.
#
# The parameters are always passed as arguments, never read from the module: transfuse
# caches each transformed function's graph, and arrays a function only reads from its
# closure (such as a module's own weights) are baked into that graph as constants when it
# is first traced, so updating them afterwards would not be seen.

# %%
def make_loss(model: nn.Module):
    def loss(params: dict, x, y):
        return F.mse_loss(tx.functional_call(model, params, (x,)), y)
    return loss


def make_adapted_query_loss(loss):
    def adapted_query_loss(params: dict, xs, ys, xq, yq):
        grads = tx.grad(loss)(params, xs, ys)
        fast_params = {name: params[name] - INNER_LR * grads[name] for name in params}
        return loss(fast_params, xq, yq)
    return adapted_query_loss


# %% [markdown]
# ## The meta-objective: the mean over a batch of tasks
#
# `vmap` runs the adaptation of every task in the batch at once: the meta-parameters are
# shared (`None`), the tasks' data are batched along axis 0. `tx.grad` of this function is
# the second-order MAML meta-gradient.

# %%
def make_meta_loss(adapted_query_loss):
    def meta_loss(params: dict, xs, ys, xq, yq):
        per_task = tx.vmap(adapted_query_loss, in_dims=(None, 0, 0, 0, 0))(
            params, xs, ys, xq, yq)
        return tnp.mean(per_task)
    return meta_loss


# %% [markdown]
# ## The outer loop: Adam on the meta-parameters
#
# A few dozen outer steps on fresh tasks. The loss we report is the post-adaptation query
# loss on a fixed set of held-out tasks, so that the numbers are comparable from step to
# step.

# %%
class Adam:
    """Adam on a dict of arrays (the update rule of torch.optim.Adam)."""

    def __init__(self, params: dict, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict, grads: dict) -> dict:
        b1, b2 = self.betas
        self.t += 1
        new = {}
        for k in params:
            self.m[k] = b1 * self.m[k] + (1 - b1) * grads[k]
            self.v[k] = b2 * self.v[k] + (1 - b2) * grads[k] ** 2
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            new[k] = (params[k] - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(
                params[k].dtype)
        return new


def train(meta_loss, params: dict, rng: np.random.Generator, eval_tasks: tuple,
          steps: int = OUTER_STEPS, report_every: int = 10) -> tuple[dict, list]:
    """Meta-train with Adam; returns the parameters and [(step, held-out meta-loss)]."""
    meta_grad_and_value = tx.grad_and_value(meta_loss)
    optimizer = Adam(params, OUTER_LR)
    history = [(0, float(meta_loss(params, *eval_tasks)))]
    for step in range(1, steps + 1):
        grads, _ = meta_grad_and_value(params, *sample_tasks(rng))
        params = optimizer.step(params, grads)
        if step % report_every == 0:
            history.append((step, float(meta_loss(params, *eval_tasks))))
    return params, history


# %% [markdown]
# ## Checking the second-order meta-gradient
#
# In float64, the meta-gradient of a few single parameter entries is compared with central
# finite differences `(L(p + eps) - L(p - eps)) / (2 eps)` of the meta-loss (which still
# runs the inner `grad` at each perturbed point). The first-order approximation (the query
# gradient at the adapted parameters, ignoring how the inner step depends on the
# meta-parameters) is printed for comparison: it is visibly different, so the check would
# catch a meta-gradient that dropped the second-order term.

# %%
CHECKED_ENTRIES = (("0.weight", (3, 0)), ("2.weight", (2, 1)), ("4.bias", (0,)))


def finite_difference_check(meta_loss, loss, params: dict, tasks: tuple,
                            eps: float = 1e-6) -> dict:
    """Meta-gradient entries: transfuse, central finite differences, first-order MAML."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    tasks = tuple(a.astype(np.float64) for a in tasks)
    meta_grad = tx.grad(meta_loss)(params, *tasks)
    first_order = first_order_meta_grad(loss, params, tasks)
    rows = []
    for name, index in CHECKED_ENTRIES:
        plus, minus = dict(params), dict(params)
        plus[name], minus[name] = params[name].copy(), params[name].copy()
        plus[name][index] += eps
        minus[name][index] -= eps
        fd = (float(meta_loss(plus, *tasks)) - float(meta_loss(minus, *tasks))) / (2 * eps)
        rows.append({"name": name, "index": index, "transfuse": float(meta_grad[name][index]),
                     "finite_difference": fd,
                     "first_order": float(first_order[name][index])})
    return {"entries": rows, "meta_grad": meta_grad, "first_order": first_order}


def first_order_meta_grad(loss, params: dict, tasks: tuple) -> dict:
    """First-order MAML: the mean over tasks of the query gradient at the adapted params."""
    xs, ys, xq, yq = tasks
    total = {k: np.zeros_like(v) for k, v in params.items()}
    for t in range(len(xs)):
        grads = tx.grad(loss)(params, xs[t], ys[t])
        fast = {k: params[k] - INNER_LR * grads[k] for k in params}
        query_grads = tx.grad(loss)(fast, xq[t], yq[t])
        total = {k: total[k] + query_grads[k] / len(xs) for k in params}
    return total


# %%
def main(with_jit: bool = True) -> dict:
    """Run the tutorial; return its results. with_jit=False skips the tx.jit section."""
    nn.init.seed(0)
    model = make_model()
    loss = make_loss(model)
    adapted_query_loss = make_adapted_query_loss(loss)
    meta_loss = make_meta_loss(adapted_query_loss)
    rng = np.random.default_rng(0)
    eval_tasks = sample_tasks(np.random.default_rng(1), num_tasks=20)

    initial = dict(model.named_parameters())
    check = finite_difference_check(meta_loss, loss, initial,
                                    sample_tasks(np.random.default_rng(2), num_tasks=3))
    params, history = train(meta_loss, initial, rng, eval_tasks)
    results = {
        "model": model, "loss": loss, "meta_loss": meta_loss,
        "initial_params": initial, "params": params, "eval_tasks": eval_tasks,
        "history": history, "gradient_check": check,
    }
    if with_jit:
        results["jit_max_abs_diff"] = jit_max_abs_diff(loss, params, eval_tasks)
    return results


# %% [markdown]
# ## With `tx.jit`
#
# Transformed functions are ordinary functions, so `tx.jit` compiles them into fused
# kernels, with the same numbers (to float rounding). The first call traces and compiles
# (seconds: one Numba compile per fused kernel); later calls with the same shapes and
# dtypes reuse the compiled code. Here we compile the inner-loop gradient `grad(loss)`;
# the whole meta-gradient, `tx.jit(tx.grad(meta_loss))`, compiles the same way, but its
# graph (second order, batched over tasks) is several times larger and takes
# correspondingly longer to compile.

# %%
def jit_max_abs_diff(loss, params: dict, tasks: tuple) -> float:
    """How far jit(grad(loss)) on a task's support set is from grad(loss), relatively."""
    xs, ys = tasks[0][0], tasks[1][0]
    expected = tx.grad(loss)(params, xs, ys)
    compiled = tx.jit(tx.grad(loss))(params, xs, ys)
    scale = max(float(np.max(np.abs(v))) for v in expected.values())
    return max(float(np.max(np.abs(compiled[k] - expected[k]))) for k in expected) / scale


def _summary(results: dict) -> None:
    print("held-out post-adaptation query loss: " + ", ".join(
        f"step {step}: {value:.3f}" for step, value in results["history"]))
    print("meta-gradient entries (float64): transfuse | finite differences | first-order")
    for row in results["gradient_check"]["entries"]:
        print(f"  {row['name']}{list(row['index'])}: {row['transfuse']: .8f} | "
              f"{row['finite_difference']: .8f} | {row['first_order']: .8f}")
    if "jit_max_abs_diff" in results:
        print(f"jit(grad(loss)) vs grad(loss): max relative difference = "
              f"{results['jit_max_abs_diff']:.2e}")


if __name__ == "__main__":
    _summary(main())
