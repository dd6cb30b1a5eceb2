"""The kernel cache: compiled entry points in memory, and their source and machine code on disk.

Disk layout (root: $TRANSFUSE_CACHE_DIR, default ~/.cache/transfuse):

    kernels/<name>-<key16>/kernel.py       the generated source, written atomically
    kernels/<name>-<key16>/meta.json       key, target, checksums of kernel.py and of
                                           Numba's files (recorded after each compile)
    kernels/<name>-<key16>/__pycache__/    Numba's own cache (cache=True) of kernel.py
    index/<signature hash>                 the last key seen for a function + signature

The key hashes the generated code without its comments (so a function that only moved
in its file keeps its kernel); the code is determined by the graph's structure, the
signature and the options, together with the CPU target, the versions of transfuse, Numba,
NumPy and Python, and a fingerprint of the compiler's own source files. A new process
that generates the same source imports kernel.py, and Numba loads the machine code from
__pycache__ instead of compiling.

Nothing on disk is trusted: kernel.py must match the checksum in meta.json and our code,
and Numba's files the checksums recorded after the compile that wrote them. A file that
does not (garbage, truncated, empty, foreign, stale) is replaced by compiling again, with
the reason under TRANSFUSE_LOG=cache: a bad entry never raises and is never loaded. A
cache folder we cannot write is still read: its checked entries are copied to a private
writable fallback folder ($TRANSFUSE_CACHE_FALLBACK_DIR, default <tmp>/transfuse-<uid>/..)
where Numba can use them, and what is missing compiles there (in memory if that fails
too). Every write is a temporary file renamed over the target, so concurrent processes
see the old file or the whole new one.

TRANSFUSE_LOG=cache prints each hit and miss with its reason; TRANSFUSE_DISABLE_CACHE=1
(or jit(..., cache=False)) keeps everything in memory. `stats()` counts compiles, disk
hits, repairs and fallbacks in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import tempfile
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent compiles then both compile
    fcntl = None

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
# The sources whose edits must invalidate cached kernels: the lowering, and every runtime
# module (the Numba helpers a kernel calls are linked into its cached machine code, so a
# kernel whose own source is unchanged must still be rebuilt when one of them changes; a
# hand-kept list missed expm.py, linalg_bodies.py and complex_bodies.py).
_FINGERPRINT_FILES = [
    *(_ROOT / "compiler" / f"{name}.py" for name in (
        "lower_cpu", "lower_cpu_kernels", "point_rules", "gemm_plan", "buffer_plan",
        "lowering_graph", "kernel_rules", "codegen",
        # the direct back end's translator and mathlib's operations: what the IR is made of
        "lower_direct", "direct_helpers", "direct_plan", "direct_regions", "step_liveness",
        "mathlib_ops", "mathlib_numba")),
    _ROOT / "compiler" / "fusion.py", _ROOT / "compiler" / "mathlib.py",
    *sorted(_HERE.glob("*.py")),
]

COMPILE_LOCK = threading.RLock()  # first compiles from several threads are serialised


def log(message: str) -> None:
    """Print a cache event when TRANSFUSE_LOG includes 'cache'."""
    if "cache" in os.environ.get("TRANSFUSE_LOG", "").split(","):
        print(f"[transfuse cache] {message}", file=sys.stderr, flush=True)


def disk_enabled(requested: bool) -> bool:
    return requested and os.environ.get("TRANSFUSE_DISABLE_CACHE", "") not in ("1", "true")


def cache_root() -> Path:
    """$TRANSFUSE_CACHE_DIR, else the user's cache folder."""
    env = os.environ.get("TRANSFUSE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transfuse"


@functools.cache
def target_description() -> str:
    """The CPU and software a compiled kernel is valid for."""
    import llvmlite.binding as llvm
    import numba  # here, not at the top: `import transfuse` does not import Numba

    import transfuse

    parts = [
        f"transfuse={transfuse.__version__}", f"numba={numba.__version__}",
        f"numpy={np.__version__}", f"python={platform.python_version()}",
        f"cpu={llvm.get_host_cpu_name()}", f"features={llvm.get_host_cpu_features().flatten()}",
        f"threads={numba.config.NUMBA_NUM_THREADS}",
        # pocketfft's kernels come from rocket-fft (linked into fft kernels' machine code)
        f"rocket-fft={_installed_version('rocket-fft')}",
    ]
    digest = hashlib.sha256()
    for path in _FINGERPRINT_FILES:
        if path.exists():
            digest.update(path.read_bytes())
    parts.append(f"compiler={digest.hexdigest()[:16]}")
    return ";".join(parts)


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def program_key(source: str) -> str:
    """The cache key of generated source: comments (user line numbers) do not count."""
    code = code_only(source)
    return hashlib.sha256((target_description() + "\n" + code).encode()).hexdigest()


def code_only(source: str) -> str:
    """Source without comments: two kernels that differ only there are the same kernel."""
    lines = (line.split("#", 1)[0].rstrip() for line in source.splitlines())
    return "\n".join(line for line in lines if line)


# ---------------------------------------------------------------------------------------
# What the cache has done in this process


@dataclasses.dataclass
class CacheStats:
    """Counts for this process (tests, benchmarks and TRANSFUSE_LOG=cache read them)."""

    compiles: int = 0  # entry points compiled by LLVM (no usable machine code anywhere)
    disk_hits: int = 0  # entry points whose machine code came from a disk cache
    repairs: int = 0  # corrupt, truncated or stale cache files found and replaced
    fallbacks: int = 0  # kernels served from the fallback folder (cache not writable)
    # the direct back end's region functions (runtime/direct_regions.py): compiled into a
    # new region object, or linked from one an earlier kernel compiled
    regions_compiled: int = 0
    regions_reused: int = 0


_STATS = CacheStats()


def stats() -> CacheStats:
    """A copy of this process's counts."""
    return dataclasses.replace(_STATS)


def compile_count() -> int:
    """Entry points LLVM compiled in this process (0 when everything came from disk)."""
    return _STATS.compiles


def count_load(kernel: LoadedKernel) -> None:
    """Count a freshly loaded kernel as a compile or a disk hit."""
    if kernel.from_disk:
        _STATS.disk_hits += 1
    else:
        _STATS.compiles += 1


def repaired(message: str) -> None:
    """Count a damaged cache file found (and about to be replaced), and log why."""
    _STATS.repairs += 1
    log(message)


def count_regions(compiled: int, reused: int) -> None:
    """Count region functions compiled now and linked from earlier kernels' objects."""
    _STATS.regions_compiled += compiled
    _STATS.regions_reused += reused


# ---------------------------------------------------------------------------------------
# Loading generated source as a module


class LoadedKernel:
    """A compiled entry point and how it was obtained."""

    def __init__(self, module: types.ModuleType, origin: str):
        self.module = module
        self.dispatcher = module.entry
        sig = self.dispatcher.signatures[0]
        self.entry_point = self.dispatcher.overloads[sig].entry_point
        stats = self.dispatcher.stats
        self.from_disk = bool(sum(stats.cache_hits.values()))
        self.origin = origin  # 'disk' or 'compiled'
        self.claimed = False  # whether a jitted function has counted it in its CacheInfo


_LOADED: dict[str, LoadedKernel] = {}  # key -> kernel, for the whole process


def load_kernel(source: str, name: str, *, disk: bool) -> LoadedKernel:
    """The compiled entry point of generated source: from memory, disk, or a fresh compile."""
    direct = direct_kernel(source, name, disk)
    if direct is not None:  # LLVM IR of our own: Numba is not imported (runtime/direct.py)
        return direct
    native = native_kernel(source, name) if disk else None
    if native is not None:  # object code: Numba is not imported (runtime/native_cache.py)
        return native
    key = program_key(source)
    with COMPILE_LOCK:
        kernel = _LOADED.get(key)
        if kernel is not None:
            return kernel
        if disk:
            kernel = _load_from_disk(source, name, key)
        else:
            kernel = _load_in_memory(source, key)
        count_load(kernel)
        _LOADED[key] = kernel
        if disk:
            from .native_cache import schedule_build

            schedule_build(source, name, compiled=kernel.origin == "compiled")
        return kernel


_NOT_DIRECT: dict[str, str] = {}  # key -> why the direct back end does not take it


def direct_kernel(source: str, name: str, disk: bool) -> Any:
    """The kernel built by the direct back end (a DirectKernel), or None where it does
    not take the source (or TRANSFUSE_DIRECT=0)."""
    from . import direct
    from .native_cache import native_key

    if direct.mode() == "off":
        return None
    key = "direct:" + native_key(source)
    with COMPILE_LOCK:
        kernel = _LOADED.get(key)
        if kernel is not None:
            return kernel
        if key in _NOT_DIRECT:
            return None
        kernel = direct.load_or_build(source, name, key.removeprefix("direct:"), disk=disk)
        if isinstance(kernel, str):
            log(f"direct: not for {name}: {kernel}")
            _NOT_DIRECT[key] = kernel
            return None
        count_load(kernel)
        _LOADED[key] = kernel
        return kernel


def not_direct_reason(source: str) -> str | None:
    """Why the direct back end did not take this source in this process, if it did not."""
    from .native_cache import native_key

    return _NOT_DIRECT.get("direct:" + native_key(source))


def native_kernel(source: str, name: str) -> Any:
    """The kernel's object code from the disk cache (a NativeKernel), or None."""
    from .native_cache import load, mode, native_key

    if mode() == "off":
        return None
    key = "native:" + native_key(source)
    with COMPILE_LOCK:
        kernel = _LOADED.get(key)
        if kernel is None:
            kernel = load(source, name)
            if kernel is None:
                return None
            count_load(kernel)
            _LOADED[key] = kernel
        return kernel


def _module_name(key: str) -> str:
    return f"_transfuse_kernel_{key[:24]}"


def _load_in_memory(source: str, key: str) -> LoadedKernel:
    module = _exec_module(_without_disk_cache(source), _module_name(key), None)
    return LoadedKernel(module, "compiled")


def _exec_module(source: str, module_name: str, path: Path | None) -> types.ModuleType:
    """Run the source as a module; Numba compiles (or loads) `entry` while it runs.

    With a path, the code is compiled from `source` (the text of that file, as checked by
    the caller) under the file's name, so Numba finds its cache next to it; Python's own
    bytecode cache is not used (a stale or corrupt .pyc could not slip a wrong kernel in).
    """
    module = types.ModuleType(module_name)
    module.__file__ = str(path) if path is not None else f"<transfuse kernel {module_name}>"
    if path is not None:
        _numba_caches_beside(path)
    # Numba's cached environment re-imports the module by name: it must be registered.
    sys.modules[module_name] = module
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


_KERNEL_FILES: set[str] = set()  # kernel.py files whose Numba cache is beside them


def _numba_caches_beside(path: Path) -> None:
    """Have Numba keep (and look for) this kernel's machine code in its own __pycache__.

    Numba's first choice is `$NUMBA_CACHE_DIR` when it is set: an entry built without it
    (or an aot build made elsewhere) would then be compiled again, and its files would be
    out of reach of the checks and recovery here. A locator placed before Numba's own
    answers for transfuse's kernel files only; it needs a writable folder, as Numba's
    in-tree one does (a read-only entry is read through a fallback copy, see below).
    """
    from numba.core import caching

    _KERNEL_FILES.add(os.path.abspath(path))
    locators = caching.CacheImpl._locator_classes
    if not any(getattr(c, "for_transfuse_kernels", False) for c in locators):
        locators.insert(0, _kernel_locator(caching.InTreeCacheLocator))


def _kernel_locator(in_tree: type) -> type:
    """Numba's in-tree locator, for the files in _KERNEL_FILES only."""

    class KernelFileLocator(in_tree):
        for_transfuse_kernels = True

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.abspath(py_file) not in _KERNEL_FILES:
                return None
            return super().from_function(py_func, py_file)

    return KernelFileLocator


def _without_disk_cache(source: str) -> str:
    return source.replace("cache=True", "cache=False")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:40] or "f"


