"""Forward-mode transforms with torch.func's signatures: jvp, linearize, jacfwd, hessian.

Each stages the user's function into a graph (`_staging.stage`), makes it pure
(`prepare`), rewrites it with the JVP rules (compiler/jvp.py), caches the rewritten graph
by signature when no trace is active, and runs it (or inlines it into the enclosing trace,
which is how transforms compose). See docs/autodiff.md.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transfuse.compiler.functionalize import split_mutations
from transfuse.compiler.jvp import jvp_graph_with_zeros
from transfuse.compiler.partial_eval import Split, split_jvp_graph
from transfuse.compiler.simplify import dce
from transfuse.ir import lax
from transfuse.ir.core import Graph, is_inexact
from transfuse.ir.errors import (
    BatchingError,
    DTypeError,
    ShapeError,
    TransfuseTypeError,
    TransfuseValueError,
)
from transfuse.ir.source import with_location
from transfuse.ir.tracing import trace_to_graph
from transfuse.ir.tree import TreeDef, tree_flatten, tree_unflatten

from ._functionalize import write_back
from ._staging import (
    GraphCache,
    check_argnums,
    execute,
    in_trace,
    is_array_leaf,
    leaf_aval,
    normalize_argnums,
    signature,
    stage,
)

_CACHE = GraphCache()
RANDOMNESS = ("error", "same", "different")


# ---------------------------------------------------------------------------------------
# Arguments


def _leaf_paths(tree: Any, prefix: str) -> list[str]:
    """A readable path for each leaf of tree, in tree_flatten's order."""
    leaves, treedef = tree_flatten(tree)
    paths: list[str] = []

    def walk(x: Any, t: TreeDef, path: str) -> None:
        if t.kind == "*":
            paths.append(path)
        elif t.kind is dict:
            for k, c in zip(t.meta, t.children):
                walk(x[k], c, f"{path}[{k!r}]")
        elif isinstance(x, (tuple, list)):
            for i, (xi, c) in enumerate(zip(x, t.children)):
                walk(xi, c, f"{path}[{i}]")
        else:  # a registered node: number its leaves
            paths.extend(f"{path}<leaf {i}>" for i in range(t.num_leaves))

    walk(tree, treedef, prefix)
    return paths if len(paths) == len(leaves) else [f"{prefix}<leaf {i}>"
                                                    for i in range(len(leaves))]


def _differentiable_leaf(x: Any, what: str, transform: str) -> Any:
    """A leaf to differentiate: floating arrays; Python floats become float64 0-d arrays."""
    if isinstance(x, bool) or isinstance(x, (int, np.integer, np.bool_)):
        raise DTypeError(with_location(
            f"{transform}: {what} is a Python/NumPy {type(x).__name__}; "
            "differentiation needs floating-point inputs (float32 or float64)"))
    if isinstance(x, (float, complex)):
        return np.asarray(x)
    if not is_array_leaf(x):
        raise TransfuseTypeError(with_location(
            f"{transform}: {what} is a {type(x).__name__}; only arrays "
            "(and Python floats) can be differentiated"))
    dtype = leaf_aval(x).dtype
    if not is_inexact(dtype):
        raise DTypeError(with_location(
            f"{transform}: {what} has dtype {dtype}; differentiation needs "
            "floating-point or complex inputs (float32, float64, complex64, complex128). "
            "Leave it out of argnums/primals or cast it with .astype(float)"))
    return x


def _tangent_leaf(t: Any, primal: Any, what: str, transform: str) -> Any:
    """A tangent matching its primal's shape and dtype (Python scalars take its dtype)."""
    p_aval = leaf_aval(primal)
    if isinstance(t, (int, float, complex)) and not isinstance(t, bool):
        t = np.asarray(t, dtype=p_aval.dtype)
    if not is_array_leaf(t):
        raise TransfuseTypeError(with_location(
            f"{transform}: the tangent for {what} is a "
            f"{type(t).__name__}; "
            "expected an array"))
    t_aval = leaf_aval(t)
    if t_aval.shape != p_aval.shape:
        raise ShapeError(with_location(
            f"{transform}: the tangent for {what} has shape {t_aval.shape}, but the "
            f"primal has shape {p_aval.shape}; they must match"))
    if t_aval.dtype != p_aval.dtype:
        raise DTypeError(with_location(
            f"{transform}: the tangent for {what} has dtype {t_aval.dtype}, but the "
            f"primal has dtype {p_aval.dtype}; they must match"))
    return t


