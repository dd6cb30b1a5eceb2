"""Autodiff through transfuse.lax control flow (compiler/jvp_control.py, vjp_control.py):
grad, jvp, vjp, linearize, jacfwd/jacrev and second order through cond, switch,
while_loop, fori_loop and scan, against JAX (float64) and central finite differences.

Without jit, transforms run the reference interpreter, which runs the sub-graphs."""

import numpy as np
import pytest
from transfuse.compiler.functionalize import prepare
from transfuse.compiler.jvp import jvp_graph
from transfuse.compiler.partial_eval import split_jvp_graph
from transfuse.compiler.prune_control import prune_outputs
from transfuse.compiler.vjp import vjp_graph
from transfuse.ir.errors import UnsupportedError
from transfuse.ir.interpreter import interpret

import transfuse as tx
from transfuse import lax
from transfuse._staging import stage

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jlax = jax.lax
jnp = jax.numpy

RNG = np.random.default_rng(2024)


def _close(got, want, tol=1e-10):
    got_leaves = jax.tree_util.tree_leaves(got)
    want_leaves = jax.tree_util.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def _central_difference(f, x, eps=1e-6):
    """d f(x) / dx of a scalar f, componentwise, in float64."""
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


# ---------------------------------------------------------------------------------------
# Programs, written once for both libraries (L: numpy + transfuse.lax, or jax)

NP = (np, lax)
JX = (jnp, jlax)


def switch_program(lib, index):
    """Three branches that disagree on which outputs depend on the operands; the third
    reads w, captured from outside (a closure over a differentiated value)."""
    m, c = lib

    def f(x, w):
        branches = [lambda a: (m.sin(a) * 2.0, m.ones(())),
                    lambda a: (a * 0.0 + 3.0, m.sum(a ** 2)),
                    lambda a: (a * w, m.sum(a) * w)]
        y, s = c.switch(index, branches, x)
        return m.sum(y * y) + s
    return f


def cond_program(lib):
    m, c = lib

    def f(x, w):
        return m.sum(c.cond(m.sum(x) > 0, lambda a, b: m.tanh(a * b), lambda a, b: a - b,
                            x, w) ** 2)
    return f


def scan_program(lib, reverse=False):
    """A pytree carry (dict with an integer counter) and pytree xs; w is captured."""
    m, c = lib

    def f(x, w):
        def step(carry, xs):
            h = m.tanh(carry["h"] * w + xs[0]) + carry["k"] * xs[1]
            return {"h": h, "k": carry["k"] + 1, "s": carry["s"] + m.sum(h)}, (h ** 2, h[0])
        init = {"h": x, "k": 0, "s": 0.0}
        xs = (m.stack([x, 2 * x, x * x, -x]), m.stack([0.5, w, 0.25, 1.0]))
        carry, (ys, firsts) = c.scan(step, init, xs, reverse=reverse)
        return m.sum(carry["h"] * ys[1]) + carry["s"] + m.sum(m.cos(firsts))
    return f


def fori_program(lib):
    m, c = lib

    def f(x, w):
        return m.sum(c.fori_loop(0, 5, lambda i, v: m.sin(v) * w + i * 0.1, x) ** 2)
    return f


def while_program(lib):
    """The second carry's tangent starts symbolically zero and becomes nonzero (fixpoint)."""
    m, c = lib

    def f(x, w):
        def body(carry):
            i, a, b = carry
            return i + 1, m.sin(a) * w, b + a * a
        _, a, b = c.while_loop(lambda carry: carry[0] < 4, body, (0, x, m.zeros(3)))
        return m.sum(a) + m.sum(b * b)
    return f


X = RNG.normal(size=3)
W = 0.8
T_X, T_W = RNG.normal(size=3), 0.3


# ---------------------------------------------------------------------------------------
# grad and jvp against JAX


