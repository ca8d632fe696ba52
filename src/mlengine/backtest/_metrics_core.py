"""Compiled scans behind :mod:`mlengine.backtest.metrics`.

Hand-written with numba rather than NumPy: NumPy would make a temporary array and a pass over
the bars for every step (returns, wealth, deviations, their squares, running maxima, masks),
and touching that much fresh memory costs more than the arithmetic. Here nothing of the
length of the bars is allocated: returns and wealth are worked out in chunks of 128 bars
into small buffers as each scan needs them.

A *source* of returns and wealth is ``(eq, r, scale, ruin)``:

* from an equity curve: ``eq`` the equity, ``r`` empty, ``scale = eq[0]``, ``ruin`` the
  first bar with ``eq <= 0`` (``len(eq)`` if none). Return ``r_0 = 0``, ``r_k =
  eq[k] / eq[k - 1] - 1``; wealth ``eq[k] / scale``; from ruin on: return -1 then 0, wealth 0.
* from returns: ``eq`` the wealth they compound to, ``r`` the returns, ``scale = 1``,
  ``ruin = len(eq)``.

Sums follow NumPy's pairwise order exactly, so means and standard deviations equal
``np.mean``/``np.std``/``np.add.reduceat`` bit for bit.

Hot loops run over slices with indices from 0 and count flags in integers: a possibly
negative index (numba wraps it around) or a boolean ``&=`` keeps LLVM from vectorising them.
"""

from __future__ import annotations

import numba
import numpy as np

# Wealth within this relative distance of its peak counts as at the peak (round-off in the
# equity must not decide where a drawdown starts or whether it recovered).
PEAK_RTOL = 1e-12
_LEAF = 128  # NumPy's pairwise summation adds up at most 128 values in one loop
_CHECK = 512  # bars per step of the vectorised checks


@numba.njit(cache=True, nogil=True)
def first_unsorted(ns: np.ndarray) -> int:
    """First position whose stamp is not after the previous one, -1 if none."""
    for lo in range(1, ns.size, _CHECK):
        now, before = ns[lo : lo + _CHECK], ns[lo - 1 : lo - 1 + _CHECK]
        bad = 0
        for k in range(now.size):
            bad += now[k] <= before[k]
        if bad:
            for k in range(now.size):
                if now[k] <= before[k]:
                    return lo + k
    return -1


@numba.njit(cache=True, nogil=True)
def equity_check(eq: np.ndarray) -> tuple[int, int]:
    """First non-finite bar (-1 if none) and first bar at or below zero (``len(eq)`` if none)."""
    bad, ruin = -1, eq.size
    for lo in range(0, eq.size, _CHECK):
        x = eq[lo : lo + _CHECK]
        n_bad, n_low = 0, 0
        for k in range(x.size):
            n_bad += not np.isfinite(x[k])
            n_low += x[k] <= 0.0
        for k in range(x.size if n_bad and bad < 0 else 0):
            if not np.isfinite(x[k]):
                bad = lo + k
                break
        for k in range(x.size if n_low and ruin == eq.size else 0):
            if x[k] <= 0.0:
                ruin = lo + k
                break
        if bad >= 0 and ruin < eq.size:
            break
    return bad, ruin


# --- the source, a chunk at a time -----------------------------------------------------------


