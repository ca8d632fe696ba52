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
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd

from mlengine.backtest import _metrics_core as core
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
                    str(idx): {str(col): json_value(v) for col, v in row.items()}
                    for idx, row in value.to_dict(orient="index").items()
                }
            else:
                out[f.name] = json_value(value)
        return out


def json_value(value: object) -> object:
    """A scalar as plain JSON: NaN/NaT → None, ±inf → "inf"/"-inf", times as ISO 8601,
    NumPy scalars as Python numbers; anything else unchanged."""
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


class _Source(NamedTuple):
    """Where the compiled scans read the returns and wealth from (see
    :mod:`mlengine.backtest._metrics_core`): an equity curve (``r`` empty, ``scale`` its
    first value) or returns (``r``) with the wealth they compound to (``scale`` 1)."""

    eq: np.ndarray
    r: np.ndarray
    scale: float
    ruin: int


def _readonly(values: np.ndarray) -> np.ndarray:
    """A read-only view: one compiled variant of each scan serves every caller."""
    view = values.view()
    view.flags.writeable = False
    return view


_NO_RETURNS = _readonly(np.empty(0))


def _check_index(index: pd.Index, what: str) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise MetricsError(f"{what} needs a DatetimeIndex, got {type(index).__name__}")
    bad = core.first_unsorted(_readonly(index.asi8))
    if bad >= 0:
        raise MetricsError(f"{what} index is not strictly increasing at bar {bad} ({index[bad]})")
    return index


def _raise_bad(bad: int, index: pd.Index, what: str) -> None:
    if bad >= 0:
        raise MetricsError(f"{what} is not finite at bar {bad} ({index[bad]})")


def _check_ppy(periods_per_year: float) -> float:
    ppy = float(periods_per_year)
    if not math.isfinite(ppy) or ppy <= 0:
        raise MetricsError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    return ppy


def _equity_source(equity: pd.Series) -> tuple[_Source, pd.DatetimeIndex]:
    """The checked equity curve as a source, and its index (nothing is copied)."""
    index = _check_index(equity.index, "equity")
    eq = _readonly(np.asarray(equity.to_numpy(dtype=np.float64, na_value=np.nan)))
    if eq.size == 0:
        raise MetricsError("equity is empty: no bars to compute metrics on")
    bad, ruin = core.equity_check(eq)
    _raise_bad(bad, index, "equity")
    if eq[0] <= 0:
        raise MetricsError(f"equity must start positive, got {eq[0]} at bar 0 ({index[0]})")
    return _Source(eq, _NO_RETURNS, float(eq[0]), ruin), index


def returns_from_equity(equity: pd.Series) -> pd.Series:
    """Per-bar returns of an equity curve, the first bar 0 (raises on NaN or ``equity_0 <= 0``)."""
    src, index = _equity_source(equity)
    r = np.empty(src.eq.size)
    core.fill_returns(src.eq, src.r, src.ruin, 0, r.size, r)
    return pd.Series(r, index=index, name="returns")


