"""Partial evaluation of a JVP graph: split it into a primal part and a tangent part.

`linearize` runs the primal part once (primal outputs plus residuals: the primal values the
tangent computation needs) and then only the tangent part for each tangent. A node goes to
the tangent part when it depends on a tangent input; everything that depends only on
primals goes to the primal part. Nodes that depend on nothing at all (`full`, `iota`, and
nodes of constants) are copied into whichever part uses them rather than passed as
residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

from transfuse.compiler.prune_control import prune_outputs
from transfuse.ir.core import Graph, Node, Var
from transfuse.ir.primitives import PRIMITIVES as P


@dataclass
class Split:
    """The two halves of a JVP graph.

    primal: (explicit primals, implicit inputs) -> (primal outputs, residuals, mutated)
    tangent: (tangents, residuals) -> tangent outputs
    """

    primal: Graph
    tangent: Graph
    num_residuals: int


def _classify(graph: Graph, tangent_inputs: set[Var]) -> tuple[set[Var], set[Var]]:
    """Vars that depend on a tangent input, and vars that depend on no input at all."""
    tangent: set[Var] = set(tangent_inputs)
    constant: set[Var] = set(graph.consts)
    for node in graph.nodes:
        if any(v in tangent for v in node.inputs):
            tangent.update(node.outputs)
        elif all(v in constant for v in node.inputs):
            constant.update(node.outputs)
    return tangent, constant


def split_jvp_graph(graph: Graph, num_primals: int, num_tangents: int,
                    num_primal_outputs: int | None = None) -> Split:
    """Split a graph from `jvp_graph` (instantiated tangents) into primal and tangent parts.

    Its outputs are `num_primal_outputs` primal outputs (default: half of the program's
    outputs), then tangent outputs.

    The final values of mutated inputs stay primal: they are the primal part's trailing
    outputs (after the residuals), with `mutated_inputs` indexing its inputs.
    """
    primal_inputs = graph.inputs[:num_primals]
    tangent_inputs = graph.inputs[num_primals:num_primals + num_tangents]
    implicit = graph.inputs[num_primals + num_tangents:]
    num_user = len(graph.outputs) - len(graph.mutated_inputs)
    num_outputs = num_user // 2 if num_primal_outputs is None else num_primal_outputs
    primal_outputs = graph.outputs[:num_outputs]
    tangent_outputs = graph.outputs[num_outputs:num_user]
    mutated_values = graph.outputs[num_user:]
    tangent, constant = _classify(graph, set(tangent_inputs))

    tangent_nodes = [n for n in graph.nodes if any(v in tangent for v in n.outputs)]
    constant_nodes = [n for n in graph.nodes if n.outputs and all(v in constant
                                                                    for v in n.outputs)]
    residuals = _residuals(tangent_nodes, tangent_outputs, tangent, constant)

    primal_nodes = _primal_nodes(graph, tangent, tangent_inputs,
                                 list(primal_outputs) + list(mutated_values))
    mutated = tuple(i if i < num_primals else i - num_tangents for i in graph.mutated_inputs)
    primal = prune_outputs(Graph(list(primal_inputs) + list(implicit), primal_nodes,
                                 list(primal_outputs) + residuals + list(mutated_values),
                                 dict(graph.consts), num_captures=graph.num_captures,
                                 has_rng=graph.has_rng, name=f"{graph.name}_primal",
                                 mutated_inputs=mutated))
    tangent_graph = prune_outputs(Graph(list(tangent_inputs) + residuals,
                                        _in_order(graph, constant_nodes, tangent_nodes),
                                        list(tangent_outputs), dict(graph.consts),
                                        name=f"{graph.name}_tangent"))
    return Split(primal, tangent_graph, len(residuals))


def _primal_nodes(graph: Graph, tangent: set[Var], tangent_inputs: list[Var],
                  wanted: list[Var]) -> list[Node]:
    """The nodes the primal part runs.

    A node that computes primal and tangent values together (the JVP of a `cond`, `scan`
    or `while_loop` is one node) depends on the tangents, yet a primal output may come from
    it: then the primal part runs it with zero tangents (primal values never depend on
    tangents), pruned by `prune_outputs` to its primal outputs so that those zeros are
    not even read, and the tangent part runs it again for its tangents.
    """
    if not any(v in tangent for v in wanted):
        return [n for n in graph.nodes if not any(v in tangent for v in n.outputs)]
    zeros = [Node(P["full"], [], {"shape": v.aval.shape, "dtype": v.aval.dtype,
                                  "value": v.aval.dtype.type(0).item()}, [v])
             for v in tangent_inputs]
    return zeros + list(graph.nodes)  # prune_outputs keeps what the outputs need


def _residuals(tangent_nodes: list[Node], tangent_outputs: list[Var], tangent: set[Var],
               constant: set[Var]) -> list[Var]:
    """Primal values the tangent part reads, in first-use order, without duplicates."""
    seen: dict[Var, None] = {}
    reads = [v for n in tangent_nodes for v in n.inputs] + list(tangent_outputs)
    for v in reads:
        if v not in tangent and v not in constant:
            seen.setdefault(v, None)
    return list(seen)


def _in_order(graph: Graph, *groups: list[Node]) -> list[Node]:
    """The nodes of the groups, in the graph's (topological) order."""
    chosen = {id(n) for group in groups for n in group}
    return [n for n in graph.nodes if id(n) in chosen]


__all__ = ["Split", "split_jvp_graph"]
