"""transfuse.nn.utils: functional_call, stack_module_state, replace_all_batch_norm_modules_."""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.ir import interpret
from transfuse.ir.errors import TransfuseTypeError, TransfuseValueError

import transfuse as tx
import transfuse.nn as nn
from transfuse.nn.utils import (
    functional_call,
    replace_all_batch_norm_modules_,
    stack_module_state,
)


def randn(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def snapshot(module: nn.Module) -> dict:
    """Every parameter and buffer, by name: the objects and copies of their values."""
    named = dict(module.named_parameters(remove_duplicate=False))
    named.update(module.named_buffers(remove_duplicate=False))
    return {k: (v, v.copy()) for k, v in named.items()}


def assert_unchanged(module: nn.Module, before: dict) -> None:
    after = snapshot(module)
    assert after.keys() == before.keys()
    for name, (obj, value) in before.items():
        assert after[name][0] is obj, name
        np.testing.assert_array_equal(obj, value)


def run_traced(fn, *args):
    graph = tx.make_graph(fn)(*args)
    outs = interpret(graph, tx.tree_flatten((args, {}))[0])
    return tx.tree_unflatten(graph.out_tree, outs)


def mlp(seed: int = 0) -> nn.Module:
    nn.init.seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2))


def new_values(module: nn.Module, rng: np.random.Generator) -> dict:
    """Fresh seeded random values for every parameter of module."""
    return {k: randn(rng, *v.shape, dtype=v.dtype) for k, v in module.named_parameters()}


def reference(params: dict, buffers: dict, x: np.ndarray) -> np.ndarray:
    """The mlp's forward in eval mode written out by hand."""
    h = x @ params["0.weight"].T + params["0.bias"]
    h = (h - buffers["1.running_mean"]) / np.sqrt(buffers["1.running_var"] + 1e-5)
    h = np.tanh(h * params["1.weight"] + params["1.bias"])
    return h @ params["3.weight"].T + params["3.bias"]


# -- functional_call ----------------------------------------------------------------------
def test_full_dict_and_tuple_of_dicts():
    model = mlp().eval()
    rng = np.random.default_rng(0)
    params, x = new_values(model, rng), randn(rng, 5, 4)
    buffers = {k: v.copy() for k, v in model.named_buffers()}
    buffers["1.running_var"] = np.abs(randn(rng, 6)) + 0.5
    before = snapshot(model)
    expected = reference(params, buffers, x)
    np.testing.assert_allclose(functional_call(model, {**params, **buffers}, (x,)), expected,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(functional_call(model, (params, buffers), x), expected,
                               rtol=1e-5, atol=1e-6)  # a single non-tuple argument
    np.testing.assert_allclose(functional_call(model, [params, buffers], args=(x,),
                                               strict=True), expected, rtol=1e-5, atol=1e-6)
    assert_unchanged(model, before)


def test_partial_dict_keeps_the_modules_other_values():
    model = mlp().eval()
    rng = np.random.default_rng(1)
    x = randn(rng, 3, 4)
    new_bias = randn(rng, 2)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    expected = reference({**params, "3.bias": new_bias}, buffers, x)
    np.testing.assert_allclose(functional_call(model, {"3.bias": new_bias}, (x,)), expected,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x), reference(params, buffers, x), rtol=1e-5, atol=1e-6)


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(np.full(3, 2.0, np.float32))

    def forward(self, x, *, scale=1.0, shift=None):
        out = x * self.weight * scale
        return out if shift is None else out + shift


def test_kwargs_and_args_none():
    model = Scaled()
    w, x = np.array([1.0, -1.0, 3.0], np.float32), np.ones(3, np.float32)
    np.testing.assert_allclose(functional_call(model, {"weight": w}, (x,), {"scale": 2.0}),
                               2 * w)
    np.testing.assert_allclose(
        functional_call(model, {"weight": w}, args=x, kwargs={"shift": w}), 2 * w)

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.value = nn.Parameter(np.zeros(2))

        def forward(self):
            return self.value * 1
    np.testing.assert_array_equal(functional_call(Constant(), {"value": np.ones(2)}), 1)


