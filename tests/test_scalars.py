"""NumPy scalars: the 0-d results NumPy returns as scalars behave as scalars (fuzz finding 10).

A NumPy scalar is immutable: `s op= y` rebinds s, and a reshape or `s[...]` of it is a new
array. transfuse marks the traced values that stand for one (transfuse/numpy/_scalars.py);
these tests hold it to NumPy's behaviour on every path that gives a scalar, eagerly, under
jit, vmap and grad, and check that 0-d *arrays* are still written in place.
"""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.ir.errors import TransfuseTypeError
from transfuse.ir.tracing import Tracer

import transfuse as tx
from tests.helpers import assert_same, traced
from tests.opinfo import OPS, samples_of

# ---------------------------------------------------------------------------------------
# Every catalogued function: a 0-d result is a scalar exactly where NumPy's is


def _leaves(x) -> list:
    if isinstance(x, (tuple, list)):
        return [leaf for part in x for leaf in _leaves(part)]
    return [x]


def _is_scalar(leaf) -> bool:
    if isinstance(leaf, Tracer):
        return leaf._var in leaf._builder.scalars
    return not isinstance(leaf, np.ndarray)  # a concrete result (np.zeros(()): no tracer)


def _zero_d_kinds(entry, sample, make_graph: bool) -> list[bool]:
    """Per 0-d result of the sample: whether it is a scalar (NumPy) / marked one (traced)."""
    args = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in sample.args]
    if not make_graph:
        out = entry.op(*args, **sample.kwargs)
        return [_is_scalar(leaf) for leaf in _leaves(out) if np.ndim(leaf) == 0]
    kinds = []

    def probe(*traced_args):
        out = entry.op(*traced_args, **sample.kwargs)
        kinds.extend(_is_scalar(leaf) for leaf in _leaves(out) if np.ndim(leaf) == 0)
        return out

    tx.make_graph(probe)(*args)
    return kinds


def test_every_catalogued_zero_d_result_is_a_scalar_exactly_where_numpys_is():
    """tests/opinfo.py's entries whose reference is the function itself, every dtype and
    sample: the 0-d results NumPy (or SciPy) gives as scalars are marked, its 0-d arrays
    are not. transfuse.lax's functions give 0-d arrays, as JAX's. Samples with a NumPy
    scalar argument are left out: a traced argument is an array (ndarray.T of np.True_ is
    a scalar in NumPy, a 0-d array here)."""
    checked, wrong = 0, []
    for name, entry in OPS.items():
        if entry.ref is not None:
            continue
        for dtype in entry.dtypes:
            for sample in samples_of(entry, dtype):
                if any(isinstance(a, np.generic) for a in sample.args):
                    continue
                with np.errstate(all="ignore"):
                    try:
                        numpys = _zero_d_kinds(entry, sample, make_graph=False)
                    except Exception:  # noqa: BLE001 - samples of the errors NumPy raises
                        continue
                    if not numpys:
                        continue
                    if name.startswith("lax."):
                        numpys = [False] * len(numpys)
                    ours = _zero_d_kinds(entry, sample, make_graph=True)
                checked += 1
                if ours != numpys:
                    wrong.append(f"{name} {dtype} {sample.describe()}: NumPy {numpys}, "
                                 f"transfuse {ours}")
    assert not wrong, "\n".join(wrong)
    assert checked > 150  # the catalogue's 0-d samples were all reached


# ---------------------------------------------------------------------------------------
# Every way to a scalar, written in place after a reshape: eager, jit, vmap, grad


def made_by(xp, x, m, z, every: bool = True) -> list:
    """Scalars NumPy returns: full reductions (axis=None, every axis, methods), products
    of vectors, ufuncs of 0-d values and of elements, size 0; with `every`, also linalg,
    order statistics and einsum (slower to compile)."""
    cheap = [xp.sum(x), xp.sum(m, axis=(0, 1)), m.sum(), xp.mean(m), xp.max(x, axis=0),
             x @ x, xp.add.reduce(x), xp.sin(z), z * 2.0, x[0] + 1.0, xp.sum(z),
             xp.sum(x[:0])]
    if not every:
        return cheap
    return cheap + [x.std(), xp.dot(x, x), xp.vdot(x, m[0]), xp.inner(x, x),
                    xp.einsum("i,i", x, x), xp.trace(m), xp.linalg.norm(m),
                    xp.linalg.det(m), xp.median(x)]


def scalar_paths(x, m, z, every: bool = True):
    """Each scalar reshaped (a view, were it an array), then rebound by `*=`."""
    made = made_by(np, x, m, z, every)
    views = [np.reshape(s, (1,)) for s in made]
    doubled = []
    for s in made:
        s *= 2.0  # NumPy: a new scalar; `made` and `views` keep the old values
        doubled.append(s)
    return views, made, doubled


