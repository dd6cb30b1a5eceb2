"""bench/suite_control_flow.py's baselines and inputs, independently of transfuse's transforms
(the quick run of every suite in tests/test_bench.py runs the cases themselves)."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.bench.suites import suite_control_flow as control
from transfuse.ir.errors import BatchingError, CompileError

from transfuse.bench.core import Unavailable


def test_numpy_backprop_through_time_matches_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    params, xs = control.rnn_inputs(quick=True)
    grads, loss = control.numpy_rnn_grad(params, xs)
    want_loss, want_grads = jax.value_and_grad(control._jax_rnn_loss(jax, jnp))(params, xs)
    assert loss.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_numpy_newton_counts_each_lanes_own_iterations():
    a, b, x0, tol = control.newton_inputs(quick=True)
    roots, counts = control.numpy_newton(a, b, x0, tol)
    for i in range(0, len(a), 17):  # a scalar loop per lane, the definition
        x, step, k = x0[i], np.inf, 0
        while abs(step) > tol[i] * (1 + abs(x)) and k < control.MAX_ITERATIONS:
            step = (x * x * x + a[i] * x - b[i]) / (3 * x * x + a[i])
            x, k = x - step, k + 1
        assert counts[i] == k and roots[i] == pytest.approx(x, rel=1e-12, abs=1e-300)
    residual = np.abs(roots ** 3 + a * roots - b) / (3 * roots ** 2 + a)
    assert np.all(residual <= 2 * tol * (1 + np.abs(roots)))
    assert counts.min() <= 5 and counts.max() >= 40  # the spread the benchmark is about


def test_the_full_size_spread_is_one_to_about_fifty():
    assert control.iteration_spread(quick=False) == "1 / 22 / 49"


def test_missing_control_flow_rules_are_pending_and_other_errors_are_not():
    def missing_batching(*args):
        raise BatchingError("vmap: primitive while_loop has no batching rule")

    def missing_lowering(*args):
        raise CompileError("the CPU backend has no lowering for primitive scan")

    def broken(*args):
        raise BatchingError("vmap: primitive sort has no batching rule")

    for fn in (missing_batching, missing_lowering):
        with pytest.raises(Unavailable, match=r"pending \(issue #17\)"):
            control._pending(fn)()
    with pytest.raises(BatchingError):
        control._pending(broken)()
