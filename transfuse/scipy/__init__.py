"""transfuse.scipy: SciPy's functions on traced values (`tx.scipy.linalg`).

SciPy gives NumPy's dispatch no hook (it converts arguments with np.asarray), so while a
function is traced, `scipy.linalg.<name>` is replaced by one that runs the traced
implementation of transfuse.scipy.linalg on the tracing thread
(transfuse/numpy/_patches.py). A name imported before (`from scipy.linalg import
cho_solve`) is SciPy's own function: call it through the module, or use
`tx.scipy.linalg.cho_solve`. The same holds for `scipy.fft`'s transforms
(`tx.scipy.fft`), and scipy.special's Python functions (`tx.scipy.special`; its ufuncs
dispatch by themselves once transfuse.scipy.special is imported, which the first trace
after `import scipy.special` does). Nothing here imports SciPy's modules until used.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from transfuse.numpy._patches import on_tracing_thread, replace_while_tracing
from transfuse.numpy._scalars import as_scalars

LINALG = ("solve_triangular", "cho_factor", "cho_solve", "cholesky", "inv", "det", "solve",
          "lu_factor", "lu_solve", "expm")


FFT = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fft2", "ifft2", "rfft2", "irfft2",
       "fftn", "ifftn", "rfftn", "irfftn", "fftshift", "ifftshift")


def _replacement(module: str, name: str) -> Callable[[Callable], Callable]:
    def factory(scipys: Callable) -> Callable:
        @functools.wraps(scipys)
        def call(*args: Any, **kwargs: Any) -> Any:
            if on_tracing_thread():
                out = getattr(importlib.import_module(f"transfuse.{module}"),
                              name)(*args, **kwargs)
                # 0-d results are NumPy scalars, as NumPy's (polygamma's: 0-d arrays)
                return out if name == "polygamma" else as_scalars(out, args)
            return scipys(*args, **kwargs)
        return call
    return factory


SPECIAL = ("polygamma", "logsumexp", "softmax", "log_softmax", "softplus")


def _special_replacement(name: str) -> Callable[[Callable], Callable]:
    def factory(scipys: Callable) -> Callable:
        # built at the first trace after scipy.special is imported: importing
        # transfuse.scipy.special registers scipy.special's ufuncs for Tracer.__array_ufunc__
        importlib.import_module("transfuse.scipy.special")
        return _replacement("scipy.special", name)(scipys)
    return factory


def _linalg_replacement(name: str) -> Callable[[Callable], Callable]:
    return _replacement("scipy.linalg", name)


for _name in LINALG:
    replace_while_tracing("scipy.linalg", _name, _linalg_replacement(_name))
for _name in FFT:
    replace_while_tracing("scipy.fft", _name, _replacement("scipy.fft", _name))
for _name in SPECIAL:
    replace_while_tracing("scipy.special", _name, _special_replacement(_name))


def __getattr__(attr: str) -> Any:
    if attr in ("linalg", "fft", "special"):
        return importlib.import_module(f"transfuse.scipy.{attr}")
    raise AttributeError(f"module 'transfuse.scipy' has no attribute {attr!r}")
