"""Repeated regions compile once (compiler/region_functions.py).

An unrolled loop lowers to the same region code many times over different buffers; each
distinct body becomes one `@njit` function called at every occurrence, so Numba types and
lowers it once. Regions that occur once stay inline.
"""

from __future__ import annotations

import re

import numpy as np
from transfuse.compiler.region_functions import RegionBody, share_regions

import transfuse as tx


def _unrolled(steps: int):
    def f(state, params):
        s = state
        for _ in range(steps):
            k = np.stack([s[1], -params[0] * np.sin(s[0])])
            s = s + 0.05 * k
        return np.sum(s ** 2)
    return f


def _defined_and_called(source: str) -> tuple[set[str], list[str]]:
    defined = set(re.findall(r"^def (region\d+)\(", source, re.M))
    called = re.findall(r"^\s+(region\d+)\(", source, re.M)
    return defined, called


def test_an_unrolled_loop_defines_each_region_once_and_calls_it_per_step():
    x, p = np.array([0.3, 0.1]), np.array([9.81, 1.0])
    f = tx.grad(_unrolled(8), argnums=1)
    lowered = tx.jit(f, cache=False).lower(x, p)
    defined, called = _defined_and_called(lowered.source)
    assert defined and set(called) == defined
    assert len(called) >= 3 * len(defined)  # eight steps share the step's regions
    np.testing.assert_allclose(tx.jit(f, cache=False)(x, p), f(x, p), rtol=1e-13)


def test_the_number_of_distinct_regions_stops_growing_with_the_steps():
    x, p = np.array([0.3, 0.1]), np.array([9.81, 1.0])
    counts = []
    for steps in (4, 8):
        source = tx.jit(tx.grad(_unrolled(steps), argnums=1), cache=False).lower(x, p).source
        counts.append(len(_defined_and_called(source)[0]))
    assert counts[0] == counts[1]


def test_a_region_that_occurs_once_stays_inline():
    x = np.linspace(0.1, 1.0, 12).reshape(3, 4)
    source = tx.jit(lambda x: np.tanh(x) * 2.0 + 1.0, cache=False).lower(x).source
    assert _defined_and_called(source) == (set(), [])


def test_bodies_differing_only_in_names_share_and_others_do_not():
    first = RegionBody(["    for i0 in range(3):", "        t1 = a0[i0] * 2.0",
                        "        b1[i0] = t1  # mul @ x.py:1"])
    renamed = RegionBody(["    for i0 in range(3):", "        t7 = b1[i0] * 2.0",
                          "        b2[i0] = t7  # mul @ x.py:2"])
    other = RegionBody(["    for i0 in range(3):", "        t9 = a0[i0] * 3.0",
                        "        b3[i0] = t9"])
    statements, functions = share_regions(["    b1 = np.empty(3)", first, renamed, other],
                                          "cache=False", set())
    assert len(functions) == 1
    assert functions[0][1] == "def region0(p0, p1):"
    assert statements[1].startswith("    region0(a0, b1)")
    assert statements[2].startswith("    region0(b1, b2)")
    assert statements[3:] == other.lines  # occurs once: inline


def test_a_body_reading_an_unknown_name_or_defining_an_entry_array_stays_inline():
    reads_scalar = RegionBody(["    b1[0] = scale * a0[0]"])
    defines_array = RegionBody(["    b2 = a0.reshape((3,))"])
    for body in (reads_scalar, defines_array):
        statements, functions = share_regions([body, body], "cache=False", set())
        assert functions == [] and statements == body.lines * 2


def test_empty_bodies_are_not_functions():
    empty = RegionBody(["    # nothing to do: size 0"])
    statements, functions = share_regions([empty, empty, RegionBody([])], "cache=False", set())
    assert functions == [] and statements == empty.lines * 2


def test_empty_kernels_compile_in_a_program_that_repeats_them():
    x = np.zeros((2, 0, 3))
    f = tx.jit(lambda a: [np.linalg.svd(a, compute_uv=False), np.linalg.qr(a)[1],
                          np.linalg.svd(a + 1.0, compute_uv=False)], cache=False)
    for got, want in zip(f(x), [np.zeros((2, 0)), np.zeros((2, 0, 3)), np.zeros((2, 0))]):
        assert got.shape == want.shape
