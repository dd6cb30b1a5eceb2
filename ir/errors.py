"""transfuse's error classes: each subclasses the matching built-in exception."""

from __future__ import annotations

import sys
from typing import Any

from numpy.exceptions import AxisError
from numpy.linalg import LinAlgError


class TransfuseError(Exception):
    """Base class of every error transfuse raises on bad input."""


class TransfuseTypeError(TransfuseError, TypeError):
    """A value of the wrong kind: wrong dtype, non-array output, unsupported function."""


class TransfuseValueError(TransfuseError, ValueError):
    """A value of the right kind but the wrong shape, size or content."""


class ShapeError(TransfuseValueError):
    """Shapes that do not fit a primitive's shape rule."""


class DTypeError(TransfuseTypeError):
    """dtypes that a primitive or transform does not accept."""


class ConcretizationError(TransfuseTypeError):
    """Python needed a concrete value (`if x > 0`, `float(x)`) from a traced one."""


class UnsupportedError(TransfuseTypeError):
    """A NumPy function or feature with no transfuse rule yet."""


class TransfuseAxisError(TransfuseValueError, AxisError):
    """An axis out of range for an array's rank (NumPy's AxisError: a ValueError and an
    IndexError)."""

    def __init__(self, message: str, axis: int | None = None, ndim: int | None = None):
        AxisError.__init__(self, message)
        self.axis, self.ndim = axis, ndim  # as NumPy's AxisError carries them

    def __str__(self) -> str:
        return self._msg


class TransfuseLinAlgError(TransfuseValueError, LinAlgError):
    """A matrix of the wrong shape or kind for a linear-algebra function (NumPy's
    LinAlgError, a ValueError)."""


class TracerLeakError(TransfuseValueError):
    """A traced value used outside the trace that created it."""


class MutationError(TransfuseValueError):
    """An in-place update whose NumPy semantics cannot be kept."""


class BatchingError(TransfuseValueError):
    """Bad vmap arguments: in_dims, out_dims, batch sizes, randomness."""


class CompileError(TransfuseError, RuntimeError):
    """The compiler could not lower or build a graph."""


class VerificationError(TransfuseValueError):
    """A graph that breaks the IR's invariants."""


class TransfuseIndexError(TransfuseError, IndexError):
    """An index out of range for an array's static shape."""


# ---------------------------------------------------------------------------------------
# NumPy functions without a rule: one wording, naming the function as the user typed it


def missing_rule(func: Any, where: Any = None) -> UnsupportedError:
    """The error for a function, ufunc or method that transfuse cannot trace yet."""
    from .source import with_location
    name = func if isinstance(func, str) else public_name(func)
    return UnsupportedError(with_location(
        f"{name} has no transfuse rule yet, so it cannot be traced; see docs/ir.md for how "
        "to add one", where))


def public_name(func: Any) -> str:
    """The dotted name a user types for func: numpy.linalg.inv, scipy.special.erf, ..."""
    name = getattr(func, "__name__", None)
    if type(func).__name__ == "ufunc":
        return f"{_ufunc_namespace(func, name)}.{name}"
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or name
    if not module or not qualname:
        return str(name or func)
    return f"{_public_module(module)}.{qualname}"


def _public_module(module: str) -> str:
    """numpy._core.fromnumeric -> numpy, numpy.linalg._linalg -> numpy.linalg: the module
    path up to its first private part (the public namespace that re-exports it)."""
    parts = module.split(".")
    public = []
    for part in parts:
        if part.startswith("_"):
            break
        public.append(part)
    return ".".join(public) or module


def _ufunc_namespace(ufunc: Any, name: str) -> str:
    """Where a ufunc lives: numpy's own, else scipy.special's (ufuncs have no __module__)."""
    import numpy as np
    if getattr(np, name, None) is ufunc:
        return "numpy"
    special = sys.modules.get("scipy.special")
    if special is not None and getattr(special, name, None) is ufunc:
        return "scipy.special"
    return _public_module(getattr(ufunc, "__module__", None) or "numpy")


# ---------------------------------------------------------------------------------------
# Traced indices out of range, found when the graph runs (interpreter or compiled kernel)

INDEXING_PRIMITIVES = frozenset(("gather", "scatter", "scatter_add"))


def traced_index_error(sites: Any = ()) -> TransfuseIndexError:
    """The error for a traced index out of range; sites: the SourceInfo of the indexing
    operations that may have raised it (the user's lines), most likely first."""
    from .source import with_location
    message = ("index out of bounds: a traced index is outside the axis it indexes (an "
               "axis of size n takes indices -n to n-1); transfuse checks every gathered "
               "or scattered index and raises, as NumPy does")
    sites = list(dict.fromkeys(s for s in sites if s is not None))
    if len(sites) > 1:
        return TransfuseIndexError(message + "\n  at one of:" +
                                   "".join(f"\n    {s}" for s in sites))
    return TransfuseIndexError(with_location(message, sites[0] if sites else None))


def indexing_sites(graph: Any) -> tuple:
    """The sources of a graph's gathers and scatters (nested graphs included), in order."""
    sites, pending = [], [graph]
    while pending:  # a work list, not recursion: graphs may nest deeply
        for node in pending.pop().nodes:
            if node.prim.name in INDEXING_PRIMITIVES:
                sites.append(node.source)
            pending.extend(v for v in node.params.values()
                           if hasattr(v, "nodes") and hasattr(v, "outputs"))
    return tuple(dict.fromkeys(s for s in sites if s is not None))
