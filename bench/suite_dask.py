"""dask: per-sample gradient norms of the 784-512-512-10 tanh MLP on Dask (issue #19).

`transfuse.dask.vmap(grad_norm, in_dims=(None, 0, 0))` over 200,000 float32 examples (one-hot
labels, blocks of 250 along the batch), on a LocalCluster of worker processes with one
thread each. The data is made on the workers and held there (persisted) before timing,
as a dataset already on a cluster would be; the parameters are scattered once.

- transfuse: transfuse.dask on 2 worker processes;
- transfuse-dask-1-worker: the same on 1 worker process;
- transfuse-jit-1-process: `jit(vmap(grad_norm))` on the same blocks in this process;
- dask-numpy: dask.array.map_blocks of NumPy's hand-written backward pass (per-example
  outer products by einsum, as in the per-sample-grads suite), then the norms, on the
  2-worker cluster.

The reference is the closed form ||x d^T||^2 = ||x||^2 ||d||^2 per layer, in float64.
`python -m transfuse.bench.suites.suite_dask [--examples N] [--chunk C] [--quick]` prints
throughput, scaling from 1 to 2 workers, per-core efficiency against one process, each
worker's first-call cost and the bytes moved (docs/dask.md has measured figures).
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from transfuse.bench.core import Case, Runner, import_optional

from ._mlp import cross_entropy, init_mlp
from .suite_per_sample_grads import numpy_per_sample_grads

NAME = "dask"


@dataclass(frozen=True)
class Workload:
    sizes: tuple[int, ...]
    examples: int
    chunk: int  # block size: no layer width (equal sizes would share a size parameter)
    processes: bool  # worker processes (full) or threads of this process (quick)


FULL = Workload((784, 512, 512, 10), 200_000, 250, True)
QUICK = Workload((24, 16, 16, 10), 120, 30, False)


def grad_norm(params: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The norm of one example's gradient of the loss, over every parameter."""
    import transfuse as tx

    grads = tx.grad(cross_entropy)(params, x, y)
    total = np.sum(grads[0] * grads[0])
    for g in grads[1:]:
        total = total + np.sum(g * g)
    return np.sqrt(total)


def numpy_grad_norms(x: np.ndarray, y: np.ndarray, params: tuple) -> np.ndarray:
    """The same by NumPy's hand-written backward pass on a block (map_blocks order)."""
    grads = numpy_per_sample_grads(params, x, y)
    total = sum(np.sum(np.square(g.reshape(len(x), -1)), axis=1) for g in grads)
    return np.sqrt(total).astype(x.dtype)


def closed_form_norms(params: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The reference: per layer ||a||^2 ||d||^2 (weights) + ||d||^2 (biases)."""
    out = np.empty(len(x))
    p = [np.asarray(a, np.float64) for a in params]
    for s in range(0, len(x), 4096):
        a0 = x[s:s + 4096].astype(np.float64)
        h1 = np.tanh(a0 @ p[0] + p[1])
        h2 = np.tanh(h1 @ p[2] + p[3])
        z = h2 @ p[4] + p[5]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        yb = y[s:s + 4096].astype(np.float64)
        d3 = e / e.sum(axis=1, keepdims=True) * yb.sum(axis=1, keepdims=True) - yb
        d2 = (d3 @ p[4].T) * (1 - h2 * h2)
        d1 = (d2 @ p[2].T) * (1 - h1 * h1)
        out[s:s + 4096] = sum((np.sum(a * a, axis=1) + 1) * np.sum(d * d, axis=1)
                              for a, d in ((a0, d1), (h1, d2), (h2, d3)))
    return np.sqrt(out).astype(x.dtype)  # computed in float64, compared in x's dtype


# ---------------------------------------------------------------------------------------
# Data, made block by block (on the workers for the dask systems)


def data_block(i: int, chunk: int, sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Block i of the inputs and one-hot labels (seeded by i: the same wherever made)."""
    rng = np.random.default_rng((19, i))
    x = rng.standard_normal((chunk, sizes[0]), dtype=np.float32)
    y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], chunk)]
    return x, y


def _block_sizes(work: Workload) -> list[int]:
    full, rest = divmod(work.examples, work.chunk)
    return [work.chunk] * full + ([rest] if rest else [])


def make_inputs(work: Workload) -> tuple:
    """(params, x, y) in this process's memory (for the reference and the jit system)."""
    params = init_mlp(np.random.default_rng(3), work.sizes)
    blocks = [data_block(i, n, work.sizes) for i, n in enumerate(_block_sizes(work))]
    return params, np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


