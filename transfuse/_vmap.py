"""`transfuse.vmap`: vectorizing map as a graph rewrite (torch.func.vmap's signature).

The function is staged on one batch entry (the arguments with their batch dims removed),
`prepare`d, batched by `compiler.batching.batch_graph`, and wrapped in a graph that splits
the random key per entry, runs the batch in chunks, and moves each output's batch dim
where `out_dims` says. That graph is cached by signature, then interpreted or inlined into
an enclosing trace, which is how vmap composes with the other transforms.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transfuse.compiler.batching import batch_graph, move_batch_dim
from transfuse.compiler.functionalize import prepare
from transfuse.ir import lax
from transfuse.ir.core import Graph, Node
from transfuse.ir.errors import BatchingError
from transfuse.ir.primitives import PRIMITIVES, random_streams, shift_streams
from transfuse.ir.source import SourceInfo, with_location
from transfuse.ir.tracing import Tracer, bind, current_builder, inline, trace_to_graph
from transfuse.ir.tree import TreeDef, tree_flatten, tree_unflatten, treedef_children_leaves

from ._functionalize import check_no_aliasing, write_back
from ._staging import (
    GraphCache,
    execute,
    in_trace,
    is_array_leaf,
    leaf_aval,
    signature,
    stage,
)

_CACHE = GraphCache()
RANDOMNESS = ("error", "different", "same")
Dim = int | None


def vmap(func: Callable, in_dims: Any = 0, out_dims: Any = 0, randomness: str = "error", *,
         chunk_size: int | None = None) -> Callable:
    """func mapped over a batch axis of its arguments, as one batched computation.

    in_dims/out_dims: an int (negative counts from the end), None (not batched), or a
    pytree prefix of the positional arguments / outputs. randomness: 'error' (drawing is an
    error), 'different' (an independent draw per entry), 'same' (one draw for all).
    chunk_size: compute that many entries at a time (same results).
    """
    config = _Config(in_dims, out_dims, _check_randomness(randomness),
                     _check_chunk_size(chunk_size), _name(func))

    @functools.wraps(func)
    def vmapped(*args: Any, **kwargs: Any) -> Any:
        return _call(vmapped, func, config, args, kwargs)

    return vmapped


@dataclass
class _Config:
    in_dims: Any
    out_dims: Any
    randomness: str
    chunk_size: int | None
    name: str
    # Per-leaf in_dims by argument structure (matching the prefix is not free).
    leaf_dims: dict = field(default_factory=dict)


def _name(func: Callable) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


def _check_randomness(randomness: Any) -> str:
    if randomness not in RANDOMNESS:
        raise BatchingError(with_location(
            f"vmap: randomness must be 'error', 'different' or 'same', got {randomness!r}"))
    return randomness


def _check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise BatchingError(with_location(
            f"vmap: chunk_size must be None or a positive int, got {chunk_size!r}"))
    return int(chunk_size)


# ---------------------------------------------------------------------------------------
# A call


@dataclass
class _Plan:
    """The wrapped graph for one signature, and how to use its outputs."""

    graph: Graph
    out_tree: TreeDef
    implicit: list  # the random-key placeholder, when the function draws
    mutated_inputs: tuple[int, ...]
    num_outputs: int


def _call(vmapped: Callable, func: Callable, config: _Config, args: tuple, kwargs: dict
          ) -> Any:
    leaves, in_tree = tree_flatten((tuple(args), dict(kwargs)))
    if any(_is_dask_array(x) for x in leaves):  # map over the blocks: transfuse.dask
        from transfuse.dask import dispatch
        return dispatch(vmapped, func, config)(*args, **kwargs)
    dims = config.leaf_dims.get(in_tree)
    if dims is None:
        dims = config.leaf_dims[in_tree] = _leaf_in_dims(config, args, kwargs)
    names = _Names(func, args, kwargs, len(leaves))
    dims = [_check_in_dim(x, d, names, i) for i, (x, d) in enumerate(zip(leaves, dims))]
    axis_size = _axis_size(leaves, dims, names, config.name)
    dyn_index = [i for i, x in enumerate(leaves) if is_array_leaf(x)]
    key = signature(leaves, dyn_index, in_tree)
    def build() -> tuple[_Plan, list]:
        return _plan(func, config, leaves, in_tree, dims, axis_size, names)

    if in_trace():
        plan, captures = build()
    else:  # outside a trace nothing is captured
        plan, captures = _CACHE.lookup(vmapped, key, build)
    dyn_args = [leaves[i] for i in dyn_index]
    graph_args = dyn_args + captures
    check_no_aliasing(graph_args, plan.mutated_inputs)
    outs = execute(plan.graph, graph_args, plan.implicit)
    outs, new_values = outs[:plan.num_outputs], outs[plan.num_outputs:]
    write_back(graph_args, plan.mutated_inputs, new_values)
    return tree_unflatten(plan.out_tree, _detach_consts(plan.graph, outs))


def _is_dask_array(x: Any) -> bool:
    """A dask.array.Array (by its module's name: dask is not imported for the check)."""
    return type(x).__module__.startswith("dask.array") and hasattr(x, "__dask_graph__")


def _detach_consts(graph: Graph, outs: list) -> list:
    """Outputs that are the cached graph's own constants are copied: it keeps its own."""
    return [np.array(o, copy=True) if v in graph.consts else o
            for v, o in zip(graph.outputs, outs)]


def _plan(func: Callable, config: _Config, leaves: list, in_tree: TreeDef, dims: list[Dim],
          axis_size: int, names: _Names) -> tuple[_Plan, list]:
    """Stage func on one entry, batch its graph and wrap it: the plan and the captures."""
    per_example = [_stand_in(x, d) for x, d in zip(leaves, dims)]
    call_args, call_kwargs = tree_unflatten(in_tree, per_example)
    staged = stage(_checking_outputs(func, config.name), call_args, call_kwargs)
    graph = prepare(staged.graph)
    dyn_dims = [dims[i] for i in staged.dyn_index]
    captures = [a for a in staged.implicit if isinstance(a, Tracer)]
    key_dim = _key_dim(graph, config)
    in_dims = dyn_dims + [None] * len(captures) + ([key_dim] if graph.has_rng else [])
    num_outputs = len(graph.outputs) - len(graph.mutated_inputs)
    out_leaf_dims = _leaf_out_dims(config, staged.out_tree, num_outputs)
    mutated_dims = [_mutated_dim(i, dyn_dims, names, staged.dyn_index)
                    for i in graph.mutated_inputs]
    out_names = [f"output{p}" if p else "the output" for p in _out_paths(staged.out_tree)]
    wrapper = _Wrapper(graph, in_dims, axis_size, config,
                       out_leaf_dims + mutated_dims, out_names + [""] * len(mutated_dims))
    in_avals = [leaf_aval(leaves[i]) for i in staged.dyn_index] + [c.aval for c in captures]
    wrapped, implicit = trace_to_graph(wrapper, in_avals, f"vmap_{graph.name}")
    wrapped.in_tree, wrapped.out_tree = in_tree, staged.out_tree
    return _Plan(wrapped, staged.out_tree, implicit, graph.mutated_inputs, num_outputs), \
        captures


def _stand_in(x: Any, dim: Dim) -> Any:
    """What the function is traced on: a batched leaf loses its batch dim."""
    if dim is None:
        return x
    a = leaf_aval(x)
    shape = a.shape[:dim] + a.shape[dim + 1:]
    return np.broadcast_to(np.zeros((), a.dtype), shape)


# ---------------------------------------------------------------------------------------
# The wrapped graph: key splitting, chunks, output batch dims


class _Wrapper:
    """Traced into the graph that vmap runs: batched graph(s) plus the plumbing."""

    def __init__(self, graph: Graph, in_dims: list[Dim], axis_size: int, config: _Config,
                 out_dims: list, out_names: list[str]):
        self.graph = graph
        self.name = config.name
        self.in_dims = in_dims
        self.axis_size = axis_size
        self.chunks = _chunks(axis_size, config.chunk_size)
        self.out_dims = out_dims
        self.out_names = out_names
        self._batched: dict[int, tuple[Graph, list[Dim]]] = {}
        self._stream_offset = 0  # where the batched function's draws start (see _key)

    def __call__(self, *inputs: Any) -> list[Any]:
        inputs = list(inputs)
        if self.graph.has_rng:
            inputs.append(self._key())
        if len(self.chunks) == 1:
            outs, dims = self._run(inputs, self.axis_size, whole=True)
            return [self._place(o, d, k, self.axis_size) for k, (o, d) in
                    enumerate(zip(outs, dims))]
        per_chunk = []
        for start, size in self.chunks:
            outs, dims = self._run(self._slice(inputs, start, size), size, whole=False)
            per_chunk.append([self._place(o, d, k, size)
                              for k, (o, d) in enumerate(zip(outs, dims))])
        return [self._join([c[k] for c in per_chunk], k) for k in range(len(self.out_dims))]

    def _key(self) -> Any:
        """The batched function's key, from streams of the enclosing trace's key reserved
        for it, so that draws made after this vmap in the same trace read other streams."""
        builder = current_builder()
        if self.in_dims[-1] is None:  # randomness='same': the function's own draws
            self._stream_offset = builder.reserve_streams(random_streams(self.graph))
            return builder.rng_key()
        lanes = lax.random_fold_in(builder.rng_key(), builder.next_stream())
        return lax.random_split(lanes, self.axis_size)

    def _batched_graph(self, size: int) -> tuple[Graph, list[Dim]]:
        if size not in self._batched:
            self._batched[size] = batch_graph(self.graph, self.in_dims, size)
        return self._batched[size]

    def _run(self, inputs: list, size: int, whole: bool) -> tuple[list, list[Dim]]:
        batched, dims = self._batched_graph(size)
        batched = shift_streams(batched, self._stream_offset)
        if whole:
            return inline(batched, inputs), dims
        # Each chunk is one call: the interpreter frees its intermediates after it.
        outs = bind(PRIMITIVES["call"], *inputs, graph=_plain(batched))
        return list(outs), dims

    def _slice(self, inputs: list, start: int, size: int) -> list:
        return [x if d is None else lax.slice_axis(x, d, start, size)
                for x, d in zip(inputs, self.in_dims)]

    def _place(self, out: Any, dim: Dim, k: int, size: int) -> Any:
        """Output k with its batch dim where out_dims asks (broadcast if unbatched)."""
        target = self.out_dims[k]
        if isinstance(target, _UnbatchedWrite):
            if dim is not None:
                raise BatchingError(with_location(
                    f"vmap({self.name}): the function writes a value that differs per batch "
                    "entry into "
                    f"{target.name}, which is not batched (in_dims None); batch that "
                    "argument, or write into a fresh array (tnp.zeros_like) instead"))
            return out
        if target is None:
            if dim is not None:
                raise BatchingError(with_location(
                    f"vmap({self.name}): out_dims is None for {self.out_names[k]}, but that "
                    "output "
                    "depends on the batched inputs (it differs per batch entry); give it "
                    "an int out_dim"))
            return out
        rank = len(lax.shape(out)) + (dim is None)
        return move_batch_dim(out, dim, self._out_dim(k, rank), size)

    def _out_dim(self, k: int, rank: int) -> int:
        target = self.out_dims[k]
        if isinstance(target, _MutatedDim):
            return target.dim
        if not -rank <= target < rank:
            raise BatchingError(with_location(
                f"vmap({self.name}): out_dims {target} is out of range for "
                f"{self.out_names[k]}, which "
                f"has rank {rank} with the batch dim; expected an int in "
                f"[{-rank}, {rank - 1}] or None"))
        return target % rank

    def _join(self, parts: list, k: int) -> Any:
        target = self.out_dims[k]
        if target is None or isinstance(target, _UnbatchedWrite):
            return parts[0]
        return lax.concatenate(parts, self._out_dim(k, len(lax.shape(parts[0]))))


def _plain(graph: Graph) -> Graph:
    """A batched graph as a callable sub-graph: all of its inputs explicit."""
    return Graph(graph.inputs, graph.nodes, graph.outputs, graph.consts, name=graph.name)


def _chunks(axis_size: int, chunk_size: int | None) -> list[tuple[int, int]]:
    if chunk_size is None or chunk_size >= axis_size:
        return [(0, axis_size)]
    return [(s, min(chunk_size, axis_size - s)) for s in range(0, axis_size, chunk_size)]


# ---------------------------------------------------------------------------------------
# in_dims and out_dims


def _leaf_in_dims(config: _Config, args: tuple, kwargs: dict) -> list[Dim]:
    """One in_dim per leaf of (args, kwargs); keyword arguments are never batched."""
    in_dims = config.in_dims
    if _is_dim(in_dims):
        per_arg = [in_dims] * len(args)
    elif isinstance(in_dims, (tuple, list)):
        if len(in_dims) != len(args):
            raise BatchingError(with_location(
                f"vmap({config.name}): in_dims has {_plural(len(in_dims), 'entry', 'entries')} "
                f"but the function was called with "
                f"{_plural(len(args), 'positional argument', 'positional arguments')}; "
                "in_dims needs one "
                "entry (an int, None or a pytree of them) per positional argument"))
        per_arg = list(in_dims)
    else:
        raise BatchingError(with_location(
            f"vmap({config.name}): in_dims must be an int, None, or a tuple with one entry "
            f"per positional argument, got {type(in_dims).__name__} {in_dims!r}"))
    dims: list[Dim] = []
    for pos, (prefix, arg) in enumerate(zip(per_arg, args)):
        dims += _broadcast_prefix(prefix, arg, f"in_dims for argument {pos}",
                                  f"argument {pos}", config.name)
    return dims + [None] * len(tree_flatten(kwargs)[0])


def _is_dim(x: Any) -> bool:
    return x is None or (isinstance(x, (int, np.integer)) and not isinstance(x, bool))


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _broadcast_prefix(prefix: Any, tree: Any, what: str, value: str, name: str) -> list[Dim]:
    """Per-leaf dims of `tree` from a prefix pytree of dims (an int applies to a subtree)."""
    dim_leaves, dim_tree = tree_flatten(prefix, is_leaf=_is_dim)
    for d in dim_leaves:
        if not _is_dim(d):
            raise BatchingError(with_location(
                f"vmap({name}): {what} must be ints, None or pytrees of them, got "
                f"{type(d).__name__} {d!r} in {prefix!r}"))
    try:
        subtrees = treedef_children_leaves(dim_tree, tree)
    except ValueError as e:
        raise BatchingError(with_location(
            f"vmap({name}): {what} is {prefix!r}, which does not match the structure of "
            f"{value} ({e}); give an int or None, or a pytree prefix of {value}")) from None
    out: list[Dim] = []
    for d, sub in zip(dim_leaves, subtrees):
        out += [None if d is None else int(d)] * len(tree_flatten(sub)[0])
    return out


def _leaf_out_dims(config: _Config, out_tree: TreeDef, num_outputs: int) -> list[Dim]:
    outputs = tree_unflatten(out_tree, [_OutLeaf(k) for k in range(num_outputs)])
    return _broadcast_prefix(config.out_dims, outputs, "out_dims", "the function's output",
                             config.name)


def _out_paths(out_tree: TreeDef) -> list[str]:
    n = out_tree.num_leaves
    paths = _paths(tree_unflatten(out_tree, [_OutLeaf(k) for k in range(n)]))
    return paths if len(paths) == n else [f" leaf {k}" for k in range(n)]


class _OutLeaf:
    """A stand-in leaf for matching out_dims against the output structure."""

    def __init__(self, k: int):
        self.k = k

    def __repr__(self) -> str:
        return "array"


def _check_in_dim(x: Any, dim: Dim, names: _Names, i: int) -> Dim:
    if dim is None:
        return None
    if not is_array_leaf(x):
        raise BatchingError(with_location(
            f"vmap: in_dim {dim} for {names[i]}, a {type(x).__name__}, but only arrays can "
            "be batched; use in_dims=None for it (or pass an array)"))
    ndim = len(x.shape)
    if not -ndim <= dim < ndim:
        raise BatchingError(with_location(
            f"vmap: in_dim {dim} is out of range for {names[i]} of shape {x.shape}; "
            f"expected an int in [{-ndim}, {ndim - 1}] or None"
            if ndim else
            f"vmap: in_dim {dim} for {names[i]}, a 0-d array, which has no dimension to map "
            "over; use in_dims=None for it"))
    return dim % ndim


def _axis_size(leaves: list, dims: list[Dim], names: _Names, fname: str) -> int:
    sizes = [(i, x.shape[d]) for i, (x, d) in enumerate(zip(leaves, dims)) if d is not None]
    if not sizes:
        raise BatchingError(with_location(
            f"vmap({fname}): no argument is batched (in_dims is None for every array "
            "argument); at least one argument needs an int in_dim"))
    if len({n for _, n in sizes}) > 1:
        listing = "; ".join(f"{names[i]} has size {n}" for i, n in sizes)
        raise BatchingError(with_location(
            f"vmap({fname}): the batched arguments have different sizes along their in_dims "
            f"({listing}); they must all have the same batch size"))
    return sizes[0][1]


class _Names:
    """Readable names of the argument leaves, built only when an error needs one."""

    def __init__(self, func: Callable, args: tuple, kwargs: dict, count: int):
        self._source = (func, args, kwargs, count)
        self._names: list[str] | None = None

    def __getitem__(self, i: int) -> str:
        if self._names is None:
            self._names = _leaf_names(*self._source)
        return self._names[i]


def _leaf_names(func: Callable, args: tuple, kwargs: dict, count: int) -> list[str]:
    """Readable names for the leaves of (args, kwargs), for error messages."""
    params = _param_names(func)
    names: list[str] = []
    for pos, arg in enumerate(args):
        base = f"argument {pos}"
        if pos < len(params):
            base += f" ({params[pos]})"
        names += [base + p for p in _paths(arg)]
    for k in sorted(kwargs):
        names += [f"keyword argument {k}" + p for p in _paths(kwargs[k])]
    if len(names) != count:  # a custom pytree node: fall back to leaf numbers
        names = [f"argument leaf {i}" for i in range(count)]
    return names


def _param_names(func: Callable) -> list[str]:
    try:
        return [p.name for p in inspect.signature(func).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return []


def _paths(tree: Any) -> list[str]:
    """Index paths of tree's leaves, in tree_flatten's order."""
    if tree is None:
        return []
    if isinstance(tree, (tuple, list)):
        return [f"[{i}]" + p for i, c in enumerate(tree) for p in _paths(c)]
    if isinstance(tree, dict):
        _, treedef = tree_flatten(tree)
        return [f"[{k!r}]" + p for k in treedef.meta for p in _paths(tree[k])]
    return [""]


# ---------------------------------------------------------------------------------------
# Randomness, outputs, mutation


def _key_dim(graph: Graph, config: _Config) -> Dim:
    if not graph.has_rng:
        return None
    if config.randomness == "error":
        source = _first_random_source(graph)
        raise BatchingError(with_location(
            f"vmap({config.name}): the function draws random numbers, and randomness is "
            "'error'. Pass randomness='different' for an independent draw per batch entry, "
            "or randomness='same' for one draw shared by all entries", source))
    return 0 if config.randomness == "different" else None


def _first_random_source(graph: Graph) -> SourceInfo | None:
    for node in graph.nodes:
        found = _random_source(node)
        if found is not None:
            return found
    return None


def _random_source(node: Node) -> SourceInfo | None:
    if node.prim.effect == "random":
        return node.source
    for sub in node.params.values():
        if isinstance(sub, Graph):
            found = _first_random_source(sub)
            if found is not None:
                return found
    return None


def _checking_outputs(func: Callable, name: str) -> Callable:
    """func, with a BatchingError when it returns something other than arrays."""
    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        if out is None:
            raise BatchingError(with_location(
                f"vmap({name}): the function returned None; it must return an array or a "
                "pytree (tuple, list, dict) of arrays", _def_site(func)))
        leaves, _ = tree_flatten(out)
        for path, leaf in zip(_paths(out), leaves):
            if not is_array_leaf(leaf):
                where = f" at output{path}" if path else ""
                raise BatchingError(with_location(
                    f"vmap({name}): the function returned a {type(leaf).__name__}{where}; "
                    "it must return arrays (or pytrees of arrays). Wrap numbers in "
                    "np.asarray(...)", _def_site(func)))
        return out
    return checked


def _def_site(func: Callable) -> SourceInfo | None:
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        return None
    return SourceInfo(code.co_filename, code.co_firstlineno, code.co_name)


@dataclass(frozen=True)
class _MutatedDim:
    """Where a written-into argument's new value gets its batch dim: the argument's."""

    dim: int


def _mutated_dim(index: int, dyn_dims: list[Dim], names: _Names, dyn_index: list[int]) -> Any:
    """Where the new value of written-into graph input `index` puts its batch dim."""
    if index < len(dyn_dims) and dyn_dims[index] is not None:
        return _MutatedDim(dyn_dims[index])
    name = names[dyn_index[index]] if index < len(dyn_dims) else "a captured outer value"
    return _UnbatchedWrite(name)


@dataclass(frozen=True)
class _UnbatchedWrite:
    """A written-into argument with no batch dim: its new value must not be batched."""

    name: str


__all__ = ["vmap"]
