"""User derivative rules (custom_jvp, custom_vjp, Function) and lax.stop_gradient, against
JAX and torch.func in float64: values, grad, jvp, vmap, vmap(grad), grad(grad), jit (and
jit from the disk cache); nondiff_argnums, pytrees, captures, errors."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transfuse.ir.errors import BatchingError, TransfuseTypeError, UnsupportedError
from transfuse.runtime import cache as kernel_cache

import transfuse as tx
from tests.helpers import primitives_of

jax.config.update("jax_enable_x64", True)
RNG = np.random.default_rng(17)
X = RNG.normal(size=5)
Y = RNG.normal(size=5)


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def central_difference(f, x, eps=1e-6):
    """d sum(f) / dx by float64 central differences."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (np.sum(f(x + step)) - np.sum(f(x - step))) / (2 * eps)
    return grad


# ---------------------------------------------------------------------------------------
# The same functions written for transfuse and for JAX (np -> jnp)


def make_jvp_fn(custom_jvp, np_):
    """f({"a": x, "b": y}) = sin(a) * b, with a rule that is deliberately 3x the truth in
    a (so a test can tell the rule from differentiating f) and differentiable again."""
    @custom_jvp
    def f(p):
        return np_.sin(p["a"]) * p["b"]

    @f.defjvp
    def f_jvp(primals, tangents):
        (p,), (t,) = primals, tangents
        out = f(p)
        return out, 3 * np_.cos(p["a"]) * p["b"] * t["a"] + np_.sin(p["a"]) * t["b"]
    return f


def make_vjp_fn(custom_vjp, np_):
    """g(x, y) = (x * y, exp(x)), a rule 2x the truth in x, residuals a tuple."""
    @custom_vjp
    def g(x, y):
        return x * y, np_.exp(x)

    def g_fwd(x, y):
        return g(x, y), (x, y, np_.exp(x))

    def g_bwd(res, cts):
        x, y, ex = res
        c_prod, c_exp = cts
        return 2 * (c_prod * y + c_exp * ex), c_prod * x
    g.defvjp(g_fwd, g_bwd)
    return g


ours_f, jax_f = make_jvp_fn(tx.custom_jvp, np), make_jvp_fn(jax.custom_jvp, jnp)
ours_g, jax_g = make_vjp_fn(tx.custom_vjp, np), make_vjp_fn(jax.custom_vjp, jnp)


def loss_f(f, x, y):
    return (f({"a": x, "b": y}) ** 2).sum()


def loss_g(g, x, y):
    prod, ex = g(x, y)
    return (prod * ex).sum()


# ---------------------------------------------------------------------------------------
# custom_jvp


def test_custom_jvp_values_jvp_and_grad_use_the_rule():
    close(ours_f({"a": X, "b": Y}), np.sin(X) * Y)
    p, t = {"a": X, "b": Y}, {"a": Y, "b": X}
    theirs_jvp = jax.jit(lambda p, t: jax.jvp(jax_f, (p,), (t,)))(p, t)
    for ours, theirs in zip(tx.jvp(ours_f, (p,), (t,)), theirs_jvp):
        close(ours, theirs)
    ours_grad = tx.grad(lambda x, y: loss_f(ours_f, x, y), argnums=(0, 1))(X, Y)
    jax_grad = jax.jit(jax.grad(lambda x, y: loss_f(jax_f, x, y), argnums=(0, 1)))(X, Y)
    for ours, theirs in zip(ours_grad, jax_grad):
        close(ours, theirs)
    # The rule, not the function: 3x the central difference in x.
    close(ours_grad[0], 3 * central_difference(lambda x: np.sin(x) ** 2 * Y ** 2, X),
          rtol=1e-6, atol=1e-8)


def test_custom_jvp_vmap_vmap_grad_and_grad_grad():
    batch = RNG.normal(size=(3, 5))
    close(tx.vmap(lambda x: ours_f({"a": x, "b": Y}))(batch),
          jax.jit(jax.vmap(lambda x: jax_f({"a": x, "b": Y})))(batch))
    per_row = tx.vmap(tx.grad(lambda x: loss_f(ours_f, x, Y)))(batch)
    close(per_row, jax.jit(jax.vmap(jax.grad(lambda x: loss_f(jax_f, x, Y))))(batch))
    close(per_row, [tx.grad(lambda x: loss_f(ours_f, x, Y))(row) for row in batch])
    second = tx.grad(lambda x: tx.grad(lambda x: loss_f(ours_f, x, Y))(x).sum())(X)
    close(second, jax.jit(jax.grad(lambda x: jax.grad(lambda x: loss_f(jax_f, x, Y))(x).sum()))(X))
    # Forward over reverse: the transposed rule differentiates in forward mode too.
    close(tx.hessian(lambda x: loss_f(ours_f, x, Y))(X),
          jax.jit(jax.hessian(lambda x: loss_f(jax_f, x, Y)))(X))


