"""The strategy contract: Context, the Protocol, params and the prediction checks."""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError, dataclass

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

from mlengine import datasets
from mlengine.backtest.baselines import BuyAndHoldBaseline, SMACrossover, TimeSeriesMomentum
from mlengine.data.schema import MLEngineError
from mlengine.strategies import (
    Context,
    NotFittedError,
    PredictionError,
    Strategy,
    StrategyError,
    check_predictions,
    strategy_params,
)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:200]


def test_context_is_frozen_and_read_only(bars: pd.DataFrame) -> None:
    higher = {"4h": bars}
    ctx = Context(higher_timeframes=higher, asset={"symbol": "EURUSD", "market": "fx"})
    higher["1d"] = bars  # later changes to the caller's dict do not leak in
    assert list(ctx.higher_timeframes) == ["4h"]
    assert ctx.asset["market"] == "fx"
    with pytest.raises(FrozenInstanceError):
        ctx.asset = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        ctx.asset["symbol"] = "X"  # type: ignore[index]
    assert Context().higher_timeframes == {}


@pytest.mark.parametrize("make", [BuyAndHoldBaseline, SMACrossover, TimeSeriesMomentum])
def test_baselines_follow_the_protocol(make: type) -> None:
    assert isinstance(make(), Strategy)


def test_objects_without_the_methods_are_not_strategies() -> None:
    class Half:
        name = "half"

        def fit(self, bars: pd.DataFrame) -> Half:
            return self

    assert not isinstance(Half(), Strategy)
    assert not isinstance(object(), Strategy)


def test_errors_are_engine_errors() -> None:
    assert issubclass(NotFittedError, MLEngineError)
    assert issubclass(PredictionError, StrategyError)
    assert issubclass(StrategyError, ValueError)


@dataclass(frozen=True)
class _DataParams:
    window: int = 5
    label: str = "x"


class _ModelParams(BaseModel):
    alpha: float = 0.1
    layers: tuple[int, ...] = (8, 4)


class _With:
    name = "with"

    def __init__(self, params: object) -> None:
        self.params = params


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (_DataParams(), {"window": 5, "label": "x"}),
        (_ModelParams(), {"alpha": 0.1, "layers": [8, 4]}),
        ({"k": 3}, {"k": 3}),
        (None, {}),
    ],
)
def test_strategy_params_as_json_dict(params: object, expected: dict) -> None:
    assert strategy_params(_With(params)) == expected


def test_strategy_params_rejects_other_types_and_non_json() -> None:
    with pytest.raises(StrategyError, match="'with': params must be a dataclass"):
        strategy_params(_With(42))
    with pytest.raises(StrategyError, match="not JSON-serialisable"):
        strategy_params(_With({"when": pd.Timestamp("2020-01-01")}))
    with pytest.raises(StrategyError, match="not JSON-serialisable"):
        strategy_params(_With({"x": float("nan")}))


def _pred(bars: pd.DataFrame, p: np.ndarray | float = 0.5) -> pd.DataFrame:
    return pd.DataFrame({"p_up": np.broadcast_to(p, len(bars)).copy()}, index=bars.index)


def test_check_predictions_accepts_the_contract_and_nan(bars: pd.DataFrame) -> None:
    p = np.linspace(0.0, 1.0, len(bars))
    p[3] = np.nan
    pred = _pred(bars, p)
    assert check_predictions(pred, bars, who="s") is pred


def test_check_predictions_rejects_a_non_frame(bars: pd.DataFrame) -> None:
    with pytest.raises(PredictionError, match="s: predict_proba must return a DataFrame"):
        check_predictions(pd.Series(0.5, index=bars.index), bars, who="s")


def test_check_predictions_rejects_wrong_length(bars: pd.DataFrame) -> None:
    with pytest.raises(PredictionError, match="199 prediction rows for 200 bars"):
        check_predictions(_pred(bars.iloc[1:]), bars, who="s")


def test_check_predictions_names_the_first_misaligned_row(bars: pd.DataFrame) -> None:
    pred = _pred(bars)
    pred.index = bars.index.insert(10, bars.index[10] - pd.Timedelta("1min")).delete(-1)
    with pytest.raises(PredictionError, match="differs from the bars at row 10"):
        check_predictions(pred, bars, who="s")


def test_check_predictions_needs_p_up(bars: pd.DataFrame) -> None:
    with pytest.raises(PredictionError, match="no 'p_up' column"):
        check_predictions(_pred(bars).rename(columns={"p_up": "prob"}), bars, who="s")


def test_check_predictions_needs_numeric_p_up(bars: pd.DataFrame) -> None:
    pred = pd.DataFrame({"p_up": ["up"] * len(bars)}, index=bars.index)
    with pytest.raises(PredictionError, match="'p_up' is not numeric"):
        check_predictions(pred, bars, who="s")


@pytest.mark.parametrize("bad", [1.2, -0.1, np.inf])
def test_check_predictions_rejects_p_up_outside_unit_interval(
    bars: pd.DataFrame, bad: float
) -> None:
    p = np.full(len(bars), 0.5)
    p[7] = bad
    where = re.escape(f"outside [0, 1] at bar {bars.index[7]}")
    with pytest.raises(PredictionError, match=where):
        check_predictions(_pred(bars, p), bars, who="fold 3")
