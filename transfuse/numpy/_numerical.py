"""Numerical routines on traced values: trapezoid, gradient, polyval, polyfit, convolve,
correlate, interp, digitize, bincount and histogram (fixed bins)."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.errors import TransfuseTypeError, TransfuseValueError
from transfuse.ir.source import with_location

from . import _functions as F
from ._core import (
    EXPORTS,
    any_traced,
    asarray,
    call_ufunc,
    cast_operand,
    implements,
    is_traced,
    ndim_of,
    normalize_axis,
    result_type,
    shape_of,
    unsupported,
)
from .sorting import argsort, searchsorted


def _along(x: Any, axis: int, start: int, stop: int) -> Any:
    """x[..., start:stop, ...] on axis (non-negative bounds)."""
    return lax.slice_axis(x, axis, start, builtins.max(stop - start, 0))


def _op(ufunc: np.ufunc, *args: Any) -> Any:
    return call_ufunc(ufunc, *args)


# ---------------------------------------------------------------------------------------
# Integration and differentiation of samples


@implements(np.trapezoid)
def trapezoid(y, x=None, dx=1.0, axis=-1):
    """NumPy's trapezoid: sum(d * (y[1:] + y[:-1]) / 2) along axis, in NumPy's steps."""
    y = asarray(y)
    ax = normalize_axis(axis, y.ndim)
    if x is None:
        d = dx
    else:
        x = asarray(x)
        if x.ndim == 1:
            d = F.diff(x)
            d = lax.reshape(d, tuple(d.shape[0] if i == ax else 1 for i in range(y.ndim)))
        else:
            d = F.diff(x, axis=ax)
    n = y.shape[ax]
    pairs = _op(np.add, _along(y, ax, 1, n), _along(y, ax, 0, n - 1))
    return F.sum(_op(np.true_divide, _op(np.multiply, d, pairs), 2.0), axis=ax)


@implements(np.gradient)
def gradient(f, *varargs, axis=None, edge_order=1):
    """NumPy's gradient: central differences inside, one-sided (first or second order) at the
    ends, for uniform spacings (scalars) and coordinates (1-d arrays) along each axis."""
    f = asarray(f)
    axes = tuple(range(f.ndim)) if axis is None else (
        tuple(normalize_axis(a, f.ndim) for a in axis) if isinstance(axis, (tuple, list))
        else (normalize_axis(axis, f.ndim),))
    spacings = _spacings(f, varargs, axes)
    if edge_order > 2:
        raise TransfuseValueError(with_location("'edge_order' greater than 2 not supported"))
    otype = f.dtype if f.dtype.kind in "fc" else np.dtype(np.float64)
    if f.dtype.kind in "iu":
        f = lax.convert(f, np.float64)
    outs = []
    for ax, spacing in zip(axes, spacings):
        if f.shape[ax] < edge_order + 1:
            raise TransfuseValueError(with_location(
                "Shape of array too small to calculate a numerical gradient, at least "
                "(edge_order + 1) elements are required."))
        parts = [_gradient_start(f, ax, spacing, edge_order), _gradient_inside(f, ax, spacing),
                 _gradient_end(f, ax, spacing, edge_order)]
        outs.append(lax.concatenate([lax.convert(asarray(p), otype) for p in parts], ax))
    return outs[0] if len(outs) == 1 else tuple(outs)


def _spacings(f: Any, varargs: tuple, axes: tuple) -> list[Any]:
    """Each axis's spacing: a scalar (uniform), or the differences of its coordinates
    (reduced to a scalar when they are concrete and all equal, as NumPy does)."""
    if not varargs:
        return [1.0] * len(axes)
    if len(varargs) == 1 and ndim_of(varargs[0]) == 0:
        return list(varargs) * len(axes)
    if len(varargs) != len(axes):
        raise TransfuseTypeError(with_location("invalid number of arguments"))
    out = []
    for ax, distances in zip(axes, varargs):
        if ndim_of(distances) == 0:
            out.append(distances)
            continue
        distances = asarray(distances)
        if distances.ndim != 1:
            raise TransfuseValueError(with_location("distances must be either scalars or 1d"))
        if distances.shape[0] != f.shape[ax]:
            raise TransfuseValueError(with_location(
                "when 1d, distances must match the length of the corresponding dimension"))
        if distances.dtype.kind in "iub":
            distances = lax.convert(distances, np.float64)
        diffx = F.diff(distances)
        if not is_traced(diffx) and (diffx == diffx[0]).all():
            diffx = diffx[0]
        out.append(diffx)
    return out


def _weighted(f: Any, ax: int, terms: list[tuple[Any, int]]) -> Any:
    """sum of coefficient * f[start:start + length] along ax, in order."""
    total = None
    for coefficient, (start, stop) in terms:
        term = _op(np.multiply, coefficient, _along(f, ax, start, stop))
        total = term if total is None else _op(np.add, total, term)
    return total


def _shaped(v: Any, ax: int, ndim: int) -> Any:
    """A 1-d array of coefficients along axis ax of an ndim-d array."""
    if ndim_of(v) == 0:
        return v
    v = asarray(v)
    return lax.reshape(v, tuple(v.shape[0] if i == ax else 1 for i in range(ndim)))


def _gradient_inside(f: Any, ax: int, dx: Any) -> Any:
    n = f.shape[ax]
    if ndim_of(dx) == 0:
        return _op(np.true_divide, _op(np.subtract, _along(f, ax, 2, n), _along(f, ax, 0, n - 2)),
                   _op(np.multiply, 2.0, dx))
    dx = asarray(dx)
    dx1, dx2 = _along(dx, 0, 0, n - 2), _along(dx, 0, 1, n - 1)
    a = _op(np.true_divide, _op(np.negative, dx2), _op(np.multiply, dx1, _op(np.add, dx1, dx2)))
    b = _op(np.true_divide, _op(np.subtract, dx2, dx1), _op(np.multiply, dx1, dx2))
    c = _op(np.true_divide, dx1, _op(np.multiply, dx2, _op(np.add, dx1, dx2)))
    return _weighted(f, ax, [(_shaped(a, ax, f.ndim), (0, n - 2)),
                             (_shaped(b, ax, f.ndim), (1, n - 1)),
                             (_shaped(c, ax, f.ndim), (2, n))])


def _pick(dx: Any, i: int) -> Any:
    """Element i of a spacing array (a scalar spacing is every element)."""
    if ndim_of(dx) == 0:
        return dx
    dx = asarray(dx)
    return lax.reshape(_along(dx, 0, i % dx.shape[0], i % dx.shape[0] + 1), ())


def _gradient_start(f: Any, ax: int, dx: Any, edge_order: int) -> Any:
    if edge_order == 1:
        return _op(np.true_divide, _op(np.subtract, _along(f, ax, 1, 2), _along(f, ax, 0, 1)),
                   _pick(dx, 0))
    if ndim_of(dx) == 0:
        a, b, c = (_op(np.true_divide, k, dx) for k in (-1.5, 2.0, -0.5))
    else:
        dx1, dx2 = _pick(dx, 0), _pick(dx, 1)
        both = _op(np.add, dx1, dx2)
        a = _op(np.true_divide, _op(np.negative, _op(np.add, _op(np.multiply, 2.0, dx1), dx2)),
                _op(np.multiply, dx1, both))
        b = _op(np.true_divide, both, _op(np.multiply, dx1, dx2))
        c = _op(np.true_divide, _op(np.negative, dx1), _op(np.multiply, dx2, both))
    return _weighted(f, ax, [(a, (0, 1)), (b, (1, 2)), (c, (2, 3))])


def _gradient_end(f: Any, ax: int, dx: Any, edge_order: int) -> Any:
    n = f.shape[ax]
    if edge_order == 1:
        return _op(np.true_divide, _op(np.subtract, _along(f, ax, n - 1, n),
                                       _along(f, ax, n - 2, n - 1)), _pick(dx, -1))
    if ndim_of(dx) == 0:
        a, b, c = (_op(np.true_divide, k, dx) for k in (0.5, -2.0, 1.5))
    else:
        dx1, dx2 = _pick(dx, -2), _pick(dx, -1)
        both = _op(np.add, dx1, dx2)
        a = _op(np.true_divide, dx2, _op(np.multiply, dx1, both))
        b = _op(np.true_divide, _op(np.negative, _op(np.add, dx2, dx1)),
                _op(np.multiply, dx1, dx2))
        c = _op(np.true_divide, _op(np.add, _op(np.multiply, 2.0, dx2), dx1),
                _op(np.multiply, dx2, both))
    return _weighted(f, ax, [(a, (n - 3, n - 2)), (b, (n - 2, n - 1)), (c, (n - 1, n))])


# ---------------------------------------------------------------------------------------
# Polynomials


@implements(np.polyval)
def polyval(p, x):
    """Horner's rule, as NumPy: y = y * x + p[i]."""
    p, x = asarray(p), asarray(x)
    y = F.zeros_like(x)
    for i in range(shape_of(p)[0]):
        y = _op(np.add, _op(np.multiply, y, x), p[i])
    return y


