"""The statements a generated program is made of: each op_* tries to append one.

Every op returns the new Value, or None when it does not apply (no suitable operand, a
domain or size limit, or NumPy rejecting it on the probes); the generator then tries
another. Intervals follow each op's maths; `exact` survives only ops that do not round.
"""

from __future__ import annotations

import math

import numpy as np

from .programs import (
    LARGE_ELEMS,
    Generator,
    Program,
    Value,
    away_from_zero,
    hull,
    iv_monotone,
    iv_mul,
    rect,
    rect_mul,
    rect_scaled_sum,
)


def _bounds(v: Value) -> tuple[float, float]:
    return v.lo, v.hi


def _reduced_log(n: int) -> int:
    return 1 + math.ceil(math.log2(n + 1))


# ---------------------------------------------------------------------------------------
# elementwise


def _unary_table(smooth: bool) -> dict:
    """name -> (applies to the interval, interval of the result, exact)."""
    table = {
        "exp": (lambda v: v.hi <= 6, lambda v: iv_monotone(math.exp, *_bounds(v)), False),
        "log": (lambda v: v.lo >= 0.1, lambda v: iv_monotone(math.log, *_bounds(v)), False),
        "sqrt": (lambda v: v.lo >= (0.1 if smooth else 0.0),
                 lambda v: iv_monotone(math.sqrt, *_bounds(v)), False),
        "log1p": (lambda v: v.lo >= -0.8, lambda v: iv_monotone(math.log1p, *_bounds(v)),
                  False),
        "expm1": (lambda v: v.hi <= 6, lambda v: iv_monotone(math.expm1, *_bounds(v)), False),
        "sin": (lambda v: True, lambda v: (-1.0, 1.0), False),
        "cos": (lambda v: True, lambda v: (-1.0, 1.0), False),
        "tanh": (lambda v: True, lambda v: iv_monotone(math.tanh, *_bounds(v)), False),
        "arctan": (lambda v: True, lambda v: iv_monotone(math.atan, *_bounds(v)), False),
        "negative": (lambda v: True, lambda v: (-v.hi, -v.lo), True),
        "abs": (lambda v: True, _abs_interval, True),
        "square": (lambda v: True, lambda v: _power_interval(v, 2), False),
    }
    if not smooth:
        table["floor"] = (lambda v: True, lambda v: (math.floor(v.lo), math.floor(v.hi)), True)
        table["sign"] = (lambda v: True, lambda v: (-1.0, 1.0), True)
    return table


def _abs_interval(v: Value) -> tuple[float, float]:
    if v.lo <= 0 <= v.hi:
        return 0.0, max(-v.lo, v.hi)
    return min(abs(v.lo), abs(v.hi)), max(abs(v.lo), abs(v.hi))


def _power_interval(v: Value, p: float) -> tuple[float, float]:
    if p == int(p) and int(p) % 2 == 0 and v.lo < 0 < v.hi:
        return 0.0, max(abs(v.lo), abs(v.hi)) ** p
    return iv_monotone(lambda t: t ** p, v.lo, v.hi)


def op_unary(g: Generator) -> Value | None:
    table = _unary_table(g.smooth)
    name = g.choice(list(table))
    applies, interval, exact = table[name]
    v = g.pick(lambda v: v.kind in "iuf" and not v.nan and applies(v))
    if v is None:
        return None
    if name == "negative" and g.chance(0.5):
        return g.emit(f"-{v.name}", *interval(v), exact=v.exact)
    return g.emit(f"xp.{name}({v.name})", *interval(v), exact=exact and v.exact, cost=2)


def _partner(g: Generator, a: Value) -> Value | None:
    """A second operand that broadcasts with a: an existing value or a new input."""
    def broadcasts(v: Value) -> bool:
        try:
            out = np.broadcast_shapes(a.shape, v.shape)
        except ValueError:
            return False
        return math.prod(out) <= g.size_limit() and v.kind in "biuf" and not v.nan

    if g.chance(0.5):
        found = g.pick(broadcasts, recent=False)
        if found is not None:
            return found
    shape = list(a.shape[int(g.rng.integers(0, len(a.shape) + 1)):]) if g.chance(0.5) else \
        list(a.shape)
    shape = [1 if g.chance(0.25) else d for d in shape]
    return g.new_input(tuple(shape)) or g.pick(broadcasts)