@numba.njit(cache=True, nogil=True, error_model="numpy")
def fill_returns(
    eq: np.ndarray, r: np.ndarray, ruin: int, lo: int, n: int, out: np.ndarray
) -> None:
    """``out[:n]`` = the returns of bars ``lo .. lo + n - 1``."""
    if r.size:  # a loop: numba's slice assignment is slow to compile
        src = r[lo : lo + n]
        for i in range(src.size):
            out[i] = src[i]
        return
    first = 1 if lo == 0 else 0
    now, before, dest = eq[lo + first : lo + n], eq[lo + first - 1 : lo + n - 1], out[first:n]
    for i in range(dest.size):
        dest[i] = now[i] / before[i] - 1.0
    if first:
        out[0] = 0.0
    for k in range(max(lo, ruin), lo + n):
        out[k - lo] = -1.0 if k == ruin else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def return_at(eq: np.ndarray, r: np.ndarray, ruin: int, k: int) -> float:
    """The return of bar ``k``."""
    if r.size:
        return r[k]
    if k >= ruin:
        return -1.0 if k == ruin else 0.0
    return eq[k] / eq[k - 1] - 1.0 if k else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def fill_wealth(eq: np.ndarray, scale: float, ruin: int, lo: int, n: int, out: np.ndarray) -> None:
    """``out[:n]`` = the wealth after bars ``lo .. lo + n - 1``."""
    now, dest = eq[lo : lo + n], out[:n]
    for i in range(dest.size):
        dest[i] = now[i] / scale
    for k in range(max(lo, ruin), lo + n):
        out[k - lo] = 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def wealth_points(eq: np.ndarray, scale: float, ruin: int, ks: np.ndarray) -> np.ndarray:
    """Wealth at positions ``ks`` of the wealth with the start (1) before bar 0 prepended."""
    out = np.empty(ks.size)
    for i in range(ks.size):
        b = ks[i] - 1
        out[i] = 1.0 if b < 0 else (eq[b] / scale if b < ruin else 0.0)
    return out


# --- NumPy's pairwise summation --------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _term(v: float, center: float, kind: int) -> float:
    if kind == 0:
        return v
    d = v - center if kind == 1 else min(v, 0.0)
    return d * d


@numba.njit(cache=True, nogil=True)
def _block(a: np.ndarray, shift: float, center: float, kind: int) -> float:
    """A leaf (at most 128 values) of the pairwise sum of ``_term(a[i] - shift)``: NumPy's
    eight interleaved partial sums."""
    res, n = 0.0, a.size
    if n < 8:
        for i in range(n):
            res += _term(a[i] - shift, center, kind)
        return res
    r0, r1 = _term(a[0] - shift, center, kind), _term(a[1] - shift, center, kind)
    r2, r3 = _term(a[2] - shift, center, kind), _term(a[3] - shift, center, kind)
    r4, r5 = _term(a[4] - shift, center, kind), _term(a[5] - shift, center, kind)
    r6, r7 = _term(a[6] - shift, center, kind), _term(a[7] - shift, center, kind)
    stop = n - n % 8
    for i in range(8, stop, 8):
        r0 += _term(a[i] - shift, center, kind)
        r1 += _term(a[i + 1] - shift, center, kind)
        r2 += _term(a[i + 2] - shift, center, kind)
        r3 += _term(a[i + 3] - shift, center, kind)
        r4 += _term(a[i + 4] - shift, center, kind)
        r5 += _term(a[i + 5] - shift, center, kind)
        r6 += _term(a[i + 6] - shift, center, kind)
        r7 += _term(a[i + 7] - shift, center, kind)
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(stop, n):
        res += _term(a[i] - shift, center, kind)
    return res


@numba.njit(cache=True, nogil=True)
def _pairwise(
    eq: np.ndarray,
    r: np.ndarray,
    ruin: int,
    lo: int | np.int64,
    n: int,
    shift: float,
    center: float,
    kinds: tuple[np.int64, np.int64],
    buf: np.ndarray,
) -> tuple[float, float]:
    """Two pairwise sums over the returns ``x`` of bars ``lo .. lo + n - 1``: of ``x - shift``
    (kind 0), ``(x - shift - center) ** 2`` (kind 1) or ``min(x - shift, 0) ** 2`` (kind 2),
    one per entry of ``kinds`` (-1: none). ``np.add.reduce(x) == 0.0 + this``.

    NumPy halves a range (at a multiple of 8) until at most 128 values are left; the halving
    runs on an explicit stack here, as numba cannot cache recursive functions (numba#6061).
    """
    todo_lo, todo_n = np.empty(256, np.int64), np.empty(256, np.int64)  # n = -1: add up two
    sums = np.empty((128, 2))
    todo_lo[0], todo_n[0], top, depth = lo, n, 1, 0
    while top:
        top -= 1
        start, size = int(todo_lo[top]), int(todo_n[top])
        if size < 0:
            depth -= 1
            sums[depth - 1, 0] += sums[depth, 0]
            sums[depth - 1, 1] += sums[depth, 1]
        elif size <= _LEAF:
            fill_returns(eq, r, ruin, start, size, buf)
            for j in range(2):
                kind = int(kinds[j])
                sums[depth, j] = _block(buf[:size], shift, center, kind) if kind >= 0 else 0.0
            depth += 1
        else:
            half = size // 2
            half -= half % 8
            todo_n[top] = -1  # once both halves are done (the left one first)
            todo_lo[top + 1], todo_n[top + 1] = start + half, size - half
            todo_lo[top + 2], todo_n[top + 2] = start, half
            top += 3
    return sums[0, 0], sums[0, 1]