def _as_tuple(x: Any, name: str, transform: str) -> tuple:
    if isinstance(x, (tuple, list)):
        return tuple(x)
    raise TransfuseTypeError(with_location(
        f"{transform}: expected {name} to be a tuple (e.g. "
        f"{name}=(x,) so that f(*{name}) is valid), got a "
        f"{type(x).__name__}"))


def _primal_leaves(primals: tuple, transform: str) -> tuple[list, TreeDef]:
    leaves, tree = tree_flatten(primals)
    if not leaves:
        raise TransfuseValueError(with_location(
            f"{transform}: primals must contain at least one array"))
    paths = _leaf_paths(primals, "primals")
    return [_differentiable_leaf(x, p, transform) for x, p in zip(leaves, paths)], tree


def _tangent_leaves(tangents: Any, primal_tree: TreeDef, primal_leaves: list,
                    transform: str) -> list:
    leaves, tree = tree_flatten(tangents)
    if tree != primal_tree:
        raise TransfuseValueError(with_location(
            f"{transform}: tangents must have the structure of the primals: expected "
            f"{primal_tree}, got {tree}"))
    paths = _leaf_paths(tangents, "tangents")
    return [_tangent_leaf(t, p, path.replace("tangents", "primals", 1), transform)
            for t, p, path in zip(leaves, primal_leaves, paths)]


def _outputs(staged_tree: TreeDef, has_aux: bool, transform: str
             ) -> tuple[TreeDef, TreeDef | None]:
    """The output structure and (with has_aux) the aux structure of f's result."""
    if has_aux:
        if staged_tree.kind is not tuple or len(staged_tree.children) != 2:
            raise TransfuseTypeError(with_location(
                f"{transform}: with has_aux=True the function must "
                f"return a tuple (output, aux), got {staged_tree}"))
        out_tree, aux_tree = staged_tree.children
    else:
        out_tree, aux_tree = staged_tree, None
    if out_tree.num_leaves == 0:
        raise TransfuseTypeError(with_location(
            f"{transform}: the function must return at least one "
            f"array, got {out_tree}"))
    return out_tree, aux_tree


def _run(graph: Graph, args: list, implicit: list) -> list:
    """Run a graph, write mutated inputs back to the caller, return the program's outputs."""
    outs = _detached(graph, execute(graph, args, implicit))
    outs, new_values = split_mutations(graph, outs)
    if new_values:
        write_back(list(args) + list(implicit), graph.mutated_inputs, new_values)
    return outs


def _detached(graph: Graph, outs: list) -> list:
    """Outputs that are the (cached) graph's constants or its inputs are copied."""
    shared = set(graph.consts) | set(graph.inputs)
    return [np.array(o, copy=True) if v in shared and isinstance(o, np.ndarray) else o
            for v, o in zip(graph.outputs, outs)]


def _keep_outputs(graph: Graph, keep: Sequence[int]) -> Graph:
    """graph with only the outputs at `keep` (and its mutated inputs' values), pruned."""
    n_mutated = len(graph.mutated_inputs)
    user = graph.outputs[:len(graph.outputs) - n_mutated]
    mutated = graph.outputs[len(graph.outputs) - n_mutated:]
    return dce(Graph(graph.inputs, graph.nodes, [user[i] for i in keep] + mutated,
                     graph.consts, graph.num_captures, graph.has_rng, graph.name,
                     mutated_inputs=graph.mutated_inputs))


def _cached(func: Callable, key: Any, build: Callable[[], Any]) -> Any:
    """build(), cached per function and key when no trace is active."""
    if in_trace():
        return build()
    return _CACHE.lookup(func, key, build)


# ---------------------------------------------------------------------------------------
# jvp


@dataclass
class _JvpEntry:
    graph: Graph  # (primals, tangents, implicit) -> (outputs, aux, output tangents)
    out_tree: TreeDef
    aux_tree: TreeDef | None
    out_nonzero: list[bool]
    implicit: list


def _jvp_entry(func: Callable, primals: tuple, has_aux: bool) -> _JvpEntry:
    staged = stage(func, primals, concrete=True)
    out_tree, aux_tree = _outputs(staged.out_tree, has_aux, "jvp")
    n_out = out_tree.num_leaves
    n_all = staged.out_tree.num_leaves
    graph, out_nonzero = jvp_graph_with_zeros(staged.graph, [True] * len(staged.dyn_index))
    # Outputs of the jvp graph: all primal outputs, then tangents; aux needs none.
    graph = _keep_outputs(graph, list(range(n_all)) + [n_all + i for i in range(n_out)])
    return _JvpEntry(graph, out_tree, aux_tree, out_nonzero[:n_out], staged.implicit)


