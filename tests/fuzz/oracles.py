"""Modes: one way transfuse runs a program, each with the oracle it is checked against.

Every mode returns a `Check`: what transfuse gave, what the oracle says the dtypes and
shapes are (`expected`, in the program's own dtypes), and the values to compare against
(`reference`, computed more precisely where there is a way to). `compare` then demands
identical pytrees, shapes and dtypes, exact integers and booleans, NaNs in the same
places, and floats within a tolerance (see `tolerance`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from transfuse.ir import interpret, verify

import transfuse as tx

from .programs import Program, complex_twin

HIGHER = {np.dtype(np.float32): np.float64, np.dtype(np.float64): np.longdouble}
NP_ERROR_FACTOR = 8  # transfuse may be this many times further from the truth than NumPy
ULPS_PER_STEP = 4  # and this many ulps per rounding step besides (mathlib, FMA, order)
# Derivatives against JAX: no more precise oracle gauges their conditioning (1 - tanh(u)**2
# for a large u keeps few digits in both), so a relative floor: rules that are wrong are
# wrong by far more.
DERIVATIVE_RTOL = 1e-7
# ... and an absolute floor: a derivative that cancels to zero (d(x/x)/dx) is 0 exactly in
# transfuse and rounding noise of the cancelled terms' size (about eps) in JAX. A forward
# derivative scales it by its inputs' sizes (tangent_atol).
DERIVATIVE_ATOL = 64 * float(np.finfo(np.float64).eps)


def tangent_atol(primals: Any, tangents: Any) -> float:
    """The absolute floor of a jvp's tangents: DERIVATIVE_ATOL times the largest primal
    and tangent input (at least 1 each). A tangent is a sum of input tangents times
    factors of the primals, and JAX's factor can be a few ulps off where a function
    saturates: its tanh(19.36) is 1 - 7 ulps, not 1.0, so its 1 - tanh**2 is 1.6e-15
    where the exact sech**2 is 6e-17 (session 13's campaign, seed 18000)."""
    def top(xs: Any) -> float:
        sizes = [float(np.max(np.abs(x))) for x in map(np.asarray, tx.tree_leaves(xs))
                 if x.size and np.isfinite(x).all()]
        return max([1.0, *sizes])
    return DERIVATIVE_ATOL * top(primals) * top(tangents)


class Mismatch(AssertionError):
    """transfuse and the oracle disagree."""


class OracleSkip(Exception):
    """The oracle cannot judge this case (not a transfuse failure)."""


@dataclass
class Check:
    got: Any
    expected: Any  # gives the dtypes and shapes (and integer values)
    reference: Any  # the values floats are compared with (more precise when possible)
    measured: Any = None  # the same computation in the program's dtype, to gauge rounding
    cost: int = 1
    rtol: float = 0.0  # a relative floor where nothing gauges the conditioning
    atol: float = 0.0  # an absolute floor (derivatives: see DERIVATIVE_ATOL)
    eps: float = 0.0  # a floor under the output dtype's eps: the program's least precise
    # type (a cast to complex64 in a float64 program rounds there; Program.narrowest_eps)


@dataclass
class Case:
    program: Program
    mode: str
    seed: int

    def describe(self) -> str:
        kind = " kind=complex" if self.program.kind == "complex" else ""
        return f"mode={self.mode} seed={self.seed}{kind}\n{self.program.source()}"


@contextlib.contextmanager
def quiet() -> Any:
    """NumPy's warnings off: empty means and the like warn, and give NaN as expected."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def maybe_jit(f: Callable, jit: bool) -> Callable:
    return tx.jit(f, cache=False) if jit else f


# ---------------------------------------------------------------------------------------
# comparison


def tolerance(ref: np.ndarray, measured: np.ndarray | None, eps: float, cost: int,
              rtol: float = 0.0, atol: float = 0.0) -> Any:
    """How far from the reference a result may be, elementwise.

    NumPy's own distance from the precise reference (its largest over the output) gauges
    the program's conditioning, cancellation included; on top, a few ulps per rounding
    step of the reference's size (relative to the largest element: a small element of a
    sum or a product is as uncertain as the large ones around it).
    """
    ref = wide(ref)
    finite = np.isfinite(ref)
    top = float(np.max(np.abs(ref[finite]))) if finite.any() else 0.0
    np_err = 0.0
    if measured is not None:
        diff = np.abs(wide(measured) - ref)[finite & np.isfinite(measured)]
        np_err = float(diff.max()) if diff.size else 0.0
    relative = max(ULPS_PER_STEP * cost * eps, rtol)
    return NP_ERROR_FACTOR * np_err + relative * (np.abs(ref) + top) + atol


def compare(check: Check, what: str = "result") -> None:
    got_leaves, got_tree = tx.tree_flatten(check.got)
    exp_leaves, exp_tree = tx.tree_flatten(check.expected)
    if got_tree != exp_tree:
        raise Mismatch(f"{what}: structure {got_tree} != {exp_tree}")
    ref_leaves = tx.tree_leaves(check.reference)
    measured = tx.tree_leaves(check.measured) if check.measured is not None else \
        [None] * len(exp_leaves)
    for i, (got, exp, ref, meas) in enumerate(zip(got_leaves, exp_leaves, ref_leaves,
                                                  measured)):
        _compare_leaf(np.asarray(got), np.asarray(exp), np.asarray(ref), meas, check,
                      f"{what}[{i}]")


def _compare_leaf(got: np.ndarray, exp: np.ndarray, ref: np.ndarray, meas: Any,
                  check: Check, what: str) -> None:
    if got.shape != exp.shape or got.dtype != exp.dtype:
        raise Mismatch(f"{what}: got {got.dtype}{list(got.shape)}, "
                       f"NumPy gives {exp.dtype}{list(exp.shape)}")
    if exp.dtype.kind in "biu":
        if not np.array_equal(got, exp):
            raise Mismatch(f"{what}: integers differ\n got {got}\n expected {exp}")
        return
    parts = ((got.real, ref.real), (got.imag, ref.imag)) if exp.dtype.kind == "c" else \
        ((got, ref),)
    for got_part, ref_part in parts:
        _same_specials(got_part, ref_part, what)
    eps = max(float(np.finfo(exp.dtype).eps), check.eps)
    tol = tolerance(ref, meas, eps, check.cost, check.rtol, check.atol)
    finite = np.isfinite(wide(ref))
    err = np.abs(wide(got) - wide(ref))
    bad = finite & ~(err <= tol)
    if bad.any():
        k = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(tol, 1e-300), 0)),
                             bad.shape) if bad.ndim else ()
        raise Mismatch(f"{what}: {int(bad.sum())} of {bad.size} values off; worst at {k}: "
                       f"got {got[k]!r}, reference {wide(ref)[k]!r}, error {err[k]:.3g} > "
                       f"tolerance {float(np.broadcast_to(tol, bad.shape)[k]):.3g}")


def _same_specials(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    """NaN and +-inf in the same places (of a real array, or one part of a complex one)."""
    for test, label in ((np.isnan, "NaN"), (np.isposinf, "+inf"), (np.isneginf, "-inf")):
        if not np.array_equal(test(got), test(np.asarray(ref, np.float64))):
            raise Mismatch(f"{what}: {label} in different places\n got {got}\n expected {ref}")


def wide(a: Any) -> np.ndarray:
    """a as float64, or complex128 if it is complex (for comparisons)."""
    a = np.asarray(a)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


# ---------------------------------------------------------------------------------------
# inputs and references


def as_tuple(out: Any) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def to_numpy(tree: Any) -> Any:
    return tx.tree_map(np.asarray, tree)


def raised(args: list, dtype: Any) -> list:
    """The arguments with every float (complex) array in a more precise (complex) dtype."""
    return [a.astype(dtype) if a.dtype.kind == "f" else
            a.astype(complex_twin(dtype)) if a.dtype.kind == "c" else a.copy() for a in args]


def numpy_run(program: Program, args: list, precise: bool = False) -> tuple[tuple, list]:
    """The program on copies of args in NumPy: (outputs, the arguments afterwards)."""
    if precise:
        dtype = HIGHER[program.float_dtype]
        args = raised(args, dtype)
        f = program.build(np, dtype, reference=True)
    else:
        args = [a.copy() for a in args]
        f = program.build(np, reference=True)
    with quiet():
        return as_tuple(f(*args)), args


def forward_check(program: Program, got: Any, args: list) -> Check:
    expected, after = numpy_run(program, args)
    reference, ref_after = numpy_run(program, args, precise=True)
    if program.kind == "mutation":  # the caller's arrays are results too
        return Check(got, (expected, after), (reference, ref_after), (expected, after),
                     program.cost, eps=program.narrowest_eps())
    return Check(got, expected, reference, expected, program.cost,
                 eps=program.narrowest_eps())


# ---------------------------------------------------------------------------------------
# modes: forward


def mode_eager(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    """The traced graph on the reference interpreter (or jit) against NumPy."""
    program = case.program
    args = program.make_inputs(rng)
    f = program.build(np)
    mine = [a.copy() for a in args]
    if jit:
        jitted = tx.jit(f, cache=False)
        jitted(*program.make_inputs(rng))  # compiled for contiguous arrays first
        mine = [relayout(rng, a, program.mutates_inputs) for a in args]
        out = as_tuple(jitted(*mine))
        mine = [np.asarray(a).copy() for a in mine]
    else:
        graph = tx.make_graph(f)(*mine)
        verify(graph)
        out = tuple(interpret(graph, mine + [None] * (len(graph.inputs) - len(mine))))
    got = (to_numpy(out), mine) if program.kind == "mutation" else to_numpy(out)
    return forward_check(program, got, args)


def relayout(rng: np.random.Generator, a: np.ndarray, writable: bool) -> Any:
    """a's values in another memory layout: Fortran order, negative or gapped strides, or
    a NumPy scalar for a 0-d array (what a signature cache must tell apart)."""
    r = rng.random()
    a = a.copy()  # never the oracle's array (asfortranarray of a vector returns it)
    if a.ndim == 0:
        return a[()] if r < 0.5 and not writable else a.copy()
    if r < 0.25:
        return np.asfortranarray(a)
    if r < 0.5:
        return np.flip(np.flip(a).copy())
    if r < 0.75:
        spaced = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        spaced[..., ::2] = a
        return spaced[..., ::2]
    return a.copy()


def mode_functionalize(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    """functionalize(f) against eager mutation: outputs and the arguments afterwards."""
    program = case.program
    args = program.make_inputs(rng)
    mine = [relayout(rng, a, program.mutates_inputs) for a in args]
    out = as_tuple(maybe_jit(tx.functionalize(program.build(np)), jit)(*mine))
    return forward_check(program, (to_numpy(out), [np.asarray(a).copy() for a in mine]), args)


# ---------------------------------------------------------------------------------------
# modes: vmap


@dataclass
class Batch:
    size: int
    in_dims: tuple
    out_dims: int
    examples: list  # per entry, the arguments of one call
    batched: list  # the arguments vmap gets


def make_batch(program: Program, rng: np.random.Generator, out_ndim: int,
               like: Batch | None = None) -> Batch:
    """A batch of random size and in_dims (like's in_dims and out_dims, if given)."""
    size = int(rng.choice([0, 1, 2, 3, 4], p=[0.05, 0.15, 0.3, 0.3, 0.2]))
    dims = [_in_dim(rng, len(v.shape)) for v in program.inputs]
    if all(d is None for d in dims):
        dims[int(rng.integers(len(dims)))] = 0
    if like is not None:  # another batch size for the same compiled function
        size, dims = like.size + int(rng.integers(1, 6)), list(like.in_dims)
    shared = program.make_inputs(rng)
    examples = [[shared[j] if d is None else x for j, (d, x) in
                 enumerate(zip(dims, program.make_inputs(rng)))] for _ in range(size)]
    batched = [shared[j] if d is None else _stack([e[j] for e in examples], d, shared[j])
               for j, d in enumerate(dims)]
    out_dims = int(rng.choice([0, 0, -1])) if out_ndim >= 0 else 0
    if like is not None:
        out_dims = like.out_dims
    return Batch(size, tuple(dims), out_dims, examples, batched)


def _in_dim(rng: np.random.Generator, ndim: int) -> int | None:
    r = rng.random()
    if r < 0.2:
        return None
    if r < 0.6:
        return 0
    return int(rng.integers(-ndim - 1, ndim + 1))


def _stack(arrays: list, axis: int, like: np.ndarray) -> np.ndarray:
    if arrays:
        return np.stack(arrays, axis=axis)
    return np.moveaxis(np.empty((0,) + like.shape, like.dtype), 0, axis)


def loop_reference(program: Program, batch: Batch, precise: bool, probe: list) -> tuple:
    """vmap's oracle: the program on each entry in turn, results stacked."""
    rows = [numpy_run(program, ex, precise)[0] for ex in batch.examples]
    like = numpy_run(program, probe, precise)[0]
    return tuple(_stack([r[i] for r in rows], batch.out_dims, np.asarray(like[i]))
                 for i in range(len(like)))


def mode_vmap(case: Case, rng: np.random.Generator, jit: bool = False,
              functionalize: bool = False) -> Check:
    program = case.program
    probe = program.make_inputs(rng)
    batch = make_batch(program, rng, 0)
    f = program.build(np)
    if functionalize:
        f = tx.functionalize(f)
    chunk = [None, None, 1, 2][int(rng.integers(4))]
    vf = maybe_jit(tx.vmap(f, in_dims=batch.in_dims, out_dims=batch.out_dims,
                           chunk_size=chunk), jit)
    batches = [batch]
    if jit:  # a second batch size: the kernel compiled for the first may serve it
        batches.append(make_batch(program, rng, 0, like=batch))
    got, expected, reference = (), (), ()
    for b in batches:
        got += as_tuple(vf(*[relayout(rng, a, False) for a in b.batched]))
        expected += loop_reference(program, b, False, probe)
        reference += loop_reference(program, b, True, probe)
    return Check(to_numpy(got), expected, reference, expected, program.cost,
                 eps=program.narrowest_eps())


# ---------------------------------------------------------------------------------------
# modes: derivatives (float64 programs; JAX in float64 and finite differences as oracles)


def jax_modules() -> tuple[Any, Any] | None:
    """(jax, jax.numpy) with float64 enabled, or None where JAX is not installed."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax, jnp


@dataclass
class Diff:
    """A program made differentiable: which outputs count, and how they become a scalar."""

    args: list
    argnums: int | tuple[int, ...]
    float_outputs: list[int]  # the float (and complex) outputs
    weights: list[np.ndarray]
    squares: tuple[bool, ...] = ()  # per output: a complex one enters as w |o|^2

    def scalar(self, f: Callable, xp: Any) -> Callable:
        def loss(*args: Any) -> Any:
            outs = as_tuple(f(*args))
            return self.combine([outs[i] for i in self.float_outputs], xp)
        return loss

    def combine(self, outs: list, xp: Any) -> Any:
        """A real number from the float outputs: sum(w o), real(sum(w o)) or sum(w |o|^2)."""
        total = 0.0
        for k, (o, w) in enumerate(zip(outs, self.weights)):
            if k < len(self.squares) and self.squares[k]:
                total = total + xp.sum(xp.abs(o) ** 2 * w.real)
            elif np.iscomplexobj(w):
                total = total + xp.sum(xp.real(o * w))
            else:
                total = total + xp.sum(o * w)
        return total

    def floats(self, f: Callable) -> Callable:
        return lambda *args: tuple(as_tuple(f(*args))[i] for i in self.float_outputs)


def make_diff(program: Program, rng: np.random.Generator, batch: tuple = ()) -> Diff:
    if program.float_dtype != np.float64:
        raise OracleSkip("derivatives are checked on float64 programs")
    floats = [i for i, v in enumerate(program.inputs) if v.kind in "fc"]
    outs, _ = numpy_run(program, program.make_inputs(rng))
    keep = [i for i, o in enumerate(outs) if np.asarray(o).dtype.kind in "fc"]
    if not floats or not keep:
        raise OracleSkip("no float input or output")
    picked = sorted(int(i) for i in rng.choice(floats, size=int(rng.integers(1, len(floats) + 1)),
                                               replace=False))
    argnums = picked[0] if len(picked) == 1 and rng.random() < 0.6 else tuple(picked)
    weights = [rng.uniform(-1, 1, size=batch + np.shape(outs[i])) for i in keep]
    if program.kind != "complex":
        return Diff(program.make_inputs(rng), argnums, keep, weights)
    complex_out = [np.iscomplexobj(outs[i]) for i in keep]
    weights = [w + 1j * rng.uniform(-1, 1, size=w.shape) if c else w
               for w, c in zip(weights, complex_out)]
    squares = tuple(bool(c and rng.random() < 0.3) for c in complex_out)
    return Diff(program.make_inputs(rng), argnums, keep, weights, squares)


def jax_program(case: Case) -> tuple[Any, Callable]:
    mods = jax_modules()
    if mods is None or case.program.kind == "mutation":
        raise OracleSkip("no JAX oracle for this program")
    jax, jnp = mods
    return jax, case.program.build(jnp, jnp.float64)


def jax_call(jax: Any, fn: Callable, *args: Any) -> Any:
    """fn(*args) under jax.jit: one XLA compile instead of one per primitive and shape."""
    return to_numpy(jax.jit(fn)(*args))


def _argnum_tuple(argnums: int | tuple) -> tuple[int, ...]:
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def finite_difference(f: Callable, args: list, argnums: tuple, direction: list, h: float
                      ) -> Any:
    """Central difference of f at args along direction (one array per argnum)."""
    def moved(sign: float) -> list:
        out = [a.copy() for a in args]
        for k, d in zip(argnums, direction):
            step = args[k] + sign * h * d
            # a 0-d array plus a number is a NumPy scalar, whose fill() does nothing
            out[k] = np.asarray(step) if isinstance(args[k], np.ndarray) else step
        return out
    with quiet():
        plus, minus = f(*moved(1.0)), f(*moved(-1.0))
    return tx.tree_map(lambda p, m: (wide(p) - wide(m)) / (2 * h), plus, minus)


def check_directional(f: Callable, args: list, argnums: tuple, slope: Any,
                      direction: list, what: str) -> None:
    """slope (transfuse's derivative along direction) against two central differences."""
    d1 = finite_difference(f, args, argnums, direction, 1e-5)
    d2 = finite_difference(f, args, argnums, direction, 2e-5)
    for i, (s, a, b) in enumerate(zip(tx.tree_leaves(slope), tx.tree_leaves(d1),
                                      tx.tree_leaves(d2))):
        s, a, b = (wide(t) for t in (s, a, b))
        top = float(np.max(np.abs(a), initial=0.0))
        tol = 10 * np.abs(a - b) + 1e-6 * (np.abs(a) + top) + 1e-9
        bad = ~(np.abs(s - a) <= tol) & np.isfinite(a)
        if bad.any():
            raise Mismatch(f"{what}[{i}]: finite differences disagree: got {s[bad][:4]}, "
                           f"differences give {a[bad][:4]} (h=1e-5) and {b[bad][:4]} (2e-5)")


def _directions(rng: np.random.Generator, args: list, argnums: tuple) -> list:
    return [random_like(rng, args[k]) for k in argnums]


def random_like(rng: np.random.Generator, x: Any) -> np.ndarray:
    """Standard normal values of x's shape; complex (both parts random) when x is."""
    t = rng.standard_normal(np.shape(x))
    if np.iscomplexobj(x):
        return (t + 1j * rng.standard_normal(np.shape(x))).astype(np.asarray(x).dtype)
    return t


def pairing(u: Any, v: Any) -> float:
    """JAX's bilinear pairing of cotangents and tangents: Re(sum(u * v)), no conjugate."""
    return float(np.real(np.sum(np.asarray(u) * np.asarray(v))))


def mode_grad(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    program = case.program
    diff = make_diff(program, rng)
    loss = diff.scalar(program.build(np), np)
    got = to_numpy(maybe_jit(tx.grad(loss, diff.argnums), jit)(*diff.args))
    nums = _argnum_tuple(diff.argnums)
    grads = got if isinstance(diff.argnums, tuple) else (got,)
    try:
        jax, fj = jax_program(case)
    except OracleSkip:
        jax = None
    for _ in range(1 if jax else 3):  # without JAX, differences are the only oracle
        direction = _directions(rng, diff.args, nums)
        slope = sum(pairing(g, d) for g, d in zip(grads, direction))
        check_directional(loss, diff.args, nums, slope, direction, "grad")
    if jax is None:
        expected = tuple(diff.args[k] for k in nums)
        expected = expected if isinstance(diff.argnums, tuple) else expected[0]
        return Check(got, expected, got, None, program.cost)  # values checked above
    ref = jax_call(jax, jax.grad(diff.scalar(fj, jax.numpy), diff.argnums), *diff.args)
    return Check(got, ref, ref, None, 4 * program.cost, DERIVATIVE_RTOL,
                 DERIVATIVE_ATOL)


def mode_jvp(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    program = case.program
    diff = make_diff(program, rng)
    nums = tuple(i for i, v in enumerate(program.inputs) if v.kind in "fc")
    f = diff.floats(program.build(np))

    def of_floats(fn: Callable) -> Callable:
        def g(*floats: Any) -> Any:
            args = list(diff.args)
            for k, x in zip(nums, floats):
                args[k] = x
            return fn(*args)
        return g

    primals = tuple(diff.args[k] for k in nums)
    tangents = tuple(random_like(rng, p) for p in primals)
    run = maybe_jit(lambda p, t: tx.jvp(of_floats(f), p, t), jit)
    got = to_numpy(run(primals, tangents))
    check_directional(f, diff.args, nums, got[1], list(tangents), "jvp")
    expected = numpy_run(program, diff.args)[0]
    expected = tuple(expected[i] for i in diff.float_outputs)
    try:
        jax, fj = jax_program(case)
    except OracleSkip:
        return Check(got, (expected, expected), (expected, got[1]), None, program.cost)
    ref = jax_call(jax, lambda p, t: jax.jvp(of_floats(diff.floats(fj)), p, t), primals,
                   tangents)
    return Check(got, (expected, expected), ref, None, 4 * program.cost, DERIVATIVE_RTOL,
                 tangent_atol(primals, tangents))


def mode_vjp(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    """vjp along random cotangents: Re<ct, jvp(t)> (by differences) == Re<vjp(ct), t>, and
    JAX's vjp (the bilinear transpose, no conjugation)."""
    program = case.program
    diff = make_diff(program, rng)
    nums = _argnum_tuple(diff.argnums)
    f = diff.floats(program.build(np))
    outs = f(*diff.args)
    cts = tuple(random_like(rng, o) for o in outs)
    primals = tuple(diff.args[k] for k in nums)
    pull = maybe_jit(lambda p, ct: tx.vjp(_of_argnums(f, diff.args, nums), *p)[1](ct), jit)
    got = to_numpy(pull(primals, cts))
    direction = _directions(rng, diff.args, nums)
    slope = sum(pairing(g, d) for g, d in zip(got, direction))
    paired = lambda *args: sum(pairing(c, o) for c, o in zip(cts, f(*args)))  # noqa: E731
    check_directional(paired, diff.args, nums, slope, direction, "vjp")
    try:
        jax, fj = jax_program(case)
    except OracleSkip:
        return Check(got, primals, got, None, program.cost)  # values checked above
    fixed = [jax.numpy.asarray(a) for a in diff.args]  # NumPy can't index with a tracer
    their = _of_argnums(diff.floats(fj), fixed, nums)
    ref = jax_call(jax, lambda p, ct: jax.vjp(their, *p)[1](ct), primals, cts)
    return Check(got, ref, ref, None, 4 * program.cost, DERIVATIVE_RTOL, DERIVATIVE_ATOL)


def _of_argnums(f: Callable, args: list, nums: tuple) -> Callable:
    """f as a function of the arguments at nums, the others fixed."""
    def g(*chosen: Any) -> Any:
        full = list(args)
        for k, x in zip(nums, chosen):
            full[k] = x
        return f(*full)
    return g


def mode_vmap_grad(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    program = case.program
    jax, fj = jax_program(case)
    diff = make_diff(program, rng)
    batch = make_batch(program, rng, -1)
    fn = tx.vmap(tx.grad(diff.scalar(program.build(np), np), diff.argnums),
                 in_dims=batch.in_dims)
    got = to_numpy(maybe_jit(fn, jit)(*batch.batched))
    ref = jax_call(jax, jax.vmap(jax.grad(diff.scalar(fj, jax.numpy), diff.argnums),
                                 in_axes=batch.in_dims), *batch.batched)
    return Check(got, ref, ref, None, 4 * program.cost, DERIVATIVE_RTOL,
                 DERIVATIVE_ATOL)


def mode_grad_vmap(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    """grad of a weighted sum of vmap(f)'s outputs."""
    program = case.program
    jax, fj = jax_program(case)
    batch = make_batch(program, rng, -1)
    diff = make_diff(program, rng, batch=(batch.size,))

    def loss(f: Callable, vmap: Callable, xp: Any) -> Callable:
        mapped = vmap(diff.floats(f), batch.in_dims)
        def total(*args: Any) -> Any:
            return diff.combine(list(mapped(*args)), xp)
        return total

    fn = tx.grad(loss(program.build(np), tx.vmap, np), diff.argnums)
    got = to_numpy(maybe_jit(fn, jit)(*batch.batched))
    ref = jax_call(jax, jax.grad(loss(fj, jax.vmap, jax.numpy), diff.argnums), *batch.batched)
    return Check(got, ref, ref, None, 4 * program.cost, DERIVATIVE_RTOL,
                 DERIVATIVE_ATOL)


def mode_jacobian(case: Case, rng: np.random.Generator, jit: bool = False,
                  forward: bool = False) -> Check:
    program = case.program
    jax, fj = jax_program(case)
    diff = make_diff(program, rng)
    first = diff.float_outputs[0]
    pick = lambda f: lambda *a: as_tuple(f(*a))[first]  # noqa: E731
    jac, jax_jac = (tx.jacfwd, jax.jacfwd) if forward else (tx.jacrev, jax.jacrev)
    got = to_numpy(maybe_jit(jac(pick(program.build(np)), diff.argnums), jit)(*diff.args))
    ref = jax_call(jax, jax_jac(pick(fj), diff.argnums), *diff.args)
    return Check(got, ref, ref, None, 4 * program.cost, DERIVATIVE_RTOL,
                 DERIVATIVE_ATOL)


def mode_hessian(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    program = case.program
    jax, fj = jax_program(case)
    diff = make_diff(program, rng)
    k = _argnum_tuple(diff.argnums)[0]
    got = to_numpy(maybe_jit(tx.hessian(diff.scalar(program.build(np), np), k), jit)(*diff.args))
    ref = jax_call(jax, jax.hessian(diff.scalar(fj, jax.numpy), k), *diff.args)
    return Check(got, ref, ref, None, 8 * program.cost, DERIVATIVE_RTOL,
                 DERIVATIVE_ATOL)


def mode_vmap_jvp(case: Case, rng: np.random.Generator, jit: bool = False) -> Check:
    program = case.program
    jax, fj = jax_program(case)
    diff = make_diff(program, rng)
    n = len(program.inputs)
    size = int(rng.integers(1, 4))
    if any(v.kind != "f" for v in program.inputs):
        raise OracleSkip("vmap of jvp is checked with float inputs only")
    primals = [np.stack(ex) for ex in zip(*[program.make_inputs(rng) for _ in range(size)])]
    tangents = [rng.standard_normal(p.shape) for p in primals]

    def mapped(f: Callable, jvp: Callable) -> Callable:
        return lambda *pt: jvp(diff.floats(f), tuple(pt[:n]), tuple(pt[n:]))

    got = to_numpy(maybe_jit(tx.vmap(mapped(program.build(np), tx.jvp)), jit)(*primals,
                                                                                *tangents))
    ref = jax_call(jax, jax.vmap(mapped(fj, jax.jvp)), *primals, *tangents)
    return Check(got, ref, ref, None, 4 * program.cost, DERIVATIVE_RTOL,
                 tangent_atol(primals, tangents))


# ---------------------------------------------------------------------------------------
# the table


def _jitted(mode: Callable, **options: Any) -> Callable:
    return lambda case, rng: mode(case, rng, jit=True, **options)


MODES: dict[str, Callable[[Case, np.random.Generator], Check]] = {
    "eager": mode_eager,
    "jit": _jitted(mode_eager),
    "vmap": mode_vmap,
    "jit(vmap)": _jitted(mode_vmap),
    "functionalize": mode_functionalize,
    "jit(functionalize)": _jitted(mode_functionalize),
    "vmap(functionalize)": lambda case, rng: mode_vmap(case, rng, functionalize=True),
    "grad": mode_grad,
    "jit(grad)": _jitted(mode_grad),
    "jvp": mode_jvp,
    "jit(jvp)": _jitted(mode_jvp),
    "vjp": mode_vjp,
    "jit(vjp)": _jitted(mode_vjp),
    "vmap(grad)": mode_vmap_grad,
    "jit(vmap(grad))": _jitted(mode_vmap_grad),
    "grad(vmap)": mode_grad_vmap,
    "jit(grad(vmap))": _jitted(mode_grad_vmap),
    "jacrev": mode_jacobian,
    "jacfwd": lambda case, rng: mode_jacobian(case, rng, forward=True),
    "jit(jacfwd)": _jitted(mode_jacobian, forward=True),
    "hessian": mode_hessian,
    "vmap(jvp)": mode_vmap_jvp,
    "jit(vmap(jvp))": _jitted(mode_vmap_jvp),
}

FORWARD = ["eager", "jit", "vmap", "jit(vmap)"]
DERIVATIVE = ["grad", "jit(grad)", "jvp", "jit(jvp)", "vmap(grad)", "jit(vmap(grad))",
              "grad(vmap)", "jit(grad(vmap))", "jacrev", "jacfwd", "jit(jacfwd)", "hessian",
              "vmap(jvp)", "jit(vmap(jvp))"]
# complex inputs: jacfwd needs real ones, jacrev and hessian real outputs (holomorphic=True
# is another contract); vjp is checked as the bilinear transpose of the jvp
COMPLEX_DERIVATIVE = ["grad", "jit(grad)", "jvp", "jit(jvp)", "vjp", "jit(vjp)", "vmap(grad)",
                      "jit(vmap(grad))", "grad(vmap)", "jit(grad(vmap))"]


def modes_for(program: Program) -> list[str]:
    """The modes that apply to a program."""
    if program.kind == "large":
        return ["eager", "jit"]
    if program.kind == "complex":
        return FORWARD + COMPLEX_DERIVATIVE if program.smooth else FORWARD
    if program.kind == "mutation":
        modes = ["eager", "jit", "functionalize", "jit(functionalize)"]
        if not program.mutates_inputs:
            modes += ["vmap(functionalize)"]
            modes += ["grad", "jit(grad)", "jvp"] if program.smooth else []
        return modes
    return FORWARD + DERIVATIVE if program.smooth else FORWARD


def run_case(case: Case) -> None:
    """Raises Mismatch (or transfuse's exception) when transfuse is wrong."""
    rng = np.random.default_rng(case.seed)
    check = MODES[case.mode](case, rng)
    compare(check, case.mode)
