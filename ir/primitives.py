"""Primitives: each defined once, with its name, shape/dtype rule and NumPy reference.

Transform and backend rules live in their own tables, keyed by the `Primitive` object,
beside the transforms (compiler/jvp.py, compiler/transpose.py, compiler/batching.py,
compiler/lower_*.py). tests/test_coverage.py walks `PRIMITIVES` and fails when a table
lacks a rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .core import Aval, Graph, Node, check_dtype
from .errors import DTypeError, ShapeError

ShapeRule = Callable[..., Aval | list[Aval]]


class Primitive:
    """A primitive operation of the IR.

    effect: None for pure primitives; 'view' when the output aliases input 0's buffer;
    'mutation' when the node writes into input 0's buffer; 'random' when it draws numbers.
    """

    __slots__ = ("name", "shape_rule", "impl", "effect", "multiple_results", "doc")

    def __init__(
        self,
        name: str,
        shape_rule: ShapeRule,
        impl: Callable,
        *,
        effect: str | None = None,
        multiple_results: bool = False,
        doc: str = "",
    ):
        self.name = name
        self.shape_rule = shape_rule
        self.impl = impl
        self.effect = effect
        self.multiple_results = multiple_results
        self.doc = doc

    def out_avals(self, in_avals: Sequence[Aval], params: dict[str, Any]) -> list[Aval]:
        out = self.shape_rule(*in_avals, **params)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):  # pickled by name, so graphs can be stored
        return (get_primitive, (self.name,))


PRIMITIVES: dict[str, Primitive] = {}


def get_primitive(name: str) -> Primitive:
    return PRIMITIVES[name]


def define(name: str, shape_rule: ShapeRule, impl: Callable, **kwargs) -> Primitive:
    """Register a new primitive; the one place a primitive is defined."""
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} defined twice")
    prim = Primitive(name, shape_rule, impl, **kwargs)
    PRIMITIVES[name] = prim
    return prim


# ---------------------------------------------------------------------------------------
# Shape/dtype rule helpers

FLOAT = "f"  # real floating
INEXACT = "fc"  # floating or complex
NUMERIC = "fiu"  # real numbers (ordered)
NUMBER = "fciu"  # any number, complex included
INTEGRAL = "iub"
ORDERED = "fiub"  # what max/min and their reductions compare
ANY = "fciub"
BOOL = "b"
_WANT = {FLOAT: "a real floating", INEXACT: "a floating or complex", NUMERIC: "a real numeric",
         NUMBER: "a numeric", INTEGRAL: "an integer or bool", ORDERED: "a real (ordered)",
         BOOL: "a bool", ANY: "an array"}


def _check_kind(name: str, aval: Aval, kinds: str) -> None:
    if aval.dtype.kind not in kinds:
        raise DTypeError(f"{name} needs {_WANT[kinds]} operand, got {aval.dtype}")


def real_dtype(dtype) -> np.dtype:
    """The real dtype of the same precision: complex128 -> float64; others unchanged."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32 if dtype == np.complex64 else np.float64) \
        if dtype.kind == "c" else dtype


def complex_dtype(dtype) -> np.dtype:
    """The complex dtype of the same precision: float32 -> complex64."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return dtype
    return np.dtype(np.complex64 if dtype == np.float32 else np.complex128)


def broadcast_shapes(name: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy broadcasting of shapes, with a ShapeError naming the primitive."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(
            f"{name}: shapes {', '.join(map(str, shapes))} do not broadcast together"
        ) from None


def _same_dtype(name: str, *avals: Aval) -> np.dtype:
    dtypes = {a.dtype for a in avals}
    if len(dtypes) != 1:
        raise DTypeError(
            f"{name} needs operands of one dtype, got {', '.join(str(a.dtype) for a in avals)}"
            " (cast first, e.g. with astype)"
        )
    return avals[0].dtype


def _norm_axes(name: str, axes: Sequence[int], ndim: int) -> None:
    for a in axes:
        if not 0 <= a < ndim:
            raise ShapeError(f"{name}: axis {a} out of range for an array of rank {ndim}")
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{name}: repeated axis in {tuple(axes)}")


# ---------------------------------------------------------------------------------------
# Elementwise unary

def _unary_rule(name: str, kinds: str, out_dtype=None) -> ShapeRule:
    def rule(x: Aval) -> Aval:
        _check_kind(name, x, kinds)
        return Aval(x.shape, out_dtype or x.dtype)
    return rule


def _keep_dtype(fn: Callable) -> Callable:
    """NumPy impl that keeps the input dtype (0-d NumPy results come back as arrays)."""
    def impl(x, **_):
        return np.asarray(fn(x), dtype=np.asarray(x).dtype)
    return impl


# SciPy is imported when the reference interpreter first runs erf or logistic, not by
# `import transfuse` (scipy.special costs ~0.3 s to import).
def _logistic(x):
    import scipy.special

    return scipy.special.expit(x)


def _erf(x):
    import scipy.special

    return scipy.special.erf(x)


def _rsqrt(x):
    return 1 / np.sqrt(x)


def _scipy_special(name: str) -> Callable:
    """scipy.special.<name>, imported when first called (the special functions' reference)."""
    def fn(*args):
        import scipy.special

        with np.errstate(all="ignore"):
            return getattr(scipy.special, name)(*args)
    fn.__name__ = name
    return fn


# scipy.special's functions as primitives (transfuse/scipy/special.py; the rest of
# scipy.special there are composites of these). zeta is Hurwitz's zeta(s, q).
SPECIAL_UNARY = {
    "erfc": "erfc", "erf_inv": "erfinv", "ndtr": "ndtr", "ndtri": "ndtri", "log_ndtr": "log_ndtr",
    "lgamma": "gammaln", "digamma": "psi", "bessel_i0e": "i0e", "bessel_i1e": "i1e",
}


UNARY_FLOAT = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt,
    "rsqrt": _rsqrt, "sin": np.sin, "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin,
    "arccos": np.arccos, "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "tanh": np.tanh, "arcsinh": np.arcsinh, "arccosh": np.arccosh, "arctanh": np.arctanh,
    "logistic": _logistic, "erf": _erf, "floor": np.floor, "ceil": np.ceil,
    "round": np.round, "reciprocal": np.reciprocal,
    **{name: _scipy_special(scipy_name) for name, scipy_name in SPECIAL_UNARY.items()},
}
UNARY_NUMERIC = {"neg": np.negative, "abs": np.abs, "sign": np.sign, "square": np.square}
UNARY_TO_BOOL = {"isnan": np.isnan, "isinf": np.isinf, "isfinite": np.isfinite}

