"""compiler/mathlib.py: accuracy against the correctly rounded value over the whole float
range, exact special values, and LLVM vectorisation of loops calling the functions.

The reference is the exact value rounded once to the argument's dtype, not NumPy's answer:
NumPy's float32 (and on AVX-512 its float64) ufuncs run SIMD code chosen by the CPU that is
itself a few ulp off, so a comparison with them would pass on one machine and fail on
another (tan(np.float32(1.5865479)) is -63.480667 correctly rounded, -63.48068 from NumPy
on AVX-512). float64: mpmath at 120 bits, rounded to nearest. float32: the float64 value
(NumPy, scipy.special) rounded to float32, which is the correctly rounded float32 unless the
float64 value lies within a few float64 ulp of a float32 rounding boundary; those few inputs
are recomputed with mpmath. Special inputs (NaN, +-inf, +-0) take NumPy's float64 result:
IEEE fixes those exactly on every machine."""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import scipy.special
from numba import njit
from transfuse.compiler.mathlib import MATH_FUNCTIONS, PRIMITIVES, math_globals

DTYPES = ("float32", "float64")
UNARY = tuple(p for p in PRIMITIVES if p != "pow")


def in_float64(name: str, *args: np.ndarray) -> np.ndarray:
    """name(*args) computed in float64 by NumPy (scipy.special for erf and logistic): the
    first step of the float32 reference (see above) and the source of special values."""
    fn = {"logistic": scipy.special.expit, "erf": scipy.special.erf, "pow": np.power}.get(
        name) or getattr(np, name)
    with np.errstate(all="ignore"):
        return np.asarray(fn(*(np.asarray(a, np.float64) for a in args)), np.float64)


def _mp_pow(x, y):
    if x > 0:
        return mpmath.power(x, y)
    if y != int(y):
        return mpmath.nan  # a negative base to a non-integer power
    return (-1) ** int(y % 2) * mpmath.power(-x, y)


EXACT = {
    "exp": mpmath.exp, "expm1": mpmath.expm1, "log": mpmath.log, "log1p": mpmath.log1p,
    "tanh": mpmath.tanh, "logistic": lambda x: 1 / (1 + mpmath.exp(-x)), "sin": mpmath.sin,
    "cos": mpmath.cos, "tan": mpmath.tan, "erf": mpmath.erf, "sinh": mpmath.sinh,
    "cosh": mpmath.cosh, "arctan": mpmath.atan, "pow": _mp_pow,
}
# Largest ulp distance from the reference, as measured and documented in docs/mathlib.md.
ULP_BOUND = {
    "float32": {"exp": 3, "expm1": 2, "log": 3, "log1p": 2, "tanh": 2, "logistic": 3,
                "sin": 2, "cos": 2, "tan": 2, "erf": 2, "sinh": 2, "cosh": 2, "arctan": 2,
                "pow": 1},
    "float64": {"exp": 1, "expm1": 2, "log": 1, "log1p": 2, "tanh": 2, "logistic": 3,
                "sin": 1, "cos": 1, "tan": 3, "erf": 3, "sinh": 2, "cosh": 2, "arctan": 2,
                "pow": 2},
}


@functools.cache
def elementwise(name: str, dtype: str):
    """An @njit loop applying the mathlib function to arrays (compiled once per test run)."""
    fn = MATH_FUNCTIONS[(name, dtype)]
    if name == "pow":
        @njit
        def binary_loop(x, y, out):
            for i in range(x.size):
                out[i] = fn(x[i], y[i])
        return binary_loop

    @njit
    def unary_loop(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])
    return unary_loop


def evaluate(name: str, dtype: str, *args: np.ndarray) -> np.ndarray:
    """The mathlib function applied elementwise to args, in a compiled loop."""
    out = np.empty_like(args[0])
    elementwise(name, dtype)(*args, out)
    return out


def round_exact(v, dtype: str) -> float:
    """An mpmath value rounded to nearest (ties to even) in dtype, subnormals and overflow
    included; NaN for a complex value (outside the function's real domain)."""
    if not isinstance(v, mpmath.mpf) or mpmath.isnan(v):
        return math.nan
    if mpmath.isinf(v) or v == 0:
        return float(v)
    digits, emin, emax = (24, -149, 128) if dtype == "float32" else (53, -1074, 1024)
    negative, mag, exp, _ = v._mpf_  # v = (-1)**negative * mag * 2**exp
    mag = int(mag)
    top = exp + mag.bit_length()  # 2**(top - 1) <= |v| < 2**top
    if top > emax:
        return -math.inf if negative else math.inf
    if top < emin:  # below half the smallest subnormal
        return -0.0 if negative else 0.0
    quantum = max(top - digits, emin)  # exponent of the last kept bit
    if exp >= quantum:
        kept = mag << (exp - quantum)
    else:
        shift = quantum - exp
        kept, rest = mag >> shift, mag & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        kept += rest > half or (rest == half and kept & 1)
    if kept.bit_length() + quantum > emax:
        out = math.inf
    else:
        out = math.ldexp(kept, quantum)
    return -out if negative else out


