"""Decisions over a period, replayed in the backtester without asking the model again.

:func:`decide_entries` asks a :class:`mlengine.llm.decision.DecisionMaker` for a decision at
every bar where a signal rule on the ensemble's probability wants to open or turn a position
(the model judges the ensemble's entries; asking at every bar would cost a model call per
bar for no new information), each from a context built with bars up to that bar only, and
logs them. :func:`decision_intents` turns logged decisions back into order intents (side,
stop-loss, take-profit, holding time), so that :func:`ablation` can compare, on the same
bars and costs, the ensemble's own signal with the ensemble filtered by the decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlengine.backtest.costs import CostModel
from mlengine.backtest.engine import DEFAULT_COSTS, BacktestResult, run_backtest
from mlengine.backtest.signals import SignalRule
from mlengine.backtest.walkforward import backtest_predictions
from mlengine.llm.decision import DecisionMaker, DecisionRecord
from mlengine.llm.formatter import build_context
from mlengine.llm.schema import LLMError
from mlengine.llm.signal_log import log_decision

if TYPE_CHECKING:
    from mlengine.data.store import Store

__all__ = ["ablation", "decide_entries", "decision_intents", "entry_bars"]

_SIDE = {"BUY": 1.0, "SELL": -1.0, "HOLD": 0.0}


def entry_bars(position: pd.Series) -> pd.DatetimeIndex:
    """Bars where the target position opens or turns (flat → long/short, long ↔ short)."""
    side = np.sign(position.to_numpy(dtype=np.float64))
    before = np.r_[0.0, side[:-1]]
    return pd.DatetimeIndex(position.index[(side != 0) & (side != before)])


def decide_entries(
    maker: DecisionMaker,
    bars: pd.DataFrame,
    *,
    strategies: Mapping[str, pd.DataFrame],
    ensemble: pd.DataFrame,
    to_signal: SignalRule,
    store: Store | None = None,
    progress: bool = True,
) -> list[DecisionRecord]:
    """A decision at each entry bar of ``to_signal`` on ``ensemble`` (``p_up`` and gate
    weights, on the bars it covers), logged to ``store`` when given."""
    oos = bars.loc[ensemble.index]
    position = pd.Series(to_signal(ensemble, oos), index=ensemble.index, dtype=np.float64)
    when = entry_bars(position)
    records = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    console = Console(stderr=True)
    with Progress(*columns, TimeElapsedColumn(), console=console, disable=not progress) as bar:
        task = bar.add_task("decisions at the ensemble's entries", total=len(when))
        for ts in when:
            context = build_context(bars, strategies=strategies, ensemble=ensemble, ts=ts)
            record = maker.decide(context)
            if store is not None:
                log_decision(store, record.to_log())
            records.append(record)
            bar.advance(task)
    return records


def decision_intents(decisions: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
    """Order intents on ``bars``' index from logged decisions (``ts``, ``action``,
    ``stop_loss``, ``take_profit``, ``horizon``, ``valid``): a valid BUY or SELL opens at the
    next open with its levels and is closed after ``horizon`` bars at the latest; HOLD,
    invalid rows and bars without a decision do nothing."""
    missing = {"ts", "action", "stop_loss", "take_profit", "horizon", "valid"} - set(decisions)
    if missing:
        raise LLMError(f"decisions lack the column(s) {sorted(missing)}")
    out = pd.DataFrame(
        {
            "side": 0.0,
            "stop_loss": np.nan,
            "take_profit": np.nan,
            "max_bars": np.nan,
        },
        index=bars.index,
    )
    rows = decisions[decisions["valid"].astype(bool) & decisions["action"].isin(("BUY", "SELL"))]
    ts = pd.DatetimeIndex(pd.to_datetime(rows["ts"], utc=True))
    unknown = ~ts.isin(bars.index)
    if unknown.any():
        raise LLMError(
            f"a decision at {ts[unknown][0]} is not on a bar of {bars.attrs.get('symbol')}"
        )
    if ts.has_duplicates:
        raise LLMError(f"two decisions at {ts[ts.duplicated()][0]}: replay needs one per bar")
    out.loc[ts, "side"] = rows["action"].map(_SIDE).to_numpy(dtype=np.float64)
    out.loc[ts, "stop_loss"] = rows["stop_loss"].to_numpy(dtype=np.float64)
    out.loc[ts, "take_profit"] = rows["take_profit"].to_numpy(dtype=np.float64)
    out.loc[ts, "max_bars"] = rows["horizon"].to_numpy(dtype=np.float64)
    return out


def ablation(
    bars: pd.DataFrame,
    ensemble: pd.DataFrame,
    decisions: pd.DataFrame,
    *,
    to_signal: SignalRule,
    costs: CostModel = DEFAULT_COSTS,
    **backtest: Any,
) -> dict[str, BacktestResult]:
    """The ensemble's own signal and the replayed decisions, backtested on the same bars
    (those ``ensemble`` covers) with the same costs: ``{"ensemble": ..., "ensemble + llm":
    ...}``. Of several logged decisions on one bar the last one counts."""
    oos = bars.loc[ensemble.index]
    _, alone = backtest_predictions(ensemble, oos, to_signal=to_signal, costs=costs, **backtest)
    stamps = pd.to_datetime(decisions["ts"], utc=True)
    mine = decisions[stamps.isin(oos.index).to_numpy()]
    latest = mine.loc[~pd.to_datetime(mine["ts"], utc=True).duplicated(keep="last").to_numpy()]
    intents = decision_intents(latest, oos)
    filtered = run_backtest(oos, intents, costs=costs, **backtest)
    return {"ensemble": alone, "ensemble + llm": filtered}
