"""The direct back end (compiler/lower_direct.py, runtime/direct.py): generated kernels
compiled to LLVM IR by llvmlite, without Numba, cached as shared libraries.

It must give the Numba path's answers (the same IR for the same Python: bit for bit on
the programs below), take the kernels it is meant to take, hand the others to Numba with
a reason, and keep a disk cache that a new process loads without Numba or llvmlite, that
survives a read-only directory, and that detects a spoiled library.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.special
from transfuse.runtime import cache as kernel_cache
from transfuse.runtime import direct

import transfuse as tx
from tests.catalogue import combined, families, reference
from tests.helpers import assert_compiled_matches, jit_result_with

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(20261207)


def chain(x):
    sigmoid = 1 / (1 + np.exp(-x))
    return np.tanh(x) * sigmoid + 0.5 * x * x - np.exp(-x * x) + np.sin(x) * np.cos(x)


def broadcast_mix(x, y):
    z = np.maximum(x[:, None] * y, 0.25) + np.where(x[:, None] > 0, y, -y)
    return z, np.sqrt(np.abs(z)) - np.floor(z)


def kernel_of(jitted, *args):
    """The loaded kernel behind jitted's executable for args."""
    jitted(*args)
    (exe,) = [e for e in jitted.executables()]
    return exe.kernel


def three_ways(f, x):
    """f(x) jitted through the direct back end, through Numba, and in float64 NumPy; and
    the direct kernel."""
    jitted = tx.jit(f)
    with np.errstate(all="ignore"):
        got = jitted(x)
        want = numba_result(f, x)
        ref = f(x.astype(np.float64))
    return got, want, ref, kernel_of(jitted, x)


def numba_result(f, *args):
    """f's jit result through Numba (TRANSFUSE_DIRECT=0), in this process."""
    return jit_result_with("TRANSFUSE_DIRECT", "0", f, *args)


# ---------------------------------------------------------------------------------------
# Same answers as Numba


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 37, 70_001, 300_000])  # size 0, serial and parallel
def test_the_chain_is_bit_identical_to_numbas(fresh_cache, dtype, n):
    x = (RNG.standard_normal(n) * 3).astype(dtype)
    if n > 100:
        x[::97] *= 1e5  # |x| past the trigonometric fast path: the exact fallback runs
        x[1::101] = [np.nan, np.inf, -np.inf, -0.0][0] if n % 2 else np.inf
    jitted = tx.jit(chain)
    got = jitted(x)
    assert isinstance(kernel_of(jitted, x), direct.DirectKernel)
    want = numba_result(chain, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    with np.errstate(all="ignore"):
        ref = chain(x.astype(np.float64))
    finite = np.isfinite(ref)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[finite], ref[finite], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_broadcasting_selects_and_two_outputs_match_numba(fresh_cache, dtype):
    x = RNG.standard_normal(9).astype(dtype)
    y = RNG.standard_normal(5).astype(dtype)
    y[2] = np.nan
    jitted = tx.jit(broadcast_mix)
    got = jitted(x, y)
    assert isinstance(kernel_of(jitted, x, y), direct.DirectKernel)
    for a, b in zip(got, numba_result(broadcast_mix, x, y)):
        np.testing.assert_array_equal(a, b)


def test_zero_dimensional_inputs_and_outputs(fresh_cache):
    f = tx.jit(lambda a, b: (a * b + np.float32(1), np.sin(a)))
    a, b = np.float32(RNG.standard_normal()), np.asarray(RNG.standard_normal(), np.float32)
    got = f(a, b)
    assert got[0].shape == () and got[0].dtype == np.float32
    np.testing.assert_array_equal(got[0], a * b + np.float32(1))


def test_a_gradient_program_is_taken_and_matches_finite_differences(fresh_cache):
    def loss(w, x):
        return np.sum(np.tanh(x @ w) ** 2)

    w = RNG.standard_normal((3, 2))
    x = RNG.standard_normal((4, 3))
    grad = tx.jit(tx.grad(loss))
    g = grad(w, x)
    assert isinstance(kernel_of(grad, w, x), direct.DirectKernel)
    eps = 1e-6
    fd = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        dw = np.zeros_like(w)
        dw[idx] = eps
        fd[idx] = (loss(w + dw, x) - loss(w - dw, x)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


# The primitives whose catalogue programs the direct back end takes (all their dtypes but
# complex): a change that sends one back to Numba fails here. What it does not take yet
# (scipy.special's, float // and %, pow, casts, gathers, reductions) goes to Numba.
def float_division_family(x, y):
    return x // y, x % y, x ** y, np.arctan2(x, y), np.sign(x), np.round(x * 2.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_floor_div_mod_pow_sign_arctan2_round_are_bit_identical_to_numbas(
        fresh_cache, dtype):
    """Python's // and % on floats (CPython's float_divmod), ** through pow, np.sign,
    np.arctan2 and np.round: signed zeros, zero divisors, infinities and NaN included."""
    special = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, np.inf, -np.inf, np.nan, 3.0, 1e-30]
    x = np.array(special * len(special) + list(RNG.standard_normal(40) * 4), dtype)
    y = np.array([v for v in special for _ in special] + list(RNG.standard_normal(40)), dtype)
    jitted = tx.jit(float_division_family)
    with np.errstate(all="ignore"):
        got = jitted(x, y)
        want = numba_result(float_division_family, x, y)
    assert isinstance(kernel_of(jitted, x, y), direct.DirectKernel)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    with np.errstate(all="ignore"):  # and NumPy's answers (pow and arctan2: libm's, not
        for a, b in zip(got[:2] + got[4:], float_division_family(x, y)[:2] + (  # SIMD)
                np.sign(x), np.round(x * dtype(2.5)))):
            np.testing.assert_array_equal(a, b)


