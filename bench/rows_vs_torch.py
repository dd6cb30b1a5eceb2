"""softmax/rows and layernorm/rows: transfuse.jit against torch eager, by CPU time, one thread.

Both run in one process, interleaved, for --rounds rounds after two warm-up calls; with
one thread each (NUMBA_NUM_THREADS=1, torch.set_num_threads(1)) the process's CPU time
measures the work rather than the wait on a loaded machine. Prints the best and the median
per call. To compare with an older revision, run it from a copy of that revision's package
(as bench/reduction_speed.py says).

    NUMBA_NUM_THREADS=1 python bench/rows_vs_torch.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from transfuse.bench.suites import suite_layernorm, suite_softmax

import transfuse as tx


def cases(torch) -> dict:
    """name -> (function, arguments), on the suites' (4096, 1024) float32 inputs."""
    (x,) = suite_softmax.cases(False)[0].setup()
    ln_args = suite_layernorm.cases(False)[0].setup()
    x_t, ln_t = torch.from_numpy(x), [torch.from_numpy(a) for a in ln_args]

    def torch_layernorm(x, gamma, beta):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), gamma, beta,
                                              eps=suite_layernorm.EPS)

    return {
        "softmax/rows transfuse": (tx.jit(suite_softmax.softmax), (x,)),
        "softmax/rows torch": (lambda x: torch.softmax(x, dim=-1), (x_t,)),
        "layernorm/rows transfuse": (tx.jit(suite_layernorm.layernorm), ln_args),
        "layernorm/rows torch": (torch_layernorm, ln_t),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    runs = cases(torch)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn, fn_args in runs.values():
        fn(*fn_args)
        fn(*fn_args)
    for _ in range(args.rounds):
        for name, (fn, fn_args) in runs.items():
            start = time.process_time()
            fn(*fn_args)
            times[name].append(time.process_time() - start)
    for name, samples in times.items():
        print(f"{name:26s} best {1e3 * min(samples):6.2f} ms   "
              f"median {1e3 * float(np.median(samples)):6.2f} ms (CPU)")


if __name__ == "__main__":
    main()
