"""The signal service through FastAPI's test client: every route, its errors as JSON, the
API-key check, and a property-based run of schemathesis against the app's own OpenAPI
schema. The live ensemble is two rule baselines on synthetic bars (a fit in a second)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.result import Ok

from mlengine.backtest.runs import load_run, save_run
from mlengine.backtest.validity import ValidityConfig
from mlengine.backtest.walkforward import walk_forward
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.store import open_store
from mlengine.ensemble.live import LiveEnsemble, live_dir
from mlengine.pipeline import EnsembleConfig, strategy_factory
from mlengine.service.app import API_KEY_HEADER, LIVE_RUN, ServiceSettings, create_app
from tests.strategies.controls import synthetic_bars

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return synthetic_bars(rng.normal(0.0, 2e-3, 3000), seed=7)


@pytest.fixture(scope="module")
def models(bars: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    cfg = EnsembleConfig(
        strategies={"tsmom": {}, "sma_crossover": {}},
        min_train=1500,
        test_size=500,
        executor="serial",
    )
    LiveEnsemble.fit(bars, cfg, progress=False).save(live_dir(root, "SYN", "1h"))
    return root


@pytest.fixture(scope="module")
def runs(bars: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("runs")
    run = walk_forward(
        strategy_factory("sma_crossover"),
        bars,
        splitter=WalkForwardSplit(test_size=500, min_train_size=1500),
        validity=ValidityConfig(bootstrap_reps=100, baseline_samples=100),
        progress=False,
    )
    save_run(run, root=root, report=False)
    return root, run.run_id


def _app(duckdb_url: str, models: Path, runs: tuple[Path, str], **kw: Any) -> TestClient:
    settings_ = ServiceSettings(db_url=duckdb_url, models_dir=models, runs_dir=runs[0], **kw)
    return TestClient(create_app(settings_), raise_server_exceptions=False)


@pytest.fixture
def client(duckdb_url: str, models: Path, runs: tuple[Path, str], bars: pd.DataFrame) -> TestClient:
    with open_store(duckdb_url) as store:
        store.write_bars(bars)
    return _app(duckdb_url, models, runs)


def _body(bars: pd.DataFrame, **kw: Any) -> dict[str, Any]:
    rows = [
        {"ts": ts.isoformat(), "open": r.open, "high": r.high, "low": r.low, "close": r.close,
         "volume": r.volume}
        for ts, r in zip(bars.index, bars.itertuples(index=False), strict=True)
    ]  # fmt: skip
    return {"symbol": "SYN", "timeframe": "1h", "bars": rows, **kw}


def _tail(bars: pd.DataFrame, models: Path) -> pd.DataFrame:
    need = LiveEnsemble.load(live_dir(models, "SYN", "1h")).min_bars
    return bars.iloc[-need:]


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert "Traceback" not in response.text
    return str(body["detail"])


# --- routes ---------------------------------------------------------------------------------


def test_health_needs_no_key(duckdb_url: str, models: Path, runs: tuple[Path, str]) -> None:
    client = _app(duckdb_url, models, runs, api_keys=(KEY,))
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_assets_lists_the_stored_series(client: TestClient, bars: pd.DataFrame) -> None:
    response = client.get("/assets")
    assert response.status_code == 200
    (asset,) = response.json()["assets"]
    assert (asset["symbol"], asset["timeframe"], asset["rows"]) == ("SYN", "1h", len(bars))
    assert pd.Timestamp(asset["last_ts"]) == bars.index[-1]
    assert asset["live_ensemble"] is True


def test_predict_matches_the_live_ensemble_and_logs_the_signal(
    client: TestClient, bars: pd.DataFrame, models: Path
) -> None:
    tail = _tail(bars, models)
    response = client.post("/predict", json=_body(tail))
    assert response.status_code == 200, response.text
    out = response.json()
    direct = LiveEnsemble.load(live_dir(models, "SYN", "1h")).predict(tail)
    assert pd.Timestamp(out["ts"]) == tail.index[-1]
    assert out["p_up"] == pytest.approx(direct.p_up, abs=1e-12)
    assert out["p_raw"] == pytest.approx(direct.p_raw, abs=1e-12)
    assert set(out["strategies"]) == {"tsmom", "sma_crossover"}
    assert out["weights"] == pytest.approx(direct.weights)
    decision = out["decision"]
    assert decision["valid"] and decision["provider"] == "rules"
    assert decision["action"] in ("BUY", "SELL", "HOLD")
    assert out["logged"] is True
    # the latest signal of the series is this decision, with the probability it used
    signal = client.get("/signals/SYN", params={"timeframe": "1h"})
    assert signal.status_code == 200, signal.text
    got = signal.json()
    assert got["action"] == decision["action"]
    assert pd.Timestamp(got["ts"]) == tail.index[-1]
    assert got["ensemble_p_up"] == pytest.approx(out["p_up"])
    assert got["ensemble_run"] == LIVE_RUN


def test_signals_without_a_decision_is_404(client: TestClient) -> None:
    detail = _error(client.get("/signals/NOPE", params={"timeframe": "1h"}), 404)
    assert "NOPE" in detail


def test_runs_gives_config_metrics_and_verdict(client: TestClient, runs: tuple[Path, str]) -> None:
    root, run_id = runs
    response = client.get(f"/runs/{run_id}")
    assert response.status_code == 200, response.text
    out = response.json()
    record = load_run(run_id, root=root)
    assert out["run_id"] == run_id
    assert out["config"]["strategy"] == record.config["strategy"]
    assert out["verdict"]["score"] == pytest.approx(record.verdict["score"])
    assert out["metrics"]["n_trades"] == record.metrics["n_trades"]
    assert "unknown_run" in _error(client.get("/runs/unknown_run"), 404)
    assert "run_id" in _error(client.get("/runs/bad..id"), 422)


# --- input errors ---------------------------------------------------------------------------


def test_bars_out_of_order_are_422_naming_the_field(
    client: TestClient, bars: pd.DataFrame, models: Path
) -> None:
    body = _body(_tail(bars, models))
    body["bars"][10]["ts"], body["bars"][11]["ts"] = body["bars"][11]["ts"], body["bars"][10]["ts"]
    detail = _error(client.post("/predict", json=body), 422)
    assert detail.startswith("bars:") and "strictly increasing" in detail and "bar 11" in detail


def test_high_below_low_is_422_naming_the_bar(
    client: TestClient, bars: pd.DataFrame, models: Path
) -> None:
    body = _body(_tail(bars, models))
    body["bars"][5]["high"] = body["bars"][5]["low"] / 2
    detail = _error(client.post("/predict", json=body), 422)
    assert detail.startswith("bars: bar 5: high") and "below low" in detail


def test_nan_is_422(client: TestClient, bars: pd.DataFrame, models: Path) -> None:
    text = json.dumps(_body(_tail(bars, models)))
    first = text.index('"close": ') + len('"close": ')
    text = text[:first] + "NaN" + text[text.index(",", first) :]
    response = client.post("/predict", content=text, headers={"content-type": "application/json"})
    detail = _error(response, 422)
    assert "bars.0.close" in detail


def test_too_few_bars_with_nothing_stored_is_422_with_the_minimum(
    duckdb_url: str, models: Path, runs: tuple[Path, str], bars: pd.DataFrame
) -> None:
    client = _app(duckdb_url, models, runs)  # an empty store
    tail = _tail(bars, models)
    detail = _error(client.post("/predict", json=_body(tail.iloc[-5:])), 422)
    assert f"needs {len(tail)} bars" in detail and "5 given for SYN 1h" in detail


def _stored(duckdb_url: str, bars: pd.DataFrame) -> None:
    with open_store(duckdb_url) as store:
        store.write_bars(bars)


def test_one_new_bar_takes_its_history_from_the_store_then_from_memory(
    duckdb_url: str, models: Path, runs: tuple[Path, str], bars: pd.DataFrame
) -> None:
    live = LiveEnsemble.load(live_dir(models, "SYN", "1h"))
    need = live.min_bars
    _stored(duckdb_url, bars.iloc[:-2])
    client = _app(duckdb_url, models, runs, log_signals=False)
    first = client.post("/predict", json=_body(bars.iloc[-2:-1])).json()
    assert first["history_added"] == need - 1
    assert first["p_up"] == live.predict(bars.iloc[-need - 1 : -1]).p_up
    # the next bar needs no store: the service kept the history
    with open_store(duckdb_url) as store:
        store.delete_series("SYN", "1h")
    second = client.post("/predict", json=_body(bars.iloc[-1:])).json()
    assert second["history_added"] == need - 1
    assert second["p_up"] == live.predict(bars.iloc[-need:]).p_up
    # a revised bar replaces the kept one: a wrong close, then the right one again
    wrong = bars.iloc[-1:].copy()
    wrong[["open", "high", "low", "close"]] *= 0.5
    revised = client.post("/predict", json=_body(wrong)).json()
    again = client.post("/predict", json=_body(bars.iloc[-1:])).json()
    assert revised["strategies"] != again["strategies"] == second["strategies"]
    assert again["p_up"] == second["p_up"]


def test_bars_imported_after_the_kept_ones_fill_the_gap(
    duckdb_url: str, models: Path, runs: tuple[Path, str], bars: pd.DataFrame
) -> None:
    need = LiveEnsemble.load(live_dir(models, "SYN", "1h")).min_bars
    _stored(duckdb_url, bars.iloc[:-10])
    client = _app(duckdb_url, models, runs, log_signals=False)
    assert client.post("/predict", json=_body(bars.iloc[-10:-9])).status_code == 200
    _stored(duckdb_url, bars.iloc[-9:-1])  # imported meanwhile
    out = client.post("/predict", json=_body(bars.iloc[-1:])).json()
    direct = LiveEnsemble.load(live_dir(models, "SYN", "1h")).predict(bars.iloc[-need:])
    assert out["history_added"] == need - 1 and out["p_up"] == direct.p_up


def test_a_gap_in_the_history_beyond_max_gap_is_422_naming_it(
    duckdb_url: str, models: Path, runs: tuple[Path, str], bars: pd.DataFrame
) -> None:
    _stored(duckdb_url, bars.iloc[:-30])
    client = _app(duckdb_url, models, runs, max_gap=timedelta(hours=24))
    detail = _error(client.post("/predict", json=_body(bars.iloc[-1:])), 422)
    assert f"no bar from {bars.index[-31].isoformat()} to {bars.index[-1].isoformat()}" in detail
    assert "a gap of 1 days 06:00:00, more than the 1 days 00:00:00 allowed" in detail
    # within the allowed gap (a market closure) the stored history is used as it is
    client = _app(duckdb_url, models, runs, max_gap=timedelta(hours=48))
    assert client.post("/predict", json=_body(bars.iloc[-1:])).status_code == 200


def test_unknown_symbol_is_404_naming_the_directory(
    client: TestClient, bars: pd.DataFrame, models: Path
) -> None:
    body = _body(_tail(bars, models), symbol="ZZZ")
    detail = _error(client.post("/predict", json=body), 404)
    assert str(models / "ZZZ_1h" / "ensemble") in detail


def test_bad_provider_chain_and_symbol_are_422(client: TestClient, bars: pd.DataFrame) -> None:
    body = _body(bars.iloc[-3:], providers="rules,oracle")
    assert "providers" in _error(client.post("/predict", json=body), 422)
    assert "symbol" in _error(
        client.post("/predict", json=_body(bars.iloc[-3:], symbol="../x")), 422
    )


# --- auth and failures ----------------------------------------------------------------------


def test_api_keys_are_checked(duckdb_url: str, models: Path, runs: tuple[Path, str]) -> None:
    client = _app(duckdb_url, models, runs, api_keys=("other-key-abcdef", KEY))
    assert "missing" in _error(client.get("/assets"), 401)
    assert "not valid" in _error(client.get("/assets", headers={API_KEY_HEADER: "wrong"}), 401)
    assert "not valid" in _error(client.get("/runs/x", headers={API_KEY_HEADER: KEY[:-1]}), 401)
    assert client.get("/assets", headers={API_KEY_HEADER: KEY}).status_code == 200


def test_an_unexpected_error_is_500_json_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = client.app
    assert isinstance(app, FastAPI)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="mlengine.service"):
        response = client.get("/boom")
    detail = _error(response, 500)
    assert "secret internals" not in response.text and "logged" in detail
    assert any("secret internals" in r.getMessage() or r.exc_info for r in caplog.records)


def test_a_broken_saved_ensemble_is_500_naming_the_file(
    duckdb_url: str, models: Path, runs: tuple[Path, str], bars: pd.DataFrame, tmp_path: Path
) -> None:
    import shutil

    root = tmp_path / "models"
    shutil.copytree(models, root)
    (live_dir(root, "SYN", "1h") / "gate.json").write_text("[]")
    client = _app(duckdb_url, root, runs)
    detail = _error(client.post("/predict", json=_body(bars.iloc[-300:])), 500)
    assert "gate.json" in detail


# --- the schema, property-based -------------------------------------------------------------


def test_the_api_keeps_its_own_schema(
    duckdb_url: str, models: Path, runs: tuple[Path, str]
) -> None:
    """schemathesis against the app's OpenAPI schema, every operation, with a valid key.
    (Each operation's cases come from ``as_strategy``: schemathesis' pytest plugin does not
    load fixtures under this pytest.) Schema-valid requests may still be refused by the
    engine's rules (too few bars for the ensemble, a series without one), so the
    positive-data check is left out; every other check runs."""
    app = _app(duckdb_url, models, runs, api_keys=(KEY,)).app
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = []
    for result in api.get_all_operations():
        assert isinstance(result, Ok), result  # an operation the schema cannot describe
        operations.append(result.ok())
    labels = sorted(op.label for op in operations)
    assert labels == [
        "GET /assets",
        "GET /health",
        "GET /runs/{run_id}",
        "GET /signals/{symbol}",
        "POST /predict",
    ]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                headers={API_KEY_HEADER: KEY}, excluded_checks=[positive_data_acceptance]
            )

        check()


# --- the command-line helpers ---------------------------------------------------------------


def test_fit_live_saves_what_the_service_loads(
    duckdb_url: str, bars: pd.DataFrame, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mlengine.cli import app as cli

    with open_store(duckdb_url) as store:
        store.write_bars(bars)
    config = tmp_path / "run.yaml"
    config.write_text(
        "name: cheap\n"
        "assets: [{symbol: SYN, timeframe: 1h}]\n"
        "ensemble:\n"
        "  strategies: {tsmom: {}, sma_crossover: {}}\n"
        "  min_train: 1500\n"
        "  test_size: 500\n"
        "  executor: serial\n"
    )
    models = tmp_path / "models"
    args = ["fit-live", "--symbol", "SYN", "--timeframe", "1h", "--config", str(config)]
    result = CliRunner().invoke(cli, [*args, "--db", duckdb_url, "--models", str(models)])
    assert result.exit_code == 0, result.output
    live = LiveEnsemble.load(live_dir(models, "SYN", "1h"))
    assert list(live.strategies) == ["tsmom", "sma_crossover"]
    assert live.manifest["train_end"] == bars.index[-1].isoformat()
    # a series that is not stored: one red line, exit code 2
    missing = CliRunner().invoke(cli, ["fit-live", "--symbol", "NOPE", "--timeframe", "1h",
                                      "--db", duckdb_url, "--models", str(models)])  # fmt: skip
    assert missing.exit_code == 2 and "NOPE" in missing.output
    assert "--port" in CliRunner().invoke(cli, ["serve", "--help"]).output


def test_mlengine_serve_answers_over_http_with_keys(
    duckdb_url: str, bars: pd.DataFrame, models: Path, tmp_path: Path
) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with open_store(duckdb_url) as store:
        store.write_bars(bars.iloc[:-20])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"MLENGINE_API_KEYS": "k1,k2"}
    mlengine = str(Path(sys.executable).with_name("mlengine"))
    command = [mlengine, "serve", "--port", str(port), "--db", duckdb_url,
               "--models", str(models), "--max-gap-hours", "12"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # wait for the server to listen (at most a minute)
            try:
                health = httpx.get(f"{base}/health")
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(0.2)
        assert health.status_code == 200
        assert httpx.get(f"{base}/assets").status_code == 401
        listed = httpx.get(f"{base}/assets", headers={API_KEY_HEADER: "k2"})
        assert listed.status_code == 200
        (asset,) = listed.json()["assets"]
        assert (asset["symbol"], asset["live_ensemble"]) == ("SYN", True)
        # one new bar: its history comes from the store; 19 bars later, a 20-hour gap
        key = {API_KEY_HEADER: "k1"}
        one = httpx.post(f"{base}/predict", json=_body(bars.iloc[-20:-19]), headers=key)
        assert one.status_code == 200, one.text
        assert one.json()["history_added"] > 0
        late = httpx.post(f"{base}/predict", json=_body(bars.iloc[-1:]), headers=key)
        assert late.status_code == 422
        assert "more than the 0 days 12:00:00 allowed" in late.json()["detail"]
    finally:
        server.terminate()
        server.wait(timeout=30)
