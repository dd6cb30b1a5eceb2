"""VJP rules: every differentiable primitive against finite differences, JAX and torch.

Each case is a function of float arrays written with primitive-level ops (`ir/lax.py`), so
a case exercises one rule; integer operands (indices, start positions) are constants.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
from transfuse.compiler.functionalize import prepare
from transfuse.compiler.vjp import VJP_RULES, vjp_graph
from transfuse.ir import lax, verify
from transfuse.ir.linalg import LINALG
from transfuse.ir.primitives import PRIMITIVES, numpy_slices
from transfuse.ir.tracing import bind

import transfuse as tx

P = PRIMITIVES


# ---------------------------------------------------------------------------------------
# Input generators and the case table


def normal(*shape):
    return lambda rng, dt: rng.standard_normal(shape).astype(dt)


def uniform(lo, hi, *shape):
    return lambda rng, dt: rng.uniform(lo, hi, shape).astype(dt)


def away_from_zero(*shape):
    def make(rng, dt):
        return (rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(dt)
    return make


def with_zeros(*shape, at):
    def make(rng, dt):
        x = rng.standard_normal(shape)
        for idx in at:
            x[idx] = 0.0
        return x.astype(dt)
    return make


@dataclass
class Case:
    id: str
    fn: Callable
    args: list
    jax: Callable | None = None  # the same function written with jax
    eps: float = 1e-6  # finite-difference step
    tol: float = 1e-5


CASES: list[Case] = []


def case(id_, fn, args, jax=None, **kw):
    CASES.append(Case(id_, fn, args, jax, **kw))


def _j(path: str) -> Callable:
    """A jax function by dotted name, resolved lazily (jax is optional)."""
    def fn(*args, **kwargs):
        import jax
        obj = jax
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj(*args, **kwargs)
    return fn


# Elementwise unary: name -> (input generator, jax function)
UNARY = {
    "exp": (normal, "numpy.exp"), "expm1": (normal, "numpy.expm1"),
    "log": (lambda *s: uniform(0.5, 2.0, *s), "numpy.log"),
    "log1p": (lambda *s: uniform(-0.5, 2.0, *s), "numpy.log1p"),
    "sqrt": (lambda *s: uniform(0.5, 2.0, *s), "numpy.sqrt"),
    "rsqrt": (lambda *s: uniform(0.5, 2.0, *s), "lax.rsqrt"),
    "sin": (normal, "numpy.sin"), "cos": (normal, "numpy.cos"),
    "tan": (lambda *s: uniform(-1.2, 1.2, *s), "numpy.tan"),
    "arcsin": (lambda *s: uniform(-0.9, 0.9, *s), "numpy.arcsin"),
    "arccos": (lambda *s: uniform(-0.9, 0.9, *s), "numpy.arccos"),
    "arctan": (normal, "numpy.arctan"), "sinh": (normal, "numpy.sinh"),
    "cosh": (normal, "numpy.cosh"), "tanh": (normal, "numpy.tanh"),
    "arcsinh": (normal, "numpy.arcsinh"),
    "arccosh": (lambda *s: uniform(1.2, 3.0, *s), "numpy.arccosh"),
    "arctanh": (lambda *s: uniform(-0.9, 0.9, *s), "numpy.arctanh"),
    "logistic": (normal, "nn.sigmoid"), "erf": (normal, "scipy.special.erf"),
    "reciprocal": (away_from_zero, "numpy.reciprocal"),
    "neg": (normal, "numpy.negative"), "abs": (away_from_zero, "numpy.abs"),
    "square": (normal, "numpy.square"), "copy": (normal, "numpy.copy"),
    "floor": (normal, "numpy.floor"), "ceil": (normal, "numpy.ceil"),
    "round": (normal, "numpy.round"), "sign": (away_from_zero, "numpy.sign"),
}
for _name, (_gen, _jax) in UNARY.items():
    case(_name, lambda x, _p=P[_name]: bind(_p, x), [_gen(3, 4)], _j(_jax))
for _name in ("sin", "exp", "tanh"):
    case(f"{_name}-0d", lambda x, _p=P[_name]: bind(_p, x), [normal()])
    case(f"{_name}-size0", lambda x, _p=P[_name]: bind(_p, x), [normal(2, 0)])

for _y in (0, 1, 2, 3, -2):
    case(f"integer_pow-{_y}", lambda x, _y=_y: lax.integer_pow(x, _y),
         [away_from_zero(3, 4)], lambda x, _y=_y: _j("lax.integer_pow")(x, _y))

BINARY = {
    "add": (normal, normal, "numpy.add"), "sub": (normal, normal, "numpy.subtract"),
    "mul": (normal, normal, "numpy.multiply"),
    "div": (normal, away_from_zero, "numpy.divide"),
    "max": (normal, normal, "numpy.maximum"), "min": (normal, normal, "numpy.minimum"),
    "pow": (lambda *s: uniform(0.5, 2.0, *s), normal, "numpy.power"),
    "arctan2": (normal, normal, "numpy.arctan2"),
    "mod": (lambda *s: uniform(0.1, 0.9, *s), lambda *s: uniform(1.0, 2.0, *s), "numpy.mod"),
}
BROADCASTS = [((3, 1), (1, 4)), ((), (2, 3)), ((3, 4), (3, 4)), ((2, 3), (3,)), ((0, 3), (3,))]
for _name, (_gx, _gy, _jax) in BINARY.items():
    for _k, (_sx, _sy) in enumerate(BROADCASTS):
        # JAX checks two broadcasts per op (each check costs an XLA compile).
        case(f"{_name}-{_sx}-{_sy}", lambda x, y, _p=P[_name]: bind(_p, x, y),
             [_gx(*_sx), _gy(*_sy)], _j(_jax) if _k < 2 else None)

PRED = np.random.default_rng(1).random((3, 1)) < 0.5
case("select", lambda t, f: lax.select(PRED, t, f), [normal(3, 4), normal(4)],
     lambda t, f: _j("numpy.where")(PRED, t, f))
case("clip", lambda x, lo, hi: lax.clip(x, lo, hi),
     [normal(3, 4), uniform(-0.8, -0.2, 4), uniform(0.2, 0.8)], _j("numpy.clip"))
case("clip-0d-bounds", lambda x, lo, hi: lax.clip(x, lo, hi),
     [normal(5), uniform(-0.8, -0.2), uniform(0.2, 0.8)], _j("numpy.clip"))

for _axes in [(), (0,), (1, 2), (0, 1, 2)]:
    for _name in ("sum", "prod", "max", "min"):
        if _name in ("max", "min") and not _axes:
            continue
        case(f"reduce_{_name}-{_axes}", lambda x, _n=_name, _a=_axes: bind(
            P[f"reduce_{_n}"], x, axes=_a), [normal(3, 4, 2)],
             lambda x, _n=_name, _a=_axes: _j(f"numpy.{_n}")(x, axis=_a))
for _at in [[(0, 1)], [(0, 1), (2, 1)], [(0, 0), (0, 1), (1, 1)]]:
    case(f"reduce_prod-zeros-{len(_at)}", lambda x: lax.reduce_prod(x, (1,)),
         [with_zeros(3, 4, at=_at)], lambda x: _j("numpy.prod")(x, axis=1))
case("reduce_prod-size0", lambda x: lax.reduce_prod(x, (1,)), [normal(3, 0)],
     lambda x: _j("numpy.prod")(x, axis=1))

for _name in ("cumsum", "cumprod"):
    for _axis in (0, 1):
        for _rev in (False, True):
            case(f"{_name}-{_axis}-{_rev}",
                 lambda x, _n=_name, _a=_axis, _r=_rev: bind(P[_n], x, axis=_a, reverse=_r),
                 [normal(3, 4)],
                 lambda x, _n=_name, _a=_axis, _r=_rev: _j(f"lax.{_n}")(x, _a, _r))
for _at in [[(1, 0)], [(0, 1), (0, 3)], [(2, 0), (2, 1), (0, 2)]]:
    for _rev in (False, True):
        case(f"cumprod-zeros-{len(_at)}-{_rev}",
             lambda x, _r=_rev: lax.cumprod(x, 1, reverse=_r), [with_zeros(3, 4, at=_at)],
             lambda x, _r=_rev: _j("lax.cumprod")(x, 1, _r))

DOTS = [
    ((3, 4), (4, 5), (((1,), (0,)), ((), ()))),
    ((4, 3), (4, 5), (((0,), (0,)), ((), ()))),
    ((3, 4), (5, 4), (((1,), (1,)), ((), ()))),
    ((2, 3, 4), (2, 4, 5), (((2,), (1,)), ((0,), (0,)))),
    ((3, 2, 4), (4, 5, 2), (((2,), (0,)), ((1,), (2,)))),
    ((2, 3, 4), (4, 3, 5), (((1, 2), (1, 0)), ((), ()))),
    ((3,), (4,), (((), ()), ((), ()))),
    ((5,), (5,), (((0,), (0,)), ((), ()))),
    ((2, 3, 4, 5), (5, 2, 3, 2), (((3,), (0,)), ((0, 1), (1, 2)))),
    ((3, 2, 2), (2, 3, 2), (((1, 2), (2, 0)), ((0,), (1,)))),
    ((3, 0), (0, 4), (((1,), (0,)), ((), ()))),
]
for _ls, _rs, _dn in DOTS:
    case(f"dot_general-{_ls}-{_rs}-{_dn}",
         lambda x, y, _dn=_dn: lax.dot_general(x, y, _dn), [normal(*_ls), normal(*_rs)],
         lambda x, y, _dn=_dn: _j("lax.dot_general")(x, y, _dn))

CONVS = [  # lhs shape, rhs shape, strides, padding, lhs_dilation, rhs_dilation, groups
    ((2, 3, 7), (4, 3, 3), (1,), ((0, 0),), (1,), (1,), 1),
    ((2, 2, 7), (2, 2, 2), (3,), ((1, 0),), (1,), (1,), 1),
    ((2, 4, 6, 5), (6, 2, 3, 2), (2, 1), ((1, 2), (0, 1)), (1, 1), (1, 2), 2),
    ((1, 2, 4, 5), (3, 2, 2, 3), (1, 2), ((-1, 1), (2, 0)), (2, 1), (1, 1), 1),
    ((1, 3, 5, 5), (3, 1, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1), 3),
    ((1, 2, 7, 6), (2, 2, 2, 2), (3, 3), ((0, 0), (0, 0)), (1, 1), (2, 1), 1),
    ((0, 2, 4, 4), (2, 2, 2, 2), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 1),
]
for _c in CONVS:
    _ls, _rs, _st, _pad, _ld, _rd, _g = _c
    case(f"conv-{_c}",
         lambda x, w, _c=_c: lax.conv_general_dilated(x, w, _c[2], _c[3], _c[4], _c[5], _c[6]),
         [normal(*_ls), normal(*_rs)],
         lambda x, w, _c=_c: _j("lax.conv_general_dilated")(
             x, w, _c[2], _c[3], _c[4], _c[5], feature_group_count=_c[6]))

case("reshape", lambda x: lax.reshape(x, (2, 6)), [normal(3, 4)],
     lambda x: _j("numpy.reshape")(x, (2, 6)))
case("transpose", lambda x: lax.transpose(x, (2, 0, 1)), [normal(2, 3, 4)],
     lambda x: _j("numpy.transpose")(x, (2, 0, 1)))
case("broadcast_in_dim", lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (1, 2)),
     [normal(3, 1)], lambda x: _j("lax.broadcast_in_dim")(x, (2, 3, 4), (1, 2)))
case("broadcast_in_dim-0d", lambda x: lax.broadcast_in_dim(x, (2, 3), ()), [normal()],
     lambda x: _j("lax.broadcast_in_dim")(x, (2, 3), ()))
case("squeeze", lambda x: lax.squeeze(x, (1,)), [normal(3, 1, 4)],
     lambda x: _j("lax.squeeze")(x, (1,)))
case("expand_dims", lambda x: lax.expand_dims(x, (0, 2)), [normal(3, 4)],
     lambda x: _j("lax.expand_dims")(x, (0, 2)))
case("concatenate", lambda a, b, c: lax.concatenate([a, b, c], 0),
     [normal(2, 3), normal(0, 3), normal(4, 3)],
     lambda a, b, c: _j("lax.concatenate")([a, b, c], 0))
case("concatenate-axis1", lambda a, b: lax.concatenate([a, b], 1), [normal(2, 3), normal(2, 1)],
     lambda a, b: _j("lax.concatenate")([a, b], 1))
for _cfg in [((1, 2, 0), (0, 1, 0)), ((1, -1, 1), (-1, 2, 0)), ((-2, 0, 2), (2, -3, 1))]:
    case(f"pad-{_cfg}", lambda x, v, _cfg=_cfg: lax.pad(x, v, _cfg),
         [normal(3, 4), normal()], lambda x, v, _cfg=_cfg: _j("lax.pad")(x, v, _cfg))
case("pad-size0", lambda x, v: lax.pad(x, v, ((1, 1, 1), (0, 1, 0))), [normal(0, 2), normal()],
     lambda x, v: _j("lax.pad")(x, v, ((1, 1, 1), (0, 1, 0))))

SLICES = [((1, 0), (1, 2), (3, 3)), ((4, 1), (-2, 2), (2, 3)), ((4, 5), (-1, -1), (5, 6)),
          ((0, 0), (1, 1), (0, 6))]
for _s in SLICES:
    case(f"slice-{_s}", lambda x, _s=_s: lax.slice(x, *_s), [normal(5, 6)],
         lambda x, _s=_s: x[numpy_slices(*_s)])
case("update_slice", lambda x, u: lax.update_slice(x, u, (0, 1), (2, 2), (3, 3)),
     [normal(5, 6), normal(3)],
     lambda x, u: x.at[numpy_slices((0, 1), (2, 2), (3, 3))].set(u))
case("update_slice-neg-step", lambda x, u: lax.update_slice(x, u, (4, 5), (-2, -1), (2, 3)),
     [normal(5, 6), normal(2, 3)],
     lambda x, u: x.at[numpy_slices((4, 5), (-2, -1), (2, 3))].set(u))

STARTS = [np.asarray(1, np.int64), np.asarray(4, np.int64)]
case("dynamic_slice", lambda x: lax.dynamic_slice(x, STARTS, (3, 3)), [normal(5, 6)],
     lambda x: _j("lax.dynamic_slice")(x, STARTS, (3, 3)))
# Start 4 is clamped to 3 (JAX wraps negative starts, so none here).
DUS_STARTS = [np.asarray(4, np.int32), np.asarray(2, np.int32)]
case("dynamic_update_slice", lambda x, u: lax.dynamic_update_slice(x, u, DUS_STARTS),
     [normal(5, 6), normal(2, 3)],
     lambda x, u: _j("lax.dynamic_update_slice")(x, u, DUS_STARTS))

GATHER_IDX = np.array([[0, 3, 3], [4, 2, 0]])
case("gather", lambda x: lax.gather(x, GATHER_IDX, 1), [normal(4, 5)],
     lambda x: _j("numpy.take")(x, GATHER_IDX, axis=1))
case("gather-negative-index", lambda x: lax.gather(x, np.array([-1, 0, -1]), 0),
     [normal(4, 2)])
case("gather-0d-index", lambda x: lax.gather(x, np.array(2), 0), [normal(4, 2)],
     lambda x: _j("numpy.take")(x, np.array(2), axis=0))
SCATTER_IDX = np.array([1, 1, 3])
case("scatter_add", lambda x, u: lax.scatter_add(x, SCATTER_IDX, u, 0),
     [normal(4, 5), normal(3, 5)], lambda x, u: x.at[SCATTER_IDX].add(u))
case("scatter_add-axis1", lambda x, u: lax.scatter_add(x, SCATTER_IDX, u, 1),
     [normal(2, 4), normal(2, 3)], lambda x, u: x.at[:, SCATTER_IDX].add(u))
# Repeated targets: the last write wins (JAX leaves the winner unspecified: no oracle).
case("scatter", lambda x, u: lax.scatter(x, np.array([1, 4, 1, 0]), u, 0),
     [normal(6, 3), normal(4, 3)])
case("scatter-2d-index", lambda x, u: lax.scatter(x, np.array([[2, 0], [2, 1]]), u, 1),
     [normal(2, 4), normal(2, 2, 2)])


def _cast_roundtrip(x):
    # f64 -> f32 -> f64: the cotangent is cast back at each step.
    return lax.mul(lax.convert(lax.convert(x, np.float32), np.float64), 3.0)


# Finite differences through float32 rounding need a wide step.
case("cast-float", _cast_roundtrip, [uniform(0.5, 2.0, 3)], eps=1e-2, tol=1e-4)


def _composite(x, y):
    # A sub-graph behind a `call` node with two outputs.
    return [lax.mul(lax.sin(x), y), lax.add(x, y)]


def _call_case(x, y):
    graph = tx.make_graph(_composite)(np.zeros(lax.shape(x), lax.dtype(x)),
                                      np.zeros(lax.shape(y), lax.dtype(y)))
    a, b = bind(P["call"], x, y, graph=graph)
    return lax.add(lax.mul(a, 2.0), lax.square(b))


case("call", _call_case, [normal(3), normal(3)])

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "case ids must be unique"


# ---------------------------------------------------------------------------------------
# Helpers


def make_args(c: Case, dtype, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [g(rng, dtype) for g in c.args]


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


# ---------------------------------------------------------------------------------------
# Per-rule tests


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_rule_against_finite_differences(c):
    args = make_args(c, np.float64)
    rng = np.random.default_rng(7)
    out, vjp_fn = tx.vjp(c.fn, *args)
    expected_out = c.fn(*args)
    assert_close(out, expected_out, rtol=1e-12, atol=1e-12)
    ct = tx.tree_map(lambda o: random_like(rng, o), out)
    grads = vjp_fn(ct)
    assert len(grads) == len(args)
    for g, a in zip(grads, args):
        assert g.shape == a.shape and g.dtype == a.dtype
    assert_close(grads, numeric_vjp(c.fn, args, ct, c.eps), rtol=c.tol, atol=c.tol / 10)
    # Both halves are well-formed graphs with the documented layout.
    halves = vjp_graph(prepare(tx.make_graph(c.fn)(*args)), [True] * len(args))
    verify(halves.forward)
    verify(halves.backward)
    assert len(halves.backward.outputs) == len(args)
    assert len(halves.forward.outputs) == halves.num_outputs + halves.num_residuals
    assert len(halves.backward.inputs) == sum(halves.ct_outputs) + halves.num_residuals


@pytest.mark.parametrize("c", [c for c in CASES if c.id != "cast-float"],
                         ids=[i for i in IDS if i != "cast-float"])
def test_float32_stays_float32(c):
    args32 = make_args(c, np.float32)
    args64 = [a.astype(np.float64) for a in args32]
    rng = np.random.default_rng(3)
    out32, vjp32 = tx.vjp(c.fn, *args32)
    ct32 = tx.tree_map(lambda o: random_like(rng, o), out32)
    for o in tx.tree_leaves(out32):
        assert o.dtype == np.float32
    grads32 = vjp32(ct32)
    _, vjp64 = tx.vjp(c.fn, *args64)
    grads64 = vjp64(tx.tree_map(lambda t: t.astype(np.float64), ct32))
    for g32, g64 in zip(grads32, grads64):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=2e-3, atol=2e-3)


JAX_CASES = [c for c in CASES if c.jax is not None]


@pytest.fixture(scope="module")
def jax64():
    if "jax" not in sys.modules:  # faster XLA compiles for these many tiny programs
        os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_vjp(jax, fn, args, ct):
    """jax.vjp of fn at args, pulled back along ct, in one jitted call (one XLA compile)."""
    def run(args, ct):
        out, pullback = jax.vjp(fn, *args)
        return out, pullback(ct)
    out, cts = jax.jit(run)(tuple(args), ct)
    return np.asarray(out), [np.asarray(c) for c in cts]


@pytest.mark.parametrize("c", JAX_CASES, ids=[c.id for c in JAX_CASES])
def test_rule_against_jax(c, jax64):
    args = make_args(c, np.float64)
    rng = np.random.default_rng(11)
    out, vjp_fn = tx.vjp(c.fn, *args)
    ct = random_like(rng, out)
    jax_out, expected = jax_vjp(jax64, c.jax, args, ct)
    np.testing.assert_allclose(out, jax_out, rtol=1e-12, atol=1e-12)
    assert_close(vjp_fn(ct), expected, rtol=1e-10, atol=1e-12)


SECOND_ORDER = [c for c in CASES if not c.id.startswith(("floor", "ceil", "round", "sign"))]


@pytest.mark.parametrize("c", SECOND_ORDER, ids=[c.id for c in SECOND_ORDER])
def test_backward_graph_differentiates_again(c):
    # G(x) = J(x)^T ct; the vjp of G against finite differences of G.
    args = make_args(c, np.float64, seed=5)
    rng = np.random.default_rng(13)
    ct = random_like(rng, c.fn(*args))

    def first(*xs):
        _, vjp_fn = tx.vjp(c.fn, *xs)
        return vjp_fn(ct)

    outs, vjp_fn = tx.vjp(first, *args)
    ct2 = tuple(random_like(rng, o) for o in outs)
    assert_close(vjp_fn(ct2), numeric_vjp(first, args, ct2), rtol=1e-5, atol=1e-5)


def test_vjp_against_jvp():
    jvp = tx.jvp
    rng = np.random.default_rng(17)
    for c in CASES:
        args = make_args(c, np.float64)
        tangents = tuple(random_like(rng, a) for a in args)
        out, vjp_fn = tx.vjp(c.fn, *args)
        ct = random_like(rng, out)
        _, jvp_out = jvp(c.fn, tuple(args), tangents)
        lhs = float(np.sum(ct * np.asarray(jvp_out)))
        rhs = sum(float(np.sum(g * t)) for g, t in zip(vjp_fn(ct), tangents))
        rtol = 1e-6 if c.id == "cast-float" else 1e-9  # float32 inside
        np.testing.assert_allclose(lhs, rhs, rtol=rtol, atol=rtol, err_msg=c.id)


def test_forward_over_reverse_agrees_with_reverse_over_reverse():
    # <ct2, jvp(G)(u)> == <vjp(G)(ct2), u> for G = the first-order pullback of each case.
    jvp = tx.jvp
    rng = np.random.default_rng(19)
    for c in SECOND_ORDER:
        args = make_args(c, np.float64, seed=5)
        ct = random_like(rng, c.fn(*args))

        def first(*xs, c=c, ct=ct):
            return tx.vjp(c.fn, *xs)[1](ct)

        tangents = tuple(random_like(rng, a) for a in args)
        outs, vjp_fn = tx.vjp(first, *args)
        ct2 = tuple(random_like(rng, o) for o in outs)
        _, jvp_out = jvp(first, tuple(args), tangents)
        lhs = sum(float(np.sum(a * b)) for a, b in zip(ct2, jvp_out))
        rhs = sum(float(np.sum(g * u)) for g, u in zip(vjp_fn(ct2), tangents))
        rtol = 1e-6 if c.id == "cast-float" else 1e-9
        np.testing.assert_allclose(lhs, rhs, rtol=rtol, atol=rtol, err_msg=c.id)


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


def test_every_differentiable_primitive_has_a_case():
    covered = set()
    for c in CASES:
        args = make_args(c, np.float64)
        covered.update(n.prim.name for n in tx.make_graph(c.fn)(*args).nodes)
    # Views and assign are removed by prepare; `fused` exists only after every transform.
    exempt = set(NON_DIFFERENTIABLE) | {"view_slice", "view_reshape", "view_transpose",
                                        "assign", "cast", "fused"}
    covered |= set(LINALG)  # their VJPs are checked in tests/test_linalg.py
    missing = sorted(set(P) - covered - exempt)
    assert not missing, f"no finite-difference case reaches {missing}"


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
