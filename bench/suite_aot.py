"""aot: training steps compiled by AOT Autograd (issue #18, transfuse.compile).

- mlp-step: a 4-layer GELU MLP (tanh approximation; width 512, batch 256, float32), the mean
  squared error and its gradient w.r.t. every weight and bias.
- transformer-block: one pre-layernorm block (single-head softmax attention, a GELU MLP of
  width 4x, residual connections; 128 tokens of width 128, float32), the mean of its
  squared output and the gradient w.r.t. every parameter.

The "transfuse" column is `memory_efficient_fusion` of the loss (the min-cut partitioner,
both halves compiled by the Numba backend) under `tx.grad_and_value`; it also computes the
cotangents of the data (x, y), which the other systems skip (an aot function differentiates
every floating input). Baselines: `tx.jit(tx.grad_and_value(loss))`, and `jax.jit` of
`jax.value_and_grad` with and without `jax.checkpoint` on each layer. torch's compiled
training step is not included (torch.compile needs a C++ toolchain on the CPU).

`python -m transfuse.bench.suites.suite_aot` prints time per step and the bytes stored
between the forward and the backward pass (arguments aside), as ratios to transfuse's; with
`--peak`, also the memory each step holds at its peak (its results aside): the process's
resident set for transfuse (run with MALLOC_MMAP_THRESHOLD_=65536), XLA's account of the
step's temporaries for JAX (its buffers stay allocated between calls).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import numpy as np

from transfuse.bench.core import Case, Runner, import_jax
from transfuse.bench.memory import peak_of_call

NAME = "aot"
LAYERS = 4


def _gelu(h, xp):
    inner = np.float32(0.7978845608) * (h + np.float32(0.044715) * h ** 3)
    return 0.5 * h * (1.0 + xp.tanh(inner))


def _layernorm(x, gamma, beta, xp):
    mu = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / xp.sqrt(var + np.float32(1e-5)) * gamma + beta


def mlp_layer(x, w, b, xp=np):
    return _gelu(x @ w + b, xp)


def mlp_loss(params, x, y, *, xp=np, layer=mlp_layer):
    for w, b in params:
        x = layer(x, w, b, xp=xp)
    return xp.mean((x - y) ** 2)


def block(x, p, xp=np):
    h = _layernorm(x, p["ln1_g"], p["ln1_b"], xp)
    q, k, v = h @ p["wq"], h @ p["wk"], h @ p["wv"]
    s = q @ k.T * np.float32(1.0 / np.sqrt(q.shape[-1]))
    s = s - xp.max(s, axis=-1, keepdims=True)
    a = xp.exp(s)
    a = a / xp.sum(a, axis=-1, keepdims=True)
    x = x + (a @ v) @ p["wo"]
    h = _layernorm(x, p["ln2_g"], p["ln2_b"], xp)
    return x + _gelu(h @ p["w1"], xp) @ p["w2"]


def block_loss(params, x, y, *, xp=np, layer=block):
    return xp.mean((layer(x, params, xp=xp) - y) ** 2)


def _rand(rng, shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))


def mlp_inputs(quick: bool) -> tuple:
    width, batch = (32, 16) if quick else (512, 256)
    rng = np.random.default_rng(18)
    params = [(_rand(rng, (width, width), 1 / np.sqrt(width)), _rand(rng, width, 0.1))
              for _ in range(LAYERS)]
    return params, _rand(rng, (batch, width)), _rand(rng, (batch, width))


def block_inputs(quick: bool) -> tuple:
    width, tokens = (16, 8) if quick else (128, 128)
    rng = np.random.default_rng(19)
    square = ("wq", "wk", "wv", "wo")
    params = {n: _rand(rng, (width, width), 1 / np.sqrt(width)) for n in square}
    params |= {"w1": _rand(rng, (width, 4 * width), 1 / np.sqrt(width)),
               "w2": _rand(rng, (4 * width, width), 1 / np.sqrt(4 * width))}
    for n in ("ln1", "ln2"):
        params |= {n + "_g": 1 + _rand(rng, width, 0.1), n + "_b": _rand(rng, width, 0.1)}
    return params, _rand(rng, (tokens, width)), _rand(rng, (tokens, width))


def _fused_step(loss: Callable) -> Callable[[tuple], Runner]:
    def factory(inputs: tuple) -> Runner:
        import transfuse as tx
        from transfuse.compile import memory_efficient_fusion

        step = tx.grad_and_value(memory_efficient_fusion(loss))
        return Runner(call=lambda: step(*inputs))
    return factory


def _jit_step(loss: Callable) -> Callable[[tuple], Runner]:
    def factory(inputs: tuple) -> Runner:
        import transfuse as tx

        step = tx.jit(tx.grad_and_value(loss))
        return Runner(call=lambda: step(*inputs))
    return factory


def _jax_loss(loss: Callable, checkpointed: bool) -> Callable:
    jax, jnp = import_jax()
    layer = mlp_layer if loss is mlp_loss else block
    if checkpointed:
        layer = jax.checkpoint(layer, static_argnums=(3,) if layer is mlp_layer else (2,))
    return partial(loss, xp=jnp, layer=lambda *a, xp: layer(*a, xp))


def _jax_step(loss: Callable, checkpointed: bool) -> Callable[[tuple], Runner]:
    def factory(inputs: tuple) -> Runner:
        jax, jnp = import_jax()
        value_and_grad = jax.jit(jax.value_and_grad(_jax_loss(loss, checkpointed)))
        args = jax.tree_util.tree_map(jnp.asarray, inputs)
        return Runner(call=lambda: tuple(reversed(jax.block_until_ready(
            value_and_grad(*args)))))
    return factory


def _baselines(loss: Callable) -> dict:
    return {"transfuse-jit(grad)": _jit_step(loss), "jax": _jax_step(loss, False),
            "jax.checkpoint": _jax_step(loss, True)}


def _case(name: str, description: str, setup: Callable, loss: Callable) -> Case:
    return Case(NAME, name, description + ": memory_efficient_fusion against jit(grad) and "
                "jax.jit(grad) with and without jax.checkpoint", setup,
                transform=lambda tx: tx.grad_and_value(loss), baselines=_baselines(loss),
                transfuse_system=_fused_step(loss), needs=("grad_and_value",), rtol=2e-3,
                atol=1e-5)


def cases(quick: bool) -> list[Case]:
    return [_case("mlp-step", f"{LAYERS}-layer GELU MLP, MSE and its gradient",
                  lambda: mlp_inputs(quick), mlp_loss),
            _case("transformer-block", "a pre-layernorm transformer block (single-head "
                  "attention, GELU MLP), its loss and gradient", lambda: block_inputs(quick),
                  block_loss)]


# ---------------------------------------------------------------------------------------
# What each system stores between the passes


def _jax_saved_bytes(loss: Callable, inputs: tuple, checkpointed: bool) -> int:
    jax, jnp = import_jax()
    args = jax.tree_util.tree_map(jnp.asarray, inputs)
    _, vjp_fn = jax.vjp(lambda p: _jax_loss(loss, checkpointed)(p, *args[1:]), args[0])
    given = {id(leaf) for leaf in jax.tree_util.tree_leaves(args)}
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(vjp_fn)
               if id(leaf) not in given)


def saved_bytes(loss: Callable, inputs: tuple) -> dict[str, int]:
    """Bytes stored between the forward and the backward pass (arguments aside)."""
    import transfuse as tx
    from transfuse.compile import aot_function, min_cut_rematerialization_partition, nop

    fused = aot_function(loss, nop, partition_fn=min_cut_rematerialization_partition)
    params, x, y = inputs
    return {"transfuse": fused.partition(*inputs).saved_bytes_besides_arguments(),
            "transfuse-jit(grad)": tx.saved_bytes(lambda p: loss(p, x, y), params,
                                                  include_arguments=False),
            "jax": _jax_saved_bytes(loss, inputs, False),
            "jax.checkpoint": _jax_saved_bytes(loss, inputs, True)}


def peak_step_bytes(loss: Callable, inputs: tuple) -> dict[str, int]:
    """The memory each system's step holds at its peak, its results aside."""
    out = {"transfuse": peak_of_call(_fused_step(loss)(inputs).call),
           "transfuse-jit(grad)": peak_of_call(_jit_step(loss)(inputs).call)}
    jax, jnp = import_jax()
    args = jax.tree_util.tree_map(jnp.asarray, inputs)
    for name, checkpointed in (("jax", False), ("jax.checkpoint", True)):
        step = jax.jit(jax.value_and_grad(_jax_loss(loss, checkpointed)))
        out[name] = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
    return out


