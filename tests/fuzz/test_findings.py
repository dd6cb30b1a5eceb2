"""What the differential fuzzer found (tests/fuzz), each as its minimal reproducer.

1. A single-operand np.einsum that sums nothing ('ij->ji', 'i->i') returned a copy; NumPy
   returns a writable view, so a write into the result must reach the operand. Fixed in
   transfuse/numpy/_functions.py (einsum returns transpose's view).
2. `a[i] *= 1.5` on an integer array raised DTypeError; NumPy computes it through the
   scalar a[i] (a NumPy scalar rebinds to float64) and stores it back with a cast. Fixed:
   an element taken by integer indexing is marked a NumPy scalar (Builder.scalars), and
   `op=` on it rebinds (transfuse/numpy/_core.py, inplace_op).
3. grad of `x / x` is exactly 0 in transfuse; JAX gives rounding noise (about 1e-16) of the
   cancelled terms, which the fuzzer's relative tolerance took for an error. Not a
   transfuse bug: derivative checks have an absolute floor (DERIVATIVE_ATOL).
4. `jit(lambda x: np.dot(x, x - 3.0))` of size-0 vectors failed to compile: the empty
   contraction was lowered as `out.fill(0)`, which Numba cannot type for a 0-d output.
   Fixed in compiler/lower_cpu.py (a flat view set to 0).
5. (complex campaign) Two identical regions with no statements (scans of size-0 arrays,
   e.g. under vmap with a batch of 0) became one shared `@njit` region function with an
   empty body: an IndentationError loading the kernel. Found in the then uncommitted
   compiler/region_functions.py; fixed there by its author (empty bodies stay inline).
6. (complex campaign) jit's complex division raises ZeroDivisionError on a zero divisor
   (Numba's complex `/`, whatever the error model), so the complex mean/var/std over an
   empty axis, `z / 0` and `1 / z` at 0 raise where NumPy gives inf/nan. Fixed: complex
   division is NumPy's algorithm (runtime/complex_bodies.py, compiled with NumPy's error
   model), on both backends; 0 ** (negative int) is nan + nan j, as NumPy.
7. (issue #16's functions, tests/fuzz/ops_more.py) Not a transfuse bug: jax.numpy's
   quantile, percentile and median give a 0-d array's keepdims=True result shape (1,),
   NumPy and transfuse shape (). The generator gives 0-d operands no keepdims.
8. (issue #16's campaign) The reference interpreter's np.take of one element is a NumPy
   scalar (ir/primitives.py, _gather_impl), so `s = np.take(x, 0); s -= 1.0` raised
   TypeError writing into it (jit and functionalize are right). Fixed: _gather_impl returns
   an array. (The generator still avoids the pattern in mutation programs.)
9. (campaign at the end of session 6, seed 12291) jit of an int64 max/min reduction
   (np.ptp of argsort's permutation) raised OverflowError: the identity of the max,
   np.int64(-2**63), inside np.full's arguments was taken for a size (compiler/size_params.py)
   and passed as an int64 argument. Fixed: a dtype scalar in a size call is a value.
10. (the same campaign, seed 12078) a full reduction's result is a NumPy scalar in NumPy,
   so `s = np.median(x); v = np.reshape(s, (1,)); s *= x` leaves v alone; transfuse kept it
   a 0-d array, `v` was a view of it and `s *= x` wrote through it (functionalize, vmap,
   jit). Fixed: the 0-d results NumPy returns as scalars (ufuncs, full reductions, products
   of vectors, linalg, ...) are marked as such at dispatch (transfuse/numpy/_scalars.py),
   `op=` rebinds them and a view of one is a copy; tests/test_scalars.py holds every
   catalogued function's 0-d results to NumPy's.
11. (seed 60 of the CI share) jit(vmap) of a while_loop with one float carry: below.
12. (session 9's campaign, seed 9105) Not a transfuse bug: the finite-difference oracle
   moved a 0-d input as `x + h * d`, a NumPy scalar, so `x.copy().fill(0.5)` in the
   program filled nothing and the differences saw the identity where jvp (rightly) gave 0.
   Fixed in tests/fuzz/oracles.py (a moved 0-d array stays an array).
13. (session 9's campaign, seed 9197) jit(jacfwd) of a softmax over every axis of a
   broadcast input gave uninitialised values (9.5e-312) in 160 of 192 entries: a value
   used by two passes of a loop region is stashed in a row buffer indexed by every reduced
   axis, and its store was placed where the value is computed — hoisted out of the axes it
   is broadcast along — so it wrote with stale (or undefined: a NameError at compile)
   indices. Plain jit of `e / np.sum(e)` with `e = exp(broadcast_to(x, ...))` too. Fixed in
   compiler/codegen.py (the stash store sits in the innermost loop).
14.-16. (session 10) below, with their tests.
17. (session 11's campaign, seed 13253) Not a transfuse bug: the oracle's eps for a cast to
   complex64 in a complex128 program; below.
18. (session 13's campaign, seed 17646) jit(vmap) of two std reductions of a (5, 2) float64
   input aborted the process: LLVM 22's SLP vectoriser failed an assertion ("must be
   scheduled at this point") on the direct back end's module. Fixed: the direct back end
   compiles without the SLP vectoriser (runtime/direct_llvm.py); below.
19. (session 13's campaign, seed 18000) Not a transfuse bug: vmap(jvp) of tanh(einsum(...))
   gave a tangent of 0.0 where JAX gave 1.55e-14, over the absolute floor of 1.42e-14.
   At u = 19.36 tanh rounds to 1.0 (NumPy's and transfuse's); XLA's is 1 - 7 ulps, so
   JAX's 1 - tanh**2 times a tangent of 9.97 is 1.55e-14 where the exact value is 6e-16.
   The oracle's floor for forward derivatives now scales with the sizes of the primal and
   tangent inputs (tests/fuzz/oracles.py, tangent_atol); below.
20. (session 15's campaign, seed 23388) `v = np.broadcast_to(x, (1,)); x -= 0.5` left v
   at x's old value in every mode (eager, functionalize, jit): np.broadcast_to returns a
   read-only *view*, and transfuse made a new array. Fixed: a `view_broadcast` primitive
   (ir/primitives.py; compiler/functionalize.py replays it as `broadcast_in_dim`), and a
   write into it raises NumPy's "assignment destination is read-only"; below.
"""