class Tied(nn.Module):
    """An encoder and decoder that share one weight array."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 3, bias=False)
        self.decoder = nn.Linear(3, 3, bias=False)
        self.decoder.weight = nn.Parameter(self.encoder.weight)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def test_tied_weights():
    model = Tied()
    assert [k for k, _ in model.named_parameters()] == ["encoder.weight"]
    rng = np.random.default_rng(2)
    x, w = randn(rng, 2, 3), randn(rng, 3, 3)
    original = model.encoder.weight.copy()
    both_new = x @ w.T @ w.T
    np.testing.assert_allclose(functional_call(model, {"encoder.weight": w}, (x,)), both_new,
                               rtol=1e-5)
    np.testing.assert_allclose(functional_call(model, {"decoder.weight": w}, (x,)), both_new,
                               rtol=1e-5)
    untied = functional_call(model, {"encoder.weight": w}, (x,), tie_weights=False)
    np.testing.assert_allclose(untied, x @ w.T @ original.T, rtol=1e-5)
    same = functional_call(model, {"encoder.weight": w, "decoder.weight": w}, (x,))
    np.testing.assert_allclose(same, both_new, rtol=1e-5)
    with pytest.raises(TransfuseValueError, match="tied") as info:
        functional_call(model, {"encoder.weight": w, "decoder.weight": w.copy()}, (x,))
    assert "decoder.weight" in str(info.value) and "encoder.weight" in str(info.value)
    two = functional_call(model, {"encoder.weight": w, "decoder.weight": 2 * w}, (x,),
                          tie_weights=False)
    np.testing.assert_allclose(two, x @ w.T @ (2 * w).T, rtol=1e-5)
    assert model.encoder.weight is model.decoder.weight
    np.testing.assert_array_equal(model.encoder.weight, original)
    functional_call(model, {"encoder.weight": w}, (x,), strict=True)  # tied names filled in


def test_strict_names_missing_and_unexpected_keys():
    model = mlp()
    params = dict(model.named_parameters())
    x = np.ones((2, 4), np.float32)
    with pytest.raises(TransfuseValueError) as info:
        functional_call(model, params, (x,), strict=True)  # buffers missing
    message = str(info.value)
    assert "Missing key(s)" in message and "'1.running_mean'" in message
    assert "Unexpected" not in message
    everything = {**params, **dict(model.named_buffers()), "3.scale": np.ones(2)}
    with pytest.raises(TransfuseValueError, match=r"Unexpected key\(s\): '3.scale'"):
        functional_call(model, everything, (x,), strict=True)


def test_unknown_names_and_bad_inputs_are_errors():
    model = mlp()
    x = np.ones((2, 4), np.float32)
    with pytest.raises(TransfuseValueError, match="'3.scale'"):
        functional_call(model, {"3.scale": np.ones(2)}, (x,))
    with pytest.raises(TransfuseValueError, match="'9.weight'"):
        functional_call(model, {"9.weight": np.ones(2)}, (x,))
    with pytest.raises(TransfuseValueError, match="more than one dictionary"):
        functional_call(model, ({"3.bias": np.ones(2)}, {"3.bias": np.ones(2)}), (x,))
    with pytest.raises(TransfuseTypeError, match="'3.bias'"):
        functional_call(model, {"3.bias": [1.0, 2.0]}, (x,))
    with pytest.raises(TransfuseTypeError, match="dict"):
        functional_call(model, ["not a dict"], (x,))
    with pytest.raises(TransfuseTypeError, match="Module"):
        functional_call(lambda x: x, {}, (x,))


def test_parameter_values_and_plain_array_attributes():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(np.ones(2))
            self.offset = np.zeros(2)  # a plain attribute, swapped as torch swaps it

        def forward(self, x):
            return x * self.weight + self.offset
    model = Plain()
    out = functional_call(model, {"weight": nn.Parameter(np.full(2, 3.0)),
                                  "offset": np.ones(2)}, (np.ones(2),))
    np.testing.assert_array_equal(out, [4.0, 4.0])
    np.testing.assert_array_equal(model.offset, 0)
    assert type(model.weight) is np.ndarray


def test_module_unchanged_after_a_call_that_raises():
    model = mlp()
    before = snapshot(model)
    params = new_values(model, np.random.default_rng(3))
    params["0.weight"] = params["0.weight"][:, :3]  # wrong shape: the forward fails
    with pytest.raises(ValueError):
        functional_call(model, params, (np.ones((2, 4), np.float32),))
    assert_unchanged(model, before)


def test_batch_norm_updates_go_to_the_dict_passed_in():
    model = mlp()  # training mode
    rng = np.random.default_rng(4)
    x = randn(rng, 8, 4) * 2 + 1
    buffers = {k: v.copy() for k, v in model.named_buffers()}
    objects = dict(buffers)
    before = snapshot(model)
    functional_call(model, buffers, (x,))
    assert_unchanged(model, before)  # the module's own buffers did not move
    assert all(buffers[k] is objects[k] for k in buffers)  # updated in place
    assert int(buffers["1.num_batches_tracked"]) == 1
    h = x @ model[0].weight.T + model[0].bias
    np.testing.assert_allclose(buffers["1.running_mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(buffers["1.running_var"], 0.9 + 0.1 * h.var(0, ddof=1),
                               rtol=1e-5)


def test_rebound_attributes_are_written_back():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", np.zeros((), np.int64))

        def forward(self, x):
            self.count = self.count + 1  # rebinds, not in place
            return x
    model, state = Counter(), {"count": np.array(5)}
    functional_call(model, state, (np.ones(1),))
    assert int(state["count"]) == 6 and int(model.count) == 0


def test_functional_call_traces():
    model = mlp()
    rng = np.random.default_rng(5)
    params, x = new_values(model, rng), randn(rng, 6, 4)
    buffers = {k: v.copy() for k, v in model.named_buffers()}
    traced_buffers = {k: v.copy() for k, v in buffers.items()}
    expected = functional_call(model, (params, buffers), (x,))
    out = run_traced(lambda p, b, x: functional_call(model, (p, b), (x,)), params,
                     traced_buffers, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    for name in buffers:
        np.testing.assert_allclose(traced_buffers[name], buffers[name], rtol=1e-6)


# -- stack_module_state -------------------------------------------------------------------
def test_stack_module_state_shapes_and_values():
    models = [mlp(seed) for seed in range(3)]
    params, buffers = stack_module_state(models)
    assert list(params) == [k for k, _ in models[0].named_parameters()]
    assert list(buffers) == [k for k, _ in models[0].named_buffers()]
    for name, stacked in {**params, **buffers}.items():
        own = [dict(m.state_dict())[name] for m in models]
        assert stacked.shape == (3,) + own[0].shape and stacked.dtype == own[0].dtype
        for i in range(3):
            np.testing.assert_array_equal(stacked[i], own[i])
            assert not np.shares_memory(stacked, own[i])
    assert not np.array_equal(params["0.weight"][0], params["0.weight"][1])
    x = randn(np.random.default_rng(6), 5, 4)
    for i, model in enumerate(models):  # each slice drives its own model's forward
        slice_i = {k: v[i] for k, v in params.items()}
        model.eval()
        np.testing.assert_allclose(functional_call(model, slice_i, (x,)), model(x), rtol=1e-6)


def test_stack_module_state_mismatches_are_errors():
    with pytest.raises(TransfuseValueError, match="at least one"):
        stack_module_state([])
    with pytest.raises(TransfuseTypeError, match="same class"):
        stack_module_state([nn.Linear(2, 2), nn.Tanh()])
    with pytest.raises(TransfuseValueError, match=r"'weight' is \(3, 2\)"):
        stack_module_state([nn.Linear(2, 2), nn.Linear(2, 3)])
    with pytest.raises(TransfuseValueError, match="share one structure"):
        stack_module_state([nn.Linear(2, 2), nn.Linear(2, 2, bias=False)])
    with pytest.raises(TransfuseValueError, match="same mode"):
        stack_module_state([nn.Linear(2, 2), nn.Linear(2, 2).eval()])
    with pytest.raises(TransfuseValueError, match="float64"):
        stack_module_state([nn.Linear(2, 2), nn.Linear(2, 2, dtype=np.float64)])


# -- replace_all_batch_norm_modules_ ------------------------------------------------------
def test_replace_all_batch_norm_modules():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3),
                          nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12)))
    assert replace_all_batch_norm_modules_(model) is model
    for bn in (model[1], model[2][1]):
        assert not bn.track_running_stats
        assert bn.running_mean is None and bn.running_var is None
        assert bn.num_batches_tracked is None
    assert list(model.named_buffers()) == []
    assert [k for k, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "2.1.weight", "2.1.bias"]
    x = randn(np.random.default_rng(7), 4, 2, 4, 4)
    train_out = model(x)
    model.eval()  # still normalises by batch statistics
    np.testing.assert_allclose(model(x), train_out, rtol=1e-6)
    h = model[0](x)
    expected = (h - h.mean((0, 2, 3), keepdims=True)) / np.sqrt(
        h.var((0, 2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(model[1](h), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(TransfuseTypeError, match="Module"):
        replace_all_batch_norm_modules_("model")


def test_replace_all_batch_norm_matches_torch():
    torch = pytest.importorskip("torch")
    ours = replace_all_batch_norm_modules_(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    theirs = torch.func.replace_all_batch_norm_modules_(
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    x = randn(np.random.default_rng(8), 5, 3)
    for mode in (True, False):
        ours.train(mode)
        theirs.train(mode)
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_functional_call_matches_torch():
    torch = pytest.importorskip("torch")
    ours = mlp()
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6),
                                 torch.nn.Tanh(), torch.nn.Linear(6, 2))
    rng = np.random.default_rng(9)
    params, x = new_values(ours, rng), randn(rng, 7, 4)
    ours_buffers = {k: v.copy() for k, v in ours.named_buffers()}
    theirs_buffers = {k: torch.from_numpy(v.copy()) for k, v in ours.named_buffers()}
    out = functional_call(ours, (params, ours_buffers), (x,))
    expected = torch.func.functional_call(
        theirs, ({k: torch.from_numpy(v) for k, v in params.items()}, theirs_buffers),
        (torch.from_numpy(x),))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    for name, value in theirs_buffers.items():
        np.testing.assert_allclose(ours_buffers[name], value.numpy(), rtol=1e-5, atol=1e-7)


# -- under transforms ---------------------------------------------------------------------
def test_batch_norm_training_under_a_transform_needs_the_buffers():
    from transfuse.ir.errors import MutationError
    model = mlp()
    rng = np.random.default_rng(10)
    params, x = new_values(model, rng), randn(rng, 5, 4)
    with pytest.raises(MutationError, match="replace_all_batch_norm_modules_"):
        tx.make_graph(lambda p: functional_call(model, p, (x,)))(params)
    buffers = {k: v.copy() for k, v in model.named_buffers()}
    tx.make_graph(lambda p, b: functional_call(model, (p, b), (x,)))(params, buffers)
    model.eval()
    tx.make_graph(lambda p: functional_call(model, p, (x,)))(params)
    replace_all_batch_norm_modules_(model.train())
    tx.make_graph(lambda p: functional_call(model, p, (x,)))(params)


def test_vmap_over_stacked_models_matches_each_model():
    vmap = tx.vmap
    models = [nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                            nn.Linear(12, 2)) for _ in range(4)]
    params, buffers = stack_module_state(models)
    x = randn(np.random.default_rng(11), 5, 2, 4, 4)
    out = vmap(lambda p, b, x: functional_call(models[0], (p, b), (x,)),
               in_dims=(0, 0, None))(params, buffers, x)
    expected = np.stack([model(x) for model in models])  # each updates its running stats
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    for name, stacked in buffers.items():  # the stacked buffers got the same updates
        for i, model in enumerate(models):
            np.testing.assert_allclose(stacked[i], model.state_dict()[name], rtol=1e-5,
                                       atol=1e-7)
