"""The CUDA runtime: device arrays in and out, kernel launches, loading generated modules.

Everything that touches a GPU lives here (compiler/lower_cuda.py only writes source).
Generated CUDA modules import `launch`, `empty`, `copy`, `error_flag` and `check_errors`
from this module. Inputs: a NumPy array (or scalar) is copied to the device with
`cuda.to_device`; a Numba device array is used as is; anything else with
`__cuda_array_interface__` (CuPy arrays, PyTorch CUDA tensors) is wrapped without a copy
by `cuda.as_cuda_array`. Outputs are Numba device arrays.

Disk cache: the generated source is stored like a CPU kernel's (same key scheme, the
device being part of the source), but numba-cuda's compiled code is not (its kernels are
compiled at their first launch in each process): see docs/cuda.md.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transfuse.ir.errors import (
    CompileError,
    TransfuseIndexError,
    TransfuseLinAlgError,
    TransfuseValueError,
)
from transfuse.ir.tree import TreeDef, tree_unflatten

from . import cache as disk_cache

try:
    import numba_cuda  # noqa: F401  (not the CUDA target numba itself once bundled)
    from numba import cuda

    from .cuda_kernels import (
        INDEX_ERROR,
        NEGATIVE_POWER,
        NOT_POSITIVE_DEFINITE,
        SIMULATOR,
        SINGULAR,
    )
except ImportError as e:  # pragma: no cover - depends on the installation
    cuda = None
    _IMPORT_ERROR: ImportError | None = e
    SIMULATOR = False
else:
    _IMPORT_ERROR = None

# Launch shape: threads per block and a cap on blocks (the grid-stride loop covers the
# rest). The simulator runs every thread as a Python thread: small blocks and few of them
# keep it fast, and make tests exercise the grid-stride loop.
THREADS, MAX_BLOCKS = (16, 2) if SIMULATOR else (256, 65535)
# Rows reduced by a block of threads: (threads per block, shortest such row); the
# simulator uses small blocks so that tests exercise the strategy on tiny rows.
ROW_BLOCK = (8, 8) if SIMULATOR else (256, 1024)


def require_cuda() -> None:
    """Raise a CompileError unless numba-cuda can be imported."""
    if cuda is None:
        raise CompileError(
            "jit(device='cuda') needs numba-cuda: pip install 'transfuse[cuda]' "
            f"(or 'numba-cuda[cu13]'); importing it failed: {_IMPORT_ERROR}")


# ---------------------------------------------------------------------------------------
# Helpers the generated host entry calls


def launch(kernel: Any, total: int, *args: Any) -> None:
    """Launch kernel over `total` work items (a grid-stride loop inside the kernel)."""
    if total <= 0:
        return
    threads = min(THREADS, total)
    blocks = min(-(-total // threads), MAX_BLOCKS)
    kernel[blocks, threads](*args)


def launch_blocks(kernel: Any, total: int, threads: int, *args: Any) -> None:
    """Launch kernel with one block of `threads` threads per work item (a row it reduces)."""
    if total <= 0:
        return
    kernel[min(total, MAX_BLOCKS), threads](*args)


def empty(shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised device array."""
    return cuda.device_array(shape, dtype)


def copy(array: Any) -> Any:
    """A device-to-device copy."""
    out = cuda.device_array(array.shape, array.dtype)
    if array.size:
        out.copy_to_device(array)
    return out


def error_flag() -> Any:
    """A one-element int32 device array, zero: kernels set it when an index is bad."""
    return cuda.to_device(np.zeros(1, np.int32))


