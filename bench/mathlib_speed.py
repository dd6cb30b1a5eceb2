"""Speed of compiler/mathlib.py's vectorisable functions against libm calls and NumPy.

For each function: ms per call over N float32 (or float64) elements of
  mathlib  an @njit loop calling tf_<name>_<dtype>          (vectorised by LLVM)
  libm     the same loop calling math.<name> / np.<name>    (Numba's scalar libm calls)
  numpy    the NumPy / scipy.special ufunc
then the fused chain tanh(x)*sigmoid(x) + 0.5*x*x - exp(-x*x) + sin(x)*cos(x) in one loop,
plain and with parallel=True + prange. Medians of --repeat runs, after a warm-up call.
With --ulp, instead the accuracy survey behind docs/mathlib.md: max ulp distance from NumPy
and from a correctly rounded reference, over every --stride-th float32 bit pattern and over
random float64 inputs.

    python bench/mathlib_speed.py [--n 4000000] [--repeat 7] [--dtype float32]
    python bench/mathlib_speed.py --ulp [--stride 8]
    python bench/mathlib_speed.py --peers [--rounds 5]   # the chain under transfuse.jit
                                                         # against torch.compile, jax.jit
    git show REV:compiler/mathlib.py > /tmp/mathlib_before.py
    python bench/mathlib_speed.py --baseline /tmp/mathlib_before.py --only sin cos
    python bench/mathlib_speed.py --trig-fast-path [--rounds 9]
With --peers, the chain as users write it (NumPy code under `transfuse.jit`) against
torch.compile, jax.jit (where installed) and NumPy in one process: each system's best
wall-clock time over --rounds interleaved rounds, and its ratio to torch.compile.
With --baseline, another version of mathlib.py (a file) against this one, interleaved in
one process: each --only function's loop and the chain loop, best CPU time of --rounds.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import time
from collections.abc import Callable

import mpmath
import numba
import numpy as np
import scipy.special
from numba import njit, prange
from transfuse.compiler.mathlib import MATH_FUNCTIONS, SMALL_TRIG

LIBM = {  # what a naive Numba loop would call
    "exp": math.exp, "expm1": math.expm1, "log": math.log, "log1p": math.log1p,
    "tanh": math.tanh, "sin": math.sin, "cos": math.cos, "tan": math.tan, "erf": math.erf,
    "sinh": math.sinh, "cosh": math.cosh, "arctan": math.atan,
}
NUMPY = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
    "logistic": scipy.special.expit, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "erf": scipy.special.erf, "sinh": np.sinh, "cosh": np.cosh, "arctan": np.arctan,
}
POSITIVE = ("log", "log1p")  # measured on (0, 10]; the others on [-5, 5]
MATH_LIMIT = {"float32": -88.72283935546875, "float64": -709.7827128933841}  # expit flush


def loop_over(fn: Callable) -> Callable:
    """An @njit loop out[i] = fn(x[i])."""
    @njit
    def loop(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])
    return loop


def binary_loop(fn: Callable) -> Callable:
    """An @njit loop out[i] = fn(x[i], y[i])."""
    @njit
    def loop(x, y, out):
        for i in range(x.size):
            out[i] = fn(x[i], y[i])
    return loop


@njit
def _libm_pow(x, y):
    """x ** y, which Numba lowers to a libm pow call."""
    return x**y


@njit
def _libm_logistic(x):
    """1 / (1 + exp(-x)) as a naive loop would write it."""
    return 1 / (1 + math.exp(-x))


CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}


def median_ms(run: Callable, repeat: int, clock: Callable = time.perf_counter) -> float:
    """Median time of run() in ms on `clock`, after one warm-up call (compilation)."""
    run()
    times = []
    for _ in range(repeat):
        start = clock()
        run()
        times.append(clock() - start)
    return 1e3 * float(np.median(times))


def function_rows(n: int, repeat: int, dtype: str, clock: Callable,
                  only: tuple[str, ...]) -> list[tuple[str, float, float, float]]:
    """(name, mathlib ms, libm ms, numpy ms) per function named in `only`."""
    rng = np.random.default_rng(0)
    rows = []
    for name, ufunc in NUMPY.items():
        if name not in only:
            continue
        low = 1e-3 if name in POSITIVE else -5.0
        x = rng.uniform(low, 5.0, n).astype(dtype)
        out = np.empty_like(x)
        ours = loop_over(MATH_FUNCTIONS[(name, dtype)])
        libm = loop_over(LIBM.get(name, _libm_logistic))
        rows.append((name, median_ms(lambda f=ours, x=x, out=out: f(x, out), repeat, clock),
                     median_ms(lambda f=libm, x=x, out=out: f(x, out), repeat, clock),
                     median_ms(lambda f=ufunc, x=x: f(x), repeat, clock)))
    if "pow" not in only:
        return rows
    x, y = rng.uniform(1e-3, 5.0, n).astype(dtype), rng.uniform(-5.0, 5.0, n).astype(dtype)
    out = np.empty_like(x)
    ours, libm = binary_loop(MATH_FUNCTIONS[("pow", dtype)]), binary_loop(_libm_pow)
    rows.append(("pow", median_ms(lambda: ours(x, y, out), repeat, clock),
                 median_ms(lambda: libm(x, y, out), repeat, clock),
                 median_ms(lambda: np.power(x, y), repeat, clock)))
    return rows


def chain_kernels(dtype: str) -> dict[str, Callable]:
    """The chain as one fused loop: mathlib (serial, prange), libm (serial), and NumPy."""
    f = {k: MATH_FUNCTIONS[(k, dtype)] for k in ("tanh", "logistic", "exp", "sin", "cos")}
    tanh, logistic, exp, sin, cos = (f[k] for k in ("tanh", "logistic", "exp", "sin", "cos"))
    half = np.dtype(dtype).type(0.5)

    def body(x, out, i):
        v = x[i]
        out[i] = tanh(v) * logistic(v) + half * v * v - exp(-v * v) + sin(v) * cos(v)

    def libm_body(x, out, i):
        v = x[i]
        out[i] = (np.tanh(v) / (1 + np.exp(-v)) + half * v * v - np.exp(-v * v)
                  + np.sin(v) * np.cos(v))

    def serial(fn):
        step = njit(inline="always")(fn)

        @njit
        def run(x, out):
            for i in range(x.size):
                step(x, out, i)
        return run

    step = njit(inline="always")(body)

    @njit(parallel=True)
    def parallel(x, out):
        for i in prange(x.size):
            step(x, out, i)

    def numpy_chain(x, out):
        out[...] = (np.tanh(x) * scipy.special.expit(x) + half * x * x - np.exp(-x * x)
                    + np.sin(x) * np.cos(x))

    return {"mathlib loop": serial(body), "mathlib loop, trig fast path": fast_path_loop(dtype),
            f"mathlib prange ({numba.get_num_threads()} threads)": parallel,
            "libm loop": serial(libm_body), "numpy": numpy_chain}


def fast_path_loop(dtype: str) -> Callable:
    """The chain as transfuse lowers it (compiler/trig_fast_path.py): blocks of 1024 with
    the table-free sin and cos, a block redone with the exact ones if an argument is large."""
    f = {k: MATH_FUNCTIONS[(k, dtype)] for k in ("tanh", "logistic", "exp", "sin", "cos")}
    tanh, logistic, exp, sin, cos = (f[k] for k in ("tanh", "logistic", "exp", "sin", "cos"))
    fast_sin, fast_cos, large = (SMALL_TRIG[(k, dtype)] for k in ("sin", "cos", "trig_large"))
    half = np.dtype(dtype).type(0.5)

    @njit(error_model="numpy")
    def run(x, out):
        for block in range((x.size + 1023) // 1024):
            start = block * 1024
            redo = False
            for i in range(start, min(start + 1024, x.size)):
                v = x[i]
                redo |= large(v)
                out[i] = (tanh(v) * logistic(v) + half * v * v - exp(-v * v)
                          + fast_sin(v) * fast_cos(v))
            if redo:
                for i in range(start, min(start + 1024, x.size)):
                    v = x[i]
                    out[i] = tanh(v) * logistic(v) + half * v * v - exp(-v * v) + sin(v) * cos(v)
    return run


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of representable floats between a and b (finite, same dtype)."""
    bits = np.uint32 if a.dtype == np.float32 else np.uint64
    sign = bits(1) << bits(8 * a.itemsize - 1)

    def key(v):  # monotone map of floats to unsigned integers (-0 and +0 coincide)
        u = v.view(bits)
        return np.where(u & sign, sign - (u & ~sign), sign + u)
    ka, kb = key(a), key(b)
    return np.maximum(ka, kb) - np.minimum(ka, kb)


