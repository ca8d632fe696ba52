"""Market calendars: when bars are expected for crypto (24/7), FX (24/5) and US equities.

Markets:

* ``crypto`` trades around the clock, every day.
* ``fx`` trades from Sunday 17:00 to Friday 17:00 New York time, so in UTC the weekly
  boundary moves with US daylight saving (21:00 or 22:00 UTC). The FX trade date starts at
  17:00 New York (the date of New York time + 7 h). Dec 25 and Jan 1 trade dates are
  holidays: liquidity stops, bars may be missing; :func:`is_open` treats them as closed and
  :func:`is_holiday` flags them.
* ``equity`` is the NYSE: weekdays, regular hours 09:30–16:00 New York, full-day holidays
  closed and half days closing at 13:00, both from the ``holidays`` package's NYSE financial
  calendar. Without that package installed, only weekends are closed
  (:data:`NYSE_HOLIDAYS_AVAILABLE` says which).

Bars are stamped at their open time. An intraday bar ``[t, t + timeframe)`` is expected when
the whole interval lies in trading time. A bar of one or more days is expected when its
span holds a trading day; its trade date is the UTC date (crypto, equity: a daily equity bar
stamped 00:00 UTC, 00:00 New York or at the close all carry the session's date) or the FX
trade date (a daily FX bar stamped 00:00 UTC or 17:00 New York the day before).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Literal, get_args

import numpy as np
import pandas as pd

from mlengine.data.schema import INDEX_NAME, BarDataError, MLEngineError, Timeframe

Market = Literal["crypto", "fx", "equity"]
MARKETS: tuple[Market, ...] = get_args(Market)
NEW_YORK = "America/New_York"
NYSE_HOLIDAYS_AVAILABLE: bool = importlib.util.find_spec("holidays") is not None

_NS_DAY = 86_400 * 10**9
_NS_HOUR = 3_600 * 10**9
_FX_SHIFT = 7 * _NS_HOUR  # New York 17:00 + 7 h = midnight of the FX trade date
_FX_HOLIDAYS = ((12, 25), (1, 1))  # (month, day) of FX trade dates without liquidity
_EQ_OPEN = 9 * _NS_HOUR + 30 * 60 * 10**9
_EQ_CLOSE = 16 * _NS_HOUR
_EQ_HALF_CLOSE = 13 * _NS_HOUR
_EQ_HOURS_PER_DAY = 6.5
_DAYS_PER_YEAR: dict[Market, float] = {"crypto": 365.0, "fx": 5 * 52.0, "equity": 252.0}
_HOURS_PER_DAY: dict[Market, float] = {"crypto": 24.0, "fx": 24.0, "equity": _EQ_HOURS_PER_DAY}
_WEEKS_PER_YEAR: dict[Market, float] = {"crypto": 365.0 / 7, "fx": 52.0, "equity": 52.0}


class UnknownMarketError(MLEngineError, ValueError):
    """A market kind that the engine does not know."""


def check_market(market: str) -> Market:
    """Return ``market`` as a :data:`Market`, or raise :class:`UnknownMarketError`."""
    text = str(market).strip().lower()
    for kind in MARKETS:
        if text == kind:
            return kind
    raise UnknownMarketError(f"unknown market {market!r}: use one of {', '.join(MARKETS)}")


# --- time arithmetic on int64 nanoseconds --------------------------------------------------
# Calendar rules are applied to integer day numbers and times of day (ns since midnight),
# one numpy expression per rule: no Python loop over bars.


def _as_utc(ts_index: pd.DatetimeIndex | pd.Series | np.ndarray) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(ts_index)
    if idx.tz is None:
        raise BarDataError("timestamps must be tz-aware (UTC), got naive timestamps")
    return idx.tz_convert("UTC").as_unit("ns")


def _wall_ns(idx: pd.DatetimeIndex, tz: str) -> np.ndarray:
    """Wall-clock time in ``tz`` as ns since 1970-01-01 (naive)."""
    return np.asarray(idx.tz_convert(tz).tz_localize(None).as_unit("ns").asi8)


def _weekday(days: np.ndarray) -> np.ndarray:
    return (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


def _years(days: np.ndarray) -> tuple[int, int]:
    lo, hi = np.asarray([days.min(), days.max()], dtype="datetime64[D]").astype("datetime64[Y]")
    return int(lo.astype(int)) + 1970, int(hi.astype(int)) + 1970


@functools.lru_cache(maxsize=32)
def _nyse_days(first_year: int, last_year: int, category: str) -> np.ndarray:
    """NYSE closures (``public``) or 13:00 closes (``half_day``) as day numbers."""
    if not NYSE_HOLIDAYS_AVAILABLE:
        return np.empty(0, dtype=np.int64)
    import holidays

    cal = holidays.financial_holidays(
        "NYSE", years=range(first_year, last_year + 1), categories=(category,)
    )
    return np.sort(np.array(list(cal), dtype="datetime64[D]").astype(np.int64))


def _nyse(days: np.ndarray, category: str) -> np.ndarray:
    if days.size == 0:
        return np.zeros(0, dtype=bool)
    return np.isin(days, _nyse_days(*_years(days), category))


def _fx_holiday(days: np.ndarray) -> np.ndarray:
    d64 = days.astype("datetime64[D]")
    month_start = d64.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12 + 1
    day = (d64 - month_start).astype(np.int64) + 1
    out = np.zeros(days.shape, dtype=bool)
    for m, d in _FX_HOLIDAYS:
        out |= (month == m) & (day == d)
    return out


def _trading_day(market: Market, days: np.ndarray, *, with_holidays: bool = True) -> np.ndarray:
    if market == "crypto":
        return np.ones(days.shape, dtype=bool)
    weekday = _weekday(days) < 5
    if not with_holidays:
        return weekday
    if market == "fx":
        return weekday & ~_fx_holiday(days)
    return weekday & ~_nyse(days, "public")


def _is_daily(tf: Timeframe) -> bool:
    return tf.delta.value % _NS_DAY == 0


def _trade_days(market: Market, idx: pd.DatetimeIndex) -> np.ndarray:
    if market == "fx":
        return (_wall_ns(idx, NEW_YORK) + _FX_SHIFT) // _NS_DAY
    return np.asarray(idx.asi8) // _NS_DAY


def _daily_open(
    market: Market, idx: pd.DatetimeIndex, n_days: int, with_holidays: bool
) -> np.ndarray:
    days = _trade_days(market, idx)
    out = np.zeros(len(idx), dtype=bool)
    for k in range(n_days):  # loop over the days a bar spans, not over bars
        out |= _trading_day(market, days + k, with_holidays=with_holidays)
    return out


def _intraday_open(
    market: Market, start: pd.DatetimeIndex, end: pd.DatetimeIndex, *, with_holidays: bool
) -> np.ndarray:
    """Whether ``[start, end]`` lies in one continuous stretch of trading time."""
    if market == "fx":
        s = _wall_ns(start, NEW_YORK) + _FX_SHIFT
        e = _wall_ns(end, NEW_YORK) + _FX_SHIFT
        sd, ed = s // _NS_DAY, e // _NS_DAY
        same_week = (sd + 3) // 7 == (ed + 3) // 7
        ok = same_week & (_weekday(sd) < 5) & (_weekday(ed) < 5)
        if with_holidays:
            ok &= ~_fx_holiday(sd) & ~_fx_holiday(ed)
        return np.asarray(ok)
    s = _wall_ns(start, NEW_YORK)
    e = _wall_ns(end, NEW_YORK)
    sd, ed = s // _NS_DAY, e // _NS_DAY
    close = np.where(_nyse(sd, "half_day"), _EQ_HALF_CLOSE, _EQ_CLOSE)
    in_hours = (s - sd * _NS_DAY >= _EQ_OPEN) & (e - ed * _NS_DAY < close)
    return np.asarray((sd == ed) & in_hours & _trading_day(market, sd))


def _open(
    market: Market,
    ts_index: pd.DatetimeIndex | pd.Series | np.ndarray,
    timeframe: str | Timeframe | None,
    *,
    with_holidays: bool,
) -> np.ndarray:
    idx = _as_utc(ts_index)
    if market == "crypto" or len(idx) == 0:
        return np.ones(len(idx), dtype=bool)
    tf = None if timeframe is None else Timeframe.parse(timeframe)
    if tf is not None and _is_daily(tf):
        return _daily_open(market, idx, tf.delta.value // _NS_DAY, with_holidays)
    end = idx if tf is None else idx + (tf.delta - pd.Timedelta(1, unit="ns"))
    return _intraday_open(market, idx, end, with_holidays=with_holidays)


def is_open(
    market: str,
    ts_index: pd.DatetimeIndex | pd.Series | np.ndarray,
    timeframe: str | Timeframe | None = None,
) -> np.ndarray:
    """Whether a bar stamped at each timestamp is expected to exist.

    With ``timeframe`` the bar's whole interval must lie in trading time (intraday) or its
    span must hold a trading day (daily and longer); without, the instant itself is checked.
    """
    return _open(check_market(market), ts_index, timeframe, with_holidays=True)


def is_holiday(
    market: str,
    ts_index: pd.DatetimeIndex | pd.Series | np.ndarray,
    timeframe: str | Timeframe | None = None,
) -> np.ndarray:
    """Bars that would be in trading time but for an FX holiday (Dec 25, Jan 1 trade dates).

    Such bars may be missing without anything being wrong. Always False for crypto, and for
    equity, whose NYSE holidays are plain closures (:func:`is_open` is False on them).
    """
    kind = check_market(market)
    if kind != "fx":
        return np.zeros(len(ts_index), dtype=bool)
    nominal = _open(kind, ts_index, timeframe, with_holidays=False)
    return nominal & ~_open(kind, ts_index, timeframe, with_holidays=True)


def expected_index(
    market: str,
    start: pd.Timestamp | str,
    end: pd.Timestamp | str,
    timeframe: str | Timeframe,
) -> pd.DatetimeIndex:
    """The bars that should exist from ``start`` to ``end`` (both inclusive, UTC if naive).

    The grid is anchored at ``start``: in UTC for crypto, FX and daily bars, in New York
    wall-clock time for intraday equity bars (so that 09:30 stays 09:30 across DST).
    """
    kind = check_market(market)
    tf = Timeframe.parse(timeframe)
    lo, hi = (pd.Timestamp(t) for t in (start, end))
    lo = lo.tz_localize("UTC") if lo.tzinfo is None else lo.tz_convert("UTC")
    hi = hi.tz_localize("UTC") if hi.tzinfo is None else hi.tz_convert("UTC")
    if kind == "equity" and not _is_daily(tf):
        wall = pd.date_range(
            lo.tz_convert(NEW_YORK).tz_localize(None),
            hi.tz_convert(NEW_YORK).tz_localize(None),
            freq=tf.delta,
        )
        local = wall.tz_localize(NEW_YORK, ambiguous="NaT", nonexistent="NaT").dropna()
        grid = local.tz_convert("UTC")
        grid = grid[(grid >= lo) & (grid <= hi)]
    else:
        grid = pd.date_range(lo, hi, freq=tf.delta)
    grid = grid.as_unit("ns")[is_open(kind, grid, tf)]
    return pd.DatetimeIndex(grid, name=INDEX_NAME)


def infer_market(index: pd.DatetimeIndex | pd.Series | np.ndarray) -> Market:
    """Guess the market from bar timestamps alone.

    At least 2% of bars on a Saturday (UTC) → ``crypto`` (24/7 has ~14%, FX and equity none);
    otherwise intraday bars with at least 10% of them outside 04:00–20:00 New York (beyond
    even extended equity hours) → ``fx``; daily bars with at least 5% on Sundays (FX days
    stamped 17:00 New York) → ``fx``; else ``equity``. Daily FX bars stamped 00:00 UTC look
    like equity bars: pass the market explicitly for those.
    """
    idx = _as_utc(index)
    if len(idx) == 0:
        raise BarDataError("cannot infer the market of an empty index")
    utc_days = np.asarray(idx.asi8) // _NS_DAY
    if np.mean(_weekday(utc_days) == 5) >= 0.02:
        return "crypto"
    steps = np.diff(np.unique(idx.asi8))
    if steps.size and np.median(steps) >= _NS_DAY:
        return "fx" if np.mean(_weekday(utc_days) == 6) >= 0.05 else "equity"
    wall = _wall_ns(idx, NEW_YORK)
    tod = wall - (wall // _NS_DAY) * _NS_DAY
    outside = (tod < 4 * _NS_HOUR) | (tod >= 20 * _NS_HOUR)
    return "fx" if np.mean(outside) >= 0.10 else "equity"


def periods_per_year(market: str, timeframe: str | Timeframe) -> float:
    """Bars per year, for annualising.

    Trading time per year divided by the bar length: crypto trades 365 days of 24 h;
    FX 52 weeks of 5 days of 24 h (Sunday 17:00 to Friday 17:00 New York is 120 h a week:
    6,240 hourly bars; its two holidays are ignored); equity 252 sessions of 6.5 h. Bars of
    ``n`` days count trading days (365, 260, 252 a year), weekly bars calendar weeks.
    """
    kind = check_market(market)
    tf = Timeframe.parse(timeframe)
    ns = tf.delta.value
    week = 7 * _NS_DAY
    if ns % week == 0:
        return _WEEKS_PER_YEAR[kind] / (ns // week)
    if ns % _NS_DAY == 0:
        return _DAYS_PER_YEAR[kind] / (ns // _NS_DAY)
    return _DAYS_PER_YEAR[kind] * _HOURS_PER_DAY[kind] * _NS_HOUR / ns
