"""The catalogue: for every primitive, small programs that exercise it on sample inputs.

One entry per primitive name in `CATALOGUE`. An entry says which dtypes the primitive
takes, which *family* it is compiled with (tests/test_coverage.py compiles one program per
family and dtype, and re-runs primitives one by one only when that fails) and how to build
its samples: seeded random inputs of a suitable domain (`positive`, `unit`, ...), in the
usual shape, 0-d and size 0 where the primitive allows. A sample's program binds the
primitive itself (`bind(P[name], *args, **params)`) unless the entry says otherwise.

The function-level catalogue (one entry per NumPy function, driving every transform's
tests: issue #14) is tests/opinfo.py; this one stays per primitive, so that every
primitive is compiled in every dtype it takes, on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transfuse.ir import verify
from transfuse.ir.interpreter import interpret
from transfuse.ir.linalg import MADE_BY_JIT
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.tracing import bind

import transfuse as tx
from tests.helpers import rand

P = PRIMITIVES
FLOATS = ("float32", "float64")
INTS = ("int32", "int64")
NUMERIC = FLOATS + INTS
INTEGRAL = INTS + ("bool",)
ALL = NUMERIC + ("bool",)
MOVES = FLOATS  # data movement: the code is the same for every dtype
COMPLEX = ("complex64", "complex128")
# The complex-capable primitives compile here in one complex dtype (showing the rule is
# there); tests/opinfo.py runs their functions in both.
WIDE_COMPLEX = ("complex128",)
KEYS = ("uint64",)  # random keys: the dtype of the programs' inputs, not of draws
SHAPES = [(3, 4), (), (0, 3)]  # the usual shape, 0-d, size 0
BROADCASTS = [((3, 1), (1, 4)), ((), (2, 3)), ((0, 3), (3,))]


# ---------------------------------------------------------------------------------------
# Sample inputs


class Inputs:
    """Seeded sample arrays of one dtype, drawn from the domain a primitive needs.

    With a `shared` dict, a second draw from the same domain, shape and dtype returns the
    first array: samples that share inputs compile to fewer loops (the fusion pass merges
    regions that read a common input), which keeps grouped compiles fast.
    """

    def __init__(self, dtype: str, seed: int = 0, shared: dict | None = None):
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.shared = {} if shared is None else shared

    def _draw(self, domain: str, shape, make: Callable[[], Any]) -> np.ndarray:
        key = (domain, tuple(np.shape(np.empty(shape))), self.dtype.name)
        if key not in self.shared:
            self.shared[key] = np.asarray(make())
        return self.shared[key]

    def _cast(self, x) -> np.ndarray:
        """x in the dtype; complex dtypes get an imaginary part in (-0.5, 0.5) (small, so
        each domain's real-axis limits still keep the values off branch cuts and poles)."""
        x = np.asarray(x)
        if self.dtype.kind == "c":
            x = x + 1j * self.rng.uniform(-0.5, 0.5, x.shape)
        return x.astype(self.dtype)

    def normal(self, shape) -> np.ndarray:
        """Normals for floats, small integers for ints, coin flips for bools."""
        return self._draw("normal", shape, lambda: rand(self.rng, shape, self.dtype))

    def positive(self, shape) -> np.ndarray:
        return self._draw("positive", shape, lambda: self._cast(
            np.abs(self.rng.standard_normal(shape)) + 0.5))

    def above_one(self, shape) -> np.ndarray:
        return self._draw("above_one", shape, lambda: self._cast(
            np.abs(self.rng.standard_normal(shape)) + 1.5))

    def unit(self, shape) -> np.ndarray:
        """Inside (-0.9, 0.9): the domain of arcsin, arctanh; tan away from its poles."""
        return self._draw("unit", shape, lambda: self._cast(self.rng.uniform(-0.9, 0.9, shape)))

    def nonzero(self, shape) -> np.ndarray:
        def make():
            sign = self.rng.choice([-1, 1], shape)
            if self.dtype.kind == "f":
                return self._cast(sign * (np.abs(self.rng.standard_normal(shape)) + 0.3))
            return self._cast(sign * self.rng.integers(1, 5, shape))
        return self._draw("nonzero", shape, make)

    def small(self, shape) -> np.ndarray:
        """Magnitudes below 3: powers and products stay well inside every dtype."""
        return self._draw("small", shape, lambda: self._cast(
            self.rng.integers(0, 3, shape) if self.dtype.kind in "iu"
            else self.rng.uniform(0.5, 1.5, shape)))

    def scaled(self, shape) -> np.ndarray:
        """Normals times 3 for floor/ceil/round: several integers apart."""
        return self._draw("scaled", shape, lambda: self._cast(
            3 * self.rng.standard_normal(shape)))

    def special(self, shape) -> np.ndarray:
        """Normals with NaN, inf and -inf sprinkled in (for isnan and friends)."""
        def make():
            x = self.rng.standard_normal(shape)
            flat = x.reshape(-1)
            flat[::3] = np.nan
            flat[1::5] = np.inf
            flat[2::7] = -np.inf
            return self._cast(x)
        return self._draw("special", shape, make)

    def spd(self, shape) -> np.ndarray:
        """Symmetric positive-definite matrices (..., n, n), eigenvalues 1, 2, ..., n."""
        def make():
            q, _ = np.linalg.qr(self.rng.standard_normal(shape))
            n = shape[-1]
            return self._cast((q * np.arange(1.0, n + 1)) @ np.swapaxes(q, -1, -2))
        return self._draw("spd", shape, make)

    def invertible(self, shape) -> np.ndarray:
        """Well-conditioned square matrices (..., n, n): normals plus 3 on the diagonal."""
        return self._draw("invertible", shape, lambda: self._cast(
            self.rng.standard_normal(shape) + 3 * np.eye(shape[-1])))

    def bools(self, shape) -> np.ndarray:
        return self._draw("bools", shape, lambda: self.rng.random(shape) < 0.5)

    def indices(self, shape, n: int) -> np.ndarray:
        """int64 indices into a dimension of size n, negative ones included (not shared)."""
        return self.rng.integers(-n, n, shape).astype(np.int64)

    def key(self, shape=()) -> np.ndarray:
        return self._draw("key", shape, lambda: self.rng.integers(
            0, 2**63, shape, dtype=np.int64).astype(np.uint64))


@dataclass(frozen=True)
class Sample:
    """One call of the primitive: array arguments and static params."""

    args: tuple
    params: dict = field(default_factory=dict)


def call(*args: Any, **params: Any) -> Sample:
    return Sample(tuple(args), params)


@dataclass(frozen=True)
class Entry:
    """How to exercise one primitive: its dtypes, compile family, samples and program."""

    family: str
    samples: Callable[[Inputs], list[Sample]]
    dtypes: tuple[str, ...] = FLOATS
    # (name, params) -> the function of the sample's arguments; default binds the primitive.
    program: Callable[[str, dict], Callable] | None = None


def binds(name: str, params: dict) -> Callable:
    """The primitive itself as a function of its array arguments."""
    prim = P[name]
    return lambda *args: bind(prim, *args, **params)


def sample_programs(name: str, dtype: str, seed: int = 0, shared: dict | None = None,
                    first_only: bool = False) -> list[tuple[Callable, tuple]]:
    """(function, arguments) for each sample of `name` in `dtype` (or the first: the usual
    shape), drawn with `Inputs(dtype, seed, shared)`."""
    entry = CATALOGUE[name]
    make = entry.program or binds
    samples = entry.samples(Inputs(dtype, seed, shared))
    chosen = samples[:1] if first_only else samples
    return [(make(name, s.params), s.args) for s in chosen]


# ---------------------------------------------------------------------------------------
# Sample builders shared by the families


def elementwise(domain: str, shapes=SHAPES) -> Callable[[Inputs], list[Sample]]:
    """One operand from `domain` in each shape."""
    return lambda m: [call(getattr(m, domain)(s)) for s in shapes]


def broadcasting(x_domain: str, y_domain: str) -> Callable[[Inputs], list[Sample]]:
    """Two operands that broadcast: against a column, a 0-d, a size-0 operand."""
    return lambda m: [call(getattr(m, x_domain)(sx), getattr(m, y_domain)(sy))
                      for sx, sy in BROADCASTS]


def _integer_pow(m: Inputs) -> list[Sample]:
    powers = (0, 1, 2, 3, 7) if m.dtype.kind in "iub" else (0, 2, 3, 7, -2)
    return [call(m.nonzero((3, 4)), y=y) for y in powers] + [
        call(m.nonzero(()), y=3), call(m.nonzero((0, 3)), y=2)]


def _pow(m: Inputs) -> list[Sample]:
    if m.dtype.kind in "fc":
        return broadcasting("positive", "normal")(m)
    return broadcasting("normal", "small")(m)  # integers: non-negative exponents only


def _select(m: Inputs) -> list[Sample]:
    return [call(m.bools((3, 1)), m.normal((3, 4)), m.normal((1, 4))),
            call(m.bools(()), m.normal(()), m.normal((2,))),
            call(m.bools((0, 3)), m.normal((3,)), m.normal(()))]


def _clip(m: Inputs) -> list[Sample]:
    lo, hi = (-0.5, 0.5) if m.dtype.kind == "f" else (-2, 3)
    full = lambda shape, v: np.full(shape, v, m.dtype)  # noqa: E731
    return [call(m.normal((3, 4)), full((), lo), full((4,), hi)),
            call(m.normal(()), full((), lo), full((), hi)),
            call(m.normal((0, 3)), full((3,), lo), full((), hi))]


def _cast(m: Inputs) -> list[Sample]:
    x = m.scaled((3, 4)) if m.dtype.kind in "fc" else m.normal((3, 4))
    return [call(x, dtype=np.dtype(to)) for to in ALL + COMPLEX if to != m.dtype.name] + [
        call(m.normal(()), dtype=np.dtype("float64" if m.dtype.name != "float64" else "int32")),
        call(m.normal((0, 3)), dtype=np.dtype("bool" if m.dtype.name != "bool" else "int64"))]


# ---------------------------------------------------------------------------------------
# Reductions, scans, contractions


def reduction(m: Inputs) -> list[Sample]:
    """Inner, outer and all axes, none (0-d), and a size-0 array along a kept axis."""
    return [call(m.normal((2, 3, 4)), axes=(1,)), call(m.normal((2, 3, 4)), axes=(0, 2)),
            call(m.normal((3, 4)), axes=(0, 1)), call(m.normal(()), axes=()),
            call(m.normal((0, 3)), axes=(1,))]


def _sum(m: Inputs) -> list[Sample]:
    return reduction(m) + [call(m.normal((0, 3)), axes=(0,))]  # an empty sum: zeros


def _product(m: Inputs) -> list[Sample]:
    """reduce_prod: factors near 1 (or small integers), so products stay representable."""
    return [call(m.small((2, 3, 4)), axes=(1,)), call(m.small((2, 3, 4)), axes=(0, 2)),
            call(m.small(()), axes=()), call(m.small((0, 3)), axes=(0,))]


def _arg_reduction(m: Inputs) -> list[Sample]:
    ties = np.repeat(m.normal((3, 1)), 4, axis=1)  # the first of equal values wins
    return [call(m.normal((3, 4)), axis=1, index_dtype=np.dtype("int64")),
            call(m.normal((2, 3, 4)), axis=0, index_dtype=np.dtype("int32")),
            call(ties, axis=1, index_dtype=np.dtype("int64")),
            call(m.normal((0, 3)), axis=1, index_dtype=np.dtype("int64"))]


def _scan(domain: str) -> Callable[[Inputs], list[Sample]]:
    def samples(m: Inputs) -> list[Sample]:
        x = getattr(m, domain)
        return [call(x((3, 4)), axis=1, reverse=False), call(x((3, 4)), axis=0, reverse=True),
                call(x((5,)), axis=0, reverse=False), call(x((0, 3)), axis=0, reverse=False)]
    return samples


DOT_CASES = [  # lhs shape, rhs shape, ((lhs contracting, rhs contracting), (batch, batch))
    ((3, 4), (4, 5), (((1,), (0,)), ((), ()))),
    ((2, 3, 4), (2, 4, 5), (((2,), (1,)), ((0,), (0,)))),
    ((4, 3), (5, 4), (((0,), (1,)), ((), ()))),
    ((3,), (3,), (((0,), (0,)), ((), ()))),
    ((2, 3), (4,), (((), ()), ((), ()))),
    ((0, 3), (3, 2), (((1,), (0,)), ((), ()))),
    ((2, 0), (0, 3), (((1,), (0,)), ((), ()))),
]


def _dot_general(m: Inputs) -> list[Sample]:
    return [call(m.normal(a), m.normal(b), dimension_numbers=dn) for a, b, dn in DOT_CASES]


CONV_CASES = [  # lhs shape, rhs shape, params beyond the defaults
    ((2, 3, 6, 5), (4, 3, 3, 2), dict(window_strides=(1, 1), padding=((0, 0), (0, 0)))),
    ((1, 4, 7, 6), (6, 2, 3, 3), dict(window_strides=(2, 1), padding=((1, 1), (2, 0)),
                                      rhs_dilation=(1, 2), feature_group_count=2)),
    ((2, 2, 5), (3, 2, 2), dict(window_strides=(1,), padding=((1, 2),), lhs_dilation=(2,))),
    ((0, 2, 5), (3, 2, 2), dict(window_strides=(1,), padding=((0, 0),))),
]


def _conv(m: Inputs) -> list[Sample]:
    out = []
    for lhs, rhs, extra in CONV_CASES:
        nsp = len(lhs) - 2
        params = dict(lhs_dilation=(1,) * nsp, rhs_dilation=(1,) * nsp, feature_group_count=1)
        out.append(call(m.normal(lhs), m.normal(rhs), **{**params, **extra}))
    return out


# ---------------------------------------------------------------------------------------
# Shapes and indexing


def _reshape(m: Inputs) -> list[Sample]:
    return [call(m.normal((3, 4)), new_sizes=(2, 6)), call(m.normal((2, 3, 4)), new_sizes=(6, 4)),
            call(m.normal(()), new_sizes=(1, 1)), call(m.normal((0, 3)), new_sizes=(3, 0))]


def _transpose(m: Inputs) -> list[Sample]:
    return [call(m.normal((2, 3, 4)), permutation=(2, 0, 1)),
            call(m.normal((3, 4)), permutation=(1, 0)),
            call(m.normal((0, 3)), permutation=(1, 0))]


def _broadcast_in_dim(m: Inputs) -> list[Sample]:
    return [call(m.normal((3, 1)), shape=(2, 3, 4), broadcast_dimensions=(1, 2)),
            call(m.normal(()), shape=(2, 3), broadcast_dimensions=()),
            call(m.normal((3,)), shape=(0, 3), broadcast_dimensions=(1,))]


def _squeeze(m: Inputs) -> list[Sample]:
    return [call(m.normal((3, 1, 2)), dimensions=(1,)), call(m.normal((1, 1)), dimensions=(0, 1)),
            call(m.normal((0, 1)), dimensions=(1,))]


def _expand_dims(m: Inputs) -> list[Sample]:
    return [call(m.normal((3, 2)), dimensions=(0, 2)), call(m.normal(()), dimensions=(0,)),
            call(m.normal((0, 3)), dimensions=(2,))]


def _concatenate(m: Inputs) -> list[Sample]:
    return [call(m.normal((2, 3)), m.normal((1, 3)), m.normal((0, 3)), dimension=0),
            call(m.normal((2, 2)), m.normal((2, 3)), dimension=1),
            call(m.normal((0, 2)), m.normal((0, 1)), dimension=1)]


def _pad(m: Inputs) -> list[Sample]:
    return [call(m.normal((3, 4)), m.normal(()), padding_config=((1, 2, 0), (-1, 0, 0))),
            call(m.normal((3, 4)), m.normal(()), padding_config=((1, 2, 1), (0, -1, 2))),
            call(m.normal(()), m.normal(()), padding_config=()),
            call(m.normal((0, 3)), m.normal(()), padding_config=((1, 1, 0), (0, 0, 1)))]


def _slice(m: Inputs) -> list[Sample]:
    return [call(m.normal((5, 4)), starts=(4, 1), steps=(-2, 2), sizes=(3, 2)),
            call(m.normal((5, 4)), starts=(1, 0), steps=(1, 1), sizes=(3, 4)),
            call(m.normal((0, 3)), starts=(0, 1), steps=(1, 1), sizes=(0, 2))]


def _update_slice(m: Inputs) -> list[Sample]:
    return [call(m.normal((5, 4)), m.normal((2, 1)), starts=(1, 0), steps=(2, 1), sizes=(2, 4)),
            call(m.normal((5, 4)), m.normal(()), starts=(4, 3), steps=(-1, -2), sizes=(2, 2)),
            call(m.normal((0, 3)), m.normal((3,)), starts=(0, 0), steps=(1, 1), sizes=(0, 3))]


def _start(i: int) -> np.ndarray:
    return np.asarray(i, np.int64)


def _dynamic_slice(m: Inputs) -> list[Sample]:
    return [call(m.normal((5, 4)), _start(2), _start(1), slice_sizes=(2, 3)),
            call(m.normal((5, 4)), _start(-2), _start(9), slice_sizes=(3, 2)),  # clamped
            call(m.normal((0, 3)), _start(0), _start(1), slice_sizes=(0, 2))]


def _dynamic_update_slice(m: Inputs) -> list[Sample]:
    return [call(m.normal((5, 4)), m.normal((2, 3)), _start(2), _start(9)),
            call(m.normal((5, 4)), m.normal((1, 4)), np.asarray(-1, np.int32),
                 np.asarray(0, np.int32)),
            call(m.normal((0, 3)), m.normal((0, 2)), _start(0), _start(1))]


def _gather(m: Inputs) -> list[Sample]:
    return [call(m.normal((4, 5)), m.indices((2, 3), 5), axis=1),
            call(m.normal((4,)), m.indices((), 4), axis=0),
            call(m.normal((4, 3)), m.indices((0,), 4), axis=0)]


def _scatter(m: Inputs) -> list[Sample]:
    return [call(m.normal((3, 4)), np.array([[0, 2, 2], [1, 0, -1]]), m.normal((3, 2, 3)), axis=1),
            call(m.normal((4, 2)), np.array([1, 3, 1]), m.normal((3, 2)), axis=0),  # repeats
            call(m.normal((4,)), np.asarray(2), m.normal(()), axis=0),
            call(m.normal((0, 3)), np.array([0, 2]), m.normal((0, 2)), axis=1)]


# ---------------------------------------------------------------------------------------
# Creation and random numbers


def _iota(m: Inputs) -> list[Sample]:
    return [call(shape=(2, 3), dimension=1, dtype=m.dtype),
            call(shape=(4,), dimension=0, dtype=m.dtype),
            call(shape=(0, 3), dimension=0, dtype=m.dtype)]


def _full(m: Inputs) -> list[Sample]:
    value = {"f": 2.5, "i": -3, "b": True}[m.dtype.kind]
    return [call(shape=(2, 3), dtype=m.dtype, value=value),
            call(shape=(), dtype=m.dtype, value=value),
            call(shape=(0, 3), dtype=m.dtype, value=value)]


def _draws(m: Inputs) -> list[Sample]:
    return [call(m.key(), shape=(3, 4), dtype=m.dtype, stream=1),
            call(m.key((2,)), shape=(3,), dtype=m.dtype, stream=2),
            call(m.key(), shape=(), dtype=m.dtype, stream=3),
            call(m.key(), shape=(0, 3), dtype=m.dtype, stream=4)]


def _fold_in(m: Inputs) -> list[Sample]:
    return [call(m.key(), data=3), call(m.key((2, 3)), data=0), call(m.key((0,)), data=1)]


def _split(m: Inputs) -> list[Sample]:
    return [call(m.key(), size=3), call(m.key((2,)), size=4), call(m.key(), size=0)]


# ---------------------------------------------------------------------------------------
# Linear algebra (ir/linalg.py): one matrix, a stack, an empty stack

STACKS = [(3, 3), (2, 3, 3), (0, 3, 3)]


def _matrices(domain: str) -> Callable[[Inputs], list[Sample]]:
    return lambda m: [call(getattr(m, domain)(s)) for s in STACKS]


def _solves(m: Inputs) -> list[Sample]:
    return [call(m.invertible(s), m.normal(s[:-1] + (2,))) for s in STACKS]


def _triangular_solves(m: Inputs) -> list[Sample]:
    a, b = m.invertible((2, 3, 3)), m.normal((2, 3, 2))
    return [call(a, b, lower=lower, transpose_a=t) for lower in (True, False)
            for t in (True, False)] + [call(m.invertible((0, 3, 3)), m.normal((0, 3, 2)),
                                            lower=True, transpose_a=False)]


def _exponentials(m: Inputs) -> list[Sample]:
    """Stacks with 1-norms from about 0.1 (a low Padé degree, no squaring) to about 12
    (degree 13 and several squarings), one matrix, an empty stack."""
    scales = np.array([0.05, 0.5, 2.0, 5.0], m.dtype).reshape(4, 1, 1)
    return [call(m.normal((4, 3, 3)) * scales), call(m.normal((3, 3))),
            call(m.normal((0, 3, 3)))]


def _rectangular(m: Inputs) -> list[Sample]:
    return [call(m.normal(s), **p) for s in [(4, 3), (2, 3, 4), (0, 3, 3)] for p in (
        dict(full_matrices=False, compute_uv=True), dict(full_matrices=True, compute_uv=True),
        dict(full_matrices=False, compute_uv=False))]


def _qr_samples(m: Inputs) -> list[Sample]:
    return [call(m.normal(s), complete=c) for s in [(4, 3), (2, 3, 4), (0, 3, 3)]
            for c in (False, True)]


def _signs_fixed(name: str, params: dict) -> Callable:
    """The factorization with each vector's sign fixed (LAPACK builds may differ in it)."""
    def program(a):
        outs = bind(P[name], a, **params)
        if name == "eigh":
            w, v = outs
            return w, v * np.sign(v[..., :1, :])
        if name == "qr":
            q, r = outs
            d = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
            k = d.shape[-1]
            return q[..., :k] * d[..., None, :], r[..., :k, :] * d[..., :, None]
        if not params["compute_uv"]:
            return outs[0]
        u, s, vt = outs
        k = s.shape[-1]
        sign = np.sign(u[..., :1, :k])
        return u[..., :, :k] * sign, s, vt[..., :k, :] * np.swapaxes(sign, -1, -2)
    return program


# ---------------------------------------------------------------------------------------
# Views, mutation and calls: removed (`prepare`) or inlined before lowering, so their
# programs go through the whole pipeline as a user's would.

_VIEW_SLICE = dict(starts=(1, 3), steps=(2, -1), sizes=(2, 3))


def _views(m: Inputs) -> list[Sample]:
    return [call(m.normal((5, 4))), call(m.normal((0, 4)))]


def _view_program(name: str, params: dict) -> Callable:
    """A view of x, returned and read through arithmetic."""
    views = {
        "view_slice": lambda x: bind(P["view_slice"], x, **_view_slice_params(x)),
        "view_reshape": lambda x: bind(P["view_reshape"], x, new_sizes=x.shape[::-1]),
        "view_transpose": lambda x: bind(P["view_transpose"], x, permutation=(1, 0)),
        "view_broadcast": lambda x: bind(P["view_broadcast"], x, shape=(3,) + x.shape,
                                         broadcast_dimensions=(1, 2)),
    }

    def program(x):
        v = views[name](x)
        return v, v * 2
    return program


def _view_slice_params(x) -> dict:
    if x.shape[0] == 0:
        return dict(starts=(0, 0), steps=(1, 1), sizes=(0, 2))
    return _VIEW_SLICE


def _assign_samples(m: Inputs) -> list[Sample]:
    return [call(m.normal((5, 4)), m.normal((4,))), call(m.normal((4,)), m.normal(())),
            call(m.normal((0, 3)), m.normal((3,)))]


def _assign_program(name: str, params: dict) -> Callable:
    """Writes into a view of an input (the caller sees it) and into a fresh buffer."""
    def program(x, y):
        region = bind(P["view_slice"], x, starts=(0,) * x.ndim, steps=(1,) * x.ndim,
                      sizes=(min(x.shape[0], 2),) + x.shape[1:])
        bind(P["assign"], region, y)
        buf = bind(P["copy"], x)
        bind(P["assign"], buf, y)
        return x, buf
    return program


def _call_samples(m: Inputs) -> list[Sample]:
    return [call(m.normal((3,)), m.normal((3,))), call(m.normal(()), m.normal(())),
            call(m.normal((0,)), m.normal((0,)))]


def _call_program(name: str, params: dict) -> Callable:
    """A sub-graph called as one node (jit inlines it before fusion)."""
    def body(x, y):
        return [np.sin(x) * y, x + y]

    def program(x, y):
        graph = tx.make_graph(body)(np.zeros(x.shape, x.dtype), np.zeros(y.shape, y.dtype))
        return bind(P["call"], x, y, graph=graph)
    return program


def _remat_program(name: str, params: dict) -> Callable:
    """A checkpointed sub-graph (jit inlines it), or a barrier (x, aliased once y's sum is
    there)."""
    def body(x, y):
        return [np.sin(x) * y, x + y]

    def program(x, y):
        if name == "optimization_barrier":
            return [bind(P[name], x, np.sum(y)), y]
        graph = tx.make_graph(body)(np.zeros(x.shape, x.dtype), np.zeros(y.shape, y.dtype))
        return bind(P["remat"], x, y, graph=graph, policy="nothing_saveable",
                    prevent_cse=True, num_saved=0)
    return program


def _custom_program(name: str, params: dict) -> Callable:
    """A function with a user derivative rule: one custom_jvp_call / custom_vjp_call node
    (jit compiles its primal function)."""
    def body(x, y):
        return np.sin(x) * y, x + y

    if name == "custom_jvp_call":
        f = tx.custom_jvp(body)
        f.defjvp(lambda p, t: (body(*p), (np.cos(p[0]) * p[1] * t[0] + np.sin(p[0]) * t[1],
                                          t[0] + t[1])))
    else:
        f = tx.custom_vjp(body)
        f.defvjp(lambda x, y: (body(x, y), (x, y)),
                 lambda r, g: (np.cos(r[0]) * r[1] * g[0] + g[1], np.sin(r[0]) * g[0] + g[1]))
    return lambda x, y: list(f(x, y))


def _control_samples(m: Inputs) -> list[Sample]:
    """A carry and a stack of steps: vectors, 0-d (0-d steps), no steps (size 0)."""
    return [call(m.normal((3,)), m.normal((4, 3))), call(m.normal(()), m.normal((4,))),
            call(m.normal((3,)), m.normal((0, 3)))]


def _control_program(name: str, params: dict) -> Callable:
    """One cond (on the data), while_loop (a data-dependent trip count) or scan node."""
    from transfuse import lax

    def program(x, xs):
        if name == "scan":
            return list(lax.scan(lambda c, e: (np.sin(c) * e + c, c * e), x, xs))
        if name == "cond":
            return lax.cond(x.sum() < xs.sum(), lambda a, b: [np.sin(a) * b.sum(), a + 1],
                            lambda a, b: [a, a * 2], x, xs)
        trips = (xs.sum() > 0).astype(np.int32) + 2
        return list(lax.while_loop(lambda c: c[1] < trips,
                                   lambda c: (np.sin(c[0]) * 0.5 + c[0], c[1] + 1),
                                   (x, np.int32(0))))
    return program


# ---------------------------------------------------------------------------------------
# The table: one entry per primitive

UNARY_FLOAT, UNARY_NUMERIC, UNARY_BOOL = "unary-float", "unary-numeric", "unary-to-bool"
BINARY, COMPARE = "binary", "compare-logical"
REDUCE, SCAN, CONTRACT = "reductions", "scans", "contractions"
SHAPE, INDEX, CREATE, RANDOM = "shapes", "indexing", "creation", "random"
EFFECTS = "views-calls"
LINALG, SMALL_LINALG = "linalg", "linalg-per-thread"
# Families the CUDA backend refuses when a program is built (tests/test_coverage.py checks
# the refusal instead of PTX; the simulator does not run them), and why.
FFT = "fft"
SORT = "sort"
CONTROL = "control-flow"
HOST_ONLY = {CONTROL: "control flow on arrays has no CUDA kernel (on numbers, a vmapped cond or "
                      "while_loop's lanes, it has: tests/test_control_lowering.py): "
                      "jit(device='cuda') raises CompileError naming the primitive when the "
                      "program is built",
             LINALG: "these np.linalg primitives have no CUDA kernel yet: jit(device='cuda') "
                     "raises CompileError naming the function when the program is built",
             FFT: "the Fourier transform has no CUDA kernel yet: jit(device='cuda') raises "
                  "CompileError naming it when the program is built",
             SORT: "sorting has no CUDA kernel yet: jit(device='cuda') raises CompileError "
                   "naming it when the program is built"}


def _fft_samples(m: Inputs) -> list[Sample]:
    """Real dtypes: rfft (and irfft of its result, see _fft_program); complex: fft, ifft.
    One and two trailing axes, an odd length, an empty stack (lengths are positive)."""
    if m.dtype.kind == "f":
        return [call(m.normal((3, 4)), fft_type="rfft", fft_lengths=(4,)),
                call(m.normal((2, 3, 5)), fft_type="irfft", fft_lengths=(3, 5)),
                call(m.normal((0, 4)), fft_type="rfft", fft_lengths=(4,))]
    return [call(m.normal((3, 4)), fft_type="fft", fft_lengths=(4,)),
            call(m.normal((2, 3, 5)), fft_type="ifft", fft_lengths=(3, 5)),
            call(m.normal((0, 4)), fft_type="fft", fft_lengths=(4,))]


def _sort_samples(m: Inputs) -> list[Sample]:
    """One key with the permutation (rows long enough for the radix sort; ties among ints
    and bools), two keys over a stack of short rows (merge sort) carrying a third operand,
    a 1-d row, an empty stack."""
    return [call(m.normal((3, 150)), num_keys=1, permutation=True),
            call(m.small((2, 3, 5)), m.normal((2, 3, 5)), m.normal((2, 3, 5)), num_keys=2,
                 permutation=False),
            call(m.normal((7,)), num_keys=1, permutation=False),
            call(m.normal((0, 4)), num_keys=1, permutation=True)]


def _fft_program(name: str, params: dict) -> Callable:
    """The transform; an irfft of real samples takes the rfft of its input first."""
    if params["fft_type"] != "irfft":
        return binds(name, params)
    forward = dict(params, fft_type="rfft")
    return lambda x: bind(P[name], bind(P[name], x, **forward), **params)

CATALOGUE: dict[str, Entry] = {
    # Elementwise unary
    "exp": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "expm1": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "log": Entry(UNARY_FLOAT, elementwise("positive"), FLOATS + WIDE_COMPLEX),
    "log1p": Entry(UNARY_FLOAT, elementwise("positive"), FLOATS + WIDE_COMPLEX),
    "sqrt": Entry(UNARY_FLOAT, elementwise("positive"), FLOATS + WIDE_COMPLEX),
    "rsqrt": Entry(UNARY_FLOAT, elementwise("positive"), FLOATS + WIDE_COMPLEX),
    "sin": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "cos": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "tan": Entry(UNARY_FLOAT, elementwise("unit"), FLOATS + WIDE_COMPLEX),
    "arcsin": Entry(UNARY_FLOAT, elementwise("unit"), FLOATS + WIDE_COMPLEX),
    "arccos": Entry(UNARY_FLOAT, elementwise("unit"), FLOATS + WIDE_COMPLEX),
    "arctan": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "sinh": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "cosh": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "tanh": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "arcsinh": Entry(UNARY_FLOAT, elementwise("normal"), FLOATS + WIDE_COMPLEX),
    "arccosh": Entry(UNARY_FLOAT, elementwise("above_one"), FLOATS + WIDE_COMPLEX),
    "arctanh": Entry(UNARY_FLOAT, elementwise("unit"), FLOATS + WIDE_COMPLEX),
    "logistic": Entry(UNARY_FLOAT, elementwise("normal")),
    "erf": Entry(UNARY_FLOAT, elementwise("normal")),
    # scipy.special's (ndtri maps the unit samples into (0.05, 0.95))
    "erfc": Entry(UNARY_FLOAT, elementwise("normal")),
    "erf_inv": Entry(UNARY_FLOAT, elementwise("unit")),
    "ndtr": Entry(UNARY_FLOAT, elementwise("normal")),
    "ndtri": Entry(UNARY_FLOAT, elementwise("unit"),
                   program=lambda name, params: lambda p: bind(P[name], p * 0.5 + 0.5)),
    "lgamma": Entry(UNARY_FLOAT, elementwise("positive")),
    "log_ndtr": Entry(UNARY_FLOAT, elementwise("normal")),
    "digamma": Entry(UNARY_FLOAT, elementwise("positive")),
    "bessel_i0e": Entry(UNARY_FLOAT, elementwise("normal")),
    "bessel_i1e": Entry(UNARY_FLOAT, elementwise("normal")),
    "zeta": Entry(BINARY, broadcasting("above_one", "positive")),
    "floor": Entry(UNARY_FLOAT, elementwise("scaled")),
    "ceil": Entry(UNARY_FLOAT, elementwise("scaled")),
    "round": Entry(UNARY_FLOAT, elementwise("scaled")),
    "reciprocal": Entry(UNARY_FLOAT, elementwise("nonzero"), FLOATS + WIDE_COMPLEX),
    "neg": Entry(UNARY_NUMERIC, elementwise("normal"), NUMERIC + WIDE_COMPLEX),
    "abs": Entry(UNARY_NUMERIC, elementwise("normal"), NUMERIC + WIDE_COMPLEX),
    "sign": Entry(UNARY_NUMERIC, elementwise("normal"), NUMERIC + WIDE_COMPLEX),
    "square": Entry(UNARY_NUMERIC, elementwise("normal"), NUMERIC + WIDE_COMPLEX),
    "integer_pow": Entry(UNARY_NUMERIC, _integer_pow, NUMERIC + WIDE_COMPLEX),
    "not": Entry(UNARY_NUMERIC, elementwise("normal"), INTEGRAL),
    "isnan": Entry(UNARY_BOOL, elementwise("special"), FLOATS + WIDE_COMPLEX),
    "isinf": Entry(UNARY_BOOL, elementwise("special"), FLOATS + WIDE_COMPLEX),
    "isfinite": Entry(UNARY_BOOL, elementwise("special"), FLOATS + WIDE_COMPLEX),
    # Elementwise binary
    "add": Entry(BINARY, broadcasting("normal", "normal"), NUMERIC + WIDE_COMPLEX),
    "sub": Entry(BINARY, broadcasting("normal", "normal"), NUMERIC + WIDE_COMPLEX),
    "mul": Entry(BINARY, broadcasting("normal", "normal"), NUMERIC + WIDE_COMPLEX),
    "div": Entry(BINARY, broadcasting("normal", "nonzero"), FLOATS + WIDE_COMPLEX),
    "floor_div": Entry(BINARY, broadcasting("normal", "nonzero"), NUMERIC),
    "mod": Entry(BINARY, broadcasting("normal", "nonzero"), NUMERIC),
    "pow": Entry(BINARY, _pow, NUMERIC + WIDE_COMPLEX),
    "max": Entry(BINARY, broadcasting("normal", "normal"), NUMERIC),
    "min": Entry(BINARY, broadcasting("normal", "normal"), NUMERIC),
    "arctan2": Entry(BINARY, broadcasting("normal", "nonzero")),
    "select": Entry(BINARY, _select, ALL + WIDE_COMPLEX),
    "clip": Entry(BINARY, _clip, NUMERIC),
    "eq": Entry(COMPARE, broadcasting("normal", "normal"), ALL + WIDE_COMPLEX),
    "ne": Entry(COMPARE, broadcasting("normal", "normal"), ALL + WIDE_COMPLEX),
    "lt": Entry(COMPARE, broadcasting("normal", "normal"), ALL + WIDE_COMPLEX),
    "le": Entry(COMPARE, broadcasting("normal", "normal"), ALL + WIDE_COMPLEX),
    "gt": Entry(COMPARE, broadcasting("normal", "normal"), ALL + WIDE_COMPLEX),
    "ge": Entry(COMPARE, broadcasting("normal", "normal"), ALL + WIDE_COMPLEX),
    "and": Entry(COMPARE, broadcasting("normal", "normal"), INTEGRAL),
    "or": Entry(COMPARE, broadcasting("normal", "normal"), INTEGRAL),
    "xor": Entry(COMPARE, broadcasting("normal", "normal"), INTEGRAL),
    "cast": Entry(UNARY_NUMERIC, _cast, ALL + WIDE_COMPLEX),
    # Complex parts
    "real": Entry(UNARY_NUMERIC, elementwise("normal"), COMPLEX),
    "imag": Entry(UNARY_NUMERIC, elementwise("normal"), COMPLEX),
    "conj": Entry(UNARY_NUMERIC, elementwise("normal"), COMPLEX),
    "complex": Entry(BINARY, broadcasting("normal", "normal")),
    "copy": Entry(SHAPE, elementwise("normal"), MOVES),
    # Reductions, scans, arg-reductions
    "reduce_sum": Entry(REDUCE, _sum, NUMERIC + WIDE_COMPLEX),
    "reduce_prod": Entry(REDUCE, _product, NUMERIC + WIDE_COMPLEX),
    "reduce_max": Entry(REDUCE, reduction, ALL),
    "reduce_min": Entry(REDUCE, reduction, ALL),
    "argmax": Entry(SCAN, _arg_reduction, NUMERIC),
    "argmin": Entry(SCAN, _arg_reduction, NUMERIC),
    "cumsum": Entry(SCAN, _scan("normal"), NUMERIC + WIDE_COMPLEX),
    "cumprod": Entry(SCAN, _scan("small"), NUMERIC + WIDE_COMPLEX),
    # Contractions
    "dot_general": Entry(CONTRACT, _dot_general, NUMERIC + WIDE_COMPLEX),
    "conv": Entry(CONTRACT, _conv, FLOATS + WIDE_COMPLEX),
    # Shapes
    "reshape": Entry(SHAPE, _reshape, MOVES),
    "transpose": Entry(SHAPE, _transpose, MOVES),
    "broadcast_in_dim": Entry(SHAPE, _broadcast_in_dim, MOVES),
    "squeeze": Entry(SHAPE, _squeeze, MOVES),
    "expand_dims": Entry(SHAPE, _expand_dims, MOVES),
    "concatenate": Entry(SHAPE, _concatenate, MOVES),
    "pad": Entry(SHAPE, _pad, MOVES),
    "slice": Entry(SHAPE, _slice, MOVES),
    # Indexing
    "update_slice": Entry(INDEX, _update_slice, MOVES),
    "dynamic_slice": Entry(INDEX, _dynamic_slice, MOVES),
    "dynamic_update_slice": Entry(INDEX, _dynamic_update_slice, MOVES),
    "gather": Entry(INDEX, _gather, MOVES),
    "scatter_add": Entry(INDEX, _scatter, NUMERIC),
    "scatter": Entry(INDEX, _scatter, MOVES),
    # Creation and random numbers
    "iota": Entry(CREATE, _iota, NUMERIC),
    "full": Entry(CREATE, _full, ALL),
    "random_uniform": Entry(RANDOM, _draws),
    "random_normal": Entry(RANDOM, _draws),
    "random_fold_in": Entry(RANDOM, _fold_in, KEYS),
    "random_split": Entry(RANDOM, _split, KEYS),
    # Linear algebra
    "cholesky": Entry(SMALL_LINALG, _matrices("spd")),  # CUDA: a thread a matrix
    "triangular_solve": Entry(LINALG, _triangular_solves),
    "solve": Entry(SMALL_LINALG, _solves),
    "slogdet": Entry(LINALG, _matrices("invertible")),
    "eigh": Entry(LINALG, _matrices("spd"), program=_signs_fixed),
    "svd": Entry(LINALG, _rectangular, program=_signs_fixed),
    "qr": Entry(LINALG, _qr_samples, program=_signs_fixed),
    "lu": Entry(LINALG, _matrices("invertible")),
    # complex expm: tests/test_expm.py (each dtype compiles the kernel anew: seconds each)
    "expm": Entry(LINALG, _exponentials, FLOATS),
    "fft": Entry(FFT, _fft_samples, FLOATS + WIDE_COMPLEX, program=_fft_program),
    "sort": Entry(SORT, _sort_samples, ALL),
    # Views, mutation, calls
    "view_slice": Entry(EFFECTS, _views, MOVES, program=_view_program),
    "view_reshape": Entry(EFFECTS, _views, MOVES, program=_view_program),
    "view_transpose": Entry(EFFECTS, _views, MOVES, program=_view_program),
    "view_broadcast": Entry(EFFECTS, _views, MOVES, program=_view_program),
    "assign": Entry(EFFECTS, _assign_samples, MOVES, program=_assign_program),
    "call": Entry(EFFECTS, _call_samples, program=_call_program),
    # User derivative rules (ir/custom.py)
    "stop_gradient": Entry(UNARY_NUMERIC, elementwise("normal"), FLOATS),
    "custom_jvp_call": Entry(EFFECTS, _call_samples, program=_custom_program),
    "custom_vjp_call": Entry(EFFECTS, _call_samples, program=_custom_program),
    # Checkpointing (ir/remat.py)
    "remat": Entry(EFFECTS, _call_samples, program=_remat_program),
    "optimization_barrier": Entry(EFFECTS, _call_samples, program=_remat_program),
    # Structured control flow (ir/control.py)
    "cond": Entry(CONTROL, _control_samples, program=_control_program),
    "while_loop": Entry(CONTROL, _control_samples, program=_control_program),
    "scan": Entry(CONTROL, _control_samples, program=_control_program),
}

# Primitives that need no entry, and why.
NO_ENTRY = {
    "fused": "made by the fusion pass (compiler/fusion.py) after every transform; every "
             "compiled catalogue program runs it",
    "aot_compiled": "made by transfuse.compile's aot functions (a graph and its compiled "
                    "callable); tests/test_aot_autograd.py runs it under grad, vmap and jit",
    **dict.fromkeys(MADE_BY_JIT, "made by jit's optimiser after every transform; "
                                 "tests/test_linalg_rewrites.py compiles programs that reach "
                                 "it"),
}


# ---------------------------------------------------------------------------------------
# Programs of many samples: one compile for a family (tests/test_coverage.py)

ALL_SAMPLES_DTYPE = "float64"


def families() -> dict[str, list[tuple[str, str]]]:
    """Each catalogue family's (primitive, dtype) pairs."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, entry in CATALOGUE.items():
        out.setdefault(entry.family, []).extend((name, dtype) for dtype in entry.dtypes)
    return out


def combined(pairs: Iterable[tuple[str, str]]) -> tuple[Callable, list[np.ndarray]]:
    """One function computing the samples of the (primitive, dtype) pairs, and its
    arguments: each distinct input array once (samples share them, see Inputs).

    Every sample in ALL_SAMPLES_DTYPE, the first (the usual shape) in the other dtypes:
    Numba's compile time grows by about 60 ms a returned array, and the 0-d and size-0
    paths of the lowering do not depend on the dtype.
    """
    shared: dict = {}
    parts = [p for name, dtype in pairs for p in sample_programs(
        name, dtype, shared=shared, first_only=dtype != ALL_SAMPLES_DTYPE)]
    args: list[np.ndarray] = []
    position: dict[int, int] = {}  # id of an input array -> its argument number
    for _, sample_args in parts:
        for a in sample_args:
            if id(a) not in position:
                position[id(a)] = len(args)
                args.append(a)

    def program(*flat):
        outs = []
        for f, sample_args in parts:
            out = f(*(flat[position[id(a)]] for a in sample_args))
            outs += list(out) if isinstance(out, (list, tuple)) else [out]
        return tuple(outs)
    return program, args


def copies(args: list[np.ndarray]) -> list[np.ndarray]:
    return [np.array(a, copy=True) for a in args]  # programs may write into their inputs


def reference(f: Callable, args: list[np.ndarray]) -> tuple:
    """f on the reference interpreter (the interpreter itself, even under pytest --jit)."""
    graph = tx.make_graph(f)(*copies(args))
    verify(graph)
    return tuple(interpret(graph, copies(args)))