# Real-only elementwise functions (NumPy has no complex loop, or it means something else).
REAL_ONLY = frozenset(("logistic", "erf", "floor", "ceil", "round", "max", "min",
                       "floor_div", "mod", "arctan2", "zeta", *SPECIAL_UNARY))


def _abs_rule(x: Aval) -> Aval:
    _check_kind("abs", x, NUMBER)
    return Aval(x.shape, real_dtype(x.dtype))


for _name, _fn in UNARY_FLOAT.items():
    define(_name, _unary_rule(_name, FLOAT if _name in REAL_ONLY else INEXACT),
           _keep_dtype(_fn), doc=f"elementwise {_name}")
for _name, _fn in UNARY_NUMERIC.items():
    if _name == "abs":
        define(_name, _abs_rule, lambda x: np.asarray(np.abs(x)),
               doc="elementwise absolute value (complex: the modulus, a real value)")
    else:
        define(_name, _unary_rule(_name, NUMBER), _keep_dtype(_fn), doc=f"elementwise {_name}")
for _name, _fn in UNARY_TO_BOOL.items():
    define(_name, _unary_rule(_name, INEXACT, np.dtype(bool)),
           lambda x, _fn=_fn: np.asarray(_fn(x)), doc=f"elementwise {_name}")
define("not", _unary_rule("not", INTEGRAL), _keep_dtype(np.invert),
       doc="logical not (bool) or bitwise not (integers)")


def _integer_pow_rule(x: Aval, *, y: int) -> Aval:
    _check_kind("integer_pow", x, NUMBER)
    if x.dtype.kind in "iu" and y < 0:
        raise DTypeError("integer_pow: integers to negative powers are not allowed")
    return x


define("integer_pow", _integer_pow_rule,
       lambda x, *, y: np.asarray(np.power(x, y), dtype=np.asarray(x).dtype),
       doc="x ** y for a static Python int y")

# ---------------------------------------------------------------------------------------
# Elementwise binary (NumPy broadcasting; operands share one dtype)


def _binary_rule(name: str, kinds: str, out_dtype=None) -> ShapeRule:
    def rule(x: Aval, y: Aval) -> Aval:
        dtype = _same_dtype(name, x, y)
        _check_kind(name, x, kinds)
        return Aval(broadcast_shapes(name, x.shape, y.shape), out_dtype or dtype)
    return rule


def _binary_impl(fn: Callable, out_dtype=None) -> Callable:
    def impl(x, y, **_):
        with np.errstate(all="ignore"):
            out = fn(x, y)
        return np.asarray(out, dtype=out_dtype or np.asarray(x).dtype)
    return impl


def _int_pow(x, y):
    # NumPy raises for negative integer powers; eager code would too.
    return np.power(x, y)


BINARY_NUMERIC = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum,
    "min": np.minimum, "floor_div": np.floor_divide, "mod": np.mod, "pow": _int_pow,
}
BINARY_FLOAT = {"div": np.true_divide, "arctan2": np.arctan2, "zeta": _scipy_special("zeta")}
COMPARISONS = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
               "gt": np.greater, "ge": np.greater_equal}
LOGICAL = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}

for _name, _fn in BINARY_NUMERIC.items():
    define(_name, _binary_rule(_name, NUMERIC if _name in REAL_ONLY else NUMBER),
           _binary_impl(_fn), doc=f"elementwise {_name}")
for _name, _fn in BINARY_FLOAT.items():
    define(_name, _binary_rule(_name, FLOAT if _name in REAL_ONLY else INEXACT),
           _binary_impl(_fn), doc=f"elementwise {_name}")
for _name, _fn in COMPARISONS.items():
    define(_name, _binary_rule(_name, ANY, np.dtype(bool)), _binary_impl(_fn, np.bool_),
           doc=f"elementwise comparison {_name}")
for _name, _fn in LOGICAL.items():
    define(_name, _binary_rule(_name, INTEGRAL), _binary_impl(_fn),
           doc=f"elementwise logical/bitwise {_name}")


def _select_rule(pred: Aval, on_true: Aval, on_false: Aval) -> Aval:
    if pred.dtype != np.bool_:
        raise DTypeError(f"select needs a bool condition, got {pred.dtype}")
    dtype = _same_dtype("select", on_true, on_false)
    return Aval(broadcast_shapes("select", pred.shape, on_true.shape, on_false.shape), dtype)


define("select", _select_rule, lambda p, t, f: np.asarray(np.where(p, t, f)),
       doc="where(pred, on_true, on_false), broadcasting all three")


def _clip_rule(x: Aval, lo: Aval, hi: Aval) -> Aval:
    dtype = _same_dtype("clip", x, lo, hi)
    _check_kind("clip", x, NUMERIC)
    return Aval(broadcast_shapes("clip", x.shape, lo.shape, hi.shape), dtype)


define("clip", _clip_rule, lambda x, lo, hi: np.asarray(np.minimum(np.maximum(x, lo), hi)),
       doc="min(max(x, lo), hi), broadcasting")


def _cast_rule(x: Aval, *, dtype) -> Aval:
    return Aval(x.shape, check_dtype(dtype))


