"""The discrete Fourier transform primitive `fft` (as JAX's `lax.fft`).

One primitive over the trailing `len(fft_lengths)` axes, every leading axis a stack axis
(so vmap puts its batch axis in front): `fft_type` is

- "fft":   complex -> complex, unnormalised forward transform (np.fft.fftn);
- "ifft":  complex -> complex, inverse transform scaled by 1/N (np.fft.ifftn);
- "rfft":  real -> complex, the last axis halved to n//2 + 1 (np.fft.rfftn);
- "irfft": complex (last axis n//2 + 1) -> real (last axis n), scaled by 1/N
  (np.fft.irfftn: the imaginary parts of the zero and Nyquist bins are ignored).

N is the product of `fft_lengths`. The NumPy-named functions (transfuse/numpy/fft.py)
move the transformed axes to the end, pad or crop to the requested lengths and apply
the other normalisations by a multiplication outside the primitive.
"""

from __future__ import annotations

import numpy as np

from .core import Aval
from .errors import DTypeError, ShapeError
from .primitives import complex_dtype, define, real_dtype

FFT_TYPES = ("fft", "ifft", "rfft", "irfft")


def _fft_rule(x: Aval, *, fft_type: str, fft_lengths: tuple[int, ...]) -> Aval:
    if fft_type not in FFT_TYPES:
        raise ValueError(f"fft: fft_type must be one of {FFT_TYPES}, got {fft_type!r}")
    k = len(fft_lengths)
    if k == 0 or x.ndim < k:
        raise ShapeError(f"fft: {k} transformed axes for an operand of shape {x.shape}")
    if any(int(n) < 1 for n in fft_lengths):
        raise ShapeError(f"fft: transform lengths must be positive, got {fft_lengths}")
    lead, tail = x.shape[:x.ndim - k], tuple(x.shape[x.ndim - k:])
    lengths = tuple(int(n) for n in fft_lengths)
    if fft_type == "rfft":
        if x.dtype.kind != "f":
            raise DTypeError(f"fft (rfft) needs a real floating operand, got {x.dtype}")
        if tail != lengths:
            raise ShapeError(f"fft (rfft): operand trailing shape {tail} != {lengths}")
        return Aval(lead + lengths[:-1] + (lengths[-1] // 2 + 1,), complex_dtype(x.dtype))
    if x.dtype.kind != "c":
        raise DTypeError(f"fft ({fft_type}) needs a complex operand, got {x.dtype}")
    if fft_type == "irfft":
        want = lengths[:-1] + (lengths[-1] // 2 + 1,)
        if tail != want:
            raise ShapeError(f"fft (irfft): operand trailing shape {tail} != {want} for "
                             f"lengths {lengths}")
        return Aval(lead + lengths, real_dtype(x.dtype))
    if tail != lengths:
        raise ShapeError(f"fft ({fft_type}): operand trailing shape {tail} != {lengths}")
    return x


def _fft_impl(x, *, fft_type, fft_lengths):
    x = np.asarray(x)
    k = len(fft_lengths)
    axes = tuple(range(x.ndim - k, x.ndim))
    if fft_type == "irfft":
        out = np.fft.irfftn(x, s=fft_lengths, axes=axes)
        return np.asarray(out, real_dtype(x.dtype))
    fn = {"fft": np.fft.fftn, "ifft": np.fft.ifftn, "rfft": np.fft.rfftn}[fft_type]
    return np.asarray(fn(x, axes=axes), complex_dtype(x.dtype))


define("fft", _fft_rule, _fft_impl,
       doc="the discrete Fourier transform over the trailing len(fft_lengths) axes: "
           "fft_type 'fft', 'ifft' (scaled 1/N), 'rfft' (real in, halved last axis) or "
           "'irfft' (real out, scaled 1/N), as jax.lax.fft")
