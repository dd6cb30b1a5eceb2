"""vmap beyond the catalogue: creation stays unbatched, graph inspection, nesting, mutation.

Every function of the catalogue (tests/opinfo.py) is checked against a loop, for each way of
batching its arguments and for an empty batch, by tests/test_opinfo.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from transfuse.compiler.batching import batch_graph
from transfuse.ir import Aval, interpret, lax, trace_to_graph
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.tracing import bind

import transfuse as tx
import transfuse.numpy as tnp

P = PRIMITIVES
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
NO_DIMS = ((), ())


def _call_graph():
    def body(x, y):
        return [lax.mul(lax.sin(x), y), lax.reduce_sum(lax.add(x, y), (0,))]
    graph, _ = trace_to_graph(body, [Aval((3,), F64), Aval((2, 3), F64)], "inner")
    return graph


@pytest.mark.parametrize("name, params", [
    ("iota", dict(shape=(2, 3), dimension=1, dtype=np.dtype(np.int32))),
    ("full", dict(shape=(3,), dtype=F32, value=1.5)),
])
def test_creation_primitives_stay_unbatched(name, params):
    x = np.random.default_rng(1).normal(size=(4, 2))
    graph = tx.make_graph(tx.vmap(lambda x: (x, bind(P[name], **params)), out_dims=(0, None)))(x)
    node = next(n for n in graph.nodes if n.prim is P[name])
    assert node.outputs[0].aval.shape == params["shape"]
    xs, made = tx.vmap(lambda x: (x, bind(P[name], **params)))(x)
    expected = P[name].impl(**params)
    np.testing.assert_array_equal(made, np.stack([expected] * 4))




@pytest.mark.parametrize("in_dims", [(0, 0), (0, None), (None, 1)])
def test_a_call_node_batches_like_a_loop(in_dims):
    graph = _call_graph()
    rng = np.random.default_rng(3)
    xs, ys = rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (2, 4, 3))
    x_args = xs if in_dims[0] == 0 else xs[0]
    y_args = np.moveaxis(ys, 1, 0) if in_dims[1] == 0 else ys if in_dims[1] == 1 else ys[:, 0]

    def f(x, y):
        return bind(P["call"], x, y, graph=graph)

    got = tx.vmap(f, in_dims=in_dims)(x_args, y_args)
    loop = [f(xs[b] if in_dims[0] == 0 else xs[0],
              ys[:, b] if in_dims[1] is not None else ys[:, 0]) for b in range(4)]
    for g, parts in zip(got, zip(*loop)):
        np.testing.assert_allclose(g, np.stack(parts), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Graph inspection: one batched contraction, nothing per example, no broadcast weight


def _count(graph, name):
    return sum(n.prim.name == name for n in graph.nodes)


@pytest.mark.parametrize("weight_as", ["closure", "argument"])
def test_matmul_with_unbatched_weight_is_one_dot(weight_as):
    rng = np.random.default_rng(2)
    w = rng.normal(size=(3, 4))
    if weight_as == "closure":
        make = lambda: tx.make_graph(tx.vmap(lambda x: np.tanh(x @ w)))
        graphs = [make()(rng.normal(size=(b, 3))) for b in (2, 7)]
    else:
        make = lambda: tx.make_graph(tx.vmap(lambda x, w: np.tanh(x @ w), in_dims=(0, None)))
        graphs = [make()(rng.normal(size=(b, 3)), w) for b in (2, 7)]
    for graph in graphs:
        assert _count(graph, "dot_general") == 1
        assert _count(graph, "broadcast_in_dim") == 0
        dot = next(n for n in graph.nodes if n.prim.name == "dot_general")
        assert dot.inputs[1].aval.shape == (3, 4)  # the weight, as it is
    assert len(graphs[0].nodes) == len(graphs[1].nodes)


def test_batched_weights_are_one_batched_dot():
    rng = np.random.default_rng(3)
    xs, ws = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 3, 4))
    graph = tx.make_graph(tx.vmap(lambda x, w: x @ w))(xs, ws)
    assert _count(graph, "dot_general") == 1
    np.testing.assert_allclose(tx.vmap(lambda x, w: x @ w)(xs, ws), xs @ ws, rtol=1e-12)


@pytest.mark.parametrize("dims", [(0, None), (None, 0), (0, 0)])
def test_conv_batches_into_one_conv(dims):
    rng = np.random.default_rng(4)
    b = 3
    x = rng.normal(size=(2, 4, 6, 6)).astype(np.float32)
    w = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
    args = [np.stack([x + i for i in range(b)]) if dims[0] == 0 else x,
            np.stack([w * (i + 1) for i in range(b)]) if dims[1] == 0 else w]

    def f(x, w):
        return lax.conv_general_dilated(x, w, (1, 2), ((1, 1), (0, 1)),
                                        feature_group_count=2)

    graph = tx.make_graph(tx.vmap(f, in_dims=dims))(*args)
    assert _count(graph, "conv") == 1
    assert _count(graph, "broadcast_in_dim") == 0
    got = tx.vmap(f, in_dims=dims)(*args)
    expected = np.stack([f(args[0][i] if dims[0] == 0 else x, args[1][i] if dims[1] == 0 else w)
                         for i in range(b)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_batch_graph_keeps_unbatched_inputs_and_reports_out_dims():
    def body(x, w, s):
        return [lax.dot_general(x, w, (((1,), (0,)), NO_DIMS)), lax.mul(s, 2.0)]
    graph, _ = trace_to_graph(body, [Aval((2, 3), F64), Aval((3, 4), F64), Aval((), F64)])
    batched, out_dims = batch_graph(graph, [1, None, None], 5)
    assert [v.aval.shape for v in batched.inputs] == [(2, 5, 3), (3, 4), ()]
    assert out_dims[1] is None
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(2, 5, 3)), rng.normal(size=(3, 4))
    out, doubled = interpret(batched, [x, w, np.float64(1.5)])
    expected = np.stack([x[:, i] @ w for i in range(5)])
    np.testing.assert_allclose(np.moveaxis(out, out_dims[0], 0), expected, rtol=1e-12)
    assert doubled == 3.0


def test_nodes_keep_user_source_lines():
    w = np.random.default_rng(6).normal(size=(3, 3))

    def f(x):
        return np.sin(x @ w)  # the line

    graph = tx.make_graph(tx.vmap(f))(np.ones((2, 3)) * 0.5)
    sin = next(n for n in graph.nodes if n.prim.name == "sin")
    assert sin.source is not None and sin.source.function == "f"
    assert sin.source.line == f.__code__.co_firstlineno + 1


# ---------------------------------------------------------------------------------------
# Nesting and composition


def test_nested_vmap_three_deep():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 5))

    def f(a, b):
        return np.sum(a * b)

    # out[i, j, k, l] = f(x[i, j, k], y[j, l])
    inner = tx.vmap(f, in_dims=(None, 0))
    mid = tx.vmap(inner, in_dims=(0, None))
    outer = tx.vmap(tx.vmap(mid, in_dims=(0, 0)), in_dims=(0, None))
    got = outer(x, y)
    expected = np.einsum("ijk,jl->ijkl", x, y)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_vmap_closing_over_outer_batched_value():
    rng = np.random.default_rng(9)
    xs, ys = rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    got = tx.vmap(lambda x: tx.vmap(lambda y: np.dot(x, y))(ys))(xs)
    np.testing.assert_allclose(got, xs @ ys.T, rtol=1e-12)


def mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    return np.mean((h @ w2 + b2 - y) ** 2)


def _mlp(rng, dtype=np.float64):
    return tuple(a.astype(dtype) for a in (rng.normal(size=(3, 8)), rng.normal(size=8),
                                           rng.normal(size=(8, 2)), rng.normal(size=2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_sample_gradients_of_an_mlp(dtype):
    rng = np.random.default_rng(10)
    params = _mlp(rng, dtype)
    x, y = rng.normal(size=(6, 3)).astype(dtype), rng.normal(size=(6, 2)).astype(dtype)
    grads = tx.vmap(tx.grad(mlp_loss), in_dims=(None, 0, 0))(params, x, y)
    loop = [tx.grad(mlp_loss)(params, x[i], y[i]) for i in range(6)]
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for k in range(4):
        assert grads[k].dtype == dtype
        np.testing.assert_allclose(grads[k], np.stack([g[k] for g in loop]), rtol=tol,
                                   atol=tol)


def cnn_loss(params, x, label):
    w, v = params
    h = lax.conv_general_dilated(x[None], w, (1, 1), ((1, 1), (1, 1)))
    h = np.maximum(h, 0.0).reshape(-1)
    logits = v @ h
    return -(logits[label] - np.log(np.sum(np.exp(logits))))


def test_per_sample_gradients_of_a_cnn():
    rng = np.random.default_rng(11)
    params = (rng.normal(size=(2, 1, 3, 3)) * 0.5, rng.normal(size=(3, 2 * 4 * 4)) * 0.1)
    x = rng.normal(size=(5, 1, 4, 4))
    labels = rng.integers(0, 3, size=5)
    grads = tx.vmap(tx.grad(cnn_loss), in_dims=(None, 0, 0))(params, x, labels)
    for k in range(2):
        loop = np.stack([tx.grad(cnn_loss)(params, x[i], labels[i])[k] for i in range(5)])
        np.testing.assert_allclose(grads[k], loop, rtol=1e-10, atol=1e-12)


def test_ensemble_over_stacked_parameters():
    rng = np.random.default_rng(12)
    models = [_mlp(rng) for _ in range(4)]
    stacked = tuple(np.stack(p) for p in zip(*models))
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    losses = tx.vmap(mlp_loss, in_dims=(0, None, None))(stacked, x, y)
    np.testing.assert_allclose(losses, [mlp_loss(m, x, y) for m in models], rtol=1e-12)
    grads = tx.vmap(tx.grad(mlp_loss), in_dims=(0, None, None))(stacked, x, y)
    for k in range(4):
        loop = np.stack([tx.grad(mlp_loss)(m, x, y)[k] for m in models])
        np.testing.assert_allclose(grads[k], loop, rtol=1e-12, atol=1e-12)


def test_conv_ensemble_over_stacked_kernels():
    rng = np.random.default_rng(13)
    kernels = rng.normal(size=(3, 2, 1, 3, 3))
    x = rng.normal(size=(4, 1, 5, 5))

    def net(w, x):
        return np.sum(np.tanh(lax.conv_general_dilated(x, w, (1, 1), ((0, 0), (0, 0)))))

    got = tx.vmap(net, in_dims=(0, None))(kernels, x)
    np.testing.assert_allclose(got, [net(k, x) for k in kernels], rtol=1e-12)


def test_grad_of_vmap():
    rng = np.random.default_rng(14)
    params = _mlp(rng)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    total = lambda p: np.sum(tx.vmap(mlp_loss, in_dims=(None, 0, 0))(p, x, y))
    got = tx.grad(total)(params)
    expected = tx.grad(lambda p: sum(mlp_loss(p, x[i], y[i]) for i in range(6)))(params)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_vmap_of_jacrev():
    rng = np.random.default_rng(15)
    xs = rng.normal(size=(4, 3))
    f = lambda x: np.sin(x) * np.sum(x ** 2)
    got = tx.vmap(tx.jacrev(f))(xs)
    assert got.shape == (4, 3, 3)
    for i in range(4):
        np.testing.assert_allclose(got[i], tx.jacrev(f)(xs[i]), rtol=1e-12)


def test_vmap_of_vjp():
    rng = np.random.default_rng(16)
    xs, cts = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    f = lambda x: np.tanh(x) * x[0]

    def pullback(x, ct):
        _, fn = tx.vjp(f, x)
        return fn(ct)[0]

    got = tx.vmap(pullback)(xs, cts)
    np.testing.assert_allclose(got, np.stack([pullback(x, c) for x, c in zip(xs, cts)]),
                               rtol=1e-12)


def test_jacfwd_of_vmap():
    jacfwd = tx.jacfwd
    rng = np.random.default_rng(17)
    xs = rng.normal(size=(3, 2))
    f = tx.vmap(lambda x: np.sin(x) * x[1])
    jac = jacfwd(f)(xs)
    assert jac.shape == (3, 2, 3, 2)
    for i, j in itertools.product(range(3), range(3)):
        if i != j:
            np.testing.assert_array_equal(jac[i, :, j], 0)
    np.testing.assert_allclose(jac, tx.jacrev(f)(xs), rtol=1e-12, atol=1e-14)


def test_vmap_of_jacfwd_and_of_grad_of_grad():
    jacfwd = tx.jacfwd
    rng = np.random.default_rng(24)
    xs = rng.normal(size=(4, 3))
    f = lambda x: np.cos(x) * np.sum(x)
    got = tx.vmap(jacfwd(f))(xs)
    for i in range(4):
        np.testing.assert_allclose(got[i], tx.jacrev(f)(xs[i]), rtol=1e-12, atol=1e-14)
    s = rng.normal(size=5)
    second = tx.vmap(tx.grad(tx.grad(lambda t: np.sin(t) * t)))(s)
    np.testing.assert_allclose(second, 2 * np.cos(s) - s * np.sin(s), rtol=1e-12)


def test_vmap_of_hessian():
    hessian = tx.hessian
    rng = np.random.default_rng(18)
    xs = rng.normal(size=(4, 3))
    f = lambda x: np.sum(np.sin(x) * x[0])
    got = tx.vmap(hessian(f))(xs)
    for i in range(4):
        np.testing.assert_allclose(got[i], hessian(f)(xs[i]), rtol=1e-12, atol=1e-14)


def test_vmap_of_jvp():
    jvp = tx.jvp
    rng = np.random.default_rng(19)
    xs, ts = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    f = lambda x: np.exp(x) * x[2]
    push = lambda x, t: jvp(f, (x,), (t,))[1]
    got = tx.vmap(push)(xs, ts)
    np.testing.assert_allclose(got, np.stack([push(x, t) for x, t in zip(xs, ts)]),
                               rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Mutation under vmap (functionalize makes writes pure updates; those batch)


def test_fresh_buffer_receiving_batched_values_becomes_batched():
    rng = np.random.default_rng(20)
    xs = rng.normal(size=(4, 3))

    def f(x):
        buf = tnp.zeros(5)
        buf[1:4] = x * 2
        buf[0] = np.sum(x)
        return buf

    got = tx.vmap(f)(xs)
    expected = np.zeros((4, 5))
    expected[:, 1:4] = xs * 2
    expected[:, 0] = xs.sum(1)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_in_place_update_of_a_batched_argument_writes_back():
    rng = np.random.default_rng(21)
    xs = rng.normal(size=(3, 4))
    original = xs.copy()

    def f(x):
        x += 1.0
        x[0] = 7.0
        return x.sum()

    got = tx.vmap(f, in_dims=1)(xs.T.copy())
    expected = (original + 1.0)
    expected[:, 0] = 7.0
    np.testing.assert_allclose(got, expected.sum(1), rtol=1e-12)
    ys = xs.T.copy()
    tx.vmap(f, in_dims=1)(ys)
    np.testing.assert_allclose(ys, expected.T, rtol=1e-12)


def test_writing_batched_values_into_an_unbatched_argument_is_an_error():
    rng = np.random.default_rng(22)
    xs, acc = rng.normal(size=(3, 4)), np.zeros(4)

    def f(x, acc):
        acc += x
        return x

    with pytest.raises(tx.BatchingError, match="not batched"):
        tx.vmap(f, in_dims=(0, None))(xs, acc)
    np.testing.assert_array_equal(acc, 0)


def test_dynamic_index_write_with_batched_index():
    rng = np.random.default_rng(23)
    xs = rng.normal(size=(4, 6))
    idx = rng.integers(0, 6, size=4)

    def f(x, i):
        out = tnp.zeros_like(x)
        out[i] = x[i] * 3
        return out

    got = tx.vmap(f)(xs, idx)
    expected = np.zeros_like(xs)
    expected[np.arange(4), idx] = xs[np.arange(4), idx] * 3
    np.testing.assert_allclose(got, expected, rtol=1e-12)
