"""The operation catalogue: one entry per function transfuse traces (issue #14).

Each `OpInfo` names a function as a user calls it (`np.sin`, `np.linalg.solve`,
`scipy.linalg.cho_solve`, `lax.dynamic_slice`, `ndarray.__getitem__`), the dtypes it is
tested in, a generator of sample calls (seeded inputs from a domain: 0-d, size-0,
broadcasting, stacked, positive, positive-definite, well-conditioned, ...), its reference
(NumPy by default: the function itself called on NumPy arrays), how it differentiates and
where it runs. tests/test_opinfo.py runs every entry under eager tracing, jvp, vjp, vmap,
jit, functionalize and CUDA PTX compilation; the coverage table of docs/numpy.md is
generated from it (`python -m tests.opinfo --write-docs`).

Complex numbers: `Draws` makes complex samples (a real draw plus an imaginary part) and the
derivative checks use JAX's convention, so an entry is tested on complex inputs once
"complex64"/"complex128" are added to its `dtypes`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import scipy.special

import transfuse.lax as lax
import transfuse.numpy as tnp

FLOATS = ("float32", "float64")
COMPLEX = ("complex64", "complex128")
INTS = ("int32", "int64")
UNARY_DTYPES = FLOATS + ("int32",)
NUMERIC = FLOATS + INTS
INTEGRAL = INTS + ("bool",)
ALL = NUMERIC + ("bool",)
F64 = ("float64",)

# ---------------------------------------------------------------------------------------
# Sample inputs


class Draws:
    """Seeded sample arrays of one dtype, from the domain a function needs."""

    def __init__(self, dtype: str, seed: int = 0):
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)

    def _finish(self, real) -> np.ndarray:
        """Real values in the dtype; complex dtypes get an imaginary part as well."""
        real = np.asarray(real)
        if self.dtype.kind == "c":
            imag = 0.5 * self.rng.standard_normal(real.shape)
            return np.asarray(real + 1j * imag).astype(self.dtype)  # 0-d stays an array
        return real.astype(self.dtype)

    def normal(self, shape) -> np.ndarray:
        """Normals for floats, small integers for ints, coin flips for bools."""
        if self.dtype.kind == "b":
            return self.rng.random(shape) < 0.5
        if self.dtype.kind in "iu":
            return self.rng.integers(-5, 6, shape).astype(self.dtype)
        return self._finish(self.rng.standard_normal(shape))

    def positive(self, shape) -> np.ndarray:
        if self.dtype.kind in "iub":
            return self.rng.integers(1, 5, shape).astype(self.dtype)
        return self._finish(np.abs(self.rng.standard_normal(shape)) + 0.5)

    def above_one(self, shape) -> np.ndarray:
        return self._finish(np.abs(self.rng.standard_normal(shape)) + 1.5)

    def unit(self, shape) -> np.ndarray:
        """Inside (-0.9, 0.9): arcsin, arctanh; tan away from its poles."""
        return self._finish(self.rng.uniform(-0.9, 0.9, shape))

    def nonzero(self, shape) -> np.ndarray:
        sign = self.rng.choice([-1, 1], shape)
        if self.dtype.kind in "iu":
            return (sign * self.rng.integers(1, 5, shape)).astype(self.dtype)
        return self._finish(sign * (np.abs(self.rng.standard_normal(shape)) + 0.3))

    def small(self, shape) -> np.ndarray:
        """Factors near 1 (small non-negative integers for ints): products stay in range."""
        if self.dtype.kind in "iu":
            return self.rng.integers(0, 3, shape).astype(self.dtype)
        return self._finish(self.rng.uniform(0.5, 1.5, shape))

    def scaled(self, shape) -> np.ndarray:
        """Normals times 3, away from the integers (floor, ceil, rint, mod's jumps)."""
        if self.dtype.kind in "iu":
            return self.normal(shape)
        whole = self.rng.integers(-4, 4, shape)
        return self._finish(whole + self.rng.uniform(0.2, 0.8, shape))

    def distinct(self, shape) -> np.ndarray:
        """A random permutation of well-separated values: no ties, no near-ties."""
        size = int(np.prod(shape, dtype=int))
        if self.dtype.kind in "iub":
            return self.normal(shape)
        return self._finish((self.rng.permutation(size) * 0.37 - size * 0.15 + 0.05
                             ).reshape(shape))

    def special(self, shape) -> np.ndarray:
        """Normals with NaN, inf and -inf sprinkled in (isnan and friends)."""
        x = self.rng.standard_normal(shape)
        flat = x.reshape(-1)
        flat[::3], flat[1::5], flat[2::7] = np.nan, np.inf, -np.inf
        return self._finish(x)

    def spd(self, shape) -> np.ndarray:
        """Symmetric positive-definite matrices (..., n, n), eigenvalues 1, 2, ..., n."""
        q, _ = np.linalg.qr(self.rng.standard_normal(shape))
        n = shape[-1]
        return self._finish((q * np.arange(1.0, n + 1)) @ np.swapaxes(q, -1, -2))

    def invertible(self, shape) -> np.ndarray:
        """Well-conditioned square matrices (..., n, n): normals plus 3 on the diagonal."""
        return self._finish(self.rng.standard_normal(shape) + 3 * np.eye(shape[-1]))

    def bools(self, shape) -> np.ndarray:
        return self.rng.random(shape) < 0.5

    def indices(self, shape, n: int) -> np.ndarray:
        """int64 indices into a dimension of size n, negative ones included."""
        return self.rng.integers(-n, n, shape).astype(np.int64)

    def key(self, shape=()) -> np.ndarray:
        return self.rng.integers(0, 2**63, shape, dtype=np.int64).astype(np.uint64)

    def full(self, shape, value) -> np.ndarray:
        return np.full(shape, value, self.dtype)


@dataclass(frozen=True)
class Sample:
    """One call: array arguments (batched by vmap, the float ones differentiated), static
    keyword arguments, and what its derivative does where it is not the default."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    no_derivative: str = ""  # the UnsupportedError message jvp and vjp raise, if they do
    smooth: bool = True  # False: NaN or inf inputs or outputs, no derivative to compare

    def describe(self) -> str:
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray)
                           else repr(a) for a in self.args)
        return f"({shapes}; {self.kwargs})"


def s(*args: Any, no_derivative: str = "", smooth: bool = True, **kwargs: Any) -> Sample:
    return Sample(tuple(args), kwargs, no_derivative, smooth)


# Derivatives: "yes" (checked against differences and JAX), "zero" (piecewise constant or a
# non-float output: jvp and vjp give zeros), "integer" (integer or boolean inputs only: jvp
# raises DTypeError), "no-inputs" (no array arguments).
YES, ZERO, INTEGER, NO_INPUTS = "yes", "zero", "integer", "no-inputs"
# CUDA: None compiles to PTX; a string is the CompileError raised when the program is built.
NO_KERNEL = "no CUDA kernel"


@dataclass(frozen=True)
class OpInfo:
    """One function: its samples, reference and how each transform treats it."""

    name: str
    op: Callable
    samples: Callable[[Draws], list[Sample]]
    family: str
    dtypes: tuple[str, ...] = FLOATS
    ref: Callable | None = None  # default: op itself on NumPy arrays (NumPy's function)
    exact: bool = True  # the traced result equals the reference to the bit
    derivative: str = YES
    jax: Callable | None = None  # (jax module, *args, **kwargs) -> the same in JAX
    symmetric: bool = False  # derivatives along symmetric perturbations (cholesky, eigh)
    cuda: str | None = None  # the build-time CompileError, for functions without a kernel
    cuda_note: str = ""
    tol: float = 1.0  # scales the float tolerances (composites that round more)
    eps: float = 1e-6  # the finite-difference step (wider through float32 rounding)
    writes: tuple[int, ...] = ()  # arguments written in place (vmap batches them)
    note: str = ""  # for the docs table

    @property
    def reference(self) -> Callable:
        return self.ref or self.op


OPS: dict[str, OpInfo] = {}


def add(name: str, op: Callable, samples: Callable[[Draws], list[Sample]], family: str,
        **options: Any) -> None:
    assert name not in OPS, f"two entries named {name}"
    OPS[name] = OpInfo(name, op, samples, family, **options)


def jnp(name: str) -> Callable:
    """jax.numpy.<name> (dotted: jax.numpy.linalg.inv), called with the sample's arguments."""
    def call(jax, *args, **kwargs):
        fn = jax.numpy
        for part in name.split("."):
            fn = getattr(fn, part)
        return fn(*args, **kwargs)
    return call


# ---------------------------------------------------------------------------------------
# Sample builders

UNARY_SHAPES = [(3, 4), (), (0, 3)]
PAIRS = [((3, 1), (1, 4)), ((3, 4), (3, 4)), ((), (2, 3)), ((2, 3), (3,)), ((4, 1), (3,)),
         ((0, 3), (1, 3))]
PROMOTED = {"float32": "float64", "float64": "int64", "int32": "float32", "int64": "int32",
            "bool": "int32"}  # a mixed-dtype pair per dtype: NumPy's promotion


def unary(domain: str = "normal", shapes=UNARY_SHAPES) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(getattr(m, domain)(shape)) for shape in shapes]


def binary(x_domain: str = "normal", y_domain: str = "normal", promote: bool = True
           ) -> Callable[[Draws], list[Sample]]:
    """Broadcasting pairs, a 0-d and a size-0 operand, and a pair of mixed dtypes."""
    def samples(m: Draws) -> list[Sample]:
        out = [s(getattr(m, x_domain)(sx), getattr(m, y_domain)(sy)) for sx, sy in PAIRS]
        other = PROMOTED.get(m.dtype.name)
        if promote and other:
            y = getattr(Draws(other, 1), y_domain)((4,))
            out.append(s(getattr(m, x_domain)((3, 4)), y))
        return out
    return samples


def _powers(m: Draws) -> list[Sample]:
    if m.dtype.kind in "iub":
        return [s(m.normal(sx), m.small(sy)) for sx, sy in PAIRS]  # non-negative exponents
    return [s(m.positive(sx), m.normal(sy)) for sx, sy in PAIRS]


def _mods(m: Draws) -> list[Sample]:
    """x = 0.75 (k + u), u in (0.2, 0.8), y near 0.75: away from mod's jumps."""
    if m.dtype.kind in "iu":
        return [s(m.normal(sx), m.nonzero(sy)) for sx, sy in PAIRS]
    def x(shape):
        return m._finish(0.75 * (m.rng.integers(-3, 4, shape) + m.rng.uniform(0.2, 0.8, shape)))

    def y(shape):
        return m._finish(0.75 + m.rng.uniform(-0.02, 0.02, shape))
    return [s(x(sx), y(sy)) for sx, sy in PAIRS]


def _ties(m: Draws) -> list[Sample]:
    """Small integers as floats: comparisons meet ties."""
    def ints(shape):
        return m.rng.integers(-2, 2, shape).astype(m.dtype)
    return [s(ints(sx), ints(sy)) for sx, sy in PAIRS] + [s(m.normal((3, 4)), m.normal((4,)))]


def reductions(domain: str = "normal", empty_axis: int = 0, zero_d: bool = True,
               nan_empty: bool = False) -> Callable[[Draws], list[Sample]]:
    """Every axis kind, keepdims, 0-d, and a size-0 array (mean's of it: NaN)."""
    def samples(m: Draws) -> list[Sample]:
        x = getattr(m, domain)
        return [s(x((2, 3, 4)), axis=a, keepdims=k) for a in (None, 0, -1, (0, 2))
                for k in (False, True)] + [s(x((0, 3)), axis=empty_axis,
                                             smooth=not nan_empty)] + (
                    [s(x(()))] if zero_d else [])
    return samples


def _arg_reductions(m: Draws) -> list[Sample]:
    ties = np.repeat(m.normal((3, 1)), 4, axis=1)  # the first of equal values wins
    return [s(m.distinct((4, 5)), axis=a, keepdims=k) for a in (None, 0, 1, -1)
            for k in (False, True)] + [s(ties, axis=1)]


def _scans(domain: str) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(getattr(m, domain)((3, 4)), axis=a) for a in (None, 0, 1)] + [
        s(getattr(m, domain)((0, 3)), axis=0)]


# ---------------------------------------------------------------------------------------
# Elementwise functions

