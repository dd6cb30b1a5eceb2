"""transfuse.compile (issue #18): aot_function / aot_module give the eager outputs and
gradients (and JAX's, float64), compose with grad, vmap(grad) and jit, and the min-cut
partitioner saves strictly fewer bytes than the default without recomputing a contraction
or a reduction in the backward graph."""

import functools

import numpy as np
import pytest
from transfuse.ir.errors import UnsupportedError

import transfuse as tx
from transfuse import nn
from transfuse.compile import (
    aot_function,
    aot_module,
    default_partition,
    jit_compile,
    memory_efficient_fusion,
    min_cut_rematerialization_partition,
    nop,
    print_compile,
    saved_bytes,
)
from transfuse.compile.partition import RECOMPUTABLE

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy


# ---------------------------------------------------------------------------------------
# The programs, written once for NumPy (traced by transfuse) and once for jax.numpy


def mlp(xp):
    def f(x, w1, b1, w2, b2):
        h = xp.maximum(x @ w1 + b1, 0.0)
        return xp.sum((h @ w2 + b2) ** 2)
    return f


def gelu_block(xp):
    def f(x, w1, w2):
        h = x @ w1
        g = 0.5 * h * (1.0 + xp.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))
        return xp.sum((g @ w2) ** 2)
    return f


def layernorm(xp):
    def f(x, gamma, beta):
        mu = xp.mean(x, axis=-1, keepdims=True)
        var = xp.mean((x - mu) ** 2, axis=-1, keepdims=True)
        y = (x - mu) / xp.sqrt(var + 1e-5) * gamma + beta
        return xp.sum(xp.sin(y))
    return f


def attention(xp):
    def f(q, k, v):
        s = q @ k.T / np.sqrt(q.shape[-1])
        s = s - xp.max(s, axis=-1, keepdims=True)
        p = xp.exp(s)
        p = p / xp.sum(p, axis=-1, keepdims=True)
        return xp.sum(xp.cos(p @ v))
    return f


def _args(name, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"mlp": [(4, 6), (6, 8), (8,), (8, 3), (3,)],
              "gelu_block": [(4, 6), (6, 8), (8, 3)],
              "layernorm": [(4, 6), (6,), (6,)],
              "attention": [(5, 4), (5, 4), (5, 3)]}[name]
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


PROGRAMS = {f.__name__: f for f in (mlp, gelu_block, layernorm, attention)}
PARTITIONERS = [default_partition, min_cut_rematerialization_partition]


@functools.cache
def _jax_grads(name):
    args = _args(name)
    return jax.jit(jax.grad(PROGRAMS[name](jnp), argnums=tuple(range(len(args)))))(*args)


def _grad_all(f, args):
    return tx.grad(f, argnums=tuple(range(len(args))))(*args)


