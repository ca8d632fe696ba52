"""VBP: the two controls (planted squeeze-then-breakout, random walk), balanced sampling,
the p_up mapping, the breakout metrics, artefacts and bad input.

The contract checks (save/load, seeds, no look-ahead, artefacts) run in test_contract.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlengine import datasets, labels
from mlengine.backtest.walkforward import WalkForwardRun, walk_forward
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.schema import make_bar_frame
from mlengine.strategies import _windowed
from mlengine.strategies.base import NotFittedError, StrategyError, Summarizable
from mlengine.strategies.vbp import VBP, VBPParams, breakout_metrics

# small but not tiny: enough capacity and epochs for the planted pattern
CONTROL: dict[str, Any] = {
    "window": 24,
    "channels": 16,
    "n_layers": 3,
    "epochs": 8,
    "batch_size": 64,
    "n_estimators": 100,
    "early_stopping_rounds": 10,
}
N_BARS, TEST_SIZE, N_SPLITS = 4000, 600, 2
SQUEEZE, TILT, BURST = 24, 4, 8  # bars of a squeeze, of its announcing tilt, of the move


def _bars(r: np.ndarray, vol: np.ndarray, seed: int) -> pd.DataFrame:
    """Hourly bars whose close-to-close log returns are ``r``; open at the previous close,
    wicks outside the body of about a third of the bar's volatility ``vol``."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    wick = np.abs(rng.normal(0.0, 1.0, (2, r.size))) * 0.3 * vol
    idx = pd.date_range("2020-01-01", periods=r.size, freq="h", tz="UTC")
    cols = {
        "open": open_,
        "high": np.maximum(open_, close) * (1.0 + wick[0]),
        "low": np.minimum(open_, close) * (1.0 - wick[1]),
        "close": close,
        "volume": np.ones(r.size),
    }
    return make_bar_frame(idx, cols, symbol="SYN", timeframe="1h")


