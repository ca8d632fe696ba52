"""The strategy contract: what every signal source offers to the walk-forward runner, the
metamodel, the CLI and the service.

A strategy follows the scikit-learn habits: ``__init__`` only stores its arguments
(hyper-parameters in ``params``, a frozen dataclass or pydantic model); ``fit`` learns from
the bars it is given and nothing else (what it learns ends in ``_``); ``predict_proba``
before ``fit`` raises :class:`NotFittedError`.

``predict_proba(bars)`` returns one row per bar of ``bars`` (same index): ``p_up``, the
probability that the forward return over the strategy's label horizon is positive (NaN:
no prediction at that bar), plus strategy-specific diagnostics. The value at bar ``t`` may
use bars ``<= t`` only (the truncation property: predicting on ``bars[:k]`` gives the same
rows as predicting on the full series, up to ``k``). The walk-forward runner relies on it
when it hands a fold's model the history before the test window.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlengine.data.schema import MLEngineError

__all__ = [
    "Context",
    "Explainable",
    "NotFittedError",
    "PredictionError",
    "Strategy",
    "StrategyError",
    "Summarizable",
    "check_predictions",
    "resolve_params",
    "strategy_params",
]


class StrategyError(MLEngineError, ValueError):
    """Invalid strategy parameters, artefacts or objects."""


class NotFittedError(StrategyError):
    """``predict_proba`` (or ``save``) called before ``fit``."""


class PredictionError(StrategyError):
    """A ``predict_proba`` result that breaks the contract (index, ``p_up`` range)."""


@dataclass(frozen=True)
class Context:
    """What a strategy may need beyond its own bars.

    ``higher_timeframes`` maps a timeframe name (``"4h"``, ``"1d"``) to a bar frame of the
    same asset; a higher-timeframe bar is known only at its close, and aligning it so is the
    strategy's job. ``asset`` holds metadata (symbol, market, tick size, ...). Both are
    read-only views.
    """

    higher_timeframes: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    asset: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "higher_timeframes", MappingProxyType(dict(self.higher_timeframes))
        )
        object.__setattr__(self, "asset", MappingProxyType(dict(self.asset)))


@runtime_checkable
class Strategy(Protocol):
    """The contract (see the module docstring). ``isinstance`` checks only the names."""

    name: str

    def fit(self, bars: pd.DataFrame, *, context: Context | None = None) -> Strategy: ...

    def predict_proba(
        self, bars: pd.DataFrame, *, context: Context | None = None
    ) -> pd.DataFrame: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Strategy: ...


@runtime_checkable
class Explainable(Protocol):
    """Optional: a fitted strategy that can explain its recent predictions.

    ``explain(bars)`` returns named frames for the report and the run directory, computed
    from ``bars`` (the history up to the last bar to explain) and nothing later. Names
    with a fixed meaning, drawn as charts by the report:

    * ``"attention"`` — rows ``"layer l head h"`` and ``"rollout"``, columns the bars of
      the explained window (text labels, oldest first), values the attention the decision
      bar pays to each bar (:func:`mlengine.nn.extraction.heatmap_frame`);
    * ``"feature_importance"`` — index ``feature``, columns ``importance`` and ``share``;
    * ``"regime_path"`` (price coloured by regime), ``"structure_events"`` and ``"swings"``
      (overlays on the price), ``"timeframe_attention"`` (weights per timeframe),
      ``"gate_weights"`` (the metamodel gate's weight of each strategy over time, optionally
      with the regime of each bar), ``"calibration"`` (reliability bins per stage, e.g. raw
      and calibrated) and ``"calibration_metrics"`` (Brier, log-loss, ECE per stage, shown
      under the calibration diagram): see :func:`mlengine.backtest.report.render_report`.

    Other names are shown as tables. Column labels are strings (they go to Parquet).
    """

    def explain(
        self, bars: pd.DataFrame, *, context: Context | None = None
    ) -> dict[str, pd.DataFrame]: ...


@runtime_checkable
class Summarizable(Protocol):
    """Optional: a strategy that summarises its stitched out-of-sample predictions.

    ``summarize(predictions, bars)`` gets the walk-forward's OOS predictions (``p_up``,
    ``fold`` and the diagnostics, on the OOS bars; NaN rows where a bar has no prediction)
    and the OOS bars; it returns named frames (e.g. per-regime statistics, breakout
    precision and recall) that join the run's explanations. It must use the strategy's
    parameters only, not one fold's fitted state (the runner calls it on the first fold's
    model).
    """

    def summarize(
        self, predictions: pd.DataFrame, bars: pd.DataFrame
    ) -> dict[str, pd.DataFrame]: ...


def resolve_params(
    who: str,
    params_class: type,
    params: object,
    kwargs: Mapping[str, Any],
    seed: int | None = None,
) -> Any:
    """A strategy's hyper-parameters from its constructor's arguments: ``params`` (an
    instance of ``params_class``) or keyword arguments, not both; ``seed``, when given,
    replaces the parameters' own (learned strategies). Errors name the strategy ``who``."""
    if params is not None and kwargs:
        raise StrategyError(f"{who}: give params or keyword arguments, not both")
    if params is None:
        return params_class(**kwargs) if seed is None else params_class(seed=seed, **kwargs)
    if not isinstance(params, params_class):
        raise StrategyError(
            f"{who}: params must be {params_class.__name__}, got {type(params).__name__}"
        )
    return params if seed is None else dataclasses.replace(params, seed=seed)  # type: ignore[type-var]