# ---------------------------------------------------------------------------------------
# The disk cache: a writable folder, else a private fallback copy, else memory


def _load_from_disk(source: str, name: str, key: str) -> LoadedKernel:
    entry_dir = cache_root() / "kernels" / f"{_safe(name)}-{key[:16]}"
    if _writable(entry_dir):
        try:
            return _load_entry(entry_dir, source, name, key)
        except OSError as e:  # a full disk, a folder made read-only meanwhile
            log(f"miss {name}: cache folder unusable ({e}); compiling in memory")
            return _load_in_memory(source, key)
    fallback = _fallback_entry(entry_dir)
    if fallback is None:
        log(f"miss {name}: {entry_dir.parent} is not writable and no fallback folder is; "
            "compiling in memory")
        return _load_in_memory(source, key)
    log(f"cache {name}: {entry_dir.parent} is not writable; using {fallback}")
    try:
        kernel = _load_entry(fallback, source, name, key, seed_from=entry_dir)
    except OSError as e:
        log(f"miss {name}: fallback folder unusable ({e}); compiling in memory")
        return _load_in_memory(source, key)
    _STATS.fallbacks += 1
    return kernel


def _load_entry(entry_dir: Path, source: str, name: str, key: str,
                seed_from: Path | None = None) -> LoadedKernel:
    """Load (or compile and store) the kernel of a writable entry folder, repairing it;
    seed_from: a read-only entry to copy checked files from first."""
    with _entry_lock(entry_dir):
        if seed_from is not None:
            _seed_fallback(seed_from, entry_dir, source, key)
        return _load_locked_entry(entry_dir, source, name, key)


