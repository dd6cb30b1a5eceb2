"""`transfuse tour`: the contract's transforms on small examples, with printed results."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import transfuse as tx
import transfuse.numpy as tnp


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def _show(label: str, value) -> None:
    text = np.array2string(np.asarray(value), precision=4, suppress_small=True,
                           max_line_width=88)
    print(f"{label}:\n{text}" if "\n" in text else f"{label}: {text}")


def _available(*names: str) -> bool:
    return all(hasattr(tx, n) for n in names)


def tour_tracing() -> None:
    _section("Tracing: a NumPy function becomes an SSA graph")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    w = rng.standard_normal((5, 5)).astype(np.float32)

    def model(x, w):
        return np.tanh(x @ w).sum(axis=1)

    print("def model(x, w): return np.tanh(x @ w).sum(axis=1)")
    graph = tx.make_graph(model)(x, w)
    print(graph)
    from transfuse.ir import interpret
    out = interpret(graph, [x, w])[0]
    print(f"reference interpreter == eager NumPy: {np.allclose(out, model(x, w))}")

    def fill(n):
        out = tnp.zeros(n)
        for i in range(n):
            out[i] = i * i
        return out

    print("\nIn-place writes are recorded as what they are (views and assign):")
    print(tx.make_graph(lambda x: (fill(3) + x))(np.ones(3)))


def tour_autodiff() -> None:
    if not _available("grad", "vjp", "jvp"):
        print("\n(autodiff not available yet)")
        return
    _section("Autodiff: grad, vjp, jvp, jacrev, jacfwd, hessian")
    x = np.linspace(-1.0, 1.0, 5)
    _show("grad(sin) at 0.5 (cos 0.5 = 0.8776)", tx.grad(np.sin)(np.float64(0.5)))
    _show("grad(grad(sin)) at 0.5 (-sin 0.5 = -0.4794)",
          tx.grad(tx.grad(np.sin))(np.float64(0.5)))
    out, vjp_fn = tx.vjp(np.sin, x)
    _show("vjp(sin)(x)[1](ones) == cos(x)", vjp_fn(np.ones_like(x))[0])
    y = np.arange(5.0)
    _, tangent = tx.jvp(lambda a, b: a * b, (x, y), (np.ones_like(x), np.zeros_like(y)))
    _show("jvp(x*y) along (1, 0) == y", tangent)
    if _available("jacrev", "jacfwd"):
        j = tx.jacrev(np.sin)(x)
        print(f"jacrev(sin)(x) == diag(cos x): {np.allclose(j, np.diag(np.cos(x)))}")
        print(f"jacfwd(sin)(x) == jacrev: {np.allclose(tx.jacfwd(np.sin)(x), j)}")
    if _available("hessian"):
        def f(v):
            return np.sum(np.sin(v) * v)
        _show("hessian(sum(sin(x)*x)) diagonal", np.diag(tx.hessian(f)(x)))


def tour_vmap() -> None:
    if not _available("vmap"):
        print("\n(vmap not available yet)")
        return
    _section("vmap: batching as a graph rewrite")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 5))
    batch = rng.standard_normal((64, 5))

    def model(x):
        return np.tanh(w @ x)

    print(f"vmap(model)(batch).shape = {tx.vmap(model)(batch).shape}")
    if _available("grad", "jacrev"):
        def loss(weights, x, target):
            return np.mean((np.tanh(x @ weights) - target) ** 2)

        targets = rng.standard_normal((64, 5))
        per_sample = tx.vmap(tx.grad(loss), in_dims=(None, 0, 0))(w, batch, targets)
        print(f"per-sample gradients vmap(grad(loss), in_dims=(None, 0, 0)): "
              f"{per_sample.shape}")
        print(f"vmap(jacrev(sin)) on (64, 5): {tx.vmap(tx.jacrev(np.sin))(batch).shape}")


def tour_jit() -> None:
    if not _available("jit"):
        print("\n(jit not available yet)")
        return
    _section("jit: fused Numba kernels, cached by signature")
    x = np.random.default_rng(2).standard_normal(1 << 12).astype(np.float32)

    @tx.jit
    def chain(x):
        return np.tanh(x) * 0.5 + x * x

    print(f"jit(chain) == NumPy: {np.allclose(chain(x), np.tanh(x) * 0.5 + x * x, atol=1e-6)}")
    lowered = chain.lower(x)
    source = getattr(lowered, "source", str(lowered))
    print("generated source (first lines):")
    print("\n".join(source.splitlines()[:25]))


SECTIONS: list[Callable[[], None]] = [tour_tracing, tour_autodiff, tour_vmap, tour_jit]


def run_tour() -> int:
    print("transfuse tour: composable function transforms for NumPy programs")
    for section in SECTIONS:
        section()
    return 0


def tour_tutorials() -> None:
    _section("Tutorials: the torch.func seed use cases (docs/tutorials)")
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
    if not folder.is_dir():
        print(f"(docs/tutorials not found next to this installation ({folder}); skipped)")
        return

    def maml_line(r: dict) -> str:
        rows = r["gradient_check"]["entries"]
        worst = max(abs(e["transfuse"] - e["finite_difference"]) / abs(e["finite_difference"])
                    for e in rows)
        return (f"held-out query loss {r['history'][0][1]:.3f} -> {r['history'][-1][1]:.3f}; "
                f"second-order meta-gradient vs finite differences: rel. error {worst:.1e}")

    lines: dict[str, Callable[[dict], str]] = {
        "per_sample_grads": lambda r: (
            f"vmap(grad) over {len(r['images'])} examples == loop of grad "
            f"(max |diff| {r['max_abs_diff']:.1e})"),
        "ensembling": lambda r: (
            f"{len(r['models'])} models as one vmap == loop over models "
            f"(max |diff| {max(r['max_abs_diff_different'], r['max_abs_diff_same']):.1e})"),
        "jacobians_hessians": lambda r: (
            f"jacrev == jacfwd == closed form, hessian == closed form "
            f"(max |diff| {max(r['max_abs_diff'].values()):.1e})"),
        "neural_tangent_kernels": lambda r: (
            f"NTK {r['ntk_jacobian_contraction'].shape} by Jacobian contraction and by "
            f"NTK-vector products == loop (max |diff| "
            f"{max(r['max_abs_diff_contraction'], r['max_abs_diff_ntk_vps']):.1e})"),
        "maml": maml_line,
    }
    for name, line in lines.items():
        spec = importlib.util.spec_from_file_location(f"_tour_tutorial_{name}",
                                                      folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"{name}: {line(module.main(with_jit=False))}")  # tour_jit shows jit


SECTIONS.append(tour_tutorials)
