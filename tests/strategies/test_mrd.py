"""MRD: the causal regime filter, the HMM's training slice, state order and BIC, artefacts,
the out-of-sample summary, the two controls (planted regimes, random walk) and bad input.

The contract checks (save/load, seeds, no look-ahead, artefacts) run in test_contract.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hmmlearn.hmm import GaussianHMM
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import datasets, labels
from mlengine.backtest.costs import CostModel
from mlengine.backtest.validity import ValidityConfig
from mlengine.backtest.walkforward import walk_forward
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.schema import make_bar_frame
from mlengine.strategies.base import StrategyError, Summarizable
from mlengine.strategies.mrd import MRD, MRDParams, Regimes
from mlengine.strategies.registry import get
from tests.strategies.controls import synthetic_bars

CONTROL: dict[str, Any] = {
    "window": 16,
    "hidden_size": 16,
    "epochs": 8,
    "batch_size": 64,
    "n_estimators": 100,
    "early_stopping_rounds": 10,
}
N_BARS, TEST_SIZE, N_SPLITS = 3000, 500, 2
SHOCKED = ("open", "high", "low", "close")


def _switching(
    n: int,
    seed: int,
    *,
    follow: float,
    p_stay: float = 0.99,
    vols: tuple[float, float] = (
        0.002,
        0.006,
    ),
) -> tuple[np.ndarray, np.ndarray]:
    """Returns of a two-regime Markov chain that stays put with probability ``p_stay``:
    regime 0 calm (``vols[0]``) and trending — a return keeps the sign of the previous one
    with probability ``follow`` —, regime 1 volatile and reverting — it flips that sign
    with probability ``follow``. Magnitudes are half-normal. Returns and the true regimes."""
    rng = np.random.default_rng(seed)
    regime = np.zeros(n, dtype=np.int64)
    switch = rng.random(n) > p_stay
    for t in range(1, n):
        regime[t] = 1 - regime[t - 1] if switch[t] else regime[t - 1]
    mag = np.abs(rng.normal(0.0, 1.0, n)) * np.asarray(vols)[regime]
    keep = rng.random(n) < follow
    r = np.empty(n)
    r[0] = mag[0]
    for t in range(1, n):
        side = (1.0 if r[t - 1] >= 0 else -1.0) * (1.0 if regime[t] == 0 else -1.0)
        r[t] = (side if keep[t] else -side) * mag[t]
    return r, regime


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:1200]


@pytest.fixture(scope="module")
def fitted(eurusd: pd.DataFrame) -> MRD:
    return MRD(**MRD.contract_params(), seed=0).fit(eurusd.iloc[:1000])


def _shocked(bars: pd.DataFrame, cut: int, seed: int) -> pd.DataFrame:
    """``bars`` with every price after row ``cut`` moved by a random walk."""
    rng = np.random.default_rng(seed)
    n = len(bars)
    shock = np.r_[np.ones(cut + 1), np.exp(np.cumsum(rng.normal(0.0, 0.01, n - cut - 1)))]
    out = bars.copy()
    for col in SHOCKED:
        out[col] = bars[col].to_numpy() * shock
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())


# --- the regime filter: causal, and the forward pass of the fitted HMM -----------------------


@settings(max_examples=30, deadline=None, derandomize=True)
@given(cut=st.integers(40, 1190), seed=st.integers(0, 2**16))
def test_filtered_probabilities_ignore_later_bars(
    fitted: MRD, eurusd: pd.DataFrame, cut: int, seed: int
) -> None:
    regimes = fitted.regimes_
    full = regimes.filtered(fitted._observations(eurusd))
    altered = regimes.filtered(fitted._observations(_shocked(eurusd, cut, seed)))
    assert _same(altered[: cut + 1], full[: cut + 1])
    assert not np.allclose(altered[cut + 5 :], full[cut + 5 :])  # the shock is seen after
    part = regimes.filtered(fitted._observations(eurusd.iloc[: cut + 1]))
    assert _same(part, full[: cut + 1])
    # and so are the features and diagnostics built from them
    columns = [f"regime_p{k}" for k in range(regimes.n_states)]
    aug = fitted._augment(eurusd, fitted._features(eurusd))[columns].to_numpy()
    assert _same(aug, full)


def test_filter_is_the_forward_pass_not_the_smoother(fitted: MRD, eurusd: pd.DataFrame) -> None:
    """At the last bar of any prefix the filtered probabilities equal hmmlearn's posterior
    (which is smoothed: at earlier bars it uses the bars after them, and differs)."""
    r = fitted.regimes_
    obs = fitted._observations(eurusd)
    first = int(np.flatnonzero(np.isfinite(obs).all(axis=1))[0])
    x = (obs[first:] - r.obs_mean) / r.obs_std
    hmm = GaussianHMM(n_components=r.n_states, covariance_type="full")
    hmm.startprob_, hmm.transmat_ = r.startprob, r.transmat
    hmm.means_, hmm.covars_ = r.means, r.covars
    filtered = r.filtered(obs)[first:]
    assert np.isnan(r.filtered(obs)[:first]).all()
    for end in (1, 2, 50, 333, len(x)):
        np.testing.assert_allclose(filtered[end - 1], hmm.predict_proba(x[:end])[-1], atol=1e-9)
    smoothed = hmm.predict_proba(x)
    assert np.abs(smoothed[:-1] - filtered[:-1]).max() > 0.1
    np.testing.assert_allclose(filtered.sum(axis=1), 1.0, rtol=1e-12)


def test_flat_bars_carry_no_observation(fitted: MRD, eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:300].copy()
    price = bars["close"].to_numpy()[199]
    for col in SHOCKED:
        values = bars[col].to_numpy().copy()
        values[200:230] = price
        bars[col] = values
    obs = fitted._observations(bars)
    assert np.isnan(obs[200:230]).all() and np.isfinite(obs[230:]).all()
    probs = fitted.regimes_.filtered(obs)
    # no observation: the state distribution only moves through the transition matrix
    np.testing.assert_allclose(probs[200], probs[199] @ fitted.regimes_.transmat, rtol=1e-9)
    assert np.isfinite(probs[200:]).all()


# --- the HMM: training slice only, state order, BIC ------------------------------------------


def test_hmm_is_fitted_on_the_training_slice_only(eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:1000]
    model = MRD(**MRD.contract_params())
    model._fit_state(bars, model._features(bars), 700)
    before = model.regimes_
    altered = _shocked(bars, 700, seed=1)
    model._fit_state(altered, model._features(altered), 700)
    after = model.regimes_
    assert after.to_json() == before.to_json()
    model._fit_state(altered, model._features(altered), 800)
    assert model.regimes_.to_json() != before.to_json()  # the check can fail
    # through fit: bars in the validation slice (the last fifth) never reach the HMM
    a = MRD(**MRD.contract_params()).fit(bars)
    b = MRD(**MRD.contract_params()).fit(_shocked(bars, 900, seed=2))
    assert a.regimes_.to_json() == b.regimes_.to_json()
    assert not np.allclose(a.predict_proba(bars)["p_up"], b.predict_proba(bars)["p_up"])


def _two_state(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A Gaussian two-state HMM in the returns: calm and volatile, no autocorrelation."""
    r, regime = _switching(N_BARS, seed, follow=0.5)
    return synthetic_bars(r, seed), regime


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bic_picks_two_states_on_a_two_state_series(seed: int) -> None:
    bars, _ = _two_state(seed)
    model = MRD()
    model._fit_state(bars, model._features(bars), 2400)
    bic = model.regimes_.bic
    assert set(bic) == {2, 3, 4}
    assert model.regimes_.n_states == 2 and min(bic, key=bic.__getitem__) == 2