def jvp(func: Callable, primals: Any, tangents: Any, *, strict: bool = False,
        has_aux: bool = False) -> tuple:
    """(func(*primals), the directional derivative of func at primals along tangents).

    With has_aux=True, func returns (output, aux) and the result is (output, jvp_out, aux).
    """
    primals = _as_tuple(primals, "primals", "jvp")
    tangents = _as_tuple(tangents, "tangents", "jvp")
    p_leaves, p_tree = _primal_leaves(primals, "jvp")
    t_leaves = _tangent_leaves(tangents, p_tree, p_leaves, "jvp")
    args = tree_unflatten(p_tree, p_leaves)
    key = ("jvp", has_aux, signature(p_leaves, range(len(p_leaves)), p_tree))
    entry = _cached(func, key, lambda: _jvp_entry(func, args, has_aux))
    if strict and not all(entry.out_nonzero):
        raise TransfuseValueError(with_location(
            "jvp(f, primals, tangents, strict=True): an output of f "
            "is independent of the inputs; this is not allowed with "
            "strict=True"))
    outs = _run(entry.graph, p_leaves + t_leaves, entry.implicit)
    n_out = entry.out_tree.num_leaves
    n_aux = len(outs) - 2 * n_out
    output = tree_unflatten(entry.out_tree, outs[:n_out])
    jvp_out = tree_unflatten(entry.out_tree, outs[n_out + n_aux:])
    if has_aux:
        return output, jvp_out, tree_unflatten(entry.aux_tree, outs[n_out:n_out + n_aux])
    return output, jvp_out


# ---------------------------------------------------------------------------------------
# linearize


@dataclass
class _LinearizeEntry:
    split: Split
    out_tree: TreeDef
    implicit: list


def _linearize_entry(func: Callable, primals: tuple) -> _LinearizeEntry:
    staged = stage(func, primals, concrete=True)
    out_tree, _ = _outputs(staged.out_tree, False, "linearize")
    n = len(staged.dyn_index)
    graph, _ = jvp_graph_with_zeros(staged.graph, [True] * n)
    return _LinearizeEntry(split_jvp_graph(graph, n, n), out_tree, staged.implicit)


def linearize(func: Callable, *primals: Any) -> tuple[Any, Callable]:
    """(func(*primals), jvp_fn): jvp_fn(*tangents) runs only the tangent computation."""
    if not primals:
        raise TransfuseValueError(with_location(
            "linearize: primals must contain at least one array"))
    p_leaves, p_tree = _primal_leaves(primals, "linearize")
    args = tree_unflatten(p_tree, p_leaves)
    key = ("linearize", signature(p_leaves, range(len(p_leaves)), p_tree))
    entry = _cached(func, key, lambda: _linearize_entry(func, args))
    n_out = entry.out_tree.num_leaves
    results = _run(entry.split.primal, p_leaves, entry.implicit)
    outs, residuals = results[:n_out], results[n_out:]

    def jvp_fn(*tangents: Any) -> Any:
        """The tangent of func's output along tangents (one per primal)."""
        t_leaves = _tangent_leaves(tangents, p_tree, p_leaves, "linearize")
        outs = execute(entry.split.tangent, t_leaves + residuals)
        return tree_unflatten(entry.out_tree, _detached(entry.split.tangent, outs))

    return tree_unflatten(entry.out_tree, outs), jvp_fn


# ---------------------------------------------------------------------------------------
# jacfwd


def _argument_name(func: Callable, position: int) -> str:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return f"argument {position}"
    if position < len(params) and params[position].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return f"argument {position} ({params[position].name!r})"
    return f"argument {position}"


def _differentiable_args(func: Callable, args: tuple, argnums: tuple[int, ...],
                         transform: str) -> tuple:
    """args with the leaves of the argnums arguments checked (Python floats -> arrays)."""
    args = list(args)
    for i in argnums:
        name = _argument_name(func, i)
        leaves, tree = tree_flatten(args[i])
        if not leaves:
            raise TransfuseValueError(with_location(
                f"{transform}: {name} has no arrays to differentiate"))
        paths = _leaf_paths(args[i], name)
        args[i] = tree_unflatten(tree, [_differentiable_leaf(x, p, transform)
                                        for x, p in zip(leaves, paths)])
    return tuple(args)


