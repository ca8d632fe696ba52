"""PVA: the two controls of the design (planted pattern, random walk) and bad input.

The contract checks (save/load, seeds, no look-ahead, artefacts) run in test_contract.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from mlengine import datasets
from mlengine.data.schema import BarDataError
from mlengine.strategies.base import NotFittedError, StrategyError
from mlengine.strategies.pva import PVA, PVAParams
from tests.strategies.controls import oos_accuracy, synthetic_bars

# small but not tiny: enough capacity and epochs for the planted pattern
CONTROL: dict[str, Any] = {
    "window": 16,
    "d_model": 16,
    "n_heads": 2,
    "n_layers": 1,
    "d_ff": 32,
    "epochs": 8,
    "batch_size": 64,
    "n_estimators": 100,
    "early_stopping_rounds": 10,
}
N_BARS, TEST_SIZE, N_SPLITS = 3000, 500, 2


def _make(fold: int) -> PVA:
    return PVA(**CONTROL, seed=fold)


def _planted(n: int, seed: int, p_follow: float = 0.85) -> np.ndarray:
    """Returns whose sign is that of the sum of the two previous returns with probability
    ``p_follow`` (the best possible direction accuracy), magnitude half-normal."""
    rng = np.random.default_rng(seed)
    mag = np.abs(rng.normal(0.0, 0.002, n))
    follow = rng.random(n) < p_follow
    r = np.empty(n)
    r[:2] = rng.normal(0.0, 0.002, 2)
    for t in range(2, n):
        s = 1.0 if r[t - 1] + r[t - 2] >= 0 else -1.0
        r[t] = (s if follow[t] else -s) * mag[t]
    return r


def test_planted_pattern_is_learned_out_of_sample() -> None:
    acc, n = oos_accuracy(
        _make,
        synthetic_bars(_planted(N_BARS, seed=1), seed=2),
        n_splits=N_SPLITS,
        test_size=TEST_SIZE,
    )
    assert n > 900
    assert acc >= 0.65, f"OOS accuracy {acc:.3f} on a learnable pattern (best possible 0.85)"


def test_random_walk_accuracy_is_chance_leakage_alarm() -> None:
    r = np.random.default_rng(3).normal(0.0, 0.002, N_BARS)
    acc, n = oos_accuracy(_make, synthetic_bars(r, seed=4), n_splits=N_SPLITS, test_size=TEST_SIZE)
    se = 0.5 / np.sqrt(n)
    assert abs(acc - 0.5) <= 3 * se, f"OOS accuracy {acc:.3f} on a random walk (n={n})"


# --- contract details specific to PVA ------------------------------------------------------


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:1200]


@pytest.fixture(scope="module")
def fitted(eurusd: pd.DataFrame) -> PVA:
    return PVA(**PVA.contract_params(), seed=0).fit(eurusd.iloc[:1000])


def test_predictions_nan_in_warm_up_then_finite(fitted: PVA, eurusd: pd.DataFrame) -> None:
    pred = fitted.predict_proba(eurusd)
    assert list(pred.columns) == ["p_up", "encoder_p_up"]
    p = pred["p_up"].to_numpy()
    first = int(np.flatnonzero(np.isfinite(p))[0])
    # return_zscore(100) warms up 100 bars; the window adds window - 1
    assert first == 100 + fitted.params.window - 1
    assert np.isfinite(p[first:]).all()
    assert np.isfinite(pred["encoder_p_up"].to_numpy()[first:]).all()


def test_prefix_predictions_match(fitted: PVA, eurusd: pd.DataFrame) -> None:
    full = fitted.predict_proba(eurusd)["p_up"].to_numpy()
    part = fitted.predict_proba(eurusd.iloc[:700])["p_up"].to_numpy()
    # batches of different composition may differ in the last float32 bits only
    np.testing.assert_allclose(part, full[:700], rtol=0, atol=1e-6)


def test_fewer_bars_than_one_window_gives_nan(fitted: PVA, eurusd: pd.DataFrame) -> None:
    pred = fitted.predict_proba(eurusd.iloc[:10])
    assert pred["p_up"].isna().all() and len(pred) == 10


def test_explain_attention_of_the_last_window(fitted: PVA, eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:1100]
    before = fitted.predict_proba(bars)
    out = fitted.explain(bars, n_windows=64)
    pd.testing.assert_frame_equal(fitted.predict_proba(bars), before)  # changes nothing
    attention, importance = out["attention"], out["feature_importance"]
    L, p = fitted.params.window, fitted.params
    assert list(attention.index) == [
        *(f"layer {i + 1} head {h + 1}" for i in range(p.n_layers) for h in range(p.n_heads)),
        "rollout",
    ]
    expected = pd.DatetimeIndex(bars.index[-L:]).strftime("%Y-%m-%d %H:%M")
    assert list(attention.columns) == list(expected)
    values = attention.to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-5)  # causal softmax rows
    assert list(importance.index) == fitted.feature_names_
    assert importance["importance"].ge(0).all() and importance["importance"].gt(0).any()
    # only the bars given: the explanation of a prefix ignores what follows it
    later = fitted.explain(eurusd, n_windows=64)["attention"]
    assert list(later.columns) != list(attention.columns)


def test_explain_bad_input(fitted: PVA, eurusd: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        PVA().explain(eurusd)
    with pytest.raises(StrategyError, match="n_windows must be a positive integer"):
        fitted.explain(eurusd, n_windows=0)
    with pytest.raises(StrategyError, match="no complete window"):
        fitted.explain(eurusd.iloc[:20])


def test_scaler_uses_the_training_slice_only(eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:1000]
    altered = bars.copy()
    for col in ("open", "high", "low", "close"):  # prices of the validation slice doubled
        altered[col] = np.r_[bars[col].to_numpy()[:900], 2.0 * bars[col].to_numpy()[900:]]
    a = PVA(**PVA.contract_params()).fit(bars)
    b = PVA(**PVA.contract_params()).fit(altered)
    np.testing.assert_array_equal(a.scaler_.mean, b.scaler_.mean)
    np.testing.assert_array_equal(a.scaler_.std, b.scaler_.std)


def test_fit_leaves_global_torch_state_alone(eurusd: pd.DataFrame) -> None:
    before, threads = torch.random.get_rng_state(), torch.get_num_threads()
    PVA(**PVA.contract_params()).fit(eurusd.iloc[:1000])
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_manifest_and_seed(fitted: PVA, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["strategy"] == "pva" and m["feature_names"] == fitted.feature_names_
    assert "atr_14" not in m["feature_names"] and "atr_rel_14" in m["feature_names"]
    assert len(m["scaler"]["mean"]) == len(m["feature_names"])
    assert {p.name for p in tmp_path.iterdir()} == {"manifest.json", "encoder.pt", "head.ubj"}
    assert PVA(seed=5).params.seed == 5
    assert PVA(PVAParams(window=8), seed=5).params == PVAParams(window=8, seed=5)


# --- bad input --------------------------------------------------------------------------------


def test_predict_or_save_before_fit_raises(eurusd: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        PVA().predict_proba(eurusd)
    with pytest.raises(NotFittedError):
        PVA().save(tmp_path)


def test_too_few_bars_to_fit(eurusd: pd.DataFrame) -> None:
    with pytest.raises(StrategyError, match=r"150 bars give .* need at least"):
        PVA(**PVA.contract_params()).fit(eurusd.iloc[:150])


def test_nan_price_is_rejected_with_row_and_column(fitted: PVA, eurusd: pd.DataFrame) -> None:
    bad = eurusd.iloc[:1000].copy()
    close = bad["close"].to_numpy().copy()
    close[500] = np.nan
    bad["close"] = close
    with pytest.raises(BarDataError, match="close") as fit_err:
        PVA(**PVA.contract_params()).fit(bad)
    assert fit_err.value.row == 501
    with pytest.raises(BarDataError, match="close"):
        fitted.predict_proba(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"horizon": 1.5},
        {"val_fraction": 1.0},
        {"dropout": -0.1},
        {"d_model": 10, "n_heads": 4},
        {"features": ()},
    ],
)
def test_bad_params_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(StrategyError, match="pva"):
        PVA(**kwargs)


def test_params_and_kwargs_together_raise() -> None:
    with pytest.raises(StrategyError, match="not both"):
        PVA(PVAParams(), window=8)


def test_load_rejects_foreign_or_missing_artefacts(tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match="cannot load"):
        PVA.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"strategy": "tsmom"}))
    with pytest.raises(StrategyError, match="not a manifest of strategy 'pva'"):
        PVA.load(tmp_path)
