"""What the minifier checks: a compiler's outputs against the reference interpreter's.

A compiler is called as everywhere in transfuse.compile, `compiler(graph, example_avals)`,
and returns a callable of the graph's inputs. `failure(compiler, graph, inputs)` says how
it fails (raises, or an output differs beyond a dtype-aware tolerance) or None;
`fails_like(compiler, first)` is the predicate the minifier shrinks with: the same kind of
failure as `first`, so the search does not wander off onto another bug.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transfuse.ir.core import Graph, subgraphs
from transfuse.ir.interpreter import interpret

from .compilers import jit_compile

Compiler = Callable[[Graph, list], Callable]

# (rtol, atol) by dtype kind and size: loose enough for a reordered sum, tight enough that
# one wrong primitive shows.
_TOLERANCE = {np.dtype("float32"): (2e-4, 1e-5), np.dtype("complex64"): (2e-4, 1e-5),
              np.dtype("float64"): (1e-9, 1e-12), np.dtype("complex128"): (1e-9, 1e-12)}
_SINGLE = (np.dtype("float32"), np.dtype("complex64"))


# The Numba backend on a graph (jit of a function replaying its nodes), as aot_function uses.
jit_graph_compiler = jit_compile


def failure(compiler: Compiler, graph: Graph, inputs: Sequence[Any]) -> str | None:
    """How the compiled graph fails on inputs: 'raises T: ...', 'output i ...', or None."""
    # Each side gets its own copies: a program may write into its inputs.
    expected = interpret(graph, _copies(inputs))
    try:
        compiled = compiler(graph, _copies(inputs))
        got = compiled(*_copies(inputs))
    except Exception as error:  # a compiler raising is a failure to minify
        return f"raises {type(error).__name__}: {error}"
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    if len(got) != len(expected):
        return f"returns {len(got)} outputs, the interpreter {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        why = mismatch(np.asarray(g), np.asarray(e), single_precision(graph))
        if why is not None:
            return f"output {i}: {why}"
    return None


def _copies(inputs: Sequence[Any]) -> list[np.ndarray]:
    return [np.array(x, copy=True) for x in inputs]


def single_precision(graph: Graph) -> bool:
    """Whether the graph computes anything in float32 or complex64 (then a float64 output
    holds float32 roundings: NumPy's and Numba's may differ by an ulp)."""
    return any(v.aval.dtype in _SINGLE for v in _all_vars(graph))


def _all_vars(graph: Graph):
    yield from graph.inputs
    for node in graph.nodes:
        yield from node.outputs
        for sub in subgraphs(node):
            yield from _all_vars(sub)


def mismatch(got: np.ndarray, expected: np.ndarray, single: bool = False) -> str | None:
    """Why got is not expected (shape, dtype, values beyond the dtype's tolerance, float32's
    when `single`), or None."""
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return f"got {got.dtype}{list(got.shape)}, expected {expected.dtype}{list(expected.shape)}"
    rtol, atol = _TOLERANCE.get(expected.dtype, (0.0, 0.0))
    if single and expected.dtype.kind in "fc":
        rtol, atol = max(rtol, _TOLERANCE[np.dtype("float32")][0]), max(atol, 1e-5)
    if np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True):
        return None
    if expected.dtype.kind in "fc":
        err = np.abs(got.astype(np.complex128) - expected.astype(np.complex128))
        worst = int(np.nanargmax(np.where(np.isnan(err), np.inf, err)))
        return (f"values differ (rtol={rtol}, atol={atol}): at flat index {worst} got "
                f"{got.ravel()[worst]!r}, expected {expected.ravel()[worst]!r}")
    differ = int(np.argmax(got.ravel() != expected.ravel()))
    return (f"values differ: at flat index {differ} got {got.ravel()[differ]!r}, "
            f"expected {expected.ravel()[differ]!r}")


def kind_of(why: str) -> str:
    """The kind of a failure: the exception's class, or 'mismatch'."""
    return why.split(":")[0] if why.startswith("raises ") else "mismatch"


def fails_like(compiler: Compiler, first: str) -> Callable[[Graph, list], bool]:
    """The minifier's predicate: the compiled graph fails as `first` did."""
    kind = kind_of(first)

    def fails(graph: Graph, inputs: list) -> bool:
        why = failure(compiler, graph, inputs)
        return why is not None and kind_of(why) == kind

    return fails


__all__ = ["jit_graph_compiler", "failure", "mismatch", "fails_like", "kind_of"]
