"""Source-building blocks for the CPU backend: literals, loop nests, and loop-region codegen.

`LoopNest` places each statement in the shallowest loop that defines everything it reads,
so loop-invariant work (a row's mean, a broadcast bias) is hoisted by construction.
`LoopRegionCodegen` turns one fused loop region into such a nest: see docs/compiler.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transfuse.ir.core import Graph, Node, Var
from transfuse.ir.errors import CompileError

from .fusion import (
    REDUCTION,
    _reduces_leading_axes,
    fusion_class,
    kept_axes,
    level_axes,
    operand_axes,
)

INDENT = "    "


class RegionSplit(CompileError):
    """A region the loop codegen cannot lower as one nest (the driver splits it)."""


class _NotYet(Exception):
    """A point rule read a value that is not computed yet (see LoopRegionCodegen.value)."""

    def __init__(self, var: Var):
        super().__init__(str(var))
        self.var = var


# ---------------------------------------------------------------------------------------
# Literals


def literal(value: Any, dtype: Any) -> str:
    """Python source for a scalar of an exact dtype, e.g. np.float32(0.5)."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return "True" if bool(value) else "False"
    v = dt.type(value)
    if dt.kind == "f":
        if np.isnan(v):
            body = "np.nan"
        elif np.isinf(v):
            body = "np.inf" if v > 0 else "-np.inf"
        else:
            body = str(v) if dt == np.float32 else repr(float(v))
        return f"np.{dt.name}({body})"
    if dt.kind == "c":
        part = np.dtype(np.float32 if dt == np.complex64 else np.float64)
        re, im = (literal(p, part) for p in (v.real, v.imag))
        return f"np.{dt.name}(complex({re}, {im}))"
    if dt == np.uint64 and int(v) > 2**31:
        return f"np.uint64({hex(int(v))})"
    return f"np.{dt.name}({int(v)})"


def ctor(dtype: Any) -> str:
    """The NumPy scalar constructor that converts to dtype inside Numba code."""
    dt = np.dtype(dtype)
    return "np.bool_" if dt == np.bool_ else f"np.{dt.name}"


def index_str(idx: list[str]) -> str:
    return "()" if not idx else ", ".join(idx)


# ---------------------------------------------------------------------------------------
# Loop nests with hoisting


@dataclass
class Block:
    """A loop (or the top level of a region) and the statements inside it, in order."""

    header: str | None
    depth: int
    lines: list = field(default_factory=list)

    def render(self, indent: int) -> list[str]:
        out = []
        inner = indent
        if self.header is not None:
            out.append(INDENT * indent + self.header)
            inner = indent + 1
        for item in self.lines:
            if isinstance(item, Block):
                out.extend(item.render(inner))
            else:
                out.append(INDENT * inner + item)
        if self.header is not None and not self.lines:
            out.append(INDENT * inner + "pass")
        return out


_NAME = re.compile(r"\b([itj]\d+|blk|st\d+|rb\d+)\b")


class LoopNest:
    """Nested loops being filled with statements; a statement lands as shallow as it can."""

    def __init__(self) -> None:
        self.root = Block(None, 0)
        self.stack: list[Block] = [self.root]
        self.depth_of: dict[str, int] = {}

    @property
    def depth(self) -> int:
        return len(self.stack) - 1

    def open(self, var: str, extent: int | str, *, parallel: bool = False, start: str = "0"
             ) -> None:
        fn = "prange" if parallel else "range"
        bounds = str(extent) if start == "0" else f"{start}, {extent}"
        block = Block(f"for {var} in {fn}({bounds}):", self.depth + 1)
        self.stack.append(block)
        self.depth_of[var] = block.depth

    def close(self) -> None:
        block = self.stack.pop()
        self.stack[-1].lines.append(block)
        for name, d in list(self.depth_of.items()):
            if d > self.depth:
                del self.depth_of[name]

    def needed_depth(self, text: str) -> int:
        """The depth of the innermost loop or local that `text` reads."""
        return max((self.depth_of.get(m, 0) for m in _NAME.findall(text)), default=0)

    def assign(self, name: str, expr: str, comment: str = "", depth: int | None = None) -> str:
        """`name = expr` in the shallowest open loop where it is defined (or at `depth`)."""
        d = self.needed_depth(expr) if depth is None else depth
        self.put(f"{name} = {expr}" + (f"  # {comment}" if comment else ""), d)
        self.depth_of[name] = d
        return name

    def put(self, stmt: str, depth: int | None = None) -> None:
        """A statement at `depth` (default: the innermost open loop)."""
        d = self.depth if depth is None else depth
        self.stack[d].lines.append(stmt)


