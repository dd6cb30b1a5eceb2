"""Exceptions that compiled kernels raise and the dispatch path catches.

They live here, not in runtime/cpu_kernels.py (which defines Numba functions), so that the
per-call path of transfuse.jit can name them without importing Numba: `import transfuse`
stays lean, and Numba is imported when a kernel is first compiled or loaded.
"""


class SignatureMismatch(Exception):
    """Raised by an entry point called with arrays of another shape or layout."""
