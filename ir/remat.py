"""Checkpointing (rematerialization), as JAX's `checkpoint`/`remat`: two primitives.

- `remat(*args, graph, policy, prevent_cse, num_saved)`: the closed, pure sub-graph
  `graph` applied to args. Forward, JVP and vmap treat it as a call; reverse mode
  (compiler/vjp.py) keeps only its inputs as residuals, plus the values `policy` saves, and
  recomputes the rest of the body inside the backward graph. `num_saved`: how many trailing
  outputs of `graph` are such saved intermediates (compiler/remat.py adds them just before
  reverse mode; 0 on the node the user's `checkpoint` makes).
- `optimization_barrier(x)`: x itself, as a value no simplification looks through. Reverse
  mode puts one on each input of a recomputation (`prevent_cse=True`), so common-
  subexpression elimination cannot merge the recomputation back into the forward pass;
  jit removes the barriers after its simplification, before fusion.
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


def _barrier_impl(x):
    return np.array(x, copy=True)


define("optimization_barrier", lambda x: x, _barrier_impl,
       doc="the identity, opaque to simplification (keeps a recomputation from CSE)")
