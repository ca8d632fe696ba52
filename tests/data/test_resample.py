from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.data.resample import align_to_lower, bar_counts, default_prefix, resample
from mlengine.data.schema import OHLCV, BarDataError, Timeframe, TimeframeError, check_bar_frame
from mlengine.data.schema import make_bar_frame as _make

STEP = pd.Timedelta(minutes=15)
T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")  # a Monday
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _idx(frame: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(frame.index)


def _random_bars(
    rng: np.random.Generator, stamps: pd.DatetimeIndex, tf: str = "15m"
) -> pd.DataFrame:
    n = len(stamps)
    close = 100 + rng.standard_normal(n).cumsum()
    open_ = close + rng.standard_normal(n) * 0.3
    high = np.maximum(open_, close) + rng.random(n)
    low = np.minimum(open_, close) - rng.random(n)
    volume = rng.integers(0, 1000, n).astype(float)
    cols = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return _make(stamps, cols, symbol="TEST", timeframe=tf)


@st.composite
def bar_frames(draw: st.DrawFn, max_bars: int = 400) -> pd.DataFrame:
    """15m bars on the grid, starting anywhere, with random gaps (closed markets, halts)."""
    n = draw(st.integers(1, max_bars))
    start = T0 + STEP * draw(st.integers(0, 200))
    slots = np.arange(n * 3)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(slots, size=n, replace=False))
    return _random_bars(rng, pd.DatetimeIndex(start + STEP * keep))


@pytest.fixture(scope="module")
def btc_15m() -> pd.DataFrame:
    """The bundled BTC 15m sample, repaired (sorted, deduplicated, on the grid)."""
    return datasets.load("btcusd_15m")


# --- resample: hand-built ------------------------------------------------------------------


def _hand_bars() -> pd.DataFrame:
    stamps = pd.date_range("2024-01-01 00:00", periods=8, freq="15min", tz="UTC")
    return _make(
        stamps,
        {
            "open": [10, 11, 12, 13, 20, 21, 22, 23],
            "high": [15, 16, 14, 13.5, 25, 30, 24, 23.5],
            "low": [9, 10, 8, 12, 19, 20, 18, 22],
            "close": [11, 12, 13, 14, 21, 22, 23, 24],
            "volume": [1, 2, 3, 4, 10, 20, 30, 40],
        },
        symbol="HAND",
        timeframe="15m",
    )


def test_resample_hand_built_example() -> None:
    out = resample(_hand_bars(), "1h")
    expected = pd.DataFrame(
        {
            "open": [10.0, 20.0],
            "high": [16.0, 30.0],
            "low": [8.0, 18.0],
            "close": [14.0, 24.0],
            "volume": [10.0, 100.0],
        },
        index=pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00"], name="ts")
        .tz_localize("UTC")
        .as_unit("ns"),
    )
    pd.testing.assert_frame_equal(out, expected)
    check_bar_frame(out)
    assert out.attrs == {"symbol": "HAND", "timeframe": "1h"}


def test_resample_to_the_same_timeframe_is_identity() -> None:
    bars = _hand_bars()
    pd.testing.assert_frame_equal(resample(bars, "15m"), bars, check_freq=False)


def test_empty_bins_are_dropped_not_filled() -> None:
    bars = _hand_bars()
    gappy = _make(
        _idx(bars).where(bars.index < "2024-01-01 01:00", _idx(bars) + pd.Timedelta("3h")),
        {c: bars[c] for c in OHLCV},
        symbol="HAND",
        timeframe="15m",
    )
    out = resample(gappy, "1h")
    assert list(_idx(out).hour) == [0, 4]
    assert out["volume"].tolist() == [10.0, 100.0]


