"""The minifier: shrink a graph that fails (a compiler raising, or disagreeing with the
reference interpreter) to a small graph that still fails, by delta debugging.

Three passes, each Zeller's ddmin over one list:
- nodes: keep a subset of the nodes; the graph is *cut*: a value a kept node reads but no
  kept node defines becomes a new input, fed with what the reference interpreter computed
  for it on the original inputs, and every kept value nothing kept reads is an output;
- outputs: keep a subset of the outputs (then the nodes they do not need go);
- inputs: inputs nothing reads are dropped;
- bodies: then the sub-graphs the kept nodes hold (a scan's body, a cond's branches, a
  call's graph; nested ones too) by ddmin over their nodes, a value no kept node of the
  body defines read as zeros of its shape (the body's signature is kept). A while_loop's
  graphs stay whole: zeros in its condition or step may never end the loop.
The search is deterministic (the lists keep graph order) and calls `fails` at most
`max_calls` times; when the bound is hit, the smallest failing graph found so far is
returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transfuse.ir.core import Graph, Node, Var
from transfuse.ir.errors import TransfuseError, TransfuseValueError
from transfuse.ir.interpreter import interpret
from transfuse.ir.verify import verify

Fails = Callable[[Graph, list], bool]


def minifier(graph: Graph, inputs: Sequence[Any], fails: Fails, *, max_calls: int = 300
             ) -> tuple[Graph, list]:
    """The smallest (graph, inputs) found on which `fails` is still true."""
    inputs = [np.asarray(x) for x in inputs]
    search = _Search(fails, max_calls)
    if not search.fails(graph, inputs):
        raise TransfuseValueError(
            f"minifier: graph {graph.name} does not fail on these inputs: nothing to minify")
    values = all_values(graph, inputs)
    best = _Cut(graph, values, list(range(len(graph.nodes))), None)
    best = _min_nodes(search, best)
    best = _min_outputs(search, best)
    best = _min_nodes(search, best.pruned())  # outputs dropped may leave nodes to drop
    best = _min_outputs(search, best)
    small, small_inputs = best.pruned().build()
    return _min_bodies(search, small, lambda g: g, small_inputs), small_inputs


def all_values(graph: Graph, inputs: Sequence[Any]) -> dict[Var, Any]:
    """The reference interpreter's value of every variable of the graph."""
    defined = [v for node in graph.nodes for v in node.outputs]
    probe = Graph(list(graph.inputs), list(graph.nodes), defined, dict(graph.consts),
                  name=graph.name)
    env: dict[Var, Any] = dict(zip(graph.inputs, inputs))
    # On copies: a program may write into its inputs (then a written buffer's value is
    # its final one, what both sides of a check see alike).
    values = interpret(probe, [np.array(x, copy=True) for x in inputs])
    env.update(zip(defined, [np.array(v, copy=True) for v in values]))
    return env


class _Search:
    """Calls `fails`, counting; past the bound every candidate counts as passing."""

    def __init__(self, fails: Fails, max_calls: int):
        self._fails, self.left = fails, max_calls

    def fails(self, graph: Graph, inputs: list) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return bool(self._fails(graph, inputs))

    def cut_fails(self, cut: _Cut) -> bool:
        if not cut.outputs():
            return False
        return self.fails(*cut.build())


class _Cut:
    """A sub-graph of the original: the nodes kept (indices) and the outputs kept."""

    def __init__(self, graph: Graph, values: dict[Var, Any], keep: list[int],
                 outs: list[Var] | None):
        self.graph, self.values, self.keep, self.outs = graph, values, keep, outs

    def with_nodes(self, keep: list[int]) -> _Cut:
        return _Cut(self.graph, self.values, keep, None)

    def with_outputs(self, outs: list[Var]) -> _Cut:
        return _Cut(self.graph, self.values, self.keep, outs)

    def nodes(self) -> list[Node]:
        return [self.graph.nodes[i] for i in self.keep]

    def outputs(self) -> list[Var]:
        """The kept outputs; by default the original outputs still computed and the values
        no kept node reads (a cut-off intermediate is where a miscompile shows)."""
        if self.outs is not None:
            return self.outs
        nodes = self.nodes()
        read = {v for n in nodes for v in n.inputs}
        defined = [v for n in nodes for v in n.outputs]
        kept = set(defined)
        outs = [v for v in dict.fromkeys(self.graph.outputs) if v in kept]
        return outs + [v for v in defined if v not in read and v not in outs]

    def pruned(self) -> _Cut:
        """Only the nodes the kept outputs need (and effects: a write into a buffer defines
        nothing), the outputs fixed."""
        outs = self.outputs()
        needed = set(outs)
        keep = []
        for i in reversed(self.keep):
            node = self.graph.nodes[i]
            if node.prim.effect is not None or any(v in needed for v in node.outputs):
                keep.append(i)
                needed.update(node.inputs)
        return _Cut(self.graph, self.values, keep[::-1], outs)

    def build(self) -> tuple[Graph, list]:
        """The cut graph (every input explicit) and its inputs' values."""
        nodes, outs = self.nodes(), self.outputs()
        defined = {v for n in nodes for v in n.outputs}
        consts = {v: a for v, a in self.graph.consts.items()
                  if any(v in n.inputs for n in nodes) or v in outs}
        wanted = [v for n in nodes for v in n.inputs] + outs
        free = {v for v in wanted if v not in defined and v not in consts}
        # Original inputs first, in their order, then the cut values in definition order.
        order = {v: i for i, v in enumerate(self.graph.inputs)}
        order.update({v: len(order) + i for i, v in enumerate(self.values)
                      if v not in order})
        ins = sorted(free, key=order.__getitem__)
        graph = Graph(ins, nodes, outs, consts, name=f"{self.graph.name}_min")
        return verify(graph), [self.values[v] for v in ins]


