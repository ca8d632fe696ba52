"""Trading costs: validation, and what each cost does to fills, fees and the ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlengine.backtest import DEFAULT_COSTS, BacktestInputError, CostModel, run_backtest
from tests.backtest.test_engine import CAPITAL, intents, make_bars, targets


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"commission_bps": -1.0}, "commission_bps must be finite and >= 0"),
        ({"fixed": -0.01}, "fixed must be finite and >= 0"),
        ({"spread_bps": math.nan}, "spread_bps must be finite"),
        ({"slippage_bps": math.inf}, "slippage_bps must be finite"),
        ({"slippage_range": -0.1}, "slippage_range must be finite and >= 0"),
        ({"slippage_range": 1.5}, "more than the bar's range"),
        ({"commission_bps": 10_000.0}, "100% or more"),
        ({"spread_bps": "2"}, "must be a number"),
        ({"fixed": True}, "must be a number"),
    ],
)
def test_bad_costs(kwargs, message):
    with pytest.raises(BacktestInputError, match=message):
        CostModel(**kwargs)


def test_kernel_args_and_fraction_form():
    c = CostModel(commission_bps=10, fixed=1, spread_bps=4, slippage_bps=2, slippage_range=0.1)
    np.testing.assert_allclose(c.kernel_args(), [0.0002, 0.0002, 0.1, 0.001, 1.0])
    assert CostModel.from_fraction(0.001).commission_bps == pytest.approx(10)
    assert CostModel().is_zero and not DEFAULT_COSTS.is_zero


def test_default_costs_are_not_free():
    bars = make_bars([100, 100, 100, 100])
    r = run_backtest(bars, targets(bars, [1, 1, 0, 0]))
    assert r.equity.iloc[-1] < CAPITAL
    assert r.trades["fees"].iloc[0] > 0 and r.trades["slippage"].iloc[0] > 0


def test_one_round_trip_by_hand():
    bars = make_bars([100, 101, 103, 104], close=[100, 102, 104, 104.5])
    costs = CostModel(commission_bps=10, spread_bps=4, slippage_bps=1, fixed=5)
    r = run_backtest(bars, targets(bars, [1, 1, 1, 1]), costs=costs)
    adj_in = 101 * 0.0003  # half spread 2 bps + slippage 1 bp
    fill_in = 101 + adj_in
    k = adj_in + 0.001 * fill_in  # cost per unit bought
    units = (CAPITAL - 5) / (101 + k)
    fee_in = 0.001 * units * fill_in + 5
    adj_out = 104.5 * 0.0003
    fill_out = 104.5 - adj_out
    fee_out = 0.001 * units * fill_out + 5
    t = r.trades.iloc[0]
    assert t["size"] == pytest.approx(units)
    assert (t.entry_price, t.exit_price) == pytest.approx((fill_in, fill_out))
    assert t.fees == pytest.approx(fee_in + fee_out)
    assert t.slippage == pytest.approx(units * (adj_in + adj_out))
    assert t.pnl == pytest.approx(units * (fill_out - fill_in) - fee_in - fee_out)
    assert r.cash.iloc[1] == pytest.approx(CAPITAL - units * fill_in - fee_in, abs=1e-6)
    assert r.equity.iloc[-1] == pytest.approx(CAPITAL + t.pnl)


def test_a_round_trip_pays_one_spread():
    bars = make_bars([100, 100, 100, 100])
    r = run_backtest(bars, targets(bars, [1, 0, 0, 0]), costs=CostModel(spread_bps=10))
    t = r.trades.iloc[0]
    assert (t.entry_price, t.exit_price) == pytest.approx((100.05, 99.95))
    assert t.fees == 0
    assert t.pnl == pytest.approx(-t["size"] * 0.1) == pytest.approx(-t.slippage)


def test_range_slippage_uses_the_fill_bar():
    bars = make_bars([100, 100, 100, 100], high=[101, 104, 101, 101], low=[99, 98, 99, 99])
    r = run_backtest(bars, targets(bars, [1, 0, 0, 0]), costs=CostModel(slippage_range=0.1))
    t = r.trades.iloc[0]
    assert t.entry_price == pytest.approx(100 + 0.1 * 6)  # bar 1 spans 98..104
    assert t.exit_price == pytest.approx(100 - 0.1 * 2)  # bar 2 spans 99..101


def test_stop_fills_pay_costs_from_the_level():
    bars = make_bars([100, 100, 100, 100], [101, 101, 101, 101], [99, 99, 94, 99])
    sig = intents(bars, {0: {"side": 1, "stop_loss": 95}})
    r = run_backtest(bars, sig, costs=CostModel(slippage_bps=20, commission_bps=10))
    t = r.trades.iloc[0]
    assert t.exit_price == pytest.approx(95 * (1 - 0.002))
    assert t.fees == pytest.approx(0.001 * t["size"] * (t.entry_price + t.exit_price))


def test_fixed_fee_per_order_and_tiny_changes_skipped():
    bars = make_bars([100, 100, 100, 100, 100])
    r = run_backtest(bars, targets(bars, [1, 1, 0, 0, 0]), costs=CostModel(fixed=7))
    assert r.trades["fees"].iloc[0] == pytest.approx(14)
    assert r.equity.iloc[-1] == pytest.approx(CAPITAL - 14)
    # a change smaller than what the fee takes off the target is not traded
    nudge = run_backtest(bars, targets(bars, [0.5, 0.5 + 1e-9, 0, 0, 0]), costs=CostModel(fixed=7))
    assert len(nudge.trades) == 1
    assert nudge.trades["fees"].iloc[0] == pytest.approx(14)


def test_per_asset_costs():
    a = make_bars([100, 100, 100, 100], symbol="A")
    b = make_bars([100, 100, 100, 100], symbol="B")
    costs = {"A": CostModel(commission_bps=50), "B": CostModel()}
    r = run_backtest(
        {"A": (a, targets(a, [1, 0, 0, 0])), "B": (b, targets(b, [1, 0, 0, 0]))}, costs=costs
    )
    fees = r.trades.set_index("symbol")["fees"]
    assert fees["A"] > 0 and fees["B"] == 0
    assert r.sleeve_equity["B"].iloc[-1] == CAPITAL / 2