def _squeezes(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A random walk (volatility 0.2% a bar, 30-49 bars at a time) broken by squeezes:
    ``SQUEEZE`` bars at a fifth of the volatility, the last ``TILT`` of them leaning the
    way of the move to come (+0.08% a bar, announcing it), then ``BURST`` bars of a
    directional move (0.3% a bar). Returns the bars, the last bar of each squeeze and the
    move's direction (+1 / -1, a coin flip)."""
    rng = np.random.default_rng(seed)
    r: list[float] = []
    vol: list[float] = []
    ends, moves = [], []
    while len(r) < n:
        calm = int(rng.integers(30, 50))
        r += list(rng.normal(0.0, 0.002, calm))
        vol += [0.002] * calm
        d = float(rng.choice([-1.0, 1.0]))
        squeeze = rng.normal(0.0, 0.0004, SQUEEZE)
        squeeze[-TILT:] += d * 0.0008
        r += list(squeeze)
        vol += [0.0004] * SQUEEZE
        ends.append(len(r) - 1)
        moves.append(d)
        r += list(d * 0.003 + rng.normal(0.0, 0.001, BURST))
        vol += [0.002] * BURST
    end = np.asarray(ends)
    return _bars(np.asarray(r[:n]), np.asarray(vol[:n]), seed), end[end < n], np.asarray(moves)


def _walk_forward(bars: pd.DataFrame) -> WalkForwardRun:
    return walk_forward(
        lambda seed=None: VBP(**CONTROL, seed=seed),
        bars,
        splitter=WalkForwardSplit(N_SPLITS, test_size=TEST_SIZE),
        horizon=VBPParams.horizon,
        progress=False,
    )


def test_planted_squeeze_then_breakout_is_learned_out_of_sample() -> None:
    bars, ends, moves = _squeezes(N_BARS, seed=1)
    # the planted moves are breakouts of the label at the last bars of their squeezes
    side = labels.breakout(bars, VBPParams.horizon, range_window=20, k=1.0).values.to_numpy()
    assert (side[ends] == moves[: ends.size]).all()
    run = _walk_forward(bars)
    pred = run.predictions
    # the last TILT - 1 bars of each squeeze, once the tilt shows, in the test windows
    setup = np.concatenate([ends - lag for lag in range(TILT - 1)])
    direction = np.tile(moves[: ends.size], TILT - 1)
    inside = np.isin(bars.index[setup], pred.index)
    at = pred.loc[bars.index[setup[inside]]]
    n = int(inside.sum())
    assert n >= 40
    # chance is 0.5 for the direction and the breakout base rate (~0.36) for the
    # probability; the tilt makes both near-certain, 0.85 is > 7 binomial SE above chance
    accuracy = float(np.mean(np.sign(at["p_up"] - 0.5) == direction[inside]))
    assert accuracy >= 0.85, f"direction accuracy {accuracy:.3f} at {n} setups"
    assert float(np.mean(at["breakout_prob"] > 0.5)) >= 0.85
    # the summary of the stitched predictions joins the run's explanations
    table = run.explanations["breakout_metrics"]
    assert list(table.index) == ["up", "down", "any"]
    overall = table.loc["any"].to_dict()
    assert overall["precision"] >= overall["breakouts"] / overall["bars"] + 0.2  # base rate
    assert 1.0 <= overall["lead_mean"] <= VBPParams.horizon


def test_random_walk_accuracy_is_chance_leakage_alarm() -> None:
    r = np.random.default_rng(3).normal(0.0, 0.002, N_BARS)
    bars = _bars(r, np.full(N_BARS, 0.002), seed=4)
    run = _walk_forward(bars)
    p = run.predictions["p_up"].to_numpy()
    # the next bar's direction: independent of everything before it, so the hits are
    # independent coin flips whatever the predictions' serial correlation
    nxt = np.sign(np.r_[np.diff(np.log(bars["close"].to_numpy())), np.nan])
    nxt = nxt[bars.index.get_indexer(run.predictions.index)]
    ok = np.isfinite(p) & np.isfinite(nxt) & (p != 0.5) & (nxt != 0)
    n = int(ok.sum())
    acc = float(np.mean((p[ok] > 0.5) == (nxt[ok] > 0)))
    assert n > 1000
    assert abs(acc - 0.5) <= 3 * 0.5 / np.sqrt(n), f"OOS accuracy {acc:.3f} (n={n})"


# --- a fitted model on real bars ------------------------------------------------------------------


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:1300]


@pytest.fixture(scope="module")
def fitted(eurusd: pd.DataFrame) -> VBP:
    return VBP(**VBP.contract_params(), seed=0).fit(eurusd.iloc[:1000])


