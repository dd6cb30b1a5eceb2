"""Concrete values of traced ones, where the transform tracing them knows its inputs.

grad, vjp, jacrev, jvp, jacfwd and functionalize trace a function called on concrete
arrays (or on traced values of an enclosing trace that knows its own). A function whose
output shape depends on the data (np.nonzero, x[mask], np.unique) asks for the value it
needs: the nodes recorded so far run on the reference interpreter's NumPy kernels, in
program order (views and in-place writes included), and the graph is marked
data-dependent, so the transform does not reuse it for other inputs. Under jit and vmap
the inputs are not known (the same graph serves every input, every batch lane): there
the answer is None and the caller asks for a static size.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from .core import Var
from .interpreter import _c_order, _run_node
from .primitives import ELEMENTWISE
from .tracing import Builder, Tracer


class _Unknown(Exception):
    """A value the evaluator cannot compute (a random key, an input of jit or vmap)."""


def concrete_value(x: Any) -> np.ndarray | None:
    """x's value at this point of the program, or None where the trace does not know it."""
    if not isinstance(x, Tracer):
        return np.asarray(x)
    builder = x._builder
    if builder.known is None:
        return None
    try:
        value = _evaluator(builder).value(x._var)
    except _Unknown:
        return None
    builder.data_dependent = True
    return value


_EVALUATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _evaluator(builder: Builder) -> _Evaluator:
    ev = _EVALUATORS.get(builder)
    if ev is None:
        ev = _EVALUATORS[builder] = _Evaluator(builder)
    return ev


class _Evaluator:
    """Runs a builder's nodes on concrete values, continuing where it stopped last time."""

    def __init__(self, builder: Builder):
        self.builder = builder
        self.env: dict[Var, Any] = {}
        self.done = 0  # nodes run so far
        for var, source in zip(builder.inputs, builder.known):
            self.env[var] = _copy(_known(source))

    def value(self, var: Var) -> np.ndarray:
        nodes = self.builder.nodes
        while self.done < len(nodes):
            node = nodes[self.done]
            outs = _run_node(node, [self._get(v) for v in node.inputs])
            outs = list(outs) if node.prim.multiple_results else [outs]
            if node.prim.effect in (None, "random") and node.prim.name != "call" and \
                    node.prim.name not in ELEMENTWISE:
                outs = [_c_order(o) for o in outs]  # as the interpreter: views replay
            self.env.update(zip(node.outputs, outs))
            self.done += 1
        return _copy(self._get(var))

    def _get(self, var: Var) -> Any:
        if var in self.env:
            return self.env[var]
        builder = self.builder
        if var in builder.consts:
            self.env[var] = _copy(builder.consts[var])
            return self.env[var]
        for outer in builder.captured:  # a value captured from the enclosing trace
            if builder._capture_vars.get(id(outer)) is var:
                self.env[var] = _copy(_known(outer))
                return self.env[var]
        raise _Unknown(var)


def _known(source: Any) -> np.ndarray:
    value = concrete_value(source)
    if value is None:
        raise _Unknown(source)
    return value


def _copy(x: Any) -> np.ndarray:
    # The program may write into its inputs and constants: the evaluator works on copies.
    return np.array(x, copy=True)
