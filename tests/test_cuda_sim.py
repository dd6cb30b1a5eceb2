"""jit(device='cuda') run in numba-cuda's simulator agrees with the reference interpreter.

The simulator must be chosen before numba.cuda is first imported, so this module only
runs in a process started with NUMBA_ENABLE_CUDASIM=1: tests/test_cuda.py starts one
(`test_simulator_suite`). It runs every GPU thread as a Python thread, so sizes are tiny.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("runs in its own process with NUMBA_ENABLE_CUDASIM=1 (see test_cuda.py)",
                allow_module_level=True)
pytest.importorskip("numba_cuda")

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

import transfuse as tx  # noqa: E402
import transfuse.numpy as tnp  # noqa: E402
from tests.catalogue import HOST_ONLY, combined, copies, families, reference  # noqa: E402
from tests.cuda_programs import family_programs, programs  # noqa: E402
from tests.helpers import assert_compiled_matches, host, rand  # noqa: E402

# The simulator runs the uint64 random-number arithmetic on NumPy scalars, which warn
# when it wraps around (as it is meant to).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def all_programs(dtype: str) -> list:
    return programs(dtype) + family_programs(dtype)


CASES = [(d, name) for d in ("float32", "float64") for name, _, _ in all_programs(d)]


@pytest.mark.parametrize("dtype,name", CASES, ids=[f"{n}-{d}" for d, n in CASES])
def test_programs_match_the_interpreter(dtype, name):
    """Whole programs, and the catalogue's functions family by family (tests/opinfo.py)."""
    _, f, args = next(p for p in all_programs(dtype) if p[0] == name)
    with np.errstate(all="ignore"):  # copies: some functions write into their arguments
        tx.random.seed(3)
        expected = tx.functionalize(f)(*copies(args))  # interpreted, a fresh key per call
        tx.random.seed(3)
        actual = tx.jit(f, device="cuda")(*copies(args))
    outs = actual if isinstance(actual, tuple) else (actual,)
    assert all(isinstance(o, type(cuda.device_array(1))) for o in outs), "device arrays out"
    assert_compiled_matches(actual, expected)


FAMILIES = {name: pairs for name, pairs in families().items() if name not in HOST_ONLY}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_primitive_of_the_catalogue_matches_the_interpreter(family):
    """tests/catalogue.py, one program a family (as tests/test_coverage.py compiles it)."""
    f, args = combined(FAMILIES[family])
    with np.errstate(all="ignore"):
        expected = reference(f, args)
        actual = tx.jit(f, device="cuda")(*copies(args))
    assert_compiled_matches(actual, expected)


def test_unfused_programs_match_too():
    _, f, args = next(p for p in programs("float64") if p[0] == "reductions")
    assert_compiled_matches(tx.jit(f, device="cuda", fuse=False)(*args), tx.functionalize(f)(*args))


