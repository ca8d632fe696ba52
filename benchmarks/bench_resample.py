"""Resampling 1,000,000 one-minute bars to 1h: mlengine.resample vs pandas' own resample.

Run: ``.venv/bin/python benchmarks/bench_resample.py``. Prints seconds and the ratio
(ours / pandas); writes ``benchmarks/results/resample.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from _synthetic import random_walk_bars
from mlengine.data.resample import resample

N = 1_000_000
REPEAT = 5


def _pandas(bars: pd.DataFrame) -> pd.DataFrame:
    agg = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    return bars.resample("1h").agg(agg).dropna()


def _best(fn: Callable[[pd.DataFrame], object], bars: pd.DataFrame) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn(bars)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    bars = random_walk_bars(N)
    ours = _best(lambda b: resample(b, "1h"), bars)
    peer = _best(_pandas, bars)
    result = {"bars": N, "mlengine_s": ours, "pandas_s": peer, "ratio": ours / peer}
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "resample.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
