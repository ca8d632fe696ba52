"""Backtest engine: bars and signals in; trades, equity, cash, positions and metrics out.

``run_backtest(bars, signals, ...)`` runs one asset; ``run_backtest({symbol: (bars,
signals), ...})`` (or a list of pairs, symbols from ``bars.attrs["symbol"]``) runs several
as independent sleeves on one capital base: each sleeve gets ``capital * allocation[symbol]``
(equal shares by default), trades with its own costs, and the portfolio equity is the sum of
the sleeves on the union of their bars, each sleeve carried forward over the other's closed
hours.

Conventions (see also :mod:`mlengine.backtest._core` and :mod:`mlengine.backtest.costs`):

* A decision at bar ``t`` is made at its close and filled at the open of ``t + 1``; the last
  bar's decision is never filled. Equity is marked at each close; bar 0 holds the capital.
* Signals are a DataFrame on exactly the bars' index, in one of two forms:

  - ``position``: target exposure in [-1, 1] (signed notional / sleeve equity). The engine
    trades at the next open when the decided target changes; with ``rebalance_threshold``
    it instead rebalances whenever the target differs from the current exposure by more
    than the threshold (a sign change or a flat target always trades). Between trades the
    units are held, so the exposure drifts with the price.
  - order intents: ``side`` (-1/0/+1) and optional ``size`` (fraction of equity in (0, 1],
    default 1), ``stop_loss`` / ``take_profit`` (absolute prices, NaN = none), ``max_bars``
    (0/NaN = none) and ``exit`` (bool: close at the next open). An intent opens at the next
    open when the sleeve is flat at the decision; while a position is open, an intent on
    the same side is ignored (no pyramiding, levels unchanged) and one on the opposite side
    reverses (exit "signal", then the new entry with its own levels). Levels are checked
    from the entry bar on: a level crossed at a bar's open fills at that open (a gap), else
    the stop is checked before the target (both in one bar: the stop). ``max_bars=m`` exits
    at the open ``m`` bars after the entry (reason "time").
* Positions still open at the last bar are closed at its close (reason "end", costs paid);
  the last row of ``position`` is therefore 0. ``position`` holds the units at each close.
  A sleeve whose equity is not positive at an open is liquidated and trades no more.
* Ledger prices are fill prices, spread and slippage included (the ``slippage`` column
  says how much that was); ``pnl = side * size * (exit_price - entry_price) - fees`` and
  the pnl of all rows adds up to the final equity minus the capital. ``bars_held`` counts
  the bars the position was held in; ``exit_time`` is the stamp of the exit bar.
* Timestamps may be tz-aware or naive (taken as UTC); the loop itself runs on NumPy arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlengine.backtest import _core
from mlengine.backtest._core import BacktestInputError
from mlengine.backtest._inputs import (
    asset_pairs,
    check_bars,
    check_signals,
    frozen,
    intent_inputs,
    per_symbol,
    target_inputs,
    to_ns,
)
from mlengine.backtest.costs import CostModel
from mlengine.backtest.sizing import (
    Sizing,
    bars_market,
    bars_timeframe,
    resolve_sizing,
)
from mlengine.data.calendar import periods_per_year

if TYPE_CHECKING:
    from mlengine.backtest.metrics import Metrics

__all__ = [
    "DEFAULT_COSTS",
    "BacktestConfig",
    "BacktestInputError",
    "BacktestResult",
    "run_backtest",
]

#: Deliberately not free: 2 bps commission, 2 bps spread, 1 bp slippage (8 bps a round
#: trip). Set the venue's own costs.
DEFAULT_COSTS = CostModel(commission_bps=2.0, spread_bps=2.0, slippage_bps=1.0)

TRADE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "side",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "size",
    "fees",
    "slippage",
    "pnl",
    "return",
    "bars_held",
    "exit_reason",
)


@functools.lru_cache(maxsize=64)
def _categories(labels: tuple[str, ...]) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(list(labels))


@dataclass(frozen=True)
class BacktestConfig:
    """The settings a backtest ran with."""

    capital: float
    costs: dict[str, CostModel]
    allocation: dict[str, float]
    modes: dict[str, str]
    markets: dict[str, str]
    timeframe: str
    periods_per_year: float
    sizing: Sizing | None = None
    rebalance_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe settings."""
        out = asdict(self)
        out["sizing"] = (
            None if self.sizing is None else {"rule": type(self.sizing).__name__, **out["sizing"]}
        )
        return out


