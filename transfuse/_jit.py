"""`transfuse.jit`: trace once per signature, fuse, compile with Numba, reuse.

    @tx.jit
    def f(x, w): ...

    tx.jit(tx.vmap(tx.grad(loss)))        # transforms first, then one compiled kernel
    tx.jit(f, static_argnums=1)(x, 3)     # 3 is part of the signature
    print(tx.jit(f).lower(x))             # graph, fused graph and generated source

A call flattens the arguments, looks the signature up (tree structure, shapes, dtypes,
static values, device) and runs the compiled entry point; a new signature is traced,
`prepare`d (mutation removed), simplified, fused, lowered to Numba source and compiled,
or loaded from the disk cache (runtime/cache.py). Called with traced arguments (inside
another transform) a jitted function just runs its Python body into the outer trace, so
`grad(jit(f))` and `vmap(jit(f))` work like `grad(f)` and `vmap(f)`.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from transfuse.compiler.complex_split import split_complex
from transfuse.compiler.custom_calls import custom_calls_as_calls
from transfuse.compiler.functionalize import prepare
from transfuse.compiler.fusion import fuse, inline_calls
from transfuse.compiler.remat import inline_remat
from transfuse.compiler.simplify import simplify
from transfuse.ir.core import Graph
from transfuse.ir.errors import (
    CompileError,
    TransfuseTypeError,
    TransfuseValueError,
    indexing_sites,
    traced_index_error,
)
from transfuse.ir.primitives import random_streams
from transfuse.ir.tracing import Tracer, current_builder
from transfuse.ir.tree import tree_flatten, tree_unflatten
from transfuse.runtime import cache as disk_cache
from transfuse.runtime.errors import SignatureMismatch
from transfuse.runtime.executable import Executable, as_kernel_arg
from transfuse.runtime.native_cache import native_key

from ._functionalize import check_no_aliasing, write_back
from ._staging import _recordings, is_array_leaf, stage, static_key
from .random import next_key

if TYPE_CHECKING:  # the lowering (and Numba) are imported when a signature first compiles
    from transfuse.compiler.lower_cpu import Program, RegionReport


def jit(func: Callable | None = None, *, static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (), device: str | None = None,
        cache: bool = True, fastmath: bool = False, fuse: bool = True) -> Any:
    """Compile func into one fused Numba kernel per signature (see the module docstring).

    static_argnums / static_argnames: arguments that are compile-time constants (part of
    the signature; they must be hashable). device: None or 'cpu', or 'cuda' (numba.cuda
    kernels taking NumPy or device arrays and returning Numba device arrays; see
    docs/cuda.md). cache: also keep the
    compiled code on disk. fastmath (extension): let LLVM reorder floating point; off by
    default so NaN and inf behave as in NumPy. fuse (extension): False compiles every
    primitive as its own loop, for comparison.
    """
    options = _Options(_argnums(static_argnums), _argnames(static_argnames),
                       _device(device), bool(cache), bool(fastmath), bool(fuse))
    if func is None:
        return lambda f: jit(f, static_argnums=options.static_argnums,
                             static_argnames=options.static_argnames, device=device,
                             cache=cache, fastmath=fastmath, fuse=fuse)
    if not callable(func):
        raise TransfuseTypeError(f"jit needs a callable, got {type(func).__name__}")
    return _callable(Jitted(func, options))


def _callable(state: Jitted) -> Callable:
    """The function jit returns: a fast path for plain arrays, else Jitted._call."""
    fast, slow = state.fast, state._call

    def jitted(*args: Any, **kwargs: Any) -> Any:
        hot = fast[0]
        if hot is not None and not kwargs:
            call, dtypes, finish = hot
            # dtype identity also rules out byte-swapped arrays, which Numba would misread.
            # (Unrolled for one and two arguments: a generator costs half a microsecond.)
            n = len(args)
            if dtypes is None:  # the call checks them (the direct back end's)
                ok = True
            elif n != len(dtypes):
                ok = False
            elif n == 1:
                ok = getattr(args[0], "dtype", None) is dtypes[0]
            elif n == 2:
                ok = (getattr(args[0], "dtype", None) is dtypes[0]
                      and getattr(args[1], "dtype", None) is dtypes[1])
            else:
                ok = all(getattr(a, "dtype", None) is d for a, d in zip(args, dtypes))
            if ok:
                try:
                    out = call(*args)
                except (SignatureMismatch, TypeError):  # other shapes, layouts or types
                    pass
                except IndexError:  # a traced index out of range: the slow path raises it
                    pass  # again, naming the user's line
                else:
                    return out if finish is None else finish(out)
        return slow(args, kwargs)

    functools.update_wrapper(jitted, state._fn)
    jitted.lower = state.lower
    jitted.cache_info = state.cache_info
    jitted.executables = state.executables
    jitted.__transfuse_jit__ = state
    return jitted


@dataclass(frozen=True)
class _Options:
    static_argnums: tuple[int, ...]
    static_argnames: tuple[str, ...]
    device: str
    cache: bool
    fastmath: bool
    fuse: bool


def _argnums(nums: int | Sequence[int]) -> tuple[int, ...]:
    nums = (nums,) if isinstance(nums, int) else tuple(nums)
    if not all(isinstance(n, int) for n in nums):
        raise TransfuseTypeError(f"jit: static_argnums must be ints, got {nums!r}")
    return nums


def _argnames(names: str | Sequence[str]) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    if not all(isinstance(n, str) for n in names):
        raise TransfuseTypeError(f"jit: static_argnames must be strings, got {names!r}")
    return names


def _device(device: str | None) -> str:
    if device in (None, "cpu"):
        return "cpu"
    if device == "cuda":
        return "cuda"
    raise TransfuseValueError(f"jit: unknown device {device!r}; expected None, 'cpu' or "
                              "'cuda'")


@dataclass
class CacheInfo:
    """What a jitted function has done so far (for tests and TRANSFUSE_LOG=cache)."""

    traces: int = 0  # signatures traced and lowered
    compiles: int = 0  # entry points compiled by LLVM
    disk_hits: int = 0  # entry points whose machine code came from the disk cache
    reused: int = 0  # entry points already loaded in this process (another function)
    signatures: int = 0


@dataclass
class Lowered:
    """`jit(f).lower(*args)`: what a call with these arguments compiles, without running it."""

    graph: Graph  # traced, functionalized and simplified
    fused_graph: Graph  # after fusion: `fused` nodes hold the regions
    source: str  # the generated Numba module
    regions: list[RegionReport] = field(default_factory=list)
    kernels: list = field(default_factory=list)  # device='cuda': one KernelInfo per kernel

    def __str__(self) -> str:
        bar = "=" * 72
        return (f"{bar}\ngraph\n{bar}\n{self.graph}\n\n{bar}\nfused graph\n{bar}\n"
                f"{self.fused_graph}\n\n{bar}\ngenerated source\n{bar}\n{self.source}")


class Jitted:
    """A jitted function: call it like the original; `.lower(*args)` shows the kernel."""

    def __init__(self, func: Callable, options: _Options):
        self._fn = func
        self._options = options
        self._by_signature: dict[tuple, Executable] = {}
        self.fast: list = [None]  # the last plain signature's (call, dtypes, finish)
        self.info = CacheInfo()
        self._has_static = bool(options.static_argnums or options.static_argnames)
        self._stale = False
        # Per signature: the user's lines of the gathers and scatters, which a kernel's
        # "index out of bounds" error is reported at.
        self._index_sites: dict[tuple, tuple] = {}
        self._name = getattr(func, "__qualname__", None) or type(func).__name__
        self._short = getattr(func, "__name__", None) or type(func).__name__

    def __repr__(self) -> str:
        return f"<transfuse.jit of {self._name}>"

    # -- calls -------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(args, kwargs)

    def _call(self, args: tuple, kwargs: dict) -> Any:
        leaves, in_tree = tree_flatten((args, kwargs))
        static = self._static_leaves(args, kwargs) if self._has_static else ()
        sig = _signature(leaves, in_tree, static, self._options.device)
        if sig is None or current_builder() is not None:
            return self._fn(*args, **kwargs)  # inside another transform: trace through
        exe = self._by_signature.get(sig)
        if exe is not None and exe.guards and not captures_unchanged(exe.guards):
            # An array the function closes over changed in place (an optimiser step): the
            # kernel has its old value baked in, so trace again, as the other transforms do.
            del self._by_signature[sig]
            self.fast[0] = None
            exe = None
            self._stale = True
        if exe is None:
            if self._options.device == "cuda":  # device arrays are traced as NumPy arrays
                args, kwargs = _stand_ins(leaves, in_tree)
            exe = self._compile(args, kwargs, set(static), sig)
        dyn = [leaves[i] for i in exe.dyn_index]
        key = next_key(exe.rng_streams) if exe.has_rng else None
        if exe.mutated_inputs:
            check_no_aliasing(dyn, exe.mutated_inputs)
        try:
            if self._options.device == "cuda":
                return self._run_cuda(exe, dyn, key)
            plain = [x if type(x) is np.ndarray and x.dtype is dt else as_kernel_arg(x, dt)
                     for x, dt in zip(dyn, exe.input_dtypes)]
            outs = self._run_cpu(exe, plain, key)
        except IndexError as error:  # a traced index out of range, found by a kernel
            raise traced_index_error(self._index_sites.get(sig, ())) from error
        if exe.mutated_inputs:
            n_user = len(outs) - len(exe.mutated_inputs)
            write_back(dyn, exe.mutated_inputs, outs[n_user:])
            outs = outs[:n_user]
        elif (not static and not kwargs and len(dyn) == len(args) and not exe.has_rng
              and not exe.guards
              and all(a is p and a.flags.c_contiguous for a, p in zip(args, plain))):
            self.fast[0] = exe.fast_path  # the next call with such arrays goes straight in
        return exe.finish(outs)

    @staticmethod
    def _run_cpu(exe: Executable, plain: list, key: Any) -> list:
        """Run a CPU executable on arrays of its input dtypes."""
        try:
            return exe.run(plain, key)
        except SignatureMismatch:  # a non-contiguous array: copy it into C order
            return exe.run([as_kernel_arg(x, dt) for x, dt in zip(plain, exe.input_dtypes)],
                           key)

    def _run_cuda(self, exe: Any, dyn: list, key: Any) -> Any:
        """Run a CUDA executable: device arrays out, mutated inputs written back."""
        from transfuse.runtime import cuda as cuda_runtime

        outs = exe.run(dyn, key)
        if exe.mutated_inputs:
            n_user = len(outs) - len(exe.mutated_inputs)
            cuda_runtime.write_back(dyn, exe.mutated_inputs, outs[n_user:])
            outs = outs[:n_user]
        return exe.finish(outs)

    def _static_leaves(self, args: tuple, kwargs: dict) -> set[int]:
        """Positions (among all flattened leaves) of the static arguments' leaves."""
        nums = {n % len(args) if -len(args) <= n < len(args) else n
                for n in self._options.static_argnums}
        for n in nums:
            if not 0 <= n < len(args):
                raise TransfuseValueError(
                    f"jit: static_argnums {n} is out of range for a call with {len(args)} "
                    "positional argument(s)")
        static: set[int] = set()
        start = 0
        for pos, a in enumerate(args):
            count = len(tree_flatten(a)[0])
            if pos in nums:
                static.update(range(start, start + count))
            start += count
        for name in sorted(kwargs, key=lambda k: (type(k).__name__, k)):
            count = len(tree_flatten(kwargs[name])[0])
            if name in self._options.static_argnames:
                static.update(range(start, start + count))
            start += count
        return static

    # -- compiling ---------------------------------------------------------------------
    def _compile(self, args: tuple, kwargs: dict, static: set[int], sig: tuple) -> Executable:
        with disk_cache.COMPILE_LOCK:  # tracing uses global state; compile each once
            exe = self._by_signature.get(sig)
            if exe is not None:
                return exe
            reason = self._miss_reason(sig)
            if self._stale:
                reason, self._stale = "a captured array changed in place", False
            recordings = _recordings()
            recordings.append([])
            try:
                graph, fused, program, out_tree = self._lower(args, kwargs, static)
            finally:
                captured = recordings.pop()
            if recordings:  # an enclosing cache build captured these arrays too
                recordings[-1].extend(captured)
            # Weak references: arrays made while tracing (np.asarray(2.0) for a scalar) die
            # now and need no guard; the arrays the function closes over live on.
            guards = [(weakref.ref(o), snap) for o, snap in captured
                      if isinstance(o, np.ndarray)]
            del captured
            self._index_sites[sig] = indexing_sites(graph)
            disk = disk_cache.disk_enabled(self._options.cache)
            disk_cache.log(f"miss {self._short}: {reason}; compiling")
            if disk:  # the light key: finding out does not import Numba or llvmlite
                key = native_key(program.source)
                changed = disk_cache.note_signature(self._qualified(), sig, key)
                if changed:
                    disk_cache.log(f"miss {self._short}: {changed}")
            if self._options.device == "cuda":
                exe = self._cuda_executable(graph, fused, program, out_tree, sig, guards, disk)
                self._by_signature[sig] = exe
                self.info.signatures = len(self._by_signature)
                return exe
            kernel = disk_cache.load_kernel(program.source, self._short, disk=disk)
            self._count(kernel)
            n_in = graph.num_explicit_inputs
            exe = Executable(kernel, (*program.const_args, *program.size_args), out_tree,
                             len(fused.outputs), tuple(graph.mutated_inputs), graph.has_rng,
                             tuple(a.dtype for a in graph.in_avals[:n_in]), program.source,
                             tuple(i for i, p in enumerate(sig[2]) if p[0] != "static"),
                             [g for g in guards if g[0]() is not None], random_streams(graph))
            self._by_signature[sig] = exe
            self.info.signatures = len(self._by_signature)
            return exe

    def _cuda_executable(self, graph: Graph, fused: Graph, program: Any, out_tree: Any,
                         sig: tuple, guards: list, disk: bool) -> Any:
        from transfuse.runtime import cuda as cuda_runtime

        module = cuda_runtime.load_program(program.source, self._short, disk=disk)
        self._count(module)
        n_in = graph.num_explicit_inputs
        return cuda_runtime.CudaExecutable(
            module, tuple(program.const_args), out_tree, len(fused.outputs),
            tuple(graph.mutated_inputs), graph.has_rng,
            tuple(a.dtype for a in graph.in_avals[:n_in]), program.source,
            tuple(i for i, p in enumerate(sig[2]) if p[0] != "static"),
            [g for g in guards if g[0]() is not None], random_streams(graph))

    def _lower(self, args: tuple, kwargs: dict, static: set[int]
               ) -> tuple[Graph, Graph, Program, Any]:
        staged = stage(self._fn, args, kwargs,
                       is_dynamic=lambda i, x: i not in static and is_array_leaf(x),
                       name=self._short if self._short.isidentifier() else "f")
        self.info.traces += 1
        if staged.graph.num_captures:
            raise CompileError("jit: the traced function captured values from an enclosing "
                               "trace outside of one")
        graph = optimise(custom_calls_as_calls(staged.graph))
        fused = fuse(graph, enabled=self._options.fuse)
        if self._options.device == "cuda":
            from transfuse.compiler.lower_cuda import lower_cuda_program
            from transfuse.runtime.cuda import ROW_BLOCK

            program = lower_cuda_program(fused, fastmath=self._options.fastmath,
                                         title=f"jit of {self._name}",
                                         block_threads=ROW_BLOCK[0], block_min_row=ROW_BLOCK[1])
            return graph, fused, program, staged.out_tree
        from transfuse.compiler.lower_cpu import lower_program

        disk = disk_cache.disk_enabled(self._options.cache)
        program = lower_program(fused, fastmath=self._options.fastmath, cache=disk,
                                title=f"jit of {self._name}")
        return graph, fused, program, staged.out_tree

    def _count(self, kernel: disk_cache.LoadedKernel) -> None:
        """Credit the kernel's origin to the first function that loads it."""
        if kernel.claimed:
            self.info.reused += 1
        elif kernel.origin == "disk":
            self.info.disk_hits += 1
        else:
            self.info.compiles += 1
        kernel.claimed = True

    def _miss_reason(self, sig: tuple) -> str:
        """Why sig is new: the first difference from a signature compiled before."""
        if not self._by_signature:
            return "first call"
        same_tree = [s for s in self._by_signature if s[:2] == sig[:2]]
        if not same_tree:
            return "new argument structure"
        if any(_arrays(s) == _arrays(sig) for s in same_tree):
            return "new static value"
        if any([d for _, d in _arrays(s)] == [d for _, d in _arrays(sig)]
               for s in same_tree):
            return "new shape"
        return "new dtype"

    def _qualified(self) -> str:
        return f"{getattr(self._fn, '__module__', '')}.{self._name}"

    # -- inspection --------------------------------------------------------------------
    def lower(self, *args: Any, **kwargs: Any) -> Lowered:
        """The optimised graph, the fused graph and the generated source for these args."""
        static = self._static_leaves(args, kwargs)
        if self._options.device == "cuda":
            args, kwargs = _stand_ins(*tree_flatten((args, kwargs)))
        with disk_cache.COMPILE_LOCK:
            graph, fused, program, _ = self._lower(args, kwargs, static)
        if self._options.device == "cuda":
            return Lowered(graph, fused, program.source, kernels=program.kernels)
        return Lowered(graph, fused, program.source, program.regions)

    def cache_info(self) -> CacheInfo:
        """Counts of traces, compiles and disk hits so far."""
        return self.info

    def executables(self) -> list[Executable]:
        """The compiled signatures so far."""
        return list(self._by_signature.values())


