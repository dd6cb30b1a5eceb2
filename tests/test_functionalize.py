"""functionalize: in-place NumPy programs become pure graphs that compute the same thing.

Every program of the catalogue is run four ways that must agree: eager NumPy, its traced
graph on the reference interpreter (which keeps NumPy's aliasing), the functionalized
graph on the interpreter, and `transfuse.functionalize(f)`; arguments the program writes
into must end up as eager NumPy leaves them.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from transfuse.compiler.functionalize import functionalize_graph, prepare, split_mutations
from transfuse.ir import interpret, verify
from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.errors import (
    DTypeError,
    MutationError,
    ShapeError,
    TransfuseError,
    TransfuseValueError,
)
from transfuse.ir.primitives import PRIMITIVES as P

import transfuse as tx
import transfuse.numpy as tnp
from tests.helpers import JIT_MODE

MODES = ("mutations", "mutations_and_views")
FLOATS = ("float32", "float64")
VIEW_PRIMS = {"view_slice", "view_reshape", "view_transpose", "view_broadcast"}


def _rand(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.asarray(rng.standard_normal(shape), dtype=dtype)
    return np.asarray(rng.integers(-5, 6, size=shape), dtype=dtype)


def _copy(args: tuple) -> list:
    return [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]


def _leaves(x: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in tx.tree_leaves(x)]


def _assert_close(actual: Any, expected: Any) -> None:
    a_leaves, e_leaves = _leaves(actual), _leaves(expected)
    assert len(a_leaves) == len(e_leaves)
    for a, e in zip(a_leaves, e_leaves):
        assert a.shape == e.shape and a.dtype == e.dtype, (a.shape, a.dtype, e.shape, e.dtype)
        if a.dtype.kind == "f":
            tol = 1e-5 if a.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(a, e)


def _prim_names(graph: Graph) -> list[str]:
    return [n.prim.name for n in graph.nodes]


def _line_of(fn, needle: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, text in enumerate(lines) if needle in text)


# ---------------------------------------------------------------------------------------
# The catalogue of mutating programs


def fill_loop(x):
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        out[i] = x[i] ** 2 + i
    return out


def running_sum(x):
    acc = tnp.zeros(x.shape[1:], x.dtype)
    sums = np.empty_like(x)
    for i in range(x.shape[0]):
        acc += x[i]
        sums[i] = acc
    return sums, acc


def sgd_step(w, g):
    w -= 0.1 * g
    return (w * w).sum()


def ufunc_out(a, b):
    c = np.empty_like(a)
    np.add(a, b, out=c)
    np.multiply(c, a, out=a)
    return c


def fill_a_view(x):
    x[1:].fill(2.5)
    return x.sum()


def add_at(x):
    buf = tnp.zeros(5, x.dtype)
    np.add.at(buf, np.array([0, 1, 1, 4, 4, 4]), x)
    return buf


def index_array_write(x, v):
    x[np.array([2, 0])] = v
    return x * 2


def traced_mask_write(x):
    x[x < 0] = 0
    return x


def write_through_transpose(x):
    x.T[1] = -1.0
    x.T[0] += x[:, 2]
    return x


def write_through_reshape(x):
    r = x.reshape(-1)
    r[::3] = 7
    return r, x


def write_through_ravel(x):
    x.ravel()[1] = 9
    return x.sum(axis=0)


def chained_views(x):
    x[1:][::2] = 0
    x.T[0][1:] *= 3
    return x


def read_view_after_base_write(x):
    y = x[1:, ::-1]
    x *= 2
    x[0] = 1
    return y.copy(), y.sum()


def read_base_after_view_write(x):
    v = x[:, 0]
    v += 1
    w = v[::-1]
    w[0] = 5
    return x


def overlapping_shift(x):
    x[1:] = x[:-1]
    return x


def zero_d(x):
    x[...] = x * 2
    x += 1
    return x


def size_zero(x):
    x[0:0] = 5
    x += 1
    y = x.T
    y *= 2
    return x, y.sum()


def broadcast_write(x, row):
    x[:, 1:] = row
    x[2] = 1.0
    return x


def dynamic_index_write(x, i):
    x[i] = 0.0
    return x


def negative_steps(x):
    r = x[::-1]
    r[0] = 100
    r[1:3] += 1
    return x


def swapaxes_write(x):
    np.swapaxes(x, 0, 1)[0, 1:] = 4
    return x


def two_overlapping_views(x):
    a = x[1:]
    b = x[:-1]
    a[0] = 5
    return b.copy(), a.sum()


def sort_pass(x):
    for i in range(x.shape[0] - 1):
        lo = np.minimum(x[i], x[i + 1])
        hi = np.maximum(x[i], x[i + 1])
        x[i] = lo
        x[i + 1] = hi
    return x


def reshape_copy_is_not_a_view(x):
    y = x.T.reshape(-1)  # NumPy copies here: writes to y must not reach x
    y[0] = 100
    return x, y


def returns_a_written_view(x):
    v = x[1]
    v[:] = 3
    return v


def rows_of_a_fresh_buffer(x):
    out = tnp.empty((3,) + x.shape, x.dtype)
    out[0] = x
    out[1] = x ** 2
    out[2] = out[0] + out[1]
    return out


def two_inputs_written(a, b):
    a += b
    b *= 2
    return a - b


def int_writes(k):
    k[1] = 2.7  # setitem casts unsafely, as NumPy
    k += 3
    return k * 2


@dataclass
class Case:
    fn: Any
    make_args: Any  # (rng, dtype) -> tuple of arguments
    dtypes: tuple[str, ...] = FLOATS


def _one(shape):
    return lambda rng, dt: (_rand(rng, shape, dt),)


CATALOGUE = [
    Case(fill_loop, _one((4, 3))),
    Case(running_sum, _one((5, 2))),
    Case(sgd_step, lambda rng, dt: (_rand(rng, (3, 2), dt), _rand(rng, (3, 2), dt))),
    Case(ufunc_out, lambda rng, dt: (_rand(rng, (4,), dt), _rand(rng, (4,), dt))),
    Case(fill_a_view, _one((4, 2))),
    Case(add_at, _one((6,))),
    Case(index_array_write, lambda rng, dt: (_rand(rng, (4, 3), dt), _rand(rng, (2, 3), dt))),
    Case(traced_mask_write, _one((3, 4))),
    Case(write_through_transpose, _one((4, 3))),
    Case(write_through_reshape, _one((4, 3))),
    Case(write_through_ravel, _one((2, 3))),
    Case(chained_views, _one((5, 3))),
    Case(read_view_after_base_write, _one((3, 4))),
    Case(read_base_after_view_write, _one((4, 3))),
    Case(overlapping_shift, _one((6,))),
    Case(zero_d, _one(())),
    Case(size_zero, _one((0, 3))),
    Case(broadcast_write, lambda rng, dt: (_rand(rng, (4, 3), dt), _rand(rng, (2,), dt))),
    Case(dynamic_index_write, lambda rng, dt: (_rand(rng, (5,), dt), np.array(3))),
    Case(negative_steps, _one((5,))),
    Case(swapaxes_write, _one((3, 4))),
    Case(two_overlapping_views, _one((4,))),
    Case(sort_pass, _one((6,))),
    Case(reshape_copy_is_not_a_view, _one((2, 3))),
    Case(returns_a_written_view, _one((3, 4))),
    Case(rows_of_a_fresh_buffer, _one((2, 3))),
    Case(two_inputs_written, lambda rng, dt: (_rand(rng, (3,), dt), _rand(rng, (3,), dt))),
    Case(int_writes, _one((4,)), dtypes=("int64", "int32")),
]

PARAMS = [pytest.param(case, dt, id=f"{case.fn.__name__}-{dt}")
          for case in CATALOGUE for dt in case.dtypes]


def _eager(fn, args: tuple) -> tuple[Any, list]:
    state = _copy(args)
    return fn(*state), state


def _check_functionalized_graph(graph: Graph, remove: str, args: tuple, expected: Any,
                                final_args: list) -> None:
    pure = verify(functionalize_graph(graph, remove))
    names = set(_prim_names(pure))
    assert "assign" not in names
    if remove == "mutations_and_views":
        assert not names & VIEW_PRIMS
    state = _copy(args)
    outs, new_values = split_mutations(pure, interpret(pure, state))
    _assert_close(tx.tree_unflatten(graph.out_tree, outs), expected)
    for before, after in zip(_leaves(args), _leaves(state)):  # a pure graph writes nothing
        np.testing.assert_array_equal(before, after)
    dyn = [a for a in final_args if isinstance(a, np.ndarray)]
    for i, new in zip(pure.mutated_inputs, new_values):
        _assert_close(new, dyn[i])
    untouched = set(range(len(dyn))) - set(pure.mutated_inputs)
    dyn_before = [a for a in args if isinstance(a, np.ndarray)]
    for i in untouched:
        np.testing.assert_array_equal(dyn[i], dyn_before[i])


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_catalogue_agrees_four_ways(case: Case, dtype: str):
    args = case.make_args(np.random.default_rng(sum(map(ord, case.fn.__name__))), dtype)
    expected, final_args = _eager(case.fn, args)

    graph = verify(tx.make_graph(case.fn)(*args))
    assert graph.has_effect("mutation")
    state = _copy(args)
    _assert_close(tx.tree_unflatten(graph.out_tree, interpret(graph, state)), expected)
    _assert_close(state, final_args)  # the interpreter keeps NumPy's aliasing

    for remove in MODES:
        _check_functionalized_graph(graph, remove, args, expected, final_args)
        state = _copy(args)
        _assert_close(tx.functionalize(case.fn, remove=remove)(*state), expected)
        _assert_close(state, final_args)  # mutated inputs are visible to the caller


@pytest.mark.parametrize("case,dtype", PARAMS[::2])
@pytest.mark.parametrize("remove", MODES)
def test_make_graph_of_functionalize_is_pure_but_for_the_write_back(case, dtype, remove):
    args = case.make_args(np.random.default_rng(0), dtype)
    graph = verify(tx.make_graph(tx.functionalize(case.fn, remove=remove))(*args))
    assigns = [n for n in graph.nodes if n.prim.name == "assign"]
    mutated = functionalize_graph(tx.make_graph(case.fn)(*args), remove).mutated_inputs
    # Only the final write-back into each mutated argument remains (torch shows copy_).
    assert [graph.inputs.index(n.inputs[0]) for n in assigns] == list(mutated)
    assert graph.nodes[len(graph.nodes) - len(assigns):] == assigns
    if remove == "mutations_and_views":
        assert not set(_prim_names(graph)) & VIEW_PRIMS
    expected, final_args = _eager(case.fn, args)
    pure = prepare(graph)
    state = _copy(args)
    outs, new_values = split_mutations(pure, interpret(pure, state))
    _assert_close(tx.tree_unflatten(graph.out_tree, outs), expected)
    assert len(new_values) == len(mutated)


# ---------------------------------------------------------------------------------------
# The rewrite itself


def test_a_view_only_written_through_costs_no_read():
    def f(x):
        x[1:3] = 0.5
        return x

    pure = functionalize_graph(tx.make_graph(f)(np.ones(4)), "mutations_and_views")
    assert _prim_names(pure) == ["update_slice"]
    assert pure.mutated_inputs == (0,)


def test_augmented_subscript_write_back_is_not_repeated():
    def f(x):
        x[1] += 2.0  # Python reads x[1], adds in place, then stores x[1] = (the same view)
        return x

    graph = tx.make_graph(f)(np.ones((3, 2)))
    assert _prim_names(graph).count("assign") == 2
    pure = functionalize_graph(graph, "mutations_and_views")
    assert _prim_names(pure).count("update_slice") == 1
    np.testing.assert_array_equal(interpret(pure, [np.zeros((3, 2))])[0],
                                  [[0, 0], [2, 2], [0, 0]])


def test_writes_keep_the_users_source_line():
    def f(x):
        y = x * 2
        y[0] = 7.0  # the write
        return y

    pure = functionalize_graph(tx.make_graph(f)(np.ones(3)))
    (update,) = [n for n in pure.nodes if n.prim.name == "update_slice"]
    assert update.source.line == _line_of(f, "the write")
    assert update.source.file.endswith("test_functionalize.py")


def test_fresh_buffer_update_takes_the_written_value_not_a_copy_of_the_input():
    pure = functionalize_graph(tx.make_graph(fill_loop)(np.ones((2, 2))),
                               "mutations_and_views")
    updates = [n for n in pure.nodes if n.prim.name == "update_slice"]
    assert len(updates) == 2
    assert updates[0].inputs[0] in {n.outputs[0] for n in pure.nodes if n.prim.name == "full"}
    assert pure.mutated_inputs == ()


def test_mutations_mode_keeps_views_and_replays_them_on_the_new_value():
    pure = functionalize_graph(tx.make_graph(read_view_after_base_write)(np.ones((3, 4))),
                               "mutations")
    names = _prim_names(pure)
    assert "view_slice" in names and "slice" not in names
    x = _rand(np.random.default_rng(5), (3, 4), "float64")
    _assert_close(tuple(interpret(pure, [x.copy()])[:2]), read_view_after_base_write(x.copy()))


def test_a_pure_graph_is_returned_unchanged():
    graph = tx.make_graph(lambda x: np.sin(x) * 2)(np.ones(3))
    assert prepare(graph) is graph
    assert functionalize_graph(graph, "mutations_and_views") is graph
    views = tx.make_graph(lambda x: x.T[0] * 2)(np.ones((2, 2)))
    assert functionalize_graph(views, "mutations") is views
    assert not prepare(views).has_effect("view")


def test_mutated_inputs_are_part_of_the_structural_key():
    graph = functionalize_graph(tx.make_graph(sgd_step)(np.ones(2), np.ones(2)))
    assert graph.mutated_inputs == (0,)
    other = Graph(graph.inputs, graph.nodes, graph.outputs, graph.consts,
                  graph.num_captures, graph.has_rng, graph.name)
    assert other.structural_key() != graph.structural_key()


def test_call_nodes_that_mutate_are_inlined():
    inner = tx.make_graph(sgd_step)(np.ones(3), np.ones(3))
    x, g = Var(Aval((3,), np.float64)), Var(Aval((3,), np.float64))
    out = Var(Aval((), np.float64))
    outer = verify(Graph([x, g], [Node(P["call"], [x, g], {"graph": inner}, [out])], [out]))
    rng = np.random.default_rng(3)
    w0, g0 = _rand(rng, (3,), "float64"), _rand(rng, (3,), "float64")
    w_eager = w0.copy()
    expected = sgd_step(w_eager, g0)
    w_interp = w0.copy()
    assert np.isclose(interpret(outer, [w_interp, g0])[0], expected)
    np.testing.assert_allclose(w_interp, w_eager)
    pure = verify(prepare(outer))
    assert "call" not in _prim_names(pure) and pure.mutated_inputs == (0,)
    value, new_w = interpret(pure, [w0, g0])
    assert np.isclose(value, expected)
    np.testing.assert_allclose(new_w, w_eager)


def test_writes_into_a_graph_constant_are_copy_on_write():
    # Hand-built: transfuse.numpy never writes into constants (plain arrays cannot hold
    # traced values), but a graph that does must leave its constant alone.
    table = np.arange(4.0)
    x, c, v, s = (Var(Aval((4,), np.float64)), Var(Aval((4,), np.float64)),
                  Var(Aval((2,), np.float64)), Var(Aval((4,), np.float64)))
    nodes = [Node(P["view_slice"], [c], {"starts": (1,), "steps": (2,), "sizes": (2,)}, [v]),
             Node(P["assign"], [v, Var(Aval((), np.float64))], {}, []),
             Node(P["add"], [c, x], {}, [s])]
    zero = nodes[1].inputs[1]
    graph = verify(Graph([x], nodes, [s], {c: table, zero: np.asarray(-1.0)}))
    ones = np.ones(4)
    np.testing.assert_array_equal(interpret(graph, [ones])[0], [1, 0, 3, 0])
    pure = verify(functionalize_graph(graph, "mutations_and_views"))
    for _ in range(2):  # the constant is unchanged, so a second run agrees
        np.testing.assert_array_equal(interpret(pure, [ones])[0], [1, 0, 3, 0])
    np.testing.assert_array_equal(table, np.arange(4.0))
    assert pure.mutated_inputs == ()


# ---------------------------------------------------------------------------------------
# The public function


def test_repeat_calls_reuse_the_graph_and_write_back_each_time():
    def local_step(w, g):
        return sgd_step(w, g)

    step = tx.functionalize(local_step)
    rng = np.random.default_rng(7)
    for _ in range(3):
        w, g = _rand(rng, (4,), "float32"), _rand(rng, (4,), "float32")
        w_eager = w.copy()
        expected = sgd_step(w_eager, g)
        value = step(w, g)
        assert value.dtype == np.float32 and np.isclose(value, expected, rtol=1e-6)
        np.testing.assert_array_equal(w, w_eager)
    if JIT_MODE:  # under `pytest --jit` step is jit(functionalize(f)): jit's cache holds it
        assert step.cache_info().traces == 1
        return
    from transfuse._functionalize import _CACHE
    assert _CACHE.size(local_step) == 1


def test_outputs_and_pytrees_come_back_in_the_callers_structure():
    def f(params, lr=0.5):
        params["w"] -= lr * params["g"]
        return {"norm": (params["w"] ** 2).sum(), "pair": (params["w"], None)}

    rng = np.random.default_rng(8)
    p = {"w": _rand(rng, (3,), "float64"), "g": _rand(rng, (3,), "float64")}
    p_eager = {k: v.copy() for k, v in p.items()}
    expected = f(p_eager, lr=0.25)
    out = tx.functionalize(f)(p, lr=0.25)
    assert set(out) == {"norm", "pair"} and out["pair"][1] is None
    _assert_close(out["norm"], expected["norm"])
    np.testing.assert_allclose(p["w"], p_eager["w"])


def test_non_contiguous_arguments_are_written_back_in_place():
    base = _rand(np.random.default_rng(9), (4, 3), "float64")
    x = base.T  # F-ordered view of base
    expected_base = base.copy()
    write_through_transpose(expected_base.T)
    tx.functionalize(write_through_transpose)(x)
    np.testing.assert_array_equal(base, expected_base)


def test_numpy_scalars_are_immutable_as_in_numpy():
    def bump(x):
        x += 1  # NumPy rebinds a scalar; an array would be written in place
        return x * 2

    x = np.float64(1.5)
    assert bump(x) == tx.functionalize(bump)(x) == 5.0
    assert x == 1.5
    y = np.asarray(1.5)
    assert tx.functionalize(bump)(y) == 5.0 and y == 2.5


def test_functionalize_composes_and_closes_over_outer_values():
    def outer(x, fz):
        def inner(y):
            x[0] = y.sum()  # writes into a value captured from the outer function
            return y * 2

        r = fz(inner)(x[1:] * 1.0)
        return r, x

    x = _rand(np.random.default_rng(10), (4,), "float64")
    x_eager = x.copy()
    expected = outer(x_eager, lambda f: f)
    for remove in MODES:
        state = x.copy()
        _assert_close(tx.functionalize(lambda a: outer(a, tx.functionalize), remove=remove)(
            state), expected)
        np.testing.assert_allclose(state, x_eager)
    graph = tx.make_graph(lambda a: outer(a, tx.functionalize))(x)
    assert _prim_names(graph).count("assign") == 1  # the write-back into the capture
    _assert_close(interpret(prepare(graph), [x.copy()])[:2], expected)


def test_bad_remove_is_an_error():
    with pytest.raises(TransfuseValueError, match="mutations_and_views"):
        tx.functionalize(sgd_step, remove="views")


# ---------------------------------------------------------------------------------------
# Errors


def test_writing_into_a_plain_numpy_buffer_names_the_line_and_the_fix():
    def element(x):
        buf = np.zeros(3)
        buf[0] = x[0]  # element write
        return buf

    def augmented(x):
        buf = np.zeros(3)
        buf += x  # augmented write
        return buf

    def ufunc_out_param(x):
        buf = np.zeros(3)
        np.add(x, 1.0, out=buf)  # out write
        return buf

    for fn, needle in ((element, "element write"), (augmented, "augmented write"),
                       (ufunc_out_param, "out write")):
        with pytest.raises(TransfuseError, match=r"tnp\.zeros") as info:
            tx.functionalize(fn)(np.ones(3))
        assert f"test_functionalize.py:{_line_of(fn, needle)}" in str(info.value)


def test_writing_into_a_closed_over_array_is_an_error():
    table = np.arange(3.0)

    def f(x):
        table[1:] = x[1:]  # closure write
        return x

    with pytest.raises(TransfuseError, match="np.zeros_like") as info:
        tx.functionalize(f)(np.ones(3))
    assert f"test_functionalize.py:{_line_of(f, 'closure write')}" in str(info.value)
    np.testing.assert_array_equal(table, np.arange(3.0))


def test_inplace_op_that_changes_the_dtype_is_an_error():
    def f(k):
        k += 1.5  # float into int
        return k

    k = np.arange(3)
    with pytest.raises(DTypeError, match="same_kind") as info:
        tx.functionalize(f)(k)
    assert isinstance(info.value, TypeError)
    assert f"test_functionalize.py:{_line_of(f, 'float into int')}" in str(info.value)
    np.testing.assert_array_equal(k, [0, 1, 2])


def test_ufunc_out_that_changes_the_dtype_is_an_error_unless_unsafe():
    def f(k):
        np.add(k, 1.5, out=k)  # same_kind out
        return k

    def g(k):
        np.add(k, 1.5, out=k, casting="unsafe")
        return k

    k = np.arange(3)
    with pytest.raises(DTypeError, match="same_kind") as info:
        tx.functionalize(f)(k)
    assert f"test_functionalize.py:{_line_of(f, 'same_kind out')}" in str(info.value)
    expected = g(np.arange(3))
    np.testing.assert_array_equal(tx.functionalize(g)(k), expected)
    np.testing.assert_array_equal(k, expected)


def test_inplace_op_that_changes_the_shape_is_an_error():
    def f(x, y):
        x += y  # would grow x
        return x

    with pytest.raises(ShapeError, match=r"\(2, 3\) into shape \(3,\)") as info:
        tx.functionalize(f)(np.ones(3), np.ones((2, 3)))
    assert f"test_functionalize.py:{_line_of(f, 'would grow x')}" in str(info.value)


def test_arguments_aliasing_a_mutated_argument_are_refused():
    a = np.arange(5.0)
    with pytest.raises(MutationError, match="shares memory") as info:
        tx.functionalize(two_inputs_written)(a, a)
    assert "test_functionalize.py" in str(info.value)
    with pytest.raises(MutationError, match="shares memory"):
        tx.functionalize(two_inputs_written)(a[1:], a[:-1])
    np.testing.assert_array_equal(a, np.arange(5.0))  # refused before anything ran
    # Disjoint parts of one array, or aliasing without writes, are fine.
    tx.functionalize(two_inputs_written)(a[:2], a[3:])
    assert tx.functionalize(lambda u, v: u + v)(a, a).shape == (5,)


def test_traced_arguments_aliasing_a_mutated_argument_are_refused():
    def outer(x):
        return tx.functionalize(two_inputs_written)(x[1:], x[:-1])

    with pytest.raises(MutationError, match="shares memory"):
        tx.make_graph(outer)(np.ones(4))


def test_read_only_arguments_cannot_be_written():
    w = np.ones(3)
    w.flags.writeable = False
    with pytest.raises(MutationError, match="read-only"):
        tx.functionalize(sgd_step)(w, np.ones(3))
    np.testing.assert_array_equal(w, np.ones(3))


# ---------------------------------------------------------------------------------------
# Transforms of mutating programs agree with their pure rewrites


def scan_mutating(x):
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        out[i] = np.sin(x[i]) * (i + 1)
    out[1:] += out[:-1]
    out.T[0] *= 2
    return (out ** 2).sum()


def scan_pure(x):
    rows = np.stack([np.sin(x[i]) * (i + 1) for i in range(x.shape[0])])
    rows = np.concatenate([rows[:1], rows[1:] + rows[:-1]])
    rows = np.concatenate([rows[:, :1] * 2, rows[:, 1:]], axis=1)
    return (rows ** 2).sum()


def step_mutating(w, g):
    w -= 0.1 * g
    return (w * w).sum()


def step_pure(w, g):
    return ((w - 0.1 * g) ** 2).sum()


@pytest.mark.parametrize("dtype", FLOATS)
def test_grad_of_a_mutating_program_matches_its_pure_rewrite(dtype):
    x = _rand(np.random.default_rng(11), (4, 3), dtype)
    x_before = x.copy()
    _assert_close(tx.grad(scan_mutating)(x), tx.grad(scan_pure)(x))
    np.testing.assert_array_equal(x, x_before)  # a fresh buffer was written, not x


@pytest.mark.parametrize("dtype", FLOATS)
def test_grad_through_a_write_into_an_argument_is_taken_at_entry(dtype):
    rng = np.random.default_rng(12)
    w, g = _rand(rng, (3,), dtype), _rand(rng, (3,), dtype)
    expected = tx.grad(step_pure, argnums=(0, 1))(w, g)
    _assert_close(tx.grad(step_mutating, argnums=(0, 1))(w.copy(), g), expected)
    _assert_close(expected[0], 2 * (w - np.asarray(0.1, dtype) * g))


def fill_fresh(x):
    out = tnp.zeros(x.shape[0] + 1, x.dtype)  # unbatched buffer, batched writes
    out[1:] = np.cumsum(x)
    out[0] = x.sum()
    return out


def fill_fresh_pure(x):
    return np.concatenate([x.sum()[None], np.cumsum(x)])


def fill_like(x):
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        out[i] = x[i] * i
    out.T[::2] += 1.0
    return out


def fill_like_pure(x):
    scaled = x * np.arange(x.shape[0]).astype(x.dtype)
    return scaled + (np.arange(x.shape[0]) % 2 == 0).astype(x.dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mutating,pure", [(fill_fresh, fill_fresh_pure),
                                           (fill_like, fill_like_pure)])
def test_vmap_batches_a_fresh_buffer_that_receives_batched_writes(mutating, pure, dtype):
    xs = _rand(np.random.default_rng(13), (5, 4), dtype)
    out = tx.vmap(mutating)(xs)
    _assert_close(out, tx.vmap(pure)(xs))
    _assert_close(out, np.stack([mutating(row.copy()) for row in xs]))


def test_vmap_writes_back_into_a_batched_argument_and_refuses_an_unbatched_one():
    def accumulate(acc, v):
        acc += v
        return acc.sum()

    rng = np.random.default_rng(14)
    accs, vs = _rand(rng, (3, 4), "float64"), _rand(rng, (3, 4), "float64")
    expected_accs = accs + vs
    sums = tx.vmap(accumulate)(accs, vs)
    _assert_close(sums, expected_accs.sum(axis=1))
    _assert_close(accs, expected_accs)
    shared = np.zeros(4)
    with pytest.raises(tx.BatchingError, match="not batched"):
        tx.vmap(accumulate, in_dims=(None, 0))(shared, vs)
    np.testing.assert_array_equal(shared, np.zeros(4))


@pytest.mark.parametrize("dtype", FLOATS)
def test_jvp_of_a_mutating_program_matches_its_pure_rewrite(dtype):
    rng = np.random.default_rng(15)
    x, t = _rand(rng, (4, 3), dtype), _rand(rng, (4, 3), dtype)
    _assert_close(tx.jvp(scan_mutating, (x,), (t,)), tx.jvp(scan_pure, (x,), (t,)))
    w, g = _rand(rng, (3,), dtype), _rand(rng, (3,), dtype)
    tw, tg = _rand(rng, (3,), dtype), _rand(rng, (3,), dtype)
    w_after = w - np.asarray(0.1, dtype) * g
    expected = tx.jvp(step_pure, (w, g), (tw, tg))
    _assert_close(tx.jvp(step_mutating, (w, g), (tw, tg)), expected)
    _assert_close(w, w_after)  # the primal write reached the caller


# ---------------------------------------------------------------------------------------
# Random programs: chains of views (slices with any step, transposes, integer indices,
# ravel, reshape) read and written in random order, against eager NumPy


def _random_view(v, r):
    if v.ndim == 0:
        return v
    kind = r.choice(["slice", "slice", "T", "int", "ravel", "reshape"])
    if kind == "T":
        return v.T
    if kind == "ravel":
        return v.ravel()
    if kind == "reshape":
        return v.reshape(-1)
    axis = r.randrange(v.ndim)
    n = v.shape[axis]
    index = [slice(None)] * v.ndim
    if kind == "int":
        if n == 0 or v.ndim == 1:  # keep views: a 0-d integer index gives a NumPy scalar
            return v
        index[axis] = r.randrange(-n, n)
    else:
        start = r.choice([None, r.randrange(-n - 1, n + 1)])
        stop = r.choice([None, r.randrange(-n - 1, n + 1)])
        index[axis] = slice(start, stop, r.choice([-2, -1, 1, 1, 2, 3]))
    return v[tuple(index)]


def _random_chain(x, r):
    v = x
    for _ in range(r.randint(0, 3)):
        v = _random_view(v, r)
    return v


def random_program(x, seed):
    r = random.Random(seed)
    outs = []
    for _ in range(7):
        v = _random_chain(x, r)
        action = r.choice(["set", "set_from_alias", "iadd", "imul", "flip", "read", "read"])
        if action == "set":
            v[...] = r.uniform(-2, 2)
        elif action == "set_from_alias":
            v[...] = _random_chain(x, r).sum()
        elif action == "iadd":
            v += v * 0.5 + 1.0
        elif action == "imul":
            np.multiply(v, -1.5, out=v)
        elif action == "flip" and v.ndim:
            v[...] = v[::-1]
        else:
            outs.append(v.sum())
            outs.append(v * 1.0)
    return outs, x


@pytest.mark.parametrize("seed", range(60))
def test_random_view_and_write_programs_match_numpy(seed):
    x = _rand(np.random.default_rng(seed), (4, 5), "float64")
    expected, final_x = _eager(random_program, (x, seed))
    graph = tx.make_graph(random_program, static_argnums=1)(x, seed)
    state = x.copy()
    _assert_close(tx.tree_unflatten(graph.out_tree, interpret(graph, [state])), expected)
    _assert_close(state, final_x[0])
    for remove in MODES:
        state = x.copy()
        _assert_close(tx.functionalize(random_program, remove=remove)(state, seed), expected)
        _assert_close(state, final_x[0])


def test_ravel_copies_unless_contiguous_as_numpy():
    def f(x):
        x[:, ::2].ravel()[0] = 100.0  # a copy: x unchanged
        x[:, 1:2].ravel()[0] = -1.0  # a column: reshape could view it, ravel copies
        x[::2].reshape(-1)[1] = -100.0  # a view: reaches x
        x.ravel()[2] = 7.0  # a view
        x.ravel()[::3].ravel()[0] = 5.0  # non-contiguous 1-d: a copy
        x[::3].ravel()[1] = 6.0  # one row: contiguous, a view
        return x

    x = np.arange(12.0).reshape(3, 4)
    expected = f(x.copy())
    state = x.copy()
    _assert_close(tx.functionalize(f)(state), expected)
    _assert_close(state, expected)


@pytest.mark.parametrize("remove", MODES)
def test_views_replay_on_values_computed_from_transposed_data(remove):
    def f(x, y):
        x[...] = y.T  # x's new value comes from a transposed (F-ordered) array
        r = x.reshape(-1)  # a view of x, recorded on x's C layout
        r[0] = 100.0
        return r * 1.0, (y.T * 2).reshape(-1)

    rng = np.random.default_rng(16)
    x, y = _rand(rng, (3, 2), "float64"), _rand(rng, (2, 3), "float64")
    expected, (x_after, _) = _eager(f, (x, y))
    _assert_close(tx.functionalize(f, remove=remove)(x, y), expected)
    _assert_close(x, x_after)


def test_functionalize_composes_with_vmap_and_grad_both_ways():
    rng = np.random.default_rng(17)
    ws, gs = _rand(rng, (2, 3), "float64"), _rand(rng, (2, 3), "float64")
    expected_ws = ws - 0.1 * gs
    expected = (expected_ws ** 2).sum(axis=1)
    for transform in (lambda f: tx.vmap(tx.functionalize(f)),
                      lambda f: tx.functionalize(tx.vmap(f))):
        state = ws.copy()
        _assert_close(transform(step_mutating)(state, gs), expected)
        _assert_close(state, expected_ws)
    _assert_close(tx.grad(tx.functionalize(step_mutating))(ws[0].copy(), gs[0]),
                  2 * expected_ws[0])
