"""Per-matrix linear-algebra loops shared by the CPU and CUDA backends.

Plain Python over array indexing, compiled by each backend: runtime/cpu_kernels.py with
`njit` (a loop over the stack), runtime/cuda_kernels.py as device functions (a thread a
matrix). Only the loop around them differs. They report failure by returning False,
because a GPU thread cannot raise: the CPU helper raises NumPy's LinAlgError, a CUDA
kernel sets its error flag and the host raises after the launch.
"""

from __future__ import annotations

import math


def eliminate(lu, x) -> bool:
    """Solve lu @ result = x in place (result in x; lu is overwritten) by Gaussian
    elimination with partial pivoting, as LAPACK's getrf/getrs; False for an exactly zero
    pivot (a singular matrix, NumPy's LinAlgError)."""
    n, k = x.shape[0], x.shape[1]
    for j in range(n):
        pivot, best = j, abs(lu[j, j])
        for i in range(j + 1, n):
            if abs(lu[i, j]) > best:
                pivot, best = i, abs(lu[i, j])
        if best == 0:
            return False
        if pivot != j:
            for c in range(n):
                lu[j, c], lu[pivot, c] = lu[pivot, c], lu[j, c]
            for c in range(k):
                x[j, c], x[pivot, c] = x[pivot, c], x[j, c]
        for i in range(j + 1, n):
            f = lu[i, j] / lu[j, j]
            for c in range(j + 1, n):
                lu[i, c] -= f * lu[j, c]
            for c in range(k):
                x[i, c] -= f * x[j, c]
    for j in range(n - 1, -1, -1):
        for c in range(k):
            total = x[j, c]
            for i in range(j + 1, n):
                total -= lu[j, i] * x[i, c]
            x[j, c] = total / lu[j, j]
    return True


def cholesky_lower(a, low) -> bool:
    """low = the lower Cholesky factor of a, reading a's lower triangle (the upper triangle
    of low is zeroed); False where a is not positive definite (NaN included), as LAPACK's
    potrf reports it."""
    n = a.shape[0]
    for j in range(n):
        # A = L L^H: the diagonal is real (.real and .conjugate() are no-ops on floats).
        diagonal = a[j, j].real
        for c in range(j):
            diagonal -= (low[j, c] * low[j, c].conjugate()).real
        if not diagonal > 0:
            return False
        root = math.sqrt(diagonal)
        low[j, j] = root
        for i in range(j + 1, n):
            total = a[i, j]
            for c in range(j):
                total -= low[i, c] * low[j, c].conjugate()
            low[i, j] = total / root
        for i in range(j):
            low[i, j] = 0
    return True
