"""Which names a serial step's statements read before they write them (the direct back
end's translator cuts long steps into pieces, and outlines loop nests, only where no
local is live across the cut: compiler/lower_direct.py `_pieces`,
compiler/direct_regions.py `outline_loops`)."""

from __future__ import annotations

import ast

__all__ = ["exposed_names", "live_names"]


def live_names(body: list[ast.stmt]) -> list[set[str]]:
    """live[k]: the names statements k, k+1, ... may read before writing them (one more
    entry than statements: the last is empty)."""
    live: list[set[str]] = [set() for _ in range(len(body) + 1)]
    for k in range(len(body) - 1, -1, -1):
        exposed, defined = exposed_names(body[k])
        live[k] = exposed | (live[k + 1] - defined)
    return live


def exposed_names(stmt: ast.stmt) -> tuple[set[str], set[str]]:
    """(names a statement may read before it writes them, names it surely writes)."""
    def reads(node: ast.AST | None) -> set[str]:
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                and isinstance(n.ctx, ast.Load)} if node is not None else set()

    def walk(stmts: list[ast.stmt], defined: set[str]) -> set[str]:
        exposed: set[str] = set()
        for st in stmts:
            if isinstance(st, ast.Assign):
                exposed |= reads(st.value) - defined
                for t in st.targets:
                    exposed |= reads(t) - defined  # a subscript's index and array
                    if isinstance(t, ast.Name):
                        defined.add(t.id)
                    elif isinstance(t, ast.Tuple):
                        defined |= {e.id for e in t.elts if isinstance(e, ast.Name)}
            elif isinstance(st, ast.For):
                exposed |= reads(st.iter) - defined
                inner = defined | {st.target.id} if isinstance(st.target, ast.Name) \
                    else set(defined)
                exposed |= walk(st.body, inner)
                if isinstance(st.target, ast.Name):
                    defined.add(st.target.id)
            elif isinstance(st, ast.If):
                exposed |= reads(st.test) - defined
                exposed |= walk(st.body, set(defined)) | walk(st.orelse, set(defined))
            else:  # an augmented assignment reads its target: everything counts
                exposed |= reads(st) - defined
                if isinstance(st, ast.AugAssign) and isinstance(st.target, ast.Name):
                    exposed.add(st.target.id)
        return exposed

    defined: set[str] = set()
    return walk([stmt], defined), defined
