"""Point and reduce rules: the scalar expression of each primitive at one point of a loop.

`POINT_RULES` has a `Rule` with `point` (the expression at one point of a loop region, from
a `PointCtx`) and/or `reduce` (`(init, combine)`) for each primitive that can live in a
loop region. The CPU backend (compiler/lower_cpu.py) takes them all; the CUDA backend
(compiler/lower_cuda.py) takes those that are valid device code as they stand. Nodes that
fill whole buffers are compiler/lower_cpu_kernels.py's. See docs/compiler.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from transfuse.ir.primitives import _GOLDEN, _MASK, PRIMITIVES, _mix64

from .codegen import PointCtx, Rule, ctor, literal
from .fusion import is_unit_reshape
from .math_names import MATH_NAMES

P = PRIMITIVES
POINT_RULES: dict[Any, Rule] = {}
NARROW_INTS = (np.dtype(np.int32), np.dtype(np.uint32))
MATHLIB_MIN_ROW = 64  # innermost loop extent from which transcendental functions vectorise


def _rule(name: str, **kwargs: Any) -> None:
    POINT_RULES[P[name]] = Rule(**kwargs)


def exact(c: PointCtx, expr: str) -> str:
    """expr converted back to the output dtype where Numba would widen it (int32 -> int64)."""
    if c.out_dtype in NARROW_INTS:
        return f"{ctor(c.out_dtype)}({expr})"
    return expr


# ---------------------------------------------------------------------------------------
# Elementwise math


def _math_function(name: str, dtype: np.dtype) -> str | None:
    """The name of a vectorisable mathlib function for (primitive, dtype), if any."""
    return MATH_NAMES.get((name, np.dtype(dtype).name))  # Numba is not imported to lower


def _vectorises(c: PointCtx) -> bool:
    """Whether the region's rows are long enough for vectorised math to repay its compile time.

    mathlib's functions are inlined into every call site by Numba, which costs a tenth of
    a second of compile time or more each. The decision looks at the innermost loop only,
    not at the region's whole size: the outer extents are usually a batch, and a decision
    taken on them would give each batch size a source, and a compile, of its own
    (compiler/size_params.py) — a row shorter than 64 gains little from SIMD anyway.
    """
    domain = c.region.domain
    return len(domain) > 0 and domain[-1] >= MATHLIB_MIN_ROW


Scalar = Callable[[PointCtx, str], str]  # (context, operand) -> a scalar expression


def divide(c: PointCtx, x: str, y: str) -> str:
    """x / y in the output dtype; complex by NumPy's algorithm (runtime/complex_bodies.py:
    Numba's complex `/` raises ZeroDivisionError where NumPy gives inf or nan)."""
    if c.out_dtype.kind == "c":
        return f"{ctor(c.out_dtype)}({c.helper('complex_divide')}({x}, {y}))"
    return f"{x} / {y}"


def _unary_float(name: str, scalar: Scalar) -> Callable[[PointCtx], str]:
    """compiler/mathlib.py's vectorised `name` in large regions (where it has one), else
    the scalar expression."""
    def point(c: PointCtx) -> str:
        x = c.arg(0)
        fast = _math_function(name, c.out_dtype) if _vectorises(c) else None
        if fast is not None:
            return f"{c.region.program.math(fast)}({x})"
        return scalar(c, x)
    return point


def _np(fn: str) -> Scalar:
    """Numba's scalar np.<fn> (libm)."""
    return lambda c, x: f"np.{fn}({x})"


def _logistic(c: PointCtx, x: str) -> str:
    one = c.lit(1)
    return f"{one} / ({one} + np.exp(-{x}))"


def _erf(c: PointCtx, x: str) -> str:
    c.region.program.helper("math")
    return f"{ctor(c.out_dtype)}(math.erf({x}))"


