"""Ahead-of-time compilation: `transfuse aot MODULE:FUNCTION --signature ... --out DIR`.

The command traces, transforms and compiles a function for the given signatures and
writes, per signature, the generated Numba source, the entry point built as object code
in a CPython extension (runtime/native_build.py; needs a C compiler) or, where it cannot
be, Numba's machine code (its own cache, next to the source), the graph's constants and a
manifest.
`transfuse.load(DIR)` returns a callable that dispatches on its arguments' shapes and
dtypes to those kernels: no tracing, no compilation and no Numba import while the object
code matches this CPU and these versions (runtime/native_load.py); otherwise it warns
(AotFallbackWarning) and runs the stored source through Numba, which compiles it unless
its own cache matches.

    transfuse aot mypkg.model:step --signature "f32[64,784],f32[784,10]" --out build/step
    step = transfuse.load("build/step"); step(x, w)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transfuse.ir.core import Aval, check_dtype, short_dtype
from transfuse.ir.errors import (
    TransfuseTypeError,
    TransfuseValueError,
    indexing_sites,
    traced_index_error,
)
from transfuse.ir.primitives import random_streams
from transfuse.runtime import cache as kernel_cache
from transfuse.runtime.executable import Executable, as_kernel_arg
from transfuse.runtime.native_load import AotFallbackWarning, load_native

from ._functionalize import check_no_aliasing, write_back
from ._jit import Jitted, jit
from .random import next_key

MANIFEST = "transfuse-aot.json"
# 2: the entry point takes constants and sizes before the inputs (compiler/size_params.py);
# a format-1 build would be called with its arguments in the wrong order, so it is refused.
FORMAT = 2
_DTYPES = {"f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64",
           "bool": "bool", "b": "bool"}
_ARRAY = re.compile(r"\s*([a-z0-9]+)\[([0-9,\s]*)\]\s*")


def parse_signature(text: str) -> list[Aval]:
    """'f32[64,5],i64[]' -> the avals of the arguments (one array per argument)."""
    avals, pos = [], 0
    while pos < len(text):
        match = _ARRAY.match(text, pos)
        if match is None:
            raise TransfuseValueError(
                f"bad signature {text!r} at position {pos}: expected arrays such as "
                "'f32[64,5],i64[]' (dtypes f32, f64, i32, i64, bool)")
        dtype = _DTYPES.get(match.group(1), match.group(1))
        dims = [d for d in match.group(2).replace(" ", "").split(",") if d]
        avals.append(Aval(tuple(int(d) for d in dims), check_dtype(dtype)))
        pos = match.end()
        if pos < len(text):
            if text[pos] != ",":
                raise TransfuseValueError(f"bad signature {text!r}: expected ',' at {pos}")
            pos += 1
    return avals


def format_signature(avals: Sequence[Aval]) -> str:
    return ",".join(f"{short_dtype(a.dtype)}[{','.join(map(str, a.shape))}]" for a in avals)


def compile_to(func: Callable, signatures: Sequence[Sequence[Aval]], out_dir: str | Path,
               native: bool = True) -> Path:
    """Compile func for each signature into out_dir (see the module docstring); native:
    also build object code that loads without Numba (an entry records why it has none)."""
    state = getattr(func, "__transfuse_jit__", None) or jit(func).__transfuse_jit__
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, avals in enumerate(signatures):
        entries.append(_compile_one(state, list(avals), out, index, native))
    manifest = {"format": FORMAT, "function": getattr(func, "__qualname__", "f"),
                "target": kernel_cache.target_description(), "entries": entries}
    kernel_cache.atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
    return out


def _compile_one(state: Jitted, avals: list[Aval], out: Path, index: int, native: bool,
                 ) -> dict:
    args = [np.zeros(a.shape, a.dtype) for a in avals]
    # The same pipeline a jit call runs for these arguments (trace, prepare, fuse, lower).
    graph, _, program, out_tree = state._lower(tuple(args), {}, set())
    entry_dir = out / f"kernel{index}"
    entry_dir.mkdir(exist_ok=True)
    kernel_cache.atomic_write(entry_dir / "kernel.py", program.source)
    np.savez(entry_dir / "consts.npz", *program.const_args)
    info = {"out_tree": out_tree, "num_outputs": len(graph.outputs),
            "mutated_inputs": tuple(graph.mutated_inputs), "has_rng": graph.has_rng,
            "rng_streams": random_streams(graph),
            "size_args": tuple(program.size_args),  # the entry's n0, n1, ... (sizes)
            # the user's lines of the gathers and scatters, for an index out of range
            "index_sites": indexing_sites(graph)}
    (entry_dir / "info.pkl").write_bytes(pickle.dumps(info))
    # Checksums: load() never runs a kernel, or unpickles a file, that the build did not write.
    entry = {"dir": entry_dir.name, "signature": format_signature(avals),
             "files": _checksums(entry_dir)}
    if native:
        from transfuse.runtime.native_build import build_native

        record, why_not = build_native(entry_dir, program.source)
        if record is not None:
            # No Numba cache beside it: where the object code does not load (another CPU
            # or version), Numba's machine code would not either; the source compiles.
            entry["native"], entry["numba"] = record, {}
            return entry
        entry["not_native"] = why_not
        kernel_cache.log(f"aot {entry_dir}: no object code ({why_not})")
    _import_kernel(entry_dir)  # Numba compiles here and caches the machine code beside it
    entry["numba"] = kernel_cache._numba_files(entry_dir)
    return entry


_CHECKED_FILES = ("kernel.py", "consts.npz", "info.pkl")


def _checksums(entry_dir: Path) -> dict[str, str]:
    return {name: hashlib.sha256((entry_dir / name).read_bytes()).hexdigest()
            for name in _CHECKED_FILES}


def _check_files(entry_dir: Path, recorded: dict[str, str]) -> None:
    """Raise if a file of the entry is not the one the build wrote (the build does not
    carry the program, so it cannot be recompiled from here)."""
    for name in _CHECKED_FILES:
        try:
            digest = hashlib.sha256((entry_dir / name).read_bytes()).hexdigest()
        except OSError as e:
            digest = f"unreadable ({e})"
        if digest != recorded.get(name):
            raise TransfuseValueError(
                f"{entry_dir / name} is corrupt or missing (not the file the aot build "
                "wrote); build it again with `transfuse aot`")


def _import_kernel(entry_dir: Path, entry: dict | None = None) -> kernel_cache.LoadedKernel:
    """The entry's compiled kernel; entry (its manifest record) has the files' checksums,
    and Numba's files (updated in it when they were rebuilt)."""
    if entry is not None and "files" in entry:
        _check_files(entry_dir, entry["files"])
    source = (entry_dir / "kernel.py").read_text()
    # Numba's cached code re-imports its module by name: the name must be the same when
    # the build is made and when it is loaded, so it is derived from the source.
    module_name = f"_transfuse_aot_{hashlib.sha256(source.encode()).hexdigest()[:20]}"
    if module_name in sys.modules:
        return kernel_cache.LoadedKernel(sys.modules[module_name], "memory")
    recorded = entry.get("numba") if entry is not None else None
    module, rebuilt = kernel_cache.import_prebuilt(entry_dir, source, module_name, recorded)
    if rebuilt is not None and entry is not None:
        entry["numba"] = rebuilt
    kernel = kernel_cache.LoadedKernel(module, "disk")
    kernel_cache.count_load(kernel)
    return kernel


