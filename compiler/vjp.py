"""Reverse mode: one VJP rule per primitive, and the rewrite that splits a graph in two.

`vjp_graph(graph, wrt)` gives a *forward* graph (the primal inputs -> the primal outputs
plus the residuals: the primal values the rules need) and a *backward* graph (output
cotangents + residuals -> cotangents of the `wrt` inputs). The forward graph runs once,
the backward graph as often as the caller likes (that is `vjp_fn`).

A rule gets the output cotangent (a list for multiple-result primitives), the node's
primal input values, its primal output values and its params, and returns one cotangent
per input: `None` means zero (integer/bool inputs, non-differentiable primitives like
comparisons, floor, argmax, iota, full, random_*, as in JAX). Rules emit ordinary
primitives through `ir/lax.py`, so a backward graph differentiates again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transfuse.compiler import special_slopes
from transfuse.compiler.custom_calls import with_stored_residuals
from transfuse.compiler.jvp import complex_abs_slope
from transfuse.compiler.prune_control import prune_outputs
from transfuse.compiler.remat import expose_saved
from transfuse.compiler.simplify import dce, inline_calls
from transfuse.ir import lax
from transfuse.ir.core import Aval, Graph, Var, is_inexact
from transfuse.ir.errors import UnsupportedError
from transfuse.ir.primitives import PRIMITIVES, Primitive
from transfuse.ir.source import with_location
from transfuse.ir.tracing import bind, building, inline, inline_env, source_of, trace_to_graph

P = PRIMITIVES
VjpRule = Callable[..., Sequence[Any]]
VJP_RULES: dict[Primitive, VjpRule] = {}


def _register(*names: str) -> Callable[[VjpRule], VjpRule]:
    def decorate(rule: VjpRule) -> VjpRule:
        for name in names:
            VJP_RULES[P[name]] = rule
        return rule
    return decorate


def is_differentiable(aval: Aval) -> bool:
    """Only floating and complex values carry cotangents."""
    return is_inexact(aval.dtype)


# ---------------------------------------------------------------------------------------
# Helpers for rules


def _unbroadcast(ct: Any, x: Any) -> Any:
    """Sum a cotangent of the broadcast result back to x's shape."""
    return lax.sum_to_shape(ct, lax.shape(x))


def _as_float(mask: Any, like: Any) -> Any:
    return lax.convert(mask, lax.dtype(like))


def _zeros(shape: Sequence[int], like: Any) -> Any:
    return lax.full(tuple(shape), 0, lax.dtype(like))


def _no_cotangent(ct, ins, outs, **params):
    """Non-differentiable primitives (and those without float inputs): zero cotangents."""
    return [None] * len(ins)


_register(
    "floor", "ceil", "round", "sign", "isnan", "isinf", "isfinite", "not", "floor_div",
    "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "xor", "argmax", "argmin", "iota",
    "full", "random_uniform", "random_normal", "random_fold_in", "random_split",
)(_no_cotangent)


# ---------------------------------------------------------------------------------------
# Elementwise unary: ct_x = ct * f'(x), written with x and/or out = f(x)


def _unary(name: str, deriv: Callable[[Any, Any, Any], Any]) -> None:
    def rule(ct, ins, outs):
        return [deriv(ct, ins[0], outs[0])]
    rule.__name__ = f"_{name}_vjp"
    VJP_RULES[P[name]] = rule


def _one_minus_sq(x: Any) -> Any:
    # (1 - x)(1 + x) keeps precision near |x| = 1, where 1 - x*x cancels.
    return lax.mul(lax.sub(1.0, x), lax.add(1.0, x))


_UNARY_DERIVS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "neg": lambda ct, x, out: lax.neg(ct),
    "square": lambda ct, x, out: lax.mul(ct, lax.mul(x, 2.0)),
    "exp": lambda ct, x, out: lax.mul(ct, out),
    "expm1": lambda ct, x, out: lax.mul(ct, lax.add(out, 1.0)),
    "log": lambda ct, x, out: lax.div(ct, x),
    "log1p": lambda ct, x, out: lax.div(ct, lax.add(x, 1.0)),
    "sqrt": lambda ct, x, out: lax.div(ct, lax.mul(out, 2.0)),
    "rsqrt": lambda ct, x, out: lax.mul(ct, lax.div(lax.mul(out, -0.5), x)),
    "sin": lambda ct, x, out: lax.mul(ct, lax.cos(x)),
    "cos": lambda ct, x, out: lax.neg(lax.mul(ct, lax.sin(x))),
    "tan": lambda ct, x, out: lax.mul(ct, lax.add(lax.square(out), 1.0)),
    "arcsin": lambda ct, x, out: lax.mul(ct, lax.rsqrt(_one_minus_sq(x))),
    "arccos": lambda ct, x, out: lax.neg(lax.mul(ct, lax.rsqrt(_one_minus_sq(x)))),
    "arctan": lambda ct, x, out: lax.div(ct, lax.add(lax.square(x), 1.0)),
    "sinh": lambda ct, x, out: lax.mul(ct, lax.cosh(x)),
    "cosh": lambda ct, x, out: lax.mul(ct, lax.sinh(x)),
    "tanh": lambda ct, x, out: lax.mul(ct, lax.sub(1.0, lax.square(out))),
    "arcsinh": lambda ct, x, out: lax.mul(ct, lax.rsqrt(lax.add(lax.square(x), 1.0))),
    "arccosh": lambda ct, x, out: lax.mul(
        ct, lax.rsqrt(lax.mul(lax.sub(x, 1.0), lax.add(x, 1.0)))),
    "arctanh": lambda ct, x, out: lax.div(ct, _one_minus_sq(x)),
    "logistic": lambda ct, x, out: lax.mul(ct, lax.mul(out, lax.sub(1.0, out))),
    "erf": lambda ct, x, out: lax.mul(
        ct, lax.mul(lax.exp(lax.neg(lax.square(x))), 2.0 / np.sqrt(np.pi))),
    "reciprocal": lambda ct, x, out: lax.neg(lax.mul(ct, lax.square(out))),
    "copy": lambda ct, x, out: ct,
    # scipy.special's (compiler/special_slopes.py)
    "erfc": lambda ct, x, out: lax.mul(ct, special_slopes.erfc_slope(x, out)),
    "erf_inv": lambda ct, x, out: lax.mul(ct, special_slopes.erf_inv_slope(x, out)),
    "ndtr": lambda ct, x, out: lax.mul(ct, special_slopes.ndtr_slope(x, out)),
    "ndtri": lambda ct, x, out: lax.mul(ct, special_slopes.ndtri_slope(x, out)),
    "log_ndtr": lambda ct, x, out: lax.mul(ct, special_slopes.log_ndtr_slope(x, out)),
    "lgamma": lambda ct, x, out: lax.mul(ct, special_slopes.lgamma_slope(x, out)),
    "digamma": lambda ct, x, out: lax.mul(ct, special_slopes.digamma_slope(x, out)),
    "bessel_i0e": lambda ct, x, out: lax.mul(ct, special_slopes.bessel_i0e_slope(x, out)),
    "bessel_i1e": lambda ct, x, out: lax.mul(ct, special_slopes.bessel_i1e_slope(x, out)),
}
for _name, _deriv in _UNARY_DERIVS.items():
    _unary(_name, _deriv)


