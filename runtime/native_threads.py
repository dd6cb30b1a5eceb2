"""Parallel regions in aot object code: Numba's OpenMP threading layer, without Numba.

Numba lowers a `prange` loop to calls of eleven functions of its threading layer
(`numba_parallel_for`, the scheduler's, the thread count's), which the jit binds by
address when Numba launches its threads. An extension built by pycc leaves them undefined.
`SHIM_SOURCE` defines them in the extension as calls through a table of pointers
(`transfuse_threading_table`); the loader fills the table from the threading layer's own
extension module (numba/np/ufunc/omppool), loaded by its path — Numba's package is not
imported — after launching its threads as Numba does. Only the OpenMP layer is used: its
launch can be repeated (Numba may launch it again in the same process), and it is the
layer the jit's kernels use on Linux without TBB.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import types
from pathlib import Path

LAYER = "omppool"
TABLE = "transfuse_threading_table"
# The layer's functions, in the table's order (attributes of its module: addresses).
FUNCTIONS = ("parallel_for", "do_scheduling_signed", "do_scheduling_unsigned",
             "allocate_sched", "deallocate_sched", "get_num_threads", "set_num_threads",
             "get_thread_id", "set_parallel_chunksize", "get_parallel_chunksize",
             "get_sched_size")

# The symbols as Numba's IR declares them (intp where it says intp), each calling the
# layer's function with the layer's C signature (numba/np/ufunc/gufunc_scheduler.h,
# omppool.cpp). Hidden: the extension's own calls bind to them, whatever else is loaded.
SHIM_SOURCE = """
#include <stddef.h>
#include <stdint.h>
typedef intptr_t intp;
typedef uintptr_t uintp;
#define HIDDEN __attribute__((visibility("hidden")))
#define LAYER(i, type) ((type)transfuse_threading_table[i])
void *transfuse_threading_table[11];

HIDDEN void numba_parallel_for(void *fn, char **args, size_t *dims, size_t *steps,
                               void *data, intp inner_ndim, intp array_count, intp threads)
{ LAYER(0, void (*)(void *, char **, size_t *, size_t *, void *, size_t, size_t, int))(
      fn, args, dims, steps, data, inner_ndim, array_count, (int)threads); }
HIDDEN intp *do_scheduling_signed(uintp num_dim, intp *starts, intp *ends, uintp threads,
                                  intp *sched, intp debug)
{ LAYER(1, void (*)(uintp, intp *, intp *, uintp, intp *, intp))(
      num_dim, starts, ends, threads, sched, debug); return sched; }
HIDDEN intp *do_scheduling_unsigned(uintp num_dim, intp *starts, intp *ends, uintp threads,
                                    uintp *sched, intp debug)
{ LAYER(2, void (*)(uintp, intp *, intp *, uintp, uintp *, intp))(
      num_dim, starts, ends, threads, sched, debug); return (intp *)sched; }
HIDDEN intp *allocate_sched(uintp size)
{ return LAYER(3, intp *(*)(uintp))(size); }
HIDDEN void deallocate_sched(intp *sched)
{ LAYER(4, void (*)(intp *))(sched); }
HIDDEN intp get_num_threads(void)
{ return LAYER(5, int (*)(void))(); }
HIDDEN void set_num_threads(int count)
{ LAYER(6, void (*)(int))(count); }
HIDDEN intp get_thread_id(void)
{ return LAYER(7, int (*)(void))(); }
HIDDEN void set_parallel_chunksize(uintp size)
{ LAYER(8, uintp (*)(uintp))(size); }
HIDDEN uintp get_parallel_chunksize(void)
{ return LAYER(9, uintp (*)(void))(); }
HIDDEN uintp get_sched_size(uintp threads, uintp num_dim, intp *starts, intp *ends)
{ return LAYER(10, uintp (*)(uintp, uintp, intp *, intp *))(threads, num_dim, starts, ends); }
"""


def layer_path() -> Path | None:
    """The OpenMP threading layer's extension in Numba's installation (not imported)."""
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "np" / "ufunc"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (folder / f"{LAYER}{suffix}").is_file():
            return folder / f"{LAYER}{suffix}"
    return None


_LAYER: list[types.ModuleType] = []  # the loaded, launched layer (at most one)


def _launched_layer() -> types.ModuleType:
    """The threading layer's module, loaded by path and its threads launched (once)."""
    if not _LAYER:
        path = layer_path()
        if path is None:
            raise ImportError("Numba's OpenMP threading layer is not installed")
        name = f"_transfuse_threads.{LAYER}"  # PyInit_omppool; no package is imported
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        module = importlib.util.module_from_spec(
            importlib.util.spec_from_file_location(name, str(path), loader=loader))
        loader.exec_module(module)
        count = thread_count()
        ctypes.CFUNCTYPE(None, ctypes.c_int)(module.launch_threads)(count)
        ctypes.CFUNCTYPE(None, ctypes.c_int)(module.set_num_threads)(count)
        _LAYER.append(module)
    return _LAYER[0]


def thread_count() -> int:
    """Numba's default: $NUMBA_NUM_THREADS, else the CPUs this process may use."""
    env = os.environ.get("NUMBA_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def connect(extension: Path) -> None:
    """Point a loaded extension's table at the launched threading layer."""
    layer = _launched_layer()
    table = (ctypes.c_void_p * len(FUNCTIONS)).in_dll(ctypes.CDLL(str(extension)), TABLE)
    for index, name in enumerate(FUNCTIONS):
        table[index] = getattr(layer, name)
