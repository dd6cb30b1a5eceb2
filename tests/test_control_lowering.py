"""CPU lowering of cond, while_loop and scan (compiler/lower_control.py): real loops and branches.

What must hold: jit of programs with control flow computes what the reference interpreter
computes (float32 and float64, 0-d carries, 0-d slices of a 1-d stack, size-0 and length-0
scans, reverse scans, clamped switch indices, nested control flow, captured constants,
pytrees, zero-trip while loops); no output aliases an input; a scan of 10,000 steps is one
loop around one body function; its length is a size parameter, so another length compiles
nothing, in this process and, through the disk cache, in the next.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
from transfuse.ir.interpreter import interpret
from transfuse.runtime import cache as kernel_cache

import transfuse as tx
from tests.helpers import assert_compiled_matches, run_json_script
from transfuse import lax


def _program(x, xs, v, w, k, n):
    """Every control-flow form at once (one compile per dtype)."""
    one = x.dtype.type(1)

    def cell(carry, xi):  # captures w; a pytree carry with a 0-d part; cond inside scan
        h, s = carry
        h = np.tanh(h @ w + xi)
        s = s + h.sum()
        y = lax.cond(s > 0, lambda a: a * 2, lambda a: a - one, h)
        return (h, s), {"y": y, "s": s}

    (h, s), ys = lax.scan(cell, (x, x.sum() * 0), xs)

    def back(c, e):  # 0-d slices of a 1-d stack, run from the end; c[1] passes through
        return (c[0] * x.dtype.type(0.5) + e, c[1]), c[0] * e

    rev, rys = lax.scan(back, (v[0], v[1]), v, reverse=True)
    empty, eys = lax.scan(lambda c, e: (c + e, e * 2), x, xs[:0])  # length 0
    sw = lax.switch(k, [lambda a: a, lambda a: -a, lambda a: a * a], x)  # a branch returns a

    def wbody(c):  # a scan inside a while loop
        i, acc = c
        acc, _ = lax.scan(lambda a, e: (a * x.dtype.type(0.9) + e, a), acc, xs)
        return i + 1, acc

    count, acc = lax.while_loop(lambda c: c[0] < n, wbody, (n * 0, x))
    fori = lax.fori_loop(0, n, lambda i, a: a + i.astype(a.dtype), x[0])  # traced bounds
    static = lax.fori_loop(1, 4, lambda i, a: a * i.astype(a.dtype), x[1])  # a scan without xs
    squares = lax.map(lambda r: (r * r).sum(), xs)
    return h, s, ys, rev, rys, empty, eys, sw, count, acc, fori, static, squares


def _arguments(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(3).astype(dtype)
    xs = rng.standard_normal((5, 3)).astype(dtype)
    v = rng.standard_normal(4).astype(dtype)
    w = (rng.standard_normal((3, 3)) / 2).astype(dtype)
    return x, xs, v, w


def _interpreted(f, args):
    graph = tx.make_graph(f)(*args)
    return tx.tree_unflatten(graph.out_tree, interpret(graph, [np.copy(a) for a in args]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jit_of_every_form_matches_the_interpreter(dtype):
    x, xs, v, w = _arguments(dtype)
    jitted = tx.jit(_program)
    for k, n in [(1, 3), (-4, 0), (7, 2)]:  # clamped indices; a while loop of no step
        args = (x, xs, v, w, np.int32(k), np.int64(n))
        out = jitted(*args)
        assert_compiled_matches(out, _interpreted(_program, args))
    assert jitted.cache_info().traces == 1  # index and trip count are run-time values
    out[7][...] = 0  # switch branch 0 returned its operand: the result is not x itself
    out[9][...] = 0  # a while loop of no step returned its initial carry
    np.testing.assert_array_equal(x, _arguments(dtype)[0])


def _cube_roots(a):
    """Newton's method per lane, as batching writes a vmapped while loop: a map of a while."""
    def solve(a):
        def body(c):
            x, dx, i = c
            dx = (x * x * x - a) / (3 * x * x)
            return x - dx, dx, i + 1
        x, _, i = lax.while_loop(lambda c: (np.abs(c[1]) > 1e-12) & (c[2] < 60), body,
                                 (1.0 + a, np.float64(1.0), np.int64(0)))
        return x, i
    return lax.map(solve, a)


