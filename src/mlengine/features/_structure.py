"""Market-structure detection: swings, and the events built on confirmed swings.

The public entry points (:func:`swings`, :func:`structure_events`) return event tables;
:mod:`mlengine.features.structure` re-exports them and turns the same single pass into
per-bar features. Every event is stamped at the bar that *confirms* it, the first bar at
whose close it is known:

* a fractal swing at bar ``i`` (high above the ``n`` highs on each side, strictly; a low
  mirrored) at bar ``i + n``; a zigzag swing at the bar whose low (high) has come back
  ``threshold`` from the running extreme (percent of it, or ATRs at that bar);
* a break of structure (``bos``) or change of character (``choch``) at the bar whose close
  is beyond the last confirmed, not yet broken swing high (low): a ``choch`` when it goes
  against the trend set by the previous break, a ``bos`` otherwise;
* a fair value gap (``fvg``) at the third bar of a three-bar imbalance: bullish when
  ``low[t] > high[t - 2]`` (the zone ``[high[t - 2], low[t]]``), bearish mirrored;
* an order block (``ob``) with the break that makes it: the last candle against the break
  (bearish for a bullish break) between the broken swing and the breaking bar, its range
  the zone;
* a liquidity sweep (``sweep``) at the bar whose high trades above a pool of equal highs
  (two consecutive swing highs within ``eq_tol`` ATRs, the pool at the higher) and closes
  back below it: direction -1 (a sweep of equal lows is +1). A close above the pool
  consumes it without a sweep.

A zone (FVG, OB) is *mitigated* at the first later bar that trades into it (a bullish
zone: ``low <= top``) and *filled* at the first later bar that trades through it (``low
<= bottom``); bearish zones mirrored.

The scans are numba loops: each bar's state (last swings, trend, open zones) depends on
the previous bar's, which no vectorised expression carries. Open FVGs live in stacks:
an unmitigated (unfilled) bullish gap lies below every low since it formed, and a new
gap's bottom ``high[t - 2] >= low[t - 2]`` is above it, so the open gaps are sorted by
age and each bar only pops from the top (amortised O(1) per bar).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from numba import njit

from mlengine.features.registry import (
    FeatureError,
    bar_columns,
    check_bars,
    checked_in_call,
    positive_param,
    window_param,
)

__all__ = ["EVENT_COLUMNS", "KINDS", "structure_events", "swings"]

KINDS = ("bos", "choch", "fvg", "ob", "sweep")
EVENT_COLUMNS = (
    "kind",
    "direction",
    "level",
    "top",
    "bottom",
    "formed",
    "confirmed",
    "mitigated",
    "filled",
)
SwingMethod = Literal["fractal", "zigzag"]
ThresholdUnit = Literal["atr", "percent"]

# rows of the event array the scan writes (one column per field, bars as positions)
_KIND, _DIR, _LEVEL, _TOP, _BOTTOM, _FORMED, _CONF, _MITIG, _FILL = range(9)
_BOS, _CHOCH, _FVG, _OB, _SWEEP = range(5)
# per-bar outputs of the scan
_TREND, _SINCE_BOS, _SINCE_CHOCH, _FVG_BULL, _FVG_BEAR, _OB_BULL, _OB_BEAR = range(7)
_BOS_NET, _CHOCH_NET, _SWEEP_NET, _FVG_NET = range(7, 11)
N_STATE = 11


def swings(
    bars: pd.DataFrame,
    *,
    method: SwingMethod = "fractal",
    n: int = 3,
    threshold: float = 2.0,
    unit: ThresholdUnit = "atr",
    atr_window: int = 14,
) -> pd.DataFrame:
    """Confirmed swing highs (direction +1) and lows (-1), in order of confirmation.

    ``method="fractal"``: ``n`` bars on each side; ``method="zigzag"``: a reversal of
    ``threshold`` percent or ``threshold`` ATRs (``unit``; Wilder's ATR over
    ``atr_window``). Columns ``kind`` (``"swing"``), ``direction``, ``level``, ``formed``
    (the swing's bar), ``confirmed`` (the bar it is known at).
    """
    check_bars(bars)
    conf, bar, direction, level = _swing_arrays(bars, method, n, threshold, unit, atr_window)
    idx = bars.index
    return pd.DataFrame(
        {
            "kind": np.full(len(bar), "swing", dtype=object),
            "direction": direction,
            "level": level,
            "formed": idx.take(bar),
            "confirmed": idx.take(conf),
        }
    )


def structure_events(
    bars: pd.DataFrame,
    *,
    method: SwingMethod = "fractal",
    n: int = 3,
    threshold: float = 2.0,
    unit: ThresholdUnit = "atr",
    atr_window: int = 14,
    eq_tol: float = 0.1,
) -> pd.DataFrame:
    """BOS, CHoCH, FVG, order blocks and sweeps of equal highs / lows on ``bars``.

    Swings as in :func:`swings`; ``eq_tol``: the tolerance of equal highs / lows in ATRs.
    One row per event in order of confirmation, columns :data:`EVENT_COLUMNS`: ``kind``
    (one of :data:`KINDS`), ``direction`` (+1 bullish, -1 bearish), ``level`` (the broken
    or swept level; a zone's near edge: the top of a bullish zone), ``top``, ``bottom``
    (equal to ``level`` for a line), ``formed`` (the swing, middle gap bar or candle the
    event comes from), ``confirmed``, ``mitigated`` and ``filled`` (zones; NaT while open
    and for lines).
    """
    events, _ = scan(bars, method, n, threshold, unit, atr_window, eq_tol)
    idx = bars.index

    def stamps(col: int) -> pd.Series:
        pos = events[:, col].astype(np.int64)
        return pd.Series(idx.take(np.maximum(pos, 0))).where(pos >= 0)

    return pd.DataFrame(
        {
            "kind": np.asarray(KINDS, dtype=object)[events[:, _KIND].astype(np.int64)],
            "direction": events[:, _DIR].astype(np.int64),
            "level": events[:, _LEVEL],
            "top": events[:, _TOP],
            "bottom": events[:, _BOTTOM],
            "formed": stamps(_FORMED),
            "confirmed": stamps(_CONF),
            "mitigated": stamps(_MITIG),
            "filled": stamps(_FILL),
        }
    )


def scan(
    bars: pd.DataFrame,
    method: SwingMethod,
    n: int,
    threshold: float,
    unit: ThresholdUnit,
    atr_window: int,
    eq_tol: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The events (rows of bar positions and levels, -1 for no bar) and the per-bar state
    (``N_STATE`` rows: trend, bars since BOS / CHoCH, price distances to the nearest open
    zones, net event counts of the bar) of one pass; the ATR is the last state row."""
    if not checked_in_call(bars):  # the features' pass: compute_features checked them
        check_bars(bars)
    eq = positive_param("structure_events", "eq_tol", eq_tol)
    conf, bar, direction, level = _swing_arrays(bars, method, n, threshold, unit, atr_window)
    o, h, low, c = bar_columns(bars, "open", "high", "low", "close")
    atr = wilder_atr(h, low, c, atr_window)
    events, state = _scan(o, h, low, c, atr, conf, bar, direction, level, eq)
    return events, np.vstack([state, atr[None, :]])


def _swing_arrays(
    bars: pd.DataFrame,
    method: object,
    n: object,
    threshold: object,
    unit: object,
    atr_window: object,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Confirmation bar, swing bar, direction and level of every swing, by confirmation."""
    a = window_param("swings", "atr_window", atr_window)
    h, low, c = bar_columns(bars, "high", "low", "close")
    if method == "fractal":
        k = window_param("swings", "n", n)
        hi, lo = _fractal(h, low, k)
        bar = np.concatenate([np.flatnonzero(hi), np.flatnonzero(lo)])
        direction = np.repeat(np.array([1, -1], dtype=np.int64), [hi.sum(), lo.sum()])
        conf = bar + k
        order = np.argsort(conf, kind="stable")
        bar, conf, direction = bar[order], conf[order], direction[order]
        level = np.where(direction > 0, h[bar], low[bar])
        return conf, bar, direction, level
    if method == "zigzag":
        thr = positive_param("swings", "threshold", threshold)
        if unit not in ("atr", "percent"):
            raise FeatureError(f"swings: unit must be 'atr' or 'percent', got {unit!r}")
        atr = wilder_atr(h, low, c, a) if unit == "atr" else np.zeros(0)
        return _zigzag(h, low, atr, thr, unit == "atr")
    raise FeatureError(f"swings: method must be 'fractal' or 'zigzag', got {method!r}")


@njit(cache=True, nogil=True)
def wilder_atr(h: np.ndarray, low: np.ndarray, c: np.ndarray, w: int) -> np.ndarray:
    """Wilder's ATR over ``w`` bars, seeded like TA-Lib's ``ATR`` (the mean of the first
    ``w`` true ranges, from bar 1); NaN for the first ``w`` bars."""
    m = h.shape[0]
    out = np.full(m, np.nan)
    if m <= w:
        return out
    a = 0.0
    for i in range(1, m):
        tr = max(h[i], c[i - 1]) - min(low[i], c[i - 1])
        if i < w:
            a += tr
        elif i == w:
            a = (a + tr) / w
        else:
            a = (a * (w - 1) + tr) / w
        if i >= w:
            out[i] = a
    return out


@njit(cache=True, nogil=True)
def _fractal(h: np.ndarray, low: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the bars whose high (low) is strictly above (below) the ``n`` on each side."""
    m = h.shape[0]
    hi = np.zeros(m, dtype=np.bool_)
    lo = np.zeros(m, dtype=np.bool_)
    for i in range(n, m - n):
        is_hi = True
        is_lo = True
        for j in range(i - n, i + n + 1):
            if j != i:
                is_hi = is_hi and h[j] < h[i]
                is_lo = is_lo and low[j] > low[i]
        hi[i] = is_hi
        lo[i] = is_lo
    return hi, lo


@njit(cache=True, nogil=True)
def _zigzag(
    h: np.ndarray, low: np.ndarray, atr: np.ndarray, thr: float, use_atr: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zigzag swings: (confirmation bar, swing bar, direction, level). Before the first
    swing both extremes are tracked and a reversal from the high is checked first."""
    m = h.shape[0]
    conf = np.empty(m, dtype=np.int64)
    bar = np.empty(m, dtype=np.int64)
    direction = np.empty(m, dtype=np.int64)
    level = np.empty(m)
    k = 0
    leg = 0  # +1 tracking a high, -1 tracking a low, 0 both (before the first swing)
    hi, lo, hi_i, lo_i = -np.inf, np.inf, -1, -1
    for i in range(m):
        if leg >= 0 and h[i] > hi:
            hi, hi_i = h[i], i
        if leg <= 0 and low[i] < lo:
            lo, lo_i = low[i], i
        if use_atr:
            d_down = d_up = thr * atr[i]
        else:
            d_down, d_up = hi * thr / 100.0, lo * thr / 100.0
        if leg >= 0 and hi - low[i] >= d_down:  # NaN ATR: no comparison holds
            conf[k], bar[k], direction[k], level[k] = i, hi_i, 1, hi
            k += 1
            leg, lo, lo_i = -1, low[i], i
        elif leg <= 0 and h[i] - lo >= d_up:
            conf[k], bar[k], direction[k], level[k] = i, lo_i, -1, lo
            k += 1
            leg, hi, hi_i = 1, h[i], i
    return conf[:k], bar[:k], direction[:k], level[:k]


@njit(cache=True, nogil=True)
def _grow(a: np.ndarray) -> np.ndarray:
    out = np.empty((a.shape[0] * 2, a.shape[1]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def _emit(
    ev: np.ndarray, k: int, kind: int, d: int, top: float, bottom: float, formed: int, t: int
) -> np.ndarray:
    """Event ``k`` into ``ev`` (grown if full); the level is a bullish zone's top."""
    if k == ev.shape[0]:
        ev = _grow(ev)
    ev[k, _KIND], ev[k, _DIR] = kind, d
    ev[k, _LEVEL] = top if d > 0 else bottom
    ev[k, _TOP], ev[k, _BOTTOM] = top, bottom
    ev[k, _FORMED], ev[k, _CONF], ev[k, _MITIG], ev[k, _FILL] = formed, t, -1, -1
    return ev


@njit(cache=True, nogil=True)
def _heap_push(key: np.ndarray, row: np.ndarray, n: int, k: float, r: int) -> int:
    """Push ``(k, r)`` onto the max-heap of the first ``n`` entries; the new size."""
    i = n
    while i > 0 and key[(i - 1) // 2] < k:
        key[i], row[i] = key[(i - 1) // 2], row[(i - 1) // 2]
        i = (i - 1) // 2
    key[i], row[i] = k, r
    return n + 1


@njit(cache=True, nogil=True)
def _heap_pop(key: np.ndarray, row: np.ndarray, n: int) -> int:
    """Drop the top of the max-heap of the first ``n`` entries; the new size."""
    n -= 1
    k, r = key[n], row[n]
    i = 0
    while 2 * i + 1 < n:
        j = 2 * i + 1
        if j + 1 < n and key[j + 1] > key[j]:
            j += 1
        if key[j] <= k:
            break
        key[i], row[i] = key[j], row[j]
        i = j
    key[i], row[i] = k, r
    return n


@njit(cache=True, nogil=True)
def _scan(
    o: np.ndarray,
    h: np.ndarray,
    low: np.ndarray,
    c: np.ndarray,
    atr: np.ndarray,
    sw_conf: np.ndarray,
    sw_bar: np.ndarray,
    sw_dir: np.ndarray,
    sw_level: np.ndarray,
    eq_tol: float,
) -> tuple[np.ndarray, np.ndarray]:
    m = h.shape[0]
    ev = np.empty((m // 8 + 16, 9))
    k = 0
    st = np.full((N_STATE, m), np.nan)
    st[_BOS_NET:] = 0.0
    # FVG stacks of event rows: unmitigated / unfilled, bullish / bearish; the unfilled
    # stacks carry the running extreme of their near edges (max top, min bottom)
    bull_m = np.empty(m, dtype=np.int64)
    bear_m = np.empty(m, dtype=np.int64)
    bull_f = np.empty(m, dtype=np.int64)
    bear_f = np.empty(m, dtype=np.int64)
    bull_edge = np.empty(m)
    bear_edge = np.empty(m)
    nbm = nbe = nbf = nef = 0
    # order blocks in heaps keyed by the edge that ends them (max-heaps; a bearish block's
    # keys negated): an open bullish block lies below every low since, so a bar ends the
    # blocks at the top of the heap, and the nearest one is the top
    cap = sw_conf.shape[0] + 1
    ob_key = np.empty((4, cap))
    ob_row = np.empty((4, cap), dtype=np.int64)
    n_ob = np.zeros(4, dtype=np.int64)  # bull unmitigated, bull unfilled, bear ..., bear ...
    s = 0
    trend = 0
    last_hi = last_lo = np.nan
    hi_bar = lo_bar = -1
    hi_live = lo_live = False
    pool_hi = pool_lo = np.nan
    pool_hi_bar = pool_lo_bar = -1
    last_bos = last_choch = -1
    for t in range(m):
        # 1. zones confirmed before t: mitigation and fill by this bar
        while nbm > 0 and low[t] <= ev[bull_m[nbm - 1], _TOP]:
            ev[bull_m[nbm - 1], _MITIG] = t
            nbm -= 1
        while nbf > 0 and low[t] <= ev[bull_f[nbf - 1], _BOTTOM]:
            ev[bull_f[nbf - 1], _FILL] = t
            nbf -= 1
        while nbe > 0 and h[t] >= ev[bear_m[nbe - 1], _BOTTOM]:
            ev[bear_m[nbe - 1], _MITIG] = t
            nbe -= 1
        while nef > 0 and h[t] >= ev[bear_f[nef - 1], _TOP]:
            ev[bear_f[nef - 1], _FILL] = t
            nef -= 1
        for q in range(4):
            col = _MITIG if q % 2 == 0 else _FILL
            bound = low[t] if q < 2 else -h[t]
            while n_ob[q] > 0 and bound <= ob_key[q, 0]:
                ev[ob_row[q, 0], col] = t
                n_ob[q] = _heap_pop(ob_key[q], ob_row[q], n_ob[q])
        # 2. swings confirmed at t; two consecutive within eq_tol ATRs make a pool
        while s < sw_conf.shape[0] and sw_conf[s] == t:
            lv = sw_level[s]
            tol = eq_tol * atr[t]
            if sw_dir[s] > 0:
                if abs(lv - last_hi) <= tol:
                    pool_hi, pool_hi_bar = max(lv, last_hi), sw_bar[s]
                last_hi, hi_bar, hi_live = lv, sw_bar[s], True
            else:
                if abs(lv - last_lo) <= tol:
                    pool_lo, pool_lo_bar = min(lv, last_lo), sw_bar[s]
                last_lo, lo_bar, lo_live = lv, sw_bar[s], True
            s += 1
        # 3. breaks of the last swings by the close, and the order block of each
        for d in (1, -1):
            live, lv, sb = (hi_live, last_hi, hi_bar) if d > 0 else (lo_live, last_lo, lo_bar)
            if not (live and (c[t] > lv if d > 0 else c[t] < lv)):
                continue
            kind = _CHOCH if trend == -d else _BOS
            ev = _emit(ev, k, kind, d, lv, lv, sb, t)
            k += 1
            st[_BOS_NET if kind == _BOS else _CHOCH_NET, t] += d
            if kind == _BOS:
                last_bos = t
            else:
                last_choch = t
            trend = d
            if d > 0:
                hi_live = False
            else:
                lo_live = False
            for b in range(t - 1, sb, -1):
                if (c[b] < o[b]) if d > 0 else (c[b] > o[b]):
                    ev = _emit(ev, k, _OB, d, h[b], low[b], b, t)
                    q = 0 if d > 0 else 2
                    km, kf = (h[b], low[b]) if d > 0 else (-low[b], -h[b])
                    n_ob[q] = _heap_push(ob_key[q], ob_row[q], n_ob[q], km, k)
                    n_ob[q + 1] = _heap_push(ob_key[q + 1], ob_row[q + 1], n_ob[q + 1], kf, k)
                    k += 1
                    break
        # 4. sweeps of the pools of equal highs / lows
        if h[t] > pool_hi:
            if c[t] < pool_hi:
                ev = _emit(ev, k, _SWEEP, -1, pool_hi, pool_hi, pool_hi_bar, t)
                k += 1
                st[_SWEEP_NET, t] -= 1
            pool_hi = np.nan
        if low[t] < pool_lo:
            if c[t] > pool_lo:
                ev = _emit(ev, k, _SWEEP, 1, pool_lo, pool_lo, pool_lo_bar, t)
                k += 1
                st[_SWEEP_NET, t] += 1
            pool_lo = np.nan
        # 5. a gap confirmed at t
        if t >= 2 and low[t] > h[t - 2]:
            ev = _emit(ev, k, _FVG, 1, low[t], h[t - 2], t - 1, t)
            bull_m[nbm] = k
            bull_f[nbf] = k
            bull_edge[nbf] = low[t] if nbf == 0 else max(low[t], bull_edge[nbf - 1])
            nbm += 1
            nbf += 1
            k += 1
            st[_FVG_NET, t] = 1
        elif t >= 2 and h[t] < low[t - 2]:
            ev = _emit(ev, k, _FVG, -1, low[t - 2], h[t], t - 1, t)
            bear_m[nbe] = k
            bear_f[nef] = k
            bear_edge[nef] = h[t] if nef == 0 else min(h[t], bear_edge[nef - 1])
            nbe += 1
            nef += 1
            k += 1
            st[_FVG_NET, t] = -1
        # 6. the state at the close of t (price distances; inf when there is no zone)
        st[_TREND, t] = trend
        st[_SINCE_BOS, t] = t - last_bos if last_bos >= 0 else np.inf
        st[_SINCE_CHOCH, t] = t - last_choch if last_choch >= 0 else np.inf
        st[_FVG_BULL, t] = max(0.0, c[t] - bull_edge[nbf - 1]) if nbf > 0 else np.inf
        st[_FVG_BEAR, t] = max(0.0, bear_edge[nef - 1] - c[t]) if nef > 0 else np.inf
        st[_OB_BULL, t] = max(0.0, c[t] - ob_key[0, 0]) if n_ob[0] > 0 else np.inf
        st[_OB_BEAR, t] = max(0.0, -ob_key[2, 0] - c[t]) if n_ob[2] > 0 else np.inf
    return ev[:k], st
