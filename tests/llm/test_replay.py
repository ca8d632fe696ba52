"""Decisions at the ensemble's entries, logged, then replayed in the backtester without the
model: order intents from the log, and the ablation ensemble alone vs ensemble + decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlengine import datasets
from mlengine.backtest.signals import HysteresisSignal
from mlengine.data.store import open_store
from mlengine.llm.decision import DecisionMaker
from mlengine.llm.replay import ablation, decide_entries, decision_intents, entry_bars
from mlengine.llm.rules import RulesProvider
from mlengine.llm.schema import DecisionContext, LLMError, Prompt, Reply
from mlengine.llm.signal_log import read_decisions

RULE = HysteresisSignal(enter=0.03, exit=0.0)


class Forbidden:
    """A provider that must not be asked (replay never calls a model)."""

    name = "forbidden"
    model = "none"

    def complete(self, prompt: Prompt, context: DecisionContext) -> Reply:
        raise AssertionError("replay asked a provider")


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame]:
    """Real EURUSD bars, a momentum 'strategy' and an ensemble over its last 400 bars."""
    bars = datasets.load("eurusd_1h").iloc[-900:]
    momentum = np.log(bars["close"]).diff(12)
    p_up = (0.5 + np.tanh(momentum / momentum.std()) * 0.1).clip(0, 1)
    strategy = pd.DataFrame({"p_up": p_up, "trend": np.sign(momentum)}, index=bars.index)
    ensemble = pd.DataFrame({"p_up": p_up, "w.momentum": 1.0}, index=bars.index).iloc[-400:]
    return bars, {"momentum": strategy.iloc[24:]}, ensemble


def test_entry_bars_are_openings_and_turns() -> None:
    idx = pd.date_range("2024-01-01", periods=8, freq="h", tz="UTC")
    position = pd.Series([0, 1, 1, 0, -1, 1, 1, 0], index=idx, dtype=float)
    assert list(entry_bars(position)) == [idx[1], idx[4], idx[5]]


def test_decisions_at_entries_are_logged_and_replayed(
    market: tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame], duckdb_url: str
) -> None:
    bars, strategies, ensemble = market
    maker = DecisionMaker([RulesProvider()])
    with open_store(duckdb_url) as store:
        records = decide_entries(
            maker, bars, strategies=strategies, ensemble=ensemble, to_signal=RULE,
            store=store, progress=False,
        )  # fmt: skip
        logged = read_decisions(store, symbol="EURUSD", timeframe="1h")
    position = pd.Series(RULE(ensemble, bars.loc[ensemble.index]), index=ensemble.index)
    entries = entry_bars(position)
    assert len(entries) >= 5
    assert [r.context.ts for r in records] == list(entries)
    assert len(logged) == len(records) and logged["valid"].all()
    # every context saw bars up to its decision bar only
    assert all(r.context.recent.index[-1] == r.context.ts for r in records)

    results = ablation(bars, ensemble, logged, to_signal=RULE)
    alone, filtered = results["ensemble"], results["ensemble + llm"]
    assert alone.equity.index.equals(filtered.equity.index)
    trades = filtered.trades
    taken = logged[logged["action"].isin(["BUY", "SELL"])]
    assert 0 < len(trades) <= len(taken)
    # a replayed trade opens at the bar after its decision, on the decided side
    first = taken.iloc[0]
    opened = trades.iloc[0]
    decided = int(np.flatnonzero(bars.index == first["ts"])[0])
    assert opened["entry_time"] == bars.index[decided + 1]
    assert np.sign(opened["side"]) == (1 if first["action"] == "BUY" else -1)


def test_replay_needs_no_provider(
    market: tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame],
) -> None:
    bars, _, ensemble = market
    ts = ensemble.index[10]
    last = float(bars["close"].loc[ts])
    decisions = pd.DataFrame(
        {
            "ts": [ts, ts, ensemble.index[50]],
            "action": ["SELL", "BUY", "HOLD"],
            "stop_loss": [last + 0.002, last - 0.002, last - 0.002],
            "take_profit": [last - 0.004, last + 0.004, last + 0.004],
            "horizon": [4, 6, 4],
            "valid": [True, True, True],
        }
    )
    DecisionMaker([Forbidden()])  # a maker may exist; nothing asks it
    results = ablation(bars, ensemble, decisions, to_signal=RULE)
    trades = results["ensemble + llm"].trades
    assert len(trades) == 1 and trades.iloc[0]["side"] > 0, "the last decision on a bar counts"
    assert trades.iloc[0]["bars_held"] <= 6


def test_decision_intents_map_actions_and_refuse_bad_rows() -> None:
    bars = datasets.load("eurusd_1h").iloc[:20]
    idx = bars.index
    decisions = pd.DataFrame(
        {
            "ts": [idx[2], idx[5], idx[7], idx[9]],
            "action": ["BUY", "SELL", "HOLD", "BUY"],
            "stop_loss": [1.0, 1.2, 1.0, 1.0],
            "take_profit": [1.2, 1.0, 1.2, 1.2],
            "horizon": [3, 4, 2, 5],
            "valid": [True, True, True, False],
        }
    )
    intents = decision_intents(decisions, bars)
    assert intents.loc[idx[2], "side"] == 1 and intents.loc[idx[5], "side"] == -1
    assert intents.loc[idx[5], "stop_loss"] == 1.2 and intents.loc[idx[2], "max_bars"] == 3
    assert (intents.drop(index=[idx[2], idx[5]])["side"] == 0).all(), "HOLD and invalid: nothing"
    with pytest.raises(LLMError, match="lack the column"):
        decision_intents(decisions.drop(columns="horizon"), bars)
    late = decisions.assign(ts=[idx[2], idx[5], idx[7], idx[9] + pd.Timedelta("30D")], valid=True)
    with pytest.raises(LLMError, match="is not on a bar of EURUSD"):
        decision_intents(late, bars)
    twice = decisions.assign(ts=[idx[2], idx[2], idx[7], idx[9]])
    with pytest.raises(LLMError, match="two decisions at"):
        decision_intents(twice, bars)
