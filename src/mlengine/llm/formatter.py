"""The decision context: what the prompt may say about one decision bar, and its text.

:func:`build_context` gathers, from data available at the close of the decision bar ``ts``
and nothing later: the symbol and timeframe, the last price (the bar's close), the Wilder
ATR at ``ts`` (:func:`mlengine.features.volatility.atr` on the bars up to ``ts``), the last
``n_recent`` bars, each strategy's ``p_up`` and numeric diagnostics at ``ts``, the ensemble's
calibrated probability and the gate's weights (``w.<strategy>`` columns). Rows after ``ts``
are never read, so changing or dropping them changes neither the context nor its text.

:func:`render_context` writes the context as compact, deterministic text: names sorted,
every number in a fixed format (prices to the instrument's precision inferred from the
bars, other numbers to 4 significant digits), so the same context always gives the same
bytes and therefore the same prompt hash. Only market data goes into it: no file names,
no settings, nothing of the bar frame's ``attrs`` beyond symbol and timeframe.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from mlengine.data.schema import OHLCV, BarDataError, Timeframe, TimeframeError, check_bar_frame
from mlengine.features.volatility import atr as atr_feature
from mlengine.llm.schema import DecisionContext, LLMError, StrategyView

__all__ = [
    "ContextError",
    "build_context",
    "format_number",
    "format_price",
    "price_decimals",
    "render_context",
]

#: Decimals tried when inferring an instrument's price precision from its bars.
MAX_PRICE_DECIMALS = 8
#: Significant digits of every number that is not a price.
SIGNIFICANT = 4
#: Strategy and diagnostic names allowed into the prompt (no spaces, no line breaks).
_NAME = re.compile(r"^[\w.:+-]{1,64}$")
#: Tokens of a diagnostic name that mark it as a price level (rendered as a price).
_PRICE_TOKENS = frozenset(
    {"price", "level", "open", "high", "low", "close", "entry", "stop", "target"}
)
_SKIPPED = frozenset({"p_up", "fold"})


class ContextError(LLMError, ValueError):
    """The inputs cannot make a decision context (missing bar, row, column or history)."""


def _as_utc(value: object) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ContextError(f"ts {value!r} is not a time: {err}") from None
    if ts is pd.NaT:
        raise ContextError("ts is NaT: a decision bar time is needed")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ContextError(
            f"{what} name {name!r} is not allowed in a prompt (1-64 letters, digits or _ . : + -)"
        )
    return name


def _row_at(frame: pd.DataFrame, ts: pd.Timestamp, what: str) -> pd.Series:
    """The single row of ``frame`` at ``ts``; errors name ``what`` and the time."""
    if not isinstance(frame, pd.DataFrame):
        raise ContextError(f"{what} is a {type(frame).__name__}, not a DataFrame")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise ContextError(f"{what} is not indexed by bar time (DatetimeIndex)")
    if "p_up" not in frame.columns:
        raise ContextError(f"{what} has no 'p_up' column; columns: {list(frame.columns)}")
    index = frame.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    pos = np.flatnonzero(index == ts)
    if pos.size == 0:
        raise ContextError(f"{what} has no row at the decision bar {ts}")
    if pos.size > 1:
        raise ContextError(f"{what} has {pos.size} rows at the decision bar {ts}")
    return frame.iloc[int(pos[0])]


def _probability(value: object, what: str, ts: pd.Timestamp) -> float:
    try:
        p = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ContextError(f"{what} p_up at {ts} is not a number: {value!r}") from None
    if not math.isfinite(p):
        raise ContextError(f"{what} p_up at {ts} is {p} (no prediction at the decision bar)")
    if not 0.0 <= p <= 1.0:
        raise ContextError(f"{what} p_up at {ts} is {p}, outside [0, 1]")
    return p


def _numeric(row: pd.Series, skip: Iterable[str] = ()) -> dict[str, float]:
    """Finite numeric values of ``row`` (bools as 0/1), non-numeric and NaN dropped."""
    skipped = set(skip)
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in skipped:
            continue
        if not isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
            continue
        number = float(value)
        if math.isfinite(number):
            out[_check_name(key, "diagnostic")] = number
    return dict(sorted(out.items()))


def build_context(
    bars: pd.DataFrame,
    *,
    strategies: Mapping[str, pd.DataFrame],
    ensemble: pd.DataFrame | None = None,
    ts: pd.Timestamp | None = None,
    n_recent: int = 12,
    atr_window: int = 14,
) -> DecisionContext:
    """The :class:`DecisionContext` of the bar ``ts`` (default: the last bar).

    ``strategies`` maps a strategy's name to its prediction frame (``p_up`` plus numeric
    diagnostics, indexed by bar time; a ``fold`` column is skipped); ``ensemble`` is a frame
    with the calibrated ``p_up`` and the gate's ``w.<strategy>`` weights. Only the rows at
    ``ts`` of the prediction frames and the bars up to ``ts`` are read. Raises
    :class:`ContextError` naming what is missing: ``ts`` not in the bars, too few bars for
    the ATR, a frame without ``p_up`` or without a row at ``ts``, a NaN ``p_up`` at ``ts``.
    """
    if isinstance(n_recent, bool) or not isinstance(n_recent, int) or n_recent < 1:
        raise ContextError(f"n_recent must be an integer >= 1, got {n_recent!r}")
    if isinstance(atr_window, bool) or not isinstance(atr_window, int) or atr_window < 1:
        raise ContextError(f"atr_window must be an integer >= 1, got {atr_window!r}")
    if not isinstance(bars, pd.DataFrame):
        raise ContextError(f"bars is a {type(bars).__name__}, not a bar frame")
    try:
        check_bar_frame(bars)
        timeframe = Timeframe.parse(bars.attrs["timeframe"]).name
    except (BarDataError, TimeframeError) as err:
        raise ContextError(f"bars are not a valid bar frame: {err}") from err
    if len(bars) == 0:
        raise ContextError("bars are empty: no decision bar")
    at = bars.index[-1] if ts is None else _as_utc(ts)
    end = int(bars.index.searchsorted(at, side="right"))
    if end == 0 or bars.index[end - 1] != at:
        raise ContextError(
            f"ts {at} is not a bar of {bars.attrs['symbol']} {timeframe} "
            f"({bars.index[0]} .. {bars.index[-1]})"
        )
    history = bars.iloc[:end]
    if len(history) <= atr_window:
        raise ContextError(
            f"{len(history)} bars up to {at}: the ATR over {atr_window} bars needs at least "
            f"{atr_window + 1}"
        )
    atr_value = float(atr_feature(history, window=atr_window).to_numpy(dtype=np.float64)[-1, 0])
    if not math.isfinite(atr_value) or atr_value <= 0:
        raise ContextError(f"ATR({atr_window}) at {at} is {atr_value}: needs price movement")
    last_price = float(history["close"].iloc[-1])

    views: list[StrategyView] = []
    for name in sorted(strategies):
        _check_name(name, "strategy")
        what = f"strategy {name!r} predictions"
        row = _row_at(strategies[name], at, what)
        views.append(
            StrategyView(
                name=name,
                p_up=_probability(row["p_up"], what, at),
                diagnostics=_numeric(row, _SKIPPED),
            )
        )

    ensemble_p: float | None = None
    weights: dict[str, float] = {}
    if ensemble is not None:
        row = _row_at(ensemble, at, "ensemble predictions")
        ensemble_p = _probability(row["p_up"], "ensemble", at)
        for key, value in _numeric(row).items():
            if key.startswith("w."):
                weights[_check_name(key[2:], "gate weight")] = value
    if not views and ensemble_p is None:
        raise ContextError("no strategy predictions and no ensemble: nothing to decide from")

    recent = history.iloc[-n_recent:][list(OHLCV)].copy()
    recent.attrs = {}
    return DecisionContext(
        symbol=str(bars.attrs["symbol"]),
        timeframe=timeframe,
        ts=at,
        last_price=last_price,
        atr=atr_value,
        recent=recent,
        strategies=tuple(views),
        ensemble_p=ensemble_p,
        gate_weights=dict(sorted(weights.items())),
    )


# --- text ------------------------------------------------------------------------------


def price_decimals(context: DecisionContext) -> int:
    """The instrument's price precision, inferred from the context's prices.

    The fewest decimals (0 to :data:`MAX_PRICE_DECIMALS`) that hold every price of the
    recent bars and the last price exactly (5 for EURUSD quotes such as 1.05236); prices
    with more digits than that get 6 significant digits.
    """
    prices = np.append(
        context.recent[["open", "high", "low", "close"]].to_numpy(), context.last_price
    )
    prices = prices[np.isfinite(prices)]
    if prices.size == 0:
        return MAX_PRICE_DECIMALS
    scale = np.abs(prices)
    for d in range(MAX_PRICE_DECIMALS + 1):
        if np.all(np.abs(np.round(prices, d) - prices) <= 1e-12 * np.maximum(scale, 1.0)):
            return d
    top = float(scale.max())
    magnitude = math.floor(math.log10(top)) if top > 0 else 0
    return int(min(max(5 - magnitude, 0), MAX_PRICE_DECIMALS))


def format_price(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` fixed decimals."""
    return f"{value:.{decimals}f}"