def _inputs(dtype, seed=12078):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(4).astype(dtype)
    m = (rng.standard_normal((4, 4)) + 3 * np.eye(4)).astype(dtype)
    return x, m, np.asarray(rng.standard_normal(), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scalar_paths_traced_and_functionalized_match_numpy(dtype):
    args = _inputs(dtype)
    expected = scalar_paths(*(a.copy() for a in args))
    views, made, doubled = expected
    assert all(isinstance(s, np.generic) for s in made)  # NumPy's: all scalars
    assert_same(traced(scalar_paths, *args), expected, exact=False, rtol=2e-6)
    assert_same(tx.functionalize(scalar_paths)(*args), expected, exact=False, rtol=2e-6)


def test_scalar_paths_jit_matches_numpy_and_the_interpreter():
    """The cheap paths only: which values are scalars is settled while tracing, the same
    for every transform (the eager tests above take every path)."""
    def cheap_paths(x, m, z):
        return scalar_paths(x, m, z, every=False)

    args = _inputs("float32")
    got = tx.jit(cheap_paths, cache=False)(*args)
    assert_same(got, cheap_paths(*args), exact=False, rtol=2e-5)
    assert_same(got, traced(cheap_paths, *args), exact=False, rtol=2e-5)


def test_scalar_paths_vmap_matches_a_loop():
    batch = [_inputs("float64", seed) for seed in (1, 2, 3)]
    stacked = [np.stack(parts) for parts in zip(*batch)]
    got = tx.vmap(scalar_paths)(*stacked)
    loop = [scalar_paths(*args) for args in batch]
    expected = tx.tree_unflatten(tx.tree_flatten(loop[0])[1], [
        np.stack(leaves) for leaves in zip(*(tx.tree_flatten(out)[0] for out in loop))])
    assert_same(got, expected, exact=False, rtol=1e-12)


def _total(x, m, z):
    views, made, doubled = scalar_paths(x, m, z)
    return sum(np.sum(v) for v in views) + sum(made) + sum(doubled)


def test_grad_through_scalar_paths_matches_jax_and_differences():
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    args = _inputs("float64")
    got = tx.grad(_total, argnums=(0, 1, 2))(*args)
    # NumPy's semantics: views and made hold the values, doubled twice them: 4 * sum.
    want = jax.jit(jax.grad(lambda *a: 4 * sum(made_by(jnp, *a)), argnums=(0, 1, 2)))(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-10, atol=1e-12)
    rng, eps = np.random.default_rng(3), 1e-6
    tangents = [rng.standard_normal(np.shape(a)) for a in args]
    plus = _total(*(a + eps * t for a, t in zip(args, tangents)))
    minus = _total(*(a - eps * t for a, t in zip(args, tangents)))
    directional = sum(np.sum(g * t) for g, t in zip(got, tangents))
    np.testing.assert_allclose(directional, (plus - minus) / (2 * eps), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# What rebinding changes, and what stays an array


def rebinds(x, ix):
    s = np.sum(ix)
    s *= 1.5  # int64 scalar -> float64 scalar (an int64 array would refuse the cast)
    t = np.max(x)
    t += x  # a scalar grows to x's shape
    u = x[1]
    u -= 1.0
    u -= 1.0  # still a scalar after the first rebinding
    return s, t, u, x * 1.0


def test_rebinding_takes_numpys_dtype_and_shape():
    x = np.random.default_rng(5).standard_normal(3)
    ix = np.arange(4)
    assert_same(traced(rebinds, x.copy(), ix), rebinds(x.copy(), ix))
    assert_same(tx.jit(rebinds, cache=False)(x.copy(), ix), rebinds(x.copy(), ix),
                exact=False, rtol=1e-12)


def arrays_stay_arrays(x, z):
    """0-d arrays (made from scalars, or given) are written in place, views included."""
    s = np.sum(x)
    a = s[...]  # a new 0-d array, not a view of the scalar
    va = a.reshape(1)
    a += 1.0
    c = np.copy(s)
    vc = np.reshape(c, (1,))
    c *= 3.0
    b = np.zeros_like(z)
    vb = b.reshape(1)
    b += z
    z += 1.0  # the caller's 0-d array
    return s, va, vc, vb


def test_zero_d_arrays_are_still_written_in_place():
    x = np.random.default_rng(6).standard_normal(3)
    z_numpy, z_ours = np.asarray(0.25), np.asarray(0.25)
    expected = arrays_stay_arrays(x.copy(), z_numpy)
    assert_same(tx.functionalize(arrays_stay_arrays)(x.copy(), z_ours), expected)
    assert z_ours == z_numpy == 1.25  # written back into the argument


def test_a_scalar_cannot_be_written_by_index_as_in_numpy():
    def write(x):
        s = np.mean(x)
        s[...] = 0.0
        return s

    x = np.arange(3.0)
    with pytest.raises(TypeError, match="does not support item assignment"):
        write(x)
    with pytest.raises(TransfuseTypeError, match="does not support item assignment"):
        traced(write, x)