def test_custom_jvp_is_one_node_holding_its_graphs():
    graph = tx.make_graph(lambda x: ours_f({"a": x, "b": Y}))(X)
    (node,) = [n for n in graph.nodes if n.prim.name == "custom_jvp_call"]
    assert {"fun", "jvp"} <= set(node.params)
    assert "sin" in primitives_of(node.params["fun"])
    assert "sin" not in {n.prim.name for n in graph.nodes}


def test_defjvps_one_rule_per_argument_as_jax():
    def make(custom_jvp, np_):
        @custom_jvp
        def f(x, y):
            return np_.sin(x) * y

        f.defjvps(lambda x_dot, out, x, y: np_.cos(x) * x_dot * y * 2,
                  lambda y_dot, out, x, y: np_.sin(x) * y_dot)
        return f

    ours, theirs = make(tx.custom_jvp, np), make(jax.custom_jvp, jnp)
    close(tx.grad(lambda x, y: ours(x, y).sum(), argnums=(0, 1))(X, Y)[0],
          jax.jit(jax.grad(lambda x, y: theirs(x, y).sum()))(X, Y))
    close(tx.jvp(ours, (X, Y), (Y, X))[1],
          jax.jit(lambda a, b: jax.jvp(theirs, (a, b), (b, a))[1])(X, Y))


def log1pexp_naive(x):
    return np.log(1 + np.exp(x))


@tx.custom_jvp
def log1pexp(x):
    return np.log(1 + np.exp(x))


@log1pexp.defjvp
def log1pexp_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return log1pexp(x), t * (1 - 1 / (1 + np.exp(x)))


def test_log1pexp_rule_gives_finite_gradients_where_the_naive_one_gives_nan():
    x = np.array([-3.0, 0.0, 2.0, 1000.0])
    with np.errstate(over="ignore", invalid="ignore"):
        naive = tx.vmap(tx.grad(log1pexp_naive))(x)
        stable = tx.vmap(tx.grad(log1pexp))(x)
    assert np.isnan(naive[-1])
    close(stable, [1 / (1 + np.exp(3)), 0.5, 1 / (1 + np.exp(-2)), 1.0])


def test_custom_jvp_nondiff_argnums_pass_python_values_to_the_rule():
    @partial(tx.custom_jvp, nondiff_argnums=(0,))
    def app(fn, x):
        return fn(x)

    @app.defjvp
    def app_jvp(fn, primals, tangents):
        (x,), (t,) = primals, tangents
        return app(fn, x), 2.0 * t

    close(tx.grad(lambda x: app(np.sin, x).sum())(X), np.full(5, 2.0))
    close(tx.jvp(lambda x: app(np.cos, x), (X,), (Y,))[1], 2 * Y)
    close(app(np.sin, X), np.sin(X))


def test_captured_values_are_differentiated_through_the_function():
    """A value the function closes over (here w, an outer grad's input) is an operand of
    the node; no rule covers it, so its derivative is the function's own."""
    def outer(w):
        @tx.custom_jvp
        def h(x):
            return np.sin(x) * w

        @h.defjvp
        def h_jvp(primals, tangents):
            (x,), (t,) = primals, tangents
            return h(x), 10.0 * t  # a rule for x only
        return h(X).sum() + tx.grad(lambda x: h(x).sum())(X).sum()

    # d/dw [sum(sin(X) w) + sum(10)] = sum(sin(X))
    close(tx.grad(outer)(1.5), np.sin(X).sum())


# ---------------------------------------------------------------------------------------
# custom_vjp