@pytest.mark.parametrize("partition_fn", PARTITIONERS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("name", PROGRAMS)
def test_outputs_and_gradients_match_eager_and_jax(name, partition_fn):
    args = _args(name)
    f = PROGRAMS[name](np)
    compiled = aot_function(f, nop, partition_fn=partition_fn)
    np.testing.assert_allclose(compiled(*args), f(*args), rtol=1e-12)
    got = _grad_all(compiled, args)
    for g, e, j in zip(got, _grad_all(f, args), _jax_grads(name)):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g, np.asarray(j), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", PROGRAMS)
def test_min_cut_saves_fewer_bytes_and_never_recomputes_a_contraction(name):
    args = _args(name)
    f = PROGRAMS[name](np)
    default = aot_function(f, nop).partition(*args)
    min_cut = aot_function(f, nop, partition_fn=min_cut_rematerialization_partition)
    part = min_cut.partition(*args)
    assert part.saved_bytes < default.saved_bytes
    assert saved_bytes(min_cut, *args) == part.saved_bytes
    arguments = sum(a.nbytes for a, v in zip(args, part.forward.inputs) if v in part.saved)
    assert saved_bytes(min_cut, *args, include_arguments=False) == \
        part.saved_bytes - arguments < part.saved_bytes
    # Every node of the backward graph that is not recomputable (contractions,
    # reductions) depends on a cotangent: it is backward work, not a recomputation.
    cts = set(part.backward.inputs[part.num_saved:])
    reached = set(cts)
    for node in part.backward.nodes:
        from_ct = any(v in reached for v in node.inputs)
        if from_ct:
            reached.update(node.outputs)
        assert from_ct or node.prim in RECOMPUTABLE, node.prim.name
    # ... and the forward graph computes every contraction of the original program.
    def count(graph, prim):
        return sum(n.prim.name == prim for n in graph.nodes)
    assert count(part.forward, "dot_general") == count(default.forward, "dot_general")


def test_float32_outputs_and_gradients():
    args = _args("gelu_block", np.float32, seed=3)
    f = gelu_block(np)
    compiled = aot_function(f, nop, partition_fn=min_cut_rematerialization_partition)
    out = compiled(*args)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, f(*args), rtol=1e-5)
    want = jax.jit(jax.grad(gelu_block(jnp), argnums=(0, 1, 2)))(
        *[a.astype(np.float64) for a in args])
    for g, j in zip(_grad_all(compiled, args), want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, np.asarray(j), rtol=2e-4, atol=2e-4)


def test_derivative_is_the_compiled_backward_and_finite_differences_agree():
    calls = []

    def counting(graph, avals):
        run = nop(graph, avals)
        calls.append(graph.name)
        return lambda *a: (calls.append("ran " + graph.name), run(*a))[1]

    f = layernorm(np)
    compiled = aot_function(f, counting, partition_fn=min_cut_rematerialization_partition)
    x, gamma, beta = _args("layernorm", seed=5)
    g = tx.grad(compiled)(x, gamma, beta)
    assert sorted(c for c in calls if c.startswith("ran")) == ["ran f_bwd", "ran f_fwd"]
    eps, fd = 1e-6, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        fd[i] = (f(x + d, gamma, beta) - f(x - d, gamma, beta)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_vmap_grad_and_grad_of_grad_of_an_aot_function():
    f = attention(np)
    q, k, v = _args("attention", seed=7)
    compiled = aot_function(f, nop, partition_fn=min_cut_rematerialization_partition)
    # vmap(grad) over a batch of queries vs a Python loop of the eager gradient
    qs = np.random.default_rng(8).standard_normal((3, *q.shape))
    batched = tx.vmap(tx.grad(compiled), in_dims=(0, None, None))(qs, k, v)
    values = tx.vmap(compiled, in_dims=(0, None, None))(qs, k, v)
    for i in range(3):
        np.testing.assert_allclose(batched[i], tx.grad(f)(qs[i], k, v), rtol=1e-11)
        np.testing.assert_allclose(values[i], f(qs[i], k, v), rtol=1e-13)
    # grad of grad (through the backward graph): a Hessian-vector product
    t = np.random.default_rng(9).standard_normal(q.shape)
    hvp = tx.grad(lambda a: np.sum(tx.grad(compiled)(a, k, v) * t))(q)
    want = jax.jit(jax.grad(lambda a: jnp.sum(jax.grad(attention(jnp))(a, k, v) * t)))(q)
    np.testing.assert_allclose(hvp, np.asarray(want), rtol=1e-9, atol=1e-10)


def test_jit_of_an_aot_function_and_its_gradient():
    def f(x, y):
        return np.sum(np.cos(np.cos(x * y)))

    compiled = aot_function(f, nop, partition_fn=min_cut_rematerialization_partition)
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal(7), rng.standard_normal(7)
    # one compiled program: the function and its gradient (the graphs inlined and fused)
    both = tx.jit(lambda a, b: (compiled(a, b), tx.grad(compiled, argnums=(0, 1))(a, b)))
    out, (gx, gy) = both(x, y)
    np.testing.assert_allclose(out, f(x, y), rtol=1e-13)
    want = jax.grad(lambda a, b: jnp.sum(jnp.cos(jnp.cos(a * b))), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, np.asarray(want[0]), rtol=1e-12)
    np.testing.assert_allclose(gy, np.asarray(want[1]), rtol=1e-12)
    # min-cut saves x and y; inlined into one program, the backward recomputes x * y (and
    # cos of it) from them behind optimization barriers, so neither CSE nor fusion moves
    # the recomputation into the forward pass (whose values would then live in between)
    graph = both.lower(x, y).graph
    guarded = {n.outputs[0] for n in graph.nodes if n.prim.name == "optimization_barrier"}
    assert any(n.prim.name == "mul" and set(n.inputs) == guarded for n in graph.nodes)


def test_aot_module_parameters_are_inputs():
    nn.init.seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 2))
    compiled = aot_module(model, nop, partition_fn=min_cut_rematerialization_partition)
    x = np.random.default_rng(1).standard_normal((4, 6))
    np.testing.assert_allclose(compiled(x), model(x), rtol=1e-12)
    params = dict(model.named_parameters())

    def loss(module, prefix):
        def run(p, x):
            return np.sum(nn.functional_call(module, {prefix + k: w for k, w in p.items()},
                                             (x,)) ** 2)
        return run

    got = tx.grad(loss(compiled, "orig_module."))(params, x)
    want = tx.grad(loss(model, ""))(params, x)
    assert set(got) == set(want) and len(got) == 6
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-11, atol=1e-12)
    # a changed parameter is read, not baked in
    model[0].weight[...] = model[0].weight * 2
    np.testing.assert_allclose(compiled(x), model(x), rtol=1e-12)
    assert saved_bytes(compiled, x) > 0


