"""The CPU backend: a fused graph becomes the source of one Numba `@njit` entry point.

The entry point takes the graph's inputs (C-contiguous arrays) and its array constants,
allocates the buffers between regions (reusing dead ones), runs every region in order and
returns the outputs, so a call crosses from Python to machine code once. Each fused loop
region becomes a loop nest with its scalar expressions inlined (compiler/codegen.py);
other nodes become the kernels of compiler/lower_cpu_kernels.py.

`LOWERING_RULES` has one `Rule` per primitive (tests/test_coverage.py checks it): its
`point` and `reduce` rules from compiler/point_rules.py and its `kernel` from
compiler/lower_cpu_kernels.py. See docs/compiler.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transfuse.ir.control import CONTROL_FLOW
from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.errors import CompileError
from transfuse.ir.primitives import PRIMITIVES

from .buffer_plan import BufferPlan
from .codegen import LoopNest, LoopRegionCodegen, ProgramBuilder, RegionSplit, Rule
from .fusion import ELEMENTWISE, FUSED, fuse, fusion_class
from .lower_cpu_kernels import KERNEL_RULES, KernelCtx
from .lowering_graph import flatten_contractions, single_node_graph, top_level_consts, user_lines
from .point_rules import POINT_RULES
from .region_functions import RegionBody, share_regions
from .repeated_blocks import outline_repeats
from .size_params import SizeParams
from .trig_fast_path import with_trig_fast_path

P = PRIMITIVES
INT_ARGS = "g0"  # the entry's int64 array argument of run-time integers (BLAS arguments)
# One Rule per primitive: its point and reduce rules and its kernel.
LOWERING_RULES: dict[Any, Rule] = {
    prim: Rule(rule.point, rule.reduce, KERNEL_RULES.get(prim))
    for prim, rule in POINT_RULES.items()}
LOWERING_RULES.update({prim: Rule(kernel=kernel) for prim, kernel in KERNEL_RULES.items()
                       if prim not in POINT_RULES})
# Lowered by the driver (loop regions, contraction + epilogue), not by a rule of its own.
LOWERING_RULES[FUSED] = Rule()
# Lowered by the driver too: sub-graphs as functions, real loops and branches
# (compiler/lower_control.py).
for _name in CONTROL_FLOW:
    LOWERING_RULES[P[_name]] = Rule()

# ---------------------------------------------------------------------------------------
# The program: one entry point for the whole graph


@dataclass
class RegionReport:
    """What one region became: for tests and `jit(f).lower(x)`."""

    kind: str  # 'loop', 'kernel', 'view'
    primitives: list[str]
    loops: int = 0  # passes over the domain (phase loops) of a loop region
    input_passes: dict[int, int] = field(default_factory=dict)  # region input -> loops
    parallel: bool = False


@dataclass
class Program:
    """Generated source and how to call its entry point."""

    source: str
    entry: str
    arg_avals: list  # avals of the entry's array arguments: constants, then graph inputs
    const_args: list[np.ndarray]
    num_outputs: int
    parallel: bool
    regions: list[RegionReport]
    size_args: list[int] = field(default_factory=list)  # values of the entry's n0, n1, ...


class _ProgramState(ProgramBuilder):
    def __init__(self) -> None:
        super().__init__()
        self.math_names: set[str] = set()
        self.int_values: list[int] = []  # INT_ARGS: BLAS calls' arguments, end to end

    def math(self, name: str) -> str:
        self.math_names.add(name)
        return name

    def int_args(self, values: tuple[int, ...]) -> str:
        """A slice of the entry's int64 argument INT_ARGS holding values.

        Passed at run time rather than written into the source, because they hold sizes
        (BLAS's M, N, K, strides, batch counts): programs that differ only in sizes share
        one compiled kernel (compiler/size_params.py)."""
        start = len(self.int_values)
        self.int_values.extend(int(v) for v in values)
        return f"{INT_ARGS}[{start}:{len(self.int_values)}]"


def lower_program(graph: Graph, *, fastmath: bool = False, parallel: bool = True,
                  cache: bool = False, title: str = "") -> Program:
    """Source for one `@njit` entry point computing the fused graph's outputs."""
    return _Lowering(graph, fastmath, parallel).run(cache, title)


class _Lowering:
    def __init__(self, graph: Graph, fastmath: bool, parallel: bool):
        self.graph = graph
        self.fastmath = fastmath
        self.allow_parallel = parallel
        self.program = _ProgramState()
        self.region_count = 0
        self.cache = False
        self.names: dict[Var, str] = {}
        self.const_vars: list[Var] = []
        self.body: list[str | RegionBody] = []
        self.reports: list[RegionReport] = []
        self.buffers = BufferPlan(graph)
        # Shared with the functions of control-flow sub-graphs (compiler/lower_control.py):
        self.root = self
        self.sizes = SizeParams()
        self.const_values: dict[Var, Any] = dict(graph.consts)
        self.functions: list[list[str]] = []  # their definitions, placed before the entry
        self.function_names: set[str] = set()
        self.function_keys: dict[str, Any] = {}  # their code -> the function (no duplicates)
        self.merged_nodes: set[int] = set()  # ids of scans run with a twin (scan_merge.py)

    def run(self, cache: bool, title: str) -> Program:
        self.cache = cache
        for i, v in enumerate(self.graph.inputs):
            self.names[v] = f"a{i}"
        for v in top_level_consts(self.graph):
            self.names[v] = f"c{len(self.const_vars)}"
            self.const_vars.append(v)
        for step, node in enumerate(flatten_contractions(self.graph.nodes)):
            self.step = step
            self.lower_node(node)
            self.buffers.release_after(node, step)
        ret = self.returns()
        # reshaped: np.ascontiguousarray makes a 0-d array 1-d
        consts = [np.ascontiguousarray(self.const_values[v]).reshape(v.aval.shape)
                  for v in self.const_vars]
        fixed = [self.names[v] for v in self.const_vars]
        if self.program.int_values:
            consts.append(np.array(self.program.int_values, np.int64))
            fixed.append(INT_ARGS)
        sizes = self.sizes
        source = self.render(fixed, ret, cache, title, sizes)
        avals = [Aval(c.shape, c.dtype) for c in consts] + [v.aval for v in self.graph.inputs]
        return Program(source, "entry", avals, consts, len(self.graph.outputs),
                       self.program.uses_prange, self.reports, sizes.values)

    # -- nodes ---------------------------------------------------------------------------
    def lower_node(self, node: Node) -> None:
        if node.prim is FUSED and node.params["kind"] == "loop":
            self.lower_loop(node)
            return
        if node.prim is FUSED:
            raise CompileError(f"cannot lower a fused region of kind {node.params['kind']}")
        if node.prim.name in CONTROL_FLOW:
            from .lower_control import lower_control_flow

            lower_control_flow(self, node)
            return
        rule = LOWERING_RULES.get(node.prim)
        if rule is not None and rule.kernel is not None:
            self.lower_kernel(node, rule)
        elif rule is not None and (rule.point is not None or rule.reduce is not None):
            for part in fuse(single_node_graph(node), enabled=False).nodes:
                self.lower_node(part)
        else:
            raise CompileError(
                f"the CPU backend has no lowering for primitive {node.prim.name}")

    def lower_kernel(self, node: Node, rule: Rule) -> None:
        views = node.prim.name in ("reshape", "squeeze", "expand_dims", "optimization_barrier")
        if views:
            outs = [self.buffers.alias(node.outputs[0], node.inputs[0], self.names)]
        elif node.prim.name == "copy":
            outs = [self.buffers.fresh_name(node.outputs[0])]
        else:
            outs = [self.allocate(v) for v in node.outputs]
        for v, name in zip(node.outputs, outs):
            self.names[v] = name
        self.comment(node, "kernel" if not views else "view")
        nest = LoopNest()
        ctx = KernelCtx(self.program, node, [self.names[v] for v in node.inputs], outs, nest,
                        self.allow_parallel)
        rule.kernel(ctx)
        while nest.depth:
            nest.close()
        body = nest.root.render(1)
        self.emit_region(body)
        self.reports.append(RegionReport("view" if views else "kernel", [node.prim.name],
                                         parallel=_is_parallel(body)))

    def lower_loop(self, node: Node) -> None:
        sub: Graph = node.params["graph"]
        try:
            nest, report = self._loop_source(node)
        except RegionSplit as e:
            if len(sub.nodes) == 1:
                raise CompileError(f"the CPU backend cannot lower {sub.nodes[0].prim.name}: "
                                   f"{e}") from None
            for part in fuse(sub, enabled=False).nodes:
                self.lower_node(part)
            return
        allocations, body = nest
        self.body.extend(allocations)
        self.emit_region(body)
        self.reports.append(report)

    def emit_region(self, body: list[str]) -> None:
        """A region's statements, placed in the entry point; at render time they stay
        inline or become a function (compiler/region_functions.py)."""
        self.body.append(RegionBody(body, parallel=_is_parallel(body)))

    def _loop_source(self, node: Node) -> tuple[tuple[list[str], list[str]], RegionReport]:
        sub: Graph = node.params["graph"]
        saved = self.program.counter, set(self.program.helpers), self.program.uses_prange
        saved_buffers = self.buffers.snapshot()
        try:
            out_names = {}
            allocations = [self.comment_text(node)]
            in_place = self._in_place_input(node)
            for v in sub.outputs:
                if in_place is not None:
                    name, alloc = self.buffers.write_over(v, in_place, self.names[in_place])
                else:
                    name, alloc = self.buffers.allocate(v)
                out_names[v] = name
                if alloc:
                    allocations.append(f"    {alloc}")
            inputs = {v: self.names[v] for v in sub.inputs}
            codegen = LoopRegionCodegen(self.program, LOWERING_RULES, node, inputs, out_names,
                                        allow_parallel=self.allow_parallel)
            block = codegen.generate()
        except RegionSplit:
            self.program.counter, self.program.helpers, self.program.uses_prange = saved
            self.buffers.restore(saved_buffers)
            raise
        self.names.update(out_names)
        lines = block.render(1)
        # The trig fast path costs 2-3 s of compile (its blocks, the out-of-line exact
        # copies) and pays only on large regions: those big enough to run in parallel.
        # A block redone for a large sin/cos argument rereads its inputs: not in place.
        if in_place is None and _is_parallel(lines):
            lines = with_trig_fast_path(lines, self.program.math)
        loops = codegen.n_loops
        passes = {i: len(codegen.loads_per_input.get(v, ())) for i, v in enumerate(sub.inputs)}
        report = RegionReport("loop", [n.prim.name for n in sub.nodes], loops, passes,
                              _is_parallel(lines))
        return (allocations, lines), report

    def _in_place_input(self, node: Node) -> Var | None:
        """An input buffer the region's single output may overwrite as it goes.

        Legal when the input dies here and is read only by elementwise nodes of an
        elementwise region (each point reads it before writing the same point): a bias
        and activation after a matmul then write into the matmul's result.
        """
        sub: Graph = node.params["graph"]
        domain = tuple(node.params["shape"])
        if node.params["reduce_axes"] or len(sub.outputs) != 1:
            return None
        out = sub.outputs[0]
        if out.aval.shape != domain:
            return None
        for v in sub.inputs:
            if v.aval != out.aval or not self.buffers.dies_at(v, self.step):
                continue
            readers = [n for n in sub.nodes if v in n.inputs]
            if all(fusion_class(n) == ELEMENTWISE and n.outputs[0].aval.shape == domain
                   for n in readers):
                return v
        return None

    def allocate(self, var: Var) -> str:
        name, alloc = self.buffers.allocate(var)
        if alloc:
            self.body.append(f"    {alloc}")
        return name

    # -- text ----------------------------------------------------------------------------
    def comment(self, node: Node, kind: str) -> None:
        self.body.append(self.comment_text(node, kind))

    def comment_text(self, node: Node, kind: str | None = None) -> str:
        self.region_count += 1
        n = self.region_count
        if node.prim is FUSED:
            sub = node.params["graph"]
            shape = node.params["shape"]
            axes = node.params["reduce_axes"]
            what = f"loop over {shape}" + (f", reducing axes {axes}" if axes else "")
            prims = ", ".join(x.prim.name for x in sub.nodes)
            where = user_lines(sub.nodes)
        else:
            what, prims, where = kind, node.prim.name, user_lines([node])
        text = f"    # -- region {n}: {what}: {prims}"
        if where:
            text += f"\n    #    from {where}"
        return text

    def returns(self) -> str:
        """Output expressions: fresh buffers, copied where they would alias another value."""
        names = []
        done: dict[Var, str] = {}
        seen_roots: set = set()
        written = {self.graph.inputs[i] for i in self.graph.mutated_inputs}
        for v in self.graph.outputs:
            if v in done or (v in self.graph.inputs and v not in written):
                # The same object twice, or an input returned as is (as the interpreter
                # does); an input that is written back after the call is copied first.
                names.append(done.get(v, self.names.get(v)))
                continue
            name = self.names[v]
            root = self.buffers.root_of(v)
            if not self.buffers.is_intermediate(root) or root in seen_roots:
                name = f"{name}.copy()"
            seen_roots.add(root)
            done[v] = name
            names.append(name)
        if len(names) == 1:
            return names[0]
        return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"

    def options(self, cache: bool) -> str:
        """The @njit options every function of the module shares."""
        return f'cache={cache}, error_model="numpy", fastmath={self.fastmath}'


    def guard(self) -> list[str]:
        """Checks that the arrays have the compiled shapes and C layout (Python's fast path
        calls the entry point without looking; a mismatch sends the call back to Python).

        One call of the cached helper `layout_mismatch` per array, summed into one flag that
        raises at one place: each `raise` site is a block of exception code that Numba
        lowers and LLVM compiles, and the same check written out inline (an or of a dozen
        comparisons per array) cost Numba about 100 ms of typing and lowering per array,
        the helper's call about 10 (docs/decisions.md, "Numba's cost per statement")."""
        n = self.graph.num_explicit_inputs
        checks = [_layout_check(self.names[v], v.aval.shape)
                  for v in self.graph.inputs[:n] if v.aval.ndim]
        if not checks:
            return []
        self.program.helper("SignatureMismatch")
        self.program.helper("layout_mismatch")
        lines = ["    # -- the signature compiled for: other arrays go back to Python",
                 f"    mismatch = {checks[0]}"]
        lines += [f"    mismatch += {c}" for c in checks[1:]]
        lines += ["    if mismatch:", "        raise SignatureMismatch()"]
        return lines

    def render(self, fixed: list[str], ret: str, cache: bool, title: str,
               sizes: SizeParams) -> str:
        """The module's source; sizes collects the size parameters.

        The entry point takes what is fixed for a signature first — the constants, the
        int64 arguments INT_ARGS, the sizes — and then the graph's inputs, so a call is
        `functools.partial(entry, *fixed)(*inputs)` (runtime/executable.py)."""
        guard = [sizes.rewrite(line) for line in self.guard()]
        body = [_sized(item, sizes) for item in self.body]
        args = fixed + sizes.param_names() + [self.names[v] for v in self.graph.inputs]
        self.program.helpers |= self.buffers.helpers
        sig = [_numba_type(v.aval) for v in self.const_vars]
        if self.program.int_values:
            sig.append('nt.Array(nt.int64, 1, "C")')
        sig += ["nt.int64"] * len(sizes.values)
        sig += [_numba_type(v.aval) for v in self.graph.inputs]
        ins = ", ".join(str(v.aval) for v in self.graph.inputs)
        outs = ", ".join(str(v.aval) for v in self.graph.outputs)
        head = [
            f"# transfuse: CPU kernel for `{self.graph.name}` ({ins}) -> ({outs})",
            f"#   generated by transfuse {_version()} for numba {_numba_version()},"
            f" numpy {np.__version__}",
            "#   entry(constants..., sizes..., inputs...) runs every region below in order.",
        ]
        if sizes.values:
            head.append("#   sizes: " + ", ".join(
                f"{name}={value}" for value, name in sizes.names.items()))
        if title:
            head.append(f"#   {title}")
        imports = ["import numpy as np", "from numba import njit, prange",
                   "from numba import types as nt"]
        helpers = sorted(self.program.helpers - {"math"})
        if "math" in self.program.helpers:
            imports.insert(0, "import math")
        # scipy.special's functions come from their own module (it imports SciPy: 0.3 s)
        special = [h for h in helpers if h.startswith("special_")]
        helpers = [h for h in helpers if not h.startswith("special_")]
        if helpers:
            imports.append(f"from transfuse.runtime.cpu_kernels import {', '.join(helpers)}")
        if special:
            imports.append(
                f"from transfuse.runtime.special_functions import {', '.join(special)}")
        if self.program.math_names:
            imports.append("from transfuse.compiler.mathlib import math_globals")
            imports.append("_MATH = math_globals()")
            imports += [f"{n} = _MATH[{n!r}]" for n in sorted(self.program.math_names)]
        known = self.program.helpers | self.program.math_names | self.function_names
        statements, functions = share_regions(body, self.options(cache), known)
        statements, blocks = outline_repeats(statements, self.options(cache), known, ret)
        functions = self.functions + functions + blocks
        signature = ", ".join(sig) + ("," if sig else "")
        lines = head + [""] + imports + ["", f"SIGNATURE = ({signature})", "",
                                         ""] + [line for f in functions for line in f] + [
            f"@njit(SIGNATURE, {self.options(cache)})", f"def entry({', '.join(args)}):"]
        lines += guard + statements
        lines.append(f"    return {ret}")
        return "\n".join(lines) + "\n"


def _sized(item: str | RegionBody, sizes: SizeParams) -> str | RegionBody:
    """A statement or region body with its sizes made parameters."""
    if isinstance(item, RegionBody):
        return RegionBody([sizes.rewrite(line) for line in item.lines], item.parallel)
    return sizes.rewrite(item)


def _version() -> str:
    import transfuse

    return transfuse.__version__


def _numba_version() -> str:
    """Numba's version, read without importing Numba (lowering a kernel whose object code
    is cached does not import it: runtime/native_cache.py)."""
    from importlib.metadata import version

    return version("numba")


def _is_parallel(lines: list[str]) -> bool:
    return any("prange(" in line for line in lines)


def _layout_check(name: str, shape: tuple[int, ...]) -> str:
    """The guard's call for one array: 1 unless it has this shape in C order. The shape
    is written as a tuple literal, whose extents become size parameters."""
    want = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    return f"layout_mismatch({name}.shape, {name}.strides, {name}.itemsize, {want})"


def _numba_type(aval) -> str:
    name = "boolean" if aval.dtype == np.bool_ else aval.dtype.name
    return f'nt.Array(nt.{name}, {aval.ndim}, "C")'


__all__ = ["LOWERING_RULES", "Program", "RegionReport", "lower_program"]
