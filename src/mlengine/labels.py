"""Labels: what the market did after each bar, over a known horizon.

Every label function returns :class:`Labels`: ``values``, a float64 Series on the bars'
index (NaN where the label is unknown), ``horizon``, the number of bars it looks ahead, and
``info``, a frame of details (forward return, barrier levels, touch time). The label of bar
``t`` uses bars ``<= t + horizon`` and nothing later: the walk-forward splitter purges
``horizon`` bars between a training and a test window. The last ``horizon`` labels are
always NaN (their future is not in the data), as are labels whose ATR is still warming up.

* :func:`direction` — the sign of ``close[t + h] / close[t] - 1``, with an optional dead
  zone (bps or ATR multiples): inside it the label is 0, a *flat* class, not NaN, so that
  "moved too little" stays apart from "unknown".
* :func:`triple_barrier` — +1 if the upper (profit-take) barrier is touched first within
  ``h`` bars, -1 if the lower (stop) barrier is, 0 if neither (the time barrier).
* :func:`breakout` — within ``h`` bars, does price leave the last ``N``-bar range by at
  least ``k`` ATR, and which way (0: it does not).

Barriers are touched by the bars' highs and lows (a gap through a barrier counts at that
bar). When both barriers lie inside one bar, its path inside the bar is unknown: the
triple barrier assumes the stop came first (the engine's convention); a breakout takes the
side of that bar's close against the middle of the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
import talib
from numba import njit

from mlengine.data.schema import MLEngineError
from mlengine.features.registry import check_bars
from mlengine.features.volatility import atr

__all__ = ["LabelError", "Labels", "breakout", "direction", "triple_barrier"]

_BOTH = 2.0  # side code of a bar that touches both barriers


class LabelError(MLEngineError, ValueError):
    """Bad label parameters."""


@dataclass(frozen=True, eq=False)
class Labels:
    """Labels of one kind on a bar index.

    ``values``: float64 in {-1, 0, +1}, NaN where unknown. ``horizon``: bars of
    look-ahead (label ``t`` uses bars ``<= t + horizon``). ``info``: per-bar details on
    the same index.
    """

    name: str
    values: pd.Series
    horizon: int
    info: pd.DataFrame


def direction(
    bars: pd.DataFrame,
    horizon: int,
    *,
    dead_zone: float = 0.0,
    unit: str = "bps",
    atr_window: int = 14,
) -> Labels:
    """The direction of the close over ``horizon`` bars, with an optional dead zone.

    With ``r = close[t + h] / close[t] - 1`` and the threshold ``d`` (``dead_zone`` basis
    points, or ``dead_zone`` times ATR(``atr_window``) at ``t`` over ``close[t]``): +1 if
    ``r > d``, -1 if ``r < -d``, else 0. ``info``: ``ret`` (``r``) and ``threshold``.
    """
    h = _int("horizon", horizon)
    dz = _number("dead_zone", dead_zone, allow_zero=True)
    _choice("unit", unit, ("bps", "atr"))
    close = check_bars(bars)["close"].to_numpy()
    n = len(close)
    ret = np.full(n, np.nan)
    if n > h:
        ret[: n - h] = close[h:] / close[: n - h] - 1.0
    if dz == 0.0:
        thr = np.zeros(n)
    elif unit == "bps":
        thr = np.full(n, dz * 1e-4)
    else:
        thr = dz * _atr(bars, atr_window) / close
    label = np.where(ret > thr, 1.0, np.where(ret < -thr, -1.0, 0.0))
    label[np.isnan(ret) | np.isnan(thr)] = np.nan
    name = f"direction_{h}"
    info = pd.DataFrame({"ret": ret, "threshold": thr}, index=bars.index)
    return Labels(name, pd.Series(label, index=bars.index, name=name), h, info)


def triple_barrier(
    bars: pd.DataFrame,
    horizon: int,
    *,
    take_profit: float = 2.0,
    stop_loss: float = 1.0,
    unit: str = "atr",
    atr_window: int = 14,
) -> Labels:
    """Which barrier the price touches first after bar ``t``, within ``horizon`` bars.

    Barriers from ``close[t]``: upper ``close + take_profit * ATR``, lower ``close -
    stop_loss * ATR`` (``unit="atr"``, ATR(``atr_window``) at ``t``), or ``close * (1 +
    take_profit)`` and ``close * (1 - stop_loss)`` (``unit="return"``). Bars ``t+1 ..
    t+h`` touch the upper barrier when ``high >= upper``, the lower when ``low <= lower``.
    +1 (upper first), -1 (lower first, or both in one bar), 0 (neither: the time barrier).
    ``info``: ``upper``, ``lower``, ``touch_bars`` (bars after ``t`` to the touch; ``h``
    at the time barrier) and ``touch`` (its timestamp).
    """
    h = _int("horizon", horizon)
    pt = _number("take_profit", take_profit)
    sl = _number("stop_loss", stop_loss)
    _choice("unit", unit, ("atr", "return"))
    close = check_bars(bars)["close"].to_numpy()
    if unit == "atr":
        a = _atr(bars, atr_window)
        upper, lower = close + pt * a, close - sl * a
    else:
        upper, lower = close * (1.0 + pt), close * (1.0 - sl)
    side, steps = _first_touch(bars["high"].to_numpy(), bars["low"].to_numpy(), upper, lower, h)
    label = np.where(side == _BOTH, -1.0, side)
    name = f"triple_barrier_{h}"
    info = _touch_info(bars, steps, {"upper": upper, "lower": lower})
    return Labels(name, pd.Series(label, index=bars.index, name=name), h, info)


def breakout(
    bars: pd.DataFrame,
    horizon: int,
    *,
    range_window: int = 20,
    k: float = 0.5,
    atr_window: int = 14,
) -> Labels:
    """Whether, and which way, price leaves the recent range within ``horizon`` bars.

    The range at ``t`` is the highest high and lowest low of the last ``range_window``
    bars (``t`` included); a breakout up is a bar in ``t+1 .. t+h`` with ``high >= range
    high + k * ATR``, down with ``low <= range low - k * ATR`` (ATR(``atr_window``) at
    ``t``). +1 / -1 for the first breakout, 0 for none; a bar that breaks both ways takes
    the side of its close against the range's middle (0 if on it). ``info``: ``upper``,
    ``lower`` (the breakout levels), ``touch_bars`` and ``touch`` (NaN / NaT: none).
    """
    h = _int("horizon", horizon)
    n_range = _int("range_window", range_window, minimum=2)
    kk = _number("k", k, allow_zero=True)
    high, low, close = (check_bars(bars)[c].to_numpy() for c in ("high", "low", "close"))
    a = _atr(bars, atr_window)
    top = talib.MAX(high, timeperiod=n_range)
    bottom = talib.MIN(low, timeperiod=n_range)
    upper, lower = top + kk * a, bottom - kk * a
    side, steps = _first_touch(high, low, upper, lower, h)
    both = np.flatnonzero(side == _BOTH)
    if both.size:
        at = both + steps[both].astype(np.int64)
        side[both] = np.sign(close[at] - 0.5 * (top[both] + bottom[both]))
    steps[side == 0.0] = np.nan
    name = f"breakout_{h}"
    info = _touch_info(bars, steps, {"upper": upper, "lower": lower})
    return Labels(name, pd.Series(side, index=bars.index, name=name), h, info)


# --- internals -------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _first_touch(
    high: np.ndarray, low: np.ndarray, upper: np.ndarray, lower: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per bar ``t``: the side of the first touch in bars ``t+1 .. t+horizon`` (1 upper,
    -1 lower, 2 both in one bar, 0 none) and the bars to it (``horizon`` for none); NaN
    where a barrier is NaN or the window passes the end.

    A loop rather than a (bars x horizon) window matrix: it stops at the first touch and
    needs no memory beyond its outputs.
    """
    n = high.shape[0]
    side = np.full(n, np.nan)
    steps = np.full(n, np.nan)
    for t in range(n - horizon):
        up, dn = upper[t], lower[t]
        if np.isnan(up) or np.isnan(dn):
            continue
        side[t] = 0.0
        steps[t] = horizon
        for j in range(1, horizon + 1):
            hit_up = high[t + j] >= up
            hit_dn = low[t + j] <= dn
            if hit_up or hit_dn:
                side[t] = 2.0 if (hit_up and hit_dn) else (1.0 if hit_up else -1.0)
                steps[t] = j
                break
    return side, steps


