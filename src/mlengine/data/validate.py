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

from typing import Literal, get_args

import numpy as np
import pandas as pd

from mlengine.data import calendar
from mlengine.data._checks import (
    Plan,
    Raw,
    gap_findings,
    make_plan,
    mode,
    row_findings,
    sequence_findings,
    structure_findings,
    utc_index,
)
from mlengine.data._report import (
    MAX_EXAMPLES,
    BarQualityError,
    Finding,
    QualityReport,
    Repair,
    Severity,
    raise_errors,
    stamp,
)
from mlengine.data._timestamps import timeframe_of_minutes
from mlengine.data.schema import OHLCV, BarDataError, Timeframe, check_bar_frame, make_bar_frame

__all__ = [
    "MAX_EXAMPLES",
    "ROW_COLUMN",
    "BarQualityError",
    "Finding",
    "Policy",
    "QualityReport",
    "Repair",
    "Severity",
    "validate",
]

Policy = Literal["strict", "repair", "report"]
ROW_COLUMN = "row"


# --- input ---------------------------------------------------------------------------------


def _read(bars: pd.DataFrame, source: str | None) -> Raw:
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
    return Raw(ts=ts, cols=cols, rows=rows)


def _infer_timeframe(ts: np.ndarray, source: str | None) -> Timeframe:
    steps = np.diff(np.unique(ts))
    steps = steps[steps % (60 * 10**9) == 0]
    if steps.size == 0:
        raise BarDataError("cannot infer the timeframe: pass timeframe=", source=source)
    return timeframe_of_minutes(mode(steps) // (60 * 10**9))


# --- policies ------------------------------------------------------------------------------


def _repairs(raw: Raw, plan: Plan) -> list[Repair]:
    off = np.flatnonzero(~plan.on_grid)
    exact = np.flatnonzero(plan.exact & plan.on_grid)
    sup = np.flatnonzero(plan.superseded & plan.on_grid)
    drops = (
        ("drop_off_grid", off, f"dropped {off.size} partial bars off the grid"),
        ("drop_exact_duplicates", exact, f"dropped {exact.size} rows repeating a later row"),
        (
            "drop_superseded_duplicates",
            sup,
            f"dropped {sup.size} rows superseded by a later row of the same timestamp",
        ),
    )
    out = [Repair(action, pos.size, msg, *raw.at(pos)) for action, pos, msg in drops if pos.size]
    if plan.back.size:
        msg = f"sorted by time ({plan.back.size} rows were out of order)"
        out.append(Repair("sort", plan.back.size, msg, *raw.where(plan.back)))
    return out


def _bar_frame(raw: Raw, positions: np.ndarray, report: QualityReport) -> pd.DataFrame:
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
        kind = calendar.infer_market(utc_index(raw.ts))
        msg = f"market inferred from the timestamps as {kind!r}: pass market= to be sure"
        findings.append(Finding("market_inferred", "info", 1, msg))

    plan = make_plan(raw, kind, tf)
    findings += structure_findings(raw, plan, tf)
    row_checks = row_findings(raw)
    findings += [f for f, _ in row_checks]
    clean_ts = raw.ts[plan.clean]
    findings += gap_findings(clean_ts, kind, tf)
    findings += sequence_findings(
        raw, plan.clean, outlier_threshold=outlier_threshold, stale_run=stale_run
    )
    report = QualityReport(
        symbol=symbol,
        timeframe=tf.name,
        market=kind,
        source=source,
        n_rows=int(raw.ts.size),
        n_bars=int(plan.clean.size),
        first_ts=stamp(clean_ts[0]) if clean_ts.size else None,
        last_ts=stamp(clean_ts[-1]) if clean_ts.size else None,
        findings=findings,
    )
    if policy == "report":
        report.bars = _as_bar_frame(bars)
        return report
    if policy == "strict":
        if report.errors:
            raise_errors(report, report.errors)
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
        raise_errors(report, [f for f, _ in left], first_at=(stamps[0], rows[0] if rows else None))
    report.bars = _bar_frame(raw, plan.clean, report)
    return report


def _as_bar_frame(bars: pd.DataFrame) -> pd.DataFrame | None:
    try:
        return check_bar_frame(bars)
    except BarDataError:
        return None
