"""sin, cos and tan without table lookups where |x| < 2**15, redone exactly where it is not.

mathlib's exact trigonometric functions (compiler/mathlib.py) reduce every argument with a
table indexed by its exponent: a gathered load per lane, about half the time of a loop of
sin and cos. Their `_small` twins reduce by Cody-Waite with no table, and are right only
for |x| < 2**15 (and NaN, inf). A vectorised function cannot branch per vector, so the
loop does: a region's innermost loop runs in blocks of TRIG_BLOCK points with the `_small`
functions, ORing `tf_trig_large(x)` of every argument into a flag as it goes (LLVM
vectorises the OR); a block whose flag is set runs again, point by point, with the exact
functions called out of line (mathlib.OUT_OF_LINE: compiled once per process, where a
second inlined copy of the body would double the region's compile time).

    for i0 in prange(4096):               for tfb0 in prange((4096 + 1023) // 1024):
        t1 = a0[i0]                           tflo0 = tfb0 * 1024
        t2 = tf_sin_f32(t1)        ==>        tfl0 = False
        b1[i0] = t2                           for i0 in range(tflo0, min(tflo0 + 1024, 4096)):
                                                  t1 = a0[i0]
                                                  tfl0 |= tf_trig_large_f32(t1)
                                                  t2 = tf_sin_small_f32(t1)
                                                  b1[i0] = t2
                                              if tfl0:
                                                  for i0 in range(tflo0, min(...)):
                                                      t1 = a0[i0]
                                                      t2 = tf_sin_f32_call(t1)
                                                      b1[i0] = t2

Redoing a block is only sound when its body has no state carried between points and
never reads what it writes: the rewrite takes only innermost loops made of assignments to
fresh locals and stores, and the caller leaves out regions that write over an input.
The cost: |x| >= 2**15 anywhere in a block makes that block about 3x as slow as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .math_names import MATH_NAMES, OUT_OF_LINE_SUFFIX, SMALL_TRIG_NAMES, TRIG_LARGE_NAMES

TRIG_BLOCK = 1024  # points per block: its loads stay in L1 for the second pass
_LOOP = re.compile(r"^(\s*)for (i\d+) in (p?range)\((.*)\):$")
_TRIG_CALL = re.compile(r"\btf_(sin|cos|tan)_(f32|f64)\(")
_ASSIGN = re.compile(r"^\s*(t\d+) = (.*)$")
_STORE = re.compile(r"^\s*((?:[abc]|rb|st)\d+)\[[^\]]*\] = t\d+$")  # an output, row buffer
_ARRAY = re.compile(r"\b((?:[abc]|rb|st)\d+)\[")
_NAME = re.compile(r"\bt\d+\b")
_SUFFIX = {"f32": "float32", "f64": "float64"}
_MATH_CALL = re.compile(r"\b(%s)\(" % "|".join(sorted(MATH_NAMES.values())))


def _code(line: str) -> str:
    return line.split("#", 1)[0].rstrip()


def _call_argument(text: str, start: int) -> str:
    """The argument of the call whose opening parenthesis is at text[start - 1]."""
    depth = 1
    for end in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end]
    raise ValueError(f"unbalanced call in {text!r}")


def _pure_body(body: list[str]) -> bool:
    """Whether every statement assigns a new local or stores one, with no local read
    before the statement that assigns it (so no state carries from point to point) and no
    array both read and written."""
    assigned: set[str] = set()
    stored, read = set(), set()
    for line in body:
        code = _code(line)
        if not code.strip():
            continue
        match = _ASSIGN.match(code)
        store = _STORE.match(code)
        if match:
            name, expr = match.groups()
            if name in assigned or name in _NAME.findall(expr):
                return False
            assigned.add(name)
            read.update(_ARRAY.findall(expr))
        elif store:
            stored.add(store.group(1))
        else:
            return False
    if stored & read:
        return False
    defined_before: set[str] = set()
    for line in body:
        code = _code(line)
        used = set(_NAME.findall(code.split("=", 1)[1])) if "=" in code else set()
        if used & (assigned - defined_before):
            return False
        match = _ASSIGN.match(code)
        if match:
            defined_before.add(match.group(1))
    return True


def _innermost_loops(lines: list[str]) -> list[tuple[int, int]]:
    """(header index, end index) of each `for iK in (p)range(...)` with no loop inside."""
    found = []
    for i, line in enumerate(lines):
        match = _LOOP.match(_code(line))
        if not match:
            continue
        indent = len(match.group(1))
        end = i + 1
        while end < len(lines) and (not _code(lines[end]).strip()
                                    or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        if not any(_LOOP.match(_code(b)) or _code(b).lstrip().startswith(("for ", "while "))
                   for b in lines[i + 1:end]):
            found.append((i, end))
    return found


def _fast_body(body: list[str], flag: str, use: Callable[[str], str]) -> list[str]:
    """The body with each trig call made `_small`, after a line ORing its argument's
    `trig_large` into flag."""
    out = []
    for line in body:
        code = _code(line)
        matches = list(_TRIG_CALL.finditer(code))
        indent = line[:len(line) - len(line.lstrip())]
        for m in matches:
            name, suffix = m.groups()
            arg = _call_argument(code, m.end())
            large = use(TRIG_LARGE_NAMES[_SUFFIX[suffix]])
            out.append(f"{indent}{flag} |= {large}({arg})")
        for m in reversed(matches):
            name, suffix = m.groups()
            small = use(SMALL_TRIG_NAMES[(name, _SUFFIX[suffix])])
            line = line[:m.start()] + small + "(" + line[m.end():]
        out.append(line)
    return out


def _out_of_line(line: str, use: Callable[[str], str]) -> str:
    """The line with every mathlib call made to the function's out-of-line copy."""
    return _MATH_CALL.sub(lambda m: use(m.group(1) + OUT_OF_LINE_SUFFIX) + "(", line)


