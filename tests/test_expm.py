"""scipy.linalg.expm traced (issue #14): the `expm` primitive compiled against SciPy (the
kernel runs SciPy's algorithm: the same Padé degree and squarings), its derivatives (the
Fréchet derivative as a block expm) against central differences and SciPy's expm_frechet
(JAX's compile of its expm takes seconds a call: it checks the complex VJP's convention),
vmap against a loop, second derivatives, complex matrices, SciPy's edge cases."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.linalg
from transfuse.ir.errors import TransfuseLinAlgError
from transfuse.runtime.expm import THETA

import transfuse as tx
from tests.helpers import traced

RNG = np.random.default_rng(20260311)
NORMS = (1e-3, 0.05, 0.3, 1.5, 3.0, 20.0, 50.0)  # Padé degrees 3 to 13, up to 4 squarings


def expm(a):
    return scipy.linalg.expm(a)


def matrices(norm: float, shape=(3, 4, 4), complex_: bool = False) -> np.ndarray:
    """Random matrices scaled to a 1-norm of `norm`."""
    a = RNG.normal(size=shape) + (1j * RNG.normal(size=shape) if complex_ else 0)
    return a * norm / np.linalg.norm(a, 1, axis=(-2, -1), keepdims=True)


def near_threshold(sign: float) -> np.ndarray:
    """A permutation times c with eta = c just above (sign 1) or below (-1) the boundary
    between one and two squarings, plus a small perturbation to break the symmetry."""
    perm = np.eye(4)[[1, 2, 3, 0]]
    return 2 * THETA[-1] * (1 + sign * 1e-9) * perm + 1e-3 * RNG.normal(size=(2, 4, 4))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = np.max(np.abs(want), axis=(-2, -1), keepdims=True)
    return float(np.max(np.abs(got - want) / scale))


# ---------------------------------------------------------------------------------------
# Compiled: one jitted program for every compiled check of this file. Each program that
# calls the expm kernel links it anew (about 3 s a dtype and array rank even when the
# kernel is compiled: Numba re-optimises a callee's code in every caller), so the stacks,
# the special matrices, the empty shapes and jit(vmap(grad)) are outputs of one program.

SPECIAL = [np.diag([-1e30, 0.5, np.inf]), np.triu(RNG.normal(size=(3, 3)) * 20),
           np.tril(RNG.normal(size=(3, 3)) * 20),
           np.array([[0.0, 1e200, 0], [0, 0, 1], [0, 0, 0]]),
           np.array([[1.0, np.inf, 0], [0, 1, 0], [0, 0, 1]]),
           np.array([[1.0, 2, 0], [3, np.nan, 0], [0, 0, 1]]),
           np.array([[800.0, 1, 0], [1, 800, 0], [0, 0, 0]]),
           np.array([[1e-300, 1e-300, 0], [1e-310, 0, 0], [0, 0, 0]]),
           300 * matrices(1.0)[0, :3, :3]]
EMPTIES = [np.zeros(shape, dtype) for shape in ((0, 0), (0, 3, 3), (2, 0, 0))
           for dtype in (np.float32, np.float64, np.int64, np.complex64)]
NORM_BOUND = np.maximum(1.0, np.repeat(NORMS, 3))[:, None, None]  # per matrix of REALS
REALS = np.concatenate([matrices(norm) for norm in NORMS])
COMPLEXES = np.concatenate([matrices(2.0, complex_=True), matrices(20.0, complex_=True)])
THRESHOLDS = np.concatenate([near_threshold(1.0), near_threshold(-1.0)])
SINGLE = REALS[10]  # one matrix (of 1-norm 1.5): the kernel's rank-2 form
STACKS = (REALS, REALS.astype(np.float32), COMPLEXES, COMPLEXES.astype(np.complex64),
          THRESHOLDS, SINGLE, SINGLE.astype(np.float32))
GRAD_BATCH = np.concatenate([matrices(0.5, (2, 3, 3)), matrices(30.0, (2, 3, 3))])
GRAD_WEIGHTS = RNG.normal(size=(3, 3))


def weighted_loss(m):
    return np.sum(scipy.linalg.expm(m) * GRAD_WEIGHTS)


@pytest.fixture(scope="module")
def compiled():
    """The outputs of one jitted program: expm of STACKS, of SPECIAL stacked, of each of
    EMPTIES, and jit(vmap(grad(weighted_loss))) of GRAD_BATCH."""
    def program(*xs):
        stacks, special = xs[:len(STACKS)], xs[len(STACKS)]
        empties, batch = xs[len(STACKS) + 1:-1], xs[-1]
        return ([expm(x) for x in stacks], expm(special), [expm(x) for x in empties],
                tx.vmap(tx.grad(weighted_loss))(batch))

    start = time.perf_counter()
    with np.errstate(all="ignore"):
        out = tx.jit(program)(*STACKS, np.stack(SPECIAL), *EMPTIES, GRAD_BATCH)
    print(f"jit of every compiled check: first call {time.perf_counter() - start:.2f} s")
    return dict(zip(("stacks", "special", "empties", "vmap_grad"), out))


def test_jit_matches_scipy_and_compiles_fast(compiled):
    """float64 to rounding times the norm (exp's relative condition number is at least
    ||A||), float32 against a float64 reference to float32's; one program for all."""
    bound, reals, complexes, thresholds = NORM_BOUND, REALS, COMPLEXES, THRESHOLDS
    got = compiled["stacks"]
    for a, g in zip(STACKS, got):
        assert g.dtype == a.dtype and g.shape == a.shape
    want = scipy.linalg.expm(reals)
    scale = np.abs(want).max((1, 2), keepdims=True)
    assert np.all(np.abs(got[0] - want) < 2e-14 * bound * scale)
    assert np.all(np.abs(got[1] - want) < 1e-6 * bound * scale)
    want = scipy.linalg.expm(complexes)
    assert relative_error(got[2], want) < 1e-12 and relative_error(got[3], want) < 2e-5
    assert relative_error(got[4], scipy.linalg.expm(thresholds)) < 1e-13
    assert relative_error(got[5], scipy.linalg.expm(SINGLE)) < 1e-13
    assert relative_error(got[6], scipy.linalg.expm(SINGLE)) < 2e-6


