"""Where bars and ML records live: one :class:`Store` interface, two engines.

* DuckDB (``duckdb:///path/file.duckdb``), embedded, the default: one file, nothing to run.
* PostgreSQL (``postgresql://user@host/db``), through SQLAlchemy 2 and psycopg 3.

Both hold the tables of :mod:`mlengine.data.ddl`, created idempotently on open.
:func:`open_store` picks the engine from the URL. Bar writes are idempotent upserts on
``(symbol, timeframe, ts)`` (later values win), done in one transaction per call: a failed
write changes nothing. Symbols are always bound parameters, never SQL text.

``read_bars`` raises :class:`SeriesNotFoundError` when the series holds no rows at all, and
returns an empty bar frame when the series exists but the asked range holds none.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import numpy as np
import pandas as pd
from sqlalchemy import JSON, TIMESTAMP
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mlengine.data import ddl
from mlengine.data.schema import (
    OHLCV,
    BarDataError,
    MLEngineError,
    Timeframe,
    check_bar_frame,
    check_symbol,
    make_bar_frame,
)

_COUNT_SERIES = "SELECT count(*) FROM market_data.ohlcv WHERE symbol = ? AND timeframe = ?"
_READ_CHUNK = 250_000


class StoreError(MLEngineError):
    """A store operation that failed; nothing was written."""


class StoreUnavailableError(StoreError):
    """The database could not be opened or reached."""


class SeriesNotFoundError(StoreError, LookupError):
    """No rows at all for the asked ``(symbol, timeframe)``."""


def redact_url(url: str) -> str:
    """``url`` with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def as_utc(value: object) -> pd.Timestamp:
    """A tz-aware UTC timestamp; naive values are taken as UTC."""
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class SeriesStats:
    """Row count, first/last ts and checksum (see :class:`BarChecksum`) of one series."""

    symbol: str
    timeframe: str
    rows: int
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None
    checksum: str


@dataclass(frozen=True)
class Checkpoint:
    """How far a migration from ``source`` has copied one series."""

    source: str
    symbol: str
    timeframe: str
    last_ts: pd.Timestamp
    rows_copied: int


class BarChecksum:
    """A checksum of a series that any engine, or a MySQL source, computes the same way.

    Definition: BLAKE2b (16-byte digest, hex) over the rows in ascending ``ts`` order, each
    row being 48 bytes: ``ts`` as int64 microseconds since the Unix epoch (UTC), then
    open, high, low, close, volume as float64, all little-endian; ``-0.0`` counts as
    ``0.0`` and every NaN as the one quiet NaN. Feed chunks in ``ts`` order.
    """

    _ROW = np.dtype([("ts", "<i8"), *[(c, "<f8") for c in OHLCV]])

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)

    def update(self, ts_us: np.ndarray, values: np.ndarray) -> None:
        rows = np.empty(len(ts_us), dtype=self._ROW)
        rows["ts"] = ts_us
        vals = np.asarray(values, dtype="<f8") + 0.0  # -0.0 + 0.0 == +0.0
        vals[np.isnan(vals)] = np.nan
        for i, col in enumerate(OHLCV):
            rows[col] = vals[:, i]
        self._hash.update(rows.tobytes())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def bar_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(ts_us int64[n], values float64[n, 5])`` of a bar frame."""
    ts_us = frame.index.as_unit("us").asi8  # type: ignore[attr-defined]
    return np.asarray(ts_us, dtype=np.int64), frame[list(OHLCV)].to_numpy(dtype=np.float64)


class Tx(ABC):
    """One open transaction of an engine: the few primitives the store's logic needs.

    SQL uses ``?`` placeholders; identifiers come only from :mod:`mlengine.data.ddl`.
    """

    @abstractmethod
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def read_bar_arrays(
        self, where: str, params: Sequence[Any], limit: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ts_us, values)`` of ``ohlcv`` rows matching ``where``, in ``ts`` order."""

    @abstractmethod
    def upsert_bars(self, symbol: str, timeframe: str, ts_us: np.ndarray, vals: np.ndarray) -> None:
        """Bulk upsert of one series' rows (the engine's fast path)."""

    @abstractmethod
    def upsert_frame(self, table: str, frame: pd.DataFrame, key: Sequence[str]) -> None:
        """Insert ``frame`` into ``table``; on a ``key`` conflict the new values win.

        JSON columns hold Python objects (``None`` is SQL NULL).
        """


