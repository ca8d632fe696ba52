"""Backtesting: a compiled engine, costs and sizing, metrics, statistical validity.

Start with :func:`mlengine.backtest.engine.run_backtest`. The names below are imported
lazily, so that ``import mlengine.backtest.metrics`` does not load numba.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlengine.backtest.costs import CostModel
    from mlengine.backtest.engine import (
        DEFAULT_COSTS,
        BacktestConfig,
        BacktestInputError,
        BacktestResult,
        run_backtest,
    )
    from mlengine.backtest.sizing import FixedFraction, Kelly, VolatilityTarget

_EXPORTS = {
    "BacktestConfig": "engine",
    "BacktestInputError": "engine",
    "BacktestResult": "engine",
    "DEFAULT_COSTS": "engine",
    "run_backtest": "engine",
    "CostModel": "costs",
    "FixedFraction": "sizing",
    "Kelly": "sizing",
    "VolatilityTarget": "sizing",
}

__all__ = [
    "DEFAULT_COSTS",
    "BacktestConfig",
    "BacktestInputError",
    "BacktestResult",
    "CostModel",
    "FixedFraction",
    "Kelly",
    "VolatilityTarget",
    "run_backtest",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
