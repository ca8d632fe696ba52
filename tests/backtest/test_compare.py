"""Comparing strategies on one split: the table, the equity curves, the verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from mlengine import datasets
from mlengine.backtest.baselines import BuyAndHoldBaseline, SMACrossover, TimeSeriesMomentum
from mlengine.backtest.compare import TABLE_COLUMNS, Comparison, compare
from mlengine.backtest.costs import CostModel
from mlengine.backtest.validity import ValidityConfig
from mlengine.backtest.walkforward import WalkForwardError
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.store import open_store

FAST = ValidityConfig(bootstrap_reps=100, baseline_samples=100)
SPLIT = WalkForwardSplit(test_size="30D", min_train_size=24 * 30)
COSTS = CostModel(commission_bps=2.0, spread_bps=2.0, slippage_bps=1.0)


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    return compare(
        {
            "sma 10/50": lambda: SMACrossover(fast=10, slow=50),
            "buy and hold": BuyAndHoldBaseline,
            "tsmom 24": lambda: TimeSeriesMomentum(lookback=24),
        },
        datasets.load("btcusd_1h_coinbase"),
        splitter=SPLIT,
        costs=COSTS,
        validity=FAST,
        progress=False,
    )


def test_one_table_row_per_strategy(comparison: Comparison) -> None:
    table = comparison.table
    assert list(table.index) == ["sma 10/50", "buy and hold", "tsmom 24"]
    assert tuple(table.columns) == TABLE_COLUMNS
    assert list(table["strategy"]) == ["sma_crossover", "buy_and_hold", "tsmom"]
    for name, run in comparison.runs.items():
        assert run.name == name
        assert table.loc[name, "sharpe"] == run.metrics.sharpe
        assert table.loc[name, "max_drawdown"] == run.metrics.max_drawdown
        assert table.loc[name, "score"] == run.verdict.score
        assert table.loc[name, "effective"] == run.verdict.effective
        assert run.config["backtest"]["costs"]["BTCUSD"]["commission_bps"] == 2.0
    assert table.loc["buy and hold", "n_trades"] == 1


def test_same_split_same_bars_for_everyone(comparison: Comparison) -> None:
    runs = list(comparison.runs.values())
    for run in runs[1:]:
        assert run.signals.index.equals(runs[0].signals.index)
        assert [f.fold for f in run.folds] == [f.fold for f in runs[0].folds]
    equity = comparison.equity
    assert list(equity.columns) == list(comparison.runs)
    assert equity.index.equals(runs[0].result.equity.index)
    np.testing.assert_array_equal(equity["tsmom 24"], comparison.runs["tsmom 24"].result.equity)
    assert comparison.verdicts["sma 10/50"] is comparison.runs["sma 10/50"].verdict


def test_rich_table_and_report(tmp_path: Path, comparison: Comparison) -> None:
    console = Console(record=True, width=220)
    console.print(comparison.to_rich())
    text = console.export_text()
    for name in comparison.runs:
        assert name in text
    assert "Walk-forward comparison" in text and "%" in text
    page = comparison.write_report(tmp_path / "cmp.html", main="sma 10/50").read_text()
    assert "Strategy comparison" in page and "tsmom 24" in page
    with pytest.raises(WalkForwardError, match="no run named 'x'"):
        comparison.write_report(tmp_path / "x.html", main="x")


def test_each_strategy_is_a_trial(duckdb_url: str) -> None:
    bars = datasets.load("eurusd_1h")
    with open_store(duckdb_url) as store:
        result = compare(
            {"a": lambda: SMACrossover(fast=5, slow=20), "b": BuyAndHoldBaseline},
            bars,
            splitter=SPLIT,
            store=store,
            validity=FAST,
            progress=False,
        )
        trials = store.read_table("ml.trials")
        runs = store.read_table("ml.backtest_runs")
    assert sorted(trials["strategy"]) == ["buy_and_hold", "sma_crossover"]
    assert sorted(runs["name"]) == ["a", "b"]
    assert set(runs["run_id"]) == {r.run_id for r in result.runs.values()}


@pytest.mark.parametrize(
    ("strategies", "kw", "message"),
    [
        ({}, {}, "non-empty mapping"),
        ({"": BuyAndHoldBaseline}, {}, "non-empty text"),
        ({"a": BuyAndHoldBaseline}, {"run_name": "x"}, "do not pass run_name"),
    ],
)
def test_bad_input(strategies: dict, kw: dict, message: str) -> None:
    bars = datasets.load("eurusd_1h")
    with pytest.raises(WalkForwardError, match=message):
        compare(strategies, bars, splitter=SPLIT, progress=False, **kw)


def test_cells_format_missing_values() -> None:
    from mlengine.backtest.compare import _cell

    assert _cell("sharpe", float("nan")) == "n/a"
    assert _cell("total_return", 0.1234) == "12.3%"
    assert _cell("effective", False) == "no"
    assert _cell("n_trades", 3) == "3"
    assert _cell("strategy", "x") == "x"
