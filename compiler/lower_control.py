"""CPU lowering of structured control flow: cond, while_loop and scan as real branches and loops.

Each sub-graph of a control-flow node goes through the pipeline of a top-level graph
(simplify, fusion) and becomes one `@njit` function `flowK` of the same module, lowered by
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
is a size parameter) is the same for every length. See docs/compiler.md "Control flow".
"""

from __future__ import annotations

import re

from transfuse.compiler.complex_split import split_complex
from transfuse.compiler.functionalize import prepare
from transfuse.compiler.simplify import simplify
from transfuse.ir.core import Graph, Node, Var

from .fusion import fuse, inline_calls
from .lower_cpu import _BufferPlan, _Lowering, _sized, _top_level_consts
from .region_functions import share_regions
from .repeated_blocks import outline_repeats

_FIXED_NAME = re.compile(r"(?<![.\w])(c\d+|g0|n\d+)(?!\w)")  # constants, g0, sizes
_MODULE_FUNCTION = re.compile(r"(?<![.\w])(region|block)(\d+)(?!\w)")


def lower_control_flow(lowering: _Lowering, node: Node) -> None:
    """Emit the statements running a cond, while_loop or scan node into `lowering`."""
    _EMITTERS[node.prim.name](lowering, node)


# ---------------------------------------------------------------------------------------
# Sub-graphs as functions


def _optimised(graph: Graph) -> Graph:
    """A sub-graph through jit's optimiser and fusion, as a top-level graph would go."""
    return fuse(split_complex(inline_calls(simplify(prepare(graph)))))


class _OutParams(_BufferPlan):
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

    def define(self, cache: bool, what: str) -> tuple[str, list[str]]:
        """Lower the graph; the function's name and its fixed parameters (constants, g0,
        sizes: the caller passes the same names)."""
        self.cache = cache
        for i, v in enumerate(self.graph.inputs):
            self.names[v] = f"a{i}"
        root = self.root
        for v in _top_level_consts(self.graph):
            if v not in root.names:
                root.names[v] = f"c{len(root.const_vars)}"
                root.const_vars.append(v)
                root.const_values[v] = self.graph.consts[v]
            self.names[v] = root.names[v]
        for step, node in enumerate(_flatten(self.graph)):
            self.step = step
            self.lower_node(node)
            self.buffers.release_after(node, step)
        self.body += self._store_outputs()
        name = f"flow{len(root.function_names)}"
        root.function_names.add(name)
        lines, functions = self._render(name)
        fixed = _fixed_names(lines + [x for f in functions for x in f])
        outs = [f"o{k}" for k in range(len(self.graph.outputs))]
        ins = [self.names[v] for v in self.graph.inputs]
        head = [f"@njit({self.options(cache)})",
                f"def {name}({', '.join(fixed + ins + outs)}):",
                f"    # {what}: {_signature(self.graph)}"]
        root.functions.extend(functions)
        root.functions.append(head + lines + [""])
        return name, fixed

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


def _flatten(graph: Graph) -> list[Node]:
    from .lower_cpu import _flatten_contractions

    return _flatten_contractions(graph.nodes)


def _fixed_names(lines: list[str]) -> list[str]:
    """The constants, g0 and sizes the lines read, in a fixed order (c..., g0, n...)."""
    found = set()
    for line in lines:
        found.update(_FIXED_NAME.findall(line.split("#", 1)[0]))
    consts = sorted((n for n in found if n[0] == "c"), key=lambda n: int(n[1:]))
    sizes = sorted((n for n in found if n[0] == "n"), key=lambda n: int(n[1:]))
    return consts + (["g0"] if "g0" in found else []) + sizes


def _signature(graph: Graph) -> str:
    ins = ", ".join(str(v.aval) for v in graph.inputs)
    outs = ", ".join(str(v.aval) for v in graph.outputs)
    return f"({ins}) -> ({outs})"


def _function(lowering: _Lowering, graph: Graph, what: str) -> tuple[str, str]:
    """A sub-graph as a function of the module: its name and the fixed arguments of a call."""
    sub = _FunctionLowering(_optimised(graph), lowering)
    name, fixed = sub.define(lowering.cache, what)
    return name, ", ".join(fixed)


