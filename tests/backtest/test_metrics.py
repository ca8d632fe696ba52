from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.backtest.metrics import (
    Metrics,
    MetricsError,
    compute_metrics,
    drawdown,
    metrics_from_returns,
    returns_from_equity,
)
from mlengine.data.calendar import periods_per_year

REL = 1e-9  # relative tolerance against the oracles (float64 summation order only)

TRADE_COLUMNS = ["symbol", "side", "entry_time", "exit_time", "entry_price", "exit_price", "size",
                 "fees", "slippage", "pnl", "return", "bars_held", "exit_reason"]  # fmt: skip


@dataclass(frozen=True)
class StandIn:
    """The attributes of a backtest result that compute_metrics reads."""

    equity: pd.Series
    periods_per_year: float
    exposure: pd.DataFrame = field(default_factory=pd.DataFrame)
    signal: pd.DataFrame = field(default_factory=pd.DataFrame)
    close: pd.DataFrame = field(default_factory=pd.DataFrame)
    trades: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRADE_COLUMNS))


def _index(n: int, freq: str = "1h", start: str = "2020-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=freq, tz="UTC", name="ts")


def _stand_in(equity, *, signal=None, close=None, exposure=None, trades=None, ppy=8760.0):
    idx = _index(len(equity))
    eq = pd.Series(np.asarray(equity, dtype=float), index=idx, name="equity")
    frame = lambda v: pd.DataFrame({"X": np.asarray(v, dtype=float)}, index=idx)  # noqa: E731
    return StandIn(
        equity=eq,
        periods_per_year=ppy,
        exposure=frame(np.zeros(len(idx)) if exposure is None else exposure),
        signal=frame(np.zeros(len(idx)) if signal is None else signal),
        close=frame(np.ones(len(idx)) if close is None else close),
        trades=pd.DataFrame(columns=TRADE_COLUMNS) if trades is None else trades,
    )


def _trades(pnl, ret=None) -> pd.DataFrame:
    pnl = np.asarray(pnl, dtype=float)
    return pd.DataFrame({"pnl": pnl, "return": pnl / 100 if ret is None else ret})


# --- real and synthetic return series for the oracles ---------------------------------------


def _real(name: str, daily: bool) -> tuple[pd.Series, float]:
    bars = datasets.load(name)
    info = datasets.info(name)
    close = bars["close"]
    if daily:
        close = close.resample("1D").last().dropna()
    ppy = periods_per_year(info.market, "1d" if daily else info.timeframe)
    return close.pct_change().dropna(), ppy


def _synthetic(seed: int, n: int = 2500) -> tuple[pd.Series, float]:
    rng = np.random.default_rng(seed)
    r = 0.0004 + 0.012 * rng.standard_t(4, n) / math.sqrt(2)
    return pd.Series(r, index=_index(n, "1D", "2015-03-07")), 365.0


SERIES = {
    "eurusd_1h": lambda: _real("eurusd_1h", daily=False),
    "eurusd_daily": lambda: _real("eurusd_1h", daily=True),
    "btcusd_1h": lambda: _real("btcusd_1h_coinbase", daily=False),
    "btcusd_daily": lambda: _real("btcusd_1h_coinbase", daily=True),
    "synthetic_1": lambda: _synthetic(1),
    "synthetic_2": lambda: _synthetic(2),
}


@pytest.fixture(scope="module", params=sorted(SERIES))
def series(request) -> tuple[pd.Series, float, Metrics]:
    r, ppy = SERIES[request.param]()
    return r, ppy, metrics_from_returns(r, periods_per_year=ppy)


@pytest.fixture(autouse=True)
def _quiet_oracles():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the oracles' own deprecation chatter
        yield


def test_annualisation_follows_the_market_calendar() -> None:
    assert _real("eurusd_1h", daily=False)[1] == 6240.0  # 24/5 FX
    assert _real("btcusd_1h_coinbase", daily=False)[1] == 8760.0  # 24/7 crypto
    assert _real("btcusd_1h_coinbase", daily=True)[1] == 365.0


def test_ratios_match_quantstats_and_empyrical(series) -> None:
    r, ppy, m = series
    assert m.n_bars == len(r) and m.periods_per_year == ppy
    for ours, qs_value, ep_value in [
        (m.sharpe, qs.stats.sharpe(r, periods=ppy), ep.sharpe_ratio(r, annualization=ppy)),
        (m.sortino, qs.stats.sortino(r, periods=ppy), ep.sortino_ratio(r, annualization=ppy)),
        (
            m.annual_volatility,
            qs.stats.volatility(r, periods=ppy),
            ep.annual_volatility(r, annualization=ppy),
        ),
        (m.annual_return, qs.stats.cagr(r, periods=ppy), ep.annual_return(r, annualization=ppy)),
        (m.calmar, qs.stats.calmar(r, periods=ppy), ep.calmar_ratio(r, annualization=ppy)),
    ]:
        assert ours == pytest.approx(qs_value, rel=REL)
        assert ours == pytest.approx(ep_value, rel=REL)


def test_drawdown_and_total_match_the_oracles(series) -> None:
    r, _, m = series
    assert m.max_drawdown == pytest.approx(-qs.stats.max_drawdown(r), rel=REL)
    assert m.max_drawdown == pytest.approx(-ep.max_drawdown(r), rel=REL)
    assert m.total_return == pytest.approx(ep.cum_returns_final(r), rel=REL)
    dd = drawdown(r)
    assert dd.to_numpy() == pytest.approx(-qs.stats.to_drawdown_series(r).to_numpy(), abs=1e-12)
    assert dd.max() == pytest.approx(m.max_drawdown, rel=REL)


def test_risk_free_rate_matches_empyrical(series) -> None:
    r, ppy, _ = series
    rf = 0.03 / ppy
    m = metrics_from_returns(r, periods_per_year=ppy, risk_free=rf)
    assert m.sharpe == pytest.approx(ep.sharpe_ratio(r, risk_free=rf, annualization=ppy), rel=REL)
    sortino = ep.sortino_ratio(r, required_return=rf, annualization=ppy)
    assert m.sortino == pytest.approx(sortino, rel=REL)
    assert m.annual_return == metrics_from_returns(r, periods_per_year=ppy).annual_return


def test_yearly_and_monthly_match_the_oracles(series) -> None:
    r, ppy, m = series
    yearly = ep.aggregate_returns(r, "yearly")
    assert list(m.yearly.index) == list(yearly.index)
    np.testing.assert_allclose(m.yearly["return"], yearly.to_numpy(), rtol=1e-9, atol=1e-12)
    for year, row in m.yearly.iterrows():
        part = r[r.index.year == year]
        assert row["n_bars"] == len(part)
        assert row["sharpe"] == pytest.approx(ep.sharpe_ratio(part, annualization=ppy), rel=REL)
        vol = ep.annual_volatility(part, annualization=ppy)
        assert row["volatility"] == pytest.approx(vol, rel=REL)
        assert row["max_drawdown"] == pytest.approx(-ep.max_drawdown(part), rel=REL)
    table = qs.stats.monthly_returns(r, eoy=False)
    table.index = table.index.astype(int)
    ours = m.monthly.to_numpy()
    theirs = table.loc[m.monthly.index].to_numpy(dtype=float)
    have = ~np.isnan(ours)
    np.testing.assert_allclose(ours[have], theirs[have], rtol=1e-9, atol=1e-12)
    monthly = ep.aggregate_returns(r, "monthly")
    assert have.sum() == len(monthly)


def test_drawdown_duration_matches_quantstats_episode() -> None:
    r, ppy = _real("btcusd_1h_coinbase", daily=True)
    m = metrics_from_returns(r, periods_per_year=ppy)
    details = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r))
    worst = details.loc[details["max drawdown"].idxmin()]
    assert -worst["max drawdown"] / 100 == pytest.approx(m.max_drawdown, rel=1e-9)
    dates = pd.DatetimeIndex(r.index).strftime("%Y-%m-%d")
    first_in_dd = int(np.flatnonzero(dates == worst["start"])[0])
    last_in_dd = int(np.flatnonzero(dates == worst["end"])[0])
    peak = first_in_dd - 1  # quantstats names the first bar under water, we the peak before it
    end = last_in_dd if last_in_dd == len(r) - 1 else last_in_dd + 1  # we name the recovery
    assert m.max_drawdown_bars == end - peak
    assert m.max_drawdown_duration == r.index[end] - r.index[peak]


