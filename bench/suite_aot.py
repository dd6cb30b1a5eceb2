"""aot: training steps compiled by AOT Autograd (issue #18, transfuse.compile).

- mlp-step: a 4-layer GELU MLP (tanh approximation; width 512, batch 256, float32), the mean
  squared error and its gradient w.r.t. every weight and bias.
- transformer-block: one pre-layernorm block (single-head softmax attention, a GELU MLP of
  width 4x, residual connections; 128 tokens of width 128, float32), the mean of its
  squared output and the gradient w.r.t. every parameter.

The "transfuse" column is `tx.jit(tx.grad_and_value(memory_efficient_fusion(loss)))`: the
min-cut partition's two halves inlined into one compiled program, the backward's
recomputation kept apart from the forward by optimization barriers (so it keeps the
partition's saved bytes). "transfuse-grad(mef)" is functorch's usage,
`tx.grad_and_value(memory_efficient_fusion(loss))`: each half compiled by the Numba backend
on its own, called from Python (the backward restricted to the parameters' cotangents).
Baselines: `tx.jit(tx.grad_and_value(loss))`, `jax.jit` of
`jax.value_and_grad` with and without `jax.checkpoint` on each layer, and torch's compiled
training step: `torch.compile` of the loss (its AOT Autograd compiles the forward and the
backward; Inductor needs a C++ compiler) followed by `torch.autograd.grad` w.r.t. the
parameters. A torch.compile that fails is reported as unavailable, with the reason.

`python -m transfuse.bench.suites.suite_aot` prints time per step and the bytes stored
between the forward and the backward pass (arguments aside), as ratios to transfuse's; with
`--rounds N`, also the CPU time per step, the systems called in turn N times (on a loaded
machine wall time measures the load); with `--peak`, also the memory each step holds at
its peak (its results aside): the process's resident set for transfuse and torch (run with
MALLOC_MMAP_THRESHOLD_=65536), XLA's account of the step's temporaries for JAX (its
buffers stay allocated between calls).
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from transfuse.ir.tree import tree_flatten, tree_unflatten

from transfuse.bench.core import Case, Runner, import_jax, import_torch
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


def _fused_step(loss: Callable, jitted: bool = True) -> Callable[[tuple], Runner]:
    def factory(inputs: tuple) -> Runner:
        import transfuse as tx
        from transfuse.compile import memory_efficient_fusion

        step = tx.grad_and_value(memory_efficient_fusion(loss))
        step = tx.jit(step) if jitted else step
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


class _TorchOps:
    """The few NumPy functions the losses call (xp=...), on torch tensors."""

    def __init__(self, torch: Any):
        self.tanh, self.exp, self.sqrt = torch.tanh, torch.exp, torch.sqrt

    @staticmethod
    def mean(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    @staticmethod
    def sum(x: Any, axis: int, keepdims: bool = False) -> Any:
        return x.sum(dim=axis, keepdim=keepdims)

    @staticmethod
    def max(x: Any, axis: int, keepdims: bool = False) -> Any:
        return x.amax(dim=axis, keepdim=keepdims)


@functools.cache
def _torch_compiled(loss: Callable) -> Callable:
    """torch.compile of the loss on torch tensors; one per loss, so that the timing, the
    saved bytes and the peak memory reuse one compilation (Dynamo caches by function)."""
    torch = import_torch()
    return torch.compile(partial(loss, xp=_TorchOps(torch)))


def _torch_training_step(loss: Callable, inputs: tuple) -> Callable[[], tuple]:
    """torch.compile of the loss, then torch.autograd.grad w.r.t. the parameters:
    () -> (gradients shaped as the parameters, loss)."""
    torch = import_torch()
    compiled = _torch_compiled(loss)
    params, x, y = inputs
    leaves, tree = tree_flatten(params)
    weights = [torch.from_numpy(w).requires_grad_(True) for w in leaves]
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> tuple:
        value = compiled(tree_unflatten(tree, weights), x, y)
        grads = torch.autograd.grad(value, weights)
        return tree_unflatten(tree, list(grads)), value.detach()
    return step


def _torch_step(loss: Callable) -> Callable[[tuple], Runner]:
    return lambda inputs: Runner(call=_torch_training_step(loss, inputs))


def _baselines(loss: Callable, quick: bool = False) -> dict:
    # --quick checks that everything runs: the two halves are compiled (and tested) by
    # tests/test_aot_autograd.py; here they would be two more compiles per case.
    halves = {} if quick else {"transfuse-grad(mef)": _fused_step(loss, jitted=False)}
    return {**halves, "transfuse-jit(grad)": _jit_step(loss), "jax": _jax_step(loss, False),
            "jax.checkpoint": _jax_step(loss, True), "torch.compile": _torch_step(loss)}


def _case(name: str, description: str, setup: Callable, loss: Callable, quick: bool
          ) -> Case:
    return Case(NAME, name, description + ": memory_efficient_fusion against jit(grad), "
                "jax.jit(grad) with and without jax.checkpoint and torch.compile", setup,
                transform=lambda tx: tx.grad_and_value(loss), baselines=_baselines(loss, quick),
                transfuse_system=_fused_step(loss), needs=("grad_and_value",), rtol=2e-3,
                atol=1e-5)


def cases(quick: bool) -> list[Case]:
    return [_case("mlp-step", f"{LAYERS}-layer GELU MLP, MSE and its gradient",
                  lambda: mlp_inputs(quick), mlp_loss, quick),
            _case("transformer-block", "a pre-layernorm transformer block (single-head "
                  "attention, GELU MLP), its loss and gradient", lambda: block_inputs(quick),
                  block_loss, quick)]


# ---------------------------------------------------------------------------------------
# What each system stores between the passes


def _jax_saved_bytes(loss: Callable, inputs: tuple, checkpointed: bool) -> int:
    jax, jnp = import_jax()
    args = jax.tree_util.tree_map(jnp.asarray, inputs)
    _, vjp_fn = jax.vjp(lambda p: _jax_loss(loss, checkpointed)(p, *args[1:]), args[0])
    given = {id(leaf) for leaf in jax.tree_util.tree_leaves(args)}
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(vjp_fn)
               if id(leaf) not in given)


def _torch_saved_bytes(loss: Callable, inputs: tuple) -> int:
    """What torch's autograd graph holds for the backward of the compiled loss (the tensors
    the compiled forward saves), arguments aside."""
    torch = import_torch()
    step = _torch_training_step(loss, inputs)
    step()  # compiles
    held: dict[tuple, int] = {}

    def pack(t: Any) -> Any:
        held[t.data_ptr(), tuple(t.shape)] = t.nelement() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    given = {w.ctypes.data for w in tree_flatten(inputs)[0]}
    return sum(n for (ptr, _), n in held.items() if ptr not in given)


def saved_bytes(loss: Callable, inputs: tuple, with_torch: bool = True) -> dict[str, int]:
    """Bytes stored between the forward and the backward pass (arguments aside)."""
    import transfuse as tx
    from transfuse.compile import aot_function, min_cut_rematerialization_partition, nop

    fused = aot_function(loss, nop, partition_fn=min_cut_rematerialization_partition)
    params, x, y = inputs
    partition = fused.partition(*inputs).saved_bytes_besides_arguments()
    return {"transfuse": partition, "transfuse-grad(mef)": partition,
            "transfuse-jit(grad)": tx.saved_bytes(lambda p: loss(p, x, y), params,
                                                  include_arguments=False),
            "jax": _jax_saved_bytes(loss, inputs, False),
            "jax.checkpoint": _jax_saved_bytes(loss, inputs, True),
            **(_if_torch_compiles(lambda: _torch_saved_bytes(loss, inputs)) if with_torch
               else {})}


def _if_torch_compiles(measure: Callable[[], int]) -> dict[str, int]:
    """{"torch.compile": measure()}, or {} where torch or its compiler is missing."""
    try:
        return {"torch.compile": measure()}
    except Exception as exc:  # noqa: BLE001 (reported, as the harness reports it)
        print(f"torch.compile: not measured ({type(exc).__name__}: {exc})", file=sys.stderr)
        return {}


def peak_step_bytes(loss: Callable, inputs: tuple) -> dict[str, int]:
    """The memory each system's step holds at its peak, its results aside."""
    out = {"transfuse": peak_of_call(_fused_step(loss)(inputs).call),
           "transfuse-grad(mef)": peak_of_call(_fused_step(loss, jitted=False)(inputs).call),
           "transfuse-jit(grad)": peak_of_call(_jit_step(loss)(inputs).call)}
    jax, jnp = import_jax()
    args = jax.tree_util.tree_map(jnp.asarray, inputs)
    for name, checkpointed in (("jax", False), ("jax.checkpoint", True)):
        step = jax.jit(jax.value_and_grad(_jax_loss(loss, checkpointed)))
        out[name] = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
    out.update(_if_torch_compiles(lambda: peak_of_call(_torch_training_step(loss, inputs))))
    return out


