"""compiler/mathlib.py's functions for Numba: each an `njit(inline="always")` function,
each of mathlib_ops' operations an intrinsic.

mathlib's functions are plain Python over mathlib_ops' operations, so that the direct back
end reads them without importing Numba. Numba compiles a function's globals and closure
variables by value, so each function is rebuilt here with globals and closure cells that
name the Numba versions of what they named (functions, operations), once per process and
on first use: generated kernels that go through Numba get them from `math_globals()`.
"""

from __future__ import annotations

import types as pytypes
from collections.abc import Callable
from typing import Any

from numba import njit, types
from numba.extending import intrinsic

from . import mathlib
from .mathlib_ops import Op

__all__ = ["MATH_FUNCTIONS", "OUT_OF_LINE", "SMALL_TRIG", "math_globals", "numba_version"]

_MADE: dict[int, Any] = {}  # id of a plain function or operation -> its Numba version
_KEEP: list[Any] = []  # the plain objects behind _MADE's keys, kept alive
_GLOBALS: dict[str, Any] = {}  # mathlib's namespace as the rebuilt functions see it


def numba_version(obj: Any) -> Any:
    """The Numba version of a mathlib function or operation (anything else as it is)."""
    made = _MADE.get(id(obj))
    if made is not None:
        return made
    if isinstance(obj, Op):
        made = _intrinsic(obj)
    elif isinstance(obj, pytypes.FunctionType) and obj.__module__ == mathlib.__name__:
        made = _rebuilt(obj)
    else:
        return obj
    _MADE[id(obj)] = made
    _KEEP.append(obj)
    return made


def _rebuilt(fn: pytypes.FunctionType) -> Any:
    """fn compiled by Numba (inlined at every call), over Numba versions of its names."""
    cells = tuple(pytypes.CellType() for _ in fn.__code__.co_freevars)
    copy = pytypes.FunctionType(fn.__code__, _namespace(), fn.__name__, fn.__defaults__,
                                cells or None)
    copy.__qualname__ = fn.__qualname__
    made = njit(inline="always", cache=False)(copy)
    _MADE[id(fn)] = made  # before the cells: a function may reach itself through them
    for cell, old in zip(cells, fn.__closure__ or ()):
        try:
            cell.cell_contents = numba_version(old.cell_contents)
        except ValueError:  # an empty cell (a name bound after the function was made)
            pass
    return made


def _namespace() -> dict[str, Any]:
    """mathlib's globals with its functions and operations replaced by Numba's versions
    (filled once; Numba reads globals only when it compiles)."""
    if not _GLOBALS:
        _GLOBALS.update(vars(mathlib))
        for name, value in list(_GLOBALS.items()):
            if not name.startswith("__"):
                _GLOBALS[name] = numba_version(value)
    return _GLOBALS


def _intrinsic(op: Op) -> Any:
    """A Numba intrinsic writing op's IR, typed by op's operand and result rules."""
    def signature(args: tuple) -> Any:
        if op.operands == "floats":
            ok = isinstance(args[0], types.Float) and all(a == args[0] for a in args)
        elif op.operands == "select":
            ok = isinstance(args[0], types.Boolean) and args[1] == args[2]
        else:  # polyval: a float and a tuple of its coefficients
            ok = (isinstance(args[0], types.Float) and isinstance(args[1], types.UniTuple)
                  and args[1].dtype == args[0])
        if not ok:
            return None
        value = args[1] if op.operands == "select" else args[0]
        return (types.int64 if op.result == "int64" else value)(*args)

    def codegen(context, builder, sig, llargs):
        return op.codegen(builder, list(llargs))

    def typed(args: tuple) -> Any:
        sig = signature(args)
        return None if sig is None else (sig, codegen)

    typer: Callable
    if op.nargs == 1:
        def typer(typingctx, a):
            return typed((a,))
    elif op.nargs == 2:
        def typer(typingctx, a, b):
            return typed((a, b))
    else:
        def typer(typingctx, a, b, c):
            return typed((a, b, c))
    typer.__name__ = typer.__qualname__ = f"_{op.name}"
    return intrinsic(typer)


MATH_FUNCTIONS: dict[tuple[str, str], Any] = {
    key: numba_version(fn) for key, fn in mathlib.PLAIN_FUNCTIONS.items()}
SMALL_TRIG: dict[tuple[str, str], Any] = {
    key: numba_version(fn) for key, fn in mathlib.PLAIN_SMALL_TRIG.items()}
# Each function again as an ordinary (not inlined) function, named tf_<name>_<suffix>_call:
# a loop redoing a few points (compiler/trig_fast_path.py) calls these, so that it costs
# one compile per process rather than a second inlined copy of every call per kernel.
OUT_OF_LINE: dict[str, Any] = {
    f"{fn.py_func.__name__}_call": njit(cache=False)(fn.py_func)
    for fn in MATH_FUNCTIONS.values()}


def math_globals() -> dict[str, Any]:
    """{function name: function} for the namespace of generated source."""
    names = {fn.py_func.__name__: fn for table in (MATH_FUNCTIONS, SMALL_TRIG)
             for fn in table.values()}
    return {**names, **OUT_OF_LINE}