def test_partial_edge_bins_and_interior_gaps() -> None:
    # 13:45 .. 15:30 without 14:30: first bin (13:00) starts before the data, last bin
    # (15:00) ends after them, the 14:00 bin misses one bar inside.
    stamps = pd.DatetimeIndex(["13:45", "14:00", "14:15", "14:45", "15:00", "15:15", "15:30"])
    stamps = pd.DatetimeIndex("2024-01-02 " + stamps.strftime("%H:%M")).tz_localize("UTC")
    rng = np.random.default_rng(1)
    bars = _random_bars(rng, stamps)
    kept = resample(bars, "1h")
    assert list(_idx(kept).hour) == [14]
    assert kept["volume"].iloc[0] == bars["volume"].iloc[1:4].sum()
    counts = bar_counts(bars, "1h")
    assert counts.tolist() == [3] and counts.index.equals(kept.index)
    everything = resample(bars, "1h", drop_partial=False)
    assert list(_idx(everything).hour) == [13, 14, 15]
    assert bar_counts(bars, "1h", drop_partial=False).tolist() == [1, 3, 3]
    assert everything["close"].iloc[-1] == bars["close"].iloc[-1]


def test_a_bin_ending_exactly_at_the_data_end_is_complete() -> None:
    bars = _hand_bars()  # 00:00 .. 01:45, the last bar closes at 02:00
    assert len(resample(bars, "1h")) == 2
    assert len(resample(bars.iloc[:-1], "1h")) == 1


def test_empty_frame_resamples_to_an_empty_bar_frame() -> None:
    out = resample(_hand_bars().iloc[:0], "1h")
    check_bar_frame(out)
    assert out.empty and out.attrs["timeframe"] == "1h"


def test_offset_sets_fx_day_and_monday_week_boundaries() -> None:
    rng = np.random.default_rng(2)
    hourly = _random_bars(
        rng, pd.date_range("2024-01-07 22:00", periods=24 * 5, freq="1h", tz="UTC"), "1h"
    )
    days = resample(hourly, "1d", offset="22h")
    assert len(days) == 5 and set(_idx(days).hour) == {22}
    assert days["high"].iloc[0] == hourly["high"].iloc[:24].max()
    assert days["open"].iloc[1] == hourly["open"].iloc[24]
    daily = _random_bars(rng, pd.date_range("2024-01-01", periods=28, freq="1D", tz="UTC"), "1d")
    weeks = resample(daily, "1w", offset="4D")  # the epoch is a Thursday
    assert set(_idx(weeks).day_of_week) == {0} and len(weeks) == 4
    by_origin = resample(daily, "1w", origin=pd.Timestamp("2024-01-01", tz="UTC"))
    pd.testing.assert_frame_equal(by_origin, weeks)


@pytest.mark.parametrize(
    ("target", "match"),
    [("20m", "not a whole multiple"), ("50m", "not a whole multiple"), ("1m", "lower")],
)
def test_bad_target_timeframes_are_rejected(target: str, match: str) -> None:
    with pytest.raises(TimeframeError, match=match):
        resample(_hand_bars(), target)


def test_bar_off_the_source_grid_is_rejected_with_its_row() -> None:
    bars = _hand_bars()
    stamps = bars.index.to_series().copy()
    stamps.iloc[5] = stamps.iloc[5] + pd.Timedelta(minutes=1, seconds=2)
    shifted = _make(stamps, {c: bars[c] for c in OHLCV}, symbol="HAND", timeframe="15m")
    with pytest.raises(BarDataError, match="off the 15m grid") as err:
        resample(shifted, "1h")
    assert err.value.row == 6
    with pytest.raises(BarDataError, match="off the 15m grid"):
        resample(bars, "1h", offset="5min")


def test_invalid_frame_and_origin_are_rejected() -> None:
    bars = _hand_bars()
    no_attrs = bars.copy()
    no_attrs.attrs = {}
    with pytest.raises(BarDataError, match="attrs"):
        resample(no_attrs, "1h")
    with pytest.raises(BarDataError, match="origin"):
        resample(bars, "1h", origin="not a time")
    with pytest.raises(BarDataError, match="offset"):
        resample(bars, "1h", offset="soon")


@SETTINGS
@given(
    bars=bar_frames(),
    target=st.sampled_from(["30m", "1h", "4h", "1d"]),
    offset_steps=st.integers(0, 95),
)
def test_resample_matches_pandas_resample(
    bars: pd.DataFrame, target: str, offset_steps: int
) -> None:
    offset = STEP * offset_steps
    ours = resample(bars, target, offset=offset, drop_partial=False)
    minutes = int(Timeframe.parse(target).delta / pd.Timedelta(minutes=1))
    grouped = bars.resample(
        f"{minutes}min", origin="epoch", offset=offset, closed="left", label="left"
    )
    theirs = grouped.agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    theirs = theirs[grouped["close"].count() > 0]
    pd.testing.assert_frame_equal(ours, theirs, check_freq=False)
    assert ours.attrs == {"symbol": "TEST", "timeframe": target}
    counts = bar_counts(bars, target, offset=offset, drop_partial=False)
    assert counts.sum() == len(bars) and counts.index.equals(ours.index)
    check_bar_frame(ours)


