"""transfuse.scipy.fft: scipy.fft's discrete Fourier transforms, traced.

The same functions as transfuse.numpy.fft (one `fft` primitive, NumPy 2's dtypes, which
are SciPy's too); SciPy's extra arguments `overwrite_x`, `workers` and `plan` are accepted
and change nothing (a traced transform never writes into its input). With NumPy arrays
alone each function is SciPy's own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from transfuse.numpy import fft as tnp_fft
from transfuse.numpy._core import any_traced, unsupported
from transfuse.numpy._patches import original

TRANSFORMS = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fft2", "ifft2", "rfft2",
              "irfft2", "fftn", "ifftn", "rfftn", "irfftn")
SHIFTS = ("fftshift", "ifftshift")
__all__ = list(TRANSFORMS + SHIFTS)
# transfuse/scipy/__init__.py routes scipy.fft.<name> here while tracing: keep in step.


def _transform(name: str) -> Callable:
    numpy_version = getattr(tnp_fft, name)

    def call(x, *args: Any, overwrite_x: bool = False, workers: Any = None, plan: Any = None,
             **kwargs: Any) -> Any:
        if not any_traced((x, *args), kwargs):
            return original("scipy.fft", name)(x, *args, overwrite_x=overwrite_x,
                                                workers=workers, plan=plan, **kwargs)
        if plan is not None:
            raise unsupported("scipy.fft's plan= argument")
        return numpy_version(x, *args, **kwargs)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"scipy.fft.{name}, traceable (transfuse.numpy.fft.{name})."
    return call


def _shift(name: str) -> Callable:
    numpy_version = getattr(tnp_fft, name)

    @functools.wraps(numpy_version)
    def call(x, axes=None):
        if not any_traced((x,), {}):
            return original("scipy.fft", name)(x, axes)
        return numpy_version(x, axes)
    return call


for _name in TRANSFORMS:
    globals()[_name] = _transform(_name)
for _name in SHIFTS:
    globals()[_name] = _shift(_name)
