"""Statistics on traced values: the NaN-ignoring reductions, ptp, average, cov, corrcoef,
count_nonzero, and the whole-array comparisons allclose and array_equal."""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.errors import ShapeError, TransfuseTypeError, TransfuseValueError
from transfuse.ir.source import with_location

from . import _functions as F
from ._core import (
    asarray,
    call_ufunc,
    cast_operand,
    implements,
    ndim_of,
    normalize_axes,
    result_type,
    shape_of,
    to_bool,
)
from ._subgradients import sqrt_zero_subgradient

# ---------------------------------------------------------------------------------------
# NaN-ignoring reductions: NaNs replaced by the reduction's identity, as NumPy does


def _can_hold_nan(a: Any) -> bool:
    return a.dtype.kind in "fc"


def _kept(a: Any, where: Any) -> Any:
    """The elements a reduction reads: not NaN, and inside where=."""
    keep = lax.logical_not(lax.isnan(a))
    mask = F._where_mask(where, a)
    return keep if mask is None else lax.bitwise_and(keep, mask)


@implements(np.nansum)
def nansum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    a = asarray(a)
    if _can_hold_nan(a):
        where = _kept(a, where)
    return F.sum(a, axis, dtype, out, keepdims, initial, where)


@implements(np.nanprod)
def nanprod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    a = asarray(a)
    if _can_hold_nan(a):
        where = _kept(a, where)
    return F.prod(a, axis, dtype, out, keepdims, initial, where)


@implements(np.nanmean)
def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=None):
    """The mean of the non-NaN elements; NaN (without a warning) where there are none."""
    a = asarray(a)
    if not _can_hold_nan(a):
        return F.mean(a, axis, dtype, out, keepdims, where=where)
    F._no_out(out, "nanmean")
    axes = normalize_axes(axis, a.ndim)
    keep = _kept(a, where)
    total = lax.reduce_sum(lax.select(keep, a if dtype is None else lax.convert(a, dtype),
                                      np.zeros((), dtype or a.dtype)), axes)
    count = lax.reduce_sum(lax.convert(keep, total.dtype), axes)
    return F._keep(lax.div(total, count), a.shape, axes, keepdims)


@implements(np.nanvar)
def nanvar(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None,
           mean=None, correction=None):
    """NumPy's nanvar: the variance of the non-NaN elements, NaN where they number ddof or
    fewer (NumPy warns there; traced code cannot)."""
    a = asarray(a)
    if not _can_hold_nan(a):
        return F.var(a, axis, dtype, out, ddof, keepdims, where=where, mean=mean,
                     correction=correction)
    F._no_out(out, "nanvar")
    if correction is not None:
        ddof = correction
    axes = normalize_axes(axis, a.ndim)
    acc = np.dtype(dtype) if dtype is not None else a.dtype
    keep = _kept(a, where)
    x = lax.select(keep, lax.convert(a, acc), np.zeros((), acc))
    count = lax.reduce_sum(lax.convert(keep, acc), axes)
    if mean is None:
        mu = lax.div(lax.reduce_sum(x, axes), count)
        mu = F._keep(mu, a.shape, axes, True)
    else:
        mu = asarray(mean, acc)
    centered = lax.select(keep, lax.sub(x, mu), np.zeros((), acc))
    if lax.is_complex(centered):
        squares = lax.add(lax.square(lax.real(centered)), lax.square(lax.imag(centered)))
        count = lax.real(count)
    else:
        squares = lax.mul(centered, centered)
    dof = lax.sub(count, ddof)
    total = lax.reduce_sum(squares, axes)
    variance = lax.div(total, lax.select(lax.gt(dof, 0), dof, lax.full_like(dof, 1)))
    variance = lax.select(lax.gt(dof, 0), variance, lax.full_like(variance, np.nan))
    return F._keep(variance, a.shape, axes, keepdims)


@implements(np.nanstd)
def nanstd(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None,
           mean=None, correction=None):
    # At zero variance the derivative is 0, as np.std's (torch's subgradient; JAX: NaN).
    return sqrt_zero_subgradient(nanvar(a, axis, dtype, out, ddof, keepdims, where=where,
                                        mean=mean, correction=correction))