UNARY_FLOAT = "unary"
add("np.exp", np.exp, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.expm1", np.expm1, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.log", np.log, unary("positive"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.log1p", np.log1p, unary("positive"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.sqrt", np.sqrt, unary("positive"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.sin", np.sin, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.cos", np.cos, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.tan", np.tan, unary("unit"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.arcsin", np.arcsin, unary("unit"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.arccos", np.arccos, unary("unit"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.arctan", np.arctan, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.sinh", np.sinh, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.cosh", np.cosh, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.tanh", np.tanh, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.arcsinh", np.arcsinh, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.arccosh", np.arccosh, unary("above_one"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.arctanh", np.arctanh, unary("unit"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("np.reciprocal", np.reciprocal, unary("nonzero"), UNARY_FLOAT, dtypes=UNARY_DTYPES)
add("tnp.logistic", tnp.logistic, unary(), UNARY_FLOAT, ref=scipy.special.expit,
    jax=lambda jax, x: jax.nn.sigmoid(x), note="`scipy.special.expit`")
add("tnp.erf", tnp.erf, unary(), UNARY_FLOAT, ref=scipy.special.erf,
    jax=lambda jax, x: jax.scipy.special.erf(x), note="`scipy.special.erf`")
add("lax.rsqrt", lax.rsqrt, unary("positive"), UNARY_FLOAT, ref=lambda x: 1 / np.sqrt(x),
    exact=False, jax=lambda jax, x: jax.lax.rsqrt(x))

# ---------------------------------------------------------------------------------------
# scipy.special (transfuse/scipy/special.py): its ufuncs dispatch through __array_ufunc__,
# its Python functions are replaced while tracing. ndtr, logit, xlogy, ... are compositions.

SPECIAL = "scipy-special"


def _inside(lo: float, hi: float) -> Callable[[Draws], list[Sample]]:
    """Unary samples inside (lo, hi): the domains of erfinv, ndtri, logit, erfcinv."""
    return lambda m: [s(m._finish(m.rng.uniform(lo, hi, shape))) for shape in UNARY_SHAPES]


def _x_log_samples(m: Draws) -> list[Sample]:
    """xlogy's pairs, and x with exact zeros (where d/dx is log(y), as JAX's)."""
    x = m.normal((3, 4))
    x[:, 1] = 0
    return binary("normal", "positive")(m) + [s(x, m.positive((3, 4)))]


def _polygamma(x, n):
    return scipy.special.polygamma(n, x)


def _polygamma_samples(m: Draws) -> list[Sample]:
    return [s(m.positive((3, 4)), n=n) for n in (1, 2, 3, 0)] + [
        s(m.positive(()), n=1), s(m.positive((0, 3)), n=2),
        s(m.positive((2, 4)), n=np.array([0, 1, 3, 2]))]


def _logsumexp_samples(m: Draws) -> list[Sample]:
    """Every axis kind and keepdims; b= positive (the sum stays positive) or any sign with
    return_sign; 0-d and size 0."""
    x = m.normal((2, 3, 4))
    return [s(x, axis=a, keepdims=k) for a in (None, 0, -1, (0, 2)) for k in (False, True)] + [
        s(x, m.positive((3, 4)), axis=1),
        s(x, m.normal((2, 3, 4)), axis=-1, return_sign=True),
        s(m.normal(())), s(m.normal((0, 3)), axis=1)]


def _logsumexp(a, b=None, **kwargs):
    return scipy.special.logsumexp(a, b=b, **kwargs)


def _softmax_samples(m: Draws) -> list[Sample]:
    x = m.normal((3, 4))
    return [s(x, axis=a) for a in (None, 0, 1, (0, 1))] + [s(m.normal(())),
                                                            s(m.normal((0, 3)), axis=1)]


def _softmax(x, axis=None):
    return scipy.special.softmax(x, axis=axis)  # through the module: replaced while tracing


def _log_softmax(x, axis=None):
    return scipy.special.log_softmax(x, axis=axis)


def _jsp(name: str) -> Callable:
    return lambda jax, *args, **kwargs: getattr(jax.scipy.special, name)(*args, **kwargs)


for _name, _samples in (
        ("erf", unary()), ("erfc", unary()), ("erfinv", _inside(-0.95, 0.95)),
        ("ndtri", _inside(0.02, 0.98)), ("ndtr", unary()), ("log_ndtr", unary()),
        ("gammaln", unary("positive")), ("digamma", unary("positive")), ("i0e", unary()),
        ("i1e", unary()), ("expit", unary()), ("logit", _inside(0.05, 0.95))):
    add(f"scipy.special.{_name}", getattr(scipy.special, _name), _samples, SPECIAL,
        exact=False, jax=_jsp(_name))
add("scipy.special.psi", scipy.special.psi, unary("positive"), SPECIAL, exact=False,
    jax=_jsp("digamma"))
add("scipy.special.erfcinv", scipy.special.erfcinv, _inside(0.05, 1.95), SPECIAL, exact=False)
add("scipy.special.softplus", scipy.special.softplus, unary(), SPECIAL, exact=False,
    jax=lambda jax, x: jax.nn.softplus(x))
add("scipy.special.xlogy", scipy.special.xlogy, _x_log_samples, SPECIAL, exact=False,
    jax=_jsp("xlogy"))
add("scipy.special.xlog1py", scipy.special.xlog1py, _x_log_samples, SPECIAL, exact=False,
    jax=_jsp("xlog1py"))
add("scipy.special.polygamma", _polygamma, _polygamma_samples, SPECIAL, exact=False,
    jax=lambda jax, x, n: jax.scipy.special.polygamma(n, x))
add("scipy.special.logsumexp", _logsumexp, _logsumexp_samples, SPECIAL, exact=False,
    jax=lambda jax, a, b=None, **kw: jax.scipy.special.logsumexp(a, b=b, **kw))
add("scipy.special.softmax", _softmax, _softmax_samples, SPECIAL, exact=False,
    jax=lambda jax, x, axis=None: jax.nn.softmax(x, axis=axis))
add("scipy.special.log_softmax", _log_softmax, _softmax_samples, SPECIAL,
    exact=False, jax=lambda jax, x, axis=None: jax.nn.log_softmax(x, axis=axis))
# Compositions of primitives: equal to NumPy to rounding.
for _f in (np.exp2, np.cbrt, np.deg2rad, np.radians, np.rad2deg, np.degrees):
    add(f"np.{_f.__name__}", _f, unary(), UNARY_FLOAT, dtypes=UNARY_DTYPES, exact=False)
for _f in (np.log2, np.log10):
    add(f"np.{_f.__name__}", _f, unary("positive"), UNARY_FLOAT, dtypes=UNARY_DTYPES,
        exact=False)

UNARY_NUMERIC = "unary-numeric"
add("np.negative", np.negative, unary(), UNARY_NUMERIC, dtypes=NUMERIC)
add("np.positive", np.positive, unary(), UNARY_NUMERIC, dtypes=NUMERIC)
add("np.absolute", np.absolute, unary("nonzero"), UNARY_NUMERIC, dtypes=NUMERIC)
add("np.fabs", np.fabs, unary("nonzero"), UNARY_NUMERIC, dtypes=UNARY_DTYPES)
add("np.square", np.square, unary(), UNARY_NUMERIC, dtypes=NUMERIC)
add("np.conjugate", np.conjugate, unary(), UNARY_NUMERIC, dtypes=NUMERIC)
add("np.real", np.real, unary(), UNARY_NUMERIC, dtypes=NUMERIC)
add("np.imag", np.imag, unary(), UNARY_NUMERIC, dtypes=NUMERIC, derivative=ZERO)
add("np.angle", np.angle, unary("nonzero"), UNARY_NUMERIC, derivative=ZERO)
add("np.sign", np.sign, unary("nonzero"), UNARY_NUMERIC, dtypes=NUMERIC, derivative=ZERO)
for _f in (np.floor, np.ceil, np.rint, np.trunc):
    add(f"np.{_f.__name__}", _f, unary("scaled"), UNARY_NUMERIC, dtypes=UNARY_DTYPES,
        derivative=ZERO)
add("lax.integer_pow", lambda x, y: lax.integer_pow(x, y),
    lambda m: [s(m.nonzero((3, 4)), y=y) for y in (0, 1, 2, 3, 7, -2)
               if m.dtype.kind == "f" or y >= 0] + [s(m.nonzero(()), y=3),
                                                     s(m.nonzero((0, 3)), y=2)],
    UNARY_NUMERIC, dtypes=NUMERIC, ref=lambda x, y: x ** y if y >= 0 else 1 / x ** -y,
    exact=False, jax=lambda jax, x, y: jax.lax.integer_pow(x, y))

PREDICATES = "unary-to-bool"
for _f in (np.isnan, np.isinf, np.isfinite, np.signbit):
    add(f"np.{_f.__name__}", _f, unary("special"), PREDICATES, derivative=ZERO)
add("np.logical_not", np.logical_not, unary(), PREDICATES, dtypes=ALL, derivative=ZERO)
add("np.invert", np.invert, unary(), PREDICATES, dtypes=INTEGRAL, derivative=INTEGER)

BINARY = "binary"
for _f in (np.add, np.subtract, np.multiply):
    add(f"np.{_f.__name__}", _f, binary(), BINARY, dtypes=NUMERIC)
add("np.divide", np.divide, binary("normal", "nonzero"), BINARY, dtypes=NUMERIC)
add("np.floor_divide", np.floor_divide, binary("scaled", "nonzero"), BINARY, dtypes=NUMERIC,
    derivative=ZERO)
add("np.remainder", np.remainder, _mods, BINARY, dtypes=NUMERIC)
add("np.power", np.power, _powers, BINARY, dtypes=NUMERIC)
add("np.maximum", np.maximum, binary("distinct"), BINARY, dtypes=NUMERIC)
add("np.minimum", np.minimum, binary("distinct"), BINARY, dtypes=NUMERIC)
add("np.fmax", np.fmax, binary("distinct"), BINARY, dtypes=NUMERIC)
add("np.fmin", np.fmin, binary("distinct"), BINARY, dtypes=NUMERIC)
add("np.arctan2", np.arctan2, binary("normal", "nonzero"), BINARY)
add("np.hypot", np.hypot, binary("nonzero", "nonzero"), BINARY, exact=False)
add("np.logaddexp", np.logaddexp, binary(), BINARY, exact=False)

COMPARE = "compare-logical"
for _f in (np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal):
    add(f"np.{_f.__name__}", _f, _ties, COMPARE, dtypes=ALL, derivative=ZERO)
for _f in (np.logical_and, np.logical_or, np.logical_xor):
    add(f"np.{_f.__name__}", _f, binary(), COMPARE, dtypes=ALL, derivative=ZERO)
for _f in (np.bitwise_and, np.bitwise_or, np.bitwise_xor):
    add(f"np.{_f.__name__}", _f, binary(promote=False), COMPARE, dtypes=INTEGRAL,
        derivative=INTEGER)
add("np.isclose", np.isclose, lambda m: [s(m.normal((3, 4)), m.normal((3, 4))),
                                         s(m.normal((3, 4)), m.normal((3, 4)) * 0)],
    COMPARE, derivative=ZERO)


def _where(m: Draws) -> list[Sample]:
    return [s(m.bools((3, 1)), m.normal((3, 4)), m.normal((1, 4))),
            s(m.bools(()), m.normal(()), m.normal((2,))),
            s(m.bools((2, 3)), m.normal((2, 3)), m.normal((2, 3))),
            s(m.bools((3,)), m.normal((2, 3)), m.normal(())),
            s(m.bools((0, 3)), m.normal((3,)), m.normal(()))]


def _clips(m: Draws) -> list[Sample]:
    lo, hi = (-0.5, 0.5) if m.dtype.kind == "f" else (-2, 3)
    return [s(m.normal((3, 4)), m.full((), lo), m.full((4,), hi)),
            s(m.normal((2, 3)), m._finish(m.rng.uniform(-2, -0.05, (2, 3))),
              m._finish(m.rng.uniform(0.05, 2, (2, 3)))),
            s(m.normal(()), m.full((), lo), m.full((), hi)),
            s(m.normal((3,)), m.full((2, 3), lo), m.full((3,), hi)),
            s(m.normal((0, 3)), m.full((3,), lo), m.full((), hi))]


def _clip_scalars(m: Draws) -> list[Sample]:
    return [s(m.normal((3, 4)), lo=-0.5, hi=0.5), s(m.normal((3, 4)), lo=-0.5, hi=None)]


add("np.where", np.where, _where, BINARY, dtypes=ALL)
add("np.clip", np.clip, _clips, BINARY, dtypes=NUMERIC,
    jax=lambda jax, x, lo, hi: jax.numpy.clip(x, lo, hi))
add("np.clip (scalar bounds)", lambda x, lo, hi: np.clip(x, lo, hi), _clip_scalars, BINARY,
    jax=lambda jax, x, lo, hi: jax.numpy.clip(x, lo, hi))
add("np.nan_to_num", np.nan_to_num,
    lambda m: [s(m.normal((3, 4))), s(m.special((3, 4)), smooth=False),
               s(m.normal((3, 4)) * np.inf, smooth=False)], BINARY)

# ---------------------------------------------------------------------------------------
# Reductions and scans

REDUCE = "reductions"
add("np.sum", np.sum, reductions(), REDUCE, dtypes=ALL)
add("np.prod", np.prod, reductions("small"), REDUCE, dtypes=ALL)
add("np.prod (zeros)", lambda x, axis: np.prod(x, axis=axis),
    lambda m: [s(m._finish([[1.5, 0.0, -2.0], [0.0, 0.0, 3.0], [2.0, 0.5, 0.0]]), axis=1),
               s(m._finish([[2.0, 0.0, 3.0, 0.0], [1.5, 0.0, 2.0, 4.0]]), axis=1)],
    REDUCE, jax=lambda jax, x, axis: jax.numpy.prod(x, axis=axis))
for _f in (np.max, np.min, np.amax, np.amin):
    add(f"np.{_f.__name__}", _f, reductions("distinct", empty_axis=1), REDUCE, dtypes=ALL)
add("np.mean", np.mean, reductions(nan_empty=True), REDUCE, dtypes=ALL, exact=False)
for _f in (np.var, np.std):  # the derivative of std at 0 (a 0-d input) is not finite
    add(f"np.{_f.__name__}", _f, reductions(zero_d=False, nan_empty=True), REDUCE,
        dtypes=ALL, exact=False)
for _f in (np.any, np.all):
    add(f"np.{_f.__name__}", _f, reductions(), REDUCE, dtypes=ALL, derivative=ZERO)
add("np.add.reduce", np.add.reduce,
    lambda m: [s(m.normal((2, 3, 4)), axis=a) for a in (0, 1, (0, 2))], REDUCE,
    jax=lambda jax, x, axis: jax.numpy.sum(x, axis=axis))
add("tnp.logsumexp", tnp.logsumexp, reductions(empty_axis=1), REDUCE, exact=False,
    ref=scipy.special.logsumexp, note="`scipy.special.logsumexp`",
    jax=lambda jax, x, **kw: jax.scipy.special.logsumexp(x, **kw))
add("lax.reduce_sum", lax.reduce_sum,
    lambda m: [s(m.normal((2, 3, 4)), axes=a) for a in ((1,), (0, 2), (), (0, 1, 2))] + [
        s(m.normal(()), axes=()), s(m.normal((0, 3)), axes=(0,))], REDUCE, dtypes=NUMERIC,
    jax=lambda jax, x, axes: jax.numpy.sum(x, axis=axes))

SCAN = "scans"
add("np.argmax", np.argmax, _arg_reductions, SCAN, dtypes=ALL, derivative=ZERO)
add("np.argmin", np.argmin, _arg_reductions, SCAN, dtypes=ALL, derivative=ZERO)
add("np.cumsum", np.cumsum, _scans("normal"), SCAN, dtypes=ALL)
add("np.cumprod", np.cumprod, _scans("nonzero"), SCAN, dtypes=ALL)
add("np.cumprod (zeros)", lambda x, axis: np.cumprod(x, axis=axis),
    lambda m: [s(m._finish([1.5, 0.0, -2.0, 0.5, 1.2, 0.0, 2.0]), axis=0),
               s(m._finish([[2.0, 0.0, 3.0, 0.0], [1.5, 0.0, 2.0, 4.0], [0.0, 1, 2, 3]]),
                 axis=1)], SCAN, jax=lambda jax, x, axis: jax.numpy.cumprod(x, axis=axis))


def _reverse_scans(m: Draws) -> list[Sample]:
    return [s(m.nonzero((5, 3)), axis=a, reverse=r) for a in (0, 1) for r in (False, True)]


add("lax.cumsum", lax.cumsum, _reverse_scans, SCAN, dtypes=NUMERIC,
    jax=lambda jax, x, axis, reverse: jax.lax.cumsum(x, axis, reverse))
add("lax.cumprod", lax.cumprod, _reverse_scans, SCAN, dtypes=NUMERIC,
    jax=lambda jax, x, axis, reverse: jax.lax.cumprod(x, axis, reverse))
add("np.diff", np.diff, lambda m: [s(m.normal((2, 3, 4)), axis=1), s(m.normal((2, 3, 4)), n=2),
                                   s(m.normal((0, 3)))], SCAN)

# ---------------------------------------------------------------------------------------
# Contractions

CONTRACT = "contractions"
MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                 ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 5)),
                 ((3, 4), (2, 4, 5)), ((0, 4), (4, 2)), ((3, 0), (0, 2))]


def _pairs_of(shapes) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(m.normal(a), m.normal(b)) for a, b in shapes]


add("np.matmul", np.matmul, _pairs_of(MATMUL_SHAPES), CONTRACT, dtypes=FLOATS + ("int64",),
    exact=False)
add("np.dot", np.dot, _pairs_of([((3, 4), (4, 4)), ((2, 3, 4), (4, 2)), ((3,), (3,)),
                                 ((), (2, 3)), ((0,), (0,))]), CONTRACT, dtypes=NUMERIC,
    exact=False)
add("np.inner", np.inner, _pairs_of([((3, 4), (5, 4)), ((4,), (4,))]), CONTRACT, exact=False)
add("np.outer", np.outer, _pairs_of([((3, 4), (4, 4)), ((3,), (2,))]), CONTRACT, exact=False)
add("np.vdot", np.vdot, _pairs_of([((3, 4), (4, 3)), ((5,), (5,))]), CONTRACT, exact=False)
add("np.kron", np.kron, _pairs_of([((3, 4), (4, 4)), ((2,), (3,))]), CONTRACT, exact=False)
add("np.multiply.outer", np.multiply.outer, _pairs_of([((4,), (4,)), ((2, 3), (2,))]),
    CONTRACT, jax=lambda jax, a, b: jax.numpy.multiply.outer(a, b))
add("np.tensordot", np.tensordot,
    lambda m: [s(m.normal((3, 4)), m.normal((4, 4)), axes=1),
               s(m.normal((3, 4)), m.normal((4, 4)), axes=([1], [0])),
               s(m.normal((2, 3, 4)), m.normal((4, 3, 5)), axes=([1, 2], [1, 0]))],
    CONTRACT, exact=False)
EINSUMS = [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
           ("i,i->", [(4,), (4,)]), ("ij->ji", [(3, 4)]), ("ij->", [(3, 4)]),
           ("...ij,jk->...ik", [(2, 3, 4), (4, 5)]), ("ij,ij->i", [(3, 4), (3, 4)]),
           ("i,j->ij", [(3,), (4,)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
           ("bi,bo->bio", [(6, 3), (6, 2)]), ("ij", [(3, 4)]), ("ij,jk", [(3, 4), (4, 2)])]


def _einsum(*operands, spec):
    return np.einsum(spec, *operands)


add("np.einsum", _einsum,
    lambda m: [s(*(m.normal(x) for x in shapes), spec=spec) for spec, shapes in EINSUMS],
    CONTRACT, exact=False, jax=lambda jax, *ops, spec: jax.numpy.einsum(spec, *ops))
# The other forms (tests/test_einsum.py has more): diagonals and traces, ellipses and size-1
# labels broadcasting, the interleaved sublist form, and contraction orders by `optimize=`.
EINSUM_DIAGONALS = [("ii->i", [(3, 3)]), ("iij->j", [(3, 3, 2)]), ("ii,ij->j", [(3, 3), (3, 4)])]
EINSUM_BROADCASTS = [("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]), ("i...->...", [(3, 2)]),
                     ("ij,j->i", [(2, 1), (3,)])]


def _einsums(cases) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(*(m.normal(x) for x in shapes), spec=spec) for spec, shapes in cases]


def _einsum_sublists(*operands, sublists, output=None):
    args = [x for op, sub in zip(operands, sublists) for x in (op, list(sub))]
    return np.einsum(*args, *(() if output is None else (list(output),)))


def _einsum_optimized(*operands, spec, optimize):
    return np.einsum(spec, *operands, optimize=optimize)


add("np.einsum (diagonals)", _einsum, _einsums(EINSUM_DIAGONALS), CONTRACT, exact=False,
    jax=lambda jax, *ops, spec: jax.numpy.einsum(spec, *ops))
add("np.einsum (ellipses, broadcasting)", _einsum, _einsums(EINSUM_BROADCASTS), CONTRACT,
    exact=False, jax=lambda jax, *ops, spec: jax.numpy.einsum(spec, *ops))
add("np.einsum (sublists)", _einsum_sublists,
    lambda m: [s(m.normal((2, 3)), m.normal((3, 4)), sublists=((0, 1), (1, 2)), output=(0, 2)),
               s(m.normal((2, 1, 3)), m.normal((4, 3, 2)), sublists=((..., 0), (..., 0, 1)),
                 output=(..., 1))],
    CONTRACT, exact=False, jax=lambda jax, *ops, sublists, output=None: jax.numpy.einsum(
        *[x for op, sub in zip(ops, sublists) for x in (op, list(sub))],
        *(() if output is None else (list(output),))))
add("np.einsum (optimize)", _einsum_optimized,
    lambda m: [s(m.normal((4, 2)), m.normal((2, 4)), m.normal((4, 3)), spec="ij,jk,kl->il",
                 optimize=True),
               s(m.normal((2, 3)), m.normal((3, 4)), m.normal((4, 2)), spec="ij,jk,kl->li",
                 optimize=("einsum_path", (1, 2), (0, 1)))],
    CONTRACT, exact=False,
    jax=lambda jax, *ops, spec, optimize: jax.numpy.einsum(spec, *ops))
# NumPy 2's vector and matrix products and np.linalg's array-API names
# (transfuse/numpy/_products.py): vecdot and vecmat conjugate their first operand.
add("np.vecdot", np.vecdot, _pairs_of([((3, 4), (4,)), ((2, 1, 3), (4, 3)), ((0, 3), (3,))]),
    CONTRACT, dtypes=FLOATS + COMPLEX, exact=False)
add("np.matvec", np.matvec, _pairs_of([((2, 3, 4), (4,)), ((3, 4), (2, 4))]), CONTRACT,
    dtypes=FLOATS + COMPLEX, exact=False)
add("np.vecmat", np.vecmat, _pairs_of([((3,), (3, 4)), ((2, 3), (3, 4))]), CONTRACT,
    dtypes=FLOATS + COMPLEX, exact=False)
add("np.linalg.vecdot", np.linalg.vecdot,
    lambda m: [s(m.normal((4, 3)), m.normal((2, 4, 3)), axis=-2)], CONTRACT, exact=False)
add("np.linalg.outer", np.linalg.outer, _pairs_of([((3,), (4,))]), CONTRACT, exact=False)
add("np.linalg.tensordot", np.linalg.tensordot,
    lambda m: [s(m.normal((2, 3, 4)), m.normal((3, 4, 2))),
               s(m.normal((3, 4)), m.normal((4, 5)), axes=1)], CONTRACT, exact=False)
add("np.linalg.matmul", np.linalg.matmul, _pairs_of([((2, 3, 4), (4, 5))]), CONTRACT,
    exact=False)
add("np.linalg.diagonal", np.linalg.diagonal, lambda m: [s(m.normal((2, 3, 4)), offset=1)],
    CONTRACT)
add("np.linalg.trace", np.linalg.trace,
    lambda m: [s(m.normal((2, 3, 3))), s(m.normal((3, 4)), offset=-1)], CONTRACT)
add("np.matrix_transpose", np.matrix_transpose, lambda m: [s(m.normal((2, 3, 4)))], CONTRACT)


DOT_CASES = [  # lhs shape, rhs shape, ((lhs contracting, rhs contracting), (batch, batch))
    ((3, 4), (4, 5), (((1,), (0,)), ((), ()))),
    ((4, 3), (4, 5), (((0,), (0,)), ((), ()))),
    ((3, 4), (5, 4), (((1,), (1,)), ((), ()))),
    ((4, 3), (5, 4), (((0,), (1,)), ((), ()))),
    ((3, 4), (4,), (((1,), (0,)), ((), ()))),
    ((2, 3, 4), (2, 4, 5), (((2,), (1,)), ((0,), (0,)))),
    ((3, 2, 4), (4, 5, 2), (((2,), (0,)), ((1,), (2,)))),
    ((2, 3, 4), (4, 3, 5), (((1, 2), (1, 0)), ((), ()))),
    ((4, 2, 3), (3, 5, 4), (((0, 2), (2, 0)), ((), ()))),
    ((2, 3, 4), (3, 2, 5), (((1,), (0,)), ((0,), (1,)))),
    ((3, 2, 4), (4, 3), (((2,), (0,)), ((0,), (1,)))),
    ((2, 3, 4, 5), (5, 2, 3, 2), (((3,), (0,)), ((0, 1), (1, 2)))),
    ((3, 2, 2), (2, 3, 2), (((1, 2), (2, 0)), ((0,), (1,)))),
    ((3,), (4,), (((), ()), ((), ()))),
    ((2, 3), (4,), (((), ()), ((), ()))),
    ((5,), (5,), (((0,), (0,)), ((), ()))),
    ((3, 0), (0, 4), (((1,), (0,)), ((), ()))),
    ((0, 3), (3, 2), (((1,), (0,)), ((), ()))),
]
add("lax.dot_general", lambda a, b, dimension_numbers: lax.dot_general(a, b, dimension_numbers),
    lambda m: [s(m.normal(a), m.normal(b), dimension_numbers=dn) for a, b, dn in DOT_CASES],
    CONTRACT, dtypes=NUMERIC, exact=False,
    ref=lambda a, b, dimension_numbers: _dot_general(a, b, dimension_numbers),
    jax=lambda jax, a, b, dimension_numbers: jax.lax.dot_general(a, b, dimension_numbers))


def _dot_general(a, b, dimension_numbers):
    """dot_general by einsum (batch dims first, then lhs free, then rhs free)."""
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter("abcdefghijklmnop")
    la = [next(letters) for _ in range(a.ndim)]
    ra = [next(letters) for _ in range(b.ndim)]
    for i, j in zip(lc + lb, rc + rb):
        ra[j] = la[i]
    free_l = [la[i] for i in range(a.ndim) if i not in lc + lb]
    free_r = [ra[j] for j in range(b.ndim) if j not in rc + rb]
    out = [la[i] for i in lb] + free_l + free_r
    return np.einsum(f"{''.join(la)},{''.join(ra)}->{''.join(out)}", a, b)


CONVS = [  # lhs shape, rhs shape, strides, padding, lhs_dilation, rhs_dilation, groups
    ((2, 3, 7), (4, 3, 3), (1,), ((0, 0),), (1,), (1,), 1),
    ((2, 2, 7), (2, 2, 2), (3,), ((1, 0),), (1,), (1,), 1),
    ((2, 2, 5), (3, 2, 2), (1,), ((1, 2),), (2,), (1,), 1),
    ((2, 4, 7), (6, 2, 3), (2,), ((1, 0),), (1,), (2,), 2),
    ((2, 6, 4), (6, 1, 2), (1,), ((0, 0),), (1,), (1,), 6),
    ((2, 3, 6, 5), (4, 3, 3, 2), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 1),
    ((1, 4, 7, 6), (6, 2, 3, 3), (2, 1), ((1, 1), (2, 0)), (1, 1), (1, 2), 2),
    ((2, 4, 6, 5), (6, 2, 3, 2), (2, 1), ((1, 2), (0, 1)), (1, 1), (1, 2), 2),
    ((1, 2, 4, 5), (3, 2, 2, 3), (1, 2), ((-1, 1), (2, 0)), (2, 1), (1, 1), 1),
    ((1, 2, 5, 5), (3, 2, 2, 2), (1, 2), ((1, 1), (0, 1)), (1, 2), (1, 1), 1),
    ((1, 3, 5, 5), (3, 1, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1), 3),
    ((1, 2, 7, 6), (2, 2, 2, 2), (3, 3), ((0, 0), (0, 0)), (1, 1), (2, 1), 1),
    ((2, 4, 7, 6), (4, 1, 3, 2), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 4),
    ((2, 4, 7, 6), (4, 2, 3, 2), (1, 2), ((1, 1), (1, 1)), (1, 1), (2, 1), 2),
    ((2, 4, 7, 6), (4, 4, 3, 2), (2, 1), ((1, 1), (2, 0)), (1, 1), (1, 1), 1),
    ((0, 2, 4, 4), (2, 2, 2, 2), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 1),
]


def _conv(x, w, strides, padding, lhs_dilation, rhs_dilation, groups):
    return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation, rhs_dilation,
                                    feature_group_count=groups)


def _naive_conv(x, w, strides, padding, lhs_dilation, rhs_dilation, groups):
    """The convolution by its definition, in float64: dilate, pad (or crop), slide."""
    nsp = x.ndim - 2
    x = x.astype(np.float64)
    for d in range(nsp):  # lhs dilation: zeros between the input's entries
        size = (x.shape[2 + d] - 1) * lhs_dilation[d] + 1 if x.shape[2 + d] else 0
        dilated = np.zeros(x.shape[:2 + d] + (size,) + x.shape[3 + d:])
        index = (slice(None),) * (2 + d) + (slice(None, None, lhs_dilation[d]),)
        dilated[index] = x
        x = dilated
    for d, (lo, hi) in enumerate(padding):
        widths = [(0, 0)] * x.ndim
        widths[2 + d] = (max(lo, 0), max(hi, 0))
        x = np.pad(x, widths)
        crop = [slice(None)] * x.ndim
        crop[2 + d] = slice(-min(lo, 0), x.shape[2 + d] + min(hi, 0))
        x = x[tuple(crop)]
    window = [(k - 1) * r + 1 for k, r in zip(w.shape[2:], rhs_dilation)]
    out_sizes = [(x.shape[2 + d] - window[d]) // strides[d] + 1 for d in range(nsp)]
    per_group_in, per_group_out = w.shape[1], w.shape[0] // groups
    out = np.zeros((x.shape[0], w.shape[0], *out_sizes))
    for o in range(w.shape[0]):
        g = o // per_group_out
        channels = x[:, g * per_group_in:(g + 1) * per_group_in]
        for pos in np.ndindex(*out_sizes):
            index = tuple(slice(p * st, p * st + win, r) for p, st, win, r in
                          zip(pos, strides, window, rhs_dilation))
            out[(slice(None), o) + pos] = np.sum(channels[(slice(None), slice(None)) + index]
                                                 * w[o], axis=tuple(range(1, nsp + 2)))
    return out


def _conv_samples(m: Draws) -> list[Sample]:
    return [s(m.normal(lhs), m.normal(rhs), strides=st, padding=pad, lhs_dilation=ld,
              rhs_dilation=rd, groups=g) for lhs, rhs, st, pad, ld, rd, g in CONVS]


add("lax.conv_general_dilated", _conv, _conv_samples, CONTRACT, exact=False, tol=3,
    ref=lambda x, w, **kw: _naive_conv(x, w, **kw).astype(x.dtype),
    jax=lambda jax, x, w, strides, padding, lhs_dilation, rhs_dilation, groups:
        jax.lax.conv_general_dilated(x, w, strides, padding, lhs_dilation, rhs_dilation,
                                     feature_group_count=groups))


# ---------------------------------------------------------------------------------------
# Shapes

SHAPE = "shapes"
X234 = (2, 3, 4)


def one(make: Callable[[Draws], tuple], **kwargs: Any) -> Callable[[Draws], list[Sample]]:
    """A single sample: make(m) gives its array arguments."""
    return lambda m: [s(*make(m), **kwargs)]


def x234(m: Draws) -> tuple:
    return (m.normal(X234),)


def _shapes(*kwargs_list: dict, shape=X234) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(m.normal(shape), **kw) for kw in kwargs_list]


add("np.reshape", np.reshape, lambda m: [
    s(m.normal(X234), shape=(4, 6)), s(m.normal(X234), shape=(-1, 3)),
    s(m.normal(()), shape=(1, 1)), s(m.normal((0, 3)), shape=(3, 0))], SHAPE, dtypes=ALL)
add("np.ravel", np.ravel, unary(shapes=[X234, (), (0, 3)]), SHAPE, dtypes=ALL)
add("ndarray.flatten", lambda x: x.flatten(), unary(shapes=[X234]), SHAPE,
    jax=lambda jax, x: x.flatten())
add("ndarray.T", lambda x: x.T, unary(shapes=[X234, (3, 4), ()]), SHAPE, dtypes=ALL,
    jax=lambda jax, x: x.T)
add("ndarray.astype", lambda x, dtype: x.astype(dtype),
    lambda m: [s(m.scaled((3, 4)), dtype=d) for d in ALL if d != m.dtype.name] + [
        s(m.normal(()), dtype="float64"), s(m.normal((0, 3)), dtype="bool")],
    SHAPE, dtypes=ALL, jax=lambda jax, x, dtype: x.astype(dtype), eps=1e-2, tol=100)
add("np.transpose", np.transpose, _shapes({"axes": (1, 2, 0)}, {"axes": None}), SHAPE,
    dtypes=ALL)
add("np.permute_dims", np.permute_dims, _shapes({"axes": (2, 0, 1)}), SHAPE,
    jax=lambda jax, x, axes: jax.numpy.transpose(x, axes))
add("np.swapaxes", np.swapaxes, _shapes({"axis1": 0, "axis2": 2}), SHAPE)
add("np.moveaxis", np.moveaxis, _shapes({"source": 0, "destination": -1}), SHAPE)
add("np.squeeze", np.squeeze, lambda m: [s(m.normal((3, 1, 2)), axis=1),
                                         s(m.normal((1, 1))), s(m.normal((0, 1)), axis=1)],
    SHAPE, dtypes=ALL)
add("np.expand_dims", np.expand_dims, lambda m: [
    s(m.normal((3, 2)), axis=(0, 2)), s(m.normal(()), axis=0), s(m.normal((0, 3)), axis=2)],
    SHAPE, dtypes=ALL)
add("np.broadcast_to", np.broadcast_to, lambda m: [
    s(m.normal((1, 3, 4)), shape=(5, 3, 4)), s(m.normal(()), shape=(2, 3)),
    s(m.normal((3,)), shape=(0, 3))], SHAPE, dtypes=ALL)
add("np.broadcast_arrays", np.broadcast_arrays,
    lambda m: [s(m.normal((3, 1)), m.normal((4,))), s(m.normal(()), m.normal((2,)))], SHAPE)
add("np.atleast_1d", np.atleast_1d, unary(shapes=[(), (3,)]), SHAPE)
add("np.atleast_2d", np.atleast_2d, unary(shapes=[(), (3,), (2, 3)]), SHAPE)
add("np.flip", np.flip, _shapes({"axis": 1}, {}), SHAPE, dtypes=ALL)
add("np.fliplr", np.fliplr, unary(shapes=[(3, 4)]), SHAPE)
add("np.flipud", np.flipud, unary(shapes=[(3, 4)]), SHAPE)
add("np.roll", np.roll, _shapes({"shift": 2, "axis": 2}, {"shift": -5}), SHAPE)
add("np.repeat", np.repeat, _shapes({"repeats": 2, "axis": 1}), SHAPE)
add("np.tile", np.tile, lambda m: [s(m.normal((3, 4)), reps=(2, 1)), s(m.normal((2,)), reps=3)],
    SHAPE)
add("np.pad", np.pad, lambda m: [
    s(m.normal(X234), pad_width=((1, 0), (0, 2), (1, 1))),
    s(m.normal(X234), pad_width=1, constant_values=3.5), s(m.normal((4,)), pad_width=2)],
    SHAPE, dtypes=ALL)
add("np.copy", np.copy, unary(shapes=[X234, ()]), SHAPE, dtypes=ALL)
for _name in ("asarray", "array", "asanyarray", "ascontiguousarray"):
    add(f"tnp.{_name}", getattr(tnp, _name), unary(shapes=[(3, 4)]), SHAPE)
add("tnp.around", tnp.around, lambda m: [s(m.normal((3, 4)), decimals=2), s(m.scaled((3, 4)))],
    SHAPE, derivative=ZERO)
add("np.round", np.round, lambda m: [s(m.normal((3, 4)), decimals=2), s(m.scaled((3, 4)))],
    SHAPE, derivative=ZERO)
add("np.tril", np.tril, lambda m: [s(m.normal((3, 4))), s(m.normal((2, 3, 3)), k=-1)], SHAPE)
add("np.triu", np.triu, lambda m: [s(m.normal((3, 4)), k=1), s(m.normal((2, 3, 3)))], SHAPE)
add("np.diagonal", np.diagonal, lambda m: [s(m.normal((3, 4))),
                                           s(m.normal(X234), offset=1, axis1=1, axis2=2)],
    SHAPE)
add("np.trace", np.trace, lambda m: [s(m.normal((3, 4))), s(m.normal(X234), offset=-1)], SHAPE)
add("np.diag", np.diag, lambda m: [s(m.normal((4,))), s(m.normal((3, 4)), k=-1),
                                   s(m.normal((3,)), k=1)], SHAPE)
add("ndarray.copy", lambda x: x.copy(), unary(shapes=[(3, 4)]), SHAPE,
    jax=lambda jax, x: x.copy())


def _joined(fn: Callable) -> Callable:
    """fn of a list of arrays, as a function of the arrays."""
    def joined(*arrays, **kwargs):
        return fn(list(arrays), **kwargs)
    joined.__name__ = fn.__name__
    return joined


def _jax_joined(name: str) -> Callable:
    return lambda jax, *arrays, **kw: getattr(jax.numpy, name)(list(arrays), **kw)


for _name, _f, _samples in [
    ("concatenate", np.concatenate, lambda m: [
        s(m.normal((2, 3)), m.normal((1, 3)), m.normal((0, 3)), axis=0),
                                s(m.normal((2, 2)), m.normal((2, 3)), axis=1),
                                s(m.normal(X234), m.normal(X234), axis=None),
                                s(m.normal((0, 2)), m.normal((0, 1)), axis=1)]),
    ("concat", np.concat, lambda m: [s(m.normal((2, 3)), m.normal((4, 3)))]),
    ("stack", np.stack, lambda m: [s(m.normal((3, 4)), m.normal((3, 4)), axis=-1),
                          s(m.normal(()), m.normal(()))]),
    ("vstack", np.vstack, lambda m: [s(m.normal((3, 4)), m.normal((2, 4))), s(m.normal((4,)),
                                                                     m.normal((4,)))]),
    ("hstack", np.hstack, lambda m: [s(m.normal((3, 4)), m.normal((3, 2))), s(m.normal((4,)),
                                                                     m.normal((2,)))]),
    ("column_stack", np.column_stack, lambda m: [s(m.normal((4,)), m.normal((4,))),
                                 s(m.normal((4, 2)), m.normal((4,)))]),
]:
    add(f"np.{_name}", _joined(_f), _samples, SHAPE, jax=_jax_joined(_name))
add("np.split", np.split, _shapes({"indices_or_sections": 2, "axis": 0},
                                  {"indices_or_sections": [1, 3], "axis": 2}), SHAPE)
add("np.array_split", np.array_split, _shapes({"indices_or_sections": 3, "axis": 2}), SHAPE)
add("np.meshgrid", np.meshgrid, lambda m: [s(m.normal((3,)), m.normal((2,))),
                                           s(m.normal((3,)), m.normal((2,)), indexing="ij")],
    SHAPE)

# lax's shape primitives, with the parameters NumPy's functions do not reach
add("lax.pad", lambda x, v, padding_config: lax.pad(x, v, padding_config), lambda m: [
    s(m.normal((3, 4)), m.normal(()), padding_config=c) for c in (
        ((1, 2, 0), (-1, 0, 0)), ((1, 2, 0), (0, 1, 0)), ((1, -1, 1), (-1, 2, 0)),
        ((-2, 0, 2), (2, -3, 1)), ((1, 2, 1), (0, -1, 2)))] + [
    s(m.normal(()), m.normal(()), padding_config=()),
    s(m.normal((0, 2)), m.normal(()), padding_config=((1, 1, 1), (0, 1, 0)))],
    SHAPE, dtypes=ALL, jax=lambda jax, x, v, padding_config: jax.lax.pad(
        x, v, padding_config), note="interior padding is zeros, not the padding value: "
    "JAX checks the samples without interior padding")
add("lax.slice", lambda x, starts, steps, sizes: lax.slice(x, starts, steps, sizes),
    lambda m: [s(m.normal((5, 6)), starts=a, steps=b, sizes=c) for a, b, c in (
        ((1, 0), (1, 2), (3, 3)), ((4, 1), (-2, 2), (2, 3)), ((4, 5), (-1, -1), (5, 6)),
        ((0, 0), (1, 1), (0, 6)))] + [s(m.normal((0, 3)), starts=(0, 1), steps=(1, 1),
                                          sizes=(0, 2))], SHAPE, dtypes=ALL)
add("lax.broadcast_in_dim", lambda x, shape, dims: lax.broadcast_in_dim(x, shape, dims),
    lambda m: [s(m.normal((3, 1)), shape=(2, 3, 4), dims=(1, 2)),
               s(m.normal((3,)), shape=(2, 3), dims=(1,)),
               s(m.normal((2,)), shape=(2, 3), dims=(0,)),
               s(m.normal(()), shape=(2, 3), dims=()), s(m.normal(()), shape=(0, 2), dims=())],
    SHAPE, dtypes=ALL, jax=lambda jax, x, shape, dims: jax.lax.broadcast_in_dim(x, shape, dims))
add("lax.squeeze", lambda x, dims: lax.squeeze(x, dims),
    lambda m: [s(m.normal((2, 1, 3, 1)), dims=(1, 3)), s(m.normal((1,)), dims=(0,))], SHAPE,
    jax=lambda jax, x, dims: jax.lax.squeeze(x, dims))
add("lax.expand_dims", lambda x, dims: lax.expand_dims(x, dims),
    lambda m: [s(m.normal((3, 2)), dims=(0, 2)), s(m.normal((2,)), dims=(1, 2))], SHAPE,
    jax=lambda jax, x, dims: jax.lax.expand_dims(x, dims))
add("lax.reshape", lambda x, sizes: lax.reshape(x, sizes),
    lambda m: [s(m.normal((6,)), sizes=(2, 1, 3)), s(m.normal((2, 3)), sizes=(3, 2))], SHAPE,
    jax=lambda jax, x, sizes: jax.numpy.reshape(x, sizes))

# ---------------------------------------------------------------------------------------
# Indexing

INDEX = "indexing"
INDEXES = [(1,), (slice(1, None),), (Ellipsis, 0), (None, 0), (slice(None, None, -1),),
           (0, slice(None, None, 2), 1), (slice(None), None, slice(1, 3)),
           ([0, 1, 1],), (slice(None), [2, 0]), ([0, 1], slice(None), [3, 1]),
           (np.array([[0], [1]]), np.array([0, 2])), (-1, -2, -3), (np.array([True, False]),),
           (Ellipsis,), (slice(5, 1, -2), Ellipsis), (0, [1, 2], slice(None)),
           (np.array([[0, -1], [1, 0]]),)]


def _getitem(x, index):
    return x[index]


def _jax_index(index):
    return tuple(np.asarray(i) if isinstance(i, list) else i for i in index)


add("ndarray.__getitem__", _getitem, lambda m: [s(m.normal(X234), index=i) for i in INDEXES],
    INDEX, jax=lambda jax, x, index: x[_jax_index(index)])


def _traced_index(x, i):
    return x[i], x[:, [0, 2]][i]


add("ndarray.__getitem__ (traced index)", _traced_index,
    lambda m: [s(m.normal((5, 3)), np.int64(3)), s(m.normal((5, 3)), np.array([4, -1, 0]))],
    INDEX, jax=lambda jax, x, i: (x[i], x[:, np.array([0, 2])][i]))

SETITEMS = [(slice(1, 3),), (0,), ([3, 0, 3],), (slice(None), 1), (slice(4, None, -2), [0, 2])]


def _setitem(x, v, index):
    """Writes v into x (the caller's array) and returns a function of it."""
    x[index] = v
    return x * 2


def _setitem_samples(m: Draws) -> list[Sample]:
    x = np.zeros((5, 4))
    return [s(m.normal((5, 4)), m.normal(np.shape(x[i])[-1:]), index=i) for i in SETITEMS]


add("ndarray.__setitem__", _setitem, _setitem_samples, INDEX, dtypes=ALL, writes=(0,),
    note="writes into its argument (functionalize: the caller's array is updated)")


def _iadd(x, y):
    x += y
    return x.sum()


add("ndarray.__iadd__", _iadd, lambda m: [s(m.normal((3, 4)), m.normal((4,))),
                                          s(m.normal(()), m.normal(()))], INDEX, dtypes=NUMERIC,
    writes=(0,),
    note="in place on its argument")


def _add_at(x, idx, v):
    y = x.copy()
    np.add.at(y, idx, v)
    return y


add("np.add.at", _add_at, lambda m: [s(m.normal((4, 5)), np.array([3, 0, 3, -1]),
                                       m.normal((4, 5))),
                                     s(m.normal((4,)), np.array([1, 1]), m.normal((2,)))],
    INDEX, dtypes=NUMERIC, jax=lambda jax, x, idx, v: x.at[idx].add(v))
add("np.take", np.take, lambda m: [
    s(m.normal(X234), np.array([2, 0, 1]), axis=2), s(m.normal(X234), np.array([5, 0])),
    s(m.normal((4, 5)), np.array([[0, 3, 3], [4, 2, 0]]), axis=1),
    s(m.normal((4, 2)), np.array([-1, 0, -1]), axis=0), s(m.normal((4, 2)), np.array(2), axis=0)],
    INDEX, dtypes=ALL, jax=lambda jax, x, i, **kw: jax.numpy.take(x, i, **kw))
add("np.take_along_axis", np.take_along_axis,
    lambda m: [s(m.normal(X234), m.rng.permutation(24).reshape(X234) % 4, axis=2),
               s(m.normal(X234), m.indices((2, 1, 4), 3), axis=-2),
               s(m.normal(X234), m.indices((5,), 24), axis=None),
               s(m.normal((4, 3)), np.argsort(m.normal((4, 3)), axis=0), axis=0)], INDEX)
add("lax.dynamic_slice", lambda x, *starts, sizes: lax.dynamic_slice(x, starts, sizes),
    lambda m: [s(m.normal((5, 6)), np.int64(1), np.int64(4), sizes=(3, 3)),
               s(m.normal((5, 6)), np.int64(-2), np.int32(7), sizes=(2, 3)),
               s(m.normal((4,)), np.int64(2), sizes=(4,))], INDEX, dtypes=ALL,
    jax=lambda jax, x, *st, sizes: jax.lax.dynamic_slice(x, st, sizes),
    note="starts clamped into bounds, as in JAX")
add("lax.dynamic_update_slice", lambda x, u, *starts: lax.dynamic_update_slice(x, u, starts),
    lambda m: [s(m.normal((5, 6)), m.normal((2, 3)), np.int32(4), np.int32(2)),
               s(m.normal((5, 4)), m.normal((2, 3)), np.int64(2), np.int64(9)),
               s(m.normal((4,)), m.normal((2,)), np.int64(-1))], INDEX, dtypes=ALL,
    jax=lambda jax, x, u, *st: jax.lax.dynamic_update_slice(x, u, st))
add("lax.update_slice", lambda x, u, starts, steps, sizes: lax.update_slice(
    x, u, starts, steps, sizes), lambda m: [
    s(m.normal((5, 4)), m.normal((2, 1)), starts=(1, 0), steps=(2, 1), sizes=(2, 4)),
    s(m.normal((5, 6)), m.normal(3), starts=(0, 1), steps=(2, 2), sizes=(3, 3)),
    s(m.normal((5, 6)), m.normal((2, 3)), starts=(4, 5), steps=(-2, -1), sizes=(2, 3)),
    s(m.normal((4,)), m.normal(()), starts=(1,), steps=(1,), sizes=(2,)),
    s(m.normal((0, 3)), m.normal((3,)), starts=(0, 0), steps=(1, 1), sizes=(0, 3))],
    INDEX, dtypes=ALL)
add("lax.gather", lambda x, idx, axis: lax.gather(x, idx, axis), lambda m: [
    s(m.normal((4, 5)), np.array([[0, 3, 3], [4, 2, 0]]), axis=1),
    s(m.normal((3, 4, 5)), np.array([1, 3]), axis=1), s(m.normal((6,)), np.array(-2), axis=0)],
    INDEX, dtypes=ALL, jax=lambda jax, x, idx, axis: jax.numpy.take(x, idx, axis=axis))


def _scatters(m: Draws) -> list[Sample]:
    return [s(m.normal((3, 4)), np.array([[0, 2, 2], [1, 0, 3]]), m.normal((3, 2, 3)), axis=1),
            s(m.normal((4, 5)), np.array([1, 1, 3]), m.normal((3, 5)), axis=0),
            s(m.normal((3, 4, 2)), np.array(2), m.normal((3, 2)), axis=1),
            s(m.normal((0, 3)), np.array([0, 2]), m.normal((0, 2)), axis=1)]


def _unique_scatters(m: Draws) -> list[Sample]:
    return [s(m.normal((3, 5)), np.array([4, 0, 2]), m.normal((3, 3)), axis=1),
            s(m.normal((6, 3)), np.array([1, 4, 1, 0]), m.normal((4, 3)), axis=0),
            s(m.normal((2, 4)), np.array([[2, 0], [3, 1]]), m.normal((2, 2, 2)), axis=1)]


add("lax.scatter_add", lambda x, i, u, axis: lax.scatter_add(x, i, u, axis), _scatters, INDEX,
    dtypes=NUMERIC, jax=lambda jax, x, i, u, axis: x.at[(slice(None),) * axis + (i,)].add(u))
add("lax.scatter", lambda x, i, u, axis: lax.scatter(x, i, u, axis), _unique_scatters, INDEX,
    dtypes=ALL, note="repeated targets: the last write wins",
    jax=lambda jax, x, i, u, axis: x.at[(slice(None),) * axis + (i,)].set(u))

# ---------------------------------------------------------------------------------------
# lax's elementwise primitives not reached from NumPy with these parameters

add("lax.select", lax.select, _where, BINARY, dtypes=ALL,
    jax=lambda jax, p, t, f: jax.numpy.where(p, t, f))
add("lax.convert", lambda x, dtype: lax.convert(x, dtype),
    lambda m: [s(m.small((3,)), dtype=d) for d in ("float32", "float64")],
    UNARY_NUMERIC, jax=lambda jax, x, dtype: x.astype(dtype), eps=1e-2, tol=100)

# ---------------------------------------------------------------------------------------
# Creation (no array arguments, or only their shapes)

CREATE = "creation"


def _creation(*calls: dict) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(**{k: (m.dtype if v == "dtype" else v) for k, v in c.items()})
                      for c in calls]


add("np.zeros", np.zeros, _creation({"shape": (2, 3), "dtype": "dtype"}, {"shape": ()},
                                    {"shape": (0, 3), "dtype": "dtype"}), CREATE, dtypes=ALL,
    derivative=NO_INPUTS)
add("np.ones", np.ones, _creation({"shape": 4, "dtype": "dtype"}), CREATE, dtypes=ALL,
    derivative=NO_INPUTS)
add("np.full", np.full, _creation({"shape": (2,), "fill_value": 7.5, "dtype": "dtype"},
                                  {"shape": (), "fill_value": 2}), CREATE, dtypes=NUMERIC,
    derivative=NO_INPUTS)
add("np.arange", np.arange, _creation({"start": 2, "stop": 11, "step": 3},
                                      {"start": 0.0, "stop": 1.0, "step": 0.25},
                                      {"start": 0, "stop": 5, "dtype": "dtype"}), CREATE,
    dtypes=NUMERIC, derivative=NO_INPUTS)
add("np.linspace", np.linspace, _creation({"start": 0, "stop": 1, "num": 7},
                                          {"start": -1, "stop": 2, "num": 4, "endpoint": False},
                                          {"start": 0, "stop": 1, "num": 0}), CREATE,
    dtypes=F64, derivative=NO_INPUTS)
add("np.eye", np.eye, _creation({"N": 3, "M": 4, "k": 1, "dtype": "dtype"}, {"N": 2}), CREATE,
    dtypes=ALL, derivative=NO_INPUTS)
add("np.identity", np.identity, _creation({"n": 3, "dtype": "dtype"}), CREATE, dtypes=ALL,
    derivative=NO_INPUTS)
add("np.tri", np.tri, _creation({"N": 3, "M": 4, "k": -1, "dtype": "dtype"}), CREATE,
    dtypes=ALL, derivative=NO_INPUTS)
add("lax.iota", lambda dtype, shape, dimension: lax.iota(dtype, shape, dimension),
    _creation({"dtype": "dtype", "shape": (2, 3), "dimension": 1},
              {"dtype": "dtype", "shape": (0, 3), "dimension": 0}), CREATE, dtypes=NUMERIC,
    derivative=NO_INPUTS, ref=lambda dtype, shape, dimension: np.broadcast_to(
        np.arange(shape[dimension], dtype=dtype).reshape(
            [-1 if d == dimension else 1 for d in range(len(shape))]), shape))
for _f in (np.zeros_like, np.ones_like):
    add(f"np.{_f.__name__}", _f, unary(shapes=[(2, 3), ()]), CREATE, dtypes=ALL,
        derivative=ZERO)
add("np.full_like", np.full_like, lambda m: [s(m.normal((2, 3)), fill_value=2.5)], CREATE,
    dtypes=NUMERIC, derivative=ZERO)

# Random numbers: functions of a key, so every transform sees the same draws.
RANDOM = "random"
add("lax.random_uniform", lambda key, shape, dtype, stream: lax.random_uniform(
    key, shape, dtype, stream), lambda m: [s(m.key(), shape=(3, 4), dtype=m.dtype, stream=1),
                                           s(m.key((2,)), shape=(3,), dtype=m.dtype, stream=2),
                                           s(m.key(), shape=(0, 3), dtype=m.dtype, stream=4)],
    RANDOM, derivative=INTEGER, note="keys are uint64 arrays")
add("lax.random_normal", lambda key, shape, dtype, stream: lax.random_normal(
    key, shape, dtype, stream), lambda m: [s(m.key(), shape=(3, 4), dtype=m.dtype, stream=1),
                                           s(m.key((2,)), shape=(3,), dtype=m.dtype, stream=3)],
    RANDOM, derivative=INTEGER)
add("lax.random_fold_in", lambda key, data: lax.random_fold_in(key, data),
    lambda m: [s(m.key(), data=5), s(m.key((2, 3)), data=0)], RANDOM, dtypes=("uint64",),
    derivative=INTEGER)
add("lax.random_split", lambda key, size: lax.random_split(key, size),
    lambda m: [s(m.key(), size=3), s(m.key((2,)), size=4), s(m.key(), size=0)], RANDOM,
    dtypes=("uint64",), derivative=INTEGER)

# ---------------------------------------------------------------------------------------
# Linear algebra

LINALG, SMALL_LINALG = "linalg", "linalg-per-thread"
STACKS = [(2, 4, 4), (3, 3), (0, 3, 3)]  # a stack, one matrix, an empty stack
CUDA_SMALL = "a thread a matrix up to 32x32; larger ones: CompileError when built"


def matrices(domain: str, shapes=STACKS, **kwargs: Any) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(getattr(m, domain)(shape), **kwargs) for shape in shapes]


