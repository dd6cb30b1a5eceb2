"""Reverse mode, the public API: vjp, grad, grad_and_value, jacrev (torch.func signatures).

Each call stages the function on its arguments, `prepare`s the graph, splits it with
`vjp_graph` into a forward graph (outputs + residuals) and a backward graph, caches both
by signature when no trace is active, runs the forward graph once and the backward graph
per cotangent. Inside an outer trace both are inlined into it, which is how reverse mode
composes with itself and with the other transforms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transfuse.compiler.functionalize import num_user_outputs, prepare
from transfuse.compiler.vjp import VJPGraphs, is_differentiable, vjp_graph
from transfuse.ir import lax
from transfuse.ir.core import Aval, Graph, is_inexact
from transfuse.ir.errors import DTypeError, ShapeError, TransfuseTypeError, TransfuseValueError
from transfuse.ir.source import with_location
from transfuse.ir.tracing import Tracer
from transfuse.ir.tree import LEAF, TreeDef, tree_flatten, tree_unflatten

from ._functionalize import check_no_aliasing, write_back
from ._staging import (
    GraphCache,
    check_argnums,
    execute,
    in_trace,
    is_array_leaf,
    normalize_argnums,
    signature,
    stage,
)

_CACHE = GraphCache()


# ---------------------------------------------------------------------------------------
# Arguments: which leaves are differentiated


def _leaf_paths(tree: Any, prefix: str = "") -> list[str]:
    """Readable paths of a pytree's leaves (`['w']`, `[1][0]`), in flattening order."""
    if type(tree) in (tuple, list):
        return [p for i, c in enumerate(tree) for p in _leaf_paths(c, f"{prefix}[{i}]")]
    if type(tree) is dict:
        keys = sorted(tree, key=lambda k: (type(k).__name__, k))
        return [p for k in keys for p in _leaf_paths(tree[k], f"{prefix}[{k!r}]")]
    if tree is None:
        return []
    return [prefix]


def _describe(x: Any) -> str:
    if isinstance(x, (np.ndarray, np.generic, Tracer)):
        return f"an array of dtype {x.dtype} and shape {tuple(x.shape)}"
    return f"a Python {type(x).__name__}" if type(x) in (bool, int) else f"a {type(x).__name__}"


def _differentiable_leaf(x: Any, where: str, what: str) -> Any:
    """The leaf as a floating or complex array (Python floats and complex numbers become
    0-d float64/complex128 arrays), or an error."""
    if isinstance(x, (float, complex)):
        return np.asarray(x)
    if isinstance(x, (np.ndarray, np.generic, Tracer)) and is_inexact(x.dtype):
        return x
    raise DTypeError(with_location(
        f"{what}: cannot differentiate with respect to {where}, {_describe(x)}; only "
        "floating and complex arrays (float32, float64, complex64, complex128) and Python "
        "floats have gradients (pass integer and boolean arguments at positions outside "
        "argnums)"))


def check_holomorphic_inputs(avals: Sequence[Aval], holomorphic: bool, what: str) -> None:
    """holomorphic=True needs complex inputs (as in JAX)."""
    if not holomorphic:
        return
    for aval in avals:
        if aval.dtype.kind != "c":
            raise DTypeError(with_location(
                f"{what} with holomorphic=True requires inputs with complex dtype, but got "
                f"{aval.dtype}"))


def check_output_kind(aval: Aval, holomorphic: bool, what: str, where: str = "output") -> None:
    """JAX's rule: without holomorphic=True the differentiated outputs must be real; with
    it, complex."""
    if holomorphic and aval.dtype.kind != "c":
        raise DTypeError(with_location(
            f"{what} with holomorphic=True requires outputs with complex dtype, but the "
            f"{where} has dtype {aval.dtype}"))
    if not holomorphic and aval.dtype.kind == "c":
        raise DTypeError(with_location(
            f"{what} requires real-valued outputs (a floating dtype), but the {where} has "
            f"dtype {aval.dtype}. For holomorphic differentiation, pass holomorphic=True. "
            "For non-holomorphic functions with complex outputs, use vjp directly (or "
            "differentiate the real and imaginary parts separately)"))


def _prepare_args(args: Sequence[Any], nums: tuple[int, ...], what: str
                  ) -> tuple[list[Any], dict[int, TreeDef]]:
    """Arguments with the differentiated leaves checked and converted; their structures."""
    args = list(args)
    trees: dict[int, TreeDef] = {}
    for p in nums:
        leaves, tree = tree_flatten(args[p])
        paths = _leaf_paths(args[p])
        if len(paths) != len(leaves):
            paths = [f" leaf {i}" for i in range(len(leaves))]
        fixed = [_differentiable_leaf(x, f"argument {p}{path}", what)
                 for x, path in zip(leaves, paths)]
        args[p] = tree_unflatten(tree, fixed)
        trees[p] = tree
    return args, trees


