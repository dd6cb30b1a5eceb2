"""Sizes are arguments of the compiled entry point (compiler/size_params.py).

Programs that differ only in their sizes render the same source, so one compiled kernel
serves every batch size, in this process and (through the disk cache) in the next. What
must hold: the results are those of the reference interpreter for every size, a new batch
size compiles nothing, the signature guard still sends arrays of another shape back to
Python, and literals that are not sizes stay literal.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
from transfuse.compiler.size_params import SizeParams
from transfuse.runtime import cache as kernel_cache

import transfuse as tx
from tests.helpers import run_json_script


def _loss(params, x, y):
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    out = h @ w2 + b2
    return np.sum((out - y) ** 2)


def _mlp(rng, dtype, batch, widths=(48, 40, 30)):
    params = [rng.standard_normal((widths[0], widths[1])) / 4, rng.standard_normal(widths[1]),
              rng.standard_normal((widths[1], widths[2])) / 4, rng.standard_normal(widths[2])]
    x = rng.standard_normal((batch, widths[0]))
    y = rng.standard_normal((batch, widths[2]))
    return [p.astype(dtype) for p in params], x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_per_sample_gradients_at_batch_sizes_1_7_64_128_share_one_kernel(dtype):
    # A batch of 1 is indexed as any batch (`b1[i0, i1]`, compiler/fusion.py level_axes)
    # and its 1-row products run on BLAS as a batch of 8 would (compiler/gemm_plan.py).
    rng = np.random.default_rng(11)
    per_sample = tx.vmap(tx.grad(_loss), in_dims=(None, 0, 0))
    jitted = tx.jit(per_sample, cache=False)
    rtol = 2e-5 if dtype == "float32" else 1e-12
    for batch in (1, 7, 64, 128, 1):
        params, x, y = _mlp(rng, dtype, batch)
        got = jitted(params, x, y)
        want = per_sample(params, x, y)  # the reference interpreter
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == np.dtype(dtype)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)
    info = jitted.cache_info()
    assert info.signatures == 4 and info.traces == 4
    assert info.compiles == 1 and info.reused == 3


def test_batch_sizes_on_both_sides_of_a_vectorisation_threshold_share_one_kernel():
    # Rows of 160: mathlib's vectorised tanh (compiler/point_rules.py) at every batch size;
    # the decision once depended on the region's whole size (2**14 points), so 128 x 160
    # and 7 x 160 compiled twice.
    rng = np.random.default_rng(14)
    per_sample = tx.vmap(tx.grad(_loss), in_dims=(None, 0, 0))
    jitted = tx.jit(per_sample, cache=False)
    for batch in (128, 7):
        params, x, y = _mlp(rng, "float32", batch, widths=(12, 160, 8))
        for g, w in zip(jitted(params, x, y), per_sample(params, x, y)):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    assert "tf_tanh_f32" in jitted.lower(params, x, y).source
    info = jitted.cache_info()
    assert info.compiles == 1 and info.reused == 1


def test_an_empty_batch_and_a_small_one_are_right_whatever_they_share():
    rng = np.random.default_rng(12)
    per_sample = tx.vmap(tx.grad(_loss), in_dims=(None, 0, 0))
    jitted = tx.jit(per_sample, cache=False)
    for batch in (0, 5, 0):
        params, x, y = _mlp(rng, "float64", batch)
        for g, w in zip(jitted(params, x, y), per_sample(params, x, y)):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def _broadcasts(x, row, col):
    """Size-1 axes by structure: keepdims results, a declared (1, n) row, a (B, 1) column,
    a slice of width 1: broadcast at every batch size, the batch's own 1 included."""
    z = x - np.max(x, axis=1, keepdims=True)
    e = np.exp(z) * row
    p = e / np.sum(e, axis=1, keepdims=True)
    return p * col + x[:, :1], np.tanh(x.T @ col) * row


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_genuine_size_one_axes_still_broadcast_when_the_batch_is_one(dtype):
    rng = np.random.default_rng(17)
    jitted = tx.jit(_broadcasts, cache=False)
    tol = 2e-6 if dtype == "float32" else 1e-13
    for batch in (1, 7, 1):
        x, row, col = (rng.standard_normal(s).astype(dtype)
                       for s in ((batch, 9), (1, 9), (batch, 1)))
        got = jitted(x, row, col)
        want = _broadcasts(x, row, col)  # NumPy itself
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == np.dtype(dtype)
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_elementwise_chain_of_any_length_compiles_once(dtype):
    rng = np.random.default_rng(13)

    def chain(x):
        return np.sin(x) * np.exp(-x * x) + np.tanh(3.0 * x)

    jitted = tx.jit(chain, cache=False)
    for n in (64, 1000, 40000):  # rows of 64 and more vectorise at every length
        x = rng.uniform(-2, 2, n).astype(dtype)
        want = np.sin(x.astype(np.float64)) * np.exp(-x.astype(np.float64) ** 2) + np.tanh(
            3.0 * x.astype(np.float64))
        got = jitted(x)
        assert got.shape == (n,) and got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == "float32" else 1e-13,
                                   atol=1e-6 if dtype == "float32" else 1e-14)
    info = jitted.cache_info()
    assert info.compiles == 1 and info.signatures == 3


