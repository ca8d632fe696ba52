"""MSA: the controls (planted continuation after structure breaks, random walk), the
diagnostics, the structure metrics and bad input.

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
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.schema import make_bar_frame
from mlengine.features.structure import structure_events, swings
from mlengine.strategies.base import NotFittedError, StrategyError
from mlengine.strategies.msa import MAX_EVENTS, MAX_SWINGS, MSA, PREDICTION_TYPES, MSAParams

CONTROL: dict[str, Any] = {"n_estimators": 100, "early_stopping_rounds": 10}
N_BARS, TEST_SIZE, N_SPLITS = 3000, 500, 2
N_SWING, AFTER, SIGMA = 3, 12, 0.002


def _structured(n: int, seed: int, drift: float) -> pd.DataFrame:
    """Hourly bars of a random walk whose returns drift ``drift * SIGMA`` per bar in the
    direction of the last break of structure during the ``AFTER`` bars that follow it.

    The breaks are found as the bars are made, by the rule of
    :func:`~mlengine.features.structure.structure_events` (a close beyond the last
    confirmed fractal swing of ``N_SWING`` bars), so the drift starts at the bar after
    the break: the pattern is causal and the structure features can see it."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, SIGMA, n)
    wick = np.abs(rng.normal(0.0, 5e-4, (2, n)))
    o, h, lo, c = (np.empty(n) for _ in range(4))
    prev = 100.0
    level = {1: np.nan, -1: np.nan}  # the last confirmed swing high / low, while unbroken
    trend, last_break = 0, -(10**9)
    for t in range(n):
        mu = drift * SIGMA * trend if t - last_break <= AFTER else 0.0
        o[t], c[t] = prev, prev * np.exp(mu + noise[t])
        h[t] = max(o[t], c[t]) * (1.0 + wick[0, t])
        lo[t] = min(o[t], c[t]) * (1.0 - wick[1, t])
        prev = c[t]
        i = t - N_SWING
        if i >= N_SWING:
            side = np.r_[h[i - N_SWING : i], h[i + 1 : t + 1]]
            if (side < h[i]).all():
                level[1] = h[i]
            side = np.r_[lo[i - N_SWING : i], lo[i + 1 : t + 1]]
            if (side > lo[i]).all():
                level[-1] = lo[i]
        for d in (1, -1):
            if (c[t] - level[d]) * d > 0:
                trend, last_break, level[d] = d, t, np.nan
    idx = pd.date_range("2020-01-01", periods=n, freq="h", tz="UTC")
    cols = {"open": o, "high": h, "low": lo, "close": c, "volume": np.ones(n)}
    return make_bar_frame(idx, cols, symbol="SYN", timeframe="1h")


def _oos(bars: pd.DataFrame, horizon: int = 6, step: int = 1) -> tuple[float, int, pd.DataFrame]:
    """Direction accuracy of ``p_up > 0.5`` over purged walk-forward test windows (every
    ``step``-th test bar), and the structure metrics of the stitched predictions."""
    params = {**CONTROL, "horizon": horizon}
    split = WalkForwardSplit(N_SPLITS, test_size=TEST_SIZE, purge=horizon)
    lab = labels.direction(bars, horizon).values.to_numpy()
    hits, preds = [], []
    for fold in split.folds(bars):
        model = MSA(**params, seed=fold.fold).fit(bars.iloc[fold.train])
        end = int(fold.test[-1]) + 1
        pred = model.predict_proba(bars.iloc[:end]).iloc[fold.test]
        p, y = pred["p_up"].to_numpy(), lab[fold.test]
        ok = np.isfinite(p) & np.isfinite(y) & (y != 0)
        ok[np.arange(ok.size) % step != 0] = False
        hits.append((p[ok] > 0.5) == (y[ok] > 0))
        preds.append(pred)
    allhits = np.concatenate(hits)
    stitched = pd.concat(preds)
    # summarize uses the parameters only, not a fold's fitted state
    metrics = MSA(**params).summarize(stitched, bars.loc[stitched.index])["structure_metrics"]
    return float(allhits.mean()), int(allhits.size), metrics


