"""The CPU backend: a fused graph becomes the source of one Numba `@njit` entry point.

The entry point takes the graph's inputs (C-contiguous arrays) and its array constants,
allocates the buffers between regions (reusing dead ones), runs every region in order and
returns the outputs, so a call crosses from Python to machine code once. Each fused loop
region becomes a loop nest with its scalar expressions inlined (compiler/codegen.py);
contractions, convolutions, scans, arg-reductions and scatters become small kernels here.

`LOWERING_RULES` has one `Rule` per primitive (tests/test_coverage.py checks it): `point`
for the scalar expression at one point of a loop region, `reduce` for reductions, and
`kernel` for nodes that run on whole buffers. See docs/compiler.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transfuse.ir.control import CONTROL_FLOW
from transfuse.ir.core import Aval, Graph, Node, Var
from transfuse.ir.errors import CompileError
from transfuse.ir.primitives import _GOLDEN, _MASK, PRIMITIVES, _mix64

from .codegen import (
    COLUMN_CHUNK,
    LoopNest,
    LoopRegionCodegen,
    PointCtx,
    ProgramBuilder,
    RegionSplit,
    Rule,
    ctor,
    index_str,
    literal,
)
from .fusion import ELEMENTWISE, FUSED, fuse, fusion_class, is_unit_reshape
from .math_names import MATH_NAMES
from .region_functions import RegionBody, share_regions
from .repeated_blocks import outline_repeats
from .size_params import SizeParams

P = PRIMITIVES
LOWERING_RULES: dict[Any, Rule] = {}
NARROW_INTS = (np.dtype(np.int32), np.dtype(np.uint32))
BLAS_MIN_FLOPS = 1 << 13  # below this a loop nest beats a BLAS call
PARALLEL_MIN_FLOPS = 1 << 18
INT_ARGS = "g0"  # the entry's int64 array argument of run-time integers (BLAS arguments)
HUGE_PAGE_MIN_BYTES = 1 << 22  # NumPy's threshold for asking for huge pages
MATHLIB_MIN_ROW = 64  # innermost loop extent from which transcendental functions vectorise


def _rule(name: str, **kwargs: Any) -> None:
    LOWERING_RULES[P[name]] = Rule(**kwargs)


def _exact(c: PointCtx, expr: str) -> str:
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
    return _exact(c, f"abs({c.arg(0)})")


def _sign(c: PointCtx) -> str:
    if c.out_dtype.kind == "c":  # NumPy 2: z / |z|, and 0 at 0
        z = c.bind(c.arg(0))
        return f"({z} / {ctor(c.out_dtype)}(abs({z})) if {z} != 0 else {z})"
    return _exact(c, f"np.sign({c.arg(0)})")


_rule("neg", point=lambda c: _exact(c, f"-{c.arg(0)}"))
_rule("abs", point=_abs)
_rule("sign", point=_sign)
_rule("square", point=lambda c: _exact(c, f"{c.arg(0)} * {c.arg(0)}"))
_rule("isnan", point=lambda c: f"np.isnan({c.arg(0)})")
_rule("isinf", point=lambda c: f"np.isinf({c.arg(0)})")
_rule("isfinite", point=lambda c: f"np.isfinite({c.arg(0)})")
_rule("not", point=lambda c: f"not {c.arg(0)}" if c.out_dtype == np.bool_
      else _exact(c, f"~{c.arg(0)}"))


def _integer_pow(c: PointCtx) -> str:
    x, y = c.arg(0), c.params["y"]
    if y == 0:
        return c.lit(1)
    product = " * ".join([x] * min(abs(y), 4))
    if abs(y) > 4:
        if c.out_dtype.kind in "fc":
            product = f"{x} ** {c.lit(abs(y))}"
        else:
            product = f"{c.helper('ipow')}({x}, {abs(y)})"
    if y < 0 and c.out_dtype.kind == "c":  # NumPy: 0 ** (negative) is nan + nan j
        inverse = divide(c, c.lit(1), f"({product})")
        return f"({inverse} if {x} != 0 else {c.lit(complex(np.nan, np.nan))})"
    if y < 0:
        return divide(c, c.lit(1), f"({product})")
    return _exact(c, product)


_rule("integer_pow", point=_integer_pow)

def _infix(op: str) -> Callable[[PointCtx], str]:
    return lambda c: _exact(c, f"{c.arg(0)} {op} {c.arg(1)}")


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
        return _exact(c, f"{which}({x}, {y})")
    return point


_rule("max", point=_extremum("max"))
_rule("min", point=_extremum("min"))


def _pow(c: PointCtx) -> str:
    x, y = c.args()
    if c.out_dtype.kind in "fc":
        return f"{x} ** {y}"
    return _exact(c, f"{c.helper('ipow')}({x}, {y})")


_rule("pow", point=_pow)
_rule("arctan2", point=lambda c: f"np.arctan2({c.arg(0)}, {c.arg(1)})")
_rule("select", point=lambda c: f"({c.arg(1)} if {c.arg(0)} else {c.arg(2)})")


def _clip(c: PointCtx) -> str:
    x, lo, hi = c.args()
    if c.out_dtype.kind == "f":
        return f"{c.helper('fmin')}({c.helper('fmax')}({x}, {lo}), {hi})"
    return _exact(c, f"min(max({x}, {lo}), {hi})")


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


_rule("broadcast_in_dim", point=_relabel, kernel=lambda k: _view_kernel(k))
_rule("squeeze", point=_relabel, kernel=lambda k: _view_kernel(k))
_rule("expand_dims", point=_relabel, kernel=lambda k: _view_kernel(k))
_rule("reshape", point=_reshape_point, kernel=lambda k: _view_kernel(k))
_rule("copy", point=lambda c: c.arg(0), kernel=lambda k: _copy_kernel(k))
_rule("stop_gradient", point=lambda c: c.arg(0))  # the identity: fuses into its loop
# x, once its `after` exists: an alias (a view), so a checkpoint copies no weights
_rule("optimization_barrier", point=lambda c: c.arg(0),
      kernel=lambda k: k.put(f"{k.outs[0]} = {k.ins[0]}"))
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

# ---------------------------------------------------------------------------------------
# Kernels: nodes that fill whole buffers


@dataclass
class KernelCtx:
    """What a kernel rule sees: the node, its operands' and outputs' array names, a nest."""

    program: ProgramBuilder
    node: Node
    ins: list[str]
    outs: list[str]
    nest: LoopNest
    allow_parallel: bool

    @property
    def params(self) -> dict:
        return self.node.params

    def work_is_large(self, flops: int) -> bool:
        return self.allow_parallel and flops >= PARALLEL_MIN_FLOPS

    def loops(self, names: list[str], extents: list[int], parallel_first: bool = False
              ) -> None:
        for k, (name, n) in enumerate(zip(names, extents)):
            parallel = parallel_first and k == 0 and n >= 2
            if parallel:
                self.program.uses_prange = True
            self.nest.open(name, n, parallel=parallel)

    def close(self, count: int) -> None:
        for _ in range(count):
            self.nest.close()

    def put(self, stmt: str) -> None:
        self.nest.put(stmt)


def _view_kernel(k: KernelCtx) -> None:
    shape = k.node.outputs[0].aval.shape
    k.put(f"{k.outs[0]} = {k.ins[0]}.reshape({shape!r})")


def _copy_kernel(k: KernelCtx) -> None:
    k.put(f"{k.outs[0]} = {k.ins[0]}.copy()")


def _dot_general_kernel(k: KernelCtx) -> None:
    lhs, rhs = (v.aval for v in k.node.inputs)
    out = k.node.outputs[0].aval
    (lc, _), _ = k.params["dimension_numbers"]
    if out.size == 0:
        return
    if any(lhs.shape[d] == 0 for d in lc):  # an empty sum: zeros (Numba has no 0-d fill)
        k.put(f"{k.outs[0]}.reshape({k.outs[0]}.size)[:] = 0")
        return
    plan = _gemm_plan(k.node) if out.dtype in _BLAS_KINDS else None
    if plan is None:
        _dot_loops(k, _free_dims(k.node, 0), _free_dims(k.node, 1))
    else:
        _dot_blas(k, plan)


# ---------------------------------------------------------------------------------------
# dot_general as BLAS gemm: every dimension of the product is a batch, row (M), column (N)
# or contraction (K) axis with a stride in each operand (0 where it does not appear). The
# M, N and K axes that are contiguous in both of their operands merge into one matrix
# dimension each; the rest (batch axes, free axes that do not merge) become loops around
# one gemm call on strided 2-D views, so neither a batch nor a broadcast is copied.

_BLAS_KINDS = {np.dtype(np.float32): ord("s"), np.dtype(np.float64): ord("d")}
_N, _T = 0, 1  # gemm_strided's flags: a matrix used as stored, or transposed
GEMM_LOOPS = 3  # loop levels around the BLAS call in runtime/cpu_kernels.gemm_strided


@dataclass
class _Axis:
    """One dimension of a product: its extent and its strides in lhs, rhs and output."""

    size: int
    strides: tuple[int, int, int]


@dataclass
class GemmPlan:
    """How a dot_general runs as gemm calls: operands to copy first, then the BLAS args."""

    copies: tuple[bool, bool]  # copy lhs / rhs into (batch, rows, cols) order first
    swap: bool  # BLAS's x is the rhs (the output is row-major: C^T = B^T A^T)
    mnk: tuple[int, int, int]
    blas: tuple[int, ...]  # trans_x, trans_y, M, N, K, ldx, ldy, ldc
    loops: list[_Axis]


def _free_dims(node: Node, index: int) -> list[int]:
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    taken = set((lc, rc)[index]) | set((lb, rb)[index])
    return [d for d in range(node.inputs[index].aval.ndim) if d not in taken]


def _c_strides(shape: tuple[int, ...], order: list[int]) -> list[int]:
    """Element strides per dimension of an array stored C-ordered with its dims in `order`."""
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = step
        step *= shape[d]
    return strides


def _operand_order(node: Node, index: int) -> list[int]:
    """The dimension order a copied operand gets: batch, then rows (M) or K, then cols."""
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    free = _free_dims(node, index)
    return list(lb) + free + list(lc) if index == 0 else list(rb) + list(rc) + free


def _product_axes(node: Node, copies: tuple[bool, bool]) -> dict[str, list[_Axis]]:
    """The product's axes by role ('b', 'm', 'n', 'k'), size-1 axes left out."""
    lhs, rhs = (v.aval for v in node.inputs)
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    ls, rs = [_c_strides(a.shape, _operand_order(node, i) if copies[i] else
                         list(range(a.ndim))) for i, a in enumerate((lhs, rhs))]
    lfree, rfree = _free_dims(node, 0), _free_dims(node, 1)
    os_ = _c_strides(node.outputs[0].aval.shape, list(range(node.outputs[0].aval.ndim)))
    nb, nl = len(lb), len(lfree)
    axes = {"b": [_Axis(lhs.shape[a], (ls[a], rs[c], os_[j]))
                  for j, (a, c) in enumerate(zip(lb, rb))],
            "m": [_Axis(lhs.shape[a], (ls[a], 0, os_[nb + j])) for j, a in enumerate(lfree)],
            "n": [_Axis(rhs.shape[c], (0, rs[c], os_[nb + nl + j]))
                  for j, c in enumerate(rfree)],
            "k": [_Axis(lhs.shape[a], (ls[a], rs[c], 0)) for a, c in zip(lc, rc)]}
    return {role: [a for a in group if a.size != 1] for role, group in axes.items()}


