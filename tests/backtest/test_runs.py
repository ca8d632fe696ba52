"""Run directories: save, load, list, the report, explanations, reproducibility and broken
directories."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlengine import datasets
from mlengine.backtest.baselines import SMACrossover
from mlengine.backtest.runs import (
    RunError,
    RunNotFoundError,
    list_runs,
    load_run,
    runs_root,
    save_run,
    to_record,
    write_run_report,
)
from mlengine.backtest.validity import ValidityConfig
from mlengine.backtest.walkforward import WalkForwardRun, walk_forward
from mlengine.config import get_settings
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.store import open_store
from mlengine.strategies import Context
from tests.backtest.test_report import model_explanations

FAST = ValidityConfig(bootstrap_reps=100, baseline_samples=100)
SPLIT = WalkForwardSplit(test_size="30D", min_train_size=2000)


class Noisy:
    """A stochastic model: a random weight and bias drawn in ``fit`` from its seed, applied
    to the last return standardised by the training volatility."""

    name = "noisy"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.params = {"scale": 1.0}

    def fit(self, bars: pd.DataFrame, *, context: Context | None = None) -> Noisy:
        rng = np.random.default_rng(self.seed)
        self.w_, self.b_ = rng.normal(size=2)
        self.sd_ = float(bars["close"].pct_change().std())
        return self

    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        z = bars["close"].pct_change().fillna(0.0).to_numpy() / self.sd_
        p = 1.0 / (1.0 + np.exp(-(self.w_ * z + self.b_)))
        return pd.DataFrame({"p_up": p, "z": z, "label": "x"}, index=bars.index)

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Noisy:
        raise NotImplementedError


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


@pytest.fixture(scope="module")
def run(eurusd: pd.DataFrame) -> WalkForwardRun:
    return walk_forward(
        lambda: SMACrossover(fast=10, slow=50),
        eurusd,
        splitter=SPLIT,
        validity=FAST,
        seed=5,
        progress=False,
    )


def test_save_and_load_round_trip(tmp_path: Path, run: WalkForwardRun) -> None:
    path = save_run(run, tmp_path)
    assert path == tmp_path / run.run_id
    files = {p.name for p in path.iterdir()}
    assert files == {
        "config.json",
        "manifest.json",
        "metrics.json",
        "verdict.json",
        "equity.parquet",
        "trades.parquet",
        "predictions.parquet",
        "report.html",
    }
    for record in (load_run(run.run_id, tmp_path), load_run(path), load_run(str(path))):
        assert record.run_id == run.run_id and record.path == path
        eq = record.equity
        assert list(eq.columns) == [
            "equity", "cash", "net_exposure", "returns", "benchmark", "close", "signal",
        ]  # fmt: skip
        pd.testing.assert_series_equal(eq["equity"], run.result.equity, check_freq=False)
        pd.testing.assert_series_equal(eq["returns"], run.result.returns, check_freq=False)
        pd.testing.assert_series_equal(eq["benchmark"], run.benchmark, check_freq=False)
        pd.testing.assert_frame_equal(record.trades, run.result.trades, check_dtype=False)
        pd.testing.assert_frame_equal(record.predictions, run.predictions, check_freq=False)
        assert record.metrics == json.loads(json.dumps(run.metrics.to_dict()))
        assert record.verdict["score"] == pytest.approx(run.verdict.score)
        assert record.config == run.config
    manifest = load_run(path).manifest
    assert manifest["seed"] == 5 and manifest["strategy"] == "sma_crossover"
    assert manifest["data_range"]["oos_start"] == run.signals.index[0].isoformat()
    assert {"python", "numpy", "pandas"} <= set(manifest["versions"])
    assert len(manifest["folds"]) == len(run.folds)
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    assert "report.html" in manifest["files"]


def test_report_is_written_and_rebuilt(tmp_path: Path, run: WalkForwardRun) -> None:
    path = save_run(run, tmp_path)
    page = (path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "sma_crossover EURUSD 1h" in page
    figures = int(page.split('name="mlengine-figures" content="')[1].split('"')[0])
    assert figures >= 6
    assert "Confidence and calibration" in page  # p_up was handed over
    again = write_run_report(load_run(path), tmp_path / "again.html")
    assert again.read_text().count("js-plotly-plot") == page.count("js-plotly-plot")
    with pytest.raises(RunError, match="is not saved"):
        _ = to_record(run).report_path


def test_save_without_report(tmp_path: Path, run: WalkForwardRun) -> None:
    path = save_run(run, tmp_path, report=False)
    assert not (path / "report.html").exists()
    assert "report.html" not in load_run(path).manifest["files"]


def test_runner_saves_under_the_settings_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eurusd: pd.DataFrame
) -> None:
    monkeypatch.setenv("MLENGINE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        assert runs_root() == tmp_path / "data" / "runs"
        saved = walk_forward(
            lambda: SMACrossover(fast=10, slow=50), eurusd, splitter=SPLIT, validity=FAST,
            progress=False, save=True,
        )  # fmt: skip
        assert load_run(saved.run_id).metrics["sharpe"] == pytest.approx(saved.metrics.sharpe)
    finally:
        get_settings.cache_clear()
    elsewhere = walk_forward(
        lambda: SMACrossover(fast=10, slow=50), eurusd, splitter=SPLIT, validity=FAST,
        progress=False, save=tmp_path / "other",
    )  # fmt: skip
    assert (tmp_path / "other" / elsewhere.run_id / "report.html").is_file()


def test_same_config_and_seed_reproduce_the_predictions(
    tmp_path: Path, eurusd: pd.DataFrame
) -> None:
    def go(seed: int, save: bool | Path = False) -> WalkForwardRun:
        return walk_forward(
            lambda seed: Noisy(seed), eurusd, splitter=SPLIT, validity=FAST, seed=seed,
            progress=False, save=save,
        )  # fmt: skip

    a, b, c = go(3, tmp_path), go(3, tmp_path), go(4)
    assert a.run_id != b.run_id
    pd.testing.assert_frame_equal(a.predictions, b.predictions, check_exact=True)
    assert a.metrics.total_return == b.metrics.total_return
    assert a.verdict.to_dict() == b.verdict.to_dict()
    assert not np.allclose(a.predictions["p_up"], c.predictions["p_up"])
    pd.testing.assert_frame_equal(
        load_run(a.run_id, tmp_path).predictions, load_run(b.run_id, tmp_path).predictions
    )
    assert load_run(a.run_id, tmp_path).config == load_run(b.run_id, tmp_path).config


@pytest.fixture(scope="module")
def explained(run: WalkForwardRun) -> WalkForwardRun:
    """The run with the explanations of a small transformer over its last bars."""
    bars = pd.DatetimeIndex(run.signals.index)
    return dataclasses.replace(run, explanations=model_explanations(bars))


def test_explanations_round_trip(tmp_path: Path, explained: WalkForwardRun) -> None:
    path = save_run(explained, tmp_path)
    names = ["attention", "feature_importance", "fold_scores"]
    files = [f"explain_{n}.parquet" for n in names]
    assert {p.name for p in path.glob("explain_*")} == set(files)
    record = load_run(path)
    assert record.manifest["explanations"] == names
    assert record.manifest["files"][-4:] == [*files, "report.html"]
    assert list(record.explanations) == names
    for name, frame in explained.explanations.items():
        pd.testing.assert_frame_equal(record.explanations[name], frame, check_exact=True)
    attention = record.explanations["attention"]
    assert attention.index.name == "attention" and attention.columns.name == "bar"
    assert attention.columns[-1] == explained.signals.index[-1].strftime("%Y-%m-%d %H:%M")
    assert record.explanations["feature_importance"].index.name == "feature"
    page = (path / "report.html").read_text()  # report_inputs hands them to the report
    assert '<section id="explanations">' in page and 'data-figure="attention"' in page
    assert 'data-figure="feature-importance"' in page and "<h3>Fold scores</h3>" in page
    assert to_record(explained).explanations.keys() == explained.explanations.keys()


def test_runs_without_explanations(tmp_path: Path, run: WalkForwardRun) -> None:
    path = save_run(run, tmp_path, report=False)
    assert load_run(path).explanations == {}
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["explanations"] == []
    del manifest["explanations"]  # a run directory saved before explanations existed
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert load_run(path).explanations == {}


@pytest.mark.parametrize("name", ["Attention", "feature-importance", "../equity", "", "é"])
def test_bad_explanation_names_are_refused(tmp_path: Path, run: WalkForwardRun, name: str) -> None:
    bad = dataclasses.replace(run, explanations={name: pd.DataFrame({"a": [1.0]})})
    message = f"explanation name {re.escape(repr(name))} must be lowercase letters"
    with pytest.raises(RunError, match=message):
        to_record(bad)
    with pytest.raises(RunError, match=message):
        save_run(bad, tmp_path)
    assert not (tmp_path / run.run_id).exists()  # refused before anything was written


def test_explanations_that_cannot_be_stored_as_they_are(run: WalkForwardRun) -> None:
    not_a_frame = dataclasses.replace(run, explanations={"notes": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(RunError, match="explanation 'notes' must be a DataFrame, got list"):
        to_record(not_a_frame)
    numbered = dataclasses.replace(run, explanations={"attention": pd.DataFrame({0: [0.5]})})
    with pytest.raises(RunError, match=r"explanation 'attention' has non-text column labels \(0\)"):
        to_record(numbered)


def test_broken_explanations_are_named(tmp_path: Path, explained: WalkForwardRun) -> None:
    path = save_run(explained, tmp_path, report=False)
    (path / "explain_fold_scores.parquet").unlink()
    with pytest.raises(RunError, match=r"explain_fold_scores\.parquet: missing"):
        load_run(path)
    manifest = json.loads((path / "manifest.json").read_text())
    for names, message in (
        (["../equity"], r"manifest\.json: explanation name '\.\./equity' must be lowercase"),
        ("attention", r"manifest\.json: 'explanations' must be a list of names"),
    ):
        (path / "manifest.json").write_text(json.dumps(manifest | {"explanations": names}))
        with pytest.raises(RunError, match=message):
            load_run(path)


@pytest.fixture
def saved(tmp_path: Path, run: WalkForwardRun) -> Iterator[Path]:
    yield save_run(run, tmp_path, report=False)


def test_missing_run_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match=r"no run directory at .*nope"):
        load_run("nope", tmp_path)
    with pytest.raises(RunNotFoundError):
        load_run(tmp_path / "absent")


def test_missing_file_is_named(saved: Path) -> None:
    (saved / "verdict.json").unlink()
    with pytest.raises(RunError, match=r"verdict\.json: missing from the run directory"):
        load_run(saved)


def test_corrupt_json_is_named(saved: Path) -> None:
    (saved / "metrics.json").write_text("{")
    with pytest.raises(RunError, match=r"metrics\.json: cannot read JSON"):
        load_run(saved)
    (saved / "metrics.json").write_text("[1, 2]")
    with pytest.raises(RunError, match=r"metrics\.json: expected a JSON object"):
        load_run(saved)


def test_corrupt_parquet_is_named(saved: Path) -> None:
    (saved / "trades.parquet").write_bytes(b"not parquet")
    with pytest.raises(RunError, match=r"trades\.parquet: cannot read Parquet"):
        load_run(saved)
    (saved / "equity.parquet").unlink()
    with pytest.raises(RunError, match=r"equity\.parquet: missing"):
        load_run(saved)


def test_list_runs_from_the_store(duckdb_url: str, eurusd: pd.DataFrame) -> None:
    with open_store(duckdb_url) as store:
        assert list_runs(store).empty
        ids = [
            walk_forward(
                lambda f=f: SMACrossover(fast=f, slow=50), eurusd, splitter=SPLIT, store=store,
                validity=FAST, progress=False,
            ).run_id
            for f in (5, 10)
        ]  # fmt: skip
        table = list_runs(store)
    assert list(table["run_id"]) == ids[::-1]  # newest first
    assert list(table.columns) == [
        "run_id", "name", "created_at", "symbols", "timeframe", "start_ts", "end_ts",
        "total_return", "sharpe", "max_drawdown", "direction_accuracy", "n_trades", "score",
        "effective",
    ]  # fmt: skip
    assert (table["symbols"] == "EURUSD").all()
    assert table["score"].between(0, 1).all()
