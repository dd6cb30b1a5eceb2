"""Complex programs: complex64/complex128 values mixed with real ones.

A complex value carries a rectangle (programs.rect) holding its real and imaginary parts.
Functions with a branch cut or a pole (log, sqrt, angle, power, tanh, division) are only
applied where the rectangle keeps away from it, and magnitudes stay below MAX_MAG, so a
complex64 program stays finite and accurate. Smooth programs (complex128, checked for
derivatives) also keep abs away from 0 and use no comparisons.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import ops_more
from .ops import (
    _axis,
    _condition,
    _reduced_log,
    op_broadcast,
    op_concatenate,
    op_einsum,
    op_flip,
    op_matmul,
    op_outer,
    op_reshape,
    op_slice,
    op_stack,
    op_take,
    op_transpose,
)
from .programs import (
    Generator,
    Program,
    Value,
    complex_twin,
    draw,
    iv_mul,
    rect,
    rect_mul,
    rect_scaled_sum,
)

Rect = tuple[float, float, float, float]
IMAG_RANGES = [(-2.0, 2.0), (-1.0, 1.0), (-0.5, 0.5), (0.5, 1.5)]
SCALARS = ["1j", "(0.5-1j)", "-2j", "(1.5+0.25j)", "0.5", "-1.25", "2.0"]


class ComplexGenerator(Generator):
    """A Generator whose inputs are mostly complex (F real, C its complex twin)."""

    def __init__(self, rng: np.random.Generator, float_dtype: Any, smooth: bool):
        super().__init__(rng, float_dtype, "complex")
        self.smooth = smooth
        self.dyadic = not smooth and rng.random() < 0.3
        self.cdtype = np.dtype(complex_twin(float_dtype))
        self.env["C"] = self.cdtype.type

    def allowed_dtypes(self) -> list[np.dtype]:
        if self.smooth:
            return [self.cdtype, self.cdtype, self.float_dtype]
        extra = [np.dtype(np.int32), np.dtype(bool)]
        if self.float_dtype == np.float32:
            extra += [np.dtype(np.float64), np.dtype(np.complex128)]
        return [self.cdtype] * 4 + [self.float_dtype] * 2 + extra

    def new_input(self, shape: tuple, dtype: np.dtype | None = None) -> Value | None:
        v = super().new_input(shape, dtype)
        if v is not None and v.kind == "c":
            v.ilo, v.ihi = self.choice(IMAG_RANGES)
            self.env[v.name] = draw(self.rng, v.shape, v.dtype, v.lo, v.hi, self.dyadic,
                                    (v.ilo, v.ihi))
        return v

    def pick_inexact(self, pred=lambda v: True, complex_share: float = 0.8) -> Value | None:
        """A float or complex value, complex with probability complex_share if any."""
        kinds = "c" if self.chance(complex_share) else "f"
        return self.pick(lambda v: v.kind in kinds and not v.nan and pred(v)) or \
            self.pick(lambda v: v.kind in "fc" and not v.nan and pred(v))

    def emit_rect(self, expr: str, r: Rect, **options: Any) -> Value | None:
        return self.emit(expr, r[0], r[1], imag=(r[2], r[3]), **options)


# ---------------------------------------------------------------------------------------
# ranges of the real functions the complex ones are made of


def sin_range(lo: float, hi: float) -> tuple[float, float]:
    """Bounds of sin on [lo, hi]: the ends and the extrema inside."""
    if hi - lo >= 2 * math.pi:
        return -1.0, 1.0
    points = [math.sin(lo), math.sin(hi)]
    k = math.ceil((lo - math.pi / 2) / math.pi)
    while math.pi / 2 + k * math.pi <= hi:
        points.append(math.sin(math.pi / 2 + k * math.pi))
        k += 1
    return min(points), max(points)


def cos_range(lo: float, hi: float) -> tuple[float, float]:
    return sin_range(lo + math.pi / 2, hi + math.pi / 2)


def cosh_range(lo: float, hi: float) -> tuple[float, float]:
    low = 1.0 if lo <= 0 <= hi else min(math.cosh(lo), math.cosh(hi))
    return low, max(math.cosh(lo), math.cosh(hi))


def sinh_range(lo: float, hi: float) -> tuple[float, float]:
    return math.sinh(lo), math.sinh(hi)


def mod_max(r: Rect) -> float:
    return math.hypot(max(abs(r[0]), abs(r[1])), max(abs(r[2]), abs(r[3])))


def mod_min(r: Rect) -> float:
    """The distance from 0 to the rectangle."""
    def gap(lo: float, hi: float) -> float:
        return 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
    return math.hypot(gap(r[0], r[1]), gap(r[2], r[3]))


def off_the_cut(r: Rect, margin: float = 0.1) -> bool:
    """Whether the rectangle keeps away from the negative real axis and 0."""
    return r[0] >= margin or r[2] >= margin or r[3] <= -margin


def angles(r: Rect) -> tuple[float, float]:
    """Bounds of the argument over a rectangle off the cut (extremes at the corners)."""
    found = [math.atan2(y, x) for x in r[:2] for y in r[2:]]
    return min(found), max(found)


def disk(radius: float) -> Rect:
    return -radius, radius, -radius, radius


def _exp(r: Rect, shift: float = 0.0) -> Rect:
    e = (math.exp(r[0]), math.exp(r[1]))
    re, im = iv_mul(e, cos_range(r[2], r[3])), iv_mul(e, sin_range(r[2], r[3]))
    return re[0] - shift, re[1] - shift, im[0], im[1]


def _log(r: Rect) -> Rect:
    return (math.log(max(mod_min(r), 1e-300)), math.log(mod_max(r)), *angles(r))


def _sqrt(r: Rect) -> Rect:
    m = (math.sqrt(mod_min(r)), math.sqrt(mod_max(r)))
    half = tuple(a / 2 for a in angles(r))
    return (*iv_mul(m, cos_range(*half)), *iv_mul(m, sin_range(*half)))


def _sin(r: Rect) -> Rect:
    return (*iv_mul(sin_range(r[0], r[1]), cosh_range(r[2], r[3])),
            *iv_mul(cos_range(r[0], r[1]), sinh_range(r[2], r[3])))


def _cos(r: Rect) -> Rect:
    im = iv_mul(sin_range(r[0], r[1]), sinh_range(r[2], r[3]))
    return (*iv_mul(cos_range(r[0], r[1]), cosh_range(r[2], r[3])), -im[1], -im[0])


def _sinh(r: Rect) -> Rect:
    return (*iv_mul(sinh_range(r[0], r[1]), cos_range(r[2], r[3])),
            *iv_mul(cosh_range(r[0], r[1]), sin_range(r[2], r[3])))


def _cosh(r: Rect) -> Rect:
    return (*iv_mul(cosh_range(r[0], r[1]), cos_range(r[2], r[3])),
            *iv_mul(sinh_range(r[0], r[1]), sin_range(r[2], r[3])))


def _shift(r: Rect, c: float) -> Rect:
    return r[0] + c, r[1] + c, r[2], r[3]


def _big_imag(r: Rect, limit: float) -> bool:
    return max(abs(r[2]), abs(r[3])) > limit


# name -> (applies to the rectangle, the result's rectangle)
UNARY = {
    "exp": (lambda r: r[1] <= 4, _exp),
    "expm1": (lambda r: r[1] <= 4, lambda r: _exp(r, 1.0)),
    "log": (lambda r: r[0] >= 0.1, _log),
    "log1p": (lambda r: r[0] >= -0.9, lambda r: _log(_shift(r, 1.0))),
    "sqrt": (lambda r: r[0] >= 0.1, _sqrt),
    "sin": (lambda r: not _big_imag(r, 3), _sin),
    "cos": (lambda r: not _big_imag(r, 3), _cos),
    "sinh": (lambda r: max(abs(r[0]), abs(r[1])) <= 3, _sinh),
    "cosh": (lambda r: max(abs(r[0]), abs(r[1])) <= 3, _cosh),
    "tanh": (lambda r: not _big_imag(r, 1), lambda r: (-1.1, 1.1, -1.6, 1.6)),
    "square": (lambda r: True, lambda r: rect_mul(r, r)),
    "reciprocal": (lambda r: mod_min(r) >= 0.25, lambda r: disk(1 / mod_min(r))),
    "negative": (lambda r: True, lambda r: (-r[1], -r[0], -r[3], -r[2])),
    "conj": (lambda r: True, lambda r: (r[0], r[1], -r[3], -r[2])),
}
EXACT = ("negative", "conj")


def op_cunary(g: ComplexGenerator) -> Value | None:
    name = g.choice(list(UNARY))
    applies, result = UNARY[name]
    v = g.pick_inexact(lambda v: applies(rect(v)))
    if v is None:
        return None
    expr = f"xp.{name}({v.name})"
    if name == "conj" and g.chance(0.5):
        expr = g.choice([f"xp.conjugate({v.name})", f"{v.name}.conj()"])
    if name == "negative" and g.chance(0.5):
        expr = f"-{v.name}"
    return g.emit_rect(expr, result(rect(v)), exact=name in EXACT and v.exact, cost=2)


def op_cparts(g: ComplexGenerator) -> Value | None:
    """A real value from a complex one: abs, real, imag, angle."""
    name = g.choice(["abs", "real", "imag", "angle"])
    v = g.pick(lambda v: v.kind == "c" and not v.nan)
    if v is None:
        return None
    r = rect(v)
    if name == "abs":
        if g.smooth and mod_min(r) < 0.1:
            return None
        return g.emit(f"xp.abs({v.name})", mod_min(r), mod_max(r), cost=2)
    if name == "angle":
        if not off_the_cut(r):
            return None
        return g.emit(f"xp.angle({v.name})", *angles(r), cost=2)
    bounds = r[:2] if name == "real" else r[2:]
    expr = f"{v.name}.{name}" if g.chance(0.4) else f"xp.{name}({v.name})"
    return g.emit(expr, *bounds, exact=v.exact)


def _cpartner(g: ComplexGenerator, a: Value) -> Value | None:
    """A second operand broadcasting with a: an existing value or a new input."""
    def broadcasts(v: Value) -> bool:
        try:
            out = np.broadcast_shapes(a.shape, v.shape)
        except ValueError:
            return False
        return math.prod(out) <= g.size_limit() and not v.nan
    if g.chance(0.5):
        found = g.pick(broadcasts, recent=False)
        if found is not None:
            return found
    shape = tuple(1 if g.chance(0.25) else d for d in a.shape[int(g.rng.integers(0, 2)):])
    return g.new_input(shape) or g.pick(broadcasts)


def _scalar_rect(text: str) -> Rect:
    c = complex(text)
    return c.real, c.real, c.imag, c.imag


def op_cbinary(g: ComplexGenerator) -> Value | None:
    """+, -, *, / between complex and real values and Python scalars (NumPy promotion)."""
    op = g.choice(["+", "-", "*", "/"])
    a = g.pick_inexact()
    if a is None:
        return None
    if g.chance(0.3):
        b_text = g.choice(SCALARS)
        b_rect = _scalar_rect(b_text)
    else:
        b = _cpartner(g, a)
        if b is None:
            return None
        b_text, b_rect = b.name, (0.0, 1.0, 0.0, 0.0) if b.kind == "b" else rect(b)
    first, (ra, rb) = ((a.name, b_text), (rect(a), b_rect)) if g.chance(0.7) else \
        ((b_text, a.name), (b_rect, rect(a)))
    result = _arith(op, ra, rb)
    if result is None:
        return None
    name = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}[op]
    expr = f"{first[0]} {op} {first[1]}" if g.chance(0.7) else \
        f"xp.{name}({first[0]}, {first[1]})"
    return g.emit_rect(expr, result)


def _arith(op: str, a: Rect, b: Rect) -> Rect | None:
    if op == "+":
        return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]
    if op == "-":
        return a[0] - b[1], a[1] - b[0], a[2] - b[3], a[3] - b[2]
    if op == "*":
        return rect_mul(a, b)
    if mod_min(b) < 0.25:
        return None
    return disk(mod_max(a) / mod_min(b))


def op_cpower(g: ComplexGenerator) -> Value | None:
    """z ** 2, z ** 3, z ** 0.5 and z ** w (principal branch, Re z > 0)."""
    a = g.pick_inexact(complex_share=0.9)
    if a is None:
        return None
    r = rect(a)
    p = g.choice([2, 3, 0.5, "w"])
    if p in (2, 3):
        out = rect_mul(r, r) if p == 2 else rect_mul(rect_mul(r, r), r)
        form = f"{a.name} ** {p}" if g.chance(0.6) else f"xp.power({a.name}, {p})"
        return g.emit_rect(form, out, cost=2)
    if r[0] < 0.1 or mod_max(r) > 10:
        return None
    if p == 0.5:
        return g.emit_rect(f"{a.name} ** 0.5", _sqrt(r), cost=2)
    w = g.pick_inexact(lambda v: mod_max(rect(v)) <= 2)
    if w is None:
        return None
    exponent = rect_mul(_log(r), rect(w))
    if exponent[1] > 4:
        return None
    return g.emit_rect(f"{a.name} ** {w.name}", _exp(exponent), cost=4)


def _ccondition(g: ComplexGenerator) -> str | None:
    """A real predicate: a test of an exact complex value's part, or a real condition."""
    c = g.pick(lambda v: v.exact and v.kind == "c" and not v.nan, recent=False)
    if c is None or g.chance(0.3):
        return _condition(g)
    part, (lo, hi) = ("real", rect(c)[:2]) if g.chance(0.5) else ("imag", rect(c)[2:])
    threshold = round(float(g.rng.uniform(lo, hi)), 2) + 0.003  # never a tie
    text = f"{c.name}.{part}" if g.chance(0.5) else f"xp.{part}({c.name})"
    return f"({text} {g.choice(['>', '<', '>=', '<='])} {threshold!r})"


