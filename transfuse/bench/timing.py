"""Timing: warm-ups, then repeated samples; each sample loops enough calls to be measurable."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_CALLS_PER_SAMPLE = 100_000
EXPENSIVE_CALL_S = 0.1  # a call this long needs no extra warm-up and is its own sample
MIN_SAMPLES = 3  # even over budget: a median needs a few samples


@dataclass
class Timing:
    """Per-call seconds: median, min and max over the samples."""

    median_s: float
    min_s: float
    max_s: float
    samples: int
    calls_per_sample: int
    cpu_median_s: float | None = None  # CPU seconds, where the runner measured them

    @classmethod
    def of(cls, per_call_s: Sequence[float] | Sequence[tuple[float, float]],
           calls_per_sample: int = 1) -> Timing:
        """per_call_s: seconds, or (wall, CPU) seconds from a runner that times itself
        (the compile suite's fresh processes)."""
        cpu = None
        if per_call_s and isinstance(per_call_s[0], tuple):
            cpu = statistics.median(c for _, c in per_call_s)
            per_call_s = [w for w, _ in per_call_s]
        return cls(statistics.median(per_call_s), min(per_call_s), max(per_call_s),
                   len(per_call_s), calls_per_sample, cpu)


def calls_for(seconds_per_call: float, min_sample_s: float) -> int:
    """How many calls make one sample last at least min_sample_s (timer resolution)."""
    if seconds_per_call <= 0:
        return MAX_CALLS_PER_SAMPLE
    return max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(min_sample_s / seconds_per_call)))


def measure(call: Callable[[], Any], *, repeat: int, warmup: int, min_sample_s: float,
            budget_s: float = float("inf")) -> Timing:
    """Time call(): warm-ups, then up to `repeat` samples of per-call time.

    The call is expected to be compiled already (the harness has run it once). A first
    timed call sizes the samples; when it is long (>= EXPENSIVE_CALL_S) it also serves as
    the warm-up and as the first sample. Samples stop at `repeat`, or once `budget_s` is
    spent and MIN_SAMPLES are taken, so that a seconds-long case costs seconds, not minutes.
    """
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    expensive = first >= EXPENSIVE_CALL_S
    for _ in range(0 if expensive else warmup):
        call()
    number = calls_for(first, min_sample_s)
    samples = [first] if expensive else []
    spent = first if expensive else 0.0
    wanted = max(1, repeat)
    while len(samples) < wanted and (spent < budget_s or len(samples) < min(MIN_SAMPLES, wanted)):
        start = time.perf_counter()
        for _ in range(number):
            call()
        elapsed = time.perf_counter() - start
        samples.append(elapsed / number)
        spent += elapsed
    return Timing.of(samples, number)
