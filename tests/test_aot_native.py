"""transfuse aot's object code: loaded without Numba, checked before it runs (issue #15)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from transfuse.runtime.native_load import AotFallbackWarning

import transfuse as tx
from transfuse.aot import MANIFEST, compile_to, parse_signature

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or sys.platform != "linux",
                                reason="object code is built on Linux, with a C compiler")

WAVE = 1 << 18  # points: enough for a parallel region (PARALLEL_MIN_FLOPS)
SIGNATURE = f"f64[48,40],f64[32,48],f64[],i64[5],f32[{WAVE}]"
SMALLER = f"f64[48,40],f64[24,48],f64[],i64[5],f32[{WAVE}]"  # same code (sizes are arguments)


def model(w, x, scale, rows, wave):
    """A GEMM (NumPy's OpenBLAS, preloaded by the loader), elementwise math, reductions,
    a gather (whose index check raises from the object code), a parallel region (Numba's
    OpenMP layer, reached without Numba)."""
    h = np.tanh(x @ w) * scale
    return (h.sum(axis=0) - np.exp(-w * w).mean(axis=0) + w[rows].sum(axis=0), np.max(h),
            np.sin(wave) * np.float32(2.5) - np.cos(wave))


def _inputs() -> tuple:
    rng = np.random.default_rng(15)
    return (rng.standard_normal((48, 40)), rng.standard_normal((32, 48)),
            np.float64(rng.uniform(0.5, 2.0)), rng.integers(-48, 48, 5),
            rng.standard_normal(WAVE).astype(np.float32))


USE = '''
import json, sys, time
import numpy as np
import transfuse as tx
from transfuse.runtime import cache
f = tx.load(sys.argv[1])
w, x, scale, rows, wave = (np.load(sys.argv[2])[k] for k in ("w", "x", "scale", "rows", "wave"))
out, top, waves = f(w, x, scale, rows, wave)
small_out, small_top, _ = f(w, x[:24], scale, rows, wave)
try:
    f(w, x, scale, np.array([0, 1, 48, 2, 3]), wave)  # row 48 of 48
    error = None
except Exception as e:
    error = type(e).__name__
kernels = [e.kernel for e in f._executables.values()]
from transfuse.runtime import native_threads
print(json.dumps({"out": out.tolist(), "top": float(top), "origin": [k.origin for k in kernels],
                  "waves": np.abs(waves - (np.sin(wave) * np.float32(2.5) - np.cos(wave))
                                  ).max().item(),
                  "threads": len(native_threads._LAYER),
                  "small": [small_out.tolist(), float(small_top)],
                  "error": error,
                  "compiles": cache.compile_count(),
                  "imported": [m for m in ("numba", "llvmlite", "transfuse.compiler.lower_cpu")
                               if m in sys.modules]}))
'''


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """One aot build (object code and Numba's cache) shared by the tests."""
    out = tmp_path_factory.mktemp("aot-native") / "model"
    compile_to(model, [parse_signature(SIGNATURE), parse_signature(SMALLER)], out)
    return out


def _copy(build: Path, to: Path) -> Path:
    shutil.copytree(build, to)
    return to


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"/"
            for p in folder.rglob("*")}


def _read_only(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        path.chmod(stat.S_IRUSR | (stat.S_IXUSR if path.is_dir() else 0))
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)


def test_build_records_object_code_for_this_host(build):
    entry, smaller = json.loads((build / MANIFEST).read_text())["entries"]
    native = entry["native"]  # built, not skipped ("not_native" would say why)
    assert smaller["native"]["module"] == native["module"]  # one build, copied
    assert (build / entry["dir"] / native["file"]).is_file()
    assert native["host"]["numpy"] == np.__version__ and native["host"]["cpu_flags"]
    assert native["threads"]["layer"] == "omppool"  # the wave's parallel region
    [blas] = [lib for lib in native["libraries"] if "openblas" in lib["path"]]  # the GEMM's
    assert blas["in_sys_path"] and not Path(blas["path"]).is_absolute()  # numpy.libs/...


def test_read_only_copy_runs_in_a_new_process_without_numba(build, tmp_path):
    moved = _copy(build, tmp_path / "moved")
    before = _contents(moved)
    _read_only(moved)
    np.savez(tmp_path / "in.npz", **dict(zip(("w", "x", "scale", "rows", "wave"), _inputs())))
    (tmp_path / "use.py").write_text(USE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-elsewhere"),
               TRANSFUSE_CACHE_FALLBACK_DIR=str(tmp_path / "fallback"))
    try:
        proc = subprocess.run([sys.executable, str(tmp_path / "use.py"), str(moved),
                               str(tmp_path / "in.npz")], capture_output=True, text=True,
                              timeout=300, env=env)
    finally:
        for path in [moved, *moved.rglob("*")]:
            path.chmod(stat.S_IRWXU)  # let pytest remove it
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["imported"] == [] and result["origin"] == ["native", "native"]
    assert result["compiles"] == 0
    assert result["error"] == "TransfuseIndexError"  # raised by the object code, unpickled
    assert result["threads"] == 1 and result["waves"] < 1e-6  # the parallel region ran
    assert not (tmp_path / "numba-elsewhere").exists() and not (tmp_path / "fallback").exists()
    assert _contents(moved) == before  # nothing written (root ignores the permission bits)
    out, top, _ = model(*_inputs())
    np.testing.assert_allclose(result["out"], out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result["top"], top, rtol=1e-13)
    inputs = list(_inputs())
    inputs[1] = inputs[1][:24]
    small_out, small_top, _ = model(*inputs)
    np.testing.assert_allclose(result["small"][0], small_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result["small"][1], small_top, rtol=1e-13)


def _entry_file(folder: Path) -> tuple[dict, Path]:
    manifest = json.loads((folder / MANIFEST).read_text())
    entry = manifest["entries"][0]
    return manifest, folder / entry["dir"] / entry["native"]["file"]


def test_corrupt_object_code_is_detected_and_the_source_compiled(build, tmp_path):
    moved = _copy(build, tmp_path / "moved")
    _, library = _entry_file(moved)
    data = bytearray(library.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = os.urandom(64)  # inside the machine code
    library.write_bytes(bytes(data))
    with pytest.warns(AotFallbackWarning, match="corrupt"):
        loaded = tx.load(moved)
    corrupt, intact = loaded._executables.values()
    assert corrupt.kernel.origin != "native"  # the stored source, compiled by Numba
    assert intact.kernel.origin == "native"  # the other entry's copy is its own file
    out, top, waves = loaded(*_inputs())
    want_out, want_top, want_waves = model(*_inputs())
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(top, want_top, rtol=1e-13)
    np.testing.assert_allclose(waves, want_waves, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spoil, says", [
    (lambda native: native["host"].update(numpy="1.0.0"), "numpy 1.0.0"),
    (lambda native: native["host"]["cpu_flags"].append("avx1024"), "features this one lacks"),
    (lambda native: native["libraries"][0].update(size=1), "another build of"),
    (lambda native: native["threads"].update(numba="0.1"), "threading layer of numba 0.1"),
    (lambda native: native.update(file="../../elsewhere.so"), "not one this transfuse reads"),
])
def test_another_cpu_or_version_falls_back_with_a_warning(build, tmp_path, spoil, says):
    moved = _copy(build, tmp_path / "moved")
    manifest, _ = _entry_file(moved)
    spoil(manifest["entries"][0]["native"])
    (moved / MANIFEST).write_text(json.dumps(manifest))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = tx.load(moved)
    assert [w.category for w in caught] == [AotFallbackWarning]
    assert says in str(caught[0].message) and SIGNATURE in str(caught[0].message)
    out, top, _ = loaded(*_inputs())
    np.testing.assert_allclose(out, model(*_inputs())[0], rtol=1e-12, atol=1e-12)
