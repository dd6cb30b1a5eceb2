"""Complex numbers: values, derivatives (JAX's convention), transforms and errors.

Derivatives are checked three ways: the JVP against central finite differences along a
complex direction (exact for any function of z viewed as a function of (Re z, Im z)), the
VJP against the JVP through the identity that defines JAX's convention — the VJP is the
transpose for the bilinear pairing <u, v> = Re(sum(u * v)), so
Re(sum(ct * jvp(t))) == Re(sum(vjp(ct) * t)) for every t and ct — and both against JAX
float64 where JAX is installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from transfuse.ir.errors import DTypeError

import transfuse as tx
from tests.helpers import rand

RNG_SEED = 7


def crand(shape, dtype=np.complex128, seed=RNG_SEED):
    return rand(np.random.default_rng(seed), shape, dtype)


def jax_or_none():
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


# ---------------------------------------------------------------------------------------
# Values: compiled against NumPy complex128 (complex64 against the complex128 value)

UNARY = ["exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "arcsin",
         "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "expm1", "log1p", "reciprocal",
         "negative", "square", "sign", "conjugate", "absolute", "angle", "real", "imag"]


def _unary_all(z):
    return [getattr(np, name)(z) for name in UNARY]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_elementwise_functions_match_numpy(dtype):
    shapes = [(3, 4), (), (0, 3)]  # one compile for the usual shape, 0-d and size 0
    zs = [crand(shape, dtype) for shape in shapes]
    got = tx.jit(lambda *zs: [_unary_all(z) for z in zs])(*zs)
    rtol = 2e-6 if dtype == np.complex64 else 1e-14
    for z, got_z in zip(zs, got):
        expected = _unary_all(z.astype(np.complex128))
        for name, g, e in zip(UNARY, got_z, expected):
            assert g.dtype == np.asarray(getattr(np, name)(z)).dtype, name
            scale = np.maximum(np.abs(e), 1.0)
            assert np.all(np.abs(g - e) <= rtol * 4 * scale), name


def test_tiny_arguments_keep_expm1_and_log1p_accurate():
    # Against mpmath (NumPy's own complex log1p is log|1 + z|, inaccurate for tiny z).
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    z = np.array([1e-10 + 2e-10j, -3e-12 + 1e-13j, 0.3 - 0.2j, 40 + 3j, -0.9 + 1e-9j])
    got = tx.jit(lambda z: (np.expm1(z), np.log1p(z)))(z)
    for g, fn in zip(got, (mpmath.expm1, mpmath.log1p)):
        exact = np.array([complex(fn(mpmath.mpc(v.real, v.imag))) for v in z])
        np.testing.assert_allclose(g.real, exact.real, rtol=1e-14)
        np.testing.assert_allclose(g.imag, exact.imag, rtol=1e-14)


def test_arithmetic_promotes_like_numpy():
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    z = crand((3,), np.complex64)

    def f(x, z):
        return x * z, x + 1j, z / 2.5, z ** 2, z ** z, 2.0 ** z, x.astype(np.complex128) - z

    got, expected = tx.jit(f)(x, z), f(x, z)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=2e-5 if e.dtype == np.complex64 else 1e-12)


def test_comparisons_order_lexicographically_as_numpy():
    re = np.array([1.0, 1.0, 2.0, np.nan, 1.0, 0.0])
    z = re + 1j * np.array([1.0, 2.0, 0.0, 0.0, np.nan, -1.0])
    w = np.array([1.0 + 2j, 1.0 + 1j, 1.0 + 5j, 1.0 + 0j, 2.0 + 0j, 0.0 - 1j])
    ops = (np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal)
    got = tx.jit(lambda z, w: [op(z, w) for op in ops])(z, w)
    with np.errstate(invalid="ignore"):  # NumPy warns comparing NaNs
        for op, g in zip(ops, got):
            np.testing.assert_array_equal(g, op(z, w), err_msg=op.__name__)


def test_nan_and_inf_tests_look_at_both_parts():
    z = np.array([1 + 1j, np.nan + 0j, 1j * np.inf, complex(1, np.nan), -np.inf + 0j])
    got = tx.jit(lambda z: (np.isnan(z), np.isinf(z), np.isfinite(z)))(z)
    for g, e in zip(got, (np.isnan(z), np.isinf(z), np.isfinite(z))):
        np.testing.assert_array_equal(g, e)


def test_casts_between_complex_and_real_keep_the_real_part():
    z = crand((4,))
    got = tx.jit(lambda z: (z.astype(np.float32), z.astype(np.int64), z.astype(bool),
                            np.real(z).astype(np.complex64)))(z)
    with np.errstate(all="ignore"), pytest.warns(np.exceptions.ComplexWarning):
        expected = (z.astype(np.float32), z.astype(np.int64))
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], z.astype(bool))
    np.testing.assert_array_equal(got[3], z.real.astype(np.complex64))


def test_division_by_zero_gives_numpys_inf_and_nan():
    a = np.array([1 + 1j, 0j, 2 - 1j, np.inf + 0j, 3 + 4j])
    b = np.array([0j, 0j, 1e300 + 1e300j, 1 + 1j, 1e-200 + 0j])
    f = tx.jit(lambda a, b: (a / b, 1 / b, np.reciprocal(b), b ** -2))
    with np.errstate(all="ignore"):
        for got, want in zip(f(a, b), (a / b, 1 / b, np.reciprocal(b), b ** -2)):
            np.testing.assert_array_equal(got, want)


def _exact_sum(z: np.ndarray) -> complex:
    return complex(math.fsum(z.real.astype(np.float64).ravel()),
                   math.fsum(z.imag.astype(np.float64).ravel()))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_sums_meet_numpys_pairwise_bound(dtype):
    # A plain running sum of 10**6 complex64 numbers errs by ~1e-2 relative; NumPy's
    # pairwise sum (and transfuse's, which splits the parts into real compensated sums)
    # by eps * log2(n).
    n = 10**6
    z = (np.full(n, 0.1) + 1j * np.full(n, 0.3)).astype(dtype)
    got = tx.jit(np.sum)(z)
    exact = _exact_sum(z)
    eps = np.finfo(np.float32 if dtype == np.complex64 else np.float64).eps
    bound = eps * math.log2(n) * np.sum(np.abs(z.astype(np.complex128)))
    assert abs(got - exact) <= bound
    mean = tx.jit(np.mean)(z)
    assert abs(mean - exact / n) <= bound / n


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_matmul_and_einsum_match_a_float64_reference(dtype):
    a, b = crand((5, 40, 7), dtype, 1), crand((7, 3), dtype, 2)
    v = crand((40,), dtype, 3)
    got = tx.jit(lambda a, b, v: (a @ b, np.einsum("bij,i->bj", a, v), np.dot(v, v)))(a, b, v)
    wide = [x.astype(np.complex128) for x in (a, b, v)]
    expected = (wide[0] @ wide[1], np.einsum("bij,i->bj", wide[0], wide[2]),
                np.dot(wide[2], wide[2]))
    tol = 1e-5 if dtype == np.complex64 else 1e-13
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol * 10)


def test_reductions_scans_and_statistics_of_complex_arrays():
    z = crand((4, 5))

    def f(z):
        return (np.sum(z, axis=1), np.prod(z[:, :3], axis=0), np.cumsum(z, 0), np.cumprod(z, 1),
                np.mean(z, 0), np.var(z, 1), np.std(z), z.sum(keepdims=True))

    for g, e in zip(tx.jit(f)(z), f(z)):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-12)


def test_real_only_operations_refuse_complex_with_a_clear_error():
    z = crand((3,))
    for fn, name in [(np.floor, "floor"), (lambda z: np.maximum(z, z), "max"),
                     (np.max, "reduce_max"), (np.argmax, "argmax"),
                     (lambda z: np.arctan2(z, z), "arctan2")]:
        with pytest.raises(DTypeError, match=name):
            tx.jit(fn)(z)


# ---------------------------------------------------------------------------------------
# Derivatives


def _programs(np_):
    """Real- and complex-valued programs of complex inputs (np_ is numpy or jax.numpy)."""
    return {
        "abs2": lambda z, w: np_.sum(np_.abs(z * w + np_.sin(z)) ** 2),
        "parts": lambda z, w: np_.sum(np_.real(z) * np_.imag(w) + np_.angle(z * w)),
        "conj": lambda z, w: np_.real(np_.sum(np_.conj(z) * np_.exp(w) / (1.5 + z * z))),
        "holo": lambda z, w: np_.tanh(z) * np_.log(w) + z ** 3 * np_.sqrt(w),
        "mixed": lambda z, w: np_.exp(np_.conj(z)) * np_.abs(w) + z @ w,
        "linalg": lambda z, w: np_.outer(z, w) @ np_.conj(w) - np_.cumsum(z * w),
    }


PROGRAMS = _programs(np)
INPUTS = (crand((3,), seed=11) + 1.5, crand((3,), seed=12) + 2.0)


def _finite_difference(f, args, tangents, h=1e-6):
    plus = f(*[a + h * t for a, t in zip(args, tangents)])
    minus = f(*[a - h * t for a, t in zip(args, tangents)])
    return (np.asarray(plus) - np.asarray(minus)) / (2 * h)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_jvp_matches_finite_differences_along_complex_directions(name):
    f = PROGRAMS[name]
    tangents = (crand((3,), seed=21), crand((3,), seed=22))
    _, jvp_out = tx.jvp(f, INPUTS, tangents)
    np.testing.assert_allclose(jvp_out, _finite_difference(f, INPUTS, tangents),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_vjp_is_the_bilinear_transpose_of_the_jvp(name):
    f = PROGRAMS[name]
    out, vjp_fn = tx.vjp(f, *INPUTS)
    out_dtype = np.asarray(out).dtype
    ct = rand(np.random.default_rng(5), np.shape(out), out_dtype)
    tangents = (crand((3,), seed=31), crand((3,), seed=32))
    _, jvp_out = tx.jvp(f, INPUTS, tangents)
    pulled = vjp_fn(ct)
    lhs = np.real(np.sum(ct * jvp_out))
    rhs = sum(np.real(np.sum(p * t)) for p, t in zip(pulled, tangents))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_derivatives_agree_with_jax(name):
    jax = jax_or_none()
    if jax is None:
        pytest.skip("JAX is not installed")
    import jax.numpy as jnp

    f, jf = PROGRAMS[name], _programs(jnp)[name]
    tangents = (crand((3,), seed=41), crand((3,), seed=42))
    np.testing.assert_allclose(tx.jvp(f, INPUTS, tangents)[1],
                               jax.jvp(jf, INPUTS, tangents)[1], rtol=1e-12, atol=1e-12)
    out, vjp_fn = tx.vjp(f, *INPUTS)
    ct = rand(np.random.default_rng(6), np.shape(out), np.asarray(out).dtype)
    for mine, theirs in zip(vjp_fn(ct), jax.vjp(jf, *INPUTS)[1](ct)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)
    if np.asarray(out).dtype.kind == "f":
        for mine, theirs in zip(tx.grad(f, (0, 1))(*INPUTS), jax.grad(jf, (0, 1))(*INPUTS)):
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)


def test_grad_of_a_real_function_is_jaxs_conjugate_convention():
    # f = |z|^2 = x^2 + y^2: df/dx - i df/dy = 2x - 2iy = 2 conj(z), as jax.grad returns.
    z = np.array(3.0 + 4.0j)
    np.testing.assert_allclose(tx.grad(lambda z: np.abs(z) ** 2)(z), 2 * np.conj(z))
    np.testing.assert_allclose(tx.grad(np.abs)(z), np.conj(z) / 5)
    assert tx.grad(lambda z: np.abs(z) ** 2)(3.0 + 4.0j).dtype == np.complex128


def test_holomorphic_derivatives_are_the_complex_derivative():
    z = crand((4,), seed=3) + 1.0
    derivative = 1 / np.cosh(z) ** 2 * z + np.tanh(z)  # d/dz z tanh z
    grad = tx.grad(lambda z: np.sum(z * np.tanh(z)), holomorphic=True)(z)
    np.testing.assert_allclose(grad, derivative, rtol=1e-12)
    for jac in (tx.jacfwd, tx.jacrev):
        j = jac(lambda z: z * np.tanh(z), holomorphic=True)(z)
        assert j.dtype == np.complex128
        np.testing.assert_allclose(j, np.diag(derivative), rtol=1e-12, atol=1e-15)
    hess = tx.hessian(lambda z: np.sum(z ** 3), holomorphic=True)(z)
    np.testing.assert_allclose(hess, np.diag(6 * z), rtol=1e-12, atol=1e-15)


def test_complex64_gradients_stay_complex64():
    z = crand((5,), np.complex64)
    g = tx.jit(tx.grad(lambda z: np.sum(np.abs(np.exp(z)))))(z)
    assert g.dtype == np.complex64
    # |exp(z)| = exp(Re z): the gradient is d/dx exp(x) - i d/dy exp(x) = exp(x), real.
    np.testing.assert_allclose(g, np.exp(z.real.astype(np.float64)), rtol=1e-5, atol=1e-7)


def test_transforms_compose_over_complex_programs():
    f = PROGRAMS["abs2"]
    zs, w = crand((4, 3), seed=51), INPUTS[1]
    per_row = tx.vmap(tx.grad(f), in_dims=(0, None))(zs, w)
    loop = np.stack([tx.grad(f)(z, w) for z in zs])
    np.testing.assert_allclose(per_row, loop, rtol=1e-13)
    np.testing.assert_allclose(tx.jit(tx.vmap(tx.grad(f), in_dims=(0, None)))(zs, w), loop,
                               rtol=1e-12)
    jac = tx.jacrev(f, argnums=0)(*INPUTS)
    np.testing.assert_allclose(jac, tx.grad(f)(*INPUTS), rtol=1e-13)
    # Second order: grad of a real function of the gradient's real part.
    second = tx.grad(lambda z: np.sum(np.real(tx.grad(f)(z, w)) ** 2))(INPUTS[0])
    h = 1e-6
    t = crand((3,), seed=52)
    def g(z):
        return np.sum(np.real(tx.grad(f)(z, w)) ** 2)
    fd = (g(INPUTS[0] + h * t) - g(INPUTS[0] - h * t)) / (2 * h)
    np.testing.assert_allclose(np.real(np.sum(second * t)), fd, rtol=1e-6)


def test_python_complex_scalars_are_weak_and_differentiable():
    x = np.linspace(0.1, 1.0, 4, dtype=np.float32)
    out = tx.jit(lambda x: x * (2 + 1j))(x)
    assert out.dtype == np.complex64
    np.testing.assert_allclose(out, x * np.complex64(2 + 1j))
    g = tx.grad(lambda z: np.abs(z * z))(1.0 + 2.0j)
    np.testing.assert_allclose(g, 2 * np.conj(1 + 2j), rtol=1e-12)  # |z^2| = |z|^2


# ---------------------------------------------------------------------------------------
# Errors, as JAX reports them


def test_grad_of_a_complex_output_needs_holomorphic():
    z = crand((2,))
    with pytest.raises(DTypeError, match="real-valued outputs.*holomorphic=True"):
        tx.grad(lambda z: np.sum(z * z))(z)
    with pytest.raises(DTypeError, match="real-valued outputs"):
        tx.jacrev(lambda z: z * z)(z)


def test_holomorphic_needs_complex_inputs_and_outputs():
    x = np.ones(2) * 0.5
    with pytest.raises(DTypeError, match="holomorphic=True requires inputs with complex"):
        tx.grad(lambda x: np.sum(x * 1j), holomorphic=True)(x)
    with pytest.raises(DTypeError, match="holomorphic=True requires outputs with complex"):
        tx.grad(lambda z: np.sum(np.abs(z)), holomorphic=True)(crand((2,)))
    with pytest.raises(DTypeError, match="holomorphic=True requires outputs with complex"):
        tx.jacfwd(np.abs, holomorphic=True)(crand((2,)))


def test_jacfwd_of_complex_inputs_needs_holomorphic():
    with pytest.raises(DTypeError, match="jacfwd requires real-valued inputs"):
        tx.jacfwd(np.exp)(crand((2,)))
    # Real inputs, complex outputs: fine, as in JAX.
    x = np.array([0.3, 0.7])
    jac = tx.jacfwd(lambda x: np.exp(1j * x))(x)
    np.testing.assert_allclose(jac, np.diag(1j * np.exp(1j * x)), atol=1e-15)


# ---------------------------------------------------------------------------------------
# CUDA: complex programs compile to PTX (no GPU needed)


def test_complex_programs_compile_to_ptx():
    pytest.importorskip("numba_cuda")
    from transfuse.runtime import cuda as cuda_runtime

    z, w = crand((3, 4), np.complex64), crand((4,), np.complex64, 2)

    def f(z, w):
        return (_unary_all(z), z ** w, z < w, np.isnan(z), np.sum(z, 0), np.prod(z, 1),
                z @ w, np.cumsum(z, 1))

    low = tx.jit(f, device="cuda", cache=False).lower(z, w)
    module = cuda_runtime.load_program(low.source, "complex", disk=False)
    ptx = cuda_runtime.kernel_ptx(module.module, low.kernels, cc=(7, 5))
    assert set(ptx) == {k.name for k in low.kernels} and ptx


# ---------------------------------------------------------------------------------------
# Linear algebra on complex matrices


def _hermitian_pd(shape, seed):
    a = crand(shape, seed=seed)
    return a @ np.conj(np.swapaxes(a, -1, -2)) + shape[-1] * np.eye(shape[-1])


A_SQUARE = crand((2, 4, 4), seed=61) + 4 * np.eye(4)
A_HERM = _hermitian_pd((2, 4, 4), 62)
A_TALL = crand((2, 5, 3), seed=63)
B_RHS = crand((2, 4, 3), seed=64)


def _linalg_programs(np_):
    la = np_.linalg
    return {
        "solve": (lambda a: la.solve(a, B_RHS), A_SQUARE),
        "inv": (lambda a: la.inv(a), A_SQUARE),
        "det": (lambda a: la.det(a), A_SQUARE),
        "slogdet": (lambda a: la.slogdet(a)[0] * la.slogdet(a)[1], A_SQUARE),
        "cholesky": (lambda a: la.cholesky(a), A_HERM),
        "eigh": (lambda a: (la.eigh(a)[0], np_.abs(la.eigh(a)[1]) ** 2), A_HERM),
        "eigvalsh_upper": (lambda a: la.eigvalsh(a, UPLO="U"), A_HERM),
        "svdvals": (lambda a: la.svd(a, compute_uv=False), A_TALL),
        # U diag(s) is defined up to a phase per column: its modulus is not.
        "svd": (lambda a: np_.abs(la.svd(a, full_matrices=False)[0]
                                  * la.svd(a, compute_uv=False)[..., None, :]), A_TALL),
        "qr": (lambda a: tuple(la.qr(a)), A_TALL),
        "pinv": (lambda a: la.pinv(a), A_TALL),
        "norms": (lambda a: (la.norm(a), la.norm(a, 2, axis=(-2, -1)),
                             la.norm(a, "nuc", axis=(-2, -1)), la.norm(a[..., 0], axis=-1)),
                  A_TALL),
    }


LINALG = _linalg_programs(np)


def _flat(x):
    leaves = tx.tree_flatten(x)[0]
    return np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves])


# Compiled here: the Hermitian and unitary factorizations (the other functions are complex
# entries of tests/opinfo.py, compiled by tests/test_opinfo.py).
COMPILED = ["cholesky", "eigh", "eigvalsh_upper", "svd", "qr"]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_linalg_values_match_numpy_compiled(dtype):
    names = COMPILED
    inputs = [LINALG[name][1].astype(dtype) for name in names]
    got = tx.jit(lambda *xs: [LINALG[n][0](x) for n, x in zip(names, xs)])(*inputs)
    tol = 2e-4 if dtype == np.complex64 else 1e-11
    for name, g in zip(names, got):
        f, a = LINALG[name]
        np.testing.assert_allclose(_flat(g), _flat(f(a)), rtol=tol, atol=tol, err_msg=name)


def _hermitian_direction(a, seed):
    t = crand(a.shape, seed=seed)
    return t + np.conj(np.swapaxes(t, -1, -2))  # Hermitian inputs move Hermitian-ly


@pytest.mark.parametrize("name", list(LINALG))
def test_complex_linalg_derivatives(name):
    """JVP against central differences; VJP against the JVP (the bilinear transpose)."""
    f, a = LINALG[name]
    t = _hermitian_direction(a, 71) if a is A_HERM else crand(a.shape, seed=71)
    _, jvp_out = tx.jvp(f, (a,), (t,))
    fd = [(np.asarray(p) - np.asarray(m)) / 2e-6 for p, m in zip(
        tx.tree_flatten(f(a + 1e-6 * t))[0], tx.tree_flatten(f(a - 1e-6 * t))[0])]
    np.testing.assert_allclose(_flat(jvp_out), np.concatenate([np.ravel(d) for d in fd]),
                               rtol=1e-5, atol=1e-6)
    out, vjp_fn = tx.vjp(f, a)
    rng = np.random.default_rng(72)
    ct = tx.tree_map(lambda o: rand(rng, np.shape(o), np.asarray(o).dtype), out)
    (pulled,) = vjp_fn(ct)
    lhs = sum(np.real(np.sum(c * j)) for c, j in zip(tx.tree_flatten(ct)[0],
                                                      tx.tree_flatten(jvp_out)[0]))
    np.testing.assert_allclose(lhs, np.real(np.sum(pulled * t)), rtol=1e-10)


@pytest.mark.parametrize("name", ["solve", "slogdet", "cholesky", "eigh", "svd", "qr"])
def test_complex_linalg_derivatives_agree_with_jax(name):
    jax = jax_or_none()
    if jax is None:
        pytest.skip("JAX is not installed")
    import jax.numpy as jnp

    (f, a), (jf, _) = LINALG[name], _linalg_programs(jnp)[name]
    t = _hermitian_direction(a, 81) if a is A_HERM else crand(a.shape, seed=81)
    np.testing.assert_allclose(_flat(tx.jvp(f, (a,), (t,))[1]),
                               _flat(jax.jvp(jf, (a,), (t,))[1]), rtol=1e-10, atol=1e-11)
    out, vjp_fn = tx.vjp(f, a)
    rng = np.random.default_rng(82)
    ct = tx.tree_map(lambda o: rand(rng, np.shape(o), np.asarray(o).dtype), out)
    np.testing.assert_allclose(vjp_fn(ct)[0], jax.vjp(jf, a)[1](ct)[0], rtol=1e-10,
                               atol=1e-11)


def test_complex_linalg_under_vmap_and_jit_of_grad():
    f = lambda a: np.real(np.linalg.slogdet(a)[1] + np.sum(np.linalg.solve(a, B_RHS[0])))  # noqa: E731
    per_matrix = tx.jit(tx.vmap(tx.grad(f)))(A_SQUARE)
    loop = np.stack([tx.grad(f)(a) for a in A_SQUARE])
    np.testing.assert_allclose(per_matrix, loop, rtol=1e-12)


def test_scipy_triangular_solves_with_conjugate_transposes():
    import scipy.linalg

    low = np.tril(crand((4, 4), seed=91)) + 3 * np.eye(4)
    b = crand((4, 2), seed=92)

    def f(low, b):
        outs = [scipy.linalg.solve_triangular(low, b, trans=t, lower=True) for t in (0, 2)]
        outs.append(scipy.linalg.cho_solve(scipy.linalg.cho_factor(A_HERM[0]), b))  # upper
        outs.append(scipy.linalg.lu_solve(scipy.linalg.lu_factor(A_SQUARE[0]), b, trans=2))
        return outs

    for got, want in zip(tx.jit(f)(low, b), f(low, b)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
