"""The jit's disk cache as object code: a warm process runs kernels without Numba (issue #15).

Next to the Numba entries of runtime/cache.py, the disk cache keeps each kernel that a
process loaded from disk a second time as a CPython extension (runtime/native_build.py):

    native/<name>-<key16>/kernel.py        the generated source the extension is built from
    native/<name>-<key16>/native.json      the build's record (module, libraries, host,
                                           checksum) or why it could not be built
    native/<name>-<key16>/<module>.so      the extension

The key hashes the kernel's code with what its machine code depends on, all read without
importing Numba or llvmlite (package versions from importlib.metadata, the CPU's flags from
/proc/cpuinfo, the compiler's source fingerprint), so a warm process finds the entry before
anything imports Numba; runtime/native_load.py checks host, checksum and libraries again
before the import. Anything that does not match warns (NativeCacheWarning), removes the
record (a later process rebuilds it) and the kernel goes through Numba's cache as before:
never wrong code, never a half-written entry (builds happen in a temporary folder, are
verified by importing them in a fresh interpreter, and are renamed into place; the entry's
.build.lock keeps a second process from building the same kernel).

Builds run in a detached background process so that no call waits for `cc`. When:
TRANSFUSE_NATIVE_CACHE=lazy (the default) builds a kernel the first time a process loads it
from Numba's disk cache (a kernel used in one process only never pays for a build);
=eager also right after the compile that wrote the entry; =0 turns object code off (the
path of a machine without a C compiler, where builds fail once and are recorded as failed).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .cache import _FINGERPRINT_FILES, _safe, atomic_write, cache_root, code_only, log
from .native_load import NativeKernel, _cpu_flags, load_native

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no background builds
    fcntl = None

_FORMAT = 1
_PENDING: list[Any] = []  # subprocess.Popen  # builds this process started (tests wait for them)


class NativeCacheWarning(RuntimeWarning):
    """A cached kernel's object code does not match this process: Numba's cache is used."""


def mode() -> str:
    """'off', 'lazy' or 'eager', from TRANSFUSE_NATIVE_CACHE."""
    value = os.environ.get("TRANSFUSE_NATIVE_CACHE", "lazy").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    return "eager" if value == "eager" else "lazy"


@functools.cache
def light_target() -> str:
    """What a kernel's object code depends on, read without importing Numba or llvmlite."""
    import numpy as np

    import transfuse

    numba_env = sorted((k, v) for k, v in os.environ.items()
                       if k.startswith("NUMBA_") and k != "NUMBA_CACHE_DIR")
    digest = hashlib.sha256()
    for path in _FINGERPRINT_FILES:
        if path.exists():
            digest.update(path.read_bytes())
    parts = [f"transfuse={transfuse.__version__}", f"numpy={np.__version__}",
             *(f"{d}={_version(d)}" for d in ("numba", "llvmlite", "rocket-fft")),
             f"python={sys.version}", f"machine={platform.machine()}",
             f"cpu={sorted(_cpu_flags())}", f"cpus={os.cpu_count()}", f"env={numba_env}",
             f"compiler={digest.hexdigest()[:16]}"]
    return ";".join(parts)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def native_key(source: str) -> str:
    """The object-code cache key of generated source (its comments do not count)."""
    return hashlib.sha256((light_target() + "\n" + code_only(source)).encode()).hexdigest()


def entry_folder(source: str, name: str) -> tuple[Path, str]:
    """(the kernel's folder under native/, its key)."""
    key = native_key(source)
    return cache_root() / "native" / f"{_safe(name)}-{key[:16]}", key


def _read_record(folder: Path, key: str) -> dict | None:
    """native.json when it is a finished build of this key (or a recorded failure)."""
    try:
        meta = json.loads((folder / "native.json").read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("key") != key:
        return None
    return meta


def load(source: str, name: str) -> NativeKernel | None:
    """The kernel's object code, loaded without Numba; None when there is none (or it does
    not match this process: warned, its record removed so that it is built again)."""
    if mode() == "off":
        return None
    folder, key = entry_folder(source, name)
    meta = _read_record(folder, key)
    if meta is None or "record" not in meta:
        return None
    kernel = load_native(folder, meta["record"])
    if isinstance(kernel, str):
        warnings.warn(f"transfuse: the object code cached for {name} ({folder}) is not "
                      f"usable: {kernel}; using Numba's cache instead", NativeCacheWarning,
                      stacklevel=2)
        with contextlib.suppress(OSError):
            (folder / "native.json").unlink()
        return None
    kernel.origin = "disk"
    log(f"native hit {name}: {folder}")
    return kernel


def schedule_build(source: str, name: str, *, compiled: bool) -> None:
    """Start a background build of the kernel's object code unless one exists, is under
    way, or the mode says not now (compiled: the kernel was just compiled, not loaded)."""
    current = mode()
    if current == "off" or fcntl is None or (compiled and current != "eager"):
        return
    try:
        folder, key = entry_folder(source, name)
        if _read_record(folder, key) is not None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if _build_running(folder):
            return
        path = folder / "kernel.py"
        if not path.is_file() or path.read_text() != source:
            atomic_write(path, source)
        import subprocess  # here: a warm process that loads object code starts no build

        env = dict(os.environ, TRANSFUSE_NATIVE_CACHE="0")
        process = subprocess.Popen(
            [sys.executable, "-m", "transfuse.runtime.native_cache", str(folder), key],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env)
    except (OSError, UnicodeDecodeError) as e:  # a read-only cache: no object code
        log(f"native {name}: no background build ({type(e).__name__}: {e})")
        return
    _PENDING[:] = [p for p in _PENDING if p.poll() is None]  # reap finished builders
    _PENDING.append(process)
    log(f"native {name}: building object code in the background ({folder})")


def _build_running(folder: Path) -> bool:
    """Whether another process holds the folder's build lock."""
    fd = os.open(folder / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_builds(timeout: float | None = None) -> None:
    """Wait for the background builds this process started."""
    while _PENDING:
        _PENDING.pop().wait(timeout)


def build_entry(folder: Path, key: str) -> str:
    """Build folder's kernel.py into object code (the background process's work): 'built',
    'done' (it already was), 'busy' (another process is building it) or why it failed."""
    fd = os.open(folder / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "busy"
        if _read_record(folder, key) is not None:
            return "done"
        for stale in folder.glob(".build-*"):  # left by a builder that was killed
            shutil.rmtree(stale, ignore_errors=True)
        try:
            return _build_locked(folder, key)
        except Exception as e:  # noqa: BLE001 - recorded, so that no process retries it
            why = f"the build failed ({type(e).__name__}: {e})"
            atomic_write(folder / "native.json",
                         json.dumps({"format": _FORMAT, "key": key, "failed": why}))
            return why
    finally:
        os.close(fd)


def _build_locked(folder: Path, key: str) -> str:
    from .native_build import build_native

    source = (folder / "kernel.py").read_text()
    if native_key(source) != key:  # another transfuse or a spoiled file: nothing built
        raise ValueError("kernel.py does not have the key's code")
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".build-"))
    try:
        record, why_not = build_native(staging, source)
        meta = {"format": _FORMAT, "key": key}
        if record is not None:
            os.replace(staging / record["file"], folder / record["file"])
            meta["record"] = record
        else:
            meta["failed"] = why_not  # recorded: not tried again for this key
        atomic_write(folder / "native.json", json.dumps(meta, indent=1))
        return "built" if record is not None else why_not
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    print(build_entry(Path(sys.argv[1]), sys.argv[2]))
