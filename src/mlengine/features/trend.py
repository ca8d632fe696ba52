"""Trend features: how straight the recent path is (trend strength) and how often the
recent bars move the same way (momentum persistence).

Both look at the last ``window`` one-bar moves (``window + 1`` closes), bar ``t``
included, and are scale-free. TA-Lib does the windowed sums, means and the regression
(``MOM``, ``SUM``, ``SMA``, ``LINEARREG_SLOPE``, ``VAR``); small numba loops the elementwise
arithmetic around them (one pass instead of one NumPy pass and temporary per operation).
TA-Lib's loops run forward from the first bar and the rest is elementwise or lagged, so
cutting the end of the series changes no earlier value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib
from numba import njit

from mlengine.features.registry import Columns, bar_columns, feature, window_param
from mlengine.features.returns import _SD_FLOOR, _one_bar_log_returns

__all__ = ["momentum_persistence", "trend_strength"]

# A residual sum of squares below this share of the total is rounding: an exact line.
_RESIDUAL_FLOOR = 1e-12


@feature("trend_strength")
def trend_strength(bars: pd.DataFrame, *, window: int = 20) -> Columns:
    """Efficiency ratio and regression-slope t-statistic of the close over the last
    ``window`` bars.

    Over the closes ``c`` of bars ``t - w .. t`` (``w + 1`` points): ``er_{w}`` =
    ``(c[t] - c[t - w]) / sum |c[i] - c[i - 1]|``, Kaufman's efficiency ratio, signed, in
    [-1, 1] (0 when the close ends where it started); ``trend_t_{w}`` = the t-statistic
    ``b / sqrt(s^2 / Sxx)`` of the least-squares slope ``b`` of ``c`` on the bar number,
    ``s^2`` the residual variance on ``w - 1`` degrees of freedom. ``trend_t_{w}`` is 0
    when the closes' standard deviation is below a millionth of the close (a flat window:
    rounding, not a trend); a residual below a 1e-12 share of the closes' spread counts as
    that share, so an exact line gives a large finite value. NaN for the first ``w`` bars.
    """
    w = window_param("trend_strength", "window", window, minimum=2)
    (c,) = bar_columns(bars, "close")
    path = talib.MOM(c, timeperiod=1)
    np.abs(path, out=path)
    er = talib.MOM(c, timeperiod=w)
    tstat = talib.LINEARREG_SLOPE(c, timeperiod=w + 1)
    _trend(c, er, talib.SUM(path, timeperiod=w), tstat, talib.VAR(c, timeperiod=w + 1), w + 1)
    return {f"er_{w}": er, f"trend_t_{w}": tstat}


@feature("momentum_persistence")
def momentum_persistence(bars: pd.DataFrame, *, window: int = 20) -> Columns:
    """Sign autocorrelation and mean sign of the last ``window`` one-bar log returns.

    With ``s[i]`` the sign (-1, 0, 1) of bar ``i``'s one-bar return: ``sign_ac_{w}`` =
    the mean of ``s[i] * s[i - 1]`` over ``i = t - w + 1 .. t``, in [-1, 1] (positive: moves
    continue, negative: they reverse), NaN for the first ``w + 1`` bars; ``sign_mean_{w}`` =
    the mean of ``s[i]`` over the same bars, the share of up moves minus that of down
    moves, in [-1, 1], NaN for the first ``w`` bars. Sums of whole numbers: exact.
    """
    w = window_param("momentum_persistence", "window", window, minimum=2)
    sign = np.sign(_one_bar_log_returns(bars))  # NaN at the first bar
    mean = talib.SMA(sign, timeperiod=w)
    _pairs(sign)  # sign[i] <- sign[i] * sign[i - 1]
    return {f"sign_ac_{w}": talib.SMA(sign, timeperiod=w), f"sign_mean_{w}": mean}


@njit(cache=True, nogil=True)
def _pairs(s: np.ndarray) -> None:
    """``s[i] <- s[i] * s[i - 1]`` in place (last bar first), NaN at the first bar."""
    for i in range(s.shape[0] - 1, 0, -1):
        s[i] *= s[i - 1]
    if s.shape[0]:
        s[0] = np.nan


# error_model="numpy": no zero-division checks, so the loop vectorises (NaN and inf as NumPy)
@njit(cache=True, nogil=True, error_model="numpy")
def _trend(
    c: np.ndarray, er: np.ndarray, path: np.ndarray, t: np.ndarray, var: np.ndarray, m: int
) -> None:
    """``er <- er / path`` (0 when the move ``er`` is 0) and ``t <- `` the slope t-statistic
    from the slope ``t`` and the population variance ``var`` of ``m`` points, in place;
    branch-free selects, NaN stays NaN."""
    sxx = m * (m * m - 1) / 12.0
    scale = 1.0 / ((m - 2) * sxx)
    for i in range(c.shape[0]):
        move = er[i]
        q = move / path[i]
        q = -1.0 if q < -1.0 else (1.0 if q > 1.0 else q)
        er[i] = 0.0 if move == 0.0 else q
        syy = m * var[i]
        b = t[i]
        resid = max(syy - b * b * sxx, _RESIDUAL_FLOOR * syy)
        flat = 0.0 if syy == syy else np.nan
        t[i] = b / np.sqrt(resid * scale) if syy > m * (_SD_FLOOR * c[i]) ** 2 else flat
