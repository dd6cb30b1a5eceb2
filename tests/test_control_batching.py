"""vmap of transfuse.lax control flow (compiler/batching_control.py): cond, switch,
while_loop, fori_loop and scan with batched and unbatched predicates, operands, carries,
consts and xs, against a Python loop over the batch and jax.vmap (float64).

A batched predicate runs each lane's own branch, and a batched while_loop each lane's own
number of iterations: a map (a scan with no carry) over the lanes. Without jit, vmap runs
the reference interpreter, which runs the sub-graphs."""

import numpy as np
import pytest

import transfuse as tx
from transfuse import lax

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

NP = (np, lax)
JX = (jnp, jax.lax)
RNG = np.random.default_rng(1717)


def _close(got, want, tol=1e-10):
    got_leaves = jax.tree_util.tree_leaves(got)
    want_leaves = jax.tree_util.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def _lanes(args, in_dims, b):
    """Lane b's arguments."""
    return [a if d is None else np.take(a, b, axis=d) for a, d in zip(args, in_dims)]


def _loop(f, args, in_dims, size):
    """vmap by a Python loop over the batch, outputs stacked at 0."""
    outs = [f(*_lanes(args, in_dims, b)) for b in range(size)]
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *outs)


def _check(program, args, in_dims, size, tol=1e-10):
    """vmap(program) against a loop over the batch and jax.vmap."""
    got = tx.vmap(program(NP), in_dims=in_dims)(*args)
    _close(got, _loop(program(NP), args, in_dims, size), tol)
    _close(got, jax.vmap(program(JX), in_axes=tuple(in_dims))(*args), tol)
    return got


def _prims(graph, name):
    """The nodes of `name` in graph, not looking inside sub-graphs."""
    return [n for n in graph.nodes if n.prim.name == name]


# ---------------------------------------------------------------------------------------
# Programs, written once for both libraries


def cond_program(lib):
    """The false branch does not read x: its outputs are unbatched when only x is."""
    m, c = lib

    def f(p, x, w):
        return c.cond(p > 0, lambda a, v: (m.sin(a) * v, m.sum(a * a)),
                      lambda a, v: (v * 2.0, v[0] - 1.0), x, w)
    return f


def switch_program(lib):
    m, c = lib

    def f(i, x):
        return c.switch(i, [lambda a: m.cos(a), lambda a: a * a, lambda a: -a], x)
    return f


def newton_program(lib):
    """Newton's iteration for a**(1/3): each lane stops at its own tolerance; the carry
    counts the iterations."""
    m, c = lib

    def f(a):
        def unconverged(carry):
            k, x = carry
            return (m.abs(x ** 3 - a) > 1e-12 * a) & (k < 100)

        def step(carry):
            k, x = carry
            return k + 1, x - (x ** 3 - a) / (3.0 * x ** 2)
        return c.while_loop(unconverged, step, (0, m.maximum(a, 1.0)))
    return f


def steps_program(lib):
    """A while_loop whose predicate reads only an unbatched count."""
    m, c = lib

    def f(x, n):
        def step(carry):
            k, y = carry
            return k + 1, m.sin(y) * 0.5 + y
        return c.while_loop(lambda carry: carry[0] < n, step, (0, x))
    return f


def scan_program(lib, reverse=False):
    """Consts (w), a carry made batched by the body (h), a carry that stays unbatched (k),
    xs and ys."""
    m, c = lib

    def f(h, xs, w):
        def step(carry, x):
            h, k = carry
            h = m.tanh(h * w + x)
            return (h, k + 1.0), (m.sum(h) * k, h[:2])
        return c.scan(step, (h, 0.5), xs, reverse=reverse)
    return f


# ---------------------------------------------------------------------------------------
# cond and switch


@pytest.mark.parametrize("in_dims", [(0, 0, None), (None, 0, None), (0, None, None),
                                     (None, None, 0), (0, 1, 0)])
