"""compile: first-call latency (trace + transform + compile + one run) in a fresh process.

Each sample is a new Python process that builds the inputs, then times the first call of
the compiled function, in wall and CPU seconds. "cold" starts from an empty cache
directory; "warm" from one that a previous process filled, so it measures loading compiled
code from the disk cache. Every system's disk cache is pointed at that directory:
XDG_CACHE_HOME, TRANSFUSE_CACHE_DIR and NUMBA_CACHE_DIR are set to it, and JAX's
persistent compilation cache is enabled there. The "aot" case times loading an
ahead-of-time artefact that an untimed process built (`transfuse aot`'s object code;
JAX's compiled XLA executable, serialised by jax.experimental.serialize_executable) and its
first call; transfuse's sample fails where that process imported Numba.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from transfuse.bench.core import (
    Absent,
    Case,
    Runner,
    Unavailable,
    import_jax,
    import_numba,
    import_transfuse,
)

from . import _rk4, suite_elementwise, suite_per_sample_grads

NAME = "compile"
MAX_PROCESSES_PER_SAMPLE_SET = 5  # fresh processes are slow: cap the repeats
SAMPLE_BUDGET_S = 20.0  # a 30-second cold compile is sampled once, not five times
# (not the aot and new-batch cases: each sample is a load or a lookup, however loaded the
# machine; their goals are medians of 5)
WORKER_TIMEOUT_S = 600
# Under --quick, the cache a cold sample's process filled, per (system, workload): the warm
# case starts from a copy of it instead of running one more process to fill a cache.
_FILLED_BY_COLD: dict[tuple[str, str], str] = {}
_FILLED_ROOT: tempfile.TemporaryDirectory | None = None


# ---------------------------------------------------------------------------------------
# The workloads: inputs, and the function each system compiles


RK4_STEPS = (5, 10, 20, 50, 200)  # issue #15: compile time linear in the program's size
JAX_RK4_MAX_STEPS = 10  # JAX takes 151 s for 20 steps on the 2-core VM (issue #15): the
# longer programs run without it
NEW_BATCH = "per-sample-grads-new-batch"  # half the batch, after the whole one has run
AOT = "per-sample-grads-aot"  # load an artefact built by another process, call it once


def _rk4_steps(workload: str) -> int | None:
    """The step count of an 'rk4-N' workload (None for the others)."""
    return int(workload.split("-")[1]) if workload.startswith("rk4-") else None


def _inputs(workload: str, quick: bool) -> tuple:
    if workload == "elementwise":
        return suite_elementwise.cases(quick)[0].setup()
    if _rk4_steps(workload):
        return _rk4.inputs()
    params, x, y = suite_per_sample_grads.make_inputs(quick)
    if workload == NEW_BATCH:
        half = len(x) // 2
        return params, x[:half].copy(), y[:half].copy()
    return params, x, y


def _flat_step(w1, b1, w2, b2, w3, b3, x, y):
    """The per-sample-gradient step with its parameters as arguments (aot signatures are
    flat)."""
    import transfuse as tx

    return suite_per_sample_grads.transform(tx)((w1, b1, w2, b2, w3, b3), x, y)


def _build_artefact(system: str, path: str, inputs: tuple) -> None:
    """The aot case's artefact, built in an untimed process: transfuse's object code, or
    JAX's serialised export of the same step."""
    flat = (*inputs[0], *inputs[1:])
    if system == "transfuse":
        from transfuse.ir.core import aval_of

        from transfuse.aot import compile_to, parse_signature

        signature = ",".join(str(aval_of(a)) for a in flat)
        compile_to(_flat_step, [parse_signature(signature)], path)
        return
    jax, jnp = import_jax()
    from jax.experimental import serialize_executable

    step = suite_per_sample_grads._jax(jax, jnp)
    compiled = jax.jit(lambda *a: step(tuple(a[:-2]), a[-2], a[-1])).lower(*flat).compile()
    with open(path, "wb") as f:
        pickle.dump(serialize_executable.serialize(compiled), f)


def _load_artefact(system: str, path: str) -> tuple[Callable, Callable]:
    """What the aot case times: load the artefact, then call it (flat arguments)."""
    if system == "transfuse":
        tx = import_transfuse(("load",))
        return lambda *args: tx.load(path)(*args[0], *args[1:]), lambda a: a
    jax, jnp = import_jax()
    from jax.experimental import serialize_executable

    def load_and_call(*args):
        with open(path, "rb") as f:
            compiled = serialize_executable.deserialize_and_load(*pickle.load(f))
        return jax.block_until_ready(compiled(*args[0], *args[1:]))

    return load_and_call, jnp.asarray


def _transfuse_fn(workload: str) -> Callable:
    tx = import_transfuse(("jit",) if workload == "elementwise" else ("jit", "vmap", "grad"))
    if workload == "elementwise":
        return tx.jit(suite_elementwise.chain)
    if _rk4_steps(workload):
        return tx.jit(_rk4.transform(_rk4_steps(workload))(tx))
    return tx.jit(suite_per_sample_grads.transform(tx))


