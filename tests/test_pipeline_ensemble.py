"""The ensemble end to end: level-1 walk-forward of the strategies, the gate and calibration
walk-forward on their out-of-fold predictions, and the comparison after costs with each
strategy, the equal-weight average and logistic stacking on the same bars."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mlengine import datasets
from mlengine.cli import app
from mlengine.data.store import open_store
from mlengine.ensemble.gating import weight_entropy
from mlengine.pipeline import EnsembleConfig, EnsemblePipeline, EnsembleResult
from tests.strategies.controls import synthetic_bars

CHEAP = ("msa", "tsmom", "sma_crossover")
FAST = {"bootstrap_reps": 100, "baseline_samples": 100}


def _config(**kw: object) -> EnsembleConfig:
    settings: dict[str, object] = {
        "strategies": {name: {} for name in CHEAP},
        "min_train": 1500,
        "meta_min_train": 800,
        "executor": "serial",
        "validity": FAST,
    }
    return EnsembleConfig(**(settings | kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


@pytest.fixture(scope="module")
def result(eurusd: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> EnsembleResult:
    root = tmp_path_factory.mktemp("ensemble")
    return EnsemblePipeline(_config()).run(eurusd, save=root, progress=False)


def test_every_candidate_is_scored_on_the_same_meta_test_bars(result: EnsembleResult) -> None:
    runs = result.comparison.runs
    assert list(runs) == ["ensemble", "equal_weight", "logistic_stack", *CHEAP]
    first = runs["ensemble"].signals.index
    assert all(run.signals.index.equals(first) for run in runs.values())
    # the meta test bars are out-of-fold bars of every strategy, after the meta training rows
    assert first[0] > result.stack.index[0]
    assert result.meta.index.isin(result.stack.index).all()
    assert first[0] == result.meta.index[0] and first[-1] == result.meta.index[-1]


def test_the_ensemble_is_the_calibrated_gate_mixture(result: EnsembleResult) -> None:
    pred = result.run.predictions
    weights = pred[[f"w.{name}" for name in CHEAP]]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    probs = result.stack.probs.loc[pred.index].fillna(0.5).to_numpy()
    mixture = (weights.to_numpy() * probs).sum(axis=1)
    np.testing.assert_allclose(pred["p_raw"], mixture, atol=1e-5)
    # calibration is monotone in the raw mixture within each meta fold
    for _, fold in pred.groupby("fold"):
        ordered = fold.sort_values("p_raw")["p_up"].to_numpy()
        assert np.all(np.diff(ordered) >= -1e-12)
    assert {f.calibration for f in result.meta.folds} <= {"isotonic", "platt", "temperature"}


def test_summary_has_the_closing_figures(result: EnsembleResult) -> None:
    summary = result.summary
    assert list(summary.index) == list(result.comparison.runs)
    for col in ("direction_accuracy", "top20_accuracy", "ece", "sharpe", "max_drawdown", "dsr"):
        assert summary[col].notna().all(), col
    assert np.isfinite(summary["ece_raw"]["ensemble"])
    assert summary.drop(index="ensemble")["ece_raw"].isna().all()
    # the PBO of picking the best of the compared candidates, from their returns
    assert summary["pbo"].between(0, 1).all() and summary["pbo"].nunique() == 1
    # direction accuracy recomputed by hand for one strategy
    y = result.stack.y.reindex(result.meta.index)
    p = result.comparison.runs["msa"].predictions["p_up"].reindex(result.meta.index).fillna(0.5)
    known = y.notna() & (p != 0.5)
    hits = ((p[known] > 0.5) == (y[known] == 1.0)).sum()
    assert summary.loc["msa", "direction_accuracy"] == pytest.approx(hits / known.sum())


def test_report_shows_gate_weights_calibration_and_the_comparison(result: EnsembleResult) -> None:
    assert result.report is not None and result.report.exists()
    html = result.report.read_text()
    for text in ("Gate weights over time", "Calibration before and after", "logistic_stack"):
        assert text in html, text
    explanations = result.run.explanations
    assert {"gate_weights", "calibration", "calibration_metrics", "ensemble_summary"} <= set(
        explanations
    )


def test_records_every_candidate_in_the_store(eurusd: pd.DataFrame, duckdb_url: str) -> None:
    bars = eurusd.iloc[:4500]
    with open_store(duckdb_url) as store:
        out = EnsemblePipeline(_config(meta_min_train=500)).run(
            bars, store=store, save=False, progress=False
        )
        runs = store.read_table("ml.backtest_runs")
        trials = store.read_table("ml.trials")
    assert set(runs["run_id"]) == {r.run_id for r in out.comparison.runs.values()}
    assert set(trials["strategy"]) == set(out.comparison.runs)


def test_local_processes_give_the_same_predictions_as_serial(eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:4000]
    config = _config(meta_min_train=500, strategies={"msa": {}, "tsmom": {}})
    serial = EnsemblePipeline(config).run(bars, save=False, progress=False)
    local = config.model_copy(update={"executor": "local", "workers": 2})
    parallel = EnsemblePipeline(local).run(bars, save=False, progress=False)
    for name, run in serial.comparison.runs.items():
        pd.testing.assert_frame_equal(run.predictions, parallel.comparison.runs[name].predictions)


def test_raising_the_entropy_coefficient_spreads_the_gate(eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:4000]
    entropies = []
    for coefficient in (0.0, 1.0):
        config = _config(meta_min_train=500, gate={"entropy": coefficient}, calibration="none")
        out = EnsemblePipeline(config).run(bars, save=False, progress=False)
        entropies.append(weight_entropy(out.meta.weights).mean())
    assert entropies[1] > entropies[0]
    assert entropies[1] > 0.85 * math.log(len(CHEAP))


def test_random_walk_ensemble_stays_at_chance() -> None:
    rng = np.random.default_rng(11)
    bars = synthetic_bars(rng.normal(0.0, 0.002, 6000), seed=11)
    config = _config(test_size=500, min_train=1500, meta_test_size=400, meta_min_train=800)
    out = EnsemblePipeline(config).run(bars, save=False, progress=False)
    y = out.stack.y.reindex(out.meta.index)
    p = out.run.predictions["p_up"]
    known = y.notna() & (p != 0.5)
    n = int(known.sum())
    accuracy = float(((p[known] > 0.5) == (y[known] == 1.0)).mean())
    assert n > 2000
    assert abs(accuracy - 0.5) < 3 * math.sqrt(0.25 / n), (accuracy, n)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"strategies": {"msa": {}}}, "at least 2 strategies"),
        ({"strategies": {"msa": {}, "magic": {}}}, "unknown strategy 'magic'"),
        ({"strategies": {"msa": {"no_such": 1}, "tsmom": {}}}, "no_such"),
        ({"calibration": "guess"}, "calibration\n  Input should be 'auto', 'isotonic'"),
        ({"gate": {"entropy": -1}}, "entropy"),
        ({"executor": "cluster"}, "executor\n  Input should be 'serial', 'local' or 'ray'"),
        ({"validity": {"bootstrap_reps": -5}}, "bootstrap_reps"),
        ({"meta_min_train": 0}, "meta_min_train"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_settings_name_what_is_wrong(settings: dict[str, object], message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        EnsembleConfig(**settings)  # type: ignore[arg-type]


def test_cli_runs_the_ensemble_and_rejects_a_bad_config(tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "ensemble.yaml"
    config.write_text(
        "strategies: {msa: {}, tsmom: {}}\nmin_train: 1500\nmeta_min_train: 500\n"
        "validity: {bootstrap_reps: 100, baseline_samples: 100}\n"
    )
    out = tmp_path / "report.html"
    args = ["ensemble", "--dataset", "eurusd_1h", "--config", str(config)]
    done = runner.invoke(app, [*args, "--executor", "serial", "--out", str(out), "--llm", "rules"])
    assert done.exit_code == 0, done.output
    assert "Ensemble summary" in done.output and "logistic_stack" in done.output
    assert "ensemble + llm" in done.output and "LLM provider outcomes" in done.output
    assert out.exists()

    config.write_text("strategies: {msa: {}, tsmom: {}}\nmeta_min_trian: 500\n")
    failed = runner.invoke(app, args)
    assert failed.exit_code != 0
    assert "meta_min_trian" in failed.output and str(config) in failed.output


def test_calibrated_confidence_sizes_the_positions(eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:4000]
    out = EnsemblePipeline(_config(meta_min_train=500, sizing="kelly", enter=0.01)).run(
        bars, save=False, progress=False
    )
    run = out.run
    decided = run.result.signal.iloc[:, 0]
    p_up = run.signals["p_up"]
    side = np.sign(run.signals["position"])
    held = side != 0
    assert held.sum() > 10
    # half Kelly at even odds: |exposure| = 0.5 * (2p - 1) on the side taken, p calibrated
    edge = np.where(side > 0, p_up, 1.0 - p_up)[held]
    expected = np.clip(0.5 * (2.0 * edge - 1.0), 0.0, 1.0)
    np.testing.assert_allclose(np.abs(decided[held]), expected, atol=1e-9)
    assert decided[held].abs().max() < 1.0


def test_llm_decisions_at_the_entries_are_ablated(eurusd: pd.DataFrame, duckdb_url: str) -> None:
    bars = eurusd.iloc[:4000]
    config = _config(meta_min_train=500, strategies={"msa": {}, "tsmom": {}}, llm="rules")
    with open_store(duckdb_url) as store:
        out = EnsemblePipeline(config).run(bars, store=store, save=False, progress=False)
        logged = store.read_table("ml.llm_signals")
    assert out.decisions is not None and len(out.decisions) == len(logged) > 0
    assert out.decisions["valid"].all() and set(out.decisions["provider"]) == {"rules"}
    table = out.run.explanations["llm_ablation"]
    assert list(table["name"]) == ["ensemble", "ensemble + llm"]
    # the ensemble-alone row is the ensemble's own backtest on the same bars
    assert table["sharpe"].iloc[0] == pytest.approx(out.run.metrics.sharpe)
    outcomes = out.run.explanations["llm_outcomes"]
    assert outcomes["n"].sum() == len(logged)
    with pytest.raises(ValidationError, match="unknown provider 'oracle'"):
        _config(llm="rules,oracle")
