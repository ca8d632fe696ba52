"""Bar quality validation: find what is wrong with a raw bar frame, and repair what can be.

Input is a raw bar frame (a tz-aware ``DatetimeIndex``, columns ``open high low close
volume``, optionally an int ``row`` column with the 1-based source row) or a bar frame.
:func:`validate` returns a :class:`QualityReport` of :class:`Finding` objects:

======================  ========  ====================================================
check                   severity  what
======================  ========  ====================================================
out_of_order            error     rows earlier than the row before (or a reversed file)
duplicate_rows          error     rows identical to a later row (timestamp and values)
conflicting_duplicates  error     same timestamp, different values (a later revision)
off_grid                error     timestamps off the timeframe's grid (partial bars)
nan_prices              error     NaN or infinite open/high/low/close
non_positive_prices     error     prices <= 0
ohlc_inconsistent       error     high < max(open, close), low > min(open, close), high < low
negative_volume         error     volume < 0
nan_volume              warning   volume unknown
gaps                    warning   bars missing while the market is open (calendar-aware)
holiday_gaps            info      bars missing on FX holidays (Dec 25, Jan 1)
zero_volume             warning   zero-volume bars and runs of them
flat_bars               warning   open = high = low = close
repeated_values         warning   a bar's values copied from an earlier bar
stale_runs              warning   runs of bars with an unchanged close
outlier_returns         warning   log returns with a robust z-score above the threshold
market_inferred         info      the market was guessed from the timestamps
======================  ========  ====================================================

Checks of single rows (prices, volume, flat bars, zero volume) count input rows; sequence
checks (gaps, runs, repeats, stale closes, outliers) look at the bars a repair would keep:
sorted, one per timestamp, on the grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from rich.table import Table

from mlengine.data import calendar
from mlengine.data.schema import (
    OHLCV,
    PRICE_COLUMNS,
    BarDataError,
    Timeframe,
    check_bar_frame,
    make_bar_frame,
)

Policy = Literal["strict", "repair", "report"]
Severity = Literal["error", "warning", "info"]
ROW_COLUMN = "row"
MAX_EXAMPLES = 5
_NS_DAY = 86_400 * 10**9


class BarQualityError(BarDataError):
    """Bars with errors that the policy does not allow; ``report`` holds every finding."""

    def __init__(
        self,
        message: str,
        *,
        report: QualityReport,
        source: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message, source=source, row=row, column=column)
        self.report = report


def _stamp(ns: int | np.integer) -> pd.Timestamp:
    return pd.Timestamp(int(ns), tz="UTC")


def _iso(ts: pd.Timestamp) -> str:
    return ts.isoformat()


def _jsonable(value: Any) -> Any:
    """``value`` with timestamps as ISO text, timedeltas as text, numpy scalars as Python."""
    if isinstance(value, pd.Timestamp):
        return _iso(value)
    if isinstance(value, pd.Timedelta):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Finding:
    """One quality check that found something: its first offending timestamps and rows."""

    check: str
    severity: Severity
    count: int
    message: str
    timestamps: list[pd.Timestamp] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    column: str | None = None
    repaired: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass
class Repair:
    """One change made by the ``repair`` policy, with every timestamp and row affected."""

    action: str
    count: int
    message: str
    timestamps: list[pd.Timestamp] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass
class QualityReport:
    """What :func:`validate` found. ``n_bars`` counts the bars a repair keeps (or kept)."""

    symbol: str | None
    timeframe: str
    market: str
    source: str | None
    n_rows: int
    n_bars: int
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None
    findings: list[Finding] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    bars: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No error finding left unrepaired."""
        return all(f.repaired for f in self.errors)

    def finding(self, check: str) -> Finding | None:
        """The finding of ``check``, or None when that check found nothing."""
        return next((f for f in self.findings if f.check == check), None)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the bars, JSON-safe."""
        fields = [k for k in self.__dataclass_fields__ if k not in ("findings", "repairs", "bars")]
        return {
            **{k: _jsonable(getattr(self, k)) for k in fields},
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "repairs": [r.to_dict() for r in self.repairs],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_rich(self) -> Table:
        """A table of findings and repairs for the CLI."""
        status = "[green]OK[/]" if self.ok else "[red]ERRORS[/]"
        table = Table(
            title=f"{self.symbol or self.source or 'bars'} {self.timeframe} ({self.market}): "
            f"{self.n_rows} rows → {self.n_bars} bars  {status}"
        )
        for name in ("check", "severity", "count", "message", "first at"):
            table.add_column(name, overflow="fold")
        style = {"error": "red", "warning": "yellow", "info": "cyan"}
        for f in self.findings:
            sev = f"[{style[f.severity]}]{f.severity}[/]" + (" (repaired)" if f.repaired else "")
            first = _iso(f.timestamps[0]) if f.timestamps else ""
            table.add_row(f.check, sev, str(f.count), f.message, first)
        for r in self.repairs:
            first = _iso(r.timestamps[0]) if r.timestamps else ""
            table.add_row(f"repair: {r.action}", "[green]done[/]", str(r.count), r.message, first)
        return table


# --- input ---------------------------------------------------------------------------------


@dataclass
class _Raw:
    ts: np.ndarray  # int64 ns UTC, file order
    cols: dict[str, np.ndarray]
    rows: np.ndarray | None  # source row numbers, when known

    def where(self, positions: np.ndarray) -> tuple[list[pd.Timestamp], list[int]]:
        """Timestamps and source rows of the first few ``positions``."""
        first = positions[:MAX_EXAMPLES]
        stamps = [_stamp(t) for t in self.ts[first]]
        rows = [] if self.rows is None else [int(r) for r in self.rows[first]]
        return stamps, rows


def _read(bars: pd.DataFrame, source: str | None) -> _Raw:
    if not isinstance(bars, pd.DataFrame):
        raise BarDataError(f"expected a DataFrame of bars, got {type(bars).__name__}")
    idx = bars.index
    if not isinstance(idx, pd.DatetimeIndex):
        raise BarDataError("index is not a DatetimeIndex", source=source)
    if idx.tz is None:
        raise BarDataError("index is naive: timestamps must be tz-aware UTC", source=source)
    rows = None
    if ROW_COLUMN in bars.columns:
        if not pd.api.types.is_integer_dtype(bars[ROW_COLUMN].dtype):
            raise BarDataError("row numbers must be integers", source=source, column=ROW_COLUMN)
        rows = bars[ROW_COLUMN].to_numpy(dtype=np.int64)
    nat = np.flatnonzero(idx.isna())
    if nat.size:
        row = int(rows[nat[0]]) if rows is not None else None
        raise BarDataError("missing timestamp (NaT)", source=source, row=row)
    cols: dict[str, np.ndarray] = {}
    for col in OHLCV:
        if col not in bars.columns:
            raise BarDataError("column is missing", source=source, column=col)
        if not pd.api.types.is_numeric_dtype(bars[col].dtype):
            raise BarDataError(f"dtype {bars[col].dtype} is not numeric", source=source, column=col)
        cols[col] = bars[col].to_numpy(dtype=np.float64, na_value=np.nan)
    ts = np.asarray(idx.tz_convert("UTC").as_unit("ns").asi8)
    return _Raw(ts=ts, cols=cols, rows=rows)


def _infer_timeframe(ts: np.ndarray, source: str | None) -> Timeframe:
    steps = np.diff(np.unique(ts))
    steps = steps[steps % (60 * 10**9) == 0]
    if steps.size == 0:
        raise BarDataError("cannot infer the timeframe: pass timeframe=", source=source)
    values, counts = np.unique(steps, return_counts=True)
    minutes = int(values[np.argmax(counts)]) // (60 * 10**9)
    for unit, size in (("w", 7 * 1440), ("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return Timeframe.parse(f"{minutes // size}{unit}")
    return Timeframe.parse(f"{minutes}m")


# --- checks --------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start positions and lengths of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts


def _mode(values: np.ndarray) -> int:
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[np.argmax(counts)])


def _index(ts: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ts.view("M8[ns]")).tz_localize("UTC")


def _on_grid(ts: np.ndarray, market: str, tf: Timeframe) -> np.ndarray:
    """Timestamps whose phase in the timeframe matches the frame's most common phase.

    Vendors anchor bars in UTC or at a New York time whose UTC offset moves with daylight
    saving (09:30 equity sessions, 17:00 FX days), so for FX and equity a bar is on the grid
    when its phase matches in either clock. Bars of a day or more keep one time of day.
    """
    period = min(tf.delta.value, _NS_DAY)
    phase = ts % period
    ok = phase == _mode(phase)
    if market != "crypto":
        wall = _index(ts).tz_convert(calendar.NEW_YORK).tz_localize(None).as_unit("ns").asi8
        ny_phase = np.asarray(wall) % period
        ok |= ny_phase == _mode(ny_phase)
    return np.asarray(ok)


@dataclass
class _Plan:
    """Which input rows a repair keeps, and why the others go."""

    back: np.ndarray  # positions of rows earlier than the row before
    exact: np.ndarray  # bool: identical to a later row
    superseded: np.ndarray  # bool: same timestamp as a later row with other values
    on_grid: np.ndarray  # bool
    clean: np.ndarray  # positions kept, in time order

    @property
    def keep(self) -> np.ndarray:
        return self.on_grid & ~self.exact & ~self.superseded


def _plan(raw: _Raw, market: str, tf: Timeframe) -> _Plan:
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
    plan = _Plan(back, exact, not_last & ~exact, _on_grid(ts, market, tf), order)
    plan.clean = order[plan.keep[order]]
    return plan


def _structure_findings(raw: _Raw, plan: _Plan, tf: Timeframe) -> list[Finding]:
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


def _row_findings(raw: _Raw) -> list[tuple[Finding, np.ndarray]]:
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


def _gap_findings(ts: np.ndarray, market: str, tf: Timeframe) -> list[Finding]:
    """Missing bars between consecutive bars, judged by the market's calendar."""
    step = tf.delta.value
    slots_per_gap = (np.diff(ts) - 1) // step  # grid slots strictly between two bars
    gaps = np.flatnonzero(slots_per_gap > 0)
    if not gaps.size:
        return []
    counts = slots_per_gap[gaps]
    gap_of = np.repeat(np.arange(gaps.size), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    slots = _index(np.repeat(ts[gaps], counts) + offset * step)
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
                "start": _stamp(starts[g]),
                "end": _stamp(ends[g]),
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
        stamps = [_stamp(t) for t in starts[sel[:MAX_EXAMPLES]]]
        details = {"gaps": int(sel.size), "largest": largest}
        out.append(Finding(check, severity, int(missing.sum()), msg, stamps, details=details))
    return out


def _run_details(ts: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[dict[str, Any]]:
    top = np.argsort(-lengths, kind="stable")[:MAX_EXAMPLES]
    return [{"start": _stamp(ts[starts[i]]), "bars": int(lengths[i])} for i in top]


def _sequence_findings(
    raw: _Raw, clean: np.ndarray, *, outlier_threshold: float, stale_run: int
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


def _repeated_values(raw: _Raw, clean: np.ndarray, flat: np.ndarray) -> list[Finding]:
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
            "ts": _stamp(raw.ts[a]),
            "same_as": _stamp(raw.ts[b]),
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


def _outliers(raw: _Raw, clean: np.ndarray, threshold: float) -> list[Finding]:
    """Log returns whose robust z-score ``(r - median) / (1.4826 MAD)`` exceeds ``threshold``.

    When over half the returns are equal (flat markets) the MAD is 0; then the mean absolute
    deviation times sqrt(pi/2) stands in, the usual fallback (Iglewicz & Hoaglin).
    """
    close = raw.cols["close"][clean]
    valid = np.flatnonzero(np.isfinite(close) & (close > 0))
    if valid.size < 3:
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
        {"ts": _stamp(raw.ts[pos[i]]), "log_return": float(r[bad[i]]), "z": float(z[bad[i]])}
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


# --- policies ------------------------------------------------------------------------------


def _repairs(raw: _Raw, plan: _Plan) -> list[Repair]:
    out: list[Repair] = []

    def record(action: str, positions: np.ndarray, message: str) -> None:
        if positions.size:
            stamps = [_stamp(t) for t in raw.ts[positions]]
            rows = [] if raw.rows is None else [int(r) for r in raw.rows[positions]]
            out.append(Repair(action, positions.size, message, stamps, rows))

    off = np.flatnonzero(~plan.on_grid)
    record("drop_off_grid", off, f"dropped {off.size} partial bars off the grid")
    exact = np.flatnonzero(plan.exact & plan.on_grid)
    record("drop_exact_duplicates", exact, f"dropped {exact.size} rows repeating a later row")
    sup = np.flatnonzero(plan.superseded & plan.on_grid)
    record(
        "drop_superseded_duplicates",
        sup,
        f"dropped {sup.size} rows superseded by a later row of the same timestamp",
    )
    if plan.back.size:
        first = plan.back[:MAX_EXAMPLES]
        out.append(
            Repair(
                "sort",
                plan.back.size,
                f"sorted by time ({plan.back.size} rows were out of order)",
                [_stamp(t) for t in raw.ts[first]],
                [] if raw.rows is None else [int(r) for r in raw.rows[first]],
            )
        )
    return out


def _raise(
    report: QualityReport,
    errors: list[Finding],
    first_at: tuple[pd.Timestamp, int | None] | None = None,
) -> None:
    """Raise :class:`BarQualityError` naming the first error's source, row, column and time."""
    first = errors[0]
    if first_at is None and first.timestamps:
        first_at = (first.timestamps[0], first.rows[0] if first.rows else None)
    when = f" (first at {first_at[0]})" if first_at else ""
    also = ", ".join(f"{f.check} ({f.count})" for f in errors[1:])
    message = f"{first.check}: {first.message}{when}" + (f"; also {also}" if also else "")
    raise BarQualityError(
        message,
        report=report,
        source=report.source,
        row=first_at[1] if first_at else None,
        column=first.column,
    )


def _bar_frame(raw: _Raw, positions: np.ndarray, report: QualityReport) -> pd.DataFrame:
    if report.symbol is None:
        raise BarDataError(
            "the bar frame needs a symbol: pass symbol= or set attrs['symbol']",
            source=report.source,
        )
    frame = make_bar_frame(
        raw.ts[positions].view("M8[ns]"),
        {c: raw.cols[c][positions] for c in OHLCV},
        symbol=report.symbol,
        timeframe=report.timeframe,
    )
    frame.attrs["market"] = report.market
    frame.attrs["source"] = report.source or report.symbol
    return frame


def validate(
    bars: pd.DataFrame,
    *,
    policy: Policy = "report",
    market: str | None = None,
    timeframe: str | None = None,
    symbol: str | None = None,
    source: str | None = None,
    outlier_threshold: float = 10.0,
    stale_run: int = 5,
) -> QualityReport:
    """Check ``bars`` and act on the findings according to ``policy``.

    * ``report``: only report; ``report.bars`` is the input if it already is a bar frame.
    * ``strict``: raise :class:`BarQualityError` on any error finding.
    * ``repair``: sort, drop exact duplicates, keep the last of conflicting duplicates, drop
      off-grid partial bars (each change in ``report.repairs``), then raise like ``strict``
      if errors remain that no repair can fix (bad prices, OHLC, volume).

    ``market``, ``timeframe``, ``symbol`` and ``source`` default to ``bars.attrs``; market
    and timeframe are inferred from the timestamps when absent. ``report.bars`` (strict,
    repair) is a bar frame with attrs symbol, timeframe, market and source.
    """
    if policy not in get_args(Policy):
        raise ValueError(f"unknown policy {policy!r}: use one of {get_args(Policy)}")
    attrs = bars.attrs if isinstance(bars, pd.DataFrame) else {}
    symbol = symbol or attrs.get("symbol")
    source = source or attrs.get("source") or symbol
    raw = _read(bars, source)
    if raw.ts.size == 0:
        raise BarDataError("no bars to validate", source=source)
    tf = Timeframe.parse(timeframe or attrs.get("timeframe") or _infer_timeframe(raw.ts, source))
    findings: list[Finding] = []
    if market or attrs.get("market"):
        kind = calendar.check_market(market or attrs["market"])
    else:
        kind = calendar.infer_market(_index(raw.ts))
        msg = f"market inferred from the timestamps as {kind!r}: pass market= to be sure"
        findings.append(Finding("market_inferred", "info", 1, msg))

    plan = _plan(raw, kind, tf)
    findings += _structure_findings(raw, plan, tf)
    row_checks = _row_findings(raw)
    findings += [f for f, _ in row_checks]
    clean_ts = raw.ts[plan.clean]
    findings += _gap_findings(clean_ts, kind, tf)
    findings += _sequence_findings(
        raw, plan.clean, outlier_threshold=outlier_threshold, stale_run=stale_run
    )
    report = QualityReport(
        symbol=symbol,
        timeframe=tf.name,
        market=kind,
        source=source,
        n_rows=int(raw.ts.size),
        n_bars=int(plan.clean.size),
        first_ts=_stamp(clean_ts[0]) if clean_ts.size else None,
        last_ts=_stamp(clean_ts[-1]) if clean_ts.size else None,
        findings=findings,
    )
    if policy == "report":
        report.bars = _as_bar_frame(bars)
        return report
    if policy == "strict":
        if report.errors:
            _raise(report, report.errors)
        report.bars = _bar_frame(raw, plan.clean, report)
        return report

    report.repairs = _repairs(raw, plan)
    masks = {f.check: m for f, m in row_checks}
    left: list[tuple[Finding, np.ndarray]] = []
    for finding in report.errors:  # structural errors are repaired; bad values only if dropped
        mask = masks.get(finding.check)
        remaining = np.flatnonzero(mask & plan.keep) if mask is not None else np.empty(0, int)
        finding.repaired = remaining.size == 0
        if remaining.size:
            left.append((finding, remaining))
    if left:
        stamps, rows = raw.where(left[0][1])
        _raise(report, [f for f, _ in left], first_at=(stamps[0], rows[0] if rows else None))
    report.bars = _bar_frame(raw, plan.clean, report)
    return report


def _as_bar_frame(bars: pd.DataFrame) -> pd.DataFrame | None:
    try:
        return check_bar_frame(bars)
    except BarDataError:
        return None