@implements(np.polyfit)
def polyfit(x, y, deg, rcond=None, full=False, w=None, cov=False):
    """Least squares on the Vandermonde matrix with its columns scaled to norm 1, as NumPy
    (np.linalg.lstsq: derivatives through the SVD)."""
    if full or cov:
        raise unsupported("np.polyfit(..., full=True or cov=True) on traced values")
    order = int(deg) + 1
    x = _op(np.add, asarray(x), 0.0)
    y = _op(np.add, asarray(y), 0.0)
    if deg < 0:
        raise TransfuseValueError(with_location("expected deg >= 0"))
    if x.ndim != 1:
        raise TransfuseTypeError(with_location("expected 1D vector for x"))
    if x.size == 0:
        raise TransfuseTypeError(with_location("expected non-empty vector for x"))
    if y.ndim < 1 or y.ndim > 2:
        raise TransfuseTypeError(with_location("expected 1D or 2D array for y"))
    if x.shape[0] != y.shape[0]:
        raise TransfuseTypeError(with_location("expected x and y to have same length"))
    if rcond is None:
        rcond = len(x) * np.finfo(x.dtype).eps
    lhs, rhs = _vander(x, order), y
    if w is not None:
        w = _op(np.add, asarray(w), 0.0)
        if w.ndim != 1 or w.shape[0] != y.shape[0]:
            raise TransfuseTypeError(with_location(
                "expected a 1-d array for weights of the length of y"))
        column = lax.reshape(w, (w.shape[0], 1))
        lhs = _op(np.multiply, lhs, column)
        rhs = _op(np.multiply, rhs, column if rhs.ndim == 2 else w)
    scale = _op(np.sqrt, F.sum(_op(np.multiply, lhs, lhs), axis=0))
    lhs = _op(np.true_divide, lhs, scale)
    from .linalg import lstsq
    c = lstsq(lhs, rhs, rcond)[0]
    return F.transpose(_op(np.true_divide, F.transpose(c), scale))


