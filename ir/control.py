"""Structured control flow: primitives whose params hold the sub-graphs they run.

As in JAX's `lax`, a loop or a branch is one node, not an unrolled copy per step:
- `cond(index, *operands, branches)`: runs `branches[index]` (index clamped to the valid
  range, as `lax.switch` does) on the operands; every branch has the operands' avals as
  inputs and the same output avals.
- `while_loop(*cond_consts, *body_consts, *init, cond_graph, body_graph, cond_nconsts,
  body_nconsts)`: `carry = init; while cond_graph(*cond_consts, *carry): carry =
  body_graph(*body_consts, *carry)`; returns the final carry.
- `scan(*consts, *init, *xs, body, length, reverse, num_consts, num_carry)`: for each
  step i (from the end when `reverse`), `carry, y = body(*consts, *carry, *xs[i])`; returns
  the final carry, then the ys stacked along a new leading axis of `length`.
Sub-graphs are pure and closed (no captures, no random key): the front end
(transfuse/_control.py) turns values a body captures into leading const operands.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .core import Aval, Graph
from .errors import DTypeError, ShapeError
from .primitives import define


def _check_inputs(what: str, graph: Graph, avals: Sequence[Aval]) -> None:
    if list(graph.in_avals) != list(avals):
        raise ShapeError(f"{what}: its inputs are {[str(a) for a in graph.in_avals]}, "
                         f"but it is given {[str(a) for a in avals]}")


def _check_closed(what: str, graph: Graph) -> None:
    if graph.num_captures or graph.has_rng:
        raise ShapeError(f"{what}: a control-flow body must be a closed graph "
                         "(captures and random keys are passed as operands)")


def _run(graph: Graph, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    from .interpreter import interpret

    return [np.asarray(x) for x in interpret(graph, list(args))]


# ---------------------------------------------------------------------------------------
# cond: one of several branches


def _cond_rule(index: Aval, *operands: Aval, branches: tuple[Graph, ...]) -> list[Aval]:
    if index.shape != () or index.dtype.kind not in "iu":
        raise DTypeError(f"cond: the branch index must be a 0-d integer, got {index}")
    if not branches:
        raise ShapeError("cond: no branches")
    for k, branch in enumerate(branches):
        _check_closed(f"cond branch {k}", branch)
        _check_inputs(f"cond branch {k}", branch, operands)
        if branch.out_avals != branches[0].out_avals:
            raise ShapeError(
                f"cond: branch {k} returns {[str(a) for a in branch.out_avals]}, branch 0 "
                f"{[str(a) for a in branches[0].out_avals]}")
    return list(branches[0].out_avals)


def clamp_index(index: int, num_branches: int) -> int:
    """lax.switch's rule: an index below 0 runs the first branch, above the last the last."""
    return min(max(int(index), 0), num_branches - 1)


def _own(outs: list, inputs: Sequence) -> list:
    """Outputs that are not the inputs themselves: control flow returns new values, as
    JAX's does (an identity branch or a loop of no trips would otherwise hand back its
    input, and an in-place update of the result would change the caller's array)."""
    given = {id(x) for x in inputs}
    return [np.array(o, copy=True) if id(o) in given else o for o in outs]


def _cond_impl(index, *operands, branches):
    return _own(_run(branches[clamp_index(index, len(branches))], operands), operands)


define("cond", _cond_rule, _cond_impl, multiple_results=True,
       doc="run branches[index] (index clamped) on the operands")

# ---------------------------------------------------------------------------------------
# while_loop: a data-dependent number of steps


def _while_rule(*args: Aval, cond_graph: Graph, body_graph: Graph, cond_nconsts: int,
                body_nconsts: int) -> list[Aval]:
    cond_consts = args[:cond_nconsts]
    body_consts = args[cond_nconsts:cond_nconsts + body_nconsts]
    carry = list(args[cond_nconsts + body_nconsts:])
    _check_closed("while_loop cond", cond_graph)
    _check_closed("while_loop body", body_graph)
    _check_inputs("while_loop cond", cond_graph, [*cond_consts, *carry])
    _check_inputs("while_loop body", body_graph, [*body_consts, *carry])
    if cond_graph.out_avals != [Aval((), np.bool_)]:
        raise DTypeError("while_loop: cond_fun must return a 0-d bool, got "
                         f"{[str(a) for a in cond_graph.out_avals]}")
    if body_graph.out_avals != carry:
        raise ShapeError(f"while_loop: body_fun returns {[str(a) for a in body_graph.out_avals]}"
                         f" for a carry of {[str(a) for a in carry]}")
    return carry


def _while_impl(*args, cond_graph, body_graph, cond_nconsts, body_nconsts):
    cond_consts = list(args[:cond_nconsts])
    body_consts = list(args[cond_nconsts:cond_nconsts + body_nconsts])
    carry = [np.asarray(x) for x in args[cond_nconsts + body_nconsts:]]
    while bool(_run(cond_graph, cond_consts + carry)[0]):
        carry = _run(body_graph, body_consts + carry)
    return _own(carry, args)


define("while_loop", _while_rule, _while_impl, multiple_results=True,
       doc="carry = body(carry) while cond(carry)")

# ---------------------------------------------------------------------------------------
# scan: a loop over the leading axis of the xs, carrying state and stacking outputs


def scan_parts(args: Sequence, num_consts: int, num_carry: int) -> tuple[list, list, list]:
    """(consts, init, xs) of a scan node's operands."""
    return (list(args[:num_consts]), list(args[num_consts:num_consts + num_carry]),
            list(args[num_consts + num_carry:]))


def _scan_rule(*args: Aval, body: Graph, length: int, reverse: bool, num_consts: int,
               num_carry: int) -> list[Aval]:
    consts, init, xs = scan_parts(args, num_consts, num_carry)
    _check_closed("scan body", body)
    if length < 0:
        raise ShapeError(f"scan: length {length} < 0")
    for x in xs:
        if x.ndim == 0 or x.shape[0] != length:
            raise ShapeError(f"scan: every xs must have a leading axis of length {length}, "
                             f"got {x}")
    _check_inputs("scan body", body, [*consts, *init, *(x.update(shape=x.shape[1:])
                                                        for x in xs)])
    outs = body.out_avals
    if outs[:num_carry] != init:
        raise ShapeError(f"scan: the body returns the carry {[str(a) for a in outs[:num_carry]]}"
                         f" for a carry of {[str(a) for a in init]}")
    return list(init) + [y.update(shape=(length, *y.shape)) for y in outs[num_carry:]]


def _scan_impl(*args, body, length, reverse, num_consts, num_carry):
    consts, carry, xs = scan_parts(args, num_consts, num_carry)
    carry = [np.asarray(c) for c in carry]
    ys = [np.empty((length, *a.shape), a.dtype) for a in body.out_avals[num_carry:]]
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for i in steps:
        outs = _run(body, consts + carry + [np.asarray(x)[i] for x in xs])
        carry = outs[:num_carry]
        for y, out in zip(ys, outs[num_carry:]):
            y[i] = out
    return _own(carry, args) + ys


define("scan", _scan_rule, _scan_impl, multiple_results=True,
       doc="carry, y = body(consts, carry, xs[i]) for each i; the ys stacked")

CONTROL_FLOW = frozenset({"cond", "while_loop", "scan"})