@pytest.mark.parametrize("index", [-1, 1, 5])  # 5 runs the last branch
def test_switch_grad_and_jvp(index):
    f, jf = switch_program(NP, index), switch_program(JX, index)
    _close(tx.grad(f, (0, 1))(X, W), jax.grad(jf, (0, 1))(X, W))
    _close(tx.jvp(f, (X, W), (T_X, T_W)), jax.jvp(jf, (X, W), (T_X, T_W)))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cond_grad_jvp_and_finite_differences(sign):
    f, jf = cond_program(NP), cond_program(JX)
    x = sign * np.abs(X)
    _close(tx.grad(f, (0, 1))(x, W), jax.grad(jf, (0, 1))(x, W))
    _close(tx.jvp(f, (x, W), (T_X, T_W)), jax.jvp(jf, (x, W), (T_X, T_W)))
    fd = _central_difference(lambda v: float(jf(v, W)), x)
    _close(tx.grad(f)(x, W), fd, tol=1e-7)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_pytree_carry_grad_jvp_vjp(reverse):
    f, jf = scan_program(NP, reverse), scan_program(JX, reverse)
    _close(tx.grad(f, (0, 1))(X, W), jax.grad(jf, (0, 1))(X, W))
    _close(tx.jvp(f, (X, W), (T_X, T_W)), jax.jvp(jf, (X, W), (T_X, T_W)))
    fd = _central_difference(lambda v: float(jf(v, W)), X)
    _close(tx.grad(f)(X, W), fd, tol=1e-7)


def test_scan_vjp_of_carry_and_ys():
    """Cotangents for the final carry and the stacked ys (and none for an int carry)."""
    def program(m, c):
        def f(x, xs):
            def step(carry, xi):
                h, n = carry
                h = m.sin(h) * xi + h
                return (h, n + 1), (h * xi, n)
            return c.scan(step, (x, 0), xs)
        return f
    xs = RNG.normal(size=(4, 3))
    out, pull = tx.vjp(program(np, lax), X, xs)
    jout, jpull = jax.vjp(program(jnp, jlax), X, xs)
    _close(out, jout)
    ct_h, ct_ys = RNG.normal(size=3), RNG.normal(size=(4, 3))
    int_ct = np.zeros((), jax.dtypes.float0)
    _close(pull(((ct_h, np.zeros((), np.int64)), (ct_ys, np.zeros(4, np.int64)))),
           jpull(((ct_h, int_ct), (ct_ys, np.zeros(4, jax.dtypes.float0)))))


def test_fori_loop_static_bounds_grad_and_while_loop_jvp():
    f, jf = fori_program(NP), fori_program(JX)
    _close(tx.grad(f, (0, 1))(X, W), jax.grad(jf, (0, 1))(X, W))
    g, jg = while_program(NP), while_program(JX)
    _close(tx.jvp(g, (X, W), (T_X, T_W)), jax.jvp(jg, (X, W), (T_X, T_W)))
    _close(tx.jvp(g, (X, W), (T_X, 0.0)), jax.jvp(jg, (X, W), (T_X, 0.0)))
    fd = _central_difference(lambda v: float(jg(v, W)), X)
    _close(tx.jvp(g, (X, W), (np.eye(3)[1], 0.0))[1], fd[1], tol=1e-7)


def test_scan_length_zero_and_one():
    def program(m, c, n):
        def f(x, xs):
            carry, ys = c.scan(lambda h, xi: (m.sin(h) * xi, h * xi), x, xs)
            return m.sum(carry * x) + m.sum(ys)
        return f
    for n in (0, 1):
        xs = RNG.normal(size=(n, 3))
        f, jf = program(np, lax, n), program(jnp, jlax, n)
        _close(tx.grad(f, (0, 1))(X, xs), jax.grad(jf, (0, 1))(X, xs))
        _close(tx.jvp(f, (X, xs), (T_X, xs + 1)), jax.jvp(jf, (X, xs), (T_X, xs + 1)))


# ---------------------------------------------------------------------------------------
# Second order, linearize, Jacobians, float32


def test_second_order_through_scan_and_cond():
    for build in (scan_program, cond_program):
        f, jf = build(NP), build(JX)
        _close(tx.grad(tx.grad(f, 1), 1)(X, W), jax.grad(jax.grad(jf, 1), 1)(X, W))
        hvp = tx.jvp(tx.grad(f), (X, W), (T_X, T_W))[1]  # forward over reverse
        _close(hvp, jax.jvp(jax.grad(jf), (X, W), (T_X, T_W))[1])