def linalg(name: str, op: Callable, samples: Callable[[Draws], list[Sample]], **options):
    options.setdefault("family", LINALG)
    options.setdefault("cuda", NO_KERNEL)
    options.setdefault("exact", False)
    options.setdefault("tol", 5)
    add(name, op, samples, dtypes=options.pop("dtypes", FLOATS), **options)


def _solves(m: Draws) -> list[Sample]:
    return [s(m.invertible((2, 4, 4)), m.normal((2, 4, 3))),
            s(m.invertible((2, 4, 4)), m.normal((4,))),
            s(m.invertible((3, 1, 3, 3)), m.normal((2, 3, 2))),
            s(m.invertible((0, 3, 3)), m.normal((0, 3, 2)))]


linalg("np.linalg.inv", np.linalg.inv, matrices("invertible"), family=SMALL_LINALG,
       cuda=None, cuda_note=CUDA_SMALL, jax=jnp("linalg.inv"))
linalg("np.linalg.solve", np.linalg.solve, _solves, family=SMALL_LINALG, cuda=None,
       cuda_note=CUDA_SMALL, jax=jnp("linalg.solve"))
linalg("np.linalg.det", np.linalg.det, matrices("invertible"), jax=jnp("linalg.det"))


def _slogdet(a):
    sign, logabsdet = np.linalg.slogdet(a)
    return sign * 2.0, logabsdet


