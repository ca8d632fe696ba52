from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from mlengine.backtest.confidence import (
    BUCKET_COLUMNS,
    ConfidenceError,
    accuracy_coverage,
    analyse_confidence,
    confidence,
    confidence_buckets,
    reliability,
)


def _informative(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and next returns drawn from them (controlled experiment)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 1.0, n)
    up = rng.uniform(0.0, 1.0, n) < p
    size = rng.exponential(0.01, n)
    return p, np.where(up, size, -size)


def test_confidence_measures() -> None:
    p = np.array([0.5, 0.75, 0.25, 1.0, 0.0, np.nan])
    np.testing.assert_allclose(confidence(p), [0.0, 0.5, 0.5, 1.0, 1.0, np.nan])
    np.testing.assert_allclose(confidence(p, "max"), [0.5, 0.75, 0.75, 1.0, 1.0, np.nan])


def test_buckets_hand_case() -> None:
    p = [0.9, 0.6, 0.3, 0.55, 0.1, 0.5, 0.8]
    ret = [0.02, -0.01, -0.03, 0.01, 0.02, 0.05, np.nan]
    # direction from p: +, +, -, +, -, none (p = 0.5), + (unknown outcome) → 5 counted bars
    table = confidence_buckets(p, next_return=ret, buckets=[0.0, 0.5, 1.0])
    assert list(table.columns) == BUCKET_COLUMNS
    assert table["n"].tolist() == [3, 2]  # conf 0.2, 0.4, 0.1 | 0.8, 0.8
    assert table["hit_rate"].tolist() == pytest.approx([2 / 3, 1 / 2])  # 0.6 misses
    assert table["mean_pnl"].tolist() == pytest.approx([(-0.01 + 0.03 + 0.01) / 3, 0.0])
    assert table["total_pnl"].tolist() == pytest.approx([0.03, 0.0])
    assert table["share"].sum() == pytest.approx(1.0)
    assert table["mean_p_up"].tolist() == pytest.approx([(0.6 + 0.3 + 0.55) / 3, 0.5])


def test_position_sets_direction_and_size() -> None:
    p = [0.7, 0.7, 0.7]
    table = confidence_buckets(p, next_return=[0.01, 0.01, -0.02], position=[0.5, -1.0, 0.0],
                               buckets=1)  # fmt: skip
    assert table["n"].tolist() == [2]  # the flat bar is not a signal
    assert table["hit_rate"].tolist() == [0.5]
    assert table["total_pnl"].tolist() == pytest.approx([0.005 - 0.01])


def test_pnl_outcome() -> None:
    p = [0.9, 0.2, 0.6, 0.7]
    table = confidence_buckets(p, pnl=[10.0, -5.0, np.nan, 0.0], buckets=1)
    assert table["n"].tolist() == [3] and table["hit_rate"].tolist() == pytest.approx([1 / 3])
    assert table["total_pnl"].tolist() == [5.0]
    analysis = analyse_confidence(p, pnl=[10.0, -5.0, np.nan, 0.0])
    assert analysis.reliability is None


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(-1, 1), st.sampled_from([-1.0, 0.0, 0.5, 1.0])),
             min_size=1, max_size=200),
    st.integers(1, 8),
)  # fmt: skip
def test_buckets_partition_the_counted_bars(rows, k: int) -> None:
    p, ret, pos = (np.array(c) for c in zip(*rows, strict=True))
    table = confidence_buckets(p, next_return=ret, position=pos, buckets=k)
    counted = int(np.sum(pos != 0))
    assert table["n"].sum() == counted
    assert len(table) <= k
    if counted:
        assert table["share"].sum() == pytest.approx(1.0)
        assert table["total_pnl"].sum() == pytest.approx(np.sum(pos * ret), abs=1e-9)
        assert (table["lo"].to_numpy()[1:] == table["hi"].to_numpy()[:-1]).all()
        filled = table[table["n"] > 0]
        assert (filled["mean_confidence"] >= filled["lo"] - 1e-12).all()
        assert (filled["mean_confidence"] <= filled["hi"] + 1e-12).all()
        curve = accuracy_coverage(p, next_return=ret, position=pos)
        hits = np.sign(pos) * ret > 0
        assert curve["accuracy"].iloc[-1] == pytest.approx(hits[pos != 0].mean())
        assert curve["n"].iloc[-1] == counted


def test_quantile_buckets_have_equal_counts() -> None:
    p, ret = _informative(10_000, 1)
    table = confidence_buckets(p, next_return=ret, buckets=4)
    assert table["n"].tolist() == [2500] * 4
    # calibrated and informative: hit rate rises with confidence
    assert np.all(np.diff(table["hit_rate"]) > 0)
    # the top quarter has max(p, 1 - p) uniform on [0.875, 1]: expected hit rate 0.9375
    assert table["hit_rate"].iloc[-1] == pytest.approx(0.9375, abs=0.015)


def test_fixed_edges_must_cover_the_confidence_range() -> None:
    with pytest.raises(ConfidenceError, match="do not cover"):
        confidence_buckets([0.9, 0.1], next_return=[0.01, 0.01], buckets=[0.0, 0.5])
    with pytest.raises(ConfidenceError, match="do not cover"):
        confidence_buckets([0.55], next_return=[0.01], buckets=[0.6, 1.0], method="max")
    table = confidence_buckets([0.9, 0.6], next_return=[0.01, 0.01], buckets=[0.5, 0.75, 1.0],
                               method="max")  # fmt: skip
    assert table["n"].tolist() == [1, 1]


