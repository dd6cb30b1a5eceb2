"""CPU lowering of structured control flow: cond, while_loop and scan as real branches and loops.

Each sub-graph of a control-flow node goes through the pipeline of a top-level graph
(jit's optimise, fusion) and becomes one `@njit` function `flowK` of the same module, lowered by
a nested `_Lowering` in *function mode*: its inputs are parameters `a0, a1, ...`, it writes
its outputs into the buffers it is given (`o0, o1, ...`) and returns nothing, so a loop
allocates its carry and its stacked outputs once, not per step. The constants, the int64
argument `g0` and the size parameters `n0, n1, ...` it uses are parameters too, passed on
by the entry point. The entry point then holds

    scan:        for it in range(n3):  flow0(c0, n1, b4, a1[it], b5, b6[it]); b4, b5 = b5, b4
    cond:        if a0[()] <= 0: flow1(...)  elif a0[()] == 1: flow2(...)  else: ...
    while_loop:  flow3(..., b7, flag); while flag[()]: flow4(..., b7, b8); b7, b8 = b8, b7; ...

The carry is double-buffered (the body reads one buffer and writes the other), so a scan of
10,000 steps is one loop around one call, its body fused once, and its source (the length
is a size parameter) is the same for every length.

A sub-graph whose every value is 0-d (a per-lane body of a vmapped solver, a scalar
recurrence) is a *scalar function* instead: it takes and returns numbers (`x, n =
flow2(a0[it])`), its 0-d buffers are locals, and a loop around it allocates nothing and
passes no array (each array argument of a Numba call costs reference counting).
See docs/compiler.md "Control flow".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transfuse.ir.core import Graph, Node, Var, subgraphs

from .buffer_plan import BufferPlan
from .fusion import fuse
from .lockstep_lanes import emit_lockstep
from .lower_cpu import (
    RegionReport,
    _Lowering,
    _sized,
)
from .lower_cpu_kernels import PARALLEL_MIN_FLOPS
from .lowering_graph import flatten_contractions, top_level_consts
from .region_functions import RegionBody, share_regions
from .repeated_blocks import outline_repeats
from .scan_hoist import hoist_step_products, sink_accumulations
from .scan_merge import find_twin, twin_outputs

MAP_PARALLEL_MIN_LENGTH = 1024  # steps of a map from which they run in parallel
_FIXED_NAME = re.compile(r"(?<![.\w])(c\d+|g0|n\d+)(?!\w)")  # constants, g0, sizes
_MODULE_FUNCTION = re.compile(r"(?<![.\w])(region|block)(\d+)(?!\w)")
# Scalar functions: their 0-d arrays (constants too) become numbers.
_ZERO_D_READ = re.compile(r"(?<![.\w])([a-z]+\d+)\[\(\)\]")  # b3[()] -> b3
_ZERO_D_BUFFER = re.compile(r"np\.empty\(\(\), np\.(\w+)\)")  # -> np.float64(0)
_SCALAR_COPY = re.compile(r"(?<![.\w])([a-z]+\d+)\.copy\(\)|np\.empty_like\(([a-z]+\d+)\)")
_ARRAY_CODE = re.compile(r"\[|\.reshape\(|\bnp\.empty\(|\bprange\(|\brange\(")


@dataclass
class _Callee:
    """A sub-graph's function: its name, the fixed arguments of a call, its convention."""

    name: str
    fixed: list[str]
    scalar: bool  # takes and returns numbers, not arrays

    def call(self, args: list[tuple[str, str]], outs: list[tuple[str, str]]) -> str:
        """The call statement; args and outs are (array, number) forms of each value."""
        if not self.scalar:
            arrays = self.fixed + [a for a, _ in args] + [o for o, _ in outs]
            return f"{self.name}({', '.join(arrays)})"
        targets = ", ".join(n for _, n in outs)  # one output: a number, not a tuple
        return f"{targets} = {self.value(args)}" if outs else self.value(args)

    def value(self, args: list[tuple[str, str]]) -> str:
        """A scalar function called as an expression (its constants passed as numbers)."""
        return f"{self.name}({', '.join([n for _, n in self.fixed_args() + args])})"

    def fixed_args(self) -> list[tuple[str, str]]:
        return [(c, f"{c}[()]") for c in self.fixed]


def lower_control_flow(lowering: _Lowering, node: Node) -> None:
    """Emit the statements running a cond, while_loop or scan node into `lowering`."""
    if id(node) in lowering.merged_nodes:
        return  # it ran with its twin (compiler/scan_merge.py)
    _EMITTERS[node.prim.name](lowering, node)
    lowering.reports.append(RegionReport("control", [node.prim.name]))


