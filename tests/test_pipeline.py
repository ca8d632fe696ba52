"""One strategy end to end: walk-forward beside buy-and-hold, run directory with the
model's explanations, records in the store, and the live model saved and reloadable."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlengine import datasets
from mlengine.backtest.runs import load_run
from mlengine.backtest.signals import HysteresisSignal
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.store import open_store
from mlengine.pipeline import label_horizon, strategy_factory, train_strategy
from mlengine.strategies import registry
from mlengine.strategies.base import StrategyError, strategy_params
from mlengine.strategies.pva import PVA


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:3200]


def test_train_pva_end_to_end(eurusd: pd.DataFrame, tmp_path: Path, duckdb_url: str) -> None:
    params = {**PVA.contract_params(), "horizon": 3}
    splitter = WalkForwardSplit(2, test_size=400, min_train_size=1500)
    with open_store(duckdb_url) as store:
        result = train_strategy(
            "pva",
            eurusd,
            params=params,
            splitter=splitter,
            store=store,
            runs_dir=tmp_path / "runs",
            models_dir=tmp_path / "models",
            progress=False,
        )
        runs = store.read_table("ml.backtest_runs")
        predictions = store.read_table("ml.predictions")
    run = result.run
    assert set(result.comparison.runs) == {"pva", "buy_and_hold"}
    hold = result.comparison.runs["buy_and_hold"]
    assert hold.signals.index.equals(run.signals.index), "same OOS bars for both"
    assert run.config["horizon"] == 3 and run.config["splitter"]["purge"] == 3
    assert run.config["signal"]["rule"] == "HysteresisSignal"

    # records in the store: both runs, and the PVA predictions of every test bar
    assert set(runs["run_id"]) == {run.run_id, hold.run_id}
    mine = predictions[predictions["run_id"] == run.run_id]
    assert len(mine) == run.predictions["p_up"].notna().sum() > 0

    # the run directory carries the attention heatmap of the last fold's model
    record = load_run(run.run_id, tmp_path / "runs")
    attention = record.explanations["attention"]
    assert attention.index[-1] == "rollout"
    assert attention.shape[1] == params["window"]
    assert attention.columns[-1] == run.signals.index[-1].strftime("%Y-%m-%d %H:%M")
    np.testing.assert_allclose(attention.loc["rollout"].sum(), 1.0, rtol=1e-6)
    importance = record.explanations["feature_importance"]
    np.testing.assert_allclose(importance["share"].sum(), 1.0, rtol=1e-6)
    assert "Model explanations" in (tmp_path / "runs" / run.run_id / "report.html").read_text()

    # the live model: fitted on every bar, reloadable, with the run that measured it
    assert result.model_dir == tmp_path / "models" / "EURUSD_1h" / "pva"
    training = json.loads((result.model_dir / "training.json").read_text())
    assert training["walk_forward_run"] == run.run_id
    assert training["train_end"] == eurusd.index[-1].isoformat()
    assert training["oos"]["metrics"]["sharpe"] == pytest.approx(run.metrics.sharpe)
    live = registry.get("pva").load(result.model_dir)
    p = live.predict_proba(eurusd)["p_up"]
    assert p.iloc[-2000:].notna().all()
    assert list(importance.index) == live.feature_names_  # type: ignore[attr-defined]


def test_factory_checks_parameters_at_once() -> None:
    with pytest.raises(StrategyError, match="window"):
        strategy_factory("pva", {"window": 0})
    with pytest.raises(StrategyError, match="no_such_param"):
        strategy_factory("sma_crossover", {"no_such_param": 1})
    with pytest.raises(StrategyError, match="unknown strategy 'magic'"):
        strategy_factory("magic")
    make = strategy_factory("pva", {"window": 8})
    assert strategy_params(make(seed=3))["seed"] == 3
    assert strategy_params(make())["window"] == 8
    assert pickle.loads(pickle.dumps(make)) == make  # worker processes make strategies


def test_label_horizon_is_the_purge() -> None:
    assert label_horizon(PVA(horizon=5)) == 5
    assert label_horizon(registry.create("buy_and_hold")) == 1


def test_unknown_strategy_fails_before_any_work(eurusd: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match="unknown strategy 'nope'"):
        train_strategy("nope", eurusd, to_signal=HysteresisSignal(), runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())
