"""transfuse.numpy: NumPy's functions under NumPy's names, traceable by every transform.

Called on NumPy arrays outside a trace, these are NumPy itself. Called on traced values
(or reached through `np.f(traced)` by NumPy's dispatch protocols), they record primitives.
Extras beyond NumPy: `logsumexp`, `erf`, `logistic`.
"""

from __future__ import annotations

import numpy as _np

from transfuse.ir import lax as _lax

from . import (  # noqa: F401  (registers implementations)
    _functions,
    _indexing,
    _np_random,
    _numerical,
    _statistics,
    _ufuncs_more,
    fft,
    linalg,
    random,
)
from ._core import EXPORTS as _EXPORTS
from ._core import UFUNC_COMPOSITES as _COMPOSITES
from ._core import UFUNC_PRIMITIVE as _UFUNCS

# dtypes and constants, as in NumPy
float32, float64, int32, int64, bool_ = (_np.float32, _np.float64, _np.int32, _np.int64,
                                         _np.bool_)
pi, e, inf, nan, newaxis = _np.pi, _np.e, _np.inf, _np.nan, None
ndarray = _np.ndarray
dtype = _np.dtype
finfo, iinfo = _np.finfo, _np.iinfo

from . import _constructs, _data_shapes, _einsum, _products, _shapes  # noqa: E402,F401  (issue #16)

for _uf in list(_UFUNCS) + list(_COMPOSITES):
    # A ufunc dispatches to Tracer.__array_ufunc__ by itself: export it as is.
    globals()[_uf.__name__] = _uf
abs = _np.absolute  # noqa: A001
divide = true_divide = _np.true_divide
mod = _np.remainder
pow = _np.power  # noqa: A001
conjugate = _np.conjugate
globals().update(_EXPORTS)


def erf(x):
    """The error function (scipy.special.erf), traceable."""
    return _lax.erf(_float_operand(x))


def logistic(x):
    """The logistic sigmoid 1 / (1 + exp(-x)) (scipy.special.expit), traceable."""
    return _lax.logistic(_float_operand(x))


expit = logistic


def _float_operand(x):
    from ._core import asarray, cast_operand, resolve_loop
    in_dts, _ = resolve_loop(_np.exp, (x,))
    return cast_operand(asarray(x), in_dts[0])


from . import sorting  # noqa: E402,F401  (registers np.sort, np.quantile and the rest)
