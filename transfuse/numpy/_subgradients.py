"""Roots whose derivative at zero is the subgradient 0 (torch's), not NaN.

std = sqrt(var) and the 2-, Frobenius and p-norms are roots of a sum that is 0 when every
input is: the root's own derivative there is infinite, and times the sum's zero derivative
gives NaN (what JAX returns). torch masks it to 0, and so do these: the root is taken of a
value moved away from 0 where the sum is 0, and a select puts the exact 0 back, so the
derivative through the root is 0 there. Values are NumPy's to the bit (NaN stays NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir import lax

from ._core import call_ufunc


def _at_zero(total: Any) -> tuple[Any, Any]:
    """(total == 0, total with its zeros replaced by 1)."""
    zero = lax.eq(total, lax.zeros_like(total))
    return zero, lax.select(zero, lax.full_like(total, 1), total)


def sqrt_zero_subgradient(total: Any) -> Any:
    """sqrt(total) for total >= 0 (or NaN); its derivative at total == 0 is 0."""
    zero, safe = _at_zero(total)
    return lax.select(zero, lax.zeros_like(total), call_ufunc(np.sqrt, safe))


def root_zero_subgradient(total: Any, p: float) -> Any:
    """total ** (1 / p) for total >= 0 (or NaN); its derivative at total == 0 is 0."""
    zero, safe = _at_zero(total)
    return lax.select(zero, lax.zeros_like(total), call_ufunc(np.power, safe, 1.0 / p))
