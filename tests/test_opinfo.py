"""Every function of the catalogue (tests/opinfo.py) under every transform.

- eager tracing (graph + reference interpreter) against the reference (NumPy);
- jvp against central differences in float64 (float32: against the float64 differences,
  to float32 tolerances, and staying float32);
- vjp against elementwise central differences, and as the transpose of the jvp; second
  order (the backward graph differentiated again);
- jvp and vjp against JAX in float64 (one compiled JAX computation an entry);
- vmap against a Python loop, for each way of batching the arguments;
- jit against the reference interpreter, one compile a chunk of a family (its entries'
  dtypes and samples; equal sample arrays passed once, so the loops that read them fuse);
  a part whose traced graph is one primitive alone that tests/test_coverage.py compiles in
  that dtype (np.sin on float32: `sin` on float32) is that file's compile, not repeated
  here, and a test checks that every part is compiled by one of the two;
- functionalize against the reference, the caller's arrays written as NumPy writes them;
- CUDA: each family's program compiles to PTX (the same division of work with
  tests/test_coverage.py), or the build refuses the function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import pytest
from transfuse.compiler.batching import BATCH_RULES
from transfuse.compiler.functionalize import prepare
from transfuse.compiler.jvp import JVP_RULES
from transfuse.compiler.vjp import vjp_graph
from transfuse.ir import interpret, verify
from transfuse.ir.errors import CompileError, UnsupportedError

import transfuse as tx
from tests import helpers
from tests.catalogue import HOST_ONLY
from tests.catalogue import families as coverage_families
from tests.helpers import COMPILED_TOL, host
from tests.opinfo import (
    INTEGER,
    NO_INPUTS,
    OPS,
    YES,
    ZERO,
    OpInfo,
    Sample,
    differentiable,
    docs_with_table,
    families,
    float_dtypes,
    samples_of,
)

# ---------------------------------------------------------------------------------------
# Parameters


def params(select: Callable[[OpInfo], list[str]]) -> list:
    return [pytest.param(name, d, id=f"{name}-{d}") for name, e in OPS.items()
            for d in select(e)]


EAGER = params(lambda e: list(e.dtypes))
DERIVATIVES = params(lambda e: float_dtypes(e) if differentiable(e) else [])
ZEROS = params(lambda e: float_dtypes(e)[:1] if e.derivative == ZERO else [])
INTEGERS = [n for n, e in OPS.items() if e.derivative == INTEGER]
SECOND = [n for n, e in OPS.items() if differentiable(e)]
VMAP = params(lambda e: list(e.dtypes) if e.derivative != NO_INPUTS else [])


@contextlib.contextmanager
def about(entry: OpInfo, sample: Sample, dtype: str):
    """Failures name the function and the sample."""
    try:
        with np.errstate(all="ignore"):
            yield
    except Exception as e:  # noqa: BLE001 - re-raised with the sample named
        raise AssertionError(f"{entry.name} in {dtype} on {sample.describe()}: "
                             f"{type(e).__name__}: {e}") from e


def copies(args) -> list:
    return [np.array(a, copy=True) if isinstance(a, (np.ndarray, np.generic)) else a
            for a in args]


def leaves(x) -> list[np.ndarray]:
    if isinstance(x, (tuple, list)):
        return [leaf for part in x for leaf in leaves(part)]
    return [host(x)]


def bound(entry: OpInfo, sample: Sample, fn: Callable | None = None) -> Callable:
    """The function of the sample's array arguments (keyword arguments bound)."""
    fn = fn or entry.op
    return lambda *args: fn(*args, **sample.kwargs)


def diff_positions(sample: Sample) -> list[int]:
    return [i for i, a in enumerate(sample.args)
            if isinstance(a, np.ndarray) and a.dtype.kind in "fc"]


def of_diff(entry: OpInfo, sample: Sample, args: list, fn: Callable | None = None) -> Callable:
    """The function of the differentiated arguments, the others fixed at args."""
    positions = diff_positions(sample)
    fn = bound(entry, sample, fn)

    def f(*diff):
        full = list(copies(args))
        for i, x in zip(positions, diff):  # fresh arrays: the function may write into them
            full[i] = np.array(x, copy=True) if isinstance(x, np.ndarray) else x
        return fn(*full)
    return f


def as_float64(args) -> list:
    return [a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)
            if isinstance(a, np.ndarray) and a.dtype.kind in "fc" else a for a in args]


def tolerance(dtype, entry: OpInfo, float64: float, float32: float) -> float:
    return (float32 if np.dtype(dtype) in (np.float32, np.complex64) else float64) * entry.tol


def assert_close(actual, expected, tol: float, what: str = "") -> None:
    a_leaves, e_leaves = leaves(actual), leaves(expected)
    assert len(a_leaves) == len(e_leaves), (what, len(a_leaves), len(e_leaves))
    for i, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        assert a.shape == e.shape, (what, i, a.shape, e.shape)
        if e.dtype.kind in "biu":
            np.testing.assert_array_equal(a, e, err_msg=f"{what} output {i}")
        else:
            scale = 1 + np.max(np.abs(e), initial=0)
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale,
                                       err_msg=f"{what} output {i}")


