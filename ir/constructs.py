"""Constructs NumPy gives no hook for, named in the error a traced value raises.

`np.array([a, b])`, `np.mean([a, b])`, `np.r_[a, b]`, `np.int64(x)` and `float(x)` never
reach `__array_function__`: NumPy (or Python) asks the traced value for its contents
(`__array__`, `__float__`), which it does not have while tracing. The error then names the
construct the user wrote — read from the source of the expression being evaluated in the
user's frame — and the traced way to write it.
"""

from __future__ import annotations

import linecache
import re
import sys
from types import FrameType

from .source import _is_library

_SCALAR_TYPES = ("bool_|int8|int16|int32|int64|intp|uint8|uint16|uint32|uint64|uintp|"
                 "float16|float32|float64|double|single|longdouble|complex64|complex128")
# (pattern over the expression's source, message: {0} is the matched text)
_CONSTRUCTS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"(?<![\w.])([\w.]*\br_)\s*\["),
     "{0}[...] of traced values: NumPy's index trick turns every item into a NumPy array, "
     "which a traced value cannot become. Use transfuse.numpy.r_[...] (tnp.r_), which "
     "takes traced arrays, scalars, slices and the string directives"),
    (re.compile(r"(?<![\w.])([\w.]*\bc_)\s*\["),
     "{0}[...] of traced values: NumPy's index trick turns every item into a NumPy array, "
     "which a traced value cannot become. Use transfuse.numpy.c_[...] (tnp.c_), which "
     "takes traced arrays, scalars, slices and the string directives"),
    (re.compile(rf"(?<![\w.])([\w.]*\.(?:{_SCALAR_TYPES}))\s*\("),
     "{0}(x) of a traced value: a NumPy scalar holds a concrete number, which is not known "
     "while transfuse traces. Keep it an array and change its dtype instead: "
     "x.astype({0}) (or tnp.asarray(x, dtype={0}))"),
    (re.compile(r"(?<![\w.])([\w.]*\.(?:array|asarray|asanyarray|ascontiguousarray))"
                r"\s*\(\s*[\[(]"),
     "{0}([...]) of a list holding traced values: NumPy builds the array element by "
     "element, and a traced value cannot become a NumPy array. Stack them instead: "
     "np.stack([...]) (nested lists: tnp.array([...]), which takes traced values)"),
    (re.compile(r"(?<![\w.])(float|int|complex|bool)\s*\("),
     "{0}(x) of a traced value: Python needs the number, which is not known while "
     "transfuse traces. Keep it an array (arithmetic, comparisons and NumPy functions all "
     "take traced 0-d arrays); change its dtype with x.astype(...); select with "
     "tnp.where(cond, a, b) instead of branching"),
    (re.compile(r"(?<![\w.])((?:np|numpy|onp)\.[\w.]+)\s*\(\s*\["),
     "{0}(...) of a Python list holding traced values: NumPy turns the list into a NumPy "
     "array before any hook sees it, and a traced value cannot become one. Stack them "
     "first: {0}(np.stack([...])) (or call tnp.{1}, which accepts such lists)"),
]


def describe_construct() -> str | None:
    """The message for the construct that asked a traced value for its contents, when the
    user's expression shows one of them; else None."""
    frame = _user_frame()
    if frame is None:
        return None
    source = _expression_source(frame)
    if not source:
        return None
    for pattern, message in _CONSTRUCTS:
        match = pattern.search(source)
        if match:
            name = match.group(1)
            return message.format(name, name.split(".", 1)[-1])
    return None


def _user_frame() -> FrameType | None:
    frame = sys._getframe(1)
    while frame is not None and _is_library(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def _expression_source(frame: FrameType) -> str | None:
    """The source text of the expression the frame is evaluating (Python 3.11+ positions)."""
    code = frame.f_code
    try:
        positions = list(code.co_positions())[frame.f_lasti // 2]
    except (AttributeError, IndexError):
        return None
    start_line, end_line, start_col, end_col = positions
    if None in positions:
        return None
    lines = linecache.getlines(code.co_filename)
    if not lines or end_line > len(lines):
        return None
    if start_line == end_line:
        return lines[start_line - 1][start_col:end_col]
    parts = [lines[start_line - 1][start_col:]]
    parts += lines[start_line:end_line - 1]
    parts.append(lines[end_line - 1][:end_col])
    return "".join(parts)
