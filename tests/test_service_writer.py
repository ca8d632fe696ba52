"""The service's batching signal writer on a real store: everything queued is written, a bad
record loses only itself (logged with its series and bar), an unreachable store is logged."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlengine.data.store import Store, StoreUnavailableError
from mlengine.llm.signal_log import read_decisions
from mlengine.service.writer import SignalWriter

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def decision(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "symbol": "EURUSD",
        "timeframe": "1h",
        "ts": T0 + pd.Timedelta(hours=i),
        "action": "HOLD",
        "provider": "rules",
        "valid": False,
        **kw,
    }


def predictions(i: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": "live",
            "strategy": ["pva", "ensemble"],
            "symbol": "EURUSD",
            "timeframe": "1h",
            "ts": [T0 + pd.Timedelta(hours=i)] * 2,
            "fold": np.zeros(2, dtype=np.int64),
            "p_up": [0.5, 0.5 + i / 1000],
            "diagnostics": [{}, {"p_raw": 0.5}],
        }
    )


def test_everything_queued_is_written_by_flush(store: Store) -> None:
    writer = SignalWriter(lambda: store)
    for i in range(300):  # more than one batch
        writer.put(decision(i), predictions(i))
    writer.flush()
    logged = read_decisions(store, symbol="EURUSD")
    assert list(logged["ts"]) == [T0 + pd.Timedelta(hours=i) for i in range(300)]
    rows = store.read_table("ml.predictions", {"run_id": "live", "strategy": "ensemble"})
    assert len(rows) == 300
    assert sorted(rows["p_up"]) == pytest.approx([0.5 + i / 1000 for i in range(300)])
    writer.close()
    writer.put(decision(300), predictions(300))  # a closed writer starts again
    writer.close()
    assert len(read_decisions(store, symbol="EURUSD")) == 301


def test_a_bad_record_loses_only_itself_and_is_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    writer = SignalWriter(lambda: store)
    with caplog.at_level(logging.ERROR, logger="mlengine.service"):
        for i in range(5):
            bad = {"valid": True, "action": "MAYBE"} if i == 2 else {}
            writer.put(decision(i, **bad), predictions(i))
        writer.close()
    logged = read_decisions(store, symbol="EURUSD")
    assert [t.hour for t in logged["ts"]] == [0, 1, 3, 4]
    assert "could not log the decision of EURUSD 1h at 2024-03-01 02:00:00+00:00" in caplog.text
    assert "MAYBE" in caplog.text
    # the predictions of every request are written, the bad decision's too
    assert len(store.read_table("ml.predictions", {"strategy": "ensemble"})) == 5


def test_an_unreachable_store_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def down() -> Store:
        raise StoreUnavailableError("cannot reach postgresql://nowhere")

    writer = SignalWriter(down)
    with caplog.at_level(logging.ERROR, logger="mlengine.service"):
        writer.put(decision(0), predictions(0))
        writer.flush()
    assert "could not log 1 decisions: no store" in caplog.text
    assert "cannot reach postgresql://nowhere" in caplog.text
    writer.close()


def test_requests_within_the_linger_are_one_batch_and_written_without_a_flush(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    insert = store.insert_records

    def counted(table: str, records: Any) -> int:
        calls.append((table, len(records)))
        return insert(table, records)

    monkeypatch.setattr(store, "insert_records", counted)
    writer = SignalWriter(lambda: store, linger=60.0)
    for i in range(10):
        writer.put(decision(i), predictions(i))
    writer.flush()  # writes at once, whatever the linger
    assert calls == [("ml.llm_signals", 10), ("ml.predictions", 20)]
    writer.close()
    writer = SignalWriter(lambda: store, linger=0.05)
    writer.put(decision(10), predictions(10))
    for _ in range(200):  # written once the linger has passed, with no flush
        if len(calls) == 4:
            break
        time.sleep(0.05)
    assert calls[2:] == [("ml.llm_signals", 1), ("ml.predictions", 2)]
    writer.close()
