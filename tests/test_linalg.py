"""np.linalg under every transform (issue #14, linear-algebra slice): values against NumPy,
JVPs against central finite differences, VJPs against the JVPs and against JAX, vmap
against a loop, jit against the reference interpreter, stacked and empty inputs."""

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


B = RNG.normal(size=(2, 4, 3))
B_VEC = RNG.normal(size=4)

# name -> (function of one matrix stack, input maker, symmetric tangents?)
CASES = {
    "inv": (np.linalg.inv, general, False),
    "solve_matrix": (lambda a: np.linalg.solve(a, B), general, False),
    "solve_vector": (lambda a: np.linalg.solve(a, B_VEC), general, False),
    "det": (np.linalg.det, general, False),
    "slogdet": (lambda a: np.linalg.slogdet(a)[1], general, False),
    "slogdet_sign": (lambda a: np.linalg.slogdet(a)[0] * 2.0, general, False),
    "cholesky": (np.linalg.cholesky, spd, True),
    "cholesky_upper": (lambda a: np.linalg.cholesky(a, upper=True), spd, True),
    "eigvalsh": (np.linalg.eigvalsh, spd, True),
    "eigvalsh_upper": (lambda a: np.linalg.eigvalsh(a, UPLO="U"), spd, True),
    # eigenvectors up to sign: fix each column's sign by its first entry
    "eigh_vectors": (lambda a: np.linalg.eigh(a)[1] * np.sign(np.linalg.eigh(a)[1][..., :1, :]),
                     spd, True),
    "matrix_power_3": (lambda a: np.linalg.matrix_power(a, 3), general, False),
    "matrix_power_-2": (lambda a: np.linalg.matrix_power(a, -2), general, False),
    "matrix_power_0": (lambda a: np.linalg.matrix_power(a, 0) * a, general, False),
    "norm_fro": (lambda a: np.linalg.norm(a, axis=(-2, -1)), general, False),
    "norm_1": (lambda a: np.linalg.norm(a, ord=1, axis=(-2, -1)), general, False),
    "norm_inf_keepdims": (lambda a: np.linalg.norm(a, ord=np.inf, axis=(-2, -1),
                                                   keepdims=True), general, False),
    "norm_vector_3": (lambda a: np.linalg.norm(a, ord=3, axis=-1), general, False),
    "norm_vector_2": (lambda a: np.linalg.norm(a, axis=-2), general, False),
}
SHAPE = (2, 4, 4)


def _input(name: str, dtype=np.float64) -> np.ndarray:
    return CASES[name][1](SHAPE, dtype)