def test_cond_batched_and_unbatched_predicate_and_operands(in_dims):
    size = 5
    p = np.array([0.3, -1.2, 2.0, -0.1, 0.7])
    x, w = RNG.normal(size=(size, 3)), RNG.normal(size=(size, 3))
    args = [p if in_dims[0] == 0 else p[1],
            {0: x, 1: x.T, None: x[0]}[in_dims[1]], w if in_dims[2] == 0 else w[0]]
    _check(cond_program, args, in_dims, size)
    graph = tx.make_graph(tx.vmap(cond_program(NP), in_dims=in_dims))(*args)
    if in_dims[0] is None:
        # One cond, its branches batched (the unbatched branch's outputs broadcast).
        (node,) = _prims(graph, "cond")
        assert all(len(b.out_avals[0].shape) == 2 for b in node.params["branches"])
    else:
        # A map over the lanes whose body is the unbatched cond: no select, no both.
        assert not _prims(graph, "cond") and not _prims(graph, "select")
        (node,) = _prims(graph, "scan")
        assert node.params["num_carry"] == 0 and node.params["length"] == size
        (inner,) = _prims(node.params["body"], "cond")
        assert inner.outputs[0].aval.shape == (3,)


def test_switch_batched_index_is_clamped_per_lane():
    index = np.array([-3, 0, 1, 2, 7], np.int32)
    x = RNG.normal(size=(5, 2))
    got = _check(switch_program, [index, x], (0, 0), 5)
    np.testing.assert_array_equal(got[0], np.cos(x[0]))   # -3 runs the first branch
    np.testing.assert_array_equal(got[4], -x[4])          # 7 runs the last
    _check(switch_program, [index, x[0]], (0, None), 5)
    _check(switch_program, [np.int32(9), x.T], (None, 1), 5)


def test_a_branch_runs_only_on_its_own_lanes():
    """Each lane runs only its branch: the other branch would divide by zero (NaN)."""
    def f(x):
        return lax.cond(x > 0, lambda a: np.sqrt(a), lambda a: np.sqrt(-a) * 2.0, x)

    x = np.array([4.0, -9.0, 0.25, -1.0])
    with np.errstate(invalid="raise"):
        np.testing.assert_array_equal(tx.vmap(f)(x), [2.0, 6.0, 0.5, 2.0])


# ---------------------------------------------------------------------------------------
# while_loop


def test_vmapped_newton_solver_runs_each_lanes_own_iterations():
    a = np.array([1e-3, 0.5, 2.0, 27.0, 1e6, 8.0])
    k, x = _check(newton_program, [a], (0,), len(a), tol=1e-12)
    np.testing.assert_allclose(x, np.cbrt(a), rtol=1e-12)
    own = [int(newton_program(NP)(v)[0]) for v in a]
    np.testing.assert_array_equal(k, own)
    assert len(set(own)) >= 4 and min(own) < max(own) - 10
    graph = tx.make_graph(tx.vmap(newton_program(NP)))(a)
    (node,) = _prims(graph, "scan")   # a map over the lanes of the unbatched while_loop
    (inner,) = _prims(node.params["body"], "while_loop")
    assert inner.outputs[1].aval.shape == ()
    # chunk_size runs the same map on 4 lanes, then on 2
    k4, x4 = tx.vmap(newton_program(NP), chunk_size=4)(a)
    np.testing.assert_array_equal(k4, k)
    np.testing.assert_array_equal(x4, x)


def test_while_loop_with_an_unbatched_predicate_is_one_batched_loop():
    x = RNG.normal(size=(3, 4))
    k, y = _check(steps_program, [x, 6], (1, None), 4)
    np.testing.assert_array_equal(k, [6] * 4)
    graph = tx.make_graph(tx.vmap(steps_program(NP), in_dims=(1, None)))(x, np.int64(6))
    (node,) = _prims(graph, "while_loop")
    assert not _prims(graph, "scan")
    counter, value = node.outputs
    assert counter.aval.shape == () and value.aval.shape == (4, 3)
    # A batched count makes the predicate batched: one loop per lane.
    n = np.array([0, 3, 1, 5])
    k, y = _check(steps_program, [x, n], (1, 0), 4)
    np.testing.assert_array_equal(k, n)


def test_fori_loop_with_a_batched_trip_count():
    def f(lib):
        m, c = lib
        return lambda x, n: c.fori_loop(0, n, lambda i, v: v * 0.5 + m.sin(v) * i, x)

    x, n = RNG.normal(size=(4, 2)), np.array([2, 0, 5, 1])
    _check(f, [x, n], (0, 0), 4)
    _check(f, [x, 3], (0, None), 4)


# ---------------------------------------------------------------------------------------
# scan


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("in_dims", [(None, 1, None), (0, None, 0), (None, None, 0),
                                     (0, 2, None)])
