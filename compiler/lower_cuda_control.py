"""CUDA lowering of control flow: per-thread branches and loops on numbers.

Batching turns a vmapped `cond` or `while_loop` with a batched predicate into a map (a
`scan` without carry) over the lanes whose body works on one lane's numbers; here such a
map is one kernel with a thread per lane, each thread calling the body as a device
function (`@cuda.jit(device=True) def dK(...)`) and running its own branch and its own
number of iterations. A node whose operands and results are all 0-d (a `cond` or
`while_loop` on scalars, a scan carrying numbers over 1-d stacks) runs in one thread.

A device function is a sub-graph whose every value is 0-d: its regions are the CUDA
backend's 0-d loop regions (the same point rules), written as straight-line code on
numbers, and its own control flow becomes `if`/`while`/`for` on numbers. Anything else
(a body on arrays, BLAS, an index map) is refused with a CompileError naming the
primitive when the program is built.
"""

from __future__ import annotations

import re
from typing import Any

from transfuse.ir.core import Graph, Node
from transfuse.ir.errors import CompileError
from transfuse.ir.source import with_location

from .codegen import ctor, literal
from .fusion import FUSED
from .lower_control import (
    _ARRAY_CODE,
    _SCALAR_COPY,
    _ZERO_D_BUFFER,
    _ZERO_D_READ,
    _optimised,
    _values,
)
from .lower_cuda import _CudaLowering

_GRID_LOOP = re.compile(r"^(\s*)for j0 in range\(cuda\.grid\(1\), 1, cuda\.gridsize\(1\)\):$")


def _refuse(node: Node, why: str) -> CompileError:
    return CompileError(with_location(
        f"{node.prim.name} (transfuse.lax control flow) has no CUDA kernel here: {why}; the "
        "CUDA backend runs control flow whose bodies work on numbers (a vmapped cond or "
        "while_loop per lane); run this function on the CPU (jit without device='cuda')",
        node.source))


def lower_cuda_control_flow(lowering: _CudaLowering, node: Node) -> None:
    """A kernel running a cond, while_loop or scan node (see the module doc)."""
    p = node.params
    if node.prim.name == "scan" and p["num_carry"] == 0 and p["length"] > 0 and all(
            v.aval.ndim == 0 for v in node.inputs[:p["num_consts"]]) and all(
            v.aval.ndim == 1 for v in [*node.inputs[p["num_consts"]:], *node.outputs]):
        _lower_map(lowering, node)
        return
    stacked = node.inputs[p["num_consts"] + p["num_carry"]:] if node.prim.name == "scan" else []
    ys = node.outputs[p["num_carry"]:] if node.prim.name == "scan" else []
    flat = [v for v in [*node.inputs, *node.outputs] if v not in stacked and v not in ys]
    if any(v.aval.ndim != 0 for v in flat) or any(v.aval.ndim != 1 for v in [*stacked, *ys]):
        raise _refuse(node, "its operands or results are arrays")
    outs = [lowering.buffer(v) for v in node.outputs]
    ins = [_read(lowering, v) for v in node.inputs]
    lines = _emit(lowering, node, ins, [o if v.aval.ndim else f"{o}[()]" for o, v in zip(
        outs, node.outputs)], "        ")
    body = ["    for j0 in range(cuda.grid(1), 1, cuda.gridsize(1)):  # one thread"] + lines
    lowering.emit_kernel([node], body, 1, f"{node.prim.name} in one thread",
                         mark=len(lowering.body) - len(outs))


def _read(lowering: _CudaLowering, var: Any) -> str:
    """A 0-d operand as a number (a constant's literal), else the array's name."""
    name = lowering.names[var]
    if var.aval.ndim:
        return name
    if var in lowering.graph.consts:  # batching's initial carries: 0, 1.0, ...
        return literal(lowering.graph.consts[var].item(), var.aval.dtype)
    return f"{ctor(var.aval.dtype)}({name}[()])"


def _lower_map(lowering: _CudaLowering, node: Node) -> None:
    p = node.params
    body = _device_function(lowering, p["body"], node)
    nc = p["num_consts"]
    outs = [lowering.buffer(v) for v in node.outputs]
    args = [_read(lowering, v) for v in node.inputs[:nc]] + [
        f"{lowering.names[v]}[j0]" for v in node.inputs[nc:]]
    call = f"{body}({', '.join(args)})"
    targets = ", ".join(f"{o}[j0]" for o in outs)
    lines = [f"    for j0 in range(cuda.grid(1), {p['length']}, cuda.gridsize(1)):",
             f"        {targets} = {call}  # a thread a lane" if outs else f"        {call}"]
    lowering.emit_kernel([node], lines, p["length"], "map: a thread a step",
                         mark=len(lowering.body) - len(outs))


# ---------------------------------------------------------------------------------------
# Statements on numbers (inside a kernel's thread or a device function)


