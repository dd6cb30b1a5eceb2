"""np.fft and scipy.fft beyond the catalogue (tests/opinfo.py): every norm, lengths longer
and shorter than the axis, axis orders and repeats, hfft/ihfft, gradients of real losses
against JAX, vmap against a loop, jit against NumPy, and NumPy's errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from transfuse.ir import interpret
from transfuse.ir.errors import CompileError

import transfuse as tx

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 6))
Z = X + 1j * RNG.standard_normal((3, 4, 6))
NORMS = (None, "backward", "ortho", "forward")

# (function, input, keyword arguments): lengths padded and cropped, axes in every order
CASES = [
    (np.fft.fft, Z, {}), (np.fft.fft, X, dict(n=9, axis=1)), (np.fft.fft, Z, dict(n=2)),
    (np.fft.ifft, Z, dict(n=8, axis=0)), (np.fft.ifft, X, dict(axis=-2)),
    (np.fft.rfft, X, dict(n=5)), (np.fft.rfft, X, dict(n=11, axis=0)),
    (np.fft.irfft, Z, {}), (np.fft.irfft, Z, dict(n=7, axis=0)), (np.fft.irfft, X, dict(n=3)),
    (np.fft.hfft, Z, dict(axis=1)), (np.fft.hfft, Z, dict(n=5)),
    (np.fft.ihfft, X, dict(n=3)), (np.fft.ihfft, X, dict(axis=0)),
    (np.fft.fftn, Z, dict(s=(3, 5), axes=(2, 0))), (np.fft.fftn, Z, dict(axes=(1, 1))),
    (np.fft.fftn, X, dict(s=(2, -1), axes=(0, 1))), (np.fft.ifftn, Z, {}),
    (np.fft.rfftn, X, dict(axes=(2, 0))), (np.fft.rfftn, X, dict(axes=(0, 2, 2))),
    (np.fft.rfftn, X, dict(s=(5, 3), axes=(-1, 1))),
    (np.fft.irfftn, Z, dict(s=(2, 5), axes=(0, 2))), (np.fft.irfftn, Z, dict(axes=(1, 2, 1))),
    (np.fft.fft2, X, {}), (np.fft.ifft2, Z, dict(s=(5, 5))),
    (np.fft.rfft2, X.astype(np.float32), {}),
    (np.fft.irfft2, Z.astype(np.complex64), dict(axes=(0, 1))),
    (np.fft.fft, np.arange(6, dtype=np.int32), {}),
]
IDS = [f"{f.__name__}-{a.dtype}-{kw}" for f, a, kw in CASES]


def close(got, want, tol):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype,
                                                                 got.shape, want.shape)
    scale = 1 + np.max(np.abs(want), initial=0)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def tol_of(x):
    return 1e-5 if np.asarray(x).dtype in (np.float32, np.complex64) else 1e-13


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_traced_matches_numpy(case, norm):
    f, a, kw = CASES[case]
    kw = dict(kw, norm=norm)
    want = f(a, **kw)
    graph = tx.make_graph(lambda v: f(v, **kw))(a)
    close(interpret(graph, [a])[0], want, tol_of(want))


# ---------------------------------------------------------------------------------------
# Compiled: every jit check of this file is an output of one program (a fixture). Each
# program links the FFT helpers anew and pays Numba's per-program cost: one program for
# the cases, the shifts, scipy.fft, jit(grad) and jit(vmap(grad)) instead of five.

NORM_OF_CASE = [NORMS[i % len(NORMS)] for i in range(len(CASES))]  # each norm: 7 cases
SHIFTED = RNG.standard_normal((2, 7))
SCIPY_INPUT = RNG.standard_normal((3, 8)).astype(np.float32)
CONV_INPUTS = (RNG.standard_normal(9), RNG.standard_normal(5))
BATCH = RNG.standard_normal((5, 2, 8))


def shifts(v):
    return (np.fft.hfft(np.fft.ihfft(v), 7), np.fft.fftshift(v, axes=1),
            np.fft.ifftshift(np.fft.fftshift(v)), v * np.fft.fftfreq(7, 0.5),
            v[:, :4] * np.fft.rfftfreq(7))


def scipy_calls(v):
    y = scipy.fft.rfft(v, workers=2, overwrite_x=True)
    return (scipy.fft.irfft(y * 2, n=8, norm="ortho"), scipy.fft.fftshift(
        scipy.fft.fftn(v, axes=(0,))), scipy.fft.ihfft(v))


def _conv_loss(np_):
    def loss(x, k):
        spectrum = np_.fft.rfft(x, n=16) * np_.fft.rfft(k, n=16)
        y = np_.fft.irfft(spectrum, n=16)
        return np_.sum(np_.tanh(y) ** 2) + np_.sum(np_.abs(np_.fft.fft2(x[None] * k[:, None])))
    return loss


def two_spectra(x):
    return np.fft.irfft(np.fft.rfft(x, axis=0) * np.fft.fft(x, axis=1)[:, :1].real,
                        n=2, axis=0), np.fft.fft2(x, s=(3, 3), norm="ortho")


two_spectra_loss = tx.grad(lambda x: np.sum(np.abs(two_spectra(x)[1]) ** 2)
                           + np.sum(two_spectra(x)[0] ** 3))


@pytest.fixture(scope="module")
def compiled():
    """The outputs of one jitted program: every case in its norm, the shifts, the
    scipy.fft calls, the gradient of the convolution loss, the batched gradient."""
    n = len(CASES)

    def program(*xs):
        cases = tuple(f(x, **dict(kw, norm=norm))
                      for (f, _, kw), x, norm in zip(CASES, xs[:n], NORM_OF_CASE))
        shifted, scipys, x, k, batch = xs[n:]
        return (cases, shifts(shifted), scipy_calls(scipys),
                tx.grad(_conv_loss(np), argnums=(0, 1))(x, k), tx.vmap(two_spectra_loss)(batch))

    out = tx.jit(program)(*(a for _, a, _ in CASES), SHIFTED, SCIPY_INPUT, *CONV_INPUTS, BATCH)
    return dict(zip(("cases", "shifts", "scipy", "grad", "vmap_grad"), out))


def test_jit_matches_numpy_in_every_norm(compiled):
    """Every case compiled, each in one norm, the norms taken in turn (each norm meets
    seven cases of different transforms). A norm is a constant factor the tracer applies
    after the transform, so the compiled transforms are the same in every norm; every
    case in every norm is checked traced above."""
    want = [f(a, **dict(kw, norm=norm)) for (f, a, kw), norm in zip(CASES, NORM_OF_CASE)]
    assert len(compiled["cases"]) == len(want)
    for g, w in zip(compiled["cases"], want):
        close(g, w, tol_of(w))
    assert set(NORM_OF_CASE) == set(NORMS)


def test_hfft_inverts_ihfft_and_shifts(compiled):
    for got, want in zip(compiled["shifts"], shifts(SHIFTED)):
        close(got, want, 1e-13)
    close(compiled["shifts"][0], SHIFTED, 1e-13)


def test_grad_of_a_real_loss_matches_jax(jax64, compiled):
    jnp = jax64.numpy
    x, k = CONV_INPUTS
    got = tx.grad(_conv_loss(np), argnums=(0, 1))(x, k)
    want = jax64.grad(_conv_loss(jnp), argnums=(0, 1))(x, k)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-10, atol=1e-12)
    for g, w in zip(compiled["grad"], want):  # jit(grad)
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
def test_complex_gradients_match_jax(jax64, norm):
    """JAX's convention for complex inputs (grad = d/dx - i d/dy), through every norm and
    the halved spectra of irfft/hfft (whose zero and Nyquist imaginary parts are ignored)."""
    jnp = jax64.numpy
    z = Z[0]

    def loss(np_):
        def f(v):
            a = np_.fft.irfft(v, n=6, norm=norm)
            b = np_.fft.hfft(v, n=7, norm=norm)
            c = np_.fft.ifftn(v, s=(3, 5), norm=norm)
            return np_.sum(a * a) + np_.sum(np_.sin(b)) + np_.sum(np_.abs(c) ** 2)
        return f

    got = tx.grad(loss(np))(z)
    want = np.asarray(jax64.grad(loss(jnp))(z))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_vmap_matches_a_loop(compiled):
    batch, f, loss = BATCH, two_spectra, two_spectra_loss
    for got, single in ((tx.vmap(f)(batch), f), (tx.vmap(loss)(batch), loss),
                        (compiled["vmap_grad"], loss)):  # the last: jit(vmap(grad))
        for k, x in enumerate(batch):
            want = single(x)
            for g, w in zip(got if isinstance(got, tuple) else (got,),
                            want if isinstance(want, tuple) else (want,)):
                np.testing.assert_allclose(g[k], w, rtol=1e-12, atol=1e-12)


def test_jacobians_agree():
    x = RNG.standard_normal(6)
    f = lambda v: np.fft.rfft(v, n=8, norm="ortho").imag  # noqa: E731
    np.testing.assert_allclose(tx.jacfwd(f)(x), tx.jacrev(f)(x), atol=1e-14)
    exact = np.fft.rfft(np.eye(8)[:6], norm="ortho").imag.T
    np.testing.assert_allclose(tx.jacrev(f)(x), exact, atol=1e-14)


def test_scipy_fft_traces(compiled):
    x = SCIPY_INPUT
    for got, want in zip(compiled["scipy"], scipy_calls(x)):
        close(got, want, 1e-5)
    assert tx.scipy.fft.fft2(x).dtype == np.complex64  # NumPy arrays: SciPy's own


@pytest.mark.parametrize("call,error,match", [
    (lambda v: np.fft.fft(v[0, 0, 0]), IndexError, "0-d"),
    (lambda v: np.fft.fft(v, n=0), ValueError, r"Invalid number of FFT data points \(0\)"),
    (lambda v: np.fft.fft(v[:, :, :0]), ValueError, r"Invalid number of FFT data points \(0\)"),
    (lambda v: np.fft.irfft(v[..., :1]), ValueError, r"Invalid number of FFT data points \(0\)"),
    (lambda v: np.fft.fft(v, norm="unitary"), ValueError, "Invalid norm value unitary"),
    (lambda v: np.fft.rfft(v * 1j), TypeError, "real input"),
    (lambda v: np.fft.fftn(v, s=(2, 3), axes=(0,)), ValueError, "different lengths"),
    (lambda v: np.fft.fft(v, axis=3), IndexError, "out of bounds"),
])
def test_numpy_errors(call, error, match):
    with pytest.raises(error):
        call(X)  # NumPy raises it too
    with pytest.raises(error, match=match):
        tx.make_graph(call)(X)


def test_cuda_refuses_naming_the_primitive():
    with pytest.raises(CompileError, match=r"fft \(rfft: np.fft/scipy.fft\) has no CUDA "
                                           r"kernel"):
        tx.jit(lambda v: np.fft.rfft(v), device="cuda", cache=False).lower(X)
