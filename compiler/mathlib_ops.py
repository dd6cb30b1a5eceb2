"""The LLVM operations that compiler/mathlib.py's functions are written with.

Each `Op` is one instruction or LLVM intrinsic that the loop vectoriser widens (none has a
libm call behind it, but `llvm.fma` on a CPU without FMA): its IR, written by `codegen`
from an llvmlite builder and the LLVM values of its arguments, and the rule for its
operands' and result's types. Two compilers call them: Numba, through intrinsics made
from the ops (compiler/mathlib_numba.py), and the direct back end, which writes `codegen`'s
IR itself (compiler/lower_direct.py). Neither Numba nor llvmlite's binding is imported
here, so that the direct back end reads mathlib without paying for Numba's import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

__all__ = ["COPYSIGN", "DIV", "FABS", "FLOOR", "FMA", "FMA_EXACT", "HAS_FMA", "Op",
           "POLYVAL", "POW2", "RINT", "SELECT", "full_width", "target_features"]


def layout(lltype: ir.Type) -> tuple[ir.IntType, int, int]:
    """(same-width integer type, stored significand bits, exponent bias) of a float type."""
    if isinstance(lltype, ir.FloatType):
        return ir.IntType(32), 23, 127
    return ir.IntType(64), 52, 1023


def declare(builder: ir.IRBuilder, name: str, lltype: ir.Type, nargs: int) -> ir.Function:
    """The overloaded LLVM intrinsic `name` for `lltype`, taking `nargs` arguments."""
    suffix = "f32" if isinstance(lltype, ir.FloatType) else "f64"
    full = f"{name}.{suffix}"
    module = builder.module
    existing = module.globals.get(full)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(lltype, [lltype] * nargs), full)


def target_features() -> set[str]:
    """The features ("+avx2", ...) of the CPU kernels are compiled for: NUMBA_CPU_FEATURES
    when set (a cross-compile, for Numba's kernels and the direct back end's alike), else
    the host's."""
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if not features:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    return set(features.split(","))


def _target_vector_bits() -> int:
    """The widest vector registers of the target: 512 with AVX-512F, 256 with AVX."""
    flags = target_features()
    return 512 if "+avx512f" in flags else 256 if "+avx" in flags else 128


# Whether llvm.fma is an instruction (vectorises) rather than a libm call on the target.
HAS_FMA = "+fma" in target_features()

# LLVM's vectoriser uses 256-bit vectors on Intel's AVX-512 CPUs unless a function asks for
# more ("prefer-256-bit" tuning: lower clock speeds under heavy 512-bit use). Loops of
# mathlib's polynomials gain from twice the lanes, so each function that contains one is
# marked with the target's full width (a no-op on AVX2 and on AMD's AVX-512 CPUs).
_WIDTH_ATTRIBUTE = f'"prefer-vector-width"="{_target_vector_bits()}"'


def full_width(builder: ir.IRBuilder) -> None:
    """Ask LLVM to vectorise the function being built at the target's full width."""
    attributes = builder.function.attributes
    if _WIDTH_ATTRIBUTE not in attributes:
        set.add(attributes, _WIDTH_ATTRIBUTE)  # llvmlite's add() knows no string attributes


@dataclass(frozen=True, eq=False)
class Op:
    """An operation of mathlib's functions.

    operands: 'floats' (all of one float type), 'select' (a bool, then two values of one
    type) or 'polyval' (a float, then a tuple of coefficients of its type). result: 'same'
    (the type of the value operands) or 'int64'.
    """

    name: str
    nargs: int
    codegen: Callable[[ir.IRBuilder, list], ir.Value]
    operands: str = "floats"
    result: str = "same"

    def __call__(self, *args):
        raise TypeError(f"mathlib's {self.name} runs only in compiled code")


def _intrinsic_call(name: str, nargs: int) -> Callable[[ir.IRBuilder, list], ir.Value]:
    def codegen(builder: ir.IRBuilder, args: list) -> ir.Value:
        return builder.call(declare(builder, name, args[0].type, nargs), args)
    return codegen


# a*b + c, fused where the CPU has FMA (llvm.fmuladd), so either way it vectorises
FMA = Op("fma", 3, _intrinsic_call("llvm.fmuladd", 3))
# a*b + c with a single rounding on every CPU (llvm.fma: a libm call where there is no
# FMA instruction), for error-free products
FMA_EXACT = Op("fma_exact", 3, _intrinsic_call("llvm.fma", 3))
RINT = Op("rint", 1, _intrinsic_call("llvm.rint", 1))  # round to nearest, ties to even
FLOOR = Op("floor", 1, _intrinsic_call("llvm.floor", 1))
FABS = Op("fabs", 1, _intrinsic_call("llvm.fabs", 1))
COPYSIGN = Op("copysign", 2, _intrinsic_call("llvm.copysign", 2))

