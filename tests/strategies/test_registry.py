from __future__ import annotations

import pytest

from mlengine.backtest.baselines import SMACrossover
from mlengine.strategies import registry
from mlengine.strategies.base import StrategyError


def test_baselines_are_registered() -> None:
    assert {"buy_and_hold", "sma_crossover", "tsmom"} <= set(registry.names())
    assert registry.get("sma_crossover") is SMACrossover


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(StrategyError, match=r"unknown strategy 'nope'; known: .*sma_crossover"):
        registry.get("nope")


def test_create_passes_params_and_skips_seed_for_rule_strategies() -> None:
    strategy = registry.create("sma_crossover", seed=3, fast=5, slow=20)
    assert isinstance(strategy, SMACrossover)
    assert (strategy.params.fast, strategy.params.slow) == (5, 20)


def test_a_name_is_taken_once() -> None:
    class Impostor(SMACrossover):
        name = "sma_crossover"

    with pytest.raises(StrategyError, match="taken by"):
        registry.register(Impostor)


def test_a_strategy_needs_a_name_and_the_contract() -> None:
    class Nameless:
        name = ""

    class NoLoad:
        name = "no_load"

        def fit(self) -> None: ...

    with pytest.raises(StrategyError, match="non-empty name"):
        registry.register(Nameless)
    with pytest.raises(StrategyError, match="needs predict_proba"):
        registry.register(NoLoad)
