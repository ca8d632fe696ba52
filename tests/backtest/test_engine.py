"""The backtest engine: hand-built bars for each rule, properties of the accounting, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import ArrayLike

from mlengine.backtest import (
    BacktestInputError,
    CostModel,
    FixedFraction,
    Kelly,
    run_backtest,
)
from mlengine.backtest.engine import TRADE_COLUMNS
from mlengine.data.schema import make_bar_frame

FREE = CostModel()
CAPITAL = 100_000.0
NAN = np.nan

# --- data helpers (synthetic, for controlled experiments; also used by the other engine tests)


def make_bars(
    open_: ArrayLike,
    high: ArrayLike | None = None,
    low: ArrayLike | None = None,
    close: ArrayLike | None = None,
    *,
    start: str = "2024-01-01",
    timeframe: str = "1h",
    market: str = "crypto",
    symbol: str = "TEST",
    index: pd.DatetimeIndex | None = None,
) -> pd.DataFrame:
    """A bar frame; ``close`` defaults to ``open``, high/low to max/min of open and close."""
    o = np.asarray(open_, dtype=float)
    c = o if close is None else np.asarray(close, dtype=float)
    h = np.maximum(o, c) if high is None else np.asarray(high, dtype=float)
    lo = np.minimum(o, c) if low is None else np.asarray(low, dtype=float)
    idx = index if index is not None else pd.date_range(start, periods=len(o), freq=timeframe)
    cols = {"open": o, "high": h, "low": lo, "close": c, "volume": np.zeros(len(o))}
    bars = make_bar_frame(idx, cols, symbol=symbol, timeframe=timeframe)
    bars.attrs["market"] = market
    return bars


def random_bars(seed: int, n: int, *, vol: float = 0.01, symbol: str = "RW") -> pd.DataFrame:
    """A geometric random walk with gaps between a close and the next open."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, vol / 3, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, vol, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, vol, n))
    return make_bars(open_, high, low, close, symbol=symbol)


def random_targets(seed: int, index: pd.Index) -> pd.DataFrame:
    """Target exposures from {-1, -0.5, 0, 0.5, 1}, changing on about one bar in five."""
    rng = np.random.default_rng(seed + 1)
    levels = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], len(index))
    keep = rng.random(len(index)) < 0.8
    keep[0] = False
    pos = pd.Series(np.where(keep, np.nan, levels), index=index).ffill()
    return pd.DataFrame({"position": pos})


def random_intents(seed: int, bars: pd.DataFrame) -> pd.DataFrame:
    """Order intents: random sides and sizes, levels on the right side (or none), limits."""
    rng = np.random.default_rng(seed + 2)
    n = len(bars)
    close = bars["close"].to_numpy()
    side = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], n)
    sl = np.where(rng.random(n) < 0.8, close * (1 - side * rng.uniform(0.002, 0.03, n)), NAN)
    tp = np.where(rng.random(n) < 0.7, close * (1 + side * rng.uniform(0.002, 0.05, n)), NAN)
    return pd.DataFrame(
        {
            "side": side,
            "size": rng.uniform(0.1, 1.0, n),
            "stop_loss": np.where(side != 0, sl, NAN),
            "take_profit": np.where(side != 0, tp, NAN),
            "max_bars": rng.choice([0, 0, 3, 10], n),
        },
        index=bars.index,
    )


def intents(bars: pd.DataFrame, rows: dict[int, dict[str, float]]) -> pd.DataFrame:
    """Intent frame with ``side`` 0 everywhere except at the given bars."""
    n = len(bars)
    cols = {k: np.full(n, NAN) for k in ("stop_loss", "take_profit", "max_bars")}
    cols["side"] = np.zeros(n)
    cols["size"] = np.ones(n)
    cols["exit"] = np.zeros(n)
    for i, row in rows.items():
        for k, v in row.items():
            cols[k][i] = v
    return pd.DataFrame(cols, index=bars.index)


def targets(bars: pd.DataFrame, pos: ArrayLike) -> pd.DataFrame:
    return pd.DataFrame({"position": np.asarray(pos, dtype=float)}, index=bars.index)


def only_trade(result) -> pd.Series:
    assert len(result.trades) == 1, result.trades
    return result.trades.iloc[0]


# --- target positions ------------------------------------------------------------------------


