"""Staging: from a user function and its (pytree) arguments to a graph, and back.

Every transform does the same three things: flatten the arguments, trace the function on
the dynamic leaves into a graph, and run a (rewritten) graph on concrete values (the
reference interpreter) or inline it into an enclosing trace. This module does them once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transfuse.ir.core import Aval, Graph, aval_of
from transfuse.ir.interpreter import interpret
from transfuse.ir.tracing import (
    Tracer,
    current_builder,
    inline,
    resolve_implicit,
    trace_to_graph,
)
from transfuse.ir.tree import TreeDef, tree_flatten, tree_unflatten
from transfuse.random import next_key

ARRAY_TYPES = (np.ndarray, np.generic, Tracer)


def is_array_leaf(x: Any) -> bool:
    """Leaves that are traced: arrays and traced values (Python scalars stay static)."""
    return isinstance(x, ARRAY_TYPES)


@dataclass
class Staged:
    """A traced call: the graph, where its inputs came from, and how to rebuild outputs."""

    graph: Graph
    in_tree: TreeDef
    out_tree: TreeDef
    leaves: list  # all argument leaves, as given
    dyn_index: list[int]  # positions of the traced leaves among `leaves`
    implicit: list  # values for the graph's implicit inputs (captures, key placeholder)

    @property
    def dyn_args(self) -> list:
        return [self.leaves[i] for i in self.dyn_index]


def leaf_aval(x: Any) -> Aval:
    return x.aval if isinstance(x, Tracer) else aval_of(x)


def stage(fn: Callable, args: Sequence[Any], kwargs: dict | None = None, *,
          is_dynamic: Callable[[int, Any], bool] | None = None, name: str | None = None,
          concrete: bool = False) -> Staged:
    """Trace fn(*args, **kwargs) with its array leaves as graph inputs.

    concrete: the trace may ask for its values (np.nonzero, x[mask]: ir/concrete.py); a
    graph that did is not cached (it holds what the data gave).
    """
    leaves, in_tree = tree_flatten((tuple(args), dict(kwargs or {})))
    check = is_dynamic or (lambda i, x: is_array_leaf(x))
    dyn_index = [i for i, x in enumerate(leaves) if check(i, x)]
    out_tree_box: list[TreeDef] = []

    def flat_fn(*tracers: Tracer) -> list:
        full = list(leaves)
        for i, t in zip(dyn_index, tracers):
            full[i] = t
        a, k = tree_unflatten(in_tree, full)
        out_leaves, out_tree = tree_flatten(fn(*a, **k))
        out_tree_box.append(out_tree)
        return out_leaves

    in_avals = [leaf_aval(leaves[i]) for i in dyn_index]
    known = [leaves[i] for i in dyn_index] if concrete else None
    graph, implicit = trace_to_graph(flat_fn, in_avals, name or _name_of(fn), known)
    graph.in_tree, graph.out_tree = in_tree, out_tree_box[0]
    for recording in _recordings():
        recording.extend(graph.const_origins)
        if graph.data_dependent:
            recording.append(DATA_DEPENDENT)
    return Staged(graph, in_tree, out_tree_box[0], leaves, dyn_index, implicit)


def _name_of(fn: Callable) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return name if name.isidentifier() else "f"


def execute(graph: Graph, args: Sequence[Any], implicit: Sequence[Any] = ()) -> list:
    """Run a graph: inline it into the enclosing trace, or interpret it with NumPy."""
    graph, implicit_args = resolve_implicit(graph, implicit, next_key)
    full = list(args) + implicit_args
    if current_builder() is not None:
        _guard_concrete(full)
        return inline(graph, full)
    return interpret(graph, [np.asarray(a) for a in full])


def _guard_concrete(values: Sequence[Any]) -> None:
    """Arrays a transform runs on inside an enclosing trace: the enclosing caches guard them.

    A nested transform of concrete arrays (`grad(g)(c)` with c a closure's array, inside an
    outer `grad`) folds to constants of the outer graph; those constants are its results,
    not c, so without this the outer cache would not see c change in place."""
    recordings = _recordings()
    if not recordings:  # no cache build is recording: nothing to guard, nothing to copy
        return
    arrays = [(v, np.array(v, copy=True)) for v in values if isinstance(v, np.ndarray)]
    for recording in recordings:
        recording.extend(arrays)


def signature(staged_leaves: Sequence[Any], dyn_index: Sequence[int], in_tree: TreeDef
              ) -> tuple:
    """A hashable signature: tree structure, avals of traced leaves, static leaves' values."""
    dyn = set(dyn_index)
    parts: list[Any] = [in_tree]
    for i, x in enumerate(staged_leaves):
        if i in dyn:
            a = leaf_aval(x)
            parts.append((a.shape, a.dtype.str))
        else:
            parts.append(static_key(x))
    return tuple(parts)


def static_key(x: Any) -> Any:
    """A static leaf in a cache key: by value when hashable, else by identity."""
    try:
        hash(x)
        return (type(x), x)
    except TypeError:
        return ("id", id(x))


