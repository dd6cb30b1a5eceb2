"""transfuse.nn: the module system, layers and functional ops, checked against torch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from transfuse.ir import interpret
from transfuse.ir.errors import (
    DTypeError,
    ShapeError,
    TransfuseError,
    TransfuseIndexError,
    TransfuseTypeError,
    TransfuseValueError,
)

import transfuse as tx
import transfuse.nn as nn
import transfuse.nn.functional as F

torch = pytest.importorskip("torch")
tF = torch.nn.functional

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-5, np.float64: 1e-12}


# -- helpers ----------------------------------------------------------------------------
def randn(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def randomize(module: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Seeded random values in every floating parameter and buffer (variances positive)."""
    for name, array in module.state_dict().items():
        if np.issubdtype(array.dtype, np.floating):
            values = rng.standard_normal(array.shape)
            array[...] = np.abs(values) + 0.5 if name.endswith("running_var") else values
    return module


def to_torch_state(module: nn.Module) -> dict:
    return {k: torch.from_numpy(np.array(v)) for k, v in module.state_dict().items()}


def from_torch_state(tmodule) -> dict:
    return {k: v.detach().numpy().copy() for k, v in tmodule.state_dict().items()}


def torch_out(tmodule, x):
    x = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    return tmodule(x).detach().numpy()


def run_traced(fn, *args):
    """fn traced into a transfuse graph, then run by the reference interpreter."""
    graph = tx.make_graph(fn)(*args)
    leaves = tx.tree_flatten((args, {}))[0]
    outs = interpret(graph, leaves)
    return tx.tree_unflatten(graph.out_tree, outs)


def close(actual, expected, dtype=np.float32) -> None:
    dtype = np.dtype(dtype).type
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype])


# -- layers against torch ---------------------------------------------------------------
LAYER_CASES = {
    "linear": (lambda n: n.Linear(5, 3), (4, 5)),
    "linear_1d_input": (lambda n: n.Linear(5, 3), (5,)),
    "linear_3d_input": (lambda n: n.Linear(5, 3), (2, 4, 5)),
    "linear_no_bias": (lambda n: n.Linear(5, 3, bias=False), (4, 5)),
    "conv": (lambda n: n.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    "conv_stride_pad": (lambda n: n.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 6)),
    "conv_dilation": (lambda n: n.Conv2d(3, 4, (3, 2), dilation=(2, 1), padding=(1, 2)),
                      (2, 3, 9, 8)),
    "conv_groups": (lambda n: n.Conv2d(6, 4, 3, groups=2, bias=False), (2, 6, 5, 5)),
    "conv_depthwise": (lambda n: n.Conv2d(3, 6, 3, groups=3, stride=(1, 2)), (1, 3, 6, 7)),
    "conv_same": (lambda n: n.Conv2d(2, 3, (4, 3), padding="same", dilation=2), (2, 2, 8, 8)),
    "conv_valid": (lambda n: n.Conv2d(2, 3, 2, padding="valid"), (2, 2, 5, 5)),
    "conv_unbatched": (lambda n: n.Conv2d(3, 2, 3, padding=1), (3, 5, 5)),
    "batchnorm1d": (lambda n: n.BatchNorm1d(4), (8, 4)),
    "batchnorm1d_3d": (lambda n: n.BatchNorm1d(4), (6, 4, 5)),
    "batchnorm2d": (lambda n: n.BatchNorm2d(3), (4, 3, 5, 5)),
    "batchnorm2d_no_affine": (lambda n: n.BatchNorm2d(3, affine=False), (4, 3, 2, 3)),
    "batchnorm2d_no_stats": (lambda n: n.BatchNorm2d(3, track_running_stats=False),
                             (4, 3, 2, 3)),
    "batchnorm2d_eps_momentum": (lambda n: n.BatchNorm2d(3, eps=1e-3, momentum=0.3),
                                 (4, 3, 2, 3)),
    "layernorm": (lambda n: n.LayerNorm(5), (3, 5)),
    "layernorm_2d": (lambda n: n.LayerNorm((4, 5), eps=1e-3), (2, 3, 4, 5)),
    "layernorm_no_affine": (lambda n: n.LayerNorm(5, elementwise_affine=False), (3, 5)),
    "layernorm_no_bias": (lambda n: n.LayerNorm(5, bias=False), (3, 5)),
    "relu": (lambda n: n.ReLU(), (4, 6)),
    "tanh": (lambda n: n.Tanh(), (4, 6)),
    "sigmoid": (lambda n: n.Sigmoid(), (4, 6)),
    "gelu": (lambda n: n.GELU(), (4, 6)),
    "gelu_tanh": (lambda n: n.GELU(approximate="tanh"), (4, 6)),
    "flatten": (lambda n: n.Flatten(), (2, 3, 4, 5)),
    "flatten_middle": (lambda n: n.Flatten(1, 2), (2, 3, 4, 5)),
    "identity": (lambda n: n.Identity(), (2, 3)),
    "dropout": (lambda n: n.Dropout(0.3), (4, 6)),
    "mlp": (lambda n: n.Sequential(n.Linear(6, 8), n.LayerNorm(8), n.GELU(), n.Linear(8, 3)),
            (5, 6)),
    "cnn": (lambda n: n.Sequential(n.Conv2d(2, 4, 3, padding=1), n.BatchNorm2d(4), n.ReLU(),
                                   n.Conv2d(4, 2, 3, stride=2), n.Flatten(), n.Tanh()),
            (3, 2, 6, 6)),
}


