"""The machinery behind transfuse.numpy: promotion (NEP 50), the dispatch registry, ufuncs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.core import check_dtype
from transfuse.ir.errors import (
    DTypeError,
    TransfuseAxisError,
    TransfuseValueError,
    UnsupportedError,
    missing_rule,
    public_name,
)
from transfuse.ir.primitives import PRIMITIVES
from transfuse.ir.source import with_location
from transfuse.ir.tracing import NUMPY_TABLE, Tracer, bind, current_builder

from ._scalars import as_scalars, is_scalar

P = PRIMITIVES
EXPORTS: dict[str, Callable] = {}
PY_SCALARS = (bool, int, float, complex)


# ---------------------------------------------------------------------------------------
# Values


def is_traced(x: Any) -> bool:
    return isinstance(x, Tracer)


def any_traced(args: Any, kwargs: dict | None = None) -> bool:
    """Whether a traced value appears in args (or one level of lists/tuples inside)."""
    for a in (*args, *(kwargs or {}).values()):
        if isinstance(a, Tracer):
            return True
        if isinstance(a, (list, tuple)) and any(isinstance(b, Tracer) for b in a):
            return True
    return False


def dtype_of(x: Any) -> np.dtype | type:
    """A dtype, or for Python scalars their type (NEP 50: weak)."""
    if isinstance(x, (Tracer, np.ndarray, np.generic)):
        return x.dtype
    if isinstance(x, bool):
        return np.dtype(bool)  # bool is the lowest kind: weak and strong agree
    if isinstance(x, PY_SCALARS):
        return type(x)
    return np.asarray(x).dtype


def result_type(*xs: Any) -> np.dtype:
    """NumPy's result dtype with NEP 50 weak Python scalars."""
    parts = [x.dtype if isinstance(x, (Tracer, np.ndarray, np.generic)) else x for x in xs]
    parts = [np.asarray(p) if isinstance(p, (list, tuple)) else p for p in parts]
    return np.result_type(*parts)


def asarray(x: Any, dtype: Any = None) -> Any:
    """A traced value stays traced; anything else becomes a NumPy array."""
    if isinstance(x, Tracer):
        return x if dtype is None else lax.convert(x, dtype)
    if isinstance(x, (list, tuple)) and any_traced(x):
        from ._functions import stack
        return asarray(stack([asarray(e) for e in x]), dtype)
    arr = np.asarray(x, dtype=dtype)
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
        raise DTypeError(f"dtype {arr.dtype} is not supported")
    return arr


def cast_operand(x: Any, dtype: np.dtype) -> Any:
    """x converted to dtype: traced values by a cast node, the rest eagerly."""
    if isinstance(x, Tracer):
        return lax.convert(x, dtype)
    return np.asarray(x, dtype=dtype)


def shape_of(x: Any) -> tuple[int, ...]:
    return x.shape if isinstance(x, (Tracer, np.ndarray, np.generic)) else np.shape(x)


def ndim_of(x: Any) -> int:
    return len(shape_of(x))


