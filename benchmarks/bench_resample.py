"""Resampling 1,000,000 one-minute bars to 1h: mlengine.resample vs pandas' own resample.

Run: ``.venv/bin/python benchmarks/bench_resample.py``. Prints seconds and the ratio
(ours / pandas); writes ``benchmarks/results/resample.json``.
"""

from __future__ import annotations

import json

import pandas as pd

from _results import write_result
from _synthetic import random_walk_bars
from _timing import best
from mlengine.data.resample import resample

N = 1_000_000
REPEAT = 5


def _pandas(bars: pd.DataFrame) -> pd.DataFrame:
    agg = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    return bars.resample("1h").agg(agg).dropna()


def main() -> None:
    bars = random_walk_bars(N)
    ours = best(lambda: resample(bars, "1h"), REPEAT)
    peer = best(lambda: _pandas(bars), REPEAT)
    result = {"bars": N, "mlengine_s": ours, "pandas_s": peer, "ratio": ours / peer}
    print(json.dumps(result, indent=2))
    write_result("resample", result)


if __name__ == "__main__":
    main()