class Store(ABC):
    """The interface every engine implements; the logic shared by all of them lives here."""

    url: str
    """The store's URL with any password masked."""

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Tx]:
        """A transaction: committed on normal exit, rolled back on an exception."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and file locks; the store cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # --- bars ------------------------------------------------------------------------

    def write_bars(
        self,
        bars: pd.DataFrame | Sequence[pd.DataFrame],
        *,
        checkpoints: Sequence[Checkpoint] = (),
    ) -> int:
        """Upsert one or more bar frames (and migration checkpoints) in one transaction.

        Every frame is checked against the bar frame contract first; the rows of a frame
        replace stored rows with the same ``(symbol, timeframe, ts)``. Returns the number
        of rows written. On any error nothing is written.
        """
        frames = [bars] if isinstance(bars, pd.DataFrame) else list(bars)
        seen: set[tuple[str, str]] = set()
        for frame in frames:
            check_bar_frame(frame)
            sub_us = np.flatnonzero(frame.index.asi8 % 1000)  # type: ignore[attr-defined]
            if sub_us.size:
                raise BarDataError(
                    f"ts {frame.index[sub_us[0]]} has sub-microsecond precision, "
                    "which the store cannot hold",
                    source=frame.attrs.get("symbol"),
                    row=int(sub_us[0]) + 1,
                )
            key = (frame.attrs["symbol"], Timeframe.parse(frame.attrs["timeframe"]).name)
            if key in seen:
                raise BarDataError(f"series {key} appears twice in one write", source=self.url)
            seen.add(key)
        with self._tx() as tx:
            for frame in frames:
                if len(frame):
                    tf = Timeframe.parse(frame.attrs["timeframe"]).name
                    tx.upsert_bars(frame.attrs["symbol"], tf, *bar_arrays(frame))
            for cp in checkpoints:
                tx.execute(
                    "INSERT INTO market_data.migration_checkpoints "
                    "(source, symbol, timeframe, last_ts, rows_copied, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, now()) ON CONFLICT (source, symbol, timeframe) "
                    "DO UPDATE SET last_ts = excluded.last_ts, "
                    "rows_copied = excluded.rows_copied, updated_at = excluded.updated_at",
                    [cp.source, cp.symbol, cp.timeframe, _py_ts(cp.last_ts), cp.rows_copied],
                )
        return sum(len(f) for f in frames)

    def read_bars(
        self,
        symbol: str,
        timeframe: str | Timeframe,
        start: object = None,
        end: object = None,
    ) -> pd.DataFrame:
        """The bar frame of one series over ``[start, end)`` (either end may be open)."""
        symbol, tf = check_symbol(symbol), Timeframe.parse(timeframe).name
        where, params = "symbol = ? AND timeframe = ?", list[Any]([symbol, tf])
        if start is not None:
            where, params = where + " AND ts >= ?", [*params, _py_ts(as_utc(start))]
        if end is not None:
            where, params = where + " AND ts < ?", [*params, _py_ts(as_utc(end))]
        with self._tx() as tx:
            ts_us, vals = tx.read_bar_arrays(where, params, None)
            if len(ts_us) == 0:
                self._require_series(tx, symbol, tf)
        return _bar_frame(symbol, tf, ts_us, vals)

    def read_last_bars(
        self, symbol: str, timeframe: str | Timeframe, n: int, before: object = None
    ) -> pd.DataFrame:
        """The newest ``n`` bars of one series (all of them when it holds fewer), with
        ``ts < before`` when ``before`` is given: the history a live prediction needs, read
        in one query whatever the series' length."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise StoreError(f"read_last_bars: n must be a positive integer, got {n!r}")
        symbol, tf = check_symbol(symbol), Timeframe.parse(timeframe).name
        where, params = "symbol = ? AND timeframe = ?", list[Any]([symbol, tf])
        if before is not None:
            where, params = where + " AND ts < ?", [*params, _py_ts(as_utc(before))]
        # the n-th newest time of the matching rows, or their first when there are fewer
        # (``where`` is this method's own text: every value is a parameter)
        table = "market_data.ohlcv"
        start = f"(SELECT ts FROM {table} WHERE {where} ORDER BY ts DESC LIMIT 1 OFFSET {n - 1})"  # noqa: S608
        first = f"(SELECT min(ts) FROM {table} WHERE {where})"  # noqa: S608
        with self._tx() as tx:
            ts_us, vals = tx.read_bar_arrays(
                f"{where} AND ts >= coalesce({start}, {first})", [*params, *params, *params], None
            )
            if len(ts_us) == 0:
                self._require_series(tx, symbol, tf)
        return _bar_frame(symbol, tf, ts_us, vals)

    def iter_bar_arrays(
        self, symbol: str, timeframe: str | Timeframe, chunk_rows: int = _READ_CHUNK
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ts_us, values)`` chunks of one series in ``ts`` order, memory bounded."""
        symbol, tf = check_symbol(symbol), Timeframe.parse(timeframe).name
        after: int | None = None
        while True:
            where, params = "symbol = ? AND timeframe = ?", list[Any]([symbol, tf])
            if after is not None:
                where += " AND ts > ?"
                params.append(_py_ts(pd.Timestamp(after, unit="us", tz="UTC")))
            with self._tx() as tx:
                ts_us, vals = tx.read_bar_arrays(where, params, chunk_rows)
            if len(ts_us):
                yield ts_us, vals
            if len(ts_us) < chunk_rows:
                return
            after = int(ts_us[-1])

    def series_stats(self, symbol: str, timeframe: str | Timeframe) -> SeriesStats:
        """Rows, first/last ts and :class:`BarChecksum` of a stored series."""
        symbol, tf = check_symbol(symbol), Timeframe.parse(timeframe).name
        digest, rows, first, last = BarChecksum(), 0, None, None
        for ts_us, vals in self.iter_bar_arrays(symbol, tf):
            digest.update(ts_us, vals)
            rows += len(ts_us)
            first = int(ts_us[0]) if first is None else first
            last = int(ts_us[-1])
        if rows == 0:
            with self._tx() as tx:
                self._require_series(tx, symbol, tf)
        return SeriesStats(
            symbol,
            tf,
            rows,
            None if first is None else pd.Timestamp(first, unit="us", tz="UTC"),
            None if last is None else pd.Timestamp(last, unit="us", tz="UTC"),
            digest.hexdigest(),
        )

    def list_series(self) -> pd.DataFrame:
        """One row per stored series: symbol, timeframe, rows, first_ts, last_ts."""
        with self._tx() as tx:
            rows = tx.fetch(
                "SELECT symbol, timeframe, count(*), min(ts), max(ts) FROM market_data.ohlcv "
                "GROUP BY symbol, timeframe ORDER BY symbol, timeframe"
            )
        out = pd.DataFrame(rows, columns=["symbol", "timeframe", "rows", "first_ts", "last_ts"])
        out["rows"] = out["rows"].astype("int64")
        for col in ("first_ts", "last_ts"):
            out[col] = pd.to_datetime(out[col], utc=True).dt.as_unit("us")
        return out

    def delete_series(self, symbol: str, timeframe: str | Timeframe) -> int:
        """Delete every row of one series; returns how many there were (0 if none)."""
        symbol, tf = check_symbol(symbol), Timeframe.parse(timeframe).name
        with self._tx() as tx:
            (count,) = tx.fetch(_COUNT_SERIES, [symbol, tf])[0]
            tx.execute(
                "DELETE FROM market_data.ohlcv WHERE symbol = ? AND timeframe = ?", [symbol, tf]
            )
        return int(count)

    def _require_series(self, tx: Tx, symbol: str, tf: str) -> None:
        if tx.fetch(_COUNT_SERIES, [symbol, tf])[0][0] == 0:
            raise SeriesNotFoundError(
                f"no bars stored for symbol {symbol!r}, timeframe {tf!r} in {self.url}"
            )

    # --- migration checkpoints -------------------------------------------------------

    def checkpoints(self, source: str) -> dict[tuple[str, str], Checkpoint]:
        """The checkpoints of migrations from ``source``, keyed by ``(symbol, timeframe)``."""
        with self._tx() as tx:
            rows = tx.fetch(
                "SELECT symbol, timeframe, last_ts, rows_copied "
                "FROM market_data.migration_checkpoints WHERE source = ?",
                [source],
            )
        return {(s, tf): Checkpoint(source, s, tf, as_utc(ts), int(n)) for s, tf, ts, n in rows}

    # --- the ml.* tables -------------------------------------------------------------

    def insert_records(
        self, table: str, records: pd.DataFrame | Sequence[Mapping[str, Any]]
    ) -> int:
        """Insert rows into a table of :mod:`mlengine.data.ddl` (e.g. ``ml.trials``).

        Columns left out take their defaults (sequence ids, ``created_at``). When every
        primary key column is given, a row with the same key is replaced. JSON columns
        take any JSON-serialisable value. Returns the number of rows written.
        """
        meta = ddl.table(table)
        frame = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(records)
        unknown = sorted(set(frame.columns) - set(meta.columns.keys()))
        if unknown:
            raise StoreError(f"{table}: unknown columns {unknown}")
        for col in frame.columns:
            kind = meta.columns[col].type
            if isinstance(kind, TIMESTAMP):
                frame[col] = pd.to_datetime(frame[col], utc=True)
        key = [c.name for c in meta.primary_key.columns]
        if not set(key) <= set(frame.columns):
            key = []
        if len(frame):
            with self._tx() as tx:
                tx.upsert_frame(table, frame, key)
        return len(frame)

    def read_table(self, table: str, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Rows of a table of :mod:`mlengine.data.ddl` whose columns equal ``where``'s values.

        JSON columns come back as Python objects, timestamps as UTC.
        """
        meta = ddl.table(table)
        conds = dict(where or {})
        unknown = sorted(set(conds) - set(meta.columns.keys()))
        if unknown:
            raise StoreError(f"{table}: unknown columns {unknown}")
        names = list(meta.columns.keys())
        # Table and column names come from ddl's metadata (checked above); values are bound.
        sql = f"SELECT {', '.join(names)} FROM {meta.fullname}"  # noqa: S608
        if conds:
            sql += " WHERE " + " AND ".join(f"{c} = ?" for c in conds)
        sql += " ORDER BY " + ", ".join(c.name for c in meta.primary_key.columns)
        params = [_py_ts(as_utc(v)) if isinstance(v, datetime) else v for v in conds.values()]
        with self._tx() as tx:
            rows = tx.fetch(sql, params)
        data: dict[str, Any] = {}
        for i, col in enumerate(meta.columns):
            values = [row[i] for row in rows]
            if isinstance(col.type, JSON):
                parsed = [json.loads(v) if isinstance(v, str) else v for v in values]
                data[col.name] = pd.Series(parsed, dtype=object)
            elif isinstance(col.type, TIMESTAMP):
                data[col.name] = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
            else:
                data[col.name] = values
        return pd.DataFrame(data, columns=names)


def _bar_frame(symbol: str, timeframe: str, ts_us: np.ndarray, vals: np.ndarray) -> pd.DataFrame:
    return make_bar_frame(
        pd.to_datetime(ts_us, unit="us", utc=True),
        {c: vals[:, i] for i, c in enumerate(OHLCV)},
        symbol=symbol,
        timeframe=timeframe,
    )


def _py_ts(ts: pd.Timestamp) -> datetime:
    return as_utc(ts).to_pydatetime()


def open_store(url: str | None = None) -> Store:
    """Open (creating schemas as needed) the store at ``url``; default: the settings' URL."""
    if url is None:
        from mlengine.config import get_settings

        url = get_settings().store_url
    scheme = url.split(":", 1)[0].lower()
    if scheme == "duckdb":
        from mlengine.data._store_duckdb import DuckDBStore

        return DuckDBStore(url)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        from mlengine.data._store_postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(
        f"unsupported store URL {redact_url(url)!r}: use duckdb:///path/file.duckdb "
        "or postgresql://user@host/db"
    )
