"""The client side of transfuse.dask: from a call on dask arrays to a lazy dask graph.

A call flattens its arguments, checks them as vmap does (on stand-ins: nothing is
computed), traces the batched function once per signature to learn the outputs' shapes and
dtypes, takes the random key, and writes one task per block of the batch axis plus one
getitem per output leaf and block (or, for map_reduce, a tree of combining tasks).
"""

from __future__ import annotations

import itertools
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from transfuse.ir.core import Aval
from transfuse.ir.errors import TransfuseTypeError, TransfuseValueError
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location
from transfuse.ir.tree import TreeDef, tree_flatten, tree_unflatten

from .. import _vmap
from .._staging import is_array_leaf, stage
from ..random import next_key
from . import _worker

SPLIT_EVERY = 8  # partial results combined per task of a reduction tree


def is_dask_array(x: Any) -> bool:
    """A dask.array.Array, recognised without importing dask."""
    return type(x).__module__.startswith("dask.array") and hasattr(x, "__dask_graph__")


@dataclass
class _Plan:
    """What the trace of one signature told: how to call the kernel, what comes out."""

    mode: str  # 'plain', 'different' or 'same'
    streams: int  # streams of the global key one call takes (0: it draws nothing)
    out_tree: TreeDef
    out_avals: list[Aval]  # of one block of size `block`
    out_dims: list[int | None]  # per output leaf, where its batch axis is
    block: int