def _cast_impl(x, *, dtype):
    x = np.asarray(x)
    if x.dtype.kind == "c" and np.dtype(dtype).kind != "c":
        x = x.real  # what astype keeps (with a ComplexWarning, which a cast node implies)
    return x.astype(dtype)


define("cast", _cast_rule, _cast_impl,
       doc="convert to another dtype (NumPy's astype: unsafe casting; complex to real "
           "keeps the real part)")

# ---------------------------------------------------------------------------------------
# Complex numbers: the parts, the conjugate, and building one from its parts


def _part_rule(name: str) -> ShapeRule:
    def rule(x: Aval) -> Aval:
        if x.dtype.kind != "c":
            raise DTypeError(f"{name} needs a complex operand, got {x.dtype}")
        return Aval(x.shape, real_dtype(x.dtype))
    return rule


def _conj_rule(x: Aval) -> Aval:
    if x.dtype.kind != "c":
        raise DTypeError(f"conj needs a complex operand, got {x.dtype}")
    return x


def _complex_rule(re: Aval, im: Aval) -> Aval:
    dtype = _same_dtype("complex", re, im)
    _check_kind("complex", re, FLOAT)
    return Aval(broadcast_shapes("complex", re.shape, im.shape), complex_dtype(dtype))


def _complex_impl(re, im):
    re, im = np.asarray(re), np.asarray(im)
    out = np.empty(np.broadcast_shapes(re.shape, im.shape), complex_dtype(re.dtype))
    out.real, out.imag = re, im  # exact, unlike re + 1j * im (inf * 0j is nan)
    return out


define("real", _part_rule("real"), lambda x: np.array(np.real(x)),
       doc="the real part of a complex array")
define("imag", _part_rule("imag"), lambda x: np.array(np.imag(x)),
       doc="the imaginary part of a complex array")
define("conj", _conj_rule, lambda x: np.asarray(np.conjugate(x)),
       doc="the complex conjugate")
define("complex", _complex_rule, _complex_impl,
       doc="re + i*im from real arrays of one dtype, broadcasting")


def _copy_rule(x: Aval) -> Aval:
    return x


define("copy", _copy_rule, lambda x: np.array(x, copy=True, order="C"),
       doc="a fresh C-ordered copy of x")

# Elementwise primitives: NumPy lays out their results in the memory order of their
# operands ("K" order), which decides whether a later reshape is a view (ir/tracing.py).
ELEMENTWISE = frozenset(
    list(UNARY_FLOAT) + list(UNARY_NUMERIC) + list(UNARY_TO_BOOL) + list(BINARY_NUMERIC)
    + list(BINARY_FLOAT) + list(COMPARISONS) + list(LOGICAL)
    + ["not", "integer_pow", "select", "clip", "cast", "real", "imag", "conj", "complex"])

# ---------------------------------------------------------------------------------------
# Reductions and scans


def _reduce_rule(name: str, kinds: str) -> ShapeRule:
    def rule(x: Aval, *, axes: tuple[int, ...]) -> Aval:
        _check_kind(name, x, kinds)
        _norm_axes(name, axes, x.ndim)
        if name in ("reduce_max", "reduce_min") and any(x.shape[a] == 0 for a in axes):
            raise ShapeError(f"{name}: zero-size reduction has no identity (shape {x.shape})")
        return Aval(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)
    return rule


def _reduce_impl(fn: Callable) -> Callable:
    def impl(x, *, axes):
        x = np.asarray(x)
        return np.asarray(fn(x, axis=axes), dtype=x.dtype)
    return impl


for _name, _fn, _kinds in [("reduce_sum", np.sum, NUMBER), ("reduce_prod", np.prod, NUMBER),
                           ("reduce_max", np.max, ORDERED), ("reduce_min", np.min, ORDERED)]:
    define(_name, _reduce_rule(_name, _kinds), _reduce_impl(_fn), doc=f"{_name} over axes")


def _arg_rule(name: str) -> ShapeRule:
    def rule(x: Aval, *, axis: int, index_dtype) -> Aval:
        _check_kind(name, x, ORDERED)
        _norm_axes(name, (axis,), x.ndim)
        if x.shape[axis] == 0:
            raise ShapeError(f"{name}: attempt to get {name} of an empty sequence")
        shape = x.shape[:axis] + x.shape[axis + 1:]
        return Aval(shape, check_dtype(index_dtype))
    return rule


define("argmax", _arg_rule("argmax"),
       lambda x, *, axis, index_dtype: np.asarray(np.argmax(x, axis=axis), dtype=index_dtype),
       doc="index of the first maximum along axis (NaN counts as maximal)")
define("argmin", _arg_rule("argmin"),
       lambda x, *, axis, index_dtype: np.asarray(np.argmin(x, axis=axis), dtype=index_dtype),
       doc="index of the first minimum along axis (NaN counts as minimal)")


def _scan_rule(name: str) -> ShapeRule:
    def rule(x: Aval, *, axis: int, reverse: bool) -> Aval:
        _check_kind(name, x, NUMBER)
        _norm_axes(name, (axis,), x.ndim)
        return x
    return rule


def _scan_impl(fn: Callable) -> Callable:
    def impl(x, *, axis, reverse):
        x = np.asarray(x)
        if reverse:
            return np.flip(fn(np.flip(x, axis), axis=axis, dtype=x.dtype), axis).copy()
        return fn(x, axis=axis, dtype=x.dtype)
    return impl


define("cumsum", _scan_rule("cumsum"), _scan_impl(np.cumsum),
       doc="inclusive cumulative sum along axis (from the end when reverse)")
define("cumprod", _scan_rule("cumprod"), _scan_impl(np.cumprod),
       doc="inclusive cumulative product along axis (from the end when reverse)")

# ---------------------------------------------------------------------------------------
# Contractions


