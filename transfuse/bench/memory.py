"""What a call holds at its peak: the process's resident-set high-water mark (Linux)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def _leaves(tree: object) -> list:
    if isinstance(tree, (tuple, list)):
        return [leaf for t in tree for leaf in _leaves(t)]
    if isinstance(tree, dict):
        return [leaf for t in tree.values() for leaf in _leaves(t)]
    return [tree]


def peak_of_call(call: Callable[[], object]) -> int:
    """Bytes the process's resident set grew by at most during one call (after warm-ups),
    less those of its results: Linux's VmHWM, reset through /proc/self/clear_refs. Run the
    process with MALLOC_MMAP_THRESHOLD_=65536 so that freed arrays go back to the system at
    once (otherwise the allocator's cache hides them)."""
    call()
    call()
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    results = call()
    return _status_bytes("VmHWM") - before - sum(
        np.asarray(a).nbytes for a in _leaves(results))