# --- the metrics' scans ----------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def moments(
    eq: np.ndarray,
    r: np.ndarray,
    ruin: int,
    rf: float,
    starts: np.ndarray,
    counts: np.ndarray,
) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """Sums of ``x = r - rf``, of ``(x - mean) ** 2`` and of ``min(x, 0) ** 2`` (as NumPy's
    ``sum``); per segment of bars the sum of ``r`` and of its squared deviations from the
    segment's mean (as ``np.add.reduceat``: the first term plus the pairwise sum of the rest)."""
    n, buf = eq.size, np.empty(_LEAF)
    # np.int64: plain ints rather than literals, or numba compiles _pairwise for each call
    start, plain, squared = np.int64(0), np.int64(0), np.int64(1)
    losses, none = np.int64(2), np.int64(-1)
    total, downside = _pairwise(eq, r, ruin, start, n, rf, 0.0, (plain, losses), buf)
    total, downside = 0.0 + total, 0.0 + downside
    squares = 0.0 + _pairwise(eq, r, ruin, start, n, rf, total / n, (squared, none), buf)[0]
    seg_sum, seg_squares = np.empty(starts.size), np.empty(starts.size)
    for i in range(starts.size):
        first, lo, size = return_at(eq, r, ruin, starts[i]), starts[i] + 1, counts[i] - 1
        seg_sum[i] = first
        if size:
            seg_sum[i] += _pairwise(eq, r, ruin, lo, size, 0.0, 0.0, (plain, none), buf)[0]
        mean = seg_sum[i] / counts[i]
        seg_squares[i] = (first - mean) * (first - mean)
        if size:
            seg_squares[i] += _pairwise(eq, r, ruin, lo, size, 0.0, mean, (squared, none), buf)[0]
    return total, squares, downside, seg_sum, seg_squares