def test_the_planted_breaks_are_the_detectors_breaks() -> None:
    """The generator's rule is the detector's: continuation follows the events MSA sees."""
    bars = _structured(600, seed=7, drift=0.6)
    events = structure_events(bars, n=N_SWING)
    breaks = events[events["kind"].isin(["bos", "choch"])]
    assert len(breaks) > 20
    closes = bars["close"].to_numpy()
    after = []
    at = bars.index.get_indexer(pd.Index(breaks["confirmed"]))
    for t, d in zip(at, breaks["direction"], strict=True):
        if t + AFTER < len(bars):
            after.append(np.sign(closes[t + AFTER] - closes[t]) == d)
    assert np.mean(after) > 0.7


def test_planted_continuation_is_learned_out_of_sample() -> None:
    # with a drift of 0.6 sigma per bar for 12 bars after each break, a 6-bar label in
    # that span is right with probability ~ Phi(0.6 * 6 / sqrt(6)) ~ 0.93, and most bars
    # lie in such a span; 0.62 is 3 standard errors above chance even counting only the
    # ~167 non-overlapping labels (3 SE = 0.116)
    acc, n, metrics = _oos(_structured(N_BARS, seed=1, drift=0.6))
    assert n > 900
    assert acc >= 0.62, f"OOS accuracy {acc:.3f} on planted continuation"
    assert list(metrics.index) == list(PREDICTION_TYPES)
    after_bos = metrics.to_dict("index")["after_bos"]
    assert after_bos["n"] > 50
    assert after_bos["accuracy"] >= 0.7, metrics


@pytest.mark.parametrize("horizon", [1, 6])
def test_random_walk_accuracy_is_chance_leakage_alarm(horizon: int) -> None:
    """Scored on non-overlapping labels (every ``horizon``-th bar), so that the hits are
    independent and the binomial standard error holds."""
    bars = _structured(N_BARS, seed=3, drift=0.0)
    acc, n, _ = _oos(bars, horizon=horizon, step=horizon)
    assert n > 900 // horizon
    se = 0.5 / np.sqrt(n)
    assert abs(acc - 0.5) <= 3 * se, f"OOS accuracy {acc:.3f} on a random walk (n={n})"


# --- details ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:1400]


@pytest.fixture(scope="module")
def fitted(eurusd: pd.DataFrame) -> MSA:
    return MSA(**MSA.contract_params(), seed=0).fit(eurusd.iloc[:1000])


def test_predictions_and_diagnostics(fitted: MSA, eurusd: pd.DataFrame) -> None:
    pred = fitted.predict_proba(eurusd)
    diagnostics = ["trend_state", "after_bos", "after_choch", "near_fvg", "near_ob"]
    levels = ["fvg_below_atr", "fvg_above_atr", "ob_below_atr", "ob_above_atr"]
    assert list(pred.columns) == ["p_up", *diagnostics, *levels]
    for col in levels:
        assert pred[col].dropna().between(0.0, 10.0).all(), col
    # near_fvg says a gap is within near_atr: the nearer of the two levels
    nearer = pred[["fvg_below_atr", "fvg_above_atr"]].min(axis=1).dropna()
    near = pred["near_fvg"].loc[nearer.index] == 1.0
    assert (near == (nearer <= fitted.params.near_atr)).all()
    # return_zscore(100) warms up the longest
    assert pred.iloc[:100]["p_up"].isna().all()
    assert pred.iloc[100:].notna().all().all()
    assert set(pred["trend_state"].dropna()) <= {-1.0, 0.0, 1.0}
    for col in ("after_bos", "after_choch", "near_fvg", "near_ob"):
        assert set(pred[col].dropna()) == {0.0, 1.0}, col
    # after_bos is 1 exactly within `recent` bars of a BOS (the bar of the BOS included)
    events = structure_events(eurusd)
    bos = eurusd.index.get_indexer(pd.Index(events.loc[events["kind"] == "bos", "confirmed"]))
    want = np.zeros(len(eurusd))
    for t in bos:
        want[t : t + fitted.params.recent] = 1.0
    np.testing.assert_array_equal(pred["after_bos"].to_numpy()[14:], want[14:])