# --- compute_metrics on a result stand-in ---------------------------------------------------


def test_compute_metrics_equals_metrics_from_returns_on_real_equity() -> None:
    bars = datasets.load("eurusd_1h")
    ppy = periods_per_year("fx", "1h")
    equity = 10_000 * bars["close"] / bars["close"].iloc[0]
    result = StandIn(equity=equity.rename("equity"), periods_per_year=ppy,
                     exposure=pd.DataFrame({"EURUSD": 1.0}, index=bars.index),
                     signal=pd.DataFrame({"EURUSD": 1.0}, index=bars.index),
                     close=bars[["close"]].rename(columns={"close": "EURUSD"}))  # fmt: skip
    m = compute_metrics(result)
    returns = returns_from_equity(result.equity)
    assert returns.iloc[0] == 0.0
    pd.testing.assert_series_equal(returns.iloc[1:], bars["close"].pct_change().iloc[1:],
                                   check_names=False, rtol=1e-12)  # fmt: skip
    ref = metrics_from_returns(returns, periods_per_year=ppy)
    for name in ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino",
                 "max_drawdown", "max_drawdown_bars", "max_drawdown_duration"):  # fmt: skip
        assert getattr(m, name) == pytest.approx(getattr(ref, name), rel=1e-12)
    assert m.sharpe == pytest.approx(qs.stats.sharpe(returns, periods=int(ppy)), rel=REL)
    assert m.total_return == pytest.approx(bars["close"].iloc[-1] / bars["close"].iloc[0] - 1)
    assert m.exposure == 1.0 and m.turnover == pytest.approx(ppy / len(bars))
    up = (bars["close"].diff().shift(-1) > 0).iloc[:-1]
    assert m.direction_accuracy == pytest.approx(up.mean()) and m.n_direction_bars == len(bars) - 1
    assert m.start == bars.index[0] and m.end == bars.index[-1]


