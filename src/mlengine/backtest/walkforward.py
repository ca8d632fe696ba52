"""Walk-forward runner: train per fold, predict the fold's test window, stitch, backtest.

For each fold of the splitter (:class:`mlengine.data.loader.WalkForwardSplit`), oldest first:

1. a fresh strategy from the factory (``factory()``, or ``factory(seed=seed + fold)`` when
   the factory takes a ``seed`` keyword);
2. ``fit`` on the fold's training bars only, ``bars.iloc[fold.train]`` (the purge of
   ``horizon`` bars before the test window, and any embargo, already removed);
3. ``predict_proba`` on the history plus the test window, ``bars.iloc[lo:test_end]`` with
   ``lo = 0`` (``history=None``) or ``test_start - history``; only the test window's rows
   are kept. The model sees no bar after its test window, and within the window the
   contract's truncation property (a prediction at ``t`` uses bars ``<= t``) keeps bar
   ``t`` from seeing ``t + 1``; the history lets it compute its features up to the window.

The kept rows are stitched with their fold id: test windows never overlap, so no bar is
predicted twice. The backtest covers the out-of-sample (OOS) period, from the first test
bar to the last; bars in it without a prediction (gaps between windows when ``step >
test_size``, NaN ``p_up``) are flat. ``to_signal`` turns predictions into target positions
(rules in :mod:`mlengine.backtest.signals`; :class:`ThresholdSignal` by default: long when
``p_up > 0.5 + margin``, short when ``p_up < 0.5 - margin``, else flat); the signal frame
also carries ``p_up`` so that the
:class:`mlengine.backtest.sizing.Kelly` sizing can scale it.

When the last fold's model is :class:`mlengine.strategies.base.Explainable`, it explains the
end of its test window (``explain`` on the bars up to it) and the frames go to the run's
``explanations`` (the report's attention heatmap and feature importance); a
:class:`mlengine.strategies.base.Summarizable` strategy adds its summary of the stitched
OOS predictions (e.g. per-regime statistics).

The verdict (:func:`mlengine.backtest.validity.assess`) counts the trials recorded in
``ml.trials`` for the strategy on the same symbol and timeframe, this run included. When
fewer than two of them have a Sharpe ratio, the variance of the trials' Sharpe ratios is
taken as that of the Sharpe estimator of pure-luck trials, ``1 / T`` (``T`` OOS bars).
With a store, the run is recorded in ``ml.backtest_runs`` (its ``metrics`` JSON holds the
metrics and ``verdict``: score and effective), ``ml.trials`` and ``ml.predictions``.
"""

from __future__ import annotations

import inspect
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlengine.backtest.costs import CostModel
from mlengine.backtest.engine import DEFAULT_COSTS, BacktestResult, run_backtest
from mlengine.backtest.metrics import json_value
from mlengine.backtest.signals import SignalRule, ThresholdSignal
from mlengine.backtest.sizing import Sizing
from mlengine.backtest.validity import (
    ValidityConfig,
    Verdict,
    assess,
    record_trial,
    sharpe_ratio,
    trials_summary,
)
from mlengine.data.loader import Fold, WalkForwardSplit
from mlengine.data.schema import MLEngineError, check_bar_frame
from mlengine.strategies.base import (
    Context,
    Explainable,
    PredictionError,
    Strategy,
    Summarizable,
    check_predictions,
    strategy_params,
)

if TYPE_CHECKING:
    from mlengine.backtest.metrics import Metrics
    from mlengine.data.store import Store

__all__ = [
    "StrategyFactory",
    "WalkForwardError",
    "WalkForwardRun",
    "walk_forward",
]

StrategyFactory = Callable[..., Strategy]
_SPLIT_PARAMS = ("n_splits", "test_size", "train_size", "min_train_size", "purge", "embargo")


class WalkForwardError(MLEngineError, ValueError):
    """Invalid runner arguments, or a strategy or signal rule that breaks its contract."""


@dataclass(frozen=True, eq=False)
class WalkForwardRun:
    """One walk-forward run: stitched OOS predictions, the backtest and its verdict.

    ``predictions``: one row per predicted test bar — ``p_up``, ``fold`` and the strategy's
    diagnostics. ``signals``: ``position`` and ``p_up`` on every OOS bar (the backtest's
    input). ``config`` is the JSON-safe run configuration.
    """

    run_id: str
    name: str
    strategy: str
    params: dict[str, Any]
    symbol: str
    timeframe: str
    folds: tuple[Fold, ...]
    predictions: pd.DataFrame
    signals: pd.DataFrame
    result: BacktestResult
    verdict: Verdict
    n_trials: int
    seed: int
    config: dict[str, Any]
    data_range: dict[str, Any] = field(default_factory=dict)
    explanations: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def metrics(self) -> Metrics:
        return self.result.metrics

    @property
    def benchmark(self) -> pd.Series:
        """Buy-and-hold equity of the asset over the OOS bars (no costs), from the capital."""
        close = self.result.close.iloc[:, 0]
        return (self.result.config.capital * close / close.iloc[0]).rename("benchmark")


