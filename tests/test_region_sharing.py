"""Region functions shared across programs: compiled once, linked into every kernel whose
code has them (compiler/direct_regions.py, runtime/direct_regions.py)."""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from transfuse.compiler.direct_regions import OUTLINE_MIN_NODES, name_region, outline_loops
from transfuse.compiler.lower_direct import translate
from transfuse.runtime import cache as kernel_cache
from transfuse.runtime import direct

import transfuse as tx
from tests.helpers import run_json_script

RNG = np.random.default_rng(20261207)
pytestmark = pytest.mark.skipif(direct.mode() == "off" or direct.c_compiler() is None,
                                reason="the direct back end is off or has no C compiler")


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def softmax_then_project(x, w):
    return softmax(x) @ w


def softmax64(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def counted(f, *args):
    """(f(*args), regions compiled, regions linked from earlier kernels) for one call."""
    before = kernel_cache.stats()
    out = f(*args)
    after = kernel_cache.stats()
    return (out, after.regions_compiled - before.regions_compiled,
            after.regions_reused - before.regions_reused)


def tolerance(dtype):
    return dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


# rows 64: a serial loop nest of the entry; rows 4096: a parallel region's body
@pytest.mark.parametrize("rows", [64, 4096])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_region_one_program_compiled_is_linked_into_another(fresh_cache, rows, dtype):
    x = (RNG.standard_normal((rows, 300)) * 3).astype(dtype)
    w = RNG.standard_normal((300, 20)).astype(dtype)
    got, compiled, reused = counted(tx.jit(softmax), x)
    assert compiled >= 1 and reused == 0
    np.testing.assert_allclose(got, softmax64(x), **tolerance(dtype))

    got, compiled, reused = counted(tx.jit(softmax_then_project), x, w)
    # the softmax rows are the first program's code; the GEMM driver is new
    assert reused >= 1 and compiled == 1
    want = softmax64(x) @ w.astype(np.float64)
    np.testing.assert_allclose(got, want, **tolerance(dtype))
    assert len(list((fresh_cache / "regions").glob("group-*.o"))) == 2


@pytest.mark.parametrize("rows", [0, 1, 7])
def test_linked_regions_run_any_batch_size_and_match_a_kernel_that_compiled_them(
        fresh_cache, rows):
    """After another program compiled the softmax rows: this program, at batch sizes
    1 and 7 (its kernel: sizes are arguments) and 0 (a kernel of its own: an extent of
    0 is a lowering decision), with a broadcast bias, gives the bits of a kernel that
    compiled its regions itself (cache=False), and float64's values."""
    x = (RNG.standard_normal((64, 300)) * 3).astype(np.float32)
    w = RNG.standard_normal((300, 20)).astype(np.float32)
    bias = RNG.standard_normal(20).astype(np.float32)

    def project(a, b, c):
        return softmax(a) @ b + c

    tx.jit(softmax)(x)
    shared = tx.jit(project)
    _, _, reused = counted(shared, x, w, bias)
    assert reused >= 1
    xs = x[:rows]
    got, compiled, _ = counted(shared, xs, w, bias)
    assert got.shape == (rows, 20) and (compiled == 0 or rows == 0)
    alone = tx.jit(project, cache=False)(xs, w, bias)
    np.testing.assert_array_equal(got.view(np.uint32), alone.view(np.uint32))
    want = softmax64(xs) @ w.astype(np.float64) + bias
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)


def test_another_dtype_is_another_region(fresh_cache):
    x = RNG.standard_normal((64, 300))
    w = RNG.standard_normal((300, 20))
    counted(tx.jit(softmax), x.astype(np.float32))
    got, compiled, reused = counted(tx.jit(softmax_then_project), x, w)
    assert compiled >= 1 and reused == 0
    np.testing.assert_allclose(got, softmax64(x) @ w, rtol=1e-12, atol=1e-14)


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import transfuse as tx
    from transfuse.runtime import cache
    from tests.test_region_sharing import softmax, softmax_then_project
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 300)).astype(np.float32)
    w = rng.standard_normal((300, 20)).astype(np.float32)
    out = tx.jit(softmax)(x) if sys.argv[1] == "softmax" else tx.jit(softmax_then_project)(x, w)
    s = cache.stats()
    print(json.dumps({"compiled": s.regions_compiled, "reused": s.regions_reused,
                      "out": np.asarray(out, np.float64).ravel().tolist()}))
