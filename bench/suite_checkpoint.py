"""checkpoint: a training step of a deep MLP with its activations recomputed (issue #17 (c)).

- mlp-step: a 16-layer tanh MLP (width 512, batch 256, float32), the mean squared error
  and its gradient w.r.t. every weight and bias (`grad_and_value`), the layers checkpointed
  in 4 segments of 4 (the sqrt(n) schedule: only each segment's input is stored, its
  layers are recomputed in the backward pass). Checkpointing one `tanh(x @ w + b)` layer
  alone saves nothing: its input is the previous layer's output, which a step without
  checkpoints stores anyway. The "transfuse" column is `transfuse.checkpoint`; the others
  are the same step without checkpoints ("transfuse-no-checkpoint", "jax"), with
  `prevent_cse=False` (jit's CSE merges the recomputation back into the forward pass) and
  with `jax.checkpoint` ("jax.checkpoint"), all jitted. On the CPU, XLA merges
  jax.checkpoint's recomputation back as well: its compiled step has the 47 products of
  the step without checkpoint, where transfuse's has 63 (16 recomputed).

Time is what `transfuse bench` reports; what reverse mode stores (the residuals of vjp,
arguments excluded) is `saved_bytes`. `python -m transfuse.bench.suites.suite_checkpoint`
prints both side by side, as ratios to transfuse with checkpoints, and with `--peak` the
memory the jitted step holds at its peak (`peak_step_bytes`; docs/performance.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import numpy as np

from transfuse.bench.core import Case, Runner, import_jax
from transfuse.bench.memory import peak_of_call

NAME = "checkpoint"
LAYERS, SEGMENT = 16, 4
# --quick checks that every system runs and agrees: two segments are enough for that, and
# each jitted step's compile time grows with its layers (three transfuse steps, two of JAX).
QUICK_LAYERS = 8


def _sizes(quick: bool) -> tuple[int, int]:
    """(width, batch)."""
    return (32, 16) if quick else (512, 256)


def _layers(quick: bool) -> int:
    """The MLP's depth: LAYERS, or QUICK_LAYERS under --quick."""
    return QUICK_LAYERS if quick else LAYERS


def mlp_inputs(quick: bool, batch_factor: int = 1) -> tuple:
    """(params: a list of (w, b) per layer, x, y), float32."""
    width, batch = _sizes(quick)
    batch *= batch_factor
    rng = np.random.default_rng(17)
    scale = np.float32(1.0 / np.sqrt(width))
    params = [(rng.standard_normal((width, width), dtype=np.float32) * scale,
               rng.standard_normal(width, dtype=np.float32) * np.float32(0.1))
              for _ in range(_layers(quick))]
    x = rng.standard_normal((batch, width), dtype=np.float32)
    return params, x, rng.standard_normal((batch, width), dtype=np.float32)


def _segment(x, params, tanh):
    for w, b in params:
        x = tanh(x @ w + b)
    return x


def mlp_loss(params, x, y, *, checkpoint: Callable | None = None, xp=np):
    """The MSE of the MLP; with `checkpoint`, each segment of SEGMENT layers is one."""
    run = partial(_segment, tanh=xp.tanh)
    if checkpoint is not None:
        run = checkpoint(run)
    for start in range(0, len(params), SEGMENT):
        x = run(x, params[start:start + SEGMENT])
    return xp.mean((x - y) ** 2)


def _transfuse_step(checkpoint: str | None) -> Callable[[tuple], Runner]:
    """transfuse's jitted step: no checkpoint, or one with prevent_cse=False ("merged")."""
    def factory(inputs: tuple) -> Runner:
        import transfuse as tx

        ck = None if checkpoint is None else partial(tx.checkpoint, prevent_cse=False)
        step = tx.jit(tx.grad_and_value(partial(mlp_loss, checkpoint=ck)))
        return Runner(call=lambda: step(*inputs))
    return factory


def _jax_step(checkpointed: bool) -> Callable[[tuple], Runner]:
    def factory(inputs: tuple) -> Runner:
        jax, jnp = import_jax()
        loss = partial(mlp_loss, xp=jnp,
                       checkpoint=jax.checkpoint if checkpointed else None)
        value_and_grad = jax.jit(jax.value_and_grad(loss))
        args = jax.tree_util.tree_map(jnp.asarray, inputs)
        return Runner(call=lambda: tuple(reversed(jax.block_until_ready(
            value_and_grad(*args)))))
    return factory