@dataclass(frozen=True)
class BacktestResult:
    """Per-bar series (index = bar stamps, the union over assets) and the trade ledger.

    ``equity``/``cash``: the portfolio at each close; ``position``: units per symbol at each
    close; ``exposure``: signed notional / portfolio equity per symbol; ``signal``: the
    exposure decided at each close for the next bar (0 where the symbol has no bar);
    ``close``: close per symbol (NaN where it has no bar); ``sleeve_equity``: each sleeve's
    equity, carried forward; ``trades``: one row per round trip (columns
    :data:`TRADE_COLUMNS`; ``symbol`` and ``exit_reason`` categorical).
    """

    equity: pd.Series
    cash: pd.Series
    position: pd.DataFrame
    exposure: pd.DataFrame
    signal: pd.DataFrame
    close: pd.DataFrame
    trades: pd.DataFrame
    periods_per_year: float
    config: BacktestConfig
    sleeve_equity: pd.DataFrame = field(repr=False)

    @property
    def net_exposure(self) -> pd.Series:
        return self.exposure.sum(axis=1).rename("net_exposure")

    @property
    def returns(self) -> pd.Series:
        eq = self.equity.to_numpy()
        r = np.empty(eq.size)  # one array, no temporaries
        r[:1] = 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(eq[1:], eq[:-1], out=r[1:])
        r[1:] -= 1.0
        return pd.Series(r, index=self.equity.index, name="returns", copy=False)

    @cached_property
    def metrics(self) -> Metrics:
        from mlengine.backtest.metrics import compute_metrics

        return compute_metrics(self)


# --- one sleeve --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sleeve:
    symbol: str
    index: pd.DatetimeIndex
    close: np.ndarray
    cash: np.ndarray
    units: np.ndarray
    equity: np.ndarray
    signal: np.ndarray
    exposure: np.ndarray
    trades: pd.DataFrame
    capital: float
    mode: str
    close_series: pd.Series