def test_sizes_equal_in_one_call_and_different_in_the_next_get_their_own_kernel():
    # (5, 5) @ (5, 5) has one size where (5, 6) @ (6, 7) has three: their sources differ,
    # so neither may run the other's kernel. (Rows of 4 or fewer are summed another way,
    # compiler/lower_cpu_kernels.py's NARROW_OUTPUT, so the sizes here are above it.)
    def f(a, b):
        return np.tanh(a @ b).sum(axis=0)

    rng = np.random.default_rng(14)
    jitted = tx.jit(f, cache=False)
    for shapes in (((5, 5), (5, 5)), ((5, 6), (6, 7)), ((7, 7), (7, 7)), ((5, 6), (6, 7))):
        a, b = (rng.standard_normal(s) for s in shapes)
        np.testing.assert_allclose(jitted(a, b), np.tanh(a @ b).sum(axis=0), rtol=1e-13)
    assert jitted.cache_info().compiles == 2  # (5,5)/(7,7) share; (5,6)@(6,7) is its own


def test_the_guard_still_rejects_arrays_of_another_shape():
    jitted = tx.jit(lambda x: np.cumsum(x * 2.0, axis=-1), cache=False)
    rng = np.random.default_rng(15)
    small, large = rng.standard_normal((4, 6)), rng.standard_normal((9, 6))
    np.testing.assert_allclose(jitted(small), np.cumsum(small * 2.0, axis=-1), rtol=1e-12)
    exe = jitted.executables()[0]
    with pytest.raises(Exception) as caught:  # the entry point's own check, not Python's
        exe.run([large])
    assert type(caught.value).__name__ == "SignatureMismatch"
    np.testing.assert_allclose(jitted(large), np.cumsum(large * 2.0, axis=-1), rtol=1e-12)


def test_the_source_names_its_sizes_and_keeps_structural_literals():
    x = np.linspace(0.0, 1.0, 24).reshape(2, 3, 4)
    source = tx.jit(lambda x: np.sum(x[:, 1] * 2.0, axis=-1), cache=False).lower(x).source
    assert "#   sizes: n0=" in source
    assert re.search(r"def entry\(n0, .*a0\)", source) and "nt.int64" in source
    # the guard's shape is sized
    assert "layout_mismatch(a0.shape, a0.strides, a0.itemsize, (n0, n1, n2))" in source
    assert "a0[i0, 1, i1]" in source  # a subscript stays literal: structure, not a size
    assert "range(2)" not in source and "range(4)" not in source


@pytest.mark.parametrize(("line", "want"), [
    ("    for i0 in range(128):", "    for i0 in range(n0):"),
    ("    b1 = np.empty((128, 512), np.float32)", "    b1 = np.empty((n0, n1), np.float32)"),
    ("        for i2 in range(j2, min(j2 + 16, 512)):",
     "        for i2 in range(j2, min(j2 + n2, n1)):"),
    ("    mismatch += layout_mismatch(a0.shape, a0.strides, a0.itemsize, (128, 16))",
     "    mismatch += layout_mismatch(a0.shape, a0.strides, a0.itemsize, (n0, n2))"),
    ("    m = (a0.shape[2] != 128) | (a0.strides[0] != 16)",
     "    m = (a0.shape[2] != 128) | (a0.strides[0] != 16)"),  # no size call: literal
    ("    t1 = a0[i0 // 3, 2] * 3.0", "    t1 = a0[i0 // 3, 2] * 3.0"),  # structure
    ("    t2 = b1.reshape(512)  # 128 in a comment", "    t2 = b1.reshape(n1)  # 128 in a comment"),
    ("    for i1 in range(x.shape[3]):", "    for i1 in range(x.shape[3]):"),
    ("    gemm_strided(t1, t2, t3, g0[0:21])", "    gemm_strided(t1, t2, t3, g0[0:21])"),
    ("    for i0 in range(0, 128, 1):", "    for i0 in range(0, n0, n3):"),
    # np.full's fill value is a value, not a size (2**63 made an argument no int64 holds)
    ("    r = np.full((128,), np.int64(-9223372036854775808), np.int64)",
     "    r = np.full((n0,), np.int64(-9223372036854775808), np.int64)"),
    ("    r = np.full((128,), np.int32(7), np.int32)",
     "    r = np.full((n0,), np.int32(7), np.int32)"),
])
def test_size_positions(line, want):
    sizes = SizeParams()
    sizes.rewrite("    x = np.zeros((128, 512, 16))")  # n0, n1, n2 as in a real program
    assert sizes.rewrite(line) == want
    assert sizes.values[:3] == [128, 512, 16]


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import transfuse as tx
    from transfuse.runtime import cache as kernel_cache

    def loss(w, x):
        return np.sum(np.tanh(x @ w) ** 2)

    batch = int(sys.argv[1])
    rng = np.random.default_rng(batch)
    w, x = rng.standard_normal((6, 4)), rng.standard_normal((batch, 6))
    jitted = tx.jit(tx.vmap(tx.grad(loss), in_dims=(None, 0)))
    out = jitted(w, x)
    want = tx.vmap(tx.grad(loss), in_dims=(None, 0))(w, x)
    print(json.dumps({"compiles": kernel_cache.compile_count(),
                      "error": float(np.max(np.abs(out - want)))}))
