"""The two controls every learned strategy faces: synthetic hourly bars from a return
series, and the out-of-sample direction accuracy of ``p_up > 0.5`` over walk-forward test
windows (a fresh model per fold, seeded by the fold)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mlengine import labels
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.schema import make_bar_frame
from mlengine.strategies.base import Strategy


def synthetic_bars(r: np.ndarray, seed: int) -> pd.DataFrame:
    """Hourly bars whose close-to-close log returns are ``r``; open at the previous close,
    high and low a little outside the body."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    wick = np.abs(rng.normal(0.0, 5e-4, (2, r.size)))
    idx = pd.date_range("2020-01-01", periods=r.size, freq="h", tz="UTC")
    cols = {
        "open": open_,
        "high": np.maximum(open_, close) * (1.0 + wick[0]),
        "low": np.minimum(open_, close) * (1.0 - wick[1]),
        "close": close,
        "volume": np.ones(r.size),
    }
    return make_bar_frame(idx, cols, symbol="SYN", timeframe="1h")


def oos_accuracy(
    make: Callable[[int], Strategy], bars: pd.DataFrame, *, n_splits: int, test_size: int
) -> tuple[float, int]:
    """Direction accuracy of ``p_up > 0.5`` against the next bar over ``n_splits``
    walk-forward test windows of ``test_size`` bars (purge 1); ``make(fold)`` gives each
    fold's fresh model. Returns (accuracy, number of scored bars)."""
    split = WalkForwardSplit(n_splits, test_size=test_size, purge=1)
    lab = labels.direction(bars, 1).values.to_numpy()
    hits: list[np.ndarray] = []
    for fold in split.folds(bars):
        model = make(fold.fold).fit(bars.iloc[fold.train])
        end = int(fold.test[-1]) + 1
        p = model.predict_proba(bars.iloc[:end])["p_up"].to_numpy()[fold.test]
        y = lab[fold.test]
        ok = np.isfinite(p) & np.isfinite(y) & (y != 0)
        hits.append((p[ok] > 0.5) == (y[ok] > 0))
    allhits = np.concatenate(hits)
    return float(allhits.mean()), int(allhits.size)