def compare(got: np.ndarray, want: np.ndarray) -> tuple[int, int]:
    """(max ulp distance where both are finite, count of NaN/inf/zero disagreements)."""
    classes = ((np.isnan(got) != np.isnan(want)) | (np.isinf(got) != np.isinf(want))
               | ((got == 0) != (want == 0)) | ((got == 0) & (np.signbit(got) != np.signbit(want))))
    both = np.isfinite(got) & np.isfinite(want)
    worst = int(ulp_distance(got[both], want[both]).max(initial=0))
    return worst, int((classes & ~(np.isnan(got) & np.isnan(want))).sum())


def exact_value(fn: Callable, v: float) -> float:
    """fn(v) in mpmath, rounded to float64 (NaN where it is complex or v is not finite)."""
    if not np.isfinite(v):
        return math.nan
    y = fn(mpmath.mpf(float(v)))
    return float(y) if isinstance(y, mpmath.mpf) else math.nan


def flush_like_scipy(name: str, x: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """The exact logistic with scipy's zero where exp(-x) overflows (a documented choice)."""
    if name != "logistic":
        return exact
    return np.where(x <= MATH_LIMIT[x.dtype.name], 0.0, exact).astype(x.dtype)


def ulp_survey(stride: int) -> None:
    """Print max ulp distance from NumPy and from a correctly rounded reference."""
    mp_refs = {"exp": mpmath.exp, "expm1": mpmath.expm1, "log": mpmath.log,
               "log1p": mpmath.log1p, "tanh": mpmath.tanh, "sin": mpmath.sin,
               "cos": mpmath.cos, "tan": mpmath.tan, "erf": mpmath.erf, "sinh": mpmath.sinh,
               "cosh": mpmath.cosh, "arctan": mpmath.atan,
               "logistic": lambda v: 1 / (1 + mpmath.exp(-v))}
    print(f"{'function':10s} {'dtype':8s} {'vs numpy':>9s} {'vs exact':>9s} {'class diff':>10s}")
    for name, ufunc in NUMPY.items():
        ours = loop_over(MATH_FUNCTIONS[(name, "float32")])
        worst_np = worst_exact = classes = 0
        for start in range(0, 2**32, 2**28):  # float32: every stride-th bit pattern
            x = np.arange(start, start + 2**28, stride, dtype=np.uint64).astype(np.uint32)
            x = x.view(np.float32)
            got = np.empty_like(x)
            ours(x, got)
            with np.errstate(all="ignore"):
                w_np, c_np = compare(got, ufunc(x).astype(np.float32))
                exact = ufunc(x.astype(np.float64)).astype(np.float32)
            w_ex, _ = compare(got, flush_like_scipy(name, x, exact))
            worst_np, worst_exact, classes = max(worst_np, w_np), max(worst_exact, w_ex), \
                classes + c_np
        print(f"{name:10s} {'float32':8s} {worst_np:9d} {worst_exact:9d} {classes:10d}",
              flush=True)
        ours = loop_over(MATH_FUNCTIONS[(name, "float64")])
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.integers(0, 2**64 - 1, 2_000_000, dtype=np.uint64)
                            .view(np.float64)] + [rng.uniform(-s, s, 500_000)
                                                  for s in (1, 10, 100, 800)])
        got = np.empty_like(x)
        ours(x, got)
        with np.errstate(all="ignore"):
            worst_np, classes = compare(got, ufunc(x))
        sample = np.concatenate([x[:5000], x[-15000:]])
        with mpmath.workprec(300):
            exact = np.array([exact_value(mp_refs[name], v) for v in sample])
        got_sample = np.concatenate([got[:5000], got[-15000:]])
        worst_exact, _ = compare(got_sample, flush_like_scipy(name, sample, exact))
        print(f"{name:10s} {'float64':8s} {worst_np:9d} {worst_exact:9d} {classes:10d}",
              flush=True)


