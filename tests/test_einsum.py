"""np.einsum in every form beyond the catalogue (tests/opinfo.py): diagonals and traces,
the interleaved sublist form, ellipses with broadcasting, implicit outputs, `optimize=`,
three and more operands; against NumPy in float64 and float32, gradients against JAX and
finite differences, vmap against a loop, jit against the interpreter, the contraction order
and BLAS calls, views, np.einsum_path, and NumPy's errors."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.ir.errors import ShapeError, TransfuseError

import transfuse as tx
import transfuse.numpy as tnp
from tests.helpers import primitives_of, traced

RNG = np.random.default_rng(0)
E = Ellipsis


def arr(*shape):
    return RNG.standard_normal(shape)


# Each case: np.einsum's positional arguments (arrays in place) and its keyword arguments.
CASES = [
    (("ii->i", arr(3, 3)), {}),
    (("ii->", arr(3, 3)), {}),
    (("ii", arr(4, 4)), {}),  # implicit output: a trace
    (("iij->j", arr(3, 3, 4)), {}),
    (("iji->ij", arr(3, 2, 3)), {}),
    (("iii->", arr(3, 3, 3)), {}),
    (("ii,ij->j", arr(3, 3), arr(3, 4)), {}),
    (("ii,jj,ij->ij", arr(3, 3), arr(4, 4), arr(3, 4)), {}),  # repeated in several operands
    (("ij,jk->ik", arr(3, 4), arr(4, 5)), {}),
    (("ij,kj->ki", arr(3, 4), arr(5, 4)), {}),
    (("ij,jk", arr(3, 4), arr(4, 2)), {}),
    (("Ba,aC", arr(2, 3), arr(3, 4)), {}),  # implicit: uppercase sorts first, as in NumPy
    (("ij,ij->", arr(3, 4), arr(3, 4)), {}),
    (("i,j->ij", arr(3), arr(4)), {}),
    (("i,->i", arr(3), arr()), {}),
    (("->", arr()), {}),
    (("ij->ji", arr(3, 4)), {}),
    (("...ij,...jk->...ik", arr(2, 1, 3, 4), arr(5, 4, 2)), {}),  # ellipsis dims broadcast
    (("...ij,...jk", arr(2, 3, 4), arr(4, 2)), {}),
    (("i...->...", arr(3, 2, 2)), {}),
    (("ij,j->i", arr(2, 1), arr(3)), {}),  # a size-1 label broadcasts, as in NumPy
    (("ij,jk->ik", arr(3, 0), arr(0, 2)), {}),
    (("ij,jk,kl->il", arr(2, 3), arr(3, 4), arr(4, 5)), {}),
    (("ab,bc,cd,de->ae", arr(2, 6), arr(6, 3), arr(3, 5), arr(5, 2)), {}),
    (("bij,bjk,bkl->bil", arr(2, 3, 4), arr(2, 4, 2), arr(2, 2, 3)), {}),
    (("i,i,i->i", arr(4), arr(4), arr(4)), {}),
    (("ij,jk,kl->il", arr(2, 3), arr(3, 4), arr(4, 5)), dict(optimize=True)),
    (("ij,jk,kl->il", arr(2, 3), arr(3, 4), arr(4, 5)), dict(optimize="greedy")),
    (("ij,jk,kl->il", arr(2, 3), arr(3, 4), arr(4, 5)), dict(optimize="optimal")),
    (("ij,jk,kl->", arr(2, 3), arr(3, 4), arr(4, 5)),
     dict(optimize=["einsum_path", (1, 2), (0, 1)])),
    (("ij,jk,kl->il", arr(2, 3), arr(3, 4), arr(4, 5)), dict(optimize=("greedy", 10 ** 6))),
    ((arr(2, 3), [0, 1], arr(3, 4), [1, 2], [0, 2]), {}),  # the interleaved form
    ((arr(2, 3), [0, 1], arr(3, 4), [1, 2]), {}),
    ((arr(3, 3), [0, 0]), {}),
    ((arr(2, 1, 3), [E, 0], arr(5, 3, 4), [E, 0, 1], [E, 1]), {}),
    ((arr(4, 3), [1, 0], arr(3, 2), [0, 2], arr(2, 5), [2, 3], [1, 3]), dict(optimize=True)),
]
IDS = [f"{c[0] if isinstance(c[0], str) else 'sublists'}-{i}" for i, (c, _) in enumerate(CASES)]


def arrays_of(args) -> list[int]:
    return [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]


def as_function(args, kwargs, einsum=np.einsum):
    """The case as a function of its arrays."""
    where = arrays_of(args)

    def f(*xs):
        filled = list(args)
        for i, x in zip(where, xs):
            filled[i] = x
        return einsum(*filled, **kwargs)
    return f


def arrays(args, dtype=np.float64) -> list[np.ndarray]:
    return [args[i].astype(dtype) for i in arrays_of(args)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_traced_matches_numpy(case, dtype):
    args, kwargs = CASES[case]
    xs = arrays(args, dtype)
    want = as_function(args, kwargs)(*xs)
    got = traced(as_function(args, kwargs), *xs)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-5 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    tnp_got = traced(as_function(args, kwargs, tnp.einsum), *xs)
    np.testing.assert_allclose(tnp_got, want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(as_function(args, kwargs, tnp.einsum)(*xs), want)


JITTED = {"iij->j": "float64", "ii,jj,ij->ij": "float32", "...ij,...jk->...ik": "float64",
          "ij,j->i": "float64", "ij,jk,kl->il": "float32", "sublists": "float64"}


def test_jit_matches_the_interpreter():
    """One compile (they are slow): a case of each kind of step, in one program."""
    chosen = {}
    for (args, kwargs), name in zip(CASES, IDS):
        chosen.setdefault(name.rsplit("-", 1)[0], (args, kwargs))
    calls = [as_function(*chosen[name]) for name in JITTED]
    inputs = [arrays(chosen[name][0], dt) for name, dt in JITTED.items()]

    def program(*groups):
        return tuple(f(*xs) for f, xs in zip(calls, groups))

    got = tx.jit(program)(*inputs)
    for g, f, xs in zip(got, calls, inputs):
        want = traced(f, *xs)
        assert g.dtype == want.dtype and g.shape == want.shape
        tol = 2e-5 if want.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(g, want, rtol=tol, atol=tol)


def _loss(f):
    return lambda *xs: (np.sin(f(*xs)) * np.linspace(0.5, 1.5, np.size(f(*xs))).reshape(
        np.shape(f(*xs)))).sum()


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_grad_matches_jax_and_finite_differences(case, jax64):
    args, kwargs = CASES[case]
    xs = arrays(args)
    argnums = tuple(range(len(xs)))
    got = tx.grad(_loss(as_function(args, kwargs)), argnums=argnums)(*xs)
    if not any(x.size for x in xs):  # size-0 operands: empty gradients of their shapes
        assert [(g.shape, g.dtype) for g in got] == [(x.shape, x.dtype) for x in xs]
        return
    jnp = jax64.numpy
    jax_kwargs = {k: v for k, v in kwargs.items() if k != "optimize"}

    def jax_loss(*vs):
        y = as_function(args, jax_kwargs, jnp.einsum)(*vs)
        return (jnp.sin(y) * np.linspace(0.5, 1.5, y.size).reshape(y.shape)).sum()

    want = jax64.grad(jax_loss, argnums=argnums)(*xs)
    loss = _loss(as_function(args, kwargs))
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-11, atol=1e-12)
        direction = RNG.standard_normal(xs[k].shape)
        h = 1e-6
        plus = [x + h * direction if j == k else x for j, x in enumerate(xs)]
        minus = [x - h * direction if j == k else x for j, x in enumerate(xs)]
        fd = (loss(*plus) - loss(*minus)) / (2 * h)
        np.testing.assert_allclose(np.sum(g * direction), fd, rtol=1e-6, atol=1e-8)


VMAPPED = ["ii->i", "iij->j", "ii,ij->j", "ij,jk,kl->il", "...ij,...jk->...ik", "ij,j->i",
           "sublists"]


def test_vmap_matches_a_loop():
    """Each form mapped over a new leading axis of its first operand (and its gradient)."""
    chosen = [c for c, name in zip(CASES, IDS) if name.rsplit("-", 1)[0] in VMAPPED]
    for args, kwargs in chosen:
        f = as_function(args, kwargs)
        xs = arrays(args)
        batch = np.stack([xs[0] + k for k in range(3)])
        got = tx.vmap(f, in_dims=(0,) + (None,) * (len(xs) - 1))(batch, *xs[1:])
        mapped_grad = tx.vmap(tx.grad(_loss(f)), in_dims=(0,) + (None,) * (len(xs) - 1))
        grads = mapped_grad(batch, *xs[1:])
        for k in range(3):
            np.testing.assert_allclose(got[k], f(batch[k], *xs[1:]), rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(grads[k], tx.grad(_loss(f))(batch[k], *xs[1:]),
                                       rtol=1e-12, atol=1e-13)


def test_a_matrix_product_is_one_dot_general_and_one_blas_call():
    a, b = arr(30, 20), arr(20, 25)  # large enough for BLAS (small ones are loops)
    for spec, x, y in (("ij,jk->ik", a, b), ("ij,kj->ki", a, b.T), ("ij,jk", a, b)):
        graph = tx.make_graph(lambda u, v, *, spec=spec: np.einsum(spec, u, v))(x, y)
        assert primitives_of(graph) == {"dot_general"}, (spec, primitives_of(graph))
    source = tx.jit(lambda u, v: np.einsum("ij,jk->ik", u, v)).lower(a, b).source
    assert source.count("gemm_strided(") == 1 and "in the order BLAS needs" not in source
    assert "BLAS: 1 x (30x20 @ 20x25)" in source or "BLAS: (30x20 @ 20x25)" in source, source
    three = tx.jit(lambda u, v, w: np.einsum("ij,jk,kl->il", u, v, w)).lower(a, b, arr(25, 30))
    assert three.source.count("gemm_strided(") == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint32, np.complex128])
@pytest.mark.parametrize("width", [1, 3, 9])
@pytest.mark.parametrize("depth", [7, 40])  # summed plainly; in compensated chunks of 16
def test_a_narrow_contraction_sums_in_a_local_with_the_row_updates_bits(monkeypatch, dtype,
                                                                       width, depth):
    """A loop contraction with at most NARROW_OUTPUT elements per output row keeps each
    element's sum in a local (the MAML kernel's matrix-vector products); it adds the
    products in the row-update form's order, so the bits are that form's, and an int sum
    wraps to the output type as NumPy's does. Over 16 steps a float sum is chunked, each
    chunk's sum added to a compensated total, as the row-update form does."""
    from transfuse.compiler import lower_cpu_kernels

    big = 40_000 if np.dtype(dtype).kind in "iu" else 1
    a = (RNG.standard_normal((3, depth, 5)) * big).astype(dtype)
    b = (RNG.standard_normal((3, depth, width)) * big).astype(dtype)

    def f(u, v):
        return np.einsum("bki,bkj->bij", u, v)

    narrow = width <= lower_cpu_kernels.NARROW_OUTPUT
    assert ("the element's sum" in tx.jit(f).lower(a, b).source) == narrow
    got = tx.jit(f, cache=False)(a, b)
    monkeypatch.setattr(lower_cpu_kernels, "NARROW_OUTPUT", 0)
    assert "the element's sum" not in tx.jit(f).lower(a, b).source
    np.testing.assert_array_equal(got, tx.jit(f, cache=False)(a, b))
    if np.dtype(dtype).kind in "iu":
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(got, np.einsum("bki,bkj->bij", a, b))
        return
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    want = np.einsum("bki,bkj->bij", a.astype(wide), b.astype(wide))
    scale = np.einsum("bki,bkj->bij", np.abs(a), np.abs(b)).astype(np.float64)
    assert np.all(np.abs(got - want) <= 4 * np.finfo(dtype).eps * scale)


