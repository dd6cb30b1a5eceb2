"""Regressions found while writing the tutorials (docs/tutorials), each with its minimal
reproducer.

1. Reductions ignored `where=` on traced values (np.sum(x, where=x > 0) summed every
   element), and np.var/np.std ignored `mean=`: wrong numbers, silently.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from transfuse.ir.errors import UnsupportedError

import transfuse as tx
from tests.helpers import assert_same, rand, traced

# ---------------------------------------------------------------------------------------
# 1. where= and mean= of reductions


def test_where_reproducer():
    x = np.array([1.0, -2.0, 3.0])
    assert traced(lambda v: np.sum(v, where=v > 0), x) == 4.0  # was 2.0
    assert traced(lambda v: np.mean(v, where=v > 0), x) == 2.0  # was 0.667


REDUCTIONS = {
    "sum": np.sum, "prod": np.prod, "mean": np.mean, "var": np.var, "std": np.std,
    "var_ddof": lambda v, **k: np.var(v, ddof=1, **k),
    "any": lambda v, **k: np.any(v > 0.3, **k), "all": lambda v, **k: np.all(v > -1, **k),
}


def _eager(f, x, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty slices give nan, as here
        return f(x, **kwargs)


@pytest.mark.parametrize("name", list(REDUCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False)])
def test_reductions_honour_a_traced_where_mask(name, dtype, axis, keepdims):
    f = REDUCTIONS[name]
    x = rand(np.random.default_rng(0), (3, 4, 5), dtype)

    def masked(v):
        return f(v, axis=axis, keepdims=keepdims, where=v > -0.5)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = masked(x)
        assert_same(traced(masked, x), expected, exact=False, rtol=2e-6)
        assert_same(tx.vmap(masked)(np.stack([x, x[::-1]]))[1], masked(x[::-1]), exact=False,
                    rtol=2e-6)


@pytest.mark.parametrize("name", ["sum", "prod", "mean", "var", "any", "all"])
def test_reductions_with_a_broadcast_concrete_where(name):
    f = REDUCTIONS[name]
    x = rand(np.random.default_rng(1), (4, 3), np.float64)
    column_mask = np.array([True, False, True])  # broadcasts over the rows
    for where in (column_mask, True, False, np.True_):
        expected = _eager(f, x, axis=0, where=where)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = traced(lambda v, where=where: f(v, axis=0, where=where), x)
        assert_same(got, expected, exact=False, rtol=1e-12)


def test_where_on_0d_and_size_0():
    x0 = np.float64(2.5)
    assert_same(traced(lambda v: np.sum(v, where=v > 3), x0), np.sum(x0, where=x0 > 3))
    assert_same(traced(lambda v: np.prod(v, where=v > 0), x0), np.prod(x0, where=x0 > 0))
    empty = np.zeros((0, 3))
    assert_same(traced(lambda v: np.sum(v, axis=0, where=v > 0), empty),
                np.sum(empty, axis=0, where=empty > 0))


def test_concrete_input_with_traced_mask():
    x = rand(np.random.default_rng(2), (5,), np.float32)

    def f(threshold):
        return np.sum(x, where=x > threshold)

    for t in (-0.5, 0.0, 0.7):
        assert_same(traced(f, np.float32(t)), f(np.float32(t)), exact=False, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_var_and_std_use_the_given_mean(dtype):
    x = rand(np.random.default_rng(3), (3, 6), dtype)
    m = (x.mean(axis=1, keepdims=True) + 0.25).astype(dtype)
    for f in (np.var, np.std):
        def given(v, f=f):
            return f(v, axis=1, mean=m)
        assert_same(traced(given, x), given(x), exact=False, rtol=2e-6)
        # traced mean too
        assert_same(traced(lambda v, f=f: f(v, axis=1, mean=np.mean(v, axis=1, keepdims=True)
                                            - 1), x),
                    f(x, axis=1, mean=x.mean(axis=1, keepdims=True) - 1), exact=False,
                    rtol=2e-6)


def test_gradients_of_masked_reductions():
    x = rand(np.random.default_rng(4), (6,), np.float64)
    mask = x > 0
    g = tx.grad(lambda v: np.mean(v, where=mask))(x)
    np.testing.assert_allclose(g, mask / mask.sum())
    g = tx.grad(lambda v: np.sum(v ** 2, where=mask))(x)
    np.testing.assert_allclose(g, 2 * x * mask)
    # var with a mask: d/dx_i = 2 (x_i - mean) / n on the mask, 0 elsewhere
    g = tx.grad(lambda v: np.var(v, where=mask))(x)
    mu = x[mask].mean()
    np.testing.assert_allclose(g, np.where(mask, 2 * (x - mu) / mask.sum(), 0), atol=1e-15)


@pytest.mark.parametrize("f", [np.max, np.min])
def test_max_min_with_where_are_refused_not_ignored(f):
    x = rand(np.random.default_rng(5), (4,), np.float64)
    with pytest.raises(UnsupportedError, match="where"):
        traced(lambda v: f(v, where=v > 0), x)
    # where=True keeps everything: no mask, no error
    assert_same(traced(lambda v: f(v, where=True), x), f(x))


# ---------------------------------------------------------------------------------------
# 2. ravel/flatten ignored order='F' on traced values (returned C order, silently)


def test_ravel_order_reproducer():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(traced(lambda v: np.ravel(v, order="F"), x),
                                  [0.0, 3.0, 1.0, 4.0, 2.0, 5.0])  # was [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("shape", [(), (0, 3), (5,), (2, 3), (2, 3, 4), (1, 4, 1)])
@pytest.mark.parametrize("order", ["C", "F", "A", "K"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ravel_and_flatten_orders_match_numpy(shape, order, dtype):
    x = rand(np.random.default_rng(6), shape, dtype)
    cases = [lambda v: np.ravel(v, order=order), lambda v: v.ravel(order),
             lambda v: v.flatten(order), lambda v: v.flatten(order=order),
             # F-contiguous input: 'A' and 'K' read it in Fortran order
             lambda v: np.ravel(v.T * 1, order=order), lambda v: v.T.flatten(order)]
    for f in cases:
        assert_same(traced(f, x), f(x))
        assert_same(tx.vmap(f)(np.stack([x, -x]))[1], f(-x))


def test_ravel_k_of_a_non_contiguous_value_is_refused():
    x = rand(np.random.default_rng(7), (4, 6), np.float64)
    with pytest.raises(UnsupportedError, match="order='K'"):
        traced(lambda v: np.ravel(v[::2, 1:4], order="K"), x)
    with pytest.raises(ValueError, match="order must be"):
        traced(lambda v: np.ravel(v, order="Z"), x)


def test_ravel_f_is_a_view_exactly_when_numpy_s_is():
    def write_through(v):
        buf = v * 1                      # fresh, C-contiguous
        r = buf.T.ravel(order="F")       # buf.T is F-contiguous: a view of buf
        r[1] = 100.0
        s = buf.ravel(order="F")         # buf is not F-contiguous: a copy
        s[0] = -100.0
        return buf, r, s

    x = rand(np.random.default_rng(8), (2, 3), np.float64)
    assert_same(traced(write_through, x), write_through(x))


# ---------------------------------------------------------------------------------------
# 3. np.linspace with array endpoints multiplied the samples elementwise by the step
#    (wrong numbers when num == len(start), a shape error otherwise), ignored axis=, gave
#    nan for num=1, and promoted float32 endpoints to float64


def test_linspace_reproducer():
    start = np.array([0.0, 10.0, 20.0])
    got = traced(lambda v: np.linspace(v, 1.0, 3, endpoint=False), start)
    np.testing.assert_allclose(got, np.linspace(start, 1.0, 3, endpoint=False))  # was 1-d


B = np.array([[1.0], [2.0]])
LINSPACE_CASES = [
    lambda v: np.linspace(v, 1.0, 3, endpoint=False),
    lambda v: np.linspace(v, 1.0, 4, axis=1),
    lambda v: np.linspace(v, B, 5, axis=-1),
    lambda v: np.linspace(v, B, 5, axis=1, retstep=True),
    lambda v: np.linspace(v[0], 7.0, 6),
    lambda v: np.linspace(v[0] - 3, 7.0, 6, dtype=np.int64),
    lambda v: np.linspace(-v, v[::-1], 5, dtype=np.int32, axis=1),
    lambda v: np.linspace(v, 1.0, 1),
    lambda v: np.linspace(v[1], 1.0, 1, endpoint=False),
    lambda v: np.linspace(v, 1.0, 0),
    lambda v: np.linspace([0, 1, 2], v, 3, retstep=True),
    lambda v: np.linspace(v.astype(np.int64), 100, 4),
    lambda v: v + np.linspace(-1, 0, 3, dtype=np.int64),
]


@pytest.mark.parametrize("case", range(len(LINSPACE_CASES)))
def test_linspace_matches_numpy(case):
    f = LINSPACE_CASES[case]
    x = np.array([0.5, 10.0, -20.0])
    assert_same(traced(f, x), f(x), exact=False, rtol=1e-12)
    batched = tx.vmap(f)(np.stack([x, 2 * x]))
    assert_same(tx.tree_map(lambda b: b[1], batched), f(2 * x), exact=False, rtol=1e-12)


def test_linspace_keeps_float32():
    x = rand(np.random.default_rng(9), (3,), np.float32)
    for f in (lambda v: np.linspace(v, 2, 3), lambda v: np.linspace(v, 2.5, 4, retstep=True),
              lambda v: np.linspace(v[0], v[1], 5)):
        assert_same(traced(f, x), f(x), exact=False, rtol=1e-6)


def test_linspace_gradient_with_array_endpoints():
    # d/d start of sum(linspace(start, stop, n)) = sum over samples of (1 - k / (n - 1))
    start = rand(np.random.default_rng(10), (2,), np.float64)
    g = tx.grad(lambda s: np.sum(np.linspace(s, 3.0, 5, axis=1) ** 2))(start)
    t = np.linspace(0.0, 1.0, 5)
    expected = [np.sum(2 * (s + (3.0 - s) * t) * (1 - t)) for s in start]
    np.testing.assert_allclose(g, expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# 4. np.take ignored mode='clip'/'wrap' (an IndexError for concrete indices; traced
#    out-of-range indices were silently trusted)


@pytest.mark.parametrize("mode", ["clip", "wrap"])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_take_modes_match_numpy(mode, axis):
    import transfuse.numpy as tnp

    a = rand(np.random.default_rng(11), (3, 4), np.float64)
    idx = np.array([[0, 5, -7], [3, -1, 11]])
    expected = np.take(a, idx, axis=axis, mode=mode)
    assert_same(traced(lambda v: np.take(v, idx, axis=axis, mode=mode), a), expected)
    # traced indices (np.take dispatches on `a` only, so tnp.take)
    assert_same(traced(lambda i: tnp.take(a, i, axis=axis, mode=mode), idx), expected)
    assert_same(tx.vmap(lambda i: tnp.take(a, i, axis=axis, mode=mode))(idx[None])[0],
                expected)


def test_take_bad_mode_and_raise_mode():
    a = np.arange(4.0)
    with pytest.raises(ValueError, match="clipmode"):
        traced(lambda v: np.take(v, np.array([0]), mode="bogus"), a)
    with pytest.raises(IndexError):
        traced(lambda v: np.take(v, np.array([9]), mode="raise"), a)


# ---------------------------------------------------------------------------------------
# 5. np.meshgrid ignored sparse=True (dense outputs, other shapes); np.trace and np.outer
#    ignored out= (the caller's buffer was never written)


@pytest.mark.parametrize("indexing", ["xy", "ij"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_meshgrid_sparse_and_dense(indexing, sparse, count):
    rng = np.random.default_rng(12)
    xs = [rand(rng, (n,), np.float64) for n in (3, 4, 2)[:count]]

    def f(*v):
        return list(np.meshgrid(*v, sparse=sparse, indexing=indexing))

    assert_same(traced(f, *xs), f(*xs))


@pytest.mark.parametrize("f", [lambda v: np.outer(v, v, out=np.zeros((3, 3))),
                               lambda v: np.trace(np.outer(v, v), out=np.zeros(()))])
def test_out_is_refused_not_ignored(f):
    with pytest.raises(UnsupportedError, match="out="):
        traced(f, np.arange(3.0))


def test_inlining_a_sub_graph_called_twice_gives_fresh_values():
    """Chunked vmap calls one sub-graph per chunk; jit inlines them (was: SSA reuse, wrong)."""
    from transfuse.compiler.functionalize import prepare
    from transfuse.compiler.simplify import inline_calls
    from transfuse.ir import interpret, verify

    rng = np.random.default_rng(0)
    w = rng.standard_normal((7, 4))
    x = rng.standard_normal(4)

    def f(x):
        return tx.vmap(lambda v: v * np.cos(w @ x), chunk_size=2)(np.eye(7))

    expected = np.eye(7) * np.cos(w @ x)
    flat = inline_calls(prepare(tx.make_graph(f)(x)))
    verify(flat)
    assert not any(n.prim.name == "call" for n in flat.nodes)
    np.testing.assert_allclose(interpret(flat, [x])[0], expected, rtol=1e-12)
    np.testing.assert_allclose(tx.jit(f)(x), expected, rtol=1e-12)


def test_jit_of_vmap_of_dynamic_slice_with_some_starts_batched():
    """The batching rule gave the unbatched-start dynamic_slice of an unbatched operand a
    list of sizes, which jit's CSE could not hash (a TypeError under `pytest --jit`)."""
    from transfuse.ir import lax

    rng = np.random.default_rng(239)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    rows = np.array([0, 2, 4], dtype=np.int64)  # batched start; 4 is clamped to 2
    col = np.int64(3)  # shared start

    def window(x, i, j):
        return lax.dynamic_slice(x, (i, j), (3, 2))

    got = tx.jit(tx.vmap(window, in_dims=(None, 0, None)))(x, rows, col)
    want = np.stack([x[min(r, 2):min(r, 2) + 3, 3:5] for r in rows])
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------
# A fast-math kernel compiled first gave every later kernel its fast-math helpers.
# Numba compiles a cached helper that sets no `fastmath` with its first caller's flags and
# caches that code under a key without them: after one `jit(f, fastmath=True)` using
# np.maximum, `fmax` dropped NaN in every kernel of every later process
# (runtime/helper_options.py).

