"""What the differential fuzzer found (tests/fuzz), each as its minimal reproducer.

1. A single-operand np.einsum that sums nothing ('ij->ji', 'i->i') returned a copy; NumPy
   returns a writable view, so a write into the result must reach the operand. Fixed in
   transfuse/numpy/_functions.py (einsum returns transpose's view).
2. `a[i] *= 1.5` on an integer array raises DTypeError; NumPy computes it through the
   scalar a[i] (a NumPy scalar rebinds to float64) and stores it back with a cast. Open:
   traced values do not know they stand for NumPy scalars (ir/tracing.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import transfuse as tx
from tests.helpers import assert_same, traced

# ---------------------------------------------------------------------------------------
# 1. einsum without a summation is a view


def write_through_einsum(x):
    v = np.einsum("ij->ji", x)
    v[0] = 7.0
    w = np.einsum("ij->ij", x)
    w[1, 2] += 1.0
    return x * 1.0


@pytest.mark.parametrize("run", ["traced", "jit", "functionalize", "vmap"])
def test_einsum_permutation_is_a_view(run):
    x = np.arange(6.0).reshape(2, 3)
    expected = write_through_einsum(x.copy())
    if run == "traced":
        got = traced(write_through_einsum, x.copy())
    elif run == "jit":
        got = tx.jit(write_through_einsum)(x.copy())
    elif run == "functionalize":
        got = tx.functionalize(write_through_einsum)(x.copy())
    else:
        got = tx.vmap(write_through_einsum)(np.stack([x, x + 1]))[1]
        expected = write_through_einsum(x + 1)
    assert_same(got, expected)


def test_einsum_view_writes_back_into_an_argument():
    def fill_transposed(x):
        np.einsum("i->i", x).fill(0.5)
        return np.cos(x)

    x, y = np.arange(3.0), np.arange(3.0)
    out = tx.functionalize(fill_transposed)(x)
    assert_same(out, fill_transposed(y))
    assert_same(x, y)  # the caller's array was written through the view


def test_einsum_permutation_still_differentiates():
    x = np.arange(6.0).reshape(2, 3)
    g = tx.grad(lambda v: np.sum(np.einsum("ij->ji", v) * np.arange(6.0).reshape(3, 2)))(x)
    assert_same(g, np.arange(6.0).reshape(3, 2).T)


# ---------------------------------------------------------------------------------------
# 2. op= on one element of an integer array with a float operand


@pytest.mark.xfail(strict=True, reason="fuzzer finding 2: `a[i] *= 1.5` on an int array "
                   "raises DTypeError; NumPy goes through the scalar a[i] (rebinding it to "
                   "float64) and casts on the store. Traced values do not know they stand "
                   "for NumPy scalars (ir/tracing.py)")
def test_inplace_float_op_on_one_integer_element():
    def scale_one(x):
        y = x.copy()
        y[1] *= -1.25
        return y

    x = np.arange(4)
    assert_same(traced(scale_one, x), scale_one(x))  # [0, -1, 2, 3]
