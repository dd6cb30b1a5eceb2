"""jit reuses a Cholesky factor the program computed (compiler/linalg_rewrites.py): solves,
log-determinants and inverses of the factored matrix, and the Cholesky VJP of a diagonal
cotangent. Each rewrite: the compiled result against the reference interpreter of the
unrewritten program, the optimised graph's structure, and NumPy's behaviour where the
rewrite's run-time check fails (a matrix that is not symmetric) or NumPy raises."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from transfuse.ir.interpreter import interpret
from transfuse.runtime import cpu_kernels

import transfuse as tx

RNG = np.random.default_rng(2026_12_14)
N = 40  # above REUSE_MIN_ORDER's 32: the order the solve rewrite starts at
LINALG = ("cholesky", "solve", "triangular_solve", "slogdet", "solve_by_cholesky",
          "slogdet_by_cholesky", "cholesky_inverse")


def spd(shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    a = RNG.normal(size=shape)
    return (a @ np.swapaxes(a, -1, -2) / shape[-1] + np.eye(shape[-1])).astype(dtype)


def gp_nll(k, y):
    """A GP's negative log-likelihood as users write it: cholesky, solve, log-diagonal."""
    low = np.linalg.cholesky(k)
    alpha = np.linalg.solve(k, y)
    return 0.5 * np.sum(y * alpha) + np.sum(np.log(np.diagonal(low, axis1=-2, axis2=-1)))


def linalg_counts(f, *args) -> Counter:
    """How often each linear-algebra primitive appears in the graph jit compiles."""
    graph = tx.jit(f).lower(*args).graph
    return Counter(n.prim.name for n in graph.nodes if n.prim.name in LINALG)


def assert_jit_matches_the_interpreter(f, args, tol=1e-10):
    """jit(f) against f traced by the interpreter, and the rewritten graph run by the
    interpreter too (the new primitives' reference implementations)."""
    want = tx.tree_flatten(f(*args))[0]
    got = tx.tree_flatten(tx.jit(f)(*args))[0]
    rewritten = interpret(tx.jit(f).lower(*args).graph, list(args))
    for g, r, w in zip(got, rewritten, want):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
        np.testing.assert_allclose(r, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("batch", [(), (2,)])
def test_gp_gradient_factors_once(batch):
    k, y = spd(batch + (N, N)), RNG.normal(size=batch + (N, 2))
    f = tx.grad_and_value(gp_nll)
    assert_jit_matches_the_interpreter(f, (k, y))
    # one factorization; both solves (forward, and the VJP's with K^T) reuse it; the
    # Cholesky VJP of the diagonal cotangent is one cholesky_inverse (no product with
    # diag(v), no triangular solves with n x n right-hand sides)
    assert linalg_counts(f, k, y) == Counter(
        {"cholesky": 1, "solve_by_cholesky": 2, "cholesky_inverse": 1})


def test_inverse_and_log_determinant_reuse_the_factor():
    def f(k):
        low = np.linalg.cholesky(k)
        return np.sum(low[:, 0]) + np.linalg.slogdet(k)[1] + np.sum(np.linalg.inv(k) ** 2)

    k = spd((N, N))
    assert_jit_matches_the_interpreter(tx.grad_and_value(f), (k,))
    counts = linalg_counts(tx.grad_and_value(f), k)
    assert counts["slogdet_by_cholesky"] == 1 and counts["cholesky"] == 1
    assert counts["solve"] == counts["slogdet"] == 0


def test_a_matrix_that_is_not_symmetric_takes_numpys_lu():
    """cholesky reads the lower triangle only: it succeeds on a matrix whose upper
    triangle differs, and solve and slogdet must still use the whole matrix (here the
    second of the stack; the first, symmetric, takes the factor)."""
    k = spd((2, N, N))
    k[1] += 0.1 * np.triu(RNG.normal(size=(N, N)), 1)
    b = RNG.normal(size=(2, N, 3))

    def f(k, b):
        return np.linalg.cholesky(k), np.linalg.solve(k, b), np.linalg.slogdet(k)[1]

    assert linalg_counts(f, k, b)["solve_by_cholesky"] == 1
    for got, want in zip(tx.jit(f)(k, b), f(k, b)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_a_matrix_that_is_not_positive_definite_raises_as_in_numpy():
    k = spd((N, N)) - 3 * np.eye(N)  # symmetric, indefinite
    f = tx.jit(lambda k: np.linalg.solve(k, np.linalg.cholesky(k)))
    with pytest.raises(np.linalg.LinAlgError):
        f(k)


def test_small_matrices_and_dense_cotangents_keep_their_form():
    small = spd((8, 8))
    assert linalg_counts(tx.grad(gp_nll), small, np.ones((8, 1)))["solve"] == 2
    dense = tx.grad(lambda k: np.sum(np.linalg.cholesky(k) ** 2))
    assert linalg_counts(dense, spd((N, N)))["triangular_solve"] == 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cholesky_vjp_with_weights_of_either_sign(dtype):
    """Negative weights take cholesky_inverse's general product, positive ones lauum."""
    c = np.linspace(-1, 1, N).astype(dtype)

    def f(k):
        return np.sum(c * np.log(np.diagonal(np.linalg.cholesky(k))))

    k = spd((N, N), dtype)
    assert_jit_matches_the_interpreter(tx.grad(f), (k,), tol=1e-4 if dtype == np.float32
                                       else 1e-10)
    assert linalg_counts(tx.grad(f), k)["cholesky_inverse"] == 1


@pytest.mark.parametrize("w", [np.full(N, 0.5), np.linspace(-1, 1, N),
                               np.r_[np.nan, np.ones(N - 1)]])
def test_cholesky_inverse_kernel(w):
    low = np.linalg.cholesky(spd((1, N, N)))
    out = np.empty_like(low)
    cpu_kernels.linalg_cholesky_inverse(low, w[None], out)
    inverse = np.linalg.inv(low[0])
    np.testing.assert_allclose(out[0], inverse.T @ (w[:, None] * inverse), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_array_equal(out[0], out[0].T)
    low[0, 3, 3] = 0
    with pytest.raises(np.linalg.LinAlgError):
        cpu_kernels.linalg_cholesky_inverse(low, w[None], out)
