"""Module attributes replaced while a function is traced.

Some functions users call give NumPy no dispatch hook (`np.random.normal(size=3)` has no
array argument; SciPy's functions convert their arguments with `np.asarray`). While the
outermost trace runs, such a module attribute is replaced by a function that records
transfuse's primitives when called on the tracing thread; other threads, and every call
after the trace, get the original. A module that was never imported is left alone.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from transfuse.ir.tracing import current_builder

# module name -> attribute -> factory(original) -> the replacement
_FACTORIES: dict[str, dict[str, Callable[[Callable], Callable]]] = {}
_BUILT: dict[tuple[str, str], tuple[Callable, Callable]] = {}  # -> (original, replacement)
_lock = threading.Lock()
_active: dict[str, Any] = {"depth": 0, "thread": None, "installed": []}


def replace_while_tracing(module: str, name: str, factory: Callable[[Callable], Callable]
                          ) -> None:
    """While tracing, `module.name` becomes `factory(original)` (built once)."""
    _FACTORIES.setdefault(module, {})[name] = factory


def original(module: str, name: str) -> Callable:
    """`module.name` as its module defines it, whether or not a trace has replaced it."""
    built = _BUILT.get((module, name))
    return built[0] if built is not None else getattr(sys.modules[module], name)


def on_tracing_thread() -> bool:
    """Whether this call comes from the code being traced (not another thread)."""
    return current_builder() is not None and threading.get_ident() == _active["thread"]


@contextlib.contextmanager
def outermost_trace() -> Iterator[bool]:
    """Install the replacements around the outermost trace; yields whether this is it."""
    with _lock:
        outermost = _active["depth"] == 0
        if outermost:
            _active["thread"] = threading.get_ident()
            _active["installed"] = _install()
        _active["depth"] += 1
    try:
        yield outermost
    finally:
        with _lock:
            _active["depth"] -= 1
            if _active["depth"] == 0:
                for module, name, original in _active["installed"]:
                    setattr(module, name, original)
                _active["installed"], _active["thread"] = [], None


def _install() -> list[tuple[Any, str, Callable]]:
    installed = []
    for module_name, factories in _FACTORIES.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name, factory in factories.items():
            if (module_name, name) not in _BUILT:
                original = getattr(module, name)
                _BUILT[module_name, name] = (original, factory(original))
            original, replacement = _BUILT[module_name, name]
            setattr(module, name, replacement)
            installed.append((module, name, original))
    return installed
