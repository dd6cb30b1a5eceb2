"""scipy.linalg.expm traced (issue #14): values against SciPy, JVPs against central
differences and JAX, VJPs against JAX, vmap against a loop, edge cases. Everything runs
on the reference interpreter: jit of expm compiles its max_squarings(dtype) conditional
squarings one Numba kernel each (minutes), so the one compiled check is marked slow."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.linalg
from transfuse.ir.errors import TransfuseLinAlgError

import transfuse as tx
from tests.helpers import traced
from transfuse.scipy._expm import THETA13, max_squarings

RNG = np.random.default_rng(20260311)
NORMS = (1e-3, 0.3, 3.0, 20.0, 50.0)


def expm(a):
    return scipy.linalg.expm(a)


def matrices(norm: float, shape=(3, 4, 4)) -> np.ndarray:
    """Random matrices scaled to a 1-norm of about `norm`."""
    a = RNG.normal(size=shape)
    return a * norm / np.linalg.norm(a, 1, axis=(-2, -1), keepdims=True)


def near_threshold(sign: float) -> np.ndarray:
    """A permutation times c with eta = c just above (sign 1) or below (-1) the boundary
    between one and two squarings, plus a small perturbation to break the symmetry."""
    perm = np.eye(4)[[1, 2, 3, 0]]
    return 2 * THETA13 * (1 + sign * 1e-9) * perm + 1e-3 * RNG.normal(size=(2, 4, 4))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = np.max(np.abs(want), axis=(-2, -1), keepdims=True)
    return float(np.max(np.abs(got - want) / scale))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype, ulps", [(np.float64, 2e-14), (np.float32, 1e-6)])
def test_values_match_scipy_float64(norm, dtype, ulps):
    """To rounding times the norm (exp's relative condition number is at least ||A||)."""
    a = matrices(norm).astype(dtype)
    got = traced(expm, a)
    assert got.dtype == dtype and got.shape == a.shape
    assert relative_error(got, scipy.linalg.expm(a.astype(np.float64))) < ulps * max(1, norm)


def test_values_near_a_squaring_threshold_and_for_special_matrices():
    for a in (near_threshold(1.0), near_threshold(-1.0)):
        assert relative_error(traced(expm, a), scipy.linalg.expm(a)) < 1e-13
    nilpotent = np.array([[0.0, 1e200], [0.0, 0.0]])  # eta = 0: no squaring at all
    np.testing.assert_allclose(traced(expm, nilpotent), [[1.0, 1e200], [0.0, 1.0]], rtol=1e-15)
    diagonal = np.diag([-1e30, 0.5, np.inf])  # SciPy's exact diagonal shortcut
    np.testing.assert_array_equal(traced(expm, diagonal), scipy.linalg.expm(diagonal))


def _central_difference(f, a, t, h=1e-6):
    return (f(a + h * t) - f(a - h * t)) / (2 * h)


@pytest.mark.parametrize("norm", NORMS)
def test_jvp_matches_central_differences_and_jax(norm):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    a = matrices(norm, (2, 3, 3))
    t = RNG.normal(size=a.shape)
    out, tangent = tx.jvp(expm, (a,), (t,))
    scale = np.max(np.abs(tangent))
    fd = _central_difference(scipy.linalg.expm, a, t, h=1e-6 * max(1.0, norm))
    assert np.max(np.abs(tangent - fd)) < 1e-6 * scale
    _, want = jax.jvp(jax.scipy.linalg.expm, (a,), (t,))
    assert np.max(np.abs(tangent - np.asarray(want))) < 1e-11 * scale


@pytest.mark.parametrize("a", [matrices(1e-3), matrices(3.0), matrices(50.0),
                               near_threshold(1.0), near_threshold(-1.0)],
                         ids=["small", "medium", "large", "above", "below"])
def test_vjp_matches_the_frechet_adjoint_and_jax(a):
    """Against L(A^T, G) from SciPy's expm of [[A^T, G], [0, A^T]] to 1e-12; against JAX
    to 1e-8 only: near a threshold JAX's own error is 7e-10 (it picks s from ||A||_1)."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    ct = RNG.normal(size=a.shape)
    _, vjp_fn = tx.vjp(expm, a)
    (got,) = vjp_fn(ct)
    n = a.shape[-1]
    want = np.stack([scipy.linalg.expm(np.block([[m.T, g], [np.zeros((n, n)), m.T]]))[:n, n:]
                     for m, g in zip(a, ct)])
    assert np.max(np.abs(got - want)) < 1e-12 * np.max(np.abs(want))
    _, jax_vjp = jax.vjp(jax.scipy.linalg.expm, a)
    (from_jax,) = jax_vjp(ct)
    assert np.max(np.abs(got - np.asarray(from_jax))) < 1e-8 * np.max(np.abs(want))


def test_vmap_and_vmap_grad_match_a_loop_and_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    a = np.concatenate([matrices(0.5, (2, 3, 3)), matrices(30.0, (2, 3, 3))])
    np.testing.assert_allclose(tx.vmap(expm)(a), scipy.linalg.expm(a), rtol=1e-12,
                               atol=1e-12 * np.abs(scipy.linalg.expm(a)).max())

    weights = RNG.normal(size=(3, 3))

    def loss(m):
        return np.sum(scipy.linalg.expm(m) * weights)

    got = tx.vmap(tx.grad(loss))(a)
    want = jax.vmap(jax.grad(lambda m: jax.numpy.sum(jax.scipy.linalg.expm(m) * weights)))(a)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_shapes_dtypes_and_errors_as_scipy():
    for a in (np.float64(0.5), np.float32(0.5), np.array([0.5])):  # one number: [[e^a]]
        want = scipy.linalg.expm(a)
        got = traced(expm, a)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-15)
    for shape in ((0, 0), (0, 3, 3), (2, 0, 0)):
        for dtype in (np.float32, np.float64, np.int64):
            a = np.zeros(shape, dtype)
            want, got = scipy.linalg.expm(a), traced(expm, a)
            assert got.shape == want.shape and got.dtype == want.dtype
    ints = np.array([[1, 2], [3, 4]])
    assert relative_error(traced(expm, ints), scipy.linalg.expm(ints)) < 1e-13
    one = np.array([[[0.5]], [[-2.0]]], np.float32)
    np.testing.assert_array_equal(traced(expm, one), np.exp(one))
    for bad in (np.ones(3), np.ones((2, 3))):
        with pytest.raises(TransfuseLinAlgError, match="expm") as info:
            traced(expm, bad)
        assert "test_expm.py" in str(info.value)


def test_non_finite_and_out_of_range_matrices_are_nan():
    a = np.array([[[1.0, np.inf], [0.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]]])
    got = traced(expm, a)
    assert np.isnan(got[0]).all()
    assert relative_error(got[1:], scipy.linalg.expm(a[1:])) < 1e-13
    huge = 2.0 ** (max_squarings(np.float64) + 3) * np.array([[0.0, 1.0], [-1.0, 0.0]])
    assert np.isnan(traced(expm, huge)).all()  # no digit of its exp is determined
    # the NaN branch gives finite gradients to the other matrices of the stack
    g = tx.grad(lambda m: np.sum(scipy.linalg.expm(m)[1]))(a[[1, 1]])
    assert np.isfinite(g).all()


@pytest.mark.skipif(not os.environ.get("TRANSFUSE_SLOW_TESTS"),
                    reason="compiles 22 + 51 conditional squarings (minutes); "
                           "TRANSFUSE_SLOW_TESTS=1 runs it")
def test_jit_matches_the_interpreter():
    for dtype, tol in ((np.float32, 2e-5), (np.float64, 1e-12)):
        a = matrices(5.0).astype(dtype)
        got = tx.jit(expm)(a)
        np.testing.assert_allclose(got, traced(expm, a), rtol=tol, atol=tol)
