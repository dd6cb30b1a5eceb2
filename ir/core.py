"""The SSA graph IR: abstract values, variables, nodes and graphs."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DTypeError

if TYPE_CHECKING:
    from .primitives import Primitive
    from .source import SourceInfo

SUPPORTED_DTYPES = tuple(
    np.dtype(d) for d in ("float32", "float64", "int32", "int64", "bool", "uint32", "uint64",
                          "complex64", "complex128")
)
_SHORT = {
    "float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "bool",
    "uint32": "u32", "uint64": "u64", "int8": "i8", "int16": "i16", "uint8": "u8",
    "float16": "f16", "complex64": "c64", "complex128": "c128",
}


@dataclass(frozen=True, slots=True)
class Aval:
    """An abstract value: a static shape and a NumPy dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def update(self, shape=None, dtype=None) -> Aval:
        return Aval(self.shape if shape is None else shape, self.dtype if dtype is None else dtype)

    def __str__(self) -> str:
        return f"{short_dtype(self.dtype)}[{','.join(map(str, self.shape))}]"


def short_dtype(dtype) -> str:
    name = np.dtype(dtype).name
    return _SHORT.get(name, name)


def is_inexact(dtype) -> bool:
    """Floating or complex: the dtypes that carry derivatives."""
    return np.dtype(dtype).kind in "fc"


def aval_of(x: Any) -> Aval:
    """The abstract value of a concrete array or scalar (Python scalars as NumPy would)."""
    arr = np.asarray(x)
    return Aval(arr.shape, check_dtype(arr.dtype))


def check_dtype(dtype) -> np.dtype:
    """dtype, in native byte order, if transfuse supports it; a DTypeError otherwise."""
    dtype = np.dtype(dtype)
    if not dtype.isnative:
        # Byte order is storage, not type: values are converted on entry, as JAX does.
        dtype = dtype.newbyteorder("=")
    if dtype not in SUPPORTED_DTYPES:
        raise DTypeError(
            f"dtype {dtype} is not supported; transfuse supports float32, float64, "
            "complex64, complex128, int32, int64, uint32, uint64 and bool"
        )
    return dtype


_var_ids = itertools.count()


class Var:
    """An SSA value: defined once (by a node, or as a graph input or constant)."""

    __slots__ = ("aval", "uid")

    def __init__(self, aval: Aval):
        self.aval = aval
        self.uid = next(_var_ids)

    def __repr__(self) -> str:
        return f"Var#{self.uid}:{self.aval}"


@dataclass(slots=True, eq=False)
class Node:
    """One primitive applied to input values, defining output values."""

    prim: Primitive
    inputs: list[Var]
    params: dict[str, Any]
    outputs: list[Var]
    source: SourceInfo | None = None

    def __repr__(self) -> str:
        return f"Node({self.prim.name}, in={self.inputs}, out={self.outputs})"


@dataclass(eq=False)
class Graph:
    """A function in SSA form.

    `inputs` are the parameters, `consts` maps captured constants to their arrays,
    `nodes` run in order, `outputs` are returned. Graphs nest: a node's params may hold one.
    Graphs are immutable by convention: rewrites build new graphs.
    """

    inputs: list[Var]
    nodes: list[Node]
    outputs: list[Var]
    consts: dict[Var, np.ndarray] = field(default_factory=dict)
    # Number of trailing inputs that are implicit: values captured from an enclosing
    # trace, then (if `has_rng`) the random key.
    num_captures: int = 0
    has_rng: bool = False
    name: str = "f"
    # Pytree structures of the user's arguments and outputs, when known (not part of the
    # structural identity).
    in_tree: Any = field(default=None, repr=False, compare=False)
    out_tree: Any = field(default=None, repr=False, compare=False)
    # Set by functionalize: the inputs (indices into `inputs`) the original program wrote
    # into; their final values are the trailing outputs, in this order.
    mutated_inputs: tuple[int, ...] = ()
    # Set by tracing: (original object, snapshot) of each captured array (not structural).
    const_origins: list = field(default_factory=list, repr=False, compare=False)
    _key: str | None = field(default=None, repr=False)

    @property
    def in_avals(self) -> list[Aval]:
        return [v.aval for v in self.inputs]

    @property
    def out_avals(self) -> list[Aval]:
        return [v.aval for v in self.outputs]

    @property
    def num_explicit_inputs(self) -> int:
        return len(self.inputs) - self.num_captures - int(self.has_rng)

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        ins = ", ".join(str(a) for a in self.in_avals)
        outs = ", ".join(str(a) for a in self.out_avals)
        return f"<Graph {self.name}({ins}) -> ({outs}), {len(self.nodes)} nodes>"

    # Structural identity: independent of variable names and source locations.
    def structural_key(self) -> str:
        if self._key is None:
            self._key = hashlib.sha256(_serialize(self).encode()).hexdigest()
        return self._key

    def __hash__(self) -> int:
        return hash(self.structural_key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.structural_key() == other.structural_key()

    def has_effect(self, effect: str) -> bool:
        """Whether any node (also in sub-graphs) has the given effect."""
        for node in self.nodes:
            if node.prim.effect == effect:
                return True
            for sub in subgraphs(node):
                if sub.has_effect(effect):
                    return True
        return False

    def producers(self) -> dict[Var, Node]:
        """The node computing each of this graph's values (inputs and consts have none)."""
        return {v: n for n in self.nodes for v in n.outputs}

    def use_counts(self) -> dict[Var, int]:
        """How many node operands read each value (the graph's outputs not counted)."""
        uses: dict[Var, int] = {}
        for node in self.nodes:
            for v in node.inputs:
                uses[v] = uses.get(v, 0) + 1
        return uses


def subgraphs(node: Node) -> list[Graph]:
    """The graphs a node's params hold (a param may be a tuple of them: cond's branches)."""
    found = []
    for p in node.params.values():
        if isinstance(p, Graph):
            found.append(p)
        elif isinstance(p, tuple):
            found.extend(g for g in p if isinstance(g, Graph))
    return found


def _serialize(graph: Graph) -> str:
    index: dict[Var, int] = {}

    def name(v: Var) -> str:
        return f"%{index[v]}"

    parts = []
    for v in graph.inputs:
        index[v] = len(index)
        parts.append(f"in {v.aval}")
    for v, arr in graph.consts.items():
        index[v] = len(index)
        arr = np.ascontiguousarray(arr)
        digest = hashlib.sha256(arr.tobytes()).hexdigest()[:24]
        parts.append(f"const {v.aval} {digest}")
    for node in graph.nodes:
        params = ",".join(f"{k}={_param_str(p)}" for k, p in sorted(node.params.items()))
        ins = ",".join(name(v) for v in node.inputs)
        for v in node.outputs:
            index[v] = len(index)
        outs = ",".join(str(v.aval) for v in node.outputs)
        parts.append(f"{node.prim.name}[{params}]({ins})->{outs}")
    parts.append("out " + ",".join(name(v) for v in graph.outputs))
    parts.append(f"captures={graph.num_captures} rng={graph.has_rng} "
                 f"mutated={tuple(graph.mutated_inputs)}")
    return "\n".join(parts)


def _param_str(p: Any) -> str:
    if isinstance(p, Graph):
        return "graph:" + p.structural_key()
    if isinstance(p, tuple) and any(isinstance(g, Graph) for g in p):
        return "(" + ",".join(_param_str(g) for g in p) + ")"
    if isinstance(p, np.dtype):
        return p.name
    if isinstance(p, type) and issubclass(p, np.generic):
        return np.dtype(p).name
    return repr(p)
