"""transfuse.numpy.fft: np.fft's functions on traced values.

Built on the one `fft` primitive (ir/fft.py, as jax.lax.fft): the transformed axes are
moved to the end by a transpose, zero-padded or cropped to the requested lengths, and the
normalisations other than the primitive's own (none forward, 1/N inverse) are a
multiplication by a constant after the transform. dtypes as NumPy 2 gives them: float32
and complex64 stay single precision, integers and bools become float64/complex128.
`np.fft.f(traced)` reaches these through NumPy's dispatch; `tnp.fft.f` is the same
function (NumPy's own on NumPy arrays). `fftfreq` and `rfftfreq` take sizes, not arrays:
they are NumPy's own (a constant in a traced function; a traced `d` traces through the
arithmetic). Derivative conventions: docs/numpy.md, "FFT".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.errors import TransfuseIndexError, TransfuseTypeError, TransfuseValueError
from transfuse.ir.primitives import complex_dtype, real_dtype
from transfuse.ir.source import with_location

from ._core import asarray, cast_operand, implements, normalize_axis, result_type, unsupported

EXPORTS: dict[str, Callable] = {}
NORMS = (None, "backward", "ortho", "forward")


def _fft(np_func: Callable) -> Callable[[Callable], Callable]:
    return implements(np_func, exports=EXPORTS)


# ---------------------------------------------------------------------------------------
# Arguments, as numpy/fft/_pocketfft.py checks them


def _check_norm(norm: Any) -> None:
    if norm not in NORMS:
        raise TransfuseValueError(with_location(
            f'Invalid norm value {norm}; should be "backward","ortho" or "forward".'))


def _swap_direction(norm: Any) -> str:
    """hfft/ihfft use the opposite direction's normalisation (NumPy's _swap_direction)."""
    _check_norm(norm)
    return {None: "forward", "backward": "forward", "ortho": "ortho",
            "forward": "backward"}[norm]


def _check_length(n: int) -> int:
    n = int(n)
    if n < 1:
        raise TransfuseValueError(with_location(
            f"Invalid number of FFT data points ({n}) specified."))
    return n


def _no_out(out: Any) -> None:
    if out is not None:
        raise unsupported("np.fft's out= argument", "use the returned array")


def _complex_operand(a: Any) -> Any:
    a = asarray(a)
    return cast_operand(a, complex_dtype(result_type(a, 1.0)))


def _real_operand(a: Any, name: str) -> Any:
    a = asarray(a)
    if a.dtype.kind == "c":
        raise TransfuseTypeError(with_location(
            f"numpy.fft.{name} needs a real input, got {a.dtype} (NumPy: the ufunc is not "
            "supported for the input types)"))
    return cast_operand(a, real_dtype(result_type(a, 1.0)))


def _axis_of(a: Any, axis: int) -> int:
    if a.ndim == 0:
        raise TransfuseIndexError(with_location(
            "np.fft of a 0-d array: there is no axis to transform (NumPy: tuple index out "
            "of range)"))
    return normalize_axis(axis, a.ndim)


def _cook_nd_args(a: Any, s: Any, axes: Any, inverse_real: bool = False
                  ) -> tuple[list[int], list[int]]:
    """(lengths, axes) of an n-dimensional transform, as NumPy's _cook_nd_args: axes
    default to the last len(s) axes (all axes without s); an entry None or -1 of s is the
    axis's length; irfftn's last length defaults to 2 (m - 1)."""
    if s is None:
        axes = list(range(a.ndim)) if axes is None else list(axes)
        lengths = [a.shape[normalize_axis(ax, a.ndim)] for ax in axes]
        if inverse_real and lengths:
            lengths[-1] = (lengths[-1] - 1) * 2
    else:
        s = list(s)
        axes = list(range(-len(s), 0)) if axes is None else list(axes)
        if len(s) != len(axes):
            raise TransfuseValueError(with_location(
                "Shape and axes have different lengths."))
        lengths = []
        for k, (n, ax) in enumerate(zip(s, axes)):
            if n is None or n == -1:
                n = a.shape[normalize_axis(ax, a.ndim)]
                if inverse_real and k == len(s) - 1:
                    n = (n - 1) * 2
            lengths.append(n)
    axes = [normalize_axis(ax, a.ndim) for ax in axes]
    return [_check_length(n) for n in lengths], axes


# ---------------------------------------------------------------------------------------
# One transform over distinct axes: fit the lengths, move the axes last, scale


def _fit(x: Any, axis: int, n: int) -> Any:
    """x cropped or zero-padded along axis to length n (as NumPy does before a transform)."""
    have = x.shape[axis]
    if have > n:
        return lax.slice_axis(x, axis, 0, n)
    if have < n:
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (0, n - have, 0)
        return lax.pad(x, np.zeros((), x.dtype), config)
    return x


def _scale(norm: Any, total: int, inverse: bool) -> float:
    """The factor applied after the primitive (which scales its inverses by 1/N)."""
    norm = norm or "backward"
    if norm == "backward":
        return 1.0
    if norm == "ortho":
        return math.sqrt(total) if inverse else 1 / math.sqrt(total)
    return float(total) if inverse else 1 / total  # "forward"


def _transform(x: Any, fft_type: str, lengths: Sequence[int], axes: Sequence[int],
               norm: Any) -> Any:
    """The fft primitive over distinct `axes` (the last of them the real one for rfft and
    irfft), x already fitted to the transform's input lengths."""
    rest = [d for d in range(x.ndim) if d not in axes]
    permutation = rest + list(axes)
    moved = permutation != list(range(x.ndim))
    y = lax.transpose(x, permutation) if moved else x
    y = lax.fft(y, fft_type, lengths)
    if moved:
        y = lax.transpose(y, list(np.argsort(permutation)))
    factor = _scale(norm, math.prod(lengths), fft_type in ("ifft", "irfft"))
    return y if factor == 1.0 else lax.mul(y, factor)


