"""`transfuse.functionalize`: run a function that writes in place as a pure graph.

The function is staged, its graph functionalized (compiler/functionalize.py), run on the
reference interpreter (or inlined into an enclosing trace), and the final values of the
arguments it wrote into are written back into the caller's arrays, as eager NumPy would
have left them. `write_back` is shared with the other transforms and `jit`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transfuse.compiler.functionalize import (
    check_remove,
    functionalize_graph,
    split_mutations,
)
from transfuse.ir.core import Graph
from transfuse.ir.errors import MutationError
from transfuse.ir.source import with_location
from transfuse.ir.tracing import Tracer
from transfuse.ir.tree import tree_flatten, tree_unflatten
from transfuse.numpy._indexing import assign_into

from ._staging import GraphCache, execute, in_trace, is_array_leaf, signature, stage

_CACHE = GraphCache()


def functionalize(func: Callable, *, remove: str = "mutations") -> Callable:
    """func with its in-place writes (and, with 'mutations_and_views', views) made pure.

    Calling the result gives what func gives; arguments func writes into are updated
    after the call, as in eager NumPy (torch.func.functionalize's behaviour).
    """
    check_remove(remove)

    @functools.wraps(func)
    def functionalized(*args: Any, **kwargs: Any) -> Any:
        graph, leaves, dyn_index, implicit = _functionalized_graph(func, remove, args, kwargs)
        dyn_args = [leaves[i] for i in dyn_index]
        graph_args = dyn_args + list(implicit)
        check_no_aliasing(graph_args, graph.mutated_inputs)
        outs = execute(graph, [_runnable(a) for a in dyn_args], implicit)
        outs, new_values = split_mutations(graph, outs)
        write_back(graph_args, graph.mutated_inputs, new_values)
        return tree_unflatten(graph.out_tree, _detach_consts(graph, outs))

    return functionalized


def _functionalized_graph(func: Callable, remove: str, args: tuple, kwargs: dict
                          ) -> tuple[Graph, list, list[int], list]:
    """The functionalized graph for these arguments: cached when no trace is active."""
    leaves, in_tree = tree_flatten((tuple(args), dict(kwargs)))
    dyn_index = [i for i, x in enumerate(leaves) if is_array_leaf(x)]
    key = (remove, signature(leaves, dyn_index, in_tree))
    def build() -> tuple[Graph, list]:
        staged = stage(func, args, kwargs, concrete=True)
        return functionalize_graph(staged.graph, remove), staged.implicit

    if in_trace():
        staged = stage(func, args, kwargs, concrete=True)
        graph = functionalize_graph(staged.graph, remove)
        return graph, staged.leaves, staged.dyn_index, staged.implicit
    graph, implicit = _CACHE.lookup(func, key, build)
    return graph, leaves, dyn_index, implicit


def _runnable(x: Any) -> Any:
    # The tracer lays out every input in C order, so views recorded on it replay only on
    # C-ordered arrays; the caller's own array is still the one written back into.
    if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
        return np.ascontiguousarray(x)
    return x


def _detach_consts(graph: Graph, outs: list) -> list:
    """Outputs that are the graph's own constants are copied: the cached graph keeps its."""
    out_vars = graph.outputs[:len(outs)]
    return [np.array(o, copy=True) if v in graph.consts else o for v, o in zip(out_vars, outs)]


# ---------------------------------------------------------------------------------------
# Writing mutated inputs back to the caller


def write_back(original_args: Sequence[Any], mutated_inputs: Sequence[int],
               new_values: Sequence[Any]) -> None:
    """Update the caller's arrays: original_args[i][...] = new for each mutated input i.

    original_args are the values passed for the graph's inputs (explicit, then implicit).
    A traced argument gets an `assign` recorded into the enclosing trace; a NumPy array is
    written in place; a NumPy scalar is immutable (NumPy's `x += 1` rebinds it) and is
    left alone.
    """
    for i, new in zip(mutated_inputs, new_values):
        target = original_args[i]
        if isinstance(target, np.generic):
            continue
        if isinstance(target, np.ndarray) and not isinstance(new, Tracer):
            _check_writeable(target, i)
            np.copyto(target, new, casting="unsafe")
        else:
            assign_into(target, new)


def _check_writeable(target: np.ndarray, position: int) -> None:
    if not target.flags.writeable:
        raise MutationError(with_location(
            f"the function writes into its argument {position}, but that array is "
            "read-only (assignment destination is read-only); pass a writeable copy"))


def check_no_aliasing(original_args: Sequence[Any], mutated_inputs: Sequence[int]) -> None:
    """Refuse read-only arrays to write into, and arguments sharing memory with them.

    The graph gives every argument its own buffer, so a write through one could not show
    through the other, as it would in NumPy: that aliasing is not visible statically.
    """
    for i in mutated_inputs:
        if isinstance(original_args[i], np.ndarray):
            _check_writeable(original_args[i], i)
        for j, other in enumerate(original_args):
            if j != i and _may_alias(original_args[i], other):
                raise MutationError(with_location(
                    f"the function writes into argument {i}, which shares memory with "
                    f"argument {j}; functionalize cannot keep NumPy's aliasing between "
                    "arguments. Pass a copy (x.copy()) for one of them"))


def _may_alias(a: Any, b: Any) -> bool:
    if isinstance(a, Tracer) and isinstance(b, Tracer):
        return a._builder is b._builder and _traced_base(a) is _traced_base(b)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.size > 0 and b.size > 0 and bool(np.shares_memory(a, b))
    return False


def _traced_base(x: Tracer) -> Any:
    """The buffer a traced value lives in: follow view nodes back in its builder."""
    parent_of = {node.outputs[0]: node.inputs[0] for node in x._builder.nodes
                 if node.prim.effect == "view"}
    var = x._var
    while var in parent_of:
        var = parent_of[var]
    return var


__all__ = ["functionalize", "write_back", "check_no_aliasing"]
