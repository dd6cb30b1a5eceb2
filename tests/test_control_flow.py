"""transfuse.lax control flow: values (eager and traced through the interpreter) against
Python loops and JAX, the recorded graph (one node, whatever the step count), and errors.

Transforms of control flow are tested in test_control_ad.py, test_control_batching.py and
test_control_lowering.py."""

import numpy as np
import pytest
from transfuse.ir.errors import (
    ConcretizationError,
    MutationError,
    TransfuseError,
    TransfuseTypeError,
    TransfuseValueError,
)
from transfuse.ir.interpreter import interpret

import transfuse as tx
from transfuse import lax
from transfuse._staging import stage

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jlax = jax.lax
jnp = jax.numpy

RNG = np.random.default_rng(1701)


def _traced(fn, *args):
    """fn's value through its recorded graph (trace, then the reference interpreter)."""
    staged = stage(fn, list(args))
    outs = interpret(staged.graph, [np.asarray(a) for a in staged.dyn_args])
    return outs


def _close(got, want, tol=1e-12):
    got_leaves = jax.tree_util.tree_leaves(got)
    want_leaves = jax.tree_util.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------
# Values against JAX, eager and traced


def _rnn(lib):
    def f(h0, xs, w):
        def cell(h, x):
            h = lib.tanh(h @ w + x)
            return h, lib.sum(h * h)
        return lib_scan(lib)(cell, h0, xs)
    return f


def lib_scan(lib):
    return lax.scan if lib is np else jlax.scan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scan_matches_jax_and_a_python_loop(dtype):
    h0 = RNG.standard_normal(5).astype(dtype)
    xs = RNG.standard_normal((7, 5)).astype(dtype)
    w = (0.4 * RNG.standard_normal((5, 5))).astype(dtype)
    got = _rnn(np)(h0, xs, w)
    want = _rnn(jnp)(h0, xs, w)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    _close(got, want, tol)
    # A plain Python loop gives the same values.
    h, ys = h0, []
    for x in xs:
        h = np.tanh(h @ w + x)
        ys.append(np.sum(h * h))
    np.testing.assert_allclose(got[0], h, rtol=tol)
    np.testing.assert_allclose(got[1], np.array(ys, dtype), rtol=tol)
    traced = _traced(_rnn(np), h0, xs, w)
    _close(traced, [got[0], got[1]], tol)


def test_scan_reverse_pytrees_and_no_xs():
    xs = {"a": RNG.standard_normal((6, 2)), "b": RNG.standard_normal(6)}

    def f(lib_scan_fn, xs):
        def body(c, x):
            s, n = c
            s = s * 0.9 + x["a"] * x["b"]
            return (s, n + 1), {"s": s, "n": n}
        return lib_scan_fn(body, (np.zeros(2), np.int64(0)), xs, reverse=True)

    got = f(lax.scan, xs)
    want = f(jlax.scan, {k: jnp.asarray(v) for k, v in xs.items()})
    _close(got, want)
    # No xs: length= gives the number of steps; ys None.
    got = lax.scan(lambda c, _: (c * 2.0 + 1.0, None), 1.5, None, length=4)
    assert got[1] is None and float(got[0]) == ((((1.5 * 2 + 1) * 2 + 1) * 2 + 1) * 2 + 1)


def test_scan_of_length_zero_keeps_the_carry_and_gives_empty_ys():
    c, ys = lax.scan(lambda c, x: (c + x, c * x), np.float32(3.0), np.zeros((0,), np.float32))
    assert float(c) == 3.0 and ys.shape == (0,) and ys.dtype == np.float32


@pytest.mark.parametrize("pred", [True, False])
def test_cond_and_switch_match_jax(pred):
    x = RNG.standard_normal(4)
    y = RNG.standard_normal(4)

    def f(cond_fn, x, y):
        return cond_fn(pred, lambda a, b: (a * b, a.sum()), lambda a, b: (a - b, b.sum()), x, y)

    _close(f(lax.cond, x, y), f(jlax.cond, x, y))
    _close(_traced(lambda x, y: list(f(lax.cond, x, y)), x, y), f(jlax.cond, x, y))
    branches = [lambda a: a + 1.0, lambda a: a * 3.0, lambda a: np.sin(a)]
    jbranches = [lambda a: a + 1.0, lambda a: a * 3.0, lambda a: jnp.sin(a)]
    for index in (-3, 0, 1, 2, 7):  # out-of-range indices are clamped, as in JAX
        _close(lax.switch(index, branches, x), jlax.switch(index, jbranches, x))


def test_cond_on_a_traced_predicate_records_one_node_with_both_branches():
    def f(x):
        return lax.cond(np.sum(x) > 0, lambda v: v * 2.0, lambda v: -v, x)

    graph = stage(f, [RNG.standard_normal(3)]).graph
    assert [n.prim.name for n in graph.nodes].count("cond") == 1
    text = str(graph)
    assert "cond[branches=" in text and "graph branch0(" in text and "graph branch1(" in text
    for x in (np.array([1.0, 2.0, 3.0]), np.array([-1.0, -2.0, 0.5])):
        np.testing.assert_array_equal(interpret(graph, [x])[0], f(x))