def special_family(x):
    s = scipy.special
    return (s.erfc(x) * s.ndtr(x) + s.gammaln(np.abs(x) + 0.5), s.psi(x) + s.i0e(x),
            s.i1e(x) - s.log_ndtr(x), s.erfinv(x / 16) + s.ndtri(s.ndtr(x) * 0.5 + 0.25))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scipy_special_through_cython_pointers_is_bit_identical_to_numbas(fresh_cache, dtype):
    """scipy.special's C functions (cython_special's exports, which Numba binds by symbol)
    called through function pointers the loader sets: Numba's bits, SciPy's values."""
    x = np.concatenate([RNG.standard_normal(60) * 3, [0.0, -0.0, np.inf, -np.inf, np.nan,
                                                       -2.0, 1e-300]]).astype(dtype)
    got, want, ref, kernel = three_ways(special_family, x)
    assert isinstance(kernel, direct.DirectKernel) and kernel.plan.externals
    for a, b, r in zip(got, want, ref):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
        tol = 2e-5 if dtype == np.float32 else 1e-12  # float32: rounded intermediates
        np.testing.assert_allclose(a, r.astype(dtype), rtol=tol, atol=tol, equal_nan=True)


def gather_twice(x, i):
    return x[i] * 2.0 + x[i[::-1]]