linalg("np.linalg.slogdet", _slogdet, matrices("invertible"),
       jax=lambda jax, a: tuple(x * k for x, k in zip(jax.numpy.linalg.slogdet(a), (2.0, 1.0))))


def _cholesky_samples(m: Draws) -> list[Sample]:
    return matrices("spd")(m) + [s(m.spd((2, 4, 4)), upper=True)]


linalg("np.linalg.cholesky", np.linalg.cholesky, _cholesky_samples, family=SMALL_LINALG,
       cuda=None, cuda_note=CUDA_SMALL, symmetric=True, jax=jnp("linalg.cholesky"))


def _eigh(a, UPLO="L"):  # noqa: N803  (NumPy's name)
    """eigh with each eigenvector's sign fixed by its first entry (unique up to sign)."""
    w, v = np.linalg.eigh(a, UPLO=UPLO)
    return w, v * np.sign(v[..., :1, :])


def _jax_eigh(jax, a, UPLO="L"):  # noqa: N803
    w, v = jax.numpy.linalg.eigh(a, UPLO=UPLO, symmetrize_input=False)
    return w, v * jax.numpy.sign(v[..., :1, :])


def _uplo(m: Draws) -> list[Sample]:
    return matrices("spd")(m) + [s(m.spd((2, 4, 4)), UPLO="U")]


