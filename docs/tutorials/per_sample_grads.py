"""Per-sample gradients
====================

Training computes the gradient of the *mean* loss over a batch. Some methods need the
gradient of the loss of *each example* separately: differential privacy clips every
example's gradient before averaging, and optimisation research looks at the variance of
per-example gradients or at which examples dominate an update.

The obvious way is a Python loop: one forward and one backward pass per example. Here we
write the loss of a *single* example, take its gradient with `tx.grad`, and batch that
gradient function with `tx.vmap`, so one program computes all the per-example gradients
at once. This is the transfuse edition of torch.func's "Per-sample-gradients" tutorial;
the code reads the same, with NumPy arrays in place of tensors.

Run it with `python docs/tutorials/per_sample_grads.py`.
"""

# %% [markdown]
# ## Setup: a small CNN and some MNIST-sized data
#
# Conv2d -> ReLU -> Flatten -> Linear on 1x28x28 images, 10 classes. The data is random
# (drawn from a seeded generator), which is all a gradient computation needs.

# %%
from __future__ import annotations

import time

import numpy as np

import transfuse as tx
import transfuse.nn as nn
import transfuse.nn.functional as F
import transfuse.numpy as tnp

BATCH = 16
CHANNELS = 4


def make_model() -> nn.Module:
    """Conv2d(1, 4, 3, stride 2) -> ReLU -> Flatten -> Linear(4 * 13 * 13, 10)."""
    return nn.Sequential(
        nn.Conv2d(1, CHANNELS, kernel_size=3, stride=2),  # (N, 4, 13, 13)
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(CHANNELS * 13 * 13, 10),
    )


def make_data(batch: int = BATCH, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 images (batch, 1, 28, 28) and integer labels (batch,)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, size=batch)
    return images, labels


# %% [markdown]
# ## The loss of one example
#
# `tx.functional_call(model, (params, buffers), args)` runs the model with the arrays we
# pass in place of its own parameters, so the loss is a plain function of `params`, which
# `tx.grad` can differentiate. The model expects a batch dimension, so a single example
# gets one with `tnp.expand_dims` (indexing with `sample[None]` works as well).

# %%
def compute_loss(model: nn.Module, params: dict, buffers: dict, sample, target):
    """Cross-entropy of one example (1, 28, 28) with its label (a 0-d integer array)."""
    batch = tnp.expand_dims(sample, 0)
    targets = tnp.expand_dims(target, 0)
    logits = tx.functional_call(model, (params, buffers), (batch,))
    return F.cross_entropy(logits, targets)


# %% [markdown]
# ## The baseline: a loop over examples
#
# One gradient per example, stacked afterwards. `tx.grad(f)` differentiates with respect
# to the first argument by default, here the parameter dict, and returns a dict with the
# same keys.

# %%
def loop_per_sample_grads(loss_fn, params: dict, buffers: dict, images, labels) -> dict:
    """Per-example gradients, one `tx.grad` call per example, stacked on a new axis 0."""
    grad_fn = tx.grad(loss_fn)
    rows = [grad_fn(params, buffers, images[i], labels[i]) for i in range(len(images))]
    return {name: np.stack([row[name] for row in rows]) for name in params}


# %% [markdown]
# ## The transformed version: `vmap(grad(loss))`
#
# `tx.grad(loss)` is the gradient function of one example. `tx.vmap` batches it:
# `in_dims=(None, None, 0, 0)` says the parameters and buffers are shared by every example
# (not batched), while the images and labels are batched along their axis 0. The result
# has the structure of `params`, each array with a leading batch axis.

# %%
def vmap_per_sample_grads(loss_fn, params: dict, buffers: dict, images, labels) -> dict:
    """Per-example gradients as one batched program."""
    return tx.vmap(tx.grad(loss_fn), in_dims=(None, None, 0, 0))(params, buffers, images,
                                                                 labels)


def _max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _timed(fn, *args) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


# %% [markdown]
# ## Putting it together
#
# Both ways give the same numbers (to float32 rounding). vmap also runs one batched
# program instead of `BATCH` small ones; the second call reuses the transformed graph,
# cached by the arguments' shapes and dtypes.

# %%
def main(with_jit: bool = True) -> dict:
    """Run the tutorial; return its results. with_jit=False skips the tx.jit section."""
    nn.init.seed(0)
    model = make_model()
    images, labels = make_data()
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())  # this model has none

    def loss(params, buffers, sample, target):
        return compute_loss(model, params, buffers, sample, target)

    vmap_grads = vmap_per_sample_grads(loss, params, buffers, images, labels)  # warm up
    vmap_grads, vmap_s = _timed(vmap_per_sample_grads, loss, params, buffers, images, labels)
    loop_grads, loop_s = _timed(loop_per_sample_grads, loss, params, buffers, images, labels)
    results = {
        "model": model, "params": params, "images": images, "labels": labels,
        "loss": loss, "per_sample_grads": vmap_grads, "loop_grads": loop_grads,
        "max_abs_diff": _max_diff(vmap_grads, loop_grads),
        "vmap_seconds": vmap_s, "loop_seconds": loop_s,
    }

    if with_jit:
        results["jit_max_abs_diff"] = jit_max_abs_diff(loss, params, buffers, images,
                                                       labels, vmap_grads)
    return results


# %% [markdown]
# ## With `tx.jit`
#
# A transformed function is an ordinary function, so `tx.jit` compiles it into fused
# kernels; the numbers are the same (to float rounding). The first call traces and
# compiles (seconds: one Numba compile per fused kernel); later calls with the same
# shapes and dtypes reuse the compiled code.

# %%
def jit_max_abs_diff(loss, params, buffers, images, labels, expected: dict) -> float:
    """How far jit(vmap(grad(loss))) is from the uncompiled per-sample gradients."""
    compiled = tx.jit(tx.vmap(tx.grad(loss), in_dims=(None, None, 0, 0)))
    return _max_diff(compiled(params, buffers, images, labels), expected)


def _summary(results: dict) -> None:
    shapes = {k: v.shape for k, v in results["per_sample_grads"].items()}
    print(f"per-sample gradient shapes: {shapes}")
    print(f"vmap(grad) vs loop of grad: max |difference| = {results['max_abs_diff']:.2e}")
    print(f"time: vmap {results['vmap_seconds'] * 1e3:.1f} ms, "
          f"loop {results['loop_seconds'] * 1e3:.1f} ms")
    if "jit_max_abs_diff" in results:
        print(f"jit(vmap(grad)) vs vmap(grad): max |difference| = "
              f"{results['jit_max_abs_diff']:.2e}")


if __name__ == "__main__":
    _summary(main())
