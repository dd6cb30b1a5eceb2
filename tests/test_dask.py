"""transfuse.dask (issue #19): vmap and map_reduce over dask arrays, each block a kernel.

On a LocalCluster of 2 worker processes started here (one for the module) and on dask's
synchronous scheduler: the blocks' results equal the in-memory jit(vmap(f)) bit for bit
(float64; chunks that do and do not divide the batch; pytrees in and out; in_dims None;
randomness 'different' and 'same'), each worker compiles the kernel once (the ragged last
block reuses it), a worker killed mid-run changes nothing, map_reduce equals the in-memory
reduction, and bad input raises before anything runs.
"""

from __future__ import annotations

import logging
import os
import time

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from transfuse.runtime import cache as kernel_cache

import transfuse as tx
import transfuse.dask as txd
import transfuse.numpy as tnp

FEATURES, HIDDEN = 7, 9  # no block size below equals these (equal sizes share a parameter)


def noisy_layer(params, x, y):
    """A pytree in (params, x, y), a pytree out, random draws per example."""
    w, b = params
    h = np.tanh(x @ w + b) + 0.1 * tnp.random.normal(size=HIDDEN)
    return {"h": h, "stats": (np.sum(x * y), np.max(h))}


def slow_rows(block):
    """An input block that takes a while to arrive (sleeping costs no CPU)."""
    time.sleep(0.25)
    return block


async def die():
    """Run on a worker by client.run: the process ends at once (no cleanup)."""
    os._exit(1)


def _data(rng, batch, dtype=np.float64):
    params = (rng.standard_normal((FEATURES, HIDDEN)).astype(dtype),
              rng.standard_normal(HIDDEN).astype(dtype))
    x = rng.standard_normal((batch, FEATURES)).astype(dtype)
    y = rng.standard_normal((batch, FEATURES)).astype(dtype)
    return params, x, y


def _assert_tree_equal(got, want):
    got_leaves, got_tree = tx.tree_flatten(got)
    want_leaves, want_tree = tx.tree_flatten(want)
    assert got_tree == want_tree
    for g, w in zip(got_leaves, want_leaves):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


_REFERENCE: dict[str, object] = {}


def _in_memory(randomness, seed, *args):
    """jit(vmap(noisy_layer)) on the whole batch in this process, drawing after seed(seed)
    (one jitted function per randomness for the module: one compile, any batch size)."""
    if randomness not in _REFERENCE:
        _REFERENCE[randomness] = tx.jit(tx.vmap(noisy_layer, in_dims=(None, 0, 0),
                                                randomness=randomness))
    tx.random.seed(seed)
    return _REFERENCE[randomness](*args)


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    with cluster, Client(cluster) as c:
        yield c


# ---------------------------------------------------------------------------------------
# Dask's own schedulers: dask.config's scheduler overrides the module's Client, if running
# (a graph built for a Client holds scattered futures, which only that Client computes)


@pytest.fixture
def sync():
    with dask.config.set(scheduler="sync"):
        yield


def _scalar_model(w, x):
    """Per example: a 0-d input, a (2,)-output and a 0-d output."""
    return np.stack([np.sin(w * x), np.cos(x)]), w * x * x


def test_sync_scheduler_float32_out_dims_and_transfuse_vmap_dispatch(sync):
    rng = np.random.default_rng(21)
    w = np.float32(rng.standard_normal())
    x = rng.standard_normal(11).astype(np.float32)
    lazy = tx.vmap(_scalar_model, in_dims=(None, 0), out_dims=(1, 0))(
        w, da.from_array(x, chunks=4))
    assert isinstance(lazy[0], da.Array) and lazy[0].chunks == ((2,), (4, 4, 3))
    got = dask.compute(lazy)[0]
    want = tx.jit(tx.vmap(_scalar_model, in_dims=(None, 0), out_dims=(1, 0)))(w, x)
    _assert_tree_equal(got, want)
    loop = [_scalar_model(w, xi) for xi in x]
    np.testing.assert_allclose(got[0], np.stack([o[0] for o in loop], 1), rtol=2e-6)
    assert got[1].dtype == np.float32
    empty = txd.vmap(_scalar_model, in_dims=(None, 0))(w, da.zeros(0, dtype=np.float32))
    assert empty[0].shape == (0, 2) and empty[1].compute().shape == (0,)


