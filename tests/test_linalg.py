"""np.linalg beyond the catalogue: vmap(grad), jit of vmap(grad), empty matrices, NumPy's
broadcasting and dtypes, a Gaussian process, errors, SciPy's routing.

Every np.linalg and scipy.linalg function is a catalogue entry (tests/opinfo.py: stacked,
single and empty inputs, positive-definite and well-conditioned domains); tests/test_opinfo.py
checks it against NumPy, central differences, JAX, a loop, the interpreter under jit, and
CUDA (a kernel, or the build-time refusal)."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.ir.errors import CompileError, TransfuseLinAlgError

import transfuse as tx
from tests.helpers import traced

RNG = np.random.default_rng(20261206)


def spd(shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Well-conditioned symmetric positive-definite matrices of shape (..., n, n)."""
    a = RNG.normal(size=shape)
    n = shape[-1]
    return (a @ np.swapaxes(a, -1, -2) / n + np.eye(n)).astype(dtype)


def general(shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Well-conditioned general square matrices (diagonally weighted)."""
    return (RNG.normal(size=shape) + 3 * np.eye(shape[-1])).astype(dtype)


def symmetric(x: np.ndarray) -> np.ndarray:
    return (x + np.swapaxes(x, -1, -2)) / 2


# name -> a function of one matrix stack, and its input maker (vmap(grad) of every
# np.linalg function against a loop: tests/test_opinfo.py)
CASES = {
    "inv": (np.linalg.inv, general),
    "det": (np.linalg.det, general),
    "slogdet": (lambda a: np.linalg.slogdet(a)[1], general),
    "cholesky": (np.linalg.cholesky, spd),
    "eigvalsh": (np.linalg.eigvalsh, spd),
}
SHAPE = (2, 4, 4)


def _input(name: str, dtype=np.float64) -> np.ndarray:
    return CASES[name][1](SHAPE, dtype)


def test_vmap_of_an_unbatched_matrix_and_batched_right_hand_sides():
    a = general((4, 4))
    rhs = RNG.normal(size=(5, 4))
    got = tx.vmap(lambda v: np.linalg.solve(a, v))(rhs)
    np.testing.assert_allclose(got, np.stack([np.linalg.solve(a, v) for v in rhs]),
                               rtol=1e-12)
    got = tx.vmap(np.linalg.solve, in_dims=(None, 0))(a, rhs)
    np.testing.assert_allclose(got, np.linalg.solve(a, rhs.T).T, rtol=1e-12)


@pytest.mark.parametrize("name", ["inv", "slogdet", "cholesky", "eigvalsh"])
def test_jit_of_vmap_grad_matches_the_interpreter(name):
    f = CASES[name][0]
    x = _input(name)
    per_matrix = tx.vmap(tx.grad(lambda m: np.sum(f(m) ** 2)))
    np.testing.assert_allclose(tx.jit(per_matrix)(x), per_matrix(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 3, 3), (2, 0, 0), (0, 0)])
@pytest.mark.parametrize("name", ["inv", "det", "slogdet", "cholesky", "eigvalsh"])
def test_empty_stacks_and_empty_matrices(name, shape):
    f = CASES[name][0]
    x = np.zeros(shape) + (np.eye(shape[-1]) if shape[-1] else 0)
    want = f(x)
    runs = [traced(f, x)]
    if name in ("inv", "slogdet") and shape != (0, 0):  # compiles: two kernels suffice
        runs.append(tx.jit(f)(x))
    for got in runs:
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_solve_broadcasts_stacks_as_numpy_does():
    a = general((3, 1, 4, 4))
    b = RNG.normal(size=(2, 4, 5))
    want = np.linalg.solve(a, b)
    got = traced(np.linalg.solve, a, b)
    assert got.shape == want.shape == (3, 2, 4, 5)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_integer_matrices_give_float64_as_in_numpy():
    a = np.array([[2, 1], [1, 3]])
    for f in (np.linalg.inv, np.linalg.det, np.linalg.cholesky):
        got = tx.jit(lambda m, f=f: f(m))(a)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, f(a), rtol=1e-14)


def test_multi_dot_tensorsolve_and_tensorinv():
    mats = [RNG.normal(size=s) for s in [(5,), (5, 3), (3, 7), (7,)]]
    np.testing.assert_allclose(traced(lambda *m: np.linalg.multi_dot(m), *mats),
                               np.linalg.multi_dot(mats), rtol=1e-12)
    a = general((6, 6)).reshape(2, 3, 6)
    b = RNG.normal(size=(2, 3))
    np.testing.assert_allclose(traced(np.linalg.tensorsolve, a, b),
                               np.linalg.tensorsolve(a, b), rtol=1e-12)
    t = general((6, 6)).reshape(6, 2, 3)
    np.testing.assert_allclose(traced(lambda x: np.linalg.tensorinv(x, ind=1), t),
                               np.linalg.tensorinv(t, ind=1), rtol=1e-12)
    g = tx.grad(lambda m: np.sum(np.linalg.multi_dot([m, m.T, m])))(mats[2])
    h = 1e-6
    e = np.zeros_like(mats[2])
    e[1, 2] = 1

    def f(m):
        return np.sum(np.linalg.multi_dot([m, m.T, m]))
    assert np.isclose(g[1, 2], (f(mats[2] + h * e) - f(mats[2] - h * e)) / (2 * h),
                      rtol=1e-6)


def test_gaussian_process_likelihood_gradient():
    """A GP negative log-likelihood (cholesky + solve + slogdet) and its hyper-gradient."""
    x = np.sort(RNG.uniform(-3, 3, size=40))
    y = np.sin(x) + 0.1 * RNG.normal(size=40)

    def nll(params, x, y):
        log_scale, log_noise = params[0], params[1]
        d2 = (x[:, None] - x[None, :]) ** 2
        k = np.exp(-0.5 * d2 / np.exp(2 * log_scale)) + np.exp(2 * log_noise) * np.eye(x.size)
        low = np.linalg.cholesky(k)
        alpha = np.linalg.solve(k, y)
        return 0.5 * y @ alpha + np.sum(np.log(np.diagonal(low))) + 0.5 * np.linalg.slogdet(
            k)[1] * 0.0

    params = np.array([0.2, -1.5])
    g = tx.jit(tx.grad(nll))(params, x, y)
    h = 1e-6
    fd = np.array([(nll(params + h * e, x, y) - nll(params - h * e, x, y)) / (2 * h)
                   for e in np.eye(2)])
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_bad_shapes_are_linalg_errors_at_the_users_line():
    with pytest.raises(TransfuseLinAlgError, match="square") as info:
        traced(lambda a: np.linalg.inv(a), np.ones((2, 3)))
    assert isinstance(info.value, np.linalg.LinAlgError)
    assert "test_linalg.py" in str(info.value)


@pytest.mark.parametrize("f", [np.linalg.eigvalsh, np.linalg.slogdet,
                               lambda a: np.linalg.solve(a, np.ones(40))])
def test_cuda_refuses_what_it_has_no_kernel_for_when_the_program_is_built(f):
    """eigh and slogdet have no CUDA kernel; solve and cholesky run a thread a matrix up
    to 32x32 (tests/test_cuda_sim.py runs them), larger ones are refused."""
    a = spd((40, 40)) if f not in (np.linalg.eigvalsh, np.linalg.slogdet) else spd((3, 3))
    with pytest.raises(CompileError, match="CUDA kernel") as info:
        tx.jit(f, device="cuda", cache=False).lower(a)
    assert "test_linalg.py" in str(info.value) or "CPU" in str(info.value)


# ---------------------------------------------------------------------------------------
# SVD, QR and what is built on them


def tall(shape):
    return RNG.normal(size=shape)


def test_complete_qr_and_full_svd_values_under_jit():
    a = tall((5, 3))
    q, r = tx.jit(lambda m: np.linalg.qr(m, mode="complete"))(a)
    assert q.shape == (5, 5) and r.shape == (5, 3)
    np.testing.assert_allclose(q @ r, a, atol=1e-13)
    np.testing.assert_allclose(q.T @ q, np.eye(5), atol=1e-13)
    u, s, vt = tx.jit(lambda m: np.linalg.svd(m))(a)
    assert u.shape == (5, 5) and vt.shape == (3, 3)
    np.testing.assert_allclose(s, np.linalg.svd(a, compute_uv=False), rtol=1e-13)
    np.testing.assert_allclose(u[:, :3] * s @ vt, a, atol=1e-13)


def test_derivatives_that_are_not_unique_are_errors():
    from transfuse.ir.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="full_matrices"):
        tx.grad(lambda m: np.sum(np.linalg.svd(m)[0]))(tall((5, 3)))
    with pytest.raises(UnsupportedError, match="qr"):
        tx.grad(lambda m: np.sum(np.linalg.qr(m)[1]))(tall((3, 5)))


def test_matrix_rank_and_lstsq_outputs():
    a = np.diag([3.0, 2.0, 0.0])
    assert traced(lambda m: np.linalg.matrix_rank(m), a) == np.linalg.matrix_rank(a) == 2
    m, b = tall((6, 3)), RNG.normal(size=6)
    got = traced(lambda m, b: np.linalg.lstsq(m, b, rcond=None), m, b)
    for g, w in zip(got, np.linalg.lstsq(m, b, rcond=None)):
        np.testing.assert_allclose(g, w, rtol=1e-11)


# ---------------------------------------------------------------------------------------
# scipy.linalg


def test_scipy_cholesky_solvers_trace_through_the_module():
    import scipy.linalg

    a = spd((4, 4))
    b = RNG.normal(size=(4, 2))

    def gp_solve(m):
        factor = scipy.linalg.cho_factor(m, lower=True)
        return scipy.linalg.cho_solve(factor, b)

    def upper_solve(m):
        factor = scipy.linalg.cho_factor(m)
        return scipy.linalg.cho_solve(factor, b[:, 0])

    def triangular(m):
        low = scipy.linalg.cholesky(m, lower=True)
        return scipy.linalg.solve_triangular(low, b, lower=True, trans="T")

    for f in (gp_solve, upper_solve, triangular):
        want = f(a)
        np.testing.assert_allclose(traced(f, a), want, rtol=1e-12)
        t = symmetric(RNG.normal(size=a.shape))
        _, jvp_out = tx.jvp(f, (a,), (t,))
        h = 1e-6
        np.testing.assert_allclose(jvp_out, (f(a + h * t) - f(a - h * t)) / (2 * h),
                                   rtol=1e-6, atol=1e-8)
    assert scipy.linalg.cho_solve.__module__.startswith("scipy")  # restored after tracing


def test_scipy_function_imported_by_name_is_a_clear_error():
    from scipy.linalg import solve_triangular
    from transfuse.ir.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="SciPy") as info:
        tx.grad(lambda m: np.sum(solve_triangular(m, np.ones(3))))(spd((3, 3)))
    assert "test_linalg.py" in str(info.value)
    assert "transfuse.scipy.linalg" in str(info.value)


def test_transfuse_scipy_namespace():
    a = spd((3, 3))
    b = RNG.normal(size=3)
    x = tx.jit(lambda m: tx.scipy.linalg.cho_solve(tx.scipy.linalg.cho_factor(m), b))(a)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-12)


@pytest.mark.parametrize("trans", [0, 1])
def test_scipy_lu_factor_and_lu_solve(trans):
    import scipy.linalg

    a = general((5, 5))
    b = RNG.normal(size=(5, 2))

    def solve(m):
        return scipy.linalg.lu_solve(scipy.linalg.lu_factor(m), b, trans=trans)

    def factor(m):
        return scipy.linalg.lu_factor(m)[0]

    for f in (solve, factor):
        want = f(a)
        np.testing.assert_allclose(traced(f, a), want, rtol=1e-12)
        t = RNG.normal(size=a.shape)
        out, jvp_out = tx.jvp(f, (a,), (t,))
        h = 1e-6
        np.testing.assert_allclose(jvp_out, (f(a + h * t) - f(a - h * t)) / (2 * h),
                                   rtol=1e-6, atol=1e-7)
        ct = RNG.normal(size=out.shape)
        (a_ct,) = tx.vjp(f, a)[1](ct)
        np.testing.assert_allclose(np.sum(a_ct * t), np.sum(ct * jvp_out), rtol=1e-10)
    pivots = traced(lambda m: scipy.linalg.lu_factor(m)[1], a)
    np.testing.assert_array_equal(pivots, scipy.linalg.lu_factor(a)[1])
    stack = general((3, 4, 4))
    per_matrix = tx.vmap(tx.grad(lambda m: np.sum(factor(m) ** 2)))
    np.testing.assert_allclose(tx.jit(per_matrix)(stack), per_matrix(stack), rtol=1e-10)