def make_pair(case: str, dtype=np.float32, seed: int = 0):
    """The same layer built in transfuse and torch, with the same random weights."""
    factory, shape = LAYER_CASES[case]
    ours, theirs = factory(nn), factory(torch.nn)
    if dtype == np.float64:
        ours, theirs = ours.double(), theirs.double()
    rng = np.random.default_rng(seed)
    randomize(ours, rng)
    theirs.load_state_dict(to_torch_state(ours))
    return ours, theirs, randn(rng, *shape, dtype=dtype)


# Dropout in training mode draws random numbers: tested on its own below.
CASES_AND_MODES = [(case, mode) for case in sorted(LAYER_CASES) for mode in ("train", "eval")
                   if not (case.startswith("dropout") and mode == "train")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case, mode", CASES_AND_MODES)
def test_layer_forward_matches_torch(case, mode, dtype):
    ours, theirs, x = make_pair(case, dtype)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    out = ours(x)
    assert out.dtype == dtype
    close(out, torch_out(theirs, x), dtype)
    for name, value in from_torch_state(theirs).items():  # running statistics too
        close(ours.state_dict()[name], value, dtype)


@pytest.mark.parametrize("case, mode", CASES_AND_MODES)
def test_layer_forward_traces(case, mode):
    """The forward traces into a graph whose result (and buffer updates) match eager."""
    ours, _, x = make_pair(case)
    ours.train(mode == "train")
    eager_state = {k: v.copy() for k, v in ours.state_dict().items()}
    traced_state = {k: v.copy() for k, v in ours.state_dict().items()}
    expected = nn.functional_call(ours, eager_state, (x,))
    out = run_traced(lambda p, x: nn.functional_call(ours, p, (x,)), traced_state, x)
    close(out, expected)
    for name in eager_state:
        close(traced_state[name], eager_state[name])


def test_embedding_matches_torch():
    rng = np.random.default_rng(1)
    for kwargs in ({}, {"padding_idx": 2}, {"padding_idx": -1}):
        ours, theirs = nn.Embedding(10, 4, **kwargs), torch.nn.Embedding(10, 4, **kwargs)
        assert ours.padding_idx == theirs.padding_idx
        randomize(ours, rng)
        theirs.load_state_dict(to_torch_state(ours))
        for dtype in (np.int64, np.int32):
            idx = rng.integers(0, 10, size=(3, 5)).astype(dtype)
            close(ours(idx), torch_out(theirs, idx.astype(np.int64)))
            close(run_traced(ours, idx), ours(idx))
    with pytest.raises(DTypeError, match="integers"):
        ours(np.ones((2, 3), np.float32))


def test_embedding_padding_row_is_zero():
    emb = nn.Embedding(6, 3, padding_idx=4)
    np.testing.assert_array_equal(emb.weight[4], 0)
    assert np.all(emb.weight[:4] != 0)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (4, 3, 2, 2)])