def exact_values(name: str, dtype: str, *args: np.ndarray) -> np.ndarray:
    """name(*args) in mpmath at 120 bits, correctly rounded to dtype, one value per input."""
    fn = EXACT[name]
    with mpmath.workprec(120):
        return np.array([round_exact(fn(*(mpmath.mpf(float(a)) for a in point)), dtype)
                         for point in zip(*args)], dtype=dtype).reshape(args[0].shape)


def _expit_flush_point(dtype: str):
    """-log(largest float + half an ulp): below it exp(-x) overflows in dtype, and scipy's
    expit (and mathlib's logistic, docs/mathlib.md) return 0."""
    info = np.finfo(dtype)
    half_ulp = mpmath.mpf(2) ** (info.maxexp - info.nmant - 2)
    return -mpmath.log(mpmath.mpf(float(info.max)) + half_ulp)


with mpmath.workprec(200):
    EXPIT_FLUSH = {dtype: _expit_flush_point(dtype) for dtype in DTYPES}


def expit_flushed(x: np.ndarray, dtype: str) -> np.ndarray:
    """Where scipy's expit of x (float64 copies of dtype values) is 0 by that convention."""
    with mpmath.workprec(200):
        point = EXPIT_FLUSH[dtype]
        rough = float(point)
        with np.errstate(invalid="ignore"):
            flushed, near = x < rough, np.abs(x - rough) < 1e-6
        for i in np.nonzero(near)[0]:  # decided exactly near the point
            flushed[i] = mpmath.mpf(float(x[i])) < point
    return flushed


def near_float32_boundary(r64: np.ndarray) -> np.ndarray:
    """Where rounding a float64 value to float32 could change if the value moved by a few
    float64 ulp (it lies that close to the midpoint between two float32s, or to the overflow
    threshold): there a float64 reference that is a few ulp off may round the wrong way."""
    with np.errstate(over="ignore"):
        r32 = r64.astype(np.float32)
        up = np.nextafter(r32, np.float32(np.inf)).astype(np.float64)
        down = np.nextafter(r32, np.float32(-np.inf)).astype(np.float64)
    finite = np.isfinite(r64)
    largest = float(np.finfo(np.float32).max)
    up = np.where(np.isinf(up) & (r32 == largest), 2.0**128, up)
    down = np.where(np.isinf(down) & (r32 == -largest), -(2.0**128), down)
    mid_up = np.where(np.isfinite(r32), (r32.astype(np.float64) + up) / 2, 2.0**128 - 2.0**103)
    mid_down = np.where(np.isfinite(r32), (r32.astype(np.float64) + down) / 2,
                        -(2.0**128 - 2.0**103))
    window = 1024 * np.spacing(np.abs(np.where(finite, r64, 1.0)))
    with np.errstate(invalid="ignore"):
        return finite & ((np.abs(r64 - mid_up) <= window) | (np.abs(r64 - mid_down) <= window))


