"""The bar frame: the one shape of OHLCV data that everything downstream may assume.

A bar frame is a pandas DataFrame with

* a tz-aware UTC ``DatetimeIndex`` named ``ts`` (nanosecond unit), strictly increasing,
  no duplicates;
* columns ``open high low close volume`` as float64, in that order;
* ``symbol`` and ``timeframe`` in ``df.attrs``.

Raw input that cannot be brought to this shape is rejected with a :class:`BarDataError`
naming the source, row and column.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

OHLCV: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
INDEX_NAME = "ts"

_SYMBOL_MAX_LEN = 64


class MLEngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class BarDataError(MLEngineError, ValueError):
    """Input bars that cannot be brought to the bar frame contract.

    ``source`` is the file or table, ``row`` the 1-based data row (as a person counts rows
    in the file, header excluded) and ``column`` the offending column, where known.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.reason = message
        self.source = source
        self.row = row
        self.column = column
        where = [
            part
            for part in (
                f"{source}" if source else None,
                f"row {row}" if row is not None else None,
                f"column {column!r}" if column else None,
            )
            if part
        ]
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class TimeframeError(MLEngineError, ValueError):
    """A timeframe string that the engine does not know."""


# --- timeframes --------------------------------------------------------------------------

_TF_RE = re.compile(r"^(\d+)(m|h|d|w)$")
_TF_MINUTES = {"m": 1, "h": 60, "d": 60 * 24, "w": 60 * 24 * 7}
_TF_ALIASES = {"1min": "1m", "60m": "1h", "24h": "1d", "1day": "1d", "d": "1d", "h": "1h"}


@dataclass(frozen=True, order=True)
class Timeframe:
    """A bar timeframe such as ``15m``, ``1h``, ``4h``, ``1d``.

    Bars are stamped at their open time; a bar of timeframe ``tf`` stamped ``t`` covers
    ``[t, t + tf)`` and is known (closed) at ``t + tf``.
    """

    delta: pd.Timedelta
    name: str

    @classmethod
    def parse(cls, value: str | Timeframe) -> Timeframe:
        if isinstance(value, Timeframe):
            return value
        if type(value) is str:
            # the same few names are parsed on every bar-frame check: remember them
            return _parse_text(value)
        return cls._parse(value)

    @classmethod
    def _parse(cls, value: object) -> Timeframe:
        text = str(value).strip().lower()
        text = _TF_ALIASES.get(text, text)
        match = _TF_RE.match(text)
        if not match or int(match.group(1)) == 0:
            raise TimeframeError(
                f"unknown timeframe {value!r}: use a count and a unit, e.g. 1m, 15m, 1h, 4h, 1d, 1w"
            )
        count, unit = int(match.group(1)), match.group(2)
        delta = pd.Timedelta(minutes=count * _TF_MINUTES[unit])
        return cls(delta=delta, name=f"{count}{unit}")

    @property
    def freq(self) -> str:
        """A pandas frequency string (``15min``, ``1h``, ``1D``, ``7D``)."""
        minutes = int(self.delta / pd.Timedelta(minutes=1))
        if minutes % (60 * 24) == 0:
            return f"{minutes // (60 * 24)}D"
        if minutes % 60 == 0:
            return f"{minutes // 60}h"
        return f"{minutes}min"

    def __str__(self) -> str:
        return self.name


@functools.lru_cache(maxsize=256)
def _parse_text(value: str) -> Timeframe:
    """:meth:`Timeframe.parse` of a string, memoised (a timeframe is immutable; an unknown
    name raises every time, exceptions are not cached)."""
    return Timeframe._parse(value)


# --- symbols -----------------------------------------------------------------------------


def check_symbol(symbol: object) -> str:
    """A symbol is any non-empty printable text up to 64 characters.

    Metacharacters (quotes, semicolons) are allowed: every store passes symbols as bound
    parameters, never as SQL text.
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise BarDataError(f"symbol must be non-empty text, got {symbol!r}")
    if len(symbol) > _SYMBOL_MAX_LEN:
        raise BarDataError(f"symbol {symbol[:20]!r}... is longer than {_SYMBOL_MAX_LEN} chars")
    if not symbol.isprintable():
        raise BarDataError(f"symbol {symbol!r} holds non-printable characters")
    return symbol


# --- the contract ------------------------------------------------------------------------


def make_bar_frame(
    index: pd.DatetimeIndex | pd.Series | np.ndarray,
    columns: Mapping[str, object],
    *,
    symbol: str,
    timeframe: str | Timeframe,
) -> pd.DataFrame:
    """Assemble a bar frame from an index and OHLCV columns, then check the contract."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    idx = idx.tz_convert("UTC").as_unit("ns")
    idx.name = INDEX_NAME
    frame = pd.DataFrame(
        {c: np.asarray(columns[c], dtype="float64") for c in OHLCV},
        index=idx,
    )
    frame.attrs["symbol"] = check_symbol(symbol)
    frame.attrs["timeframe"] = Timeframe.parse(timeframe).name
    return check_bar_frame(frame)


def check_bar_frame(frame: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Raise :class:`BarDataError` unless ``frame`` satisfies the bar frame contract.

    Returns ``frame`` unchanged so that it can be used inline.
    """
    label = source or frame.attrs.get("symbol") or "bar frame"
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise BarDataError("index is not a DatetimeIndex", source=label)
    if frame.index.tz is None or str(frame.index.tz) != "UTC":
        raise BarDataError(f"index must be tz-aware UTC, got tz={frame.index.tz}", source=label)
    if frame.index.name != INDEX_NAME:
        raise BarDataError(f"index must be named {INDEX_NAME!r}", source=label)
    if frame.columns.tolist() != list(OHLCV):
        raise BarDataError(
            f"columns must be {list(OHLCV)}, got {list(frame.columns)}", source=label
        )
    # one dtypes read instead of a column Series per column (each copies the attrs)
    for col, dtype in zip(OHLCV, frame.dtypes.tolist(), strict=True):
        if dtype != np.float64:
            raise BarDataError(f"dtype {dtype} is not float64", source=label, column=col)
    if len(frame) > 1:
        steps = np.diff(frame.index.asi8)
        bad = np.flatnonzero(steps <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            kind = "duplicate" if steps[bad[0]] == 0 else "out-of-order"
            raise BarDataError(
                f"{kind} timestamp {frame.index[i]} (index must be strictly increasing)",
                source=label,
                row=i + 1,
            )
    for key in ("symbol", "timeframe"):
        if key not in frame.attrs:
            raise BarDataError(f"attrs[{key!r}] is missing", source=label)
    check_symbol(frame.attrs["symbol"])
    Timeframe.parse(frame.attrs["timeframe"])
    return frame
