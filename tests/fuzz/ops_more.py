"""Statements for the functions issue #16 added: sorting and selection, einsum's other
forms, statistics, scipy.special and the FFT (one op_* per family, as in ops.py).

Programs call scipy.special as `sp` (programs.special_namespace: scipy.special, JAX's
jax.scipy.special, or for long double references a float64 shim, SciPy having no long
double loops). Sorting is smooth where there are no ties, and the only ties random floats
give are copies of one value (a broadcast), whose derivatives agree, or clipped values,
whose derivatives are 0: so sort, quantile, partition and ptp join smooth programs.
argsort's keys are exact values only (a float32 rounding must not reorder them) and the
sort is stable (ties of integers ordered alike everywhere); np.partition is only used
through what its order does not change (its k-th element, a sort or a sum afterwards).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special as _sp

from . import ops
from .ops import _axis, _reduced_log, _same_shape
from .programs import Generator, Value, iv_monotone, iv_mul

# ---------------------------------------------------------------------------------------
# sorting and selection


def _sortable(g: Generator) -> Value | None:
    kinds = "f" if g.smooth else "iuf"
    return g.pick(lambda v: len(v.shape) >= 1 and v.kind in kinds and not v.nan)


def op_sort(g: Generator) -> Value | None:
    a = _sortable(g)
    if a is None:
        return None
    axis = g.choice([None, -1] + list(range(len(a.shape))))
    form = f"xp.sort({a.name})" if axis == -1 and g.chance(0.5) else \
        f"xp.sort({a.name}, axis={axis!r})"
    return g.emit(form, a.lo, a.hi, exact=a.exact)


def op_argsort(g: Generator) -> Value | None:
    """take_along_axis(b, argsort(key)): the key exact (its order the same in every
    precision), the sort stable; or the permutation itself."""
    key = g.pick(lambda v: len(v.shape) >= 1 and v.exact and v.kind in "biuf" and not v.nan)
    if key is None:
        return None
    axis = int(g.rng.integers(len(key.shape)))
    perm = f"xp.argsort({key.name}, axis={axis}, stable=True)"
    n = key.shape[axis]
    if g.chance(0.3) and not g.smooth:
        return g.emit(perm, 0, max(n - 1, 0), exact=True)
    b = _same_shape(g, key.shape, "f" if g.smooth else "biuf") if g.chance(0.7) else key
    if b is None or b.nan:
        return None
    return g.emit(f"xp.take_along_axis({b.name}, {perm}, axis={axis})", b.lo, b.hi,
                  exact=b.exact)


QUANTILE_METHODS = ["linear", "linear", "lower", "higher", "midpoint", "nearest"]
QS = [0.0, 0.25, 0.37, 0.5, 0.75, 0.9, 1.0]


def op_quantile(g: Generator) -> Value | None:
    a = g.pick(lambda v: v.kind in "f" and not v.nan and v.size > 0)
    if a is None:
        return None
    axis, n = _axis(g, a, single=False)
    if n == 0:
        return None
    # (JAX's quantile and median give a 0-d array's keepdims=True result a shape (1,))
    keep = ", keepdims=True" if a.shape and g.chance(0.3) else ""
    where = "" if axis is None and g.chance(0.5) else f", axis={axis!r}"
    name = g.choice(["quantile", "percentile", "median"])
    if name == "median":
        return g.emit(f"xp.median({a.name}{where}{keep})", a.lo, a.hi, cost=2)
    q, method = g.choice(QS), g.choice(QUANTILE_METHODS)
    position = q * (n - 1)
    if method == "nearest" and abs(position - math.floor(position) - 0.5) < 1e-9:
        return None  # half way: NumPy rounds to even, JAX may not
    q_text = repr(q if name == "quantile" else 100 * q)
    return g.emit(f"xp.{name}({a.name}, {q_text}{where}, method={method!r}{keep})",
                  a.lo, a.hi, cost=3)


def op_partition(g: Generator) -> Value | None:
    a = _sortable(g)
    if a is None:
        return None
    axis = int(g.rng.integers(len(a.shape)))
    n = a.shape[axis]
    if n == 0:
        return None
    kth = int(g.rng.integers(n))
    part = f"xp.partition({a.name}, {kth}, axis={axis})"
    form = g.choice(["kth", "sort", "sum"])
    if form == "kth" and not (g.kind == "mutation" and len(a.shape) == 1):
        # (a 0-d take written in place: test_findings.py, 8)
        return g.emit(f"xp.take({part}, {kth}, axis={axis})", a.lo, a.hi, exact=a.exact)
    if form == "sort":
        return g.emit(f"xp.sort({part}, axis={axis})", a.lo, a.hi, exact=a.exact)
    return g.emit(f"{part}.sum(axis={axis})", min(0.0, n * a.lo), max(0.0, n * a.hi),
                  exact=a.kind in "iu", cost=_reduced_log(n))


# ---------------------------------------------------------------------------------------
# einsum's other forms (real operands)


def _real(g: Generator) -> str:
    return "f" if g.smooth else "iuf"


def op_einsum_forms(g: Generator) -> Value | None:
    form = g.choice(["diagonal", "batched", "three"])
    if form == "diagonal":
        return _einsum_diagonal(g)
    if form == "batched":
        return _einsum_batched(g)
    return _einsum_three(g)


def _einsum_diagonal(g: Generator) -> Value | None:
    a = g.pick(lambda v: len(v.shape) >= 2 and v.shape[-1] == v.shape[-2] and
               v.kind in _real(g) and not v.nan)
    if a is None:
        n = g.choice([1, 2, 3, 4])
        a = g.new_input((n, n)) if not g.smooth else g.new_input((n, n), g.float_dtype)
        if a is None or a.kind not in _real(g):
            return None
    n = a.shape[-1]
    batch = len(a.shape) > 2
    spec = g.choice(["...ii->...i", "...ii->..."] if batch else
                    ["ii->i", "ii->", "ii", "...ii->...i"])
    if spec.endswith("->...i") or spec.endswith("->i"):  # the diagonal ("ii" is the trace)
        return g.emit(f"xp.einsum('{spec}', {a.name})", a.lo, a.hi, exact=a.exact)
    return g.emit(f"xp.einsum('{spec}', {a.name})", min(0.0, n * a.lo), max(0.0, n * a.hi),
                  exact=a.kind in "iu", cost=_reduced_log(n))


def _einsum_batched(g: Generator) -> Value | None:
    a = g.pick(lambda v: len(v.shape) >= 2 and v.kind in _real(g) and not v.nan)
    if a is None:
        return None
    k = a.shape[-1]
    batch = a.shape[:-2][int(g.rng.integers(0, len(a.shape) - 1)):]  # a suffix broadcasts
    b = _same_shape(g, batch + (k, g.choice([1, 2, 3])), _real(g))
    if b is None or b.nan:
        return None
    lo, hi = iv_mul((a.lo, a.hi), (b.lo, b.hi))
    return g.emit(f"xp.einsum('...ij,...jk->...ik', {a.name}, {b.name})",
                  min(0.0, k * lo), max(0.0, k * hi), cost=_reduced_log(k))


def _einsum_three(g: Generator) -> Value | None:
    a = g.pick(lambda v: 1 <= len(v.shape) <= 2 and v.kind in _real(g) and not v.nan)
    if a is None:
        return None
    if len(a.shape) == 1:  # i,ij,j->  (a bilinear form)
        n, m = a.shape[0], g.choice([1, 2, 3])
        specs, shapes = "i,ij,j->", [(n, m), (m,)]
        summed = n * m
    else:  # ij,jk,kl->il  (a chain)
        j, k = a.shape[1], g.choice([1, 2, 3])
        specs, shapes = "ij,jk,kl->il", [(j, k), (k, g.choice([1, 2, 3]))]
        summed = j * k
    b = _same_shape(g, shapes[0], _real(g))
    c = _same_shape(g, shapes[1], _real(g))
    if b is None or c is None or b.nan or c.nan:
        return None
    lo, hi = iv_mul(iv_mul((a.lo, a.hi), (b.lo, b.hi)), (c.lo, c.hi))
    optimize = g.choice(["", ", optimize=True", ", optimize='greedy'"])
    return g.emit(f"xp.einsum('{specs}', {a.name}, {b.name}, {c.name}{optimize})",
                  min(0.0, summed * lo), max(0.0, summed * hi), cost=2 * _reduced_log(summed))


# ---------------------------------------------------------------------------------------
# statistics


def _nan_sprinkled(g: Generator, a: Value) -> str | None:
    """`where(c, nan, a)` for a test c of an exact value broadcasting to a's shape."""
    def fits(v: Value) -> bool:
        try:
            return np.broadcast_shapes(v.shape, a.shape) == a.shape
        except ValueError:
            return False
    c = g.pick(lambda v: v.exact and not v.nan and v.kind in "biuf" and fits(v), recent=False)
    if c is None:
        return None
    if c.kind == "b":
        cond = c.name
    else:
        threshold = round(float(g.rng.uniform(c.lo, c.hi)), 2) + 0.003  # never a tie
        cond = f"({c.name} > {threshold!r})"
    return f"xp.where({cond}, xp.nan, {a.name})"


