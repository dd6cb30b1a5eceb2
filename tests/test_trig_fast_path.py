"""The table-free sin, cos and tan for |x| < 2**15 (compiler/mathlib.py SMALL_TRIG): the
same accuracy as the exact functions on their range, including the floats nearest to
multiples of pi/2, exact special values, and `trig_large` marking exactly the finite
inputs at or past the bound (docs/mathlib.md, "The fast path for |x| < 2**15")."""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest
from numba import njit
from transfuse.compiler.math_names import (
    MATH_NAMES,
    OUT_OF_LINE_SUFFIX,
    SMALL_TRIG_NAMES,
    TRIG_LARGE_NAMES,
)
from transfuse.compiler.mathlib import OUT_OF_LINE, SMALL_TRIG, SMALL_TRIG_LIMIT, math_globals
from transfuse.compiler.trig_fast_path import with_trig_fast_path

from tests.test_mathlib import (
    ULP_BOUND,
    neighbours,
    random_floats,
    reference,
    round_exact,
    special_values,
    ulp_distance,
)

DTYPES = ("float32", "float64")
# The floats below 2**15 closest to a multiple of pi/2, relative to their size (a scan of
# the three floats nearest k pi/2 for every k up to 2**15 * 2/pi, in mpmath).
HARDEST = {"float32": [252.89820861816406, 505.7964172363281, 2023.1856689453125],
           "float64": [22743.560015663308, 45.553093477052, 182.212373908208]}


@functools.cache
def small_loop(dtype: str):
    """One compiled loop writing sin, cos, tan and trig_large of x (one compile per dtype)."""
    sin, cos, tan, large = (SMALL_TRIG[(n, dtype)] for n in ("sin", "cos", "tan",
                                                             "trig_large"))

    @njit
    def run(x, out, flags):
        for i in range(x.size):
            v = x[i]
            out[0, i], out[1, i], out[2, i] = sin(v), cos(v), tan(v)
            flags[i] = large(v)
    return run


