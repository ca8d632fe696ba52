"""Momentum features: RSI, MACD, rate of change, ADX with the directional indicators,
stochastic oscillator — all from TA-Lib.

RSI, MACD and ADX are exponentially (Wilder-) smoothed: TA-Lib seeds them at the start of
the input, so a value depends on where the series starts (their *unstable period*, left at
TA-Lib's default of 0). Cutting the end of the series never changes them, which is what
the truncation property asks; compute on the full history and slice, not on slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import talib

from mlengine.features.registry import (
    Columns,
    FeatureError,
    bar_columns,
    feature,
    window_param,
    windows_param,
)

__all__ = ["adx", "macd", "roc", "rsi", "stochastic"]


@feature("rsi")
def rsi(bars: pd.DataFrame, *, window: int = 14) -> Columns:
    """Relative strength index of the close (TA-Lib ``RSI``, Wilder's smoothing).

    ``rsi_{w}`` in [0, 100]; NaN for the first ``w`` bars.
    """
    w = window_param("rsi", "window", window, minimum=2)
    return {f"rsi_{w}": talib.RSI(bar_columns(bars, "close")[0], timeperiod=w)}


@feature("macd")
def macd(bars: pd.DataFrame, *, fast: int = 12, slow: int = 26, signal: int = 9) -> Columns:
    """MACD of the close over the close (TA-Lib ``MACD``: EMA(fast) - EMA(slow), its
    EMA(signal), and their difference, each divided by the close).

    ``macd_rel_{f}_{s}_{g}``, ``macd_signal_rel_{f}_{s}_{g}``, ``macd_hist_rel_{f}_{s}_{g}``:
    scale-free, with the signs and crossings of the price-unit MACD (the close is > 0);
    multiply by the close for TA-Lib's values. NaN for the first ``slow + signal - 2`` bars.
    """
    f = window_param("macd", "fast", fast, minimum=2)
    s = window_param("macd", "slow", slow, minimum=2)
    g = window_param("macd", "signal", signal)
    if f >= s:
        raise FeatureError(f"macd: fast must be < slow, got fast={f}, slow={s}")
    (c,) = bar_columns(bars, "close")
    line, sig, hist = talib.MACD(c, fastperiod=f, slowperiod=s, signalperiod=g)
    p = f"{f}_{s}_{g}"
    return {
        f"macd_rel_{p}": np.divide(line, c, out=line),
        f"macd_signal_rel_{p}": np.divide(sig, c, out=sig),
        f"macd_hist_rel_{p}": np.divide(hist, c, out=hist),
    }


@feature("roc")
def roc(bars: pd.DataFrame, *, windows: int | Sequence[int] = (10,)) -> Columns:
    """Rate of change of the close (TA-Lib ``ROC``), in percent.

    ``roc_{w}`` = ``100 * (close[t] / close[t - w] - 1)``; NaN for the first ``w`` bars.
    """
    windows = windows_param("roc", "windows", windows)
    (c,) = bar_columns(bars, "close")
    return {f"roc_{w}": talib.ROC(c, timeperiod=w) for w in windows}


@feature("adx")
def adx(bars: pd.DataFrame, *, window: int = 14) -> Columns:
    """Trend strength and direction (TA-Lib ``ADX``, ``PLUS_DI``, ``MINUS_DI``; Wilder).

    ``adx_{w}`` in [0, 100], NaN for the first ``2w - 1`` bars; ``plus_di_{w}`` and
    ``minus_di_{w}`` in [0, 100], NaN for the first ``w`` bars.
    """
    w = window_param("adx", "window", window, minimum=2)
    h, low, c = bar_columns(bars, "high", "low", "close")
    return {
        f"adx_{w}": talib.ADX(h, low, c, timeperiod=w),
        f"plus_di_{w}": talib.PLUS_DI(h, low, c, timeperiod=w),
        f"minus_di_{w}": talib.MINUS_DI(h, low, c, timeperiod=w),
    }


@feature("stochastic")
def stochastic(
    bars: pd.DataFrame, *, k_window: int = 14, k_smooth: int = 3, d_window: int = 3
) -> Columns:
    """Slow stochastic oscillator (TA-Lib ``STOCH`` with simple moving averages).

    Fast %K = ``100 * (close - lowest low) / (highest high - lowest low)`` over
    ``k_window`` bars; ``stoch_k_{k}_{s}_{d}`` is its ``k_smooth``-bar mean and
    ``stoch_d_{k}_{s}_{d}`` the ``d_window``-bar mean of that, both in [0, 100]. NaN for
    the first ``k_window + k_smooth + d_window - 3`` bars.
    """
    kw = window_param("stochastic", "k_window", k_window)
    ks = window_param("stochastic", "k_smooth", k_smooth)
    dw = window_param("stochastic", "d_window", d_window)
    h, low, c = bar_columns(bars, "high", "low", "close")
    k, d = talib.STOCH(
        h,
        low,
        c,
        fastk_period=kw,
        slowk_period=ks,
        slowk_matype=talib.MA_Type.SMA,
        slowd_period=dw,
        slowd_matype=talib.MA_Type.SMA,
    )
    p = f"{kw}_{ks}_{dw}"
    return {f"stoch_k_{p}": np.asarray(k), f"stoch_d_{p}": np.asarray(d)}