def op_nan_reduce(g: Generator) -> Value | None:
    """nanmean/nansum/nanmax; NaN sprinkled in by where() in programs not differentiated
    (an all-NaN slice gives NaN, or 0 for nansum)."""
    name = g.choice(["nanmean", "nansum", "nanmax", "nanmin"])
    a = g.pick(lambda v: v.kind == "f" and not v.nan)
    if a is None:
        return None
    axis, n = _axis(g, a, single=False)
    if n == 0 and name in ("nanmax", "nanmin"):
        return None
    operand = _nan_sprinkled(g, a) if not g.smooth and g.chance(0.6) else None
    args = "" if axis is None and g.chance(0.5) else f", axis={axis!r}"
    args += ", keepdims=True" if g.chance(0.3) else ""
    if name == "nansum":
        lo, hi = min(0.0, n * a.lo), max(0.0, n * a.hi)
    else:
        lo, hi = a.lo, a.hi
    nan = name != "nansum" and (operand is not None or n == 0)
    exact = a.exact and name in ("nanmax", "nanmin")
    return g.emit(f"xp.{name}({operand or a.name}{args})", lo, hi, nan=nan, exact=exact,
                  cost=_reduced_log(n))


def op_statistics(g: Generator) -> Value | None:
    name = g.choice(["average", "ptp", "cov"])
    a = g.pick(lambda v: v.kind in "iuf" and not v.nan and v.size > 0 and
               (v.kind == "f" or not g.smooth))
    if a is None:
        return None
    if name == "ptp":
        axis, n = _axis(g, a, single=g.chance(0.5))
        where = "" if axis is None else f", axis={axis!r}"
        return g.emit(f"xp.ptp({a.name}{where})", 0.0, a.hi - a.lo, exact=a.kind in "iu")
    if name == "average":
        return _average(g, a)
    if len(a.shape) not in (1, 2) or a.size > 24:
        return None
    rowvar = len(a.shape) == 1 or g.chance(0.6)
    observations = a.shape[-1] if rowvar else a.shape[0]
    if observations < 2:
        return None
    option = g.choice(["", ", bias=True", ", ddof=0"] + ([] if rowvar else [", rowvar=False"]))
    if not rowvar:
        option = ", rowvar=False" + option.replace(", rowvar=False", "")
    spread = 2 * (a.hi - a.lo) ** 2  # |cov| <= N/(N - 1) * spread**2 <= 2 spread**2
    return g.emit(f"xp.cov({a.name}{option})", -spread, spread, cost=6)


