"""`import transfuse` is lean (issue #15): Numba, llvmlite and SciPy load only when needed.

Each check runs in a fresh interpreter (this process has imported everything already):
- `import transfuse` imports none of numba, llvmlite, scipy (nor numba-cuda, matplotlib,
  JAX, PyTorch or Dask);
- eager code, tracing and the transforms run through the reference interpreter without
  Numba: grad, vjp, jvp, vmap and jacrev of a NumPy function on float64 arrays;
- SciPy arrives with the first SciPy-backed function (the reference of `erf`,
  `tx.scipy.linalg`), still without Numba;
- the first `transfuse.jit` call imports the compiler and Numba and computes the right
  result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

HEAVY = ("numba", "llvmlite", "scipy", "numba_cuda", "matplotlib", "jax", "torch", "dask",
         "distributed")

SCRIPT = textwrap.dedent(f"""
    import json, sys

    HEAVY = {HEAVY!r}
    report = {{}}

    def note(stage):
        report[stage] = [m for m in HEAVY if m in sys.modules]

    import transfuse as tx
    import transfuse.lax, transfuse.nn, transfuse.numpy as tnp, transfuse.random  # noqa
    import transfuse.scipy  # noqa
    note("import")

    import numpy as np

    def loss(w, x):
        return np.sum(np.tanh(x @ w) ** 2)

    w = np.linspace(-1.0, 1.0, 6).reshape(3, 2)
    x = np.linspace(0.0, 1.0, 12).reshape(4, 3)
    g = tx.grad(loss)(w, x)
    _, vjp_fn = tx.vjp(loss, w, x)
    _, tangent = tx.jvp(loss, (w, x), (np.ones_like(w), np.zeros_like(x)))
    per_row = tx.vmap(tx.grad(loss), in_dims=(None, 0))(w, x[:, None, :])
    jac = tx.jacrev(lambda v: np.sin(v) * v)(x[0])
    report["eager_ok"] = bool(
        np.allclose(vjp_fn(1.0)[0], g) and np.isclose(tangent, g.sum())
        and np.allclose(per_row.sum(axis=0), g) and np.allclose(jac, np.diag(np.cos(x[0])
                                                                    * x[0] + np.sin(x[0]))))
    note("eager")

    erf_grad = tx.grad(lambda v: np.sum(tnp.erf(v)))(x[0])
    solved = tx.scipy.linalg.solve(np.eye(3) * 2.0, np.ones(3))
    report["scipy_ok"] = bool(np.allclose(erf_grad, 2 / np.sqrt(np.pi) * np.exp(-x[0] ** 2))
                              and np.allclose(solved, 0.5))
    note("scipy")

    jitted = tx.jit(tx.grad(loss))
    report["jit_ok"] = bool(np.allclose(jitted(w, x), g) and np.allclose(jitted(w, x), g))
    note("jit")
    print(json.dumps(report))
""")


def _run(tmp_path) -> dict:
    env = {**os.environ, "TRANSFUSE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_numba_and_scipy_load_only_when_needed(tmp_path):
    report = _run(tmp_path)
    assert report["import"] == [], f"`import transfuse` imported {report['import']}"
    assert report["eager_ok"]
    assert report["eager"] == [], f"eager transforms imported {report['eager']}"
    assert report["scipy_ok"]
    assert report["scipy"] == ["scipy"], report["scipy"]
    assert report["jit_ok"]
    # compiled by the direct back end (llvmlite, runtime/direct.py): Numba is not imported
    assert "llvmlite" in report["jit"], report["jit"]
    assert "numba" not in report["jit"], report["jit"]
    assert not {"numba_cuda", "matplotlib", "jax", "torch"} & set(report["jit"]), report["jit"]