def test_linearize_through_control_flow():
    def f(x, w):
        return scan_program(NP)(x, w) + while_program(NP)(x, w) + cond_program(NP)(x, w)

    def jf(x, w):
        return scan_program(JX)(x, w) + while_program(JX)(x, w) + cond_program(JX)(x, w)
    out, lin = tx.linearize(f, X, W)
    _close(out, jf(X, W))
    for t in ((T_X, T_W), (X, -W)):
        _close(lin(*t), jax.jvp(jf, (X, W), t)[1])


def test_nested_control_flow_and_closures():
    """A cond inside a scan inside a scan, reading the outer step's x and a captured w;
    and an inner grad through a scan closing over the outer differentiated x (no
    perturbation confusion: d/dx [x * d/dy (x y)^2 at y=1.5] = 3 * 1.5 * 2 * x^2)."""
    def program(m, c):
        def f(x, w):
            def outer(h, xi):
                def inner(g, _):
                    g = c.cond(m.sum(g) > 0, lambda a: m.sin(a) * w, lambda a: a * xi, g)
                    return g, m.sum(g)
                h2, s = c.scan(inner, h, None, length=2)
                return h2 + xi, s
            h, ys = c.scan(outer, x, m.stack([x, x * 0.5]))
            return m.sum(h ** 2) + m.sum(ys)
        return f
    f, jf = program(np, lax), program(jnp, jlax)
    _close(tx.grad(f, (0, 1))(X, W), jax.grad(jf, (0, 1))(X, W))

    def outer(x):
        inner = lambda y: lax.scan(lambda c, _: (c * y * x, None), 1.0, None,  # noqa: E731
                                   length=2)[0]
        return x * tx.grad(inner)(1.5)
    assert tx.grad(outer)(0.7) == pytest.approx(3 * 1.5 * 2 * 0.7 ** 2, rel=1e-12)


def test_jacobians_and_vmap_of_grad():
    """jacfwd, jacrev, hessian and vmap(grad) batch the derivative nodes (cotangent or
    tangent batched, primal not) against JAX; jacfwd through a while_loop."""
    def program(m, c):
        def f(x, w):
            return c.scan(lambda h, xi: (m.tanh(h * w + xi), h), x, m.stack([x, -x]))[1]
        return f
    f, jf = program(np, lax), program(jnp, jlax)
    _close(tx.jacfwd(f, (0, 1))(X, W), jax.jacfwd(jf, (0, 1))(X, W))
    _close(tx.jacrev(f, (0, 1))(X, W), jax.jacrev(jf, (0, 1))(X, W))
    _close(tx.jacfwd(while_program(NP))(X, W), jax.jacfwd(while_program(JX))(X, W))
    # jacfwd of jacrev: forward mode through the backward's two loops.
    _close(tx.hessian(scan_program(NP))(X, W), jax.hessian(scan_program(JX))(X, W))
    xs = RNG.normal(size=(3, 3))  # lanes taking both branches of the cond
    xs[0] = -np.abs(xs[0])
    xs[1] = np.abs(xs[1])
    g, jg = cond_program(NP), cond_program(JX)
    _close(tx.vmap(tx.grad(g), (0, None))(xs, W), jax.vmap(jax.grad(jg), (0, None))(xs, W))


def test_user_rules_checkpoint_and_stop_gradient_inside_control_flow():
    """A custom_jvp function inside a checkpointed cell inside a scan body, and a
    stop_gradient inside a cond branch: grad, grad of grad and jvp against JAX."""
    def program(m, c, custom_jvp, checkpoint, stop_gradient):
        @custom_jvp
        def softplus(v):
            return m.log1p(m.exp(v))

        @softplus.defjvp
        def _(primals, tangents):
            (v,), (dv,) = primals, tangents
            return softplus(v), dv / (1 + m.exp(-v))

        def f(x, w):
            cell = checkpoint(lambda h, xi: m.tanh(softplus(h) * w + xi))

            def step(h, xi):
                h = cell(h, xi)
                return h, c.cond(m.sum(h) > 0, lambda a: stop_gradient(a) * a,
                                 lambda a: a * w, h)
            h, ys = c.scan(step, x, m.stack([x, -x, x * 0.5]))
            return m.sum(h) + m.sum(ys ** 2)
        return f
    f = program(np, lax, tx.custom_jvp, tx.checkpoint, lax.stop_gradient)
    jf = program(jnp, jlax, jax.custom_jvp, jax.checkpoint, jlax.stop_gradient)
    _close(tx.grad(f, (0, 1))(X, W), jax.grad(jf, (0, 1))(X, W))
    _close(tx.grad(tx.grad(f, 1), 1)(X, W), jax.grad(jax.grad(jf, 1), 1)(X, W))
    _close(tx.jvp(f, (X, W), (T_X, T_W)), jax.jvp(jf, (X, W), (T_X, T_W)))