linalg("np.linalg.eigh", _eigh, _uplo, symmetric=True, jax=_jax_eigh,
       note="eigenvector signs fixed by the first entry in the tests")
linalg("np.linalg.eigvalsh", np.linalg.eigvalsh, _uplo, symmetric=True,
       jax=lambda jax, a, UPLO="L": jax.numpy.linalg.eigvalsh(a, UPLO=UPLO))

RECTANGLES = [(4, 3), (2, 3, 4), (2, 4, 4), (0, 3, 3)]
FULL_SVD = "full_matrices"


def _svd(a, full_matrices=True, compute_uv=True):
    """svd with each singular vector's sign fixed by u's first row."""
    if not compute_uv:
        return np.linalg.svd(a, compute_uv=False)
    u, sv, vt = np.linalg.svd(a, full_matrices=full_matrices)
    k = sv.shape[-1]
    sign = np.sign(u[..., :1, :k])
    return u[..., :, :k] * sign, sv, vt[..., :k, :] * np.swapaxes(sign, -1, -2)


def _jax_svd(jax, a, full_matrices=True, compute_uv=True):
    xp = jax.numpy
    if not compute_uv:
        return xp.linalg.svd(a, compute_uv=False)
    u, sv, vt = xp.linalg.svd(a, full_matrices=full_matrices)
    k = sv.shape[-1]
    sign = xp.sign(u[..., :1, :k])
    return u[..., :, :k] * sign, sv, vt[..., :k, :] * xp.swapaxes(sign, -1, -2)


def _svd_samples(m: Draws) -> list[Sample]:
    out = []
    for shape in RECTANGLES:
        out += [s(m.normal(shape), full_matrices=False), s(m.normal(shape), compute_uv=False)]
        square = shape[-1] == shape[-2]
        out.append(s(m.normal(shape), full_matrices=True,
                     no_derivative="" if square else FULL_SVD))
    return out


linalg("np.linalg.svd", _svd, _svd_samples, jax=_jax_svd,
       note="singular-vector signs fixed in the tests; "
       "the derivative of full_matrices=True of a non-square matrix: UnsupportedError")
linalg("np.linalg.svdvals", np.linalg.svdvals, matrices("normal", RECTANGLES),
       jax=lambda jax, a: jax.numpy.linalg.svd(a, compute_uv=False))


def _qr(a, mode="reduced"):
    """qr with each column of q (row of r) signed so that r's diagonal is positive; of the
    extra columns of a complete q (any basis of the complement), their projector."""
    if mode == "r":
        return np.abs(np.linalg.qr(a, mode="r"))
    q, r = np.linalg.qr(a, mode=mode)
    d = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    k = d.shape[-1]
    extra = q[..., k:]
    return (q[..., :k] * d[..., None, :], r[..., :k, :] * d[..., :, None],
            extra @ np.swapaxes(extra, -1, -2))


def _jax_qr(jax, a, mode="reduced"):
    xp = jax.numpy
    if mode == "r":
        return xp.abs(xp.linalg.qr(a, mode="r"))
    q, r = xp.linalg.qr(a, mode=mode)
    d = xp.sign(xp.diagonal(r, axis1=-2, axis2=-1))
    k = d.shape[-1]
    extra = q[..., k:]
    return (q[..., :k] * d[..., None, :], r[..., :k, :] * d[..., :, None],
            extra @ xp.swapaxes(extra, -1, -2))