def test_drawdown_duration_hand_case() -> None:
    # peak 110 at bar 1, trough 88 at bar 3, back to 110 at bar 5
    m = compute_metrics(_stand_in([100, 110, 99, 88, 105, 110, 120, 118]))
    assert m.max_drawdown == pytest.approx(0.2)
    assert m.max_drawdown_bars == 4 and m.max_drawdown_duration == pd.Timedelta(hours=4)
    # flat at the peak: the drawdown starts from the last bar at the peak; never recovered
    m = compute_metrics(_stand_in([100, 120, 120, 120, 90, 100, 110]))
    assert m.max_drawdown == pytest.approx(0.25)
    assert m.max_drawdown_bars == 3 and m.max_drawdown_duration == pd.Timedelta(hours=3)


def test_loss_on_the_first_bar_is_a_drawdown() -> None:
    r = pd.Series([-0.1, 0.05, 0.06], index=_index(3, "1D"))
    m = metrics_from_returns(r, periods_per_year=365)
    assert m.max_drawdown == pytest.approx(0.1)
    assert m.max_drawdown_bars == 3  # from the start before bar 0 to recovery at bar 2
    assert m.max_drawdown_duration == pd.Timedelta(days=3)


def test_trade_metrics_hand_case() -> None:
    trades = _trades([30.0, -10.0, 0.0, 20.0, -20.0], ret=[0.03, -0.01, 0.0, 0.02, -0.02])
    m = compute_metrics(_stand_in([100, 101, 102], trades=trades))
    assert m.n_trades == 5
    assert m.win_rate == pytest.approx(2 / 5)
    assert m.profit_factor == pytest.approx(50 / 30)
    assert m.expectancy == pytest.approx(4.0)
    assert m.expectancy_return == pytest.approx(0.004)


def test_profit_factor_without_losses_or_trades() -> None:
    m = compute_metrics(_stand_in([100, 101], trades=_trades([5.0, 0.0])))
    assert m.profit_factor == math.inf and m.win_rate == 0.5
    assert m.to_dict()["profit_factor"] == "inf"
    m = compute_metrics(_stand_in([100, 101], trades=_trades([0.0])))
    assert math.isnan(m.profit_factor)
    m = compute_metrics(_stand_in([100, 101, 102]))
    assert m.n_trades == 0
    assert all(math.isnan(v) for v in (m.win_rate, m.profit_factor, m.expectancy))
    assert m.to_dict()["win_rate"] is None