def _dot_general_rule(lhs: Aval, rhs: Aval, *, dimension_numbers) -> Aval:
    (lc, rc), (lb, rb) = dimension_numbers
    dtype = _same_dtype("dot_general", lhs, rhs)
    _check_kind("dot_general", lhs, NUMBER)
    _norm_axes("dot_general", tuple(lc) + tuple(lb), lhs.ndim)
    _norm_axes("dot_general", tuple(rc) + tuple(rb), rhs.ndim)
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise ShapeError("dot_general: contracting/batch dimension lists differ in length")
    for a, b in zip(tuple(lc) + tuple(lb), tuple(rc) + tuple(rb)):
        if lhs.shape[a] != rhs.shape[b]:
            raise ShapeError(
                f"dot_general: dimension {a} of lhs {lhs.shape} ({lhs.shape[a]}) does not "
                f"match dimension {b} of rhs {rhs.shape} ({rhs.shape[b]})"
            )
    batch = tuple(lhs.shape[a] for a in lb)
    lfree = tuple(d for i, d in enumerate(lhs.shape) if i not in lc and i not in lb)
    rfree = tuple(d for i, d in enumerate(rhs.shape) if i not in rc and i not in rb)
    return Aval(batch + lfree + rfree, dtype)


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def dot_general_einsum_spec(lhs_ndim: int, rhs_ndim: int, dimension_numbers) -> str:
    """The einsum string equivalent to a dot_general (batch, lhs free, rhs free)."""
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter(_LETTERS)
    lhs = [None] * lhs_ndim
    rhs = [None] * rhs_ndim
    for a, b in zip(lb, rb):
        lhs[a] = rhs[b] = next(letters)
    for a, b in zip(lc, rc):
        lhs[a] = rhs[b] = next(letters)
    for i in range(lhs_ndim):
        if lhs[i] is None:
            lhs[i] = next(letters)
    for i in range(rhs_ndim):
        if rhs[i] is None:
            rhs[i] = next(letters)
    out = [lhs[a] for a in lb]
    out += [lhs[i] for i in range(lhs_ndim) if i not in lc and i not in lb]
    out += [rhs[i] for i in range(rhs_ndim) if i not in rc and i not in rb]
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


def _dot_general_impl(lhs, rhs, *, dimension_numbers):
    lhs, rhs = np.asarray(lhs), np.asarray(rhs)
    spec = dot_general_einsum_spec(lhs.ndim, rhs.ndim, dimension_numbers)
    # order='C', not ascontiguousarray: that makes a 0-d result (vector . vector) 1-d.
    return np.asarray(np.einsum(spec, lhs, rhs, optimize=True), dtype=lhs.dtype, order="C")


define("dot_general", _dot_general_rule, _dot_general_impl,
       doc="general contraction: output dims are batch, lhs free, rhs free")


