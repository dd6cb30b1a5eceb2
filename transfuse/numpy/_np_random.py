"""`np.random` inside a traced function: recorded as random draws, never frozen constants.

NumPy has no dispatch hook for `np.random.normal(size=3)` (no array argument), so while a
trace runs, the module's functions are replaced by ones that record transfuse's random
primitives (transfuse/numpy/random.py); `np.random.default_rng(seed)` made inside the
function gives a generator that records them too. Outside a trace (and on other threads)
the replacements call NumPy's own functions.

A NumPy generator made *outside* the function (a global `RandomState`/`Generator`, or
`from numpy.random import normal`, bound to the global one) cannot be intercepted: its
draw would run once while tracing and become a constant. Its state is compared before and
after the trace, so such a draw is an error naming the line (found by re-running the
function under a line tracer), and the generator's state is restored.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from transfuse.ir.errors import UnsupportedError
from transfuse.ir.source import SourceInfo, _is_library, with_location
from transfuse.ir.tracing import TRACE_SCOPES

from . import random as tnp_random
from ._core import any_traced, unsupported
from ._patches import on_tracing_thread, outermost_trace, replace_while_tracing

# np.random's functions that record draws while tracing: name -> transfuse's sampler.
TRACED: dict[str, Callable] = {
    "normal": tnp_random.normal,
    "standard_normal": tnp_random.standard_normal,
    "uniform": tnp_random.uniform,
    "random": tnp_random.random,
    "random_sample": tnp_random.random_sample,
    "ranf": tnp_random.random_sample,
    "sample": tnp_random.random_sample,
    "rand": tnp_random.rand,
    "randn": tnp_random.randn,
    "randint": tnp_random.randint,
    "choice": tnp_random.choice,
    "exponential": tnp_random.exponential,
    "standard_exponential": tnp_random.standard_exponential,
}
_STATEFUL = {"seed", "get_state", "set_state"}
_GENERATORS = (np.random.Generator, np.random.RandomState)



class SeededGenerator:
    """A NumPy generator seeded inside a traced function: NumPy's own numbers.

    NumPy gives the same numbers on every call of such a function, so its draws are
    constants; with traced parameters, the draw is NumPy's standard one, scaled and shifted
    in the graph exactly as NumPy's samplers do it (loc + scale * z, low + (high - low) * u).
    """

    def __init__(self, generator: Any):
        self._generator = generator

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        if not any_traced((loc, scale)):
            return self._generator.normal(loc, scale, size)
        z = self._generator.standard_normal(tnp_random._shape_for(size, loc, scale))
        return loc + scale * z

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        if not any_traced((low, high)):
            return self._generator.uniform(low, high, size)
        u = self._generator.random(tnp_random._shape_for(size, low, high))
        return low + (high - low) * u

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._generator, name)

        @functools.wraps(method)
        def draw(*args: Any, **kwargs: Any) -> Any:
            if any_traced(args, kwargs):
                raise unsupported(f"{type(self._generator).__name__}.{name} with traced "
                                  "arguments", "pass concrete arguments, or draw with "
                                  "normal/uniform, which accept traced parameters")
            return method(*args, **kwargs)
        return draw


def _generator_maker(original: Callable) -> Callable:
    """default_rng while tracing: seeded, NumPy's own generator; unseeded, recorded draws."""
    def make(seed: Any = None, *args: Any, **kwargs: Any) -> Any:
        if seed is None:
            return tnp_random._GLOBAL
        return SeededGenerator(original(seed, *args, **kwargs))
    return make


def _replacement(name: str, original: Callable) -> Callable:
    """np.random.<name> while tracing: transfuse's sampler, an error, or NumPy's own."""
    traced = TRACED.get(name)
    if name == "default_rng":
        traced = _generator_maker(original)

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not on_tracing_thread():
            return original(*args, **kwargs)
        if traced is not None:
            return traced(*args, **kwargs)
        if name in _STATEFUL:
            raise UnsupportedError(with_location(
                f"numpy.random.{name} inside a transformed or jitted function would act "
                "once, while tracing; seed outside it with tx.random.seed(n), or make a "
                "generator inside it with np.random.default_rng(seed)"))
        raise unsupported(f"numpy.random.{name} inside a transformed or jitted function",
                          "draw with normal, uniform, standard_normal, random, rand, randn, "
                          "randint/integers, choice or exponential, which transfuse records")
    return call


def _register_replacements() -> None:
    for name in np.random.__all__:
        if not isinstance(getattr(np.random, name), type):  # classes stay NumPy's
            replace_while_tracing("numpy.random", name,
                                  lambda original, name=name: _replacement(name, original))