def test_flat_signal_keeps_the_capital():
    bars = random_bars(0, 50)
    r = run_backtest(bars, targets(bars, np.zeros(50)))
    assert (r.equity == CAPITAL).all()
    assert (r.cash == CAPITAL).all()
    assert r.trades.empty
    assert list(r.trades.columns) == list(TRADE_COLUMNS)


def test_long_fills_at_next_open_and_closes_at_the_last_close():
    bars = make_bars([100, 101, 102, 103, 104], close=[100.5, 101.5, 102.5, 103.5, 104.5])
    r = run_backtest(bars, targets(bars, [1, 1, 1, 1, 1]), costs=FREE)
    units = CAPITAL / 101
    assert r.equity.iloc[0] == CAPITAL
    np.testing.assert_allclose(r.equity.iloc[1:4], units * np.array([101.5, 102.5, 103.5]))
    np.testing.assert_allclose(r.position["TEST"].iloc[1:4], units)
    assert r.position["TEST"].iloc[-1] == 0  # liquidated at the last close
    np.testing.assert_allclose(r.exposure["TEST"].iloc[1:4], 1.0)
    t = only_trade(r)
    assert (t.side, t.entry_price, t.exit_price, t.bars_held, t.exit_reason) == (
        1,
        101,
        104.5,
        4,
        "end",
    )
    assert t.entry_time == bars.index[1] and t.exit_time == bars.index[4]
    assert r.equity.iloc[-1] == pytest.approx(units * 104.5)
    assert t.pnl == pytest.approx(r.equity.iloc[-1] - CAPITAL)


def test_last_decision_is_never_filled():
    bars = make_bars([100, 101, 102])
    r = run_backtest(bars, targets(bars, [0, 0, 1]), costs=FREE)
    assert r.trades.empty and (r.equity == CAPITAL).all()
    assert r.signal["TEST"].tolist() == [0, 0, 1]


def test_short_gains_when_the_price_falls():
    bars = make_bars([100, 100, 90, 80])
    r = run_backtest(bars, targets(bars, [-1, -1, -1, -1]), costs=FREE)
    t = only_trade(r)
    assert t.side == -1 and t.pnl == pytest.approx(CAPITAL / 100 * 20)
    assert r.exposure["TEST"].iloc[1] == pytest.approx(-1.0)


def test_partial_changes_split_the_ledger_at_average_cost():
    bars = make_bars([100, 100, 110, 120, 100, 90, 95])
    r = run_backtest(bars, targets(bars, [0.5, 1, 0.3, -0.5, 0, 0, 0]), costs=FREE)
    tr = r.trades
    assert tr["side"].tolist() == [1, 1, -1]
    assert tr["exit_time"].tolist() == [bars.index[3], bars.index[4], bars.index[5]]
    # bought 500 units at 100, then topped up to 100% at 110: average cost in between
    u1 = 0.5 * CAPITAL / 100
    eq2 = CAPITAL + u1 * 10
    u2 = eq2 / 110
    assert tr["entry_price"].iloc[0] == pytest.approx((u1 * 100 + (u2 - u1) * 110) / u2)
    assert tr["size"].sum() == pytest.approx(u2 + tr["size"].iloc[2])
    assert tr["pnl"].sum() == pytest.approx(r.equity.iloc[-1] - CAPITAL)
    assert tr["entry_time"].iloc[1] == bars.index[1]  # a partial close keeps the first entry


def test_rebalance_threshold():
    bars = make_bars(np.linspace(100, 150, 30))
    plain = run_backtest(bars, targets(bars, np.full(30, 0.5)), costs=FREE)
    assert len(plain.trades) == 1  # held, exposure drifts up with the price
    assert plain.exposure["TEST"].iloc[-2] > 0.55
    always = run_backtest(
        bars, targets(bars, np.full(30, 0.5)), costs=FREE, rebalance_threshold=0.0
    )
    units, cash, o = always.position["TEST"], always.cash, bars["open"]
    at_open = (units * o / (cash + units * o)).iloc[1:-1]
    np.testing.assert_allclose(at_open, 0.5)
    assert len(always.trades) > 20  # beyond the first ledger guess: the kernel resumed
    loose = run_backtest(
        bars, targets(bars, np.full(30, 0.5)), costs=FREE, rebalance_threshold=0.02
    )
    assert 1 < len(loose.trades) < len(always.trades)


