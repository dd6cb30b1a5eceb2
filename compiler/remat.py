"""Checkpointing in the compiler: what each policy saves, and the rewrites of remat nodes.

- `expose_saved` runs before reverse mode (compiler/vjp.py vjp_graph): a remat node whose
  policy saves some intermediates gets a body that also returns them (`num_saved` trailing
  outputs), so the forward graph can hand them to the backward one as residuals; an
  `everything_saveable` node is inlined (nothing to recompute).
- `inline_remat` is jit's: the remat bodies are inlined before its simplification, so the
  backends never see a remat node. The recomputation in the backward part stays apart
  from the forward pass through the `optimization_barrier`s reverse mode put on its
  inputs (ir/remat.py), which the backends lower as copies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from transfuse.compiler.simplify import _rebuild, _substitute, splice
from transfuse.ir.core import Graph, Node, Var, is_inexact, subgraphs
from transfuse.ir.primitives import PRIMITIVES, Primitive

P = PRIMITIVES


# ---------------------------------------------------------------------------------------
# Policies: JAX's signature, policy(prim, *in_avals, **params) -> whether the result is saved


def nothing_saveable(prim: Primitive, *avals: Any, **params: Any) -> bool:
    """Save nothing: recompute every intermediate (the default)."""
    return False


def everything_saveable(prim: Primitive, *avals: Any, **params: Any) -> bool:
    """Save every intermediate, as if there were no checkpoint."""
    return True


def dots_saveable(prim: Primitive, *avals: Any, **params: Any) -> bool:
    """Save the results of matrix products and convolutions; recompute the rest."""
    return prim.name in ("dot_general", "conv")


def dots_with_no_batch_dims_saveable(prim: Primitive, *avals: Any, **params: Any) -> bool:
    """Save the results of matrix products without batch dimensions."""
    if prim.name != "dot_general":
        return False
    (_, _), (lhs_batch, rhs_batch) = params["dimension_numbers"]
    return not lhs_batch and not rhs_batch


POLICIES: dict[str, Callable[..., bool]] = {
    f.__name__: f for f in (nothing_saveable, everything_saveable, dots_saveable,
                            dots_with_no_batch_dims_saveable)}


def saves(policy: str, node: Node) -> bool:
    """Whether the named policy keeps this body node's results for the backward pass."""
    return POLICIES[policy](node.prim, *[v.aval for v in node.inputs], **node.params)


# ---------------------------------------------------------------------------------------
# Rewrites


def _is_remat(node: Node) -> bool:
    return node.prim is P["remat"]


def with_saved_outputs(node: Node) -> Node:
    """The remat node with a body that also returns what its policy saves."""
    body, policy = node.params["graph"], node.params["policy"]
    returned = set(body.outputs)
    saved = [v for n in body.nodes if saves(policy, n) for v in n.outputs
             if is_inexact(v.aval.dtype) and v not in returned]
    if not saved:
        return node
    graph = dataclasses.replace(body, outputs=list(body.outputs) + saved, _key=None)
    params = dict(node.params, graph=graph, num_saved=len(saved))
    outputs = list(node.outputs) + [Var(v.aval) for v in saved]
    return Node(node.prim, node.inputs, params, outputs, node.source)


def expose_saved(graph: Graph) -> Graph:
    """Reverse mode's form of the graph's remat nodes (see the module docstring)."""
    if not any(_is_remat(n) and not n.params["num_saved"] for n in graph.nodes):
        return graph
    nodes: list[Node] = []
    rename: dict[Var, Var] = {}
    consts = dict(graph.consts)
    for node in graph.nodes:
        node = Node(node.prim, _substitute(node.inputs, rename), node.params, node.outputs,
                    node.source)
        if not _is_remat(node) or node.params["num_saved"]:
            nodes.append(node)
        elif node.params["policy"] == "everything_saveable":
            splice(expose_saved(node.params["graph"]), node.inputs, node.outputs, nodes, rename,
                   consts)
        else:
            nodes.append(with_saved_outputs(node))
    return _rebuild(graph, nodes, _substitute(graph.outputs, rename), consts)


def _map_subgraphs(node: Node, rewrite: Callable[[Graph], Graph]) -> Node:
    """The node with `rewrite` applied to the graphs its params hold (alone or in tuples)."""
    def one(p: Any) -> Any:
        if isinstance(p, Graph):
            return rewrite(p)
        if isinstance(p, tuple) and any(isinstance(g, Graph) for g in p):
            return tuple(one(g) for g in p)
        return p
    params = {k: one(p) for k, p in node.params.items()}
    return Node(node.prim, node.inputs, params, node.outputs, node.source)


def inline_remat(graph: Graph) -> Graph:
    """Every remat node (also inside other nodes' sub-graphs) replaced by its body."""
    if not any(_is_remat(n) or subgraphs(n) for n in graph.nodes):
        return graph
    nodes: list[Node] = []
    rename: dict[Var, Var] = {}
    consts = dict(graph.consts)
    for node in graph.nodes:
        node = Node(node.prim, _substitute(node.inputs, rename), node.params, node.outputs,
                    node.source)
        if _is_remat(node):
            splice(inline_remat(node.params["graph"]), node.inputs, node.outputs, nodes, rename,
                   consts)
        else:
            nodes.append(_map_subgraphs(node, inline_remat) if subgraphs(node) else node)
    return _rebuild(graph, nodes, _substitute(graph.outputs, rename), consts)


__all__ = ["POLICIES", "saves", "expose_saved", "with_saved_outputs", "inline_remat",
           "nothing_saveable", "everything_saveable", "dots_saveable",
           "dots_with_no_batch_dims_saveable"]
