"""One bench case's transfuse.jit against the suite's hand-written NumPy function, by CPU time.

Both are timed in the same process, interleaved, best of --repeat; with --clock cpu the
clock is the process's CPU time, which on a loaded machine measures the work rather than
the wait (set NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 so that both run on one thread).

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python bench/cpu_time_vs_numpy.py ensembling vmap-models --clock cpu
"""

from __future__ import annotations

import argparse
import importlib
import time

import transfuse as tx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", help="bench/suite_<suite>.py, e.g. ensembling, ntk")
    parser.add_argument("case", nargs="?", help="one case of the suite (default: all)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    suite = importlib.import_module(f"transfuse.bench.suites.suite_{args.suite}")
    numpy_fn = next(getattr(suite, n) for n in dir(suite) if n.startswith("numpy_"))
    for case in suite.cases(False):
        if args.case and case.name != args.case:
            continue
        inputs = case.setup()
        jitted = tx.jit(case.transform(tx))
        start = clock()
        jitted(*inputs)
        first = clock() - start
        best = {"transfuse": float("inf"), "numpy": float("inf")}
        for _ in range(args.repeat):
            for name, fn in (("transfuse", jitted), ("numpy", numpy_fn)):
                start = clock()
                fn(*inputs)
                best[name] = min(best[name], clock() - start)
        print(f"{case.full_name}: first call {first:.2f} s, transfuse "
              f"{best['transfuse'] * 1e3:.1f} ms, numpy {best['numpy'] * 1e3:.1f} ms, "
              f"ratio {best['transfuse'] / best['numpy']:.2f} ({args.clock} time)")


if __name__ == "__main__":
    main()