def op_cwhere(g: ComplexGenerator) -> Value | None:
    cond = _ccondition(g)
    a = g.pick_inexact()
    if cond is None or a is None:
        return None
    b = _cpartner(g, a)
    if b is None:
        return None
    ra, rb = rect(a), (0.0, 1.0, 0.0, 0.0) if b.kind == "b" else rect(b)
    hull = min(ra[0], rb[0]), max(ra[1], rb[1]), min(ra[2], rb[2]), max(ra[3], rb[3])
    return g.emit_rect(f"xp.where({cond}, {a.name}, {b.name})", hull,
                       exact=a.exact and b.exact)


def op_ccompare(g: ComplexGenerator) -> Value | None:
    """== and != of exact complex values (and now and then a lexicographic <)."""
    a = g.pick(lambda v: v.exact and v.kind == "c" and not v.nan)
    if a is None or g.smooth:
        return None
    others = [f"xp.conj({a.name})", f"{a.name}.real"]
    if a.shape:
        others.append(f"{a.name}[::-1]")
    b = g.pick(lambda v: v.exact and v.kind in "fc" and v.name != a.name, recent=False)
    if b is not None:
        others.append(b.name)
    op = "<" if g.chance(0.15) else g.choice(["==", "!="])
    return g.emit(f"({a.name} {op} {g.choice(others)})", 0, 1, exact=True)


