"""Labels: hand-built sequences, the horizon, and no look-ahead beyond it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import labels
from mlengine.data.schema import BarDataError
from mlengine.labels import LabelError, Labels
from tests.features import bars_from, real_bars, real_slice, synthetic_bars

NAN = np.nan


def _assert_labels(lab: Labels, expected: list[float]) -> None:
    np.testing.assert_array_equal(lab.values.to_numpy(), np.array(expected, dtype=float))


def _constant_range(close: list[float], half_range: float = 1.0) -> pd.DataFrame:
    """Bars whose high and low sit ``half_range`` around the close (ATR = 2 * half_range
    while the close moves by at most ``half_range`` a bar)."""
    c = np.asarray(close, dtype=float)
    return bars_from(c, open_=c, high=c + half_range, low=c - half_range)


# --- direction -----------------------------------------------------------------------------


def test_direction_by_hand() -> None:
    bars = bars_from([100.0, 101.0, 100.0, 100.0, 99.0, 102.0])
    lab = labels.direction(bars, 1)
    _assert_labels(lab, [1, -1, 0, -1, 1, NAN])
    assert lab.horizon == 1
    assert lab.name == "direction_1" == lab.values.name
    assert lab.values.index.equals(bars.index)
    np.testing.assert_allclose(lab.info["ret"].iloc[:2], [0.01, 100.0 / 101.0 - 1.0])
    _assert_labels(labels.direction(bars, 2), [0, -1, -1, 1, NAN, NAN])


def test_direction_dead_zone_in_bps() -> None:
    bars = bars_from([100.0, 101.0, 100.0, 100.0, 99.0, 102.0])
    # 150 bps: only the 3.03 % move leaves the dead zone; inside it the label is 0, not NaN
    _assert_labels(labels.direction(bars, 1, dead_zone=150), [0, 0, 0, 0, 1, NAN])


def test_direction_dead_zone_in_atr() -> None:
    bars = _constant_range([100.0, 100.0, 100.0, 100.0, 101.0, 100.5, 103.0])
    lab = labels.direction(bars, 1, dead_zone=0.75, unit="atr", atr_window=3)
    # ATR = 2 from bar 3 on: threshold 1.5 price units; unknown during the ATR warm-up
    _assert_labels(lab, [NAN, NAN, NAN, 0, 0, 1, NAN])
    np.testing.assert_allclose(lab.info["threshold"].iloc[3], 1.5 / 100.0)


def test_direction_without_dead_zone_has_no_warm_up() -> None:
    lab = labels.direction(_constant_range([100.0, 101.0, 102.0]), 1, unit="atr")
    _assert_labels(lab, [1, 1, NAN])


# --- triple barrier ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("high", "low", "label", "steps"),
    [
        ([100.0, 101.0, 102.5], [100.0, 99.5, 100.5], 1.0, 2),  # profit-take at bar 2
        ([100.0, 100.5, 102.5], [100.0, 98.9, 100.5], -1.0, 1),  # stop at bar 1
        ([100.0, 103.0, 100.5], [100.0, 98.0, 99.5], -1.0, 1),  # both in one bar: stop first
        ([100.0, 101.5, 101.9], [100.0, 99.5, 99.1], 0.0, 2),  # neither: time barrier
        ([100.0, 104.0, 101.0], [100.0, 102.5, 100.5], 1.0, 1),  # gap over the barrier
    ],
)
def test_triple_barrier_by_hand(
    high: list[float], low: list[float], label: float, steps: int
) -> None:
    close = [100.0, (high[1] + low[1]) / 2, (high[2] + low[2]) / 2]
    bars = bars_from(close, open_=close, high=high, low=low)
    lab = labels.triple_barrier(bars, 2, take_profit=0.02, stop_loss=0.01, unit="return")
    _assert_labels(lab, [label, NAN, NAN])
    assert lab.horizon == 2
    assert lab.info["touch_bars"].iloc[0] == steps
    assert lab.info["touch"].iloc[0] == bars.index[steps]
    assert lab.info["upper"].iloc[0] == pytest.approx(102.0)
    assert lab.info["lower"].iloc[0] == pytest.approx(99.0)
    assert lab.info["touch"].iloc[1:].isna().all()


def test_triple_barrier_in_atr() -> None:
    # ATR(3) = 2 at bar 3: barriers 100 + 2 * 2 = 104 and 100 - 1 * 2 = 98
    bars = _constant_range([100.0, 100.0, 100.0, 100.0, 101.0, 102.0, 103.0, 103.5])
    lab = labels.triple_barrier(bars, 4, take_profit=2.0, stop_loss=1.0, atr_window=3)
    assert lab.values.iloc[:3].isna().all()  # ATR warm-up
    assert lab.values.iloc[3] == 1.0  # bar 6 reaches 104
    assert lab.info["touch_bars"].iloc[3] == 3
    assert lab.values.iloc[-4:].isna().all()


# --- breakout --------------------------------------------------------------------------------


def _breakout_bars(last_high: float, last_low: float, last_close: float) -> pd.DataFrame:
    """Four quiet bars (range 99..101, ATR(3) = 2), a quiet fifth, then the bar to test."""
    close = [100.0] * 5 + [last_close]
    high = [101.0] * 5 + [last_high]
    low = [99.0] * 5 + [last_low]
    return bars_from(close, open_=close, high=high, low=low)


@pytest.mark.parametrize(
    ("bar", "label"),
    [
        ((102.2, 100.0, 102.0), 1.0),  # 101 + 0.5 * 2 = 102 reached
        ((101.9, 98.5, 100.0), 0.0),  # stays within range +- 1
        ((100.0, 97.9, 98.0), -1.0),
        ((103.0, 97.0, 100.5), 1.0),  # both ways in one bar: the close is above the middle
        ((103.0, 97.0, 99.0), -1.0),
    ],
)
def test_breakout_by_hand(bar: tuple[float, float, float], label: float) -> None:
    bars = _breakout_bars(*bar)
    lab = labels.breakout(bars, 2, range_window=3, k=0.5, atr_window=3)
    assert lab.values.iloc[:3].isna().all()  # the ATR warms up over 3 bars
    assert lab.values.iloc[3] == label
    assert lab.info["upper"].iloc[3] == pytest.approx(102.0)
    assert lab.info["lower"].iloc[3] == pytest.approx(98.0)
    touched = lab.info["touch_bars"].iloc[3]
    assert touched == 2 if label else np.isnan(touched)
    assert lab.values.iloc[4:].isna().all()


# --- horizon and look-ahead ------------------------------------------------------------------

LABELLERS: dict[str, Callable[[pd.DataFrame, int], Labels]] = {
    "direction": lambda b, h: labels.direction(b, h),
    "direction_atr": lambda b, h: labels.direction(b, h, dead_zone=0.5, unit="atr"),
    "triple_barrier": lambda b, h: labels.triple_barrier(b, h),
    "triple_barrier_ret": lambda b, h: labels.triple_barrier(
        b, h, take_profit=0.004, stop_loss=0.002, unit="return"
    ),
    "breakout": lambda b, h: labels.breakout(b, h),
}


def _draw_bars(data: st.DataObject) -> pd.DataFrame:
    source = data.draw(st.sampled_from(["eurusd_1h", "btcusd_1h_coinbase", "synthetic"]))
    if source == "synthetic":
        return synthetic_bars(300, seed=data.draw(st.integers(0, 2**16)), flat_every=100)
    start = data.draw(st.integers(0, len(real_bars(source)) - 300))
    return real_slice(source, start, 300)


@pytest.mark.parametrize("kind", LABELLERS)
@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_labels_look_ahead_by_their_horizon_only(kind: str, data: st.DataObject) -> None:
    bars = _draw_bars(data)
    h = data.draw(st.integers(1, 30), label="horizon")
    full = LABELLERS[kind](bars, h)
    assert full.horizon == h
    assert full.values.iloc[-h:].isna().all()
    assert full.values.iloc[: len(bars) - h].isin([-1.0, 0.0, 1.0, np.nan]).all()
    # bars after t + h altered: the label of t and its details do not move
    m = data.draw(st.integers(h, len(bars) - 1), label="m")
    factor = np.exp(np.random.default_rng(m).normal(0.0, 0.05, len(bars) - m))
    altered = bars.copy()
    for col in ("open", "high", "low", "close"):
        altered[col] = altered[col].to_numpy() * np.r_[np.ones(m), factor]
    changed = LABELLERS[kind](altered, h)
    keep = m - h  # labels 0 .. m - h - 1 use bars <= m - 1 only
    pd.testing.assert_series_equal(changed.values.iloc[:keep], full.values.iloc[:keep])
    pd.testing.assert_frame_equal(changed.info.iloc[:keep], full.info.iloc[:keep])
    # and the truncated series knows the same labels, and not the last h
    k = data.draw(st.integers(1, len(bars)), label="k")
    cut = LABELLERS[kind](bars.iloc[:k], h)
    known = max(k - h, 0)
    pd.testing.assert_series_equal(cut.values.iloc[:known], full.values.iloc[:known])
    assert cut.values.iloc[known:].isna().all()


def test_labels_on_real_data_are_balanced_enough() -> None:
    bars = real_bars("eurusd_1h")
    lab = labels.direction(bars, 12)
    counts = lab.values.value_counts()
    assert 0.4 < counts[1.0] / counts.sum() < 0.6
    tb = labels.triple_barrier(bars, 24)
    known = tb.info["touch_bars"].dropna()
    assert known.between(1, 24).all()
    touched_at = bars.index.get_indexer(pd.DatetimeIndex(tb.info["touch"].dropna()))
    rows = bars.index.get_indexer(tb.info["touch"].dropna().index)
    np.testing.assert_array_equal(touched_at - rows, known.to_numpy())


@pytest.mark.parametrize("n", [0, 1, 3])
def test_too_few_bars_give_nan(n: int) -> None:
    bars = synthetic_bars(10, seed=0).iloc[:n]
    for kind in LABELLERS:
        lab = LABELLERS[kind](bars, 3)
        assert len(lab.values) == n
        assert lab.values.isna().all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda b: labels.direction(b, 0), "horizon must be an int >= 1, got 0"),
        (lambda b: labels.direction(b, 2.5), "horizon must be an int >= 1, got 2.5"),  # type: ignore[arg-type]
        (lambda b: labels.direction(b, True), "horizon must be an int >= 1"),
        (lambda b: labels.direction(b, 5, dead_zone=-1), "dead_zone must be a finite number >= 0"),
        (lambda b: labels.direction(b, 5, dead_zone=NAN), "dead_zone must be a finite number"),
        (lambda b: labels.direction(b, 5, unit="pips"), "unit must be one of bps, atr, got"),
        (lambda b: labels.direction(b, 5, dead_zone=1, unit="atr", atr_window=0), "atr_window"),
        (lambda b: labels.triple_barrier(b, 5, take_profit=0), "take_profit must be a finite"),
        (lambda b: labels.triple_barrier(b, 5, stop_loss=np.inf), "stop_loss must be a finite"),
        (lambda b: labels.triple_barrier(b, 5, unit="bps"), "unit must be one of atr, return"),
        (lambda b: labels.breakout(b, 5, range_window=1), "range_window must be an int >= 2"),
        (lambda b: labels.breakout(b, 5, k=-0.5), "k must be a finite number >= 0"),
    ],
)
def test_bad_params(call: Callable[[pd.DataFrame], Labels], match: str) -> None:
    with pytest.raises(LabelError, match=match):
        call(synthetic_bars(50, seed=0))


def test_bad_bars() -> None:
    with pytest.raises(BarDataError, match="features need a bar frame"):
        labels.direction(np.ones((5, 5)), 1)  # type: ignore[arg-type]
    bars = synthetic_bars(50, seed=0)
    low = bars["low"].to_numpy().copy()
    low[10] = np.nan
    bars["low"] = low
    with pytest.raises(BarDataError, match="not positive and finite") as err:
        labels.triple_barrier(bars, 5)
    assert (err.value.row, err.value.column) == (11, "low")
