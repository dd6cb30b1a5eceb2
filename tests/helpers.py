"""Shared test helpers: run a function traced (graph + reference interpreter) and eagerly."""

from __future__ import annotations

from typing import Any

import numpy as np
from transfuse.ir import interpret, verify

import transfuse as tx

# True under `pytest --jit` (tests/conftest.py): the transforms and `traced` compile. A test
# checking a fact that only holds for the eager runners branches on it, saying why.
JIT_MODE = False


def traced(f, *args: Any) -> Any:
    """f(*args) computed by tracing to a graph and running the reference interpreter."""
    graph = tx.make_graph(f)(*args)
    verify(graph)
    leaves = tx.tree_leaves(args)
    dyn = [np.asarray(x) for x in leaves if isinstance(x, (np.ndarray, np.generic))]
    outs = interpret(graph, dyn + [None] * (len(graph.inputs) - len(dyn)))
    return tx.tree_unflatten(graph.out_tree, outs)


def assert_same(actual: Any, expected: Any, *, exact: bool = True, rtol: float = 1e-6) -> None:
    """Same pytree, shapes, dtypes and values (NaNs in the same places)."""
    a_leaves, a_tree = tx.tree_flatten(actual)
    e_leaves, e_tree = tx.tree_flatten(expected)
    assert a_tree == e_tree, (a_tree, e_tree)
    for a, e in zip(a_leaves, e_leaves):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, (a.shape, e.shape)
        assert a.dtype == e.dtype, (a.dtype, e.dtype)
        if exact or a.dtype.kind in "biu":
            np.testing.assert_array_equal(a, e)
        else:
            np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol)


def rand(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Seeded random values of a dtype: normals for floats, small ints, random bools."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(-5, 6, size=shape).astype(dtype)
