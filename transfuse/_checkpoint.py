"""`transfuse.checkpoint` (alias `remat`) and its policies, as JAX's; `saved_residuals`.

`checkpoint(fn)` traces fn, inside the enclosing transform's trace, into one `remat` node
(ir/remat.py) holding fn's graph. Values, JVP and vmap are fn's own; reverse mode stores
only the node's inputs (and what the policy saves) and recomputes fn's intermediates in
the backward pass (compiler/vjp.py). `saved_residuals(f, *args)` lists what reverse mode
stores between the forward and the backward pass, so the saving can be measured.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transfuse.compiler import remat as _remat
from transfuse.compiler.functionalize import prepare
from transfuse.ir.core import Graph
from transfuse.ir.errors import MutationError, TransfuseTypeError
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location
from transfuse.ir.tracing import bind, resolve_implicit
from transfuse.ir.tree import tree_unflatten
from transfuse.random import next_key

from ._staging import in_trace, stage

# The policies, as jax.checkpoint_policies: policy(prim, *avals, **params) -> saved?
checkpoint_policies = types.SimpleNamespace(**_remat.POLICIES)
_POLICY_NAMES = {id(fn): name for name, fn in _remat.POLICIES.items()}


def _policy_name(policy: Any) -> str:
    if policy is None:
        return "nothing_saveable"
    name = _POLICY_NAMES.get(id(policy))
    if name is None:
        raise TransfuseTypeError(with_location(
            f"checkpoint: policy must be None or one of transfuse.checkpoint_policies "
            f"({', '.join(_remat.POLICIES)}), got {policy!r}"))
    return name


def _closed(graph: Graph) -> Graph:
    """The body with its implicit inputs (captures, key) as ordinary ones."""
    return dataclasses.replace(graph, num_captures=0, has_rng=False, in_tree=None,
                               out_tree=None, _key=None)


def checkpoint(fn: Callable | None = None, *, prevent_cse: bool = True,
               policy: Callable | None = None) -> Callable:
    """fn, with its intermediates recomputed in the backward pass instead of stored.

    policy: one of `transfuse.checkpoint_policies` (None: nothing_saveable); the values it
    saves are stored as usual. prevent_cse: keep the recomputation from being merged back
    into the forward pass by jit's common-subexpression elimination (as in JAX).
    """
    name = _policy_name(policy)
    if fn is None:
        return functools.partial(checkpoint, prevent_cse=prevent_cse, policy=policy)

    @functools.wraps(fn)
    def checkpointed(*args: Any, **kwargs: Any) -> Any:
        if not in_trace():  # nothing is differentiated outside a transform
            return fn(*args, **kwargs)
        staged = stage(fn, args, kwargs)
        body = prepare(staged.graph)
        if body.mutated_inputs:
            raise MutationError(with_location(
                "checkpoint: the checkpointed function writes into its argument(s) or into "
                "arrays it closes over; return the new values instead"))
        # Random draws take the key of the enclosing trace as an input of the node, so the
        # recomputation in the backward pass draws the same numbers as the forward pass.
        body, implicit = resolve_implicit(body, staged.implicit, next_key)
        outs = bind(PRIMITIVES["remat"], *staged.dyn_args, *implicit, graph=_closed(body),
                    policy=name, prevent_cse=bool(prevent_cse), num_saved=0)
        return tree_unflatten(staged.out_tree, outs)

    return checkpointed


remat = checkpoint


def saved_residuals(f: Callable, *args: Any, argnums: int | Sequence[int] | None = None
                    ) -> list[tuple[tuple[int, ...], np.dtype, str]]:
    """What `transfuse.vjp(f, *args)` stores for its backward pass: one (shape, dtype,
    where it comes from) per residual array (as jax.ad_checkpoint.saved_residuals).

    argnums: the arguments differentiated (default: every positional argument).
    """
    from ._reverse import _Linearized

    nums = tuple(range(len(args))) if argnums is None else (
        (argnums,) if isinstance(argnums, int) else tuple(argnums))
    lin = _Linearized(f, args, {}, nums, False, "saved_residuals")
    forward = lin.compiled.graphs.forward
    producer = forward.producers()
    inputs = {v: i for i, v in enumerate(forward.inputs)}
    out = []
    for var in forward.outputs[lin.compiled.graphs.num_outputs:]:
        if var in inputs:
            where = f"from argument leaf {inputs[var]}"
        elif var in producer:
            node = producer[var]
            line = f" at {node.source.short()}" if node.source is not None else ""
            where = f"output of {node.prim.name}{line}"
        else:
            where = "a constant"
        out.append((var.aval.shape, var.aval.dtype, where))
    return out


def saved_bytes(f: Callable, *args: Any, argnums: int | Sequence[int] | None = None,
                include_arguments: bool = True) -> int:
    """The total size in bytes of `saved_residuals(f, *args)`; without the arguments
    themselves (which the caller holds anyway) when include_arguments=False."""
    return sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
               for shape, dtype, where in saved_residuals(f, *args, argnums=argnums)
               if include_arguments or not where.startswith("from argument"))


__all__ = ["checkpoint", "remat", "checkpoint_policies", "saved_residuals", "saved_bytes"]