def test_custom_vjp_values_grad_vmap_grad_and_grad_grad_match_jax():
    close(ours_g(X, Y)[0], X * Y)
    close(ours_g(X, Y)[1], np.exp(X))
    ours = tx.grad(lambda x, y: loss_g(ours_g, x, y), argnums=(0, 1))(X, Y)
    theirs = jax.jit(jax.grad(lambda x, y: loss_g(jax_g, x, y), argnums=(0, 1)))(X, Y)
    for a, b in zip(ours, theirs):
        close(a, b)
    batch = RNG.normal(size=(3, 5))
    close(tx.vmap(tx.grad(lambda x: loss_g(ours_g, x, Y)))(batch),
          jax.jit(jax.vmap(jax.grad(lambda x: loss_g(jax_g, x, Y))))(batch))
    close(tx.vmap(tx.grad(lambda y: loss_g(ours_g, X, y)), in_dims=0)(batch),
          jax.jit(jax.vmap(jax.grad(lambda y: loss_g(jax_g, X, y))))(batch))
    second = tx.grad(lambda x: tx.grad(lambda x: loss_g(ours_g, x, Y))(x).sum())(X)
    close(second, jax.jit(jax.grad(lambda x: jax.grad(lambda x: loss_g(jax_g, x, Y))(x).sum()))(X))


def test_reverse_mode_stores_the_residuals_of_fwd():
    """The forward pass computes fwd (its residuals extra outputs of the node); the
    backward reads them instead of running fwd again."""
    from transfuse.compiler.vjp import vjp_graph

    split = vjp_graph(tx.make_graph(lambda x: loss_g(ours_g, x, Y))(X), [True])
    (node,) = [n for n in split.forward.nodes if n.prim.name == "custom_vjp_call"]
    assert node.params["saved"] and len(node.outputs) == 2 + 3
    assert "exp" not in primitives_of(split.backward)
    assert split.num_residuals >= 1


def test_custom_vjp_under_forward_mode_is_an_error_as_in_jax():
    with pytest.raises(UnsupportedError, match="forward-mode.*custom_vjp function"):
        tx.jvp(lambda x: ours_g(x, Y)[0], (X,), (Y,))


def test_custom_vjp_nondiff_argnums_and_empty_residuals():
    """JAX's clip_gradient: Python bounds, no residuals (None)."""
    def make(custom_vjp, np_):
        @partial(custom_vjp, nondiff_argnums=(0, 1))
        def clip_gradient(lo, hi, x):
            return x

        def fwd(lo, hi, x):
            return x, None

        def bwd(lo, hi, _, g):
            return (np_.clip(g, lo, hi),)
        clip_gradient.defvjp(fwd, bwd)
        return lambda x: (clip_gradient(-0.5, 0.5, 3 * x) ** 2).sum()

    x = np.linspace(-0.3, 0.3, 7)
    close(tx.grad(make(tx.custom_vjp, np))(x), jax.jit(jax.grad(make(jax.custom_vjp, jnp)))(x))
    assert np.any(np.abs(tx.grad(make(tx.custom_vjp, np))(x)) < np.abs(18 * x))


def test_pytree_outputs_and_zero_dim_and_empty_arguments():
    for shape in [(), (0,), (2, 3)]:
        x, y = RNG.normal(size=shape), RNG.normal(size=shape)
        ours = tx.grad(lambda x, y: loss_g(ours_g, x, y))(x, y)
        close(ours, jax.jit(jax.grad(lambda x, y: loss_g(jax_g, x, y)))(x, y))
        assert np.shape(ours) == shape
        close(tx.grad(lambda x, y: loss_f(ours_f, x, y))(x, y),
              jax.jit(jax.grad(lambda x, y: loss_f(jax_f, x, y)))(x, y))


def test_float32_keeps_its_dtype():
    x, y = X.astype(np.float32), Y.astype(np.float32)
    gx = tx.grad(lambda x: loss_g(ours_g, x, y))(x)
    fx = tx.grad(lambda x: loss_f(ours_f, x, y))(x)
    assert gx.dtype == fx.dtype == np.float32
    close(gx, jax.jit(jax.grad(lambda x: loss_g(jax_g, x, y)))(x), rtol=1e-5, atol=1e-5)
    # A Python number argument stays a Python number (NumPy keeps float32), tangent zero.
    assert tx.grad(lambda x: loss_g(ours_g, x, 0.5))(x).dtype == np.float32
    half, one_half = np.full(5, 0.5, np.float32), np.full(5, 1.5, np.float32)
    close(tx.grad(lambda x: loss_g(ours_g, x, 0.5))(x),
          jax.jit(jax.grad(lambda x: loss_g(jax_g, x, half)))(x), rtol=1e-5, atol=1e-5)
    close(tx.grad(lambda x: loss_f(ours_f, 1.5, x))(x),
          jax.jit(jax.grad(lambda x: loss_f(jax_f, one_half, x)))(x), rtol=1e-5, atol=1e-5)