def _leaf_ranges(args: Sequence[Any]) -> list[range]:
    """The flat leaf indices of each positional argument."""
    ranges, start = [], 0
    for a in args:
        n = len(tree_flatten(a)[0])
        ranges.append(range(start, start + n))
        start += n
    return ranges


# ---------------------------------------------------------------------------------------
# Staging, rewriting and caching


@dataclass
class _Compiled:
    """What the cache keeps for one signature."""

    graphs: VJPGraphs
    out_tree: TreeDef  # of the differentiated output (aux split off)
    aux_tree: TreeDef | None
    out_avals: list[Aval]  # of the differentiated output's leaves
    implicit: list


def _split_aux(out_tree: TreeDef, has_aux: bool, what: str) -> tuple[TreeDef, TreeDef | None]:
    if not has_aux:
        return out_tree, None
    if out_tree.kind not in (tuple, list) or len(out_tree.children) != 2:
        raise TransfuseTypeError(with_location(
            f"{what}(..., has_aux=True) needs func to return a pair (output, aux), got a "
            f"value of structure {out_tree}"))
    return out_tree.children[0], out_tree.children[1]


def _compile(func: Callable, args: list, kwargs: dict, wrt: list[bool], has_aux: bool,
             what: str) -> _Compiled:
    staged = stage(func, args, kwargs, concrete=True)
    graph = prepare(staged.graph)
    out_tree, aux_tree = _split_aux(staged.out_tree, has_aux, what)
    n_out = out_tree.num_leaves
    out_avals = graph.out_avals[:n_out]
    # aux and the final values of mutated inputs take no cotangent
    ct_outputs = [is_differentiable(a) for a in out_avals]
    ct_outputs += [False] * (len(graph.outputs) - n_out)
    assert num_user_outputs(graph) == staged.out_tree.num_leaves
    graphs = vjp_graph(graph, wrt, ct_outputs)
    return _Compiled(graphs, out_tree, aux_tree, out_avals, list(staged.implicit))


class _Linearized:
    """One differentiated call: forward values computed, backward ready to run."""

    def __init__(self, func: Callable, args: Sequence[Any], kwargs: dict,
                 nums: tuple[int, ...], has_aux: bool, what: str):
        self.what = what
        self.nums = nums
        args, self.arg_trees = _prepare_args(args, nums, what)
        leaves, in_tree = tree_flatten((tuple(args), dict(kwargs)))
        dyn_index = [i for i, x in enumerate(leaves) if is_array_leaf(x)]
        ranges = _leaf_ranges(args)
        diff = {i for p in nums for i in ranges[p]}
        wrt = [i in diff for i in dyn_index]
        key = ("vjp", tuple(wrt), has_aux, signature(leaves, dyn_index, in_tree))
        cacheable = not in_trace()
        def build() -> _Compiled:
            return _compile(func, args, kwargs, wrt, has_aux, what)

        compiled = _CACHE.lookup(func, key, build) if cacheable else build()
        self.compiled = compiled
        self.dyn_args = [leaves[i] for i in dyn_index]
        self.wrt_avals = [a for a, w in zip(compiled.graphs.forward.in_avals, wrt) if w]

    @property
    def out_avals(self) -> list[Aval]:
        return self.compiled.out_avals

    @property
    def out_tree(self) -> TreeDef:
        return self.compiled.out_tree

    def run_forward(self) -> tuple[Any, Any]:
        """Run the forward graph once: (output pytree, aux pytree or None).

        Inputs the function writes into are updated in the caller's arrays, as in NumPy.
        """
        c = self.compiled
        g = c.graphs
        graph_args = list(self.dyn_args) + list(c.implicit)
        if g.mutated_inputs:
            check_no_aliasing(graph_args, g.mutated_inputs)
        outs = _detached(g.forward, execute(g.forward, self.dyn_args, c.implicit))
        n_out, n_user = c.out_tree.num_leaves, g.num_user_outputs
        self.residuals = outs[g.num_outputs:]
        if g.mutated_inputs:
            write_back(graph_args, g.mutated_inputs, outs[n_user:g.num_outputs])
        output = tree_unflatten(c.out_tree, outs[:n_out])
        aux = None if c.aux_tree is None else tree_unflatten(c.aux_tree, outs[n_out:n_user])
        return output, aux

    def pullback(self, ct_leaves: Sequence[Any]) -> list[Any]:
        """Cotangents of the differentiated leaves, flat, for flat output cotangents."""
        g = self.compiled.graphs
        cts = [ct for ct, take in zip(ct_leaves, g.ct_outputs) if take]
        return _detached(g.backward, execute(g.backward, cts + list(self.residuals)))

    def by_argument(self, flat: Sequence[Any], single: bool) -> Any:
        """Flat per-leaf values regrouped with the structure of each differentiated arg."""
        # `flat` follows the arguments' order; argnums may name them in any order.
        it = iter(flat)
        by_position = {p: tree_unflatten(self.arg_trees[p],
                                         [next(it) for _ in range(self.arg_trees[p].num_leaves)])
                       for p in sorted(set(self.nums))}
        per_arg = tuple(by_position[p] for p in self.nums)
        return per_arg[0] if single else per_arg


