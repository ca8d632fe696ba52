"""Market-structure features (group ``structure``): swings, BOS, CHoCH, FVG, order blocks.

The detection layer (:func:`swings`, :func:`structure_events`: event tables, each event
stamped at the bar that confirms it) lives in :mod:`mlengine.features._structure` and is
re-exported here. The features below read the state of the same single numba pass at
each bar's close, so a value at bar ``t`` uses events confirmed by ``t`` only (a fractal
swing ``n`` bars after its bar, a gap at its third bar, a mitigation at the bar it
happens): the truncation property holds exactly. They use fractal swings of ``n`` bars
and Wilder's ATR over ``atr_window`` bars (seeded like TA-Lib's ``ATR``, computed in the
pass: the group makes no TA-Lib call). Distances are in ATRs, capped at ``cap`` (also
the value when there is no such zone), so the features are scale-free. Every column is
NaN for the first ``atr_window`` bars. Within one :func:`compute_features` call the pass
runs once per parameter set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from mlengine.features import _structure as ms
from mlengine.features._structure import EVENT_COLUMNS, KINDS, structure_events, swings
from mlengine.features.registry import (
    Columns,
    feature,
    fmt,
    positive_param,
    shared,
    window_param,
)

__all__ = [
    "EVENT_COLUMNS",
    "KINDS",
    "fvg",
    "market_structure",
    "order_block",
    "structure_events",
    "swings",
]


@feature("market_structure")
def market_structure(
    bars: pd.DataFrame, *, n: int = 3, atr_window: int = 14, window: int = 50, eq_tol: float = 0.1
) -> Columns:
    """Trend state, bars since the last BOS / CHoCH and net event counts.

    ``ms_trend_{n}``: +1 after a bullish BOS or CHoCH, -1 after a bearish one, 0 before
    the first; ``ms_since_bos_{n}_{w}``, ``ms_since_choch_{n}_{w}``: bars since the last
    one (0 at its bar), ``w`` when none in the last ``w`` bars; ``ms_bos_net_{n}_{w}``,
    ``ms_choch_net_{n}_{w}``, ``ms_sweep_net_{n}_{w}``: bullish minus bearish events
    confirmed in the last ``w`` bars (bar ``t`` included; sweeps of equal highs / lows
    within ``eq_tol`` ATRs, see :func:`structure_events`).
    """
    w = window_param("market_structure", "window", window)
    st = _state(bars, "market_structure", n, atr_window, eq_tol)
    warm = np.isnan(st[-1])
    cols = {f"ms_trend_{n}": st[ms._TREND].copy()}
    for name, row in (("bos", ms._SINCE_BOS), ("choch", ms._SINCE_CHOCH)):
        cols[f"ms_since_{name}_{n}_{w}"] = np.minimum(st[row], float(w))
    for name, row in (("bos", ms._BOS_NET), ("choch", ms._CHOCH_NET), ("sweep", ms._SWEEP_NET)):
        cols[f"ms_{name}_net_{n}_{w}"] = _window_sum(st[row], w)
    for col in cols.values():
        col[warm] = np.nan
    return cols


@feature("fvg")
def fvg(
    bars: pd.DataFrame, *, atr_window: int = 14, window: int = 50, cap: float = 10.0
) -> Columns:
    """Distance to the nearest unfilled fair value gaps, and the net count of new ones.

    ``fvg_bull_dist_{a}`` (``fvg_bear_dist_{a}``): from the close down (up) to the nearest
    unfilled bullish (bearish) gap, in ATRs, 0 inside one, ``cap`` beyond it or when there
    is none; ``fvg_net_{w}``: bullish minus bearish gaps confirmed in the last ``w`` bars.
    """
    w = window_param("fvg", "window", window)
    st = _state(bars, "fvg", 3, atr_window, 0.1)  # gaps need no swings: share the pass
    return {
        f"fvg_bull_dist_{atr_window}": _in_atr(st[ms._FVG_BULL], st[-1], cap, "fvg"),
        f"fvg_bear_dist_{atr_window}": _in_atr(st[ms._FVG_BEAR], st[-1], cap, "fvg"),
        f"fvg_net_{w}": _masked(_window_sum(st[ms._FVG_NET], w), st[-1]),
    }


@feature("order_block")
def order_block(
    bars: pd.DataFrame, *, n: int = 3, atr_window: int = 14, cap: float = 10.0
) -> Columns:
    """Distance to the nearest unmitigated order blocks.

    ``ob_bull_dist_{n}_{a}`` (``ob_bear_dist_{n}_{a}``): from the close down (up) to the
    nearest unmitigated bullish (bearish) order block, in ATRs, ``cap`` beyond it or when
    there is none (an unmitigated block lies wholly beyond every price since it formed).
    """
    st = _state(bars, "order_block", n, atr_window, 0.1)
    p = f"{n}_{atr_window}"
    return {
        f"ob_bull_dist_{p}": _in_atr(st[ms._OB_BULL], st[-1], cap, "order_block"),
        f"ob_bear_dist_{p}": _in_atr(st[ms._OB_BEAR], st[-1], cap, "order_block"),
    }


# --- helpers -----------------------------------------------------------------------------------


def _state(
    bars: pd.DataFrame, name: str, n: object, atr_window: object, eq_tol: object
) -> np.ndarray:
    """The per-bar state rows of the pass (the ATR last), shared within one call."""
    k = window_param(name, "n", n)
    a = window_param(name, "atr_window", atr_window)
    tol = positive_param(name, "eq_tol", eq_tol)
    return shared(
        bars,
        f"structure_{k}_{a}_{fmt(tol)}",
        lambda: ms.scan(bars, "fractal", k, 2.0, "atr", a, tol)[1],
    )


def _window_sum(x: np.ndarray, w: int) -> np.ndarray:
    """The sum of the last ``w`` values (fewer at the start); exact for small integers."""
    s = np.cumsum(x)
    s[w:] -= s[:-w].copy()
    return s


def _masked(x: np.ndarray, atr: np.ndarray) -> np.ndarray:
    x[np.isnan(atr)] = np.nan
    return x


def _in_atr(dist: np.ndarray, atr: np.ndarray, cap: float, name: str) -> np.ndarray:
    """``min(dist / atr, cap)``; 0 for a zero distance, NaN where the ATR is."""
    return _scale(dist, atr, positive_param(name, "cap", cap))


@njit(cache=True, nogil=True)
def _scale(dist: np.ndarray, atr: np.ndarray, cap: float) -> np.ndarray:
    out = np.empty_like(dist)
    for i in range(dist.shape[0]):
        d, a = dist[i], atr[i]
        if np.isnan(a):
            out[i] = np.nan
        elif d == 0.0:
            out[i] = 0.0
        else:
            out[i] = cap if a == 0.0 else min(d / a, cap)
    return out