def test_oversampling_repeats_training_breakouts_only(
    eurusd: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real_train = _windowed.train

    def spy(
        net: Any, xs: Any, target: Any, window: int, fit_idx: Any, val_idx: Any, cfg: Any, **kw: Any
    ) -> Any:
        seen.append((np.asarray(fit_idx), np.asarray(val_idx)))
        return real_train(net, xs, target, window, fit_idx, val_idx, cfg, **kw)

    monkeypatch.setattr(_windowed, "train", spy)
    bars = eurusd.iloc[:1000]
    plain = VBP(**VBP.contract_params(), oversample=1).fit(bars)
    model = VBP(**VBP.contract_params(), oversample=3).fit(bars)
    (fit1, val1), (fit3, val3) = seen
    y = model._labels(bars)
    breakout = y[fit3] > 0
    counts = pd.Series(fit3).value_counts()
    assert (counts[fit3[breakout]] == 3).all() and (counts[fit3[~breakout]] == 1).all()
    assert np.array_equal(np.unique(fit3), fit1)  # the same training rows, some repeated
    # validation rows: the same, once each, after the training rows and their purge
    assert np.array_equal(val3, val1) and np.unique(val3).size == val3.size
    assert fit3.max() < val3.min() - model.params.horizon
    info, info1 = model.fit_info_, plain.fit_info_
    n_breakouts = int((y[fit1] > 0).sum())
    assert 0 < n_breakouts < info["n_train"]
    assert info["n_train"] == info1["n_train"] == info1["n_train_oversampled"] == fit1.size
    assert info["n_train_oversampled"] == info["n_train"] + 2 * n_breakouts
    assert info["n_val"] == info1["n_val"] == val1.size


def test_oversample_hook() -> None:
    y = np.array([np.nan, 0.0, 1.0, 2.0, 0.0, 1.0])
    idx = np.array([1, 2, 3, 4])
    out = VBP(oversample=3)._oversample(idx, y)
    assert sorted(out.tolist()) == [1, 2, 2, 2, 3, 3, 3, 4]
    assert VBP(oversample=1)._oversample(idx, y).tolist() == [1, 2, 3, 4]


def test_p_up_mapping() -> None:
    head = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.5, 0.3]])
    enc = head[::-1].copy()
    out = VBP(oversample=1)._outputs(head, enc)
    assert list(out) == ["p_up", "breakout_prob", "breakout_up", "breakout_down", "encoder_p_up"]
    np.testing.assert_allclose(out["p_up"], [0.5, 1.0, 0.0, 0.6])
    np.testing.assert_allclose(out["breakout_prob"], [0.0, 1.0, 1.0, 0.8])
    np.testing.assert_allclose(out["breakout_up"], [0.0, 1.0, 0.0, 0.5])
    np.testing.assert_allclose(out["breakout_down"], [0.0, 0.0, 1.0, 0.3])
    np.testing.assert_allclose(out["encoder_p_up"], [0.6, 0.0, 1.0, 0.5])
    # trained on breakouts repeated 3 times: their odds against "none" are divided by 3
    shifted = np.array([[0.4, 0.3, 0.3], [0.25, 0.6, 0.15]])
    out = VBP(oversample=3)._outputs(shifted, shifted)
    np.testing.assert_allclose(out["breakout_prob"], [1 / 3, 0.5])
    np.testing.assert_allclose(out["breakout_up"], [1 / 6, 0.4])
    np.testing.assert_allclose(out["p_up"], [0.5, 0.65])
    raw = VBP(oversample=3, prior_correction=False)._outputs(shifted, shifted)
    np.testing.assert_allclose(raw["breakout_prob"], [0.6, 0.75])


def test_predictions_keep_the_mapping(fitted: VBP, eurusd: pd.DataFrame) -> None:
    pred = fitted.predict_proba(eurusd)
    assert list(pred.columns) == [
        "p_up",
        "breakout_prob",
        "breakout_up",
        "breakout_down",
        "encoder_p_up",
    ]
    ok = pred["p_up"].notna()
    assert ok.sum() > 1000
    p = pred[ok]
    np.testing.assert_allclose(p["p_up"], 0.5 + 0.5 * (p["breakout_up"] - p["breakout_down"]))
    np.testing.assert_allclose(p["breakout_prob"], p["breakout_up"] + p["breakout_down"])
    assert p.min().min() >= 0.0 and p.max().max() <= 1.0
    assert p["breakout_prob"].std() > 0  # not a constant


def test_labels_are_the_breakout_classes(eurusd: pd.DataFrame) -> None:
    model = VBP(range_window=10, k=0.5, atr_window=7, horizon=4)
    side = labels.breakout(eurusd, 4, range_window=10, k=0.5, atr_window=7).values.to_numpy()
    y = model._labels(eurusd)
    assert np.array_equal(np.isnan(y), np.isnan(side))
    assert (y[side == 1] == 1).all() and (y[side == -1] == 2).all() and (y[side == 0] == 0).all()
    assert {0.0, 1.0, 2.0} <= set(y[np.isfinite(y)])


