"""The quality checks of :func:`mlengine.data.validate.validate` (its docstring lists them).

Private to :mod:`mlengine.data.validate`. Checks work on :class:`Raw`, the input as int64
nanosecond timestamps and float64 columns in file order; :func:`make_plan` decides which
rows a repair keeps, and the sequence checks look at those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlengine.data import calendar
from mlengine.data._report import MAX_EXAMPLES, Finding, Severity, stamp
from mlengine.data.schema import OHLCV, PRICE_COLUMNS, Timeframe

_NS_DAY = 86_400 * 10**9


# --- the input, and which rows a repair keeps -------------------------------------------------


@dataclass
class Raw:
    """The input bars as arrays, in file order."""

    ts: np.ndarray  # int64 ns UTC, file order
    cols: dict[str, np.ndarray]
    rows: np.ndarray | None  # source row numbers, when known

    def at(self, positions: np.ndarray) -> tuple[list[pd.Timestamp], list[int]]:
        """Timestamps and source rows (none when unknown) of ``positions``."""
        stamps = [stamp(t) for t in self.ts[positions]]
        rows = [] if self.rows is None else [int(r) for r in self.rows[positions]]
        return stamps, rows

    def where(self, positions: np.ndarray) -> tuple[list[pd.Timestamp], list[int]]:
        """Timestamps and source rows of the first few ``positions``."""
        return self.at(positions[:MAX_EXAMPLES])


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start positions and lengths of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts


def mode(values: np.ndarray) -> int:
    """The most common value (the smallest of equally common ones)."""
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[np.argmax(counts)])


def utc_index(ts: np.ndarray) -> pd.DatetimeIndex:
    """A UTC ``DatetimeIndex`` of int64 nanoseconds."""
    return pd.DatetimeIndex(ts.view("M8[ns]")).tz_localize("UTC")


def _on_grid(ts: np.ndarray, market: str, tf: Timeframe) -> np.ndarray:
    """Timestamps whose phase in the timeframe matches the frame's most common phase.

    Vendors anchor bars in UTC or at a New York time whose UTC offset moves with daylight
    saving (09:30 equity sessions, 17:00 FX days), so for FX and equity a bar is on the grid
    when its phase matches in either clock. Bars of a day or more keep one time of day.
    """
    period = min(tf.delta.value, _NS_DAY)
    phase = ts % period
    ok = phase == mode(phase)
    if market != "crypto":
        wall = utc_index(ts).tz_convert(calendar.NEW_YORK).tz_localize(None).as_unit("ns").asi8
        ny_phase = np.asarray(wall) % period
        ok |= ny_phase == mode(ny_phase)
    return np.asarray(ok)


@dataclass
class Plan:
    """Which input rows a repair keeps, and why the others go."""

    back: np.ndarray  # positions of rows earlier than the row before
    exact: np.ndarray  # bool: identical to a later row
    superseded: np.ndarray  # bool: same timestamp as a later row with other values
    on_grid: np.ndarray  # bool
    clean: np.ndarray  # positions kept, in time order

    @property
    def keep(self) -> np.ndarray:
        return self.on_grid & ~self.exact & ~self.superseded


def make_plan(raw: Raw, market: str, tf: Timeframe) -> Plan:
    """Sort stably, keep the last row of each timestamp (dropping exact repeats), drop off-grid."""
    ts = raw.ts
    n = ts.size
    back = np.flatnonzero(np.diff(ts) < 0) + 1
    order = np.argsort(ts, kind="stable")  # stable: file order within a timestamp
    st = ts[order]
    same_next = np.concatenate((st[1:] == st[:-1], [False]))
    same_prev = np.concatenate(([False], st[1:] == st[:-1]))
    not_last = np.zeros(n, dtype=bool)
    not_last[order] = same_next
    in_group = np.zeros(n, dtype=bool)
    in_group[order] = same_next | same_prev
    exact = np.zeros(n, dtype=bool)
    group = np.flatnonzero(in_group)
    if group.size:  # compare values only where timestamps collide: cheap on clean data
        values = pd.DataFrame({"ts": ts[group], **{c: raw.cols[c][group] for c in OHLCV}})
        exact[group] = values.duplicated(keep="last").to_numpy()
    plan = Plan(back, exact, not_last & ~exact, _on_grid(ts, market, tf), order)
    plan.clean = order[plan.keep[order]]
    return plan


# --- checks ------------------------------------------------------------------------------------


def structure_findings(raw: Raw, plan: Plan, tf: Timeframe) -> list[Finding]:
    """Order, duplicate and off-grid checks, from the plan."""
    out: list[Finding] = []
    n = raw.ts.size
    if plan.back.size:
        steps = np.diff(raw.ts)
        forward = np.flatnonzero(steps > 0) + 1
        reversed_ = plan.back.size > forward.size  # most rows newest first
        details: dict[str, Any] = {"reversed": reversed_}
        if reversed_:
            msg = (
                f"rows are in reverse time order (newest first): {plan.back.size} of {n} rows"
                " follow a later one"
            )
            if forward.size:  # rows that break even the reversed order
                stamps, rows = raw.where(forward)
                details.update(against_file_order=int(forward.size), first_against=stamps)
                msg += f"; {forward.size} rows break that order too (first at {stamps[0]})"
        else:
            msg = f"{plan.back.size} rows are earlier than the row before them"
        stamps, rows = raw.where(plan.back)
        out.append(
            Finding("out_of_order", "error", plan.back.size, msg, stamps, rows, details=details)
        )
    exact = np.flatnonzero(plan.exact)
    if exact.size:
        msg = f"{exact.size} rows repeat a later row exactly (timestamp and values)"
        out.append(Finding("duplicate_rows", "error", exact.size, msg, *raw.where(exact)))
    sup = np.flatnonzero(plan.superseded)
    if sup.size:
        n_ts = np.unique(raw.ts[sup]).size
        msg = (
            f"{sup.size} rows share their timestamp with a later row of other values "
            f"({n_ts} timestamps); the last in file order is the revision"
        )
        out.append(Finding("conflicting_duplicates", "error", sup.size, msg, *raw.where(sup)))
    off = np.flatnonzero(~plan.on_grid)
    if off.size:
        msg = f"{off.size} timestamps off the {tf} grid (partial bars)"
        out.append(Finding("off_grid", "error", off.size, msg, *raw.where(off)))
    return out


def row_findings(raw: Raw) -> list[tuple[Finding, np.ndarray]]:
    """Checks of single rows, over every input row; each with its mask of offending rows."""
    o, h, lo, c, v = (raw.cols[k] for k in OHLCV)
    prices = np.column_stack([raw.cols[k] for k in PRICE_COLUMNS])
    finite = np.isfinite(prices)
    ok = finite.all(axis=1)
    vol = v[:, None]
    # (check, severity, offending cells, their columns, what is wrong)
    checks: list[tuple[str, Severity, np.ndarray, tuple[str, ...], str]] = [
        ("nan_prices", "error", ~finite, PRICE_COLUMNS, "NaN or infinite prices"),
        ("non_positive_prices", "error", finite & (prices <= 0), PRICE_COLUMNS, "prices <= 0"),
        (
            "ohlc_inconsistent",
            "error",
            np.column_stack(
                [ok & ((h < np.maximum(o, c)) | (h < lo)), ok & (lo > np.minimum(o, c))]
            ),
            ("high", "low"),
            "high < max(open, close) or high < low, or low > min(open, close)",
        ),
        ("negative_volume", "error", vol < 0, ("volume",), "volume < 0"),
        ("nan_volume", "warning", ~np.isfinite(vol), ("volume",), "unknown volume"),
    ]
    out: list[tuple[Finding, np.ndarray]] = []
    for check, severity, cells, cols, what in checks:
        mask = np.asarray(cells.any(axis=1), dtype=bool)
        bad = np.flatnonzero(mask)
        if not bad.size:
            continue
        per_col = {col: int(cells[:, j].sum()) for j, col in enumerate(cols)}
        column = cols[int(np.argmax(cells[bad[0]]))]
        detail = ", ".join(f"{k} {n}" for k, n in per_col.items() if n)
        msg = f"{bad.size} rows with {what} ({detail})"
        stamps, rows = raw.where(bad)
        details = {"by_column": per_col}
        out.append(
            (Finding(check, severity, bad.size, msg, stamps, rows, column, details=details), mask)
        )
    return out


def gap_findings(ts: np.ndarray, market: str, tf: Timeframe) -> list[Finding]:
    """Missing bars between consecutive bars, judged by the market's calendar."""
    step = tf.delta.value
    slots_per_gap = (np.diff(ts) - 1) // step  # grid slots strictly between two bars
    gaps = np.flatnonzero(slots_per_gap > 0)
    if not gaps.size:
        return []
    counts = slots_per_gap[gaps]
    gap_of = np.repeat(np.arange(gaps.size), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    slots = utc_index(np.repeat(ts[gaps], counts) + offset * step)
    is_open = calendar.is_open(market, slots, tf)
    holiday = calendar.is_holiday(market, slots, tf)
    n_open = np.bincount(gap_of, weights=is_open, minlength=gaps.size).astype(np.int64)
    n_hol = np.bincount(gap_of, weights=holiday, minlength=gaps.size).astype(np.int64)
    missing_slot = is_open | holiday
    _, first = np.unique(gap_of[missing_slot], return_index=True)
    _, last_rev = np.unique(gap_of[missing_slot][::-1], return_index=True)
    missing_ts = slots.asi8[missing_slot]
    starts, ends = np.zeros(gaps.size, np.int64), np.zeros(gaps.size, np.int64)
    has = np.unique(gap_of[missing_slot])
    starts[has] = missing_ts[first]
    ends[has] = missing_ts[missing_ts.size - 1 - last_rev] + step
    out: list[Finding] = []
    kinds: tuple[tuple[str, Severity, np.ndarray, str], ...] = (
        ("gaps", "warning", n_hol == 0, "while the market is open"),
        ("holiday_gaps", "info", n_hol > 0, "on FX holidays (Dec 25, Jan 1: expected)"),
    )
    for check, severity, which, where in kinds:
        sel = np.flatnonzero(which & (n_open + n_hol > 0))
        if not sel.size:
            continue
        missing = n_open[sel] + n_hol[sel]
        top = sel[np.argsort(-missing, kind="stable")[:MAX_EXAMPLES]]
        largest = [
            {
                "start": stamp(starts[g]),
                "end": stamp(ends[g]),
                "length": pd.Timedelta(int(ends[g] - starts[g])),
                "missing_bars": int(n_open[g] + n_hol[g]),
            }
            for g in top
        ]
        big = largest[0]
        msg = (
            f"{int(missing.sum())} bars missing in {sel.size} gaps {where}; largest "
            f"{big['start']} → {big['end']} ({big['length']}, {big['missing_bars']} bars)"
        )
        stamps = [stamp(t) for t in starts[sel[:MAX_EXAMPLES]]]
        details = {"gaps": int(sel.size), "largest": largest}
        out.append(Finding(check, severity, int(missing.sum()), msg, stamps, details=details))
    return out


def _run_details(ts: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[dict[str, Any]]:
    top = np.argsort(-lengths, kind="stable")[:MAX_EXAMPLES]
    return [{"start": stamp(ts[starts[i]]), "bars": int(lengths[i])} for i in top]


def sequence_findings(
    raw: Raw, clean: np.ndarray, *, outlier_threshold: float, stale_run: int
) -> list[Finding]:
    """Volume, flat, repeat, stale and outlier checks; sequences over the kept bars."""
    ts = raw.ts[clean]
    o, h, lo, c, v = (raw.cols[k][clean] for k in OHLCV)
    out: list[Finding] = []

    # zero volume and flat bars are counted over every input row, runs over the kept bars
    zero_rows = np.flatnonzero(raw.cols["volume"] == 0)
    if zero_rows.size:
        starts, lengths = _runs(v == 0)
        share = zero_rows.size / raw.ts.size
        runs = lengths >= 2
        msg = (
            f"{zero_rows.size} zero-volume rows ({share:.1%} of {raw.ts.size}); in time order "
            f"{int(runs.sum())} runs of 2+ bars, longest {int(lengths.max(initial=0))} bars"
        )
        longest = _run_details(ts, starts, lengths)
        details = {"share": float(share), "runs": int(runs.sum()), "longest_runs": longest}
        stamps, rows = raw.where(zero_rows)
        out.append(
            Finding(
                "zero_volume",
                "warning",
                zero_rows.size,
                msg,
                stamps,
                rows,
                "volume",
                details=details,
            )
        )

    ro, rh, rl, rc = (raw.cols[k] for k in PRICE_COLUMNS)
    flat_rows = np.flatnonzero((ro == rh) & (rh == rl) & (rl == rc))
    if flat_rows.size:
        msg = f"{flat_rows.size} rows with open = high = low = close"
        out.append(Finding("flat_bars", "warning", flat_rows.size, msg, *raw.where(flat_rows)))

    out.extend(_repeated_values(raw, clean, flat=(o == h) & (h == lo) & (lo == c)))

    same = np.concatenate(([False], c[1:] == c[:-1]))  # close equal to the bar before
    starts, lengths = _runs(same)
    long_runs = lengths + 1 >= stale_run  # a run of k equal steps spans k + 1 bars
    if long_runs.any():
        starts, lengths = starts[long_runs] - 1, lengths[long_runs] + 1
        msg = (
            f"{starts.size} runs of {stale_run}+ bars with an unchanged close, "
            f"longest {int(lengths.max())} bars"
        )
        details = {"longest_runs": _run_details(ts, starts, lengths)}
        stamps, rows = raw.where(clean[starts])
        out.append(
            Finding(
                "stale_runs", "warning", starts.size, msg, stamps, rows, "close", details=details
            )
        )

    out.extend(_outliers(raw, clean, outlier_threshold))
    return out


def _repeated_values(raw: Raw, clean: np.ndarray, flat: np.ndarray) -> list[Finding]:
    """Bars whose open, high, low, close and volume all equal an earlier bar's.

    Real prices and volumes do not repeat exactly; a repeat is a bar copied to the wrong
    timestamp. Flat bars are left to the flat and stale checks (filled outages repeat them).
    """
    keep = clean[~flat]
    # a repeat needs an equal close and volume: narrow down on those two first (fast)
    close, volume = (pd.Series(raw.cols[c][keep]) for c in ("close", "volume"))
    keep = keep[(close.duplicated(keep=False) & volume.duplicated(keep=False)).to_numpy()]
    values = pd.DataFrame({c: raw.cols[c][keep] for c in OHLCV})
    group = values.groupby(list(OHLCV), sort=False, dropna=False).ngroup().to_numpy()
    _, first = np.unique(group, return_index=True)
    copies = np.flatnonzero(values.duplicated(keep="first").to_numpy())
    if not copies.size:
        return []
    originals = keep[first[np.searchsorted(np.unique(group), group[copies])]]
    pairs = [
        {
            "ts": stamp(raw.ts[a]),
            "same_as": stamp(raw.ts[b]),
        }
        for a, b in zip(keep[copies][:MAX_EXAMPLES], originals[:MAX_EXAMPLES], strict=True)
    ]
    msg = (
        f"{copies.size} bars repeat an earlier bar's open, high, low, close and volume exactly "
        f"(first {pairs[0]['ts']}, same as {pairs[0]['same_as']})"
    )
    stamps, rows = raw.where(keep[copies])
    return [
        Finding(
            "repeated_values", "warning", copies.size, msg, stamps, rows, details={"pairs": pairs}
        )
    ]


#: Fewest returns on which the robust z-score of the outlier check is computed.
MIN_OUTLIER_RETURNS = 20


def _outliers(raw: Raw, clean: np.ndarray, threshold: float) -> list[Finding]:
    """Log returns whose robust z-score ``(r - median) / (1.4826 MAD)`` exceeds ``threshold``.

    When over half the returns are equal (flat markets) the MAD is 0; then the mean absolute
    deviation times sqrt(pi/2) stands in, the usual fallback (Iglewicz & Hoaglin). With
    fewer than :data:`MIN_OUTLIER_RETURNS` returns the scale is not estimable (three
    returns, two alike, make any third one look extreme): no finding.
    """
    close = raw.cols["close"][clean]
    valid = np.flatnonzero(np.isfinite(close) & (close > 0))
    if valid.size <= MIN_OUTLIER_RETURNS:
        return []
    r = np.diff(np.log(close[valid]))
    centre = np.median(r)
    scale = 1.4826 * np.median(np.abs(r - centre))
    if scale == 0:
        scale = np.sqrt(np.pi / 2) * np.mean(np.abs(r - r.mean()))
    if not scale > 0:
        return []
    z = (r - centre) / scale
    bad = np.flatnonzero(np.abs(z) > threshold)
    if not bad.size:
        return []
    pos = clean[valid[bad + 1]]  # a return belongs to the bar it ends at
    top = np.argsort(-np.abs(z[bad]), kind="stable")[:MAX_EXAMPLES]
    largest = [
        {"ts": stamp(raw.ts[pos[i]]), "log_return": float(r[bad[i]]), "z": float(z[bad[i]])}
        for i in top
    ]
    msg = (
        f"{bad.size} log returns with |robust z| > {threshold:g}; largest "
        f"{largest[0]['log_return']:+.4f} at {largest[0]['ts']} (z = {largest[0]['z']:.1f})"
    )
    stamps, rows = raw.where(pos)
    details = {"threshold": threshold, "largest": largest}
    return [
        Finding("outlier_returns", "warning", bad.size, msg, stamps, rows, "close", details=details)
    ]
