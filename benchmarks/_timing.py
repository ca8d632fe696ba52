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


def best_within(fn: Callable[[], object], repeat: int = 5, budget_s: float = 2.0) -> float:
    """Like :func:`best`, but a callable whose first run takes ``budget_s`` or more is run
    once: a slow peer (a Python loop over a million bars) would otherwise dominate the
    suite's wall time, and for it the spread between runs is small next to the figure."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    del result
    if first >= budget_s or repeat <= 1:
        return first
    return min(first, best(fn, repeat - 1))
