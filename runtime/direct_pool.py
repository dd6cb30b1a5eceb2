"""A native pool of threads for the direct back end's parallel steps.

runtime/direct.py's `run_parallel` hands a parallel step's blocks to threads. Through
Python's ThreadPoolExecutor a step costs 70-100 µs beyond its work on this 2-core machine
(a future, a queue, a sleeping thread woken, the GIL taken to call the step): a tenth of
layernorm's 0.75 ms, 40% of a 512-row one. `POOL_SOURCE` is a pool in C whose
workers call the step's function pointer directly, and spin for `SPIN_NS` after a step
before they sleep, so that back-to-back steps find them awake (as OpenMP's workers do).

The library is built once by the C compiler that links the kernels, in a background
thread, into the disk cache (or a temporary folder where the cache is read-only); one
that does not load is built again. Until it is loaded, and where it cannot be built, the
Python pool runs the steps, with the same blocks and the same answers.
`TRANSFUSE_NATIVE_POOL=0` keeps the Python pool.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from .cache import cache_root, log

# How long an idle worker spins before it sleeps: longer than the Python entry between two
# steps of a loop (a few µs), short enough to leave the core soon to BLAS's threads (30 and
# 100 µs ran layernorm's and softmax's steps as fast; session 12, docs/decisions.md).
SPIN_NS = 30_000

# tf_pool_run(step, ints, arrays, n, threads): blocks [0, n) in `threads` contiguous
# ranges (n * k / threads, as run_parallel cuts them), the caller taking the first; the
# first nonzero status in block order, or 0. One step at a time: a caller that finds the
# pool busy (another Python thread's step) runs its blocks itself. After a fork the
# child's pool starts again (the parent's workers are not in it).
POOL_SOURCE = r"""
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#define RELAX() __builtin_ia32_pause()
#else
#define RELAX() ((void)0)
#endif

typedef int64_t (*step_fn)(int64_t *, void *, int64_t, int64_t);
enum { MAX_THREADS = 256 };

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int workers;          /* started; the caller is not one of them */
static uint64_t first_seen;  /* the generation before a new worker's first step */
static _Atomic uint64_t generation;  /* one more for each step handed out */
static _Atomic int64_t pending;      /* workers not done with this step */
static step_fn job_step;
static int64_t *job_ints;
static void *job_arrays;
static int64_t cuts[MAX_THREADS + 1];
static int64_t statuses[MAX_THREADS];

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void run_block(int k) {
    statuses[k] = cuts[k] < cuts[k + 1]
        ? job_step(job_ints, job_arrays, cuts[k], cuts[k + 1]) : 0;
}

/* The next generation: spin for SPIN_NS, then sleep until the caller wakes us. */
static uint64_t next_step(uint64_t seen) {
    uint64_t now;
    int64_t until = now_ns() + SPIN_NS;
    for (int i = 0;; i++) {
        now = atomic_load_explicit(&generation, memory_order_acquire);
        if (now != seen) return now;
        if ((i & 63) == 63 && now_ns() > until) break;
        RELAX();
    }
    pthread_mutex_lock(&sleep_lock);
    while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen)
        pthread_cond_wait(&wake, &sleep_lock);
    pthread_mutex_unlock(&sleep_lock);
    return now;
}

static void *worker(void *arg) {
    int k = (int)(intptr_t)arg;
    uint64_t seen = first_seen;  /* written before pthread_create, which orders it */
    for (;;) {
        seen = next_step(seen);
        run_block(k);
        atomic_fetch_sub_explicit(&pending, 1, memory_order_acq_rel);
    }
    return 0;
}

/* In a forked child (one thread, none of the parent's workers): start again. */
static void start_again_after_fork(void) {
    pthread_mutex_t fresh_mutex = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    busy = fresh_mutex;
    sleep_lock = fresh_mutex;
    wake = fresh_cond;
    workers = 0;
}

static void watch_forks(void) { pthread_atfork(0, 0, start_again_after_fork); }

static void start_workers(int wanted) {
    first_seen = atomic_load_explicit(&generation, memory_order_relaxed);
    while (workers < wanted) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, worker, (void *)(intptr_t)(workers + 1));
        pthread_attr_destroy(&attr);
        if (failed) return;  /* fewer threads: the blocks are cut for those there are */
        workers++;
    }
}