def op_ccast(g: ComplexGenerator) -> Value | None:
    """Casts between real and complex, and between the complex precisions."""
    a = g.pick(lambda v: not v.nan and v.kind in "biufc")
    if a is None:
        return None
    r = (0.0, 1.0, 0.0, 0.0) if a.kind == "b" else rect(a)
    if a.kind != "c":
        form, out = g.choice([(f"{a.name}.astype(C)", r), (f"{a.name} * 1j", (0, 0, *r[:2])),
                              (f"{a.name} + 0j", r)])
        return g.emit_rect(form, out, exact=a.exact or a.kind != "f")
    b = g.pick(lambda v: v.kind in "biuf" and not v.nan and v.shape == a.shape)
    if b is not None and g.chance(0.3):  # a new complex value from two real ones
        rb = (0.0, 1.0) if b.kind == "b" else rect(b)[:2]
        return g.emit_rect(f"{a.name}.real + 1j * {b.name}", (*r[:2], *rb))
    targets = ["F"] if g.smooth else ["F", "xp.complex64", "xp.complex128"]
    target = g.choice(targets)
    return g.emit_rect(f"{a.name}.astype({target})", r, exact=a.exact)


# ---------------------------------------------------------------------------------------
# reductions


def op_creduce(g: ComplexGenerator) -> Value | None:
    name = g.choice(["sum", "mean", "prod", "cumsum", "cumprod", "var", "std"])
    v = g.pick_inexact()
    if v is None:
        return None
    axis, n = _axis(g, v, single=name in ("cumsum", "cumprod"))
    out = _creduce_rect(g, name, rect(v), n)
    if out is None:
        return None
    keep = not name.startswith("cum") and g.chance(0.4)
    args = "" if axis is None and g.chance(0.5) else f", axis={axis!r}"
    args += ", keepdims=True" if keep else ""
    expr = f"{v.name}.{name}({args[2:]})" if g.chance(0.3) else f"xp.{name}({v.name}{args})"
    return g.emit_rect(expr, out, nan=n == 0 and name in ("mean", "var", "std"),
                       cost=_reduced_log(n))


