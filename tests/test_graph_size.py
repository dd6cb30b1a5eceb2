"""Graph size is limited by memory only: no pass recurses over the graph (issue #12).

Long unrolled loops (1,000 steps of three elementwise operations, their gradients, an RK4
integrator's gradient) are traced, transformed, fused and lowered to source under a
recursion limit a fixed FRAMES above the test's own depth, so a pass whose stack grew with
the graph would fail here. Lowering stops before Numba (`jit(f).lower(x)`); one 200-step
program runs end to end to show the generated source compiles and computes the right
numbers. docs/reliability.md states the guarantee.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from transfuse.ir import verify
from transfuse.ir.interpreter import interpret  # the reference one, also under --jit

import transfuse as tx

STEPS = 1000
FRAMES = 200  # stack a pass may use on top of the test, whatever the graph's size


@contextmanager
def shallow_stack(frames: int = FRAMES) -> Iterator[None]:
    """Python's recursion limit set `frames` above the current depth, for the block."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def unrolled(steps: int, rate: float = 0.5):
    """`x = sin(x) * rate + x`, `steps` times: a chain of 3 * steps elementwise nodes."""
    def f(x):
        for _ in range(steps):
            x = np.sin(x) * rate + x
        return x
    return f


def summed(f):
    return lambda x: np.sum(f(x))


def rk4_energy(steps: int, dt: float = 0.01):
    """A pendulum integrated by RK4 from the state s = (angle, velocity); the squared final
    state. The state is a 2-vector, so each step is a handful of small regions."""
    def pendulum(s):
        return np.stack([s[1], -np.sin(s[0])])

    def f(s):
        for _ in range(steps):
            k1 = pendulum(s)
            k2 = pendulum(s + dt / 2 * k1)
            k3 = pendulum(s + dt / 2 * k2)
            k4 = pendulum(s + dt * k3)
            s = s + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return np.sum(s ** 2)
    return f


def rk4_energy_scalars(steps: int, dt: float = 0.01):
    """The same with the angle and the velocity as scalars: one fused region, whose
    dependency chains are as long as the whole integration."""
    def pendulum(angle, velocity):
        return velocity, -np.sin(angle)

    def f(s):
        angle, velocity = s[0], s[1]
        for _ in range(steps):
            a1, b1 = pendulum(angle, velocity)
            a2, b2 = pendulum(angle + dt / 2 * a1, velocity + dt / 2 * b1)
            a3, b3 = pendulum(angle + dt / 2 * a2, velocity + dt / 2 * b2)
            a4, b4 = pendulum(angle + dt * a3, velocity + dt * b3)
            angle = angle + dt / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
            velocity = velocity + dt / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
        return angle ** 2 + velocity ** 2
    return f


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(12).standard_normal(8)


def nesting(source: str) -> int:
    """The deepest expression nesting in a module's source."""
    deepest, stack = 0, [(ast.parse(source), 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.expr):
            depth += 1
            deepest = max(deepest, depth)
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))
    return deepest


def check_source(source: str) -> None:
    """Valid Python whose expressions stay shallow, however long the program is."""
    assert nesting(source) < 20
    with shallow_stack():
        compile(source, "<generated>", "exec")


LOWERED = {
    "jit": lambda f: tx.jit(f),
    "grad": lambda f: tx.jit(tx.grad(summed(f))),
    "jvp": lambda f: tx.jit(lambda x: tx.jvp(f, (x,), (x,))),
    "cuda grad": lambda f: tx.jit(tx.grad(summed(f)), device="cuda"),
}


@pytest.mark.parametrize("how", list(LOWERED))
def test_long_loop_lowers(how, x):
    f = unrolled(STEPS)
    with shallow_stack():
        lowered = LOWERED[how](f).lower(x)
    assert len(lowered.graph.nodes) >= 3 * STEPS
    assert lowered.source.count("  # sin @") >= STEPS - 1  # grad: no sin of the last step
    check_source(lowered.source)


def test_long_loop_graph_prints_verifies_and_interprets(x):
    f = unrolled(STEPS)
    with shallow_stack():
        graph = tx.make_graph(tx.grad(summed(f)))(x)
        text = str(graph)
        verify(graph)
        key = graph.structural_key()
        (grad,) = interpret(graph, [x])
        (value,) = interpret(tx.make_graph(f)(x), [x])
    assert text.count("\n") > len(graph.nodes)
    assert key == tx.make_graph(tx.grad(summed(f)))(x).structural_key()
    np.testing.assert_array_equal(value, f(x))  # the interpreter is eager NumPy
    assert grad.shape == x.shape and np.all(np.isfinite(grad))


@pytest.mark.parametrize("energy", [rk4_energy(30), rk4_energy_scalars(100)],
                         ids=["30 steps", "100 steps, scalars"])
def test_rk4_gradient_lowers(energy):
    s0 = np.array([0.3, 0.1])
    with shallow_stack():
        lowered = tx.jit(tx.grad(energy)).lower(s0)
        (grad,) = interpret(lowered.graph, [s0])
    check_source(lowered.source)
    np.testing.assert_allclose(grad, central_differences(energy, s0), rtol=1e-6)


def central_differences(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step[i] = h
        out[i] = (f(x + step) - f(x - step)) / (2 * h)
    return out


def test_200_steps_run_end_to_end(x):
    # A gentler rate than the lowering tests' 0.5: the gradient stays of order one over
    # 200 steps, so finite differences check it.
    f = unrolled(200, rate=0.05)
    expected = interpret(tx.make_graph(f)(x), [x])[0]
    np.testing.assert_allclose(tx.jit(f)(x), expected, rtol=1e-12, atol=1e-12)
    grad = tx.jit(tx.grad(summed(f)))(x)
    (reference,) = interpret(tx.make_graph(tx.grad(summed(f)))(x), [x])
    np.testing.assert_allclose(grad, reference, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, central_differences(summed(f), x), rtol=1e-6,
                               atol=1e-8)
