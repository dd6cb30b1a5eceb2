"""The Numba options of every cached helper the generated kernels call.

Each helper states `fastmath` and `error_model` itself: Numba compiles a helper that sets
neither with the flags of its first caller and caches that machine code under a key that
does not include them, so one `jit(f, fastmath=True)` kernel compiled first would hand its
fast-math `fmax` (which drops NaN) to every later kernel, in every later process
(tests/test_regressions.py). A fast-math kernel calls exact helpers; nothing else changes.
"""

HELPER = {"cache": True, "fastmath": False, "error_model": "numpy"}