def test_float32_gradients():
    def program(m, c):
        def f(x, w):
            carry, ys = c.scan(lambda h, xi: (m.tanh(h * w + xi), h * xi), x,
                               m.stack([x, -x, x * x]))
            return m.sum(carry) + m.sum(c.cond(w > 0, lambda y: y * w, m.sin, ys))
        return f
    x32, w32 = X.astype(np.float32), np.float32(W)
    got = tx.grad(program(np, lax), (0, 1))(x32, w32)
    assert got[0].dtype == np.float32 and np.asarray(got[1]).dtype == np.float32
    _close(got, jax.grad(program(jnp, jlax), (0, 1))(X, W), tol=2e-5)


def test_jit_of_grad_and_jvp():
    """The derivative programs compiled (one jit: a scan's VJP loops and a cond's backward
    branches, a while_loop's JVP), twice with a different branch taken."""
    def program(m, c):
        def f(x, w):
            h, ys = c.scan(lambda h, xi: (m.tanh(h * w + xi), h * xi), x,
                           m.stack([x, -x, x * x]))
            return m.sum(c.cond(m.sum(h) > 0, lambda a: a * w, m.sin, ys)) + m.sum(h)
        return f

    @tx.jit
    def derivatives(x, w):
        return [tx.grad(program(np, lax), (0, 1))(x, w),
                tx.jvp(while_program(NP), (x, w), (x * 0.5, w))[1]]

    for x in (X, -X):
        _close(derivatives(x, W), [jax.grad(program(jnp, jlax), (0, 1))(x, W),
                                   jax.jvp(while_program(JX), (x, W), (x * 0.5, W))[1]])


# ---------------------------------------------------------------------------------------
# The rewritten graphs, and reverse mode through while_loop


def _count(graph, name):
    return sum(node.prim.name == name for node in graph.nodes)


def _scans(graph):
    return [node for node in graph.nodes if node.prim.name == "scan"]


def test_jvp_is_one_node_and_what_the_scan_vjp_stores():
    graph = prepare(stage(scan_program(NP), [X, np.float64(W)]).graph)
    assert len(_scans(graph)) == 1
    assert len(_scans(jvp_graph(graph, [True, True]))) == 1

    def rnn(h, w, xs):
        return lax.scan(lambda h, x: (np.tanh(h @ w + x),) * 2, h, xs)[1].sum()
    graph = prepare(stage(rnn, [X, RNG.normal(size=(3, 3)), RNG.normal(size=(5, 3))]).graph)
    halves = vjp_graph(graph, [True, True, True])
    assert len(_scans(halves.forward)) == 1
    # The backward reruns the loop to stack the one residual it lacks (the previous h;
    # tanh's output is the scan's own ys, w is read once), then runs backward.
    again, back = _scans(halves.backward)
    assert (again.params["reverse"], back.params["reverse"]) == (False, True)
    assert [v.aval.shape for v in again.outputs] == [(3,), (5, 3)]
    # With respect to w only: no cotangent for the xs (nor a loop emitting them).
    (back,) = _scans(vjp_graph(graph, [False, True, False]).backward)[1:]
    assert [v.aval.shape for v in back.outputs] == [(3,), (3, 3)]
    # A matrix a branch captures gets no cotangent when it is not differentiated either.
    branchy = prepare(stage(lambda x, m: lax.cond(x.sum() > 0, lambda a: a @ m, np.sin,
                                                  x).sum(), [X, RNG.normal(size=(3, 3))]).graph)
    for wrt, shapes in (([True, False], [(3,)]), ([True, True], [(3, 3), (3,)])):
        (back,) = [n for n in vjp_graph(branchy, wrt).backward.nodes if n.prim.name == "cond"]
        assert [v.aval.shape for v in back.outputs] == shapes

    def quadratic(h, xs):  # residuals: the xs themselves; no loop is rerun
        return lax.scan(lambda c, x: (c + x * x, c), h, xs)[0].sum()
    halves = vjp_graph(prepare(stage(quadratic, [X, RNG.normal(size=(5, 3))]).graph),
                       [True, True])
    assert [n.params["reverse"] for n in _scans(halves.backward)] == [True]
    xs = RNG.normal(size=(5, 3))
    _close(tx.grad(quadratic, (0, 1))(X, xs), (np.ones(3), 2 * xs))


