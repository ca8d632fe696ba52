"""The bar history the signal service keeps per series, so that ``POST /predict`` can take
the newest bar alone.

A live prediction needs thousands of bars of history (:attr:`LiveEnsemble.min_bars`);
sending them with every request would cost more time in parsing than the models take. The
service therefore completes a short request from what it already has: the bars earlier
requests sent, and the store. :meth:`BarHistory.complete` merges the given bars into the
series' kept bars — one run of consecutive bars, which the given bars extend or revise
(they replace every kept bar over their span) — and returns the newest ``need`` bars ending
at the last given bar.

Where the kept bars fall short (the first request for a series, a restart), the history
before them is read from the store (:meth:`Store.read_last_bars`); where they end more than
a bar before the given ones, the store's bars in between are read and merged (a gap the
store cannot fill is a market closure, as in the stored data). A request that starts before
the kept run (a replay of older bars) starts a new run from the store, as does one that
gives a whole history that does not touch the run's end. A history that is still too
short, or that has a gap longer than ``max_gap`` (stale stored data: the client skipped
bars the store never got), is refused with an error that names the series and what is
missing; after a gap, the next request reads the store again, so bars imported meanwhile
close it.

The bars a client sends are kept in memory only (per series, at most the ``2 * need`` bars
up to the newest predicted one): the store stays the record of the market data, written by
``mlengine import``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlengine.data.schema import OHLCV, MLEngineError, Timeframe, make_bar_frame
from mlengine.data.store import SeriesNotFoundError, Store, bar_arrays

__all__ = ["MAX_GAP", "BarHistory", "Completed", "HistoryError"]

#: The longest time allowed between two bars of a history, by default.
MAX_GAP = pd.Timedelta(days=7)


class HistoryError(MLEngineError, ValueError):
    """Too little history for a prediction, or a gap before the given bars (names the
    series, the bars given and what was found)."""


@dataclass(frozen=True)
class Completed:
    """A request's bars completed with history: the bar frame, and how many of its bars
    came from the service (its kept bars and the store)."""

    bars: pd.DataFrame
    added: int


class _Series:
    """The kept bars of one series, as arrays (ts in µs, OHLCV), oldest first."""

    def __init__(self) -> None:
        self.ts = np.empty(0, dtype=np.int64)
        self.values = np.empty((0, len(OHLCV)), dtype=np.float64)
        self.lock = threading.Lock()

    def merge(self, ts: np.ndarray, values: np.ndarray) -> None:
        """``ts``/``values`` (sorted) replace the kept bars over their span."""
        if not len(ts):
            return
        before = self.ts < ts[0]
        after = self.ts > ts[-1]
        self.ts = np.concatenate([self.ts[before], ts, self.ts[after]])
        self.values = np.concatenate([self.values[before], values, self.values[after]])

    def trim(self, keep: int) -> None:
        """Keep the newest ``keep`` bars."""
        if len(self.ts) > keep:
            self.ts, self.values = self.ts[-keep:], self.values[-keep:]

    def restarts(self, ts: np.ndarray, whole: bool, step: int) -> bool:
        """Whether bars at ``ts`` start a new run: they begin before the kept run (a replay
        of older bars, completed from the store), or they are a ``whole`` history that does
        not touch the run's end (more than one bar of ``step`` µs after it)."""
        if not len(self.ts):
            return False
        return bool(ts[0] < self.ts[0] or (whole and ts[0] - self.ts[-1] > step))

    def clear(self) -> None:
        self.ts, self.values = self.ts[:0], self.values[:0]

    def forget_before(self, ts: int) -> None:
        """Drop the bars older than ``ts``."""
        keep = self.ts >= ts
        self.ts, self.values = self.ts[keep], self.values[keep]