def random_like(rng, x, symmetric: bool = False) -> np.ndarray:
    x = np.asarray(x)
    t = rng.standard_normal(x.shape)
    if x.dtype.kind == "c":
        t = t + 1j * rng.standard_normal(x.shape)
    if symmetric:
        t = (t + np.swapaxes(t, -1, -2)) / 2
    return t.astype(x.dtype)


def tangents_for(entry: OpInfo, primals: list, rng) -> list[np.ndarray]:
    """Random tangents; a symmetric entry's matrix (its first argument) gets symmetric ones."""
    return [random_like(rng, p, entry.symmetric and k == 0) for k, p in enumerate(primals)]


def float_leaves(x) -> list[np.ndarray]:
    return [v for v in leaves(x) if v.dtype.kind in "fc"]


# ---------------------------------------------------------------------------------------
# Eager tracing


def check_against_reference(entry: OpInfo, sample: Sample, got, dtype: str) -> None:
    """got equals the reference: to the bit where the entry says so; float32 otherwise
    against the reference in float64, to float32 tolerances."""
    expected = entry.reference(*copies(sample.args), **sample.kwargs)
    got_leaves, expected_leaves = leaves(got), leaves(expected)
    assert [(g.shape, g.dtype) for g in got_leaves] == [
        (e.shape, e.dtype) for e in expected_leaves]
    if entry.exact:
        helpers.assert_same(list(got_leaves), list(expected_leaves))
        return
    if np.dtype(dtype) in (np.float32, np.complex64):
        expected = entry.reference(*as_float64(copies(sample.args)), **sample.kwargs)
    assert_close(got, expected, tolerance(dtype, entry, 1e-12, 2e-5))


@pytest.mark.parametrize("name,dtype", EAGER)
def test_eager_tracing_matches_the_reference(name, dtype):
    entry = OPS[name]
    for sample in samples_of(entry, dtype):
        with about(entry, sample, dtype):
            got = helpers.traced(bound(entry, sample), *copies(sample.args))
            check_against_reference(entry, sample, got, dtype)


# ---------------------------------------------------------------------------------------
# Forward mode


def central_difference(f: Callable, primals: list, tangents: list, eps: float = 1e-6) -> list:
    plus = f(*[p + eps * t for p, t in zip(primals, tangents)])
    minus = f(*[p - eps * t for p, t in zip(primals, tangents)])
    return [(a - b) / (2 * eps) for a, b in zip(float_leaves(plus), float_leaves(minus))]


def assert_no_derivative(entry: OpInfo, sample: Sample) -> None:
    """The derivative is not unique there: jvp and vjp say so (as JAX does)."""
    args = copies(sample.args)
    f = of_diff(entry, sample, args)
    primals = [args[i] for i in diff_positions(sample)]
    with pytest.raises(UnsupportedError, match=sample.no_derivative):
        tx.jvp(f, tuple(primals), tuple(primals))
    with pytest.raises(UnsupportedError, match=sample.no_derivative):
        tx.vjp(f, *primals)[1](f(*primals))