@_register("abs")
def _abs_vjp(ct, ins, outs):
    x = ins[0]
    if lax.is_complex(x):
        # The transpose of dx -> Re(conj(x) dx / |x|) (JAX's convention, docs/numpy.md).
        return [lax.mul(lax.convert(ct, lax.dtype(x)), complex_abs_slope(x, outs[0]))]
    return [lax.mul(ct, lax.sign(x))]


# Complex parts. Cotangents follow JAX's convention: a linear map's transpose is taken
# without conjugation, so grad of a real function of z returns conj(df/dz*) * 2 style
# values exactly as jax.grad does (docs/numpy.md, "Complex numbers").
@_register("real")
def _real_vjp(ct, ins, outs):
    return [lax.complex(ct, lax.zeros_like(ct))]


@_register("imag")
def _imag_vjp(ct, ins, outs):
    return [lax.complex(lax.zeros_like(ct), lax.neg(ct))]


@_register("conj")
def _conj_vjp(ct, ins, outs):
    return [lax.conj(ct)]


@_register("complex")
def _complex_vjp(ct, ins, outs):
    re, im = ins
    return [_unbroadcast(lax.real(ct), re), _unbroadcast(lax.neg(lax.imag(ct)), im)]


@_register("integer_pow")
def _integer_pow_vjp(ct, ins, outs, *, y):
    x = ins[0]
    if y == 0:
        return [None]
    if y == 1:
        return [ct]
    x_pow = x if y == 2 else lax.integer_pow(x, y - 1)
    return [lax.mul(ct, lax.mul(x_pow, float(y)))]


@_register("cast")
def _cast_vjp(ct, ins, outs, *, dtype):
    x = ins[0]
    if not (is_differentiable(lax.aval(x)) and is_inexact(dtype)):
        return [None]
    return [lax.convert(ct, lax.dtype(x))]


# ---------------------------------------------------------------------------------------
# Elementwise binary (NumPy broadcasting: cotangents are summed back to each shape)


def _binary(name: str, deriv: Callable[..., tuple[Any, Any]]) -> None:
    def rule(ct, ins, outs):
        x, y = ins
        ct_x, ct_y = deriv(ct, x, y, outs[0])
        return [None if ct_x is None else _unbroadcast(ct_x, x),
                None if ct_y is None else _unbroadcast(ct_y, y)]
    rule.__name__ = f"_{name}_vjp"
    VJP_RULES[P[name]] = rule


def _div_deriv(ct, x, y, out):
    ct_x = lax.div(ct, y)
    return ct_x, lax.neg(lax.mul(ct_x, out))  # -ct x / y^2 = -(ct / y) (x / y)


def _tie_weight(win: Any, tie: Any, like: Any) -> Any:
    """1 where x wins, 0.5 on ties (JAX splits the cotangent of max/min equally), else 0."""
    return lax.add(_as_float(win, like), lax.mul(_as_float(tie, like), 0.5))


def _extremum_deriv(wins: Callable[[Any, Any], Any]) -> Callable:
    def deriv(ct, x, y, out):
        ct_x = lax.mul(ct, _tie_weight(wins(x, y), lax.eq(x, y), ct))
        return ct_x, lax.sub(ct, ct_x)
    return deriv


def _pow_deriv(ct, x, y, out):
    # As JAX: d/dx is 0 where y == 0; d/dy uses log(x) with x == 0 replaced by 1, so
    # the exponent's cotangent is 0 where x == 0 (not nan).
    y_zero = lax.eq(y, 0.0)
    safe_y = lax.select(y_zero, 1.0, y)
    jac_x = lax.select(y_zero, 0.0, lax.mul(safe_y, lax.pow(x, lax.sub(safe_y, 1.0))))
    safe_x = lax.select(lax.eq(x, 0.0), 1.0, x)
    return lax.mul(ct, jac_x), lax.mul(ct, lax.mul(lax.log(safe_x), out))


def _arctan2_deriv(ct, x, y, out):
    scale = lax.div(ct, lax.add(lax.square(x), lax.square(y)))
    return lax.mul(scale, y), lax.neg(lax.mul(scale, x))


_BINARY_DERIVS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "add": lambda ct, x, y, out: (ct, ct),
    "sub": lambda ct, x, y, out: (ct, lax.neg(ct)),
    "mul": lambda ct, x, y, out: (lax.mul(ct, y), lax.mul(ct, x)),
    "div": _div_deriv,
    "max": _extremum_deriv(lax.gt),
    "min": _extremum_deriv(lax.lt),
    "pow": _pow_deriv,
    "arctan2": _arctan2_deriv,
    # np.mod(x, y) = x - y * floor(x / y)
    "mod": lambda ct, x, y, out: (ct, lax.neg(lax.mul(ct, lax.floor(lax.div(x, y))))),
}
for _name, _deriv in _BINARY_DERIVS.items():
    _binary(_name, _deriv)


@_register("zeta")
def _zeta_vjp(ct, ins, outs):
    # the order s has no derivative (compiler/special_slopes.py)
    s, q = ins
    return [None, _unbroadcast(lax.mul(ct, special_slopes.zeta_q_slope(s, q)), q)]


@_register("select")
def _select_vjp(ct, ins, outs):
    pred, on_true, on_false = ins
    return [None, _unbroadcast(lax.select(pred, ct, 0.0), on_true),
            _unbroadcast(lax.select(pred, 0.0, ct), on_false)]