@numba.njit(cache=True, nogil=True)
def wealth_scan(
    eq: np.ndarray,
    r: np.ndarray,
    scale: float,
    ruin: int,
    starts: np.ndarray,
    counts: np.ndarray,
) -> tuple[float, int, int, int, np.ndarray, bool, np.ndarray]:
    """Deepest drawdown of the wealth (depth, peak, trough, recovery or -1, as positions in
    the wealth with the start prepended) and the deepest within each segment of bars
    (from the wealth before its first bar); whether the returns are constant overall and
    within each segment. The segments must tile the bars.

    A depth ``1 - v / peak`` is only worked out at a new low since the peak last moved: it
    falls as ``v`` rises, so a bar above that low cannot be deeper (the same result as
    dividing at every bar).
    """
    n, near = eq.size, 1.0 - PEAK_RTOL
    buf_r, buf_w = np.empty(_LEAF), np.empty(_LEAF)
    peak_value, threshold, low = 1.0, near, np.inf
    peak, depth, best_peak, best_value, trough = 0, 0.0, 0, 1.0, 0
    seg_depth = np.zeros(starts.size)
    seg_const = np.zeros(starts.size, dtype=np.bool_)
    first_r, n_diff, wealth = return_at(eq, r, ruin, starts[0]), 0, 1.0
    for i in range(starts.size):
        top, worst, seg_low, seg_diff = wealth, 0.0, np.inf, 0
        seg_first = return_at(eq, r, ruin, starts[i])
        n_diff += seg_first != first_r
        for lo in range(starts[i], starts[i] + counts[i], _LEAF):
            size = min(_LEAF, starts[i] + counts[i] - lo)
            fill_returns(eq, r, ruin, lo, size, buf_r)
            fill_wealth(eq, scale, ruin, lo, size, buf_w)
            rets, values = buf_r[:size], buf_w[:size]
            for j in range(size):
                seg_diff += rets[j] != seg_first
            for j in range(size):
                k, v = lo + j + 1, values[j]
                if v >= threshold:  # at (or back at) the peak
                    peak, low = k, np.inf
                    if v > peak_value:
                        peak_value, threshold = v, v * near
                elif v < low:
                    low = v
                    if 1.0 - v / peak_value > depth + PEAK_RTOL:  # a tie keeps the first
                        depth, trough = 1.0 - v / peak_value, k
                        best_peak, best_value = peak, peak_value
                if v > top:
                    top, seg_low = v, np.inf
                elif v < seg_low:
                    seg_low = v
                    if top > 0.0 and 1.0 - v / top > worst:
                        worst = 1.0 - v / top
            wealth = values[size - 1]
        seg_depth[i], seg_const[i] = worst, seg_diff == 0
        n_diff += seg_diff
    recovery = -1
    if depth > 0.0:
        for lo in range(trough, n, _LEAF):  # wealth position k is bar k - 1
            size = min(_LEAF, n - lo)
            fill_wealth(eq, scale, ruin, lo, size, buf_w)
            for j in range(size):
                if buf_w[j] >= best_value * near:
                    recovery = lo + j + 1
                    break
            if recovery >= 0:
                break
    return depth, best_peak, trough, recovery, seg_depth, n_diff == 0, seg_const


@numba.njit(cache=True, nogil=True)
def exposure_scan(x: np.ndarray) -> tuple[int, float, int]:
    """Of exposures ``x`` (symbols × bars): bars holding any position, the sum of
    ``|Δexposure|`` (from 0; bar by bar, symbols within a bar) and the first bar with a
    non-finite exposure (-1 if none)."""
    m, n = x.shape
    held, traded, n_bad = 0, 0.0, 0
    if m == 1:  # one symbol: a plain loop along the row
        row = x[0]
        prev = 0.0
        for t in range(n):
            v = row[t]
            traded += abs(v - prev)
            held += v != 0.0
            n_bad += not np.isfinite(v)
            prev = v
    else:
        for t in range(n):
            holding = False
            for j in range(m):
                v = x[j, t]
                traded += abs(v - x[j, t - 1]) if t > 0 else abs(v - 0.0)
                holding |= v != 0.0
                n_bad += not np.isfinite(v)
            held += holding
    for t in range(n if n_bad else 0):  # the error path: find the first bad bar
        for j in range(m):
            if not np.isfinite(x[j, t]):
                return held, traded, t
    return held, traded, -1


@numba.njit(cache=True, nogil=True)
def direction_scan(signal: np.ndarray, close: np.ndarray) -> tuple[int, int, int]:
    """Of a signal and its closes (symbols × bars): hits and counted bars of the signal's
    direction vs the next close, and the first bar with a NaN signal (-1 if none).
    Branch-free: the signs are a coin flip to the branch predictor."""
    m, n = signal.shape
    hits, known, nans = 0, 0, 0
    for j in range(m):
        s_row, now, after = signal[j, : n - 1], close[j, : n - 1], close[j, 1:]
        for t in range(s_row.size):
            s, move = s_row[t], after[t] - now[t]
            nans += np.isnan(s)
            counted = int((s != 0.0) & np.isfinite(move))
            known += counted
            hits += counted & int(((s > 0.0) & (move > 0.0)) | ((s < 0.0) & (move < 0.0)))
        nans += np.isnan(signal[j, n - 1]) if n else 0
    for t in range(n if nans else 0):  # the error path: find the first bad bar
        for j in range(m):
            if np.isnan(signal[j, t]):
                return hits, known, t
    return hits, known, -1
