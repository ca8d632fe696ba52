from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlengine import datasets
from mlengine.cli import app

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_import_then_list(duckdb_url: str) -> None:
    code, out, _ = _run("data", "import", str(datasets.path("eurusd_1h")), "--db", duckdb_url)
    assert code == 0, out
    assert "imported 6,225 bars of EURUSD 1h" in out
    code, out, _ = _run("data", "list", "--db", duckdb_url)
    assert code == 0
    assert "EURUSD" in out
    assert "6,225" in out


def test_import_is_idempotent(duckdb_url: str) -> None:
    from mlengine.data.store import open_store

    path = str(datasets.path("eurusd_1h"))
    for _ in range(2):
        assert _run("data", "import", path, "--db", duckdb_url)[0] == 0
    with open_store(duckdb_url) as store:
        assert len(store.read_bars("EURUSD", "1h")) == 6225


def test_validate_file_json_reports_real_defects() -> None:
    code, out, _ = _run("data", "validate", str(datasets.path("btcusd_15m")), "--json")
    assert code == 1, "duplicates and off-grid bars are errors"
    report = json.loads(out)
    checks = {f["check"] for f in report["findings"]}
    assert {"duplicate_rows", "conflicting_duplicates", "out_of_order", "off_grid"} <= checks


def test_validate_clean_stored_series_exits_zero(duckdb_url: str) -> None:
    path = str(datasets.path("btcusd_15m"))
    assert _run("data", "import", path, "--db", duckdb_url)[0] == 0
    code, out, _ = _run(
        "data", "validate", "--symbol", "BTCUSD", "--timeframe", "15m", "--db", duckdb_url
    )
    assert code == 0, out


def test_resample_stores_higher_timeframes(duckdb_url: str) -> None:
    from mlengine.data.store import open_store

    assert _run("data", "import", str(datasets.path("btcusd_15m")), "--db", duckdb_url)[0] == 0
    code, out, _ = _run(
        "data", "resample", "--symbol", "BTCUSD", "--from", "15m", "--to", "1h", "--to", "4h",
        "--db", duckdb_url,
    )  # fmt: skip
    assert code == 0, out
    with open_store(duckdb_url) as store:
        series = store.list_series()
        low = store.read_bars("BTCUSD", "15m")
        high = store.read_bars("BTCUSD", "1h")
    assert set(series["timeframe"]) == {"15m", "1h", "4h"}
    assert high["volume"].sum() == pytest.approx(low["volume"].sum(), rel=1e-3)


def test_missing_file_is_a_clear_error(tmp_path: Path, duckdb_url: str) -> None:
    code, _, err = _run("data", "import", str(tmp_path / "nope.csv"), "--db", duckdb_url)
    assert code == 2
    assert "nope.csv" in err
    assert "Traceback" not in err


def test_unknown_timeframe_is_a_clear_error(duckdb_url: str) -> None:
    path = str(datasets.path("eurusd_1h"))
    code, _, err = _run("data", "import", path, "--timeframe", "7x", "--db", duckdb_url)
    assert code == 2
    assert "unknown timeframe '7x'" in err


@pytest.mark.llm
def test_demo_imports_all_bundled_sets(tmp_path: Path) -> None:
    from mlengine.data.store import open_store
    from mlengine.ensemble.live import LiveEnsemble, live_dir
    from mlengine.llm.signal_log import read_decisions

    code, out, _ = _run("demo", "--data-dir", str(tmp_path))
    assert code == 0, out
    assert (tmp_path / "mlengine.duckdb").exists()
    for name in datasets.names():
        assert name in out
    (run,) = (tmp_path / "runs").glob("demo-*")
    assert (run / "reports" / "ensemble_EURUSD_1h.html").exists()
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"
    # the rules' decisions at the ensemble's entries, then one real decision of the local
    # model (or, when it fails the checks, of the rules) on the last bar
    with open_store(f"duckdb:///{(tmp_path / 'mlengine.duckdb').as_posix()}") as store:
        logged = read_decisions(store, symbol="EURUSD", timeframe="1h")
    first = [chain[0]["provider"] for chain in logged["fallback_chain"]]
    assert first.count("local") == 1 and set(first) == {"local", "rules"}
    assert bool(logged["valid"].all())
    # the live ensemble the service serves, fitted on the run's out-of-fold stack
    live = LiveEnsemble.load(live_dir(tmp_path / "models", "EURUSD", "1h"))
    assert list(live.strategies) == ["pva", "mrd", "vbp", "msa", "mts"]
    assert "ensemble p_up" in out and "serve it: mlengine serve" in out
    assert logged["prompt_version"].iloc[0] and "decision on the last bar" in out


def test_backtest_compares_baselines_and_report_rebuilds(tmp_path: Path) -> None:
    from mlengine.backtest.runs import load_run

    db = f"duckdb:///{(tmp_path / 'store.duckdb').as_posix()}"
    out = tmp_path / "compare.html"
    code, stdout, err = _run(
        "backtest", "--dataset", "eurusd_1h", "--strategy", "sma_crossover", "--strategy",
        "buy_and_hold", "--param", "sma_crossover.fast=5", "--param", "sma_crossover.slow=30",
        "--test-size", "30D", "--min-train", "720", "--out", str(out), "--db", db,
    )  # fmt: skip
    assert code == 0, stdout + err
    assert out.exists() and "<html" in out.read_text()[:200].lower()
    assert "sma_crossover" in stdout and "buy_and_hold" in stdout
    run_ids = [line.split()[-1] for line in stdout.splitlines() if " run " in line]
    assert len(run_ids) == 2
    rebuilt = tmp_path / "rebuilt.html"
    code, stdout, err = _run("report", run_ids[0], "--out", str(rebuilt))
    assert code == 0, stdout + err
    assert rebuilt.stat().st_size > 100_000
    record = load_run(run_ids[0])
    assert record.run_id == run_ids[0]
    assert record.config["params"] == {"fast": 5, "slow": 30, "allow_short": True}


