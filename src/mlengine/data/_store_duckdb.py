"""The embedded DuckDB engine of :class:`mlengine.data.store.Store` (one file, no server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import JSON
from sqlalchemy.engine import make_url

from mlengine.data import ddl
from mlengine.data.schema import OHLCV
from mlengine.data.store import Store, StoreError, StoreUnavailableError, Tx

# The only SQL text not written out literally: its `where` is built by the Store from fixed
# fragments with `?` placeholders.
_SELECT_BARS = (
    "SELECT epoch_us(ts) AS ts, open, high, low, close, volume FROM market_data.ohlcv "
    "WHERE {where} ORDER BY ts"
)
_UPSERT_BARS = (
    "INSERT INTO market_data.ohlcv (symbol, timeframe, ts, open, high, low, close, volume) "
    "SELECT ?, ?, ts, open, high, low, close, volume FROM _mlengine_incoming "
    "ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET open = excluded.open, "
    "high = excluded.high, low = excluded.low, close = excluded.close, volume = excluded.volume "
    "WHERE (open, high, low, close, volume) IS DISTINCT FROM "
    "(excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume)"
)


class _DuckTx(Tx):
    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self._cur = cur

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._cur.execute(sql, list(params)).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql, list(params))

    def read_bar_arrays(
        self, where: str, params: Sequence[Any], limit: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        sql = _SELECT_BARS.format(where=where)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cols = self._cur.execute(sql, list(params)).fetchnumpy()
        ts_us = np.asarray(cols["ts"], dtype=np.int64)
        vals = np.column_stack([np.asarray(cols[c], dtype=np.float64) for c in OHLCV])
        return ts_us, vals.reshape(len(ts_us), len(OHLCV))

    def upsert_bars(self, symbol: str, timeframe: str, ts_us: np.ndarray, vals: np.ndarray) -> None:
        # Arrow in, one INSERT ... ON CONFLICT: DuckDB's bulk path, no per-row Python.
        incoming = pa.table(
            {
                "ts": pa.array(ts_us, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                **{c: pa.array(vals[:, i]) for i, c in enumerate(OHLCV)},
            }
        )
        self._cur.register("_mlengine_incoming", incoming)
        try:
            self._cur.execute(_UPSERT_BARS, [symbol, timeframe])
        finally:
            self._cur.unregister("_mlengine_incoming")

    def upsert_frame(self, table: str, frame: pd.DataFrame, key: Sequence[str]) -> None:
        frame = frame.copy()
        for col in ddl.table(table).columns:
            if isinstance(col.type, JSON) and col.name in frame.columns:
                frame[col.name] = pd.Series(
                    [None if v is None else json.dumps(v, default=str) for v in frame[col.name]],
                    index=frame.index,
                    dtype=object,
                )
        cols = list(frame.columns)
        # Names come from ddl's metadata (checked by the caller); values are never SQL text.
        names = ", ".join(cols)
        sql = f"INSERT INTO {table} ({names}) SELECT {names} FROM _mlengine_rows"  # noqa: S608
        rest = [c for c in cols if c not in key]
        if key:
            sql += f" ON CONFLICT ({', '.join(key)}) DO " + (
                "UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest)
                if rest
                else "NOTHING"
            )
        self._cur.register("_mlengine_rows", frame)
        try:
            self._cur.execute(sql)
        finally:
            self._cur.unregister("_mlengine_rows")


class DuckDBStore(Store):
    """A store in one DuckDB file (``duckdb:///relative/path`` or ``duckdb:////abs/path``).

    The file and its parent folder are created when missing. DuckDB lets one process at a
    time open a file for writing; a second process gets :class:`StoreUnavailableError`.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        database = make_url(url).database or ""
        if not database:
            raise StoreError(f"DuckDB URL {url!r} names no file: use duckdb:///path/file.duckdb")
        self.path = None if database == ":memory:" else Path(database)
        self._lock = threading.Lock()
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(database)
            self._con.execute("SET TimeZone = 'UTC'")
            with self._con.cursor() as cur:
                for stmt in ddl.create_statements():
                    cur.execute(stmt)
        except (duckdb.Error, OSError) as err:
            raise StoreUnavailableError(f"cannot open DuckDB store {url}: {err}") from err

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        if self._con is None:
            raise StoreError(f"{self.url} is closed")
        # A cursor per transaction: DuckDB connections must not be shared across threads.
        with self._lock:
            cur = self._con.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield _DuckTx(cur)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        except duckdb.Error as err:
            raise StoreError(f"{self.url}: {err}") from err
        finally:
            cur.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
