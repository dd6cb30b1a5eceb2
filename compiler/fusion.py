"""Fusion: a graph-to-graph rewrite that groups nodes into regions compiled as one loop nest.

A *loop region* iterates over one domain shape S. Every value inside it is computed at the
current point of S: elementwise, select, cast and broadcast nodes are inlined into the loop
body, so their intermediates never reach memory. A region may also reduce over a fixed set
of axes R of S; values then live at one of two levels: the full domain S, or the kept axes
K = S minus R (reduction results and the arithmetic on them). Reductions that depend on
other reductions run in later *phases* (softmax: max, then sum, then the normalised
output), all inside one outer loop over K.

Index-changing nodes (transpose, slice, pad, concatenate, gather, dynamic_slice,
update_slice, iota, random draws, ...) read their operands at other points, so their
operands must come from memory: they may start a region, and their consumers may join it,
but a producer is never fused into them. Contractions (dot_general, conv) and scans,
arg-reductions and scatters stay separate kernels; an elementwise consumer of a contraction
(bias + activation) is grouped with it as its *epilogue*.

Each region becomes one node of the `fused` primitive holding the region's sub-graph
(`print()` shows it). Reshapes and copies left alone become plain nodes that the backend
turns into views. See docs/compiler.md.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from transfuse.compiler.simplify import inline_calls  # noqa: F401  (part of jit's pipeline)
from transfuse.ir.core import Graph, Node, Var
from transfuse.ir.interpreter import interpret
from transfuse.ir.primitives import (
    BINARY_FLOAT,
    BINARY_NUMERIC,
    COMPARISONS,
    LOGICAL,
    PRIMITIVES,
    UNARY_FLOAT,
    UNARY_NUMERIC,
    UNARY_TO_BOOL,
    Primitive,
    define,
)

P = PRIMITIVES


def _fused_rule(*in_avals, graph: Graph, **_):
    return graph.out_avals


def _fused_impl(*args, graph: Graph, **_):
    return interpret(graph, args)


FUSED = define("fused", _fused_rule, _fused_impl, multiple_results=True,
               doc="a fused region: its sub-graph runs as one loop nest (or kernel + epilogue)")

# ---------------------------------------------------------------------------------------
# How each primitive takes part in fusion

ELEMENTWISE = "elementwise"  # computed at the current point from operands at that point
RELABEL = "relabel"  # broadcast or unit-dimension change: same point, other dims
INDEX = "index"  # reads operands at other points: operands come from memory
REDUCTION = "reduction"
CONTRACTION = "contraction"  # dot_general, conv: kernels that take an epilogue
KERNEL = "kernel"  # everything else that runs as its own kernel
VIEW = "view"  # reshapes: a view of a contiguous buffer when not fused

_ELEMENTWISE_NAMES = (
    list(UNARY_FLOAT) + list(UNARY_NUMERIC) + list(UNARY_TO_BOOL) + list(BINARY_NUMERIC)
    + list(BINARY_FLOAT) + list(COMPARISONS) + list(LOGICAL)
    + ["not", "integer_pow", "select", "clip", "cast", "copy", "random_fold_in", "real", "imag",
       "conj", "complex"]
)
FUSION_CLASS: dict[Primitive, str] = {P[n]: ELEMENTWISE for n in _ELEMENTWISE_NAMES}
FUSION_CLASS[P["stop_gradient"]] = ELEMENTWISE
# x itself, after its `after` token: its own node (the CPU aliases x), never fused forward
FUSION_CLASS[P["optimization_barrier"]] = KERNEL
FUSION_CLASS.update({P[n]: RELABEL for n in ("broadcast_in_dim", "squeeze", "expand_dims")})
FUSION_CLASS.update({P[n]: INDEX for n in (
    "transpose", "slice", "pad", "concatenate", "gather", "dynamic_slice", "update_slice",
    "dynamic_update_slice", "iota", "full", "random_uniform", "random_normal", "random_split")})
FUSION_CLASS.update({P[n]: REDUCTION for n in (
    "reduce_sum", "reduce_prod", "reduce_max", "reduce_min")})
FUSION_CLASS.update({P[n]: CONTRACTION for n in ("dot_general", "conv")})
FUSION_CLASS.update({P[n]: KERNEL for n in (
    "cumsum", "cumprod", "argmax", "argmin", "scatter", "scatter_add")})
FUSION_CLASS[P["reshape"]] = VIEW

# Nodes a region may hold, and nodes that become views/copies when left on their own.
_LOOP_CLASSES = (ELEMENTWISE, RELABEL, INDEX, REDUCTION)
_VIEW_LIKE = ("reshape", "squeeze", "expand_dims", "copy")


def fusion_class(node: Node) -> str:
    """The fusion class of a node (unknown primitives run as their own kernel)."""
    cls = FUSION_CLASS.get(node.prim, KERNEL)
    if cls == VIEW and is_unit_reshape(node.inputs[0].aval.shape, node.outputs[0].aval.shape):
        return RELABEL
    if cls == REDUCTION and not node.params["axes"]:
        return RELABEL  # a reduction over no axes is the identity
    return cls


def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def is_unit_reshape(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    """Whether a reshape only inserts or removes size-1 dimensions."""
    return squeezed(src) == squeezed(dst)


# ---------------------------------------------------------------------------------------
# Domains: which axis of the region's domain each dimension of a value walks along


def kept_axes(shape: tuple[int, ...], reduce_axes: tuple[int, ...] | None) -> list[int]:
    return [a for a in range(len(shape)) if a not in (reduce_axes or ())]


def level_axes(shape, domain, reduce_axes) -> list[int | None] | None:
    """Domain axis per dim of a value of `shape` living at the full or kept level.

    None marks a size-1 dim read at index 0. Returns None when the value fits neither level.
    A value whose dims are the level's axes one for one walks them all, size-1 kept axes
    included: a batch of 1 is then indexed as a batch of 7 is (`b1[i0, i1]`, not
    `b1[0, i1]`), so both render the same source and share one kernel; a size-1 reduced
    axis stays None, as its loop is not open where kept-level values are used.
    """
    levels = [list(range(len(domain)))]
    if reduce_axes:
        levels.append(kept_axes(domain, reduce_axes))
    for axes in levels:
        if tuple(shape) == tuple(domain[a] for a in axes):
            reduced = reduce_axes or ()
            return [None if domain[a] == 1 and a in reduced else a for a in axes]
    for axes in levels:
        nonunit = [a for a in axes if domain[a] != 1]
        if squeezed(shape) == tuple(domain[a] for a in nonunit):
            it = iter(nonunit)
            return [None if d == 1 else next(it) for d in shape]
    return None


def operand_axes(node: Node, i: int, out_axes: list[int | None]) -> list[int | None] | None:
    """The domain axes operand i is read along when node's output walks `out_axes`.

    Defined for elementwise, relabel and reduction nodes; None for anything else.
    """
    name = node.prim.name
    src = node.inputs[i].aval.shape
    dst = node.outputs[0].aval.shape
    cls = fusion_class(node)
    if cls == ELEMENTWISE:
        off = len(dst) - len(src)
        return [out_axes[j + off] if src[j] == dst[j + off] else None for j in range(len(src))]
    if name == "broadcast_in_dim":
        dims = node.params["broadcast_dimensions"]
        return [out_axes[d] if src[j] == dst[d] else None for j, d in enumerate(dims)]
    if cls == RELABEL:  # squeeze, expand_dims, unit reshape: non-unit dims keep their order
        it = iter([a for a, d in zip(out_axes, dst) if d != 1])
        return [None if d == 1 else next(it) for d in src]
    return None


# ---------------------------------------------------------------------------------------
# Regions


@dataclass(eq=False)
class Region:
    """A group of nodes being fused, with its domain and its links to other regions."""

    uid: int
    kind: str  # 'loop', 'kernel' (one node), 'view' (one node)
    nodes: list[Node]
    domain: tuple[int, ...] = ()
    reduce_axes: tuple[int, ...] | None = None
    deps: set[int] = field(default_factory=set)  # regions this one reads from
    reads: list[tuple[Node, int]] = field(default_factory=list)  # operands from elsewhere
    first: int = 0  # position of its first and last node in the graph
    last: int = 0
    epilogue: Region | None = None  # for a contraction: the loop region fused after it
    reduced: set[Var] = field(default_factory=set)  # values depending on its reductions


class _Fuser:
    """The greedy producer-consumer fusion of one graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.regions: list[Region] = []
        self.parent: list[int] = []  # union-find over region ids
        self.region_of_var: dict[Var, int] = {}  # defining region of each node output
        self.node_pos: dict[int, int] = {id(n): i for i, n in enumerate(graph.nodes)}

    # -- union-find ---------------------------------------------------------------------
    def find(self, r: int) -> int:
        while self.parent[r] != r:
            self.parent[r] = self.parent[self.parent[r]]
            r = self.parent[r]
        return r

    def region(self, var: Var) -> Region | None:
        rid = self.region_of_var.get(var)
        return None if rid is None else self.regions[self.find(rid)]

    def new_region(self, node: Node, kind: str, domain=(), reduce_axes=None) -> Region:
        pos = self.node_pos[id(node)]
        region = Region(len(self.regions), kind, [node], tuple(domain), reduce_axes,
                        first=pos, last=pos)
        self.regions.append(region)
        self.parent.append(region.uid)
        self.attach(region, node)
        return region

    def attach(self, region: Region, node: Node) -> None:
        for i, v in enumerate(node.inputs):
            src = self.region(v)
            if src is not None and src is not region:
                region.deps.add(src.uid)
                region.reads.append((node, i))
        if fusion_class(node) == REDUCTION or any(v in region.reduced for v in node.inputs):
            region.reduced.update(node.outputs)
        for v in node.outputs:
            self.region_of_var[v] = region.uid
        region.last = max(region.last, self.node_pos[id(node)])

    # -- the pass -----------------------------------------------------------------------
    def run(self, enabled: bool) -> list[Region]:
        for node in self.graph.nodes:
            cls = fusion_class(node)
            if cls in (KERNEL, CONTRACTION):
                self.new_region(node, "kernel")
            elif cls == VIEW:
                self.new_region(node, "view")
            elif not enabled or cls == INDEX or not self.try_join(node, cls):
                domain, axes = _own_domain(node, cls)
                self.new_region(node, "loop", domain, axes)
        if enabled:
            self.merge_siblings()
        regions = [r for r in self.regions if self.find(r.uid) == r.uid]
        for r in regions:
            r.deps = {self.find(d) for d in r.deps} - {r.uid}
            if r.kind == "loop" and len(r.nodes) == 1 and r.nodes[0].prim.name in _VIEW_LIKE:
                r.kind = "view"
        return regions

    def merge_siblings(self) -> None:
        """Merge loop regions over the same domain that read a common input.

        Independent consumers of one value (the many unary functions of x, a gradient's
        terms) then share one pass over it. Merging is legal when neither region depends
        on the other: then no path can leave the merged region and come back.
        """
        by_input: dict[Var, list[Region]] = {}
        for r in self.regions:
            if self.find(r.uid) != r.uid or r.kind != "loop":
                continue
            for n in r.nodes:
                for v in n.inputs:
                    if v not in self.region_of_var or self.region(v) is not r:
                        group = by_input.setdefault(v, [])
                        if r not in group:
                            group.append(r)
        for group in by_input.values():
            head = None
            for r in group:
                r = self.regions[self.find(r.uid)]
                if head is None or r is head:
                    head = r
                    continue
                spec = _sibling_domain(head, r)
                if spec is not None and not self._depends(head, r) and not self._depends(r, head):
                    self._absorb(head, r, spec)
                else:
                    head = r

    def _depends(self, region: Region, on: Region) -> bool:
        """Whether region reads, directly or through other regions, from `on`."""
        frontier = list(region.deps)
        seen: set[int] = set()
        while frontier:
            rid = self.find(frontier.pop())
            if rid == on.uid:
                return True
            if rid in seen or rid == region.uid:
                continue
            seen.add(rid)
            other = self.regions[rid]
            if other.last < on.first:
                continue
            frontier.extend(other.deps)
        return False

    def _absorb(self, head: Region, other: Region, spec) -> None:
        self.parent[other.uid] = head.uid
        head.nodes = sorted(head.nodes + other.nodes, key=lambda n: self.node_pos[id(n)])
        head.deps = {self.find(d) for d in head.deps | other.deps} - {head.uid}
        head.reads = head.reads + other.reads
        head.first, head.last = min(head.first, other.first), max(head.last, other.last)
        head.domain, head.reduce_axes = spec
        head.reduced |= other.reduced

    def try_join(self, node: Node, cls: str) -> bool:
        """Merge node with as many of its producers' loop regions as stay legal."""
        candidates: list[Region] = []
        for v in node.inputs:
            r = self.region(v)
            if r is not None and r.kind == "loop" and r not in candidates:
                candidates.append(r)
        chosen: list[Region] = []
        spec = None
        for cand in candidates:
            trial = _merged_domain(chosen + [cand], node, cls)
            if trial is not None and self.legal(chosen + [cand], node, trial):
                chosen.append(cand)
                spec = trial
        if not chosen:
            return False
        self.merge(chosen, node, spec)
        return True

    def legal(self, members: list[Region], node: Node, spec) -> bool:
        """Whether the edges that merging would make internal read values at their point.

        Edges already inside a member stay consistent: merging only relabels its axes.
        """
        ids = {r.uid for r in members}
        new_edges = [(node, i) for i, v in enumerate(node.inputs)
                     if (r := self.region(v)) is not None and r.uid in ids]
        if len(members) > 1:
            new_edges += [(n, i) for r in members for n, i in r.reads
                          if self.find(self.region_of_var[n.inputs[i]]) in ids]
        if level_axes(node.outputs[0].aval.shape, *spec) is None:
            return False
        if _reduces_leading_axes(*spec) and not self._one_phase(members, node, spec):
            return False
        for n, i in new_edges:
            if not _edge_consistent(n, i, *spec):
                return False
        return not self._creates_cycle(members, node, ids)

    def _one_phase(self, members: list[Region], node: Node, spec) -> bool:
        """Whether the region stays one pass over its domain (reductions over leading axes
        run with the kept axes innermost, see codegen): nothing at the full level, and no
        reduction, may read a reduction's result."""
        reduced = set().union(*(r.reduced for r in members))
        if not any(v in reduced for v in node.inputs):
            return True
        if fusion_class(node) == REDUCTION:
            return False
        domain, axes = spec
        kept = tuple(domain[a] for a in kept_axes(domain, axes))
        return squeezed(node.outputs[0].aval.shape) == squeezed(kept)

    def _creates_cycle(self, members: list[Region], node: Node, ids: set[int]) -> bool:
        """Whether some path leaves the merged group and comes back into it."""
        start = min(r.first for r in members)
        frontier = [self.find(d) for r in members for d in r.deps]
        frontier += [r.uid for v in node.inputs if (r := self.region(v)) is not None]
        frontier = [d for d in frontier if d not in ids]
        seen: set[int] = set()
        while frontier:
            rid = self.find(frontier.pop())
            if rid in seen:
                continue
            seen.add(rid)
            region = self.regions[rid]
            if region.last < start:
                continue  # wholly before the group: cannot depend on it
            for d in region.deps:
                d = self.find(d)
                if d in ids:
                    return True
                frontier.append(d)
        return False

    def merge(self, members: list[Region], node: Node, spec) -> None:
        head = members[0]
        for other in members[1:]:
            self.parent[other.uid] = head.uid
            head.nodes.extend(other.nodes)
            head.deps |= other.deps
            head.reads.extend(other.reads)
            head.first = min(head.first, other.first)
            head.last = max(head.last, other.last)
            head.reduced |= other.reduced
        if len(members) > 1:  # one member's nodes are in graph order already
            head.nodes.sort(key=lambda n: self.node_pos[id(n)])
        head.nodes.append(node)
        head.domain, head.reduce_axes = spec
        self.attach(head, node)
        head.deps = {self.find(d) for d in head.deps} - {head.uid}
        head.reads = [(n, i) for n, i in head.reads
                      if self.find(self.region_of_var[n.inputs[i]]) != head.uid]