def _complex_aware(name: str) -> Scalar:
    """Numba's np.<name>, but runtime/complex_bodies.py's for complex operands (Numba's
    complex expm1 and log1p lose a small argument's digits)."""
    def scalar(c: PointCtx, x: str) -> str:
        if c.in_dtype.kind == "c":
            return f"{ctor(c.out_dtype)}({c.helper('complex_' + name)}({x}))"
        return f"np.{name}({x})"
    return scalar


_rule("exp", point=_unary_float("exp", _np("exp")))
_rule("expm1", point=_unary_float("expm1", _complex_aware("expm1")))
_rule("log", point=_unary_float("log", _np("log")))
_rule("log1p", point=_unary_float("log1p", _complex_aware("log1p")))
_rule("sqrt", point=_unary_float("sqrt", _np("sqrt")))
_rule("rsqrt", point=_unary_float("rsqrt", lambda c, x: divide(c, c.lit(1), f"np.sqrt({x})")))
_rule("sin", point=_unary_float("sin", _np("sin")))
_rule("cos", point=_unary_float("cos", _np("cos")))
_rule("tan", point=_unary_float("tan", _np("tan")))
_rule("arcsin", point=_unary_float("arcsin", _np("arcsin")))
_rule("arccos", point=_unary_float("arccos", _np("arccos")))
_rule("arctan", point=_unary_float("arctan", _np("arctan")))
_rule("sinh", point=_unary_float("sinh", _np("sinh")))
_rule("cosh", point=_unary_float("cosh", _np("cosh")))
_rule("tanh", point=_unary_float("tanh", _np("tanh")))
_rule("arcsinh", point=_unary_float("arcsinh", _np("arcsinh")))
_rule("arccosh", point=_unary_float("arccosh", _np("arccosh")))
_rule("arctanh", point=_unary_float("arctanh", _np("arctanh")))
_rule("logistic", point=_unary_float("logistic", _logistic))
_rule("erf", point=_unary_float("erf", _erf))
_rule("floor", point=_unary_float("floor", _np("floor")))
_rule("ceil", point=_unary_float("ceil", _np("ceil")))
_rule("round", point=_unary_float("round", _np("round")))
_rule("reciprocal", point=_unary_float("reciprocal", lambda c, x: divide(c, c.lit(1), x)))


def _special(helper: str) -> Callable[[PointCtx], str]:
    """scipy.special's own scalar function (runtime/special_functions.py), computed in
    float64 and rounded to the output dtype."""
    def point(c: PointCtx) -> str:
        return f"{ctor(c.out_dtype)}({c.helper(helper)}({', '.join(c.args())}))"
    return point


_rule("erfc", point=_special("special_erfc"))
_rule("erf_inv", point=_special("special_erfinv"))
_rule("ndtr", point=_special("special_ndtr"))
_rule("ndtri", point=_special("special_ndtri"))
_rule("log_ndtr", point=_special("special_log_ndtr"))
_rule("lgamma", point=_special("special_gammaln"))
_rule("digamma", point=_special("special_psi"))
_rule("bessel_i0e", point=_special("special_i0e"))
_rule("bessel_i1e", point=_special("special_i1e"))
_rule("zeta", point=_special("special_zeta"))

def _abs(c: PointCtx) -> str:
    if c.in_dtype.kind == "c":  # the modulus, in the real dtype of the same precision
        return f"{ctor(c.out_dtype)}(abs({c.arg(0)}))"
    return exact(c, f"abs({c.arg(0)})")


def _sign(c: PointCtx) -> str:
    if c.out_dtype.kind == "c":  # NumPy 2: z / |z|, and 0 at 0
        z = c.bind(c.arg(0))
        return f"({z} / {ctor(c.out_dtype)}(abs({z})) if {z} != 0 else {z})"
    return exact(c, f"np.sign({c.arg(0)})")


