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
- the right-hand side of the guard's `.shape[k] != N` (its stride checks are written in
  terms of the array's extents, compiler/lower_cpu.py `_layout_conditions`).
Index arithmetic (`i0 // 3`), literals in point expressions and anything in a subscript
stay literal: a division by a constant is a multiply, and those places are structure.
"""

from __future__ import annotations

import io
import re
import tokenize

SIZE_CALLS = frozenset({"range", "prange", "empty", "zeros", "full", "reshape"})
SIZE_NAME = re.compile(r"n\d+")  # the parameters this module introduces


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
        if not any(c.isdigit() for c in line):
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


def _size_literals(line: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of each decimal integer literal of the line in a size position."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline)
                  if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []  # not a whole statement (a fragment of a multi-line one): leave it
    offset = len(line) - len(line.lstrip())
    found = []
    stack: list[str | None] = []  # per open bracket: the call's name, '[', or None
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.OP and tok.string in "([":
            called = tokens[i - 1].string if i and tokens[i - 1].type == tokenize.NAME else None
            stack.append("[" if tok.string == "[" else called)
        elif tok.type == tokenize.OP and tok.string in ")]":
            if stack:
                stack.pop()
        elif tok.type == tokenize.NUMBER and tok.string.isdigit() and int(tok.string) > 0:
            if _in_size_call(stack) or _guarded_size(tokens, i):
                start, end = tok.start[1] + offset, tok.end[1] + offset
                found.append((start, end, tok.string))
    return found


def _in_size_call(stack: list[str | None]) -> bool:
    for opened in reversed(stack):
        if opened == "[":
            return False
        if opened in SIZE_CALLS:
            return True
    return False


def _guarded_size(tokens: list[tokenize.TokenInfo], i: int) -> bool:
    """Whether tokens[i] is N in the guard's `x.shape[k] != N`."""
    if i < 5:
        return False
    window = [t.string for t in tokens[i - 5:i]]
    return window == ["shape", "[", window[2], "]", "!="]