# ---------------------------------------------------------------------------------------
# Sub-graphs as functions


def _optimised(graph: Graph) -> Graph:
    """A sub-graph through jit's optimiser and fusion, as a top-level graph would go."""
    from transfuse._jit import optimise  # jit imports the lowering lazily: no cycle at run time

    return fuse(optimise(graph))


class _OutParams(BufferPlan):
    """The buffer plan of a function: its outputs are the buffers it is given (o0, o1...)."""

    def __init__(self, graph: Graph):
        super().__init__(graph)
        self.out_param: dict[Var, str] = {}
        for k, v in enumerate(graph.outputs):
            if v not in graph.inputs and v not in graph.consts:
                self.out_param.setdefault(v, f"o{k}")

    def allocate(self, var: Var) -> tuple[str, str]:
        if var in self.out_param:
            self.names[var] = self.out_param[var]
            self.root_end[var] = self.last_use.get(var, -1)
            return self.out_param[var], ""
        return super().allocate(var)

    def write_over(self, var: Var, dying: Var, dying_name: str) -> tuple[str, str]:
        if var in self.out_param:  # the output goes where the caller wants it
            return self.allocate(var)
        return super().write_over(var, dying, dying_name)


class _FunctionLowering(_Lowering):
    """A sub-graph lowered to `def flowK(fixed..., a0, ..., o0, ...)` (see the module doc)."""

    def __init__(self, graph: Graph, parent: _Lowering):
        super().__init__(graph, parent.fastmath, parallel=False)
        self.root = parent.root
        self.program = parent.program
        self.sizes = self.root.sizes
        self.buffers = _OutParams(graph)
        self.scalar_callees = True  # whether every function it calls is a scalar function

    def define(self, cache: bool, what: str) -> _Callee:
        """Lower the graph into a function of the module; how to call it (its fixed
        parameters, constants, g0 and sizes, are the caller's names)."""
        self.cache = cache
        for i, v in enumerate(self.graph.inputs):
            self.names[v] = f"a{i}"
        root = self.root
        _name_consts(self, self.graph)
        for step, node in enumerate(_flatten(self.graph)):
            self.step = step
            self.lower_node(node)
            self.buffers.release_after(node, step)
        self.body += self._store_outputs()
        name = f"flow{len(root.function_names)}"
        root.function_names.add(name)
        outs = [f"o{k}" for k in range(len(self.graph.outputs))]
        ins = [self.names[v] for v in self.graph.inputs]
        scalar = self._scalar_lines()
        if scalar is not None:
            lines, functions = scalar + [f"    return {', '.join(outs)}"], []
            params = ins
        else:
            lines, functions = self._render(name)
            params = ins + outs
        fixed = _fixed_names(lines + [x for f in functions for x in f])
        head = [f"@njit({self.options(cache)})",
                f"def {name}({', '.join(fixed + params)}):",
                f"    # {what}: {_signature(self.graph)}"]
        definition = [*(x for f in functions for x in f), *head, *lines]
        key = _code_key(definition, name)
        if key in root.function_keys:  # the same code (a forward loop recomputed by a VJP)
            root.function_names.discard(name)
            return root.function_keys[key]
        root.functions.extend(functions)
        root.functions.append(head + lines + [""])
        root.function_keys[key] = _Callee(name, fixed, scalar is not None)
        return root.function_keys[key]

    def _scalar_lines(self) -> list[str] | None:
        """The body with every 0-d array a local number, if every value is 0-d and the code
        is straight-line scalar code calling scalar functions only; else None."""
        if not (self.scalar_callees and all(v.aval.ndim == 0 for v in _values(self.graph))):
            return None
        lines = [line for item in self.body for line in (
            item.lines if isinstance(item, RegionBody) else [item])]
        out = []
        for line in "\n".join(lines).split("\n"):
            code, sep, comment = line.partition("#")
            code = _ZERO_D_BUFFER.sub(r"np.\1(0)", code)
            code = _SCALAR_COPY.sub(lambda m: m.group(1) or m.group(2), code)
            code = _ZERO_D_READ.sub(r"\1", code)
            if _ARRAY_CODE.search(code):
                return None
            out.append(code + sep + comment)
        return out

    def _store_outputs(self) -> list[str]:
        """Copies into the output buffers of what was not computed into them."""
        lines = []
        for k, v in enumerate(self.graph.outputs):
            if self.names.get(v) == f"o{k}":
                continue
            source = self.names[v]
            where = "()" if v.aval.ndim == 0 else "..."
            value = f"{source}[()]" if v.aval.ndim == 0 else source
            lines.append(f"    o{k}[{where}] = {value}")
        return lines

    def _render(self, name: str) -> tuple[list[str], list[list[str]]]:
        """The function's body lines and the region/block functions it calls (renamed
        `<name>_regionK` so they never clash with the entry's or another body's)."""
        body = [_sized(item, self.sizes) for item in self.body]
        known = self.program.helpers | self.program.math_names | self.root.function_names
        statements, functions = share_regions(body, self.options(self.cache), known)
        statements, blocks = outline_repeats(statements, self.options(self.cache), known, "")
        rename = lambda text: _MODULE_FUNCTION.sub(  # noqa: E731
            lambda m: f"{name}_{m.group(1)}{m.group(2)}", text)
        statements = [rename(line) for line in statements] or ["    pass"]
        functions = [[rename(line) for line in f] for f in functions + blocks]
        return statements, functions