def _vander(x: Any, order: int) -> Any:
    """Columns x**(order-1), ..., x, 1, the powers by repeated multiplication (NumPy's)."""
    x = lax.convert(x, np.promote_types(x.dtype, np.int64))  # NumPy's: float32 -> float64
    powers = [lax.full(x.shape, 1, x.dtype)]
    for _ in range(order - 1):
        powers.append(_op(np.multiply, powers[-1], x))
    return F.stack(powers[::-1], axis=1)


# ---------------------------------------------------------------------------------------
# Convolution


def _correlate_padded(a: Any, v: Any, mode: str) -> Any:
    """sum_j a[k + j] v[j] for len(a) >= len(v), a padded as mode says (the conv primitive)."""
    n, m = a.shape[0], v.shape[0]
    pads = {"valid": (0, 0), "full": (m - 1, m - 1), "same": (m // 2, (m - 1) // 2)}
    if mode not in pads:
        raise TransfuseValueError(with_location(
            f"mode must be one of 'valid', 'same', or 'full' (got {mode!r})"))
    out = lax.conv_general_dilated(lax.reshape(a, (1, 1, n)), lax.reshape(v, (1, 1, m)),
                                   (1,), [pads[mode]])
    return lax.reshape(out, (lax.shape(out)[-1],))


def _one_d_pair(a: Any, v: Any, name: str) -> tuple[Any, Any]:
    dt = result_type(a, v)
    a, v = (cast_operand(asarray(z), dt) for z in (a, v))
    if name == "convolve":  # NumPy: array(a, ndmin=1); correlate needs 1-d operands
        a, v = (lax.reshape(z, (1,)) if z.ndim == 0 else z for z in (a, v))
    if a.ndim != 1 or v.ndim != 1:
        problem = "of too small depth" if min(a.ndim, v.ndim) < 1 else "too deep"
        raise TransfuseValueError(with_location(
            f"np.{name}: object {problem} for desired array"))
    if a.shape[0] == 0:
        raise TransfuseValueError(with_location("a cannot be empty"))
    if v.shape[0] == 0:
        raise TransfuseValueError(with_location("v cannot be empty"))
    return a, v


@implements(np.correlate)
def correlate(a, v, mode="valid"):
    """c[k] = sum_n a[n + k] conj(v[n]); a shorter a swaps the two and reverses c (NumPy)."""
    a, v = _one_d_pair(a, v, "correlate")
    if a.shape[0] >= v.shape[0]:
        return _correlate_padded(a, F.conj(v), mode)
    return F.flip(_correlate_padded(F.conj(v), a, mode))


@implements(np.convolve)
def convolve(a, v, mode="full"):
    """The discrete linear convolution: the correlation with the shorter operand reversed."""
    a, v = _one_d_pair(a, v, "convolve")
    if a.shape[0] < v.shape[0]:
        a, v = v, a
    return _correlate_padded(a, F.flip(v), mode)


# ---------------------------------------------------------------------------------------
# Interpolation and binning


@implements(np.interp)
def interp(x, xp, fp, left=None, right=None, period=None):
    """Piecewise-linear interpolation, in float64 (complex128) as NumPy: slope * (x - xp[j])
    + fp[j] with xp[j] <= x < xp[j + 1]; derivatives as JAX's (the slope between knots).
    period= sorts xp (the sort primitive when xp is traced)."""
    fp = asarray(fp)
    dt = np.dtype(np.complex128) if fp.dtype.kind == "c" else np.dtype(np.float64)
    x, xp, fp = asarray(x, np.float64), asarray(xp, np.float64), asarray(fp, dt)
    if xp.ndim != 1 or fp.ndim != 1:
        raise TransfuseValueError(with_location("object too deep for desired array"))
    if xp.shape[0] != fp.shape[0]:
        raise TransfuseValueError(with_location("fp and xp are not of the same length."))
    if xp.shape[0] == 0:
        raise TransfuseValueError(with_location("array of sample points is empty"))
    if period is not None:
        xp, fp, x = _periodic(x, xp, fp, period)
        left = right = None
    n = xp.shape[0]
    first, last = lax.reshape(_along(fp, 0, 0, 1), ()), lax.reshape(_along(fp, 0, n - 1, n), ())
    left = first if left is None else cast_operand(asarray(left), dt)
    right = last if right is None else cast_operand(asarray(right), dt)
    if n == 1:
        inside = lax.broadcast_to(first, x.shape)
    else:
        j = lax.clip(_op(np.subtract, searchsorted(xp, x, side="right"), 1), 0, n - 2)
        x0, x1 = F.take(xp, j), F.take(xp, _op(np.add, j, 1))
        f0, f1 = F.take(fp, j), F.take(fp, _op(np.add, j, 1))
        slope = _op(np.true_divide, _op(np.subtract, f1, f0), _op(np.subtract, x1, x0))
        inside = _op(np.add, _op(np.multiply, slope, _op(np.subtract, x, x0)), f0)
        at_last = _op(np.equal, x, lax.reshape(_along(xp, 0, n - 1, n), ()))
        inside = F.where(at_last, last, inside)
    below = _op(np.less, x, lax.reshape(_along(xp, 0, 0, 1), ()))
    above = _op(np.greater, x, lax.reshape(_along(xp, 0, n - 1, n), ()))
    return F.where(below, left, F.where(above, right, inside))


def _periodic(x: Any, xp: Any, fp: Any, period: Any) -> tuple[Any, Any, Any]:
    """NumPy's period= handling: everything modulo period, xp sorted (stably) and extended
    by one point on each side."""
    if is_traced(period):
        raise unsupported("np.interp(..., period=...) with a traced period",
                          "pass the period as a number")
    if period == 0:
        raise TransfuseValueError(with_location("period must be a non-zero value"))
    period = abs(period)
    x = _op(np.remainder, x, period)
    xp = _op(np.remainder, xp, period)
    order = argsort(xp, kind="stable")
    xp, fp = F.take(xp, order), F.take(fp, order)
    n = xp.shape[0]
    xp = F.concatenate([_op(np.subtract, _along(xp, 0, n - 1, n), period), xp,
                        _op(np.add, _along(xp, 0, 0, 1), period)])
    fp = F.concatenate([_along(fp, 0, n - 1, n), fp, _along(fp, 0, 0, 1)])
    return xp, fp, x


@implements(np.digitize)
def digitize(x, bins, right=False):
    """The bin of each x: searchsorted on increasing bins, len(bins) minus it on decreasing
    ones (traced bins: the direction is read from them; NumPy's monotonicity check needs
    concrete bins)."""
    x, bins = asarray(x), asarray(bins)
    if x.dtype.kind == "c":
        raise TransfuseTypeError(with_location("x may not be complex"))
    if bins.ndim != 1:
        raise TransfuseValueError(with_location("object too deep for desired array"))
    side = "left" if right else "right"
    if not is_traced(bins):
        if not (np.all(bins[1:] >= bins[:-1]) or np.all(bins[1:] <= bins[:-1])):
            raise TransfuseValueError(with_location(
                "bins must be monotonically increasing or decreasing"))
        if bins.size and bins[-1] < bins[0]:
            reverse = searchsorted(bins[::-1], x, side=side)
            return _op(np.subtract, bins.shape[0], reverse)
        return searchsorted(bins, x, side=side)
    increasing = searchsorted(bins, x, side=side)
    if bins.shape[0] < 2:
        return increasing
    decreasing = _op(np.subtract, bins.shape[0], searchsorted(F.flip(bins), x, side=side))
    going_down = _op(np.less, lax.reshape(_along(bins, 0, bins.shape[0] - 1, bins.shape[0]),
                                          ()), lax.reshape(_along(bins, 0, 0, 1), ()))
    return F.where(going_down, decreasing, increasing)


def _binned_sum(bin_of: Any, weights: Any, length: int, dtype: np.dtype) -> Any:
    """sum of weights (ones) per bin 0..length-1; bins outside that range are dropped."""
    inside = _op(np.logical_and, _op(np.greater_equal, bin_of, 0),
                 _op(np.less, bin_of, length))
    index = lax.select(inside, bin_of, lax.full_like(bin_of, length))
    updates = lax.full(shape_of(bin_of), 1, dtype) if weights is None else cast_operand(
        weights, dtype)
    totals = lax.scatter_add(lax.full((length + 1,), 0, dtype), index, updates, 0)
    return lax.slice_axis(totals, 0, 0, length)


def bincount(x, weights=None, minlength=0, *, length=None):
    """NumPy's bincount; `length=` (as JAX) fixes the output length, which traced x needs
    (values >= length are dropped, negative ones count in bin 0, as JAX)."""
    if minlength is None or minlength < 0:
        raise TransfuseValueError(with_location("'minlength' must not be negative"))
    if not any_traced((x, weights)):
        counts = np.bincount(x, weights, minlength)
        return counts if length is None else _fit(counts, int(length))
    x = asarray(x)
    if x.dtype.kind not in "iub":
        raise TransfuseTypeError(with_location(
            f"Cannot cast array data from {x.dtype!r} to dtype('int64') according to the "
            "rule 'safe'"))
    if x.ndim != 1:
        raise TransfuseValueError(with_location("object too deep for desired array"))
    if length is None:
        if is_traced(x):
            raise TransfuseValueError(with_location(
                "np.bincount of a traced x: its output length is max(x) + 1, which is not "
                "known while transfuse records the function. Pass length= "
                "(tnp.bincount(x, weights, minlength, length=n), as jax.numpy.bincount)"))
        if x.size and x.min() < 0:
            raise TransfuseValueError(with_location("'list' argument must have no negative "
                                                    "elements"))
        length = builtins.max(int(x.max()) + 1 if x.size else 0, minlength)
    x = lax.convert(x, np.int64)
    x = lax.max(x, np.zeros((), np.int64))  # negative values count in bin 0 (JAX)
    if weights is not None:
        weights = asarray(weights)
        if shape_of(weights) != x.shape:
            raise TransfuseValueError(with_location(
                "The weights and list don't have the same length."))
    dtype = np.dtype(np.int64) if weights is None else np.dtype(np.float64)
    return _binned_sum(x, weights, int(length), dtype)


def _fit(counts: np.ndarray, length: int) -> np.ndarray:
    return np.pad(counts, (0, builtins.max(length - counts.shape[0], 0)))[:length]


implements(np.bincount)(bincount)
EXPORTS["bincount"] = bincount  # tnp.bincount takes length= on NumPy values too


@implements(np.histogram)
def histogram(a, bins=10, range=None, density=None, weights=None):  # noqa: A002
    """Counts (or weights' sums) in fixed bins: an integer number of equal bins over range=
    (or over [a.min(), a.max()], traced), or explicit edges; the last bin is closed."""
    a = F.ravel(asarray(a))
    if weights is not None:
        weights = asarray(weights)
        if shape_of(weights) != shape_of(a) and builtins.int(np.prod(shape_of(weights))) \
                != a.shape[0]:
            raise TransfuseValueError(with_location("weights should have the same shape as a."))
        weights = F.ravel(weights)
    edges, outer = _bin_edges(a, bins, range)
    n = lax.shape(edges)[0] - 1
    bin_of = _bins_by_search(a, edges) if outer is None else _bins_by_arithmetic(
        a, edges, *outer)
    dtype = np.dtype(np.int64) if weights is None else weights.dtype
    if weights is None:
        hist = _binned_sum(bin_of, None, n, dtype)
    else:  # NumPy sums weights in float64, then casts them
        wide = np.dtype(np.complex128) if dtype.kind == "c" else np.dtype(np.float64)
        hist = lax.convert(_binned_sum(bin_of, weights, n, wide), dtype)
    if density:
        widths = lax.convert(F.diff(edges), np.float64)
        hist = _op(np.true_divide, _op(np.true_divide, hist, widths), F.sum(hist))
    return hist, edges


def _bins_by_search(a: Any, edges: Any) -> Any:
    """Each value's bin among explicit edges (-1: outside them, or NaN)."""
    n = lax.shape(edges)[0] - 1
    dt = result_type(a, edges)
    value, edge_values = cast_operand(a, dt), cast_operand(edges, dt)
    bin_of = _op(np.subtract, searchsorted(_along(edge_values, 0, 0, n), value, side="right"),
                 1)
    last = lax.reshape(_along(edge_values, 0, n, n + 1), ())
    bin_of = F.where(_op(np.equal, value, last), n - 1, bin_of)  # the last bin is closed
    beyond = _op(np.logical_not, _op(np.less_equal, value, last))  # above it, or NaN
    return F.where(beyond, -1, bin_of)


def _bins_by_arithmetic(a: Any, edges: Any, first: Any, last: Any) -> Any:
    """Each value's bin among equal bins, NumPy's way: (a - first) / width, corrected by one
    against the edges either way; O(len(a)) (-1: outside [first, last], or NaN)."""
    n = lax.shape(edges)[0] - 1
    keep = _op(np.logical_and, _op(np.greater_equal, a, first), _op(np.less_equal, a, last))
    value = lax.convert(a, lax.dtype(edges))
    scaled = _op(np.multiply, _op(np.true_divide, _op(np.subtract, value, first),
                                  _op(np.subtract, last, first)), n)
    safe = F.where(keep, scaled, lax.zeros_like(scaled))  # no int cast of NaN or inf
    index = lax.clip(lax.convert(safe, np.int64), 0, n - 1)
    index = _op(np.subtract, index, _op(np.less, value, F.take(edges, index)))
    above = _op(np.greater_equal, value, F.take(edges, _op(np.add, index, 1)))
    index = _op(np.add, index, _op(np.logical_and, above, _op(np.not_equal, index, n - 1)))
    return F.where(keep, index, -1)


def _bin_edges(a: Any, bins: Any, range: Any) -> tuple[Any, Any]:  # noqa: A002
    """The bin edges NumPy uses: explicit (increasing), or `bins` equal bins by linspace;
    with (first, last) for equal bins (None for explicit ones)."""
    if isinstance(bins, str):
        raise unsupported(f"np.histogram(..., bins={bins!r}) on traced values (its number of "
                          "bins depends on the data)", "pass an integer or the edges")
    if ndim_of(bins) == 1:
        edges = asarray(bins)
        if not is_traced(edges) and np.any(edges[:-1] > edges[1:]):
            raise TransfuseValueError(with_location(
                "`bins` must increase monotonically, when an array"))
        return edges, None
    if ndim_of(bins) != 0 or is_traced(bins):
        raise TransfuseValueError(with_location("`bins` must be 1d, when an array"))
    count = int(bins)
    if count < 1:
        raise TransfuseValueError(with_location("`bins` must be positive, when an integer"))
    if range is not None:
        first, last = range
        if any_traced((first, last)):
            raise unsupported("np.histogram(..., range=...) with traced bounds")
        if first > last:
            raise TransfuseValueError(with_location(
                "max must be larger than min in range parameter."))
        if not (np.isfinite(first) and np.isfinite(last)):
            raise TransfuseValueError(with_location(
                f"supplied range of [{first}, {last}] is not finite"))
        if first == last:
            first, last = first - 0.5, last + 0.5
    elif a.shape[0] == 0:
        first, last = 0, 1
    else:  # the data's range (NaN or inf there: NaN edges, where NumPy raises)
        first, last = F.min(a), F.max(a)
        same = _op(np.equal, first, last)
        first = F.where(same, _op(np.subtract, first, 0.5), first)
        last = F.where(same, _op(np.add, last, 0.5), last)
        edge_type = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
        first, last = lax.convert(first, edge_type), lax.convert(last, edge_type)
    bin_type = result_type(first, last, a)
    if bin_type.kind in "iub":
        bin_type = result_type(bin_type, 1.0)
    return F.linspace(first, last, count + 1, dtype=bin_type), (first, last)