def _constant(g: Generator, a: Value) -> tuple[str, float]:
    """A Python scalar operand (int for integer operands now and then)."""
    if a.kind in "iub" and g.chance(0.6):
        c = int(g.rng.integers(-3, 4))
    else:
        c = float(g.choice([0.5, 1.5, -0.75, 2.0, 0.3, -1.25, 3.0]))
    return repr(c), float(c)


BINARY = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/", "maximum": None,
          "minimum": None, "power": "**"}


def op_binary(g: Generator) -> Value | None:
    name = g.choice(list(BINARY))
    a = g.pick(lambda v: v.kind in "biuf" and not v.nan)
    if a is None:
        return None
    if name == "power":
        return _power(g, a)
    if g.chance(0.3):
        b_text, c = _constant(g, a)
        b_iv, b_exact, b_ok = (c, c), True, name != "divide" or abs(c) >= 0.25
    else:
        b = _partner(g, a)
        if b is None:
            return None
        b_text, b_iv, b_exact, b_ok = b.name, _bounds(b), b.exact, \
            name != "divide" or away_from_zero(b)
    if not b_ok:
        return None
    lo, hi = _binary_interval(name, _bounds(a), b_iv)
    if a.kind == "b" and name in ("add", "multiply", "maximum", "minimum"):
        lo, hi = min(lo, 0.0), max(hi, 1.0)
    exact = a.exact and b_exact and name in ("maximum", "minimum")
    op = BINARY[name]
    if op is not None and g.chance(0.6):
        expr = f"{a.name} {op} {b_text}" if g.chance(0.7) else f"{b_text} {op} {a.name}"
        if not expr.startswith(a.name):  # b op a: recompute the interval for that order
            lo, hi = _binary_interval(name, b_iv, _bounds(a))
            if name == "divide" and not away_from_zero(a):
                return None
    else:
        expr = f"xp.{name}({a.name}, {b_text})"
    return g.emit(expr, lo, hi, exact=exact, cost=1)


def _binary_interval(name: str, a: tuple, b: tuple) -> tuple[float, float]:
    if name == "add":
        return a[0] + b[0], a[1] + b[1]
    if name == "subtract":
        return a[0] - b[1], a[1] - b[0]
    if name == "multiply":
        return iv_mul(a, b)
    if name == "divide":
        if b[0] <= 0 <= b[1]:
            return -math.inf, math.inf
        return iv_mul(a, (1 / b[1], 1 / b[0]))
    if name == "maximum":
        return max(a[0], b[0]), max(a[1], b[1])
    return min(a[0], b[0]), min(a[1], b[1])


def _power(g: Generator, a: Value) -> Value | None:
    if a.kind == "b":
        return None
    if a.lo >= 0.1 and a.kind == "f" and g.chance(0.5):
        b = g.pick(lambda v: v.kind == "f" and -2 <= v.lo and v.hi <= 2 and not v.nan)
        if b is not None and a.hi <= 10:
            corners = [x ** y for x in _bounds(a) for y in _bounds(b)]
            form = f"xp.power({a.name}, {b.name})" if g.chance(0.5) else f"{a.name} ** {b.name}"
            return g.emit(form, min(corners), max(corners), cost=3)
    p = g.choice([2, 3] if a.lo < 0.1 or a.kind != "f" else [2, 3, 0.5, -1.0, 1.5, -0.5])
    return g.emit(f"{a.name} ** {p!r}", *_power_interval(a, p), cost=2)


def op_where(g: Generator) -> Value | None:
    cond = _condition(g)
    a = g.pick(lambda v: v.kind in "biuf" and not v.nan)
    if cond is None or a is None:
        return None
    b = _partner(g, a)
    if b is None:
        return None
    lo, hi = hull(_bounds(a), _bounds(b))
    return g.emit(f"xp.where({cond}, {a.name}, {b.name})", lo, hi,
                  exact=a.exact and b.exact)


