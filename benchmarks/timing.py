"""Timing on a busy machine: functions run in turn, so that whatever else the machine does slows each alike."""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def timings(fns: dict[str, Callable[[], object]], repeats: int,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each function by ``clock`` (wall clock, or ``time.process_time`` for CPU time), run in turn
    ``repeats`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = clock()
            fn()
            times[k].append(clock() - t)
    return times


def median_times(fns: dict[str, Callable[[], object]], repeats: int,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds of each function over interleaved repeats."""
    return {k: statistics.median(v) for k, v in timings(fns, repeats, clock).items()}


def machine_load() -> str:
    """How busy the machine is, for the first line of a benchmark's output."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
