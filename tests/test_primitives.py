"""Every primitive, reached through NumPy code: traced + interpreted equals eager NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.ir import PRIMITIVES

import transfuse.numpy as tnp
from tests.helpers import assert_same, rand, traced

FLOATS = ["float32", "float64"]
ALL = ["float32", "float64", "int32", "int64", "bool"]
SHAPES = [(), (0,), (3, 4), (2, 0, 3)]


def _positive(rng, shape, dtype):
    return (np.abs(rand(rng, shape, dtype)) + 0.5).astype(dtype)


def _unit(rng, shape, dtype):
    return (rng.uniform(-0.95, 0.95, shape)).astype(dtype)


UNARY = {
    np.negative: None, np.abs: None, np.sign: None, np.square: None, np.exp: None,
    np.expm1: None, np.log: _positive, np.log1p: _positive, np.sqrt: _positive,
    np.sin: None, np.cos: None, np.tan: None, np.arcsin: _unit, np.arccos: _unit,
    np.arctan: None, np.sinh: None, np.cosh: None, np.tanh: None, np.arcsinh: None,
    np.arccosh: lambda r, s, d: (_positive(r, s, d) + 1).astype(d), np.arctanh: _unit,
    np.floor: None, np.ceil: None, np.rint: None,
    np.reciprocal: lambda r, s, d: (_positive(r, s, d) + 1).astype(d),
    np.isnan: None, np.isinf: None, np.isfinite: None, np.exp2: None, np.log2: _positive,
    np.log10: _positive, np.trunc: None, np.cbrt: None, np.deg2rad: None, np.rad2deg: None,
    np.logical_not: None, np.positive: None,
}


@pytest.mark.parametrize("ufunc", list(UNARY), ids=lambda u: u.__name__)
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
@pytest.mark.parametrize("shape", [(), (0,), (3, 4)])
def test_unary_ufuncs(ufunc, dtype, shape):
    rng = np.random.default_rng(0)
    make = UNARY[ufunc] or rand
    x = make(rng, shape, dtype)
    # Ufuncs without a primitive of their own are compositions: equal to a few ulp.
    composite = ufunc in (np.cbrt, np.exp2, np.log2, np.log10, np.deg2rad, np.rad2deg)
    with np.errstate(all="ignore"):
        expected = ufunc(x)
        assert_same(traced(ufunc, x), expected, exact=not composite, rtol=1e-6)


def test_erf_and_logistic_match_scipy():
    import scipy.special
    rng = np.random.default_rng(1)
    for dtype in FLOATS:
        x = rand(rng, (5, 3), dtype)
        assert_same(traced(tnp.erf, x), scipy.special.erf(x))
        assert_same(traced(tnp.logistic, x), scipy.special.expit(x))


BINARY = [np.add, np.subtract, np.multiply, np.true_divide, np.floor_divide, np.remainder,
          np.power, np.maximum, np.minimum, np.arctan2, np.equal, np.not_equal, np.less,
          np.less_equal, np.greater, np.greater_equal, np.hypot, np.logaddexp, np.fmax,
          np.fmin]
PAIRS = [((3, 1), (1, 4)), ((), (2, 3)), ((0, 3), (3,)), ((2, 3), (2, 3))]
DTYPE_PAIRS = [("float32", "float32"), ("float32", "float64"), ("int32", "float32"),
               ("int64", "int32"), ("float64", "int64")]


@pytest.mark.parametrize("ufunc", BINARY, ids=lambda u: u.__name__)
@pytest.mark.parametrize("dtypes", DTYPE_PAIRS, ids=str)
@pytest.mark.parametrize("shapes", PAIRS, ids=str)
def test_binary_ufuncs(ufunc, dtypes, shapes):
    rng = np.random.default_rng(2)
    x = rand(rng, shapes[0], dtypes[0])
    y = rand(rng, shapes[1], dtypes[1])
    if ufunc in (np.floor_divide, np.remainder, np.true_divide, np.power):
        y = np.where(y == 0, 2, y).astype(y.dtype)
    if ufunc is np.power:
        x = np.abs(x) + (1 if x.dtype.kind != "b" else 0)
        y = np.abs(y).astype(y.dtype)
    with np.errstate(all="ignore"):
        expected = ufunc(x, y)
    assert_same(traced(ufunc, x, y), expected, exact=ufunc not in (np.hypot, np.logaddexp))


@pytest.mark.parametrize("scalar", [2, 2.5, True])
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64", "float64"])
def test_python_scalars_are_weak(scalar, dtype):
    """NEP 50: a Python scalar does not upcast the array it meets."""
    x = rand(np.random.default_rng(3), (4,), dtype)
    for f in (lambda a: a + scalar, lambda a: scalar * a, lambda a: a - scalar,
              lambda a: a > scalar, lambda a: a ** 2, lambda a: a / 2):
        assert_same(traced(f, x), f(x))


@pytest.mark.parametrize("op", [np.logical_and, np.logical_or, np.logical_xor,
                                np.bitwise_and, np.bitwise_or, np.bitwise_xor, np.invert])
@pytest.mark.parametrize("dtype", ["bool", "int32", "int64"])
def test_logical_and_bitwise(op, dtype):
    rng = np.random.default_rng(4)
    x, y = rand(rng, (3, 4), dtype), rand(rng, (4,), dtype)
    args = (x,) if op is np.invert else (x, y)
    assert_same(traced(op, *args), op(*args))


def test_operators_match_ufuncs():
    rng = np.random.default_rng(5)
    x, y = rand(rng, (3, 4), "float32"), rand(rng, (4,), "float32")

    def f(a, b):
        return (a + b, a - b, a * b, a / b, a // b, a % b, -a, abs(a), a < b, a <= b,
                a > b, a >= b, a == b, a != b, a ** 2, 2 ** a, b @ a.T)

    assert_same(traced(f, x, y), f(x, y), exact=False)


REDUCTIONS = [np.sum, np.prod, np.max, np.min, np.mean, np.var, np.std, np.any, np.all]


@pytest.mark.parametrize("fn", REDUCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(fn, dtype, axis, keepdims):
    x = rand(np.random.default_rng(6), (2, 3, 4), dtype)
    expected = fn(x, axis=axis, keepdims=keepdims)
    actual = traced(lambda a: fn(a, axis=axis, keepdims=keepdims), x)
    assert_same(actual, expected, exact=fn not in (np.var, np.std, np.mean), rtol=1e-5)


@pytest.mark.parametrize("fn", [np.sum, np.prod, np.any, np.all, np.mean])
def test_reductions_of_empty_arrays(fn):
    x = np.zeros((0, 3), np.float32)
    with np.errstate(all="ignore"):
        assert_same(traced(lambda a: fn(a, axis=0), x), fn(x, axis=0))


def test_max_of_empty_is_an_error():
    with pytest.raises(ValueError, match="zero-size"):
        traced(lambda a: np.max(a, axis=0), np.zeros((0, 3)))


@pytest.mark.parametrize("fn", [np.argmax, np.argmin])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("dtype", ["float32", "int32", "bool"])
def test_arg_reductions(fn, axis, dtype):
    x = rand(np.random.default_rng(7), (4, 5), dtype)
    assert_same(traced(lambda a: fn(a, axis=axis), x), fn(x, axis=axis))
    assert_same(traced(lambda a: fn(a, axis=axis, keepdims=True), x),
                fn(x, axis=axis, keepdims=True))


@pytest.mark.parametrize("fn", [np.cumsum, np.cumprod])
@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "bool"])
def test_scans(fn, axis, dtype):
    x = rand(np.random.default_rng(8), (3, 4), dtype)
    assert_same(traced(lambda a: fn(a, axis=axis), x), fn(x, axis=axis))


def test_reverse_scan_primitive():
    x = rand(np.random.default_rng(9), (3, 4), "float64")
    out = PRIMITIVES["cumsum"].impl(x, axis=1, reverse=True)
    np.testing.assert_allclose(out, np.flip(np.cumsum(np.flip(x, 1), 1), 1))


MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                 ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 5)),
                 ((3, 4), (2, 4, 5)), ((0, 4), (4, 2)), ((3, 0), (0, 2))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_matmul(shapes, dtype):
    rng = np.random.default_rng(10)
    a, b = rand(rng, shapes[0], dtype), rand(rng, shapes[1], dtype)
    assert_same(traced(np.matmul, a, b), a @ b, exact=False, rtol=1e-5)
    assert_same(traced(lambda x, y: x @ y, a, b), a @ b, exact=False, rtol=1e-5)


@pytest.mark.parametrize("fn", [np.dot, np.inner, np.outer, np.vdot, np.kron,
                                lambda a, b: np.tensordot(a, b, axes=1),
                                lambda a, b: np.tensordot(a, b, axes=([1], [0]))])
def test_products(fn):
    rng = np.random.default_rng(11)
    a, b = rand(rng, (3, 4), "float64"), rand(rng, (4, 4), "float64")
    if fn is np.inner:
        b = rand(rng, (5, 4), "float64")
    if fn is np.vdot:
        b = rand(rng, (4, 3), "float64")
    assert_same(traced(fn, a, b), fn(a, b), exact=False, rtol=1e-12)


EINSUMS = [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
           ("i,i->", [(4,), (4,)]), ("ij->ji", [(3, 4)]), ("ij->", [(3, 4)]),
           ("...ij,jk->...ik", [(2, 3, 4), (4, 5)]), ("ij,ij->i", [(3, 4), (3, 4)]),
           ("i,j->ij", [(3,), (4,)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
           ("bi,bo->bio", [(6, 3), (6, 2)]), ("ij", [(3, 4)]), ("ij,jk", [(3, 4), (4, 2)])]


@pytest.mark.parametrize("spec,shapes", EINSUMS, ids=[s for s, _ in EINSUMS])
def test_einsum(spec, shapes):
    rng = np.random.default_rng(12)
    ops = [rand(rng, s, "float64") for s in shapes]
    assert_same(traced(lambda *a: np.einsum(spec, *a), *ops), np.einsum(spec, *ops),
                exact=False, rtol=1e-12)


def _naive_conv2d(x, w, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), padding[0], padding[1]))
    oh = (x.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow), x.dtype)
    per = o // groups
    for g in range(groups):
        for oc in range(g * per, (g + 1) * per):
            for i in range(oh):
                for j in range(ow):
                    patch = x[:, g * ci:(g + 1) * ci,
                              i * stride[0]:i * stride[0] + dilation[0] * (kh - 1) + 1:
                              dilation[0],
                              j * stride[1]:j * stride[1] + dilation[1] * (kw - 1) + 1:
                              dilation[1]]
                    out[:, oc, i, j] = np.sum(patch * w[oc], axis=(1, 2, 3))
    return out


CONVS = [dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1),
         dict(stride=(2, 1), padding=((1, 1), (2, 0)), dilation=(1, 1), groups=1),
         dict(stride=(1, 2), padding=((1, 1), (1, 1)), dilation=(2, 1), groups=2),
         dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=4)]


@pytest.mark.parametrize("cfg", CONVS, ids=str)
@pytest.mark.parametrize("dtype", FLOATS)
def test_conv(cfg, dtype):
    from transfuse import lax
    rng = np.random.default_rng(13)
    x = rand(rng, (2, 4, 7, 6), dtype)
    w = rand(rng, (4, 4 // cfg["groups"], 3, 2), dtype)

    def f(x, w):
        return lax.conv_general_dilated(x, w, cfg["stride"], cfg["padding"],
                                        rhs_dilation=cfg["dilation"],
                                        feature_group_count=cfg["groups"])

    expected = _naive_conv2d(x.astype(np.float64), w.astype(np.float64), **cfg)
    np.testing.assert_allclose(traced(f, x, w), expected, rtol=1e-5, atol=1e-5)
    assert traced(f, x, w).dtype == np.dtype(dtype)


def test_conv_lhs_dilation_equals_dilated_input():
    from transfuse import lax
    rng = np.random.default_rng(14)
    x, w = rand(rng, (1, 2, 4, 4), "float64"), rand(rng, (3, 2, 2, 2), "float64")
    dilated = np.zeros((1, 2, 7, 7))
    dilated[:, :, ::2, ::2] = x
    out = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), lhs_dilation=(2, 2))
    expected = lax.conv_general_dilated(dilated, w, (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_allclose(out, expected)


SHAPE_PROGRAMS = {
    "reshape": lambda x: x.reshape(4, 6), "reshape_neg": lambda x: np.reshape(x, (-1, 3)),
    "ravel": lambda x: x.ravel(), "flatten": lambda x: x.flatten(), "T": lambda x: x.T,
    "transpose": lambda x: np.transpose(x, (1, 2, 0)), "swapaxes": lambda x: x.swapaxes(0, 2),
    "moveaxis": lambda x: np.moveaxis(x, 0, -1), "squeeze": lambda x: x[:, :1].squeeze(1),
    "expand_dims": lambda x: np.expand_dims(x, (0, 2)), "broadcast_to":
        lambda x: np.broadcast_to(x[:1], (5, 3, 4)),
    "concatenate": lambda x: np.concatenate([x, x * 2], axis=1),
    "concat_none": lambda x: np.concatenate([x, x], axis=None),
    "stack": lambda x: np.stack([x, x + 1], axis=-1), "vstack": lambda x: np.vstack([x[0], x[1]]),
    "hstack": lambda x: np.hstack([x[0], x[1]]), "split": lambda x: np.split(x, 2, axis=0),
    "array_split": lambda x: np.array_split(x, 3, axis=2), "flip": lambda x: np.flip(x, 1),
    "flip_all": lambda x: np.flip(x), "roll": lambda x: np.roll(x, 2, axis=2),
    "roll_flat": lambda x: np.roll(x, -5), "repeat": lambda x: np.repeat(x, 2, axis=1),
    "tile": lambda x: np.tile(x[0], (2, 1)), "pad": lambda x: np.pad(x, ((1, 0), (0, 2), (1, 1))),
    "pad_value": lambda x: np.pad(x, 1, constant_values=3.5), "diff": lambda x: np.diff(x, axis=1),
    "diff2": lambda x: np.diff(x, n=2), "where": lambda x: np.where(x > 0, x, -x),
    "clip": lambda x: np.clip(x, -0.5, 0.5), "clip_lo": lambda x: np.clip(x, -0.5, None),
    "take": lambda x: np.take(x, [2, 0, 1], axis=2), "take_flat": lambda x: np.take(x, [5, 0]),
    "take_along": lambda x: np.take_along_axis(x, np.argsort(x, axis=2), axis=2),
    "tril": lambda x: np.tril(x[0]), "triu": lambda x: np.triu(x[0], 1),
    "diagonal": lambda x: np.diagonal(x[0]), "trace": lambda x: np.trace(x[0]),
    "diag": lambda x: np.diag(x[0, 0]), "diag2": lambda x: np.diag(x[0], -1),
    "round": lambda x: np.round(x, 2), "nan_to_num": lambda x: np.nan_to_num(x / 0.0),
    "isclose": lambda x: np.isclose(x, x + 1e-9), "atleast_2d": lambda x: np.atleast_2d(x[0, 0]),
    "column_stack": lambda x: np.column_stack([x[0, 0], x[1, 0]]),
    "outer_ufunc": lambda x: np.multiply.outer(x[0, 0], x[1, 1]),
    "add_reduce": lambda x: np.add.reduce(x, axis=1), "astype": lambda x: x.astype(np.int32),
    "copy": lambda x: x.copy(), "mean_method": lambda x: x.mean(axis=(0, 1)),
    "logsumexp": lambda x: tnp.logsumexp(x, axis=1),
}


@pytest.mark.parametrize("name", list(SHAPE_PROGRAMS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_shape_and_misc_programs(name, dtype):
    x = rand(np.random.default_rng(15), (2, 3, 4), dtype)
    fn = SHAPE_PROGRAMS[name]
    if name == "take_along":
        idx = np.argsort(x, axis=2)
        fn = lambda a: np.take_along_axis(a, idx, axis=2)  # noqa: E731
    with np.errstate(all="ignore"):
        expected = fn(x) if name != "logsumexp" else __import__(
            "scipy.special").special.logsumexp(x, axis=1)
        assert_same(traced(fn, x), expected, exact=name not in ("logsumexp",), rtol=1e-6)


INDEXES = [(1,), (slice(1, None),), (Ellipsis, 0), (None, 0), (slice(None, None, -1),),
           (0, slice(None, None, 2), 1), (slice(None), None, slice(1, 3)),
           ([0, 1, 1],), (slice(None), [2, 0]), ([0, 1], slice(None), [3, 1]),
           (np.array([[0], [1]]), np.array([0, 2])), (-1, -2, -3), (np.array([True, False]),),
           (Ellipsis,), (slice(5, 1, -2), Ellipsis), (0, [1, 2], slice(None))]


@pytest.mark.parametrize("index", INDEXES, ids=str)
def test_getitem(index):
    x = rand(np.random.default_rng(16), (2, 3, 4), "float32")
    assert_same(traced(lambda a: a[index], x), x[index])


def test_traced_integer_index():
    x = rand(np.random.default_rng(17), (5, 3), "float64")
    i = np.int64(3)
    assert_same(traced(lambda a, k: a[k], x, i), x[i])
    assert_same(traced(lambda a, k: a[:, [0, 2]][k], x, i), x[:, [0, 2]][i])


CREATION = {
    "zeros": lambda: np.zeros((2, 3)), "ones_i32": lambda: np.ones(4, np.int32),
    "full": lambda: np.full((2,), 7.5, np.float32), "arange": lambda: np.arange(2, 11, 3),
    "arange_f": lambda: np.arange(0.0, 1.0, 0.25), "linspace": lambda: np.linspace(0, 1, 7),
    "linspace_ne": lambda: np.linspace(-1, 2, 4, endpoint=False), "eye": lambda: np.eye(3, 4, 1),
    "identity": lambda: np.identity(3), "tri": lambda: np.tri(3, 4, -1),
}


@pytest.mark.parametrize("name", list(CREATION))
def test_creation_inside_a_trace(name):
    """Creation functions called on tnp inside a trace are traced and equal NumPy's."""
    make = CREATION[name]
    tnp_make = {"zeros": lambda: tnp.zeros((2, 3)), "ones_i32": lambda: tnp.ones(4, np.int32),
                "full": lambda: tnp.full((2,), 7.5, np.float32),
                "arange": lambda: tnp.arange(2, 11, 3),
                "arange_f": lambda: tnp.arange(0.0, 1.0, 0.25),
                "linspace": lambda: tnp.linspace(0, 1, 7),
                "linspace_ne": lambda: tnp.linspace(-1, 2, 4, endpoint=False),
                "eye": lambda: tnp.eye(3, 4, 1), "identity": lambda: tnp.identity(3),
                "tri": lambda: tnp.tri(3, 4, -1)}[name]
    x = np.float64(1.5)
    expected = make() * x
    assert_same(traced(lambda s: tnp_make() * s, x), expected, exact=False, rtol=1e-15)


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