def _detached(graph: Graph, outs: list) -> list:
    """Results that are the graph's inputs or (cached) constants, copied: never aliased."""
    shared = set(graph.consts) | set(graph.inputs)
    return [np.array(o, copy=True) if v in shared and isinstance(o, np.ndarray) else o
            for v, o in zip(graph.outputs, outs)]


def _wrap(func: Callable, transformed: Callable, what: str) -> Callable:
    functools.update_wrapper(transformed, func, assigned=("__module__", "__doc__"))
    transformed.__name__ = f"{what}_{getattr(func, '__name__', 'f')}"
    transformed.__qualname__ = transformed.__name__
    return transformed


# ---------------------------------------------------------------------------------------
# vjp


def _check_cotangents(cotangents: Any, out_tree: TreeDef, out_avals: list[Aval]) -> list:
    leaves, tree = tree_flatten(cotangents)
    if tree != out_tree:
        raise TransfuseValueError(with_location(
            f"vjp_fn: cotangents must have the structure of func's output {out_tree}, got "
            f"{tree}"))
    fitted = []
    for i, (ct, aval) in enumerate(zip(leaves, out_avals)):
        if not isinstance(ct, Tracer):
            ct = np.asarray(ct)
        if tuple(ct.shape) != aval.shape:
            raise ShapeError(with_location(
                f"vjp_fn: cotangent {i} has shape {tuple(ct.shape)}, but the output it "
                f"belongs to has shape {aval.shape} ({aval.dtype})"))
        if is_differentiable(aval):
            ct = lax.convert(ct, aval.dtype) if isinstance(ct, Tracer) else np.asarray(
                ct, dtype=aval.dtype)
        fitted.append(ct)
    return fitted


def vjp(func: Callable, *primals: Any, has_aux: bool = False) -> tuple:
    """(output, vjp_fn) or (output, vjp_fn, aux); vjp_fn(cotangents) -> one entry a primal.

    The forward computation runs once, here; each vjp_fn call runs only the backward part.
    """
    if not primals:
        raise TransfuseValueError(with_location("vjp needs at least one primal"))
    nums = tuple(range(len(primals)))
    lin = _Linearized(func, primals, {}, nums, has_aux, "vjp")
    output, aux = lin.run_forward()

    def vjp_fn(cotangents: Any) -> tuple:
        ct_leaves = _check_cotangents(cotangents, lin.out_tree, lin.out_avals)
        return lin.by_argument(lin.pullback(ct_leaves), single=False)

    return (output, vjp_fn, aux) if has_aux else (output, vjp_fn)


# ---------------------------------------------------------------------------------------
# grad and grad_and_value


def _check_scalar_output(lin: _Linearized, what: str, holomorphic: bool = False) -> Aval:
    if lin.out_tree != LEAF:
        raise TransfuseTypeError(with_location(
            f"{what} needs func to return a single scalar array, got a value of structure "
            f"{lin.out_tree}; use vjp or jacrev for several outputs"))
    aval = lin.out_avals[0]
    if not is_differentiable(aval):
        raise TransfuseTypeError(with_location(
            f"{what} needs a floating scalar output, got an output of dtype {aval.dtype} "
            f"and shape {aval.shape}"))
    check_output_kind(aval, holomorphic, what)
    check_holomorphic_inputs(lin.wrt_avals, holomorphic, what)
    if aval.size != 1:
        raise TransfuseTypeError(with_location(
            f"{what} needs a scalar (0-d or one-element) output, got an output of shape "
            f"{aval.shape} ({aval.dtype}); use vjp or jacrev for non-scalar outputs"))
    return aval


def _grad_and_value(func: Callable, argnums: int | Sequence[int], has_aux: bool,
                    args: tuple, kwargs: dict, what: str, holomorphic: bool = False
                    ) -> tuple[Any, Any, Any]:
    nums = normalize_argnums(argnums, len(args), what)
    lin = _Linearized(func, args, kwargs, nums, has_aux, what)
    aval = _check_scalar_output(lin, what, holomorphic)
    value, aux = lin.run_forward()
    grads = lin.pullback([np.ones(aval.shape, aval.dtype)])
    return lin.by_argument(grads, single=isinstance(argnums, int)), value, aux