def _name_consts(lowering: _Lowering, graph: Graph) -> None:
    """The graph's array constants become arguments of the entry (c0, c1, ...)."""
    root = lowering.root
    for v in top_level_consts(graph):
        if v not in root.names:
            root.names[v] = f"c{len(root.const_vars)}"
            root.const_vars.append(v)
            root.const_values[v] = graph.consts[v]
        lowering.names[v] = root.names[v]


def _flatten(graph: Graph) -> list[Node]:
    return flatten_contractions(graph.nodes)


_LOCAL = re.compile(r"(?<![.\w])t\d+(?!\w)")  # the program's scalar locals, numbered globally


def _code_key(lines: list[str], name: str) -> str:
    """A function's code up to its name and the numbers of its scalar locals."""
    numbering: dict[str, str] = {}
    code = re.sub(rf"(?<![\w]){name}(?!\d)", "FLOW",
                  "\n".join(line.split("#", 1)[0].rstrip() for line in lines))
    return _LOCAL.sub(lambda m: numbering.setdefault(m.group(), f"t#{len(numbering)}"), code)


def _fixed_names(lines: list[str]) -> list[str]:
    """The constants, g0 and sizes the lines read, in a fixed order (c..., g0, n...)."""
    found = set()
    for line in lines:
        found.update(_FIXED_NAME.findall(line.split("#", 1)[0]))
    consts = sorted((n for n in found if n[0] == "c"), key=lambda n: int(n[1:]))
    sizes = sorted((n for n in found if n[0] == "n"), key=lambda n: int(n[1:]))
    return consts + (["g0"] if "g0" in found else []) + sizes


def _values(graph: Graph) -> list[Var]:
    """Every value of a fused graph: inputs, outputs, and those inside its regions."""
    out = list(graph.inputs) + list(graph.outputs)
    for node in graph.nodes:
        out += node.outputs
        if "graph" in node.params and isinstance(node.params["graph"], Graph):
            out += _values(node.params["graph"])
    return out


def _signature(graph: Graph) -> str:
    ins = ", ".join(str(v.aval) for v in graph.inputs)
    outs = ", ".join(str(v.aval) for v in graph.outputs)
    return f"({ins}) -> ({outs})"


def _function(lowering: _Lowering, graph: Graph, what: str) -> _Callee:
    """A sub-graph as a function of the module."""
    callee = _FunctionLowering(_optimised(graph), lowering).define(lowering.cache, what)
    if isinstance(lowering, _FunctionLowering) and not callee.scalar:
        lowering.scalar_callees = False
    return callee


def _value(name: str, aval) -> tuple[str, str]:
    """(array, number) forms of an array value (the number only for a 0-d one)."""
    return name, f"{name}[()]" if aval.ndim == 0 else name


# ---------------------------------------------------------------------------------------
# The three nodes


def _comment(lowering: _Lowering, node: Node, what: str) -> None:
    lowering.body.append(lowering.comment_text(node, what))


def _step(name: str, aval, it: str) -> tuple[str, str]:
    """(array, number) forms of step `it` of a stacked array (a 0-d view of a 1-d stack)."""
    if aval.ndim == 1:
        return f"{name}[{it}:{it} + 1].reshape(())", f"{name}[{it}]"
    return f"{name}[{it}]", f"{name}[{it}]"


