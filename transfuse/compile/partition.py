"""The joint graph of a function and its reverse pass, and the partitioners that split it
into a forward graph (outputs + saved values) and a backward graph (saved values +
cotangents -> input cotangents). See docs/aot_autograd.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import maximum_flow

from transfuse.compiler.fusion import CONTRACTION, ELEMENTWISE, FUSION_CLASS, RELABEL, VIEW
from transfuse.compiler.simplify import dce
from transfuse.compiler.vjp import VJPGraphs
from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.primitives import PRIMITIVES as P

# ---------------------------------------------------------------------------------------
# The joint graph


@dataclass
class JointGraph:
    """primals + cotangents -> outputs + input cotangents, one graph.

    inputs: `num_primals` primal inputs, then one cotangent per differentiable output;
    outputs: `num_outputs` forward outputs, then one cotangent per `wrt` primal input.
    """

    graph: Graph
    num_primals: int
    num_outputs: int
    wrt: list[bool]

    @property
    def primals(self) -> list[Var]:
        return self.graph.inputs[:self.num_primals]

    @property
    def cotangents(self) -> list[Var]:
        return self.graph.inputs[self.num_primals:]

    @property
    def forward_outputs(self) -> list[Var]:
        return self.graph.outputs[:self.num_outputs]

    @property
    def backward_outputs(self) -> list[Var]:
        return self.graph.outputs[self.num_outputs:]


def joint_graph(split: VJPGraphs) -> JointGraph:
    """The forward and backward graphs of `vjp_graph` joined: the backward's residual
    inputs become the forward values they stand for."""
    fw, bw = split.forward, split.backward
    n_ct = sum(split.ct_outputs)
    residuals = dict(zip(bw.inputs[n_ct:], fw.outputs[split.num_outputs:]))
    nodes = list(fw.nodes) + [
        Node(n.prim, [residuals.get(v, v) for v in n.inputs], n.params, n.outputs, n.source)
        for n in bw.nodes]
    outputs = list(fw.outputs[:split.num_outputs]) + [residuals.get(v, v) for v in bw.outputs]
    graph = Graph(list(fw.inputs) + list(bw.inputs[:n_ct]), nodes, outputs,
                  {**fw.consts, **bw.consts}, name=fw.name.removesuffix("_fwd") + "_joint")
    return JointGraph(graph, len(fw.inputs), split.num_outputs, list(split.wrt))


# ---------------------------------------------------------------------------------------
# Partitions


@dataclass
class Partition:
    """forward: primals -> outputs + saved; backward: saved + cotangents -> input cts."""

    forward: Graph
    backward: Graph
    num_outputs: int
    num_saved: int

    @property
    def saved(self) -> list[Var]:
        """The values the forward saves for the backward."""
        return list(self.forward.outputs[self.num_outputs:])

    @property
    def saved_bytes(self) -> int:
        """Bytes of the values the forward saves for the backward."""
        return sum(_nbytes(v) for v in self.saved)

    def saved_bytes_besides_arguments(self) -> int:
        """saved_bytes without the arguments themselves (the caller holds them anyway)."""
        arguments = set(self.forward.inputs)
        return sum(_nbytes(v) for v in self.saved if v not in arguments)


def _nbytes(v: Var) -> int:
    return int(np.prod(v.aval.shape, dtype=np.int64)) * np.dtype(v.aval.dtype).itemsize


def _depends_on(nodes: Sequence[Node], roots: set[Var]) -> set[Var]:
    """The values computed from any of `roots`."""
    reached = set(roots)
    for node in nodes:
        if any(v in reached for v in node.inputs):
            reached.update(node.outputs)
    return reached


def _ancestor_nodes(nodes: Sequence[Node], wanted: Sequence[Var], stop: set[Var]
                    ) -> list[Node]:
    """The nodes computing `wanted`, not looking past the values in `stop`."""
    needed = {v for v in wanted if v not in stop}
    kept = []
    for node in reversed(nodes):
        if any(v in needed for v in node.outputs):
            kept.append(node)
            needed.update(v for v in node.inputs if v not in stop)
    kept.reverse()
    return kept


def partition_with(joint: JointGraph, saved: Sequence[Var], guard: bool = False
                   ) -> Partition:
    """The forward and backward graphs when the forward saves `saved`; with `guard`, the
    backward's recomputation reads the saved values through optimization barriers."""
    g = joint.graph
    forward = dce(Graph(joint.primals, g.nodes, joint.forward_outputs + list(saved),
                        dict(g.consts), name=g.name.removesuffix("_joint") + "_fwd"))
    available = set(saved) | set(joint.cotangents) | set(g.consts)
    bw_nodes = _ancestor_nodes(g.nodes, joint.backward_outputs, available)
    if guard:
        bw_nodes = _guard_recomputation(bw_nodes, saved, joint.cotangents)
    defined = available | {v for n in bw_nodes for v in n.outputs}
    missing = [v for n in bw_nodes for v in n.inputs if v not in defined]
    missing += [v for v in joint.backward_outputs if v not in defined]
    assert not missing, f"the backward reads unsaved forward values {missing[:3]}"
    backward = dce(Graph(list(saved) + joint.cotangents, bw_nodes, joint.backward_outputs,
                         dict(g.consts), name=g.name.removesuffix("_joint") + "_bwd"))
    return Partition(forward, backward, joint.num_outputs, len(saved))