def test_the_label_windows_reach_the_features(eurusd: pd.DataFrame) -> None:
    names = list(VBP(range_window=10, atr_window=7)._features(eurusd).columns)
    assert {"range_comp_10", "range_comp_10_50", "range_pos_10", "atr_rel_7"} <= set(names)
    assert not any(c.startswith("atr_") and c[4:].isdigit() for c in names)  # no raw ATR
    only = list(VBP(features=("keltner", "returns"))._features(eurusd).columns)
    assert only[:2] == ["kc_pos_20_1.5", "kc_squeeze_20_1.5_2"] and "ret_log_1" in only


# --- breakout metrics --------------------------------------------------------------------------


def test_breakout_metrics_by_hand() -> None:
    nan = np.nan
    prob = [0.9, 0.8, 0.7, 0.2, 0.6, 0.9, nan, 0.9, 0.3]
    lean = [0.5, -0.3, 0.2, 0.1, -0.4, 0.6, 0.1, 0.2, -0.1]
    side = [1, -1, 0, 1, 1, 0, 1, nan, -1]
    lead = [2, 1, nan, 3, 4, nan, 1, nan, 5]
    table = breakout_metrics(np.array(prob), np.array(lean), np.array(side), np.array(lead))
    assert table.index.name == "direction" and list(table.index) == ["up", "down", "any"]
    assert all(isinstance(c, str) for c in table.columns)
    # 7 bars count (one without a prediction, one without a label); signals: bars 0, 2, 5
    # up, 1 and 4 down; breakouts: 0, 3, 4 up, 1 and 8 down
    expected = pd.DataFrame(
        {
            "bars": [7, 7, 7],
            "signals": [3, 2, 5],
            "breakouts": [3, 2, 5],
            "hits": [1, 1, 3],
            "precision": [1 / 3, 1 / 2, 3 / 5],
            "recall": [1 / 3, 1 / 2, 3 / 5],
            "f1": [1 / 3, 1 / 2, 3 / 5],
            "false_breakout_rate": [2 / 3, 0.0, 2 / 5],
            "lead_median": [2.0, 1.0, 2.0],
            "lead_mean": [2.0, 1.0, 7 / 3],
        },
        index=table.index,
    )
    pd.testing.assert_frame_equal(table, expected)
    # a higher threshold: only the 0.9 signals (bars 0 and 5, both up)
    high = breakout_metrics(
        np.array(prob), np.array(lean), np.array(side), np.array(lead), threshold=0.85
    )
    up, down = high.loc["up"].to_dict(), high.loc["down"].to_dict()
    assert up["signals"] == 2 and up["hits"] == 1
    assert np.isnan(down["precision"]) and down["recall"] == 0.0
    assert np.isnan(down["f1"]) and np.isnan(down["lead_mean"])


def test_breakout_metrics_rejects_mismatched_inputs() -> None:
    with pytest.raises(StrategyError, match="must be 1-D of one length"):
        breakout_metrics(np.ones(3), np.ones(3), np.ones(2), np.ones(3))


def test_summarize_scores_the_signals_against_the_labels_of_the_bars(
    fitted: VBP, eurusd: pd.DataFrame
) -> None:
    assert isinstance(fitted, Summarizable)
    oos = eurusd.iloc[1000:]
    pred = fitted.predict_proba(eurusd).iloc[1000:]
    out = fitted.summarize(pred, oos)
    assert list(out) == ["breakout_metrics"]
    table = out["breakout_metrics"]
    truth = labels.breakout(oos, 6, range_window=20, k=1.0, atr_window=14)
    side = truth.values.to_numpy()
    # the labels of the OOS bars alone: none before the first 20-bar range and in the
    # last horizon bars
    assert np.isnan(side[:19]).all() and np.isnan(side[-6:]).all()
    assert table.loc["any", "bars"] == len(oos) - 19 - 6
    expected = breakout_metrics(
        pred["breakout_prob"].to_numpy(),
        (pred["breakout_up"] - pred["breakout_down"]).to_numpy(),
        side,
        truth.info["touch_bars"].to_numpy(),
    )
    pd.testing.assert_frame_equal(table, expected)
    assert table.loc["any", "breakouts"] == int(np.nansum(side != 0) - np.isnan(side).sum())