def _nan_extremum(reducer, fill: float, name: str):
    """nanmax/nanmin: NaNs lose (filled with -inf/inf); an all-NaN slice gives NaN."""
    def impl(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        a = asarray(a)
        if not _can_hold_nan(a):
            return reducer(a, axis, out, keepdims, initial, where)
        nan = lax.isnan(a)
        r = reducer(lax.select(nan, np.asarray(fill, a.dtype), a), axis, out, keepdims,
                    initial, where)
        all_nan = F.all(nan, axis, keepdims=keepdims)
        return lax.select(all_nan, lax.full_like(r, np.nan), r)
    impl.__name__ = name
    return impl


nanmax = implements(np.nanmax)(_nan_extremum(F.max, -np.inf, "nanmax"))
nanmin = implements(np.nanmin)(_nan_extremum(F.min, np.inf, "nanmin"))


def _nan_arg_extremum(reducer, fill: float, name: str):
    """nanargmax/nanargmin: NaNs lose; an all-NaN slice gives -1 (NumPy raises a ValueError
    there, which traced code cannot: -1 as JAX)."""
    def impl(a, axis=None, out=None, *, keepdims=False):
        a = asarray(a)
        if not _can_hold_nan(a):
            return reducer(a, axis, out, keepdims=keepdims)
        nan = lax.isnan(a)
        r = reducer(lax.select(nan, np.asarray(fill, a.dtype), a), axis, out,
                    keepdims=keepdims)
        all_nan = F.all(nan, axis, keepdims=keepdims)
        return lax.select(all_nan, lax.full_like(r, -1), r)
    impl.__name__ = name
    return impl


nanargmax = implements(np.nanargmax)(_nan_arg_extremum(F.argmax, -np.inf, "nanargmax"))
nanargmin = implements(np.nanargmin)(_nan_arg_extremum(F.argmin, np.inf, "nanargmin"))


@implements(np.ptp)
def ptp(a, axis=None, out=None, keepdims=False):
    """max - min along axis (each with max's and min's derivative at ties)."""
    F._no_out(out, "ptp")
    return call_ufunc(np.subtract, F.max(a, axis, keepdims=keepdims),
                      F.min(a, axis, keepdims=keepdims))


@implements(np.count_nonzero)
def count_nonzero(a, axis=None, *, keepdims=False):
    return F.sum(to_bool(asarray(a)), axis, dtype=np.int64, keepdims=keepdims)


# ---------------------------------------------------------------------------------------
# Weighted averages and covariances


@implements(np.average)
def average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    """NumPy's average: sum(a * w) / sum(w) along axis. A zero sum of weights gives inf or
    NaN here (NumPy raises ZeroDivisionError when it sees one; traced code cannot)."""
    a = asarray(a)
    axes = normalize_axes(axis, a.ndim)
    if weights is None:
        avg = F.mean(a, axis, keepdims=keepdims)
        if not returned:
            return avg
        count = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
        return avg, lax.full(shape_of(avg), count, avg.dtype)
    w = asarray(weights)
    dt = result_type(a, w, 1.0) if a.dtype.kind in "iub" else result_type(a, w)
    w = cast_operand(_weights_along(w, a, axis, axes), dt)
    total = F.sum(call_ufunc(np.multiply, cast_operand(a, dt), w), axis, keepdims=keepdims)
    scale = F.sum(lax.broadcast_to(w, a.shape), axis, keepdims=keepdims)
    avg = call_ufunc(np.true_divide, total, scale)
    return (avg, lax.broadcast_to(scale, shape_of(avg))) if returned else avg


def _weights_along(w: Any, a: Any, axis: Any, axes: tuple) -> Any:
    """Weights of a's shape, or a 1-d (n-d) array along axis (axes) shaped to broadcast."""
    if shape_of(w) == a.shape:
        return w
    if axis is None:
        raise TransfuseTypeError(with_location(
            "np.average: axis must be specified when shapes of a and weights differ"))
    if shape_of(w) != tuple(a.shape[i] for i in axes):
        raise ShapeError(with_location(
            f"np.average: weights of shape {shape_of(w)} do not match a of shape {a.shape} "
            f"along axis {axis}"))
    return lax.reshape(w, tuple(d if i in axes else 1 for i, d in enumerate(a.shape)))


@implements(np.cov)
def cov(m, y=None, rowvar=True, bias=False, ddof=None, fweights=None, aweights=None, *,
        dtype=None):
    """NumPy's cov, step for step (float64 at least, as NumPy)."""
    m = asarray(m)
    if m.ndim > 2:
        raise TransfuseValueError(with_location("m has more than 2 dimensions"))
    dt = np.dtype(dtype) if dtype is not None else result_type(
        m, *([] if y is None else [asarray(y)]), np.float64)
    x = _observations(m, rowvar, dt)
    if x.shape[0] == 0:
        return lax.full((0, 0), 0, dt)
    if y is not None:
        x = lax.concatenate([x, _observations(asarray(y), rowvar, dt)], 0)
    if ddof is None:
        ddof = 0 if bias else 1
    n = x.shape[1]
    w = _observation_weights(fweights, aweights, n)
    avg, w_sum = average(x, axis=1, weights=w, returned=True)
    w_sum = lax.slice_axis(w_sum, 0, 0, 1) if w is not None else None
    if w is None:
        fact = np.asarray(n - ddof, dt)
    elif ddof == 0:
        fact = w_sum
    elif aweights is None:
        fact = lax.sub(w_sum, lax.convert(np.asarray(ddof), w_sum.dtype))
    else:
        correction = lax.div(F.sum(call_ufunc(np.multiply, w, aweights)), w_sum)
        fact = lax.sub(w_sum, lax.mul(correction, lax.convert(np.asarray(ddof),
                                                              w_sum.dtype)))
    fact = lax.max(cast_operand(fact, dt), np.zeros((), dt))  # NumPy: fact <= 0 -> 0
    centered = lax.sub(x, lax.reshape(avg, (x.shape[0], 1)))
    weighted = centered if w is None else call_ufunc(np.multiply, centered, w)
    c = F.dot(centered, F.conj(F.transpose(weighted)))
    c = call_ufunc(np.multiply, c, lax.div(np.ones((), dt), fact))
    return F.squeeze(c)


def _observations(m: Any, rowvar: bool, dt: np.dtype) -> Any:
    """m as a 2-d array of variables (rows) by observations (columns)."""
    x = lax.convert(F.atleast_2d(m), dt)
    if not rowvar and x.shape[0] != 1:
        x = F.transpose(x)
    return x


def _observation_weights(fweights: Any, aweights: Any, n: int) -> Any:
    """fweights * aweights (either may be absent), checked as NumPy checks them."""
    w = None
    for name, given in (("fweights", fweights), ("aweights", aweights)):
        if given is None:
            continue
        given = asarray(given)
        if name == "fweights" and given.dtype.kind not in "iu":
            raise TransfuseTypeError(with_location("fweights must be integer"))
        if given.ndim > 1:
            raise ShapeError(with_location(f"cannot handle multidimensional {name}"))
        if given.shape[0] != n:
            raise ShapeError(with_location(f"incompatible numbers of samples and {name}"))
        if not isinstance(given, np.ndarray) or np.all(given >= 0):
            w = given if w is None else call_ufunc(np.multiply, w, given)
        else:
            raise TransfuseValueError(with_location(f"{name} cannot be negative"))
    return None if w is None else cast_operand(w, result_type(w, 1.0))


@implements(np.corrcoef)
def corrcoef(x, y=None, rowvar=True, *, dtype=None):
    """cov divided by the outer product of the standard deviations, clipped to [-1, 1]."""
    c = cov(x, y, rowvar, dtype=dtype)
    if ndim_of(c) == 0:
        return call_ufunc(np.true_divide, c, c)
    stddev = lax.sqrt(F.real(F.diagonal(c)))
    n = stddev.shape[0]
    c = call_ufunc(np.true_divide, c, lax.reshape(stddev, (n, 1)))
    c = call_ufunc(np.true_divide, c, lax.reshape(stddev, (1, n)))
    if lax.is_complex(c):  # NumPy clips the real and imaginary parts
        return lax.complex(F.clip(lax.real(c), -1, 1), F.clip(lax.imag(c), -1, 1))
    return F.clip(c, -1, 1)


# ---------------------------------------------------------------------------------------
# Whole-array comparisons (traced booleans)


@implements(np.allclose)
def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return F.all(F.isclose(a, b, rtol, atol, equal_nan))


@implements(np.array_equal)
def array_equal(a1, a2, equal_nan=False):
    """Whether a1 and a2 have one shape and equal elements (a traced 0-d bool)."""
    a1, a2 = asarray(a1), asarray(a2)
    if shape_of(a1) != shape_of(a2):
        return lax.full((), False, bool)
    equal = call_ufunc(np.equal, a1, a2)
    if equal_nan and (a1.dtype.kind in "fc" or a2.dtype.kind in "fc"):
        both_nan = lax.bitwise_and(call_ufunc(np.isnan, a1), call_ufunc(np.isnan, a2))
        equal = lax.bitwise_or(equal, both_nan)
    return F.all(equal)

