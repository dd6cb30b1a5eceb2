"""Reverse mode through structured control flow: VJP rules of cond, scan and while_loop.

- cond: a cond over the branches' backward functions. Each recomputes its branch's forward
  values from the operands (the backward graph holds only the operands, not the branch's
  intermediates), then runs its backward pass; zeros where a branch gives no cotangent.
- scan: a reverse scan of the body's backward half carries the carry cotangent and the
  accumulated const cotangents and emits the xs cotangents as ys, reading the body's
  residuals: the body's consts once; a step's x or y from the scan's own xs and ys; the
  rest stacked by a forward scan of the body's vjp forward half (the loop run again).
  `reverse=True` runs both the other way. `fori_loop` with static bounds is a scan.
- while_loop: no reverse mode (its trip count is unknown until it runs), as in JAX.
Both rules take `active=` from backward_pass (vjp.TAKE_ACTIVE): the bodies are
differentiated only for the inputs that need a cotangent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfuse.compiler import vjp
from transfuse.compiler.jvp_control import index_ranges, trace_closed
from transfuse.compiler.simplify import dce
from transfuse.ir import lax
from transfuse.ir.core import Aval, Graph, is_inexact
from transfuse.ir.errors import UnsupportedError
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location
from transfuse.ir.tracing import bind, current_builder, inline

P = PRIMITIVES


def _zeros(aval: Aval) -> Any:
    return lax.full(aval.shape, 0, aval.dtype)


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
    return trace_closed(fn, branch.in_avals + ct_avals, f"{branch.name}_bwd")


def _needed(avals: Sequence[Aval], active: Sequence[bool] | None) -> list[bool]:
    """The float inputs the outer backward pass wants a cotangent for (None: all)."""
    flags = _flags(avals)
    return flags if active is None else [f and a for f, a in zip(flags, active)]


def cond_vjp(cts, ins, outs, *, branches, active=None):
    """A cond that runs the taken branch's backward pass."""
    index, *operands = ins
    ct_flags = [ct is not None for ct in cts]
    op_flags = _needed(branches[0].in_avals, None if active is None else active[1:])
    backward = tuple(_branch_backward(b, ct_flags, op_flags) for b in branches)
    op_cts = iter(bind(P["cond"], index, *operands, *[c for c in cts if c is not None],
                       branches=backward))
    return [None] + [next(op_cts) if f else None for f in op_flags]


# ---------------------------------------------------------------------------------------
# scan


def _residual_sources(halves: vjp.VJPGraphs, ins: Sequence[Any], outs: Sequence[Any],
                      num_consts: int, num_carry: int) -> tuple[dict, dict]:
    """Where the backward loop reads each residual of the body's backward half.

    Returns ({k: value} read once: residuals that are the body's consts, loop invariants;
    {k: stacked value or None}: one slice per step, from the scan's own xs or ys where the
    residual is an x or a y, None where the forward loop must be rerun to stack it)."""
    fwd = halves.forward
    n_out = len(fwd.outputs) - halves.num_residuals
    consts = {v: ins[i] for i, v in enumerate(fwd.inputs[:num_consts])}
    xs = {v: ins[i] for i, v in enumerate(fwd.inputs) if i >= num_consts + num_carry}
    ys = {v: outs[j] for j, v in enumerate(fwd.outputs[:n_out]) if j >= num_carry}
    invariant, per_step = {}, {}
    for k, v in enumerate(fwd.outputs[n_out:]):
        if v in consts:
            invariant[k] = consts[v]
        else:
            per_step[k] = xs.get(v, ys.get(v))
    return invariant, per_step


def _restack(halves: vjp.VJPGraphs, ins: Sequence[Any], wanted: list[int], *, length: int,
             reverse: bool, num_consts: int, num_carry: int) -> list[Any]:
    """The forward loop run again, stacking the wanted residuals as its ys."""
    fwd = halves.forward
    n_out = len(fwd.outputs) - halves.num_residuals
    outputs = fwd.outputs[:num_carry] + [fwd.outputs[n_out + k] for k in wanted]
    body = dce(Graph(fwd.inputs, fwd.nodes, outputs, fwd.consts, name=fwd.name))
    return bind(P["scan"], *ins, body=body, length=length, reverse=reverse,
                num_consts=num_consts, num_carry=num_carry)[num_carry:]