@dataclass
class _JacEntry:
    graph: Graph  # (dynamic args, implicit) -> (jacobian blocks, aux leaves)
    out_tree: TreeDef
    aux_tree: TreeDef | None
    implicit: list


def jacfwd(func: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False, *,
           holomorphic: bool = False, randomness: str = "error") -> Callable:
    """The Jacobian of func by forward mode: shape out.shape + in.shape per leaf pair.

    The standard basis is pushed forward in one batched evaluation of the tangent graph
    (not a Python loop over basis vectors). The result has the structure of func's output,
    each leaf holding the structure of the argument (a tuple over argnums for a tuple).
    """
    check_argnums(argnums, "jacfwd")
    if randomness not in RANDOMNESS:
        raise TransfuseValueError(with_location(
            f"jacfwd: randomness must be one of {RANDOMNESS}, got "
            f"{randomness!r}"))

    @functools.wraps(func)
    def jac_fn(*args: Any, **kwargs: Any) -> Any:
        nums = normalize_argnums(argnums, len(args), "jacfwd")
        if len(set(nums)) != len(nums):
            raise TransfuseValueError(with_location(
                f"jacfwd: argnums {argnums!r} repeats an argument"))
        args = _differentiable_args(func, args, nums, "jacfwd")
        _check_jacfwd_inputs(args, nums, holomorphic)
        leaves, in_tree = tree_flatten((args, dict(kwargs)))
        dyn_index = [i for i, x in enumerate(leaves) if is_array_leaf(x)]
        key = ("jacfwd", nums, has_aux, holomorphic, randomness,
               signature(leaves, dyn_index, in_tree))
        entry = _cached(func, key, lambda: _jacfwd_entry(func, args, kwargs, nums, has_aux,
                                                         randomness, holomorphic))
        outs = _run(entry.graph, [leaves[i] for i in dyn_index], entry.implicit)
        return _assemble(entry, outs, args, nums, isinstance(argnums, int))

    return jac_fn


def _assemble(entry: _JacEntry, outs: list, args: tuple, nums: tuple[int, ...],
              single: bool) -> Any:
    """Jacobian blocks -> output structure of (argument structure) trees."""
    arg_trees = [tree_flatten(args[i])[1] for i in nums]
    n_in = sum(t.num_leaves for t in arg_trees)
    n_out = entry.out_tree.num_leaves
    per_output = []
    for o in range(n_out):
        blocks = iter(outs[o * n_in:(o + 1) * n_in])
        trees = tuple(tree_unflatten(t, [next(blocks) for _ in range(t.num_leaves)])
                      for t in arg_trees)
        per_output.append(trees[0] if single else trees)
    jac = tree_unflatten(entry.out_tree, per_output)
    if entry.aux_tree is None:
        return jac
    return jac, tree_unflatten(entry.aux_tree, outs[n_out * n_in:])


def _check_jacfwd_inputs(args: tuple, nums: tuple[int, ...], holomorphic: bool) -> None:
    """As JAX: complex inputs need holomorphic=True (a real Jacobian of a complex input is
    not one matrix of complex numbers), and holomorphic=True needs complex inputs."""
    for i in nums:
        for leaf in tree_flatten(args[i])[0]:
            kind = leaf_aval(leaf).dtype.kind
            if holomorphic and kind != "c":
                raise DTypeError(with_location(
                    f"jacfwd with holomorphic=True requires inputs with complex dtype, but "
                    f"got {leaf_aval(leaf).dtype}"))
            if not holomorphic and kind == "c":
                raise DTypeError(with_location(
                    f"jacfwd requires real-valued inputs (a floating dtype), but got "
                    f"{leaf_aval(leaf).dtype}. For holomorphic differentiation, pass "
                    "holomorphic=True. For non-holomorphic functions of complex inputs, use "
                    "jvp or jacrev"))


