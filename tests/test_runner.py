"""A config run's id, directory and manifest; resume after a failure with the same
predictions as one uninterrupted run; a resume refuses another configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mlengine import datasets
from mlengine.cli import app
from mlengine.data.store import open_store
from mlengine.pipeline import RunConfig, load_run_config
from mlengine.runner import ConfigRun, ConfigRunError, is_config_run

CONFIG = """\
name: Resume Test
assets:
  - {symbol: EURUSD, timeframe: 1h, start: 2017-01-01, end: 2017-07-31}
  - {symbol: BTCUSD, timeframe: 1h, start: 2018-01-01, end: 2018-07-31}
ensemble:
  strategies: {msa: {}, tsmom: {}}
  min_train: 1500
  meta_min_train: 500
  executor: serial
  validity: {bootstrap_reps: 100, baseline_samples: 100}
"""


@pytest.fixture
def config(tmp_path: Path) -> RunConfig:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG)
    return load_run_config(path)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"duckdb:///{(tmp_path / 'store.duckdb').as_posix()}"
    with open_store(url) as store:
        store.write_bars(datasets.load("eurusd_1h"))
        store.write_bars(datasets.load("btcusd_1h_coinbase"))
    return url


def _predictions(run: ConfigRun) -> dict[str, pd.DataFrame]:
    out = {}
    for key, entry in run.manifest["assets"].items():
        for name, cid in entry["candidates"].items():
            file = run.path / "candidates" / cid / "predictions.parquet"
            out[f"{key}/{name}"] = pd.read_parquet(file)
    return out


def test_a_run_has_an_id_a_directory_and_a_manifest(
    tmp_path: Path, config: RunConfig, store_url: str
) -> None:
    run = ConfigRun.start(config, tmp_path / "runs")
    assert run.run_id.startswith("resume-test-") and run.path == tmp_path / "runs" / run.run_id
    assert is_config_run(run.path) and not is_config_run(tmp_path)
    with open_store(store_url) as store:
        done = [a.symbol for a, r in run.execute(store, progress=False) if r is not None]
        rows = store.read_table("ml.backtest_runs")
    assert done == ["EURUSD", "BTCUSD"]
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["run_id"] == run.run_id
    assert RunConfig(**yaml.safe_load((run.path / "config.yaml").read_text())) == config
    for key in ("EURUSD_1h", "BTCUSD_1h"):
        entry = manifest["assets"][key]
        assert entry["status"] == "done"
        assert (run.path / entry["report"]).is_file()
        assert set(entry["candidates"]) == {
            "ensemble",
            "equal_weight",
            "logistic_stack",
            "msa",
            "tsmom",
        }
        assert {row["name"] for row in entry["summary"]} == set(entry["candidates"])
        assert any((run.path / "jobs" / key / "msa").iterdir())
    ids = {cid for e in manifest["assets"].values() for cid in e["candidates"].values()}
    assert ids == set(rows["run_id"])
    assert {c["config_run"] for c in rows["config"]} == {run.run_id}
    assert ConfigRun.open(run.run_id, tmp_path / "runs").manifest == manifest


def test_a_resumed_run_skips_what_is_done_and_predicts_as_one_run(
    tmp_path: Path, config: RunConfig, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = ConfigRun.start(config, tmp_path / "a")
    with open_store(store_url) as store:
        list(whole.execute(store, progress=False))
    expected = _predictions(whole)

    broken = ConfigRun.start(config, tmp_path / "b")
    with open_store(store_url) as store:
        store.delete_series("BTCUSD", "1h")  # the second asset fails
        with pytest.raises(Exception, match="BTCUSD"):
            list(broken.execute(store, progress=False))
        store.write_bars(datasets.load("btcusd_1h_coinbase"))
    manifest = json.loads((broken.path / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["assets"]["EURUSD_1h"]["status"] == "done"
    assert "BTCUSD" in manifest["assets"]["BTCUSD_1h"]["error"]
    eurusd = manifest["assets"]["EURUSD_1h"]

    resumed = ConfigRun.resume(broken.run_id, root=tmp_path / "b")
    with open_store(store_url) as store:
        steps = [(a.symbol, r is None) for a, r in resumed.execute(store, progress=False)]
    assert steps == [("EURUSD", True), ("BTCUSD", False)]
    assert resumed.manifest["assets"]["EURUSD_1h"] == eurusd
    got = _predictions(resumed)
    assert got.keys() == expected.keys()
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(got[name], frame, check_freq=False)


def test_a_resume_refuses_another_configuration_but_not_other_execution(
    tmp_path: Path, config: RunConfig
) -> None:
    run = ConfigRun.start(config, tmp_path)
    other = RunConfig(
        **(config.model_dump() | {"ensemble": config.ensemble.model_dump() | {"min_train": 1000}})
    )
    with pytest.raises(ConfigRunError, match=r"differs in ensemble.min_train \(1500 -> 1000\)"):
        ConfigRun.resume(run.run_id, other, root=tmp_path)
    faster = RunConfig(
        **(
            config.model_dump()
            | {"ensemble": config.ensemble.model_dump() | {"executor": "local", "workers": 2}}
        )
    )
    assert ConfigRun.resume(run.run_id, faster, root=tmp_path).config.ensemble.workers == 2


def test_opening_something_else_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigRunError, match="not a config run"):
        ConfigRun.open(tmp_path)
    with pytest.raises(Exception, match="no run directory at"):
        ConfigRun.open("nope", tmp_path)


def test_mlengine_run_resume_needs_a_config_or_a_run(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["run"])
    assert done.exit_code == 2 and "give a config file, or --resume RUN_ID" in done.output
    missing = CliRunner().invoke(app, ["run", "--resume", "nope"])
    assert missing.exit_code == 2 and "no run directory" in missing.output


def test_fit_live_from_a_run_reuses_its_stored_jobs(tmp_path: Path) -> None:
    from mlengine.ensemble.live import LiveEnsemble, live_dir

    db = f"duckdb:///{(tmp_path / 'store.duckdb').as_posix()}"
    with open_store(db) as store:
        store.write_bars(datasets.load("eurusd_1h").iloc[:3200])
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.replace(
        "  - {symbol: EURUSD, timeframe: 1h, start: 2017-01-01, end: 2017-07-31}\n"
        "  - {symbol: BTCUSD, timeframe: 1h, start: 2018-01-01, end: 2018-07-31}\n",
        "  - {symbol: EURUSD, timeframe: 1h}\n",
    ))  # fmt: skip
    runs = tmp_path / "data"
    env = {"MLENGINE_DATA_DIR": str(runs)}
    done = CliRunner().invoke(app, ["run", str(config), "--db", db], env=env)
    assert done.exit_code == 0, done.output
    (run,) = (runs / "runs").iterdir()
    jobs = run / "jobs" / "EURUSD_1h"
    stamps = {p: p.stat().st_mtime_ns for p in jobs.rglob("output.json")}
    assert stamps
    models = tmp_path / "models"
    args = ["fit-live", "--symbol", "EURUSD", "--timeframe", "1h", "--run", run.name]
    fitted = CliRunner().invoke(app, [*args, "--db", db, "--models", str(models)], env=env)
    assert fitted.exit_code == 0, fitted.output
    assert {p: p.stat().st_mtime_ns for p in jobs.rglob("output.json")} == stamps
    live = LiveEnsemble.load(live_dir(models, "EURUSD", "1h"))
    assert list(live.strategies) == ["msa", "tsmom"]
    other = ["fit-live", "--symbol", "BTCUSD", "--timeframe", "1h", "--run", run.name]
    missing = CliRunner().invoke(app, [*other, "--db", db, "--models", str(models)], env=env)
    assert missing.exit_code == 2 and "has no asset BTCUSD_1h" in missing.output