def reference(name: str, *args: np.ndarray) -> np.ndarray:
    """The correctly rounded value of name(*args) in the argument dtype (see the module's
    docstring), with scipy's expit convention for logistic (0 where exp(-x) overflows)."""
    dtype = args[0].dtype.name
    with np.errstate(invalid="ignore"):  # signalling NaNs among the bit patterns
        wide = [a.astype(np.float64) for a in args]
    r64 = in_float64(name, *wide)
    special = np.zeros(r64.shape, bool)
    for a in wide:
        special |= ~np.isfinite(a) | (a == 0)
    if dtype == "float64":
        ordinary = np.nonzero(~special)
        want = r64.copy()
        want[ordinary] = exact_values(name, dtype, *(a[ordinary] for a in wide))
    else:
        with np.errstate(over="ignore"):
            want = r64.astype(np.float32)
        redo = np.nonzero(near_float32_boundary(r64) & ~special)
        want[redo] = exact_values(name, dtype, *(a[redo] for a in wide))
    if name == "logistic":
        want[expit_flushed(wide[0], dtype)] = 0
    return want


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of representable floats between a and b (finite, same dtype)."""
    bits = np.uint32 if a.dtype == np.float32 else np.uint64
    sign = bits(1) << bits(8 * a.itemsize - 1)

    def key(v):  # monotone map of floats to unsigned integers (-0 and +0 coincide)
        u = v.view(bits)
        return np.where(u & sign, sign - (u & ~sign), sign + u)
    ka, kb = key(a), key(b)
    return np.maximum(ka, kb) - np.minimum(ka, kb)


def check(name: str, dtype: str, *args: np.ndarray) -> None:
    """Assert that mathlib agrees with the reference on args: NaN where it has NaN, the
    same infinities and signed zeros, and within the ulp bound everywhere else."""
    got, want = evaluate(name, dtype, *args), reference(name, *args)
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    bad = np.nonzero(nan_got != nan_want)[0]
    assert bad.size == 0, describe(name, args, got, want, bad, "NaN mismatch")
    exact = ~nan_want & (np.isinf(want) | (want == 0) | np.isinf(got) | (got == 0))
    bad = np.nonzero(exact & ((got != want) | (np.signbit(got) != np.signbit(want))))[0]
    assert bad.size == 0, describe(name, args, got, want, bad, "special value mismatch")
    finite = ~nan_want & ~exact
    ulps = ulp_distance(got[finite], want[finite])
    bound = ULP_BOUND[dtype][name]
    bad = np.nonzero(finite)[0][ulps > bound]
    assert bad.size == 0, describe(name, args, got, want, bad, f"more than {bound} ulp")


def describe(name, args, got, want, bad, what) -> str:
    """A failure message naming the first few offending inputs."""
    shown = [f"{name}({', '.join(repr(a[i]) for a in args)}) = {got[i]!r}, want {want[i]!r}"
             for i in bad[:5]]
    return f"{what} at {bad.size} inputs: " + "; ".join(shown)


def random_floats(dtype: str, n: int, seed: int) -> np.ndarray:
    """n floats with uniformly random bit patterns: log-uniform magnitudes over the whole
    range, both signs, subnormals, infinities and NaNs included."""
    bits = np.uint32 if dtype == "float32" else np.uint64
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(bits).max, n, dtype=bits, endpoint=True).view(dtype)


def interesting(name: str, dtype: str, n: int, seed: int) -> np.ndarray:
    """n floats where the function changes shape: uniform on a few scales around 0."""
    rng = np.random.default_rng(seed)
    scales = (1.0, 10.0, 100.0, 800.0)
    x = np.concatenate([rng.uniform(-s, s, n // len(scales)) for s in scales])
    return (np.abs(x) if name in ("log",) else x).astype(dtype)


def special_values(dtype: str) -> np.ndarray:
    """NaN, infinities, signed zeros, subnormal and normal extremes, and small integers."""
    info = np.finfo(dtype)
    values = [np.nan, np.inf, 0.0, info.smallest_subnormal, info.smallest_normal
              - info.smallest_subnormal, info.smallest_normal, info.eps, 0.5, 1.0, 2.0, 3.0,
              10.0, 100.0, 1000.0, info.max]
    return np.array(values + [-v for v in values], dtype=dtype)


def neighbours(values, dtype: str, steps: int = 3) -> np.ndarray:
    """Each value rounded to dtype and the `steps` floats on either side of it."""
    out = []
    for v in np.asarray(values, dtype=dtype):
        lo = hi = v
        out.append(v)
        for _ in range(steps):
            lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
            out += [lo, hi]
    return np.array(out, dtype=dtype)


def edges(name: str, dtype: str) -> np.ndarray:
    """Inputs at each function's thresholds: overflow, underflow, saturation, the switch
    points between approximations, and hard cases for the trigonometric reduction."""
    f32 = dtype == "float32"
    big = math.log(float(np.finfo(dtype).max))
    tiny = math.log(float(np.finfo(dtype).smallest_subnormal))
    points = {
        "exp": [big, tiny, tiny - 0.7, math.log(float(np.finfo(dtype).smallest_normal)),
                0.5 * math.log(2), -0.5 * math.log(2), 1e-8],
        "expm1": [big, -17.0, -37.0, 60 * math.log(2), 0.5 * math.log(2), 1e-8, -1e-8],
        "log": [1.0, math.sqrt(2), math.sqrt(0.5), float(np.finfo(dtype).smallest_normal)],
        "log1p": [-1.0, 0.0, 1e-8, -1e-8, math.sqrt(2) - 1, math.sqrt(0.5) - 1, 2.0**53],
        "tanh": [0.55, -0.55, 9.01, 19.06, 10.0, 20.0, 1e-8],
        "logistic": [-88.72283935546875, -709.7827128933841, -87.3, -745.0, 20.0, 40.0],
        "sin": [math.pi / 4, math.pi / 2, math.pi, 2.0**-12, 2.0**-27, 1e22, 2.0**1000],
        "erf": [1.0, 3.92, 4.0, 5.92, 6.0, 1e-8],
        "sinh": [1.0, 89.4159, 710.4758, 1e-8],
        "arctan": [math.tan(math.pi / 8), math.tan(3 * math.pi / 8), 1.0, 1e-8, 1e30],
    }
    points["cos"] = points["tan"] = points["sin"]
    points["cosh"] = points["sinh"]
    values = [v for v in points[name] if not f32 or abs(v) < 3.4e38]
    near = neighbours(values + [-v for v in values], dtype)
    if name in ("sin", "cos", "tan"):  # the floats nearest to multiples of pi/2
        near = np.concatenate([near, neighbours(np.arange(1, 200) * math.pi / 2, dtype, 1)])
    return near


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", UNARY)
def test_whole_range(name, dtype):
    check(name, dtype, np.concatenate([random_floats(dtype, 40_000, seed=1),
                                       interesting(name, dtype, 20_000, seed=2)]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", UNARY)
def test_special_values_and_edges(name, dtype):
    check(name, dtype, np.concatenate([special_values(dtype), edges(name, dtype)]))


@pytest.mark.parametrize("name", UNARY)
def test_float32_sweep(name):
    """Every 1024th float32 bit pattern: all exponents, both signs, 4 million values."""
    check(name, "float32", np.arange(0, 2**32, 1024, dtype=np.uint64).astype(np.uint32)
          .view(np.float32))


# The floats closest to a multiple of pi/2 (|x mod pi/2| near 2**-29.9 |x| for float32, at
# 7.729179e28; near 2**-60.9 for float64), where NumPy's own float64 cos and tan are off by
# several ulp: compared with 100-digit mpmath instead.
HARD_TRIG = {"float32": [7.729179e28, 1.0, 2.0**127], "float64": [
    6381956970095103 * 2.0**797, 5319148042163488 * 2.0**-51, 8165450306316309 * 2.0**-47,
    1e300, 2.0**1023]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sin", "cos", "tan"])
def test_trig_hardest_reductions_against_mpmath(name, dtype):
    x = np.array(HARD_TRIG[dtype] + [-v for v in HARD_TRIG[dtype]], dtype=dtype)
    with mpmath.workprec(2000):
        want = np.array([round_exact(getattr(mpmath, name)(mpmath.mpf(float(v))), dtype)
                         for v in x], dtype=dtype)
    assert ulp_distance(evaluate(name, dtype, x), want).max() <= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_pow(dtype):
    specials = np.concatenate([special_values(dtype), np.array(
        [0.25, 1.5, 2.5, -2.5, 127, 128, -149, -150, -1074, -1075, 2.0**24 + 2, 2.0**60],
        dtype=dtype)])
    x, y = (np.array(v, dtype=dtype) for v in zip(*itertools.product(specials, specials)))
    check("pow", dtype, x, y)
    rng = np.random.default_rng(3)
    n = 20_000
    scale = 115 if dtype == "float32" else 1009  # magnitudes 2**+-scale (e**+-80, e**+-700)
    # Built exactly (ldexp), not with np.exp, whose last bit depends on the CPU's SIMD code:
    # the same inputs on every machine.
    x = np.ldexp(rng.uniform(1, 2, n), rng.integers(-scale, scale, n)) * rng.choice([-1.0, 1.0],
                                                                                     n)
    y = np.where(rng.random(n) < 0.5, rng.uniform(-3, 3, n), np.round(rng.uniform(-40, 40, n)))
    check("pow", dtype, x.astype(dtype), y.astype(dtype))
    check("pow", dtype, (1 + rng.uniform(-1e-3, 1e-3, n)).astype(dtype),
          rng.uniform(-3e4, 3e4, n).astype(dtype))
    check("pow", dtype, random_floats(dtype, n, seed=4), rng.uniform(-2, 2, n).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", PRIMITIVES)
def test_loops_vectorise(name, dtype):
    """LLVM vectorises a loop calling the function: SIMD values of the function's float
    type (at least the 128-bit SSE width every x86-64 has), and no call left but LLVM
    intrinsics (a libm call would have stopped the vectoriser)."""
    loop = elementwise(name, dtype)
    args = (np.ones(8, dtype),) * (2 if name == "pow" else 1)
    evaluate(name, dtype, *args)
    llvm = loop.inspect_llvm(loop.signatures[0])
    lanes = [int(n) for n in re.findall(r"<(\d+) x %s>" % ("float" if dtype == "float32"
                                                           else "double"), llvm)]
    assert max(lanes, default=0) >= (4 if dtype == "float32" else 2), "no vector code"
    kernel = llvm[llvm.index("define"):]  # the loop's function, before Numba's wrappers
    kernel = kernel[:kernel.index("\n}\n")]
    calls = set(re.findall(r"call [^@]*@([\w.$]+)", kernel))
    assert {c for c in calls if not c.startswith("llvm.")} == set(), calls


def float_lanes(loop) -> int:
    """The widest `<N x float>` vector in a compiled loop's LLVM IR (0 if none)."""
    llvm = loop.inspect_llvm(loop.signatures[0])
    return max((int(n) for n in re.findall(r"<(\d+) x float>", llvm)), default=0)


