"""Contractions with an identity, one-hot or diagonal operand, rewritten by jit
(compiler/structured_basis.py): the Hessian, jacfwd and jacrev against JAX and finite
differences; the rewritten product against the dense one bit for bit with inf, NaN, -0.0
and huge finite entries; the optimised graph's structure. Also the two rewrites that make
the bench's Hessian one pass and one gemm: compiler/unit_contractions.py and
compiler/transpose_sinking.py."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.compiler import simplify as simplify_module
from transfuse.compiler import structured_basis
from transfuse.compiler.functionalize import prepare as optimise_pure
from transfuse.compiler.simplify import simplify
from transfuse.compiler.structured_basis import _columns, _StaticValues
from transfuse.ir.interpreter import interpret

import transfuse as tx

RNG = np.random.default_rng(2026_12_06)
A = RNG.standard_normal((5, 5)) / 2
B = RNG.standard_normal((3, 4))
C = RNG.standard_normal((4, 6))


def tanh_sum(x):
    """The bench's objective, sum(tanh(A x))."""
    return np.sum(np.tanh(A[:x.shape[0], :x.shape[0]].astype(x.dtype) @ x))


def scalar_f(x):
    """A function of a 0-d input."""
    return np.sin(x) * x * x


def quad(x, y):
    """x^T B y + sum(x^2 y): its Hessian w.r.t. (x, y) pushes one-hot basis blocks."""
    b = B[:, :3].astype(x.dtype)
    return x @ b @ y + np.sum(x[:2] * x[:2] * y[:2])


def softmax_ce(w):
    """Softmax cross-entropy of the logits C^T w, label 2."""
    z = w @ C.astype(w.dtype)
    z = z - np.max(z)
    return np.log(np.sum(np.exp(z))) - z[2]


def vec_f(x):
    return np.tanh(A.astype(x.dtype) @ x) * x


def mat_f(w):
    return np.sin(w @ C.astype(w.dtype))


def derivatives(x5, x1, x0, x3, y3, w, m):
    """Every Jacobian and Hessian under test, in one program (one compile per dtype)."""
    return (tx.hessian(tanh_sum)(x5), tx.hessian(tanh_sum)(x1), tx.hessian(scalar_f)(x0),
            tx.hessian(quad, argnums=(0, 1))(x3, y3), tx.hessian(softmax_ce)(w),
            tx.jacfwd(vec_f)(x5), tx.jacrev(vec_f)(x5), tx.jacfwd(mat_f)(m),
            tx.jacrev(mat_f)(m))


def jax_derivatives(x5, x1, x0, x3, y3, w, m):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    dt = x5.dtype

    def j_tanh_sum(x):
        return jnp.sum(jnp.tanh(jnp.asarray(A[:x.shape[0], :x.shape[0]], dt) @ x))

    def j_quad(x, y):
        return x @ jnp.asarray(B[:, :3], dt) @ y + jnp.sum(x[:2] * x[:2] * y[:2])

    def j_softmax_ce(v):
        z = v @ jnp.asarray(C, dt)
        z = z - jnp.max(z)
        return jnp.log(jnp.sum(jnp.exp(z))) - z[2]

    def j_vec_f(x):
        return jnp.tanh(jnp.asarray(A, dt) @ x) * x

    def j_mat_f(v):
        return jnp.sin(v @ jnp.asarray(C, dt))

    def all_of_them(x5, x1, x0, x3, y3, w, m):  # one XLA compile (op by op: 10 s)
        return (jax.hessian(j_tanh_sum)(x5), jax.hessian(j_tanh_sum)(x1),
                jax.hessian(lambda x: jnp.sin(x) * x * x)(x0),
                jax.hessian(j_quad, argnums=(0, 1))(x3, y3), jax.hessian(j_softmax_ce)(w),
                jax.jacfwd(j_vec_f)(x5), jax.jacrev(j_vec_f)(x5), jax.jacfwd(j_mat_f)(m),
                jax.jacrev(j_mat_f)(m))
    out = jax.jit(all_of_them)(x5, x1, x0, x3, y3, w, m)
    return jax.tree_util.tree_map(np.asarray, out)


def fd_hessian(f, x, h=1e-4):
    """Central second differences of a float64 function of one flat input."""
    x = np.asarray(x, np.float64)
    n = x.size
    hess = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            e_i = np.zeros(n)
            e_j = np.zeros(n)
            e_i[i], e_j[j] = h, h

            def at(d):
                return f((x.reshape(-1) + d).reshape(x.shape))
            hess[i, j] = (at(e_i + e_j) - at(e_i - e_j) - at(e_j - e_i)
                          + at(-e_i - e_j)) / (4 * h * h)
    return hess.reshape(x.shape + x.shape)


def fd_jacobian(f, x, h=1e-6):
    x = np.asarray(x, np.float64)
    cols = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        cols.append((f(x + e.reshape(x.shape)) - f(x - e.reshape(x.shape))) / (2 * h))
    out = np.stack(cols, axis=-1)
    return out.reshape(np.shape(f(x)) + x.shape)


