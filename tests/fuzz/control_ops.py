"""Statements using transfuse.lax's control flow (issue #17): cond, scan, fori_loop and
while_loop, one op_* each, as in ops.py.

Programs call the control-flow functions as `lx`: transfuse.lax in the programs transfuse
runs, jax.lax beside jax.numpy, and `PythonLax` — the obvious Python loops and `if`s —
in the NumPy references (also in long double), so the references do not go through the
code under test. Bodies are small elementwise expressions whose intervals are known.
A cond's predicate counts positive entries: piecewise constant, so finite differences do
not cross a branch switch except on a set of measure zero; while_loop joins only programs
whose derivatives are not taken in reverse mode (JAX and transfuse both refuse it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ops
from .programs import Generator, Value, hull, iv_mul


class PythonLax:
    """lax's control flow as plain Python, for the NumPy references."""

    @staticmethod
    def cond(pred: Any, true_fun: Any, false_fun: Any, *operands: Any) -> Any:
        return _fresh(true_fun(*operands) if bool(pred) else false_fun(*operands))

    @staticmethod
    def scan(f: Any, init: Any, xs: Any, length: Any = None, reverse: bool = False) -> Any:
        carry, ys = init, []
        steps = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
        for i in steps:
            carry, y = f(carry, xs[i])
            ys.append(np.asarray(y))
        if reverse:
            ys.reverse()
        like = np.asarray(f(init, xs[0])[1]) if len(xs) else None
        stacked = np.stack(ys) if ys else np.empty((0, *like.shape), like.dtype)
        return _fresh(carry), stacked

    @staticmethod
    def fori_loop(lower: int, upper: int, body: Any, init: Any) -> Any:
        val = init
        for i in range(lower, upper):
            val = body(i, val)
        return _fresh(val)

    @staticmethod
    def while_loop(cond_fun: Any, body_fun: Any, init: Any) -> Any:
        val = init
        while bool(cond_fun(val)):
            val = body_fun(val)
        return _fresh(val)


def _fresh(tree: Any) -> Any:
    """Copies of a result's arrays: a loop of no trips (or an identity branch) must not
    hand back its input itself, which a later in-place statement would then change. JAX's
    and transfuse's control flow return new values (finding 15)."""
    if isinstance(tree, np.ndarray):
        return tree.copy()
    if isinstance(tree, (tuple, list)):
        return type(tree)(_fresh(t) for t in tree)
    return tree


def namespace(xp: Any, reference: bool) -> Any:
    """What a program's `lx` is beside xp (see the module's docstring)."""
    if xp is not np:
        import jax.lax
        return jax.lax
    if reference:
        return PythonLax
    import transfuse.lax
    return transfuse.lax


def _float(g: Generator, pred=lambda v: True) -> Value | None:
    return g.pick(lambda v: v.kind == "f" and v.dtype == g.float_dtype and not v.nan
                  and pred(v))


# Branch bodies of u (and w): (source, interval of the result from u's and w's).
def _branch(g: Generator, u: Value, w: Value) -> tuple[str, tuple[float, float]]:
    return g.choice([
        ("xp.sin(u)", (-1.0, 1.0)),
        ("xp.tanh(u) * w", iv_mul((-1.0, 1.0), (w.lo, w.hi))),
        ("u * 0.5 + w", (u.lo * 0.5 + w.lo, u.hi * 0.5 + w.hi)),
        ("u * w", iv_mul((u.lo, u.hi), (w.lo, w.hi))),
        ("u - w", (u.lo - w.hi, u.hi - w.lo)),
    ])


def op_cond(g: Generator) -> Value | None:
    """One of two elementwise bodies, chosen by the parity of a's count of positives."""
    a = _float(g)
    if a is None:
        return None
    b = _float(g, lambda v: v.shape == a.shape or v.shape == ()) or a
    one, one_iv = _branch(g, a, b)
    two, two_iv = _branch(g, a, b)
    pred = f"xp.sum({a.name} > 0) % 2 == 0"
    expr = (f"lx.cond({pred}, lambda u, w: xp.broadcast_to({one}, u.shape), "
            f"lambda u, w: xp.broadcast_to({two}, u.shape), {a.name}, {b.name})")
    return g.emit(expr, *hull(one_iv, two_iv), cost=3)


def op_scan(g: Generator) -> Value | None:
    """A contracting recurrence along a's first axis: its final carry or its outputs."""
    a = _float(g, lambda v: len(v.shape) >= 1 and v.shape[0] >= 1)
    if a is None:
        return None
    k = g.choice([0.5, -0.7, 1.3])
    reverse = g.chance(0.3)
    body = f"lambda c, x: (xp.tanh(c * {k} + x), c * x)"
    init = f"{a.name}[0] * 0.5"
    expr = f"lx.scan({body}, {init}, {a.name}, reverse={reverse})"
    c_iv = hull((-1.0, 1.0), (a.lo * 0.5, a.hi * 0.5))
    if g.chance(0.5):
        return g.emit(f"{expr}[0]", *c_iv, cost=2 + a.shape[0])
    return g.emit(f"{expr}[1]", *iv_mul(c_iv, (a.lo, a.hi)), cost=2 + a.shape[0])


def op_fori(g: Generator) -> Value | None:
    """n steps of c -> tanh(c) * k + c / 2 (static bounds: a scan)."""
    a = _float(g)
    if a is None:
        return None
    n = int(g.rng.integers(0, 5))
    k = g.choice([0.5, -0.25])
    bound = max(abs(a.lo), abs(a.hi)) + 1.0
    expr = f"lx.fori_loop(0, {n}, lambda i, c: xp.tanh(c) * {k} + c * 0.5, {a.name})"
    return g.emit(expr, -bound, bound, cost=2 + 2 * n)


def op_while(g: Generator) -> Value | None:
    """Halve a until its absolute sum is at most t: each lane its own number of steps.
    Not in programs whose derivatives are taken: reverse mode refuses it, as JAX does."""
    a = _float(g)
    if a is None or g.smooth:
        return None
    t = g.choice([0.5, 1.0, 2.0])
    expr = (f"lx.while_loop(lambda c: xp.sum(xp.abs(c)) > {t}, lambda c: c * 0.5, "
            f"{a.name})")
    return g.emit(expr, min(a.lo, 0.0), max(a.hi, 0.0), exact=a.exact)


# The weights each op joins ops.py's tables with (small: a loop under jit compiles a body
# function; campaign's --boost does not touch them).
CONTROL_WEIGHTS = {op_cond: 0.4, op_scan: 0.4, op_fori: 0.3, op_while: 0.3}
for _table in (ops.WEIGHTS, ops.MUTATION_WEIGHTS, ops.SMOOTH_WEIGHTS):
    _table.update(CONTROL_WEIGHTS)
