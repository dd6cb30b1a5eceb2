"""Random NumPy programs: Python source over a namespace `xp` and a float dtype `F`.

A program is built one statement at a time. Each statement is run at once on probe inputs
(drawn as the real inputs will be), so NumPy itself says what shape and dtype it gives,
whether it is valid, and which buffers it aliases. Beside each value the generator keeps
an interval that holds every value it can take for any inputs in the inputs' ranges: ops
with a domain (log, sqrt, division, power) are only applied where the interval is inside
it, and magnitudes stay small enough for float32, so programs stay finite.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

MAX_MAG = 1e4  # largest magnitude a value may reach (keeps float32 far from overflow)
MAX_ELEMS = 96  # largest array in an ordinary program
LARGE_ELEMS = (10**5, 10**6, 10**7)  # sizes of the rare reduction-only programs
SUPPORTED = {np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64, bool)}
COMPLEX = {np.dtype(np.complex64), np.dtype(np.complex128)}


@dataclass
class Value:
    """One named value of a program and what is known about it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    lo: float
    hi: float
    exact: bool = True  # every implementation computes it bit for bit (no rounding)
    nan: bool = False  # may hold NaN (a mean over an empty axis)
    ilo: float = 0.0  # complex values: [lo, hi] bounds the real part, [ilo, ihi] the imaginary
    ihi: float = 0.0

    @property
    def kind(self) -> str:
        return self.dtype.kind

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Program:
    """A generated program: inputs, statements and outputs, as source text."""

    float_dtype: np.dtype
    inputs: list[Value]
    lines: list[str]
    outputs: list[str]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "pure"  # 'pure', 'smooth' (differentiable, float64), 'mutation', 'large',
    # 'complex' (complex64/complex128 values; F is the real dtype, C its complex twin)
    mutates_inputs: bool = False
    dyadic: bool = False  # float inputs are multiples of 1/8 (ties and exact sums)
    smooth: bool = False  # derivatives may be checked (no kinks where they are evaluated)
    cost: int = 1  # rounding steps on the longest path, in ulps (see oracles.tolerance)

    def source(self, name: str = "f") -> str:
        args = ", ".join(v.name for v in self.inputs)
        body = [f"    {line}" for line in self.lines]
        outs = ", ".join(self.outputs) + ("," if len(self.outputs) == 1 else "")
        return "\n".join([f"def {name}({args}):", *body, f"    return ({outs})", ""])

    def narrowest_eps(self) -> float:
        """The eps of the least precise float type the program computes in: its own, or
        float32's where it casts to float32 or complex64 (NumPy and transfuse may round
        such a step differently by an ulp of that type, and the precise reference keeps
        the cast: seed 13253's expm1 of a complex64 value)."""
        eps = float(np.finfo(self.float_dtype).eps)
        text = self.source()
        if "float32" in text or "complex64" in text:
            eps = max(eps, float(np.finfo(np.float32).eps))
        return eps

    def build(self, xp: Any, float_dtype: Any = None, reference: bool = False) -> Any:
        """The program as a function over namespace xp, floats made in float_dtype;
        `reference`: NumPy's reference run (control flow as Python loops)."""
        from .control_ops import namespace

        real = float_dtype or self.float_dtype.type
        names = {"xp": xp, "sp": special_namespace(xp, real), "F": real,
                 "lx": namespace(xp, reference),
                 "C": complex_twin(real), **self.consts}
        exec(compile(self.source(), "<fuzz program>", "exec"), names)
        return names["f"]

    def make_inputs(self, rng: np.random.Generator, batch: tuple[int, ...] = ()) -> list:
        """Fresh inputs (with leading batch dims) drawn from each input's range."""
        return [draw(rng, batch + v.shape, v.dtype, v.lo, v.hi, self.dyadic, (v.ilo, v.ihi))
                for v in self.inputs]

    def with_lines(self, lines: list[str], outputs: list[str]) -> Program:
        return replace(self, lines=lines, outputs=outputs)


def special_namespace(xp: Any, real: Any) -> Any:
    """What a program's `sp` is: scipy.special beside NumPy (a float64 shim for long
    double, which SciPy's ufuncs have no loops for), jax.scipy.special beside jax.numpy."""
    if xp is not np:
        import jax.scipy.special
        return jax.scipy.special
    import scipy.special
    return _Float64Special() if np.dtype(real) == np.longdouble else scipy.special


class _Float64Special:
    """scipy.special's functions on long double arrays, computed in float64."""

    def __getattr__(self, name: str) -> Any:
        import scipy.special
        fn = getattr(scipy.special, name)

        def in_float64(*args: Any, **kwargs: Any) -> Any:
            low = [np.asarray(a, np.float64) if np.asarray(a).dtype == np.longdouble else a
                   for a in args]
            return np.asarray(fn(*low, **kwargs)).astype(np.longdouble)
        return in_float64