def _carry_buffers(lowering: _Lowering, carry_out: list[Var], init: list[str]
                   ) -> tuple[list[str], list[str]]:
    """Two buffers per carried value, the first holding a copy of its initial value (the
    node's outputs are fresh buffers: no output aliases an input)."""
    current, spare = [], []
    for v, source in zip(carry_out, init):
        name = lowering.buffers.fresh_name(v)
        lowering.names[v] = name
        other = lowering.buffers.new_name()
        lowering.body.append(f"    {name} = {source}.copy()")
        lowering.body.append(f"    {other} = np.empty_like({name})")
        current.append(name)
        spare.append(other)
    return current, spare


def _swap(current: list[str], spare: list[str], indent: str) -> list[str]:
    return [f"{indent}{a}, {b} = {b}, {a}" for a, b in zip(current, spare)]


def _lower_scan(lowering: _Lowering, node: Node) -> None:
    twin = find_twin(lowering.graph.nodes, node)
    if twin is not None:
        _lower_scan(lowering, _with_twin(lowering, node, *twin))
        nk = node.params["num_carry"]
        for mine, theirs in zip(node.outputs[:nk], twin[0].outputs[:nk]):
            name = lowering.buffers.alias(theirs, mine, lowering.names)
            lowering.names[theirs] = name
            lowering.body.append(f"    {name} = {lowering.names[mine]}  # the same carry")
        return
    sunk = sink_accumulations(node)
    if sunk is not None:  # the accumulated products summed after the loop
        scan, summed, inputs, finals = sunk
        _lower_scan(lowering, scan)
        _emit_graph(lowering, summed, inputs, finals)
        return
    hoisted = hoist_step_products(node)
    if hoisted is not None:
        node = _with_products(lowering, node, *hoisted)
    p = node.params
    nc, nk, length = p["num_consts"], p["num_carry"], p["length"]
    ins = [_value(lowering.names[v], v.aval) for v in node.inputs]
    consts, init = ins[:nc], [a for a, _ in ins[nc:nc + nk]]
    _comment(lowering, node, f"scan of {length} steps{', reversed' if p['reverse'] else ''}")
    body = _function(lowering, p["body"], "scan body")
    current, spare = _carry_buffers(lowering, node.outputs[:nk], init)
    ys = [lowering.allocate(v) for v in node.outputs[nk:]]
    for v, y in zip(node.outputs[nk:], ys):
        lowering.names[v] = y
    steps = f"range({length} - 1, -1, -1)" if p["reverse"] else f"range({length})"
    carry_avals = [v.aval for v in node.outputs[:nk]]
    xs = [_step(lowering.names[v], v.aval, "it") for v in node.inputs[nc + nk:]]
    ys_at = [_step(y, v.aval, "it") for y, v in zip(ys, node.outputs[nk:])]
    args = consts + [_value(c, a) for c, a in zip(current, carry_avals)] + xs
    outs = [_value(c, a) for c, a in zip(spare, carry_avals)] + ys_at
    if nk == 0 and body.scalar and _has_while(p["body"]) and emit_lockstep(
            lowering, node, ys, _parallel_map(lowering, p["body"], body, length)):
        return  # blocks of lanes in lockstep (compiler/lockstep_lanes.py)
    if nk == 0 and _parallel_map(lowering, p["body"], body, length):
        # 0-d arrays are read before the loop: Numba's parfors pass them into the loop
        # body as numbers.
        hoisted = [f"    v{k} = {n}" for k, (_, n) in enumerate(body.fixed_args() + args)
                   if n.endswith("[()]")]
        names = iter(range(len(hoisted)))
        call = body.name + "(" + ", ".join(
            f"v{next(names)}" if n.endswith("[()]") else n
            for _, n in body.fixed_args() + args) + ")"
        targets = ", ".join(n for _, n in outs)
        lowering.program.uses_prange = True
        lowering.body.append(RegionBody(hoisted + [f"    for it in prange({length}):",
                                                   f"        {targets} = {call}"
                                                   if outs else f"        {call}"],
                                        parallel=True))
        return
    lowering.body.append(f"    for it in {steps}:")
    lowering.body.append(f"        {body.call(args, outs)}")
    lowering.body += _swap(current, spare, "        ")


def _with_twin(lowering: _Lowering, node: Node, twin: Node, body: Graph) -> Node:
    """The scan computing node's outputs and its twin's stacked outputs in one loop."""
    lowering.merged_nodes.add(id(twin))
    return Node(node.prim, list(node.inputs), {**node.params, "body": body},
                twin_outputs(node, twin), node.source)


