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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlengine.backtest.costs import CostModel
from mlengine.backtest.engine import DEFAULT_COSTS, BacktestResult, run_backtest
from mlengine.backtest.jobstore import FoldOutput, fingerprint, load_output, save_output
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
    "FoldJob",
    "Predicted",
    "StrategyFactory",
    "WalkForwardError",
    "WalkForwardRun",
    "backtest_predictions",
    "predict_folds",
    "run_fold",
    "score_predictions",
    "walk_forward",
    "walk_forward_many",
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


@dataclass(frozen=True)
class FoldJob:
    """One (strategy, fold) job: fit on the fold's training bars, predict its test window;
    ``explain``: also ask the fitted model to explain the end of its window (last fold);
    ``jobs_dir``: where the job stores its output when done (:mod:`mlengine.backtest.jobstore`),
    under its ``fingerprint``."""

    name: str
    factory: StrategyFactory
    bars: pd.DataFrame
    fold: Fold
    history: int | None
    context: Context | None
    seed: int
    explain: bool
    jobs_dir: Path | None = None
    fingerprint: str = ""


@dataclass(frozen=True, eq=False)
class Predicted:
    """A strategy's stitched out-of-sample predictions (``p_up``, ``fold``, diagnostics),
    its name, parameters and explanations (the last fold's ``explain`` and the summary)."""

    strategy: str
    params: dict[str, Any]
    predictions: pd.DataFrame
    explanations: dict[str, pd.DataFrame] = field(default_factory=dict)


def run_fold(job: FoldJob) -> FoldOutput:
    """Run one :class:`FoldJob` (module level, so that worker processes can run it)."""
    strategy = _make(job.factory, job.seed + job.fold.fold)
    pred = _predict_fold(strategy, job.bars, job.fold, job.history, job.context)
    explanations: dict[str, pd.DataFrame] = {}
    if job.explain and isinstance(strategy, Explainable):
        shown = job.bars.iloc[: int(job.fold.test[-1]) + 1]
        explained = strategy.explain(shown, context=job.context)
        explanations = _frames(explained, f"strategy {strategy.name!r}: explain")
    out = FoldOutput(job.name, strategy.name, strategy_params(strategy), pred, explanations)
    if job.jobs_dir is not None:
        save_output(job.jobs_dir, job, job.fingerprint, out)
    return out


def _job_label(job: FoldJob) -> str:
    where = " ".join(str(job.bars.attrs[k]) for k in ("symbol", "timeframe") if k in job.bars.attrs)
    return f"{where} {job.name} fold {job.fold.fold}".lstrip()


def predict_folds(
    factories: Mapping[str, StrategyFactory],
    bars: pd.DataFrame,
    folds: Sequence[Fold],
    *,
    history: int | None = None,
    context: Context | None = None,
    seed: int = 0,
    executor: str = "serial",
    address: str | None = None,
    workers: int | None = None,
    retries: int = 0,
    jobs_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Predicted]:
    """Every (strategy, fold) job of ``factories`` on ``folds``, fanned out by
    :func:`mlengine.parallel.run_jobs` (``executor`` "serial", "local" processes or "ray" at
    ``address``; the factories must then be picklable), stitched per strategy in fold order.

    A failed job runs again up to ``retries`` times. With ``jobs_dir``, each job stores its
    output there when done and a job whose output is already stored under the same
    fingerprint is not run again (:mod:`mlengine.backtest.jobstore`): an interrupted run
    resumes where it stopped, with the same results."""
    from mlengine.parallel import JobError, run_jobs

    if not folds:
        raise WalkForwardError("the splitter made no fold")
    last = folds[-1].fold
    jobs = [
        FoldJob(name, factory, bars, fold, history, context, seed, fold.fold == last)
        for name, factory in factories.items()
        for fold in folds
    ]
    stored: dict[int, FoldOutput] = {}
    if jobs_dir is not None:
        root = Path(jobs_dir)
        jobs = [replace(j, jobs_dir=root, fingerprint=fingerprint(j)) for j in jobs]
        for i, job in enumerate(jobs):
            found = load_output(root, job, job.fingerprint)
            if found is not None:
                stored[i] = found
    todo = [i for i in range(len(jobs)) if i not in stored]
    description = "walk-forward " + ", ".join(factories)
    if stored:
        description += f" ({len(stored)} of {len(jobs)} jobs stored before)"
    try:
        ran = run_jobs(
            run_fold,
            [jobs[i] for i in todo],
            executor=executor,
            address=address,
            workers=workers,
            retries=retries,
            label=_job_label,
            description=description,
            progress=progress,
        )
    except JobError as err:  # a broken contract names its strategy and fold: raise it as is
        if isinstance(err.__cause__, MLEngineError):
            raise err.__cause__ from None
        raise
    fresh = iter(ran)
    outputs = [stored[i] if i in stored else next(fresh) for i in range(len(jobs))]
    out: dict[str, Predicted] = {}
    for name, factory in factories.items():
        mine = [o for o in outputs if o.name == name]
        for other in mine[1:]:
            if other.strategy != mine[0].strategy:
                raise WalkForwardError(
                    f"the factory {name!r} made {mine[0].strategy!r} and then "
                    f"{other.strategy!r}: one strategy per factory"
                )
        predictions = pd.concat([o.predictions for o in mine])
        if not predictions.index.is_unique:  # the splitter's windows never overlap
            raise WalkForwardError("a bar was predicted twice: test windows overlap")
        oos = bars.iloc[int(folds[0].test[0]) : int(folds[-1].test[-1]) + 1]
        explanations = dict(mine[-1].explanations)
        summarizer = _make(factory, seed)
        if isinstance(summarizer, Summarizable):
            summary = summarizer.summarize(predictions.reindex(oos.index), oos)
            explanations |= _frames(summary, f"strategy {summarizer.name!r}: summarize")
        out[name] = Predicted(mine[0].strategy, mine[0].params, predictions, explanations)
    return out


