"""transfuse.vmap's interface: in_dims/out_dims forms, chunk_size, randomness, caching, errors."""

from __future__ import annotations

import numpy as np
import pytest

import transfuse as tx
import transfuse.numpy as tnp

RNG = np.random.default_rng(1234)


def rand(*shape, dtype=np.float64):
    return RNG.normal(size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------
# in_dims


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_dims_int_negative_and_none(dtype):
    x, w = rand(4, 3, dtype=dtype), rand(3, 2, dtype=dtype)
    f = lambda x, w: np.tanh(x @ w)
    expected = np.stack([f(x[i], w) for i in range(4)])
    for in_dims, args in [((0, None), (x, w)), ((1, None), (x.T, w)), ((-1, None), (x.T, w)),
                          ((-2, None), (x, w))]:
        got = tx.vmap(f, in_dims=in_dims)(*args)
        assert got.dtype == dtype
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def test_in_dims_zero_d_per_example_values():
    x = rand(5)
    got = tx.vmap(lambda s: s * np.arange(3.0))(x)
    np.testing.assert_allclose(got, x[:, None] * np.arange(3.0), rtol=1e-12)
    assert tx.vmap(lambda s: s ** 2)(x).shape == (5,)


def test_in_dims_pytree_prefix():
    params = {"w": rand(3, 4, 2), "b": rand(2)}
    xs = (rand(3, 4), rand(4, 3))

    def f(p, pair):
        a, b = pair
        return np.sum(p["w"] * a[:, None]) + np.sum(p["b"]) + np.sum(b)

    # w batched at 0, b not; pair: first batched at 0, second at 1.
    got = tx.vmap(f, in_dims=({"w": 0, "b": None}, (0, 1)))(params, xs)
    expected = [f({"w": params["w"][i], "b": params["b"]}, (xs[0][i], xs[1][:, i]))
                for i in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_in_dims_int_applies_to_a_whole_subtree():
    tree = [rand(2, 3), {"k": rand(2)}]
    got = tx.vmap(lambda t: t[0].sum() * t[1]["k"], in_dims=(0,))(tree)
    np.testing.assert_allclose(got, tree[0].sum(1) * tree[1]["k"], rtol=1e-12)


def test_keyword_arguments_are_not_batched():
    x, scale = rand(4, 3), rand(3)
    got = tx.vmap(lambda x, *, scale: x * scale)(x, scale=scale)
    np.testing.assert_allclose(got, x * scale, rtol=1e-12)


def test_static_non_array_arguments_pass_through():
    x = rand(3, 2)

    def f(x, power, mode):
        return x ** power if mode == "pow" else -x

    np.testing.assert_allclose(tx.vmap(f, in_dims=(0, None, None))(x, 3, "pow"), x ** 3,
                               rtol=1e-12)
    np.testing.assert_allclose(tx.vmap(f, in_dims=(0, None, None))(x, 2, "neg"), -x)


def test_size_zero_batch():
    x, w = np.zeros((0, 3)), rand(3, 2)
    got = tx.vmap(lambda x, w: x @ w, in_dims=(0, None))(x, w)
    assert got.shape == (0, 2)
    got = tx.vmap(lambda x: (x.sum(), x), out_dims=(0, 1))(x)
    assert got[0].shape == (0,) and got[1].shape == (3, 0)


# ---------------------------------------------------------------------------------------
# out_dims


def test_out_dims_int_negative_and_pytree():
    x = rand(4, 2, 3)
    f = lambda x: {"same": x, "sum": x.sum(0)}
    got = tx.vmap(f, out_dims={"same": -1, "sum": 1})(x)
    np.testing.assert_allclose(got["same"], np.moveaxis(x, 0, -1))
    np.testing.assert_allclose(got["sum"], x.sum(1).T, rtol=1e-12)
    a, b = tx.vmap(lambda x: (x, x * 2), out_dims=(1, 0))(x)
    np.testing.assert_allclose(a, np.moveaxis(x, 0, 1))
    np.testing.assert_allclose(b, x * 2)


def test_unbatched_outputs_are_broadcast_unless_out_dims_none():
    x, c = rand(3, 2), rand(2)
    f = lambda x: (x + c, c * 2)
    batched, const = tx.vmap(f)(x)
    np.testing.assert_allclose(const, np.broadcast_to(c * 2, (3, 2)))
    np.testing.assert_allclose(batched, x + c)
    batched, const = tx.vmap(f, out_dims=(0, None))(x)
    np.testing.assert_allclose(const, c * 2)
    _, moved = tx.vmap(f, out_dims=(0, 1))(x)
    assert moved.shape == (2, 3)
    np.testing.assert_allclose(moved, np.broadcast_to((c * 2)[:, None], (2, 3)))


def test_output_that_is_an_unbatched_input_broadcasts():
    x, y = rand(3, 2), rand(5)
    a, b = tx.vmap(lambda x, y: (x, y), in_dims=(0, None))(x, y)
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, np.broadcast_to(y, (3, 5)))


# ---------------------------------------------------------------------------------------
# chunk_size


def _model(x, w):
    h = np.tanh(x * w)
    return {"h": h, "norm": np.sqrt(np.sum(h * h)), "w": w}


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 100])
def test_chunks_give_identical_results(chunk_size):
    x, w = rand(7, 4), rand(4)
    out_dims = {"h": 1, "norm": 0, "w": None}
    whole = tx.vmap(_model, in_dims=(0, None), out_dims=out_dims)(x, w)
    chunked = tx.vmap(_model, in_dims=(0, None), out_dims=out_dims,
                      chunk_size=chunk_size)(x, w)
    for k in ("h", "norm", "w"):
        np.testing.assert_array_equal(chunked[k], whole[k])
    assert chunked["h"].shape == (4, 7)


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_chunked_contractions_agree_to_rounding(chunk_size):
    # BLAS may round a 1-row product differently from a 7-row one (an ulp, at most).
    x, w = rand(7, 4), rand(4, 3)
    f = lambda x, w: np.tanh(x @ w)
    whole = tx.vmap(f, in_dims=(0, None))(x, w)
    chunked = tx.vmap(f, in_dims=(0, None), chunk_size=chunk_size)(x, w)
    np.testing.assert_allclose(chunked, whole, rtol=1e-14, atol=1e-15)


