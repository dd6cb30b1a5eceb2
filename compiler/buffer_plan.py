"""Buffers of the generated entry point: allocate each value once, reuse dead ones.

A buffer dies after its last reader and is reused for a later value of the same size and
dtype; views alias their base's buffer; an elementwise region may write over an input that
dies there. Used by compiler/lower_cpu.py and compiler/lower_control.py.
"""

from __future__ import annotations

import math

from transfuse.ir.core import Graph, Node, Var

from .gemm_plan import UNIT_STAND_IN
from .lowering_graph import flatten_contractions

HUGE_PAGE_MIN_BYTES = 1 << 22  # NumPy's threshold for asking for huge pages


class BufferPlan:
    """A simple memory plan: buffers die after their last reader and are reused."""

    def __init__(self, graph: Graph):
        self.graph = graph
        nodes = flatten_contractions(graph.nodes)
        self.last_use: dict[Var, float] = {}
        for step, node in enumerate(nodes):
            for v in node.inputs:
                self.last_use[v] = step
        for v in graph.outputs:
            self.last_use[v] = math.inf
        self.root: dict[Var, Var] = {}  # a view's buffer owner
        self.root_end: dict[Var, float] = {}  # when the owner's buffer can be reused
        self.names: dict[Var, str] = {}
        self.free: dict[tuple, list[tuple[str, tuple]]] = {}  # (name, shape) by size
        self.count = 0
        self.helpers: set[str] = set()

    def root_of(self, var: Var) -> Var:
        return self.root.get(var, var)

    def is_intermediate(self, root: Var) -> bool:
        return root not in self.graph.inputs and root not in self.graph.consts

    def new_name(self) -> str:
        self.count += 1
        return f"b{self.count}"

    def fresh_name(self, var: Var) -> str:
        name = self.new_name()
        self.names[var] = name
        self.root_end[var] = self.last_use.get(var, -1)
        return name

    def allocate(self, var: Var) -> tuple[str, str]:
        """A buffer name for var and the statement that creates it."""
        aval = var.aval
        key = (aval.dtype.str, aval.size)
        name = self.new_name()
        self.names[var] = name
        self.root_end[var] = self.last_use.get(var, -1)
        if self.free.get(key):
            old, old_shape = self.free[key].pop()
            if tuple(old_shape) == tuple(aval.shape):
                return name, f"{name} = {old}  # reuses a dead buffer"
            return name, f"{name} = {old}.reshape({aval.shape!r})  # reuses a dead buffer"
        alloc = f"{name} = np.empty({aval.shape!r}, np.{aval.dtype.name})"
        # A size-1 axis counts as UNIT_STAND_IN here, as in gemm_plan: a batch of one asks
        # as a batch of 8 would, and the helper skips a buffer below the threshold at run
        # time, so both render the same source (docs/compiler.md "A batch of one").
        stand_in = math.prod(UNIT_STAND_IN if d == 1 else d for d in aval.shape)
        if stand_in * aval.dtype.itemsize >= HUGE_PAGE_MIN_BYTES:
            self.helpers.add("advise_huge_pages")
            alloc += f"\n    advise_huge_pages({name})  # fewer page faults on first touch"
        return name, alloc

    def dies_at(self, var: Var, step: int) -> bool:
        """Whether var owns a buffer (not an input, constant or output) whose last reader
        runs at step."""
        return (self.root_of(var) is var and self.is_intermediate(var)
                and self.root_end.get(var) == step and var in self.names)

    def write_over(self, var: Var, dying: Var, dying_name: str) -> tuple[str, str]:
        """var's buffer is dying's: the region writes each point after reading it."""
        name = self.new_name()
        self.names[var] = name
        self.root[var] = dying
        self.root_end[dying] = max(self.root_end[dying], self.last_use.get(var, -1))
        return name, f"{name} = {dying_name}  # written in place"

    def snapshot(self) -> tuple:
        return (dict(self.names), dict(self.root_end), dict(self.root),
                {k: list(v) for k, v in self.free.items()}, self.count)

    def restore(self, state: tuple) -> None:
        names, root_end, root, free, self.count = state
        self.names, self.root_end, self.root, self.free = names, root_end, root, free

    def alias(self, view: Var, base: Var, names: dict[Var, str]) -> str:
        root = self.root_of(base)
        self.root[view] = root
        if root in self.root_end:
            self.root_end[root] = max(self.root_end[root], self.last_use.get(view, -1))
        name = self.new_name()
        self.names[view] = name
        return name

    def release_after(self, node: Node, step: int) -> None:
        """Buffers whose every reader has run become free for later values."""
        # A dict, not a set: Vars hash by address, so a set's order (and with it which
        # dead buffer a later value reuses, i.e. the generated source and its cache key)
        # would differ between processes. Graph order is the same in every process.
        candidates = dict.fromkeys(self.root_of(v) for v in [*node.inputs, *node.outputs])
        for root in candidates:
            end = self.root_end.get(root)
            if end is None or end > step or not self.is_intermediate(root):
                continue
            name = self.names.get(root)
            if name is not None:
                key = (root.aval.dtype.str, root.aval.size)
                self.free.setdefault(key, []).append((name, root.aval.shape))
            self.root_end[root] = math.inf  # released once

