"""A compiled signature of a jitted function: its entry point and how to call it.

`call` is the hot path: plain C-contiguous NumPy arrays go straight to the Numba entry
point (its compiled wrapper, skipping the dispatcher's type matching) behind the graph's
constants and sizes, bound once; outputs are split from mutated inputs' new values and unflattened.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transfuse.ir.tree import TreeDef, tree_unflatten

from .cache import LoadedKernel


@dataclass(eq=False)
class Executable:
    """One compiled signature: entry point, constants, outputs' structure, write-backs."""

    kernel: LoadedKernel
    consts: tuple  # the entry point's leading arguments: constants, then sizes
    out_tree: TreeDef
    num_outputs: int  # entry outputs, mutated inputs' new values included
    mutated_inputs: tuple[int, ...]
    has_rng: bool
    input_dtypes: tuple  # the dtype each dynamic argument is compiled for
    source: str
    dyn_index: tuple = ()  # positions of the dynamic (array) leaves among all leaves
    # (weak reference to a captured array, snapshot): stale when one changed in place.
    guards: list = field(default_factory=list)
    rng_streams: int = 1  # how many streams of the global random state one call draws

    def __post_init__(self) -> None:
        self.entry: Callable = self.kernel.entry_point
        self.single = (self.num_outputs == 1 and not self.mutated_inputs
                       and self.out_tree.kind == "*")
        self.plain = not self.mutated_inputs and not self.has_rng

    @functools.cached_property
    def fast_path(self) -> tuple:
        """(call, dtypes, finish) for calls whose arguments are exactly the kernel's arrays.

        call(*arrays) runs the entry point (which checks shapes and layout and raises
        SignatureMismatch otherwise); dtypes: what the caller checks first (None: call
        checks them too); finish(raw) builds the result (None: raw is it).
        """
        # What is fixed for the signature (constants, sizes) comes first in the entry
        # point's arguments: a partial, made in C, costs less per call than a lambda; the
        # direct back end's bind also works out the shapes once.
        dtypes = self.input_dtypes
        if hasattr(self.kernel, "bind"):  # the direct back end: it checks dtypes itself
            call, dtypes = self.kernel.bind(self.consts), None
        else:
            call = functools.partial(self.entry, *self.consts) if self.consts else self.entry
        if self.single:
            finish = None
        elif self.num_outputs == 1:
            finish = lambda out: self.finish([out])  # noqa: E731
        else:
            finish = lambda out: self.finish(list(out))  # noqa: E731
        return call, dtypes, finish

    def run(self, args: Sequence[Any], key: Any = None) -> list:
        """The entry's outputs as a list, for contiguous arrays of the compiled dtypes."""
        if self.has_rng:
            full = (*self.consts, *args, np.asarray(key, dtype=np.uint64))
        else:
            full = (*self.consts, *args)
        out = self.entry(*full)
        if self.num_outputs == 1:
            return [out]
        return list(out)

    def finish(self, outs: list) -> Any:
        """User outputs in the function's pytree structure (write-backs already split off)."""
        return tree_unflatten(self.out_tree, outs)


def as_kernel_arg(x: Any, dtype: np.dtype) -> np.ndarray:
    """x as the C-contiguous, aligned, native-order array the entry point was built for."""
    arr = np.asarray(x)
    if arr.dtype != dtype or not arr.flags.c_contiguous or not arr.flags.aligned:
        # np.require, not np.ascontiguousarray: that returns a contiguous but misaligned
        # array as it is
        arr = np.require(arr, dtype=dtype, requirements="CA")
    return arr