def _qr_samples(m: Draws) -> list[Sample]:
    out = []
    for shape in [(5, 3), (2, 4, 4), (2, 3, 5), (0, 3, 3)]:
        wide = shape[-2] < shape[-1]
        out += [s(m.normal(shape), no_derivative="qr" if wide else ""),
                s(m.normal(shape), mode="complete",
                  no_derivative="qr" if shape[-2] != shape[-1] else ""),
                s(m.normal(shape), mode="r", no_derivative="qr" if wide else "")]
    return out


linalg("np.linalg.qr", _qr, _qr_samples, jax=_jax_qr,
       note="signs fixed in the tests; the derivative of "
       "a wide matrix's or a tall matrix's complete QR: UnsupportedError")
linalg("np.linalg.pinv", np.linalg.pinv, matrices("normal", RECTANGLES[:3]),
       jax=jnp("linalg.pinv"))


def _lstsq(a, b):
    """lstsq's solution, residuals and singular values (the rank: np.linalg.matrix_rank)."""
    x, residuals, _, sv = np.linalg.lstsq(a, b, rcond=None)
    return x, residuals, sv


def _lstsq_solution(a, b):
    return np.linalg.lstsq(a, b, rcond=None)[0]


linalg("np.linalg.lstsq", _lstsq_solution,
       lambda m: [s(m.normal((5, 3)), m.normal((5, 2))), s(m.normal((6, 3)), m.normal((6,))),
                  s(m.normal((3, 3)), m.normal((3,)))],
       jax=lambda jax, a, b: jax.numpy.linalg.lstsq(a, b, rcond=None)[0],
       note="all four results traced; derivatives of the solution")
linalg("np.linalg.lstsq (all results)", _lstsq,
       lambda m: [s(m.normal((6, 3)), m.normal((6,))), s(m.normal((4, 4)), m.normal((4, 2)))],
       tol=20)
linalg("np.linalg.matrix_rank", np.linalg.matrix_rank,
       lambda m: [s(m._finish(np.diag([3.0, 2.0, 0.0]))), s(m.normal((2, 4, 3)))],
       derivative=ZERO)
linalg("np.linalg.cond", np.linalg.cond, lambda m: [s(m.invertible((2, 3, 3))),
                                                     s(m.invertible((3, 3)), p="fro")],
       jax=jnp("linalg.cond"))

NORMS = [dict(), dict(ord="fro", axis=(-2, -1)), dict(ord="nuc", axis=(-2, -1)),
         dict(ord=1, axis=(-2, -1)), dict(ord=-1, axis=(-2, -1)),
         dict(ord=np.inf, axis=(-2, -1), keepdims=True), dict(ord=-np.inf, axis=(-2, -1)),
         dict(ord=2, axis=(-2, -1)), dict(ord=-2, axis=(-2, -1)),
         dict(axis=-1), dict(ord=2, axis=-2), dict(ord=1, axis=-1), dict(ord=3, axis=-1),
         dict(ord=np.inf, axis=-1), dict(ord=-np.inf, axis=-1, keepdims=True),
         dict(ord=0, axis=-1)]


def _norms(m: Draws) -> list[Sample]:
    return [s(m.invertible((2, 4, 4)), **kw) for kw in NORMS] + [s(m.nonzero((5,)))]


linalg("np.linalg.norm", np.linalg.norm, _norms, cuda=None, family=REDUCE,
       jax=lambda jax, x, **kw: jax.numpy.linalg.norm(x, **kw),
       note="every vector and matrix ord; ord=0 counts nonzeros (derivative zero)")


def _matrix_power(a, n):
    return np.linalg.matrix_power(a, n) * (a if n == 0 else 1)


linalg("np.linalg.matrix_power", _matrix_power,
       lambda m: [s(m.invertible((2, 4, 4)), n=n) for n in (3, -2, 0, 1)] + [
           s(m.invertible((3, 3)), n=5)], family=CONTRACT, cuda=None,
       cuda_note="negative powers: " + CUDA_SMALL,
       jax=lambda jax, a, n: jax.numpy.linalg.matrix_power(a, n) * (a if n == 0 else 1),
       note="negative powers invert")


def _multi_dot(*arrays):
    return np.linalg.multi_dot(list(arrays))


linalg("np.linalg.multi_dot", _multi_dot,
       lambda m: [s(m.normal((5,)), m.normal((5, 3)), m.normal((3, 7)), m.normal((7,))),
                  s(m.normal((2, 6)), m.normal((6, 6)), m.normal((6, 3)))],
       family=CONTRACT, cuda=None, exact=False,
       jax=lambda jax, *arrays: jax.numpy.linalg.multi_dot(list(arrays)))
linalg("np.linalg.tensorsolve", np.linalg.tensorsolve,
       lambda m: [s(m.invertible((6, 6)).reshape(2, 3, 6), m.normal((2, 3)))],
       family=SMALL_LINALG, cuda=None, cuda_note=CUDA_SMALL, jax=jnp("linalg.tensorsolve"))
linalg("np.linalg.tensorinv", np.linalg.tensorinv,
       lambda m: [s(m.invertible((6, 6)).reshape(6, 2, 3), ind=1)], family=SMALL_LINALG,
       cuda=None, cuda_note=CUDA_SMALL, jax=jnp("linalg.tensorinv"))


# scipy.linalg, called through the module (routed to transfuse.scipy.linalg while tracing)
def _solve_triangular(a, b, lower, trans):
    return scipy.linalg.solve_triangular(np.tril(a) if lower else np.triu(a), b, lower=lower,
                                         trans=trans)


def _triangular_samples(m: Draws) -> list[Sample]:
    return [s(m.invertible((2, 4, 4)), m.normal((2, 4, 2)), lower=low, trans=t)
            for low in (True, False) for t in (0, "T")] + [
        s(m.invertible((3, 3)), m.normal((3,)), lower=True, trans=0)]  # SciPy: no empty stacks


linalg("scipy.linalg.solve_triangular", _solve_triangular, _triangular_samples)


def _cho_solve(a, b, lower):
    return scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, lower=lower), b)


def _cho_factor(a, lower):
    c, is_lower = scipy.linalg.cho_factor(a, lower=lower)
    return np.tril(c) if is_lower else np.triu(c)


def _spd_and_rhs(m: Draws) -> list[Sample]:
    return [s(m.spd((4, 4)), m.normal((4, 2)), lower=True),
            s(m.spd((4, 4)), m.normal((4,)), lower=False)]


linalg("scipy.linalg.cho_factor", _cho_factor, lambda m: [s(m.spd((4, 4)), lower=low)
                                                          for low in (True, False)],
       symmetric=True, family=SMALL_LINALG, cuda=None, cuda_note=CUDA_SMALL,
       note="the other triangle holds the input's entries, as in SciPy (tests read the factor)")
linalg("scipy.linalg.cho_solve", _cho_solve, _spd_and_rhs, symmetric=True)
linalg("scipy.linalg.cholesky", lambda a, lower: scipy.linalg.cholesky(a, lower=lower),
       lambda m: [s(m.spd((4, 4)), lower=low) for low in (True, False)], symmetric=True,
       family=SMALL_LINALG, cuda=None, cuda_note=CUDA_SMALL)
linalg("scipy.linalg.inv", lambda a: scipy.linalg.inv(a), lambda m: [s(m.invertible((4, 4)))],
       family=SMALL_LINALG, cuda=None, cuda_note=CUDA_SMALL)
linalg("scipy.linalg.det", lambda a: scipy.linalg.det(a), lambda m: [s(m.invertible((4, 4)))],
       dtypes=F64, note="float64 only in the tests: SciPy's det of float32 is float64, "
       "transfuse's float32")
linalg("scipy.linalg.solve", lambda a, b: scipy.linalg.solve(a, b),
       lambda m: [s(m.invertible((4, 4)), m.normal((4, 2)))], family=SMALL_LINALG, cuda=None,
       cuda_note=CUDA_SMALL)


def _scaled(m: Draws) -> list[Sample]:
    """Matrices of norm about 1 and about 8 (expm squares the latter three times)."""
    return [s(m._finish(0.3 * m.rng.standard_normal((2, 3, 3)))),
            s(m._finish(2 * m.rng.standard_normal((4, 4)))), s(m.normal((0, 3, 3)))]


linalg("scipy.linalg.expm", lambda a: scipy.linalg.expm(a), _scaled, tol=20,
       jax=lambda jax, a: jax.scipy.linalg.expm(a))


def _lu_factor(a):
    return scipy.linalg.lu_factor(a)


def _lu_solve(a, b, trans):
    return scipy.linalg.lu_solve(scipy.linalg.lu_factor(a), b, trans=trans)


linalg("scipy.linalg.lu_factor", _lu_factor, lambda m: [s(m.invertible((5, 5)))],
       note="the pivots are integers (no derivative)")
linalg("scipy.linalg.lu_solve", _lu_solve, lambda m: [
    s(m.invertible((5, 5)), m.normal((5, 2)), trans=t) for t in (0, 1)])


# ---------------------------------------------------------------------------------------
# np.fft (the `fft` primitive, ir/fft.py): lengths padded and cropped, axes moved, every norm

FFT = "fft"


def _fft_options(**options: Any) -> dict:
    options.update(cuda=NO_KERNEL, exact=False, tol=5)
    return options


def _c2c_samples(norm: str) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(m.normal((3, 4))), s(m.normal((5,)), n=8, norm=norm),
                      s(m.normal((4, 3)), n=2, axis=0, norm="ortho"), s(m.normal((0, 4)))]


def _c2r_samples(norm: str) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(m.normal((3, 4))), s(m.normal((5,)), n=7, norm=norm),
                      s(m.normal((4, 3)), n=4, axis=0, norm="ortho")]


def _nd_samples(**variant: Any) -> Callable[[Draws], list[Sample]]:
    return lambda m: [s(m.normal((2, 3, 4))), s(m.normal((2, 3, 4)), **variant),
                      s(m.normal((0, 2, 3)), axes=(1, 2))]


for _name, _samples, _dtypes in [
        ("fft", _c2c_samples("forward"), FLOATS + COMPLEX),
        ("ifft", _c2c_samples("forward"), FLOATS + COMPLEX),
        ("rfft", _c2c_samples("forward"), FLOATS),
        ("ihfft", _c2c_samples("backward"), FLOATS),
        ("irfft", _c2r_samples("forward"), FLOATS + COMPLEX),
        ("hfft", _c2r_samples("backward"), FLOATS + COMPLEX),
        ("fftn", _nd_samples(s=(3, 5), axes=(2, 0), norm="ortho"), FLOATS + COMPLEX),
        ("ifftn", _nd_samples(axes=(0, 2), norm="forward"), FLOATS + COMPLEX),
        ("rfftn", _nd_samples(s=(4, 3), axes=(0, 2), norm="ortho"), FLOATS),
        ("irfftn", _nd_samples(s=(3, 5), axes=(1, 2), norm="forward"), FLOATS + COMPLEX),
        ("fft2", _nd_samples(s=(4, 4)), FLOATS + COMPLEX),
        ("ifft2", _nd_samples(axes=(0, 1), norm="ortho"), FLOATS + COMPLEX),
        ("rfft2", _nd_samples(s=(2, 6), norm="forward"), FLOATS),
        ("irfft2", _nd_samples(s=(3, 3), norm="ortho"), FLOATS + COMPLEX)]:
    add(f"np.fft.{_name}", getattr(np.fft, _name), _samples, FFT,
        **_fft_options(dtypes=_dtypes))


def _shift_samples(m: Draws) -> list[Sample]:
    return [s(m.normal((3, 4))), s(m.normal((5, 2)), axes=0), s(m.normal((0, 3)), axes=(1,))]


add("np.fft.fftshift", np.fft.fftshift, _shift_samples, SHAPE, dtypes=FLOATS + COMPLEX)
add("np.fft.ifftshift", np.fft.ifftshift, _shift_samples, SHAPE, dtypes=FLOATS + COMPLEX)

# ---------------------------------------------------------------------------------------
# Shape and index functions (transfuse/numpy/_shapes.py) and data-dependent shapes with
# size= (transfuse/numpy/_data_shapes.py); the rest: tests/test_numpy_shapes.py


def _cross_samples(m: Draws) -> list[Sample]:
    return [s(m.normal((4, 3)), m.normal((4, 3))), s(m.normal((3,)), m.normal((2, 3))),
            s(m.normal((3, 2)), m.normal((2, 3)), axisa=0, axisb=1, axisc=0),
            s(m.normal((3, 4)), m.normal((3, 1)), axis=0), s(m.normal((0, 3)), m.normal((3,)))]


def _select(x, y, default):
    return np.select([x > 0.5, x < -0.5], [x, y], default)


def _choose(a, c0, c1, c2, mode):
    return np.choose(a, [c0, c1, c2], mode=mode)


def _choose_samples(m: Draws) -> list[Sample]:
    a = m.rng.integers(0, 3, (3, 4))
    wide = m.rng.integers(-4, 7, (3, 4))
    return [s(a, m.normal((3, 4)), m.normal((4,)), m.normal(()), mode="raise"),
            s(wide, m.normal((3, 4)), m.normal((3, 1)), m.normal((3, 4)), mode="wrap"),
            s(wide, m.normal((3, 4)), m.normal((3, 4)), m.normal((4,)), mode="clip"),
            s(a[:0], m.normal((0, 4)), m.normal((4,)), m.normal(()), mode="raise")]


def _piecewise(x):
    return np.piecewise(x, [x < -0.5, x > 0.5], [lambda v: v ** 2, lambda v: 2 * v, 0.25])


def _ravel_multi(i, j, dims, mode="raise", order="C"):
    return np.ravel_multi_index((i, j), dims, mode=mode, order=order)


def _nonzero_ref(x, size, fill_value=0):
    """jax.numpy.nonzero(x, size=, fill_value=) in NumPy: the first `size`, then padding."""
    found = np.nonzero(x)
    fills = fill_value if isinstance(fill_value, tuple) else (fill_value,) * len(found)
    return tuple(np.concatenate([f[:size], np.full(max(size - f.size, 0), v, np.int64)])
                 for f, v in zip(found, fills))


def _with_zeros(m: Draws, shape) -> np.ndarray:
    return m.normal(shape) * (m.rng.random(shape) < 0.6).astype(m.dtype)


add("np.cross", np.cross, _cross_samples, SHAPE)
add("np.rot90", np.rot90, _shapes({"k": 1}, {"k": 2}, {"k": 3, "axes": (2, 0)},
                                  {"k": -1, "axes": (1, 2)}), SHAPE)
add("np.rollaxis", np.rollaxis, _shapes({"axis": 2, "start": 0}, {"axis": 0, "start": 3},
                                        {"axis": -1, "start": 1}), SHAPE)
add("np.select", _select, lambda m: [s(m.normal((3, 4)), m.normal((4,)), m.normal(())),
                                     s(m.normal(()), m.normal((2,)), m.normal((2,))),
                                     s(m.normal((0, 2)), m.normal((2,)), m.normal(()))],
    BINARY, jax=lambda jax, x, y, d: jax.numpy.select([x > 0.5, x < -0.5], [x, y], d))
