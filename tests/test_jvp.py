"""JVP rules, primitive by primitive: against central finite differences and jax.jvp.

Every differentiable primitive of the catalogue has cases below (a coverage test checks
it); each case calls the primitive directly, so the rule under test is exactly one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from transfuse.compiler.jvp import JVP_RULES, jvp_graph
from transfuse.ir import PRIMITIVES, interpret, verify
from transfuse.ir.linalg import LINALG
from transfuse.ir.tracing import bind

import transfuse as tx
from tests.helpers import assert_same

P = PRIMITIVES
FLOATS = ["float64", "float32"]


# ---------------------------------------------------------------------------------------
# Input generators (seeded by the caller)


def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return np.abs(rng.standard_normal(shape)) + 0.5


def unit(rng, shape):
    return rng.uniform(-0.9, 0.9, shape)


def above_one(rng, shape):
    return np.abs(rng.standard_normal(shape)) + 1.5


def nonzero(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * (np.abs(rng.standard_normal(shape)) + 0.3)


def distinct(rng, shape):
    """A random permutation of well-separated values: no ties, no near-ties."""
    size = int(np.prod(shape, dtype=int))
    return (rng.permutation(size) * 0.37 - size * 0.15 + 0.05).reshape(shape)


@dataclass
class Case:
    """One call of a primitive: args[i] for i in `diff` are differentiated."""

    prim: str
    specs: list  # per argument: (generator, shape) or a fixed array (indices, predicates)
    params: dict = field(default_factory=dict)
    jax: Callable | None = None  # (jax module, *args) -> the same function in JAX
    label: str = ""

    @property
    def id(self) -> str:
        shapes = ",".join(str(s[1]) if isinstance(s, tuple) else "c" for s in self.specs)
        return f"{self.prim}{self.label}[{shapes}]"

    @property
    def diff(self) -> list[int]:
        return [i for i, s in enumerate(self.specs) if isinstance(s, tuple)]

    def args(self, rng, dtype) -> list:
        return [s[0](rng, s[1]).astype(dtype) if isinstance(s, tuple) else _fixed(s, dtype)
                for s in self.specs]

    def fn(self, args: list) -> Callable:
        """The primitive as a function of its differentiable arguments."""
        def f(*diff_args):
            full = list(args)
            for i, a in zip(self.diff, diff_args):
                full[i] = a
            params = dict(self.params)
            if callable(params.get("graph")):  # built for the arguments' dtype
                params["graph"] = params["graph"](full[0].dtype)
            return bind(P[self.prim], *full, **params)
        return f


def _fixed(x, dtype):
    """A fixed argument: float constants take the case's dtype, indices stay as they are."""
    return x.astype(dtype) if np.asarray(x).dtype.kind == "f" else x


def jnp_(name):
    return lambda jax, *a: getattr(jax.numpy, name)(*a)


def lax_(name, **kw):
    return lambda jax, *a: getattr(jax.lax, name)(*a, **kw)


UNARY = {
    "exp": (normal, jnp_("exp")), "expm1": (normal, jnp_("expm1")),
    "log": (positive, jnp_("log")), "log1p": (positive, jnp_("log1p")),
    "sqrt": (positive, jnp_("sqrt")), "rsqrt": (positive, lax_("rsqrt")),
    "sin": (normal, jnp_("sin")), "cos": (normal, jnp_("cos")), "tan": (unit, jnp_("tan")),
    "arcsin": (unit, jnp_("arcsin")), "arccos": (unit, jnp_("arccos")),
    "arctan": (normal, jnp_("arctan")), "sinh": (normal, jnp_("sinh")),
    "cosh": (normal, jnp_("cosh")), "tanh": (normal, jnp_("tanh")),
    "arcsinh": (normal, jnp_("arcsinh")), "arccosh": (above_one, jnp_("arccosh")),
    "arctanh": (unit, jnp_("arctanh")), "logistic": (normal, lax_("logistic")),
    "erf": (normal, lambda jax, x: jax.scipy.special.erf(x)),
    "reciprocal": (nonzero, jnp_("reciprocal")), "neg": (normal, jnp_("negative")),
    "abs": (nonzero, jnp_("abs")), "square": (normal, jnp_("square")),
    "copy": (normal, lambda jax, x: x),
}
BINARY = {
    "add": (normal, normal, jnp_("add")), "sub": (normal, normal, jnp_("subtract")),
    "mul": (normal, normal, jnp_("multiply")), "div": (normal, nonzero, jnp_("divide")),
    "max": (distinct, normal, jnp_("maximum")), "min": (distinct, normal, jnp_("minimum")),
    "pow": (positive, normal, lax_("pow")), "arctan2": (normal, nonzero, jnp_("arctan2")),
}
BINARY_SHAPES = [((3, 4), (3, 4)), ((3, 1), (1, 4)), ((), (2, 3)), ((0, 3), (1, 3))]


