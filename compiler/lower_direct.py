"""The direct back end: a generated CPU kernel translated to LLVM IR without Numba.

compiler/lower_cpu.py writes a kernel as Python source for Numba: an `entry` that checks
its arguments, allocates buffers and runs loop regions, and the region functions it
calls. Numba's front end (typing, its Python-level lowering) costs seconds on such a
module and grows faster than the program (docs/decisions.md). This module reads the same
source text and writes LLVM IR for it directly — every type is known, so there is nothing
to infer — while keeping one rule body per primitive: the point rules, mathlib's
functions and the scalar helpers are the Python that Numba compiles, translated here by
walking their syntax tree.

What it takes is a subset of Python (`Unsupported` names whatever lies outside it, and
the caller then compiles the kernel through Numba as before):

- scalars of bool, int32, int64, float32 and float64 with Numba's typing rules (a Python
  float is float64, int32 arithmetic widens to int64, int / int is float64);
- expressions, conditional expressions and `and`/`or` with Python's laziness (a load in
  the branch not taken is not executed), `for` over `range`/`prange`, `if`, assignments;
- C-ordered arrays: loads, stores, row views, leading-axis slices, reshapes, scratch
  buffers (`np.empty`, `np.zeros`, `np.full`: malloc'd and freed with their loop body);
- calls of mathlib's functions (plain Python over compiler/mathlib_ops.py's operations,
  which write their own IR), of plain helpers (inlined from their source), of libm, and
  of the helpers only Numba compiles through explicit rules (compiler/direct_helpers.py).

The entry's own bookkeeping — the signature guard, `np.empty`, the returned arrays — is
not compiled (its `advise_huge_pages` calls are dropped: NumPy's allocator asks for huge
pages itself): it becomes a `Plan` that runtime/direct.py carries out
in Python around calls of the compiled steps. Each step is an exported function
`i64 step_k(i64 *ints, PyObject *arrays, i64 lo, i64 hi)`: `ints` holds the entry's
integer arguments, `arrays` is a tuple of every array the steps use (the entry's and the
buffers), whose data and extents the step reads from NumPy's array struct; the first
step returns 1 where the arrays are not what it was compiled for. A step that is a
parallel region runs blocks [lo, hi) of its `prange`, whose length `extent_k(ints,
arrays)` returns; a kernel without one also exports `run_steps`, a CPython builtin that
runs every step. docs/compiler.md, "The direct back end".
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import math
import operator
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from llvmlite import ir

from .direct_plan import Plan, numpy_openblas, object_offsets
from .direct_regions import (
    REGION_LINKAGE,
    REGION_PLACEHOLDER,
    name_region,
    outline_loops,
    region_module,
    share_helpers,
)
from .mathlib_ops import Op
from .step_liveness import live_names

__all__ = ["DirectModule", "Plan", "Unsupported", "translate"]

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
I8P = I8.as_pointer()
LLVM_TYPES = {np.dtype(np.bool_): I1, np.dtype(np.int32): I32, np.dtype(np.int64): I64,
              np.dtype(np.float32): F32, np.dtype(np.float64): F64}
BOOL, INT32, INT64 = np.dtype(np.bool_), np.dtype(np.int32), np.dtype(np.int64)
FLOAT32, FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


class Unsupported(Exception):
    """The kernel uses something the direct back end does not translate."""


OFFSETS = object_offsets() or {}  # where the steps read arrays: compiler/direct_plan.py


# ---------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class Scalar:
    """A run-time value: its LLVM value (bool as i1) and NumPy dtype."""

    value: ir.Value
    dtype: np.dtype


@dataclass(frozen=True)
class Array:
    """A C-ordered array: a typed data pointer and its extents (i64 values)."""

    ptr: ir.Value
    dtype: np.dtype
    shape: tuple


@dataclass(frozen=True)
class Function:
    """Python source to inline at a call: its definition and the names it sees."""

    node: ast.FunctionDef
    lookup: Callable[[str], Any]  # a free name -> its value
    shared: bool = False  # a region function of the kernel: one LLVM function, called


@dataclass(frozen=True)
class HelperRule:
    """An explicit rule for a helper that only Numba compiles (compiler/direct_helpers.py):
    emit(emitter, args) writes its IR and returns its value."""

    name: str
    emit: Callable[[Any, list], Any]


@dataclass
class Slot:
    """A local variable: stack memory that LLVM promotes to registers."""

    ptr: ir.Value
    dtype: np.dtype


def scalar_dtype(value: Any) -> np.dtype:
    """Numba's type of a Python constant (a Python float is float64, an int int64)."""
    if isinstance(value, (bool, np.bool_)):
        return BOOL
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.generic):
        return INT64
    if isinstance(value, float) and not isinstance(value, np.generic):
        return FLOAT64
    if isinstance(value, np.generic) and value.dtype in LLVM_TYPES:
        return value.dtype
    raise Unsupported(f"a constant of type {type(value).__name__}")


def is_constant(value: Any) -> bool:
    return isinstance(value, (bool, int, float, np.generic))


def promote(a: np.dtype, b: np.dtype) -> np.dtype:
    """The type of an arithmetic operation's result, by Numba's rules."""
    if a.kind == "f" or b.kind == "f":
        if a.kind != "f" or b.kind != "f":
            return FLOAT64  # int and float: float64, as Numba
        return FLOAT64 if FLOAT64 in (a, b) else FLOAT32
    return INT64  # bool and ints widen to the machine integer


@dataclass
class DirectModule:
    """LLVM IR for a kernel's steps, and the plan that calls them."""

    ir: str
    plan: Plan
    libm: bool  # whether the code calls libm (link with -lm)
    # the region functions `ir` declares: symbol -> the text of its own module
    # (compiler/direct_regions.py; runtime/direct_regions.py compiles each once)
    regions: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Reading the generated module


_KNOWN_IMPORTS = {"numpy": np, "math": math}
_BUILTINS = {"min": min, "max": max, "abs": abs, "range": range, "prange": range,
             "bool": bool, "int": int, "float": float, "type": type}
_IGNORED_MODULES = ("numba",)
_PLAN_HELPERS = {"layout_mismatch", "SignatureMismatch", "advise_huge_pages"}


def translate(source: str, on_region: Callable[[str, str], None] | None = None
              ) -> DirectModule:
    """The LLVM IR and plan of a generated CPU kernel module; Unsupported if it uses
    anything outside the subset. `on_region(symbol, text)` is told of each region module
    as soon as it is written (runtime/direct.py starts compiling it while the rest is
    translated)."""
    if not OFFSETS:
        raise Unsupported("this Python's object layout is not the one the steps read")
    tree = ast.parse(source)
    module_env: dict[str, Any] = {}
    functions: dict[str, tuple[ast.FunctionDef, bool]] = {}
    entry = None
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            _import(stmt, module_env)
        elif isinstance(stmt, ast.ImportFrom):
            _import_from(stmt, module_env)
        elif isinstance(stmt, ast.Assign):
            _module_assign(stmt, module_env)
        elif isinstance(stmt, ast.FunctionDef):
            parallel = _check_decorators(stmt)
            if stmt.name == "entry":
                entry = stmt
            else:
                functions[stmt.name] = (stmt, parallel)
        else:
            raise Unsupported(f"a module-level {type(stmt).__name__}")
    if entry is None:
        raise Unsupported("no entry function")

    def lookup(name: str) -> Any:
        if name in functions:
            return Function(functions[name][0], lookup, shared=True)
        if name in module_env:
            module_env[name] = _resolve(module_env[name])
            return module_env[name]
        if name in _BUILTINS:
            return _BUILTINS[name]
        raise Unsupported(f"the name {name!r}")

    if "SIGNATURE" not in module_env:
        raise Unsupported("no signature")
    return _EntryTranslator(entry, module_env["SIGNATURE"], functions, lookup,
                            on_region).run()


def _import(stmt: ast.Import, env: dict) -> None:
    for alias in stmt.names:
        if alias.name not in _KNOWN_IMPORTS:
            raise Unsupported(f"import {alias.name}")
        env[alias.asname or alias.name] = _KNOWN_IMPORTS[alias.name]


def _import_from(stmt: ast.ImportFrom, env: dict) -> None:
    if stmt.module.split(".")[0] in _IGNORED_MODULES:
        return  # njit, prange and the signature's types: read by name below
    if not stmt.module.startswith("transfuse."):
        raise Unsupported(f"from {stmt.module} import ...")
    for alias in stmt.names:
        name = alias.name
        env[alias.asname or name] = name if name in _PLAN_HELPERS else _Lazy(stmt.module, name)


@dataclass(frozen=True)
class _Lazy:
    """An imported name, imported when a step uses it (cpu_kernels imports SciPy's FFT
    and Numba: half a second that a kernel of plain arithmetic need not pay)."""

    module: str
    name: str

    def resolve(self) -> Any:
        if (self.module, self.name) == ("transfuse.compiler.mathlib", "math_globals"):
            # mathlib's plain functions: its Numba versions would import Numba
            return importlib.import_module(self.module).plain_globals
        if self.module == "transfuse.runtime.cpu_kernels":
            rule = _explicit_rule(self.module, self.name)
            if rule is not None:
                return rule
            # Its scalar helpers are scalar_bodies' functions compiled by njit: the same
            # Python, from a module that does not import SciPy.
            bodies = importlib.import_module("transfuse.runtime.scalar_bodies")
            if inspect.isfunction(getattr(bodies, self.name, None)):
                return getattr(bodies, self.name)
        return getattr(importlib.import_module(self.module), self.name)


def _module_assign(stmt: ast.Assign, env: dict) -> None:
    """`_MATH = math_globals()`, `tf_exp_f32 = _MATH['tf_exp_f32']`; the signature is
    the plan's business."""
    target = stmt.targets[0]
    if not isinstance(target, ast.Name) or len(stmt.targets) != 1:
        raise Unsupported("a module-level assignment to something other than a name")
    value = stmt.value
    if target.id == "SIGNATURE":
        env["SIGNATURE"] = _signature(value)
        return
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and not value.args:
        env[target.id] = _Call(env[value.func.id])
    elif (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
          and isinstance(value.slice, ast.Constant)):
        env[target.id] = _Item(env[value.value.id], value.slice.value)
    else:
        raise Unsupported(f"the module-level assignment to {target.id}")


@dataclass(frozen=True)
class _Call:
    """`name()` at module level, called when first used."""

    fn: Any

    def resolve(self) -> Any:
        return _resolve(self.fn)()


@dataclass(frozen=True)
class _Item:
    """`name[key]` at module level, looked up when first used."""

    container: Any
    key: Any

    def resolve(self) -> Any:
        return _resolve(self.container)[self.key]


def _explicit_rule(module: str, name: str) -> HelperRule | None:
    """compiler/direct_helpers.py's rule for a runtime/cpu_kernels helper that only Numba
    compiles (an overload, intrinsics, a reassociating function), wherever it is named:
    in a generated kernel's imports or inside another helper."""
    if module != "transfuse.runtime.cpu_kernels":
        return None
    from .direct_helpers import HELPER_RULES  # (it imports this module)

    return HELPER_RULES.get(name)


def _resolve(value: Any) -> Any:
    return value.resolve() if isinstance(value, (_Lazy, _Call, _Item)) else value


def _signature(node: ast.AST) -> list[tuple[np.dtype, int] | None]:
    """The entry's argument types from `SIGNATURE = (nt.int64, nt.Array(nt.float32, 2,
    "C"), ...)`: (dtype, ndim) for an array, None for an int64."""
    if not isinstance(node, ast.Tuple):
        raise Unsupported("the signature")
    out = []
    for item in node.elts:
        text = ast.unparse(item)
        if text == "nt.int64":
            out.append(None)
            continue
        if not (isinstance(item, ast.Call) and ast.unparse(item.func) == "nt.Array"
                and len(item.args) == 3 and ast.unparse(item.args[2]) in ("'C'", '"C"')):
            raise Unsupported(f"the argument type {text}")
        name = ast.unparse(item.args[0]).removeprefix("nt.")
        dtype = np.dtype("bool" if name == "boolean" else name)
        if dtype not in LLVM_TYPES:
            raise Unsupported(f"a {dtype} argument")
        out.append((dtype, item.args[1].value))
    return out