@SETTINGS
@given(bars=bar_frames(), target=st.sampled_from(["1h", "4h", "1d"]))
def test_drop_partial_removes_only_edge_bins(bars: pd.DataFrame, target: str) -> None:
    full = resample(bars, target, drop_partial=False)
    kept = resample(bars, target)
    htf = Timeframe.parse(target).delta
    first_open, last_close = bars.index[0], bars.index[-1] + STEP
    expected = full[(full.index >= first_open) & (_idx(full) + htf <= last_close)]
    pd.testing.assert_frame_equal(kept, expected)


# --- resample: real data -------------------------------------------------------------------


def test_btc_15m_chain_to_daily(btc_15m: pd.DataFrame) -> None:
    bars = btc_15m
    assert len(bars) > 8000
    h1 = resample(bars, "1h", drop_partial=False)
    h4 = resample(h1, "4h", drop_partial=False)
    d1 = resample(h4, "1d", drop_partial=False)
    total = bars["volume"].sum()
    for frame in (h1, h4, d1):
        check_bar_frame(frame)
        assert frame["volume"].sum() == pytest.approx(total, rel=1e-12)
        assert frame.attrs["symbol"] == "BTCUSD"
    assert [f.attrs["timeframe"] for f in (h1, h4, d1)] == ["1h", "4h", "1d"]
    # The 1h bars against an independent grouping of the 15m bars by their hour.
    by_hour = bars.groupby(_idx(bars).floor("h"))
    np.testing.assert_array_equal(h1["high"].to_numpy(), by_hour["high"].max().to_numpy())
    np.testing.assert_array_equal(h1["low"].to_numpy(), by_hour["low"].min().to_numpy())
    assert h1.index.equals(pd.DatetimeIndex(by_hour["high"].max().index, name="ts"))
    # Hours inside the 2.3-day gap hold no bar (not forward-filled).
    gap = (h1.index > "2021-11-27 12:00") & (h1.index < "2021-11-28 12:00")
    assert not gap.any()
    # Aggregation is associative: the chain equals 15m -> 1d directly.
    pd.testing.assert_frame_equal(d1, resample(bars, "1d", drop_partial=False))
    complete = resample(bars, "1d")
    assert complete.index[0] > bars.index[0]  # the first day starts mid-day: dropped
    assert complete.index[-1] + pd.Timedelta("1D") <= bars.index[-1] + STEP


def test_btc_alignment_follows_the_closed_bar_rule(btc_15m: pd.DataFrame) -> None:
    bars = btc_15m
    h4 = resample(bars, "4h")
    aligned = align_to_lower(h4, bars, include_ts=True)
    seen = aligned["h4_ts"]
    ok = seen.notna()
    assert ok.sum() > 0.9 * len(bars)
    closes = _idx(bars) + STEP
    assert (seen[ok] + pd.Timedelta("4h") <= closes[ok.to_numpy()]).all()
    # the most recent closed bar: the next 4h bar has not closed yet
    pos = h4.index.get_indexer(pd.DatetimeIndex(seen[ok]))
    nxt = np.minimum(pos + 1, len(h4) - 1)
    later = (pos + 1 < len(h4)) & (_idx(h4)[nxt] + pd.Timedelta("4h") <= closes[ok.to_numpy()])
    assert not later.any()
    np.testing.assert_array_equal(aligned.loc[ok, "h4_close"], h4["close"].to_numpy()[pos])


# --- align_to_lower ------------------------------------------------------------------------


def test_align_hand_built_example() -> None:
    bars = _hand_bars()
    hourly = resample(bars, "1h")
    aligned = align_to_lower(hourly, bars)
    assert list(aligned.columns) == [f"h1_{c}" for c in OHLCV]
    assert aligned.index.equals(bars.index)
    # rows 00:00-00:30 close before 01:00: nothing has closed yet
    assert aligned.iloc[:3].isna().all().all()
    # row 00:45 closes at 01:00 together with the 00:00 hourly bar
    assert aligned["h1_close"].tolist()[3:] == [14.0, 14.0, 14.0, 14.0, 24.0]
    assert aligned["h1_volume"].iloc[-1] == 100.0


