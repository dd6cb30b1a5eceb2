"""What runs on a Dask worker: one jitted kernel per spec, kept for the worker's life.

A task gets the spec (the user's function and its vmap options, shipped once per graph or
scattered once per worker) and one block of each batched argument. The kernel is
`jit(vmap(f))` made the first time a process sees the spec's token, so Numba compiles it
once per signature per process; a ragged last block is another signature of the same
shape-generic kernel (compiler/size_params.py) and reuses its machine code.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from transfuse.ir.primitives import _GOLDEN, _mix64, random_streams
from transfuse.ir.tracing import RngPlaceholder, inline
from transfuse.ir.tree import TreeDef, tree_flatten, tree_map, tree_unflatten

REDUCTIONS = ("sum", "mean")
_LOCK = threading.Lock()
_KERNELS: dict[tuple[str, str], Callable] = {}  # (token, mode) -> jitted kernel
_RECORDS: dict[tuple[str, str], Record] = {}  # (token, mode) -> what this process ran


@dataclass(frozen=True)
class Spec:
    """A dask-vmapped function: what every worker needs to build its kernel."""

    token: str  # unique per transfuse.dask.vmap / map_reduce object
    func: Callable
    in_dims: Any
    out_dims: Any
    reduce: Any = None  # None (vmap), 'sum', 'mean' or a callable (map_reduce)

    def __dask_tokenize__(self) -> str:
        return self.token


@dataclass
class Record:
    """A kernel's blocks in this process: count, examples, seconds (the first one apart:
    it includes tracing and compiling, or loading the machine code)."""

    blocks: int = 0
    examples: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the worker thread's CPU time (load on the machine aside)
    first_block_s: float = 0.0
    first_block_cpu_s: float = 0.0
    first_block_examples: int = 0


@dataclass(frozen=True)
class Call:
    """The per-call facts a block task needs: how to rebuild the arguments."""

    in_tree: TreeDef  # of (args, kwargs)
    mode: str  # 'plain' (no draws), 'different' (a key per example) or 'same' (one key)


class Keyed:
    """func on one example, drawing from the key given first: vmap(Keyed(f)) over per-example
    keys draws what vmap(f, randomness='different') draws, whatever the block."""

    def __init__(self, func: Callable):
        self.func = func
        self.streams = 0  # how many streams of its key func drew from (last trace)
        self.__name__ = self.__qualname__ = getattr(func, "__name__", None) or "f"

    def __call__(self, key: Any, args: tuple, **kwargs: Any) -> Any:
        from transfuse._staging import stage

        staged = stage(self.func, args, kwargs)
        self.streams = random_streams(staged.graph) if staged.graph.has_rng else 0
        implicit = [key if isinstance(a, RngPlaceholder) else a for a in staged.implicit]
        outs = inline(staged.graph, staged.dyn_args + implicit)
        return tree_unflatten(staged.out_tree, outs)


def batched(spec: Spec, mode: str) -> tuple[Callable, Keyed | None]:
    """The vmapped (not jitted) function a block runs, and its Keyed wrapper if any."""
    from transfuse._vmap import vmap  # not transfuse.vmap, which tests may wrap in jit

    if mode == "plain":
        return vmap(spec.func, spec.in_dims, _out_dims(spec)), None
    keyed = Keyed(spec.func)
    key_dim = 0 if mode == "different" else None
    return vmap(keyed, in_dims=(key_dim, spec.in_dims), out_dims=_out_dims(spec)), keyed


def _out_dims(spec: Spec) -> Any:
    return 0 if spec.reduce is not None else spec.out_dims


def _sum_over_batch(vmapped: Callable) -> Callable:
    """vmapped followed by a sum over the batch axis, traced into the same kernel."""
    def summed(*args: Any, **kwargs: Any) -> Any:
        return tree_map(lambda o: np.sum(o, axis=0), vmapped(*args, **kwargs))
    summed.__name__ = getattr(vmapped, "__name__", "f")
    return summed


def kernel(spec: Spec, mode: str) -> Callable:
    """This process's jitted kernel for the spec (made on first use, then reused)."""
    key = (spec.token, mode)
    found = _KERNELS.get(key)
    if found is not None:
        return found
    with _LOCK:
        if key not in _KERNELS:
            from transfuse._jit import jit

            fn, _ = batched(spec, mode)
            if spec.reduce in REDUCTIONS:
                fn = _sum_over_batch(fn)
            _KERNELS[key] = jit(fn)
        return _KERNELS[key]


