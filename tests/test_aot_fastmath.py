"""An aot build's object code keeps the jit's fastmath flags (runtime/native_build.py).

pycc compiles the entry point with default flags, not those of its `@njit(...)`: a
`jit(f, fastmath=True)` program's object code used to run without fastmath, computing what
the jit's machine code does not. `x * 0.0 + (x - x)` tells them apart: under fastmath
(no NaNs, no infinities) LLVM folds it to 0.0, so inf and nan give 0.0 instead of nan.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

import transfuse as tx
from transfuse.aot import compile_to, parse_signature

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or sys.platform != "linux",
                                reason="object code is built on Linux, with a C compiler")


def folds_under_fastmath(x):
    return x * 0.0 + (x - x)


def test_object_code_of_a_fastmath_program_keeps_its_flags(tmp_path):
    rng = np.random.default_rng(21)
    x = np.concatenate([[np.inf, -np.inf, np.nan], rng.standard_normal(5)])
    strict = tx.jit(folds_under_fastmath, cache=False)(x)
    assert np.isnan(strict[:3]).all()  # without fastmath: inf * 0.0 is nan
    fast = tx.jit(folds_under_fastmath, fastmath=True)
    want = fast(x)
    np.testing.assert_array_equal(want, np.zeros_like(x))  # the jit's flags fold it away
    built = compile_to(fast, [parse_signature("f64[8]")], tmp_path / "fast")
    loaded = tx.load(built)
    got = loaded(x)
    assert [e.kernel.origin for e in loaded._executables.values()] == ["native"]
    np.testing.assert_array_equal(got, want)