def _merges(outer: _Axis, inner: _Axis, which: tuple[int, ...]) -> bool:
    return all(outer.strides[i] == inner.strides[i] * inner.size for i in which)


def _matrix_dim(group: list[_Axis], which: tuple[int, int]) -> tuple[_Axis, list[_Axis]]:
    """The axes of `group` that merge into one matrix dimension, and those left over."""
    if not group:
        return _Axis(1, (0, 0, 0)), []
    order = sorted(group, key=lambda a: -a.strides[which[0]])
    chain = [order[-1]]
    for axis in reversed(order[:-1]):
        if not _merges(axis, chain[0], which):
            break
        chain.insert(0, axis)
    size = int(np.prod([a.size for a in chain], dtype=np.int64))
    return _Axis(size, chain[-1].strides), order[:len(order) - len(chain)]


def _merged_loops(loops: list[_Axis]) -> list[_Axis]:
    """Loops ordered outermost first, neighbours that step as one merged."""
    merged: list[_Axis] = []
    for axis in sorted(loops, key=lambda a: tuple(-s for s in reversed(a.strides))):
        if merged and _merges(merged[-1], axis, (0, 1, 2)):
            merged[-1] = _Axis(merged[-1].size * axis.size, axis.strides)
        else:
            merged.append(axis)
    return merged


def _stored(rows: int, cols: int, row_step: int, col_step: int) -> tuple[int, int] | None:
    """BLAS's (trans, leading dimension) of a rows x cols matrix with these steps, or None."""
    if rows == 1 or row_step == 1:  # column-major
        ld = col_step if cols > 1 else rows
        if ld >= rows:
            return _N, ld
    if cols == 1 or col_step == 1:  # row-major: its transpose is column-major
        ld = row_step if rows > 1 else cols
        if ld >= cols:
            return _T, ld
    return None


def _column_major_args(m: _Axis, n: _Axis, kk: _Axis, x: int, y: int) -> tuple | None:
    """gemm args for C = X @ Y with C column-major; x, y: which stride is X's, Y's."""
    c = _stored(m.size, n.size, m.strides[2], n.strides[2])
    xs = _stored(m.size, kk.size, m.strides[x], kk.strides[x])
    ys = _stored(kk.size, n.size, kk.strides[y], n.strides[y])
    if c is None or c[0] != _N or xs is None or ys is None:
        return None
    return (xs[0], ys[0], m.size, n.size, kk.size, xs[1], ys[1], c[1])


def _try_gemm(node: Node, copies: tuple[bool, bool]) -> GemmPlan | None:
    axes = _product_axes(node, copies)
    m, mleft = _matrix_dim(axes["m"], (2, 0))
    n, nleft = _matrix_dim(axes["n"], (2, 1))
    kk, kleft = _matrix_dim(axes["k"], (0, 1))
    loops = _merged_loops(axes["b"] + mleft + nleft)
    if kleft or len(loops) > GEMM_LOOPS:
        return None
    mnk = (m.size, n.size, kk.size)
    args = _column_major_args(m, n, kk, 0, 1)
    if args is not None:
        return GemmPlan(copies, False, mnk, args, loops)
    args = _column_major_args(n, m, kk, 1, 0)  # C^T = B^T A^T
    return None if args is None else GemmPlan(copies, True, mnk, args, loops)


def _gemm_plan(node: Node) -> GemmPlan | None:
    """The cheapest way to run a float dot_general as gemm calls, or None for loops."""
    for copies in ((False, False), (True, False), (False, True), (True, True)):
        plan = _try_gemm(node, copies)
        # small products (or vector ones) run faster as a loop nest than as BLAS calls
        if plan is not None and plan.mnk[0] > 1 and plan.mnk[1] > 1 and int(
                np.prod(plan.mnk, dtype=np.int64)) >= BLAS_MIN_FLOPS:
            return plan
    return None