def test_direction_accuracy_hand_case() -> None:
    close = [10, 11, 10, 10, 12, 11]
    signal = [1, -1, 1, 0, 1, -1]  # up ✓, down ✓, unchanged ✗, flat (skipped), down ✗, (last)
    m = compute_metrics(_stand_in([100] * 6, signal=signal, close=close))
    assert m.n_direction_bars == 4
    assert m.direction_accuracy == pytest.approx(2 / 4)
    m = compute_metrics(_stand_in([100] * 3, signal=[0, 0, 1], close=[1, 2, 3]))
    assert m.n_direction_bars == 0 and math.isnan(m.direction_accuracy)
    # an unknown next close (NaN) is not counted
    m = compute_metrics(_stand_in([100] * 4, signal=[1, 1, 1, 1], close=[1, 2, np.nan, 4]))
    assert m.n_direction_bars == 1 and m.direction_accuracy == 1.0


def test_direction_accuracy_pools_symbols() -> None:
    idx = _index(3)
    result = StandIn(
        equity=pd.Series(100.0, index=idx),
        periods_per_year=8760.0,
        exposure=pd.DataFrame({"A": 0.0, "B": 0.0}, index=idx),
        signal=pd.DataFrame({"A": [1.0, 1.0, 0.0], "B": [-1.0, 0.0, 0.0]}, index=idx),
        close=pd.DataFrame({"B": [5.0, 4.0, 3.0], "A": [1.0, 2.0, 1.0], "C": 1.0}, index=idx),
    )
    m = compute_metrics(result)
    assert (m.n_direction_bars, m.direction_accuracy) == (3, pytest.approx(2 / 3))


def test_exposure_and_turnover_hand_case() -> None:
    exposure = [0.0, 0.5, 0.5, -1.0, 0.0, 0.0, 0.0, 0.0]  # |Δ| sums to 0.5 + 1.5 + 1.0 = 3
    m = compute_metrics(_stand_in([100] * 8, exposure=exposure, ppy=8.0 * 2))
    assert m.exposure == pytest.approx(3 / 8)
    assert m.turnover == pytest.approx(3.0 / 0.5)  # 8 bars at 16 a year: half a year


# --- edge cases -----------------------------------------------------------------------------


def test_zero_variance_returns_give_nan_ratios_not_inf() -> None:
    m = compute_metrics(_stand_in([100.0] * 50))
    assert math.isnan(m.sharpe) and math.isnan(m.sortino) and math.isnan(m.calmar)
    assert m.annual_volatility == 0.0 and m.max_drawdown == 0.0 and m.total_return == 0.0
    r = pd.Series(0.001, index=_index(50))
    m = metrics_from_returns(r, periods_per_year=8760)
    assert math.isnan(m.sharpe) and math.isnan(m.sortino) and m.annual_volatility == 0.0
    assert m.total_return == pytest.approx(1.001**50 - 1)
    m = metrics_from_returns(-r, periods_per_year=8760)  # constant losses: downside is known
    assert math.isnan(m.sharpe) and m.sortino == pytest.approx(-math.sqrt(8760))


@pytest.mark.parametrize("last", [0.0, -50.0])
def test_equity_that_hits_zero_is_ruin(last: float) -> None:
    m = compute_metrics(_stand_in([100, 120, 60, last, 30, 40]))
    assert m.max_drawdown == 1.0 and m.total_return == -1.0 and m.annual_return == -1.0
    assert m.max_drawdown_bars == 4  # from the peak at bar 1 to the end, never recovered
    assert m.calmar == -1.0
    r = returns_from_equity(_stand_in([100, 120, 60, last, 30, 40]).equity)
    assert list(r) == pytest.approx([0, 0.2, -0.5, -1.0, 0.0, 0.0])
    assert m.yearly["return"].iloc[0] == -1.0 and m.monthly.iloc[0, 0] == -1.0


def test_returns_below_minus_one_are_ruin() -> None:
    r = pd.Series([0.1, -1.5, 0.3], index=_index(3))
    m = metrics_from_returns(r, periods_per_year=8760)
    assert m.max_drawdown == 1.0 and m.total_return == -1.0 and m.annual_return == -1.0
    assert drawdown(r).tolist() == [0.0, 1.0, 1.0]


def test_single_bar() -> None:
    m = compute_metrics(_stand_in([100.0]))
    assert m.n_bars == 1 and m.total_return == 0.0 and m.annual_return == 0.0
    assert math.isnan(m.sharpe) and math.isnan(m.annual_volatility) and math.isnan(m.sortino)
    assert m.max_drawdown == 0.0 and m.max_drawdown_bars == 0
    assert m.max_drawdown_duration == pd.Timedelta(0)
    assert m.n_direction_bars == 0 and m.start == m.end
    assert len(m.yearly) == 1 and m.monthly.notna().sum().sum() == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_equity_is_an_error_naming_the_bar(bad: float) -> None:
    with pytest.raises(MetricsError, match=r"equity is not finite at bar 2 \(2020-01-01 02:00"):
        compute_metrics(_stand_in([100, 101, bad, 102]))