add("np.choose", _choose, _choose_samples, INDEX, dtypes=NUMERIC,
    jax=lambda jax, a, *cs, mode: jax.numpy.choose(  # JAX's jit refuses mode='raise'
        a, list(cs), mode="clip" if mode == "raise" else mode),
    note="mode='raise': an index out of range raises when the graph runs (jit too)")
add("np.piecewise", _piecewise, unary(shapes=[(3, 4), (), (0, 3)]), BINARY,
    jax=lambda jax, x: jax.numpy.piecewise(x, [x < -0.5, x > 0.5],
                                           [lambda v: v ** 2, lambda v: 2 * v, 0.25]),
    note="each function sees all of x (as in JAX) and is selected where its condition holds")
add("np.append", np.append, lambda m: [s(m.normal((3, 4)), m.normal((2, 4)), axis=0),
                                       s(m.normal((3, 4)), m.normal((5,))),
                                       s(m.normal(()), m.normal((0,)))], SHAPE)
add("np.atleast_3d", np.atleast_3d, unary(shapes=[(), (3,), (2, 3), X234]), SHAPE)
add("np.dstack", _joined(np.dstack), lambda m: [
    s(m.normal((3, 4)), m.normal((3, 4))), s(m.normal((3,)), m.normal((3,))),
    s(m.normal((2, 3, 1)), m.normal((2, 3, 2)))], SHAPE, jax=_jax_joined("dstack"))
add("np.hsplit", np.hsplit, _shapes({"indices_or_sections": 3},
                                    {"indices_or_sections": [1, 2]}), SHAPE)
add("np.vsplit", np.vsplit, _shapes({"indices_or_sections": 2},
                                    {"indices_or_sections": [1, 5]}, shape=(4, 3)), SHAPE)
add("np.dsplit", np.dsplit, _shapes({"indices_or_sections": 2},
                                    {"indices_or_sections": [1, 3]}), SHAPE)
add("np.resize", np.resize, lambda m: [
    s(m.normal((2, 3)), new_shape=(4, 4)), s(m.normal((3,)), new_shape=2),
    s(m.normal((0, 3)), new_shape=(2, 2)), s(m.normal((2, 3)), new_shape=(0,))], SHAPE)
add("np.diagflat", np.diagflat, lambda m: [s(m.normal((2, 2))), s(m.normal((3,)), k=-1),
                                           s(m.normal(()), k=2)], SHAPE)
add("np.logspace", np.logspace, lambda m: [
    s(m.normal(()), m.normal(()), num=5), s(m.normal((2,)), m.normal((2,)), num=4,
                                            endpoint=False, base=2.0),
    s(m.normal(()), m.normal((3,)), num=3, axis=1)], CREATE, exact=False)
add("np.geomspace", np.geomspace, lambda m: [
    s(m.positive(()), m.positive(()), num=5),
    s(-m.positive((2,)), -m.positive((2,)), num=4, endpoint=False),
    s(m.positive(()), m.positive((3,)), num=3, axis=1)], CREATE, exact=False)
add("np.unravel_index", np.unravel_index, lambda m: [
    s(np.array([0, 5, 11, 7]), shape=(3, 4)), s(np.array([[3], [20]]), shape=(2, 3, 4),
                                                order="F"),
    s(np.array(5), shape=(6,))], INDEX, dtypes=("int64",), derivative=INTEGER,
    note="an index out of range raises when the graph runs (jit too)")
add("np.ravel_multi_index", _ravel_multi, lambda m: [
    s(np.array([0, 2, 1]), np.array([3, 1, 0]), dims=(3, 4)),
    s(np.array([[0], [2]]), np.array([1, 3]), dims=(3, 4), order="F"),
    s(np.array([-1, 4, 1]), np.array([7, -5, 0]), dims=(3, 4), mode="wrap"),
    s(np.array([-1, 4, 1]), np.array([7, -5, 0]), dims=(3, 4), mode=("clip", "wrap"))],
    INDEX, dtypes=("int64",), derivative=INTEGER,
    ref=lambda i, j, dims, **kw: np.ravel_multi_index((i, j), dims, **kw))
add("tnp.nonzero (size=)", lambda x, **kw: tnp.nonzero(x, **kw), lambda m: [
    s(_with_zeros(m, (3, 4)), size=5), s(_with_zeros(m, (3, 4)), size=14, fill_value=(-1, 9)),
    s(_with_zeros(m, (5,)), size=0), s(_with_zeros(m, (0, 3)), size=2)], INDEX,
    dtypes=("float64", "int32", "bool"), derivative=ZERO, ref=_nonzero_ref,
    note="the first `size` indices, padded with `fill_value` (as jax.numpy.nonzero)")
add("tnp.flatnonzero (size=)", lambda x, **kw: tnp.flatnonzero(x, **kw), lambda m: [
    s(_with_zeros(m, (3, 4)), size=5, fill_value=-1), s(_with_zeros(m, (6,)), size=9)],
    INDEX, derivative=ZERO, ref=lambda x, **kw: _nonzero_ref(np.ravel(x), **kw)[0])
add("tnp.argwhere (size=)", lambda x, **kw: tnp.argwhere(x, **kw), lambda m: [
    s(_with_zeros(m, (3, 4)), size=5), s(_with_zeros(m, (2, 3)), size=7, fill_value=-2)],
    INDEX, derivative=ZERO, ref=lambda x, **kw: np.stack(_nonzero_ref(x, **kw), axis=1))


def _unique_ref(x, size, fill_value=None):
    """jax.numpy.unique(x, size=, fill_value=) in NumPy: padded with the smallest value."""
    found = np.unique(x)
    pad = found[:1] if fill_value is None else np.asarray([fill_value], x.dtype)
    return np.concatenate([found[:size], np.repeat(pad, max(size - found.size, 0))])


add("tnp.unique (size=)", lambda x, **kw: tnp.unique(x, **kw), lambda m: [
    s(m.distinct((3, 4)), size=5), s(m.distinct((6,)), size=9, fill_value=2.5),
    s(np.repeat(m.distinct((4,)), 3), size=6, fill_value=-1.0, smooth=False)], INDEX,
    ref=_unique_ref, jax=lambda jax, x, **kw: jax.numpy.unique(x, **kw), cuda=NO_KERNEL,
    note="a stable sort; the values' derivative reaches each value's first occurrence")


# ---------------------------------------------------------------------------------------
# Statistics and other common functions (transfuse/numpy/_statistics.py, _ufuncs_more.py,
# _numerical.py)

STATS = "statistics"


def _nan_sprinkled(m: Draws, shape, all_nan_row: bool = False) -> np.ndarray:
    """Normals (distinct values) with NaNs at every seventh place (floats: no slice of the
    samples' all NaN); all_nan_row: also a whole slice along the last axis."""
    x = m.distinct(shape)
    if x.dtype.kind == "f" and x.size:
        x.reshape(-1)[2::7] = np.nan
        if all_nan_row:
            x[..., 0, :] = np.nan
    return x


def _nan_reductions(ddof: bool = False, all_nan: bool = True
                    ) -> Callable[[Draws], list[Sample]]:
    """Every axis kind, keepdims, 0-d; all_nan: a sample with all-NaN slices (the NaN
    results of nanmean and nanvar there: tests/test_numpy_more.py)."""
    def samples(m: Draws) -> list[Sample]:
        x = _nan_sprinkled(m, (2, 3, 4))
        extra = {"ddof": 1} if ddof else {}  # not along axis 0: 2 elements, one may be NaN
        return [s(x, axis=a, keepdims=k, **(extra if a != 0 else {})) for a, k in (
            (None, False), (0, True), (-1, False), ((0, 2), False))] + [s(m.normal(()))] + (
            [s(_nan_sprinkled(m, (2, 3, 4), all_nan_row=True), axis=-1, smooth=False)]
            if all_nan else [])
    return samples


def _nan_arg_samples(m: Draws) -> list[Sample]:
    """(NumPy raises on an all-NaN slice; transfuse's -1 there: tests/test_numpy_more.py)"""
    x = _nan_sprinkled(m, (3, 4, 5))
    return [s(x, axis=a, keepdims=k) for a, k in ((None, False), (0, False), (-1, True))]


for _f in (np.nansum, np.nanprod, np.nanmean, np.nanmax, np.nanmin):
    add(f"np.{_f.__name__}", _f, _nan_reductions(all_nan=_f is not np.nanmean), STATS,
        exact=_f in (np.nanmax, np.nanmin))
for _f in (np.nanvar, np.nanstd):
    add(f"np.{_f.__name__}", _f, _nan_reductions(ddof=True, all_nan=False), STATS,
        exact=False)
add("np.nanargmax", np.nanargmax, _nan_arg_samples, STATS, derivative=ZERO,
    note="an all-NaN slice gives -1 (as JAX; NumPy raises)")
add("np.nanargmin", np.nanargmin, _nan_arg_samples, STATS, derivative=ZERO,
    note="an all-NaN slice gives -1 (as JAX; NumPy raises)")
add("np.ptp", np.ptp, reductions("distinct", empty_axis=1), STATS, dtypes=FLOATS + ("int64",))


def _counted(m: Draws) -> list[Sample]:
    x = m.rng.integers(0, 3, (2, 3, 4)).astype(m.dtype)
    return [s(x), s(x, axis=0), s(x, axis=(0, 2), keepdims=True), s(x[:0], axis=1)]


add("np.count_nonzero", np.count_nonzero, _counted, STATS, dtypes=FLOATS + ("bool",),
    derivative=ZERO)


def _averages(m: Draws) -> list[Sample]:
    a = m.normal((3, 4))
    return [s(a, m.positive((3, 4))), s(a, m.positive((4,)), axis=1),
            s(a, m.positive((3,)), axis=0, returned=True, keepdims=True),
            s(m.normal((2, 3, 4)), m.positive((2, 4)), axis=(0, 2))]


add("np.average", lambda a, weights, **kw: np.average(a, weights=weights, **kw), _averages,
    STATS, exact=False, jax=lambda jax, a, weights, **kw: jax.numpy.average(
        a, weights=weights, **kw))
add("np.average (unweighted)", np.average, lambda m: [
    s(m.normal((3, 4))), s(m.normal((3, 4)), axis=0, returned=True)], STATS,
    dtypes=FLOATS + ("int64",), exact=False)
add("np.cov", np.cov, lambda m: [
    s(m.normal((3, 6))), s(m.normal((6, 3)), rowvar=False), s(m.normal((2, 5)), bias=True),
    s(m.normal((5,)), m.normal((5,))), s(m.normal((2, 5)), ddof=2)], STATS, exact=False,
    note="float64 at least, as NumPy")


def _weighted_cov(m, aweights, fweights, ddof=None):
    return np.cov(m, fweights=fweights, aweights=aweights, ddof=ddof)


add("np.cov (weights)", _weighted_cov, lambda m: [
    s(m.normal((3, 6)), m.positive((6,)), np.array([1, 2, 1, 3, 1, 2])),
    s(m.normal((3, 6)), m.positive((6,)), np.array([2, 1, 1, 1, 3, 1]), ddof=0)],
    STATS, exact=False, jax=lambda jax, m, aweights, fweights, ddof=None: jax.numpy.cov(
        m, fweights=fweights, aweights=aweights, ddof=ddof))
add("np.corrcoef", np.corrcoef, lambda m: [
    s(m.normal((3, 6))), s(m.normal((5,)), m.normal((5,))),
    s(m.normal((6, 2)), rowvar=False)], STATS, exact=False)


def _closeness(m: Draws) -> list[Sample]:
    a = m.normal((3, 4))
    near = (a + 1e-9).astype(a.dtype)
    nans = m.special((3, 4))
    return [s(a, near), s(a, m.normal((3, 4))), s(a, a[0]), s(nans, nans.copy(), equal_nan=True),
            s(nans, nans.copy())]


add("np.allclose", np.allclose, _closeness, STATS, derivative=ZERO)
add("np.array_equal", np.array_equal, _closeness, STATS, derivative=ZERO)
add("np.copysign", np.copysign, binary("nonzero", "nonzero"), BINARY,
    dtypes=FLOATS + ("int32",))
add("np.fmod", np.fmod, _mods, BINARY, dtypes=NUMERIC)
add("np.heaviside", np.heaviside, lambda m: binary("nonzero", "normal")(m) + [
    s(m._finish([-1.5, 0.0, 2.0, np.nan]), m.normal((4,)), smooth=False)], BINARY)
add("np.ldexp", np.ldexp, lambda m: [
    s(m.normal((3, 4)), m.rng.integers(-6, 6, (4,))), s(m.normal(()), np.array(3)),
    s(m.normal((0, 3)), m.rng.integers(-6, 6, (3,)).astype(np.int32))], BINARY)
add("np.frexp", lambda x: np.frexp(x), unary("nonzero"), UNARY_FLOAT,  # JAX: float0 exponent
    note="the exponent (int32) has no derivative; the mantissa's is 2**-exponent")
add("np.logaddexp2", np.logaddexp2, binary(), BINARY, exact=False)
add("np.float_power", np.float_power, _powers, BINARY, dtypes=NUMERIC, exact=False,
    note="computed in float64, as NumPy; not to the bit: on AVX-512 NumPy's float64 pow "
         "takes a SIMD loop for some layouts and libm for others, an ulp apart")
add("np.sinc", np.sinc, lambda m: unary()(m) + [s(m._finish([0.0, 0.5, -1.25]))],
    UNARY_FLOAT, dtypes=UNARY_DTYPES, exact=False, note="derivative 0 at 0 (as JAX)")


def _increasing(m: Draws, n: int) -> np.ndarray:
    """n sorted values at least 0.37 apart."""
    return np.sort(m.distinct((n,)))


add("np.trapezoid", np.trapezoid, lambda m: [
    s(m.normal((3, 5))), s(m.normal((3, 5)), _increasing(m, 5)),
    s(m.normal((4, 3)), dx=0.5, axis=0), s(m.normal((2, 4)), _increasing(m, 8).reshape(2, 4))],
    STATS, exact=False)
add("np.gradient", np.gradient, lambda m: [
    s(m.normal((4, 6))), s(m.normal((4, 6)), m.positive(()), axis=1),
    s(m.normal((4, 6)), _increasing(m, 6), axis=-1, edge_order=2),
    s(m.normal((5,)), _increasing(m, 5)), s(m.normal((3, 4)), edge_order=2)], STATS,
    exact=False, note="spacings: scalars or coordinates (traced ones: the non-uniform "
    "formula); edge_order 1 and 2")
add("np.polyval", np.polyval, lambda m: [
    s(m.normal((4,)), m.normal((3, 5))), s(m.normal((3,)), m.normal(())),
    s(m.normal((2,)), m.normal((0,)))], STATS)
linalg("np.polyfit", np.polyfit, lambda m: [
    s(m.normal((6,)), m.normal((6,)), deg=2), s(m.normal((7,)), m.normal((7, 2)), deg=1)],
    note="least squares by np.linalg.lstsq, as NumPy; w=, not full= or cov=")