def test_scan_carries_consts_xs(in_dims, reverse):
    size, steps = 4, 6
    h, w = RNG.normal(size=(size, 3)), RNG.uniform(0.5, 1.5, size=(size, 3))
    xs = RNG.normal(size=(steps, 3, size))      # the batch at dim 2
    args = [h if in_dims[0] == 0 else h[0],
            {None: xs[..., 0], 1: np.moveaxis(xs, 2, 1), 2: xs}[in_dims[1]],
            w if in_dims[2] == 0 else w[0]]
    (h_out, k_out), (ys, heads) = _check(lambda lib: scan_program(lib, reverse), args,
                                         in_dims, size)
    np.testing.assert_array_equal(k_out, [6.5] * size)
    assert ys.shape == (size, steps) and heads.shape == (size, steps, 2)
    graph = tx.make_graph(tx.vmap(scan_program(NP, reverse), in_dims=in_dims))(*args)
    (node,) = _prims(graph, "scan")
    carry_h, carry_k, y, head = node.outputs
    # h's carry is batched (broadcast first when its init is not: the fixpoint), k's stays
    # unbatched, and the ys come out batched at dim 1 (the scan axis stays 0).
    assert carry_h.aval.shape == (size, 3) and carry_k.aval.shape == ()
    assert y.aval.shape == (steps, size) and head.aval.shape == (steps, size, 2)


def test_scan_out_dims_and_nested_vmap():
    h, xs, w = RNG.normal(size=(2, 3, 3)), RNG.normal(size=(5, 3)), RNG.normal(size=(3,))
    f = scan_program(NP)
    got = tx.vmap(tx.vmap(f, in_dims=(0, None, None)), in_dims=(1, None, None),
                  out_dims=1)(h, xs, w)
    want = [[f(h[i, j], xs, w) for j in range(3)] for i in range(2)]
    for (got_h, _), (ys, _) in [got]:
        assert got_h.shape == (2, 3, 3) and ys.shape == (2, 3, 5)
        for i in range(2):
            for j in range(3):
                np.testing.assert_allclose(got_h[i, j], want[i][j][0][0], rtol=1e-12)
                np.testing.assert_allclose(ys[i, j], want[i][j][1][0], rtol=1e-12)
    jf = jax.vmap(jax.vmap(scan_program(JX), in_axes=(0, None, None)), in_axes=(1, None, None),
                  out_axes=1)
    _close(got, jf(h, xs, w), 1e-12)


def test_nested_vmap_of_a_batched_predicate():
    p, x = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4, 3))
    w = RNG.normal(size=(3,))
    f = cond_program(NP)
    got = tx.vmap(tx.vmap(f, in_dims=(0, 0, None)), in_dims=(0, 0, None))(p, x, w)
    jf = jax.vmap(jax.vmap(cond_program(JX), in_axes=(0, 0, None)), in_axes=(0, 0, None))
    _close(got, jf(p, x, w))
    np.testing.assert_allclose(got[1][2, 1], f(p[2, 1], x[2, 1], w)[1], rtol=1e-12)


def test_scan_over_a_batched_predicate_inside_the_body():
    """A cond on the batched carry inside a scan: a map inside the batched body."""
    def program(lib):
        m, c = lib

        def f(h, xs):
            def step(h, x):
                h = c.cond(m.sum(h) > 0, lambda a: a * 0.5 - x, lambda a: m.cos(a) + x, h)
                return h, m.sum(h)
            return c.scan(step, h, xs)
        return f

    h, xs = RNG.normal(size=(5, 2)), RNG.normal(size=(4, 2))
    _check(program, [h, xs], (0, None), 5)


def test_size_zero_batch_and_float32():
    a = np.zeros((0,))
    k, x = tx.vmap(newton_program(NP))(a)
    assert k.shape == (0,) and x.shape == (0,)
    got = tx.vmap(cond_program(NP))(np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3)))
    assert [g.shape for g in got] == [(0, 3), (0,)]
    p = np.float32([0.5, -0.5, 1.0])
    x, w = RNG.normal(size=(3, 3)).astype(np.float32), np.float32([1.0, -2.0, 0.5])
    got = tx.vmap(cond_program(NP), in_dims=(0, 0, None))(p, x, w)
    want = _loop(cond_program(NP), [p, x, w], (0, 0, None), 3)
    for g, e in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, e, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Composition: vmap of grad and jvp, jit


