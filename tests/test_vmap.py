"""vmap's batching rules: every primitive, every way of batching its operands, against a loop.

One property over the whole catalogue: for each primitive (example operands and params
below), each pattern of batch dims (all at 0, all at -1, mixed, one unbatched, only one
batched) and float32/float64, `vmap(f, in_dims)(stacked operands)` equals stacking
`f(operands_i)` over a Python loop. Then graph inspection (one contraction, no broadcast
of the weight), batched contractions and convs, and mutation under vmap.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from transfuse.compiler.batching import BATCH_RULES, batch_graph
from transfuse.ir import Aval, interpret, lax, trace_to_graph
from transfuse.ir.linalg import LINALG
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.tracing import bind

import transfuse as tx
import transfuse.numpy as tnp

P = PRIMITIVES
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
FLOATS = (F32, F64)
EXEMPT = {"view_slice", "view_reshape", "view_transpose", "assign",
          "fused"}  # fused: created by the fusion pass after every transform (backend only)


# ---------------------------------------------------------------------------------------
# Operand generators: each takes a Generator and returns one per-example operand


def unit(shape, lo=-1.0, hi=1.0):
    return lambda rng, dt: rng.uniform(lo, hi, size=shape).astype(dt)


def ints(shape, lo, hi, dtype=np.int64):
    return lambda rng, dt: rng.integers(lo, hi, size=shape).astype(dtype)


def bools(shape):
    return lambda rng, dt: rng.random(size=shape) < 0.5


def with_specials(shape):
    def gen(rng, dt):
        x = rng.uniform(-2, 2, size=shape).astype(dt)
        flat = x.reshape(-1)
        if flat.size:
            flat[rng.integers(0, flat.size)] = rng.choice([np.nan, np.inf, -np.inf])
        return x
    return gen


def key(shape=()):
    return lambda rng, dt: rng.integers(0, 2**63, size=shape, dtype=np.uint64)


def fixed_dtype(gen, dtype):
    return lambda rng, dt: gen(rng, dtype)


class Case:
    """A primitive application: operand generators, params, and the dtypes to try."""

    def __init__(self, prim, ops, dtypes=FLOATS, **params):
        self.prim = P[prim]
        self.ops = ops
        self.dtypes = dtypes
        self.params = params

    def make_params(self, dtype):
        return {k: (dtype if v == "dtype" else v) for k, v in self.params.items()}

    def __repr__(self):
        return self.prim.name


UNARY_SHAPES = [(), (2, 3)]
BINARY_SHAPES = [((2, 3), (2, 3)), ((2, 3), (3,)), ((), (2, 1)), ((4, 1), (3,))]
DOMAIN = {"arccosh": (1.1, 2.0)}


def unary_cases():
    from transfuse.ir.primitives import UNARY_FLOAT, UNARY_NUMERIC, UNARY_TO_BOOL
    for name in UNARY_FLOAT:
        lo, hi = DOMAIN.get(name, (0.1, 0.9))
        for s in UNARY_SHAPES:
            yield Case(name, [unit(s, lo, hi)])
    for name in UNARY_NUMERIC:
        for s in UNARY_SHAPES:
            yield Case(name, [unit(s)])
        yield Case(name, [ints((3,), -5, 5, np.int32)], dtypes=(None,))
    for name in UNARY_TO_BOOL:
        for s in UNARY_SHAPES:
            yield Case(name, [with_specials(s)])
    yield Case("not", [bools((2, 3))], dtypes=(None,))
    yield Case("not", [ints((3,), -9, 9, np.int32)], dtypes=(None,))
    yield Case("integer_pow", [unit((2, 3))], y=3)
    yield Case("integer_pow", [unit((), 0.5, 2)], y=-2)
    yield Case("integer_pow", [ints((3,), -4, 4)], dtypes=(None,), y=2)


def binary_cases():
    from transfuse.ir.primitives import BINARY_FLOAT, BINARY_NUMERIC, COMPARISONS, LOGICAL
    for name in [*BINARY_NUMERIC, *BINARY_FLOAT]:
        lo, hi = (0.5, 2.0) if name in ("pow", "div", "floor_div", "mod") else (-1, 1)
        for sx, sy in BINARY_SHAPES:
            yield Case(name, [unit(sx, 0.5 if name == "pow" else -1, 2), unit(sy, lo, hi)])
    for name in BINARY_NUMERIC:
        lo, hi = (1, 5) if name in ("floor_div", "mod") else (0, 4) if name == "pow" \
            else (-5, 5)
        yield Case(name, [ints((2, 3), -6, 6), ints((3,), lo, hi)], dtypes=(None,))
    for name in COMPARISONS:
        for sx, sy in BINARY_SHAPES[:3]:
            # Small integers as floats: ties happen.
            yield Case(name, [lambda rng, dt, s=sx: rng.integers(-2, 2, s).astype(dt),
                              lambda rng, dt, s=sy: rng.integers(-2, 2, s).astype(dt)])
        yield Case(name, [ints((3,), -2, 2), ints((), -2, 2)], dtypes=(None,))
    for name in LOGICAL:
        yield Case(name, [bools((2, 3)), bools((3,))], dtypes=(None,))
        yield Case(name, [ints((3,), -9, 9, np.int32), ints((), -9, 9, np.int32)],
                   dtypes=(None,))


def other_elementwise_cases():
    for sp, st, sf in [((2, 3), (2, 3), (2, 3)), ((3,), (2, 3), ()), ((), (2, 1), (3,))]:
        yield Case("select", [bools(sp), unit(st), unit(sf)])
    for sx, slo, shi in [((2, 3), (), ()), ((3,), (2, 3), (3,)), ((), (2,), ())]:
        yield Case("clip", [unit(sx, -2, 2), unit(slo, -1, 0), unit(shi, 0, 1)])
    yield Case("cast", [unit((2, 3), -9, 9)], dtype=np.dtype(np.int32))
    yield Case("cast", [unit(())], dtype=np.dtype(np.float32))
    yield Case("cast", [ints((3,), -3, 3)], dtypes=(None,), dtype=np.dtype(np.float64))
    yield Case("cast", [ints((3,), -1, 2)], dtypes=(None,), dtype=np.dtype(np.bool_))
    yield Case("copy", [unit((2, 3))])
    yield Case("copy", [unit(())])


def reduction_cases():
    for name in ("reduce_sum", "reduce_prod", "reduce_max", "reduce_min"):
        for axes in [(0, 2), (1,), (), (0, 1, 2)]:
            yield Case(name, [unit((2, 3, 4))], axes=axes)
        yield Case(name, [unit(())], axes=())
        yield Case(name, [ints((3, 2), -4, 4)], dtypes=(None,), axes=(0,))
    yield Case("reduce_max", [bools((3, 2))], dtypes=(None,), axes=(1,))
    for name in ("argmax", "argmin"):
        for shape, axis in [((3, 4), 0), ((3, 4), 1), ((5,), 0)]:
            yield Case(name, [unit(shape)], axis=axis, index_dtype=np.dtype(np.int64))
        yield Case(name, [ints((3, 4), -2, 2)], dtypes=(None,), axis=1,
                   index_dtype=np.dtype(np.int32))
    for name in ("cumsum", "cumprod"):
        for shape, axis, rev in [((3, 4), 1, False), ((3, 4), 0, True), ((4,), 0, False)]:
            yield Case(name, [unit(shape)], axis=axis, reverse=rev)
        yield Case(name, [ints((3,), -3, 3, np.int32)], dtypes=(None,), axis=0, reverse=True)


NO_DIMS = ((), ())


def contraction_cases():
    dots = [
        ((3, 4), (4,), (((1,), (0,)), NO_DIMS)),
        ((2, 3), (3, 4), (((1,), (0,)), NO_DIMS)),
        ((2, 3, 4), (2, 4, 5), (((2,), (1,)), ((0,), (0,)))),
        ((3,), (4,), (NO_DIMS, NO_DIMS)),
        ((4,), (4,), (((0,), (0,)), NO_DIMS)),
        ((4, 2, 3), (3, 5, 4), (((0, 2), (2, 0)), NO_DIMS)),
        ((3, 2, 4), (4, 3), (((2,), (0,)), ((0,), (1,)))),
    ]
    for ls, rs, dn in dots:
        yield Case("dot_general", [unit(ls), unit(rs)], dimension_numbers=dn)
    yield Case("dot_general", [ints((2, 3), -3, 3), ints((3, 2), -3, 3)], dtypes=(None,),
               dimension_numbers=(((1,), (0,)), NO_DIMS))
    yield Case("conv", [unit((2, 4, 7)), unit((6, 2, 3))], window_strides=(2,),
               padding=((1, 0),), lhs_dilation=(1,), rhs_dilation=(2,), feature_group_count=2)
    yield Case("conv", [unit((1, 2, 5, 5)), unit((3, 2, 2, 2))], window_strides=(1, 2),
               padding=((1, 1), (0, 1)), lhs_dilation=(1, 2), rhs_dilation=(1, 1),
               feature_group_count=1)
    yield Case("conv", [unit((2, 6, 4)), unit((6, 1, 2))], window_strides=(1,),
               padding=((0, 0),), lhs_dilation=(1,), rhs_dilation=(1,), feature_group_count=6)


def shape_cases():
    for shape, new in [((2, 3), (3, 2)), ((6,), (2, 1, 3)), ((), (1, 1)), ((2, 3), (6,))]:
        yield Case("reshape", [unit(shape)], new_sizes=new)
    for shape, perm in [((2, 3, 4), (2, 0, 1)), ((2, 3), (1, 0)), ((), ())]:
        yield Case("transpose", [unit(shape)], permutation=perm)
    for shape, out, dims in [((3,), (2, 3), (1,)), ((3, 1), (3, 4), (0, 1)), ((), (2, 2), ()),
                             ((2,), (2, 3), (0,))]:
        yield Case("broadcast_in_dim", [unit(shape)], shape=out, broadcast_dimensions=dims)
    yield Case("squeeze", [unit((2, 1, 3, 1))], dimensions=(1, 3))
    yield Case("squeeze", [unit((1,))], dimensions=(0,))
    yield Case("expand_dims", [unit((2, 3))], dimensions=(0, 2))
    yield Case("expand_dims", [unit(())], dimensions=(0,))
    yield Case("expand_dims", [unit((2,))], dimensions=(1, 2))
    yield Case("concatenate", [unit((2, 3)), unit((1, 3)), unit((4, 3))], dimension=0)
    yield Case("concatenate", [unit((2, 3)), unit((2, 2))], dimension=1)
    yield Case("pad", [unit((3, 4)), unit(())], padding_config=((1, 2, 0), (0, -1, 1)))
    yield Case("pad", [unit((4,)), unit(())], padding_config=((-1, 2, 2),))
    yield Case("pad", [bools((2, 2)), bools(())], dtypes=(None,),
               padding_config=((1, 0, 0), (0, 1, 1)))
    yield Case("slice", [unit((5, 6))], starts=(1, 5), steps=(2, -2), sizes=(2, 3))
    yield Case("slice", [unit((4,))], starts=(0,), steps=(1,), sizes=(0,))
    yield Case("update_slice", [unit((5, 6)), unit((2, 3))], starts=(1, 5), steps=(2, -2),
               sizes=(2, 3))
    yield Case("update_slice", [unit((5, 6)), unit((3,))], starts=(0, 1), steps=(1, 2),
               sizes=(2, 3))
    yield Case("update_slice", [unit((4,)), unit(())], starts=(1,), steps=(1,), sizes=(2,))


def index_cases():
    yield Case("dynamic_slice", [unit((5, 6)), ints((), -2, 7), ints((), -2, 8, np.int32)],
               slice_sizes=(2, 3))
    yield Case("dynamic_slice", [unit((4,)), ints((), -1, 6)], slice_sizes=(4,))
    yield Case("dynamic_update_slice",
               [unit((5, 6)), unit((2, 3)), ints((), -2, 7), ints((), -2, 8, np.int32)])
    yield Case("dynamic_update_slice", [unit((4,)), unit((2,)), ints((), -1, 6)])
    for xs, idx, axis in [((4, 5), ints((3,), -4, 4), 0), ((4, 5), ints((2, 2), 0, 5), 1),
                          ((6,), ints((), -6, 6), 0), ((3, 4, 5), ints((2,), 0, 4), 1)]:
        yield Case("gather", [unit(xs), idx], axis=axis)
    yield Case("gather", [ints((4,), -9, 9), ints((3,), 0, 4, np.int32)], dtypes=(None,),
               axis=0)
    for name in ("scatter_add", "scatter"):
        yield Case(name, [unit((4, 5)), ints((3,), 0, 4), unit((3, 5))], axis=0)
        yield Case(name, [unit((4, 5)), ints((2, 2), -5, 5), unit((4, 2, 2))], axis=1)
        yield Case(name, [unit((3, 4, 2)), ints((), 0, 4), unit((3, 2))], axis=1)


def random_cases():
    for name in ("random_uniform", "random_normal"):
        yield Case(name, [key()], shape=(2, 3), dtype="dtype", stream=1)
        yield Case(name, [key((2,))], shape=(3,), dtype="dtype", stream=4)
    yield Case("random_fold_in", [key()], dtypes=(None,), data=5)
    yield Case("random_split", [key()], dtypes=(None,), size=3)
    yield Case("random_split", [key((2,))], dtypes=(None,), size=0)


def _call_graph():
    def body(x, y):
        return [lax.mul(lax.sin(x), y), lax.reduce_sum(lax.add(x, y), (0,))]
    graph, _ = trace_to_graph(body, [Aval((3,), F64), Aval((2, 3), F64)], "inner")
    return graph


def call_cases():
    yield Case("call", [unit((3,)), unit((2, 3))], dtypes=(F64,), graph=_call_graph())


ALL_CASES = [c for gen in (unary_cases, binary_cases, other_elementwise_cases,
                           reduction_cases, contraction_cases, shape_cases, index_cases,
                           random_cases, call_cases) for c in gen()]


def test_every_primitive_has_a_batching_rule_and_a_case():
    # Linear algebra is batched against a loop in tests/test_linalg.py.
    covered = {c.prim.name for c in ALL_CASES} | {"iota", "full"} | set(LINALG)
    for name, prim in P.items():
        if name in EXEMPT:
            continue
        assert prim in BATCH_RULES, f"no batching rule for {name}"
        assert name in covered, f"no vmap test case for {name}"


# ---------------------------------------------------------------------------------------
# The property


def batching_patterns(ranks):
    """in_dims per operand: all at 0, all at -1, mixed, each one unbatched, each alone."""
    n = len(ranks)
    patterns = [[0] * n, [-1] * n, [(i + 1) % (r + 1) for i, r in enumerate(ranks)]]
    if n > 1:
        patterns += [[None if j == i else 0 for j in range(n)] for i in range(n)]
        patterns += [[-1 if j == i else None for j in range(n)] for i in range(n)]
    return patterns


def stack_batched(examples, dim, batch):
    """Stack per-example operands along `dim` (None: the first example, unbatched)."""
    if dim is None:
        return examples[0]
    axis = dim if dim >= 0 else examples[0].ndim + 1 + dim
    if batch == 0:
        shape = list(examples[0].shape)
        shape.insert(axis, 0)
        return np.zeros(shape, examples[0].dtype)
    return np.stack(examples[:batch], axis=axis)


def run_case(case, dtype, dims, batch, rng):
    params = case.make_params(dtype)
    examples = [[g(rng, dtype) for g in case.ops] for _ in range(max(batch, 1))]
    per_op = list(zip(*examples))
    args = [stack_batched(list(ex), d, batch) for ex, d in zip(per_op, dims)]
    unbatched = {i for i, d in enumerate(dims) if d is None}

    def f(*ops):
        return bind(case.prim, *ops, **params)

    got = tx.vmap(f, in_dims=tuple(dims))(*args)

    def one(b):
        ops = [per_op[i][0] if i in unbatched else per_op[i][b] for i in range(len(dims))]
        with np.errstate(over="ignore"):  # the random impls overflow uint64 on purpose
            return case.prim.impl(*ops, **params)

    reference = one(0)
    if batch == 0:
        expected = (np.zeros((0,) + np.shape(r), np.asarray(r).dtype) for r in
                    (reference if case.prim.multiple_results else [reference]))
        expected = list(expected) if case.prim.multiple_results else next(expected)
    elif case.prim.multiple_results:
        expected = [np.stack(outs) for outs in zip(*[one(b) for b in range(batch)])]
    else:
        expected = np.stack([one(b) for b in range(batch)])
    return got, expected


def assert_same(got, expected, dtype):
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e, dtype)
        return
    got = np.asarray(got)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    if expected.dtype.kind == "f":
        tol = 1e-5 if expected.dtype == F32 else 1e-12
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(got, expected)


PARAMS = [pytest.param(case, dt, id=f"{case.prim.name}-{k}-{getattr(dt, 'name', 'fixed')}")
          for k, case in enumerate(ALL_CASES) for dt in case.dtypes]


@pytest.mark.parametrize("case, dtype", PARAMS)
def test_vmap_matches_loop(case, dtype):
    rng = np.random.default_rng(abs(hash((case.prim.name, str(dtype)))) % 2**32)
    ranks = [len(np.shape(g(rng, dtype))) for g in case.ops]
    for dims in batching_patterns(ranks):
        got, expected = run_case(case, dtype, dims, 3, rng)
        assert_same(got, expected, dtype)


@pytest.mark.parametrize("case, dtype", PARAMS[::3])
def test_vmap_size_zero_batch(case, dtype):
    rng = np.random.default_rng(7)
    got, expected = run_case(case, dtype, [0] * len(case.ops), 0, rng)
    assert_same(got, expected, dtype)


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
