"""Compiler workloads: what `transfuse.jit` reaches against NumPy, Numba, JAX and torch.

    python bench/compiler_workloads.py                 # every workload, table on stdout
    python bench/compiler_workloads.py --only chain softmax --json out.json
    python bench/compiler_workloads.py --quick         # small sizes (a smoke test)

Workloads (sizes as in docs/performance.md):
  chain      tanh(x)*sigmoid(x) + 0.5*x*x - exp(-x*x) + sin(x)*cos(x), 4M float32
  softmax    row softmax of 4096x1024 float32
  layernorm  row layernorm of 4096x1024 float32 (with scale and shift)
  psg        per-sample gradients of a 784-512-512-10 tanh MLP at batch 128
  dispatch   x + 1 on 8 float32 elements: per-call overhead
  compile    first call of the per-sample-gradient step: cold (empty disk cache, new
             process) and warm (disk cache filled, new process); the chain cold; and
             Numba's own floor (a trivial @njit function compiled in a new process). Each
             row gives wall time and the process's CPU time (steadier on a loaded
             machine), after imports

Each timing is the best of several repeats of a loop of calls (after a warm-up call);
results are checked against NumPy before timing. Baselines that are not installed are
skipped. The `transfuse bench` harness (transfuse/bench) runs the same workloads side by
side with its own protocol; this script is the compiler's quick check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import transfuse as tx  # noqa: E402
import transfuse.numpy as tnp  # noqa: E402


def best_time(fn: Callable[[], object], min_total: float = 0.5, repeats: int = 5) -> float:
    """Seconds per call: the best of `repeats` loops, each long enough to time."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(min_total / repeats / once))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


# ---------------------------------------------------------------------------------------
# Workloads


def chain(x):
    sigmoid = 1 / (1 + np.exp(-x))
    return np.tanh(x) * sigmoid + 0.5 * x * x - np.exp(-x * x) + np.sin(x) * np.cos(x)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layernorm(x, g, b):
    m = x.mean(-1, keepdims=True)
    xc = x - m
    v = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(v + 1e-5) * g + b


def mlp_loss(params, x, y):
    h = x
    for w, b in params[:-1]:
        h = np.tanh(h @ w + b)
    w, b = params[-1]
    logits = h @ w + b
    logp = logits - tnp.logsumexp(logits, axis=-1, keepdims=True)
    return -np.sum(logp * y)


def mlp_setup(batch: int, sizes=(784, 512, 512, 10)):
    rng = np.random.default_rng(0)
    params = [((rng.standard_normal((m, n)) / np.sqrt(m)).astype(np.float32),
               np.zeros(n, np.float32)) for m, n in zip(sizes[:-1], sizes[1:])]
    x = rng.standard_normal((batch, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    return params, x, y


def per_sample_grads():
    return tx.vmap(tx.grad(mlp_loss), in_dims=(None, 0, 0))


def _numba_chain():
    import numba

    half, one = np.float32(0.5), np.float32(1.0)

    @numba.njit(parallel=True)
    def loop(x):
        out = np.empty_like(x)
        for i in numba.prange(x.size):
            v = x[i]
            s = one / (one + np.exp(-v))
            out[i] = np.tanh(v) * s + half * v * v - np.exp(-v * v) + np.sin(v) * np.cos(v)
        return out
    return loop


def _numba_layernorm():
    import numba

    @numba.njit(parallel=True, fastmath=False)
    def loop(x, g, b):
        n, d = x.shape
        out = np.empty_like(x)
        for i in numba.prange(n):
            m = np.float32(0)
            for j in range(d):
                m += x[i, j]
            m /= d
            v = np.float32(0)
            for j in range(d):
                t = x[i, j] - m
                v += t * t
            r = np.float32(1) / np.sqrt(v / d + np.float32(1e-5))
            for j in range(d):
                out[i, j] = (x[i, j] - m) * r * g[j] + b[j]
        return out
    return loop


def _jax(name: str):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_platforms", "cpu")
    if name == "chain":
        return jax.jit(lambda x: jnp.tanh(x) * jax.nn.sigmoid(x) + 0.5 * x * x
                       - jnp.exp(-x * x) + jnp.sin(x) * jnp.cos(x))
    if name == "softmax":
        return jax.jit(lambda x: jax.nn.softmax(x, axis=-1))
    if name == "layernorm":
        def ln(x, g, b):
            m = x.mean(-1, keepdims=True)
            xc = x - m
            return xc / jnp.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5) * g + b
        return jax.jit(ln)
    if name == "dispatch":
        return jax.jit(lambda x: x + 1)
    if name == "psg":
        def loss(params, x, y):
            h = x
            for w, b in params[:-1]:
                h = jnp.tanh(h @ w + b)
            w, b = params[-1]
            logits = h @ w + b
            return -jnp.sum(jax.nn.log_softmax(logits) * y)
        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))
    return None