def _json_safe(value: Any) -> Any:
    """Containers and rule dataclasses made plain JSON, scalars by :func:`json_value`."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {"rule": type(value).__name__, **_json_safe(asdict(value))}
    out = json_value(value)
    return out if out is None or isinstance(out, str | int | float) else str(out)


def _rule_config(rule: object) -> Any:
    if is_dataclass(rule) and not isinstance(rule, type):
        return _json_safe(rule)
    return {"rule": getattr(rule, "__qualname__", type(rule).__name__)}


def _with_purge(splitter: WalkForwardSplit, horizon: int) -> WalkForwardSplit:
    if splitter.purge >= horizon:
        return splitter
    args = {p: getattr(splitter, p) for p in _SPLIT_PARAMS}
    return WalkForwardSplit(**{**args, "purge": horizon, "step": splitter.step})


def _make(factory: StrategyFactory, seed: int | None) -> Strategy:
    try:
        takes_seed = "seed" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_seed = False
    made = factory(seed=seed) if takes_seed else factory()
    if not isinstance(made, Strategy):
        raise WalkForwardError(
            f"the strategy factory returned {type(made).__name__}, which does not follow the "
            "Strategy contract (name, fit, predict_proba, save, load)"
        )
    return made


def _predict_fold(
    strategy: Strategy,
    bars: pd.DataFrame,
    fold: Fold,
    history: int | None,
    context: Context | None,
) -> pd.DataFrame:
    who = f"strategy {strategy.name!r}, fold {fold.fold}"
    strategy.fit(bars.iloc[fold.train], context=context)
    start, end = int(fold.test[0]), int(fold.test[-1]) + 1
    lo = 0 if history is None else max(0, start - history)
    window = bars.iloc[lo:end]
    pred = check_predictions(strategy.predict_proba(window, context=context), window, who=who)
    if "fold" in pred.columns:
        raise PredictionError(f"{who}: 'fold' is the runner's column; rename the diagnostic")
    out = pred.iloc[start - lo :].copy()
    out["p_up"] = out["p_up"].astype(np.float64)
    out.insert(1, "fold", np.int64(fold.fold))
    return out


def _signal(rule: SignalRule, pred: pd.DataFrame, bars: pd.DataFrame) -> np.ndarray:
    raw = rule(pred, bars)
    try:
        pos = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise WalkForwardError("to_signal returned non-numeric positions") from None
    if pos.shape != (len(bars),):
        raise WalkForwardError(f"to_signal returned shape {pos.shape} for {len(bars)} OOS bars")
    bad = np.flatnonzero(~np.isfinite(pos) | (np.abs(pos) > 1.0))
    if bad.size:
        i = int(bad[0])
        raise WalkForwardError(
            f"to_signal: position {pos[i]} at bar {bars.index[i]} is not finite in [-1, 1]"
        )
    return pos


def _prediction_rows(run_id: str, name: str, sym: str, tf: str, pred: pd.DataFrame) -> pd.DataFrame:
    keep = pred[pred["p_up"].notna()]
    diag = [c for c in keep.columns if c not in ("p_up", "fold")]
    diagnostics = [_json_safe(r) for r in keep[diag].to_dict(orient="records")] if diag else None
    return pd.DataFrame(
        {
            "run_id": run_id,
            "strategy": name,
            "symbol": sym,
            "timeframe": tf,
            "ts": keep.index,
            "fold": keep["fold"].to_numpy(dtype=np.int64),
            "p_up": keep["p_up"].to_numpy(dtype=np.float64),
            "diagnostics": diagnostics,
        }
    )


def _predict_all(
    factory: StrategyFactory,
    bars: pd.DataFrame,
    folds: tuple[Fold, ...],
    *,
    history: int | None,
    context: Context | None,
    seed: int,
    label: str,
    progress: bool,
) -> tuple[pd.DataFrame, Strategy, Strategy]:
    """Stitched OOS predictions of every fold, and the first and last folds' strategies."""
    parts: list[pd.DataFrame] = []
    first: Strategy | None = None
    strategy: Strategy | None = None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    console = Console(stderr=True)
    with Progress(*columns, TimeElapsedColumn(), console=console, disable=not progress) as bar:
        task = bar.add_task(f"walk-forward {label}", total=len(folds))
        for fold in folds:
            strategy = _make(factory, seed + fold.fold)
            if first is None:
                first = strategy
            elif strategy.name != first.name:
                raise WalkForwardError(
                    f"the factory made {first.name!r} and then {strategy.name!r}: one strategy"
                )
            parts.append(_predict_fold(strategy, bars, fold, history, context))
            bar.advance(task)
    if first is None or strategy is None:
        raise WalkForwardError("the splitter made no fold")
    predictions = pd.concat(parts)
    if not predictions.index.is_unique:  # the splitter's windows never overlap
        raise WalkForwardError("a bar was predicted twice: test windows overlap")
    return predictions, first, strategy


