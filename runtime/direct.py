"""Kernels of the direct back end: LLVM IR built into a shared library, loaded by ctypes.

compiler/lower_direct.py translates a generated kernel to LLVM IR and a `Plan`; this
module compiles the IR with llvmlite (no Numba), links the object code into a shared
library with the system's C compiler, keeps both in the disk cache, and wraps the
library's steps in an entry point with the Numba entry's calling convention
(`entry(constants..., sizes..., inputs...)`), written as Python source from the plan: the
signature guard, the buffers, the calls, the returned arrays. A warm process loads the
library with ctypes and imports neither Numba nor llvmlite.

Parallel steps run their blocks on a pool of threads: one contiguous range of blocks a
thread, the calling thread taking the first; runtime/direct_pool.py's native pool once it
is built, Python's until then (ctypes releases the GIL while compiled code runs).
docs/compiler.md, "The direct back end".
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from . import direct_pool
from .cache import _safe, atomic_write, cache_root, count_regions, log
from .direct_llvm import Batch
from .direct_regions import Pending, RegionStream, pending_regions, region_groups, store_regions
from .errors import SignatureMismatch

__all__ = ["DirectKernel", "build", "load_or_build", "mode", "thread_count"]

_FORMAT = 2  # 2: plans without huge-page advice
# A serial step keeps the GIL, as Numba's functions do (and a call costs less); a parallel
# step's blocks release it, so that the pool's threads run at once.
_SERIAL_STEP = ctypes.PYFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.py_object,
                                 ctypes.c_int64, ctypes.c_int64)
_PARALLEL_STEP = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.py_object,
                                  ctypes.c_int64, ctypes.c_int64)
_EXTENT = ctypes.PYFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.py_object)


def mode() -> str:
    """'on', 'off' or 'strict', from TRANSFUSE_DIRECT (default on). 'strict' (the test
    suite's) raises where the translator fails on a kernel it should take or reject
    cleanly; 'on' logs that and compiles the kernel through Numba."""
    value = os.environ.get("TRANSFUSE_DIRECT", "1").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    return "strict" if value == "strict" else "on"


class BuildFailed(Exception):
    """The library could not be built here (no C compiler, a linker error)."""


# ---------------------------------------------------------------------------------------
# Threads


def thread_count() -> int:
    """Threads for parallel steps: NUMBA_NUM_THREADS when set (as for Numba's kernels),
    else the CPUs this process may run on."""
    value = os.environ.get("NUMBA_NUM_THREADS")
    if value and value.strip().isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's threads are not there, and a pool that believes
    it has idle ones never runs a block (the child waited forever)."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=threads - 1,
                                       thread_name_prefix="transfuse-direct")
        return _POOL


def run_parallel(step: Any, extent: Any, ints: Any, arrays: tuple) -> int:
    """Run a parallel step's blocks [0, extent) over the threads: 0, or the first
    nonzero error status in block order (Plan.errors). The native pool runs them
    (runtime/direct_pool.py) once it is built; until then, Python's."""
    n = extent(ints, arrays)
    threads = min(thread_count(), n)
    if threads <= 1:
        return step(ints, arrays, 0, n)
    native = direct_pool.runner()
    if native is not None:
        return native(step.address, ints, arrays, n, threads)
    cuts = [n * k // threads for k in range(threads + 1)]
    pool = _pool(thread_count())
    futures = [pool.submit(step, ints, arrays, cuts[k], cuts[k + 1])
               for k in range(1, threads)]
    status = step(ints, arrays, cuts[0], cuts[1])
    for f in futures:
        status = status or f.result()
    return status


# ---------------------------------------------------------------------------------------
# The entry point, written from the plan


class DirectKernel:
    """A loaded library and its entry point (as runtime/cache.py's LoadedKernel)."""

    def __init__(self, library: ctypes.CDLL, plan: Any, origin: str, path: Path | None):
        self.library = library
        self.plan = plan
        self.origin = origin  # 'disk' or 'compiled'
        self.from_disk = origin == "disk"
        self.claimed = False
        self.path = path
        self.source = entry_source(plan)
        namespace = {"np": np, "ndarray": np.ndarray, "SignatureMismatch": SignatureMismatch,
                     "run_parallel": run_parallel,
                     "ints_of": _ints_cache(len(plan.ints), plan.python_entry),
                     "failed": _failure(plan.errors)}
        if plan.python_entry:  # the method record lives as long as the entry's globals
            namespace["run_steps"], namespace["_run_steps_record"] = _builtin(library,
                                                                                "run_steps")
        for step, extent in plan.steps:
            kind = _SERIAL_STEP if extent is None else _PARALLEL_STEP
            namespace[step] = kind((step, library))
            if extent is not None:
                namespace[extent] = _EXTENT((extent, library))
                # for the native pool, which calls it from its threads
                namespace[step].address = ctypes.cast(namespace[step], ctypes.c_void_p).value
        exec(compile(self.source, f"<transfuse direct entry {path}>", "exec"), namespace)
        self.entry_point = namespace["entry"]
        self._namespace = namespace
        self._binders: dict[int, Any] = {}

    def bind(self, consts: tuple) -> Any:
        """The entry of the other arguments, for a signature's constants and sizes (its
        shapes and ints worked out once): the jit's fast path. It checks the arrays'
        dtypes too."""
        binder = self._binders.get(len(consts))
        if binder is None:
            namespace = dict(self._namespace)
            source = entry_source(self.plan, len(consts))
            exec(compile(source, f"<transfuse direct fast entry {self.path}>", "exec"),
                 namespace)
            binder = self._binders[len(consts)] = namespace["bind"]
        return binder(*consts)


def _failure(errors: list[str]) -> Any:
    """failed(status): raise what a step's status says (1: the arrays are not the
    compiled signature's; 2 + k: IndexError(errors[k]), as Numba's kernel raises it)."""
    def failed(status: int) -> None:
        if status == 1:
            raise SignatureMismatch()
        raise IndexError(errors[status - 2])
    return failed


def _ints_cache(count: int, as_ndarray: bool) -> Any:
    """ints_of(values): the steps' int64 array of the entry's int arguments (a ctypes
    array, or an ndarray for run_steps), made once per distinct tuple of values (they are
    a signature's sizes: a handful per program)."""
    kind = ctypes.c_int64 * max(count, 1)
    made: dict[tuple, Any] = {}

    def ints_of(values: tuple) -> Any:
        found = made.get(values)
        if found is None:
            if len(made) > 256:  # many batch sizes: start again rather than grow
                made.clear()
            found = made[values] = (np.array(values or (0,), np.int64) if as_ndarray
                                    else kind(*values))
        return found
    return ints_of


class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


_METH_FASTCALL = 0x0080
_NEW_FUNCTION = ctypes.pythonapi.PyCFunction_NewEx
_NEW_FUNCTION.restype = ctypes.py_object
_NEW_FUNCTION.argtypes = [ctypes.POINTER(_MethodDef), ctypes.py_object, ctypes.py_object]


def _builtin(library: ctypes.CDLL, name: str) -> tuple[Any, _MethodDef]:
    """The library's METH_FASTCALL function `name` as a Python builtin function, and the
    method record it points to (to be kept alive with it)."""
    address = ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    method = _MethodDef(name.encode(), address, _METH_FASTCALL, None)
    return _NEW_FUNCTION(ctypes.byref(method), None, None), method


def entry_source(plan: Any, bound: int | None = None) -> str:
    """Python source of the entry point: guard, buffers, steps, returned arrays.

    With `bound`, the source of `bind(<the first bound params>)` instead: it works out
    once what depends on those alone (a signature's constants and sizes: the shapes, the
    steps' ints) and returns the entry of the other params (the jit's fast path)."""
    args = [name for name, _ in plan.params]
    binding = bound is not None
    fixed = set(args[:bound or 0])
    head: list[str] = []  # bind's statements, run once
    named: dict[str, str] = {}

    def once(expr: str, names: list, target: str | None = None) -> str:
        """expr, or the name bind gives it when it depends on bound names only."""
        if not binding or not all(isinstance(n, int) or n in fixed for n in names):
            return expr
        if expr not in named:
            named[expr] = target or f"k{len(head)}"
            head.append(f"    {named[expr]} = {expr}")
        return named[expr]

    def shape_of(extents: list) -> str:
        tup = "(" + ", ".join(map(str, extents)) + ("," if len(extents) == 1 else "") + ")"
        return once(tup, extents)

    lines = []
    arrays = [name for name, kind in plan.params if kind == "array" and name not in fixed]
    if arrays:  # a NumPy scalar has a dtype too: the slow path makes it an array
        test = " or ".join(f"type({n}) is not ndarray" for n in arrays)
        if binding:  # the fast path's caller leaves the dtypes to the entry
            # (identity: a byte-swapped array's dtype is another object)
            test += "".join(f" or {n}.dtype is not " + once(
                f'np.dtype("{plan.param_dtypes[n]}")', [], f"{n}_dtype") for n in arrays)
        lines += [f"    if {test}:", "        raise SignatureMismatch()"]
    for name, extents in [] if plan.guard_compiled else plan.guard:
        lines.append(f"    if {name}.shape != {shape_of(extents)} or not {name}.flags.c_contiguous"
                     f" or not {name}.flags.aligned:")
        lines.append("        raise SignatureMismatch()")
    for name, extents, dtype, dead in plan.allocs:
        if extents is None:
            lines.append(f"    {name} = {dead}.copy()" if dtype == "copy"
                         else f"    {name} = {dead}  # reuses a dead buffer")
            continue
        shape = shape_of(extents)
        if dead is None:
            empty, kind = once("np.empty", [], "empty"), once(f"np.{dtype}", [], dtype)
            lines.append(f"    {name} = {empty}({shape}, {kind})")
        else:
            why = "a view of the argument" if dead in plan.param_dtypes else "reuses a dead buffer"
            lines.append(f"    {name} = {dead}.reshape({shape})  # {why}")
    ints = ", ".join(plan.ints) + ("," if len(plan.ints) == 1 else "")
    if once(f"ints_of(({ints}))", plan.ints, "ints") != "ints":
        lines.append(f"    ints = ints_of(({ints}))")
    slots = ", ".join(plan.slots) + ("," if len(plan.slots) == 1 else "")
    lines.append(f"    arrays = ({slots})")
    if plan.python_entry:  # every step, in one call of a builtin function
        lines += ["    if run_steps(ints, arrays):", "        raise SignatureMismatch()"]
    for k, (step, extent) in enumerate([] if plan.python_entry else plan.steps):
        call = (f"{step}(ints, arrays, 0, 0)" if extent is None
                else f"run_parallel({step}, {extent}, ints, arrays)")
        if plan.errors:  # a step may stop with an IndexError's status
            lines += [f"    status = {call}", "    if status:", "        failed(status)"]
        elif k == 0 and plan.guard_compiled:  # the step checks the arrays first
            lines += [f"    if {call}:", "        raise SignatureMismatch()"]
        else:
            lines.append(f"    {call}")
    outs = [f"{n}.copy()" if copy else n for n, copy in plan.returns]
    if plan.returns_tuple:
        lines.append(f"    return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
    else:
        lines.append(f"    return {outs[0]}")
    if not binding:
        return "\n".join([f"def entry({', '.join(args)}):", *lines]) + "\n"
    return "\n".join([f"def bind({', '.join(args[:bound])}):", *head,
                      f"    def entry({', '.join(args[bound:])}):",
                      *("    " + line for line in lines), "    return entry"]) + "\n"


# ---------------------------------------------------------------------------------------
# Building and the disk cache


def c_compiler() -> str | None:
    """The C compiler that links kernels (and builds runtime/direct_pool.py's pool)."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _link(obj: bytes, folder: Path, libm: bool, regions: list[Path] = ()) -> Path:
    """A shared library of the object code and the region objects it calls, by the C
    compiler (the system's linker)."""
    cc = c_compiler()
    if cc is None:
        raise BuildFailed("no C compiler (cc) to link the object code")
    obj_path = folder / "kernel.o"
    atomic_write(obj_path, obj)
    tmp = folder / f"kernel.{os.getpid()}.{threading.get_ident()}.so"
    command = [cc, "-shared", "-o", str(tmp), str(obj_path), *map(str, regions)] + (
        ["-lm"] if libm else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildFailed(f"{' '.join(command)}: {done.stderr.strip()[:500]}")
    path = folder / "kernel.so"
    os.replace(tmp, path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(source: str, folder: Path, key: str, shared: bool = True
          ) -> tuple[Any, Path] | str:
    """Translate, compile and link a kernel into `folder`: (plan, library path), or why
    the direct back end does not take it. `shared`: its region functions come from the
    disk cache's region objects (runtime/direct_regions.py), else they are compiled
    for this kernel alone, into objects beside its own.

    On several threads, each region module the cache lacks starts compiling as soon as
    the translator has written it, while the rest is translated; the kernel's own module
    follows (runtime/direct_llvm.py)."""
    batch = Batch(thread_count())
    stream = RegionStream(batch) if shared and batch.parallel else None
    try:
        return _build(source, folder, key, shared, batch, stream)
    finally:
        batch.abandon()  # (nothing left to wait for once its objects were taken)


def _build(source: str, folder: Path, key: str, shared: bool, batch: Batch,
           stream: RegionStream | None) -> tuple[Any, Path] | str:
    from transfuse.compiler.lower_direct import Unsupported, translate

    try:
        module = translate(source, stream)
    except Unsupported as exc:
        return f"unsupported: {exc}"
    except Exception as exc:  # a translator bug: never a wrong kernel, Numba takes it
        if mode() == "strict":
            raise
        return f"translation failed: {type(exc).__name__}: {exc}"
    folder.mkdir(parents=True, exist_ok=True)
    if stream is not None:
        pending, jobs = stream.pending(), stream.jobs
    else:
        pending = pending_regions(module.regions) if shared else Pending(
            [], region_groups(list(module.regions), separately=batch.parallel))
        jobs = [batch.add(*(module.regions[symbol] for symbol in group))
                for group in pending.groups]
    main = batch.add(module.ir)
    try:
        objects = batch.objects()
    except RuntimeError as exc:  # LLVM rejected the IR: a translator bug, as above
        if mode() == "strict":
            raise
        return f"LLVM rejected the IR: {exc}"
    compiled = [objects[k] for k in jobs]
    if shared:
        regions = store_regions(module.regions, pending, compiled)
    else:
        regions = _write_objects(folder, compiled)
        count_regions(len(module.regions), 0)
    try:
        path = _link(objects[main], folder, module.libm, regions)
    except BuildFailed as exc:
        if not shared:
            return f"build failed: {exc}"
        log(f"direct: linking the region objects failed ({exc}); compiling the regions"
            " for this kernel alone")
        return build(source, folder, key, shared=False)
    record = {"format": _FORMAT, "key": key, "plan": module.plan.to_json(),
              "libm": module.libm, "sha256": _digest(path)}
    atomic_write(folder / "direct.json", json.dumps(record, indent=1))
    return module.plan, path


def _write_objects(folder: Path, objects: list[bytes]) -> list[Path]:
    """A kernel's own region objects (`cache=False`, or its regions' objects failed to
    link), beside its kernel.o."""
    paths = [folder / f"regions-{k}.o" for k in range(len(objects))]
    for path, obj in zip(paths, objects):
        atomic_write(path, obj)
    return paths


def _read_record(folder: Path, key: str) -> dict | None:
    try:
        record = json.loads((folder / "direct.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != _FORMAT \
            or record.get("key") != key:
        return None
    return record


def _open(path: Path, plan: Any) -> ctypes.CDLL:
    """The library, after the libraries its code calls into (NumPy's OpenBLAS), loaded so
    that their symbols resolve in it, with its function pointers to Cython modules' C
    functions set (Plan.externals)."""
    for library in plan.libraries:
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    library = ctypes.CDLL(str(path))
    for name, module, export in plan.externals:
        ctypes.c_void_p.in_dll(library, name).value = _cython_function(module, export)
    return library


def _cython_function(module: str, export: str) -> int:
    """The address of a Cython module's exported C function (its `__pyx_capi__` capsule),
    as Numba's get_cython_function_address finds it, without importing Numba."""
    capsule = importlib.import_module(module).__pyx_capi__[export]
    name = ctypes.pythonapi.PyCapsule_GetName
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    pointer = ctypes.pythonapi.PyCapsule_GetPointer
    pointer.restype, pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = pointer(capsule, name(capsule))
    if not address:
        raise OSError(f"{module}.{export} has no address")
    return address


def _load_record(folder: Path, record: dict) -> DirectKernel | None:
    """The cached library, or None when it is missing or not the one recorded."""
    from transfuse.compiler.direct_plan import Plan

    if "unsupported" in record:
        return None
    path = folder / "kernel.so"
    try:
        if _digest(path) != record["sha256"]:
            log(f"direct: {path} does not match its record; building it again")
            return None
        plan = Plan.from_json(record["plan"])
        library = _open(path, plan)
    except (OSError, TypeError, KeyError) as exc:
        log(f"direct: {path} not loaded ({exc}); building it again")
        return None
    return DirectKernel(library, plan, "disk", path)


def load_or_build(source: str, name: str, key: str, *, disk: bool
                  ) -> DirectKernel | str:
    """The kernel from the disk cache, or built now; a string says why there is none
    (the caller compiles through Numba)."""
    if not disk:
        with tempfile.TemporaryDirectory(prefix="transfuse-direct-") as tmp:
            built = build(source, Path(tmp), key, shared=False)
            if isinstance(built, str):
                return built
            plan, path = built
            return DirectKernel(_open(path, plan), plan, "compiled", None)
    folder = cache_root() / "direct" / f"{_safe(name)}-{key[:16]}"
    record = _read_record(folder, key)
    if record is not None:
        if "unsupported" in record:
            return record["unsupported"]
        kernel = _load_record(folder, record)
        if kernel is not None:
            log(f"direct hit {name}: {folder}")
            return kernel
    built = build(source, folder, key)
    if isinstance(built, str):
        if built.startswith("unsupported"):  # remembered: a warm process need not look
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "direct.json", json.dumps(
                {"format": _FORMAT, "key": key, "unsupported": built}))
        return built
    plan, path = built
    try:
        library = _open(path, plan)
    except OSError as exc:  # a region object that lacks its symbol (its index was edited)
        log(f"direct: {path} does not load ({exc}); compiling its regions into it")
        built = build(source, folder, key, shared=False)
        if isinstance(built, str):
            return built
        plan, path = built
        library = _open(path, plan)
    log(f"direct compiled {name}: {folder}")
    return DirectKernel(library, plan, "compiled", path)
