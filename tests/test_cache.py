"""jit's caches: per signature in memory, and source + machine code on disk across processes."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from transfuse.runtime import cache as kernel_cache

import transfuse as tx
from tests.helpers import run_json_script

# These tests look at Numba's cache files: their kernels go through Numba, not the direct
# back end (runtime/direct.py; its cache is tests/test_direct.py's).
pytestmark = pytest.mark.usefixtures("numba_kernels")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh disk cache, and no kernels remembered from earlier tests in this process."""
    monkeypatch.setenv("TRANSFUSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TRANSFUSE_DISABLE_CACHE", raising=False)
    kernel_cache.clear_memory_cache()
    yield tmp_path
    kernel_cache.clear_memory_cache()


def counting(fn):
    """fn, and a list that grows each time Python runs fn's body (each trace)."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)
    wrapped.__name__ = wrapped.__qualname__ = f"counting_{fn.__name__}"
    return wrapped, calls


def test_a_second_call_neither_retraces_nor_recompiles(cache_dir):
    f, calls = counting(lambda x: np.sin(x) * 3 + 1)
    jf = tx.jit(f)
    x = np.linspace(0, 1, 7, dtype=np.float32)
    first = jf(x)
    second = jf(x)
    np.testing.assert_allclose(first, np.sin(x) * 3 + 1, rtol=1e-6)
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1
    info = jf.cache_info()
    assert (info.traces, info.compiles, info.signatures) == (1, 1, 1)


def test_a_new_shape_dtype_or_static_value_compiles_again(cache_dir):
    f, calls = counting(lambda x, n: x[:n] * 2)
    jf = tx.jit(f, static_argnums=1)
    jf(np.arange(5.0), 2)
    jf(np.arange(5.0), 2)
    assert len(calls) == 1
    np.testing.assert_array_equal(jf(np.arange(6.0), 2), [0.0, 2.0])  # new shape
    np.testing.assert_array_equal(jf(np.arange(6.0), 3), [0.0, 2.0, 4.0])  # new static
    assert jf(np.arange(6, dtype=np.float32), 3).dtype == np.float32  # new dtype
    assert len(calls) == 4
    assert jf.cache_info().signatures == 4


def test_non_contiguous_and_scalar_arguments_reuse_the_compiled_signature(cache_dir):
    f, calls = counting(lambda x: x + 1)
    jf = tx.jit(f)
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(jf(x[:, :3].copy()), x[:, :3] + 1)
    np.testing.assert_array_equal(jf(x[:, :3]), x[:, :3] + 1)  # strided view: copied in
    np.testing.assert_array_equal(jf(np.asfortranarray(x[:, :3])), x[:, :3] + 1)
    assert len(calls) == 1
    np.testing.assert_array_equal(jf(np.float64(2.0)), 3.0)  # NumPy scalar: 0-d signature
    np.testing.assert_array_equal(jf(np.array(2.0)), 3.0)
    assert len(calls) == 2


def test_kernels_are_shared_between_functions_with_the_same_graph(cache_dir):
    a = tx.jit(lambda x: x * 2)
    b = tx.jit(lambda x: x * 2)
    x = np.arange(3.0)
    a(x)
    b(x)
    assert a.cache_info().compiles == 1
    assert b.cache_info().compiles == 0 and b.cache_info().reused == 1


def test_first_compiles_from_several_threads_happen_once(cache_dir):
    f, calls = counting(lambda x: np.exp(x).sum())
    jf = tx.jit(f)
    x = np.linspace(0, 1, 100)
    results, errors = [], []

    def worker():
        try:
            results.append(jf(x))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 1
    for r in results:
        np.testing.assert_allclose(r, np.exp(x).sum(), rtol=1e-12)


def test_cache_false_and_the_environment_switch_write_nothing(cache_dir, monkeypatch):
    x = np.arange(4.0)
    tx.jit(lambda v: v - 1, cache=False)(x)
    assert not any(cache_dir.iterdir())
    monkeypatch.setenv("TRANSFUSE_DISABLE_CACHE", "1")
    tx.jit(lambda v: v - 2)(x)
    assert not any(cache_dir.iterdir())
    monkeypatch.delenv("TRANSFUSE_DISABLE_CACHE")
    tx.jit(lambda v: v - 3)(x)
    assert list((cache_dir / "kernels").iterdir())


def test_transfuse_log_cache_reports_hits_and_misses_with_reasons(cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFUSE_LOG", "cache")

    def scaled(x, k):
        return x * k

    jf = tx.jit(scaled, static_argnums=1)
    jf(np.arange(3.0), 2)
    jf(np.arange(4.0), 2)
    jf(np.arange(4.0), 3)
    err = capsys.readouterr().err
    assert "miss scaled: first call" in err
    assert "miss scaled: new shape" in err
    assert "miss scaled: new static value" in err
    assert "disk miss scaled: no entry" in err

    def scaled(x, k):  # noqa: F811 - the same function, edited
        return x * k + 1

    kernel_cache.clear_memory_cache()
    tx.jit(scaled, static_argnums=1)(np.arange(3.0), 2)
    assert "changed function" in capsys.readouterr().err


def _entry_dir(cache_dir: Path) -> Path:
    (entry,) = (cache_dir / "kernels").iterdir()
    return entry


def test_a_truncated_or_foreign_cache_entry_is_rewritten(cache_dir):
    x = np.linspace(-1, 1, 9)
    expected = np.tanh(x) * 2

    def f(v):
        return np.tanh(v) * 2

    np.testing.assert_allclose(tx.jit(f)(x), expected, rtol=1e-12)
    entry = _entry_dir(cache_dir)
    source = (entry / "kernel.py").read_text()
    (entry / "kernel.py").write_text(source[: len(source) // 2])  # truncated
    kernel_cache.clear_memory_cache()
    jf = tx.jit(f)
    np.testing.assert_allclose(jf(x), expected, rtol=1e-12)
    assert jf.cache_info().compiles == 1
    assert (entry / "kernel.py").read_text() == source
    (entry / "kernel.py").write_text(source.replace("np.tanh", "np.sinh"))  # foreign
    kernel_cache.clear_memory_cache()
    np.testing.assert_allclose(tx.jit(f)(x), expected, rtol=1e-12)
    assert (entry / "kernel.py").read_text() == source


def test_a_corrupted_numba_cache_file_is_rebuilt(cache_dir):
    x = np.linspace(-1, 1, 9)

    def g(v):
        return np.cos(v) + v

    tx.jit(g)(x)
    pycache = _entry_dir(cache_dir) / "__pycache__"
    data = [p for p in pycache.iterdir() if p.suffix in (".nbi", ".nbc")]
    assert data, "Numba wrote its cache next to kernel.py"
    for p in data:
        p.write_bytes(p.read_bytes()[:20])
    kernel_cache.clear_memory_cache()
    jg = tx.jit(g)
    np.testing.assert_allclose(jg(x), np.cos(x) + x, rtol=1e-12)
    assert jg.cache_info().compiles == 1
    kernel_cache.clear_memory_cache()
    again = tx.jit(g)
    np.testing.assert_allclose(again(x), np.cos(x) + x, rtol=1e-12)
    assert again.cache_info().disk_hits == 1


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import transfuse as tx

    def step(w, x):
        h = np.tanh(x @ w)
        return (h * h).sum(axis=1), np.exp(-h).mean()

    jstep = tx.jit(step)
    w = np.linspace(-1, 1, 12).reshape(4, 3)
    x = np.linspace(0, 2, 20).reshape(5, 4)
    out = jstep(w, x)
    info = jstep.cache_info()
    kernel = jstep.executables()[0].kernel
    stats = kernel.dispatcher.stats
    print(json.dumps({"compiles": info.compiles, "disk_hits": info.disk_hits,
                      "numba_misses": sum(stats.cache_misses.values()),
                      "numba_hits": sum(stats.cache_hits.values()),
                      "out": [o.tolist() for o in out]}))
""")


