"""User derivative rules: custom_jvp, custom_vjp (JAX's), Function (torch.func's) and
lax.stop_gradient.

Called outside any trace, a decorated function is its primal function. Inside a trace
(any transform, jit) a call traces the user's functions at the arguments' avals into
closed sub-graphs and records ONE node (ir/custom.py) holding them, so the rule survives
jit, nesting and the disk cache. Values the functions capture from the enclosing trace
become trailing operands of the node; they, and the array leaves of `nondiff_argnums`, are
differentiated through the primal function as ordinary code. See docs/autodiff.md.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transfuse.compiler.functionalize import prepare
from transfuse.ir import lax
from transfuse.ir.core import Aval, Graph, Var
from transfuse.ir.errors import (
    BatchingError,
    MutationError,
    TransfuseTypeError,
    UnsupportedError,
)
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location
from transfuse.ir.tracing import Tracer, bind, current_builder
from transfuse.ir.tree import LEAF, TreeDef, tree_flatten, tree_map, tree_unflatten

from ._control import check_same
from ._staging import is_array_leaf, leaf_aval, stage

P = PRIMITIVES

# ---------------------------------------------------------------------------------------
# stop_gradient


def stop_gradient(x: Any) -> Any:
    """x (every array leaf of a pytree) with a zero derivative, as jax.lax.stop_gradient."""
    return tree_map(_stop_leaf, x)


def _stop_leaf(x: Any) -> Any:
    return bind(P["stop_gradient"], x) if isinstance(x, Tracer) else np.asarray(x)


# ---------------------------------------------------------------------------------------
# Arguments: the array leaves become operands, the rest stay Python values


@dataclass
class _Args:
    """A call's arguments split into graph operands (array leaves) and static leaves."""

    leaves: list  # every leaf of every argument
    trees: list[TreeDef]  # each argument's structure
    owner: list[int]  # the argument each leaf belongs to
    operand_index: list[int]  # positions (in leaves) of the operands
    diff: list[bool]  # per operand: covered by the user's rule

    @property
    def operands(self) -> list:
        return [self.leaves[i] for i in self.operand_index]

    @property
    def avals(self) -> list[Aval]:
        return [leaf_aval(x) for x in self.operands]

    def rebuild(self, operands: Sequence[Any]) -> list:
        """The arguments with `operands` in the operands' places."""
        full = list(self.leaves)
        for i, x in zip(self.operand_index, operands):
            full[i] = x
        args, start = [], 0
        for tree in self.trees:
            args.append(tree_unflatten(tree, full[start:start + tree.num_leaves]))
            start += tree.num_leaves
        return args

    def rebuild_tangents(self, tangents: Sequence[Any]) -> list:
        """The arguments' tangents: the given ones for the rule's operands, None for the
        other operands, zero for Python numbers (static leaves)."""
        it = iter(tangents)
        slots = [next(it) if d else None for d in self.diff]
        full = [type(x)(0) if isinstance(x, _NUMBERS) else x for x in self.leaves]
        for i, t in zip(self.operand_index, slots):
            full[i] = t
        return _Args(full, self.trees, self.owner, [], []).rebuild([])

    def slots(self, pos: int) -> list[Aval | None]:
        """Per leaf of argument `pos`: its aval when it is an operand, else None."""
        operands = set(self.operand_index)
        return [leaf_aval(x) if i in operands else None
                for i, (x, o) in enumerate(zip(self.leaves, self.owner)) if o == pos]


_NUMBERS = (bool, int, float, complex)


def _as_operand(x: Any, what: str) -> Any:
    if isinstance(x, Tracer):
        return x
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TransfuseTypeError(with_location(
            f"{what}: an output leaf of type {type(x).__name__} is not an array"))
    return arr