def normalize_axis(axis: int, ndim: int) -> int:
    """axis as a non-negative index into ndim dimensions; an AxisError at the user's line.

    ndim is the rank the user's code sees (under vmap, without the batch dimension).
    """
    if not -ndim <= axis < max(ndim, 1) or (ndim == 0 and axis not in (0, -1)):
        valid = f" (valid axes: -{ndim} to {ndim - 1})" if ndim else ""
        raise TransfuseAxisError(with_location(
            f"axis {axis} is out of bounds for array of dimension {ndim}{valid}"), axis, ndim)
    return axis % ndim if ndim else 0


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """axis=None, an int or a tuple -> sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(normalize_axis(int(a), ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise TransfuseValueError(with_location(
                f"duplicate value in 'axis': {tuple(axis)} names an axis twice"))
        return tuple(sorted(axes))
    return (normalize_axis(int(axis), ndim),)


# ---------------------------------------------------------------------------------------
# Registration: one implementation serves np.f(tracer) and tnp.f(...)


def implements(np_func: Callable | None, *, name: str | None = None, creation: bool = False,
               exports: dict[str, Callable] | None = None):
    """Register the traced implementation of a NumPy function and export it in tnp (or in
    `exports`, the table of a tnp submodule such as tnp.linalg).

    Called with no traced argument (and outside a trace, for creation functions), the
    exported function calls NumPy itself, so eager results are NumPy's own.
    """
    def decorate(impl: Callable) -> Callable:
        if np_func is not None:
            NUMPY_TABLE[np_func] = impl
        fallback = np_func

        @functools.wraps(impl)
        def public(*args, **kwargs):
            if fallback is not None and not any_traced(args, kwargs) and (
                    not creation or current_builder() is None):
                return fallback(*args, **kwargs)
            return impl(*args, **kwargs)

        public.__doc__ = impl.__doc__ or (f"NumPy's {np_func.__name__}, traceable."
                                          if np_func is not None else None)
        table = EXPORTS if exports is None else exports
        table[name or (np_func.__name__ if np_func is not None else impl.__name__)] = public
        return impl
    return decorate


def unsupported(what: str, hint: str = "") -> UnsupportedError:
    return UnsupportedError(with_location(f"{what} is not supported by transfuse" +
                                          (f"; {hint}" if hint else "")))


# ---------------------------------------------------------------------------------------
# Ufuncs

UFUNC_PRIMITIVE = {
    np.add: "add", np.subtract: "sub", np.multiply: "mul", np.true_divide: "div",
    np.floor_divide: "floor_div", np.remainder: "mod", np.power: "pow",
    np.maximum: "max", np.minimum: "min", np.arctan2: "arctan2",
    np.equal: "eq", np.not_equal: "ne", np.less: "lt", np.less_equal: "le",
    np.greater: "gt", np.greater_equal: "ge",
    np.bitwise_and: "and", np.bitwise_or: "or", np.bitwise_xor: "xor", np.invert: "not",
    np.negative: "neg", np.absolute: "abs", np.fabs: "abs", np.sign: "sign",
    np.square: "square", np.sqrt: "sqrt", np.exp: "exp", np.expm1: "expm1", np.log: "log",
    np.log1p: "log1p", np.sin: "sin", np.cos: "cos", np.tan: "tan", np.arcsin: "arcsin",
    np.arccos: "arccos", np.arctan: "arctan", np.sinh: "sinh", np.cosh: "cosh",
    np.tanh: "tanh", np.arcsinh: "arcsinh", np.arccosh: "arccosh", np.arctanh: "arctanh",
    np.floor: "floor", np.ceil: "ceil", np.rint: "round", np.reciprocal: "reciprocal",
    np.isnan: "isnan", np.isinf: "isinf", np.isfinite: "isfinite",
}
# NumPy's bool loops of arithmetic ufuncs are logical operations.
_BOOL_EQUIVALENT = {"add": "or", "mul": "and", "max": "or", "min": "and", "abs": None,
                    "square": "and"}
_ROUNDING = {"floor", "ceil", "round"}
# Integer loops of float-only primitives, as NumPy defines them.
_INTEGER_SPECIAL = {
    "isnan": lambda x: lax.full(lax.shape(x), False, bool),
    "isinf": lambda x: lax.full(lax.shape(x), False, bool),
    "isfinite": lambda x: lax.full(lax.shape(x), True, bool),
    # C integer division 1 / x: 1 and -1 map to themselves, everything else to 0.
    "reciprocal": lambda x: lax.select(lax.eq(lax.abs(x), 1), x, lax.zeros_like(x)),
}


def resolve_loop(ufunc: np.ufunc, args: tuple) -> tuple[list[np.dtype], np.dtype]:
    """The loop NumPy would pick: operand dtypes and the output dtype."""
    try:
        dts = ufunc.resolve_dtypes(tuple(dtype_of(a) for a in args) + (None,) * ufunc.nout)
    except TypeError as e:
        raise DTypeError(with_location(f"np.{ufunc.__name__}: {e}")) from None
    return list(dts[:ufunc.nin]), dts[ufunc.nin]


def apply_elementwise(ufunc: np.ufunc, *args: Any) -> Any:
    """Apply a ufunc with NumPy's dtype rules, binding the matching primitive."""
    name = UFUNC_PRIMITIVE[ufunc]
    in_dts, out_dt = resolve_loop(ufunc, args)
    operands = [cast_operand(a, dt) for a, dt in zip(args, in_dts)]
    loop_dt = in_dts[0]
    if loop_dt == np.bool_ and name in _BOOL_EQUIVALENT:
        name = _BOOL_EQUIVALENT[name]
        if name is None:
            return lax.copy(operands[0])
        if name == "and" and len(operands) == 1:
            return lax.copy(operands[0])
    if name in _ROUNDING and loop_dt.kind in "iub":
        return lax.copy(operands[0])  # rounding an integer is the identity (a fresh copy)
    if loop_dt.kind in "iub" and name in _INTEGER_SPECIAL:
        return lax.convert(_INTEGER_SPECIAL[name](operands[0]), out_dt)
    if name == "pow" and isinstance(args[1], int) and not isinstance(args[1], bool) \
            and not isinstance(args[0], PY_SCALARS):
        return lax.convert(lax.integer_pow(operands[0], args[1]), out_dt)
    if name == "logical":
        raise AssertionError
    out = bind(P[name], *operands)
    return lax.convert(out, out_dt)


