"""AOT Autograd: trace a function with its reverse pass into one joint graph, partition it
into forward and backward graphs, compile each. See docs/aot_autograd.md.

    f = aot_function(fn, fw_compiler=print_compile, bw_compiler=nop)
    f(x)             # runs the compiled forward
    tx.grad(f)(x)    # its derivative is the partitioned backward graph
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transfuse.compiler.functionalize import prepare
from transfuse.compiler.vjp import is_differentiable, vjp_graph
from transfuse.ir.core import Aval, Graph
from transfuse.ir.errors import MutationError, TransfuseTypeError, UnsupportedError
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location
from transfuse.ir.tracing import Tracer, bind, current_builder, source_of
from transfuse.ir.tree import TreeDef, tree_flatten, tree_unflatten

from .._custom import custom_vjp
from .._jit import captures_unchanged
from .._staging import _recordings, is_array_leaf, leaf_aval, signature, stage
from ..nn.module import Module
from ..nn.utils import functional_call
from .compiled_call import CompiledGraph, compiled_call
from .compilers import jit_compile
from .partition import (
    JointGraph,
    Partition,
    default_partition,
    joint_graph,
    min_cut_rematerialization_partition,
)

Compiler = Callable[[Graph, Sequence[Aval]], Callable[..., list]]
Partitioner = Callable[[JointGraph], Partition]


@dataclass
class _Compiled:
    """One signature: the partition, its compiled halves, and the traced-call wrapper."""

    joint: JointGraph
    partition: Partition
    forward: CompiledGraph
    backward: CompiledGraph
    out_tree: TreeDef
    with_rule: custom_vjp  # the partitioned graphs as a custom_vjp: used under transforms
    guards: list = field(default_factory=list)  # (weakref, snapshot) of captured arrays


def _stand_in(aval: Aval) -> np.ndarray:
    """A zero-byte array of aval's shape and dtype: tracing reads only its aval."""
    return np.broadcast_to(np.zeros((), aval.dtype), aval.shape)


def _decompose(graph: Graph, table: Mapping[Any, Callable]) -> Graph:
    """graph re-traced with the nodes of the primitives in `table` (keyed by primitive or
    name) replaced by table[prim](*inputs, **params)."""
    by_prim = {PRIMITIVES[k] if isinstance(k, str) else k: f for k, f in table.items()}

    def run(*args: Any) -> list:
        env = dict(zip(graph.inputs, args))
        env.update(graph.consts)
        for node in graph.nodes:
            ins = [env[v] for v in node.inputs]
            with source_of(node.source):
                rule = by_prim.get(node.prim)
                outs = rule(*ins, **node.params) if rule else bind(node.prim, *ins,
                                                                  **node.params)
            env.update(zip(node.outputs, outs if node.prim.multiple_results else [outs]))
        return [env[v] for v in graph.outputs]

    staged = stage(run, [_stand_in(a) for a in graph.in_avals], name=graph.name)
    return staged.graph


def _check_traceable(graph: Graph, name: str) -> None:
    if graph.num_captures:
        raise UnsupportedError(with_location(
            f"aot_function({name}): the function captures a value traced by an enclosing "
            "transform; pass it in as an argument"))
    if graph.has_rng:
        raise UnsupportedError(with_location(
            f"aot_function({name}) draws random numbers; draw them outside and pass them in"))
    if graph.mutated_inputs:
        raise MutationError(with_location(
            f"aot_function({name}) writes into its arguments; return the new values instead"))