def _guard_recomputation(nodes: list[Node], saved: Sequence[Var], cotangents: Sequence[Var]
                         ) -> list[Node]:
    """The backward's nodes, those recomputing forward values (no cotangent in them)
    reading the saved values through `optimization_barrier(v, sum(cotangent))`, as reverse
    mode guards a checkpoint's recomputation (ir/remat.py): when a jit inlines both halves
    into one program, CSE cannot merge the recomputation back into the forward pass (which
    would keep its values alive in between, the memory the partition saved). The barrier
    is an alias where compiled: no copy."""
    after_cts = _depends_on(nodes, set(cotangents))
    recompute = [n for n in nodes if not any(v in after_cts for v in n.outputs)]
    read = {v for n in recompute for v in n.inputs}
    guarded = [v for v in saved if v in read]
    if not guarded or not cotangents:
        return nodes
    ct = cotangents[0]
    after = Var(Aval((), ct.aval.dtype))
    guards = [Node(P["reduce_sum"], [ct], {"axes": tuple(range(ct.aval.ndim))}, [after])]
    alias = {v: Var(v.aval) for v in guarded}
    guards += [Node(P["optimization_barrier"], [v, after], {}, [alias[v]]) for v in guarded]
    recomputing = set(map(id, recompute))
    return guards + [Node(n.prim, [alias.get(v, v) for v in n.inputs], n.params, n.outputs,
                          n.source) if id(n) in recomputing else n for n in nodes]


def default_partition(joint: JointGraph) -> Partition:
    """Save what the backward reads: the forward computes the outputs, the backward
    everything else (vjp_graph's own split)."""
    g = joint.graph
    after_cts = _depends_on(g.nodes, set(joint.cotangents))
    fw_nodes = _ancestor_nodes([n for n in g.nodes if n.outputs[0] not in after_cts],
                               joint.forward_outputs, set())
    in_forward = set(joint.primals) | {v for n in fw_nodes for v in n.outputs}
    bw_nodes = _ancestor_nodes(g.nodes, joint.backward_outputs, in_forward)
    read = [v for n in bw_nodes for v in n.inputs] + joint.backward_outputs
    saved = list(dict.fromkeys(v for v in read if v in in_forward))
    return partition_with(joint, saved)


# ---------------------------------------------------------------------------------------
# The min-cut partitioner

# Values the backward may recompute from saved ones: cheap to compute, computed where they
# are read (so a fused backward kernel recomputes them in registers). Contractions,
# reductions and everything else (sorts, scans, calls, random draws) are never recomputed.
RECOMPUTABLE = frozenset(p for p, cls in FUSION_CLASS.items()
                         if cls in (ELEMENTWISE, RELABEL, VIEW)
                         and p.effect is None) | {P["transpose"], P["full"], P["iota"]}