def _returns_source(returns: pd.Series) -> _Source:
    """Checked per-bar returns (ruin applied) and the wealth they compound to."""
    r = np.array(returns.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    finite = np.isfinite(r)
    if not finite.all():
        _raise_bad(int(np.argmin(finite)), returns.index, "returns")
    if r.size and r.min() <= -1.0:
        ruin = int(np.flatnonzero(r <= -1.0)[0])
        r[ruin], r[ruin + 1 :] = -1.0, 0.0
    wealth = np.cumprod(1.0 + r)
    return _Source(_readonly(wealth), _readonly(r), 1.0, r.size)


def _wealth_at(src: _Source, positions: np.ndarray) -> np.ndarray:
    """Wealth at ``positions`` of the wealth with the start (1) before the first bar."""
    return core.wealth_points(src.eq, src.scale, src.ruin, positions.astype(np.int64))


# --- equity-curve metrics -------------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _calendar_segments(wall_ns: np.ndarray, unit: str) -> tuple[np.ndarray, ...]:
    """Codes (periods since 1970), first bars and bar counts of the periods holding bars.

    Works on the period edges (a few hundred), found by binary search in the sorted
    timestamps: converting every timestamp to a month is what made this slow.
    """
    first_last = wall_ns[[0, -1]].view("datetime64[ns]").astype(f"datetime64[{unit}]")
    periods = np.arange(first_last[0], first_last[1] + 1)
    starts = np.searchsorted(wall_ns, periods.astype("datetime64[ns]").view(np.int64))
    counts = np.empty_like(starts)
    counts[:-1], counts[-1] = starts[1:] - starts[:-1], wall_ns.size - starts[-1]
    keep = counts > 0
    return periods.view(np.int64)[keep], starts[keep], counts[keep]


def _period_returns(src: _Source, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    begin, finish = np.split(_wealth_at(src, np.concatenate([starts, starts + counts])), 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(begin > 0, finish / begin - 1.0, 0.0)


def _yearly(
    src: _Source,
    years: tuple[np.ndarray, ...],
    sums: tuple[np.ndarray, np.ndarray],
    depth: np.ndarray,
    const: np.ndarray,
    ppy: float,
    rf: float,
) -> pd.DataFrame:
    code, starts, counts = years
    mean = sums[0] / counts
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(sums[1] / (counts - 1))
        std = np.where(counts < 2, np.nan, np.where(const, 0.0, std))
        sharpe = np.where(std > 0, (mean - rf) / std, np.nan) * math.sqrt(ppy)
    data = {
        "return": _period_returns(src, starts, counts),
        "volatility": std * math.sqrt(ppy),
        "sharpe": sharpe,
        "max_drawdown": depth,
        "n_bars": counts.astype(np.int64),
    }
    return pd.DataFrame(data, index=pd.Index(code + 1970, name="year"))


def _monthly(src: _Source, wall_ns: np.ndarray) -> pd.DataFrame:
    code, starts, counts = _calendar_segments(wall_ns, "M")
    year, month = code // 12 + 1970, code % 12
    years, row = np.unique(year, return_inverse=True)
    table = np.full((years.size, 12), np.nan)
    table[row, month] = _period_returns(src, starts, counts)
    columns = pd.RangeIndex(1, 13, name="month")
    return pd.DataFrame(table, index=pd.Index(years, name="year"), columns=columns, copy=False)


def _ratios(
    n: int, total: float, squares: float, downside: float, const: bool, ppy: float
) -> tuple[float, float, float]:
    """Annual volatility, Sharpe and Sortino from the sums of ``moments``."""
    if n < 2:
        return math.nan, math.nan, math.nan
    mean = total / n
    if const:  # zero variance: Sharpe is undefined, not infinite
        vol, sharpe = 0.0, math.nan
    else:
        std = math.sqrt(squares / (n - 1))  # may still underflow to 0 for tiny returns
        vol, sharpe = std * math.sqrt(ppy), _ratio(mean, std) * math.sqrt(ppy)
    return vol, sharpe, _ratio(mean, math.sqrt(downside / n)) * math.sqrt(ppy)


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Nanosecond stamps of the index (a view unless the index has another unit)."""
    return np.asarray(index.asi8 if index.unit == "ns" else index.as_unit("ns").asi8)


def _wall_ns(index: pd.DatetimeIndex, ns: np.ndarray) -> np.ndarray:
    """Nanosecond timestamps on the wall clock of the index's time zone."""
    if index.tz is None or str(index.tz) == "UTC":
        return ns
    return np.asarray(index.tz_localize(None).as_unit("ns").asi8)


def drawdown(returns: pd.Series) -> pd.Series:
    """Drawdown (positive fraction) at each bar of per-bar ``returns``."""
    wealth = _returns_source(returns).eq
    runmax = np.maximum.accumulate(np.concatenate([[1.0], wealth]))
    return pd.Series(1.0 - wealth / runmax[1:], index=returns.index, name="drawdown")


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
    """The values as symbols × bars (a view of a single-dtype frame)."""
    if not frame.index.equals(index):
        raise MetricsError(f"{what} is not on the equity's bars ({len(frame)} vs {len(index)})")
    values = np.asarray(frame.to_numpy(dtype=np.float64, na_value=np.nan))
    return _readonly(values.reshape(len(frame), -1).T)


def _exposure_stats(
    exposure: pd.DataFrame, index: pd.DatetimeIndex, years: float
) -> tuple[float, float]:
    x = _frame_values(exposure, index, "exposure")
    held, traded, bad = core.exposure_scan(x)
    _raise_bad(bad, index, "exposure")
    return held / x.shape[1], traded / years


def _direction(
    signal: pd.DataFrame, close: pd.DataFrame, index: pd.DatetimeIndex
) -> tuple[float, int]:
    missing = [str(c) for c in signal.columns if c not in close.columns]
    if missing:
        raise MetricsError(f"close prices missing for signal symbol(s) {', '.join(missing)}")
    s = _frame_values(signal, index, "signal")
    same = close.columns.equals(signal.columns)  # the engine's frames: no column selection
    try:
        c = _frame_values(close if same else close[list(signal.columns)], index, "close")
    except MetricsError:  # a NaN in the signal is reported first
        nan = np.isnan(s).any(axis=0)
        _raise_bad(int(np.argmax(nan)) if nan.any() else -1, index, "signal")
        raise
    hits, known, bad = core.direction_scan(s, c)
    _raise_bad(bad, index, "signal")
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
    src = _returns_source(returns)
    return _metrics(src, index, periods_per_year, risk_free, trades, exposure, signal, close)


def compute_metrics(result: ResultLike, *, risk_free: float = 0.0) -> Metrics:
    """Metrics of a backtest result (reads only the attributes of :class:`ResultLike`).

    Equal to :func:`metrics_from_returns` on :func:`returns_from_equity` of its equity.
    """
    src, index = _equity_source(result.equity)
    return _metrics(
        src,
        index,
        result.periods_per_year,
        risk_free,
        result.trades,
        result.exposure,
        result.signal,
        result.close,
    )


def _metrics(
    src: _Source,
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
    n = src.eq.size
    years = n / ppy
    final = _wealth_at(src, np.array([n]))[0]
    with np.errstate(over="ignore"):
        cagr = float(np.power(final, 1.0 / years) - 1.0)
    ns = _ns(index)
    wall = _wall_ns(index, ns)
    year_seg = _calendar_segments(wall, "Y")
    total, squares, downside, year_sum, year_squares = core.moments(
        src.eq, src.r, src.ruin, rf, *year_seg[1:]
    )
    max_dd, peak, _, recovery, year_depth, const, year_const = core.wealth_scan(*src, *year_seg[1:])
    vol, sharpe, sortino = _ratios(n, total, squares, downside, const, ppy)
    end = recovery if recovery >= 0 else (n if max_dd > 0 else peak)
    # the start before the first bar is stamped one bar spacing before it
    before = ns[0] - (ns[1] - ns[0] if n > 1 else 0)
    dd_ns = (ns[end - 1] if end else before) - (ns[peak - 1] if peak else before)

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
        total_return=float(final - 1.0),
        annual_return=cagr,
        annual_volatility=vol,
        sharpe=sharpe,
        sortino=sortino,
        calmar=_ratio(cagr, max_dd),
        max_drawdown=float(max_dd),
        max_drawdown_duration=pd.Timedelta(int(dd_ns), unit="ns"),
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
        yearly=_yearly(src, year_seg, (year_sum, year_squares), year_depth, year_const, ppy, rf),
        monthly=_monthly(src, wall),
    )
