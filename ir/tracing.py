"""Tracing: running a Python function on traced values records an SSA graph.

A `Builder` records nodes. Builders form a stack: a transform applied inside another
transform's trace pushes a new builder. A traced value of an outer builder used while an
inner one records is *captured*: it becomes an implicit input of the inner graph, so the
inner transform treats it as a constant (no perturbation confusion), and the caller
supplies it when the transformed graph is inlined into the outer trace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .core import Aval, Graph, Node, Var, aval_of
from .errors import (
    ConcretizationError,
    DTypeError,
    ShapeError,
    TracerLeakError,
    TransfuseTypeError,
    UnsupportedError,
    missing_rule,
)
from .primitives import ELEMENTWISE, Primitive, random_streams, shift_streams
from .source import SourceInfo, scipy_caller, user_frame_info, with_location

# NumPy functions, ufuncs and method names -> implementations on traced values.
# Filled by transfuse.numpy at import; ir/ only looks things up here.
NUMPY_TABLE: dict[Any, Callable] = {}


class _Tracing(threading.local):
    """The builders being traced into, innermost last, one stack per thread: threads that
    trace at the same time (a Dask worker's, the threaded scheduler's) each have their own,
    and one thread's trace is never another's enclosing trace."""

    def __init__(self) -> None:
        self.stack: list[Builder] = []


_TRACING = _Tracing()

# Context managers entered around the trace of every function, as scope(fn, rerun), where
# rerun() traces fn again (for diagnostics). Filled by transfuse.numpy at import (np.random
# interception); ir/ only enters them.
TRACE_SCOPES: list[Callable[[Callable, Callable[[], Any]], Any]] = []


class Builder:
    """Records the nodes of one graph under construction."""

    def __init__(self, name: str = "f"):
        self.name = name
        self.inputs: list[Var] = []
        self.nodes: list[Node] = []
        self.consts: dict[Var, np.ndarray] = {}
        self._const_by_id: dict[int, Var] = {}
        # (original, snapshot) per captured array: the originals keep ids unique, and let
        # caches of transformed graphs notice when a captured array changed in place.
        self.const_origins: list[tuple[Any, np.ndarray]] = []
        self.captured: list[Tracer] = []  # outer traced values, in capture order
        self._capture_vars: dict[int, Var] = {}
        self._rng: Tracer | None = None
        self._stream = 0
        self.source_override: SourceInfo | None = None
        # Strided stand-ins for the memory layout of values that may be views (used by
        # transfuse.numpy to decide, as NumPy does, whether a reshape is a view or a copy).
        self.layouts: dict[Var, np.ndarray] = {}
        # Values that stand for NumPy scalars (elements taken by integer indexing, full
        # reductions, ufuncs of 0-d values: transfuse/numpy/_scalars.py): `op=` rebinds
        # them, as Python does for an immutable NumPy scalar.
        self.scalars: set[Var] = set()
        # Where the inputs' values come from, when the transform knows them (grad, jvp,
        # functionalize: arrays or an outer trace's values); None under jit and vmap.
        # ir/concrete.py computes values from them; asking sets `data_dependent`.
        self.known: list[Any] | None = None
        self.data_dependent = False

    # -- values -------------------------------------------------------------------------
    def new_input(self, aval: Aval) -> Tracer:
        var = Var(aval)
        self.inputs.append(var)
        return Tracer(self, var)

    def to_var(self, x: Any) -> Var:
        """The variable for x in this graph: its own, a capture, or a new constant."""
        if isinstance(x, Tracer):
            if x._builder is self:
                return x._var
            return self._capture(x)
        return self._const(x)

    def _capture(self, x: Tracer) -> Var:
        if x._builder not in _TRACING.stack:
            raise TracerLeakError(with_location(
                "a traced value escaped from the transform or jit that created it "
                "(stored in a global, a closure or an attribute?); pass it as an argument "
                "instead"))
        var = self._capture_vars.get(id(x))
        if var is None:
            var = Var(x.aval)
            self._capture_vars[id(x)] = var
            self.captured.append(x)
        return var

    def _const(self, x: Any) -> Var:
        key = id(x)
        var = self._const_by_id.get(key)
        if var is None:
            arr = np.array(x, copy=True)  # a snapshot: later mutation of x cannot leak in
            var = Var(aval_of(arr))
            self.consts[var] = arr
            self._const_by_id[key] = var
            self.const_origins.append((x, arr))
        return var

    def rng_key(self) -> Tracer:
        """This graph's random key: an implicit input, created on first use."""
        if self._rng is None:
            self._rng = Tracer(self, Var(Aval((), np.uint64)))
        return self._rng

    def reserve_streams(self, count: int) -> int:
        """Reserve `count` consecutive streams of this graph's key; returns the first."""
        first = self._stream
        self._stream += count
        return first

    def next_stream(self) -> int:
        """The next call site's stream of this graph's key: 0, 1, 2, ... in program order."""
        stream = self._stream
        self._stream += 1
        return stream

    # -- nodes --------------------------------------------------------------------------
    def emit(self, prim: Primitive, args: Sequence[Any], params: dict[str, Any]) -> list[Tracer]:
        in_vars = [self.to_var(a) for a in args]
        source = self.source_override or user_frame_info()
        try:
            out_avals = prim.out_avals([v.aval for v in in_vars], params)
        except (ShapeError, DTypeError) as e:
            raise type(e)(with_location(str(e), source)) from None
        out_vars = [Var(a) for a in out_avals]
        self.nodes.append(Node(prim, in_vars, dict(params), out_vars, source))
        if prim.name in ELEMENTWISE and self.layouts:
            layout = elementwise_layout([self.layouts.get(v) for v in in_vars], in_vars,
                                        out_avals[0].shape)
            if layout is not None:
                self.layouts[out_vars[0]] = layout
        return [Tracer(self, v) for v in out_vars]

    def finish(self, outputs: Sequence[Any]) -> Graph:
        out_vars = [self.to_var(_check_output(o)) for o in outputs]
        inputs = list(self.inputs) + [self._capture_vars[id(t)] for t in self.captured]
        if self._rng is not None:
            inputs.append(self._rng._var)
        return Graph(inputs, self.nodes, out_vars, self.consts,
                     num_captures=len(self.captured), has_rng=self._rng is not None,
                     name=self.name)

    def implicit_args(self) -> list[Any]:
        """What a caller passes for the implicit inputs: captured values, then a key."""
        args: list[Any] = list(self.captured)
        if self._rng is not None:
            args.append(RngPlaceholder(self._stream))
        return args


