"""The Store on both engines: round trips, idempotent upserts, atomic writes, clear errors."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.data.schema import OHLCV, BarDataError, TimeframeError, make_bar_frame
from mlengine.data.store import (
    BarChecksum,
    Checkpoint,
    SeriesNotFoundError,
    Store,
    StoreError,
    StoreUnavailableError,
    bar_arrays,
    open_store,
)

NASTY = "x'; DROP TABLE market_data.ohlcv; --"


def load_eurusd() -> pd.DataFrame:
    """The bundled real EURUSD 1h 2017 ask bars."""
    return datasets.load("eurusd_1h")


def load_btcusd() -> pd.DataFrame:
    """The bundled real Coinbase BTCUSD 1h bars (volume in BTC)."""
    return datasets.load("btcusd_1h_coinbase")


def synthetic(n: int, *, symbol: str = "SYN", seed: int = 0, start: str = "2020-01-01"):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    cols = {
        "open": close,
        "high": close * 1.001,
        "low": close * 0.999,
        "close": close,
        "volume": rng.uniform(1, 10, n),
    }
    idx = pd.date_range(start, periods=n, freq="h", tz="UTC").to_numpy()  # no freq attribute
    return make_bar_frame(idx, cols, symbol=symbol, timeframe="1h")


def test_real_bars_round_trip_exactly(store: Store) -> None:
    bars = load_eurusd()
    assert store.write_bars(bars) == len(bars)
    back = store.read_bars("EURUSD", "1h")
    pd.testing.assert_frame_equal(back, bars)
    assert back.attrs == {"symbol": "EURUSD", "timeframe": "1h"}
    series = store.list_series()
    assert series.to_dict("records") == [
        {
            "symbol": "EURUSD",
            "timeframe": "1h",
            "rows": len(bars),
            "first_ts": bars.index[0],
            "last_ts": bars.index[-1],
        }
    ]
    stats = store.series_stats("EURUSD", "60m")  # timeframe aliases are normalised
    digest = BarChecksum()
    digest.update(*bar_arrays(bars))
    assert (stats.rows, stats.first_ts, stats.last_ts) == (len(bars), bars.index[0], bars.index[-1])
    assert stats.checksum == digest.hexdigest()


def test_rewrites_upsert_without_duplicates_and_later_values_win(store: Store) -> None:
    bars = synthetic(300)
    store.write_bars(bars)
    store.write_bars(bars)
    changed = bars.iloc[200:].copy() * 2.0  # overlapping rows with new values
    changed.attrs = dict(bars.attrs)
    extra = synthetic(50, start=str(bars.index[-1] + pd.Timedelta(hours=1)))
    both = pd.concat([changed, extra])
    both.attrs = dict(bars.attrs)
    store.write_bars(both)
    back = store.read_bars("SYN", "1h")
    assert len(back) == 350
    assert back.index.is_unique
    pd.testing.assert_frame_equal(back.iloc[:200], bars.iloc[:200])
    np.testing.assert_array_equal(back.iloc[200:300].to_numpy(), bars.iloc[200:].to_numpy() * 2.0)


def test_read_range_is_half_open_and_an_empty_range_gives_an_empty_frame(store: Store) -> None:
    bars = synthetic(48)
    store.write_bars(bars)
    part = store.read_bars("SYN", "1h", start="2020-01-01 10:00", end=bars.index[20])
    assert part.index[0] == pd.Timestamp("2020-01-01 10:00", tz="UTC")
    assert part.index[-1] == bars.index[19]
    empty = store.read_bars("SYN", "1h", start="2030-01-01")
    assert empty.empty
    assert list(empty.columns) == list(OHLCV)
    assert empty.attrs["symbol"] == "SYN"


def test_last_bars_are_the_newest_n_before_a_time(store: Store) -> None:
    bars = synthetic(48)
    store.write_bars([bars, synthetic(60, symbol="OTHER", seed=1)])
    pd.testing.assert_frame_equal(store.read_last_bars("SYN", "1h", 10), bars.iloc[-10:])
    part = store.read_last_bars("SYN", "1h", 5, before=bars.index[20])
    pd.testing.assert_frame_equal(part, bars.iloc[15:20])
    # fewer stored than asked: all of them; none before the first bar: an empty frame
    pd.testing.assert_frame_equal(store.read_last_bars("SYN", "1h", 100), bars)
    pd.testing.assert_frame_equal(
        store.read_last_bars("SYN", "1h", 100, before=bars.index[3]), bars.iloc[:3]
    )
    empty = store.read_last_bars("SYN", "1h", 4, before=bars.index[0])
    assert empty.empty and empty.attrs["symbol"] == "SYN"
    with pytest.raises(SeriesNotFoundError, match="'NOPE'"):
        store.read_last_bars("NOPE", "1h", 3)
    with pytest.raises(StoreError, match="n must be a positive integer, got 0"):
        store.read_last_bars("SYN", "1h", 0)


@settings(max_examples=30, deadline=None)
@given(
    hours=st.lists(st.integers(0, 300), min_size=1, max_size=60, unique=True),
    n=st.integers(1, 70),
    before=st.none() | st.integers(0, 310),
)
def test_property_last_bars_equal_the_tail_of_a_range_read(hours, n, before) -> None:
    idx = pd.Timestamp("2022-01-01", tz="UTC") + pd.to_timedelta(sorted(hours), unit="h")
    vals = np.arange(1.0, len(idx) + 1.0)
    bars = make_bar_frame(idx, {c: vals for c in OHLCV}, symbol="P", timeframe="1h")
    end = (
        None
        if before is None
        else pd.Timestamp("2022-01-01", tz="UTC") + pd.Timedelta(hours=before)
    )
    with open_store("duckdb:///:memory:") as s:
        s.write_bars(bars)
        expected = s.read_bars("P", "1h", end=end).iloc[-n:]
        pd.testing.assert_frame_equal(s.read_last_bars("P", "1h", n, before=end), expected)


def test_unknown_series_raises_not_found_naming_it(store: Store) -> None:
    store.write_bars(synthetic(5))
    with pytest.raises(SeriesNotFoundError, match=r"'NOPE'.*'4h'"):
        store.read_bars("NOPE", "4h")
    with pytest.raises(SeriesNotFoundError, match="'NOPE'"):
        store.series_stats("NOPE", "1h")
    with pytest.raises(TimeframeError, match="7x"):
        store.read_bars("SYN", "7x")


def test_symbol_with_sql_metacharacters_is_stored_as_data(store: Store) -> None:
    bars = synthetic(10, symbol=NASTY)
    store.write_bars(bars)
    store.write_bars(synthetic(3, symbol="OTHER"))
    pd.testing.assert_frame_equal(store.read_bars(NASTY, "1h"), bars)
    assert sorted(store.list_series()["symbol"]) == sorted([NASTY, "OTHER"])
    assert store.delete_series(NASTY, "1h") == 10
    assert store.list_series()["symbol"].tolist() == ["OTHER"]  # the table is still there


def test_delete_series(store: Store) -> None:
    store.write_bars([synthetic(7, symbol="A"), synthetic(4, symbol="B")])
    assert store.delete_series("A", "1h") == 7
    assert store.delete_series("A", "1h") == 0
    with pytest.raises(SeriesNotFoundError):
        store.read_bars("A", "1h")
    assert len(store.read_bars("B", "1h")) == 4


def test_bad_frame_is_rejected_and_stored_rows_survive(store: Store) -> None:
    good = synthetic(20)
    store.write_bars(good)
    bad = synthetic(5, symbol="NEW")
    bad = bad.iloc[[0, 2, 1, 3, 4]]  # out of order
    with pytest.raises(BarDataError, match="out-of-order"):
        store.write_bars([synthetic(5, symbol="FIRST"), bad])
    no_attrs = synthetic(5, symbol="X")
    no_attrs.attrs.clear()
    with pytest.raises(BarDataError, match="attrs"):
        store.write_bars(no_attrs)
    fine = synthetic(3, symbol="NS")
    fine.index = fine.index + pd.Timedelta(1, unit="ns")
    with pytest.raises(BarDataError, match="sub-microsecond"):
        store.write_bars(fine)
    with pytest.raises(BarDataError, match="twice"):
        store.write_bars([synthetic(2, symbol="D"), synthetic(2, symbol="D")])
    assert store.list_series()["symbol"].tolist() == ["SYN"]
    pd.testing.assert_frame_equal(store.read_bars("SYN", "1h"), good)


def test_error_midway_rolls_back_the_whole_write(store: Store) -> None:
    good = synthetic(20)
    store.write_bars(good)
    changed = (good * 3.0).__finalize__(good)
    # The bars are upserted first; the checkpoint's row count overflows BIGINT afterwards.
    overflow = Checkpoint("src", "SYN", "1h", good.index[-1], 2**70)
    with pytest.raises(StoreError, match="out of range"):
        store.write_bars([changed, synthetic(9, symbol="NEW")], checkpoints=[overflow])
    assert store.list_series()["symbol"].tolist() == ["SYN"]
    pd.testing.assert_frame_equal(store.read_bars("SYN", "1h"), good)
    assert store.checkpoints("src") == {}


def test_checkpoints_are_written_with_the_bars(store: Store) -> None:
    bars = synthetic(10)
    cp = Checkpoint("mysql://db#ohlcv", "SYN", "1h", bars.index[-1], 10)
    store.write_bars(bars, checkpoints=[cp])
    assert store.checkpoints("mysql://db#ohlcv") == {("SYN", "1h"): cp}
    assert store.checkpoints("other") == {}


def test_ml_tables_take_records_and_give_them_back(store: Store) -> None:
    for i in range(3):
        store.insert_records(
            "ml.trials",
            [{"strategy": "pva", "params": {"lr": 0.1 * i}, "params_hash": f"h{i}",
              "metric": "sharpe", "sharpe": 0.5 * i, "n_obs": 1000}],
        )  # fmt: skip
    trials = store.read_table("ml.trials")
    assert trials["trial_id"].tolist() == [1, 2, 3]
    assert trials["params"].tolist() == [{"lr": 0.0}, {"lr": 0.1}, {"lr": 0.2}]
    ts = pd.date_range("2021-01-01", periods=3, freq="h", tz="UTC")
    preds = pd.DataFrame(
        {"run_id": "r1", "strategy": "mrd", "symbol": NASTY, "timeframe": "1h", "ts": ts,
         "fold": 0, "p_up": [0.4, 0.5, 0.6], "diagnostics": [{"regime": 1}, None, {"x": [1]}]}
    )  # fmt: skip
    store.insert_records("ml.predictions", preds)
    store.insert_records("ml.predictions", preds.assign(p_up=0.9))  # same key: replaced
    back = store.read_table("ml.predictions", {"run_id": "r1", "symbol": NASTY})
    assert back["p_up"].tolist() == [0.9, 0.9, 0.9]
    assert back["ts"].tolist() == list(ts)
    assert back["diagnostics"].tolist() == [{"regime": 1}, None, {"x": [1]}]
    store.insert_records("ml.backtest_runs", [{"run_id": "b1", "config": "text", "symbols": ["A"]}])
    run = store.read_table("ml.backtest_runs").iloc[0]
    assert (run["config"], run["symbols"]) == ("text", ["A"])  # a JSON string stays a string
    store.insert_records(
        "ml.llm_signals",
        [{"symbol": "EURUSD", "timeframe": "1h", "ts": ts[0], "action": "buy",
          "confidence": 0.7, "provider": "rules", "valid": True, "fallback_used": True}],
    )  # fmt: skip
    sig = store.read_table("ml.llm_signals", {"symbol": "EURUSD"})
    assert sig[["id", "action", "fallback_used", "valid"]].values.tolist() == [
        [1, "buy", True, True]
    ]
    with pytest.raises(StoreError, match="unknown columns"):
        store.insert_records("ml.trials", [{"strategy": "x", "bogus": 1}])
    with pytest.raises(KeyError, match=r"ml\.nope"):
        store.read_table("ml.nope")


@pytest.mark.postgres
def test_postgres_reopen_is_idempotent_and_keeps_data(pg_url: str) -> None:
    with open_store(pg_url) as s:
        s.write_bars(synthetic(5))
        # a second store on the same database while the first is open
        with open_store(pg_url.replace("postgresql://", "postgresql+psycopg://")) as t:
            assert len(t.read_bars("SYN", "1h")) == 5


def test_duckdb_reopen_keeps_data_and_creates_parent_dirs(tmp_path) -> None:
    url = f"duckdb:///{(tmp_path / 'a' / 'b' / 'store.duckdb').as_posix()}"
    with open_store(url) as s:
        s.write_bars(synthetic(5))
    with open_store(url) as s:
        assert len(s.read_bars("SYN", "1h")) == 5
        assert s.url == url


def test_closed_postgres_port_is_a_clear_quick_error() -> None:
    began = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        open_store("postgresql://postgres:s3cret@127.0.0.1:1/nowhere")
    assert time.monotonic() - began < 10
    message = str(info.value)
    assert "127.0.0.1:1/nowhere" in message
    assert "s3cret" not in message
    assert "refused" in message.lower()


def test_unopenable_duckdb_path_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailableError, match=r"file/x\.duckdb"):
        open_store(f"duckdb:///{(blocker / 'x.duckdb').as_posix()}")


def test_duckdb_file_held_by_another_process_is_unavailable(duckdb_url) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from mlengine.data.store import open_store; "
         "s = open_store(sys.argv[1]); print('ready', flush=True); time.sleep(60)", duckdb_url],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreUnavailableError, match=r"cannot open DuckDB store .*lock"):
            open_store(duckdb_url)
    finally:
        holder.kill()
        holder.wait()
    with open_store(duckdb_url) as s:  # free again once the holder is gone
        assert s.list_series().empty


def test_unsupported_url_and_default_url(monkeypatch, tmp_path) -> None:
    with pytest.raises(StoreError, match=r"unsupported store URL 'sqlite:///x\.db'"):
        open_store("sqlite:///x.db")
    from mlengine import config

    url = f"duckdb:///{(tmp_path / 'default.duckdb').as_posix()}"
    monkeypatch.setenv("MLENGINE_DB_URL", url)
    config.get_settings.cache_clear()
    try:
        with open_store() as s:
            assert s.url == url
    finally:
        config.get_settings.cache_clear()


def test_checksum_is_chunking_invariant_and_canonical() -> None:
    bars = synthetic(100)
    ts_us, vals = bar_arrays(bars)
    whole, parts = BarChecksum(), BarChecksum()
    whole.update(ts_us, vals)
    for lo in range(0, 100, 33):
        parts.update(ts_us[lo : lo + 33], vals[lo : lo + 33])
    assert whole.hexdigest() == parts.hexdigest()
    neg, pos = BarChecksum(), BarChecksum()
    neg.update(ts_us[:1], np.array([[-0.0, 1, 1, 1, 1]]))
    pos.update(ts_us[:1], np.array([[0.0, 1, 1, 1, 1]]))
    assert neg.hexdigest() == pos.hexdigest()
    other = BarChecksum()
    other.update(ts_us, vals + np.eye(100, 5)[::-1] * 1e-12)  # one value changed
    assert other.hexdigest() != whole.hexdigest()


_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(st.tuples(st.integers(0, 500), _floats), min_size=1, max_size=40),
    second=st.lists(st.tuples(st.integers(0, 500), _floats), min_size=1, max_size=40),
)
def test_property_overlapping_writes_equal_later_wins_merge(first, second) -> None:
    def frame(rows):
        by_ts = dict(rows)
        idx = pd.Timestamp("2022-01-01", tz="UTC") + pd.to_timedelta(sorted(by_ts), unit="h")
        vals = np.array([by_ts[k] for k in sorted(by_ts)])
        return make_bar_frame(idx, {c: vals for c in OHLCV}, symbol="P", timeframe="1h")

    a, b = frame(first), frame(second)
    with open_store("duckdb:///:memory:") as s:
        s.write_bars(a)
        s.write_bars(b)
        back = s.read_bars("P", "1h")
        expected = b.combine_first(a)
        pd.testing.assert_index_equal(back.index, expected.index, check_names=False)
        np.testing.assert_array_equal(back.to_numpy(), expected.to_numpy())
        digest = BarChecksum()
        digest.update(*bar_arrays(back))
        assert s.series_stats("P", "1h").checksum == digest.hexdigest()
