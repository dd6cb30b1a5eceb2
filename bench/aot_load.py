"""`transfuse.load` + first call of an aot build in new processes: object code vs Numba's cache.

    python bench/aot_load.py WORKDIR [REPEATS]

Builds `jit(grad(mlp_loss))` of the 784-512-512-10 tanh MLP at batch 128 (float32; the
parameters flattened into arguments) twice into WORKDIR, with object code and with
`--no-native` (Numba's cache only), then runs REPEATS (default 5) fresh processes of each,
alternating, and prints the medians (ms) of: `import transfuse`, `transfuse.load`, load +
first call, the second call (the kernel's own time), and first minus second call.
Issue #15's goal: load + first call within 30 ms of the kernel's time, Numba not imported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIGNATURE = ("f32[784,512],f32[512],f32[512,512],f32[512],f32[512,10],f32[10],"
             "f32[128,784],f32[128,10]")


def mlp_grad(w1, b1, w2, b2, w3, b3, x, y):
    """grad of bench's mlp_loss with the parameters as separate arrays (aot signatures
    are flat)."""
    from transfuse.bench.suites.compiler_workloads import mlp_loss

    import transfuse as tx

    return tx.grad(mlp_loss)([(w1, b1), (w2, b2), (w3, b3)], x, y)


def inputs() -> list:
    from transfuse.bench.suites.compiler_workloads import mlp_setup

    params, x, y = mlp_setup(128)
    return [a for layer in params for a in layer] + [x, y]


def one_process(build: str) -> dict:
    """Run in a new process: the timings of one load."""
    w0, c0 = time.perf_counter(), time.process_time()
    import transfuse as tx

    w1, c1 = time.perf_counter(), time.process_time()
    args = inputs()
    w2, c2 = time.perf_counter(), time.process_time()
    f = tx.load(build)
    w3, c3 = time.perf_counter(), time.process_time()
    f(*args)
    w4, c4 = time.perf_counter(), time.process_time()
    f(*args)
    w5, c5 = time.perf_counter(), time.process_time()
    return {"import": (w1 - w0, c1 - c0), "load": (w3 - w2, c3 - c2),
            "load + first call": (w4 - w2, c4 - c2), "second call": (w5 - w4, c5 - c4),
            "first - second": (w4 - w3 - (w5 - w4), c4 - c3 - (c5 - c4)),
            "numba imported": "numba" in sys.modules}


def main(workdir: str, repeats: int = 5) -> None:
    from transfuse.aot import compile_to, parse_signature

    builds = {"object code": Path(workdir) / "native", "Numba's cache": Path(workdir) / "numba"}
    for label, path in builds.items():
        if not path.exists():
            compile_to(mlp_grad, [parse_signature(SIGNATURE)], path,
                       native=label == "object code")
    runs: dict[str, list[dict]] = {label: [] for label in builds}
    for _ in range(repeats):
        for label, path in builds.items():
            out = subprocess.run([sys.executable, __file__, "--one", str(path)],
                                 capture_output=True, text=True, check=True).stdout
            runs[label].append(json.loads(out.strip().splitlines()[-1]))
    for label, rows in runs.items():
        print(f"{label} (numba imported: {sorted({r['numba imported'] for r in rows})})")
        for key in rows[0]:
            if key != "numba imported":
                wall = statistics.median(r[key][0] for r in rows) * 1e3
                cpu = statistics.median(r[key][1] for r in rows) * 1e3
                print(f"  {key:18s} wall {wall:8.1f} ms  CPU {cpu:8.1f} ms")


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        print(json.dumps(one_process(sys.argv[2])))
    else:
        main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5)
