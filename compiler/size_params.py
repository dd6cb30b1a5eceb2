"""Sizes as arguments: one compiled entry point serves every program of the same structure.

The CPU backend writes extents as integer literals (`range(128)`, `np.empty((128, 512),
...)`, the signature guard's `a0.shape[0] != 128`), so each batch size used to be new
source and a new compile. Before the source is rendered, the literals in those *size
positions* become parameters `n0, n1, ...` of the entry point (one per distinct value, in
order of first appearance), and the values are passed at run time. Two programs whose
code differs only in sizes then render the same source: the compiled kernel (in memory
and on disk, keyed by that source) serves both, and a new batch size costs no compile.

This is sound by construction: a literal replaced by a variable holding the same value is
the same program (Numba types both as int64), so a size can only be generalised wrongly
into *less* sharing — two sizes that are equal in one program and differ in another give
different source — never into a wrong kernel. Which literals are size positions:
- arguments of `range`/`prange` and of the shape-taking calls `np.empty`, `np.zeros`,
  `np.full` and `.reshape` (also inside `min`/`max` or arithmetic there), except inside
  a subscript (`x.shape[2]` must stay a literal for Numba's typing of tuples);
- the shape that the guard's `layout_mismatch(a0.shape, a0.strides, a0.itemsize, (N, M))`
  checks an argument against (its stride checks use the array's own extents:
  runtime/cpu_kernels.py).
Index arithmetic (`i0 // 3`), literals in point expressions and anything in a subscript
stay literal: a division by a constant is a multiply, and those places are structure.
"""

from __future__ import annotations

import re

SIZE_CALLS = frozenset({"range", "prange", "empty", "zeros", "full", "reshape",
                        "layout_mismatch"})
SIZE_NAME = re.compile(r"n\d+")  # the parameters this module introduces
_MAYBE_SIZED = re.compile(r"range\(|empty\(|zeros\(|full\(|reshape\(|layout_mismatch\(")
# A value inside a size call, not a size: np.full's fill value, written as a scalar of its
# dtype (`np.full((n0,), np.int64(-9223372036854775808), ...)` made 2**63 a size argument,
# which no int64 holds: found by the fuzzer).
_VALUE_CALLS = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                          "uint64", "float32", "float64", "complex64", "complex128", "bool_"})
_INT64_MAX = 2**63 - 1


class SizeParams:
    """Rewrites lines so sizes become parameters; remembers each parameter's value."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}  # value -> parameter name

    @property
    def values(self) -> list[int]:
        """The parameters' values, in the order of their names (n0, n1, ...)."""
        return list(self.names)

    def param_names(self) -> list[str]:
        return list(self.names.values())

    def rewrite(self, line: str) -> str:
        """The line with the integer literals in size positions replaced by parameters."""
        if not _MAYBE_SIZED.search(line):
            return line
        if "\n" in line:  # a statement and its comment lines, say
            return "\n".join(self.rewrite(part) for part in line.split("\n"))
        spans = [(start, end, self._name(int(text)))
                 for start, end, text in _size_literals(line)]
        for start, end, name in reversed(spans):
            line = line[:start] + name + line[end:]
        return line

    def _name(self, value: int) -> str:
        return self.names.setdefault(value, f"n{len(self.names)}")


_TOKEN = re.compile(r"""(?P<skip>'[^']*'|"[^"]*"|\#.*)"""
                    r"|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[jJ]?)"
                    r"|(?P<name>[A-Za-z_]\w*)|(?P<op>!=|[()\[\]])|(?P<other>\S)")


def _size_literals(line: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of each decimal integer literal of the line in a size position.

    A regular expression rather than `tokenize`: the generated code is one statement per
    line with no multi-line strings, and this runs on every line of every program."""
    tokens = [(m.lastgroup, m.group(), m.start(), m.end()) for m in _TOKEN.finditer(line)
              if m.lastgroup != "skip"]
    found = []
    stack: list[str | None] = []  # per open bracket: the call's name, '[', or None
    for i, (kind, text, start, end) in enumerate(tokens):
        if text in ("(", "["):
            called = tokens[i - 1][1] if i and tokens[i - 1][0] == "name" else None
            stack.append("[" if text == "[" else called)
        elif text in (")", "]"):
            if stack:
                stack.pop()
        elif kind == "number" and text.isdigit() and 0 < int(text) <= _INT64_MAX:
            if _in_size_call(stack):
                found.append((start, end, text))
    return found


def _in_size_call(stack: list[str | None]) -> bool:
    for opened in reversed(stack):
        if opened == "[" or opened in _VALUE_CALLS:
            return False
        if opened in SIZE_CALLS:
            return True
    return False