def test_device_array_inputs_are_used_without_a_new_signature():
    rng = np.random.default_rng(0)
    x, w = rand(rng, (4, 3), "float32"), rand(rng, (3, 2), "float32")
    f = tx.jit(lambda a, b: np.tanh(a @ b) + 1.0, device="cuda")
    from_host = f(x, w)
    on_device = f(cuda.to_device(x), cuda.to_device(w))
    np.testing.assert_allclose(host(on_device), np.tanh(x @ w) + 1.0, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(host(on_device), host(from_host))
    assert f.cache_info().traces == 1  # same shapes and dtypes: the same signature
    chained = tx.jit(lambda y: y.sum(1), device="cuda")(on_device)  # device in, device out
    np.testing.assert_allclose(host(chained), host(on_device).sum(1), rtol=2e-5)


def test_mutated_inputs_are_written_back():
    def step(x, g):
        x -= 0.5 * g
        x[0] = 7.0
        return (x * x).sum()

    rng = np.random.default_rng(1)
    x, g = rand(rng, (3,), "float64"), rand(rng, (3,), "float64")
    expected = x - 0.5 * g
    expected[0] = 7.0
    f = tx.jit(step, device="cuda")
    x_host = x.copy()
    value = f(x_host, g)  # a NumPy input gets the new values copied back
    np.testing.assert_allclose(x_host, expected, rtol=1e-12)
    np.testing.assert_allclose(host(value), (expected ** 2).sum(), rtol=1e-12)
    x_dev = cuda.to_device(x.copy())
    f(x_dev, g)  # a device input is written in place
    np.testing.assert_allclose(x_dev.copy_to_host(), expected, rtol=1e-12)


def test_bad_indices_and_negative_powers_raise_after_the_launch():
    f = tx.jit(lambda x, i: x[i], device="cuda")
    x = np.arange(4.0)
    with pytest.raises(IndexError, match="out of bounds"):
        f(x, np.array([0, 4]))
    np.testing.assert_array_equal(host(f(x, np.array([0, -4]))), [0.0, 0.0])
    with pytest.raises(ValueError, match="negative integer powers"):
        tx.jit(lambda a, b: a ** b, device="cuda")(np.array([2, 3]), np.array([1, -1]))


def test_per_sample_gradients_of_a_tiny_mlp():
    rng = np.random.default_rng(2)
    params = {"w1": rand(rng, (3, 4), "float64"), "b1": rand(rng, (4,), "float64"),
              "w2": rand(rng, (4, 1), "float64")}

    def loss(p, x, y):
        h = np.tanh(x @ p["w1"] + p["b1"])
        return ((h @ p["w2"])[0] - y) ** 2

    xs, ys = rand(rng, (5, 3), "float64"), rand(rng, (5,), "float64")
    per_sample = tx.vmap(tx.grad(loss), in_dims=(None, 0, 0))
    expected = per_sample(params, xs, ys)
    actual = tx.jit(per_sample, device="cuda")(params, xs, ys)
    assert_compiled_matches(actual, expected)


def test_random_draws_differ_between_calls():
    f = tx.jit(lambda x: x + tnp.random.normal(size=x.shape), device="cuda")
    x = np.zeros(8, np.float32)
    assert not np.allclose(host(f(x)), host(f(x)))


def test_rows_reduced_by_a_block_of_threads():
    x = rand(np.random.default_rng(3), (3, 20), "float32")
    x[1, 5] = np.nan  # NaN propagates through the tree of partial maxima

    def f(v):
        e = np.exp(v - v.max(1, keepdims=True))
        return v.max(1), v.min(1), v.sum(1), (v > 0).any(1), e / e.sum(1, keepdims=True)

    jitted = tx.jit(f, device="cuda")
    assert "launch_blocks(" in jitted.lower(x).source  # the simulator's blocks: 8 threads
    assert_compiled_matches(jitted(x), tx.functionalize(f)(x))


def test_small_solves_and_choleskys_run_a_thread_a_matrix():
    """np.linalg.solve/inv/cholesky up to 32x32 on the device (runtime/linalg_bodies.py,
    the CPU's loop) against NumPy; a singular or indefinite matrix raises LinAlgError."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 5, 5)) + 3 * np.eye(5)
    b = rng.standard_normal((6, 5, 2))
    spd = a @ np.swapaxes(a, -1, -2) + np.eye(5)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        got = host(tx.jit(np.linalg.solve, device="cuda")(a.astype(dtype), b.astype(dtype)))
        assert got.dtype == dtype
        np.testing.assert_allclose(got, np.linalg.solve(a, b), rtol=tol, atol=tol)
        got = host(tx.jit(np.linalg.cholesky, device="cuda")(spd.astype(dtype)))
        np.testing.assert_allclose(got, np.linalg.cholesky(spd), rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(host(tx.jit(np.linalg.inv, device="cuda")(a)),
                               np.linalg.inv(a), rtol=1e-12, atol=1e-12)
    grad = tx.grad(lambda m: np.sum(np.linalg.solve(m, b[0])))
    np.testing.assert_allclose(host(tx.jit(grad, device="cuda")(a[0])), grad(a[0]),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(np.linalg.LinAlgError, match="Singular"):
        tx.jit(np.linalg.solve, device="cuda")(np.zeros((2, 2)), np.ones((2, 1)))
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        tx.jit(np.linalg.cholesky, device="cuda")(-np.eye(3))