_local = threading.local()
# In a cache build's guards: the graph depends on the argument values, never reuse it.
DATA_DEPENDENT = (None, None)


def _recordings() -> list[list]:
    """The guard lists of the cache builds in progress on this thread (innermost last)."""
    stack = getattr(_local, "recordings", None)
    if stack is None:
        stack = _local.recordings = []
    return stack


def _guards_hold(guards: Sequence[tuple[Any, np.ndarray]]) -> bool:
    """Every captured array still holds what it held when the graph was traced."""
    for original, snapshot in guards:
        if isinstance(original, np.ndarray) and not (
                original.shape == snapshot.shape and np.array_equal(original, snapshot,
                                                                    equal_nan=True)):
            return False
    return True


class GraphCache:
    """Per-function caches of transformed graphs; entries die with the function.

    Arrays a function closes over are baked into its traced graph. An entry remembers them
    (guards) and is dropped when one of them has changed in place since (an optimiser step,
    load_state_dict), so a cached transform never computes with stale values. Rebinding a
    global to a new array is not seen: pass changing arrays as arguments.
    """

    def __init__(self) -> None:
        self._by_fn: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._strong: dict[int, tuple[Any, dict]] = {}
        self.lock = threading.RLock()

    def _table(self, fn: Any) -> dict:
        try:
            return self._by_fn.setdefault(fn, {})
        except TypeError:  # not weak-referenceable: keep it alive with its entries
            entry = self._strong.setdefault(id(fn), (fn, {}))
            return entry[1]

    def get(self, fn: Any, key: Any) -> Any:
        """The cached value, or None (also when a captured array changed since)."""
        with self.lock:
            table = self._table(fn)
            entry = table.get(key)
            if entry is None:
                return None
            value, guards = entry
            if guards and not _guards_hold(guards):
                del table[key]
                return None
            return value

    def put(self, fn: Any, key: Any, value: Any, guards: Sequence = ()) -> Any:
        with self.lock:
            self._table(fn)[key] = (value, [g for g in guards if isinstance(g[0], np.ndarray)])
        return value

    def lookup(self, fn: Any, key: Any, build: Callable[[], Any]) -> Any:
        """The cached value, or build() — cached with the arrays its tracing captured."""
        value = self.get(fn, key)
        if value is not None:
            return value
        stack = _recordings()
        stack.append([])
        try:
            value = build()
        finally:
            guards = stack.pop()
        if stack:  # an enclosing build captured these arrays too
            stack[-1].extend(guards)
        if any(g is DATA_DEPENDENT for g in guards):
            return value
        return self.put(fn, key, value, guards)

    def entries(self, fn: Any) -> list:
        """The cached values for fn (for tests and inspection)."""
        with self.lock:
            return [value for value, _ in self._table(fn).values()]

    def size(self, fn: Any) -> int:
        with self.lock:
            return len(self._table(fn))


def check_argnums(argnums: Any, what: str) -> tuple[int, ...]:
    """argnums as a non-empty tuple of ints; a TypeError at the user's line otherwise."""
    from transfuse.ir.errors import TransfuseTypeError
    from transfuse.ir.source import with_location
    nums = (argnums,) if _is_int(argnums) else argnums
    if not (isinstance(nums, (tuple, list)) and nums and all(_is_int(a) for a in nums)):
        raise TransfuseTypeError(with_location(
            f"{what}: argnums must be an int or a non-empty tuple of ints, got {argnums!r}"))
    return tuple(int(a) for a in nums)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def normalize_argnums(argnums: int | Sequence[int], nargs: int, what: str) -> tuple[int, ...]:
    """argnums as a tuple of non-negative ints, with a clear error when out of range."""
    from transfuse.ir.errors import TransfuseValueError
    from transfuse.ir.source import with_location
    out = []
    for a in check_argnums(argnums, what):
        if not -nargs <= a < nargs:
            raise TransfuseValueError(with_location(
                f"{what}: argnums {a} is out of range for a function called with {nargs} "
                f"positional argument(s)"))
        out.append(a % nargs)
    return tuple(out)


def in_trace() -> bool:
    return current_builder() is not None


def unflatten_outputs(out_tree: TreeDef, outs: Sequence[Any]) -> Any:
    return tree_unflatten(out_tree, list(outs))


def make_graph(func: Callable, *, static_argnums: int | Sequence[int] = ()) -> Callable:
    """make_graph(f)(*args): the SSA graph of f at those arguments (print() shows it)."""
    static = {static_argnums} if isinstance(static_argnums, int) else set(static_argnums)

    def build(*args: Any, **kwargs: Any) -> Graph:
        n_leaves = [len(tree_flatten(a)[0]) for a in args]
        static_leaf = set()
        start = 0
        for pos, n in enumerate(n_leaves):
            if pos in static:
                static_leaf.update(range(start, start + n))
            start += n
        staged = stage(func, args, kwargs,
                       is_dynamic=lambda i, x: i not in static_leaf and is_array_leaf(x))
        return staged.graph

    return build