def _run_sleeve(
    symbol: str,
    bars: pd.DataFrame,
    checked: tuple[pd.DatetimeIndex, list[np.ndarray]],
    signals: object,
    *,
    costs: CostModel,
    sizing: Sizing | None,
    capital: float,
    ppy: float,
    threshold: float | None,
    symbols: list[str],
) -> _Sleeve:
    who = repr(symbol)
    index, (o, h, lo, c) = checked
    sig, mode = check_signals(signals, index, who)
    has_pos = mode == "target"
    empty = np.empty(0)
    n = len(index)
    if has_pos:
        pos = target_inputs(sig, index, who)
        if sizing is not None:
            m = sizing.magnitude(bars, sig, np.sign(pos), ppy)
            pos = np.clip(pos * m, -1.0, 1.0)
        cap = int(np.count_nonzero(pos[1:] != pos[:-1])) + 3
        if threshold is not None:
            cap = max(cap, n // 16)  # a first guess: the kernel asks for more if needed
        args = (_core.MODE_TARGET, pos, -1.0 if threshold is None else threshold)
        intents: tuple[np.ndarray, ...] = (empty,) * 6
    else:
        it = intent_inputs(sig, index, c, who)
        if sizing is not None:
            m = sizing.magnitude(bars, sig, it["side"], ppy)
            if len(it["size"]):
                m *= it["size"]  # in place: ``m`` is ours, a fresh array
            it["size"] = np.minimum(m, 1.0, out=m)
        cap = int(np.count_nonzero(it["side"])) + 3
        args = (_core.MODE_INTENT, empty, -1.0)
        intents = tuple(it.values())
    inputs = [frozen(a) for a in (o, h, lo, c, args[1], *intents, costs.kernel_args())]
    state, out = _core.new_state(float(capital)), np.empty((_core.N_OUT, n))
    ledger = np.empty((cap + _core.ROWS_PER_BAR, _core.N_LEDGER))
    simulate: Any = _core.simulate  # a numba dispatcher
    t = nrow = 0
    while t < n:  # resumes with a larger ledger when the kernel runs out of rows
        if t:
            ledger = np.concatenate([ledger, np.empty_like(ledger)])
        t, nrow = simulate(
            *inputs[:4], args[0], inputs[4], args[2], *inputs[5:], state, out, ledger, nrow, t
        )
    trades = _ledger_frame(symbol, index, ledger[:nrow], symbols)
    cash, units, equity, decided, exposure = out
    return _Sleeve(
        symbol,
        index,
        c,
        cash,
        units,
        equity,
        decided,
        exposure,
        trades,
        capital,
        mode,
        bars["close"].rename(symbol),
    )


def _ledger_frame(
    symbol: str, index: pd.DatetimeIndex, led: np.ndarray, symbols: list[str]
) -> pd.DataFrame:
    cols = dict(zip(_core.LEDGER_COLUMNS, led.T, strict=True))
    size, eprice = cols["size"], cols["entry_price"]
    pnl = cols["side"] * size * (cols["exit_price"] - eprice) - cols["fees"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = pnl / (size * eprice)
    return pd.DataFrame(
        {
            "symbol": pd.Categorical.from_codes(
                np.full(len(led), symbols.index(symbol)),
                dtype=_categories(tuple(symbols)),
                validate=False,
            ),
            "side": cols["side"].astype(np.int64),
            "entry_time": index.take(cols["entry_idx"].astype(np.int64)),
            "exit_time": index.take(cols["exit_idx"].astype(np.int64)),
            "entry_price": eprice,
            "exit_price": cols["exit_price"],
            "size": size,
            "fees": cols["fees"],
            "slippage": cols["slippage"],
            "pnl": pnl,
            "return": ret,
            "bars_held": cols["bars_held"].astype(np.int64),
            "exit_reason": pd.Categorical.from_codes(
                cols["reason"].astype(np.int64), dtype=_categories(_core.REASONS), validate=False
            ),
        },
        copy=False,
    )


# --- the portfolio -----------------------------------------------------------------------------


def _carry(
    sleeves: list[_Sleeve],
    index: pd.DatetimeIndex,
    idle: float,
    per: dict[str, dict[str, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the sleeves on ``index``, each carried forward over bars it does not have;
    fills ``per`` with the per-symbol arrays; returns total equity and cash."""
    equity = np.full(len(index), idle)
    cash = equity.copy()
    stamps = to_ns(index)
    for s in sleeves:
        own = to_ns(s.index)
        loc = np.searchsorted(own, stamps, side="right") - 1
        before = loc < 0
        at = np.maximum(loc, 0)
        present = ~before & (own[at] == stamps)
        eq = np.where(before, s.capital, s.equity[at])
        equity += eq
        cash += np.where(before, s.capital, s.cash[at])
        units = np.where(before, 0.0, s.units[at])
        per[s.symbol] = {
            "eq": eq,
            "units": units,
            "notional": units * s.close[at],
            "close": np.where(present, s.close[at], np.nan),
            "signal": np.where(present, s.signal[at], 0.0),
        }
    ruined = equity <= 0
    for v in per.values():
        v["exposure"] = v.pop("notional") / np.where(ruined, 1.0, equity)
        v["exposure"][ruined] = 0.0
    return equity, cash


def _union_index(sleeves: list[_Sleeve]) -> pd.DatetimeIndex:
    if len(sleeves) == 1:
        return sleeves[0].index
    aware = {s.index.tz is not None for s in sleeves}
    if len(aware) > 1:
        raise BacktestInputError("sleeves mix tz-aware and naive bar indexes")
    ns = np.unique(np.concatenate([to_ns(s.index) for s in sleeves]))
    idx = pd.DatetimeIndex(ns.view("datetime64[ns]"), name="ts")
    return idx.tz_localize("UTC") if aware.pop() else idx


def _assemble(sleeves: list[_Sleeve], config: BacktestConfig, idle: float) -> BacktestResult:
    index = _union_index(sleeves)
    per: dict[str, dict[str, np.ndarray]] = {}
    if len(sleeves) == 1 and idle == 0:
        s = sleeves[0]
        equity, cash = s.equity, s.cash
        per[s.symbol] = {"units": s.units, "signal": s.signal, "exposure": s.exposure}
    else:
        equity, cash = _carry(sleeves, index, idle, per)

    columns = pd.Index(list(per))

    def frame(key: str) -> pd.DataFrame:
        values = [v[key] for v in per.values()]
        table = values[0][:, None] if len(values) == 1 else np.column_stack(values)
        return pd.DataFrame(table, index=index, columns=columns, copy=False)

    equity_series = pd.Series(equity, index=index, name="equity", copy=False)
    if len(per) == 1 and idle == 0:  # pandas shares the data until one side is written
        close = sleeves[0].close_series.to_frame()
        sleeve_equity = equity_series.to_frame(sleeves[0].symbol)
    else:
        close, sleeve_equity = frame("close"), frame("eq")
    trades = sleeves[0].trades
    if len(sleeves) > 1:
        trades = pd.concat([s.trades for s in sleeves], ignore_index=True)
        trades = trades.sort_values(["entry_time", "symbol"], kind="stable", ignore_index=True)
    return BacktestResult(
        equity=equity_series,
        cash=pd.Series(cash, index=index, name="cash", copy=False),
        position=frame("units"),
        exposure=frame("exposure"),
        signal=frame("signal"),
        close=close,
        trades=trades,
        periods_per_year=config.periods_per_year,
        config=config,
        sleeve_equity=sleeve_equity,
    )


def run_backtest(
    bars: pd.DataFrame
    | Mapping[str, tuple[pd.DataFrame, pd.DataFrame]]
    | Sequence[tuple[pd.DataFrame, pd.DataFrame]],
    signals: pd.DataFrame | None = None,
    *,
    costs: CostModel | Mapping[str, CostModel] = DEFAULT_COSTS,
    sizing: Sizing | str | None = None,
    capital: float = 100_000.0,
    allocation: Mapping[str, float] | None = None,
    market: str | Mapping[str, str] | None = None,
    rebalance_threshold: float | None = None,
) -> BacktestResult:
    """Backtest ``signals`` on ``bars`` (one asset), or several ``(bars, signals)`` pairs.

    ``costs``, ``market`` may be given per symbol; ``allocation`` maps symbols to shares of
    ``capital`` (sum <= 1, the rest stays in cash). ``sizing`` scales the signals (see
    :mod:`mlengine.backtest.sizing`); ``rebalance_threshold`` applies to ``position``
    signals only. ``market`` defaults to ``bars.attrs["market"]``, else it is inferred from
    the timestamps. Bad input raises :class:`BacktestInputError`.
    """
    pairs = asset_pairs(bars, signals)
    symbols = list(pairs)
    if isinstance(capital, bool) or not isinstance(capital, int | float):
        raise BacktestInputError(f"capital must be a number, got {capital!r}")
    if not (math.isfinite(capital) and capital > 0):
        raise BacktestInputError(f"capital must be positive and finite, got {capital!r}")
    if rebalance_threshold is not None and not (0 <= rebalance_threshold < 2):
        raise BacktestInputError(
            f"rebalance_threshold must be in [0, 2), got {rebalance_threshold}"
        )
    rule = resolve_sizing(sizing)
    cost_map = per_symbol(costs, symbols, "costs", CostModel)
    for sym, cm in cost_map.items():
        cm.check(f"costs of {sym!r}")
    weights = per_symbol(
        allocation if allocation is not None else 1.0 / len(symbols),
        symbols,
        "allocation",
        (int, float),
    )
    if any(not (math.isfinite(w) and w >= 0) for w in weights.values()):
        raise BacktestInputError(f"allocation weights must be finite and >= 0, got {weights}")
    if sum(weights.values()) > 1 + 1e-9:
        raise BacktestInputError(f"allocation sums to {sum(weights.values())} > 1")
    markets_in = per_symbol(market, symbols, "market", (str, type(None)))
    checked = {sym: check_bars(b, repr(sym)) for sym, (b, _) in pairs.items()}
    frames = {sym: b for sym, (b, _) in pairs.items() if isinstance(b, pd.DataFrame)}
    markets = {sym: bars_market(frames[sym], markets_in[sym]) for sym in symbols}
    timeframes = {sym: bars_timeframe(frames[sym]) for sym in symbols}
    if len(set(timeframes.values())) > 1:
        raise BacktestInputError(
            f"assets have different timeframes: { {k: v.name for k, v in timeframes.items()} }"
        )
    ppys = {sym: periods_per_year(markets[sym], timeframes[sym]) for sym in symbols}
    sleeves = [
        _run_sleeve(
            sym,
            frames[sym],
            checked[sym],
            s,
            costs=cost_map[sym],
            sizing=rule,
            capital=capital * weights[sym],
            ppy=ppys[sym],
            threshold=rebalance_threshold,
            symbols=symbols,
        )
        for sym, (b, s) in pairs.items()
    ]
    config = BacktestConfig(
        capital=float(capital),
        costs=cost_map,
        allocation={k: float(v) for k, v in weights.items()},
        modes={s.symbol: s.mode for s in sleeves},
        markets=markets,
        timeframe=next(iter(timeframes.values())).name,
        periods_per_year=max(ppys.values()),
        sizing=rule,
        rebalance_threshold=rebalance_threshold,
    )
    idle = capital * (1.0 - sum(weights.values()))
    return _assemble(sleeves, config, max(idle, 0.0))