def test_summarize_counts_and_accuracy_by_type(fitted: MSA, eurusd: pd.DataFrame) -> None:
    bars = eurusd.iloc[:40]
    y = labels.direction(bars, fitted.params.horizon).values.to_numpy()
    p_up = np.where(y > 0, 0.8, 0.3)  # right wherever the label is known
    p_up[:5] = 0.5  # no direction: not scored
    p_up[5] = 1.0 - p_up[5]  # wrong once
    kinds = {k: np.zeros(40) for k in PREDICTION_TYPES[1:]}
    kinds["after_bos"][5:10] = 1.0
    pred = pd.DataFrame({"p_up": p_up, **kinds}, index=bars.index)
    m = fitted.summarize(pred, bars)["structure_metrics"].to_dict("index")
    known = np.isfinite(y) & (y != 0)
    assert m["all"]["n"] == known[5:].sum()
    assert m["all"]["accuracy"] == pytest.approx((known[5:].sum() - 1) / known[5:].sum())
    assert m["after_bos"]["n"] == known[5:10].sum()
    assert m["after_bos"]["accuracy"] == pytest.approx(1 - 1 / known[5:10].sum())
    assert m["near_ob"]["n"] == 0 and np.isnan(m["near_ob"]["accuracy"])


def _iso(stamps: pd.Series) -> list[str]:
    return ["" if pd.isna(t) else t.isoformat() for t in stamps]