def format_number(value: float) -> str:
    """``value`` to :data:`SIGNIFICANT` significant digits (``-0`` printed as ``0``)."""
    text = f"{value:.{SIGNIFICANT}g}"
    return "0" if text in ("-0", "0") else text


def _percent(value: float) -> str:
    return format_number(100.0 * value) + "%"


def _is_price_name(name: str) -> bool:
    return any(token in _PRICE_TOKENS for token in re.split(r"[_.:+-]", name.lower()))


def render_context(context: DecisionContext) -> str:
    """The context as compact text, identical bytes for an identical context."""
    d = price_decimals(context)
    recent = context.recent
    lines = [
        f"symbol: {context.symbol}",
        f"timeframe: {context.timeframe}",
        f"decision bar: {context.ts.strftime('%Y-%m-%d %H:%M')} UTC (bar open time; "
        "the decision is made at its close)",
        f"last price: {format_price(context.last_price, d)}",
        f"ATR: {format_number(context.atr)} ({_percent(context.atr / context.last_price)} "
        "of the last price)",
        f"recent bars ({len(recent)}, oldest first, times UTC):",
        "time,open,high,low,close,volume",
    ]
    for ts, row in zip(recent.index, recent.itertuples(index=False), strict=True):
        prices = ",".join(format_price(float(v), d) for v in row[:4])
        lines.append(f"{ts.strftime('%Y-%m-%d %H:%M')},{prices},{format_number(float(row[4]))}")
    if len(recent):
        first_open = float(recent["open"].iloc[0])
        summary = [
            f"return {_percent(context.last_price / first_open - 1.0)}",
            f"high {format_price(float(recent['high'].max()), d)}",
            f"low {format_price(float(recent['low'].min()), d)}",
        ]
        closes = recent["close"].to_numpy(dtype=np.float64)
        if closes.size >= 3:
            vol = float(np.std(np.diff(np.log(closes)), ddof=1))
            summary.append(f"realised volatility {_percent(vol)} per bar")
        lines.append("window: " + ", ".join(summary))
    lines.append("strategies (p_up: probability that the price rises over the next bars):")
    for view in context.strategies:
        parts = [f"p_up {format_number(view.p_up)}"]
        for key, value in sorted(view.diagnostics.items()):
            text = format_price(value, d) if _is_price_name(key) else format_number(value)
            parts.append(f"{key} {text}")
        lines.append(f"- {view.name}: " + ", ".join(parts))
    if not context.strategies:
        lines.append("- none")
    if context.ensemble_p is None:
        lines.append("ensemble: none")
    else:
        ensemble = f"ensemble: calibrated p_up {format_number(context.ensemble_p)}"
        if context.gate_weights:
            weights = ", ".join(
                f"{k} {format_number(v)}" for k, v in sorted(context.gate_weights.items())
            )
            ensemble += f"; gate weights: {weights}"
        lines.append(ensemble)
    return "\n".join(lines)
