"""The PostgreSQL engine of :class:`mlengine.data.store.Store` (SQLAlchemy 2 + psycopg 3).

Bulk bar writes and reads go through binary ``COPY``. The rows are fixed-width (no NULLs),
so numpy encodes and decodes them in one vectorised step; measured on 1M bars this beat
psycopg's per-row ``Copy.write_row`` (0.6 s against 0.9 s to send) and ``fetchall``
(2.4x slower to read).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import set_json_loads
from sqlalchemy import Connection, create_engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from mlengine.data import ddl
from mlengine.data.schema import OHLCV
from mlengine.data.store import (
    Store,
    StoreError,
    StoreUnavailableError,
    Tx,
    redact_url,
)

CONNECT_TIMEOUT_S = 3
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 (PostgreSQL's epoch) in Unix microseconds
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, extension length
_COPY_TRAILER = b"\xff\xff"
_ROW = np.dtype(
    [("n", ">i2"), ("len_ts", ">i4"), ("ts", ">i8")]
    + [f for c in OHLCV for f in ((f"len_{c}", ">i4"), (c, ">f8"))]
)
_CREATE_INCOMING = (
    "CREATE TEMP TABLE IF NOT EXISTS _mlengine_incoming (ts timestamptz, open float8, "
    "high float8, low float8, close float8, volume float8) ON COMMIT DROP"
)
# MERGE: measured 2.6x faster than INSERT ... ON CONFLICT DO UPDATE for 1M rows (PG 15),
# whose per-row speculative insertion dominates a bulk upsert. Rows whose values are
# unchanged are left alone, so an idempotent re-write creates no dead tuples.
_MERGE_BARS = (
    "MERGE INTO market_data.ohlcv AS t USING _mlengine_incoming AS i "
    "ON t.symbol = %(s)s AND t.timeframe = %(tf)s AND t.ts = i.ts "
    "WHEN MATCHED AND (t.open, t.high, t.low, t.close, t.volume) "
    "IS DISTINCT FROM (i.open, i.high, i.low, i.close, i.volume) "
    "THEN UPDATE SET open = i.open, high = i.high, low = i.low, close = i.close, volume = i.volume "
    "WHEN NOT MATCHED THEN INSERT (symbol, timeframe, ts, open, high, low, close, volume) "
    "VALUES (%(s)s, %(tf)s, i.ts, i.open, i.high, i.low, i.close, i.volume)"
)
# Its `where` is built by the Store from fixed fragments with placeholders.
_SELECT_BARS = (
    "SELECT ts, open, high, low, close, volume FROM market_data.ohlcv WHERE {where} ORDER BY ts"
)


def _encode(ts_us: np.ndarray, vals: np.ndarray) -> bytes:
    rows = np.empty(len(ts_us), dtype=_ROW)
    rows["n"] = 1 + len(OHLCV)
    rows["len_ts"] = 8
    rows["ts"] = ts_us - _PG_EPOCH_US
    for i, col in enumerate(OHLCV):
        rows[f"len_{col}"] = 8
        rows[col] = vals[:, i]
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def _decode(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    body = memoryview(data)[len(_COPY_HEADER) : len(data) - len(_COPY_TRAILER)]
    rows = np.frombuffer(body, dtype=_ROW)
    ts_us = rows["ts"].astype(np.int64) + _PG_EPOCH_US
    vals = np.column_stack([rows[c].astype(np.float64) for c in OHLCV])
    return ts_us, vals.reshape(len(rows), len(OHLCV))


class _PgTx(Tx):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        self._raw: psycopg.Connection[Any] = raw
        # JSON comes back as text, as from DuckDB; the Store parses both alike.
        set_json_loads(_as_text, raw)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._raw.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), list(params))
            return cur.fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._raw.execute(sql.replace("?", "%s"), list(params))

    def read_bar_arrays(
        self, where: str, params: Sequence[Any], limit: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        sql = _SELECT_BARS.format(where=where)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        chunks: list[bytes] = []
        with (
            self._raw.cursor() as cur,
            cur.copy(f"COPY ({sql.replace('?', '%s')}) TO STDOUT (FORMAT binary)", params) as cp,
        ):
            chunks.extend(bytes(block) for block in cp)
        return _decode(b"".join(chunks))

    def upsert_bars(self, symbol: str, timeframe: str, ts_us: np.ndarray, vals: np.ndarray) -> None:
        self._raw.execute(_CREATE_INCOMING)
        self._raw.execute("TRUNCATE _mlengine_incoming")
        with (
            self._raw.cursor() as cur,
            cur.copy("COPY _mlengine_incoming FROM STDIN (FORMAT binary)") as cp,
        ):
            cp.write(_encode(ts_us, vals))
        self._raw.execute("ANALYZE _mlengine_incoming")  # lets the planner pick index lookups
        self._raw.execute(_MERGE_BARS, {"s": symbol, "tf": timeframe})

    def upsert_frame(self, table: str, frame: pd.DataFrame, key: Sequence[str]) -> None:
        meta = ddl.table(table)
        records = [
            {k: (None if _isna(v) else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")
        ]
        stmt = pg_insert(meta)
        rest = [c for c in frame.columns if c not in key]
        if key and rest:
            stmt = stmt.on_conflict_do_update(
                index_elements=list(key), set_={c: stmt.excluded[c] for c in rest}
            )
        elif key:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
        self._conn.execute(stmt, records)  # type: ignore[arg-type]


def _as_text(data: str | bytes) -> str:
    return data.decode() if isinstance(data, bytes) else data


def _isna(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NaT


class PostgresStore(Store):
    """A store in a PostgreSQL database (``postgresql://user:pass@host:port/db``)."""

    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        sa_url = make_url(url)
        if sa_url.drivername in ("postgresql", "postgres"):
            sa_url = sa_url.set(drivername="postgresql+psycopg")
        self._engine = create_engine(
            sa_url,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
            pool_pre_ping=True,
        )
        try:
            with self._engine.begin() as conn:
                # Serialise concurrent first opens: CREATE ... IF NOT EXISTS can still race.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263514)")
                for stmt in ddl.create_statements():
                    conn.exec_driver_sql(stmt)
        except OperationalError as err:
            self._engine.dispose()
            raise StoreUnavailableError(
                f"cannot reach PostgreSQL store {self.url}: {err.orig}"
            ) from err
        self._open = True

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        if not self._open:
            raise StoreError(f"{self.url} is closed")
        try:
            with self._engine.begin() as conn:
                yield _PgTx(conn)
        except OperationalError as err:
            raise StoreUnavailableError(f"lost PostgreSQL store {self.url}: {err.orig}") from err
        except psycopg.OperationalError as err:
            raise StoreUnavailableError(f"lost PostgreSQL store {self.url}: {err}") from err
        except (DBAPIError, psycopg.Error) as err:
            raise StoreError(f"{self.url}: {err}") from err

    def close(self) -> None:
        self._open = False
        self._engine.dispose()
