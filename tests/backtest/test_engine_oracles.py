"""The engine against independent backtesters on real data: vectorbt and backtesting.py.

Same SMA(10/50) long/short signals, same 0.1% commission, on the bundled EURUSD 1h and
Coinbase BTCUSD 1h bars. Conventions bridged:

* vectorbt fills at the price given for the bar of the signal, so its signals are shifted by
  one bar and its price is the open; ``size=np.inf`` (all cash, fees included) is our
  exposure ±1 reached after costs. vectorbt leaves the last position open, valued at the last
  close; we close it there and pay the commission, so the last bar differs by exactly that.
* backtesting.py (``trade_on_close=False``) needs a fraction below 1, so both sides use
  ±0.9999. It buys whole units (capital 1e9 makes that rounding < 1e-5) and sizes with the
  commission on the full order (units ``F E / (P (1 + c))`` against our
  ``F E / (P (1 + F c))``, 1e-7 apart); its ledger leaves out the trade still open at the end.
* Both peers get a naive index (vectorbt is very slow on a tz-aware one).
"""

from __future__ import annotations

import warnings

import backtesting as bt
import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from mlengine import datasets
from mlengine.backtest import CostModel, run_backtest

COMMISSION = 0.001
DATASETS = ["eurusd_1h", "btcusd_1h_coinbase"]


def sma_positions(bars: pd.DataFrame) -> pd.Series:
    close = bars["close"]
    gap = close.rolling(10).mean() - close.rolling(50).mean()
    return pd.Series(np.sign(gap.to_numpy()), index=bars.index).fillna(0.0)


@pytest.fixture(scope="module", params=DATASETS)
def real(request) -> tuple[pd.DataFrame, pd.Series]:
    bars = datasets.load(request.param)
    return bars, sma_positions(bars)


@pytest.mark.slow  # vectorbt compiles for ~30 s on an empty numba cache
def test_equity_and_trades_match_vectorbt(real):
    bars, pos = real
    ours = run_backtest(
        bars, pd.DataFrame({"position": pos}), costs=CostModel.from_fraction(COMMISSION)
    )
    idx = bars.index.tz_localize(None)
    p1, p2 = pos.shift(1, fill_value=0.0).to_numpy(), pos.shift(2, fill_value=0.0).to_numpy()

    def sig(mask: np.ndarray) -> pd.Series:
        return pd.Series(mask, index=idx)

    pf = vbt.Portfolio.from_signals(
        pd.Series(bars["close"].to_numpy(), index=idx),
        entries=sig((p1 == 1) & (p2 != 1)),
        exits=sig((p1 == 0) & (p2 == 1)),
        short_entries=sig((p1 == -1) & (p2 != -1)),
        short_exits=sig((p1 == 0) & (p2 == -1)),
        price=pd.Series(bars["open"].to_numpy(), index=idx),
        size=np.inf,
        fees=COMMISSION,
        init_cash=100_000.0,
        freq="1h",
    )
    value = pf.value().to_numpy()
    eq = ours.equity.to_numpy()
    np.testing.assert_allclose(eq[:-1], value[:-1], rtol=1e-10)
    last = ours.trades.iloc[-1]
    assert last["exit_reason"] == "end"
    exit_fee = COMMISSION * last["size"] * bars["close"].iloc[-1]
    assert eq[-1] == pytest.approx(value[-1] - exit_fee, rel=1e-10)

    theirs = pf.trades.records_readable
    assert len(theirs) == len(ours.trades) > 100
    np.testing.assert_array_equal(
        theirs["Entry Timestamp"].to_numpy(), ours.trades["entry_time"].dt.tz_localize(None)
    )
    np.testing.assert_array_equal(
        theirs["Exit Timestamp"].to_numpy(), ours.trades["exit_time"].dt.tz_localize(None)
    )
    np.testing.assert_allclose(theirs["Avg Entry Price"], ours.trades["entry_price"], rtol=1e-12)
    np.testing.assert_allclose(theirs["Avg Exit Price"], ours.trades["exit_price"], rtol=1e-12)
    np.testing.assert_allclose(theirs["Size"], ours.trades["size"], rtol=1e-9)
    np.testing.assert_allclose(theirs["PnL"][:-1], ours.trades["pnl"][:-1], rtol=1e-8)
    sides = np.where(theirs["Direction"] == "Long", 1, -1)
    np.testing.assert_array_equal(sides, ours.trades["side"])


def test_equity_and_trades_match_backtesting_py(real):
    bars, pos = real
    fraction, capital = 0.9999, 1e9
    ours = run_backtest(
        bars,
        pd.DataFrame({"position": pos * fraction}),
        costs=CostModel.from_fraction(COMMISSION),
        capital=capital,
    )
    signal = pos.to_numpy()

    class Replay(bt.Strategy):  # acts on the same decisions at the next open
        def init(self) -> None:
            pass

        def next(self) -> None:
            target = signal[len(self.data) - 1]
            if target != np.sign(self.position.size):
                if self.position:
                    self.position.close()
                if target > 0:
                    self.buy(size=fraction)
                elif target < 0:
                    self.sell(size=fraction)

    data = bars.rename(columns=str.capitalize).tz_localize(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # progress bar and "trades remain open" notices
        stats = bt.Backtest(
            data, Replay, cash=capital, commission=COMMISSION, trade_on_close=False
        ).run()
    np.testing.assert_allclose(
        ours.equity.iloc[:-1], stats._equity_curve["Equity"].iloc[:-1], rtol=1e-5
    )
    theirs = stats._trades
    closed = ours.trades.iloc[:-1]  # theirs leaves out the trade open at the end
    assert len(theirs) == len(closed) > 100
    np.testing.assert_array_equal(
        theirs["EntryTime"].to_numpy(), closed["entry_time"].dt.tz_localize(None)
    )
    np.testing.assert_array_equal(
        theirs["ExitTime"].to_numpy(), closed["exit_time"].dt.tz_localize(None)
    )
    np.testing.assert_allclose(theirs["EntryPrice"], closed["entry_price"], rtol=1e-12)
    np.testing.assert_allclose(theirs["ExitPrice"], closed["exit_price"], rtol=1e-12)
    np.testing.assert_allclose(theirs["Size"].abs(), closed["size"], rtol=1e-5)
    np.testing.assert_array_equal(np.sign(theirs["Size"]), closed["side"])
    np.testing.assert_allclose(theirs["ReturnPct"], closed["return"], rtol=1e-4, atol=1e-9)
