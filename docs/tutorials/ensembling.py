"""Model ensembling
================

An ensemble combines the predictions of several models of the same architecture with
different weights. Evaluated one model after another, it costs one forward pass per model.
With `tx.stack_module_state` the models' parameters are stacked on a new leading axis, and
`tx.vmap` over `tx.functional_call` evaluates all of them as one batched program.

This is the transfuse edition of torch.func's "Model ensembling" tutorial, with a training
step for the whole ensemble added at the end.

Run it with `python docs/tutorials/ensembling.py`.
"""

# %% [markdown]
# ## Setup: a few small MLPs and MNIST-sized data
#
# Each model flattens a 1x28x28 image and applies Linear -> ReLU -> Linear. Every model is
# initialised differently (`nn.init` draws one after another from a seeded generator).

# %%
from __future__ import annotations

import copy

import numpy as np

import transfuse as tx
import transfuse.nn as nn
import transfuse.nn.functional as F
import transfuse.numpy as tnp

NUM_MODELS = 4
BATCH = 8
HIDDEN = 32


class SimpleMLP(nn.Module):
    """Flatten -> Linear(784, HIDDEN) -> ReLU -> Linear(HIDDEN, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, 10)

    def forward(self, x):
        x = tnp.reshape(x, (x.shape[0], -1))
        return self.fc2(F.relu(self.fc1(x)))


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A different minibatch per model (NUM_MODELS, BATCH, 1, 28, 28), and their labels."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((NUM_MODELS, BATCH, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, size=(NUM_MODELS, BATCH))
    return images, labels


# %% [markdown]
# ## The baseline: a loop over models

# %%
def loop_predictions(models: list, minibatches) -> np.ndarray:
    """Model i on minibatch i, stacked: (NUM_MODELS, BATCH, 10)."""
    return np.stack([model(x) for model, x in zip(models, minibatches)])


# %% [markdown]
# ## Stacking the models' state
#
# `tx.stack_module_state(models)` returns two dicts, parameters and buffers, keyed by
# parameter name as in `model.named_parameters()`; each array has a new leading axis of
# size `NUM_MODELS`. These are new arrays: the models themselves are untouched.
#
# `functional_call` needs a module to run; any of the models would do, since all its
# parameters are replaced. We use a copy (`copy.deepcopy`), so that the base model is
# clearly a template and not one of the ensemble (torch uses a copy on the 'meta' device
# for the same purpose).

# %%
def make_ensemble_fn(models: list):
    """(params, buffers, fmodel): the stacked state and the function of one model."""
    params, buffers = tx.stack_module_state(models)
    base_model = copy.deepcopy(models[0])

    def fmodel(params: dict, buffers: dict, x):
        return tx.functional_call(base_model, (params, buffers), (x,))

    return params, buffers, fmodel


# %% [markdown]
# ## Option 1: a different minibatch for each model
#
# `vmap(fmodel)` maps over axis 0 of every argument: model i's parameters with
# minibatch i. This is the same as `in_dims=(0, 0, 0)`.
#
# ## Option 2: the same minibatch for every model
#
# `in_dims=(0, 0, None)` maps over the stacked parameters and passes the one minibatch
# to every model unchanged.

# %%
def ensemble_predictions(fmodel, params: dict, buffers: dict, minibatches) -> np.ndarray:
    """Model i on minibatch i, as one vmapped program."""
    return tx.vmap(fmodel)(params, buffers, minibatches)


def ensemble_predictions_same_batch(fmodel, params: dict, buffers: dict, minibatch
                                    ) -> np.ndarray:
    """Every model on the same minibatch, as one vmapped program."""
    return tx.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, minibatch)


# %% [markdown]
# ## A training step for the whole ensemble
#
# The transforms compose: `vmap(grad(loss))` over the stacked parameters gives every
# model's gradient on its own minibatch at once, and one SGD step updates all the models.

# %%
def ensemble_grads(fmodel, params: dict, buffers: dict, minibatches, labels) -> dict:
    """Each model's gradient of its own minibatch's loss, stacked on axis 0."""
    def loss(params, buffers, x, y):
        return F.cross_entropy(fmodel(params, buffers, x), y)

    return tx.vmap(tx.grad(loss))(params, buffers, minibatches, labels)


def _max_diff(a, b) -> float:
    if isinstance(a, dict):
        return max(_max_diff(a[k], b[k]) for k in a)
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# %%
def main(with_jit: bool = True) -> dict:
    """Run the tutorial; return its results. with_jit=False skips the tx.jit section."""
    nn.init.seed(0)
    models = [SimpleMLP() for _ in range(NUM_MODELS)]
    minibatches, labels = make_data()
    params, buffers, fmodel = make_ensemble_fn(models)

    different = ensemble_predictions(fmodel, params, buffers, minibatches)
    same = ensemble_predictions_same_batch(fmodel, params, buffers, minibatches[0])
    grads = ensemble_grads(fmodel, params, buffers, minibatches, labels)
    # One SGD step for every model at once, and the loss each model had before and after.
    stepped = {k: params[k] - 0.1 * grads[k] for k in params}

    def losses(p):
        logits = ensemble_predictions(fmodel, p, buffers, minibatches)
        return np.array([float(F.cross_entropy(logits[i], labels[i]))
                         for i in range(NUM_MODELS)])

    results = {
        "models": models, "minibatches": minibatches, "labels": labels,
        "params": params, "buffers": buffers, "fmodel": fmodel,
        "different_minibatches": different,
        "same_minibatch": same,
        "loop_different": loop_predictions(models, minibatches),
        "loop_same": loop_predictions(models, [minibatches[0]] * NUM_MODELS),
        "ensemble_grads": grads,
        "loss_before": losses(params), "loss_after": losses(stepped),
    }
    results["max_abs_diff_different"] = _max_diff(different, results["loop_different"])
    results["max_abs_diff_same"] = _max_diff(same, results["loop_same"])
    if with_jit:
        results["jit_max_abs_diff"] = jit_max_abs_diff(fmodel, params, buffers, minibatches,
                                                       different)
    return results


# %% [markdown]
# ## With `tx.jit`
#
# The vmapped ensemble is an ordinary function, so `tx.jit` compiles it into fused
# kernels; the numbers are the same (to float rounding). The first call traces and
# compiles (seconds: one Numba compile per fused kernel); later calls with the same
# shapes and dtypes reuse the compiled code.

# %%
def jit_max_abs_diff(fmodel, params, buffers, minibatches, expected) -> float:
    """How far jit(vmap(fmodel)) is from the uncompiled ensemble predictions."""
    return _max_diff(tx.jit(tx.vmap(fmodel))(params, buffers, minibatches), expected)


def _summary(results: dict) -> None:
    print(f"{NUM_MODELS} models, predictions {results['different_minibatches'].shape}")
    print(f"different minibatches: vmap vs loop, max |difference| = "
          f"{results['max_abs_diff_different']:.2e}")
    print(f"same minibatch: vmap vs loop, max |difference| = "
          f"{results['max_abs_diff_same']:.2e}")
    print(f"one SGD step on all models: loss {np.round(results['loss_before'], 3)} -> "
          f"{np.round(results['loss_after'], 3)}")
    if "jit_max_abs_diff" in results:
        print(f"jit(vmap(fmodel)) vs vmap(fmodel): max |difference| = "
              f"{results['jit_max_abs_diff']:.2e}")


if __name__ == "__main__":
    _summary(main())
