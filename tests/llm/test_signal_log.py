"""The signal log on both engines: checked records in, typed frames out, old stores
upgraded in place, nothing secret written."""

from __future__ import annotations

import duckdb
import pandas as pd
import psycopg
import pytest

from mlengine.data import ddl
from mlengine.data.store import Store, open_store
from mlengine.llm.schema import MAX_REASONING, LLMError
from mlengine.llm.signal_log import (
    RAW_REPLY_CAP,
    TEXT_CAP,
    SignalLogError,
    log_decision,
    read_decisions,
)

T0 = pd.Timestamp("2024-03-01 10:00", tz="UTC")
NEW_COLUMNS = ("prompt_version", "validation_errors", "fallback_chain", "prompt_tokens",
               "completion_tokens")  # fmt: skip

# The table as stores created it before the prompt_version ... completion_tokens columns.
OLD_LLM_SIGNALS = """
CREATE TABLE ml.llm_signals (
    id BIGINT DEFAULT nextval('ml.llm_signals_id_seq') NOT NULL,
    symbol VARCHAR(64) NOT NULL,
    timeframe VARCHAR(16) NOT NULL,
    ts TIMESTAMP WITH TIME ZONE NOT NULL,
    action VARCHAR(16) NOT NULL,
    confidence DOUBLE PRECISION,
    entry DOUBLE PRECISION,
    stop_loss DOUBLE PRECISION,
    take_profit DOUBLE PRECISION,
    horizon INTEGER,
    reasoning TEXT,
    provider TEXT NOT NULL,
    model TEXT,
    prompt_hash TEXT,
    raw_reply TEXT,
    latency_ms DOUBLE PRECISION,
    fallback_used BOOLEAN DEFAULT false NOT NULL,
    valid BOOLEAN NOT NULL,
    error TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id)
)"""
OLD_SETUP = (
    "CREATE SCHEMA ml",
    "CREATE SEQUENCE ml.llm_signals_id_seq",
    OLD_LLM_SIGNALS,
    "INSERT INTO ml.llm_signals (symbol, timeframe, ts, action, confidence, provider, valid) "
    "VALUES ('EURUSD', '1h', '2023-01-02 03:00:00+00', 'BUY', 0.4, 'ollama', true)",
)


def record(**overrides: object) -> dict[str, object]:
    """A complete valid record, as the decision flow writes it."""
    base: dict[str, object] = {
        "symbol": "EURUSD",
        "timeframe": "1h",
        "ts": T0,
        "action": "BUY",
        "confidence": 0.62,
        "entry": 1.08512,
        "stop_loss": 1.08212,
        "take_profit": 1.09112,
        "horizon": 4,
        "reasoning": "ensemble leans up",
        "provider": "local",
        "model": "smollm2-135m",
        "prompt_hash": "ab" * 32,
        "prompt_version": "decision-v1",
        "raw_reply": '{"action": "BUY"}',
        "latency_ms": 812.5,
        "fallback_used": True,
        "valid": True,
        "error": None,
        "validation_errors": ["ollama: stop distance 9.1 ATR > 5"],
        "fallback_chain": [
            {"provider": "ollama", "outcome": "rejected", "reason": "stop distance", "attempts": 1},
            {"provider": "local", "outcome": "accepted", "reason": None, "attempts": 1},
        ],
        "prompt_tokens": 512,
        "completion_tokens": 64,
    }
    base.update(overrides)
    return base


def test_round_trip_every_column(store: Store) -> None:
    log_decision(store, record())
    out = read_decisions(store)
    assert len(out) == 1
    row = out.iloc[0]
    for key, value in record().items():
        if value is None:
            assert row[key] is None or pd.isna(row[key]), key
        else:
            assert row[key] == value, key
    assert row["id"] == 1 and row["created_at"].tzinfo is not None
    assert set(NEW_COLUMNS) <= set(out.columns)
    assert out["confidence"].dtype == "float64" and out["prompt_tokens"].dtype == "Int64"
    assert out["valid"].dtype == bool and out["id"].dtype == "int64"


def test_invalid_record_with_no_decision_and_defaults(store: Store) -> None:
    log_decision(
        store,
        {"symbol": "EURUSD", "timeframe": "60m", "ts": "2024-03-01 11:00", "action": "NONE",
         "provider": "none", "valid": False, "error": "every provider failed"},
    )  # fmt: skip
    row = read_decisions(store).iloc[0]
    assert row["timeframe"] == "1h"  # normal form
    assert row["ts"] == T0 + pd.Timedelta(hours=1)  # naive time taken as UTC
    assert not row["valid"] and not row["fallback_used"]
    assert row["validation_errors"] == [] and row["fallback_chain"] == []
    assert pd.isna(row["confidence"]) and pd.isna(row["horizon"]) and pd.isna(row["prompt_tokens"])