def main(argv: list[str]) -> int:
    """Time per step, bytes stored and (--peak) peak bytes, side by side (ratios to
    transfuse's)."""
    from transfuse.bench.harness import Settings, run_case

    quick = "--quick" in argv
    nan = float("nan")
    for case, loss in zip(cases(quick), (mlp_loss, block_loss)):
        result = run_case(case, Settings(quick=quick))
        stored = saved_bytes(loss, case.setup())
        peak = peak_step_bytes(loss, case.setup()) if "--peak" in argv else {}
        base_s = result.systems["transfuse"].timing.median_s
        print(case.full_name)
        print(f"{'system':<24}{'ms/step':>10}{'time ratio':>12}{'saved KiB':>12}"
              f"{'bytes ratio':>13}" + (f"{'peak KiB':>12}" if peak else ""))
        for name, system in result.systems.items():
            ms = system.timing.median_s * 1e3 if system.timing else nan
            kib = stored.get(name, nan) / 2 ** 10
            print(f"{name:<24}{ms:>10.2f}{ms / 1e3 / base_s:>12.2f}{kib:>12.1f}"
                  f"{stored.get(name, nan) / stored['transfuse']:>13.2f}"
                  + (f"{peak.get(name, nan) / 2 ** 10:>12.1f}" if peak else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
