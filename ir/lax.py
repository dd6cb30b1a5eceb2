"""Primitive-level operations (like jax.lax): thin wrappers around `bind`.

Transform rules are written with these. They take traced values, NumPy arrays or Python
scalars; a Python scalar takes the dtype of the array operand beside it. They do no NumPy
promotion: operands of binary ops must share a dtype (transfuse.numpy does the promotion).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .core import Aval
from .primitives import PRIMITIVES
from .tracing import Tracer, aval_of_value, bind

P = PRIMITIVES
_PY_SCALARS = (int, float, bool, complex)


def aval(x: Any) -> Aval:
    return aval_of_value(x)


def shape(x: Any) -> tuple[int, ...]:
    return aval_of_value(x).shape


def dtype(x: Any) -> np.dtype:
    return aval_of_value(x).dtype


def _scalars_like(*args: Any) -> list[Any]:
    """Give Python scalars the dtype of the first array operand."""
    ref = next((a for a in args if not isinstance(a, _PY_SCALARS)), None)
    if ref is None:
        return [np.asarray(a) for a in args]
    dt = dtype(ref)
    return [np.asarray(a, dtype=dt) if isinstance(a, _PY_SCALARS) else a for a in args]


def _unary(name: str):
    prim = P[name]

    def op(x: Any) -> Any:
        return bind(prim, x)
    op.__name__ = name
    return op


def _binary(name: str):
    prim = P[name]

    def op(x: Any, y: Any) -> Any:
        return bind(prim, *_scalars_like(x, y))
    op.__name__ = name
    return op


neg, abs, sign, square = (_unary(n) for n in ("neg", "abs", "sign", "square"))
exp, expm1, log, log1p, sqrt, rsqrt = (
    _unary(n) for n in ("exp", "expm1", "log", "log1p", "sqrt", "rsqrt"))
sin, cos, tan, arcsin, arccos, arctan = (
    _unary(n) for n in ("sin", "cos", "tan", "arcsin", "arccos", "arctan"))
sinh, cosh, tanh, arcsinh, arccosh, arctanh = (
    _unary(n) for n in ("sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh"))
logistic, erf, floor, ceil, round, reciprocal = (
    _unary(n) for n in ("logistic", "erf", "floor", "ceil", "round", "reciprocal"))
isnan, isinf, isfinite = (_unary(n) for n in ("isnan", "isinf", "isfinite"))
# scipy.special's primitives (transfuse/scipy/special.py); zeta(s, q) is Hurwitz's zeta.
erfc, erf_inv, ndtr, ndtri, log_ndtr = (
    _unary(n) for n in ("erfc", "erf_inv", "ndtr", "ndtri", "log_ndtr"))
lgamma, digamma, bessel_i0e, bessel_i1e = (
    _unary(n) for n in ("lgamma", "digamma", "bessel_i0e", "bessel_i1e"))
zeta = _binary("zeta")
logical_not = _unary("not")
add, sub, mul, div, floor_div, mod, pow = (
    _binary(n) for n in ("add", "sub", "mul", "div", "floor_div", "mod", "pow"))
max, min, arctan2 = (_binary(n) for n in ("max", "min", "arctan2"))
eq, ne, lt, le, gt, ge = (_binary(n) for n in ("eq", "ne", "lt", "le", "gt", "ge"))
bitwise_and, bitwise_or, bitwise_xor = (_binary(n) for n in ("and", "or", "xor"))


real, imag, conj = (_unary(n) for n in ("real", "imag", "conj"))


def complex(re: Any, im: Any) -> Any:
    """re + i*im (real operands of one dtype)."""
    return bind(P["complex"], *_scalars_like(re, im))


def is_complex(x: Any) -> bool:
    return dtype(x).kind == "c"


def real_part(x: Any) -> Any:
    """x's real part: x itself when it is real."""
    return real(x) if is_complex(x) else x


def integer_pow(x: Any, y: int) -> Any:
    return bind(P["integer_pow"], x, y=int(y))


def select(pred: Any, on_true: Any, on_false: Any) -> Any:
    on_true, on_false = _scalars_like(on_true, on_false)
    return bind(P["select"], pred, on_true, on_false)


def clip(x: Any, lo: Any, hi: Any) -> Any:
    return bind(P["clip"], *_scalars_like(x, lo, hi))


def convert(x: Any, new_dtype: Any) -> Any:
    """x as `new_dtype` (a no-op when it already is)."""
    new_dtype = np.dtype(new_dtype)
    if dtype(x) == new_dtype:
        return x
    return bind(P["cast"], x, dtype=new_dtype)


def copy(x: Any) -> Any:
    return bind(P["copy"], x)


def reduce_sum(x: Any, axes: Sequence[int]) -> Any:
    return bind(P["reduce_sum"], x, axes=tuple(sorted(axes)))