def _c2c(a: Any, lengths: list[int], axes: list[int], norm: Any, inverse: bool) -> Any:
    _check_norm(norm)
    if not axes:  # a 0-d fftn: NumPy returns the input as it is
        return lax.copy(asarray(a))
    x = _complex_operand(a)
    if len(set(axes)) < len(axes):  # an axis named twice: NumPy transforms it twice
        for n, ax in reversed(list(zip(lengths, axes))):
            x = _c2c(x, [n], [ax], norm, inverse)
        return x
    for n, ax in zip(lengths, axes):
        x = _fit(x, ax, n)
    return _transform(x, "ifft" if inverse else "fft", lengths, axes, norm)


def _r2c(a: Any, lengths: list[int], axes: list[int], norm: Any, name: str) -> Any:
    _check_norm(norm)
    x = _real_operand(a, name)
    if len(set(axes)) < len(axes):  # NumPy: rfft along the last axis, then ffts
        x = _r2c(x, lengths[-1:], axes[-1:], norm, name)
        return _c2c(x, lengths[:-1], axes[:-1], norm, False) if axes[:-1] else x
    for n, ax in zip(lengths, axes):
        x = _fit(x, ax, n)
    return _transform(x, "rfft", lengths, axes, norm)


def _c2r(a: Any, lengths: list[int], axes: list[int], norm: Any) -> Any:
    _check_norm(norm)
    x = _complex_operand(a)
    if len(set(axes)) < len(axes):  # NumPy: iffts, then irfft along the last axis
        if axes[:-1]:
            x = _c2c(x, lengths[:-1], axes[:-1], norm, True)
        return _c2r(x, lengths[-1:], axes[-1:], norm)
    for n, ax in zip(lengths[:-1], axes[:-1]):
        x = _fit(x, ax, n)
    x = _fit(x, axes[-1], lengths[-1] // 2 + 1)
    return _transform(x, "irfft", lengths, axes, norm)


def _one_axis(a: Any, n: Any, axis: int, inverse_real: bool = False) -> tuple[Any, list, list]:
    a = asarray(a)
    ax = _axis_of(a, axis)
    if n is None:
        n = (a.shape[ax] - 1) * 2 if inverse_real else a.shape[ax]
    return a, [_check_length(n)], [ax]


# ---------------------------------------------------------------------------------------
# The functions


@_fft(np.fft.fft)
def fft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out)
    a, lengths, axes = _one_axis(a, n, axis)
    return _c2c(a, lengths, axes, norm, False)