@pytest.mark.parametrize("n", [7, 600_000])  # serial, and a parallel gather region
def test_gathers_match_numba_and_an_index_out_of_range_raises(fresh_cache, n):
    """take_index's `raise IndexError(...)`: the step stops with an error status that the
    entry raises (a traced index out of range, naming the user's line), in a serial and in
    a parallel step; in range, the same bits as Numba's."""
    x = RNG.standard_normal(n).astype(np.float32)
    i = RNG.integers(-n, n, n)
    jitted = tx.jit(gather_twice)
    got = jitted(x, i)
    kernel = kernel_of(jitted, x, i)
    assert isinstance(kernel, direct.DirectKernel) and kernel.plan.errors
    parallel = any(extent is not None for _, extent in kernel.plan.steps)
    assert parallel == (n > 1000)
    np.testing.assert_array_equal(got, numba_result(gather_twice, x, i))
    np.testing.assert_array_equal(got, x[i] * np.float32(2.0) + x[i[::-1]])
    for bad in (n, -n - 1):
        j = i.copy()
        j[n // 2] = bad
        with pytest.raises((IndexError, tx.TransfuseError), match="out of bounds"):
            jitted(x, j)
    np.testing.assert_array_equal(jitted(x, i), got)  # and runs again


def scatter_add_rows(x, i, u):
    y = x.copy()
    y[i] += u
    return y * 1.5


def test_scatters_match_numba_and_an_index_out_of_range_raises(fresh_cache):
    """`y[i] += u`: the operand copied in (`b[...] = a`), then updates at take_index's
    indices (repeated ones: NumPy's answer, the last write wins); out of range:
    IndexError, the arguments untouched."""
    x = RNG.standard_normal((9, 5))
    i = RNG.integers(-9, 9, 20)
    u = RNG.standard_normal((20, 5))
    jitted = tx.jit(scatter_add_rows)
    got = jitted(x, i, u)
    assert isinstance(kernel_of(jitted, x, i, u), direct.DirectKernel)
    np.testing.assert_array_equal(got, numba_result(scatter_add_rows, x, i, u))
    np.testing.assert_allclose(got, scatter_add_rows(x, i, u), rtol=1e-14, atol=1e-14)
    before = x.copy()
    j = i.copy()
    j[7] = 9
    with pytest.raises((IndexError, tx.TransfuseError), match="out of bounds"):
        jitted(x, j, u)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 128, 300])  # one block of block_dot, and several
def test_matrix_vector_products_through_block_dot_are_bit_identical_to_numbas(
        fresh_cache, dtype, n):
    """`a @ x` with a vector: block_dot over each row (`a1[i0, :]`), inlined from its
    source with comp_add's and comp_total's explicit rules: Numba's bits; and the float64
    product's value."""
    a = RNG.standard_normal((5, n)).astype(dtype)
    v = RNG.standard_normal(n).astype(dtype)
    got, want, ref, kernel = three_ways(lambda m: np.tanh(m @ v), a)
    assert isinstance(kernel, direct.DirectKernel)
    np.testing.assert_array_equal(got, want)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, np.tanh(a.astype(np.float64) @ v.astype(np.float64)),
                               rtol=tol, atol=tol)


def test_the_hessian_benchmark_kernel_is_taken(fresh_cache):
    x = RNG.standard_normal(16)
    a = RNG.standard_normal((16, 16)) / 4
    h = tx.jit(tx.hessian(lambda v, m: np.sum(np.tanh(m @ v))))
    got = h(x, a)
    assert isinstance(kernel_of(h, x, a), direct.DirectKernel)
    t = np.tanh(a @ x)
    np.testing.assert_allclose(got, (a.T * (-2 * t * (1 - t * t))) @ a, rtol=1e-12, atol=1e-12)


TAKEN = {
    "unary-float": ["arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctanh",
                    "bessel_i0e", "bessel_i1e", "ceil", "cos", "cosh", "digamma", "erf",
                    "erf_inv", "erfc", "exp", "expm1", "floor", "lgamma", "log", "log1p",
                    "log_ndtr", "logistic", "ndtr", "ndtri", "reciprocal", "round", "rsqrt",
                    "sin", "sinh", "sqrt", "tan", "tanh"],
    "binary": ["add", "arctan2", "clip", "div", "floor_div", "max", "min", "mod", "mul", "pow",
               "select", "sub"],
    "unary-numeric": ["abs", "neg", "not", "sign", "square"],
    "unary-to-bool": ["isfinite", "isinf", "isnan"],
    "compare-logical": ["and", "eq", "ge", "gt", "le", "lt", "ne", "or", "xor"],
    "creation": ["full", "iota"],
    "shapes": ["broadcast_in_dim", "concatenate", "expand_dims", "pad", "reshape", "slice",
               "squeeze", "transpose"],
    "indexing": ["dynamic_slice", "dynamic_update_slice", "gather", "scatter",
                 "scatter_add", "update_slice"],
}


