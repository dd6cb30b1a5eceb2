"""Build a generated kernel into a CPython extension module (an aot build's object code).

`build_native(entry_dir, source)` compiles the entry point of generated Numba source with
Numba's `numba.pycc.CC` into `entry_dir/<module><EXT_SUFFIX>`: machine code for this CPU,
with Numba's C helpers and runtime (NRT) linked in, that Python imports like any extension
and that runs with neither Numba nor llvmlite imported (runtime/native_load.py loads it).
The build needs a C compiler; without one (or for a kernel whose machine code calls a
function only a Numba process can supply) it returns why not, and the aot build keeps
Numba's cache instead.

Parallel regions call Numba's OpenMP threading layer through a shim linked into the
extension (runtime/native_threads.py); where that layer is not installed they are built
serial. The compiled wrapper takes its arguments without the dispatcher's type checks (as
the jit's fast path does): the caller, transfuse.aot's AotFunction, matches shapes and
dtypes first.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import native_threads
from .cache import cache_root, code_only
from .native_load import EXT_SUFFIX, file_digest, host_description, verify_script

# Symbols the extension may leave undefined: the C library, libm and CPython resolve them
# in every process. Any other undefined symbol must come from a library recorded in the
# manifest (preloaded with RTLD_GLOBAL before the import), else the kernel is not native.
_SYSTEM_LIBRARIES = ("libc.so", "libm.so", "libpthread.so", "libgcc_s.so", "libdl.so",
                     "ld-linux", "libpython")


def module_name(source: str) -> str:
    """The extension's name (its PyInit_ symbol), derived from the kernel's code (not its
    comments, which name the sizes and the user's lines)."""
    return f"_transfuse_native_{hashlib.sha256(code_only(source).encode()).hexdigest()[:20]}"


# Extensions built in this process, by module name: signatures whose kernels have the same
# source (batch sizes are arguments) share one build, copied into each entry's folder.
_BUILT: dict[str, tuple[Path, dict]] = {}


def build_native(entry_dir: Path, source: str) -> tuple[dict | None, str]:
    """Compile source's `entry` (for its SIGNATURE; pycc infers the return type) into an
    extension in entry_dir: (its manifest record, '') or (None, why it was not built)."""
    name = module_name(source)
    earlier = _BUILT.get(name)
    if earlier is not None and _copied(earlier[0], earlier[1], entry_dir):
        return json.loads(json.dumps(earlier[1])), ""
    record, why_not = _build(entry_dir, source, name)
    if record is not None:
        _BUILT[name] = (entry_dir, record)
    return record, why_not


def _copied(from_dir: Path, record: dict, entry_dir: Path) -> bool:
    """Copy an earlier entry's extension into entry_dir if it is still the one built."""
    try:
        data = (from_dir / record["file"]).read_bytes()
    except OSError:
        return False
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        return False
    (entry_dir / record["file"]).write_bytes(data)
    return True


def _build(entry_dir: Path, source: str, name: str) -> tuple[dict | None, str]:
    """Compile, check the symbols, store and verify one extension (build_native's work)."""
    if not sys.platform.startswith("linux"):  # the symbol checks below use nm and dladdr
        return None, "object code is built on Linux only"
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return None, "no C compiler (cc) to build object code"
    # prange loops keep their threads through Numba's OpenMP layer (runtime/native_threads.py)
    threads = "parallel=True" in source and native_threads.layer_path() is not None
    with tempfile.TemporaryDirectory(prefix="transfuse-native-") as build_dir:
        try:
            built = _compile_extension(source, name, Path(build_dir), threads)
        except Exception as e:  # noqa: BLE001 - any failure keeps the Numba format
            return None, f"pycc could not build it ({type(e).__name__}: {e})"
        try:
            libraries, missing = _libraries_for(built)
        except (OSError, subprocess.SubprocessError) as e:
            return None, f"its symbols could not be listed ({e})"
        if missing:
            return None, ("its machine code calls functions only a Numba process provides "
                          f"({', '.join(sorted(missing)[:3])})")
        file_name = name + EXT_SUFFIX
        shutil.copyfile(built, entry_dir / file_name)
    record = {"module": name, "file": file_name,
              "libraries": [_library_record(library) for library in libraries],
              "host": host_description(), "sha256": file_digest(entry_dir / file_name)}
    if threads:
        import numba

        record["threads"] = {"layer": native_threads.LAYER, "numba": numba.__version__}
    problem = _verify(entry_dir, record)
    if problem:
        (entry_dir / file_name).unlink()
        return None, problem
    return record, ""


def _compile_extension(source: str, name: str, build_dir: Path, threads: bool) -> Path:
    """pycc's build of the entry point; returns the extension's path."""
    module = _exec_for_pycc(source, name, threads)
    cc = _cached_mixins_cc(name)
    cc.output_dir = str(build_dir)
    cc.target_cpu = "host"  # as the jit's code: the manifest records the CPU it needs
    cc.export("entry", module.SIGNATURE)(module.entry.py_func)
    with _entry_flags(module.entry.targetoptions):
        cc.compile()
    return build_dir / cc.output_file


def _exec_for_pycc(source: str, name: str, threads: bool) -> types.ModuleType:
    """The kernel's module with no disk cache and an entry that the jit does not compile
    (pycc does); without threads, its parallel regions made serial."""
    text = source.replace("cache=True", "cache=False").replace("@njit(SIGNATURE, ", "@njit(")
    if not threads:
        text = text.replace("parallel=True, ", "")
    module = types.ModuleType(name + "_source")
    module.__file__ = f"<transfuse native build {name}>"
    sys.modules[module.__name__] = module
    try:
        exec(compile(text, module.__file__, "exec"), module.__dict__)
    finally:
        sys.modules.pop(module.__name__, None)
    return module


# Numba's C helpers and runtime (NRT), compiled by pycc into every extension, are the same
# C sources each time: about 3.5 s of `cc` per entry. They are compiled once per Numba,
# Python and compiler into the cache folder, with one module name of their own (only the
# name of their init function depends on it; the extension's PyInit calls that name).
_MIXIN_NAME = "_transfuse_native_helpers"


def _cached_mixins_cc(name: str) -> Any:
    """A pycc CC for extension `name` whose C helpers come from the cache when they can."""
    with warnings.catch_warnings():  # pycc is "pending deprecation" (no replacement yet)
        warnings.simplefilter("ignore")
        from numba.pycc import CC

    class CachedMixinsCC(CC):
        def __init__(self, extension_name: str):
            super().__init__(extension_name)
            self._init_function = "pycc_init_" + _MIXIN_NAME

        def _get_mixin_defines(self) -> list:
            return [(k, _MIXIN_NAME if k == "PYCC_MODULE_NAME" else v)
                    for k, v in super()._get_mixin_defines()]

        def _compile_mixins(self, build_dir: str) -> list[str]:
            return _mixin_objects(self, lambda where: self._all_mixins(CC, where), build_dir)

        def _all_mixins(self, base: type, build_dir: str) -> list[str]:
            """Numba's C helpers and the threading layer's shim (native_threads.py)."""
            shim = Path(build_dir) / "transfuse_threads.c"
            shim.write_text(native_threads.SHIM_SOURCE)
            return base._compile_mixins(self, build_dir) + self._toolchain.compile_objects(
                [str(shim)], build_dir, extra_cflags=self._get_extra_cflags())

    return CachedMixinsCC(name)


def _mixin_objects(cc: Any, compile_into: Any, build_dir: str) -> list[str]:
    """The C helpers' object files: from the cache folder, or compiled (and stored)."""
    import numba

    key = hashlib.sha256(repr((numba.__version__, sys.version, cc._get_mixin_defines(),
                               cc._get_extra_cflags(), os.environ.get("CC"),
                               [file_digest(Path(p)) for p in cc._get_mixin_sources()],
                               native_threads.SHIM_SOURCE)
                              ).encode()).hexdigest()[:20]
    folder = cache_root() / "native-helpers" / key
    try:
        listed = json.loads((folder / "objects.json").read_text())
        objects = [str(folder / rel) for rel in listed["objects"]]
        if all(file_digest(Path(o)) == d for o, d in zip(objects, listed["sha256"])):
            return objects
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or spoiled: compiled again below
    objects = compile_into(build_dir)
    staging = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
        rel = [os.path.relpath(o, build_dir) for o in objects]
        for r, o in zip(rel, objects):
            (staging / r).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(o, staging / r)
        (staging / "objects.json").write_text(json.dumps(
            {"objects": rel, "sha256": [file_digest(Path(o)) for o in objects]}))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)  # a concurrent build's folder or ours: both complete
    except OSError:  # a read-only cache folder, or a concurrent build stored them first
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return objects