def test_batchnorm_running_stats_match_torch(shape, momentum):
    """Several training steps, then eval: running mean/var (unbiased) and the count agree."""
    n_cls, t_cls = ((nn.BatchNorm2d, torch.nn.BatchNorm2d) if len(shape) == 4
                    else (nn.BatchNorm1d, torch.nn.BatchNorm1d))
    ours, theirs = n_cls(3, momentum=momentum), t_cls(3, momentum=momentum)
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = randn(rng, *shape) * 3 + 1
        close(ours(x), torch_out(theirs, x))
    for name, value in from_torch_state(theirs).items():
        close(ours.state_dict()[name], value)
    assert int(ours.num_batches_tracked) == 3
    ours.eval()
    theirs.eval()
    x = randn(rng, *shape)
    close(ours(x), torch_out(theirs, x))
    assert int(ours.num_batches_tracked) == 3  # eval does not count


def test_batchnorm_errors():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ShapeError, match="expected 4D input"):
        bn(np.ones((2, 3), np.float32))
    with pytest.raises(ShapeError, match="num_features=3"):
        bn(np.ones((2, 4, 2, 2), np.float32))
    with pytest.raises(TransfuseValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(np.ones((1, 3), np.float32))


def test_dropout_train_statistics():
    tx.random.seed(0)
    x = np.random.default_rng(3).uniform(1, 2, size=(200, 100)).astype(np.float32)
    layer = nn.Dropout(0.25)
    out = layer(x)
    assert out.dtype == np.float32
    dropped = out == 0
    assert abs(dropped.mean() - 0.25) < 0.02
    close(out[~dropped], x[~dropped] / 0.75)
    layer.eval()
    assert layer(x) is x


def test_dropout_is_seeded_and_edge_probabilities():
    x = np.random.default_rng(4).standard_normal((10, 10))
    tx.random.seed(7)
    first = F.dropout(x, 0.5)
    tx.random.seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5), first)
    np.testing.assert_array_equal(F.dropout(x, 0.0), x)
    np.testing.assert_array_equal(F.dropout(x, 1.0), np.zeros_like(x))
    np.testing.assert_array_equal(F.dropout(x, 0.5, training=False), x)
    with pytest.raises(TransfuseValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


# -- names, shapes and state dicts against torch ------------------------------------------
def composite(n):
    """A model with nesting, a Sequential, buffers, and a parameter-free layer."""
    class Net(n.Module):
        def __init__(self):
            super().__init__()
            self.features = n.Sequential(n.Conv2d(2, 4, 3), n.BatchNorm2d(4), n.ReLU())
            self.head = n.Sequential(n.Flatten(), n.Linear(64, 8), n.LayerNorm(8),
                                     n.Dropout(0.1), n.Linear(8, 3))
            self.embed = n.Embedding(7, 2)

        def forward(self, x):
            return self.head(self.features(x))
    return Net()


def test_names_and_shapes_match_torch():
    ours, theirs = composite(nn), composite(torch.nn)

    def summary(named):
        return [(k, tuple(v.shape)) for k, v in named]
    assert summary(ours.named_parameters()) == summary(theirs.named_parameters())
    assert summary(ours.named_buffers()) == summary(theirs.named_buffers())
    assert summary(ours.state_dict().items()) == summary(theirs.state_dict().items())
    assert [k for k, _ in ours.named_modules()] == [k for k, _ in theirs.named_modules()]
    assert [k for k, _ in ours.named_children()] == [k for k, _ in theirs.named_children()]
    assert all(type(p) is np.ndarray for p in ours.parameters())
    assert all(p.dtype == np.float32 for p in ours.parameters())


def test_state_dict_copies_both_ways():
    ours, theirs = composite(nn), composite(torch.nn)
    x = randn(np.random.default_rng(5), 3, 2, 6, 6)
    for model in (ours, theirs):
        model.eval()
    ours.load_state_dict(from_torch_state(theirs))  # torch -> transfuse
    close(ours(x), torch_out(theirs, x))
    randomize(ours, np.random.default_rng(6))
    theirs.load_state_dict(to_torch_state(ours))  # transfuse -> torch
    close(ours(x), torch_out(theirs, x))


def test_repr_matches_torch():
    for case in ("mlp", "cnn", "conv_same", "conv_groups", "conv_dilation", "linear_no_bias",
                 "batchnorm2d_no_affine", "layernorm_no_bias", "gelu_tanh", "flatten_middle",
                 "dropout", "sigmoid", "identity"):
        factory, _ = LAYER_CASES[case]
        assert repr(factory(nn)) == repr(factory(torch.nn)), case
    assert repr(composite(nn)) == repr(composite(torch.nn))
    assert repr(nn.Embedding(5, 2, padding_idx=1)) == repr(torch.nn.Embedding(5, 2, padding_idx=1))
    assert repr(nn.BatchNorm1d(3, momentum=None)) == repr(torch.nn.BatchNorm1d(3, momentum=None))


# -- functional ops against torch ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_match_torch(dtype):
    x = randn(np.random.default_rng(8), 4, 7, dtype=dtype) * 3
    tx_ = torch.from_numpy(x)
    close(F.relu(x), tF.relu(tx_).numpy(), dtype)
    close(F.tanh(x), torch.tanh(tx_).numpy(), dtype)
    close(F.sigmoid(x), torch.sigmoid(tx_).numpy(), dtype)
    close(F.gelu(x), tF.gelu(tx_).numpy(), dtype)
    close(F.gelu(x, approximate="tanh"), tF.gelu(tx_, approximate="tanh").numpy(), dtype)
    for dim in (0, 1, -1):
        close(F.softmax(x, dim), tF.softmax(tx_, dim).numpy(), dtype)
        close(F.log_softmax(x, dim=dim), tF.log_softmax(tx_, dim=dim).numpy(), dtype)
    assert F.softmax(x, 1).dtype == dtype
    close(F.softmax(x, 1, dtype=np.float64), tF.softmax(tx_, 1, dtype=torch.float64).numpy(),
          np.float64 if dtype == np.float64 else np.float32)


def test_relu_keeps_nan_and_softmax_is_stable():
    x = np.array([np.nan, -np.inf, -1.0, 0.0, 2.0], np.float32)
    np.testing.assert_array_equal(F.relu(x), tF.relu(torch.from_numpy(x)).numpy())
    big = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    close(F.softmax(big, 1), tF.softmax(torch.from_numpy(big), 1).numpy())
    close(F.log_softmax(big, 1), tF.log_softmax(torch.from_numpy(big), 1).numpy())
    with pytest.raises(TransfuseTypeError, match="dim"):
        F.softmax(big)


CE_OPTIONS = [
    {}, {"reduction": "sum"}, {"reduction": "none"}, {"weight": True},
    {"weight": True, "reduction": "none"}, {"ignore_index": 1}, {"ignore_index": -100},
    {"weight": True, "ignore_index": 2}, {"label_smoothing": 0.2},
    {"label_smoothing": 0.1, "weight": True, "ignore_index": 0},
    {"label_smoothing": 0.3, "reduction": "sum"}, {"label_smoothing": 0.3, "reduction": "none"},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 4), (4,), (3, 4, 5)])