def check_errors(err: Any) -> None:
    """Raise what a kernel reported through its error flag (this waits for the kernels)."""
    code = int(err.copy_to_host()[0])
    if code == INDEX_ERROR:
        raise TransfuseIndexError(
            "index out of bounds in a gather or scatter (np.take semantics), found on the "
            "device by a jit(device='cuda') kernel")
    if code == SINGULAR:
        raise TransfuseLinAlgError("Singular matrix (found on the device by a "
                                   "jit(device='cuda') kernel)")
    if code == NOT_POSITIVE_DEFINITE:
        raise TransfuseLinAlgError("Matrix is not positive definite (found on the device by a "
                                   "jit(device='cuda') kernel)")
    if code == NEGATIVE_POWER:
        raise TransfuseValueError(
            "Integers to negative integer powers are not allowed (found on the device by "
            "a jit(device='cuda') kernel)")


# ---------------------------------------------------------------------------------------
# Arguments


def is_device_array(x: Any) -> bool:
    """Whether x lives on the device: `__cuda_array_interface__`, or a Numba device array
    (the simulator's have no interface)."""
    return hasattr(x, "__cuda_array_interface__") or _is_simulated(x)


def _is_simulated(x: Any) -> bool:
    return SIMULATOR and type(x).__name__ == "FakeCUDAArray"


def _is_numba_array(x: Any) -> bool:
    if SIMULATOR:
        return _is_simulated(x)
    from numba.cuda.cudadrv.devicearray import is_cuda_ndarray

    return cuda is not None and is_cuda_ndarray(x)


def to_device(x: Any, dtype: np.dtype) -> Any:
    """x as a C-contiguous device array of dtype (device inputs are not copied)."""
    if _is_numba_array(x) or hasattr(x, "__cuda_array_interface__"):
        dev = x if _is_numba_array(x) else cuda.as_cuda_array(x)
        if np.dtype(dev.dtype) != dtype:
            raise TransfuseValueError(f"jit(device='cuda'): a device array of dtype "
                                      f"{dev.dtype} was passed where {dtype} was compiled")
        if dev.size and not dev.is_c_contiguous():
            raise TransfuseValueError("jit(device='cuda'): device arrays must be "
                                      "C-contiguous (copy it first)")
        return dev
    host = np.asarray(x, dtype=dtype)
    if not host.flags.c_contiguous:  # (np.ascontiguousarray would make 0-d arrays 1-d)
        host = host.copy(order="C")
    return cuda.to_device(host)