@_fft(np.fft.ifft)
def ifft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out)
    a, lengths, axes = _one_axis(a, n, axis)
    return _c2c(a, lengths, axes, norm, True)


@_fft(np.fft.rfft)
def rfft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out)
    a, lengths, axes = _one_axis(a, n, axis)
    return _r2c(a, lengths, axes, norm, "rfft")


@_fft(np.fft.irfft)
def irfft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out)
    a, lengths, axes = _one_axis(a, n, axis, inverse_real=True)
    return _c2r(a, lengths, axes, norm)


@_fft(np.fft.hfft)
def hfft(a, n=None, axis=-1, norm=None, out=None):
    """The FFT of a Hermitian-symmetric signal given by its first half: irfft of the
    conjugate with the opposite normalisation (as NumPy)."""
    _no_out(out)
    a, lengths, axes = _one_axis(a, n, axis, inverse_real=True)
    return _c2r(lax.conj(_complex_operand(a)), lengths, axes, _swap_direction(norm))


@_fft(np.fft.ihfft)
def ihfft(a, n=None, axis=-1, norm=None, out=None):
    """The inverse of hfft: the conjugate of rfft with the opposite normalisation."""
    _no_out(out)
    a, lengths, axes = _one_axis(a, n, axis)
    return lax.conj(_r2c(a, lengths, axes, _swap_direction(norm), "ihfft"))


@_fft(np.fft.fftn)
def fftn(a, s=None, axes=None, norm=None, out=None):
    _no_out(out)
    a = asarray(a)
    lengths, axes = _cook_nd_args(a, s, axes)
    return _c2c(a, lengths, axes, norm, False)


@_fft(np.fft.ifftn)
def ifftn(a, s=None, axes=None, norm=None, out=None):
    _no_out(out)
    a = asarray(a)
    lengths, axes = _cook_nd_args(a, s, axes)
    return _c2c(a, lengths, axes, norm, True)


def _real_axes(axes: list[int]) -> None:
    if not axes:
        raise TransfuseIndexError(with_location(
            "np.fft.rfftn/irfftn with no axes: there is no last axis to transform (NumPy: "
            "list index out of range)"))


@_fft(np.fft.rfftn)
def rfftn(a, s=None, axes=None, norm=None, out=None):
    _no_out(out)
    a = asarray(a)
    lengths, axes = _cook_nd_args(a, s, axes)
    _real_axes(axes)
    return _r2c(a, lengths, axes, norm, "rfftn")


@_fft(np.fft.irfftn)
def irfftn(a, s=None, axes=None, norm=None, out=None):
    _no_out(out)
    a = asarray(a)
    lengths, axes = _cook_nd_args(a, s, axes, inverse_real=True)
    _real_axes(axes)
    return _c2r(a, lengths, axes, norm)


@_fft(np.fft.fft2)
def fft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    return fftn(a, s, axes, norm, out)


@_fft(np.fft.ifft2)
def ifft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    return ifftn(a, s, axes, norm, out)


@_fft(np.fft.rfft2)
def rfft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    return rfftn(a, s, axes, norm, out)


@_fft(np.fft.irfft2)
def irfft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    return irfftn(a, s, axes, norm, out)


def _shift(x: Any, axes: Any, inverse: bool) -> Any:
    from ._functions import roll

    x = asarray(x)
    if axes is None:
        axes = tuple(range(x.ndim))
    elif isinstance(axes, (int, np.integer)):
        axes = (int(axes),)
    shifts = [x.shape[normalize_axis(ax, x.ndim)] // 2 for ax in axes]
    return roll(x, tuple(-k if inverse else k for k in shifts), tuple(axes))


@_fft(np.fft.fftshift)
def fftshift(x, axes=None):
    """The zero-frequency term moved to the centre (a roll by n // 2 along each axis)."""
    return _shift(x, axes, False)


@_fft(np.fft.ifftshift)
def ifftshift(x, axes=None):
    """The inverse of fftshift (a roll by -(n // 2))."""
    return _shift(x, axes, True)


fftfreq = np.fft.fftfreq  # sizes in, a constant out: NumPy's own
rfftfreq = np.fft.rfftfreq
EXPORTS.update(fftfreq=fftfreq, rfftfreq=rfftfreq)
globals().update(EXPORTS)

__all__ = sorted(EXPORTS)