def test_grad_and_jvp_of_the_batched_rules():
    """grad(vmap(f)) and jvp(vmap(f)): the rules of the batched node, with an unbatched
    operand (its cotangent summed over the batch)."""
    batch = RNG.normal(size=(3, 5))
    jax_batch = jnp.asarray(batch)  # JAX's custom_vjp under vmap refuses a NumPy closure
    ours = tx.grad(lambda x: tx.vmap(lambda y: loss_g(ours_g, x, y))(batch).sum())(X)
    # A Python loop, not JAX: jax 0.10.2's grad(vmap(custom_vjp)) with an unbatched x gives
    # neither its own loop's value nor the rule's (seen while writing this test).
    close(ours, sum(jax.jit(jax.grad(lambda x, y: loss_g(jax_g, x, y)))(X, y)
                    for y in jax_batch))
    ours = tx.grad(lambda x: tx.vmap(lambda y: loss_f(ours_f, x, y))(batch).sum())(X)
    close(ours, jax.jit(jax.grad(
        lambda x: jax.vmap(lambda y: loss_f(jax_f, x, y))(jax_batch).sum()))(X))
    ours = tx.jvp(lambda b: tx.vmap(lambda y: ours_f({"a": X, "b": y}))(b), (batch,),
                  (batch * 2,))[1]
    close(ours, jax.jit(lambda b: jax.jvp(
        lambda b: jax.vmap(lambda y: jax_f({"a": X, "b": y}))(b), (b,), (b * 2,))[1])(batch))


def test_rules_inside_control_flow_bodies():
    """custom_jvp and custom_vjp inside a scan body (reverse mode through vjp_graph: stored
    residuals) and a cond branch (fwd run again in the backward) give JAX's numbers."""
    def loss(x, g, f, lax):
        c, ys = lax.scan(lambda c, xi: (g(c, xi)[0] + xi, f({"a": xi, "b": c})), x[0], x)
        return c + ys.sum() + lax.cond(x[0] > 0, lambda x: g(x, x)[1].sum(),
                                       lambda x: x.sum(), x)

    x = np.abs(X) + 0.1
    close(tx.grad(lambda x: loss(x, ours_g, ours_f, tx.lax))(x),
          jax.jit(jax.grad(lambda x: loss(x, jax_g, jax_f, jax.lax)))(x))


# ---------------------------------------------------------------------------------------
# Function (torch.func's autograd.Function)