from __future__ import annotations

import numpy as np
import pytest

import transfuse as tx
from tests.helpers import assert_same, traced

# ---------------------------------------------------------------------------------------
# 1. einsum without a summation is a view


def write_through_einsum(x):
    v = np.einsum("ij->ji", x)
    v[0] = 7.0
    w = np.einsum("ij->ij", x)
    w[1, 2] += 1.0
    return x * 1.0


RUNS = ["traced", "jit", "functionalize", "vmap"]


def run_writing(run: str, f, x: np.ndarray, other: np.ndarray) -> tuple:
    """(f's result under `run`, NumPy's) for a program that writes into its argument: f of
    a copy of x traced, under jit or under functionalize; or vmap of f over [x, other],
    whose second row is held to f(other)."""
    if run == "vmap":
        batched = tx.vmap(f)(np.stack([x, other]))
        return tx.tree_map(lambda a: a[1], batched), f(np.array(other))
    runner = {"traced": lambda a: traced(f, a), "jit": tx.jit(f),
              "functionalize": tx.functionalize(f)}[run]
    return runner(x.copy()), f(x.copy())


@pytest.mark.parametrize("run", RUNS)
def test_einsum_permutation_is_a_view(run):
    x = np.arange(6.0).reshape(2, 3)
    assert_same(*run_writing(run, write_through_einsum, x, x + 1))


def test_einsum_view_writes_back_into_an_argument():
    def fill_transposed(x):
        np.einsum("i->i", x).fill(0.5)
        return np.cos(x)

    x, y = np.arange(3.0), np.arange(3.0)
    out = tx.functionalize(fill_transposed)(x)
    assert_same(out, fill_transposed(y))
    assert_same(x, y)  # the caller's array was written through the view