def _average(g: Generator, a: Value) -> Value | None:
    """np.average with positive weights: a's own shape, or 1-D along the axis."""
    axis = None if len(a.shape) == 0 or g.chance(0.3) else int(g.rng.integers(len(a.shape)))
    shape = a.shape if axis is None or g.chance(0.4) else (a.shape[axis],)
    w = _same_shape(g, shape, "f")
    if w is None or w.nan:
        return None
    weights = w.name if w.lo >= 0.1 else f"({w.name} * {w.name} + 0.5)"
    where = "" if axis is None else f", axis={axis}"
    return g.emit(f"xp.average({a.name}{where}, weights={weights})", a.lo, a.hi, cost=4)


# ---------------------------------------------------------------------------------------
# scipy.special


def _lgamma_range(lo: float, hi: float) -> tuple[float, float]:
    low, high = iv_monotone(math.lgamma, lo, hi)
    if lo <= 1.4616321449683622 <= hi:
        low = min(low, -0.12148629053584961)
    return low, high


SPECIAL = {  # name -> (applies to the interval, interval of the result)
    "erfc": (lambda v: True, lambda v: iv_monotone(math.erfc, v.lo, v.hi)),
    "ndtr": (lambda v: v.lo >= -30, lambda v: iv_monotone(_sp.ndtr, v.lo, v.hi)),
    "log_ndtr": (lambda v: v.lo >= -100, lambda v: iv_monotone(_sp.log_ndtr, v.lo, v.hi)),
    "gammaln": (lambda v: v.lo >= 0.1 and v.hi <= 1e3, lambda v: _lgamma_range(v.lo, v.hi)),
    "digamma": (lambda v: v.lo >= 0.1, lambda v: iv_monotone(_sp.digamma, v.lo, v.hi)),
}


