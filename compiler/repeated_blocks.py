"""Runs of the entry point's statements that repeat become one function, compiled once.

compiler/region_functions.py makes a repeated region body one function, but the entry point
still holds a call, its buffers and their views for every occurrence: an unrolled loop of
N steps is N copies of the same dozens of statements, and Numba types and lowers each of
them (issue #15: compile time was linear in the steps with a large slope). Here a run of
consecutive statements that repeats back to back — the same code up to the names of its
arrays and locals — becomes one `@njit` function taking the names it reads and returning
the names it defines that later statements use; each copy becomes one call.

Only whole top-level statements move (an inline region's loop moves with its body), and a
copy joins only if it is the same text once every name is numbered by first appearance, so
the function computes exactly what the statements computed: a wrong match is impossible by
construction, a missed one only costs compile time. A repeat needs MIN_COPIES copies: below
that, compiling one more function costs Numba more than the inline copies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .region_functions import PYTHON_NAMES

_IDENTIFIER = re.compile(r"(?<![.\w])([A-Za-z_]\w*)")
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_ASSIGNED = re.compile(  # `a = ...`, `a, b = ...`, `a, = ...` (a call's 1-tuple), `a += ...`
    r"^\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*,?\s*((?:[-+*/|&^]|//)?)=(?!=)")
_LOOP_VARIABLE = re.compile(r"^\s*for\s+([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s+in\b")
_FUNCTION_NAME = re.compile(r"(region|block)\d+")  # module-level functions: never renamed
# A function of its own costs Numba about as much as ten inline copies of its statements
# (the RK4 program of bench/_rk4.py, first call with an empty cache: 20 steps 11-12 s
# instead of 15 s, 10 steps even, 5 steps 1-2 s slower): fewer copies stay inline.
MIN_COPIES = 12
MAX_PERIOD = 400  # longest run of statements considered


@dataclass
class _Statement:
    """One top-level statement of the entry: its lines (comments before it included)."""

    lines: list[str]
    names: list[str]  # its local names, in order of first appearance in the text
    template: str  # its code with those names numbered: equal templates, equal code up to names
    reads: list[str]  # names it reads before binding them
    binds: set[str]  # names it binds (assignment targets and loop variables, at any depth)


def _code(line: str) -> str:
    return _STRING.sub("''", line.split("#", 1)[0].rstrip())


def _split(lines: list[str], globals_: set[str]) -> list[_Statement]:
    """The entry's lines grouped into top-level statements (4-space indentation)."""
    groups: list[list[str]] = []
    pending: list[str] = []  # comment lines, attached to the next statement
    for line in lines:
        code = _code(line)
        if not code.strip():
            pending.append(line)
        elif not groups or code.startswith("    ") and not code.startswith(
                ("     ", "    elif ", "    else:")):  # an if's elif/else stay with it
            groups.append(pending + [line])
            pending = []
        else:
            groups[-1].append(line)
    if pending:
        groups.append(pending)
    return [_statement(group, globals_) for group in groups]


def _statement(lines: list[str], globals_: set[str]) -> _Statement:
    reads: dict[str, None] = {}
    binds: set[str] = set()
    numbering: dict[str, str] = {}

    def number(match: re.Match) -> str:
        name = match.group(1)
        if not _is_local(name, globals_):
            return name
        return numbering.setdefault(name, f"v{len(numbering)}")

    codes = [code for code in map(_code, lines) if code.strip()]
    for code in codes:
        match = _ASSIGNED.match(code) or _LOOP_VARIABLE.match(code)
        if match and match.re is _ASSIGNED and match.group(2):  # x += y reads x
            reads.update(dict.fromkeys(
                n for n in _local_names(match.group(1), globals_) if n not in binds))
        rest = code[match.end():] if match else code
        reads.update(dict.fromkeys(n for n in _local_names(rest, globals_) if n not in binds))
        if match:
            binds.update(n.strip() for n in match.group(1).split(",") if n.strip())
    template = "\n".join(_IDENTIFIER.sub(number, code) for code in codes)
    return _Statement(lines, list(numbering), template, list(reads), binds)


def _is_local(name: str, globals_: set[str]) -> bool:
    """A name of the entry point's own (not Python's, a helper's or a module function's)."""
    return name not in PYTHON_NAMES and name not in globals_ and not _FUNCTION_NAME.fullmatch(
        name)


def _local_names(code: str, globals_: set[str]) -> list[str]:
    """The code's local names, in order of appearance (the source must not depend on a set's
    order: the same graph gives the same kernel in every process)."""
    return list(dict.fromkeys(n for n in _IDENTIFIER.findall(code) if _is_local(n, globals_)))


def _canonical(statements: list[_Statement]) -> tuple:
    """The statements up to names: their templates, and every name numbered across them
    by first appearance (equal for two runs exactly when one is the other renamed)."""
    numbering: dict[str, int] = {}
    return tuple((s.template, tuple(numbering.setdefault(n, len(numbering)) for n in s.names))
                 for s in statements)


