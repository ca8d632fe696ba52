"""Input checks of the backtest engine: bars, signals, per-symbol settings.

Every check raises :class:`BacktestInputError` naming the asset and the first offending bar
(its position and timestamp) and value; nothing is silently dropped or filled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlengine.backtest import _core
from mlengine.backtest._core import BacktestInputError

PRICES = ("open", "high", "low", "close")
_INTENT_COLUMNS = {"side", "size", "stop_loss", "take_profit", "max_bars", "exit", "p_up"}
_INTENT_INPUTS = ("side", "size", "stop_loss", "take_profit", "max_bars", "exit")


def to_ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Int64 nanoseconds since the epoch (UTC for tz-aware indexes), whatever the unit."""
    return np.asarray((index if index.unit == "ns" else index.as_unit("ns")).asi8)


def _where(index: pd.Index, i: int) -> str:
    return f"bar {i} ({index[i]})"


def _first(bad: np.ndarray) -> int | None:
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def check_bars(bars: object, who: str) -> tuple[pd.DatetimeIndex, list[np.ndarray]]:
    """The index and the open, high, low, close arrays of ``bars``, checked: a DatetimeIndex
    strictly increasing, prices positive and finite, high/low bracketing open/close."""
    if not isinstance(bars, pd.DataFrame):
        raise BacktestInputError(f"{who}: bars must be a DataFrame, got {type(bars).__name__}")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise BacktestInputError(f"{who}: bars need a DatetimeIndex")
    if len(bars) == 0:
        raise BacktestInputError(f"{who}: bars are empty")
    missing = [c for c in PRICES if c not in bars.columns]
    if missing:
        raise BacktestInputError(f"{who}: bars lack column(s) {', '.join(missing)}")
    index = bars.index
    cols = []
    for name in PRICES:
        try:
            cols.append(frozen(bars[name].to_numpy(dtype=np.float64, na_value=np.nan)))
        except (TypeError, ValueError) as err:
            raise BacktestInputError(f"{who}: column {name!r} is not numeric") from err
    first_bad: Any = _core.first_bad_bar  # a numba dispatcher
    i, code = first_bad(frozen(to_ns(index)), *cols)
    if code == 1:
        raise BacktestInputError(f"{who}: bar index not strictly increasing at {_where(index, i)}")
    if 2 <= code <= 5:
        name = PRICES[code - 2]
        raise BacktestInputError(
            f"{who}: {name} price {cols[code - 2][i]} is not positive and finite at "
            f"{_where(index, i)}"
        )
    if code == 6:
        o, h, lo, c = (float(a[i]) for a in cols)
        raise BacktestInputError(
            f"{who}: high/low do not bracket open/close at {_where(index, i)}"
            f" (o={o}, h={h}, l={lo}, c={c})"
        )
    return index, cols


def _check_alignment(signals: object, index: pd.DatetimeIndex, who: str) -> pd.DataFrame:
    """``signals`` as a DataFrame on exactly ``index``, or an error naming the first
    difference."""
    if not isinstance(signals, pd.DataFrame):
        raise BacktestInputError(
            f"{who}: signals must be a DataFrame, got {type(signals).__name__}"
        )
    sidx = signals.index
    if not isinstance(sidx, pd.DatetimeIndex):
        raise BacktestInputError(f"{who}: signals need a DatetimeIndex like the bars")
    if str(sidx.tz) != str(index.tz):
        raise BacktestInputError(f"{who}: signals index tz={sidx.tz}, bars tz={index.tz}")
    if len(sidx) != len(index):
        raise BacktestInputError(f"{who}: {len(sidx)} signal rows for {len(index)} bars")
    diff = to_ns(sidx) != to_ns(index)
    if (i := _first(diff)) is not None:
        raise BacktestInputError(
            f"{who}: signals misaligned with bars at row {i}: signal {sidx[i]} vs bar {index[i]}"
        )
    return signals


def check_signals(signals: object, index: pd.DatetimeIndex, who: str) -> tuple[pd.DataFrame, str]:
    """The aligned signal frame and its form: ``"target"`` or ``"intents"``."""
    sig = _check_alignment(signals, index, who)
    has_pos, has_side = "position" in sig.columns, "side" in sig.columns
    if has_pos == has_side:
        raise BacktestInputError(
            f"{who}: signals need either a 'position' column (target exposure) or a 'side' "
            f"column (order intents), got {list(sig.columns)}"
        )
    if has_side and (unknown := sorted(set(sig.columns) - _INTENT_COLUMNS)):
        raise BacktestInputError(f"{who}: unknown intent column(s) {unknown}")
    return sig, "target" if has_pos else "intents"