assert not any(FUSION_CLASS.get(p) == CONTRACTION for p in RECOMPUTABLE)

_INT32_MAX = 2**31 - 1


def _weights(values: Sequence[Var]) -> dict[Var, int]:
    """Integer capacities: bytes, scaled down when their sum would overflow int32 (SciPy's
    maximum_flow takes int32 capacities); at least 1 so every cut costs something."""
    nbytes = {v: _nbytes(v) for v in values}
    scale = max(1, -(-sum(nbytes.values()) * 4 // (_INT32_MAX // 2)))
    return {v: max(1, n // scale) for v, n in nbytes.items()}


def min_cut_rematerialization_partition(joint: JointGraph) -> Partition:
    """Save the cheapest set of values (in bytes) from which the backward can recompute
    everything else it reads, recomputing only RECOMPUTABLE nodes: a minimum s-t cut.

    Each value v is an edge v_in -> v_out of capacity bytes(v) (cutting it = saving v); a
    node's inputs feed its outputs by infinite edges; the source feeds the primal inputs
    and every non-recomputable node's outputs (the forward computes those); every value
    that depends on a cotangent drains into the sink (only the backward can compute it).
    """
    g = joint.graph
    values = list(joint.primals) + [v for n in g.nodes for v in n.outputs]
    index = {v: i for i, v in enumerate(values)}
    weight = _weights(values)
    inf = _INT32_MAX // 2
    source, sink = 2 * len(values), 2 * len(values) + 1
    edges: dict[tuple[int, int], int] = {}

    def add(a: int, b: int, cap: int) -> None:
        edges[a, b] = min(inf, edges.get((a, b), 0) + cap)

    after_cts = _depends_on(g.nodes, set(joint.cotangents))
    for v in values:
        add(2 * index[v], 2 * index[v] + 1, weight[v])
    for v in joint.primals:
        add(source, 2 * index[v], inf)
    for node in g.nodes:
        for out in node.outputs:
            if out in after_cts:
                add(2 * index[out], sink, inf)
            elif node.prim not in RECOMPUTABLE:
                add(source, 2 * index[out], inf)
            for v in node.inputs:
                if v in index:
                    add(2 * index[v] + 1, 2 * index[out], inf)
    if not joint.cotangents:  # nothing to differentiate: the backward reads nothing
        return partition_with(joint, [])
    rows, cols = zip(*edges)
    caps = csr_array((np.fromiter(edges.values(), np.int32), (rows, cols)),
                     shape=(sink + 1, sink + 1))
    flow = maximum_flow(caps, source, sink).flow
    source_side = _reachable(caps, flow, source)
    saved = [v for v in values
             if 2 * index[v] in source_side and 2 * index[v] + 1 not in source_side]
    return partition_with(joint, _in_order(saved, g), guard=True)


def _reachable(caps: csr_array, flow: csr_array, source: int) -> set[int]:
    """Vertices reachable from the source in the residual network of a maximum flow."""
    residual = (caps - flow).tocsr()  # flow is antisymmetric: reverse edges get +flow
    residual.eliminate_zeros()
    seen, stack = {source}, [source]
    while stack:
        a = stack.pop()
        row = residual.indices[residual.indptr[a]:residual.indptr[a + 1]]
        vals = residual.data[residual.indptr[a]:residual.indptr[a + 1]]
        for b, c in zip(row, vals):
            if c > 0 and int(b) not in seen:
                seen.add(int(b))
                stack.append(int(b))
    return seen


def _in_order(saved: Sequence[Var], graph: Graph) -> list[Var]:
    """Saved values in the order the graph defines them."""
    chosen = set(saved)
    order = list(graph.inputs) + [v for n in graph.nodes for v in n.outputs]
    return [v for v in order if v in chosen]


__all__ = ["JointGraph", "Partition", "joint_graph", "partition_with", "default_partition",
           "min_cut_rematerialization_partition", "RECOMPUTABLE"]