def chain_numpy(x):
    """The chain as NumPy code (what transfuse.jit traces; as in compiler_workloads.py)."""
    sigmoid = 1 / (1 + np.exp(-x))
    return np.tanh(x) * sigmoid + 0.5 * x * x - np.exp(-x * x) + np.sin(x) * np.cos(x)


def peer_chains(x: np.ndarray) -> dict[str, Callable[[], object]]:
    """name: a call running the chain on x, for each installed system."""
    import transfuse as tx
    runs = {"transfuse.jit": functools.partial(tx.jit(chain_numpy), x),
            "numpy": functools.partial(chain_numpy, x)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        def torch_chain(v):
            return (torch.tanh(v) * torch.sigmoid(v) + 0.5 * v * v - torch.exp(-v * v)
                    + torch.sin(v) * torch.cos(v))
        runs["torch.compile"] = functools.partial(torch.compile(torch_chain),
                                                  torch.from_numpy(x))
        runs["torch eager"] = functools.partial(torch_chain, torch.from_numpy(x))
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        jax = None
    if jax is not None:
        jax.config.update("jax_platforms", "cpu")
        jf = jax.jit(lambda v: jnp.tanh(v) * jax.nn.sigmoid(v) + 0.5 * v * v
                     - jnp.exp(-v * v) + jnp.sin(v) * jnp.cos(v))
        xj = jnp.asarray(x)
        runs["jax.jit"] = lambda: jf(xj).block_until_ready()
    return runs


def peers(n: int, rounds: int) -> None:
    """Print the chain's best wall time per system, interleaved, and ratios."""
    x = np.random.default_rng(0).uniform(-3, 3, n).astype(np.float32)
    runs = peer_chains(x)
    want = chain_numpy(x.astype(np.float64))
    for run in runs.values():  # compile, and check
        np.testing.assert_allclose(np.asarray(run()), want, rtol=1e-5, atol=1e-5)
    best = {name: math.inf for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], min_ms(run, 5))
    base = best.get("torch.compile", best["numpy"])
    print(f"chain, {n} float32, best of {rounds} x 5 calls, wall ms ({numba.get_num_threads()}"
          f" Numba threads; load average {os.getloadavg()[0]:.1f})")
    for name, ms in best.items():
        print(f"{name:16s} {ms:8.2f}   {ms / base:5.2f}x torch.compile")