class AotFunction:
    """A function loaded from an ahead-of-time build: call it with matching arrays."""

    def __init__(self, path: Path, name: str, executables: dict[tuple, Executable],
                 signatures: list[str], index_sites: dict[tuple, tuple] | None = None):
        self.path = path
        self.__name__ = name
        self._executables = executables
        self.signatures = signatures
        self._index_sites = index_sites or {}

    def __repr__(self) -> str:
        return f"<transfuse.load of {self.__name__}: {', '.join(self.signatures)}>"

    def __call__(self, *args: Any) -> Any:
        arrays = [_native(np.asarray(a)) for a in args]
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        exe = self._executables.get(key)
        if exe is None:
            got = format_signature([Aval(a.shape, a.dtype) for a in arrays])
            raise TransfuseTypeError(
                f"{self.__name__} was compiled ahead of time for {self.signatures}, not for "
                f"({got}); compile that signature too (transfuse aot --signature ...)")
        kernel_args = [as_kernel_arg(a, a.dtype) for a in arrays]
        if exe.mutated_inputs:
            check_no_aliasing(kernel_args, exe.mutated_inputs)
        try:
            outs = exe.run(kernel_args, next_key(exe.rng_streams) if exe.has_rng else None)
        except IndexError as error:  # a traced index out of range, found by the kernel
            raise traced_index_error(self._index_sites.get(key, ())) from error
        if exe.mutated_inputs:
            n_user = len(outs) - len(exe.mutated_inputs)
            write_back(list(args), exe.mutated_inputs, outs[n_user:])
            outs = outs[:n_user]
        return exe.finish(outs)