def _scatter_idx():
    return np.array([[0, 2, 2], [1, 0, 3]], dtype=np.int64)


def _jax_clamp(jax, x, lo, hi):
    shape = jax.numpy.broadcast_shapes(x.shape, lo.shape, hi.shape)
    x, lo, hi = (jax.numpy.broadcast_to(v, shape) for v in (x, lo, hi))
    return jax.lax.clamp(lo, x, hi)


def _jax_at(jax, x, idx, u, axis, how):
    ref = jax.numpy.asarray(x).at[(slice(None),) * axis + (idx,)]
    return getattr(ref, how)(u)


def _mod_x(rng, shape):
    """0.75 * (k + u) with u in (0.2, 0.8): with y near 0.75, away from mod's jumps."""
    return 0.75 * (rng.integers(-3, 4, shape) + rng.uniform(0.2, 0.8, shape))


def _mod_y(rng, shape):
    return 0.75 + rng.uniform(-0.02, 0.02, shape)


def _cases() -> list[Case]:
    cases = []
    # JAX compiles each new shape: one shape per elementwise primitive is checked there.
    for name, (gen, jax_fn) in UNARY.items():
        for shape in [(3, 4), (), (0,)]:
            cases.append(Case(name, [(gen, shape)], jax=jax_fn if shape == (3, 4) else None))
    for name, (gx, gy, jax_fn) in BINARY.items():
        for sx, sy in BINARY_SHAPES:
            cases.append(Case(name, [(gx, sx), (gy, sy)],
                              jax=jax_fn if sx == (3, 1) else None))
    for y in (0, 1, 2, 3, -2):
        cases.append(Case("integer_pow", [(nonzero, (3, 2))], {"y": y}, label=f"^{y}",
                          jax=lax_("integer_pow", y=y)))
    cases += [
        Case("mod", [(_mod_x, (3, 4)), (_mod_y, (3, 4))], jax=jnp_("mod")),
        Case("mod", [(_mod_x, (3, 1)), (_mod_y, (1, 4))], jax=jnp_("mod")),
        Case("select", [np.array([[True], [False], [True]]), (normal, (3, 4)),
                        (normal, (1, 4))], jax=jnp_("where")),
        Case("select", [np.array(True), (normal, ()), (normal, (2,))], jax=jnp_("where")),
        Case("clip", [(normal, (3, 4)), (lambda r, s: np.full(s, -0.3), ()),
                      (lambda r, s: np.full(s, 0.4), (4,))],
             jax=_jax_clamp),
        Case("clip", [(normal, (2, 3)), (lambda r, s: r.uniform(-2, -0.05, s), (2, 3)),
                      (lambda r, s: r.uniform(0.05, 2, s), (2, 3))],
             jax=_jax_clamp),
        Case("cast", [(normal, (3,))], {"dtype": np.dtype("float64")}, label="->f64",
             jax=lambda jax, x: x.astype("float64")),
        Case("cast", [(normal, (3,))], {"dtype": np.dtype("float32")}, label="->f32",
             jax=lambda jax, x: x.astype("float32")),
    ]
    for axes in [(0,), (1,), (0, 1), (), (0, 2)]:
        shape = (3, 4) if max(axes, default=0) < 2 else (2, 3, 2)
        for name, gen, jnp_name in [("reduce_sum", normal, "sum"), ("reduce_prod", normal, "prod"),
                                    ("reduce_max", distinct, "max"),
                                    ("reduce_min", distinct, "min")]:
            cases.append(Case(name, [(gen, shape)], {"axes": axes},
                              jax=lambda jax, x, n=jnp_name, a=axes: getattr(jax.numpy, n)(
                                  x, axis=a)))
    cases += [
        Case("reduce_prod", [(lambda r, s: np.array([[1.5, 0.0, -2.0], [0.0, 0.0, 3.0]]),
                              (2, 3))], {"axes": (1,)}, label="zeros",
             jax=lambda jax, x: jax.numpy.prod(x, axis=1)),
        Case("reduce_sum", [(normal, (0, 3))], {"axes": (0,)}),
        Case("reduce_prod", [(normal, (0, 3))], {"axes": (0,)}),
    ]
    for axis, reverse in [(0, False), (1, False), (1, True), (0, True)]:
        cases.append(Case("cumsum", [(normal, (5, 3))], {"axis": axis, "reverse": reverse},
                          jax=lax_("cumsum", axis=axis, reverse=reverse)))
        cases.append(Case("cumprod", [(nonzero, (5, 3))], {"axis": axis, "reverse": reverse},
                          jax=lax_("cumprod", axis=axis, reverse=reverse)))
    cases.append(Case("cumprod", [(lambda r, s: np.array([1.5, 0.0, -2.0, 0.5, 1.2, 0.0, 2.0]),
                                   (7,))], {"axis": 0, "reverse": False}, label="zeros",
                      jax=lax_("cumprod", axis=0)))
    cases.append(Case("cumprod", [(normal, (0,))], {"axis": 0, "reverse": False}))
    for lhs, rhs, dn in [((3, 4), (4, 5), (((1,), (0,)), ((), ()))),
                         ((2, 3, 4), (2, 4, 5), (((2,), (1,)), ((0,), (0,)))),
                         ((4, 3), (5, 4), (((0,), (1,)), ((), ()))),
                         ((3,), (3,), (((0,), (0,)), ((), ()))),
                         ((2, 3), (4,), (((), ()), ((), ()))),
                         ((2, 3, 4), (3, 2, 5), (((1,), (0,)), ((0,), (1,)))),
                         ((0, 3), (3, 2), (((1,), (0,)), ((), ())))]:
        cases.append(Case("dot_general", [(normal, lhs), (normal, rhs)],
                          {"dimension_numbers": dn},
                          jax=lambda jax, a, b, dn=dn: jax.lax.dot_general(a, b, dn)))
    for lhs, rhs, kw in [((2, 3, 6, 5), (4, 3, 3, 2), dict(window_strides=(1, 1),
                                                            padding=((0, 0), (0, 0)))),
                         ((1, 4, 7, 6), (6, 2, 3, 3), dict(window_strides=(2, 1),
                                                            padding=((1, 1), (2, 0)),
                                                            rhs_dilation=(1, 2),
                                                            feature_group_count=2)),
                         ((2, 2, 5), (3, 2, 2), dict(window_strides=(1,), padding=((1, 2),),
                                                     lhs_dilation=(2,)))]:
        nsp = len(lhs) - 2
        params = dict(lhs_dilation=(1,) * nsp, rhs_dilation=(1,) * nsp, feature_group_count=1)
        params.update(kw)
        cases.append(Case("conv", [(normal, lhs), (normal, rhs)], params,
                          jax=lambda jax, a, b, p=params: jax.lax.conv_general_dilated(
                              a, b, p["window_strides"], p["padding"], p["lhs_dilation"],
                              p["rhs_dilation"], feature_group_count=p["feature_group_count"])))
    cases += _structural_cases()
    cases.append(Case("call", [(normal, (3,)), (normal, (3,))], {"graph": _call_graph},
                      jax=lambda jax, x, y: [jax.numpy.sin(x) * y, x + y]))
    return cases