@contextlib.contextmanager
def _entry_flags(options: dict) -> Iterator[None]:
    """pycc compiles with default Flags, not the options of the entry's `@njit(...)`: with
    Python's error model (x / 0.0 would raise ZeroDivisionError where the generated code is
    written for NumPy's) and without fastmath (a `jit(f, fastmath=True)` kernel's entry lost
    its flags, so its object code computed what the jit's did not). Both are set as the jit
    sets them; the region functions the entry calls are dispatchers and keep their own."""
    import numba.pycc.compiler as pycc_compiler
    from numba.core.cpu import FastMathOptions

    base = pycc_compiler.Flags
    fastmath = FastMathOptions(options.get("fastmath", False))

    class EntryFlags(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.error_model = options.get("error_model", "numpy")
            self.fastmath = fastmath

    pycc_compiler.Flags = EntryFlags
    try:
        yield
    finally:
        pycc_compiler.Flags = base


def _undefined_symbols(path: Path) -> list[str]:
    """The extension's undefined (strong) dynamic symbols, without their version tags."""
    nm = shutil.which("nm")
    if nm is None:
        return []  # the verifying import (RTLD_NOW) still refuses an unresolved symbol
    out = subprocess.run([nm, "-D", "--undefined-only", str(path)], capture_output=True,
                         text=True, check=True).stdout  # CalledProcessError: not native
    # "U name": must be resolved; "w name" (weak) may stay null
    return [parts[-1].split("@")[0] for parts in map(str.split, out.splitlines())
            if len(parts) >= 2 and parts[-2] == "U"]


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _libraries_for(path: Path) -> tuple[list[str], set[str]]:
    """(libraries to preload for the extension's undefined symbols, symbols no library in
    the process's global scope exports). Numba binds some symbols by address only
    (scipy.special's Cython functions, its own helpers): a kernel calling one of those
    cannot be loaded without Numba."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    process = ctypes.CDLL(None)  # dlsym's global scope: what the dynamic linker searches
    executable = os.path.realpath(sys.executable)
    libraries: list[str] = []
    missing: set[str] = set()
    for symbol in _undefined_symbols(path):
        info = _DlInfo()
        if not hasattr(process, symbol) or not libc.dladdr(
                ctypes.cast(getattr(process, symbol), ctypes.c_void_p), ctypes.byref(info)):
            missing.add(symbol)
            continue
        library = os.path.realpath(info.dli_fname.decode())
        if library == executable or any(s in os.path.basename(library)
                                        for s in _SYSTEM_LIBRARIES):
            continue  # resolved in every process
        if library not in libraries:
            libraries.append(library)
    return libraries, missing


def _library_record(library: str) -> dict:
    """How the loader finds a library: by its path under an entry of sys.path when it has
    one (NumPy's `numpy.libs/...`: the build then loads in another environment with the
    same packages), else by its absolute path; its size tells another build of it."""
    size = os.path.getsize(library)
    for folder in sorted({os.path.realpath(p) for p in sys.path if p}, key=len, reverse=True):
        if library.startswith(folder + os.sep):
            return {"path": os.path.relpath(library, folder), "in_sys_path": True, "size": size}
    return {"path": library, "in_sys_path": False, "size": size}


def _verify(entry_dir: Path, record: dict) -> str:
    """'' when a fresh interpreter imports the extension without importing Numba or
    llvmlite (every symbol resolved), else why not."""
    proc = subprocess.run([sys.executable, "-c", verify_script(entry_dir, record)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return f"the built extension does not import ({lines[-1] if lines else proc.returncode})"
    return ""

