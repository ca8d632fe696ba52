"""The compiled core of the backtest engine: one numba loop over the bars of one sleeve.

Everything here works on NumPy arrays (prices as float64, decisions per bar); the public
API in :mod:`mlengine.backtest.engine` validates the input and builds the result frames.
Besides :func:`simulate`, the single-pass checks of bars and order intents and the rolling
true range used by the sizing live here, as does the engine's error type.

Time convention: the decision of bar ``t`` (made at its close) is acted on at the open of
bar ``t + 1``. Positions are kept at average cost; a fill that reduces a position writes one
ledger row for the units it closes (so partial closes split rows), carrying the matching
share of the entry fees and slippage.

Fills pay, on top of the reference price, an adverse amount
``adj = ref * (half_spread + slippage_rate) + slippage_range * (high - low)`` (the high-low
range of the bar in which the fill happens), and a commission of ``rate * |units| * fill +
fixed``. A target exposure ``e`` is reached *after* costs: the new units ``u`` satisfy
``u * open = e * (equity at the open - costs of the trade)``, so ``|e| = 1`` never borrows.

The loop never reallocates: the caller passes the output and ledger arrays and the state;
when the ledger could overflow, :func:`simulate` returns the bar it stopped at and the
caller resumes it with a larger ledger (reallocating inside the loop costs reference
counting on every bar).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from mlengine.data.schema import MLEngineError


class BacktestInputError(MLEngineError, ValueError):
    """Input the engine cannot simulate honestly; the message names what and where."""


MODE_TARGET = 0
MODE_INTENT = 1

REASONS: tuple[str, ...] = ("signal", "stop", "target", "time", "end")
_SIGNAL, _STOP, _TARGET, _TIME, _END = 0, 1, 2, 3, 4

# ledger columns (all float64; indices and codes are exact small integers)
LEDGER_COLUMNS: tuple[str, ...] = (
    "side",
    "entry_idx",
    "exit_idx",
    "entry_price",
    "exit_price",
    "size",
    "fees",
    "slippage",
    "bars_held",
    "reason",
)
N_LEDGER = len(LEDGER_COLUMNS)
ROWS_PER_BAR = 3  # at most: an exit at the open, a stop or target, the final close

# rows of the per-bar output
OUT_CASH, OUT_UNITS, OUT_EQUITY, OUT_SIGNAL, OUT_EXPOSURE = 0, 1, 2, 3, 4
N_OUT = 5

# slots of the state (position at average cost, order levels, flags)
_CASH, _UNITS, _AVG, _EIDX, _EFEES, _ESLIP = 0, 1, 2, 3, 4, 5
_SL, _TP, _MB, _SIZE, _DEAD = 6, 7, 8, 9, 10
N_STATE = 11


def new_state(capital: float) -> np.ndarray:
    """The state of a flat sleeve holding ``capital``."""
    state = np.zeros(N_STATE)
    state[_CASH] = capital
    state[_EIDX] = -1.0
    state[_SL] = state[_TP] = np.nan
    return state


@njit(cache=True)
def first_bad_bar(
    ns: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray
) -> tuple[int, int]:
    """The first bar that breaks the rules and why: 1 = timestamp not after the previous
    one, 2..5 = open/high/low/close not positive and finite, 6 = high/low do not bracket
    open/close; (-1, 0) when all is well."""
    inf = np.inf
    n_bad = 0  # a branch-free pass first (it vectorises); the search only on failure
    for i in range(1, ns.shape[0]):
        n_bad += ns[i] <= ns[i - 1]
    for i in range(ns.shape[0]):
        oi, hi, li, ci = o[i], h[i], lo[i], c[i]
        good = (oi > 0.0) & (oi < inf) & (ci > 0.0) & (ci < inf) & (li > 0.0) & (hi < inf)
        n_bad += not (good & (hi >= oi) & (hi >= ci) & (li <= oi) & (li <= ci))
    if n_bad == 0:
        return -1, 0
    for i in range(ns.shape[0]):
        if i > 0 and ns[i] <= ns[i - 1]:
            return i, 1
        for k, v in enumerate((o[i], h[i], lo[i], c[i])):
            if not (0.0 < v < inf):
                return i, 2 + k
        if h[i] < max(o[i], c[i]) or lo[i] > min(o[i], c[i]):
            return i, 6
    return -1, 0


INTENT_ERRORS: tuple[str, ...] = (  # codes of check_intents
    "",
    "side not in {-1, 0, 1}",
    "size not in (0, 1]",
    "stop_loss not a positive price",
    "stop_loss on the wrong side of the decision close for the intent's side",
    "take_profit not a positive price",
    "take_profit on the wrong side of the decision close for the intent's side",
    "max_bars not a whole number >= 0",
    "exit not a bool",
    "NaN side (use 0 for no intent)",
)


@njit(cache=True)
def check_intents(
    close: np.ndarray,
    side: np.ndarray,
    size: np.ndarray,
    stop: np.ndarray,
    take: np.ndarray,
    max_bars: np.ndarray,
    exit_flag: np.ndarray,
) -> tuple[int, int]:
    """The first bad order intent: (code, bar), code an index into ``INTENT_ERRORS`` (0 when
    all is well). An empty optional array means the column is absent (its default). A NaN
    side anywhere is reported first (code 9)."""
    n_nan = 0  # a branch-free pass first (it vectorises); the search only on failure
    for i in range(side.shape[0]):
        n_nan += side[i] != side[i]
    if n_nan:
        for i in range(side.shape[0]):
            if side[i] != side[i]:
                return 9, i
    for i in range(close.shape[0]):
        if exit_flag.shape[0] and exit_flag[i] != 0.0 and exit_flag[i] != 1.0:
            return 8, i
        d = side[i]
        if d == 0.0:
            continue
        if d != 1.0 and d != -1.0:
            return 1, i
        if size.shape[0] and not (0.0 < size[i] <= 1.0):
            return 2, i
        if stop.shape[0] and stop[i] == stop[i]:
            if not (0.0 < stop[i] < np.inf):
                return 3, i
            if d * (close[i] - stop[i]) <= 0.0:
                return 4, i
        if take.shape[0] and take[i] == take[i]:
            if not (0.0 < take[i] < np.inf):
                return 5, i
            if d * (take[i] - close[i]) <= 0.0:
                return 6, i
        mb = max_bars[i] if max_bars.shape[0] else 0.0
        if mb == mb and (not (0.0 <= mb < 2.0**53) or mb != np.floor(mb)):
            return 7, i
    return 0, -1


@njit(cache=True)
def volatility_size(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    direction: np.ndarray,
    window: int,
    range_to_sigma: float,
    annualise: float,
    target: float,
    cap: float,
) -> np.ndarray:
    """``min(cap, target / vol)`` per bar, ``vol = mean_true_range / close / range_to_sigma *
    annualise`` (0 where ``vol`` is not positive and finite, the warm-up included, and where
    ``direction`` is 0).

    Fused with :func:`mean_true_range` rather than composed from it: the sizing of a million
    bars otherwise spends most of its time allocating temporaries. The operations and their
    order are those of the composed form, so the values are identical.
    """
    n = close.shape[0]
    out = np.empty(n)  # the rolling sum of the true range first, then the size in place
    tr = np.empty(window)  # the last ``window`` true ranges, a ring
    acc = 0.0
    slot = 0  # t % window, kept without an integer division per bar
    for t in range(n):
        rng = high[t] - low[t]
        if t > 0:
            rng = max(rng, abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
        old = tr[slot]
        tr[slot] = rng
        if slot == 0 and t >= window:
            acc = 0.0
            for k in range(window):  # the window in time order: slots 1.., then 0
                acc += tr[(k + 1) % window]
        else:
            acc += rng
            if t >= window:
                acc -= old
        out[t] = acc if t >= window - 1 else np.nan
        slot += 1
        if slot == window:
            slot = 0
    for t in range(n):  # the divisions only where they are used: intents are often sparse
        if direction[t] == 0.0:
            out[t] = 0.0
            continue
        vol = out[t] / window / close[t] / range_to_sigma * annualise
        m = min(cap, target / vol)
        out[t] = m if (vol > 0.0) & (m - m == 0.0) else 0.0  # m - m == 0: m is finite
    return out


@njit(cache=True)
def mean_true_range(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int
) -> np.ndarray:
    """Rolling mean of the true range over ``window`` bars (NaN before), from bars <= t.

    Hand-written rather than pandas' rolling mean: one pass instead of the half-dozen
    1M-element temporaries the vectorised form needs (it is on the sizing hot path); the sum
    is recomputed exactly every ``window`` bars so that rounding cannot drift.
    """
    n = close.shape[0]
    out = np.full(n, np.nan)
    tr = np.empty(n)
    acc = 0.0
    for t in range(n):
        rng = high[t] - low[t]
        if t > 0:
            rng = max(rng, abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
        tr[t] = rng
        if t % window == 0 and t >= window:
            acc = 0.0
            for k in range(t - window + 1, t + 1):
                acc += tr[k]
        else:
            acc += rng
            if t >= window:
                acc -= tr[t - window]
        if t >= window - 1:
            out[t] = acc / window
    return out


# Explicit signatures for the helpers: one compiled version each, whatever literal constants
# the call sites pass (numba would otherwise specialise on them and compile many times).
_f8, _i8, _b1 = types.float64, types.int64, types.boolean
_VEC = types.Array(_f8, 1, "C")
_LEDGER = types.Array(_f8, 2, "C")


@njit(_f8(_f8, _f8, _f8, _f8, _f8, _f8, _f8), cache=True)
def _target_units(
    e: float, equity: float, u0: float, price: float, adj: float, commission: float, fixed: float
) -> float:
    """Units that make the exposure ``e`` of the equity left after this trade's costs."""
    naive = e * equity / price
    if naive == u0:
        return u0
    s = 1.0 if naive > u0 else -1.0
    k = adj + commission * (price + s * adj)  # cost per unit traded
    if s > 0:
        den = price + e * k
        u = e * (equity + u0 * k - fixed) / den
    else:
        den = price - e * k
        u = e * (equity - u0 * k - fixed) / den
    if den <= 0.0 or (u - u0) * s <= 0.0:  # absurd costs, or the fixed fee eats the change
        return u0
    return u


