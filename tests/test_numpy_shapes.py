"""Data-dependent shapes (nonzero, argwhere, flatnonzero, unique, x[mask], where(cond)),
size=/fill_value= as in JAX, constructs NumPy gives no hook for (np.array of a list,
np.r_, np.int64(x), float(x)) and tnp.r_/tnp.c_/tnp.array, the zero subgradient of std and
norm, and the shape functions' corners tests/opinfo.py does not reach."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import transfuse as tx
import transfuse.numpy as tnp

HERE = "test_numpy_shapes.py"


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def with_zeros(shape, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * (rng.random(shape) < 0.5)).astype(dtype)


# ---------------------------------------------------------------------------------------
# size= and fill_value=, against JAX; vmap against a loop


def test_sized_results_match_jax(jax64):
    jnp = jax64.numpy
    x = with_zeros((4, 5), seed=1)
    flat = with_zeros((7,), seed=2, dtype=np.float32)

    def f(x, flat):
        return (tnp.nonzero(x, size=3), tnp.nonzero(x, size=25, fill_value=(-1, 7)),
                tnp.nonzero(x > 0, size=0), tnp.flatnonzero(flat, size=9, fill_value=-3),
                tnp.argwhere(x, size=12, fill_value=5), tnp.where(x < 0, size=4),
                tnp.argwhere(flat[0] * 0 + 1.0, size=2))

    got = tx.functionalize(f)(x, flat)  # the traced graph on the interpreter
    expected = (jnp.nonzero(x, size=3), jnp.nonzero(x, size=25, fill_value=(-1, 7)),
                jnp.nonzero(x > 0, size=0), jnp.flatnonzero(flat, size=9, fill_value=-3),
                jnp.argwhere(x, size=12, fill_value=5), jnp.where(x < 0, size=4),
                jnp.argwhere(jnp.asarray(1.0), size=2))
    for g, e in zip(tx.tree_leaves(got), tx.tree_leaves(tuple(map(tuple, [
            expected[0], expected[1], expected[2]])) + tuple(expected[3:5]) +
            tuple(expected[5]) + (expected[6],))):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
        assert np.asarray(g).dtype == np.int64
    # eagerly, size= means the same (compiled: tests/opinfo.py's "tnp.nonzero (size=)")
    for g, e in zip(tnp.nonzero(x, size=25, fill_value=(-1, 7)), expected[1]):
        np.testing.assert_array_equal(g, np.asarray(e))


def test_vmap_of_sized_nonzero_matches_a_loop():
    x = with_zeros((6, 3, 4), seed=3)
    x[2] = 0  # a lane with nothing to find

    def f(row):
        i, j = tnp.nonzero(row, size=5, fill_value=-1)
        return i, j, row[i, j]  # -1 reads the last element: JAX's padding convention

    got = tx.vmap(f)(x)
    for lane in range(x.shape[0]):
        want = f(x[lane])
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g[lane], w)
    assert (got[0][2] == -1).all()


def test_sized_unique_matches_jax(jax64):
    jnp = jax64.numpy
    rng = np.random.default_rng(23)
    x = rng.integers(0, 5, (3, 4)).astype(np.float64)
    x[0, 1] = x[2, 2] = np.nan
    for kw in [dict(size=3), dict(size=8, fill_value=-1.0),
               dict(size=6, return_index=True, return_inverse=True, return_counts=True),
               dict(size=2, return_index=True, return_counts=True),
               dict(size=7, equal_nan=False, return_counts=True)]:
        got = tx.functionalize(lambda v, kw=kw: tnp.unique(v, **kw))(x)
        for g, e in zip(tx.tree_leaves(got), tx.tree_leaves(tuple(
                jnp.unique(x, **kw)) if len(kw) > 2 or "return_counts" in kw else
                jnp.unique(x, **kw))):
            np.testing.assert_array_equal(g, np.asarray(e))
            assert g.shape == np.asarray(e).shape
    lanes = tx.vmap(lambda r: tnp.unique(r, size=3, fill_value=-1.0))(x)
    np.testing.assert_array_equal(lanes, np.stack([jnp.unique(r, size=3, fill_value=-1.0)
                                                   for r in x]))
    y = rng.standard_normal(6)
    y[3] = y[1]  # a repeated value: the gradient goes to its first occurrence, as JAX's
    got = tx.grad(lambda v: np.sum(tnp.unique(v, size=4) ** 2))(y)
    want = jax64.grad(lambda v: jnp.sum(jnp.unique(v, size=4) ** 2))(y)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-14)
    empty = tx.functionalize(lambda v: tnp.unique(v[:0], size=2, fill_value=1.5))(y)
    np.testing.assert_array_equal(empty, [1.5, 1.5])
    with pytest.raises(tx.TransfuseValueError, match="fill_value must be given"):
        tx.functionalize(lambda v: tnp.unique(v[:0], size=2))(y)


def test_size_must_be_a_python_int():
    with pytest.raises(tx.TransfuseValueError, match="size must be a non-negative"):
        tnp.nonzero(np.ones(3), size=-1)
    with pytest.raises(tx.TransfuseValueError, match="fill_value"):
        tnp.nonzero(np.ones((2, 2)), size=3, fill_value=(1, 2, 3))


# ---------------------------------------------------------------------------------------
# Without size=: eager and grad work; jit and vmap ask for size=


def test_eager_results_are_numpys():
    x = with_zeros((3, 4), seed=4)
    for got, want in [(tnp.nonzero(x), np.nonzero(x)), (tnp.argwhere(x), np.argwhere(x)),
                      (tnp.flatnonzero(x), np.flatnonzero(x)),
                      (tnp.where(x > 0), np.where(x > 0)),
                      (tnp.argwhere(np.float64(0.0)), np.argwhere(np.float64(0.0))),
                      (tnp.unique(x, return_counts=True), np.unique(x, return_counts=True))]:
        for g, w in zip(tx.tree_leaves(got), tx.tree_leaves(tuple(want) if isinstance(
                want, tuple) else want)):
            np.testing.assert_array_equal(g, w)
            assert g.dtype == w.dtype and g.shape == w.shape
    with pytest.raises(tx.TransfuseValueError, match="0d arrays"):
        tx.functionalize(lambda v: np.nonzero(v))(np.float64(1.0))


def test_traced_results_without_size_match_numpy():
    x = with_zeros((3, 4), seed=5)

    def f(v):
        return (np.nonzero(v), np.argwhere(v > 0), np.flatnonzero(v), np.where(v < 0),
                v[v > 0], v[1:, :][v[1:, :] != 0], np.unique(v, return_index=True,
                                                             return_inverse=True,
                                                             return_counts=True),
                np.unique(np.round(v), axis=0))

    got = tx.functionalize(f)(x)
    want = f(x)
    for g, w in zip(tx.tree_leaves(got), tx.tree_leaves(want)):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == w.dtype and g.shape == w.shape


def test_grad_through_boolean_masks_matches_jax(jax64):
    jnp = jax64.numpy

    def loss(x, np_=np):
        kept = x[x > 0.3]
        i, j = np_.nonzero(x < -0.5)
        return np_.sum(kept ** 3) + np_.sum(np_.sin(x[i, j])) + np_.sum(
            np_.unique(np_.round(x)) * 0.5)

    for seed in (6, 7):  # two inputs: the graph of one is not reused for the other
        x = rand((4, 5), seed)
        got = tx.grad(loss)(x)
        want = jax64.grad(lambda v: loss(v, jnp))(x)
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12, atol=1e-12)
    from transfuse._reverse import _CACHE
    assert _CACHE.size(loss) == 0  # data-dependent graphs are never cached
    smooth = lambda v: np.sum(v ** 2)  # noqa: E731
    tx.grad(smooth)(x)
    assert _CACHE.size(smooth) == 1


def test_masks_under_other_transforms():
    x = rand((3, 4), 8)
    expected = np.where(x > 0, 3 * x ** 2, 0.0)
    np.testing.assert_allclose(tx.grad(lambda v: np.sum(v[v > 0] ** 3))(x), expected)
    _, tangent = tx.jvp(lambda v: np.sum(v[v > 0] ** 3), (x,), (np.ones_like(x),))
    np.testing.assert_allclose(tangent, expected.sum())
    jac = tx.jacrev(lambda v: v[v > 0])(x)
    np.testing.assert_allclose(jac, np.eye(12)[x.ravel() > 0].reshape(-1, 3, 4))
    np.testing.assert_allclose(tx.jacfwd(lambda v: v[v > 0])(x), jac)
    hess = tx.hessian(lambda v: np.sum(v[v > 0] ** 3))(x)
    np.testing.assert_allclose(hess, np.diag((6 * x * (x > 0)).ravel()).reshape(3, 4, 3, 4))
    second = tx.grad(lambda v: np.sum(tx.grad(lambda y: np.sum(y[y > 0] ** 3))(v)))(x)
    np.testing.assert_allclose(second, 6 * x * (x > 0))


def test_the_mask_is_read_where_the_program_is():
    """The mask's value is the one at that point of the program (after in-place writes)."""
    x = rand((5,), 9)

    def f(v):
        y = v * 1.0
        y[0] = -10.0
        y += 0.25
        return np.sum(y[y > 0] ** 2)

    want = 2 * (x + 0.25) * (x + 0.25 > 0)
    want[0] = 0.0
    np.testing.assert_allclose(tx.grad(f)(x), want)