def _with_products(lowering: _Lowering, node: Node, stacked: Graph, scan: Node) -> Node:
    """Emit the products of every step (compiler/scan_hoist.py) before the loop; the scan
    that reads them."""
    p = node.params
    nc, nk = p["num_consts"], p["num_carry"]
    _emit_graph(lowering, stacked, node.inputs[:nc] + node.inputs[nc + nk:],
                scan.inputs[len(node.inputs):])
    return scan


def _emit_graph(lowering: _Lowering, graph: Graph, inputs: list[Var], outputs: list[Var]
                ) -> None:
    """Emit a graph of the node's own making inline: its inputs are the values `inputs`,
    its outputs become the values `outputs`."""
    graph = _optimised(graph)
    for v, value in zip(graph.inputs, inputs):
        lowering.names[v] = lowering.names[value]
    _name_consts(lowering, graph)
    step, lowering.step = lowering.step, -2  # no region writes over the node's operands
    for part in _flatten(graph):
        lowering.lower_node(part)
    lowering.step = step
    for v, result in zip(outputs, graph.outputs):
        lowering.names[v] = lowering.names[result]


def _parallel_map(lowering: _Lowering, graph: Graph, body: _Callee, length: int) -> bool:
    """Whether a map (a scan without carry: batching's per-lane bodies) runs its steps in
    parallel: steps of a scalar function (no BLAS or allocation inside to contend for),
    enough of them, each looping (a while loop) or the whole large enough."""
    if not (lowering.allow_parallel and body.scalar and length >= MAP_PARALLEL_MIN_LENGTH):
        return False
    return _has_while(graph) or length * len(graph.nodes) >= PARALLEL_MIN_FLOPS


def _has_while(graph: Graph) -> bool:
    return any(n.prim.name == "while_loop" or any(_has_while(g) for g in subgraphs(n))
               for n in graph.nodes)




def _lower_cond(lowering: _Lowering, node: Node) -> None:
    branches = node.params["branches"]
    index = lowering.names[node.inputs[0]]
    operands = [_value(lowering.names[v], v.aval) for v in node.inputs[1:]]
    _comment(lowering, node, f"cond of {len(branches)} branches")
    callees = [_function(lowering, g, f"cond branch {k}") for k, g in enumerate(branches)]
    outs = []
    for v in node.outputs:
        lowering.names[v] = lowering.allocate(v)
        outs.append(_value(lowering.names[v], v.aval))
    if len(callees) == 1:
        lowering.body.append(f"    {callees[0].call(operands, outs)}")
        return
    for k, callee in enumerate(callees):
        if k == 0:
            test = f"if {index}[()] <= 0:"
        elif k < len(callees) - 1:
            test = f"elif {index}[()] == {k}:"
        else:
            test = "else:"
        lowering.body.append(f"    {test}")
        lowering.body.append(f"        {callee.call(operands, outs)}")


def _lower_while(lowering: _Lowering, node: Node) -> None:
    p = node.params
    ncc, nbc = p["cond_nconsts"], p["body_nconsts"]
    ins = [_value(lowering.names[v], v.aval) for v in node.inputs]
    cond_consts, body_consts = ins[:ncc], ins[ncc:ncc + nbc]
    init = [a for a, _ in ins[ncc + nbc:]]
    _comment(lowering, node, "while loop")
    cond = _function(lowering, p["cond_graph"], "while_loop cond")
    body = _function(lowering, p["body_graph"], "while_loop body")
    current, spare = _carry_buffers(lowering, node.outputs, init)
    avals = [v.aval for v in node.outputs]
    carry = [_value(c, a) for c, a in zip(current, avals)]
    step = body.call(body_consts + carry, [_value(c, a) for c, a in zip(spare, avals)])
    if cond.scalar:
        lowering.body.append(f"    while {cond.value(cond_consts + carry)}:")
        lowering.body.append(f"        {step}")
        lowering.body += _swap(current, spare, "        ")
        return
    flag = lowering.buffers.new_name()
    lowering.body.append(f"    {flag} = np.empty((), np.bool_)")
    test = cond.call(cond_consts + carry, [(flag, f"{flag}[()]")])
    lowering.body.append(f"    {test}")
    lowering.body.append(f"    while {flag}[()]:")
    lowering.body.append(f"        {step}")
    lowering.body += _swap(current, spare, "        ")
    lowering.body.append(f"        {test}")


_EMITTERS = {"scan": _lower_scan, "cond": _lower_cond, "while_loop": _lower_while}
