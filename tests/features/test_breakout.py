"""Breakout features: pandas / TA-Lib oracles, zero denominators, bad parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from mlengine.features import FeatureError, compute_features, list_features
from mlengine.features.breakout import (
    atr_ratio,
    bb_squeeze,
    keltner,
    range_compression,
    rvol_ratio,
    volume_surge,
)
from tests.features import bars_from, real_slice, synthetic_bars

RTOL, ATOL = 1e-9, 1e-12


@pytest.fixture(scope="module", params=["eurusd_1h", "btcusd_1h_coinbase"])
def real(request: pytest.FixtureRequest) -> pd.DataFrame:
    return real_slice(request.param, 3000, 1500)


def _atr(bars: pd.DataFrame, w: int) -> pd.Series:
    h, low, c = (bars[col].to_numpy() for col in ("high", "low", "close"))
    return pd.Series(talib.ATR(h, low, c, timeperiod=w), index=bars.index)


def _ema(x: np.ndarray, w: int) -> np.ndarray:
    """TA-Lib's EMA written out: the mean of the first ``w`` values, then
    ``e = e + 2 / (w + 1) * (x - e)``."""
    out = np.full(len(x), np.nan)
    out[w - 1] = x[:w].mean()
    for t in range(w, len(x)):
        out[t] = out[t - 1] + 2.0 / (w + 1) * (x[t] - out[t - 1])
    return out


def test_the_group_and_its_columns(real: pd.DataFrame) -> None:
    assert list_features("breakout") == [
        "atr_ratio",
        "rvol_ratio",
        "bb_squeeze",
        "keltner",
        "range_compression",
        "volume_surge",
    ]
    frame = compute_features(real, "breakout")
    assert list(frame.columns) == [
        "atr_ratio_5_50",
        "rvol_ratio_5_20",
        "rvol_ratio_20_100",
        "bb_squeeze_20_100",
        "kc_pos_20_1.5",
        "kc_squeeze_20_1.5_2",
        "range_comp_20",
        "range_comp_20_100",
        "range_pos_20",
        "volume_surge_20",
    ]
    assert (frame.dtypes == np.float64).all()
    assert frame.iloc[118:].notna().all().all()  # bb_squeeze warms up longest: 20 + 100 - 2
    assert frame.iloc[117].isna().any()
    assert np.isfinite(frame.iloc[118:].to_numpy()).all()


def test_atr_ratio_matches_talib(real: pd.DataFrame) -> None:
    got = atr_ratio(real, short=7, long=30)["atr_ratio_7_30"]
    expected = _atr(real, 7) / _atr(real, 30)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    assert got.iloc[:30].isna().all() and got.iloc[30:].notna().all()


def test_rvol_ratio_matches_pandas(real: pd.DataFrame) -> None:
    frame = rvol_ratio(real, windows=(30, 6, 12))  # any order: sorted
    assert list(frame.columns) == ["rvol_ratio_6_12", "rvol_ratio_12_30"]
    r = np.log(real["close"]).diff()
    rvol = {w: r.rolling(w).std(ddof=1) for w in (6, 12, 30)}
    np.testing.assert_allclose(frame["rvol_ratio_6_12"], rvol[6] / rvol[12], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(frame["rvol_ratio_12_30"], rvol[12] / rvol[30], rtol=RTOL, atol=ATOL)


def test_bb_squeeze_matches_pandas(real: pd.DataFrame) -> None:
    got = bb_squeeze(real, window=10, lookback=50)["bb_squeeze_10_50"]
    c = real["close"]
    width = c.rolling(10).std(ddof=0) / c.rolling(10).mean()
    lo, hi = width.rolling(50).min(), width.rolling(50).max()
    np.testing.assert_allclose(got, (width - lo) / (hi - lo), rtol=1e-9, atol=1e-9)
    assert got.min() == 0.0 and got.max() == 1.0
    assert got.iloc[: 10 + 50 - 2].isna().all() and got.iloc[10 + 50 - 2 :].notna().all()


def test_keltner_matches_talib_and_pandas(real: pd.DataFrame) -> None:
    frame = keltner(real, window=10, k=2.0, bb_k=1.5)
    assert list(frame.columns) == ["kc_pos_10_2", "kc_squeeze_10_2_1.5"]
    c = real["close"]
    atr = _atr(real, 10)
    ema = _ema(c.to_numpy(), 10)
    np.testing.assert_allclose(frame["kc_pos_10_2"], (c - ema) / (2.0 * atr), rtol=RTOL, atol=ATOL)
    # TA-Lib's running variance of a close near 1.1 (EURUSD) loses ~1e-9 relative to
    # pandas' where the spread is tiny: its own STDDEV is the oracle, pandas the check
    std = talib.STDDEV(c.to_numpy(), timeperiod=10, nbdev=1.0)
    np.testing.assert_allclose(std, c.rolling(10).std(ddof=0), rtol=1e-8)
    np.testing.assert_allclose(
        frame["kc_squeeze_10_2_1.5"], 1.5 * std / (2.0 * atr), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(ema, talib.EMA(c.to_numpy(), timeperiod=10), rtol=1e-12)


def test_range_compression_matches_pandas(real: pd.DataFrame) -> None:
    frame = range_compression(real, window=12, long=48, atr_window=20)
    rng = real["high"].rolling(12).max() - real["low"].rolling(12).min()
    rng_l = real["high"].rolling(48).max() - real["low"].rolling(48).min()
    np.testing.assert_allclose(frame["range_comp_12"], rng / _atr(real, 20), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(frame["range_comp_12_48"], rng / rng_l, rtol=RTOL, atol=ATOL)
    pos = (real["close"] - real["low"].rolling(12).min()) / rng
    np.testing.assert_allclose(frame["range_pos_12"], pos, rtol=RTOL, atol=ATOL)
    assert frame["range_comp_12"].iloc[:20].isna().all()  # ATR(20) warms up longer
    assert frame["range_comp_12"].iloc[20:].notna().all()
    assert frame["range_pos_12"].iloc[:11].isna().all()
    assert frame["range_pos_12"].iloc[11:].between(0.0, 1.0).all()
    assert frame["range_comp_12_48"].iloc[47:].between(0.0, 1.0).all()


def test_volume_surge_matches_pandas(real: pd.DataFrame) -> None:
    got = volume_surge(real, window=10)["volume_surge_10"]
    v = real["volume"]
    np.testing.assert_allclose(got, v / v.rolling(10).mean(), rtol=RTOL, atol=ATOL)
    assert got.iloc[9:].le(10.0).all()


# --- zero denominators --------------------------------------------------------------------------


def test_flat_bars_give_the_documented_values() -> None:
    bars = bars_from(np.full(200, 50.0))  # open = high = low = close: every range is 0
    frame = compute_features(
        bars,
        "breakout",
        params={"bb_squeeze": {"lookback": 30}, "rvol_ratio": {"windows": (5, 20)}},
    )
    after = frame.iloc[100:]
    assert (after["atr_ratio_5_50"] == 1.0).all()
    assert (after["rvol_ratio_5_20"] == 1.0).all()
    assert (after["bb_squeeze_20_30"] == 0.0).all()
    assert (after["kc_pos_20_1.5"] == 0.0).all()
    assert (after["kc_squeeze_20_1.5_2"] == 0.0).all()
    assert (after["range_comp_20"] == 0.0).all()
    assert (after["range_comp_20_100"] == 1.0).all()
    assert (after["range_pos_20"] == 0.5).all()


def test_flat_runs_inside_a_moving_series_stay_finite() -> None:
    bars = synthetic_bars(600, seed=3, flat_every=120)
    frame = compute_features(bars, "breakout")
    values = frame.iloc[118:].to_numpy()
    assert np.isfinite(values).all()
    # bars 120 .. 149 are flat: one-bar returns 0 from bar 120 on
    ratio = frame["rvol_ratio_5_20"].to_numpy()
    assert (ratio[124:139] == 0.0).all()  # 5 zero returns, not yet 20
    assert (ratio[139:150] == 1.0).all()  # 20 zero returns: both volatilities 0
    assert (frame["range_comp_20_100"].to_numpy()[139:150] == 0.0).all()  # the long one moves


def test_volume_without_trades_gives_zero() -> None:
    bars = bars_from(100.0 + np.arange(12.0))
    bars["volume"] = [2.0, 4.0, 0.0, 6.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    got = volume_surge(bars, window=3)["volume_surge_3"].to_numpy()
    expected = [np.nan, np.nan, 0.0, 6.0 / (10.0 / 3.0), 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    bars["volume"] = 0.0  # no volume at all (as in some FX feeds)
    got = volume_surge(bars, window=3)["volume_surge_3"].to_numpy()
    np.testing.assert_array_equal(got, [np.nan, np.nan, *[0.0] * 10])


@pytest.mark.parametrize("value", [np.nan, -1.0])
def test_bad_volume_is_named(value: float) -> None:
    bars = bars_from(100.0 + np.arange(12.0))
    volume = np.ones(12)
    volume[7] = value
    bars["volume"] = volume
    with pytest.raises(FeatureError, match=r"volume_surge: volume .* at 2024-01-01 07:00.*row 8"):
        volume_surge(bars)


@pytest.mark.parametrize("n", [0, 1, 2, 19, 20])
def test_too_few_bars_give_nan(n: int) -> None:
    frame = compute_features(synthetic_bars(40, seed=2).iloc[:n], "breakout")
    assert frame.shape == (n, 10)
    early = ["range_comp_20", "range_pos_20", "volume_surge_20", "rvol_ratio_5_20"]
    assert frame.drop(columns=early).isna().all().all()
    assert frame["range_pos_20"].notna().sum() == max(n - 19, 0)
    assert frame["rvol_ratio_5_20"].notna().sum() == max(n - 20, 0)


# --- bad parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (atr_ratio, {"short": 50, "long": 50}, "atr_ratio: short must be < long"),
        (atr_ratio, {"short": 0}, r"atr_ratio: short must be an int in \[1,"),
        (atr_ratio, {"long": 2.5}, "atr_ratio: long must be an int"),
        (rvol_ratio, {"windows": 20}, "rvol_ratio: windows must hold at least two windows"),
        (rvol_ratio, {"windows": (5, 5)}, "rvol_ratio: windows must be distinct"),
        (rvol_ratio, {"windows": (1, 5)}, r"rvol_ratio: windows must be an int in \[2,"),
        (bb_squeeze, {"window": 1}, r"bb_squeeze: window must be an int in \[2,"),
        (bb_squeeze, {"lookback": True}, "bb_squeeze: lookback must be an int"),
        (keltner, {"k": 0.0}, "keltner: k must be a finite number > 0"),
        (keltner, {"bb_k": np.inf}, "keltner: bb_k must be a finite number > 0"),
        (keltner, {"window": 1}, r"keltner: window must be an int in \[2,"),
        (range_compression, {"window": 100}, "range_compression: window must be < long"),
        (range_compression, {"atr_window": 0}, "range_compression: atr_window must be an int"),
        (volume_surge, {"window": 0}, "volume_surge: window must be an int"),
    ],
)
def test_bad_params_raise(func: object, kwargs: dict[str, object], match: str) -> None:
    bars = bars_from(100.0 + np.arange(10.0))
    with pytest.raises(FeatureError, match=match):
        func(bars, **kwargs)  # type: ignore[operator]