def _reduces_leading_axes(domain, reduce_axes) -> bool:
    """Whether a region reduces a leading block of its axes and keeps the trailing ones."""
    return bool(reduce_axes) and len(reduce_axes) < len(domain) and tuple(
        reduce_axes) == tuple(range(len(reduce_axes)))


def _edge_consistent(n: Node, i: int, domain, reduce_axes) -> bool:
    """Whether node n, computed inside a region, may read operand i computed there too."""
    cls = fusion_class(n)
    if cls == INDEX:
        return False  # an index node reads its operands from memory
    if cls == REDUCTION:
        return n.inputs[0].aval.shape == tuple(domain) and n.params["axes"] == reduce_axes
    out_axes = level_axes(n.outputs[0].aval.shape, domain, reduce_axes)
    want = level_axes(n.inputs[i].aval.shape, domain, reduce_axes)
    if out_axes is None or want is None:
        return False
    return _unit_free(operand_axes(n, i, out_axes), domain) == _unit_free(want, domain)


def _unit_free(axes: list[int | None] | None, domain) -> list[int | None] | None:
    """Axes with the size-1 ones written as None: reading one at its index or at 0 is the
    same point (codegen's `_normalize`)."""
    return None if axes is None else [None if a is None or domain[a] == 1 else a for a in axes]


