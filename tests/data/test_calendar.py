"""Market calendars: FX weekly boundary in New York time, NYSE hours and holidays, bar counts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlengine
from mlengine.data.calendar import (
    MARKETS,
    NYSE_HOLIDAYS_AVAILABLE,
    UnknownMarketError,
    check_market,
    expected_index,
    infer_market,
    is_holiday,
    is_open,
    periods_per_year,
)
from mlengine.data.schema import BarDataError

NY = ZoneInfo("America/New_York")
DATASETS = Path(mlengine.__file__).parent / "datasets"


def utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(list(stamps), tz="UTC")


def test_check_market_accepts_known_kinds_and_rejects_others():
    assert [check_market(m.upper()) for m in MARKETS] == list(MARKETS)
    with pytest.raises(UnknownMarketError, match="'stocks'"):
        check_market("stocks")


def test_naive_timestamps_are_rejected():
    with pytest.raises(BarDataError, match="tz-aware"):
        is_open("fx", pd.DatetimeIndex(["2017-01-02 10:00"]))


def test_crypto_is_always_open():
    idx = utc("2021-11-27 03:00", "2021-11-28 23:45", "2021-12-25 12:00")  # Sat, Sun, holiday
    assert is_open("crypto", idx, "15m").tolist() == [True, True, True]
    assert not is_holiday("crypto", idx).any()


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        # winter (EST): the week closes Friday 22:00 UTC and opens Sunday 22:00 UTC
        ("2017-01-06 21:00", True),
        ("2017-01-06 22:00", False),
        ("2017-01-07 12:00", False),
        ("2017-01-08 21:00", False),
        ("2017-01-08 22:00", True),
        # summer (EDT): one hour earlier
        ("2017-07-07 20:00", True),
        ("2017-07-07 21:00", False),
        ("2017-07-09 20:00", False),
        ("2017-07-09 21:00", True),
        # US DST starts Sunday 2017-03-12: Friday closes on EST, Sunday opens on EDT
        ("2017-03-10 21:00", True),
        ("2017-03-10 22:00", False),
        ("2017-03-12 20:00", False),
        ("2017-03-12 21:00", True),
        ("2017-03-14 10:00", True),  # a Tuesday hour
    ],
)
def test_fx_week_follows_new_york_17h(stamp, expected):
    assert is_open("fx", utc(stamp), "1h").tolist() == [expected]


def test_fx_bar_must_lie_inside_trading_time():
    friday = utc("2017-07-07 20:00")  # 16:00 New York: open at the instant
    assert is_open("fx", friday).tolist() == [True]
    assert is_open("fx", friday, "1h").tolist() == [True]
    assert is_open("fx", friday, "4h").tolist() == [False]  # runs past the 17:00 close


def test_fx_holidays_are_closed_and_flagged():
    idx = utc(
        "2017-12-24 22:00",  # Sunday 17:00 New York: opens the Dec 25 trade date
        "2017-12-25 10:00",
        "2017-12-25 21:00",  # Dec 25 16:00 New York: last hour of that trade date
        "2017-12-25 22:00",  # Dec 26 trade date
        "2018-01-01 12:00",
        "2017-12-23 12:00",  # Saturday: closed, not a holiday
    )
    assert is_open("fx", idx, "1h").tolist() == [False, False, False, True, False, False]
    assert is_holiday("fx", idx, "1h").tolist() == [True, True, True, False, True, False]
    assert not is_holiday("equity", idx, "1h").any()


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2018-07-02 13:15", False),  # 09:15 EDT
        ("2018-07-02 13:30", True),  # 09:30 EDT
        ("2018-07-02 19:45", True),  # 15:45 EDT, ends at the close
        ("2018-07-02 20:00", False),  # 16:00 EDT
        ("2018-01-08 14:15", False),  # 09:15 EST
        ("2018-01-08 14:30", True),  # 09:30 EST
        ("2018-01-08 20:45", True),  # 15:45 EST
        ("2018-07-07 15:00", False),  # Saturday
        ("2018-07-04 15:00", False),  # Independence Day
        ("2018-03-30 15:00", False),  # Good Friday
        ("2018-07-03 16:45", True),  # half day: 12:45 EDT
        ("2018-07-03 17:00", False),  # half day: closed from 13:00
    ],
)
def test_equity_regular_hours_holidays_and_half_days(stamp, expected):
    assert NYSE_HOLIDAYS_AVAILABLE
    assert is_open("equity", utc(stamp), "15m").tolist() == [expected]


def test_daily_bars_take_their_trade_date():
    days = pd.date_range("2018-03-26", "2018-04-01", freq="1D", tz="UTC")  # Mon..Sun
    weekdays = [True, True, True, True, True, False, False]
    assert is_open("equity", days, "1d").tolist() == [*weekdays[:4], False, *weekdays[5:]]
    assert is_open("fx", days, "1d").tolist() == weekdays
    assert is_open("crypto", days, "1d").all()
    ny_17h = utc("2018-03-25 21:00", "2018-03-30 21:00")  # Sunday and Friday 17:00 EDT
    assert is_open("fx", ny_17h, "1d").tolist() == [True, False]  # Monday's, Saturday's
    assert is_open("fx", utc("2018-04-02"), "1w").tolist() == [True]


def test_expected_index_fx_week_across_dst_change():
    week = expected_index("fx", "2017-03-10 00:00", "2017-03-17 20:00", "1h")
    assert week[0] == pd.Timestamp("2017-03-10 00:00", tz="UTC")
    assert pd.Timestamp("2017-03-10 21:00", tz="UTC") in week
    assert pd.Timestamp("2017-03-10 22:00", tz="UTC") not in week
    monday = week[week >= pd.Timestamp("2017-03-11", tz="UTC")]
    assert monday[0] == pd.Timestamp("2017-03-12 21:00", tz="UTC")
    assert len(monday) == 120  # Sunday 17:00 to Friday 17:00 New York
    assert week.name == "ts" and str(week.tz) == "UTC"


def test_expected_index_equity_sessions_in_new_york_time():
    summer = expected_index("equity", "2018-07-02 13:30", "2018-07-02 23:00", "15m")
    assert len(summer) == 26
    assert summer[0] == pd.Timestamp("2018-07-02 13:30", tz="UTC")
    winter = expected_index("equity", "2018-11-21 14:30", "2018-11-23 23:00", "15m")
    assert len(winter) == 26 + 14  # Thanksgiving closed, Friday half day 09:30-13:00
    hourly = expected_index("equity", "2018-11-26 14:30", "2018-11-26 23:00", "1h")
    assert hourly.tz_convert("America/New_York").hour.tolist() == [9, 10, 11, 12, 13, 14]
    daily = expected_index("equity", "2018-03-01", "2018-03-31", "1d")
    assert len(daily) == 21  # 22 weekdays less Good Friday


def test_expected_index_crypto_every_bar():
    idx = expected_index("crypto", "2021-11-27", "2021-11-28 23:45", "15m")
    assert len(idx) == 2 * 96


def _real_eurusd_index() -> pd.DatetimeIndex:
    raw = pd.read_csv(DATASETS / "EURUSD_1h_2017_ask.csv", usecols=["Time"])
    return pd.DatetimeIndex(pd.to_datetime(raw["Time"], format="%d.%m.%Y %H:%M:%S.%f", utc=True))


def test_expected_index_matches_real_eurusd_but_holidays():
    real = _real_eurusd_index()
    expected = expected_index("fx", real[0], real[-1], "1h")
    assert expected.difference(real).empty  # every expected hour is there
    extra = real.difference(expected)  # bars the data has on the Dec 25 trade date
    assert is_holiday("fx", extra, "1h").all() and len(extra) == 9
    holiday_slots = pd.date_range(real[0], real[-1], freq="1h")
    n_holiday = int(is_holiday("fx", holiday_slots, "1h").sum())
    assert len(expected) + n_holiday == periods_per_year("fx", "1h") == 6240


def test_infer_market():
    real_fx = _real_eurusd_index()
    assert infer_market(real_fx) == "fx"
    btc = pd.read_csv(DATASETS / "BTCUSD_15m_2021.csv", usecols=["Datetime"])
    btc_idx = pd.to_datetime(btc["Datetime"], utc=True, format="ISO8601")
    assert infer_market(btc_idx) == "crypto"
    assert infer_market(expected_index("equity", "2018-01-01", "2018-03-01", "15m")) == "equity"
    assert infer_market(expected_index("equity", "2018-01-01", "2018-12-31", "1d")) == "equity"
    fx_daily = pd.date_range("2018-01-07 22:00", periods=60, freq="1D", tz="UTC")
    fx_daily = fx_daily[np.isin(fx_daily.day_of_week, [6, 0, 1, 2, 3])]  # Sun..Thu 17:00 EST
    assert infer_market(fx_daily) == "fx"
    with pytest.raises(BarDataError, match="empty"):
        infer_market(pd.DatetimeIndex([], tz="UTC"))


@pytest.mark.parametrize(
    ("market", "timeframe", "expected"),
    [
        ("crypto", "1h", 8760.0),
        ("crypto", "15m", 35040.0),
        ("crypto", "1d", 365.0),
        ("fx", "1h", 24 * 5 * 52.0),
        ("fx", "4h", 6 * 5 * 52.0),
        ("fx", "1d", 260.0),
        ("fx", "1w", 52.0),
        ("equity", "1d", 252.0),
        ("equity", "1h", 6.5 * 252),
        ("equity", "15m", 26 * 252.0),
        ("equity", "1w", 52.0),
    ],
)
def test_periods_per_year(market, timeframe, expected):
    assert periods_per_year(market, timeframe) == pytest.approx(expected)


# --- properties against an oracle written with zoneinfo and datetime, one bar at a time ----


def _fx_open_at(moment: dt.datetime) -> bool:
    ny = moment.astimezone(NY)
    weekday, hour = ny.weekday(), ny.hour
    closed = (weekday == 4 and hour >= 17) or weekday == 5 or (weekday == 6 and hour < 17)
    trade_date = (ny.replace(tzinfo=None) + dt.timedelta(hours=7)).date()
    return not closed and (trade_date.month, trade_date.day) not in ((12, 25), (1, 1))


NYSE = holidays.financial_holidays("NYSE", years=range(2009, 2031))
NYSE_HALF = holidays.financial_holidays("NYSE", years=range(2009, 2031), categories=("half_day",))


def _equity_open_at(moment: dt.datetime) -> bool:
    ny = moment.astimezone(NY)
    if ny.weekday() >= 5 or ny.date() in NYSE:
        return False
    close = dt.time(13) if ny.date() in NYSE_HALF else dt.time(16)
    return dt.time(9, 30) <= ny.time() < close


bar_starts = st.datetimes(
    min_value=dt.datetime(2010, 1, 1), max_value=dt.datetime(2030, 12, 31)
).map(lambda d: d.replace(second=0, microsecond=0, minute=d.minute // 15 * 15))


@settings(max_examples=300, deadline=None)
@given(
    starts=st.lists(bar_starts, min_size=1, max_size=40), market=st.sampled_from(["fx", "equity"])
)
def test_is_open_matches_oracle(starts, market):
    oracle = _fx_open_at if market == "fx" else _equity_open_at
    moments = [s.replace(tzinfo=dt.UTC) for s in starts]
    last = dt.timedelta(minutes=15) - dt.timedelta(microseconds=1)
    expected = [oracle(m) and oracle(m + last) for m in moments]
    assert is_open(market, pd.DatetimeIndex(moments), "15m").tolist() == expected