def _creduce_rect(g: ComplexGenerator, name: str, r: Rect, n: int) -> Rect | None:
    if name in ("sum", "cumsum"):
        total = rect_scaled_sum(r, n)
        return (min(total[0], r[0]), max(total[1], r[1]), min(total[2], r[2]),
                max(total[3], r[3]))
    if name == "mean":
        return r
    if name in ("prod", "cumprod"):
        return disk(max(1.0, mod_max(r)) ** n) if n <= 5 else None
    if g.smooth and (name == "std" or n < 2):
        return None  # std of equal values (a broadcast) has no derivative
    spread = (r[1] - r[0]) ** 2 + (r[3] - r[2]) ** 2
    return (0.0, spread if name == "var" else math.sqrt(spread), 0.0, 0.0)


# ---------------------------------------------------------------------------------------
# whole programs


COMPLEX_WEIGHTS = {
    op_cunary: 5, op_cparts: 2, op_cbinary: 5, op_cpower: 1, op_cwhere: 1, op_ccompare: 1,
    op_ccast: 2, op_creduce: 3, op_matmul: 1, op_einsum: 1, op_outer: 1, op_reshape: 1,
    op_transpose: 1, op_broadcast: 1, op_slice: 2, op_take: 1, op_flip: 1, op_concatenate: 1,
    op_stack: 1,
}
COMPLEX_WEIGHTS.update(ops_more.COMPLEX_WEIGHTS)  # np.fft