def test_threads_tracing_at_once_each_trace_their_own_kernel():
    # Four threads make the first calls of a fresh kernel on blocks of 3 and 2 together:
    # tracing is per thread (ir/tracing.py), so none records into another's trace.
    rng = np.random.default_rng(24)
    w = np.float32(rng.standard_normal())
    x = rng.standard_normal(11).astype(np.float32)
    for _ in range(2):
        lazy = txd.vmap(_scalar_model, in_dims=(None, 0))(w, da.from_array(x, chunks=3))
        got = dask.compute(lazy, scheduler="threads", num_workers=4)[0]
        _assert_tree_equal(got, tx.jit(tx.vmap(_scalar_model, in_dims=(None, 0)))(w, x))


def test_randomness_same_and_different_on_any_chunking_and_key_advance(sync):
    rng = np.random.default_rng(22)
    params, x, y = _data(rng, 14)
    for randomness in ("different", "same"):
        mapped = txd.vmap(noisy_layer, in_dims=(None, 0, 0), randomness=randomness)
        want = _in_memory(randomness, 3, params, x, y)
        after = tnp.random.uniform()
        for chunks in (14, 4):  # one block; 4 + 4 + 4 + 2
            tx.random.seed(3)
            lazy = mapped(params, da.from_array(x, chunks=(chunks, FEATURES)), y)
            assert tnp.random.uniform() == after  # the call took vmap's streams
            _assert_tree_equal(dask.compute(lazy)[0], want)
        noise = want["h"] - np.tanh(x @ params[0] + params[1])
        assert np.allclose(noise[0], noise[1]) == (randomness == "same")