def test_align_options_and_timeframe_sources() -> None:
    bars = _hand_bars()
    hourly = resample(bars, "1h")
    by_index = align_to_lower(hourly, _idx(bars), lower_timeframe="15m", prefix="hour")
    assert list(by_index.columns) == [f"hour_{c}" for c in OHLCV]
    plain = pd.DataFrame(hourly)  # a frame without attrs, e.g. features of the hourly bars
    plain.attrs = {}
    again = align_to_lower(plain, bars, higher_timeframe="1h", include_ts=True)
    assert again["h1_ts"].iloc[-1] == hourly.index[-1]
    np.testing.assert_array_equal(by_index.to_numpy(), again.drop(columns="h1_ts").to_numpy())
    assert [default_prefix(t) for t in ("15m", "4h", "1d", "1w")] == ["m15", "h4", "d1", "w1"]


def test_align_rejects_bad_inputs() -> None:
    bars = _hand_bars()
    hourly = resample(bars, "1h")
    with pytest.raises(TimeframeError, match="lower_timeframe"):
        align_to_lower(hourly, _idx(bars))
    no_tf = pd.DataFrame(hourly)
    no_tf.attrs = {}
    with pytest.raises(TimeframeError, match="higher_timeframe"):
        align_to_lower(no_tf, bars)
    with pytest.raises(BarDataError, match="tz-aware"):
        align_to_lower(hourly, _idx(bars).tz_localize(None), lower_timeframe="15m")
    with pytest.raises(BarDataError, match="strictly increasing") as err:
        align_to_lower(hourly, _idx(bars)[::-1], lower_timeframe="15m")
    assert err.value.row == 2
    with pytest.raises(BarDataError, match="DatetimeIndex"):
        not_times: Any = pd.Index([1, 2, 3])
        align_to_lower(hourly, not_times, lower_timeframe="15m")


def _pipeline(bars: pd.DataFrame, target: str, drop_partial: bool) -> pd.DataFrame:
    return align_to_lower(resample(bars, target, drop_partial=drop_partial), bars, include_ts=True)


@SETTINGS
@given(
    bars=bar_frames(),
    target=st.sampled_from(["1h", "4h", "1d"]),
    drop_partial=st.booleans(),
    data=st.data(),
)
def test_alignment_has_no_look_ahead(
    bars: pd.DataFrame, target: str, drop_partial: bool, data: st.DataObject
) -> None:
    htf = Timeframe.parse(target).delta
    higher = resample(bars, target, drop_partial=drop_partial)
    aligned = align_to_lower(higher, bars, include_ts=True)
    prefix = default_prefix(target)
    lower_close = _idx(bars) + STEP

    # (a) every row sees the latest higher bar closed by its own close, and no later one
    for t_close, seen in zip(lower_close, aligned[f"{prefix}_ts"], strict=True):
        closed = _idx(higher)[_idx(higher) + htf <= t_close]
        if closed.empty:
            assert pd.isna(seen)
        else:
            assert seen == closed[-1]

    # (b) changing a higher bar changes nothing at lower rows before its close
    if len(higher):
        j = data.draw(st.integers(0, len(higher) - 1))
        changed = higher.copy()
        changed.iloc[j] = changed.iloc[j] * 3.0 + 7.0
        after = align_to_lower(changed, bars, include_ts=True)
        before_close = lower_close < higher.index[j] + htf
        pd.testing.assert_frame_equal(aligned[before_close], after[before_close])
        sees_j = (aligned[f"{prefix}_ts"] == higher.index[j]).to_numpy()
        assert (after.loc[sees_j, f"{prefix}_high"] != aligned.loc[sees_j, f"{prefix}_high"]).all()

    # (c) truncation: computing on bars[:k] gives the same rows as the full computation
    k = data.draw(st.integers(1, len(bars)))
    truncated = _pipeline(bars.iloc[:k], target, drop_partial)
    pd.testing.assert_frame_equal(truncated, _pipeline(bars, target, drop_partial).iloc[:k])