def _operand_copy(k: KernelCtx, index: int) -> str:
    """Operand `index` copied by a loop nest into (batch, rows, cols) order."""
    name, aval = k.ins[index], k.node.inputs[index].aval
    order = _operand_order(k.node, index)
    moved = k.program.local()
    k.put(f"{moved} = np.empty({tuple(aval.shape[d] for d in order)!r}, "
          f"np.{aval.dtype.name})  # {name} with its axes in the order BLAS needs")
    names = [f"i{j}" for j in range(aval.ndim)]
    src = [""] * aval.ndim
    for j, d in enumerate(order):
        src[d] = names[j]
    k.loops(names, [aval.shape[d] for d in order])
    k.put(f"{moved}[{index_str(names)}] = {name}[{index_str(src)}]")
    k.close(aval.ndim)
    return moved


def _dot_blas(k: KernelCtx, plan: GemmPlan) -> None:
    """One gemm_strided call: BLAS on strided views, looping over batch dims (no copies)."""
    flat = []
    for i in range(len(k.node.inputs)):
        name = _operand_copy(k, i) if plan.copies[i] else k.ins[i]
        # `.size` rather than the number: a product of extents would be a size of its own
        # (compiler/size_params.py), and equal to another size in some programs only
        flat.append(k.nest.assign(k.program.local(), f"{name}.reshape({name}.size)"))
    out = k.node.outputs[0].aval
    flat.append(k.nest.assign(k.program.local(), f"{k.outs[0]}.reshape({k.outs[0]}.size)"))
    x, y = (1, 0) if plan.swap else (0, 1)
    loops = [(a.size, a.strides[x], a.strides[y], a.strides[2]) for a in plan.loops]
    loops += [(1, 0, 0, 0)] * (GEMM_LOOPS - len(loops))
    args = (_BLAS_KINDS[out.dtype],) + plan.blas + tuple(v for lp in loops for v in lp)
    m, n, kk = plan.mnk
    count = "".join(f"{a.size} x " for a in plan.loops)
    blas_args = k.program.int_args(args)
    k.put(f"{k.program.helper('gemm_strided')}({flat[x]}, {flat[y]}, {flat[2]}, "
          f"{blas_args})  # BLAS: {count}({m}x{kk} @ {kk}x{n})")



def dot_indices(node: Node, lfree: list[int], rfree: list[int]
                ) -> tuple[list[str], list[str], list[str], list[str]]:
    """A dot_general's loop variables: the output's (batch, lhs free, rhs free), the
    contracted axes', and the index expressions of lhs and rhs in those variables."""
    lhs, rhs = (v.aval for v in node.inputs)
    out = node.outputs[0].aval
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    names = [f"i{d}" for d in range(out.ndim)]
    nb, nl = len(lb), len(lfree)
    lidx, ridx = [""] * lhs.ndim, [""] * rhs.ndim
    for j, (a, c) in enumerate(zip(lb, rb)):
        lidx[a] = ridx[c] = names[j]
    for j, a in enumerate(lfree):
        lidx[a] = names[nb + j]
    for j, c in enumerate(rfree):
        ridx[c] = names[nb + nl + j]
    knames = [f"i{out.ndim + j}" for j in range(len(lc))]
    for a, c, name in zip(lc, rc, knames):
        lidx[a] = ridx[c] = name
    return names, knames, lidx, ridx

def _dot_loops(k: KernelCtx, lfree: list[int], rfree: list[int]) -> None:
    """out[batch, lfree, rfree] (+)= lhs * rhs, contraction outside the rfree loop."""
    lhs, rhs = (v.aval for v in k.node.inputs)
    out = k.node.outputs[0].aval
    (lc, rc), (lb, rb) = k.params["dimension_numbers"]
    names, knames, lidx, ridx = dot_indices(k.node, lfree, rfree)
    nb, nl = len(lb), len(lfree)
    flops = out.size * max(1, int(np.prod([lhs.shape[a] for a in lc], dtype=np.int64)))
    outer = nb + nl
    # An outer product (no contracted axis) writes one product per element: bound by
    # memory like a copy, where a second thread gains little and Numba's parallel passes
    # cost a second of compile time (the per-sample-gradient step has one such kernel).
    k.loops(names[:outer], list(out.shape[:outer]), bool(lc) and k.work_is_large(flops))
    target = f"{k.outs[0]}[{index_str(names)}]"
    if not lc:  # an outer product: one write per element
        k.loops(names[outer:], list(out.shape[outer:]))
        k.put(f"{target} = {k.ins[0]}[{index_str(lidx)}] * {k.ins[1]}[{index_str(ridx)}]")
        k.close(out.ndim - outer)
    elif out.dtype.kind == "f" and lhs.shape[lc[-1]] > COLUMN_CHUNK:
        if outer == out.ndim:
            _dot_rows(k, target, knames, lidx, ridx)
        else:
            _dot_chunked(k, target, names[outer:], knames, lidx, ridx)
    else:
        k.loops(names[outer:], list(out.shape[outer:]))
        k.put(f"{target} = 0")
        k.close(out.ndim - outer)
        k.loops(knames, [lhs.shape[a] for a in lc])
        a = k.nest.assign(k.program.local(), f"{k.ins[0]}[{index_str(lidx)}]")
        k.loops(names[outer:], list(out.shape[outer:]))
        k.put(f"{target} += {a} * {k.ins[1]}[{index_str(ridx)}]")
        k.close(out.ndim - outer + len(lc))
    k.close(outer)


def _dot_rows(k: KernelCtx, target: str, knames: list[str], lidx: list[str],
              ridx: list[str]) -> None:
    """Each output element as block_dot of the two operands' 1-D views along the last
    contracted axis (vectorised, with block_sum's accuracy); compensated across the other
    contracted axes."""
    (lc, _), _ = k.params["dimension_numbers"]
    last = knames[-1]
    x = f"{k.ins[0]}[{index_str([':' if i == last else i for i in lidx])}]"
    y = f"{k.ins[1]}[{index_str([':' if i == last else i for i in ridx])}]"
    dot = f"{k.program.helper('block_dot')}({x}, {y})"
    if len(knames) == 1:
        k.put(f"{target} = {dot}")
        return
    acc, comp = (k.nest.assign(k.program.local(), "0.0", what, depth=k.nest.depth)
                 for what in ("compensated float64 total", "its rounding errors"))
    lhs = k.node.inputs[0].aval
    k.loops(knames[:-1], [lhs.shape[a] for a in lc[:-1]])
    k.put(f"{acc}, {comp} = {k.program.helper('comp_add')}({acc}, {comp}, {dot})")
    k.close(len(knames) - 1)
    k.put(f"{target} = {k.program.helper('comp_total')}({acc}, {comp})")