def _dot_shapes(f, *xs) -> list[tuple]:
    graph = tx.make_graph(f)(*xs)
    return [tuple(n.inputs[0].aval.shape) + tuple(n.inputs[1].aval.shape)
            for n in graph.nodes if n.prim.name == "dot_general"]


def test_the_contraction_order_is_opt_einsums_or_the_given_path():
    import opt_einsum

    a, b, c = arr(40, 2), arr(2, 40), arr(40, 3)  # (a b) c costs 40*40*(2+3); a (b c) far less
    spec = "ij,jk,kl->il"
    path, _ = opt_einsum.contract_path(spec, a, b, c)
    assert path == [(1, 2), (0, 1)]
    for optimize in (False, True, "greedy", "optimal", path, ["einsum_path", *path]):
        f = lambda x, y, z, *, o=optimize: np.einsum(spec, x, y, z, optimize=o)  # noqa: E731
        assert _dot_shapes(f, a, b, c) == [(2, 40, 40, 3), (40, 2, 2, 3)], optimize
    forced = lambda x, y, z: np.einsum(spec, x, y, z, optimize=[(0, 1), (0, 1)])  # noqa: E731
    assert _dot_shapes(forced, a, b, c) == [(40, 2, 2, 40), (40, 40, 40, 3)]
    np.testing.assert_allclose(traced(forced, a, b, c), a @ b @ c, rtol=1e-12)


