"""np.random inside transforms: recorded draws, never frozen constants (issue #12, item 2),
and one seed, one stream: eager, traced and jitted draws agree (item 3)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from numpy.random import normal as bound_global_normal
from transfuse.ir.errors import BatchingError, UnsupportedError

import transfuse as tx
import transfuse.numpy as tnp

X = np.random.default_rng(1234).uniform(-1.0, 1.0, size=5)
OUTSIDE = np.random.default_rng(77)
NUMPYS_NORMAL = np.random.normal


def _line_of(fn, text: str) -> int:
    """The line number of the first line of fn's source that contains text."""
    import inspect

    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


# ---------------------------------------------------------------------------------------
# Module-level np.random functions are recorded


SAMPLERS = {
    "normal": (lambda x: x + np.random.normal(size=x.shape), np.float64),
    "normal_loc_scale": (lambda x: np.random.normal(2.0, 3.0, size=x.shape) * x, np.float64),
    "standard_normal": (lambda x: x * np.random.standard_normal(x.shape), np.float64),
    "uniform": (lambda x: x + np.random.uniform(-1.0, 2.0, size=x.shape), np.float64),
    "rand": (lambda x: x + np.random.rand(*x.shape), np.float64),
    "randn": (lambda x: x + np.random.randn(*x.shape), np.float64),
    "random": (lambda x: x + np.random.random(x.shape), np.float64),
    "random_sample": (lambda x: x + np.random.random_sample(x.shape), np.float64),
    "randint": (lambda x: np.random.randint(0, 1000, size=x.shape), np.int64),
    "choice": (lambda x: np.random.choice(1000, size=x.shape), np.int64),
    "choice_p": (lambda x: np.random.choice(x, size=(50,), p=np.full(5, 0.2)), np.float64),
    "exponential": (lambda x: x + np.random.exponential(2.0, size=x.shape), np.float64),
    "default_rng": (lambda x: x + np.random.default_rng().normal(size=x.shape), np.float64),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_jit_draws_afresh_on_every_call(name):
    fn, dtype = SAMPLERS[name]
    eager = fn(X)  # NumPy's own draws, outside any trace: the shape and dtype to match
    jitted = tx.jit(fn)
    first, second = jitted(X), jitted(X)
    assert first.shape == eager.shape and first.dtype == eager.dtype == dtype
    assert not np.array_equal(first, second), "the draw was frozen into a constant"


@pytest.mark.parametrize("name", ["normal", "uniform", "randint", "choice"])
def test_the_jitted_graph_holds_a_random_draw_not_a_constant(name):
    fn, _ = SAMPLERS[name]
    graph = tx.make_graph(fn)(X)
    assert any(n.prim.effect == "random" for n in graph.nodes)
    assert all(c.size <= 5 for c in graph.consts.values())


def test_draws_have_numpys_distribution():
    draw = tx.jit(lambda x: (np.random.normal(1.0, 2.0, size=200_000) + 0 * x,
                             np.random.uniform(-1.0, 3.0, size=200_000),
                             np.random.randint(3, 9, size=200_000)))
    z, u, k = draw(np.float64(0.0))
    # 200,000 draws: the sample mean is within 5 standard errors of the true mean.
    assert abs(z.mean() - 1.0) < 5 * 2.0 / np.sqrt(z.size)
    assert abs(z.std() - 2.0) < 0.02
    assert u.min() >= -1.0 and u.max() < 3.0 and abs(u.mean() - 1.0) < 0.02
    assert k.min() == 3 and k.max() == 8 and set(np.unique(k)) == set(range(3, 9))


def test_choice_with_probabilities_follows_them():
    p = np.array([0.1, 0.0, 0.6, 0.3])
    values = np.array([10.0, 20.0, 30.0, 40.0])
    draws = tx.jit(lambda v: np.random.choice(v, size=100_000, p=p))(values)
    freq = np.array([(draws == v).mean() for v in values])
    assert freq[1] == 0.0
    np.testing.assert_allclose(freq, p, atol=0.01)


def test_outside_a_trace_np_random_is_numpys_own():
    tx.jit(SAMPLERS["normal"][0])(X)  # a trace installs and then removes the interception
    np.random.seed(5)
    a = np.random.normal(size=3)
    np.random.seed(5)
    assert np.array_equal(a, np.random.RandomState(5).normal(size=3))
    assert np.random.normal is NUMPYS_NORMAL


# ---------------------------------------------------------------------------------------
# vmap follows randomness=


def noisy(x):
    return x + np.random.normal(size=x.shape)


def test_vmap_randomness_error_raises_for_np_random():
    with pytest.raises(BatchingError, match="randomness") as info:
        tx.vmap(noisy)(np.tile(X, (4, 1)))
    assert "test_random_numpy.py" in str(info.value)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_vmap_different_gives_each_row_its_own_draw(chunk_size):
    batch = np.tile(X, (7, 1))
    tx.random.seed(11)
    out = tx.vmap(noisy, randomness="different", chunk_size=chunk_size)(batch)
    noise = out - batch
    assert len({tuple(row) for row in noise}) == 7
    tx.random.seed(11)
    unchunked = tx.vmap(noisy, randomness="different")(batch)
    np.testing.assert_array_equal(out, unchunked)


def test_vmap_same_gives_every_row_one_draw():
    batch = np.tile(X, (4, 1))
    out = tx.vmap(noisy, randomness="same")(batch)
    noise = out - batch
    assert np.all(noise == noise[0]) and np.any(noise[0] != 0)


# ---------------------------------------------------------------------------------------
# grad through draws


def test_grad_sees_the_draw_it_used():
    def f(x):
        noise = np.random.normal(size=x.shape)
        return np.sum(x * noise), noise

    g, noise = tx.grad(f, has_aux=True)(X)
    np.testing.assert_array_equal(g, noise)
    g2, noise2 = tx.jit(tx.grad(f, has_aux=True))(X)
    np.testing.assert_array_equal(g2, noise2)
    assert not np.array_equal(noise, noise2)


# ---------------------------------------------------------------------------------------
# Generators made inside the function


def seeded(x):
    rng = np.random.default_rng(2024)
    return x + rng.normal(size=x.shape), rng.integers(0, 10, size=3)


def test_seeded_generator_inside_gives_numpys_numbers_on_every_call():
    expected = seeded(X)  # plain NumPy
    jitted = tx.jit(seeded)
    for out in (jitted(X), jitted(X), tx.vmap(seeded)(X[None])):
        np.testing.assert_allclose(np.squeeze(out[0]), expected[0], rtol=0, atol=1e-15)
        np.testing.assert_array_equal(np.squeeze(out[1]), expected[1])


def test_seeded_generator_with_traced_parameters():
    def f(mu, x):
        rng = np.random.default_rng(3)
        return np.sum(rng.normal(mu, 2.0, size=x.shape) * x)

    eager = f(0.5, X)
    assert np.isclose(tx.jit(f)(np.float64(0.5), X), eager, rtol=1e-14)
    np.testing.assert_allclose(tx.grad(f)(np.float64(0.5), X), np.sum(X), rtol=1e-14)


# ---------------------------------------------------------------------------------------
# Generators made outside the function: an error naming the line, state untouched


def draws_from_outside(x):
    y = x * 2.0
    return y + OUTSIDE.normal(size=x.shape)


def draws_from_bound_global(x):
    return x + bound_global_normal(size=x.shape)


@pytest.mark.parametrize("transform", ["jit", "grad", "vmap"])
def test_outside_generator_draw_is_an_error_at_its_line(transform):
    before = OUTSIDE.bit_generator.state
    wrap = {"jit": tx.jit, "grad": lambda f: tx.grad(lambda x: np.sum(f(x))),
            "vmap": tx.vmap}[transform]
    with pytest.raises(UnsupportedError, match="created outside") as info:
        wrap(draws_from_outside)(X)
    line = _line_of(draws_from_outside, "OUTSIDE.normal")
    assert f"test_random_numpy.py:{line}" in str(info.value)
    assert OUTSIDE.bit_generator.state == before, "the generator's state was not restored"


def test_name_imported_from_numpy_random_is_an_error_at_its_line():
    state = np.random.get_state()
    with pytest.raises(UnsupportedError, match="created outside") as info:
        tx.jit(draws_from_bound_global)(X)
    line = _line_of(draws_from_bound_global, "bound_global_normal(")
    assert f"test_random_numpy.py:{line}" in str(info.value)
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2:] == after[2:]