def generate_complex(rng: np.random.Generator, float_dtype=np.float64) -> Program:
    """A complex program; complex128 ones are mostly smooth (their derivatives checked)."""
    smooth = np.dtype(float_dtype) == np.float64 and rng.random() < 0.7
    g = ComplexGenerator(rng, float_dtype, smooth)
    weights = {op: w for op, w in COMPLEX_WEIGHTS.items() if not smooth or op is not op_ccompare}
    ops, p = list(weights), np.array(list(weights.values()), dtype=float)
    g.new_input(g.shape(), g.cdtype)
    wanted = int(rng.integers(2, 9))
    for _ in range(20 * wanted):
        if len(g.lines) >= wanted:
            break
        ops[int(rng.choice(len(ops), p=p / p.sum()))](g)
    return g.program(_complex_outputs(g))


def _complex_outputs(g: ComplexGenerator) -> list[str]:
    """The last value and sometimes an earlier one (floats or complex in smooth programs)."""
    locals_ = [v for v in g.values if v not in g.inputs] or g.values
    if g.smooth:
        locals_ = [v for v in locals_ if v.kind in "fc"] or g.inputs[:1]
    names = [locals_[-1].name]
    if len(locals_) > 1 and g.chance(0.4):
        names.append(g.choice(locals_[:-1]).name)
    return list(dict.fromkeys(names))