@njit(_i8(_VEC, _LEDGER, _i8, _i8, _f8, _f8, _f8, _f8, _f8, _i8, _b1), cache=True)
def _fill(
    st: np.ndarray,
    ledger: np.ndarray,
    nrow: int,
    t: int,
    delta: float,
    ref: float,
    adj: float,
    commission: float,
    fixed: float,
    reason: int,
    at_open: bool,
) -> int:
    """Trade ``delta`` units at ``ref`` (plus the adverse ``adj``); book what it closes."""
    if delta == 0.0:
        return nrow
    s = 1.0 if delta > 0.0 else -1.0
    fill = max(ref + s * adj, 0.0)
    qty = abs(delta)
    fee = commission * qty * fill + fixed
    slip = qty * abs(fill - ref)
    st[_CASH] -= delta * fill + fee
    u0 = st[_UNITS]
    if u0 * delta < 0.0:  # reduce, close or reverse
        held_units = abs(u0)
        q = min(held_units, qty)
        share_e = q / held_units
        share_x = q / qty
        row = ledger[nrow]
        row[0] = 1.0 if u0 > 0.0 else -1.0
        row[1] = st[_EIDX]
        row[2] = t
        row[3] = st[_AVG]
        row[4] = fill
        row[5] = q
        row[6] = st[_EFEES] * share_e + fee * share_x
        row[7] = st[_ESLIP] * share_e + slip * share_x
        row[8] = t - st[_EIDX] + (0.0 if at_open else 1.0)
        row[9] = reason
        nrow += 1
        if q == held_units:
            st[_UNITS] = 0.0
            st[_AVG] = 0.0
            st[_EFEES] = 0.0
            st[_ESLIP] = 0.0
            st[_EIDX] = -1.0
        else:
            st[_UNITS] = u0 + delta
            st[_EFEES] -= st[_EFEES] * share_e
            st[_ESLIP] -= st[_ESLIP] * share_e
        rest = qty - q
        if rest > 0.0:  # a reversal opens the remainder on the other side
            st[_UNITS] = s * rest
            st[_AVG] = fill
            st[_EIDX] = t
            st[_EFEES] = fee * (rest / qty)
            st[_ESLIP] = slip * (rest / qty)
    else:  # open or add, at average cost
        held_units = abs(u0)
        if held_units == 0.0:
            st[_EIDX] = t
        st[_AVG] = (held_units * st[_AVG] + qty * fill) / (held_units + qty)
        st[_UNITS] = u0 + delta
        st[_EFEES] += fee
        st[_ESLIP] += slip
    return nrow


