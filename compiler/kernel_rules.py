"""Kernel rules both backends share: a convolution, a running sum or product and an
arg-reduction, each written once against a kernel context.

Only the loop nest differs. `k.each(names, extents, work)` opens one iteration per output
point: loops on the CPU, the outer one parallel when the work is large
(compiler/lower_cpu_kernels.py), a thread per point on CUDA (compiler/lower_cuda.py).
`k.sum_start`, `k.sum_add` and `k.sum_value` keep a compensated float sum the backend's
way (the CPU's total in float64 with comp_add, a GPU thread's in the operand's dtype with
kahan_add), and `k.accumulate(acc, term, dtype)` is the statement adding a term to a plain
accumulator. A rule leaves the points' loop open: the backend's driver closes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from transfuse.ir.core import Node

from .codegen import ctor, index_str, literal
from .point_rules import NARROW_INTS

Kernel = Callable[[Any], None]  # (a backend's kernel context) -> None


def conv_kernel(k: Any) -> None:
    """Direct convolution (cross-correlation) with strides, padding, dilations, groups."""
    lhs, rhs = (v.aval for v in k.node.inputs)
    out = k.node.outputs[0].aval
    p = k.params
    if out.size == 0:
        return
    nsp = lhs.ndim - 2
    groups = p["feature_group_count"]
    cin_g = lhs.shape[1] // groups
    cout_g = rhs.shape[0] // groups
    x, w, o = k.ins[0], k.ins[1], k.outs[0]
    sp = [f"i{2 + d}" for d in range(nsp)]
    ks = [f"i{2 + nsp + d}" for d in range(nsp)]
    flops = out.size * cin_g * int(np.prod(rhs.shape[2:], dtype=np.int64))
    k.each(["i0", "i1"] + sp, list(out.shape), flops)
    acc = k.local(literal(0, out.dtype))
    g = f"i1 // {cout_g}"
    cin = f"i{2 + 2 * nsp}"
    k.loops([cin] + ks, [cin_g] + list(rhs.shape[2:]))
    conds, xidx = conv_window(k, lhs.shape, sp, ks)
    term = (f"{x}[i0, {g} * {cin_g} + {cin}, {', '.join(xidx)}] * "
            f"{w}[i1, {cin}, {', '.join(ks)}]")
    k.put(f"if {' and '.join(conds)}:")
    k.put(f"    {k.accumulate(acc, term, out.dtype)}")
    k.close(1 + nsp)
    k.put(f"{o}[i0, i1, {', '.join(sp)}] = {acc}")


def scan_kernel(op: str) -> Kernel:
    """cumsum (op '+') or cumprod ('*') along an axis, a line per point of the others.
    A float running sum is compensated (NumPy's errs by up to n roundoffs)."""
    def kernel(k: Any) -> None:
        aval = k.node.inputs[0].aval
        axis, reverse = k.params["axis"], k.params["reverse"]
        if aval.size == 0:
            return
        others = [d for d in range(aval.ndim) if d != axis]
        k.each([f"i{d}" for d in others], [aval.shape[d] for d in others], aval.size)
        n = aval.shape[axis]
        line = f"{n - 1}, -1, -1" if reverse else n
        idx = index_str([f"i{d}" for d in range(aval.ndim)])
        if op == "+" and aval.dtype.kind == "f":
            total = k.sum_start(aval.dtype)
            k.nest.open(f"i{axis}", line)
            k.put(k.sum_add(total, f"{k.ins[0]}[{idx}]"))
            k.put(f"{k.outs[0]}[{idx}] = {k.sum_value(total)}")
            return
        acc = k.local(literal(0 if op == "+" else 1, aval.dtype))
        k.nest.open(f"i{axis}", line)
        step = f"{acc} {op} {k.ins[0]}[{idx}]"
        if aval.dtype in NARROW_INTS:
            step = f"{ctor(aval.dtype)}({step})"
        k.put(f"{acc} = {step}")
        k.put(f"{k.outs[0]}[{idx}] = {acc}")
    return kernel


def arg_kernel(which: str) -> Kernel:
    """argmax (which 'max') or argmin ('min') along an axis: the first extreme's index,
    the first NaN's if there is one (as NumPy)."""
    def kernel(k: Any) -> None:
        aval = k.node.inputs[0].aval
        axis = k.params["axis"]
        if k.node.outputs[0].aval.size == 0:
            return
        others = [d for d in range(aval.ndim) if d != axis]
        k.each([f"i{d}" for d in others], [aval.shape[d] for d in others], aval.size)
        at = lambda j: index_str([j if d == axis else f"i{d}" for d in range(aval.ndim)])  # noqa
        best = k.local(f"{k.ins[0]}[{at('0')}]")
        pos = k.local("0")
        arg_scan(k, which, at, best, pos)
        k.put(f"{k.outs[0]}[{index_str([f'i{d}' for d in others])}] = {pos}")
    return kernel


def conv_window(k: Any, lhs_shape: tuple[int, ...], sp: list[str], ks: list[str]
                ) -> tuple[list[str], list[str]]:
    """Where output point sp and kernel point ks read a convolution's input: the conditions
    for reading inside it (padding, input dilation) and the input's spatial indices."""
    p = k.params
    conds, xidx = [], []
    for d in range(len(sp)):
        lo = p["padding"][d][0]
        pos = f"{sp[d]} * {p['window_strides'][d]} + {ks[d]} * {p['rhs_dilation'][d]} - {lo}"
        q = k.nest.assign(k.program.local(), pos)
        dil, n = p["lhs_dilation"][d], lhs_shape[2 + d]
        if dil == 1:
            conds.append(f"0 <= {q} < {n}")
            xidx.append(q)
        else:
            conds.append(f"{q} >= 0 and {q} % {dil} == 0 and {q} // {dil} < {n}")
            xidx.append(f"{q} // {dil}")
    return conds, xidx


def arg_scan(k: Any, which: str, at: Callable[[str], str], best: str, pos: str) -> None:
    """The loop of argmax/argmin along the kernel's axis from element 1: `best` and `pos`
    hold element 0 and its index; at(j) indexes the input at position j of the line."""
    aval = k.node.inputs[0].aval
    j, v = k.program.local(), k.program.local()
    k.nest.open(j, f"1, {aval.shape[k.params['axis']]}")
    better = ">" if which == "max" else "<"
    if aval.dtype.kind == "f":
        k.put(f"if {best} != {best}:")
        k.put("    break  # the first NaN wins, as in NumPy")
    k.put(f"{v} = {k.ins[0]}[{at(j)}]")
    nan = f" or {v} != {v}" if aval.dtype.kind == "f" else ""
    k.put(f"if {v} {better} {best}{nan}:")
    k.put(f"    {best} = {v}")
    k.put(f"    {pos} = {j}")
    k.close(1)


def dot_indices(node: Node, lfree: list[int], rfree: list[int]
                ) -> tuple[list[str], list[str], list[str], list[str]]:
    """A dot_general's loop variables: the output's (batch, lhs free, rhs free), the
    contracted axes', and the index expressions of lhs and rhs in those variables."""
    lhs, rhs = (v.aval for v in node.inputs)
    out = node.outputs[0].aval
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    names = [f"i{d}" for d in range(out.ndim)]
    nb, nl = len(lb), len(lfree)
    lidx, ridx = [""] * lhs.ndim, [""] * rhs.ndim
    for j, (a, c) in enumerate(zip(lb, rb)):
        lidx[a] = ridx[c] = names[j]
    for j, a in enumerate(lfree):
        lidx[a] = names[nb + j]
    for j, c in enumerate(rfree):
        ridx[c] = names[nb + nl + j]
    knames = [f"i{out.ndim + j}" for j in range(len(lc))]
    for a, c, name in zip(lc, rc, knames):
        lidx[a] = ridx[c] = name
    return names, knames, lidx, ridx
