"""transfuse's error classes: each subclasses the matching built-in exception."""

from __future__ import annotations


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