def _check_decorators(fn: ast.FunctionDef) -> bool:
    """Whether a generated function runs in parallel; Unsupported for fastmath."""
    parallel = False
    for deco in fn.decorator_list:
        if not isinstance(deco, ast.Call):
            continue
        for kw in deco.keywords:
            if kw.arg == "fastmath" and not (isinstance(kw.value, ast.Constant)
                                              and kw.value.value is False):
                raise Unsupported("fastmath")
            if kw.arg == "parallel" and isinstance(kw.value, ast.Constant):
                parallel = bool(kw.value.value)
    return parallel


# ---------------------------------------------------------------------------------------
# The entry: plan statements and compiled steps


def _name(node: ast.AST) -> str:
    if not isinstance(node, ast.Name):
        raise Unsupported(f"{ast.unparse(node)} where a name was expected")
    return node.id


def _extents(node: ast.AST) -> list:
    """A shape tuple of the entry (ints and size names), or `x.size` (a flat view's)."""
    if isinstance(node, ast.Attribute) and node.attr == "size":
        return [f"{_name(node.value)}.size"]
    if not isinstance(node, ast.Tuple):
        raise Unsupported(f"the shape {ast.unparse(node)}")
    out = []
    for e in node.elts:
        if isinstance(e, ast.Constant) and isinstance(e.value, int):
            out.append(e.value)
        else:
            out.append(_name(e))
    return out


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id
    return None


class _EntryTranslator:
    """Splits the entry into plan statements and steps, and compiles the steps."""

    def __init__(self, entry: ast.FunctionDef, signature: list, functions: dict,
                 lookup: Callable, on_region: Callable[[str, str], None] | None = None):
        self.entry = entry
        self.signature = signature
        self.functions = functions
        self.lookup = lookup
        self.plan = Plan()
        self.module = ir.Module(name="transfuse_direct")
        self.module.triple = ""  # the target machine's, set when compiled
        self.arrays: dict[str, tuple[np.dtype, int]] = {}  # name -> (dtype, ndim)
        self.emitter = Emitter(self.module, on_region)

    def run(self) -> DirectModule:
        self._params()
        serial: list[ast.stmt] = []
        for stmt in _rename_rebound(_expand_blocks(self.entry.body, self.functions)):
            if self._plan_statement(stmt):
                continue
            name = _call_name(stmt.value) if isinstance(stmt, ast.Expr) else None
            if name in self.functions and self.functions[name][1]:
                self._flush(serial)
                self._parallel_step(stmt.value)
            elif name == "gemm_batched" and self._batches_gemm():
                self._flush(serial)
                self._gemm_step(stmt.value)
            else:
                serial.append(stmt)
        self._flush(serial)
        self.plan.slots = list(self.arrays)
        self.plan.ints = [n for n, kind in self.plan.params if kind == "int"]
        if self.emitter.uses_blas:
            self.plan.libraries = [numpy_openblas()]
        self.plan.externals = list(self.emitter.externals)
        if any(dead in self.plan.param_dtypes and extents is not None
               for _, extents, _, dead in self.plan.allocs):
            # A reshape of an argument (`b1 = a0.reshape((n0, n1))`) runs in the Python
            # entry before the steps, and raises for an argument of another size: the
            # entry checks the arguments first (fuzz finding 16)
            self.plan.guard_compiled = False
        self.plan.errors = list(self.emitter.errors)
        if self.plan.steps and all(extent is None for _, extent in self.plan.steps) \
                and not self.plan.errors:  # (run_steps answers a mismatch only)
            self._python_entry()
        return DirectModule(str(self.module), self.plan, self.emitter.uses_libm,
                            self.emitter.regions)

    def _python_entry(self) -> None:
        """`run_steps`, a CPython function (METH_FASTCALL) that runs every step of a
        kernel without parallel steps: `run_steps(ints, arrays)` with `ints` an int64
        ndarray, True for a signature mismatch. A ctypes call costs 0.9 µs, a builtin
        function's 0.1: this is most of a small call's time (docs/compiler.md)."""
        module = self.module
        fn = ir.Function(module, ir.FunctionType(I8P, [I8P, I8P.as_pointer(), I64]),
                         "run_steps")
        fn.attributes.add("nounwind")
        b = ir.IRBuilder(fn.append_basic_block("start"))
        _, args, _ = fn.args
        ints_obj = b.load(args, typ=I8P)
        arrays = b.load(b.gep(args, [ir.Constant(I64, 1)], source_etype=I8P), typ=I8P)
        at = b.gep(ints_obj, [ir.Constant(I64, OFFSETS["array_data"])], source_etype=I8)
        ints = b.load(b.bitcast(at, I64.as_pointer().as_pointer()), typ=I64.as_pointer())
        step_type = ir.FunctionType(I64, [I64.as_pointer(), I8P, I64, I64])
        zero = ir.Constant(I64, 0)
        mismatch = b.call(module.globals[self.plan.steps[0][0]], [ints, arrays, zero, zero])

        def answer(name: str) -> None:
            obj = module.globals.get(name) or ir.GlobalVariable(module, I8, name)
            count = b.bitcast(obj, I64.as_pointer())  # ob_refcnt: a new reference
            b.store(b.add(b.load(count, typ=I64), ir.Constant(I64, 1)), count)
            b.ret(b.bitcast(obj, I8P))
        with b.if_then(b.icmp_signed("!=", mismatch, zero)):
            answer("_Py_TrueStruct")
        for name, _ in self.plan.steps[1:]:
            callee = module.globals[name]
            assert callee.function_type == step_type
            b.call(callee, [ints, arrays, zero, zero])
        answer("_Py_FalseStruct")
        self.plan.python_entry = True

    def _params(self) -> None:
        names = [a.arg for a in self.entry.args.args]
        if len(names) != len(self.signature):
            raise Unsupported("the signature does not match the entry's arguments")
        for name, kind in zip(names, self.signature):
            if kind is None:
                self.plan.params.append((name, "int"))
            else:
                self.plan.params.append((name, "array"))
                self.plan.param_dtypes[name] = kind[0].name
                self.plan.param_ndims[name] = kind[1]
                self.arrays[name] = kind
                if kind[1] == 0:  # no guard line in the source (Numba's wrapper checks
                    # ranks): without this, an array of another rank would be read as 0-d
                    self.plan.guard.append((name, []))

    # -- plan statements ---------------------------------------------------------------
    def _plan_statement(self, stmt: ast.stmt) -> bool:
        """Record a guard, allocation, advice or return; False for anything else."""
        if isinstance(stmt, (ast.Assign, ast.AugAssign)):
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
            value = stmt.value
            if isinstance(target, ast.Name) and target.id == "mismatch":
                self._guard(value)
                return True
            if isinstance(stmt, ast.Assign) and isinstance(value, ast.Name) \
                    and isinstance(target, ast.Name) \
                    and value.id in self.arrays:  # `b11 = b5  # reuses a dead buffer`
                self.plan.allocs.append((_name(target), None, None, value.id))
                self.arrays[_name(target)] = self.arrays[value.id]
                return True
            if (isinstance(stmt, ast.Assign) and isinstance(value, ast.Call)
                    and isinstance(value.func, ast.Attribute) and value.func.attr == "copy"
                    and not value.args and isinstance(value.func.value, ast.Name)
                    and value.func.value.id in self.plan.param_dtypes):
                # `b1 = a0.copy()` of an argument (which no step changes): made up front
                source = value.func.value.id
                self.plan.allocs.append((_name(target), None, "copy", source))
                self.arrays[_name(target)] = self.arrays[source]
                return True
            if isinstance(stmt, ast.Assign) and isinstance(value, ast.Call):
                if (isinstance(value.func, ast.Attribute) and value.func.attr == "empty"
                        and _name(value.func.value) == "np"):
                    self._alloc(_name(target), value.args[0], value.args[1], None)
                    return True
                if isinstance(value.func, ast.Attribute) and value.func.attr == "reshape":
                    dead = _name(value.func.value)
                    dtype = self.arrays[dead][0] if dead in self.arrays else None
                    if dtype is None:
                        raise Unsupported(f"a reshape of {dead}")
                    self._alloc(_name(target), value.args[0], None, dead)
                    return True
            return False
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Name) \
                and stmt.test.id == "mismatch":
            return True  # the guard's raise: runtime/direct.py raises SignatureMismatch
        if isinstance(stmt, ast.Expr) and _call_name(stmt.value) == "advise_huge_pages":
            # The entry's buffers come from NumPy's allocator, which asks for huge pages
            # for large ones itself, as its setting says (NUMPY_MADVISE_HUGEPAGE); asking
            # again would only override a user who turned it off.
            return True
        if isinstance(stmt, ast.Return):
            self._returns(stmt.value)
            return True
        return False

    def _guard(self, call: ast.AST) -> None:
        if _call_name(call) != "layout_mismatch":
            raise Unsupported(f"the guard {ast.unparse(call)}")
        array = _name(call.args[0].value)
        self.plan.guard.append((array, _extents(call.args[3])))

    def _alloc(self, name: str, shape: ast.AST, dtype: ast.AST | None, dead: str | None
               ) -> None:
        if dtype is not None:
            if not (isinstance(dtype, ast.Attribute) and _name(dtype.value) == "np"):
                raise Unsupported(f"the dtype {ast.unparse(dtype)}")
            dt = np.dtype("bool" if dtype.attr in ("bool", "bool_") else dtype.attr)
        else:
            dt = self.arrays[dead][0]
        if dt not in LLVM_TYPES:
            raise Unsupported(f"a {dt} buffer")
        extents = _extents(shape)
        self.plan.allocs.append((name, extents, dt.name, dead))
        self.arrays[name] = (dt, len(extents))

    def _returns(self, value: ast.AST) -> None:
        items = value.elts if isinstance(value, ast.Tuple) else [value]
        self.plan.returns_tuple = isinstance(value, ast.Tuple)
        for item in items:
            copy = False
            if (isinstance(item, ast.Call) and isinstance(item.func, ast.Attribute)
                    and item.func.attr == "copy" and not item.args):
                item, copy = item.func.value, True
            if _name(item) not in self.arrays:
                raise Unsupported(f"returning {ast.unparse(item)}")
            self.plan.returns.append((_name(item), copy))

    # -- steps -------------------------------------------------------------------------
    def _flush(self, serial: list[ast.stmt]) -> None:
        if not serial:
            return
        body = outline_loops(list(serial), self._kind_of, self._define_loop)
        serial.clear()
        name = f"step_{len(self.plan.steps)}"
        pieces = _pieces(body)
        if len(pieces) > 1:
            for k, piece in enumerate(pieces):
                with self.emitter.step(f"{name}_part{k}", self, kind="part") as scope:
                    self.emitter.block(piece, scope)
        with self.emitter.step(name, self) as scope:
            if not self.plan.steps and self.plan.guard:  # the first step checks the arrays
                self.emitter.guard(self.plan.guard, scope)
                self.plan.guard_compiled = True
            if len(pieces) > 1:
                for k in range(len(pieces)):
                    self.emitter.call_part(f"{name}_part{k}")
            else:
                self.emitter.block(body, scope)
        self.plan.steps.append((name, None))

    def _kind_of(self, name: str) -> str:
        """'entry' (an array or int of the entry), 'global' (the module's) or 'local'."""
        if name in self.arrays or (name, "int") in self.plan.params:  # (array params too)
            return "entry"
        try:
            self.lookup(name)
        except Unsupported:
            return "local"
        return "global"

    def _define_loop(self, fn: ast.FunctionDef) -> str:
        """Register an outlined loop nest as a region function; its name."""
        fn.name = f"loop{len(self.functions)}"
        self.functions[fn.name] = (fn, False)
        return fn.name

    def _parallel_step(self, call: ast.Call) -> None:
        """A parallel region function: its prange runs blocks [lo, hi)."""
        fn, _ = self.functions[call.func.id]
        body = fn.body
        loops = [s for s in body if isinstance(s, ast.For)]
        if (len(body) != 1 or not loops or _call_name(loops[0].iter) != "prange"):
            raise Unsupported(f"the parallel region {fn.name} is not one prange loop")
        name = f"step_{len(self.plan.steps)}"
        extent = f"extent_{len(self.plan.steps)}"
        with self.emitter.step(name, self) as scope:
            args = [self.emitter.expr(a, scope) for a in call.args]
            self.emitter.call_shared(Function(fn, self.lookup), args, block_range=True)
        with self.emitter.step(extent, self, kind="extent") as scope:
            inner = self.emitter.bind_args(Function(fn, self.lookup), call.args, scope)
            (bound,) = loops[0].iter.args
            n = self.emitter.to_int(self.emitter.expr(bound, inner))
            self.emitter.builder.ret(n.value)
        self.plan.steps.append((name, extent))

    def _batches_gemm(self) -> bool:
        """Whether `gemm_batched` is runtime/cpu_kernels' and NumPy's OpenBLAS can run a
        thread's products on one BLAS thread."""
        from .direct_helpers import HELPER_RULES, batched_gemm_available

        try:
            helper = self.lookup("gemm_batched")
        except Unsupported:
            return False
        return helper is HELPER_RULES["gemm_batched"] and batched_gemm_available()

    def _gemm_step(self, call: ast.Call) -> None:
        """A gemm_batched call as a parallel step over its products: each block's run on
        one BLAS thread (compiler/direct_helpers.py, emit_gemm_block)."""
        from .direct_helpers import emit_gemm_block, emit_gemm_extent

        name = f"step_{len(self.plan.steps)}"
        extent = f"extent_{len(self.plan.steps)}"
        with self.emitter.step(name, self) as scope:
            args = [self.emitter.expr(a, scope) for a in call.args]
            emit_gemm_block(self.emitter, args, *self.emitter.block_range())
        with self.emitter.step(extent, self, kind="extent") as scope:
            emit_gemm_extent(self.emitter, [self.emitter.expr(a, scope) for a in call.args])
        self.plan.steps.append((name, extent))


