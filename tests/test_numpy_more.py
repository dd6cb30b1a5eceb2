"""Statistics and other common functions where tests/opinfo.py cannot say it: all-NaN
slices, conventions where NumPy raises, argument errors, data-dependent lengths."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import transfuse as tx
import transfuse.numpy as tnp
from tests import helpers


def _nan_rows() -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((3, 4))
    x[1] = np.nan
    x[2, 1] = np.nan
    return x


def test_nan_reductions_of_all_nan_slices_match_numpy_without_warnings():
    x = _nan_rows()

    mask = np.random.default_rng(1).random(x.shape) < 0.7

    def program(v):
        return (np.nanmean(v, axis=1), np.nanvar(v, axis=1), np.nanstd(v, axis=1, ddof=1),
                np.nanmax(v, axis=1), np.nanmin(v, axis=1), np.nansum(v, axis=1),
                np.nanvar(v, axis=1, ddof=3), np.nanmean(v, axis=0, where=mask),
                np.nansum(v, axis=0, dtype=np.float32, where=mask),
                np.nanvar(v, axis=None, where=mask), np.nanprod(v, axis=1))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tx.jit(program)(x)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = program(x)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-6 if e.dtype == np.float32 else 1e-12)


def test_nanargmax_of_an_all_nan_slice_is_minus_one_where_numpy_raises():
    x = _nan_rows()
    with pytest.raises(ValueError, match="All-NaN"):
        np.nanargmax(x, axis=1)
    got = tx.jit(lambda v: (np.nanargmax(v, axis=1), np.nanargmin(v, axis=1)))(x)
    np.testing.assert_array_equal(got[0], [np.argmax(x[0]), -1, np.nanargmax(x[2])])
    np.testing.assert_array_equal(got[1], [np.argmin(x[0]), -1, np.nanargmin(x[2])])


def test_nanstd_gradient_at_a_single_value_is_zero_as_np_std():
    x = np.array([[1.5, np.nan, np.nan], [0.5, 2.0, np.nan]])
    g = tx.grad(lambda v: np.sum(np.nanstd(v, axis=1)))(x)
    expected_row = np.array([0.5 - 1.25, 2.0 - 1.25]) / 2 / 0.75
    np.testing.assert_allclose(g, [[0, 0, 0], [*expected_row, 0]], rtol=1e-12)


def test_ptp_and_nanmax_split_the_gradient_between_ties_as_jax():
    x = np.array([[1.0, 3.0, 3.0, -2.0], [0.5, np.nan, 0.5, 0.25]])
    g_ptp = tx.grad(lambda v: np.sum(np.ptp(v[:1], axis=1)))(x)
    np.testing.assert_allclose(g_ptp[0], [0, 0.5, 0.5, -1])
    g_max = tx.grad(lambda v: np.sum(np.nanmax(v, axis=1)))(x)
    np.testing.assert_allclose(g_max, [[0, 0.5, 0.5, 0], [0.5, 0, 0.5, 0]])


def test_statistics_argument_errors_name_the_problem():
    x = np.random.default_rng(1).standard_normal((3, 5))
    with pytest.raises(tx.TransfuseTypeError, match="fweights must be integer"):
        tx.make_graph(lambda v: np.cov(v, fweights=np.ones(5)))(x)
    with pytest.raises(tx.ShapeError, match="incompatible numbers of samples and aweights"):
        tx.make_graph(lambda v: np.cov(v, aweights=np.ones(4)))(x)
    with pytest.raises(tx.TransfuseValueError, match="aweights cannot be negative"):
        tx.make_graph(lambda v: np.cov(v, aweights=-np.ones(5)))(x)
    with pytest.raises(tx.TransfuseTypeError, match="axis must be specified"):
        tx.make_graph(lambda v: np.average(v, weights=np.ones(5)))(x)
    with pytest.raises(tx.ShapeError, match="weights of shape"):
        tx.make_graph(lambda v: np.average(v, axis=0, weights=np.ones(5)))(x)


def test_whole_array_comparisons_are_traced_booleans():
    x = np.random.default_rng(2).standard_normal((3,))
    got = tx.jit(lambda a, b: (np.allclose(a, b), np.array_equal(a, b),
                               np.array_equal(a, b[:2]), np.count_nonzero(a > 0)))(x, x + 1e-10)
    assert [bool(g) for g in got[:3]] == [True, False, False]
    assert got[3] == np.count_nonzero(x > 0) and got[3].dtype == np.int64
    assert tnp.allclose(x, x) is True  # no traced argument: NumPy itself


# ---------------------------------------------------------------------------------------
# bincount's data-dependent length, histogram, interp's period, argument errors


def test_bincount_length_comes_from_concrete_values_or_from_length():
    rng = np.random.default_rng(3)
    x, w = rng.integers(0, 5, (9,)), rng.standard_normal(9)
    got = tx.jit(lambda v: np.bincount(x, v, minlength=7))(w)  # x concrete: NumPy's length
    np.testing.assert_allclose(got, np.bincount(x, w, minlength=7), rtol=1e-12)
    np.testing.assert_array_equal(tnp.bincount(x, length=3), np.bincount(x)[:3])
    batch = rng.integers(0, 6, (4, 9))
    got = tx.vmap(lambda v: tnp.bincount(v, length=6))(batch)
    np.testing.assert_array_equal(got, [np.bincount(v, minlength=6) for v in batch])
    grad = tx.grad(lambda v: np.sum(tnp.bincount(x, v, length=4) ** 2))(w)
    np.testing.assert_allclose(grad, np.where(x < 4, 2 * np.bincount(x, w)[np.minimum(x, 3)],
                                              0), rtol=1e-12)
    with pytest.raises(tx.TransfuseValueError, match="Pass length="):
        tx.jit(lambda v: np.bincount(v))(x)
    with pytest.raises(tx.TransfuseValueError, match="no negative elements"):
        tx.make_graph(lambda v: np.bincount(np.array([1, -1]), v))(w[:2])
    with pytest.raises(tx.TransfuseTypeError, match="according to the rule 'safe'"):
        tx.make_graph(lambda v: tnp.bincount(v, length=3))(w)


def test_histogram_density_drops_nan_and_checks_its_bins():
    a = np.random.default_rng(4).standard_normal(200)
    a[::17] = np.nan
    hist, edges = tx.jit(lambda v: np.histogram(v, 8, range=(-2, 2), density=True))(a)
    ref_hist, ref_edges = np.histogram(a, 8, range=(-2, 2), density=True)
    np.testing.assert_allclose(hist, ref_hist, rtol=1e-12)
    np.testing.assert_array_equal(edges, ref_edges)
    assert np.isclose(np.sum(hist * np.diff(edges)), 1.0)
    with pytest.raises(tx.UnsupportedError, match="bins='auto'"):
        tx.make_graph(lambda v: np.histogram(v, bins="auto"))(a)
    with pytest.raises(tx.TransfuseValueError, match="increase monotonically"):
        tx.make_graph(lambda v: np.histogram(v, bins=np.array([0.0, 2.0, 1.0])))(a)


def test_interp_with_a_period_and_polyfit_with_weights_match_numpy():
    rng = np.random.default_rng(5)
    xp, fp = np.array([350.0, 10.0, 90.0, 180.0]), rng.standard_normal(4)
    x = rng.uniform(-360, 720, 9)
    t, y, w = np.linspace(0, 1, 8), rng.standard_normal(8), rng.uniform(0.5, 2, 8)
    got = tx.jit(lambda v, f: np.interp(v, xp, f, period=360))(x, fp)
    np.testing.assert_allclose(got, np.interp(x, xp, fp, period=360), rtol=1e-12)
    # polyfit compiles in tests/opinfo.py; w= here by the reference interpreter
    got = helpers.traced(lambda yv, u: np.polyfit(t, yv, 2, w=u), y, w)
    np.testing.assert_allclose(got, np.polyfit(t, y, 2, w=w), rtol=1e-10)
    got = tx.vmap(lambda p: np.interp(x, p, fp, period=360))(np.stack([xp, xp[::-1] + 1]))
    np.testing.assert_allclose(got, [np.interp(x, xp, fp, period=360),
                                     np.interp(x, xp[::-1] + 1, fp, period=360)], rtol=1e-12)


def test_numerical_argument_errors_name_the_problem():
    f = np.random.default_rng(6).standard_normal((2, 5))
    with pytest.raises(tx.TransfuseValueError, match="'edge_order' greater than 2"):
        tx.make_graph(lambda v: np.gradient(v, edge_order=3))(f)
    with pytest.raises(tx.TransfuseValueError, match="at least \\(edge_order \\+ 1\\)"):
        tx.make_graph(lambda v: np.gradient(v, axis=0, edge_order=2))(f)
    with pytest.raises(tx.TransfuseValueError, match="v cannot be empty"):
        tx.make_graph(lambda v: np.convolve(v[0], v[0, :0]))(f)
    with pytest.raises(tx.TransfuseValueError, match="monotonically increasing or decreasing"):
        tx.make_graph(lambda v: np.digitize(v, np.array([0.0, 2.0, 1.0])))(f)
    with pytest.raises(tx.TransfuseValueError, match="fp and xp are not of the same length"):
        tx.make_graph(lambda v: np.interp(v, np.arange(3.0), np.arange(4.0)))(f)