def _condition(g: Generator) -> str | None:
    """A boolean expression safe to branch on: a bool value or a test of an exact value."""
    c = g.pick(lambda v: v.exact and not v.nan and v.kind in "biuf", recent=False)
    if c is None:
        return None
    if c.kind == "b":
        return c.name if g.chance(0.7) else f"~{c.name}"
    threshold = round(float(g.rng.uniform(c.lo, c.hi)), 2) + 0.003  # never a tie
    return f"({c.name} {g.choice(['>', '<', '>=', '<='])} {threshold!r})"


def op_compare(g: Generator) -> Value | None:
    cond = _condition(g)
    if cond is None or g.smooth:
        return None
    return g.emit(cond, 0, 1, exact=True)


def op_clip(g: Generator) -> Value | None:
    a = g.pick(lambda v: v.kind in "iuf" and not v.nan and v.hi > v.lo)
    if a is None:
        return None
    lo_c, hi_c = sorted(round(float(x), 2) for x in g.rng.uniform(a.lo, a.hi, size=2))
    if hi_c <= lo_c:
        return None
    lo, hi = min(max(a.lo, lo_c), hi_c), max(min(a.hi, hi_c), lo_c)
    return g.emit(f"xp.clip({a.name}, {lo_c!r}, {hi_c!r})", lo, hi, exact=a.exact)


def op_cast(g: Generator) -> Value | None:
    a = g.pick(lambda v: not v.nan)
    if a is None:
        return None
    if a.kind in "biu" or g.smooth:
        target = "F" if g.chance(0.7) else "xp.float64"
        return g.emit(f"{a.name}.astype({target})", a.lo, a.hi, exact=a.exact or a.kind != "f")
    if not a.exact:
        return None
    target = g.choice(["xp.int32", "xp.int64"])
    return g.emit(f"{a.name}.astype({target})", math.trunc(a.lo), math.trunc(a.hi), exact=True)


def op_integer(g: Generator) -> Value | None:
    """Floor division and remainder of integers by a positive constant (Python's signs)."""
    a = g.pick(lambda v: v.kind in "iu")
    if a is None:
        return None
    c = int(g.rng.integers(1, 5))
    if g.chance(0.5):
        return g.emit(f"{a.name} // {c}", math.floor(a.lo / c), math.floor(a.hi / c))
    return g.emit(f"{a.name} % {c}", 0, c - 1)


def op_logical(g: Generator) -> Value | None:
    a = g.pick(lambda v: v.kind == "b")
    b = g.pick(lambda v: v.kind == "b", recent=False)
    if a is None or b is None:
        return None
    form = g.choice([f"{a.name} & {b.name}", f"{a.name} | {b.name}", f"{a.name} ^ {b.name}",
                     f"xp.logical_and({a.name}, {b.name})", f"xp.logical_not({a.name})"])
    return g.emit(form, 0, 1, exact=True)


# ---------------------------------------------------------------------------------------
# reductions


REDUCTIONS = ["sum", "mean", "var", "std", "max", "min", "prod", "argmax", "argmin",
              "cumsum"]


def _axis(g: Generator, v: Value, single: bool) -> tuple[object, int]:
    """A random axis argument for v and how many elements each result reduces."""
    ndim = len(v.shape)
    if ndim == 0 or g.chance(0.2):
        return None, v.size
    if single or g.chance(0.6):
        k = int(g.rng.integers(ndim))
        return (k - ndim if g.chance(0.3) else k), v.shape[k]
    axes = sorted(int(k) for k in g.rng.choice(ndim, size=int(g.rng.integers(1, ndim + 1)),
                                               replace=False))
    return tuple(axes), math.prod(v.shape[k] for k in axes)