# a / b as a plain IEEE division: no ZeroDivisionError check, whatever the caller's error
# model (a checked division would add a branch that blocks vectorisation)
DIV = Op("div", 2, lambda b, args: b.fdiv(*args))


def _select(builder: ir.IRBuilder, args: list) -> ir.Value:
    full_width(builder)
    return builder.select(*args)


# `a if cond else b` as one LLVM select: no branch for the vectoriser to if-convert (Numba
# lowers conditional expressions to branches, which LLVM does not always flatten once
# several inlined functions nest them)
SELECT = Op("select", 3, _select, operands="select")


# Integer <-> float conversions go through the bits of 2**mbits + k, the float whose low
# significand bits are the integer k: AVX2 has no vector conversion for 64-bit integers.

def _pow2(builder: ir.IRBuilder, args: list) -> ir.Value:
    inttype, mbits, bias = layout(args[0].type)
    magic = ir.Constant(args[0].type, float(2**mbits + bias))
    biased = builder.bitcast(builder.fadd(args[0], magic), inttype)  # n + bias, low bits
    return builder.bitcast(builder.shl(biased, ir.Constant(inttype, mbits)), args[0].type)


def _exponent(builder: ir.IRBuilder, args: list) -> ir.Value:
    inttype, mbits, bias = layout(args[0].type)
    bits = builder.lshr(builder.bitcast(args[0], inttype), ir.Constant(inttype, mbits))
    bits = builder.and_(bits, ir.Constant(inttype, 2 * bias + 1))
    bits = builder.or_(bits, ir.Constant(inttype, (bias + mbits) << mbits))
    magic = ir.Constant(args[0].type, float(2**mbits + bias))
    return builder.fsub(builder.bitcast(bits, args[0].type), magic)


def _significand(builder: ir.IRBuilder, args: list) -> ir.Value:
    inttype, mbits, bias = layout(args[0].type)
    bits = builder.and_(builder.bitcast(args[0], inttype), ir.Constant(inttype, (1 << mbits) - 1))
    bits = builder.or_(bits, ir.Constant(inttype, bias << mbits))
    return builder.bitcast(bits, args[0].type)


def _biased_exponent(builder: ir.IRBuilder, args: list) -> ir.Value:
    inttype, mbits, bias = layout(args[0].type)
    bits = builder.lshr(builder.bitcast(args[0], inttype), ir.Constant(inttype, mbits))
    bits = builder.and_(bits, ir.Constant(inttype, 2 * bias + 1))
    return builder.zext(bits, ir.IntType(64)) if inttype.width < 64 else bits


def _integer_significand(builder: ir.IRBuilder, args: list) -> ir.Value:
    inttype, mbits, bias = layout(args[0].type)
    bits = builder.and_(builder.bitcast(args[0], inttype), ir.Constant(inttype, (1 << mbits) - 1))
    bits = builder.or_(bits, ir.Constant(inttype, (bias + mbits) << mbits))
    return builder.bitcast(bits, args[0].type)


def _polyval(builder: ir.IRBuilder, args: list) -> ir.Value:
    t, coeffs = args
    full_width(builder)
    fma = declare(builder, "llvm.fmuladd", t.type, 3)
    count = coeffs.type.count
    acc = builder.extract_value(coeffs, count - 1)
    for k in range(count - 2, -1, -1):
        acc = builder.call(fma, [acc, t, builder.extract_value(coeffs, k)])
    return acc


# 2**n for a float n holding an integer in the normal exponent range, built from bits
POW2 = Op("pow2", 1, _pow2)
# the unbiased binary exponent of a positive normal x, as a float
EXPONENT = Op("exponent", 1, _exponent)
# x with its exponent replaced by 0: the significand of a normal x, in [1, 2)
SIGNIFICAND = Op("significand", 1, _significand)
# the stored (biased) exponent field of x, as an int64 table index
BIASED_EXPONENT = Op("biased_exponent", 1, _biased_exponent, result="int64")
# The significand of a normal |x| as an integer-valued float M (hidden bit included):
# |x| = M * 2**(biased exponent - bias - stored significand bits). Built by giving the
# stored fraction the exponent that makes its last bit worth 1: no int-to-float
# conversion, which AVX2 lacks for 64-bit integers.
INTEGER_SIGNIFICAND = Op("integer_significand", 1, _integer_significand)
# c[0] + c[1]*t + c[2]*t**2 + ... by Horner's rule with fused multiply-adds
POLYVAL = Op("polyval", 2, _polyval, operands="polyval")
