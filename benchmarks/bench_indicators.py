"""Our TA-Lib indicator features vs the same indicators from the ``ta`` library (pandas).

Run: ``.venv/bin/python benchmarks/bench_indicators.py``. Prints a Rich table and writes
``benchmarks/results/indicators.json``.

On 1,000,000 synthetic bars, in one process: every feature of our registry that is a
textbook indicator TA-Lib computes and ``ta`` has too (RSI, MACD, rate of change, ADX with
+DI/-DI, slow stochastic, ATR, Bollinger bandwidth and %b), each called as a user calls it
(the registered function with its default parameters: validation, TA-Lib, the columns),
against ``ta``'s indicator classes producing the same columns (``ta`` has no slow %D, so
the peer takes pandas' 3-bar mean of its slow %K, ``stoch_signal``). The raw TA-Lib calls
are timed too, for the record. ``ratio`` = ours / ``ta`` per indicator and for the sum.

Apples to apples: before timing, the values are compared after a warm-up of ``WARMUP``
bars (the exponentially smoothed ones depend on how they are seeded, which fades; ``ta``
fills its warm-up with 0 where TA-Lib leaves NaN) and the largest absolute difference per
column is printed and saved; ``values_agree`` when every one is within ``AGREE_TOL``. The
Bollinger %b differs most (~1e-8): TA-Lib's running variance is ``E[x^2] - E[x]^2`` from
running sums, pandas' rolling variance is computed otherwise; rounding, not definition.

Each figure is the best of ``REPEAT`` runs; a run of 2 s or more is not repeated (``ta``'s
ATR and ADX loop over the bars in Python).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import ta
import talib
from rich.console import Console
from rich.table import Table

from _results import write_result
from _synthetic import random_walk_bars
from _timing import best_within
from mlengine.features import feature_spec

N = 1_000_000
REPEAT = 3
WARMUP = 1_000  # bars dropped before comparing values: the seeds of Wilder/EMA smoothing fade
AGREE_TOL = 1e-6  # max abs diff (on 0-100 scales or ratios) that counts as the same values

Columns = dict[str, np.ndarray]


def _hlc(bars: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    return bars["high"], bars["low"], bars["close"]


def _ta_rsi(bars: pd.DataFrame) -> Columns:
    return {"rsi_14": ta.momentum.RSIIndicator(bars["close"], window=14).rsi().to_numpy()}


def _ta_macd(bars: pd.DataFrame) -> Columns:
    c = bars["close"]
    m = ta.trend.MACD(c, window_slow=26, window_fast=12, window_sign=9)
    return {
        "macd_rel_12_26_9": (m.macd() / c).to_numpy(),
        "macd_signal_rel_12_26_9": (m.macd_signal() / c).to_numpy(),
        "macd_hist_rel_12_26_9": (m.macd_diff() / c).to_numpy(),
    }


def _ta_roc(bars: pd.DataFrame) -> Columns:
    return {"roc_10": ta.momentum.ROCIndicator(bars["close"], window=10).roc().to_numpy()}


def _ta_adx(bars: pd.DataFrame) -> Columns:
    a = ta.trend.ADXIndicator(*_hlc(bars), window=14)
    return {
        "adx_14": a.adx().to_numpy(),
        "plus_di_14": a.adx_pos().to_numpy(),
        "minus_di_14": a.adx_neg().to_numpy(),
    }


def _ta_stochastic(bars: pd.DataFrame) -> Columns:
    s = ta.momentum.StochasticOscillator(*_hlc(bars), window=14, smooth_window=3)
    k = s.stoch_signal()  # the 3-bar mean of fast %K: the slow %K
    return {"stoch_k_14_3_3": k.to_numpy(), "stoch_d_14_3_3": k.rolling(3).mean().to_numpy()}


def _ta_atr(bars: pd.DataFrame) -> Columns:
    a = ta.volatility.AverageTrueRange(*_hlc(bars), window=14).average_true_range()
    return {"atr_14": a.to_numpy(), "atr_rel_14": (a / bars["close"]).to_numpy()}


def _ta_bollinger(bars: pd.DataFrame) -> Columns:
    b = ta.volatility.BollingerBands(bars["close"], window=20, window_dev=2)
    return {
        "bb_width_20_2": (b.bollinger_wband() / 100.0).to_numpy(),  # ta's is in percent
        "bb_pctb_20_2": b.bollinger_pband().to_numpy(),
    }


def _talib_calls(bars: pd.DataFrame) -> dict[str, Callable[[], object]]:
    """The raw TA-Lib call(s) behind each feature, for the record."""
    h, low, c = (bars[col].to_numpy() for col in ("high", "low", "close"))
    sma = talib.MA_Type.SMA
    return {
        "rsi": lambda: talib.RSI(c, timeperiod=14),
        "macd": lambda: talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9),
        "roc": lambda: talib.ROC(c, timeperiod=10),
        "adx": lambda: (
            talib.ADX(h, low, c, timeperiod=14),
            talib.PLUS_DI(h, low, c, timeperiod=14),
            talib.MINUS_DI(h, low, c, timeperiod=14),
        ),
        "stochastic": lambda: talib.STOCH(
            h,
            low,
            c,
            fastk_period=14,
            slowk_period=3,
            slowk_matype=sma,
            slowd_period=3,
            slowd_matype=sma,
        ),
        "atr": lambda: talib.ATR(h, low, c, timeperiod=14),
        "bollinger": lambda: talib.BBANDS(c, timeperiod=20, nbdevup=2, nbdevdn=2, matype=sma),
    }


#: our feature name -> the ``ta`` peer making the same columns, and a note where they differ
PEERS: dict[str, tuple[Callable[[pd.DataFrame], Columns], str]] = {
    "rsi": (_ta_rsi, "same definition (Wilder); seeds differ, fade in the warm-up"),
    "macd": (_ta_macd, "same definition (EMA 12/26/9); seeds differ, fade in the warm-up"),
    "roc": (_ta_roc, "same definition"),
    "adx": (_ta_adx, "same definition (Wilder); seeds differ, fade in the warm-up"),
    "stochastic": (_ta_stochastic, "same definition (slow %K, %D: 3-bar means)"),
    "atr": (_ta_atr, "same definition (Wilder); seeds differ, fade in the warm-up"),
    "bollinger": (_ta_bollinger, "same definition (SMA 20 +- 2 population std)"),
}


def _max_abs_diff(ours: np.ndarray, peer: np.ndarray) -> float | None:
    """Largest |ours - peer| after the warm-up where both are finite (None: no such bar)."""
    a, b = ours[WARMUP:], peer[WARMUP:]
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok]))) if ok.any() else None


def main() -> None:
    bars = random_walk_bars(N)
    raw = _talib_calls(bars)
    results: dict[str, dict[str, Any]] = {}
    for name, (peer, note) in PEERS.items():
        func = feature_spec(name).func
        ours_cols = func(bars)  # also the warm-up: first touch of the columns
        peer_cols = peer(bars)
        diffs = {col: _max_abs_diff(ours_cols[col].to_numpy(), peer_cols[col]) for col in peer_cols}
        ours_s = best_within(functools.partial(func, bars), REPEAT)
        peer_s = best_within(functools.partial(peer, bars), REPEAT)
        talib_s = best_within(raw[name], REPEAT)
        agree = all(d is not None and d <= AGREE_TOL for d in diffs.values())
        results[name] = {
            "ours_s": ours_s,
            "ta_s": peer_s,
            "talib_raw_s": talib_s,
            "ratio": ours_s / peer_s,
            "max_abs_diff_after_warmup": diffs,
            "values_agree": agree,
            "note": note,
        }
    ours_total = sum(float(r["ours_s"]) for r in results.values())
    peer_total = sum(float(r["ta_s"]) for r in results.values())
    payload = {
        "bars": N,
        "warmup_bars": WARMUP,
        "agree_tol": AGREE_TOL,
        "versions": {"ta": getattr(ta, "__version__", "0.11.0"), "talib": talib.__version__},
        "indicators": results,
        "ours_total_s": ours_total,
        "ta_total_s": peer_total,
        "ratio": ours_total / peer_total,
    }
    table = Table(title=f"indicators on {N:,} bars: ours (TA-Lib) vs ta, best of {REPEAT}")
    for col in ("indicator", "ours s", "ta s", "ours/ta", "raw TA-Lib s", "max |diff|", "note"):
        table.add_column(col, justify="left" if col in ("indicator", "note") else "right")
    for name, r in results.items():
        diffs = r["max_abs_diff_after_warmup"]
        worst = max((d for d in diffs.values() if d is not None), default=float("nan"))
        table.add_row(
            name,
            f"{r['ours_s']:.4f}",
            f"{r['ta_s']:.4f}",
            f"{r['ratio']:.4f}",
            f"{r['talib_raw_s']:.4f}",
            f"{worst:.2e}",
            str(r["note"]),
        )
    table.add_row(
        "total", f"{ours_total:.4f}", f"{peer_total:.4f}", f"{ours_total / peer_total:.4f}"
    )
    Console(width=160).print(table)
    write_result("indicators", payload)


if __name__ == "__main__":
    main()
