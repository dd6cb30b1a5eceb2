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