""")


def test_regions_are_shared_between_processes(tmp_path):
    script = tmp_path / "program.py"
    script.write_text(SCRIPT)
    first = run_json_script(script, tmp_path / "cache", "softmax")
    second = run_json_script(script, tmp_path / "cache", "project")
    assert first["compiled"] >= 1 and first["reused"] == 0
    assert second["reused"] >= 1 and second["compiled"] == 1  # (the GEMM driver)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 300)).astype(np.float32)
    w = rng.standard_normal((300, 20)).astype(np.float32)
    np.testing.assert_allclose(second["out"], (softmax64(x) @ w).ravel(), rtol=2e-5,
                               atol=1e-5)


def _group(cache: Path) -> Path:
    (group,) = (cache / "regions").glob("group-*.o")
    return group


@pytest.mark.parametrize("damage", ["flipped", "truncated", "missing"])
def test_a_damaged_region_object_is_detected_and_compiled_again(fresh_cache, damage):
    x = RNG.standard_normal((64, 300)).astype(np.float32)
    w = RNG.standard_normal((300, 20)).astype(np.float32)
    counted(tx.jit(softmax), x)
    group = _group(fresh_cache)
    data = bytearray(group.read_bytes())
    if damage == "flipped":
        data[len(data) // 2] ^= 0xFF
        group.write_bytes(bytes(data))
    elif damage == "truncated":
        group.write_bytes(bytes(data[:100]))
    else:
        group.unlink()
    repairs = kernel_cache.stats().repairs
    got, compiled, reused = counted(tx.jit(softmax_then_project), x, w)
    assert compiled >= 1 and reused == 0 and kernel_cache.stats().repairs > repairs
    np.testing.assert_allclose(got, softmax64(x) @ w.astype(np.float64), rtol=2e-5, atol=1e-5)
    # the index now names the new object: a third program links it
    got, compiled, reused = counted(tx.jit(lambda a, b: np.tanh(softmax(a) @ b)), x, w)
    assert reused >= 1
    np.testing.assert_allclose(got, np.tanh(softmax64(x) @ w.astype(np.float64)),
                               rtol=2e-5, atol=1e-5)


def test_an_index_naming_the_wrong_object_falls_back_to_compiling_the_regions(fresh_cache):
    """An object whose bytes match the record but lacks the region (a hand-edited index):
    the kernel does not load, and is built again with its regions in its own object."""
    x = RNG.standard_normal((64, 300)).astype(np.float32)
    w = RNG.standard_normal((300, 20)).astype(np.float32)
    counted(tx.jit(softmax), x)
    softmax_group = _group(fresh_cache)
    counted(tx.jit(lambda a, b: np.tanh(a * b) + np.sin(a) * b), x, x)
    (other,) = set((fresh_cache / "regions").glob("group-*.o")) - {softmax_group}
    digest = direct._digest(other)
    for entry in (fresh_cache / "regions").glob("*.json"):
        record = json.loads(entry.read_text())
        if record["object"] == softmax_group.name:
            entry.write_text(json.dumps({**record, "object": other.name, "sha256": digest}))
    got = tx.jit(softmax_then_project)(x, w)
    np.testing.assert_allclose(got, softmax64(x) @ w.astype(np.float64), rtol=2e-5, atol=1e-5)


def test_regions_calling_pointers_the_loader_sets_stay_in_the_kernel(fresh_cache):
    """A loop that calls scipy.special's C functions reads function pointers that belong to
    the kernel (Plan.externals): it is compiled with the kernel, not shared."""
    import scipy.special

    def f(x):
        return scipy.special.erfc(x) * scipy.special.gammaln(np.abs(x) + 0.5) + np.exp(x)

    x = RNG.standard_normal(500)
    jitted = tx.jit(f)
    got = jitted(x)
    np.testing.assert_allclose(got, f(x), rtol=1e-13, atol=1e-15)
    module = translate(jitted.lower(x).source)
    assert module.plan.externals
    assert all("tf_external_" not in text for text in module.regions.values())
    assert "tf_external_" in module.ir


def test_equal_region_code_gets_one_symbol():
    text = '; ModuleID = "transfuse_region"\ndefine weak_odr i64 @"tf_region"() {\n}\n'
    symbol, named = name_region(text)
    assert symbol.startswith("tf_region_") and f'@"{symbol}"' in named
    assert name_region(text)[0] == symbol
    assert name_region(text.replace("i64", "i32"))[0] != symbol


def _outlined(code: str, entry: set[str], kept_after: str = "") -> list[str]:
    body = ast.parse(textwrap.dedent(code) + kept_after).body
    names = []

    def define(fn):
        fn.name = f"loop{len(names)}"
        names.append((fn.name, [a.arg for a in fn.args.args]))
        return fn.name

    def kind_of(name):
        return "entry" if name in entry else "global" if name in ("np", "range") else "local"

    out = outline_loops(body, kind_of, define)
    return [ast.unparse(s) for s in out], names


BIG_LOOP = """
for i0 in range(n0):
    t1 = a0[i0] * a0[i0] + a0[i0] * 2.0 - a0[i0] / 3.0
    t2 = np.exp(t1) + np.exp(-t1) + np.exp(t1 * 0.5) + np.exp(t1 * 0.25)
    t3 = t2 * t2 + t1 * t1 + t2 * t1 + t1 - t2 + {extra}
    b1[i0] = t3 + t2 * 0.5 + t1 * 0.25
"""


def test_only_closed_loop_nests_of_some_size_are_outlined():
    loop = BIG_LOOP.format(extra="1.0")
    assert sum(1 for _ in ast.walk(ast.parse(loop))) >= OUTLINE_MIN_NODES
    statements, names = _outlined(loop, {"n0", "a0", "b1"})
    [(name, params)] = names
    assert sorted(params) == ["a0", "b1", "n0"]
    assert statements == [f"{name}({', '.join(params)})"]
    # it reads a value of the step: stays
    statements, names = _outlined("s = a0[0]\n" + BIG_LOOP.format(extra="s"), {"n0", "a0", "b1"})
    assert names == []
    # a name it assigns is read after it: stays
    statements, names = _outlined(loop, {"n0", "a0", "b1"}, kept_after="b1[0] = t3\n")
    assert names == []
    # a small loop: stays
    statements, names = _outlined("for i0 in range(n0):\n    b1[i0] = a0[i0]\n",
                                  {"n0", "a0", "b1"})
    assert names == []