def _split_pytree_args(args: Sequence[Any], nondiff: Sequence[int], what: str) -> _Args:
    """JAX's convention: the array leaves of the arguments are operands (the rule covers
    those of differentiated arguments); Python numbers stay Python values (NumPy's weak
    scalars: x * 0.5 keeps float32), with zero tangents."""
    leaves, trees, owner, index, diff = [], [], [], [], []
    for pos, arg in enumerate(args):
        arg_leaves, tree = tree_flatten(arg)
        trees.append(tree)
        for leaf in arg_leaves:
            if is_array_leaf(leaf):
                index.append(len(leaves))
                diff.append(pos not in nondiff)
            elif pos not in nondiff and not isinstance(leaf, _NUMBERS):
                raise TransfuseTypeError(with_location(
                    f"{what}: an argument leaf of type {type(leaf).__name__} is not an array "
                    "(mark the argument in nondiff_argnums if it is a Python value)"))
            leaves.append(leaf)
            owner.append(pos)
    return _Args(leaves, trees, owner, index, diff)


def _split_top_level_args(args: Sequence[Any]) -> _Args:
    """torch's convention (Function): array arguments are operands, the rest are static."""
    index = [pos for pos, arg in enumerate(args) if is_array_leaf(arg)]
    return _Args(list(args), [LEAF] * len(args), list(range(len(args))), index,
                 [True] * len(index))


def _resolve_kwargs(fun: Callable, args: tuple, kwargs: dict) -> tuple:
    if not kwargs:
        return args
    bound = inspect.signature(fun).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.args


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


# ---------------------------------------------------------------------------------------
# Tracing the user's functions into closed sub-graphs


@dataclass
class _Traced:
    """A user function traced: explicit inputs, then the values it captured."""

    graph: Graph
    captures: list


def _stand_in(aval: Aval) -> np.ndarray:
    """A zero-byte array of aval's shape and dtype: tracing reads only its aval."""
    return np.broadcast_to(np.zeros((), aval.dtype), aval.shape)


def _trace(flat_fn: Callable, avals: Sequence[Aval], what: str, name: str) -> _Traced:
    """flat_fn(*flat inputs) -> flat list of outputs, traced at `avals`."""
    staged = stage(flat_fn, [_stand_in(a) for a in avals], is_dynamic=lambda i, x: True,
                   name=name if name.isidentifier() else "rule")
    graph = staged.graph
    if graph.has_rng:
        raise UnsupportedError(with_location(
            f"{what} draws random numbers; draw them outside and pass them in as arguments"))
    graph = prepare(graph)
    if graph.mutated_inputs:  # writes into its own arguments stay local to the function
        n = graph.num_explicit_inputs
        if any(i >= n for i in graph.mutated_inputs):
            raise MutationError(with_location(
                f"{what} writes into an array it captures from outside; return the new "
                "value instead"))
        graph = Graph(graph.inputs, graph.nodes,
                      graph.outputs[:len(graph.outputs) - len(graph.mutated_inputs)],
                      graph.consts, num_captures=graph.num_captures, name=graph.name)
    return _Traced(graph, list(staged.implicit))


def _close(traced: Sequence[_Traced], n_operands: int) -> tuple[list[Graph], list]:
    """Closed graphs taking every capture of any of them right after the first
    `n_operands` inputs (so the captures are trailing operands), and those captures."""
    captures: list = []
    seen: set[int] = set()
    for t in traced:
        for c in t.captures:
            if id(c) not in seen:
                seen.add(id(c))
                captures.append(c)
    graphs = []
    for t in traced:
        g = t.graph
        n = len(g.inputs) - g.num_captures
        mine = {id(c): v for c, v in zip(t.captures, g.inputs[n:])}
        capture_vars = [mine.get(id(c)) or Var(leaf_aval(c)) for c in captures]
        inputs = g.inputs[:n_operands] + capture_vars + g.inputs[n_operands:n]
        graphs.append(Graph(inputs, g.nodes, g.outputs, g.consts, name=g.name))
    return graphs, captures


def _flat_outputs(tree: Any, what: str) -> tuple[list, TreeDef]:
    leaves, treedef = tree_flatten(tree)
    return [x if isinstance(x, Tracer) else _as_operand(x, what) for x in leaves], treedef


def _check_like(what: str, tree: TreeDef, avals: Sequence[Aval], want_tree: TreeDef,
                want: Sequence[Aval]) -> None:
    check_same(what, tree, avals, want_tree, want,
               "the primal function's output structure, shapes and dtypes")