def test_scalar_lanes_run_as_numbers_in_parallel():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.5, 1e4, 2048) ** rng.uniform(0, 1, 2048)
    jitted = tx.jit(_cube_roots)
    roots, steps = jitted(a)
    expected = _interpreted(_cube_roots, (a,))
    assert_compiled_matches((roots, steps), expected)
    np.testing.assert_array_equal(roots, expected[0])  # lanes in lockstep: the same steps
    assert 3 <= steps.min() < steps.max() <= 40  # lanes take their own number of steps
    source = jitted.lower(a).source
    # blocks of lanes in lockstep (its initial carry computed per lane: 1.0 + a)
    assert re.search(r"^\s+for blk in prange\(\(\w+ \+ \w+\) // \w+\):$", source, re.M)
    assert re.search(r"^\s+while a0 \| a1 \|.*:$", source, re.M)
    assert re.search(r"^\s+s0_7, s1_7, s2_7 = flow\d+\(.*k0_7, k1_7, k2_7\)$", source,
                     re.M)  # numbers
    assert "np.empty" not in source.split("def entry")[0]  # nothing allocated per lane
    before = kernel_cache.compile_count()
    more = rng.uniform(0.5, 1e4, 3000)
    np.testing.assert_allclose(jitted(more)[0], np.cbrt(more), rtol=1e-13)
    assert kernel_cache.compile_count() == before  # another number of lanes: no compile


def _other_dtypes(z, v, flags, ints):
    """Scalar bodies on complex, bool and int32 values; one-output scalar functions."""
    def body(c, e):
        zc, b = c
        return (zc * zc * 0.5 + e, ~b), (zc.real > 0) & b

    (zc, b), ys = lax.scan(body, (z, flags[0]), ints.astype(np.complex128))
    count = lax.while_loop(lambda i: i < v.sum() * 10, lambda i: i + 1, np.int32(0))
    inner = lax.scan(lambda c, e: (lax.cond(e > 0, lambda a: a + e, lambda a: a * 2, c), c),
                     v[0], v)
    outer = lax.scan(lambda c, e: (c + lax.cond(e.sum() > 0, lambda: e.max(),
                                                lambda: e.min()), c),
                     np.float64(0), np.stack([v, -v, v * 2]))
    same = [lax.cond(count > 3, lambda a: a + 1, lambda a: a - 1, e) for e in (v[1], v[2])]
    return zc, b, ys, count, inner, outer, same


def test_scalar_functions_of_other_dtypes():
    rng = np.random.default_rng(3)
    args = (np.complex128(0.3 + 0.2j), np.abs(rng.standard_normal(4)), np.array([True, False]),
            rng.integers(-3, 4, 5).astype(np.int32))
    jitted = tx.jit(_other_dtypes)
    assert_compiled_matches(jitted(*args), _interpreted(_other_dtypes, args))
    source = jitted.lower(*args).source
    bodies = [re.sub(r"\bt\d+|#.*", "", body.split("@njit")[0])
              for body in re.split(r"^def flow\d+", source, flags=re.M)[1:]]
    assert len(bodies) >= 8 and len(bodies) == len(set(bodies))  # the two conds share


def _elman(h, xs, w, u, b):
    def cell(h, x):
        h = np.tanh(h @ w + x @ u + b)
        return h, h
    return lax.scan(cell, h, xs)


def test_products_of_the_steps_inputs_run_before_the_loop():
    """x @ u depends on no carry: one product of all steps' rows (compiler/scan_hoist.py)."""
    rng = np.random.default_rng(5)
    args = [rng.standard_normal(s).astype(np.float32) for s in
            [(8, 32), (40, 8, 32), (32, 32), (32, 32), (32,)]]
    args[2] /= 6
    args[3] /= 6
    jitted = tx.jit(_elman)
    assert_compiled_matches(jitted(*args), _interpreted(_elman, args))
    source = jitted.lower(*args).source
    entry = source.split("def entry")[1]
    assert re.search(r"BLAS: \(320x32 @ 32x32\)", entry.split("scan of")[0])  # 40 steps x 8
    assert source.split("def entry")[0].count("gemm_strided(") == 1  # h @ w stays in the body


def _loss(w, h, xs):
    def cell(c, x):
        c = np.sin(c @ w + x)
        return c, c * c
    c, ys = lax.scan(cell, h, xs)
    return ys.sum() + c.sum()