def _sibling_domain(a: Region, b: Region):
    """The merged (domain, reduce_axes) of two regions, when both fit the same loops."""
    if a.reduce_axes and b.reduce_axes:
        same = tuple(a.domain) == tuple(b.domain) and a.reduce_axes == b.reduce_axes
        return (tuple(a.domain), a.reduce_axes) if same else None
    if a.reduce_axes or b.reduce_axes:
        return None  # a reduction region would run the other's loop once per phase
    if squeezed(a.domain) != squeezed(b.domain):
        return None
    return max((tuple(a.domain), tuple(b.domain)), key=len), None


def _own_domain(node: Node, cls: str):
    if cls == REDUCTION:
        return node.inputs[0].aval.shape, tuple(node.params["axes"])
    return node.outputs[0].aval.shape, None


def _merged_domain(members: list[Region], node: Node, cls: str):
    """The (domain, reduce_axes) of members plus node, or None when they do not fit."""
    specs = [(r.domain, r.reduce_axes) for r in members] + [_own_domain(node, cls)]
    reducing = {(tuple(s), tuple(a)) for s, a in specs if a}
    if len(reducing) > 1:
        return None
    if reducing:
        domain, axes = next(iter(reducing))
        kept = tuple(domain[a] for a in kept_axes(domain, axes))
        fits = (squeezed(domain), squeezed(kept))
        if all(squeezed(s) in fits for s, a in specs if not a):
            return tuple(domain), axes
        return None
    shapes = {squeezed(s) for s, _ in specs}
    if len(shapes) != 1:
        return None
    return max((tuple(s) for s, _ in specs), key=len), None


