"""The live ensemble: gate and calibrator on the whole out-of-fold stack (calibration rows the
gate never saw), strategies on all the bars, a saved directory that loads back, and
predictions from a recent tail equal to those from the full history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlengine import datasets
from mlengine.ensemble.gating import GateParams
from mlengine.ensemble.live import (
    CONTEXT_HISTORY,
    FORMAT_VERSION,
    LiveEnsemble,
    LiveEnsembleError,
    LiveEnsembleNotFoundError,
    LivePrediction,
    history_needed,
    live_dir,
    out_of_fold_stack,
)
from mlengine.ensemble.metamodel import Stack, fit_gate, stack_features
from mlengine.pipeline import EnsembleConfig
from mlengine.strategies import registry

CHEAP = ("msa", "tsmom", "sma_crossover")
#: a small MSA: fits in a fraction of a second, still market-structure features
MSA = {"n_estimators": 30, "early_stopping_rounds": 5, "nthread": 1}


def _config(**kw: object) -> EnsembleConfig:
    settings: dict[str, object] = {
        "strategies": {"msa": MSA, "tsmom": {}, "sma_crossover": {}},
        "min_train": 1500,
        "executor": "serial",
    }
    return EnsembleConfig(**(settings | kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


@pytest.fixture(scope="module")
def oof(eurusd: pd.DataFrame) -> Stack:
    return out_of_fold_stack(eurusd, _config(), progress=False)


@pytest.fixture(scope="module")
def live(eurusd: pd.DataFrame, oof: Stack) -> LiveEnsemble:
    return LiveEnsemble.fit(eurusd, _config(), stack=oof, progress=False)


@pytest.fixture(scope="module")
def saved(live: LiveEnsemble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return live.save(tmp_path_factory.mktemp("live") / "EURUSD_1h" / "ensemble")


def _reference(live: LiveEnsemble, bars: pd.DataFrame) -> tuple[dict[str, float], float, float]:
    """What the ensemble gives at the last bar when every part reads the full history."""
    index = pd.DatetimeIndex([bars.index[-1]], name="ts")
    preds = {n: m.predict_proba(bars).iloc[-1:] for n, m in live.strategies.items()}
    features = stack_features(preds, bars, index)
    probs = pd.DataFrame({n: p["p_up"].to_numpy() for n, p in preds.items()}, index=index)
    raw = float(live.gate.predict(features, probs).iloc[0])
    assert live.calibrator is not None
    return (
        {n: float(p["p_up"].iloc[0]) for n, p in preds.items()},
        raw,
        float(live.calibrator.transform([raw])[0]),
    )


def test_the_gate_and_calibrator_are_fitted_on_the_whole_stack(
    live: LiveEnsemble, eurusd: pd.DataFrame, oof: Stack
) -> None:
    cfg = _config()
    rows = np.flatnonzero(oof.y.notna().to_numpy())
    direct = fit_gate(
        oof, rows, gate=GateParams(), calibration="auto", calibration_share=0.3, purge=1, seed=0
    )
    # the same rows, split as a meta fold of fit_predict: the gate is the shared function's
    assert live.gate.to_dict()["state"] == direct.gate.to_dict()["state"]
    assert direct.calibrator is not None and live.calibrator is not None
    assert live.calibrator.to_dict() == direct.calibrator.to_dict()
    # no calibration row is a row the gate trained on, and the purge lies between them
    gate_end = pd.Timestamp(live.manifest["gate_rows"]["end"])
    cal_start = pd.Timestamp(live.manifest["calibration_rows"]["start"])
    assert gate_end < cal_start
    assert np.intersect1d(direct.gate_rows, direct.calibration_rows).size == 0
    assert direct.calibration_rows[0] - direct.gate_rows[-1] > cfg.horizon
    n_cal = live.manifest["calibration_rows"]["n"]
    assert n_cal == round(rows.size * 0.3)
    assert live.manifest["gate_rows"]["n"] + n_cal + cfg.horizon == rows.size
    # the live models are trained on every bar
    assert live.manifest["train_end"] == eurusd.index[-1].isoformat()
    assert live.manifest["n_bars"] == len(eurusd)


def test_predict_from_the_tail_equals_the_full_history(
    live: LiveEnsemble, eurusd: pd.DataFrame
) -> None:
    assert live.min_bars == max(CONTEXT_HISTORY, *live.history.values())
    for end in (len(eurusd) - 300, len(eurusd) - 57, len(eurusd)):
        history = eurusd.iloc[:end]
        tail = history.iloc[-live.min_bars :]
        pred = live.predict(tail)
        strategies, raw, p_up = _reference(live, history)
        assert pred.ts == history.index[-1]
        for name, p in strategies.items():
            assert pred.strategies[name].p_up == pytest.approx(p, abs=1e-9)
        assert pred.p_raw == pytest.approx(raw, abs=1e-6)
        assert pred.p_up == pytest.approx(p_up, abs=1e-6)
        assert sum(pred.weights.values()) == pytest.approx(1.0, abs=1e-6)
        # the full history gives the same as its tail: predict reads the tail only
        assert live.predict(history).p_up == pred.p_up


def test_too_few_bars_are_refused_with_the_minimum(
    live: LiveEnsemble, eurusd: pd.DataFrame
) -> None:
    with pytest.raises(LiveEnsembleError, match=f"needs at least {live.min_bars}"):
        live.predict(eurusd.iloc[-(live.min_bars - 1) :])


def test_bars_of_another_series_are_refused(live: LiveEnsemble, eurusd: pd.DataFrame) -> None:
    other = eurusd.copy()
    other.attrs = {**eurusd.attrs, "symbol": "GBPUSD"}
    with pytest.raises(LiveEnsembleError, match="GBPUSD"):
        live.predict(other)


def test_history_of_a_rule_baseline_is_short(eurusd: pd.DataFrame) -> None:
    model = registry.create("tsmom").fit(eurusd)
    h = history_needed(model, eurusd)
    assert h == 256  # matches from the first tail tried (128), doubled
    tail = model.predict_proba(eurusd.iloc[-h:]).iloc[-10:]
    full = model.predict_proba(eurusd).iloc[-10:]
    np.testing.assert_allclose(tail["p_up"], full["p_up"], atol=1e-12)


def test_save_and_load_give_the_same_predictions(
    live: LiveEnsemble, saved: Path, eurusd: pd.DataFrame
) -> None:
    loaded = LiveEnsemble.load(saved)
    tail = eurusd.iloc[-live.min_bars :]
    a, b = live.predict(tail), loaded.predict(tail)
    assert isinstance(b, LivePrediction)
    assert b.to_dict() == a.to_dict()
    assert loaded.history == live.history and loaded.min_bars == live.min_bars
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert (manifest["symbol"], manifest["timeframe"]) == ("EURUSD", "1h")
    assert manifest["train_end"] == eurusd.index[-1].isoformat()
    assert manifest["feature_columns"] == live.gate.feature_names_
    assert list(manifest["strategies"]) == list(CHEAP)
    assert manifest["strategies"]["tsmom"]["params"]["lookback"] == 20
    assert {"torch", "xgboost", "pandas"} <= set(manifest["versions"])
    assert manifest["config"]["strategies"]["msa"] == MSA
    for name in CHEAP:
        assert (saved / "strategies" / name / "manifest.json").is_file()


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_an_incomplete_directory_is_refused_naming_the_file(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(LiveEnsembleNotFoundError, match="no live ensemble directory"):
        LiveEnsemble.load(tmp_path / "nothing")
    for missing in ("manifest.json", "gate.json", "calibrator.json"):
        broken = _copy(saved, tmp_path / f"without_{missing}")
        (broken / missing).unlink()
        with pytest.raises(LiveEnsembleError, match=f"{missing}: missing"):
            LiveEnsemble.load(broken)
    broken = _copy(saved, tmp_path / "without_msa")
    import shutil

    shutil.rmtree(broken / "strategies" / "msa")
    with pytest.raises(LiveEnsembleError, match=r"strategies/msa: the saved msa model is missing"):
        LiveEnsemble.load(broken)
    broken = _copy(saved, tmp_path / "bad_gate")
    (broken / "gate.json").write_text("{not json")
    with pytest.raises(LiveEnsembleError, match=r"gate\.json: cannot read JSON"):
        LiveEnsemble.load(broken)


def test_another_format_version_is_refused(saved: Path, tmp_path: Path) -> None:
    other = _copy(saved, tmp_path / "v2")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LiveEnsembleError, match=r"manifest.json: format version 2"):
        LiveEnsemble.load(other)


def test_without_calibration_the_mixture_is_the_probability(
    eurusd: pd.DataFrame, oof: Stack, tmp_path: Path
) -> None:
    live = LiveEnsemble.fit(eurusd, _config(calibration="none"), stack=oof, progress=False)
    assert live.calibrator is None and live.manifest["calibration"] == "none"
    assert live.manifest["calibration_rows"]["n"] == 0
    path = live.save(tmp_path / "none")
    assert not (path / "calibrator.json").exists()
    pred = LiveEnsemble.load(path).predict(eurusd.iloc[-live.min_bars :])
    assert pred.p_up == pred.p_raw


def test_live_dir_refuses_path_characters(tmp_path: Path) -> None:
    assert live_dir(tmp_path, "EURUSD", "1h") == tmp_path / "EURUSD_1h" / "ensemble"
    for symbol in ("../etc", "a/b", "..", ""):
        with pytest.raises(LiveEnsembleError, match="cannot name a model directory"):
            live_dir(tmp_path, symbol, "1h")


@pytest.mark.parametrize("name", ["pva", "mrd", "vbp", "mts", "msa"])
def test_scoring_the_last_bars_only_gives_the_same_rows(name: str) -> None:
    from tests.strategies.controls import synthetic_bars

    rng = np.random.default_rng(3)
    bars = synthetic_bars(rng.normal(0.0, 2e-3, 1200), seed=3)
    cls = registry.get(name)
    model = registry.create(name, seed=0, **cls.contract_params()).fit(bars)  # type: ignore[attr-defined]
    full = model.predict_proba(bars)
    last = model.predict_proba(bars, last=5)  # type: ignore[call-arg]
    assert last["p_up"].iloc[:-5].isna().all()
    assert full["p_up"].iloc[-5:].notna().all()
    pd.testing.assert_frame_equal(last.iloc[-5:], full.iloc[-5:], atol=1e-6, rtol=1e-6)
