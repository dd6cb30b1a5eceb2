"""scipy.special under transfuse (transfuse/scipy/special.py): accuracy against mpmath,
derivatives against mpmath and JAX, logsumexp's edge cases against SciPy, errors, and the
kernels' disk cache across processes. tests/opinfo.py checks every function under every
transform besides."""

from __future__ import annotations

import textwrap

import mpmath as mp
import numpy as np
import pytest
import scipy.special as sp
from transfuse.ir.errors import DTypeError, UnsupportedError

import transfuse as tx
from tests.helpers import run_json_script

UFUNCS = ("erf", "erfc", "ndtr", "log_ndtr", "erfinv", "erfcinv", "ndtri", "gammaln", "psi",
          "i0e", "i1e", "logit", "expit", "softplus")


def _log_uniform(rng, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _domains(n: int = 24) -> dict[str, np.ndarray]:
    """Seeded points of each function's domain, tails included."""
    rng = np.random.default_rng(7)
    tiny_to_small = _log_uniform(rng, 1e-300, 1e-3, n // 4)
    near_one = 1 - _log_uniform(rng, 1e-15, 1e-3, n // 4)
    return {
        "erf": np.r_[rng.uniform(-6, 6, n), tiny_to_small],
        "erfc": np.r_[rng.uniform(-6, 26, n), tiny_to_small],
        "ndtr": rng.uniform(-37, 9, n),
        "log_ndtr": np.r_[rng.uniform(-40, 10, n), -_log_uniform(rng, 40, 1e5, n // 4)],
        "erfinv": np.r_[rng.uniform(-1, 1, n), near_one, tiny_to_small],
        "erfcinv": np.r_[rng.uniform(0, 2, n), tiny_to_small, 1 + near_one],
        "ndtri": np.r_[rng.uniform(0, 1, n), tiny_to_small, near_one],
        "gammaln": np.r_[_log_uniform(rng, 1e-300, 1e300, n), -rng.uniform(0, 40, n // 4)],
        "psi": np.r_[_log_uniform(rng, 1e-10, 1e10, n), -rng.uniform(0, 20, n // 4)],
        "i0e": np.r_[rng.uniform(-50, 50, n), _log_uniform(rng, 1e-300, 1e5, n // 4)],
        "i1e": np.r_[rng.uniform(-50, 50, n), _log_uniform(rng, 1e-300, 1e5, n // 4)],
        "logit": np.r_[rng.uniform(0, 1, n), tiny_to_small, near_one],
        "expit": rng.uniform(-700, 40, n),
        "softplus": np.r_[rng.uniform(-700, 700, n), rng.uniform(-20, 20, n)],
    }


def _inverse(f, y, guess):
    return mp.findroot(lambda t: f(t) - y, mp.mpf(guess))


def _mpmath(name: str, x: float, scipys: float) -> float:
    """The correctly rounded value (mpmath at 30 digits; inverses by Newton from SciPy's)."""
    x = mp.mpf(x)
    direct = {
        "erf": mp.erf, "erfc": mp.erfc, "ndtr": mp.ncdf, "log_ndtr": lambda t: mp.log(mp.ncdf(t)),
        "gammaln": lambda t: mp.log(abs(mp.gamma(t))), "psi": mp.digamma,
        "i0e": lambda t: mp.besseli(0, t) * mp.exp(-abs(t)),
        "i1e": lambda t: mp.besseli(1, t) * mp.exp(-abs(t)),
        "logit": lambda t: mp.log(t / (1 - t)), "expit": lambda t: 1 / (1 + mp.exp(-t)),
        "softplus": lambda t: mp.log1p(mp.exp(t)),
    }
    if name in direct:
        return float(direct[name](x))
    if name == "erfinv":
        return float(_inverse(mp.erf, x, scipys) if abs(x) < 0.5
                     else mp.sign(x) * _inverse(mp.erfc, 1 - abs(x), abs(scipys)))
    if name == "erfcinv":
        return float(_inverse(mp.erfc, x, scipys))
    return float(_inverse(mp.ncdf, x, scipys) if x < 0.5 else -_inverse(mp.ncdf, 1 - x, -scipys))


def _ulps(got: np.ndarray, exact: np.ndarray, dtype) -> np.ndarray:
    spacing = np.spacing(np.abs(exact.astype(dtype))).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def _all_ufuncs(xs: dict) -> dict:
    return {name: getattr(sp, name)(x) for name, x in xs.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_function_is_as_accurate_as_scipy_against_mpmath(dtype):
    """One jitted program of every ufunc on wide domains, tails included (results that are
    finite and normal in the dtype). float64: within 1 ulp of SciPy's own error (the
    primitives run SciPy's code: equal to the bit); float32: within 1 ulp of the correctly
    rounded value (computed in float64, rounded once)."""
    xs = {}
    for name, points in _domains().items():
        with np.errstate(over="ignore"):  # float32: 1e300 becomes inf, left out below
            x = points.astype(dtype)
        value = getattr(sp, name)(x.astype(np.float64))
        xs[name] = x[np.isfinite(value) & (np.abs(value) >= np.finfo(dtype).tiny)]
    got = tx.jit(_all_ufuncs)(xs)
    mp.mp.dps = 30
    for name, x in xs.items():
        scipys = getattr(sp, name)(x.astype(np.float64))
        exact = np.array([_mpmath(name, a, s) for a, s in zip(x.astype(np.float64), scipys)])
        ours = _ulps(np.asarray(got[name]), exact, dtype)
        assert got[name].dtype == dtype, name
        if dtype == np.float64:
            theirs = _ulps(scipys, exact, dtype)
            assert ours.max() <= theirs.max() + 1, (name, ours.max(), theirs.max())
        else:
            assert ours.max() <= 1.0, (name, ours.max(), x[np.argmax(ours)])


def _elementwise_grad(f):
    """The derivative of an elementwise f at each point (grad of the sum)."""
    return tx.grad(lambda x: np.sum(f(x)))


def test_derivatives_match_mpmath():
    """First derivatives against mpmath's, and second and third (d gammaln = digamma,
    d digamma = polygamma(1), d polygamma(n) = polygamma(n + 1)) through nested grad."""
    mp.mp.dps = 30
    x = np.array([0.3, 1.7, 4.2, 11.0])
    signed = np.array([-3.1, -0.4, 0.8, 2.5])
    unit = np.array([-0.9, -0.2, 0.35, 0.99])
    cases = [
        (sp.gammaln, x, lambda t: mp.digamma(t)),
        (sp.psi, x, lambda t: mp.polygamma(1, t)),
        (lambda v: sp.polygamma(2, v), x, lambda t: mp.polygamma(3, t)),
        (sp.i0e, signed, lambda t: mp.diff(lambda u: mp.besseli(0, u) * mp.exp(-abs(u)), t)),
        (sp.i1e, signed, lambda t: mp.diff(lambda u: mp.besseli(1, u) * mp.exp(-abs(u)), t)),
        (sp.log_ndtr, np.array([-30.0, -3.0, 0.5, 8.0]),
         lambda t: mp.npdf(t) / mp.ncdf(t)),
        (sp.erfinv, unit, lambda t: mp.sqrt(mp.pi) / 2 * mp.exp(mp.erfinv(t) ** 2)),
        (sp.erfcinv, unit + 1, lambda t: -mp.sqrt(mp.pi) / 2 * mp.exp(mp.erfinv(1 - t) ** 2)),
        (sp.ndtri, (unit + 1) / 2, lambda t: 1 / mp.npdf(mp.sqrt(2) * mp.erfinv(2 * t - 1))),
        (sp.ndtr, signed * 3, mp.npdf),
        (sp.erfc, signed, lambda t: -2 / mp.sqrt(mp.pi) * mp.exp(-t * t)),
        (sp.logit, (unit + 1) / 2, lambda t: 1 / (t * (1 - t))),
    ]
    for f, points, derivative in cases:
        got = _elementwise_grad(f)(points)
        want = np.array([float(derivative(mp.mpf(p))) for p in points])
        np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=str(f))
    second = _elementwise_grad(_elementwise_grad(sp.gammaln))(x)  # polygamma(1)
    np.testing.assert_allclose(second, [float(mp.polygamma(1, t)) for t in x], rtol=1e-12)
    third = _elementwise_grad(_elementwise_grad(sp.psi))(x)  # polygamma(2)
    np.testing.assert_allclose(third, [float(mp.polygamma(2, t)) for t in x], rtol=1e-12)


def test_derivatives_at_edges_are_the_limits():
    """i1e' (0) = 1/2; xlogy's d/dx at x = 0 is log(y) (JAX's), and nothing is nan where
    x = 0 and y = 0; logsumexp's gradient stays finite where exp(a) overflows."""
    assert float(tx.grad(lambda v: sp.i1e(v))(0.0)) == 0.5
    x, y = np.array([0.0, 0.0, 2.0]), np.array([3.0, 0.0, 5.0])
    gx, gy = tx.grad(lambda a, b: np.sum(sp.xlogy(a, b)), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, [np.log(3.0), 0.0, np.log(5.0)])
    np.testing.assert_allclose(gy, [0.0, 0.0, 2.0 / 5.0])
    g1 = tx.grad(lambda a: np.sum(sp.xlog1py(a, np.array([0.5, -1.0]))))(np.zeros(2))
    np.testing.assert_allclose(g1, [np.log1p(0.5), 0.0])
    a = np.array([1000.0, 0.0, -1.0])
    np.testing.assert_allclose(tx.grad(lambda v: sp.logsumexp(v))(a), sp.softmax(a))


def test_logsumexp_matches_scipy_at_its_edge_cases():
    """Zero weights drop their terms (even inf or nan), negative sums give nan (or a sign
    with return_sign), infinities, all -inf, a dominant term's log1p digits, keepdims."""
    inf, nan = np.inf, np.nan
    a = np.array([[0.0, -40.0, 1.0], [inf, 2.0, 1.0], [-inf, -inf, -inf], [3.0, nan, 1.0],
                  [1.0, 2.0, 3.0], [800.0, 799.0, 0.0]])
    b = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, -2.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0],
                  [-1.0, -1.0, 0.5], [1.0, 2.0, 3.0]])

    def program(a, b):  # (keepdims, axis tuples, softmax: tests/opinfo.py)
        return (sp.logsumexp(a, axis=1), sp.logsumexp(a, axis=1, b=b),
                sp.logsumexp(a, axis=1, b=b, return_sign=True))
    with np.errstate(all="ignore"):
        want = program(a, b)
    got = tx.jit(program)(a, b)
    for g, w in zip(_leaves(got), _leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-14, atol=0, equal_nan=True)
    assert float(got[0][0]) == float(want[0][0])  # 1 + log1p(e**-1 + e**-41): every digit


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [np.asarray(tree)]


def test_a_sum_whose_first_term_is_inf_is_inf():
    """Regression: the CPU sums started their lanes at buf[0] - buf[0], nan when buf[0] is
    inf (logsumexp's direct sum met it)."""
    x = np.array([[np.inf, 2.0, 1.0], [1.0, np.inf, 0.0]])
    got = tx.jit(lambda v: (np.sum(v, axis=1), np.sum(v[0]), v[0] @ np.ones(3)))(x)
    assert [np.asarray(g).tolist() for g in got] == [[np.inf, np.inf], np.inf, np.inf]


def test_polygamma_order_may_be_traced_and_must_be_integral():
    x = np.array([0.7, 2.5, 9.0, 0.7])
    n = np.array([0.0, 1.0, 3.0, 1.5])
    got = tx.jit(lambda n, x: sp.polygamma(n, x))(n, x)
    np.testing.assert_allclose(got[:3], sp.polygamma(n[:3], x[:3]), rtol=1e-13)
    assert np.isnan(got[3])


def test_dtypes_follow_scipy_and_complex_is_refused():
    x32 = np.linspace(0.1, 0.9, 4, dtype=np.float32)

    def program(x, k):
        return sp.gammaln(x), sp.ndtri(x), sp.xlogy(x, x), sp.polygamma(1, x), sp.erf(k)
    outs = tx.jit(program)(x32, np.arange(4))
    assert [o.dtype for o in outs] == [r.dtype for r in program(x32, np.arange(4))]
    with pytest.raises(DTypeError):
        tx.jit(lambda z: sp.erfc(z))(np.ones(2, np.complex128))
    with pytest.raises(DTypeError):
        tx.jit(lambda z: sp.gammaln(z))(np.ones(2, np.complex128))


def test_a_name_imported_before_tracing_and_vmap():
    """`from scipy.special import gammaln` (a ufunc) traces; vmap of logsumexp with b."""
    from scipy.special import gammaln, logsumexp  # noqa: F401  (logsumexp: SciPy's own)

    x = np.array([0.5, 3.0])
    np.testing.assert_allclose(tx.jit(lambda v: gammaln(v))(x), sp.gammaln(x))
    a, b = np.random.default_rng(3).normal(size=(2, 5, 4))
    got = tx.vmap(lambda r, w: sp.logsumexp(r, b=w, return_sign=True))(a, b)
    want = [sp.logsumexp(r, b=w, return_sign=True) for r, w in zip(a, b)]
    np.testing.assert_allclose(got[0], [w[0] for w in want], rtol=1e-14)
    np.testing.assert_array_equal(got[1], [w[1] for w in want])


def test_a_python_function_imported_before_tracing_names_the_fix():
    """scipy.special.logsumexp bound before the trace is SciPy's own: the error names it,
    the module call that traces and transfuse.scipy.special."""
    from scipy.special import logsumexp

    with pytest.raises(UnsupportedError, match=r"logsumexp was given a traced value(.|\n)*"
                       r"scipy\.special\.<name>\(\.\.\.\)(.|\n)*transfuse\.scipy\.special"):
        tx.jit(lambda v: logsumexp(v))(np.ones(3))


CACHED = textwrap.dedent("""
    import json
    import numpy as np
    import scipy.special as sp
    import transfuse as tx

    f = tx.jit(lambda x: sp.gammaln(x) + sp.erfinv(x / 4) + sp.polygamma(1, x))
    out = f(np.linspace(0.5, 3.0, 5))
    info = f.cache_info()
    stats = f.executables()[0].kernel.dispatcher.stats
    print(json.dumps({"compiles": info.compiles, "disk_hits": info.disk_hits,
                      "numba_misses": sum(stats.cache_misses.values()),
                      "out": out.tolist()}))
""")


def test_a_second_process_loads_special_function_kernels_from_disk(tmp_path):
    """SciPy's scalar functions are bound by symbol name: the machine code is cached."""
    script = tmp_path / "job.py"
    script.write_text(CACHED)
    first = run_json_script(script, tmp_path / "cache")
    second = run_json_script(script, tmp_path / "cache")
    assert first["compiles"] == 1 and second["compiles"] == 0 and second["disk_hits"] == 1
    assert second["numba_misses"] == 0
    x = np.linspace(0.5, 3.0, 5)
    want = sp.gammaln(x) + sp.erfinv(x / 4) + sp.polygamma(1, x)
    np.testing.assert_allclose(second["out"], want, rtol=1e-14)
    assert second["out"] == first["out"]


def test_the_cuda_functions_libdevice_lacks_match_scipy():
    """runtime/special_device.py (the CUDA kernels' digamma, log_ndtr, i0e and i1e)
    compiled for the CPU: within 2e-14 of mpmath's digamma (relative; near its roots
    absolute), 1e-13 of SciPy's log_ndtr, 1e-15 of SciPy's i0e and i1e; their infinities,
    zeros and NaNs SciPy's."""
    from numba import njit
    from transfuse.runtime.special_device import (
        chebyshev,
        make_digamma,
        make_i0e,
        make_i1e,
        make_log_ndtr,
    )

    floor = njit(lambda v: np.floor(v))
    digamma, log_ndtr = njit(make_digamma(floor)), njit(make_log_ndtr(floor))
    series = njit(chebyshev)
    i0e, i1e = njit(make_i0e(series)), njit(make_i1e(series))
    rng = np.random.default_rng(5)
    edges = [0.0, -0.0, -1.0, -2.5, 1.0, 10.0, 11.0, np.inf, -np.inf, np.nan]
    x = np.r_[rng.uniform(-20, 20, 300), np.exp(rng.uniform(-700, 700, 100)), edges]
    got, want = np.array([digamma(v) for v in x]), sp.psi(x)
    exact = np.isfinite(want)  # mpmath there: near the poles SciPy's own errs by 1e-13
    want[exact] = [float(mp.digamma(v)) for v in x[exact]]
    np.testing.assert_allclose(got, want, rtol=2e-14, atol=2e-14, equal_nan=True)
    y = np.r_[rng.uniform(-40, 40, 300), -np.exp(rng.uniform(0, 10, 100)), edges, -20.0]
    got, want = np.array([log_ndtr(v) for v in y]), sp.log_ndtr(y)
    # right tail: erfc(x / sqrt(2)) inherits x**2 roundings of the argument (1e-13 at 34)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0, equal_nan=True)
    z = np.r_[rng.uniform(-60, 60, 300), np.exp(rng.uniform(-700, 700, 100)), edges, 8.0,
              -8.0, 1e308]
    for ours, scipys in ((i0e, sp.i0e), (i1e, sp.i1e)):
        got, want = np.array([ours(v) for v in z]), scipys(z)
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0, equal_nan=True)
        assert np.array_equal(np.signbit(got), np.signbit(want))
