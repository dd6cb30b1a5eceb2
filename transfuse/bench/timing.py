"""Timing: warm-ups, then repeated samples; each sample loops enough calls to be measurable."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_CALLS_PER_SAMPLE = 100_000


@dataclass
class Timing:
    """Per-call seconds: median, min and max over the samples."""

    median_s: float
    min_s: float
    max_s: float
    samples: int
    calls_per_sample: int

    @classmethod
    def of(cls, per_call_s: Sequence[float], calls_per_sample: int = 1) -> Timing:
        return cls(statistics.median(per_call_s), min(per_call_s), max(per_call_s),
                   len(per_call_s), calls_per_sample)


def calls_for(seconds_per_call: float, min_sample_s: float) -> int:
    """How many calls make one sample last at least min_sample_s (timer resolution)."""
    if seconds_per_call <= 0:
        return MAX_CALLS_PER_SAMPLE
    return max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(min_sample_s / seconds_per_call)))


def measure(call: Callable[[], Any], *, repeat: int, warmup: int, min_sample_s: float
            ) -> Timing:
    """Time call(): `warmup` untimed calls, then `repeat` samples of per-call time."""
    for _ in range(warmup):
        call()
    start = time.perf_counter()
    call()
    number = calls_for(time.perf_counter() - start, min_sample_s)
    samples = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    return Timing.of(samples, number)
