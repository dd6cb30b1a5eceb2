"""The reverse-mode API: vjp, grad, grad_and_value, jacrev (torch.func semantics)."""

from __future__ import annotations

import numpy as np
import pytest

import transfuse as tx
import transfuse.numpy as tnp
from tests.helpers import JIT_MODE
from transfuse import DTypeError, ShapeError, TransfuseTypeError, TransfuseValueError


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------
# grad and grad_and_value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (0,), (4,), (2, 3)])
def test_grad_values_dtypes_and_shapes(dtype, shape):
    x = rng().standard_normal(shape).astype(dtype)
    g = tx.grad(lambda x: np.sum(np.sin(x) * x))(x)
    assert g.shape == shape and g.dtype == dtype
    expected = np.cos(x) * x + np.sin(x)
    np.testing.assert_allclose(g, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("out_shape", [(1,), (1, 1)])
def test_grad_accepts_one_element_outputs(out_shape):
    x = rng(1).standard_normal(3)
    g = tx.grad(lambda x: np.reshape(np.sum(x ** 2), out_shape))(x)
    np.testing.assert_allclose(g, 2 * x)


def test_python_float_at_argnums_is_a_float64_array():
    g = tx.grad(lambda x, y: x * x * y)(3.0, 2.0)
    assert isinstance(g, np.ndarray) and g.shape == () and g.dtype == np.float64
    assert g == 12.0
    # At other positions a Python float is static: each value gives the right answer.
    f = tx.grad(lambda x, y: np.sum(x * y))
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(f(x, 2.0), [2.0, 2.0])
    np.testing.assert_allclose(f(x, 5.0), [5.0, 5.0])


def test_argnums_int_negative_and_tuple():
    r = rng(2)
    x, y, z = r.standard_normal(3), r.standard_normal(3), r.standard_normal(3)

    def f(x, y, z):
        return np.sum(x * y * y + z)

    np.testing.assert_allclose(tx.grad(f)(x, y, z), y * y)
    np.testing.assert_allclose(tx.grad(f, argnums=-2)(x, y, z), 2 * x * y)
    gs = tx.grad(f, argnums=(2, 0))(x, y, z)
    assert isinstance(gs, tuple) and len(gs) == 2
    np.testing.assert_allclose(gs[0], np.ones(3))
    np.testing.assert_allclose(gs[1], y * y)
    gs2 = tx.grad(f, argnums=(1, 1))(x, y, z)
    np.testing.assert_allclose(gs2[0], 2 * x * y)
    np.testing.assert_allclose(gs2[1], 2 * x * y)
    jac = tx.jacrev(lambda x, y, z: x * y + z, argnums=(2, 1))(x, y, z)
    np.testing.assert_allclose(jac[0], np.eye(3))
    np.testing.assert_allclose(jac[1], np.diag(x))
    gs1 = tx.grad(f, argnums=(1,))(x, y, z)
    assert isinstance(gs1, tuple) and len(gs1) == 1
    with pytest.raises(TransfuseValueError, match="argnums 3"):
        tx.grad(f, argnums=3)(x, y, z)


def test_has_aux_and_grad_and_value():
    x = rng(3).standard_normal(4)

    def f(x):
        return np.sum(x ** 2), {"mean": np.mean(x)}

    g, aux = tx.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g, 2 * x)
    np.testing.assert_allclose(aux["mean"], np.mean(x))
    g2, (value, aux2) = tx.grad_and_value(f, has_aux=True)(x)
    np.testing.assert_allclose(g2, 2 * x)
    np.testing.assert_allclose(value, np.sum(x ** 2))
    np.testing.assert_allclose(aux2["mean"], np.mean(x))
    g3, value3 = tx.grad_and_value(lambda x: np.sum(np.exp(x)))(x)
    np.testing.assert_allclose(g3, np.exp(x))
    np.testing.assert_allclose(value3, np.sum(np.exp(x)))


def test_gradients_have_the_structure_of_the_inputs():
    r = rng(4)
    params = {"layer": (r.standard_normal((2, 3)), r.standard_normal(3)), "skip": None,
              "scale": [r.standard_normal(())]}
    x = r.standard_normal((4, 2))

    def loss(params, x):
        w, b = params["layer"]
        return np.sum(np.tanh(x @ w + b) * params["scale"][0])

    g = tx.grad(loss)(params, x)
    assert tx.tree_structure(g) == tx.tree_structure(params)
    assert g["skip"] is None
    h = np.tanh(x @ params["layer"][0] + params["layer"][1])
    s = params["scale"][0]
    dpre = (1 - h ** 2) * s
    np.testing.assert_allclose(g["layer"][0], x.T @ dpre)
    np.testing.assert_allclose(g["layer"][1], dpre.sum(0))
    np.testing.assert_allclose(g["scale"][0], h.sum())


