"""Position sizing rules: values by hand, no look-ahead (truncation), engine integration."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.backtest import (
    BacktestInputError,
    CostModel,
    FixedFraction,
    Kelly,
    VolatilityTarget,
    run_backtest,
)
from mlengine.backtest.sizing import (
    Sizing,
    bar_volatility,
    bars_periods_per_year,
    fixed_fraction,
    kelly,
    resolve_sizing,
    volatility_target,
)
from tests.backtest.test_engine import CAPITAL, intents, make_bars, random_bars, targets


def brownian_bars(seed: int, n: int, sigma: float, steps: int = 200) -> pd.DataFrame:
    """Bars aggregated from a fine random walk, so high and low see the path within a bar."""
    rng = np.random.default_rng(seed)
    path = 100 * np.exp(np.cumsum(rng.normal(0, sigma / math.sqrt(steps), n * steps)))
    path = path.reshape(n, steps)
    open_ = np.r_[100.0, path[:-1, -1]]
    high = np.maximum(path.max(axis=1), open_)
    low = np.minimum(path.min(axis=1), open_)
    return make_bars(open_, high, low, path[:, -1])


def test_fixed_fraction():
    d = pd.Series([1.0, -1.0, 0.0, 0.5])
    assert fixed_fraction(d, 0.4).tolist() == [0.4, -0.4, 0.0, 0.2]


@pytest.mark.parametrize("method", ["atr", "realised"])
def test_volatility_estimates_the_per_bar_sigma(method):
    bars = brownian_bars(0, 4000, sigma=0.01)
    vol = bar_volatility(bars, method=method, window=50)
    assert vol.iloc[:49].isna().all()
    assert vol.iloc[60:].median() == pytest.approx(0.01, rel=0.1)


def test_true_range_mean_matches_pandas():
    bars = random_bars(4, 5000, vol=0.02)
    h, lo, c = bars["high"], bars["low"], bars["close"]
    prev = c.shift(1)
    tr = pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1)
    expected = tr.rolling(14).mean() / c / math.sqrt(8 / math.pi)
    np.testing.assert_allclose(bar_volatility(bars, window=14), expected, rtol=1e-12)


def test_volatility_target_scales_caps_and_annualises():
    bars = brownian_bars(1, 500, sigma=0.01)
    d = pd.Series(1.0, index=bars.index)
    pos = volatility_target(bars, d, target=0.2, window=20, cap=1.0)
    assert (pos.iloc[:19] == 0).all()  # warm-up
    ann = bar_volatility(bars, window=20) * math.sqrt(8760)
    np.testing.assert_allclose(pos.iloc[19:], np.minimum(1.0, 0.2 / ann.iloc[19:]))
    assert pos.max() < 1  # 0.2 / (1% * sqrt(8760)) ~ 0.21
    big = volatility_target(bars, -d, target=5.0, window=20, cap=0.5)
    assert (big.iloc[19:] == -0.5).all()
    fx = volatility_target(bars, d, target=0.2, window=20, market="fx")
    np.testing.assert_allclose(fx.iloc[19:] / pos.iloc[19:], math.sqrt(8760 / 6240))


def test_kelly_values():
    p = pd.Series([0.6, 0.4, 0.5, 0.55, 0.99])
    assert kelly(p).tolist() == pytest.approx([0.1, -0.1, 0.0, 0.05, 0.49])
    assert kelly(p, payoff=0.5).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.49 - 0.01 / 2])
    assert kelly(p, fraction=1.0, cap=0.25).tolist() == pytest.approx([0.2, -0.2, 0, 0.1, 0.25])
    against = kelly(p, direction=pd.Series([-1.0, 1.0, 1.0, -1.0, 1.0]))
    assert against.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.49])
    b = np.array([2.0, 2.0, 2.0, 2.0, 2.0])
    assert kelly(p, payoff=b).iloc[0] == pytest.approx(0.5 * (0.6 - 0.4 / 2))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), k=st.integers(2, 299))
def test_every_rule_passes_the_truncation_test(seed, k):
    bars = random_bars(seed, 300)
    rng = np.random.default_rng(seed)
    sig = pd.DataFrame(
        {"position": rng.choice([-1.0, 0.0, 1.0], 300), "p_up": rng.uniform(0, 1, 300)},
        index=bars.index,
    )
    d = sig["position"].to_numpy()
    rules: list[Sizing] = [FixedFraction(0.3), VolatilityTarget(method="atr"), Kelly()]
    rules.append(VolatilityTarget(method="realised", window=5))
    for rule in rules:
        full = rule.magnitude(bars, sig, d, 8760.0)
        part = rule.magnitude(bars.iloc[:k], sig.iloc[:k], d[:k], 8760.0)
        np.testing.assert_array_equal(part, full[:k])


def test_engine_applies_a_named_rule():
    bars = brownian_bars(2, 300, sigma=0.01)
    sig = targets(bars, np.ones(300))
    r = run_backtest(bars, sig, sizing="volatility", costs=CostModel())
    expected = volatility_target(bars, sig["position"], target=0.15)
    np.testing.assert_allclose(r.signal["TEST"], expected)
    assert r.trades["entry_time"].iloc[0] == bars.index[20]  # first bar after the warm-up
    assert r.config.to_dict()["sizing"]["rule"] == "VolatilityTarget"


def test_kelly_in_target_and_intent_modes():
    bars = make_bars(np.full(6, 100.0))
    p = np.array([0.6, 0.6, 0.3, 0.5, 0.5, 0.5])
    sig = targets(bars, [1, 1, -1, 0, 0, 0]).assign(p_up=p)
    r = run_backtest(bars, sig, sizing=Kelly(), costs=CostModel())
    assert r.signal["TEST"].tolist() == pytest.approx([0.1, 0.1, -0.2, 0, 0, 0])
    ints = intents(bars, {0: {"side": 1, "size": 0.5}, 3: {"side": -1}}).assign(p_up=p)
    r = run_backtest(bars, ints, sizing=Kelly(fraction=1.0), costs=CostModel())
    held = r.position["TEST"].iloc[1] * 100 / CAPITAL
    assert held == pytest.approx(0.5 * 0.2)  # size times the Kelly fraction
    assert len(r.trades) == 1  # p_up = 0.5 gives the short no edge: it only exits


def test_kelly_payoff_from_levels():
    bars = make_bars(np.full(5, 100.0))
    ints = intents(bars, {0: {"side": 1, "stop_loss": 98, "take_profit": 104}})
    ints["p_up"] = 0.5
    r = run_backtest(bars, ints, sizing=Kelly(payoff="levels", fraction=1.0), costs=CostModel())
    held = r.position["TEST"].iloc[1] * 100 / CAPITAL
    assert held == pytest.approx(0.5 - 0.5 / 2)  # b = 4 / 2


GARCH: Any = "garch"  # deliberately outside the declared types
HALF: Any = 0.5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FixedFraction(0.0), r"fraction must be in \(0, 1\]"),
        (lambda: FixedFraction(1.5), r"fraction must be in \(0, 1\]"),
        (lambda: VolatilityTarget(target=0), "target must be > 0"),
        (lambda: VolatilityTarget(window=1), "window must be an int >= 2"),
        (lambda: VolatilityTarget(method=GARCH), "unknown volatility method"),
        (lambda: VolatilityTarget(cap=0), r"cap must be in \(0, 1\]"),
        (lambda: Kelly(payoff=-1.0), "payoff must be > 0 or 'levels'"),
        (lambda: Kelly(fraction=2.0), r"fraction must be in \(0, 1\]"),
        (lambda: resolve_sizing("martingale"), "unknown sizing 'martingale'"),
        (lambda: resolve_sizing(HALF), "unknown sizing 0.5"),
        (lambda: kelly(pd.Series([0.5, 1.2])), r"p_up not in \[0, 1\] at bar 1"),
        (lambda: fixed_fraction(pd.Series([1.0, np.nan])), "direction is NaN at bar 1"),
    ],
)
def test_bad_sizing(make, message):
    with pytest.raises(BacktestInputError, match=message):
        make()


def test_bad_probabilities_in_the_engine():
    bars = make_bars(np.full(5, 100.0))
    sig = targets(bars, [1, 1, 0, 0, 0]).assign(p_up=[0.6, np.nan, np.nan, 0.5, 0.5])
    with pytest.raises(BacktestInputError, match=r"p_up not in \[0, 1\] at bar 1"):
        run_backtest(bars, sig, sizing=Kelly())
    ints = intents(bars, {1: {"side": 1, "stop_loss": 95}}).assign(p_up=0.6)
    with pytest.raises(BacktestInputError, match="needs both levels at bar 1"):
        run_backtest(bars, ints, sizing=Kelly(payoff="levels"))


def test_periods_per_year_from_attrs_or_inferred():
    bars = random_bars(3, 500)
    assert bars_periods_per_year(bars) == 8760
    bare = bars.copy()
    bare.attrs = {}
    assert bars_periods_per_year(bare) == 8760  # 24/7 hourly bars look like crypto
    with pytest.raises(BacktestInputError, match="fewer than 2 bars"):
        bars_periods_per_year(bare.iloc[:1])