def _conv_out_size(n, k, stride, lo, hi, lhs_dil, rhs_dil) -> int:
    n_dil = (n - 1) * lhs_dil + 1 if n > 0 else 0
    k_dil = (k - 1) * rhs_dil + 1
    return max(0, (n_dil + lo + hi - k_dil) // stride + 1)


def _conv_rule(lhs: Aval, rhs: Aval, *, window_strides, padding, lhs_dilation, rhs_dilation,
               feature_group_count) -> Aval:
    dtype = _same_dtype("conv", lhs, rhs)
    _check_kind("conv", lhs, NUMBER)
    nsp = lhs.ndim - 2
    if nsp < 1 or rhs.ndim != lhs.ndim:
        raise ShapeError(f"conv: lhs {lhs.shape} (N, C, ...) and rhs {rhs.shape} "
                         "(O, I, ...) need the same rank >= 3")
    if not (len(window_strides) == len(padding) == len(lhs_dilation) == len(rhs_dilation) == nsp):
        raise ShapeError("conv: strides/padding/dilations must have one entry per spatial dim")
    g = feature_group_count
    n, c = lhs.shape[:2]
    o, i = rhs.shape[:2]
    if c != i * g or o % g:
        raise ShapeError(f"conv: {c} input channels and weight {rhs.shape} do not fit "
                         f"{g} group(s)")
    spatial = tuple(
        _conv_out_size(lhs.shape[2 + d], rhs.shape[2 + d], window_strides[d], *padding[d],
                       lhs_dilation[d], rhs_dilation[d])
        for d in range(nsp)
    )
    return Aval((n, o) + spatial, dtype)


def _dilate(x: np.ndarray, dilation: Sequence[int], first_axis: int, fill=0) -> np.ndarray:
    if all(d == 1 for d in dilation):
        return x
    shape = list(x.shape)
    for k, d in enumerate(dilation):
        ax = first_axis + k
        shape[ax] = (x.shape[ax] - 1) * d + 1 if x.shape[ax] else 0
    out = np.full(shape, fill, x.dtype)
    idx = [slice(None)] * x.ndim
    for k, d in enumerate(dilation):
        idx[first_axis + k] = slice(None, None, d)
    out[tuple(idx)] = x
    return out


def _pad_or_crop(x: np.ndarray, padding, first_axis: int) -> np.ndarray:
    widths = [(0, 0)] * first_axis + [(max(lo, 0), max(hi, 0)) for lo, hi in padding]
    x = np.pad(x, widths)
    idx = [slice(None)] * first_axis
    for k, (lo, hi) in enumerate(padding):
        n = x.shape[first_axis + k]
        idx.append(slice(max(-lo, 0), n - max(-hi, 0)))
    return x[tuple(idx)]


def _conv_impl(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
               feature_group_count):
    lhs, rhs = np.asarray(lhs), np.asarray(rhs)
    out_aval = _conv_rule(Aval(lhs.shape, lhs.dtype), Aval(rhs.shape, rhs.dtype),
                          window_strides=window_strides, padding=padding,
                          lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                          feature_group_count=feature_group_count)
    nsp = lhs.ndim - 2
    x = _pad_or_crop(_dilate(lhs, lhs_dilation, 2), padding, 2)
    ksize = rhs.shape[2:]
    out_sp = out_aval.shape[2:]
    if 0 in out_aval.shape:
        return np.zeros(out_aval.shape, lhs.dtype)
    # windows[n, c, o1.., k1..] = x[n, c, o1*s1 + k1*d1, ...]
    st = x.strides
    shape = x.shape[:2] + tuple(out_sp) + tuple(ksize)
    strides = st[:2] + tuple(st[2 + d] * window_strides[d] for d in range(nsp)) + tuple(
        st[2 + d] * rhs_dilation[d] for d in range(nsp))
    windows = np.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)
    g = feature_group_count
    n, c = lhs.shape[:2]
    o = rhs.shape[0]
    windows = windows.reshape((n, g, c // g) + tuple(out_sp) + tuple(ksize))
    w = rhs.reshape((g, o // g, c // g) + tuple(ksize))
    sp = _LETTERS[:nsp]
    kk = _LETTERS[nsp:2 * nsp]
    spec = f"NGC{sp}{kk},GOC{kk}->NGO{sp}"
    out = np.einsum(spec, windows, w, optimize=True)
    # Pure primitives return fresh C-ordered arrays: views of them rely on that layout.
    return np.ascontiguousarray(out.reshape(out_aval.shape), dtype=lhs.dtype)


define("conv", _conv_rule, _conv_impl,
       doc="N-d convolution (cross-correlation), lhs NC..., rhs OI..., with strides, "
           "padding (lo, hi) pairs, lhs/rhs dilation and feature groups")

# ---------------------------------------------------------------------------------------
# Shape manipulation


def _reshape_rule(x: Aval, *, new_sizes) -> Aval:
    if int(np.prod(new_sizes, dtype=np.int64)) != x.size:
        raise ShapeError(f"cannot reshape an array of shape {x.shape} into shape "
                         f"{tuple(new_sizes)}")
    return Aval(tuple(new_sizes), x.dtype)


def _transpose_rule(x: Aval, *, permutation) -> Aval:
    if sorted(permutation) != list(range(x.ndim)):
        raise ShapeError(f"transpose: {tuple(permutation)} is not a permutation of the "
                         f"{x.ndim} axes of shape {x.shape}")
    return Aval(tuple(x.shape[p] for p in permutation), x.dtype)


def _broadcast_in_dim_rule(x: Aval, *, shape, broadcast_dimensions) -> Aval:
    if len(broadcast_dimensions) != x.ndim or list(broadcast_dimensions) != sorted(
            set(broadcast_dimensions)):
        raise ShapeError(f"broadcast_in_dim: bad broadcast_dimensions {broadcast_dimensions} "
                         f"for operand {x.shape}")
    for d, od in zip(x.shape, broadcast_dimensions):
        if not (0 <= od < len(shape)) or d not in (1, shape[od]):
            raise ShapeError(f"broadcast_in_dim: cannot broadcast {x.shape} to {tuple(shape)}"
                             f" along {broadcast_dimensions}")
    return Aval(tuple(shape), x.dtype)


def _broadcast_in_dim_impl(x, *, shape, broadcast_dimensions):
    x = np.asarray(x)
    expanded = [1] * len(shape)
    for d, od in zip(x.shape, broadcast_dimensions):
        expanded[od] = d
    return np.broadcast_to(x.reshape(expanded), shape).copy()


def _squeeze_rule(x: Aval, *, dimensions) -> Aval:
    _norm_axes("squeeze", dimensions, x.ndim)
    for d in dimensions:
        if x.shape[d] != 1:
            raise ShapeError(f"squeeze: dimension {d} of shape {x.shape} is not 1")
    return Aval(tuple(s for i, s in enumerate(x.shape) if i not in dimensions), x.dtype)


def _expand_dims_rule(x: Aval, *, dimensions) -> Aval:
    ndim = x.ndim + len(dimensions)
    _norm_axes("expand_dims", dimensions, ndim)
    it = iter(x.shape)
    return Aval(tuple(1 if i in dimensions else next(it) for i in range(ndim)), x.dtype)


define("reshape", _reshape_rule, lambda x, *, new_sizes: np.reshape(x, new_sizes).copy(),
       doc="a copy with a new shape (C order)")
define("transpose", _transpose_rule,
       lambda x, *, permutation: np.transpose(x, permutation).copy(),
       doc="a copy with permuted axes")
define("broadcast_in_dim", _broadcast_in_dim_rule, _broadcast_in_dim_impl,
       doc="broadcast operand dims to `broadcast_dimensions` of `shape`")
define("squeeze", _squeeze_rule, lambda x, *, dimensions: np.squeeze(x, dimensions).copy(),
       doc="remove size-1 dimensions")
define("expand_dims", _expand_dims_rule,
       lambda x, *, dimensions: np.expand_dims(x, dimensions).copy(),
       doc="insert size-1 dimensions at `dimensions` of the output")


def _concatenate_rule(*xs: Aval, dimension: int) -> Aval:
    if not xs:
        raise ShapeError("concatenate needs at least one array")
    dtype = _same_dtype("concatenate", *xs)
    nd = xs[0].ndim
    _norm_axes("concatenate", (dimension,), nd)
    for x in xs:
        if x.ndim != nd or any(a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape))
                               if i != dimension):
            raise ShapeError("concatenate: shapes " + ", ".join(str(x.shape) for x in xs)
                             + f" differ outside dimension {dimension}")
    shape = list(xs[0].shape)
    shape[dimension] = sum(x.shape[dimension] for x in xs)
    return Aval(tuple(shape), dtype)


define("concatenate", _concatenate_rule,
       lambda *xs, dimension: np.concatenate(xs, axis=dimension),
       doc="join arrays along an existing dimension")


def _pad_rule(x: Aval, value: Aval, *, padding_config) -> Aval:
    _same_dtype("pad", x, value)
    if value.shape != ():
        raise ShapeError("pad: the padding value must be 0-d")
    if len(padding_config) != x.ndim:
        raise ShapeError(f"pad: padding_config needs {x.ndim} entries")
    shape = []
    for d, (lo, hi, interior) in zip(x.shape, padding_config):
        if interior < 0:
            raise ShapeError("pad: interior padding must be >= 0")
        size = lo + hi + d + max(d - 1, 0) * interior
        if size < 0:
            raise ShapeError(f"pad: negative size for dimension of length {d}")
        shape.append(size)
    return Aval(tuple(shape), x.dtype)


def _pad_impl(x, value, *, padding_config):
    x = np.asarray(x)
    if x.ndim == 0:  # nothing to pad (np.pad rejects an empty pad_width)
        return x.copy()
    # Interior positions hold the padding value too (as in lax.pad).
    x = _dilate(x, [c[2] + 1 for c in padding_config], 0, np.asarray(value).item())
    pads = [(max(lo, 0), max(hi, 0)) for lo, hi, _ in padding_config]
    x = np.pad(x, pads, constant_values=np.asarray(value).item())
    idx = tuple(slice(max(-lo, 0), x.shape[i] - max(-hi, 0))
                for i, (lo, hi, _) in enumerate(padding_config))
    return x[idx].copy()


define("pad", _pad_rule, _pad_impl,
       doc="pad with a scalar value: (lo, hi, interior) per dimension, lo/hi may be negative")


def _slice_rule(x: Aval, *, starts, steps, sizes) -> Aval:
    if not (len(starts) == len(steps) == len(sizes) == x.ndim):
        raise ShapeError(f"slice: starts/steps/sizes need {x.ndim} entries")
    for n, a, s, k in zip(x.shape, starts, steps, sizes):
        if s == 0 or k < 0 or (k > 0 and not (0 <= a < n and 0 <= a + (k - 1) * s < n)):
            raise ShapeError(f"slice: start {a}, step {s}, size {k} out of range for "
                             f"shape {x.shape}")
    return Aval(tuple(sizes), x.dtype)


def numpy_slices(starts, steps, sizes) -> tuple[slice, ...]:
    """NumPy slice objects for a (starts, steps, sizes) static slice."""
    out = []
    for a, s, k in zip(starts, steps, sizes):
        if k == 0:
            out.append(slice(0, 0))
            continue
        stop = a + k * s
        out.append(slice(a, None if stop < 0 else stop, s))
    return tuple(out)


define("slice", _slice_rule,
       lambda x, *, starts, steps, sizes: np.asarray(x)[numpy_slices(starts, steps, sizes)].copy(),
       doc="static strided slice: element i of a dim is x[start + i*step] for i < size")


def _update_slice_rule(x: Aval, update: Aval, *, starts, steps, sizes) -> Aval:
    _same_dtype("update_slice", x, update)
    region = _slice_rule(x, starts=starts, steps=steps, sizes=sizes)
    broadcast_shapes("update_slice", update.shape, region.shape)
    if broadcast_shapes("update_slice", update.shape, region.shape) != region.shape:
        raise ShapeError(f"update_slice: update {update.shape} does not fit region "
                         f"{region.shape}")
    return x


def _update_slice_impl(x, update, *, starts, steps, sizes):
    out = np.array(x, copy=True)
    out[numpy_slices(starts, steps, sizes)] = update
    return out


define("update_slice", _update_slice_rule, _update_slice_impl,
       doc="x with the static slice region replaced by update (broadcast): pure")


def _dynamic_slice_rule(x: Aval, *starts: Aval, slice_sizes) -> Aval:
    if len(starts) != x.ndim or len(slice_sizes) != x.ndim:
        raise ShapeError(f"dynamic_slice needs {x.ndim} start indices and sizes")
    for s in starts:
        if s.shape != () or s.dtype.kind not in "iu":
            raise DTypeError("dynamic_slice: start indices must be 0-d integers")
    for n, k in zip(x.shape, slice_sizes):
        if not 0 <= k <= n:
            raise ShapeError(f"dynamic_slice: size {k} does not fit dimension {n}")
    return Aval(tuple(slice_sizes), x.dtype)


def _clamped_starts(shape, starts, sizes) -> tuple[slice, ...]:
    # Like JAX: start indices are clamped so the slice stays in bounds.
    return tuple(slice(s, s + k) for s, k in (
        (int(min(max(int(st), 0), n - k)), k) for n, st, k in zip(shape, starts, sizes)))


define("dynamic_slice", _dynamic_slice_rule,
       lambda x, *starts, slice_sizes: np.asarray(x)[
           _clamped_starts(np.shape(x), starts, slice_sizes)].copy(),
       doc="slice of static size at traced start indices (clamped into bounds)")


def _dynamic_update_slice_rule(x: Aval, update: Aval, *starts: Aval) -> Aval:
    _same_dtype("dynamic_update_slice", x, update)
    if update.ndim != x.ndim or len(starts) != x.ndim:
        raise ShapeError("dynamic_update_slice: update and starts must match x's rank")
    _dynamic_slice_rule(x, *starts, slice_sizes=update.shape)
    return x


def _dynamic_update_slice_impl(x, update, *starts):
    out = np.array(x, copy=True)
    out[_clamped_starts(out.shape, starts, np.shape(update))] = update
    return out


define("dynamic_update_slice", _dynamic_update_slice_rule, _dynamic_update_slice_impl,
       doc="x with a block at traced start indices replaced by update (clamped): pure")

# ---------------------------------------------------------------------------------------
# Gather and scatter: integer-array indexing along one axis and its adjoints


def _gather_rule(x: Aval, idx: Aval, *, axis: int) -> Aval:
    _norm_axes("gather", (axis,), x.ndim)
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"gather: indices must be integers, got {idx.dtype}")
    return Aval(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)


def _gather_impl(x, idx, *, axis):
    # np.take of one element is a NumPy scalar: an array, so that an assign can write into it
    return np.asarray(np.take(np.asarray(x), np.asarray(idx), axis=axis))


define("gather", _gather_rule, _gather_impl,
       doc="np.take(x, idx, axis): out shape x.shape[:axis] + idx.shape + x.shape[axis+1:]")


def _scatter_rule(name: str) -> ShapeRule:
    def rule(x: Aval, idx: Aval, updates: Aval, *, axis: int) -> Aval:
        _same_dtype(name, x, updates)
        expected = _gather_rule(x, idx, axis=axis)
        if updates.shape != expected.shape:
            raise ShapeError(f"{name}: updates {updates.shape} must have shape "
                             f"{expected.shape}")
        return x
    return rule


def _scatter_index(ndim: int, idx, axis: int) -> tuple:
    return (slice(None),) * axis + (np.asarray(idx),)


def _scatter_add_impl(x, idx, updates, *, axis):
    out = np.array(x, copy=True)
    np.add.at(out, _scatter_index(out.ndim, idx, axis), updates)
    return out


def _scatter_impl(x, idx, updates, *, axis):
    out = np.array(x, copy=True)
    out[_scatter_index(out.ndim, idx, axis)] = updates
    return out


define("scatter_add", _scatter_rule("scatter_add"), _scatter_add_impl,
       doc="x with updates added at idx along axis (repeats accumulate): gather's adjoint")
define("scatter", _scatter_rule("scatter"), _scatter_impl,
       doc="x with x[..., idx, ...] = updates along axis (last write wins)")

# ---------------------------------------------------------------------------------------
# Creation


def _iota_rule(*, shape, dimension, dtype) -> Aval:
    _norm_axes("iota", (dimension,), len(shape))
    return Aval(tuple(shape), check_dtype(dtype))


def _iota_impl(*, shape, dimension, dtype):
    expanded = [1] * len(shape)
    expanded[dimension] = shape[dimension]
    r = np.arange(shape[dimension], dtype=dtype).reshape(expanded)
    return np.broadcast_to(r, shape).copy()


define("iota", _iota_rule, _iota_impl, doc="0, 1, 2, ... along `dimension` of `shape`")


def _full_rule(*, shape, dtype, value) -> Aval:
    return Aval(tuple(shape), check_dtype(dtype))


define("full", _full_rule, lambda *, shape, dtype, value: np.full(shape, value, dtype=dtype),
       doc="a fresh array of `shape` filled with the static scalar `value`")

# ---------------------------------------------------------------------------------------
# Random numbers: counter-based (splitmix64), keyed by a uint64 key array.
# Outputs have shape key.shape + shape, so a batched key gives one draw per batch entry.

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser; uint64 arithmetic wraps by design."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def random_bits(key, stream: int, n: int) -> np.ndarray:
    """n uint64 words per key: mix(mix(key + stream*G) + (i+1)*G) for i < n."""
    key = np.asarray(key, dtype=np.uint64)
    with np.errstate(over="ignore"):
        base = _mix64(key + np.uint64((stream * _GOLDEN) & _MASK))
        ctr = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN))
        return _mix64(base[..., None] + ctr)