def test_jit_special_matrices_as_scipy(compiled):
    """Diagonal (exact, inf kept), triangular (the other triangle exactly zero, the
    diagonal recomputed), nilpotent (no squaring), non-finite (NaN), huge and tiny."""
    got = compiled["special"]
    with np.errstate(all="ignore"):
        want = np.stack([scipy.linalg.expm(c) for c in SPECIAL])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got == 0, want == 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def _central_difference(f, a, t, h):
    return (f(a + h * t) - f(a - h * t)) / (2 * h)


def frechet(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """L(A, E) per matrix by SciPy's own Fréchet-derivative algorithm (Al-Mohy & Higham)."""
    return np.stack([scipy.linalg.expm_frechet(m, d, compute_expm=False) for m, d in zip(a, e)])


@pytest.mark.parametrize("norm", (1e-3, 3.0, 50.0))
def test_jvp_matches_central_differences_and_scipy(norm):
    a = matrices(norm, (2, 3, 3))
    t = RNG.normal(size=a.shape)
    _, tangent = tx.jvp(expm, (a,), (t,))
    scale = np.max(np.abs(tangent))
    fd = _central_difference(scipy.linalg.expm, a, t, h=1e-6 * max(1.0, norm))
    assert np.max(np.abs(tangent - fd)) < 1e-6 * scale
    assert np.max(np.abs(tangent - frechet(a, t))) < 1e-12 * scale


@pytest.mark.parametrize("a", [matrices(1e-3), matrices(50.0), near_threshold(1.0)],
                         ids=["small", "large", "threshold"])
def test_vjp_is_the_frechet_adjoint(a):
    """ct_A = L(A^T, G): <G, L(A, E)> = <L(A^T, G), E> for every E."""
    ct = RNG.normal(size=a.shape)
    (got,) = tx.vjp(expm, a)[1](ct)
    want = frechet(np.swapaxes(a, -1, -2), ct)
    assert np.max(np.abs(got - want)) < 1e-12 * np.max(np.abs(want))


def test_vmap_and_jit_vmap_grad_match_a_loop(compiled):
    a = GRAD_BATCH
    loop = np.stack([scipy.linalg.expm(m) for m in a])
    np.testing.assert_allclose(tx.vmap(expm)(a), loop, rtol=1e-12,
                               atol=1e-12 * np.abs(loop).max())
    got = compiled["vmap_grad"]  # jit(vmap(grad(weighted_loss)))
    want = frechet(np.swapaxes(a, -1, -2), np.broadcast_to(GRAD_WEIGHTS, a.shape))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


def test_second_derivatives_match_differences_of_the_gradient():
    """grad of grad and jacfwd(jacrev) (the block expm differentiated again) against
    central differences of the gradient, itself checked above."""
    a = matrices(2.0, (3, 3))
    w, v = RNG.normal(size=(3, 3)), RNG.normal(size=(3, 3))

    def loss(m):
        return np.sum(scipy.linalg.expm(m) * w)

    grad = tx.grad(loss)
    got = tx.grad(lambda m: np.sum(grad(m) * v))(a)
    hessian = tx.jacfwd(tx.jacrev(loss))(a)
    np.testing.assert_allclose(got, np.einsum("ijkl,ij->kl", hessian, v), rtol=1e-12)
    fd = _central_difference(grad, a, v, h=1e-5)  # H v (the Hessian is symmetric)
    scale = np.abs(fd).max()
    np.testing.assert_allclose(np.einsum("ijkl,kl->ij", hessian, v), fd, atol=1e-8 * scale)


def test_complex_derivatives_match_jax():
    """JAX's convention: the VJP transposes without conjugating, for complex A too."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    a = matrices(3.0, (2, 3, 3), complex_=True)
    t = RNG.normal(size=a.shape) + 1j * RNG.normal(size=a.shape)
    _, tangent = tx.jvp(expm, (a,), (t,))
    assert relative_error(tangent, frechet(a, t)) < 1e-12
    (got,) = tx.vjp(expm, a)[1](t)
    (from_jax,) = jax.vjp(jax.scipy.linalg.expm, a)[1](t)
    assert relative_error(got, np.asarray(from_jax)) < 1e-11


def test_shapes_dtypes_and_errors_as_scipy(compiled):
    for a in (np.float64(0.5), np.float32(0.5), np.array([0.5]), np.complex64(0.5j)):
        want = scipy.linalg.expm(a)  # one number: [[e^a]] in double precision
        got = traced(expm, a)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-15)
    # Empty matrices and stacks in every dtype, compiled (in the module's one program)
    outs = compiled["empties"]
    assert len(outs) == len(EMPTIES)
    for a, got in zip(EMPTIES, outs):
        want = scipy.linalg.expm(a)
        assert got.shape == want.shape and got.dtype == want.dtype, (a.shape, a.dtype)
    ints = np.array([[1, 2], [3, 4]])
    assert relative_error(traced(expm, ints), scipy.linalg.expm(ints)) < 1e-13
    one = np.array([[[0.5]], [[-2.0]]], np.float32)
    np.testing.assert_array_equal(traced(expm, one), np.exp(one))
    for bad in (np.ones(3), np.ones((2, 3))):
        with pytest.raises(TransfuseLinAlgError, match="expm") as info:
            traced(expm, bad)
        assert "test_expm.py" in str(info.value)
