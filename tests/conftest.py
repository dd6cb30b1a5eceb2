"""Shared fixtures: run a test's function eagerly (the reference interpreter) or under jit.

- the `transform` fixture is parametrised over ["eager", "jit"]: `transform(f)` is f itself
  or `transfuse.jit(f)`; `maybe_jit(f, mode)` does the same for a mode string;
- `pytest --jit` (or TRANSFUSE_TEST_JIT=1) reruns the whole suite with jit wrapped around
  the function under test: tests.helpers.traced compiles instead of interpreting, and
  grad, grad_and_value, jacrev, jacfwd, hessian, vmap and functionalize return jitted
  functions. Every test of the core, autodiff and vmap issues must pass that way too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

JIT_MODES = ["eager", "jit"]
_JIT_RTOL = 2e-5  # float32 agreement to rounding (about a hundred ulps at worst)
_WRAPPED = ("grad", "grad_and_value", "jacrev", "jacfwd", "hessian", "vmap", "functionalize")


def maybe_jit(f: Callable, mode: str) -> Callable:
    """f itself for 'eager', transfuse.jit(f) for 'jit'."""
    if mode == "eager":
        return f
    if mode == "jit":
        import transfuse

        return transfuse.jit(f)
    raise ValueError(f"unknown mode {mode!r}; expected one of {JIT_MODES}")


@pytest.fixture(params=JIT_MODES)
def transform(request) -> Callable[[Callable], Callable]:
    """Wraps the function under test: identity ('eager') or transfuse.jit ('jit')."""
    return lambda f: maybe_jit(f, request.param)


def pytest_addoption(parser) -> None:
    parser.addoption("--jit", action="store_true", default=False,
                     help="run the functions under test through transfuse.jit")


def pytest_configure(config) -> None:
    if config.getoption("--jit") or os.environ.get("TRANSFUSE_TEST_JIT") == "1":
        _jit_everywhere()


def _jit_everywhere() -> None:
    """Route tests.helpers.traced and the function transforms through jit."""
    import transfuse
    from tests import helpers

    def traced_with_jit(f: Callable, *args: Any) -> Any:
        return transfuse.jit(f)(*args)

    helpers.traced = traced_with_jit
    exact_compare = helpers.assert_same

    def assert_close(actual: Any, expected: Any, *, exact: bool = True, rtol: float = 1e-6
                     ) -> None:
        # Compiled code rounds differently (polynomial math, reassociated sums): floats
        # agree to rounding, not to the bit; integers and booleans stay exact.
        exact_compare(actual, expected, exact=False, rtol=max(rtol, _JIT_RTOL))

    helpers.assert_same = assert_close
    for name in _WRAPPED:
        original = getattr(transfuse, name)
        made: dict = {}  # tx.grad(f) twice gives the same jitted function, as caches expect

        def wrapped(*args: Any, _original=original, _made=made, **kwargs: Any) -> Any:
            try:
                key = (args, tuple(sorted(kwargs.items())))
                hash(key)
            except TypeError:
                return transfuse.jit(_original(*args, **kwargs))
            if key not in _made:
                _made[key] = transfuse.jit(_original(*args, **kwargs))
            return _made[key]

        wrapped.__name__ = wrapped.__qualname__ = name
        wrapped.__wrapped__ = original
        setattr(transfuse, name, wrapped)