@dataclasses.dataclass(frozen=True)
class RngPlaceholder:
    """Stands for a graph's random key until it runs; `streams`: how many it draws from."""

    streams: int


# ---------------------------------------------------------------------------------------
# Memory layouts. A zero-byte strided stand-in per value models where NumPy would put its
# elements; transfuse.numpy asks it whether a reshape is a view or a copy, as NumPy does.

_K_ORDER_EXACT_MAX = 1 << 24


def fresh_layout(shape: tuple[int, ...]) -> np.ndarray:
    """The layout of a fresh C-ordered array of `shape` (one byte per element, no memory)."""
    return _strided(shape, _c_strides(shape))


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def _strided(shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    base = np.zeros(1, np.uint8)
    return np.lib.stride_tricks.as_strided(base, shape, strides, writeable=False)


def elementwise_layout(in_layouts: list, in_vars: list[Var], out_shape: tuple[int, ...]
                       ) -> np.ndarray | None:
    """NumPy's "K" order for an elementwise result, or None when it is plain C order."""
    if all(lay is None or lay.flags.c_contiguous for lay in in_layouts):
        return None
    stand_ins = [np.broadcast_to(lay if lay is not None else fresh_layout(v.aval.shape),
                                 out_shape) for lay, v in zip(in_layouts, in_vars)]
    if int(np.prod(out_shape, dtype=np.int64)) > _K_ORDER_EXACT_MAX:
        # Too big to let nditer allocate: follow the first operand that is not C ordered.
        first = next(s for s, lay in zip(stand_ins, in_layouts)
                     if lay is not None and not lay.flags.c_contiguous)
        order = sorted(range(len(out_shape)), key=lambda a: -abs(first.strides[a]))
        return _permuted_layout(out_shape, order)
    # nditer allocates the output exactly as a ufunc would, without reading the inputs.
    it = np.nditer(stand_ins + [None], flags=["zerosize_ok", "refs_ok"],
                   op_flags=[["readonly"]] * len(stand_ins) + [["writeonly", "allocate"]],
                   op_dtypes=[None] * len(stand_ins) + [np.uint8], order="K")
    allocated = it.operands[-1]
    return _strided(out_shape, allocated.strides)


def _permuted_layout(shape: tuple[int, ...], order: list[int]) -> np.ndarray:
    strides = [0] * len(shape)
    step = 1
    for axis in reversed(order):
        strides[axis] = step
        step *= max(shape[axis], 1)
    return _strided(shape, tuple(strides))


def _check_output(x: Any) -> Any:
    if isinstance(x, (Tracer, np.ndarray, np.generic, bool, int, float, complex)):
        return x
    raise TransfuseTypeError(with_location(
        f"a transformed function must return arrays, got a {type(x).__name__}"))


def current_builder() -> Builder | None:
    stack = _TRACING.stack
    return stack[-1] if stack else None


@contextlib.contextmanager
def building(name: str = "f"):
    """Push a new builder for the duration of the block."""
    builder = Builder(name)
    stack = _TRACING.stack
    stack.append(builder)
    try:
        yield builder
    finally:
        stack.pop()


@contextlib.contextmanager
def source_of(source: SourceInfo | None):
    """Nodes emitted in this block are attributed to `source` (used by rewrites)."""
    builder = current_builder()
    if builder is None or source is None:
        yield
        return
    saved = builder.source_override
    builder.source_override = source
    try:
        yield
    finally:
        builder.source_override = saved


def bind(prim: Primitive, *args: Any, **params: Any) -> Any:
    """Apply a primitive: record it when tracing, run its NumPy reference otherwise."""
    builder = current_builder()
    traced = builder is not None and (
        not args or any(isinstance(a, Tracer) for a in args))
    if traced:
        outs = builder.emit(prim, args, params)
    else:
        if any(isinstance(a, Tracer) for a in args):
            raise TracerLeakError(with_location(
                "a traced value escaped from the transform that created it"))
        outs = prim.impl(*args, **params)
        if not prim.multiple_results:
            return outs
        return list(outs)
    return outs if prim.multiple_results else outs[0]


def trace_to_graph(fn: Callable, in_avals: Sequence[Aval], name: str = "f",
                   known: Sequence[Any] | None = None) -> tuple[Graph, list[Any]]:
    """Trace fn on flat inputs of `in_avals`; it must return a flat list of outputs.

    Returns the graph and the values to pass for its implicit inputs (captured outer
    traced values; for the random key, a placeholder that `call_graph` replaces).
    `known`: the inputs' values (ir/concrete.py), where the transform has them.
    """
    def rerun() -> None:
        with building(name) as again:
            fn(*[again.new_input(a) for a in in_avals])

    with building(name) as builder, contextlib.ExitStack() as scopes:
        for scope in TRACE_SCOPES:
            scopes.enter_context(scope(fn, rerun))
        tracers = [builder.new_input(a) for a in in_avals]
        builder.known = None if known is None else list(known)
        try:
            outs = fn(*tracers)
        except ValueError as e:
            raise _explain_numpy_setitem(e) from e
        graph = builder.finish(outs)
    graph.const_origins = builder.const_origins
    graph.data_dependent = builder.data_dependent
    return graph, builder.implicit_args()


def _explain_numpy_setitem(error: ValueError) -> Exception:
    """NumPy reports `ndarray[i] = traced` as a sequence error; say what really happened."""
    if "setting an array element with a sequence" not in str(error):
        return error
    from .errors import MutationError
    from .source import SourceInfo, _is_library
    where = None
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if not _is_library(code.co_filename):
            where = SourceInfo(code.co_filename, tb.tb_lineno, code.co_name)
        tb = tb.tb_next
    return MutationError(with_location(
        "cannot write a traced value into a plain NumPy array (made with np.zeros, np.empty, "
        "...): it cannot hold traced values. Create the buffer with tnp.zeros(...) / "
        "tnp.empty(...) or np.zeros_like(x) instead", where))


def inline(graph: Graph, args: Sequence[Any]) -> list[Any]:
    """Evaluate a graph node by node through `bind`: records into the current trace."""
    env = inline_env(graph, args)
    return [env[v] for v in graph.outputs]


def inline_env(graph: Graph, args: Sequence[Any]) -> dict[Var, Any]:
    """`inline`, returning the value of every variable of the graph."""
    env: dict[Var, Any] = dict(zip(graph.inputs, args))
    env.update(graph.consts)
    builder = current_builder()
    for node in graph.nodes:
        with source_of(node.source if builder is not None else None):
            outs = bind(node.prim, *[env[v] for v in node.inputs], **node.params)
        if not node.prim.multiple_results:
            outs = [outs]
        env.update(zip(node.outputs, outs))
    return env


def resolve_implicit(graph: Graph, implicit: Sequence[Any], next_key: Callable[[int], Any]
                     ) -> tuple[Graph, list[Any]]:
    """The graph to run and its implicit arguments, the random-key placeholder replaced.

    Outside a trace the key is `next_key(n)`, the next n streams of the global state, so the
    graph draws what the same calls made eagerly would. Inside a trace the graph draws from
    the trace's own key, on streams reserved for it (its draws are renumbered above the
    trace's earlier ones).
    """
    out = []
    for a in implicit:
        if isinstance(a, RngPlaceholder):
            builder = current_builder()
            streams = max(a.streams, random_streams(graph))
            if builder is not None:
                graph = shift_streams(graph, builder.reserve_streams(streams))
                a = builder.rng_key()
            else:
                a = next_key(streams)
        out.append(a)
    return graph, out


# ---------------------------------------------------------------------------------------
# Traced values


def _dispatch(key: Any, *args: Any, **kwargs: Any) -> Any:
    impl = NUMPY_TABLE.get(key)
    if impl is None:
        raise missing_rule(key)
    out = impl(*args, **kwargs)
    # A NumPy function's 0-d results may be NumPy scalars (the string keys are operators
    # and indexing, which decide that themselves).
    return out if isinstance(key, str) else _as_numpy_returns(key, args, kwargs, out)


def _as_numpy_returns(key: Any, args: tuple, kwargs: dict, out: Any) -> Any:
    """out as NumPy's `key` returns it (NUMPY_TABLE["result"], set by transfuse.numpy)."""
    policy = NUMPY_TABLE.get("result")
    return out if policy is None else policy(key, args, kwargs, out)


def _concretization_error(what: str) -> ConcretizationError:
    return ConcretizationError(with_location(
        f"{what} needs a concrete value, but this value is traced (its contents are not "
        "known while transfuse records the function). Python control flow on traced "
        "values (`if x > 0:`, `while`, float(x), int(x), x.item()) cannot be recorded; "
        "select between values with tnp.where(cond, a, b), or branch and loop with "
        "transfuse.lax.cond / switch / while_loop / fori_loop / scan instead. (Writing a "
        "traced value into a plain NumPy array made with np.zeros/np.empty also ends here: "
        "create such buffers with tnp.zeros(...) or np.zeros_like(x).)"))


def _construct_error() -> ConcretizationError | None:
    """The error naming np.array([...]), np.r_[...], np.int64(x), float(x), ... when the
    user's expression is one of them (ir/constructs.py)."""
    from .constructs import describe_construct
    message = describe_construct()
    return None if message is None else ConcretizationError(with_location(message))


def _ufunc(ufunc, *args):
    return _dispatch("ufunc", ufunc, args, {})


def _binary(ufunc):
    def op(self, other):
        return _ufunc(ufunc, self, other)

    def rop(self, other):
        return _ufunc(ufunc, other, self)

    def iop(self, other):
        return _dispatch("inplace", ufunc, self, other)

    return op, rop, iop


def _method(np_func):
    def method(self, *args, **kwargs):
        impl = NUMPY_TABLE.get(np_func)
        if impl is None:  # named as the user wrote it: x.nonzero() is ndarray.nonzero
            raise missing_rule(f"numpy.ndarray.{np_func.__name__}")
        return _as_numpy_returns(f"ndarray.{np_func.__name__}", (self, *args), kwargs,
                                 impl(self, *args, **kwargs))
    method.__name__ = np_func.__name__
    return method


class Tracer:
    """A traced array: behaves like a NumPy array, records what is done to it."""

    __slots__ = ("_builder", "_var", "__weakref__")
    __array_priority__ = 1000

    def __init__(self, builder: Builder, var: Var):
        self._builder = builder
        self._var = var

    # -- array attributes ---------------------------------------------------------------
    @property
    def aval(self) -> Aval:
        return self._var.aval

    @property
    def shape(self) -> tuple[int, ...]:
        return self._var.aval.shape

    @property
    def dtype(self) -> np.dtype:
        return self._var.aval.dtype

    @property
    def ndim(self) -> int:
        return len(self._var.aval.shape)

    @property
    def size(self) -> int:
        return self._var.aval.size

    @property
    def T(self) -> Tracer:
        return _dispatch("T", self)

    @property
    def real(self) -> Tracer:
        return _dispatch(np.real, self)

    @property
    def imag(self) -> Tracer:
        return _dispatch(np.imag, self)

    @property
    def mT(self) -> Tracer:
        return _dispatch(np.swapaxes, self, -1, -2)

    @property
    def flat(self):
        raise UnsupportedError(with_location(".flat is not supported on traced values; "
                                             "use .ravel()"))

    def __repr__(self) -> str:
        return f"Traced<{self.aval}>"

    __hash__ = object.__hash__

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    # -- conversions that need a concrete value ----------------------------------------
    def __bool__(self):
        raise _concretization_error("bool() of a traced array (an `if`, `while`, `and`, "
                                    "`or` or `not` on it)")

    def __float__(self):
        raise _construct_error() or _concretization_error("float() of a traced array")

    def __int__(self):
        raise _construct_error() or _concretization_error("int() of a traced array")

    def __complex__(self):
        raise _construct_error() or _concretization_error("complex() of a traced array")

    def __index__(self):
        raise _concretization_error("using a traced array as a Python index")

    def item(self, *args):
        raise _concretization_error(".item() of a traced array")

    def tolist(self):
        raise _concretization_error(".tolist() of a traced array")

    def __array__(self, dtype=None, copy=None):
        scipy_function = scipy_caller()
        if scipy_function is not None:
            module = (".".join(scipy_function.split(".")[:2])
                      if scipy_function.startswith("scipy.") else "scipy.linalg")
            raise UnsupportedError(with_location(
                f"{scipy_function} was given a traced value: SciPy turns its arguments into "
                "NumPy arrays, which traced values cannot become. Call the function through "
                f"its module ({module}.<name>(...): transfuse traces the ones it supports, "
                f"see docs/numpy.md) or use transfuse.{module}"))
        construct = _construct_error()
        if construct is not None:
            raise construct
        raise ConcretizationError(with_location(
            "a traced value cannot become a concrete NumPy array. This happens with "
            "np.asarray(x) on a traced x, or when a traced value is written into a plain "
            "NumPy array (buffers made with np.zeros, np.empty, ...). Create buffers that "
            "hold traced values with tnp.zeros(...) / tnp.empty(...) or np.zeros_like(x)"))

    # -- NumPy protocols ----------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        key = ufunc if method == "__call__" else (ufunc, method)
        return _dispatch("ufunc", key, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _dispatch(func, *args, **kwargs)

    # -- indexing -----------------------------------------------------------------------
    def __getitem__(self, index):
        return _dispatch("getitem", self, index)

    def __setitem__(self, index, value):
        _dispatch("setitem", self, index, value)

    # -- operators ----------------------------------------------------------------------
    __add__, __radd__, __iadd__ = _binary(np.add)
    __sub__, __rsub__, __isub__ = _binary(np.subtract)
    __mul__, __rmul__, __imul__ = _binary(np.multiply)
    __truediv__, __rtruediv__, __itruediv__ = _binary(np.true_divide)
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binary(np.floor_divide)
    __mod__, __rmod__, __imod__ = _binary(np.mod)
    __pow__, __rpow__, __ipow__ = _binary(np.power)
    __matmul__, __rmatmul__, __imatmul__ = _binary(np.matmul)
    __and__, __rand__, __iand__ = _binary(np.bitwise_and)
    __or__, __ror__, __ior__ = _binary(np.bitwise_or)
    __xor__, __rxor__, __ixor__ = _binary(np.bitwise_xor)
    __lt__ = _binary(np.less)[0]
    __le__ = _binary(np.less_equal)[0]
    __gt__ = _binary(np.greater)[0]
    __ge__ = _binary(np.greater_equal)[0]
    __eq__ = _binary(np.equal)[0]
    __ne__ = _binary(np.not_equal)[0]

    def __neg__(self):
        return _ufunc(np.negative, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ufunc(np.absolute, self)

    def __invert__(self):
        return _ufunc(np.invert, self)

    # -- methods (NumPy's, through the same table as the functions) --------------------
    sum = _method(np.sum)
    prod = _method(np.prod)
    mean = _method(np.mean)
    var = _method(np.var)
    std = _method(np.std)
    max = _method(np.max)
    min = _method(np.min)
    argmax = _method(np.argmax)
    argmin = _method(np.argmin)
    any = _method(np.any)
    all = _method(np.all)
    cumsum = _method(np.cumsum)
    cumprod = _method(np.cumprod)
    clip = _method(np.clip)
    round = _method(np.round)
    dot = _method(np.dot)
    swapaxes = _method(np.swapaxes)
    ravel = _method(np.ravel)
    repeat = _method(np.repeat)
    nonzero = _method(np.nonzero)
    diagonal = _method(np.diagonal)
    trace = _method(np.trace)
    conj = _method(np.conj)
    conjugate = _method(np.conj)
    argsort = _method(np.argsort)
    argpartition = _method(np.argpartition)
    searchsorted = _method(np.searchsorted)

    def sort(self, axis=-1, kind=None, order=None, *, stable=None):
        """In place, as ndarray.sort: the array's contents replaced by np.sort's."""
        self[...] = _dispatch(np.sort, self, axis, kind, order, stable=stable)

    def partition(self, kth, axis=-1, kind="introselect", order=None):
        """In place, as ndarray.partition (a full stable sort, as np.partition)."""
        self[...] = _dispatch(np.partition, self, kth, axis, kind, order)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _dispatch(np.reshape, self, shape, order=order)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _dispatch(np.transpose, self, axes or None)

    def squeeze(self, axis=None):
        return _dispatch(np.squeeze, self, axis)

    def astype(self, dtype, copy=True):
        return _dispatch("astype", self, dtype, copy)

    def copy(self, order="C"):
        return _dispatch(np.copy, self, order=order)

    def flatten(self, order="C"):
        return _dispatch("flatten", self, order)

    def fill(self, value):
        _dispatch("fill", self, value)

    def view(self, *args):
        raise UnsupportedError(with_location(".view() is not supported on traced values"))


def is_traced(x: Any) -> bool:
    return isinstance(x, Tracer)


def aval_of_value(x: Any) -> Aval:
    """The aval of a traced value or of a concrete array or scalar."""
    if isinstance(x, Tracer):
        return x.aval
    return aval_of(x)