class AOTFunction:
    """The result of aot_function: compiles per signature, then runs the compiled forward;
    inside a transform it is a function with a custom VJP (the partitioned graphs)."""

    def __init__(self, fn: Callable, fw_compiler: Compiler, bw_compiler: Compiler | None,
                 partition_fn: Partitioner, decompositions: Mapping | None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.fw_compiler = fw_compiler
        self.bw_compiler = bw_compiler or fw_compiler
        self.partition_fn = partition_fn
        self.decompositions = dict(decompositions or {})
        self._by_signature: dict[tuple, _Compiled] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        compiled, dyn = self._lookup(args, kwargs)
        if current_builder() is None and not any(isinstance(x, Tracer) for x in dyn):
            outs = compiled.forward(*dyn)[:compiled.partition.num_outputs]
            return tree_unflatten(compiled.out_tree, [np.asarray(o) for o in outs])
        return tree_unflatten(compiled.out_tree, compiled.with_rule(*dyn))

    def partition(self, *args: Any, **kwargs: Any) -> Partition:
        """The forward and backward graphs for these arguments' signature."""
        return self._lookup(args, kwargs)[0].partition

    def _lookup(self, args: tuple, kwargs: dict) -> tuple[_Compiled, list]:
        leaves, in_tree = tree_flatten((tuple(args), dict(kwargs)))
        dyn_index = [i for i, x in enumerate(leaves) if is_array_leaf(x)]
        key = signature(leaves, dyn_index, in_tree)
        compiled = self._by_signature.get(key)
        if compiled is None or not captures_unchanged(compiled.guards):
            compiled = self._compiled_alone(args, kwargs, leaves, dyn_index)
            self._by_signature[key] = compiled
        return compiled, [leaves[i] for i in dyn_index]

    def _compiled_alone(self, args: tuple, kwargs: dict, leaves: list, dyn_index: list[int]
                        ) -> _Compiled:
        """_compile, guarded by the arrays fn captures (a change recompiles). The cache
        builds of enclosing transforms are told only of those arrays, not of the temporary
        ones tracing made (whose guards they would check on each of their calls)."""
        stack = _recordings()
        enclosing = stack[:]
        stack[:] = [[]]
        try:
            compiled = self._compile(args, kwargs, leaves, dyn_index)
            guards = [(weakref.ref(o), snap) for o, snap in stack[0]
                      if isinstance(o, np.ndarray)]
        finally:
            stack[:] = enclosing
        compiled.guards = [(ref, snap) for ref, snap in guards if ref() is not None]
        for recording in enclosing:
            recording.extend((ref(), snap) for ref, snap in compiled.guards)
        return compiled

    def _compile(self, args: tuple, kwargs: dict, leaves: list, dyn_index: list[int]
                 ) -> _Compiled:
        name = getattr(self.fn, "__name__", "f")
        stand_ins = list(leaves)
        for i in dyn_index:
            stand_ins[i] = _stand_in(leaf_aval(leaves[i]))
        _, in_tree = tree_flatten((tuple(args), dict(kwargs)))
        call_args, call_kwargs = tree_unflatten(in_tree, stand_ins)
        staged = stage(self.fn, call_args, call_kwargs,
                       name=name if name.isidentifier() else "f")
        _check_traceable(staged.graph, name)
        graph = prepare(staged.graph)
        _check_traceable(graph, name)
        if self.decompositions:
            graph = prepare(_decompose(graph, self.decompositions))
        wrt = [is_differentiable(a) for a in graph.in_avals]
        joint = joint_graph(vjp_graph(graph, wrt))
        part = self.partition_fn(joint)
        forward = CompiledGraph(part.forward, self.fw_compiler)
        backward = CompiledGraph(part.backward, self.bw_compiler)
        rule = _with_rule(part, forward, backward, wrt, graph.out_avals, name)
        return _Compiled(joint, part, forward, backward, staged.out_tree, rule)


def _with_rule(part: Partition, forward: CompiledGraph, backward: CompiledGraph,
               wrt: Sequence[bool], out_avals: Sequence[Aval], name: str) -> custom_vjp:
    """The partitioned graphs as a custom_vjp on the flat array arguments, each graph a
    node run by its compiled callable (compiled_call.py)."""
    n_out = part.num_outputs
    takes_ct = [is_differentiable(a) for a in out_avals]

    def primal(*dyn: Any) -> list:
        return compiled_call(part.forward, forward, dyn)[:n_out]

    def fwd(*dyn: Any) -> tuple:
        outs = compiled_call(part.forward, forward, dyn)
        return outs[:n_out], tuple(outs[n_out:])

    def bwd(saved: tuple, cts: list) -> tuple:
        given = [ct for ct, take in zip(cts, takes_ct) if take]
        in_cts = iter(compiled_call(part.backward, backward, list(saved) + given))
        return tuple(next(in_cts) if w else None for w in wrt)

    primal.__name__ = primal.__qualname__ = f"aot_{name}"
    rule = custom_vjp(primal)
    rule.defvjp(fwd, bwd)
    return rule


def aot_function(fn: Callable, fw_compiler: Compiler, bw_compiler: Compiler | None = None,
                 partition_fn: Partitioner = default_partition,
                 decompositions: Mapping | None = None) -> AOTFunction:
    """fn traced with its reverse pass into one joint graph, split by `partition_fn`, the
    forward graph compiled by `fw_compiler`, the backward by `bw_compiler` (default: the
    forward's); `decompositions` maps primitives (or names) to functions replacing them."""
    if not callable(fn):
        raise TransfuseTypeError(with_location(
            f"aot_function needs a callable, got {type(fn).__name__}"))
    return AOTFunction(fn, fw_compiler, bw_compiler, partition_fn, decompositions)


class AOTModule(Module):
    """A module whose forward runs an aot_function of `orig_module` (parameters and buffers
    as inputs): functional_call(aot_mod, {"orig_module.w": ...}, x) differentiates them."""

    def __init__(self, module: Module, aot: AOTFunction):
        super().__init__()
        self.orig_module = module
        object.__setattr__(self, "_aot", aot)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        state = {**dict(self.orig_module.named_parameters()),
                 **dict(self.orig_module.named_buffers())}
        return self._aot(state, args, kwargs)


def aot_module(module: Module, fw_compiler: Compiler, bw_compiler: Compiler | None = None,
               partition_fn: Partitioner = default_partition,
               decompositions: Mapping | None = None) -> AOTModule:
    """aot_function for a transfuse.nn.Module, its parameters and buffers inputs."""
    if not isinstance(module, Module):
        raise TransfuseTypeError(with_location(
            f"aot_module needs a transfuse.nn.Module, got {type(module).__name__}"))

    def run(state: dict, args: tuple, kwargs: dict) -> Any:
        return functional_call(module, state, args, kwargs)

    run.__name__ = type(module).__name__
    return AOTModule(module, aot_function(run, fw_compiler, bw_compiler, partition_fn,
                                          decompositions))


def memory_efficient_fusion(fn: Callable | Module, **kwargs: Any) -> AOTFunction | AOTModule:
    """aot_function / aot_module with the min-cut partitioner and the jit compiler."""
    options = dict(fw_compiler=jit_compile, bw_compiler=jit_compile,
                   partition_fn=min_cut_rematerialization_partition)
    options.update(kwargs)
    if isinstance(fn, Module):
        return aot_module(fn, **options)
    return aot_function(fn, **options)


def saved_bytes(fn: AOTFunction | AOTModule, *args: Any, include_arguments: bool = True,
                **kwargs: Any) -> int:
    """Bytes the forward saves for the backward at these arguments; without the arguments
    themselves (which the caller holds anyway) when include_arguments=False."""
    if isinstance(fn, AOTModule):
        state = {**dict(fn.orig_module.named_parameters()),
                 **dict(fn.orig_module.named_buffers())}
        part = fn._aot.partition(state, args, kwargs)
    else:
        part = fn.partition(*args, **kwargs)
    return part.saved_bytes if include_arguments else part.saved_bytes_besides_arguments()


__all__ = ["aot_function", "aot_module", "memory_efficient_fusion", "saved_bytes",
           "AOTFunction", "AOTModule"]