def _values(signals: pd.DataFrame, name: str, who: str, default: float = np.nan) -> np.ndarray:
    if name not in signals.columns:
        return np.full(len(signals), default)
    try:
        return signals[name].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise BacktestInputError(f"{who}: signal column {name!r} is not numeric") from err


def _fail(bad: np.ndarray, index: pd.Index, who: str, what: str, values: np.ndarray) -> None:
    if (i := _first(bad)) is not None:
        raise BacktestInputError(f"{who}: {what} at {_where(index, i)}: {values[i]!r}")


def target_inputs(signals: pd.DataFrame, index: pd.Index, who: str) -> np.ndarray:
    """The ``position`` column, checked: no NaN, within [-1, 1]."""
    pos = _values(signals, "position", who)
    if not (np.abs(pos) <= 1).all():  # one pass when all is well (NaN fails it too)
        _fail(np.isnan(pos), index, who, "NaN position (use 0 for flat)", pos)
        _fail(np.abs(pos) > 1, index, who, "position outside [-1, 1]", pos)
    return pos


def intent_inputs(
    signals: pd.DataFrame, index: pd.Index, close: np.ndarray, who: str
) -> dict[str, np.ndarray]:
    """The intent columns as float arrays (empty when absent), checked."""
    cols = {
        name: _values(signals, name, who) if name in signals.columns else np.empty(0)
        for name in _INTENT_INPUTS
    }
    check: Any = _core.check_intents  # a numba dispatcher
    code, i = check(*(frozen(a) for a in (close, *cols.values())))
    if code:
        name: tuple[str, ...] = ("", "side", "size", *("stop_loss",) * 2, *("take_profit",) * 2)
        name += ("max_bars", "exit", "side")
        raise BacktestInputError(
            f"{who}: {_core.INTENT_ERRORS[code]} at {_where(index, i)}: {cols[name[code]][i]!r}"
        )
    return cols


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only contiguous view: one compiled specialisation whatever the input's flags."""
    view = np.ascontiguousarray(a).view()
    view.flags.writeable = False
    return view


def per_symbol(value: Any, symbols: list[str], what: str, kind: type | tuple[type, ...]) -> dict:
    """``value`` for each symbol: a mapping must name exactly the symbols, anything else is
    shared; each entry must be an instance of ``kind``."""
    if isinstance(value, Mapping):
        extra = sorted(set(value) - set(symbols))
        missing = [s for s in symbols if s not in value]
        if extra or missing:
            raise BacktestInputError(f"{what}: no entry for {missing}, unknown symbols {extra}")
        out = dict(value)
    else:
        out = dict.fromkeys(symbols, value)
    for sym, v in out.items():
        if not isinstance(v, kind):
            raise BacktestInputError(f"{what} of {sym!r} has the wrong type: {v!r}")
    return out


def asset_pairs(data: object, signals: object) -> dict[str, tuple[object, object]]:
    """``{symbol: (bars, signals)}`` from one frame and its signals, a mapping, or a list of
    pairs (symbols from ``bars.attrs["symbol"]``)."""
    if isinstance(data, pd.DataFrame):
        if signals is None:
            raise BacktestInputError("run_backtest(bars, signals): the signals are missing")
        return {str(data.attrs.get("symbol", "asset")): (data, signals)}
    if signals is not None:
        raise BacktestInputError("several assets take (bars, signals) pairs, not signals=")
    items: list[tuple[str, object]]
    if isinstance(data, Mapping):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, Sequence) and not isinstance(data, str):
        items = []
        for pair in data:
            bars = pair[0] if isinstance(pair, tuple) and len(pair) == 2 else None
            sym = bars.attrs.get("symbol") if isinstance(bars, pd.DataFrame) else None
            if sym is None:
                raise BacktestInputError("list entries must be (bars, signals) with attrs symbol")
            items.append((str(sym), pair))
    else:
        raise BacktestInputError(f"bars must be a DataFrame, a dict or a list, got {data!r}")
    if not items:
        raise BacktestInputError("no assets to backtest")
    out: dict[str, tuple[object, object]] = {}
    for sym, pair in items:
        if sym in out:
            raise BacktestInputError(f"symbol {sym!r} appears twice")
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise BacktestInputError(f"{sym!r}: expected a (bars, signals) pair")
        out[sym] = pair
    return out
