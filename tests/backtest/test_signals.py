"""Signal rules: how threshold, proportional and hysteresis rules map ``p_up`` to positions,
causality, hysteresis against the plain threshold, and bad parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.backtest.signals import (
    HysteresisSignal,
    ProportionalSignal,
    SignalError,
    ThresholdSignal,
)
from mlengine.data.schema import MLEngineError

NAN = float("nan")

# p_up values: any probability, a grid that lands on the thresholds, 0.5 itself and NaN
P_UP = st.one_of(
    st.floats(0.0, 1.0),
    st.integers(0, 40).map(lambda k: k / 40),
    st.just(0.5),
    st.just(NAN),
)


def frame(p_up: list[float] | np.ndarray) -> pd.DataFrame:
    index = pd.date_range("2020-01-01", periods=len(p_up), freq="1h", tz="UTC")
    return pd.DataFrame({"p_up": np.asarray(p_up, dtype=np.float64)}, index=index)


def positions(rule: Any, p_up: list[float] | np.ndarray) -> np.ndarray:
    pred = frame(p_up)
    return np.asarray(rule(pred, pred))


def changes(pos: np.ndarray) -> int:
    """Bars whose position differs from the bar before (starting flat)."""
    return int(np.count_nonzero(np.diff(pos, prepend=0.0)))


@st.composite
def hysteresis_rules(draw: st.DrawFn) -> HysteresisSignal:
    enter = draw(st.one_of(st.just(0.0), st.sampled_from([0.05, 0.1]), st.floats(0.0, 0.49)))
    share = draw(st.one_of(st.sampled_from([-1.0, 0.0, 1.0]), st.floats(-1.0, 1.0)))
    return HysteresisSignal(
        enter=enter,
        exit=share * enter,
        long_only=draw(st.booleans()),
        min_hold=draw(st.integers(1, 5)),
    )


def test_threshold_and_proportional_rules_map_p_up() -> None:
    p_up = [0.9, 0.56, 0.5, 0.44, 0.1, NAN]
    np.testing.assert_array_equal(positions(ThresholdSignal(), p_up), [1, 1, 0, -1, -1, 0])
    np.testing.assert_array_equal(positions(ThresholdSignal(margin=0.1), p_up), [1, 0, 0, 0, -1, 0])
    np.testing.assert_array_equal(
        positions(ThresholdSignal(long_only=True), p_up), [1, 1, 0, 0, 0, 0]
    )
    np.testing.assert_allclose(
        positions(ProportionalSignal(), p_up), [0.8, 0.12, 0, -0.12, -0.8, 0]
    )
    np.testing.assert_allclose(
        positions(ProportionalSignal(long_only=True), p_up), [0.8, 0.12, 0, 0, 0, 0]
    )


@pytest.mark.parametrize("margin", [0.5, -0.1, NAN, "0.1"])
def test_threshold_rejects_bad_margin(margin: Any) -> None:
    with pytest.raises(SignalError, match="margin must be in"):
        ThresholdSignal(margin=margin)


# entry above 0.55 or below 0.45; 0.49 and 0.51 sit inside the band
BAND = [0.5, 0.54, 0.56, 0.53, 0.51, 0.49, 0.46, 0.44, 0.47, 0.49, 0.51, 0.54, 0.56]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # long exits at or below 0.5, short at or above 0.5
        (HysteresisSignal(), [0, 0, 1, 1, 1, 0, 0, -1, -1, -1, 0, 0, 1]),
        (HysteresisSignal(long_only=True), [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
        # a narrower band: long exits at or below 0.52, short at or above 0.48
        (HysteresisSignal(exit=0.02), [0, 0, 1, 1, 0, 0, 0, -1, -1, 0, 0, 0, 1]),
        # hold until the opposite entry
        (HysteresisSignal(exit=-0.05), [0, 0, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, 1]),
        # enter = exit = 0: the side of 0.5 (0.5 itself enters nothing)
        (HysteresisSignal(enter=0.0), [0, 1, 1, 1, 1, -1, -1, -1, -1, -1, 1, 1, 1]),
    ],
)
def test_hysteresis_enters_stays_in_band_and_exits(
    rule: HysteresisSignal, expected: list[int]
) -> None:
    np.testing.assert_array_equal(positions(rule, BAND), expected)


def test_hysteresis_entries_are_strict_and_exits_inclusive() -> None:
    p_up = [0.5, 0.56, 0.5, 0.44, 0.5]  # 0.5 enters nothing and closes what is open
    np.testing.assert_array_equal(positions(HysteresisSignal(enter=0.0), p_up), [0, 1, 0, -1, 0])
    np.testing.assert_array_equal(positions(HysteresisSignal(), p_up), [0, 1, 0, -1, 0])
    at_band = [0.55, 0.56, 0.52, 0.45, 0.44, 0.48]  # on the entry / exit levels exactly
    rule = HysteresisSignal(exit=0.02)
    np.testing.assert_array_equal(positions(rule, at_band), [0, 1, 0, 0, -1, 0])


def test_hysteresis_exit_and_entry_on_one_bar_flip_directly() -> None:
    p_up = [0.56, 0.44, 0.52, 0.57]
    np.testing.assert_array_equal(positions(HysteresisSignal(), p_up), [1, -1, 0, 1])
    np.testing.assert_array_equal(positions(HysteresisSignal(exit=-0.05), p_up), [1, -1, -1, 1])
    np.testing.assert_array_equal(positions(HysteresisSignal(long_only=True), p_up), [1, 0, 0, 1])


def test_hysteresis_holds_min_hold_bars_before_exit_or_flip() -> None:
    p_up = [0.56, 0.49, 0.49, 0.49, 0.56, 0.3, 0.4, 0.4]
    np.testing.assert_array_equal(positions(HysteresisSignal(), p_up), [1, 0, 0, 0, 1, -1, -1, -1])
    # the entry bar counts: three bars long, then out; the flip waits for the third bar
    np.testing.assert_array_equal(
        positions(HysteresisSignal(min_hold=3), p_up), [1, 1, 1, 0, 1, 1, 1, -1]
    )
    np.testing.assert_array_equal(
        positions(HysteresisSignal(min_hold=2), p_up), [1, 1, 0, 0, 1, 1, -1, -1]
    )


def test_hysteresis_goes_flat_on_a_missing_prediction_despite_min_hold() -> None:
    p_up = [0.56, NAN, 0.52, 0.56, 0.3, NAN, NAN, 0.3]
    np.testing.assert_array_equal(
        positions(HysteresisSignal(min_hold=5), p_up), [1, 0, 0, 1, 1, 0, 0, -1]
    )
    np.testing.assert_array_equal(positions(HysteresisSignal(exit=-0.05), [NAN] * 3), [0, 0, 0])
    assert positions(HysteresisSignal(), []).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"enter": -0.01}, "enter must be in"),
        ({"enter": 0.5}, "enter must be in"),
        ({"enter": NAN}, "enter must be in"),
        ({"enter": "0.1"}, "enter must be in"),
        ({"exit": 0.051}, r"exit must be in \[-enter, enter\]"),
        ({"enter": 0.1, "exit": -0.11}, r"exit must be in \[-enter, enter\]"),
        ({"enter": 0.0, "exit": 0.01}, r"exit must be in \[-enter, enter\]"),
        ({"exit": NAN}, r"exit must be in \[-enter, enter\]"),
        ({"min_hold": 0}, "min_hold must be an integer >= 1"),
        ({"min_hold": 1.5}, "min_hold must be an integer >= 1"),
        ({"min_hold": True}, "min_hold must be an integer >= 1"),
    ],
)
def test_hysteresis_rejects_bad_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SignalError, match=message) as info:
        HysteresisSignal(**kwargs)
    assert isinstance(info.value, MLEngineError)


@settings(max_examples=200, deadline=None)
@given(rule=hysteresis_rules(), p_up=st.lists(P_UP, max_size=60))
def test_hysteresis_positions_are_sides(rule: HysteresisSignal, p_up: list[float]) -> None:
    pos = positions(rule, p_up)
    assert pos.shape == (len(p_up),)
    assert set(np.unique(pos)) <= ({0.0, 1.0} if rule.long_only else {-1.0, 0.0, 1.0})
    assert not pos[np.isnan(p_up)].any()


@settings(max_examples=200, deadline=None)
@given(
    rule=hysteresis_rules(),
    p_up=st.lists(P_UP, max_size=60),
    other=st.lists(P_UP, max_size=20),
    data=st.data(),
)
def test_hysteresis_is_causal(
    rule: HysteresisSignal, p_up: list[float], other: list[float], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(p_up)))
    head = positions(rule, p_up[:k])
    np.testing.assert_array_equal(positions(rule, p_up)[:k], head)
    np.testing.assert_array_equal(positions(rule, p_up[:k] + other)[:k], head)


@settings(max_examples=200, deadline=None)
@given(rule=hysteresis_rules(), p_up=st.lists(P_UP, max_size=60))
def test_hysteresis_holds_each_position_min_hold_bars_or_until_a_gap(
    rule: HysteresisSignal, p_up: list[float]
) -> None:
    pos = positions(rule, p_up)
    gap = np.isnan(p_up)
    for t in np.flatnonzero((pos != 0) & (np.diff(pos, prepend=0.0) != 0)):
        window = slice(t, min(t + rule.min_hold, pos.size))
        covered = ~np.logical_or.accumulate(gap[window])
        assert (pos[window][covered] == pos[t]).all()


@settings(max_examples=200, deadline=None)
@given(long_only=st.booleans(), p_up=st.lists(P_UP, max_size=60))
def test_hysteresis_without_band_is_the_threshold_rule(long_only: bool, p_up: list[float]) -> None:
    hysteresis = positions(HysteresisSignal(enter=0.0, exit=0.0, long_only=long_only), p_up)
    threshold = positions(ThresholdSignal(long_only=long_only), p_up)
    np.testing.assert_array_equal(hysteresis, threshold)


@settings(max_examples=200, deadline=None)
@given(rule=hysteresis_rules(), p_up=st.lists(P_UP, max_size=60))
def test_hysteresis_changes_only_to_the_threshold_position(
    rule: HysteresisSignal, p_up: list[float]
) -> None:
    # Every change lands where ThresholdSignal(margin=enter) is on that bar, so between two
    # changes of hysteresis the threshold rule changes at least once.
    hysteresis = positions(rule, p_up)
    threshold = positions(ThresholdSignal(margin=rule.enter, long_only=rule.long_only), p_up)
    changed = np.diff(hysteresis, prepend=0.0) != 0
    np.testing.assert_array_equal(hysteresis[changed], threshold[changed])
    assert changes(hysteresis) <= changes(threshold)


@settings(max_examples=200, deadline=None)
@given(
    enter=st.floats(0.0, 0.49),
    share=st.floats(0.0, 1.0),
    long_only=st.booleans(),
    min_hold=st.integers(1, 5),
    p_up=st.lists(P_UP, max_size=60),
)
def test_holding_until_the_opposite_entry_changes_less_than_any_narrower_threshold(
    enter: float, share: float, long_only: bool, min_hold: int, p_up: list[float]
) -> None:
    rule = HysteresisSignal(enter=enter, exit=-enter, long_only=long_only, min_hold=min_hold)
    threshold = ThresholdSignal(margin=share * enter, long_only=long_only)
    assert changes(positions(rule, p_up)) <= changes(positions(threshold, p_up))


def test_hysteresis_changes_position_far_less_than_threshold_on_noisy_p_up() -> None:
    bars = datasets.load("eurusd_1h")
    noise = np.random.default_rng(7).normal(0.0, 0.02, len(bars))
    pred = pd.DataFrame({"p_up": 0.5 + noise}, index=bars.index)
    threshold = changes(ThresholdSignal()(pred, bars))
    assert threshold > 0.4 * len(bars)  # the side of 0.5 is a coin flip every bar
    for rule in (HysteresisSignal(), HysteresisSignal(exit=-0.05)):
        hysteresis = changes(rule(pred, bars))
        assert 0 < hysteresis < 0.1 * threshold
