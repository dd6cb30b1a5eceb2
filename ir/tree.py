"""Pytrees: nested tuples, lists, dicts and None, with arrays (or anything else) as leaves.

A plain recursive flattener: on this machine it beat optree for small trees (see
docs/performance.md), and callers with only plain array arguments skip it entirely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class TreeDef:
    """The structure of a pytree: hashable, comparable, printable.

    Internally a nested tuple (kind, meta, children): plain tuples are the cheapest thing
    to build on the dispatch path.
    """

    __slots__ = ("node", "_hash")

    def __init__(self, node: tuple):
        self.node = node
        self._hash = None

    @property
    def kind(self) -> Any:
        return self.node[0]

    @property
    def meta(self) -> Any:
        return self.node[1]

    @property
    def children(self) -> tuple:
        return tuple(TreeDef(c) for c in self.node[2])

    @property
    def num_leaves(self) -> int:
        return _count(self.node)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TreeDef) and self.node == other.node

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self.node)
        return self._hash

    def __repr__(self) -> str:
        return f"TreeDef({_show(self.node)})"


def _count(node: tuple) -> int:
    if node[0] == "*":
        return 1
    return sum(_count(c) for c in node[2])


_LEAF = ("*", None, ())
_NONE = (None, None, ())
LEAF = TreeDef(_LEAF)

# type -> (flatten: obj -> (children, aux), unflatten: (aux, children) -> obj)
_registry: dict[type, tuple[Callable, Callable]] = {}


def register_pytree_node(cls: type, flatten: Callable, unflatten: Callable) -> None:
    """Let instances of `cls` be pytree nodes: flatten(obj) -> (children, aux)."""
    _registry[cls] = (flatten, unflatten)


def _flatten(x: Any, leaves: list, is_leaf: Callable | None) -> tuple:
    if is_leaf is not None and is_leaf(x):
        leaves.append(x)
        return _LEAF
    t = type(x)
    if t is tuple or t is list:
        return (t, None, tuple([_flatten(c, leaves, is_leaf) for c in x]))
    if t is dict:
        keys = tuple(sorted(x, key=_key_order))
        return (dict, keys, tuple([_flatten(x[k], leaves, is_leaf) for k in keys]))
    if x is None:
        return _NONE
    if t in _registry:
        children, aux = _registry[t][0](x)
        return (t, aux, tuple([_flatten(c, leaves, is_leaf) for c in children]))
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return (t, None, tuple([_flatten(c, leaves, is_leaf) for c in x]))
    leaves.append(x)
    return _LEAF


def _key_order(k: Any) -> tuple:
    return (type(k).__name__, k)


def tree_flatten(tree: Any, is_leaf: Callable | None = None) -> tuple[list, TreeDef]:
    """Flatten a pytree into its leaves (in a fixed order) and its structure."""
    leaves: list = []
    return leaves, TreeDef(_flatten(tree, leaves, is_leaf))


def _build(node: tuple, it) -> Any:
    kind = node[0]
    if kind == "*":
        return next(it)
    if kind is None:
        return None
    children = [_build(c, it) for c in node[2]]
    if kind is tuple or kind is list:
        return kind(children)
    if kind is dict:
        return dict(zip(node[1], children))
    if kind in _registry:
        return _registry[kind][1](node[1], children)
    return kind(*children)  # namedtuple


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    """Rebuild a pytree of structure `treedef` from its leaves."""
    it = iter(leaves)
    out = _build(treedef.node, it)
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
    _match(treedef.node, tree, out)
    return out


def _match(node: tuple, x: Any, out: list) -> None:
    kind, meta, children_nodes = node
    if kind == "*":
        out.append(x)
        return
    if kind is None:
        if x is not None:
            raise ValueError(f"expected None, got {type(x).__name__}")
        return
    if kind is dict:
        if not isinstance(x, dict) or tuple(sorted(x, key=_key_order)) != meta:
            raise ValueError(f"expected a dict with keys {list(meta)}, got {_brief(x)}")
        for k, c in zip(meta, children_nodes):
            _match(c, x[k], out)
        return
    if kind in _registry:
        if type(x) is not kind:
            raise ValueError(f"expected {kind.__name__}, got {_brief(x)}")
        children, _ = _registry[kind][0](x)
    else:
        if not isinstance(x, (tuple, list)) or len(x) != len(children_nodes):
            raise ValueError(
                f"expected a {kind.__name__} of length {len(children_nodes)}, got {_brief(x)}"
            )
        children = x
    for c, xc in zip(children_nodes, children):
        _match(c, xc, out)


def _brief(x: Any) -> str:
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of length {len(x)}"
    if isinstance(x, dict):
        return f"a dict with keys {list(x)}"
    return type(x).__name__


def _show(node: tuple) -> str:
    kind, meta, children = node
    if kind == "*":
        return "*"
    if kind is None:
        return "None"
    inner = ", ".join(_show(c) for c in children)
    if kind is tuple:
        return f"({inner}{',' if len(children) == 1 else ''})"
    if kind is list:
        return f"[{inner}]"
    if kind is dict:
        return "{" + ", ".join(f"{k!r}: {_show(c)}" for k, c in zip(meta, children)) + "}"
    return f"{kind.__name__}({inner})"