def test_einsum_path_of_traced_values_is_numpys():
    a, b, c = arr(40, 2), arr(2, 40), arr(40, 3)
    for optimize in ("greedy", "optimal"):
        seen = []

        def f(x, y, z, *, seen=seen, optimize=optimize):
            seen.append(np.einsum_path("ij,jk,kl->il", x, y, z, optimize=optimize))
            return np.einsum("ij,jk,kl->il", x, y, z, optimize=seen[-1][0])

        np.testing.assert_allclose(traced(f, a, b, c), a @ b @ c, rtol=1e-12)
        want = np.einsum_path("ij,jk,kl->il", a, b, c, optimize=optimize)
        assert seen[0][0] == want[0] and seen[0][1] == want[1]
        assert tnp.einsum_path(a, [0, 1], b, [1, 2], optimize=optimize)[0] == \
            np.einsum_path(a, [0, 1], b, [1, 2], optimize=optimize)[0]


def write_through(x):
    np.einsum("ii->i", x)[...] = 0.0  # NumPy's einsum without a sum is a writable view
    np.einsum("ij->ji", x)[0] *= 2.0
    return x


def test_a_diagonal_without_a_sum_is_a_view_as_in_numpy():
    x = arr(3, 3)
    np.testing.assert_array_equal(traced(write_through, x.copy()), write_through(x.copy()))