def test_vmap_of_grad_through_scan_and_cond():
    def loss(lib):
        m, c = lib

        def f(w, h, xs):
            (last, _), (ys, _) = scan_program(lib)(h, xs, w)
            return c.cond(h[0] > 0, lambda v, u: m.sum(v ** 2) * u[1],
                          lambda v, u: m.sum(m.sin(v)) + u[2], ys, last)
        return f

    w, h, xs = RNG.uniform(0.5, 1.5, size=(3,)), RNG.normal(size=(6, 3)), RNG.normal(size=(4, 3))
    h[:, 0] = [-0.5, 0.5, -1.0, 1.0, 0.1, -0.1]   # both branches taken
    got = tx.vmap(tx.grad(loss(NP)), in_dims=(None, 0, None))(w, h, xs)
    want = jax.vmap(jax.grad(loss(JX)), in_axes=(None, 0, None))(w, h, xs)
    _close(got, want)
    tangent = RNG.normal(size=(6, 3))
    got = tx.vmap(lambda hb, t: tx.jvp(lambda v: loss(NP)(w, v, xs), (hb,), (t,)))(h, tangent)
    want = jax.vmap(lambda hb, t: jax.jvp(lambda v: loss(JX)(w, v, xs), (hb,), (t,)))(h, tangent)
    _close(got, want)


def test_vmap_of_grad_through_a_batched_switch():
    def f(lib):
        m, c = lib
        return lambda x, i: c.switch(i, [lambda a: m.sum(m.sin(a)), lambda a: m.sum(a ** 3),
                                         lambda a: m.sum(a) * 2.0], x)

    x, i = RNG.normal(size=(5, 3)), np.array([2, 0, 1, 1, -4], np.int32)
    got = tx.vmap(tx.grad(f(NP)))(x, i)
    _close(got, jax.vmap(jax.grad(f(JX)))(x, i))


def test_vmap_of_jvp_through_a_batched_while_loop():
    def tangent_map(lib, jvp):
        return lambda a, t: jvp(lambda v: newton_program(lib)(v)[1], (a,), (t,))

    a, t = np.array([0.5, 8.0, 1e5, 3.0]), RNG.normal(size=4)
    got = tx.vmap(tangent_map(NP, tx.jvp))(a, t)
    _close(got, jax.vmap(tangent_map(JX, jax.jvp))(a, t), 1e-12)
    np.testing.assert_allclose(got[1], t / (3 * np.cbrt(a) ** 2), rtol=1e-10)


def test_jacobians_batch_the_backward_and_tangent_loops():
    """jacrev batches the scan's backward loop over the cotangents, jacfwd the tangent
    loop; vmap(hessian) a cond with a batched predicate twice differentiated."""
    def flat(lib):
        def f(h, xs, w):
            (last, _), (ys, heads) = scan_program(lib)(h, xs, w)
            return lib[0].concatenate([last, ys, heads.ravel()])
        return f

    h, xs, w = RNG.normal(size=3), RNG.normal(size=(5, 3)), RNG.uniform(0.5, 1.5, 3)
    _close(tx.jacrev(flat(NP), argnums=2)(h, xs, w), jax.jacrev(flat(JX), argnums=2)(h, xs, w))
    _close(tx.jacfwd(flat(NP), argnums=1)(h, xs, w), jax.jacfwd(flat(JX), argnums=1)(h, xs, w))

    def second(lib):
        return lambda x: cond_program(lib)(x[0], x, w)[1]

    x = RNG.normal(size=(4, 3))
    x[:, 0] = [0.5, -0.5, 1.5, -2.0]
    _close(tx.vmap(tx.hessian(second(NP)))(x), jax.vmap(jax.hessian(second(JX)))(x))


def test_jit_of_vmapped_control_flow_matches_the_interpreter():
    """One compiled program: a map of a while_loop (batched predicate), a batched
    while_loop (unbatched predicate), a cond with an unbatched predicate, and a scan."""
    def program(a, x, h, xs, w):
        return (newton_program(NP)(a), steps_program(NP)(x, 4),
                cond_program(NP)(np.float64(1.0), x, w), scan_program(NP)(h, xs, w))

    args = [RNG.uniform(1e-3, 1e4, size=7), RNG.normal(size=(7, 3)), RNG.normal(size=(7, 3)),
            RNG.normal(size=(5, 3)), RNG.uniform(0.5, 1.5, size=3)]
    f = tx.vmap(program, in_dims=(0, 0, 0, None, None))
    got, want = tx.jit(f)(*args), f(*args)
    _close(got, want, 1e-13)
    np.testing.assert_array_equal(got[0][0], want[0][0])
