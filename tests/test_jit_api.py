"""jit's API: decorator forms, static arguments, options, errors, pytrees, nesting."""

from __future__ import annotations

import numpy as np
import pytest

import transfuse as tx
import transfuse.numpy as tnp
from tests.helpers import rand


def test_decorator_forms_and_static_arguments():
    @tx.jit
    def plain(x):
        return x * 2

    @tx.jit(static_argnums=1)
    def repeat(x, n):
        return sum(x * k for k in range(n))

    @tx.jit(static_argnames="mode")
    def choose(x, mode="sin"):
        return np.sin(x) if mode == "sin" else np.cos(x)

    x = np.linspace(0, 1, 5)
    np.testing.assert_allclose(plain(x), x * 2)
    np.testing.assert_allclose(repeat(x, 3), x * 3)
    np.testing.assert_allclose(repeat(x, -1), 0 * x)
    np.testing.assert_allclose(choose(x, mode="cos"), np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(choose(x), np.sin(x), rtol=1e-12)
    assert plain.__name__ == "plain" and "lower" in dir(plain)


def test_jit_of_transforms_and_transforms_of_jit_agree():
    rng = np.random.default_rng(0)
    w, x = rand(rng, (3, 4), "float64"), rand(rng, (5, 3), "float64")

    def loss(w, x):
        return np.sum(np.tanh(x @ w) ** 2)

    expected = tx.vmap(tx.grad(loss), in_dims=(None, 0))(w, x[:, None])
    np.testing.assert_allclose(tx.jit(tx.vmap(tx.grad(loss), in_dims=(None, 0)))(w, x[:, None]),
                               expected, rtol=1e-10)
    np.testing.assert_allclose(tx.vmap(tx.grad(tx.jit(loss)), in_dims=(None, 0))(w, x[:, None]),
                               expected, rtol=1e-10)
    np.testing.assert_allclose(tx.jit(tx.jit(loss))(w, x), loss(w, x), rtol=1e-12)


def test_closures_over_outer_traced_values_inline_into_the_trace():
    x = np.linspace(-1, 1, 4)

    def outer(a):
        inner = tx.jit(lambda b: np.sum(a * np.sin(b)))
        return tx.grad(inner)(a)

    np.testing.assert_allclose(tx.jit(outer)(x), x * np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(outer(x), x * np.cos(x), rtol=1e-12)


def test_outputs_keep_shapes_dtypes_and_structure():
    f = tx.jit(lambda x, i, b: {"s": x.sum(), "i": i * 2, "b": ~b, "none": None,
                                "empty": x[:0], "scalar": 3})
    x = np.arange(4, dtype=np.float32)
    out = f(x, np.arange(3, dtype=np.int32), np.array([True, False]))
    assert isinstance(out["s"], np.ndarray) and out["s"].shape == () and out["s"] == 6
    assert out["i"].dtype == np.int32 and out["b"].tolist() == [False, True]
    assert out["none"] is None and out["empty"].shape == (0,)
    assert int(out["scalar"]) == 3


def test_numpy_scalars_and_non_contiguous_arrays_are_accepted():
    f = tx.jit(lambda x, y: x * y)
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(f(x.T, np.float64(2.0)), x.T * 2)
    np.testing.assert_allclose(f(x[::2], np.float64(3.0)), x[::2] * 3)
    g = tx.jit(lambda a: a * 2)
    g(x)
    g(x)  # the fast path is armed for float64 arrays of this shape
    # a big-endian array is converted to native order on entry, never misread
    np.testing.assert_array_equal(g(x.astype(">f8")), x * 2)


def test_fastmath_and_unfused_options_give_the_same_numbers():
    x = rand(np.random.default_rng(1), (300, 70), "float32")

    def f(a):
        return np.exp(a - a.max(1, keepdims=True)).sum(1)

    reference = f(x)
    for options in ({"fastmath": True}, {"fuse": False}):
        np.testing.assert_allclose(tx.jit(f, **options)(x), reference, rtol=1e-5)
    assert "fastmath=True" in tx.jit(f, fastmath=True).lower(x).source


def test_errors_are_transfuse_errors_with_clear_messages():
    assert callable(tx.jit(lambda x: x, device="cuda"))  # the CUDA path: tests/test_cuda.py
    with pytest.raises(tx.TransfuseValueError, match="device"):
        tx.jit(lambda x: x, device="tpu")
    with pytest.raises(tx.TransfuseTypeError, match="callable"):
        tx.jit(3)
    with pytest.raises(tx.TransfuseValueError, match="static_argnums"):
        tx.jit(lambda x: x, static_argnums=3)(np.ones(2))
    with pytest.raises(tx.ConcretizationError, match="where"):
        tx.jit(lambda x: x if x.sum() > 0 else -x)(np.ones(2))
    with pytest.raises(tx.ShapeError):
        tx.jit(lambda x, y: x + y)(np.ones(2), np.ones(3))


def test_random_numbers_differ_per_call_and_repeat_with_a_seed():
    f = tx.jit(lambda x: x + tnp.random.uniform(size=x.shape))
    x = np.zeros(5)
    tx.random.seed(3)
    a, b = f(x), f(x)
    tx.random.seed(3)
    np.testing.assert_array_equal(f(x), a)
    assert not np.array_equal(a, b)
    assert ((0 <= a) & (a < 1)).all()


def test_methods_can_be_jitted():
    class Model:
        def __init__(self):
            self.scale = 2.0

        @tx.jit
        def forward(self, x):
            return x * 3

    np.testing.assert_allclose(Model().forward(np.ones(2)), [3.0, 3.0])


def test_lower_shows_the_graph_the_regions_and_the_source_without_compiling():
    f = tx.jit(lambda x: np.tanh(x) + 1)
    lowered = f.lower(np.ones(3, np.float32))
    assert f.cache_info().compiles == 0
    text = str(lowered)
    for part in ("graph", "fused graph", "generated source", "def entry", "tanh"):
        assert part in text