def test_states_are_ordered_by_volatility() -> None:
    bars, truth = _two_state(0)
    model = MRD(states=(2,))
    model._fit_state(bars, model._features(bars), 2400)
    r = model.regimes_
    sd = np.sqrt(r.covars[:, 0, 0]) * r.obs_std[0]
    assert sd[0] < sd[1]
    np.testing.assert_allclose(sd, [0.002, 0.006], rtol=0.15)  # the planted volatilities
    assert sorted(r.order) == [0, 1]
    regime = r.filtered(model._observations(bars)).argmax(axis=1)
    assert (regime[2400:] == truth[2400:]).mean() > 0.9  # out of the training slice
    # the 4-state fit of real bars: return volatility ascending too
    eur = datasets.load("eurusd_1h").iloc[:2000]
    big = MRD(states=(4,))
    big._fit_state(eur, big._features(eur), 1999)
    assert np.all(np.diff(big.regimes_.covars[:, 0, 0]) > 0)


def test_a_volatility_observation_and_full_covariance() -> None:
    bars, _ = _two_state(1)
    model = MRD(states=(2,), vol_window=10, covariance="full")
    model._fit_state(bars, model._features(bars), 2400)
    r = model.regimes_
    assert r.means.shape == (2, 2) and r.covars.shape == (2, 2, 2)
    assert r.covars[0, 0, 1] != 0.0  # a full covariance
    assert r.means[0, 1] < r.means[1, 1]  # the calm state has the lower realised volatility
    obs = model._observations(bars)
    assert np.isnan(obs[:10]).all() and np.isfinite(obs[10:]).all()


