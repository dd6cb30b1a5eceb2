"""Timing of issue #17 (b)'s newton-vmap case with and without lockstep lanes
(compiler/lockstep_lanes.py) and jax.jit(jax.vmap) in one process: best of 40 calls each,
two rounds. Run: `python -m transfuse.bench.suites.newton_lockstep` (NUMBA_NUM_THREADS and
XLA_FLAGS set the thread counts). Results: docs/performance.md, control flow."""

from __future__ import annotations

import time

import numpy as np
from transfuse.bench.suites.suite_control_flow import (
    _jax_newton,
    newton_inputs,
    newton_solve,
    numpy_newton,
)
from transfuse.compiler import lockstep_lanes

import transfuse as tx


def best_ms(fn, args, block=lambda r: r) -> float:
    best = float("inf")
    for _ in range(40):
        start = time.perf_counter()
        block(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    args = newton_inputs(False)
    lockstep_lanes.ENABLED = False
    per_lane = tx.jit(tx.vmap(newton_solve))
    before = per_lane(*args)
    lockstep_lanes.ENABLED = True
    lockstep = tx.jit(tx.vmap(lambda *a: newton_solve(*a)))
    after = lockstep(*args)
    assert all(np.array_equal(b, a) for b, a in zip(before, after)), "not bit-equal"
    expected = numpy_newton(*args)
    np.testing.assert_allclose(after[0], expected[0], rtol=1e-9)
    np.testing.assert_array_equal(after[1], expected[1])
    jitted = _jax_newton(jax, jax.numpy)
    jitted(*args)
    for _ in range(2):
        print(f"per-lane {best_ms(per_lane, args):.1f} ms, "
              f"lockstep {best_ms(lockstep, args):.1f} ms, "
              f"jax {best_ms(jitted, args, jax.block_until_ready):.1f} ms")


if __name__ == "__main__":
    main()
