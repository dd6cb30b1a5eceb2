"""Row reductions and their consumers under jit (issue #20): softmax and layernorm rows.

The CPU backend folds a row's sum, maximum or minimum with vectorised helpers
(runtime/cpu_kernels.py `block_sum`, `block_max`, `block_min`; docs/compiler.md). These
tests run softmax, layernorm and the bare reductions at row lengths around the helpers'
edges (1; 7, under one vector; 1023 and 1025, around a multiple of the sum's block; 2500,
over the row-buffer length), with whole rows of inf, -inf and NaN, and check them against
a float64 reference and the reference interpreter, in float32 and float64; then grad and
vmap of both under jit against JAX, central finite differences and a loop. One compile per
program: each test jits one function of every case.
"""

from __future__ import annotations

import numpy as np
import pytest

import transfuse as tx
from tests.helpers import assert_compiled_matches, traced

LENGTHS = (1, 7, 1023, 1025, 2500)
EPS = 1e-5


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def layernorm(x, gamma, beta):
    mean = np.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + EPS) * gamma + beta


def every_row_case(xs, gammas, betas, empty_rows, no_columns, scalar):
    """Softmax, layernorm, max, min and sum of each matrix; the empty and 0-d cases."""
    outs = []
    for x, gamma, beta in zip(xs, gammas, betas):
        outs += [softmax(x), layernorm(x, gamma, beta), np.max(x, axis=-1),
                 np.min(x, axis=-1), np.sum(x, axis=-1)]
    return outs + [softmax(empty_rows), np.sum(no_columns, axis=-1), np.max(scalar),
                   np.sum(scalar)]


