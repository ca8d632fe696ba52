"""Volatility features: hand-checked values, TA-Lib and pandas oracles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import talib

from mlengine.features.volatility import atr, bollinger, range_vol, realised_vol
from tests.features import bars_from, real_slice


@pytest.fixture(scope="module", params=["eurusd_1h", "btcusd_1h_coinbase"])
def real(request: pytest.FixtureRequest) -> pd.DataFrame:
    return real_slice(request.param, 5000, 1500)


def _wilder_atr(bars: pd.DataFrame, w: int) -> np.ndarray:
    """Wilder's ATR, written out: the first value at bar ``w`` is the mean of the true
    ranges of bars 1..w; then ``atr = (atr * (w - 1) + tr) / w``."""
    h, low, c = (bars[col].to_numpy() for col in ("high", "low", "close"))
    out = np.full(len(c), np.nan)
    tr = [max(h[t] - low[t], abs(h[t] - c[t - 1]), abs(low[t] - c[t - 1])) for t in range(len(c))]
    if len(c) > w:
        out[w] = sum(tr[1 : w + 1]) / w
        for t in range(w + 1, len(c)):
            out[t] = (out[t - 1] * (w - 1) + tr[t]) / w
    return out


def test_atr_by_hand() -> None:
    bars = bars_from(np.full(8, 100.0), high=np.full(8, 101.0), low=np.full(8, 99.0))
    frame = atr(bars, window=3)
    assert list(frame.columns) == ["atr_3", "atr_rel_3"]
    np.testing.assert_allclose(frame["atr_3"], [np.nan] * 3 + [2.0] * 5, rtol=1e-15)
    np.testing.assert_allclose(frame["atr_rel_3"], [np.nan] * 3 + [0.02] * 5, rtol=1e-15)


def test_atr_matches_wilder_and_natr(real: pd.DataFrame) -> None:
    frame = atr(real)
    np.testing.assert_allclose(frame["atr_14"], _wilder_atr(real, 14), rtol=1e-9)
    h, low, c = (real[col].to_numpy() for col in ("high", "low", "close"))
    natr = talib.NATR(h, low, c, timeperiod=14) / 100.0
    np.testing.assert_allclose(frame["atr_rel_14"], natr, rtol=1e-12)


def test_realised_vol_by_hand() -> None:
    returns = [0.01, -0.02, 0.03, 0.0]
    bars = bars_from(100.0 * np.exp(np.cumsum([0.0, *returns])))
    rv = realised_vol(bars, windows=(3,))["rvol_3"].to_numpy()
    expected = np.r_[[np.nan] * 3, np.std(returns[:3], ddof=1), np.std(returns[1:], ddof=1)]
    np.testing.assert_allclose(rv, expected, rtol=1e-9)


def test_realised_vol_matches_pandas(real: pd.DataFrame) -> None:
    frame = realised_vol(real)
    r = np.log(real["close"]).diff()
    for w in (10, 20, 50):
        expected = r.rolling(w).std(ddof=1)
        np.testing.assert_allclose(frame[f"rvol_{w}"], expected, rtol=1e-9, atol=1e-15)


def test_range_vol_by_hand() -> None:
    # every bar: ln(high / low) = 0.01, ln(close / open) = 0.005
    n = 6
    open_ = np.full(n, 100.0)
    close = 100.0 * np.exp(np.full(n, 0.005))
    bars = bars_from(close, open_=open_, high=close, low=close * math.exp(-0.01))
    frame = range_vol(bars, window=4)
    parkinson = 0.01 / math.sqrt(4.0 * math.log(2.0))
    gk = math.sqrt(0.5 * 0.01**2 - (2.0 * math.log(2.0) - 1.0) * 0.005**2)
    np.testing.assert_allclose(frame["vol_parkinson_4"], [np.nan] * 3 + [parkinson] * 3, rtol=1e-9)
    np.testing.assert_allclose(frame["vol_gk_4"], [np.nan] * 3 + [gk] * 3, rtol=1e-9)


def test_range_vol_matches_pandas(real: pd.DataFrame) -> None:
    frame = range_vol(real, window=20)
    hl = pd.Series(np.log(real["high"] / real["low"]), index=real.index)
    co = pd.Series(np.log(real["close"] / real["open"]), index=real.index)
    parkinson = np.sqrt((hl**2).rolling(20).mean() / (4.0 * math.log(2.0)))
    gk = np.sqrt((0.5 * hl**2 - (2.0 * math.log(2.0) - 1.0) * co**2).rolling(20).mean())
    np.testing.assert_allclose(frame["vol_parkinson_20"], parkinson, rtol=1e-9)
    np.testing.assert_allclose(frame["vol_gk_20"], gk, rtol=1e-9)


def test_bollinger_by_hand() -> None:
    frame = bollinger(bars_from([1.0, 2.0, 3.0, 3.0]), window=3, k=2.0)
    assert list(frame.columns) == ["bb_width_3_2", "bb_pctb_3_2"]
    sigma = math.sqrt(2.0 / 3.0)  # population std of (1, 2, 3)
    width, pctb = frame.iloc[2]
    assert width == pytest.approx(4.0 * sigma / 2.0, rel=1e-9)
    assert pctb == pytest.approx((3.0 - (2.0 - 2.0 * sigma)) / (4.0 * sigma), rel=1e-9)
    assert frame.iloc[:2].isna().all().all()
    assert list(bollinger(bars_from([1.0] * 4), window=3, k=1.5).columns) == [
        "bb_width_3_1.5",
        "bb_pctb_3_1.5",
    ]


def test_bollinger_is_talib_bbands(real: pd.DataFrame) -> None:
    frame = bollinger(real, window=20, k=2.0)
    c = real["close"].to_numpy()
    upper, middle, lower = talib.BBANDS(
        c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=talib.MA_Type.SMA
    )
    np.testing.assert_allclose(frame["bb_width_20_2"], (upper - lower) / middle, rtol=1e-12)
    np.testing.assert_allclose(frame["bb_pctb_20_2"], (c - lower) / (upper - lower), rtol=1e-12)
    # and TA-Lib's bands are the textbook ones (its running sums of prices lose a few
    # digits to cancellation, hence 1e-6)
    sd = real["close"].rolling(20).std(ddof=0)
    mean = real["close"].rolling(20).mean()
    np.testing.assert_allclose(frame["bb_width_20_2"], 4.0 * sd / mean, rtol=1e-6)