def test_einsum_permutation_still_differentiates():
    x = np.arange(6.0).reshape(2, 3)
    g = tx.grad(lambda v: np.sum(np.einsum("ij->ji", v) * np.arange(6.0).reshape(3, 2)))(x)
    assert_same(g, np.arange(6.0).reshape(3, 2).T)


# ---------------------------------------------------------------------------------------
# 2. op= on one element of an integer array with a float operand


def scale_one(x):
    y = x.copy()
    y[1] *= -1.25
    return y


@pytest.mark.parametrize("run", ["traced", "jit"])
def test_inplace_float_op_on_one_integer_element(run):
    x = np.arange(4)
    got = traced(scale_one, x) if run == "traced" else tx.jit(scale_one)(x)
    assert_same(got, scale_one(x))  # [0, -1, 2, 3]


def test_a_numpy_scalar_taken_from_an_array_is_rebound_not_written():
    def bump(x):
        s = x[1]
        s += 10.0
        return s, x * 1.0

    x = np.arange(4.0)
    got = traced(bump, x)
    assert float(got[0]) == 11.0 and np.array_equal(got[1], x)


def test_an_inplace_op_on_a_zero_d_array_still_checks_the_cast():
    from transfuse.ir.errors import DTypeError

    def widen(x):
        a = np.zeros((), np.int64)
        a += x[0] * 1.5
        return a

    with pytest.raises(DTypeError, match="same_kind"):
        traced(widen, np.arange(3.0))
    with pytest.raises(TypeError):
        widen(np.arange(3.0))  # NumPy refuses it too (UFuncTypeError, a TypeError)


# ---------------------------------------------------------------------------------------
# 3. a derivative that cancels to zero


def test_the_derivative_of_x_over_x_is_exactly_zero_and_the_fuzzer_accepts_it():
    from tests.fuzz.campaign import cases_for, outcome

    x = np.random.default_rng(0).uniform(0.5, 2.0, size=(3, 2))
    assert np.array_equal(tx.grad(lambda v: np.sum(v / v))(x), np.zeros_like(x))
    cases = [c for c in cases_for(40532, jit_modes=0) if c.mode in ("grad", "vmap(grad)")]
    assert cases and all(outcome(c).status == "pass" for c in cases)


# ---------------------------------------------------------------------------------------
# 4. a contraction over an empty axis to a 0-d result


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_of_empty_vectors_compiles_to_zero(dtype):
    """np.dot of two size-0 vectors is 0.0: jit emitted `out.fill(0)`, which Numba cannot
    type for a 0-d array (a TypingError at compile time; fuzzer seed 60563)."""
    def f(x):
        return np.dot(x, x - 3.0)

    x = np.zeros(0, dtype)
    got = tx.jit(f)(x)
    assert_same(got, traced(f, x))
    assert got.shape == () and got == 0


# ---------------------------------------------------------------------------------------
# 5. two identical scans of empty arrays under jit


def test_two_scans_of_empty_arrays_compile():
    """Two cumsums over size-0 arrays lower to two identical regions with no statements;
    the (uncommitted) region sharing of compiler/region_functions.py made them one
    `@njit def region0():` with an empty body, an IndentationError when the kernel was
    loaded (complex fuzzer, seed 1029 kind=complex, jit(vmap) with a batch of 0)."""
    def f(x, y):
        return np.cumsum(x, axis=1), np.cumsum(y, axis=1)

    x, y = np.ones((0, 2)), np.ones((0, 2))
    got = tx.jit(f)(x, y)
    assert_same(got, f(x, y))


# ---------------------------------------------------------------------------------------
# 6. complex division by zero under jit


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_mean_over_an_empty_axis_is_nan_under_jit(dtype):
    """The mean (var, std) of complex values over an empty axis divides by a count of 0:
    NumPy (and the interpreter) give nan+nanj, jit raised ZeroDivisionError: Numba's complex
    division raises whatever the error model (complex fuzzer, seed 5093 kind=complex; `z / w`
    and `1 / z` with a zero divisor too)."""
    def f(z):
        return np.mean(z, axis=0), np.var(z, axis=0)

    z = np.ones((0, 3), dtype)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = f(z)
    assert_same(traced(f, z), expected)
    assert_same(tx.jit(f)(z), expected)