def reduce_prod(x: Any, axes: Sequence[int]) -> Any:
    return bind(P["reduce_prod"], x, axes=tuple(sorted(axes)))


def reduce_max(x: Any, axes: Sequence[int]) -> Any:
    return bind(P["reduce_max"], x, axes=tuple(sorted(axes)))


def reduce_min(x: Any, axes: Sequence[int]) -> Any:
    return bind(P["reduce_min"], x, axes=tuple(sorted(axes)))


def argmax(x: Any, axis: int, index_dtype=np.int64) -> Any:
    return bind(P["argmax"], x, axis=axis, index_dtype=np.dtype(index_dtype))


def argmin(x: Any, axis: int, index_dtype=np.int64) -> Any:
    return bind(P["argmin"], x, axis=axis, index_dtype=np.dtype(index_dtype))


def cumsum(x: Any, axis: int, reverse: bool = False) -> Any:
    return bind(P["cumsum"], x, axis=axis, reverse=reverse)


def cumprod(x: Any, axis: int, reverse: bool = False) -> Any:
    return bind(P["cumprod"], x, axis=axis, reverse=reverse)


def dot_general(lhs: Any, rhs: Any, dimension_numbers) -> Any:
    (lc, rc), (lb, rb) = dimension_numbers
    dn = ((tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)))
    return bind(P["dot_general"], lhs, rhs, dimension_numbers=dn)


def conv_general_dilated(lhs: Any, rhs: Any, window_strides: Sequence[int],
                         padding: Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         feature_group_count: int = 1) -> Any:
    """N-d cross-correlation: lhs (N, C, ...), rhs (O, C/groups, ...)."""
    nsp = len(shape(lhs)) - 2
    return bind(P["conv"], lhs, rhs, window_strides=tuple(window_strides),
                padding=tuple((int(lo), int(hi)) for lo, hi in padding),
                lhs_dilation=tuple(lhs_dilation or (1,) * nsp),
                rhs_dilation=tuple(rhs_dilation or (1,) * nsp),
                feature_group_count=int(feature_group_count))


def reshape(x: Any, new_sizes: Sequence[int]) -> Any:
    new_sizes = tuple(int(d) for d in new_sizes)
    if shape(x) == new_sizes:
        return x
    return bind(P["reshape"], x, new_sizes=new_sizes)


def transpose(x: Any, permutation: Sequence[int]) -> Any:
    permutation = tuple(int(p) for p in permutation)
    if permutation == tuple(range(len(permutation))):
        return x
    return bind(P["transpose"], x, permutation=permutation)


def broadcast_in_dim(x: Any, out_shape: Sequence[int], broadcast_dimensions: Sequence[int]
                     ) -> Any:
    out_shape = tuple(int(d) for d in out_shape)
    dims = tuple(int(d) for d in broadcast_dimensions)
    if shape(x) == out_shape and dims == tuple(range(len(out_shape))):
        return x
    return bind(P["broadcast_in_dim"], x, shape=out_shape, broadcast_dimensions=dims)


def broadcast_to(x: Any, out_shape: Sequence[int]) -> Any:
    """NumPy-style broadcast (right-aligned) of x to out_shape."""
    out_shape = tuple(out_shape)
    nd = len(shape(x))
    return broadcast_in_dim(x, out_shape, tuple(range(len(out_shape) - nd, len(out_shape))))


def sum_to_shape(x: Any, target: Sequence[int]) -> Any:
    """Sum x over the dimensions that broadcasting added or stretched to reach target."""
    target = tuple(target)
    xs = shape(x)
    if xs == target:
        return x
    lead = len(xs) - len(target)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(target)
                                if d == 1 and xs[lead + i] != 1]
    out = reduce_sum(x, axes) if axes else x
    return reshape(out, target)


def squeeze(x: Any, dimensions: Sequence[int]) -> Any:
    if not dimensions:
        return x
    return bind(P["squeeze"], x, dimensions=tuple(sorted(dimensions)))


def expand_dims(x: Any, dimensions: Sequence[int]) -> Any:
    if not dimensions:
        return x
    return bind(P["expand_dims"], x, dimensions=tuple(sorted(dimensions)))


def concatenate(xs: Sequence[Any], dimension: int) -> Any:
    return bind(P["concatenate"], *xs, dimension=int(dimension))


def pad(x: Any, value: Any, padding_config: Sequence[tuple[int, int, int]]) -> Any:
    value = np.asarray(value, dtype=dtype(x)) if isinstance(value, (int, float)) else value
    return bind(P["pad"], x, value,
                padding_config=tuple((int(a), int(b), int(c)) for a, b, c in padding_config))


def slice(x: Any, starts: Sequence[int], steps: Sequence[int], sizes: Sequence[int]) -> Any:
    return bind(P["slice"], x, starts=tuple(starts), steps=tuple(steps), sizes=tuple(sizes))


