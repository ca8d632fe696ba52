from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlengine.data.schema import MLEngineError
from mlengine.ensemble.gating import (
    MIN_ROWS,
    Gate,
    GateError,
    GateParams,
    GatingNetwork,
    weight_entropy,
)


def _index(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="ts")


def _one_good(n: int = 1500, k: int = 3, seed: int = 2):
    """One expert close to the true probability, the others noise; three random features."""
    rng = np.random.default_rng(seed)
    idx = _index(n)
    q = rng.uniform(0.2, 0.8, n)
    y = pd.Series((rng.uniform(size=n) < q).astype(np.float64), index=idx)
    probs = {"good": np.clip(q + rng.normal(0, 0.05, n), 0, 1)}
    for j in range(1, k):
        probs[f"noise{j}"] = np.clip(0.5 + rng.normal(0, 0.2, n), 0, 1)
    features = pd.DataFrame(rng.normal(size=(n, 3)), index=idx, columns=["f0", "f1", "f2"])
    return features, pd.DataFrame(probs, index=idx), y


def _regimes(n: int = 2000, block: int = 50, seed: int = 1):
    """Two experts, each informative in one regime (blocks of ``block`` bars) and noise
    (uncorrelated with the outcome) in the other; features: the regime and a useless column."""
    rng = np.random.default_rng(seed)
    idx = _index(n)
    regime = (np.arange(n) // block) % 2
    y = pd.Series((rng.uniform(size=n) < 0.5).astype(np.float64), index=idx)
    # 0.5 +- 0.25, in the direction of the outcome 85% of the time
    right = np.where(rng.uniform(size=n) < 0.85, 1.0, -1.0)
    direction = right * (2.0 * y.to_numpy() - 1.0)
    informative = np.clip(0.5 + 0.25 * direction + rng.normal(0, 0.05, n), 0.01, 0.99)
    noise = np.clip(0.5 + rng.normal(0, 0.15, n), 0.01, 0.99)
    probs = pd.DataFrame(
        {
            "a": np.where(regime == 0, informative, noise),
            "b": np.where(regime == 1, informative, noise),
        },
        index=idx,
    )
    features = pd.DataFrame(
        {"regime": regime.astype(np.float64), "useless": rng.normal(size=n)}, index=idx
    )
    return features, probs, y, regime


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


@pytest.fixture(scope="module")
def fitted():
    features, probs, y = _one_good(n=400, seed=5)
    return Gate(hidden=8, epochs=50).fit(features, probs, y), features, probs, y


# --- behaviour ------------------------------------------------------------------------------


def test_entropy_coefficient_spreads_the_weights():
    features, probs, y = _one_good()
    means = []
    for coef in (0.0, 0.1, 1.0):
        gate = Gate(entropy=coef, validation=0.0, epochs=150).fit(features, probs, y)
        means.append(float(weight_entropy(gate.weights(features)).mean()))
    assert means[0] < means[1] < means[2]
    assert means[2] > 0.95 * math.log(3)
    # without the regulariser the gate leans on the informative expert
    plain = Gate(entropy=0.0, validation=0.0, epochs=150).fit(features, probs, y)
    w = plain.weights(features).mean()
    assert w["good"] > 0.5 and w["good"] == w.max()


def test_regime_switching_gate_follows_the_informative_expert():
    features, probs, y, regime = _regimes()
    cut = int(0.7 * len(y))
    gate = Gate(entropy=0.001).fit(features.iloc[:cut], probs.iloc[:cut], y.iloc[:cut])
    later = slice(cut, None)
    w = gate.weights(features.iloc[later])
    r = regime[later]
    assert w["a"].to_numpy()[r == 0].mean() > 0.7
    assert w["b"].to_numpy()[r == 1].mean() > 0.7
    mix = gate.predict(features.iloc[later], probs.iloc[later])
    truth = y.iloc[later].to_numpy()
    assert mix.name == "p_up" and mix.index.equals(features.index[later])
    mixed = _log_loss(mix.to_numpy(), truth)
    for name in ("a", "b"):
        assert mixed < _log_loss(probs[name].iloc[later].to_numpy(), truth)
    # the mixture is the weighted sum of the experts
    expected = (w.to_numpy() * probs.iloc[later].to_numpy()).sum(axis=1)
    np.testing.assert_allclose(mix.to_numpy(), expected, rtol=0, atol=1e-12)


def test_linear_gate_also_learns_the_regimes():
    features, probs, y, regime = _regimes(n=1200)
    gate = Gate(hidden=0, entropy=0.0, lr=0.05).fit(features, probs, y)
    w = gate.weights(features)
    assert isinstance(gate.network_.net, torch.nn.Linear)
    assert w["a"].to_numpy()[regime == 0].mean() > 0.7
    assert w["b"].to_numpy()[regime == 1].mean() > 0.7


def test_early_stopping_and_history():
    features, probs, y = _one_good(n=300)
    gate = Gate(epochs=300, patience=5, lr=0.1).fit(features, probs, y)
    assert gate.n_epochs_ < 300
    assert len(gate.history_) == gate.n_epochs_
    assert gate.n_epochs_ - gate.best_epoch_ == 5
    history = [{k: float(v) for k, v in h.items() if v is not None} for h in gate.history_]
    val = [h["val_bce"] for h in history]
    assert all(math.isfinite(v) for v in val)
    # the kept epoch has the lowest validation loss seen
    assert gate.best_epoch_ >= 1 and val[gate.best_epoch_ - 1] == min(val)
    for h in history:
        assert math.isclose(h["loss"], h["bce"] - 0.01 * h["entropy"], rel_tol=1e-5, abs_tol=1e-6)
    full = Gate(epochs=30, validation=0.0).fit(features, probs, y)
    assert full.n_epochs_ == full.best_epoch_ == 30
    assert all(h["val_bce"] is None for h in full.history_)


def test_untrained_gate_gives_equal_weights():
    net = GatingNetwork(4, 3, hidden=5)
    w = net(torch.randn(7, 4))
    torch.testing.assert_close(w, torch.full((7, 3), 1 / 3))
    assert GatingNetwork(4, 3, hidden=0)(torch.randn(2, 4)).shape == (2, 3)


def test_deterministic_for_a_seed_and_leaves_torch_state_alone():
    features, probs, y = _one_good(n=400)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    threads = torch.get_num_threads()
    first = Gate(seed=7, epochs=40).fit(features, probs, y)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads
    again = Gate(seed=7, epochs=40).fit(features, probs, y)
    other = Gate(seed=8, epochs=40).fit(features, probs, y)
    w1, w2, w3 = (g.weights(features).to_numpy() for g in (first, again, other))
    assert np.array_equal(w1, w2)
    assert first.history_ == again.history_
    assert not np.array_equal(w1, w3)


@pytest.mark.parametrize("hidden", [0, 6])
def test_json_round_trip_gives_identical_weights(hidden):
    features, probs, y = _one_good(n=300)
    features.iloc[3, 1] = np.nan
    gate = Gate(hidden=hidden, epochs=30, validation=0.25).fit(features, probs, y)
    back = Gate.from_dict(json.loads(json.dumps(gate.to_dict(), allow_nan=False)))
    pd.testing.assert_frame_equal(back.weights(features), gate.weights(features), check_exact=True)
    pd.testing.assert_series_equal(
        back.predict(features, probs), gate.predict(features, probs), check_exact=True
    )
    assert back.params == gate.params
    assert back.feature_names_ == gate.feature_names_
    assert back.expert_names_ == gate.expert_names_
    assert (back.n_epochs_, back.best_epoch_, back.history_) == (
        gate.n_epochs_,
        gate.best_epoch_,
        gate.history_,
    )


def test_bad_gate_data_is_rejected(fitted):
    data = fitted[0].to_dict()
    with pytest.raises(GateError, match="bad gate data: KeyError"):
        Gate.from_dict({k: v for k, v in data.items() if k != "state"})
    wrong = dict(data, expert_names=[*data["expert_names"], "extra"])
    with pytest.raises(GateError, match="bad gate data"):
        Gate.from_dict(wrong)
    with pytest.raises(GateError, match="std"):
        Gate.from_dict(dict(data, std=[0.0] * len(data["std"])))
    with pytest.raises(GateError, match="mapping"):
        Gate.from_dict([1, 2])  # type: ignore[arg-type]


def test_missing_values_as_documented():
    features, probs, y = _one_good(n=400, seed=3)
    features["f1"] = features["f1"].mask(np.arange(400) % 7 == 0)
    features["empty"] = np.nan
    features["const"] = 2.5
    probs["good"] = probs["good"].mask(np.arange(400) % 11 == 0)
    gate = Gate(epochs=40, validation=0.25).fit(features, probs, y)
    n_train = 300
    # the scaler comes from the training rows only, missing values skipped
    np.testing.assert_allclose(gate.mean_[1], np.nanmean(features["f1"].iloc[:n_train]))
    np.testing.assert_allclose(gate.std_[1], np.nanstd(features["f1"].iloc[:n_train]))
    assert gate.mean_[3] == 0.0 and gate.std_[3] == 1.0
    assert gate.std_[4] == 1.0
    w = gate.weights(features)
    assert np.isfinite(w.to_numpy()).all()
    # a missing feature is the training mean
    filled = features.copy()
    filled["f1"] = filled["f1"].fillna(gate.mean_[1])
    filled["empty"] = 0.0
    np.testing.assert_allclose(gate.weights(filled).to_numpy(), w.to_numpy(), atol=1e-6)
    # a missing probability is 0.5
    p = gate.predict(features, probs)
    np.testing.assert_array_equal(p.to_numpy(), gate.predict(features, probs.fillna(0.5)))
    assert np.isfinite(p.to_numpy()).all()


def test_settings_and_overrides():
    base = GateParams(hidden=4, seed=3)
    gate = Gate(base, entropy=0.5)
    assert gate.params == dataclasses.replace(base, entropy=0.5)
    assert Gate().params == GateParams()
    assert "entropy=0.5" in repr(gate)
    with pytest.raises(GateError, match="unknown gate settings: colour"):
        Gate(colour=1)
    with pytest.raises(GateError, match="params must be GateParams"):
        Gate({"hidden": 3})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("hidden", -1, "hidden must be an integer >= 0"),
        ("hidden", 2.0, "hidden must be an integer"),
        ("epochs", 0, "epochs must be an integer >= 1"),
        ("patience", True, "patience must be an integer"),
        ("seed", "x", "seed must be an integer"),
        ("entropy", -0.1, "entropy must be a finite number >= 0"),
        ("entropy", math.inf, "entropy must be a finite number"),
        ("lr", 0.0, "lr must be a finite number > 0"),
        ("weight_decay", -1e-3, "weight_decay must be a finite number >= 0"),
        ("validation", 1.0, r"validation must be a finite number in \[0, 1\)"),
        ("validation", math.nan, "validation must be a finite number"),
    ],
)
def test_bad_settings_name_the_field(field, value, match):
    with pytest.raises(GateError, match=match):
        GateParams(**{field: value})