def _blocked(lines: list[str], start: int, end: int, number: int,
             use: Callable[[str], str]) -> list[str] | None:
    """The loop lines[start:end] in blocks with the fast body and the exact rerun."""
    indent, var, kind, bounds = _LOOP.match(_code(lines[start])).groups()
    body = lines[start + 1:end]
    if not any(_TRIG_CALL.search(_code(b)) for b in body) or not _pure_body(body):
        return None
    parts = [p.strip() for p in _split_top_level(bounds)]
    low, high = ("0", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    block, fb, flag, lo = TRIG_BLOCK, f"tfb{number}", f"tfl{number}", f"tflo{number}"
    inner = f"for {var} in range({lo}, min({lo} + {block}, {high})):"
    step = " " * 4
    deeper = [step + b for b in body]
    count = f"{high} + {block - 1}" if low == "0" else f"{high} - {low} + {block - 1}"
    first = f"{fb} * {block}" if low == "0" else f"{low} + {fb} * {block}"
    return [f"{indent}for {fb} in {kind}(({count}) // {block}):",
            f"{indent}{step}{lo} = {first}",
            f"{indent}{step}{flag} = False  # set by an argument sin, cos, tan must redo",
            f"{indent}{step}{inner}",
            *_fast_body(deeper, flag, use),
            f"{indent}{step}if {flag}:",
            f"{indent}{step}{step}{inner}",
            *[_out_of_line(step + b, use) for b in deeper]]


def _split_top_level(text: str) -> list[str]:
    """text split at the commas outside parentheses."""
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    return parts + [text[last:]]


def with_trig_fast_path(lines: list[str], use: Callable[[str], str]) -> list[str]:
    """A region's rendered lines with each innermost loop that calls sin, cos or tan
    blocked as above (others unchanged). `use(name)` registers a mathlib function the
    new lines call and returns its name."""
    out = list(lines)
    for number, (start, end) in reversed(list(enumerate(_innermost_loops(lines)))):
        blocked = _blocked(out, start, end, number, use)
        if blocked is not None:
            out[start:end] = blocked
    return out