def test_map_reduce_sum_mean_and_callable_equal_the_in_memory_reduction(sync):
    rng = np.random.default_rng(23)
    params, x, y = _data(rng, 23)

    def loss(params, x, y):
        w, b = params
        return np.sum((np.tanh(x @ w + b) - y[:HIDDEN - 2].sum()) ** 2)

    per_example = tx.vmap(tx.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    dx = da.from_array(x, chunks=(3, FEATURES))
    dy = da.from_array(y, chunks=(3, FEATURES))
    grad = tx.grad(loss)
    for reduce, expect in (("sum", lambda g: g.sum(0)), ("mean", lambda g: g.mean(0)),
                           (lambda a: np.max(a, axis=0), lambda g: g.max(0))):
        lazy = txd.map_reduce(grad, reduce, in_dims=(None, 0, 0))(params, dx, dy)
        assert lazy[0].shape == (FEATURES, HIDDEN) and lazy[0].numblocks == (1, 1)
        got = dask.compute(lazy)[0]
        for g, p in zip(got, per_example):
            np.testing.assert_allclose(g, expect(p), rtol=1e-12, atol=1e-12)


def test_bad_input_raises_before_anything_runs(sync):
    x = da.from_array(np.arange(6.0).reshape(3, 2), chunks=2)
    with pytest.raises(tx.BatchingError, match="different sizes"):
        txd.vmap(lambda a, b: a + b)(x, np.ones((4, 2)))
    with pytest.raises(tx.BatchingError, match="randomness"):
        txd.vmap(lambda a: a + tnp.random.normal(size=a.shape))(x)
    with pytest.raises(tx.BatchingError, match="out of range"):
        txd.vmap(lambda a: a, in_dims=2)(x)
    with pytest.raises(tx.TransfuseValueError, match="reduce must be"):
        txd.map_reduce(np.sin, reduce="median")
    with pytest.raises(tx.TransfuseValueError, match="unknown"):
        txd.vmap(np.sin)(x[x[:, 0] > 1])


# ---------------------------------------------------------------------------------------
# On two worker processes


def test_cluster_equals_in_memory_vmap_bit_for_bit_and_compiles_once_per_worker(client):
    rng = np.random.default_rng(19)
    params, x, y = _data(rng, 24)
    mapped = txd.vmap(noisy_layer, in_dims=(None, 0, 0), randomness="different")
    want = _in_memory("different", 7, params, x, y)
    compiles_before = kernel_cache.compile_count()
    for chunk in (6, 5):  # 24 = 4 x 6; 24 = 4 x 5 + a ragged 4
        tx.random.seed(7)
        lazy = mapped(params, da.from_array(x, chunks=(chunk, FEATURES)), y)
        assert lazy["h"].chunks == ((chunk,) * (24 // chunk) + ((24 % chunk,) if 24 % chunk
                                                                else ()), (HIDDEN,))
        assert lazy["stats"][0].dtype == np.float64
        _assert_tree_equal(client.compute(lazy).result(), want)
    assert kernel_cache.compile_count() == compiles_before  # the client compiled nothing
    tx.random.seed(7)  # and it equals the reference interpreter's draws and values
    reference = tx.vmap(noisy_layer, in_dims=(None, 0, 0), randomness="different")(
        params, x, y)
    np.testing.assert_allclose(want["h"], reference["h"], rtol=1e-13, atol=1e-13)

    stats = client.run(txd.worker_stats)
    kernels = [s["kernels"][k] for s in stats.values() for k in s["kernels"]
               if k.startswith(mapped.spec.token)]
    assert sum(k["blocks"] for k in kernels) == 4 + 5
    for k in kernels:  # block sizes 6, 5 and 4: one kernel, compiled or loaded once
        assert k["compiles"] + k["disk_hits"] == 1, k
        assert k["reused"] == k["signatures"] - 1 and k["traces"] == k["signatures"], k


def test_worker_killed_mid_run_leaves_result_unchanged(client):
    rng = np.random.default_rng(20)
    params, x, y = _data(rng, 60)
    want = _in_memory("different", 8, params, x, y)
    slow_x = da.from_array(x, chunks=(5, FEATURES)).map_blocks(slow_rows, dtype=x.dtype)
    tx.random.seed(8)
    lazy = tx.vmap(noisy_layer, in_dims=(None, 0, 0), randomness="different")(
        params, slow_x, da.from_array(y, chunks=(12, FEATURES)))  # rechunked to 5s
    pids = client.run(os.getpid)
    running = client.compute(lazy)
    deadline = time.monotonic() + 30
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # some blocks done, others in flight
    victim = max(client.processing().items(), key=lambda kv: len(kv[1]))[0]
    assert not running.done()
    client.run(die, workers=[victim], wait=False)
    _assert_tree_equal(running.result(timeout=300), want)
    assert pids[victim] not in client.run(os.getpid).values()  # it did die (its nanny
    # starts another process, which this test need not wait for)


def test_kept_scatters_are_per_client_and_a_rescatter_takes_a_fresh_key(client, monkeypatch):
    # Two clients, kept scatters cut to 3 a client (one call's: the spec, w and b), three
    # parameter sets cycled over both: each call evicts the previous call's w and b, which
    # are scattered again two calls later. A re-scatter under the key of the evicted
    # future raced with that future's release (CI: "lost dependencies").
    from dask.base import tokenize

    from transfuse.dask import _client as dask_client

    monkeypatch.setattr(dask_client, "SHIPPED_KEPT", 3)
    rng = np.random.default_rng(25)
    sets = [_data(rng, 8) for _ in range(3)]
    mapped = txd.vmap(noisy_layer, in_dims=(None, 0, 0), randomness="same")
    other = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                         dashboard_address=None, silence_logs=logging.ERROR)
    with other, Client(other, set_as_default=False) as second:
        keys_of_w = {}
        for step in range(6):
            params, x, y = sets[step % 3]
            for c in (client, second):
                tx.random.seed(step)
                want = _in_memory("same", step, params, x, y)
                tx.random.seed(step)
                with c.as_current():
                    lazy = mapped(params, da.from_array(x, chunks=(3, FEATURES)), y)
                    _assert_tree_equal(c.compute(lazy).result(), want)
                kept = dask_client._SHIPPED[c.id]
                assert len(kept) == 3
                keys_of_w.setdefault(c.id, []).append(kept[tokenize(params[0])].key)
        for keys in keys_of_w.values():  # w of set 0 at steps 0 and 3: evicted between
            assert keys[0] != keys[3]
