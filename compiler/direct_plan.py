"""The plan of a kernel built by the direct back end (compiler/lower_direct.py): what
runtime/direct.py does in Python around the compiled steps. Kept apart from the
translator so that loading a cached kernel imports neither llvmlite nor Numba."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Plan"]


@dataclass
class Plan:
    """The entry's bookkeeping, in the order of its arguments and statements."""

    params: list[tuple[str, str]] = field(default_factory=list)  # (name, 'int' | 'array')
    param_dtypes: dict[str, str] = field(default_factory=dict)  # array param -> dtype
    param_ndims: dict[str, int] = field(default_factory=dict)
    guard: list[tuple[str, list]] = field(default_factory=list)  # (array, extents)
    guard_compiled: bool = False  # the first step checks them (else the Python entry)
    allocs: list[tuple[str, list | None, str | None, str | None]] = field(
        default_factory=list)
    # (name, extents, dtype, the dead buffer it reshapes or None), in the entry's order;
    # extents: ints or names; extents None: another name for the dead buffer, or, with
    # dtype "copy", a copy of that argument
    steps: list[tuple[str, str | None]] = field(default_factory=list)  # (step, extent fn)
    returns: list[tuple[str, bool]] = field(default_factory=list)  # (name, copy)
    returns_tuple: bool = False
    slots: list[str] = field(default_factory=list)  # arrays in the steps' tuple's order
    ints: list[str] = field(default_factory=list)  # int params in `ints` order
    libraries: list[str] = field(default_factory=list)  # loaded RTLD_GLOBAL first (BLAS)
    python_entry: bool = False  # `run_steps` runs every step as a CPython builtin
    # (global, module, export): a function pointer the loader sets from a Cython module's
    # exported C function (scipy.special.cython_special's), by address as Numba binds it
    externals: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a step's status 2 + k: IndexError(k)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        plan = cls(**data)
        plan.guard = [(n, list(e)) for n, e in plan.guard]
        plan.allocs = [(n, None if e is None else list(e), d, r) for n, e, d, r in plan.allocs]
        plan.steps = [tuple(s) for s in plan.steps]
        plan.returns = [tuple(r) for r in plan.returns]
        plan.params = [tuple(p) for p in plan.params]
        plan.externals = [tuple(x) for x in plan.externals]
        return plan


def object_offsets() -> dict[str, int] | None:
    """Byte offsets the compiled steps read arrays at: a tuple's items, an ndarray's data
    pointer and extents pointer (CPython's and NumPy's struct layouts, public and stable
    for years, but checked here on live objects); None where they do not hold, and the
    direct back end is then not used."""
    import ctypes
    import sysconfig

    import numpy as np

    pointer = ctypes.sizeof(ctypes.c_void_p)
    head = 2 * pointer  # ob_refcnt, ob_type
    offsets = {"tuple_items": head + pointer, "array_data": head,
               "array_nd": head + pointer, "array_dims": head + 2 * pointer,
               "array_strides": head + 3 * pointer}
    if sysconfig.get_config_var("Py_GIL_DISABLED") or pointer != 8:
        return None  # a free-threaded build's object head is larger; 32-bit: not checked
    probe = np.arange(6.0).reshape(2, 3)
    items = (probe, probe[0])
    read = ctypes.c_void_p.from_address
    try:
        ok = (read(id(items) + offsets["tuple_items"]).value == id(probe)
              and read(id(probe) + offsets["array_data"]).value == probe.ctypes.data
              and ctypes.c_int32.from_address(id(probe) + offsets["array_nd"]).value == 2
              and list((ctypes.c_int64 * 2).from_address(
                  read(id(probe) + offsets["array_dims"]).value)) == [2, 3]
              and list((ctypes.c_int64 * 2).from_address(
                  read(id(probe) + offsets["array_strides"]).value)) == [24, 8])
    except (ValueError, OSError):
        return None
    return offsets if ok else None


def numpy_openblas() -> str | None:
    """The path of NumPy's bundled OpenBLAS (ILP64, `scipy_cblas_*64_`), which the
    direct back end's matrix products call, as runtime/cpu_kernels.py's do; None when
    NumPy has none (then such kernels go through Numba)."""
    import ctypes
    import glob
    import os

    import numpy as np

    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*.so"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if all(hasattr(library, f"scipy_cblas_{k}{f}64_") for k in "sd" for f in ("gemm", "gemv")):
            return path
    return None