def run_workload(name: str, quick: bool) -> list[dict]:
    rows = []

    def record(system: str, fn: Callable, args: tuple, reference=None, rtol=1e-4):
        out = fn(*args)
        if reference is not None:
            for a, e in zip(tx.tree_leaves(out), tx.tree_leaves(reference)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol,
                                           atol=rtol)
        seconds = best_time(lambda: fn(*args))
        rows.append({"workload": name, "system": system, "seconds": seconds})

    if name == "chain":
        x = np.random.default_rng(0).uniform(-3, 3, 4096 if quick else 1 << 22).astype(
            np.float32)
        ref = chain(x)
        record("transfuse.jit", tx.jit(chain), (x,), ref)
        record("numpy", chain, (x,))
        record("numba (scalar libm, prange)", _numba_chain(), (x,), ref)
        if (jf := _jax(name)) is not None:
            record("jax.jit", lambda v: jf(v).block_until_ready(), (x,), ref)
    elif name in ("softmax", "layernorm"):
        rng = np.random.default_rng(0)
        rows_, cols = (64, 128) if quick else (4096, 1024)
        x = rng.standard_normal((rows_, cols)).astype(np.float32)
        args = (x,) if name == "softmax" else (x, rng.standard_normal(cols).astype(
            np.float32), rng.standard_normal(cols).astype(np.float32))
        fn = softmax if name == "softmax" else layernorm
        ref = fn(*args)
        record("transfuse.jit", tx.jit(fn), args, ref)
        record("numpy", fn, args)
        if name == "layernorm":
            record("numba (hand-written, prange)", _numba_layernorm(), args, ref)
        if (jf := _jax(name)) is not None:
            record("jax.jit", lambda *a: jf(*a).block_until_ready(), args, ref)
    elif name == "psg":
        params, x, y = mlp_setup(8 if quick else 128)
        f = per_sample_grads()
        ref = f(params, x, y)
        record("transfuse.jit", tx.jit(f), (params, x, y), ref, rtol=1e-3)
        record("transfuse (interpreter)", f, (params, x, y))
        if (jf := _jax(name)) is not None:
            import jax
            record("jax.jit", lambda *a: jax.block_until_ready(jf(*a)), (params, x, y), ref,
                   rtol=1e-3)
    elif name == "dispatch":
        x = np.arange(8, dtype=np.float32)
        record("transfuse.jit", tx.jit(lambda v: v + 1), (x,), x + 1)
        import numba
        record("numba.njit", numba.njit(lambda v: v + 1), (x,), x + 1)
        record("numpy", lambda v: v + 1, (x,))
        if (jf := _jax(name)) is not None:
            record("jax.jit", lambda v: jf(v).block_until_ready(), (x,), x + 1)
    elif name == "compile":
        rows += compile_latency(quick)
    return rows


COMPILE_SCRIPT = textwrap.dedent("""
    import sys, time
    start = time.perf_counter()
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {bench!r})
    import compiler_workloads as w
    import numba
    import numpy as np
    import transfuse as tx
    imported, cpu = time.perf_counter(), time.process_time()
    if {what!r} == "floor":  # Numba's own cost of a first compile in a process
        f = numba.njit(lambda v: v + 1)
        f(1.0)
        print(time.perf_counter() - imported, time.process_time() - cpu, 0, 0)
        raise SystemExit
    if {what!r} == "chain":
        args = (np.linspace(-3, 3, 4096 if {quick} else 1 << 22, dtype=np.float32),)
        f = tx.jit(w.chain)
    else:
        args = w.mlp_setup(8 if {quick} else 128)
        f = tx.jit(w.per_sample_grads())
    f(*args)
    done = time.perf_counter()
    info = f.cache_info()
    print(done - imported, time.process_time() - cpu, info.compiles, info.disk_hits)
""")

COMPILE_CASES = [  # (what, label, also from a warm disk cache)
    ("floor", "numba: trivial @njit, cold (floor)", False),
    ("psg", "transfuse.jit", True),
    ("chain", "transfuse.jit chain", False),
]


def compile_latency(quick: bool) -> list[dict]:
    """First calls in new processes: Numba's floor, then jit(vmap(grad(loss))) cold and
    from the disk cache, and the elementwise chain cold (each with an empty cache)."""
    rows = []
    for what, label, warm in COMPILE_CASES:
        with tempfile.TemporaryDirectory() as cache:
            script = COMPILE_SCRIPT.format(repo=str(REPO), bench=str(Path(__file__).parent),
                                           what=what, quick=quick)
            env = dict(os.environ, TRANSFUSE_CACHE_DIR=cache)
            env.pop("TRANSFUSE_DISABLE_CACHE", None)
            for state in ("cold", "warm") if warm else ("cold",):
                out = subprocess.run([sys.executable, "-c", script], env=env, text=True,
                                     capture_output=True, check=True).stdout.split()
                first_call, cpu, compiles, hits = float(out[0]), float(out[1]), *out[2:]
                how = "cold (empty disk cache)" if state == "cold" else "warm disk cache"
                name = label if what == "floor" else f"{label} {how}"
                rows.append({"workload": "compile", "system": name, "seconds": first_call,
                             "cpu_seconds": cpu, "compiles": int(compiles),
                             "disk_hits": int(hits)})
    return rows


WORKLOADS = ["chain", "softmax", "layernorm", "psg", "dispatch", "compile"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=WORKLOADS, default=WORKLOADS)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    import numba
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numba threads {numba.config.NUMBA_NUM_THREADS}, numpy {np.__version__}, "
          f"numba {numba.__version__}")
    rows = []
    for name in args.only:
        for row in run_workload(name, args.quick):
            rows.append(row)
            unit, scale = ("us", 1e6) if row["seconds"] < 1e-3 else ("ms", 1e3)
            if row["seconds"] > 1:
                unit, scale = "s", 1.0
            extra = ""
            if "compiles" in row:
                extra = (f"  (CPU {row['cpu_seconds']:.2f} s, compiles={row['compiles']}, "
                         f"disk hits={row['disk_hits']})")
            print(f"{row['workload']:<10} {row['system']:<44} "
                  f"{row['seconds'] * scale:10.3f} {unit}{extra}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