def _frames(out: object, who: str) -> dict[str, pd.DataFrame]:
    if not isinstance(out, dict) or not all(
        isinstance(k, str) and isinstance(v, pd.DataFrame) for k, v in out.items()
    ):
        raise WalkForwardError(f"{who} must return {{name: frame}}")
    return out


def _explain(
    first: Strategy,
    last: Strategy,
    bars: pd.DataFrame,
    fold: Fold,
    on_oos: pd.DataFrame,
    oos: pd.DataFrame,
    context: Context | None,
) -> dict[str, pd.DataFrame]:
    """The last fold's model explaining the end of its test window (bars up to it only),
    then the strategy's summary of the stitched OOS predictions."""
    out: dict[str, pd.DataFrame] = {}
    if isinstance(last, Explainable):
        shown = bars.iloc[: int(fold.test[-1]) + 1]
        explained = last.explain(shown, context=context)
        out |= _frames(explained, f"strategy {last.name!r}: explain")
    if isinstance(first, Summarizable):
        summary = first.summarize(on_oos, oos)
        out |= _frames(summary, f"strategy {first.name!r}: summarize")
    return out


def _trials(
    store: Store | None,
    n_trials: int | None,
    returns: pd.Series,
    *,
    run_id: str,
    name: str,
    params: dict[str, Any],
    symbol: str,
    timeframe: str,
) -> dict[str, Any]:
    """Record this trial (with a store) and count the trials of its scope."""
    count, variance, source = 1, math.nan, "ml.trials"
    if store is not None:
        flat = np.ptp(returns.to_numpy()) == 0
        record_trial(
            store,
            strategy=name,
            params=params,
            sharpe=None if flat else sharpe_ratio(returns),
            n_obs=len(returns),
            symbol=symbol,
            timeframe=timeframe,
            run_id=run_id,
        )
        count, variance = trials_summary(store, strategy=name, symbol=symbol, timeframe=timeframe)
    if n_trials is not None:
        count = n_trials
    if not math.isfinite(variance):
        variance, source = 1.0 / len(returns), "1/T (fewer than 2 trial Sharpe ratios)"
    return {
        "n_trials": count,
        "sharpe_variance": variance,
        "variance_source": source,
        "scope": {"strategy": name, "symbol": symbol, "timeframe": timeframe},
    }


def _record(store: Store, run: WalkForwardRun) -> None:
    """The run's rows in ``ml.backtest_runs`` and ``ml.predictions``."""
    verdict = {"score": run.verdict.score, "effective": run.verdict.effective}
    index = run.signals.index
    store.insert_records(
        "ml.backtest_runs",
        [
            {
                "run_id": run.run_id,
                "name": run.name,
                "config": run.config,
                "symbols": [run.symbol],
                "timeframe": run.timeframe,
                "start_ts": index[0],
                "end_ts": index[-1],
                "metrics": {**run.metrics.to_dict(), "verdict": verdict},
            }
        ],
    )
    rows = _prediction_rows(run.run_id, run.strategy, run.symbol, run.timeframe, run.predictions)
    store.insert_records("ml.predictions", rows)