_rule("neg", point=lambda c: exact(c, f"-{c.arg(0)}"))
_rule("abs", point=_abs)
_rule("sign", point=_sign)
_rule("square", point=lambda c: exact(c, f"{c.arg(0)} * {c.arg(0)}"))
_rule("isnan", point=lambda c: f"np.isnan({c.arg(0)})")
_rule("isinf", point=lambda c: f"np.isinf({c.arg(0)})")
_rule("isfinite", point=lambda c: f"np.isfinite({c.arg(0)})")
_rule("not", point=lambda c: f"not {c.arg(0)}" if c.out_dtype == np.bool_
      else exact(c, f"~{c.arg(0)}"))


def _integer_pow(c: PointCtx) -> str:
    x, y = c.arg(0), c.params["y"]
    if y == 0:
        return c.lit(1)
    product = " * ".join([x] * min(abs(y), 4))
    if abs(y) > 4:
        if c.out_dtype.kind in "fc":
            product = f"{x} ** {c.lit(abs(y))}"
        else:
            product = f"{c.helper('ipow')}({_widened(c, x)}, {abs(y)})"
    if y < 0 and c.out_dtype.kind == "c":  # NumPy: 0 ** (negative) is nan + nan j
        inverse = divide(c, c.lit(1), f"({product})")
        return f"({inverse} if {x} != 0 else {c.lit(complex(np.nan, np.nan))})"
    if y < 0:
        return divide(c, c.lit(1), f"({product})")
    return exact(c, product)


_rule("integer_pow", point=_integer_pow)

def _infix(op: str) -> Callable[[PointCtx], str]:
    return lambda c: exact(c, f"{c.arg(0)} {op} {c.arg(1)}")


def _compare(op: str) -> Callable[[PointCtx], str]:
    def point(c: PointCtx) -> str:
        x, y = c.args()
        if c.in_dtype.kind == "c" and op not in ("==", "!="):
            return _complex_order(c, op, x, y)
        return f"{x} {op} {y}"
    return point


def _complex_order(c: PointCtx, op: str, x: str, y: str) -> str:
    """NumPy's lexicographic order of complex numbers (its CLT/CLE macros)."""
    if op in (">", ">="):
        x, y, op = y, x, op.replace(">", "<")
    x, y = c.bind(x), c.bind(y)
    return (f"(({x}.real < {y}.real and not np.isnan({x}.imag) and not np.isnan({y}.imag))"
            f" or ({x}.real == {y}.real and {x}.imag {op} {y}.imag))")


_rule("add", point=_infix("+"))
_rule("sub", point=_infix("-"))
_rule("mul", point=_infix("*"))
_rule("div", point=lambda c: divide(c, *c.args()))
_rule("floor_div", point=_infix("//"))
_rule("mod", point=_infix("%"))
_rule("and", point=_infix("&"))
_rule("or", point=_infix("|"))
_rule("xor", point=_infix("^"))
_rule("eq", point=_compare("=="))
_rule("ne", point=_compare("!="))
_rule("lt", point=_compare("<"))
_rule("le", point=_compare("<="))
_rule("gt", point=_compare(">"))
_rule("ge", point=_compare(">="))


def _extremum(which: str) -> Callable[[PointCtx], str]:
    def point(c: PointCtx) -> str:
        x, y = c.args()
        if c.out_dtype.kind == "f":
            return f"{c.helper('f' + which)}({x}, {y})"
        return exact(c, f"{which}({x}, {y})")
    return point


_rule("max", point=_extremum("max"))
_rule("min", point=_extremum("min"))


def _pow(c: PointCtx) -> str:
    x, y = c.args()
    if c.out_dtype.kind in "fc":
        return f"{x} ** {y}"
    return exact(c, f"{c.helper('ipow')}({_widened(c, x)}, {_widened(c, y)})")


