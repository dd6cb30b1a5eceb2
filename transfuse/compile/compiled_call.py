"""`aot_compiled`: a graph and the callable a compiler made of it, as one node.

Run (the interpreter, eager code, grad's forward and backward passes), it calls the
compiled callable; every transform treats it as a `call` of its graph (its JVP, VJP and
batching rules call call's), and jit inlines the graph (simplify.INLINED_CALLS) before
fusing, so an aot-compiled function composes with everything. The primitive is defined
in ir/primitives.py with the others, so every table names it.

The callable is a `CompiledGraph`: when only some outputs of the node are read (the
backward graph under `grad(f, argnums=0)` returns a cotangent for every input, the caller
reads the parameters' only), compiler/prune_control.py asks it for the graph restricted to
those outputs, compiled by the same compiler (`restricted`), so the unread cotangents are
never computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transfuse.compiler.simplify import dce
from transfuse.ir.core import Aval, Graph
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.tracing import bind

# Defined in ir/primitives.py, its rules in each transform's table (those of `call`).
AOT_COMPILED = PRIMITIVES["aot_compiled"]

Compiler = Callable[[Graph, Sequence[Aval]], Callable[..., list]]


class CompiledGraph:
    """A graph and what `compiler` made of it; restricted to some outputs on demand."""

    def __init__(self, graph: Graph, compiler: Compiler):
        self.graph = graph
        self.compiler = compiler
        self.run = compiler(graph, graph.in_avals)
        self._restricted: dict[tuple[bool, ...], CompiledGraph] = {}

    def __call__(self, *args: Any) -> list:
        return self.run(*args)

    def restricted(self, used: Sequence[bool]) -> CompiledGraph:
        """The graph computing only the outputs flagged in `used` (same inputs), compiled
        by the same compiler; cached per flags."""
        key = tuple(bool(u) for u in used)
        if all(key):
            return self
        if key not in self._restricted:
            g = self.graph
            kept = [v for v, u in zip(g.outputs, key) if u]
            graph = dce(Graph(g.inputs, g.nodes, kept, g.consts, name=g.name))
            self._restricted[key] = CompiledGraph(graph, self.compiler)
        return self._restricted[key]

    def __repr__(self) -> str:
        # The node's structural key holds the graph already; no address, so a jit of a
        # program holding this node can be found in the disk cache by another process.
        return f"compiled({getattr(self.compiler, '__name__', 'compiler')})"


def compiled_call(graph: Graph, fn: Callable, args: Sequence[Any]) -> list:
    """graph(*args), run by `fn` (its compiled form) when it runs."""
    return list(bind(AOT_COMPILED, *args, graph=graph, fn=fn))


__all__ = ["AOT_COMPILED", "CompiledGraph", "compiled_call"]
