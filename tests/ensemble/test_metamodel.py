"""The metamodel: causal context features, direction labels, the level-1 stack and the
level-2 walk-forward (no model or calibrator sees a label of the rows it predicts), the
calibration report, the two controls (regime switching, random walk), bad input and
determinism."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.backtest.walkforward import Predicted, predict_folds
from mlengine.data.loader import WalkForwardSplit
from mlengine.data.schema import MLEngineError
from mlengine.ensemble.calibration import METHODS
from mlengine.ensemble.gating import GateParams
from mlengine.ensemble.metamodel import (
    CALIBRATION_CHOICES,
    CONTEXT_COLUMNS,
    CONTEXT_WINDOW,
    MetamodelError,
    MetaResult,
    Stack,
    calibration_report,
    context_features,
    direction_labels,
    fit_predict,
    stack,
)
from mlengine.strategies import Context, NotFittedError, registry
from tests.strategies.controls import synthetic_bars

#: A small, quick gate for the tests that check the plumbing rather than what it learns.
FAST_GATE = GateParams(hidden=8, epochs=40, patience=10)
CTX = list(CONTEXT_COLUMNS)


class Stamp:
    """A strategy that stamps each prediction with the last bar it trained on
    (``trained_until``, epoch seconds); ``p_up`` from the sign of the last return."""

    name = "stamp"

    def __init__(self) -> None:
        self.params = {"step": 0.1}

    def fit(self, bars: pd.DataFrame, *, context: Context | None = None) -> Stamp:
        self.trained_until_ = float(bars.index[-1].timestamp())
        return self

    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        if not hasattr(self, "trained_until_"):
            raise NotFittedError("stamp: not fitted")
        up = np.sign(np.nan_to_num(bars["close"].diff().to_numpy()))
        return pd.DataFrame(
            {"p_up": 0.5 + 0.1 * up, "trained_until": self.trained_until_}, index=bars.index
        )

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Stamp:
        raise NotImplementedError


def _ar_bars(n: int, seed: int, phi: float = 0.1) -> pd.DataFrame:
    """Hourly bars whose log returns follow an AR(1) with coefficient ``phi``."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, 0.002, n)
    r = np.empty(n)
    r[0] = e[0]
    for i in range(1, n):
        r[i] = phi * r[i - 1] + e[i]
    return synthetic_bars(r, seed)


def _level1(bars: pd.DataFrame, purge: int) -> tuple[dict[str, Predicted], WalkForwardSplit]:
    split = WalkForwardSplit(test_size=100, min_train_size=200, purge=purge)
    factories = {
        "stamp": Stamp,
        "sma": lambda: registry.create("sma_crossover", fast=5, slow=20),
        "tsmom": lambda: registry.create("tsmom", lookback=10),
    }
    return predict_folds(factories, bars, split.folds(bars), progress=False), split


def _positions(index: pd.DatetimeIndex, ts: pd.Timestamp | None) -> int:
    assert ts is not None
    pos = int(index.searchsorted(ts))
    assert index[pos] == ts
    return pos


def _flip(data: Stack, start: pd.Timestamp) -> Stack:
    """``data`` with the known labels of the rows from ``start`` on flipped."""
    y = data.y.copy()
    later = y.index >= start
    y[later] = 1.0 - y[later]
    return dataclasses.replace(data, y=y)


