"""The forward-mode API: jvp, linearize, jacfwd, hessian (torch.func semantics)."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.ir import lax as tlax

import transfuse as tx
import transfuse.numpy as tnp
from tests.helpers import JIT_MODE


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _rng(seed=0):
    return np.random.default_rng(seed)


def _fd(f, primals, tangents, eps=1e-6):
    """Central finite differences of f along tangents (float64)."""
    plus = f(*[p + eps * t for p, t in zip(primals, tangents)])
    minus = f(*[p - eps * t for p, t in zip(primals, tangents)])
    return tx.tree_map(lambda a, b: (np.asarray(a) - np.asarray(b)) / (2 * eps), plus, minus)


# ---------------------------------------------------------------------------------------
# Compositions: written once against a NumPy-like namespace, run with NumPy and JAX


def mlp_loss(xp, x, w1, b1, w2, y):
    hidden = xp.tanh(x @ w1 + b1)
    return xp.mean((hidden @ w2 - y) ** 2)


def softmax_cross_entropy(xp, logits, labels_onehot):
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    return -xp.sum(labels_onehot * log_probs) / logits.shape[0]


def logsumexp(xp, x):
    m = xp.max(x, axis=-1, keepdims=True)
    return xp.squeeze(m, -1) + xp.log(xp.sum(xp.exp(x - m), axis=-1))


def layer_norm(xp, x, gamma, beta):
    mean = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / xp.sqrt(var + 1e-5) * gamma + beta


def conv_layer(conv, xp, x, w, b):
    out = conv(x, w, (1, 1), ((1, 1), (0, 1)))
    return xp.maximum(out + b[None, :, None, None], 0.0).sum(axis=(2, 3))


def _tconv(x, w, strides, padding):
    return tlax.conv_general_dilated(x, w, strides, padding)


COMPOSITIONS = {
    "mlp": (lambda xp, *a: mlp_loss(xp, *a),
            lambda r: [r.standard_normal((5, 3)), r.standard_normal((3, 4)),
                       r.standard_normal(4), r.standard_normal((4, 2)),
                       r.standard_normal((5, 2))]),
    "softmax_xent": (lambda xp, *a: softmax_cross_entropy(xp, *a),
                     lambda r: [r.standard_normal((4, 6)), np.eye(6)[r.integers(0, 6, 4)]]),
    "logsumexp": (lambda xp, *a: logsumexp(xp, *a), lambda r: [r.standard_normal((3, 7))]),
    "layer_norm": (lambda xp, *a: layer_norm(xp, *a),
                   lambda r: [r.standard_normal((4, 5)), r.standard_normal(5),
                              r.standard_normal(5)]),
    "conv": (None, lambda r: [r.standard_normal((2, 3, 6, 5)), r.standard_normal((4, 3, 3, 2)),
                              r.standard_normal(4)]),
}


def _composition(name, xp_name, jax=None):
    fn, _ = COMPOSITIONS[name]
    if name == "conv":
        if xp_name == "np":
            return lambda *a: conv_layer(_tconv, np, *a)
        conv = lambda x, w, s, p: jax.lax.conv_general_dilated(x, w, s, p)  # noqa: E731
        return lambda *a: conv_layer(conv, jax.numpy, *a)
    xp = np if xp_name == "np" else jax.numpy
    return lambda *a: fn(xp, *a)


@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_compositions_match_finite_differences(name):
    rng = _rng(1)
    primals = [np.asarray(p, dtype=np.float64) for p in COMPOSITIONS[name][1](rng)]
    tangents = [rng.standard_normal(p.shape) for p in primals]
    f = _composition(name, "np")
    out, t = tx.jvp(f, tuple(primals), tuple(tangents))
    np.testing.assert_allclose(out, f(*primals), rtol=1e-12)
    np.testing.assert_allclose(t, _fd(f, primals, tangents), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_compositions_match_jax(name, jax):
    rng = _rng(2)
    primals = [np.asarray(p, dtype=np.float64) for p in COMPOSITIONS[name][1](rng)]
    tangents = [rng.standard_normal(p.shape) for p in primals]
    out, t = tx.jvp(_composition(name, "np"), tuple(primals), tuple(tangents))
    j_f = _composition(name, "jax", jax)
    j_out, j_t = jax.jit(lambda p, t: jax.jvp(j_f, p, t))(tuple(primals), tuple(tangents))
    np.testing.assert_allclose(out, j_out, rtol=1e-10)
    np.testing.assert_allclose(t, j_t, rtol=1e-9, atol=1e-12)


def test_float32_stays_float32():
    rng = _rng(3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    gamma, beta = np.ones(5, np.float32) * 1.5, np.zeros(5, np.float32)
    f = lambda *a: layer_norm(np, *a)  # noqa: E731
    out, t = tx.jvp(f, (x, gamma, beta), (np.ones_like(x), np.zeros_like(gamma),
                                          np.zeros_like(beta)))
    assert out.dtype == t.dtype == np.float32
    expected = _fd(f, [x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64)],
                   [np.ones((4, 5)), np.zeros(5), np.zeros(5)])
    np.testing.assert_allclose(t, expected, rtol=1e-3, atol=1e-3)
    assert tx.jacfwd(np.sin)(x[0]).dtype == np.float32


# ---------------------------------------------------------------------------------------
# jvp: pytrees, has_aux, strict, broadcasting, 0-d and size-0


def test_jvp_of_x_times_y():
    x, y = np.linspace(-1, 1, 5), np.arange(5.0)
    out, t = tx.jvp(lambda a, b: a * b, (x, y), (np.ones_like(x), np.zeros_like(y)))
    np.testing.assert_array_equal(out, x * y)
    np.testing.assert_array_equal(t, y)


def test_jvp_pytrees_in_and_out():
    rng = _rng(4)
    params = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    x = rng.standard_normal((4, 3))
    dparams = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    dx = rng.standard_normal((4, 3))

    def f(p, x):
        y = x @ p["w"] + p["b"]
        return {"y": y, "parts": (np.sum(y), [y[0]])}

    out, t = tx.jvp(f, (params, x), (dparams, dx))
    assert set(out) == {"y", "parts"} and isinstance(out["parts"][1], list)
    expected = dx @ params["w"] + x @ dparams["w"] + dparams["b"]
    np.testing.assert_allclose(t["y"], expected, rtol=1e-12)
    np.testing.assert_allclose(t["parts"][0], expected.sum(), rtol=1e-12)
    np.testing.assert_allclose(t["parts"][1][0], expected[0], rtol=1e-12)


def test_jvp_has_aux():
    x = _rng(5).standard_normal(3)
    out, t, aux = tx.jvp(lambda x: (np.sin(x), {"c": np.cos(x), "n": x.shape[0]}), (x,),
                         (np.ones(3),), has_aux=True)
    np.testing.assert_allclose(t, np.cos(x))
    np.testing.assert_allclose(aux["c"], np.cos(x))
    assert aux["n"] == 3


def test_jvp_strict_rejects_outputs_independent_of_the_inputs():
    x = np.ones(3)
    out, t = tx.jvp(lambda x: (x * 2, np.zeros(2)), (x,), (np.ones(3),))
    np.testing.assert_array_equal(t[1], np.zeros(2))
    with pytest.raises(tx.TransfuseValueError, match="independent"):
        tx.jvp(lambda x: (x * 2, np.zeros(2)), (x,), (np.ones(3),), strict=True)
    tx.jvp(lambda x: x * 2, (x,), (np.ones(3),), strict=True)  # dependent: fine


def test_jvp_broadcasting_zero_d_and_size_zero():
    rng = _rng(6)
    a, b = rng.standard_normal((3, 1)), rng.standard_normal(4)
    ta, tb = rng.standard_normal((3, 1)), rng.standard_normal(4)
    out, t = tx.jvp(lambda a, b: np.exp(a) * b, (a, b), (ta, tb))
    np.testing.assert_allclose(t, np.exp(a) * ta * b + np.exp(a) * tb, rtol=1e-12)
    s = np.float64(0.7)
    out, t = tx.jvp(np.tanh, (s,), (np.float64(2.0),))
    assert np.shape(t) == () and np.isclose(t, 2 * (1 - np.tanh(0.7) ** 2))
    empty = np.zeros((0, 3))
    out, t = tx.jvp(lambda e: np.sin(e).sum(axis=0), (empty,), (empty,))
    assert t.shape == (3,) and not t.any()


def test_python_float_primals_are_float64_arrays():
    out, t = tx.jvp(lambda x: x ** 3, (2.0,), (1.0,))
    assert t.dtype == np.float64 and t == 12.0


def test_identity_outputs_do_not_alias_arguments():
    x, tangent = np.ones(3), np.full(3, 2.0)
    out, t = tx.jvp(lambda x: x, (x,), (tangent,))
    if JIT_MODE:
        # Under `pytest --jit` jvp runs as jit(lambda p, t: jvp(f, p, t)), and jit hands an
        # argument returned unchanged back as the caller's own array, as eager NumPy's
        # `lambda x: x` does (docs/compiler.md); the copies are the eager jvp's promise.
        assert out is x and t is tangent
        return
    t[0] = 99.0
    out[0] = 99.0
    assert tangent[0] == 2.0 and x[0] == 1.0


# ---------------------------------------------------------------------------------------
# linearize


def test_linearize_equals_jvp():
    rng = _rng(7)
    f = lambda *a: mlp_loss(np, *a)  # noqa: E731
    primals = COMPOSITIONS["mlp"][1](rng)
    out, jvp_fn = tx.linearize(f, *primals)
    np.testing.assert_allclose(out, f(*primals), rtol=1e-12)
    for seed in range(3):
        tangents = [_rng(seed + 10).standard_normal(p.shape) for p in primals]
        np.testing.assert_allclose(jvp_fn(*tangents),
                                   tx.jvp(f, tuple(primals), tuple(tangents))[1], rtol=1e-12)


def test_linearize_tangent_graph_does_not_recompute_primals():
    from transfuse._forward import _CACHE

    def f(x):
        return np.sin(np.tanh(x))
    x = _rng(8).standard_normal(4)
    out, jvp_fn = tx.linearize(f, x)
    if JIT_MODE:
        # A jitted jvp_fn is one kernel of (primals, tangents): the split into a primal and
        # a tangent graph is the eager runner's, so check it there.
        tx.linearize.__wrapped__(f, x)
    (entry,) = _CACHE.entries(f)
    names = [n.prim.name for n in entry.split.tangent.nodes]
    assert names == ["mul", "mul"], names  # t * (1 - tanh²) * cos(tanh x): residuals only
    assert {"tanh", "sin"} <= {n.prim.name for n in entry.split.primal.nodes}
    t = _rng(9).standard_normal(4)
    np.testing.assert_allclose(jvp_fn(t), np.cos(np.tanh(x)) * (1 - np.tanh(x) ** 2) * t)


def test_linearize_pytrees_and_errors():
    p = {"a": np.ones(2), "b": np.full(3, 2.0)}
    out, jvp_fn = tx.linearize(lambda p: (p["a"] * 3, np.sum(p["b"] ** 2)), p)
    ta, tb = jvp_fn({"a": np.array([1.0, 2.0]), "b": np.ones(3)})
    np.testing.assert_array_equal(ta, [3.0, 6.0])
    assert tb == 12.0
    with pytest.raises(tx.ShapeError, match="shape"):
        jvp_fn({"a": np.ones(3), "b": np.ones(3)})
    with pytest.raises(tx.TransfuseValueError, match="structure"):
        jvp_fn(np.ones(2))


# ---------------------------------------------------------------------------------------
# jacfwd


@pytest.mark.parametrize("in_shape,out_fn", [
    ((3,), lambda x: np.sin(x)),
    ((2, 3), lambda x: x.sum(axis=0) * x[0]),
    ((), lambda x: np.stack([x, x ** 2, x ** 3])),
    ((4,), lambda x: np.sum(x ** 2)),
    ((2, 2), lambda x: x @ x),
    ((0,), lambda x: np.concatenate([x, np.ones(2)])),
    ((3,), lambda x: np.zeros((2, 0)) + x[0]),
])
def test_jacfwd_shape_is_out_shape_plus_in_shape(in_shape, out_fn):
    rng = _rng(11)
    x = rng.standard_normal(in_shape)
    jac = tx.jacfwd(out_fn)(x)
    out = out_fn(x)
    assert jac.shape == np.shape(out) + in_shape
    # Column by column against finite differences.
    flat = np.reshape(jac, (np.size(out), int(np.prod(in_shape, dtype=int))))
    for k in range(flat.shape[1]):
        e = np.zeros(int(np.prod(in_shape, dtype=int)))
        e[k] = 1.0
        np.testing.assert_allclose(flat[:, k], np.ravel(_fd(out_fn, [x], [e.reshape(in_shape)])),
                                   rtol=1e-6, atol=1e-8)


def test_jacfwd_equals_jacrev_and_jax(jax):
    rng = _rng(12)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    def f(x, w):
        return np.tanh(x @ w), np.sum(x ** 2)
    jf = tx.jacfwd(f, argnums=(0, 1))(x, w)
    jr = tx.jacrev(f, argnums=(0, 1))(x, w)
    jj = jax.jit(jax.jacfwd(lambda x, w: (jax.numpy.tanh(x @ w), jax.numpy.sum(x ** 2)),
                            argnums=(0, 1)))(x, w)
    for o in range(2):
        for i in range(2):
            np.testing.assert_allclose(jf[o][i], jr[o][i], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(jf[o][i], jj[o][i], rtol=1e-12, atol=1e-14)


def test_jacfwd_pytrees_follow_torch_func():
    rng = _rng(13)
    params = {"w": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)}
    x = rng.standard_normal(2)

    def f(params, x):
        y = x @ params["w"] + params["b"]
        return {"y": y, "s": np.sum(y)}
    jac = tx.jacfwd(f)(params, x)
    assert set(jac) == {"y", "s"} and set(jac["y"]) == {"w", "b"}
    assert jac["y"]["w"].shape == (3, 2, 3) and jac["s"]["b"].shape == (3,)
    np.testing.assert_allclose(jac["y"]["b"], np.eye(3))
    np.testing.assert_allclose(jac["s"]["w"], np.tile(x[:, None], (1, 3)))
    both = tx.jacfwd(f, argnums=(0, 1))(params, x)
    assert isinstance(both["y"], tuple) and both["y"][1].shape == (3, 2)
    np.testing.assert_allclose(both["y"][1], params["w"].T)
    np.testing.assert_allclose(both["y"][0]["w"], jac["y"]["w"])


def test_jacfwd_argnums_has_aux_and_python_floats():
    def f(x, scale, n):
        return np.sin(x) * scale, {"n": n, "x2": x * 2}
    x = np.array([0.1, 0.2])
    jx, aux = tx.jacfwd(f, has_aux=True)(x, 3.0, 4)
    np.testing.assert_allclose(jx, np.diag(3 * np.cos(x)))
    assert aux["n"] == 4
    np.testing.assert_allclose(aux["x2"], x * 2)
    # A Python float in argnums is a float64 0-d array; elsewhere it stays static.
    js, _ = tx.jacfwd(f, argnums=1, has_aux=True)(x, 3.0, 4)
    assert js.shape == (2,) and js.dtype == np.float64
    np.testing.assert_allclose(js, np.sin(x))
    jboth, _ = tx.jacfwd(f, argnums=(1, 0), has_aux=True)(x, 3.0, 4)
    np.testing.assert_allclose(jboth[0], np.sin(x))
    np.testing.assert_allclose(jboth[1], np.diag(3 * np.cos(x)))
    assert tx.jacfwd(lambda s: s ** 2)(3.0) == 6.0


def test_jacfwd_randomness():
    x = np.array([1.0, 2.0, 3.0])

    def f(x):
        z = tnp.random.normal(size=3)
        return x * z, z
    with pytest.raises(tx.BatchingError, match="random"):
        tx.jacfwd(f, has_aux=True)(x)
    tx.random.seed(0)
    jac, z = tx.jacfwd(f, has_aux=True, randomness="same")(x)
    np.testing.assert_allclose(jac, np.diag(z))
    jac, z = tx.jacfwd(f, has_aux=True, randomness="different")(x)
    assert np.count_nonzero(jac - np.diag(np.diag(jac))) == 0
    assert jac[0, 0] == z[0]  # aux comes from the first basis vector's draw
    assert not np.allclose(np.diag(jac), z)  # the others drew their own numbers


def test_jacfwd_is_batched_not_unrolled():
    from transfuse._forward import _CACHE

    def f(x):
        return np.sin(x) * 2
    jac = tx.jacfwd(f)
    jac(np.ones(50))
    if JIT_MODE:  # the graph jit compiled (traced, simplified), not the eager runner's
        nodes = jac.lower(np.ones(50)).graph.nodes
    else:
        (entry,) = _CACHE.entries(f)
        nodes = entry.graph.nodes
    # One batched pushforward: the graph does not grow with the 50 basis vectors.
    assert len(nodes) < 30
    assert not any(n.prim.name == "sin" for n in nodes)  # primal unused: pruned
    assert sum(n.prim.name == "cos" for n in nodes) == 1


# ---------------------------------------------------------------------------------------
# Higher order and composition


def test_third_derivative_of_sin_by_nested_jvp():
    def d(f):
        return lambda x: tx.jvp(f, (x,), (np.ones_like(x),))[1]
    x = np.linspace(-2, 2, 7)
    np.testing.assert_allclose(d(d(d(np.sin)))(x), -np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(d(d(np.sin))(x), -np.sin(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("x0", [0.0, 1.5, -3.25])
def test_no_perturbation_confusion(x0):
    # d/dx [x * d/dy (x * y)] = d/dx [x * x] = 2x, with jvp nested in jvp over a closure.
    def outer(x):
        inner = lambda y: x * y  # noqa: E731
        return x * tx.jvp(inner, (np.float64(1.0),), (np.float64(1.0),))[1]
    _, t = tx.jvp(outer, (np.float64(x0),), (np.float64(1.0),))
    assert t == 2 * x0


def test_hessian_forward_over_reverse(jax):
    x = np.linspace(-1.0, 1.0, 5)

    def f(v):
        return np.sum(np.sin(v) * v)
    h = tx.hessian(f)(x)
    np.testing.assert_allclose(h, np.diag(2 * np.cos(x) - x * np.sin(x)), atol=1e-14)
    rng = _rng(14)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal(2)

    def g(a, b):
        return np.sum(np.tanh(a @ b) ** 2) + np.sum(a ** 3)
    ha = tx.hessian(g, argnums=(0, 1))(a, b)
    ja = jax.jit(jax.hessian(lambda a, b: jax.numpy.sum(jax.numpy.tanh(a @ b) ** 2)
                             + jax.numpy.sum(a ** 3), argnums=(0, 1)))(a, b)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(ha[i][j], ja[i][j], rtol=1e-10, atol=1e-12)


def test_hessian_vector_product_by_jvp_of_grad():
    x = _rng(15).standard_normal(4)
    v = _rng(16).standard_normal(4)

    def f(x):
        return np.sum(np.exp(x) * x[::-1])
    _, hvp = tx.jvp(tx.grad(f), (x,), (v,))
    np.testing.assert_allclose(hvp, tx.hessian(f)(x) @ v, rtol=1e-12)


def test_jvp_composes_with_vmap_and_grad():
    rng = _rng(17)
    xs, ts = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    per_row = tx.vmap(lambda x, t: tx.jvp(np.sin, (x,), (t,))[1])(xs, ts)
    np.testing.assert_allclose(per_row, np.cos(xs) * ts, rtol=1e-12)
    batched = tx.jvp(tx.vmap(np.sin), (xs,), (ts,))[1]
    np.testing.assert_allclose(batched, np.cos(xs) * ts, rtol=1e-12)
    # grad of a directional derivative: d/dx sum(cos(x) * t) = -sin(x) * t
    g = tx.grad(lambda x: np.sum(tx.jvp(np.sin, (x,), (ts[0],))[1]))(xs[0])
    np.testing.assert_allclose(g, -np.sin(xs[0]) * ts[0], rtol=1e-12)
    jj = tx.jacfwd(tx.jacfwd(lambda x: np.sin(x).sum()))(xs[0])
    np.testing.assert_allclose(jj, np.diag(-np.sin(xs[0])), atol=1e-15)


# ---------------------------------------------------------------------------------------
# Mutation and caching


def test_in_place_writes_inside_the_function():
    def f(x):
        buf = tnp.zeros(4)
        buf[1:3] = x * 2
        buf[0] += x[0] ** 2
        return buf
    x = np.array([1.5, -0.5])
    out, t = tx.jvp(f, (x,), (np.array([1.0, 10.0]),))
    np.testing.assert_allclose(out, [2.25, 3.0, -1.0, 0.0])
    np.testing.assert_allclose(t, [3.0, 2.0, 20.0, 0.0])


def test_writes_into_arguments_reach_the_caller():
    def f(x, y):
        y += 1.0
        return x * y
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    out, t = tx.jvp(f, (x, y), (np.ones(2), np.zeros(2)))
    np.testing.assert_array_equal(out, [4.0, 10.0])
    np.testing.assert_array_equal(t, [4.0, 5.0])
    np.testing.assert_array_equal(y, [4.0, 5.0])  # as eager NumPy would leave it


def test_rewritten_graphs_are_cached_by_signature():
    calls = []

    def f(x):
        calls.append(1)
        return np.sin(x) * x
    x = np.ones(3)
    tx.jvp(f, (x,), (x,))
    tx.jvp(f, (x * 2,), (x,))
    assert len(calls) == 1
    tx.jvp(f, (np.ones(4),), (np.ones(4),))
    assert len(calls) == 2
    tx.linearize(f, x)
    tx.linearize(f, x + 1)
    jac = tx.jacfwd(f)
    jac(x)
    jac(x + 1)
    assert len(calls) == 4
    tx.jvp(f, (x.astype(np.float32),), (x.astype(np.float32),))
    assert len(calls) == 5


# ---------------------------------------------------------------------------------------
# Errors


def test_integer_inputs_are_errors_naming_the_argument():
    with pytest.raises(tx.DTypeError, match=r"primals\[0\].*int64"):
        tx.jvp(lambda n: n * 2, (np.arange(3),), (np.arange(3),))
    with pytest.raises(tx.DTypeError, match=r"argument 1 \('n'\).*int64"):
        tx.jacfwd(lambda x, n: x * n, argnums=1)(np.ones(3), np.arange(3))
    with pytest.raises(tx.DTypeError, match=r"argument 0 \('k'\)"):
        tx.jacfwd(lambda k: k * 2.0)(3)
    with pytest.raises(tx.DTypeError, match="bool"):
        tx.jvp(lambda b: b, (np.array([True]),), (np.array([True]),))


def test_tangent_mismatches_are_clear_errors():
    x = np.ones(3)
    with pytest.raises(tx.ShapeError, match=r"primals\[0\].*\(4,\).*\(3,\)") as info:
        tx.jvp(np.sin, (x,), (np.ones(4),))
    assert "test_forward_api.py" in str(info.value)  # where: the user's line
    with pytest.raises(tx.DTypeError, match="float32"):
        tx.jvp(np.sin, (x,), (np.ones(3, np.float32),))
    with pytest.raises(tx.TransfuseValueError, match="structure"):
        tx.jvp(lambda a, b: a * b, (x, x), (x,))
    with pytest.raises(tx.TransfuseTypeError, match="tuple"):
        tx.jvp(np.sin, x, x)


def test_bad_outputs_are_clear_errors():
    x = np.ones(3)
    with pytest.raises(tx.TransfuseTypeError, match="must return arrays"):
        tx.jvp(lambda x: "hello", (x,), (x,))
    with pytest.raises(tx.TransfuseTypeError, match=r"\(output, aux\)"):
        tx.jvp(lambda x: x, (x,), (x,), has_aux=True)
    with pytest.raises(tx.TransfuseTypeError, match="at least one array"):
        tx.jacfwd(lambda x: None)(x)


def test_bad_arguments_to_jacfwd():
    with pytest.raises(tx.TransfuseValueError, match="out of range"):
        tx.jacfwd(np.sin, argnums=2)(np.ones(2))
    with pytest.raises(tx.TransfuseValueError, match="randomness"):
        tx.jacfwd(np.sin, randomness="sometimes")
    with pytest.raises(tx.TransfuseValueError, match="repeats"):
        tx.jacfwd(lambda a, b: a * b, argnums=(0, 0))(np.ones(2), np.ones(2))