class Exp(tx.Function):
    """torch's example: exp, saving its output in setup_context."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return np.exp(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        return grad * result

    @staticmethod
    def jvp(ctx, tangent):
        (result,) = ctx.saved_tensors  # what save_for_forward saved, as in torch
        return tangent * result


class TorchExp(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.exp(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        return grad * result

    @staticmethod
    def jvp(ctx, tangent):
        (result,) = ctx.saved_tensors
        return tangent * result


def test_function_exp_matches_torch_func():
    from torch import func as tf

    x = torch.tensor(X)
    close(tx.grad(lambda x: Exp.apply(x).sum())(X),
          tf.grad(lambda x: TorchExp.apply(x).sum())(x))
    close(tx.jvp(Exp.apply, (X,), (Y,))[1], tf.jvp(TorchExp.apply, (x,), (torch.tensor(Y),))[1])
    batch = RNG.normal(size=(3, 5))
    close(tx.vmap(tx.grad(lambda x: Exp.apply(x).sum()))(batch),
          tf.vmap(tf.grad(lambda x: TorchExp.apply(x).sum()))(torch.tensor(batch)))
    close(tx.grad(lambda x: tx.grad(lambda x: Exp.apply(x).sum())(x).sum())(X), np.exp(X))
    close(Exp.apply(X), np.exp(X))


class Sum(tx.Function):
    """A reduction with an int argument and a vmap staticmethod (torch's pattern)."""

    vmap_calls = 0

    @staticmethod
    def forward(x, dim):
        return np.sum(x, axis=dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, dim = inputs
        ctx.dim, ctx.shape = dim, x.shape

    @staticmethod
    def backward(ctx, grad):
        return np.broadcast_to(np.expand_dims(grad, ctx.dim), ctx.shape), None

    @staticmethod
    def vmap(info, in_dims, x, dim):
        Sum.vmap_calls += 1
        assert info.batch_size == 3 and in_dims[1] is None
        return Sum.apply(np.moveaxis(x, in_dims[0], 0), dim + 1), 0


class TorchSum(torch.autograd.Function):
    @staticmethod
    def forward(x, dim):
        return x.sum(dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, dim = inputs
        ctx.dim, ctx.shape = dim, x.shape

    @staticmethod
    def backward(ctx, grad):
        return grad.unsqueeze(ctx.dim).expand(ctx.shape), None

    @staticmethod
    def vmap(info, in_dims, x, dim):
        return TorchSum.apply(x.movedim(in_dims[0], 0), dim + 1), 0


def test_function_vmap_staticmethod_matches_torch_func():
    from torch import func as tf

    batch = RNG.normal(size=(4, 3, 5))
    before = Sum.vmap_calls
    ours = tx.vmap(lambda x: Sum.apply(x, 1), in_dims=1)(batch)
    close(ours, tf.vmap(lambda x: TorchSum.apply(x, 1), in_dims=1)(torch.tensor(batch)))
    assert Sum.vmap_calls == before + 1  # the user's rule ran (one node, batched once)
    close(tx.vmap(tx.grad(lambda x: (Sum.apply(x, 0) ** 2).sum()), in_dims=1)(batch),
          tf.vmap(tf.grad(lambda x: (TorchSum.apply(x, 0) ** 2).sum()), in_dims=1)(
              torch.tensor(batch)))


class SinCos(tx.Function):
    """Two outputs (backward gets two gradients), a Python-number argument in ctx."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, scale):
        return np.sin(x) * scale, np.cos(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, scale = inputs
        ctx.save_for_backward(x)
        ctx.scale = scale

    @staticmethod
    def backward(ctx, grad_sin, grad_cos):
        (x,) = ctx.saved_tensors
        return grad_sin * np.cos(x) * ctx.scale - grad_cos * np.sin(x), None


def test_function_with_two_outputs_and_a_python_argument():
    def f(x):
        s, c = SinCos.apply(x, 3.0)
        return (s * c).sum()

    close(tx.grad(f)(X), 3 * np.cos(2 * X))
    batch = RNG.normal(size=(2, 5))
    close(tx.vmap(tx.grad(f))(batch), 3 * np.cos(2 * batch))


def test_nondiff_array_arguments_are_differentiated_through_the_function():
    @partial(tx.custom_vjp, nondiff_argnums=(1,))
    def g(x, w):
        return x * w

    g.defvjp(lambda x, w: (g(x, w), None), lambda w, res, ct: (ct * w * 10,))
    gx, gw = tx.grad(lambda x, w: g(x, w).sum(), argnums=(0, 1))(X, Y)
    close(gx, 10 * Y)  # the rule
    close(gw, X)  # no rule covers w: d(x * w)/dw


def test_random_draws_inside_a_custom_function_are_refused():
    import transfuse.numpy as tnp

    @tx.custom_jvp
    def noisy(x):
        return x + tnp.random.normal(size=x.shape)

    noisy.defjvp(lambda p, t: (noisy(p[0]), t[0]))
    with pytest.raises(UnsupportedError, match="noisy draws random numbers"):
        tx.grad(lambda x: noisy(x).sum())(X)


def test_function_errors_name_what_is_missing():
    class NoBackward(tx.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

    with pytest.raises(UnsupportedError, match="reverse-mode.*NoBackward.*no backward"):
        tx.grad(lambda x: NoBackward.apply(x).sum())(X)
    with pytest.raises(UnsupportedError, match="forward-mode.*NoBackward"):
        tx.jvp(NoBackward.apply, (X,), (Y,))
    with pytest.raises(BatchingError, match="NoBackward has no vmap staticmethod"):
        tx.vmap(NoBackward.apply)(RNG.normal(size=(2, 3)))

    class OldStyle(tx.Function):
        @staticmethod
        def forward(ctx, x):
            return x

    with pytest.raises(TransfuseTypeError, match="setup_context"):
        OldStyle.apply(X)


# ---------------------------------------------------------------------------------------
# Errors


def test_rule_errors_are_transfuse_type_errors_at_the_users_line():
    @tx.custom_jvp
    def f(x):
        return np.sin(x)

    with pytest.raises(TransfuseTypeError, match="no JVP rule"):
        tx.grad(lambda x: f(x).sum())(X)
    with pytest.raises(UnsupportedError, match="symbolic_zeros=True is not supported"):
        f.defjvp(lambda primals, tangents: (primals[0], tangents[0]), symbolic_zeros=True)

    @f.defjvp
    def f_jvp(primals, tangents):
        return f(primals[0]), tangents[0][:2]  # wrong shape

    wrong_shape = r"(?s)tangent output.*f64\[2\].*test_custom_rules.py"
    with pytest.raises(TransfuseTypeError, match=wrong_shape):
        tx.grad(lambda x: f(x).sum())(X)

    @tx.custom_vjp
    def g(x):
        return x

    g.defvjp(lambda x: (x, x), lambda res, ct: (ct, ct))
    with pytest.raises(TransfuseTypeError, match="tuple of 1 cotangent"):
        tx.grad(lambda x: g(x).sum())(X)


# ---------------------------------------------------------------------------------------
# stop_gradient


def test_stop_gradient_under_every_transform():
    sg = tx.lax.stop_gradient

    def f(x):
        return (x * sg(x) ** 2).sum()

    def jf(x):
        return (x * jax.lax.stop_gradient(x) ** 2).sum()

    close(tx.grad(f)(X), X ** 2)
    close(tx.grad(f)(X), jax.jit(jax.grad(jf))(X))
    close(tx.jvp(f, (X,), (Y,))[1], jax.jit(lambda x, t: jax.jvp(jf, (x,), (t,)))(X, Y)[1])
    close(tx.hessian(f)(X), jax.jit(jax.hessian(jf))(X))
    batch = RNG.normal(size=(3, 5))
    close(tx.vmap(tx.grad(f))(batch), jax.jit(jax.vmap(jax.grad(jf)))(batch))
    tree = sg({"a": X, "b": (Y, 2.0)})
    close(tree["a"], X)
    close(tree["b"][1], 2.0)
    g = tx.grad(lambda p: (p["a"] * sg(p)["b"][0]).sum())({"a": X, "b": (Y, 1.0)})
    close(g["a"], Y)
    close(g["b"][0], np.zeros(5))


def test_embedding_padding_row_gets_no_gradient_as_in_torch():
    import transfuse.nn.functional as F

    weight = RNG.normal(size=(6, 3))
    idx = np.array([[1, 4, 2], [4, 0, 5]])
    def loss(w, padding_idx):
        return (F.embedding(idx, w, padding_idx=padding_idx) ** 3).sum()

    for padding_idx in (4, -2):
        ours = tx.grad(loss)(weight, padding_idx)
        w = torch.tensor(weight, requires_grad=True)
        (torch.nn.functional.embedding(torch.tensor(idx), w, padding_idx=padding_idx) ** 3
         ).sum().backward()
        close(ours, w.grad.numpy())
        assert np.all(ours[4] == 0) and np.all(ours[1] != 0)


# ---------------------------------------------------------------------------------------
# jit: one program for all of them, compiled, then loaded from the disk cache


def _everything(x, y):
    """Values and gradients through every kind of rule, in one program (one compile)."""
    return (ours_f({"a": x, "b": y}),
            tx.grad(lambda x: loss_f(ours_f, x, y))(x),
            tx.grad(lambda x: loss_g(ours_g, x, y))(x),
            tx.grad(lambda x: Exp.apply(x).sum())(x),
            tx.grad(lambda x: (x * tx.lax.stop_gradient(x) ** 2).sum())(x),
            tx.jvp(lambda x: ours_f({"a": x, "b": y}), (x,), (y,))[1])


def test_jit_compiles_the_rules_and_loads_them_from_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFUSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TRANSFUSE_DISABLE_CACHE", raising=False)
    kernel_cache.clear_memory_cache()
    expected = _everything(X, Y)
    jitted = tx.jit(_everything)
    for ours, want in zip(jitted(X, Y), expected):
        close(ours, want)
    lowered = jitted.lower(X, Y)
    assert not {"custom_jvp_call", "custom_vjp_call", "call"} & primitives_of(
        lowered.fused_graph)
    kernel_cache.clear_memory_cache()
    again = tx.jit(_everything)
    for ours, want in zip(again(X, Y), expected):
        close(ours, want)
    assert again.cache_info().disk_hits >= 1
    kernel_cache.clear_memory_cache()