@pytest.mark.parametrize("family", list(TAKEN))
def test_catalogue_programs_are_taken_and_agree_with_the_interpreter(fresh_cache, family):
    """Each family's programs of the primitives above go through the direct back end and
    agree with the reference interpreter (exactly for ints and bools)."""
    pairs = [(name, dtype) for name, dtype in families()[family]
             if name in TAKEN[family] and not dtype.startswith("complex")]
    assert {name for name, _ in pairs} == set(TAKEN[family])
    f, args = combined(pairs)
    with np.errstate(all="ignore"):
        expected = reference(f, args)
        jitted = tx.jit(f)
        assert_compiled_matches(jitted(*args), expected)
    reason = kernel_cache.not_direct_reason(jitted.lower(*args).source)
    assert reason is None, reason


# ---------------------------------------------------------------------------------------
# What it does not take goes to Numba, with the reason


def test_a_kernel_outside_the_subset_goes_to_numba_with_a_reason(fresh_cache):
    x = RNG.standard_normal((6, 40)).astype(np.float32)
    ranked = tx.jit(lambda v: np.sort(v, axis=-1) * v)  # sorting: not translated
    got = ranked(x)
    np.testing.assert_array_equal(got, np.sort(x, axis=-1) * x)
    low = ranked.lower(x)
    reason = kernel_cache.not_direct_reason(low.source)
    assert reason is not None and reason.startswith("unsupported"), reason
    assert not isinstance(kernel_of(ranked, x), direct.DirectKernel)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 100, 128, 129, 1000, 3000])
def test_row_reductions_are_bit_identical_to_numbas(fresh_cache, dtype, width):
    """softmax and layernorm rows through block_sum, block_max and comp_add's rules
    (compiler/direct_helpers.py): the same summation order as runtime/cpu_kernels.py's
    Numba helpers, so the same bits; and NumPy's accuracy."""
    def softmax(v):
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def layernorm(v):
        m = v.mean(-1, keepdims=True)
        c = v - m
        return c / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5)

    rows = 300 if width < 1000 else 150  # past the parallel threshold at the wider rows
    x = (RNG.standard_normal((rows, width)) * 4 + 1).astype(dtype)
    x[3, 0] = np.nan
    x[5, -1] = np.inf
    for f in (softmax, layernorm):
        got, want, ref, kernel = three_ways(f, x)
        assert isinstance(kernel, direct.DirectKernel)
        if "runs in parallel" in tx.jit(f).lower(x).source:  # a region with scratch rows
            # stays a parallel step (it was once run serially, written out as a block)
            assert any(extent for _, extent in kernel.plan.steps), kernel.plan.steps
        np.testing.assert_array_equal(got, want)
        finite = np.isfinite(ref)
        tol = 2e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got[finite], ref[finite], rtol=tol, atol=tol)


def test_a_non_contiguous_argument_takes_the_slow_path(fresh_cache):
    f = tx.jit(lambda v: v * 2.0 + 1.0)
    x = RNG.standard_normal((8, 6))
    np.testing.assert_array_equal(f(x), x * 2.0 + 1.0)
    np.testing.assert_array_equal(f(x.T), x.T * 2.0 + 1.0)  # copied into C order
    np.testing.assert_array_equal(f(x[:, ::2]), x[:, ::2] * 2.0 + 1.0)


# ---------------------------------------------------------------------------------------
# Sizes are arguments: one library for every batch size


def test_batch_sizes_share_one_compiled_library(fresh_cache):
    f = tx.jit(lambda v, w: np.tanh(v * w) + v)
    before = kernel_cache.compile_count()
    for batch in (1, 7, 64, 128):
        v = RNG.standard_normal((batch, 16)).astype(np.float32)
        w = RNG.standard_normal(16).astype(np.float32)
        np.testing.assert_allclose(f(v, w), np.tanh(v * w) + v, rtol=1e-6, atol=1e-6)
    assert kernel_cache.compile_count() - before == 1
    assert len(list((fresh_cache / "direct").iterdir())) == 1


# ---------------------------------------------------------------------------------------
# Parallel steps