def test_costs_make_the_target_exposure_after_costs():
    bars = make_bars([100, 101, 102])
    costs = CostModel(commission_bps=10, spread_bps=4, slippage_bps=1, fixed=5)
    r = run_backtest(bars, targets(bars, [1, 1, 1]), costs=costs)
    units = r.position["TEST"].iloc[1]
    cash = r.cash.iloc[1]
    assert cash == pytest.approx(0.0, abs=1e-6)  # |e| = 1 never borrows
    assert units * 101 / (cash + units * 101) == pytest.approx(1.0)


def test_ruined_sleeve_is_liquidated_and_stops():
    bars = make_bars([100, 100, 250, 260, 50, 40])
    r = run_backtest(bars, targets(bars, [-1, -1, -1, -1, -1, -1]), costs=FREE)
    assert r.equity.iloc[2] < 0
    t = only_trade(r)
    assert t.exit_reason == "end" and t.exit_time == bars.index[2]  # liquidated at the open
    assert (r.position["TEST"].iloc[2:] == 0).all()
    assert r.equity.iloc[2:].nunique() == 1


# --- order intents -----------------------------------------------------------------------------


def test_gap_through_the_stop_fills_at_the_open():
    bars = make_bars([100, 100, 90, 90], [101, 102, 91, 91], [99, 98, 89, 89], [100, 99, 90, 90])
    sig = intents(bars, {0: {"side": 1, "size": 1, "stop_loss": 95, "take_profit": 110}})
    t = only_trade(run_backtest(bars, sig, costs=FREE))
    assert (t.entry_price, t.exit_price, t.exit_reason, t.bars_held) == (100, 90, "stop", 1)
    assert t.exit_time == bars.index[2]


def test_stop_and_target_in_one_bar_is_a_stop():
    bars = make_bars([100, 100, 100, 100], [101, 102, 111, 101], [99, 98, 94, 99])
    sig = intents(bars, {0: {"side": 1, "stop_loss": 95, "take_profit": 110}})
    t = only_trade(run_backtest(bars, sig, costs=FREE))
    assert (t.exit_price, t.exit_reason, t.bars_held) == (95, "stop", 2)


def test_target_intrabar_and_gap():
    bars = make_bars([100, 100, 105, 100], [101, 102, 111, 101], [99, 98, 104, 99])
    sig = intents(bars, {0: {"side": 1, "stop_loss": 95, "take_profit": 110}})
    assert only_trade(run_backtest(bars, sig, costs=FREE)).exit_price == 110
    gap = make_bars([100, 100, 112, 100], [101, 102, 113, 101], [99, 98, 104, 99])
    t = only_trade(run_backtest(gap, sig, costs=FREE))
    assert (t.exit_price, t.exit_reason) == (112, "target")  # opened beyond it: the open


def test_short_stop_and_target():
    bars = make_bars([100, 100, 101, 100], [101, 103, 106, 101], [99, 97, 100, 99])
    sig = intents(bars, {0: {"side": -1, "stop_loss": 105, "take_profit": 90}})
    t = only_trade(run_backtest(bars, sig, costs=FREE))
    assert (t.side, t.exit_price, t.exit_reason) == (-1, 105, "stop")
    assert t.pnl == pytest.approx(-(CAPITAL / 100) * 5)
    down = make_bars([100, 100, 99, 100], [101, 103, 100, 101], [99, 97, 89, 99])
    t = only_trade(run_backtest(down, sig, costs=FREE))
    assert (t.exit_price, t.exit_reason) == (90, "target")


def test_time_exit_at_the_open_after_the_limit():
    bars = make_bars([100, 101, 102, 103, 104, 105])
    sig = intents(bars, {0: {"side": 1, "max_bars": 2}})
    t = only_trade(run_backtest(bars, sig, costs=FREE))
    assert (t.entry_time, t.exit_time) == (bars.index[1], bars.index[3])
    assert (t.exit_price, t.exit_reason, t.bars_held) == (103, "time", 2)


def test_gap_beyond_the_stop_on_the_entry_bar_exits_at_once():
    bars = make_bars([100, 94, 96], close=[100, 96, 96])
    sig = intents(bars, {0: {"side": 1, "stop_loss": 95}})
    t = only_trade(run_backtest(bars, sig, costs=FREE))
    assert (t.entry_price, t.exit_price, t.exit_reason, t.bars_held) == (94, 94, "stop", 0)