class DaskMapped:
    """`transfuse.dask.vmap(f)` / `map_reduce(f)`: call it on dask arrays, get dask arrays."""

    def __init__(self, func: Callable, in_dims: Any, out_dims: Any, randomness: str,
                 reduce: Any, chunk_size: int | None):
        name = getattr(func, "__name__", None) or type(func).__name__
        self.name = name if name.isidentifier() else "f"
        self.spec = _worker.Spec(f"transfuse-{self.name}-{uuid.uuid4().hex[:16]}", func,
                                 in_dims, out_dims, reduce)
        self.config = _vmap._Config(in_dims, 0 if reduce is not None else out_dims,
                                    _vmap._check_randomness(randomness), None, self.name)
        self.chunk_size = _vmap._check_chunk_size(chunk_size)
        self._plans: dict[tuple, _Plan] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import dask.array as da

        leaves, in_tree = tree_flatten((tuple(args), dict(kwargs)))
        stand_ins = [_stand_in(x) for x in leaves]
        dims = self._dims(args, kwargs, leaves, in_tree, stand_ins)
        size = _vmap._axis_size(stand_ins, dims, _vmap._Names(self.spec.func, args, kwargs,
                                                              len(leaves)), self.name)
        chunks = self._batch_chunks(leaves, dims, size)
        plan = self._plan(leaves, stand_ins, dims, in_tree, chunks[0])
        key = self._key(plan)
        refs, deps, data = _Inputs(chunks).of(leaves, dims)
        call = _worker.Call(in_tree, plan.mode)
        spec_ref, spec_data = _once(self.spec)
        data.update(spec_data)
        builder = _Graph(self, plan, chunks, call, spec_ref, key, refs, data)
        if self.spec.reduce is None:
            outs = builder.mapped(deps, da)
        else:
            outs = builder.reduced(deps, da, size)
        return tree_unflatten(plan.out_tree, outs)

    # -- checking, as vmap does ------------------------------------------------------
    def _dims(self, args: tuple, kwargs: dict, leaves: list, in_tree: TreeDef,
              stand_ins: list) -> list:
        """Per leaf its batch axis (None: broadcast), checked as vmap checks it."""
        dims = self.config.leaf_dims.get(in_tree)
        if dims is None:
            dims = self.config.leaf_dims[in_tree] = _vmap._leaf_in_dims(self.config, args,
                                                                        kwargs)
        names = _vmap._Names(self.spec.func, args, kwargs, len(leaves))
        return [_vmap._check_in_dim(s, d, names, i) for i, (s, d) in
                enumerate(zip(stand_ins, dims))]

    def _batch_chunks(self, leaves: list, dims: list, size: int) -> tuple[int, ...]:
        """The block sizes along the batch axis: chunk_size, else the first batched dask
        array's chunks, else one block."""
        if size == 0:
            return (0,)
        if self.chunk_size is not None:
            step = self.chunk_size
            return tuple(min(step, size - s) for s in range(0, size, step))
        for x, d in zip(leaves, dims):
            if d is not None and is_dask_array(x):
                if any(np.isnan(c) for c in x.chunks[d]):
                    raise TransfuseValueError(with_location(
                        f"transfuse.dask.vmap({self.name}): a batched dask array has unknown "
                        "chunk sizes along the batch axis; call .compute_chunk_sizes() "
                        "first"))
                return tuple(int(c) for c in x.chunks[d])
        return (size,)

    # -- tracing once per signature ---------------------------------------------------
    def _plan(self, leaves: list, stand_ins: list, dims: list, in_tree: TreeDef,
              block: int) -> _Plan:
        sig = (in_tree, block, tuple(dims),
               tuple((s.shape, s.dtype.str) if is_array_leaf(s) else ("static", repr(s))
                     for s in stand_ins))
        plan = self._plans.get(sig)
        if plan is None:
            plan = self._plans[sig] = self._trace(stand_ins, dims, in_tree, block)
        return plan

    def _trace(self, stand_ins: list, dims: list, in_tree: TreeDef, block: int) -> _Plan:
        """Trace the batched function on one block's stand-ins (errors surface here)."""
        blocks = [_block_stand_in(s, d, block) for s, d in zip(stand_ins, dims)]
        args, kwargs = tree_unflatten(in_tree, blocks)
        mode = "plain" if self.config.randomness == "error" else self.config.randomness
        fn, keyed = _worker.batched(self.spec, mode)
        if keyed is not None:
            key_shape = (block,) if mode == "different" else ()
            key = np.broadcast_to(np.zeros((), np.uint64), key_shape)
            staged = stage(fn, (key, tuple(args)), kwargs)
            streams = keyed.streams
            if streams == 0:  # it draws nothing: no key to take or ship
                mode = "plain"
                staged = stage(_worker.batched(self.spec, mode)[0], args, kwargs)
            elif mode == "different":
                streams = max(1, streams)  # vmap folds one stream in for the lanes
        else:
            staged = stage(fn, args, kwargs)
            streams = 0
        out_avals = [v.aval for v in staged.graph.outputs]
        leaf_dims = _vmap._leaf_out_dims(self.config, staged.out_tree, len(out_avals))
        out_dims = [None if d is None else d % len(a.shape) for d, a in
                    zip(leaf_dims, out_avals)]
        if self.spec.reduce is not None:
            out_avals = [Aval(a.shape[1:], a.dtype) for a in out_avals]
        return _Plan(mode, streams, staged.out_tree, out_avals, out_dims, block)

    def _key(self, plan: _Plan) -> Any:
        """The call's key, taken from the global state now, as vmap takes it: 'different'
        ships the lanes key (vmap's fold-in of stream 0), 'same' the key itself."""
        if plan.mode == "plain":
            return None
        key = next_key(plan.streams)
        if plan.mode == "different":
            return PRIMITIVES["random_fold_in"].impl(key, data=0)
        return key


def _stand_in(x: Any) -> Any:
    """What a leaf is checked and traced as: dask arrays become zero-strided NumPy arrays."""
    if is_dask_array(x):
        if any(np.isnan(n) for n in x.shape):
            raise TransfuseValueError(with_location(
                "transfuse.dask: a dask array of unknown shape; call .compute_chunk_sizes() "
                "first"))
        return np.broadcast_to(np.zeros((), x.dtype), tuple(int(n) for n in x.shape))
    return x


def _block_stand_in(x: Any, dim: int | None, block: int) -> Any:
    if dim is None:
        return x
    shape = list(x.shape)
    shape[dim] = block
    return np.broadcast_to(np.zeros((), x.dtype), tuple(shape))


# ---------------------------------------------------------------------------------------
# Inputs: blocks of batched arrays, broadcast values shipped once