""")


def test_a_new_batch_size_in_a_new_process_loads_the_kernel_from_disk(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)

    def run(batch: int) -> dict:
        return run_json_script(script, tmp_path / "cache", str(batch))

    first, second = run(64), run(37)
    assert first["compiles"] >= 1
    assert second["compiles"] == 0
    assert first["error"] < 1e-12 and second["error"] < 1e-12


def test_the_compiled_kernel_is_keyed_by_the_generic_source():
    rng = np.random.default_rng(16)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((8, 3))
    f = tx.jit(lambda x: np.exp(x) - x, cache=False)
    g = tx.jit(lambda x: np.exp(x) - x, cache=False)
    f(a)
    before = kernel_cache.compile_count()
    np.testing.assert_allclose(g(b), np.exp(b) - b, rtol=1e-14)  # another function, size
    assert kernel_cache.compile_count() == before
    assert g.cache_info().reused == 1


def _one_row_products(x, w, v, xt, z, zt, col, xs, ws, xb, zs, cb):
    """Products with one row or one column, with each operand read as stored or transposed
    (a row times a matrix; a row stored as a column; a matrix times a column; batches of
    them, with the batch axis innermost in xb and cb: vectors with a stride of 3)."""
    return (x @ w, np.einsum("ik,nk->in", x, v), np.einsum("ki,kn->in", xt, w), z @ col,
            np.einsum("km,kn->mn", zt, col), np.einsum("bij,bjk->bik", xs, ws),
            np.einsum("kib,bkn->bin", xb, ws), np.einsum("bmk,kjb->bmj", zs, cb))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_row_and_one_column_products_run_on_blas_and_are_right(dtype):
    # A free axis of extent 1 is planned as any extent (compiler/gemm_plan.py); at run time
    # gemm_strided calls gemv for it (runtime/cpu_kernels.py): every layout checked here.
    rng = np.random.default_rng(18)
    shapes = ((1, 48), (48, 40), (40, 48), (48, 1), (32, 48), (48, 32), (48, 1), (3, 1, 48),
              (3, 48, 40), (48, 1, 3), (3, 32, 48), (48, 1, 3))
    args = [rng.standard_normal(s).astype(dtype) for s in shapes]
    jitted = tx.jit(_one_row_products, cache=False)
    source = jitted.lower(*args).source
    assert source.count("gemm_strided(") == 8  # no product runs as loops
    tol = 2e-5 if dtype == "float32" else 1e-12
    wide = [a.astype(np.float64) for a in args]
    for got, want in zip(jitted(*args), _one_row_products(*wide)):
        assert got.shape == want.shape and got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_batch_one_renders_the_source_of_batch_128_at_the_benchmark_sizes():
    # Lowering only (nothing compiled): per-sample gradients of a 784-512-10 MLP, where
    # batch 128's per-sample weight gradients ask for huge pages and batch 1's 1.6 MB would
    # not: the request is made for both and the helper skips the small buffer at run time.
    from transfuse.runtime.cache import code_only

    rng = np.random.default_rng(19)
    jitted = tx.jit(tx.vmap(tx.grad(_loss), in_dims=(None, 0, 0)), cache=False)
    sources = []
    for batch in (128, 1):
        params, x, y = _mlp(rng, "float32", batch, widths=(784, 512, 10))
        sources.append(code_only(jitted.lower(params, x, y).source))
    assert "advise_huge_pages(" in sources[0]
    assert sources[0] == sources[1]
