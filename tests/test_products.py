"""NumPy 2's vector and matrix products beyond the catalogue (tests/opinfo.py has each of
np.vecdot, np.matvec, np.vecmat and np.linalg's vecdot, outer, tensordot, matmul, diagonal,
trace, matrix_transpose under every transform): NumPy's gufunc errors, the view that
matrix_transpose returns, and the tnp names."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.ir.errors import TransfuseError

import transfuse as tx
import transfuse.numpy as tnp
from tests.helpers import primitives_of, traced

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("call,match", [
    (lambda a: np.vecdot(a, a[:, :1].T), r"vecdot: Input operand 1 has a mismatch in its core "
                                         r"dimension 0.*\(size 3 is different from 4\)"),
    (lambda a: np.vecdot(a, a[0, 0]), "vecdot: Input operand 1 does not have enough"),
    (lambda a: np.matvec(a[0], a[0]), "matvec: Input operand 0 does not have enough"),
    (lambda a: np.matvec(a, a[:, 0]), r"matvec: .*\(size 3 is different from 4\)"),
    (lambda a: np.vecmat(a[0], a), r"vecmat: .*\(size 3 is different from 4\)"),
    (lambda a: np.linalg.outer(a, a[0]), "must be one-dimensional, but they are x1.ndim=2"),
    (lambda a: np.matrix_transpose(a[0]), "at least 2-dimensional, but it is 1"),
])
def test_numpy_errors(call, match):
    a = RNG.standard_normal((3, 4))
    with pytest.raises(ValueError):
        call(a)  # NumPy raises too
    with pytest.raises(ValueError, match=match) as info:
        tx.make_graph(call)(a)
    assert isinstance(info.value, TransfuseError)


def write_through(x):
    np.matrix_transpose(x)[..., 0] = 0.0  # a view, as NumPy's
    return x


def test_matrix_transpose_is_a_view_and_matvec_one_dot_general():
    x = RNG.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(traced(write_through, x.copy()), write_through(x.copy()))
    graph = tx.make_graph(np.matvec)(x, RNG.standard_normal(4))
    assert "dot_general" in primitives_of(graph)
    z = x + 1j * RNG.standard_normal(x.shape)
    np.testing.assert_allclose(traced(np.vecdot, z, z[0]), np.vecdot(z, z[0]), rtol=1e-13)


def test_tnp_names():
    a, v = RNG.standard_normal((3, 4)), RNG.standard_normal(4)
    for name in ("vecdot", "matvec", "matrix_transpose"):
        assert callable(getattr(tnp, name))
    for name in ("vecdot", "outer", "tensordot", "matmul", "diagonal", "trace",
                 "matrix_transpose"):
        assert callable(getattr(tnp.linalg, name))
    np.testing.assert_array_equal(tnp.linalg.vecdot(a, v), np.linalg.vecdot(a, v))
    got = traced(lambda x, y: tnp.linalg.vecdot(x, y[:, None], axis=0), a, v[:3])
    np.testing.assert_allclose(got, np.linalg.vecdot(a, v[:3, None], axis=0), rtol=1e-13)
