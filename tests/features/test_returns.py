"""Return features: hand-checked values, TA-Lib and pandas oracles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import talib

from mlengine.features.returns import candle, log_returns, return_zscore
from tests.features import bars_from, real_slice


@pytest.fixture(scope="module", params=["eurusd_1h", "btcusd_1h_coinbase"])
def real(request: pytest.FixtureRequest) -> pd.DataFrame:
    return real_slice(request.param, 3000, 2000)


def test_log_returns_by_hand() -> None:
    bars = bars_from(np.exp([0.0, 1.0, 3.0, 3.0]))
    frame = log_returns(bars, lags=(1, 2))
    assert list(frame.columns) == ["ret_log_1", "ret_log_2"]
    np.testing.assert_allclose(frame["ret_log_1"], [np.nan, 1.0, 2.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(frame["ret_log_2"], [np.nan, np.nan, 3.0, 2.0], atol=1e-15)


def test_log_returns_match_talib_rocr(real: pd.DataFrame) -> None:
    frame = log_returns(real)
    close = real["close"].to_numpy()
    for lag in (1, 3, 6, 12, 24):
        expected = np.log(talib.ROCR(close, timeperiod=lag))
        np.testing.assert_allclose(frame[f"ret_log_{lag}"], expected, rtol=1e-9, atol=1e-12)


def test_log_return_lag_longer_than_the_series() -> None:
    frame = log_returns(bars_from([1.0, 2.0, 3.0]), lags=(5,))
    assert frame["ret_log_5"].isna().all()


def test_return_zscore_by_hand() -> None:
    bars = bars_from(np.exp(np.cumsum([0.0, 1.0, 2.0, 3.0, 1.0])))  # returns 1, 2, 3, 1
    z = return_zscore(bars, windows=3)["ret_z_3"].to_numpy()
    sigma = math.sqrt(2.0 / 3.0)  # population std of (1, 2, 3) and of (2, 3, 1)
    np.testing.assert_allclose(z, [np.nan, np.nan, np.nan, 1 / sigma, -1 / sigma], rtol=1e-12)


def test_return_zscore_matches_pandas(real: pd.DataFrame) -> None:
    frame = return_zscore(real)
    r = np.log(real["close"]).diff()
    for w in (20, 100):
        roll = r.rolling(w)
        expected = (r - roll.mean()) / roll.std(ddof=0)
        np.testing.assert_allclose(frame[f"ret_z_{w}"], expected, rtol=1e-9, atol=1e-9)


def test_return_zscore_of_equal_returns_is_zero() -> None:
    bars = bars_from(100.0 * 1.01 ** np.arange(30))  # every return ln(1.01)
    z = return_zscore(bars, windows=(5,))["ret_z_5"]
    assert z.iloc[:5].isna().all()
    # the returns differ only by rounding: no spread to measure against, so 0, not noise
    assert (z.iloc[5:] == 0.0).all()
    flat = return_zscore(bars_from(np.full(30, 7.0)), windows=(5,))["ret_z_5"]
    assert (flat.iloc[5:] == 0.0).all()


def test_candle_by_hand() -> None:
    bars = bars_from(
        [3.0, 2.0, 5.0],
        open_=[2.0, 3.0, 5.0],
        high=[4.0, 3.5, 5.0],
        low=[1.0, 1.0, 5.0],
    )
    frame = candle(bars)
    np.testing.assert_allclose(frame["candle_body"], [1 / 3, -0.4, 0.0], rtol=1e-15)
    np.testing.assert_allclose(frame["candle_upper"], [1 / 3, 0.2, 0.0], rtol=1e-15)
    np.testing.assert_allclose(frame["candle_lower"], [1 / 3, 0.4, 0.0], rtol=1e-15)


def test_candle_parts_sum_to_one(real: pd.DataFrame) -> None:
    frame = candle(real)
    o, h, low, c = (real[col] for col in ("open", "high", "low", "close"))
    rng = h - low
    ok = rng > 0
    assert (~ok).sum() < 20
    body, upper = frame["candle_body"], frame["candle_upper"]
    np.testing.assert_allclose(body[ok], ((c - o) / rng)[ok], rtol=1e-12)
    np.testing.assert_allclose(upper[ok], ((h - np.maximum(o, c)) / rng)[ok], rtol=1e-12)
    total = body.abs() + upper + frame["candle_lower"]
    np.testing.assert_allclose(total[ok], 1.0, rtol=1e-12)
    assert (frame[~ok] == 0.0).all().all()
    assert body.between(-1, 1).all()