def load(path: str | Path) -> AotFunction:
    """Load an ahead-of-time build made by `transfuse aot` (or `compile_to`)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise TransfuseValueError(f"{path} is not a transfuse aot build ({e})") from None
    if manifest.get("format") != FORMAT:
        raise TransfuseValueError(
            f"{path}: aot format {manifest.get('format')!r}, this transfuse reads format "
            f"{FORMAT}; build it again with `transfuse aot`")
    original = json.loads(json.dumps(manifest))
    executables, signatures, index_sites = {}, [], {}
    for entry in manifest["entries"]:
        entry_dir = path / entry["dir"]
        kernel = _load_entry(path, manifest, entry)
        consts = np.load(entry_dir / "consts.npz")
        info = pickle.loads((entry_dir / "info.pkl").read_bytes())
        avals = parse_signature(entry["signature"])
        arrays = tuple(consts[f"arr_{k}"] for k in range(len(consts.files)))
        exe = Executable(kernel, (*arrays, *info.get("size_args", ())),
                         info["out_tree"], info["num_outputs"], info["mutated_inputs"],
                         info["has_rng"], tuple(a.dtype for a in avals),
                         (entry_dir / "kernel.py").read_text(),
                         rng_streams=info.get("rng_streams", 1))
        executables[tuple((a.shape, a.dtype.str) for a in avals)] = exe
        index_sites[tuple((a.shape, a.dtype.str) for a in avals)] = info.get("index_sites", ())
        signatures.append(entry["signature"])
    if manifest != original:  # Numba's files were rebuilt: record them
        try:
            kernel_cache.atomic_write(path / MANIFEST, json.dumps(manifest, indent=1))
        except OSError:
            pass  # a read-only build: it is checked (and rebuilt) again next time
    return AotFunction(path, manifest["function"], executables, signatures, index_sites)


def _load_entry(path: Path, manifest: dict, entry: dict) -> Any:
    """The entry's kernel: its object code when it matches this process (Numba is not
    imported), else the stored source through Numba, with a warning saying why."""
    entry_dir = path / entry["dir"]
    if "files" in entry:
        _check_files(entry_dir, entry["files"])  # consts.npz and info.pkl are read either way
    if "native" in entry:
        kernel = load_native(entry_dir, entry["native"])
        if not isinstance(kernel, str):
            kernel_cache.count_load(kernel)
            return kernel
        warnings.warn(f"transfuse.load({str(path)!r}), {entry['signature']}: {kernel}; "
                      "compiling its stored source with Numba instead", AotFallbackWarning,
                      stacklevel=3)
    elif "not_native" in entry:
        kernel_cache.log(f"aot {entry_dir}: no object code ({entry['not_native']})")
    if manifest["target"] != kernel_cache.target_description():
        kernel_cache.log(f"aot {path}: built for another CPU or versions; Numba recompiles")
    return _import_kernel(entry_dir, entry)


def _native(array: np.ndarray) -> np.ndarray:
    """array in native byte order (a big-endian array is converted, as jit does)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _resolve(target: str) -> Callable:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise TransfuseValueError(f"expected MODULE:FUNCTION, got {target!r}")
    sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv: list[str] | None = None) -> int:
    """`transfuse aot`: compile MODULE:FUNCTION for the given signatures into a folder."""
    parser = argparse.ArgumentParser(
        prog="transfuse aot", description="Compile a function ahead of time.")
    parser.add_argument("target", help="MODULE:FUNCTION (a plain or jitted function)")
    parser.add_argument("--signature", action="append", required=True,
                        help="argument arrays, e.g. 'f32[64,5],f32[5]'; repeat for more")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-native", action="store_true",
                        help="keep Numba's cache only (no object code: loading imports Numba)")
    args = parser.parse_args(argv)
    func = _resolve(args.target)
    signatures = [parse_signature(s) for s in args.signature]
    out = compile_to(func, signatures, args.out, native=not args.no_native)
    entries = json.loads((out / MANIFEST).read_text())["entries"]
    for s, entry in zip(args.signature, entries):
        how = ("object code" if "native" in entry
               else f"Numba's cache only: {entry.get('not_native', 'as asked')}")
        print(f"compiled {args.target} for ({s}): {how}")
    print(f"wrote {out}; load it with transfuse.load({str(out)!r})")
    return 0