def test_a_second_process_loads_the_kernel_from_disk_and_compiles_nothing(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)

    def run():
        return run_json_script(script, tmp_path / "cache")

    first, second = run(), run()
    assert first["compiles"] == 1 and first["numba_misses"] == 1
    assert second["compiles"] == 0 and second["disk_hits"] == 1
    assert second["numba_misses"] == 0 and second["numba_hits"] == 1
    assert second["out"] == first["out"]


def test_an_array_changed_in_place_after_capture_is_seen(cache_dir):
    w = np.arange(3.0)
    f, calls = counting(lambda x: np.tanh(x * w).sum())
    jf = tx.jit(f)
    x = np.ones(3)
    first = jf(x)
    jf(x)
    assert len(calls) == 1
    w -= 0.5  # an optimiser step on a closed-over array
    second = jf(x)
    assert len(calls) == 2
    np.testing.assert_allclose(second, np.tanh(x * w).sum(), rtol=1e-12)
    assert not np.isclose(first, second)


def test_plain_array_calls_take_the_fast_path(cache_dir):
    f = tx.jit(lambda x: x * 2.5 + 1)  # Python scalars become constants, not guards
    x = np.arange(8, dtype=np.float32)
    f(x)
    assert f.__transfuse_jit__.fast[0] is not None
    np.testing.assert_array_equal(f(x), x * 2.5 + 1)
    np.testing.assert_array_equal(f(x[::2]), x[::2] * 2.5 + 1)  # other shape: slow path
    np.testing.assert_array_equal(f(x.reshape(2, 4)), x.reshape(2, 4) * 2.5 + 1)