def test_writes_through_a_traced_mask():
    x = rand((4, 3), 24)
    x[1, 0] = -abs(x[1, 0])  # at least one row is overwritten

    def f(v):
        y = v * 1.0
        y[v > 0] = v[v > 0] ** 2  # values of the mask's length: the data decides it
        y[v[:, 0] < 0] = v[0]  # whole rows
        return y

    np.testing.assert_allclose(tx.functionalize(f)(x), f(x.copy()))
    rows = x[:, 0] < 0
    want = np.where(x > 0, 2 * x, 1.0)
    want[rows] = 0.0
    want[0] += rows.sum()
    np.testing.assert_allclose(tx.grad(lambda v: np.sum(f(v)))(x), want)

    def g(v):  # a 0-d value: a where, also under jit
        y = v * 1.0
        y[v > 0] = 0.5
        return y

    np.testing.assert_allclose(tx.jit(g)(x), g(x.copy()))


def _message(fn, *args):
    with pytest.raises(tx.ConcretizationError) as info:
        fn(*args)
    return str(info.value)


@pytest.mark.parametrize("name, call", [
    ("np.nonzero", lambda v: np.nonzero(v)), ("np.argwhere", lambda v: np.argwhere(v)),
    ("np.flatnonzero", lambda v: np.flatnonzero(v)), ("np.unique", lambda v: np.unique(v)),
    ("np.where", lambda v: np.where(v > 0))])