class _Inputs:
    """Per argument leaf, what a block task receives (a function of the block index)."""

    def __init__(self, chunks: tuple[int, ...]):
        self.chunks = chunks

    def of(self, leaves: list, dims: list) -> tuple[list, list, dict]:
        """(per leaf: block -> task argument, dask collections depended on, data keys)."""
        refs, deps, data = [], [], {}
        for x, d in zip(leaves, dims):
            if d is not None:
                array = self._batched(x, d)
                deps.append(array)
                refs.append(_BlockRef(array.name, d, array.ndim))
            elif is_dask_array(x):
                whole = x.rechunk(x.shape)  # one block, moved once to each worker using it
                deps.append(whole)
                refs.append(_Fixed(_task_ref((whole.name,) + (0,) * whole.ndim)))
            elif is_array_leaf(x):
                ref, node = _once(np.asarray(x))
                data.update(node)
                refs.append(_Fixed(ref))
            else:
                refs.append(_Fixed(x))  # a static value (int, str, ...): in every task
        return refs, deps, data

    def _batched(self, x: Any, dim: int) -> Any:
        """x as a dask array blocked like the batch along `dim`, whole along the others."""
        import dask.array as da

        if not is_dask_array(x):
            return da.from_array(np.asarray(x), chunks=self._chunks_for(np.shape(x), dim))
        target = self._chunks_for(x.shape, dim)
        return x if x.chunks == target else x.rechunk(target)

    def _chunks_for(self, shape: tuple, dim: int) -> tuple:
        return tuple(self.chunks if a == dim else (int(n),) for a, n in enumerate(shape))


@dataclass(frozen=True)
class _BlockRef:
    name: str
    dim: int
    ndim: int

    def __call__(self, i: int) -> Any:
        index = [0] * self.ndim
        index[self.dim] = i
        return _task_ref((self.name, *index))


@dataclass(frozen=True)
class _Fixed:
    value: Any

    def __call__(self, i: int) -> Any:
        return self.value


def _task_ref(key: Any) -> Any:
    from dask._task_spec import TaskRef

    return TaskRef(key)


def _client() -> Any:
    """The distributed Client dask would compute on now, or None (a local scheduler, also
    where dask.config.set(scheduler='sync') overrides a live Client)."""
    if "distributed" not in sys.modules:
        return None
    from dask.base import get_scheduler
    from distributed import Client

    scheduler = get_scheduler()
    owner = scheduler if isinstance(scheduler, Client) else getattr(scheduler, "__self__",
                                                                    None)
    return owner if isinstance(owner, Client) else None


SHIPPED_KEPT = 8  # scattered values whose futures are kept for later calls, per client
_SHIPPED: dict[str, dict[str, Any]] = {}  # client id -> token -> future, newest last


def _once(value: Any) -> tuple[Any, dict]:
    """A reference to value that ships it once: scattered to every worker of the current
    distributed client, else one data key of the graph. Returns (task argument, graph
    entries to add). A value scattered by a recent call (same bytes: same token) is not
    sent again: its future is kept (the last SHIPPED_KEPT of them, per client).

    Each scatter gets a fresh key (not `hash=True`'s key derived from the bytes): a value
    dropped from the kept ones and scattered again would otherwise reuse the key whose
    release is still on its way to the scheduler, and the release, arriving after the new
    scatter, deleted the data under the next call (CI, "lost dependencies")."""
    from dask._task_spec import DataNode
    from dask.base import tokenize

    token = tokenize(value)
    client = _client()
    if client is None:
        key = f"transfuse-const-{token}"
        return _task_ref(key), {key: DataNode(key, value)}
    kept = _SHIPPED.setdefault(client.id, {})
    found = kept.pop(token, None)
    if found is None or found.status != "finished":
        found = client.scatter(value, broadcast=True, hash=False)
    kept[token] = found
    while len(kept) > SHIPPED_KEPT:
        del kept[next(iter(kept))]
    return found, {}


# ---------------------------------------------------------------------------------------
# The graph


# Every call's tasks get keys of their own (as scatters do, `_once`): keys derived from
# the inputs alone repeat from call to call, and could be resubmitted while the
# scheduler is still forgetting the previous call's; a result is not reused across calls
# anyway, so a fresh name costs nothing.
_CALL_NUMBERS = itertools.count()


