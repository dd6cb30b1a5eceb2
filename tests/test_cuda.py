"""jit(device='cuda') without a GPU: every kernel compiles to PTX, and the simulator agrees.

(a) every generated kernel of a catalogue reaching every primitive compiles to PTX with
numba-cuda's NVVM (no device needed); (b) in numba-cuda's simulator the results equal the
reference interpreter (tests/test_cuda_sim.py, run here in a process of its own, since the
simulator must be chosen before numba.cuda is imported); (c) lower() shows the source;
(d) the disk cache stores the generated source; (e) errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba_cuda")

from transfuse.runtime import cuda as cuda_runtime  # noqa: E402

import transfuse as tx  # noqa: E402
from tests.cuda_programs import programs  # noqa: E402
from tests.helpers import rand  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def lowered(f, args, **options):
    with np.errstate(all="ignore"):
        return tx.jit(f, device="cuda", **options).lower(*args)


# Every CUDA rule is reached by tests/test_coverage.py (the catalogue, family by family).


# The catalogue's functions compile to PTX family by family in tests/test_opinfo.py;
# here the whole programs of tests/cuda_programs.py.
PTX_CASES = [("float32", name) for name, _, _ in programs("float32")] + [
    ("float64", name) for name in ("reductions", "dense-layers")]


@pytest.mark.parametrize("dtype,name", PTX_CASES, ids=[f"{n}-{d}" for d, n in PTX_CASES])
def test_every_kernel_compiles_to_ptx(dtype, name):
    _, f, args = next(p for p in programs(dtype) if p[0] == name)
    low = lowered(f, args, cache=False)
    module = cuda_runtime.load_program(low.source, name.replace("-", "_"), disk=False)
    ptx = cuda_runtime.kernel_ptx(module.module, low.kernels, cc=(7, 5))
    assert set(ptx) == {k.name for k in low.kernels}
    for kernel_name, text in ptx.items():
        assert ".visible .entry" in text and kernel_name in text, kernel_name
        assert ".target sm_75" in text


@pytest.mark.parametrize("name", ["softmax", "reductions"])
def test_rows_reduced_by_a_block_compile_to_ptx(name, monkeypatch):
    monkeypatch.setattr(cuda_runtime, "ROW_BLOCK", (256, 8))  # rows of 8 or more
    _, f, args = next(p for p in programs() if p[0] == name)
    low = lowered(f, args, cache=False)
    assert "launch_blocks(" in low.source and "cuda.syncthreads()" in low.source
    assert any(k.threads_per_item == 256 for k in low.kernels)
    module = cuda_runtime.load_program(low.source, name, disk=False)
    ptx = cuda_runtime.kernel_ptx(module.module, low.kernels, cc=(7, 5))
    assert any(".shared" in text and "bar.sync" in text for text in ptx.values())


def test_lower_shows_readable_source_without_a_device():
    def f(x, b):
        return np.tanh(x @ x.T + b).sum(1)

    x, b = rand(np.random.default_rng(0), (3, 4), "float32"), np.float32(0.5)
    low = tx.jit(f, device="cuda").lower(x, b)
    src = low.source
    assert "@cuda.jit(fastmath=False)" in src and "def entry(a0, a1):" in src
    assert "for j0 in range(cuda.grid(1), 9, cuda.gridsize(1)):" in src  # dot: 3x3 threads
    assert "launch(k1, 9, a0, b2)" in src and "launch(k2, 3, a1, b2, b3)" in src
    assert "cu_tanh" in src and "test_cuda.py:" in src  # user lines are cited
    # x.T is read in place by the product (compiler/transpose_sinking.py): no copy kernel
    assert [k.primitives for k in low.kernels] == [["dot_general"],
                                                   ["add", "tanh", "reduce_sum"]]
    compile(src, "<cuda source>", "exec")  # valid Python


def test_a_chain_and_a_softmax_are_one_kernel_each():
    x = rand(np.random.default_rng(1), (3, 5), "float32")

    def chain(v):
        for _ in range(5):
            v = np.sin(v) * 1.5 + v
        return v

    assert len(tx.jit(chain, device="cuda").lower(x).kernels) == 1
    _, softmax, _ = next(p for p in programs() if p[0] == "softmax")
    (kernel,) = tx.jit(softmax, device="cuda").lower(x).kernels
    assert kernel.total == 3  # one thread per row, three passes over it
    assert kernel.threads_per_item == 1  # rows shorter than BLOCK_MIN_ROW
    assert {"reduce_max", "reduce_sum", "exp", "div"} <= set(kernel.primitives)


def test_bias_and_activation_run_in_the_matmul_kernel():
    rng = np.random.default_rng(2)
    x, w, b = rand(rng, (3, 4), "float32"), rand(rng, (4, 2), "float32"), rand(rng, (2,), "float32")
    (kernel,) = tx.jit(lambda x, w, b: np.tanh(x @ w + b), device="cuda").lower(x, w, b).kernels
    assert kernel.primitives == ["dot_general", "add", "tanh"] and kernel.total == 6
    # An epilogue that reduces stays a kernel of its own (the dot is not recomputed per pass).
    low = tx.jit(lambda x, w: np.exp(x @ w).sum(1), device="cuda").lower(x, w)
    assert [k.primitives for k in low.kernels] == [["dot_general"], ["exp", "reduce_sum"]]


def test_the_disk_cache_stores_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFUSE_CACHE_DIR", str(tmp_path))
    x = np.ones(3, np.float32)
    low = tx.jit(lambda v: v * 2 + 1, device="cuda").lower(x)
    source = low.source.replace("v * 2", "v * 2 ")  # a key of its own for this test
    cuda_runtime._LOADED.clear()
    cuda_runtime.load_program(source, "twice", disk=True)
    (stored,) = tmp_path.glob("kernels/cuda-twice-*/kernel.py")
    assert stored.read_text() == source
    stored.write_text(source[:40])  # truncated: detected and rewritten, never a crash
    cuda_runtime._LOADED.clear()
    module = cuda_runtime.load_program(source, "twice", disk=True)
    assert stored.read_text() == source and callable(module.entry)


class _ForeignDeviceArray:
    """What CuPy or a PyTorch CUDA tensor shows: the interface, and a non-NumPy dtype."""

    dtype = "torch.float32"
    __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False),
                                "strides": None, "version": 3}


def test_arrays_with_the_cuda_array_interface_are_traced_by_shape_and_dtype():
    foreign = _ForeignDeviceArray()
    assert cuda_runtime.is_device_array(foreign)
    assert cuda_runtime.device_signature(foreign) == ((2, 3), np.dtype(np.float32))
    low = tx.jit(lambda x: x * 2, device="cuda").lower(foreign)
    assert str(low.graph.in_avals[0]) == "f32[2,3]"
    assert not cuda_runtime.is_device_array(np.ones(3))


def test_errors_are_clear():
    with pytest.raises(tx.TransfuseValueError, match="device"):
        tx.jit(lambda x: x, device="tpu")


def test_a_missing_numba_cuda_is_a_compile_error(monkeypatch):
    monkeypatch.setattr(cuda_runtime, "cuda", None)
    cuda_runtime._LOADED.clear()
    with pytest.raises(tx.CompileError, match="numba-cuda"):
        tx.jit(lambda x: x + 1, device="cuda", cache=False)(np.ones(2))


def test_simulator_suite():
    """tests/test_cuda_sim.py in a process with NUMBA_ENABLE_CUDASIM=1."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", TRANSFUSE_DISABLE_CACHE="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "tests/test_cuda_sim.py"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1]