def _dot_chunked(k: KernelCtx, target: str, rnames: list[str], knames: list[str],
                 lidx: list[str], ridx: list[str]) -> None:
    """out[..., rfree] accumulated over chunks of COLUMN_CHUNK steps of the last contracted
    axis, each chunk's sums added to compensated totals (as column sums in codegen.py):
    the rfree loop stays innermost and vectorises, and the error does not grow with K."""
    lhs = k.node.inputs[0].aval
    out = k.node.outputs[0].aval
    (lc, _), _ = k.params["dimension_numbers"]
    rshape = list(out.shape[out.ndim - len(rnames):])
    cell = index_str(rnames)
    totals, comps = (k.nest.assign(k.program.local(), f"np.zeros({tuple(rshape)!r})", what,
                                   depth=k.nest.depth)
                     for what in ("compensated float64 totals", "their rounding errors"))
    k.loops(knames[:-1], [lhs.shape[a] for a in lc[:-1]])
    chunk, last, n = f"j{out.ndim + len(knames) - 1}", knames[-1], lhs.shape[lc[-1]]
    k.nest.open(chunk, f"0, {n}, {COLUMN_CHUNK}")
    k.loops(rnames, rshape)
    k.put(f"{target} = 0")
    k.close(len(rnames))
    k.nest.open(last, f"min({chunk} + {COLUMN_CHUNK}, {n})", start=chunk)
    a = k.nest.assign(k.program.local(), f"{k.ins[0]}[{index_str(lidx)}]")
    k.loops(rnames, rshape)
    k.put(f"{target} += {a} * {k.ins[1]}[{index_str(ridx)}]")
    k.close(len(rnames) + 1)
    k.loops(rnames, rshape)
    k.put(f"{totals}[{cell}], {comps}[{cell}] = {k.program.helper('comp_add')}("
          f"{totals}[{cell}], {comps}[{cell}], {target})")
    k.close(len(rnames) + 1 + len(knames) - 1)
    k.loops(rnames, rshape)
    k.put(f"{target} = {k.program.helper('comp_total')}({totals}[{cell}], {comps}[{cell}])")
    k.close(len(rnames))



def conv_window(k: Any, lhs_shape: tuple[int, ...], sp: list[str], ks: list[str]
                ) -> tuple[list[str], list[str]]:
    """Where output point sp and kernel point ks read a convolution's input: the conditions
    for reading inside it (padding, input dilation) and the input's spatial indices."""
    p = k.params
    conds, xidx = [], []
    for d in range(len(sp)):
        lo = p["padding"][d][0]
        pos = f"{sp[d]} * {p['window_strides'][d]} + {ks[d]} * {p['rhs_dilation'][d]} - {lo}"
        q = k.nest.assign(k.program.local(), pos)
        dil, n = p["lhs_dilation"][d], lhs_shape[2 + d]
        if dil == 1:
            conds.append(f"0 <= {q} < {n}")
            xidx.append(q)
        else:
            conds.append(f"{q} >= 0 and {q} % {dil} == 0 and {q} // {dil} < {n}")
            xidx.append(f"{q} // {dil}")
    return conds, xidx

def _conv_kernel(k: KernelCtx) -> None:
    """Direct convolution (cross-correlation) with strides, padding, dilations, groups."""
    lhs, rhs = (v.aval for v in k.node.inputs)
    out = k.node.outputs[0].aval
    p = k.params
    if out.size == 0:
        return
    nsp = lhs.ndim - 2
    groups = p["feature_group_count"]
    cin_g = lhs.shape[1] // groups
    cout_g = rhs.shape[0] // groups
    x, w, o = k.ins[0], k.ins[1], k.outs[0]
    sp = [f"i{2 + d}" for d in range(nsp)]
    ks = [f"i{2 + nsp + d}" for d in range(nsp)]
    flops = out.size * cin_g * int(np.prod(rhs.shape[2:], dtype=np.int64))
    k.loops(["i0", "i1"] + sp, [out.shape[0], out.shape[1]] + list(out.shape[2:]),
            k.work_is_large(flops))
    acc = k.nest.assign(k.program.local(), literal(0, out.dtype), depth=k.nest.depth)
    g = f"i1 // {cout_g}"
    cin = f"i{2 + 2 * nsp}"
    k.loops([cin] + ks, [cin_g] + list(rhs.shape[2:]))
    conds, xidx = conv_window(k, lhs.shape, sp, ks)
    k.put(f"if {' and '.join(conds)}:")
    k.put(f"    {acc} += {x}[i0, {g} * {cin_g} + {cin}, {', '.join(xidx)}] * "
          f"{w}[i1, {cin}, {', '.join(ks)}]")
    k.close(1 + nsp)
    k.put(f"{o}[i0, i1, {', '.join(sp)}] = {acc}")
    k.close(2 + nsp)


def _scan_kernel(op: str) -> Callable[[KernelCtx], None]:
    def kernel(k: KernelCtx) -> None:
        aval = k.node.inputs[0].aval
        axis, reverse = k.params["axis"], k.params["reverse"]
        if aval.size == 0:
            return
        others = [d for d in range(aval.ndim) if d != axis]
        k.loops([f"i{d}" for d in others], [aval.shape[d] for d in others],
                k.work_is_large(aval.size))
        # NumPy's running sum errs by up to n roundoffs; a compensated float64 one by one
        compensated = op == "+" and aval.dtype.kind == "f"
        init = "0.0" if compensated else literal(0 if op == "+" else 1, aval.dtype)
        acc = k.nest.assign(k.program.local(), init, depth=k.nest.depth)
        n = aval.shape[axis]
        if compensated:
            comp = k.nest.assign(k.program.local(), "0.0", "rounding errors",
                                 depth=k.nest.depth)
        k.nest.open(f"i{axis}", f"{n - 1}, -1, -1" if reverse else n)
        idx = index_str([f"i{d}" for d in range(aval.ndim)])
        if compensated:
            k.put(f"{acc}, {comp} = {k.program.helper('comp_add')}({acc}, {comp}, "
                  f"{k.ins[0]}[{idx}])")
            k.put(f"{k.outs[0]}[{idx}] = {k.program.helper('comp_total')}({acc}, {comp})")
            k.close(1 + len(others))
            return
        step = f"{acc} {op} {k.ins[0]}[{idx}]"
        if aval.dtype in NARROW_INTS:
            step = f"{ctor(aval.dtype)}({step})"
        k.put(f"{acc} = {step}")
        k.put(f"{k.outs[0]}[{idx}] = {acc}")
        k.close(1 + len(others))
    return kernel



def arg_scan(k: Any, which: str, at: Callable[[str], str], best: str, pos: str) -> None:
    """The loop of argmax/argmin along the kernel's axis from element 1: `best` and `pos`
    hold element 0 and its index; at(j) indexes the input at position j of the line."""
    aval = k.node.inputs[0].aval
    j, v = k.program.local(), k.program.local()
    k.nest.open(j, f"1, {aval.shape[k.params['axis']]}")
    better = ">" if which == "max" else "<"
    if aval.dtype.kind == "f":
        k.put(f"if {best} != {best}:")
        k.put("    break  # the first NaN wins, as in NumPy")
    k.put(f"{v} = {k.ins[0]}[{at(j)}]")
    nan = f" or {v} != {v}" if aval.dtype.kind == "f" else ""
    k.put(f"if {v} {better} {best}{nan}:")
    k.put(f"    {best} = {v}")
    k.put(f"    {pos} = {j}")
    k.close(1)

def _arg_kernel(which: str) -> Callable[[KernelCtx], None]:
    def kernel(k: KernelCtx) -> None:
        aval = k.node.inputs[0].aval
        axis = k.params["axis"]
        out_aval = k.node.outputs[0].aval
        if out_aval.size == 0:
            return
        others = [d for d in range(aval.ndim) if d != axis]
        k.loops([f"i{d}" for d in others], [aval.shape[d] for d in others],
                k.work_is_large(aval.size))
        at = lambda j: index_str([j if d == axis else f"i{d}" for d in range(aval.ndim)])  # noqa
        best = k.nest.assign(k.program.local(), f"{k.ins[0]}[{at('0')}]", depth=k.nest.depth)
        pos = k.nest.assign(k.program.local(), "0", depth=k.nest.depth)
        arg_scan(k, which, at, best, pos)
        out_idx = index_str([f"i{d}" for d in others])
        k.put(f"{k.outs[0]}[{out_idx}] = {pos}")
        k.close(len(others))
    return kernel


