"""Sorting and selection beyond the catalogue (tests/opinfo.py): NaN placement, stability,
every quantile method against NumPy in float64 (and float32, ints), nan-variants with
all-NaN slices, the sort primitive against np.lexsort, partition and argpartition as valid
partitions, searchsorted's sorter, derivatives against JAX, one jitted program against
NumPy, and NumPy's errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from transfuse.ir import lax
from transfuse.ir.errors import CompileError, UnsupportedError

import transfuse as tx
from tests.helpers import assert_same, traced

RNG = np.random.default_rng(0)
METHODS = ("inverted_cdf", "averaged_inverted_cdf", "closest_observation",
           "interpolated_inverted_cdf", "hazen", "weibull", "linear", "median_unbiased",
           "normal_unbiased", "lower", "higher", "midpoint", "nearest")
# q at 0, 1, the H&F breakpoints of small n (k/n, (k - 1/2)/n, ...) and between them
Q = np.array([0.0, 0.1, 0.125, 0.2, 0.25, 1 / 3, 0.375, 0.5, 0.6, 0.75, 0.875, 0.95, 1.0])


def with_nans(shape, dtype=np.float64) -> np.ndarray:
    x = RNG.standard_normal(shape)
    flat = x.reshape(-1)
    flat[::5] = np.nan
    flat[1::7] = np.inf
    flat[2::9] = -np.inf
    return x.astype(dtype)


def test_nan_sorts_last_and_ties_keep_their_order():
    x = with_nans((4, 9))
    ties = RNG.integers(0, 3, (4, 9))
    outs = traced(lambda a, t: (np.sort(a), np.argsort(a), np.sort(a, axis=0),
                                np.argsort(t, kind="stable"), np.argsort(a, axis=None),
                                np.sort(t.astype(bool))), x, ties)
    assert_same(outs[0], np.sort(x))
    assert_same(outs[1], np.argsort(x, kind="stable"))
    assert_same(outs[2], np.sort(x, axis=0))
    assert_same(outs[3], np.argsort(ties, kind="stable"))
    assert_same(outs[4], np.argsort(x, axis=None, kind="stable"))
    assert_same(outs[5], np.sort(ties.astype(bool)))
    zeros = np.array([0.0, -0.0, 0.0, -0.0, -1.0])  # equal keys keep their order
    assert np.array_equal(np.signbit(traced(np.sort, zeros)), [True, False, True, False, True])


def test_sort_primitive_matches_lexsort():
    keys = RNG.integers(0, 3, (2, 3, 11))
    second = with_nans((2, 3, 11))
    payload = RNG.standard_normal((2, 3, 11)).astype(np.float32)
    a, b, c, perm = traced(lambda k, s, p: lax.sort([k, s, p], 2, permutation=True),
                           keys, second, payload)
    for row in np.ndindex(2, 3):
        order = np.lexsort((second[row], keys[row]))
        assert np.array_equal(perm[row], order)
        assert np.array_equal(c[row], payload[row][order])
    assert_same(a, np.take_along_axis(keys, perm, -1))
    assert_same(b, np.take_along_axis(second, perm, -1))


def test_complex_sort_is_lexicographic():
    z = RNG.integers(-2, 2, (3, 8)) + 1j * RNG.standard_normal((3, 8))
    assert_same(traced(np.sort, z), np.sort(z))
    assert_same(traced(lambda v: np.argsort(v, kind="stable"), z), np.argsort(z, kind="stable"))


def test_lexsort_with_nans_and_a_key_array():
    keys = [with_nans((10,)), RNG.integers(0, 3, 10), RNG.integers(0, 2, 10).astype(bool)]
    assert_same(traced(lambda *k: np.lexsort(k), *keys), np.lexsort(keys))
    stacked = RNG.integers(0, 3, (3, 4, 5))
    assert_same(traced(lambda k: np.lexsort(k, axis=0), stacked), np.lexsort(stacked, axis=0))


def test_partition_and_argpartition_are_valid_partitions():
    x = RNG.integers(-5, 5, (4, 9)).astype(np.float64)
    part, order = traced(lambda a: (np.partition(a, [2, 6], axis=1),
                                    np.argpartition(a, 3, axis=1)), x)
    reference = np.partition(x, [2, 6], axis=1)
    assert np.array_equal(part[:, [2, 6]], reference[:, [2, 6]])
    assert np.array_equal(part, np.sort(x, axis=1))  # a full (stable) sort
    assert np.array_equal(order, np.argsort(x, axis=1, kind="stable"))
    picked = np.take_along_axis(x, order, 1)
    assert np.all(picked[:, :3] <= picked[:, 3:4]) and np.all(picked[:, 4:] >= picked[:, 3:4])


@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_sides_sorter_and_nans(side):
    table = np.sort(np.concatenate([RNG.integers(-3, 3, 12).astype(float), [np.nan, np.inf]]))
    queries = np.concatenate([RNG.integers(-4, 4, 9).astype(float), [np.nan, np.inf, -np.inf]])
    unsorted = RNG.standard_normal(7)
    sorter = np.argsort(unsorted)
    got = traced(lambda a, v, u, s: (np.searchsorted(a, v, side=side),
                                     np.searchsorted(u, v, side=side, sorter=s),
                                     np.searchsorted(a, v.astype(np.float32)[3], side=side)),
                 table, queries, unsorted, sorter)
    assert_same(got, (np.searchsorted(table, queries, side=side),
                      np.searchsorted(unsorted, queries, side=side, sorter=sorter),
                      np.searchsorted(table, queries.astype(np.float32)[3], side=side)))
    # len(a) len(v) above COUNT_WORK: a and v sorted together (ties, NaN, inf, ints)
    big = np.sort(np.concatenate([RNG.integers(-20, 20, 300).astype(float), [np.nan, np.inf]]))
    many = np.concatenate([RNG.integers(-22, 22, 99).astype(float), [np.nan, -np.inf, 0.0]])
    ints = np.sort(RNG.integers(-5, 5, 400))
    got = traced(lambda a, v, i: (np.searchsorted(a, v.reshape(3, 34), side=side),
                                  np.searchsorted(i, v[:60].astype(np.int64) % 7, side=side)),
                 big, many, ints)
    assert_same(got, (np.searchsorted(big, many.reshape(3, 34), side=side),
                      np.searchsorted(ints, many[:60].astype(np.int64) % 7, side=side)))


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
def test_every_quantile_method_matches_numpy(dtype):
    """All 13 methods at the breakpoints, for n = 1, 4, 7 along one axis, to the bit."""
    samples = [RNG.standard_normal(shape).astype(dtype) * (3 if dtype == "int64" else 1)
               for shape in [(1, 3), (4, 3), (7, 3)]]

    def f(*xs):
        return [np.quantile(x, Q, axis=0, method=m) for x in xs for m in METHODS] + \
            [np.quantile(x, 0.4, axis=0, method=m) for x in xs for m in METHODS]

    expected = [np.quantile(x, Q, axis=0, method=m) for x in samples for m in METHODS] + \
        [np.quantile(x, 0.4, axis=0, method=m) for x in samples for m in METHODS]
    assert_same(traced(f, *samples), expected)


def test_quantile_layouts_nans_and_percentile():
    x = RNG.standard_normal((3, 4, 5))
    holed = x.copy()
    holed[1, 2, 3] = np.nan
    cases = [
        lambda a: np.quantile(a, [[0.1, 0.5], [0.9, 1.0]], axis=(0, 2), keepdims=True),
        lambda a: np.quantile(a, 0.3, axis=None, keepdims=True),
        lambda a: np.quantile(a, np.float32(0.3), axis=-1),
        lambda a: np.percentile(a, [10, 62.5], axis=1, method="weibull"),
        lambda a: np.median(a, axis=(1, 2)),
        lambda a: np.median(a.astype(np.float32), axis=0),
        lambda a: np.median(a[0, 0]),
    ]
    for arr in (x, holed):
        assert_same(traced(lambda a: [f(a) for f in cases], arr), [f(arr) for f in cases])


def test_nan_variants_and_all_nan_slices():
    x = RNG.standard_normal((5, 6))
    x[0, [1, 3]] = np.nan
    x[2, :] = np.nan
    x[4, :5] = np.nan

    def f(a):
        return ([np.nanquantile(a, [0.0, 0.3, 1.0], axis=1, method=m) for m in METHODS]
                + [np.nanpercentile(a, 40, axis=1), np.nanmedian(a, axis=1),
                   np.nanmedian(a, axis=0, keepdims=True),
                   np.nanmedian(a.astype(np.float32), axis=1), np.nanquantile(a, 0.5)])

    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = f(x)
    assert_same(traced(f, x), expected)


def test_derivatives_match_jax(jax64):
    jax, jnp = jax64, jax64.numpy
    x = RNG.permutation(24).reshape(4, 6) * 0.31 - 3.0  # no ties
    w = RNG.standard_normal((4, 6))

    def loss(lib, a):
        s = lib.sort(a, axis=0)
        q = lib.quantile(a, lib.asarray([0.1, 0.5, 0.8]), axis=1, method="linear")
        return (lib.sum(s * w) + lib.sum(q ** 2) + lib.median(a) * 3
                + lib.sum(lib.quantile(a, 0.35, axis=0, method="midpoint") ** 3)
                + lib.sum(lib.percentile(a, 75, axis=1, method="nearest")))

    expected = jax.grad(lambda a: loss(jnp, a))(x)
    assert np.allclose(tx.grad(lambda a: loss(np, a))(x), expected, rtol=1e-12, atol=1e-12)
    t = RNG.standard_normal(x.shape)
    _, got_t = tx.jvp(lambda a: loss(np, a), (x,), (t,))
    _, want_t = jax.jvp(lambda a: loss(jnp, a), (x,), (t,))
    assert np.allclose(got_t, want_t, rtol=1e-12, atol=1e-12)
    # a traced q: the derivative of the interpolation weight, as JAX
    qs = np.array([0.15, 0.6])
    got = tx.grad(lambda q: np.sum(np.quantile(x, q, axis=0) ** 2))(qs)
    want = jax.grad(lambda q: jnp.sum(jnp.quantile(x, q, axis=0) ** 2))(qs)
    assert np.allclose(got, want, rtol=1e-12)


def test_vmap_of_nan_quantiles_matches_a_loop():
    x = RNG.standard_normal((3, 4, 7))
    x[0, 1, :3] = np.nan
    x[2, 3, :] = np.nan

    def f(a):
        return np.nanquantile(a, [0.2, 0.7], axis=1, method="hazen"), np.nanmedian(a, axis=-1)

    got = tx.vmap(f)(x)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        loop = [f(row) for row in x]
    assert_same(got, tuple(np.stack(parts) for parts in zip(*loop)))


def test_one_jitted_program_matches_numpy():
    x = with_nans((6, 90))  # rows of 90: radix sorted (short rows: tests/catalogue.py)
    ints = RNG.integers(-4, 4, (6, 90)).astype(np.int32)
    table = np.sort(RNG.standard_normal(300))  # with 90 queries: searched by sorting

    def f(a, k, t):
        return (np.sort(a, axis=1), np.argsort(k, axis=0, kind="stable"), np.sort(k),
                np.lexsort((a, k), axis=1), np.nanquantile(a, [0.25, 0.5], axis=1),
                np.quantile(k, 0.3, axis=1, method="closest_observation"),
                np.median(a, axis=0), np.searchsorted(t, a[0]))

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = f(x, ints, table)
    assert_same(tx.jit(f)(x, ints, table), expected)


def test_cuda_refuses_sorting():
    with pytest.raises(CompileError, match="sort .* has no CUDA kernel"):
        tx.jit(np.sort, device="cuda", cache=False).lower(np.ones((3, 4)))


# (call, error, message, whether NumPy raises the same): transfuse's own refusals last
BAD = [
    (lambda a: np.sort(a, kind="bogo"), ValueError, "sort kind must be one of", True),
    (lambda a: np.sort(a, axis=2), ValueError, "axis 2 is out of bounds", True),
    (lambda a: np.quantile(a[0, 0], 0.5, axis=0), ValueError, "axis 0 is out of bounds", True),
    (lambda a: np.median(a[0, 0], axis=(0,)), ValueError, "axis 0 is out of bounds", True),
    (lambda a: np.partition(a, 5), ValueError, r"kth\(=5\) out of bounds \(5\)", True),
    (lambda a: np.partition(a, 1.5), TypeError, "Partition index must be integer", True),
    (lambda a: np.quantile(a, 1.5), ValueError, r"Quantiles must be in the range \[0, 1\]", True),
    (lambda a: np.percentile(a, -1), ValueError, r"Percentiles must be in the range \[0, 100\]",
     True),
    (lambda a: np.quantile(a, 0.5, method="cubic"), ValueError, "'cubic' is not a valid method",
     True),
    (lambda a: np.quantile(a + 1j, 0.5), TypeError, "a must be an array of real numbers", True),
    (lambda a: np.searchsorted(a, 0.5), ValueError, "object too deep", True),
    (lambda a: np.searchsorted(a[0], 0.5, side="middle"), ValueError,
     "side must be 'left' or 'right'", True),
    (lambda a: np.sort(a, order="f"), UnsupportedError, "order=", False),
    (lambda a: np.quantile(a, 0.5, weights=a), UnsupportedError, "weights=", False),
    (lambda a: np.quantile(a[:, :0], 0.5, axis=1), IndexError, "empty slice", False),
]


@pytest.mark.parametrize("call, error, message, numpy_too", BAD)
def test_bad_arguments_raise_clear_errors(call, error, message, numpy_too):
    x = RNG.standard_normal((3, 5))
    if numpy_too:
        with pytest.raises(error, match=message):
            call(x)  # NumPy's own error ...
    with pytest.raises(error, match=message):
        tx.make_graph(call)(x)  # ... and transfuse's, naming the same thing


def test_array_methods_sort_in_place():
    x = RNG.standard_normal((3, 5))
    table = np.sort(RNG.standard_normal(7))

    def f(a, t):
        b = a * 2
        b.sort(axis=0)
        c = a + 1
        c.partition(2)  # a full sort, as np.partition
        return b, c, a.argsort(kind="stable"), a.argpartition(1, axis=0), t.searchsorted(a[0])

    b, c = np.sort(x * 2, axis=0), np.sort(x + 1)
    assert_same(traced(f, x, table), (b, c, np.argsort(x, kind="stable"),
                                      np.argsort(x, axis=0, kind="stable"),
                                      np.searchsorted(table, x[0])))
    smallest_two = tx.grad(lambda a: (lambda s: (s.sort(), np.sum(s[:, :2]))[1])(a * 1.0))(x)
    assert np.array_equal(smallest_two, (np.argsort(np.argsort(x)) < 2).astype(float))