# ---------------------------------------------------------------------------------------
# Rules: how a primitive is lowered (the tables: point_rules.POINT_RULES and
# lower_cpu_kernels.KERNEL_RULES, joined in lower_cpu.LOWERING_RULES)


@dataclass(frozen=True)
class Rule:
    """The CPU lowering of one primitive.

    point: the scalar expression at one point of a loop region, from a PointCtx. It may run
        more than once for one value (LoopRegionCodegen.value): read operands (arg) before
        binding anything.
    reduce: (init(dtype) -> str, combine(acc, value, dtype, helper) -> str) for reductions.
    kernel: emits statements that fill whole output buffers, from a KernelCtx.
    """

    point: Callable[[Any], str] | None = None
    reduce: tuple[Callable, Callable] | None = None
    kernel: Callable[[Any], None] | None = None


class ProgramBuilder:
    """What the entry point's source needs besides statements: names and helper imports."""

    def __init__(self) -> None:
        self.helpers: set[str] = set()
        self.counter = 0
        self.uses_prange = False

    def helper(self, name: str) -> str:
        self.helpers.add(name)
        return name

    def local(self) -> str:
        self.counter += 1
        return f"t{self.counter}"


@dataclass
class PointCtx:
    """What a point rule sees: the node, its output index, and its operands at that point."""

    region: LoopRegionCodegen
    node: Node
    index: list[str]

    @property
    def params(self) -> dict:
        return self.node.params

    @property
    def out_dtype(self) -> np.dtype:
        return self.node.outputs[0].aval.dtype

    @property
    def in_dtype(self) -> np.dtype:
        return self.node.inputs[0].aval.dtype

    def arg(self, i: int) -> str:
        """Operand i where the node reads it (NumPy broadcasting or the relabel's map)."""
        return self.region.operand(self.node, i, self.index)

    def args(self) -> list[str]:
        return [self.arg(i) for i in range(len(self.node.inputs))]

    def load(self, i: int, idx: list[str]) -> str:
        """Operand i (from memory) at an arbitrary index, bound to a local."""
        return self.region.load(self.node.inputs[i], idx)

    def load_expr(self, i: int, idx: list[str]) -> str:
        """Operand i at idx as an expression (for loads guarded by a condition)."""
        return self.region.load_expr(self.node.inputs[i], idx)

    def bind(self, expr: str) -> str:
        """A local holding expr, hoisted as far out as it can go."""
        return self.region.bind(expr)

    def lit(self, value: Any, dtype: Any = None) -> str:
        return literal(value, self.out_dtype if dtype is None else dtype)

    def helper(self, name: str) -> str:
        return self.region.program.helper(name)


# ---------------------------------------------------------------------------------------
# Loop regions


EXPENSIVE = frozenset((
    "exp", "expm1", "log", "log1p", "sin", "cos", "tan", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh", "logistic", "erf", "pow",
    "arctan2", "random_normal", "random_uniform"))
MAX_STASH_ELEMENTS = 1 << 16  # a stashed row must stay in cache
PARALLEL_MIN_WORK = 1 << 17  # points in a region before prange pays for its threads
# Cheap elementwise work (no EXPENSIVE op, no reduction) is bound by memory: it runs in
# parallel from this many point-operations (points times operations). Two operations on
# 2^18 points gained 7% from a second thread alone and lost 4% between BLAS calls
# (ensembling), whose threads spin after each call; on 2^19 points they gained 27%.
PARALLEL_MIN_CHEAP_WORK = 1 << 20
STASH_CHUNKS = 64
MOVERS = frozenset((  # primitives that only move data
    "copy", "transpose", "slice", "broadcast_in_dim", "reshape", "squeeze", "expand_dims",
    "concatenate", "pad", "gather", "dynamic_slice", "update_slice", "dynamic_update_slice",
    "iota", "full"))
