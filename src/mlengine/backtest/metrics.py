"""Performance metrics of a backtest: return, risk, drawdown, trades, direction accuracy.

Definitions (those of empyrical and quantstats, which the tests use as oracles):

* Per-bar returns ``r_t = equity_t / equity_{t-1} - 1`` with ``r_0 = 0`` (the engine's
  ``returns``). ``P`` is ``periods_per_year`` from
  :func:`mlengine.data.calendar.periods_per_year` (8,760 hourly bars for crypto, 6,240 for
  FX, 1,638 for NYSE hours), never a constant 252.
* Time is counted in bars: ``years = n / P``. ``annual_return`` (CAGR) is
  ``(1 + total_return) ** (1 / years) - 1``, on the same clock as
  ``annual_volatility = std(r, ddof=1) * sqrt(P)``; calendar time would also count the
  weekends of FX and equities that ``P`` leaves out, and missing bars would not shift it.
* ``sharpe = mean(r - rf) / std(r - rf, ddof=1) * sqrt(P)`` with ``rf`` a per-bar rate
  (0 by default). ``sortino = mean(r - rf) / DD * sqrt(P)`` with the target downside
  deviation ``DD = sqrt(mean(min(r - rf, 0) ** 2))`` over all bars (Sortino & Price 1994;
  Red Rock Capital, "Sortino: a sharper ratio"). Both are NaN with fewer than two bars;
  Sharpe is NaN when every return is equal (zero variance: NaN, not inf), Sortino when
  ``DD = 0``.
* Drawdown ``1 - W_t / max_{s<=t} W_s`` of the wealth ``W``, which starts at 1 *before*
  the first return (a loss on the first bar is a drawdown). ``max_drawdown`` is a positive
  fraction; its duration (``max_drawdown_bars`` and the time between those bars) runs
  from the last bar at the peak before the deepest trough to the first bar back at that
  peak, or to the last bar if the wealth never recovers. The start before the first bar
  is stamped one bar spacing before it. Round-off cannot move these bars: wealth within
  1e-12 (relative) of the peak counts as at the peak, and of troughs equally deep within
  1e-12 the first counts. ``calmar = annual_return / max_drawdown`` (NaN without drawdown).
* Ruin: once wealth reaches zero or below (a return <= -100%), it stays at zero: that
  bar's return is -100%, later returns 0, ``max_drawdown`` 1 and CAGR -100%.
* Trades (one ledger row per round trip): ``win_rate`` share with ``pnl > 0``;
  ``profit_factor`` gross profit / gross loss (inf without losses, NaN without trades or
  when every pnl is 0); ``expectancy`` mean net pnl, ``expectancy_return`` mean trade return.
* ``exposure`` share of bars holding a non-zero position in any symbol; ``turnover`` the sum
  over symbols and bars of ``|exposure_t - exposure_{t-1}|`` (from 0, so rebalancing and
  drift between rebalances both count) divided by ``years``.
* ``direction_accuracy`` share of (bar, symbol) pairs with a non-zero signal and a known
  next close where ``sign(signal_t) == sign(close_{t+1} - close_t)``; an unchanged next
  close counts as a miss.
* ``yearly`` and ``monthly`` compound the returns within each calendar year / month of the
  index's time zone (UTC for bar frames); the wealth at the end of one period starts the
  next, so the periods compound to ``total_return``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numba
import numpy as np
import pandas as pd

from mlengine.data.schema import MLEngineError

__all__ = [
    "Metrics",
    "MetricsError",
    "ResultLike",
    "compute_metrics",
    "drawdown",
    "metrics_from_returns",
    "returns_from_equity",
]

TRADE_COLUMNS: tuple[str, ...] = ("pnl", "return")
# Wealth within this relative distance of its peak counts as at the peak (round-off in the
# equity must not decide where a drawdown starts or whether it recovered).
_PEAK_RTOL = 1e-12
_YEARLY_COLUMNS = ["return", "volatility", "sharpe", "max_drawdown", "n_bars"]


class MetricsError(MLEngineError, ValueError):
    """Input that metrics cannot be computed from (NaN equity, misaligned frames, ...)."""


class ResultLike(Protocol):
    """What :func:`compute_metrics` reads from a backtest result."""

    @property
    def equity(self) -> pd.Series: ...
    @property
    def exposure(self) -> pd.DataFrame: ...
    @property
    def signal(self) -> pd.DataFrame: ...
    @property
    def close(self) -> pd.DataFrame: ...
    @property
    def trades(self) -> pd.DataFrame: ...
    @property
    def periods_per_year(self) -> float: ...


@dataclass(frozen=True, eq=False)
class Metrics:
    """The metrics of one backtest; see the module docstring for the definitions."""

    total_return: float
    annual_return: float
    annual_volatility: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_duration: pd.Timedelta
    max_drawdown_bars: int
    win_rate: float
    profit_factor: float
    expectancy: float
    expectancy_return: float
    exposure: float
    turnover: float
    n_trades: int
    direction_accuracy: float
    n_direction_bars: int
    periods_per_year: float
    n_bars: int
    start: pd.Timestamp
    end: pd.Timestamp
    yearly: pd.DataFrame  # index year; columns return, volatility, sharpe, max_drawdown, n_bars
    monthly: pd.DataFrame  # index year, columns 1..12: compounded return of each month

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe values: NaN → None, ±inf → "inf"/"-inf", times as ISO 8601."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, pd.DataFrame):
                out[f.name] = {
                    str(idx): {str(col): _json_value(v) for col, v in row.items()}
                    for idx, row in value.to_dict(orient="index").items()
                }
            else:
                out[f.name] = _json_value(value)
        return out


def _json_value(value: object) -> object:
    if isinstance(value, pd.Timedelta | pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        x = float(value)
        if math.isnan(x):
            return None
        return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
    return value


# --- input checks ---------------------------------------------------------------------------


def _check_index(index: pd.Index, what: str) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise MetricsError(f"{what} needs a DatetimeIndex, got {type(index).__name__}")
    ns = index.asi8
    if ns.size > 1 and not bool(np.all(ns[1:] > ns[:-1])):
        bad = int(np.flatnonzero(ns[1:] <= ns[:-1])[0]) + 1
        raise MetricsError(f"{what} index is not strictly increasing at bar {bad} ({index[bad]})")
    return index


def _first_bad(values: np.ndarray, bad: np.ndarray, index: pd.Index, what: str) -> None:
    if bad.any():
        pos = int(np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[0])
        raise MetricsError(f"{what} is not finite at bar {pos} ({index[pos]})")


def _check_ppy(periods_per_year: float) -> float:
    ppy = float(periods_per_year)
    if not math.isfinite(ppy) or ppy <= 0:
        raise MetricsError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    return ppy


def _equity_arrays(equity: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """Per-bar returns, wealth (equity / equity_0, zero from ruin on) and index of an equity."""
    index = _check_index(equity.index, "equity")
    eq = np.asarray(equity.to_numpy(dtype=np.float64, na_value=np.nan))
    if eq.size == 0:
        raise MetricsError("equity is empty: no bars to compute metrics on")
    _first_bad(eq, ~np.isfinite(eq), index, "equity")
    if eq[0] <= 0:
        raise MetricsError(f"equity must start positive, got {eq[0]} at bar 0 ({index[0]})")
    wealth = eq / eq[0]
    r = np.empty(eq.size)
    r[0] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(eq[1:], eq[:-1], out=r[1:])
    r[1:] -= 1.0
    if eq.min() <= 0:  # the account is gone: -100% on the ruin bar, nothing to gain or lose after
        ruin = int(np.flatnonzero(eq <= 0)[0])
        r[ruin], r[ruin + 1 :], wealth[ruin:] = -1.0, 0.0, 0.0
    return r, wealth, index


def returns_from_equity(equity: pd.Series) -> pd.Series:
    """Per-bar returns of an equity curve, the first bar 0 (raises on NaN or ``equity_0 <= 0``)."""
    r, _, index = _equity_arrays(equity)
    return pd.Series(r, index=index, name="returns")


def _returns_arrays(returns: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Checked per-bar returns (ruin applied) and the wealth they compound to."""
    r = np.array(returns.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    _first_bad(r, ~np.isfinite(r), returns.index, "returns")
    if r.size and r.min() <= -1.0:
        ruin = int(np.flatnonzero(r <= -1.0)[0])
        r[ruin], r[ruin + 1 :] = -1.0, 0.0
    return r, np.cumprod(1.0 + r)


# --- equity-curve metrics -------------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


@numba.njit(cache=True, nogil=True)
def _drawdown_scan(
    ext: np.ndarray, seg_start: np.ndarray, seg_count: np.ndarray
) -> tuple[float, int, int, int, np.ndarray]:
    """Deepest drawdown of wealth ``ext`` (depth, peak, trough, recovery or -1) and the
    deepest within each segment ``ext[start : start + count + 1]``.

    Compiled: one pass over the bars replaces a running maximum, a division and several
    searches over the whole array, plus one running maximum per calendar year.
    """
    near = 1.0 - _PEAK_RTOL
    peak_value, peak, depth, best_peak, best_value, trough = ext[0], 0, 0.0, 0, ext[0], 0
    for k in range(1, ext.size):
        v = ext[k]
        if v >= peak_value * near:  # at (or back at) the peak
            peak, peak_value = k, max(v, peak_value)
        elif 1.0 - v / peak_value > depth + _PEAK_RTOL:  # a tie keeps the first trough
            depth, best_peak, best_value, trough = 1.0 - v / peak_value, peak, peak_value, k
    recovery = -1
    for k in range(trough + 1, ext.size):
        if depth > 0.0 and ext[k] >= best_value * near:
            recovery = k
            break
    seg_depth = np.zeros(seg_start.size)
    for i in range(seg_start.size):
        top, worst = ext[seg_start[i]], 0.0
        for k in range(seg_start[i] + 1, seg_start[i] + seg_count[i] + 1):
            v = ext[k]
            if v > top:
                top = v
            elif top > 0.0 and 1.0 - v / top > worst:
                worst = 1.0 - v / top
        seg_depth[i] = worst
    return depth, best_peak, trough, recovery, seg_depth


def _calendar_segments(wall_ns: np.ndarray, unit: str) -> tuple[np.ndarray, ...]:
    """Codes (periods since 1970), first bars and bar counts of the periods holding bars.

    Works on the period edges (a few hundred), found by binary search in the sorted
    timestamps: converting every timestamp to a month is what made this slow.
    """
    first_last = wall_ns[[0, -1]].view("datetime64[ns]").astype(f"datetime64[{unit}]")
    periods = np.arange(first_last[0], first_last[1] + 1)
    starts = np.searchsorted(wall_ns, periods.astype("datetime64[ns]").view(np.int64))
    counts = np.diff(np.r_[starts, wall_ns.size])
    keep = counts > 0
    return periods.view(np.int64)[keep], starts[keep], counts[keep]


def _period_returns(ext: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    begin, finish = ext[starts], ext[starts + counts]  # ext[k + 1] is the wealth after bar k
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(begin > 0, finish / begin - 1.0, 0.0)


def _yearly(
    r: np.ndarray,
    ext: np.ndarray,
    years: tuple[np.ndarray, ...],
    depth: np.ndarray,
    ppy: float,
    rf: float,
) -> pd.DataFrame:
    code, starts, counts = years
    mean = np.add.reduceat(r, starts) / counts
    dev = r - np.repeat(mean, counts)
    const = np.maximum.reduceat(r, starts) == np.minimum.reduceat(r, starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(np.add.reduceat(dev * dev, starts) / (counts - 1))
        std = np.where(counts < 2, np.nan, np.where(const, 0.0, std))
        sharpe = np.where(std > 0, (mean - rf) / std, np.nan) * math.sqrt(ppy)
    data = {
        "return": _period_returns(ext, starts, counts),
        "volatility": std * math.sqrt(ppy),
        "sharpe": sharpe,
        "max_drawdown": depth,
        "n_bars": counts.astype(np.int64),
    }
    return pd.DataFrame(data, index=pd.Index(code + 1970, name="year"))


def _monthly(ext: np.ndarray, wall_ns: np.ndarray) -> pd.DataFrame:
    code, starts, counts = _calendar_segments(wall_ns, "M")
    year, month = code // 12 + 1970, code % 12
    table = np.full((int(year[-1] - year[0]) + 1, 12), np.nan)
    table[year - year[0], month] = _period_returns(ext, starts, counts)
    index = pd.Index(np.arange(year[0], year[-1] + 1), name="year")
    frame = pd.DataFrame(table, index=index, columns=pd.Index(range(1, 13), name="month"))
    return frame.loc[np.isin(frame.index, year)]


def _ratios(r: np.ndarray, ppy: float, rf: float) -> tuple[float, float, float]:
    """Annual volatility, Sharpe and Sortino of per-bar returns ``r``."""
    if r.size < 2:
        return math.nan, math.nan, math.nan
    x = r - rf if rf else r
    if r.max() == r.min():  # zero variance: Sharpe is undefined, not infinite
        vol, sharpe = 0.0, math.nan
    else:
        std = float(np.std(x, ddof=1))  # may still underflow to 0 for tiny returns
        vol, sharpe = std * math.sqrt(ppy), _ratio(float(np.mean(x)), std) * math.sqrt(ppy)
    below = np.minimum(x, 0.0)
    downside = math.sqrt(float(np.dot(below, below)) / x.size)
    return vol, sharpe, _ratio(float(np.mean(x)), downside) * math.sqrt(ppy)


def _wall_ns(index: pd.DatetimeIndex, ns: np.ndarray) -> np.ndarray:
    """Nanosecond timestamps on the wall clock of the index's time zone."""
    if index.tz is None or str(index.tz) == "UTC":
        return ns
    return np.asarray(index.tz_localize(None).as_unit("ns").asi8)


def drawdown(returns: pd.Series) -> pd.Series:
    """Drawdown (positive fraction) at each bar of per-bar ``returns``."""
    ext = np.r_[1.0, _returns_arrays(returns)[1]]
    runmax = np.maximum.accumulate(ext)
    return pd.Series(1.0 - ext[1:] / runmax[1:], index=returns.index, name="drawdown")


# --- trade, exposure and direction metrics --------------------------------------------------


def _trade_stats(trades: pd.DataFrame) -> tuple[float, float, float, float, int]:
    missing = [c for c in TRADE_COLUMNS if c not in trades.columns]
    if missing:
        raise MetricsError(f"trades lack the column(s) {', '.join(missing)}")
    pnl = np.asarray(trades["pnl"].to_numpy(dtype=np.float64, na_value=np.nan))
    ret = np.asarray(trades["return"].to_numpy(dtype=np.float64, na_value=np.nan))
    for name, values in (("pnl", pnl), ("return", ret)):
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise MetricsError(f"trades row {row}, column {name!r}: not a finite number")
    if pnl.size == 0:
        return math.nan, math.nan, math.nan, math.nan, 0
    gross_profit, gross_loss = float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum())
    if gross_loss > 0:
        profit_factor = gross_profit / gross_loss
    else:
        profit_factor = math.inf if gross_profit > 0 else math.nan
    win_rate = float(np.mean(pnl > 0))
    return win_rate, profit_factor, float(pnl.mean()), float(ret.mean()), int(pnl.size)


def _frame_values(frame: pd.DataFrame, index: pd.DatetimeIndex, what: str) -> np.ndarray:
    if not frame.index.equals(index):
        raise MetricsError(f"{what} is not on the equity's bars ({len(frame)} vs {len(index)})")
    values = np.asarray(frame.to_numpy(dtype=np.float64, na_value=np.nan))
    return values.reshape(len(frame), -1)


@numba.njit(cache=True, nogil=True)
def _exposure_scan(x: np.ndarray) -> tuple[int, float]:
    """Bars holding any position, and the sum of ``|Δexposure|`` (compiled: one pass)."""
    held, traded = 0, 0.0
    for t in range(x.shape[0]):
        holding = False
        for j in range(x.shape[1]):
            traded += abs(x[t, j] - (x[t - 1, j] if t > 0 else 0.0))
            holding = holding or x[t, j] != 0.0
        held += holding
    return held, traded


@numba.njit(cache=True, nogil=True)
def _direction_scan(signal: np.ndarray, close: np.ndarray) -> tuple[int, int]:
    """Hits and counted bars of the signal's direction vs the next close (compiled)."""
    hits, known = 0, 0
    for t in range(signal.shape[0] - 1):
        for j in range(signal.shape[1]):
            s, move = signal[t, j], close[t + 1, j] - close[t, j]
            if s != 0.0 and np.isfinite(move):
                known += 1
                hits += (s > 0.0 and move > 0.0) or (s < 0.0 and move < 0.0)
    return hits, known


def _exposure_stats(
    exposure: pd.DataFrame, index: pd.DatetimeIndex, years: float
) -> tuple[float, float]:
    x = _frame_values(exposure, index, "exposure")
    _first_bad(x, ~np.isfinite(x), index, "exposure")
    held, traded = _exposure_scan(x)
    return held / x.shape[0], traded / years


def _direction(
    signal: pd.DataFrame, close: pd.DataFrame, index: pd.DatetimeIndex
) -> tuple[float, int]:
    missing = [str(c) for c in signal.columns if c not in close.columns]
    if missing:
        raise MetricsError(f"close prices missing for signal symbol(s) {', '.join(missing)}")
    s = _frame_values(signal, index, "signal")
    _first_bad(s, np.isnan(s), index, "signal")
    c = _frame_values(close[list(signal.columns)], index, "close")
    hits, known = _direction_scan(s, c)
    return (hits / known if known else math.nan), int(known)


# --- public entry points --------------------------------------------------------------------


def metrics_from_returns(
    returns: pd.Series,
    *,
    periods_per_year: float,
    risk_free: float = 0.0,
    trades: pd.DataFrame | None = None,
    exposure: pd.DataFrame | None = None,
    signal: pd.DataFrame | None = None,
    close: pd.DataFrame | None = None,
) -> Metrics:
    """Metrics of per-bar ``returns`` (a Series on a DatetimeIndex).

    ``risk_free`` is a per-bar rate, subtracted in Sharpe and Sortino. The optional frames
    (on the same bars) give the trade, exposure and direction metrics; without them those
    are NaN and their counts 0.
    """
    index = _check_index(returns.index, "returns")
    if len(index) == 0:
        raise MetricsError("returns are empty: no bars to compute metrics on")
    r, wealth = _returns_arrays(returns)
    return _metrics(r, wealth, index, periods_per_year, risk_free, trades, exposure, signal, close)


def compute_metrics(result: ResultLike, *, risk_free: float = 0.0) -> Metrics:
    """Metrics of a backtest result (reads only the attributes of :class:`ResultLike`).

    Equal to :func:`metrics_from_returns` on :func:`returns_from_equity` of its equity.
    """
    r, wealth, index = _equity_arrays(result.equity)
    return _metrics(
        r,
        wealth,
        index,
        result.periods_per_year,
        risk_free,
        result.trades,
        result.exposure,
        result.signal,
        result.close,
    )


def _metrics(
    r: np.ndarray,
    wealth: np.ndarray,
    index: pd.DatetimeIndex,
    periods_per_year: float,
    risk_free: float,
    trades: pd.DataFrame | None,
    exposure: pd.DataFrame | None,
    signal: pd.DataFrame | None,
    close: pd.DataFrame | None,
) -> Metrics:
    ppy = _check_ppy(periods_per_year)
    rf = float(risk_free)
    if not math.isfinite(rf):
        raise MetricsError(f"risk_free must be a finite per-bar rate, got {risk_free!r}")
    if (signal is None) != (close is None):
        raise MetricsError("direction accuracy needs both signal and close")
    n = r.size
    years = n / ppy
    ext = np.empty(n + 1)  # wealth with the phantom start (1) before the first bar
    ext[0], ext[1:] = 1.0, wealth
    ns = np.asarray(index.as_unit("ns").asi8)
    ts_ext = np.r_[ns[0] - (ns[1] - ns[0] if n > 1 else 0), ns]
    with np.errstate(over="ignore"):
        cagr = float(np.power(ext[-1], 1.0 / years) - 1.0)
    vol, sharpe, sortino = _ratios(r, ppy, rf)
    wall = _wall_ns(index, ns)
    years_seg = _calendar_segments(wall, "Y")
    max_dd, peak, _, recovery, year_depth = _drawdown_scan(ext, *years_seg[1:])
    end = recovery if recovery >= 0 else (n if max_dd > 0 else peak)
    dd_time = pd.Timedelta(int(ts_ext[end] - ts_ext[peak]), unit="ns")

    win_rate = profit_factor = expectancy = expectancy_return = math.nan
    held = turnover = accuracy = math.nan
    n_trades = n_direction = 0
    if trades is not None:
        win_rate, profit_factor, expectancy, expectancy_return, n_trades = _trade_stats(trades)
    if exposure is not None:
        held, turnover = _exposure_stats(exposure, index, years)
    if signal is not None and close is not None:
        accuracy, n_direction = _direction(signal, close, index)

    return Metrics(
        total_return=float(ext[-1] - 1.0),
        annual_return=cagr,
        annual_volatility=vol,
        sharpe=sharpe,
        sortino=sortino,
        calmar=_ratio(cagr, max_dd),
        max_drawdown=float(max_dd),
        max_drawdown_duration=dd_time,
        max_drawdown_bars=int(end - peak),
        win_rate=win_rate,
        profit_factor=profit_factor,
        expectancy=expectancy,
        expectancy_return=expectancy_return,
        exposure=held,
        turnover=turnover,
        n_trades=n_trades,
        direction_accuracy=accuracy,
        n_direction_bars=n_direction,
        periods_per_year=ppy,
        n_bars=n,
        start=index[0],
        end=index[-1],
        yearly=_yearly(r, ext, years_seg, year_depth, ppy, rf),
        monthly=_monthly(ext, wall),
    )
