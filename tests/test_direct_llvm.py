"""The direct back end's modules compiled on several threads at once
(runtime/direct_llvm.py): the same object code as one after another, the region cache
filled the same way, and LLVM's errors still reported."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.compiler.lower_direct import translate
from transfuse.runtime import cache as kernel_cache
from transfuse.runtime import direct, direct_llvm

import transfuse as tx

RNG = np.random.default_rng(20261208)
pytestmark = pytest.mark.skipif(direct.mode() == "off" or direct.c_compiler() is None,
                                reason="the direct back end is off or has no C compiler")


def mlp_loss(w1, w2, x, y):
    """A two-layer loss whose gradient has several regions (a GEMM driver, row loops)."""
    h = np.tanh(x @ w1)
    z = h @ w2
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    p = e / np.sum(e, axis=-1, keepdims=True)
    return -np.sum(y * np.log(p)) / x.shape[0]


def mlp_inputs(dtype=np.float32):
    w1 = (RNG.standard_normal((30, 40)) * 0.2).astype(dtype)
    w2 = (RNG.standard_normal((40, 7)) * 0.2).astype(dtype)
    x = RNG.standard_normal((50, 30)).astype(dtype)
    y = np.eye(7, dtype=dtype)[RNG.integers(0, 7, 50)]
    return w1, w2, x, y


def mlp_module():
    """The translated module of the per-sample gradient of mlp_loss."""
    step = tx.jit(tx.vmap(tx.grad(mlp_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0)))
    module = translate(step.lower(*mlp_inputs()).source)
    assert len(module.regions) >= 2
    return module


def test_modules_compiled_at_once_are_the_bytes_compiled_one_after_another():
    module = mlp_module()
    jobs = [(module.ir,), *((text,) for text in module.regions.values())]
    serial = direct_llvm.object_codes(jobs, threads=1)
    assert direct_llvm.object_codes(jobs, threads=2) == serial
    assert direct_llvm.object_codes(jobs, threads=5) == serial  # more threads than CPUs
    assert serial[0] == direct_llvm.object_code(module.ir)
    assert len(set(serial)) == len(serial)  # each job its own object


def test_without_an_unlocked_llvm_the_modules_compile_one_after_another(monkeypatch):
    """An llvmlite without the ctypes functions this relies on: one thread, its lock."""
    module = mlp_module()
    jobs = [(text,) for text in module.regions.values()]
    want = direct_llvm.object_codes(jobs, threads=2)
    monkeypatch.setattr(direct_llvm, "_unlocked", lambda name: None)
    assert direct_llvm.object_codes(jobs, threads=2) == want


def test_a_module_llvm_rejects_raises_from_any_thread():
    module = mlp_module()
    broken = module.ir.replace("define", "defnie", 1)
    jobs = [(text,) for text in module.regions.values()] + [(broken,)]
    with pytest.raises(RuntimeError):
        direct_llvm.object_codes(jobs, threads=2)
    # and the next batch compiles: no lock or option left behind
    assert direct_llvm.object_codes(jobs[:-1], threads=2)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_build_on_any_thread_count_fills_the_region_cache_and_agrees(
        fresh_cache, monkeypatch, threads):
    """One thread: the missing regions in one object; several: one object each. Either
    way each region has its index entry, and a second program links them."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", threads)
    args = mlp_inputs(np.float64)
    before = kernel_cache.stats()
    step = tx.jit(tx.vmap(tx.grad(mlp_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0)))
    got = step(*args)
    compiled = kernel_cache.stats().regions_compiled - before.regions_compiled
    objects = list((fresh_cache / "regions").glob("group-*.o"))
    assert compiled >= 2
    assert len(objects) == (1 if threads == "1" else compiled)
    assert len(list((fresh_cache / "regions").glob("*.json"))) == compiled
    w1, w2, x, y = args
    for k in (0, 17, 49):  # against the gradient of one sample, by the interpreter
        want = tx.grad(mlp_loss, argnums=(0, 1))(w1, w2, x[k], y[k])
        np.testing.assert_allclose(got[0][k], want[0], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(got[1][k], want[1], rtol=1e-11, atol=1e-13)
    before = kernel_cache.stats()
    tx.jit(tx.grad(mlp_loss, argnums=(0, 1)))(*args)
    assert kernel_cache.stats().regions_reused > before.regions_reused


@pytest.mark.parametrize("threads", ["1", "3"])
def test_a_kernel_without_the_disk_cache_compiles_its_regions_alone(monkeypatch, threads):
    """cache=False: the regions compile for this kernel only (beside its own object on
    several threads), and the answer is that of the cached kernel to the bit."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", threads)
    args = mlp_inputs()
    step = tx.vmap(tx.grad(mlp_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))
    alone = tx.jit(step, cache=False)(*args)
    cached = tx.jit(step)(*args)
    for a, b in zip(alone, cached):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_the_translator_hands_over_each_region_once_as_it_is_written():
    step = tx.jit(tx.vmap(tx.grad(mlp_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0)))
    source = step.lower(*mlp_inputs()).source
    told = []
    module = translate(source, lambda symbol, text: told.append((symbol, text)))
    assert told == list(module.regions.items())
    assert translate(source).regions == module.regions


def test_a_batch_gives_objects_in_the_order_added_and_can_be_abandoned():
    module = mlp_module()
    texts = [module.ir, *module.regions.values()]
    want = direct_llvm.object_codes([(t,) for t in texts], threads=1)
    batch = direct_llvm.Batch(threads=2)
    indices = [batch.add(t) for t in texts]
    assert indices == list(range(len(texts)))
    assert batch.objects() == want
    batch.abandon()  # after its objects: nothing to do
    abandoned = direct_llvm.Batch(threads=2)
    for t in texts:
        abandoned.add(t)
    abandoned.abandon()  # waits for what is compiling, compiles nothing more
    # neither batch holds LLVM's options: the next compiles, on one thread or two
    assert direct_llvm.object_codes([(t,) for t in texts], threads=2) == want


def test_a_translation_that_fails_after_its_regions_were_handed_over(fresh_cache, monkeypatch):
    """The regions compiling while the rest is translated are dropped (no index entry, no
    object in the cache), the kernel goes to Numba with the reason, and the next build
    runs."""
    from transfuse.compiler import lower_direct

    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    step = tx.jit(tx.vmap(tx.grad(mlp_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0)))
    args = mlp_inputs()
    source = step.lower(*args).source
    real = lower_direct.translate

    def fails_at_the_end(text, on_region=None):
        real(text, on_region)
        raise lower_direct.Unsupported("a test's failure after the regions")

    monkeypatch.setattr(lower_direct, "translate", fails_at_the_end)
    why = direct.build(source, fresh_cache / "k", "key")
    assert why == "unsupported: a test's failure after the regions"
    assert not any((fresh_cache / "regions").glob("*"))  # (a missing folder globs empty)
    monkeypatch.setattr(lower_direct, "translate", real)
    plan, path = direct.build(source, fresh_cache / "k", "key")
    assert path.exists()


def _build_in_child(queue, args) -> None:
    """(In a forked child.) A cold build on two threads, and its answer."""
    import os

    os.environ["NUMBA_NUM_THREADS"] = "2"
    step = tx.jit(tx.vmap(tx.grad(mlp_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0)),
                  cache=False)
    queue.put([np.asarray(a).tolist() for a in step(*args)])


def test_a_forked_child_compiles_on_its_own_threads(fresh_cache, monkeypatch):
    """After the parent compiled on its thread pool, a forked child (multiprocessing's
    default on Linux) compiles a new kernel on threads of its own; it would wait forever
    for the parent's, which its copy of the pool believes idle."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    step = tx.vmap(tx.grad(mlp_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))
    tx.jit(step, cache=False)(*mlp_inputs())  # the parent's pool has run
    args = mlp_inputs(np.float64)  # another signature: the child has no kernel for it
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_build_in_child, args=(queue, args))
    child.start()
    try:
        got = queue.get(timeout=120)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    for a, b in zip(got, step(*args)):  # the interpreter's answer
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-11, atol=1e-13)
