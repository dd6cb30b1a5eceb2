"""Repeated runs of entry-point statements compiled once (compiler/repeated_blocks.py).

What must hold: a run becomes a function only where every copy is the same code up to
names; the function reads what the copies read and returns what later statements use; the
compiled program computes what the reference interpreter computes.
"""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.bench.suites import _rk4
from transfuse.compiler import repeated_blocks
from transfuse.compiler.repeated_blocks import outline_repeats

import transfuse as tx


def _step(k: int, scale: str = "2.0") -> list[str]:
    """One copy: reads b{k} (and the size n0), defines b{k+1} and a scalar t{k}."""
    return [f"    # -- step {k}",
            f"    b{k + 1} = np.empty((n0,), np.float64)",
            f"    t{k} = b{k}[0] * {scale}",
            "    for i0 in range(n0):",
            f"        b{k + 1}[i0] = b{k}[i0] + t{k}  # add @ user.py:{k}"]


@pytest.fixture
def two_copies(monkeypatch):
    monkeypatch.setattr(repeated_blocks, "MIN_COPIES", 2)


def test_copies_become_calls_reading_their_inputs_and_returning_what_is_used(two_copies):
    lines = [line for k in range(4) for line in _step(k)]
    statements, functions = outline_repeats(lines, "cache=False", set(), "b4")
    assert len(functions) == 1
    definition = "\n".join(functions[0])
    assert "def block0(n0, b0):" in definition
    assert "return b1," in definition  # the scalar t0 is read by no later statement
    calls = [s for s in statements if "block0(" in s]
    assert [c.split("#")[0].strip() for c in calls] == [
        "b1, = block0(n0, b0)", "b2, = block0(n0, b1)", "b3, = block0(n0, b2)",
        "b4, = block0(n0, b3)"]


def test_a_scalar_read_after_the_run_is_returned_too(two_copies):
    lines = [line for k in range(3) for line in _step(k)] + ["    t9 = t2 + 1.0"]
    _, functions = outline_repeats(lines, "cache=False", set(), "b3, t9")
    assert "return b1, t0" in "\n".join(functions[0])


def test_copies_that_differ_beyond_names_stay_inline(two_copies):
    lines = [line for k in range(4) for line in _step(k, scale=f"{k + 2}.0")]
    statements, functions = outline_repeats(lines, "cache=False", set(), "b4")
    assert functions == [] and statements == lines


def test_names_used_inconsistently_stay_inline(two_copies):
    # the second copy reads b0 twice where the first reads two different arrays
    first = ["    b2 = np.empty((n0,), np.float64)", "    b2[0] = b0[0] + b1[0]",
             "    b3 = np.empty((n0,), np.float64)", "    b3[0] = b2[0] * 2.0"]
    second = ["    b4 = np.empty((n0,), np.float64)", "    b4[0] = b0[0] + b0[0]",
              "    b5 = np.empty((n0,), np.float64)", "    b5[0] = b4[0] * 2.0"]
    _, functions = outline_repeats(first + second, "cache=False", set(), "b5")
    assert functions == []


def test_fewer_copies_than_the_threshold_stay_inline():
    lines = [line for k in range(repeated_blocks.MIN_COPIES - 1) for line in _step(k)]
    _, functions = outline_repeats(lines, "cache=False", set(), "b9")
    assert functions == []


def test_an_unrolled_integrator_and_its_gradient_match_the_interpreter(two_copies):
    rng = np.random.default_rng(21)
    state, params = rng.uniform(0.1, 0.4, 2), np.array([9.81, rng.uniform(0.8, 1.2)])
    grad = tx.grad(_rk4.energy_after(5), argnums=(0, 1))
    jitted = tx.jit(grad, cache=False)
    assert "def block0(" in jitted.lower(state, params).source
    for got, want in zip(jitted(state, params), grad(state, params)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_a_loop_writing_in_place_matches_the_interpreter(two_copies):
    def smooth(x):
        y = x.copy()
        for _ in range(6):
            y[1:-1] = 0.25 * y[:-2] + 0.5 * y[1:-1] + 0.25 * y[2:]
            y *= 1.01
        return y, np.sum(y)

    x = np.random.default_rng(22).standard_normal(9).astype(np.float32)
    jitted = tx.jit(smooth, cache=False)
    assert "def block0(" in jitted.lower(x).source
    got, want = jitted(x), smooth(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_a_call_assigning_a_one_tuple_binds_its_name():
    # found by the fuzzer with the threshold at 2: the calls of one block repeat in turn,
    # and `b10, = block0(...)` read as a use of b10 made the outer block take it unbound
    statement = repeated_blocks._statement(["    b10, = block0(n1, b2)  # 7 runs"], set())
    assert statement.binds == {"b10"} and statement.reads == ["n1", "b2"]


def test_a_run_of_calls_can_repeat_in_turn(two_copies):
    lines = [line for k in range(8) for line in _step(k, scale=f"{k % 2 + 2}.0")]
    statements, functions = outline_repeats(lines, "cache=False", set(), "b8")
    assert len(functions) >= 1
    namespace: dict = {"np": np, "njit": lambda *a, **k: (lambda f: f)}
    source = "\n".join(line for f in functions for line in f[1:]) + "\n" + "\n".join(
        ["def entry(n0, b0):"] + statements + ["    return b8"])
    exec(source, namespace)
    x = np.random.default_rng(23).standard_normal(5)
    want = x.copy()
    for k in range(8):
        want = want + want[0] * (k % 2 + 2.0)
    np.testing.assert_allclose(namespace["entry"](5, x), want, rtol=1e-14)
