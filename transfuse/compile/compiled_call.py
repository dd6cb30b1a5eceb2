"""`aot_compiled`: a graph and the callable a compiler made of it, as one node.

Run (the interpreter, eager code, grad's forward and backward passes), it calls the
compiled callable; every transform treats it as a `call` of its graph (JVP, VJP and
batching rules are call's), and jit inlines the graph (simplify.INLINED_CALLS) before
fusing, so an aot-compiled function composes with everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transfuse.compiler.batching import BATCH_RULES
from transfuse.compiler.jvp import JVP_RULES
from transfuse.compiler.simplify import INLINED_CALLS
from transfuse.compiler.vjp import VJP_RULES
from transfuse.ir.core import Aval, Graph
from transfuse.ir.primitives import PRIMITIVES as P
from transfuse.ir.primitives import define
from transfuse.ir.tracing import bind


def _shape_rule(*avals: Aval, graph: Graph, fn: Callable) -> list[Aval]:
    return list(graph.out_avals)


def _impl(*args: Any, graph: Graph, fn: Callable) -> list:
    return list(fn(*args))


AOT_COMPILED = define("aot_compiled", _shape_rule, _impl, multiple_results=True,
                      doc="a graph run by the callable a transfuse.compile compiler made")


def _jvp(primals: Sequence[Any], tangents: Sequence[Any], *, graph: Graph, fn: Callable):
    return JVP_RULES[P["call"]](primals, tangents, graph=graph)


def _vjp(cts: Any, ins: list, outs: list, *, graph: Graph, fn: Callable) -> list:
    return VJP_RULES[P["call"]](cts, ins, outs, graph=graph)


def _batch(axis_size: int, args: list, dims: list, *, graph: Graph, fn: Callable):
    return BATCH_RULES[P["call"]](axis_size, args, dims, graph=graph)


JVP_RULES[AOT_COMPILED] = _jvp
VJP_RULES[AOT_COMPILED] = _vjp
BATCH_RULES[AOT_COMPILED] = _batch
INLINED_CALLS.add(AOT_COMPILED)


def compiled_call(graph: Graph, fn: Callable, args: Sequence[Any]) -> list:
    """graph(*args), run by `fn` (its compiled form) when it runs."""
    return list(bind(AOT_COMPILED, *args, graph=graph, fn=fn))


__all__ = ["AOT_COMPILED", "compiled_call"]
