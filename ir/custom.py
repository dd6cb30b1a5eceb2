"""User derivative rules and stop_gradient: primitives whose params hold the user's graphs.

- `stop_gradient(x)`: the identity; its derivative is zero (jvp: a zero tangent, vjp: no
  cotangent), so a value computed through it is a constant to every autodiff transform.
- `custom_jvp_call(*operands, fun, jvp, diff, name)`: computes `fun(*operands)`; forward
  mode uses the user's rule `jvp(*operands, *tangents) -> (*outs, *tangent_outs)` (one
  tangent input per operand flagged in `diff`), reverse mode its transpose.
- `custom_vjp_call(*operands, fun, fwd, bwd, jvp, diff, num_res, vmap, name, saved)`:
  computes `fun(*operands)`; reverse mode runs `fwd(*operands) -> (*outs, *residuals)` and
  `bwd(*operands, *residuals, *out_cts) -> (one cotangent per operand flagged in diff)`.
  With `saved=True` (reverse mode's form, compiler/custom_calls.py) the node computes
  `fwd`: its residuals are extra outputs, stored by the forward pass for the backward;
  forward mode uses `jvp` when given (transfuse.Function.jvp), else it is an error, as
  in JAX. `vmap`: None (the sub-graphs are batched) or a callable batching rule
  `vmap(axis_size, operands, dims) -> (outs, out_dims)` (Function.vmap).
Every sub-graph is closed (no captures, no random key) and takes the operands first:
the front end (transfuse/_custom.py) turns values the user's functions capture from the
enclosing trace into trailing operands, which are not flagged in `diff`; those, and the
array leaves of `nondiff_argnums`, are differentiated through `fun` as ordinary code.
Before lowering, jit replaces a custom call by its `fun` (compiler/custom_calls.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .core import Aval, Graph
from .errors import ShapeError
from .primitives import define

CUSTOM_CALLS = ("custom_jvp_call", "custom_vjp_call")


def _stop_gradient_rule(x: Aval) -> Aval:
    return x


define("stop_gradient", _stop_gradient_rule, lambda x: np.array(x, copy=True),
       doc="the identity, with a zero derivative (as jax.lax.stop_gradient)")


def _check(what: str, got: Sequence[Aval], want: Sequence[Aval]) -> None:
    if list(got) != list(want):
        raise ShapeError(f"{what}: {[str(a) for a in got]} where "
                         f"{[str(a) for a in want]} are needed")


def _check_closed(name: str, graph: Graph) -> None:
    if graph.num_captures or graph.has_rng:
        raise ShapeError(f"{name}: a custom rule's graph must be closed (captures are "
                         "operands)")


def tangent_avals(operands: Sequence[Aval], diff: Sequence[bool]) -> list[Aval]:
    """The avals of the tangents (or cotangents) a rule takes: one per flagged operand."""
    return [a for a, d in zip(operands, diff) if d]


def _custom_jvp_rule(*operands: Aval, fun: Graph, jvp: Graph, diff: tuple[bool, ...],
                     name: str) -> list[Aval]:
    _check_closed(name, fun)
    _check(f"{name}: the function's inputs", fun.in_avals, operands)
    if len(diff) != len(operands):
        raise ShapeError(f"{name}: {len(diff)} diff flags for {len(operands)} operands")
    _check_closed(name, jvp)
    _check(f"{name}: the JVP rule's inputs", jvp.in_avals,
           list(operands) + tangent_avals(operands, diff))
    _check(f"{name}: the JVP rule's outputs", jvp.out_avals, fun.out_avals * 2)
    return list(fun.out_avals)


def _run(graph: Graph, args: Sequence) -> list[np.ndarray]:
    from .interpreter import interpret

    return [np.asarray(x) for x in interpret(graph, list(args))]


def _custom_jvp_impl(*operands, fun, jvp, diff, name):
    return _run(fun, operands)


define("custom_jvp_call", _custom_jvp_rule, _custom_jvp_impl, multiple_results=True,
       doc="fun(*operands), differentiated in forward mode by the user's jvp graph "
           "(transposed for reverse mode), as jax.custom_jvp")


def _custom_vjp_rule(*operands: Aval, fun: Graph, fwd: Graph | None, bwd: Graph | None,
                     jvp: Graph | None, diff: tuple[bool, ...], num_res: int, vmap,
                     name: str, saved: bool) -> list[Aval]:
    _check_closed(name, fun)
    _check(f"{name}: the function's inputs", fun.in_avals, operands)
    if len(diff) != len(operands):
        raise ShapeError(f"{name}: {len(diff)} diff flags for {len(operands)} operands")
    outs = fun.out_avals
    if fwd is not None:
        _check_closed(name, fwd)
        _check(f"{name}: the forward rule's inputs", fwd.in_avals, operands)
        _check(f"{name}: the forward rule's outputs", fwd.out_avals[:len(outs)], outs)
        if len(fwd.out_avals) != len(outs) + num_res:
            raise ShapeError(f"{name}: the forward rule gives {len(fwd.out_avals)} values "
                             f"for {len(outs)} outputs and {num_res} residuals")
    if bwd is not None:
        _check_closed(name, bwd)
        res = fwd.out_avals[len(outs):]
        _check(f"{name}: the backward rule's inputs", bwd.in_avals,
               list(operands) + list(res) + list(outs))
        _check(f"{name}: the backward rule's outputs", bwd.out_avals,
               tangent_avals(operands, diff))
    if jvp is not None:
        _check_closed(name, jvp)
        _check(f"{name}: the JVP rule's inputs", jvp.in_avals,
               list(operands) + tangent_avals(operands, diff))
        _check(f"{name}: the JVP rule's outputs", jvp.out_avals, outs * 2)
    return list(fwd.out_avals) if saved else list(outs)


def _custom_vjp_impl(*operands, fun, fwd, bwd, jvp, diff, num_res, vmap, name, saved):
    return _run(fwd if saved else fun, operands)


define("custom_vjp_call", _custom_vjp_rule, _custom_vjp_impl, multiple_results=True,
       doc="fun(*operands), differentiated in reverse mode by the user's fwd and bwd "
           "graphs, as jax.custom_vjp (and transfuse.Function)")
