"""Shared fixtures: run a test's function eagerly (the reference interpreter) or under jit.

- the `transform` fixture is parametrised over ["eager", "jit"]: `transform(f)` is f itself
  or `transfuse.jit(f)`; `maybe_jit(f, mode)` does the same for a mode string;
- `pytest --jit` (or TRANSFUSE_TEST_JIT=1) reruns the whole suite with jit wrapped around
  the function under test: tests.helpers.traced compiles instead of interpreting, and
  grad, grad_and_value, jacrev, jacfwd, hessian, vmap and functionalize return jitted
  functions; jvp, vjp and linearize compute their results (and vjp_fn / jvp_fn theirs)
  with jitted functions, and `transfuse.ir.interpret` (as the tests import it) compiles the
  graph it is given (a graph made by jvp_graph, batch_graph, functionalize_graph...) as one
  `call` node of a jitted function instead of interpreting it. Called inside another
  transform's trace they behave as without jit (a jitted function traces through there).
  Every test of the core, autodiff and vmap issues must pass that way too (a test checking
  a fact of the eager runners only branches on tests.helpers.JIT_MODE, saying why).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

# tests/test_cuda_sim.py needs NUMBA_ENABLE_CUDASIM=1 before numba.cuda is imported: it runs in
# a process of its own (tests/test_cuda.py::test_simulator_suite), not in this one, where it
# would only show as skipped.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["test_cuda_sim.py"]
# The disk cache's object code (runtime/native_cache.py) is built by background processes:
# off for the suite (its cache tests inspect Numba's files, and the builds would cost CPU);
# tests/test_native_cache.py turns it on in the processes it starts.
os.environ.setdefault("TRANSFUSE_NATIVE_CACHE", "0")
# The direct back end (runtime/direct.py) takes every kernel it can, as for users; strict:
# a translator error fails the test instead of falling back to Numba unnoticed.
os.environ.setdefault("TRANSFUSE_DIRECT", "strict")

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


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A disk cache of the test's own (its folder), and no kernels remembered from earlier
    tests in this process."""
    from transfuse.runtime import cache as kernel_cache

    monkeypatch.setenv("TRANSFUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TRANSFUSE_DISABLE_CACHE", raising=False)
    kernel_cache.clear_memory_cache()
    yield tmp_path / "cache"
    kernel_cache.clear_memory_cache()


@pytest.fixture(params=JIT_MODES)
def transform(request) -> Callable[[Callable], Callable]:
    """Wraps the function under test: identity ('eager') or transfuse.jit ('jit')."""
    return lambda f: maybe_jit(f, request.param)


@pytest.fixture(scope="session")
def jax64():
    """JAX with float64 enabled (an oracle: the test is skipped where JAX is absent)."""
    import sys

    if "jax" not in sys.modules:  # faster XLA compiles for the many small test programs
        os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def pytest_addoption(parser) -> None:
    parser.addoption("--jit", action="store_true", default=False,
                     help="run the functions under test through transfuse.jit")