def test_read_filters_and_orders_by_ts_then_id(store: Store) -> None:
    later, earlier = T0 + pd.Timedelta(hours=2), T0
    log_decision(store, record(ts=later))  # id 1
    log_decision(store, record(ts=earlier, action="SELL", stop_loss=1.09, take_profit=1.08))
    log_decision(store, record(ts=later, action="HOLD"))  # id 3, same ts as id 1
    log_decision(store, record(ts=earlier, symbol="GBPUSD"))
    log_decision(store, record(ts=later, timeframe="4h"))
    log_decision(store, record(ts=later, valid=False, action="NONE"))
    every = read_decisions(store)
    assert list(zip(every["ts"], every["id"], strict=True)) == sorted(
        zip(every["ts"], every["id"], strict=True)
    )
    eur = read_decisions(store, symbol="EURUSD", timeframe="1h")
    assert eur["id"].tolist() == [2, 1, 3, 6]
    assert read_decisions(store, symbol="EURUSD", timeframe="1h", valid_only=True)[
        "id"
    ].tolist() == [2, 1, 3]
    window = read_decisions(store, start=T0 + pd.Timedelta(hours=1), end=later)
    assert window.empty and list(window.columns) == list(every.columns)
    assert read_decisions(store, start=later, end=later + pd.Timedelta(hours=1))["id"].tolist() == [
        1, 3, 5, 6
    ]  # fmt: skip
    assert read_decisions(store, end="2024-03-01 11:00")["id"].tolist() == [2, 4]  # naive = UTC
    assert read_decisions(store, symbol="USDJPY").empty


def test_texts_are_capped(store: Store) -> None:
    huge = "x" * 1_000_000
    log_decision(
        store,
        record(valid=False, action="NONE", raw_reply=huge, reasoning="r" * 5000, error=huge,
               validation_errors=[huge], fallback_chain=[
                   {"provider": "local", "outcome": "invalid", "reason": huge}]),
    )  # fmt: skip
    row = read_decisions(store).iloc[0]
    assert len(row["raw_reply"]) == RAW_REPLY_CAP and row["raw_reply"].startswith("xxx")
    assert row["raw_reply"].endswith("[1000000 chars, cut]")
    assert len(row["reasoning"]) == MAX_REASONING
    assert len(row["error"]) == TEXT_CAP and len(row["validation_errors"][0]) == TEXT_CAP
    assert len(row["fallback_chain"][0]["reason"]) == TEXT_CAP
    short = "y" * RAW_REPLY_CAP
    log_decision(store, record(raw_reply=short))
    assert read_decisions(store).iloc[1]["raw_reply"] == short  # at the cap: kept whole