def test_non_differentiated_arguments_may_be_integers_and_kwargs():
    x = rng(5).standard_normal(5)
    idx = np.array([0, 2, 2])

    def f(x, idx, power, *, scale):
        return np.sum(x[idx] ** power) * scale

    g = tx.grad(f)(x, idx, 2, scale=3.0)
    expected = np.zeros(5)
    np.add.at(expected, idx, 6.0 * x[idx])
    np.testing.assert_allclose(g, expected)


def test_float32_stays_float32_through_the_whole_chain():
    r = rng(6)
    w = r.standard_normal((3, 2)).astype(np.float32)
    x = r.standard_normal((4, 3)).astype(np.float32)
    g = tx.grad(lambda w: np.mean(np.tanh(x @ w) ** 2 * 0.5))(w)
    assert g.dtype == np.float32
    g64 = tx.grad(lambda w: np.mean(np.tanh(x.astype(np.float64) @ w) ** 2 * 0.5))(
        w.astype(np.float64))
    np.testing.assert_allclose(g, g64, rtol=1e-5, atol=1e-6)


def test_mutation_inside_the_function(jax64):
    def f(x):
        y = x.copy()
        y[0] = y[1] * 3
        y[1:] *= 2
        return np.sum(y ** 2)

    def f_jax(x):
        y = x.at[0].set(x[1] * 3)
        y = y.at[1:].multiply(2)
        return jax64.numpy.sum(y ** 2)

    x = rng(7).standard_normal(4)
    np.testing.assert_allclose(tx.grad(f)(x), np.asarray(jax64.jit(jax64.grad(f_jax))(x)))


def test_writes_into_inputs_reach_the_caller_and_grads_are_at_entry():
    def f(x, buf):
        x *= 2  # the caller's x doubles, as in eager NumPy
        buf[0] = np.sum(x)
        return np.sum(x ** 2), np.max(x)

    x = np.array([1.0, -2.0, 3.0])
    x0 = x.copy()
    buf = np.zeros(2)
    g, aux = tx.grad(f, has_aux=True)(x, buf)
    np.testing.assert_allclose(g, 8 * x0)  # d/dx sum((2x)^2) at the entry value
    np.testing.assert_allclose(x, 2 * x0)
    np.testing.assert_allclose(buf, [np.sum(2 * x0), 0.0])
    np.testing.assert_allclose(aux, np.max(2 * x0))
    y = np.array([0.5, 1.5])
    out, vjp_fn = tx.vjp(lambda y: np.multiply(y, 3, out=y), y)
    np.testing.assert_allclose(out, [1.5, 4.5])
    np.testing.assert_allclose(y, [1.5, 4.5])
    np.testing.assert_allclose(vjp_fn(np.ones(2))[0], [3.0, 3.0])


def test_results_never_alias_arguments_or_cotangents():
    x = np.arange(3.0)
    out, vjp_fn = tx.vjp(lambda x: x, x)
    ct = np.ones(3)
    (g,) = vjp_fn(ct)
    np.testing.assert_array_equal(g, ct)
    if JIT_MODE:
        # Under `pytest --jit` vjp runs as jitted functions of (primals, cotangents), and
        # jit hands an argument returned unchanged back as the caller's own array, as eager
        # NumPy's `lambda x: x` does (docs/compiler.md); the copies are eager vjp's promise.
        assert out is x and g is ct
    else:
        assert not np.shares_memory(out, x)
        assert not np.shares_memory(g, ct)
    def constant(x):
        return np.full(2, 1.0)  # an output that is a constant of the cached graph

    first = tx.vjp(constant, x)[0]
    first[0] = 99.0  # must not corrupt the cached graph's constant
    np.testing.assert_array_equal(tx.vjp(constant, x)[0], [1.0, 1.0])


def test_random_draws_are_shared_by_forward_and_backward():
    tx.random.seed(0)

    def f(x):
        z = tnp.random.normal(size=x.shape)
        return np.sum(x * z), z

    x = rng(8).standard_normal(6)
    g, z = tx.grad(f, has_aux=True)(x)
    np.testing.assert_array_equal(g, z)
    out, vjp_fn = tx.vjp(lambda x: x * tnp.random.normal(size=x.shape), x)
    (g1,) = vjp_fn(np.ones(6))
    (g2,) = vjp_fn(np.ones(6))
    np.testing.assert_allclose(g1, out / x)
    np.testing.assert_array_equal(g1, g2)