def op_reduce(g: Generator) -> Value | None:
    name = g.choice(REDUCTIONS)
    v = g.pick(lambda v: v.kind in "biuf" and not v.nan)
    if v is None:
        return None
    axis, n = _axis(g, v, single=name in ("argmax", "argmin", "cumsum"))
    interval = _reduce_interval(g, name, v, n)
    if interval is None:
        return None
    keep = name != "cumsum" and g.chance(0.4)
    args = "" if axis is None and g.chance(0.5) else f", axis={axis!r}"
    args += ", keepdims=True" if keep else ""
    if g.chance(0.3) and name not in ("argmax", "argmin"):
        expr = f"{v.name}.{name}({args[2:]})"
    else:
        expr = f"xp.{name}({v.name}{args})"
    exact = v.exact and name in ("max", "min", "argmax", "argmin") or v.kind in "biu" and \
        name in ("sum", "prod", "cumsum")
    return g.emit(expr, *interval, exact=exact, nan=n == 0 and name in ("mean", "var", "std"),
                  cost=_reduced_log(n))


def _reduce_interval(g: Generator, name: str, v: Value, n: int) -> tuple | None:
    lo, hi = (0.0, 1.0) if v.kind == "b" else _bounds(v)
    if name in ("max", "min", "argmax", "argmin") and n == 0:
        return None
    if name in ("argmax", "argmin"):
        return (0, max(n - 1, 0)) if v.exact else None
    if name == "sum":
        return min(0.0, n * lo), max(0.0, n * hi)
    if name == "cumsum":
        return min(lo, n * lo, 0.0), max(hi, n * hi, 0.0)
    if name == "prod":
        if n > 6:
            return None
        m = max(abs(lo), abs(hi), 1.0)
        return (min(1.0, lo ** n), max(1.0, hi ** n)) if lo >= 0 else (-m ** n, m ** n)
    if name in ("var", "std"):
        if g.smooth and (name == "std" or n < 2):
            return None  # std of equal values (a broadcast) has no derivative
        spread = (hi - lo) ** 2
        return 0.0, (spread if name == "var" else math.sqrt(spread))
    return lo, hi  # mean, max, min


# ---------------------------------------------------------------------------------------
# shapes and indexing


def _factor(g: Generator, size: int, max_ndim: int = 3) -> list[int]:
    """A random shape with this many elements."""
    if size == 0:
        return g.choice([[0], [0, 2], [3, 0]])
    dims = []
    while size > 1 and len(dims) < max_ndim - 1:
        divisors = [d for d in range(2, size + 1) if size % d == 0]
        d = g.choice(divisors)
        dims.append(d)
        size //= d
    dims.append(size)
    if g.chance(0.2):
        dims.insert(int(g.rng.integers(len(dims) + 1)), 1)
    return [int(d) for d in g.rng.permutation(dims)]


def op_reshape(g: Generator) -> Value | None:
    v = g.pick()
    if v is None:
        return None
    dims = _factor(g, v.size)
    if dims and g.chance(0.3) and v.size:
        dims[int(g.rng.integers(len(dims)))] = -1
    shape = tuple(dims)
    form = g.choice([f"{v.name}.reshape({shape!r})", f"xp.reshape({v.name}, {shape!r})",
                     f"{v.name}.ravel()"])
    return g.emit(form, v.lo, v.hi, exact=v.exact, nan=v.nan)


def op_transpose(g: Generator) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 2)
    if v is None:
        return None
    if g.chance(0.4):
        return g.emit(f"{v.name}.T", v.lo, v.hi, exact=v.exact, nan=v.nan)
    perm = tuple(int(k) for k in g.rng.permutation(len(v.shape)))
    return g.emit(f"xp.transpose({v.name}, {perm!r})", v.lo, v.hi, exact=v.exact, nan=v.nan)


def op_broadcast(g: Generator) -> Value | None:
    v = g.pick()
    if v is None:
        return None
    if g.chance(0.3):
        axis = int(g.rng.integers(-len(v.shape) - 1, len(v.shape) + 1))
        return g.emit(f"xp.expand_dims({v.name}, {axis})", v.lo, v.hi, exact=v.exact,
                      nan=v.nan)
    ones = [k for k, d in enumerate(v.shape) if d == 1]
    if ones and g.chance(0.3):
        return g.emit(f"xp.squeeze({v.name}, axis={g.choice(ones)})", v.lo, v.hi,
                      exact=v.exact, nan=v.nan)
    lead = [g.choice([1, 2, 3]) for _ in range(int(g.rng.integers(0, 2)))]
    shape = tuple(lead + [g.choice([2, 3]) if d == 1 else d for d in v.shape])
    return g.emit(f"xp.broadcast_to({v.name}, {shape!r})", v.lo, v.hi, exact=v.exact,
                  nan=v.nan)


