"""MTS: the two controls (a planted higher-timeframe pattern, a random walk), the
multi-timeframe diagnostics, explanation and summary, and bad input.

The contract checks (save/load, seeds, no look-ahead, artefacts) run in test_contract.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from mlengine import datasets
from mlengine.data.resample import resample
from mlengine.nn.encoders import TransformerConfig, TransformerEncoder, seeded
from mlengine.strategies._training import EncoderNet, TrainConfig, infer, sliding, train
from mlengine.strategies.base import NotFittedError, StrategyError
from mlengine.strategies.mts import MTS, MTSParams, alignment
from tests.strategies.controls import oos_accuracy, synthetic_bars

# small but not tiny: enough capacity and epochs for the planted pattern
CONTROL: dict[str, Any] = {
    "window": 8,
    "timeframes": ("4h",),
    "features": ("log_returns",),
    "d_model": 16,
    "n_heads": 2,
    "d_ff": 32,
    "epochs": 8,
    "batch_size": 64,
    "n_estimators": 100,
    "early_stopping_rounds": 10,
}
N_BARS, TEST_SIZE, N_SPLITS = 3000, 500, 2


def _make(fold: int) -> MTS:
    return MTS(**CONTROL, seed=fold)


def _planted(n: int, seed: int, p_follow: float = 0.85) -> np.ndarray:
    """Hourly returns (from midnight) whose sign follows the sign of the last closed 4h
    bar's return with probability ``p_follow`` (the best possible direction accuracy):
    bar ``u`` looks at 4h bin ``u // 4 - 1``, closed when ``u`` opens."""
    rng = np.random.default_rng(seed)
    mag = np.abs(rng.normal(0.0, 0.002, n))
    follow = rng.random(n) < p_follow
    r = rng.normal(0.0, 0.002, n)
    for u in range(8, n):
        j = u // 4 - 1
        s = 1.0 if r[4 * j : 4 * j + 4].sum() >= 0 else -1.0
        r[u] = (s if follow[u] else -s) * mag[u]
    return r


def test_planted_higher_timeframe_pattern_is_learned_out_of_sample() -> None:
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


# --- MTS specifics -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:1400]


@pytest.fixture(scope="module")
def fitted(eurusd: pd.DataFrame) -> MTS:
    return MTS(**MTS.contract_params(), seed=0).fit(eurusd.iloc[:1000])


def test_predictions_and_diagnostics(fitted: MTS, eurusd: pd.DataFrame) -> None:
    pred = fitted.predict_proba(eurusd)
    assert list(pred.columns) == ["p_up", "encoder_p_up", "trend_h1", "trend_h4", "tf_alignment"]
    feats = fitted._features(eurusd)
    for col in ("trend_h1", "trend_h4"):
        expected = np.sign(feats[f"{col.removeprefix('trend_')}_er_20"].to_numpy())
        np.testing.assert_array_equal(pred[col].to_numpy(), expected)
    signs = pred[["trend_h1", "trend_h4"]].to_numpy()
    both = np.isfinite(signs).all(axis=1)
    agree = both & (signs[:, 0] == signs[:, 1]) & (signs[:, 0] != 0)
    assert agree.any() and (both & ~agree).any()
    np.testing.assert_array_equal(pred["tf_alignment"].to_numpy()[agree], 1.0)
    assert (pred["tf_alignment"].to_numpy()[both & ~agree] < 1.0).all()
    assert pred["tf_alignment"].isna().equals(pd.Series(~both, index=eurusd.index))


def test_the_4h_trend_is_that_of_the_last_closed_4h_bar(fitted: MTS, eurusd: pd.DataFrame) -> None:
    h4 = resample(eurusd, "4h")
    er = fitted._tf_features(h4)["er_20"].to_numpy()
    h4_close = pd.DatetimeIndex(h4.index) + pd.Timedelta("4h")
    base_close = pd.DatetimeIndex(eurusd.index) + pd.Timedelta("1h")
    trend = fitted.predict_proba(eurusd)["trend_h4"].to_numpy()
    for t in range(300, len(eurusd), 150):
        last = int(np.flatnonzero(h4_close <= base_close[t])[-1])
        assert trend[t] == np.sign(er[last])


def test_prefix_predictions_match(fitted: MTS, eurusd: pd.DataFrame) -> None:
    full = fitted.predict_proba(eurusd)
    part = fitted.predict_proba(eurusd.iloc[:1150])
    pd.testing.assert_frame_equal(part, full.iloc[:1150], rtol=0, atol=1e-6)


def test_decision_rows_need_closed_highersynthetic_bars(fitted: MTS, eurusd: pd.DataFrame) -> None:
    p = fitted.predict_proba(eurusd)["p_up"].to_numpy()
    first = int(np.flatnonzero(np.isfinite(p))[0])
    # the 4h features' warm-up, then a window of closed 4h bars, is the binding one: the
    # first prediction is at the base bar that closes with the window's last 4h bar
    h4 = resample(eurusd, "4h")
    finite = np.flatnonzero(fitted._tf_features(h4).notna().all(axis=1).to_numpy())
    last = h4.index[int(finite[0]) + fitted.params.window - 1]
    assert eurusd.index[first] == last + pd.Timedelta("4h") - pd.Timedelta("1h")
    assert fitted.predict_proba(eurusd.iloc[:50])["p_up"].isna().all()