def _widened(c: PointCtx, x: str) -> str:
    """An integer operand as the 64-bit integer that Numba's typing makes of ipow's `base`
    and `exp` anyway (a narrow int times itself, or shifted, is 64 bits wide: the loop
    unifies the two types), so the direct back end, which keeps one type per variable,
    reads ipow the same way."""
    dtype = c.out_dtype
    if dtype.kind in "iu" and dtype.itemsize < 8:
        return f"np.{'int64' if dtype.kind == 'i' else 'uint64'}({x})"
    return x


_rule("pow", point=_pow)
_rule("arctan2", point=lambda c: f"np.arctan2({c.arg(0)}, {c.arg(1)})")
_rule("select", point=lambda c: f"({c.arg(1)} if {c.arg(0)} else {c.arg(2)})")


def _clip(c: PointCtx) -> str:
    x, lo, hi = c.args()
    if c.out_dtype.kind == "f":
        return f"{c.helper('fmin')}({c.helper('fmax')}({x}, {lo}), {hi})"
    return exact(c, f"min(max({x}, {lo}), {hi})")


_rule("clip", point=_clip)


def _cast(c: PointCtx) -> str:
    x = c.arg(0)
    if c.out_dtype == np.bool_:
        return x if c.in_dtype == np.bool_ else f"{x} != 0"
    if c.in_dtype.kind == "c" and c.out_dtype.kind != "c":
        x = f"{x}.real"  # NumPy's astype keeps the real part
    return f"{ctor(c.out_dtype)}({x})"


_rule("cast", point=_cast)
_rule("real", point=lambda c: f"{c.arg(0)}.real")
_rule("imag", point=lambda c: f"{c.arg(0)}.imag")
_rule("conj", point=lambda c: f"{c.arg(0)}.conjugate()")
_rule("complex", point=lambda c: f"{ctor(c.out_dtype)}(complex({c.arg(0)}, {c.arg(1)}))")


def _fold_in_word(data: int) -> int:
    return int(_mix64(np.asarray((data + 1) * _GOLDEN & _MASK, dtype=np.uint64)))


_rule("random_fold_in", point=lambda c: (
    f"{c.helper('mix64')}({c.arg(0)} ^ {literal(_fold_in_word(c.params['data']), np.uint64)})"))

# ---------------------------------------------------------------------------------------
# Index maps: operands read at other points (from memory)


def _relabel(c: PointCtx) -> str:
    return c.arg(0)


def _reshape_point(c: PointCtx) -> str:
    src = c.node.inputs[0].aval.shape
    if is_unit_reshape(src, c.node.outputs[0].aval.shape):
        return c.arg(0)
    linear = _linear_index(c.index, c.node.outputs[0].aval.shape)
    flat = c.bind(linear)
    idx = []
    for j, stride in enumerate(_strides(src)):
        idx.append(f"({flat} // {stride}) % {src[j]}" if j else f"{flat} // {stride}")
    return c.load(0, idx)


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _linear_index(index: list[str], shape: tuple[int, ...]) -> str:
    terms = [i if s == 1 else f"{i} * {s}" for i, s in zip(index, _strides(shape)) if i != "0"]
    return " + ".join(terms) or "0"


def _transpose_point(c: PointCtx) -> str:
    perm = c.params["permutation"]
    idx = [""] * len(perm)
    for d, p in enumerate(perm):
        idx[p] = c.index[d]
    return c.load(0, idx)


def _affine(i: str, start: int, step: int) -> str:
    """start + i * step, written simply."""
    if i == "0":
        return str(start)
    scaled = i if step == 1 else f"{i} * {step}"
    return scaled if start == 0 else f"{start} + {scaled}"


def _slice_point(c: PointCtx) -> str:
    p = c.params
    return c.load(0, [_affine(i, a, s) for i, a, s in zip(c.index, p["starts"], p["steps"])])