def test_chunks_run_the_batch_in_pieces():
    x = rand(7, 3)
    graph = tx.make_graph(tx.vmap(lambda x: np.sin(x), chunk_size=3))(x)
    calls = [n for n in graph.nodes if n.prim.name == "call"]
    assert [c.params["graph"].inputs[0].aval.shape[0] for c in calls] == [3, 3, 1]


def test_chunks_with_batch_dim_not_leading_and_grad():
    x, w = rand(3, 5), rand(3)
    f = lambda w, x: np.sum(np.sin(x * w))
    for chunk in (None, 2):
        per_sample = tx.vmap(tx.grad(f), in_dims=(None, 1), chunk_size=chunk)(w, x)
        np.testing.assert_allclose(per_sample, (np.cos(x * w[:, None]) * x).T, rtol=1e-12)
    total = lambda w: np.sum(tx.vmap(f, in_dims=(None, 1), chunk_size=2)(w, x))
    np.testing.assert_allclose(tx.grad(total)(w), (np.cos(x * w[:, None]) * x).sum(1),
                               rtol=1e-12)


# ---------------------------------------------------------------------------------------
# randomness


def _noisy(x):
    return x + tnp.random.normal(size=x.shape)


def test_randomness_error_names_the_drawing_line():
    with pytest.raises(tx.BatchingError, match="randomness") as info:
        tx.vmap(_noisy)(rand(3, 2))
    line = _noisy.__code__.co_firstlineno + 1
    assert f"test_vmap_api.py:{line}" in str(info.value)