def device_signature(x: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a device array, read from `__cuda_array_interface__` when it has
    one (a PyTorch tensor's own dtype is not a NumPy dtype)."""
    iface = getattr(x, "__cuda_array_interface__", None)
    if iface is not None:
        return tuple(int(d) for d in iface["shape"]), np.dtype(iface["typestr"])
    return tuple(x.shape), np.dtype(x.dtype)


def host_stand_in(x: Any) -> Any:
    """A NumPy array of a device array's shape and dtype, for tracing (values unused)."""
    if is_device_array(x):
        return np.zeros(*device_signature(x))
    return x


def write_back(originals: Sequence[Any], mutated: Sequence[int], news: Sequence[Any]) -> None:
    """Mutated inputs get the new values: device arrays in place, NumPy arrays copied back."""
    for i, new in zip(mutated, news):
        target = originals[i]
        if isinstance(target, np.generic):
            continue  # immutable, as NumPy's `x += 1` rebinds it
        if isinstance(target, np.ndarray):
            if not target.flags.writeable:
                raise TransfuseValueError(f"jit: argument {i} is read-only; the function "
                                          "writes into it")
            np.copyto(target, new.copy_to_host(), casting="unsafe")
        else:
            dev = target if _is_numba_array(target) else cuda.as_cuda_array(target)
            if new.size:
                dev.copy_to_device(new)


# ---------------------------------------------------------------------------------------
# Loading generated modules and running them


class CudaModule:
    """A loaded generated module and how it was obtained (like cache.LoadedKernel)."""

    def __init__(self, module: types.ModuleType, origin: str):
        self.module = module
        self.entry = module.entry
        self.origin = origin  # 'compiled': numba-cuda compiles at the first launch
        self.claimed = False


_LOADED: dict[str, CudaModule] = {}


def load_program(source: str, name: str, *, disk: bool) -> CudaModule:
    """The generated module for source: from memory, or its source stored on disk."""
    require_cuda()
    key = disk_cache.program_key(source)
    with disk_cache.COMPILE_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        module_name = f"_transfuse_cuda_{key[:24]}"
        module = None
        if disk:
            try:
                entry_dir = disk_cache.cache_root() / "kernels" / f"cuda-{name}-{key[:16]}"
                path = entry_dir / "kernel.py"
                status = disk_cache._ensure_source(entry_dir, path, source, key)
                disk_cache.log(f"cuda source {name}: {status} ({entry_dir})")
                module = _exec_generated(source, module_name, path)
            except OSError as e:  # an unwritable cache: keep it in memory
                disk_cache.log(f"miss {name}: cache folder unusable ({e}); in memory")
        if module is None:
            module = _exec_generated(source, module_name, None)
        loaded = _LOADED[key] = CudaModule(module, "compiled")
        return loaded


def _exec_generated(source: str, module_name: str, path) -> types.ModuleType:
    """Run a generated module; a helper it imports that does not exist is a CompileError
    (a CUDA lowering rule named it), raised here, before anything is launched."""
    try:
        return disk_cache._exec_module(source, module_name, path)
    except ImportError as e:
        raise CompileError(f"the CUDA backend generated code that imports a missing name: "
                           f"{e} (a rule in compiler/lower_cuda.py calls a helper that "
                           "transfuse.runtime.cuda_kernels does not define)") from e


@dataclass(eq=False)
class CudaExecutable:
    """One compiled signature for the device: host entry, constants, outputs' structure."""

    kernel: CudaModule
    consts: tuple  # host arrays, copied to the device at the first call
    out_tree: TreeDef
    num_outputs: int
    mutated_inputs: tuple[int, ...]
    has_rng: bool
    input_dtypes: tuple
    source: str
    dyn_index: tuple = ()
    guards: list = field(default_factory=list)
    rng_streams: int = 1  # how many streams of the global random state one call draws
    _device_consts: tuple | None = None

    def run(self, args: Sequence[Any], key: Any = None) -> list:
        """The entry's outputs (device arrays) as a list."""
        dev = [to_device(a, dt) for a, dt in zip(args, self.input_dtypes)]
        if self.has_rng:
            dev.append(cuda.to_device(np.asarray(key, dtype=np.uint64)))
        if self._device_consts is None:
            self._device_consts = tuple(cuda.to_device(c) for c in self.consts)
        out = self.kernel.entry(*dev, *self._device_consts)
        return [out] if self.num_outputs == 1 else list(out)

    def finish(self, outs: list) -> Any:
        return tree_unflatten(self.out_tree, outs)


def kernel_ptx(module: types.ModuleType, infos: Sequence[Any], cc: tuple[int, int] = (7, 5)
               ) -> dict[str, str]:
    """PTX of every kernel of a loaded generated module, for compute capability cc.

    Compiles with numba-cuda's NVVM only and launches nothing, so it works without a GPU:
    numba-cuda compiles the device functions a kernel calls for the *current* device's
    compute capability, so when no device is present a stand-in reporting cc is put in
    its place for the duration (a verification path: tests and `transfuse` checks).
    """
    from numba import types as nt
    from numba.cuda import dispatcher
    from numba.np.numpy_support import from_dtype

    out = {}
    real = dispatcher.get_current_device
    with disk_cache.COMPILE_LOCK:
        if not cuda.is_available():
            dispatcher.get_current_device = lambda: types.SimpleNamespace(
                compute_capability=cc)
        try:
            for info in infos:
                sig = tuple(nt.Array(nt.int32, 1, "C") if aval is None else
                            nt.Array(from_dtype(aval.dtype), aval.ndim, "C")
                            for aval in info.param_avals)
                ptx, _ = cuda.compile_ptx(getattr(module, info.name).py_func, sig, cc=cc)
                out[info.name] = ptx
        finally:
            dispatcher.get_current_device = real
    return out