def _jacfwd_entry(func: Callable, args: tuple, kwargs: dict, nums: tuple[int, ...],
                  has_aux: bool, randomness: str, holomorphic: bool) -> _JacEntry:
    staged = stage(func, args, kwargs, concrete=True)
    out_tree, aux_tree = _outputs(staged.out_tree, has_aux, "jacfwd")
    if holomorphic:
        for i, aval in enumerate(staged.graph.out_avals[:out_tree.num_leaves]):
            if aval.dtype.kind != "c":
                raise DTypeError(with_location(
                    f"jacfwd with holomorphic=True requires outputs with complex dtype, but "
                    f"output leaf {i} has dtype {aval.dtype}"))
    if randomness == "error" and staged.graph.has_effect("random"):
        raise BatchingError(with_location(
            "jacfwd: the function draws random numbers, and randomness="
            "'error'; pass randomness='same' (one draw for every basis "
            "vector) or 'different'"))
    diff_positions = _diff_positions(staged, args, nums)  # dynamic-input index, argnums order
    nonzero = [i in set(diff_positions) for i in range(len(staged.dyn_index))]
    graph, _ = jvp_graph_with_zeros(staged.graph, nonzero)
    n_all, n_out = staged.out_tree.num_leaves, out_tree.num_leaves
    graph = _keep_outputs(graph, list(range(n_all)) + [n_all + i for i in range(n_out)])
    plan = _JacPlan(graph, staged, diff_positions, n_all, n_out, randomness)
    jac_graph = plan.build()
    return _JacEntry(jac_graph, out_tree, aux_tree, plan.implicit)


def _diff_positions(staged: Any, args: tuple, nums: tuple[int, ...]) -> list[int]:
    """For each differentiated leaf (argnums order), its index among the graph's inputs."""
    counts = [len(tree_flatten(a)[0]) for a in args]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    dyn_of_leaf = {leaf: k for k, leaf in enumerate(staged.dyn_index)}
    return [dyn_of_leaf[leaf] for i in nums for leaf in range(starts[i], starts[i + 1])]


class _JacPlan:
    """Builds the Jacobian graph: primal once, the tangent part batched over the basis."""

    def __init__(self, graph: Graph, staged: Any, diff_positions: list[int], n_all: int,
                 n_out: int, randomness: str):
        self.graph = graph
        self.staged = staged
        self.diff_positions = diff_positions
        self.n_all, self.n_out = n_all, n_out
        self.randomness = randomness
        self.n_dyn = len(staged.dyn_index)
        self.n_captures = staged.graph.num_captures
        self.implicit: list = []

    def build(self) -> Graph:
        dyn_avals = [v.aval for v in self.graph.inputs[:self.n_dyn]]
        capture_avals = [v.aval for v in self.graph.inputs[
            len(self.graph.inputs) - int(self.graph.has_rng) - self.n_captures:
            len(self.graph.inputs) - int(self.graph.has_rng)]]
        body_graph, rng_implicit = trace_to_graph(self._body, dyn_avals + capture_avals,
                                                  name=f"jacfwd_{self.staged.graph.name}")
        jac = dce(Graph(body_graph.inputs, body_graph.nodes, body_graph.outputs,
                        body_graph.consts, num_captures=self.n_captures,
                        has_rng=body_graph.has_rng, name=body_graph.name,
                        mutated_inputs=self._mutated()))
        self.implicit = list(self.staged.implicit[:self.n_captures]) + list(rng_implicit)
        return jac

    def _mutated(self) -> tuple[int, ...]:
        # jvp graph inputs: dyn, tangents, captures, key; the Jacobian graph's: dyn,
        # captures, key.
        n_t = len(self.diff_positions)
        return tuple(i if i < self.n_dyn else i - n_t for i in self.graph.mutated_inputs)

    def _body(self, *inputs: Any) -> list:
        dyn, captures = list(inputs[:self.n_dyn]), list(inputs[self.n_dyn:])
        # The random-key placeholder (if any) is resolved by the builder that runs it.
        implicit = captures + list(self.staged.implicit[self.n_captures:])
        diff_avals = [lax.aval(dyn[p]) for p in self.diff_positions]
        basis = _standard_basis(diff_avals)
        order = sorted(range(len(self.diff_positions)), key=lambda k: self.diff_positions[k])
        if self.randomness == "different" and self.graph.has_rng:
            primal, batched, mutated = self._pushforward_redrawing(dyn, implicit, basis,
                                                                  order)
        else:
            primal, batched, mutated = self._pushforward(dyn, implicit, basis, order)
        blocks = [_jacobian_block(t, diff_avals, k)
                  for t in batched for k in range(len(diff_avals))]
        return blocks + primal[self.n_out:self.n_all] + mutated

    def _pushforward(self, dyn, implicit, basis, order):
        """Primal part once, tangent part batched over the basis (vmap)."""
        n_t = len(self.diff_positions)
        split = split_jvp_graph(self.graph, self.n_dyn, n_t, self.n_all)
        results = execute(split.primal, dyn, implicit)
        results, mutated = split_mutations(split.primal, results)
        primal, residuals = results[:self.n_all], results[self.n_all:]

        def tangent_fn(*tangents):
            return execute(split.tangent, list(tangents) + residuals)
        return primal, _batched(tangent_fn, [basis[k] for k in order], self.graph,
                                self.n_out), mutated

    def _pushforward_redrawing(self, dyn, implicit, basis, order):
        """randomness='different': the whole jvp batched, each basis vector its own draw."""
        from ._vmap import vmap

        def full_fn(*tangents):
            return tuple(execute(self.graph, dyn + list(tangents) + implicit[:self.n_captures],
                                 implicit[self.n_captures:]))
        outs = vmap(full_fn, randomness="different")(*[basis[k] for k in order])
        # Primal values (and mutated inputs' values) of the first basis vector's draw.
        firsts = [_row(o, 0) for o in outs]
        end = self.n_all + self.n_out
        return firsts[:self.n_all], list(outs[self.n_all:end]), firsts[end:]