def inputs(dtype):
    """Seeded rows (3 + 1 + 2 per length); row 3 is an inf/NaN row, 4 and 5 are signed
    zeros and a row with one inf, in the lengths where they fit."""
    rng = np.random.default_rng(20)
    xs, gammas, betas = [], [], []
    for k, n in enumerate(LENGTHS):
        x = (3 * rng.standard_normal((6, n)) + 1).astype(dtype)
        x[3] = [np.inf, -np.inf, np.nan][k % 3]  # a whole non-finite row
        x[4, ::2], x[4, 1::2] = -0.0, 0.0
        x[5, n // 2] = np.inf if n > 1 else x[5, 0]
        xs.append(x)
        gammas.append((1 + 0.1 * rng.standard_normal(n)).astype(dtype))
        betas.append((0.1 * rng.standard_normal(n)).astype(dtype))
    empty_rows = np.zeros((0, 7), dtype)
    no_columns = np.zeros((3, 0), dtype)
    return xs, gammas, betas, empty_rows, no_columns, dtype(rng.standard_normal())


def float64_reference(xs, gammas, betas):
    """The same results computed in float64 (math.fsum-grade for these sizes)."""
    outs = []
    for x, gamma, beta in zip(xs, gammas, betas):
        x64, g64, b64 = (a.astype(np.float64) for a in (x, gamma, beta))
        with np.errstate(invalid="ignore"):
            outs += [softmax(x64), layernorm(x64, g64, b64), np.max(x64, axis=-1),
                     np.min(x64, axis=-1), np.sum(x64, axis=-1)]
    return outs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_match_float64_and_the_interpreter(dtype):
    args = inputs(dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        got = tx.jit(every_row_case)(*args)
        want = traced(every_row_case, *args)
    assert_compiled_matches(got, want)
    eps = np.finfo(dtype).eps
    for out, ref in zip(got, float64_reference(*args[:3])):
        assert out.dtype == dtype
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
        np.testing.assert_allclose(out, ref, rtol=64 * eps, atol=64 * eps)
    for k, n in enumerate(LENGTHS):
        sm, ln, top, low, total = got[5 * k:5 * k + 5]
        finite = [0, 1, 2, 4] + ([5] if n == 1 else [])
        np.testing.assert_allclose(np.sum(sm[finite].astype(np.float64), axis=-1), 1,
                                   rtol=8 * eps)
        assert np.isnan(sm[3]).all() and np.isnan(ln[3]).all()  # inf - inf, or NaN
        if n > 1:  # one inf: softmax is NaN across the row, as NumPy's (inf - inf)
            assert np.isnan(sm[5]).all() and top[5] == np.inf and total[5] == np.inf
        # signed zeros: the IEEE 754-2019 maximum and minimum (+0.0 above -0.0)
        assert top[4] == low[4] == 0 and np.signbit(low[4])
        assert np.signbit(top[4]) == (n == 1)
        fill = [np.inf, -np.inf, np.nan][k % 3]
        np.testing.assert_array_equal([top[3], low[3], total[3]], [fill, fill, fill])
    assert got[-4].shape == (0, 7) and np.array_equal(got[-3], np.zeros(3, dtype))
    assert got[-2] == args[-1] and got[-1] == args[-1]


def losses(x, gamma, beta, w):
    """Scalar losses through softmax and layernorm (weights w make every output count)."""
    return np.sum(softmax(x) * w) + np.sum(layernorm(x, gamma, beta) * w)


def grads_and_batch(x, gamma, beta, w, batch):
    grads = tx.grad(losses, argnums=(0, 1, 2))(x, gamma, beta, w)
    return grads, tx.vmap(layernorm, in_dims=(0, None, None))(batch, gamma, beta)


def test_grad_and_vmap_under_jit_match_jax_differences_and_a_loop():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    rng = np.random.default_rng(21)
    n = 37
    x, w = rng.standard_normal((4, n)), rng.standard_normal((4, n))
    gamma, beta = 1 + 0.1 * rng.standard_normal(n), 0.1 * rng.standard_normal(n)
    batch = 2 * rng.standard_normal((5, 3, n)) + 1
    grads, batched = tx.jit(grads_and_batch)(x, gamma, beta, w, batch)

    def jax_losses(x, gamma, beta):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
        norm = (x - mean) / jnp.sqrt(var + EPS) * gamma + beta
        return jnp.sum(jax.nn.softmax(x, axis=-1) * w) + jnp.sum(norm * w)

    for got, want in zip(grads, jax.grad(jax_losses, argnums=(0, 1, 2))(x, gamma, beta)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12, atol=1e-12)
    h = 1e-6  # central differences along a few coordinates of x
    for i, j in [(0, 0), (1, 17), (3, n - 1)]:
        step = np.zeros_like(x)
        step[i, j] = h
        slope = (losses(x + step, gamma, beta, w) - losses(x - step, gamma, beta, w)) / (2 * h)
        np.testing.assert_allclose(grads[0][i, j], slope, rtol=1e-6, atol=1e-8)
    loop = np.stack([layernorm(b, gamma, beta) for b in batch])
    np.testing.assert_allclose(batched, loop, rtol=1e-13, atol=1e-13)


AVX512_FEATURES = ("+64bit,+avx,+avx2,+avx512bw,+avx512cd,+avx512dq,+avx512f,+avx512vl,+bmi,"
                   "+bmi2,+cx16,+f16c,+fma,+lzcnt,+movbe,+popcnt,+sse,+sse2,+sse3,+sse4.1,"
                   "+sse4.2,+ssse3")
WIDTH_PROBE = """
import re
from numba import float32, float64
from transfuse.runtime.cpu_kernels import block_max, block_min, block_sum
for helper, dtype in ((block_sum, float32), (block_max, float32), (block_min, float64)):
    sig = (dtype[::1],)
    helper.compile(sig)  # compiled, never run: the CPU may lack AVX-512
    llvm_ir = helper.inspect_llvm(sig)
    print(max(int(n) for n in re.findall(r"<(\\d+) x (?:float|double)>", llvm_ir)))
"""


def test_row_helpers_use_the_targets_full_width(tmp_path):
    """Cross-compiled for an Intel AVX-512 CPU (NUMBA_CPU_NAME), the row helpers' loops
    have 16 float32 or 8 float64 lanes, not the half that LLVM's 256-bit preference there
    gives. (An empty Numba cache: a cached helper cannot be inspected.)"""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CPU_NAME="skylake-avx512", NUMBA_CPU_FEATURES=AVX512_FEATURES,
               NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", WIDTH_PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    assert [int(n) for n in out.stdout.split()] == [16, 16, 8]