def _scatter_kernel(accumulate: bool) -> Callable[[KernelCtx], None]:
    def kernel(k: KernelCtx) -> None:
        x, idx, upd = (v.aval for v in k.node.inputs)
        axis = k.params["axis"]
        k.put(f"{k.outs[0]}[...] = {k.ins[0]}" if x.ndim else
              f"{k.outs[0]}[()] = {k.ins[0]}[()]")
        if upd.size == 0:
            return
        names = [f"i{d}" for d in range(upd.ndim)]
        k.loops(names, list(upd.shape))
        where = f"{k.ins[1]}[{index_str(names[axis:axis + idx.ndim])}]"
        j = k.nest.assign(k.program.local(),
                          f"{k.program.helper('take_index')}({where}, {x.shape[axis]})")
        target = names[:axis] + [j] + names[axis + idx.ndim:]
        op = "+=" if accumulate else "="
        k.put(f"{k.outs[0]}[{index_str(target)}] {op} {k.ins[2]}[{index_str(names)}]")
        k.close(upd.ndim)
    return kernel


# Linear algebra: one call of a runtime/cpu_kernels helper on (stack, n, n) views.


def _stack_view(name: str, aval: Any, trailing: int) -> str:
    """name reshaped to (stack,) + its trailing axes (the leading axes merged)."""
    lead = int(np.prod(aval.shape[:aval.ndim - trailing], dtype=np.int64))
    return f"{name}.reshape({(lead,) + tuple(aval.shape[aval.ndim - trailing:])!r})"


def _linalg_kernel(helper: str, in_trailing: tuple[int, ...], out_trailing: tuple[int, ...],
                   *flags: str) -> Callable[[KernelCtx], None]:
    """A kernel calling `helper(inputs..., outputs..., flags...)` on stacked views."""
    def kernel(k: KernelCtx) -> None:
        if 0 in k.node.inputs[0].aval.shape[:-2]:
            return  # an empty stack: nothing to compute
        args = [_stack_view(name, var.aval, t)
                for name, var, t in zip(k.ins, k.node.inputs, in_trailing)]
        args += [_stack_view(name, var.aval, t)
                 for name, var, t in zip(k.outs, k.node.outputs, out_trailing)]
        args += [repr(bool(k.params[f])) for f in flags]
        k.put(f"{k.program.helper(helper)}({', '.join(args)})  # LAPACK per matrix")
    return kernel


_rule("cholesky", kernel=_linalg_kernel("linalg_cholesky", (2,), (2,)))
_rule("solve", kernel=_linalg_kernel("linalg_solve", (2, 2), (2,)))
def _triangular_solve_kernel(k: KernelCtx) -> None:
    # BLAS trsm from NumPy's OpenBLAS is bound for real data; complex data solves the
    # triangle with LAPACK.
    complex_data = k.node.outputs[0].aval.dtype.kind == "c"
    helper = "linalg_triangular_solve_lapack" if complex_data else "linalg_triangular_solve"
    _linalg_kernel(helper, (2, 2), (2,), "lower", "transpose_a")(k)


_rule("triangular_solve", kernel=_triangular_solve_kernel)
_rule("slogdet", kernel=_linalg_kernel("linalg_slogdet", (2,), (0, 0)))
_rule("solve_by_cholesky", kernel=_linalg_kernel("linalg_solve_by_cholesky", (2, 2, 2), (2,),
                                                 "transpose_a"))
_rule("slogdet_by_cholesky", kernel=_linalg_kernel("linalg_slogdet_by_cholesky", (2, 2),
                                                   (0, 0)))
_rule("cholesky_inverse", kernel=_linalg_kernel("linalg_cholesky_inverse", (2, 1), (2,)))
_rule("eigh", kernel=_linalg_kernel("linalg_eigh", (2,), (1, 2)))
_rule("expm", kernel=_linalg_kernel("linalg_expm", (2,), (2,)))
_rule("qr", kernel=_linalg_kernel("linalg_qr", (2,), (2, 2)))
_rule("lu", kernel=_linalg_kernel("linalg_lu", (2,), (2, 1, 1)))


def _svd_kernel(k: KernelCtx) -> None:
    if k.params["compute_uv"]:
        _linalg_kernel("linalg_svd", (2,), (2, 1, 2), "full_matrices")(k)
    else:
        _linalg_kernel("linalg_singular_values", (2,), (1,))(k)


_rule("svd", kernel=_svd_kernel)


def _fft_kernel(k: KernelCtx) -> None:
    """The Fourier transform over the trailing axes: one pocketfft call (rocket-fft) on
    (stack, *lengths) views of the operand and the output (runtime/cpu_kernels.py)."""
    x, out = k.node.inputs[0].aval, k.node.outputs[0].aval
    if out.size == 0:
        return  # an empty stack (lengths are positive): nothing to compute
    trailing = len(k.params["fft_lengths"])
    args = f"{_stack_view(k.ins[0], x, trailing)}, {_stack_view(k.outs[0], out, trailing)}"
    fft_type = k.params["fft_type"]
    if fft_type in ("fft", "ifft"):
        call = f"{k.program.helper('fft_c2c')}({args}, {fft_type == 'fft'!r})"
    else:
        call = f"{k.program.helper('fft_' + ('r2c' if fft_type == 'rfft' else 'c2r'))}({args})"
    k.put(f"{call}  # pocketfft: {fft_type} over {trailing} trailing axes")


_rule("fft", kernel=_fft_kernel)


def _sort_kernel(k: KernelCtx) -> None:
    """Stable sort along the last axis (runtime/sort_kernels.py): each row's permutation by
    one merge sort per key, least significant first, then every operand gathered through it."""
    aval = k.node.inputs[0].aval
    if aval.size == 0:
        return
    rows, n = int(np.prod(aval.shape[:-1], dtype=np.int64)), aval.shape[-1]
    num_keys = k.params["num_keys"]
    views = [_stack_view(name, var.aval, 1) for name, var in zip(k.ins, k.node.inputs)]
    outs = [_stack_view(name, var.aval, 1) for name, var in zip(k.outs, k.node.outputs)]
    if k.params["permutation"]:
        perm = outs[-1]
    else:
        perm = k.nest.assign(k.program.local(), f"np.empty({(rows, n)!r}, np.int64)",
                             "the permutation (scratch)")
    for i in reversed(range(num_keys)):
        k.put(f"{k.program.helper('sort_rows_by')}({views[i]}, {perm}, {i == num_keys - 1})"
              f"  # merge sort by key {i}")
    for view, out in zip(views, outs):
        k.put(f"{k.program.helper('take_rows')}({view}, {perm}, {out})")


_rule("sort", kernel=_sort_kernel)
_rule("dot_general", kernel=_dot_general_kernel)
_rule("conv", kernel=_conv_kernel)
_rule("cumsum", kernel=_scan_kernel("+"))
_rule("cumprod", kernel=_scan_kernel("*"))
_rule("argmax", kernel=_arg_kernel("max"))
_rule("argmin", kernel=_arg_kernel("min"))
_rule("scatter_add", kernel=_scatter_kernel(True))
_rule("scatter", kernel=_scatter_kernel(False))
# Lowered by the driver (loop regions, contraction + epilogue), not by a rule of its own.
LOWERING_RULES[FUSED] = Rule()
# Lowered by the driver too: sub-graphs as functions, real loops and branches
# (compiler/lower_control.py).
for _name in CONTROL_FLOW:
    LOWERING_RULES[P[_name]] = Rule()