def test_print_compile_prints_both_graphs_with_source_lines(capsys):
    def f(x):
        return np.sum(np.sin(x) * x)

    compiled = aot_function(f, print_compile)
    x = np.linspace(-1.0, 1.0, 5)
    np.testing.assert_allclose(tx.grad(compiled)(x), np.cos(x) * x + np.sin(x), rtol=1e-13)
    printed = capsys.readouterr().out
    assert "graph f_fwd(" in printed and "graph f_bwd(" in printed
    assert "test_aot_autograd.py:" in printed


def test_memory_efficient_fusion_runs_numba_on_both_graphs():
    f = gelu_block(np)
    args = _args("gelu_block", seed=11)
    fused = memory_efficient_fusion(f)
    part = fused.partition(*args)
    assert fused.fw_compiler is jit_compile and fused.bw_compiler is jit_compile
    assert part.saved_bytes < aot_function(f, nop).partition(*args).saved_bytes
    np.testing.assert_allclose(fused(*args), f(*args), rtol=1e-12)
    for g, e in zip(_grad_all(fused, args), _grad_all(f, args)):
        np.testing.assert_allclose(g, e, rtol=1e-11, atol=1e-12)


def test_zero_d_and_size_zero_inputs():
    def f(x, s):
        return np.sum(np.tanh(x) * s)

    compiled = aot_function(f, nop, partition_fn=min_cut_rematerialization_partition)
    s = np.float64(0.7)
    x = np.random.default_rng(2).standard_normal(3)
    gx, gs = tx.grad(compiled, argnums=(0, 1))(x, s)
    np.testing.assert_allclose(gx, s * (1 - np.tanh(x) ** 2), rtol=1e-13)
    np.testing.assert_allclose(gs, np.sum(np.tanh(x)), rtol=1e-13)
    gx0, gs0 = tx.grad(compiled, argnums=(0, 1))(np.zeros(0), s)
    assert gx0.shape == (0,) and gs0 == 0.0
    # nothing differentiable: no cotangents, nothing saved
    ints = aot_function(lambda i: i * 3, nop, partition_fn=min_cut_rematerialization_partition)
    np.testing.assert_array_equal(ints(np.arange(4)), np.arange(4) * 3)
    assert ints.partition(np.arange(4)).saved_bytes == 0


