"""Strategies: the contract every signal source follows (:mod:`.base`) and, in later
modules, the five ML strategies. Rule baselines for tests and comparisons live in
:mod:`mlengine.backtest.baselines`."""

from __future__ import annotations

from mlengine.strategies.base import (
    Context,
    Explainable,
    NotFittedError,
    PredictionError,
    Strategy,
    StrategyError,
    Summarizable,
    check_predictions,
    strategy_params,
)

__all__ = [
    "Context",
    "Explainable",
    "NotFittedError",
    "PredictionError",
    "Strategy",
    "StrategyError",
    "Summarizable",
    "check_predictions",
    "strategy_params",
]