def test_without_size_jit_and_vmap_name_the_function_and_size(name, call):
    x = rand((3, 4), 10)
    for transform in (tx.jit, tx.vmap):
        message = _message(transform(call), x)
        assert name in message and "size=" in message and HERE in message, message


def test_boolean_mask_indexing_under_jit_names_the_fixes():
    message = _message(tx.jit(lambda v: v[v > 0]), rand((3,), 11))
    assert "x[mask]" in message and "tnp.where" in message and "size=" in message
    assert HERE in message


def test_grad_under_jit_still_asks_for_size():
    message = _message(tx.jit(tx.grad(lambda v: np.sum(v[v > 0]))), rand((3,), 12))
    assert "x[mask]" in message


# ---------------------------------------------------------------------------------------
# Constructs NumPy gives no hook for


CONSTRUCTS = [
    ("np.mean", "np.stack", lambda a, b: np.mean([a, b])),
    ("np.array", "np.stack", lambda a, b: np.array([a, b])),
    ("np.asarray", "tnp.array", lambda a, b: np.asarray([a[0], b[1]])),
    ("np.r_", "tnp.r_", lambda a, b: np.r_[a, b]),
    ("np.c_", "tnp.c_", lambda a, b: np.c_[a, b]),
    ("np.int64", "astype", lambda a, b: np.int64(a[0])),
    ("np.float32", "astype", lambda a, b: np.float32(a[0])),
    ("float", "astype", lambda a, b: float(a[0])),
    ("int", "astype", lambda a, b: int(a[0])),
]


@pytest.mark.parametrize("construct, fix, fn", CONSTRUCTS, ids=[c[0] for c in CONSTRUCTS])
def test_constructs_without_a_hook_name_themselves_and_the_fix(construct, fix, fn):
    message = _message(tx.jit(fn), rand((3,), 13), rand((3,), 14))
    assert f"{construct}(" in message or f"{construct}[" in message, message
    assert fix in message and HERE in message, message


