"""Compilers for aot_function: each is called as `compiler(graph, example_avals)` and
returns a callable taking the graph's inputs and returning the list of its outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transfuse.ir.core import Aval, Graph
from transfuse.ir.interpreter import interpret
from transfuse.ir.tracing import inline

from .._jit import jit


def nop(graph: Graph, example_avals: Sequence[Aval]) -> Callable[..., list]:
    """The reference interpreter: runs the graph node by node with NumPy."""

    def run(*args: Any) -> list:
        return interpret(graph, [np.asarray(a) for a in args])

    return run


def print_compile(graph: Graph, example_avals: Sequence[Aval]) -> Callable[..., list]:
    """Print the graph (each node with its source line), then run it with `nop`."""
    print(graph)
    return nop(graph, example_avals)


def jit_compile(graph: Graph, example_avals: Sequence[Aval]) -> Callable[..., list]:
    """The Numba backend: `transfuse.jit` of the graph (simplified, fused, one kernel)."""

    # 0-d constants go in as NumPy scalars: jit guards every captured *array* against
    # in-place changes on each call, and a graph's own constants never change.
    consts = {v: a[()] if np.ndim(a) == 0 else a for v, a in graph.consts.items()}
    replayed = Graph(graph.inputs, graph.nodes, graph.outputs, consts, name=graph.name)

    def compiled_graph(*args: Any) -> list:
        return inline(replayed, args)

    compiled_graph.__name__ = compiled_graph.__qualname__ = graph.name or "aot_graph"
    return jit(compiled_graph)


__all__ = ["nop", "print_compile", "jit_compile"]