def test_bad_inputs_raise_named_errors():
    with pytest.raises(TypeError, match="aot_function needs a callable"):
        aot_function(3, nop)
    with pytest.raises(TypeError, match="aot_module needs a transfuse.nn.Module"):
        aot_module(lambda x: x, nop)

    def draws(x):
        return x + np.random.normal(size=x.shape)

    with pytest.raises(UnsupportedError, match="random"):
        aot_function(draws, nop)(np.ones(2))
    # forward mode is refused, as for any function with a custom VJP (JAX's choice too)
    sine = aot_function(np.sin, nop)
    with pytest.raises(UnsupportedError, match="forward-mode"):
        tx.jvp(sine, (np.ones(2),), (np.ones(2),))


def test_tutorial_runs_and_min_cut_halves_the_saved_bytes():
    from tests.test_tutorials import load

    res = load("aot_autograd").main(with_jit=False, show=False)
    assert res["output_diff"] == 0.0 and res["grad_diff"] < 1e-13
    assert res["min_cut_grad_diff"] < 1e-13
    assert (res["default_saved"], res["min_cut_saved"]) == (16000, 8000)


def test_a_captured_array_changed_in_place_recompiles():
    scale = np.array([1.0, 2.0, 3.0])

    def f(x):
        return np.sum(np.sin(x) * scale)

    compiled = aot_function(f, nop, partition_fn=min_cut_rematerialization_partition)
    x = np.random.default_rng(12).standard_normal(3)
    first = tx.grad(compiled)(x)
    np.testing.assert_allclose(first, np.cos(x) * scale, rtol=1e-13)
    scale *= -2.0
    np.testing.assert_allclose(compiled(x), f(x), rtol=1e-13)
    np.testing.assert_allclose(tx.grad(compiled)(x), np.cos(x) * scale, rtol=1e-13)


def test_decompositions_replace_a_primitive_before_differentiation():
    def f(x):
        return np.sum(np.tanh(x) ** 2)

    def tanh_by_exp(x):
        return 2.0 / (1.0 + np.exp(-2.0 * x)) - 1.0

    compiled = aot_function(f, nop, decompositions={"tanh": tanh_by_exp})
    x = np.random.default_rng(13).standard_normal(4)
    part = compiled.partition(x)
    names = {n.prim.name for g in (part.forward, part.backward) for n in g.nodes}
    assert "tanh" not in names and "exp" in names
    np.testing.assert_allclose(compiled(x), f(x), rtol=1e-13)
    np.testing.assert_allclose(tx.grad(compiled)(x), tx.grad(f)(x), rtol=1e-12)


def test_grad_wrt_parameters_only_never_computes_the_data_cotangent():
    ran = []

    def recording(graph, avals):
        run = nop(graph, avals)
        return lambda *a: (ran.append(graph), run(*a))[1]

    f = mlp(np)
    compiled = aot_function(f, recording, partition_fn=min_cut_rematerialization_partition)
    x, *params = _args("mlp")
    got = tx.grad(compiled, argnums=(1, 2, 3, 4))(x, *params)
    for g, j in zip(got, _jax_grads("mlp")[1:]):
        np.testing.assert_allclose(g, np.asarray(j), rtol=1e-10, atol=1e-12)
    backward = ran[-1]
    full = compiled.partition(x, *params).backward
    assert [v.aval.shape for v in full.outputs][0] == x.shape  # dx is part of the full one
    # The backward graph that ran returns the parameters' cotangents only, and computes
    # no value of x's shape (dx = dh @ w1.T is pruned: one product fewer).
    assert [v.aval.shape for v in backward.outputs] == [p.shape for p in params]
    assert all(v.aval.shape != x.shape for n in backward.nodes for v in n.outputs)

    def products(graph):
        return sum(n.prim.name == "dot_general" for n in graph.nodes)
    assert products(backward) == products(full) - 1 == 3