def cpu_times(loss: Callable, inputs: tuple, systems: Sequence[str], rounds: int
              ) -> dict[str, float]:
    """Median CPU seconds per step of each system, the systems alternating call by call
    (on a machine loaded by other jobs, wall time measures the load; one thread each)."""
    factories = {"transfuse": _fused_step(loss), **_baselines(loss)}
    calls = {name: factories[name](inputs).call for name in systems}
    for call in calls.values():
        call()
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.process_time()
            call()
            samples[name].append(time.process_time() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def main(argv: list[str]) -> int:
    """Time per step, bytes stored and (--peak) peak bytes, side by side (ratios to
    transfuse's)."""
    from transfuse.bench.harness import Settings, run_case

    quick = "--quick" in argv
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 0
    nan = float("nan")
    for case, loss in zip(cases(quick), (mlp_loss, block_loss)):
        result = run_case(case, Settings(quick=quick))
        stored = saved_bytes(loss, case.setup(), with_torch=not quick)
        peak = peak_step_bytes(loss, case.setup()) if "--peak" in argv else {}
        ran = [name for name, system in result.systems.items() if system.timing]
        cpu = cpu_times(loss, case.setup(), ran, rounds) if rounds else {}
        base_s = result.systems["transfuse"].timing.median_s
        print(case.full_name)
        print(f"{'system':<24}{'ms/step':>10}{'time ratio':>12}"
              + (f"{'cpu ms':>10}{'cpu ratio':>11}" if cpu else "")
              + f"{'saved KiB':>12}{'bytes ratio':>13}" + (f"{'peak KiB':>12}" if peak else ""))
        for name, system in result.systems.items():
            ms = system.timing.median_s * 1e3 if system.timing else nan
            cpu_ms = cpu.get(name, nan) * 1e3
            kib = stored.get(name, nan) / 2 ** 10
            print(f"{name:<24}{ms:>10.2f}{ms / 1e3 / base_s:>12.2f}"
                  + (f"{cpu_ms:>10.2f}{cpu_ms / 1e3 / cpu['transfuse']:>11.2f}" if cpu else "")
                  + f"{kib:>12.1f}{stored.get(name, nan) / stored['transfuse']:>13.2f}"
                  + (f"{peak.get(name, nan) / 2 ** 10:>12.1f}" if peak else ""))
            if not system.timing:
                print(f"    ({system.status}: {system.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
