"""Programs for the CUDA tests (PTX and simulator): the catalogue's families and whole programs.

Each entry is (name, function, arguments): one program a family of the operation
catalogue (tests/opinfo.py: every function with a CUDA kernel, its first sample in the
dtype), which tests/test_opinfo.py compiles to PTX and tests/test_cuda_sim.py runs in
numba-cuda's simulator; and whole programs beyond single functions (reductions of every
kind at once, a softmax, dense layers, convolutions, random keys under vmap, NumPy's
integer division by zero, size-0 programs) at sizes the simulator runs quickly (it runs
every GPU thread as a Python thread).
"""

from __future__ import annotations

import numpy as np

import transfuse as tx
import transfuse.lax as lax
import transfuse.numpy as tnp
from tests import opinfo
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


def family_programs(dtype: str) -> list[tuple[str, object, tuple]]:
    """One program a catalogue family: its functions with a CUDA kernel, in the dtype."""
    from tests.test_opinfo import combined

    out = []
    for family, entries in opinfo.families().items():
        parts = [(e, dtype, opinfo.samples_of(e, dtype)[0]) for e in entries
                 if e.cuda is None and dtype in e.dtypes]
        if parts:
            f, args, _ = combined(parts)
            out.append((f"catalogue-{family}", f, tuple(args)))
    return out


def programs(dtype: str = "float32") -> list[tuple[str, object, tuple]]:
    """Whole programs in one dtype, with seeded random inputs."""
    rng = np.random.default_rng(11)
    r = lambda shape, dt=dtype: rand(rng, shape, dt)  # noqa: E731
    ints = r((4, 5), "int32"), r((5,), "int32")
    ints[1][0] = 0  # division and modulo by zero give 0, as in NumPy
    return [
        ("integers", catalogue.integer_ops, (*ints, rng.random((4, 5)) < 0.5)),
        ("reductions", light_reductions, (r((2, 3, 4)),)),
        ("softmax", softmax, (r((3, 9)),)),
        ("dense-layers", lambda x, w, b: (np.tanh(x @ w + b), np.maximum(x @ w.T.T, 0) * 2),
         (r((3, 4)), r((4, 5)), r((5,)))),
        ("conv", convs, (r((1, 4, 5, 4)), r((2, 2, 3, 2)))),
        ("keys-iota", keys_and_iota, (r((2, 3)), np.asarray(7, np.uint64))),
        ("size-0", lambda a, b: (a * 2 + b, a.sum(0), np.exp(a).max(1), a @ a.T),
         (r((0, 3)), r((3,)))),
    ]
