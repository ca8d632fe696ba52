"""Store throughput: rows/s to write (insert and upsert) and read 1,000,000 bars per engine.

DuckDB writes into a temporary file; PostgreSQL into a fresh temporary database on the
server at ``MLENGINE_BENCH_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``),
dropped afterwards. The bars are a synthetic random walk (throughput does not depend on
the prices). Prints a Rich table and writes ``benchmarks/results/store.json``.

    .venv/bin/python benchmarks/bench_store.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psycopg
from rich.console import Console
from rich.table import Table

from _results import write_result
from mlengine.data.schema import make_bar_frame
from mlengine.data.store import open_store

GOALS = {"duckdb": 1_000_000, "postgresql": 200_000}  # write rows/s


def random_walk_bars(n: int, seed: int = 42) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0.0, 5e-4, n)) * close
    cols = {
        "open": open_,
        "high": np.maximum(open_, close) + spread,
        "low": np.minimum(open_, close) - spread,
        "close": close,
        "volume": rng.lognormal(3.0, 1.0, n),
    }
    idx = pd.date_range("2000-01-01", periods=n, freq="min", tz="UTC").to_numpy()
    return make_bar_frame(idx, cols, symbol="BENCH", timeframe="1m")


@contextmanager
def duckdb_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"duckdb:///{Path(tmp, 'bench.duckdb').as_posix()}"


@contextmanager
def postgres_url() -> Iterator[str]:
    admin_url = os.environ.get("MLENGINE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"mlengine_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def bench_engine(
    make_url: Callable[[], AbstractContextManager[str]], bars: pd.DataFrame, repeat: int
) -> dict[str, float]:
    """Median seconds, each repetition on a fresh store, of: insert into the empty table,
    re-write the same bars (idempotent upsert), update every bar to new values, read back."""
    changed = bars * 1.0001
    changed.attrs = dict(bars.attrs)
    times: dict[str, list[float]] = {"insert_s": [], "rewrite_s": [], "update_s": [], "read_s": []}
    for _ in range(repeat):
        with make_url() as url, open_store(url) as store:
            times["insert_s"].append(timed(lambda: store.write_bars(bars)))
            times["rewrite_s"].append(timed(lambda: store.write_bars(bars)))
            times["update_s"].append(timed(lambda: store.write_bars(changed)))
            times["read_s"].append(timed(lambda: store.read_bars("BENCH", "1m")))
            back = store.read_bars("BENCH", "1m")
            pd.testing.assert_frame_equal(back, changed)  # the benchmark checks its work
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bars = random_walk_bars(args.rows)
    results: dict[str, dict[str, float]] = {}
    for engine, make_url in (("duckdb", duckdb_url), ("postgresql", postgres_url)):
        secs = bench_engine(make_url, bars, args.repeat)
        results[engine] = {
            **secs,
            **{k.replace("_s", "_rows_per_s"): args.rows / v for k, v in secs.items()},
            "write_goal_rows_per_s": GOALS[engine],
        }
    table = Table(title=f"store throughput, {args.rows:,} bars, median of {args.repeat}")
    for col in ("engine", "insert", "rewrite same", "update all", "read", "goal", "insert ≥ goal"):
        table.add_column(col, justify="right")
    for engine, r in results.items():
        table.add_row(
            engine,
            *(f"{r[k + '_rows_per_s']:,.0f}" for k in ("insert", "rewrite", "update", "read")),
            f"{GOALS[engine]:,}",
            "[green]yes[/]" if r["insert_rows_per_s"] >= GOALS[engine] else "[red]no[/]",
        )
    console = Console(width=120)
    console.print(table)
    console.print("rows/s; insert = 1M new bars into an empty table, the write goal's case")
    payload = {
        "rows": args.rows,
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {"duckdb": duckdb.__version__, "psycopg": psycopg.__version__},
        "results": results,
    }
    write_result("store", payload)


if __name__ == "__main__":
    main()
