"""The direct back end's native pool of threads (runtime/direct_pool.py): the same bits as
the Python pool on any thread count, a block's error status, two Python threads at once,
a forked child, and a spoiled library, which is built again."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from transfuse.runtime import cache as kernel_cache
from transfuse.runtime import direct, direct_pool

import transfuse as tx
from tests.helpers import jit_result_with, run_json_script

RNG = np.random.default_rng(41)
ROWS = 3000  # rows of 256: a parallel row region


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def gather(x, i):
    return x[i] * 2.0 + 1.0


@pytest.fixture
def native_pool(tmp_path, monkeypatch):
    """A fresh disk cache, and the native pool built and loaded."""
    monkeypatch.setenv("TRANSFUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TRANSFUSE_DISABLE_CACHE", raising=False)
    monkeypatch.setenv("TRANSFUSE_NATIVE_POOL", "1")
    kernel_cache.clear_memory_cache()
    if not direct_pool.wait_until_ready():
        pytest.fail("the native pool was not built (is there a C compiler?)")
    yield
    kernel_cache.clear_memory_cache()


def python_pool_result(f, *args):
    """f's jit result with the Python pool running the parallel steps."""
    return jit_result_with("TRANSFUSE_NATIVE_POOL", "0", f, *args)


def test_a_parallel_step_runs_on_the_native_pool(native_pool, monkeypatch):
    x = RNG.standard_normal((ROWS, 256)).astype(np.float32)
    jitted = tx.jit(softmax)
    jitted(x)
    (exe,) = jitted.executables()
    assert isinstance(exe.kernel, direct.DirectKernel)
    assert any(extent is not None for _, extent in exe.kernel.plan.steps)
    calls = []
    real = direct_pool._RUN

    def counting(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(direct_pool, "_RUN", counting)
    jitted(x)
    assert calls  # the block count of each parallel step


@pytest.mark.parametrize("threads", ["1", "2", "3", "7"])
def test_the_native_pool_gives_the_python_pools_bits_on_any_thread_count(
        native_pool, monkeypatch, threads):
    monkeypatch.setenv("NUMBA_NUM_THREADS", threads)
    x = (RNG.standard_normal((ROWS, 256)) * 4).astype(np.float32)
    x[5, 7] = np.inf
    got = tx.jit(softmax)(x)
    np.testing.assert_array_equal(got, python_pool_result(softmax, x))
    with np.errstate(invalid="ignore"):
        want = softmax(x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_a_blocks_error_status_raises_through_the_native_pool(native_pool):
    n = 600_000  # a parallel gather region
    x = RNG.standard_normal(n).astype(np.float32)
    i = RNG.integers(-n, n, n)
    jitted = tx.jit(gather)
    np.testing.assert_array_equal(jitted(x, i), x[i] * np.float32(2.0) + np.float32(1.0))
    (exe,) = jitted.executables()
    assert any(extent is not None for _, extent in exe.kernel.plan.steps)
    for where in (0, n // 2, n - 1):  # the first block, a middle one, the last
        j = i.copy()
        j[where] = n
        with pytest.raises((IndexError, tx.TransfuseError), match="out of bounds"):
            jitted(x, j)
    np.testing.assert_array_equal(jitted(x, i), x[i] * np.float32(2.0) + np.float32(1.0))


def test_two_python_threads_run_parallel_steps_at_once(native_pool):
    """One step at a time in the pool: a thread that finds it busy runs its blocks itself."""
    jitted = tx.jit(softmax)
    inputs = [(RNG.standard_normal((ROWS, 256)) * s).astype(np.float32) for s in (1, 3)]
    wants = [jitted(x) for x in inputs]
    failures = []

    def work(k: int) -> None:
        for _ in range(40):
            if not np.array_equal(jitted(inputs[k]), wants[k]):
                failures.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not failures


FORKED = """
import json, os, select, signal
import numpy as np
import transfuse as tx
from transfuse.runtime import direct_pool
def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)
x = np.random.default_rng(0).standard_normal((3000, 256)).astype(np.float32)
jitted = tx.jit(softmax)
jitted(x)
ready = direct_pool.wait_until_ready()
want = jitted(x)  # the parent's workers are running
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: workers of its own, the same answer
    ok = all(np.array_equal(jitted(x), want) for _ in range(3))
    os.write(write, b"1" if ok else b"0")
    os._exit(0)
os.close(write)
answered, _, _ = select.select([read], [], [], 120)
child = os.read(read, 1) if answered else b"hung"
if not answered:
    os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
print(json.dumps({"ready": ready, "child": child.decode(),
                  "parent": bool(np.array_equal(jitted(x), want))}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
@pytest.mark.parametrize("native", ["1", "0"])
def test_a_forked_child_starts_its_own_workers(tmp_path, native):
    """In a process of its own: a fork where JAX (imported by other tests) runs threads
    could hang the child for reasons of JAX's. Python's pool too (before the native one
    is built, or without it): the child's copy believed it had idle threads and never
    ran a block, so the child waited forever (found in session 15)."""
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    report = run_json_script(script, tmp_path / "cache", TRANSFUSE_NATIVE_POOL=native)
    assert report == {"ready": native == "1", "child": "1", "parent": True}


SPOILED = """
import json, os, sys
import numpy as np
from pathlib import Path
from transfuse.runtime import direct_pool
folder = Path(os.environ["TRANSFUSE_CACHE_DIR"]) / "direct"
folder.mkdir(parents=True, exist_ok=True)
(folder / direct_pool._library_name()).write_bytes(b"not a library")
import transfuse as tx
def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)
x = np.random.default_rng(0).standard_normal((3000, 256)).astype(np.float32)
first = tx.jit(softmax)(x)
ready = direct_pool.wait_until_ready()
again = tx.jit(softmax)(x)
library = folder / direct_pool._library_name()
print(json.dumps({"ready": ready, "same": bool(np.array_equal(first, again)),
                  "close": bool(np.allclose(again.sum(axis=-1), 1, atol=1e-5)),
                  "rebuilt": library.read_bytes()[:4] == b"\\x7fELF"}))
"""


def test_a_spoiled_pool_library_is_built_again(tmp_path):
    script = tmp_path / "spoiled.py"
    script.write_text(SPOILED)
    report = run_json_script(script, tmp_path / "cache", TRANSFUSE_NATIVE_POOL="1")
    assert report == {"ready": True, "same": True, "close": True, "rebuilt": True}


def test_the_python_pool_runs_the_steps_when_asked(native_pool, monkeypatch):
    x = RNG.standard_normal((ROWS, 256)).astype(np.float32)
    jitted = tx.jit(softmax)
    want = jitted(x)

    def not_to_be_called(*args):
        raise AssertionError("the native pool ran a step")

    monkeypatch.setattr(direct_pool, "_RUN", not_to_be_called)
    monkeypatch.setenv("TRANSFUSE_NATIVE_POOL", "0")
    assert direct_pool.runner() is None
    np.testing.assert_array_equal(jitted(x), want)