def inputs(dtype):
    rng = np.random.default_rng(7)
    return tuple(rng.standard_normal(s).astype(dtype)
                 for s in [(5,), (1,), (), (3,), (3,), (4,), (3, 4)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_derivatives_match_jax_and_finite_differences(dtype):
    """The graph jit compiles (rewritten), run by the interpreter: one Numba compile of
    all nine transforms costs a minute; the compiled rewrite is checked below."""
    args = inputs(dtype)
    assert len(structured_contractions(tx.make_graph(derivatives)(*args))) >= 9
    graph = tx.jit(derivatives).lower(*args).graph
    assert structured_contractions(graph) == []  # every basis product rewritten
    got = interpret(graph, list(args))
    want = tx.tree_leaves(jax_derivatives(*args))
    tol = 1e-11 if dtype == np.float64 else 2e-5
    assert len(got) == len(want) == 12
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
    if dtype == np.float32:
        return
    x5, x1, x0, x3, y3, w, m = args
    fd = [fd_hessian(tanh_sum, x5), fd_hessian(tanh_sum, x1), fd_hessian(scalar_f, x0),
          fd_hessian(lambda v: quad(v[:3], v[3:]), np.concatenate([x3, y3])),
          fd_hessian(softmax_ce, w), fd_jacobian(vec_f, x5), fd_jacobian(vec_f, x5),
          fd_jacobian(mat_f, m), fd_jacobian(mat_f, m)]
    h_xy = fd[3]
    fd[3:4] = [h_xy[:3, :3], h_xy[:3, 3:], h_xy[3:, :3], h_xy[3:, 3:]]
    for g, f in zip(got, fd):
        np.testing.assert_allclose(g, f, rtol=1e-5, atol=1e-6)


def structured_contractions(graph) -> list:
    """The graph's contractions that have an identity, one-hot or diagonal operand (outer
    products, which contract nothing, are left alone)."""
    static = _StaticValues(graph)
    found = []
    for node in graph.nodes:
        if node.prim.name != "dot_general" or not node.params["dimension_numbers"][0][0]:
            continue
        (lc, rc), _ = node.params["dimension_numbers"]
        for v, contract in zip(node.inputs, (lc, rc)):
            value = static.value(v)
            if value is not None and _columns(value, tuple(contract)) is not None:
                found.append(node)
    return found


def test_the_bench_hessian_is_one_product():
    """bench/suite_hessian.py's Hessian compiles to A x and one product A^T diag(c) A."""
    x, a = RNG.standard_normal(6), RNG.standard_normal((6, 6))
    hessian = tx.jit(tx.hessian(lambda x, a: np.sum(np.tanh(a @ x))))
    t = np.tanh(a @ x)
    closed_form = (a.T * (-2 * t * (1 - t * t))) @ a
    np.testing.assert_allclose(hessian(x, a), closed_form, rtol=1e-12, atol=1e-12)
    lowered = hessian.lower(x, a)
    names = [n.prim.name for n in lowered.graph.nodes]
    assert names.count("dot_general") == 2 and "iota" not in names
    fused = [n for r in lowered.fused_graph.nodes
             for n in (r.params["graph"].nodes if "graph" in r.params else [r])]
    # no transposed copy or read of a matrix: A is read in memory order by the pass that
    # scales it, the product takes it transposed (compiler/transpose_sinking.py), and the
    # result's transpose folds into the product (compiler/unit_contractions.py, then
    # fusion.fold_transposes); only the curvature vectors are relabelled (6,) -> (6, 1)
    assert [n.outputs[0].aval.shape for n in fused if n.prim.name == "transpose"] in (
        [], [(6, 1)], [(6, 1), (6, 1)])
    assert [n.prim.name for n in fused].count("dot_general") == 2


# ---------------------------------------------------------------------------------------
# Exactness: the rewrite against the dense product, bit for bit


def hostile(shape, dtype, rng):
    """Random values with inf, -inf, NaN, -0.0 and huge finite entries in chosen rows:
    row 0 one inf, row 1 a NaN and an inf, row 2 -0.0s, row 3 huge values, row 4 -inf."""
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(shape[0], -1)
    huge = np.finfo(dtype).max / 2
    flat[0, 1] = np.inf
    flat[1, 0], flat[1, -1] = np.nan, np.inf
    flat[2, ::2] = -0.0
    flat[3, :] = huge * np.sign(flat[3, :])
    flat[4, -1] = -np.inf
    return x


def products(x, m):
    """Contractions of x (6, 4) and m (5, 2, 3) with structured constants."""
    dt = x.dtype
    diag = np.diag(np.array([2.5, -1.0, 0.5, -3.0], dt))
    one_hot = np.eye(4, 7, k=-2, dtype=dt)  # columns 0, 1 and 6 empty
    return (x @ np.eye(4, dtype=dt),              # identity, E on the right
            np.eye(4, dtype=dt) @ x.T,            # identity, E on the left
            x @ one_hot,                          # a one-hot block, empty columns
            x @ diag,                             # a diagonal
            diag @ x.T,
            np.einsum("ijk,jkl->il", m, np.eye(6, dtype=dt).reshape(2, 3, 6)),
            x[:0] @ np.eye(4, dtype=dt),          # size 0
            x[:, :1] @ np.ones((1, 3), dt),       # one row: an outer product with ones
            np.transpose(x @ np.eye(4, dtype=dt)))  # a transposed consumer


def numpy_products(x, m):
    with np.errstate(all="ignore"):  # 0 * inf: NumPy's own NaNs, the expected answer
        return tuple(np.asarray(p) for p in products(x, m))


def assert_bitwise(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    np.testing.assert_array_equal(np.signbit(got[~nan]), np.signbit(want[~nan]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rewrite_is_exact_for_non_finite_and_signed_zeros(dtype, monkeypatch):
    rng = np.random.default_rng(11)
    x, m = hostile((6, 4), dtype, rng), hostile((5, 2, 3), dtype, rng)
    graph = tx.make_graph(products)(x, m)
    rewritten = tx.jit(products).lower(x, m).graph
    assert len(structured_contractions(graph)) == 9
    assert not any(n.prim.name == "dot_general" for n in rewritten.nodes)
    with np.errstate(all="ignore"):
        dense = interpret(graph, [x, m])  # the interpreter, rewrite not applied
    jitted = tx.jit(products)(x, m)
    for want, interp, fast, np_value in zip(dense, interpret(rewritten, [x, m]), jitted,
                                            numpy_products(x, m)):
        assert_bitwise(want, np_value)
        assert_bitwise(interp, want)
        assert_bitwise(fast, want)
    # a row with one inf keeps it in its own column and is NaN in the others (0 * inf);
    # a row with two non-finite entries is all NaN; -0.0 comes out +0.0, as the dense sum's
    identity = dense[0]
    assert identity[0, 1] == np.inf and np.isnan(np.delete(identity[0], 1)).all()
    zeros = identity[2][x[2] == 0]
    assert np.isnan(identity[1]).all() and zeros.size == 2 and not np.signbit(zeros).any()
    if dtype == np.float64:  # jit with the rewrite switched off: the BLAS/loop products
        monkeypatch.setattr(structured_basis, "structured_products", lambda g: g)
        assert any(n.prim.name == "dot_general"
                   for n in simplify_module.simplify(optimise_pure(graph)).nodes)
        for fast, dense_jit in zip(jitted, tx.jit(lambda x, m: products(x, m))(x, m)):
            assert_bitwise(fast, dense_jit)


def test_unstructured_operands_stay_products():
    x = RNG.standard_normal((3, 4))

    x[1, 2] = -0.0

    def f(x):  # two nonzeros in a column; a non-finite constant; an outer product (its
        # -0.0 * 1 is -0.0: no sum from +0.0, so nothing to rewrite, as NTK's eye x J)
        return (x @ (np.eye(4) + np.eye(4)[::-1]), x @ np.diag([1.0, np.inf, 1.0, 1.0]),
                np.einsum("ab,nh->abnh", np.eye(2), x))
    graph = tx.make_graph(f)(x)
    simplified = simplify(optimise_pure(graph))
    assert sum(n.prim.name == "dot_general" for n in simplified.nodes) == 3
    with np.errstate(all="ignore"):
        for got, want in zip(interpret(simplified, [x]), interpret(graph, [x])):
            assert_bitwise(got, want)
    assert np.signbit(interpret(simplified, [x])[2][0, 0, 1, 2])


def test_transposes_sink_into_contractions():
    """transpose -> elementwise ops -> dot_general: the ops run on the untransposed value
    (their vector, matrix and scalar operands transposed), the dot reads it through its
    dimension numbers; the same bits. Free axes that would come out permuted are left."""
    a, b, v = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 5)), RNG.standard_normal(4)
    m, c = RNG.standard_normal((3, 4)), RNG.standard_normal((2, 3, 4))

    def f(a, b, v, m, c):
        sunk = np.tanh(a.T * v * 2.0 + m) @ b  # (3, 4) @ (4, 5)
        kept = np.tensordot(np.transpose(c, (1, 0, 2)) * 3.0, b, axes=(2, 0))
        return sunk, kept
    args = [a, b, v, m, c]
    graph = tx.make_graph(f)(*args)
    lowered = tx.jit(f).lower(*args).graph
    dots = [n for n in lowered.nodes if n.prim.name == "dot_general"]
    assert dots[0].params["dimension_numbers"][0] == ((0,), (0,))  # a read as a^T by the dot
    big_transposes = [n for n in lowered.nodes if n.prim.name == "transpose"
                      and n.outputs[0].aval.shape == (3, 4)]
    assert big_transposes == []
    assert any(n.prim.name == "transpose" and n.outputs[0].aval.ndim == 3
               for n in lowered.nodes)  # c's free axes would come out swapped: kept
    for got, want in zip(interpret(lowered, args), interpret(graph, args)):
        assert_bitwise(got, want)