def _convolutions(zero_d: bool) -> Callable[[Draws], list[Sample]]:
    """Every mode, the shorter operand first or second; convolve takes 0-d operands."""
    return lambda m: [s(m.normal((6,)), m.normal((3,)), mode=mode)
                      for mode in ("full", "same", "valid")] + [
        s(m.normal((3,)), m.normal((5,)), mode="same"),
        s(m.normal((4,)), m.normal((4,)), mode="valid")] + (
        [s(m.normal(()), m.normal((2,)))] if zero_d else [])


add("np.convolve", np.convolve, _convolutions(True), STATS, exact=False,
    note="the conv primitive")
add("np.correlate", np.correlate, _convolutions(False), STATS, exact=False,
    note="the conv primitive")


def _interpolations(m: Draws) -> list[Sample]:
    xp, fp = _increasing(m, 6), m.normal((6,))
    x = m._finish(m.rng.uniform(xp[0] - 1, xp[-1] + 1, (3, 4)))
    return [s(x, xp, fp), s(x, xp, fp, left=-7.0, right=9.0), s(x[0], xp[:1], fp[:1]),
            s(xp, xp, fp, smooth=False)]


add("np.interp", np.interp, _interpolations, STATS,
    note="float64 as NumPy; period= a number; derivatives as JAX's")


def _digitizations(m: Draws) -> list[Sample]:
    x = m.normal((3, 5))
    bins = np.sort(m.distinct((4,))).astype(m.dtype)
    return [s(x, bins), s(x, bins, right=True), s(x, bins[::-1].copy()),
            s(x, bins[::-1].copy(), right=True), s(x[:0], bins)]


add("np.digitize", np.digitize, _digitizations, STATS, derivative=ZERO,
    note="traced bins: increasing or decreasing, read from them")


def _bincount(x, weights, **kw):
    return tnp.bincount(x, weights, length=8, **kw)


def _bincount_ref(x, weights, **kw):
    counts = np.bincount(x, weights, **kw)
    return np.pad(counts, (0, max(8 - counts.shape[0], 0)))[:8]


add("tnp.bincount", _bincount, lambda m: [
    s(m.rng.integers(0, 10, (12,)), m.normal((12,))),
    s(m.rng.integers(0, 6, (12,)), m.normal((12,)), minlength=3)], STATS, ref=_bincount_ref,
    jax=lambda jax, x, weights, **kw: jax.numpy.bincount(x, weights, length=8, **kw),
    exact=False, note="length= (as JAX) under vmap and jit; values >= length dropped")


def _histograms(m: Draws) -> list[Sample]:
    a = m.normal((40,))
    edges = np.sort(m.distinct((5,))).astype(m.dtype)
    return [s(a), s(a, bins=5, range=(-1, 1)), s(a, edges),
            s(a, bins=7, range=(-2, 2), density=True),
            s(m.normal((3, 4)), bins=3), s(m.normal((0,)), bins=4)]


def _histogram(a, *bins, **kw):
    """np.histogram's counts (the edges, float and differentiable: the weighted entry)."""
    return np.histogram(a, *bins, **kw)[0]


add("np.histogram", _histogram, _histograms, STATS, dtypes=FLOATS + ("int64",),
    derivative=ZERO, note="fixed bins: a number with range= or the data's range, or edges; "
    "density=")


def _weighted_histogram(a, weights, **kw):
    return np.histogram(a, weights=weights, **kw)


add("np.histogram (weights)", _weighted_histogram, lambda m: [
    s(m.normal((30,)), m.positive((30,)), bins=6),
    s(m.normal((30,)), m.positive((30,)), bins=4, density=True),
    s(m.normal((30,)), m.positive((30,)), bins=4, range=(-1, 1), density=True)],
    STATS, exact=False, jax=lambda jax, a, weights, **kw: jax.numpy.histogram(
        a, weights=weights, **kw))


# ---------------------------------------------------------------------------------------
# Sorting and selection (the `sort` primitive, ir/sort.py; transfuse/numpy/sorting.py):
# tie-free floats where a derivative is checked; argsort's ties under kind="stable" (NumPy's
# default kind is not stable); partition is a full stable sort (its reference: np.sort).
# The rest (NaN placement, every quantile method, errors): tests/test_sorting.py

SORTING = "sorting"


def _sorting(**options: Any) -> dict:
    options.setdefault("cuda", NO_KERNEL)
    return options


def _sort_samples(m: Draws) -> list[Sample]:
    return [s(m.distinct((3, 5))), s(m.distinct((4, 3)), axis=0, kind="stable"),
            s(m.distinct((2, 3)), axis=None), s(m.distinct((2, 3, 4)), axis=-2),
            s(m.distinct((0, 3)))]


def _argsort_samples(m: Draws) -> list[Sample]:
    return [s(m.normal((3, 7)), kind="stable"), s(m.normal((4, 3)), axis=0, stable=True),
            s(m.normal((2, 3)), axis=None, kind="mergesort"), s(m.normal((0, 3)), kind="stable")]


def _quantile_samples(scale: float) -> Callable[[Draws], list[Sample]]:
    return lambda m: [
        s(m.distinct((3, 6)), q=0.3 * scale, axis=1),
        s(m.distinct((4, 5)), np.array([0.05, 0.25, 0.5, 0.95]) * scale, axis=0,
          method="hazen"),
        s(m.distinct((2, 3, 4)), q=0.7 * scale, axis=(0, 2), keepdims=True, method="lower"),
        s(m.distinct((7,)), np.array([0.1, 0.9]) * scale, method="median_unbiased"),
        s(m.distinct((5, 2)), q=0.5 * scale, method="inverted_cdf")]


def _nan_quantile_samples(scale: float) -> Callable[[Draws], list[Sample]]:
    def samples(m: Draws) -> list[Sample]:
        holed = m.distinct((3, 6))
        if m.dtype.kind == "f":
            holed[0, [1, 4]] = np.nan
            holed[2, :] = np.nan
        return [s(m.distinct((3, 6)), q=0.3 * scale, axis=1),
                s(holed, np.array([0.2, 0.5]) * scale, axis=1, smooth=False),
                s(holed, q=0.6 * scale, axis=1, method="nearest", smooth=False)]
    return samples


def _median_samples(m: Draws) -> list[Sample]:
    return [s(m.distinct((3, 6)), axis=1), s(m.distinct((5, 3)), axis=0, keepdims=True),
            s(m.distinct((2, 3, 4)), axis=(0, 2)), s(m.distinct((7,)))]


def _nanmedian_samples(m: Draws) -> list[Sample]:
    holed = m.distinct((4, 5))
    if m.dtype.kind == "f":
        holed[1, [0, 3]] = np.nan
        holed[3, :] = np.nan
    return [s(m.distinct((3, 6)), axis=1), s(holed, axis=1, smooth=False), s(m.distinct((5,)))]


def _searchsorted_samples(m: Draws) -> list[Sample]:
    table = np.sort(m.normal((9,)))
    return [s(table, m.normal((3, 4))), s(table, table[[0, 4, 8]], side="right"),
            s(table, m.normal(()), side="left")]


add("np.sort", np.sort, _sort_samples, SORTING, **_sorting(dtypes=ALL))
add("np.argsort", np.argsort, _argsort_samples, SORTING,
    **_sorting(dtypes=ALL, derivative=ZERO, note="stable whatever the kind"))
def _kth_values(partition):
    """The entries at the kth positions: the same for every valid partition (NumPy's too)."""
    return lambda a, kth, axis=-1: np.take(partition(a, kth, axis=axis), kth, axis=axis)


def _kth_of_argpartition(a, kth, axis=-1):
    order = np.argpartition(a, kth, axis=axis)
    flat = np.reshape(a, -1) if axis is None else a
    return np.take(np.take_along_axis(flat, order, axis=-1 if axis is None else axis), kth,
                   axis=axis)


def _partition_samples(m: Draws) -> list[Sample]:
    return [s(m.distinct((3, 5)), kth=2), s(m.distinct((4, 3)), kth=[0, 2], axis=0),
            s(m.distinct((2, 3)), kth=-1, axis=None)]


add("np.partition", _kth_values(np.partition), _partition_samples, SORTING,
    **_sorting(dtypes=NUMERIC, jax=lambda jax, a, kth, axis=-1: jax.numpy.take(
        jax.numpy.sort(a, axis=axis), np.asarray(kth), axis=axis),
        note="a full stable sort (a valid partition); tested at the kth positions"))
add("np.argpartition", _kth_of_argpartition, _partition_samples, SORTING,
    **_sorting(dtypes=NUMERIC, jax=lambda jax, a, kth, axis=-1: jax.numpy.take(
        jax.numpy.sort(a, axis=axis), np.asarray(kth), axis=axis),
        note="the stable argsort (a valid argpartition); tested at the kth positions"))
add("np.lexsort", np.lexsort, lambda m: [
    s(m.normal((3, 8))), s(m.normal((2, 3, 4)), axis=0), s(m.normal((1, 5)))], SORTING,
    **_sorting(dtypes=ALL, derivative=ZERO))
add("np.searchsorted", np.searchsorted, _searchsorted_samples, SORTING,
    dtypes=NUMERIC, derivative=ZERO,
    note="a count when small (len(a) len(v) comparisons), else a and v sorted together")
add("np.quantile", np.quantile, _quantile_samples(1.0), SORTING,
    **_sorting(dtypes=NUMERIC, note="every method; q concrete"))
add("np.percentile", np.percentile, _quantile_samples(100.0), SORTING,
    **_sorting(dtypes=NUMERIC, note="every method; q concrete"))
add("np.nanquantile", np.nanquantile, _nan_quantile_samples(1.0), SORTING,
    **_sorting(dtypes=NUMERIC, note="every method; q concrete"))
add("np.nanpercentile", np.nanpercentile, _nan_quantile_samples(100.0), SORTING,
    **_sorting(dtypes=NUMERIC, note="every method; q concrete"))
add("np.median", np.median, _median_samples, SORTING, **_sorting(dtypes=NUMERIC))
add("np.nanmedian", np.nanmedian, _nanmedian_samples, SORTING, **_sorting(dtypes=NUMERIC))


# ---------------------------------------------------------------------------------------
# Views of the catalogue


# ---------------------------------------------------------------------------------------
# Complex numbers: the entries whose functions NumPy (and transfuse) define on complex
# inputs are also tested in complex64 and complex128 (docs/numpy.md, "Complex numbers").

COMPLEX_CAPABLE = (
    "np.exp", "np.expm1", "np.log", "np.log1p", "np.sqrt", "np.sin", "np.cos", "np.tan",
    "np.arcsin", "np.arccos", "np.arctan", "np.sinh", "np.cosh", "np.tanh", "np.arcsinh",
    "np.arccosh", "np.arctanh", "np.reciprocal", "np.exp2", "np.log2", "np.log10",
    "np.negative", "np.positive", "np.absolute", "np.square", "np.conjugate", "np.real",
    "np.sign", "np.isnan", "np.isinf", "np.isfinite", "np.add", "np.subtract",
    "np.multiply", "np.divide", "np.power", "np.equal", "np.not_equal", "np.less",
    "np.less_equal", "np.greater", "np.greater_equal", "np.where", "np.sum", "np.prod",
    "np.mean", "np.var", "np.std", "np.cumsum", "np.cumprod", "np.matmul", "np.dot",
    "np.inner", "np.outer", "np.vdot", "np.kron", "np.einsum", "np.tensordot", "np.round",
    "np.transpose", "np.reshape", "np.flip", "np.diagonal", "np.trace",
    # Linear algebra whose domains hold for complex draws (Hermitian ones: test_complex.py)
    "np.linalg.inv", "np.linalg.solve", "np.linalg.det", "np.linalg.slogdet",
    "np.linalg.svdvals", "np.linalg.norm", "np.linalg.pinv", "np.linalg.matrix_power",
    "np.linalg.multi_dot", "np.linalg.tensorsolve", "np.linalg.tensorinv")
for _name in COMPLEX_CAPABLE:
    OPS[_name] = dataclasses.replace(OPS[_name], dtypes=OPS[_name].dtypes + COMPLEX)
# Piecewise constant on real inputs (a zero derivative), smooth on complex ones.
add("np.imag (complex)", np.imag, unary(), UNARY_NUMERIC, dtypes=COMPLEX)
add("np.angle (complex)", np.angle, unary("nonzero"), UNARY_NUMERIC, dtypes=COMPLEX)


def samples_of(entry: OpInfo, dtype: str, seed: int = 0) -> list[Sample]:
    return entry.samples(Draws(dtype, seed))


def float_dtypes(entry: OpInfo) -> list[str]:
    return [d for d in entry.dtypes if np.dtype(d).kind in "fc"]


def differentiable(entry: OpInfo) -> bool:
    return entry.derivative == YES and bool(float_dtypes(entry))


def families() -> dict[str, list[OpInfo]]:
    out: dict[str, list[OpInfo]] = {}
    for entry in OPS.values():
        out.setdefault(entry.family, []).append(entry)
    return out


# ---------------------------------------------------------------------------------------
# The coverage table of docs/numpy.md

DOCS = Path(__file__).resolve().parent.parent / "docs" / "numpy.md"
BEGIN = "<!-- coverage table: generated by `python -m tests.opinfo --write-docs` -->"
END = "<!-- end of the coverage table -->"
COLUMNS = ("eager", "jvp", "vjp", "vmap", "jit", "functionalize", "CUDA")
DERIVATIVE_CELLS = {YES: "yes", ZERO: "yes (zero)", INTEGER: "— (integer inputs: DTypeError)",
                    NO_INPUTS: "— (no array inputs)"}


def cells(entry: OpInfo) -> list[str]:
    """What each transform does with the function: yes, or the error it raises."""
    derivative = DERIVATIVE_CELLS[entry.derivative]
    no_derivative = {x.no_derivative for d in float_dtypes(entry)[:1]
                     for x in samples_of(entry, d)} - {""}
    if no_derivative and entry.derivative == YES:
        derivative = "yes; some arguments: UnsupportedError (see notes)"
    vmap = "— (no array inputs)" if entry.derivative == NO_INPUTS else "yes"
    if entry.cuda:
        cuda = "CompileError when built (no CUDA kernel)"
    else:
        cuda = f"yes ({entry.cuda_note})" if entry.cuda_note else "yes"
    return ["yes", derivative, derivative, vmap, "yes", "yes", cuda]


def table() -> str:
    lines = ["| function | dtypes | " + " | ".join(COLUMNS) + " | notes |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for entry in OPS.values():
        dtypes = ", ".join(entry.dtypes)
        note = entry.note.replace("|", "\\|")
        lines.append(f"| `{entry.name}` | {dtypes} | " + " | ".join(cells(entry))
                     + f" | {note} |")
    return "\n".join(lines)


def docs_with_table(text: str) -> str:
    """docs/numpy.md's text with the table between the markers replaced by the current one."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n\n" + table() + "\n\n" + text[end:]


def main(argv: list[str]) -> int:
    if argv != ["--write-docs"]:
        print("usage: python -m tests.opinfo --write-docs", file=sys.stderr)
        return 2
    DOCS.write_text(docs_with_table(DOCS.read_text()))
    print(f"wrote the coverage table of {len(OPS)} functions to {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
