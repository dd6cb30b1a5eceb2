"""Complex sums and contractions as real ones, before fusion, for both backends.

The backends' accurate summation (compensated float64 totals on the CPU, Kahan sums on
CUDA; docs/reliability.md) and the BLAS calls work on real numbers. A complex sum is two
real sums, and a complex contraction four real ones — the same arithmetic a complex BLAS
or NumPy's pairwise complex sum does — so rewriting them keeps every complex reduction
as accurate as NumPy's and fast, with no complex-specific kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transfuse.ir import lax
from transfuse.ir.core import Graph, Node
from transfuse.ir.primitives import PRIMITIVES, Primitive
from transfuse.ir.tracing import bind, source_of, trace_to_graph

P = PRIMITIVES
SPLIT_RULES: dict[Primitive, Callable[..., Any]] = {}


def _parts(z: Any) -> tuple[Any, Any]:
    return lax.real(z), lax.imag(z)


def _split_linear(prim: Primitive) -> Callable[..., Any]:
    """A map linear in its one operand: apply it to each part."""
    def rule(z, **params):
        re, im = _parts(z)
        return lax.complex(bind(prim, re, **params), bind(prim, im, **params))
    return rule


def _split_bilinear(prim: Primitive) -> Callable[..., Any]:
    """(a + ib)(c + id) = (ac - bd) + i(ad + bc), each product a real contraction."""
    def rule(x, y, **params):
        (a, b), (c, d) = _parts(x), _parts(y)
        def product(u, v):
            return bind(prim, u, v, **params)
        return lax.complex(lax.sub(product(a, c), product(b, d)),
                           lax.add(product(a, d), product(b, c)))
    return rule


for _name in ("reduce_sum", "cumsum"):
    SPLIT_RULES[P[_name]] = _split_linear(P[_name])
for _name in ("dot_general", "conv"):
    SPLIT_RULES[P[_name]] = _split_bilinear(P[_name])


def _needs_split(node: Node) -> bool:
    return node.prim in SPLIT_RULES and node.outputs[0].aval.dtype.kind == "c"


def split_complex(graph: Graph) -> Graph:
    """The graph with complex sums and contractions written as real ones (a pure graph)."""
    if not any(_needs_split(node) for node in graph.nodes):
        return graph

    def rewritten(*args):
        env = dict(zip(graph.inputs, args))
        env.update(graph.consts)
        for node in graph.nodes:
            ins = [env[v] for v in node.inputs]
            with source_of(node.source):
                if _needs_split(node):
                    outs = [SPLIT_RULES[node.prim](*ins, **node.params)]
                else:
                    outs = bind(node.prim, *ins, **node.params)
                    outs = outs if node.prim.multiple_results else [outs]
            env.update(zip(node.outputs, outs))
        return [env[v] for v in graph.outputs]

    new, _ = trace_to_graph(rewritten, graph.in_avals, name=graph.name)
    return Graph(new.inputs, new.nodes, new.outputs, new.consts,
                 num_captures=graph.num_captures, has_rng=graph.has_rng, name=graph.name,
                 in_tree=graph.in_tree, out_tree=graph.out_tree,
                 mutated_inputs=graph.mutated_inputs)