def _tangent(name: str, x: np.ndarray) -> np.ndarray:
    t = RNG.normal(size=x.shape)
    return symmetric(t) if CASES[name][2] else t


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_traced_values_and_dtypes_match_numpy(name, dtype):
    f = CASES[name][0]
    x = _input(name, dtype)
    want, got = f(x), traced(f, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jvp_matches_central_differences(name):
    f = CASES[name][0]
    x = _input(name)
    t = _tangent(name, x)
    _, jvp_out = tx.jvp(f, (x,), (t,))
    h = 1e-6
    fd = (f(x + h * t) - f(x - h * t)) / (2 * h)
    np.testing.assert_allclose(jvp_out, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vjp_is_the_transpose_of_the_jvp(name):
    f = CASES[name][0]
    x = _input(name)
    t = _tangent(name, x)
    out, jvp_out = tx.jvp(f, (x,), (t,))
    ct = RNG.normal(size=np.shape(out))
    _, vjp_fn = tx.vjp(f, x)
    (x_ct,) = vjp_fn(ct)
    np.testing.assert_allclose(np.sum(x_ct * t), np.sum(ct * jvp_out), rtol=1e-10,
                               atol=1e-12)
    if CASES[name][2]:  # a symmetric input's cotangent is symmetric (JAX's convention)
        np.testing.assert_allclose(x_ct, symmetric(x_ct), atol=1e-13)


JAX_CASES = {
    "inv": lambda jnp, a: jnp.linalg.inv(a),
    "solve_matrix": lambda jnp, a: jnp.linalg.solve(a, B),
    "det": lambda jnp, a: jnp.linalg.det(a),
    "slogdet": lambda jnp, a: jnp.linalg.slogdet(a)[1],
    "cholesky": lambda jnp, a: jnp.linalg.cholesky(a),
    "eigvalsh": lambda jnp, a: jnp.linalg.eigvalsh(a),
    "matrix_power_3": lambda jnp, a: jnp.linalg.matrix_power(a, 3),
    "norm_fro": lambda jnp, a: jnp.linalg.norm(a, axis=(-2, -1)),
}


@pytest.mark.parametrize("name", sorted(JAX_CASES))
def test_vjp_matches_jax_float64(name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    x = _input(name)
    out = CASES[name][0](x)
    ct = RNG.normal(size=np.shape(out))
    _, jax_vjp = jax.vjp(lambda a: JAX_CASES[name](jnp, a), x)
    (want,) = jax_vjp(ct)
    _, vjp_fn = tx.vjp(CASES[name][0], x)
    (got,) = vjp_fn(ct)
    if CASES[name][2]:  # JAX's cotangent of a symmetric input may be its lower part alone
        want, got = symmetric(np.asarray(want)), symmetric(got)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_and_vmap_grad_match_a_loop(name):
    f = CASES[name][0]
    x = _input(name)
    np.testing.assert_allclose(tx.vmap(f)(x), np.stack([f(m) for m in x]), rtol=1e-12,
                               atol=1e-12)

    def loss(m):
        return np.sum(f(m) ** 2)

    grads = tx.vmap(tx.grad(loss))(x)
    np.testing.assert_allclose(grads, np.stack([tx.grad(loss)(m) for m in x]), rtol=1e-10,
                               atol=1e-12)


def test_vmap_of_an_unbatched_matrix_and_batched_right_hand_sides():
    a = general((4, 4))
    rhs = RNG.normal(size=(5, 4))
    got = tx.vmap(lambda v: np.linalg.solve(a, v))(rhs)
    np.testing.assert_allclose(got, np.stack([np.linalg.solve(a, v) for v in rhs]),
                               rtol=1e-12)
    got = tx.vmap(np.linalg.solve, in_dims=(None, 0))(a, rhs)
    np.testing.assert_allclose(got, np.linalg.solve(a, rhs.T).T, rtol=1e-12)


# Each compile costs about a second: every case in float64, the primitives in float32.
JIT_CASES = [(name, np.float64) for name in sorted(CASES)] + [
    (name, np.float32) for name in ("inv", "slogdet", "cholesky", "eigvalsh")]


@pytest.mark.parametrize(("name", "dtype"), JIT_CASES)
def test_jit_matches_the_interpreter(name, dtype):
    f = CASES[name][0]
    x = _input(name, dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(tx.jit(f)(x), traced(f, x), rtol=tol, atol=tol)


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


def test_small_solves_and_choleskys_compile_to_ptx():
    pytest.importorskip("numba_cuda")
    from transfuse.runtime import cuda as cuda_runtime

    a = spd((6, 5, 5))
    for f in (np.linalg.cholesky, np.linalg.inv, lambda m: np.linalg.solve(m, m[..., :1])):
        low = tx.jit(f, device="cuda", cache=False).lower(a)
        module = cuda_runtime.load_program(low.source, "linalg", disk=False)
        ptx = cuda_runtime.kernel_ptx(module.module, low.kernels, cc=(7, 5))
        assert ptx and all(".visible .entry" in text for text in ptx.values())


# ---------------------------------------------------------------------------------------
# SVD, QR and what is built on them


def tall(shape):
    return RNG.normal(size=shape)


def _signs(u):
    """Each singular vector's sign fixed by its first entry (they are unique up to sign)."""
    return np.sign(u[..., :1, :])


SVD_CASES = {
    "singular_values": lambda a: np.linalg.svd(a, compute_uv=False),
    "svdvals": lambda a: np.linalg.svdvals(a),
    "u": lambda a: (lambda u, s, vt: u * _signs(u))(*np.linalg.svd(a, full_matrices=False)),
    "vt": lambda a: (lambda u, s, vt: vt * np.swapaxes(_signs(u), -1, -2))(
        *np.linalg.svd(a, full_matrices=False)),
    "pinv": np.linalg.pinv,
    "norm_2": lambda a: np.linalg.norm(a, 2, axis=(-2, -1)),
    "norm_nuc": lambda a: np.linalg.norm(a, "nuc", axis=(-2, -1)),
    "cond": lambda a: np.linalg.cond(a[..., :3, :3]),
    "lstsq": lambda a: np.linalg.lstsq(a[0], a[1][:, :2], rcond=None)[0],
}
QR_CASES = {
    "q": lambda a: (lambda q, r: q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :])(
        *np.linalg.qr(a)),
    "r": lambda a: np.linalg.qr(a)[1] * np.sign(np.diagonal(np.linalg.qr(a)[1], axis1=-2,
                                                            axis2=-1))[..., :, None],
    "r_mode": lambda a: np.abs(np.linalg.qr(a, mode="r")),
}


# QR's derivative needs at least as many rows as columns (as in JAX): no wide QR cases.
SVD_QR_PARAMS = [(name, shape) for shape in [(2, 5, 3), (2, 3, 5), (2, 4, 4)]
                 for name in sorted(SVD_CASES) + sorted(QR_CASES)
                 if not (name in QR_CASES and shape[-2] < shape[-1])]


@pytest.mark.parametrize(("name", "shape"), SVD_QR_PARAMS)
def test_svd_and_qr_values_jvp_vjp_vmap(name, shape):
    f = {**SVD_CASES, **QR_CASES}[name]
    a = tall(shape)
    want = f(a)
    np.testing.assert_allclose(traced(f, a), want, rtol=1e-11, atol=1e-12)
    t = RNG.normal(size=shape)
    out, jvp_out = tx.jvp(f, (a,), (t,))
    h = 1e-6
    np.testing.assert_allclose(jvp_out, (f(a + h * t) - f(a - h * t)) / (2 * h), rtol=1e-5,
                               atol=1e-6)
    ct = RNG.normal(size=np.shape(out))
    (a_ct,) = tx.vjp(f, a)[1](ct)
    np.testing.assert_allclose(np.sum(a_ct * t), np.sum(ct * jvp_out), rtol=1e-9, atol=1e-11)
    if name != "lstsq":
        np.testing.assert_allclose(tx.vmap(f)(a), np.stack([f(m) for m in a]), rtol=1e-11,
                                   atol=1e-12)


@pytest.mark.parametrize("name", ["u", "pinv", "q"])
def test_svd_and_qr_compile(name):
    f = {**SVD_CASES, **QR_CASES}[name]
    a = tall((2, 5, 3))
    np.testing.assert_allclose(tx.jit(f)(a), f(a), rtol=1e-11, atol=1e-12)


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
        np.testing.assert_allclose(tx.jit(f)(a), want, rtol=1e-12)
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
        np.testing.assert_allclose(tx.jit(f)(a), want, rtol=1e-12)
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
