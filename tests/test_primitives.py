"""Traced + interpreted equals eager NumPy: what the catalogue's samples do not say.

Every function of the catalogue (tests/opinfo.py: ufuncs, reductions, contractions, shapes,
indexing, creation) is traced against NumPy by tests/test_opinfo.py; here are NEP 50's weak
scalars, operators, empty reductions and the primitives' own implementations.
"""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.ir import PRIMITIVES

import transfuse.numpy as tnp
from tests.helpers import assert_same, rand, traced

FLOATS = ["float32", "float64"]
ALL = ["float32", "float64", "int32", "int64", "bool"]
SHAPES = [(), (0,), (3, 4), (2, 0, 3)]


def test_erf_and_logistic_match_scipy():
    import scipy.special
    rng = np.random.default_rng(1)
    for dtype in FLOATS:
        x = rand(rng, (5, 3), dtype)
        assert_same(traced(tnp.erf, x), scipy.special.erf(x))
        assert_same(traced(tnp.logistic, x), scipy.special.expit(x))


def test_special_primitives_match_scipy():
    """scipy.special's primitives (ir/primitives.py SPECIAL_UNARY, zeta) bound directly."""
    import scipy.special
    from transfuse.ir import lax

    rng = np.random.default_rng(2)
    for dtype in FLOATS:
        x, p = rand(rng, (5, 3), dtype), rng.uniform(0.05, 0.95, (5, 3)).astype(dtype)
        for fn, ref, arg in ((lax.erfc, scipy.special.erfc, x), (lax.ndtr, scipy.special.ndtr, x),
                             (lax.log_ndtr, scipy.special.log_ndtr, x),
                             (lax.erf_inv, scipy.special.erfinv, p),
                             (lax.ndtri, scipy.special.ndtri, p),
                             (lax.lgamma, scipy.special.gammaln, p),
                             (lax.digamma, scipy.special.psi, p),
                             (lax.bessel_i0e, scipy.special.i0e, x),
                             (lax.bessel_i1e, scipy.special.i1e, x)):
            assert_same(traced(fn, arg), ref(arg).astype(dtype))
        s = (p + 1.5).astype(dtype)
        assert_same(traced(lax.zeta, s, p), scipy.special.zeta(s, p).astype(dtype))


@pytest.mark.parametrize("scalar", [2, 2.5, True])
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64", "float64"])
def test_python_scalars_are_weak(scalar, dtype):
    """NEP 50: a Python scalar does not upcast the array it meets."""
    x = rand(np.random.default_rng(3), (4,), dtype)
    for f in (lambda a: a + scalar, lambda a: scalar * a, lambda a: a - scalar,
              lambda a: a > scalar, lambda a: a ** 2, lambda a: a / 2):
        assert_same(traced(f, x), f(x))


def test_operators_match_ufuncs():
    rng = np.random.default_rng(5)
    x, y = rand(rng, (3, 4), "float32"), rand(rng, (4,), "float32")

    def f(a, b):
        return (a + b, a - b, a * b, a / b, a // b, a % b, -a, abs(a), a < b, a <= b,
                a > b, a >= b, a == b, a != b, a ** 2, 2 ** a, b @ a.T)

    assert_same(traced(f, x, y), f(x, y), exact=False)


@pytest.mark.parametrize("fn", [np.sum, np.prod, np.any, np.all, np.mean])
def test_reductions_of_empty_arrays(fn):
    x = np.zeros((0, 3), np.float32)
    with np.errstate(all="ignore"):
        assert_same(traced(lambda a: fn(a, axis=0), x), fn(x, axis=0))


def test_max_of_empty_is_an_error():
    with pytest.raises(ValueError, match="zero-size"):
        traced(lambda a: np.max(a, axis=0), np.zeros((0, 3)))


def test_reverse_scan_primitive():
    x = rand(np.random.default_rng(9), (3, 4), "float64")
    out = PRIMITIVES["cumsum"].impl(x, axis=1, reverse=True)
    np.testing.assert_allclose(out, np.flip(np.cumsum(np.flip(x, 1), 1), 1))


def test_conv_lhs_dilation_equals_dilated_input():
    from transfuse import lax
    rng = np.random.default_rng(14)
    x, w = rand(rng, (1, 2, 4, 4), "float64"), rand(rng, (3, 2, 2, 2), "float64")
    dilated = np.zeros((1, 2, 7, 7))
    dilated[:, :, ::2, ::2] = x
    out = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), lhs_dilation=(2, 2))
    expected = lax.conv_general_dilated(dilated, w, (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_allclose(out, expected)


def test_traced_integer_index():
    x = rand(np.random.default_rng(17), (5, 3), "float64")
    i = np.int64(3)
    assert_same(traced(lambda a, k: a[k], x, i), x[i])
    assert_same(traced(lambda a, k: a[:, [0, 2]][k], x, i), x[:, [0, 2]][i])


def test_gather_scatter_primitives():
    rng = np.random.default_rng(18)
    x = rand(rng, (4, 5), "float64")
    idx = np.array([[0, 3], [3, 3]])
    out = PRIMITIVES["gather"].impl(x, idx, axis=1)
    np.testing.assert_array_equal(out, np.take(x, idx, axis=1))
    upd = rand(rng, (4, 2, 2), "float64")
    added = PRIMITIVES["scatter_add"].impl(x, idx, upd, axis=1)
    expected = x.copy()
    np.add.at(expected, (slice(None), idx), upd)
    np.testing.assert_array_equal(added, expected)


def test_slices_and_updates_primitives():
    rng = np.random.default_rng(19)
    x = rand(rng, (6, 5), "float64")
    p = PRIMITIVES
    out = p["slice"].impl(x, starts=(5, 1), steps=(-2, 2), sizes=(3, 2))
    np.testing.assert_array_equal(out, x[5::-2, 1:5:2])
    upd = rand(rng, (3, 2), "float64")
    new = p["update_slice"].impl(x, upd, starts=(5, 1), steps=(-2, 2), sizes=(3, 2))
    expected = x.copy()
    expected[5::-2, 1:5:2] = upd
    np.testing.assert_array_equal(new, expected)
    dyn = p["dynamic_slice"].impl(x, np.int64(4), np.int64(-1), slice_sizes=(3, 2))
    np.testing.assert_array_equal(dyn, x[3:6, 0:2])  # clamped into bounds, as JAX
    dus = p["dynamic_update_slice"].impl(x, upd, np.int64(1), np.int64(3))
    expected = x.copy()
    expected[1:4, 3:5] = upd
    np.testing.assert_array_equal(dus, expected)


def test_pad_primitive_negative_and_interior():
    x = np.arange(1.0, 5.0)
    out = PRIMITIVES["pad"].impl(x, np.float64(0), padding_config=((-1, 2, 1),))
    np.testing.assert_array_equal(out, [0, 2, 0, 3, 0, 4, 0, 0])