def test_explain_timeframe_attention(fitted: MTS, eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:1200]
    before = fitted.predict_proba(bars)
    out = fitted.explain(bars, n_windows=64)
    assert list(out) == ["timeframe_attention"]
    frame = out["timeframe_attention"]
    assert list(frame.index) == ["mean", "last"]
    assert list(frame.columns) == ["1h", "4h"]
    np.testing.assert_allclose(frame.sum(axis=1), 1.0, rtol=1e-6)
    pd.testing.assert_frame_equal(fitted.predict_proba(bars), before)  # explaining is pure
    with pytest.raises(StrategyError, match="no complete window"):
        fitted.explain(eurusd.iloc[:60])
    with pytest.raises(StrategyError, match="n_windows"):
        fitted.explain(bars, n_windows=0)


def test_summarize_alignment_metrics(fitted: MTS, eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[1000:]
    pred = fitted.predict_proba(eurusd).iloc[1000:]
    frame = fitted.summarize(pred, bars)["alignment_metrics"]
    assert list(frame.index) == ["all", "agree", "disagree"]
    assert list(frame.columns) == ["n_bars", "share", "accuracy", "trend_accuracy"]
    n = frame["n_bars"].to_numpy()
    assert n[1] + n[2] == n[0] and n[1] > 0 and n[2] > 0
    np.testing.assert_allclose(frame["share"].to_numpy()[1:].sum(), 1.0)
    # recompute the agreeing rows' accuracy by hand
    close = bars["close"].to_numpy()
    move = np.r_[np.log(close[1:] / close[:-1]), np.nan]
    p = pred["p_up"].to_numpy()
    mask = (pred["tf_alignment"].to_numpy() == 1.0) & np.isfinite(p) & np.isfinite(move)
    mask &= move != 0
    assert frame["accuracy"].to_numpy()[1] == pytest.approx(
        np.mean((p[mask] > 0.5) == (move[mask] > 0))
    )
    with pytest.raises(StrategyError, match="tf_alignment"):
        fitted.summarize(pred[["p_up"]], bars)


def test_alignment_shares() -> None:
    signs = np.array([[1, 1, 1], [1, -1, 1], [-1, -1, 0], [1, np.nan, 1], [0, 0, 0]], float)
    np.testing.assert_allclose(alignment(signs), [1.0, 2 / 3, 2 / 3, np.nan, 0.0])


def test_default_timeframes_follow_the_base() -> None:
    mts = MTS()
    btc = datasets.load("btcusd_15m").iloc[:10]
    eur = datasets.load("eurusd_1h").iloc[:10]
    assert mts._timeframes(btc) == ("15m", "1h", "4h")
    assert mts._timeframes(eur) == ("1h", "4h", "1d")
    daily = resample(datasets.load("eurusd_1h").iloc[:240], "1d")
    with pytest.raises(StrategyError, match="no default higher timeframes above 1d"):
        mts._timeframes(daily)
    with pytest.raises(StrategyError, match="not a whole multiple"):
        MTS(timeframes=("90m",))._features(eur)
    with pytest.raises(StrategyError, match="cannot resample 1h bars to the lower"):
        MTS(timeframes=("15m",))._features(eur)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeframes": ()}, "at least one higher timeframe"),
        ({"timeframes": ("4x",)}, "unknown timeframe"),
        ({"features": ()}, "features"),
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"dead_zone": -1.0}, "dead_zone"),
        ({"window": 0}, "window"),
    ],
)
def test_bad_params(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(StrategyError, match=match):
        MTSParams(**kwargs)


def test_predict_before_fit_raises(eurusd: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError):
        MTS().predict_proba(eurusd)
    with pytest.raises(NotFittedError):
        MTS().explain(eurusd)


def test_too_few_bars_to_fit(eurusd: pd.DataFrame) -> None:
    with pytest.raises(StrategyError, match="give more bars"):
        MTS(**MTS.contract_params()).fit(eurusd.iloc[:150])


def test_gathered_inputs_train_like_sliding_windows() -> None:
    """The gather hook of the training loop: the same windows given through ``gather``
    give the same batches, so the same weights and embeddings, as the default path."""
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(300, 3))
    target = (rng.random(300) > 0.5).astype(np.float32)
    window, idx = 8, np.arange(7, 300)
    cfg = TrainConfig(epochs=2, batch_size=32, learning_rate=1e-2, patience=2, seed=0)

    def net() -> EncoderNet:
        cfg = TransformerConfig(
            n_features=3, window=window, d_model=8, n_heads=2, d_ff=16, price_bias=False
        )
        with seeded(0):  # the linear head too
            return EncoderNet(TransformerEncoder(cfg))

    a, b = net(), net()
    assert train(a, xs, target, window, idx[:200], idx[200:], cfg) == train(
        b, xs, target, window, idx[:200], idx[200:], cfg, gather=sliding(xs, window)
    )
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    emb_a, p_a = infer(a, xs, window, idx)
    emb_b, p_b = infer(b, xs, window, idx, gather=sliding(xs, window))
    np.testing.assert_array_equal(emb_a, emb_b)
    np.testing.assert_array_equal(p_a, p_b)