def test_parallel_blocks_give_the_same_answer_on_any_thread_count(fresh_cache, monkeypatch):
    x = RNG.standard_normal(1 << 18).astype(np.float32)
    outs = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("NUMBA_NUM_THREADS", threads)
        outs.append(tx.jit(chain)(x))
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_the_entry_source_is_readable(fresh_cache):
    x = RNG.standard_normal(1 << 18).astype(np.float32)
    kernel = kernel_of(tx.jit(chain), x)
    text = kernel.source
    assert "def entry(" in text and "raise SignatureMismatch()" in text
    assert "run_parallel(step_0, extent_0, ints, arrays)" in text


# ---------------------------------------------------------------------------------------
# The disk cache: a new process, a read-only directory, a spoiled library


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import scipy.special
    import transfuse as tx
    from transfuse.runtime import cache

    def chain(x):  # with a scipy.special function: a pointer the loader sets
        sigmoid = 1 / (1 + np.exp(-x))
        return (np.tanh(x) * sigmoid + 0.5 * x * x - np.exp(-x * x) + np.sin(x) * np.cos(x)
                + scipy.special.ndtr(x))

    x = np.linspace(-40.0, 40.0, 5000).astype(np.float32)
    y = tx.jit(chain)(x)
    print(json.dumps({"compiles": cache.compile_count(), "sum": float(y.astype(np.float64).sum()),
                      "numba": "numba" in sys.modules, "llvmlite": "llvmlite" in sys.modules}))
