"""Global random state: `seed(n)` makes every draw reproducible, eager or traced.

Draws are counter-based: eager calls and every execution of a transformed or jitted
function take a fresh key from this state; inside a trace, each call site draws from the
graph's key input with its own stream number (see docs/ir.md, "Random numbers").
"""

from __future__ import annotations

import os
import threading

import numpy as np

from transfuse.ir.primitives import PRIMITIVES

_lock = threading.Lock()
_state = {"seed": int.from_bytes(os.urandom(8), "little"), "counter": 0}


def seed(n: int) -> None:
    """Reset the global random state: the same seed gives the same draws."""
    with _lock:
        _state["seed"] = int(n) & ((1 << 64) - 1)
        _state["counter"] = 0


def next_key() -> np.ndarray:
    """A fresh uint64 key (0-d array), advancing the global counter."""
    with _lock:
        counter = _state["counter"]
        _state["counter"] += 1
        base = np.asarray(_state["seed"], dtype=np.uint64)
    return PRIMITIVES["random_fold_in"].impl(base, data=counter)
