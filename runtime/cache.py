"""The kernel cache: compiled entry points in memory, and their source and machine code on disk.

Disk layout (root: $TRANSFUSE_CACHE_DIR, default ~/.cache/transfuse):

    kernels/<name>-<key16>/kernel.py       the generated source, written atomically
    kernels/<name>-<key16>/meta.json       key, versions, CPU, source checksum
    kernels/<name>-<key16>/__pycache__/    Numba's own cache (cache=True) of kernel.py
    index/<signature hash>                 the last key seen for a function + signature

The key hashes the generated code without its comments (so a function that only moved
in its file keeps its kernel); the code is determined by the graph's structure, the
signature and the options, together with the CPU target, the versions of transfuse, Numba,
NumPy and Python, and a fingerprint of the compiler's own source files. A new process
that generates the same source imports kernel.py, and Numba loads the machine code from
__pycache__ instead of compiling. An entry whose kernel.py differs from the source we
generate (truncated, foreign, edited) is rewritten; an unreadable Numba cache is wiped
and rebuilt. Nothing here ever raises for a bad entry: it compiles instead.

TRANSFUSE_LOG=cache prints each hit and miss with its reason; TRANSFUSE_DISABLE_CACHE=1
(or jit(..., cache=False)) keeps everything in memory.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import types
from pathlib import Path
from typing import Any

import numba
import numpy as np

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
# The compiler sources whose edits must invalidate cached kernels.
_FINGERPRINT_FILES = [
    _ROOT / "compiler" / "lower_cpu.py", _ROOT / "compiler" / "codegen.py",
    _ROOT / "compiler" / "fusion.py", _ROOT / "compiler" / "mathlib.py",
    _HERE / "cpu_kernels.py", _HERE / "cache.py",
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

    import transfuse

    parts = [
        f"transfuse={transfuse.__version__}", f"numba={numba.__version__}",
        f"numpy={np.__version__}", f"python={platform.python_version()}",
        f"cpu={llvm.get_host_cpu_name()}", f"features={llvm.get_host_cpu_features().flatten()}",
        f"threads={numba.config.NUMBA_NUM_THREADS}",
    ]
    digest = hashlib.sha256()
    for path in _FINGERPRINT_FILES:
        if path.exists():
            digest.update(path.read_bytes())
    parts.append(f"compiler={digest.hexdigest()[:16]}")
    return ";".join(parts)


def program_key(source: str) -> str:
    """The cache key of generated source: comments (user line numbers) do not count."""
    code = code_only(source)
    return hashlib.sha256((target_description() + "\n" + code).encode()).hexdigest()


def code_only(source: str) -> str:
    """Source without comments: two kernels that differ only there are the same kernel."""
    lines = (line.split("#", 1)[0].rstrip() for line in source.splitlines())
    return "\n".join(line for line in lines if line)


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
    key = program_key(source)
    with COMPILE_LOCK:
        kernel = _LOADED.get(key)
        if kernel is not None:
            return kernel
        if disk:
            kernel = _load_from_disk(source, name, key)
        else:
            kernel = LoadedKernel(_exec_module(source, f"_transfuse_kernel_{key[:24]}", None),
                                  "compiled")
        _LOADED[key] = kernel
        return kernel


def _exec_module(source: str, module_name: str, path: Path | None) -> types.ModuleType:
    """Run the source as a module; Numba compiles (or loads) `entry` while it runs."""
    if path is None:
        module = types.ModuleType(module_name)
        module.__file__ = f"<transfuse kernel {module_name}>"
        sys.modules[module_name] = module
        try:
            exec(compile(source, module.__file__, "exec"), module.__dict__)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    # Numba's cached environment re-imports the module by name: it must be registered.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _load_from_disk(source: str, name: str, key: str) -> LoadedKernel:
    try:
        entry_dir = cache_root() / "kernels" / f"{_safe(name)}-{key[:16]}"
        path = entry_dir / "kernel.py"
        status = _ensure_source(entry_dir, path, source, key)
    except OSError as e:  # an unwritable cache: compile in memory
        log(f"miss {name}: cache folder unusable ({e}); compiling in memory")
        module = _exec_module(_without_disk_cache(source), f"_transfuse_kernel_{key[:24]}", None)
        return LoadedKernel(module, "compiled")
    module_name = f"_transfuse_kernel_{key[:24]}"
    try:
        module = _exec_module(source, module_name, path)
    except Exception as e:  # a corrupted Numba cache file: wipe it and compile again
        log(f"miss {name}: Numba's cache for {path.parent.name} is unreadable "
            f"({type(e).__name__}); rebuilding it")
        shutil.rmtree(entry_dir / "__pycache__", ignore_errors=True)
        module = _exec_module(source, module_name, path)
    kernel = LoadedKernel(module, "disk" if status == "ok" else "compiled")
    if kernel.from_disk:
        log(f"disk hit {name}: {entry_dir}")
    elif status == "ok":
        log(f"disk miss {name}: Numba had no machine code for {entry_dir.name}; compiled")
        kernel.origin = "compiled"
    else:
        log(f"disk miss {name}: {status}; compiled and stored in {entry_dir}")
    return kernel


def _ensure_source(entry_dir: Path, path: Path, source: str, key: str) -> str:
    """Write kernel.py unless an identical one is there; say why it was (re)written."""
    if path.exists():
        try:
            existing = path.read_text()
        except (OSError, UnicodeDecodeError):
            existing = None
        if existing is not None and code_only(existing) == code_only(source):
            return "ok"
        status = "corrupted or foreign entry (source differs); rewritten"
        shutil.rmtree(entry_dir / "__pycache__", ignore_errors=True)
    else:
        status = "no entry"
    entry_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, source)
    meta = {"key": key, "target": target_description(),
            "sha256": hashlib.sha256(source.encode()).hexdigest()}
    atomic_write(entry_dir / "meta.json", json.dumps(meta, indent=1))
    return status


def atomic_write(path: Path, text: str) -> None:
    """Write text to path so that readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _without_disk_cache(source: str) -> str:
    return source.replace("cache=True", "cache=False")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:40] or "f"


# ---------------------------------------------------------------------------------------
# Why a function was compiled again: the signature index


def note_signature(qualname: str, signature: Any, key: str) -> str | None:
    """Record key for (function, signature); say why it changed, if it did (disk only)."""
    ident = hashlib.sha256(f"{qualname}\n{signature!r}".encode()).hexdigest()[:32]
    path = cache_root() / "index" / ident
    try:
        old = path.read_text() if path.exists() else None
        if old != key:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, key)
    except OSError:
        return None
    if old is not None and old != key:
        return "changed function (its graph or source differs from the cached one)"
    return None


def clear_memory_cache() -> None:
    """Forget the kernels loaded in this process (the disk cache is left alone)."""
    with COMPILE_LOCK:
        _LOADED.clear()