# ---------------------------------------------------------------------------------------
# The program: one entry point for the whole graph


@dataclass
class RegionReport:
    """What one region became: for tests and `jit(f).lower(x)`."""

    kind: str  # 'loop', 'kernel', 'view'
    primitives: list[str]
    loops: int = 0  # passes over the domain (phase loops) of a loop region
    input_passes: dict[int, int] = field(default_factory=dict)  # region input -> loops
    parallel: bool = False


@dataclass
class Program:
    """Generated source and how to call its entry point."""

    source: str
    entry: str
    arg_avals: list  # avals of the entry's array arguments: constants, then graph inputs
    const_args: list[np.ndarray]
    num_outputs: int
    parallel: bool
    regions: list[RegionReport]
    size_args: list[int] = field(default_factory=list)  # values of the entry's n0, n1, ...


class _ProgramState(ProgramBuilder):
    def __init__(self) -> None:
        super().__init__()
        self.math_names: set[str] = set()
        self.int_values: list[int] = []  # INT_ARGS: BLAS calls' arguments, end to end

    def math(self, name: str) -> str:
        self.math_names.add(name)
        return name

    def int_args(self, values: tuple[int, ...]) -> str:
        """A slice of the entry's int64 argument INT_ARGS holding values.

        Passed at run time rather than written into the source, because they hold sizes
        (BLAS's M, N, K, strides, batch counts): programs that differ only in sizes share
        one compiled kernel (compiler/size_params.py)."""
        start = len(self.int_values)
        self.int_values.extend(int(v) for v in values)
        return f"{INT_ARGS}[{start}:{len(self.int_values)}]"


def lower_program(graph: Graph, *, fastmath: bool = False, parallel: bool = True,
                  cache: bool = False, title: str = "") -> Program:
    """Source for one `@njit` entry point computing the fused graph's outputs."""
    return _Lowering(graph, fastmath, parallel).run(cache, title)