def _call_graph(dtype):
    def body(x, y):
        return [np.sin(x) * y, x + y]
    return tx.make_graph(body)(np.zeros(3, dtype), np.zeros(3, dtype))


def _structural_cases() -> list[Case]:
    two = np.int64(2)
    return [
        Case("reshape", [(normal, (3, 4))], {"new_sizes": (2, 6)},
             jax=lambda jax, x: x.reshape(2, 6)),
        Case("reshape", [(normal, ())], {"new_sizes": (1, 1)},
             jax=lambda jax, x: x.reshape(1, 1)),
        Case("transpose", [(normal, (2, 3, 4))], {"permutation": (2, 0, 1)},
             jax=lambda jax, x: x.transpose(2, 0, 1)),
        Case("broadcast_in_dim", [(normal, (3, 1))], {"shape": (2, 3, 4),
                                                      "broadcast_dimensions": (1, 2)},
             jax=lax_("broadcast_in_dim", shape=(2, 3, 4), broadcast_dimensions=(1, 2))),
        Case("broadcast_in_dim", [(normal, ())], {"shape": (0, 2), "broadcast_dimensions": ()}),
        Case("squeeze", [(normal, (3, 1, 2))], {"dimensions": (1,)},
             jax=lax_("squeeze", dimensions=(1,))),
        Case("expand_dims", [(normal, (3, 2))], {"dimensions": (0, 2)},
             jax=lax_("expand_dims", dimensions=(0, 2))),
        Case("concatenate", [(normal, (2, 3)), (normal, (1, 3)), (normal, (0, 3))],
             {"dimension": 0}, jax=lambda jax, *xs: jax.numpy.concatenate(xs, 0)),
        Case("concatenate", [np.ones((2, 2)), (normal, (2, 3))], {"dimension": 1},
             label="const", jax=lambda jax, a, b: jax.numpy.concatenate([a, b], 1)),
        Case("pad", [(normal, (3, 4)), (normal, ())],
             {"padding_config": ((1, 2, 0), (-1, 0, 0))},
             jax=lambda jax, x, v: jax.lax.pad(x, v, ((1, 2, 0), (-1, 0, 0)))),
        # Interior padding: transfuse's pad fills the interior with zeros, not with the
        # padding value (lax.pad's convention), so this one is checked by differences only.
        Case("pad", [(normal, (3, 4)), (normal, ())],
             {"padding_config": ((1, 2, 1), (0, -1, 2))}, label="interior"),
        Case("slice", [(normal, (5, 4))], {"starts": (4, 1), "steps": (-2, 2), "sizes": (3, 2)},
             jax=lambda jax, x: x[4::-2, 1:5:2]),
        Case("update_slice", [(normal, (5, 4)), (normal, (2, 1))],
             {"starts": (1, 0), "steps": (2, 1), "sizes": (2, 4)},
             jax=lambda jax, x, u: x.at[1:5:2, 0:4].set(jax.numpy.broadcast_to(u, (2, 4)))),
        Case("dynamic_slice", [(normal, (5, 4)), two, np.int64(1)], {"slice_sizes": (2, 3)},
             jax=lambda jax, x, a, b: jax.lax.dynamic_slice(x, (a, b), (2, 3))),
        Case("dynamic_update_slice", [(normal, (5, 4)), (normal, (2, 3)), two, np.int64(9)],
             jax=lambda jax, x, u, a, b: jax.lax.dynamic_update_slice(x, u, (a, b))),
        Case("gather", [(normal, (4, 5)), _scatter_idx()], {"axis": 1},
             jax=lambda jax, x, i: jax.numpy.take(x, i, axis=1)),
        Case("scatter_add", [(normal, (3, 4)), _scatter_idx(), (normal, (3, 2, 3))],
             {"axis": 1}, jax=lambda jax, x, i, u: _jax_at(jax, x, i, u, 1, "add")),
        Case("scatter", [(normal, (3, 5)), np.array([4, 0, 2]), (normal, (3, 3))], {"axis": 1},
             jax=lambda jax, x, i, u: _jax_at(jax, x, i, u, 1, "set")),
        Case("scatter", [(normal, (4, 2)), np.array([1, 3, 1]), (normal, (3, 2))], {"axis": 0},
             label="repeats"),
        Case("scatter", [np.zeros((4, 2)), np.array([1, 3]), (normal, (2, 2))], {"axis": 0},
             label="updates", jax=lambda jax, x, i, u: _jax_at(jax, x, i, u, 0, "set")),
    ]