def test_summarize_bad_input(fitted: VBP, eurusd: pd.DataFrame) -> None:
    pred = fitted.predict_proba(eurusd)
    with pytest.raises(StrategyError, match="index of the bars"):
        fitted.summarize(pred.iloc[1:], eurusd)
    with pytest.raises(StrategyError, match=r"columns \['breakout_up'\]"):
        fitted.summarize(pred.drop(columns="breakout_up"), eurusd)


# --- explanation and artefacts ---------------------------------------------------------------


def test_explain_gives_the_attention_over_the_feature_maps(
    fitted: VBP, eurusd: pd.DataFrame
) -> None:
    bars = eurusd.iloc[:1100]
    before = fitted.predict_proba(bars)
    out = fitted.explain(bars, n_windows=32)
    pd.testing.assert_frame_equal(fitted.predict_proba(bars), before)  # changes nothing
    attention = out["attention"]
    assert list(attention.index) == ["layer 1 head 1", "layer 1 head 2", "rollout"]
    assert len(attention.columns) == fitted.params.window
    np.testing.assert_allclose(attention.to_numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert list(out["feature_importance"].index) == fitted.feature_names_


def test_save_and_load(fitted: VBP, eurusd: pd.DataFrame, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["strategy"] == "vbp" and m["encoder"]["kind"] == "cnn"
    assert m["params"]["oversample"] == 3 and m["feature_names"] == fitted.feature_names_
    loaded = VBP.load(tmp_path)
    assert loaded.params == fitted.params and loaded.fit_info_ == fitted.fit_info_
    pd.testing.assert_frame_equal(loaded.predict_proba(eurusd), fitted.predict_proba(eurusd))
    (tmp_path / "manifest.json").write_text(json.dumps({"strategy": "pva"}))
    with pytest.raises(StrategyError, match="not a manifest of strategy 'vbp'"):
        VBP.load(tmp_path)


# --- bad input ---------------------------------------------------------------------------------


def test_predict_before_fit_raises(eurusd: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        VBP().predict_proba(eurusd)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"range_window": 1}, "range_window must be >= 2"),
        ({"range_window": 2.5}, "range_window must be a positive integer"),
        ({"atr_window": 0}, "atr_window must be a positive integer"),
        ({"k": -0.5}, "k must lie in"),
        ({"oversample": 0}, "oversample must be a positive integer"),
        ({"prior_correction": 1}, "prior_correction must be True or False"),
        ({"signal_threshold": 1.0}, "signal_threshold must lie in"),
        ({"channels": 10, "n_heads": 4}, "channels=10 not divisible by n_heads=4"),
        ({"kernel_size": 0}, "kernel_size must be a positive integer"),
        ({"dilation": 0}, "dilation must be a positive integer"),
        ({"dropout": 1.0}, "dropout must lie in"),
        ({"pooling": "max"}, "pooling must be 'last', 'mean' or 'attention'"),
        ({"features": ()}, "features must be feature or group names"),
        ({"features": ("returns", "vwap")}, "features must be feature or group names"),
        ({"horizon": 0}, "horizon must be a positive integer"),
    ],
)
def test_bad_params_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(StrategyError, match=f"vbp: {match}"):
        VBP(**kwargs)


def test_too_few_bars_to_fit(eurusd: pd.DataFrame) -> None:
    with pytest.raises(StrategyError, match=r"vbp: 200 bars give .* need at least"):
        VBP(**VBP.contract_params()).fit(eurusd.iloc[:200])
