"""Checking a system's result against the reference, leaf by leaf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Agreement:
    """The outcome of a comparison: ok, the worst error relative to the leaf's scale, why not."""

    ok: bool
    max_error: float
    message: str = ""


def flatten(tree: Any, path: str = "out") -> list[tuple[str, Any]]:
    """(path, leaf) pairs of a pytree of tuples, lists and dicts."""
    if isinstance(tree, (tuple, list)):
        return [pair for i, t in enumerate(tree) for pair in flatten(t, f"{path}[{i}]")]
    if isinstance(tree, dict):
        return [pair for k in sorted(tree) for pair in flatten(tree[k], f"{path}[{k!r}]")]
    return [(path, tree)]


def compare(result: Any, reference: Any, *, rtol: float, atol: float) -> Agreement:
    """Agree when every leaf has the reference's shape and dtype and |r - ref| <= atol +
    rtol * scale.

    scale is the leaf's largest |ref|: systems sum in different orders, so elementwise
    relative error is meaningless where a result cancels to near zero.
    """
    got, want = flatten(result), flatten(reference)
    if len(got) != len(want):
        return Agreement(False, float("inf"),
                         f"{len(got)} output arrays, the reference has {len(want)}")
    worst = 0.0
    for (path, g), (_, w) in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return Agreement(False, float("inf"),
                             f"{path}: shape {g.shape}, the reference has {w.shape}")
        if g.dtype != w.dtype:  # e.g. a float32 program silently computing in float64
            return Agreement(False, float("inf"),
                             f"{path}: dtype {g.dtype}, the reference has {w.dtype}")
        verdict = _compare_leaf(path, g, w, rtol, atol)
        if not verdict.ok:
            return verdict
        worst = max(worst, verdict.max_error)
    return Agreement(True, worst)


def _compare_leaf(path: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float
                  ) -> Agreement:
    if got.size == 0:
        return Agreement(True, 0.0)
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    if not np.all(np.isfinite(got64) == np.isfinite(want64)):
        return Agreement(False, float("inf"), f"{path}: non-finite values where the "
                                              "reference has finite ones (or the reverse)")
    finite = np.isfinite(want64)
    scale = float(np.max(np.abs(want64[finite]), initial=0.0))
    diff = np.abs(got64[finite] - want64[finite])
    error = float(np.max(diff, initial=0.0))
    relative = error / scale if scale > 0 else error
    if error > atol + rtol * scale:
        where = np.unravel_index(int(np.argmax(np.where(finite, np.abs(got64 - want64), -1))),
                                 got.shape)
        return Agreement(False, relative,
                         f"{path}: max |difference| {error:.3g} at index {tuple(map(int, where))}"
                         f" (got {got64[where]:.6g}, reference {want64[where]:.6g}); allowed "
                         f"{atol:.1g} + {rtol:.1g} * max|reference| ({scale:.3g})")
    return Agreement(True, relative)