def walk_forward(
    strategy_factory: StrategyFactory,
    bars: pd.DataFrame,
    *,
    splitter: WalkForwardSplit,
    horizon: int = 1,
    history: int | None = None,
    to_signal: SignalRule | None = None,
    costs: CostModel = DEFAULT_COSTS,
    sizing: Sizing | str | None = None,
    capital: float = 100_000.0,
    market: str | None = None,
    rebalance_threshold: float | None = None,
    context: Context | None = None,
    validity: ValidityConfig | None = None,
    n_trials: int | None = None,
    store: Store | None = None,
    run_name: str | None = None,
    seed: int = 0,
    save: bool | Path = False,
    progress: bool = True,
) -> WalkForwardRun:
    """Walk-forward train, predict, stitch and backtest one asset (see the module docstring).

    ``horizon``: the label horizon in bars; the splitter's purge is raised to it when
    smaller. ``history``: bars before each test window passed to ``predict_proba`` (None:
    all). ``costs``, ``sizing``, ``capital``, ``market``, ``rebalance_threshold`` go to
    :func:`mlengine.backtest.engine.run_backtest`. ``seed`` is the factory's base seed and
    the validity tests' seed. ``n_trials`` overrides the count from ``ml.trials``. ``save``:
    write the run directory (True: under the settings' data dir; a path: under that root).
    """
    check_bar_frame(bars)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
        raise WalkForwardError(f"horizon must be an integer >= 0, got {horizon!r}")
    if history is not None and (isinstance(history, bool) or not isinstance(history, int)):
        raise WalkForwardError(f"history must be a bar count or None, got {history!r}")
    if history is not None and history < 0:
        raise WalkForwardError(f"history must be >= 0, got {history}")
    if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
        raise WalkForwardError(f"n_trials must be a positive integer, got {n_trials!r}")
    split = _with_purge(splitter, horizon)
    folds = tuple(split.folds(bars))
    rule: SignalRule = to_signal if to_signal is not None else ThresholdSignal()
    symbol, timeframe = str(bars.attrs["symbol"]), str(bars.attrs["timeframe"])
    predictions, first, last = _predict_all(
        strategy_factory,
        bars,
        folds,
        history=history,
        context=context,
        seed=seed,
        label=run_name or symbol,
        progress=progress,
    )
    name, params = first.name, strategy_params(first)
    oos = bars.iloc[int(folds[0].test[0]) : int(folds[-1].test[-1]) + 1]
    on_oos = predictions.reindex(oos.index)
    explanations = _explain(first, last, bars, folds[-1], on_oos, oos, context)
    signals = pd.DataFrame(
        {"position": _signal(rule, on_oos, oos), "p_up": on_oos["p_up"].fillna(0.5).to_numpy()},
        index=oos.index,
    )
    result = run_backtest(
        oos,
        signals,
        costs=costs,
        sizing=sizing,
        capital=capital,
        market=market,
        rebalance_threshold=rebalance_threshold,
    )
    run_id = uuid.uuid4().hex
    trials = _trials(
        store,
        n_trials,
        result.returns,
        run_id=run_id,
        name=name,
        params=params,
        symbol=symbol,
        timeframe=timeframe,
    )
    cfg = (validity or ValidityConfig()).model_copy(update={"seed": seed})
    verdict = assess(
        result.returns,
        result.metrics,
        bar_returns=oos["close"].pct_change().fillna(0.0),
        position=result.signal.sum(axis=1).shift(1, fill_value=0.0),
        n_trials=trials["n_trials"],
        trial_sharpe_variance=trials["sharpe_variance"],
        periods_per_year=result.periods_per_year,
        config=cfg,
    )
    config = _json_safe(
        {
            "name": run_name or f"{name} {symbol} {timeframe}",
            "strategy": name,
            "params": params,
            "symbol": symbol,
            "timeframe": timeframe,
            "splitter": {p: getattr(split, p) for p in _SPLIT_PARAMS} | {"step": split.step},
            "n_folds": len(folds),
            "horizon": horizon,
            "history": history,
            "signal": _rule_config(rule),
            "backtest": result.config.to_dict(),
            "validity": cfg.model_dump(mode="json"),
            "trials": trials,
            "seed": seed,
        }
    )
    run = WalkForwardRun(
        run_id=run_id,
        name=config["name"],
        strategy=name,
        params=params,
        symbol=symbol,
        timeframe=timeframe,
        folds=folds,
        predictions=predictions,
        signals=signals,
        result=result,
        verdict=verdict,
        n_trials=trials["n_trials"],
        seed=seed,
        config=config,
        data_range={
            "bars_start": bars.index[0].isoformat(),
            "bars_end": bars.index[-1].isoformat(),
            "oos_start": oos.index[0].isoformat(),
            "oos_end": oos.index[-1].isoformat(),
            "n_bars": len(bars),
            "n_oos_bars": len(oos),
            "n_predictions": int(predictions["p_up"].notna().sum()),
        },
        explanations=explanations,
    )
    if store is not None:
        _record(store, run)
    if save is not False:
        from mlengine.backtest.runs import save_run

        save_run(run, root=None if save is True else Path(save))
    return run
