"""The compiled scans behind the metrics against plain NumPy / Python references.

The scans work on returns and wealth computed 128 bars at a time, sum in NumPy's pairwise
order and skip the division at bars that cannot deepen a drawdown; each of these is checked
here against the straightforward computation, exactly (bit for bit), at and around the
chunk boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.backtest import _metrics_core as core
from mlengine.backtest.metrics import MetricsError, compute_metrics


def _ro(values: np.ndarray) -> np.ndarray:
    """Read-only, as the metrics pass them: the scans' compiled variants are reused."""
    view = np.asarray(values, dtype=np.float64).view()
    view.flags.writeable = False
    return view


EMPTY = _ro(np.empty(0))
# lengths around the chunk (128) and check (512) boundaries, and NumPy's pairwise leaves
LENGTHS = [1, 2, 7, 8, 9, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 4099]


@dataclass(frozen=True)
class Result:
    """The attributes of a backtest result that compute_metrics reads."""

    equity: pd.Series
    exposure: pd.DataFrame
    signal: pd.DataFrame
    close: pd.DataFrame
    trades: pd.DataFrame
    periods_per_year: float


def _equity(n: int, seed: int, ruin: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    eq = 100 * np.cumprod(1 + rng.normal(0, 0.01, n))
    if ruin is not None:
        eq[ruin] = -5.0 if ruin % 2 else 0.0
        eq[ruin + 1 :] = rng.normal(0, 1, n - ruin - 1)  # whatever follows ruin is ignored
    return _ro(eq)


def _segments(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random segments tiling ``n`` bars (some of one bar)."""
    rng = np.random.default_rng(seed)
    cuts = np.unique(rng.integers(1, n, size=min(n - 1, 6))) if n > 1 else np.array([], int)
    starts = np.r_[0, cuts].astype(np.int64)
    return starts, np.diff(np.r_[starts, n]).astype(np.int64)


def _reference_returns(eq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns and wealth of an equity curve the plain NumPy way (ruin: -1, then 0)."""
    r = np.zeros(eq.size)
    with np.errstate(divide="ignore", invalid="ignore"):  # after ruin; overwritten below
        r[1:] = eq[1:] / eq[:-1] - 1.0
    wealth = eq / eq[0]
    if eq.min() <= 0:
        ruin = int(np.flatnonzero(eq <= 0)[0])
        r[ruin], r[ruin + 1 :], wealth[ruin:] = -1.0, 0.0, 0.0
    return r, wealth


def _reference_scan(ext: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple:
    """The drawdown scan dividing at every bar (the definition in the metrics docstring)."""
    near, tol = 1.0 - core.PEAK_RTOL, core.PEAK_RTOL
    peak_value, peak, depth, best_peak, best_value, trough = ext[0], 0, 0.0, 0, ext[0], 0
    for k in range(1, ext.size):
        v = ext[k]
        if v >= peak_value * near:
            peak, peak_value = k, max(v, peak_value)
        elif 1.0 - v / peak_value > depth + tol:
            depth, best_peak, best_value, trough = 1.0 - v / peak_value, peak, peak_value, k
    recovery = next(
        (k for k in range(trough + 1, ext.size) if depth > 0 and ext[k] >= best_value * near), -1
    )
    seg_depth = []
    for s, c in zip(starts, counts, strict=True):
        top, worst = ext[s], 0.0
        for v in ext[s + 1 : s + c + 1]:
            if v > top:
                top = v
            elif top > 0 and 1.0 - v / top > worst:
                worst = 1.0 - v / top
        seg_depth.append(worst)
    return depth, best_peak, trough, recovery, np.array(seg_depth)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("ruin_at", [None, 0.0, 0.5, 1.0])
def test_equity_source_gives_numpy_returns_and_wealth(n: int, ruin_at: float | None) -> None:
    ruin = None if ruin_at is None or n < 3 else max(1, min(n - 2, int(ruin_at * n)))
    eq = _equity(n, n, ruin)
    bad, found = core.equity_check(eq)
    r_ref, wealth_ref = _reference_returns(eq)
    assert bad == -1 and found == (n if ruin is None else ruin)
    r = np.empty(n)
    for lo in range(0, n, 128):  # in chunks, as the scans do
        core.fill_returns(eq, EMPTY, found, lo, min(128, n - lo), r[lo:])
    np.testing.assert_array_equal(r, r_ref)
    points = core.wealth_points(eq, eq[0], found, np.arange(n + 1, dtype=np.int64))
    np.testing.assert_array_equal(points, np.r_[1.0, wealth_ref])


@pytest.mark.parametrize("n", LENGTHS)
def test_sums_equal_numpy_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    r = rng.standard_t(3, n) * rng.choice([1e-4, 1e-2, 1.0], n)
    starts, counts = _segments(n, n)
    for rf in (0.0, 1e-4):
        total, squares, downside, seg_sum, seg_squares = core.moments(
            _ro(np.cumprod(1 + r)), _ro(r), n, rf, starts, counts
        )
        x = r - rf
        assert total == np.sum(x) and total / n == np.mean(x)
        if n > 1:
            assert math.sqrt(squares / (n - 1)) == np.std(x, ddof=1)
        below = np.minimum(x, 0.0)
        assert downside == pytest.approx(np.dot(below, below), rel=1e-14, abs=0)
        np.testing.assert_array_equal(seg_sum, np.add.reduceat(r, starts))
        dev = r - np.repeat(seg_sum / counts, counts)
        np.testing.assert_array_equal(seg_squares, np.add.reduceat(dev * dev, starts))


@pytest.mark.parametrize("n", LENGTHS)
def test_equity_sums_equal_sums_of_the_returns(n: int) -> None:
    eq = _equity(n, n + 1, ruin=n // 2 if n > 3 else None)
    bad, ruin = core.equity_check(eq)
    assert bad == -1
    r = _reference_returns(eq)[0]
    starts, counts = _segments(n, n + 1)
    from_equity = core.moments(eq, EMPTY, ruin, 0.0, starts, counts)
    from_returns = core.moments(_ro(np.cumprod(1 + r)), _ro(r), n, 0.0, starts, counts)
    for a, b in zip(from_equity, from_returns, strict=True):
        np.testing.assert_array_equal(a, b)


# returns on a coarse grid: many ties, equal peaks and troughs equally deep
grid_returns = st.lists(st.sampled_from([-0.5, -0.1, -0.01, 0.0, 0.01, 0.1, 0.25]), min_size=1,
                        max_size=700)  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(grid_returns, st.integers(0, 2**16))
def test_wealth_scan_equals_dividing_at_every_bar(r: list[float], seed: int) -> None:
    returns = np.asarray(r)
    n = returns.size
    wealth = np.cumprod(1 + returns)
    starts, counts = _segments(n, seed)
    depth, peak, trough, recovery, seg_depth, const, seg_const = core.wealth_scan(
        _ro(wealth), _ro(returns), 1.0, n, starts, counts
    )
    expected = _reference_scan(np.r_[1.0, wealth], starts, counts)
    assert (depth, peak, trough, recovery) == expected[:4]
    np.testing.assert_array_equal(seg_depth, expected[4])
    assert const == (returns.max() == returns.min())
    maxima, minima = np.maximum.reduceat(returns, starts), np.minimum.reduceat(returns, starts)
    np.testing.assert_array_equal(seg_const, maxima == minima)


@pytest.mark.parametrize("at", [0, 5, 511, 512, 513, 1300])
def test_checks_find_the_first_bad_bar(at: int) -> None:
    n = 1500
    eq = _equity(n, 3).copy()
    eq[at], eq[at + 100] = np.nan, np.inf
    assert core.equity_check(_ro(eq)) == (at, n)
    ns = np.arange(n, dtype=np.int64) * 10
    ns[at + 1] = ns[at]
    ns.flags.writeable = False
    assert core.first_unsorted(ns) == at + 1
    x = np.zeros((3, n))
    x[2, at] = np.inf
    x[0, at + 7] = np.nan
    assert core.exposure_scan(_ro(x))[2] == at
    assert core.exposure_scan(_ro(x[2:]))[2] == at
    assert core.direction_scan(_ro(x), _ro(np.ones((3, n))))[2] == at + 7


@pytest.mark.parametrize("m", [1, 3])
def test_exposure_and_direction_counts_match_plain_loops(m: int) -> None:
    rng = np.random.default_rng(m)
    n = 700
    x = np.round(rng.normal(0, 0.5, (m, n)), 1) * (rng.uniform(size=(m, n)) > 0.3)
    close = 100 + np.cumsum(np.round(rng.normal(size=(m, n)), 1), axis=1)
    close[0, 50] = np.nan
    held, traded, bad = core.exposure_scan(_ro(x))
    expected_traded = 0.0
    for t in range(n):  # bar by bar, symbols within a bar, as documented
        for j in range(m):
            expected_traded += abs(x[j, t] - (x[j, t - 1] if t else 0.0))
    assert held == int((x != 0).any(axis=0).sum()) and traded == expected_traded and bad == -1
    hits, known, bad = core.direction_scan(_ro(x), _ro(close))
    move = np.diff(close, axis=1)
    counted = (x[:, :-1] != 0) & np.isfinite(move)
    assert known == int(counted.sum()) and bad == -1
    assert hits == int((counted & (np.sign(x[:, :-1]) == np.sign(move))).sum())


def test_multi_symbol_exposure_through_compute_metrics() -> None:
    """Frames with several columns reach the scans as symbols × bars views."""
    idx = pd.date_range("2021-01-01", periods=300, freq="1D", tz="UTC")
    rng = np.random.default_rng(7)
    expo = pd.DataFrame(rng.choice([-0.5, 0.0, 0.5], (300, 2)), index=idx, columns=["A", "B"])
    close = pd.DataFrame(100 + rng.normal(size=(300, 3)).cumsum(0), index=idx,
                         columns=["B", "C", "A"])  # fmt: skip
    result = Result(
        equity=pd.Series(100 * np.cumprod(1 + rng.normal(0, 0.01, 300)), index=idx),
        exposure=expo,
        signal=expo,
        close=close,
        trades=pd.DataFrame({"pnl": [1.0], "return": [0.01]}),
        periods_per_year=365.0,
    )
    m = compute_metrics(result)
    x = expo.to_numpy()
    assert m.exposure == float((x != 0).any(axis=1).mean())
    assert m.turnover == pytest.approx(np.abs(np.diff(x, axis=0, prepend=0)).sum() / (300 / 365))
    sig, move = x[:-1], np.diff(close[["A", "B"]].to_numpy(), axis=0)
    counted = sig != 0
    assert m.n_direction_bars == int(counted.sum())
    assert m.direction_accuracy == pytest.approx(
        (counted & (np.sign(sig) == np.sign(move))).sum() / counted.sum()
    )
    with pytest.raises(MetricsError, match="close prices missing for signal symbol"):
        compute_metrics(replace(result, close=close.drop(columns="A")))