@pytest.mark.parametrize("call,error,match", [
    (lambda a, b: np.einsum("ij,jk->ik", a), ValueError, "1 were given"),
    (lambda a, b: np.einsum("ij->ik", a), ValueError, "'k' appears in no operand"),
    (lambda a, b: np.einsum("ij->ii", a), ValueError, "'i' appears more than once"),
    (lambda a, b: np.einsum("i1->i", a), ValueError, "invalid subscript '1'"),
    (lambda a, b: np.einsum("i.j->i", a), ValueError, "not part of one ellipsis"),
    (lambda a, b: np.einsum("i->j->", a), ValueError, "at most one '->'"),
    (lambda a, b: np.einsum("ijk->i", a), ValueError, "has 2 dimension"),
    (lambda a, b: np.einsum("ij,jk->ik", a, b), ShapeError, "'j' has size 4 in one operand "
                                                            "and 3"),
    (lambda a, b: np.einsum("ii->i", a), ShapeError, "'i' is repeated in operand 0 with "
                                                    r"different sizes \(3 != 4\)"),
    (lambda a, b: np.einsum("...i->i", a), ValueError, "no '...'"),
    (lambda a, b: np.einsum(a, [0, 52]), ValueError, r"an int in \[0, 52\)"),
    (lambda a, b: np.einsum("ij,jk,kl", a, a.T, a, optimize="fastest"), ValueError,
     "'fastest'"),
    (lambda a, b: np.einsum("ij,jk,kl", a, a.T, a, optimize=[(0, 1)]), ValueError,
     "leaves 2 operands"),
    (lambda a, b: np.einsum("ij,jk->ik", a, a.T, dtype=np.float32), TypeError,
     "cannot be cast"),
])
def test_bad_subscripts_raise_transfuse_errors(call, error, match):
    a, b = arr(3, 4), arr(3, 5)
    with pytest.raises((ValueError, TypeError, RuntimeError, KeyError)):
        call(a, b)  # NumPy raises too (an error of its own class)
    with pytest.raises(error, match=match) as info:
        tx.make_graph(call)(a, b)
    assert isinstance(info.value, TransfuseError)


def test_bool_and_integer_operands_and_dtype():
    """Bools: NumPy's sum of products is an or of ands; integers exactly; dtype= casts."""
    a, b = RNG.random((3, 4)) < 0.5, RNG.random((4, 2)) < 0.5
    for args in (("ij,jk->ik", a, b), ("ii->", a[:, :3]), (a, [0, 1], b, [1, 2], [2, 0])):
        f = as_function(args, {})
        got, want = traced(f, *arrays(args, bool)), f(*arrays(args, bool))
        assert got.dtype == want.dtype == np.bool_
        np.testing.assert_array_equal(got, want)
    i, j = RNG.integers(-5, 6, (3, 4)), RNG.integers(-5, 6, (4, 4)).astype(np.int32)
    f = lambda x, y: np.einsum("ij,jj->ij", x, y)  # noqa: E731
    np.testing.assert_array_equal(traced(f, i, j), f(i, j))
    g = lambda x, y: np.einsum("ij,jk", x, y, dtype=np.float32, casting="same_kind")  # noqa: E731
    got = traced(g, arr(3, 4), arr(4, 2))
    assert got.dtype == np.float32


def test_complex_operands_match_numpy_and_jax(jax64):
    """No conjugation anywhere (as NumPy); the gradient of a real loss is JAX's."""
    z = arr(3, 3, 4) + 1j * arr(3, 3, 4)
    w = arr(4, 2) + 1j * arr(4, 2)
    f = lambda x, y: np.einsum("iij,jk->ik", x, y)  # noqa: E731
    np.testing.assert_allclose(traced(f, z, w), f(z, w), rtol=1e-13)
    loss = lambda np_: lambda x, y: np_.abs(np_.einsum("iij,jk->ik", x, y)).sum()  # noqa: E731
    got = tx.grad(loss(np), argnums=(0, 1))(z, w)
    want = jax64.grad(loss(jax64.numpy), argnums=(0, 1))(z, w)
    for g, ww in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(ww), rtol=1e-12, atol=1e-13)