# ---------------------------------------------------------------------------------------
# vjp


def test_vjp_pytrees_and_repeated_pullbacks():
    r = rng(9)
    a, b = r.standard_normal((2, 3)), r.standard_normal(3)

    def f(p, b):
        return {"prod": p["a"] * b, "sum": np.sum(p["a"], axis=0) + b}

    out, vjp_fn = tx.vjp(f, {"a": a}, b)
    np.testing.assert_allclose(out["prod"], a * b)
    ct = {"prod": r.standard_normal((2, 3)), "sum": r.standard_normal(3)}
    for _ in range(2):
        (ga,), gb = vjp_fn(ct)[0].values(), vjp_fn(ct)[1]
        np.testing.assert_allclose(ga, ct["prod"] * b + ct["sum"])
        np.testing.assert_allclose(gb, np.sum(ct["prod"] * a, axis=0) + ct["sum"])
    grads = vjp_fn(ct)
    assert isinstance(grads, tuple) and len(grads) == 2 and set(grads[0]) == {"a"}


def test_vjp_has_aux_and_cotangent_conversion():
    x = rng(10).standard_normal(3).astype(np.float32)
    out, vjp_fn, aux = tx.vjp(lambda x: (np.sin(x), np.cos(x)), x, has_aux=True)
    np.testing.assert_allclose(aux, np.cos(x))
    (g,) = vjp_fn(np.ones(3))  # float64 cotangent for a float32 output: cast
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, np.cos(x), rtol=1e-6)
    _, vjp0 = tx.vjp(lambda x: np.sum(x * x), 2.0)
    assert vjp0(1.0)[0] == 4.0


def test_vjp_runs_the_forward_computation_once():
    traces = []

    def f(x):
        traces.append(1)
        return np.exp(x)

    x = np.array([0.5, 1.0])
    out, vjp_fn = tx.vjp(f, x)
    for ct in (np.ones(2), np.array([2.0, 3.0])):
        np.testing.assert_allclose(vjp_fn(ct)[0], ct * np.exp(x))
    # Under `pytest --jit` the forward and the backward are two kernels, each traced once;
    # the second pullback retraces nothing either way.
    assert len(traces) == (2 if JIT_MODE else 1)


def test_vjp_errors():
    x = np.ones(3)
    _, vjp_fn = tx.vjp(lambda x: (x, np.sum(x)), x)
    with pytest.raises(TransfuseValueError, match="structure"):
        vjp_fn(np.ones(3))
    with pytest.raises(ShapeError, match=r"shape \(2,\).*shape \(3,\)"):
        vjp_fn((np.ones(2), np.ones(())))
    with pytest.raises(TransfuseValueError, match="at least one primal"):
        tx.vjp(lambda: 1.0)
    with pytest.raises(DTypeError, match="argument 1"):
        tx.vjp(lambda x, i: x[i], x, np.array([0, 1]))


# ---------------------------------------------------------------------------------------
# Errors of grad


def test_grad_errors_name_what_was_wrong():
    x = np.arange(3.0)
    with pytest.raises(DTypeError, match=r"argument 0.*int64"):
        tx.grad(lambda x: np.sum(x))(np.arange(3))
    with pytest.raises(DTypeError, match=r"argument 0.*bool"):
        tx.grad(lambda x: np.sum(x))(np.array([True, False]))
    with pytest.raises(DTypeError, match=r"argument 1\['n'\].*int"):
        tx.grad(lambda x, p: np.sum(x) * p["w"], argnums=1)(x, {"w": 2.0, "n": 3})
    with pytest.raises(DTypeError, match="Python int"):
        tx.grad(lambda x: x * 2.0)(3)
    with pytest.raises(TransfuseTypeError, match=r"shape \(3,\)"):
        tx.grad(lambda x: x * 2)(x)
    with pytest.raises(TransfuseTypeError, match=r"dtype int64"):
        tx.grad(lambda x: np.sum(x).astype(np.int64))(x)
    with pytest.raises(TransfuseTypeError, match="must return arrays"):
        tx.grad(lambda x: "loss")(x)
    with pytest.raises(TransfuseTypeError, match="single scalar array"):
        tx.grad(lambda x: (np.sum(x), np.sum(x)))(x)
    with pytest.raises(TransfuseTypeError, match="pair"):
        tx.grad(lambda x: np.sum(x), has_aux=True)(x)