def _pad_point(c: PointCtx) -> str:
    shape = c.node.inputs[0].aval.shape
    conds, idx = [], []
    for i, n, (lo, _, interior) in zip(c.index, shape, c.params["padding_config"]):
        t = _affine(i, -lo, 1)
        if interior:
            conds.append(f"{t} >= 0 and ({t}) % {interior + 1} == 0 and "
                         f"({t}) // {interior + 1} < {n}")
            idx.append(f"({t}) // {interior + 1}")
        else:
            conds.append(f"0 <= {t} < {n}")
            idx.append(t)
    value = c.load(1, [])
    if not conds:
        return c.load(0, [])
    return f"({c.load_expr(0, idx)} if {' and '.join(conds)} else {value})"


def _concatenate_point(c: PointCtx) -> str:
    dim = c.params["dimension"]
    i = c.index[dim]
    sizes = [v.aval.shape[dim] for v in c.node.inputs]
    offsets = np.cumsum([0] + sizes)
    expr = None
    for k in reversed(range(len(sizes))):
        idx = list(c.index)
        idx[dim] = _affine(i, -int(offsets[k]), 1)
        load = c.load_expr(k, idx)
        expr = load if expr is None else f"({load} if {i} < {offsets[k + 1]} else {expr})"
    return expr


def _gather_point(c: PointCtx) -> str:
    axis = c.params["axis"]
    x, idx = c.node.inputs
    k = idx.aval.ndim
    where = c.load(1, c.index[axis:axis + k])
    j = c.bind(f"{c.helper('take_index')}({where}, {x.aval.shape[axis]})")
    return c.load(0, c.index[:axis] + [j] + c.index[axis + k:])


def _dynamic_slice_point(c: PointCtx) -> str:
    shape = c.node.inputs[0].aval.shape
    idx = []
    for d, (i, k) in enumerate(zip(c.index, c.params["slice_sizes"])):
        start = c.bind(f"{c.helper('clamp_start')}({c.load(d + 1, [])}, {k}, {shape[d]})")
        idx.append(start if i == "0" else f"{start} + {i}")
    return c.load(0, idx)


def _update_point(c: PointCtx, region: list[tuple[str, str]]) -> str:
    """x at this point, or the update where (condition, update index) holds on every dim."""
    conds = [cond for cond, _ in region]
    upd_shape = c.node.inputs[1].aval.shape
    off = len(region) - len(upd_shape)
    # The update broadcasts against the region: its size-1 dims are read at 0.
    upd_idx = [region[j + off][1] if upd_shape[j] != 1 else "0" for j in range(len(upd_shape))]
    base = c.load(0, c.index)
    if not conds:
        return c.load(1, upd_idx)
    return f"({c.load_expr(1, upd_idx)} if {' and '.join(conds)} else {base})"


def _update_slice_point(c: PointCtx) -> str:
    p = c.params
    region = []
    for i, a, s, k in zip(c.index, p["starts"], p["steps"], p["sizes"]):
        t = _affine(i, -a, 1)
        if s == 1:
            region.append((f"0 <= {t} < {k}", t))
        else:
            region.append((f"({t}) % {s} == 0 and 0 <= ({t}) // {s} < {k}", f"({t}) // {s}"))
    return _update_point(c, region)


def _dynamic_update_slice_point(c: PointCtx) -> str:
    shape = c.node.inputs[0].aval.shape
    upd = c.node.inputs[1].aval.shape
    region = []
    for d, (i, k) in enumerate(zip(c.index, upd)):
        start = c.bind(f"{c.helper('clamp_start')}({c.load(d + 2, [])}, {k}, {shape[d]})")
        region.append((f"{start} <= {i} < {start} + {k}", f"{i} - {start}"))
    return _update_point(c, region)


def _iota_point(c: PointCtx) -> str:
    i = c.index[c.params["dimension"]]
    return c.lit(0) if i == "0" else f"{ctor(c.out_dtype)}({i})"


def _random_base(c: PointCtx) -> str:
    """The mixed key of this point's draw: mix64(key + stream * golden), hoisted."""
    key_ndim = c.node.inputs[0].aval.ndim
    key = c.load(0, c.index[:key_ndim])
    word = literal(c.params["stream"] * _GOLDEN & _MASK, np.uint64)
    return c.bind(f"{c.helper('mix64')}({key} + {word})")