def _ddmin(items: list, test: Callable[[list], bool]) -> list:
    """Zeller's ddmin: a 1-minimal sublist of items on which test is true (items order kept)."""
    n = 2
    while len(items) >= 2:
        chunks = _split(items, n)
        for chunk in chunks:
            if test(chunk):
                items, n = chunk, 2
                break
        else:
            for i in range(len(chunks)):
                rest = [x for j, c in enumerate(chunks) if j != i for x in c]
                if n > 2 and test(rest):
                    items, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(items):
                    return items
                n = min(2 * n, len(items))
    return items


def _split(items: list, n: int) -> list[list]:
    size, extra = divmod(len(items), n)
    chunks, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [c for c in chunks if c]


def _min_nodes(search: _Search, cut: _Cut) -> _Cut:
    keep = _ddmin(cut.keep, lambda k: search.cut_fails(cut.with_nodes(k)))
    return cut.with_nodes(keep)


def _min_outputs(search: _Search, cut: _Cut) -> _Cut:
    outs = _ddmin(cut.outputs(), lambda o: search.cut_fails(cut.with_outputs(o)))
    return cut.with_outputs(outs)


# ---------------------------------------------------------------------------------------
# Inside the nodes that hold graphs

_UNBOUNDED = frozenset({"while_loop"})  # zeros in a loop's test or step may never end it


def _slots(node: Node) -> list[tuple[str, int | None]]:
    """Where the node's params hold graphs: (key, None) or (key, index in a tuple)."""
    found: list[tuple[str, int | None]] = []
    for key, p in node.params.items():
        if isinstance(p, Graph):
            found.append((key, None))
        elif isinstance(p, tuple):
            found.extend((key, j) for j, g in enumerate(p) if isinstance(g, Graph))
    return found


def _body(node: Node, slot: tuple[str, int | None]) -> Graph:
    key, j = slot
    return node.params[key] if j is None else node.params[key][j]


def _with_body(graph: Graph, i: int, slot: tuple[str, int | None], body: Graph) -> Graph:
    """graph with node i's sub-graph at `slot` replaced by body."""
    node, (key, j) = graph.nodes[i], slot
    held = body if j is None else tuple(body if k == j else g
                                        for k, g in enumerate(node.params[key]))
    nodes = list(graph.nodes)
    nodes[i] = Node(node.prim, node.inputs, dict(node.params, **{key: held}), node.outputs,
                    node.source)
    return Graph(graph.inputs, nodes, graph.outputs, graph.consts, graph.num_captures,
                 graph.has_rng, name=graph.name)


def _body_subset(body: Graph, keep: list[int]) -> Graph:
    """The body with only the nodes in `keep`; what they (or the outputs) read that no
    kept node defines is a zero constant of its aval."""
    nodes = [body.nodes[i] for i in keep]
    defined = set(body.inputs) | set(body.consts) | {v for n in nodes for v in n.outputs}
    wanted = [v for n in nodes for v in n.inputs] + list(body.outputs)
    zeros = {v: np.zeros(v.aval.shape, v.aval.dtype) for v in wanted if v not in defined}
    return Graph(body.inputs, nodes, body.outputs, {**body.consts, **zeros},
                 body.num_captures, body.has_rng, name=body.name)


def _min_bodies(search: _Search, graph: Graph, place: Callable[[Graph], Graph],
                inputs: list) -> Graph:
    """graph (placed in the whole program by `place`) with every sub-graph its nodes hold
    shrunk by ddmin over the sub-graph's nodes, recursively."""
    for i, node in enumerate(graph.nodes):
        if node.prim.name in _UNBOUNDED:
            continue
        for slot in _slots(node):
            body = _body(graph.nodes[i], slot)

            def within(b: Graph, i: int = i, slot: tuple = slot, g: Graph = graph) -> Graph:
                return place(_with_body(g, i, slot, b))

            def still_fails(keep: list[int], body: Graph = body, within=within) -> bool:
                try:
                    candidate = verify(within(_body_subset(body, keep)))
                except TransfuseError:  # not a well-formed program: not this failure
                    return False
                return search.fails(candidate, inputs)

            keep = _ddmin(list(range(len(body.nodes))), still_fails)
            smaller = _min_bodies(search, _body_subset(body, keep), within, inputs)
            graph = _with_body(graph, i, slot, smaller)
    return graph


__all__ = ["minifier", "all_values"]