def test_grad_error_points_at_the_callers_line():
    with pytest.raises(TransfuseTypeError) as info:
        tx.grad(lambda x: x * 2)(np.ones(2))
    assert "test_reverse_api.py" in str(info.value)


# ---------------------------------------------------------------------------------------
# Caching


def test_rewritten_graphs_are_cached_by_signature():
    # reverse mode's own cache (`pytest --jit` wraps tx.grad in jit, which has its own)
    grad = getattr(tx.grad, "__wrapped__", tx.grad)
    vjp = getattr(tx.vjp, "__wrapped__", tx.vjp)
    traces = []

    def f(x):
        traces.append(x.shape)
        return np.sum(np.sin(x))

    g = grad(f)
    x = np.linspace(0, 1, 4)
    np.testing.assert_allclose(g(x), np.cos(x))
    np.testing.assert_allclose(g(x + 1), np.cos(x + 1))
    assert len(traces) == 1
    grad(f)(x)  # a new grad of the same function shares the cache
    vjp(f, x)
    assert len(traces) == 1
    g(np.ones(5))
    assert len(traces) == 2
    g(np.ones(4, np.float32))
    assert len(traces) == 3


# ---------------------------------------------------------------------------------------
# Composition


def test_higher_order_derivatives_of_sin():
    d = np.sin
    for _ in range(4):
        d = tx.grad(d)
    for x in (0.3, 1.7, -2.0):
        np.testing.assert_allclose(d(x), np.sin(x), rtol=1e-12)
    d3 = tx.grad(tx.grad(tx.grad(np.sin)))
    np.testing.assert_allclose(d3(0.5), -np.cos(0.5), rtol=1e-12)


def test_closure_over_outer_input_has_no_perturbation_confusion():
    def outer(x):
        inner = tx.grad(lambda y: x * y)  # d/dy (x y) = x, with x a constant here
        return x * inner(1.5)

    for x in (0.5, 2.0, -3.0):
        np.testing.assert_allclose(tx.grad(outer)(x), 2 * x)


def test_vmap_of_grad_and_grad_of_vmap():
    xs = rng(11).standard_normal((5, 3))

    def f(x):
        return np.sum(np.tanh(x) ** 2)

    per_example = tx.vmap(tx.grad(f))(xs)
    loop = np.stack([tx.grad(f)(x) for x in xs])
    np.testing.assert_allclose(per_example, loop, rtol=1e-12)
    g = tx.grad(lambda xs: np.sum(tx.vmap(f)(xs)))(xs)
    np.testing.assert_allclose(g, loop, rtol=1e-12)


def test_hessians_by_reverse_over_reverse():
    r = rng(12)
    a = r.standard_normal((3, 3))

    def f(x):
        return np.sum(np.sin(x) * (a @ x))

    x = r.standard_normal(3)
    # f = s^T A x with s = sin(x): H = diag(-s * (A x)) + diag(c) A + A^T diag(c)
    s, c = np.sin(x), np.cos(x)
    expected = np.diag(-s * (a @ x)) + np.diag(c) @ a + a.T @ np.diag(c)
    np.testing.assert_allclose(tx.jacrev(tx.grad(f))(x), expected, rtol=1e-10)
    np.testing.assert_allclose(tx.jacrev(tx.jacrev(f))(x), expected, rtol=1e-10)
    np.testing.assert_allclose(tx.grad(lambda x: tx.grad(f)(x)[1])(x), expected[1],
                               rtol=1e-10)


# ---------------------------------------------------------------------------------------
# jacrev


def test_jacrev_shapes_and_values():
    r = rng(13)
    w = r.standard_normal((4, 3))
    x = r.standard_normal(3)
    j = tx.jacrev(lambda x: np.tanh(w @ x))(x)
    assert j.shape == (4, 3)
    np.testing.assert_allclose(j, (1 - np.tanh(w @ x) ** 2)[:, None] * w, rtol=1e-12)
    x2 = r.standard_normal((2, 3))
    j2 = tx.jacrev(lambda x: x.T ** 2)(x2)
    assert j2.shape == (3, 2, 2, 3)
    expected = np.zeros((3, 2, 2, 3))
    for i, k in np.ndindex(2, 3):
        expected[k, i, i, k] = 2 * x2[i, k]
    np.testing.assert_allclose(j2, expected)
    j0 = tx.jacrev(lambda x: np.sum(x ** 3))(x)
    assert j0.shape == (3,)
    np.testing.assert_allclose(j0, 3 * x ** 2)
    jscalar = tx.jacrev(lambda s: s * x)(2.0)
    assert jscalar.shape == (3,)
    np.testing.assert_allclose(jscalar, x)


