"""VJP rules beyond the catalogue: ties, zeros, sub-graph calls, the split, compositions.

Every function of the catalogue (tests/opinfo.py) is checked against central differences,
jax.vjp, its jvp and a second differentiation by tests/test_opinfo.py; this file holds
the special points and whole programs (against JAX and torch).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
from transfuse.compiler.functionalize import prepare
from transfuse.compiler.vjp import VJP_RULES, vjp_graph
from transfuse.ir import lax
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.tracing import bind

import transfuse as tx

P = PRIMITIVES


# ---------------------------------------------------------------------------------------
# Helpers


def random_like(rng, x) -> np.ndarray:
    x = np.asarray(x)
    return rng.standard_normal(x.shape).astype(x.dtype)


def numeric_vjp(fn: Callable, args: list, ct: Any, eps: float = 1e-6) -> list:
    """Central differences of <ct, fn(args)> with respect to each argument."""
    ct_leaves = tx.tree_leaves(ct)

    def pairing(*a):
        outs = tx.tree_leaves(fn(*a))
        return sum(float(np.sum(np.asarray(c) * np.asarray(o))) for c, o in zip(ct_leaves, outs))

    grads = []
    for i, a in enumerate(args):
        g = np.zeros(a.shape, np.float64)
        for idx in np.ndindex(*a.shape):
            up, down = a.copy(), a.copy()
            up[idx] += eps
            down[idx] -= eps
            plus = pairing(*args[:i], up, *args[i + 1:])
            minus = pairing(*args[:i], down, *args[i + 1:])
            g[idx] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def assert_close(actual, expected, rtol=1e-6, atol=1e-6):
    for a, e in zip(tx.tree_leaves(actual), tx.tree_leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, (a.shape, e.shape)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def jax_vjp(jax, fn, args, ct):
    """jax.vjp of fn at args, pulled back along ct, in one jitted call (one XLA compile)."""
    def run(args, ct):
        out, pullback = jax.vjp(fn, *args)
        return out, pullback(ct)
    out, cts = jax.jit(run)(tuple(args), ct)
    return np.asarray(out), [np.asarray(c) for c in cts]


def _composite(x, y):
    # A sub-graph behind a `call` node with two outputs.
    return [lax.mul(lax.sin(x), y), lax.add(x, y)]


def _call_case(x, y):
    graph = tx.make_graph(_composite)(np.zeros(lax.shape(x), lax.dtype(x)),
                                      np.zeros(lax.shape(y), lax.dtype(y)))
    a, b = bind(P["call"], x, y, graph=graph)
    return lax.add(lax.mul(a, 2.0), lax.square(b))




def test_call_node_against_finite_differences():
    """A sub-graph behind a `call` node with two outputs, and its second derivative."""
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(3), rng.standard_normal(3)]
    out, vjp_fn = tx.vjp(_call_case, *args)
    ct = random_like(rng, out)
    assert_close(vjp_fn(ct), numeric_vjp(_call_case, args, ct), rtol=1e-5, atol=1e-6)

    def first(*xs):
        return tx.vjp(_call_case, *xs)[1](ct)

    outs, pullback = tx.vjp(first, *args)
    ct2 = tuple(random_like(rng, o) for o in outs)
    assert_close(pullback(ct2), numeric_vjp(first, args, ct2), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Specific semantics


NON_DIFFERENTIABLE = ["floor", "ceil", "round", "sign", "isnan", "isinf", "isfinite", "not",
                      "floor_div", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "xor",
                      "argmax", "argmin", "iota", "full", "random_uniform", "random_normal",
                      "random_fold_in", "random_split"]


@pytest.mark.parametrize("name", NON_DIFFERENTIABLE)
def test_non_differentiable_rules_give_no_cotangent(name):
    ins = [np.ones(3), np.ones(3)]
    assert list(VJP_RULES[P[name]](np.ones(3), ins, [np.ones(3)])) == [None, None]


def test_cast_cotangents_are_cast_back():
    x = np.array([0.5, 1.5, 2.0])
    out, vjp_fn = tx.vjp(lambda x: lax.convert(x, np.float32), x)
    assert out.dtype == np.float32
    (g,) = vjp_fn(np.array([1.0, 2.0, 3.0], np.float32))
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])
    # From an integer: no cotangent flows, the float input gets zeros.
    f = lambda x: lax.mul(x, lax.convert(lax.convert(x, np.int64), np.float64))
    np.testing.assert_array_equal(tx.grad(lambda x: lax.reduce_sum(f(x), (0,)))(x),
                                  np.floor(x))


def test_max_min_ties_split_the_cotangent_like_jax(jax64):
    jnp = jax64.numpy
    x = np.array([1.0, 2.0, 3.0, -1.0])
    y = np.array([1.0, 0.0, 3.0, -1.0])
    for ours, theirs in [(lax.max, jnp.maximum), (lax.min, jnp.minimum)]:
        _, vjp_fn = tx.vjp(ours, x, y)
        ct = np.array([1.0, 2.0, 4.0, 8.0])
        gx, gy = vjp_fn(ct)
        _, (jx, jy) = jax_vjp(jax64, theirs, [x, y], ct)
        np.testing.assert_array_equal(gx, np.asarray(jx))
        np.testing.assert_array_equal(gy, np.asarray(jy))
    np.testing.assert_array_equal(tx.grad(lambda x, y: lax.reduce_sum(lax.max(x, y), (0,)))(
        x, y), [0.5, 1.0, 0.5, 0.5])


def test_clip_ties_follow_jax_clamp_and_agree_with_jvp(jax64):
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    lo, hi = np.asarray(-0.5), np.asarray(0.5)
    ct = np.arange(1.0, 7.0)
    out, vjp_fn = tx.vjp(lambda x, lo, hi: lax.clip(x, lo, hi), x, lo, hi)
    gx, glo, ghi = vjp_fn(ct)
    np.testing.assert_array_equal(gx, [0, 0, 3, 0, 0, 0])
    assert glo == 1.0 and ghi == 5.0 + 6.0
    def clamp(x, lo, hi):
        full = jax64.numpy.broadcast_to
        return jax64.lax.clamp(full(lo, x.shape), x, full(hi, x.shape))

    _, (jx, jlo, jhi) = jax_vjp(jax64, clamp, [x, lo, hi], ct)
    np.testing.assert_array_equal(gx, jx)
    assert glo == jlo and ghi == jhi
    # lo > hi: the result is hi, so hi gets everything.
    _, vjp2 = tx.vjp(lambda x, lo, hi: lax.clip(x, lo, hi), x, hi, lo)
    np.testing.assert_array_equal(vjp2(ct)[2], ct.sum())
    jvp = getattr(tx, "jvp", None)
    if jvp is not None:
        tangents = (np.ones(6), np.asarray(2.0), np.asarray(3.0))
        _, t = jvp(lambda x, lo, hi: lax.clip(x, lo, hi), (x, lo, hi), tangents)
        rhs = sum(float(np.sum(g * u)) for g, u in zip((gx, glo, ghi), tangents))
        np.testing.assert_allclose(float(np.sum(ct * t)), rhs)


def test_reduce_max_ties_share_the_cotangent_equally(jax64):
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, -1.0]])
    g = tx.grad(lambda x: np.sum(np.max(x, axis=1) * np.array([1.0, 3.0])))(x)
    np.testing.assert_allclose(g, [[0, 0.5, 0.5, 0], [1, 1, 1, 0]])
    jnp = jax64.numpy
    expected = jax64.jit(jax64.grad(
        lambda x: jnp.sum(jnp.max(x, axis=1) * jnp.array([1.0, 3.0]))))(x)
    np.testing.assert_allclose(g, np.asarray(expected))
    gmin = tx.grad(lambda x: np.min(x))(np.array([0.0, 1.0, 0.0, 0.0]))
    np.testing.assert_allclose(gmin, [1 / 3, 0, 1 / 3, 1 / 3])


def test_pow_exponent_cotangent_is_zero_where_base_is_zero(jax64):
    x = np.array([0.0, 2.0, 0.0])
    y = np.array([2.0, 3.0, 0.5])
    gx, gy = tx.grad(lambda x, y: np.sum(np.power(x, y)), argnums=(0, 1))(x, y)
    assert np.all(np.isfinite(gy))
    np.testing.assert_allclose(gy, [0.0, 8.0 * np.log(2.0), 0.0])
    jnp = jax64.numpy
    jx, jy = jax64.jit(jax64.grad(lambda x, y: jnp.sum(jnp.power(x, y)), argnums=(0, 1)))(x, y)
    np.testing.assert_allclose(gy, np.asarray(jy))
    np.testing.assert_allclose(gx[:2], np.asarray(jx)[:2])
    # y == 0: the base's cotangent is 0 (not 0 * inf).
    gx0 = tx.grad(lambda x: np.sum(np.power(x, np.zeros(2))))(np.array([0.0, 3.0]))
    np.testing.assert_array_equal(gx0, [0.0, 0.0])


def test_products_with_zeros_are_exact():
    x = np.array([[2.0, 0.0, 3.0, 0.0], [1.5, 0.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    g = tx.grad(lambda x: np.sum(np.prod(x, axis=1)))(x)
    expected = np.zeros_like(x)
    for i, j in np.ndindex(*x.shape):
        expected[i, j] = np.prod(np.delete(x[i], j))
    np.testing.assert_array_equal(g, expected)
    # cumprod: only the first zero of a row gets a cotangent through later products.
    ct = np.arange(1.0, 13.0).reshape(3, 4)
    gc = tx.vjp(lambda x: np.cumprod(x, axis=1), x)[1](ct)[0]
    np.testing.assert_allclose(gc, numeric_vjp(lambda x: np.cumprod(x, axis=1), [x], ct)[0],
                               rtol=1e-8, atol=1e-8)
    assert gc[0, 3] == 0.0 and gc[0, 1] != 0.0


def test_call_rule_recomputes_the_sub_graph():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    graph = tx.make_graph(_composite)(x, y)
    outs = bind(P["call"], x, y, graph=graph)
    ct = rng.standard_normal(3)
    # Only the first output has a cotangent: None stands for zero.
    cx, cy = VJP_RULES[P["call"]]([ct, None], [x, y], outs, graph=graph)
    np.testing.assert_allclose(cx, ct * np.cos(x) * y)
    np.testing.assert_allclose(cy, ct * np.sin(x))


def test_forward_and_backward_are_split():
    x = np.linspace(0.1, 1.0, 5)
    graph = prepare(tx.make_graph(lambda x: np.sum(np.sin(x) * np.exp(x)))(x))
    halves = vjp_graph(graph, [True])
    forward_prims = {n.prim.name for n in halves.forward.nodes}
    backward_prims = {n.prim.name for n in halves.backward.nodes}
    assert {"sin", "exp"} <= forward_prims
    # The backward graph reads sin(x), exp(x), x as residuals instead of recomputing them.
    assert "exp" not in backward_prims and "sin" not in backward_prims
    assert "cos" in backward_prims
    assert halves.num_residuals >= 2


def test_backward_nodes_keep_the_user_source_line():
    x = np.linspace(0.1, 1.0, 5)

    def f(x):
        return np.sum(np.tanh(x))  # the line the backward nodes point at

    graph = prepare(tx.make_graph(f)(x))
    halves = vjp_graph(graph, [True])
    lines = {n.source.line for n in halves.backward.nodes if n.source is not None}
    assert f.__code__.co_firstlineno + 1 in lines


def test_captures_get_no_cotangent():
    # Inside an outer trace, the inner graph's captured value is an implicit input.
    def outer(x):
        inner = tx.grad(lambda y: np.sum(x * y * y))
        return np.sum(inner(x))

    x = np.array([1.0, 2.0])
    # d/dx sum(2 x^2) where the inner grad sees x as a constant: 4x.
    np.testing.assert_allclose(tx.grad(outer)(x), 4 * x)


# ---------------------------------------------------------------------------------------
# Compositions


def mlp_loss(params, x, y, xp):
    h = xp.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["w2"] + params["b2"]
    return xp.mean((out - y) ** 2)


def softmax_cross_entropy(logits, labels, xp):
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    logp = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    return -xp.mean(xp.sum(labels * logp, axis=1))


def logsumexp(x, xp):
    m = xp.max(x, axis=-1, keepdims=True)
    return xp.sum(xp.log(xp.sum(xp.exp(x - m), axis=-1)) + m[..., 0])


def layer_norm(x, gamma, beta, xp):
    mean = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return xp.sum(((x - mean) / xp.sqrt(var + 1e-5) * gamma + beta) ** 3)


def _mlp_params(rng):
    return {"w1": rng.standard_normal((4, 8)), "b1": rng.standard_normal(8),
            "w2": rng.standard_normal((8, 2)), "b2": rng.standard_normal(2)}


def test_mlp_loss(jax64):
    rng = np.random.default_rng(21)
    params = _mlp_params(rng)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    g = tx.grad(lambda p: mlp_loss(p, x, y, np))(params)
    expected = jax64.jit(jax64.grad(lambda p: mlp_loss(p, x, y, jax64.numpy)))(params)
    assert set(g) == set(params)
    for k in params:
        np.testing.assert_allclose(g[k], np.asarray(expected[k]), rtol=1e-10)


def test_softmax_cross_entropy_and_logsumexp(jax64):
    jnp = jax64.numpy
    rng = np.random.default_rng(22)
    logits = rng.standard_normal((6, 5))
    labels = np.eye(5)[rng.integers(0, 5, 6)]
    g = tx.grad(softmax_cross_entropy)(logits, labels, np)
    expected = jax64.jit(jax64.grad(lambda a, b: softmax_cross_entropy(a, b, jnp)))(logits,
                                                                                  labels)
    np.testing.assert_allclose(g, np.asarray(expected), rtol=1e-10, atol=1e-12)
    # The softmax cross-entropy gradient in closed form.
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(g, (softmax - labels) / 6, rtol=1e-10, atol=1e-12)
    gl = tx.grad(logsumexp)(logits, np)
    np.testing.assert_allclose(gl, softmax, rtol=1e-10)
    expected_l = jax64.jit(jax64.grad(lambda a: logsumexp(a, jnp)))(logits)
    np.testing.assert_allclose(gl, np.asarray(expected_l), rtol=1e-10)


def test_layer_norm(jax64):
    rng = np.random.default_rng(23)
    x, gamma, beta = rng.standard_normal((3, 6)), rng.standard_normal(6), rng.standard_normal(6)
    g = tx.grad(layer_norm, argnums=(0, 1, 2))(x, gamma, beta, np)
    expected = jax64.jit(jax64.grad(lambda *a: layer_norm(*a, jax64.numpy), argnums=(0, 1, 2)))(
        x, gamma, beta)
    for a, e in zip(g, expected):
        np.testing.assert_allclose(a, np.asarray(e), rtol=1e-9, atol=1e-10)
    assert_close(g, numeric_vjp(lambda *a: layer_norm(*a, np), [x, gamma, beta], 1.0),
                 rtol=1e-5, atol=1e-5)


def test_conv_layer_against_finite_differences():
    rng = np.random.default_rng(24)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4)

    def layer(x, w, b):
        y = lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)))
        return np.sum(np.tanh(y + b[:, None, None]))

    g = tx.grad(layer, argnums=(0, 1, 2))(x, w, b)
    assert_close(g, numeric_vjp(layer, [x, w, b], 1.0), rtol=1e-5, atol=1e-6)


TORCH_CONVS = [  # stride, padding, dilation, groups
    (1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (2, 1, 1, 2), (3, 0, 1, 4), (2, 2, 2, 4),
]


@pytest.mark.parametrize("stride,padding,dilation,groups", TORCH_CONVS)
def test_conv2d_gradients_against_torch(stride, padding, dilation, groups):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(25)
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((8, 4 // groups, 3, 3))

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), [(padding, padding)] * 2,
                                        rhs_dilation=(dilation, dilation),
                                        feature_group_count=groups)

    out, vjp_fn = tx.vjp(conv, x, w)
    ct = rng.standard_normal(out.shape)
    gx, gw = vjp_fn(ct)
    tx_, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tout = torch.nn.functional.conv2d(tx_, tw, stride=stride, padding=padding,
                                      dilation=dilation, groups=groups)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-10)
    tout.backward(torch.tensor(ct))
    np.testing.assert_allclose(gx, tx_.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