# ---------------------------------------------------------------------------------------
# 7. (issue #16's ops) keepdims=True quantiles of a 0-d array


def test_quantile_of_a_zero_d_array_keeps_no_dims_as_numpy():
    """np.quantile/percentile/median(x, keepdims=True) of a 0-d x is 0-d in NumPy (and
    transfuse, also under jvp and vmap); jax.numpy gives shape (1,), which the fuzzer took
    for a finding (seed 1102 with --boost 8). An oracle's quirk: the generator gives 0-d
    operands no keepdims."""
    def f(x):
        return (np.percentile(x, 75.0, keepdims=True), np.median(x, keepdims=True),
                np.quantile(x, 0.3, axis=None, method="lower", keepdims=True))

    x = np.asarray(0.625)
    assert [np.shape(o) for o in f(x)] == [(), (), ()]
    assert_same(traced(f, x), f(x))
    primals, tangents = tx.jvp(f, (x,), (np.asarray(1.0),))
    assert_same(primals, f(x))
    assert_same(tangents, (np.asarray(1.0),) * 3)
    xs = np.array([0.5, -1.25])
    assert_same(tx.vmap(f)(xs), tuple(np.stack(o) for o in zip(*map(f, xs))))


# ---------------------------------------------------------------------------------------
# 8. the interpreter's np.take of one element, written in place


def test_an_element_taken_by_np_take_can_be_updated_in_place():
    """`s = np.take(x, 0, axis=0); s -= 1.0`: NumPy rebinds the scalar, jit and
    functionalize give -0.5 and leave x alone; the reference interpreter raised TypeError
    ("'numpy.float64' object does not support item assignment"; fuzzer seed 2160 with
    --boost 8, np.take of np.partition's k-th element in a mutation program)."""
    def f(x):
        s = np.take(x, 0, axis=0)
        s -= 1.0
        return s, x * 1.0

    x = np.array([0.5, 1.5, 2.5])
    assert_same(tx.functionalize(f)(x.copy()), (np.asarray(-0.5), x))
    assert_same(traced(f, x.copy()), (np.asarray(-0.5), x))


# ---------------------------------------------------------------------------------------
# 9. an int64 reduction's identity taken for a size


def test_jit_of_an_integer_peak_to_peak_of_a_permutation():
    def f(x0):
        order = np.argsort(x0, axis=0, stable=True)
        capped = np.broadcast_to(np.minimum(order, 1), (2, 3, 2))
        return np.ptp(capped, axis=-3), np.max(order), np.min(order, axis=0)

    x = np.random.default_rng(12291).standard_normal((3, 2)).astype(np.float32)
    for got, want in zip(tx.jit(f, cache=False)(x), f(x)):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------
# 10. a full reduction's result written in place after a view of it was taken