def test_backtest_rejects_unknown_strategy_and_negative_costs(duckdb_url: str) -> None:
    code, _, err = _run("backtest", "--dataset", "eurusd_1h", "--strategy", "magic")
    assert code == 2
    assert "magic" in err and "unknown" in err
    code, _, err = _run("backtest", "--dataset", "eurusd_1h", "--commission-bps", "-1")
    assert code == 2
    assert "commission" in err


def test_bad_params_are_clear_errors() -> None:
    cases = [
        (("--strategy", "pva", "--strategy", "tsmom", "--param", "window=8"), "name the strategy"),
        (("--strategy", "pva", "--param", "mrd.window=8"), "'mrd' is not among"),
        (("--strategy", "pva", "--param", "window"), "KEY=VALUE"),
        (("--strategy", "pva", "--param", "window=0"), "window must be a positive integer"),
        (("--strategy", "pva", "--enter", "0.7"), "enter"),
    ]
    for args, message in cases:
        code, _, err = _run("backtest", "--dataset", "eurusd_1h", *args)
        assert code == 2, args
        assert message in err, (args, err)


def test_train_pva_on_a_symbol_imports_the_bundled_sample(duckdb_url: str) -> None:
    from mlengine.backtest.runs import load_run
    from mlengine.config import get_settings

    small = ("window=16", "d_model=16", "n_heads=2", "n_layers=1", "epochs=2", "n_estimators=20")
    tiny = [arg for p in small for arg in ("--param", p)]
    code, out, err = _run(
        "train", "--strategy", "pva", "--symbol", "EURUSD", "--timeframe", "1h", *tiny,
        "--test-size", "90D", "--min-train", "3000", "--db", duckdb_url,
    )  # fmt: skip
    assert code == 0, out + err
    assert "importing the bundled eurusd_1h" in out
    assert "buy_and_hold" in out
    run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("pva run "))
    record = load_run(run_id)
    assert record.config["params"]["window"] == 16
    assert "attention" in record.explanations
    model = get_settings().data_dir / "models" / "EURUSD_1h" / "pva"
    assert (model / "manifest.json").is_file() and (model / "training.json").is_file()
    code, out, _ = _run("data", "list", "--db", duckdb_url)
    assert "6,225" in out, "the bundled sample was stored once"


def test_report_of_unknown_run_is_a_clear_error() -> None:
    code, _, err = _run("report", "no-such-run")
    assert code == 2
    assert "no-such-run" in err


def test_signal_decides_logs_and_reuses_the_live_model(tmp_path: Path) -> None:
    from mlengine.data.store import open_store
    from mlengine.llm.signal_log import read_decisions

    db = f"duckdb:///{(tmp_path / 'store.duckdb').as_posix()}"
    args = ("signal", "--symbol", "EURUSD", "--timeframe", "1h", "--strategy", "msa",
            "--providers", "rules", "--db", db)  # fmt: skip
    code, out, err = _run(*args)
    assert code == 0, out + err
    assert "fitting it on" in out and "rules" in out
    code, out, err = _run(*args)
    assert code == 0, out + err
    assert "fitting it on" not in out, "the saved live model is reused"
    with open_store(db) as store:
        logged = read_decisions(store, symbol="EURUSD", timeframe="1h")
    assert len(logged) == 2 and logged["valid"].all()
    assert set(logged["provider"]) == {"rules"}
    assert logged["ts"].nunique() == 1, "both decided on the last stored bar"
    code, _, err = _run("signal", "--symbol", "EURUSD", "--timeframe", "1h",
                        "--providers", "rules,oracle", "--db", db)  # fmt: skip
    assert code == 2 and "unknown provider 'oracle'" in err


def test_runs_list_and_show_read_the_stored_runs(tmp_path: Path) -> None:
    db = f"duckdb:///{(tmp_path / 'store.duckdb').as_posix()}"
    code, stdout, err = _run(
        "backtest", "--dataset", "eurusd_1h", "--strategy", "sma_crossover", "--strategy",
        "buy_and_hold", "--test-size", "30D", "--min-train", "720", "--db", db,
    )  # fmt: skip
    assert code == 0, stdout + err
    run_ids = [line.split()[-1] for line in stdout.splitlines() if " run " in line]
    code, listed, err = _run("runs", "list", "--db", db)
    assert code == 0, err
    assert all(run_id in listed for run_id in run_ids) and "sma" in listed
    code, shown, err = _run("runs", "show", run_ids[0])
    assert code == 0, err
    assert run_ids[0] in shown and "Key metrics" in shown and "sharpe" in shown
    assert "verdict: NOT EFFECTIVE" in shown or "verdict: EFFECTIVE" in shown
    assert "report:" in shown and '"fast"' in shown
    code, _, err = _run("runs", "show", "0" * 32)
    assert code == 2 and "0" * 32 in err
