"""Errors name what was wrong and the user's line (issue #12 item 7, issue #13).

Each case asserts the transfuse error class, the built-in it subclasses, the key words of
the message, and that the message points at the offending line of this file (marked with
a `# <- name` comment). Cases that used to be rejected wrongly (big-endian arrays, Conv2d
with mixed dtypes) check the result instead.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.special
from numpy.exceptions import AxisError
from transfuse.ir.errors import TransfuseIndexError

import transfuse as tx
from transfuse import nn
from transfuse.nn import functional as F

_FILE = os.path.basename(__file__)


def _line(marker: str) -> int:
    """The line of this file that carries the comment `# <- marker`."""
    with open(__file__) as source:
        lines = source.read().splitlines()
    hits = [k + 1 for k, text in enumerate(lines) if text.rstrip().endswith(f"# <- {marker}")]
    assert len(hits) == 1, f"marker {marker!r} must be on exactly one line"
    return hits[0]


def _raises(classes: tuple, marker: str, run, *words: str) -> str:
    """run() raises an instance of every class in `classes`, at the marked line, with words."""
    with pytest.raises(classes[0]) as info:
        run()
    error = info.value
    for cls in classes:
        assert isinstance(error, cls), f"{type(error).__mro__} is not a {cls}"
    message = str(error)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert f"{_FILE}:{_line(marker)}" in message, message
    return message


# ---------------------------------------------------------------------------------------
# 1. Axis errors under vmap: the axis, the rank the user sees (not the batched one), the line

AXIS_CASES = {
    "sum": (lambda x: np.sum(x, axis=3), "axis 3", "dimension 1"),  # <- sum
    "mean_neg": (lambda x: np.mean(x, axis=-3), "axis -3", "dimension 1"),  # <- mean_neg
    # axis 1 exists in the batched (4, 2) array, but not in the (2,) row the user sees
    "max_batched_rank": (lambda x: x.max(axis=1), "axis 1", "dimension 1"),  # <- max_batched_rank
    "cumsum": (lambda x: np.cumsum(x, axis=1), "axis 1", "dimension 1"),  # <- cumsum
    "argmax": (lambda x: np.argmax(x, axis=1), "axis 1", "dimension 1"),  # <- argmax
    "take": (lambda x: np.take(x, 0, axis=1), "axis 1", "dimension 1"),  # <- take
    "expand_dims": (lambda x: np.expand_dims(x, 3), "axis 3", "dimension 2"),  # <- expand_dims
    "moveaxis": (lambda x: np.moveaxis(x, 1, 0), "axis 1", "dimension 1"),  # <- moveaxis
    "swapaxes": (lambda x: np.swapaxes(x, 0, 1), "axis 1", "dimension 1"),  # <- swapaxes
    "squeeze": (lambda x: np.squeeze(x, 1), "axis 1", "dimension 1"),  # <- squeeze
    "flip": (lambda x: np.flip(x, 1), "axis 1", "dimension 1"),  # <- flip
    "concatenate": (lambda x: np.concatenate([x, x], axis=1), "axis 1",  # <- concatenate
                    "dimension 1"),
    "stack": (lambda x: np.stack([x, x], axis=2), "axis 2", "dimension 2"),  # <- stack
}


@pytest.mark.parametrize("name", sorted(AXIS_CASES))
def test_axis_error_under_vmap_names_axis_user_rank_and_line(name):
    fn, *words = AXIS_CASES[name]
    _raises((tx.TransfuseError, AxisError, ValueError, IndexError), name,
            lambda: tx.vmap(fn)(np.ones((4, 2))), *words)


def _sum_axis_2(x):
    return np.sum(x, axis=2)  # <- sum_axis_2


@pytest.mark.parametrize("transform", [tx.grad, tx.jit], ids=["grad", "jit"])
def test_axis_error_under_grad_and_jit_names_the_line(transform):
    _raises((tx.TransfuseError, AxisError), "sum_axis_2",
            lambda: transform(_sum_axis_2)(np.ones(3)), "axis 2", "dimension 1")


def test_duplicate_axis_is_a_transfuse_value_error():
    _raises((tx.TransfuseValueError, ValueError), "dup_axis",
            lambda: tx.vmap(lambda x: np.sum(x, axis=(0, 0)))(np.ones((4, 2, 3))),  # <- dup_axis
            "duplicate", "axis")


SHAPE_ARGUMENT_CASES = {
    "transpose_axes": (lambda x: np.transpose(x, (0, 0)), "axes don't match"),  # <- transpose_axes
    "squeeze_size": (lambda x: np.squeeze(x, 0), "squeeze"),  # <- squeeze_size
    "split_unequal": (lambda x: np.split(x, 3, axis=1), "equal division"),  # <- split_unequal
    "take_mode": (lambda x: np.take(x, 0, mode="nope"), "clipmode"),  # <- take_mode
}


@pytest.mark.parametrize("name", sorted(SHAPE_ARGUMENT_CASES))
def test_bad_shape_arguments_are_transfuse_value_errors_at_the_line(name):
    fn, word = SHAPE_ARGUMENT_CASES[name]
    _raises((tx.TransfuseValueError, ValueError), name,
            lambda: tx.vmap(fn)(np.ones((4, 2, 2))), word)


# ---------------------------------------------------------------------------------------
# 2. Out-of-range traced indices raise (never read out of bounds), eagerly and under jit

def _pick(x, i):
    return x[i]  # <- pick


def _pick2(x, i, j):
    return x[i, j]  # <- pick2


def _put(x, i):
    y = x.copy()
    y[i] = 7.0  # <- put
    return y


def _grad_of_pick(x, i):
    return tx.grad(lambda v, k: _pick(v, k) * 2.0)(x, i)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("index", [5, 10, -6, -10])
def test_traced_index_out_of_range_raises(mode, index):
    x = np.arange(5.0)
    run = tx.jit(_pick) if mode == "jit" else tx.functionalize(_pick)
    _raises((TransfuseIndexError, tx.TransfuseError, IndexError), "pick",
            lambda: run(x, np.int64(index)), "out of bounds", "traced index")
    assert run(x, np.int64(-5)) == 0.0 and run(x, np.int64(4)) == 4.0


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_traced_index_out_of_range_on_one_of_two_axes_raises(mode):
    # the flat index 0 * 4 + 5 is in range of the 12 elements: it used to read x[1, 1]
    x = np.arange(12.0).reshape(3, 4)
    run = tx.jit(_pick2) if mode == "jit" else tx.functionalize(_pick2)
    _raises((TransfuseIndexError, IndexError), "pick2",
            lambda: run(x, np.int64(0), np.int64(5)), "out of bounds")
    assert run(x, np.int64(2), np.int64(-1)) == 11.0


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_traced_index_out_of_range_in_a_write_raises(mode):
    run = tx.jit(_put) if mode == "jit" else tx.functionalize(_put)
    _raises((TransfuseIndexError, IndexError), "put",
            lambda: run(np.zeros(5), np.int64(-7)), "out of bounds")


def test_traced_index_out_of_range_under_grad_raises():
    _raises((TransfuseIndexError, IndexError), "pick",
            lambda: _grad_of_pick(np.arange(5.0), np.int64(8)), "out of bounds")


def test_traced_index_out_of_range_under_vmap_raises():
    x = np.arange(5.0)
    _raises((TransfuseIndexError, IndexError), "pick",
            lambda: tx.vmap(_pick, in_dims=(None, 0))(x, np.array([1, 9])), "out of bounds")


def test_jit_fast_path_raises_the_same_error():
    run = tx.jit(_pick)
    x = np.arange(5.0)
    assert run(x, np.int64(1)) == 1.0
    assert run(x, np.int64(2)) == 2.0  # the fast path is armed now
    _raises((TransfuseIndexError, IndexError), "pick", lambda: run(x, np.int64(10)),
            "out of bounds")


def test_aot_build_raises_the_same_error_and_takes_big_endian_arrays(tmp_path):
    from transfuse.ir.core import Aval

    from transfuse.aot import compile_to

    compile_to(_pick, [[Aval((5,), np.dtype(np.float64)), Aval((), np.dtype(np.int64))]],
               tmp_path / "pick")
    loaded = tx.load(tmp_path / "pick")
    x = np.arange(5.0)
    _raises((TransfuseIndexError, IndexError), "pick", lambda: loaded(x, np.int64(-6)),
            "out of bounds")
    assert loaded(x.astype(">f8"), np.int64(-1)) == 4.0


def test_constant_index_out_of_range_names_the_line():
    def f(x):
        return x[10]  # <- const_index

    _raises((TransfuseIndexError, IndexError), "const_index",
            lambda: tx.jit(f)(np.arange(5.0)), "index 10", "size 5")


# ---------------------------------------------------------------------------------------
# 3. Bad argnums

def _f2(x, y):
    return np.sum(x * y)


BAD_ARGNUMS_TYPE = {
    "grad_float": lambda: tx.grad(_f2, argnums=1.0),  # <- grad_float
    "grad_str": lambda: tx.grad(_f2, argnums="a"),  # <- grad_str
    "grad_bool": lambda: tx.grad(_f2, argnums=True),  # <- grad_bool
    "grad_and_value_list_of_floats": lambda: tx.grad_and_value(  # <- grad_and_value_list_of_floats
        _f2, argnums=[0.0]),
    "jacrev_float": lambda: tx.jacrev(_f2, argnums=1.0),  # <- jacrev_float
    "jacfwd_float": lambda: tx.jacfwd(_f2, argnums=1.0),  # <- jacfwd_float
    "hessian_float": lambda: tx.hessian(_f2, argnums=1.0),  # <- hessian_float
    "grad_empty": lambda: tx.grad(_f2, argnums=()),  # <- grad_empty
}


@pytest.mark.parametrize("name", sorted(BAD_ARGNUMS_TYPE))
def test_argnums_of_the_wrong_type_is_a_type_error_at_the_line(name):
    _raises((tx.TransfuseTypeError, TypeError), name, BAD_ARGNUMS_TYPE[name],
            "argnums must be an int or a", "tuple of ints")


@pytest.mark.parametrize("argnums", [2, -3, (0, 5)], ids=str)
def test_argnums_out_of_range_names_the_call(argnums):
    x = np.ones(3)
    _raises((tx.TransfuseValueError, ValueError), "grad_range",
            lambda: tx.grad(_f2, argnums=argnums)(x, x),  # <- grad_range
            "out of range", "2 positional")
    _raises((tx.TransfuseValueError, ValueError), "jacrev_range",
            lambda: tx.jacrev(_f2, argnums=argnums)(x, x),  # <- jacrev_range
            "out of range")


def test_repeated_argnums_for_jacfwd_names_the_call():
    x = np.ones(3)
    _raises((tx.TransfuseValueError, ValueError), "jacfwd_dup",
            lambda: tx.jacfwd(_f2, argnums=(0, 0))(x, x), "repeats")  # <- jacfwd_dup


# ---------------------------------------------------------------------------------------
# 4. Big-endian arrays are accepted (converted to native byte order on entry, as JAX does)

def test_big_endian_arrays_work_in_eager_transforms():
    x = np.arange(3.0)
    big = x.astype(">f8")
    np.testing.assert_array_equal(tx.grad(lambda v: np.sum(v * v))(big), 2 * x)
    np.testing.assert_array_equal(tx.vmap(lambda v: v * 2)(big), 2 * x)
    out, tangent = tx.jvp(lambda v: np.sin(v), (big,), (np.ones(3, ">f8"),))
    np.testing.assert_allclose(out, np.sin(x))
    np.testing.assert_allclose(tangent, np.cos(x))


def test_big_endian_arrays_work_under_jit_and_share_the_native_signature():
    f = tx.jit(lambda v, w: v * 2 + w)
    x = np.arange(4.0)
    np.testing.assert_array_equal(f(x, x), 3 * x)
    big = (x + 1).astype(">f8")
    np.testing.assert_array_equal(f(big, x), 2 * (x + 1) + x)
    np.testing.assert_array_equal(f(x, big), 2 * x + x + 1)
    np.testing.assert_array_equal(f(x, x), 3 * x)  # the fast path still reads native arrays
    assert f.cache_info().signatures == 1
    small = np.arange(3, dtype=">i4")
    np.testing.assert_array_equal(tx.jit(lambda v: v + 1)(small), np.arange(1, 4))


# ---------------------------------------------------------------------------------------
# 5. Conv2d promotes mixed dtypes as NumPy (and nn.Linear) do

def test_conv2d_promotes_a_float64_input_with_float32_weights():
    conv = nn.Conv2d(2, 3, 3, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    out = conv(x)
    assert out.dtype == np.float64
    w64, b64 = conv.weight.astype(np.float64), conv.bias.astype(np.float64)
    np.testing.assert_allclose(out, F.conv2d(x, w64, b64), rtol=1e-12)
    linear = nn.Linear(5, 2, dtype=np.float32)
    assert linear(x).dtype == out.dtype  # the same rule as Linear
    jitted = tx.jit(lambda v: conv(v))(x)
    assert jitted.dtype == np.float64
    np.testing.assert_allclose(jitted, out, rtol=1e-12)
    assert F.conv2d(x.astype(np.float32), w64).dtype == np.float64


# ---------------------------------------------------------------------------------------
# 6. Unsupported functions: one wording, the name the user typed

def _no_rule_message(marker, fn, x=None):
    x = np.eye(3) if x is None else x
    message = _raises((tx.UnsupportedError, tx.TransfuseTypeError, TypeError), marker,
                      lambda: tx.make_graph(fn)(x), "has no transfuse rule yet")
    assert "is not supported by transfuse" not in message
    return message


UNSUPPORTED = {
    "numpy.linalg.eig": lambda x: np.linalg.eig(x),  # <- numpy.linalg.eig
    "numpy.unwrap": lambda x: np.unwrap(x),  # <- numpy.unwrap
    "scipy.special.gamma": lambda x: scipy.special.gamma(x),  # <- scipy.special.gamma
    "numpy.spacing": lambda x: np.spacing(x),  # <- numpy.spacing
    "numpy.sort_complex": lambda x: np.sort_complex(x),  # <- numpy.sort_complex
    "numpy.add.reduceat": lambda x: np.add.reduceat(x, [0, 1]),  # <- numpy.add.reduceat
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_function_is_named_as_the_user_typed_it(name):
    message = _no_rule_message(name, UNSUPPORTED[name])
    assert message.startswith(f"{name} has no transfuse rule yet"), message