def test_traced_r_c_and_array_match_numpy():
    a, b = rand((3,), 15), rand((2, 3), 16)
    cases = [
        lambda a, b, m: m.r_[a, 0.5, b[0], 1:4],
        lambda a, b, m: m.r_[a, 0:1:5j],
        lambda a, b, m: m.c_[a, b[1], a],
        lambda a, b, m: m.c_[b.T, a],
        lambda a, b, m: m.r_["0,2", a, b],
        lambda a, b, m: m.r_["0,2,0", a, b.T[:, :1]],
        lambda a, b, m: m.r_["1,2,0", a, b.T],
        lambda a, b, m: m.r_["-1", b, b],
        lambda a, b, m: m.r_[a.astype(np.float32), 2],
        lambda a, b, m: m.r_[a.astype(np.int32), 2.5],
        lambda a, b, m: m.array([[a[0], 1.0], [b[1, 1], a[2]]]),
        lambda a, b, m: m.asarray([a, b[0]]),
        lambda a, b, m: m.mean([a, b[0]], axis=0),
    ]
    got = tx.functionalize(lambda a, b: [case(a, b, tnp) for case in cases])(a, b)
    for g, case in zip(got, cases):
        want = case(a, b, np)
        np.testing.assert_allclose(g, want, rtol=1e-15)
        assert g.dtype == want.dtype and g.shape == want.shape
    compiled = tx.jit(lambda a, b: [case(a, b, tnp) for case in cases[2:5]])(a, b)
    for g, case in zip(compiled, cases[2:5]):
        np.testing.assert_array_equal(g, case(a, b, np))
    # eagerly on NumPy arrays: NumPy's results
    np.testing.assert_array_equal(tnp.r_[a, 1:3, 7], np.r_[a, 1:3, 7])
    g = tx.grad(lambda a: np.sum(tnp.r_[a, a[::-1] * 2] ** 2))(a)
    np.testing.assert_allclose(g, 2 * a + 8 * a)
    with pytest.raises(tx.UnsupportedError, match="np.matrix"):
        tx.jit(lambda a: tnp.r_["r", a, a])(a)


# ---------------------------------------------------------------------------------------
# std and norm at zero: the subgradient 0 (torch's), not NaN


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_std_and_norm_have_zero_gradient_at_zero_like_torch(dtype):
    torch = pytest.importorskip("torch")
    const = np.full((2, 3), 1.5, dtype)
    zeros = np.zeros((2, 3), dtype)
    mixed = np.array([[1.0, 1.0, 1.0], [0.5, -2.0, 3.0]], dtype)  # one zero-variance row
    cases = [
        (lambda x: np.std(x), lambda t: torch.std(t, correction=0), const),
        (lambda x: np.sum(np.std(x, axis=1, ddof=1)),
         lambda t: torch.std(t, dim=1, correction=1).sum(), mixed),
        (lambda x: np.linalg.norm(x), lambda t: torch.linalg.norm(t), zeros),
        (lambda x: np.sum(np.linalg.norm(x * mixed, axis=1)),
         lambda t: torch.linalg.vector_norm(t * torch.tensor(mixed), dim=1).sum(), zeros),
        (lambda x: np.linalg.norm(x, ord=3, axis=0).sum(),
         lambda t: torch.linalg.vector_norm(t, ord=3, dim=0).sum(), zeros),
        (lambda x: np.linalg.norm(x, "fro"), lambda t: torch.linalg.matrix_norm(t, "fro"),
         zeros),
        (lambda x: np.linalg.norm(x - mixed[0]), lambda t: torch.linalg.norm(
            t - torch.tensor(mixed[0])), mixed[:1]),
    ]
    for f, torch_f, x in cases:
        t = torch.tensor(x, requires_grad=True)
        torch_f(t).backward()
        want = t.grad.numpy()
        got = tx.grad(f)(x)
        assert got.dtype == dtype and not np.isnan(got).any()
        np.testing.assert_allclose(got, want, atol=1e-6)
        np.testing.assert_allclose(tx.jacfwd(f)(x), want, atol=1e-6)
    if dtype == np.float64:
        return
    # compiled: one program of three cases' gradients; values stay NumPy's, NaN included
    nan = np.array([0.0, np.nan, 2.0], dtype)
    some = [cases[1], cases[3], cases[5]]
    compiled = tx.jit(lambda *xs: [tx.grad(f)(x) for (f, _, _), x in zip(some, xs)] + [
        np.std(xs[-1]), np.std(xs[0] * 0), np.std(xs[0], axis=1)])(*[c[2] for c in some], nan)
    for g, (f, _, x) in zip(compiled, some):
        np.testing.assert_allclose(g, tx.grad(f)(x), atol=1e-6)
    assert np.isnan(compiled[-3]) and compiled[-2] == 0
    np.testing.assert_array_equal(compiled[-1], np.std(mixed, axis=1))