def _trace_primal(fun: Callable, call: _Args, name: str) -> tuple[_Traced, TreeDef]:
    tree_box: list[TreeDef] = []

    def flat(*operands: Any) -> list:
        leaves, tree = _flat_outputs(fun(*call.rebuild(operands)), name)
        tree_box.append(tree)
        return leaves

    traced = _trace(flat, call.avals, name, _name(fun).split(".")[-1])
    return traced, tree_box[0]


def _cotangent_leaves(ct: Any, tree: TreeDef, slots: Sequence[Aval | None], what: str
                      ) -> list:
    """A rule's cotangent (or tangent) for one value as leaves, one per slot with an aval
    (the others are Python numbers: their cotangents are dropped); None: zeros."""
    if ct is None:
        return [lax.full(a.shape, 0, a.dtype) for a in slots if a is not None]
    leaves, got = tree_flatten(ct, is_leaf=lambda x: x is None)
    if got != tree:
        raise TransfuseTypeError(with_location(
            f"{what}: got {got}, expected {tree} (the argument's structure)"))
    return [_fit_leaf(x, a, what) for x, a in zip(leaves, slots) if a is not None]


def _fit_leaf(x: Any, aval: Aval, what: str) -> Any:
    if x is None or aval.dtype.kind not in "fc":  # integer arguments get zeros
        return lax.full(aval.shape, 0, aval.dtype)
    if not isinstance(x, Tracer):
        x = np.asarray(x)
    if tuple(lax.shape(x)) != aval.shape:
        raise TransfuseTypeError(with_location(
            f"{what}: a cotangent of shape {lax.shape(x)} for an argument of shape "
            f"{aval.shape}"))
    return lax.convert(x, aval.dtype) if lax.dtype(x) != aval.dtype else x


# The custom functions whose rules are being traced: inside its own rule (JAX's usual
# `primal_out = f(x)`), a call of the function is its primal function, not a new node
# (tracing its rule again would never end).
# Per thread, as tracing is.
_LOCAL = threading.local()


def _in_own_rule() -> set[int]:
    if not hasattr(_LOCAL, "fns"):
        _LOCAL.fns = set()
    return _LOCAL.fns


@contextlib.contextmanager
def _own_rule(fn: Any):
    fns = _in_own_rule()
    added = id(fn) not in fns
    fns.add(id(fn))
    try:
        yield
    finally:
        if added:
            fns.discard(id(fn))


def _runs_plainly(fn: Any) -> bool:
    """Called eagerly (no trace), or from inside its own rule: just the primal function."""
    return current_builder() is None or id(fn) in _in_own_rule()


# ---------------------------------------------------------------------------------------
# custom_jvp