_FIRST = """
import numpy as np, transfuse as tx
x = np.array([np.nan, 1.0, -2.0], np.float32)
tx.jit(lambda a: np.maximum(a, 0.0) + np.minimum(a, 0.0), fastmath=True, cache=False)(x)
"""
_SECOND = """
import numpy as np, transfuse as tx
x = np.array([np.nan, 1.0, -2.0], np.float32)
y = tx.jit(lambda a: np.maximum(a, 0.0) + np.minimum(a, 0.0), cache=False)(x)
print(repr(y.tolist()))
"""


def test_a_fast_math_kernel_does_not_leave_fast_math_helpers_in_the_cache(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               TRANSFUSE_CACHE_DIR=str(tmp_path / "transfuse"))
    for script in (_FIRST, _SECOND):
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=600, check=True)
    values = eval(done.stdout.strip().splitlines()[-1], {"nan": float("nan")})
    assert np.isnan(values[0]) and values[1:] == [1.0, -2.0]


# A nested transform of a closure's array inside an outer transform folds to constants of
# the outer graph (its results, not the array): the outer cache did not see the array
# change in place and kept returning the old gradient (found by the helper adding
# data-dependent shapes; transfuse/_staging.py guards the arrays a nested transform runs on).


@pytest.mark.parametrize("inner", ["grad", "jacrev", "vmap"])
def test_a_nested_transform_of_a_closure_array_sees_it_change_in_place(inner):
    rng = np.random.default_rng(31)
    c = rng.standard_normal(3)
    inner_fn = {"grad": lambda: tx.grad(lambda v: np.sum(v ** 3)),
                "jacrev": lambda: tx.jacrev(lambda v: np.sin(v) * v),
                "vmap": lambda: tx.vmap(lambda v: v * np.tanh(v))}[inner]

    def f(x):
        out = inner_fn()(c)
        return np.sum(x * (out if out.ndim == 1 else out @ np.ones(3)))

    outer = tx.grad(f)
    x = rng.standard_normal(3)
    for _ in range(2):
        want = tx.grad(lambda x, c: np.sum(x * (inner_fn()(c) if inner != "jacrev"
                                                 else inner_fn()(c) @ np.ones(3))))(x, c)
        np.testing.assert_allclose(outer(x), want, rtol=1e-13)
        c[1] += 1.5  # in place: the cached outer gradient must not survive it
