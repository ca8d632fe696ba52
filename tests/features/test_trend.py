"""Trend features: hand-checked values, agreement with a plain pandas reference, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlengine.features import FeatureError, compute_features
from mlengine.features.trend import momentum_persistence, trend_strength
from tests.features import bars_from, real_slice, synthetic_bars


@pytest.fixture(scope="module", params=["eurusd_1h", "btcusd_1h_coinbase", "synthetic_flat"])
def bars(request: pytest.FixtureRequest) -> pd.DataFrame:
    if request.param == "synthetic_flat":  # runs of flat bars, as outage fills
        return synthetic_bars(1500, seed=4, flat_every=200)
    return real_slice(request.param, 1000, 1500)


def _reference_trend(bars: pd.DataFrame, w: int) -> pd.DataFrame:
    c = bars["close"]
    path = c.diff().abs().rolling(w).sum()
    er = (c.diff(w) / path).where(c.diff(w) != 0, 0.0).where(path.notna())

    def tstat(values: np.ndarray) -> float:
        if values.std() <= 1e-6 * values[-1]:
            return 0.0
        values = values - values[-1]  # the fit's residuals without the level's rounding
        x = np.arange(values.size, dtype=np.float64)
        slope, intercept = np.polyfit(x, values, 1)
        resid = values - (intercept + slope * x)
        sxx = ((x - x.mean()) ** 2).sum()
        return float(slope / np.sqrt(resid @ resid / (values.size - 2) / sxx))

    t = c.rolling(w + 1).apply(tstat, raw=True)
    return pd.DataFrame({f"er_{w}": er, f"trend_t_{w}": t})


def _reference_persistence(bars: pd.DataFrame, w: int) -> pd.DataFrame:
    s = np.sign(np.log(bars["close"]).diff())
    ac = (s * s.shift(1)).rolling(w).mean()
    return pd.DataFrame({f"sign_ac_{w}": ac, f"sign_mean_{w}": s.rolling(w).mean()})


@pytest.mark.parametrize("w", [3, 5, 20])
def test_trend_strength_matches_pandas(bars: pd.DataFrame, w: int) -> None:
    got = trend_strength(bars, window=w)
    ref = _reference_trend(bars, w)
    assert list(got.columns) == list(ref.columns)
    assert got.iloc[:w].isna().all().all() and got.iloc[w:].notna().all().all()
    np.testing.assert_allclose(got[f"er_{w}"], ref[f"er_{w}"], rtol=1e-9, atol=1e-12)
    # TA-Lib's slope and variance work on the price level: their rounding grows with the
    # level over the window's spread and with 1 / (1 - R^2), which short fits on quantised
    # prices make large (w = 2, one degree of freedom, meets exact fits: not compared)
    np.testing.assert_allclose(got[f"trend_t_{w}"], ref[f"trend_t_{w}"], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("w", [2, 5, 20])
def test_momentum_persistence_matches_pandas(bars: pd.DataFrame, w: int) -> None:
    got = momentum_persistence(bars, window=w)
    ref = _reference_persistence(bars, w)
    assert list(got.columns) == list(ref.columns)
    assert got.iloc[: w + 1, 0].isna().all() and got.iloc[w + 1 :, 0].notna().all()
    assert got.iloc[:w, 1].isna().all() and got.iloc[w:, 1].notna().all()
    np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-9, atol=1e-12)


def test_by_hand_on_a_line_a_zigzag_and_a_flat_run() -> None:
    w = 10
    line = bars_from(100.0 + 0.5 * np.arange(40.0))
    trend, persist = trend_strength(line, window=w), momentum_persistence(line, window=w)
    np.testing.assert_allclose(trend[f"er_{w}"].iloc[w:], 1.0, rtol=1e-12)
    t = trend[f"trend_t_{w}"].iloc[w:]
    assert np.isfinite(t).all() and (t > 1e5).all()  # an exact fit: large, finite
    assert (persist[f"sign_ac_{w}"].iloc[w + 1 :] == 1.0).all()
    assert (persist[f"sign_mean_{w}"].iloc[w:] == 1.0).all()

    zigzag = bars_from(np.where(np.arange(40) % 2 == 0, 100.0, 101.0))
    trend, persist = trend_strength(zigzag, window=w), momentum_persistence(zigzag, window=w)
    assert (trend[f"er_{w}"].iloc[w:] == 0.0).all()  # even w: back where it started
    assert (persist[f"sign_ac_{w}"].iloc[w + 1 :] == -1.0).all()
    assert (persist[f"sign_mean_{w}"].iloc[w:] == 0.0).all()

    # a flat run after volatile bars: TA-Lib's running sums leave a residue, not a trend
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 60)))
    close[30:] = close[29]
    flat = bars_from(close)
    trend, persist = trend_strength(flat, window=w), momentum_persistence(flat, window=w)
    assert (trend.iloc[30 + w :] == 0.0).all().all()
    assert (persist.iloc[30 + w + 1 :] == 0.0).all().all()


def test_a_falling_trend_gives_negative_values() -> None:
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(-0.01 + rng.normal(0.0, 0.002, 60)))
    bars = bars_from(close)
    trend = trend_strength(bars, window=20)
    assert (trend["er_20"].iloc[20:] < -0.5).all()
    assert (trend["trend_t_20"].iloc[20:] < -10).all()
    assert (momentum_persistence(bars, window=20)["sign_mean_20"].iloc[20:] < -0.8).all()


def test_registered_in_the_trend_group() -> None:
    bars = synthetic_bars(100, seed=1)
    frame = compute_features(bars, ["trend"])
    assert list(frame.columns) == ["er_20", "trend_t_20", "sign_ac_20", "sign_mean_20"]
    assert (frame.dtypes == np.float64).all()


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (trend_strength, {"window": 1}, r"trend_strength: window must be an int in \[2, "),
        (trend_strength, {"window": 2.5}, "trend_strength: window must be an int"),
        (trend_strength, {"window": True}, "trend_strength: window must be an int"),
        (momentum_persistence, {"window": 1}, r"persistence: window must be an int in \[2"),
        (momentum_persistence, {"window": "20"}, "momentum_persistence: window must be an int"),
        (trend_strength, {"span": 3}, r"trend_strength: unknown parameter\(s\) span"),
    ],
)
def test_bad_params(func: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(FeatureError, match=match):
        func(synthetic_bars(50, seed=0), **kwargs)


def test_fewer_bars_than_the_window_gives_nan() -> None:
    bars = synthetic_bars(5, seed=2)
    assert trend_strength(bars, window=20).isna().all().all()
    assert momentum_persistence(bars, window=20).isna().all().all()
    assert len(trend_strength(bars.iloc[:0])) == 0
    assert len(momentum_persistence(bars.iloc[:0])) == 0