def _numba_fn(workload: str) -> Callable:
    numba = import_numba()
    return numba.njit(cache=True)(suite_elementwise.chain_loop)


def _jax_fn(workload: str, cache_dir: str) -> tuple[Callable, Callable]:
    jax, jnp = import_jax()
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if _rk4_steps(workload):
        fn = _rk4.jax_function(_rk4_steps(workload), jax, jnp)
    else:
        build = suite_elementwise._jax_chain if workload == "elementwise" \
            else suite_per_sample_grads._jax
        fn = build(jax, jnp)
    return lambda *args: jax.block_until_ready(fn(*args)), jnp.asarray


# ---------------------------------------------------------------------------------------
# The worker: runs in the fresh process


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the first call of `spec['system']` on `spec['workload']`; save its result."""
    inputs = _inputs(spec["workload"], spec["quick"])
    if spec.get("phase") == "build":
        try:
            _build_artefact(spec["system"], spec["artefact"], inputs)
        except (Absent, Unavailable, NotImplementedError, AttributeError) as exc:
            status = "absent" if isinstance(exc, Absent) else "unavailable"
            return {"status": status, "reason": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok"}
    try:
        fn, convert = _worker_function(spec)
    except (Absent, Unavailable, NotImplementedError) as exc:
        status = "absent" if isinstance(exc, Absent) else "unavailable"
        return {"status": status, "reason": str(exc) or type(exc).__name__}
    args = tuple(_map_arrays(convert, a) for a in inputs)
    if spec["workload"] == NEW_BATCH:  # the whole batch first, untimed
        fn(*(_map_arrays(convert, a) for a in _inputs("per-sample-grads", spec["quick"])))
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        result = fn(*args)
    except NotImplementedError as exc:
        return {"status": "unavailable", "reason": f"NotImplementedError: {exc}"}
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if spec["workload"] == AOT and spec["system"] == "transfuse" and "numba" in sys.modules:
        return {"status": "error", "reason": "loading the aot artefact imported Numba"}
    from transfuse.bench.check import flatten
    from transfuse.bench.core import to_numpy
    leaves = [leaf for _, leaf in flatten(to_numpy(result))]
    np.savez(spec["out"], *leaves)
    report = {"status": "ok", "seconds": seconds, "cpu_seconds": cpu_seconds}
    if spec["workload"] == AOT:  # by hand: what the first load + call costs beyond a second
        start, cpu_start = time.perf_counter(), time.process_time()
        fn(*args)
        report["second"] = [time.perf_counter() - start, time.process_time() - cpu_start]
    return report


def _worker_function(spec: dict[str, Any]) -> tuple[Callable, Callable]:
    system, workload = spec["system"], spec["workload"]
    if workload == AOT:
        return _load_artefact(system, spec["artefact"])
    if system == "transfuse":
        return _transfuse_fn(workload), lambda a: a
    if system == "numba":
        return _numba_fn(workload), lambda a: a
    return _jax_fn(workload, spec["cache_dir"])


def _map_arrays(fn: Callable, tree: Any) -> Any:
    if isinstance(tree, tuple):
        return tuple(_map_arrays(fn, t) for t in tree)
    return fn(tree)


# ---------------------------------------------------------------------------------------
# The parent side: a Runner that measures by spawning workers


def _spawn(spec: dict[str, Any], cache_dir: str) -> dict[str, Any]:
    env = dict(os.environ, XDG_CACHE_HOME=cache_dir, TRANSFUSE_CACHE_DIR=cache_dir,
               NUMBA_CACHE_DIR=cache_dir)
    env.pop("TRANSFUSE_DISABLE_CACHE", None)  # "warm" must mean a disk-cache hit
    spec = dict(spec, cache_dir=cache_dir)
    proc = subprocess.run([sys.executable, "-m", __name__, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"compile worker failed (exit {proc.returncode}): "
                           + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sample(spec: dict[str, Any], cache_dir: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process's first call."""
    report = _spawn(spec, cache_dir)
    if report["status"] == "absent":
        raise Absent(report["reason"])
    if report["status"] == "unavailable":
        raise Unavailable(report["reason"])
    if report["status"] == "error":
        raise RuntimeError(report["reason"])
    return report.get("seconds", 0.0), report.get("cpu_seconds", 0.0)