def test_same_side_intent_is_ignored_and_opposite_reverses():
    bars = make_bars([100, 100, 100, 99, 100, 101], low=[99, 99, 99, 98.5, 99, 100])
    sig = intents(
        bars,
        {
            0: {"side": 1, "stop_loss": 90},
            1: {"side": 1, "stop_loss": 99.5},  # ignored: its stop would have hit at bar 3
            3: {"side": -1, "size": 0.5},
        },
    )
    r = run_backtest(bars, sig, costs=FREE)
    tr = r.trades
    assert tr["side"].tolist() == [1, -1]
    assert tr["exit_reason"].tolist() == ["signal", "end"]
    assert tr["entry_time"].iloc[1] == bars.index[4] == tr["exit_time"].iloc[0]
    assert r.exposure["TEST"].iloc[4] == pytest.approx(-0.5)
    assert r.signal["TEST"].iloc[3] == -0.5


def test_exit_flag_closes_at_the_next_open():
    bars = make_bars([100, 101, 102, 103, 104])
    sig = intents(bars, {0: {"side": 1}, 2: {"exit": 1}})
    t = only_trade(run_backtest(bars, sig, costs=FREE))
    assert (t.exit_time, t.exit_price, t.exit_reason) == (bars.index[3], 103, "signal")


# --- several assets --------------------------------------------------------------------------


def test_sleeves_sum_on_the_union_index():
    idx_a = pd.date_range("2024-01-05", periods=72, freq="1h", tz="UTC")
    idx_b = idx_a[(idx_a.day_of_week < 5)]  # no weekend bars
    a = random_bars(1, 72, symbol="A")
    a.index = idx_a.rename("ts")
    b = random_bars(2, len(idx_b), symbol="B")
    b.index = idx_b.rename("ts")
    b.attrs["market"] = "fx"
    sa, sb = random_targets(1, a.index), random_targets(2, b.index)
    costs = {"A": CostModel(commission_bps=10), "B": CostModel(spread_bps=2)}
    r = run_backtest({"A": (a, sa), "B": (b, sb)}, costs=costs, allocation={"A": 0.6, "B": 0.3})
    alone_a = run_backtest(a, sa, costs=costs["A"], capital=0.6 * CAPITAL)
    alone_b = run_backtest(b, sb, costs=costs["B"], capital=0.3 * CAPITAL)
    assert r.equity.index.equals(a.index)  # the union
    np.testing.assert_allclose(r.sleeve_equity["A"], alone_a.equity)
    carried = alone_b.equity.reindex(a.index).ffill().fillna(0.3 * CAPITAL)
    np.testing.assert_allclose(r.sleeve_equity["B"], carried)
    np.testing.assert_allclose(r.equity, alone_a.equity + carried + 0.1 * CAPITAL)
    assert set(r.trades["symbol"]) == {"A", "B"}
    assert r.trades["entry_time"].is_monotonic_increasing
    assert r.trades["pnl"].sum() == pytest.approx(r.equity.iloc[-1] - CAPITAL)
    weekend = a.index.day_of_week >= 5
    assert r.close["B"][weekend].isna().all() and (r.signal["B"][weekend] == 0).all()
    assert np.isfinite(r.exposure.to_numpy()).all()
    assert r.periods_per_year == 8760  # the 24/7 sleeve sets the clock
    assert r.config.modes == {"A": "target", "B": "target"}


def test_zero_allocation_sleeve_stays_flat():
    a, b = random_bars(15, 50, symbol="A"), random_bars(16, 50, symbol="B")
    sa, sb = random_targets(15, a.index), random_targets(16, b.index)
    r = run_backtest({"A": (a, sa), "B": (b, sb)}, allocation={"A": 1.0, "B": 0.0})
    assert (r.sleeve_equity["B"] == 0).all() and (r.position["B"] == 0).all()
    assert set(r.trades["symbol"]) <= {"A"}
    np.testing.assert_allclose(r.equity, run_backtest(a, sa).equity)


def test_list_of_pairs_takes_symbols_from_attrs():
    a, b = random_bars(3, 40, symbol="A"), random_bars(4, 40, symbol="B")
    r = run_backtest([(a, random_targets(3, a.index)), (b, random_intents(4, b))])
    assert list(r.position.columns) == ["A", "B"]
    assert r.config.modes == {"A": "target", "B": "intents"}
    assert r.config.allocation == {"A": 0.5, "B": 0.5}


# --- result contract ---------------------------------------------------------------------------


