"""Market structure on 1,000,000 synthetic bars: swings, events and features.

Run: ``.venv/bin/python benchmarks/bench_structure.py``. Prints and writes
``benchmarks/results/structure.json``.

Times, each the best of ``REPEAT`` runs after a warm-up (numba compilation): fractal
swings (:func:`~mlengine.features.structure.swings`, ``n=3``), zigzag swings (2 ATRs),
the event table (:func:`~mlengine.features.structure.structure_events`: the swings, the
pass and the table) and the ``structure`` feature group through ``compute_features``.
Goal: all four together under 2 s; reported as ``ratio`` = total / 2 s (goal <= 1).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from _results import write_result
from _synthetic import random_walk_bars
from _timing import best
from mlengine.features import compute_features
from mlengine.features.structure import structure_events, swings

N = 1_000_000
REPEAT = 5
GOAL_S = 2.0


def main() -> None:
    bars = random_walk_bars(N)
    steps: dict[str, Callable[[], object]] = {
        "swings_fractal_s": functools.partial(swings, bars),
        "swings_zigzag_s": functools.partial(swings, bars, method="zigzag"),
        "events_s": functools.partial(structure_events, bars),
        "features_s": functools.partial(compute_features, bars, ["structure"]),
    }
    for step in steps.values():
        step()  # warm-up: compilation, first touch of the columns
    times = {name: best(step, REPEAT) for name, step in steps.items()}
    total = sum(times.values())
    result = {
        "bars": N,
        **times,
        "n_swings": len(swings(bars)),
        "n_events": structure_events(bars)["kind"].value_counts().to_dict(),
        "total_s": total,
        "goal_s": GOAL_S,
        "ratio": total / GOAL_S,
        "meets_goal": total <= GOAL_S,
    }
    print(json.dumps(result, indent=2))
    write_result("structure", result)


if __name__ == "__main__":
    main()