def _touch_info(
    bars: pd.DataFrame, steps: np.ndarray, levels: dict[str, np.ndarray]
) -> pd.DataFrame:
    known = np.flatnonzero(~np.isnan(steps))
    touch = pd.Series(pd.NaT, index=bars.index, dtype=bars.index.dtype)
    touch.iloc[known] = bars.index[known + steps[known].astype(np.int64)]
    return pd.DataFrame({**levels, "touch_bars": steps, "touch": touch}, index=bars.index)


def _atr(bars: pd.DataFrame, window: int) -> np.ndarray:
    w = _int("atr_window", window)
    return atr(bars, window=w)[f"atr_{w}"].to_numpy()


def _int(name: str, value: object, minimum: int = 1) -> int:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or cast(int, value) < minimum:
        raise LabelError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(cast(int, value))


def _number(name: str, value: object, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    x = float(cast(float, value)) if ok else math.nan
    if not (math.isfinite(x) and (x > 0.0 or (allow_zero and x == 0.0))):
        bound = ">= 0" if allow_zero else "> 0"
        raise LabelError(f"{name} must be a finite number {bound}, got {value!r}")
    return x


def _choice(name: str, value: object, options: tuple[str, ...]) -> None:
    if value not in options:
        raise LabelError(f"{name} must be one of {', '.join(options)}, got {value!r}")
