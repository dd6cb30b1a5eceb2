"""Checkpointing (rematerialization), as JAX's `checkpoint`/`remat`: two primitives.

- `remat(*args, graph, policy, prevent_cse, num_saved)`: the closed, pure sub-graph
  `graph` applied to args. Forward, JVP and vmap treat it as a call; reverse mode
  (compiler/vjp.py) keeps only its inputs as residuals, plus the values `policy` saves, and
  recomputes the rest of the body inside the backward graph. `num_saved`: how many trailing
  outputs of `graph` are such saved intermediates (compiler/remat.py adds them just before
  reverse mode; 0 on the node the user's `checkpoint` makes).
- `optimization_barrier(x, after)`: x itself, as a new value that exists only once the 0-d
  value `after` does. Reverse mode puts one on each input of a recomputation
  (`prevent_cse=True`), with `after` taken from the node's output cotangent: common-
  subexpression elimination cannot merge the recomputation back into the forward pass,
  and no scheduling or fusion can move it there (where its values would be stored from
  the forward pass on, as without the checkpoint). Fusion leaves it a node of its own and
  the backends lower it as an alias of x (a view): no copy, only the order.
"""

from __future__ import annotations

import numpy as np

from .core import Aval, Graph
from .errors import ShapeError, TransfuseValueError
from .primitives import define

# The policies of transfuse.checkpoint_policies, by name (compiler/remat.py says what each
# saves); a node holds the name, so graphs stay comparable and picklable.
POLICIES = ("nothing_saveable", "everything_saveable", "dots_saveable",
            "dots_with_no_batch_dims_saveable")


def _remat_rule(*args: Aval, graph: Graph, policy: str, prevent_cse: bool,
                num_saved: int) -> list[Aval]:
    if list(args) != graph.in_avals:
        raise ShapeError(f"remat: argument avals {[str(a) for a in args]} do not match the "
                         f"body's inputs {[str(a) for a in graph.in_avals]}")
    if graph.num_captures or graph.has_rng:
        raise ShapeError("remat: the body must be a closed graph (captures and the random "
                         "key are passed as arguments)")
    if policy not in POLICIES:
        raise TransfuseValueError(f"remat: unknown policy {policy!r}; one of {POLICIES}")
    if not 0 <= num_saved <= len(graph.outputs):
        raise ShapeError(f"remat: num_saved={num_saved} for a body of "
                         f"{len(graph.outputs)} outputs")
    return graph.out_avals


def _remat_impl(*args, graph: Graph, policy: str, prevent_cse: bool, num_saved: int):
    from .interpreter import interpret

    return interpret(graph, args)


define("remat", _remat_rule, _remat_impl, multiple_results=True,
       doc="apply a sub-graph whose intermediates reverse mode recomputes (checkpoint)")


def _barrier_rule(x: Aval, after: Aval) -> Aval:
    if after.shape:
        raise ShapeError(f"optimization_barrier: `after` must be 0-d, got shape {after.shape}")
    return x


def _barrier_impl(x, after):
    return np.array(x, copy=True)


define("optimization_barrier", _barrier_rule, _barrier_impl,
       doc="x, as a value made after the 0-d `after` and opaque to simplification (keeps a "
           "recomputation from CSE and in the backward pass)")