def _slice_text(g: Generator, n: int) -> str:
    """A random basic index for an axis of length n."""
    r = g.rng.random()
    if r < 0.25 or n == 0:
        return ":"
    if r < 0.4:
        i = int(g.rng.integers(-n, n))
        return str(i)
    a, b = sorted(int(x) for x in g.rng.integers(-n - 1, n + 2, size=2))
    step = g.choice([1, 1, 2, -1, -2, 3])
    start, stop = (b, a) if step < 0 else (a, b)
    fmt = lambda x: "" if g.chance(0.2) else str(x)  # noqa: E731
    return f"{fmt(start)}:{fmt(stop)}" + (f":{step}" if step != 1 else "")


def basic_index(g: Generator, shape: tuple[int, ...], extras: bool = True) -> str:
    parts = [_slice_text(g, n) for n in shape[:int(g.rng.integers(1, len(shape) + 1))]]
    if extras and g.chance(0.2):
        parts.insert(int(g.rng.integers(len(parts) + 1)), "None")
    if extras and g.chance(0.15) and len(parts) < len(shape):
        parts.insert(0, "...") if g.chance(0.5) else None
    return ", ".join(parts)


def op_slice(g: Generator) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 1)
    if v is None:
        return None
    return g.emit(f"{v.name}[{basic_index(g, v.shape)}]", v.lo, v.hi, exact=v.exact, nan=v.nan)


def array_index(g: Generator, shape: tuple[int, ...]) -> str | None:
    """An integer-array index along one axis (repeats and negatives included)."""
    axes = [k for k, n in enumerate(shape) if n > 0]
    if not axes:
        return None
    k = g.choice(axes)
    n = shape[k]
    picks = [int(i) for i in g.rng.integers(-n, n, size=int(g.rng.integers(1, 5)))]
    return ", ".join([":"] * k + [f"xp.asarray({picks!r})"])


def op_take(g: Generator) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 1)
    index = array_index(g, v.shape) if v is not None else None
    if index is None:
        return None
    return g.emit(f"{v.name}[{index}]", v.lo, v.hi, exact=v.exact, nan=v.nan)


def op_flip(g: Generator) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 1)
    if v is None:
        return None
    return g.emit(f"xp.flip({v.name}, axis={int(g.rng.integers(len(v.shape)))})", v.lo, v.hi,
                  exact=v.exact, nan=v.nan)


def _same_shape(g: Generator, shape: tuple, kinds: str = "biuf") -> Value | None:
    found = g.pick(lambda v: v.shape == shape and v.kind in kinds, recent=False)
    if found is not None and g.chance(0.6):
        return found
    return g.new_input(shape) or found


def op_concatenate(g: Generator) -> Value | None:
    a = g.pick(lambda v: len(v.shape) >= 1)
    if a is None:
        return None
    axis = int(g.rng.integers(len(a.shape)))
    shape = list(a.shape)
    shape[axis] = g.choice([1, 2, 3])
    b = _same_shape(g, tuple(shape)) if g.chance(0.7) else a
    if b is None:
        return None
    return g.emit(f"xp.concatenate([{a.name}, {b.name}], axis={axis})",
                  *hull(_bounds(a), _bounds(b)), exact=a.exact and b.exact, nan=a.nan or b.nan)


def op_stack(g: Generator) -> Value | None:
    a = g.pick()
    if a is None:
        return None
    b = _same_shape(g, a.shape) if g.chance(0.7) else a
    if b is None:
        return None
    axis = int(g.rng.integers(-len(a.shape) - 1, len(a.shape) + 1))
    return g.emit(f"xp.stack([{a.name}, {b.name}], axis={axis})",
                  *hull(_bounds(a), _bounds(b)), exact=a.exact and b.exact, nan=a.nan or b.nan)


# ---------------------------------------------------------------------------------------
# contractions


def _numeric(g: Generator) -> str:
    """The dtype kinds a contraction takes: complex too in complex programs."""
    return "iufc" if g.kind == "complex" else "iuf"


