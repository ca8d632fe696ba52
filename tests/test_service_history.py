"""The service's per-series bar history (:class:`mlengine.service.history.BarHistory`): short
requests are completed with the stored and earlier-sent bars, exactly as the series is."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.data.schema import OHLCV, make_bar_frame
from mlengine.data.store import open_store
from mlengine.service.history import BarHistory, HistoryError


def series(gaps: list[int]) -> pd.DataFrame:
    """Bars an hour apart but for the given extra hours of gap, with distinct prices."""
    hours = np.cumsum([1 + g for g in gaps])
    idx = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(hours, unit="h")
    close = 100.0 + np.arange(len(idx))
    cols = {"open": close, "high": close + 1, "low": close - 1, "close": close}
    return make_bar_frame(idx, {**cols, "volume": np.ones(len(idx))}, symbol="H", timeframe="1h")


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([0, 0, 0, 0, 5, 40]), min_size=30, max_size=80),
    stored=st.integers(0, 30),
    need=st.integers(2, 25),
    steps=st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=25),
)
def test_property_completed_history_is_the_series_tail(gaps, stored, need, steps) -> None:
    # a client walks forward from the stored bars, a few bars at a time, sometimes sending
    # its last bars again (a revised bar)
    bars = series(gaps)
    with open_store("duckdb:///:memory:") as store:
        if stored:
            store.write_bars(bars.iloc[:stored])
        history = BarHistory(lambda: store)
        pos = stored
        for size, again in steps:
            start = max(0, pos - size) if again and pos > stored else pos
            chunk = bars.iloc[start : start + size]
            if chunk.empty:
                break
            end = start + len(chunk)
            pos = max(pos, end)
            if end < need:
                with pytest.raises(HistoryError, match=f"needs {need} bars"):
                    history.complete(chunk, need)
                continue
            done = history.complete(chunk, need)
            expected = bars.iloc[max(0, end - max(need, len(chunk))) : end]
            pd.testing.assert_frame_equal(done.bars, expected, check_freq=False)
            assert done.added == max(0, need - len(chunk))


def test_an_older_request_is_completed_from_the_store() -> None:
    bars = series([0] * 40)
    with open_store("duckdb:///:memory:") as store:
        store.write_bars(bars.iloc[:20])
        history = BarHistory(lambda: store)
        for i in range(20, 30):  # bars 20-29 sent, never stored
            history.complete(bars.iloc[i : i + 1], 8)
        back = history.complete(bars.iloc[15:16], 8)  # before the kept run: the store's
        pd.testing.assert_frame_equal(back.bars, bars.iloc[8:16], check_freq=False)
        whole = history.complete(bars.iloc[22:30], 8)  # a whole history: taken as it is
        assert whole.added == 0 and whole.bars.equals(bars.iloc[22:30])
        done = history.complete(bars.iloc[30:31], 8)  # and the next bar continues it
        pd.testing.assert_frame_equal(done.bars, bars.iloc[23:31], check_freq=False)


def test_nothing_stored_and_nothing_sent_names_what_is_missing() -> None:
    bars = series([0] * 20)
    with open_store("duckdb:///:memory:") as store:
        history = BarHistory(lambda: store)
        with pytest.raises(HistoryError) as err:
            history.complete(bars.iloc[-3:], 10)
    text = str(err.value)
    assert "3 given for H 1h" in text and "0 earlier bars" in text and "needs 10 bars" in text


def test_a_gap_beyond_max_gap_is_refused_until_the_missing_bars_are_stored() -> None:
    bars = series([0] * 26)
    with open_store("duckdb:///:memory:") as store:
        store.write_bars(pd.concat([bars.iloc[:10], bars.iloc[15:21]]))  # bars 10-14 missing
        history = BarHistory(lambda: store, max_gap=pd.Timedelta(hours=3))
        for i in (21, 22):  # the hole stays in the history of the next bar too
            with pytest.raises(HistoryError) as err:
                history.complete(bars.iloc[i : i + 1], 10)
            text = str(err.value)
            assert (
                f"no bar from {bars.index[9].isoformat()} to {bars.index[15].isoformat()}" in text
            )
            assert "a gap of 0 days 06:00:00, more than the 0 days 03:00:00 allowed" in text
        store.write_bars(bars.iloc[10:15])  # the missing bars are imported: read next time
        done = history.complete(bars.iloc[23:24], 10)
        pd.testing.assert_frame_equal(done.bars, bars.iloc[14:24], check_freq=False)


def test_max_gap_is_at_least_one_bar() -> None:
    idx = pd.Timestamp("2024-01-07", tz="UTC") + pd.to_timedelta(np.arange(12) * 14, unit="D")
    close = np.linspace(100, 111, 12)
    cols = {c: close for c in ("open", "high", "low", "close")}
    bars = make_bar_frame(idx, {**cols, "volume": np.ones(12)}, symbol="W", timeframe="2w")
    with open_store("duckdb:///:memory:") as store:
        store.write_bars(bars.iloc[:-1])
        done = BarHistory(lambda: store).complete(bars.iloc[-1:], 5)
    pd.testing.assert_frame_equal(done.bars, bars.iloc[-5:], check_freq=False)


def test_store_is_not_read_for_the_next_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    bars = series([0] * 40)
    with open_store("duckdb:///:memory:") as store:
        store.write_bars(bars.iloc[:30])
        history = BarHistory(lambda: store)
        history.complete(bars.iloc[30:31], 12)
        reads: list[str] = []

        def spy(name: str) -> Any:
            original = getattr(store, name)

            def read(*args: Any, **kwargs: Any) -> pd.DataFrame:
                reads.append(name)
                return original(*args, **kwargs)

            return read

        for name in ("read_bars", "read_last_bars"):
            monkeypatch.setattr(store, name, spy(name))
        for i in range(31, 40):
            done = history.complete(bars.iloc[i : i + 1], 12)
            assert done.bars.index[-1] == bars.index[i]
        assert reads == []
    assert list(done.bars.columns) == list(OHLCV)
