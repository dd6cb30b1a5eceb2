"""AOT Autograd: how to use and optimise
=====================================

`transfuse.compile.aot_function` traces a function together with its reverse pass into one
*joint graph*, splits it into a forward graph and a backward graph, and hands each to a
compiler of your choice. Because both passes are known ahead of time, the split itself can
be optimised: the min-cut partitioner saves fewer, smaller values for the backward and
recomputes cheap ones there instead, which is what `memory_efficient_fusion` does.

This is the transfuse edition of functorch's "AOT Autograd - How to use and optimize?"
tutorial. Run it with `python docs/tutorials/aot_autograd.py`.
"""

# %% [markdown]
# ## A small function and its two graphs
#
# A compiler is called as `compiler(graph, example_avals)` and returns a callable.
# `print_compile` prints the graph it gets (each node with its source line) and runs it with
# the reference interpreter; `nop` only runs it.

# %%
from __future__ import annotations

import time

import numpy as np

import transfuse as tx
from transfuse.compile import (
    aot_function,
    memory_efficient_fusion,
    min_cut_rematerialization_partition,
    nop,
    print_compile,
    saved_bytes,
)


def fn(a, b, c, d):
    x = a + b + c + d
    return np.cos(np.cos(x))


def make_inputs(n: int = 1000, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n) for _ in range(4)]


def loss_of(f):
    """The sum of f's output, a scalar to differentiate."""
    return lambda *xs: np.sum(f(*xs))


ALL = (0, 1, 2, 3)

# %% [markdown]
# Calling the aot function compiles (and here prints) both graphs for this signature; the
# gradient runs the compiled forward and then the compiled backward. Both agree with the
# eager NumPy function and its `tx.grad`.

# %%


def default_vs_eager(inputs: list[np.ndarray], show: bool = True) -> dict:
    aot_fn = aot_function(fn, print_compile if show else nop)
    grads = tx.grad(loss_of(aot_fn), argnums=ALL)(*inputs)
    eager = tx.grad(loss_of(fn), argnums=ALL)(*inputs)
    return {"output_diff": float(np.max(np.abs(aot_fn(*inputs) - fn(*inputs)))),
            "grad_diff": max(float(np.max(np.abs(g - e))) for g, e in zip(grads, eager)),
            "default_saved": saved_bytes(aot_fn, *inputs)}

# %% [markdown]
# ## Saving less: the min-cut partitioner
#
# The default partition saves everything the backward reads: here `x` and `cos(x)`. The
# min-cut partitioner sees that `cos(x)` is one cheap elementwise step from `x`, saves only
# `x` and recomputes `cos(x)` in the backward (where fusion folds it into the kernel that
# reads it). Contractions and reductions are never recomputed.

# %%


def min_cut(inputs: list[np.ndarray], show: bool = True) -> dict:
    aot_fn = aot_function(fn, print_compile if show else nop,
                          partition_fn=min_cut_rematerialization_partition)
    grads = tx.grad(loss_of(aot_fn), argnums=ALL)(*inputs)
    eager = tx.grad(loss_of(fn), argnums=ALL)(*inputs)
    return {"min_cut_saved": saved_bytes(aot_fn, *inputs),
            "min_cut_grad_diff": max(float(np.max(np.abs(g - e)))
                                     for g, e in zip(grads, eager))}

# %% [markdown]
# ## memory_efficient_fusion
#
# `memory_efficient_fusion(fn)` is `aot_function` with the min-cut partitioner and the Numba
# backend (`jit_compile`) on both graphs. We time a training-style step (forward and
# backward) of it against `tx.jit(tx.grad(...))` of the original function. Expect the
# whole-program jit to win on a function this small: it fuses the forward and the backward
# into one loop that saves nothing at all, while the aot function runs two kernels, stores
# `x` between them and recomputes `cos(x)`. memory_efficient_fusion pays off where the
# forward and backward cannot be one program: a training step whose backward runs later.
# Under `tx.jit(tx.grad(memory_efficient_fusion(fn)))` they are one program again (jit
# inlines both halves; barriers keep the recomputation in the backward), which is how the
# `transfuse bench --suite aot` training steps run fastest (docs/aot_autograd.md).

# %%


def _best_time(step, repeat: int = 20) -> float:
    step()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def benchmark(inputs: list[np.ndarray]) -> dict:
    fused = memory_efficient_fusion(fn)
    fused_grad = tx.grad(loss_of(fused), argnums=ALL)
    jit_grad = tx.jit(tx.grad(loss_of(fn), argnums=ALL))
    diff = max(float(np.max(np.abs(g - e)))
               for g, e in zip(fused_grad(*inputs), jit_grad(*inputs)))
    return {"fusion_grad_diff": diff,
            "fusion_seconds": _best_time(lambda: fused_grad(*inputs)),
            "jit_grad_seconds": _best_time(lambda: jit_grad(*inputs))}


def main(with_jit: bool = True, show: bool = True) -> dict:
    inputs = make_inputs()
    results = default_vs_eager(inputs, show) | min_cut(inputs, show)
    if with_jit:
        results |= benchmark(make_inputs(1 << 18))
    return results


def _summary(res: dict) -> None:
    print(f"aot vs eager: output {res['output_diff']:.1e}, gradients {res['grad_diff']:.1e}")
    print(f"saved for the backward: default {res['default_saved']} bytes, min-cut "
          f"{res['min_cut_saved']} bytes (gradients {res['min_cut_grad_diff']:.1e} from eager)")
    if "fusion_seconds" in res:
        print(f"memory_efficient_fusion step {res['fusion_seconds'] * 1e3:.2f} ms, "
              f"jit(grad) {res['jit_grad_seconds'] * 1e3:.2f} ms (gradients agree to "
              f"{res['fusion_grad_diff']:.1e})")


if __name__ == "__main__":
    _summary(main())