def _expand_blocks(body: list[ast.stmt], functions: dict) -> list[ast.stmt]:
    """The entry's statements with calls of outlined blocks (compiler/repeated_blocks.py:
    functions that allocate buffers and return them) written out in place, their names
    made unique per call: their allocations become the plan's, their region calls steps.
    Region functions that only compute stay calls."""
    out: list[ast.stmt] = []
    for stmt in body:
        call = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
        name = _call_name(call) if call is not None else None
        if name not in functions or functions[name][1] or not _is_block(functions[name][0]):
            out.append(stmt)  # (a parallel region allocating scratch rows is no block)
            continue
        fn = functions[name][0]
        number = len(out)
        inlined = _inline_block(fn, call.args, number)
        returned = inlined.pop() if inlined and isinstance(inlined[-1], ast.Return) else None
        out += _expand_blocks(inlined, functions)
        if isinstance(stmt, ast.Assign):
            if returned is None:
                raise Unsupported(f"{name} returns nothing")
            targets = stmt.targets[0]
            names = targets.elts if isinstance(targets, ast.Tuple) else [targets]
            values = returned.value.elts if isinstance(returned.value, ast.Tuple) \
                else [returned.value]
            if len(names) != len(values):
                raise Unsupported(f"unpacking {name}'s results")
            out += [ast.Assign([t], v, lineno=0) for t, v in zip(names, values)]
    return out


def _rename_rebound(body: list[ast.stmt]) -> list[ast.stmt]:
    """The entry's statements with every name that an assignment binds a second time
    renamed from there on (`rb1 = np.empty((n1,))` in one region and again in the next,
    another shape): the plan allocates all buffers up front and the steps find each by
    its name, so one name must be one array."""
    current: dict[str, str] = {}  # name -> the name it has from here on
    seen: set[str] = set()
    out = []
    for stmt in body:
        if not isinstance(stmt, ast.Assign):
            out.append(_clone(stmt, {}, current) if current else stmt)
            continue
        value = _clone(stmt.value, {}, current) if current else stmt.value
        targets = []
        for target in stmt.targets:
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            for name in names:
                if isinstance(name, ast.Name):
                    if name.id in seen:
                        current[name.id] = f"{name.id}_r{len(out)}"
                    seen.add(name.id)
            targets.append(_clone(target, {}, current) if current else target)
        out.append(ast.Assign(targets, value, lineno=0))
    return out


@functools.cache
def _is_block(fn: ast.FunctionDef) -> bool:
    return any(isinstance(n, ast.Return) for n in ast.walk(fn)) or any(
        isinstance(n, ast.Attribute) and n.attr in ("empty", "reshape") for n in ast.walk(fn))


@functools.cache
def _stored_names(fn: ast.FunctionDef) -> frozenset[str]:
    return frozenset(n.id for n in ast.walk(fn) if isinstance(n, ast.Name)
                     and isinstance(n.ctx, ast.Store))


def _inline_block(fn: ast.FunctionDef, args: list[ast.expr], number: int) -> list[ast.stmt]:
    """fn's statements with its parameters replaced by the call's arguments and its own
    names suffixed with the call's number."""
    params = [a.arg for a in fn.args.args]
    if len(params) != len(args):
        raise Unsupported(f"{fn.name} called with {len(args)} arguments")
    binding = dict(zip(params, args))
    stored = _stored_names(fn)
    if stored & set(params):
        raise Unsupported(f"{fn.name} assigns to a parameter")
    renamed = {name: f"{name}_b{number}" for name in stored}
    return [_clone(s, binding, renamed) for s in fn.body]


def _clone(node: Any, binding: dict[str, ast.expr], renamed: dict[str, str]) -> Any:
    """A copy of a syntax tree with parameters bound and local names renamed."""
    if isinstance(node, ast.Name):
        if node.id in binding:
            return _clone(binding[node.id], {}, {})
        return ast.Name(renamed.get(node.id, node.id), node.ctx)
    if isinstance(node, ast.AST):
        new = node.__class__.__new__(node.__class__)
        for name in node._fields:
            setattr(new, name, _clone(getattr(node, name, None), binding, renamed))
        return new
    if isinstance(node, list):
        return [_clone(item, binding, renamed) for item in node]
    return node


PIECE_NODES = 2000  # syntax-tree nodes of a serial step's piece (see _pieces)


def _pieces(body: list[ast.stmt]) -> list[list[ast.stmt]]:
    """A long serial step cut into pieces of about PIECE_NODES syntax nodes, each compiled
    as a function of its own: LLVM's optimisation time grows faster than a function's
    size (the unrolled RK4 gradient of 10 steps spent 7.8 s in one function). A cut is
    made only where no name assigned before it is live after it (entry names are not
    assigned in steps: each piece loads those itself)."""
    live = live_names(body)
    pieces, current, size, assigned = [], [], 0, set()
    for k, stmt in enumerate(body):
        if current and size >= PIECE_NODES and not (assigned & live[k]):
            pieces.append(current)
            current, size, assigned = [], 0, set()
        current.append(stmt)
        size += sum(1 for _ in ast.walk(stmt))
        assigned |= {n.id for n in ast.walk(stmt)
                     if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    pieces.append(current)
    return pieces


# ---------------------------------------------------------------------------------------
# Scopes


class Scope:
    """The names of one function body being emitted (an inlined call gets its own)."""

    def __init__(self, lookup: Callable[[str], Any]):
        self.vars: dict[str, Any] = {}
        self.lookup = lookup

    def get(self, name: str) -> Any:
        if name in self.vars:
            return self.vars[name]
        return self.lookup(name)


@dataclass(frozen=True)
class _Reshape:
    """`x.reshape`, to be called."""

    array: Array


class _EntryScope(Scope):
    """The entry's own names, loaded on first use in each function."""

    def __init__(self, lookup: Callable[[str], Any], where: dict[str, tuple],
                 emitter: Emitter):
        super().__init__(lookup)
        self.where = where
        self.emitter = emitter

    def get(self, name: str) -> Any:
        if name not in self.vars and name in self.where:
            self.vars[name] = self.emitter.load_param(self.where[name])
        return super().get(name)


class _Return(Exception):
    """Raised inside an inlined body at its `return` (which must be its last statement)."""


# ---------------------------------------------------------------------------------------
# The emitter


_FLOAT_COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
                  ast.GtE: ">="}
_PY_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv,
              ast.Mod: operator.mod, ast.Pow: operator.pow, ast.BitAnd: operator.and_,
              ast.BitOr: operator.or_, ast.BitXor: operator.xor,
              ast.LShift: operator.lshift, ast.RShift: operator.rshift}
_PY_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
               ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
# libm functions behind NumPy's and math's scalar calls (Numba calls the same ones)
_LIBM = {"exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan",
         "tanh": "tanh", "sinh": "sinh", "cosh": "cosh", "arcsin": "asin",
         "arccos": "acos", "arctan": "atan", "arcsinh": "asinh", "arccosh": "acosh",
         "arctanh": "atanh", "expm1": "expm1", "log1p": "log1p", "erf": "erf",
         "asin": "asin", "acos": "acos", "atan": "atan", "asinh": "asinh",
         "acosh": "acosh", "atanh": "atanh"}
_LLVM_UNARY = {"sqrt": "llvm.sqrt", "floor": "llvm.floor", "ceil": "llvm.ceil",
               "fabs": "llvm.fabs"}