def test_result_contract():
    bars = random_bars(5, 300)
    r = run_backtest(bars, random_targets(5, bars.index), costs=CostModel(commission_bps=5))
    assert r.equity.name == "equity" and r.equity.dtype == np.float64
    assert r.equity.index.equals(bars.index)
    assert r.returns.iloc[0] == 0
    np.testing.assert_allclose(r.returns.iloc[1:], r.equity.pct_change().iloc[1:])
    np.testing.assert_allclose(r.net_exposure, r.exposure.sum(axis=1))
    tr = r.trades
    assert tr["side"].dtype == np.int64 and tr["bars_held"].dtype == np.int64
    assert set(tr["exit_reason"]) <= {"signal", "stop", "target", "time", "end"}
    assert (tr["size"] > 0).all() and (tr["exit_time"] >= tr["entry_time"]).all()
    np.testing.assert_allclose(tr["return"], tr["pnl"] / (tr["size"] * tr["entry_price"]))
    assert r.periods_per_year == 8760
    assert r.metrics.n_trades == len(tr)
    assert r.metrics.total_return == pytest.approx(r.equity.iloc[-1] / CAPITAL - 1)
    assert r.config.to_dict()["costs"]["RW"]["commission_bps"] == 5


def test_naive_index_gives_the_same_result():
    bars = random_bars(6, 200)
    sig = random_intents(6, bars)
    aware = run_backtest(bars, sig)
    naive_bars, naive_sig = bars.tz_localize(None), sig.tz_localize(None)
    naive = run_backtest(naive_bars, naive_sig)
    np.testing.assert_array_equal(aware.equity.to_numpy(), naive.equity.to_numpy())
    assert pd.DatetimeIndex(naive.equity.index).tz is None
    assert len(aware.trades) == len(naive.trades)


# --- properties of the accounting ----------------------------------------------------------

SEEDS = st.integers(0, 10_000)
COSTS = st.builds(
    CostModel,
    commission_bps=st.floats(0, 20),
    fixed=st.floats(0, 2),
    spread_bps=st.floats(0, 10),
    slippage_bps=st.floats(0, 5),
    slippage_range=st.floats(0, 0.2),
)


def _signals(seed: int, bars: pd.DataFrame, kind: str) -> pd.DataFrame:
    return random_targets(seed, bars.index) if kind == "target" else random_intents(seed, bars)


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 300), costs=COSTS, kind=st.sampled_from(["target", "intent"]))
def test_accounting_identities(seed, n, costs, kind):
    bars = random_bars(seed, n)
    r = run_backtest(bars, _signals(seed, bars, kind), costs=costs)
    marked = r.cash + r.position["RW"] * bars["close"]
    np.testing.assert_allclose(r.equity, marked, rtol=1e-12, atol=1e-7)
    assert r.trades["pnl"].sum() == pytest.approx(r.equity.iloc[-1] - CAPITAL, abs=1e-6)
    assert r.position["RW"].iloc[-1] == 0
    assert (r.trades["fees"] >= 0).all() and (r.trades["slippage"] >= 0).all()
    assert (r.trades["bars_held"] >= 0).all()
    units, o = r.position["RW"].to_numpy(), bars["open"].to_numpy()
    at_open = units * o / (r.cash.to_numpy() + units * o)
    traded = np.r_[False, np.diff(units) != 0] & (units != 0)
    assert (np.abs(at_open[traded]) <= 1 + 1e-9).all()  # never borrows beyond |e| = 1


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 300), costs=COSTS, kind=st.sampled_from(["target", "intent"]))
def test_costs_only_reduce_equity(seed, n, costs, kind):
    bars = random_bars(seed, n)
    sig = _signals(seed, bars, kind)
    free = run_backtest(bars, sig, costs=FREE)
    paid = run_backtest(bars, sig, costs=costs)
    assert (paid.equity.to_numpy() <= free.equity.to_numpy() + 1e-9 * CAPITAL).all()
    assert len(paid.trades) == len(free.trades)


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 200), kind=st.sampled_from(["target", "intent"]))
def test_flat_signals_and_rising_markets(seed, n, kind):
    bars = random_bars(seed, n)
    flat = targets(bars, np.zeros(n)) if kind == "target" else intents(bars, {})
    assert (run_backtest(bars, flat).equity == CAPITAL).all()
    rising = make_bars(np.linspace(100, 100 + n, n), close=np.linspace(100.5, 100.5 + n, n))
    r = run_backtest(rising, targets(rising, np.ones(n)), costs=FREE)
    assert r.equity.iloc[-1] > CAPITAL