@contextlib.contextmanager
def _entry_lock(entry_dir: Path):
    """Hold the entry's .lock file: a second process compiling the same kernel waits, then
    loads what the first stored (instead of compiling too and racing on the files)."""
    if fcntl is None:
        yield
        return
    entry_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(entry_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock (also when the process dies)


def _load_locked_entry(entry_dir: Path, source: str, name: str, key: str) -> LoadedKernel:
    meta = _read_meta(entry_dir, name)
    text, problem = _check_source(entry_dir, meta, source, key)
    if problem is not None:
        if problem != "no entry":
            repaired(f"disk miss {name}: {problem}; rewriting {entry_dir.name}")
        _clear_numba_files(entry_dir)
        meta = _write_source(entry_dir, source, key)
        text = source
    else:
        numba_problem = _check_numba_files(entry_dir, meta)
        if numba_problem is not None:
            repaired(f"disk miss {name}: {numba_problem}; recompiling {entry_dir.name}")
            _clear_numba_files(entry_dir)
    module = _import_entry(entry_dir, text, _module_name(key), name)
    kernel = LoadedKernel(module, "disk")
    if kernel.from_disk:
        log(f"disk hit {name}: {entry_dir}")
        return kernel
    kernel.origin = "compiled"
    _record_numba_files(entry_dir, meta)
    if problem is None:
        log(f"disk miss {name}: Numba had no machine code for {entry_dir.name}; compiled")
    else:
        log(f"disk miss {name}: {problem}; compiled and stored in {entry_dir}")
    return kernel


def _import_entry(entry_dir: Path, text: str, module_name: str, name: str
                  ) -> types.ModuleType:
    """Import kernel.py; a Numba cache file that fails to load is removed and rebuilt."""
    path = entry_dir / "kernel.py"
    try:
        return _exec_module(text, module_name, path)
    except Exception as e:  # Numba could not read its cache (a failed unpickle, say)
        repaired(f"disk miss {name}: Numba's cache for {entry_dir.name} is unreadable "
                  f"({type(e).__name__}); rebuilding it")
        _clear_numba_files(entry_dir)
        return _exec_module(text, module_name, path)


# -- checking an entry -------------------------------------------------------------------

_META_FORMAT = 2
_NUMBA_SUFFIXES = (".nbi", ".nbc")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _read_meta(entry_dir: Path, name: str) -> dict | None:
    """meta.json's content; None when it is missing or unusable (said in the log)."""
    try:
        meta = json.loads((entry_dir / "meta.json").read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError included
        log(f"disk {name}: {entry_dir.name}/meta.json is unreadable ({type(e).__name__})")
        return None
    if not isinstance(meta, dict) or meta.get("format") != _META_FORMAT:
        log(f"disk {name}: {entry_dir.name}/meta.json is corrupt or of another format")
        return None
    return meta


def _check_source(entry_dir: Path, meta: dict | None, source: str, key: str
                  ) -> tuple[str, str | None]:
    """(kernel.py's text, None) when it is the one meta.json describes and has our code;
    else ('', why not)."""
    try:
        data = (entry_dir / "kernel.py").read_bytes()
    except FileNotFoundError:
        return "", "no entry"
    except OSError as e:
        return "", f"kernel.py is unreadable ({e})"
    if meta is None:
        return "", "meta.json is missing or corrupt"
    if meta.get("key") != key or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        return "", "corrupted or foreign entry (kernel.py's checksum differs)"
    if meta.get("target") != target_description():  # in the key too: meta.json is spoiled
        return "", "corrupted or foreign entry (meta.json's target differs)"
    text = data.decode("utf-8")  # the checksum matched: this is text we wrote
    if code_only(text) != code_only(source):
        return "", "corrupted or foreign entry (source differs)"
    return text, None


def _check_numba_files(entry_dir: Path, meta: dict) -> str | None:
    """Why Numba's files in __pycache__ cannot be trusted, or None (also when there are
    none: Numba then compiles)."""
    found = _numba_files(entry_dir)
    if not found:
        return None
    recorded = meta.get("numba")
    if not isinstance(recorded, dict):
        return "Numba's cache files were never recorded as complete"
    if found != recorded:
        return "Numba's cache files differ from the ones recorded (corrupt or stale)"
    return None


def _numba_files(entry_dir: Path) -> dict[str, str]:
    """{file name: sha256} of Numba's index and data files in the entry's __pycache__."""
    pycache = entry_dir / "__pycache__"
    try:
        names = sorted(os.listdir(pycache))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    files = {}
    for file_name in names:
        if file_name.endswith(_NUMBA_SUFFIXES):
            files[file_name] = hashlib.sha256((pycache / file_name).read_bytes()).hexdigest()
    return files


# -- writing an entry --------------------------------------------------------------------


def _write_source(entry_dir: Path, source: str, key: str) -> dict:
    """Store kernel.py and a meta.json that has no Numba files recorded yet."""
    entry_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(entry_dir / "kernel.py", source)
    meta = {"format": _META_FORMAT, "key": key, "target": target_description(),
            "sha256": hashlib.sha256(source.encode()).hexdigest()}
    atomic_write(entry_dir / "meta.json", json.dumps(meta, indent=1))
    return meta


def _ensure_source(entry_dir: Path, path: Path, source: str, key: str) -> str:
    """Store source as entry_dir/kernel.py unless a checked copy is there: 'ok', or why it
    was (re)written. (CUDA modules: numba-cuda keeps no machine code on disk.)"""
    meta = _read_meta(entry_dir, entry_dir.name)
    _, problem = _check_source(entry_dir, meta, source, key)
    if problem is None:
        return "ok"
    _write_source(entry_dir, source, key)
    return problem


def _record_numba_files(entry_dir: Path, meta: dict) -> None:
    """After a compile: note Numba's files in meta.json, so later loads can check them."""
    files = _numba_files(entry_dir)
    if files and meta.get("numba") != files:
        meta = {**meta, "numba": files}
        atomic_write(entry_dir / "meta.json", json.dumps(meta, indent=1))


def _clear_numba_files(entry_dir: Path) -> None:
    """Remove the files in __pycache__ (the folder stays: a concurrent Numba may be
    renaming a new file into it)."""
    pycache = entry_dir / "__pycache__"
    try:
        names = os.listdir(pycache)
    except (FileNotFoundError, NotADirectoryError):
        return
    for file_name in names:
        try:
            (pycache / file_name).unlink()
        except FileNotFoundError:
            pass


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write text (or bytes) to path so that readers see the old file or the whole new one."""
    data = text.encode() if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _writable(entry_dir: Path) -> bool:
    """Whether the entry folder (or, before it exists, kernels/) and its __pycache__ take
    new files: tried, since permission bits say nothing for root or read-only mounts."""
    try:
        if not entry_dir.is_dir():
            entry_dir.parent.mkdir(parents=True, exist_ok=True)
        folders = [entry_dir if entry_dir.is_dir() else entry_dir.parent]
        if (entry_dir / "__pycache__").is_dir():
            folders.append(entry_dir / "__pycache__")
        for folder in folders:
            tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


# -- the fallback folder of a read-only cache --------------------------------------------


def fallback_root() -> Path | None:
    """Where kernels go when the cache folder is not writable: $TRANSFUSE_CACHE_FALLBACK_DIR,
    else a folder private to this user under the system's temporary folder (None if that
    cannot be had safely)."""
    env = os.environ.get("TRANSFUSE_CACHE_FALLBACK_DIR")
    if env:
        return Path(env).expanduser()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    base = Path(tempfile.gettempdir()) / f"transfuse-{uid}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(base)
    except OSError:
        return None
    # Code is loaded from here: refuse a folder another user made or can write into.
    if not os.path.isdir(base) or os.path.islink(base) or st.st_uid != uid or st.st_mode & 0o022:
        return None
    digest = hashlib.sha256(str(cache_root().resolve()).encode()).hexdigest()[:12]
    return base / digest


def _fallback_entry(entry_dir: Path) -> Path | None:
    root = fallback_root()
    if root is None:
        return None
    fallback = root / "kernels" / entry_dir.name
    return fallback if _writable(fallback) else None


def _seed_fallback(entry_dir: Path, fallback: Path, source: str, key: str) -> None:
    """Copy a read-only entry's checked files to the fallback entry, unless it has them."""
    name = entry_dir.name
    meta = _read_meta(fallback, name)
    _, problem = _check_source(fallback, meta, source, key)
    if problem is None and _check_numba_files(fallback, meta) is None and _numba_files(fallback):
        return
    meta = _read_meta(entry_dir, name)
    text, problem = _check_source(entry_dir, meta, source, key)
    if problem is not None:
        return  # nothing usable to copy: the fallback entry compiles
    trusted = _check_numba_files(entry_dir, meta) is None
    files = _numba_files(entry_dir) if trusted else {}
    _clear_numba_files(fallback)
    fallback.mkdir(parents=True, exist_ok=True)
    atomic_write(fallback / "kernel.py", text)
    if files:
        (fallback / "__pycache__").mkdir(exist_ok=True)
        for file_name in files:
            data = (entry_dir / "__pycache__" / file_name).read_bytes()
            atomic_write(fallback / "__pycache__" / file_name, data)
    copied = {k: v for k, v in meta.items() if k != "numba"}
    if files:
        copied["numba"] = files
    atomic_write(fallback / "meta.json", json.dumps(copied, indent=1))


# -- prebuilt kernels (aot builds) -------------------------------------------------------


def import_prebuilt(entry_dir: Path, text: str, module_name: str, recorded: dict | None,
                    ) -> tuple[types.ModuleType, dict | None]:
    """Import an aot entry's kernel.py, whose text the caller checked.

    Numba's files are used only when they match `recorded` (None: an old build that
    recorded none, trusted as before); others are removed and rebuilt. A folder we cannot
    write is read through a copy in the fallback folder. Returns the module and, when they
    changed in entry_dir, Numba's files to record.
    """
    target = entry_dir
    if not _writable(entry_dir):
        root = fallback_root()
        digest = hashlib.sha256(str(entry_dir.resolve()).encode()).hexdigest()[:16]
        target = root / "aot" / digest if root is not None else None
        if target is None or not _writable(target):
            log(f"aot {entry_dir}: not writable and no fallback folder is; compiling in memory")
            return _exec_module(_without_disk_cache(text), module_name, None), None
        _STATS.fallbacks += 1
    with _entry_lock(target):
        if target != entry_dir:
            _copy_prebuilt(entry_dir, target, text, recorded)
        found = _numba_files(target)
        if recorded is not None and found and found != recorded:
            repaired(f"aot {entry_dir}: Numba's cache files differ from the ones recorded "
                      "(corrupt or stale); recompiling")
            _clear_numba_files(target)
        module = _import_entry(target, text, module_name, str(entry_dir))
        after = _numba_files(target)
    return module, (after if target == entry_dir and after != recorded else None)


def _copy_prebuilt(entry_dir: Path, target: Path, text: str, recorded: dict | None) -> None:
    """Seed a fallback copy of a read-only aot entry: kernel.py and trusted Numba files."""
    if (target / "kernel.py").is_file() and (target / "kernel.py").read_text() == text:
        return
    _clear_numba_files(target)
    target.mkdir(parents=True, exist_ok=True)
    atomic_write(target / "kernel.py", text)
    found = _numba_files(entry_dir)
    if recorded is not None and found == recorded:
        (target / "__pycache__").mkdir(exist_ok=True)
        for file_name in found:
            data = (entry_dir / "__pycache__" / file_name).read_bytes()
            atomic_write(target / "__pycache__" / file_name, data)


# ---------------------------------------------------------------------------------------
# Why a function was compiled again: the signature index

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|\('id', \d+\)")


def stable_repr(signature: Any) -> str:
    """repr(signature) without what differs between processes (object addresses)."""
    return _ADDRESS.sub("", repr(signature))


def note_signature(qualname: str, signature: Any, key: str) -> str | None:
    """Record key for (function, signature); say why it changed, if it did (disk only).

    Never raises: an unreadable or garbage index file is rewritten (logged), an unwritable
    one is left alone.
    """
    ident = hashlib.sha256(f"{qualname}\n{stable_repr(signature)}".encode()).hexdigest()[:32]
    path = cache_root() / "index" / ident
    old = _read_index(path)
    if old != key:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, key)
        except OSError as e:
            log(f"index {ident}: not writable ({type(e).__name__}); left as it is")
    if old is not None and old != key:
        return "changed function (its graph or source differs from the cached one)"
    return None


def _read_index(path: Path) -> str | None:
    """The key an index file holds; None when there is none or it is not a key (logged)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        log(f"index {path.name}: unreadable ({type(e).__name__}); ignored")
        return None
    text = data.decode("ascii", errors="replace").strip()
    if not _HEX64.fullmatch(text):
        repaired(f"index {path.name}: corrupt (not a key); rewritten")
        return None
    return text


def clear_memory_cache() -> None:
    """Forget the kernels loaded in this process (the disk cache is left alone)."""
    with COMPILE_LOCK:
        _LOADED.clear()
        _NOT_DIRECT.clear()