# --- predictions, explanation, artefacts -----------------------------------------------------


def test_predictions_carry_the_regime_diagnostics(fitted: MRD, eurusd: pd.DataFrame) -> None:
    pred = fitted.predict_proba(eurusd)
    assert list(pred.columns) == ["p_up", "encoder_p_up", "regime", "regime_prob"]
    has = pred["p_up"].notna()
    assert has.sum() > 1000
    assert pred.loc[~has, ["regime", "regime_prob"]].isna().all().all()
    k = fitted.regimes_.n_states
    probs = fitted.regimes_.filtered(fitted._observations(eurusd))[has.to_numpy()]
    np.testing.assert_array_equal(pred.loc[has, "regime"], probs.argmax(axis=1))
    np.testing.assert_array_equal(pred.loc[has, "regime_prob"], probs.max(axis=1))
    assert pred.loc[has, "regime_prob"].between(1.0 / k, 1.0).all()
    names = fitted.feature_names_
    assert names[-k:] == [f"regime_p{j}" for j in range(k)]
    assert {"ret_log_24", "roc_10", "rsi_14", "macd_rel_12_26_9"} <= set(names)
    assert {"er_20", "trend_t_20", "sign_ac_20", "sign_mean_20"} <= set(names)


def test_no_bars_or_too_few_give_empty_or_nan(fitted: MRD, eurusd: pd.DataFrame) -> None:
    columns = ["p_up", "encoder_p_up", "regime", "regime_prob"]
    empty = fitted.predict_proba(eurusd.iloc[:0])
    assert list(empty.columns) == columns and len(empty) == 0
    short = fitted.predict_proba(eurusd.iloc[:10])
    assert len(short) == 10 and short.isna().all().all()


def test_explain_gives_feature_importance_only(fitted: MRD, eurusd: pd.DataFrame) -> None:
    out = fitted.explain(eurusd, n_windows=64)
    assert list(out) == ["feature_importance"]  # the LSTM has no attention to show
    importance = out["feature_importance"]
    assert list(importance.index) == fitted.feature_names_
    assert importance["importance"].ge(0).all() and importance["importance"].gt(0).any()


