"""Pytrees: nested tuples, lists, dicts and None, with arrays (or anything else) as leaves.

A plain recursive flattener: on this machine it beat optree for small trees (see
docs/performance.md), and callers with only plain array arguments skip it entirely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class TreeDef(NamedTuple):
    """The structure of a pytree: hashable, comparable, printable."""

    kind: Any  # tuple | list | dict | None | a registered class | '*' for a leaf
    meta: Any  # dict keys, namedtuple class, or a registered node's aux data
    children: tuple

    @property
    def num_leaves(self) -> int:
        if self.kind == "*":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __repr__(self) -> str:
        return f"TreeDef({_show(self)})"


LEAF = TreeDef("*", None, ())
NONE = TreeDef(None, None, ())

# type -> (flatten: obj -> (children, aux), unflatten: (aux, children) -> obj)
_registry: dict[type, tuple[Callable, Callable]] = {}


def register_pytree_node(cls: type, flatten: Callable, unflatten: Callable) -> None:
    """Let instances of `cls` be pytree nodes: flatten(obj) -> (children, aux)."""
    _registry[cls] = (flatten, unflatten)


def _flatten(x: Any, leaves: list, is_leaf: Callable | None) -> TreeDef:
    if is_leaf is not None and is_leaf(x):
        leaves.append(x)
        return LEAF
    t = type(x)
    if t is tuple or t is list:
        return TreeDef(t, None, tuple(_flatten(c, leaves, is_leaf) for c in x))
    if t is dict:
        keys = tuple(sorted(x, key=_key_order))
        return TreeDef(dict, keys, tuple(_flatten(x[k], leaves, is_leaf) for k in keys))
    if x is None:
        return NONE
    if t in _registry:
        children, aux = _registry[t][0](x)
        return TreeDef(t, aux, tuple(_flatten(c, leaves, is_leaf) for c in children))
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return TreeDef(t, None, tuple(_flatten(c, leaves, is_leaf) for c in x))
    leaves.append(x)
    return LEAF


def _key_order(k: Any) -> tuple:
    return (type(k).__name__, k)


def tree_flatten(tree: Any, is_leaf: Callable | None = None) -> tuple[list, TreeDef]:
    """Flatten a pytree into its leaves (in a fixed order) and its structure."""
    leaves: list = []
    treedef = _flatten(tree, leaves, is_leaf)
    return leaves, treedef


def _build(treedef: TreeDef, it) -> Any:
    kind = treedef.kind
    if kind == "*":
        return next(it)
    if kind is None:
        return None
    children = [_build(c, it) for c in treedef.children]
    if kind is tuple or kind is list:
        return kind(children)
    if kind is dict:
        return dict(zip(treedef.meta, children))
    if kind in _registry:
        return _registry[kind][1](treedef.meta, children)
    return kind(*children)  # namedtuple


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    """Rebuild a pytree of structure `treedef` from its leaves."""
    it = iter(leaves)
    out = _build(treedef, it)
    if next(it, _SENTINEL) is not _SENTINEL:
        raise ValueError(f"too many leaves for {treedef}")
    return out


_SENTINEL = object()


def tree_leaves(tree: Any, is_leaf: Callable | None = None) -> list:
    """The leaves of a pytree, in flattening order."""
    return tree_flatten(tree, is_leaf)[0]


def tree_structure(tree: Any) -> TreeDef:
    return tree_flatten(tree)[1]


def tree_map(f: Callable, tree: Any, *rest: Any, is_leaf: Callable | None = None) -> Any:
    """Apply f to each leaf (and the matching leaves of `rest`), keeping the structure."""
    leaves, treedef = tree_flatten(tree, is_leaf)
    others = [treedef_children_leaves(treedef, r) for r in rest]
    return tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *others)])


def treedef_children_leaves(treedef: TreeDef, tree: Any) -> list:
    """Leaves of `tree`, which must have structure `treedef` (leaves may be subtrees)."""
    out: list = []
    _match(treedef, tree, out)
    return out


def _match(treedef: TreeDef, x: Any, out: list) -> None:
    kind = treedef.kind
    if kind == "*":
        out.append(x)
        return
    if kind is None:
        if x is not None:
            raise ValueError(f"expected None, got {type(x).__name__}")
        return
    if kind is dict:
        if not isinstance(x, dict) or tuple(sorted(x, key=_key_order)) != treedef.meta:
            raise ValueError(f"expected a dict with keys {list(treedef.meta)}, got {_brief(x)}")
        for k, c in zip(treedef.meta, treedef.children):
            _match(c, x[k], out)
        return
    if kind in _registry:
        if type(x) is not kind:
            raise ValueError(f"expected {kind.__name__}, got {_brief(x)}")
        children, _ = _registry[kind][0](x)
    else:
        if not isinstance(x, (tuple, list)) or len(x) != len(treedef.children):
            raise ValueError(
                f"expected a {kind.__name__} of length {len(treedef.children)}, got {_brief(x)}"
            )
        children = x
    for c, xc in zip(treedef.children, children):
        _match(c, xc, out)


def _brief(x: Any) -> str:
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of length {len(x)}"
    if isinstance(x, dict):
        return f"a dict with keys {list(x)}"
    return type(x).__name__


def _show(t: TreeDef) -> str:
    if t.kind == "*":
        return "*"
    if t.kind is None:
        return "None"
    inner = ", ".join(_show(c) for c in t.children)
    if t.kind is tuple:
        return f"({inner}{',' if len(t.children) == 1 else ''})"
    if t.kind is list:
        return f"[{inner}]"
    if t.kind is dict:
        return "{" + ", ".join(f"{k!r}: {_show(c)}" for k, c in zip(t.meta, t.children)) + "}"
    return f"{t.kind.__name__}({inner})"
