"""Momentum features: hand-checked values, Wilder written out, agreement with TA-Lib."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from mlengine.features.momentum import adx, macd, roc, rsi, stochastic
from tests.features import bars_from, real_slice


@pytest.fixture(scope="module", params=["eurusd_1h", "btcusd_1h_coinbase"])
def real(request: pytest.FixtureRequest) -> pd.DataFrame:
    return real_slice(request.param, 1000, 1500)


def _wilder_rsi(close: np.ndarray, w: int) -> np.ndarray:
    """Wilder's RSI, written out: average gain and loss seeded with the mean of the first
    ``w`` changes, then smoothed as ``avg = (avg * (w - 1) + x) / w``."""
    change = np.diff(close)
    gain, loss = np.maximum(change, 0.0), np.maximum(-change, 0.0)
    out = np.full(len(close), np.nan)
    avg_gain, avg_loss = gain[:w].mean(), loss[:w].mean()
    out[w] = 100.0 * avg_gain / (avg_gain + avg_loss)
    for t in range(w + 1, len(close)):
        avg_gain = (avg_gain * (w - 1) + gain[t - 1]) / w
        avg_loss = (avg_loss * (w - 1) + loss[t - 1]) / w
        out[t] = 100.0 * avg_gain / (avg_gain + avg_loss)
    return out


def test_rsi_by_hand() -> None:
    up = rsi(bars_from(100.0 + np.arange(30.0)), window=14)["rsi_14"]
    assert up.iloc[:14].isna().all()
    assert (up.iloc[14:] == 100.0).all()
    down = rsi(bars_from(100.0 - np.arange(30.0)), window=14)["rsi_14"]
    assert (down.iloc[14:] == 0.0).all()


def test_rsi_matches_wilder(real: pd.DataFrame) -> None:
    close = real["close"].to_numpy()
    np.testing.assert_allclose(rsi(real)["rsi_14"], _wilder_rsi(close, 14), rtol=1e-9)


def test_macd_on_a_ramp() -> None:
    """On a straight line every EMA lags by (n - 1) / 2 bars: the MACD line is
    (26 - 1) / 2 - (12 - 1) / 2 = 7 price units, the signal 7, the histogram 0."""
    close = 100.0 + np.arange(80.0)
    frame = macd(bars_from(close))
    assert list(frame.columns) == [
        "macd_rel_12_26_9",
        "macd_signal_rel_12_26_9",
        "macd_hist_rel_12_26_9",
    ]
    first = 26 + 9 - 2
    assert frame.iloc[:first].isna().all().all()
    np.testing.assert_allclose(frame["macd_rel_12_26_9"].iloc[first:] * close[first:], 7.0)
    np.testing.assert_allclose(frame["macd_signal_rel_12_26_9"].iloc[first:] * close[first:], 7.0)
    np.testing.assert_allclose(frame["macd_hist_rel_12_26_9"].iloc[first:], 0.0, atol=1e-12)


def test_macd_is_talib_over_the_close(real: pd.DataFrame) -> None:
    frame = macd(real, fast=5, slow=20, signal=4)
    c = real["close"].to_numpy()
    for column, expected in zip(
        frame.columns, talib.MACD(c, fastperiod=5, slowperiod=20, signalperiod=4), strict=True
    ):
        np.testing.assert_allclose(frame[column] * c, expected, rtol=1e-12, atol=1e-15)


def test_roc_by_hand() -> None:
    close = np.r_[100.0, np.full(9, 105.0), 110.0, 99.0]
    frame = roc(bars_from(close), windows=(10, 11))
    np.testing.assert_allclose(frame["roc_10"], [np.nan] * 10 + [10.0, -5.714285714285714])
    np.testing.assert_allclose(frame["roc_11"], [np.nan] * 11 + [-1.0])


def test_adx_on_a_steady_uptrend() -> None:
    """Each bar one unit higher, range one unit: +DM = 1, -DM = 0, true range 1.5, so
    +DI = 100 / 1.5, -DI = 0 and ADX = 100."""
    close = 100.0 + np.arange(60.0)
    frame = adx(bars_from(close, high=close + 0.5, low=close - 0.5), window=14)
    assert frame["adx_14"].iloc[:27].isna().all()
    np.testing.assert_allclose(frame["adx_14"].iloc[27:], 100.0)
    np.testing.assert_allclose(frame["plus_di_14"].iloc[14:], 100.0 / 1.5)
    np.testing.assert_allclose(frame["minus_di_14"].iloc[14:], 0.0)


def test_adx_is_talib(real: pd.DataFrame) -> None:
    frame = adx(real, window=10)
    h, low, c = (real[col].to_numpy() for col in ("high", "low", "close"))
    np.testing.assert_array_equal(frame["adx_10"], talib.ADX(h, low, c, timeperiod=10))
    np.testing.assert_array_equal(frame["plus_di_10"], talib.PLUS_DI(h, low, c, timeperiod=10))
    np.testing.assert_array_equal(frame["minus_di_10"], talib.MINUS_DI(h, low, c, timeperiod=10))


def test_stochastic_by_hand() -> None:
    close = 100.0 + np.arange(30.0)
    up = stochastic(bars_from(close, high=close, low=close - 1.0))
    assert list(up.columns) == ["stoch_k_14_3_3", "stoch_d_14_3_3"]
    first = 14 + 3 + 3 - 3
    assert up.iloc[:first].isna().all().all()
    assert (up.iloc[first:] == 100.0).all().all()  # every close at the top of its range
    down = stochastic(bars_from(close[::-1], high=close[::-1] + 1.0, low=close[::-1]))
    assert (down.iloc[first:] == 0.0).all().all()
    # fast %K with k_window=3 and no smoothing: (close - lowest low) / (highest - lowest)
    bars = bars_from(
        [10.0, 11.0, 12.0, 11.0, 10.0, 13.0],
        high=[10.5, 11.5, 12.5, 11.5, 10.5, 13.5],
        low=[9.5, 10.5, 11.5, 10.5, 9.5, 12.5],
    )
    k = stochastic(bars, k_window=3, k_smooth=1, d_window=1)["stoch_k_3_1_1"]
    expected = [2.5 / 3.0, 0.5 / 2.0, 0.5 / 3.0, 3.5 / 4.0]
    np.testing.assert_allclose(k.iloc[2:], 100.0 * np.array(expected), rtol=1e-12)


def test_stochastic_is_talib_stoch(real: pd.DataFrame) -> None:
    frame = stochastic(real, k_window=9, k_smooth=2, d_window=4)
    h, low, c = (real[col].to_numpy() for col in ("high", "low", "close"))
    k, d = talib.STOCH(h, low, c, 9, 2, talib.MA_Type.SMA, 4, talib.MA_Type.SMA)
    np.testing.assert_array_equal(frame["stoch_k_9_2_4"], k)
    np.testing.assert_array_equal(frame["stoch_d_9_2_4"], d)
