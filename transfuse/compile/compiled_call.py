"""`aot_compiled`: a graph and the callable a compiler made of it, as one node.

Run (the interpreter, eager code, grad's forward and backward passes), it calls the
compiled callable; every transform treats it as a `call` of its graph (its JVP, VJP and
batching rules call call's), and jit inlines the graph (simplify.INLINED_CALLS) before
fusing, so an aot-compiled function composes with everything. The primitive is defined
in ir/primitives.py with the others, so every table names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transfuse.ir.core import Graph
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.tracing import bind

# Defined in ir/primitives.py, its rules in each transform's table (those of `call`).
AOT_COMPILED = PRIMITIVES["aot_compiled"]


def compiled_call(graph: Graph, fn: Callable, args: Sequence[Any]) -> list:
    """graph(*args), run by `fn` (its compiled form) when it runs."""
    return list(bind(AOT_COMPILED, *args, graph=graph, fn=fn))


__all__ = ["AOT_COMPILED", "compiled_call"]
