"""Rule baselines on the bundled real bars: the rules, p_up, truncation, save/load, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.backtest.baselines import (
    BuyAndHoldBaseline,
    SMACrossover,
    SMACrossoverParams,
    TimeSeriesMomentum,
)
from mlengine.data.schema import BarDataError
from mlengine.strategies import NotFittedError, StrategyError


@pytest.fixture(scope="module", params=["eurusd_1h", "btcusd_1h_coinbase"])
def real(request: pytest.FixtureRequest) -> pd.DataFrame:
    return datasets.load(request.param)


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


def _fitted(strategy: object, bars: pd.DataFrame) -> object:
    strategy.fit(bars.iloc[:100])  # type: ignore[attr-defined]
    return strategy


def _sma_oracle(close: np.ndarray, n: int) -> np.ndarray:
    out = np.full(close.size, np.nan)
    csum = np.cumsum(np.r_[0.0, close])
    out[n - 1 :] = (csum[n:] - csum[:-n]) / n
    return out


def test_sma_crossover_is_the_sign_of_fast_minus_slow(real: pd.DataFrame) -> None:
    pos = SMACrossover(fast=10, slow=50).signals(real)["position"].to_numpy()
    close = real["close"].to_numpy()
    diff = _sma_oracle(close, 10) - _sma_oracle(close, 50)
    assert (pos[:49] == 0).all()  # warm-up flat
    clear = np.abs(diff) > 1e-9 * close  # away from round-off ties
    assert clear[49:].mean() > 0.99
    np.testing.assert_array_equal(pos[clear], np.sign(diff[clear]))
    assert {-1.0, 1.0} <= set(np.unique(pos))


def test_sma_crossover_long_only_never_shorts(real: pd.DataFrame) -> None:
    both = SMACrossover(fast=5, slow=20).signals(real)["position"]
    long = SMACrossover(fast=5, slow=20, allow_short=False).signals(real)["position"]
    np.testing.assert_array_equal(long, np.maximum(both, 0.0))


def test_tsmom_is_the_sign_of_the_past_return(real: pd.DataFrame) -> None:
    lookback = 24
    pos = TimeSeriesMomentum(lookback=lookback).signals(real)["position"].to_numpy()
    close = real["close"].to_numpy()
    expected = np.r_[np.zeros(lookback), np.sign(close[lookback:] - close[:-lookback])]
    np.testing.assert_array_equal(pos, expected)


def test_tsmom_vol_scaling_keeps_the_side_and_caps_the_size(real: pd.DataFrame) -> None:
    raw = TimeSeriesMomentum(lookback=24).signals(real)["position"].to_numpy()
    scaled = TimeSeriesMomentum(lookback=24, vol_target=0.1).signals(real)["position"].to_numpy()
    assert np.all(np.abs(scaled) <= 1.0)
    assert (scaled[:20] == 0).all()  # volatility warm-up
    live = scaled != 0
    np.testing.assert_array_equal(np.sign(scaled[live]), raw[live])
    assert np.abs(scaled[live]).min() < 1.0  # some bars are scaled down


def test_tsmom_vol_scaling_needs_a_market(eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:200].copy()
    del bars.attrs["market"]
    with pytest.raises(StrategyError, match="vol_target needs market="):
        TimeSeriesMomentum(vol_target=0.1).signals(bars)
    given_market = TimeSeriesMomentum(vol_target=0.1, market="fx").signals(bars)
    assert len(given_market) == 200


def test_buy_and_hold_is_always_long(real: pd.DataFrame) -> None:
    pred = _fitted(BuyAndHoldBaseline(), real).predict_proba(real)  # type: ignore[attr-defined]
    assert (pred["p_up"] == 1.0).all()
    assert (pred["position"] == 1.0).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: SMACrossover(fast=10, slow=50),
        lambda: TimeSeriesMomentum(lookback=12, vol_target=0.15),
        BuyAndHoldBaseline,
    ],
)
def test_p_up_maps_the_position(eurusd: pd.DataFrame, make: Callable[[], object]) -> None:
    strategy = _fitted(make(), eurusd)
    pred = strategy.predict_proba(eurusd)  # type: ignore[attr-defined]
    assert pred.index.equals(eurusd.index)
    np.testing.assert_allclose(pred["p_up"], (1.0 + pred["position"]) / 2.0)
    assert pred["p_up"].between(0.0, 1.0).all()
    pd.testing.assert_series_equal(
        pred["position"],
        strategy.signals(eurusd)["position"],  # type: ignore[attr-defined]
    )


_TRUNCATION_BARS = 1500
_BASELINES: dict[str, Callable[[], object]] = {
    "sma": lambda: SMACrossover(fast=7, slow=30),
    "sma_long": lambda: SMACrossover(fast=3, slow=11, allow_short=False),
    "tsmom": lambda: TimeSeriesMomentum(lookback=9),
    "tsmom_vol": lambda: TimeSeriesMomentum(lookback=5, vol_target=0.1, vol_window=12),
    "hold": BuyAndHoldBaseline,
}


@pytest.mark.parametrize("key", list(_BASELINES))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(k=st.integers(min_value=0, max_value=_TRUNCATION_BARS))
def test_truncation_values_on_a_prefix_equal_the_full_series(
    eurusd: pd.DataFrame, key: str, k: int
) -> None:
    bars = eurusd.iloc[:_TRUNCATION_BARS]
    strategy = _fitted(_BASELINES[key](), bars)
    full = strategy.predict_proba(bars)  # type: ignore[attr-defined]
    head = strategy.predict_proba(bars.iloc[:k])  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(head, full.iloc[:k], check_exact=True)


def test_predict_before_fit_raises(eurusd: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError, match="sma_crossover: call fit"):
        SMACrossover().predict_proba(eurusd)
    with pytest.raises(NotFittedError):
        TimeSeriesMomentum().save(Path("unused"))


def test_fit_records_only_the_last_training_bar(eurusd: pd.DataFrame) -> None:
    strategy = SMACrossover().fit(eurusd.iloc[:300])
    assert strategy.train_end_ == eurusd.index[299]
    with pytest.raises(StrategyError, match="fit on empty bars"):
        SMACrossover().fit(eurusd.iloc[:0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SMACrossover(fast=4, slow=9, allow_short=False),
        lambda: TimeSeriesMomentum(lookback=3, vol_target=0.2, market="fx"),
        BuyAndHoldBaseline,
    ],
)
def test_save_and_load_round_trip(
    tmp_path: Path, eurusd: pd.DataFrame, make: Callable[[], object]
) -> None:
    strategy = _fitted(make(), eurusd)
    strategy.save(tmp_path / "model")  # type: ignore[attr-defined]
    loaded = type(strategy).load(tmp_path / "model")  # type: ignore[attr-defined]
    assert loaded.params == strategy.params  # type: ignore[attr-defined]
    assert loaded.train_end_ == strategy.train_end_  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(
        loaded.predict_proba(eurusd),
        strategy.predict_proba(eurusd),  # type: ignore[attr-defined]
    )


def test_load_rejects_another_strategy_and_bad_files(tmp_path: Path, eurusd: pd.DataFrame) -> None:
    SMACrossover().fit(eurusd).save(tmp_path / "sma")
    with pytest.raises(StrategyError, match="holds strategy 'sma_crossover', not 'tsmom'"):
        TimeSeriesMomentum.load(tmp_path / "sma")
    with pytest.raises(StrategyError, match="cannot read the strategy manifest"):
        SMACrossover.load(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(StrategyError, match="cannot read the strategy manifest"):
        SMACrossover.load(tmp_path / "bad")
    (tmp_path / "bad" / "manifest.json").write_text(
        '{"strategy": "sma_crossover", "params": {"fast": 2, "slow": 5, "colour": 1}}'
    )
    with pytest.raises(StrategyError, match="bad params"):
        SMACrossover.load(tmp_path / "bad")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SMACrossover(fast=50, slow=50), "fast=50 must be shorter than slow=50"),
        (lambda: SMACrossover(fast=0, slow=5), "fast must be a positive integer"),
        (lambda: SMACrossover(fast=2.5, slow=5), "fast must be a positive integer"),
        (lambda: SMACrossover(fast=True, slow=5), "fast must be a positive integer"),
        (lambda: TimeSeriesMomentum(lookback=0), "lookback must be a positive integer"),
        (lambda: TimeSeriesMomentum(vol_window=1), "vol_window must be >= 2"),
        (lambda: TimeSeriesMomentum(vol_target=-0.1), "vol_target must be positive"),
        (lambda: SMACrossover(SMACrossoverParams(), fast=3), "params or keyword arguments"),
        (lambda: TimeSeriesMomentum(SMACrossoverParams()), "params must be TimeSeriesMomentum"),
    ],
)
def test_bad_parameters_are_rejected(make: Callable[[], object], message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        make()


def test_bars_off_the_contract_are_rejected(eurusd: pd.DataFrame) -> None:
    naked = eurusd.iloc[:100].copy()
    naked.attrs = {}
    with pytest.raises(BarDataError, match="attrs\\['symbol'\\] is missing"):
        SMACrossover().signals(naked)
    with pytest.raises(BarDataError, match="columns must be"):
        BuyAndHoldBaseline().fit(eurusd[["close"]])
