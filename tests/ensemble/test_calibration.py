from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from mlengine.data.schema import MLEngineError
from mlengine.ensemble.calibration import (
    EPS,
    METHODS,
    CalibrationError,
    Calibrator,
    TemperatureCalibrator,
    calibration_metrics,
    choose_calibrator,
    make_calibrator,
)

GRID = np.linspace(0.0, 1.0, 2001)


def _series(n: int, seed: int, slope: float = 2.5, shift: float = 0.4):
    """True probabilities, outcomes drawn from them, and over-confident shifted reports."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < true).astype(np.float64)
    reported = expit(logit(true) * slope + shift)
    return true, y, reported


class _GivenProba(ClassifierMixin, BaseEstimator):
    """Reads its probability of class 1 from the single feature."""

    def fit(self, X, y):
        self.classes_ = np.array([0.0, 1.0])
        return self

    def predict_proba(self, X):
        p = np.asarray(X)[:, 0]
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        return (np.asarray(X)[:, 0] > 0.5).astype(np.float64)


class _GivenLogit(_GivenProba):
    """Also exposes the clipped logit, which the sigmoid calibration then fits on."""

    def decision_function(self, X):
        q = np.clip(np.asarray(X)[:, 0], EPS, 1.0 - EPS)
        return np.log(q) - np.log1p(-q)


def _sklearn(estimator: _GivenProba, method: str, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    frozen = FrozenEstimator(estimator.fit(p[:, None], y))
    cal = CalibratedClassifierCV(frozen, method=method).fit(p[:, None], y)
    return cal.predict_proba(GRID[:, None])[:, 1]


# --- agreement with scikit-learn ------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotonic_agrees_with_sklearn(seed: int) -> None:
    _, y, p = _series(3000, seed)
    ours = make_calibrator("isotonic").fit(p[:2000], y[:2000]).transform(GRID)
    theirs = _sklearn(_GivenProba(), "isotonic", p[:2000], y[:2000])
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_platt_agrees_with_sklearn_sigmoid(seed: int) -> None:
    _, y, p = _series(3000, seed)
    ours = make_calibrator("platt").fit(p[:2000], y[:2000]).transform(GRID)
    theirs = _sklearn(_GivenLogit(), "sigmoid", p[:2000], y[:2000])
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)


# --- temperature ----------------------------------------------------------------------------


@pytest.mark.parametrize("t0", [0.5, 2.0, 3.0])
def test_temperature_recovers_known_t(t0: float) -> None:
    _, y, p = _series(40_000, 7, slope=t0, shift=0.0)
    fitted = make_calibrator("temperature").fit(p, y)
    assert isinstance(fitted, TemperatureCalibrator)
    assert fitted.temperature == pytest.approx(t0, rel=0.05)


def test_temperature_of_calibrated_probabilities_is_one() -> None:
    true, y, _ = _series(40_000, 8)
    fitted = make_calibrator("temperature").fit(true, y)
    assert isinstance(fitted, TemperatureCalibrator)
    assert fitted.temperature == pytest.approx(1.0, abs=0.05)


def test_extreme_probabilities_are_clipped_not_infinite() -> None:
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.3, 0.7])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    for method in METHODS:
        out = make_calibrator(method).fit(p, y).transform(p)
        assert np.all(np.isfinite(out)), method
        assert np.all((out >= 0) & (out <= 1)), method


# --- metrics --------------------------------------------------------------------------------


def test_metrics_match_hand_computation() -> None:
    p = np.array([0.05, 0.15, 0.15, 0.85, 0.95, 0.55])
    y = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    m = calibration_metrics(p, y, n_bins=2)
    brier = (0.05**2 + 0.15**2 + 0.85**2 + 0.15**2 + 0.05**2 + 0.55**2) / 6
    ll = -(
        math.log(0.95) + math.log(0.85) + math.log(0.15) + math.log(0.85) + math.log(0.95)
        + math.log(0.45)
    ) / 6  # fmt: skip
    # bin [0, 0.5): 0.05, 0.15, 0.15 -> mean 0.35/3, observed 1/3
    # bin [0.5, 1]: 0.85, 0.95, 0.55 -> mean 2.35/3, observed 2/3
    ece = 3 / 6 * abs(0.35 / 3 - 1 / 3) + 3 / 6 * abs(2.35 / 3 - 2 / 3)
    assert m["n"] == 6
    assert m["brier"] == pytest.approx(brier, abs=1e-12)
    assert m["log_loss"] == pytest.approx(ll, abs=1e-12)
    assert m["ece"] == pytest.approx(ece, abs=1e-12)
    bins = m["bins"]
    assert isinstance(bins, pd.DataFrame)
    assert bins["n"].tolist() == [3, 3]
    np.testing.assert_allclose(bins["mean_predicted"], [0.35 / 3, 2.35 / 3])
    np.testing.assert_allclose(bins["observed_frequency"], [1 / 3, 2 / 3])


def test_metrics_of_perfect_certain_predictions() -> None:
    m = calibration_metrics([0.0, 1.0, 1.0], [0, 1, 1], n_bins=10)
    assert m["brier"] == 0.0
    assert m["ece"] == 0.0
    assert m["log_loss"] == pytest.approx(-math.log(1.0 - EPS), abs=1e-15)
    assert int(m["bins"]["n"].sum()) == 3


@pytest.mark.parametrize("method", METHODS)
def test_calibration_lowers_ece_and_log_loss_out_of_sample(method: str) -> None:
    _, y, p = _series(6000, 3)
    fitted = make_calibrator(method).fit(p[:4000], y[:4000])
    before = calibration_metrics(p[4000:], y[4000:])
    after = calibration_metrics(fitted.transform(p[4000:]), y[4000:])
    assert after["log_loss"] < before["log_loss"]
    assert after["ece"] < before["ece"]
    assert after["brier"] < before["brier"]


# --- choice ---------------------------------------------------------------------------------


def test_choose_picks_minimum_oos_log_loss_and_refits_on_all() -> None:
    _, y, p = _series(5000, 4)
    chosen, table = choose_calibrator(p, y)
    assert sorted(table["method"]) == sorted(METHODS)
    scores = table["oos_log_loss"].to_numpy()
    best = str(table["method"].to_numpy()[np.argmin(scores)])
    assert chosen.method == best
    assert scores[0] == scores.min()
    split = round(5000 * 0.7)
    for name, score in zip(table["method"], table["oos_log_loss"], strict=True):
        fitted = make_calibrator(name).fit(p[:split], y[:split])
        expected = calibration_metrics(fitted.transform(p[split:]), y[split:])["log_loss"]
        assert score == pytest.approx(expected, abs=1e-12)
    refit = make_calibrator(best).fit(p, y)
    np.testing.assert_array_equal(chosen.transform(GRID), refit.transform(GRID))


def test_choose_with_fixed_method() -> None:
    _, y, p = _series(2000, 5)
    chosen, table = choose_calibrator(p, y, method="temperature")
    assert chosen.method == "temperature"
    assert table["method"].tolist() == ["temperature"]


# --- persistence ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_json_round_trip_gives_identical_transforms(method: str) -> None:
    _, y, p = _series(2000, 6)
    fitted = make_calibrator(method).fit(p, y)
    loaded = Calibrator.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert loaded.method == method
    probe = np.concatenate([GRID, [np.nan]])
    np.testing.assert_array_equal(loaded.transform(probe), fitted.transform(probe))


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    p=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=60),
    flips=st.lists(st.booleans(), min_size=60, max_size=60),
    probe=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
)
def test_transform_is_monotone_and_in_unit_interval(method, p, flips, probe) -> None:
    y = np.array(flips[: len(p)], dtype=np.float64)
    y[0], y[1] = 0.0, 1.0
    fitted = make_calibrator(method).fit(p, y)
    x = np.sort(np.asarray([*probe, 0.0, 1.0]))
    out = fitted.transform(x)
    assert np.all((out >= 0.0) & (out <= 1.0))
    assert np.all(np.diff(out) >= 0.0)


def test_nan_passes_through_transform() -> None:
    _, y, p = _series(500, 9)
    out = make_calibrator("platt").fit(p, y).transform([0.2, np.nan, 0.8])
    assert np.isnan(out[1])
    assert np.isfinite(out[[0, 2]]).all()


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "y", "message"),
    [
        ([0.2, np.nan, 0.7], [0, 1, 1], "p is NaN at index 1"),
        ([0.2, 0.4, 1.5], [0, 1, 1], "p must lie in [0, 1]: 1.5 at index 2"),
        ([0.2, -0.1, 0.5], [0, 1, 1], "at index 1"),
        ([0.2, np.inf, 0.5], [0, 1, 1], "inf at index 1"),
        ([0.2, 0.4], [0, 1, 1], "y has 3 values, p 2"),
        ([0.2, 0.4, 0.6], [0, 2, 1], "y must hold 0/1 outcomes: 2.0 at index 1"),
        ([0.2, 0.4, 0.6], [0, np.nan, 1], "y must hold 0/1 outcomes: nan at index 1"),
        ([0.2, 0.4, 0.6], [1, 1, 1], "only the class 1"),
        ([], [], "empty"),
        ([[0.2, 0.4]], [[0, 1]], "one-dimensional"),
        (["a", "b"], [0, 1], "must be numbers"),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_bad_fit_input_raises(method: str, p, y, message: str) -> None:
    with pytest.raises(CalibrationError) as err:
        make_calibrator(method).fit(p, y)
    assert message in str(err.value)
    assert isinstance(err.value, MLEngineError)
    assert isinstance(err.value, ValueError)


def test_bad_transform_input_raises() -> None:
    fitted = make_calibrator("isotonic").fit([0.1, 0.9], [0, 1])
    with pytest.raises(CalibrationError, match=r"p must lie in \[0, 1\]: 2.0 at index 1"):
        fitted.transform([0.5, 2.0])


@pytest.mark.parametrize("method", METHODS)
def test_unfitted_calibrator_raises(method: str) -> None:
    with pytest.raises(CalibrationError, match="not fitted"):
        make_calibrator(method).transform([0.5])
    with pytest.raises(CalibrationError, match="not fitted"):
        make_calibrator(method).to_dict()


def test_unknown_method_raises() -> None:
    with pytest.raises(CalibrationError, match="unknown calibration method 'beta'"):
        make_calibrator("beta")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "beta"}, "unknown calibration method"),
        ({"a": 1.0}, "unknown calibration method 'None'"),
        ({"method": "platt", "a": 1.0}, "bad platt calibrator parameters"),
        ({"method": "platt", "a": -1.0, "b": 0.0}, "a must be finite and >= 0"),
        ({"method": "temperature", "temperature": 0.0}, "temperature must be finite and > 0"),
        ({"method": "temperature", "temperature": "hot"}, "bad temperature calibrator"),
        ({"method": "isotonic", "x": [0.1, 0.9], "y": [0.2]}, "equal-length"),
        ({"method": "isotonic", "x": [0.9, 0.1], "y": [0.2, 0.3]}, "x sorted"),
        ({"method": "isotonic", "x": [0.1, 0.9], "y": [0.5, 0.2]}, "non-decreasing"),
        ({"method": "isotonic", "x": [0.1, 0.9], "y": [0.5, 1.2]}, "in [0, 1]"),
    ],
)
def test_bad_dict_raises(data: dict, message: str) -> None:
    with pytest.raises(CalibrationError) as err:
        Calibrator.from_dict(data)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"holdout": 0.0}, "holdout must lie in (0, 1), got 0.0"),
        ({"holdout": 1.0}, "holdout must lie in (0, 1), got 1.0"),
        ({"holdout": 0.001}, "both parts need values"),
        ({"methods": ()}, "methods is empty"),
        ({"methods": ("isotonic", "beta")}, "unknown calibration method 'beta'"),
        ({"method": "beta"}, "unknown calibration method 'beta'"),
    ],
)
def test_bad_choose_settings_raise(kwargs: dict, message: str) -> None:
    _, y, p = _series(200, 10)
    with pytest.raises(CalibrationError) as err:
        choose_calibrator(p, y, **kwargs)
    assert message in str(err.value)


def test_choose_rejects_one_class_fit_part() -> None:
    p = np.linspace(0.1, 0.9, 10)
    y = np.array([0.0] * 7 + [1.0] * 3)
    with pytest.raises(CalibrationError, match=r"the fit part \(first 7 values\) holds only"):
        choose_calibrator(p, y)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_bad_bin_count_raises(n_bins) -> None:
    with pytest.raises(CalibrationError, match="n_bins must be an integer >= 1"):
        calibration_metrics([0.2, 0.8], [0, 1], n_bins=n_bins)