class _Lowering:
    def __init__(self, graph: Graph, fastmath: bool, parallel: bool):
        self.graph = graph
        self.fastmath = fastmath
        self.allow_parallel = parallel
        self.program = _ProgramState()
        self.region_count = 0
        self.cache = False
        self.names: dict[Var, str] = {}
        self.const_vars: list[Var] = []
        self.body: list[str | RegionBody] = []
        self.reports: list[RegionReport] = []
        self.buffers = _BufferPlan(graph)
        # Shared with the functions of control-flow sub-graphs (compiler/lower_control.py):
        self.root = self
        self.sizes = SizeParams()
        self.const_values: dict[Var, Any] = dict(graph.consts)
        self.functions: list[list[str]] = []  # their definitions, placed before the entry
        self.function_names: set[str] = set()
        self.function_keys: dict[str, Any] = {}  # their code -> the function (no duplicates)
        self.merged_nodes: set[int] = set()  # ids of scans run with a twin (scan_merge.py)

    def run(self, cache: bool, title: str) -> Program:
        self.cache = cache
        for i, v in enumerate(self.graph.inputs):
            self.names[v] = f"a{i}"
        for v in _top_level_consts(self.graph):
            self.names[v] = f"c{len(self.const_vars)}"
            self.const_vars.append(v)
        for step, node in enumerate(_flatten_contractions(self.graph.nodes)):
            self.step = step
            self.lower_node(node)
            self.buffers.release_after(node, step)
        ret = self.returns()
        consts = [np.ascontiguousarray(self.const_values[v]) for v in self.const_vars]
        fixed = [self.names[v] for v in self.const_vars]
        if self.program.int_values:
            consts.append(np.array(self.program.int_values, np.int64))
            fixed.append(INT_ARGS)
        sizes = self.sizes
        source = self.render(fixed, ret, cache, title, sizes)
        avals = [Aval(c.shape, c.dtype) for c in consts] + [v.aval for v in self.graph.inputs]
        return Program(source, "entry", avals, consts, len(self.graph.outputs),
                       self.program.uses_prange, self.reports, sizes.values)

    # -- nodes ---------------------------------------------------------------------------
    def lower_node(self, node: Node) -> None:
        if node.prim is FUSED and node.params["kind"] == "loop":
            self.lower_loop(node)
            return
        if node.prim is FUSED:
            raise CompileError(f"cannot lower a fused region of kind {node.params['kind']}")
        if node.prim.name in CONTROL_FLOW:
            from .lower_control import lower_control_flow

            lower_control_flow(self, node)
            return
        rule = LOWERING_RULES.get(node.prim)
        if rule is not None and rule.kernel is not None:
            self.lower_kernel(node, rule)
        elif rule is not None and (rule.point is not None or rule.reduce is not None):
            for part in fuse(_single_node_graph(node), enabled=False).nodes:
                self.lower_node(part)
        else:
            raise CompileError(
                f"the CPU backend has no lowering for primitive {node.prim.name}")

    def lower_kernel(self, node: Node, rule: Rule) -> None:
        views = node.prim.name in ("reshape", "squeeze", "expand_dims", "optimization_barrier")
        if views:
            outs = [self.buffers.alias(node.outputs[0], node.inputs[0], self.names)]
        elif node.prim.name == "copy":
            outs = [self.buffers.fresh_name(node.outputs[0])]
        else:
            outs = [self.allocate(v) for v in node.outputs]
        for v, name in zip(node.outputs, outs):
            self.names[v] = name
        self.comment(node, "kernel" if not views else "view")
        nest = LoopNest()
        ctx = KernelCtx(self.program, node, [self.names[v] for v in node.inputs], outs, nest,
                        self.allow_parallel)
        rule.kernel(ctx)
        while nest.depth:
            nest.close()
        body = nest.root.render(1)
        self.emit_region(body)
        self.reports.append(RegionReport("view" if views else "kernel", [node.prim.name],
                                         parallel=_is_parallel(body)))

    def lower_loop(self, node: Node) -> None:
        sub: Graph = node.params["graph"]
        try:
            nest, report = self._loop_source(node)
        except RegionSplit as e:
            if len(sub.nodes) == 1:
                raise CompileError(f"the CPU backend cannot lower {sub.nodes[0].prim.name}: "
                                   f"{e}") from None
            for part in fuse(sub, enabled=False).nodes:
                self.lower_node(part)
            return
        allocations, body = nest
        self.body.extend(allocations)
        self.emit_region(body)
        self.reports.append(report)

    def emit_region(self, body: list[str]) -> None:
        """A region's statements, placed in the entry point; at render time they stay
        inline or become a function (compiler/region_functions.py)."""
        self.body.append(RegionBody(body, parallel=_is_parallel(body)))

    def _loop_source(self, node: Node) -> tuple[tuple[list[str], list[str]], RegionReport]:
        sub: Graph = node.params["graph"]
        saved = self.program.counter, set(self.program.helpers), self.program.uses_prange
        saved_buffers = self.buffers.snapshot()
        try:
            out_names = {}
            allocations = [self.comment_text(node)]
            in_place = self._in_place_input(node)
            for v in sub.outputs:
                if in_place is not None:
                    name, alloc = self.buffers.write_over(v, in_place, self.names[in_place])
                else:
                    name, alloc = self.buffers.allocate(v)
                out_names[v] = name
                if alloc:
                    allocations.append(f"    {alloc}")
            inputs = {v: self.names[v] for v in sub.inputs}
            codegen = LoopRegionCodegen(self.program, LOWERING_RULES, node, inputs, out_names,
                                        allow_parallel=self.allow_parallel)
            block = codegen.generate()
        except RegionSplit:
            self.program.counter, self.program.helpers, self.program.uses_prange = saved
            self.buffers.restore(saved_buffers)
            raise
        self.names.update(out_names)
        lines = block.render(1)
        loops = codegen.n_loops
        passes = {i: len(codegen.loads_per_input.get(v, ())) for i, v in enumerate(sub.inputs)}
        report = RegionReport("loop", [n.prim.name for n in sub.nodes], loops, passes,
                              _is_parallel(lines))
        return (allocations, lines), report

    def _in_place_input(self, node: Node) -> Var | None:
        """An input buffer the region's single output may overwrite as it goes.

        Legal when the input dies here and is read only by elementwise nodes of an
        elementwise region (each point reads it before writing the same point): a bias
        and activation after a matmul then write into the matmul's result.
        """
        sub: Graph = node.params["graph"]
        domain = tuple(node.params["shape"])
        if node.params["reduce_axes"] or len(sub.outputs) != 1:
            return None
        out = sub.outputs[0]
        if out.aval.shape != domain:
            return None
        for v in sub.inputs:
            if v.aval != out.aval or not self.buffers.dies_at(v, self.step):
                continue
            readers = [n for n in sub.nodes if v in n.inputs]
            if all(fusion_class(n) == ELEMENTWISE and n.outputs[0].aval.shape == domain
                   for n in readers):
                return v
        return None

    def allocate(self, var: Var) -> str:
        name, alloc = self.buffers.allocate(var)
        if alloc:
            self.body.append(f"    {alloc}")
        return name

    # -- text ----------------------------------------------------------------------------
    def comment(self, node: Node, kind: str) -> None:
        self.body.append(self.comment_text(node, kind))

    def comment_text(self, node: Node, kind: str | None = None) -> str:
        self.region_count += 1
        n = self.region_count
        if node.prim is FUSED:
            sub = node.params["graph"]
            shape = node.params["shape"]
            axes = node.params["reduce_axes"]
            what = f"loop over {shape}" + (f", reducing axes {axes}" if axes else "")
            prims = ", ".join(x.prim.name for x in sub.nodes)
            where = _sources(sub.nodes)
        else:
            what, prims, where = kind, node.prim.name, _sources([node])
        text = f"    # -- region {n}: {what}: {prims}"
        if where:
            text += f"\n    #    from {where}"
        return text

    def returns(self) -> str:
        """Output expressions: fresh buffers, copied where they would alias another value."""
        names = []
        done: dict[Var, str] = {}
        seen_roots: set = set()
        written = {self.graph.inputs[i] for i in self.graph.mutated_inputs}
        for v in self.graph.outputs:
            if v in done or (v in self.graph.inputs and v not in written):
                # The same object twice, or an input returned as is (as the interpreter
                # does); an input that is written back after the call is copied first.
                names.append(done.get(v, self.names.get(v)))
                continue
            name = self.names[v]
            root = self.buffers.root_of(v)
            if not self.buffers.is_intermediate(root) or root in seen_roots:
                name = f"{name}.copy()"
            seen_roots.add(root)
            done[v] = name
            names.append(name)
        if len(names) == 1:
            return names[0]
        return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"

    def options(self, cache: bool) -> str:
        """The @njit options every function of the module shares."""
        return f'cache={cache}, error_model="numpy", fastmath={self.fastmath}'


    def guard(self) -> list[str]:
        """Checks that the arrays have the compiled shapes and C layout (Python's fast path
        calls the entry point without looking; a mismatch sends the call back to Python).

        The conditions are or-ed without short-circuits into one flag and raise at one
        place: each `raise` site is a block of exception code that Numba lowers and LLVM
        compiles, an eighth of a per-sample-gradient entry point when every array had one.
        """
        checks = []
        n = self.graph.num_explicit_inputs
        for v in self.graph.inputs[:n]:
            conds = _layout_conditions(self.names[v], v.aval)
            if conds:
                checks.append(" | ".join(f"({c})" for c in conds))
        if not checks:
            return []
        self.program.helper("SignatureMismatch")
        lines = ["    # -- the signature compiled for: other arrays go back to Python"]
        if len(checks) == 1:
            lines.append(f"    if {checks[0]}:")
        else:
            lines.append(f"    mismatch = {checks[0]}")
            lines += [f"    mismatch |= {c}" for c in checks[1:]]
            lines.append("    if mismatch:")
        lines.append("        raise SignatureMismatch()")
        return lines

    def render(self, fixed: list[str], ret: str, cache: bool, title: str,
               sizes: SizeParams) -> str:
        """The module's source; sizes collects the size parameters.

        The entry point takes what is fixed for a signature first — the constants, the
        int64 arguments INT_ARGS, the sizes — and then the graph's inputs, so a call is
        `functools.partial(entry, *fixed)(*inputs)` (runtime/executable.py)."""
        guard = [sizes.rewrite(line) for line in self.guard()]
        body = [_sized(item, sizes) for item in self.body]
        args = fixed + sizes.param_names() + [self.names[v] for v in self.graph.inputs]
        self.program.helpers |= self.buffers.helpers
        sig = [_numba_type(v.aval) for v in self.const_vars]
        if self.program.int_values:
            sig.append('nt.Array(nt.int64, 1, "C")')
        sig += ["nt.int64"] * len(sizes.values)
        sig += [_numba_type(v.aval) for v in self.graph.inputs]
        ins = ", ".join(str(v.aval) for v in self.graph.inputs)
        outs = ", ".join(str(v.aval) for v in self.graph.outputs)
        head = [
            f"# transfuse: CPU kernel for `{self.graph.name}` ({ins}) -> ({outs})",
            f"#   generated by transfuse {_version()} for numba {_numba_version()},"
            f" numpy {np.__version__}",
            "#   entry(constants..., sizes..., inputs...) runs every region below in order.",
        ]
        if sizes.values:
            head.append("#   sizes: " + ", ".join(
                f"{name}={value}" for value, name in sizes.names.items()))
        if title:
            head.append(f"#   {title}")
        imports = ["import numpy as np", "from numba import njit, prange",
                   "from numba import types as nt"]
        helpers = sorted(self.program.helpers - {"math"})
        if "math" in self.program.helpers:
            imports.insert(0, "import math")
        # scipy.special's functions come from their own module (it imports SciPy: 0.3 s)
        special = [h for h in helpers if h.startswith("special_")]
        helpers = [h for h in helpers if not h.startswith("special_")]
        if helpers:
            imports.append(f"from transfuse.runtime.cpu_kernels import {', '.join(helpers)}")
        if special:
            imports.append(
                f"from transfuse.runtime.special_functions import {', '.join(special)}")
        if self.program.math_names:
            imports.append("from transfuse.compiler.mathlib import math_globals")
            imports.append("_MATH = math_globals()")
            imports += [f"{n} = _MATH[{n!r}]" for n in sorted(self.program.math_names)]
        known = self.program.helpers | self.program.math_names | self.function_names
        statements, functions = share_regions(body, self.options(cache), known)
        statements, blocks = outline_repeats(statements, self.options(cache), known, ret)
        functions = self.functions + functions + blocks
        signature = ", ".join(sig) + ("," if sig else "")
        lines = head + [""] + imports + ["", f"SIGNATURE = ({signature})", "",
                                         ""] + [line for f in functions for line in f] + [
            f"@njit(SIGNATURE, {self.options(cache)})", f"def entry({', '.join(args)}):"]
        lines += guard + statements
        lines.append(f"    return {ret}")
        return "\n".join(lines) + "\n"