def outline_repeats(lines: list[str], options: str, globals_: set[str], returned: str
                    ) -> tuple[list[str], list[list[str]]]:
    """The entry's statements with repeated runs replaced by calls, and the functions."""
    statements = _split(lines, globals_)
    functions: list[list[str]] = []
    while (run := _best_run(statements)) is not None:
        statements = _outline(statements, *run, f"block{len(functions)}", options, globals_,
                              returned, functions)
    return [line for s in statements for line in s.lines], functions


def _saving(period: int, copies: int) -> int:
    """Statements Numba no longer compiles: the copies become calls, one copy a function."""
    return period * copies - copies - period


def _best_run(statements: list[_Statement]) -> tuple[int, int, int] | None:
    """(start, period, copies) of the back-to-back repeat that saves most statements."""
    keys: dict[str, int] = {}  # template -> a number
    seq = np.array([keys.setdefault(s.template, len(keys)) for s in statements], dtype=np.int64)
    best, best_saving = None, 0
    for period in range(2, min(MAX_PERIOD, len(seq) // MIN_COPIES) + 1):
        same = (seq[:-period] == seq[period:]).astype(np.int8)
        # runs where statement i equals statement i + period: `copies` back-to-back copies
        edges = np.flatnonzero(np.diff(np.concatenate([[0], same, [0]])))
        begins, ends = edges[::2], edges[1::2]
        long_enough = ends - begins >= (MIN_COPIES - 1) * period
        for begin, end in zip(begins[long_enough].tolist(), ends[long_enough].tolist()):
            copies = (end - begin) // period + 1
            if _saving(period, copies) <= best_saving:
                continue
            found = _verified(statements, begin, period, copies)
            if found and found[1] >= MIN_COPIES and _saving(period, found[1]) > best_saving:
                best, best_saving = (found[0], period, found[1]), _saving(period, found[1])
    return best


def _verified(statements: list[_Statement], begin: int, period: int, copies: int
              ) -> tuple[int, int] | None:
    """(start, copies) of the longest stretch of copies equal as a whole (names too)."""
    texts = [_canonical(statements[begin + k * period:begin + (k + 1) * period])
             for k in range(copies)]
    best: tuple[int, int] | None = None
    k = 0
    while k < copies:
        j = k + 1
        while j < copies and texts[j] == texts[k]:
            j += 1
        if j - k >= 2 and (best is None or j - k > best[1]):
            best = (begin + k * period, j - k)
        k = j
    return best


def _outline(statements: list[_Statement], start: int, period: int, copies: int, name: str,
             options: str, globals_: set[str], returned: str, functions: list[list[str]]
             ) -> list[_Statement]:
    """Replace the copies by calls of one new function (appended to `functions`)."""
    runs = [statements[start + k * period:start + (k + 1) * period] for k in range(copies)]
    live = _live_after(statements, set(_local_names(returned, globals_)))
    order = [list(dict.fromkeys(n for s in run for n in s.names)) for run in runs]
    results: set[int] = set()  # positions of the names some copy binds and later code reads
    for k, run in enumerate(runs):
        bound = set().union(*(s.binds for s in run))
        after = live[start + (k + 1) * period]
        results |= {i for i, n in enumerate(order[k]) if n in bound and n in after}
    results = sorted(results)
    params = [_free_names(run) for run in runs]
    outs = [order[0][i] for i in results]
    body = [line for s in runs[0] for line in s.lines]
    functions.append([f"@njit({options})", f"def {name}({', '.join(params[0])}):"] + body
                     + ([f"    return {_tuple(outs)}"] if outs else []) + [""])
    calls = []
    for k in range(copies):
        call = f"{name}({', '.join(params[k])})"
        targets = [order[k][i] for i in results]
        statement = f"{_tuple(targets)} = {call}" if targets else call
        line = f"    {statement}  # {copies} runs of {period} statements share it"
        calls.append(_statement([line], globals_))
    return statements[:start] + calls + statements[start + period * copies:]


def _tuple(names: list[str]) -> str:
    return ", ".join(names) + ("," if len(names) == 1 else "")


def _live_after(statements: list[_Statement], returned: set[str]) -> list[set[str]]:
    """live[i]: the names read at or after statement i before being bound again."""
    live = [set() for _ in range(len(statements) + 1)]
    live[-1] = set(returned)
    for i in range(len(statements) - 1, -1, -1):
        s = statements[i]
        live[i] = (live[i + 1] - s.binds) | set(s.reads)
    return live


def _free_names(run: list[_Statement]) -> list[str]:
    """The names a run reads before binding them, in order of first appearance."""
    bound: set[str] = set()
    free: dict[str, None] = {}
    for s in run:
        for n in s.names:
            if n in s.reads and n not in bound:
                free.setdefault(n)
        bound |= s.binds
    return list(free)