CASES = _cases()


# ---------------------------------------------------------------------------------------
# Checks


def _leaves(x) -> list[np.ndarray]:
    return [np.asarray(v) for v in tx.tree_leaves(x)]


def _finite_difference(case: Case, args: list, tangents: list, eps: float = 1e-6) -> list:
    """Central differences in float64 along the tangents."""
    args64 = [_fixed(a, np.float64) for a in args]
    params = dict(case.params)
    if case.prim == "cast":
        params["dtype"] = np.dtype("float64")
    f = Case(case.prim, case.specs, params).fn(args64)
    diff = [args64[i] for i in case.diff]
    plus = f(*[x + eps * t for x, t in zip(diff, tangents)])
    minus = f(*[x - eps * t for x, t in zip(diff, tangents)])
    return [(p - m) / (2 * eps) for p, m in zip(_leaves(plus), _leaves(minus))]


def _run_jvp(case: Case, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    args = case.args(rng, dtype)
    primals = [args[i] for i in case.diff]
    tangents = [rng.standard_normal(p.shape).astype(dtype) for p in primals]
    out, tangent_out = tx.jvp(case.fn(args), tuple(primals), tuple(tangents))
    return args, primals, tangents, out, tangent_out


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_jvp_matches_finite_differences(case, dtype):
    args, primals, tangents, out, tangent_out = _run_jvp(case, dtype)
    expected_out = case.fn(args)(*primals)
    fd = _finite_difference(case, args, [t.astype(np.float64) for t in tangents])
    tol = 1e-6 if dtype == "float64" else 2e-3
    for o, e, t, d in zip(_leaves(out), _leaves(expected_out), _leaves(tangent_out), fd):
        # The primal output is the primitive's (to the bit eagerly; to rounding under
        # `pytest --jit`, where compiled math may differ by an ulp: tests.helpers).
        assert_same(o, e)
        assert t.shape == o.shape and t.dtype == o.dtype  # float32 stays float32
        scale = 1 + np.max(np.abs(d), initial=0)
        np.testing.assert_allclose(t, d, rtol=tol, atol=tol * scale)


def test_every_differentiable_primitive_has_cases():
    covered = {c.prim for c in CASES} | set(LINALG)  # LINALG: tests/test_linalg.py
    zero = set(ZERO_TANGENT)
    missing = sorted(p.name for p in JVP_RULES if p.name not in covered | zero)
    assert not missing, f"no finite-difference cases for {missing}"


jax_cases = [c for c in CASES if c.jax is not None]


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.mark.parametrize("case", jax_cases, ids=lambda c: c.id)
def test_jvp_matches_jax(case, jax):
    args, primals, tangents, out, tangent_out = _run_jvp(case, "float64", seed=1)

    def jax_fn(*diff_args):
        full = list(args)
        for i, a in zip(case.diff, diff_args):
            full[i] = a
        return case.jax(jax, *full)
    # One compiled computation per case: much faster than JAX's op-by-op dispatch.
    expected_out, expected_t = jax.jit(
        lambda p, t: jax.jvp(jax_fn, p, t))(tuple(primals), tuple(tangents))
    for t, e in zip(_leaves(tangent_out), _leaves(expected_t)):
        assert t.dtype == e.dtype
        np.testing.assert_allclose(t, e, rtol=1e-9, atol=1e-10)


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

ZERO_TANGENT = ["floor", "ceil", "round", "sign", "isnan", "isinf", "isfinite", "not",
                "floor_div", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "xor",
                "argmax", "argmin", "iota", "full", "random_uniform", "random_normal",
                "random_fold_in", "random_split"]


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