def _frames(out: object, who: str) -> dict[str, pd.DataFrame]:
    if not isinstance(out, dict) or not all(
        isinstance(k, str) and isinstance(v, pd.DataFrame) for k, v in out.items()
    ):
        raise WalkForwardError(f"{who} must return {{name: frame}}")
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


def _check_options(horizon: int, history: int | None, n_trials: int | None) -> None:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
        raise WalkForwardError(f"horizon must be an integer >= 0, got {horizon!r}")
    if history is not None and (isinstance(history, bool) or not isinstance(history, int)):
        raise WalkForwardError(f"history must be a bar count or None, got {history!r}")
    if history is not None and history < 0:
        raise WalkForwardError(f"history must be >= 0, got {history}")
    if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
        raise WalkForwardError(f"n_trials must be a positive integer, got {n_trials!r}")


def walk_forward(
    strategy_factory: StrategyFactory,
    bars: pd.DataFrame,
    *,
    splitter: WalkForwardSplit,
    run_name: str | None = None,
    **options: Any,
) -> WalkForwardRun:
    """Walk-forward train, predict, stitch and backtest one asset (see the module docstring);
    ``options`` as in :func:`walk_forward_many`."""
    label = run_name or str(bars.attrs.get("symbol", "strategy"))
    runs = _walk_forward({label: strategy_factory}, bars, splitter, {label: run_name}, **options)
    return runs[label]


def walk_forward_many(
    factories: Mapping[str, StrategyFactory],
    bars: pd.DataFrame,
    *,
    splitter: WalkForwardSplit,
    **options: Any,
) -> dict[str, WalkForwardRun]:
    """:func:`walk_forward` of several strategies on the same folds, their (strategy, fold)
    jobs fanned out together; each run is named by its key.

    Options: ``horizon`` (the label horizon in bars; the splitter's purge is raised to it
    when smaller), ``history`` (bars before each test window passed to ``predict_proba``;
    None: all), ``context``, ``seed`` (the factories' base seed and the validity tests'
    seed), ``executor`` / ``workers`` / ``progress`` (:func:`predict_folds`), and the keyword
    arguments of :func:`score_predictions` (signal rule, costs, sizing, store, ``save``...).
    """
    return _walk_forward(factories, bars, splitter, {k: k for k in factories}, **options)


def _walk_forward(
    factories: Mapping[str, StrategyFactory],
    bars: pd.DataFrame,
    splitter: WalkForwardSplit,
    run_names: Mapping[str, str | None],
    *,
    horizon: int = 1,
    history: int | None = None,
    context: Context | None = None,
    seed: int = 0,
    executor: str = "serial",
    workers: int | None = None,
    progress: bool = True,
    **scoring: Any,
) -> dict[str, WalkForwardRun]:
    check_bar_frame(bars)
    _check_options(horizon, history, scoring.get("n_trials"))
    split = splitter.with_purge(horizon)
    folds = tuple(split.folds(bars))
    predicted = predict_folds(
        factories,
        bars,
        folds,
        history=history,
        context=context,
        seed=seed,
        executor=executor,
        workers=workers,
        progress=progress,
    )
    splits = {p: getattr(split, p) for p in _SPLIT_PARAMS} | {"step": split.step}
    config = {"splitter": splits, "horizon": horizon, "history": history}
    return {
        key: score_predictions(
            predicted[key],
            bars,
            folds,
            run_name=run_names[key],
            seed=seed,
            config=config,
            **scoring,
        )
        for key in factories
    }