def grad(func: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, *,
         holomorphic: bool = False) -> Callable:
    """The gradient of a scalar-output function with respect to the args at argnums.

    For complex inputs it is what jax.grad returns (docs/numpy.md, "Complex numbers"):
    with a real output, df/dx - i df/dy at z = x + iy (the conjugate of the steepest-
    ascent direction); with holomorphic=True (complex inputs and output), f'(z).
    """
    check_argnums(argnums, "grad")

    def grad_fn(*args: Any, **kwargs: Any) -> Any:
        g, _value, aux = _grad_and_value(func, argnums, has_aux, args, kwargs, "grad",
                                         holomorphic)
        return (g, aux) if has_aux else g
    return _wrap(func, grad_fn, "grad")


def grad_and_value(func: Callable, argnums: int | Sequence[int] = 0,
                   has_aux: bool = False, *, holomorphic: bool = False) -> Callable:
    """Like grad, returning (grad, value), or (grad, (value, aux)) with has_aux."""
    check_argnums(argnums, "grad_and_value")

    def grad_and_value_fn(*args: Any, **kwargs: Any) -> tuple:
        g, value, aux = _grad_and_value(func, argnums, has_aux, args, kwargs,
                                        "grad_and_value", holomorphic)
        return (g, (value, aux)) if has_aux else (g, value)
    return _wrap(func, grad_and_value_fn, "grad_and_value")


# ---------------------------------------------------------------------------------------
# jacrev


def _basis(out_avals: list[Aval]) -> list[np.ndarray]:
    """The standard basis of the flat output space, split into the output leaves."""
    total = sum(a.size for a in out_avals)
    eye = np.eye(total)
    parts, start = [], 0
    for a in out_avals:
        block = eye[:, start:start + a.size].reshape((total,) + a.shape)
        parts.append(block.astype(a.dtype))
        start += a.size
    return parts


def _vmap() -> Callable | None:
    import transfuse

    return getattr(transfuse, "vmap", None)


def _pull_back_basis(lin: _Linearized, chunk_size: int | None) -> list[Any]:
    """The pullback of every basis vector: one (M,) + in.shape array per wrt leaf."""
    basis = _basis(lin.out_avals)
    total = basis[0].shape[0] if basis else 0
    if total == 0 or not lin.wrt_avals:
        return [np.zeros((total,) + a.shape, a.dtype) for a in lin.wrt_avals]
    vmap = _vmap()
    if vmap is not None:
        batched = vmap(lambda *cts: tuple(lin.pullback(list(cts))), chunk_size=chunk_size)
        return list(batched(*basis))
    # Before vmap exists: one backward run per basis vector.
    rows = [lin.pullback([b[k] for b in basis]) for k in range(total)]
    return [np.stack([row[j] for row in rows]) for j in range(len(lin.wrt_avals))]


def _check_jacobian_outputs(lin: _Linearized, what: str, holomorphic: bool) -> None:
    for i, aval in enumerate(lin.out_avals):
        if not is_differentiable(aval):
            raise TransfuseTypeError(with_location(
                f"{what} needs floating outputs, but output leaf {i} has dtype {aval.dtype} "
                f"(shape {aval.shape})"))
        check_output_kind(aval, holomorphic, what, f"output leaf {i}")
    check_holomorphic_inputs(lin.wrt_avals, holomorphic, what)


def jacrev(func: Callable, argnums: int | Sequence[int] = 0, *, has_aux: bool = False,
           holomorphic: bool = False, chunk_size: int | None = None) -> Callable:
    """The Jacobian by reverse mode: out.shape + in.shape per output leaf and input leaf."""
    check_argnums(argnums, "jacrev")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise TransfuseValueError(f"jacrev: chunk_size must be None or a positive int, got "
                                  f"{chunk_size!r}")

    def jacrev_fn(*args: Any, **kwargs: Any) -> Any:
        nums = normalize_argnums(argnums, len(args), "jacrev")
        lin = _Linearized(func, args, kwargs, nums, has_aux, "jacrev")
        _check_jacobian_outputs(lin, "jacrev", holomorphic)
        _output, aux = lin.run_forward()
        rows = _pull_back_basis(lin, chunk_size)
        per_output, start = [], 0
        for aval in lin.out_avals:
            blocks = [np.reshape(r[start:start + aval.size], aval.shape + w.shape)
                      for r, w in zip(rows, lin.wrt_avals)]
            per_output.append(lin.by_argument(blocks, single=isinstance(argnums, int)))
            start += aval.size
        jac = tree_unflatten(lin.out_tree, per_output)
        return (jac, aux) if has_aux else jac

    return _wrap(func, jacrev_fn, "jacrev")


__all__ = ["vjp", "grad", "grad_and_value", "jacrev"]