def test_gate_error_is_an_engine_value_error():
    assert issubclass(GateError, MLEngineError) and issubclass(GateError, ValueError)


# --- errors ---------------------------------------------------------------------------------


def _small(n: int = 60, seed: int = 0):
    return _one_good(n=n, seed=seed)


def test_fit_input_errors():
    features, probs, y = _small()
    label = re.escape(repr(features.index[7]))
    with pytest.raises(GateError, match="probs has 59 rows, features 60"):
        Gate().fit(features, probs.iloc[1:], y)
    shifted = probs.set_axis(
        probs.index.delete(7).append(pd.DatetimeIndex(["2030-01-01"], tz="UTC"))
    )
    with pytest.raises(GateError, match=f"probs index differs .* at position 7: .* vs {label}"):
        Gate().fit(features, shifted, y)
    with pytest.raises(GateError, match="y has 59 values, features 60 rows"):
        Gate().fit(features, probs, y.to_numpy()[1:])
    with pytest.raises(GateError, match="y index differs"):
        Gate().fit(features, probs, y.reset_index(drop=True))
    with pytest.raises(GateError, match="features must be a pandas DataFrame"):
        Gate().fit(features.to_numpy(), probs, y)

    text = features.assign(f1=["x"] * 60)
    with pytest.raises(GateError, match="features column 'f1' is not numeric"):
        Gate().fit(text, probs, y)
    inf = features.copy()
    inf.iloc[7, 2] = np.inf
    with pytest.raises(GateError, match=f"features column 'f2' is infinite at row {label}"):
        Gate().fit(inf, probs, y)
    with pytest.raises(GateError, match="features has no columns"):
        Gate().fit(features[[]], probs, y)

    for bad in (1.2, -0.1, np.inf):
        out = probs.copy()
        out.iloc[7, 1] = bad
        with pytest.raises(GateError, match=f"probs column 'noise1' .* at row {label}"):
            Gate().fit(features, out, y)
    with pytest.raises(
        GateError, match=r"probs has 1 expert column\(s\) \['good'\]: .* at least 2"
    ):
        Gate().fit(features, probs[["good"]], y)
    dup = pd.concat([probs["good"], probs["good"]], axis=1)
    with pytest.raises(GateError, match="probs has the column 'good' more than once"):
        Gate().fit(features, dup, y)
    with pytest.raises(GateError, match="probs column names must be strings, got 0"):
        Gate().fit(features, probs.set_axis([0, 1, 2], axis=1), y)

    nan_y = y.copy()
    nan_y.iloc[7] = np.nan
    with pytest.raises(GateError, match=f"y is NaN at row {label}"):
        Gate().fit(features, probs, nan_y)
    two = y.copy()
    two.iloc[7] = 2.0
    with pytest.raises(GateError, match=f"y must hold 0/1 outcomes: 2.0 at row {label}"):
        Gate().fit(features, probs, two)
    with pytest.raises(GateError, match="y holds only the class 1: the gate needs both"):
        Gate().fit(features, probs, np.ones(60))
    late = np.r_[np.zeros(48), np.ones(12)]
    with pytest.raises(GateError, match=r"only the class 0 in the training rows \(first 48\)"):
        Gate().fit(features, probs, late)