def lane_keys(lanes: np.ndarray, offset: int, size: int) -> np.ndarray:
    """Keys of examples offset .. offset+size-1: random_split(lanes, N)[offset:offset+size]
    (ir/primitives.py `_key_iota_impl`), computed without the first `offset`."""
    index = np.arange(offset, offset + size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = _mix64((index + np.uint64(1)) * np.uint64(_GOLDEN))
        return _mix64(np.asarray(lanes, dtype=np.uint64) ^ mixed)


def run_block(spec: Spec, call: Call, offset: int, size: int, key: Any, *leaves: Any
              ) -> tuple:
    """One block: the kernel on the block's arguments; the output leaves as a tuple."""
    start, cpu_start = time.perf_counter(), time.thread_time()
    fn = kernel(spec, call.mode)
    args, kwargs = tree_unflatten(call.in_tree, [_as_numpy(x) for x in leaves])
    if call.mode == "plain":
        out = fn(*args, **kwargs)
    elif call.mode == "different":
        out = fn(lane_keys(key, offset, size), tuple(args), **kwargs)
    else:
        out = fn(np.asarray(key, dtype=np.uint64), tuple(args), **kwargs)
    out_leaves = tree_flatten(out)[0]
    if spec.reduce is not None and spec.reduce not in REDUCTIONS:
        out_leaves = [np.asarray(spec.reduce(o)) for o in out_leaves]
    _note(_RECORDS.setdefault((spec.token, call.mode), Record()), size,
          time.perf_counter() - start, time.thread_time() - cpu_start)
    return tuple(out_leaves)


def _note(record: Record, size: int, seconds: float, cpu_seconds: float) -> None:
    with _LOCK:
        if record.blocks == 0:
            record.first_block_s, record.first_block_cpu_s = seconds, cpu_seconds
            record.first_block_examples = size
        record.blocks += 1
        record.examples += size
        record.seconds += seconds
        record.cpu_seconds += cpu_seconds


def _as_numpy(x: Any) -> Any:
    # Dask hands over the blocks it holds; a numpy memmap or a subclass goes in as an array.
    return np.asarray(x) if isinstance(x, np.ndarray) and type(x) is not np.ndarray else x


def combine(reduce: Any, *partials: tuple) -> tuple:
    """Per output leaf, the reduction of several blocks' partial results."""
    if reduce in REDUCTIONS:
        return tuple(_add_all(parts) for parts in zip(*partials))
    return tuple(np.asarray(reduce(np.stack(parts))) for parts in zip(*partials))


def _add_all(parts: tuple) -> np.ndarray:
    total = np.array(parts[0], copy=True)
    for p in parts[1:]:
        total += p
    return total


def finish(reduce: Any, count: int, partial: tuple) -> tuple:
    """The last step of a reduction: 'mean' divides the sum by the batch size."""
    if reduce == "mean":
        return tuple(np.true_divide(p, count) for p in partial)
    return partial


def worker_stats() -> dict:
    """This process's kernels: per kernel its jit counts and the blocks it ran (with
    `client.run(transfuse.dask.worker_stats)`, every worker's)."""
    from transfuse.runtime import cache as kernel_cache

    kernels = {}
    for (token, mode), fn in list(_KERNELS.items()):
        info = fn.cache_info()
        record = _RECORDS.get((token, mode), Record())
        kernels[f"{token}:{mode}"] = {
            "traces": info.traces, "compiles": info.compiles, "disk_hits": info.disk_hits,
            "reused": info.reused, "signatures": info.signatures, **vars(record)}
    return {"pid": os.getpid(), "process_compiles": kernel_cache.compile_count(),
            "kernels": kernels}
