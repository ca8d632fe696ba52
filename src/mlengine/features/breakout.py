"""Breakout features (group ``breakout``): volatility compression and expansion.

They build on the estimators of the ``volatility`` group without repeating its columns:
ATR and realised volatility at a short against a long horizon, where the Bollinger
bandwidth sits in its recent range, the Keltner channel and the Bollinger-inside-Keltner
squeeze, the recent range against ATR and against a longer range, and volume surges. All
are scale-free.

The rolling statistics are TA-Lib's (``ATR``, ``EMA``, ``SMA``, ``STDDEV``, ``MAX``,
``MIN``, ``MINMAX``; the one-bar log returns are the registry's shared intermediate);
the arithmetic after them is one small numba loop per feature that writes its columns
over the TA-Lib arrays it reads (no fresh memory per column), compiled with IEEE division
(``error_model="numpy"``: no zero-division checks, so the loops vectorise; every zero
denominator is selected away explicitly). The loops are elementwise,
so the truncation property holds exactly. Nothing else is shared between features: a
shared array is read-only, and at the defaults the one repeated call is the close's
20-bar standard deviation (``bb_squeeze`` and ``keltner``).

Zero denominators (flat bars, no volume) give a documented finite value, never ``inf``:
a ratio of one quantity at two horizons is 1 when both are 0 (only possible when the
longer window is flat, which makes the shorter one flat too). ATR (Wilder's smoothing)
is 0 only when every bar since the first is flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd
import talib
from numba import njit

from mlengine.features.registry import (
    Columns,
    FeatureError,
    bar_columns,
    feature,
    fmt,
    positive_param,
    window_param,
    windows_param,
)
from mlengine.features.returns import _one_bar_log_returns

__all__ = [
    "atr_ratio",
    "bb_squeeze",
    "keltner",
    "range_compression",
    "rvol_ratio",
    "volume_surge",
]


@feature("atr_ratio")
def atr_ratio(bars: pd.DataFrame, *, short: int = 5, long: int = 50) -> Columns:
    """Short over long ATR (TA-Lib ``ATR``, Wilder): above 1 when the range expands.

    ``atr_ratio_{s}_{l}`` = ``ATR(s) / ATR(l)``; 1 where both are 0. NaN for the first
    ``l`` bars.
    """
    s, lg = _short_long("atr_ratio", short, long, "short")
    out = _atr(bars, s)
    _ratio(out, _atr(bars, lg), 1.0, 1.0)
    return {f"atr_ratio_{s}_{lg}": out}


@feature("rvol_ratio")
def rvol_ratio(bars: pd.DataFrame, *, windows: int | Sequence[int] = (5, 20, 100)) -> Columns:
    """Realised volatility over consecutive horizons: above 1 when it expands.

    For each pair ``a < b`` of consecutive ``windows`` (sorted): ``rvol_ratio_{a}_{b}`` =
    ``rvol_a / rvol_b``, the ``rvol`` of the ``realised_vol`` feature (sample standard
    deviation of the one-bar log returns); 1 where both are 0. NaN for the first ``b``
    bars. Needs at least two windows.
    """
    ws = sorted(windows_param("rvol_ratio", "windows", windows, minimum=2))
    if len(ws) < 2:
        raise FeatureError(f"rvol_ratio: windows must hold at least two windows, got {windows!r}")
    r = _one_bar_log_returns(bars)
    std = [talib.STDDEV(r, timeperiod=w, nbdev=1.0) for w in ws]
    cols = {}
    # ascending: the ratio a/b goes over std a, which no later pair reads
    for (a, num), (b, den) in pairwise(zip(ws, std, strict=True)):
        _ratio(num, den, math.sqrt(a / (a - 1) * (b - 1) / b), 1.0)  # the ddof=1 factors
        cols[f"rvol_ratio_{a}_{b}"] = num
    return cols


@feature("bb_squeeze")
def bb_squeeze(bars: pd.DataFrame, *, window: int = 20, lookback: int = 100) -> Columns:
    """Where the Bollinger bandwidth sits between its lowest and highest of the recent bars.

    With ``width`` the bandwidth of the ``bollinger`` feature over ``window`` bars (its
    ``k`` cancels here) and ``lo``, ``hi`` its extremes over the last ``lookback`` bars:
    ``bb_squeeze_{w}_{n}`` = ``(width - lo) / (hi - lo)`` in [0, 1], 0 at the narrowest
    bands of the last ``n`` bars (a squeeze), 1 at the widest; 0 when ``hi == lo``. NaN
    for the first ``w + n - 2`` bars.
    """
    w = window_param("bb_squeeze", "window", window, minimum=2)
    n = window_param("bb_squeeze", "lookback", lookback, minimum=2)
    (c,) = bar_columns(bars, "close")
    width = talib.STDDEV(c, timeperiod=w, nbdev=1.0)
    _ratio(width, talib.SMA(c, timeperiod=w), 1.0, 0.0)
    lo, hi = talib.MINMAX(width, timeperiod=n)
    _stochastic(width, lo, hi)
    return {f"bb_squeeze_{w}_{n}": width}


@feature("keltner")
def keltner(bars: pd.DataFrame, *, window: int = 20, k: float = 1.5, bb_k: float = 2.0) -> Columns:
    """Keltner channel ``EMA(close, w) ± k ATR(w)`` (TA-Lib ``EMA``, ``ATR``) and the squeeze.

    ``kc_pos_{w}_{k}`` = ``(close - EMA) / (k ATR)``: 0 on the middle line, ±1 on the
    bands; ``kc_squeeze_{w}_{k}_{bb_k}`` = the width of the Bollinger bands ``SMA ± bb_k
    std`` (as in the ``bollinger`` feature) over the channel's, ``bb_k std / (k ATR)``:
    below 1 the bands lie inside the channel (the squeeze of Carter's TTM indicator).
    Both are 0 where ATR is 0. NaN for the first ``w`` bars. (The channel's width over
    the EMA is left out: it is ``atr_rel`` of the ``atr`` feature but for EMA vs close.)
    """
    w = window_param("keltner", "window", window, minimum=2)
    kk = positive_param("keltner", "k", k)
    bk = positive_param("keltner", "bb_k", bb_k)
    (c,) = bar_columns(bars, "close")
    pos = talib.EMA(c, timeperiod=w)
    squeeze = talib.STDDEV(c, timeperiod=w, nbdev=1.0)
    _keltner(c, _atr(bars, w), kk, bk, pos, squeeze)
    p = f"{w}_{fmt(kk)}"
    return {f"kc_pos_{p}": pos, f"kc_squeeze_{p}_{fmt(bk)}": squeeze}


@feature("range_compression")
def range_compression(
    bars: pd.DataFrame, *, window: int = 20, long: int = 100, atr_window: int = 14
) -> Columns:
    """The range of the last ``window`` bars against ATR and against a longer range, and
    where the close sits in it.

    With ``top``, ``bottom`` the highest high and lowest low of the last ``n`` bars (bar
    ``t`` included; the range a breakout label leaves, :func:`mlengine.labels.breakout`):
    ``range_comp_{n}`` = ``(top - bottom) / ATR(atr_window)`` (0 where ATR is 0), NaN for
    the first ``max(n - 1, atr_window)`` bars; ``range_comp_{n}_{l}`` = that range over
    the range of the last ``l`` bars, in [0, 1] (1 where both are 0), NaN for the first
    ``l - 1``; ``range_pos_{n}`` = ``(close - bottom) / (top - bottom)`` in [0, 1] (0.5
    where the range is 0), NaN for the first ``n - 1``.
    """
    n, lg = _short_long("range_compression", window, long, "window")
    a = window_param("range_compression", "atr_window", atr_window)
    h, low, c = bar_columns(bars, "high", "low", "close")
    top, bottom = talib.MAX(h, timeperiod=n), talib.MIN(low, timeperiod=n)
    top_l, bottom_l = talib.MAX(h, timeperiod=lg), talib.MIN(low, timeperiod=lg)
    atr = _atr(bars, a)
    _range_terms(c, top, bottom, top_l, bottom_l, atr)
    return {f"range_comp_{n}": atr, f"range_comp_{n}_{lg}": top_l, f"range_pos_{n}": top}


@feature("volume_surge")
def volume_surge(bars: pd.DataFrame, *, window: int = 20) -> Columns:
    """Volume over its mean of the last ``window`` bars (bar ``t`` included; TA-Lib ``SMA``).

    ``volume_surge_{w}``: 1 for an ordinary bar, ``w`` at most; 0 for a bar without volume
    (so a window without any volume gives 0, not 0 / 0). NaN for the first ``w - 1`` bars.
    A negative or NaN volume is an error (:class:`FeatureError` naming the bar).
    """
    w = window_param("volume_surge", "window", window)
    (v,) = bar_columns(bars, "volume")
    out = talib.SMA(v, timeperiod=w)
    bad = _surge(v, out)
    if bad >= 0:
        raise FeatureError(
            f"volume_surge: volume {v[bad]} at {bars.index[bad]} (row {bad + 1}) is not a "
            "number >= 0"
        )
    return {f"volume_surge_{w}": out}


# --- helpers -----------------------------------------------------------------------------------


def _atr(bars: pd.DataFrame, window: int) -> np.ndarray:
    """TA-Lib ``ATR`` (Wilder), the ``atr_{w}`` column of the ``atr`` feature."""
    h, low, c = bar_columns(bars, "high", "low", "close")
    return talib.ATR(h, low, c, timeperiod=window)


def _short_long(name: str, short: object, long: object, short_name: str) -> tuple[int, int]:
    """Two windows ``short < long`` (``short`` named ``short_name`` in errors)."""
    s = window_param(name, short_name, short)
    lg = window_param(name, "long", long)
    if s >= lg:
        raise FeatureError(f"{name}: {short_name} must be < long, got {short_name}={s}, long={lg}")
    return s, lg


@njit(cache=True, nogil=True, error_model="numpy")
def _ratio(num: np.ndarray, den: np.ndarray, scale: float, fill: float) -> None:
    """``num <- scale * num / den`` in place; ``fill`` where ``den == 0`` (NaN stays NaN)."""
    for i in range(num.shape[0]):
        d = den[i]
        num[i] = fill if d == 0.0 else scale * num[i] / d


@njit(cache=True, nogil=True, error_model="numpy")
def _stochastic(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """``x <- (x - lo) / (hi - lo)`` in place; 0 where ``hi == lo``."""
    for i in range(x.shape[0]):
        spread = hi[i] - lo[i]
        x[i] = 0.0 if spread == 0.0 else (x[i] - lo[i]) / spread


@njit(cache=True, nogil=True, error_model="numpy")
def _keltner(
    c: np.ndarray, atr: np.ndarray, k: float, bb_k: float, ema: np.ndarray, std: np.ndarray
) -> None:
    """``ema <- (c - ema) / (k atr)`` and ``std <- bb_k std / (k atr)`` in place, 0 where
    ``atr`` is 0."""
    for i in range(c.shape[0]):
        band = k * atr[i]
        inv = 0.0 if band == 0.0 else 1.0 / band
        ema[i] = (c[i] - ema[i]) * inv
        std[i] = bb_k * std[i] * inv


@njit(cache=True, nogil=True, error_model="numpy")
def _range_terms(
    c: np.ndarray,
    top: np.ndarray,
    bottom: np.ndarray,
    top_l: np.ndarray,
    bottom_l: np.ndarray,
    atr: np.ndarray,
) -> None:
    """``atr <-`` range / ATR, ``top_l <-`` range / long range, ``top <-`` close's place
    in the range (see :func:`range_compression`)."""
    for i in range(c.shape[0]):
        rng = top[i] - bottom[i]
        rng_l = top_l[i] - bottom_l[i]
        a = atr[i]
        atr[i] = 0.0 if a == 0.0 else rng / a
        top_l[i] = 1.0 if rng_l == 0.0 else rng / rng_l
        top[i] = 0.5 if rng == 0.0 else (c[i] - bottom[i]) / rng


@njit(cache=True, nogil=True)
def _surge(v: np.ndarray, mean: np.ndarray) -> int:
    """``mean <- v / mean`` in place, 0 where ``v == 0`` after the warm-up; the first bar
    whose volume is negative or NaN, -1 if none."""
    for i in range(v.shape[0]):
        x = v[i]
        if not x >= 0.0:
            return i
        if x == 0.0 and mean[i] == mean[i]:
            mean[i] = 0.0
        else:
            mean[i] = x / mean[i]
    return -1