# ---------------------------------------------------------------------------------------
# Clusters


_CLUSTERS: dict[tuple[int, bool], Any] = {}


def cluster_client(workers: int, processes: bool) -> Any:
    """A Client of a LocalCluster with `workers` one-thread workers (made once, closed at
    exit); not the default client: systems make it current while they build graphs."""
    key = (workers, processes)
    if key not in _CLUSTERS:
        distributed = import_optional("distributed")
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=processes, dashboard_address=None,
                                           silence_logs=logging.ERROR)
        client = distributed.Client(cluster, set_as_default=False)
        atexit.register(_close, client, cluster)
        _CLUSTERS[key] = client
    return _CLUSTERS[key]


def _close(client: Any, cluster: Any) -> None:
    _DATASETS.clear()
    client.close()
    cluster.close()


_DATASETS: dict[tuple[str, Workload], tuple[Any, Any]] = {}


def dataset_on(client: Any, work: Workload) -> tuple[Any, Any]:
    """x and y as dask arrays made on the workers and persisted there, once per client:
    the systems on one cluster share them (persisting the same keys again while a system
    holds them would only race with their release)."""
    if (client.id, work) not in _DATASETS:
        _DATASETS[client.id, work] = _persist_dataset(client, work)
    return _DATASETS[client.id, work]


def _persist_dataset(client: Any, work: Workload) -> tuple[Any, Any]:
    import dask
    import dask.array as da

    xs, ys = [], []
    for i, n in enumerate(_block_sizes(work)):
        block = dask.delayed(data_block, nout=2)(i, n, work.sizes)
        xs.append(da.from_delayed(block[0], (n, work.sizes[0]), np.float32))
        ys.append(da.from_delayed(block[1], (n, work.sizes[-1]), np.float32))
    from distributed import wait

    x, y = client.persist([da.concatenate(xs), da.concatenate(ys)])
    with client.as_current():
        wait([x, y])
    return x, y


def transfuse_dask_system(work: Workload, workers: int) -> Any:
    def factory(inputs: tuple) -> Runner:
        import transfuse.dask as txd

        client = cluster_client(workers, work.processes)
        x, y = dataset_on(client, work)
        mapped = txd.vmap(grad_norm, in_dims=(None, 0, 0))
        params = inputs[0]

        def call() -> np.ndarray:
            with client.as_current():
                return client.compute(mapped(params, x, y)).result()

        return Runner(call=call)

    return factory


def dask_numpy_system(work: Workload, workers: int) -> Any:
    def factory(inputs: tuple) -> Runner:
        import dask.array as da

        client = cluster_client(workers, work.processes)
        x, y = dataset_on(client, work)
        params = client.scatter(inputs[0], broadcast=True)

        def call() -> np.ndarray:  # fresh task names per call, as transfuse.dask's
            lazy = da.map_blocks(numpy_grad_norms, x, y, params, drop_axis=1,
                                 dtype=np.float32, meta=np.empty(0, np.float32),
                                 name=f"numpy-grad-norms-{uuid.uuid4().hex}")
            return client.compute(lazy).result()

        return Runner(call=call)

    return factory


def jit_system(work: Workload) -> Any:
    def factory(inputs: tuple) -> Runner:
        import transfuse as tx

        jitted = tx.jit(tx.vmap(grad_norm, in_dims=(None, 0, 0)))
        params, x, y = inputs
        starts = range(0, len(x), work.chunk)

        def call() -> np.ndarray:
            return np.concatenate([jitted(params, x[s:s + work.chunk], y[s:s + work.chunk])
                                   for s in starts])

        return Runner(call=call)

    return factory


def cases(quick: bool) -> list[Case]:
    """One case: every example's gradient norm, on 2 workers and the baselines."""
    work = QUICK if quick else FULL
    where = "worker processes" if work.processes else "in-process workers (--quick)"
    return [Case(
        NAME, "grad-norms",
        f"per-sample gradient norms, {'-'.join(map(str, work.sizes))} tanh MLP, "
        f"{work.examples} float32 examples in blocks of {work.chunk}, transfuse.dask on 2 "
        f"{where}",
        lambda: make_inputs(work), transform=lambda tx: closed_form_norms,
        transfuse_system=transfuse_dask_system(work, 2),
        reference_label="numpy-closed-form", rtol=2e-3, atol=1e-5,
        baselines={
            "transfuse-dask-1-worker": transfuse_dask_system(work, 1),
            "transfuse-jit-1-process": jit_system(work),
            "dask-numpy": dask_numpy_system(work, 2),
        })]


