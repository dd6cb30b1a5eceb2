"""Object code of the direct back end's LLVM modules, compiled on several threads at once.

A cold build has the kernel's own module and the region modules no cached object holds
(runtime/direct_regions.py). They are independent, so they compile at once, one module a
thread, each as soon as it is written (`Batch`). Two things stand in the way, and are
dealt with here:

- llvmlite calls LLVM under one process-wide lock. The two calls that take the time (the
  optimisation pipeline and code generation) are made without it, through the ctypes
  function llvmlite wraps; every other call takes the lock as usual.
- LLVM is safe across threads only where they share nothing: each module is parsed in
  an LLVM context of its own, and each thread has its own target machine.

Where llvmlite has no such function (another version) or one thread is allowed, the
modules compile one after another, under the lock. Either way a module's object code is
the same bytes (tests/test_direct_llvm.py). docs/compiler.md, "Compiling on several
threads".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["Batch", "object_code", "object_codes"]

_LOCAL = threading.local()  # this thread's target machines, by CPU description
_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0
_POOL_LOCK = threading.Lock()
_OPTIONS_LOCK = threading.Lock()  # LLVM's options are process-wide


def _machine() -> Any:
    """This thread's llvmlite target machine for this CPU (or NUMBA_CPU_NAME /
    NUMBA_CPU_FEATURES, as Numba's kernels and mathlib's choices follow them). Making one
    costs about 1 ms; a target machine caches per-function state, so threads do not
    share one."""
    import llvmlite.binding as llvm

    cpu, features = os.environ.get("NUMBA_CPU_NAME"), os.environ.get("NUMBA_CPU_FEATURES")
    machines = _LOCAL.__dict__.setdefault("machines", {})
    machine = machines.get((cpu, features))
    if machine is None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_triple(llvm.get_process_triple())
        machine = machines[(cpu, features)] = target.create_target_machine(
            cpu=cpu or llvm.get_host_cpu_name(),
            features=llvm.get_host_cpu_features().flatten() if features is None else features,
            opt=3, reloc="pic", codemodel="default")
    return machine


def _unlocked(name: str) -> Any:
    """llvmlite's ctypes function `name` without its lock, or None where this llvmlite
    has no such thing."""
    from llvmlite.binding import ffi

    return getattr(getattr(ffi.lib, name, None), "_cfn", None)


def _compile(texts: Sequence[str], unlocked: bool) -> bytes:
    """The object code of the module texts[0] with texts[1:] linked into it, in a context
    of its own. `unlocked`: the pipeline and code generation run without llvmlite's lock
    (the caller has checked they can)."""
    from ctypes import string_at

    import llvmlite.binding as llvm
    from llvmlite.binding import ffi

    machine = _machine()
    context = llvm.create_context()
    module = None
    try:
        module = llvm.parse_assembly(texts[0], context=context)
        for text in texts[1:]:
            module.link_in(llvm.parse_assembly(text, context=context))
        module.triple = llvm.get_process_triple()
        module.data_layout = str(machine.target_data)
        module.verify()
        tuning = llvm.create_pipeline_tuning_options(speed_level=2)
        tuning.loop_vectorization = True
        # No SLP vectoriser (Numba's default too): LLVM 22's asserts and aborts the process
        # on some kernels (fuzz seed 17646, tests/fuzz/test_findings.py), and no suite ran
        # measurably faster with it (docs/decisions.md).
        tuning.slp_vectorization = False
        tuning.loop_interleaving = True  # reductions need the vectoriser's partial sums
        tuning.loop_unrolling = False
        builder = llvm.create_pass_builder(machine, tuning)
        passes = builder.getModulePassManager()
        if not unlocked:
            passes.run(module, builder)
            return machine.emit_object(module)
        _unlocked("LLVMPY_RunNewModulePassManager")(passes, module, builder)
        with ffi.OutputString() as error:
            buffer = _unlocked("LLVMPY_TargetMachineEmitToMemory")(machine, module, 1, error)
            if not buffer:
                raise RuntimeError(str(error))
        try:
            return string_at(ffi.lib.LLVMPY_GetBufferStart(buffer),
                             ffi.lib.LLVMPY_GetBufferSize(buffer))
        finally:
            ffi.lib.LLVMPY_DisposeMemoryBuffer(buffer)
    finally:
        if module is not None:
            module.close()  # before its context
        context.close()


def _parallel_possible() -> bool:
    return _unlocked("LLVMPY_RunNewModulePassManager") is not None \
        and _unlocked("LLVMPY_TargetMachineEmitToMemory") is not None


def _forget_threads() -> None:
    """In a forked child: the parent's compile threads are not there (a pool that
    believes it has idle threads would never run a module), nor its lock's holder."""
    global _POOL, _POOL_WORKERS, _LOCAL, _OPTIONS_LOCK
    _POOL, _POOL_WORKERS = None, 0
    _LOCAL = threading.local()
    _OPTIONS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The compile threads, kept: each keeps its target machine."""
    global _POOL, _POOL_WORKERS
    with _POOL_LOCK:
        if _POOL is None or _POOL_WORKERS < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers,
                                       thread_name_prefix="transfuse-llvm")
            _POOL_WORKERS = workers
        return _POOL


class Batch:
    """Modules compiled as they are added, on up to `threads` threads: the compile
    threads start on a module as soon as it is added (while the caller goes on, say,
    translating the rest), and the caller joins them when it asks for the objects. Each
    thread takes the largest module waiting. One thread, or an llvmlite whose LLVM calls
    cannot be made without its lock: everything compiles in `objects()`, on the caller's
    thread.

    Code generation runs without loop strength reduction: it was the costliest pass of
    the per-sample-grad module (55 of 360 ms), and the suites ran as fast without it
    (docs/decisions.md). That LLVM option is process-wide, so a batch holds it (and a
    lock, so batches of several threads do not interleave) from its first module to
    `objects()` or `abandon()`."""

    def __init__(self, threads: int):
        self.parallel = threads > 1 and _parallel_possible()
        self._helpers_allowed = threads - 1
        self._jobs: list[tuple[str, ...]] = []
        self._objects: list[bytes | None] = []
        self._waiting: list[int] = []
        self._helpers: list[Future] = []
        self._active = 0  # helpers draining now
        self._lock = threading.Lock()
        self._holding = False

    def add(self, *texts: str) -> int:
        """Compile the module texts[0] with texts[1:] linked into it: its index among the
        objects."""
        if not self._holding:
            self._hold()
        with self._lock:
            k = len(self._jobs)
            self._jobs.append(texts)
            self._objects.append(None)
            self._waiting.append(k)
            start = self.parallel and self._active < self._helpers_allowed
            if start:
                self._active += 1
        if start:
            self._helpers.append(_pool(self._helpers_allowed).submit(self._drain, True))
        return k

    def objects(self) -> list[bytes]:
        """Each module's object code, in the order added (waits for the compile threads;
        a module LLVM rejected raises its RuntimeError)."""
        try:
            self._drain(helper=False)
        except BaseException:
            self.abandon()
            raise
        try:
            for helper in self._helpers:
                helper.result()
        finally:
            self._release()
        return self._objects  # type: ignore[return-value]

    def abandon(self) -> None:
        """Compile nothing more (the kernel was not taken); wait for the modules being
        compiled now."""
        with self._lock:
            self._waiting.clear()
        try:
            for helper in self._helpers:
                helper.exception()
        finally:
            self._release()

    def _drain(self, helper: bool) -> None:
        """Compile the waiting modules, largest first, until none is left."""
        while True:
            with self._lock:
                if not self._waiting:
                    if helper:
                        self._active -= 1
                    return
                k = max(self._waiting, key=lambda j: sum(map(len, self._jobs[j])))
                self._waiting.remove(k)
            self._objects[k] = _compile(self._jobs[k], unlocked=self.parallel)

    def _hold(self) -> None:
        import llvmlite.binding as llvm

        _OPTIONS_LOCK.acquire()
        self._holding = True
        llvm.set_option("", "--disable-lsr")

    def _release(self) -> None:
        import llvmlite.binding as llvm

        if self._holding:
            llvm.set_option("", "--disable-lsr=false")
            self._holding = False
            _OPTIONS_LOCK.release()


def object_code(ir_text: str, *more: str) -> bytes:
    """The optimised (O2, loops vectorised and interleaved, not unrolled) object code of
    a module's IR, with the modules of `more` linked into it. O3's extra passes and the
    unroller cost a third of the MAML module's compile time and gained no suite any run
    time (docs/decisions.md)."""
    return object_codes([(ir_text, *more)], threads=1)[0]


def object_codes(jobs: Sequence[Sequence[str]], threads: int) -> list[bytes]:
    """Each job's object code (`object_code(*job)`), on up to `threads` threads."""
    batch = Batch(threads)
    for job in jobs:
        batch.add(*job)
    return batch.objects()