def test_grad_runs_one_forward_loop_and_sums_weight_gradients_after_the_backward_one():
    """grad's primal scan and its recomputation for the residuals are one loop
    (compiler/scan_merge.py), and the backward loop's `dw += transpose(dz.T @ c)` is one
    product over all steps after it (compiler/scan_hoist.py)."""
    rng = np.random.default_rng(6)
    args = (rng.standard_normal((3, 3)) / 2, rng.standard_normal((2, 3)),
            rng.standard_normal((7, 2, 3)))
    jitted = tx.jit(tx.grad_and_value(_loss))
    assert_compiled_matches(jitted(*args), _interpreted(tx.grad_and_value(_loss), args))
    source = jitted.lower(*args).source
    assert len(re.findall(r"^\s+for it in range\(", source, re.M)) == 2
    after = source.split("def entry")[1].split("steps, reversed")[1]
    assert "kernel: dot_general" in after  # dw: one product contracting the steps


def _rnn(h, xs, w):
    def cell(h, x):
        h = np.tanh(h @ w + x)
        return h, h.sum()
    return lax.scan(cell, h, xs)


def test_a_long_scan_is_one_loop_and_another_length_compiles_nothing():
    rng = np.random.default_rng(1)
    h, w = rng.standard_normal(4), rng.standard_normal((4, 4)) / 3
    long_xs = rng.standard_normal((10_000, 4))
    lowered = tx.jit(_rnn).lower(h, long_xs, w)
    assert [(r.kind, r.primitives) for r in lowered.regions] == [("control", ["scan"])]
    source = lowered.source
    assert len(re.findall(r"^\s*for it in range\(n\d+\):$", source, re.M)) == 1
    assert len(re.findall(r"^def flow\d+\(", source, re.M)) == 1  # the body, fused once
    assert "10000" not in source.split("SIGNATURE")[1]  # the length is a size argument
    jitted = tx.jit(_rnn, cache=False)
    compiles = []
    for steps in (10, 1000):
        xs = long_xs[:steps]
        assert_compiled_matches(jitted(h, xs, w), _interpreted(_rnn, (h, xs, w)))
        compiles.append(kernel_cache.compile_count())
    assert compiles[1] == compiles[0]  # a new length: traced and lowered, nothing compiled
    assert jitted.cache_info().traces == 2


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import transfuse as tx
    from transfuse import lax
    from transfuse.runtime import cache as kernel_cache

    def f(h, xs, k):
        def cell(h, x):
            h = lax.cond(x.sum() > 0, lambda a: np.tanh(a + x), lambda a: a * 0.5, h)
            return h, h.sum()
        h, ys = lax.scan(cell, h, xs)
        return lax.switch(k, [lambda a: a - 1, lambda a: a + 1], h), ys

    steps = int(sys.argv[1])
    rng = np.random.default_rng(steps)
    h, xs = rng.standard_normal(3), rng.standard_normal((steps, 3))
    out = tx.jit(f)(h, xs, np.int32(1))
    want = f(h, xs, np.int32(1))
    print(json.dumps({"compiles": kernel_cache.compile_count(),
                      "error": max(float(np.max(np.abs(a - b))) for a, b in zip(out, want))}))
""")


def test_a_new_process_loads_the_kernel_from_disk_for_another_length(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    first = run_json_script(script, tmp_path / "cache", "20")
    second = run_json_script(script, tmp_path / "cache", "300")
    assert first["compiles"] >= 1 and second["compiles"] == 0
    assert first["error"] < 1e-12 and second["error"] < 1e-12


CUDA_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import transfuse as tx
    from transfuse import lax

    def solve(a):
        def body(c):
            x, dx, i = c
            dx = (x * x * x - a) / (3 * x * x)
            return x - dx, dx, i + 1
        x, _, i = lax.while_loop(lambda c: (np.abs(c[1]) > 1e-12) & (c[2] < 60), body,
                                 (1.0 + np.tanh(a), np.float64(1.0), np.int64(0)))
        y = lax.switch(i % 3, [lambda: x * 2, lambda: x - 1, lambda: -x])
        return x, i, y

    a = np.geomspace(0.5, 1e4, int(sys.argv[1]))
    f = tx.jit(tx.vmap(solve), device="cuda", cache=False)
    out = [np.asarray(o.copy_to_host()) for o in f(a)]
    want = tx.vmap(solve)(a)
    print(json.dumps({"steps": [int(out[1].min()), int(out[1].max())],
                      "error": max(float(np.max(np.abs(o - w))) for o, w in zip(out, want)),
                      "kernels": f.lower(a).source.count("@cuda.jit(device=True")}))
""")