# ---------------------------------------------------------------------------------------
# Building the fused graph


def fuse(graph: Graph, *, enabled: bool = True) -> Graph:
    """Group the nodes of a pure, call-free graph into `fused` regions.

    With enabled=False every node is its own region (the unfused baseline).
    """
    if enabled:
        graph = split_full_reductions(fold_transposes(factor_outer_contractions(graph)))
    regions = _Fuser(graph).run(enabled)
    regions = _attach_epilogues(regions, graph) if enabled else regions
    ordered = _topological(regions)
    outer_uses = _uses_outside(graph, regions)
    return _rebuilt(graph, [_region_node(r, outer_uses, graph) for r in ordered])


def _uses_outside(graph: Graph, regions: list[Region]) -> dict[Var, bool]:
    """For each node output, whether something outside its region reads it."""
    owner = {v: r.uid for r in regions for n in r.nodes for v in n.outputs}
    used: dict[Var, bool] = {v: False for v in owner}
    for r in regions:
        for n in r.nodes:
            for v in n.inputs:
                if v in owner and owner[v] != r.uid:
                    used[v] = True
    for v in graph.outputs:
        if v in used:
            used[v] = True
    return used


def _region_node(region: Region, outer_uses: dict[Var, bool], graph: Graph) -> Node:
    if region.kind in ("kernel", "view"):
        return region.nodes[0]
    if region.kind == "contraction":
        epilogue = _region_node(region.epilogue, outer_uses, graph)
        nodes = [region.nodes[0], epilogue]
        params = {}
    else:
        nodes = region.nodes
        params = {"shape": tuple(region.domain),
                  "reduce_axes": tuple(region.reduce_axes or ())}
    sub = _subgraph(nodes, outer_uses, graph, f"{region.kind}{region.uid}")
    source = next((n.source for n in region.nodes if n.source is not None), None)
    return Node(FUSED, list(sub.inputs), {"graph": sub, "kind": region.kind, **params},
                list(sub.outputs), source)


