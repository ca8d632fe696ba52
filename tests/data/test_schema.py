from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlengine.data.schema import (
    OHLCV,
    BarDataError,
    Timeframe,
    TimeframeError,
    check_bar_frame,
    check_symbol,
    make_bar_frame,
)


def _bars(n: int = 5, start: str = "2024-01-01") -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    close = np.linspace(100.0, 104.0, n)
    cols = {
        "open": close,
        "high": close + 1,
        "low": close - 1,
        "close": close,
        "volume": np.ones(n),
    }
    return make_bar_frame(idx, cols, symbol="EURUSD", timeframe="1h")


@pytest.mark.parametrize(
    ("text", "name", "delta"),
    [
        ("15m", "15m", pd.Timedelta(minutes=15)),
        ("1H", "1h", pd.Timedelta(hours=1)),
        ("4h", "4h", pd.Timedelta(hours=4)),
        ("1d", "1d", pd.Timedelta(days=1)),
        ("60m", "1h", pd.Timedelta(hours=1)),
        ("1w", "1w", pd.Timedelta(days=7)),
    ],
)
def test_timeframe_parse(text: str, name: str, delta: pd.Timedelta) -> None:
    tf = Timeframe.parse(text)
    assert tf.name == name
    assert tf.delta == delta


@pytest.mark.parametrize("bad", ["", "15", "m", "0m", "1y", "15 minutes", "1.5h", "-1h"])
def test_unknown_timeframe_is_rejected_with_its_name(bad: str) -> None:
    with pytest.raises(TimeframeError, match="unknown timeframe"):
        Timeframe.parse(bad)


@given(st.integers(min_value=1, max_value=10_000), st.sampled_from("mhdw"))
def test_timeframe_freq_matches_delta(count: int, unit: str) -> None:
    tf = Timeframe.parse(f"{count}{unit}")
    assert pd.Timedelta(tf.freq) == tf.delta


def test_make_bar_frame_meets_the_contract() -> None:
    bars = _bars()
    assert bars.index.name == "ts"
    assert isinstance(bars.index, pd.DatetimeIndex)
    assert str(bars.index.tz) == "UTC"
    assert list(bars.columns) == list(OHLCV)
    assert all(bars[c].dtype == np.float64 for c in OHLCV)
    assert bars.attrs == {"symbol": "EURUSD", "timeframe": "1h"}


def test_naive_index_is_taken_as_utc() -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="1h")
    cols = {c: np.ones(3) for c in OHLCV}
    bars = make_bar_frame(idx, cols, symbol="X", timeframe="1h")
    assert bars.index[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_duplicate_timestamp_names_the_row() -> None:
    bars = _bars()
    dup = pd.concat([bars.iloc[:3], bars.iloc[2:]])
    dup.attrs = dict(bars.attrs)
    with pytest.raises(BarDataError, match=r"row 4.*duplicate"):
        check_bar_frame(dup)


def test_out_of_order_is_rejected() -> None:
    bars = _bars()
    rev = bars.iloc[::-1].copy()
    rev.attrs = dict(bars.attrs)
    with pytest.raises(BarDataError, match="out-of-order"):
        check_bar_frame(rev)


def test_wrong_dtype_names_the_column() -> None:
    bars = _bars()
    bars["volume"] = bars["volume"].astype("int64")
    with pytest.raises(BarDataError, match="column 'volume'"):
        check_bar_frame(bars)


def test_non_utc_index_is_rejected() -> None:
    bars = _bars()
    assert isinstance(bars.index, pd.DatetimeIndex)
    bars.index = bars.index.tz_convert("Europe/London").rename("ts")
    with pytest.raises(BarDataError, match="UTC"):
        check_bar_frame(bars)


def test_missing_attrs_are_named() -> None:
    bars = _bars()
    bars.attrs.pop("timeframe")
    with pytest.raises(BarDataError, match="timeframe"):
        check_bar_frame(bars)


@pytest.mark.parametrize("bad", ["", "   ", "A" * 65, "BTC\nUSD", 42, None])
def test_bad_symbols_are_rejected(bad: object) -> None:
    with pytest.raises(BarDataError, match="symbol"):
        check_symbol(bad)


def test_sql_metacharacters_are_a_valid_symbol() -> None:
    assert check_symbol("x'; DROP TABLE t; --") == "x'; DROP TABLE t; --"


def test_error_message_names_source_row_and_column() -> None:
    err = BarDataError("not a number: 'abc'", source="bars.csv", row=7, column="close")
    assert str(err) == "bars.csv, row 7, column 'close': not a number: 'abc'"
    assert (err.source, err.row, err.column) == ("bars.csv", 7, "close")
