"""Load an aot entry's object code (a CPython extension) without Numba or llvmlite.

runtime/native_build.py writes the extension and a record of what it needs: its module
name, the libraries whose symbols it calls (NumPy's OpenBLAS, say), the host it was built
for and its checksum. `load_native` checks all of that before the extension is imported;
anything that does not match is a reason (a string) for the caller to compile the stored
source instead, never code run on a machine or a file it was not built for.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.machinery
import importlib.util
import platform
import sys
import types
from pathlib import Path

EXT_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


class AotFallbackWarning(RuntimeWarning):
    """An aot entry's object code does not match this process: its source is compiled."""


class NativeKernel:
    """An entry point loaded from object code (the interface of cache.LoadedKernel)."""

    def __init__(self, module: types.ModuleType):
        self.module = module
        self.entry_point = module.entry
        self.from_disk = True  # nothing was compiled
        self.origin = "native"
        self.claimed = False


def host_description() -> dict:
    """What the extension's machine code and ABI depend on, read without llvmlite."""
    import numpy as np

    import transfuse

    return {"python": f"{sys.implementation.cache_tag} {platform.python_version()}",
            "machine": f"{platform.system()} {platform.machine()}",
            "numpy": np.__version__, "transfuse": transfuse.__version__,
            "cpu_flags": sorted(_cpu_flags())}


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo); elsewhere the processor's name."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset({f"processor={platform.processor()}"})


def host_mismatch(built_for: dict) -> str | None:
    """Why this process cannot run code built for `built_for`, or None."""
    here = host_description()
    for key in ("python", "machine", "numpy", "transfuse"):
        if built_for.get(key) != here[key]:
            return f"built for {key} {built_for.get(key)}, this is {here[key]}"
    # Code built for a CPU uses only features that CPU has: a CPU with more runs it too.
    lacking = set(built_for.get("cpu_flags", ["?"])) - set(here["cpu_flags"])
    if lacking:
        return f"built for a CPU with features this one lacks ({', '.join(sorted(lacking)[:5])})"
    return None


def preload(libraries: list[str]) -> None:
    """Make the libraries' symbols visible to the extensions loaded after them."""
    for library in libraries:
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)


def find_libraries(records: list[dict]) -> list[str] | str:
    """The paths of the libraries the build recorded (a path under sys.path is looked up
    in this process's sys.path), or why one is not there or is another build of it."""
    found = []
    for record in records:
        if record["in_sys_path"]:
            candidates = [Path(folder or ".") / record["path"] for folder in sys.path]
        else:
            candidates = [Path(record["path"])]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return f"it calls {record['path']}, which is missing"
        if path.stat().st_size != record["size"]:
            return f"it was built against another build of {path}"
        found.append(str(path))
    return found


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_native(entry_dir: Path, record: dict) -> NativeKernel | str:
    """The entry's extension, loaded; or why it cannot be (a checksum, host or library
    that does not match, a record this version does not read)."""
    try:
        return _load_checked(entry_dir, record)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"its manifest record is not one this transfuse reads ({type(e).__name__}: {e})"


def _load_checked(entry_dir: Path, record: dict) -> NativeKernel | str:
    """load_native's checks, in order of cost: host, checksum, libraries, import."""
    problem = host_mismatch(record["host"])
    if problem is not None:
        return problem
    if Path(record["file"]).name != record["file"]:
        raise ValueError(f"{record['file']!r} is not a file name")
    path = entry_dir / record["file"]
    try:
        digest = file_digest(path)
    except OSError as e:
        return f"{path.name} is unreadable ({e.strerror})"
    if digest != record.get("sha256"):
        return f"{path.name} is corrupt (its checksum is not the one the build recorded)"
    libraries = find_libraries(record["libraries"])
    if isinstance(libraries, str):
        return libraries
    threads = record.get("threads")
    if threads is not None:
        problem = _threading_mismatch(threads)
        if problem is not None:
            return problem
    try:
        preload(libraries)
        module = import_extension(path, record["module"])
        if threads is not None:
            from .native_threads import connect

            connect(path)
        return NativeKernel(module)
    except (OSError, ImportError, AttributeError) as e:
        return f"{path.name} does not load ({e})"


def _threading_mismatch(threads: dict) -> str | None:
    """Why the threading layer the parallel regions were built for is not here, or None."""
    import importlib.metadata

    try:
        here = importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:
        here = None
    if here != threads["numba"]:
        return (f"its parallel regions call the threading layer of numba {threads['numba']}, "
                f"this environment has {here or 'no numba'}")
    return None


def import_extension(path: Path, name: str) -> types.ModuleType:
    """Import the extension module at path (its PyInit_ is named after `name`)."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[name] = module
    return module


def verify_script(entry_dir: Path, record: dict) -> str:
    """Python code that imports the extension in a fresh process and fails if that pulls
    Numba or llvmlite in (what the aot build checks before it keeps the extension)."""
    return (
        "import sys\n"
        "from pathlib import Path\n"
        "from transfuse.runtime.native_load import find_libraries, import_extension, preload\n"
        f"libraries = find_libraries({record['libraries']!r})\n"
        "assert not isinstance(libraries, str), libraries\n"
        "preload(libraries)\n"
        f"path = Path({str(entry_dir / record['file'])!r})\n"
        f"import_extension(path, {record['module']!r})\n"
        + ("from transfuse.runtime.native_threads import connect\nconnect(path)\n"
           if record.get("threads") else "") +
        "bad = [m for m in ('numba', 'llvmlite') if m in sys.modules]\n"
        "assert not bad, f'importing the extension imported {bad}'\n")