def _operand(g: Generator, shape: tuple) -> Value | None:
    kinds = "f" if g.smooth else "iuf"
    return _same_shape(g, shape, kinds + "c" if g.kind == "complex" else kinds)


def _contract(g: Generator, expr: str, a: Value, b: Value, k: int) -> Value | None:
    lo, hi, ilo, ihi = rect_scaled_sum(rect_mul(rect(a), rect(b)), k)
    return g.emit(expr, lo, hi, imag=(ilo, ihi), cost=_reduced_log(k))


def op_matmul(g: Generator) -> Value | None:
    a = g.pick(lambda v: len(v.shape) >= 1 and v.kind in _numeric(g) and not v.nan)
    if a is None:
        return None
    k = a.shape[-1]
    m = g.choice([1, 2, 3, 4])
    batch = a.shape[:-2] if g.chance(0.5) else ()
    shape = g.choice([(k,), (k, m), batch + (k, m)])
    b = _operand(g, shape)
    if b is None or b.nan:
        return None
    form = g.choice([f"{a.name} @ {b.name}", f"xp.matmul({a.name}, {b.name})",
                     f"xp.dot({a.name}, {b.name})"])
    return _contract(g, form, a, b, k)


def op_outer(g: Generator) -> Value | None:
    a = g.pick(lambda v: v.kind in _numeric(g) and not v.nan and v.size <= 12)
    b = g.pick(lambda v: v.kind in _numeric(g) and not v.nan and v.size <= 8, recent=False)
    if a is None or b is None:
        return None
    return _contract(g, f"xp.outer({a.name}, {b.name})", a, b, 1)


def op_einsum(g: Generator) -> Value | None:
    a = g.pick(lambda v: 1 <= len(v.shape) <= 3 and v.kind in _numeric(g) and not v.nan)
    if a is None:
        return None
    letters = "ijkl"[:len(a.shape)]
    sizes = dict(zip(letters, a.shape))
    if g.chance(0.3):  # one operand: a permutation and partial sum
        out = "".join(g.rng.permutation(list(letters))[:int(g.rng.integers(0, len(letters) + 1))])
        summed = math.prod(sizes[c] for c in letters if c not in out)
        lo, hi, ilo, ihi = rect_scaled_sum(rect(a), summed)
        return g.emit(f"xp.einsum('{letters}->{out}', {a.name})", lo, hi, imag=(ilo, ihi),
                      cost=_reduced_log(summed))
    shared = [c for c in letters if g.chance(0.6)] or [letters[-1]]
    fresh = [c for c in "mn" if g.chance(0.4)]
    sizes.update({c: g.choice([1, 2, 3]) for c in fresh})
    b_letters = "".join(g.rng.permutation(shared + fresh))
    b = _operand(g, tuple(sizes[c] for c in b_letters))
    if b is None or b.nan:
        return None
    keep = [c for c in letters + "".join(fresh) if g.chance(0.5)]
    out = "".join(g.rng.permutation(keep)) if keep else ""
    summed = math.prod(sizes[c] for c in set(letters + b_letters) if c not in out)
    return _contract(g, f"xp.einsum('{letters},{b_letters}->{out}', {a.name}, {b.name})",
                     a, b, summed)


# ---------------------------------------------------------------------------------------
# mutation


def op_buffer(g: Generator) -> Value | None:
    """A fresh buffer to write into: a copy, or zeros like a value."""
    v = g.pick(lambda v: v.kind in "biuf")
    if v is None:
        return None
    if g.chance(0.7):
        made = g.emit(f"{v.name}.copy()", v.lo, v.hi, exact=v.exact, nan=v.nan)
    else:
        made = g.emit(f"xp.zeros_like({v.name})", 0, 0, exact=True)
    if made is not None:
        g.roots.add(made.name)
    return made


def writable(g: Generator, v: Value) -> bool:
    """Whether v's memory belongs to a buffer the program may write into.

    A NumPy scalar (what a full reduction or integer index gives) counts too: `s += 1`
    rebinds it in NumPy, and a traced 0-d value must not write through to where it came
    from.
    """
    arr = g.env.get(v.name)
    if isinstance(arr, np.generic):
        return True
    return isinstance(arr, np.ndarray) and arr.flags.writeable and any(
        np.shares_memory(arr, g.env[root]) for root in g.roots)


