"""The jit's disk cache as object code: a warm process runs without Numba (issue #15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transfuse.compiler.math_names import MATH_NAMES
from transfuse.ir.interpreter import interpret

import transfuse as tx

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or sys.platform != "linux",
                                reason="object code is built on Linux, with a C compiler")

# One jitted program in every process: float32 and float64 elementwise math (mathlib's
# vectorised tanh), a reduction to a 0-d array, a matrix product (NumPy's OpenBLAS).
PROGRAM = '''
import json, sys, warnings
import numpy as np
import transfuse as tx
from transfuse.runtime import cache, native_cache

def f(x, w):
    return np.tanh(x) * np.float32(2.5) + x * x, (w @ w.T).sum(), np.exp(-w * w)

data = np.load(sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    outs = tx.jit(f)(data["x"], data["w"])
np.savez(sys.argv[2], *outs)
race = []
if len(sys.argv) > 3:  # a second builder, started while this process's own one runs
    race = [subprocess.run([sys.executable, "-m", "transfuse.runtime.native_cache",
                            *sys.argv[3:]], capture_output=True, text=True).stdout.strip()
            for subprocess in [__import__("subprocess")]]
numba_loaded = "numba" in sys.modules
native_cache.wait_builds()
print(json.dumps({"numba": numba_loaded, "compiles": cache.compile_count(),
                  "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
                  "race": race}))
'''


def f(x, w):
    return np.tanh(x) * np.float32(2.5) + x * x, (w @ w.T).sum(), np.exp(-w * w)


def _inputs() -> tuple:
    rng = np.random.default_rng(1515)
    return rng.uniform(-3, 3, (3, 70)).astype(np.float32), rng.standard_normal((5, 4))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A cache filled by a process that compiled the program and built its object code."""
    root = tmp_path_factory.mktemp("native_cache")
    x, w = _inputs()
    np.savez(root / "in.npz", x=x, w=w)
    (root / "program.py").write_text(PROGRAM)
    report = _run(root, "eager", "built")
    assert report["compiles"] == 1 and report["numba"]
    return root


def _run(root: Path, mode: str, tag: str, *extra: str) -> dict:
    # the object code of Numba's kernels: the direct back end (which would take this
    # program, tests/test_direct.py) is off
    env = dict(os.environ, TRANSFUSE_CACHE_DIR=str(root / "cache"), TRANSFUSE_NATIVE_CACHE=mode,
               TRANSFUSE_DIRECT="0")
    env.pop("NUMBA_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, str(root / "program.py"), str(root / "in.npz"),
                           str(root / f"{tag}.npz"), *extra], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    outs = np.load(root / f"{tag}.npz")
    _check_against_interpreter([outs[f"arr_{i}"] for i in range(3)])
    return report


def _check_against_interpreter(outs: list) -> None:
    x, w = _inputs()
    graph = tx.jit(f).lower(x, w).graph  # nothing compiled: the reference interpreter runs it
    expected = interpret(graph, [x, w])
    for got, want in zip(outs, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        tol = 1e-5 if got.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _entry(root: Path) -> tuple[Path, dict]:
    (entry,) = (root / "cache" / "native").iterdir()
    return entry, json.loads((entry / "native.json").read_text())


def test_math_names_are_mathlibs():
    from transfuse.compiler.mathlib import MATH_FUNCTIONS

    assert MATH_NAMES == {key: fn.__name__ for key, fn in MATH_FUNCTIONS.items()}


def test_warm_process_runs_object_code_without_numba(folder):
    entry, meta = _entry(folder)
    assert "record" in meta and (entry / meta["record"]["file"]).is_file()
    report = _run(folder, "lazy", "warm")
    assert report == {"numba": False, "compiles": 0, "warnings": [], "race": []}


def test_native_cache_off_keeps_numbas_cache(folder):
    report = _run(folder, "0", "off")
    assert report["numba"] and report["compiles"] == 0 and report["warnings"] == []


def test_corrupt_object_code_falls_back_and_one_racing_build_repairs_it(folder):
    entry, meta = _entry(folder)
    so = entry / meta["record"]["file"]
    data = bytearray(so.read_bytes())
    data[len(data) // 2] ^= 0xFF
    so.write_bytes(bytes(data))
    # The process warns, runs Numba's cache, and starts a rebuild; a second builder races it.
    report = _run(folder, "lazy", "corrupt", str(entry), meta["key"])
    assert report["numba"] and report["compiles"] == 0
    assert len(report["warnings"]) == 1 and "NativeCacheWarning" in report["warnings"][0]
    assert "corrupt" in report["warnings"][0]
    assert report["race"][0] in ("built", "busy", "done")
    entry, repaired = _entry(folder)  # one entry, one valid record, no half-built folder
    assert "record" in repaired
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        [".build.lock", "kernel.py", "native.json", repaired["record"]["file"]])
    assert _run(folder, "lazy", "repaired")["numba"] is False


def test_a_failed_build_is_recorded_once(tmp_path, monkeypatch):
    from transfuse.runtime import native_cache

    source = "# no C compiler on this machine\nSIGNATURE = None\n"
    folder = tmp_path / "entry"
    folder.mkdir()
    (folder / "kernel.py").write_text(source)
    key = native_cache.native_key(source)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert "no C compiler" in native_cache.build_entry(folder, key)
    assert "no C compiler" in json.loads((folder / "native.json").read_text())["failed"]
    assert native_cache.build_entry(folder, key) == "done"  # not tried again
    # A builder whose key is not the code's (another transfuse's) records that, builds nothing.
    assert "key's code" in native_cache.build_entry(folder, "0" * 64)
    record = json.loads((folder / "native.json").read_text())
    assert record["key"] == "0" * 64 and "key's code" in record["failed"]
    assert sorted(p.name for p in folder.iterdir()) == [".build.lock", "kernel.py", "native.json"]
