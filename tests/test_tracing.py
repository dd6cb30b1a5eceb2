"""Tracing, printing, verification, simplification, errors, pytrees and random numbers."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transfuse.compiler.functionalize import prepare
from transfuse.compiler.simplify import algebraic, cse, dce, fold_constants, simplify
from transfuse.ir import Aval, Graph, Node, Var, interpret, verify
from transfuse.ir.errors import (
    ConcretizationError,
    DTypeError,
    ShapeError,
    TracerLeakError,
    TransfuseError,
    UnsupportedError,
    VerificationError,
)
from transfuse.ir.primitives import PRIMITIVES

import transfuse as tx
import transfuse.numpy as tnp
from tests.helpers import assert_same, rand, traced
from transfuse import lax

# ---------------------------------------------------------------------------------------
# Plain NumPy and transfuse.numpy give the same graph and numbers


def mlp_numpy(x, w1, b1, w2):
    h = np.tanh(x @ w1 + b1)
    logits = h @ w2
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    return np.sum(shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True)))


def mlp_tnp(x, w1, b1, w2):
    h = tnp.tanh(tnp.matmul(x, w1) + b1)
    logits = tnp.matmul(h, w2)
    shifted = logits - tnp.max(logits, axis=1, keepdims=True)
    return tnp.sum(shifted - tnp.log(tnp.sum(tnp.exp(shifted), axis=1, keepdims=True)))


def _mlp_args(dtype):
    rng = np.random.default_rng(0)
    return (rand(rng, (8, 5), dtype), rand(rng, (5, 6), dtype), rand(rng, (6,), dtype),
            rand(rng, (6, 3), dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_and_tnp_give_the_same_graph_and_numbers(dtype):
    args = _mlp_args(dtype)
    g_np = tx.make_graph(mlp_numpy)(*args)
    g_tnp = tx.make_graph(mlp_tnp)(*args)
    assert g_np.structural_key() == g_tnp.structural_key()
    assert g_np == g_tnp
    assert_same(traced(mlp_numpy, *args), mlp_numpy(*args))
    assert_same(traced(mlp_tnp, *args), mlp_numpy(*args))
    assert mlp_tnp(*args) == mlp_numpy(*args)  # tnp on NumPy arrays is NumPy itself


def test_structural_hash_ignores_names_but_not_structure():
    x = np.ones(3)
    g1 = tx.make_graph(lambda a: np.sin(a) + 1.0)(x)
    g2 = tx.make_graph(lambda b: np.sin(b) + 1.0)(x)
    g3 = tx.make_graph(lambda a: np.cos(a) + 1.0)(x)
    g4 = tx.make_graph(lambda a: np.sin(a) + 2.0)(x)
    g5 = tx.make_graph(lambda a: np.sin(a) + 1.0)(x.astype(np.float32))
    assert g1 == g2 and hash(g1) == hash(g2)
    assert len({g1.structural_key(), g3.structural_key(), g4.structural_key(),
                g5.structural_key()}) == 4


# ---------------------------------------------------------------------------------------
# Printer


def test_printer_output_is_pinned():
    def f(x, w):
        h = np.tanh(x @ w)
        return (h * 2.0).sum(axis=0)

    line = inspect.getsourcelines(f)[1]
    x = np.zeros((64, 5), np.float32)
    w = np.zeros((5, 5), np.float32)
    text = str(tx.make_graph(f)(x, w))
    dot = "%2:f32[64,5] = dot_general[dimension_numbers=(((1,), (0,)), ((), ()))] %0, %1"
    expected = "\n".join([
        "graph f(%0:f32[64,5], %1:f32[5,5]) {",
        f"  {dot} # test_tracing.py:{line + 1}",
        f"  %3:f32[64,5] = tanh %2                                   # test_tracing.py:{line + 1}",
        f"  %4:f32[64,5] = mul %3, 2.0:f32                           # test_tracing.py:{line + 2}",
        f"  %5:f32[5] = reduce_sum[axes=(0,)] %4                     # test_tracing.py:{line + 2}",
        "  return %5",
        "}",
    ])
    assert text == expected


def test_printer_shows_constants_captures_and_random_key():
    table = np.arange(6.0).reshape(2, 3)

    def f(x):
        return x * table + tnp.random.normal(size=(2, 3))

    text = str(tx.make_graph(f)(np.ones((2, 3))))
    assert "= const" in text
    assert "random_normal" in text
    assert " ; %" in text  # the implicit key input is listed after a semicolon


# ---------------------------------------------------------------------------------------
# Verifier


def _tiny_graph():
    x = Var(Aval((3,), np.float32))
    y = Var(Aval((3,), np.float32))
    node = Node(PRIMITIVES["sin"], [x], {}, [y])
    return x, y, node


def test_verifier_accepts_traced_graphs():
    verify(tx.make_graph(mlp_numpy)(*_mlp_args("float32")))


def test_verifier_rejects_use_before_definition():
    x, y, node = _tiny_graph()
    z = Var(Aval((3,), np.float32))
    bad = Graph([x], [Node(PRIMITIVES["cos"], [z], {}, [y])], [y])
    with pytest.raises(VerificationError, match="used before definition"):
        verify(bad)


def test_verifier_rejects_wrong_output_aval():
    x, _, _ = _tiny_graph()
    wrong = Var(Aval((4,), np.float32))
    bad = Graph([x], [Node(PRIMITIVES["sin"], [x], {}, [wrong])], [wrong])
    with pytest.raises(VerificationError, match="shape rule gives"):
        verify(bad)


def test_verifier_rejects_double_definition_and_undefined_output():
    x, y, node = _tiny_graph()
    with pytest.raises(VerificationError, match="defined twice"):
        verify(Graph([x], [node, Node(PRIMITIVES["cos"], [x], {}, [y])], [y]))
    with pytest.raises(VerificationError, match="not defined"):
        verify(Graph([x], [], [y]))


def test_verifier_rejects_bad_params_and_dtypes():
    x = Var(Aval((3,), np.float32))
    i = Var(Aval((3,), np.int32))
    out = Var(Aval((3,), np.float32))
    with pytest.raises(VerificationError, match="shape rule failed"):
        verify(Graph([x, i], [Node(PRIMITIVES["add"], [x, i], {}, [out])], [out]))
    with pytest.raises(VerificationError, match="shape rule failed"):
        verify(Graph([x], [Node(PRIMITIVES["reduce_sum"], [x], {"axes": (1,)}, [out])],
                     [out]))


# ---------------------------------------------------------------------------------------
# Simplification passes preserve results


def _messy(x, y):
    a = np.sin(x) * 1.0 + 0.0
    b = np.sin(x)
    c = x.T.T.reshape(x.shape) + np.ones(x.shape[1]) * 3
    unused = np.exp(y)  # noqa: F841
    d = (y.reshape(-1).reshape(y.shape)) @ x
    return a + b + c + d.sum() + np.arange(3.0).sum()


@pytest.mark.parametrize("passes", [[dce], [cse], [fold_constants], [algebraic], [simplify]],
                         ids=lambda p: p[0].__name__)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_pass_preserves_results(passes, dtype):
    rng = np.random.default_rng(1)
    x, y = rand(rng, (3, 3), dtype), rand(rng, (2, 3), dtype)
    graph = prepare(tx.make_graph(_messy)(x, y))
    out = graph
    for p in passes:
        out = p(out)
    verify(out)
    np.testing.assert_allclose(interpret(out, [x, y])[0], _messy(x, y), rtol=1e-5)
    assert len(out.nodes) <= len(graph.nodes)


def test_simplify_shrinks_the_messy_graph():
    x, y = np.ones((3, 3)), np.ones((2, 3))
    graph = prepare(tx.make_graph(_messy)(x, y))
    small = simplify(graph)
    names = [n.prim.name for n in small.nodes]
    assert names.count("sin") == 1  # CSE
    assert "exp" not in names  # DCE
    assert "transpose" not in names  # transpose of transpose
    assert len(small.nodes) < len(graph.nodes) - 4


def test_simplify_keeps_negative_zero_semantics():
    x = np.array([-0.0, 1.0])
    graph = simplify(prepare(tx.make_graph(lambda a: a + 0.0)(x)))
    out = interpret(graph, [x])[0]
    assert np.signbit(out[0]) == np.signbit(x + 0.0)[0]


# ---------------------------------------------------------------------------------------
# Errors name the user's line


def _line_of(fn, needle: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, text in enumerate(lines) if needle in text)


def test_branching_on_a_traced_value_names_the_line_and_suggests_where():
    def f(x):
        if x.sum() > 0:  # branch here
            return x
        return -x

    with pytest.raises(ConcretizationError) as info:
        tx.make_graph(f)(np.ones(3))
    message = str(info.value)
    assert f"test_tracing.py:{_line_of(f, 'branch here')}" in message
    assert "tnp.where" in message


@pytest.mark.parametrize("convert", [float, int, bool, lambda t: t.item()])
def test_concretizing_a_traced_value_is_an_error(convert):
    with pytest.raises(ConcretizationError, match="test_tracing.py"):
        tx.make_graph(lambda x: convert(x.sum()))(np.ones(3))


def test_unsupported_numpy_function_is_named():
    def f(x):
        return np.sort_complex(x)  # sort here

    with pytest.raises(UnsupportedError) as info:
        tx.make_graph(f)(np.ones(3))
    assert "numpy.sort_complex" in str(info.value)
    assert f"test_tracing.py:{_line_of(f, 'sort here')}" in str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, TransfuseError)


def test_wrong_dtypes_to_a_primitive():
    def f(x, y):
        return lax.add(x, y)

    with pytest.raises(DTypeError, match="one dtype") as info:
        tx.make_graph(f)(np.ones(3, np.float32), np.ones(3, np.float64))
    assert "test_tracing.py" in str(info.value)
    with pytest.raises(DTypeError, match="floating"):
        tx.make_graph(lambda x: lax.sin(x))(np.ones(3, np.int32))


def test_shape_mismatch_names_the_line():
    def f(x, y):
        return x + y  # add here

    with pytest.raises(ShapeError) as info:
        tx.make_graph(f)(np.ones(3), np.ones(4))
    assert "do not broadcast" in str(info.value)
    assert f"test_tracing.py:{_line_of(f, 'add here')}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_writing_a_traced_value_into_a_numpy_array_is_an_error():
    def f(x):
        out = np.zeros(3)
        out[0] = x[0]  # element write
        return out

    def g(x):
        out = np.zeros(3)
        out[:2] = x[:2]  # slice write
        return out

    for fn, needle in ((f, "element write"), (g, "slice write")):
        with pytest.raises(TransfuseError, match="tnp.zeros") as info:
            tx.make_graph(fn)(np.ones(3))
        assert f"test_tracing.py:{_line_of(fn, needle)}" in str(info.value)


def test_leaked_tracer_is_an_error():
    box = []
    tx.make_graph(lambda x: box.append(x) or x)(np.ones(2))
    with pytest.raises(TracerLeakError):
        tx.make_graph(lambda y: y + box[0])(np.ones(2))


def test_non_array_output_is_an_error():
    with pytest.raises(TypeError, match="must return arrays"):
        tx.make_graph(lambda x: "text")(np.ones(2))


# ---------------------------------------------------------------------------------------
# Constants, views and mutation as recorded


def test_closed_over_arrays_become_snapshotted_constants():
    table = np.arange(3.0)
    graph = tx.make_graph(lambda x: x * table)(np.ones(3))
    table[:] = 100  # a later change to the global does not change the graph
    assert len(graph.consts) == 1
    np.testing.assert_array_equal(interpret(graph, [np.full(3, 2.0)])[0], [0, 2, 4])


def test_views_and_mutation_are_recorded_and_interpreted_like_numpy():
    def f(x):
        y = tnp.zeros_like(x)
        y[1:] = x[:-1] * 2
        y += 1
        z = y.T
        z[0, 0] = 5
        np.add(y, 1, out=y)
        r = y.reshape(-1)
        r[3] = -7
        return y, z

    x = rand(np.random.default_rng(2), (3, 4), "float64")
    graph = tx.make_graph(f)(x)
    names = [n.prim.name for n in graph.nodes]
    assert "assign" in names and "view_transpose" in names and "view_reshape" in names
    expected = f(x)
    assert_same(tuple(interpret(graph, [x])), expected)


def test_reshape_of_a_transposed_view_copies_like_numpy():
    def f(x):
        y = tnp.zeros((2, 3))
        flat = y.T.reshape(-1)  # NumPy must copy here
        flat[0] = 9.0
        return y + x

    graph = tx.make_graph(f)(np.ones((2, 3)))
    names = [n.prim.name for n in graph.nodes]
    assert names[:3] == ["full", "view_transpose", "reshape"]  # a copy, as NumPy makes
    assert_same(interpret(graph, [np.ones((2, 3))])[0], f(np.ones((2, 3))))


# ---------------------------------------------------------------------------------------
# Hypothesis: shape rules agree with NumPy


shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


@settings(max_examples=200, deadline=None)
@given(shapes, shapes)
def test_broadcast_rule_matches_numpy(a, b):
    x, y = np.zeros(a), np.zeros(b)
    try:
        expected = np.broadcast_shapes(a, b)
    except ValueError:
        with pytest.raises(ShapeError):
            PRIMITIVES["add"].out_avals([Aval(a, np.float64), Aval(b, np.float64)], {})
        return
    out = PRIMITIVES["add"].out_avals([Aval(a, np.float64), Aval(b, np.float64)], {})[0]
    assert out.shape == expected == (x + y).shape


@settings(max_examples=150, deadline=None)
@given(shapes.filter(lambda s: len(s) > 0), st.data())
def test_reduction_and_transpose_rules_match_numpy(shape, data):
    x = np.ones(shape)
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1)))))
    out = PRIMITIVES["reduce_sum"].out_avals([Aval(shape, np.float64)], {"axes": axes})[0]
    assert out.shape == np.sum(x, axis=axes).shape
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    out = PRIMITIVES["transpose"].out_avals([Aval(shape, np.float64)],
                                            {"permutation": perm})[0]
    assert out.shape == np.transpose(x, perm).shape


@settings(max_examples=100, deadline=None)
@given(shapes, shapes)
def test_traced_broadcasting_programs_match_numpy(a, b):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(a), rng.standard_normal(b).astype(np.float32)
    try:
        expected = np.tanh(x) * y - np.maximum(x, y)
    except ValueError:
        with pytest.raises(ShapeError):
            traced(lambda p, q: np.tanh(p) * q - np.maximum(p, q), x, y)
        return
    assert_same(traced(lambda p, q: np.tanh(p) * q - np.maximum(p, q), x, y), expected)


# ---------------------------------------------------------------------------------------
# Pytrees


def test_tree_roundtrip_and_map():
    tree = {"b": (1, [2, None]), "a": np.ones(2), "c": {"z": 3, "y": (4,)}}
    leaves, treedef = tx.tree_flatten(tree)
    assert treedef.num_leaves == len(leaves) == 5
    back = tx.tree_unflatten(treedef, leaves)
    assert back["b"] == (1, [2, None]) and back["c"] == {"z": 3, "y": (4,)}
    doubled = tx.tree_map(lambda v: v * 2, tree)
    assert doubled["c"]["y"] == (8,)
    added = tx.tree_map(lambda u, v: u + v, tree, tree)
    np.testing.assert_array_equal(added["a"], [2, 2])
    assert tx.tree_leaves([1, (2, 3)]) == [1, 2, 3]
    with pytest.raises(ValueError, match="expected"):
        tx.tree_map(lambda u, v: u, (1, 2), (1, 2, 3))


def test_pytrees_in_and_out_of_traced_functions():
    def f(params, batch):
        return {"out": params["w"] @ batch[0] + params["b"], "aux": (batch[1] * 2, None)}

    rng = np.random.default_rng(4)
    params = {"w": rand(rng, (3, 4), "float64"), "b": rand(rng, (3,), "float64")}
    batch = (rand(rng, (4,), "float64"), rand(rng, (2,), "float64"))
    assert_same(traced(f, params, batch), f(params, batch), exact=False, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Random numbers


def test_seed_makes_eager_draws_reproducible_and_well_distributed():
    tx.random.seed(7)
    a = tnp.random.normal(size=20000)
    u = tnp.random.uniform(-2.0, 3.0, size=20000)
    tx.random.seed(7)
    b = tnp.random.normal(size=20000)
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean()) < 0.03 and abs(a.std() - 1) < 0.03
    assert u.min() >= -2 and u.max() < 3 and abs(u.mean() - 0.5) < 0.05
    c = tnp.random.normal(size=20000)
    assert not np.array_equal(a, c)
    ints = tnp.random.randint(3, 9, size=5000)
    assert ints.dtype == np.int64 and ints.min() == 3 and ints.max() == 8
    coins = tnp.random.bernoulli(0.25, size=20000)
    assert coins.dtype == np.bool_ and abs(coins.mean() - 0.25) < 0.02


def test_random_draws_inside_a_trace_use_the_graph_key():
    def f(x):
        return x + tnp.random.normal(size=x.shape) + tnp.random.uniform(size=x.shape)

    graph = tx.make_graph(f)(np.zeros(4))
    assert graph.has_rng
    from transfuse.random import next_key
    tx.random.seed(3)
    k1, k2 = next_key(), next_key()
    r1 = interpret(graph, [np.zeros(4), k1])[0]
    r2 = interpret(graph, [np.zeros(4), k2])[0]
    r1_again = interpret(graph, [np.zeros(4), k1])[0]
    np.testing.assert_array_equal(r1, r1_again)
    assert not np.array_equal(r1, r2)
    streams = [n.params["stream"] for n in graph.nodes if n.prim.effect == "random"]
    assert len(set(streams)) == 2  # two call sites, two streams


def test_elementwise_results_keep_numpy_memory_order():
    """(x.T * 2) is F-ordered in NumPy, so its reshape is a copy: writes must not leak."""
    def f(x):
        y = x.T * 2
        r = y.reshape(-1)  # a copy in NumPy
        r[0] = 100.0
        z = y.T.reshape(-1)  # a C-contiguous view in NumPy
        z[1] = -5.0
        c = np.copy(x.T)  # order='K': F-ordered
        c.reshape(-1)[0] = 7.0
        a = x.T.astype(np.float32)  # order='K' too
        a.reshape(-1)[0] = 3.0
        m = x.T.copy()  # the method copies in C order: this reshape is a view
        m.reshape(-1)[0] = 9.0
        return y, r, z, c, a, m

    x = np.arange(12.0).reshape(3, 4)
    assert_same(traced(f, x), f(x))


def test_cached_transforms_see_in_place_changes_of_captured_arrays():
    """An optimiser step or load_state_dict changes closed-over weights in place."""
    w = np.arange(3.0)
    traces = []

    def loss(x):
        traces.append(1)
        return np.sum(np.tanh(x * w))

    x = np.ones(3)
    g1 = tx.grad(loss)(x)
    tx.grad(loss)(x)
    assert len(traces) == 1  # cached: no retrace while w is unchanged
    w -= 0.5  # in place
    g2 = tx.grad(loss)(x)
    assert len(traces) == 2
    np.testing.assert_allclose(g2, (1 - np.tanh(x * w) ** 2) * w)
    assert not np.allclose(g1, g2)
    batched = tx.vmap(lambda v: v * w)
    first = batched(np.ones((2, 3)))
    w *= 3.0
    np.testing.assert_allclose(batched(np.ones((2, 3))), first * 3.0)
    primal, tangent = tx.jvp(loss, (x,), (np.ones(3),))
    np.testing.assert_allclose(primal, loss(x))