def _signature(leaves: list, in_tree: Any, static: Any, device: str) -> tuple | None:
    """(tree, device, per leaf: (shape, dtype) for arrays, ('static', key) for the rest).

    None when a leaf is traced (the call is inside another transform's trace).
    """
    parts = []
    for i, x in enumerate(leaves):
        t = type(x)
        if t is np.ndarray and i not in static:
            # Byte order is not part of the key: a big-endian array is converted on entry.
            dtype = x.dtype if x.dtype.isnative else x.dtype.newbyteorder("=")
            parts.append((x.shape, dtype))
        elif t is Tracer or t.__module__.startswith("dask.array"):
            return None  # traced, or a dask array: run the body (vmap maps over its blocks)
        elif isinstance(x, np.generic) and i not in static:
            parts.append((x.shape, x.dtype))
        elif device == "cuda" and i not in static and _on_device(x):
            parts.append(_device_signature(x))
        else:
            parts.append(("static", static_key(x)))
    return (in_tree, device, tuple(parts))


def _on_device(x: Any) -> bool:
    from transfuse.runtime.cuda import is_device_array

    return is_device_array(x)


def _device_signature(x: Any) -> tuple:
    from transfuse.runtime.cuda import device_signature

    return device_signature(x)


def _stand_ins(leaves: list, in_tree: Any) -> tuple[tuple, dict]:
    """(args, kwargs) with device arrays replaced by NumPy arrays of their shape and dtype."""
    from transfuse.runtime.cuda import host_stand_in

    return tree_unflatten(in_tree, [host_stand_in(x) for x in leaves])


def captures_unchanged(guards: list) -> bool:
    """Whether every captured array still alive holds what it held when traced."""
    for ref, snapshot in guards:
        array = ref()
        if array is not None and not (array.shape == snapshot.shape and np.array_equal(
                array, snapshot, equal_nan=True)):
            return False
    return True


def _arrays(sig: tuple) -> list:
    """The (shape, dtype) entries of a signature."""
    return [p for p in sig[2] if p[0] != "static"]


def optimise(graph: Graph) -> Graph:
    """The graph jit compiles: pure (prepare), checkpoints inlined (compiler/remat.py),
    simplified, calls inlined, complex sums and contractions split into real ones
    (compiler/complex_split.py)."""
    return split_complex(inline_calls(simplify(inline_remat(prepare(graph)))))


__all__ = ["jit", "Jitted", "Lowered", "CacheInfo"]