@pytest.mark.parametrize("direct", ["1", "0"])  # the direct back end's bound entry; Numba's
def test_the_fast_path_sends_other_dtypes_byte_orders_and_arities_to_the_slow_path(
        cache_dir, monkeypatch, direct):
    """The fast path's entry is bound to one signature: any other argument goes the slow
    way and gets its own answer, never the compiled signature's reading of its bytes."""
    monkeypatch.setenv("TRANSFUSE_DIRECT", direct)
    f = tx.jit(lambda x: x * 2.5 + 1)
    x = np.random.default_rng(3).standard_normal(8).astype(np.float32)
    f(x)
    (call, dtypes, _) = f.__transfuse_jit__.fast[0]
    assert (dtypes is None) == (direct == "1")  # the bound entry checks dtypes itself
    np.testing.assert_array_equal(f(x), x * np.float32(2.5) + np.float32(1))
    as_int = (x * 100).astype(np.int32)  # the same itemsize, other bits
    np.testing.assert_array_equal(f(as_int), as_int * 2.5 + 1)
    swapped = x.astype(x.dtype.newbyteorder(">"))
    np.testing.assert_array_equal(f(swapped), x * np.float32(2.5) + np.float32(1))
    np.testing.assert_array_equal(f(x.astype(np.float64)), x.astype(np.float64) * 2.5 + 1)
    assert f(np.float32(2.0)) == np.float32(6.0)  # a NumPy scalar, not an array
    assert float(f(3.0)) == 8.5
    with pytest.raises(TypeError):
        f(x, x)  # the function's own arity error, from the slow path


def test_numba_cache_dir_neither_hides_nor_scatters_a_kernels_machine_code(tmp_path):
    # Numba prefers $NUMBA_CACHE_DIR for its files: a kernel compiled under one value (or
    # none) was compiled again under another, and its files escaped the entry's checks.
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)

    def run(numba_dir: str) -> dict:
        return run_json_script(script, tmp_path / "cache",
                               NUMBA_CACHE_DIR=str(tmp_path / numba_dir))

    first, second = run("numba-a"), run("numba-b")
    assert first["compiles"] == 1
    assert second["compiles"] == 0 and second["numba_hits"] == 1
    assert second["out"] == first["out"]
    assert not any((tmp_path / "numba-a").rglob("kernel.*.nbi"))  # beside kernel.py instead
    assert any((tmp_path / "cache").rglob("kernel.entry-*.nbi"))
