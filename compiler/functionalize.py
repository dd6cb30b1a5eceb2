"""functionalize: remove mutation (and views) from a graph, a graph-to-graph rewrite.

The tracer records NumPy's in-place writes as `assign(dst, src)` where `dst` is a base
buffer or a chain of views of one (`view_slice`, `view_reshape`, `view_transpose`,
`view_broadcast`).
Aliasing is therefore static: following view nodes back from any value reaches its *base
buffer* (a graph input, a constant, or the output of a pure node). The rewrite walks the
nodes keeping, for each base buffer, its current value; an `assign` becomes a pure update
of that value (`update_slice` through each slice of the chain, a transpose or reshape back
through the others), and every later read of any alias of the buffer is re-derived from
the new value by replaying its view chain. Reads are derived lazily and shared, so a view
that is only written through costs nothing. See docs/functionalize.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transfuse.ir import lax
from transfuse.ir.core import Aval, Graph, Node
from transfuse.ir.errors import MutationError, TransfuseValueError, UnsupportedError
from transfuse.ir.primitives import PRIMITIVES, Primitive
from transfuse.ir.source import with_location
from transfuse.ir.tracing import Tracer, bind, source_of, trace_to_graph

P = PRIMITIVES
REMOVE_MODES = ("mutations", "mutations_and_views")


# ---------------------------------------------------------------------------------------
# The view table: for each view primitive, its pure twin and how a write into the view
# updates the viewed (parent) value.


@dataclass(frozen=True)
class ViewRule:
    """How to read a view as a pure op, and how to push a write back to its parent."""

    pure: Primitive
    # update(parent, new_view_value, **params) -> the new parent value.
    update: Callable[..., Any]


class Parent:
    """The value a view was taken of; read only by views that do not cover all of it."""

    def __init__(self, aval: Aval, read: Callable[[], Any]):
        self.aval = aval
        self._read = read

    def value(self) -> Any:
        return self._read()


def _update_through_slice(parent: Parent, new: Any, *, starts, steps, sizes) -> Any:
    return lax.update_slice(parent.value(), new, starts, steps, sizes)


def _update_through_reshape(parent: Parent, new: Any, *, new_sizes) -> Any:
    # A reshape view covers its whole parent: the write replaces it.
    return lax.reshape(new, parent.aval.shape)


def _update_through_transpose(parent: Parent, new: Any, *, permutation) -> Any:
    return lax.transpose(new, tuple(int(i) for i in np.argsort(permutation)))


def _update_through_broadcast(parent: Parent, new: Any, *, shape, broadcast_dimensions
                              ) -> Any:
    # np.broadcast_to's view is read-only: NumPy refuses the write.
    raise MutationError(with_location(
        f"assignment destination is read-only: a broadcast view (np.broadcast_to of shape "
        f"{parent.aval.shape} to {tuple(shape)}) cannot be written into; write into a copy "
        f"(np.broadcast_to(...).copy())"))


VIEW_RULES: dict[Primitive, ViewRule] = {
    P["view_slice"]: ViewRule(P["slice"], _update_through_slice),
    P["view_reshape"]: ViewRule(P["reshape"], _update_through_reshape),
    P["view_transpose"]: ViewRule(P["transpose"], _update_through_transpose),
    P["view_broadcast"]: ViewRule(P["broadcast_in_dim"], _update_through_broadcast),
}


# ---------------------------------------------------------------------------------------
# Aliasing state


class _Buffer:
    """A base buffer: its current value in the new graph, and reads derived from it."""

    __slots__ = ("value", "writes", "views")

    def __init__(self, value: Any):
        self.value = value
        self.writes = 0
        # view chain key -> the value read through that chain since the last write, so
        # two reads of one view between writes share a node.
        self.views: dict[tuple, Any] = {}


@dataclass(frozen=True)
class _Alias:
    """An old-graph value: the buffer it lives in and the view nodes leading to it."""

    buffer: _Buffer
    chain: tuple[Node, ...]
    aval: Aval

    def prefix(self, n: int) -> _Alias:
        aval = self.chain[n - 1].outputs[0].aval if n else self.chain[0].inputs[0].aval
        return _Alias(self.buffer, self.chain[:n], aval)


def _view_key(node: Node) -> tuple:
    return (node.prim.name, tuple(sorted(node.params.items())))


def _same_memory(a: _Alias, b: _Alias) -> bool:
    """Whether two aliases are the same elements of the same buffer, in the same order."""
    return a.buffer is b.buffer and len(a.chain) == len(b.chain) and all(
        _view_key(m) == _view_key(n) for m, n in zip(a.chain, b.chain))


def _var_of(x: Any) -> Any:
    return x._var if isinstance(x, Tracer) else None


class _Functionalizer:
    """Walks a graph's nodes under a fresh trace, emitting the pure program."""

    def __init__(self, keep_views: bool):
        self.keep_views = keep_views
        self.view_vars: set = set()  # new-graph values that are views (keep_views only)

    # -- the walk -----------------------------------------------------------------------
    def walk(self, graph: Graph, in_aliases: Sequence[_Alias]) -> list[_Alias]:
        """Process graph's nodes; returns the aliases of its outputs."""
        alias: dict[Any, _Alias] = dict(zip(graph.inputs, in_aliases))
        for var, arr in graph.consts.items():
            # Copy-on-write: a write into a constant updates a new value, never the array.
            alias[var] = _Alias(_Buffer(arr), (), var.aval)
        for node in graph.nodes:
            with source_of(node.source):
                self._step(node, alias)
        return [alias[v] for v in graph.outputs]

    def _step(self, node: Node, alias: dict[Any, _Alias]) -> None:
        prim = node.prim
        if prim in VIEW_RULES:
            parent = alias[node.inputs[0]]
            alias[node.outputs[0]] = _Alias(parent.buffer, parent.chain + (node,),
                                            node.outputs[0].aval)
        elif prim is P["assign"]:
            dst, src = (alias[v] for v in node.inputs)
            # Writing a view into itself (the store-back ending `x[i] += v`) changes nothing.
            if not _same_memory(dst, src):
                self.assign(dst, self.read(src))
        elif prim is P["call"] and has_effects(node.params["graph"]):
            # Inlined, so writes inside the callee reach the caller's buffers.
            outs = self.walk(node.params["graph"], [alias[v] for v in node.inputs])
            alias.update(zip(node.outputs, outs))
        elif prim.effect in ("view", "mutation"):
            raise UnsupportedError(with_location(
                f"functionalize has no rule for the {prim.effect} primitive {prim.name}",
                node.source))
        else:
            args = [self.read(alias[v]) for v in node.inputs]
            outs = bind(prim, *args, **node.params)
            outs = outs if prim.multiple_results else [outs]
            for var, out in zip(node.outputs, outs):
                alias[var] = _Alias(_Buffer(out), (), var.aval)

    # -- reads --------------------------------------------------------------------------
    def read(self, a: _Alias) -> Any:
        """The current value of an alias: its view chain replayed on its buffer's value."""
        value = a.buffer.value
        for n in range(1, len(a.chain) + 1):
            value = self._derive(a.buffer, a.chain[:n], value)
        return value

    def _derive(self, buffer: _Buffer, chain: tuple[Node, ...], parent: Any) -> Any:
        key = tuple(_view_key(n) for n in chain)
        value = buffer.views.get(key)
        if value is None:
            view = chain[-1]
            prim = view.prim if self.keep_views else VIEW_RULES[view.prim].pure
            with source_of(view.source):
                value = bind(prim, parent, **view.params)
            if self.keep_views and _var_of(value) is not None:
                self.view_vars.add(_var_of(value))
            buffer.views[key] = value
        return value

    # -- writes -------------------------------------------------------------------------
    def assign(self, dst: _Alias, src: Any) -> None:
        """dst[...] = src: a new value for dst's buffer, built back through the chain."""
        new = src if lax.shape(src) == dst.aval.shape else lax.broadcast_to(src, dst.aval.shape)
        for n in reversed(range(len(dst.chain))):
            view = dst.chain[n]
            parent = dst.prefix(n)
            new = VIEW_RULES[view.prim].update(
                Parent(parent.aval, lambda parent=parent: self.read(parent)), new,
                **view.params)
        dst.buffer.value = self._own(new)
        dst.buffer.writes += 1
        dst.buffer.views.clear()

    def _own(self, value: Any) -> Any:
        """A value that may become a buffer: views are copied so later views replay."""
        if isinstance(value, Tracer):
            if value._var in self.view_vars:
                return lax.copy(value)
            return value
        return np.array(value, copy=True)


