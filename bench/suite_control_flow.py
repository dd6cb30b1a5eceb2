"""control: structured control flow (issue #17), a recurrence and a data-dependent loop.

- rnn-scan: an RNN (tanh cell, hidden 256, batch 64, 32 input features, 200 steps, float32)
  written with `transfuse.lax.scan`; the loss (the mean square of every step's state) and
  its gradient w.r.t. the three weights (`grad_and_value`). JAX: `jax.jit` of
  `value_and_grad` with `lax.scan`; torch: a Python loop under `torch.func.grad_and_value`;
  NumPy: hand-written backpropagation through time.
- rnn-scan-compile-50 / -200: the first call of that function (trace, transform, compile,
  one run) at 50 and at 200 steps, with every in-memory and disk cache of compiled code
  emptied first (transfuse and JAX, in this process): a scan is one loop, so the compile
  time must not grow with the step count. Not run under --quick (compiles only).
- newton-vmap: `vmap` of a scalar Newton solver for x^3 + a x = b written with
  `while_loop`, 100,000 lanes in float64, each lane with its own start (|x0| from 0.1 to
  10^7) and tolerance (10^-12 to 10^-3), so lanes need from 1 to about 50 iterations; it
  returns the root and the iteration count of each lane. JAX: `jax.jit(jax.vmap(...))`;
  NumPy: the Newton step applied to the still-active lanes only (boolean masks).

Until every transform and the CPU lowering of the control-flow primitives have landed, the
transfuse column reports "unavailable: pending (issue #17) ..." with the missing rule
instead of failing (see `_pending`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from transfuse import lax
from transfuse.bench.check import compare
from transfuse.bench.core import (
    Case,
    Runner,
    Unavailable,
    import_jax,
    import_transfuse,
    jax_system,
    numpy_system,
    torch_system,
)

NAME = "control"
HIDDEN, BATCH, FEATURES, STEPS = 256, 64, 32, 200
QUICK_HIDDEN, QUICK_BATCH, QUICK_FEATURES, QUICK_STEPS = 16, 4, 8, 12
COMPILE_STEPS = (50, 200)
LANES, QUICK_LANES = 100_000, 256
MAX_ITERATIONS = 100
REFERENCE_LANES = 1_000
COMPILE_SAMPLES, COMPILE_BUDGET_S = 3, 30.0  # a 30-second first call is sampled once
CONTROL_PRIMITIVES = ("scan", "while_loop", "cond")


# ---------------------------------------------------------------------------------------
# Marking what has not landed yet


def _is_pending(exc: Exception) -> bool:
    """A missing transform rule or lowering of a control-flow primitive (issue #17)."""
    from transfuse.ir.errors import BatchingError, CompileError

    text = str(exc)
    missing = ("no batching rule", "no vjp rule", "no jvp rule", "no lowering", "no rule")
    return (isinstance(exc, (BatchingError, CompileError, NotImplementedError))
            and any(m in text for m in missing)
            and any(p in text for p in CONTROL_PRIMITIVES))


def _pending(fn: Callable) -> Callable:
    """fn, raising Unavailable (reported, not a failure) where issue #17's work is missing."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            if _is_pending(exc):
                first_line = str(exc).splitlines()[0]
                raise Unavailable(f"pending (issue #17): {type(exc).__name__}: {first_line}"
                                  ) from None
            raise

    return call


def _transfuse_jit_system(transform: Callable, needs: tuple[str, ...]) -> Callable:
    """The transfuse column: tx.jit of the transform, missing rules reported as pending."""

    def factory(inputs: tuple) -> Runner:
        tx = import_transfuse(needs + ("jit",))
        jitted = _pending(tx.jit(transform(tx)))
        return Runner(call=lambda: jitted(*inputs))

    return factory


# ---------------------------------------------------------------------------------------
# (a) The RNN


def rnn_loss(params: tuple, xs: np.ndarray):
    """Mean over the steps of the mean square of the state; h = tanh(x wx + h wh + bias)."""
    wx, wh, bias = params

    def cell(h, x):
        h = np.tanh(x @ wx + h @ wh + bias)
        return h, np.mean(h * h)

    h0 = np.zeros((xs.shape[1], wh.shape[0]), xs.dtype)
    _, per_step = lax.scan(cell, h0, xs)
    return np.mean(per_step)


def rnn_inputs(quick: bool, steps: int | None = None) -> tuple:
    """((wx, wh, bias), xs (steps, batch, features)), float32."""
    hidden, batch, features, default_steps = (
        (QUICK_HIDDEN, QUICK_BATCH, QUICK_FEATURES, QUICK_STEPS) if quick
        else (HIDDEN, BATCH, FEATURES, STEPS))
    rng = np.random.default_rng(17)
    wx = rng.standard_normal((features, hidden), dtype=np.float32) / np.float32(features ** 0.5)
    wh = rng.standard_normal((hidden, hidden), dtype=np.float32) / np.float32(hidden ** 0.5)
    bias = rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.1)
    xs = rng.standard_normal((steps or default_steps, batch, features), dtype=np.float32)
    return (wx, wh, bias), xs


def numpy_rnn_grad(params: tuple, xs: np.ndarray) -> tuple:
    """((d wx, d wh, d bias), loss) by backpropagation through time."""
    wx, wh, bias = params
    steps, batch = xs.shape[:2]
    states = [np.zeros((batch, wh.shape[0]), np.float32)]
    for x in xs:
        states.append(np.tanh(x @ wx + states[-1] @ wh + bias))
    scale = np.float32(1.0 / (steps * states[0].size))
    loss = np.float32(sum(np.sum(h * h, dtype=np.float32) for h in states[1:]) * scale)
    d_wx, d_wh, d_bias = np.zeros_like(wx), np.zeros_like(wh), np.zeros_like(bias)
    d_state = np.zeros_like(states[0])
    for t in range(steps, 0, -1):
        d_state = d_state + np.float32(2) * scale * states[t]
        d_pre = d_state * (np.float32(1) - states[t] * states[t])
        d_wx += xs[t - 1].T @ d_pre
        d_wh += states[t - 1].T @ d_pre
        d_bias += d_pre.sum(axis=0)
        d_state = d_pre @ wh.T
    return (d_wx, d_wh, d_bias), loss


def _jax_rnn_loss(jax, jnp) -> Callable:
    def loss(params, xs):
        wx, wh, bias = params

        def cell(h, x):
            h = jnp.tanh(x @ wx + h @ wh + bias)
            return h, jnp.mean(h * h)

        h0 = jnp.zeros((xs.shape[1], wh.shape[0]), xs.dtype)
        return jnp.mean(jax.lax.scan(cell, h0, xs)[1])

    return loss


def _jax_rnn_grad(jax, jnp) -> Callable:
    value_and_grad = jax.jit(jax.value_and_grad(_jax_rnn_loss(jax, jnp)))
    return lambda *args: tuple(reversed(value_and_grad(*args)))


def _torch_rnn_grad(torch) -> Callable:
    from torch.func import grad_and_value

    def loss(params, xs):
        wx, wh, bias = params
        h = torch.zeros((xs.shape[1], wh.shape[0]), dtype=xs.dtype)
        total = torch.zeros((), dtype=xs.dtype)
        for x in xs:  # a Python loop: eager torch records every step
            h = torch.tanh(x @ wx + h @ wh + bias)
            total = total + torch.mean(h * h)
        return total / xs.shape[0]

    return grad_and_value(loss)


def _rnn_transform(tx) -> Callable:
    return _pending(tx.grad_and_value(rnn_loss))


# ---------------------------------------------------------------------------------------
# (a') First-call (compile) latency at two step counts


class _EmptyKernelCache:
    """Within the block, transfuse's process-wide table of loaded kernels starts empty (and
    is restored after), so a first call compiles instead of reusing an earlier case's
    kernel; combined with jit(cache=False), nothing comes from the disk either."""

    def __enter__(self) -> None:
        from transfuse.runtime import cache

        self._saved = dict(cache._LOADED)
        cache._LOADED.clear()

    def __exit__(self, *exc: Any) -> None:
        from transfuse.runtime import cache

        cache._LOADED.update(self._saved)


def _first_call_samples(fresh_call: Callable[[], Callable[[], Any]], repeat: int
                        ) -> tuple[list[float], Any]:
    """Seconds of first calls of freshly built functions (fewer once the budget is spent)."""
    samples: list[float] = []
    result = None
    while len(samples) < min(repeat, COMPILE_SAMPLES) and (
            not samples or sum(samples) < COMPILE_BUDGET_S):
        call = fresh_call()
        start = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - start)
    return samples, result


def _transfuse_first_call(inputs: tuple) -> Runner:
    tx = import_transfuse(("jit", "grad_and_value"))

    def fresh_call() -> Callable[[], Any]:
        jitted = _pending(tx.jit(tx.grad_and_value(rnn_loss), cache=False))

        def call() -> Any:
            with _EmptyKernelCache():
                return jitted(*inputs)

        return call

    return Runner(measure=lambda repeat: _first_call_samples(fresh_call, repeat))


def _jax_first_call(inputs: tuple) -> Runner:
    jax, jnp = import_jax()
    args = jax.tree_util.tree_map(jnp.asarray, inputs)

    def fresh_call() -> Callable[[], Any]:
        jax.clear_caches()  # no compiled executable of an earlier sample or case is reused
        fn = _jax_rnn_grad(jax, jnp)
        return lambda: jax.block_until_ready(fn(*args))

    return Runner(measure=lambda repeat: _first_call_samples(fresh_call, repeat))


# ---------------------------------------------------------------------------------------
# (b) A vmapped Newton solver


def newton_solve(a, b, x0, tol):
    """The real root of x^3 + a x = b (a > 0) by Newton's method from x0, stopping when a
    step is below tol * (1 + |x|) (or after MAX_ITERATIONS); (root, iterations)."""
    def not_done(carry):
        x, step, k = carry
        return (np.abs(step) > tol * (1 + np.abs(x))) & (k < MAX_ITERATIONS)

    def newton_step(carry):
        x, _, k = carry
        step = (x * x * x + a * x - b) / (3 * x * x + a)
        return x - step, step, k + 1

    x, _, k = lax.while_loop(not_done, newton_step, (x0, np.inf, np.int64(0)))
    return x, k


def newton_inputs(quick: bool) -> tuple:
    """(a, b, x0, tol) per lane, float64: starts from 0.1 to 1e7 in magnitude, either sign."""
    lanes = QUICK_LANES if quick else LANES
    rng = np.random.default_rng(17)
    a = rng.uniform(0.5, 2.0, lanes)
    b = rng.uniform(-4.0, 4.0, lanes)
    x0 = np.where(rng.random(lanes) < 0.5, -1.0, 1.0) * 10.0 ** rng.uniform(-1.0, 7.0, lanes)
    tol = 10.0 ** rng.uniform(-12.0, -3.0, lanes)
    return a, b, x0, tol


def numpy_newton(a, b, x0, tol) -> tuple[np.ndarray, np.ndarray]:
    """The same iteration vectorised: each pass updates the lanes still running."""
    x, step = x0.copy(), np.full_like(x0, np.inf)
    iterations = np.zeros(x0.shape, np.int64)
    active = np.ones(x0.shape, bool)
    while active.any():
        xa, aa = x[active], a[active]
        step[active] = (xa * xa * xa + aa * xa - b[active]) / (3 * xa * xa + aa)
        x[active] = xa - step[active]
        iterations[active] += 1
        active = (np.abs(step) > tol * (1 + np.abs(x))) & (iterations < MAX_ITERATIONS)
    return x, iterations


def _jax_newton(jax, jnp) -> Callable:
    def solve(a, b, x0, tol):
        def not_done(carry):
            x, step, k = carry
            return (jnp.abs(step) > tol * (1 + jnp.abs(x))) & (k < MAX_ITERATIONS)

        def newton_step(carry):
            x, _, k = carry
            step = (x * x * x + a * x - b) / (3 * x * x + a)
            return x - step, step, k + 1

        init = (x0, jnp.asarray(jnp.inf, x0.dtype), jnp.asarray(0, jnp.int64))
        x, _, k = jax.lax.while_loop(not_done, newton_step, init)
        return x, k

    return jax.jit(jax.vmap(solve))


def _newton_reference(tx) -> Callable:
    """NumPy's roots and counts, after checking that transfuse's eager vmap (the reference
    interpreter) gives the same on the first REFERENCE_LANES lanes: a per-lane loop in the
    interpreter costs milliseconds per lane, too slow for all of them."""
    solve = _pending(tx.vmap(newton_solve))

    def reference(*args: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        expected = numpy_newton(*args)
        interpreted = solve(*(v[:REFERENCE_LANES] for v in args))
        verdict = compare(interpreted, tuple(e[:REFERENCE_LANES] for e in expected),
                          rtol=1e-9, atol=0.0)
        if not verdict.ok:
            raise AssertionError("transfuse's interpreter disagrees with NumPy on the first "
                                 f"{REFERENCE_LANES} lanes: {verdict.message}")
        return expected

    return reference


def iteration_spread(quick: bool) -> str:
    """'min / median / max' iterations per lane (NumPy's count) for the case's description."""
    counts = numpy_newton(*newton_inputs(quick))[1]
    return f"{counts.min()} / {int(np.median(counts))} / {counts.max()}"


# ---------------------------------------------------------------------------------------


def cases(quick: bool) -> list[Case]:
    """rnn-scan and newton-vmap; the first-call cases only in a full run."""
    hidden, batch, steps = (QUICK_HIDDEN, QUICK_BATCH, QUICK_STEPS) if quick \
        else (HIDDEN, BATCH, STEPS)
    rnn_needs = ("grad_and_value",)
    out = [Case(
        NAME, "rnn-scan",
        f"tanh RNN with lax.scan (hidden {hidden}, batch {batch}, {steps} steps): loss and "
        "its gradient w.r.t. the weights, float32",
        lambda: rnn_inputs(quick), transform=_rnn_transform, needs=rnn_needs,
        rtol=2e-3, atol=1e-6,
        transfuse_system=_transfuse_jit_system(_rnn_transform, rnn_needs),
        baselines={
            "numpy": numpy_system(numpy_rnn_grad),
            "jax": jax_system(_jax_rnn_grad),
            "torch": torch_system(_torch_rnn_grad),
        })]
    for n in () if quick else COMPILE_STEPS:
        out.append(Case(
            NAME, f"rnn-scan-compile-{n}",
            f"first call (trace + grad + compile + run, caches emptied) of rnn-scan at {n} "
            "steps",
            lambda n=n: rnn_inputs(quick, n), transform=_rnn_transform, needs=rnn_needs,
            rtol=2e-3, atol=1e-6, transfuse_system=_transfuse_first_call,
            baselines={"jax": _jax_first_call}))
    lanes = QUICK_LANES if quick else LANES
    newton_needs = ("vmap",)

    def newton_jit(tx) -> Callable:
        return _pending(tx.vmap(newton_solve))

    out.append(Case(
        NAME, "newton-vmap",
        f"vmap of a while_loop Newton solver for x^3 + a x = b over {lanes:,} lanes, "
        f"float64; iterations per lane min / median / max: {iteration_spread(quick)}",
        lambda: newton_inputs(quick), transform=_newton_reference, needs=newton_needs,
        rtol=1e-9, atol=0.0,
        reference_label=f"numpy (interpreter: {min(lanes, REFERENCE_LANES)} lanes)",
        transfuse_system=_transfuse_jit_system(newton_jit, newton_needs),
        baselines={
            "numpy": numpy_system(numpy_newton),
            "jax": jax_system(_jax_newton),
        }))
    return out