@pytest.mark.parametrize("name", ["seed", "get_state"])
def test_global_state_functions_inside_a_trace_are_errors(name):
    def f(x):
        getattr(np.random, name)(*([0] if name == "seed" else []))
        return x

    with pytest.raises(UnsupportedError, match=f"numpy.random.{name}"):
        tx.jit(f)(X)


def test_unsupported_sampler_is_an_error_not_a_constant():
    with pytest.raises(UnsupportedError, match="numpy.random.poisson"):
        tx.jit(lambda x: x + np.random.poisson(3.0, size=x.shape))(X)
    with pytest.raises(UnsupportedError, match="replace=False"):
        tx.jit(lambda x: np.random.choice(x, 3, replace=False))(X)


def test_other_threads_keep_numpys_functions_while_a_trace_runs():
    seen = {}
    started, release = threading.Event(), threading.Event()

    def other_thread():
        started.wait()
        np.random.seed(3)
        seen["value"] = np.random.normal()
        release.set()

    def f(x):
        started.set()
        release.wait(timeout=10)
        return x + np.random.normal()

    worker = threading.Thread(target=other_thread)
    worker.start()
    tx.jit(f)(X)
    worker.join()
    assert seen["value"] == np.random.RandomState(3).normal()


# ---------------------------------------------------------------------------------------
# One seed, one stream