@pytest.mark.parametrize("name,dtype", DERIVATIVES)
def test_jvp_matches_finite_differences(name, dtype):
    entry = OPS[name]
    rng = np.random.default_rng(1)
    for sample in samples_of(entry, dtype):
        with about(entry, sample, dtype):
            if sample.no_derivative:
                assert_no_derivative(entry, sample)
                continue
            if not sample.smooth:
                continue
            args = copies(sample.args)
            positions = diff_positions(sample)
            primals = [args[i] for i in positions]
            tangents = tangents_for(entry, primals, rng)
            out, tangent_out = tx.jvp(of_diff(entry, sample, args), tuple(primals),
                                      tuple(tangents))
            for o, t in zip(leaves(out), leaves(tangent_out)):
                assert t.shape == o.shape and t.dtype == o.dtype  # float32 stays float32
            args64 = as_float64(args)
            fd = central_difference(of_diff(entry, sample, args64),
                                    [args64[i] for i in positions], as_float64(tangents),
                                    entry.eps)
            tol = tolerance(dtype, entry, 1e-6, 2e-3)
            for t, d in zip(float_leaves(tangent_out), fd):
                scale = 1 + np.max(np.abs(d), initial=0)
                np.testing.assert_allclose(t, d, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("name,dtype", ZEROS)
def test_piecewise_constant_functions_have_zero_derivatives(name, dtype):
    entry = OPS[name]
    rng = np.random.default_rng(2)
    for sample in samples_of(entry, dtype):
        positions = diff_positions(sample)
        if not positions:
            continue
        with about(entry, sample, dtype):
            args = copies(sample.args)
            primals = [args[i] for i in positions]
            f = of_diff(entry, sample, args)
            out, t = tx.jvp(f, tuple(primals), tuple(random_like(rng, p) for p in primals))
            for o, tl in zip(leaves(out), leaves(t)):
                assert tl.dtype == o.dtype and tl.shape == o.shape and not np.any(tl)
            out, pullback = tx.vjp(f, *primals)
            cts = pullback(type(out)(random_like(rng, o) for o in out)
                           if isinstance(out, (tuple, list)) else random_like(rng, out))
            for g, p in zip(cts, primals):
                assert g.shape == p.shape and not np.any(g)


@pytest.mark.parametrize("name", INTEGERS)
def test_integer_inputs_cannot_be_differentiated(name):
    entry = OPS[name]
    sample = samples_of(entry, entry.dtypes[0])[0]
    args = [a for a in copies(sample.args) if isinstance(a, np.ndarray)]
    with pytest.raises(tx.DTypeError, match="floating-point"):
        tx.jvp(bound(entry, sample), tuple(args), tuple(args))


# ---------------------------------------------------------------------------------------
# Reverse mode


def numeric_vjp(f: Callable, args: list, ct: list, eps: float = 1e-6) -> list:
    """Central differences of Re <ct, f(args)> for each entry of each argument (JAX's
    convention for complex arguments: d/dx - i d/dy)."""
    def pairing(*a):
        return sum(float(np.real(np.sum(c * o))) for c, o in zip(ct, float_leaves(f(*a))))

    grads = []
    for i, a in enumerate(args):
        g = np.zeros(a.shape, a.dtype)
        steps = [(1.0, 1.0)] if a.dtype.kind == "f" else [(1.0, 1.0), (1j, -1j)]
        for idx in np.ndindex(*a.shape):
            for direction, weight in steps:
                up, down = a.copy(), a.copy()
                up[idx] += eps * direction
                down[idx] -= eps * direction
                d = (pairing(*args[:i], up, *args[i + 1:])
                     - pairing(*args[:i], down, *args[i + 1:])) / (2 * eps)
                g[idx] += d * weight
        grads.append(g)
    return grads


def structured(out, cts: list):
    """Cotangents in the output's structure (a flat tuple or list of arrays, or one)."""
    if isinstance(out, (tuple, list)):
        assert len(cts) == len(out), "nested outputs: not supported by these checks"
        return type(out)(cts)
    return cts[0]


def pulled_back(entry: OpInfo, sample: Sample, args: list, rng, cts: list | None = None
                ) -> tuple:
    """(primals, output, cotangents, vjp of the cotangents)."""
    primals = [args[i] for i in diff_positions(sample)]
    out, pullback = tx.vjp(of_diff(entry, sample, args), *primals)
    if cts is None:
        cts = [random_like(rng, o) for o in leaves(out)]
    return primals, out, cts, pullback(structured(out, cts))


@pytest.mark.parametrize("name,dtype", DERIVATIVES)
def test_vjp_matches_finite_differences(name, dtype):
    entry = OPS[name]
    rng = np.random.default_rng(3)
    for sample in samples_of(entry, dtype):
        if sample.no_derivative or not sample.smooth:
            continue  # test_jvp_matches_finite_differences checks the error
        with about(entry, sample, dtype):
            args = copies(sample.args)
            primals, _, cts, grads = pulled_back(entry, sample, args, rng)
            assert len(grads) == len(primals)
            for g, p in zip(grads, primals):
                assert g.shape == p.shape and g.dtype == p.dtype  # float32 stays float32
            if np.dtype(dtype) in (np.float32, np.complex64):
                expected = pulled_back(entry, sample, as_float64(args), rng,
                                       as_float64(cts))[3]
            elif entry.symmetric:
                continue  # one triangle is read: checked as the jvp's transpose below
            else:
                expected = numeric_vjp(of_diff(entry, sample, args), primals, cts, entry.eps)
            tol = tolerance(dtype, entry, 1e-5, 2e-3)
            for g, e in zip(grads, expected):
                np.testing.assert_allclose(g, e, rtol=tol, atol=tol / 10)


@pytest.mark.parametrize("name,dtype", [p for p in DERIVATIVES if p.values[1] == "float64"])
def test_vjp_is_the_transpose_of_the_jvp(name, dtype):
    entry = OPS[name]
    rng = np.random.default_rng(4)
    for sample in samples_of(entry, dtype):
        if sample.no_derivative or not sample.smooth:
            continue
        with about(entry, sample, dtype):
            args = copies(sample.args)
            primals, _, cts, grads = pulled_back(entry, sample, args, rng)
            tangents = tangents_for(entry, primals, rng)
            _, jvp_out = tx.jvp(of_diff(entry, sample, args), tuple(primals), tuple(tangents))
            lhs = sum(np.real(np.sum(c * t)) for c, t in zip(cts, leaves(jvp_out)))
            rhs = sum(np.real(np.sum(g * t)) for g, t in zip(grads, tangents))
            rounding = any(o.dtype == np.float32 for o in leaves(jvp_out))  # cast to float32
            tol = 1e-6 if rounding else 1e-9
            np.testing.assert_allclose(lhs, rhs, rtol=tol, atol=tol)
            if entry.symmetric:  # the cotangent of a symmetric input is symmetric
                np.testing.assert_allclose(grads[0], np.swapaxes(grads[0], -1, -2), atol=1e-12)


def first_differentiable(entry: OpInfo) -> Sample:
    return next(x for x in samples_of(entry, "float64") if not x.no_derivative
                and x.smooth and diff_positions(x)
                and all(np.size(x.args[i]) for i in diff_positions(x)))


@pytest.mark.parametrize("name", SECOND)
def test_backward_graph_differentiates_again(name):
    """G(x) = J(x)^T ct: its vjp and jvp against a central difference of G along u."""
    entry = OPS[name]
    sample = first_differentiable(entry)
    rng = np.random.default_rng(5)
    with about(entry, sample, "float64"):
        args = copies(sample.args)
        primals, out, cts, _ = pulled_back(entry, sample, args, rng)
        f = of_diff(entry, sample, args)

        def first(*xs):
            return tx.vjp(f, *xs)[1](structured(out, cts))

        outs, pullback = tx.vjp(first, *primals)
        ct2 = [random_like(rng, o) for o in outs]
        u = tangents_for(entry, primals, rng)
        _, forward = tx.jvp(first, tuple(primals), tuple(u))
        reverse = sum(np.sum(g * t) for g, t in zip(pullback(tuple(ct2)), u))
        along = sum(np.sum(c * t) for c, t in zip(ct2, central_difference(first, primals, u)))
        np.testing.assert_allclose(reverse, along, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sum(np.sum(c * t) for c, t in zip(ct2, forward)), reverse,
                                   rtol=1e-9, atol=1e-10)
        halves = vjp_graph(prepare(tx.make_graph(f)(*primals)), [True] * len(primals))
        verify(halves.forward)
        verify(halves.backward)
        assert len(halves.backward.outputs) == len(primals)


# ---------------------------------------------------------------------------------------
# JAX, float64: the primal, the jvp and the vjp of one sample, in one compiled computation


def jax_function(entry: OpInfo) -> Callable | None:
    if entry.jax is not None:
        return entry.jax
    if not entry.name.startswith("np.") or " " in entry.name:
        return None
    numpy_fn = np
    for part in entry.name[3:].split("."):
        numpy_fn = getattr(numpy_fn, part)
    if numpy_fn is not entry.op:  # a wrapper (signs fixed, ...): it names its own
        return None

    def call(jax, *args, **kwargs):
        fn = jax.numpy
        for part in entry.name[3:].split("."):
            fn = getattr(fn, part)
        return fn(*args, **kwargs)
    return call


JAX = [n for n, e in OPS.items() if differentiable(e) and jax_function(e) is not None
       and "float64" in e.dtypes]


def symmetric_part(x: np.ndarray) -> np.ndarray:
    return (x + np.swapaxes(x, -1, -2)) / 2


@pytest.mark.parametrize("name", JAX)
def test_jvp_and_vjp_match_jax(name, jax64):
    jax = jax64
    entry = OPS[name]
    sample = first_differentiable(entry)
    rng = np.random.default_rng(6)
    with about(entry, sample, "float64"):
        args = copies(sample.args)
        positions = diff_positions(sample)
        primals = [args[i] for i in positions]
        tangents = tangents_for(entry, primals, rng)
        out, tangent_out = tx.jvp(of_diff(entry, sample, args), tuple(primals), tuple(tangents))
        _, _, cts, grads = pulled_back(entry, sample, args, np.random.default_rng(7))
        jax_fn = jax_function(entry)

        def f(*diff):
            full = list(args)
            for i, x in zip(positions, diff):
                full[i] = x
            result = jax_fn(jax, *full, **sample.kwargs)
            return tuple(result) if isinstance(result, list) else result

        def run(p, t, ct):
            value, t_out = jax.jvp(f, p, t)
            return value, t_out, jax.vjp(f, *p)[1](ct)

        ct = tuple(cts) if isinstance(out, (tuple, list)) else cts[0]
        value, expected_t, expected_g = jax.jit(run)(tuple(primals), tuple(tangents), ct)
        assert_close(out, value, 1e-10 * entry.tol, "primal")
        assert_close(tangent_out, expected_t, 1e-9 * entry.tol, "jvp")
        if entry.symmetric:  # JAX's cotangent of a symmetric input may be one triangle
            grads = [symmetric_part(grads[0]), *grads[1:]]
            expected_g = [symmetric_part(np.asarray(expected_g[0])), *expected_g[1:]]
        assert_close(list(grads), list(expected_g), 1e-9 * entry.tol, "vjp")


# ---------------------------------------------------------------------------------------
# vmap against a loop


def batching_patterns(ranks: list[int], written: tuple[int, ...]) -> list[list]:
    """in_dims: all at 0, all at -1, mixed, each one unbatched, each alone; an argument
    the function writes into is always batched (tests/test_vmap.py checks the error)."""
    n = len(ranks)
    patterns = [[0] * n, [-1] * n, [(i + 1) % (r + 1) for i, r in enumerate(ranks)]]
    if n > 1:
        patterns += [[None if j == i else 0 for j in range(n)] for i in range(n)]
        patterns += [[-1 if j == i else None for j in range(n)] for i in range(n)]
    return [p for p in patterns if all(p[i] is not None for i in written)]


def stacked(examples: list, dim) -> np.ndarray:
    if dim is None:
        return examples[0]
    axis = dim if dim >= 0 else np.ndim(examples[0]) + 1 + dim
    return np.stack(examples, axis=axis)


BATCH = 3


@pytest.mark.parametrize("name,dtype", VMAP)
def test_vmap_matches_a_loop(name, dtype):
    entry = OPS[name]
    per_seed = [samples_of(entry, dtype, seed) for seed in range(BATCH)]
    for k, sample in enumerate(per_seed[0]):
        if not sample.args:
            continue
        examples = [seeded[k].args for seeded in per_seed]  # one call per batch entry
        f = bound(entry, sample)
        tol = tolerance(dtype, entry, 1e-12, 1e-5)
        with about(entry, sample, dtype):
            for dims in batching_patterns([np.ndim(a) for a in sample.args], entry.writes):
                args = [stacked([ex[i] for ex in examples], d) for i, d in enumerate(dims)]
                got = tx.vmap(f, in_dims=tuple(dims))(*copies(args))
                loop = [f(*copies([ex[i] if d is not None else examples[0][i]
                                   for i, d in enumerate(dims)])) for ex in examples]
                expected = [np.stack(parts) for parts in zip(*[leaves(r) for r in loop])]
                got_leaves = leaves(got)
                assert [g.dtype for g in got_leaves] == [e.dtype for e in expected], dims
                assert_close(got_leaves, expected, tol, f"in_dims={dims}")


def stacked_sample(entry: OpInfo) -> Sample | None:
    """A sample whose first argument is a non-empty stack of matrices."""
    return next((x for x in samples_of(entry, "float64") if np.ndim(x.args[0]) >= 3
                 and np.size(x.args[0]) and x.smooth and not x.no_derivative), None)


# tensorsolve and tensorinv take tensors, not stacks of matrices.
STACKED = [n for n, e in OPS.items() if differentiable(e) and e.family.startswith("linalg")
           and not n.startswith("np.linalg.tensor") and stacked_sample(e) is not None]


@pytest.mark.parametrize("name", STACKED)
def test_vmap_of_grad_matches_a_loop(name):
    """A stack of matrices: per-matrix gradients of a scalar loss, vmapped and looped."""
    entry = OPS[name]
    sample = stacked_sample(entry)
    rest = copies(sample.args[1:])

    def loss(m):
        out = bound(entry, sample)(m, *rest)
        return sum(np.sum(leaf ** 2) for leaf in leaves_traced(out))

    with about(entry, sample, "float64"):
        stack = copies(sample.args)[0]
        got = tx.vmap(tx.grad(loss))(stack)
        loop = np.stack([tx.grad(loss)(m) for m in stack])
        np.testing.assert_allclose(got, loop, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,dtype", VMAP[::3])
def test_vmap_of_an_empty_batch(name, dtype):
    entry = OPS[name]
    sample = next((x for x in samples_of(entry, dtype) if x.args), None)
    if sample is None:
        return
    with about(entry, sample, dtype):
        one = leaves(bound(entry, sample)(*copies(sample.args)))
        empty = [np.zeros((0,) + np.shape(a), np.asarray(a).dtype) for a in sample.args]
        got = leaves(tx.vmap(bound(entry, sample))(*empty))
        assert [(g.shape, g.dtype) for g in got] == [((0,) + o.shape, o.dtype) for o in one]


# ---------------------------------------------------------------------------------------
# functionalize: the result and the caller's arrays as NumPy leaves them


@pytest.mark.parametrize("name,dtype", EAGER)
def test_functionalize_matches_the_reference(name, dtype):
    entry = OPS[name]
    for sample in samples_of(entry, dtype):
        with about(entry, sample, dtype):
            mine, theirs = copies(sample.args), copies(sample.args)
            got = tx.functionalize(bound(entry, sample))(*mine)
            check_against_reference(entry, sample, got, dtype)
            entry.reference(*theirs, **sample.kwargs)
            for m, t in zip(mine, theirs):  # the writes reach the caller's arrays
                np.testing.assert_array_equal(m, t)


# ---------------------------------------------------------------------------------------
# jit and CUDA: one program a family


FULL_DTYPE = "float64"
VARIANTS = 2  # samples of an entry compiled in FULL_DTYPE, at most
# Data movement: the same code in every dtype; LAPACK: several seconds a call to compile;
# sorting: a merge sort inlined into each kernel. tests/test_coverage.py compiles their
# primitives in each dtype.
FULL_DTYPE_ONLY = {"shapes", "indexing", "linalg", "linalg-per-thread", "sorting"}
FIRST_ONLY = {"linalg", "linalg-per-thread"}
CHUNK = 6  # entries a compiled program: Numba's compile time grows faster than its size


def family_parts(entries: list[OpInfo]) -> list[tuple[OpInfo, str, Sample]]:
    """The first sample (the usual shape) of each entry in its float dtypes and one other,
    and in FULL_DTYPE the samples with other parameters too. Numba compiles about 60 ms an
    output: 0-d, size-0 and broadcast shapes of each primitive in each dtype are compiled
    by tests/test_coverage.py."""
    parts = []
    for entry in entries:
        for dtype in compiled_dtypes(entry):
            chosen = samples_of(entry, dtype)
            parts.append((entry, dtype, chosen[0]))
            if dtype == FULL_DTYPE and entry.family not in FIRST_ONLY:
                variants = [x for x in chosen[1:] if repr(x.kwargs) != repr(chosen[0].kwargs)]
                parts += [(entry, dtype, x) for x in variants[:VARIANTS - 1]]
    return parts


def compiled_dtypes(entry: OpInfo) -> list[str]:
    """The floats, complex128 (complex64 compiles the same code; tests/test_complex.py
    compiles it), and the first of the entry's integer and boolean dtypes."""
    if entry.family in FULL_DTYPE_ONLY and FULL_DTYPE in entry.dtypes:
        return [FULL_DTYPE]
    floats = [d for d in entry.dtypes if np.dtype(d).kind == "f"]
    floats += [d for d in entry.dtypes if d == "complex128"]
    others = [d for d in entry.dtypes if np.dtype(d).kind not in "fc"]
    return floats + others[:1]


def ptx_parts(entries: list[OpInfo]) -> list[tuple[OpInfo, str, Sample]]:
    """The first sample of each entry, in float32 where it takes it (kernels per dtype:
    tests/test_coverage.py)."""
    return [(e, d, samples_of(e, d)[0]) for e in entries
            for d in (["float32"] if "float32" in e.dtypes else e.dtypes[:1])]


# (primitive, dtype) pairs tests/test_coverage.py compiles and runs against the reference
# interpreter on the CPU (every pair of its catalogue), and those it compiles to PTX.
COVERAGE_CPU = {pair for pairs in coverage_families().values() for pair in pairs}
COVERAGE_PTX = {pair for family, pairs in coverage_families().items() if family not in HOST_ONLY
                for pair in pairs}


def same_compile_as_coverage(part: tuple[OpInfo, str, Sample], compiled: set
                             ) -> tuple[str, str] | None:
    """(primitive, dtype) when the part's traced graph is that one primitive alone (no
    parameters, no constants, its inputs the function's, its outputs the function's) on
    inputs of that one dtype, and tests/test_coverage.py compiles the pair: np.sin on a
    float32 array is the `sin` primitive on a float32 array, and compiling it again here
    would prove nothing more. None otherwise (the part is compiled here)."""
    entry, _, sample = part
    if entry.writes:
        return None
    with np.errstate(all="ignore"):
        graph = tx.make_graph(bound(entry, sample))(*copies(sample.args))
    if len(graph.nodes) != 1 or graph.consts:
        return None
    node = graph.nodes[0]
    dtypes = {v.aval.dtype.name for v in node.inputs}
    if (node.params or list(node.inputs) != list(graph.inputs)
            or list(node.outputs) != list(graph.outputs) or len(dtypes) != 1):
        return None
    pair = (node.prim.name, dtypes.pop())
    return pair if pair in compiled else None


def own_parts(parts: list, compiled: set) -> list:
    """The parts this file compiles: those tests/test_coverage.py does not."""
    return [p for p in parts if same_compile_as_coverage(p, compiled) is None]


def share_key(a) -> tuple | None:
    """Equal sample arrays (entries draw from the same seed) are one argument of a combined
    program: the fusion pass then merges the loops that read it, so a chunk compiles a few
    loops instead of one per part (Numba's cost is mostly per compiled function)."""
    if not isinstance(a, np.ndarray):
        return None
    return a.dtype.str, a.shape, a.tobytes()


def combined(parts: list) -> tuple[Callable, list, list[tuple[OpInfo, str]]]:
    """One function computing every part, its arguments, and each output's entry.

    Arguments equal in dtype, shape and bits are passed once (`share_key`), except those of
    entries that write into their arguments; `program.shared` lists the positions that
    several parts read, which the jitted call must leave as they were."""
    args, owners, positions = [], [], []
    first: dict[tuple, int] = {}
    readers: dict[int, int] = {}
    for entry, _, sample in parts:
        where = []
        for a in sample.args:
            key = None if entry.writes else share_key(a)
            if key is None or key not in first:
                if key is not None:
                    first[key] = len(args)
                args.append(a)
            where.append(len(args) - 1 if key is None else first[key])
            readers[where[-1]] = readers.get(where[-1], 0) + 1
        positions.append(where)

    def program(*flat):
        outs = []
        for (entry, _, sample), where in zip(parts, positions):
            outs += leaves_traced(entry.op(*(flat[i] for i in where), **sample.kwargs))
        return tuple(outs)

    program.shared = sorted(i for i, n in readers.items() if n > 1)
    for entry, dtype, sample in parts:
        with np.errstate(all="ignore"):
            n = len(leaves(entry.op(*copies(sample.args), **sample.kwargs)))
        owners += [(entry, dtype)] * n
    return program, args, owners


def leaves_traced(x) -> list:
    if isinstance(x, (tuple, list)):
        return [leaf for part in x for leaf in leaves_traced(part)]
    return [x]


def reference_run(f: Callable, args: list) -> list:
    graph = tx.make_graph(f)(*copies(args))
    verify(graph)
    return interpret(graph, [a for a in copies(args)])


def check_family_on_cpu(entries: list[OpInfo]) -> None:
    f, args, owners = combined(own_parts(family_parts(entries), COVERAGE_CPU))
    with np.errstate(all="ignore"):
        expected = reference_run(f, args)
        passed = copies(args)
        got = tx.jit(f)(*passed)
    assert len(got) == len(expected) == len(owners)
    for i in f.shared:  # each part read its own sample: no part wrote into a shared one
        helpers.assert_same([passed[i]], [args[i]])
    for i, (g, e, (entry, dtype)) in enumerate(zip(got, expected, owners)):
        g, e = host(g), np.asarray(e)
        what = f"{entry.name} ({dtype}), output {i}"
        assert (g.shape, g.dtype) == (e.shape, e.dtype), what
        if e.dtype.kind in "biu":
            np.testing.assert_array_equal(g, e, err_msg=what)
        else:
            tol = COMPILED_TOL.get(e.dtype.name, 2e-5) * entry.tol
            np.testing.assert_allclose(g, e, rtol=tol, atol=tol, err_msg=what)


def check_family_ptx(entries: list[OpInfo]) -> None:
    from transfuse.runtime import cuda as cuda_runtime

    f, args, _ = combined(own_parts(ptx_parts(entries), COVERAGE_PTX))
    with np.errstate(all="ignore"):
        low = tx.jit(f, device="cuda", cache=False).lower(*args)
    module = cuda_runtime.load_program(low.source, "opinfo", disk=False)
    ptx = cuda_runtime.kernel_ptx(module.module, low.kernels, cc=(7, 5))
    assert set(ptx) == {k.name for k in low.kernels}
    for kernel, text in ptx.items():
        assert ".visible .entry" in text and ".target sm_75" in text, kernel


def attributed(check: Callable[[list[OpInfo]], None], entries: list[OpInfo], where: str
               ) -> None:
    """Run check on a family; if it fails, name each entry that fails alone."""
    try:
        check(entries)
        return
    except Exception as family_error:  # noqa: BLE001 - re-raised below, attributed
        failures = []
        for entry in entries:
            try:
                check([entry])
            except Exception as e:  # noqa: BLE001
                failures.append(f"{entry.name} {where}: {type(e).__name__}: {str(e)[:600]}")
        if not failures:
            raise AssertionError(f"{[e.name for e in entries]} fail together {where}, each "
                                 "passes alone") from family_error
        raise AssertionError("\n".join(failures)) from None


FAMILIES = families()
# The entries with a part of their own to compile (the others' parts are all compiled by
# tests/test_coverage.py: see same_compile_as_coverage), CHUNK to a program.
JIT_ENTRIES = {family: [e for e in entries if own_parts(family_parts([e]), COVERAGE_CPU)]
               for family, entries in FAMILIES.items()}
CHUNKS = {f"{family}-{i // CHUNK}": entries[i:i + CHUNK]
          for family, entries in JIT_ENTRIES.items() for i in range(0, len(entries), CHUNK)}
PTX_ENTRIES = {family: [e for e in entries
                        if e.cuda is None and own_parts(ptx_parts([e]), COVERAGE_PTX)]
               for family, entries in FAMILIES.items()}


@pytest.mark.parametrize("chunk", list(CHUNKS))
def test_jit_matches_the_interpreter(chunk):
    attributed(check_family_on_cpu, CHUNKS[chunk], "under jit")


@pytest.mark.parametrize("family", [f for f, entries in PTX_ENTRIES.items() if entries])
def test_cuda_compiles_to_ptx(family):
    pytest.importorskip("numba_cuda")
    attributed(check_family_ptx, PTX_ENTRIES[family], "on the CUDA backend")


def test_every_part_is_compiled_here_or_by_test_coverage():
    """Each entry's jit and PTX parts are compiled by a chunk or family above, or are one
    primitive that tests/test_coverage.py compiles in that dtype (its CPU test runs every
    (primitive, dtype) pair of its catalogue against the interpreter; its PTX test every
    pair outside the host-only families)."""
    from tests.test_coverage import FAMILIES as COVERAGE_FAMILIES

    pairs = {pair for family_pairs in COVERAGE_FAMILIES.values() for pair in family_pairs}
    assert COVERAGE_CPU == pairs
    in_chunks = {id(e) for entries in CHUNKS.values() for e in entries}
    for entry in OPS.values():
        for kind, parts, compiled, ours in (
                ("cpu", family_parts([entry]), COVERAGE_CPU, id(entry) in in_chunks),
                ("ptx", ptx_parts([entry]) if entry.cuda is None else [], COVERAGE_PTX,
                 entry in PTX_ENTRIES[entry.family])):
            for part in parts:
                pair = same_compile_as_coverage(part, compiled)
                assert pair is not None or ours, (
                    f"{entry.name} ({part[1]}): no {kind} compile here or in test_coverage")
                assert pair is None or pair in compiled, (entry.name, part[1], pair)
    # What goes there: a plain alias; what stays: a composite, a mixed-dtype call.
    sin, std, add = OPS["np.sin"], OPS["np.std"], OPS["np.add"]
    assert same_compile_as_coverage(
        (sin, "float32", samples_of(sin, "float32")[0]), COVERAGE_CPU) == ("sin", "float32")
    assert same_compile_as_coverage(
        (std, "float64", samples_of(std, "float64")[0]), COVERAGE_CPU) is None
    mixed = samples_of(add, "float32")[-1]
    assert mixed.args[1].dtype == np.float64
    assert same_compile_as_coverage((add, "float32", mixed), COVERAGE_CPU) is None


REFUSED = [n for n, e in OPS.items() if e.cuda]


@pytest.mark.parametrize("name", REFUSED)
def test_cuda_refuses_when_the_program_is_built(name):
    entry = OPS[name]
    sample = next(x for x in samples_of(entry, "float64") if all(np.size(a) for a in x.args))
    with np.errstate(all="ignore"), pytest.raises(CompileError, match=entry.cuda):
        tx.jit(bound(entry, sample), device="cuda", cache=False).lower(*copies(sample.args))


# ---------------------------------------------------------------------------------------
# The catalogue covers the rules, and the docs show it


def primitives_reached(entries) -> set[str]:
    names: set[str] = set()
    for entry in entries:
        dtypes = [d for d in ("float64", "complex128") if d in entry.dtypes] or entry.dtypes[:1]
        for dtype in dtypes:
            for sample in samples_of(entry, dtype):
                with np.errstate(all="ignore"):
                    graph = tx.make_graph(bound(entry, sample))(*copies(sample.args))
                names |= helpers.primitives_of(graph)
    return names


# Primitives the catalogue's functions do not reach, and why.
UNREACHED = {
    "view_slice": "functionalize's `prepare` removes views before any transform",
    "view_reshape": "functionalize's `prepare` removes views before any transform",
    "view_transpose": "functionalize's `prepare` removes views before any transform",
    "view_broadcast": "functionalize's `prepare` removes views before any transform",
    "call": "a jit inside a traced function: tests/test_jit_api.py and tests/catalogue.py",
    "remat": "transfuse.checkpoint under every transform: tests/test_checkpoint.py",
    "optimization_barrier": "made by reverse mode of a checkpoint: tests/test_checkpoint.py",
    **dict.fromkeys(("cond", "while_loop", "scan"),
                    "transfuse.lax control flow, no NumPy function: tests/test_control_ad.py "
                    "(jvp, vjp) and tests/test_control_batching.py (vmap)"),
    **dict.fromkeys(("custom_jvp_call", "custom_vjp_call", "stop_gradient"),
                    "user derivative rules, no NumPy function: tests/test_custom_rules.py "
                    "(every transform, against JAX and torch.func)"),
    "aot_compiled": "made by transfuse.compile's aot functions, no NumPy function: "
                    "tests/test_aot_autograd.py (grad, vmap, vmap(grad), jit)",
    "fused": "made by the fusion pass after every transform",
}


def test_every_primitive_with_a_derivative_is_reached_by_a_differentiated_entry():
    reached = primitives_reached(e for e in OPS.values() if differentiable(e))
    zero = primitives_reached(e for e in OPS.values() if not differentiable(e))
    missing = sorted(p.name for p in JVP_RULES if p.name not in reached | zero | set(UNREACHED))
    assert not missing, f"no catalogue entry differentiates {missing}"


def test_every_primitive_with_a_batching_rule_is_reached():
    reached = primitives_reached(OPS.values())
    missing = sorted(p.name for p in BATCH_RULES if p.name not in reached | set(UNREACHED))
    assert not missing, f"no catalogue entry is vmapped through {missing}"


def test_complex_capable_entries_are_tested_on_complex_inputs():
    from tests.opinfo import COMPLEX, COMPLEX_CAPABLE, Draws

    z = Draws("complex128").normal((3,))
    assert z.dtype == np.complex128 and np.all(z.imag != 0)
    for name in COMPLEX_CAPABLE:
        assert set(COMPLEX) <= set(OPS[name].dtypes), name


def test_docs_coverage_table_is_current():
    from tests.opinfo import DOCS

    text = DOCS.read_text()
    assert docs_with_table(text) == text, (
        "docs/numpy.md's coverage table is out of date: run "
        "`python -m tests.opinfo --write-docs`")


def test_every_entry_has_samples_in_each_of_its_dtypes():
    for entry in OPS.values():
        for dtype in entry.dtypes:
            assert samples_of(entry, dtype), (entry.name, dtype)
        assert entry.derivative in (YES, ZERO, INTEGER, NO_INPUTS), entry.name