def _subgraph(nodes: list[Node], outer_uses: dict[Var, bool], graph: Graph, name: str
              ) -> Graph:
    """The sub-graph of a region: external values in, values used outside out."""
    defined = {v for n in nodes for v in n.outputs}
    inputs: list[Var] = []
    consts = {}
    for n in nodes:
        for v in n.inputs:
            if v in defined or v in inputs or v in consts:
                continue
            if v in graph.consts and graph.consts[v].ndim == 0:
                consts[v] = graph.consts[v]  # scalars are inlined as literals
            else:
                inputs.append(v)
    outputs = [v for n in nodes for v in n.outputs if outer_uses.get(v)]
    # The sub-graph's inputs are the same Var objects that name the values outside.
    return Graph(inputs, list(nodes), outputs, consts, name=name)


def _topological(regions: list[Region]) -> list[Region]:
    """Regions in an order where each comes after the regions it reads (stable by position)."""
    pending = {r.uid: len(r.deps) for r in regions}
    readers: dict[int, list[Region]] = {}
    for r in regions:
        for d in r.deps:
            readers.setdefault(d, []).append(r)
    ready = [(r.first, r.uid, r) for r in regions if not r.deps]
    heapq.heapify(ready)
    done: list[Region] = []
    while ready:
        _, _, r = heapq.heappop(ready)
        done.append(r)
        for other in readers.get(r.uid, []):
            pending[other.uid] -= 1
            if pending[other.uid] == 0:
                heapq.heappush(ready, (other.first, other.uid, other))
    if len(done) != len(regions):
        raise AssertionError("fusion produced a cycle between regions")
    return done


