"""Synthetic bars for throughput benchmarks: a controlled geometric random walk, not data."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlengine.data.schema import make_bar_frame


def random_walk_bars(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` one-minute bars of a geometric random walk with random wicks and volume."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 5e-4, n)) * close
    cols = {
        "open": open_,
        "high": np.maximum(open_, close) + spread,
        "low": np.minimum(open_, close) - spread,
        "close": close,
        "volume": rng.integers(0, 1000, n).astype("float64"),
    }
    idx = pd.date_range("2020-01-01", periods=n, freq="1min", tz="UTC")
    return make_bar_frame(idx, cols, symbol="BENCH", timeframe="1m")