def _draw_index(c: PointCtx) -> str:
    key_ndim = c.node.inputs[0].aval.ndim
    return c.bind(_linear_index(c.index[key_ndim:], tuple(c.params["shape"])))


def _random_uniform_point(c: PointCtx) -> str:
    base, j = _random_base(c), _draw_index(c)
    unit = "unit32" if c.out_dtype == np.float32 else "unit64"
    return f"{c.helper(unit)}({c.helper('rng_word')}({base}, {j}))"


def _random_normal_point(c: PointCtx) -> str:
    base, j = _random_base(c), _draw_index(c)
    return f"{ctor(c.out_dtype)}({c.helper('rng_normal')}({base}, {j}))"


def _random_split_point(c: PointCtx) -> str:
    key = c.load(0, c.index[:-1])
    return f"{c.helper('split_key')}({key}, {c.index[-1]})"


_rule("broadcast_in_dim", point=_relabel)
_rule("squeeze", point=_relabel)
_rule("expand_dims", point=_relabel)
_rule("reshape", point=_reshape_point)
_rule("copy", point=lambda c: c.arg(0))
_rule("stop_gradient", point=lambda c: c.arg(0))  # the identity: fuses into its loop
_rule("optimization_barrier", point=lambda c: c.arg(0))
_rule("transpose", point=_transpose_point)
_rule("slice", point=_slice_point)
_rule("pad", point=_pad_point)
_rule("concatenate", point=_concatenate_point)
_rule("gather", point=_gather_point)
_rule("dynamic_slice", point=_dynamic_slice_point)
_rule("update_slice", point=_update_slice_point)
_rule("dynamic_update_slice", point=_dynamic_update_slice_point)
_rule("iota", point=_iota_point)
_rule("full", point=lambda c: c.lit(c.params["value"]))
_rule("random_uniform", point=_random_uniform_point)
_rule("random_normal", point=_random_normal_point)
_rule("random_split", point=_random_split_point)

# ---------------------------------------------------------------------------------------
# Reductions: an initial value and how to fold one more element in


def _extreme_init(largest: bool) -> Callable[[np.dtype], str]:
    def init(dtype: np.dtype) -> str:
        if dtype == np.bool_:
            return "False" if largest else "True"
        if dtype.kind == "f":
            return literal(-np.inf if largest else np.inf, dtype)
        info = np.iinfo(dtype)
        return literal(info.min if largest else info.max, dtype)
    return init


def _extreme_combine(which: str) -> Callable[..., str]:
    def combine(acc: str, v: str, dtype: np.dtype, helper: Callable[[str], str]) -> str:
        if dtype == np.bool_:
            return f"{acc} or {v}" if which == "max" else f"{acc} and {v}"
        if dtype.kind == "f":
            return f"{helper('f' + which)}({acc}, {v})"
        return f"{which}({acc}, {v})"
    return combine


def _fold(op: str) -> Callable[..., str]:
    def combine(acc: str, v: str, dtype: np.dtype, helper: Callable[[str], str]) -> str:
        expr = f"{acc} {op} {v}"
        return f"{ctor(dtype)}({expr})" if dtype in NARROW_INTS else expr
    return combine


# point: a reduction over no axes is the identity (the fusion pass treats it as a relabel).
_rule("reduce_sum", reduce=(lambda dt: literal(0, dt), _fold("+")), point=_relabel)
_rule("reduce_prod", reduce=(lambda dt: literal(1, dt), _fold("*")), point=_relabel)
_rule("reduce_max", reduce=(_extreme_init(True), _extreme_combine("max")), point=_relabel)
_rule("reduce_min", reduce=(_extreme_init(False), _extreme_combine("min")), point=_relabel)