def op_special(g: Generator) -> Value | None:
    name = g.choice(list(SPECIAL) + ["xlogy", "logsumexp", "softmax"])
    if name == "xlogy":
        return _xlogy(g)
    if name in ("logsumexp", "softmax"):
        return _normalizer(g, name)
    applies, interval = SPECIAL[name]
    x = g.pick(lambda v: v.kind in _real(g) and not v.nan and applies(v))
    if x is None:
        return None
    return g.emit(f"sp.{name}({x.name})", *(float(t) for t in interval(x)), cost=4)


def _xlogy(g: Generator) -> Value | None:
    y = g.pick(lambda v: v.kind in _real(g) and not v.nan and v.lo >= 0.1)
    x = g.pick(lambda v: v.kind in _real(g) and not v.nan, recent=False)
    if x is None or y is None:
        return None
    logs = (math.log(y.lo), math.log(y.hi))
    return g.emit(f"sp.xlogy({x.name}, {y.name})", *iv_mul((x.lo, x.hi), logs), cost=3)


def _normalizer(g: Generator, name: str) -> Value | None:
    a = g.pick(lambda v: v.kind == "f" and not v.nan and v.hi <= 50)
    if a is None:
        return None
    axis, n = _axis(g, a, single=False)
    where = "" if axis is None and g.chance(0.5) else f", axis={axis!r}"
    if name == "softmax":
        return g.emit(f"sp.softmax({a.name}{where})", 0.0, 1.0, cost=_reduced_log(n) + 3)
    if n == 0:
        return None  # log(0) = -inf
    keep = ", keepdims=True" if g.chance(0.3) else ""
    return g.emit(f"sp.logsumexp({a.name}{where}{keep})", a.lo, a.hi + math.log(n),
                  cost=_reduced_log(n) + 3)


# ---------------------------------------------------------------------------------------
# FFT (real programs: round trips and parts; complex programs: op_cfft)