def strategy_params(strategy: object) -> dict[str, Any]:
    """The hyper-parameters of ``strategy`` (its ``params``) as a JSON-safe dict.

    ``params`` may be a dataclass, a pydantic model or a mapping; none gives ``{}``.
    """
    params = getattr(strategy, "params", None)
    who = getattr(strategy, "name", type(strategy).__name__)
    if params is None:
        out: dict[str, Any] = {}
    elif dataclasses.is_dataclass(params) and not isinstance(params, type):
        out = dataclasses.asdict(params)
    elif isinstance(params, BaseModel):
        out = params.model_dump(mode="json")
    elif isinstance(params, Mapping):
        out = dict(params)
    else:
        raise StrategyError(
            f"strategy {who!r}: params must be a dataclass, a pydantic model or a mapping, "
            f"got {type(params).__name__}"
        )
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StrategyError(f"strategy {who!r}: params are not JSON-serialisable: {err}") from None
    return out


def check_predictions(predictions: object, bars: pd.DataFrame, *, who: str) -> pd.DataFrame:
    """Return ``predictions`` if it keeps the contract for ``bars``, else raise
    :class:`PredictionError` naming ``who``, the bar and the column."""
    if not isinstance(predictions, pd.DataFrame):
        raise PredictionError(
            f"{who}: predict_proba must return a DataFrame, got {type(predictions).__name__}"
        )
    index = predictions.index
    if len(index) != len(bars):
        raise PredictionError(f"{who}: {len(index)} prediction rows for {len(bars)} bars")
    if not index.equals(bars.index):
        i = int(np.flatnonzero(np.asarray(index != bars.index))[0])
        raise PredictionError(
            f"{who}: prediction index differs from the bars at row {i}: "
            f"{index[i]} vs bar {bars.index[i]}"
        )
    if "p_up" not in predictions.columns:
        raise PredictionError(
            f"{who}: no 'p_up' column in the predictions (columns {list(predictions.columns)})"
        )
    try:
        p = predictions["p_up"].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise PredictionError(f"{who}: column 'p_up' is not numeric") from None
    bad = np.flatnonzero(~np.isnan(p) & ~((p >= 0.0) & (p <= 1.0)))
    if bad.size:
        i = int(bad[0])
        raise PredictionError(
            f"{who}: column 'p_up' = {p[i]} outside [0, 1] at bar {index[i]} ({bad.size} such rows)"
        )
    return predictions
