"""A jitted function's first call in a new process with a warm disk cache: object code vs Numba.

    python bench/warm_first_call.py WORKDIR [REPEATS]

For two programs — the per-sample-gradient step of the 784-512-512-10 tanh MLP at batch 128
(`jit(vmap(grad(loss), in_dims=(None, 0, 0)))`, float32) and a tiny elementwise function
(`tanh(x) * 2 + x * x`, 1000 float32) — fills a disk cache in WORKDIR (one process,
TRANSFUSE_NATIVE_CACHE=eager, waiting for the object-code build), then runs REPEATS (default
5) new processes with the object code (TRANSFUSE_NATIVE_CACHE=lazy, the default) and with
Numba's cache (=0), alternating, and prints the medians (ms, CPU and wall) of
`import transfuse`, the first call, its trace + lower + load (`load`: all of the first call
but the kernel's run and the call's own few microseconds) and the second call (the kernel's
time, noisy for the MLP: its 340 MB of outputs are fresh pages each call), and whether
`numba` was imported. Issue #15's goal: the first call within 50 ms of the kernel's time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = '''
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import numpy as np
import transfuse as tx
t1, c1 = time.perf_counter(), time.process_time()
if sys.argv[1] == "tiny":
    args = (np.random.default_rng(0).uniform(-3, 3, 1000).astype(np.float32),)
    f = tx.jit(lambda x: np.tanh(x) * 2.0 + x * x)
else:
    from transfuse.bench.suites import suite_per_sample_grads as s
    args = s.make_inputs(False)
    f = tx.jit(s.transform(tx))
state, spent = f.__transfuse_jit__, []
compile_signature = state._compile


def timed(*a, **k):  # trace, lower and load: the first call's work besides the kernel's
    c = time.process_time(), time.perf_counter()
    try:
        return compile_signature(*a, **k)
    finally:
        spent.append((time.process_time() - c[0], time.perf_counter() - c[1]))


state._compile = timed
t2, c2 = time.perf_counter(), time.process_time()
f(*args)
t3, c3 = time.perf_counter(), time.process_time()
f(*args)
t4, c4 = time.perf_counter(), time.process_time()
numba = "numba" in sys.modules
from transfuse.runtime import cache, native_cache
native_cache.wait_builds()
print(json.dumps({"import_cpu": c1 - c0, "import_wall": t1 - t0, "first_cpu": c3 - c2,
                  "first_wall": t3 - t2, "load_cpu": spent[0][0], "load_wall": spent[0][1],
                  "second_cpu": c4 - c3, "second_wall": t4 - t3,
                  "numba": numba, "compiles": cache.compile_count()}))
'''


def _run(program: str, cache: Path, mode: str) -> dict:
    env = dict(os.environ, TRANSFUSE_CACHE_DIR=str(cache), TRANSFUSE_NATIVE_CACHE=mode)
    out = subprocess.run([sys.executable, "-c", WORKER, program], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(workdir: Path, repeats: int) -> None:
    for program in ("tiny", "mlp"):
        cache = workdir / program
        filled = _run(program, cache, "eager")
        print(f"{program}: filled the cache ({filled['compiles']} compile)", flush=True)
        runs: dict[str, list[dict]] = {"lazy": [], "0": []}
        for _ in range(repeats):
            for mode in runs:
                runs[mode].append(_run(program, cache, mode))
        for mode, samples in runs.items():
            medians = {k: round(1000 * statistics.median(s[k] for s in samples), 1)
                       for k in samples[0] if k not in ("numba", "compiles")}
            print(f"{program} TRANSFUSE_NATIVE_CACHE={mode}: {medians} ms; numba imported: "
                  f"{sorted({s['numba'] for s in samples})}; compiles: "
                  f"{sorted({s['compiles'] for s in samples})}", flush=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    print(f"({time.perf_counter() - start:.0f} s)")
