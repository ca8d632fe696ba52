"""The decision flow: providers in turn, retries with backoff, the circuit breaker, strict
parsing and risk checks between a reply and a decision, and the log row."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pytest

from mlengine import datasets
from mlengine.data.store import open_store
from mlengine.llm.decision import CircuitBreaker, DecisionMaker, make_chain
from mlengine.llm.prompts import build_prompt
from mlengine.llm.rules import RulesProvider
from mlengine.llm.schema import (
    DecisionContext,
    LLMError,
    Prompt,
    ProviderError,
    Reply,
    StrategyView,
)
from mlengine.llm.signal_log import log_decision, read_decisions


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A provider answering from a script: text, or an exception to raise."""

    def __init__(self, name: str, *answers: str | Exception) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.answers = list(answers)
        self.calls = 0

    def complete(self, prompt: Prompt, context: DecisionContext) -> Reply:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return Reply(answer, self.name, self.model, latency_ms=1.0, prompt_tokens=10)


@pytest.fixture(scope="module")
def context() -> DecisionContext:
    bars = datasets.load("eurusd_1h").iloc[-12:]
    last = float(bars["close"].iloc[-1])
    return DecisionContext(
        symbol="EURUSD",
        timeframe="1h",
        ts=bars.index[-1],
        last_price=last,
        atr=0.0012,
        recent=bars,
        strategies=(StrategyView("msa", 0.62, {"trend_state": 1.0}),),
        ensemble_p=0.6,
        gate_weights={"msa": 1.0},
    )


def _decision(context: DecisionContext, action: str = "BUY", **kw: float) -> str:
    last, atr = context.last_price, context.atr
    sign = 1.0 if action == "BUY" else -1.0
    body = {
        "action": action,
        "confidence": 0.6,
        "entry": last,
        "stop_loss": last - sign * 1.5 * atr,
        "take_profit": last + sign * 3.0 * atr,
        "horizon": 4,
        "reasoning": "trend and ensemble agree",
    } | kw
    return json.dumps(body)


def _maker(*providers: Scripted | RulesProvider, **kw: object) -> DecisionMaker:
    sleeps: list[float] = []
    maker = DecisionMaker(list(providers), sleep=sleeps.append, **kw)  # type: ignore[arg-type]
    maker.sleeps = sleeps  # type: ignore[attr-defined]
    return maker


def test_first_valid_answer_wins(context: DecisionContext) -> None:
    first = Scripted("model", _decision(context))
    rules = RulesProvider()
    record = _maker(first, rules).decide(context)
    assert record.valid and record.provider == "model" and not record.fallback_used
    assert [s.outcome for s in record.chain] == ["ok"]
    assert record.decision is not None and record.decision.action == "BUY"
    assert record.prompt.hash == build_prompt(context).hash


def test_unavailable_provider_is_retried_with_backoff(context: DecisionContext) -> None:
    down = ProviderError("model: connection refused")
    flaky = Scripted("model", down, down, _decision(context))
    maker = _maker(flaky, retries=2, backoff=0.5)
    record = maker.decide(context)
    assert record.valid and record.chain[0].attempts == 3
    assert maker.sleeps == [0.5, 1.0]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("reply", "outcome", "reason"),
    [
        (ProviderError("model: timed out after 30 s"), "unavailable", "timed out"),
        ("I think you should buy.", "unparseable", ""),
        ('{"action": "BUY", "confidence": 0.6', "unparseable", ""),
        ("STOP_ABOVE", "rejected", "stop_loss < entry < take_profit"),
        ("FAR_ENTRY", "rejected", "entry"),
    ],
)
def test_a_bad_turn_falls_back_to_the_rules(
    context: DecisionContext, reply: str | Exception, outcome: str, reason: str
) -> None:
    if reply == "STOP_ABOVE":
        reply = _decision(context, stop_loss=context.last_price + context.atr)
    elif reply == "FAR_ENTRY":
        reply = _decision(context, entry=context.last_price + 20 * context.atr)
    bad = Scripted("model", reply)
    record = _maker(bad, RulesProvider(), retries=0).decide(context)
    assert record.valid and record.provider == "rules" and record.fallback_used
    assert [s.outcome for s in record.chain] == [outcome, "ok"]
    assert reason in record.chain[0].reason
    assert bad.calls == 1, "a reply that was given is never asked for again"
    if outcome != "unavailable":
        assert record.validation_errors and record.validation_errors[0].startswith("model: ")