def _ct_positions(wrt: Sequence[bool], num_consts: int, num_carry: int
                  ) -> tuple[list[int], list[int], list[int]]:
    """The body inputs that take a cotangent: (carries, consts, xs)."""
    carry_end = num_consts + num_carry
    return ([i for i in range(num_consts, carry_end) if wrt[i]],
            [i for i in range(num_consts) if wrt[i]],
            [i for i in range(carry_end, len(wrt)) if wrt[i]])


def _backward_body(body: Graph, halves: vjp.VJPGraphs, invariant: list[int],
                   per_step: list[int], num_consts: int, num_carry: int) -> Graph:
    """One step of the backward loop: (invariant residuals; carry cotangent, accumulated
    const cotangents; ys' cotangents, per-step residuals) -> (carry cotangent, accumulated
    const cotangents; xs' cotangents)."""
    wrt, ct_flags = halves.wrt, halves.ct_outputs
    carry_ct, const_ct, xs_ct = _ct_positions(wrt, num_consts, num_carry)
    n_ct_y = sum(ct_flags[num_carry:])
    res_avals = halves.backward.in_avals[sum(ct_flags):]
    sizes = [len(invariant), len(carry_ct), len(const_ct), n_ct_y, len(per_step)]

    def step(*args: Any) -> list[Any]:
        inv, ct_carry, acc, ct_y, res = (args[r.start:r.stop] for r in index_ranges(sizes))
        residuals = dict(zip(invariant, inv)) | dict(zip(per_step, res))
        in_cts = inline(halves.backward, [*ct_carry, *ct_y,
                                          *(residuals[k] for k in range(len(res_avals)))])
        by_input = dict(zip([i for i, w in enumerate(wrt) if w], in_cts))
        return ([by_input[i] for i in carry_ct]
                + [lax.add(a, by_input[i]) for a, i in zip(acc, const_ct)]
                + [by_input[i] for i in xs_ct])

    in_avals = body.in_avals
    ct_y_avals = [a for a, f in zip(body.out_avals[num_carry:], ct_flags[num_carry:]) if f]
    step_avals = ([res_avals[k] for k in invariant] + [in_avals[i] for i in carry_ct]
                  + [in_avals[i] for i in const_ct] + ct_y_avals
                  + [res_avals[k] for k in per_step])
    return trace_closed(step, step_avals, f"{body.name}_bwd")


def scan_vjp(cts, ins, outs, *, body, length, reverse, num_consts, num_carry, active=None):
    """A reverse scan of the body's backward half over its stacked residuals."""
    wrt = _needed(body.in_avals, active)
    # Every float carry takes a cotangent: from the second step on, it may depend on an
    # active const or x even when the initial carry is not active.
    wrt[num_consts:num_consts + num_carry] = _flags(body.in_avals[num_consts:][:num_carry])
    out_flags = _flags(body.out_avals)
    ct_flags = out_flags[:num_carry] + [f and ct is not None for f, ct in
                                        zip(out_flags[num_carry:], cts[num_carry:])]
    halves = vjp.vjp_graph(body, wrt, ct_flags)
    invariant, per_step = _residual_sources(halves, ins, outs, num_consts, num_carry)
    missing = [k for k, value in per_step.items() if value is None]
    if missing:
        per_step.update(zip(missing, _restack(halves, ins, missing, length=length,
                                              reverse=reverse, num_consts=num_consts,
                                              num_carry=num_carry)))
    step = _backward_body(body, halves, list(invariant), list(per_step), num_consts,
                          num_carry)
    in_avals = body.in_avals
    carry_ct, const_ct, xs_ct = _ct_positions(wrt, num_consts, num_carry)
    ct_init = [_zeros(in_avals[i]) if cts[i - num_consts] is None else cts[i - num_consts]
               for i in carry_ct]
    acc_init = [_zeros(in_avals[i]) for i in const_ct]
    ct_ys = [ct for ct, f in zip(cts[num_carry:], ct_flags[num_carry:]) if f]
    found = bind(P["scan"], *invariant.values(), *ct_init, *acc_init, *ct_ys,
                 *per_step.values(), body=step, length=length, reverse=not reverse,
                 num_consts=len(invariant), num_carry=len(carry_ct) + len(const_ct))
    by_input = dict(zip(carry_ct + const_ct + xs_ct, found))
    return [by_input.get(i) for i in range(len(wrt))]


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