class Emitter:
    """Writes LLVM IR for statements and expressions of the subset."""

    def __init__(self, module: ir.Module, on_region: Callable[[str, str], None] | None = None):
        self.module = module
        self.on_region = on_region
        self.builder: ir.IRBuilder | None = None
        self.uses_libm = False
        self.uses_blas = False  # a gemm rule's calls: NumPy's OpenBLAS is loaded first
        self.externals: list[tuple[str, str, str]] = []  # Plan.externals
        self.errors: list[str] = []  # Plan.errors: status 2 + k raises IndexError(errors[k])
        self._frees_base = 0  # the current function's first level of _frees
        self._globals: dict[int, ir.GlobalVariable] = {}
        self._trees: dict[Any, ast.FunctionDef] = {}
        self._shared: dict[tuple, ir.Function] = {}  # (name, kinds) -> function
        self._nested: dict[tuple, ir.Function] = {}  # the same, in a region's module
        self._region_module: ir.Module | None = None  # while a region function is written
        self.regions: dict[str, str] = {}  # DirectModule.regions
        self._frees: list[list[ir.Value]] = []  # malloc'd buffers per open loop body
        self._loops: list[tuple[ir.Block, ir.Block]] = []  # (next trip, end) of open loops
        self._translator: _EntryTranslator | None = None
        self._ints: ir.Value | None = None
        self._arrays: ir.Value | None = None
        self._lo: ir.Value | None = None
        self._hi: ir.Value | None = None
        self._alloca_block: ir.Block | None = None
        self._params_block: ir.Block | None = None
        self._first_block: ir.Block | None = None  # where `locals` goes: guard or params

    # -- functions ---------------------------------------------------------------------
    def step(self, name: str, translator: _EntryTranslator, kind: str = "step"):
        return _StepContext(self, name, translator, kind)

    def entry_scope(self, translator: _EntryTranslator) -> Scope:
        """The entry's names: int params read from `ints`, arrays from the tuple `arrays`
        (each an ndarray, whose data and extents are read from NumPy's struct), each
        loaded where a function first uses it (a program of a thousand buffers cut into
        a hundred functions must not load them all in each)."""
        plan = translator.plan
        where: dict[str, tuple] = {}
        for k, name in enumerate(n for n, kind in plan.params if kind == "int"):
            where[name] = ("int", k)
        for slot, (name, (dtype, ndim)) in enumerate(translator.arrays.items()):
            where[name] = ("array", slot, dtype, ndim)
        return _EntryScope(translator.lookup, where, self)

    def block_range(self) -> tuple[ir.Value, ir.Value]:
        """The [lo, hi) a parallel step's function is called with."""
        return self._lo, self._hi

    def load_int(self, index: int) -> ir.Value:
        """The entry's int argument `index`, loaded here."""
        b = self.builder
        return b.load(b.gep(self._ints, [ir.Constant(I64, index)], source_etype=I64),
                      typ=I64)

    def load_param(self, spec: tuple) -> Scalar | Array:
        """An entry name's value, loaded in the function's `params` block (after the
        guard, before the body)."""
        b = self.builder
        with b.goto_block(self._params_block):
            if spec[0] == "int":
                ptr = b.gep(self._ints, [ir.Constant(I64, spec[1])], source_etype=I64)
                return Scalar(b.load(ptr, typ=I64), INT64)
            _, slot, dtype, ndim = spec
            item = self._tuple_item(slot)
            data = self._field(item, OFFSETS["array_data"], I8P)
            dims = b.bitcast(self._field(item, OFFSETS["array_dims"], I8P), I64.as_pointer())
            ptr = b.bitcast(data, _memory_type(dtype).as_pointer())
            shape = tuple(b.load(b.gep(dims, [ir.Constant(I64, k)], source_etype=I64),
                                 typ=I64) for k in range(ndim))
            return Array(ptr, dtype, shape)

    def guard(self, guard: list[tuple[str, list]], scope: Scope) -> None:
        """Return 1 unless every guarded array has its compiled rank, extents and C
        layout and is aligned (runtime/cpu_kernels.py layout_mismatch's rules: strides
        along extents of 1, and in an empty array, are not looked at). Done here rather
        than in the Python entry: it saves a third of a small call's time."""
        b = self.builder
        body_start = b.block
        b.position_at_end(b.function.append_basic_block("guard"))
        self._first_block = b.block  # runs before `params` loads any array's fields
        bad = self.alloca(BOOL)
        b.store(ir.Constant(I1, 0), bad)
        for name, extents in guard:
            item = self._tuple_item(scope.where[name][1])
            nd = b.load(b.bitcast(b.gep(item, [ir.Constant(I64, OFFSETS["array_nd"])],
                                        source_etype=I8), I32.as_pointer()), typ=I32)
            rank_ok = b.icmp_signed("==", nd, ir.Constant(I32, len(extents)))
            with b.if_else(rank_ok) as (same_rank, other_rank):
                with same_rank:
                    b.store(b.or_(b.load(bad, typ=I1),
                                  self._layout_wrong(item, scope, name, extents)), bad)
                with other_rank:
                    b.store(ir.Constant(I1, 1), bad)
        with b.if_then(b.load(bad, typ=I1)):
            b.ret(ir.Constant(I64, 1))
        b.branch(self._params_block)
        b.position_at_end(body_start)

    def _layout_wrong(self, item: ir.Value, scope: Scope, name: str, extents: list
                      ) -> ir.Value:
        b = self.builder
        dtype = scope.where[name][2]
        itemsize = np.dtype(dtype).itemsize
        dims = b.bitcast(self._field(item, OFFSETS["array_dims"], I8P), I64.as_pointer())
        strides = b.bitcast(self._field(item, OFFSETS["array_strides"], I8P),
                            I64.as_pointer())
        data = b.ptrtoint(self._field(item, OFFSETS["array_data"], I8P), I64)
        wrong = b.icmp_unsigned("!=", b.and_(data, ir.Constant(I64, itemsize - 1)),
                                ir.Constant(I64, 0))
        size = ir.Constant(I64, 1)
        extent_values = []
        for k, want in enumerate(extents):
            extent = b.load(b.gep(dims, [ir.Constant(I64, k)], source_etype=I64), typ=I64)
            want_value = (self.load_int(scope.where[want][1]) if isinstance(want, str)
                          else ir.Constant(I64, want))
            wrong = b.or_(wrong, b.icmp_signed("!=", extent, want_value))
            size = b.mul(size, extent)
            extent_values.append(extent)
        step = ir.Constant(I64, itemsize)
        strided = ir.Constant(I1, 0)
        for k in range(len(extents) - 1, -1, -1):
            stride = b.load(b.gep(strides, [ir.Constant(I64, k)], source_etype=I64), typ=I64)
            moves = b.icmp_signed(">", extent_values[k], ir.Constant(I64, 1))
            strided = b.or_(strided, b.and_(moves, b.icmp_signed("!=", stride, step)))
            step = b.mul(step, extent_values[k])
        nonempty = b.icmp_signed("!=", size, ir.Constant(I64, 0))
        return b.or_(wrong, b.and_(nonempty, strided))

    def _tuple_item(self, slot: int) -> ir.Value:
        return self._field(self._arrays, OFFSETS["tuple_items"] + 8 * slot, I8P)

    def _field(self, obj: ir.Value, offset: int, lltype: ir.Type) -> ir.Value:
        """The value of type lltype at a byte offset into a Python object."""
        b = self.builder
        at = b.gep(obj, [ir.Constant(I64, offset)], source_etype=I8)
        return b.load(b.bitcast(at, lltype.as_pointer()), typ=lltype)

    def call_part(self, name: str) -> None:
        """Call an internal function of the module with this function's ints and arrays."""
        fn = self.module.globals[name]
        self.pass_up(self.builder.call(fn, [self._ints, self._arrays]))

    def alloca(self, dtype: np.dtype) -> ir.Value:
        """Stack memory in the function's first block (so that LLVM promotes it)."""
        b = self.builder
        with b.goto_block(self._alloca_block):
            return b.alloca(LLVM_TYPES[dtype])

    # -- statements --------------------------------------------------------------------
    def block(self, body: list[ast.stmt], scope: Scope) -> None:
        for stmt in body:
            self.statement(stmt, scope)

    def statement(self, stmt: ast.stmt, scope: Scope) -> None:
        if isinstance(stmt, ast.Assign):
            value = self.expr(stmt.value, scope)
            for target in stmt.targets:
                self.assign(target, value, scope)
        elif isinstance(stmt, ast.AugAssign):
            current = self.expr(stmt.target, scope)  # expr_* ignore the context
            value = self.binop(type(stmt.op), current, self.expr(stmt.value, scope))
            self.assign(stmt.target, value, scope)
        elif isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                return  # a docstring
            self.expr(stmt.value, scope)
        elif isinstance(stmt, ast.For):
            self.for_loop(stmt, scope)
        elif isinstance(stmt, ast.If):
            self.if_statement(stmt, scope)
        elif isinstance(stmt, ast.Pass):
            pass
        elif isinstance(stmt, ast.While):
            self.while_loop(stmt, scope)
        elif isinstance(stmt, (ast.Break, ast.Continue)):
            self.jump(stmt)
        elif isinstance(stmt, ast.Raise):
            self.raise_statement(stmt)
        elif isinstance(stmt, ast.Return):
            scope.vars["<return>"] = (self.expr(stmt.value, scope)
                                      if stmt.value is not None else None)
            raise _Return()
        else:
            raise Unsupported(f"a {type(stmt).__name__} statement")

    def assign(self, target: ast.AST, value: Any, scope: Scope) -> None:
        if isinstance(target, ast.Tuple):
            if not isinstance(value, tuple) or len(value) != len(target.elts):
                raise Unsupported("unpacking something other than a tuple of its size")
            for t, v in zip(target.elts, value):
                self.assign(t, v, scope)
            return
        if isinstance(target, ast.Subscript):
            self.store(target, value, scope)
            return
        name = _name(target)
        old = scope.vars.get(name)
        if is_constant(value):
            value = self.constant(value)
        if isinstance(value, Scalar):
            if isinstance(old, Slot):
                if old.dtype != value.dtype:
                    raise Unsupported(f"{name} changes type ({old.dtype} to {value.dtype})")
            elif old is not None:
                raise Unsupported(f"{name} rebound from an array or tuple to a scalar")
            else:
                old = scope.vars[name] = Slot(self.alloca(value.dtype), value.dtype)
            self.builder.store(value.value, old.ptr)
        else:
            if isinstance(old, Slot):
                raise Unsupported(f"{name} rebound from a scalar")
            scope.vars[name] = value

    def for_loop(self, stmt: ast.For, scope: Scope, bounds: tuple | None = None) -> None:
        if stmt.orelse:
            raise Unsupported("for ... else")
        if bounds is None:
            fn = _call_name(stmt.iter)
            if fn not in ("range", "prange") or stmt.iter.keywords:
                raise Unsupported(f"a loop over {ast.unparse(stmt.iter)}")
            args = [self.to_int(self.expr(a, scope)) for a in stmt.iter.args]
            step = self.constant(1)
            if len(args) == 1:
                start, stop = self.constant(0), args[0]
            elif len(args) in (2, 3):
                start, stop = args[:2]
                step = args[2] if len(args) == 3 else step
            else:
                raise Unsupported("range of more than three arguments")
        else:
            (start, stop), step = bounds, self.constant(1)
        b = self.builder
        var = _name(stmt.target)
        slot = Slot(self.alloca(INT64), INT64)
        scope.vars[var] = slot
        b.store(start.value, slot.ptr)
        head = b.append_basic_block(f"for_{var}")
        body = b.append_basic_block(f"body_{var}")
        latch = b.append_basic_block(f"next_{var}")
        done = b.append_basic_block(f"end_{var}")
        b.branch(head)
        b.position_at_end(head)
        i = b.load(slot.ptr, typ=I64)
        if isinstance(step.value, ir.Constant) and step.value.constant == 1:
            more = b.icmp_signed("<", i, stop.value)
        else:  # Python's range: up to stop for a positive step, down to it for a negative
            upward = b.icmp_signed(">", step.value, ir.Constant(I64, 0))
            more = b.select(upward, b.icmp_signed("<", i, stop.value),
                            b.icmp_signed(">", i, stop.value))
        b.cbranch(more, body, done)
        b.position_at_end(body)
        self._frees.append([])
        self._loops.append((latch, done))
        self.block(stmt.body, scope)
        self._loops.pop()
        self.free_scope()
        b.branch(latch)
        b.position_at_end(latch)
        i = b.load(slot.ptr, typ=I64)
        b.store(b.add(i, step.value), slot.ptr)
        b.branch(head)
        b.position_at_end(done)

    def while_loop(self, stmt: ast.While, scope: Scope) -> None:
        if stmt.orelse:
            raise Unsupported("while ... else")
        b = self.builder
        head, body, done = (b.append_basic_block(n) for n in ("while", "while_body",
                                                               "while_end"))
        b.branch(head)
        b.position_at_end(head)
        test = self.to_bool(self.expr(stmt.test, scope))
        if isinstance(test, bool):
            raise Unsupported("a while loop on a constant")
        b.cbranch(test.value, body, done)
        b.position_at_end(body)
        self._frees.append([])
        self._loops.append((head, done))
        self.block(stmt.body, scope)
        self._loops.pop()
        self.free_scope()
        b.branch(head)
        b.position_at_end(done)

    def jump(self, stmt: ast.stmt) -> None:
        """break / continue: the loop's buffers freed, then to its end or next trip."""
        if not self._loops:
            raise Unsupported(f"{type(stmt).__name__.lower()} outside a loop")
        b = self.builder
        self.free(self._frees[-1])
        next_trip, end = self._loops[-1]
        b.branch(end if isinstance(stmt, ast.Break) else next_trip)
        b.position_at_end(b.append_basic_block("after_jump"))  # unreachable

    def raise_statement(self, stmt: ast.Raise) -> None:
        """`raise IndexError("...")` (take_index's): the function frees what it allocated
        and returns status 2 + the message's number, which every caller passes up and the
        entry raises (runtime/direct.py). Numba raises it from the same place."""
        exc = stmt.exc
        if (stmt.cause is not None or not isinstance(exc, ast.Call) or exc.keywords
                or not isinstance(exc.func, ast.Name) or exc.func.id != "IndexError"
                or len(exc.args) != 1 or not isinstance(exc.args[0], ast.Constant)
                or not isinstance(exc.args[0].value, str)):
            raise Unsupported(f"raising other than IndexError('...'): {ast.unparse(stmt)}")
        message = exc.args[0].value
        if message not in self.errors:
            self.errors.append(message)
        self.leave(ir.Constant(I64, 2 + self.errors.index(message)))
        b = self.builder
        b.position_at_end(b.append_basic_block("after_raise"))  # unreachable

    def leave(self, status: ir.Value) -> None:
        """Free every buffer the function has open, and return `status`."""
        for level in self._frees[self._frees_base:]:
            self.free(level)
        self.builder.ret(status)

    def pass_up(self, status: ir.Value) -> None:
        """After a call of a part or region function: leave with its status if not 0."""
        with self.builder.if_then(self.builder.icmp_signed("!=", status, ir.Constant(I64, 0)),
                                  likely=False):
            self.leave(status)

    def prange_loop(self, stmt: ast.For, scope: Scope) -> None:
        """The region's prange over blocks [lo, min(hi, n))."""
        (bound,) = stmt.iter.args
        n = self.to_int(self.expr(bound, scope))
        hi = Scalar(self.builder.select(self.builder.icmp_signed("<", self._hi, n.value),
                                        self._hi, n.value), INT64)
        self.for_loop(stmt, scope, bounds=(Scalar(self._lo, INT64), hi))

    def if_statement(self, stmt: ast.If, scope: Scope) -> None:
        cond = self.to_bool(self.expr(stmt.test, scope))
        b = self.builder
        if isinstance(cond, bool):  # decided while translating
            self.block(stmt.body if cond else stmt.orelse, scope)
            return
        with b.if_else(cond.value) as (then, otherwise):
            with then:
                self.block(stmt.body, scope)
            with otherwise:
                self.block(stmt.orelse, scope)

    def store(self, target: ast.Subscript, value: Any, scope: Scope) -> None:
        array = self.expr(target.value, scope)
        if not isinstance(array, Array):
            raise Unsupported(f"a store into {ast.unparse(target.value)}")
        if isinstance(target.slice, ast.Constant) and target.slice.value is Ellipsis:
            self.fill(array, value)
            return
        ptr, rest = self.element(array, target.slice, scope)
        if rest:
            raise Unsupported("a store of a whole row")
        value = self.cast(self.as_scalar(value), array.dtype)
        self.builder.store(_to_memory(self.builder, value), ptr)

    def fill(self, array: Array, value: Any) -> None:
        """`b[...] = a` of an array of b's shape (a scatter's operand: the kernel's own
        shapes make them equal), or of a scalar: element by element, cast to b's dtype."""
        if isinstance(value, Array) and len(value.shape) != len(array.shape):
            raise Unsupported("b[...] = a of another rank")
        from .direct_helpers import count_loop  # (it imports this module)

        b = self.builder
        scalar = None if isinstance(value, Array) else self.as_scalar(value)

        def element(i: ir.Value) -> None:
            x = scalar
            if x is None:
                raw = b.load(b.gep(value.ptr, [i], source_etype=_memory_type(value.dtype)))
                x = _from_memory(b, raw, value.dtype)
            b.store(_to_memory(b, self.cast(x, array.dtype)),
                    b.gep(array.ptr, [i], source_etype=_memory_type(array.dtype)))
        count_loop(b, self._size(array), element)

    # -- expressions -------------------------------------------------------------------
    def expr(self, node: ast.AST, scope: Scope) -> Any:
        method = getattr(self, f"expr_{type(node).__name__}", None)
        if method is None:
            raise Unsupported(f"the expression {ast.unparse(node)}")
        return method(node, scope)

    def expr_Constant(self, node: ast.Constant, scope: Scope) -> Any:
        return node.value

    def expr_Name(self, node: ast.Name, scope: Scope) -> Any:
        value = scope.get(node.id)
        if isinstance(value, Slot):
            return Scalar(self.builder.load(value.ptr, typ=LLVM_TYPES[value.dtype]),
                          value.dtype)
        return value

    def expr_Tuple(self, node: ast.Tuple, scope: Scope) -> tuple:
        return tuple(self.expr(e, scope) for e in node.elts)

    def expr_Attribute(self, node: ast.Attribute, scope: Scope) -> Any:
        base = self.expr(node.value, scope)
        if isinstance(base, Array):
            if node.attr == "shape":
                return tuple(Scalar(v, INT64) for v in base.shape)
            if node.attr == "size":
                return Scalar(self._size(base), INT64)
            if node.attr == "reshape":
                return _Reshape(base)
            raise Unsupported(f"the array attribute {node.attr}")
        if isinstance(base, Scalar):
            if node.attr == "real" and base.dtype.kind == "f":
                return base
            raise Unsupported(f"the scalar attribute {node.attr}")
        if base is np or base is math:
            return getattr(base, node.attr)
        raise Unsupported(f"the attribute {ast.unparse(node)}")

    def expr_Subscript(self, node: ast.Subscript, scope: Scope) -> Any:
        base = self.expr(node.value, scope)
        if isinstance(base, tuple):
            index = self.expr(node.slice, scope)
            if not isinstance(index, int):
                raise Unsupported("a tuple indexed at run time")
            return base[index]
        if isinstance(base, np.ndarray):
            return self.table_load(base, self.expr(node.slice, scope))
        if not isinstance(base, Array):
            raise Unsupported(f"indexing {ast.unparse(node.value)}")
        if isinstance(node.slice, ast.Slice):
            return self.leading_slice(base, node.slice, scope)
        ptr, rest = self.element(base, node.slice, scope)
        if rest:
            return Array(ptr, base.dtype, rest)
        raw = self.builder.load(ptr, typ=_memory_type(base.dtype))
        return _from_memory(self.builder, raw, base.dtype)

    def leading_slice(self, array: Array, part: ast.Slice, scope: Scope) -> Array:
        """array[start:stop] along its first axis (a C-ordered view), the bounds clipped
        to [0, extent] as Python does; steps and negative bounds are not taken."""
        if part.step is not None or not array.shape:
            raise Unsupported("a slice with a step, or of a 0-d array")
        b = self.builder
        extent = array.shape[0]

        def bound(node: ast.AST | None, default: ir.Value) -> ir.Value:
            if node is None:
                return default
            value = self.expr(node, scope)
            if is_constant(value) and value < 0:
                raise Unsupported("a negative slice bound")
            value = self.to_int(value).value
            value = b.select(b.icmp_signed("<", value, extent), value, extent)
            zero = ir.Constant(I64, 0)
            return b.select(b.icmp_signed("<", value, zero), zero, value)
        start = bound(part.lower, ir.Constant(I64, 0))
        stop = bound(part.upper, extent)
        stop = b.select(b.icmp_signed("<", stop, start), start, stop)
        row = ir.Constant(I64, 1)
        for inner in array.shape[1:]:
            row = b.mul(row, inner)
        ptr = b.gep(array.ptr, [b.mul(start, row)], source_etype=_memory_type(array.dtype))
        return Array(ptr, array.dtype, (b.sub(stop, start), *array.shape[1:]))

    def element(self, array: Array, index: ast.AST, scope: Scope) -> tuple[ir.Value, tuple]:
        """(pointer to the indexed element or row, the extents left)."""
        items = index.elts if isinstance(index, ast.Tuple) else [index]
        while items and _whole_axis(items[-1]):  # `a[i, :]` is the row `a[i]`
            items = items[:-1]
        if len(items) > len(array.shape):
            raise Unsupported("more indices than dimensions")
        b = self.builder
        offset = ir.Constant(I64, 0)
        stride = ir.Constant(I64, 1)
        strides = []
        for extent in reversed(array.shape):
            strides.append(stride)
            stride = b.mul(stride, extent)
        strides.reverse()
        for k, item in enumerate(items):
            if isinstance(item, ast.Slice):
                raise Unsupported("a slice")
            i = self.to_int(self.expr(item, scope))
            offset = b.add(offset, b.mul(i.value, strides[k]))
        ptr = b.gep(array.ptr, [offset], source_etype=_memory_type(array.dtype))
        return ptr, array.shape[len(items):]

    def table_load(self, table: np.ndarray, index: Any) -> Scalar:
        """An element of a constant NumPy table (mathlib's trigonometric reduction)."""
        dtype = table.dtype
        if dtype not in LLVM_TYPES or dtype == BOOL or table.ndim != 1:
            raise Unsupported(f"a {dtype} table")
        gv = self._globals.get(id(table))
        if gv is None:
            lltype = ir.ArrayType(LLVM_TYPES[dtype], len(table))
            gv = ir.GlobalVariable(self.module, lltype, f"table_{len(self._globals)}")
            gv.global_constant = True
            gv.linkage = "internal"
            gv.initializer = ir.Constant(lltype, [ir.Constant(LLVM_TYPES[dtype], _py(v))
                                                  for v in table.tolist()])
            self._globals[id(table)] = gv
        i = self.to_int(self.as_scalar(index))
        ptr = self.builder.gep(gv, [ir.Constant(I64, 0), i.value],
                               source_etype=gv.value_type)
        return Scalar(self.builder.load(ptr, typ=LLVM_TYPES[dtype]), dtype)

    def expr_UnaryOp(self, node: ast.UnaryOp, scope: Scope) -> Any:
        x = self.expr(node.operand, scope)
        op = type(node.op)
        if is_constant(x):
            return {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
                    ast.Invert: operator.invert}[op](x)
        x = self.as_scalar(x)
        b = self.builder
        if op is ast.Not:
            return Scalar(b.not_(self.to_bool(x).value), BOOL)
        if op is ast.UAdd:
            return x
        if op is ast.USub:
            if x.dtype.kind == "f":
                return Scalar(b.fneg(x.value), x.dtype)
            x = self.cast(x, INT64) if x.dtype.kind in "iu" else None
            if x is None:
                raise Unsupported("the negation of a bool")
            return Scalar(b.neg(x.value), INT64)
        if op is ast.Invert:  # Numba: ~ of a bool is a bool (NumPy's); of an int, int64
            if x.dtype == BOOL:
                return Scalar(b.not_(x.value), BOOL)
            x = self.cast(x, INT64)
            return Scalar(b.xor(x.value, ir.Constant(I64, -1)), INT64)
        raise Unsupported(f"the unary {type(node.op).__name__}")

    def expr_BinOp(self, node: ast.BinOp, scope: Scope) -> Any:
        return self.binop(type(node.op), self.expr(node.left, scope),
                          self.expr(node.right, scope))

    def binop(self, op: type, x: Any, y: Any) -> Any:
        if is_constant(x) and is_constant(y):
            return _PY_BINOPS[op](x, y)
        x, y = self.as_scalar(x), self.as_scalar(y)
        b = self.builder
        if op in (ast.BitAnd, ast.BitOr, ast.BitXor):
            if x.dtype == BOOL and y.dtype == BOOL:
                fn = {ast.BitAnd: b.and_, ast.BitOr: b.or_, ast.BitXor: b.xor}[op]
                return Scalar(fn(x.value, y.value), BOOL)
            if x.dtype.kind in "iub" and y.dtype.kind in "iub":
                x, y = self.cast(x, INT64), self.cast(y, INT64)
                fn = {ast.BitAnd: b.and_, ast.BitOr: b.or_, ast.BitXor: b.xor}[op]
                return Scalar(fn(x.value, y.value), INT64)
            raise Unsupported("a bitwise operation on floats")
        if op is ast.Div:
            dtype = promote(x.dtype, y.dtype)
            dtype = dtype if dtype.kind == "f" else FLOAT64
            x, y = self.cast(x, dtype), self.cast(y, dtype)
            return Scalar(b.fdiv(x.value, y.value), dtype)
        dtype = promote(x.dtype, y.dtype)
        int_exponent = y.dtype.kind != "f"  # Numba raises a float to an int by its own loop
        x, y = self.cast(x, dtype), self.cast(y, dtype)
        if dtype.kind == "f":
            if op in (ast.FloorDiv, ast.Mod):
                return Scalar(self.float_div_mod(op, x, y), dtype)
            if op is ast.Pow and not int_exponent:  # Numba: llvm.pow (libm's pow, powf)
                self.uses_libm = True
                return self.llvm_intrinsic("llvm.pow", [x, y])
            fn = {ast.Add: b.fadd, ast.Sub: b.fsub, ast.Mult: b.fmul}.get(op)
            if fn is None:
                raise Unsupported(f"the float operation {op.__name__}")
            return Scalar(fn(x.value, y.value), dtype)
        if op in (ast.Add, ast.Sub, ast.Mult):
            fn = {ast.Add: b.add, ast.Sub: b.sub, ast.Mult: b.mul}[op]
            return Scalar(fn(x.value, y.value), dtype)
        if op in (ast.FloorDiv, ast.Mod):
            return Scalar(self.floor_div_mod(op, x.value, y.value), dtype)
        if op in (ast.LShift, ast.RShift) and dtype.kind == "i":  # Numba: shl / ashr
            fn = b.shl if op is ast.LShift else b.ashr
            return Scalar(fn(x.value, y.value), dtype)
        raise Unsupported(f"the integer operation {op.__name__}")

    def floor_div_mod(self, op: type, x: ir.Value, y: ir.Value) -> ir.Value:
        """Python's // and % on int64 (rounding toward -inf); 0 for a zero divisor, as
        Numba's NumPy error model."""
        b = self.builder
        zero = ir.Constant(I64, 0)
        is_zero = b.icmp_signed("==", y, zero)
        safe = b.select(is_zero, ir.Constant(I64, 1), y)
        q, r = b.sdiv(x, safe), b.srem(x, safe)
        adjust = b.and_(b.icmp_signed("!=", r, zero),
                        b.icmp_signed("!=", b.icmp_signed("<", r, zero),
                                      b.icmp_signed("<", safe, zero)))
        if op is ast.FloorDiv:
            out = b.select(adjust, b.sub(q, ir.Constant(I64, 1)), q)
        else:
            out = b.select(adjust, b.add(r, safe), r)
        return b.select(is_zero, zero, out)

    def float_div_mod(self, op: type, x: Scalar, y: Scalar) -> ir.Value:
        """Python's // and % on floats as Numba computes them (CPython's float_divmod,
        numba/cpython/numbers.py), as selects; x / y (fmod(x, y)) for a zero divisor, as
        Numba's NumPy error model."""
        b = self.builder
        zero, negative_zero, one, half = (ir.Constant(x.value.type, v)
                                          for v in (0.0, -0.0, 1.0, 0.5))
        self.uses_libm = True  # frem is fmod
        mod = b.frem(x.value, y.value)
        div = b.fdiv(b.fsub(x.value, mod), y.value)
        y_negative = b.fcmp_ordered("<", y.value, zero)
        mod_nonzero = b.fcmp_unordered("!=", mod, zero)  # nonzero or NaN
        flip = b.and_(mod_nonzero,
                      b.icmp_unsigned("!=", y_negative, b.fcmp_ordered("<", mod, zero)))
        is_zero = b.fcmp_ordered("==", y.value, zero)
        if op is ast.Mod:
            signed_zero = b.select(y_negative, negative_zero, zero)
            mod = b.select(mod_nonzero, b.select(flip, b.fadd(mod, y.value), mod), signed_zero)
            return b.select(is_zero, b.frem(x.value, y.value), mod)
        div = b.select(flip, b.fsub(div, one), div)
        floor = self.llvm_intrinsic("llvm.floor", [Scalar(div, x.dtype)]).value
        rounded = b.select(b.fcmp_ordered(">", b.fsub(div, floor), half),
                           b.fadd(floor, one), floor)
        signed_zero = b.fdiv(b.fmul(b.fmul(div, div), x.value), y.value)
        quotient = b.select(b.fcmp_ordered("!=", div, zero), rounded, signed_zero)
        return b.select(is_zero, b.fdiv(x.value, y.value), quotient)

    def expr_Compare(self, node: ast.Compare, scope: Scope) -> Any:
        left = self.expr(node.left, scope)
        result = None
        for op, right_node in zip(node.ops, node.comparators):
            right = self.expr(right_node, scope)
            one = self.compare(type(op), left, right)
            result = one if result is None else self.binop(ast.BitAnd, result, one)
            left = right
        return result

    def compare(self, op: type, x: Any, y: Any) -> Any:
        if op not in _FLOAT_COMPARE:
            raise Unsupported(f"the comparison {op.__name__}")
        if is_constant(x) and is_constant(y):
            return _PY_COMPARE[op](x, y)
        x, y = self.as_scalar(x), self.as_scalar(y)
        dtype = promote(x.dtype, y.dtype)  # bools compare as ints, as in Numba
        x, y = self.cast(x, dtype), self.cast(y, dtype)
        b = self.builder
        if dtype.kind == "f":
            sym = _FLOAT_COMPARE[op]
            value = (b.fcmp_unordered(sym, x.value, y.value) if sym == "!="
                     else b.fcmp_ordered(sym, x.value, y.value))
        else:
            value = b.icmp_signed(_FLOAT_COMPARE[op], x.value, y.value)
        return Scalar(value, BOOL)

    def expr_IfExp(self, node: ast.IfExp, scope: Scope) -> Any:
        cond = self.to_bool(self.expr(node.test, scope))
        if isinstance(cond, bool):
            return self.expr(node.body if cond else node.orelse, scope)
        return self.branches(cond, lambda: self.expr(node.body, scope),
                             lambda: self.expr(node.orelse, scope))

    def branches(self, cond: Scalar, then: Callable, otherwise: Callable) -> Scalar:
        """then() where cond holds, else otherwise(): each evaluated on its own branch."""
        b = self.builder
        then_block = b.append_basic_block("then")
        else_block = b.append_basic_block("else")
        join = b.append_basic_block("join")
        b.cbranch(cond.value, then_block, else_block)
        b.position_at_end(then_block)
        a = self.as_scalar(then())
        a_end = b.block
        b.position_at_end(else_block)
        c = self.as_scalar(otherwise())
        c_end = b.block
        dtype = a.dtype if a.dtype == c.dtype else promote(a.dtype, c.dtype)
        b.position_at_end(a_end)
        a = self.cast(a, dtype)
        b.branch(join)
        b.position_at_end(c_end)
        c = self.cast(c, dtype)
        b.branch(join)
        b.position_at_end(join)
        phi = b.phi(LLVM_TYPES[dtype])
        phi.add_incoming(a.value, a_end)
        phi.add_incoming(c.value, c_end)
        return Scalar(phi, dtype)

    def expr_BoolOp(self, node: ast.BoolOp, scope: Scope) -> Any:
        first, *rest = node.values
        value = self.to_bool(self.expr(first, scope))
        for item in rest:
            if isinstance(value, bool):
                if value == isinstance(node.op, ast.And):
                    value = self.to_bool(self.expr(item, scope))
                continue
            right = functools.partial(lambda i: self.to_bool(self.expr(i, scope)), item)
            if isinstance(node.op, ast.And):
                value = self.branches(value, right, lambda: False)
            else:
                value = self.branches(value, lambda: True, right)
        return value

    def expr_Call(self, node: ast.Call, scope: Scope) -> Any:
        if node.keywords:
            raise Unsupported(f"keyword arguments in {ast.unparse(node)}")
        fn = self.expr(node.func, scope)
        args = [self.expr(a, scope) for a in node.args]
        return self.call(fn, args, node)

    def call(self, fn: Any, args: list, node: ast.Call) -> Any:
        if isinstance(fn, Op):
            return self.op_call(fn, args)
        if isinstance(fn, HelperRule):
            return fn.emit(self, args)
        if fn is np.empty or fn is np.zeros:
            return self.allocate(args, zeroed=fn is np.zeros)
        if fn is np.full:
            return self.filled(args)
        if isinstance(fn, _Reshape):
            return self.reshaped(fn.array, args)
        if isinstance(fn, Function) and fn.shared:
            return self.call_shared(fn, args)
        if isinstance(fn, Function):
            return self.inline(fn, args)
        if fn is type and len(args) == 1:  # a scalar's NumPy type (cpu_kernels.as_type_of)
            x = args[0]
            return x.dtype.type if isinstance(x, Scalar) else type(x)
        if fn is min or fn is max:
            return self.extremum(fn, args)
        if fn is abs:
            return self.absolute(args[0])
        if fn is range or fn is bool or fn is int or fn is float:
            raise Unsupported(f"{ast.unparse(node)} outside a loop header")
        if isinstance(fn, type) and issubclass(fn, np.generic):
            return self.convert(fn, args[0])
        if type(fn).__name__ == "ExternalFunction" and _is_numba_object(fn):
            return self.external_call(fn, args)
        if _is_numba_object(fn):
            return self.numba_call(fn, args)
        if callable(fn) and getattr(fn, "__module__", "") in ("numpy", "math") or \
                fn in _NUMPY_SCALAR_FUNCTIONS:
            return self.library_call(fn, args)
        if inspect.isfunction(fn):
            return self.inline(self.function(fn), args)
        raise Unsupported(f"a call of {ast.unparse(node.func)}")

    # -- calls -------------------------------------------------------------------------
    def function(self, fn: Callable) -> Function:
        """A Python function's definition, parsed once, and its free names."""
        tree = self._trees.get(fn.__code__)
        if tree is None:
            try:
                text = textwrap.dedent(inspect.getsource(fn))
            except (OSError, TypeError) as exc:
                raise Unsupported(f"the source of {fn.__name__}") from exc
            module = ast.parse(text)
            tree = module.body[0]
            if not isinstance(tree, ast.FunctionDef):
                raise Unsupported(f"{fn.__name__} is not a plain def")
            self._trees[fn.__code__] = tree
        free = dict(zip(fn.__code__.co_freevars,
                        (c.cell_contents for c in fn.__closure__ or ())))
        fn_globals = fn.__globals__

        def lookup(name: str) -> Any:
            if name in free:
                return free[name]
            if name in fn_globals:  # (block_dot's comp_add: the explicit rule)
                return _explicit_rule(fn.__module__, name) or fn_globals[name]
            if name in _BUILTINS:
                return _BUILTINS[name]
            raise Unsupported(f"the name {name!r} in {fn.__name__}")
        return Function(tree, lookup)

    def bind_args(self, fn: Function, args: list, scope: Scope) -> Scope:
        """A scope for fn's body with its parameters bound to the call's arguments."""
        params = fn.node.args
        if params.vararg or params.kwarg or params.kwonlyargs or params.defaults:
            raise Unsupported(f"the parameters of {fn.node.name}")
        if len(args) != len(params.args):
            raise Unsupported(f"{fn.node.name} called with {len(args)} arguments")
        inner = Scope(fn.lookup)
        for param, arg in zip(params.args, args):
            value = self.expr(arg, scope) if isinstance(arg, ast.AST) else arg
            self.assign(ast.Name(param.arg, ast.Store()), value, inner)
        return inner

    def inline(self, fn: Function, args: list) -> Any:
        inner = self.bind_args(fn, args, None)
        body = list(fn.node.body)
        returns = [s for s in ast.walk(fn.node) if isinstance(s, ast.Return)]
        if returns and (len(returns) > 1 or body[-1] is not returns[0]):
            raise Unsupported(f"{fn.node.name} returns other than at its end")
        try:
            self.block(body, inner)
        except _Return:
            return inner.vars["<return>"]
        return None

    def call_shared(self, fn: Function, args: list, block_range: bool = False) -> None:
        """A call of one of the kernel's region functions: compiled once per argument
        types as an LLVM function of its own (never inlined), as Numba compiles it once,
        so a region that a program runs 79 times is optimised once. With `block_range`,
        fn is a parallel region whose prange runs this step's blocks [lo, hi)."""
        kinds = [("range",)] if block_range else []
        values = [self._lo, self._hi] if block_range else []
        for a in args:
            if is_constant(a):
                a = self.constant(a)
            if isinstance(a, Scalar):
                kinds.append(("scalar", a.dtype))
                values.append(a.value)
            elif isinstance(a, Array):
                kinds.append(("array", a.dtype, len(a.shape)))
                values += [a.ptr, *a.shape]
            else:
                raise Unsupported(f"a {type(a).__name__} argument of {fn.node.name}")
        # (a region function called inside another's module is that module's own)
        defined = self._shared if self._region_module is None else self._nested
        key = (fn.node.name, tuple(kinds))
        callee = defined.get(key)
        if callee is None:
            callee = defined[key] = self._define_shared(fn, kinds)
        self.pass_up(self.builder.call(callee, values))

    def _define_shared(self, fn: Function, kinds: list) -> ir.Function:
        """The region function, defined in a module of its own and named by the hash of
        that module's IR (compiler/direct_regions.py: programs share its object code),
        declared in this one. A region that needs a pointer the loader sets (Plan.
        externals), or one called from another region, is defined in this module."""
        if self._region_module is not None:
            return self._define_in(self.module, fn, kinds, f"{fn.node.name}_{len(self._nested)}")
        saved = (self.module, self._globals, len(self.externals))
        self.module = self._region_module = region_module()
        self._globals, self._nested = {}, {}
        try:
            self._define_in(self.module, fn, kinds, REGION_PLACEHOLDER)
            local = len(self.externals) != saved[2]
            share_helpers(self.module)
            text = str(self.module)
        finally:
            self.module, self._globals = saved[0], saved[1]
            self._region_module = None
        if local:  # its function pointers belong to the program: translated again here
            del self.externals[saved[2]:]
            return self._define_in(self.module, fn, kinds, f"{fn.node.name}_{len(self._shared)}")
        symbol, text = name_region(text)
        self._add_region(symbol, text)
        return _get_function(self.module, symbol, ir.FunctionType(I64, _shared_params(kinds)))

    def shared_helper(self, name: str, build: Callable[[ir.Module, str], ir.Function]
                      ) -> ir.Function:
        """A helper function of compiler/direct_helpers.py that every program calls the
        same (the GEMM driver: a tenth of a small kernel's LLVM time), compiled once for
        all of them like a region (in a module of its own, under its own name: one body
        per name) and declared here; inside a region's module, that module's own copy."""
        found = self.module.globals.get(name)
        if found is not None:
            return found
        if self._region_module is not None:
            return build(self.module, name)
        module = region_module()
        helper = build(module, name)
        helper.linkage = REGION_LINKAGE
        self._add_region(name, str(module))
        return _get_function(self.module, name, helper.function_type)

    def _add_region(self, symbol: str, text: str) -> None:
        if symbol in self.regions:  # equal code reached by another name or kinds
            return
        self.regions[symbol] = text
        if self.on_region is not None:
            self.on_region(symbol, text)

    def _define_in(self, module: ir.Module, fn: Function, kinds: list, name: str
                   ) -> ir.Function:
        """Write fn's body as the LLVM function `name` of `module`: (lo, hi) first for a
        parallel region, then a value per scalar and a pointer and extents per array."""
        callee = ir.Function(module, ir.FunctionType(I64, _shared_params(kinds)),  # 0, or an error
                             name)
        callee.linkage = REGION_LINKAGE if name == REGION_PLACEHOLDER else "internal"
        callee.attributes.add("noinline")
        callee.attributes.add("nounwind")
        saved = (self.builder, self._alloca_block, self._frees_base, self._lo, self._hi)
        self._alloca_block = callee.append_basic_block("locals")
        self.builder = ir.IRBuilder(callee.append_basic_block("start"))
        scope = Scope(fn.lookup)
        values = iter(callee.args)
        if kinds and kinds[0] == ("range",):
            self._lo, self._hi = next(values), next(values)
        for param, kind in zip(fn.node.args.args, [k for k in kinds if k != ("range",)]):
            if kind[0] == "scalar":
                self.assign(ast.Name(param.arg, ast.Store()), Scalar(next(values), kind[1]),
                            scope)
            else:
                ptr = next(values)
                shape = tuple(next(values) for _ in range(kind[2]))
                scope.vars[param.arg] = Array(ptr, kind[1], shape)
        if any(isinstance(s, ast.Return) for s in ast.walk(fn.node)):
            raise Unsupported(f"the region function {fn.node.name} returns")
        self._frees_base = len(self._frees)
        self._frees.append([])
        if kinds and kinds[0] == ("range",):
            self.prange_loop(fn.node.body[0], scope)
        else:
            self.block(fn.node.body, scope)
        self.free_scope()
        self.builder.ret(ir.Constant(I64, 0))
        with self.builder.goto_block(self._alloca_block):
            self.builder.branch(callee.blocks[1])
        self.builder, self._alloca_block, self._frees_base, self._lo, self._hi = saved
        return callee

    def extremum(self, fn: Callable, args: list) -> Any:
        if len(args) != 2:
            raise Unsupported(f"{fn.__name__} of {len(args)} arguments")
        x, y = args
        if is_constant(x) and is_constant(y):
            return fn(x, y)
        x, y = self.as_scalar(x), self.as_scalar(y)
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            raise Unsupported(f"{fn.__name__} of floats")  # Numba's NaN rules
        dtype = x.dtype if x.dtype == y.dtype else promote(x.dtype, y.dtype)  # as Numba
        x, y = self.cast(x, dtype), self.cast(y, dtype)
        sym = "<" if fn is min else ">"
        b = self.builder
        return Scalar(b.select(b.icmp_signed(sym, x.value, y.value), x.value, y.value),
                      dtype)

    def absolute(self, x: Any) -> Any:
        if is_constant(x):
            return abs(x)
        x = self.as_scalar(x)
        if x.dtype.kind == "f":
            return self.llvm_intrinsic("llvm.fabs", [x])
        x = self.cast(x, INT64)
        b = self.builder
        negative = b.icmp_signed("<", x.value, ir.Constant(I64, 0))
        return Scalar(b.select(negative, b.neg(x.value), x.value), INT64)

    def convert(self, ctor: type, x: Any) -> Any:
        dtype = np.dtype(ctor)
        if is_constant(x):
            return ctor(x)
        if dtype not in LLVM_TYPES:
            raise Unsupported(f"a conversion to {dtype}")
        return self.cast(self.as_scalar(x), dtype)

    def library_call(self, fn: Callable, args: list) -> Any:
        """np.<ufunc> / math.<fn> on one scalar."""
        name = fn.__name__
        if all(is_constant(a) for a in args):
            return fn(*args)
        if name in ("isnan", "isinf", "isfinite") and len(args) == 1:
            return self.classify(name, self.as_scalar(args[0]))
        if name == "arctan2" and len(args) == 2:
            return self.arctan2(self.as_scalar(args[0]), self.as_scalar(args[1]))
        if len(args) != 1:
            raise Unsupported(f"{name} of {len(args)} arguments")
        x = self.as_scalar(args[0])
        if name == "sign" and x.dtype.kind in "fi":
            return self.sign(x)
        if name == "round" and x.dtype.kind == "f":  # Numba: half to even, llvm.rint
            return self.llvm_intrinsic("llvm.rint", [x])
        if x.dtype.kind != "f":
            if getattr(fn, "__module__", "") == "math" or name in _LIBM or name in _LLVM_UNARY:
                x = self.cast(x, FLOAT64)  # Numba: math functions of ints take float64
            else:
                raise Unsupported(f"{name} of {x.dtype}")
        if name in _LLVM_UNARY or name == "absolute":
            return self.llvm_intrinsic(_LLVM_UNARY.get(name, "llvm.fabs"), [x])
        if name in _LIBM:
            symbol = _LIBM[name] + ("f" if x.dtype == FLOAT32 else "")
            self.uses_libm = True
            lltype = LLVM_TYPES[x.dtype]
            callee = _get_function(self.module, symbol, ir.FunctionType(lltype, [lltype]))
            return Scalar(self.builder.call(callee, [x.value]), x.dtype)
        raise Unsupported(f"the scalar function {name}")

    def sign(self, x: Scalar) -> Scalar:
        """np.sign as Numba's real_sign_impl (1, -1, or x itself: 0 or NaN) and
        int_sign_impl (0, 1 or -1 in x's type)."""
        b = self.builder
        if x.dtype.kind == "i":
            one, zero = ir.Constant(x.value.type, 1), ir.Constant(x.value.type, 0)
            nonzero = b.select(b.icmp_signed(">", x.value, zero), one,
                               ir.Constant(x.value.type, -1))
            return Scalar(b.select(b.icmp_signed("==", x.value, zero), zero, nonzero),
                          x.dtype)
        zero = ir.Constant(x.value.type, 0.0)
        value = b.select(b.fcmp_ordered("<", x.value, zero), ir.Constant(x.value.type, -1.0),
                         x.value)
        return Scalar(b.select(b.fcmp_ordered(">", x.value, zero),
                               ir.Constant(x.value.type, 1.0), value), x.dtype)

    def arctan2(self, y: Scalar, x: Scalar) -> Scalar:
        """np.arctan2 as Numba's ufunc loop: libm's atan2 (atan2f) in the common float
        type (float64 for integers)."""
        dtype = promote(y.dtype, x.dtype)
        dtype = dtype if dtype.kind == "f" else FLOAT64
        y, x = self.cast(y, dtype), self.cast(x, dtype)
        self.uses_libm = True
        lltype = LLVM_TYPES[dtype]
        callee = _get_function(self.module, "atan2f" if dtype == FLOAT32 else "atan2",
                               ir.FunctionType(lltype, [lltype, lltype]))
        return Scalar(self.builder.call(callee, [y.value, x.value]), dtype)

    def classify(self, name: str, x: Scalar) -> Scalar:
        b = self.builder
        if x.dtype.kind != "f":
            return Scalar(ir.Constant(I1, int(name == "isfinite")), BOOL)
        if name == "isnan":
            return Scalar(b.fcmp_unordered("uno", x.value, x.value), BOOL)
        a = self.llvm_intrinsic("llvm.fabs", [x]).value
        inf = ir.Constant(LLVM_TYPES[x.dtype], math.inf)
        if name == "isinf":
            return Scalar(b.fcmp_ordered("==", a, inf), BOOL)
        return Scalar(b.fcmp_ordered("<", a, inf), BOOL)

    def llvm_intrinsic(self, name: str, args: list[Scalar]) -> Scalar:
        dtype = args[0].dtype
        lltype = LLVM_TYPES[dtype]
        suffix = "f32" if dtype == FLOAT32 else "f64"
        callee = _get_function(self.module, f"{name}.{suffix}",
                               ir.FunctionType(lltype, [lltype] * len(args)))
        return Scalar(self.builder.call(callee, [a.value for a in args]), dtype)

    def op_call(self, op: Op, args: list) -> Scalar:
        """One of mathlib's operations (compiler/mathlib_ops.py), whose own code writes
        the IR; Python numbers take the type of the float operands, as Numba's typing
        of mathlib requires them to have."""
        floats = {a.dtype for a in args if isinstance(a, Scalar) and a.dtype.kind == "f"}
        if len(floats) != 1:
            raise Unsupported(f"mathlib's {op.name} on {floats or 'no floats'}")
        (common,) = floats
        values, dtypes = [], []
        for a in args:
            if isinstance(a, tuple):  # polyval's coefficients: an LLVM array constant
                lltype = LLVM_TYPES[common]
                items = [ir.Constant(lltype, _py(common.type(v))) for v in a]
                values.append(ir.Constant(ir.ArrayType(lltype, len(a)), items))
                continue
            if is_constant(a) and scalar_dtype(a).kind == "f":
                a = Scalar(ir.Constant(LLVM_TYPES[common], _py(common.type(a))), common)
            a = self.as_scalar(a)
            values.append(a.value)
            dtypes.append(a.dtype)
        if op.operands == "select":
            if dtypes[0] != BOOL or dtypes[1] != dtypes[2]:
                raise Unsupported(f"select of {dtypes}")
            result = dtypes[1]
        elif any(d != common for d in dtypes):
            raise Unsupported(f"mathlib's {op.name} of {dtypes}")
        else:
            result = common
        if op.result == "int64":
            result = INT64
        return Scalar(op.codegen(self.builder, values), result)

    def numba_call(self, fn: Any, args: list) -> Any:
        """A Numba dispatcher, inlined from its Python source. (Intrinsics and overloads
        are not followed: mathlib's operations and cpu_kernels' reduction helpers have
        their own rules, compiler/mathlib_ops.py and compiler/direct_helpers.py.)"""
        py_func = getattr(fn, "py_func", None)
        if py_func is None:
            raise Unsupported(f"the Numba object {fn!r}")
        return self.inline(self.function(py_func), args)

    def external_call(self, fn: Any, args: list) -> Scalar:
        """A call of a C function Numba binds by symbol (scipy.special's, as
        runtime/special_functions.py declares them: double f(double, int)): through a
        function pointer the loader sets (Plan.externals)."""
        from transfuse.runtime.special_functions import cython_export

        export = cython_export(fn.symbol)
        if export is None or str(fn.sig) != "(float64, int32) -> float64" or len(args) != 2:
            raise Unsupported(f"the external function {fn.symbol}")
        x, flag = self.cast(self.as_scalar(args[0]), FLOAT64), self.as_scalar(args[1])
        name = f"tf_external_{fn.symbol}"
        pointer = self.module.globals.get(name)
        if pointer is None:
            pointer = ir.GlobalVariable(self.module, I8P, name)
            pointer.initializer = ir.Constant(I8P, None)
            self.externals.append((name, *export))
        fnty = ir.FunctionType(F64, [F64, I32])
        b = self.builder
        callee = b.bitcast(b.load(pointer, typ=I8P), fnty.as_pointer())
        return Scalar(b.call(callee, [x.value, self.cast(flag, INT32).value]), FLOAT64)

    # -- buffers -----------------------------------------------------------------------
    def allocate(self, args: list, zeroed: bool) -> Array:
        """np.empty / np.zeros(shape[, dtype]) in compiled code (a parallel chunk's
        scratch row, a row of compensated sums): malloc'd (calloc'd), and freed at the
        end of the loop body (or function) that made it."""
        if len(args) not in (1, 2) or not isinstance(args[0], tuple):
            raise Unsupported("np.empty or np.zeros of other than (shape[, dtype])")
        dtype = np.dtype(args[1] if len(args) == 2 else np.float64)
        if dtype not in LLVM_TYPES:
            raise Unsupported(f"a {dtype} scratch buffer")
        b = self.builder
        shape = tuple(self.to_int(d).value for d in args[0])
        count = ir.Constant(I64, 1)
        for extent in shape:
            count = b.mul(count, extent)
        itemsize = ir.Constant(I64, max(dtype.itemsize, 1))
        if zeroed:
            calloc = _get_function(self.module, "calloc", ir.FunctionType(I8P, [I64, I64]))
            raw = b.call(calloc, [count, itemsize])
        else:
            malloc = _get_function(self.module, "malloc", ir.FunctionType(I8P, [I64]))
            raw = b.call(malloc, [b.mul(count, itemsize)])
        self._frees[-1].append(raw)
        return Array(b.bitcast(raw, _memory_type(dtype).as_pointer()), dtype, shape)

    def _size(self, array: Array) -> ir.Value:
        count = ir.Constant(I64, 1)
        for extent in array.shape:
            count = self.builder.mul(count, extent)
        return count

    def reshaped(self, array: Array, args: list) -> Array:
        """x.reshape(shape) of a C-ordered array: the same data, other extents (the
        generated code reshapes only to shapes of the same size)."""
        shape = args[0] if len(args) == 1 and isinstance(args[0], tuple) else tuple(args)
        if any(is_constant(d) and d < 0 for d in shape):
            raise Unsupported("a reshape with -1")
        return Array(array.ptr, array.dtype, tuple(self.to_int(d).value for d in shape))

    def filled(self, args: list) -> Array:
        """np.full(shape, value, dtype): a buffer as allocate's, every element the value."""
        if len(args) != 3:
            raise Unsupported("np.full of other than (shape, value, dtype)")
        out = self.allocate([args[0], args[2]], zeroed=False)
        value = _to_memory(self.builder, self.cast(self.as_scalar(args[1]), out.dtype))
        from .direct_helpers import count_loop  # (it imports this module)

        b = self.builder
        count_loop(b, self._size(out), lambda i: b.store(
            value, b.gep(out.ptr, [i], source_etype=_memory_type(out.dtype))))
        return out

    def free_scope(self) -> None:
        """Free what the closing loop body or function allocated."""
        self.free(self._frees.pop())

    def free(self, buffers: list[ir.Value]) -> None:
        """Calls of free() for malloc'd buffers (a scope's, or every open one's)."""
        free = _get_function(self.module, "free", ir.FunctionType(ir.VoidType(), [I8P]))
        for raw in buffers:
            self.builder.call(free, [raw])

    # -- conversions -------------------------------------------------------------------
    def constant(self, value: Any) -> Scalar:
        dtype = scalar_dtype(value)
        if dtype == BOOL:
            return Scalar(ir.Constant(I1, int(bool(value))), BOOL)
        return Scalar(ir.Constant(LLVM_TYPES[dtype], _py(dtype.type(value))), dtype)

    def as_scalar(self, value: Any) -> Scalar:
        if isinstance(value, Scalar):
            return value
        if is_constant(value):
            return self.constant(value)
        raise Unsupported(f"{type(value).__name__} where a scalar was expected")

    def to_int(self, value: Any) -> Scalar:
        value = self.as_scalar(value)
        if value.dtype.kind not in "iub":
            raise Unsupported(f"a {value.dtype} index or bound")
        return self.cast(value, INT64)

    def to_bool(self, value: Any) -> Scalar | bool:
        if is_constant(value):
            return bool(value)
        return self.cast(self.as_scalar(value), BOOL)

    def cast(self, x: Scalar, dtype: np.dtype) -> Scalar:
        if x.dtype == dtype:
            return x
        b = self.builder
        src, dst = x.dtype, dtype
        to = LLVM_TYPES[dst]
        if dst == BOOL:
            zero = ir.Constant(LLVM_TYPES[src], 0)
            value = (b.fcmp_unordered("!=", x.value, zero) if src.kind == "f"
                     else b.icmp_signed("!=", x.value, zero))
        elif src.kind == "f" and dst.kind == "f":
            value = b.fpext(x.value, to) if dst.itemsize > src.itemsize else \
                b.fptrunc(x.value, to)
        elif src.kind == "f":
            value = b.fptosi(x.value, to)
        elif dst.kind == "f":
            value = b.uitofp(x.value, to) if src == BOOL else b.sitofp(x.value, to)
        elif src == BOOL:
            value = b.zext(x.value, to)
        elif dst.itemsize > src.itemsize:
            value = b.sext(x.value, to)
        else:
            value = b.trunc(x.value, to)
        return Scalar(value, dst)


