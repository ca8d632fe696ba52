"""The rules provider: a deterministic vote, a complete decision for every probability, and
orders that pass the risk checks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.llm.formatter import build_context
from mlengine.llm.parser import parse_reply
from mlengine.llm.prompts import build_prompt
from mlengine.llm.risk import RiskLimits, check_decision
from mlengine.llm.rules import RulesProvider, vote
from mlengine.llm.schema import (
    Decision,
    DecisionContext,
    Provider,
    ProviderError,
    Reply,
    StrategyView,
)


def make_context(
    p: float | None,
    *,
    price: float = 1.1,
    atr: float = 0.002,
    strategies: tuple[StrategyView, ...] = (StrategyView("pva", 0.5),),
    weights: dict[str, float] | None = None,
) -> DecisionContext:
    idx = pd.date_range("2021-01-01", periods=3, freq="h", tz="UTC")
    recent = pd.DataFrame(
        {"open": price, "high": price, "low": price, "close": price, "volume": 1.0}, index=idx
    )
    return DecisionContext(
        symbol="EURUSD",
        timeframe="1h",
        ts=idx[-1],
        last_price=price,
        atr=atr,
        recent=recent,
        strategies=strategies,
        ensemble_p=p,
        gate_weights=weights or {},
    )


def reply_for(provider: RulesProvider, ctx: DecisionContext) -> Reply:
    return provider.complete(build_prompt(ctx), ctx)


@pytest.mark.parametrize(
    ("p", "action", "stop", "target"),
    [(0.7, "BUY", 1.1 - 0.003, 1.1 + 0.006), (0.3, "SELL", 1.1 + 0.003, 1.1 - 0.006),
     (0.52, "HOLD", 1.1 - 0.003, 1.1 + 0.006)],
)  # fmt: skip
def test_actions_prices_and_confidence(p: float, action: str, stop: float, target: float) -> None:
    ctx = make_context(p)
    reply = reply_for(RulesProvider(), ctx)
    decision = parse_reply(reply.text)
    assert reply.text == decision.model_dump_json()
    assert decision.action == action
    assert decision.entry == 1.1
    assert decision.stop_loss == pytest.approx(stop, abs=1e-12)
    assert decision.take_profit == pytest.approx(target, abs=1e-12)
    assert decision.confidence == pytest.approx(abs(p - 0.5) * 2)
    assert decision.horizon == 4
    assert f"ensemble p_up {p:.4g}" in decision.reasoning and action in decision.reasoning
    assert (reply.provider, reply.model) == ("rules", "rules-v1")
    assert reply.latency_ms >= 0 and reply.prompt_tokens is None


def test_configured_margin_multiples_and_horizon() -> None:
    rules = RulesProvider(margin=0.2, stop_atr=1.0, target_atr=2.5, horizon=12)
    assert rules.decide(make_context(0.65)).action == "HOLD"  # within 0.5 +/- 0.2
    d = rules.decide(make_context(0.75, atr=0.01))
    assert d.action == "BUY" and d.horizon == 12
    assert (d.entry - d.stop_loss, d.take_profit - d.entry) == pytest.approx((0.01, 0.025))


def test_vote_without_ensemble_is_gate_weighted_else_equal_weighted() -> None:
    views = (StrategyView("mrd", 0.9), StrategyView("pva", 0.3))
    equal = make_context(None, strategies=views)
    assert vote(equal) == (pytest.approx(0.6), "mean p_up of 2 strategies")
    gated = make_context(None, strategies=views, weights={"mrd": 0.3, "pva": 0.7})
    assert vote(gated) == (pytest.approx(0.48), "gate-weighted p_up")
    zero = make_context(None, strategies=views, weights={"other": 1.0})  # no weight applies
    assert vote(zero)[0] == pytest.approx(0.6)
    assert RulesProvider().decide(equal).action == "BUY"
    assert RulesProvider().decide(gated).action == "HOLD"
    with pytest.raises(ProviderError, match="no ensemble and no strategy"):
        RulesProvider().decide(make_context(None, strategies=()))


def test_is_a_provider_and_deterministic() -> None:
    rules = RulesProvider()
    assert isinstance(rules, Provider)
    ctx = make_context(0.61)
    assert reply_for(rules, ctx).text == reply_for(RulesProvider(), ctx).text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"margin": 0.5}, r"margin must be in \[0, 0.5\), got 0.5"),
     ({"margin": float("nan")}, "margin must be"),
     ({"stop_atr": 0}, "stop_atr must be a finite number > 0, got 0"),
     ({"target_atr": float("inf")}, "target_atr must be a finite number > 0"),
     ({"horizon": 0}, r"horizon must be an integer in \[1, 10000\], got 0"),
     ({"horizon": 2.5}, "horizon must be an integer")],
)  # fmt: skip
def test_bad_parameters_are_named(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        RulesProvider(**kwargs)  # type: ignore[arg-type]


def test_bad_context_values_are_named() -> None:
    with pytest.raises(ProviderError, match="ATR nan is not a finite number > 0"):
        RulesProvider().decide(make_context(0.7, atr=float("nan")))
    with pytest.raises(ProviderError, match=r"last price 0\.0 is not a finite price > 0"):
        RulesProvider().decide(make_context(0.7, price=0.0))
    with pytest.raises(ProviderError, match=r"no valid SELL at last price 1.0 with ATR 0.5"):
        RulesProvider().decide(make_context(0.1, price=1.0, atr=0.5))  # target 1 - 1.5 < 0


def _expected_action(p: float, margin: float) -> str:
    if p > 0.5 + margin:
        return "BUY"
    if p < 0.5 - margin:
        return "SELL"
    return "HOLD"


@settings(max_examples=300, deadline=None)
@given(
    p=st.floats(0.0, 1.0),
    price=st.floats(1e-6, 1e9, allow_nan=False, allow_infinity=False),
    atr=st.floats(1e-12, 1e9, allow_nan=False, allow_infinity=False),
    margin=st.sampled_from([0.0, 0.05, 0.1, 0.3]),
)
def test_property_every_probability_gives_the_documented_decision(
    p: float, price: float, atr: float, margin: float
) -> None:
    rules = RulesProvider(margin=margin)
    ctx = make_context(p, price=price, atr=atr)
    action = _expected_action(p, margin)
    downside = rules.target_atr * atr if action == "SELL" else rules.stop_atr * atr
    upside = rules.target_atr * atr if action != "SELL" else rules.stop_atr * atr
    if price - downside <= 0 or price + upside > 1e12:
        with pytest.raises(ProviderError, match=f"no valid {action} at last price"):
            reply_for(rules, ctx)
        return
    decision = Decision.model_validate_json(reply_for(rules, ctx).text)
    assert decision.action == action
    assert decision.entry == price
    assert decision.confidence == pytest.approx(min(abs(p - 0.5) * 2, 1.0))
    if action == "SELL":
        assert decision.take_profit <= price <= decision.stop_loss
    else:
        assert decision.stop_loss <= price <= decision.take_profit


@settings(max_examples=200, deadline=None)
@given(
    p=st.floats(0.0, 1.0),
    price=st.floats(1e-3, 1e6),
    rel_atr=st.floats(1e-5, 0.05),
    ensemble=st.booleans(),
)
def test_property_rules_decisions_pass_the_default_risk_checks(
    p: float, price: float, rel_atr: float, ensemble: bool
) -> None:
    views = (StrategyView("pva", p),)
    ctx = make_context(p if ensemble else None, price=price, atr=price * rel_atr, strategies=views)
    decision = parse_reply(reply_for(RulesProvider(), ctx).text)
    assert check_decision(decision, ctx, RiskLimits()) == []


def test_real_eurusd_buy_sell_hold_pass_the_risk_checks() -> None:
    bars = datasets.load("eurusd_1h")
    preds = pd.DataFrame({"p_up": 0.5}, index=bars.index)
    seen = set()
    for i, p in zip((100, 2000, 4000, 6000), (0.8, 0.2, 0.5, 0.56), strict=True):
        ens = pd.DataFrame({"p_up": p, "w.pva": 1.0}, index=bars.index)
        ctx = build_context(bars, strategies={"pva": preds}, ensemble=ens, ts=bars.index[i])
        decision = parse_reply(reply_for(RulesProvider(), ctx).text)
        seen.add(decision.action)
        assert check_decision(decision, ctx) == [], (i, decision)
        assert math.isclose(decision.entry, bars["close"].iloc[i])
        assert f"{bars['close'].iloc[i]:.5f}" in decision.reasoning  # price precision
    assert seen == {"BUY", "SELL", "HOLD"}
    assert np.isfinite(ctx.atr)