@pytest.mark.parametrize("options", CE_OPTIONS, ids=str)
def test_cross_entropy_class_indices_matches_torch(options, shape, dtype):
    rng = np.random.default_rng(9)
    logits = randn(rng, *shape, dtype=dtype) * 2
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    target = rng.integers(0, 4, size=target_shape)
    if options.get("ignore_index", None) == -100 and target.ndim:
        target.flat[0] = -100
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = rng.uniform(0.5, 2, size=4).astype(dtype)
    expected = tF.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target),
                                **{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                   for k, v in kwargs.items()}).numpy()
    out = F.cross_entropy(logits, target, **kwargs)
    assert np.asarray(out).dtype == dtype
    close(out, expected, dtype)
    close(run_traced(lambda a, t: F.cross_entropy(a, t, **kwargs), logits, target), expected,
          dtype)


@pytest.mark.parametrize("options", [{}, {"reduction": "sum"}, {"reduction": "none"},
                                     {"weight": True}, {"label_smoothing": 0.25},
                                     {"weight": True, "label_smoothing": 0.1}], ids=str)
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4)])
def test_cross_entropy_probabilities_matches_torch(options, shape):
    rng = np.random.default_rng(10)
    logits = randn(rng, *shape)
    probs = F.softmax(randn(rng, *shape), 1)
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = rng.uniform(0.5, 2, size=3).astype(np.float32)
    expected = tF.cross_entropy(torch.from_numpy(logits), torch.from_numpy(probs),
                                **{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                   for k, v in kwargs.items()}).numpy()
    close(F.cross_entropy(logits, probs, **kwargs), expected)