def chain_loop(functions: dict, dtype: str) -> Callable:
    """The chain as one serial loop over the given mathlib table's functions."""
    tanh, logistic, exp, sin, cos = (functions[(k, dtype)] for k in
                                     ("tanh", "logistic", "exp", "sin", "cos"))
    half = np.dtype(dtype).type(0.5)

    @njit
    def run(x, out):
        for i in range(x.size):
            v = x[i]
            out[i] = tanh(v) * logistic(v) + half * v * v - exp(-v * v) + sin(v) * cos(v)
    return run


def against_baseline(path: str, n: int, rounds: int, dtype: str, only: tuple) -> None:
    """Print CPU ms of each function's loop and of the chain loop, baseline vs this one."""
    spec = importlib.util.spec_from_file_location("mathlib_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tables = {"baseline": module.MATH_FUNCTIONS, "current": MATH_FUNCTIONS}
    x = np.random.default_rng(1).uniform(-3, 3, n).astype(dtype)
    out = np.empty_like(x)
    loops = {(name, which): loop_over(table[(name, dtype)])
             for name in only if name in NUMPY for which, table in tables.items()}
    loops.update({("chain", which): chain_loop(table, dtype) for which, table in tables.items()})
    best = _best_cpu_seconds(loops, x, out, rounds)
    print(f"{n} {dtype}, best CPU ms of {rounds} interleaved rounds (load average "
          f"{os.getloadavg()[0]:.1f}); baseline = {path}")
    print(f"{'loop':10s} {'baseline':>9s} {'current':>9s} {'ratio':>6s}")
    for name in dict.fromkeys(k[0] for k in loops):
        old, new = best[(name, "baseline")] * 1e3, best[(name, "current")] * 1e3
        print(f"{name:10s} {old:9.2f} {new:9.2f} {old / new:5.2f}x")


def _best_cpu_seconds(loops: dict, x: np.ndarray, out: np.ndarray, rounds: int) -> dict:
    """Each loop's best thread CPU seconds on (x, out) over `rounds` interleaved rounds,
    after a compiling call."""
    best = dict.fromkeys(loops, math.inf)
    for loop in loops.values():
        loop(x, out)  # compile
    for _ in range(rounds):
        for key, loop in loops.items():
            start = time.thread_time()
            loop(x, out)
            best[key] = min(best[key], time.thread_time() - start)
    return best


def trig_fast_path(n: int, rounds: int) -> None:
    """Print CPU ms of loops of sin, cos, tan: the exact functions against the table-free
    ones for |x| < 2**15 (SMALL_TRIG), interleaved, best of `rounds`, both dtypes."""
    print(f"{n} values on [-3, 3], best CPU ms of {rounds} interleaved rounds (load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'function':10s} {'dtype':8s} {'exact':>8s} {'fast':>8s} {'ratio':>6s}")
    for dtype in ("float32", "float64"):
        x = np.random.default_rng(1).uniform(-3, 3, n).astype(dtype)
        out = np.empty_like(x)
        loops = {(name, kind): loop_over(table[(name, dtype)]) for name in ("sin", "cos", "tan")
                 for kind, table in (("exact", MATH_FUNCTIONS), ("fast", SMALL_TRIG))}
        best = _best_cpu_seconds(loops, x, out, rounds)
        for name in ("sin", "cos", "tan"):
            exact, fast = best[(name, "exact")] * 1e3, best[(name, "fast")] * 1e3
            print(f"{name:10s} {dtype:8s} {exact:8.2f} {fast:8.2f} {exact / fast:5.2f}x")


def min_ms(run: Callable, number: int) -> float:
    """Fastest of `number` calls of run(), in ms."""
    best = math.inf
    for _ in range(number):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--clock", default="wall", choices=tuple(CLOCK),
                        help="cpu: this thread's CPU time, steadier on a busy machine "
                             "(not meaningful for the prange row)")
    parser.add_argument("--ulp", action="store_true", help="the accuracy survey instead")
    parser.add_argument("--stride", type=int, default=8, help="float32 survey: bit stride")
    parser.add_argument("--only", nargs="*", default=[*NUMPY, "pow"], metavar="NAME",
                        help="functions to time (default: all)")
    parser.add_argument("--peers", action="store_true",
                        help="the chain under transfuse.jit against torch.compile, jax.jit")
    parser.add_argument("--rounds", type=int, default=5,
                        help="--peers, --baseline: interleaved rounds")
    parser.add_argument("--baseline", metavar="FILE",
                        help="another mathlib.py to time against this one")
    parser.add_argument("--trig-fast-path", action="store_true",
                        help="sin, cos, tan: exact against the |x| < 2**15 fast path")
    args = parser.parse_args()
    if args.trig_fast_path:
        trig_fast_path(args.n, args.rounds)
        return
    if args.baseline:
        against_baseline(args.baseline, args.n, args.rounds, args.dtype, tuple(args.only))
        return
    if args.peers:
        peers(args.n, args.rounds)
        return
    if args.ulp:
        ulp_survey(args.stride)
        return
    clock = CLOCK[args.clock]
    print(f"{args.n} {args.dtype} elements, median of {args.repeat} runs, ms per call "
          f"({args.clock} clock; load average {os.getloadavg()[0]:.1f})")
    print(f"{'function':10s} {'mathlib':>8s} {'libm':>8s} {'numpy':>8s} {'vs libm':>8s}")
    rows = function_rows(args.n, args.repeat, args.dtype, clock, tuple(args.only))
    for name, ours, libm, ufunc in rows:
        print(f"{name:10s} {ours:8.2f} {libm:8.2f} {ufunc:8.2f} {libm / ours:7.1f}x")
    x = np.random.default_rng(1).uniform(-3, 3, args.n).astype(args.dtype)
    out = np.empty_like(x)
    print("\nchain tanh(x)*sigmoid(x) + 0.5*x*x - exp(-x*x) + sin(x)*cos(x)")
    for label, kernel in chain_kernels(args.dtype).items():
        ms = median_ms(lambda k=kernel: k(x, out), args.repeat, clock)
        print(f"{label:28s} {ms:8.2f}")
    copy = median_ms(lambda: np.copyto(out, x), args.repeat, clock)
    print(f"{'(one copy of the array)':28s} {copy:8.2f}")


if __name__ == "__main__":
    main()
