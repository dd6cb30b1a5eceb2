"""Cold builds with and without the region functions of earlier programs in the cache.

    python bench/region_sharing.py [REPEATS]

The 784-512-512-10 tanh MLP's programs at batch 128, float32 — `jit` of the
cross-entropy loss, of its `grad`, its `grad_and_value` and the per-sample
`vmap(grad)` — and `jit(grad)` of the RK4 pendulum at 20, 50 and 10 steps: each kernel's
generated source is taken once, then built by the direct back end (translate, LLVM, link;
runtime/direct.py `build`) in one process, REPEATS (default 7) rounds, alternating two
ways: with an empty disk cache for every build (`cold`), and with one cache for the
family, built in the order listed (`after`: a program links the region functions that an
earlier one compiled). Prints, per program, the median build time each way and the
regions compiled and linked (runtime/cache.py `stats()`). docs/performance.md,
"Session 14".
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from transfuse.bench.suites import _mlp, _rk4
from transfuse.runtime import cache, direct

import transfuse as tx


def sources() -> dict[str, str]:
    """The generated source of each program, in build order."""
    rng = np.random.default_rng(0)
    params = _mlp.init_mlp(rng, (784, 512, 512, 10))
    x = rng.standard_normal((128, 784)).astype(np.float32)
    y = _mlp.one_hot_labels(rng, 128, 10)
    loss = _mlp.cross_entropy
    out = {
        "loss": tx.jit(loss).lower(params, x, y).source,
        "grad": tx.jit(tx.grad(loss)).lower(params, x, y).source,
        "grad_and_value": tx.jit(tx.grad_and_value(loss)).lower(params, x, y).source,
        "per-sample grad": tx.jit(tx.vmap(tx.grad(loss), in_dims=(None, 0, 0))).lower(
            params, x, y).source,
    }
    for steps in (20, 50, 10):
        out[f"rk4-{steps}"] = tx.jit(_rk4.transform(steps)(tx)).lower(*_rk4.inputs()).source
    return out


def build_ms(source: str, cache_dir: str) -> tuple[float, int, int]:
    """(ms, regions compiled, regions linked) of one build into a fresh folder."""
    os.environ["TRANSFUSE_CACHE_DIR"] = cache_dir
    before = cache.stats()
    start = time.perf_counter()
    built = direct.build(source, Path(tempfile.mkdtemp(prefix="transfuse-bench-")), "bench")
    spent = (time.perf_counter() - start) * 1e3
    if isinstance(built, str):
        raise SystemExit(f"the direct back end did not take it: {built}")
    after = cache.stats()
    return (spent, after.regions_compiled - before.regions_compiled,
            after.regions_reused - before.regions_reused)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    programs = sources()
    times: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for _ in range(repeats):
        for way in ("cold", "after"):
            family = {"mlp": tempfile.mkdtemp(), "rk4": tempfile.mkdtemp()}
            for name, source in programs.items():
                folder = tempfile.mkdtemp() if way == "cold" else \
                    family["rk4" if name.startswith("rk4") else "mlp"]
                ms, compiled, linked = build_ms(source, folder)
                times.setdefault((name, way), []).append(ms)
                counts[(name, way)] = (compiled, linked)
    print(f"{'program':<16} {'cold ms':>9} {'after ms':>9}  regions compiled/linked after")
    for name in programs:
        cold = statistics.median(times[(name, "cold")])
        after = statistics.median(times[(name, "after")])
        compiled, linked = counts[(name, "after")]
        print(f"{name:<16} {cold:9.1f} {after:9.1f}  {compiled}/{linked}")


if __name__ == "__main__":
    main()