def test_cuda_runs_each_lane_in_a_thread_of_its_own(tmp_path):
    """vmap of a while loop and a switch: a thread a lane, each its own steps and branch
    (numba-cuda's simulator; PTX for sm_75 in this process)."""
    pytest.importorskip("numba_cuda")
    from transfuse.runtime import cuda as cuda_runtime

    script = tmp_path / "job.py"
    script.write_text(CUDA_SCRIPT)
    result = run_json_script(script, tmp_path / "cache", "12", NUMBA_ENABLE_CUDASIM="1")
    assert result["error"] < 1e-12 and result["steps"][0] < result["steps"][1]
    assert result["kernels"] >= 5  # while cond and body, its map, three branches, switch
    namespace: dict = {}
    exec(CUDA_SCRIPT.split("a = np.geomspace")[0], namespace)
    a = np.geomspace(0.5, 1e4, 12)
    low = tx.jit(tx.vmap(namespace["solve"]), device="cuda", cache=False).lower(a)
    module = cuda_runtime.load_program(low.source, "control", disk=False)
    ptx = cuda_runtime.kernel_ptx(module.module, low.kernels, cc=(7, 5))
    assert set(ptx) == {k.name for k in low.kernels}


def test_cuda_refuses_control_flow_on_arrays_naming_it():
    rng = np.random.default_rng(4)
    h, w, xs = rng.standard_normal(4), rng.standard_normal((4, 4)), rng.standard_normal((3, 4))
    with pytest.raises(tx.CompileError, match=r"scan \(transfuse.lax control flow\) has no "
                                              r"CUDA kernel here.*\n.*test_control_lowering"):
        tx.jit(_rnn, device="cuda", cache=False).lower(h, xs, w)


def _lane_roots(a, x0):
    """Newton's method for a**(1/3) from x0, per lane (vmap): lanes stop at their own step."""
    tol = a.dtype.type(1e-5 if a.dtype == np.float32 else 1e-13)

    def body(c):
        x, dx, i = c
        dx = (x * x * x - a) / (3 * x * x)
        return x - dx, dx, i + 1
    x, _, i = lax.while_loop(lambda c: (np.abs(c[1]) > tol * np.abs(c[0])) & (c[2] < 60),
                             body, (x0, x0, np.int64(0)))
    return x, i


def _lanes_of_both_dtypes(a32, x32, a64, x64):
    return tx.vmap(_lane_roots)(a32, x32), tx.vmap(_lane_roots)(a64, x64)


def test_a_mapped_while_runs_blocks_of_lanes_in_lockstep(monkeypatch):
    from transfuse.compiler import lockstep_lanes

    rng = np.random.default_rng(3)
    lanes = 3 * lockstep_lanes.LANE_BLOCK + 5  # a last block of 5 lanes
    args = []
    for dtype in (np.float32, np.float64):
        args += [rng.uniform(0.5, 2.0, lanes).astype(dtype),
                 (10.0 ** rng.uniform(-0.5, 4.0, lanes)).astype(dtype)]
    jitted = tx.jit(_lanes_of_both_dtypes)  # one compile for both dtypes
    source = jitted.lower(*args).source
    assert source.count("in lockstep blocks") == 2
    assert re.search(r"^\s+while a0 \| a1 \|", source, re.M)
    out = jitted(*args)
    for _, steps in out:
        assert 2 <= steps.min() and steps.max() - steps.min() >= 5  # lanes of their own lengths
    got = tx.tree_flatten(out)[0]
    want = tx.tree_flatten(_interpreted(_lanes_of_both_dtypes, args))[0]
    for g, w in zip(got, want):  # the same operations: bit-equal
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    monkeypatch.setattr(lockstep_lanes, "ENABLED", False)  # one lane at a time
    per_lane = tx.jit(lambda *a: _lanes_of_both_dtypes(*a))
    assert "in lockstep blocks" not in per_lane.lower(*args).source
    for g, w in zip(got, tx.tree_flatten(per_lane(*args))[0]):
        np.testing.assert_array_equal(g, w)
    monkeypatch.setattr(lockstep_lanes, "ENABLED", True)
    empty = tx.tree_flatten(jitted(*(v[:0] for v in args)))[0]  # no lane
    assert [(e.shape, e.dtype) for e in empty] == [((0,), g.dtype) for g in got]