@contextlib.contextmanager
def numpy_random_recorded(fn: Callable, rerun: Callable[[], Any]) -> Iterator[None]:
    """While fn is traced: np.random records draws; outside generators must not draw.

    Nested traces (transforms inside the function, and the library's own re-traces) run
    inside the outermost one, which installs the replacements and checks the generators
    reachable from the user's function. `rerun()` traces fn again, to find the line of a
    forbidden draw.
    """
    with outermost_trace() as outermost:
        if not outermost:
            yield
            return
        generators = reachable_generators(fn)
        states = [_state_of(g) for g in generators]
        yield
        _check_untouched(fn, rerun, generators, states)


def _check_untouched(fn: Callable, rerun: Callable[[], Any], generators: list,
                     states: list) -> None:
    """Raise (restoring their states) if generators made outside fn drew while tracing."""
    drawn = [g for g, s in zip(generators, states) if not _same_state(_state_of(g), s)]
    if not drawn:
        return
    _restore(generators, states)
    where = _line_of_draw(rerun, drawn, generators, states)
    _restore(generators, states)
    raise UnsupportedError(with_location(
        "a NumPy random generator created outside the transformed or jitted function drew "
        "numbers while it was traced: the draw would run once and be frozen into a "
        "constant. Create the generator inside the function (np.random.default_rng(seed)), "
        "call np.random.<sampler> there, or draw with tnp.random; transfuse records those "
        "draws", where or _def_site(fn)))


def _restore(generators: list, states: list) -> None:
    for g, s in zip(generators, states):
        _set_state(g, s)


# ---------------------------------------------------------------------------------------
# Generators made outside the function


def reachable_generators(fn: Callable, limit: int = 200) -> list[Any]:
    """The NumPy generators fn can reach through globals, closures, defaults and bound
    objects (and the functions it can reach those ways). NumPy's global one counts only when
    reached (`from numpy.random import normal` binds a name to it): `np.random.normal` is
    recorded instead, and another thread may use the global generator meanwhile."""
    found: dict[int, Any] = {}
    seen: set[int] = set()
    pending: list[Any] = [fn]
    while pending and len(seen) < limit:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for ref in _references(obj):
            if isinstance(ref, _GENERATORS):
                found.setdefault(id(ref), ref)
            elif isinstance(ref, (types.FunctionType, types.MethodType, functools.partial)):
                pending.append(ref)
    return list(found.values())


def _references(obj: Any) -> list[Any]:
    """What a function (or bound method, or partial) refers to by name or holds."""
    if isinstance(obj, functools.partial):
        return [obj.func, *obj.args, *obj.keywords.values()]
    if isinstance(obj, types.MethodType):
        owner = obj.__self__
        return [obj.__func__, owner, *getattr(owner, "__dict__", {}).values()]
    if not isinstance(obj, types.FunctionType):
        return []
    code = obj.__code__
    refs = [_contents(c) for c in obj.__closure__ or ()]
    if _is_library(code.co_filename):  # transfuse's own wrappers: only what they close over
        return refs
    refs += [obj.__globals__[n] for n in _names(code) if n in obj.__globals__]
    refs += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
    return refs


def _names(code: types.CodeType) -> set[str]:
    names, pending = set(), [code]
    while pending:
        c = pending.pop()
        names.update(c.co_names)
        pending.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names


def _contents(cell: Any) -> Any:
    """A closure cell's value (None for a cell not filled yet)."""
    try:
        return cell.cell_contents
    except ValueError:
        return None


def _state_of(generator: Any) -> Any:
    if isinstance(generator, np.random.Generator):
        return generator.bit_generator.state
    return generator.get_state(legacy=False)


def _set_state(generator: Any, state: Any) -> None:
    if isinstance(generator, np.random.Generator):
        generator.bit_generator.state = state
    else:
        generator.set_state(state)


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def _line_of_draw(rerun: Callable[[], Any], drawn: list, generators: list, states: list
                  ) -> SourceInfo | None:
    """The user line that drew: the trace re-run under a line tracer (error path only)."""
    watched = [(g, states[generators.index(g)]) for g in drawn]
    last_line: list[SourceInfo] = []  # the user line that ran last
    found: list[SourceInfo] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        # Draws are C calls: no user line runs between the drawing line and the next event.
        if found:
            return None
        if any(not _same_state(_state_of(g), s) for g, s in watched):
            found.extend(last_line[-1:])
            return None
        filename = frame.f_code.co_filename
        if _is_library(filename) or filename.startswith("<"):
            return None
        if event == "line":
            last_line[:] = [_here(frame)]
        return tracer

    sys.settrace(tracer)
    try:
        rerun()
    except Exception:  # noqa: BLE001  (the first trace already ran; only the line matters)
        pass
    finally:
        sys.settrace(None)
    return found[0] if found else None


def _here(frame: Any) -> SourceInfo:
    return SourceInfo(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


def _def_site(fn: Callable) -> SourceInfo | None:
    code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
    if code is None:
        return None
    return SourceInfo(code.co_filename, code.co_firstlineno, code.co_name)


_register_replacements()
TRACE_SCOPES.append(numpy_random_recorded)
