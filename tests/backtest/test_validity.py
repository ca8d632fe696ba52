"""Tests of the effectiveness validator: PSR, DSR, PBO, bootstrap CI, baselines, verdict."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rich.console import Console
from scipy import stats

from mlengine.backtest._baselines import _sharpe_of_runs
from mlengine.backtest.validity import (
    CRITERIA,
    ValidityConfig,
    ValidityError,
    assess,
    block_length,
    buy_and_hold,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    psr_from_moments,
    random_exposure_baseline,
    record_trial,
    sharpe_confidence_interval,
    sharpe_ratio,
    trials_summary,
)
from mlengine.data.schema import MLEngineError
from mlengine.data.store import open_store

# --- independent reference formulas -------------------------------------------------------


def ref_psr(r: np.ndarray, benchmark: float) -> float:
    """Bailey & López de Prado (2012), eq. for PSR, written out from the paper."""
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    z = (sr - benchmark) * math.sqrt(len(r) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return float(stats.norm.cdf(z))


def ref_sr0(n: int, var: float) -> float:
    """Bailey & López de Prado (2014): expected maximum Sharpe ratio of n trials."""
    g = 0.5772156649015329
    return math.sqrt(var) * (
        (1 - g) * stats.norm.ppf(1 - 1 / n) + g * stats.norm.ppf(1 - 1 / (n * math.e))
    )


def skewed_returns(seed: int, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.0004 + 0.01 * (rng.standard_t(5, n) - 0.3 * rng.exponential(1.0, n))


# --- PSR / DSR ------------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark", [-0.02, 0.0, 0.01, 0.05])
@pytest.mark.parametrize("seed", [1, 2])
def test_psr_matches_the_published_formula(seed: int, benchmark: float) -> None:
    r = skewed_returns(seed)
    assert abs(stats.skew(r)) > 0.1  # the moment terms matter in this case
    assert probabilistic_sharpe_ratio(r, benchmark) == pytest.approx(
        ref_psr(r, benchmark), abs=1e-12
    )


def test_sharpe_ratio_is_per_period() -> None:
    r = skewed_returns(3)
    assert sharpe_ratio(r) == pytest.approx(r.mean() / r.std(ddof=1))


def test_dsr_reproduces_the_papers_numerical_example() -> None:
    # Bailey & López de Prado (2014), numerical example: N = 100 trials, V[SR] = 1/2 a year,
    # SR = 2.5 a year, T = 1250 daily observations, skewness −3, kurtosis 10 → DSR ≈ 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    assert psr_from_moments(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0) == pytest.approx(
        0.9004, abs=5e-4
    )


@pytest.mark.parametrize("n", [2, 10, 100, 10_000])
@pytest.mark.parametrize("var", [1e-4, 0.01])
def test_expected_max_sharpe_matches_formula(n: int, var: float) -> None:
    assert expected_max_sharpe(n, var) == pytest.approx(ref_sr0(n, var), rel=1e-12)


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_expected_max_sharpe_approximates_simulated_maximum(n: int) -> None:
    draws = np.random.default_rng(n).standard_normal((4000, n)).max(axis=1)
    assert expected_max_sharpe(n, 1.0) == pytest.approx(draws.mean(), rel=0.03)


def test_dsr_is_psr_against_expected_maximum() -> None:
    r = skewed_returns(4)
    out = deflated_sharpe_ratio(r, n_trials=50, trial_sharpe_variance=0.002)
    assert out.expected_max == pytest.approx(ref_sr0(50, 0.002))
    assert out.dsr == pytest.approx(ref_psr(r, ref_sr0(50, 0.002)), abs=1e-12)
    assert out.psr == pytest.approx(ref_psr(r, 0.0), abs=1e-12)
    single = deflated_sharpe_ratio(r, n_trials=1, trial_sharpe_variance=None)
    assert single.dsr == single.psr  # no selection, no deflation


@settings(max_examples=60, deadline=None)
@given(
    sr=st.floats(0.01, 0.5),
    n=st.integers(10, 5000),
    extra=st.integers(1, 5000),
    skew=st.floats(-2, 2),
    excess=st.floats(0, 20),
)
def test_psr_grows_with_observations_for_positive_sharpe(
    sr: float, n: int, extra: int, skew: float, excess: float
) -> None:
    kurt = 1 + skew**2 + excess  # every distribution has kurtosis >= 1 + skewness²
    assert psr_from_moments(sr, n + extra, skew, kurt) >= psr_from_moments(sr, n, skew, kurt)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 10_000), more=st.integers(1, 10_000), var=st.floats(1e-6, 0.1))
def test_dsr_below_psr_and_falls_as_trials_grow(n: int, more: int, var: float) -> None:
    r = skewed_returns(5, 500)
    few = deflated_sharpe_ratio(r, n_trials=n, trial_sharpe_variance=var)
    many = deflated_sharpe_ratio(r, n_trials=n + more, trial_sharpe_variance=var)
    assert few.dsr <= few.psr
    assert many.dsr <= few.dsr
    assert many.expected_max > few.expected_max > 0


def test_psr_is_one_half_at_the_benchmark() -> None:
    assert psr_from_moments(0.1, 500, -1.0, 6.0, benchmark=0.1) == 0.5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (pd.Series([0.01, np.nan, 0.02, 0.0], index=list("abcd")), "at label b"),
        (np.array([0.01, 0.02, np.inf, 0.0]), "at position 2"),
        (np.zeros(50), "constant series"),
        (np.array([0.01, 0.02]), "at least 3"),
        (np.ones((5, 2)), "one dimension"),
        (["a", "b", "c"], "not numeric"),
    ],
)
def test_bad_returns_are_rejected_with_the_place(values: object, message: str) -> None:
    with pytest.raises(ValidityError, match=message) as err:
        probabilistic_sharpe_ratio(values)
    assert isinstance(err.value, MLEngineError)


@pytest.mark.parametrize(
    ("n", "var", "message"),
    [
        (0, 0.01, "positive integer"),
        (2.5, 0.01, "positive integer"),
        (True, 0.01, "positive integer"),
        (5, math.nan, "trial_sharpe_variance"),
        (5, -0.1, "trial_sharpe_variance"),
    ],
)
def test_bad_trial_inputs_are_rejected(n: Any, var: float, message: str) -> None:
    with pytest.raises(ValidityError, match=message):
        expected_max_sharpe(n, var)


# --- PBO ------------------------------------------------------------------------------------


def brute_force_pbo(m: np.ndarray, s: int) -> tuple[float, np.ndarray]:
    """CSCV written as the paper describes it: loop over combinations and slice."""
    edges = np.linspace(0, len(m), s + 1).round().astype(int)
    blocks = [np.arange(edges[i], edges[i + 1]) for i in range(s)]
    logits = []
    for combo in itertools.combinations(range(s), s // 2):
        is_rows = np.concatenate([blocks[i] for i in combo])
        oos_rows = np.concatenate([blocks[i] for i in range(s) if i not in combo])
        sr_is = m[is_rows].mean(0) / m[is_rows].std(0, ddof=1)
        sr_oos = m[oos_rows].mean(0) / m[oos_rows].std(0, ddof=1)
        best = int(np.argmax(sr_is))
        omega = stats.rankdata(sr_oos)[best] / (m.shape[1] + 1)
        logits.append(math.log(omega / (1 - omega)))
    arr = np.array(logits)
    return float(np.mean(arr <= 0)), arr


@pytest.mark.parametrize(("s", "t", "n"), [(4, 61, 5), (6, 120, 7), (8, 203, 4)])
def test_pbo_matches_brute_force(s: int, t: int, n: int) -> None:
    m = np.random.default_rng(s).normal(0.0, 0.01, (t, n))
    pbo, logits = brute_force_pbo(m, s)
    out = probability_of_backtest_overfitting(m, s)
    assert out.pbo == pytest.approx(pbo)
    np.testing.assert_allclose(out.logits, logits, rtol=1e-9)
    assert out.n_combinations == math.comb(s, s // 2)


def test_pbo_hand_built_overfit_and_persistent_cases() -> None:
    wiggle = np.array([0.01, -0.01, 0.01, -0.01])
    a = np.r_[0.02 + wiggle, -0.02 + wiggle]  # good in block 0, bad in block 1
    b = np.r_[-0.02 + wiggle, 0.02 + wiggle]  # the reverse
    c = np.r_[wiggle, wiggle]
    overfit = probability_of_backtest_overfitting(np.column_stack([a, b, c]), 2)
    # Each in-sample winner is the worst of 3 out of sample: ω = 1/4, λ = −ln 3.
    np.testing.assert_allclose(overfit.logits, [-math.log(3), -math.log(3)])
    assert overfit.pbo == 1.0
    assert overfit.prob_oos_loss == 1.0
    steady = probability_of_backtest_overfitting(np.column_stack([a, b, c + 0.03]), 2)
    np.testing.assert_allclose(steady.logits, [math.log(3), math.log(3)])
    assert steady.pbo == 0.0
    assert steady.selected.tolist() == [2, 2]


def test_pbo_of_pure_noise_is_about_one_half() -> None:
    values = [
        probability_of_backtest_overfitting(
            np.random.default_rng(seed).normal(0.0, 0.01, (2000, 20)), 16
        ).pbo
        for seed in range(10)
    ]
    assert 0.4 <= float(np.mean(values)) <= 0.8


def test_pbo_is_low_with_a_persistent_planted_edge() -> None:
    m = np.random.default_rng(11).normal(0.0, 0.01, (3000, 30))
    m[:, 7] += 0.002
    out = probability_of_backtest_overfitting(m, 16)
    assert out.pbo <= 0.05
    assert np.mean(out.selected == 7) > 0.95
    assert out.prob_oos_loss < 0.05
    assert np.isfinite(out.degradation_slope)
    assert out.is_sharpe.shape == out.oos_sharpe.shape == (math.comb(16, 8),)


def test_pbo_on_a_realistic_matrix_uses_every_combination() -> None:
    m = np.random.default_rng(0).normal(0.0, 0.01, (5000, 50))
    out = probability_of_backtest_overfitting(m, 16)
    assert out.n_combinations == 12870
    assert out.logits.shape == (12870,)


def test_pbo_takes_a_frame_and_names_bad_cells() -> None:
    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(40, 3)), columns=["x", "y", "z"])
    frame.iloc[5, 1] = np.nan
    with pytest.raises(ValidityError, match=r"row 5, column 'y'"):
        probability_of_backtest_overfitting(frame, 4)


@pytest.mark.parametrize(
    ("shape", "splits", "message"),
    [
        ((100, 5), 5, "even"),
        ((100, 5), 22, "even and in"),
        ((100, 1), 4, "at least 2 configurations"),
        ((10, 5), 16, "too few"),
        ((100,), 4, "T × N"),
    ],
)
def test_pbo_rejects_bad_input(shape: tuple[int, ...], splits: int, message: str) -> None:
    with pytest.raises(ValidityError, match=message):
        probability_of_backtest_overfitting(np.ones(shape), splits)


# --- bootstrap CI ----------------------------------------------------------------------------


def ar1(seed: int, n: int, phi: float, sharpe: float) -> np.ndarray:
    """AR(1) returns whose true (unconditional) per-period Sharpe ratio is ``sharpe``."""
    e = np.random.default_rng(seed).standard_normal(n)
    y = np.empty(n)
    y[0] = e[0] / math.sqrt(1 - phi**2)
    for i in range(1, n):
        y[i] = phi * y[i - 1] + e[i]
    return sharpe / math.sqrt(1 - phi**2) + y


@pytest.mark.parametrize("phi", [0.0, 0.4])
def test_bootstrap_ci_covers_the_true_sharpe(phi: float) -> None:
    true_annual = 0.05 * math.sqrt(252)

    def covers(seed: int) -> bool:
        r = ar1(seed, 1000, phi, 0.05)
        ci = sharpe_confidence_interval(r, periods_per_year=252, reps=400, seed=seed)
        return ci.lower <= true_annual <= ci.upper

    assert np.mean([covers(seed) for seed in range(30)]) >= 0.85


def test_bootstrap_ci_is_reproducible_with_the_seed() -> None:
    r = ar1(7, 800, 0.2, 0.08)
    one = sharpe_confidence_interval(r, seed=42, reps=300)
    again = sharpe_confidence_interval(r, seed=42, reps=300)
    other = sharpe_confidence_interval(r, seed=43, reps=300)
    assert (one.lower, one.upper) == (again.lower, again.upper)
    assert (one.lower, one.upper) != (other.lower, other.upper)
    assert one.lower < one.sharpe < one.upper
    assert one.sharpe == pytest.approx(sharpe_ratio(r))


@pytest.mark.parametrize(("kind", "method"), [("circular", "percentile"), ("stationary", "bca")])
def test_bootstrap_ci_kinds_and_methods(kind: Any, method: Any) -> None:
    r = ar1(8, 400, 0.1, 0.1)
    ci = sharpe_confidence_interval(
        r,
        periods_per_year=365,
        reps=300,
        kind=kind,
        method=method,
        block=5,
    )
    assert ci.lower < sharpe_ratio(r) * math.sqrt(365) < ci.upper
    assert (ci.kind, ci.method, ci.block_length) == (kind, method, 5)


def test_block_length_grows_with_dependence() -> None:
    assert block_length(ar1(9, 3000, 0.7, 0.0)) > block_length(ar1(9, 3000, 0.0, 0.0)) >= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 1.0}, "level"),
        ({"reps": 5}, "reps"),
        ({"block": 600}, "block length"),
        ({"periods_per_year": 0.0}, "periods_per_year"),
    ],
)
def test_bootstrap_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidityError, match=message):
        sharpe_confidence_interval(ar1(1, 1000, 0.0, 0.05), **kwargs)


def test_bootstrap_rejects_short_or_constant_returns() -> None:
    with pytest.raises(ValidityError, match="at least 20"):
        sharpe_confidence_interval(np.arange(10.0))
    with pytest.raises(ValidityError, match="constant"):
        sharpe_confidence_interval(np.full(100, 0.01))


# --- baselines --------------------------------------------------------------------------------


def runs_position(seed: int, n_runs: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.repeat(rng.choice([-1.0, 0.0, 0.5, 1.0], n_runs), length)


def test_random_signal_strategy_gets_a_large_p_value() -> None:
    r = np.random.default_rng(20).normal(0.0, 0.01, 3000)
    out = random_exposure_baseline(r, runs_position(20, 150, 20), n_samples=500, seed=1)
    assert out.p_value > 0.1
    assert out.null_sharpes.shape == (500,)


def test_random_signal_p_values_are_calibrated() -> None:
    p = [
        random_exposure_baseline(
            np.random.default_rng(s).normal(0.0, 0.01, 2000),
            runs_position(s, 100, 20),
            n_samples=200,
            seed=s,
        ).p_value
        for s in range(30)
    ]
    assert 0.35 <= float(np.mean(p)) <= 0.65
    assert np.mean(np.array(p) < 0.05) <= 0.15


@pytest.mark.parametrize("method", ["runs", "bars"])
def test_planted_edge_gets_a_tiny_p_value(method: Any) -> None:
    pos = runs_position(21, 150, 20)
    r = np.random.default_rng(21).normal(0.0, 0.01, pos.size) + 0.002 * np.sign(pos)
    out = random_exposure_baseline(r, pos, n_samples=999, seed=3, method=method)
    assert out.p_value == pytest.approx(1 / 1000)
    assert out.sharpe > out.null_quantile_95


def test_baseline_reports_exposure_and_mix_and_is_seeded() -> None:
    pos = np.array([0.0, 1.0, 1.0, -1.0, 0.0, 0.0, 1.0, 0.5] * 50)
    r = np.random.default_rng(2).normal(0.0, 0.01, pos.size)
    out = random_exposure_baseline(r, pos, n_samples=100, seed=9, periods_per_year=252)
    assert out.exposure == pytest.approx(5 / 8)
    assert out.long_share == pytest.approx(4 / 5)
    assert out.sharpe == pytest.approx(sharpe_ratio(pos * r) * math.sqrt(252))
    again = random_exposure_baseline(r, pos, n_samples=100, seed=9, periods_per_year=252)
    np.testing.assert_array_equal(out.null_sharpes, again.null_sharpes)


def test_always_in_the_market_has_no_timing_to_test() -> None:
    r = np.random.default_rng(3).normal(0.001, 0.01, 500)
    assert random_exposure_baseline(r, np.ones(500), n_samples=50).p_value == 1.0


def test_run_sharpe_matches_an_explicit_position() -> None:
    rng = np.random.default_rng(4)
    r = rng.normal(0.0, 0.01, 60)
    values, lengths = np.array([[1.0, -0.5, 0.0, 2.0]]), np.array([[10, 25, 5, 20]])
    cum, cum_sq = np.r_[0.0, np.cumsum(r)], np.r_[0.0, np.cumsum(r * r)]
    direct = sharpe_ratio(np.repeat(values[0], lengths[0]) * r)
    assert _sharpe_of_runs(values, lengths, cum, cum_sq, 60)[0] == pytest.approx(direct)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_samples=st.integers(1, 200))
def test_p_value_is_a_valid_permutation_p_value(seed: int, n_samples: int) -> None:
    r = np.random.default_rng(seed).normal(0.0, 0.01, 300)
    out = random_exposure_baseline(r, runs_position(seed, 30, 10), n_samples=n_samples, seed=seed)
    assert 1 / (n_samples + 1) <= out.p_value <= 1.0


def test_buy_and_hold_comparison() -> None:
    rng = np.random.default_rng(5)
    asset, ret = rng.normal(0.0005, 0.01, 400), rng.normal(0.001, 0.01, 400)
    out = buy_and_hold(ret, asset, periods_per_year=252)
    assert out.asset_sharpe == pytest.approx(asset.mean() / asset.std(ddof=1) * math.sqrt(252))
    assert out.excess_sharpe == pytest.approx(out.sharpe - out.asset_sharpe)
    assert out.asset_total_return == pytest.approx(np.prod(1 + asset) - 1)


def test_misaligned_inputs_are_rejected() -> None:
    idx = pd.date_range("2024-01-01", periods=50, freq="h", tz="UTC")
    a = pd.Series(np.random.default_rng(6).normal(size=50), index=idx)
    shifted = a.set_axis(idx + pd.Timedelta(hours=1))
    with pytest.raises(ValidityError, match="not on the same index: 2024-01-01 00:00"):
        random_exposure_baseline(a, shifted)
    with pytest.raises(ValidityError, match="has 50 values but position has 49"):
        random_exposure_baseline(a.to_numpy(), np.ones(49))


# --- trials in the store ---------------------------------------------------------------------


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("duckdb_url" if request.param == "duckdb" else "pg_url"))


def test_trials_record_and_summary(store_url: str) -> None:
    with open_store(store_url) as store:
        assert trials_summary(store) == (0, pytest.approx(math.nan, nan_ok=True))
        for lr, sharpe in [(0.1, 0.02), (0.2, 0.05), (0.3, -0.01)]:
            record_trial(
                store,
                strategy="pva",
                params={"lr": lr},
                sharpe=sharpe,
                n_obs=1000,
                symbol="EURUSD",
                timeframe="1h",
                run_id="r1",
            )
        # A re-evaluation of lr=0.2 supersedes the first; a failed trial counts but has no SR.
        again = record_trial(
            store,
            strategy="pva",
            params={"lr": 0.2},
            sharpe=0.04,
            n_obs=1000,
            symbol="EURUSD",
            timeframe="60m",
            run_id="r2",
        )
        record_trial(
            store,
            strategy="pva",
            params={"lr": 0.4},
            sharpe=None,
            n_obs=None,
            symbol="EURUSD",
            timeframe="1h",
        )
        record_trial(
            store,
            strategy="pva",
            params={"lr": 0.1},
            sharpe=0.03,
            n_obs=900,
            symbol="BTCUSD",
            timeframe="1h",
        )
        record_trial(
            store,
            strategy="mrd",
            params={"lr": 0.1},
            sharpe=0.01,
            n_obs=900,
            symbol="EURUSD",
            timeframe="4h",
        )

        n, var = trials_summary(store, strategy="pva", symbol="EURUSD", timeframe="1h")
        assert n == 4
        assert var == pytest.approx(np.var([0.02, 0.04, -0.01], ddof=1))
        assert trials_summary(store, strategy="pva").n_trials == 5
        assert trials_summary(store).n_trials == 6
        assert trials_summary(store, timeframe="4h") == (1, pytest.approx(math.nan, nan_ok=True))
        assert trials_summary(store, run_id="r1").n_trials == 3
        assert trials_summary(store, symbol="BTCUSD").n_trials == 1
        rows = store.read_table("ml.trials", where={"params_hash": again})
        assert rows["params"].iloc[0] == {"lr": 0.2}
        assert set(rows["symbol"]) == {"EURUSD"}
        assert set(rows["timeframe"]) == {"1h"}
        assert rows["metric_value"].tolist() == pytest.approx([0.05, 0.04])


def test_bad_trials_are_rejected_and_nothing_is_stored(duckdb_url: str) -> None:
    with open_store(duckdb_url) as store:
        record_trial(store, strategy="pva", params={"lr": 1}, sharpe=0.1, n_obs=10)
        bad: list[tuple[dict[str, Any], str]] = [
            ({"params": {"f": object()}}, "JSON-serialisable"),
            ({"params": {"x": math.nan}}, "JSON-serialisable"),
            ({"sharpe": math.inf}, "sharpe must be finite"),
            ({"strategy": " "}, "strategy must be non-empty"),
            ({"n_obs": -1}, "n_obs"),
            ({"symbol": ""}, "symbol"),
            ({"timeframe": "7x"}, "timeframe"),
        ]
        for override, message in bad:
            kwargs: dict[str, Any] = {
                "strategy": "pva",
                "params": {},
                "sharpe": 0.1,
                "n_obs": 10,
            }
            with pytest.raises(MLEngineError, match=message):
                record_trial(store, **{**kwargs, **override})
        assert store.read_table("ml.trials")["params"].tolist() == [{"lr": 1}]


# --- verdict ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StandIn:
    """A Metrics-like stand-in with the three fields assess reads."""

    sharpe: float = 2.0
    max_drawdown: float = 0.10
    direction_accuracy: float = 0.65
    periods_per_year: float = 252.0


def backtest(seed: int, edge: float, n: int = 3000) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(strategy returns, asset returns, position) of a synthetic run with a planted edge."""
    idx = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC", name="ts")
    pos = pd.Series(runs_position(seed, n // 20, 20), index=idx)
    rng = np.random.default_rng(seed)
    asset = pd.Series(rng.normal(0.0, 0.01, n) + edge * np.sign(pos.to_numpy()), index=idx)
    return pos * asset, asset, pos


FAST: dict[str, Any] = {"bootstrap_reps": 300, "baseline_samples": 300}


def test_verdict_of_a_real_edge_passes_everything() -> None:
    ret, asset, pos = backtest(30, 0.003)
    v = assess(
        ret, StandIn(), bar_returns=asset, position=pos, n_trials=1, config=ValidityConfig(**FAST)
    )
    assert [c.name for c in v.criteria] == list(CRITERIA)
    assert {c.name: c.passed for c in v.criteria} == {**dict.fromkeys(CRITERIA, True), "pbo": None}
    assert (v.score, v.effective) == (1.0, True)
    assert v.ci is not None and v.ci.lower > 0
    assert v.dsr is not None and v.dsr.dsr > 0.95
    assert v.criterion("sharpe").value == 2.0
    assert v.periods_per_year == 252.0


def test_verdict_of_noise_fails_the_validity_tests() -> None:
    ret, asset, pos = backtest(31, 0.0)
    v = assess(
        ret,
        StandIn(sharpe=0.1),
        bar_returns=asset,
        position=pos,
        n_trials=20,
        trial_sharpe_variance=0.001,
        config=ValidityConfig(**FAST),
    )
    failed = {c.name for c in v.criteria if c.passed is False}
    assert {"sharpe", "deflated_sharpe", "bootstrap_ci", "random_baseline"} <= failed
    assert not v.effective
    assert v.score == pytest.approx(sum(c.passed is True for c in v.criteria) / 7)


@pytest.mark.parametrize(
    ("metrics", "weights", "required", "score", "effective"),
    [
        (StandIn(direction_accuracy=0.55), {}, (), 6 / 7, True),
        (StandIn(direction_accuracy=0.55), {"direction_accuracy": 3.0}, (), 6 / 9, False),
        (StandIn(direction_accuracy=0.55), {}, ("direction_accuracy",), 6 / 7, False),
        (StandIn(direction_accuracy=math.nan, max_drawdown=0.2), {}, (), 5 / 7, False),
        (StandIn(sharpe=1.5, max_drawdown=0.15, direction_accuracy=0.6), {}, (), 1.0, True),
        (StandIn(sharpe=1.0), {"sharpe": 0.0}, (), 1.0, True),
    ],
)
def test_checklist_score_by_hand(
    metrics: StandIn,
    weights: dict[str, float],
    required: tuple[str, ...],
    score: float,
    effective: bool,
) -> None:
    ret, asset, pos = backtest(30, 0.003)
    cfg = ValidityConfig(**FAST, weights=weights, required=required)
    v = assess(ret, metrics, bar_returns=asset, position=pos, n_trials=1, config=cfg)
    assert v.score == pytest.approx(score)
    assert v.effective is effective


def test_pbo_enters_the_score_when_a_trials_matrix_is_given() -> None:
    ret, asset, pos = backtest(30, 0.003)
    noise = np.random.default_rng(1).normal(0.0, 0.01, (len(ret), 9))
    matrix = np.column_stack([ret.to_numpy(), noise])
    v = assess(
        ret,
        StandIn(),
        bar_returns=asset,
        position=pos,
        n_trials=10,
        trial_sharpe_variance=0.001,
        trials_matrix=matrix,
        config=ValidityConfig(**FAST),
    )
    pbo = v.criterion("pbo")
    assert pbo.passed is True and pbo.value < 0.05
    assert v.pbo is not None and v.details["pbo"] == pbo.value
    overfit = assess(
        ret,
        StandIn(),
        bar_returns=asset,
        position=pos,
        n_trials=10,
        trial_sharpe_variance=0.001,
        trials_matrix=noise,
        config=ValidityConfig(**FAST, max_pbo=0.0),
    )
    assert overfit.criterion("pbo").passed is False
    assert overfit.score == pytest.approx(7 / 8)


def test_a_strategy_that_never_trades_fails_without_crashing() -> None:
    _, asset, pos = backtest(32, 0.0)
    flat = pd.Series(0.0, index=asset.index)
    v = assess(
        flat,
        StandIn(sharpe=math.nan, max_drawdown=0.0, direction_accuracy=math.nan),
        bar_returns=asset,
        position=pos * 0.0,
        n_trials=1,
        config=ValidityConfig(**FAST),
    )
    for name in ("deflated_sharpe", "bootstrap_ci", "buy_and_hold", "random_baseline"):
        assert v.criterion(name).passed is False
    assert "no spread" in v.criterion("deflated_sharpe").note
    assert v.score == pytest.approx(1 / 7)  # only the drawdown target is met


def test_verdict_serialises_and_renders() -> None:
    ret, asset, pos = backtest(31, 0.0)
    v = assess(
        ret,
        StandIn(direction_accuracy=math.nan),
        bar_returns=asset,
        position=pos,
        n_trials=3,
        trial_sharpe_variance=0.002,
        config=ValidityConfig(**FAST),
    )
    data = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert data["criteria"][0]["value"] is None and data["criteria"][0]["passed"] is False
    assert data["criteria"][4]["passed"] is None
    assert data["details"]["n_trials"] == 3
    assert data["effective"] is False
    console = Console(record=True, width=160)
    console.print(v.to_rich())
    text = console.export_text()
    assert "NOT EFFECTIVE" in text and "Deflated Sharpe ratio" in text and "FAIL" in text
    assert len(v.reasons) == 8 and v.reasons[0].startswith("FAIL Direction accuracy")
    with pytest.raises(KeyError, match="no criterion 'dsr'"):
        v.criterion("dsr")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"weights": {"sharp": 1.0}}, "sharp"),
        ({"weights": {"pbo": -1.0}}, "pbo"),
        ({"weights": dict.fromkeys(CRITERIA, 0.0)}, "weights"),
        ({"pbo_splits": 15}, "pbo_splits"),
        ({"min_dsr": 1.5}, "min_dsr"),
        ({"max_drawdowm": 0.2}, "max_drawdowm"),
        ({"required": ("dsr",)}, "dsr"),
        ({"bootstrap_method": "magic"}, "bootstrap_method"),
    ],
)
def test_config_errors_name_the_key(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        ValidityConfig(**kwargs)


def test_config_defaults_are_the_project_targets() -> None:
    cfg = ValidityConfig.model_validate({"weights": {"pbo": 2.0}})
    assert (cfg.min_direction_accuracy, cfg.min_sharpe, cfg.max_drawdown) == (0.6, 1.5, 0.15)
    assert (cfg.min_dsr, cfg.max_pbo, cfg.baseline_alpha, cfg.effective_score) == (
        0.95,
        0.5,
        0.05,
        0.8,
    )
    assert cfg.weights == {**dict.fromkeys(CRITERIA, 1.0), "pbo": 2.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": StandIn(max_drawdown=-0.1)}, "positive fraction"),
        ({"metrics": StandIn(sharpe=None)}, "metrics.sharpe"),  # type: ignore[arg-type]
        ({"n_trials": 5}, "trial_sharpe_variance"),
        ({"periods_per_year": -1.0}, "periods_per_year"),
        ({"position": "short"}, "position: not numeric"),
    ],
)
def test_assess_rejects_bad_input(change: dict[str, Any], message: str) -> None:
    ret, asset, pos = backtest(33, 0.0, n=200)
    kwargs: dict[str, Any] = {
        "metrics": StandIn(),
        "bar_returns": asset,
        "position": pos,
        "n_trials": 1,
        "config": ValidityConfig(**FAST),
    }
    with pytest.raises(ValidityError, match=message):
        assess(ret, **{**kwargs, **change})


def test_assess_rejects_returns_off_the_bar_index() -> None:
    ret, asset, pos = backtest(34, 0.0, n=200)
    with pytest.raises(ValidityError, match="returns and bar_returns are not on the same index"):
        assess(ret.iloc[1:], StandIn(), bar_returns=asset, position=pos, n_trials=1)
