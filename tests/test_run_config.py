"""One run from a config file: validation that names the key, the example configs, the date
ranges, `mlengine run`, and the same OOS predictions from the same config and seed."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mlengine import datasets
from mlengine.cli import app
from mlengine.data.store import open_store
from mlengine.pipeline import (
    AssetSpec,
    ConfigFileError,
    EnsemblePipeline,
    RunConfig,
    asset_bars,
    load_run_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUICK = """\
name: test
assets:
  - {symbol: EURUSD, timeframe: 1h, start: 2017-01-01, end: 2017-09-30}
ensemble:
  strategies: {msa: {}, tsmom: {}}
  min_train: 1500
  meta_min_train: 500
  executor: serial
  validity: {bootstrap_reps: 100, baseline_samples: 100}
"""


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_example_configs_validate(path: Path) -> None:
    config = load_run_config(path)
    assert config.assets and len(config.ensemble.strategies) >= 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nassets: []\n", "assets: List should have at least 1 item"),
        ("name: x\nassets: [{symbol: EURUSD}]\n", "assets.0.timeframe: Field required"),
        (QUICK.replace("meta_min_train", "meta_min_trian"), "ensemble.meta_min_trian: Extra"),
        (QUICK + "colour: red\n", "colour: Extra inputs are not permitted"),
        (QUICK.replace("min_train: 1500", "min_train: -3"), "ensemble.min_train: Input should"),
        ("- just\n- a list\n", "expected a mapping of settings, got list"),
        (
            "name: x\nassets: [{symbol: EURUSD, timeframe: 1h, start: 2018-01-01, "
            "end: 2017-01-01}]\n",
            "assets.0.end: Value error, end 2017-01-01 00:00:00 is before start",
        ),
        ("name: [unclosed\n", "while parsing"),
    ],
)
def test_a_bad_config_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=re.escape(message)) as caught:
        load_run_config(path)
    assert str(caught.value).startswith(str(path))


def test_asset_bars_cut_to_the_date_range(duckdb_url: str) -> None:
    with open_store(duckdb_url) as store:
        store.write_bars(datasets.load("eurusd_1h"))
        spec = AssetSpec.model_validate(
            {"symbol": "EURUSD", "timeframe": "1h", "start": "2017-03-01", "end": "2017-03-31"}
        )
        bars = asset_bars(store, spec)
        assert bars.index[0] >= pd.Timestamp("2017-03-01", tz="UTC")
        assert bars.index[-1] <= pd.Timestamp("2017-03-31", tz="UTC")
        assert bars.attrs["symbol"] == "EURUSD" and len(bars) > 400
        empty = AssetSpec.model_validate(
            {"symbol": "EURUSD", "timeframe": "1h", "start": "2030-01-01"}
        )
        with pytest.raises(ConfigFileError, match="no stored bar between 2030-01-01"):
            asset_bars(store, empty)


def test_the_same_config_and_seed_give_the_same_predictions(
    tmp_path: Path, duckdb_url: str
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(QUICK)
    config = load_run_config(path)
    assert isinstance(config, RunConfig)
    with open_store(duckdb_url) as store:
        store.write_bars(datasets.load("eurusd_1h"))
        bars = asset_bars(store, config.assets[0])
    first, second = (
        EnsemblePipeline(config.ensemble).run(bars, save=False, progress=False) for _ in range(2)
    )
    for name, run in first.comparison.runs.items():
        pd.testing.assert_frame_equal(run.predictions, second.comparison.runs[name].predictions)


def test_mlengine_run_runs_every_asset_of_a_config(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(QUICK)
    db = f"duckdb:///{(tmp_path / 'store.duckdb').as_posix()}"
    done = CliRunner().invoke(app, ["run", str(path), "--db", db])
    assert done.exit_code == 0, done.output
    assert "test: EURUSD 1h" in done.output and "Ensemble summary" in done.output
    with open_store(db) as store:
        runs = store.read_table("ml.backtest_runs")
    assert set(runs["name"]) == {"ensemble", "equal_weight", "logistic_stack", "msa", "tsmom"}
    assert runs["end_ts"].max() <= pd.Timestamp("2017-09-30", tz="UTC")
    run_id = re.search(r"run (test-\S+) done", done.output)
    assert run_id is not None
    assert {c["config_run"] for c in runs["config"]} == {run_id.group(1)}
    shown = CliRunner().invoke(app, ["runs", "show", run_id.group(1)])
    assert shown.exit_code == 0, shown.output
    assert "EURUSD_1h" in shown.output and "Ensemble summary" in shown.output
    assert "done" in shown.output and "resume with" not in shown.output
    rebuilt = CliRunner().invoke(app, ["report", run_id.group(1)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "EURUSD_1h: report" in rebuilt.output

    path.write_text(QUICK.replace("tsmom", "magic"))
    failed = CliRunner().invoke(app, ["run", str(path), "--db", db])
    assert failed.exit_code == 2 and "unknown strategy 'magic'" in failed.output
