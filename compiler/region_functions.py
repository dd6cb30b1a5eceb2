"""Region bodies as functions of their own: parallel ones always, repeated ones once.

Numba's cost is in typing and lowering each statement of the entry point (a few
milliseconds per statement, docs/performance.md), so a program whose regions repeat — an
unrolled loop, the layers of a network, a forward pass and its recomputation in the
backward — paid for every copy. A region body that occurs more than once (the same code up
to the names of its arrays and locals) becomes one `@njit` function, compiled once and
called at each occurrence with that occurrence's arrays. A region that occurs once stays
inline, as before; a parallel region is always a function (Numba's parallel passes then
work on a small function instead of the whole entry point).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENTRY_ARRAY = re.compile(r"[abcgn]\d+")  # the entry's inputs, buffers, constants, sizes
_IDENTIFIER = re.compile(r"(?<![.\w])([A-Za-z_]\w*)")
_ASSIGNED = re.compile(r"^\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*(?:[-+*/|&^]|//)?=(?!=)")
_LOOP_VARIABLE = re.compile(r"^\s*for\s+([A-Za-z_]\w*)\s+in\b")
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
PYTHON_NAMES = frozenset((
    "range", "prange", "min", "max", "abs", "int", "float", "bool", "complex", "len",
    "True", "False", "None", "and", "or", "not", "if", "else", "elif", "for", "in", "is",
    "pass", "np", "math", "nt", "raise", "while", "break", "continue"))


@dataclass
class RegionBody:
    """A region's statements (indented for a function body), placed in the entry point."""

    lines: list[str]
    parallel: bool = False


@dataclass
class _Shape:
    """What makes two region bodies one function: code up to names, and its arrays."""

    key: str
    params: list[str]  # the entry arrays it reads and writes, in order of appearance


def _code(line: str) -> str:
    return line.split("#", 1)[0].rstrip()


def _assigned_names(lines: list[str]) -> list[str]:
    names: list[str] = []
    for line in lines:
        code = _code(line)
        for match in (_ASSIGNED.match(code), _LOOP_VARIABLE.match(code)):
            if match:
                names += [n.strip() for n in match.group(1).split(",")]
    return list(dict.fromkeys(names))


def _shape_of(body: RegionBody, known: set[str]) -> _Shape | None:
    """The body's shape, or None when it cannot be a function (it defines an entry-level
    name, or reads a name that is neither an entry array, a local nor a module global)."""
    assigned = set(_assigned_names(body.lines))
    if any(ENTRY_ARRAY.fullmatch(n) for n in assigned):
        return None
    params: dict[str, str] = {}  # entry array -> p0, p1, ... in order of appearance
    local_names: dict[str, str] = {}  # local -> l0, l1, ...
    for line in body.lines:
        for name in _IDENTIFIER.findall(_STRING.sub("''", _code(line))):
            if ENTRY_ARRAY.fullmatch(name):
                params.setdefault(name, f"p{len(params)}")
            elif name in assigned:
                local_names.setdefault(name, f"l{len(local_names)}")
            elif name not in known and name not in PYTHON_NAMES:
                return None
    order = {**params, **local_names}
    renamed = [_rename(_code(line), order) for line in body.lines if _code(line).strip()]
    key = ("parallel\n" if body.parallel else "") + "\n".join(renamed)
    return _Shape(key, list(params))


def _rename(text: str, names: dict[str, str]) -> str:
    return _IDENTIFIER.sub(lambda m: names.get(m.group(1), m.group(1)), text)


def share_regions(body: list[str | RegionBody], options: str, known: set[str]
                  ) -> tuple[list[str], list[list[str]]]:
    """The entry point's statements, and the region functions they call (definitions)."""
    shapes = {id(item): _shape_of(item, known) for item in body
              if isinstance(item, RegionBody)}
    counts: dict[str, int] = {}
    for shape in shapes.values():
        if shape is not None:
            counts[shape.key] = counts.get(shape.key, 0) + 1
    functions: dict[str, tuple[str, list[str]]] = {}  # key -> (name, definition)
    statements: list[str] = []
    for item in body:
        if not isinstance(item, RegionBody):
            statements.append(item)
            continue
        shape = shapes[id(item)]
        if shape is not None and not shape.key.strip():
            statements.extend(item.lines)  # no statements (an empty array's kernel)
            continue
        if shape is None or not (item.parallel or counts[shape.key] > 1):
            if item.parallel:
                raise AssertionError("internal: a parallel region that cannot be a function")
            statements.extend(item.lines)
            continue
        if shape.key not in functions:
            name = f"region{len(functions)}"
            functions[shape.key] = (name, _definition(name, item, shape, options))
        name = functions[shape.key][0]
        note = "runs in parallel" if item.parallel else f"{counts[shape.key]} regions share it"
        statements.append(f"    {name}({', '.join(shape.params)})  # {note}")
    return statements, [definition for _, definition in functions.values()]


def _definition(name: str, body: RegionBody, shape: _Shape, options: str) -> list[str]:
    """`@njit def name(p0, p1, ...)` with the body of the region's first occurrence."""
    params = {array: f"p{i}" for i, array in enumerate(shape.params)}
    parallel = "parallel=True, " if body.parallel else ""
    return ([f"@njit({parallel}{options})", f"def {name}({', '.join(params.values())}):"]
            + [_rename(line, params) for line in body.lines] + [""])