def _bytecode_compiled() -> None:
    """Write the .pyc files of transfuse's packages, as `pip install` of a wheel does: the
    workers time first calls, not Python compiling transfuse's source (which it does in
    every process where PYTHONDONTWRITEBYTECODE is set and the package is installed in
    editable mode). JAX and NumPy come with their .pyc from their install."""
    import compileall
    import importlib.util

    for package in ("transfuse", "transfuse.ir", "transfuse.compiler", "transfuse.runtime",
                    "transfuse.bench.suites"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def _subprocess_system(system: str, workload: str, warm: bool, quick: bool
                       ) -> Callable[[tuple], Runner]:
    def factory(inputs: tuple) -> Runner:
        if system == "transfuse":  # spare the processes when jit is not there at all
            import_transfuse(("jit",))
            _bytecode_compiled()

        def measure(repeat: int) -> tuple[list[tuple[float, float]], Any]:
            with tempfile.TemporaryDirectory(prefix="transfuse-bench-") as scratch:
                out = os.path.join(scratch, "result.npz")
                spec = {"system": system, "workload": workload, "quick": quick, "out": out}
                samples = _samples(spec, scratch, warm, min(repeat, MAX_PROCESSES_PER_SAMPLE_SET))
                with np.load(out) as saved:
                    result = [saved[f"arr_{i}"] for i in range(len(saved.files))]
            return samples, result

        return Runner(measure=measure, fetch=lambda r: r)

    return factory


def _samples(spec: dict[str, Any], scratch: str, warm: bool, count: int
             ) -> list[tuple[float, float]]:
    """`count` fresh-process (wall, CPU) samples, fewer once SAMPLE_BUDGET_S is spent (at
    least one).

    A warm sample's cache is filled by a process like the cold sample's (untimed); under
    --quick the cold case's own process is that one: its filled cache is kept and copied.
    The aot case's artefact is built by one untimed process; each sample loads it with an
    empty cache of its own."""
    shared = os.path.join(scratch, "cache")
    key = (spec["system"], spec["workload"])
    if spec["workload"] == AOT:
        spec["artefact"] = os.path.join(scratch, "artefact")
        _sample(dict(spec, phase="build"), os.path.join(scratch, "build-cache"))
    if warm and spec["quick"] and key in _FILLED_BY_COLD:
        shutil.copytree(_FILLED_BY_COLD.pop(key), shared)
    elif warm:
        _sample(spec, shared)  # fills the cache; not timed
    samples: list[tuple[float, float]] = []
    budget = SAMPLE_BUDGET_S if spec["workload"] not in (NEW_BATCH, AOT) else float("inf")
    while len(samples) < count and (not samples or sum(w for w, _ in samples) < budget):
        cache = shared if warm else os.path.join(scratch, f"cache{len(samples)}")
        samples.append(_sample(spec, cache))
    if not warm and spec["quick"] and spec["workload"] != AOT:  # loading compiles nothing
        _keep_filled(key, cache)
    return samples


def _keep_filled(key: tuple[str, str], cache: str) -> None:
    """Keep a copy of the cache a cold sample's process filled, for the warm case."""
    global _FILLED_ROOT
    if _FILLED_ROOT is None:
        _FILLED_ROOT = tempfile.TemporaryDirectory(prefix="transfuse-bench-filled-")
    kept = os.path.join(_FILLED_ROOT.name, f"{key[0]}-{key[1]}")
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(cache, kept)
    _FILLED_BY_COLD[key] = kept


def cases(quick: bool) -> list[Case]:
    """Cold and warm first calls of the elementwise chain and of per-sample gradients; cold
    first calls of jit(grad) of the unrolled RK4 at RK4_STEPS steps; the first call of
    per-sample gradients at half the batch, in the process that has just run the whole
    batch (a new batch size: transfuse reuses the kernel, JAX recompiles); loading the
    per-sample-gradient step's aot artefact and its first call (JAX: a serialised
    executable).

    Under --quick only the elementwise chain: every sample is a fresh process.
    """
    workloads = [("elementwise", ("numba", "jax"), lambda tx: suite_elementwise.chain, ()),
                 ("per-sample-grads", ("jax",), suite_per_sample_grads.transform,
                  ("vmap", "grad"))]
    workloads += [(f"rk4-{n}", ("jax",) if n <= JAX_RK4_MAX_STEPS else (), _rk4.transform(n),
                   ("grad",)) for n in RK4_STEPS]
    workloads.append((NEW_BATCH, ("jax",), suite_per_sample_grads.transform, ("vmap", "grad")))
    workloads.append((AOT, ("jax",), suite_per_sample_grads.transform, ("vmap", "grad", "load")))
    out = []
    for workload, systems, transform, needs in workloads[:1] if quick else workloads:
        once = _rk4_steps(workload) or workload in (NEW_BATCH, AOT)
        for warm in (False,) if once else (False, True):
            temperature = "warm" if warm else "cold"
            out.append(Case(
                NAME, workload if workload in (NEW_BATCH, AOT) else f"{workload}-{temperature}",
                f"first call of the {workload} case in a fresh process, "
                f"{'warm disk cache' if warm else 'empty caches'}"
                + (" (load + first call of an artefact built by another process)"
                   if workload == AOT else ""),
                lambda w=workload: _inputs(w, quick), transform=transform, needs=needs,
                plain=workload == "elementwise",
                transfuse_system=_subprocess_system("transfuse", workload, warm, quick),
                baselines={s: _subprocess_system(s, workload, warm, quick) for s in systems}))
    return out


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
