"""Runs of the pipeline. So far: one registered strategy on one asset, end to end.

:func:`evaluate` — strategies side by side on the same walk-forward folds and costs.

:func:`train_strategy` — bars → walk-forward (a fresh model per fold, trained on the fold's
training bars only, predicting its test window) → stitched out-of-sample predictions →
signal rule → backtest with costs → validity verdict → run directory with the HTML report
(attention heatmap and feature importance when the strategy explains itself) and rows in
the store; then the model for live use, fitted on all the bars, saved under
``<data_dir>/models/<SYMBOL>_<timeframe>/<strategy>/`` with a ``training.json`` naming the
run that measured it. Buy-and-hold runs beside it on the same folds and costs. The live
model's training bars include the whole OOS period: its own performance is the run's,
measured on models that never saw those bars.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console

from mlengine.backtest.compare import Comparison, compare
from mlengine.backtest.costs import CostModel
from mlengine.backtest.engine import DEFAULT_COSTS
from mlengine.backtest.signals import HysteresisSignal, SignalRule
from mlengine.backtest.walkforward import StrategyFactory, WalkForwardRun
from mlengine.data.loader import WalkForwardSplit
from mlengine.strategies import registry
from mlengine.strategies.base import Strategy, StrategyError, strategy_params

if TYPE_CHECKING:
    from mlengine.data.store import Store

__all__ = [
    "DEFAULT_MIN_TRAIN",
    "DEFAULT_TEST_SIZE",
    "TrainResult",
    "default_signal",
    "evaluate",
    "label_horizon",
    "models_root",
    "strategy_factory",
    "train_strategy",
]

#: The walk-forward scheme of ``mlengine train`` / ``backtest`` unless told otherwise:
#: expanding training windows of at least 2,000 bars, 60-day test windows.
DEFAULT_TEST_SIZE = "60D"
DEFAULT_MIN_TRAIN = 2000


def default_signal() -> HysteresisSignal:
    """Enter when ``p_up`` leaves 0.5 by more than 0.03, leave when it crosses back to 0.5."""
    return HysteresisSignal(enter=0.03, exit=0.0)


def models_root(root: Path | None = None) -> Path:
    """``root``, else ``<settings.data_dir>/models``."""
    if root is not None:
        return Path(root)
    from mlengine.config import get_settings

    return get_settings().data_dir / "models"


def strategy_factory(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """A factory ``(seed=None) -> Strategy`` of the registered strategy ``name``; the
    parameters are checked at once by building one instance."""
    chosen = dict(params or {})
    try:
        registry.create(name, **chosen)
    except TypeError as err:  # an unknown keyword of a strategy's constructor
        raise StrategyError(f"{name}: {err}") from None

    def make(seed: int | None = None) -> Strategy:
        return registry.create(name, seed=seed, **chosen)

    return make


def label_horizon(strategy: Strategy) -> int:
    """The strategy's label horizon in bars (its ``horizon`` parameter; 1 when it has none):
    the walk-forward purge."""
    horizon = strategy_params(strategy).get("horizon", 1)
    return int(horizon) if isinstance(horizon, int) and not isinstance(horizon, bool) else 1


@dataclass(frozen=True, eq=False)
class TrainResult:
    """The walk-forward comparison (the strategy and buy-and-hold on the same folds, bars
    and costs), the strategy's run, and where the live model went (``None``: not saved)."""

    comparison: Comparison
    model_dir: Path | None
    name: str

    @property
    def run(self) -> WalkForwardRun:
        return self.comparison.runs[self.name]


def evaluate(
    factories: Mapping[str, StrategyFactory],
    bars: pd.DataFrame,
    *,
    splitter: WalkForwardSplit | None = None,
    to_signal: SignalRule | None = None,
    **options: Any,
) -> Comparison:
    """Walk-forward every factory on the same folds, with the purge of the longest label
    horizon among them; ``splitter`` defaults to :data:`DEFAULT_TEST_SIZE` test windows
    after :data:`DEFAULT_MIN_TRAIN` bars, ``to_signal`` to :func:`default_signal`;
    ``options`` go to :func:`mlengine.backtest.walkforward.walk_forward`."""
    split = splitter or WalkForwardSplit(
        test_size=DEFAULT_TEST_SIZE, min_train_size=DEFAULT_MIN_TRAIN
    )
    horizon = max(label_horizon(make()) for make in factories.values())
    return compare(
        factories,
        bars,
        splitter=split,
        horizon=horizon,
        to_signal=to_signal or default_signal(),
        **options,
    )


def train_strategy(
    name: str,
    bars: pd.DataFrame,
    *,
    params: Mapping[str, Any] | None = None,
    splitter: WalkForwardSplit | None = None,
    to_signal: SignalRule | None = None,
    costs: CostModel = DEFAULT_COSTS,
    store: Store | None = None,
    seed: int = 0,
    save_model: bool = True,
    runs_dir: Path | None = None,
    models_dir: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Walk-forward evaluate strategy ``name`` on ``bars`` beside buy-and-hold, then fit
    and save the live model (see the module docstring). ``splitter`` and ``to_signal`` as
    in :func:`evaluate`. ``runs_dir`` / ``models_dir``: roots of the run and model
    directories (default under the settings' data dir)."""
    factory = strategy_factory(name, params)
    factories = {name: factory}
    if name != "buy_and_hold":
        factories["buy_and_hold"] = strategy_factory("buy_and_hold")
    comparison = evaluate(
        factories,
        bars,
        splitter=splitter,
        to_signal=to_signal,
        costs=costs,
        store=store,
        seed=seed,
        save=runs_dir if runs_dir is not None else True,
        progress=progress,
    )
    run = comparison.runs[name]
    model_dir = None
    if save_model:
        model = factory(seed=seed)
        status = Console(stderr=True).status(f"fitting the live {name} model on {len(bars):,} bars")
        with status if progress else nullcontext():
            model.fit(bars)
        model_dir = models_root(models_dir) / f"{run.symbol}_{run.timeframe}" / name
        model.save(model_dir)
        training = {
            "strategy": name,
            "params": run.params,
            "symbol": run.symbol,
            "timeframe": run.timeframe,
            "trained_at": datetime.now(UTC).isoformat(),
            "train_start": bars.index[0].isoformat(),
            "train_end": bars.index[-1].isoformat(),
            "n_bars": len(bars),
            "seed": seed,
            "walk_forward_run": run.run_id,
            "oos": {"metrics": run.metrics.to_dict(), "verdict": run.verdict.to_dict()},
        }
        text = json.dumps(training, indent=2, allow_nan=False, default=str)
        (model_dir / "training.json").write_text(text)
    return TrainResult(comparison=comparison, model_dir=model_dir, name=name)