def stream_key(base: int, stream: int) -> np.ndarray:
    """The key whose stream s is stream `stream + s` of `base` (see random_bits)."""
    return np.asarray((int(base) + int(stream) * _GOLDEN) & _MASK, dtype=np.uint64)


def bits_to_unit(bits: np.ndarray, dtype) -> np.ndarray:
    """Uniform floats in [0, 1) from uint64 words (53 or 24 mantissa bits)."""
    if np.dtype(dtype) == np.float32:
        return ((bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24))
    return (bits >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def _random_rule(name: str) -> ShapeRule:
    def rule(key: Aval, *, shape, dtype, stream) -> Aval:
        if key.dtype != np.uint64:
            raise DTypeError(f"{name}: key must be uint64, got {key.dtype}")
        dtype = check_dtype(dtype)
        if dtype.kind != "f":
            raise DTypeError(f"{name}: dtype must be floating, got {dtype}")
        return Aval(key.shape + tuple(shape), dtype)
    return rule


def _random_uniform_impl(key, *, shape, dtype, stream):
    key = np.asarray(key)
    n = int(np.prod(shape, dtype=np.int64))
    u = bits_to_unit(random_bits(key, stream, n), dtype)
    return u.reshape(key.shape + tuple(shape))


def _random_normal_impl(key, *, shape, dtype, stream):
    key = np.asarray(key)
    n = int(np.prod(shape, dtype=np.int64))
    bits = random_bits(key, stream, 2 * n)
    u1 = 1.0 - bits_to_unit(bits[..., 0::2], np.float64)  # in (0, 1]
    u2 = bits_to_unit(bits[..., 1::2], np.float64)
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return z.astype(dtype).reshape(key.shape + tuple(shape))


define("random_uniform", _random_rule("random_uniform"), _random_uniform_impl, effect="random",
       doc="uniform [0, 1) draws, counter-based from key and stream")
define("random_normal", _random_rule("random_normal"), _random_normal_impl, effect="random",
       doc="standard normal draws (Box-Muller), counter-based from key and stream")


def _fold_in_rule(key: Aval, *, data: int) -> Aval:
    if key.dtype != np.uint64:
        raise DTypeError(f"random_fold_in: key must be uint64, got {key.dtype}")
    return key


def _fold_in_impl(key, *, data):
    key = np.asarray(key, dtype=np.uint64)
    return _mix64(key ^ _mix64(np.asarray((data + 1) * _GOLDEN & _MASK, dtype=np.uint64)))


define("random_fold_in", _fold_in_rule, _fold_in_impl,
       doc="a new key derived from key and a static integer")


def _key_iota_rule(key: Aval, *, size: int) -> Aval:
    return Aval(key.shape + (size,), key.dtype)


def _key_iota_impl(key, *, size):
    key = np.asarray(key, dtype=np.uint64)
    i = np.arange(size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(key[..., None] ^ _mix64((i + np.uint64(1)) * np.uint64(_GOLDEN)))


define("random_split", _key_iota_rule, _key_iota_impl,
       doc="`size` independent keys from one key (for vmap randomness='different')")


def shift_streams(graph: Graph, offset: int) -> Graph:
    """graph with every draw's stream (and fold-in) moved up by offset.

    Inlining a graph into a trace that already drew from streams below `offset` of the same
    key keeps every draw on a stream of its own, numbered as the same calls made one after
    another would number them.
    """
    if offset == 0:
        return graph
    nodes = []
    for node in graph.nodes:
        params = {k: shift_streams(v, offset) if isinstance(v, Graph) else v
                  for k, v in node.params.items()}
        if node.prim.effect == "random":
            params["stream"] += offset
        elif node.prim.name == "random_fold_in":
            params["data"] += offset
        nodes.append(Node(node.prim, node.inputs, params, node.outputs, node.source))
    return dataclasses.replace(graph, nodes=nodes, _key=None)


def random_streams(graph: Graph) -> int:
    """How many streams of its key input a graph draws from.

    Draws number their call sites' streams from 0, and a nested trace's key folds in one
    stream of its own; the largest such number, plus one, bounds the count (exactly, for a
    graph without nested draws).
    """
    count = 0
    for node in graph.nodes:
        if node.prim.effect == "random":
            count = max(count, node.params["stream"] + 1)
        elif node.prim.name == "random_fold_in":
            count = max(count, node.params["data"] + 1)
        for param in node.params.values():
            if isinstance(param, Graph):
                count = max(count, random_streams(param))
    return count

# ---------------------------------------------------------------------------------------
# Views and mutation: recorded while tracing, removed by compiler/functionalize.py


def _view_slice_rule(x: Aval, *, starts, steps, sizes) -> Aval:
    return _slice_rule(x, starts=starts, steps=steps, sizes=sizes)


define("view_slice", _view_slice_rule,
       lambda x, *, starts, steps, sizes: np.asarray(x)[numpy_slices(starts, steps, sizes)],
       effect="view", doc="a strided view of x (aliases x's buffer)")
define("view_reshape", _reshape_rule,
       lambda x, *, new_sizes: _reshape_view(x, new_sizes),
       effect="view", doc="a reshaped view of x (aliases x's buffer)")
define("view_transpose", _transpose_rule,
       lambda x, *, permutation: np.asarray(x).transpose(permutation),
       effect="view", doc="a transposed view of x (aliases x's buffer)")


def _broadcast_view(x, shape, broadcast_dimensions):
    """np.broadcast_to's read-only view: x's axes at broadcast_dimensions of shape."""
    x = np.asarray(x)
    where = dict(zip(broadcast_dimensions, x.shape))
    return np.broadcast_to(x.reshape([where.get(i, 1) for i in range(len(shape))]), shape)


define("view_broadcast", _broadcast_in_dim_rule,
       lambda x, *, shape, broadcast_dimensions: _broadcast_view(x, shape,
                                                                 broadcast_dimensions),
       effect="view", doc="a broadcast, read-only view of x (np.broadcast_to: aliases "
                          "x's buffer)")


def _reshape_view(x, new_sizes):
    x = np.asarray(x)
    view = x.view()
    view.shape = tuple(new_sizes)  # raises rather than copies: views must alias
    return view


def _assign_rule(dst: Aval, src: Aval) -> list:
    _same_dtype("assign", dst, src)
    if broadcast_shapes("assign", dst.shape, src.shape) != dst.shape:
        raise ShapeError(f"could not broadcast input array from shape {src.shape} into "
                         f"shape {dst.shape}")
    return []


def _assign_impl(dst, src):
    dst[...] = src
    return []


define("assign", _assign_rule, _assign_impl, effect="mutation", multiple_results=True,
       doc="write src (broadcast) into dst's buffer in place; dst may be a view")

# ---------------------------------------------------------------------------------------
# Calls: a node holding a sub-graph


def _call_rule(*args: Aval, graph) -> list[Aval]:
    if list(args) != graph.in_avals:
        raise ShapeError("call: argument avals do not match the graph's inputs")
    return graph.out_avals


def _call_impl(*args, graph):
    from .interpreter import interpret

    return interpret(graph, args)


define("call", _call_rule, _call_impl, multiple_results=True,
       doc="apply a sub-graph to the inputs")


def _aot_compiled_rule(*args: Aval, graph, fn) -> list[Aval]:
    return _call_rule(*args, graph=graph)


def _aot_compiled_impl(*args, graph, fn):
    return list(fn(*args))


# transfuse.compile's compiled halves (transfuse/compile/compiled_call.py): run by the
# callable a compiler made of the graph; every transform treats the node as a call.
define("aot_compiled", _aot_compiled_rule, _aot_compiled_impl, multiple_results=True,
       doc="a graph run by the callable a transfuse.compile compiler made of it")


from . import control as _control  # noqa: E402,F401  (defines cond, while_loop, scan)
from . import custom as _custom  # noqa: E402,F401  (defines stop_gradient, custom rules)
from . import fft as _fft  # noqa: E402,F401  (defines the discrete Fourier transform)
from . import linalg as _linalg  # noqa: E402,F401  (defines the linear-algebra primitives)
from . import remat as _remat  # noqa: E402,F401  (defines remat, optimization_barrier)
from . import sort as _sort  # noqa: E402,F401  (defines the sort primitive)
