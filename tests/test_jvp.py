"""JVP rules beyond the catalogue: ties and special points, zero tangents, the rewrite.

Every function of the catalogue (tests/opinfo.py) is checked against central differences
and jax.jvp by tests/test_opinfo.py; this file holds what a table of samples cannot say.
"""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.compiler.jvp import JVP_RULES, jvp_graph
from transfuse.ir import PRIMITIVES, interpret, verify
from transfuse.ir.tracing import bind

import transfuse as tx

P = PRIMITIVES


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def test_a_call_node_differentiates_its_sub_graph():
    """`call` (a sub-graph called as one node) against central differences."""
    def body(x, y):
        return [np.sin(x) * y, x + y]

    rng = np.random.default_rng(0)
    x, y, tx_, ty = (rng.standard_normal(3) for _ in range(4))
    graph = tx.make_graph(body)(x, y)

    def f(a, b):
        return bind(P["call"], a, b, graph=graph)

    _, tangents = tx.jvp(f, (x, y), (tx_, ty))
    h = 1e-6
    plus, minus = body(x + h * tx_, y + h * ty), body(x - h * tx_, y - h * ty)
    for t, p, m in zip(tangents, plus, minus):
        np.testing.assert_allclose(t, (p - m) / (2 * h), rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------------------------------
# Ties and special points: like JAX


@pytest.mark.parametrize("name,args,tangents", [
    ("max", [np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 4.0])],
     [np.array([2.0, 2.0, 2.0]), np.array([4.0, 4.0, 4.0])]),
    ("min", [np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 4.0])],
     [np.array([2.0, 2.0, 2.0]), np.array([4.0, 4.0, 4.0])]),
    ("pow", [np.array([0.0, 0.0, 2.0]), np.array([1.0, 2.0, 0.0])],
     [np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0])]),
    ("clip", [np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), np.array(0.0), np.array(1.0)],
     [np.ones(5), np.array(10.0), np.array(100.0)]),
    ("reduce_max", [np.array([[1.0, 3.0, 3.0, 3.0], [2.0, 0.0, 2.0, -1.0]])],
     [np.array([[5.0, 1.0, 2.0, 6.0], [1.0, 7.0, 3.0, 4.0]])]),
    ("reduce_min", [np.array([[1.0, 3.0, 1.0, 3.0]])], [np.array([[5.0, 1.0, 2.0, 6.0]])]),
])
def test_ties_and_special_points_match_jax(name, args, tangents, jax):
    params = {"axes": (1,)} if name.startswith("reduce") else {}
    f = lambda *a: bind(P[name], *a, **params)  # noqa: E731
    _, t = tx.jvp(f, tuple(args), tuple(tangents))
    jax_f = {"max": jax.numpy.maximum, "min": jax.numpy.minimum,
             "pow": jax.lax.pow, "clip": lambda x, lo, hi: jax.lax.clamp(
                 jax.numpy.broadcast_to(lo, x.shape), x, jax.numpy.broadcast_to(hi, x.shape)),
             "reduce_max": lambda x: jax.numpy.max(x, axis=1),
             "reduce_min": lambda x: jax.numpy.min(x, axis=1)}[name]
    _, expected = jax.jvp(jax_f, tuple(args), tuple(tangents))
    np.testing.assert_allclose(t, expected, rtol=1e-12)


def test_abs_at_zero_has_a_zero_tangent_like_reverse_mode():
    # Like torch (JAX passes +t): the subgradient sign(0) = 0, as the VJP of abs uses.
    x = np.array([0.0, -1.0, 2.0])
    _, t = tx.jvp(np.abs, (x,), (np.full(3, 3.0),))
    np.testing.assert_array_equal(t, [0.0, -3.0, 3.0])
    np.testing.assert_array_equal(tx.jacfwd(np.abs)(x), tx.jacrev(np.abs)(x))


def test_pow_at_zero_to_the_zero_has_a_zero_tangent():
    # Like torch (JAX gives 0 * inf = nan for a float exponent): d/dx x**0 = 0 at x = 0.
    _, t = tx.jvp(np.power, (np.array([0.0, 0.0]), np.array([0.0, 0.0])),
                  (np.array([1.0, 0.0]), np.array([0.0, 1.0])))
    np.testing.assert_array_equal(t, [0.0, 0.0])


def test_max_ties_split_the_tangent_in_half():
    _, t = tx.jvp(np.maximum, (np.array([1.0, 2.0]), np.array([1.0, 1.0])),
                  (np.array([2.0, 2.0]), np.array([4.0, 4.0])))
    np.testing.assert_array_equal(t, [3.0, 2.0])


def test_reduce_max_divides_the_tangent_among_ties():
    _, t = tx.jvp(lambda x: np.max(x), (np.array([3.0, 1.0, 3.0]),), (np.array([1.0, 5.0, 2.0]),))
    assert t == 1.5