def test_secret_env_values_are_masked(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-ant-api03-SECRET-VALUE-123"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    log_decision(
        store,
        record(valid=False, action="NONE", raw_reply=f"echo {key}", error=f"401 for key {key}",
               validation_errors=[key], fallback_chain=[
                   {"provider": "anthropic", "outcome": "error", "reason": f"bad {key}"}]),
    )  # fmt: skip
    row = read_decisions(store).iloc[0]
    text = repr(row.to_dict())
    assert key not in text
    assert row["raw_reply"] == "echo [redacted]" and row["error"] == "401 for key [redacted]"


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"anthropic_api_key": "k"}, r"refusing key 'anthropic_api_key': secrets are never logged"),
     ({"apiKey": "k"}, r"refusing key 'apiKey'"),
     ({"client_secret": "k"}, r"refusing key 'client_secret'"),
     ({"password": "k"}, r"refusing key 'password'"),
     ({"id": 5}, r"unknown keys \['id'\]"),
     ({"bogus": 1}, r"unknown keys \['bogus'\]"),
     ({"symbol": None}, r"required keys missing: \['symbol'\]"),
     ({"valid": None, "provider": None}, r"required keys missing: \['provider', 'valid'\]"),
     ({"timeframe": "7x"}, r"7x"),
     ({"symbol": "bad\nsymbol"}, r"symbol"),
     ({"ts": "not a time"}, r"ts 'not a time' is not a time"),
     ({"ts": pd.NaT}, r"ts is NaT"),
     ({"action": ""}, r"action must be 1-16 printable characters"),
     ({"action": "B" * 17}, r"action must be 1-16 printable characters"),
     ({"confidence": float("nan")}, r"confidence must be finite, got nan"),
     ({"entry": float("inf")}, r"entry must be finite, got inf"),
     ({"entry": "1.1"}, r"entry must be a number or None, got '1.1'"),
     ({"horizon": 4.0}, r"horizon must be an integer or None, got 4.0"),
     ({"prompt_tokens": -1}, r"prompt_tokens must be in \[0, 2\^31 - 1\], got -1"),
     ({"completion_tokens": True}, r"completion_tokens must be an integer or None"),
     ({"valid": 1}, r"valid must be True or False, got 1"),
     ({"fallback_used": "yes"}, r"fallback_used must be True or False"),
     ({"raw_reply": b"bytes"}, r"raw_reply must be text or None, got bytes"),
     ({"action": "NONE"}, r"a valid record's action is one of \('BUY', 'SELL', 'HOLD'\)"),
     ({"stop_loss": None}, r"a valid record needs the decision fields \['stop_loss'\]"),
     ({"validation_errors": "one"}, r"validation_errors must be a list of strings"),
     ({"validation_errors": [1]}, r"validation_errors\[0\] is not a string"),
     ({"fallback_chain": [{"provider": "x"}]}, r"fallback_chain\[0\] has keys \['provider'\]"),
     ({"fallback_chain": [{"provider": "x", "outcome": "ok", "api_key": "k"}]},
      r"fallback_chain\[0\] has keys"),
     ({"fallback_chain": [{"provider": "", "outcome": "ok"}]},
      r"fallback_chain\[0\].provider must be non-empty text"),
     ({"fallback_chain": [{"provider": "x", "outcome": "ok", "attempts": -1}]},
      r"fallback_chain\[0\].attempts must be an integer >= 0")],
)  # fmt: skip
def test_bad_records_are_rejected_and_nothing_is_written(
    duckdb_url: str, bad: dict[str, object], message: str
) -> None:
    with open_store(duckdb_url) as store:
        with pytest.raises(SignalLogError, match=message):
            log_decision(store, record(**bad))
        assert read_decisions(store).empty
    assert issubclass(SignalLogError, LLMError)


def test_not_a_mapping_is_rejected(duckdb_url: str) -> None:
    with open_store(duckdb_url) as store, pytest.raises(SignalLogError, match="is a mapping"):
        log_decision(store, [("symbol", "EURUSD")])  # type: ignore[arg-type]


def _old_duckdb(url: str) -> None:
    con = duckdb.connect(url.removeprefix("duckdb:///"))
    for stmt in OLD_SETUP:
        con.execute(stmt)
    con.close()


def _old_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        for stmt in OLD_SETUP:
            con.execute(stmt)


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_store_created_before_the_new_columns_is_upgraded_on_open(
    request: pytest.FixtureRequest, engine: str
) -> None:
    url = request.getfixturevalue(f"{'duckdb' if engine == 'duckdb' else 'pg'}_url")
    (_old_duckdb if engine == "duckdb" else _old_postgres)(url)
    for _ in range(2):  # the upgrade is idempotent: a second open changes nothing
        with open_store(url) as store:
            old = read_decisions(store)
            assert len(old) == 1
    with open_store(url) as store:
        log_decision(store, record())
        out = read_decisions(store)
    assert set(NEW_COLUMNS) <= set(out.columns)
    first, second = out.iloc[0], out.iloc[1]
    assert (first["id"], first["action"], first["provider"]) == (1, "BUY", "ollama")  # kept
    assert first["confidence"] == 0.4 and first["ts"] == pd.Timestamp("2023-01-02 03:00", tz="UTC")
    assert first["validation_errors"] == [] and first["fallback_chain"] == []  # NULL -> []
    assert pd.isna(first["prompt_version"]) and pd.isna(first["prompt_tokens"])
    assert second["id"] == 2 and second["prompt_tokens"] == 512
    assert second["fallback_chain"] == record()["fallback_chain"]


def test_ddl_lists_the_upgrade_after_the_tables() -> None:
    stmts = ddl.create_statements()
    alters = [s for s in stmts if s.startswith("ALTER TABLE ml.llm_signals")]
    assert [s.split()[-2] for s in alters] == list(NEW_COLUMNS)
    assert all("ADD COLUMN IF NOT EXISTS" in s for s in alters)
    assert stmts.index(alters[0]) > max(i for i, s in enumerate(stmts) if "CREATE TABLE" in s)
