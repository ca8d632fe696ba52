"""The benchmarks' clock: the best of several runs of a callable."""

from __future__ import annotations

import time
from collections.abc import Callable


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of ``repeat`` runs of ``fn()``; each result is freed after the clock
    stops, so the next run starts from the same memory state."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    return min(times)