# ---------------------------------------------------------------------------------------
# Entry points


def has_effects(graph: Graph) -> bool:
    """Whether the graph has views or in-place writes (also inside called sub-graphs)."""
    return graph.has_effect("view") or graph.has_effect("mutation")


def check_remove(remove: Any) -> str:
    if remove not in REMOVE_MODES:
        raise TransfuseValueError(
            f"functionalize: remove must be 'mutations' or 'mutations_and_views', "
            f"got {remove!r}")
    return remove


def functionalize_graph(graph: Graph, remove: str = "mutations") -> Graph:
    """A graph without `assign` (and, for 'mutations_and_views', without views).

    Its outputs are graph's outputs followed by the final values of the inputs graph
    writes into (explicit inputs and captures alike); `mutated_inputs` holds those inputs'
    indices into `inputs`, in the same order.
    """
    check_remove(remove)
    needs_work = graph.has_effect("mutation") or (
        remove == "mutations_and_views" and graph.has_effect("view"))
    if not needs_work:
        return graph
    rewriter = _Functionalizer(keep_views=remove == "mutations")
    mutated: list[int] = []

    def body(*inputs: Any) -> list[Any]:
        buffers = [_Buffer(x) for x in inputs]
        out_aliases = rewriter.walk(
            graph, [_Alias(b, (), v.aval) for b, v in zip(buffers, graph.inputs)])
        outs = [rewriter.read(a) for a in out_aliases]
        mutated.extend(i for i, b in enumerate(buffers) if b.writes)
        return outs + [buffers[i].value for i in mutated]

    pure, _ = trace_to_graph(body, graph.in_avals, graph.name)
    return Graph(pure.inputs, pure.nodes, pure.outputs, pure.consts,
                 num_captures=graph.num_captures, has_rng=graph.has_rng, name=graph.name,
                 in_tree=graph.in_tree, out_tree=graph.out_tree,
                 mutated_inputs=tuple(mutated))