def test_outcomes_may_be_bools_or_lists():
    features, probs, y = _small()
    a = Gate(epochs=10).fit(features, probs, y.astype(bool)).weights(features)
    b = Gate(epochs=10).fit(features, probs, y.astype(int).tolist()).weights(features)
    pd.testing.assert_frame_equal(a, b)


def test_too_few_rows():
    features, probs, y = _small(n=24)
    with pytest.raises(GateError, match=f"too few rows to train: 24 rows give 19 .* >= {MIN_ROWS}"):
        Gate().fit(features, probs, y)
    Gate(validation=0.0, epochs=5).fit(features, probs, y)  # 24 rows suffice without validation
    with pytest.raises(GateError, match="too few rows to train: 19 rows give 19"):
        Gate(validation=0.0).fit(features.iloc[:19], probs.iloc[:19], y.iloc[:19])
    with pytest.raises(GateError, match="and >= 1 to validate"):
        Gate(validation=0.01).fit(features, probs, y)


def test_use_before_fit():
    features, probs, _ = _small()
    for call in (
        lambda g: g.weights(features),
        lambda g: g.predict(features, probs),
        lambda g: g.to_dict(),
    ):
        with pytest.raises(GateError, match="the gate is not fitted"):
            call(Gate())


def test_predict_time_columns(fitted):
    gate, features, probs, _ = fitted
    with pytest.raises(GateError, match=r"features columns differ .* missing \['f1'\], extra \[\]"):
        gate.weights(features.drop(columns="f1"))
    with pytest.raises(GateError, match=r"missing \[\], extra \['new'\]"):
        gate.weights(features.assign(new=1.0))
    with pytest.raises(
        GateError, match=r"probs columns differ .* missing \['noise2'\], extra \['x'\]"
    ):
        gate.predict(features, probs.rename(columns={"noise2": "x"}))
    with pytest.raises(GateError, match="probs has 399 rows, features 400"):
        gate.predict(features, probs.iloc[1:])
    with pytest.raises(GateError, match="probs column 'good' must lie in"):
        gate.predict(features, probs.assign(good=2.0))
    # the same columns in another order are fine
    reordered = features[features.columns[::-1]]
    pd.testing.assert_frame_equal(gate.weights(reordered), gate.weights(features))
    pd.testing.assert_series_equal(
        gate.predict(features, probs[probs.columns[::-1]]), gate.predict(features, probs)
    )
    assert gate.weights(features.iloc[:0]).shape == (0, 3)


def test_weight_entropy():
    w = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(weight_entropy(w), [0.0, math.log(2), math.log(3)])
    np.testing.assert_allclose(weight_entropy(pd.DataFrame(w)), weight_entropy(w))
    with pytest.raises(GateError, match="two-dimensional"):
        weight_entropy(np.ones(3))
    with pytest.raises(GateError, match=r"finite and >= 0: -0\.1 at row 1, column 2"):
        weight_entropy(np.array([[0.5, 0.5, 0.0], [0.6, 0.5, -0.1]]))


# --- property -------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.just(3)),
        elements=st.floats(allow_infinity=False, width=64),
    )
)
def test_weights_are_a_distribution(fitted, values):
    gate = fitted[0]
    features = pd.DataFrame(values, columns=gate.feature_names_)
    w = gate.weights(features).to_numpy()
    assert w.shape == (len(values), 3)
    assert np.isfinite(w).all() and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