def _logical(op: str) -> Callable:
    def impl(*args):
        operands = [to_bool(a) for a in args]
        if op == "not":
            return bind(P["not"], operands[0])
        return bind(P[op], *operands)
    return impl


def to_bool(x: Any) -> Any:
    """Truthiness as a bool array (x != 0)."""
    if dtype_of(x) == np.bool_:
        return x if isinstance(x, Tracer) else np.asarray(x)
    if isinstance(x, Tracer):
        return lax.ne(x, 0)
    return np.asarray(x).astype(bool)


def conjugate(x: Any) -> Any:
    x = asarray(x)
    return lax.conj(x) if lax.is_complex(x) else lax.copy(x)


def _composite_ufuncs() -> dict[np.ufunc, Callable]:
    """Ufuncs without a primitive of their own, written with others."""
    log2 = np.log(2.0)
    log10 = np.log(10.0)

    def float_unary(fn):
        def impl(x):
            in_dts, out_dt = resolve_loop(np.exp, (x,))
            return lax.convert(fn(cast_operand(x, in_dts[0])), out_dt)
        return impl

    def trunc(x):
        in_dts, out_dt = resolve_loop(np.trunc, (x,))
        x = cast_operand(x, in_dts[0])
        if in_dts[0].kind in "iub":
            return lax.copy(x)
        return lax.select(lax.lt(x, 0), lax.ceil(x), lax.floor(x))

    def hypot(x, y):
        in_dts, out_dt = resolve_loop(np.hypot, (x, y))
        x, y = (cast_operand(a, in_dts[0]) for a in (x, y))
        return lax.sqrt(lax.add(lax.mul(x, x), lax.mul(y, y)))

    def logaddexp(x, y):
        in_dts, out_dt = resolve_loop(np.logaddexp, (x, y))
        x, y = (cast_operand(a, in_dts[0]) for a in (x, y))
        # NumPy's algorithm: max + log1p(exp(-|x - y|)), so a dominant term keeps the
        # other's digits (logaddexp(0, -50) is 2e-22, not 0); equal infinities are themselves
        m = lax.max(x, y)
        same_inf = lax.bitwise_and(lax.eq(x, y), lax.isinf(x))
        gap = lax.abs(lax.sub(x, lax.select(same_inf, x, y)))  # 0, not nan, at equal infinities
        out = lax.add(m, lax.log1p(lax.exp(lax.neg(gap))))
        return lax.select(same_inf, x, out)

    def cbrt(x):
        in_dts, _ = resolve_loop(np.cbrt, (x,))
        x = cast_operand(x, in_dts[0])
        mag = lax.pow(lax.abs(x), np.asarray(1.0 / 3.0, dtype=in_dts[0]))
        return lax.mul(lax.sign(x), mag)

    def positive(x):
        return lax.copy(asarray(x))

    def nan_ignoring(ufunc, pick):
        """fmax/fmin: like max/min, but a NaN loses to a number."""
        def impl(x, y):
            in_dts, _ = resolve_loop(ufunc, (x, y))
            x, y = (cast_operand(a, in_dts[0]) for a in (x, y))
            if in_dts[0].kind != "f":
                return pick(x, y)
            return lax.select(lax.isnan(y), x, lax.select(lax.isnan(x), y, pick(x, y)))
        return impl

    fmax = nan_ignoring(np.fmax, lax.max)
    fmin = nan_ignoring(np.fmin, lax.min)

    def signbit(x):
        x = asarray(x)
        if dtype_of(x).kind != "f":
            return lax.lt(x, 0)
        # -0.0 and -nan have the sign bit set: 1/x < 0 catches -0.0.
        return lax.bitwise_or(lax.lt(x, 0), lax.lt(lax.div(1.0, x), 0))

    return {
        np.exp2: float_unary(lambda x: lax.exp(lax.mul(x, log2))),
        np.log2: float_unary(lambda x: lax.div(lax.log(x), log2)),
        np.log10: float_unary(lambda x: lax.div(lax.log(x), log10)),
        np.deg2rad: float_unary(lambda x: lax.mul(x, np.pi / 180)),
        np.radians: float_unary(lambda x: lax.mul(x, np.pi / 180)),
        np.rad2deg: float_unary(lambda x: lax.mul(x, 180 / np.pi)),
        np.degrees: float_unary(lambda x: lax.mul(x, 180 / np.pi)),
        np.trunc: trunc, np.hypot: hypot, np.logaddexp: logaddexp, np.cbrt: cbrt,
        np.positive: positive, np.fmax: fmax, np.fmin: fmin, np.signbit: signbit,
        np.logical_and: _logical("and"), np.logical_or: _logical("or"),
        np.logical_xor: _logical("xor"), np.logical_not: _logical("not"),
        np.conjugate: conjugate,
    }


