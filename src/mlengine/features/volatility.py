"""Volatility features: ATR, realised volatility, Parkinson and Garman-Klass estimators,
Bollinger bands.

Every estimator here is per bar (not annualised) and, except ``atr_{w}``, scale-free.
ATR and the Bollinger bands come from TA-Lib. TA-Lib has no Parkinson or Garman-Klass
estimator; those take NumPy's logarithms, TA-Lib's running ``SMA`` for the window mean and
small numba loops for the elementwise arithmetic around them (one pass over memory instead
of one NumPy pass and temporary per operation; elementwise, so exactly truncation-safe).

ATR is Wilder-smoothed: TA-Lib seeds it with the mean of the first ``window`` true ranges,
so a value depends on where the input series starts (its *unstable period*, left at
TA-Lib's default of 0). Cutting the end of the series never changes it, which is what the
truncation property asks; compute on the full history and slice, not on slices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import talib
from numba import njit

from mlengine.features.registry import (
    Columns,
    bar_columns,
    feature,
    fmt,
    positive_param,
    window_param,
    windows_param,
)
from mlengine.features.returns import _one_bar_log_returns

__all__ = ["atr", "bollinger", "range_vol", "realised_vol"]

_PARKINSON = 1.0 / (4.0 * math.log(2.0))
_GK_CO2 = 2.0 * (2.0 * math.log(2.0) - 1.0)  # the 0.5 goes into the mean


@feature("atr")
def atr(bars: pd.DataFrame, *, window: int = 14) -> Columns:
    """Average true range (TA-Lib ``ATR``, Wilder's smoothing), raw and over the close.

    ``atr_{w}`` in price units; ``atr_rel_{w}`` = ``atr_{w} / close`` (scale-free; TA-Lib's
    ``NATR`` divided by 100). NaN for the first ``w`` bars.
    """
    w = window_param("atr", "window", window)
    h, low, c = bar_columns(bars, "high", "low", "close")
    a = talib.ATR(h, low, c, timeperiod=w)
    return {f"atr_{w}": a, f"atr_rel_{w}": a / c}


@feature("realised_vol")
def realised_vol(bars: pd.DataFrame, *, windows: int | Sequence[int] = (10, 20, 50)) -> Columns:
    """Realised volatility: the sample standard deviation of one-bar log close returns.

    ``rvol_{w}`` over the last ``w`` returns (bar ``t`` included, ``ddof=1``): TA-Lib's
    population ``STDDEV`` times ``sqrt(w / (w - 1))`` (its ``nbdev`` factor, no extra pass).
    NaN for the first ``w`` bars.
    """
    windows = windows_param("realised_vol", "windows", windows, minimum=2)
    r = _one_bar_log_returns(bars)
    return {
        f"rvol_{w}": talib.STDDEV(r, timeperiod=w, nbdev=math.sqrt(w / (w - 1))) for w in windows
    }


@feature("range_vol")
def range_vol(bars: pd.DataFrame, *, window: int = 20) -> Columns:
    """Range-based volatility: the Parkinson (1980) and Garman-Klass (1980) estimators.

    Over the last ``w`` bars (bar ``t`` included), with ``hl = ln(high / low)`` and
    ``co = ln(close / open)``: ``vol_parkinson_{w}`` = ``sqrt(mean(hl^2) / (4 ln 2))`` and
    ``vol_gk_{w}`` = ``sqrt(mean(0.5 hl^2 - (2 ln 2 - 1) co^2))``. NaN for the first
    ``w - 1`` bars. The window mean is TA-Lib's running ``SMA``: in a window of flat bars
    (``high == low``) after volatile ones it keeps a rounding residue, ~1e-11, not 0.
    """
    w = window_param("range_vol", "window", window, minimum=2)
    o, h, low, c = bar_columns(bars, "open", "high", "low", "close")
    hl = np.divide(h, low)
    np.log(hl, out=hl)
    co = np.divide(c, o)
    np.log(co, out=co)
    _range_terms(hl, co)  # hl <- hl^2, co <- hl^2 - 2 (2 ln 2 - 1) co^2
    parkinson = _root_mean(talib.SMA(hl, timeperiod=w), _PARKINSON)
    gk = _root_mean(talib.SMA(co, timeperiod=w), 0.5)
    return {f"vol_parkinson_{w}": parkinson, f"vol_gk_{w}": gk}


@feature("bollinger")
def bollinger(bars: pd.DataFrame, *, window: int = 20, k: float = 2.0) -> Columns:
    """Bollinger bandwidth and %b (TA-Lib ``BBANDS``: SMA ± k population std of the close).

    ``bb_width_{w}_{k}`` = ``(upper - lower) / middle``; ``bb_pctb_{w}_{k}`` =
    ``(close - lower) / (upper - lower)``, 0.5 when the bands coincide. NaN for the first
    ``w - 1`` bars.
    """
    w = window_param("bollinger", "window", window, minimum=2)
    k = positive_param("bollinger", "k", k)
    (c,) = bar_columns(bars, "close")
    upper, middle, lower = talib.BBANDS(
        c, timeperiod=w, nbdevup=k, nbdevdn=k, matype=talib.MA_Type.SMA
    )
    _bollinger(c, upper, middle, lower)  # middle <- width, lower <- %b
    return {f"bb_width_{w}_{fmt(k)}": middle, f"bb_pctb_{w}_{fmt(k)}": lower}


@njit(cache=True, nogil=True, error_model="numpy")
def _range_terms(hl: np.ndarray, co: np.ndarray) -> None:
    for i in range(hl.shape[0]):
        hl2 = hl[i] * hl[i]
        hl[i] = hl2
        co[i] = hl2 - _GK_CO2 * (co[i] * co[i])


@njit(cache=True, nogil=True, error_model="numpy")
def _root_mean(mean: np.ndarray, scale: float) -> np.ndarray:
    """``sqrt(scale * mean)`` in place; a mean that rounding left below 0 gives 0."""
    for i in range(mean.shape[0]):
        v = scale * mean[i]
        mean[i] = 0.0 if v <= 0.0 else np.sqrt(v)  # NaN fails both tests and stays NaN
    return mean


@njit(cache=True, nogil=True, error_model="numpy")
def _bollinger(c: np.ndarray, upper: np.ndarray, middle: np.ndarray, lower: np.ndarray) -> None:
    for i in range(c.shape[0]):
        spread = upper[i] - lower[i]
        pctb = 0.5 if spread == 0.0 else (c[i] - lower[i]) / spread
        middle[i] = spread / middle[i]
        lower[i] = pctb