@settings(max_examples=40, deadline=None)
@given(
    seed=SEEDS,
    n=st.integers(2, 300),
    costs=st.sampled_from([FREE, CostModel(spread_bps=5, slippage_range=0.1)]),
)
def test_levels_never_fill_better_than_the_level_but_at_a_gap(seed, n, costs):
    bars = random_bars(seed, n, vol=0.02)
    sig = random_intents(seed, bars)
    r = run_backtest(bars, sig, costs=costs)
    pos = {ts: i for i, ts in enumerate(bars.index)}
    for t in r.trades.itertuples():
        if t.exit_reason not in ("stop", "target"):
            continue
        decided = pos[t.entry_time] - 1
        level = sig["stop_loss" if t.exit_reason == "stop" else "take_profit"].iloc[decided]
        o = bars["open"].iloc[pos[t.exit_time]]
        gapped = (o - level) * t.side <= 0 if t.exit_reason == "stop" else (o - level) * t.side >= 0
        ref = o if gapped else level
        if costs is FREE:
            assert t.exit_price == ref
        else:
            assert (t.exit_price - ref) * t.side < 0  # costs only ever worsen the fill
        if not gapped:
            assert (t.exit_price - level) * t.side <= 0 if t.exit_reason == "stop" else True


@settings(max_examples=30, deadline=None)
@given(
    seed=SEEDS,
    n=st.integers(5, 200),
    cut=st.floats(0.1, 0.9),
    kind=st.sampled_from(["target", "intent"]),
)
def test_no_look_ahead_by_truncation(seed, n, cut, kind):
    bars = random_bars(seed, n)
    sig = _signals(seed, bars, kind)
    k = max(2, int(n * cut))
    full = run_backtest(bars, sig)
    part = run_backtest(bars.iloc[:k], sig.iloc[:k])
    np.testing.assert_array_equal(part.equity.to_numpy()[: k - 1], full.equity.to_numpy()[: k - 1])
    np.testing.assert_array_equal(part.cash.to_numpy()[: k - 1], full.cash.to_numpy()[: k - 1])


# --- bad input ---------------------------------------------------------------------------------


def _bad_bars(kind: str) -> pd.DataFrame:
    bars = random_bars(7, 20)
    if kind == "empty":
        return bars.iloc[:0]
    col, value = {"zero": ("open", 0.0), "negative": ("close", -1.0), "nan": ("low", NAN)}.get(
        kind, ("high", 1.0)
    )
    frame = bars.copy()
    frame.loc[frame.index[5], col] = value
    return frame


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "empty"),
        ("zero", "open price 0.0 is not positive"),
        ("negative", "close price -1.0 is not positive"),
        ("nan", "low price nan"),
        ("incoherent", "high/low do not bracket"),
    ],
)
def test_bad_bars(kind, message):
    bars = _bad_bars(kind)
    with pytest.raises(BacktestInputError, match=message) as err:
        run_backtest(bars, targets(bars, np.zeros(len(bars))))
    if kind != "empty":
        assert str(bars.index[5]) in str(err.value)


def test_unsorted_bars():
    bars = random_bars(8, 10)
    swapped = bars.iloc[[0, 1, 3, 2, 4, 5, 6, 7, 8, 9]]
    with pytest.raises(BacktestInputError, match="not strictly increasing at bar 3"):
        run_backtest(swapped, targets(swapped, np.zeros(10)))