def test_randomness_different_gives_distinct_reproducible_rows():
    x = np.zeros((4, 3)) + rand(3)
    tx.random.seed(0)
    first = tx.vmap(_noisy, randomness="different")(x)
    tx.random.seed(0)
    again = tx.vmap(_noisy, randomness="different")(x)
    np.testing.assert_array_equal(first, again)
    noise = first - x
    assert len({tuple(r) for r in noise.round(12)}) == 4
    later = tx.vmap(_noisy, randomness="different")(x)
    assert not np.array_equal(later, first)


def test_randomness_same_gives_identical_reproducible_rows():
    x = rand(4, 3)
    tx.random.seed(5)
    first = tx.vmap(_noisy, randomness="same")(x)
    noise = first - x
    np.testing.assert_allclose(noise, np.broadcast_to(noise[0], noise.shape), atol=1e-12)
    assert np.std(noise[0]) > 0
    tx.random.seed(5)
    np.testing.assert_array_equal(tx.vmap(_noisy, randomness="same")(x), first)


def test_randomness_different_is_identical_under_chunking():
    x = rand(5, 2)
    tx.random.seed(3)
    whole = tx.vmap(_noisy, randomness="different")(x)
    tx.random.seed(3)
    chunked = tx.vmap(_noisy, randomness="different", chunk_size=2)(x)
    np.testing.assert_array_equal(chunked, whole)


def test_nested_randomness_different_is_independent_per_entry():
    x = np.zeros((3, 4, 2))
    tx.random.seed(11)
    out = tx.vmap(tx.vmap(_noisy, randomness="different"), randomness="different")(x)
    flat = out.reshape(12, 2).round(12)
    assert len({tuple(r) for r in flat}) == 12


def test_inner_randomness_with_outer_error_is_an_error():
    inner = tx.vmap(_noisy, randomness="same")
    with pytest.raises(tx.BatchingError, match="randomness"):
        tx.vmap(inner)(np.zeros((2, 3, 4)))


# ---------------------------------------------------------------------------------------
# Caching


def test_graph_is_cached_by_signature():
    traces = []

    def f(x):
        traces.append(x.shape)
        return x * 2

    v = tx.vmap(f)
    v(rand(3, 2))
    v(rand(3, 2))
    assert len(traces) == 1
    v(rand(4, 2))
    v(rand(3, 2).astype(np.float32))
    assert len(traces) == 3
    tx.vmap(f, in_dims=1)(rand(3, 2))  # another vmap of f: its own graph
    assert traces[-1] == (3,)


# ---------------------------------------------------------------------------------------
# Errors


def test_batch_sizes_that_disagree_name_the_arguments():
    def f(x, y):
        return x + y

    with pytest.raises(tx.BatchingError) as info:
        tx.vmap(f)(rand(3, 2), rand(4, 2))
    msg = str(info.value)
    assert "argument 0 (x) has size 3" in msg and "argument 1 (y) has size 4" in msg
    assert "test_vmap_api.py" in msg


def test_in_dims_out_of_range_names_the_argument():
    with pytest.raises(tx.BatchingError, match=r"in_dim 2 is out of range for argument 1 \(y\)"):
        tx.vmap(lambda x, y: x + y, in_dims=(0, 2))(rand(3, 2), rand(3, 2))
    with pytest.raises(tx.BatchingError, match="0-d array"):
        tx.vmap(lambda x: x)(np.float64(1.0))


def test_in_dims_that_do_not_fit_the_arguments():
    f = lambda x, y: x + y
    x = rand(3, 2)
    with pytest.raises(tx.BatchingError, match="1 entry but .* 2 positional arguments"):
        tx.vmap(f, in_dims=(0,))(x, x)
    with pytest.raises(tx.BatchingError, match="does not match the structure of argument 1"):
        tx.vmap(f, in_dims=(0, {"a": 0}))(x, x)
    with pytest.raises(tx.BatchingError, match="must be ints, None"):
        tx.vmap(f, in_dims=(0, 1.5))(x, x)
    with pytest.raises(tx.BatchingError, match="in_dims must be an int"):
        tx.vmap(f, in_dims="0")(x, x)
    with pytest.raises(tx.BatchingError, match="only arrays can be batched"):
        tx.vmap(f)(x, 2.0)


