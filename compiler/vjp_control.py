"""Reverse mode through structured control flow: VJP rules of cond, scan and while_loop.

- cond: a cond over the branches' backward functions. Each recomputes its branch's forward
  values from the operands (the backward graph holds only the operands, not the branch's
  intermediates), then runs its backward pass; zeros where a branch gives no cotangent.
- scan: a forward scan of the body's vjp forward half recomputes the loop and stacks the
  body's residuals as ys (residuals that are the body's consts are not stacked: they are
  read once as consts), then a reverse scan of the body's backward half carries the carry
  cotangent and the accumulated const cotangents and emits the xs cotangents as ys.
  `reverse=True` runs both the other way. `fori_loop` with static bounds is a scan.
- while_loop: no reverse mode (its trip count is unknown until it runs), as in JAX.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfuse.compiler import vjp
from transfuse.compiler.simplify import dce
from transfuse.ir import lax
from transfuse.ir.control import scan_parts
from transfuse.ir.core import Aval, Graph, is_inexact
from transfuse.ir.errors import UnsupportedError
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location
from transfuse.ir.tracing import bind, current_builder, inline, trace_to_graph

P = PRIMITIVES


def _zeros(aval: Aval) -> Any:
    return lax.full(aval.shape, 0, aval.dtype)


def _closed(fn, in_avals: Sequence[Aval], name: str) -> Graph:
    """fn traced into a closed graph (a control-flow body)."""
    graph, implicit = trace_to_graph(fn, list(in_avals), name=name)
    assert not implicit and not graph.num_captures, f"{name} captured an outer value"
    return graph


def _flags(avals: Sequence[Aval]) -> list[bool]:
    """Which values carry a cotangent (floating or complex)."""
    return [is_inexact(a.dtype) for a in avals]


# ---------------------------------------------------------------------------------------
# cond


def _branch_backward(branch: Graph, ct_flags: list[bool], op_flags: list[bool]) -> Graph:
    """operands + the given output cotangents -> the float operands' cotangents."""
    n_ops = len(branch.inputs)

    def fn(*args: Any) -> list[Any]:
        ops, given = list(args[:n_ops]), iter(args[n_ops:])
        cts = [next(given) if f else None for f in ct_flags]
        env = vjp.evaluate(branch, ops)  # the branch's forward values, recomputed
        wrt = {v for v, f in zip(branch.inputs, op_flags) if f}
        in_cts = vjp.backward_pass(branch, env.__getitem__, cts, vjp.active_vars(branch, wrt))
        return [in_cts[v] if v in in_cts else _zeros(v.aval)
                for v, f in zip(branch.inputs, op_flags) if f]

    ct_avals = [a for a, f in zip(branch.out_avals, ct_flags) if f]
    return _closed(fn, branch.in_avals + ct_avals, f"{branch.name}_bwd")


def cond_vjp(cts, ins, outs, *, branches):
    """A cond that runs the taken branch's backward pass."""
    index, *operands = ins
    ct_flags = [ct is not None for ct in cts]
    op_flags = _flags(branches[0].in_avals)
    backward = tuple(_branch_backward(b, ct_flags, op_flags) for b in branches)
    op_cts = iter(bind(P["cond"], index, *operands, *[c for c in cts if c is not None],
                       branches=backward))
    return [None] + [next(op_cts) if f else None for f in op_flags]


# ---------------------------------------------------------------------------------------
# scan


def _forward_body(fwd: Graph, n_outputs: int, stacked: list[int]) -> Graph:
    """The body's vjp forward half, keeping only the residuals that are stacked."""
    outputs = fwd.outputs[:n_outputs] + [fwd.outputs[n_outputs + k] for k in stacked]
    return dce(Graph(fwd.inputs, fwd.nodes, outputs, fwd.consts, name=fwd.name))