def _sig_case(case: str, bars: pd.DataFrame) -> pd.DataFrame:
    n = len(bars)
    close = bars["close"].to_numpy()
    if case == "shifted":
        return targets(bars, np.zeros(n)).set_axis(bars.index + pd.Timedelta("1h"))
    if case == "short":
        return targets(bars, np.zeros(n)).iloc[:-1]
    if case == "naive":
        return targets(bars, np.zeros(n)).tz_localize(None)
    if case == "nan":
        return targets(bars, np.r_[np.zeros(4), NAN, np.zeros(n - 5)])
    if case == "range":
        return targets(bars, np.r_[np.zeros(4), 1.5, np.zeros(n - 5)])
    if case == "both":
        return targets(bars, np.zeros(n)).assign(side=0.0)
    if case == "neither":
        return pd.DataFrame({"signal": np.zeros(n)}, index=bars.index)
    if case == "typo":
        return intents(bars, {}).rename(columns={"stop_loss": "stoploss"})
    rows: dict[str, dict[int, dict[str, float]]] = {
        "side": {4: {"side": 2}},
        "size": {4: {"side": 1, "size": 1.5}},
        "long_stop": {4: {"side": 1, "stop_loss": close[4] * 1.01}},
        "short_target": {4: {"side": -1, "take_profit": close[4] * 1.01}},
        "stop_zero": {4: {"side": -1, "stop_loss": -3.0}},
        "take_inf": {4: {"side": 1, "take_profit": np.inf}},
        "nan_side": {4: {"side": NAN}},
        "max_bars": {4: {"side": 1, "max_bars": 1.5}},
        "exit": {4: {"exit": 0.5}},
    }
    return intents(bars, rows[case])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("shifted", "misaligned with bars at row 0"),
        ("short", "19 signal rows for 20 bars"),
        ("naive", "tz=None"),
        ("nan", "NaN position"),
        ("range", r"position outside \[-1, 1\]"),
        ("both", "either a 'position' column"),
        ("neither", "either a 'position' column"),
        ("typo", "unknown intent column"),
        ("side", "side not in"),
        ("size", r"size not in \(0, 1\]"),
        ("long_stop", "stop_loss on the wrong side"),
        ("short_target", "take_profit on the wrong side"),
        ("stop_zero", "stop_loss not a positive price"),
        ("take_inf", "take_profit not a positive price"),
        ("nan_side", "NaN side"),
        ("max_bars", "max_bars not a whole number"),
        ("exit", "exit not a bool"),
    ],
)
def test_bad_signals(case, message):
    bars = random_bars(9, 20)
    with pytest.raises(BacktestInputError, match=message) as err:
        run_backtest(bars, _sig_case(case, bars))
    if case not in ("shifted", "short", "naive", "both", "neither", "typo", "exit"):
        assert f"bar 4 ({bars.index[4]})" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capital": 0}, "capital must be positive"),
        ({"capital": float("nan")}, "capital must be positive"),
        ({"sizing": "martingale"}, "unknown sizing 'martingale'"),
        ({"sizing": Kelly()}, "needs a 'p_up' column"),
        ({"costs": {"OTHER": CostModel()}}, r"costs: no entry for \['RW'\]"),
        ({"allocation": {"RW": 1.5}}, "allocation sums to 1.5"),
        ({"allocation": {"RW": -0.5}}, "finite and >= 0"),
        ({"rebalance_threshold": -0.1}, "rebalance_threshold"),
        ({"market": "moon"}, "unknown market"),
    ],
)
def test_bad_settings(kwargs, message):
    bars = random_bars(10, 20)
    with pytest.raises((BacktestInputError, ValueError), match=message):
        run_backtest(bars, targets(bars, np.ones(20)), **kwargs)


def test_bad_costs_are_rejected_where_they_are_made():
    with pytest.raises(BacktestInputError, match="commission_bps must be finite and >= 0"):
        CostModel(commission_bps=-1)


def test_bad_portfolios():
    a, b = random_bars(11, 20, symbol="A"), random_bars(12, 20, symbol="A")
    sa = targets(a, np.zeros(20))
    with pytest.raises(BacktestInputError, match="'A' appears twice"):
        run_backtest([(a, sa), (b, sa)])
    daily = make_bars(np.full(20, 100.0), timeframe="1D", symbol="D")
    with pytest.raises(BacktestInputError, match="different timeframes"):
        run_backtest({"A": (a, sa), "D": (daily, targets(daily, np.zeros(20)))})
    with pytest.raises(BacktestInputError, match="signals are missing"):
        run_backtest(a)
    with pytest.raises(BacktestInputError, match="no assets"):
        run_backtest({})


def test_sizing_scales_the_signal():
    bars = random_bars(13, 50)
    r = run_backtest(bars, targets(bars, np.ones(50)), sizing=FixedFraction(0.25), costs=FREE)
    held = r.position["RW"].iloc[1] * bars["open"].iloc[1]
    assert held / CAPITAL == pytest.approx(0.25)
    assert (r.signal["RW"] == 0.25).all()


def test_result_frames_are_writable_copies():
    bars = random_bars(14, 30)
    r = run_backtest(bars, random_targets(14, bars.index))
    r.close.iloc[0, 0] = -1.0
    r.position.iloc[0, 0] = 5.0
    assert bars["close"].iloc[0] > 0  # the input is untouched