# ---------------------------------------------------------------------------------------
# Shape functions: what the catalogue's samples do not reach


def test_shape_function_corners():
    a, b = rand((4, 2), 17), rand((4, 3), 18)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # NumPy 2: 2-vectors
        for x, y in [(a, b), (b, a), (a, a)]:
            np.testing.assert_allclose(tx.functionalize(np.cross)(x, y), np.cross(x, y))
    idx = np.array([[0, 1], [1, 0]])
    with pytest.raises(tx.TransfuseValueError, match="invalid entry in choice array"):
        tx.functionalize(lambda c: np.choose(idx + 1, [c, c]))(rand((2, 2), 19))
    with pytest.raises(IndexError):  # a traced index out of range raises when it runs
        tx.jit(lambda i, c: np.choose(i, [c, c]))(idx * 2, rand((2, 2), 20))
    with pytest.raises(IndexError, match="out of bounds"):  # traced: when the graph runs
        tx.functionalize(lambda i: np.unravel_index(i, (3, 4)))(np.array([12]))
    with pytest.raises(IndexError):
        tx.jit(lambda i: np.unravel_index(i, (3, 4)))(np.array([3, 12]))
    with pytest.raises(IndexError):
        tx.jit(lambda i, j: np.ravel_multi_index((i, j), (3, 4)))(np.array([1]), np.array([-1]))
    with pytest.raises(tx.TransfuseValueError, match="cannot include zero"):
        tx.functionalize(lambda s: np.geomspace(0.0, s, 3))(np.float64(2.0))
    with pytest.raises(tx.TransfuseValueError, match="hsplit only works"):
        tx.functionalize(lambda v: np.hsplit(v, 1))(np.float64(2.0))
    with pytest.raises(tx.TransfuseValueError, match="Axes must be different"):
        tx.functionalize(lambda v: np.rot90(v, axes=(1, 1)))(a)
    with pytest.raises(tx.TransfuseTypeError, match="condlist"):
        tx.functionalize(lambda v: np.select([v], [v]))(a)
    sq = rand((3, 3), 21)
    got = tx.functionalize(lambda m: (np.tril_indices_from(m, k=-1), np.diag_indices_from(m),
                                      m[np.triu_indices_from(m, 1)]))(sq)
    want = (np.tril_indices_from(sq, k=-1), np.diag_indices_from(sq),
            sq[np.triu_indices_from(sq, 1)])
    for g, w in zip(tx.tree_leaves(got), tx.tree_leaves(want)):
        np.testing.assert_array_equal(g, w)
    assert tnp.tril_indices is np.tril_indices and tnp.diag_indices is np.diag_indices
    # piecewise under grad: each branch's derivative where its condition holds
    x = rand((10,), 22)
    g = tx.grad(lambda v: np.sum(np.piecewise(v, [v < 0], [np.sin, lambda u: u ** 2])))(x)
    np.testing.assert_allclose(g, np.where(x < 0, np.cos(x), 2 * x))
    # eagerly and under grad each function sees only its part, as in NumPy: no NaN from
    # sqrt of the negative entries (under jit, JAX's where: the NaN reaches the gradient)
    g = tx.grad(lambda v: np.sum(np.piecewise(v, [v < 0, v >= 0], [0.5, np.sqrt])))(x)
    np.testing.assert_allclose(g, np.where(x >= 0, 0.5 / np.sqrt(np.abs(x)), 0.0))