def test_bad_inputs_are_errors() -> None:
    idx = _index(4)
    good = _stand_in([100, 101, 102, 103])
    cases = [
        (lambda: compute_metrics(_stand_in([])), "empty"),
        (lambda: compute_metrics(_stand_in([0, 1])), "start positive"),
        (lambda: metrics_from_returns(pd.Series([0.1, np.nan]), periods_per_year=1), "Datetime"),
        (lambda: metrics_from_returns(pd.Series([0.1, np.nan], index=idx[:2]),
                                      periods_per_year=1), "returns is not finite at bar 1"),
        (lambda: metrics_from_returns(pd.Series([0.1, 0.2], index=idx[[1, 0]]),
                                      periods_per_year=1), "not strictly increasing at bar 1"),
        (lambda: metrics_from_returns(pd.Series([0.1], index=idx[:1]), periods_per_year=0),
         "periods_per_year"),
        (lambda: metrics_from_returns(pd.Series([0.1], index=idx[:1]), periods_per_year=1,
                                      risk_free=math.nan), "risk_free"),
        (lambda: compute_metrics(StandIn(**{**good.__dict__, "exposure": good.exposure.iloc[:3]})),
         "exposure is not on the equity's bars"),
        (lambda: compute_metrics(StandIn(**{**good.__dict__,
                                            "signal": good.signal.rename(columns={"X": "Y"})})),
         "close prices missing for signal symbol"),
        (lambda: compute_metrics(_stand_in([1, 2, 3, 4], signal=[1, np.nan, 1, 1])),
         "signal is not finite at bar 1"),
        (lambda: compute_metrics(_stand_in([1, 2, 3, 4], exposure=[1, np.nan, 1, 1])),
         "exposure is not finite at bar 1"),
        (lambda: compute_metrics(_stand_in([1, 2], trades=pd.DataFrame({"pnl": [1.0]}))),
         "lack the column"),
        (lambda: compute_metrics(_stand_in([1, 2], trades=_trades([1.0, np.nan]))),
         "trades row 1, column 'pnl'"),
        (lambda: metrics_from_returns(pd.Series([0.1], index=idx[:1]), periods_per_year=1,
                                      signal=good.signal.iloc[:1]), "both signal and close"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(MetricsError, match=message):
            call()


def test_to_dict_is_strict_json() -> None:
    r, ppy = _synthetic(3, 400)
    m = metrics_from_returns(r, periods_per_year=ppy, trades=_trades([1.0, 2.0]))
    d = m.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["sharpe"] == pytest.approx(m.sharpe)
    assert back["profit_factor"] == "inf" and back["exposure"] is None
    assert pd.Timedelta(back["max_drawdown_duration"]) == m.max_drawdown_duration
    assert pd.Timestamp(back["start"]) == m.start
    assert back["yearly"]["2015"]["n_bars"] == m.yearly["n_bars"].tolist()[0]
    assert back["monthly"]["2015"]["1"] is None  # no bars in January 2015
    assert back["monthly"]["2015"]["3"] == pytest.approx(m.monthly.loc[2015, 3])


def test_calendar_periods_use_the_index_time_zone() -> None:
    # 2020-01-31 23:00 UTC is already February in Tokyo
    idx = pd.DatetimeIndex(["2020-01-31 22:00", "2020-01-31 23:00", "2020-02-01 00:00"], tz="UTC")
    r = pd.Series([0.0, 0.1, 0.1], index=idx)
    m_utc = metrics_from_returns(r, periods_per_year=8760)
    m_tokyo = metrics_from_returns(r.tz_convert("Asia/Tokyo"), periods_per_year=8760)
    assert m_utc.monthly.loc[2020, 1] == pytest.approx(0.1)
    assert m_tokyo.monthly.loc[2020, 2] == pytest.approx(1.1**2 - 1)
    assert m_tokyo.monthly[1].isna().tolist() == [True]


# --- properties -----------------------------------------------------------------------------

# returns on a 0.1 bp grid: realistic, and far from the underflow of their squares
returns_lists = st.lists(st.integers(-30_000, 30_000).map(lambda k: k / 1e5), min_size=2,
                         max_size=300)  # fmt: skip


def _naive_drawdown(r: list[float]) -> tuple[float, int]:
    """Max drawdown and its bars by a plain loop (independent of the compiled scan)."""
    wealth = [1.0]
    for x in r:
        wealth.append(wealth[-1] * (1 + x))
    near = 1 - 1e-12  # "at the peak" up to round-off and ties keep the first, as documented
    best, best_peak, best_top, best_trough = 0.0, 0, 1.0, 0
    for trough in range(len(wealth)):
        top = max(wealth[: trough + 1])
        if wealth[trough] < top * near and 1 - wealth[trough] / top > best + 1e-12:
            best = 1 - wealth[trough] / top
            best_peak = max(i for i in range(trough + 1) if wealth[i] >= top * near)
            best_top, best_trough = top, trough
    if best == 0:
        return 0.0, 0
    later = [i for i in range(best_trough, len(wealth)) if wealth[i] >= best_top * near]
    end = later[0] if later else len(wealth) - 1
    return best, end - best_peak


@settings(max_examples=60, deadline=None)
@given(returns_lists, st.floats(0.01, 3.0))
def test_scaling_returns_leaves_sharpe_unchanged(r: list[float], c: float) -> None:
    idx = _index(len(r))
    a = metrics_from_returns(pd.Series(r, index=idx), periods_per_year=8760).sharpe
    b = metrics_from_returns(pd.Series(np.asarray(r) * c, index=idx), periods_per_year=8760).sharpe
    assert (math.isnan(a) and math.isnan(b)) or b == pytest.approx(a, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=1, max_size=300))
def test_max_drawdown_is_a_fraction_and_matches_a_plain_loop(r: list[float]) -> None:
    m = metrics_from_returns(pd.Series(r, index=_index(len(r))), periods_per_year=8760)
    assert 0.0 <= m.max_drawdown <= 1.0
    assert m.yearly["max_drawdown"].between(0.0, 1.0).all()
    clipped = list(r)
    if any(x <= -1 for x in r):
        first = next(i for i, x in enumerate(r) if x <= -1)
        clipped = [*r[:first], -1.0] + [0.0] * (len(r) - first - 1)
    depth, bars = _naive_drawdown(clipped)
    assert m.max_drawdown == pytest.approx(depth, abs=1e-12)
    assert m.max_drawdown_bars == bars


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 0.05, allow_nan=False), min_size=1, max_size=200))
def test_monotone_equity_has_no_drawdown(r: list[float]) -> None:
    equity = 100 * np.cumprod(np.r_[1.0, 1 + np.asarray(r)])
    m = compute_metrics(_stand_in(equity))
    assert m.max_drawdown == 0.0 and m.max_drawdown_bars == 0
    assert m.max_drawdown_duration == pd.Timedelta(0) and math.isnan(m.calmar)