@pytest.mark.parametrize("reduce", [np.sum, np.median])
def test_a_reduced_scalar_written_in_place_leaves_its_reshape_alone(reduce):
    def f(x):
        s = reduce(x, axis=None)
        v = np.reshape(s, (1,))
        s *= x[0]
        return v

    x = np.random.default_rng(12078).standard_normal(5)
    np.testing.assert_allclose(tx.functionalize(f)(x), f(x), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# 11. jit(vmap) of a while_loop with one float carry (the lanes run in lockstep blocks):
# the block function unpacked a one-output scalar function's number as a 1-tuple
# (TypingError "failed to unpack float32"; seed 60 of tests/fuzz/test_fuzz.py).


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jit_of_a_vmapped_while_loop_with_one_carry(dtype):
    from transfuse import lax

    def f(x0):
        return lax.while_loop(lambda c: np.sum(np.abs(c)) > 1.0, lambda c: c * 0.5, x0)

    x = (4 * np.random.default_rng(60).standard_normal(11)).astype(dtype)
    got = tx.jit(tx.vmap(f), cache=False)(x)
    want = np.array([f(v) for v in x], dtype)
    np.testing.assert_array_equal(got, want)  # halvings are exact


# ---------------------------------------------------------------------------------------
# 12. A filled copy of a 0-d input is a constant: its derivative is 0, and the fuzzer's
# finite differences must see that too (they moved the 0-d input as a NumPy scalar).


def test_a_filled_copy_of_a_zero_d_input_has_zero_derivative_by_every_oracle():
    from tests.fuzz.oracles import finite_difference

    def f(x1):
        v4 = x1.copy()
        v4.fill(0.5)
        return (v4,)

    x = np.asarray(np.random.default_rng(9105).standard_normal())
    tangent = np.asarray(1.0495)
    _, (slope,) = tx.jvp(f, (x,), (tangent,))
    assert slope.shape == () and slope == 0.0
    (difference,) = finite_difference(f, [x], (0,), [tangent], 1e-5)
    assert difference == 0.0
    assert tx.jit(f)(x)[0] == 0.5 and tx.grad(lambda x: f(x)[0])(x) == 0.0


# ---------------------------------------------------------------------------------------
# 13. A stashed value broadcast along some of the reduced axes fills every element of its
# stash (it was stored outside the loops it does not vary along).


def softmax_of_broadcast(shape):
    def f(x):
        e = np.exp(np.broadcast_to(x, shape))
        return e / np.sum(e)
    return f


@pytest.mark.parametrize(("in_shape", "shape"), [((4, 1, 1), (2, 4, 3, 2)),
                                                  ((4, 1), (4, 3)), ((4, 1), (2, 4, 3))])
def test_jit_of_a_softmax_over_a_broadcast_input(in_shape, shape):
    f = softmax_of_broadcast(shape)
    x = np.random.default_rng(9197).standard_normal(in_shape)
    jitted = tx.jit(f, cache=False)
    assert "st0" in jitted.lower(x).source  # the region stashes exp for its second pass
    np.testing.assert_allclose(jitted(x), f(x), rtol=1e-14, atol=0)
    want = tx.jacfwd(f)(x)  # the interpreter, itself checked against differences below
    np.testing.assert_allclose(tx.jit(tx.jacfwd(f), cache=False)(x), want, rtol=1e-12,
                               atol=1e-15)
    t = np.random.default_rng(1).standard_normal(in_shape)
    h = 1e-6
    differences = (f(x + h * t) - f(x - h * t)) / (2 * h)
    np.testing.assert_allclose(np.tensordot(want, t, axes=len(in_shape)), differences,
                               rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------
# 14. A NumPy scalar argument (np.float64(0.3): it has a dtype, so jit's fast path takes it)
# reached the direct back end's entry, which read its `.ctypes` (seeds 66 and 77). The
# entry now sends anything but an ndarray back to the slow path, which makes it an array.


@pytest.mark.parametrize("scalar", [np.float64(0.3), np.float64(-0.5), np.float32(-2.5)])
def test_jit_of_a_numpy_scalar_argument(scalar):
    clip = tx.jit(lambda x: np.clip(x, -0.68, -0.39))
    column = tx.jit(lambda x: np.reshape(x, (-1, 1)))
    for _ in range(2):  # the first call compiles; the second goes by the fast path
        got = clip(scalar)
        assert got.dtype == np.asarray(scalar).dtype and got.shape == ()
        assert got == np.clip(scalar, -0.68, -0.39)
        out = column(scalar)
        assert out.shape == (1, 1) and out.dtype == np.asarray(scalar).dtype
        assert out[0, 0] == scalar


# ---------------------------------------------------------------------------------------
# 15. Not a transfuse bug: the fuzzer's Python reference of fori_loop returned its input
# itself after no trips, so `np.multiply(v, 3.0, out=v)` changed the input in the
# reference and not in transfuse (seed 10372). Control flow returns new values, as JAX's
# does; the reference now copies (tests/fuzz/control_ops.py).


@pytest.mark.parametrize("mode", ["eager", "functionalize", "jit(functionalize)"])
def test_a_loop_of_no_trips_returns_a_new_array(mode):
    from tests.fuzz.control_ops import PythonLax

    def f(x, lx):
        v = lx.fori_loop(0, 0, lambda i, c: np.tanh(c) * 0.5 + c * 0.5, x)
        np.multiply(v, 3.0, out=v)
        return v

    x = np.random.default_rng(10372).standard_normal((4, 5)).astype(np.float32)
    keep = x.copy()
    program = {"eager": lambda a: f(a, tx.lax),
               "functionalize": tx.functionalize(lambda a: f(a, tx.lax)),
               "jit(functionalize)": tx.jit(tx.functionalize(lambda a: f(a, tx.lax)))}[mode]
    got = program(x)
    np.testing.assert_array_equal(got, keep * np.float32(3.0))
    np.testing.assert_array_equal(x, keep)  # the input is not the loop's result
    reference_input = keep.copy()
    np.testing.assert_array_equal(f(reference_input, PythonLax), got)
    np.testing.assert_array_equal(reference_input, keep)


# ---------------------------------------------------------------------------------------
# 16. jit(vmap) of argmax over a 0-d example: the kernel views its argument
# (`b1 = a0.reshape((n0, n1))`), which the direct back end's Python entry did before the
# compiled guard, so an argument of another size raised NumPy's ValueError to the user
# instead of recompiling (seed 11123, --jit-modes 2). An entry that reshapes an argument
# now checks the arguments first.


def test_jit_of_vmap_of_argmax_over_scalars_takes_any_batch():
    f = tx.jit(tx.vmap(lambda v: np.argmax(v, axis=None)))
    rng = np.random.default_rng(11123)
    for n in (3, 8, 1, 3):  # the fast path with another batch size each time
        x = rng.standard_normal(n)
        got = f(x)
        assert got.shape == (n,) and got.dtype == np.int64
        np.testing.assert_array_equal(got, np.zeros(n, np.int64))
    column = np.ascontiguousarray(rng.standard_normal((3, 2))[:, 0])
    np.testing.assert_array_equal(f(column), np.zeros(3, np.int64))


# ---------------------------------------------------------------------------------------
# 17. Not a transfuse bug (session 11's campaign, seed 13253 kind=complex, jit(vmap)):
# `np.expm1(x0.astype(np.complex64))` stacked with a complex128 value. transfuse's complex64
# expm1 and NumPy's differ by an ulp of float32 (transfuse's is the closer of the two to
# mpmath's value), but the oracle held the complex128 output to complex128's eps, because
# the precise reference keeps the cast. The oracle's eps is now the program's least
# precise type's (Program.narrowest_eps).


def test_a_cast_to_complex64_in_a_complex128_program_is_judged_at_complex64s_eps():
    import mpmath

    from tests.fuzz.campaign import cases_for, kind_for, outcome

    cases = list(cases_for(13253, jit_modes=1, kind=kind_for(13253)))
    assert "jit(vmap)" in [c.mode for c in cases] and "complex64" in cases[0].program.source()
    assert all(outcome(c).status == "pass" for c in cases)
    rng = np.random.default_rng(13253)
    z = (rng.standard_normal(64) + 1j * rng.standard_normal(64)).astype(np.complex64)
    got = tx.jit(np.expm1)(z)
    exact = np.array([complex(mpmath.expm1(mpmath.mpc(complex(v)))) for v in z])
    assert np.max(np.abs(got - exact) / np.abs(exact)) < 2 * np.finfo(np.float32).eps


# ---------------------------------------------------------------------------------------
# 18. An LLVM assertion (session 13's campaign, seed 17646, jit(vmap)): the SLP vectoriser
# of llvmlite's LLVM 22 aborted the process compiling the kernel of
#     v1 = x0.std(axis=-2, keepdims=True); return (v1[None, :], v1)   (and a flip, a std)
# The direct back end no longer runs that pass. The case runs in a process of its own, so
# that an abort fails this test rather than ending the test session.

SEED_17646 = """
import json
from tests.fuzz.campaign import cases_for, kind_for, outcome
cases = [c for c in cases_for(17646, 1, kind_for(17646)) if "jit" in c.mode]
print(json.dumps({"modes": [c.mode for c in cases],
                  "outcomes": [outcome(c).status for c in cases]}))
"""


def test_the_kernel_that_aborted_llvms_slp_vectoriser_compiles(tmp_path):
    from tests.helpers import run_json_script

    script = tmp_path / "seed_17646.py"
    script.write_text(SEED_17646)
    report = run_json_script(script, tmp_path / "cache", TRANSFUSE_DIRECT="strict")
    assert report == {"modes": ["jit(vmap)"], "outcomes": ["pass"]}


# ---------------------------------------------------------------------------------------
# 19. Not a transfuse bug (session 13's campaign, seed 18000, vmap(jvp)): JAX's tanh at
# saturation is a few ulps below 1, so its tangent 1 - tanh**2 was further from the exact
# sech**2 than transfuse's 0.0. The oracle's floor scales with the inputs now.


def test_the_tangent_of_a_saturated_tanh_is_within_tanhs_rounding_of_the_exact_one():
    import mpmath

    from tests.fuzz.campaign import cases_for, kind_for, outcome

    (case,) = [c for c in cases_for(18000, 1, kind_for(18000)) if c.mode == "vmap(jvp)"]
    assert outcome(case).status == "pass"
    u, t = 19.36028470859454, 9.972603119693915  # the failing element's pre-activation
    for run in (tx.jvp, lambda f, p, d: tx.jit(lambda a, b: tx.jvp(f, a, b))(p, d)):
        _, got = run(np.tanh, (np.float64(u),), (np.float64(t),))
        exact = float(mpmath.sech(mpmath.mpf(u)) ** 2 * t)
        # tanh(u) rounds to 1.0: 1 - tanh**2 is exact to an ulp of 1, times the tangent
        assert 0 < exact < 1e-15 and abs(float(got) - exact) <= np.finfo(np.float64).eps * t


# ---------------------------------------------------------------------------------------
# 20. np.broadcast_to is a read-only view of its operand (session 15's campaign, seed
# 23388): a later write into the operand shows through it.


def write_after_broadcast(x):
    v = np.broadcast_to(x, (2,) + x.shape)
    w = np.broadcast_to(x, x.shape)  # the same shape: still a view
    x -= 0.5
    return v * 1.0, w * 1.0, x * 1.0


@pytest.mark.parametrize("shape", [(), (1,), (3,), (2, 1)])
@pytest.mark.parametrize("run", RUNS)
def test_a_write_into_an_operand_shows_through_its_broadcast(run, shape):
    x = np.random.default_rng(23388).standard_normal(shape).astype(np.float32)
    # (np.array: x * 2 of a 0-d x is a NumPy scalar; vmap's row is an array)
    assert_same(*run_writing(run, write_after_broadcast, x, np.array(x * 2)))


def test_the_seed_23388_program_passes_in_every_mode():
    from tests.fuzz.campaign import cases_for, kind_for, outcome

    cases = list(cases_for(23388, 4, kind_for(23388)))
    assert {"eager", "functionalize", "jit"} <= {c.mode for c in cases}
    assert [outcome(c).status for c in cases] == ["pass"] * len(cases)


def test_writing_into_a_broadcast_view_is_refused_as_numpy_refuses_it():
    def write_into_broadcast(x):
        v = np.broadcast_to(x, (2, 3))
        v[0, 0] = 1.0  # the line the error names
        return v

    x = np.arange(3.0)
    with pytest.raises(ValueError, match="read-only"):
        write_into_broadcast(x.copy())
    for run in (tx.jit(write_into_broadcast), tx.functionalize(write_into_broadcast)):
        with pytest.raises(tx.MutationError, match="read-only") as caught:
            run(x.copy())
        assert "test_findings.py" in str(caught.value)
