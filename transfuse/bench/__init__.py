"""transfuse.bench: the benchmark harness behind `transfuse bench`, and its user API.

Register your own cases in a Python file and run `transfuse bench my_cases.py`::

    import numpy as np
    from transfuse import bench

    @bench.case(setup=lambda: (np.random.default_rng(0).standard_normal(1_000_000),))
    def chain(x):
        return np.tanh(x) * np.exp(-x * x)

    @chain.baseline("numba")          # optional: more columns to compare with
    def chain_numba(x):
        ...

Each case is run as `transfuse.jit(f)` (the "transfuse" column) and as `f` called eagerly
(the "eager" column, also the reference every result is checked against). See docs/bench.md.
"""

from __future__ import annotations

import runpy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .core import Absent, Case, Runner, Skipped, Unavailable, numpy_system

__all__ = ["case", "UserCase", "load_cases", "Case", "Runner", "Absent", "Unavailable",
           "Skipped"]

_registered: list[UserCase] = []


class UserCase:
    """A function registered with @case; calling it calls the function."""

    def __init__(self, fn: Callable, args: tuple, setup: Callable[[], tuple] | None,
                 name: str | None, description: str | None, rtol: float, atol: float,
                 static_argnums: int | Sequence[int]) -> None:
        self.fn, self.args, self.setup = fn, args, setup
        self.name = name or fn.__name__
        self.description = description or (fn.__doc__ or "").strip().split("\n")[0]
        self.rtol, self.atol, self.static_argnums = rtol, atol, static_argnums
        self.baselines: dict[str, Callable] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def baseline(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: another implementation to time and check, shown in column `name`."""

        def register(fn: Callable) -> Callable:
            self.baselines[name] = fn
            return fn

        return register

    def inputs(self) -> tuple:
        """The arguments the case is run with."""
        return tuple(self.setup()) if self.setup is not None else self.args

    def to_case(self, suite: str) -> Case:
        """The harness's Case: jit(f) against f run eagerly, plus registered baselines."""
        fn = self.fn
        systems = {"eager": numpy_system(fn)}
        systems.update({name: numpy_system(b) for name, b in self.baselines.items()})
        return Case(suite=suite, name=self.name, description=self.description,
                    setup=self.inputs, transform=lambda tx: fn, baselines=systems,
                    jit_kwargs={"static_argnums": self.static_argnums},
                    rtol=self.rtol, atol=self.atol, reference_label="eager")


def case(*args: Any, setup: Callable[[], tuple] | None = None, name: str | None = None,
         description: str | None = None, rtol: float = 1e-3, atol: float = 1e-6,
         static_argnums: int | Sequence[int] = ()) -> Callable[[Callable], UserCase]:
    """Register a benchmark case: @case(*args) or @case(setup=fn returning the args).

    rtol/atol bound the disagreement allowed between systems: |result - reference| <=
    atol + rtol * max|reference|, leaf by leaf. static_argnums is passed to transfuse.jit.
    """
    if args and setup is not None:
        raise TypeError("bench.case: give the arguments or a setup function, not both")

    def register(fn: Callable) -> UserCase:
        user_case = UserCase(fn, args, setup, name, description, rtol, atol, static_argnums)
        _registered.append(user_case)
        return user_case

    return register


def load_cases(path: str | Path) -> list[Case]:
    """Run a user's file and return the cases it registers with @case."""
    path = Path(path)
    start = len(_registered)
    runpy.run_path(str(path), run_name="__transfuse_bench__")
    found = _registered[start:]
    del _registered[start:]
    return [c.to_case(path.stem) for c in found]
