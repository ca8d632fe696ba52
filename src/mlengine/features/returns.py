"""Return features: log returns at several lags, return z-scores, candle shape.

All are scale-free. None has a TA-Lib equivalent except the log return (``ln ROCR``). The
rolling moments are TA-Lib's running ``SMA`` and ``STDDEV`` (one C pass each, where
pandas' rolling needs several); logarithms are NumPy's (SIMD); the chains of elementwise
arithmetic after them are small numba loops, one pass over memory instead of one NumPy
pass (and temporary) per operation. Each output element depends only on the same bar's
inputs, so the loops keep the truncation property exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import talib
from numba import njit

from mlengine.features.registry import Columns, bar_columns, feature, shared, windows_param

__all__ = ["candle", "log_returns", "return_zscore"]


def _log_close(bars: pd.DataFrame) -> np.ndarray:
    """``ln(close)``; read-only, shared between the features that need it (see
    :func:`~mlengine.features.registry.shared`)."""
    return shared(bars, "log_close", lambda: np.log(bar_columns(bars, "close")[0]))


def _one_bar_log_returns(bars: pd.DataFrame) -> np.ndarray:
    """``ln(close[t] / close[t - 1])`` as a difference of log closes, NaN at the first bar;
    read-only and shared like :func:`_log_close`."""
    return shared(bars, "log_return_1", lambda: _lag_diff(_log_close(bars), 1))


def _lag_diff(x: np.ndarray, lag: int) -> np.ndarray:
    """``x[t] - x[t - lag]``, NaN for ``t < lag``."""
    out = np.empty_like(x)
    out[:lag] = np.nan
    np.subtract(x[lag:], x[: max(len(x) - lag, 0)], out=out[lag:])
    return out


@feature("log_returns")
def log_returns(bars: pd.DataFrame, *, lags: int | Sequence[int] = (1, 3, 6, 12, 24)) -> Columns:
    """Log returns of the close over several lags.

    ``ret_log_{lag}`` = ``ln(close[t] / close[t - lag])``; NaN for the first ``lag`` bars.
    A difference of log closes (one logarithm per bar whatever the number of lags); equal to
    ``ln(talib.ROCR(close, lag))`` to rounding.
    """
    lags = windows_param("log_returns", "lags", lags)
    logc = _log_close(bars)
    return {f"ret_log_{lag}": _lag_diff(logc, lag) for lag in lags}


@feature("return_zscore")
def return_zscore(bars: pd.DataFrame, *, windows: int | Sequence[int] = (20, 100)) -> Columns:
    """How unusual this bar's return is against the recent ones.

    ``ret_z_{w}`` = ``(r[t] - mean(r)) / std(r)`` over the last ``w`` one-bar log returns
    ``r`` (bar ``t`` included; population standard deviation, TA-Lib's ``SMA`` and
    ``STDDEV``); 0 when those returns are all equal (their spread is below a millionth
    of their mean: rounding, not information); NaN for the first ``w`` bars.
    """
    windows = windows_param("return_zscore", "windows", windows, minimum=2)
    r = _one_bar_log_returns(bars)
    cols = {}
    for w in windows:
        z = talib.SMA(r, timeperiod=w)
        _zscore(r, z, talib.STDDEV(r, timeperiod=w, nbdev=1.0))
        cols[f"ret_z_{w}"] = z
    return cols


# A spread below this fraction of the mean return is rounding, not information: TA-Lib's
# variance is E[x^2] - E[x]^2 from running sums, so its square root can be off by up to
# ~sqrt(eps) |mean| ~ 1e-8 |mean| when the returns are (nearly) all equal.
_SD_FLOOR = 1e-6


@njit(cache=True, nogil=True, error_model="numpy")
def _zscore(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> None:
    """``mean <- (x - mean) / sd`` in place; 0 where ``sd <= _SD_FLOOR * |mean|``."""
    for i in range(x.shape[0]):
        m = mean[i]
        mean[i] = 0.0 if sd[i] <= _SD_FLOOR * abs(m) else (x[i] - m) / sd[i]


@feature("candle")
def candle(bars: pd.DataFrame) -> Columns:
    """The shape of each bar as fractions of its high-low range.

    ``candle_body`` = ``(close - open) / (high - low)`` in [-1, 1] (positive for an up bar);
    ``candle_upper`` = ``(high - max(open, close)) / (high - low)`` and ``candle_lower`` =
    ``(min(open, close) - low) / (high - low)``, both in [0, 1]. The three absolute values
    sum to 1; a bar with ``high == low`` gives 0 for all three. No warm-up.
    """
    o, h, low, c = bar_columns(bars, "open", "high", "low", "close")
    body, upper, lower = (np.empty(len(bars)) for _ in range(3))
    _candle(o, h, low, c, body, upper, lower)
    return {"candle_body": body, "candle_upper": upper, "candle_lower": lower}


@njit(cache=True, nogil=True, error_model="numpy")
def _candle(
    o: np.ndarray,
    h: np.ndarray,
    low: np.ndarray,
    c: np.ndarray,
    body: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
) -> None:
    for i in range(o.shape[0]):
        rng = h[i] - low[i]
        inv = 1.0 / rng if rng > 0.0 else 0.0
        top, bottom = (c[i], o[i]) if c[i] > o[i] else (o[i], c[i])
        body[i] = (c[i] - o[i]) * inv
        upper[i] = (h[i] - top) * inv
        lower[i] = (bottom - low[i]) * inv