def evaluate(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out, flags = np.empty((3, x.size), x.dtype), np.empty(x.size, np.bool_)
    small_loop(x.dtype.name)(x, out, flags)
    return out, flags


def inputs(dtype: str) -> np.ndarray:
    """Seeded values on the fast range, its boundary, and the usual special values."""
    rng = np.random.default_rng(7)
    limit = SMALL_TRIG_LIMIT
    ks = np.concatenate([np.arange(1, 64), rng.integers(64, int(limit / (math.pi / 2)), 200)])
    values = [rng.uniform(-limit, limit, 3000), rng.uniform(-4, 4, 1000),
              random_floats(dtype, 1000, seed=8), special_values(dtype),
              neighbours([limit, -limit, 2.0**-12, 2.0**-27], dtype, 3),
              neighbours(ks * (math.pi / 2), dtype, 1)]
    with np.errstate(invalid="ignore"):  # signalling NaNs among the random bit patterns
        x = np.concatenate([np.asarray(v, np.float64) for v in values]).astype(dtype)
    return x[np.isnan(x) | ~(np.abs(x) >= limit) | np.isinf(x)]  # the range they serve


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_trig_matches_the_correctly_rounded_value(dtype):
    x = inputs(dtype)
    got, flags = evaluate(x)
    assert not flags.any()
    for row, name in enumerate(("sin", "cos", "tan")):
        want = reference(name, x)
        assert np.array_equal(np.isnan(got[row]), np.isnan(want)), name
        special = ~np.isfinite(want) | (want == 0)
        assert np.array_equal(got[row][special], want[special], equal_nan=True), name
        assert np.array_equal(np.signbit(got[row][special]), np.signbit(want[special])), name
        finite = ~special
        worst = ulp_distance(got[row][finite], want[finite]).max()
        assert worst <= ULP_BOUND[dtype][name], (name, worst)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_trig_hardest_reductions_against_mpmath(dtype):
    x = np.array(HARDEST[dtype] + [-v for v in HARDEST[dtype]], dtype=dtype)
    got, _ = evaluate(x)
    with mpmath.workprec(400):
        for row, name in enumerate(("sin", "cos", "tan")):
            want = np.array([round_exact(getattr(mpmath, name)(mpmath.mpf(float(v))), dtype)
                             for v in x], dtype=dtype)
            assert ulp_distance(got[row], want).max() <= 1, name


@pytest.mark.parametrize("dtype", DTYPES)
def test_trig_large_marks_finite_values_at_or_past_the_bound(dtype):
    info = np.finfo(dtype)
    limit = np.asarray(SMALL_TRIG_LIMIT, dtype)
    below = np.nextafter(limit, np.asarray(0, dtype))
    x = np.array([limit, -limit, below, -below, info.max, -info.max, np.inf, -np.inf, np.nan,
                  0.0, -0.0, info.smallest_subnormal, 1e30 if dtype == "float64" else 3e38],
                 dtype=dtype)
    _, flags = evaluate(x)
    assert flags.tolist() == [True, True, False, False, True, True, False, False, False,
                              False, False, False, True]


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_trig_loop_vectorises_without_table_loads(dtype):
    """The loop is SIMD at the CPU's width for the float type, and its only scalar load is
    the remainder loop's x[i]: no table lookups, so no gathered loads (the exact functions'
    reduction loads three (float32) or seven (float64) table pieces per lane)."""
    evaluate(np.ones(16, dtype))
    run = small_loop(dtype)
    llvm = run.inspect_llvm(run.signatures[0])
    kernel = llvm[llvm.index("define"):]
    kernel = kernel[:kernel.index("\n}\n")]
    ty = "float" if dtype == "float32" else "double"
    assert re.search(r"= load <\d+ x %s>" % ty, kernel), "x is not loaded as a vector"
    assert re.findall(r"= load (\w+),", kernel) == [ty]


def test_names_known_without_numba_match_mathlib():
    assert {k: fn.__name__ for k, fn in SMALL_TRIG.items() if k[0] != "trig_large"} == \
        SMALL_TRIG_NAMES
    assert {d: SMALL_TRIG[("trig_large", d)].__name__ for d in DTYPES} == TRIG_LARGE_NAMES
    assert set(OUT_OF_LINE) == {n + OUT_OF_LINE_SUFFIX for n in MATH_NAMES.values()}
    assert set(SMALL_TRIG_NAMES.values()) | set(OUT_OF_LINE) <= set(math_globals())


def _rewrite(source: str) -> tuple[list[str], set[str]]:
    used: set[str] = set()

    def use(name: str) -> str:
        used.add(name)
        return name
    return with_trig_fast_path(source.splitlines(), use), used


PURE = """\
    for i0 in range(64):
        t3 = b1[i0, 0]
        for i1 in range(1024):
            t1 = a0[i0, i1]
            t2 = tf_sin_f64(t1 + t3)  # sin
            t4 = tf_exp_f64(t2)  # exp
            b2[i0, i1] = t4"""


def test_rewrite_blocks_a_pure_innermost_loop():
    lines, used = _rewrite(PURE)
    text = "\n".join(lines)
    assert lines[:2] == PURE.splitlines()[:2]  # the outer loop and its hoisted load stay
    assert "for tfb0 in range((1024 + 1023) // 1024):" in text
    assert "tfl0 |= tf_trig_large_f64(t1 + t3)" in text
    assert "t2 = tf_sin_small_f64(t1 + t3)" in text
    # the rerun calls every mathlib function out of line, sin the exact one
    assert "t2 = tf_sin_f64_call(t1 + t3)" in text and "t4 = tf_exp_f64_call(t2)" in text
    assert text.count("b2[i0, i1] = t4") == 2
    assert used == {"tf_trig_large_f64", "tf_sin_small_f64", "tf_sin_f64_call",
                    "tf_exp_f64_call"}


@pytest.mark.parametrize("source", [
    PURE.replace("tf_sin_f64", "tf_tanh_f64"),  # no trig call: nothing to gain
    PURE.replace("t4 = tf_exp_f64(t2)", "t3 = t3 + tf_exp_f64(t2)"),  # state carried over
    PURE.replace("t1 = a0[i0, i1]", "t1 = b2[i0, i1 - 1]"),  # reads what it writes
    PURE.replace("b2[i0, i1] = t4", "if t4 > 0:\n                b2[i0, i1] = t4"),
], ids=["no-trig", "carried", "reads-output", "branch"])
def test_rewrite_leaves_loops_it_cannot_redo(source):
    assert _rewrite(source)[0] == source.splitlines()


PORTABLE_PROBE = """
from transfuse.compiler import mathlib
from tests import test_trig_fast_path as t
assert not mathlib.HAS_FMA
t.test_small_trig_matches_the_correctly_rounded_value("float32")
t.test_small_trig_hardest_reductions_against_mpmath("float32")
print("ok")
"""


def test_small_trig_without_fma():
    """On a CPU without FMA, float32 takes the float64 reduction (an FMA would be a libm
    call per lane there): the same checks, compiled in a process whose target lacks FMA."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten().replace("+fma", "-fma")
    env = dict(os.environ, NUMBA_CPU_FEATURES=features)
    out = subprocess.run([sys.executable, "-c", PORTABLE_PROBE], env=env, capture_output=True,
                         text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0 and out.stdout.split()[-1] == "ok", out.stderr[-3000:]


def _blocks_with_large_arguments(dtype: str, n: int = 150_000) -> np.ndarray:
    """Seeded values on [-4, 4], with the values where the fast path ends, huge ones and
    the special values all placed in the second block of 1024 (the others stay fast)."""
    x = np.random.default_rng(9).uniform(-4, 4, n).astype(dtype)
    info = np.finfo(dtype)
    limit = np.asarray(SMALL_TRIG_LIMIT, dtype)
    odd = [limit, -limit, np.nextafter(limit, np.asarray(0, dtype)), 1e5, -3e7, info.max,
           np.inf, -np.inf, np.nan, -0.0, info.smallest_subnormal, 2.0**-30]
    x[1100:1100 + len(odd)] = np.array(odd, dtype)
    return x


def _sin_cos_tan(x32, x64):
    return np.sin(x32) * np.float32(2.0) + np.cos(x32), np.tan(x64)


def test_jit_redoes_only_blocks_with_large_arguments():
    """Under jit the loop uses the fast functions and redoes the block holding the large
    arguments with the exact ones: every value is within a few ulp of the float64
    (float32) or mpmath-accurate (float64: glibc's tan reduces exactly) answer, huge
    arguments included, where the fast functions alone are far off."""
    import transfuse as tx

    x32, x64 = _blocks_with_large_arguments("float32"), _blocks_with_large_arguments("float64")
    f = tx.jit(_sin_cos_tan)
    source = f.lower(x32, x64).source
    assert "tf_sin_small_f32(" in source and "tf_tan_small_f64(" in source
    assert "tf_sin_f32_call(" in source and "tf_trig_large_f64(" in source
    got32, got64 = f(x32, x64)
    with np.errstate(invalid="ignore"):
        wide = x32.astype(np.float64)
        want32 = (np.sin(wide) * 2 + np.cos(wide)).astype(np.float32)
        want64 = np.tan(x64)
    np.testing.assert_allclose(got32, want32, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got64, want64, rtol=1e-14, atol=0)
    assert got64[1109] == 0 and np.signbit(got64[1109])  # tan(-0.0) = -0.0
    fast_alone = evaluate(x64[1100:1112])[0][2]
    assert not np.allclose(fast_alone[5], want64[1105])  # tan(max) without the redo


def test_jit_keeps_exact_functions_where_a_block_cannot_be_redone():
    """A region writing over its input (here sin after a matrix product, in place) cannot
    reread it: it keeps the exact functions, and large arguments still come out right."""
    import transfuse as tx

    rng = np.random.default_rng(10)  # integers: the product is exact in float32
    a = rng.integers(-50, 51, (8, 100)).astype(np.float32)
    w = rng.integers(-50, 51, (100, 300)).astype(np.float32)
    a[3] *= 4  # a row of products up to 10**6

    def f(a, w):
        return np.sin(a @ w + np.float32(1.0))

    jitted = tx.jit(f)
    source = jitted.lower(a, w).source
    assert "written in place" in source and "_small" not in source
    product = a.astype(np.float64) @ w.astype(np.float64)
    got = jitted(a, w)
    assert np.abs(product).max() > SMALL_TRIG_LIMIT
    np.testing.assert_allclose(got, np.sin(product + 1), rtol=1e-6, atol=1e-6)