def _synthetic_stack(
    probs: pd.DataFrame, y: pd.Series, bars: pd.DataFrame, extra: pd.DataFrame | None = None
) -> Stack:
    """A stack built directly: context of ``bars``, ``p.<name>`` and ``extra`` features."""
    parts = [context_features(bars), (probs - 0.5).add_prefix("p.")]
    if extra is not None:
        parts.append(extra)
    folds = pd.DataFrame(
        {n: np.arange(len(probs), dtype=np.int64) // 100 for n in probs.columns},
        index=probs.index,
    )
    return Stack(
        probs=probs,
        features=pd.concat(parts, axis=1),
        y=y.rename("y"),
        folds=folds,
        bars=bars,
        horizon=1,
    )


def _overconfident_stack(n: int = 1800, seed: int = 4) -> Stack:
    """Two experts that both stretch the true probability threefold away from 1/2."""
    rng = np.random.default_rng(seed)
    bars = synthetic_bars(rng.normal(0.0, 0.002, n), seed)
    q = rng.uniform(0.3, 0.7, n)
    y = pd.Series((rng.uniform(size=n) < q).astype(np.float64), index=bars.index)
    probs = pd.DataFrame(
        {
            name: np.clip(0.5 + 3.0 * (q + rng.normal(0.0, sd, n) - 0.5), 0.01, 0.99)
            for name, sd in (("a", 0.01), ("b", 0.03))
        },
        index=bars.index,
    )
    return _synthetic_stack(probs, y, bars)


def _regime_stack(n: int = 2400, block: int = 100, seed: int = 7) -> tuple[Stack, np.ndarray]:
    """Expert ``a`` holds the edge in regime 0, ``b`` in regime 1 (alternating blocks of
    ``block`` bars), each pure noise in the other; ``ctx_regime`` reveals the regime."""
    rng = np.random.default_rng(seed)
    bars = synthetic_bars(rng.normal(0.0, 0.002, n), seed)
    regime = (np.arange(n) // block) % 2
    y = pd.Series((rng.uniform(size=n) < 0.5).astype(np.float64), index=bars.index)
    right = np.where(rng.uniform(size=n) < 0.8, 1.0, -1.0) * (2.0 * y.to_numpy() - 1.0)
    informative = np.clip(0.5 + 0.2 * right + rng.normal(0.0, 0.05, n), 0.01, 0.99)
    noise = np.clip(0.5 + rng.normal(0.0, 0.15, n), 0.01, 0.99)
    probs = pd.DataFrame(
        {
            "a": np.where(regime == 0, informative, noise),
            "b": np.where(regime == 1, informative, noise),
        },
        index=bars.index,
    )
    extra = pd.DataFrame({"ctx_regime": regime.astype(np.float64)}, index=bars.index)
    return _synthetic_stack(probs, y, bars, extra), regime


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


@pytest.fixture(scope="module")
def level1() -> tuple[pd.DataFrame, dict[str, Predicted], WalkForwardSplit]:
    bars = _ar_bars(1500, seed=3)
    predicted, split = _level1(bars, purge=3)
    return bars, predicted, split


@pytest.fixture(scope="module")
def stacked(level1: tuple[pd.DataFrame, dict[str, Predicted], WalkForwardSplit]) -> Stack:
    bars, predicted, _ = level1
    return stack(predicted, bars, horizon=3)


META = WalkForwardSplit(test_size=200, min_train_size=500, embargo=2)


@pytest.fixture(scope="module")
def meta(stacked: Stack) -> MetaResult:
    return fit_predict(stacked, META, gate=FAST_GATE, seed=5, progress=False)


@pytest.fixture(scope="module")
def overconfident() -> tuple[Stack, MetaResult]:
    data = _overconfident_stack()
    split = WalkForwardSplit(test_size=300, min_train_size=600)
    return data, fit_predict(data, split, gate=FAST_GATE, progress=False)


# --- context features and labels ------------------------------------------------------------


def _check_truncation(bars: pd.DataFrame, full: pd.DataFrame, t: int) -> None:
    part = context_features(bars.iloc[:t])
    assert list(part.columns) == CTX
    pd.testing.assert_frame_equal(part, full.iloc[:t], check_exact=False, rtol=1e-12, atol=0)


def test_context_features_truncation_on_real_data(eurusd: pd.DataFrame) -> None:
    full = context_features(eurusd)
    assert full.index.equals(eurusd.index) and list(full.columns) == CTX
    for t in (1, 2, CONTEXT_WINDOW, CONTEXT_WINDOW + 1, 300, 1000, 2500, 4321, len(eurusd) - 1):
        _check_truncation(eurusd, full, t)


@settings(max_examples=25, deadline=None)
@given(t=st.integers(min_value=2, max_value=6000))
def test_context_features_truncation_at_any_cut(t: int) -> None:
    bars = datasets.load("eurusd_1h")
    _check_truncation(bars, context_features(bars), t)


def test_context_features_values(eurusd: pd.DataFrame) -> None:
    ctx = context_features(eurusd)
    # finite after the warm-up: 1 return + window for the volatility + window for its median
    assert np.isfinite(ctx.iloc[2 * CONTEXT_WINDOW :].to_numpy()).all()
    assert ctx["ctx_volatility"].iloc[: CONTEXT_WINDOW + 1].isna().all()
    cyclic = ctx[CTX[2:]].to_numpy()
    assert np.isfinite(cyclic).all() and (np.abs(cyclic) <= 1.0).all()
    np.testing.assert_allclose(ctx["ctx_hour_sin"] ** 2 + ctx["ctx_hour_cos"] ** 2, 1.0)
    np.testing.assert_allclose(ctx["ctx_week_sin"] ** 2 + ctx["ctx_week_cos"] ** 2, 1.0)
    # by hand: the definitions of the docstring at a few bars
    logret = np.diff(np.log(eurusd["close"].to_numpy()), prepend=np.nan)
    w = CONTEXT_WINDOW
    vols = pd.Series(logret).rolling(w).std().to_numpy()
    for t in (3 * w, 500, 3000, len(eurusd) - 1):
        window = logret[t - w + 1 : t + 1]
        vol = window.std(ddof=1)
        median = np.nanmedian(vols[max(0, t - 10 * w + 1) : t + 1])
        assert math.isclose(ctx["ctx_volatility"].iloc[t], math.log(vol / median), rel_tol=1e-9)
        trend = window.sum() / (vol * math.sqrt(w))
        assert math.isclose(ctx["ctx_trend"].iloc[t], trend, rel_tol=1e-9)
        ts = eurusd.index[t]
        hour = ts.hour + ts.minute / 60
        day = ts.day_of_week + hour / 24
        assert math.isclose(ctx["ctx_hour_sin"].iloc[t], math.sin(2 * math.pi * hour / 24))
        assert math.isclose(ctx["ctx_week_cos"].iloc[t], math.cos(2 * math.pi * day / 7))


def test_context_features_hour_and_day_by_hand() -> None:
    bars = synthetic_bars(np.zeros(24 * 8), seed=0)  # from Wednesday 2020-01-01 00:00
    ctx = context_features(bars)
    six = int(bars.index.searchsorted(pd.Timestamp("2020-01-01 06:00", tz="UTC")))
    assert math.isclose(float(ctx["ctx_hour_sin"].iloc[six]), 1.0)
    assert abs(ctx["ctx_hour_cos"].iloc[six]) < 1e-12
    monday = int(bars.index.searchsorted(pd.Timestamp("2020-01-06 00:00", tz="UTC")))
    assert abs(ctx["ctx_week_sin"].iloc[monday]) < 1e-12
    assert math.isclose(float(ctx["ctx_week_cos"].iloc[monday]), 1.0)
    # a flat price: no volatility, so no volatility or trend feature (NaN, never infinite)
    assert ctx["ctx_volatility"].isna().all() and ctx["ctx_trend"].isna().all()


def _bars_from_close(close: list[float]) -> pd.DataFrame:
    c = np.asarray(close, dtype=np.float64)
    bars = synthetic_bars(np.zeros(c.size), seed=0)
    bars["close"] = c
    bars["open"] = c
    bars["high"] = c + 1.0
    bars["low"] = c - 1.0
    return bars


def test_direction_labels_by_hand() -> None:
    bars = _bars_from_close([10, 11, 10, 10, 12, 13])
    y1 = direction_labels(bars, 1)
    assert y1.name == "y" and y1.index.equals(bars.index)
    np.testing.assert_array_equal(y1.to_numpy(), [1.0, 0.0, np.nan, 1.0, 1.0, np.nan])
    y3 = direction_labels(bars, 3)
    # 10→10 equal, 11→12 up, 10→13 up, then the last 3 unknown
    np.testing.assert_array_equal(y3.to_numpy(), [np.nan, 1.0, 1.0, np.nan, np.nan, np.nan])
    down = direction_labels(_bars_from_close([5, 4, 3, 2]), 3)
    np.testing.assert_array_equal(down.to_numpy(), [0.0, np.nan, np.nan, np.nan])


@settings(max_examples=50, deadline=None)
@given(
    close=st.lists(st.integers(min_value=5, max_value=8), min_size=1, max_size=40),
    horizon=st.integers(min_value=1, max_value=5),
)
def test_direction_labels_match_a_loop(close: list[int], horizon: int) -> None:
    y = direction_labels(_bars_from_close([float(c) for c in close]), horizon).to_numpy()
    for i, c in enumerate(close):
        ahead = close[i + horizon] if i + horizon < len(close) else None
        if ahead is None or ahead == c:
            assert np.isnan(y[i])
        else:
            assert y[i] == (1.0 if ahead > c else 0.0)


# --- level 1: the stack ---------------------------------------------------------------------


def test_stack_rows_come_from_models_trained_before_them(
    level1: tuple[pd.DataFrame, dict[str, Predicted], WalkForwardSplit], stacked: Stack
) -> None:
    bars, predicted, split = level1
    index = stacked.index
    assert list(stacked.probs.columns) == ["stamp", "sma", "tsmom"]
    trained = pd.to_datetime(stacked.features["stamp.trained_until"].to_numpy(), unit="s", utc=True)
    # by construction: the last training bar is before every row its model predicts, by
    # more than the purge
    assert (trained < index - pd.Timedelta(hours=split.purge)).all()
    row = bars.index.get_indexer(index)
    last = bars.index.get_indexer(trained)
    assert (row >= 0).all() and (last >= 0).all()
    assert (row - last >= split.purge + 1).all()
    for name, pred in predicted.items():
        pd.testing.assert_series_equal(
            stacked.folds[name], pred.predictions["fold"], check_names=False
        )
    # each fold's rows are its test window and carry the last bar of its training window
    for fold in split.folds(bars):
        mine = stacked.folds["stamp"] == fold.fold
        assert index[mine.to_numpy()].equals(bars.index[fold.test])
        expected = bars.index[fold.train[-1]].timestamp()
        assert (stacked.features.loc[mine, "stamp.trained_until"] == expected).all()


def test_stack_columns(
    level1: tuple[pd.DataFrame, dict[str, Predicted], WalkForwardSplit], stacked: Stack
) -> None:
    bars, predicted, _ = level1
    index = stacked.index
    assert stacked.horizon == 3
    assert stacked.bars.index.equals(index) and stacked.y.index.equals(index)
    pd.testing.assert_frame_equal(stacked.bars, bars.loc[index])
    pd.testing.assert_series_equal(stacked.y, direction_labels(bars, 3).reindex(index))
    pd.testing.assert_frame_equal(stacked.features[CTX], context_features(bars).reindex(index))
    for name, pred in predicted.items():
        p = pred.predictions["p_up"]
        np.testing.assert_array_equal(stacked.probs[name].to_numpy(), p.to_numpy())
        np.testing.assert_array_equal(stacked.features[f"p.{name}"].to_numpy(), p.to_numpy() - 0.5)
    # numeric diagnostics as <strategy>.<column>, the runner's fold column not among them
    for col in ("sma.sma_fast", "sma.position", "tsmom.past_return", "stamp.trained_until"):
        assert stacked.features[col].dtype == np.float64
    assert not [c for c in stacked.features.columns if c.endswith(".fold") or c.endswith(".p_up")]


# --- level 2: the meta walk-forward ---------------------------------------------------------


def test_meta_folds_are_in_time_order(stacked: Stack, meta: MetaResult) -> None:
    index = stacked.index
    purge = max(META.purge, stacked.horizon)
    split = WalkForwardSplit(
        test_size=META.test_size, min_train_size=META.min_train_size, purge=purge, embargo=2
    )
    folds = split.folds(stacked.bars)
    assert len(meta.folds) == len(folds) >= 3
    for mf, fold in zip(meta.folds, folds, strict=True):
        assert mf.fold == fold.fold
        assert mf.gate_start <= mf.gate_end
        assert mf.calibration_start is not None and mf.calibration_end is not None
        assert mf.gate_end < mf.calibration_start <= mf.calibration_end < mf.test_start
        assert mf.test_start <= mf.test_end
        # the purge of the label horizon, in rows, between the parts
        gap_cal = _positions(index, mf.calibration_start) - _positions(index, mf.gate_end)
        gap_test = _positions(index, mf.test_start) - _positions(index, mf.calibration_end)
        assert gap_cal >= stacked.horizon + 1 and gap_test >= stacked.horizon + 1
        assert mf.test_start == index[fold.test[0]] and mf.test_end == index[fold.test[-1]]
        assert mf.n_test == fold.test.size
        assert mf.n_gate + mf.n_calibration + purge == np.isfinite(stacked.y.iloc[fold.train]).sum()
        assert mf.n_calibration == round(0.3 * (mf.n_gate + mf.n_calibration + purge))
        assert mf.calibration in METHODS
        assert mf.to_dict()["test_start"] == mf.test_start.isoformat()
    for before, after in zip(meta.folds, meta.folds[1:], strict=False):
        assert before.test_end < after.test_start
    # every result row is a stack row, predicted by the meta fold whose test window holds it
    assert meta.index.isin(index).all() and meta.index.is_unique
    assert meta.index.is_monotonic_increasing
    assert meta.weights.index.equals(meta.index)
    assert list(meta.weights.columns) == list(stacked.probs.columns)
    np.testing.assert_allclose(meta.weights.sum(axis=1), 1.0, rtol=1e-6)
    assert meta.raw.name == "p_raw"
    assert set(meta.candidates) == {"ensemble", "equal_weight", "logistic_stack"}
    for frame in meta.candidates.values():
        assert frame.index.equals(meta.index)
        p = frame["p_up"].to_numpy()
        assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
        for mf in meta.folds:
            rows = frame.index[frame["fold"].to_numpy() == mf.fold]
            assert rows.size == mf.n_test
            assert rows[0] == mf.test_start and rows[-1] == mf.test_end
    equal = stacked.probs.loc[meta.index].mean(axis=1)
    np.testing.assert_allclose(meta.candidates["equal_weight"]["p_up"], equal, rtol=1e-12)
    assert len(meta.calibrators) == len(meta.folds)


def test_a_longer_purge_of_the_meta_splitter_is_kept(stacked: Stack) -> None:
    split = WalkForwardSplit(test_size=200, min_train_size=500, purge=6)
    result = fit_predict(stacked, split, gate=FAST_GATE, calibration="platt", progress=False)
    index = stacked.index
    for mf in result.folds:
        assert mf.calibration_start is not None and mf.n_calibration > 0
        assert _positions(index, mf.calibration_start) - _positions(index, mf.gate_end) >= 7
        assert _positions(index, mf.test_start) - _positions(index, mf.calibration_end) >= 7


def _assert_same(a: MetaResult, b: MetaResult, rows: pd.Index | None = None) -> None:
    for name in a.candidates:
        left, right = a.candidates[name], b.candidates[name]
        if rows is not None:
            left, right = left.loc[rows], right.loc[rows]
        pd.testing.assert_frame_equal(left, right, check_exact=True)
    raw_a, raw_b = (a.raw, b.raw) if rows is None else (a.raw.loc[rows], b.raw.loc[rows])
    pd.testing.assert_series_equal(raw_a, raw_b, check_exact=True)


def test_labels_of_test_rows_are_never_used(stacked: Stack, meta: MetaResult) -> None:
    last = meta.folds[-1]
    flipped = fit_predict(
        _flip(stacked, last.test_start), META, gate=FAST_GATE, seed=5, progress=False
    )
    _assert_same(meta, flipped)
    pd.testing.assert_frame_equal(meta.weights, flipped.weights, check_exact=True)
    assert meta.folds == flipped.folds


def test_later_labels_change_only_later_folds(stacked: Stack, meta: MetaResult) -> None:
    start = meta.folds[1].test_start
    flipped = fit_predict(_flip(stacked, start), META, gate=FAST_GATE, seed=5, progress=False)
    fold = meta.candidates["ensemble"]["fold"]
    early = meta.index[(fold <= 1).to_numpy()]
    later = meta.index[(fold >= 2).to_numpy()]
    _assert_same(meta, flipped, early)  # folds 0 and 1 trained before start
    pd.testing.assert_frame_equal(
        meta.candidates["equal_weight"], flipped.candidates["equal_weight"]
    )
    # the learned candidates of the later folds did learn from the flipped labels
    for name in ("ensemble", "logistic_stack"):
        before = meta.candidates[name].loc[later, "p_up"].to_numpy()
        after = flipped.candidates[name].loc[later, "p_up"].to_numpy()
        assert np.abs(before - after).max() > 1e-3, name


def test_same_seed_same_result_and_the_seed_matters() -> None:
    data, _ = _regime_stack(n=1400)
    split = WalkForwardSplit(test_size=300, min_train_size=500)
    gate = GateParams(hidden=8, epochs=60, patience=20)
    one = fit_predict(data, split, gate=gate, seed=3, progress=False)
    two = fit_predict(data, split, gate=gate, seed=3, progress=False)
    _assert_same(one, two)
    pd.testing.assert_frame_equal(one.weights, two.weights, check_exact=True)
    assert one.folds == two.folds
    other = fit_predict(data, split, gate=gate, seed=4, progress=False)
    assert not np.array_equal(one.weights.to_numpy(), other.weights.to_numpy())


# --- calibration ----------------------------------------------------------------------------


def test_calibration_lowers_the_ece_of_overconfident_experts(
    overconfident: tuple[Stack, MetaResult],
) -> None:
    data, result = overconfident
    table, metrics = calibration_report(result, data.y)
    assert list(metrics["stage"]) == ["raw", "calibrated"]
    assert list(table.columns[:1]) == ["stage"] and set(table["stage"]) == {"raw", "calibrated"}
    n_known = int(data.y.reindex(result.index).notna().sum())
    assert (metrics["n"] == n_known).all() and n_known == len(result.index)
    raw, cal = (metrics.set_index("stage").loc[s] for s in ("raw", "calibrated"))
    assert cal["ece"] < raw["ece"]
    assert cal["log_loss"] < raw["log_loss"] and cal["brier"] < raw["brier"]
    for mf, calibrator in zip(result.folds, result.calibrators, strict=True):
        assert mf.calibration in METHODS and calibrator is not None
        assert calibrator.method == mf.calibration
        rows = result.index[result.candidates["ensemble"]["fold"].to_numpy() == mf.fold]
        np.testing.assert_allclose(
            result.candidates["ensemble"].loc[rows, "p_up"].to_numpy(),
            calibrator.transform(result.raw.loc[rows].to_numpy()),
        )


@pytest.mark.parametrize("method", METHODS)
def test_fixed_calibration_method(method: str) -> None:
    data = _overconfident_stack(n=1100, seed=8)
    split = WalkForwardSplit(test_size=250, min_train_size=600)
    result = fit_predict(data, split, gate=FAST_GATE, calibration=method, progress=False)
    assert [mf.calibration for mf in result.folds] == [method] * len(result.folds)
    assert all(c is not None and c.method == method for c in result.calibrators)
    _, metrics = calibration_report(result, data.y)
    ece = metrics.set_index("stage")["ece"]
    assert ece["calibrated"] < ece["raw"]


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_without_calibration_the_calibrated_stage_is_raw(
    share: float, overconfident: tuple[Stack, MetaResult]
) -> None:
    data, _ = overconfident
    split = WalkForwardSplit(test_size=300, min_train_size=600)
    result = fit_predict(
        data, split, gate=FAST_GATE, calibration="none", calibration_share=share, progress=False
    )
    np.testing.assert_array_equal(result.candidates["ensemble"]["p_up"], result.raw.to_numpy())
    assert all(mf.calibration == "none" for mf in result.folds)
    assert result.calibrators == (None,) * len(result.folds)
    for mf in result.folds:
        # without a calibrator the gate learns on all the training rows
        assert mf.n_calibration == 0 and mf.calibration_start is None
    table, metrics = calibration_report(result, data.y)
    by_stage = metrics.set_index("stage")
    np.testing.assert_array_equal(
        by_stage.loc["raw"].to_numpy(dtype=np.float64),
        by_stage.loc["calibrated"].to_numpy(dtype=np.float64),
    )
    raw = table[table["stage"] == "raw"].drop(columns="stage").reset_index(drop=True)
    cal = table[table["stage"] == "calibrated"].drop(columns="stage").reset_index(drop=True)
    pd.testing.assert_frame_equal(raw, cal)


# --- controls -------------------------------------------------------------------------------


def test_control_regime_switching_gate_weights_the_right_expert() -> None:
    data, regime = _regime_stack()
    split = WalkForwardSplit(test_size=400, min_train_size=800)
    result = fit_predict(data, split, seed=1, progress=False)
    at = data.index.get_indexer(result.index)
    r = regime[at]
    w = result.weights
    w_a = float(w["a"].to_numpy()[r == 0].mean())
    w_b = float(w["b"].to_numpy()[r == 1].mean())
    print(f"regime control: mean weight a in regime 0 = {w_a:.3f}, b in regime 1 = {w_b:.3f}")
    assert w_a > 0.6 and w_b > 0.6
    # and the ensemble then beats the equal-weight average out of sample
    y = data.y.loc[result.index].to_numpy()
    losses = {}
    for name, frame in result.candidates.items():
        p = np.clip(frame["p_up"].to_numpy(), 1e-12, 1 - 1e-12)
        losses[name] = float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
    print(f"regime control: OOS log-loss {losses}")
    assert losses["ensemble"] < losses["equal_weight"]


def test_control_random_walk_has_no_edge() -> None:
    n = 2600
    rng = np.random.default_rng(11)
    bars = synthetic_bars(rng.normal(0.0, 0.002, n), seed=11)
    y = direction_labels(bars, 1)
    probs = pd.DataFrame(
        {f"noise{k}": np.clip(0.5 + rng.normal(0.0, 0.15, n), 0.01, 0.99) for k in range(3)},
        index=bars.index,
    )
    data = _synthetic_stack(probs, y, bars)
    split = WalkForwardSplit(test_size=400, min_train_size=600)
    result = fit_predict(data, split, gate=GateParams(hidden=8), seed=2, progress=False)
    labels = data.y.reindex(result.index)
    known = labels.notna().to_numpy()
    truth = labels.to_numpy()[known]
    n_scored = int(known.sum())
    se = math.sqrt(0.25 / n_scored)
    assert n_scored >= 1500
    for name, frame in result.candidates.items():
        acc = float(((frame["p_up"].to_numpy()[known] > 0.5) == (truth > 0.5)).mean())
        print(f"random-walk control: {name} accuracy {acc:.4f} (n={n_scored}, SE={se:.4f})")
        assert abs(acc - 0.5) <= 3 * se, name


# --- bad input ------------------------------------------------------------------------------


def _predicted(index: pd.Index, p: np.ndarray, name: str = "x") -> Predicted:
    frame = pd.DataFrame({"p_up": p, "fold": np.zeros(len(index), dtype=np.int64)}, index=index)
    return Predicted(name, {}, frame)


def test_stack_rejects_bad_predictions() -> None:
    bars = synthetic_bars(np.random.default_rng(0).normal(0.0, 0.002, 50), seed=0)
    idx = bars.index[10:]
    half = np.full(len(idx), 0.5)
    ok = _predicted(idx, half)
    for given_ in ({}, {"a": ok}):
        with pytest.raises(MetamodelError, match=r"at least 2 strategies, got \[('a')?\]"):
            stack(given_, bars, 1)
    with pytest.raises(MetamodelError, match=r"strategy 'b' predicted other bars than 'a'"):
        stack({"a": ok, "b": _predicted(bars.index[11:], half[1:])}, bars, 1)
    later = pd.date_range(bars.index[-1], periods=3, freq="h", tz="UTC")
    with pytest.raises(MetamodelError, match=r"strategy 'b': predictions on bars that are not"):
        stack({"a": ok, "b": _predicted(later, np.full(3, 0.5))}, bars, 1)
    for bad in (1.2, -0.1):
        p = half.copy()
        p[3] = bad
        with pytest.raises(
            MetamodelError, match=re.escape(f"strategy 'b': p_up = {bad} at {idx[3]} lies outside")
        ):
            stack({"a": ok, "b": _predicted(idx, p)}, bars, 1)
    assert issubclass(MetamodelError, MLEngineError) and issubclass(MetamodelError, ValueError)


def test_fit_predict_rejects_bad_settings(stacked: Stack) -> None:
    with pytest.raises(MetamodelError, match=r"calibration='beta': use one of") as err:
        fit_predict(stacked, META, calibration="beta", progress=False)
    assert all(c in str(err.value) for c in CALIBRATION_CHOICES)
    for share in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(MetamodelError, match=r"calibration_share must lie in \[0, 1\), got"):
            fit_predict(stacked, META, calibration_share=share, progress=False)
    for method in ("auto", *METHODS):
        with pytest.raises(MetamodelError, match=r"calibration needs rows of its own"):
            fit_predict(stacked, META, calibration=method, calibration_share=0.0, progress=False)


def test_fit_predict_without_a_fold(stacked: Stack) -> None:
    # the splitter's refusal, naming the bars given and needed, with what to change
    too_long = WalkForwardSplit(test_size=200, min_train_size=len(stacked.y))
    with pytest.raises(
        MetamodelError, match=rf"not enough bars: {len(stacked.y)} given.*lower meta_min_train"
    ):
        fit_predict(stacked, too_long, gate=FAST_GATE, progress=False)


def test_fit_predict_too_few_calibration_rows(stacked: Stack) -> None:
    with pytest.raises(MetamodelError, match=r"meta fold 0: \d calibration rows .*cannot fit"):
        fit_predict(stacked, META, gate=FAST_GATE, calibration_share=0.01, progress=False)
    # enough rows but one class only
    y = stacked.y.copy()
    first = META.folds(stacked.bars)[0]
    tail = stacked.index[first.train[-300]] <= y.index
    y[tail & y.notna().to_numpy()] = 1.0
    one_class = dataclasses.replace(stacked, y=y)
    with pytest.raises(
        MetamodelError, match=r"meta fold 0: \d+ calibration rows with classes \[1\.0\]"
    ):
        fit_predict(one_class, META, gate=FAST_GATE, progress=False)


def test_the_calibration_choices_are_the_calibrators_plus_auto_and_none() -> None:
    assert ("auto", *METHODS, "none") == CALIBRATION_CHOICES