def _batched(tangent_fn: Callable, basis: list, graph: Graph, n_out: int) -> list:
    """tangent_fn over each basis row, stacked on a leading axis: vmap when available."""
    n_basis = lax.shape(basis[0])[0] if basis else 0
    out_avals = graph.out_avals[len(graph.outputs) - len(graph.mutated_inputs) - n_out:
                                len(graph.outputs) - len(graph.mutated_inputs)]
    if n_basis == 0:
        return [lax.full((0,) + a.shape, 0, a.dtype) for a in out_avals]
    vmap = _vmap_or_none()
    if vmap is not None:
        return list(vmap(lambda *ts: tuple(tangent_fn(*ts)))(*basis))
    # Fallback until vmap exists: the tangent part unrolled once per basis vector.
    rows = [tangent_fn(*[_row(b, i) for b in basis]) for i in range(n_basis)]
    return [lax.concatenate([lax.expand_dims(r[o], [0]) for r in rows], 0)
            for o in range(n_out)]


def _vmap_or_none() -> Callable | None:
    try:
        from ._vmap import vmap
    except ImportError:
        return None
    return vmap


def _row(x: Any, i: int) -> Any:
    shape = lax.shape(x)
    return lax.reshape(lax.slice_axis(x, 0, i, 1), shape[1:])


def _standard_basis(avals: list) -> list:
    """For each leaf, the basis directions along it: shape (N,) + leaf shape, N the total."""
    sizes = [a.size for a in avals]
    total = int(sum(sizes))
    basis, offset = [], 0
    for aval, size in zip(avals, sizes):
        rows = lax.iota(np.int64, (total, size), 0)
        cols = lax.iota(np.int64, (total, size), 1)
        cols = lax.add(cols, offset) if offset else cols
        eye = lax.convert(lax.eq(rows, cols), aval.dtype)
        basis.append(lax.reshape(eye, (total,) + aval.shape))
        offset += size
    return basis


def _jacobian_block(batched: Any, in_avals: list, k: int) -> Any:
    """The (out.shape + in.shape) block of input leaf k from a (N,) + out.shape tangent."""
    offset = sum(a.size for a in in_avals[:k])
    aval = in_avals[k]
    out_shape = lax.shape(batched)[1:]
    n_basis = lax.shape(batched)[0]
    block = batched if aval.size == n_basis else lax.slice_axis(batched, 0, offset, aval.size)
    block = lax.reshape(block, aval.shape + out_shape)
    n_in = len(aval.shape)
    perm = [n_in + i for i in range(len(out_shape))] + list(range(n_in))
    return lax.transpose(block, perm)


# ---------------------------------------------------------------------------------------
# hessian


def hessian(func: Callable, argnums: int | tuple[int, ...] = 0, *,
            holomorphic: bool = False) -> Callable:
    """The Hessian of func, forward-over-reverse: jacfwd(jacrev(func, argnums), argnums)."""
    from ._reverse import jacrev

    return jacfwd(jacrev(func, argnums, holomorphic=holomorphic), argnums,
                  holomorphic=holomorphic)


__all__ = ["jvp", "linearize", "jacfwd", "hessian"]