def _attach_epilogues(regions: list[Region], graph: Graph) -> list[Region]:
    """Group each contraction with the one loop region that consumes its result."""
    readers: dict[Var, list[Region]] = {}
    for r in regions:
        for n in r.nodes:
            for v in n.inputs:
                lst = readers.setdefault(v, [])
                if r not in lst:
                    lst.append(r)
    outputs = set(graph.outputs)
    by_id = {r.uid: r for r in regions}
    merged: set[int] = set()
    for r in regions:
        node = r.nodes[0]
        if r.kind != "kernel" or fusion_class(node) != CONTRACTION:
            continue
        result = node.outputs[0]
        users = readers.get(result, [])
        if result in outputs or len(users) != 1 or users[0].kind != "loop":
            continue
        epilogue = users[0]
        if tuple(epilogue.domain) != result.aval.shape or epilogue.uid in merged:
            continue
        if _reaches(by_id, epilogue, r.uid, exclude_direct=True):
            continue
        r.kind = "contraction"
        r.epilogue = epilogue
        r.nodes = [node] + epilogue.nodes
        r.deps = (r.deps | epilogue.deps) - {r.uid}
        r.last = max(r.last, epilogue.last)
        merged.add(epilogue.uid)
        for other in regions:
            if epilogue.uid in other.deps:
                other.deps = (other.deps - {epilogue.uid}) | {r.uid}
    return [r for r in regions if r.uid not in merged]


def _reaches(by_id: dict[int, Region], region: Region, target: int, exclude_direct: bool
             ) -> bool:
    """Whether region depends on target through some other region."""
    frontier = [d for d in region.deps if not (exclude_direct and d == target)]
    seen: set[int] = set()
    while frontier:
        rid = frontier.pop()
        if rid == target:
            return True
        if rid in seen or rid not in by_id:
            continue
        seen.add(rid)
        frontier.extend(by_id[rid].deps)
    return False


def fold_transposes(graph: Graph) -> Graph:
    """transpose(dot_general(a, b)) that only swaps the free dims is dot_general(b, a).

    Per-sample gradients produce these (an outer product, then a transpose into the
    weight's layout): folded, the contraction writes the final layout in one pass.
    """
    uses = graph.use_counts()
    producer = graph.producers()
    swapped: dict[int, Node] = {}  # id(transpose) -> replacement contraction
    for node in graph.nodes:
        dot = producer.get(node.inputs[0]) if node.prim is P["transpose"] else None
        if (dot is None or dot.prim is not P["dot_general"] or uses[node.inputs[0]] != 1
                or node.inputs[0] in graph.outputs):
            continue
        (lc, rc), (lb, rb) = dot.params["dimension_numbers"]
        n_batch = len(lb)
        n_lfree = dot.inputs[0].aval.ndim - len(lc) - n_batch
        n_rfree = dot.inputs[1].aval.ndim - len(rc) - n_batch
        free_swap = (tuple(range(n_batch)) + tuple(range(n_batch + n_lfree,
                                                          n_batch + n_lfree + n_rfree))
                     + tuple(range(n_batch, n_batch + n_lfree)))
        if tuple(node.params["permutation"]) == free_swap:
            params = {"dimension_numbers": ((tuple(rc), tuple(lc)), (tuple(rb), tuple(lb)))}
            swapped[id(node)] = Node(dot.prim, [dot.inputs[1], dot.inputs[0]], params,
                                     list(node.outputs), node.source)
            swapped[id(dot)] = None
    if not swapped:
        return graph
    nodes = [swapped.get(id(n), n) for n in graph.nodes]
    return _rebuilt(graph, [n for n in nodes if n is not None])


# ---------------------------------------------------------------------------------------
# Contractions of outer products: sum_{k,p} A[.,k] X[.,p] B[.,k] Y[.,p] = (A.B) (X.Y)


@dataclass
class _OuterView:
    """A dot_general operand that is an outer product seen through a transpose/reshape."""

    outer: Node  # dot_general(P, Q) with no contracting dims
    groups: list[list[int]]  # per dim of the operand: the outer product's dims it merges

    def factor(self, dim: int) -> list[tuple[int, int]]:
        """(factor, its dim) holding outer dim `dim`: 0 is P, 1 is Q; both for a batch dim."""
        (_, _), (pb, qb) = self.outer.params["dimension_numbers"]
        pfree = [d for d in range(self.outer.inputs[0].aval.ndim) if d not in pb]
        qfree = [d for d in range(self.outer.inputs[1].aval.ndim) if d not in qb]
        if dim < len(pb):
            return [(0, pb[dim]), (1, qb[dim])]
        dim -= len(pb)
        return [(0, pfree[dim])] if dim < len(pfree) else [(1, qfree[dim - len(pfree)])]


def _merge_groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[list[int]] | None:
    """Per dim of `dst`, the consecutive dims of `src` a reshape merges into it, or None."""
    groups, j = [], 0
    for size in dst:
        group, prod = [], 1
        while j < len(src) and prod * src[j] <= size and (prod < size or src[j] == 1):
            group.append(j)
            prod *= src[j]
            j += 1
        if prod != size:
            return None
        groups.append(group)
    if any(src[d] != 1 for d in range(j, len(src))) or (j < len(src) and not groups):
        return None
    if j < len(src):
        groups[-1].extend(range(j, len(src)))
    return groups