def test_jacrev_pytree_layout_like_torch_func():
    r = rng(14)
    x, y = r.standard_normal(3), r.standard_normal(2)

    def f(x, y):
        return {"a": x * 2, "b": (np.sum(x) * y, np.sum(y))}

    jac = tx.jacrev(f, argnums=(0, 1))(x, y)
    assert set(jac) == {"a", "b"}
    ja_x, ja_y = jac["a"]
    assert ja_x.shape == (3, 3) and ja_y.shape == (3, 2)
    np.testing.assert_allclose(ja_x, 2 * np.eye(3))
    np.testing.assert_allclose(ja_y, 0)
    (jb_x, jb_y), (jc_x, jc_y) = jac["b"]
    np.testing.assert_allclose(jb_x, np.outer(y, np.ones(3)))
    np.testing.assert_allclose(jb_y, np.sum(x) * np.eye(2))
    assert jc_x.shape == (3,) and jc_y.shape == (2,)
    np.testing.assert_allclose(jc_y, np.ones(2))
    jd = tx.jacrev(lambda p: p["w"] * 3)({"w": x})
    assert set(jd) == {"w"} and jd["w"].shape == (3, 3)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 100])
def test_jacrev_chunk_size_gives_identical_results(chunk_size):
    r = rng(15)
    w = r.standard_normal((7, 4))

    def f(x):
        return np.sin(w @ x), np.cumprod(x)

    x = r.standard_normal(4)
    full = tx.jacrev(f)(x)
    chunked = tx.jacrev(f, chunk_size=chunk_size)(x)
    for a, b in zip(full, chunked):
        np.testing.assert_array_equal(a, b)


def test_jacrev_has_aux_size0_and_dtypes():
    x = rng(16).standard_normal(3).astype(np.float32)
    jac, aux = tx.jacrev(lambda x: (x ** 2, np.sum(x)), has_aux=True)(x)
    assert jac.dtype == np.float32
    np.testing.assert_allclose(jac, np.diag(2 * x), rtol=1e-6)
    np.testing.assert_allclose(aux, np.sum(x), rtol=1e-6)
    empty = tx.jacrev(lambda x: x[:0] * 2)(x)
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    with pytest.raises(TransfuseTypeError, match="floating outputs"):
        tx.jacrev(lambda x: np.argmax(x))(x)
    with pytest.raises(TransfuseValueError, match="chunk_size"):
        tx.jacrev(np.sin, chunk_size=0)


def test_jacrev_matches_jax_and_jacfwd(jax64):
    r = rng(17)
    w = r.standard_normal((3, 4))

    def f(x, xp):
        h = xp.tanh(w @ x)
        return xp.concatenate([h * xp.sum(x), xp.cumsum(h)])

    x = r.standard_normal(4)
    j = tx.jacrev(lambda x: f(x, np))(x)
    expected = jax64.jit(jax64.jacrev(lambda x: f(x, jax64.numpy)))(x)
    np.testing.assert_allclose(j, np.asarray(expected), rtol=1e-10, atol=1e-12)
    jacfwd = getattr(tx, "jacfwd", None)
    if jacfwd is not None:
        np.testing.assert_allclose(j, jacfwd(lambda x: f(x, np))(x), rtol=1e-10, atol=1e-12)


def test_vmap_of_jacrev():
    xs = rng(18).standard_normal((4, 3))
    jacs = tx.vmap(tx.jacrev(lambda x: np.sin(x) * np.sum(x)))(xs)
    assert jacs.shape == (4, 3, 3)
    for x, j in zip(xs, jacs):
        np.testing.assert_allclose(j, np.diag(np.cos(x) * np.sum(x)) + np.sin(x)[:, None],
                                   rtol=1e-12)


def test_grad_composes_with_jit():
    jit = tx.jit
    x = np.linspace(-1.0, 1.0, 5)

    def f(x):
        return np.sum(np.tanh(x) ** 2)

    expected = 2 * np.tanh(x) * (1 - np.tanh(x) ** 2)
    np.testing.assert_allclose(jit(tx.grad(f))(x), expected, rtol=1e-12)
    np.testing.assert_allclose(tx.grad(jit(f))(x), expected, rtol=1e-12)