class BarHistory:
    """The kept bars of every series the service predicts (module docstring). ``store``
    gives the store (opened on first use); ``max_gap`` is the longest time allowed between two
    bars of a history (at least one bar of the timeframe)."""

    def __init__(
        self,
        store: Callable[[], Store],
        *,
        max_gap: pd.Timedelta = MAX_GAP,
    ) -> None:
        self._store = store
        self.max_gap = max_gap
        self._series: dict[tuple[str, str], _Series] = {}
        self._lock = threading.Lock()

    def _get(self, key: tuple[str, str]) -> _Series:
        with self._lock:
            return self._series.setdefault(key, _Series())

    def complete(self, bars: pd.DataFrame, need: int) -> Completed:
        """The newest ``need`` bars of the series of ``bars`` (a bar frame with ``symbol``
        and ``timeframe`` attrs) ending at its last bar; ``bars`` themselves when they are
        that many already. ``bars`` are kept for the next requests either way."""
        symbol, timeframe = str(bars.attrs["symbol"]), str(bars.attrs["timeframe"])
        series = self._get((symbol, timeframe))
        ts, values = bar_arrays(bars)
        step = Timeframe.parse(timeframe).delta
        limit = max(self.max_gap, step)  # a gap of one bar is never missing data
        with series.lock:
            if series.restarts(ts, len(bars) >= need, step // _US):
                series.clear()
            if len(bars) < need:
                self._fill(series, symbol, timeframe, step // _US, int(ts[0]), need - len(bars))
            series.merge(ts, values)
            end = int(np.searchsorted(series.ts, ts[-1], side="right"))
            start = max(0, end - max(need, len(bars)))
            out_ts, out_values = series.ts[start:end], series.values[start:end]
            gaps = np.diff(out_ts)
            wide = np.flatnonzero(gaps > limit // _US)
            if wide.size:
                # drop the bars before the gap, so that the next request reads the store
                # again: the missing bars may have been imported meanwhile
                series.forget_before(int(out_ts[wide[-1] + 1]))
            else:
                series.trim(len(series.ts) - max(0, end - 2 * need))
        where = f"{len(bars)} given for {symbol} {timeframe}"
        if len(out_ts) < need:
            raise HistoryError(
                f"bars: {where}, and the service has {len(out_ts) - len(bars)} earlier bars "
                f"(sent before or stored) before {bars.index[0].isoformat()}: the live "
                f"ensemble needs {need} bars ending at the predicted one; send more bars or "
                "import the history"
            )
        if wide.size:
            i = int(wide[-1])
            raise HistoryError(
                f"bars: {where}: the {need} bars ending at {bars.index[-1].isoformat()} have "
                f"no bar from {_time(int(out_ts[i])).isoformat()} to "
                f"{_time(int(out_ts[i + 1])).isoformat()}, a gap of "
                f"{pd.Timedelta(int(gaps[i]), unit='us')}, more than the {limit} "
                "allowed: send the bars in between or import them"
            )
        added = len(out_ts) - len(bars)
        if not added:
            return Completed(bars, 0)
        index = pd.DatetimeIndex(out_ts.astype("datetime64[us]")).tz_localize("UTC")
        columns = {c: out_values[:, i] for i, c in enumerate(OHLCV)}
        return Completed(make_bar_frame(index, columns, symbol=symbol, timeframe=timeframe), added)

    def _fill(
        self, series: _Series, symbol: str, timeframe: str, step: int, first: int, n: int
    ) -> None:
        """Make sure the kept bars hold the ``n`` bars before ``first`` that the store has:
        read the older ones when the kept bars do not reach back that far, or the bars
        between the kept bars' end and ``first`` when they stop short of it (by more than
        one bar of ``step`` µs); bars sent before are never replaced by stored ones."""
        try:
            held = int(np.searchsorted(series.ts, first))
            if held and first - int(series.ts[held - 1]) > step:
                after = _time(int(series.ts[held - 1]) + 1)
                between = self._store().read_bars(symbol, timeframe, after, _time(first))
                series.merge(*bar_arrays(between))
                held = int(np.searchsorted(series.ts, first))
            if held < n:  # bars older than the kept ones
                oldest = _time(int(series.ts[0]) if held else first)
                older = self._store().read_last_bars(symbol, timeframe, n - held, oldest)
                series.merge(*bar_arrays(older))
        except SeriesNotFoundError:
            return  # nothing stored: the kept bars are all there is


_US = pd.Timedelta(microseconds=1)


def _time(us: int) -> pd.Timestamp:
    return pd.Timestamp(us, unit="us", tz="UTC")
