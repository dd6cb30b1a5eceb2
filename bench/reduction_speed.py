"""Speed of compiled reductions (issue #12's accurate sums) against NumPy.

Best of 7 repeats of 5 calls each, after a warm-up call, for each case below: transfuse.jit
and NumPy side by side in one process (the machine's load shows in the NumPy column). To
compare with an older revision, run it from a copy of that revision's package:

    python bench/reduction_speed.py
    mkdir /tmp/old && git archive REV ir compiler runtime transfuse | tar -x -C /tmp/old
    mkdir -p /tmp/oldpkg && cp -r /tmp/old/transfuse /tmp/oldpkg/ && \\
      for d in ir compiler runtime; do ln -sfn /tmp/old/$d /tmp/oldpkg/transfuse/$d; done
    (cd /tmp && PYTHONPATH=/tmp/oldpkg python /path/to/bench/reduction_speed.py)
"""

from __future__ import annotations

import timeit

import numpy as np

import transfuse as tx


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cases() -> list:
    rng = np.random.default_rng(0)
    x7 = rng.random(10**7).astype(np.float32)
    return [
        ("np.sum, 10**7 float32", np.sum, (x7,)),
        ("np.sum, 10**7 float64", np.sum, (x7.astype(np.float64),)),
        ("softmax rows, (1000, 1000) float32", softmax,
         (rng.standard_normal((1000, 1000)).astype(np.float32),)),
        ("sum(x*x, axis=1), (8, 10**5) float32", lambda x: np.sum(x * x, axis=1),
         (rng.random((8, 10**5)).astype(np.float32),)),
        ("sum(axis=0), (10**6, 4) float32", lambda x: np.sum(x, axis=0),
         (rng.random((10**6, 4)).astype(np.float32),)),
        ("cumsum, 10**7 float32", np.cumsum, (x7,)),
        ("x @ y, 10**7 float32", lambda x, y: x @ y, (x7, x7)),
    ]


def best_ms(fn, args) -> float:
    fn(*args)
    return min(timeit.repeat(lambda: fn(*args), number=5, repeat=7)) / 5 * 1e3


def main() -> None:
    for name, fn, args in cases():
        print(f"{name:40s} transfuse {best_ms(tx.jit(fn), args):8.3f} ms   "
              f"NumPy {best_ms(fn, args):8.3f} ms")


if __name__ == "__main__":
    main()