def test_while_loop_matches_jax_and_counts_its_own_steps():
    def collatz(lib_while):
        def steps(n):
            def body(c):
                k, m = c
                m = np.where(m % 2 == 0, m // 2, 3 * m + 1) if lib_while is lax.while_loop \
                    else jnp.where(m % 2 == 0, m // 2, 3 * m + 1)
                return k + 1, m
            return lib_while(lambda c: c[1] != 1, body, (np.int64(0), n))
        return steps

    for n in (1, 6, 27):
        got = collatz(lax.while_loop)(np.int64(n))
        want = collatz(jlax.while_loop)(jnp.int64(n))
        _close(got, want)
    assert int(collatz(lax.while_loop)(np.int64(27))[0]) == 111  # 27 takes 111 steps
    traced = _traced(lambda n: list(collatz(lax.while_loop)(n)), np.int64(27))
    assert int(traced[0]) == 111


def test_fori_loop_static_and_traced_bounds():
    x = RNG.standard_normal(3)

    def body(i, v):
        return v * 0.5 + i

    want = jlax.fori_loop(2, 9, body, jnp.asarray(x))
    _close(lax.fori_loop(2, 9, body, x), want)
    # Static bounds become a scan; traced bounds a while_loop.
    static = stage(lambda v: lax.fori_loop(2, 9, body, v), [x]).graph
    assert [n.prim.name for n in static.nodes] == ["scan"]
    dynamic = stage(lambda v, n: lax.fori_loop(0, n, body, v), [x, np.int64(7)]).graph
    assert "while_loop" in [n.prim.name for n in dynamic.nodes]
    np.testing.assert_allclose(interpret(dynamic, [x, np.int64(7)])[0],
                               jlax.fori_loop(0, 7, body, jnp.asarray(x)), rtol=1e-12)
    # An empty range leaves the value alone.
    _close(lax.fori_loop(5, 2, body, x), x)


def test_map_matches_a_loop():
    xs = RNG.standard_normal((5, 3))
    got = lax.map(lambda v: np.cumsum(v) * v[0], xs)
    np.testing.assert_allclose(got, np.stack([np.cumsum(v) * v[0] for v in xs]), rtol=1e-12)


def test_a_long_scan_is_one_node_and_captures_become_operands():
    w = RNG.standard_normal(3)

    def f(x, scale):
        def body(c, _):
            return np.tanh(c * w) * scale, None  # w: a constant; scale: captured tracer
        return lax.scan(body, x, None, length=10_000)[0]

    graph = stage(f, [RNG.standard_normal(3), np.float64(0.7)]).graph
    scans = [n for n in graph.nodes if n.prim.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == 10_000
    assert scans[0].params["num_consts"] == 1  # the captured `scale`
    assert len(scans[0].params["body"].nodes) < 10


def test_jax_and_transfuse_agree_on_nested_control_flow():
    xs = RNG.standard_normal((4, 3))

    def f(scan_fn, cond_fn, while_fn, xs):
        def body(c, x):
            c = cond_fn(x[0] > 0, lambda a: a + x, lambda a: a * 0.5, c)
            c = while_fn(lambda v: v.sum() > 1.0, lambda v: v * 0.5, c)
            return c, c.sum()
        return scan_fn(body, np.ones(3) * 3.0, xs)

    _close(f(lax.scan, lax.cond, lax.while_loop, xs),
           f(jlax.scan, jlax.cond, jlax.while_loop, jnp.asarray(xs)))


# ---------------------------------------------------------------------------------------
# Errors


def test_python_if_on_a_traced_value_points_to_lax_cond():
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(ConcretizationError, match="transfuse.lax.cond") as info:
        tx.grad(lambda x: f(x).sum())(RNG.standard_normal(3))
    assert "test_control_flow.py" in str(info.value)


def test_mismatched_types_are_clear_errors():
    x = RNG.standard_normal(3)
    with pytest.raises(TransfuseTypeError, match="branch 1 returns a different type"):
        lax.cond(True, lambda a: a, lambda a: a.astype(np.float32), x)
    with pytest.raises(TransfuseTypeError, match="same type as init_val"):
        lax.while_loop(lambda c: c.sum() < 3, lambda c: c[:2], x)
    with pytest.raises(TransfuseTypeError, match="same type as init"):
        lax.scan(lambda c, v: (c.astype(np.float32), v), x, np.ones((2, 3)))
    with pytest.raises(TransfuseTypeError, match="0-d bool"):
        lax.while_loop(lambda c: c, lambda c: c, x)
    with pytest.raises(TransfuseTypeError, match="predicate must be a 0-d"):
        lax.cond(x > 0, lambda: 1.0, lambda: 2.0)
    with pytest.raises(TransfuseTypeError, match="pair"):
        lax.scan(lambda c, v: c, x, np.ones((2, 3)))
    with pytest.raises(TransfuseValueError, match="disagree"):
        lax.scan(lambda c, v: (c, v), x, (np.ones((2, 3)), np.ones((4, 3))))
    with pytest.raises(TransfuseValueError, match="length="):
        lax.scan(lambda c, v: (c, v), x, None)
    assert issubclass(TransfuseTypeError, TransfuseError) and issubclass(TransfuseTypeError,
                                                                         TypeError)


def test_writing_into_a_captured_array_inside_a_body_is_an_error():
    import transfuse.numpy as tnp

    def f(x):
        buf = tnp.zeros(3)

        def body(c, v):
            buf[0] = v  # a write that would have to escape the loop
            return c + v, None
        return lax.scan(body, x.sum(), x)[0] + buf[0]

    with pytest.raises(MutationError, match="captures from outside"):
        tx.grad(f)(RNG.standard_normal(3))