""")


def _run(tmp_path: Path, cache_dir: Path, **env: str) -> dict:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    full = dict(os.environ, TRANSFUSE_CACHE_DIR=str(cache_dir), TRANSFUSE_DIRECT="strict",
                PYTHONPATH=str(REPO), **env)
    full.pop("TRANSFUSE_DISABLE_CACHE", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=full, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _libraries(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "direct").glob("*/kernel.so"))


def test_a_new_process_loads_the_library_without_numba_or_llvmlite(tmp_path):
    cache_dir = tmp_path / "cache"
    first = _run(tmp_path, cache_dir)
    assert first["compiles"] == 1 and first["llvmlite"]
    second = _run(tmp_path, cache_dir)
    assert second == {**second, "compiles": 0, "numba": False, "llvmlite": False}
    assert second["sum"] == first["sum"]


def test_a_read_only_cache_runs_without_compiling(tmp_path):
    cache_dir = tmp_path / "cache"
    first = _run(tmp_path, cache_dir)
    for path in sorted(cache_dir.rglob("*"), reverse=True):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    cache_dir.chmod(cache_dir.stat().st_mode & ~stat.S_IWUSR)
    try:
        again = _run(tmp_path, cache_dir, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    finally:
        for path in [cache_dir, *cache_dir.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert again["compiles"] == 0 and not again["numba"]
    assert again["sum"] == first["sum"]


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_spoiled_library_is_detected_and_rebuilt(tmp_path, how):
    cache_dir = tmp_path / "cache"
    first = _run(tmp_path, cache_dir)
    (library,) = _libraries(cache_dir)
    data = bytearray(library.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    library.write_bytes(bytes(data))
    again = _run(tmp_path, cache_dir)
    assert again["compiles"] == 1 and again["sum"] == first["sum"]
    third = _run(tmp_path, cache_dir)
    assert third["compiles"] == 0 and third["sum"] == first["sum"]


def test_an_unsupported_kernel_is_remembered_on_disk(fresh_cache):
    x = RNG.standard_normal((4, 80)).astype(np.float64)
    tx.jit(lambda v: np.sort(v, axis=-1) + 0.7)(x)  # sorting: not translated yet
    records = [json.loads(p.read_text()) for p in (fresh_cache / "direct").glob("*/direct.json")]
    assert any(r.get("unsupported", "").startswith("unsupported") for r in records)


def test_the_compiled_guard_sends_other_ranks_layouts_and_sizes_back(fresh_cache):
    """The first step checks rank, extents, C layout and alignment before any array is
    read (a 0-d array's extents are not even allocated): each case recompiles or copies,
    and every answer is right."""
    f = tx.jit(lambda v, w: v * w + 1.0)
    x, y = RNG.standard_normal(12), RNG.standard_normal(12)
    np.testing.assert_array_equal(f(x, y), x * y + 1.0)
    assert "if run_steps(ints, arrays):" in kernel_of(f, x, y).source
    for a, b in [(np.asarray(2.5), np.asarray(-1.5)), (x.reshape(3, 4), y.reshape(3, 4)),
                 (x[:6], y[:6]), (x[::2], y[::2]), (x.reshape(3, 4).T, y.reshape(3, 4).T),
                 (np.zeros((0,)), np.zeros((0,)))]:
        np.testing.assert_array_equal(f(a, b), a * b + 1.0)
    raw = np.zeros(12 * 8 + 1, np.uint8)[1:].view(np.float64)  # misaligned float64s
    raw[:] = x
    assert not raw.flags.aligned
    np.testing.assert_array_equal(f(raw, y), x * y + 1.0)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_matrix_products_through_openblas_match_numba(fresh_cache, batch):
    """The per-sample-gradient step of a small tanh MLP: BLAS gemm and gemv (a batch of
    one) called from the library as runtime/cpu_kernels.py's gemm_strided calls them, a
    log-softmax row reduction, tanh: Numba's bits, and Numba is not imported."""
    def loss(params, x, y):
        h = x
        for w, b in params[:-1]:
            h = np.tanh(h @ w + b)
        w, b = params[-1]
        logits = h @ w + b
        logits = logits - np.max(logits, axis=-1, keepdims=True)
        logp = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
        return -np.sum(logp * y)

    sizes = (40, 64, 48, 10)  # products of 8,192 flops and more: BLAS, not loops
    params = [((RNG.standard_normal((m, n)) / np.sqrt(m)).astype(np.float32),
               (RNG.standard_normal(n) * 0.1).astype(np.float32))
              for m, n in zip(sizes[:-1], sizes[1:])]
    x = RNG.standard_normal((batch, sizes[0])).astype(np.float32)
    y = np.eye(sizes[-1], dtype=np.float32)[RNG.integers(0, sizes[-1], batch)]
    step = tx.jit(tx.vmap(tx.grad(loss), in_dims=(None, 0, 0)))
    got = step(params, x, y)
    assert isinstance(kernel_of(step, params, x, y), direct.DirectKernel)
    if batch > 1:
        assert "gemm_strided" in step.lower(params, x, y).source
    want = numba_result(tx.vmap(tx.grad(loss), in_dims=(None, 0, 0)), params, x, y)
    for a, b in zip(tx.tree_leaves(got), tx.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)
    # and the interpreter (eager vmap of grad), to float32 rounding
    eager = tx.vmap(tx.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for a, b in zip(tx.tree_leaves(got), tx.tree_leaves(eager)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_a_copy_of_an_argument_is_a_new_array(fresh_cache):
    copy = tx.jit(lambda v: v.copy())
    both = tx.jit(lambda v: (v.copy(), v * 2.0))
    x = RNG.standard_normal((3, 4))
    for f in (copy, both):
        out = f(x)
        first = out if f is copy else out[0]
        assert isinstance(kernel_of(f, x), direct.DirectKernel)
        np.testing.assert_array_equal(first, x)
        assert first is not x and not np.shares_memory(first, x)
    np.testing.assert_array_equal(both(x)[1], x * 2.0)


def test_scratch_names_bound_again_with_another_shape_are_separate_buffers(fresh_cache):
    """One kernel of row reductions over rows of 1, 7 and 2500: the generated source
    allocates `rb1` in one region and again, another length, in the next. The plan makes
    every buffer up front, so each binding must be its own array (one shared array made
    the wider rows overrun the narrower one: wrong sums, then a corrupted heap)."""
    def f(a, b, c):
        out = []
        for x in (a, b, c):
            m = np.mean(x, axis=-1, keepdims=True)
            out.append(np.sum((x - m) * (x - m), axis=-1))
            out.append(x / np.sum(np.exp(x), axis=-1, keepdims=True))
        return out

    args = [RNG.standard_normal((6, n)).astype(np.float32) for n in (1, 7, 2500)]
    jitted = tx.jit(f)
    got = jitted(*args)
    assert isinstance(kernel_of(jitted, *args), direct.DirectKernel)
    for a, b in zip(got, numba_result(f, *args)):
        np.testing.assert_array_equal(a, b)
