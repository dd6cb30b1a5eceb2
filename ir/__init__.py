"""transfuse.ir: the SSA graph IR, primitives, tracer, reference interpreter."""

from .core import Aval, Graph, Node, Var, aval_of
from .errors import (
    BatchingError,
    CompileError,
    ConcretizationError,
    DTypeError,
    MutationError,
    ShapeError,
    TracerLeakError,
    TransfuseError,
    TransfuseIndexError,
    TransfuseTypeError,
    TransfuseValueError,
    UnsupportedError,
    VerificationError,
)
from .interpreter import interpret
from .primitives import PRIMITIVES, Primitive, define, get_primitive
from .printer import format_graph
from .tracing import Builder, Tracer, bind, building, current_builder, inline, trace_to_graph
from .verify import verify

__all__ = [
    "Aval", "Graph", "Node", "Var", "aval_of", "PRIMITIVES", "Primitive", "define",
    "get_primitive", "interpret", "format_graph", "Builder", "Tracer", "bind", "building",
    "current_builder", "inline", "trace_to_graph", "verify", "TransfuseError",
    "TransfuseTypeError", "TransfuseValueError", "TransfuseIndexError", "ShapeError", "DTypeError",
    "ConcretizationError", "UnsupportedError", "TracerLeakError", "MutationError",
    "BatchingError", "CompileError", "VerificationError",
]
