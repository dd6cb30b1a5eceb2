"""transfuse.dask: vmap and batched reductions over dask arrays, each block a compiled kernel.

    import transfuse.dask as txd
    norms = txd.vmap(per_example_norm, in_dims=(None, 0, 0))(params, x, y)  # lazy dask array
    grad = txd.map_reduce(tx.grad(loss), reduce="mean", in_dims=(None, 0, 0))(params, x, y)

The batch axis of the batched arguments is split into blocks (the dask array's chunks along
it, or chunk_size); each block is one task running `jit(vmap(f))` on a worker, which
compiles it once per signature per process. Arguments with in_dims None are shipped once
(scattered to every worker of the current distributed Client, else one key of the graph).
`transfuse.vmap(f)` given dask arrays comes here. See docs/dask.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from ._client import DaskMapped, check_callable, check_reduce, is_dask_array
from ._worker import worker_stats


def vmap(func: Callable, in_dims: Any = 0, out_dims: Any = 0, randomness: str = "error", *,
         chunk_size: int | None = None) -> Callable:
    """func mapped over the batch axis of dask arrays, lazily: a dask array (or pytree).

    As transfuse.vmap; chunk_size: the block size along the batch axis (default: the
    chunks of the first batched dask array along its in_dim).
    """
    check_callable(func, "transfuse.dask.vmap")
    return DaskMapped(func, in_dims, out_dims, randomness, None, chunk_size)


def map_reduce(func: Callable, reduce: str | Callable = "sum", in_dims: Any = 0,
               randomness: str = "error", *, chunk_size: int | None = None) -> Callable:
    """vmap(func) reduced over the batch, as a tree of tasks: single-chunk dask arrays.

    reduce: 'sum', 'mean', or a callable reducing axis 0 of an array, associative like
    `lambda a: np.max(a, axis=0)` (it is applied per block, then to stacked partials).
    'sum' and 'mean' sum each block inside its compiled kernel.
    """
    check_callable(func, "transfuse.dask.map_reduce")
    return DaskMapped(func, in_dims, 0, randomness, check_reduce(reduce), chunk_size)


_DISPATCHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dispatch(vmapped: Callable, func: Callable, config: Any) -> DaskMapped:
    """The DaskMapped that transfuse.vmap(func) hands dask arrays to (one per vmap object,
    so its workers' kernels are reused across calls)."""
    found = _DISPATCHED.get(vmapped)
    if found is None:
        found = _DISPATCHED[vmapped] = DaskMapped(func, config.in_dims, config.out_dims,
                                                  config.randomness, None, config.chunk_size)
    return found


__all__ = ["vmap", "map_reduce", "worker_stats", "is_dask_array"]