def test_reliability_matches_sklearn() -> None:
    p, ret = _informative(20_000, 2)
    up = (ret > 0).astype(float)
    rel = reliability(p, up, bins=10)
    prob_true, prob_pred = calibration_curve(up, p, n_bins=10, strategy="uniform")
    filled = rel.table[rel.table["n"] > 0]
    np.testing.assert_allclose(filled["observed_frequency"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(filled["mean_predicted"], prob_pred, rtol=1e-12)
    assert rel.brier == pytest.approx(brier_score_loss(up, p), rel=1e-12)
    assert rel.n == len(p) and rel.table["n"].sum() == len(p)
    quant = reliability(p, up, bins=5, strategy="quantile")
    prob_true, prob_pred = calibration_curve(up, p, n_bins=5, strategy="quantile")
    np.testing.assert_allclose(quant.table["observed_frequency"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(quant.table["mean_predicted"], prob_pred, rtol=1e-12)


def test_ece_small_when_calibrated_and_larger_when_not() -> None:
    p, ret = _informative(50_000, 3)
    up = ret > 0
    calibrated = reliability(p, up).ece
    overconfident = reliability(np.clip(0.5 + 1.8 * (p - 0.5), 0, 1), up).ece
    underconfident = reliability(0.5 + 0.4 * (p - 0.5), up).ece
    assert calibrated < 0.01
    assert overconfident > 0.1 and underconfident > 0.1
    # a hand case: all p = 0.8 with 60% ups → ECE 0.2
    assert reliability([0.8] * 5, [1, 1, 1, 0, 0]).ece == pytest.approx(0.2)


def test_accuracy_coverage_curve() -> None:
    p, ret = _informative(20_000, 4)
    curve = accuracy_coverage(p, next_return=ret)
    assert curve["coverage"].tolist() == pytest.approx([k / 100 for k in range(5, 101, 5)])
    assert curve["n"].tolist() == [math.ceil(k * 200) for k in range(5, 101, 5)]
    overall = np.mean(np.sign(p - 0.5) * ret > 0)
    assert curve["accuracy"].iloc[-1] == pytest.approx(overall)
    assert curve["accuracy"].iloc[0] > 0.9 > overall  # the top 5% are the surest
    assert np.all(np.diff(curve["min_confidence"]) <= 0)
    same = accuracy_coverage(p, next_return=ret, method="max")
    np.testing.assert_allclose(same["accuracy"], curve["accuracy"])  # same ranking
    small = accuracy_coverage([0.9, 0.6, 0.8, 0.3], pnl=[1.0, -1.0, -2.0, 3.0],
                              coverage=[0.25, 0.5, 1.0])  # fmt: skip
    assert small["n"].tolist() == [1, 2, 4]
    assert small["accuracy"].tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert small["mean_pnl"].tolist() == pytest.approx([1.0, -0.5, 0.25])


def test_series_inputs_and_analysis() -> None:
    p, ret = _informative(2_000, 5)
    idx = pd.date_range("2021-01-01", periods=len(p), freq="1h", tz="UTC")
    analysis = analyse_confidence(pd.Series(p, index=idx), next_return=pd.Series(ret, index=idx))
    assert analysis.buckets["n"].sum() == len(p)
    assert analysis.reliability is not None and analysis.reliability.n == len(p)
    assert analysis.coverage["accuracy"].iloc[-1] == pytest.approx(
        np.mean(np.sign(p - 0.5) * ret > 0)
    )
    with pytest.raises(ConfidenceError, match="same index"):
        analyse_confidence(pd.Series(p, index=idx), next_return=pd.Series(ret))


def test_nothing_to_count() -> None:
    table = confidence_buckets([0.5, 0.5], next_return=[0.1, -0.1])
    assert table.empty and list(table.columns) == BUCKET_COLUMNS
    curve = accuracy_coverage([0.5, 0.5], next_return=[0.1, -0.1])
    assert curve["accuracy"].isna().all()
    assert math.isnan(reliability([np.nan], [1.0]).ece)


def test_bad_inputs_are_errors() -> None:
    cases = [
        (lambda: confidence([0.2, 1.2]), r"\[0, 1\]: 1.2 at position 1"),
        (lambda: confidence([0.2], "odds"), "unknown confidence method"),  # type: ignore[arg-type]
        (lambda: confidence_buckets([0.2], next_return=[0.1], pnl=[1.0]), "exactly one"),
        (lambda: confidence_buckets([0.2]), "exactly one"),
        (lambda: confidence_buckets([0.2, 0.3], next_return=[0.1]), "1 values, p_up 2"),
        (lambda: confidence_buckets([0.2], next_return=[0.1], position=[np.nan]), "NaN"),
        (lambda: confidence_buckets([0.2], next_return=[0.1], buckets=0), "at least 1"),
        (lambda: confidence_buckets([0.2], next_return=[0.1], buckets=[0.5, 0.1]), "increasing"),
        (lambda: confidence_buckets([[0.2]], next_return=[0.1]), "one-dimensional"),  # type: ignore[list-item]
        (lambda: confidence_buckets(["x"], next_return=[0.1]), "must be numbers"),  # type: ignore[list-item]
        (lambda: accuracy_coverage([0.2], next_return=[0.1], coverage=[0.0, 1.0]), r"\(0, 1\]"),
        (lambda: reliability([0.2], [2.0]), "0/1"),
        (lambda: reliability([0.2], [1.0], strategy="kmeans"), "unknown strategy"),  # type: ignore[arg-type]
        (lambda: reliability([0.2], [1.0], bins=0), "at least 1"),
    ]
    for call, message in cases:
        with pytest.raises(ConfidenceError, match=message):
            call()