def test_cross_entropy_errors():
    logits = randn(np.random.default_rng(11), 3, 4)
    with pytest.raises(TransfuseIndexError, match="out of range"):
        F.cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ShapeError, match="target must have shape"):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TransfuseValueError, match="reduction"):
        F.cross_entropy(logits, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ShapeError, match="weight"):
        F.cross_entropy(logits, np.array([0, 1, 2]), weight=np.ones(3, np.float32))
    with pytest.raises(DTypeError, match="integers"):
        F.nll_loss(logits, np.array([0.0, 1.0, 2.0], np.float32)[:, None].repeat(4, 1)[:, 0])


def test_nll_loss_matches_torch():
    rng = np.random.default_rng(12)
    logp = F.log_softmax(randn(rng, 6, 5), 1)
    target = rng.integers(0, 5, size=6)
    weight = rng.uniform(0.5, 2, 5).astype(np.float32)
    for kwargs in ({}, {"reduction": "sum"}, {"ignore_index": 3}):
        close(F.nll_loss(logp, target, **kwargs),
              tF.nll_loss(torch.from_numpy(logp), torch.from_numpy(target), **kwargs).numpy())
    close(F.nll_loss(logp, target, weight),
          tF.nll_loss(torch.from_numpy(logp), torch.from_numpy(target),
                      torch.from_numpy(weight)).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch(reduction, dtype):
    rng = np.random.default_rng(13)
    a, b = randn(rng, 4, 5, dtype=dtype), randn(rng, 4, 5, dtype=dtype)
    expected = tF.mse_loss(torch.from_numpy(a), torch.from_numpy(b), reduction=reduction)
    close(F.mse_loss(a, b, reduction=reduction), expected.numpy(), dtype)
    close(run_traced(lambda a, b: F.mse_loss(a, b, reduction), a, b), expected.numpy(), dtype)
    with pytest.warns(UserWarning, match="broadcast"):
        F.mse_loss(a, b[:1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [
    {}, {"stride": 2}, {"padding": 1}, {"padding": (2, 0)}, {"dilation": 2},
    {"dilation": (1, 2), "padding": "same"}, {"padding": "valid", "stride": (2, 1)},
    {"groups": 2}, {"groups": 4, "stride": 2, "padding": 1, "dilation": 2},
], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_torch(kwargs, bias, dtype):
    rng = np.random.default_rng(14)
    groups = kwargs.get("groups", 1)
    x = randn(rng, 2, 4, 9, 8, dtype=dtype)
    w = randn(rng, 8, 4 // groups, 3, 3, dtype=dtype)
    b = randn(rng, 8, dtype=dtype) if bias else None
    expected = tF.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                         None if b is None else torch.from_numpy(b), **kwargs).numpy()
    close(F.conv2d(x, w, b, **kwargs), expected, dtype)


def test_conv2d_errors():
    x, w = np.ones((1, 3, 5, 5), np.float32), np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(ShapeError, match="channels"):
        F.conv2d(x, w[:, :2])
    # mixed dtypes promote as NumPy (and linear) do, instead of raising
    assert F.conv2d(x.astype(np.float64), w).dtype == np.float64
    with pytest.raises(TransfuseValueError, match="strided"):
        F.conv2d(x, w, padding="same", stride=2)
    with pytest.raises(TransfuseTypeError, match="stride"):
        F.conv2d(x, w, stride=1.5)
    with pytest.raises(TransfuseValueError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_layer_norm_batch_norm_functional_match_torch(dtype):
    rng = np.random.default_rng(15)
    x, w, b = randn(rng, 4, 6, dtype=dtype), randn(rng, 3, 6, dtype=dtype), randn(rng, 3,
                                                                                  dtype=dtype)
    t = torch.from_numpy
    close(F.linear(x, w, b), tF.linear(t(x), t(w), t(b)).numpy(), dtype)
    close(F.linear(x, w), tF.linear(t(x), t(w)).numpy(), dtype)
    y = randn(rng, 2, 3, 4, 5, dtype=dtype)
    lw, lb = randn(rng, 4, 5, dtype=dtype), randn(rng, 4, 5, dtype=dtype)
    close(F.layer_norm(y, (4, 5), lw, lb, eps=1e-4),
          tF.layer_norm(t(y), (4, 5), t(lw), t(lb), eps=1e-4).numpy(), dtype)
    close(F.layer_norm(y, 5), tF.layer_norm(t(y), (5,)).numpy(), dtype)
    with pytest.raises(ShapeError, match="normalized_shape"):
        F.layer_norm(y, (3,))
    mean, var = randn(rng, 3, dtype=dtype), np.abs(randn(rng, 3, dtype=dtype)) + 0.5
    bw, bb = randn(rng, 3, dtype=dtype), randn(rng, 3, dtype=dtype)
    for training in (False, True):
        ours_m, ours_v, theirs_m, theirs_v = mean.copy(), var.copy(), t(mean.copy()), t(
            var.copy())
        out = F.batch_norm(y, ours_m, ours_v, bw, bb, training=training, momentum=0.2,
                           eps=1e-3)
        expected = tF.batch_norm(t(y), theirs_m, theirs_v, t(bw), t(bb), training=training,
                                 momentum=0.2, eps=1e-3)
        close(out, expected.numpy(), dtype)
        close(ours_m, theirs_m.numpy(), dtype)
        close(ours_v, theirs_v.numpy(), dtype)
    close(F.batch_norm(y, None, None, training=True),
          tF.batch_norm(t(y), None, None, training=True).numpy(), dtype)
    with pytest.raises(TransfuseValueError, match="training=False"):
        F.batch_norm(y, None, None)


@pytest.mark.parametrize("case", ["mlp", "cnn", "linear", "conv_groups", "layernorm_2d",
                                  "batchnorm2d"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_parameter_gradients_match_torch(case, mode):
    """grad of a loss w.r.t. the parameter dict (buffers passed alongside) against
    torch.func.grad on the same model and data."""
    grad = tx.grad
    ours, theirs, x = make_pair(case)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    buffers = {k: v.copy() for k, v in ours.named_buffers()}
    t_buffers = {k: torch.from_numpy(v.copy()) for k, v in buffers.items()}
    target = randn(np.random.default_rng(20), *ours(x.copy()).shape)
    ours.load_state_dict(from_torch_state(theirs))  # undo the running-stat update above

    def loss(params, buffers, x):
        return F.mse_loss(nn.functional_call(ours, (params, buffers), (x,)), target)

    def t_loss(params, buffers, x):
        out = torch.func.functional_call(theirs, (params, buffers), (x,))
        return tF.mse_loss(out, torch.from_numpy(target))
    grads = grad(loss)(dict(ours.named_parameters()), buffers, x)
    t_params = {k: v.detach() for k, v in theirs.named_parameters()}
    t_grads = torch.func.grad(t_loss)(t_params, t_buffers, torch.from_numpy(x))
    assert sorted(grads) == sorted(t_grads)
    for name in grads:
        np.testing.assert_allclose(grads[name], t_grads[name].numpy(), rtol=1e-4, atol=1e-6)


def test_input_gradients_of_functional_ops_match_torch():
    grad = tx.grad
    rng = np.random.default_rng(21)
    logits, target = randn(rng, 5, 4, dtype=np.float64), rng.integers(0, 4, size=5)
    weight = rng.uniform(0.5, 2, 4)
    ours = grad(lambda z: F.cross_entropy(z, target, weight, label_smoothing=0.1))(logits)
    theirs = torch.func.grad(lambda z: tF.cross_entropy(
        z, torch.from_numpy(target), torch.from_numpy(weight), label_smoothing=0.1))(
        torch.from_numpy(logits))
    close(ours, theirs.numpy(), np.float64)
    for f, tf in ((F.gelu, tF.gelu), (F.relu, tF.relu), (F.tanh, torch.tanh),
                  (lambda z: F.log_softmax(z, 1), lambda z: tF.log_softmax(z, 1)),
                  (lambda z: F.layer_norm(z, 4), lambda z: tF.layer_norm(z, (4,)))):
        g = grad(lambda z, f=f: (f(z) * logits).sum())(logits)
        tg = torch.func.grad(lambda z, tf=tf: (tf(z) * torch.from_numpy(logits)).sum())(
            torch.from_numpy(logits))
        close(g, tg.numpy(), np.float64)


# -- the module system --------------------------------------------------------------------
class Affine(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.full(3, 2.0, np.float32))
        self.register_buffer("shift", np.arange(3, dtype=np.float32))
        self.register_buffer("cache", np.zeros(3, np.float32), persistent=False)
        self.note = "plain attribute"

    def forward(self, x, offset=0.0):
        return x * self.scale + self.shift + offset


def test_registration_by_attribute():
    m = Affine()
    assert [k for k, _ in m.named_parameters()] == ["scale"]
    assert [k for k, _ in m.named_buffers()] == ["shift", "cache"]
    assert list(m.state_dict()) == ["scale", "shift"]  # non-persistent buffer left out
    assert type(m.scale) is np.ndarray and m.note == "plain attribute"
    x = randn(np.random.default_rng(16), 3)
    close(m(x), x * 2 + np.arange(3))
    close(m(x, offset=1.0), x * 2 + np.arange(3) + 1)
    new = np.ones(3, np.float32)
    m.scale = new  # a plain array replaces a registered parameter
    assert m.scale is new and list(dict(m.named_parameters())) == ["scale"]
    m.scale = None
    assert list(m.named_parameters()) == []
    del m.shift
    assert not hasattr(m, "shift")
    assert "scale" in dir(m)


def test_parameter_marker_keeps_arrays_plain_and_ties():
    data = np.ones((2, 2), np.float32)
    p = nn.Parameter(data)
    assert p.data is data and p.shape == (2, 2) and p.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(p), data)
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    a.weight = p
    b.weight = p
    assert a.weight is b.weight is data
    shared = nn.Sequential(a, b)
    assert [k for k, _ in shared.named_parameters()] == ["0.weight", "0.bias", "1.bias"]
    assert len(list(shared.named_parameters(remove_duplicate=False))) == 4
    assert list(shared.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_submodules_train_eval_and_traversal():
    model = composite(nn)
    assert model.training and all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    assert [k for k, _ in model.named_children()] == ["features", "head", "embed"]
    assert len(list(model.children())) == 3
    assert model.get_submodule("head.1") is model.head[1]
    with pytest.raises(AttributeError, match="no submodule 'nope'"):
        model.get_submodule("head.nope")
    with pytest.raises(TransfuseTypeError, match="bool"):
        model.train("yes")
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 2


def test_sequential_indexing():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and seq[1] is list(seq)[1]
    head = seq[1:]
    assert isinstance(head, nn.Sequential) and [k for k, _ in head.named_children()] == ["1", "2"]
    seq[1] = nn.Tanh()
    assert [k for k, _ in seq.named_children()] == ["0", "1", "2"]
    assert isinstance(seq[1], nn.Tanh)
    seq.append(nn.GELU())
    assert [k for k, _ in seq.named_modules()][-1] == "3"
    with pytest.raises(TransfuseIndexError, match="out of range"):
        seq[4]
    named = nn.Sequential({"enc": nn.Linear(2, 2), "act": nn.ReLU()})
    assert [k for k, _ in named.named_parameters()] == ["enc.weight", "enc.bias"]
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert [k for k, _ in layers.named_parameters()][::2] == ["0.weight", "1.weight",
                                                             "2.weight"]
    assert len(layers) == 3 and len(layers[:2]) == 2


def test_module_errors_are_transfuse_errors():
    m = Affine()
    with pytest.raises(AttributeError) as info:
        m.missing  # noqa: B018
    assert isinstance(info.value, TransfuseError) and "missing" in str(info.value)
    with pytest.raises(TransfuseTypeError, match="'scale'"):
        m.scale = [1.0, 2.0, 3.0]
    with pytest.raises(TransfuseValueError, match="'a.b'"):
        m.register_buffer("a.b", np.zeros(1))
    with pytest.raises(TransfuseValueError, match="already exists"):
        m.register_parameter("note", None)
    with pytest.raises(TransfuseTypeError, match="Module"):
        m.add_module("child", "not a module")
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)

    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))
    with pytest.raises(TransfuseTypeError, match="super"):
        Forgot()


def test_load_state_dict_strict_and_atomic():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    good = {k: randn(np.random.default_rng(17), *v.shape).astype(v.dtype)
            for k, v in before.items()}
    bad = dict(good, extra=np.zeros(1))
    del bad["0.bias"]
    bad["1.weight"] = np.zeros(5, np.float32)
    with pytest.raises(TransfuseValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert "'extra'" in message and "'0.bias'" in message
    assert "size mismatch for 1.weight" in message
    for k, v in model.state_dict().items():  # nothing was changed
        np.testing.assert_array_equal(v, before[k])
    del bad["1.weight"]
    result = model.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["0.bias", "1.weight"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(model[0].weight, good["0.weight"])
    weight = model[0].weight
    model.load_state_dict(good)
    assert model[0].weight is weight  # copied in place
    model.load_state_dict(good, assign=True)
    assert model[0].weight is good["0.weight"]


def test_deepcopy_and_dtype_conversion_keep_ties():
    a = nn.Linear(3, 3)
    model = nn.Sequential(a, nn.Linear(3, 3), nn.BatchNorm1d(3))
    model[1].weight = nn.Parameter(a.weight)
    clone = copy.deepcopy(model)
    assert clone[0].weight is clone[1].weight and clone[0].weight is not a.weight
    np.testing.assert_array_equal(clone[0].weight, a.weight)
    model.double()
    assert model[0].weight.dtype == np.float64 and model[0].weight is model[1].weight
    assert model[2].num_batches_tracked.dtype == np.int64
    with pytest.raises(TransfuseTypeError, match="floating"):
        model.to(np.int32)


# -- initialisation -----------------------------------------------------------------------
def test_init_is_seeded_and_follows_torch_bounds():
    nn.init.seed(3)
    first = nn.Linear(20, 5)
    nn.init.seed(3)
    again = nn.Linear(20, 5)
    np.testing.assert_array_equal(first.weight, again.weight)
    np.testing.assert_array_equal(first.bias, again.bias)
    other = nn.Linear(20, 5)
    assert not np.array_equal(first.weight, other.weight)
    bound = 1 / np.sqrt(20)
    assert np.abs(first.weight).max() <= bound and np.abs(first.weight).max() > 0.8 * bound
    conv = nn.Conv2d(4, 8, 3, groups=2)
    conv_bound = 1 / np.sqrt(2 * 9)
    assert np.abs(conv.weight).max() <= conv_bound and np.abs(conv.bias).max() <= conv_bound
    table = nn.Embedding(400, 50).weight
    assert abs(table.mean()) < 0.02 and abs(table.std() - 1) < 0.02
    bn, ln = nn.BatchNorm2d(3), nn.LayerNorm(4)
    np.testing.assert_array_equal(bn.weight, 1)
    np.testing.assert_array_equal(ln.bias, 0)


def test_init_functions_take_a_generator():
    w = np.empty((30, 40), np.float64)
    nn.init.kaiming_uniform_(w, a=np.sqrt(5), generator=np.random.default_rng(1))
    w2 = nn.init.kaiming_uniform_(np.empty((30, 40)), a=np.sqrt(5),
                                  generator=np.random.default_rng(1))
    np.testing.assert_array_equal(w, w2)
    assert np.abs(w).max() <= 1 / np.sqrt(40)
    nn.init.xavier_uniform_(w)
    assert np.abs(w).max() <= np.sqrt(6 / 70)
    assert nn.init.calculate_gain("relu") == pytest.approx(np.sqrt(2))
    with pytest.raises(TransfuseValueError, match="at least 2 dimensions"):
        nn.init.kaiming_uniform_(np.empty(3))
    assert nn.Linear(2, 2, dtype=np.float64).weight.dtype == np.float64
    with pytest.raises(TransfuseTypeError, match="floating"):
        nn.Linear(2, 2, dtype=np.int32)


def test_batch_norm_running_stats_updated_under_grad():
    grad = tx.grad
    ours, theirs, x = make_pair("batchnorm2d")
    buffers = {k: v.copy() for k, v in ours.named_buffers()}
    t_buffers = {k: torch.from_numpy(v.copy()) for k, v in buffers.items()}
    grad(lambda p, b: nn.functional_call(ours, (p, b), (x,)).sum())(
        dict(ours.named_parameters()), buffers)
    torch.func.grad(lambda p, b: torch.func.functional_call(theirs, (p, b), (
        torch.from_numpy(x),)).sum())({k: v.detach() for k, v in theirs.named_parameters()},
                                      t_buffers)
    for name, value in t_buffers.items():
        close(buffers[name], value.numpy())
