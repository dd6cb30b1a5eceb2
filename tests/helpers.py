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
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(-5, 6, size=shape).astype(dtype)


# Compiled against interpreted: float32 to rounding (about a hundred ulps at worst), float64
# to a few ulps of accumulated rounding; integers and bools exactly.
COMPILED_TOL = {"float32": 2e-5, "float64": 1e-12, "complex64": 2e-5, "complex128": 1e-12}


def host(x: Any) -> np.ndarray:
    """A NumPy array of x (a CUDA device array is copied to the host)."""
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.asarray(x)


def assert_compiled_matches(actual: Any, expected: Any) -> None:
    """Same pytree, shapes and dtypes; values within COMPILED_TOL (exact for ints/bools)."""
    a_leaves, a_tree = tx.tree_flatten(actual)
    e_leaves, e_tree = tx.tree_flatten(expected)
    assert a_tree == e_tree, (a_tree, e_tree)
    for i, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        a, e = host(a), np.asarray(e)
        assert (a.shape, a.dtype) == (e.shape, e.dtype), (i, a.shape, a.dtype, e.shape, e.dtype)
        if a.dtype.kind in "biu":
            np.testing.assert_array_equal(a, e, err_msg=f"output {i}")
        else:
            tol = COMPILED_TOL[a.dtype.name]
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol, err_msg=f"output {i}")


def primitives_of(graph: Any) -> set[str]:
    """The primitives of a (fused) graph, looking inside fused regions."""
    from transfuse.compiler.fusion import FUSED

    names = set()
    for node in graph.nodes:
        if node.prim is FUSED:
            names |= primitives_of(node.params["graph"])
        else:
            names.add(node.prim.name)
    return names


def run_json_script(script: Any, cache_dir: Any, *argv: str, **env: str) -> dict:
    """Run a Python script in a new process with its own kernel cache (and env's
    variables); the JSON object its last line prints."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    full_env = dict(os.environ, TRANSFUSE_CACHE_DIR=str(cache_dir), **env,
                    PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.pop("TRANSFUSE_DISABLE_CACHE", None)
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True,
                          text=True, env=full_env, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def jit_result_with(variable: str, value: str, f: Any, *args: Any) -> Any:
    """f's jit result (cache=False) with the environment variable set to value for the
    compile and the call, then as it was (TRANSFUSE_DIRECT=0: through Numba;
    TRANSFUSE_NATIVE_POOL=0: parallel steps on Python's pool)."""
    import os

    old = os.environ.get(variable)
    os.environ[variable] = value
    try:
        return tx.jit(f, cache=False)(*args)
    finally:
        if old is None:
            del os.environ[variable]
        else:
            os.environ[variable] = old