def _sized(item: str | RegionBody, sizes: SizeParams) -> str | RegionBody:
    """A statement or region body with its sizes made parameters."""
    if isinstance(item, RegionBody):
        return RegionBody([sizes.rewrite(line) for line in item.lines], item.parallel)
    return sizes.rewrite(item)


def _version() -> str:
    import transfuse

    return transfuse.__version__


def _numba_version() -> str:
    """Numba's version, read without importing Numba (lowering a kernel whose object code
    is cached does not import it: runtime/native_cache.py)."""
    from importlib.metadata import version

    return version("numba")


def _is_parallel(lines: list[str]) -> bool:
    return any("prange(" in line for line in lines)


def _sources(nodes: list[Node]) -> str:
    seen: list[str] = []
    for n in nodes:
        if n.source is not None and n.source.short() not in seen:
            seen.append(n.source.short())
    if len(seen) > 4:
        seen = seen[:4] + ["..."]
    return ", ".join(seen)


def _layout_conditions(name: str, aval) -> list[str]:
    """Conditions under which an array is not of aval's shape in C order.

    Strides are checked against the array's own extents, not as numbers, so the check
    reads the same for every size (the extents are compared with the compiled ones, which
    become size parameters): stride d must be the itemsize times the extents after d,
    except along an axis of extent 1 and in an empty array, where NumPy's strides say
    nothing about the layout."""
    if aval.ndim == 0:
        return []
    conds = [f"{name}.shape[{d}] != {n}" for d, n in enumerate(aval.shape)]
    strides = []
    for d in reversed(range(aval.ndim)):
        want = " * ".join([str(aval.dtype.itemsize)]
                          + [f"{name}.shape[{k}]" for k in range(d + 1, aval.ndim)])
        strides.append(f"(({name}.shape[{d}] > 1) & ({name}.strides[{d}] != {want}))")
    conds.append(f"({name}.size > 0) & ({' | '.join(strides)})")
    return conds


def _numba_type(aval) -> str:
    name = "boolean" if aval.dtype == np.bool_ else aval.dtype.name
    return f'nt.Array(nt.{name}, {aval.ndim}, "C")'


def _top_level_consts(graph: Graph) -> list[Var]:
    """Constants the entry point receives as arguments (scalars inside regions are inlined)."""
    used: list[Var] = []
    for node in graph.nodes:
        for v in node.inputs:
            if v in graph.consts and v not in used:
                used.append(v)
        if node.prim is FUSED and node.params["kind"] == "contraction":
            for inner in node.params["graph"].nodes:
                for v in inner.inputs:
                    if v in graph.consts and v not in used:
                        used.append(v)
    for v in graph.outputs:
        if v in graph.consts and v not in used:
            used.append(v)
    return used


def _flatten_contractions(nodes: list[Node]) -> list[Node]:
    """Top-level nodes with each contraction region replaced by its kernel and epilogue."""
    out = []
    for node in nodes:
        if node.prim is FUSED and node.params["kind"] == "contraction":
            out.extend(node.params["graph"].nodes)
        else:
            out.append(node)
    return out


def _single_node_graph(node: Node) -> Graph:
    return Graph(list(node.inputs), [node], list(node.outputs), name=node.prim.name)


# ---------------------------------------------------------------------------------------
# Buffers: allocate each value once, reuse a dead buffer of the same size and dtype


class _BufferPlan:
    """A simple memory plan: buffers die after their last reader and are reused."""

    def __init__(self, graph: Graph):
        self.graph = graph
        nodes = _flatten_contractions(graph.nodes)
        self.last_use: dict[Var, float] = {}
        for step, node in enumerate(nodes):
            for v in node.inputs:
                self.last_use[v] = step
        for v in graph.outputs:
            self.last_use[v] = math.inf
        self.root: dict[Var, Var] = {}  # a view's buffer owner
        self.root_end: dict[Var, float] = {}  # when the owner's buffer can be reused
        self.names: dict[Var, str] = {}
        self.free: dict[tuple, list[tuple[str, tuple]]] = {}  # (name, shape) by size
        self.count = 0
        self.helpers: set[str] = set()

    def root_of(self, var: Var) -> Var:
        return self.root.get(var, var)

    def is_intermediate(self, root: Var) -> bool:
        return root not in self.graph.inputs and root not in self.graph.consts

    def new_name(self) -> str:
        self.count += 1
        return f"b{self.count}"

    def fresh_name(self, var: Var) -> str:
        name = self.new_name()
        self.names[var] = name
        self.root_end[var] = self.last_use.get(var, -1)
        return name

    def allocate(self, var: Var) -> tuple[str, str]:
        """A buffer name for var and the statement that creates it."""
        aval = var.aval
        key = (aval.dtype.str, aval.size)
        name = self.new_name()
        self.names[var] = name
        self.root_end[var] = self.last_use.get(var, -1)
        if self.free.get(key):
            old, old_shape = self.free[key].pop()
            if tuple(old_shape) == tuple(aval.shape):
                return name, f"{name} = {old}  # reuses a dead buffer"
            return name, f"{name} = {old}.reshape({aval.shape!r})  # reuses a dead buffer"
        alloc = f"{name} = np.empty({aval.shape!r}, np.{aval.dtype.name})"
        if aval.size * aval.dtype.itemsize >= HUGE_PAGE_MIN_BYTES:
            self.helpers.add("advise_huge_pages")
            alloc += f"\n    advise_huge_pages({name})  # fewer page faults on first touch"
        return name, alloc

    def dies_at(self, var: Var, step: int) -> bool:
        """Whether var owns a buffer (not an input, constant or output) whose last reader
        runs at step."""
        return (self.root_of(var) is var and self.is_intermediate(var)
                and self.root_end.get(var) == step and var in self.names)

    def write_over(self, var: Var, dying: Var, dying_name: str) -> tuple[str, str]:
        """var's buffer is dying's: the region writes each point after reading it."""
        name = self.new_name()
        self.names[var] = name
        self.root[var] = dying
        self.root_end[dying] = max(self.root_end[dying], self.last_use.get(var, -1))
        return name, f"{name} = {dying_name}  # written in place"

    def snapshot(self) -> tuple:
        return (dict(self.names), dict(self.root_end), dict(self.root),
                {k: list(v) for k, v in self.free.items()}, self.count)

    def restore(self, state: tuple) -> None:
        names, root_end, root, free, self.count = state
        self.names, self.root_end, self.root, self.free = names, root_end, root, free

    def alias(self, view: Var, base: Var, names: dict[Var, str]) -> str:
        root = self.root_of(base)
        self.root[view] = root
        if root in self.root_end:
            self.root_end[root] = max(self.root_end[root], self.last_use.get(view, -1))
        name = self.new_name()
        self.names[view] = name
        return name

    def release_after(self, node: Node, step: int) -> None:
        """Buffers whose every reader has run become free for later values."""
        # A dict, not a set: Vars hash by address, so a set's order (and with it which
        # dead buffer a later value reuses, i.e. the generated source and its cache key)
        # would differ between processes. Graph order is the same in every process.
        candidates = dict.fromkeys(self.root_of(v) for v in [*node.inputs, *node.outputs])
        for root in candidates:
            end = self.root_end.get(root)
            if end is None or end > step or not self.is_intermediate(root):
                continue
            name = self.names.get(root)
            if name is not None:
                key = (root.aval.dtype.str, root.aval.size)
                self.free.setdefault(key, []).append((name, root.aval.shape))
            self.root_end[root] = math.inf  # released once


__all__ = ["LOWERING_RULES", "Program", "RegionReport", "lower_program"]
