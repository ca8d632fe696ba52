"""Copy an OHLCV table from MySQL/MariaDB into a store: resumable, verified, memory bounded.

Each series ``(symbol, timeframe)`` of the source is streamed in ``ts`` order with a
server-side cursor and written in chunks; every chunk is upserted together with the
series' checkpoint (the last ``ts`` copied) in one store transaction, so an interrupted run
resumes after the last committed chunk, with no duplicates and no gaps. At the end every
series is verified on both sides: row count, first/last ``ts`` and the checksum of
:class:`mlengine.data.store.BarChecksum`, computed over the source rows converted exactly
as they were written (float64 prices).

Source timestamps: ``DATETIME`` values are naive and taken as UTC; the session time zone is
set to UTC so ``TIMESTAMP`` columns come out in UTC; integer columns are epoch times in
``epoch_unit``. From a shell: ``mlengine data migrate --help``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from rich.console import Console
from rich.progress import Progress
from rich.table import Table as RichTable
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import NoSuchTableError, OperationalError

from mlengine.data.schema import (
    OHLCV,
    BarDataError,
    MLEngineError,
    Timeframe,
    check_symbol,
    make_bar_frame,
)
from mlengine.data.store import (
    BarChecksum,
    Checkpoint,
    SeriesNotFoundError,
    SeriesStats,
    Store,
    open_store,
    redact_url,
)

CANONICAL = ("symbol", "timeframe", "ts", *OHLCV)
EpochUnit = Literal["s", "ms", "us"]
CONNECT_TIMEOUT_S = 5


class MigrationError(MLEngineError):
    """A migration that cannot start or go on."""


class SourceUnavailableError(MigrationError):
    """The MySQL/MariaDB source cannot be reached."""


@dataclass(frozen=True)
class SeriesPlan:
    """One source series: its raw timeframe value, rows, and how many are left to copy."""

    symbol: str
    timeframe: str
    source_timeframe: object
    source_rows: int
    already_copied: int
    to_copy: int
    checkpoint: Checkpoint | None


@dataclass(frozen=True)
class SeriesCheck:
    """Source and target statistics of one series after the copy."""

    source: SeriesStats
    target: SeriesStats

    @property
    def ok(self) -> bool:
        s, t = self.source, self.target
        return (s.rows, s.first_ts, s.last_ts, s.checksum) == (
            t.rows,
            t.first_ts,
            t.last_ts,
            t.checksum,
        )


@dataclass
class MigrationReport:
    """What a migration planned, copied and verified.

    ``ok``: every series verified equal on both sides (trivially true for a dry run).
    """

    source: str
    target: str
    dry_run: bool
    plan: list[SeriesPlan] = field(default_factory=list)
    rows_copied: int = 0
    checks: list[SeriesCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def table(self) -> RichTable:
        """The plan (dry run) or the verification, as a Rich table."""
        if self.dry_run:
            out = RichTable(title=f"dry run: {self.source} → {self.target}")
            for col in ("symbol", "timeframe", "source rows", "copied", "to copy"):
                out.add_column(col)
            for p in self.plan:
                out.add_row(
                    p.symbol, p.timeframe, f"{p.source_rows:,}", f"{p.already_copied:,}",
                    f"{p.to_copy:,}",
                )  # fmt: skip
            return out
        out = RichTable(title=f"verification: {self.source} → {self.target}")
        for col in ("symbol", "timeframe", "rows (src/dst)", "first", "last", "checksum", "ok"):
            out.add_column(col)
        for c in self.checks:
            s, t = c.source, c.target
            out.add_row(
                s.symbol,
                s.timeframe,
                f"{s.rows:,} / {t.rows:,}",
                _pair(s.first_ts, t.first_ts),
                _pair(s.last_ts, t.last_ts),
                _pair(s.checksum[:12], t.checksum[:12]),
                "[green]yes[/]" if c.ok else "[red]NO[/]",
            )
        return out


def _pair(a: object, b: object) -> str:
    return str(a) if a == b else f"{a} ≠ {b}"


class _Source:
    """The source table, reflected, with the column mapping applied."""

    def __init__(
        self,
        url: str,
        table: str,
        columns: Mapping[str, str] | None,
        timeframe: str | None,
        epoch_unit: EpochUnit,
    ) -> None:
        sa_url = make_url(url)
        if sa_url.drivername in ("mysql", "mariadb"):
            sa_url = sa_url.set(drivername=f"{sa_url.drivername}+pymysql")
        self.url, self.db, self.name = redact_url(url), sa_url.database, table
        self.label = f"table {table!r} in database {self.db!r}"
        self.epoch_unit, self.timeframe = epoch_unit, timeframe
        # Naive DATETIMEs are taken as UTC; a UTC session makes TIMESTAMP columns agree.
        utc = {"connect_timeout": CONNECT_TIMEOUT_S, "init_command": "SET time_zone='+00:00'"}
        self.engine: Engine = sa.create_engine(sa_url, connect_args=utc)
        mapping = {c: c for c in CANONICAL} | dict(columns or {})
        unknown = sorted(set(mapping) - set(CANONICAL))
        if unknown:
            raise MigrationError(f"unknown column mapping keys {unknown}; use {list(CANONICAL)}")
        try:
            with self.engine.connect() as conn:
                self.table = sa.Table(table, sa.MetaData(), autoload_with=conn)
        except OperationalError as err:
            self.engine.dispose()
            raise SourceUnavailableError(f"cannot reach source {self.url}: {err.orig}") from err
        except NoSuchTableError as err:
            self.engine.dispose()
            raise MigrationError(f"source {self.label} does not exist ({self.url})") from err
        needed = [k for k in CANONICAL if not (k == "timeframe" and timeframe is not None)]
        missing = [mapping[k] for k in needed if mapping[k] not in self.table.c]
        if missing:
            self.engine.dispose()
            raise MigrationError(
                f"source {self.label} has no column(s) {missing}; "
                f"it has {list(self.table.c.keys())} (map them with columns=)"
            )
        self.col = {k: self.table.c[mapping[k]] for k in needed}
        self.epoch = isinstance(self.col["ts"].type, sa.Integer)

    def to_source_ts(self, ts: pd.Timestamp) -> object:
        if self.epoch:
            return int(ts.value // pd.Timedelta(1, unit=self.epoch_unit).value)
        return ts.tz_convert("UTC").tz_localize(None).to_pydatetime()

    def series(self) -> list[tuple[str, object, int]]:
        """``(symbol, raw timeframe, rows)`` of every series, in order."""
        keys = [self.col["symbol"]] + ([] if self.timeframe else [self.col["timeframe"]])
        q = sa.select(*keys, sa.func.count()).group_by(*keys).order_by(*keys)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        out = []
        for row in rows:
            raw_tf = self.timeframe if self.timeframe else row[1]
            try:
                check_symbol(row[0])
                Timeframe.parse(str(raw_tf))
            except MLEngineError as err:
                raise BarDataError(str(err), source=self.label) from err
            out.append((row[0], raw_tf, int(row[-1])))
        return out

    def _where(self, symbol: str, raw_tf: object, after: pd.Timestamp | None) -> list[Any]:
        conds = [self.col["symbol"] == symbol]
        if self.timeframe is None:
            conds.append(self.col["timeframe"] == raw_tf)
        if after is not None:
            conds.append(self.col["ts"] > self.to_source_ts(after))
        return conds

    def count_after(self, symbol: str, raw_tf: object, after: pd.Timestamp) -> int:
        q = sa.select(sa.func.count()).where(*self._where(symbol, raw_tf, after))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def chunks(
        self, symbol: str, raw_tf: object, tf: str, after: pd.Timestamp | None, size: int
    ) -> Iterator[pd.DataFrame]:
        """Bar frames of ``size`` rows at most, streamed in ``ts`` order after ``after``."""
        cols = [self.col[k] for k in ("ts", *OHLCV)]
        q = sa.select(*cols).where(*self._where(symbol, raw_tf, after)).order_by(self.col["ts"])
        last: pd.Timestamp | None = after
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, max_row_buffer=size).execute(q)
            try:
                for rows in result.partitions(size):
                    frame = self._frame(rows, symbol, tf, last)
                    last = frame.index[-1]
                    yield frame
            finally:
                result.close()  # an early stop must finish the unbuffered result first

    def _frame(
        self, rows: Sequence[Any], symbol: str, tf: str, last: pd.Timestamp | None
    ) -> pd.DataFrame:
        raw = list(zip(*rows, strict=True))
        where = f"symbol {symbol!r}"
        ts_col = self.col["ts"].name
        if any(v is None for v in raw[0]):
            raise BarDataError(f"{where}: NULL ts", source=self.label, column=ts_col)
        if self.epoch:
            ts = pd.to_datetime(np.asarray(raw[0], dtype=np.int64), unit=self.epoch_unit, utc=True)
        else:
            ts = pd.DatetimeIndex(pd.to_datetime(list(raw[0]), utc=True))  # naive → UTC
        values: dict[str, np.ndarray] = {}
        for i, name in enumerate(OHLCV, start=1):
            num = pd.to_numeric(pd.Series(raw[i], dtype=object), errors="coerce").to_numpy()
            bad = np.flatnonzero(np.isnan(num))
            if bad.size:
                j = int(bad[0])
                raise BarDataError(
                    f"{where}, ts {ts[j]}: {name} is {raw[i][j]!r}, not a number",
                    source=self.label,
                    column=self.col[name].name,
                )
            values[name] = num.astype(np.float64)
        # Rows come sorted by ts: a step <= 0, within the chunk or from the previous one,
        # is a duplicate timestamp.
        steps = np.diff(ts.asi8)
        dup = [0] if last is not None and ts[0] <= last else np.flatnonzero(steps <= 0) + 1
        if len(dup):
            j = int(dup[0])
            raise BarDataError(f"{where}: duplicate ts {ts[j]}", source=self.label, column=ts_col)
        return make_bar_frame(ts, values, symbol=symbol, timeframe=tf)

    def stats(self, symbol: str, raw_tf: object, tf: str, size: int) -> SeriesStats:
        digest, rows, first, last = BarChecksum(), 0, None, None
        for frame in self.chunks(symbol, raw_tf, tf, None, size):
            ts_us = pd.DatetimeIndex(frame.index).as_unit("us").asi8
            digest.update(ts_us, frame.to_numpy(dtype=np.float64))
            rows, last = rows + len(frame), frame.index[-1]
            first = frame.index[0] if first is None else first
        return SeriesStats(symbol, tf, rows, first, last, digest.hexdigest())


def migrate(
    source_url: str,
    target: str | Store,
    *,
    table: str = "ohlcv",
    columns: Mapping[str, str] | None = None,
    timeframe: str | None = None,
    epoch_unit: EpochUnit = "s",
    chunk_size: int = 50_000,
    dry_run: bool = False,
    progress: bool = True,
    pause: float = 0.0,
    console: Console | None = None,
) -> MigrationReport:
    """Copy ``table`` of the MySQL/MariaDB database at ``source_url`` into ``target``.

    ``columns`` maps ``symbol timeframe ts open high low close volume`` to source column
    names (default: the same names); ``timeframe`` is a constant for a source table that
    holds one timeframe and has no timeframe column. ``dry_run`` copies nothing and reports
    the series and row counts that would be copied (a target given as a URL is still
    opened, which creates its empty schema). ``pause`` sleeps that many seconds
    after each chunk, to go easy on a busy source. With ``progress`` a progress bar and the
    report's table are printed.
    """
    if chunk_size < 1:
        raise MigrationError(f"chunk_size must be >= 1, got {chunk_size}")
    if timeframe is not None:
        timeframe = Timeframe.parse(timeframe).name
    console = console or Console(stderr=True)
    src = _Source(source_url, table, columns, timeframe, epoch_unit)
    try:
        store = open_store(target) if isinstance(target, str) else target
    except BaseException:
        src.engine.dispose()
        raise
    try:
        source_id = f"{src.url}#{table}"
        report = MigrationReport(source=source_id, target=store.url, dry_run=dry_run)
        done = store.checkpoints(source_id)
        for symbol, raw_tf, n in src.series():
            tf = Timeframe.parse(str(raw_tf)).name
            cp = done.get((symbol, tf))
            left = n if cp is None else src.count_after(symbol, raw_tf, cp.last_ts)
            report.plan.append(SeriesPlan(symbol, tf, raw_tf, n, n - left, left, cp))
        if not dry_run:
            _copy(src, store, report, source_id, chunk_size, pause, progress, console)
            for p in report.plan:
                source_stats = src.stats(p.symbol, p.source_timeframe, p.timeframe, chunk_size)
                report.checks.append(SeriesCheck(source_stats, _target_stats(store, p)))
        if progress:
            console.print(report.table())
        return report
    except OperationalError as err:
        raise SourceUnavailableError(f"lost source {src.url}: {err.orig}") from err
    finally:
        src.engine.dispose()
        if isinstance(target, str):
            store.close()


def _copy(
    src: _Source,
    store: Store,
    report: MigrationReport,
    source_id: str,
    chunk_size: int,
    pause: float,
    progress: bool,
    console: Console,
) -> None:
    total = sum(p.to_copy for p in report.plan)
    with Progress(console=console, disable=not progress) as bar:
        task = bar.add_task(f"copying {src.name}", total=total)
        for p in report.plan:
            copied = p.already_copied
            after = p.checkpoint.last_ts if p.checkpoint else None
            for frame in src.chunks(p.symbol, p.source_timeframe, p.timeframe, after, chunk_size):
                copied += len(frame)
                cp = Checkpoint(source_id, p.symbol, p.timeframe, frame.index[-1], copied)
                report.rows_copied += store.write_bars(frame, checkpoints=[cp])
                bar.advance(task, len(frame))
                if pause:
                    time.sleep(pause)


def _target_stats(store: Store, p: SeriesPlan) -> SeriesStats:
    try:
        return store.series_stats(p.symbol, p.timeframe)
    except SeriesNotFoundError:
        return SeriesStats(p.symbol, p.timeframe, 0, None, None, BarChecksum().hexdigest())