def scan_vjp(cts, ins, outs, *, body, length, reverse, num_consts, num_carry):
    """A forward scan stacking the body's residuals, then a reverse scan of its backward."""
    consts, init, xs = scan_parts(ins, num_consts, num_carry)
    n_in, n_out = len(body.inputs), len(body.outputs)
    wrt = _flags(body.in_avals)
    ct_carry_flags = _flags(body.out_avals[:num_carry])
    ct_y_flags = [f and ct is not None
                  for f, ct in zip(_flags(body.out_avals[num_carry:]), cts[num_carry:])]
    halves = vjp.vjp_graph(body, wrt, ct_carry_flags + ct_y_flags)
    # Residuals that are the body's consts are loop-invariant: read once, not stacked.
    const_index = {v: i for i, v in enumerate(halves.forward.inputs[:num_consts])}
    res_vars = halves.forward.outputs[n_out:]
    stacked = [k for k, v in enumerate(res_vars) if v not in const_index]
    invariant = [k for k, v in enumerate(res_vars) if v in const_index]

    # 1. The forward loop again, its residuals stacked as extra ys.
    stacked_res: list[Any] = []
    if stacked:
        fwd_body = _forward_body(halves.forward, n_out, stacked)
        stacked_res = bind(P["scan"], *ins, body=fwd_body, length=length, reverse=reverse,
                           num_consts=num_consts, num_carry=num_carry)[n_out:]

    # 2. The backward loop, the other way round.
    ct_wrt_consts = [i for i in range(num_consts) if wrt[i]]
    ct_wrt_carry = [i for i in range(num_consts, num_consts + num_carry) if wrt[i]]
    ct_wrt_xs = [i for i in range(num_consts + num_carry, n_in) if wrt[i]]
    res_avals = halves.backward.in_avals[sum(ct_carry_flags) + sum(ct_y_flags):]
    invariant_vals = [consts[const_index[res_vars[k]]] for k in invariant]
    n_inv, n_cc, n_acc = len(invariant), len(ct_wrt_carry), len(ct_wrt_consts)
    n_cty = sum(ct_y_flags)

    def bwd_step(*args: Any) -> list[Any]:
        inv, ct_c, acc = args[:n_inv], args[n_inv:n_inv + n_cc], args[n_inv + n_cc:][:n_acc]
        rest = args[n_inv + n_cc + n_acc:]
        ct_y, res_slices = rest[:n_cty], rest[n_cty:]
        residuals: list[Any] = [None] * len(res_vars)
        for k, value in zip(invariant, inv):
            residuals[k] = value
        for k, value in zip(stacked, res_slices):
            residuals[k] = value
        in_cts = inline(halves.backward, [*ct_c, *ct_y, *residuals])
        by_input = dict(zip([i for i in range(n_in) if wrt[i]], in_cts))
        return ([by_input[i] for i in ct_wrt_carry]
                + [lax.add(a, by_input[i]) for a, i in zip(acc, ct_wrt_consts)]
                + [by_input[i] for i in ct_wrt_xs])

    in_avals = body.in_avals
    ct_y_avals = [a for a, f in zip(body.out_avals[num_carry:], ct_y_flags) if f]
    step_avals = ([res_avals[k] for k in invariant] + [in_avals[i] for i in ct_wrt_carry]
                  + [in_avals[i] for i in ct_wrt_consts] + ct_y_avals
                  + [res_avals[k] for k in stacked])
    bwd_body = _closed(bwd_step, step_avals, f"{body.name}_bwd")
    ct_init = [cts[i - num_consts] if cts[i - num_consts] is not None else _zeros(in_avals[i])
               for i in ct_wrt_carry]
    acc_init = [_zeros(in_avals[i]) for i in ct_wrt_consts]
    ct_ys = [ct for ct, f in zip(cts[num_carry:], ct_y_flags) if f]
    bwd_outs = bind(P["scan"], *invariant_vals, *ct_init, *acc_init, *ct_ys, *stacked_res,
                    body=bwd_body, length=length, reverse=not reverse, num_consts=n_inv,
                    num_carry=n_cc + n_acc)
    found = dict(zip(ct_wrt_carry + ct_wrt_consts + ct_wrt_xs, bwd_outs))
    return [found.get(i) for i in range(n_in)]


# ---------------------------------------------------------------------------------------
# while_loop


def while_vjp(cts, ins, outs, **params):
    """No reverse mode through a loop whose trip count is data-dependent (as JAX)."""
    builder = current_builder()
    where = builder.source_override if builder is not None else None
    raise UnsupportedError(with_location(
        "Reverse-mode differentiation does not work for transfuse.lax.while_loop (or "
        "fori_loop with traced bounds): its number of steps is only known when it runs. "
        "Use fori_loop with static (Python int) bounds, or scan, which reverse mode "
        "supports; forward mode (jvp, jacfwd) works through while_loop", where))


__all__ = ["cond_vjp", "scan_vjp", "while_vjp"]