def test_no_batched_argument_is_an_error():
    with pytest.raises(tx.BatchingError, match="no argument is batched"):
        tx.vmap(lambda x: x, in_dims=None)(rand(3))
    with pytest.raises(tx.BatchingError, match="no argument is batched"):
        tx.vmap(lambda s: s, in_dims=None)(2.0)


def bad_output(x):
    return x, "label"


def test_returning_a_non_array_is_an_error_naming_the_function():
    with pytest.raises(tx.BatchingError, match=r"returned a str at output\[1\]") as info:
        tx.vmap(bad_output)(rand(3))
    assert f"test_vmap_api.py:{bad_output.__code__.co_firstlineno}" in str(info.value)
    with pytest.raises(tx.BatchingError, match="returned a float"):
        tx.vmap(lambda x: 1.0)(rand(3))
    with pytest.raises(tx.BatchingError, match="returned None"):
        tx.vmap(lambda x: None)(rand(3))


def branchy(x):
    if x.sum() > 0:
        return x
    return -x


def test_branching_on_a_batched_value_names_the_line():
    with pytest.raises(tx.ConcretizationError) as info:
        tx.vmap(branchy)(rand(3, 2))
    assert f"test_vmap_api.py:{branchy.__code__.co_firstlineno + 1}" in str(info.value)
    assert "tnp.where" in str(info.value)


def test_out_dims_errors():
    x = rand(3, 2)
    with pytest.raises(tx.BatchingError, match="out_dims is None for the output"):
        tx.vmap(lambda x: x, out_dims=None)(x)
    with pytest.raises(tx.BatchingError, match=r"out_dims is None for output\[1\]"):
        tx.vmap(lambda x: (x, x), out_dims=(0, None))(x)
    with pytest.raises(tx.BatchingError, match="out_dims 3 is out of range"):
        tx.vmap(lambda x: x, out_dims=3)(x)
    with pytest.raises(tx.BatchingError, match="structure of the function's output"):
        tx.vmap(lambda x: (x, x), out_dims=(0,))(x)


def test_bad_randomness_and_chunk_size():
    with pytest.raises(tx.BatchingError, match="randomness must be"):
        tx.vmap(lambda x: x, randomness="sometimes")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(tx.BatchingError, match="chunk_size"):
            tx.vmap(lambda x: x, chunk_size=bad)


def test_errors_are_value_errors():
    assert issubclass(tx.BatchingError, ValueError)
    assert issubclass(tx.BatchingError, tx.TransfuseError)


def test_chunked_vmap_composes_with_vmap_and_forward_mode():
    x = rand(3, 5, 2)
    f = lambda v: np.sin(v) * v.sum()
    inner = tx.vmap(f, chunk_size=2)
    loop = np.stack([[f(v) for v in row] for row in x])
    np.testing.assert_allclose(tx.vmap(inner)(x), loop, rtol=1e-12)
    np.testing.assert_allclose(tx.vmap(inner, chunk_size=2)(x), loop, rtol=1e-12)
    np.testing.assert_allclose(tx.jacfwd(inner)(x[0]), tx.jacrev(inner)(x[0]),
                               rtol=1e-12, atol=1e-14)


def test_constant_outputs_do_not_alias_the_cached_graph():
    table = rand(4)
    v = tx.vmap(lambda x: (x * 2, table, table), out_dims=(0, None, 0))
    _, same, stacked = v(rand(3, 2))
    same[:] = 0
    stacked[:] = 0
    _, again, restacked = v(rand(3, 2))
    np.testing.assert_array_equal(again, table)
    np.testing.assert_array_equal(restacked, np.broadcast_to(table, (3, 4)))