def op_fft(g: Generator) -> Value | None:
    a = g.pick(lambda v: len(v.shape) >= 1 and v.kind == "f" and not v.nan and v.size > 0)
    if a is None:
        return None
    axis = int(g.rng.integers(len(a.shape)))
    n = a.shape[axis]
    top = max(abs(a.lo), abs(a.hi))
    cost = _reduced_log(n) + 2
    form = g.choice(["roundtrip", "real", "imag", "irfft", "fft"])
    if form == "roundtrip":
        margin = 1e-5 * top * cost  # rounding may step just outside [lo, hi]
        return g.emit(f"xp.fft.irfft(xp.fft.rfft({a.name}, axis={axis}), n={n}, axis={axis})",
                      a.lo - margin, a.hi + margin, cost=2 * cost)
    if form == "irfft":  # a real spectrum: a cosine series
        if n < 2:
            return None
        return g.emit(f"xp.fft.irfft({a.name}, axis={axis})", -top, top, cost=cost)
    fn = "fft" if form == "fft" else "rfft"
    part = "imag" if form == "imag" else g.choice(["real", "imag"])
    return g.emit(f"xp.fft.{fn}({a.name}, axis={axis}).{part}", -n * top, n * top, cost=cost)


def op_cfft(g: Generator) -> Value | None:
    """fft/ifft of complex values, rfft of real ones, irfft back (complex programs)."""
    from .complex_ops import disk, mod_max

    z = g.pick(lambda v: len(v.shape) >= 1 and v.kind in "fc" and not v.nan and v.size > 0)
    if z is None:
        return None
    axis = int(g.rng.integers(len(z.shape)))
    n = z.shape[axis]
    m = mod_max((z.lo, z.hi, z.ilo, z.ihi))
    cost = _reduced_log(n) + 2
    if z.kind == "f":
        r = disk(n * m)
        return g.emit(f"xp.fft.rfft({z.name}, axis={axis})", r[0], r[1], imag=r[2:], cost=cost)
    fn = g.choice(["fft", "ifft", "irfft"])
    if fn == "irfft":
        if n < 2:
            return None
        return g.emit(f"xp.fft.irfft({z.name}, axis={axis})", -2 * m, 2 * m, cost=cost)
    r = disk(n * m if fn == "fft" else m)
    norm = g.choice(["", "", ", norm='ortho'"])
    if norm:
        r = disk(math.sqrt(n) * m)
    return g.emit(f"xp.fft.{fn}({z.name}, axis={axis}{norm})", r[0], r[1], imag=r[2:],
                  cost=cost)


# the weights each op joins ops.py's tables with (complex_ops.py adds COMPLEX_WEIGHTS to
# its own; the campaign's --boost multiplies them). Small: a sort or an FFT under jit
# compiles its kernel for each dtype, and test_fuzz.py's seeds keep their CPU time.
REAL_WEIGHTS = {op_sort: 0.3, op_argsort: 0.3, op_quantile: 0.3, op_partition: 0.3,
                op_einsum_forms: 0.3, op_nan_reduce: 0.3, op_statistics: 0.3, op_special: 0.6,
                op_fft: 0.3}
COMPLEX_WEIGHTS = {op_cfft: 0.5}
for _table in (ops.WEIGHTS, ops.MUTATION_WEIGHTS, ops.SMOOTH_WEIGHTS):
    _table.update(REAL_WEIGHTS)


def boost(factor: float) -> None:
    """Multiply these ops' weights in every table (a campaign aimed at them)."""
    from . import complex_ops

    for table, mine in ((ops.WEIGHTS, REAL_WEIGHTS), (ops.MUTATION_WEIGHTS, REAL_WEIGHTS),
                        (ops.SMOOTH_WEIGHTS, REAL_WEIGHTS),
                        (complex_ops.COMPLEX_WEIGHTS, COMPLEX_WEIGHTS)):
        for op, weight in mine.items():
            table[op] = weight * factor
