"""MySQL/MariaDB → store migration against the real servers: copy, resume, verify, errors."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from rich.console import Console
from typer.testing import CliRunner

from mlengine.cli import app
from mlengine.data.migrate import MigrationError, SourceUnavailableError, migrate
from mlengine.data.schema import BarDataError
from mlengine.data.store import open_store
from tests.data.test_store import load_btcusd, load_eurusd, synthetic

pytestmark = pytest.mark.mysql

STANDARD_DDL = (
    "CREATE TABLE {name} (symbol VARCHAR(32) NOT NULL, timeframe VARCHAR(8) NOT NULL, "
    "ts DATETIME NOT NULL, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, "
    "PRIMARY KEY (symbol, timeframe, ts))"
)


def fill_source(mysql_url: str, frames: list[pd.DataFrame], name: str = "ohlcv") -> None:
    """Create a standard OHLCV table in MariaDB holding ``frames`` (naive UTC DATETIMEs)."""
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(STANDARD_DDL.format(name=name))
        for f in frames:
            rows = [
                (f.attrs["symbol"], f.attrs["timeframe"], ts.tz_localize(None).to_pydatetime(),
                 *map(float, vals))
                for ts, vals in zip(f.index, f.to_numpy(), strict=True)
            ]  # fmt: skip
            conn.exec_driver_sql(
                f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows
            )
    engine.dispose()


def execute(mysql_url: str, *statements: str) -> None:
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        for stmt in statements:
            conn.exec_driver_sql(stmt)
    engine.dispose()


@pytest.fixture(scope="module")
def real_bars() -> list[pd.DataFrame]:
    return [load_eurusd(), load_btcusd()]


def test_real_data_into_duckdb_copies_and_verifies(mysql_url, duckdb_url, real_bars) -> None:
    fill_source(mysql_url, real_bars)
    report = migrate(mysql_url, duckdb_url, chunk_size=4_000, progress=False)
    assert report.ok
    assert report.rows_copied == sum(len(f) for f in real_bars)
    assert [(c.source.symbol, c.source.rows) for c in report.checks] == [
        ("BTCUSD", 20_111),
        ("EURUSD", 6_225),
    ]
    for c in report.checks:
        assert c.source.checksum == c.target.checksum
        assert c.source.first_ts == c.target.first_ts
    with open_store(duckdb_url) as store:
        for bars in real_bars:
            pd.testing.assert_frame_equal(store.read_bars(bars.attrs["symbol"], "1h"), bars)
    # a second run finds everything checkpointed and copies nothing
    again = migrate(mysql_url, duckdb_url, progress=False)
    assert again.ok
    assert again.rows_copied == 0
    assert [p.to_copy for p in again.plan] == [0, 0]


@pytest.mark.postgres
def test_real_data_into_postgres(mysql_url, pg_url, real_bars) -> None:
    fill_source(mysql_url, real_bars[:1])
    with open_store(pg_url) as store:
        report = migrate(mysql_url, store, chunk_size=1_000, progress=False)
        assert report.ok
        assert report.rows_copied == 6_225
        pd.testing.assert_frame_equal(store.read_bars("EURUSD", "1h"), real_bars[0])


def test_dry_run_reports_and_writes_nothing(mysql_url, duckdb_url, real_bars) -> None:
    fill_source(mysql_url, real_bars)
    report = migrate(mysql_url, duckdb_url, dry_run=True, progress=False)
    assert [(p.symbol, p.timeframe, p.source_rows, p.to_copy) for p in report.plan] == [
        ("BTCUSD", "1h", 20_111, 20_111),
        ("EURUSD", "1h", 6_225, 6_225),
    ]
    assert report.rows_copied == 0
    assert report.table().row_count == 2
    with open_store(duckdb_url) as store:
        assert store.list_series().empty
        assert store.checkpoints(report.source) == {}


def test_overlapping_target_rows_are_upserted_not_duplicated(mysql_url, duckdb_url) -> None:
    bars = synthetic(3_000, symbol="SYN")
    fill_source(mysql_url, [bars])
    stale = (bars.iloc[1_000:1_500] + 1.0).__finalize__(bars)  # overlapping, other values
    with open_store(duckdb_url) as store:
        store.write_bars(stale)
        report = migrate(mysql_url, store, chunk_size=700, progress=False)
        assert report.ok
        back = store.read_bars("SYN", "1h")
    assert len(back) == 3_000
    pd.testing.assert_frame_equal(back, bars)


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_run_resumes_without_gaps_or_duplicates(mysql_url, pg_url, real_bars) -> None:
    fill_source(mysql_url, real_bars)
    total = sum(len(f) for f in real_bars)
    cmd = [sys.executable, "-m", "mlengine", "data", "migrate", "--source", mysql_url,
           "--target", pg_url, "--chunk-size", "500", "--pause", "0.05",
           "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    copied = 0
    try:
        deadline = time.monotonic() + 60
        while copied < 2_000 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            copied = _checkpointed_rows(pg_url)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _checkpointed_rows(pg_url)
    assert 2_000 <= before < total
    with psycopg.connect(pg_url) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM market_data.ohlcv").fetchone() or (0,)
    assert stored == before  # chunk and checkpoint commit together

    report = migrate(mysql_url, pg_url, chunk_size=500, progress=False)
    assert report.ok
    assert report.rows_copied == total - before
    with psycopg.connect(pg_url) as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (symbol, timeframe, ts)) FROM market_data.ohlcv"
        ).fetchone() or (0, 0)
    assert n == distinct == total
    for c in report.checks:
        assert (c.source.rows, c.source.first_ts, c.source.last_ts, c.source.checksum) == (
            c.target.rows, c.target.first_ts, c.target.last_ts, c.target.checksum,
        )  # fmt: skip


def _checkpointed_rows(pg_url: str) -> int:
    try:
        with psycopg.connect(pg_url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(rows_copied), 0) FROM market_data.migration_checkpoints"
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def test_mapped_columns_constant_timeframe_epoch_and_decimal(mysql_url, duckdb_url) -> None:
    bars = load_eurusd().iloc[:1_500]
    execute(
        mysql_url,
        "CREATE TABLE fx_h1 (pair VARCHAR(16), t BIGINT, o DECIMAL(12,5), h DECIMAL(12,5), "
        "l DECIMAL(12,5), c DECIMAL(12,5), vol DOUBLE, PRIMARY KEY (pair, t))",
    )
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        rows = [
            ("EURUSD", int(ts.timestamp()), *(f"{v:.5f}" for v in vals[:4]), float(vals[4]))
            for ts, vals in zip(bars.index, bars.to_numpy(), strict=True)
        ]
        conn.exec_driver_sql("INSERT INTO fx_h1 VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
    engine.dispose()
    columns = {"symbol": "pair", "ts": "t", "open": "o", "high": "h", "low": "l", "close": "c",
               "volume": "vol"}  # fmt: skip
    report = migrate(
        mysql_url, duckdb_url, table="fx_h1", columns=columns, timeframe="60m",
        chunk_size=400, progress=False,
    )  # fmt: skip
    assert report.ok
    with open_store(duckdb_url) as store:
        back = store.read_bars("EURUSD", "1h")
    pd.testing.assert_index_equal(back.index, bars.index)
    pd.testing.assert_frame_equal(back, bars, check_exact=False, rtol=0, atol=1e-12)


def test_missing_table_names_table_and_database(mysql_url, duckdb_url) -> None:
    db = mysql_url.rsplit("/", 1)[1]
    with pytest.raises(MigrationError, match=rf"'bars_nowhere' in database '{db}'"):
        migrate(mysql_url, duckdb_url, table="bars_nowhere", progress=False)


def test_missing_mapped_column_is_named(mysql_url, duckdb_url) -> None:
    fill_source(mysql_url, [synthetic(10)])
    with pytest.raises(MigrationError, match=r"no column\(s\) \['time_open'\]"):
        migrate(mysql_url, duckdb_url, columns={"ts": "time_open"}, progress=False)


def test_unreachable_source_is_a_clear_error(duckdb_url) -> None:
    began = time.monotonic()
    with pytest.raises(SourceUnavailableError, match=r"127\.0\.0\.1:1/src") as info:
        migrate("mysql+pymysql://root:pw123@127.0.0.1:1/src", duckdb_url, progress=False)
    assert "pw123" not in str(info.value)
    assert time.monotonic() - began < 10


@pytest.mark.parametrize(
    ("value", "shown"), [("NULL", "None"), ("'abc'", "'abc'")], ids=["null", "text"]
)
def test_bad_price_names_table_symbol_and_ts(mysql_url, duckdb_url, value, shown) -> None:
    execute(
        mysql_url,
        STANDARD_DDL.format(name="px").replace("close DOUBLE", "close VARCHAR(20)"),
        "INSERT INTO px VALUES ('AAA', '1h', '2020-01-01 00:00:00', 1, 1, 1, '1', 1), "
        f"('AAA', '1h', '2020-01-01 01:00:00', 1, 1, 1, {value}, 1)",
    )
    with pytest.raises(BarDataError) as info:
        migrate(mysql_url, duckdb_url, table="px", progress=False)
    message = str(info.value)
    assert f"table 'px' in database '{mysql_url.rsplit('/', 1)[1]}'" in message
    assert "'AAA'" in message
    assert "2020-01-01 01:00:00+00:00" in message
    assert f"close is {shown}" in message


def test_duplicate_source_timestamps_are_rejected(mysql_url, duckdb_url) -> None:
    execute(
        mysql_url,
        "CREATE TABLE dup (symbol VARCHAR(8), timeframe VARCHAR(4), ts DATETIME, open DOUBLE, "
        "high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE)",
        "INSERT INTO dup VALUES ('D', '1h', '2020-01-01 00:00:00', 1, 1, 1, 1, 1), "
        "('D', '1h', '2020-01-01 00:00:00', 2, 2, 2, 2, 2)",
    )
    with pytest.raises(BarDataError, match=r"'D': duplicate ts 2020-01-01 00:00:00\+00:00"):
        migrate(mysql_url, duckdb_url, table="dup", chunk_size=1, progress=False)


def test_command_line_dry_run_and_errors(mysql_url, duckdb_url) -> None:
    fill_source(mysql_url, [synthetic(25)])
    runner = CliRunner()
    base = ["data", "migrate", "--source", mysql_url, "--target", duckdb_url]
    result = runner.invoke(app, [*base, "--dry-run", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "SYN" in result.stdout
    with open_store(duckdb_url) as store:
        assert store.list_series().empty, "a dry run writes no rows"
    result = runner.invoke(app, [*base, "--table", "nope", "--no-progress"])
    assert result.exit_code == 2
    assert "'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    result = runner.invoke(app, [*base, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "25 / 25" in result.stdout
    with open_store(duckdb_url) as store:
        assert store.list_series()["rows"].tolist() == [25]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("('AAA', 'H1', '2020-01-01 00:00:00', 1, 1, 1, 1, 1)", r"unknown timeframe 'H1'"),
        ("('AAA', '1h', NULL, 1, 1, 1, 1, 1)", r"'AAA': NULL ts"),
        ("('', '1h', '2020-01-01 00:00:00', 1, 1, 1, 1, 1)", r"symbol must be non-empty"),
    ],
    ids=["timeframe", "null-ts", "empty-symbol"],
)
def test_bad_source_keys_name_the_table(mysql_url, duckdb_url, row, message) -> None:
    execute(
        mysql_url,
        "CREATE TABLE keys_t (symbol VARCHAR(8), timeframe VARCHAR(4), ts DATETIME NULL, "
        "open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE)",
        f"INSERT INTO keys_t VALUES {row}",
    )
    with pytest.raises(BarDataError, match=message) as info:
        migrate(mysql_url, duckdb_url, table="keys_t", progress=False)
    assert "table 'keys_t' in database" in str(info.value)


def test_bad_arguments_are_rejected(mysql_url, duckdb_url) -> None:
    fill_source(mysql_url, [synthetic(5)])
    with pytest.raises(MigrationError, match="chunk_size"):
        migrate(mysql_url, duckdb_url, chunk_size=0, progress=False)
    with pytest.raises(MigrationError, match=r"unknown column mapping keys \['price'\]"):
        migrate(mysql_url, duckdb_url, columns={"price": "close"}, progress=False)


def test_progress_prints_the_verification_table(mysql_url, duckdb_url) -> None:
    fill_source(mysql_url, [synthetic(120, symbol="AAA"), synthetic(80, symbol="BBB")])
    out = io.StringIO()
    report = migrate(mysql_url, duckdb_url, chunk_size=50, console=Console(file=out, width=200))
    assert report.ok
    text = out.getvalue()
    assert "verification" in text
    assert "120 / 120" in text
    assert "80 / 80" in text