def slice_axis(x: Any, axis: int, start: int, size: int, step: int = 1) -> Any:
    """A slice along one axis, whole along the others."""
    xs = shape(x)
    starts = [0] * len(xs)
    steps = [1] * len(xs)
    sizes = list(xs)
    starts[axis], steps[axis], sizes[axis] = start, step, size
    return slice(x, starts, steps, sizes)


def update_slice(x: Any, update: Any, starts, steps, sizes) -> Any:
    return bind(P["update_slice"], x, update, starts=tuple(starts), steps=tuple(steps),
                sizes=tuple(sizes))


def dynamic_slice(x: Any, starts: Sequence[Any], slice_sizes: Sequence[int]) -> Any:
    return bind(P["dynamic_slice"], x, *starts, slice_sizes=tuple(slice_sizes))


def dynamic_update_slice(x: Any, update: Any, starts: Sequence[Any]) -> Any:
    return bind(P["dynamic_update_slice"], x, update, *starts)


def gather(x: Any, idx: Any, axis: int) -> Any:
    return bind(P["gather"], x, idx, axis=int(axis))


def scatter_add(x: Any, idx: Any, updates: Any, axis: int) -> Any:
    return bind(P["scatter_add"], x, idx, updates, axis=int(axis))


def scatter(x: Any, idx: Any, updates: Any, axis: int) -> Any:
    return bind(P["scatter"], x, idx, updates, axis=int(axis))


def iota(dtype_: Any, out_shape: Sequence[int], dimension: int = 0) -> Any:
    return bind(P["iota"], shape=tuple(out_shape), dimension=int(dimension),
                dtype=np.dtype(dtype_))


def full(out_shape: Sequence[int], value: Any, dtype_: Any) -> Any:
    """A fresh array; `value` may be a Python scalar (static) or a traced 0-d value."""
    dtype_ = np.dtype(dtype_)
    if isinstance(value, (int, float, bool, np.generic)):
        return bind(P["full"], shape=tuple(out_shape), dtype=dtype_,
                    value=dtype_.type(value).item())
    return broadcast_to(convert(value, dtype_), out_shape)


def zeros_like(x: Any) -> Any:
    a = aval(x)
    return full(a.shape, 0, a.dtype)


def full_like(x: Any, value: Any) -> Any:
    a = aval(x)
    return full(a.shape, value, a.dtype)


def random_uniform(key: Any, out_shape: Sequence[int], dtype_: Any, stream: int) -> Any:
    return bind(P["random_uniform"], key, shape=tuple(out_shape), dtype=np.dtype(dtype_),
                stream=int(stream))


def random_normal(key: Any, out_shape: Sequence[int], dtype_: Any, stream: int) -> Any:
    return bind(P["random_normal"], key, shape=tuple(out_shape), dtype=np.dtype(dtype_),
                stream=int(stream))


def random_fold_in(key: Any, data: int) -> Any:
    return bind(P["random_fold_in"], key, data=int(data))


def random_split(key: Any, size: int) -> Any:
    return bind(P["random_split"], key, size=int(size))


def is_traced(x: Any) -> bool:
    return isinstance(x, Tracer)


# ---------------------------------------------------------------------------------------
# Linear algebra (ir/linalg.py): stacked (..., n, n) matrices


def cholesky(a: Any) -> Any:
    return bind(P["cholesky"], a)


def triangular_solve(a: Any, b: Any, *, lower: bool = True, transpose_a: bool = False
                     ) -> Any:
    return bind(P["triangular_solve"], a, b, lower=bool(lower), transpose_a=bool(transpose_a))


def solve(a: Any, b: Any) -> Any:
    return bind(P["solve"], a, b)


def slogdet(a: Any) -> list[Any]:
    return bind(P["slogdet"], a)


def eigh(a: Any) -> list[Any]:
    return bind(P["eigh"], a)


def expm(a: Any) -> Any:
    return bind(P["expm"], a)


def matrix_transpose(x: Any) -> Any:
    """x with its last two axes swapped."""
    n = len(shape(x))
    return transpose(x, list(range(n - 2)) + [n - 1, n - 2])


def batch_matmul(x: Any, y: Any) -> Any:
    """x @ y for stacks of matrices with the same leading (batch) shape."""
    n = len(shape(x))
    batch = tuple(range(n - 2))
    return dot_general(x, y, (((n - 1,), (n - 2,)), (batch, batch)))


def adjoint(x: Any) -> Any:
    """The conjugate transpose x^H of each matrix (the transpose of a real one)."""
    xt = matrix_transpose(x)
    return conj(xt) if is_complex(x) else xt


def symmetrize(x: Any) -> Any:
    """(x + x^H) / 2 over the last two axes: the symmetric (Hermitian) part."""
    return mul(add(x, adjoint(x)), 0.5)