@njit(_i8(_VEC, _LEDGER, _i8, _i8, _f8, _f8, _f8, _f8, _f8, _f8, _f8), cache=True)
def _levels(
    st: np.ndarray,
    ledger: np.ndarray,
    nrow: int,
    t: int,
    o: float,
    h: float,
    lo: float,
    rate: float,
    slip_range: float,
    commission: float,
    fixed: float,
) -> int:
    """Stop-loss / take-profit of the open position within bar ``t``.

    A level already crossed at the open fills at the open; otherwise the stop is checked
    before the target, so a bar that touches both is a stop.
    """
    u = st[_UNITS]
    sl = st[_SL]
    tp = st[_TP]
    d = 1.0 if u > 0.0 else -1.0
    has_sl = sl == sl
    has_tp = tp == tp
    ref = np.nan
    reason = -1
    at_open = True
    if has_sl and d * (o - sl) <= 0.0:
        ref, reason = o, _STOP
    elif has_tp and d * (o - tp) >= 0.0:
        ref, reason = o, _TARGET
    elif has_sl and ((d > 0.0 and lo <= sl) or (d < 0.0 and h >= sl)):
        ref, reason, at_open = sl, _STOP, False
    elif has_tp and ((d > 0.0 and h >= tp) or (d < 0.0 and lo <= tp)):
        ref, reason, at_open = tp, _TARGET, False
    if reason < 0:
        return nrow
    adj = ref * rate + slip_range * (h - lo)
    return _fill(st, ledger, nrow, t, -u, ref, adj, commission, fixed, reason, at_open)