def complex_twin(real: Any) -> type:
    """The complex type of a real float type's precision (float32 -> complex64)."""
    return np.result_type(np.dtype(real), np.complex64).type


def draw(rng: np.random.Generator, shape: tuple, dtype: np.dtype, lo: float, hi: float,
         dyadic: bool = False, imag: tuple = (0.0, 0.0)) -> np.ndarray:
    """Random values in [lo, hi] of a dtype (uniform floats, integers, booleans); complex
    values have their imaginary parts in imag."""
    if dtype.kind == "c":
        re = draw(rng, shape, np.dtype(np.float64), lo, hi, dyadic)
        return np.asarray(re + 1j * draw(rng, shape, np.dtype(np.float64), *imag, dyadic),
                          dtype=dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(int(lo), int(hi) + 1, size=shape).astype(dtype)
    x = rng.uniform(lo, hi, size=shape)
    if dyadic:
        x = np.clip(np.round(x * 8) / 8, lo, hi)
    return np.asarray(x, dtype=dtype)


# ---------------------------------------------------------------------------------------
# intervals


def hull(*pairs: tuple[float, float]) -> tuple[float, float]:
    return min(p[0] for p in pairs), max(p[1] for p in pairs)


def iv_mul(a: tuple, b: tuple) -> tuple[float, float]:
    products = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(products), max(products)


def iv_monotone(fn, lo: float, hi: float) -> tuple[float, float]:
    ends = (fn(lo), fn(hi))
    return min(ends), max(ends)


def away_from_zero(v: Value, margin: float = 0.25) -> bool:
    return v.lo >= margin or v.hi <= -margin


# rectangles: (re_lo, re_hi, im_lo, im_hi), what a complex value's parts lie in


def rect(v: Value) -> tuple[float, float, float, float]:
    return v.lo, v.hi, v.ilo, v.ihi


def rect_mul(a: tuple, b: tuple) -> tuple[float, float, float, float]:
    """Bounds of (a_re + i a_im)(b_re + i b_im) for parts in the rectangles a and b."""
    rr, ii = iv_mul(a[:2], b[:2]), iv_mul(a[2:], b[2:])
    ri, ir = iv_mul(a[:2], b[2:]), iv_mul(a[2:], b[:2])
    return rr[0] - ii[1], rr[1] - ii[0], ri[0] + ir[0], ri[1] + ir[1]


def rect_scaled_sum(r: tuple, n: int) -> tuple[float, float, float, float]:
    """Bounds of a sum of n values in r (0 when n is 0)."""
    return min(0.0, n * r[0]), max(0.0, n * r[1]), min(0.0, n * r[2]), max(0.0, n * r[3])


# ---------------------------------------------------------------------------------------
# the generator


class Generator:
    """Builds one program; op_* methods each try to append one statement."""

    def __init__(self, rng: np.random.Generator, float_dtype: Any, kind: str,
                 max_inputs: int = 3):
        self.rng = rng
        self.float_dtype = np.dtype(float_dtype)
        self.kind = kind
        # differentiable: derivative modes will run (smooth programs, float64 mutation ones)
        self.smooth = kind == "smooth" or kind == "mutation" and self.float_dtype == np.float64
        self.max_inputs = max_inputs
        self.dyadic = kind == "pure" and rng.random() < 0.3
        self.inputs: list[Value] = []
        self.values: list[Value] = []
        self.lines: list[str] = []
        self.consts: dict[str, np.ndarray] = {}
        from .control_ops import PythonLax

        self.env: dict[str, Any] = {"xp": np, "sp": special_namespace(np, self.float_dtype),
                                    "F": self.float_dtype.type, "lx": PythonLax}
        self.cost = 1
        self.mutates_inputs = False
        self.counter = 0
        self.mutations = 0
        self.roots: set[str] = set()  # buffers the program may write into (and their views)
        self.input_writes = kind == "mutation" and rng.random() < 0.4

    # -- choices --------------------------------------------------------------------------

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, seq: list) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def shape(self, max_ndim: int = 3) -> tuple[int, ...]:
        ndim = int(self.rng.integers(0, max_ndim + 1))
        dims = [self.choice([1, 2, 3, 4, 5]) for _ in range(ndim)]
        if dims and self.chance(0.06):
            dims[int(self.rng.integers(ndim))] = 0
        while math.prod(dims) > MAX_ELEMS:
            dims.pop()
        return tuple(dims)

    def pick(self, pred=lambda v: True, recent: bool = True) -> Value | None:
        """A value satisfying pred, biased towards the most recent ones."""
        found = [v for v in self.values if pred(v)]
        if not found:
            return None
        if recent and self.chance(0.6):
            return found[-1 - int(self.rng.integers(min(3, len(found))))]
        return self.choice(found)

    def float_values(self, v: Value) -> bool:
        return v.kind == "f" and not v.nan

    def allowed_dtypes(self) -> list[np.dtype]:
        if self.smooth or self.kind == "large":
            return [self.float_dtype]
        extra = [np.dtype(np.int32), np.dtype(np.int64), np.dtype(bool)]
        if self.float_dtype == np.float32:
            extra.append(np.dtype(np.float64))
        return [self.float_dtype] * 4 + extra

    # -- inputs and statements ------------------------------------------------------------

    def new_input(self, shape: tuple, dtype: np.dtype | None = None) -> Value | None:
        if len(self.inputs) >= self.max_inputs:
            return None
        dtype = np.dtype(dtype or self.choice(self.allowed_dtypes()))
        lo, hi = self.input_range(dtype)
        v = Value(f"x{len(self.inputs)}", tuple(shape), dtype, lo, hi)
        self.env[v.name] = draw(self.rng, v.shape, dtype, lo, hi, self.dyadic)
        self.inputs.append(v)
        self.values.append(v)
        if self.input_writes:
            self.roots.add(v.name)
        return v

    def input_range(self, dtype: np.dtype) -> tuple[float, float]:
        if dtype.kind == "b":
            return 0.0, 1.0
        if dtype.kind in "iu":
            return -5.0, 5.0
        return self.choice([(-2.0, 2.0), (-1.0, 1.0), (0.5, 2.0), (-3.0, -0.5)])

    def emit(self, expr: str, lo: float, hi: float, *, exact: bool = False,
             nan: bool = False, cost: int = 1, imag: tuple | None = None) -> Value | None:
        """Append `vN = expr` if NumPy accepts it on the probes; None if it does not.

        imag bounds a complex result's imaginary part (by default: the imaginary bounds of
        the values expr names, right for shape ops, which only move elements).
        """
        if max(abs(lo), abs(hi)) > MAX_MAG or math.isnan(lo) or math.isnan(hi):
            return None
        name = f"v{self.counter}"
        try:
            result = self.run(f"{name} = {expr}")[name]
        except Exception:
            return None
        result = np.asarray(result)
        imag = (imag or self.named_imag(expr)) if result.dtype.kind == "c" else (0.0, 0.0)
        if result.size > self.size_limit() or result.dtype not in self.dtypes() or \
                max(abs(imag[0]), abs(imag[1])) > MAX_MAG:
            self.env.pop(name, None)
            return None
        self.counter += 1
        v = Value(name, result.shape, result.dtype, float(lo), float(hi),
                  exact=exact or result.dtype.kind not in "fc", nan=nan,
                  ilo=float(imag[0]), ihi=float(imag[1]))
        self.lines.append(f"{name} = {expr}")
        self.check_interval(v, result)
        self.values.append(v)
        self.cost += cost
        return v

    def dtypes(self) -> set[np.dtype]:
        """The dtypes a program's values may have."""
        return SUPPORTED | COMPLEX if self.kind == "complex" else SUPPORTED

    def named_imag(self, expr: str) -> tuple[float, float]:
        """The hull of the imaginary bounds of the values expr names."""
        named = [v for v in self.values if re.search(rf"\b{v.name}\b", expr)]
        return (min([v.ilo for v in named], default=0.0),
                max([v.ihi for v in named], default=0.0))

    def run(self, statement: str) -> dict:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(statement, self.env)
        return self.env

    def size_limit(self) -> int:
        return LARGE_ELEMS[-1] if self.kind == "large" else MAX_ELEMS

    def check_interval(self, v: Value, result: np.ndarray) -> None:
        """The generator's own check: the probe's values lie in the claimed interval."""
        result = np.asarray(result)
        if result.dtype.kind == "c":
            self.check_interval(replace(v, dtype=np.dtype(np.float64)), result.real)
            self.check_interval(replace(v, dtype=np.dtype(np.float64), lo=v.ilo, hi=v.ihi),
                                result.imag)
            return
        finite = result[np.isfinite(result)] if result.dtype.kind == "f" else result
        if finite.size and (finite.min() < v.lo - 1e-6 * (1 + abs(v.lo))
                            or finite.max() > v.hi + 1e-6 * (1 + abs(v.hi))):
            raise AssertionError(f"interval {v.lo, v.hi} misses {finite.min(), finite.max()}"
                                 f" in {self.lines[-1] if self.lines else ''} ({v.name})")

    def const(self, array: np.ndarray) -> str:
        name = f"C{len(self.consts)}"
        self.consts[name] = array
        self.env[name] = array
        return name

    def program(self, outputs: list[str]) -> Program:
        return Program(self.float_dtype, self.inputs, self.lines, outputs, self.consts,
                       self.kind, self.mutates_inputs, self.dyadic, self.smooth, self.cost)