def _structure(model: MSA, bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = model.summarize(model.predict_proba(bars), bars)
    assert list(out) == ["structure_metrics", "structure_events", "swings"]
    return out


def test_summarize_lists_the_last_structure_events_and_swings(
    fitted: MSA, eurusd: pd.DataFrame
) -> None:
    bars = eurusd.iloc[200:]  # the out-of-sample bars: detection starts at their first bar
    out = _structure(fitted, bars)
    events, found = out["structure_events"], out["swings"]
    assert list(events.columns) == [
        *("kind", "direction", "level", "top", "bottom", "formed", "confirmed", "mitigated")
    ]
    assert list(found.columns) == ["ts", "kind", "price", "confirmed"]
    p = fitted.params
    want = structure_events(bars, n=p.n, atr_window=p.atr_window)
    want_swings = swings(bars, n=p.n, atr_window=p.atr_window)
    assert len(want) > MAX_EVENTS and len(want_swings) > MAX_SWINGS  # the caps bite here
    want, want_swings = want.iloc[-MAX_EVENTS:], want_swings.iloc[-MAX_SWINGS:]
    assert len(events) == MAX_EVENTS and len(found) == MAX_SWINGS
    assert set(events["kind"]) == {"bos", "choch", "fvg", "ob", "sweep"}
    assert events["kind"].tolist() == want["kind"].tolist()
    np.testing.assert_array_equal(events["direction"], want["direction"])
    for col in ("level", "top", "bottom"):
        np.testing.assert_array_equal(events[col], want[col])
    for col in ("formed", "confirmed", "mitigated"):
        assert events[col].tolist() == _iso(want[col]), col
    assert (events["mitigated"] == "").any() and (events["mitigated"] != "").any()
    assert found["ts"].tolist() == _iso(want_swings["formed"])
    assert found["confirmed"].tolist() == _iso(want_swings["confirmed"])
    assert found["kind"].tolist() == ["high" if d > 0 else "low" for d in want_swings["direction"]]
    np.testing.assert_array_equal(found["price"], want_swings["level"])
    # every stamp is one of the bars given, as ISO 8601 text (Parquet-safe, labels are text)
    for frame, cols in ((events, ["formed", "confirmed"]), (found, ["ts", "confirmed"])):
        assert all(isinstance(c, str) for c in frame.columns)
        for col in cols:
            assert pd.DatetimeIndex(pd.to_datetime(frame[col], utc=True)).isin(bars.index).all()
    stamped = events.loc[events["mitigated"] != "", "mitigated"]
    assert pd.DatetimeIndex(pd.to_datetime(stamped, utc=True)).isin(bars.index).all()


@pytest.mark.parametrize("end", [700, 1111])
def test_summarized_structure_is_causal(fitted: MSA, eurusd: pd.DataFrame, end: int) -> None:
    """Summarising a prefix of the bars lists the events the full bars confirm by its last
    bar, those mitigated later still open: nothing comes from bars not given."""
    bars = eurusd.iloc[200:]
    prefix = bars.iloc[:end]
    last = prefix.index[-1]
    got = _structure(fitted, prefix)
    events, found = got["structure_events"], got["swings"]
    p = fitted.params
    full = structure_events(bars, n=p.n, atr_window=p.atr_window)
    want = full[full["confirmed"] <= last].iloc[-MAX_EVENTS:]
    assert len(full) > len(want) > 100 and (want["mitigated"] > last).any()
    assert events["kind"].tolist() == want["kind"].tolist()
    np.testing.assert_array_equal(events["direction"], want["direction"])
    for col in ("formed", "confirmed"):
        assert events[col].tolist() == _iso(want[col]), col
    assert events["mitigated"].tolist() == _iso(want["mitigated"].where(want["mitigated"] <= last))
    full_swings = swings(bars, n=p.n, atr_window=p.atr_window)
    want_swings = full_swings[full_swings["confirmed"] <= last].iloc[-MAX_SWINGS:]
    assert len(full_swings) > len(want_swings) > 50
    assert found["ts"].tolist() == _iso(want_swings["formed"])
    assert found["confirmed"].tolist() == _iso(want_swings["confirmed"])


def test_manifest_and_fit_info(fitted: MSA, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["strategy"] == "msa"
    assert manifest["feature_names"] == fitted.feature_names_
    assert {"ms_trend_3", "fvg_bull_dist_14", "ob_bear_dist_3_14"} <= set(fitted.feature_names_)
    assert "atr_14" not in fitted.feature_names_  # price units: dropped
    info = fitted.fit_info_
    assert info["n_train"] > 0 and info["n_val"] > 0
    assert info["xgb_best_iteration"] < fitted.params.n_estimators


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon": 0}, "msa: horizon must be a positive integer, got 0"),
        ({"n": 1.5}, "msa: n must be a positive integer"),
        ({"max_depth": True}, "msa: max_depth must be a positive integer"),
        ({"val_fraction": 1.0}, r"msa: val_fraction must lie in \(0, 1.0\)"),
        ({"near_atr": -1.0}, "msa: near_atr must lie in"),
        ({"seed": "0"}, "msa: seed must be an integer"),
    ],
)
def test_bad_params(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(StrategyError, match=match):
        MSA(**kwargs)


def test_bad_construction_and_too_few_bars(eurusd: pd.DataFrame) -> None:
    with pytest.raises(StrategyError, match="give params or keyword arguments, not both"):
        MSA(MSAParams(), horizon=3)
    with pytest.raises(StrategyError, match="params must be MSAParams"):
        MSA({"horizon": 3})  # type: ignore[arg-type]
    with pytest.raises(StrategyError, match=r"msa: 150 bars give .* need at least 20"):
        MSA().fit(eurusd.iloc[:150])
    with pytest.raises(NotFittedError, match="msa: call fit before"):
        MSA().save(Path("unused"))


def test_load_rejects_foreign_or_broken_artefacts(fitted: MSA, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "strategy": "pva"}))
    with pytest.raises(StrategyError, match="not a manifest of strategy 'msa'"):
        MSA.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "head.ubj").write_bytes(b"broken")
    with pytest.raises(StrategyError, match="cannot load the msa artefacts"):
        MSA.load(tmp_path)
    with pytest.raises(StrategyError, match="cannot load the msa artefacts"):
        MSA.load(tmp_path / "missing")