def lower_triangle(x: Any, diagonal: float = 1.0) -> Any:
    """The lower triangle of each matrix, its diagonal scaled by `diagonal`."""
    n = shape(x)[-1]
    mask = np.tril(np.ones((n, n)), -1) + diagonal * np.eye(n)
    return mul(x, mask.astype(dtype(x)))


def upper_triangle(x: Any) -> Any:
    """The upper triangle of each matrix (diagonal included)."""
    n = shape(x)[-1]
    return mul(x, np.triu(np.ones((n, n))).astype(dtype(x)))


def matrix_diagonal(x: Any) -> Any:
    """The diagonals of a stack of matrices: shape (..., n)."""
    n = shape(x)[-1]
    return reduce_sum(mul(x, np.eye(n, dtype=dtype(x))), (len(shape(x)) - 1,))


def diagonal_matrix(d: Any) -> Any:
    """Stack of diagonal matrices from a stack of diagonals (..., n)."""
    n = shape(d)[-1]
    k = len(shape(d))
    return mul(expand_dims(d, (k,)), np.eye(n, dtype=dtype(d)))


def svd(a: Any, *, full_matrices: bool = False, compute_uv: bool = True) -> list[Any]:
    return bind(P["svd"], a, full_matrices=bool(full_matrices), compute_uv=bool(compute_uv))


def qr(a: Any, *, complete: bool = False) -> list[Any]:
    return bind(P["qr"], a, complete=bool(complete))


def lu(a: Any) -> list[Any]:
    return bind(P["lu"], a)


def permute_rows(x: Any, permutation: Any) -> Any:
    """x[..., permutation[...], :] for a stack of matrices and a stack of permutations (or
    one shared permutation): one gather of the stacked rows, exact for any values."""
    x_shape = shape(x)
    n = x_shape[-2]
    batch = x_shape[:-2]
    stack = int(np.prod(batch, dtype=np.int64))
    permutation = broadcast_to(convert(permutation, np.int64), batch + (n,))
    offsets = (np.arange(stack, dtype=np.int64) * n).reshape(batch + (1,))
    rows = reshape(add(permutation, offsets), (stack * n,))
    picked = gather(reshape(x, (stack * n,) + x_shape[-1:]), rows, 0)
    return reshape(picked, x_shape)


def inverse_permutation(permutation: Any) -> Any:
    """q with q[p[i]] = i along the last axis (a one-hot count: exact, traceable)."""
    n = shape(permutation)[-1]
    k = len(shape(permutation))
    onehot = eq(expand_dims(permutation, (k,)), np.arange(n, dtype=dtype(permutation)))
    return reduce_sum(mul(convert(onehot, np.int64), np.arange(n, dtype=np.int64).reshape(
        n, 1)), (k - 1,))


# The discrete Fourier transform (ir/fft.py) over the trailing len(fft_lengths) axes


def fft(x: Any, fft_type: str, fft_lengths: Sequence[int]) -> Any:
    return bind(P["fft"], x, fft_type=fft_type, fft_lengths=tuple(int(n) for n in fft_lengths))


# Sorting (ir/sort.py) along the last axis, stable, keys first; the permutation on request


def sort(operands: Sequence[Any], num_keys: int = 1, permutation: bool = False) -> list[Any]:
    return bind(P["sort"], *operands, num_keys=int(num_keys), permutation=bool(permutation))


def take_along_last(x: Any, idx: Any) -> Any:
    """x[..., idx[..., j]] for idx of x's leading shape (any last length): one gather of
    the flattened x at row offsets plus idx."""
    x_shape, idx_shape = shape(x), shape(idx)
    rows = int(np.prod(x_shape[:-1], dtype=np.int64))
    offsets = (np.arange(rows, dtype=np.int64) * x_shape[-1]).reshape(x_shape[:-1] + (1,))
    flat = reshape(add(convert(idx, np.int64), offsets), (rows * idx_shape[-1],))
    return reshape(gather(reshape(x, (rows * x_shape[-1],)), flat, 0), idx_shape)


def put_along_last(updates: Any, idx: Any, n: int) -> Any:
    """Zeros of updates' leading shape + (n,) with updates added at idx along the last axis:
    take_along_last's transpose."""
    u_shape = shape(updates)
    rows = int(np.prod(u_shape[:-1], dtype=np.int64))
    offsets = (np.arange(rows, dtype=np.int64) * n).reshape(u_shape[:-1] + (1,))
    flat = reshape(add(convert(idx, np.int64), offsets), (rows * u_shape[-1],))
    zeros = full((rows * n,), 0, dtype(updates))
    out = scatter_add(zeros, flat, reshape(updates, (rows * u_shape[-1],)), 0)
    return reshape(out, u_shape[:-1] + (n,))