def test_float32_trig_keeps_the_loops_vector_width():
    """A float32 loop mixing sin and cos into exp vectorises as wide as the loop without
    them: the trig reduction's float64 steps (and its float32 table loads) do not narrow
    the float32 work around it, as float64 loads once did (8 lanes became 4 on AVX2)."""
    exp, sin, cos = (MATH_FUNCTIONS[(n, "float32")] for n in ("exp", "sin", "cos"))

    @njit
    def plain(x, out):
        for i in range(x.size):
            out[i] = exp(x[i]) * x[i]

    @njit
    def with_trig(x, out):
        for i in range(x.size):
            out[i] = exp(x[i]) * x[i] + sin(x[i]) * cos(x[i])

    x = np.random.default_rng(5).uniform(-10, 10, 1000).astype(np.float32)
    out = np.empty_like(x)
    plain(x, out)
    with_trig(x, out)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(out, np.exp(x64) * x64 + np.sin(x64) * np.cos(x64),
                               rtol=1e-6, atol=1e-6)
    assert float_lanes(with_trig) == float_lanes(plain) >= 4


def test_table_and_globals_agree():
    assert set(MATH_FUNCTIONS) == {(p, d) for p in PRIMITIVES for d in DTYPES}
    names = math_globals()
    for (prim, dtype), fn in MATH_FUNCTIONS.items():
        assert names[f"tf_{prim}_{'f32' if dtype == 'float32' else 'f64'}"] is fn