@settings(max_examples=40, deadline=None)
@given(returns_lists, st.sampled_from(["1h", "6h", "1D", "3D"]))
def test_periods_compound_to_the_total_return(r: list[float], freq: str) -> None:
    m = metrics_from_returns(pd.Series(r, index=_index(len(r), freq)), periods_per_year=8760)
    monthly = m.monthly.to_numpy()
    total = np.prod(1 + monthly[~np.isnan(monthly)]) - 1
    assert total == pytest.approx(m.total_return, rel=1e-9, abs=1e-12)
    assert np.prod(1 + m.yearly["return"]) - 1 == pytest.approx(m.total_return, rel=1e-9, abs=1e-12)
    assert m.yearly["n_bars"].sum() == len(r)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(1.0, 1000.0), min_size=1, max_size=100))
def test_compute_metrics_agrees_with_metrics_from_returns(equity: list[float]) -> None:
    result = _stand_in(equity)
    a = compute_metrics(result)
    b = metrics_from_returns(returns_from_equity(result.equity), periods_per_year=8760.0)
    for name in ("total_return", "annual_return", "sharpe", "sortino", "max_drawdown"):
        x, y = getattr(a, name), getattr(b, name)
        # abs: wealth by compounding returns vs equity / equity_0 differs by round-off
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-9, abs=1e-9)
    assert a.max_drawdown_bars == b.max_drawdown_bars