class custom_jvp:
    """A function with a forward-mode rule, as jax.custom_jvp.

        @custom_jvp
        def f(x): ...
        @f.defjvp
        def f_jvp(primals, tangents): ... return primal_out, tangent_out

    With nondiff_argnums, the rule is called as rule(*nondiff_args, primals, tangents).
    Reverse mode transposes the rule (it must be linear in the tangents).
    """

    def __init__(self, fun: Callable, nondiff_argnums: Sequence[int] = ()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.jvp: Callable | None = None

    def defjvp(self, jvp: Callable, symbolic_zeros: bool = False) -> Callable:
        """Set the rule: jvp(primals, tangents) -> (primal_out, tangent_out)."""
        _no_symbolic_zeros(symbolic_zeros, "custom_jvp.defjvp")
        self.jvp = jvp
        return jvp

    def defjvps(self, *jvps: Callable | None) -> None:
        """One rule per argument, as JAX's: jvps[i](tangent_i, primal_out, *primals) is
        argument i's term of the output tangent (None: no term); the terms are summed."""
        if self.nondiff_argnums:
            raise TransfuseTypeError(with_location(
                "custom_jvp.defjvps does not support nondiff_argnums (use defjvp)"))

        def jvp(primals: tuple, tangents: tuple) -> tuple:
            out = self.fun(*primals)
            terms = [rule(t, out, *primals) for rule, t in zip(jvps, tangents)
                     if rule is not None]
            if not terms:
                return out, tree_map(np.zeros_like, out)
            return out, tree_map(lambda *parts: functools.reduce(operator.add, parts),
                                 *terms)
        self.jvp = jvp

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = _resolve_kwargs(self.fun, args, kwargs)
        name = f"custom_jvp function {_name(self.fun)}"
        if self.jvp is None:
            raise TransfuseTypeError(with_location(
                f"{name} has no JVP rule: define one with @{self.fun.__name__}.defjvp"))
        if _runs_plainly(self):
            return self.fun(*args)
        call = _split_pytree_args(args, self.nondiff_argnums, name)
        fun, out_tree = _trace_primal(self.fun, call, name)
        with _own_rule(self):
            jvp = self._trace_rule(call, out_tree, fun.graph.out_avals, name)
        (fun_graph, jvp_graph), captures = _close([fun, jvp], len(call.operand_index))
        diff = tuple(call.diff) + (False,) * len(captures)
        outs = bind(P["custom_jvp_call"], *call.operands, *captures, fun=fun_graph,
                    jvp=jvp_graph, diff=diff, name=name)
        return tree_unflatten(out_tree, outs)

    def _trace_rule(self, call: _Args, out_tree: TreeDef, out_avals: list[Aval],
                    name: str) -> _Traced:
        n_ops = len(call.operand_index)
        diff_pos = [p for p in range(len(call.trees)) if p not in self.nondiff_argnums]
        what = f"the JVP rule of {name}"

        def flat(*inputs: Any) -> list:
            args = call.rebuild(inputs[:n_ops])
            tangent_leaves = call.rebuild_tangents(inputs[n_ops:])
            nondiff = [args[p] for p in self.nondiff_argnums]
            result = self.jvp(*nondiff, tuple(args[p] for p in diff_pos),
                              tuple(tangent_leaves[p] for p in diff_pos))
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise TransfuseTypeError(with_location(
                    f"{what} must return a pair (primal_out, tangent_out)"))
            primal, primal_tree = _flat_outputs(result[0], what)
            tangent, tangent_tree = _flat_outputs(result[1], what)
            _check_like(f"{what}'s primal output", primal_tree,
                        [leaf_aval(x) for x in primal], out_tree, out_avals)
            _check_like(f"{what}'s tangent output", tangent_tree,
                        [leaf_aval(x) for x in tangent], out_tree, out_avals)
            return primal + tangent

        tangent_avals = [a for a, d in zip(call.avals, call.diff) if d]
        return _trace(flat, call.avals + tangent_avals, what, "jvp")


def _no_symbolic_zeros(symbolic_zeros: bool, what: str) -> None:
    if symbolic_zeros:
        raise UnsupportedError(with_location(
            f"{what}: symbolic_zeros=True is not supported; rules get zero arrays"))


# ---------------------------------------------------------------------------------------
# custom_vjp


class custom_vjp:
    """A function with a reverse-mode rule, as jax.custom_vjp.

        @custom_vjp
        def f(x): ...
        def f_fwd(x): ... return out, residuals
        def f_bwd(residuals, ct): ... return (ct_x,)   # one per differentiated argument
        f.defvjp(f_fwd, f_bwd)

    With nondiff_argnums, bwd is called as bwd(*nondiff_args, residuals, ct).
    """

    def __init__(self, fun: Callable, nondiff_argnums: Sequence[int] = ()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.fwd: Callable | None = None
        self.bwd: Callable | None = None

    def defvjp(self, fwd: Callable, bwd: Callable, symbolic_zeros: bool = False) -> None:
        """Set the rule: fwd(*args) -> (out, residuals); bwd(residuals, ct) -> tuple."""
        _no_symbolic_zeros(symbolic_zeros, "custom_vjp.defvjp")
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = _resolve_kwargs(self.fun, args, kwargs)
        name = f"custom_vjp function {_name(self.fun)}"
        if self.fwd is None:
            raise TransfuseTypeError(with_location(
                f"{name} has no VJP rule: define one with {self.fun.__name__}.defvjp"))
        if _runs_plainly(self):
            return self.fun(*args)
        call = _split_pytree_args(args, self.nondiff_argnums, name)
        fun, out_tree = _trace_primal(self.fun, call, name)
        out_avals = fun.graph.out_avals
        with _own_rule(self):
            fwd, res_tree = self._trace_fwd(call, out_tree, out_avals, name)
            res_avals = fwd.graph.out_avals[len(out_avals):]
            bwd = self._trace_bwd(call, res_tree, res_avals, out_tree, out_avals, name)
        (fun_g, fwd_g, bwd_g), captures = _close([fun, fwd, bwd], len(call.operand_index))
        diff = tuple(call.diff) + (False,) * len(captures)
        outs = bind(P["custom_vjp_call"], *call.operands, *captures, fun=fun_g, fwd=fwd_g,
                    bwd=bwd_g, jvp=None, diff=diff, num_res=len(res_avals), vmap=None,
                    name=name, saved=False)
        return tree_unflatten(out_tree, outs)

    def _trace_fwd(self, call: _Args, out_tree: TreeDef, out_avals: list[Aval], name: str
                   ) -> tuple[_Traced, TreeDef]:
        what = f"the forward rule of {name}"
        tree_box: list[TreeDef] = []

        def flat(*operands: Any) -> list:
            result = self.fwd(*call.rebuild(operands))
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise TransfuseTypeError(with_location(
                    f"{what} must return a pair (output, residuals)"))
            out, tree = _flat_outputs(result[0], what)
            _check_like(f"{what}'s output", tree, [leaf_aval(x) for x in out], out_tree,
                        out_avals)
            res, res_tree = _flat_outputs(result[1], what)
            tree_box.append(res_tree)
            return out + res

        return _trace(flat, call.avals, what, "fwd"), tree_box[0]

    def _trace_bwd(self, call: _Args, res_tree: TreeDef, res_avals: list[Aval],
                   out_tree: TreeDef, out_avals: list[Aval], name: str) -> _Traced:
        what = f"the backward rule of {name}"
        n_ops, n_res = len(call.operand_index), len(res_avals)
        diff_pos = [p for p in range(len(call.trees)) if p not in self.nondiff_argnums]

        def flat(*inputs: Any) -> list:
            args = call.rebuild(inputs[:n_ops])
            res = tree_unflatten(res_tree, inputs[n_ops:n_ops + n_res])
            ct = tree_unflatten(out_tree, inputs[n_ops + n_res:])
            nondiff = [args[p] for p in self.nondiff_argnums]
            result = self.bwd(*nondiff, res, ct)
            if not (isinstance(result, (tuple, list)) and len(result) == len(diff_pos)):
                raise TransfuseTypeError(with_location(
                    f"{what} must return a tuple of {len(diff_pos)} cotangent(s), one per "
                    "differentiated argument"))
            return [leaf for pos, ct_arg in zip(diff_pos, result)
                    for leaf in _cotangent_leaves(ct_arg, call.trees[pos], call.slots(pos),
                                                  what)]

        return _trace(flat, call.avals + list(res_avals) + list(out_avals), what, "bwd")


# ---------------------------------------------------------------------------------------
# Function: torch.autograd.Function as torch.func uses it


class FunctionCtx:
    """The ctx of a transfuse.Function: save_for_backward, saved_tensors, any attribute."""

    def __init__(self) -> None:
        self._saved_for_backward: tuple = ()
        self._saved_for_forward: tuple = ()
        self._in_jvp = False

    def save_for_backward(self, *arrays: Any) -> None:
        self._saved_for_backward = tuple(arrays)

    def save_for_forward(self, *arrays: Any) -> None:
        self._saved_for_forward = tuple(arrays)

    @property
    def saved_tensors(self) -> tuple:
        return self._saved_for_forward if self._in_jvp else self._saved_for_backward

    def mark_non_differentiable(self, *arrays: Any) -> None:
        """Accepted for torch compatibility (integer outputs never carry derivatives)."""

    def set_materialize_grads(self, value: bool) -> None:
        """Accepted for torch compatibility: cotangents always arrive as arrays."""


@dataclass(frozen=True)
class VmapInfo:
    """What a Function's vmap staticmethod is told, as torch's info."""

    batch_size: int
    randomness: str = "error"


class Function:
    """The counterpart of torch.autograd.Function as torch.func uses it.

        class Exp(transfuse.Function):
            @staticmethod
            def forward(x): return np.exp(x)
            @staticmethod
            def setup_context(ctx, inputs, output): ctx.save_for_backward(output)
            @staticmethod
            def backward(ctx, g): (y,) = ctx.saved_tensors; return g * y
            @staticmethod
            def jvp(ctx, t): ...            # optional: forward mode
            @staticmethod
            def vmap(info, in_dims, x): ... # or generate_vmap_rule = True
        y = Exp.apply(x)

    Array arguments are differentiated; other arguments are Python values.
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(*args: Any) -> Any:
        raise NotImplementedError("a transfuse.Function must define forward")

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def jvp(ctx: FunctionCtx, *tangents: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def vmap(info: VmapInfo, in_dims: tuple, *args: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def _defines(cls, method: str) -> bool:
        return getattr(cls, method) is not getattr(Function, method)

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """Run forward, recording the class's rules for the transforms around the call."""
        name = f"Function {cls.__qualname__}"
        if kwargs:
            raise TransfuseTypeError(with_location(
                f"{name}.apply takes positional arguments only (as torch)"))
        if not cls._defines("setup_context"):
            raise TransfuseTypeError(with_location(
                f"{name} must define a setup_context(ctx, inputs, output) staticmethod and a "
                "forward(*args) without ctx (the torch.func style)"))
        if _runs_plainly(cls):
            return cls.forward(*args)
        with _own_rule(cls):  # its rules may call apply: then it is forward
            return _apply_function(cls, args, name)


def _apply_function(cls: type[Function], args: tuple, name: str) -> Any:
    call = _split_top_level_args(args)
    fun, out_tree = _trace_primal(cls.forward, call, name)
    out_avals = fun.graph.out_avals
    traced = {"fun": fun}
    num_res = 0
    if cls._defines("backward"):
        traced["fwd"], state = _trace_function_fwd(cls, call, name)
        num_res = len(state[2])
        traced["bwd"] = _trace_function_bwd(cls, call, state, out_tree, out_avals, name)
    if cls._defines("jvp"):
        traced["jvp"] = _trace_function_jvp(cls, call, out_tree, out_avals, name)
    graphs, captures = _close(list(traced.values()), len(call.operand_index))
    params = dict(zip(traced, graphs))
    if cls._defines("vmap"):
        vmap: Any = _FunctionVmap(cls, call)
    else:
        vmap = None if cls.generate_vmap_rule else _NoVmap(cls)
    diff = tuple(call.diff) + (False,) * len(captures)
    outs = bind(P["custom_vjp_call"], *call.operands, *captures, fun=params["fun"],
                fwd=params.get("fwd"), bwd=params.get("bwd"), jvp=params.get("jvp"),
                diff=diff, num_res=num_res, vmap=vmap, name=name, saved=False)
    return tree_unflatten(out_tree, outs)


def _run_forward(cls: type[Function], args: list) -> tuple[Any, FunctionCtx]:
    output = cls.forward(*args)
    ctx = FunctionCtx()
    cls.setup_context(ctx, tuple(args), output)
    return output, ctx


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _trace_function_fwd(cls: type[Function], call: _Args, name: str
                        ) -> tuple[_Traced, tuple]:
    """forward + setup_context; the residuals are the traced values the ctx holds."""
    what = f"{name}'s forward and setup_context"
    box: list[tuple] = []

    def flat(*operands: Any) -> list:
        output, ctx = _run_forward(cls, call.rebuild(operands))
        leaves, state_tree = tree_flatten(dict(vars(ctx)))
        res_pos = [i for i, x in enumerate(leaves) if isinstance(x, Tracer)]
        box.append((state_tree, leaves, res_pos))
        return _flat_outputs(output, what)[0] + [leaves[i] for i in res_pos]

    return _trace(flat, call.avals, what, "fwd"), box[0]


def _trace_function_bwd(cls: type[Function], call: _Args, state: tuple, out_tree: TreeDef,
                        out_avals: list[Aval], name: str) -> _Traced:
    what = f"{name}'s backward"
    state_tree, state_leaves, res_pos = state
    n_ops, n_res = len(call.operand_index), len(res_pos)

    def flat(*inputs: Any) -> list:
        leaves = list(state_leaves)
        for i, r in zip(res_pos, inputs[n_ops:n_ops + n_res]):
            leaves[i] = r
        ctx = FunctionCtx()
        ctx.__dict__.update(tree_unflatten(state_tree, leaves))
        cts = tree_unflatten(out_tree, inputs[n_ops + n_res:])
        grads = _as_tuple(cls.backward(ctx, *_as_tuple(cts)))
        if len(grads) != len(call.leaves):
            raise TransfuseTypeError(with_location(
                f"{what} returned {len(grads)} gradient(s) for {len(call.leaves)} "
                "input(s): return one per input of forward (None for non-arrays)"))
        return [_fit_leaf(grads[pos], leaf_aval(call.leaves[pos]), what)
                for pos in call.operand_index]

    return _trace(flat, call.avals + [leaf_aval(x) for x in state_leaves if
                                      isinstance(x, Tracer)] + list(out_avals), what, "bwd")


def _trace_function_jvp(cls: type[Function], call: _Args, out_tree: TreeDef,
                        out_avals: list[Aval], name: str) -> _Traced:
    what = f"{name}'s jvp"
    n_ops = len(call.operand_index)

    def flat(*inputs: Any) -> list:
        output, ctx = _run_forward(cls, call.rebuild(inputs[:n_ops]))
        ctx._in_jvp = True
        tangents: list[Any] = [None] * len(call.leaves)
        for pos, t in zip(call.operand_index, inputs[n_ops:]):
            tangents[pos] = t
        result = cls.jvp(ctx, *tangents)
        if out_tree.num_leaves == 1 and isinstance(result, (tuple, list)) and \
                len(result) == 1 and out_tree == LEAF:
            result = result[0]
        out = _flat_outputs(output, what)[0]
        return out + _cotangent_leaves(result, out_tree, out_avals, what)

    return _trace(flat, call.avals + call.avals, what, "jvp")


@dataclass(frozen=True, eq=False)
class _FunctionVmap:
    """A Function's vmap staticmethod as the batching rule of its node."""

    cls: type
    call: _Args

    def __repr__(self) -> str:  # part of the graph's structural key: stable across runs
        static = [x for i, x in enumerate(self.call.leaves) if i not in self.call.operand_index]
        return f"{self.cls.__module__}.{self.cls.__qualname__}.vmap{static!r}"

    def __call__(self, axis_size: int, operands: list, dims: list) -> tuple[list, list]:
        n = len(self.call.operand_index)
        if any(d is not None for d in dims[n:]):
            raise BatchingError(with_location(
                f"vmap: Function {self.cls.__qualname__} uses its vmap staticmethod but "
                "closes over a batched traced value; pass it as an argument"))
        args = self.call.rebuild(operands[:n])
        in_dims: list[Any] = [None] * len(args)
        for pos, d in zip(self.call.operand_index, dims[:n]):
            in_dims[pos] = d
        result = self.cls.vmap(VmapInfo(axis_size), tuple(in_dims), *args)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TransfuseTypeError(with_location(
                f"Function {self.cls.__qualname__}.vmap must return (outputs, out_dims)"))
        out, out_dims = result
        leaves, _ = tree_flatten(out)
        return leaves, _flat_out_dims(out, out_dims, leaves)


def _flat_out_dims(out: Any, out_dims: Any, leaves: list) -> list:
    """One batch dim per output leaf (out_dims: one for all, or one per output)."""
    if out_dims is None or isinstance(out_dims, int):
        dims = [out_dims] * len(leaves)
    else:
        dims = [d for part, d in zip(_as_tuple(out), _as_tuple(out_dims))
                for _ in tree_flatten(part)[0]]
    return [None if d is None else d % len(lax.shape(x)) for d, x in zip(dims, leaves)]


@dataclass(frozen=True, eq=False)
class _NoVmap:
    """A Function with neither a vmap staticmethod nor generate_vmap_rule: vmap refuses."""

    cls: type

    def __repr__(self) -> str:
        return f"no_vmap({self.cls.__module__}.{self.cls.__qualname__})"

    def __call__(self, axis_size: int, operands: list, dims: list) -> tuple[list, list]:
        raise BatchingError(with_location(
            f"vmap: Function {self.cls.__qualname__} has no vmap staticmethod and "
            "generate_vmap_rule is False: write vmap(info, in_dims, *args), or set "
            "generate_vmap_rule = True to batch its forward, backward and jvp"))
