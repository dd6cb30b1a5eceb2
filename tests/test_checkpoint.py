"""transfuse.checkpoint (alias remat): gradients as without it, residuals recomputed.

Checked against JAX's jax.checkpoint (float64) and central finite differences: grad, vjp,
jvp, vmap(grad), grad(grad) and jit, for every policy; nested checkpoints; random draws
recomputed identically; what reverse mode saves (saved_residuals) and that jit keeps the
recomputation apart from the forward pass (prevent_cse).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transfuse.ir.core import Graph

import transfuse as tx
from tests import helpers
from tests.helpers import assert_same

jax.config.update("jax_enable_x64", True)

POLICIES = ["nothing_saveable", "everything_saveable", "dots_saveable",
            "dots_with_no_batch_dims_saveable"]


def _policy(module, name):
    return getattr(module.checkpoint_policies, name)


def block(x, w, b):
    """Two tanh layers with a residual: dots, elementwise ops and a reduction inside."""
    h = np.tanh(x @ w + b)
    return x + np.sin(h @ w.T) * np.mean(h, axis=-1, keepdims=True)


def jblock(x, w, b):
    h = jnp.tanh(x @ w + b)
    return x + jnp.sin(h @ w.T) * jnp.mean(h, axis=-1, keepdims=True)


def loss(w, b, x, ckpt):
    """Three blocks, the middle two inside one outer checkpoint (nesting)."""
    x = ckpt(block)(x, w, b)
    x = ckpt(lambda x: ckpt(block)(ckpt(block)(x, w, b), w, b))(x)
    return np.sum(x ** 2) / x.size


def jloss(w, b, x, ckpt):
    x = ckpt(jblock)(x, w, b)
    x = ckpt(lambda x: ckpt(jblock)(ckpt(jblock)(x, w, b), w, b))(x)
    return jnp.sum(x ** 2) / x.size


def _inputs(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((5, 5)) / 2).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    x = rng.standard_normal((3, 5)).astype(dtype)
    return w, b, x


def _tx_ckpt(name):
    return lambda fn: tx.checkpoint(fn, policy=_policy(tx, name))


def _jax_ckpt(name):
    return lambda fn: jax.checkpoint(fn, policy=_policy(jax, name))


def _no_ckpt(fn):
    return fn


def _central_difference(f, w, direction, eps=1e-6):
    return (f(w + eps * direction) - f(w - eps * direction)) / (2 * eps)


@pytest.mark.parametrize("name", POLICIES)
def test_grad_vjp_jvp_match_jax_and_finite_differences(name):
    w, b, x = _inputs()
    ck, jck = _tx_ckpt(name), _jax_ckpt(name)
    grads = tx.grad(loss, argnums=(0, 1, 2))(w, b, x, ck)
    expected = jax.grad(jloss, argnums=(0, 1, 2))(w, b, x, jck)
    for g, e in zip(grads, expected):
        assert_same(g, np.asarray(e), exact=False, rtol=1e-10)
    plain = tx.grad(loss, argnums=(0, 1, 2))(w, b, x, _no_ckpt)
    for g, p in zip(grads, plain):
        np.testing.assert_allclose(g, p, rtol=1e-12, atol=1e-15)
    direction = np.random.default_rng(1).standard_normal(w.shape)
    fd = _central_difference(lambda w: loss(w, b, x, _no_ckpt), w, direction)
    np.testing.assert_allclose(np.sum(grads[0] * direction), fd, rtol=1e-6)
    # vjp of a non-scalar output, and jvp
    out, vjp_fn = tx.vjp(lambda w, x: ck(block)(x, w, b), w, x)
    ct = np.random.default_rng(2).standard_normal(out.shape)
    j_out, j_vjp = jax.vjp(lambda w, x: jck(jblock)(x, w, b), w, x)
    for g, e in zip(vjp_fn(ct), j_vjp(ct)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-14)
    value, tangent = tx.jvp(lambda w: loss(w, b, x, ck), (w,), (direction,))
    j_value, j_tangent = jax.jvp(lambda w: jloss(w, b, x, jck), (w,), (direction,))
    np.testing.assert_allclose([value, tangent], [j_value, j_tangent], rtol=1e-10)


@pytest.mark.parametrize("name", ["nothing_saveable", "dots_saveable"])
def test_vmap_of_grad_and_grad_of_grad(name):
    w, b, x = _inputs(seed=3)
    ck, jck = _tx_ckpt(name), _jax_ckpt(name)
    xs = np.random.default_rng(4).standard_normal((4,) + x.shape)
    per_example = tx.vmap(tx.grad(loss), in_dims=(None, None, 0, None))(w, b, xs, ck)
    loop = np.stack([tx.grad(loss)(w, b, xi, _no_ckpt) for xi in xs])
    np.testing.assert_allclose(per_example, loop, rtol=1e-12, atol=1e-15)
    # grad of (grad . v): a Hessian-vector product through nested checkpoints
    v = np.random.default_rng(5).standard_normal(w.shape)
    hvp = tx.grad(lambda w: np.sum(tx.grad(loss)(w, b, x, ck) * v))(w)
    j_hvp = jax.grad(lambda w: jnp.sum(jax.grad(jloss)(w, b, x, jck) * v))(w)
    np.testing.assert_allclose(hvp, j_hvp, rtol=1e-9, atol=1e-13)


def test_jit_of_every_policy_matches_the_interpreter():
    # One compile: two policies in float64, the default one in float32 (everything_saveable
    # is inlined before reverse mode; dots_with_no_batch_dims_saveable saves what
    # dots_saveable does here).
    w, b, x = _inputs(seed=6)
    single = [a.astype(np.float32) for a in (w, b, x)]

    def grads(w, b, x, name):
        return tx.grad(lambda w, x: _layers(w, b, x, _tx_ckpt(name), n=1), argnums=(0, 1))(w, x)

    names = ["nothing_saveable", "dots_saveable"]

    def program(w, b, x, w32, b32, x32):
        return [grads(w, b, x, n) for n in names] + [grads(w32, b32, x32, names[0])]

    compiled = tx.jit(program)(w, b, x, *single)
    eager = program(w, b, x, *single)
    plain = tx.grad(lambda w, x: _layers(w, b, x, _no_ckpt, n=1), argnums=(0, 1))(w, x)
    for k, (got, want) in enumerate(zip(compiled, eager)):
        f32 = k == len(names)
        tol = dict(rtol=2e-5, atol=1e-6) if f32 else dict(rtol=1e-12, atol=1e-14)
        for g, e, p in zip(got, want, plain):
            assert g.dtype == (np.float32 if f32 else np.float64)
            np.testing.assert_allclose(g, e, **tol)
            np.testing.assert_allclose(g, p, **tol)


def _layers(w, b, x, ckpt, n=4):
    for _ in range(n):
        x = ckpt(lambda x: np.tanh(np.tanh(x @ w + b) @ w))(x)
    return np.sum(x)


def test_jit_keeps_the_recomputation_unless_prevent_cse_is_false():
    w, b, x = _inputs(seed=7)

    def dots(**options):
        step = tx.grad_and_value(
            lambda w: _layers(w, b, x, lambda f: tx.checkpoint(f, **options)))
        return str(tx.jit(step).lower(w).graph).count("dot_general")

    plain = str(tx.jit(tx.grad_and_value(lambda w: _layers(w, b, x, _no_ckpt))).lower(w)
                .graph)
    # 8 forward products; the backward needs 2 per product but the first's x-cotangent
    n_plain = plain.count("dot_general")
    assert n_plain == 8 + 15
    assert dots() == n_plain + 8  # each layer's two products recomputed
    assert dots(prevent_cse=False) == n_plain  # CSE merged them with the forward's
    policy = tx.checkpoint_policies.dots_saveable
    assert dots(policy=policy) == n_plain  # the products are saved: nothing recomputed
    # The barriers wait for a cotangent: fusion cannot move the recomputation into the
    # forward pass (its values would then be stored from there on, as without checkpoint).
    # (np.sum's cotangent is a constant, which orders nothing: the loss squares.)
    def squares(w):
        y = x
        for _ in range(4):
            y = tx.checkpoint(lambda y: np.tanh(np.tanh(y @ w + b) @ w))(y)
        return np.sum(y ** 2)

    step = tx.grad_and_value(squares)
    fused = tx.jit(step).lower(w).fused_graph
    value_at = next(i for i, n in enumerate(fused.nodes) if fused.outputs[-1] in n.outputs)
    barriers = [i for i, n in enumerate(fused.nodes) if "optimization_barrier" in
                helpers.primitives_of(Graph([], [n], []))]
    assert len(barriers) >= 4 and min(barriers) >= value_at  # (its token: in that region)


def test_saved_residuals_shrink_as_jax_checkpoint_does():
    w, b, x = _inputs(seed=8)
    x = np.random.default_rng(9).standard_normal((32, 5))

    def activations(ckpt, policy=None):
        ck = (lambda f: ckpt(f, policy=policy)) if ckpt is not None else _no_ckpt
        return tx.saved_bytes(lambda w, b, x: _layers(w, b, x, ck, n=4), w, b, x,
                              include_arguments=False)

    none, every = activations(None), activations(tx.checkpoint, tx.checkpoint_policies
                                                 .everything_saveable)
    remat, dots = activations(tx.checkpoint), activations(
        tx.checkpoint, tx.checkpoint_policies.dots_saveable)
    act = x.nbytes
    assert every == none  # everything_saveable: as if there were no checkpoint
    # the inputs of layers 2 to 4 (the first's is an argument; np.sum needs nothing)
    assert remat == 3 * act
    assert dots == remat + 8 * act  # plus both products of each layer
    assert none > remat
    rows = tx.saved_residuals(lambda w, b, x: _layers(w, b, x, tx.checkpoint), w, b, x)
    assert {where.split(" at ")[0] for _, _, where in rows} >= {"output of remat"}
    # JAX stores no less than transfuse, with and without the checkpoint
    jx = jnp.asarray(x)

    def jax_bytes(ckpt):
        def f(w, b, x):
            for _ in range(4):
                x = ckpt(lambda x: jnp.tanh(jnp.tanh(x @ w + b) @ w))(x)
            return jnp.sum(x)
        _, fn = jax.vjp(f, w, b, jx)
        return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(fn)
                   if leaf is not jx and leaf.shape == x.shape)
    assert jax_bytes(jax.checkpoint) >= remat
    assert jax_bytes(_no_ckpt) >= none


def test_random_draws_are_recomputed_identically():
    rng = np.random.default_rng(10)
    x = rng.standard_normal(6)

    def noisy(x):
        return np.sin(x * np.random.normal(size=x.shape)) + np.random.uniform(size=x.shape)

    def f(x, ckpt):
        y = ckpt(noisy)(x)
        return np.sum(y * np.random.normal(size=x.shape))

    tx.random.seed(3)
    value, grad = tx.grad_and_value(f)(x, tx.checkpoint)
    tx.random.seed(3)
    value0, grad0 = tx.grad_and_value(f)(x, _no_ckpt)
    np.testing.assert_array_equal([value], [value0])
    np.testing.assert_allclose(grad, grad0, rtol=1e-14)
    # the draws are live: another seed gives another gradient
    tx.random.seed(4)
    assert not np.allclose(tx.grad(f)(x, tx.checkpoint), grad)


def test_zero_dim_and_size_zero_arguments():
    s = np.float32(0.7)
    g = tx.grad(lambda s: tx.checkpoint(lambda s: np.sin(s) * s)(s))(s)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, np.cos(s) * s + np.sin(s), rtol=1e-6)
    empty = np.zeros((0, 3))
    g = tx.grad(lambda e: np.sum(tx.checkpoint(np.tanh)(e)) + 1.0)(empty)
    assert g.shape == (0, 3)


def test_eager_call_decorator_form_and_bad_input():
    w, b, x = _inputs(seed=11)
    ck = tx.checkpoint(policy=tx.checkpoint_policies.dots_saveable)(block)
    np.testing.assert_array_equal(ck(x, w, b), block(x, w, b))  # outside a transform
    assert tx.remat is tx.checkpoint
    with pytest.raises(tx.TransfuseTypeError, match="checkpoint_policies"):
        tx.checkpoint(block, policy=lambda *a, **k: True)

    def writes(x):
        x[0] = 1.0
        return x * 2

    with pytest.raises(tx.MutationError, match="checkpoint"):
        tx.grad(lambda x: np.sum(tx.checkpoint(writes)(x)))(x)