def test_linearize_primal_part_runs_no_tangents():
    """The primal part of linearize keeps each control-flow JVP node pruned to its primal
    outputs (compiler/prune_control.py): the same outputs as the original nodes."""
    def f(x, w):
        h, ys = lax.scan(lambda h, xi: (np.tanh(h * w + xi), h * xi), x, np.stack([x, -x]))
        _, v = lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, np.sin(c[1]) * w),
                              (0, h))
        return lax.cond(v.sum() > 0, lambda a: a * w, np.sin, ys).sum() + v.sum()
    graph = prepare(stage(f, [X, np.float64(W)]).graph)
    primal = split_jvp_graph(jvp_graph(graph, [True, True]), 2, 2).primal

    def control_flow(g):
        return [(n.prim.name, [v.aval for v in n.outputs]) for n in g.nodes
                if n.prim.name in ("scan", "while_loop", "cond")]
    assert control_flow(primal) == control_flow(graph)


def test_prune_outputs_keeps_what_kept_outputs_need():
    def f(x, xs):
        (a, b, c), ys = lax.scan(lambda k, xi: ((k[0] * xi, k[1] + k[0], k[2] * 2.0),
                                                (k[1] * xi, k[2])), (x, x, x), xs)
        _, v, u, t = lax.while_loop(lambda k: k[0] < 3,
                                    lambda k: (k[0] + 1, k[1] * k[2], k[2], k[3] * 3.0),
                                    (0, b, x, x))
        return lax.cond(v.sum() > 0, lambda p: (p * 2.0, p), lambda p: (p, p), v)[0]
    xs = RNG.normal(size=(4, 3))
    graph = prepare(stage(f, [X, xs]).graph)
    pruned = prune_outputs(graph)
    scan, loop, branch = [n for n in pruned.nodes if n.prim.name in ("scan", "while_loop",
                                                                        "cond")]
    # b reads a, so both carries stay, c and the ys go; the counter (read by the
    # condition) and u (read by the step of v) stay, t goes; the cond's second output goes.
    assert (len(scan.outputs), len(loop.outputs), len(branch.outputs)) == (2, 3, 1)
    assert scan.params["num_carry"] == 2 and len(scan.inputs) == 3
    _close(interpret(pruned, [X, xs]), interpret(graph, [X, xs]))

    def nested(x, xs):  # the step's cond loses the output only the dropped y read
        def step(h, xi):
            p, q = lax.cond(xi.sum() > 0, lambda a: (a * 2.0, np.sin(a)),
                            lambda a: (a, np.cos(a)), h)
            return p + xi, q
        return lax.scan(step, x, xs)[0]
    graph = prepare(stage(nested, [X, xs]).graph)
    pruned = prune_outputs(graph)
    (scan,) = [n for n in pruned.nodes if n.prim.name == "scan"]
    (inner,) = [n for n in scan.params["body"].nodes if n.prim.name == "cond"]
    assert len(scan.outputs) == 1 and len(inner.outputs) == 1
    _close(interpret(pruned, [X, xs]), interpret(graph, [X, xs])[:1])


def test_while_loop_reverse_mode_error_names_the_line():
    def f(x):
        return lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2.0),
                              (0, x))[1].sum()
    line = f.__code__.co_firstlineno + 1  # the while_loop's line
    with pytest.raises(UnsupportedError, match=r"(?s)Reverse-mode.*while_loop.*fori_loop.*"
                       rf"scan.*test_control_ad\.py:{line} "):
        tx.grad(f)(X)
    traced_bound = lambda x: lax.fori_loop(  # noqa: E731
        0, np.sum(x > -100.0), lambda i, v: v * 2.0, x).sum()
    with pytest.raises(UnsupportedError, match="while_loop"):
        tx.grad(traced_bound)(X)
    assert tx.jvp(traced_bound, (X,), (T_X,))[1] == pytest.approx(8 * T_X.sum())