def _outer_view(v: Var, producer: dict[Var, Node]) -> _OuterView | None:
    node = producer.get(v)
    groups = [[d] for d in range(v.aval.ndim)]
    if node is not None and node.prim is P["reshape"]:
        groups = _merge_groups(node.inputs[0].aval.shape, v.aval.shape)
        if groups is None:
            return None
        node = producer.get(node.inputs[0])
    if node is not None and node.prim is P["transpose"]:
        perm = node.params["permutation"]
        groups = [[perm[d] for d in g] for g in groups]
        node = producer.get(node.inputs[0])
    if node is None or node.prim is not P["dot_general"]:
        return None
    (contracting, _), _ = node.params["dimension_numbers"]
    return None if contracting else _OuterView(node, groups)


def _components(edges: list[tuple[int, int]]) -> list[list[int]] | None:
    """Factors 0-1 (left) and 2-3 (right) grouped by the contractions that link them.

    None when the sum does not split, or a group would need more than one contraction.
    """
    root = list(range(4))

    def find(f: int) -> int:
        while root[f] != f:
            f = root[f]
        return f
    for a, b in edges:
        root[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for f in range(4):
        groups.setdefault(find(f), []).append(f)
    parts = list(groups.values())
    return None if len(parts) < 2 or any(len(p) > 2 for p in parts) else parts


def _factored(node: Node, producer: dict[Var, Node]) -> list[Node] | None:
    """dot_general of two outer products as the product of smaller contractions, or None."""
    (lc, rc), (lb, _) = node.params["dimension_numbers"]
    out = node.outputs[0].aval
    if lb or not lc or out.dtype.kind != "f" or out.size == 0:
        return None
    views = [_outer_view(v, producer) for v in node.inputs]
    if None in views or views[0].outer is views[1].outer:
        return None
    factors = [v for view in views for v in view.outer.inputs]
    edges: list[tuple[int, int]] = []
    contracted: list[list[int]] = [[] for _ in range(4)]
    for a, c in zip(lc, rc):
        left, right = views[0].groups[a], views[1].groups[c]
        shapes = [[view.outer.outputs[0].aval.shape[d] for d in g]
                  for view, g in zip(views, (left, right))]
        if shapes[0] != shapes[1]:
            return None
        for d1, d2 in zip(left, right):
            owners = views[0].factor(d1), views[1].factor(d2)
            if len(owners[0]) != 1 or len(owners[1]) != 1:
                return None  # a contracted batch dim is shared by both factors
            (f1, e1), (f2, e2) = owners[0][0], owners[1][0]
            edges.append((f1, 2 + f2))
            contracted[f1].append(e1)
            contracted[2 + f2].append(e2)
    parts = _components(edges)
    if parts is None or any(f.aval.dtype != out.dtype for f in factors):
        return None
    # the result with every merged dim split: the free dims' outer dims, lhs then rhs
    target = [(side, d) for side, view in enumerate(views)
              for a in range(node.inputs[side].aval.ndim)
              if a not in (lc, rc)[side] for d in view.groups[a]]
    position = {}
    for t, (side, d) in enumerate(target):
        for f, e in views[side].factor(d):
            position[(2 * side + f, e)] = t
    shape = tuple(views[s].outer.outputs[0].aval.shape[d] for s, d in target)
    nodes, terms = [], []
    for part in parts:
        dims = [(f, e) for f in part for e in range(factors[f].aval.ndim)
                if e not in contracted[f]]
        value = factors[part[0]]
        if len(part) == 2:
            dn = ((tuple(contracted[part[0]]), tuple(contracted[part[1]])), ((), ()))
            value = _emit(nodes, "dot_general", [factors[part[0]], factors[part[1]]],
                          {"dimension_numbers": dn},
                          tuple(factors[f].aval.shape[e] for f, e in dims), node)
        where = [position[fe] for fe in dims]
        order = sorted(range(len(where)), key=where.__getitem__)
        if order != list(range(len(where))):
            value = _emit(nodes, "transpose", [value], {"permutation": tuple(order)},
                          tuple(value.aval.shape[i] for i in order), node)
        terms.append(_emit(nodes, "broadcast_in_dim", [value], {
            "shape": shape, "broadcast_dimensions": tuple(sorted(where))}, shape, node))
    product = terms[0]
    for term in terms[1:]:
        product = _emit(nodes, "mul", [product, term], {}, shape, node)
    if shape == out.shape:  # the last node defines the contraction's result itself
        nodes[-1] = Node(nodes[-1].prim, nodes[-1].inputs, nodes[-1].params,
                         list(node.outputs), node.source)
    else:
        nodes.append(Node(P["reshape"], [product], {"new_sizes": out.shape},
                          list(node.outputs), node.source))
    return nodes


def _emit(nodes: list[Node], name: str, inputs: list[Var], params: dict,
          shape: tuple[int, ...], origin: Node) -> Var:
    result = Var(inputs[0].aval.update(shape=shape))
    nodes.append(Node(P[name], list(inputs), params, [result], origin.source))
    return result


def factor_outer_contractions(graph: Graph) -> Graph:
    """A contraction of two outer products whose sum splits becomes two small ones.

    The NTK's Jacobian contraction is one: sum over (k, p) of A[n,a,k] X[n,p] B[m,b,k]
    Y[m,p] is (sum_k A B) (sum_p X Y); the outer products (hundreds of MB) and the
    contraction over their product of sizes are never formed. Exact in real arithmetic;
    the sums are rounded differently (as any other summation order would be).
    """
    producer = graph.producers()
    rewritten: dict[int, list[Node]] = {}
    for node in graph.nodes:
        if node.prim is P["dot_general"]:
            nodes = _factored(node, producer)
            if nodes is not None:
                rewritten[id(node)] = nodes
    if not rewritten:
        return graph
    nodes = [m for n in graph.nodes for m in rewritten.get(id(n), [n])]
    nodes = _shared_contractions(nodes, graph.outputs)
    return _rebuilt(graph, _without_dead_views(nodes, graph.outputs))


def _shared_contractions(nodes: list[Node], outputs: list[Var]) -> list[Node]:
    """A dot_general repeating an earlier one (same operands and dims) reads its result.

    Factoring often recreates a contraction the graph already has (the NTK's bias terms).
    """
    seen: dict[tuple, Var] = {}
    same: dict[Var, Var] = {}
    kept = []
    for node in nodes:
        if same:
            node = Node(node.prim, [same.get(v, v) for v in node.inputs], node.params,
                        node.outputs, node.source)
        if node.prim is P["dot_general"] and node.outputs[0] not in outputs:
            key = (*(v.uid for v in node.inputs), repr(node.params["dimension_numbers"]))
            if key in seen:
                same[node.outputs[0]] = seen[key]
                continue
            seen[key] = node.outputs[0]
        kept.append(node)
    return kept


def _without_dead_views(nodes: list[Node], outputs: list[Var]) -> list[Node]:
    """Drop reshapes, transposes and contractions whose results nothing reads any more."""
    removable = (P["reshape"], P["transpose"], P["dot_general"])
    while True:
        used = set(outputs) | {v for n in nodes for v in n.inputs}
        kept = [n for n in nodes if n.prim not in removable or any(v in used
                                                                    for v in n.outputs)]
        if len(kept) == len(nodes):
            return nodes
        nodes = kept


SPLIT_REDUCTION_MIN_SIZE = 1 << 17  # reductions to a scalar at least this large


def split_full_reductions(graph: Graph) -> Graph:
    """A large reduction of a matrix to a scalar becomes rows first, then the row results.

    The row reductions run in parallel over the rows (and fuse with the producers); the
    second reduction is small. Sums are associated differently (by rows), to rounding.
    """
    nodes: list[Node] = []
    changed = False
    for node in graph.nodes:
        x = node.inputs[0] if node.inputs else None
        if (fusion_class(node) != REDUCTION or x.aval.ndim < 2 or x.aval.size
                < SPLIT_REDUCTION_MIN_SIZE or tuple(node.params["axes"]) != tuple(
                    range(x.aval.ndim))):
            nodes.append(node)
            continue
        last = x.aval.ndim - 1
        rows = Var(x.aval.update(shape=x.aval.shape[:last]))
        nodes.append(Node(node.prim, [x], {"axes": (last,)}, [rows], node.source))
        nodes.append(Node(node.prim, [rows], {"axes": tuple(range(last))}, list(node.outputs),
                          node.source))
        changed = True
    return _rebuilt(graph, nodes) if changed else graph


def _rebuilt(graph: Graph, nodes: list[Node]) -> Graph:
    return Graph(graph.inputs, nodes, graph.outputs, graph.consts, graph.num_captures,
                 graph.has_rng, graph.name, graph.in_tree, graph.out_tree,
                 mutated_inputs=graph.mutated_inputs)


# ---------------------------------------------------------------------------------------
# Calls: inlined before fusion


def fused_regions(graph: Graph) -> list[Node]:
    """The fused nodes of a graph (nested epilogue regions included)."""
    out = []
    for n in graph.nodes:
        if n.prim is FUSED:
            out.append(n)
            out.extend(fused_regions(n.params["graph"]))
    return out