def op_mutate(g: Generator) -> Value | None:
    """An in-place write into a buffer or a view of one; its aliases change with it."""
    t = g.pick(lambda v: writable(g, v) and v.kind in "biuf")
    if t is None:
        return None
    index = ""
    if t.shape and g.chance(0.6):
        index = array_index(g, t.shape) if g.chance(0.25) else basic_index(g, t.shape, False)
    target = f"{t.name}[{index}]" if index else t.name
    region = np.shape(eval(target, g.env)) if index else t.shape
    op = g.choice(["+=", "-=", "*=", "=", "=", "out", "fill"])
    b_text, b_iv, b_exact = _mutation_operand(g, t, region)
    if t.kind in "biu" and op != "=" and ("." in b_text or _is_float(g, b_text)):
        return None  # NumPy's scalar path takes `a[i] *= 1.5`; see test_findings.py, 2
    if op == "fill" and isinstance(g.env[t.name], np.generic):
        return None  # a NumPy scalar's fill does nothing: not a 0-d array's semantics
    if op == "fill":
        statement, op = f"{t.name}.fill({b_text if b_iv[0] == b_iv[1] else '0.5'})", "="
        b_iv = (b_iv[0], b_iv[0]) if b_iv[0] == b_iv[1] else (0.5, 0.5)
        target = t.name
    elif op == "out":
        statement = f"xp.multiply({t.name}, {b_text}, out={t.name})"
        op, target = "*=", t.name
    else:
        statement = f"{target} {op} {b_text}"
    return _apply_mutation(g, t, statement, op, b_iv, b_exact)


def _is_float(g: Generator, name: str) -> bool:
    return any(v.name == name and v.kind == "f" for v in g.values)


def _mutation_operand(g: Generator, t: Value, region: tuple) -> tuple[str, tuple, bool]:
    if g.chance(0.4):
        text, c = _constant(g, t)
        return text, (c, c), True
    v = g.pick(lambda v: v.kind in "biuf" and not v.nan and v.name != t.name and
               _broadcasts_to(v.shape, region), recent=False)
    if v is None:
        v = g.new_input(region)
    if v is None:
        return "1.5", (1.5, 1.5), True
    return v.name, _bounds(v), v.exact


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def _apply_mutation(g: Generator, t: Value, statement: str, op: str, b_iv: tuple,
                    b_exact: bool) -> Value | None:
    old = (t.lo, t.hi)
    new = {"+=": (old[0] + b_iv[0], old[1] + b_iv[1]), "-=": (old[0] - b_iv[1], old[1] - b_iv[0]),
           "*=": iv_mul(old, b_iv), "=": b_iv}[op]
    lo, hi = hull(old, new)
    if t.kind == "b":
        lo, hi = 0.0, 1.0
    if max(abs(lo), abs(hi)) > 1e3:
        return None
    before = g.env[t.name]
    try:
        g.run(statement)
    except Exception:
        return None
    target = g.env[t.name]
    if np.asarray(target).dtype != t.dtype:  # a NumPy scalar rebound to another dtype
        g.env[t.name] = before
        return None
    for v in g.values:
        arr = g.env.get(v.name)
        if v is t or isinstance(arr, np.ndarray) and np.shares_memory(arr, target):
            v.lo, v.hi = hull((v.lo, v.hi), (lo, hi))
            v.exact = v.exact and b_exact and op == "="
            g.check_interval(v, arr)
    if any(np.shares_memory(target, g.env[x.name]) for x in g.inputs):
        g.mutates_inputs = True
    g.lines.append(statement)
    g.cost += 1
    g.mutations += 1
    return t


# ---------------------------------------------------------------------------------------
# whole programs