UFUNC_COMPOSITES = _composite_ufuncs()


def call_ufunc(ufunc: np.ufunc, *args: Any) -> Any:
    if ufunc in UFUNC_COMPOSITES:
        return UFUNC_COMPOSITES[ufunc](*args)
    if ufunc in UFUNC_PRIMITIVE:
        return apply_elementwise(ufunc, *args)
    if ufunc in NUMPY_TABLE:  # gufuncs such as matmul are registered as functions
        return NUMPY_TABLE[ufunc](*args)
    raise missing_rule(ufunc)


def handle_ufunc(key: Any, inputs: tuple, kwargs: dict) -> Any:
    """Entry point of Tracer.__array_ufunc__ (key: a ufunc, or (ufunc, method))."""
    if isinstance(key, tuple):  # reduce, outer: 0-d results are scalars, unless out=
        result = _ufunc_method(key[0], key[1], inputs, kwargs)
        return result if kwargs.get("out") is not None else as_scalars(result, inputs)
    out = kwargs.pop("out", None)
    dtype = kwargs.pop("dtype", None)
    where = kwargs.pop("where", True)
    casting = kwargs.pop("casting", "same_kind")
    kwargs.pop("order", None)
    if kwargs or where is not True:
        raise unsupported(f"{public_name(key)} with {sorted(kwargs) or ['where']}")
    if dtype is not None:
        inputs = tuple(cast_operand(a, np.dtype(dtype)) for a in inputs)
    result = call_ufunc(key, *inputs)
    if out is not None:
        target = out[0] if isinstance(out, tuple) else out
        if not np.can_cast(dtype_of(result), dtype_of(target), casting=casting):
            raise DTypeError(with_location(
                f"Cannot cast ufunc '{key.__name__}' output from {dtype_of(result)} to "
                f"{dtype_of(target)} with casting rule '{casting}' (the out= array)"))
        from ._indexing import assign_into
        assign_into(target, result)
        return target
    return as_scalars(result, inputs)  # a ufunc's 0-d result is a NumPy scalar


def _ufunc_method(ufunc: np.ufunc, method: str, inputs: tuple, kwargs: dict) -> Any:
    from . import _functions as F
    reducers = {np.add: F.sum, np.multiply: F.prod, np.maximum: F.max, np.minimum: F.min,
                np.logical_and: F.all, np.logical_or: F.any}
    if method == "reduce" and ufunc in reducers:
        x = inputs[0]
        axis = kwargs.pop("axis", 0)
        return reducers[ufunc](x, axis=axis, **kwargs)
    if method == "accumulate" and ufunc in (np.add, np.multiply):
        fn = F.cumsum if ufunc is np.add else F.cumprod
        return fn(inputs[0], axis=kwargs.pop("axis", 0), **kwargs)
    if method == "outer":
        a, b = (asarray(x) for x in inputs)
        a = F.reshape(a, shape_of(a) + (1,) * ndim_of(b))
        return call_ufunc(ufunc, a, b)
    if method == "at" and ufunc is np.add:
        from ._indexing import add_at
        return add_at(*inputs)
    raise missing_rule(f"{public_name(ufunc)}.{method}")


def inplace_op(ufunc: np.ufunc, target: Tracer, other: Any) -> Tracer:
    """`x op= y`: NumPy computes x op y and writes it into x's buffer (same_kind cast);
    on a NumPy scalar (transfuse/numpy/_scalars.py) it rebinds x instead."""
    result = call_ufunc(ufunc, target, other)
    if is_scalar(target):
        return as_scalars(result, (target, other))
    if not np.can_cast(result.dtype, target.dtype, casting="same_kind"):
        raise DTypeError(with_location(
            f"Cannot cast ufunc '{ufunc.__name__}' output from {result.dtype} to "
            f"{target.dtype} with casting rule 'same_kind' (in-place `op=` on a "
            f"{target.dtype} array)"))
    from ._indexing import assign_into
    assign_into(target, result)
    return target


NUMPY_TABLE["ufunc"] = handle_ufunc
NUMPY_TABLE["inplace"] = inplace_op


def check_float_dtype(dtype: Any) -> np.dtype:
    return check_dtype(dtype)