class _Graph:
    """Writes the tasks of one call."""

    def __init__(self, mapped: DaskMapped, plan: _Plan, chunks: tuple[int, ...],
                 call: _worker.Call, spec_ref: Any, key: Any, refs: list, data: dict):
        from dask.base import tokenize

        self.plan, self.chunks, self.data = plan, chunks, data
        self.reduce = mapped.spec.reduce
        self.name = f"transfuse-{'map_reduce' if self.reduce is not None else 'vmap'}-" \
                    f"{mapped.name}-{tokenize(mapped.spec.token, refs, key, chunks, plan.mode)}-" \
                    f"{next(_CALL_NUMBERS)}"
        self.tasks = dict(data)
        self._blocks(call, spec_ref, key, refs)

    def _blocks(self, call: _worker.Call, spec_ref: Any, key: Any, refs: list) -> None:
        from dask._task_spec import Task

        offsets = itertools.accumulate((0,) + self.chunks[:-1])
        for i, (offset, size) in enumerate(zip(offsets, self.chunks)):
            k = (self.name, i)
            self.tasks[k] = Task(k, _worker.run_block, spec_ref, call, offset, size, key,
                                 *[ref(i) for ref in refs])

    def mapped(self, deps: list, da: Any) -> list:
        """One dask array per output leaf: block i's leaf at block index i of its axis."""
        from dask._task_spec import Task
        from dask.highlevelgraph import HighLevelGraph

        outs = []
        for k, (aval, dim) in enumerate(zip(self.plan.out_avals, self.plan.out_dims)):
            out_name = f"{self.name}-out{k}"
            layer = dict(self.tasks) if k == 0 else {}
            blocks = range(len(self.chunks)) if dim is not None else range(1)
            for i in blocks:
                index = [0] * len(aval.shape)
                if dim is not None:
                    index[dim] = i
                key = (out_name, *index)
                layer[key] = Task(key, _getitem, _task_ref((self.name, i)), k)
            chunks = [(n,) for n in aval.shape]
            if dim is not None:
                chunks[dim] = self.chunks
            graph = HighLevelGraph.from_collections(out_name, layer,
                                                    dependencies=deps + outs[:1])
            outs.append(da.Array(graph, out_name, chunks=tuple(chunks), dtype=aval.dtype,
                                 meta=np.empty((0,) * len(aval.shape), aval.dtype)))
        return outs

    def reduced(self, deps: list, da: Any, count: int) -> list:
        """A tree of combining tasks over the blocks; one single-chunk array per leaf."""
        from dask._task_spec import Task
        from dask.highlevelgraph import HighLevelGraph

        level = [(self.name, i) for i in range(len(self.chunks))]
        depth = 0
        while len(level) > 1:
            depth += 1
            next_level = []
            for j in range(0, len(level), SPLIT_EVERY):
                key = (f"{self.name}-combine{depth}", j // SPLIT_EVERY)
                self.tasks[key] = Task(key, _worker.combine, self.reduce,
                                       *[_task_ref(k) for k in level[j:j + SPLIT_EVERY]])
                next_level.append(key)
            level = next_level
        final = (f"{self.name}-total", 0)
        self.tasks[final] = Task(final, _worker.finish, self.reduce, count,
                                 _task_ref(level[0]))
        outs = []
        for k, aval in enumerate(self.plan.out_avals):
            out_name = f"{self.name}-out{k}"
            key = (out_name,) + (0,) * len(aval.shape)
            layer = dict(self.tasks) if k == 0 else {}
            layer[key] = Task(key, _getitem, _task_ref(final), k)
            graph = HighLevelGraph.from_collections(out_name, layer,
                                                    dependencies=deps + outs[:1])
            outs.append(da.Array(graph, out_name, chunks=tuple((n,) for n in aval.shape),
                                 dtype=aval.dtype,
                                 meta=np.empty((0,) * len(aval.shape), aval.dtype)))
        return outs


def _getitem(block: tuple, k: int) -> Any:
    return block[k]


def check_reduce(reduce: Any) -> Any:
    """'sum', 'mean' or a callable reducing axis 0 (associative, like np.max(x, axis=0))."""
    if reduce in _worker.REDUCTIONS or (callable(reduce) and not isinstance(reduce, str)):
        return reduce
    raise TransfuseValueError(with_location(
        f"transfuse.dask.map_reduce: reduce must be 'sum', 'mean' or a callable that reduces "
        f"axis 0 of an array, got {reduce!r}"))


def check_callable(func: Any, what: str) -> None:
    if not callable(func):
        raise TransfuseTypeError(f"{what} needs a callable, got {type(func).__name__}")


__all__ = ["DaskMapped", "is_dask_array", "check_reduce", "check_callable"]
