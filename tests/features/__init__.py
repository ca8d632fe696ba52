"""Bars for the feature and label tests: real slices of the bundled sets, and synthetic."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from mlengine import datasets
from mlengine.data.schema import make_bar_frame


def bars_from(
    close: object,
    *,
    open_: object = None,
    high: object = None,
    low: object = None,
    freq: str = "1h",
) -> pd.DataFrame:
    """A bar frame from explicit prices; open defaults to the close, high / low to the
    max / min of open and close."""
    c = np.asarray(close, dtype=np.float64)
    o = c.copy() if open_ is None else np.asarray(open_, dtype=np.float64)
    h = np.maximum(o, c) if high is None else np.asarray(high, dtype=np.float64)
    lo = np.minimum(o, c) if low is None else np.asarray(low, dtype=np.float64)
    idx = pd.date_range("2024-01-01", periods=len(c), freq=freq, tz="UTC")
    cols = {"open": o, "high": h, "low": lo, "close": c, "volume": np.ones(len(c))}
    return make_bar_frame(idx, cols, symbol="TEST", timeframe=freq)


def synthetic_bars(n: int, seed: int, *, flat_every: int = 0) -> pd.DataFrame:
    """A geometric random walk with intrabar ranges; ``flat_every`` > 0 inserts runs of
    30 flat bars (open = high = low = close), like the outage fills of the real sets."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-3, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 2e-4, n))
    spread = np.abs(rng.normal(0.0, 1e-3, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    if flat_every:
        for start in range(flat_every, n - 30, flat_every):
            price = close[start - 1]
            for a in (open_, high, low, close):
                a[start : start + 30] = price
    return bars_from(close, open_=open_, high=high, low=low)


@cache
def real_bars(name: str) -> pd.DataFrame:
    """A bundled real data set, loaded once per test session (do not modify)."""
    return datasets.load(name)


def real_slice(name: str, start: int, length: int) -> pd.DataFrame:
    bars = real_bars(name)
    return bars.iloc[start : start + length]