def _emit(lowering: _CudaLowering, node: Node, ins: list[str], outs: list[str],
          indent: str) -> list[str]:
    """Statements computing node on numbers: ins are expressions, outs assignable targets
    (a scan's stacked operands and results are 1-d arrays indexed by its step `it`)."""
    p, name = node.params, node.prim.name
    if name == "cond":
        branches = [_device_function(lowering, g, node) for g in p["branches"]]
        index, operands = ins[0], ins[1:]
        lines = []
        for k, fn in enumerate(branches):
            test = ("if" if k == 0 else "elif") + (f" {index} <= 0:" if k == 0 else
                                                   f" {index} == {k}:")
            if len(branches) == 1:
                return [f"{indent}{_assign(outs, fn, operands)}"]
            lines += [f"{indent}{test if k < len(branches) - 1 else 'else:'}",
                      f"{indent}    {_assign(outs, fn, operands)}"]
        return lines
    carry = [lowering.program.local() for _ in node.outputs]
    if name == "while_loop":
        ncc, nbc = p["cond_nconsts"], p["body_nconsts"]
        cond = _device_function(lowering, p["cond_graph"], node)
        body = _device_function(lowering, p["body_graph"], node)
        init = ins[ncc + nbc:]
        return ([f"{indent}{c} = {i}" for c, i in zip(carry, init)]
                + [f"{indent}while {cond}({', '.join(ins[:ncc] + carry)}):",
                   f"{indent}    {_assign(carry, body, ins[ncc:ncc + nbc] + carry)}"]
                + [f"{indent}{o} = {c}" for o, c in zip(outs, carry)])
    nc, nk = p["num_consts"], p["num_carry"]
    body = _device_function(lowering, p["body"], node)
    carry = carry[:nk]
    steps = (f"range({p['length'] - 1}, -1, -1)" if p["reverse"] else f"range({p['length']})")
    xs = [f"{x}[it]" for x in ins[nc + nk:]]
    ys = [f"{y}[it]" for y in outs[nk:]]
    return ([f"{indent}{c} = {i}" for c, i in zip(carry, ins[nc:nc + nk])]
            + [f"{indent}for it in {steps}:",
               f"{indent}    {_assign(carry + ys, body, ins[:nc] + carry + xs)}"]
            + [f"{indent}{o} = {c}" for o, c in zip(outs[:nk], carry)])


def _assign(targets: list[str], fn: str, args: list[str]) -> str:
    call = f"{fn}({', '.join(args)})"
    return f"{', '.join(targets)} = {call}" if targets else call


# ---------------------------------------------------------------------------------------
# Device functions


class _DeviceFunction(_CudaLowering):
    """A sub-graph on numbers lowered to `@cuda.jit(device=True) def dK(a0, a1, ...)`."""

    def __init__(self, graph: Graph, parent: _CudaLowering, owner: Node):
        super().__init__(graph, parent.fastmath, *parent.block)
        self.root = getattr(parent, "root", parent)
        self.program = parent.program
        self.owner = owner
        self.lines: list[str] = []

    def buffer(self, var: Any) -> str:
        return self.bind(var, f"b{len(self.avals)}")  # a local number: nothing to allocate

    def emit_kernel(self, nodes: list[Node], body: list[str], total: int,
                    what: str = "kernel", mark: int | None = None, threads: int = 1) -> None:
        """A 0-d region's code, its grid-stride loop of one point removed."""
        if threads > 1 or total != 1:
            raise _refuse(self.owner, f"its body computes {what} on arrays")
        depth = None
        for line in body:
            loop = _GRID_LOOP.match(line)
            if loop:
                depth = len(loop.group(1))
                continue
            if depth is not None and len(line) - len(line.lstrip()) > depth:
                line = line[4:]
            self.lines.append(line)

    def lower_node(self, node: Node) -> None:
        if node.prim.name in ("cond", "while_loop", "scan"):
            outs = [self.buffer(v) for v in node.outputs]
            self.lines += _emit(self.root, node, [self.names[v] for v in node.inputs], outs,
                                "    ")
            return
        if node.prim is not FUSED or node.params["kind"] != "loop":
            raise _refuse(self.owner, f"its body computes {node.prim.name}")
        super().lower_node(node)

    def define(self) -> str:
        if not all(v.aval.ndim == 0 for v in _values(self.graph)):
            raise _refuse(self.owner, "its body works on arrays")
        root = self.root
        for i, v in enumerate(self.graph.inputs):
            self.bind(v, f"a{i}")
        for k, v in enumerate(self.graph.consts):
            self.bind(v, f"k{k}")
            value = self.graph.consts[v]
            self.lines.append(f"    k{k} = {literal(value.item(), value.dtype)}")
        for node in self.graph.nodes:
            self.lower_node(node)
        outs = [self.names[v] for v in self.graph.outputs]
        text = []
        for line in self.lines:
            code, sep, comment = line.partition("#")
            code = _ZERO_D_BUFFER.sub(r"np.\1(0)", code)
            code = _SCALAR_COPY.sub(lambda m: m.group(1) or m.group(2), code)
            code = _ZERO_D_READ.sub(r"\1", code)
            if _ARRAY_CODE.search(code.replace("[it]", "")) or re.search(r"\berr\b", code):
                raise _refuse(self.owner, "its body indexes arrays")
            text.append(code + sep + comment)
        root.device_count = getattr(root, "device_count", 0) + 1
        name = f"d{root.device_count}"
        ins = [self.names[v] for v in self.graph.inputs]
        root.kernels.append([f"@cuda.jit(device=True, fastmath={self.fastmath})",
                             f"def {name}({', '.join(ins)}):"] + (text or ["    pass"])
                            + [f"    return {', '.join(outs)}", "", ""])
        return name


def _device_function(lowering: _CudaLowering, graph: Graph, owner: Node) -> str:
    return _DeviceFunction(_optimised(graph), lowering, owner).define()