@njit(cache=True)
def simulate(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    mode: int,
    target: np.ndarray,
    threshold: float,
    side: np.ndarray,
    size: np.ndarray,
    stop: np.ndarray,
    take: np.ndarray,
    max_bars: np.ndarray,
    exit_flag: np.ndarray,
    costs: np.ndarray,
    st: np.ndarray,
    out: np.ndarray,
    ledger: np.ndarray,
    nrow: int,
    start: int,
) -> tuple[int, int]:
    """Simulate bars ``start..`` of one sleeve; returns (the bar it stopped at, ledger rows).

    It stops early, before bar ``t``, when the ledger has fewer than ``ROWS_PER_BAR`` free
    rows. ``out`` (5 x n) receives cash, units, equity, the decided exposure and the held
    exposure at each close; ``st`` is the state (see :func:`new_state`). ``costs`` = (half_spread,
    slippage_rate, slippage_range, commission_rate, fixed). Target mode reads ``target``
    (exposure per bar) and ``threshold`` (< 0: trade when the decided target changes;
    >= 0: rebalance when it differs from the current exposure by more than that). Intent
    mode reads ``side``, ``size``, ``stop``, ``take``, ``max_bars`` and ``exit_flag`` (as
    checked by :func:`check_intents`; an empty optional array: the column is absent).
    """
    n = close.shape[0]
    rate = costs[0] + costs[1]
    slip_range = costs[2]
    commission = costs[3]
    fixed = costs[4]
    intents = mode == MODE_INTENT
    cap = ledger.shape[0] - ROWS_PER_BAR
    # cash, units and the ruin flag live in locals (registers) on the hot path; ``st`` is
    # the record, updated by the fills, and re-read after each of them
    cash = st[_CASH]
    units = st[_UNITS]
    dead = st[_DEAD] != 0.0
    for t in range(start, n):
        if nrow > cap:
            return t, nrow
        o = open_[t]
        if t > 0 and not dead:
            u0 = units
            eq_open = cash + u0 * o
            if eq_open <= 0.0:  # the sleeve is ruined: liquidate, trade no more
                dead = True
                st[_DEAD] = 1.0
                adj = o * rate + slip_range * (high[t] - low[t])
                nrow = _fill(st, ledger, nrow, t, -u0, o, adj, commission, fixed, _END, True)
            elif not intents:
                e = target[t - 1]
                if threshold < 0.0:
                    act = e != (target[t - 2] if t >= 2 else 0.0)
                else:
                    x = u0 * o / eq_open
                    act = abs(e - x) > threshold or (e == 0.0 and u0 != 0.0) or e * x < 0.0
                if act:
                    adj = o * rate + slip_range * (high[t] - low[t])
                    u = _target_units(e, eq_open, u0, o, adj, commission, fixed)
                    nrow = _fill(
                        st, ledger, nrow, t, u - u0, o, adj, commission, fixed, _SIGNAL, True
                    )
            else:
                d = side[t - 1]
                held = 0 if u0 == 0.0 else (1 if u0 > 0.0 else -1)
                adj = 0.0
                if held != 0 or d != 0:
                    adj = o * rate + slip_range * (high[t] - low[t])
                if held != 0:
                    reason = -1
                    if st[_MB] > 0 and t - st[_EIDX] >= st[_MB]:
                        reason = _TIME
                    elif (exit_flag.shape[0] and exit_flag[t - 1] != 0.0) or d == -held:
                        reason = _SIGNAL
                    if reason >= 0:
                        nrow = _fill(
                            st, ledger, nrow, t, -u0, o, adj, commission, fixed, reason, True
                        )
                if d != 0 and (held == 0 or d == -held) and st[_UNITS] == 0.0:
                    frac = size[t - 1] if size.shape[0] else 1.0
                    u = _target_units(d * frac, st[_CASH], 0.0, o, adj, commission, fixed)
                    if u != 0.0:
                        nrow = _fill(
                            st, ledger, nrow, t, u, o, adj, commission, fixed, _SIGNAL, True
                        )
                        st[_SL] = stop[t - 1] if stop.shape[0] else np.nan
                        st[_TP] = take[t - 1] if take.shape[0] else np.nan
                        mb = max_bars[t - 1] if max_bars.shape[0] else 0.0
                        st[_MB] = mb if mb == mb else 0.0
                        st[_SIZE] = frac
            cash = st[_CASH]
            units = st[_UNITS]
        if intents and not dead and units != 0.0:
            h = high[t]
            lo = low[t]
            # a level inside the bar's range (a gap beyond it included, as the open is too)
            if (units > 0.0 and (lo <= st[_SL] or h >= st[_TP])) or (
                units < 0.0 and (h >= st[_SL] or lo <= st[_TP])
            ):
                nrow = _levels(st, ledger, nrow, t, o, h, lo, rate, slip_range, commission, fixed)
                cash = st[_CASH]
                units = st[_UNITS]
        # the exposure decided at this close, for the next bar
        if dead:
            decided = 0.0
        elif not intents:
            decided = target[t]
        else:
            frac = size[t] if size.shape[0] else 1.0
            if units == 0.0:
                decided = side[t] * frac if side[t] != 0 else 0.0
            else:
                d_held = 1 if units > 0.0 else -1
                if side[t] == -d_held:
                    decided = side[t] * frac
                elif (exit_flag.shape[0] and exit_flag[t] != 0.0) or (
                    st[_MB] > 0 and t + 1 - st[_EIDX] >= st[_MB]
                ):
                    decided = 0.0
                else:
                    decided = d_held * st[_SIZE]
        c = close[t]
        if t == n - 1 and units != 0.0:  # close what is left at the last close
            adj = c * rate + slip_range * (high[t] - low[t])
            nrow = _fill(st, ledger, nrow, t, -units, c, adj, commission, fixed, _END, False)
            cash = st[_CASH]
            units = st[_UNITS]
        equity = cash + units * c
        out[OUT_CASH, t] = cash
        out[OUT_UNITS, t] = units
        out[OUT_EQUITY, t] = equity
        out[OUT_SIGNAL, t] = decided
        out[OUT_EXPOSURE, t] = units * c / equity if equity > 0.0 else 0.0
    return n, nrow
