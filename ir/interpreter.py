"""The reference interpreter: runs a graph with NumPy, node by node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .core import Graph, Node, Var
from .errors import INDEXING_PRIMITIVES, traced_index_error
from .primitives import ELEMENTWISE


def interpret(graph: Graph, args: Sequence[Any]) -> list[np.ndarray]:
    """Run `graph` on concrete arrays; gives what eager NumPy gives for the same program."""
    if len(args) != len(graph.inputs):
        raise ValueError(f"graph {graph.name} takes {len(graph.inputs)} inputs, "
                         f"got {len(args)}")
    env: dict[Var, Any] = dict(zip(graph.inputs, args))
    mutates = any(n.prim.effect == "mutation" for n in graph.nodes)
    # Constants belong to the (cached) graph: a mutating graph works on copies of them.
    for var, arr in graph.consts.items():
        env[var] = arr.copy() if mutates else arr
    for node in graph.nodes:
        outs = _run_node(node, [env[v] for v in node.inputs])
        outs = list(outs) if node.prim.multiple_results else [outs]
        if node.prim.effect in (None, "random") and node.prim.name != "call" and \
                node.prim.name not in ELEMENTWISE:
            # The tracer models fresh values as C ordered, except elementwise results,
            # which keep their operands' order as in NumPy (ir/tracing.py); views recorded
            # on that model must replay on the same layouts.
            outs = [_c_order(o) for o in outs]
        env.update(zip(node.outputs, outs))
    return [env[v] for v in graph.outputs]


def _run_node(node: Node, args: list) -> Any:
    """One node's NumPy reference; an index out of range names the user's line."""
    if node.prim.name not in INDEXING_PRIMITIVES:
        return node.prim.impl(*args, **node.params)
    try:
        return node.prim.impl(*args, **node.params)
    except IndexError as error:
        raise traced_index_error([node.source]) from error


def _c_order(x: Any) -> Any:
    if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
        return np.ascontiguousarray(x)
    return x
