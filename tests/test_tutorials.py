"""The tutorials in docs/tutorials run, and their results are right: per-sample gradients,
ensembles and NTKs against loops of single-example computations, Hessians against closed
forms, MAML's second-order meta-gradient against finite differences (and torch.func where
torch is installed)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import transfuse as tx
import transfuse.nn.functional as F

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
NAMES = ["per_sample_grads", "ensembling", "jacobians_hessians", "neural_tangent_kernels",
         "maml"]


def load(name: str):
    """Import docs/tutorials/<name>.py by path (docs/tutorials is not a package)."""
    module_name = f"_tutorial_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, TUTORIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_RESULTS: dict[str, dict] = {}


def results(name: str) -> dict:
    """Each tutorial's main() runs once per test session (without its tx.jit section)."""
    if name not in _RESULTS:
        _RESULTS[name] = load(name).main(with_jit=False)
    return _RESULTS[name]


def assert_tree_close(actual: dict, expected: dict, rtol: float, atol: float) -> None:
    assert set(actual) == set(expected)
    for key in expected:
        np.testing.assert_allclose(np.asarray(actual[key]), np.asarray(expected[key]),
                                   rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_summary_prints(name, capsys):
    res = results(name)
    assert "jit_max_abs_diff" not in res
    load(name)._summary(res)
    out = capsys.readouterr().out
    assert out.count("\n") >= 2 and "jit" not in out


# Compiling with tx.jit takes seconds per graph; by default the two tutorials with the
# smallest graphs check it, TRANSFUSE_TUTORIAL_JIT=all checks all five.
JIT_CHECKED = (NAMES if os.environ.get("TRANSFUSE_TUTORIAL_JIT") == "all"
               else ["ensembling", "jacobians_hessians"])


@pytest.mark.parametrize("name", JIT_CHECKED)
def test_jit_gives_the_same_numbers(name, capsys):
    res = load(name).main(with_jit=True)
    assert res["jit_max_abs_diff"] < 1e-4
    load(name)._summary(res)
    assert "jit" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# Per-sample gradients


def _single_example_grads(res: dict) -> dict:
    """A loop written here, independent of the tutorial's: grad of one example's loss."""
    model = res["model"]

    def loss(params, x, y):
        logits = tx.functional_call(model, params, (x.reshape(1, 1, 28, 28),))
        return F.cross_entropy(logits, y.reshape(1))

    rows = [tx.grad(loss)(res["params"], x, y) for x, y in zip(res["images"], res["labels"])]
    return {k: np.stack([r[k] for r in rows]) for k in res["params"]}


def test_per_sample_grads_match_a_loop_of_single_examples():
    res = results("per_sample_grads")
    grads = res["per_sample_grads"]
    for name, param in res["params"].items():
        assert grads[name].shape == (len(res["images"]),) + param.shape
        assert grads[name].dtype == np.float32
    assert_tree_close(grads, _single_example_grads(res), rtol=1e-4, atol=1e-6)
    assert_tree_close(grads, res["loop_grads"], rtol=1e-4, atol=1e-6)
    assert res["max_abs_diff"] < 1e-5
    # The examples' gradients really differ from each other (not one gradient broadcast).
    weight = grads["3.weight"]
    assert np.max(np.abs(weight[0] - weight[1])) > 1e-2


def test_per_sample_grads_average_to_the_batch_gradient():
    res = results("per_sample_grads")
    model = res["model"]

    def batch_loss(params, x, y):
        return F.cross_entropy(tx.functional_call(model, params, (x,)), y)

    batch_grad = tx.grad(batch_loss)(res["params"], res["images"], res["labels"])
    mean = {k: v.mean(axis=0) for k, v in res["per_sample_grads"].items()}
    assert_tree_close(mean, batch_grad, rtol=1e-4, atol=1e-6)


def test_per_sample_grads_match_torch_func():
    torch = pytest.importorskip("torch")
    res = results("per_sample_grads")
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(4 * 13 * 13, 10))
    params = {k: torch.from_numpy(np.array(v)) for k, v in res["params"].items()}

    def loss(params, x, y):
        out = torch.func.functional_call(tmodel, params, (x.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, y.unsqueeze(0))

    expected = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(
        params, torch.from_numpy(res["images"]), torch.from_numpy(res["labels"]))
    assert_tree_close(res["per_sample_grads"], {k: v.numpy() for k, v in expected.items()},
                      rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Ensembling


def test_ensemble_predictions_match_each_model():
    res = results("ensembling")
    models, batches = res["models"], res["minibatches"]
    different, same = res["different_minibatches"], res["same_minibatch"]
    assert different.shape == same.shape == (len(models), batches.shape[1], 10)
    for i, model in enumerate(models):
        np.testing.assert_allclose(different[i], model(batches[i]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(same[i], model(batches[0]), rtol=1e-5, atol=1e-6)
    assert res["max_abs_diff_different"] < 1e-5 and res["max_abs_diff_same"] < 1e-5
    # The models differ, so a broadcast of one model's output would fail the loop above.
    assert np.max(np.abs(same[0] - same[1])) > 1e-2


def test_ensemble_state_is_each_models_parameters():
    res = results("ensembling")
    for i, model in enumerate(res["models"]):
        for name, value in model.named_parameters():
            np.testing.assert_array_equal(res["params"][name][i], value)


def test_ensemble_grads_match_per_model_grads_and_train():
    res = results("ensembling")
    grads = res["ensemble_grads"]
    for i, model in enumerate(res["models"]):
        def loss(params, x, y, model=model):
            return F.cross_entropy(tx.functional_call(model, params, (x,)), y)

        own = tx.grad(loss)(dict(model.named_parameters()), res["minibatches"][i],
                            res["labels"][i])
        assert_tree_close({k: v[i] for k, v in grads.items()}, own, rtol=1e-4, atol=1e-6)
    assert np.all(res["loss_after"] < res["loss_before"])


# ---------------------------------------------------------------------------------------
# Jacobians and Hessians


def test_jacobians_match_closed_forms():
    res = results("jacobians_hessians")
    jac = res["jacobians"]
    expected = jac["closed_form"]
    for key in ("jacrev", "jacfwd", "by_vjp", "wrt_x_argnums"):
        np.testing.assert_allclose(jac[key], expected, rtol=1e-10, atol=1e-12, err_msg=key)
    # d out_i / d weight_jk = delta_ij (1 - t_i^2) x_k
    weight, bias, x = res["weight"], res["bias"], res["x"]
    slope = 1 - np.tanh(weight @ x + bias) ** 2
    wrt_weight = np.einsum("ij,i,k->ijk", np.eye(len(x)), slope, x)
    np.testing.assert_allclose(jac["wrt_weight"], wrt_weight, rtol=1e-10, atol=1e-12)


def test_hessians_match_closed_forms():
    res = results("jacobians_hessians")
    hess = res["hessians"]
    a, x, m = hess["A"], hess["x"], hess["M"]
    t = np.tanh(a @ x)
    closed = np.einsum("ki,k,kj->ij", a, -2 * t * (1 - t ** 2), a)  # independent of the tutorial
    for key in ("hessian", "jacfwd_jacrev", "jacrev_jacrev", "jacrev_jacfwd",
                "jacfwd_jacfwd", "closed_form"):
        np.testing.assert_allclose(hess[key], closed, rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(hess["quadratic_hessian"], m + m.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res["hvp"], closed @ res["v"], rtol=1e-10, atol=1e-12)


def test_batched_jacobians_and_hessians_match_per_example_closed_forms():
    res = results("jacobians_hessians")
    weight, bias, batch = res["weight"], res["bias"], res["batch"]
    out = res["batched"]
    assert out["jacobians"].shape == (len(batch),) + weight.shape
    for n, x in enumerate(batch):
        t = np.tanh(weight @ x + bias)
        np.testing.assert_allclose(out["jacobians"][n], (1 - t ** 2)[:, None] * weight,
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out["sum_trick"][n], out["jacobians"][n], atol=1e-12)
        # d^2 tanh(w_i . x + b_i) / dx dx = -2 t_i (1 - t_i^2) w_i w_i^T
        hessian = np.einsum("i,ij,ik->ijk", -2 * t * (1 - t ** 2), weight, weight)
        np.testing.assert_allclose(out["hessians"][n], hessian, rtol=1e-10, atol=1e-12)


def test_parameter_jacobian_last_layer_closed_form():
    res = results("jacobians_hessians")
    pj = res["parameter_jacobian"]
    n, k = pj["x"].shape[0], 3
    assert_tree_close(pj["jacrev"], pj["jacfwd"], rtol=1e-10, atol=1e-12)
    for name, param in pj["params"].items():
        assert pj["jacrev"][name].shape == (n, k) + param.shape
    eye = np.broadcast_to(np.eye(k), (n, k, k))
    np.testing.assert_allclose(pj["jacrev"]["2.bias"], eye, atol=1e-12)
    last_weight = np.einsum("ij,nk->nijk", np.eye(k), pj["hidden"])
    np.testing.assert_allclose(pj["jacrev"]["2.weight"], last_weight, rtol=1e-10, atol=1e-12)
    # Cross-check one first-layer entry by central finite differences.
    model, params, x = pj["model"], pj["params"], pj["x"]
    bumped = {s: dict(params) for s in (1, -1)}
    for sign, p in bumped.items():
        p["0.weight"] = params["0.weight"].copy()
        p["0.weight"][2, 1] += sign * 1e-6
    fd = (tx.functional_call(model, bumped[1], (x,))
          - tx.functional_call(model, bumped[-1], (x,))) / 2e-6
    np.testing.assert_allclose(pj["jacrev"]["0.weight"][:, :, 2, 1], fd, rtol=1e-6, atol=1e-8)


def test_timings_are_reported_for_both_modes():
    res = results("jacobians_hessians")
    for label in ("wide_timings", "tall_timings"):
        assert set(res[label]) == {"jacrev", "jacfwd"}
        assert all(0 < t < 10 for t in res[label].values())


# ---------------------------------------------------------------------------------------
# Neural tangent kernels


def _ntk_by_forward_mode_loop(res: dict, x1, x2) -> np.ndarray:
    """A loop written here with jacfwd (the tutorial's loop uses jacrev)."""
    fnet, params = res["fnet_single"], res["params"]

    def flat(x):
        jac = tx.jacfwd(fnet)(params, x)
        return np.concatenate([jac[k].reshape(jac[k].shape[0], -1) for k in sorted(jac)],
                              axis=1)

    return np.array([[flat(a) @ flat(b).T for b in x2] for a in x1])


def test_ntk_matches_a_loop_over_pairs():
    res = results("neural_tangent_kernels")
    x1, x2 = res["x1"], res["x2"]
    expected = _ntk_by_forward_mode_loop(res, x1, x2)
    assert res["ntk_jacobian_contraction"].shape == (len(x1), len(x2), 2, 2)
    for key in ("ntk_jacobian_contraction", "ntk_vps", "ntk_loop"):
        np.testing.assert_allclose(res[key], expected, rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(res["ntk_trace"], np.einsum("nmaa->nm", expected),
                               rtol=1e-10, atol=1e-12)
    assert res["max_abs_diff_contraction"] < 1e-10 and res["max_abs_diff_ntk_vps"] < 1e-10
    # Not block-diagonal in the outputs: a wrong transpose of the blocks would show.
    assert np.max(np.abs(expected - expected.transpose(0, 1, 3, 2))) > 1e-6


def test_ntk_is_symmetric_and_positive_semidefinite():
    res = results("neural_tangent_kernels")
    tut = load("neural_tangent_kernels")
    swapped = tut.empirical_ntk_jacobian_contraction(res["fnet_single"], res["params"],
                                                     res["x2"], res["x1"])
    np.testing.assert_allclose(swapped, res["ntk_jacobian_contraction"].transpose(1, 0, 3, 2),
                               rtol=1e-12, atol=1e-12)
    props = res["self_kernel_properties"]
    assert props["symmetry_error"] < 1e-12
    assert props["min_eigenvalue"] > -1e-10 and props["max_eigenvalue"] > 1e-3
    kernel = res["self_kernel"]
    n, _, k, _ = kernel.shape
    matrix = kernel.transpose(0, 2, 1, 3).reshape(n * k, n * k)
    assert np.linalg.eigvalsh(matrix).min() > -1e-10


# ---------------------------------------------------------------------------------------
# MAML


def test_maml_meta_gradient_matches_finite_differences():
    res = results("maml")
    rows = res["gradient_check"]["entries"]
    assert len(rows) >= 2
    for row in rows:
        fd = row["finite_difference"]
        assert abs(row["transfuse"] - fd) <= 1e-5 * abs(fd) + 1e-9, row
        # The first-order approximation is visibly off: the check sees the second order.
        assert abs(row["first_order"] - fd) > 1e-3 * abs(fd), row


def test_maml_meta_gradient_another_entry_by_finite_differences():
    res = results("maml")
    tut = load("maml")
    params = {k: v.astype(np.float64) for k, v in res["params"].items()}
    tasks = tuple(a.astype(np.float64) for a in tut.sample_tasks(np.random.default_rng(7), 2))
    meta_loss = res["meta_loss"]
    grad = tx.grad(meta_loss)(params, *tasks)
    for name, index in (("2.bias", (4,)), ("4.weight", (0, 9))):
        plus, minus = dict(params), dict(params)
        plus[name], minus[name] = params[name].copy(), params[name].copy()
        plus[name][index] += 1e-6
        minus[name][index] -= 1e-6
        fd = (meta_loss(plus, *tasks) - meta_loss(minus, *tasks)) / 2e-6
        assert abs(grad[name][index] - fd) <= 1e-5 * abs(fd) + 1e-9, (name, fd)


def test_maml_training_lowers_the_held_out_loss():
    res = results("maml")
    history = [value for _, value in res["history"]]
    assert history[-1] < 0.95 * history[0]
    assert all(np.isfinite(history))
    for name, value in res["params"].items():
        assert value.dtype == np.float32
        assert not np.array_equal(value, res["initial_params"][name])


def test_maml_meta_gradient_matches_torch_func():
    torch = pytest.importorskip("torch")
    res = results("maml")
    tut = load("maml")
    tmodel = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(),
                                 torch.nn.Linear(40, 40), torch.nn.ReLU(),
                                 torch.nn.Linear(40, 1)).double()
    params = {k: v.astype(np.float64) for k, v in res["initial_params"].items()}
    tasks = tuple(a.astype(np.float64) for a in tut.sample_tasks(np.random.default_rng(3), 3))

    def loss(p, x, y):
        return torch.nn.functional.mse_loss(torch.func.functional_call(tmodel, p, (x,)), y)

    def adapted(p, xs, ys, xq, yq):
        g = torch.func.grad(loss)(p, xs, ys)
        return loss({k: p[k] - tut.INNER_LR * g[k] for k in p}, xq, yq)

    def meta(p, *tasks):
        return torch.func.vmap(adapted, in_dims=(None, 0, 0, 0, 0))(p, *tasks).mean()

    expected = torch.func.grad(meta)({k: torch.from_numpy(v) for k, v in params.items()},
                                     *map(torch.from_numpy, tasks))
    actual = tx.grad(res["meta_loss"])(params, *tasks)
    assert_tree_close(actual, {k: v.numpy() for k, v in expected.items()},
                      rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------
# The tour


def test_tour_runs_every_tutorial(capsys):
    from transfuse import tour

    assert tour.SECTIONS[-1] is tour.tour_tutorials
    tour.tour_tutorials()
    lines = capsys.readouterr().out.strip().splitlines()
    assert "Tutorials" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == NAMES


def test_tour_skips_tutorials_when_the_docs_are_missing(monkeypatch, tmp_path, capsys):
    from transfuse import tour

    monkeypatch.setattr(tour, "__file__", str(tmp_path / "transfuse" / "tour.py"))
    tour.tour_tutorials()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "skipped" in lines[1]