def _call(name: str, fixed: str, args: list[str]) -> str:
    return f"{name}({', '.join(([fixed] if fixed else []) + args)})"


# ---------------------------------------------------------------------------------------
# The three nodes


def _comment(lowering: _Lowering, node: Node, what: str) -> None:
    lowering.body.append(lowering.comment_text(node, what))


def _step_view(name: str, ndim: int, it: str) -> str:
    """Step `it` of a stacked array as an array (a 0-d view for a 1-d stack)."""
    if ndim == 1:
        return f"{name}[{it}:{it} + 1].reshape(())"
    return f"{name}[{it}]"


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
    p = node.params
    nc, nk, length = p["num_consts"], p["num_carry"], p["length"]
    ins = [lowering.names[v] for v in node.inputs]
    consts, init, xs = ins[:nc], ins[nc:nc + nk], ins[nc + nk:]
    _comment(lowering, node, f"scan of {length} steps{', reversed' if p['reverse'] else ''}")
    name, fixed = _function(lowering, p["body"], "scan body")
    current, spare = _carry_buffers(lowering, node.outputs[:nk], init)
    ys = [lowering.allocate(v) for v in node.outputs[nk:]]
    for v, y in zip(node.outputs[nk:], ys):
        lowering.names[v] = y
    steps = f"range({length} - 1, -1, -1)" if p["reverse"] else f"range({length})"
    x_ndims = [v.aval.ndim for v in node.inputs[nc + nk:]]
    y_ndims = [v.aval.ndim for v in node.outputs[nk:]]
    args = (consts + current + [_step_view(x, d, "it") for x, d in zip(xs, x_ndims)]
            + spare + [_step_view(y, d, "it") for y, d in zip(ys, y_ndims)])
    lowering.body.append(f"    for it in {steps}:")
    lowering.body.append(f"        {_call(name, fixed, args)}")
    lowering.body += _swap(current, spare, "        ")


def _lower_cond(lowering: _Lowering, node: Node) -> None:
    branches = node.params["branches"]
    index, operands = lowering.names[node.inputs[0]], [lowering.names[v]
                                                       for v in node.inputs[1:]]
    _comment(lowering, node, f"cond of {len(branches)} branches")
    calls = [_function(lowering, g, f"cond branch {k}") for k, g in enumerate(branches)]
    outs = [lowering.allocate(v) for v in node.outputs]
    for v, o in zip(node.outputs, outs):
        lowering.names[v] = o
    if len(calls) == 1:
        lowering.body.append(f"    {_call(*calls[0], operands + outs)}")
        return
    for k, (name, fixed) in enumerate(calls):
        if k == 0:
            test = f"if {index}[()] <= 0:"
        elif k < len(calls) - 1:
            test = f"elif {index}[()] == {k}:"
        else:
            test = "else:"
        lowering.body.append(f"    {test}")
        lowering.body.append(f"        {_call(name, fixed, operands + outs)}")


def _lower_while(lowering: _Lowering, node: Node) -> None:
    p = node.params
    ncc, nbc = p["cond_nconsts"], p["body_nconsts"]
    ins = [lowering.names[v] for v in node.inputs]
    cond_consts, body_consts, init = ins[:ncc], ins[ncc:ncc + nbc], ins[ncc + nbc:]
    _comment(lowering, node, "while loop")
    cond, cond_fixed = _function(lowering, p["cond_graph"], "while_loop cond")
    body, body_fixed = _function(lowering, p["body_graph"], "while_loop body")
    current, spare = _carry_buffers(lowering, node.outputs, init)
    flag = lowering.buffers.new_name()
    lowering.body.append(f"    {flag} = np.empty((), np.bool_)")
    test = _call(cond, cond_fixed, cond_consts + current + [flag])
    lowering.body.append(f"    {test}")
    lowering.body.append(f"    while {flag}[()]:")
    lowering.body.append(f"        {_call(body, body_fixed, body_consts + current + spare)}")
    lowering.body += _swap(current, spare, "        ")
    lowering.body.append(f"        {test}")


_EMITTERS = {"scan": _lower_scan, "cond": _lower_cond, "while_loop": _lower_while}