@_register("clip")
def _clip_vjp(ct, ins, outs):
    # Like JAX's clamp (and our JVP): x gets ct where lo < x < hi, lo where x < lo < hi,
    # hi where it is the result (hi < x or hi < lo); at ties nobody does.
    x, lo, hi = ins

    def where(mask):
        return lax.select(mask, ct, 0.0)
    return [_unbroadcast(where(lax.bitwise_and(lax.gt(x, lo), lax.lt(x, hi))), x),
            _unbroadcast(where(lax.bitwise_and(lax.gt(lo, x), lax.lt(lo, hi))), lo),
            _unbroadcast(where(lax.bitwise_or(lax.lt(hi, x), lax.lt(hi, lo))), hi)]


# ---------------------------------------------------------------------------------------
# Reductions and scans


def _kept_dims(ndim: int, axes: Sequence[int]) -> tuple[int, ...]:
    return tuple(d for d in range(ndim) if d not in axes)


def _expand_reduced(v: Any, x_shape: Sequence[int], axes: Sequence[int]) -> Any:
    """A reduced value broadcast back over the reduced axes of x_shape."""
    return lax.broadcast_in_dim(v, x_shape, _kept_dims(len(x_shape), axes))


@_register("reduce_sum")
def _reduce_sum_vjp(ct, ins, outs, *, axes):
    return [_expand_reduced(ct, lax.shape(ins[0]), axes)]


@_register("reduce_max", "reduce_min")
def _reduce_extremum_vjp(ct, ins, outs, *, axes):
    # As JAX: the cotangent is shared equally among the locations that attain the extremum.
    x, out = ins[0], outs[0]
    shape = lax.shape(x)
    hits = _as_float(lax.eq(x, _expand_reduced(out, shape, axes)), x)
    counts = lax.reduce_sum(hits, axes)
    return [lax.mul(_expand_reduced(lax.div(ct, counts), shape, axes), hits)]


def _shift(x: Any, axis: int, by: int, fill: float) -> Any:
    """x moved by `by` places along axis (towards the end when positive), `fill` entering."""
    config = [(0, 0, 0)] * len(lax.shape(x))
    config[axis] = (by, -by, 0)
    return lax.pad(x, fill, config)


def _product_of_others(x: Any, axis: int) -> Any:
    """For each position along axis, the product of all the other entries (zeros exact)."""
    before = _shift(lax.cumprod(x, axis), axis, 1, 1.0)
    after = _shift(lax.cumprod(x, axis, reverse=True), axis, -1, 1.0)
    return lax.mul(before, after)


@_register("reduce_prod")
def _reduce_prod_vjp(ct, ins, outs, *, axes):
    # Exclusive products (no division by x), so zeros in x give exact cotangents.
    x = ins[0]
    if not axes:
        return [ct]
    shape = lax.shape(x)
    kept = _kept_dims(len(shape), axes)
    perm = kept + tuple(axes)
    kept_shape = tuple(shape[d] for d in kept)
    flat = lax.reshape(lax.transpose(x, perm),
                       kept_shape + (int(np.prod([shape[a] for a in axes])),))
    others = _product_of_others(flat, len(kept))
    ct_flat = lax.mul(lax.broadcast_in_dim(ct, lax.shape(flat), tuple(range(len(kept)))),
                      others)
    ct_perm = lax.reshape(ct_flat, tuple(shape[p] for p in perm))
    return [lax.transpose(ct_perm, tuple(np.argsort(perm)))]


@_register("cumsum")
def _cumsum_vjp(ct, ins, outs, *, axis, reverse):
    return [lax.cumsum(ct, axis, reverse=not reverse)]


def _linear_recurrence(a: Any, b: Any, axis: int, step: int) -> Any:
    """s[j] = b[j] + a[j] * s[j + step] along axis (s = 0 past the edge), step = +-1.

    A log-depth scan (Hillis-Steele) of multiplies, adds and shifts: a polynomial in a and
    b, so its derivatives of every order are exact, zeros included.
    """
    n = lax.shape(a)[axis]
    span = 1
    while span < n:
        b = lax.add(b, lax.mul(a, _shift(b, axis, -step * span, 0.0)))
        a = lax.mul(a, _shift(a, axis, -step * span, 0.0))
        span *= 2
    return b


@_register("cumprod")
def _cumprod_vjp(ct, ins, outs, *, axis, reverse):
    # Forward direction: ct_x[j] = sum_{i >= j} ct[i] prod_{k <= i, k != j} x[k]
    #   = out[j-1] * s[j],  with s[j] = ct[j] + x[j+1] s[j+1].
    # No division by x, so zeros in x are exact (to every order); reverse mirrors it.
    x, out = ins[0], outs[0]
    step = -1 if reverse else 1
    before = _shift(out, axis, step, 1.0)
    s = _linear_recurrence(_shift(x, axis, -step, 0.0), ct, axis, step)
    return [lax.mul(before, s)]


# ---------------------------------------------------------------------------------------
# Contractions


def _remaining(ndim: int, *removed: Sequence[int]) -> list[int]:
    gone = set(itertools.chain(*removed))
    return [i for i in range(ndim) if i not in gone]


def _ranges_like(*lists: Sequence[int]) -> list[tuple[int, ...]]:
    out, start = [], 0
    for lst in lists:
        out.append(tuple(range(start, start + len(lst))))
        start += len(lst)
    return out


def _dot_transpose_lhs(ct, x_ndim: int, y, dimension_numbers, swap_ans: bool = False):
    """The cotangent of dot_general's lhs (JAX's derivation, any dimension numbers)."""
    (x_contract, y_contract), (x_batch, y_batch) = dimension_numbers
    y_ndim = len(lax.shape(y))
    x_kept = _remaining(x_ndim, x_contract, x_batch)
    y_kept = _remaining(y_ndim, y_contract, y_batch)
    if swap_ans:
        ans_batch, ans_y, _ = _ranges_like(x_batch, y_kept, x_kept)
    else:
        ans_batch, _, ans_y = _ranges_like(x_batch, x_kept, y_kept)
    dims = ((ans_y, tuple(y_kept)), (ans_batch, tuple(y_batch)))
    # The product's dims are: batch, x's kept dims, then x's contracting dims in the order
    # of their partners in y; transpose them back into x's order.
    x_contract_by_y = [x_contract[i] for i in np.argsort(y_contract)]
    order = list(x_batch) + x_kept + x_contract_by_y
    return lax.transpose(lax.dot_general(ct, y, dims), tuple(np.argsort(order)))