WEIGHTS = {
    op_unary: 4, op_binary: 5, op_where: 1, op_clip: 1, op_compare: 1, op_cast: 1,
    op_integer: 1, op_logical: 1, op_reduce: 4, op_reshape: 1, op_transpose: 1,
    op_broadcast: 1, op_slice: 2, op_take: 1, op_flip: 1, op_concatenate: 1, op_stack: 1,
    op_matmul: 1, op_outer: 1, op_einsum: 1,
}
MUTATION_WEIGHTS = {**WEIGHTS, op_buffer: 3, op_mutate: 6}
SMOOTH_WEIGHTS = {op: w for op, w in WEIGHTS.items()
                  if op not in (op_compare, op_integer, op_logical)}
# (tests/fuzz/ops_more.py, imported by complex_ops.py, adds issue #16's functions to these
# tables: sorting, statistics, scipy.special, the FFT)


def generate(rng: np.random.Generator, kind: str, float_dtype=np.float64) -> Program:
    """One random program of a kind: 'pure', 'smooth', 'mutation' or 'large'."""
    g = Generator(rng, np.float64 if kind == "smooth" else float_dtype, kind)
    if kind == "large":
        return _large(g)
    weights = {"smooth": SMOOTH_WEIGHTS, "mutation": MUTATION_WEIGHTS}.get(kind, WEIGHTS)
    ops, p = list(weights), np.array(list(weights.values()), dtype=float)
    g.new_input(g.shape(), g.float_dtype)
    wanted = int(rng.integers(2, 9))
    for _ in range(20 * wanted):
        if len(g.lines) >= wanted:
            break
        ops[int(rng.choice(len(ops), p=p / p.sum()))](g)
    if kind == "mutation" and not g.mutations:
        for _ in range(10):
            if op_buffer(g) and op_mutate(g):
                break
    return g.program(_outputs(g))


def _outputs(g: Generator) -> list[str]:
    """One or two results: the last value, and sometimes an earlier one."""
    locals_ = [v for v in g.values if v not in g.inputs] or g.values
    if g.kind == "smooth":
        locals_ = [v for v in locals_ if v.kind == "f"] or _cast_last(g, locals_)
    names = [locals_[-1].name]
    if g.kind == "mutation":
        names += [v.name for v in locals_ if v.name in g.roots][-1:]
    elif len(locals_) > 1 and g.chance(0.4):
        names.append(g.choice(locals_[:-1]).name)
    return list(dict.fromkeys(names))


def _cast_last(g: Generator, values: list[Value]) -> list[Value]:
    v = g.emit(f"{values[-1].name}.astype(F)", values[-1].lo, values[-1].hi)
    return [v] if v is not None else [g.inputs[0]]


def _large(g: Generator) -> Program:
    """A reduction over up to 10^7 elements, with at most one cheap elementwise op before."""
    size = g.choice(list(LARGE_ELEMS))
    shape = g.choice([(size,), (size // 1000, 1000), (10, size // 10), (size // 100, 10, 10)])
    x = g.new_input(shape, g.float_dtype)
    if g.chance(0.5):
        forms = {f"{x.name} * 0.5 + 1.0": (x.lo * 0.5 + 1, x.hi * 0.5 + 1),
                 f"xp.abs({x.name})": _abs_interval(x),
                 f"{x.name} - 0.25": (x.lo - 0.25, x.hi - 0.25)}
        expr = g.choice(list(forms))
        x = g.emit(expr, *forms[expr], exact=expr.startswith("xp.abs")) or x
    name = g.choice(["sum", "mean", "var", "std", "max", "min"])
    axis = g.choice([None, 0, len(shape) - 1, -1] + ([(0, 1)] if len(shape) > 1 else []))
    out = g.emit(f"xp.{name}({x.name}, axis={axis!r})", *_large_interval(name, x, shape, axis),
                 exact=name in ("max", "min"), cost=_reduced_log(size))
    return g.program([(out or x).name])


def _large_interval(name: str, x: Value, shape: tuple, axis) -> tuple[float, float]:
    axes = range(len(shape)) if axis is None else [axis] if isinstance(axis, int) else axis
    n = math.prod(shape[k] for k in axes)
    if name == "sum":
        return min(0.0, n * x.lo), max(0.0, n * x.hi)
    if name in ("var", "std"):
        return 0.0, (x.hi - x.lo) ** (2 if name == "var" else 1)
    return x.lo, x.hi
