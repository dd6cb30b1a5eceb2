"""Global random state: `seed(n)` makes every draw reproducible, eager or traced.

Draws are counter-based. The global state is a base key and a counter of *streams*: an
eager draw takes the next stream, and each execution of a transformed or jitted function
takes as many consecutive streams as its graph draws from (its call sites, numbered from 0
in program order). A key for stream `c` is `base + c * G` (G the splitmix64 increment),
and a draw at stream `s` of that key reads `base + (c + s) * G`, so the same seed gives
the same numbers whether a function runs eagerly, traced, transformed or compiled (see
docs/reliability.md, "Random numbers under every transform").
"""

from __future__ import annotations

import os
import threading

import numpy as np

from transfuse.ir.primitives import PRIMITIVES, stream_key

_lock = threading.Lock()
_state = {"base": 0, "counter": 0}


def _base_key(n: int) -> int:
    """The base key of seed n: the seed mixed, so that nearby seeds are far apart."""
    seed_key = np.asarray(int(n) & ((1 << 64) - 1), dtype=np.uint64)
    return int(PRIMITIVES["random_fold_in"].impl(seed_key, data=0))


def seed(n: int) -> None:
    """Reset the global random state: the same seed gives the same draws."""
    with _lock:
        _state["base"] = _base_key(n)
        _state["counter"] = 0


def next_key(streams: int = 1) -> np.ndarray:
    """The key of the next `streams` streams (a 0-d uint64 array); advances the counter."""
    with _lock:
        counter = _state["counter"]
        _state["counter"] += max(int(streams), 1)
        base = _state["base"]
    return stream_key(base, counter)


seed(int.from_bytes(os.urandom(8), "little"))