def test_when_every_provider_fails_there_is_no_decision(context: DecisionContext) -> None:
    down = ProviderError("connection refused")
    record = _maker(Scripted("a", "nonsense"), Scripted("b", down)).decide(context)
    assert not record.valid and record.decision is None
    row = record.to_log()
    assert row["action"] == "NONE" and row["valid"] is False and row["entry"] is None
    assert row["error"] == "b: connection refused"
    assert [s["outcome"] for s in row["fallback_chain"]] == ["unparseable", "unavailable"]


def test_the_circuit_opens_after_repeated_failures_and_half_opens(
    context: DecisionContext,
) -> None:
    clock = Clock()
    down = Scripted("model", ProviderError("model: down"))
    maker = _maker(
        down, RulesProvider(), retries=0, breaker_failures=2, breaker_cooldown=60.0, clock=clock
    )
    for _ in range(2):
        assert maker.decide(context).chain[0].outcome == "unavailable"
    skipped = maker.decide(context)
    assert skipped.chain[0].outcome == "circuit_open" and down.calls == 2
    assert skipped.valid and skipped.provider == "rules"
    clock.now = 61.0
    down.answers = [_decision(context)]
    again = maker.decide(context)
    assert again.provider == "model" and down.calls == 3
    assert maker.breakers["model"].state == "closed"


def test_circuit_breaker_states() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown=10.0, clock=clock)
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 10.0
    assert breaker.state == "half_open" and breaker.allow()
    breaker.failure()  # the trial call failed: open again for a full cooldown
    assert breaker.state == "open"
    clock.now = 20.0
    breaker.success()
    assert breaker.state == "closed"
    with pytest.raises(LLMError, match="failures >= 1"):
        CircuitBreaker(failures=0)


def test_the_log_row_round_trips_through_the_store(
    context: DecisionContext, duckdb_url: str
) -> None:
    record = _maker(Scripted("model", "```json\nnot json\n```"), RulesProvider()).decide(context)
    with open_store(duckdb_url) as store:
        log_decision(store, record.to_log())
        rows = read_decisions(store, symbol="EURUSD", timeframe="1h")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["provider"] == "rules" and bool(row["valid"]) and bool(row["fallback_used"])
    assert row["prompt_hash"] == record.prompt.hash and row["prompt_version"]
    assert [s["outcome"] for s in row["fallback_chain"]] == ["unparseable", "ok"]
    assert row["validation_errors"] and row["validation_errors"][0].startswith("model: ")
    assert pd.Timestamp(row["ts"]) == context.ts


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no provider"),
        ("rules,magic", "unknown provider 'magic'"),
        ("rules,rules", "appears twice"),
    ],
)
def test_bad_chains_are_refused(spec: str, message: str) -> None:
    with pytest.raises(LLMError, match=message):
        make_chain(spec)


def test_providers_must_follow_the_interface() -> None:
    with pytest.raises(LLMError, match="at least one provider"):
        DecisionMaker([])
    not_a_provider: Callable[[], None] = lambda: None  # noqa: E731
    with pytest.raises(LLMError, match="is not a provider"):
        DecisionMaker([not_a_provider])  # type: ignore[list-item]


def test_no_hostile_reply_becomes_a_logged_decision(
    context: DecisionContext, duckdb_url: str
) -> None:
    from tests.llm.test_parser import HOSTILE

    replies = [reply for _, reply, _ in HOSTILE if isinstance(reply, str)]
    replies.append("x" * 1_000_000)
    assert len(replies) >= 20
    maker = _maker(Scripted("model", *replies), retries=0, breaker_failures=10**6)
    with open_store(duckdb_url) as store:
        for _ in replies:
            record = maker.decide(context)
            assert not record.valid and record.decision is None
            log_decision(store, record.to_log())
        logged = read_decisions(store)
    assert len(logged) == len(replies)
    assert not logged["valid"].any() and set(logged["action"]) == {"NONE"}
    assert logged["entry"].isna().all() and logged["stop_loss"].isna().all()
    # the rejected reply is kept for diagnosis, capped
    assert logged["raw_reply"].str.len().max() <= 4100
    assert (logged["provider"] == "none").all() and logged["error"].str.startswith("model: ").all()