def test_save_load_restores_the_hmm_exactly(fitted: MRD, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    doc = m["state"]["regimes"]
    assert set(doc) == {
        "startprob", "transmat", "means", "covars", "obs_mean", "obs_std", "order", "bic",
    }  # fmt: skip
    assert m["encoder"]["kind"] == "lstm"
    loaded = MRD.load(tmp_path)
    a, b = fitted.regimes_, loaded.regimes_
    for name in ("startprob", "transmat", "means", "covars", "obs_mean", "obs_std"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
    assert b.order == a.order and b.bic == a.bic
    assert loaded.feature_names_ == fitted.feature_names_
    round_trip = Regimes.from_json(json.loads(json.dumps(a.to_json())))
    np.testing.assert_array_equal(round_trip.transmat, a.transmat)


def test_load_rejects_a_manifest_without_regimes(fitted: MRD, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["state"] = {}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StrategyError, match="cannot load the mrd artefacts"):
        MRD.load(tmp_path)


# --- the out-of-sample summary -----------------------------------------------------------------


def _summary_inputs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ten bars, two folds; the regime path 0 0 1 1 1 | NaN 0 0 1 NaN."""
    close = np.array([100.0, 101.0, 100.0, 102.0, 101.0, 101.0, 103.0, 104.0, 102.0, 103.0])
    idx = pd.date_range("2024-01-01", periods=close.size, freq="h", tz="UTC")
    bars = make_bar_frame(
        idx,
        {"open": close, "high": close, "low": close, "close": close, "volume": np.ones(10)},
        symbol="S",
        timeframe="1h",
    )
    pred = pd.DataFrame(
        {
            "p_up": [0.6, 0.4, 0.7, 0.3, 0.6, np.nan, 0.8, 0.2, 0.6, np.nan],
            "fold": [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
            "regime": [0, 0, 1, 1, 1, np.nan, 0, 0, 1, np.nan],
        },
        index=idx,
    )
    return bars, pred


def test_summarize_frames() -> None:
    bars, pred = _summary_inputs()
    out = MRD().summarize(pred, bars)
    assert isinstance(MRD(), Summarizable)
    assert list(out) == ["regime_stats", "regime_transitions", "regime_folds", "regime_path"]
    for frame in out.values():
        assert all(isinstance(c, str) for c in frame.columns)
    close = bars["close"].to_numpy()
    ret = np.log(close[1:] / close[:-1])  # next-bar return of bars 0..8
    stats = out["regime_stats"].set_index("regime")
    assert list(stats.index) == [0, 1]
    assert stats.loc[0, "n_bars"] == 4 and stats.loc[1, "n_bars"] == 4
    assert stats.loc[0, "share"] == 0.5
    at0 = ret[[0, 1, 6, 7]]
    assert stats.loc[0, "mean_return"] == pytest.approx(at0.mean())
    assert stats.loc[0, "volatility"] == pytest.approx(at0.std(ddof=1))
    assert stats.loc[0, "long_share"] == 0.5  # p_up 0.6 and 0.8 of 0.6, 0.4, 0.8, 0.2
    assert stats.loc[0, "mean_return_long"] == pytest.approx(ret[[0, 6]].mean())
    # bar 0: long, next up (hit); 1: short, down (hit); 6: long, up (hit); 7: short, down
    assert stats.loc[0, "accuracy"] == 1.0
    assert stats.loc[1, "expected_duration"] == 2.0  # runs 2..4 and 8
    assert stats.loc[0, "expected_duration"] == 2.0  # runs 0..1 and 6..7
    tr = out["regime_transitions"].set_index("from")
    # steps within a fold between bars with a regime: 0-0, 0-1, 1-1, 1-1, 0-0, 0-1
    assert list(tr["n"]) == [4, 2]
    assert tr.loc[0, "to_0"] == 0.5 and tr.loc[0, "to_1"] == 0.5
    assert tr.loc[1, "to_0"] == 0.0 and tr.loc[1, "to_1"] == 1.0
    folds = out["regime_folds"]
    assert folds[["fold", "regime", "n_bars"]].to_numpy().tolist() == [
        [0, 0, 2], [0, 1, 3], [1, 0, 2], [1, 1, 1],
    ]  # fmt: skip
    assert folds["share"].tolist() == pytest.approx([0.4, 0.6, 2 / 3, 1 / 3])
    path = out["regime_path"]
    assert list(path.columns) == ["ts", "close", "regime"]
    assert path["ts"].iloc[0] == "2024-01-01T00:00:00+00:00"
    np.testing.assert_array_equal(path["close"], close)
    np.testing.assert_array_equal(path["regime"], pred["regime"])


def test_summarize_without_regimes_gives_empty_tables() -> None:
    bars, pred = _summary_inputs()
    out = MRD().summarize(pred.assign(regime=np.nan), bars)
    assert len(out["regime_stats"]) == 0 and len(out["regime_folds"]) == 0
    assert len(out["regime_transitions"]) == 0 and len(out["regime_path"]) == len(bars)


def test_summarize_bad_input() -> None:
    bars, pred = _summary_inputs()
    with pytest.raises(StrategyError, match=r"mrd: summarize needs prediction column\(s\)"):
        MRD().summarize(pred.drop(columns="regime"), bars)
    with pytest.raises(StrategyError, match="on the bars' index"):
        MRD().summarize(pred.iloc[1:], bars)


# --- controls ---------------------------------------------------------------------------------


def _oos_accuracy(bars: pd.DataFrame, run: Any) -> tuple[float, int]:
    lab = labels.direction(bars, 1).values.reindex(run.predictions.index).to_numpy()
    p = run.predictions["p_up"].to_numpy()
    ok = np.isfinite(p) & np.isfinite(lab) & (lab != 0)
    hits = (p[ok] > 0.5) == (lab[ok] > 0)
    return float(hits.mean()), int(hits.size)


def _walk_forward(bars: pd.DataFrame) -> Any:
    return walk_forward(
        lambda seed: MRD(**CONTROL, seed=seed),
        bars,
        splitter=WalkForwardSplit(N_SPLITS, test_size=TEST_SIZE, purge=1),
        costs=CostModel(),
        validity=ValidityConfig(bootstrap_reps=50, baseline_samples=50),
        progress=False,
    )


def test_planted_regimes_are_learned_out_of_sample() -> None:
    """Two persistent regimes with opposite return autocorrelation (best accuracy 0.8 with
    the regime known, about 0.5 without it: the sign persistence averages out). The
    threshold 0.65 is nine binomial standard errors above chance and leaves room for the
    bars the filter needs to notice a switch."""
    r, truth = _switching(N_BARS, seed=1, follow=0.8)
    bars = synthetic_bars(r, seed=2)
    run = _walk_forward(bars)
    acc, n = _oos_accuracy(bars, run)
    assert n > 900
    assert acc >= 0.65, f"OOS accuracy {acc:.3f} on planted regimes (best possible 0.8)"
    # regime 0, the calmest, is the planted calm regime
    regime = run.predictions["regime"].to_numpy()
    at = np.isfinite(regime)
    true = pd.Series(truth, index=bars.index).reindex(run.predictions.index).to_numpy()
    assert ((regime[at] == 0) == (true[at] == 0)).mean() > 0.9
    # the summary joins the run's explanations
    assert {"regime_stats", "regime_transitions", "regime_folds", "regime_path"} <= set(
        run.explanations
    )
    stats = run.explanations["regime_stats"].set_index("regime")
    assert stats.loc[0, "volatility"] < stats["volatility"].iloc[1:].min()


def test_random_walk_accuracy_is_chance_leakage_alarm() -> None:
    bars = synthetic_bars(np.random.default_rng(3).normal(0.0, 0.002, N_BARS), seed=4)
    acc, n = _oos_accuracy(bars, _walk_forward(bars))
    se = 0.5 / np.sqrt(n)
    assert abs(acc - 0.5) <= 3 * se, f"OOS accuracy {acc:.3f} on a random walk (n={n})"


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0}, "mrd: window must be a positive integer"),
        ({"states": ()}, "mrd: states must be distinct integers in"),
        ({"states": (1, 2)}, "mrd: states must be distinct integers in"),
        ({"states": (2, 2)}, "mrd: states must be distinct integers in"),
        ({"states": (2, 9)}, "mrd: states must be distinct integers in"),
        ({"states": (2.0, 3)}, "mrd: states must be distinct integers in"),
        ({"covariance": "spherical"}, "mrd: covariance must be 'diag' or 'full'"),
        ({"vol_window": 1}, "mrd: vol_window must be 0 or an integer >= 2"),
        ({"vol_window": -3}, "mrd: vol_window must be 0 or an integer >= 2"),
        ({"pooling": "max"}, "mrd: pooling must be 'last' or 'mean'"),
        ({"hidden_size": 0}, "mrd: hidden_size must be a positive integer"),
        ({"hmm_iter": 0}, "mrd: hmm_iter must be a positive integer"),
        ({"dropout": 1.0}, r"mrd: dropout must lie in \[0.0, 1.0\)"),
        ({"features": ()}, "mrd: features must be feature or group names"),
    ],
)
def test_bad_params_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(StrategyError, match=match):
        MRD(**kwargs)


def test_params_normalise_states() -> None:
    assert MRDParams(states=3).states == (3,)  # type: ignore[arg-type]  # as from YAML
    assert MRDParams(states=[4, 2]).states == (2, 4)  # type: ignore[arg-type]
    assert get("mrd") is MRD and MRD(seed=5).params.seed == 5


def test_too_few_observations_for_the_states(eurusd: pd.DataFrame) -> None:
    model = MRD(states=(8,))
    bars = eurusd.iloc[:150]
    with pytest.raises(StrategyError, match=r"mrd: the training slice holds \d+ regime obs"):
        model._fit_state(bars, model._features(bars), 149)
