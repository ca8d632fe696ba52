"""The TA-Lib feature set on 1,000,000 synthetic bars vs the sum of the TA-Lib calls it makes.

Run: ``.venv/bin/python benchmarks/bench_features.py``. Prints and writes
``benchmarks/results/features.json``.

The feature set measured is every group whose features call TA-Lib (found by recording
the calls of each group, not listed by hand): the goal compares it with those calls, which
a group without any (``structure``: numba passes, its own goal in ``bench_structure.py``)
has no part in. The calls are recorded by running the feature set once with every
``talib`` function wrapped (name, arguments), then replayed on the same arrays in this
process.
Three sums are reported:

* ``talib_sum_s`` — each call timed on its own, its output dropped at once (the allocator
  hands the next call the same warm pages): the pure compute of the calls, a lower bound.
* ``talib_inside_s`` — the time spent inside the TA-Lib calls while the feature set runs
  (each call timed where it is made): the calls as the feature set makes them.
* ``talib_kept_s`` — the calls back to back with every output kept, as a feature set must
  keep them: each output is then fresh memory the kernel has to zero, like the columns of
  the feature frame.

The goal is ``features_s <= 1.5 x`` the sum of the feature set's TA-Lib calls:
``ratio`` = ``features_s / talib_sum_s`` (the strict reading), ``ratio_inside`` =
``features_s / talib_inside_s`` and ``ratio_kept`` = ``features_s / talib_kept_s``.
Each figure is the best of ``REPEAT`` runs; the two whole passes alternate over
``ROUNDS`` rounds so that both see the same machine state.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import talib

from _results import write_result
from _synthetic import random_walk_bars
from _timing import best
from mlengine.features import compute_features, feature_spec, list_features, list_groups

N = 1_000_000
REPEAT = 5
ROUNDS = 3
GOAL = 1.5


Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def _record(bars: pd.DataFrame, names: list[str]) -> list[Call]:
    """The TA-Lib calls ``compute_features(bars, names)`` makes, with their arguments."""
    calls: list[Call] = []
    originals = {name: getattr(talib, name) for name in talib.get_functions()}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, args, kwargs))
            return fn(*args, **kwargs)

        return recorded

    try:
        for name, fn in originals.items():
            setattr(talib, name, wrap(name, fn))
        compute_features(bars, names)
    finally:
        for name, fn in originals.items():
            setattr(talib, name, fn)
    return calls


def _kept_pass(calls: list[Call]) -> list[Any]:
    return [getattr(talib, name)(*args, **kwargs) for name, args, kwargs in calls]


def _inside(bars: pd.DataFrame, names: list[str]) -> float:
    """Seconds spent inside TA-Lib during one ``compute_features(bars, names)`` run."""
    spent = [0.0]
    originals = {name: getattr(talib, name) for name in talib.get_functions()}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[0] += time.perf_counter() - start
            return out

        return timed

    try:
        for name, fn in originals.items():
            setattr(talib, name, wrap(fn))
        compute_features(bars, names)
    finally:
        for name, fn in originals.items():
            setattr(talib, name, fn)
    return spent[0]


def main() -> None:
    bars = random_walk_bars(N)
    small = bars.iloc[:1000]
    groups = [g for g in list_groups() if _record(small, [g])]
    compute_features(bars, groups)  # warm-up: imports, first-touch of the input columns
    calls = _record(bars, groups)
    per_call: list[tuple[str, float]] = [
        (
            f"{name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})",
            best(functools.partial(getattr(talib, name), *args, **kwargs), REPEAT),
        )
        for name, args, kwargs in calls
    ]
    talib_sum = sum(s for _, s in per_call)
    # alternate the two whole passes so that both see the same machine state
    kept, feats = [], []
    for _ in range(ROUNDS):
        kept.append(best(functools.partial(_kept_pass, calls), REPEAT))
        feats.append(best(functools.partial(compute_features, bars, groups), REPEAT))
    talib_kept, features_s = min(kept), min(feats)
    talib_inside = min(_inside(bars, groups) for _ in range(REPEAT))
    per_feature = {
        name: best(functools.partial(feature_spec(name).compute, bars), REPEAT)
        for g in groups
        for name in list_features(g)
    }
    n_columns = compute_features(bars, groups).shape[1]
    result = {
        "bars": N,
        "groups": groups,
        "columns": n_columns,
        "features_s": features_s,
        "talib_sum_s": talib_sum,
        "talib_inside_s": talib_inside,
        "talib_kept_s": talib_kept,
        "ratio": features_s / talib_sum,
        "ratio_inside": features_s / talib_inside,
        "ratio_kept": features_s / talib_kept,
        "goal": GOAL,
        "meets_goal": features_s / talib_sum <= GOAL,
        "meets_goal_inside": features_s / talib_inside <= GOAL,
        "per_feature_s": per_feature,
        "talib_calls": [{"call": call, "s": s} for call, s in per_call],
    }
    print(json.dumps(result, indent=2))
    write_result("features", result)


if __name__ == "__main__":
    main()
