"""Issue #12 (items 4, 5): the same kernels in every process, and a disk cache that survives
any bytes in any of its files, a read-only folder, and a second process.

Every test here runs transfuse in fresh subprocesses (the properties are about processes),
on small programs, sharing one TRANSFUSE_CACHE_DIR per test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


# These tests look at Numba's cache files: their kernels go through Numba, not the direct
# back end (runtime/direct.py; its cache is tests/test_direct.py's).
pytestmark = pytest.mark.usefixtures("numba_kernels")

# The programs, in every job. rk4 is a jit(grad) of a 3-step RK4 integrator of a damped
# pendulum (2-element float64 state): its graph is long enough for buffers to be reused,
# and which dead buffer a value reuses is what used to differ between processes.
PROGRAMS = textwrap.dedent("""
    import numpy as np
    import transfuse as tx

    def pendulum(y):
        return np.stack([y[1], -np.sin(y[0]) - 0.1 * y[1]])

    def rk4(y, h=0.1):
        for _ in range(3):
            k1 = pendulum(y)
            k2 = pendulum(y + h / 2 * k1)
            k3 = pendulum(y + h / 2 * k2)
            k4 = pendulum(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return (y * y).sum()

    def layer(w, x):  # a contraction and reductions
        h = np.tanh(x @ w)
        return (h * h).sum(axis=1), np.exp(-h).mean()

    def sine(x):
        return np.sin(x) * 2 + 1

    def decay(x):
        return np.exp(-x).sum()

    def running(x):
        return np.cumsum(x) * x

    def clipped(x):
        return np.maximum(x, 0.5).mean(axis=0)

    Y = np.array([1.0, 0.5])
    W = np.linspace(-1, 1, 12).reshape(4, 3)
    X = np.linspace(0, 2, 20).reshape(5, 4)
    V = np.linspace(-1, 1, 6)
    CASES = {  # name -> (jitted function, arguments)
        "rk4": (tx.jit(tx.grad(rk4)), (Y,)),
        "layer": (tx.jit(layer), (W, X)),
        "sine": (tx.jit(sine), (V,)),
        "decay": (tx.jit(decay), (V,)),
        "running": (tx.jit(running), (V,)),
        "clipped": (tx.jit(clipped), (X,)),
    }
    REFERENCE = {  # the same programs run eagerly (the reference interpreter / NumPy)
        "rk4": lambda: tx.grad(rk4)(Y),
        "layer": lambda: layer(W, X),
        "sine": lambda: sine(V),
        "decay": lambda: decay(V),
        "running": lambda: running(V),
        "clipped": lambda: clipped(X),
    }
""")

JOB = PROGRAMS + textwrap.dedent("""
    import json, sys
    from transfuse.runtime import cache as kernel_cache

    mode, names = sys.argv[1], sys.argv[2].split(",")
    report = {}
    for name in names:
        jitted, args = CASES[name]
        if mode == "lower":  # the generated source and its cache key, without compiling
            source = jitted.lower(*args).source
            report[name] = {"source": source, "key": kernel_cache.program_key(source)}
            continue
        got, want = tx.tree_leaves(jitted(*args)), tx.tree_leaves(REFERENCE[name]())
        report[name] = {"ok": all(np.allclose(g, w, rtol=1e-10, atol=1e-12)
                                  for g, w in zip(got, want)) and len(got) == len(want)}
    stats = kernel_cache.stats()
    report["stats"] = {"compiles": kernel_cache.compile_count(), "disk_hits": stats.disk_hits,
                       "repairs": stats.repairs, "fallbacks": stats.fallbacks}
    print(json.dumps(report))
""")

# Run as root (as CI does), chmod -R a-w binds nothing: root writes anyway. So the
# read-only job makes every write under the cache folder fail, as a read-only folder
# or mount would, at the lowest level Python code writes through: os.open with a write
# flag (tempfile, Numba's TemporaryFile probe), open()/io.open for writing (Numba's data
# files, pathlib), and os.mkdir/replace/rename/unlink/rmdir/utime/chmod. Reads work. No
# code of transfuse or Numba is patched: both meet a file system that refuses writes.
READ_ONLY_SHIM = textwrap.dedent("""
    import builtins, errno, io, os
    _ROOT = os.path.realpath(os.environ["READ_ONLY_FOLDER"])

    def _inside(path):
        try:
            path = os.fsdecode(path)
        except TypeError:
            return False  # a file descriptor
        path = os.path.realpath(path)
        return path == _ROOT or path.startswith(_ROOT + os.sep)

    def _refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied (read-only test)", path)

    def _guard(fn, path_args=1):
        def guarded(*args, **kwargs):
            if any(_inside(a) for a in args[:path_args]):
                _refuse(args[0])
            return fn(*args, **kwargs)
        return guarded

    _os_open = os.open
    def _open_fd(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC) and _inside(path):
            _refuse(path)
        return _os_open(path, flags, *args, **kwargs)
    os.open = _open_fd

    _io_open = io.open
    def _open_file(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and _inside(file):
            _refuse(file)
        return _io_open(file, mode, *args, **kwargs)
    builtins.open = io.open = _open_file

    for _name in ("mkdir", "unlink", "remove", "rmdir", "utime", "chmod"):
        setattr(os, _name, _guard(getattr(os, _name)))
    for _name in ("replace", "rename"):
        setattr(os, _name, _guard(getattr(os, _name), path_args=2))
""")


def run_job(cache: Path, mode: str, names: list[str], *, seed: int = 0,
            read_only: bool = False, extra_env: dict | None = None) -> tuple[dict, str]:
    """Run JOB in a new process on that cache folder: (its report, its cache log)."""
    script = cache.parent / "job.py"
    script.write_text((READ_ONLY_SHIM if read_only else "") + JOB)
    env = dict(os.environ, TRANSFUSE_CACHE_DIR=str(cache), TRANSFUSE_LOG="cache",
               PYTHONHASHSEED=str(seed),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRANSFUSE_DISABLE_CACHE", None)
    env.update(extra_env or {})
    if read_only:
        env["READ_ONLY_FOLDER"] = str(cache)
    done = subprocess.run([sys.executable, str(script), mode, ",".join(names)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under folder: relative path -> (size, sha256 prefix)."""
    import hashlib

    return {str(p.relative_to(folder)): (p.stat().st_size,
                                         hashlib.sha256(p.read_bytes()).hexdigest()[:16])
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lowering_is_the_same_in_every_process(tmp_path):
    """The generated source and the cache key do not depend on PYTHONHASHSEED or on where
    objects land in memory (they did: buffer reuse followed a set of values)."""
    names = ["rk4", "layer"]
    first, _ = run_job(tmp_path / "cache", "lower", names, seed=1)
    second, _ = run_job(tmp_path / "cache", "lower", names, seed=12345)
    for name in names:
        assert first[name]["source"] == second[name]["source"], name
        assert first[name]["key"] == second[name]["key"], name
    assert first["stats"]["compiles"] == 0  # lowering compiles nothing


ALL = ["rk4", "layer", "sine", "decay", "running", "clipped"]


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> Path:
    """A cache folder in which one process compiled every program of ALL."""
    cache = tmp_path_factory.mktemp("populated") / "cache"
    report, _ = run_job(cache, "run", ALL, seed=1)
    assert all(report[name]["ok"] for name in ALL)
    assert report["stats"]["compiles"] == len(ALL)
    return cache


def copy_of(populated: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(populated, cache, symlinks=True)
    return cache


def test_a_second_process_compiles_nothing_and_writes_nothing(populated, tmp_path):
    cache = copy_of(populated, tmp_path)
    before = snapshot(cache)
    report, log = run_job(cache, "run", ALL, seed=12345)
    assert all(report[name]["ok"] for name in ALL)
    assert report["stats"]["compiles"] == 0, log
    assert report["stats"]["disk_hits"] == len(ALL)
    assert snapshot(cache) == before  # same files, same sizes, same bytes


# Which program's entry gets which file spoiled (each kind of file in the cache once).
SPOILED = {"sine": "kernel.py", "decay": "meta.json", "running": ".nbi", "layer": ".nbc"}


def spoil(data: bytes, how: str) -> bytes:
    if how == "garbage":
        return bytes(np.random.default_rng(len(data)).integers(0, 256, max(len(data), 64),
                                                                 dtype=np.uint8))
    if how == "half":
        return data[: len(data) // 2]
    if how == "empty":
        return b""
    assert how == "flip"  # same length, bytes changed in the middle (pickle may still load)
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 16]) + data[middle + 16:]


def entry_of(cache: Path, name: str) -> Path:
    (entry,) = [p for p in (cache / "kernels").iterdir() if p.name.startswith(f"{name}-")]
    return entry


def files_to_spoil(cache: Path) -> list[Path]:
    files = sorted((cache / "index").iterdir())  # every index file
    for name, kind in SPOILED.items():
        entry = entry_of(cache, name)
        if kind.startswith("."):
            files += sorted(p for p in (entry / "__pycache__").iterdir() if p.suffix == kind)
        else:
            files.append(entry / kind)
    return files


@pytest.mark.parametrize("how", ["garbage", "half", "empty", "flip"])
def test_any_spoiled_cache_file_is_recompiled_logged_and_repaired(populated, tmp_path, how):
    cache = copy_of(populated, tmp_path)
    for path in files_to_spoil(cache):
        path.write_bytes(spoil(path.read_bytes(), how))
    report, log = run_job(cache, "run", ALL, seed=7)
    assert all(report[name]["ok"] for name in ALL), log
    assert report["stats"]["compiles"] == len(SPOILED), log  # only the spoiled entries
    for name in SPOILED:
        assert f"disk miss {name}:" in log, log
    assert "index" in log and "corrupt" in log, log
    repaired = snapshot(cache)
    again, log = run_job(cache, "run", ALL, seed=8)
    assert all(again[name]["ok"] for name in ALL)
    assert again["stats"] == {"compiles": 0, "disk_hits": len(ALL), "repairs": 0,
                              "fallbacks": 0}, log
    assert snapshot(cache) == repaired


def test_a_read_only_cache_is_read_and_never_written(populated, tmp_path):
    """A populated cache that refuses every write (see READ_ONLY_SHIM for how, as root):
    its kernels load with no compile, a program missing from it compiles into the
    fallback folder, and the cache folder is left exactly as it was."""
    cache = copy_of(populated, tmp_path)
    shutil.rmtree(entry_of(cache, "clipped"))  # one program the cache does not have
    before = snapshot(cache)
    fallback = tmp_path / "fallback"
    env = {"TRANSFUSE_CACHE_FALLBACK_DIR": str(fallback)}
    report, log = run_job(cache, "run", ALL, read_only=True, extra_env=env)
    assert all(report[name]["ok"] for name in ALL), log
    assert report["stats"]["compiles"] == 1, log  # clipped, and nothing else
    assert report["stats"]["fallbacks"] == len(ALL)
    assert "not writable" in log
    assert snapshot(cache) == before
    again, log = run_job(cache, "run", ALL, read_only=True, extra_env=env)
    assert again["stats"]["compiles"] == 0, log  # the fallback kept what it compiled
    assert snapshot(cache) == before


def test_two_processes_compiling_at_once_leave_a_sound_cache(tmp_path):
    """Both get correct results, each kernel compiles once between them (the second
    process waits on the entry's lock, then loads), and a third process compiles nothing."""
    names = ["rk4", "layer", "sine"]
    cache = tmp_path / "cache"
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = dict(os.environ, TRANSFUSE_CACHE_DIR=str(cache), TRANSFUSE_LOG="cache",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRANSFUSE_DISABLE_CACHE", None)
    jobs = [subprocess.Popen([sys.executable, str(script), "run", ",".join(names)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env) for _ in range(2)]
    reports = []
    for job in jobs:
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-4000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r[name]["ok"] for r in reports for name in names)
    assert sum(r["stats"]["compiles"] for r in reports) == len(names)
    third, log = run_job(cache, "run", names)
    assert third["stats"]["compiles"] == 0, log


AOT_JOB = textwrap.dedent("""
    import json, sys
    import numpy as np
    import transfuse as tx
    from transfuse.runtime import cache as kernel_cache

    x = np.linspace(-1, 1, 7)
    try:
        got = tx.load(sys.argv[1])(x)
    except ValueError as e:  # a TransfuseValueError
        print(json.dumps({"error": str(e)}))
        raise SystemExit(0)
    print(json.dumps({"ok": bool(np.allclose(got, np.tanh(x) * 3 + x.sum())),
                      "compiles": kernel_cache.compile_count()}))
""")


def aot_model(x):
    return np.tanh(x) * 3 + x.sum()


def load_in_new_process(build: Path, read_only: bool = False) -> tuple[dict, str]:
    script = build.parent / "use.py"
    script.write_text((READ_ONLY_SHIM if read_only else "") + AOT_JOB)
    env = dict(os.environ, TRANSFUSE_LOG="cache", READ_ONLY_FOLDER=str(build),
               TRANSFUSE_CACHE_FALLBACK_DIR=str(build.parent / "fallback"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(script), str(build)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_aot_builds_are_checked_repaired_and_read_when_read_only(tmp_path):
    """An aot build's Numba files are checked against its manifest: spoiled ones are
    rebuilt from the (checked) kernel.py and recorded; a spoiled kernel.py, consts.npz or
    info.pkl is a clear error, never a wrong kernel; a read-only build still loads."""
    from transfuse.aot import compile_to, parse_signature

    # Numba's format (object code has no Numba files: tests/test_aot_native.py checks it)
    build = compile_to(aot_model, [parse_signature("f64[7]")], tmp_path / "build",
                       native=False)
    before = snapshot(build)
    report, log = load_in_new_process(build, read_only=True)
    assert report == {"ok": True, "compiles": 0}, log
    assert snapshot(build) == before
    (nbc,) = (build / "kernel0" / "__pycache__").glob("*.nbc")
    nbc.write_bytes(spoil(nbc.read_bytes(), "flip"))
    report, log = load_in_new_process(build)
    assert report == {"ok": True, "compiles": 1}, log
    assert "differ from the ones recorded" in log
    assert load_in_new_process(build)[0] == {"ok": True, "compiles": 0}
    consts = build / "kernel0" / "consts.npz"
    consts.write_bytes(spoil(consts.read_bytes(), "half"))
    report, _ = load_in_new_process(build)
    assert "consts.npz is corrupt" in report["error"]
