"""transfuse aot: compile ahead of time, load in a new process with no tracing or compiling."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from transfuse.ir.errors import TransfuseTypeError, TransfuseValueError

import transfuse as tx
from transfuse.aot import format_signature, parse_signature

MODEL = '''
import numpy as np
import transfuse as tx

def loss(w, x, y):
    return np.mean((np.tanh(x @ w) - y) ** 2)

step = tx.grad(loss)

def sgd(w, x, y):
    w -= 0.1 * step(w, x, y)  # writes into the caller's w
    return np.sum(w)
'''

USE = '''
import json, sys
import numpy as np
import transfuse.ir.tracing as tracing

def no_tracing(*a, **k):
    raise AssertionError("traced while loading an aot build")

tracing.trace_to_graph = no_tracing
import transfuse as tx
step = tx.load(sys.argv[1] + "/step")
sgd = tx.load(sys.argv[1] + "/sgd")
rng = np.random.default_rng(0)
w, x, y = (rng.standard_normal(s).astype(np.float32) for s in [(5, 3), (8, 5), (8, 3)])
g = step(w, x, y)
w64 = w.astype(np.float64)
total = sgd(w64, x.astype(np.float64), y.astype(np.float64))
kernels = [e.kernel for f in (step, sgd) for e in f._executables.values()]
print(json.dumps({"g": g.tolist(), "w": w64.tolist(), "total": float(total),
                  "from_disk": [k.from_disk for k in kernels],
                  "origin": [k.origin for k in kernels], "numba": "numba" in sys.modules}))
'''


def test_signature_parsing_roundtrips_and_rejects_bad_text():
    avals = parse_signature("f32[64,5], i64[],bool[0,2]")
    assert [a.shape for a in avals] == [(64, 5), (), (0, 2)]
    assert format_signature(avals) == "f32[64,5],i64[],bool[0,2]"
    for bad in ("f32[64,5", "f16[3]", "f32[3];f32[2]"):
        with pytest.raises((TransfuseValueError, TransfuseTypeError)):
            parse_signature(bad)


def test_aot_build_loads_in_a_new_process_without_tracing_or_compiling(tmp_path):
    (tmp_path / "aot_model.py").write_text(MODEL)
    (tmp_path / "use.py").write_text(USE)
    for name, sig in (("step", "f32[5,3],f32[8,5],f32[8,3]"),
                      ("sgd", "f64[5,3],f64[8,5],f64[8,3]")):
        subprocess.run([sys.executable, "-m", "transfuse.cli", "aot", f"aot_model:{name}",
                        "--signature", sig, "--out", str(tmp_path / "build" / name)],
                       cwd=tmp_path, check=True, capture_output=True, timeout=600)
    proc = subprocess.run([sys.executable, str(tmp_path / "use.py"), str(tmp_path / "build")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    import json
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(result["from_disk"])  # object code loaded: no LLVM compilation
    assert result["origin"] == ["native", "native"] and not result["numba"]

    sys.path.insert(0, str(tmp_path))
    try:
        import aot_model
    finally:
        sys.path.remove(str(tmp_path))
    rng = np.random.default_rng(0)
    w, x, y = (rng.standard_normal(s).astype(np.float32) for s in [(5, 3), (8, 5), (8, 3)])
    np.testing.assert_allclose(result["g"], aot_model.step(w, x, y), rtol=1e-5, atol=1e-6)
    w64 = w.astype(np.float64)
    total = aot_model.sgd(w64, x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(result["w"], w64, rtol=1e-12)  # the write-back happened
    np.testing.assert_allclose(result["total"], total, rtol=1e-12)


def test_loaded_build_rejects_other_signatures_and_missing_builds(tmp_path):
    from transfuse.aot import compile_to

    def double(x):
        return x * 2.0

    # the Numba format (cheaper to build); tests/test_aot_native.py calls object code
    compile_to(double, [parse_signature("f64[3]")], tmp_path / "double", native=False)
    loaded = tx.load(tmp_path / "double")
    np.testing.assert_array_equal(loaded(np.arange(3.0)), [0.0, 2.0, 4.0])
    with pytest.raises(TransfuseTypeError, match=r"f64\[3\]"):
        loaded(np.arange(4.0))
    with pytest.raises(TransfuseValueError, match="not a transfuse aot build"):
        tx.load(tmp_path / "nothing-here")


COPIED = '''
import json, sys
import numpy as np
import transfuse as tx
from transfuse.runtime import cache as kernel_cache

build, read_only = sys.argv[1], sys.argv[2] == "read-only"
if read_only:  # as a build in a folder this user cannot write (the tests may run as root)
    writable = kernel_cache._writable
    kernel_cache._writable = lambda p: not str(p).startswith(build) and writable(p)
f = tx.load(build)
x = np.linspace(0, 1, 12).reshape(4, 3)
y = np.linspace(-1, 1, 15).reshape(3, 5)
out = f(x, y)
print(json.dumps({"compiles": kernel_cache.compile_count(), "out": out.tolist(),
                  "fallbacks": kernel_cache.stats().fallbacks}))
'''


@pytest.mark.parametrize("where", ["copied", "read-only"])
def test_a_copied_build_loads_without_compiling_whatever_numba_cache_dir_says(tmp_path, where):
    # Numba's first choice for its cache is $NUMBA_CACHE_DIR: a build made without it (or
    # copied elsewhere) was compiled again at every load (runtime/cache.py
    # `_numba_caches_beside`). Numba's cache is what an entry without object code (or whose
    # object code does not match the host) loads: --no-native builds that format alone.
    import os
    import shutil

    (tmp_path / "copied_model.py").write_text(
        "import numpy as np\n\ndef f(x, y):\n    return np.tanh(x @ y).sum(axis=0)\n")
    (tmp_path / "use.py").write_text(COPIED)
    subprocess.run([sys.executable, "-m", "transfuse.cli", "aot", "copied_model:f",
                    "--signature", "f64[4,3],f64[3,5]", "--out", str(tmp_path / "build"),
                    "--no-native"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=600)
    shutil.copytree(tmp_path / "build", tmp_path / "moved")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-elsewhere"),
               TRANSFUSE_CACHE_FALLBACK_DIR=str(tmp_path / "fallback"))
    proc = subprocess.run([sys.executable, str(tmp_path / "use.py"), str(tmp_path / "moved"),
                           where], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    import json
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["compiles"] == 0
    assert result["fallbacks"] == (1 if where == "read-only" else 0)
    x = np.linspace(0, 1, 12).reshape(4, 3)
    y = np.linspace(-1, 1, 15).reshape(3, 5)
    np.testing.assert_allclose(result["out"], np.tanh(x @ y).sum(axis=0), rtol=1e-13)


def test_a_build_of_an_older_format_is_refused_not_called_wrongly(tmp_path):
    # Format 1 entry points took their inputs before the constants; format 2 takes
    # constants and sizes first. Calling an old build the new way would pass arrays in the
    # wrong places, so it must be rebuilt.
    import json

    from transfuse.aot import FORMAT, MANIFEST

    (tmp_path / MANIFEST).write_text(json.dumps({"format": 1, "function": "f",
                                                 "target": "", "entries": []}))
    with pytest.raises(TransfuseValueError, match="build it again") as caught:
        tx.load(tmp_path)
    assert f"reads format {FORMAT}" in str(caught.value) and FORMAT == 2
