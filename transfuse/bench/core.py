"""The pieces a benchmark case is made of: cases, runners, and why a system did not run."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

# The columns of the table, in this order; cases may add others after them.
SYSTEMS = ("transfuse", "eager", "numpy", "numba", "jax", "torch", "torch.compile")
BASELINE_FAMILIES = ("numpy", "numba", "jax", "torch", "torch.compile")


class Absent(Exception):
    """An optional baseline's library is not installed: reported, never a failure."""


class Unavailable(Exception):
    """A system cannot run this case yet (a transform not implemented, a skipped compile)."""


class Skipped(Exception):
    """A system deliberately not run in this mode (e.g. torch.compile under --quick)."""


# ---------------------------------------------------------------------------------------
# Converting results


def to_numpy(tree: Any) -> Any:
    """Convert a pytree of arrays (NumPy, JAX, torch, Numba device) into NumPy arrays."""
    if isinstance(tree, (tuple, list)):
        return type(tree)(to_numpy(t) for t in tree)
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    if tree is None:
        return None
    if hasattr(tree, "detach"):  # torch tensors
        return tree.detach().cpu().numpy()
    if hasattr(tree, "copy_to_host"):  # Numba CUDA device arrays
        return tree.copy_to_host()
    return np.asarray(tree)


@dataclass
class Runner:
    """A prepared system: `call()` is what is timed, `fetch` turns its result into NumPy.

    A runner that times itself (compile latency in fresh processes) sets `measure`:
    measure(repeat) -> (per-call seconds for each sample, result).
    """

    call: Callable[[], Any] | None = None
    fetch: Callable[[Any], Any] = to_numpy
    measure: Callable[[int], tuple[list[float], Any]] | None = None


# Given the case's NumPy inputs, prepare a system (convert inputs, build compiled functions).
SystemFactory = Callable[[tuple], Runner]


@dataclass
class Case:
    """One workload at fixed shapes, run by transfuse and by each baseline.

    `transform(tx)` returns the transfuse function WITHOUT jit: called on the inputs it is the
    reference every system is checked against; `tx.jit` of it is the "transfuse" column.
    `plain=True` marks a function with no transform in it: its reference is traced and run on
    transfuse's reference interpreter rather than called as plain NumPy.
    """

    suite: str
    name: str
    description: str
    setup: Callable[[], tuple]
    transform: Callable[[ModuleType], Callable] | None = None
    baselines: dict[str, SystemFactory] = field(default_factory=dict)
    plain: bool = False
    jit_kwargs: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # public transfuse names the transform uses
    rtol: float = 1e-3
    atol: float = 1e-6
    transfuse_system: SystemFactory | None = None  # overrides the jit column (compile suite)
    reference_label: str = "transfuse-interpreter"  # what the reference is, for reports

    @property
    def full_name(self) -> str:
        return f"{self.suite}/{self.name}"


# ---------------------------------------------------------------------------------------
# Optional libraries


def import_transfuse(needs: Sequence[str] = ()) -> ModuleType:
    """transfuse, or Unavailable naming the public names that have not landed yet."""
    import transfuse as tx
    missing = [n for n in needs if not hasattr(tx, n)]
    if missing:
        names = ", ".join(f"transfuse.{n}" for n in missing)
        raise Unavailable(f"{names} not implemented yet")
    return tx


def import_optional(module: str) -> ModuleType:
    """Import an optional baseline library, or raise Absent."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Absent(f"{module} is not installed ({exc})") from None


def import_jax() -> tuple[ModuleType, ModuleType]:
    """(jax, jax.numpy) with float64 enabled, or Absent.

    x64 is needed by the float64 Hessian case; it changes JAX's *default* dtype, so every
    JAX baseline passes explicit dtypes (inputs come in as typed NumPy arrays).
    """
    jax = import_optional("jax")
    jax.config.update("jax_enable_x64", True)
    return jax, importlib.import_module("jax.numpy")


def import_torch() -> ModuleType:
    """torch, or Absent."""
    return import_optional("torch")


def import_numba() -> ModuleType:
    """numba (a dependency of transfuse, so normally present)."""
    return import_optional("numba")


# ---------------------------------------------------------------------------------------
# Baseline factory helpers


def jax_system(build: Callable[[ModuleType, ModuleType], Callable]) -> SystemFactory:
    """A JAX baseline: build(jax, jnp) returns the jitted function of the NumPy inputs."""

    def factory(inputs: tuple) -> Runner:
        jax, jnp = import_jax()
        fn = build(jax, jnp)
        args = jax.tree_util.tree_map(jnp.asarray, inputs)
        return Runner(call=lambda: jax.block_until_ready(fn(*args)))

    return factory


def torch_system(build: Callable[[ModuleType], Callable], *, compiled: bool = False
                 ) -> SystemFactory:
    """A torch baseline (torch.func eager; with compiled=True, torch.compile of it)."""

    def factory(inputs: tuple) -> Runner:
        torch = import_torch()
        fn = build(torch)
        if compiled:
            fn = _torch_compile(torch, fn)
        args = _tree_map(torch.from_numpy, inputs)

        def call() -> Any:
            with torch.no_grad():
                return fn(*args)

        return Runner(call=call)

    return factory


def _torch_compile(torch: ModuleType, fn: Callable) -> Callable:
    if not hasattr(torch, "compile"):
        raise Unavailable("this torch has no torch.compile")
    return torch.compile(fn)


def _tree_map(fn: Callable, tree: Any) -> Any:
    if isinstance(tree, (tuple, list)):
        return type(tree)(_tree_map(fn, t) for t in tree)
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        return fn(tree)
    return tree


def numpy_system(fn: Callable) -> SystemFactory:
    """A NumPy (or any eager, NumPy-in NumPy-out) baseline: fn(*inputs)."""
    return lambda inputs: Runner(call=lambda: fn(*inputs))


def numba_system(build: Callable[[ModuleType], Callable]) -> SystemFactory:
    """A hand-written Numba baseline: build(numba) returns a function of the NumPy inputs."""

    def factory(inputs: tuple) -> Runner:
        fn = build(import_numba())
        return Runner(call=lambda: fn(*inputs))

    return factory
