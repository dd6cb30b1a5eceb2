"""The differential fuzzer's fixed share of CI: a list of seeds, not a time budget.

Each seed stands for one random program (tests/fuzz/ops.py), run in every interpreted
mode that applies to it and in one compiled mode; the same seeds give the same programs,
inputs and modes on every machine. `python -m tests.fuzz --minutes 30` runs the long
campaign. A failure prints the case; `shrink` has made it small (see docs/reliability.md
for turning it into a regression test).
"""

from __future__ import annotations

import numpy as np
import pytest

from .campaign import cases_for, outcome, shrink
from .oracles import jax_modules

SEEDS = range(90)  # with the complex seeds, about two minutes of CPU time
# Complex programs (tests/fuzz/complex_ops.py): seeds with kind='complex', picked to hold
# complex64 and complex128 programs, three smooth ones (derivatives checked) among them.
COMPLEX_SEEDS = (2, 5, 7, 8, 9, 11, 13, 22, 24)
# Reductions over 10^5..10^7 elements (float32 and float64): their seeds with kind='large'.
LARGE_SEEDS = range(4)


def _check(cases) -> None:
    failures = []
    for case in cases:
        result = outcome(case)
        if result.bad:
            small, small_result = shrink(case, result, budget=20)
            failures.append(f"{small.describe()}{small_result.message}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_program(seed):
    _check(cases_for(seed, jit_modes=1))


@pytest.mark.parametrize("seed", COMPLEX_SEEDS)
def test_complex_program(seed):
    _check(cases_for(seed, jit_modes=1, kind="complex"))


@pytest.mark.parametrize("seed", LARGE_SEEDS)
def test_large_reduction(seed):
    _check(cases_for(seed, jit_modes=1, kind="large"))


def test_the_oracles_are_there():
    """JAX is a test dependency: without it the derivative modes only check differences."""
    assert jax_modules() is not None
    assert np.finfo(np.longdouble).eps < np.finfo(np.float64).eps or \
        pytest.skip("long double is float64 here: float64 programs gauge rounding less")
