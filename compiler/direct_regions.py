"""Region functions of the direct back end: one LLVM module each, named by its code.

compiler/lower_direct.py writes every region function — a region that repeats in the
program, a parallel region's body, and each loop nest of the entry that `outline_loops`
makes a function — in an LLVM module of its own, with nothing in it that belongs to the
program: its arguments are data pointers, extents and scalars, and the helpers it calls
are defined in its module. Two programs whose regions have the same code thus write the
same module text, and its symbol is the hash of that text: runtime/direct_regions.py
compiles each such module once and links its object code into every kernel that calls it
(docs/compiler.md, "Regions shared across programs").
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable

from llvmlite import ir

from .step_liveness import exposed_names, live_names

__all__ = ["OUTLINE_MIN_NODES", "REGION_LINKAGE", "REGION_PLACEHOLDER", "name_region",
           "outline_loops", "region_module", "share_helpers"]

REGION_PLACEHOLDER = "tf_region"  # the region's name in its module until it is hashed
# Kept though nothing in its module calls it; one copy where objects holding it meet;
# not exported from the kernel's library. (llvmlite.ir writes a linkage as given and has
# no visibility field: the visibility rides along with it.)
REGION_LINKAGE = "weak_odr hidden"
HELPER_LINKAGE = "linkonce_odr hidden"  # compiler/direct_helpers.py's, merged by name
# A loop nest smaller than this many syntax-tree nodes stays in its step: LLVM compiles it
# in far less than a module of its own costs, and a call would cut it off from its
# neighbours (the unrolled RK4's one- and two-element loops).
OUTLINE_MIN_NODES = 60


def region_module() -> ir.Module:
    """An empty module for one region function (its text is what gets hashed)."""
    module = ir.Module(name="transfuse_region")
    module.triple = ""  # the target machine's, set when compiled
    return module


def share_helpers(module: ir.Module) -> None:
    """Let the regions compiled together share one copy of each helper: a helper of
    compiler/direct_helpers.py (`tf_<name>_<dtype>`) has one body per name, so its
    definitions may be merged when the region modules are linked into one."""
    for value in module.global_values:
        if isinstance(value, ir.Function) and value.blocks and value.linkage == "internal" \
                and value.name.startswith("tf_"):
            value.linkage = HELPER_LINKAGE


def name_region(text: str) -> tuple[str, str]:
    """(symbol, the module's text with its region function so named): the symbol is the
    hash of the text, so equal code gets one name in every program."""
    symbol = "tf_region_" + hashlib.sha256(text.encode()).hexdigest()[:32]
    return symbol, text.replace(f'@"{REGION_PLACEHOLDER}"', f'@"{symbol}"')


def outline_loops(body: list[ast.stmt], kind_of: Callable[[str], str],
                  define: Callable[[ast.FunctionDef], str]) -> list[ast.stmt]:
    """A serial step's statements with each closed loop nest replaced by a call of a
    function of its own (`define` registers it and returns its name). Closed: it reads
    only the entry's names (arrays and sizes, passed as arguments) and module globals
    (`kind_of(name)`: 'entry', 'global' or 'local'), and nothing it assigns is read
    after it."""
    live = live_names(body)
    out: list[ast.stmt] = []
    for k, stmt in enumerate(body):
        params = _closed_loop_params(stmt, kind_of, live[k + 1])
        if params is None:
            out.append(stmt)
            continue
        fn = ast.FunctionDef(name="", args=ast.arguments(
            posonlyargs=[], args=[ast.arg(p) for p in params], kwonlyargs=[], kw_defaults=[],
            defaults=[]), body=[stmt], decorator_list=[], returns=None)
        call = ast.Call(ast.Name(define(fn), ast.Load()),
                        [ast.Name(p, ast.Load()) for p in params], [])
        out.append(ast.Expr(call))
    return out


def _closed_loop_params(stmt: ast.stmt, kind_of: Callable[[str], str],
                        live_after: set[str]) -> list[str] | None:
    """The entry names a loop nest reads (in the order ast.walk meets them: the same for
    equal code); None when it is not a loop nest worth a function of its own or is not
    closed."""
    if not isinstance(stmt, ast.For) or sum(1 for _ in ast.walk(stmt)) < OUTLINE_MIN_NODES:
        return None
    exposed, _ = exposed_names(stmt)
    assigned = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)
                and isinstance(n.ctx, ast.Store)}
    if assigned & live_after:
        return None
    params = []
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and node.id in exposed and node.id not in params:
            kind = kind_of(node.id)
            if kind == "local":
                return None  # a value of the step's: not worth passing
            if kind == "entry":
                params.append(node.id)
    return params
