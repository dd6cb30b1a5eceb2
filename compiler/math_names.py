"""The names of compiler/mathlib.py's vectorised functions, known without importing Numba.

The lowering only writes calls to these functions into generated source; the functions
themselves (Numba intrinsics, which need Numba imported) are put into the kernel's
namespace when the kernel is compiled. A warm process that loads a kernel's object code
lowers without importing Numba (runtime/native_cache.py); tests/test_native_cache.py
checks this table against mathlib's.
"""

from __future__ import annotations

PRIMITIVES = ("exp", "expm1", "log", "log1p", "tanh", "logistic", "sin", "cos", "tan",
              "erf", "sinh", "cosh", "arctan", "pow")

_SUFFIX = {"float32": "f32", "float64": "f64"}

MATH_NAMES: dict[tuple[str, str], str] = {
    (name, dtype): f"tf_{name}_{suffix}"
    for name in PRIMITIVES for dtype, suffix in _SUFFIX.items()}

# mathlib's SMALL_TRIG: sin, cos, tan for |x| < 2**15 without table lookups, and the test
# for the arguments they cannot take (compiler/trig_fast_path.py).
SMALL_TRIG_NAMES: dict[tuple[str, str], str] = {
    (name, dtype): f"tf_{name}_small_{suffix}"
    for name in ("sin", "cos", "tan") for dtype, suffix in _SUFFIX.items()}
TRIG_LARGE_NAMES: dict[str, str] = {dtype: f"tf_trig_large_{suffix}"
                                    for dtype, suffix in _SUFFIX.items()}
OUT_OF_LINE_SUFFIX = "_call"  # tf_sin_f32_call: mathlib's tf_sin_f32, not inlined