int64_t tf_pool_run(void *step, int64_t *ints, void *arrays, int64_t n, int64_t threads) {
    pthread_once(&once, watch_forks);
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > n) threads = n;
    if (threads <= 1 || pthread_mutex_trylock(&busy) != 0)
        return ((step_fn)step)(ints, arrays, 0, n);
    start_workers((int)threads - 1);
    int active = workers + 1 < threads ? workers + 1 : (int)threads;
    for (int k = 0; k <= workers + 1; k++) cuts[k] = k <= active ? n * k / active : n;
    job_step = (step_fn)step;
    job_ints = ints;
    job_arrays = arrays;
    atomic_store_explicit(&pending, workers, memory_order_relaxed);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_mutex_lock(&sleep_lock);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&sleep_lock);
    run_block(0);
    for (int i = 0; atomic_load_explicit(&pending, memory_order_acquire) > 0; i++) {
        if (i < 100000) RELAX(); else sched_yield();
    }
    int64_t status = 0;
    for (int k = 0; k < active && !status; k++) status = statuses[k];
    pthread_mutex_unlock(&busy);
    return status;
}
"""

_RUN: Callable | None = None  # tf_pool_run, once the library is loaded
_STARTED = False
_DONE = threading.Event()  # the build thread has finished, built or not
_LOCK = threading.Lock()


def enabled() -> bool:
    return os.environ.get("TRANSFUSE_NATIVE_POOL", "1").strip() not in ("0", "false", "off")


def runner() -> Callable | None:
    """tf_pool_run(step address, ints, arrays, n, threads), or None while the library is
    being built, or where it cannot be (the caller uses the Python pool then)."""
    global _STARTED
    if not enabled():
        return None
    if _RUN is not None:
        return _RUN
    with _LOCK:
        if not _STARTED:
            _STARTED = True
            threading.Thread(target=_load_or_build, name="transfuse-pool-build",
                             daemon=True).start()
    return None


def wait_until_ready(timeout: float = 60.0) -> bool:
    """Start the build if needed and wait for it: whether the native pool runs steps."""
    if not enabled():
        return False
    runner()
    _DONE.wait(timeout)
    return _RUN is not None


def _library_name() -> str:
    digest = hashlib.sha256(f"{SPIN_NS}\n{POOL_SOURCE}".encode()).hexdigest()[:16]
    return f"pool-{digest}.so"


def _load_or_build() -> None:
    global _RUN
    try:
        for _ in range(2):  # a library that does not load is built again, once
            path = _built_library()
            if path is None:
                return
            try:
                library = ctypes.CDLL(str(path))
                run = library.tf_pool_run
                break
            except (OSError, AttributeError) as exc:
                log(f"direct pool: {path} does not load ({exc}): building it again")
                path.unlink(missing_ok=True)
        else:
            return
        run.restype = ctypes.c_int64
        run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.py_object, ctypes.c_int64,
                        ctypes.c_int64]
        run.library = library  # kept alive with the function
        _RUN = run
    except OSError as exc:  # no folder to build in: the Python pool stays
        log(f"direct pool: not built: {exc}")
    finally:
        _DONE.set()


def _built_library() -> Path | None:
    """The pool's shared library: found in the disk cache, or built there (or in a
    temporary folder where the cache cannot be written)."""
    folder = cache_root() / "direct"
    path = folder / _library_name()
    if path.exists():
        return path
    from .direct import c_compiler  # here: runtime/direct.py imports this module

    cc = c_compiler()
    if cc is None:
        log("direct pool: no C compiler: the Python pool runs parallel steps")
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return _compile(cc, folder, path)
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="transfuse-pool-"))
        return _compile(cc, folder, folder / _library_name())


def _compile(cc: str, folder: Path, path: Path) -> Path | None:
    fd, source = tempfile.mkstemp(dir=folder, prefix=".pool.", suffix=".c")
    with os.fdopen(fd, "w") as handle:
        handle.write(POOL_SOURCE)
    tmp = f"{source[:-2]}.so"
    try:
        # At the lowest priority: it runs beside the first kernels, which go first
        nice = [shutil.which("nice"), "-n", "19"] if shutil.which("nice") else []
        done = subprocess.run([*nice, cc, "-O2", "-shared", "-fPIC", "-pthread",
                               f"-DSPIN_NS={SPIN_NS}", "-o", tmp, source],
                              capture_output=True, text=True)
        if done.returncode != 0:
            log(f"direct pool: {cc} failed: {done.stderr.strip()[:300]}")
            return None
        os.replace(tmp, path)  # whole or absent, for a process that looks at once
        return path
    finally:
        for leftover in (source, tmp):
            if os.path.exists(leftover):
                os.unlink(leftover)