class _StepContext:
    """Builds one function of the module and yields the entry's scope. Kinds: 'step'
    (exported: ints, arrays, lo, hi), 'extent' (exported, returns a prange's length),
    'part' (internal, never inlined: a piece of a long serial step, so that LLVM
    optimises pieces of bounded size and its time grows linearly with the program)."""

    def __init__(self, emitter: Emitter, name: str, translator: _EntryTranslator, kind: str):
        self.emitter, self.name, self.translator, self.kind = emitter, name, translator, kind

    def __enter__(self) -> Scope:
        e = self.emitter
        ret = I64  # 0; a step: 1 for a mismatch; 2 + k for errors[k] (Emitter.leave)
        args = [I64.as_pointer(), I8P] + ([I64, I64] if self.kind == "step"
                                                       else [])
        fn = ir.Function(e.module, ir.FunctionType(ret, args), self.name)
        fn.attributes.add("nounwind")
        if self.kind == "part":
            fn.linkage = "internal"
            fn.attributes.add("noinline")
        e._ints, e._arrays = fn.args[0], fn.args[1]
        if self.kind == "step":
            e._lo, e._hi = fn.args[2], fn.args[3]
        e._alloca_block = fn.append_basic_block("locals")
        e._params_block = fn.append_basic_block("params")
        e._first_block = e._params_block
        start = fn.append_basic_block("start")
        e.builder = ir.IRBuilder(start)
        e._frees_base = len(e._frees)
        e._frees.append([])
        return e.entry_scope(self.translator)

    def __exit__(self, kind, exc, tb) -> None:
        e = self.emitter
        if kind is None:
            e.free_scope()
            if self.kind in ("part", "step"):
                e.builder.ret(ir.Constant(I64, 0))
            with e.builder.goto_block(e._alloca_block):
                e.builder.branch(e._first_block)
            with e.builder.goto_block(e._params_block):
                e.builder.branch(e.builder.function.blocks[2])  # start
        e.builder = None