# ---------------------------------------------------------------------------------------
# The detailed figures: python -m transfuse.bench.suites.suite_dask


def _seconds(call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def _outgoing_bytes(client: Any) -> int:
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
               .values())


def measure_all(work: Workload, repeat: int) -> dict:
    """Throughput of every system, scaling, first-call cost per worker and bytes moved."""
    import transfuse.dask as txd

    inputs = make_inputs(work)
    reference = closed_form_norms(*inputs)
    report: dict[str, Any] = {"examples": work.examples, "chunk": work.chunk,
                              "sizes": work.sizes, "systems": {}}
    systems = [("transfuse-dask-2-workers", transfuse_dask_system(work, 2), 2),
               ("transfuse-dask-1-worker", transfuse_dask_system(work, 1), 1),
               ("transfuse-jit-1-process", jit_system(work), None),
               ("dask-numpy-2-workers", dask_numpy_system(work, 2), 2),
               ("dask-numpy-1-worker", dask_numpy_system(work, 1), 1)]
    for name, factory, workers in systems:
        client = cluster_client(workers, work.processes) if workers else None
        runner = factory(inputs)
        before = _outgoing_bytes(client) if client else 0
        first, out = _seconds(runner.call)
        between = _outgoing_bytes(client) if client else 0
        cpu_start = time.thread_time()  # this thread: the LocalClusters' schedulers and
        later = [_seconds(runner.call)[0] for _ in range(repeat)]  # nannies run beside it
        entry = {"first_call_s": first, "call_s": min(later),
                 "client_cpu_s_per_call": (time.thread_time() - cpu_start) / repeat,
                 "examples_per_s": work.examples / min(later),
                 "max_rel_error": float(np.max(np.abs(out - reference) / reference))}
        if client:
            entry["worker_outgoing_bytes_first_call"] = between - before
            entry["worker_outgoing_bytes_per_warm_call"] = \
                (_outgoing_bytes(client) - between) / repeat
            if name.startswith("transfuse"):
                entry["workers"] = _kernel_figures(client.run(txd.worker_stats))
        report["systems"][name] = entry
        print(name, json.dumps(entry), flush=True)
    s = report["systems"]
    two, one = s["transfuse-dask-2-workers"], s["transfuse-dask-1-worker"]
    report["scaling_1_to_2"] = two["examples_per_s"] / one["examples_per_s"]
    report["per_core_vs_one_process"] = two["examples_per_s"] / 2 / \
        s["transfuse-jit-1-process"]["examples_per_s"]
    report["params_bytes_scattered_per_worker"] = sum(p.nbytes for p in inputs[0])
    # CPU seconds per example, which the machine's load does not inflate: the workers'
    # kernel threads (warm blocks), and this thread for jit in one process.
    report["cpu_s_per_example"] = {
        name: float(np.mean([w["warm_cpu_s_per_example"] for w in s[name]["workers"].values()]))
        for name in ("transfuse-dask-2-workers", "transfuse-dask-1-worker")
        if s[name].get("workers")}
    report["cpu_s_per_example"]["transfuse-jit-1-process"] = \
        s["transfuse-jit-1-process"]["client_cpu_s_per_call"] / work.examples
    return report


def _kernel_figures(stats: dict) -> dict:
    """Per worker: the first block's wall and CPU seconds (trace + compile or load), then
    per warm block wall seconds and CPU seconds per example (the machine's load aside)."""
    out = {}
    for address, s in stats.items():
        for k in s["kernels"].values():
            if k["blocks"] < 2:
                continue
            warm = (k["seconds"] - k["first_block_s"]) / (k["blocks"] - 1)
            warm_cpu = (k["cpu_seconds"] - k["first_block_cpu_s"]) / \
                (k["examples"] - k["first_block_examples"])
            out[address] = {"first_block_s": k["first_block_s"],
                            "first_block_cpu_s": k["first_block_cpu_s"],
                            "warm_block_s": warm, "warm_cpu_s_per_example": warm_cpu,
                            "blocks": k["blocks"], "compiles": k["compiles"],
                            "disk_hits": k["disk_hits"]}
    return out


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="suite_dask", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=FULL.examples)
    parser.add_argument("--chunk", type=int, default=FULL.chunk)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    work = QUICK if args.quick else Workload(FULL.sizes, args.examples, args.chunk, True)
    report = measure_all(work, args.repeat)
    print(json.dumps({k: v for k, v in report.items() if k != "systems"}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