def two_draws(x):
    return x * tnp.random.normal(size=x.shape) + tnp.random.uniform(size=x.shape)


@pytest.mark.parametrize("run", ["jit", "vmap_same", "functionalize", "grad_aux",
                                 "eager_twice"])
def test_one_seed_gives_the_same_draws_eager_traced_and_jitted(run):
    tx.random.seed(99)
    expected = two_draws(X)  # eager: transfuse's counter-based draws
    expected_next = two_draws(X)
    tx.random.seed(99)
    if run == "jit":
        f = tx.jit(two_draws)
        got, got_next = f(X), f(X)
    elif run == "vmap_same":
        f = tx.vmap(two_draws, randomness="same")
        got, got_next = f(X[None])[0], f(X[None])[0]
    elif run == "functionalize":  # the traced graph, run by the reference interpreter
        f = tx.functionalize(two_draws)
        got, got_next = f(X), f(X)
    elif run == "grad_aux":
        f = tx.grad(lambda x: (np.sum(two_draws(x)), two_draws(x)), has_aux=True)
        got = f(X)[1]
        tx.random.seed(99)
        got, got_next = tx.jit(two_draws)(X), f(X)[1]
        got_next = tx.jit(two_draws)(X)  # after grad's function drew two streams twice
        expected_next = _eager_draws_after(99, 6)
    else:
        got, got_next = two_draws(X), two_draws(X)
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(got_next, expected_next, rtol=1e-15, atol=1e-15)


def _eager_draws_after(seed: int, calls: int):
    """two_draws(X) after `calls` eager draws (each call of two_draws makes two)."""
    tx.random.seed(seed)
    for _ in range(calls // 2):
        two_draws(X)
    return two_draws(X)


def test_a_draw_after_a_vmap_in_the_same_trace_reads_another_stream():
    def f(x):
        inside = tx.vmap(lambda r: r + tnp.random.normal(size=()), randomness="same")(x) - x
        return inside, tnp.random.normal(size=x.shape)

    for run in (f, tx.jit(f)):
        inside, after = run(X)
        assert not np.any(np.isin(after, inside))


def test_no_draw_repeats_across_calls_and_transforms():
    tx.random.seed(0)
    seen = [two_draws(X), tx.jit(two_draws)(X), tx.vmap(two_draws, randomness="different")(
        np.tile(X, (3, 1))), tx.grad(lambda x: np.sum(two_draws(x)))(X), two_draws(X)]
    values = np.concatenate([np.ravel(s) for s in seen])
    assert len(np.unique(values)) == values.size


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess seeding is POSIX-tested")
def test_the_same_seed_gives_the_same_draws_in_a_new_process(tmp_path):
    import subprocess

    script = ("import numpy as np, transfuse as tx\n"
              "tx.random.seed(42)\n"
              "f = tx.jit(lambda x: x + np.random.normal(size=3))\n"
              "print(repr(f(np.zeros(3)).tolist()))\n")
    outs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, env={**__import__("os").environ,
                                            "PYTHONHASHSEED": str(h)}).stdout
            for h in (1, 2)]
    assert outs[0] == outs[1] and outs[0].startswith("[")