@_register("dot_general")
def _dot_general_vjp(ct, ins, outs, *, dimension_numbers):
    x, y = ins
    (x_contract, y_contract), (x_batch, y_batch) = dimension_numbers
    swapped = ((y_contract, x_contract), (y_batch, x_batch))
    ct_x = _dot_transpose_lhs(ct, len(lax.shape(x)), y, dimension_numbers)
    ct_y = _dot_transpose_lhs(ct, len(lax.shape(y)), x, swapped, swap_ans=True)
    return [ct_x, ct_y]


def _dilate_shape(shape: Sequence[int], dilation: Sequence[int]) -> list[int]:
    return [0 if n == 0 else 1 + d * (n - 1) for n, d in zip(shape, dilation)]


def _flip_spatial(w: Any) -> Any:
    shape = lax.shape(w)
    starts = [0, 0] + [n - 1 for n in shape[2:]]
    steps = [1, 1] + [-1] * (len(shape) - 2)
    return lax.slice(w, starts, steps, shape)


def _conv_lhs_ct(ct, lhs_shape, rhs, *, window_strides, padding, lhs_dilation,
                 rhs_dilation, feature_group_count):
    """Input cotangent: a conv of ct with the flipped, in/out-swapped kernel.

    Strides become lhs dilation (and lhs dilation strides); the padding makes every
    input position see exactly the outputs it fed (JAX's _conv_general_vjp_lhs_padding).
    """
    g = feature_group_count
    rhs_shape = lax.shape(rhs)
    out_ch, in_ch, ksize = rhs_shape[0], rhs_shape[1], tuple(rhs_shape[2:])
    lhs_dil = _dilate_shape(lhs_shape[2:], lhs_dilation)
    rhs_dil = _dilate_shape(ksize, rhs_dilation)
    out_dil = _dilate_shape(lax.shape(ct)[2:], window_strides)
    before = [r - lo - 1 for r, (lo, _) in zip(rhs_dil, padding)]
    after = [n + r - 1 - o - b for n, r, o, b in zip(lhs_dil, rhs_dil, out_dil, before)]
    # kernel (O, I, k) -> (G*I, O/G, k): group g's block (O/G, I) transposed, groups kept
    w = lax.reshape(rhs, (g, out_ch // g, in_ch) + ksize)
    w = lax.transpose(w, (0, 2, 1) + tuple(range(3, 3 + len(ksize))))
    w = _flip_spatial(lax.reshape(w, (g * in_ch, out_ch // g) + ksize))
    return lax.conv_general_dilated(ct, w, lhs_dilation, list(zip(before, after)),
                                    lhs_dilation=window_strides, rhs_dilation=rhs_dilation,
                                    feature_group_count=g)


def _conv_rhs_ct(ct, lhs, rhs_shape, *, window_strides, padding, lhs_dilation,
                 rhs_dilation, feature_group_count):
    """Kernel cotangent: a conv of the input with ct as the kernel (batch as features).

    Feature groups use the batch trick: input channels of group g and batch entries are
    merged into the features of one grouped conv, so a single conv serves all groups.
    """
    g = feature_group_count
    lhs_shape = lax.shape(lhs)
    n, c, sp = lhs_shape[0], lhs_shape[1], tuple(lhs_shape[2:])
    in_ch = c // g
    nsp = len(sp)
    lhs_dil = _dilate_shape(sp, lhs_dilation)
    rhs_dil = _dilate_shape(rhs_shape[2:], rhs_dilation)
    out_dil = _dilate_shape(lax.shape(ct)[2:], window_strides)
    lo = [p[0] for p in padding]
    hi = [(o - m) + (r - low - 1) for o, m, r, low in zip(out_dil, lhs_dil, rhs_dil, lo)]
    # x'[i, g*N + n] = lhs[n, g*I + i];  k'[o, n] = ct[n, o]
    x = lax.reshape(lhs, (n, g, in_ch) + sp)
    x = lax.transpose(x, (2, 1, 0) + tuple(range(3, 3 + nsp)))
    x = lax.reshape(x, (in_ch, g * n) + sp)
    k = lax.transpose(ct, (1, 0) + tuple(range(2, 2 + nsp)))
    out = lax.conv_general_dilated(x, k, rhs_dilation, list(zip(lo, hi)),
                                   lhs_dilation=lhs_dilation, rhs_dilation=window_strides,
                                   feature_group_count=g)
    return lax.transpose(out, (1, 0) + tuple(range(2, 2 + nsp)))


# ---------------------------------------------------------------------------------------
# Linear algebra (ir/linalg.py): the transposes of the JVP rules in compiler/jvp.py


def transposed_jvp(prim: Primitive) -> VjpRule:
    """The VJP rule of a primitive from its JVP rule, which is linear in the tangents: the
    transpose of that linear map, by reverse mode over it (as JAX transposes JVPs)."""
    def rule(ct, ins, outs, **params):
        from transfuse.compiler.jvp import JVP_RULES

        wrt = [is_differentiable(lax.aval(x)) for x in ins]
        avals = [lax.aval(x) for x, w in zip(ins, wrt) if w]

        def tangent_map(*tangents: Any) -> list[Any]:
            supplied = iter(tangents)
            _, out_t = JVP_RULES[prim](list(ins), [next(supplied) if w else None
                                                   for w in wrt], **params)
            out_t = list(out_t) if prim.multiple_results else [out_t]
            return [lax.full(o.shape, 0, o.dtype) if t is None else t
                    for t, o in zip(out_t, map(lax.aval, outs))]

        graph, implicit = trace_to_graph(tangent_map, avals, f"{prim.name}_tangents")
        zeros = [lax.full(a.shape, 0, a.dtype) for a in avals]
        env = inline_env(graph, zeros + list(implicit))
        tangent_vars = graph.inputs[:len(avals)]
        cts = backward_pass(graph, env.__getitem__, list(ct) if prim.multiple_results
                            else [ct], active_vars(graph, set(tangent_vars)))
        found = iter(cts.get(v) for v in tangent_vars)
        return [next(found) if w else None for w in wrt]
    return rule


VJP_RULES[P["svd"]] = transposed_jvp(P["svd"])
VJP_RULES[P["qr"]] = transposed_jvp(P["qr"])
VJP_RULES[P["lu"]] = transposed_jvp(P["lu"])


@_register("solve")
def _solve_vjp(ct, ins, outs):
    a, _ = ins
    # A X = B: ct_B = A^-T ct, ct_A = -ct_B X^T
    ct_b = lax.solve(lax.matrix_transpose(a), ct)
    return [lax.neg(lax.batch_matmul(ct_b, lax.matrix_transpose(outs[0]))), ct_b]


@_register("triangular_solve")
def _triangular_solve_vjp(ct, ins, outs, *, lower, transpose_a):
    a, _ = ins
    x = outs[0]
    ct_b = lax.triangular_solve(a, ct, lower=lower, transpose_a=not transpose_a)
    if transpose_a:  # T^T X = B: ct_T = -X ct_B^T
        ct_t = lax.batch_matmul(x, lax.matrix_transpose(ct_b))
    else:
        ct_t = lax.batch_matmul(ct_b, lax.matrix_transpose(x))
    ct_t = lax.neg(lax.lower_triangle(ct_t) if lower else lax.upper_triangle(ct_t))
    return [ct_t, ct_b]


@_register("cholesky")
def _cholesky_vjp(ct, ins, outs):
    low = outs[0]
    # S = L^-T phi(L^T ct) L^-1 (phi: lower triangle, half diagonal); ct_A = sym(S).
    # jit recognises this form with a diagonal ct (compiler/linalg_rewrites.py).
    phi = lax.lower_triangle(lax.batch_matmul(lax.matrix_transpose(low), ct), 0.5)
    left = lax.triangular_solve(low, phi, lower=True, transpose_a=True)
    s = lax.triangular_solve(low, lax.matrix_transpose(left), lower=True, transpose_a=True)
    return [lax.symmetrize(lax.matrix_transpose(s))]


@_register("slogdet")
def _slogdet_vjp(ct, ins, outs):
    (a,), (_, ct_logabsdet) = ins, ct
    if ct_logabsdet is None:
        return [None]
    # d log|det A| / dA = A^-T
    n = lax.shape(a)[-1]
    inv_t = lax.solve(lax.matrix_transpose(a),
                      lax.broadcast_to(np.eye(n, dtype=lax.dtype(a)), lax.shape(a)))
    k = len(lax.shape(ct_logabsdet))
    return [lax.mul(lax.expand_dims(ct_logabsdet, (k, k + 1)), inv_t)]


@_register("eigh")
def _eigh_vjp(ct, ins, outs):
    from transfuse.compiler.jvp import eigen_gaps

    w, v = outs
    ct_w, ct_v = ct
    vt = lax.matrix_transpose(v)
    # ct_A = sym(V (diag(ct_w) + F * (V^T ct_V)) V^T)
    inner = None if ct_w is None else lax.diagonal_matrix(ct_w)
    if ct_v is not None:
        term = lax.mul(eigen_gaps(w), lax.batch_matmul(vt, ct_v))
        inner = term if inner is None else lax.add(inner, term)
    return [lax.symmetrize(lax.batch_matmul(v, lax.batch_matmul(inner, vt)))]


@_register("expm")
def _expm_vjp(ct, ins, outs):
    from transfuse.compiler.jvp import frechet_expm

    # E -> L(A, E) transposed (non-conjugating, also for complex A): G -> L(A^T, G)
    return [frechet_expm(lax.matrix_transpose(ins[0]), ct)]


# ---------------------------------------------------------------------------------------
# The Fourier transform (ir/fft.py): linear, so each cotangent is another transform. For
# the bilinear pairing Re(sum(u * v)) (JAX's convention, no conjugation) "fft" and "ifft"
# are symmetric matrices: their own transposes. The real transforms' halved spectra are
# weighted exactly: an interior bin stands for itself and its mirror image.


def _half_spectrum_weights(fft_lengths: tuple[int, ...], interior: float, dtype) -> np.ndarray:
    """Weights along the halved last axis: 1 at the zero bin (and the Nyquist bin of an
    even length), `interior` elsewhere."""
    n = fft_lengths[-1]
    w = np.full(n // 2 + 1, interior)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w.astype(dtype)


@_register("fft")
def _fft_vjp(ct, ins, outs, *, fft_type, fft_lengths):
    if fft_type in ("fft", "ifft"):
        return [lax.fft(ct, fft_type, fft_lengths)]
    total = float(np.prod(fft_lengths))
    if fft_type == "rfft":
        # y = R x (x real): x_ct = Re(R^T ct) = N irfftn(conj(ct) w), w = 1/2 inside
        weights = _half_spectrum_weights(fft_lengths, 0.5, lax.dtype(ct)) * total
        return [lax.fft(lax.mul(lax.conj(ct), weights), "irfft", fft_lengths)]
    # irfft: x_ct = conj(rfftn(ct)) w / N, w = 2 inside (the imaginary parts of the zero
    # and Nyquist bins, which irfft ignores, get none: rfft makes those bins real)
    spectrum = lax.conj(lax.fft(ct, "rfft", fft_lengths))
    weights = _half_spectrum_weights(fft_lengths, 2.0, lax.dtype(spectrum)) / total
    return [lax.mul(spectrum, weights)]


@_register("sort")
def _sort_vjp(ct, ins, outs, *, num_keys, permutation):
    # Cotangents scattered back through the permutation: read from the node's own output
    # when it made one (np.sort of floats does, so a gradient sorts once), else sorted anew.
    perm = outs[-1] if permutation else lax.sort(ins[:num_keys], num_keys, True)[-1]
    n = lax.shape(perm)[-1]
    return [None if c is None or not is_differentiable(lax.aval(x))
            else lax.put_along_last(c, perm, n) for c, x in zip(ct, ins)]


def _complex_by_transposed_jvp(prim: Primitive, real_rule: VjpRule) -> VjpRule:
    """real_rule for real inputs; for complex ones the transpose of the JVP, which holds
    the conjugations (Hermitian parts, real eigenvalues) a complex formula needs."""
    complex_rule = transposed_jvp(prim)

    def rule(ct, ins, outs, **params):
        chosen = complex_rule if lax.is_complex(ins[0]) else real_rule
        return chosen(ct, ins, outs, **params)
    rule.__name__ = real_rule.__name__
    return rule


for _name in ("cholesky", "slogdet", "eigh"):
    VJP_RULES[P[_name]] = _complex_by_transposed_jvp(P[_name], VJP_RULES[P[_name]])


@_register("conv")
def _conv_vjp(ct, ins, outs, **params):
    lhs, rhs = ins
    if lax.aval(ct).size == 0:
        return [_zeros(lax.shape(lhs), lhs), _zeros(lax.shape(rhs), rhs)]
    return [_conv_lhs_ct(ct, lax.shape(lhs), rhs, **params),
            _conv_rhs_ct(ct, lhs, lax.shape(rhs), **params)]


# ---------------------------------------------------------------------------------------
# Shape manipulation


@_register("reshape", "squeeze", "expand_dims")
def _reshape_vjp(ct, ins, outs, **params):
    return [lax.reshape(ct, lax.shape(ins[0]))]


@_register("transpose")
def _transpose_vjp(ct, ins, outs, *, permutation):
    return [lax.transpose(ct, tuple(np.argsort(permutation)))]


@_register("broadcast_in_dim")
def _broadcast_in_dim_vjp(ct, ins, outs, *, shape, broadcast_dimensions):
    x_shape = lax.shape(ins[0])
    stretched = [od for d, od in zip(x_shape, broadcast_dimensions)
                 if d == 1 and shape[od] != 1]
    added = [d for d in range(len(shape)) if d not in broadcast_dimensions]
    summed = lax.reduce_sum(ct, added + stretched) if added or stretched else ct
    return [lax.reshape(summed, x_shape)]


@_register("concatenate")
def _concatenate_vjp(ct, ins, outs, *, dimension):
    cts, offset = [], 0
    for x in ins:
        size = lax.shape(x)[dimension]
        cts.append(lax.slice_axis(ct, dimension, offset, size))
        offset += size
    return cts


@_register("pad")
def _pad_vjp(ct, ins, outs, *, padding_config):
    x, _value = ins
    # Undo lo/hi (negative padding crops, so un-padding it adds zeros back), then take
    # every (interior+1)-th element.
    unpadded = lax.pad(ct, 0.0, [(-lo, -hi, 0) for lo, hi, _ in padding_config])
    x_shape = lax.shape(x)
    ct_x = lax.slice(unpadded, [0] * len(x_shape),
                     [interior + 1 for _, _, interior in padding_config], x_shape)
    every = tuple(range(len(x_shape)))
    ct_value = lax.sub(lax.reduce_sum(ct, every), lax.reduce_sum(ct_x, every))
    return [ct_x, ct_value]


@_register("slice")
def _slice_vjp(ct, ins, outs, *, starts, steps, sizes):
    x = ins[0]
    return [lax.update_slice(_zeros(lax.shape(x), x), ct, starts, steps, sizes)]


@_register("update_slice")
def _update_slice_vjp(ct, ins, outs, *, starts, steps, sizes):
    x, update = ins
    ct_x = lax.update_slice(ct, _zeros((), ct), starts, steps, sizes)
    ct_update = _unbroadcast(lax.slice(ct, starts, steps, sizes), update)
    return [ct_x, ct_update]


@_register("dynamic_slice")
def _dynamic_slice_vjp(ct, ins, outs, *, slice_sizes):
    x, *starts = ins
    return [lax.dynamic_update_slice(_zeros(lax.shape(x), x), ct, starts)] + [None] * len(
        starts)


@_register("dynamic_update_slice")
def _dynamic_update_slice_vjp(ct, ins, outs):
    x, update, *starts = ins
    update_shape = lax.shape(update)
    ct_x = lax.dynamic_update_slice(ct, _zeros(update_shape, ct), starts)
    ct_update = lax.dynamic_slice(ct, starts, update_shape)
    return [ct_x, ct_update] + [None] * len(starts)


# ---------------------------------------------------------------------------------------
# Gather and scatter


@_register("gather")
def _gather_vjp(ct, ins, outs, *, axis):
    x, idx = ins
    return [lax.scatter_add(_zeros(lax.shape(x), x), idx, ct, axis), None]


@_register("scatter_add")
def _scatter_add_vjp(ct, ins, outs, *, axis):
    _x, idx, _updates = ins
    return [ct, None, lax.gather(ct, idx, axis)]


@_register("scatter")
def _scatter_vjp(ct, ins, outs, *, axis):
    # Last write wins: only the winning update of each target position gets its
    # cotangent; overwritten positions of x get none.
    x, idx, updates = ins
    idx_shape = lax.shape(idx)
    n_idx = int(np.prod(idx_shape, dtype=np.int64))
    ids = lax.reshape(lax.iota(np.int64, (n_idx,)), idx_shape)
    winner = lax.scatter(lax.full((lax.shape(x)[axis],), -1, np.int64), idx, ids, 0)
    wins = lax.eq(lax.gather(winner, idx, 0), ids)
    wins = lax.broadcast_in_dim(wins, lax.shape(updates),
                                tuple(range(axis, axis + len(idx_shape))))
    ct_x = lax.scatter(ct, idx, _zeros(lax.shape(updates), ct), axis)
    ct_updates = lax.select(wins, lax.gather(ct, idx, axis), 0.0)
    return [ct_x, None, ct_updates]


# ---------------------------------------------------------------------------------------
# Calls: the sub-graph's backward pass (recursive)


@_register("call")
def _call_vjp(cts, ins, outs, *, graph):
    # Recomputes the sub-graph's intermediates (vjp_graph inlines calls instead, so the
    # forward pass runs once; this rule serves callers that keep call nodes).
    env = evaluate(graph, ins)
    active = active_vars(graph, set(graph.inputs))
    in_cts = backward_pass(graph, env.__getitem__, list(cts), active)
    return [in_cts.get(v) for v in graph.inputs]


@_register("remat")
def _remat_vjp(cts, ins, outs, *, graph, policy, prevent_cse, num_saved):
    # The body's intermediates are recomputed here, in the backward graph, from the node's
    # inputs (behind barriers that need a cotangent, so neither CSE nor fusion can move
    # them into the forward pass) and from the values its policy saved: the trailing
    # `num_saved` outputs, residuals like any.
    if prevent_cse:
        ct = next(c for c in cts if c is not None)
        after = lax.reduce_sum(ct, range(len(lax.shape(ct))))
        ins = [bind(P["optimization_barrier"], x, after) for x in ins]
    body = expose_saved(graph)  # nested checkpoints keep their own policies
    n_out = len(outs) - num_saved
    env = evaluate(body, ins, known=dict(zip(body.outputs[n_out:], outs[n_out:])))
    active = active_vars(body, set(body.inputs))
    in_cts = backward_pass(body, env.__getitem__, list(cts), active)
    return [in_cts.get(v) for v in body.inputs]


@_register("optimization_barrier")
def _optimization_barrier_vjp(ct, ins, outs):
    return [ct, None]


# ---------------------------------------------------------------------------------------
# Structured control flow (compiler/vjp_control.py: its rules call backward_pass below)

from transfuse.compiler import vjp_control  # noqa: E402

VJP_RULES[P["cond"]] = vjp_control.cond_vjp
VJP_RULES[P["scan"]] = vjp_control.scan_vjp
VJP_RULES[P["while_loop"]] = vjp_control.while_vjp
TAKE_ACTIVE = frozenset({P["cond"], P["scan"]})  # rules given `active=`: see backward_pass


# ---------------------------------------------------------------------------------------
# stop_gradient and the user's rules (ir/custom.py)

_register("stop_gradient")(_no_cotangent)


def _plain_cotangents(fun: Graph, ins: list, cts: list, diff: tuple) -> list:
    """Cotangents of the operands no rule covers (captures, nondiff_argnums arrays),
    through `fun` differentiated as ordinary code (None for the flagged operands)."""
    plain = {v for v, d in zip(fun.inputs, diff) if not d and is_differentiable(v.aval)}
    if not plain:
        return [None] * len(ins)
    env = evaluate(fun, ins)
    in_cts = backward_pass(fun, env.__getitem__, list(cts), active_vars(fun, plain))
    return [None if d else in_cts.get(v) for v, d in zip(fun.inputs, diff)]


def _transposed_jvp(cts: list, ins: list, fun: Graph, jvp: Graph, diff: tuple) -> list:
    """Cotangents of the flagged operands: the user's JVP rule (linear in its tangents)
    transposed at the primal point, i.e. the VJP of the jvp graph in its tangent inputs."""
    n_in, n_out = len(ins), len(fun.outputs)
    tangent_avals = jvp.in_avals[n_in:]
    wrt = [False] * n_in + [is_differentiable(a) for a in tangent_avals]
    ct_outputs = [False] * n_out + [ct is not None and is_differentiable(a)
                                    for ct, a in zip(cts, fun.out_avals)]
    split = vjp_graph(jvp, wrt, ct_outputs)
    zeros = [lax.full(a.shape, 0, a.dtype) for a in tangent_avals]
    residuals = inline(split.forward, list(ins) + zeros)[split.num_outputs:]
    given = [ct for ct, c in zip(cts, ct_outputs[n_out:]) if c]
    found = iter(inline(split.backward, given + residuals))
    per_tangent = iter([next(found) if w else None for w in wrt[n_in:]])
    return [next(per_tangent) if d else None for d in diff]


@_register("custom_jvp_call")
def _custom_jvp_call_vjp(cts, ins, outs, *, fun, jvp, diff, name):
    rule = _transposed_jvp(cts, ins, fun, jvp, diff)
    plain = _plain_cotangents(fun, ins, cts, diff)
    return [r if d else p for r, p, d in zip(rule, plain, diff)]


@_register("custom_vjp_call")
def _custom_vjp_call_vjp(cts, ins, outs, *, fun, fwd, bwd, jvp, diff, num_res, vmap, name,
                         saved):
    n_out = len(fun.outputs)
    # Stored residuals (compiler/custom_calls.py with_stored_residuals) are outputs of fwd
    # like any other: their cotangents (a grad of grad reads them) go through fwd as code.
    plain = _plain_cotangents(fun, ins, cts[:n_out], diff)
    if saved and any(ct is not None for ct in cts[n_out:]):
        through_fwd = _plain_cotangents(fwd, ins, [None] * n_out + list(cts[n_out:]),
                                        (False,) * len(diff))
        plain = [_sum_cts(p, t) for p, t in zip(plain, through_fwd)]
    if not any(diff):
        return plain
    if bwd is None:
        raise UnsupportedError(with_location(
            f"can't apply reverse-mode autodiff (grad, vjp, jacrev) to {name}: it has no "
            "backward rule"))
    # Without stored residuals (a node the backward pass reaches without vjp_graph: inside
    # a cond branch or a checkpoint), fwd runs again here, in the backward pass.
    residuals = list(outs[n_out:]) if saved else inline(fwd, list(ins))[n_out:]
    given = [lax.full(lax.shape(o), 0, lax.dtype(o)) if ct is None else ct
             for ct, o in zip(cts[:n_out], outs[:n_out])]
    rule = iter(inline(bwd, list(ins) + residuals + given))
    return [_sum_cts(next(rule), p) if d else p for d, p in zip(diff, plain)]


def _sum_cts(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else lax.add(a, b)


@_register("aot_compiled")
def _aot_compiled_vjp(cts, ins, outs, *, graph, fn):
    # transfuse.compile's compiled graph: a call of its graph to every transform.
    return _call_vjp(cts, ins, outs, graph=graph)


# ---------------------------------------------------------------------------------------
# The backward pass


def evaluate(graph: Graph, args: Sequence[Any], known: dict[Var, Any] | None = None
             ) -> dict[Var, Any]:
    """Every value of the graph (through `bind`: traced when a trace is active); the nodes
    whose results are all `known` are not run again."""
    env: dict[Var, Any] = dict(zip(graph.inputs, args))
    env.update(graph.consts)
    env.update(known or {})
    for node in graph.nodes:
        if known and all(v in env for v in node.outputs):
            continue
        with source_of(node.source):
            outs = bind(node.prim, *[env[v] for v in node.inputs], **node.params)
        env.update(zip(node.outputs, outs if node.prim.multiple_results else [outs]))
    return env


def active_vars(graph: Graph, wrt: set[Var]) -> set[Var]:
    """The float values that depend on a `wrt` input: the ones that need cotangents."""
    active = {v for v in wrt if is_differentiable(v.aval)}
    for node in graph.nodes:
        if any(v in active for v in node.inputs):
            active.update(v for v in node.outputs if is_differentiable(v.aval))
    return active


def _fit(ct: Any, var: Var, node_name: str) -> Any:
    """A rule's cotangent, checked against the input's shape and cast to its dtype."""
    shape = lax.shape(ct)
    if shape != var.aval.shape:
        raise AssertionError(f"vjp rule of {node_name} gave a cotangent of shape {shape} "
                             f"for an input of shape {var.aval.shape}")
    return lax.convert(ct, var.aval.dtype)


def _accumulate(cts: dict[Var, Any], var: Var, ct: Any) -> None:
    cts[var] = lax.add(cts[var], ct) if var in cts else ct


def backward_pass(graph: Graph, read: Callable[[Var], Any], out_cts: Sequence[Any],
                  active: set[Var]) -> dict[Var, Any]:
    """Cotangents of the active values, given the outputs' (None = zero).

    `read(var)` gives a primal value; rules run in reverse node order, each under its
    node's source so the backward nodes point at the user's line.
    """
    cts: dict[Var, Any] = {}
    for var, ct in zip(graph.outputs, out_cts):
        if ct is not None and var in active:
            _accumulate(cts, var, ct)
    for node in reversed(graph.nodes):
        node_cts = [cts.pop(v, None) for v in node.outputs]
        if all(ct is None for ct in node_cts):
            continue
        rule = VJP_RULES.get(node.prim)
        if rule is None:
            raise NotImplementedError(f"no vjp rule for primitive {node.prim.name}")
        ins = [read(v) for v in node.inputs]
        outs = [read(v) for v in node.outputs]
        if node.prim.multiple_results:
            ct_arg = node_cts
        else:
            ct_arg = node_cts[0]
        with source_of(node.source):
            # A loop's or branch's rule differentiates its body only for the inputs
            # that need a cotangent (not, e.g., a constant data matrix it reads).
            wants = {"active": [v in active for v in node.inputs]} \
                if node.prim in TAKE_ACTIVE else {}
            in_cts = rule(ct_arg, ins, outs, **node.params, **wants)
            for var, ct in zip(node.inputs, in_cts):
                if ct is not None and var in active:
                    _accumulate(cts, var, _fit(ct, var, node.prim.name))
    return cts


# ---------------------------------------------------------------------------------------
# The rewrite


@dataclass
class VJPGraphs:
    """The two halves of reverse mode for one graph.

    forward: the graph's inputs -> its `num_outputs` outputs (the program's own, then the
    final values of the inputs it writes into, `mutated_inputs`, as `prepare` lays them
    out), then `num_residuals` residuals.
    backward: cotangents of the outputs flagged in `ct_outputs`, then the residuals ->
    one cotangent per `wrt` input (zeros where an input does not matter). Derivatives are
    of the program's outputs with respect to the inputs' values at entry.
    """

    forward: Graph
    backward: Graph
    num_outputs: int
    num_residuals: int
    wrt: list[bool]
    ct_outputs: list[bool]
    mutated_inputs: tuple[int, ...] = ()

    @property
    def num_user_outputs(self) -> int:
        return self.num_outputs - len(self.mutated_inputs)


def _with(graph: Graph, **changes: Any) -> Graph:
    """A copy of graph with some fields replaced."""
    fields = dict(inputs=graph.inputs, nodes=graph.nodes, outputs=graph.outputs,
                  consts=graph.consts, num_captures=graph.num_captures,
                  has_rng=graph.has_rng, name=graph.name, in_tree=graph.in_tree,
                  out_tree=graph.out_tree, mutated_inputs=graph.mutated_inputs)
    fields.update(changes)
    return Graph(**fields)


class _Residuals:
    """Primal values read by the rules: inputs of the backward graph, made on first use."""

    def __init__(self, builder, consts: dict[Var, np.ndarray]):
        self.builder = builder
        self.consts = consts
        self.tracers: dict[Var, Any] = {}
        self.primal_vars: list[Var] = []

    def read(self, var: Var) -> Any:
        if var in self.consts:
            return self.consts[var]
        tracer = self.tracers.get(var)
        if tracer is None:
            tracer = self.builder.new_input(var.aval)
            self.tracers[var] = tracer
            self.primal_vars.append(var)
        return tracer


def _used_vars(graph: Graph) -> set[Var]:
    used = set(graph.outputs)
    for node in graph.nodes:
        used.update(node.inputs)
    return used


def vjp_graph(graph: Graph, wrt: Sequence[bool],
              ct_outputs: Sequence[bool] | None = None) -> VJPGraphs:
    """Split a pure graph into forward (outputs + residuals) and backward graphs.

    wrt: one flag per explicit input (implicit inputs, captures and the random key, are
    constants to this transform: no cotangents, no perturbation confusion).
    ct_outputs: which outputs take a cotangent (default: the program's floating outputs;
    the final values of mutated inputs never do).
    """
    wrt = [bool(w) for w in wrt]
    if len(wrt) != graph.num_explicit_inputs:
        raise ValueError(f"vjp_graph: wrt has {len(wrt)} flags for "
                         f"{graph.num_explicit_inputs} explicit inputs")
    n_user = len(graph.outputs) - len(graph.mutated_inputs)
    if ct_outputs is None:
        ct_outputs = [is_differentiable(a) for a in graph.out_avals[:n_user]]
        ct_outputs += [False] * len(graph.mutated_inputs)
    ct_outputs = [bool(c) for c in ct_outputs]
    graph = with_stored_residuals(expose_saved(inline_calls(graph)))
    wrt_vars = [v for v, w in zip(graph.inputs, wrt) if w]
    active = active_vars(graph, set(wrt_vars))
    ct_vars = [v for v, c in zip(graph.outputs, ct_outputs) if c]
    with building(graph.name + "_bwd") as builder:
        ct_in = [builder.new_input(v.aval) for v in ct_vars]
        residuals = _Residuals(builder, graph.consts)
        seeds = iter(ct_in)
        out_cts = [next(seeds) if c else None for c in ct_outputs]
        cts = backward_pass(graph, residuals.read, out_cts, active)
        results = [cts[v] if v in cts else lax.full(v.aval.shape, 0, v.aval.dtype)
                   for v in wrt_vars]
        # prune_outputs: a multi-output node (a scan, an aot-compiled backward) computes
        # only the cotangents read, e.g. the parameters' under grad(f, argnums=0)
        backward = prune_outputs(builder.finish(results))
    # Rules read primal values only through `residuals`, so nothing is captured.
    assert not builder.captured, "the backward pass captured an outer traced value"
    # Keep only the residuals the pruned backward graph still reads.
    used = _used_vars(backward)
    n_ct = len(ct_vars)
    res_inputs = backward.inputs[n_ct:]
    keep = [i for i, v in enumerate(res_inputs) if v in used]
    backward = _with(backward, inputs=backward.inputs[:n_ct] + [res_inputs[i] for i in keep],
                     num_captures=0, has_rng=False, in_tree=None, out_tree=None,
                     mutated_inputs=())
    res_primal = [residuals.primal_vars[i] for i in keep]
    # Residuals follow the mutated inputs' values, so `mutated_inputs` moves to VJPGraphs.
    forward = dce(_with(graph, outputs=list(graph.outputs) + res_primal,
                        name=graph.name + "_fwd", out_tree=None, mutated_inputs=()))
    return VJPGraphs(forward, backward, len(graph.outputs), len(res_primal), wrt,
                     ct_outputs, tuple(graph.mutated_inputs))


__all__ = ["VJP_RULES", "VJPGraphs", "vjp_graph", "backward_pass", "active_vars",
           "inline_calls", "evaluate", "is_differentiable"]
