"""Risk checks: each rule passes at its limit and fails just past it; a context without a
usable ATR fails the price rules with a message instead of dividing by zero; a decision built
at ATR multiples inside the limits always passes."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.data.schema import MLEngineError
from mlengine.llm.risk import RiskLimits, RiskLimitsError, check_decision
from mlengine.llm.schema import Decision, DecisionContext, StrategyView

# Dyadic numbers: every price built below as LAST + k * ATR is exact, so "at the limit"
# is exactly at it. EURUSD-like scale.
LAST = 1.25
ATR = 2.0**-10
PAST = 1e-6  # ATR units beyond a limit
LIMITS = RiskLimits()


@pytest.fixture(scope="module")
def recent() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[-12:]


def _context(recent: pd.DataFrame, **changes: Any) -> DecisionContext:
    context = DecisionContext(
        symbol="EURUSD",
        timeframe="1h",
        ts=recent.index[-1],
        last_price=LAST,
        atr=ATR,
        recent=recent,
        strategies=(StrategyView("trend", 0.6, {"regime": 1.0}), StrategyView("swing", 0.55)),
        ensemble_p=0.6,
        gate_weights={"trend": 0.7, "swing": 0.3},
    )
    return replace(context, **changes)


def _buy(entry: float = LAST, stop_atr: float = 1.0, target_atr: float = 2.0) -> Decision:
    return Decision(
        action="BUY",
        confidence=0.6,
        entry=entry,
        stop_loss=entry - stop_atr * ATR,
        take_profit=entry + target_atr * ATR,
        horizon=4,
        reasoning="test",
    )


def _sell(entry: float = LAST, stop_atr: float = 1.0, target_atr: float = 2.0) -> Decision:
    return Decision(
        action="SELL",
        confidence=0.6,
        entry=entry,
        stop_loss=entry + stop_atr * ATR,
        take_profit=entry - target_atr * ATR,
        horizon=4,
        reasoning="test",
    )


def _hold(entry: float, stop: float, target: float) -> Decision:
    return Decision(
        action="HOLD",
        confidence=0.5,
        entry=entry,
        stop_loss=stop,
        take_profit=target,
        horizon=4,
        reasoning="test",
    )


def test_valid_buy_and_sell_pass(recent: pd.DataFrame) -> None:
    assert check_decision(_buy(), _context(recent)) == []
    assert check_decision(_sell(), _context(recent, ensemble_p=0.4)) == []
    assert check_decision(_buy(), _context(recent, ensemble_p=None)) == []


# (id, decision at the limit, decision just past it, ensemble_p, message fragment)
BOUNDARIES = [
    (
        "entry_above_last",
        _buy(entry=LAST + 0.5 * ATR),
        _buy(entry=LAST + (0.5 + PAST) * ATR),
        0.6,
        "entry distance: |entry - last_price|",
    ),
    (
        "entry_below_last_sell",
        _sell(entry=LAST - 0.5 * ATR),
        _sell(entry=LAST - (0.5 + PAST) * ATR),
        0.4,
        "entry distance: |entry - last_price|",
    ),
    (
        "stop_too_close",
        _buy(stop_atr=0.25),
        _buy(stop_atr=0.25 - PAST),
        0.6,
        "stop distance: |entry - stop_loss|",
    ),
    (
        "stop_too_far",
        _buy(stop_atr=5.0, target_atr=6.0),
        _buy(stop_atr=5.0 + PAST, target_atr=6.0),
        0.6,
        "stop distance: |entry - stop_loss|",
    ),
    (
        "stop_too_far_sell",
        _sell(stop_atr=5.0, target_atr=6.0),
        _sell(stop_atr=5.0 + PAST, target_atr=6.0),
        0.4,
        "stop distance",
    ),
    (
        "target_too_far",
        _buy(target_atr=10.0),
        _buy(target_atr=10.0 + PAST),
        0.6,
        "target distance: |take_profit - entry|",
    ),
    (
        "target_too_far_sell",
        _sell(target_atr=10.0),
        _sell(target_atr=10.0 + PAST),
        0.4,
        "target distance",
    ),
    (
        "reward_risk",
        _buy(stop_atr=2.0, target_atr=2.0),
        _buy(stop_atr=2.0, target_atr=2.0 - PAST),
        0.6,
        "reward/risk: |take_profit - entry| / |entry - stop_loss|",
    ),
    (
        "reward_risk_sell",
        _sell(stop_atr=2.0, target_atr=2.0),
        _sell(stop_atr=2.0, target_atr=2.0 - PAST),
        0.4,
        "reward/risk",
    ),
]


@pytest.mark.parametrize(
    ("at_limit", "past_limit", "ensemble_p", "fragment"),
    [b[1:] for b in BOUNDARIES],
    ids=[b[0] for b in BOUNDARIES],
)
def test_rule_passes_at_its_limit_and_fails_just_past(
    recent: pd.DataFrame, at_limit: Decision, past_limit: Decision, ensemble_p: float, fragment: str
) -> None:
    context = _context(recent, ensemble_p=ensemble_p)
    assert check_decision(at_limit, context) == []
    problems = check_decision(past_limit, context)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_buy_against_a_bearish_ensemble(recent: pd.DataFrame) -> None:
    limit = 0.5 - LIMITS.against_ensemble
    assert check_decision(_buy(), _context(recent, ensemble_p=limit)) == []
    problems = check_decision(_buy(), _context(recent, ensemble_p=limit - PAST))
    assert len(problems) == 1
    assert problems[0].startswith("against ensemble: BUY while ensemble_p = 0.349999")


def test_sell_against_a_bullish_ensemble(recent: pd.DataFrame) -> None:
    limit = 0.5 + LIMITS.against_ensemble
    assert check_decision(_sell(), _context(recent, ensemble_p=limit)) == []
    problems = check_decision(_sell(), _context(recent, ensemble_p=limit + PAST))
    assert len(problems) == 1
    assert problems[0].startswith("against ensemble: SELL while ensemble_p = 0.650001")


@pytest.mark.parametrize("ensemble_p", [None, math.nan], ids=["none", "nan"])
def test_no_ensemble_means_no_ensemble_check(recent: pd.DataFrame, ensemble_p: Any) -> None:
    assert check_decision(_buy(), _context(recent, ensemble_p=ensemble_p)) == []
    assert check_decision(_sell(), _context(recent, ensemble_p=ensemble_p)) == []


def test_buy_with_prices_in_the_wrong_order(recent: pd.DataFrame) -> None:
    decision = Decision(
        action="BUY",
        confidence=0.6,
        entry=1.1,
        stop_loss=1.2,
        take_profit=1.3,
        horizon=4,
        reasoning="x",
    )
    context = _context(recent, last_price=1.1, atr=0.1)
    problems = check_decision(decision, context)
    assert problems == ["order: BUY needs stop_loss < entry < take_profit: 1.2 / 1.1 / 1.3"]


def test_sell_with_prices_in_the_wrong_order(recent: pd.DataFrame) -> None:
    decision = _sell(stop_atr=-1.0, target_atr=-2.0)  # stop below, target above entry
    problems = check_decision(decision, _context(recent, ensemble_p=0.4))
    assert len(problems) == 1
    assert problems[0].startswith("order: SELL needs take_profit < entry < stop_loss: 1.251953125")


def test_stop_at_entry_breaks_order_and_reward_risk_without_dividing(recent: pd.DataFrame) -> None:
    problems = check_decision(_buy(stop_atr=0.0), _context(recent))
    assert any(p.startswith("order: BUY needs") for p in problems)
    assert any(p.startswith("reward/risk: undefined, stop_loss equals entry") for p in problems)
    assert any(p.startswith("stop distance") for p in problems)


def test_every_broken_rule_is_reported(recent: pd.DataFrame) -> None:
    decision = _buy(entry=LAST + 3 * ATR, stop_atr=-20.0, target_atr=40.0)
    problems = check_decision(decision, _context(recent, ensemble_p=0.1))
    rules = [p.split(":")[0] for p in problems]
    assert rules == [
        "entry distance",
        "order",
        "stop distance",
        "target distance",
        "against ensemble",
    ]
    # reward/risk is 40 / 20 = 2: it passes the default floor, not a floor of 2.5
    stricter = check_decision(
        decision, _context(recent, ensemble_p=0.1), RiskLimits(min_reward_risk=2.5)
    )
    assert [p.split(":")[0] for p in stricter] == [*rules[:4], "reward/risk", rules[4]]
    assert "= 0.0390625 / 0.01953125 = 2 < 2.5" in stricter[4]


def test_messages_name_the_numbers(recent: pd.DataFrame) -> None:
    problems = check_decision(_buy(entry=LAST + ATR), _context(recent))
    assert problems == [
        "entry distance: |entry - last_price| = |1.250976562 - 1.25| = 1 ATR > 0.5 ATR "
        "(atr 0.0009765625)"
    ]


def test_hold_checks_only_the_entry_distance(recent: pd.DataFrame) -> None:
    context = _context(recent, ensemble_p=0.99)
    # stop above entry, target 1000 ATR away: not orders, not checked
    nonsense = _hold(LAST + 0.5 * ATR, LAST + 2 * ATR, LAST + 1000 * ATR)
    assert check_decision(nonsense, context) == []
    far = _hold(LAST - (0.5 + PAST) * ATR, LAST, LAST)
    problems = check_decision(far, context)
    assert len(problems) == 1
    assert problems[0].startswith("entry distance")


@pytest.mark.parametrize(
    "atr", [0.0, -0.001, math.nan, math.inf], ids=["zero", "neg", "nan", "inf"]
)
def test_unusable_atr_fails_every_price_rule(recent: pd.DataFrame, atr: float) -> None:
    context = _context(recent, atr=atr)
    problems = check_decision(_buy(), context)
    for rule in ("entry distance", "stop distance", "target distance"):
        matching = [p for p in problems if p.startswith(f"{rule}: cannot check, context atr")]
        assert len(matching) == 1
        assert "must be finite and > 0" in matching[0]
    assert check_decision(_hold(LAST, LAST, LAST), context) == [
        f"entry distance: cannot check, context atr is {atr!r} (must be finite and > 0)"
    ]


def test_unusable_last_price_fails_the_entry_distance(recent: pd.DataFrame) -> None:
    problems = check_decision(_hold(LAST, LAST, LAST), _context(recent, last_price=math.nan))
    assert problems == [
        "entry distance: cannot check, context last_price is nan (must be finite and > 0)"
    ]


def test_custom_limits_are_used(recent: pd.DataFrame) -> None:
    loose = RiskLimits(max_entry_distance_atr=2.0, min_reward_risk=0.5)
    decision = _buy(entry=LAST + 1.5 * ATR, stop_atr=2.0, target_atr=1.0)
    assert len(check_decision(decision, _context(recent))) == 2
    assert check_decision(decision, _context(recent), loose) == []


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"max_stop_atr": -1.0}, "RiskLimits.max_stop_atr must be finite and >= 0"),
        ({"min_reward_risk": math.nan}, "RiskLimits.min_reward_risk must be finite"),
        ({"max_target_atr": math.inf}, "RiskLimits.max_target_atr must be finite"),
        ({"max_entry_distance_atr": True}, "RiskLimits.max_entry_distance_atr must be a number"),
        ({"min_stop_atr": "0.25"}, "RiskLimits.min_stop_atr must be a number"),
        ({"min_stop_atr": 6.0}, "min_stop_atr (6.0) exceeds max_stop_atr (5.0)"),
        ({"against_ensemble": 0.6}, "RiskLimits.against_ensemble must be <= 0.5"),
    ],
    ids=["negative", "nan", "inf", "bool", "string", "min_over_max", "against_over_half"],
)
def test_bad_limits_are_rejected(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RiskLimitsError) as caught:
        RiskLimits(**changes)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, MLEngineError)
    assert isinstance(caught.value, ValueError)


@st.composite
def _built_at_atr_multiples(draw: st.DrawFn) -> tuple[str, float, float, float, float]:
    last = draw(st.floats(min_value=1e-3, max_value=1e6))
    atr = last * draw(st.floats(min_value=1e-4, max_value=0.1))
    k1 = draw(st.floats(min_value=0.25, max_value=5.0))
    k2 = draw(st.floats(min_value=k1, max_value=10.0))
    action = draw(st.sampled_from(["BUY", "SELL"]))
    return action, last, atr, k1, k2


@settings(max_examples=300, deadline=None)
@given(
    built=_built_at_atr_multiples(),
    ensemble_p=st.one_of(st.none(), st.floats(min_value=0.35, max_value=0.65)),
)
def test_decision_built_at_atr_multiples_passes(
    recent: pd.DataFrame, built: tuple[str, float, float, float, float], ensemble_p: float | None
) -> None:
    action, last, atr, k1, k2 = built
    sign = 1.0 if action == "BUY" else -1.0
    decision = Decision(
        action=action,  # type: ignore[arg-type]
        confidence=0.6,
        entry=last,
        stop_loss=last - sign * k1 * atr,
        take_profit=last + sign * k2 * atr,
        horizon=4,
        reasoning="built",
    )
    context = _context(recent, last_price=last, atr=atr, ensemble_p=ensemble_p)
    assert check_decision(decision, context) == []