def prepare(graph: Graph) -> Graph:
    """The pure graph every transform works on: no `assign`, no views.

    It is `functionalize_graph(graph, 'mutations_and_views')` when graph has effects, else
    graph itself. When the program writes into its inputs, the result has
    `len(graph.mutated_inputs)` extra trailing outputs: the final values of those inputs
    (`mutated_inputs[k]` indexes `inputs`; explicit inputs come first, then captures).
    A transform rewrites the extra outputs like any other output (batch them, carry them
    as primal values), then splits them off with `split_mutations` and hands them to
    `transfuse._functionalize.write_back` with the arguments it passed for the graph's
    inputs, so the caller's arrays are updated after the call. Autodiff treats them as
    non-differentiated outputs (no tangent, no cotangent): derivatives are taken of the
    original outputs with respect to the inputs' values at entry. vmap writes a batched
    new value back into a batched argument (batch dimension moved to that argument's
    in_dim); a batched value for an unbatched argument is a BatchingError, as in torch.
    See docs/functionalize.md.
    """
    if not has_effects(graph):
        return graph
    return functionalize_graph(graph, remove="mutations_and_views")


def num_user_outputs(graph: Graph) -> int:
    """How many of graph's outputs are the program's own (the rest are mutated inputs)."""
    return len(graph.outputs) - len(graph.mutated_inputs)


def split_mutations(graph: Graph, outs: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Split a run's outputs into the program's outputs and the mutated inputs' values."""
    n = num_user_outputs(graph)
    return list(outs[:n]), list(outs[n:])


__all__ = ["functionalize_graph", "prepare", "has_effects", "split_mutations",
           "num_user_outputs", "VIEW_RULES", "REMOVE_MODES", "check_remove"]