_NUMPY_SCALAR_FUNCTIONS = (np.isnan, np.isinf, np.isfinite, np.sqrt, np.floor, np.ceil,
                           np.exp, np.log, np.sin, np.cos, np.tan, np.tanh, np.sinh,
                           np.cosh, np.arcsin, np.arccos, np.arctan, np.arcsinh,
                           np.arccosh, np.arctanh, np.expm1, np.log1p, np.absolute)


def _whole_axis(item: ast.AST) -> bool:
    """`:` as an index: the whole axis."""
    return isinstance(item, ast.Slice) and item.lower is None and item.upper is None \
        and item.step is None


def _is_numba_object(fn: Any) -> bool:
    return type(fn).__module__.startswith("numba.")


def _get_function(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, fnty, name)


def _shared_params(kinds: list) -> list[ir.Type]:
    """A region function's LLVM parameters for its arguments' kinds."""
    params: list[ir.Type] = []
    for kind in kinds:
        if kind[0] == "range":
            params += [I64, I64]
        elif kind[0] == "scalar":
            params.append(LLVM_TYPES[kind[1]])
        else:
            params += [_memory_type(kind[1]).as_pointer()] + [I64] * kind[2]
    return params


def _memory_type(dtype: np.dtype) -> ir.Type:
    """How a dtype is stored: bool as a byte."""
    return I8 if dtype == BOOL else LLVM_TYPES[dtype]


def _to_memory(b: ir.IRBuilder, x: Scalar) -> ir.Value:
    return b.zext(x.value, I8) if x.dtype == BOOL else x.value


def _from_memory(b: ir.IRBuilder, raw: ir.Value, dtype: np.dtype) -> Scalar:
    if dtype == BOOL:
        return Scalar(b.icmp_unsigned("!=", raw, ir.Constant(I8, 0)), BOOL)
    return Scalar(raw, dtype)


def _py(value: Any) -> Any:
    """A NumPy scalar as the Python number llvmlite writes exactly."""
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (np.integer, np.bool_)):
        return int(value)
    return value
