"""Batches of gemm calls shared by the threads (gemm_batched): the direct back end runs a
batch as a parallel step whose blocks call BLAS on one thread each
(compiler/direct_helpers.py, emit_gemm_block). What must hold: every product of every
batch count is computed once (an odd count below GEMM_SPLIT_MIN is one block, on BLAS's
threads), the answers are NumPy's and Numba's to rounding, on the native pool, on
Python's and on one thread, and small products stay inside the serial steps."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.compiler import direct_helpers
from transfuse.runtime import direct

import transfuse as tx
from tests.helpers import jit_result_with

RNG = np.random.default_rng(71)

pytestmark = [pytest.mark.skipif(not direct_helpers.batched_gemm_available(),
                                 reason="NumPy's OpenBLAS has no per-thread thread count"),
              pytest.mark.usefixtures("fresh_cache")]


def ensemble_layer(w, x):
    """x @ w[i] for every model i: a product looped over w's leading axis."""
    return np.maximum(x @ w, 0.0)


def per_example_outer(a, b):
    """a[i] outer b[i] for every example: a batch axis of the product."""
    return np.einsum("bi,bj->bij", a, b)


def batch_steps(jitted):
    """The extents of the kernel's parallel steps (a gemm batch is one)."""
    kernel = jitted.executables()[0].kernel
    assert isinstance(kernel, direct.DirectKernel)
    return [extent for _, extent in kernel.plan.steps if extent is not None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("models", [1, 2, 3, 7, 8, 9, 16])
def test_every_product_of_any_batch_count_is_computed(dtype, models):
    w = RNG.standard_normal((models, 96, 80)).astype(dtype)
    x = RNG.standard_normal((40, 96)).astype(dtype)
    jitted = tx.jit(ensemble_layer)
    got = jitted(w, x)
    assert batch_steps(jitted)  # (compiled for a batch; the count is run-time data)
    want = np.maximum(np.einsum("mk,bkn->bmn", x.astype(np.float64), w.astype(np.float64)),
                      0.0)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(got, jit_result_with("TRANSFUSE_DIRECT", "0", ensemble_layer,
                                                    w, x), rtol=tol, atol=tol)


@pytest.mark.parametrize("pool", ["native", "python", "one thread"])
def test_a_batch_axis_gives_the_same_answer_on_every_pool(pool, monkeypatch):
    a = RNG.standard_normal((12, 300))
    b = RNG.standard_normal((12, 250))
    if pool == "python":
        monkeypatch.setenv("TRANSFUSE_NATIVE_POOL", "0")
    if pool == "one thread":
        monkeypatch.setattr(direct, "thread_count", lambda: 1)
    jitted = tx.jit(per_example_outer)
    got = jitted(a, b)
    assert batch_steps(jitted)
    np.testing.assert_allclose(got, a[:, :, None] * b[:, None, :], rtol=1e-15, atol=0)


def test_small_products_stay_in_the_serial_steps():
    """8 products of 10x40 @ 40x40 (MAML's): a parallel step would cost more than it
    saves, and would end the kernel's one-call entry (run_steps)."""
    w = RNG.standard_normal((8, 40, 40))
    x = RNG.standard_normal((10, 40))
    jitted = tx.jit(ensemble_layer)
    np.testing.assert_allclose(jitted(w, x), np.maximum(x @ w, 0.0), rtol=1e-12)
    assert "gemm_strided(" in str(jitted.lower(w, x))
    assert not batch_steps(jitted)