ROW_BLOCK = 2048  # reduction row buffers hold at most this many elements
COLUMN_CHUNK = 16  # rows summed plainly before a compensated step (NumPy's lanes sum 16)
BLOCK_REDUCERS = {"reduce_sum": "block_sum", "reduce_max": "block_max",
                  "reduce_min": "block_min"}


class LoopRegionCodegen:
    """Lowers one fused loop region (domain S, reduced axes R) into a loop nest."""

    def __init__(self, program: ProgramBuilder, rules: dict, node: Node,
                 names: dict[Var, str], out_names: dict[Var, str], *, allow_parallel: bool):
        self.program = program
        self.rules = rules
        self.graph: Graph = node.params["graph"]
        self.domain: tuple[int, ...] = tuple(node.params["shape"])
        self.reduce_axes: tuple[int, ...] = tuple(node.params["reduce_axes"])
        self.kept = kept_axes(self.domain, self.reduce_axes)
        self.names = names  # region inputs -> array names
        self.out_names = out_names  # region outputs -> buffer names
        self.allow_parallel = allow_parallel
        self.nest = LoopNest()
        self.values: dict[Var, str] = {}  # in-region values bound in open loops
        self.loads: dict[tuple[Var, tuple[str, ...]], str] = {}
        self.producer = self.graph.producers()
        self.loop = 0  # the phase loop being filled (1-based)
        self.loads_per_input: dict[Var, set[int]] = {}
        self.stash: dict[Var, tuple[str, int]] = {}  # value -> (buffer, loop that fills it)
        self.inner_depth = len(self.kept)
        self.scratch: list[str] = []
        self.scratch_depth = 0
        self.evaluated: set[Var] | None = None  # values done by the running `_evaluate`

    # -- values -------------------------------------------------------------------------
    def bind(self, expr: str, comment: str = "") -> str:
        if _is_atom(expr):
            return expr
        return self.nest.assign(self.program.local(), expr, comment)

    def load_expr(self, var: Var, idx: list[str]) -> str:
        if var in self.graph.consts:
            return literal(self.graph.consts[var].item(), var.aval.dtype)
        if var not in self.names:
            raise RegionSplit(f"a loop region reads {var} from memory, but it is not an input")
        self.loads_per_input.setdefault(var, set()).add(self.loop)
        return f"{self.names[var]}[{index_str(idx)}]"

    def load(self, var: Var, idx: list[str]) -> str:
        if var in self.graph.consts:
            return self.load_expr(var, idx)
        key = (var, tuple(idx))
        name = self.loads.get(key)
        if name is None or name not in self.nest.depth_of:
            name = self.bind(self.load_expr(var, idx))
            self.loads[key] = name
        return name

    def canonical(self, var: Var) -> list[str]:
        axes = level_axes(var.aval.shape, self.domain, self.reduce_axes)
        if axes is None:
            raise RegionSplit(f"{var} fits neither level of the region's domain")
        return [f"i{a}" if a is not None else "0" for a in axes]

    def operand(self, node: Node, i: int, out_index: list[str]) -> str:
        var = node.inputs[i]
        out_axes = [None if s == "0" else int(s[1:]) for s in out_index]
        axes = operand_axes(node, i, out_axes)
        if axes is None:
            raise RegionSplit(f"{node.prim.name} has no point-wise operand map")
        idx = [f"i{a}" if a is not None else "0" for a in axes]
        return self.value(var, idx)

    def value(self, var: Var, idx: list[str]) -> str:
        """The code for var at the current point (idx: where the consumer reads it)."""
        if var in self.graph.consts or var in self.names:
            return self.load(var, idx)
        if _normalize(idx, self.domain) != _normalize(self.canonical(var), self.domain):
            raise RegionSplit(f"{var} read at {idx}, away from where it is computed")
        name = self._known(var)
        if name is not None:
            return name
        if self.evaluated is not None:
            # A point rule is asking: unwind to `_evaluate`, which computes var and then
            # runs the rule again (what it did before asking is cached by then).
            raise _NotYet(var)
        return self._evaluate(var)

    def _known(self, var: Var) -> str | None:
        """var's code where it is still in scope (a literal is, within one evaluation)."""
        name = self.values.get(var)
        if name is None:
            return None
        if name in self.nest.depth_of or (self.evaluated is not None and var in self.evaluated):
            return name
        return None

    def _evaluate(self, root: Var) -> str:
        """Compute root, and first what its point rules read, with an explicit stack.

        The statements come out in the order a depth-first recursion would emit them, but
        a chain of any length needs no Python stack depth (issue #12).
        """
        self.evaluated = set()
        pending = [root]
        try:
            while pending:
                var = pending[-1]
                try:
                    self.values[var] = self._produce(var)
                except _NotYet as missing:
                    pending.append(missing.var)
                    continue
                self.evaluated.add(pending.pop())
        finally:
            self.evaluated = None
        return self.values[root]

    def _produce(self, var: Var) -> str:
        """var's code: read back from its stash, or computed (and stashed if planned)."""
        if var in self.stash and self.stash[var][1] < self.loop:
            return self.bind(f"{self.stash[var][0]}[{self._stash_index()}]")
        name = self.compute(var)
        if var in self.stash and self.stash[var][1] == self.loop:
            # In the innermost loop, not where the value is computed: the stash is indexed
            # by every reduced axis, and a value hoisted out of some of them (broadcast
            # along them) still fills one element per point (fuzzer finding 13).
            self.nest.put(f"{self.stash[var][0]}[{self._stash_index()}] = {name}")
        return name

    def compute(self, var: Var) -> str:
        node = self.producer[var]
        rule = self.rules.get(node.prim)
        if rule is None or rule.point is None:
            raise RegionSplit(f"{node.prim.name} has no point rule")
        expr = rule.point(PointCtx(self, node, self.canonical(var)))
        return self.bind(expr, _comment(node))

    # -- the nest -----------------------------------------------------------------------
    def generate(self) -> Block:
        reductions = [n for n in self.graph.nodes if fusion_class(n) == REDUCTION]
        depth = self._dependency_depths()
        loops_of_red = {n: depth[n.inputs[0]] + 1 for n in reductions}
        full_outputs, kept_outputs = self._split_outputs()
        loops_of_out = {v: depth[v] + 1 for v in full_outputs}
        n_loops = max([*loops_of_red.values(), *loops_of_out.values(), 0])
        self.n_loops = n_loops if self.reduce_axes else 1
        if _reduces_leading_axes(self.domain, self.reduce_axes) and n_loops == 1:
            return self._generate_columns(reductions, full_outputs, kept_outputs)
        if self.reduce_axes:
            self._plan_stash(reductions, loops_of_red, loops_of_out)
        self._open_kept()
        if not self.reduce_axes:
            self.loop = 1
            for v in full_outputs + kept_outputs:
                self._store(v)
        for loop in range(1, n_loops + 1) if self.reduce_axes else ():
            self.loop = loop
            self._phase([n for n in reductions if loops_of_red[n] == loop],
                        [v for v in full_outputs if loops_of_out[v] == loop])
        if self.reduce_axes:
            self.loop = n_loops + 1
            for v in kept_outputs:
                self._store(v)
        while self.nest.depth > 0:
            self.nest.close()
        return self.nest.root

    def _generate_columns(self, reductions: list[Node], full_outputs: list[Var],
                          kept_outputs: list[Var]) -> Block:
        """A region reducing its leading axes, in one pass with the kept axes innermost.

        Each reduction accumulates into an array over the kept axes (`ra0[i1] += ...`):
        the input is read in memory order, the inner loop vectorises across columns, and
        each column is summed in row order. Float sums over more than COLUMN_CHUNK rows
        add each chunk of COLUMN_CHUNK rows (`ra0`) to a compensated float64 total (`rt0`,
        `rc0`) and start the chunk again from zero: NumPy's axis-0 sum runs down the whole
        column, with error growing with the number of rows; this one stays within the
        pairwise bound (docs/reliability.md). A second loop over the kept axes computes
        what depends on the results.
        """
        self.loop = 1
        kept_shape = tuple(self.domain[a] for a in self.kept)
        at_kept = ", ".join(f"i{a}" for a in self.kept)
        rows = int(np.prod([self.domain[a] for a in self.reduce_axes], dtype=np.int64))
        accs, chunked = [], {}
        for node in reductions:
            init, _ = self.rules[node.prim].reduce
            dtype = node.outputs[0].aval.dtype
            acc = f"ra{len(accs)}"
            self.nest.put(f"{acc} = np.full({kept_shape!r}, {init(dtype)}, {ctor(dtype)})"
                          f"  # {_comment(node)}", 0)
            if rows > COLUMN_CHUNK and node.prim.name == "reduce_sum" and dtype.kind == "f":
                chunked[node] = (f"rt{len(accs)}", f"rc{len(accs)}")
                for name, what in zip(chunked[node], ("the chunks' compensated float64 totals",
                                                      "their rounding errors")):
                    self.nest.put(f"{name} = np.zeros({kept_shape!r})  # {what}", 0)
            accs.append(acc)
        # Serial: inside a Numba prange body LLVM does not vectorise the accumulation (it
        # cannot tell the accumulator from the input), which costs more than a second
        # thread gains on this memory-bound loop.
        *outer, inner = self.reduce_axes
        for a in outer:
            self.nest.open(f"i{a}", self.domain[a])
        n = self.domain[inner]
        if chunked:
            self.nest.open(f"j{inner}", f"0, {n}, {COLUMN_CHUNK}")
            self.nest.open(f"i{inner}", f"min(j{inner} + {COLUMN_CHUNK}, {n})",
                           start=f"j{inner}")
        else:
            self.nest.open(f"i{inner}", n)
        self._open_kept_serially()
        for node, acc in zip(reductions, accs):
            v = self.value(node.inputs[0], self.canonical(node.inputs[0]))
            cell = f"{acc}[{at_kept}]"
            self.nest.put(f"{cell} = {self._combine(node, cell, v)}")
        for v in full_outputs:
            self._store(v)
        for _ in range(len(self.kept) + 1):
            self.nest.close()
        if chunked:
            self._fold_column_chunks(chunked, dict(zip(reductions, accs)), at_kept)
        while self.nest.depth > 0:
            self.nest.close()
        self.loop = 2
        self._open_kept_serially()
        comp_total = self.program.helper("comp_total") if chunked else ""
        for node, acc in zip(reductions, accs):
            total = f"{acc}[{at_kept}]"
            if node in chunked:
                dtype = node.outputs[0].aval.dtype
                wide, comp = (f"{name}[{at_kept}]" for name in chunked[node])
                total = f"{ctor(dtype)}({comp_total}({wide}, {comp}))"
            self.values[node.outputs[0]] = self.bind(total)
        for v in kept_outputs:
            self._store(v)
        while self.nest.depth > 0:
            self.nest.close()
        return self.nest.root

    def _open_kept_serially(self) -> None:
        for a in self.kept:
            self.nest.open(f"i{a}", self.domain[a])

    def _fold_column_chunks(self, chunked: dict, accs: dict, at_kept: str) -> None:
        """After each chunk of rows: add its sums to the compensated totals, and clear it."""
        self._open_kept_serially()
        comp_add = self.program.helper("comp_add")
        for node, names in chunked.items():
            total, comp = (f"{name}[{at_kept}]" for name in names)
            cell = f"{accs[node]}[{at_kept}]"
            self.nest.put(f"{total}, {comp} = {comp_add}({total}, {comp}, {cell})")
            self.nest.put(f"{cell} = 0")
        for _ in self.kept:
            self.nest.close()

    def _store(self, var: Var) -> None:
        idx = self.canonical(var)
        value = self.value(var, idx)
        self.nest.put(f"{self.out_names[var]}[{index_str(idx)}] = {value}")

    def _phase(self, reductions: list[Node], outputs: list[Var]) -> None:
        """One pass over the reduced axes: fold reductions, store full-level outputs.

        Float sums, maxima and minima are folded by an eight-lane helper over a whole row
        after the inner loop, so the inner loop has no loop-carried dependency and
        vectorises, with no floating-point reassociation. The row is the input itself when
        the reduction reads an input along its last axis, the stash when the value is
        stashed anyway, and otherwise a row buffer filled by the loop.
        """
        accs = {}
        for node in reductions:
            init, _ = self.rules[node.prim].reduce
            acc = self.program.local()
            self.nest.assign(acc, init(node.outputs[0].aval.dtype), _comment(node),
                             depth=self.inner_depth)
            accs[node] = acc
        rows = {node: row for node in reductions if (row := self._whole_row(node))}
        looped = [node for node in reductions if node not in rows or (
            node.inputs[0] in self.stash and self.stash[node.inputs[0]][1] == self.loop)]
        if looped or outputs:
            self._inner_loops(looped, outputs, accs, rows)
        for node, row in rows.items():
            helper = self.program.helper(BLOCK_REDUCERS[node.prim.name])
            fold = self._combine(node, accs[node], f"{helper}({row})")
            self.nest.put(f"{accs[node]} = {fold}")
        for node, acc in accs.items():
            self.values[node.outputs[0]] = acc
            self.nest.depth_of[acc] = self.inner_depth

    def _inner_loops(self, reductions, outputs, accs, rows) -> None:
        """The loops over the reduced axes, and the row-buffer folds after them."""
        *outer, inner = self.reduce_axes
        for a in outer:
            self.nest.open(f"i{a}", self.domain[a])
        n = self.domain[inner]
        block = min(n, ROW_BLOCK)
        if n > block:
            self.nest.open(f"j{inner}", f"0, {n}, {block}")
            self.nest.open(f"i{inner}", f"min(j{inner} + {block}, {n})", start=f"j{inner}")
            row, count = f"i{inner} - j{inner}", f"min({block}, {n} - j{inner})"
        else:
            self.nest.open(f"i{inner}", n)
            row, count = f"i{inner}", None
        folds, totals = [], []
        several = bool(outer) or n > block  # more than one row-buffer fold per result
        for node in reductions:
            acc = accs[node]
            dtype = node.outputs[0].aval.dtype
            v = self.value(node.inputs[0], self.canonical(node.inputs[0]))
            if node in rows:
                continue  # computed here to fill the stash, folded from it afterwards
            helper = BLOCK_REDUCERS.get(node.prim.name) if dtype.kind == "f" and n else None
            if helper is None:
                self.nest.put(f"{acc} = {self._combine(node, acc, v)}")
                continue
            buf = self._scratch(f"rb{len(self.scratch)}", (block,), dtype)
            self.nest.put(f"{buf}[{row}] = {v}")
            helper = self.program.helper(helper)
            whole = buf if count is None else f"{buf}[:{count}]"
            if several and node.prim.name == "reduce_sum":
                wide, comp = self._compensated_sum(acc)
                folds.append(f"{wide}, {comp} = {self.program.helper('comp_add')}"
                             f"({wide}, {comp}, {helper}({whole}))")
                totals.append(f"{acc} = {ctor(dtype)}("
                              f"{self.program.helper('comp_total')}({wide}, {comp}))")
            else:
                folds.append(f"{acc} = {self._combine(node, acc, f'{helper}({whole})')}")
        for v in outputs:
            self._store(v)
        self.nest.close()
        for fold in folds:
            self.nest.put(fold)
        if n > block:
            self.nest.close()
        for _ in outer:
            self.nest.close()
        for total in totals:
            self.nest.put(total)

    def _compensated_sum(self, acc: str) -> tuple[str, str]:
        """A float64 total and its compensation, next to a float sum's accumulator: the
        row-buffer sums are added with TwoSum (comp_add), so the error does not grow with
        the number of buffers (runtime/cpu_kernels.py, docs/reliability.md)."""
        depth = self.nest.depth_of[acc]
        wide, comp = self.program.local(), self.program.local()
        self.nest.assign(wide, "0.0", f"{acc} in float64, compensated", depth=depth)
        self.nest.assign(comp, "0.0", "its rounding errors", depth=depth)
        return wide, comp

    def _combine(self, node: Node, acc: str, value: str) -> str:
        _, combine = self.rules[node.prim].reduce
        return combine(acc, value, node.outputs[0].aval.dtype, self.program.helper)

    def _whole_row(self, node: Node) -> str | None:
        """An array holding the reduction's whole row, when one exists without a copy."""
        var = node.inputs[0]
        if (len(self.reduce_axes) != 1 or node.prim.name not in BLOCK_REDUCERS
                or var.aval.dtype.kind != "f" or not self.domain[self.reduce_axes[0]]):
            return None
        if var in self.stash:
            return self.stash[var][0]
        last = len(self.domain) - 1
        if var in self.names and self.reduce_axes == (last,) and var.aval.shape == self.domain:
            lead = ", ".join(f"i{a}" for a in range(last))
            name = self.names[var]
            self.loads_per_input.setdefault(var, set()).add(self.loop)
            return f"{name}[{lead}]" if lead else name
        return None

    def _open_kept(self) -> None:
        """The loops over the kept axes; the outermost runs in parallel when it pays.

        Scratch rows (stashed values, reduction buffers) are allocated once per parallel
        chunk, or once before the loops when the region runs serially.
        """
        size = int(np.prod(self.domain, dtype=np.int64))
        parallel = (self.allow_parallel and self.kept and self._worth_threads(size)
                    and self.domain[self.kept[0]] >= 2 and self._computes())
        if parallel:
            self.program.uses_prange = True
        scratch = bool(self.stash) or self._needs_row_buffers()
        for k, a in enumerate(self.kept):
            first = k == 0
            if first and parallel and scratch:
                self._open_chunked(a)
            else:
                self.nest.open(f"i{a}", self.domain[a], parallel=first and parallel)
        self.scratch_depth = 1 if (parallel and scratch) else 0
        for var, (buf, _) in self.stash.items():
            shape = tuple(self.domain[a] for a in self.reduce_axes)
            self._scratch(buf, shape, var.aval.dtype)

    def _computes(self) -> bool:
        """Whether the region does arithmetic: pure data movement (a transpose, a slice)
        is bound by memory bandwidth, where a second thread gains little and Numba's
        parallel passes cost a second of compile time."""
        return any(n.prim.name not in MOVERS for n in self.graph.nodes)

    def _worth_threads(self, size: int) -> bool:
        """Whether a region of `size` points does enough work for a second thread."""
        if self.reduce_axes or any(n.prim.name in EXPENSIVE for n in self.graph.nodes):
            return size >= PARALLEL_MIN_WORK
        operations = sum(n.prim.name not in MOVERS for n in self.graph.nodes)
        return size * operations >= PARALLEL_MIN_CHEAP_WORK

    def _needs_row_buffers(self) -> bool:
        return self.domain[self.reduce_axes[-1]] > 0 and any(
            n.prim.name in BLOCK_REDUCERS and n.outputs[0].aval.dtype.kind == "f"
            for n in self.graph.nodes) if self.reduce_axes else False

    def _scratch(self, name: str, shape: tuple[int, ...], dtype) -> str:
        """A scratch array allocated per parallel chunk (or once, serially)."""
        self.nest.put(f"{name} = np.empty({shape!r}, np.{np.dtype(dtype).name})",
                      self.scratch_depth)
        self.nest.depth_of[name] = self.scratch_depth
        self.scratch.append(name)
        return name

    def _open_chunked(self, axis: int) -> None:
        """prange over chunks of the outer axis, so scratch rows are allocated per chunk."""
        n = self.domain[axis]
        chunks = min(n, STASH_CHUNKS)
        size = -(-n // chunks)
        self.nest.open("blk", chunks, parallel=True)
        self.nest.open(f"i{axis}", f"min(blk * {size} + {size}, {n})", start=f"blk * {size}")
        self.inner_depth += 1

    def _stash_index(self) -> str:
        return ", ".join(f"i{a}" for a in self.reduce_axes)

    # -- analysis -----------------------------------------------------------------------
    def _dependency_depths(self) -> dict[Var, int]:
        """How many layers of in-region reductions each value depends on."""
        depth: dict[Var, int] = {v: 0 for v in self.graph.inputs}
        depth.update({v: 0 for v in self.graph.consts})
        for n in self.graph.nodes:
            d = max((depth[v] for v in n.inputs), default=0)
            if fusion_class(n) == REDUCTION:
                d += 1
            for v in n.outputs:
                depth[v] = d
        return depth

    def _split_outputs(self) -> tuple[list[Var], list[Var]]:
        """Outputs written at full-domain points, and outputs at kept points."""
        full, kept = [], []
        kept_shape = tuple(self.domain[a] for a in self.kept)
        for v in self.graph.outputs:
            if v in self.names or v in self.graph.consts:
                raise RegionSplit("a region output that is not computed in it")
            shape = tuple(d for d in v.aval.shape if d != 1)
            if self.reduce_axes and shape == tuple(d for d in kept_shape if d != 1):
                kept.append(v)
            elif shape == tuple(d for d in self.domain if d != 1):
                full.append(v)
            else:
                raise RegionSplit(f"region output {v} fits neither level")
        return full, kept

    def _plan_stash(self, reductions, loops_of_red, loops_of_out) -> None:
        """Keep expensive full-level values that later loops need in a per-row buffer."""
        row = int(np.prod([self.domain[a] for a in self.reduce_axes], dtype=np.int64))
        if row > MAX_STASH_ELEMENTS:
            return
        first_loop: dict[Var, int] = {}
        roots = [(loops_of_red[n], n.inputs[0]) for n in reductions]
        roots += [(loop, v) for v, loop in loops_of_out.items()]
        for loop, root in sorted(roots, key=lambda r: r[0]):
            stack = [root]
            while stack:
                v = stack.pop()
                node = self.producer.get(v)
                if node is None or fusion_class(node) == REDUCTION:
                    continue
                if v in first_loop:
                    if first_loop[v] < loop and self._worth_stashing(v):
                        if v not in self.stash:
                            self.stash[v] = (f"st{len(self.stash)}", first_loop[v])
                        continue
                    if first_loop[v] == loop:
                        continue
                else:
                    first_loop[v] = loop
                stack.extend(node.inputs)

    def _worth_stashing(self, var: Var) -> bool:
        if not any(var.aval.shape[i] != 1 for i, a in enumerate(self._axes(var))
                   if a in self.reduce_axes):
            return False
        seen, stack = set(), [var]
        while stack:
            v = stack.pop()
            node = self.producer.get(v)
            if node is None or v in seen or fusion_class(node) == REDUCTION:
                continue
            seen.add(v)
            if node.prim.name in EXPENSIVE:
                return True
            stack.extend(node.inputs)
        return False

    def _axes(self, var: Var) -> list:
        return level_axes(var.aval.shape, self.domain, self.reduce_axes) or []


def _normalize(idx: list[str], domain: tuple[int, ...]) -> list[str]:
    """Index strings with loop variables of size-1 axes written as 0."""
    out = []
    for s in idx:
        if s.startswith("i") and s[1:].isdigit() and domain[int(s[1:])] == 1:
            s = "0"
        out.append(s)
    return out


def _is_atom(expr: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*|-?\d+(\.\d*)?|True|False", expr))


def _comment(node: Node) -> str:
    where = f" @ {node.source.short()}" if node.source is not None else ""
    return f"{node.prim.name}{where}"