def cases(quick: bool) -> list[Case]:
    width, batch = _sizes(quick)
    return [Case(
        NAME, "mlp-step",
        f"{_layers(quick)}-layer tanh MLP (width {width}, batch {batch}, float32), MSE and its "
        f"gradient, checkpointed in segments of {SEGMENT} layers, against no checkpoint and "
        "jax.checkpoint",
        lambda: mlp_inputs(quick),
        transform=lambda tx: tx.grad_and_value(partial(mlp_loss, checkpoint=tx.checkpoint)),
        needs=("grad_and_value", "checkpoint"), rtol=2e-3, atol=1e-5,
        baselines={"transfuse-no-checkpoint": _transfuse_step(None),
                   "transfuse-prevent_cse=False": _transfuse_step("merged"),
                   "jax.checkpoint": _jax_step(True), "jax": _jax_step(False)})]


# ---------------------------------------------------------------------------------------
# What reverse mode stores


def _jax_saved_bytes(inputs: tuple, checkpointed: bool) -> int:
    """The bytes of jax.vjp's residuals (the leaves of its vjp function), arguments aside."""
    jax, jnp = import_jax()
    args = jax.tree_util.tree_map(jnp.asarray, inputs)
    loss = partial(mlp_loss, xp=jnp, checkpoint=jax.checkpoint if checkpointed else None)
    _, vjp_fn = jax.vjp(lambda params: loss(params, *args[1:]), args[0])
    given = {id(leaf) for leaf in jax.tree_util.tree_leaves(args)}
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(vjp_fn)
               if id(leaf) not in given)


def saved_bytes(quick: bool) -> dict[str, int]:
    """Bytes stored between the forward and the backward pass, per system (arguments aside:
    the caller holds those anyway)."""
    import transfuse as tx

    params, x, y = mlp_inputs(quick)

    def stored(checkpoint):
        return tx.saved_bytes(lambda p: mlp_loss(p, x, y, checkpoint=checkpoint), params,
                              include_arguments=False)

    inputs = (params, x, y)
    return {"transfuse": stored(tx.checkpoint), "transfuse-no-checkpoint": stored(None),
            "transfuse-prevent_cse=False": stored(partial(tx.checkpoint, prevent_cse=False)),
            "jax.checkpoint": _jax_saved_bytes(inputs, True),
            "jax": _jax_saved_bytes(inputs, False)}


PEAK_BATCH_FACTOR = 8  # activations, not the weights' gradients, dominate the peak


def peak_step_bytes(quick: bool) -> dict[str, int]:
    """The temporaries a jitted step holds at its peak (its results aside), per system, at
    PEAK_BATCH_FACTOR times the batch (Linux; run the process with
    MALLOC_MMAP_THRESHOLD_=65536 so that freed arrays go back to the system at once). For
    JAX it is XLA's own account of the step's temporaries (memory_analysis): XLA keeps its
    buffers between calls, so the resident set does not show them."""
    import transfuse as tx

    inputs = mlp_inputs(quick, PEAK_BATCH_FACTOR)
    out = {}
    for name, ck in (("transfuse", tx.checkpoint), ("transfuse-no-checkpoint", None),
                     ("transfuse-prevent_cse=False", partial(tx.checkpoint,
                                                             prevent_cse=False))):
        step = tx.jit(tx.grad_and_value(partial(mlp_loss, checkpoint=ck)))
        out[name] = peak_of_call(lambda step=step: step(*inputs))
    jax, jnp = import_jax()
    args = jax.tree_util.tree_map(jnp.asarray, inputs)
    for name, ck in (("jax.checkpoint", jax.checkpoint), ("jax", None)):
        step = jax.jit(jax.value_and_grad(partial(mlp_loss, xp=jnp, checkpoint=ck)))
        out[name] = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
    return out


def main(argv: list[str]) -> int:
    """Time per step and bytes stored, side by side (ratios to transfuse with checkpoints)."""
    from transfuse.bench.harness import Settings, run_case

    quick = "--quick" in argv
    result = run_case(cases(quick)[0], Settings(quick=quick))
    stored = saved_bytes(quick)
    peak = peak_step_bytes(quick) if "--peak" in argv else {}
    base_s = result.systems["transfuse"].timing.median_s
    print(f"{'system':<30}{'ms/step':>10}{'time ratio':>12}{'saved MiB':>12}{'bytes ratio':>13}"
          + (f"{'peak MiB (jit, 8x batch)':>26}" if peak else ""))
    for name, system in result.systems.items():
        ms = system.timing.median_s * 1e3 if system.timing else float("nan")
        print(f"{name:<30}{ms:>10.2f}{ms / 1e3 / base_s:>12.2f}"
              f"{stored[name] / 2 ** 20:>12.3f}{stored[name] / stored['transfuse']:>13.2f}"
              + (f"{peak[name] / 2 ** 20:>26.2f}" if peak else "") + f"  {system.status}")
    return 0 if not result.failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