def backtest_predictions(
    predictions: pd.DataFrame,
    oos: pd.DataFrame,
    *,
    to_signal: SignalRule | None = None,
    **backtest: Any,
) -> tuple[pd.DataFrame, BacktestResult]:
    """Signals (``position``, ``p_up``) of ``predictions`` on the OOS bars ``oos`` (bars
    without a prediction are flat) and their backtest; ``backtest``: keyword arguments of
    :func:`mlengine.backtest.engine.run_backtest`."""
    rule: SignalRule = to_signal if to_signal is not None else ThresholdSignal()
    on_oos = predictions.reindex(oos.index)
    signals = pd.DataFrame(
        {"position": _signal(rule, on_oos, oos), "p_up": on_oos["p_up"].fillna(0.5).to_numpy()},
        index=oos.index,
    )
    return signals, run_backtest(oos, signals, **backtest)


def score_predictions(
    predicted: Predicted,
    bars: pd.DataFrame,
    folds: Sequence[Fold],
    *,
    to_signal: SignalRule | None = None,
    costs: CostModel = DEFAULT_COSTS,
    sizing: Sizing | str | None = None,
    capital: float = 100_000.0,
    market: str | None = None,
    rebalance_threshold: float | None = None,
    validity: ValidityConfig | None = None,
    n_trials: int | None = None,
    trials_matrix: pd.DataFrame | None = None,
    store: Store | None = None,
    run_name: str | None = None,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    save: bool | Path = False,
) -> WalkForwardRun:
    """Signals, backtest and verdict of stitched OOS ``predicted`` on ``bars``.

    The OOS period runs from the first test bar of ``folds`` (bar positions) to the last;
    bars in it without a prediction are flat. ``costs``, ``sizing``, ``capital``,
    ``market``, ``rebalance_threshold`` go to :func:`mlengine.backtest.engine.run_backtest`.
    ``n_trials`` overrides the count from ``ml.trials``; ``trials_matrix`` (per-bar returns
    of every candidate compared, one column each) gives the verdict its PBO. ``config``:
    extra JSON-safe entries of the run configuration. ``save``: write the run directory
    (True: under the settings' data dir; a path: under that root).
    """
    _check_options(0, None, n_trials)
    if not folds:
        raise WalkForwardError("no fold to score")
    rule: SignalRule = to_signal if to_signal is not None else ThresholdSignal()
    symbol, timeframe = str(bars.attrs["symbol"]), str(bars.attrs["timeframe"])
    name, params, predictions = predicted.strategy, predicted.params, predicted.predictions
    oos = bars.iloc[int(folds[0].test[0]) : int(folds[-1].test[-1]) + 1]
    signals, result = backtest_predictions(
        predictions,
        oos,
        to_signal=rule,
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
        trials_matrix=trials_matrix,
        periods_per_year=result.periods_per_year,
        config=cfg,
    )
    run_config = _json_safe(
        {
            "name": run_name or f"{name} {symbol} {timeframe}",
            "strategy": name,
            "params": params,
            "symbol": symbol,
            "timeframe": timeframe,
            **(config or {}),
            "n_folds": len(folds),
            "signal": _rule_config(rule),
            "backtest": result.config.to_dict(),
            "validity": cfg.model_dump(mode="json"),
            "trials": trials,
            "seed": seed,
        }
    )
    run = WalkForwardRun(
        run_id=run_id,
        name=run_config["name"],
        strategy=name,
        params=params,
        symbol=symbol,
        timeframe=timeframe,
        folds=tuple(folds),
        predictions=predictions,
        signals=signals,
        result=result,
        verdict=verdict,
        n_trials=trials["n_trials"],
        seed=seed,
        config=run_config,
        data_range={
            "bars_start": bars.index[0].isoformat(),
            "bars_end": bars.index[-1].isoformat(),
            "oos_start": oos.index[0].isoformat(),
            "oos_end": oos.index[-1].isoformat(),
            "n_bars": len(bars),
            "n_oos_bars": len(oos),
            "n_predictions": int(predictions["p_up"].notna().sum()),
        },
        explanations=predicted.explanations,
    )
    if store is not None:
        _record(store, run)
    if save is not False:
        from mlengine.backtest.runs import save_run

        save_run(run, root=None if save is True else Path(save))
    return run