# pytest-xdist hands each worker a share of the tests in collection order. A heavy module
# near the end of that order ran alone: in session 11's timeline of a CI run one worker
# finished 250 s before the other, which was compiling expm's kernels (docs/testing.md).
# The heaviest modules (`.ci/run`'s seconds by file) therefore come first, each kept whole
# (its module-scoped fixtures are set up once), and pyproject.toml asks for xdist's
# `worksteal` schedule: a worker that runs out takes half of the other's queue.
HEAVY_FIRST = ("test_expm.py", "test_bench.py", "test_coverage.py", "test_complex.py",
               "test_fuzz.py", "test_linalg.py", "test_cache_reliability.py",
               "test_direct.py", "test_linalg_rewrites.py", "test_control_lowering.py",
               "test_fft.py", "test_cuda.py", "test_reduction_accuracy.py",
               "test_sorting.py", "test_jit_mode.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: k for k, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: else as is


def pytest_configure(config) -> None:
    if config.getoption("--jit") or os.environ.get("TRANSFUSE_TEST_JIT") == "1":
        _jit_everywhere()


def _jit_everywhere() -> None:
    """Route tests.helpers.traced, interpret and the function transforms through jit."""
    import transfuse.ir
    from transfuse.ir import source

    import transfuse
    from tests import helpers

    # The wrappers below are not the user's code: errors name the test's line, not theirs.
    source._SKIP += (os.path.abspath(__file__),)
    helpers.JIT_MODE = True

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
    transfuse.ir.interpret = _compiled_interpret(transfuse.ir.interpret)
    for name in _WRAPPED:
        _replace(transfuse, name, _jitted_transform)
    for name, make in (("jvp", _jitted_jvp), ("vjp", _jitted_vjp),
                       ("linearize", _jitted_linearize)):
        _replace(transfuse, name, make)


def _replace(module: Any, name: str, make: Callable) -> None:
    original = getattr(module, name)
    wrapped = make(original)
    wrapped.__name__ = wrapped.__qualname__ = name
    wrapped.__wrapped__ = original
    setattr(module, name, wrapped)


def _memo(make: Callable) -> Callable:
    """make(*key) once per hashable key, so the same call gives the same jitted function
    (whose signature cache the tests' 'no retrace' checks then see)."""
    made: dict = {}

    def get(*key: Any) -> Any:
        try:
            hash(key)
        except TypeError:
            return make(*key)
        if key not in made:
            made[key] = make(*key)
        return made[key]

    return get


def _jitted_transform(original: Callable) -> Callable:
    """A transform returning transfuse.jit of what the original returns."""
    import transfuse

    jitted = _memo(lambda args, kwargs: transfuse.jit(original(*args, **dict(kwargs))))

    def transform(*args: Any, **kwargs: Any) -> Any:
        return jitted(args, tuple(sorted(kwargs.items())))

    return transform


def _tracing() -> bool:
    """Whether a transform is tracing now (then the wrappers defer to the originals)."""
    from transfuse.ir.tracing import current_builder

    return current_builder() is not None


def _compiled_interpret(original: Callable) -> Callable:
    """interpret(graph, args) computed by jit compiling the graph (as a sub-graph call)."""
    from transfuse.ir.core import Graph
    from transfuse.ir.primitives import PRIMITIVES
    from transfuse.ir.tracing import bind

    import transfuse

    def interpret(graph: Graph, args: Any) -> list:
        if len(args) != len(graph.inputs):
            return original(graph, args)  # the interpreter's own error
        sub = Graph(graph.inputs, graph.nodes, graph.outputs, graph.consts, name=graph.name)
        return list(transfuse.jit(lambda *xs: bind(PRIMITIVES["call"], *xs, graph=sub))(*args))

    return interpret


def _jitted_jvp(original: Callable) -> Callable:
    """jvp whose (output, tangent) come from one jitted function of (primals, tangents)."""
    import transfuse

    jitted = _memo(lambda func, kwargs: transfuse.jit(
        lambda p, t: original(func, p, t, **dict(kwargs))))

    def jvp(func: Callable, primals: Any, tangents: Any, **kwargs: Any) -> tuple:
        if _tracing():
            return original(func, primals, tangents, **kwargs)
        return jitted(func, tuple(sorted(kwargs.items())))(primals, tangents)

    return jvp


def _jitted_vjp(original: Callable) -> Callable:
    """vjp whose forward and vjp_fn are jitted functions of the primals (and cotangents)."""
    import transfuse

    def make_forward(func: Callable, has_aux: bool) -> Callable:
        def forward(*p: Any) -> Any:
            result = original(func, *p, has_aux=has_aux)
            return (result[0], result[2]) if has_aux else result[0]
        return transfuse.jit(forward)

    def make_backward(func: Callable, has_aux: bool) -> Callable:
        return transfuse.jit(lambda p, ct: original(func, *p, has_aux=has_aux)[1](ct))

    forwards, backwards = _memo(make_forward), _memo(make_backward)

    def vjp(func: Callable, *primals: Any, has_aux: bool = False) -> tuple:
        if _tracing():
            return original(func, *primals, has_aux=has_aux)
        from transfuse import random

        drawn_with = dict(random._state)  # the forward's key: the backward draws the same
        results = forwards(func, has_aux)(*primals)
        output, aux = results if has_aux else (results, None)
        backward = backwards(func, has_aux)

        def vjp_fn(cotangents: Any) -> tuple:
            # The backward kernel recomputes the forward: with the forward's key its random
            # draws are the forward's, as eager vjp's are; the global state is left as is.
            now = dict(random._state)
            random._state.update(drawn_with)
            try:
                return backward(primals, cotangents)
            finally:
                random._state.update(now)

        return (output, vjp_fn, aux) if has_aux else (output, vjp_fn)

    return vjp


def _jitted_linearize(original: Callable) -> Callable:
    """linearize whose output and jvp_fn are jitted functions of the primals (and tangents)."""
    import transfuse

    outputs = _memo(lambda func: transfuse.jit(lambda *p: original(func, *p)[0]))
    tangents_of = _memo(lambda func: transfuse.jit(lambda p, t: original(func, *p)[1](*t)))

    def linearize(func: Callable, *primals: Any) -> tuple:
        if _tracing():
            return original(func, *primals)
        output = outputs(func)(*primals)
        tangent = tangents_of(func)

        def jvp_fn(*tangents: Any) -> Any:
            return tangent(primals, tangents)

        return output, jvp_fn

    return linearize


@pytest.fixture(scope="module")
def numba_kernels():
    """Kernels compiled by Numba, not the direct back end, for a module's tests (those
    that look at Numba's cache files): `pytestmark = pytest.mark.usefixtures(...)`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFUSE_DIRECT", "0")
        yield
