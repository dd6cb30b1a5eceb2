"""Small programs reaching every primitive, shared by the CUDA tests (PTX and simulator).

Each entry is (name, function, arguments). The functions are the jit-equivalence
catalogue's (tests/test_jit_equivalence.py) at sizes the CUDA simulator runs quickly
(it runs every GPU thread as a Python thread), plus the primitives that catalogue reaches
only through other transforms (random_split, random_fold_in, rsqrt, iota).
"""

from __future__ import annotations

import numpy as np

import transfuse as tx
import transfuse.lax as lax
import transfuse.numpy as tnp
from tests import test_jit_equivalence as catalogue
from tests.helpers import rand


def light_reductions(x):
    """Sums, products, extrema, arg-reductions and scans over each kind of axis."""
    return (x.sum(1), x.prod(0), x.max(2), x.min((0, 2)), x.mean(), x.var(-1),
            (x > 0).any(1), (x > 0).all(0), np.argmax(x, 1), np.argmin(x, 2),
            np.cumsum(x, 1), np.cumprod(x[:, ::-1], 2))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def keys_and_iota(x, key):
    """random_split (vmap with different randomness), random_fold_in, rsqrt, iota, squeeze."""
    noisy = tx.vmap(lambda r: r + tnp.random.normal(size=r.shape), randomness="different")(x)
    return (noisy, tnp.random.uniform(size=(3,)), lax.random_fold_in(key, 3),
            lax.rsqrt(np.abs(x) + 1), lax.iota(np.int32, (2, 3), 1),
            lax.squeeze(x[:1] * 2, (0,)), lax.squeeze(x[:, :1], (1,)))


def convs(x, w):
    return (lax.conv_general_dilated(x, w, (2, 1), ((1, 2), (0, 1)), rhs_dilation=(1, 2),
                                     feature_group_count=2),
            lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), lhs_dilation=(2, 1),
                                     feature_group_count=2))


def programs(dtype: str = "float32") -> list[tuple[str, object, tuple]]:
    """The catalogue in one dtype, with seeded random inputs."""
    rng = np.random.default_rng(11)
    r = lambda shape, dt=dtype: rand(rng, shape, dt)  # noqa: E731
    ints = r((4, 5), "int32"), r((5,), "int32")
    ints[1][0] = 0  # division and modulo by zero give 0, as in NumPy
    return [
        ("unary", catalogue.unary_math, (r((2, 3)), catalogue.positive(rng, (2, 3), dtype),
                                         rng.uniform(-0.9, 0.9, (2, 3)).astype(dtype))),
        ("unary-0d", catalogue.unary_math, (r(()), catalogue.positive(rng, (), dtype),
                                            np.asarray(0.3, dtype))),
        ("binary-broadcast", catalogue.binary_float, (r((3, 1)), r((1, 4)))),
        ("integers", catalogue.integer_ops, (*ints, rng.random((4, 5)) < 0.5)),
        ("reductions", light_reductions, (r((2, 3, 4)),)),
        ("softmax", softmax, (r((3, 9)),)),
        ("shapes", catalogue.shape_ops, (r((2, 3, 4)), r((4,)))),
        ("gather-scatter", catalogue.indexing, (r((4, 5)), np.array([3, 0, 3, -1]), r((5,)))),
        ("dynamic-slices", catalogue.dynamic_ops, (r((4, 5)), np.int64(-2), np.int64(9))),
        ("dot", catalogue.contractions, (r((3, 5)), r((5, 3)), r((2, 5, 5)), r((3,)),
                                         r((5,)))),
        ("dense-layers", lambda x, w, b: (np.tanh(x @ w + b), np.maximum(x @ w.T.T, 0) * 2),
         (r((3, 4)), r((4, 5)), r((5,)))),
        ("conv", convs, (r((1, 4, 5, 4)), r((2, 2, 3, 2)))),
        ("keys-iota", keys_and_iota, (r((2, 3)), np.asarray(7, np.uint64))),
        ("size-0", lambda a, b: (a * 2 + b, a.sum(0), np.exp(a).max(1), a @ a.T),
         (r((0, 3)), r((3,)))),
    ]
