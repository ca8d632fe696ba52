"""Prompt templates: the instruction and schema in the system text, the context in the user
text, a hash that identifies exactly one prompt, and market data only."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlengine
from mlengine import datasets
from mlengine.llm.formatter import build_context, render_context
from mlengine.llm.prompts import PROMPT_VERSION, TEMPLATES, build_prompt
from mlengine.llm.schema import DecisionContext, LLMError, StrategyView, decision_schema


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


def context_at(bars: pd.DataFrame, i: int = 1000) -> DecisionContext:
    rng = np.random.default_rng(7)
    n = len(bars)
    preds = pd.DataFrame(
        {"p_up": rng.uniform(0.2, 0.8, n), "fold": 0, "regime": rng.integers(0, 3, n) * 1.0},
        index=bars.index,
    )
    ens = pd.DataFrame({"p_up": rng.uniform(0.3, 0.7, n), "w.pva": 1.0}, index=bars.index)
    return build_context(bars, strategies={"pva": preds}, ensemble=ens, ts=bars.index[i])


def test_system_has_instruction_and_schema_user_has_the_context(bars) -> None:
    ctx = context_at(bars)
    prompt = build_prompt(ctx)
    assert prompt.version == PROMPT_VERSION == "decision-v1"
    for phrase in ("BUY", "SELL", "HOLD", "ATR", "stop_loss", "take_profit", "only the data"):
        assert phrase in prompt.system
    assert "nothing else" in prompt.system and "no other text" in prompt.system
    schema_line = prompt.system.splitlines()[-1]
    assert schema_line == json.dumps(decision_schema(), sort_keys=True)
    assert json.loads(schema_line) == prompt.schema == decision_schema()
    assert render_context(ctx) in prompt.user
    assert "EURUSD" not in prompt.system  # the system text does not depend on the bar


def test_hash_is_sha256_of_version_system_user_schema(bars) -> None:
    prompt = build_prompt(context_at(bars))
    payload = json.dumps(
        [prompt.version, prompt.system, prompt.user, json.dumps(prompt.schema, sort_keys=True)],
        ensure_ascii=False,
    )
    assert prompt.hash == hashlib.sha256(payload.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", prompt.hash)


def test_same_context_same_hash(bars) -> None:
    a = build_prompt(context_at(bars))
    b = build_prompt(context_at(bars.copy()))
    assert (a.system, a.user, a.hash) == (b.system, b.user, b.hash)


def test_any_change_in_context_changes_the_hash(bars) -> None:
    ctx = context_at(bars)
    base = build_prompt(ctx).hash
    pva = ctx.strategies[0]
    recent = ctx.recent.copy()
    recent["open"] = recent["open"].to_numpy() + np.r_[0.0001, np.zeros(len(recent) - 1)]
    changes = {
        "symbol": dataclasses.replace(ctx, symbol="GBPUSD"),
        "timeframe": dataclasses.replace(ctx, timeframe="4h"),
        "ts": dataclasses.replace(ctx, ts=ctx.ts + pd.Timedelta(hours=1)),
        "last_price": dataclasses.replace(ctx, last_price=ctx.last_price + 0.0001),
        "atr": dataclasses.replace(ctx, atr=ctx.atr * 1.01),
        "recent": dataclasses.replace(ctx, recent=recent),
        "fewer recent": dataclasses.replace(ctx, recent=ctx.recent.iloc[1:]),
        "p_up": dataclasses.replace(
            ctx, strategies=(dataclasses.replace(pva, p_up=pva.p_up + 0.01),)
        ),
        "diagnostic": dataclasses.replace(
            ctx, strategies=(StrategyView(pva.name, pva.p_up, {"regime": 7.0}),)
        ),
        "strategy name": dataclasses.replace(
            ctx, strategies=(dataclasses.replace(pva, name="mrd"),)
        ),
        "ensemble_p": dataclasses.replace(ctx, ensemble_p=0.9),
        "no ensemble": dataclasses.replace(ctx, ensemble_p=None, gate_weights={}),
        "gate weights": dataclasses.replace(ctx, gate_weights={"pva": 0.5}),
    }
    hashes = {name: build_prompt(c).hash for name, c in changes.items()}
    assert base not in hashes.values()
    assert len(set(hashes.values())) == len(hashes)


def test_hash_changes_with_the_version(bars, monkeypatch) -> None:
    monkeypatch.setitem(TEMPLATES, "decision-test", TEMPLATES[PROMPT_VERSION])
    ctx = context_at(bars)
    a, b = build_prompt(ctx), build_prompt(ctx, version="decision-test")
    assert (a.system, a.user) == (b.system, b.user)  # same text ...
    assert a.hash != b.hash and b.version == "decision-test"  # ... another version


def test_unknown_version_names_the_known_ones(bars) -> None:
    with pytest.raises(LLMError, match=r"unknown prompt version 'v0'; known: \['decision-v1'\]"):
        build_prompt(context_at(bars), version="v0")


def test_prompt_holds_market_data_only(bars, monkeypatch, tmp_path) -> None:
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-api03-FAKEKEY-do-not-leak",
        "OPENAI_API_KEY": "sk-FAKE-openai-1234567890",
        "MLENGINE_DB_URL": "postgresql://trader:hunter2pw@db.internal:5432/prod",
        "MLENGINE_OLLAMA_URL": "http://10.1.2.3:11434",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    loaded = datasets.load("eurusd_1h")  # attrs carry the source file name
    assert loaded.attrs.get("source")
    prompt = build_prompt(context_at(loaded))
    text = prompt.system + "\n" + prompt.user
    for value in secrets.values():
        assert value not in text
    assert "hunter2pw" not in text and "sk-" not in text
    paths = [
        str(tmp_path),
        str(Path.cwd()),
        str(Path.home()),
        sys.prefix,
        str(Path(mlengine.__file__).parent),
        os.environ["MLENGINE_DATA_DIR"],
        str(loaded.attrs["source"]),
    ]
    for path in paths:
        assert path not in text
    assert not re.search(r"(^|[\s'\"(=])(/|[A-Za-z]:\\)[\w.-]+[/\\]", text)  # no absolute path
    assert "://" not in text  # no URL


def test_templates_are_complete() -> None:
    for version, (system, user) in TEMPLATES.items():
        assert "{schema}" in system and "{context}" in user, version