# ---------------------------------------------------------------------------------------
# Non-differentiable primitives: zero tangents (of the output's dtype)


@pytest.mark.parametrize("fn,expected_dtype", [
    (np.floor, "float64"), (np.ceil, "float64"), (np.round, "float64"), (np.sign, "float64"),
    (np.isnan, "bool"), (np.isfinite, "bool"), (np.isinf, "bool"),
    (lambda x: x > 0.1, "bool"), (lambda x: x == x, "bool"), (lambda x: x // 0.3, "float64"),
    (lambda x: np.argmax(x, axis=0), "int64"), (lambda x: np.argmin(x), "int64"),
    (lambda x: x.astype(np.int32), "int32"), (lambda x: ~(x < 0), "bool"),
    (lambda x: (x < 0) & (x > -1), "bool"), (lambda x: (x < 0) | (x > 1), "bool"),
    (lambda x: (x < 0) ^ (x > -1), "bool"),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_non_differentiable_functions_have_zero_tangents(fn, expected_dtype):
    x = np.random.default_rng(3).standard_normal((3, 2))
    out, t = tx.jvp(fn, (x,), (np.ones_like(x),))
    assert t.dtype == np.dtype(expected_dtype) and t.shape == np.shape(out)
    assert not np.any(t)


def test_zero_rules_return_symbolic_zeros():
    x = np.array([0.5, -1.5])
    for name in ["floor", "ceil", "round", "sign", "isnan", "isinf", "isfinite"]:
        out, t = JVP_RULES[P[name]]([x], [np.ones(2)])
        assert t is None
        np.testing.assert_array_equal(out, P[name].impl(x))
    out, t = JVP_RULES[P["argmax"]]([x], [np.ones(2)], axis=0, index_dtype=np.dtype("int64"))
    assert t is None and out == 0


def test_random_draws_have_zero_tangents_and_are_shared_with_the_primal():
    import transfuse.numpy as tnp
    tx.random.seed(7)
    x = np.random.default_rng(4).standard_normal(5)
    f = lambda x: x * tnp.random.normal(size=5) + tnp.random.uniform(size=5)  # noqa: E731
    out, t = tx.jvp(f, (x,), (np.ones(5),))
    # out = x * z + u and t = z: one draw serves both.
    u = out - x * t
    assert np.all((u >= 0) & (u < 1)) and np.std(t) > 0


# ---------------------------------------------------------------------------------------
# The graph rewrite itself


def test_jvp_graph_layout_and_symbolic_zeros():
    def f(x, n, y):
        return np.sin(x) * y, n * 2, y + 1.0
    x, y = np.linspace(0.1, 1, 4), np.float64(2.0)
    n = np.arange(3)
    graph = tx.make_graph(f)(x, n, y)
    jg = verify(jvp_graph(graph, [True, False, False]))
    assert [str(a) for a in jg.in_avals] == ["f64[4]", "i64[3]", "f64[]", "f64[4]"]
    assert [str(a) for a in jg.out_avals] == ["f64[4]", "i64[3]", "f64[]", "f64[4]",
                                             "i64[3]", "f64[]"]
    outs = interpret(jg, [x, n, y, np.ones(4)])
    np.testing.assert_allclose(outs[3], np.cos(x) * y)
    assert outs[4].dtype == np.int64 and not outs[4].any()  # integer outputs: integer zeros
    assert outs[5] == 0.0
    # y has no tangent: no node of the y + 1.0 tangent exists, only its instantiated zero.
    assert sum(n.prim.name == "add" for n in jg.nodes) == 1


def test_jvp_graph_keeps_implicit_inputs_last():
    import transfuse.numpy as tnp

    def f(x):
        return x * tnp.random.uniform(size=3)
    graph = tx.make_graph(f)(np.ones(3))
    assert graph.has_rng
    jg = verify(jvp_graph(graph, [True]))
    assert jg.has_rng and jg.in_avals[-1].dtype == np.uint64 and len(jg.inputs) == 3
    key = np.asarray(11, dtype=np.uint64)
    out, t = interpret(jg, [np.full(3, 2.0), np.ones(3), key])
    np.testing.assert_allclose(out, 2 * t)


def test_integer_inputs_cannot_carry_tangents():
    graph = tx.make_graph(lambda n: n * 2)(np.arange(3))
    with pytest.raises(tx.DTypeError, match="int64"):
        jvp_graph(graph, [True])


def test_rules_keep_the_users_source_line():
    def f(x):
        return np.tanh(x)  # THIS LINE
    jg = jvp_graph(tx.make_graph(f)(np.ones(2)), [True])
    line = f.__code__.co_firstlineno + 1
    assert all(n.source is not None and n.source.line == line for n in jg.nodes
               if n.prim.name != "full")
