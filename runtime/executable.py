"""A compiled signature of a jitted function: its entry point and how to call it.

`call` is the hot path: plain C-contiguous NumPy arrays go straight to the Numba entry
point (its compiled wrapper, skipping the dispatcher's type matching), with the graph's
constants appended; outputs are split from mutated inputs' new values and unflattened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transfuse.ir.tree import TreeDef, tree_unflatten

from .cache import LoadedKernel


@dataclass(eq=False)
class Executable:
    """One compiled signature: entry point, constants, outputs' structure, write-backs."""

    kernel: LoadedKernel
    consts: tuple
    out_tree: TreeDef
    num_outputs: int  # entry outputs, mutated inputs' new values included
    mutated_inputs: tuple[int, ...]
    has_rng: bool
    input_dtypes: tuple  # the dtype each dynamic argument is compiled for
    source: str

    def __post_init__(self) -> None:
        self.entry: Callable = self.kernel.entry_point
        self.single = (self.num_outputs == 1 and not self.mutated_inputs
                       and self.out_tree.kind == "*")
        self.plain = not self.mutated_inputs and not self.has_rng

    def run(self, args: Sequence[Any], key: Any = None) -> list:
        """The entry's outputs as a list, for contiguous arrays of the compiled dtypes."""
        if self.has_rng:
            full = (*args, np.asarray(key, dtype=np.uint64), *self.consts)
        else:
            full = (*args, *self.consts)
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
        arr = np.ascontiguousarray(arr, dtype=dtype)
    return arr