def test_generated_source_calls_functions_by_name():
    source = ("def kernel(x, out):\n"
              "    for i in range(x.size):\n"
              "        out[i] = tf_tanh_f32(x[i]) * tf_logistic_f32(x[i]) + tf_exp_f32(x[i])\n")
    namespace = math_globals()
    exec(source, namespace)
    kernel = njit(namespace["kernel"])
    x = np.linspace(-3, 3, 101, dtype=np.float32)
    out = np.empty_like(x)
    kernel(x, out)
    x64 = x.astype(np.float64)  # not NumPy's float32 ufuncs: their last bits vary by CPU
    want = np.tanh(x64) * scipy.special.expit(x64) + np.exp(x64)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


AVX512_FEATURES = ("+64bit,+avx,+avx2,+avx512bw,+avx512cd,+avx512dq,+avx512f,+avx512vl,+bmi,"
                   "+bmi2,+cx16,+f16c,+fma,+lzcnt,+movbe,+popcnt,+sse,+sse2,+sse3,+sse4.1,"
                   "+sse4.2,+ssse3")
WIDTH_PROBE = """
import re
from numba import float32, njit
from transfuse.compiler.mathlib import MATH_FUNCTIONS
exp = MATH_FUNCTIONS[("exp", "float32")]

@njit((float32[::1], float32[::1]))  # compiled, never run: the CPU may lack AVX-512
def loop(x, out):
    for i in range(x.size):
        out[i] = exp(x[i])
print(max(int(n) for n in re.findall(r"<(\\d+) x float>", loop.inspect_llvm(loop.signatures[0]))))
"""


def test_loops_use_the_targets_full_width():
    """Compiled for an Intel AVX-512 CPU (cross-compiled: NUMBA_CPU_NAME), a float32 loop
    of mathlib's exp has 16 lanes, not the 8 that LLVM's preference for 256-bit vectors on
    those CPUs gives without mathlib's "prefer-vector-width" attribute."""
    env = dict(os.environ, NUMBA_CPU_NAME="skylake-avx512", NUMBA_CPU_FEATURES=AVX512_FEATURES)
    out = subprocess.run([sys.executable, "-c", WIDTH_PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    assert int(out.stdout.split()[-1]) == 16
