"""Resample bars to a higher timeframe, and align higher-timeframe bars to a lower index.

Convention (see :class:`~mlengine.data.schema.Timeframe`): a bar stamped ``t`` of timeframe
``tf`` covers ``[t, t + tf)`` and is known only at its close, ``t + tf``.

Binning. A target bin of timeframe ``H`` starts at ``anchor + k * H`` where ``anchor`` is
``origin + offset`` (``origin="epoch"`` is 1970-01-01 UTC, a Thursday; use e.g.
``offset="22h"`` for FX days that start at 22:00 UTC, ``offset="4D"`` for weeks that start on
Monday). Every source bar must lie wholly inside one bin, so source stamps must sit on the
source grid relative to the anchor.

* Empty bins (market closed) are dropped, never forward-filled.
* Bins with missing source bars inside are kept: their OHLCV aggregate the bars that exist.
  :func:`bar_counts` reports how many source bars each output bin holds (the full count is
  ``H / source timeframe``), so a caller can judge completeness without a column being
  added to the bar frame.
* Partial bins at the edges: the first bin is partial when the data start after its open,
  the last when the data end before its close. ``drop_partial=True`` (the default) drops
  both; the open (resp. close) of such a bin would not be the bin's true open (close).
"""

from __future__ import annotations

import datetime
from typing import Literal, cast

import numpy as np
import pandas as pd

from mlengine.data.schema import (
    INDEX_NAME,
    OHLCV,
    BarDataError,
    Timeframe,
    TimeframeError,
    check_bar_frame,
)

__all__ = ["align_to_lower", "bar_counts", "closed_positions", "default_prefix", "resample"]

_AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
_EPOCH = pd.Timestamp(0, tz="UTC")

Origin = Literal["epoch"] | pd.Timestamp | str


def _anchor(origin: Origin, offset: str | pd.Timedelta | None) -> int:
    """The bin anchor ``origin + offset`` as nanoseconds since the epoch."""
    if offset is None and isinstance(origin, str) and origin == "epoch":
        return 0
    if isinstance(origin, str) and origin == "epoch":
        start = _EPOCH
    else:
        try:
            start = pd.Timestamp(origin)
        except (TypeError, ValueError) as err:
            raise BarDataError(f"origin must be 'epoch' or a timestamp, got {origin!r}") from err
        start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
    try:
        shift = pd.Timedelta(0) if offset is None else pd.Timedelta(offset)
    except (TypeError, ValueError) as err:
        raise BarDataError(f"offset must be a time span such as '22h', got {offset!r}") from err
    return int((start + shift).as_unit("ns").value)


def _timeframes(bars: pd.DataFrame, timeframe: str | Timeframe) -> tuple[Timeframe, Timeframe]:
    source = Timeframe.parse(bars.attrs["timeframe"])
    target = Timeframe.parse(timeframe)
    target_ns, source_ns = int(target.delta.value), int(source.delta.value)
    if target_ns < source_ns:
        raise TimeframeError(
            f"cannot resample {source} bars to the lower timeframe {target}: "
            "resampling only aggregates to a higher timeframe"
        )
    if target_ns % source_ns:
        raise TimeframeError(
            f"target timeframe {target} is not a whole multiple of the source timeframe {source}"
        )
    return source, target


def _bins(
    bars: pd.DataFrame,
    timeframe: str | Timeframe,
    origin: Origin,
    offset: str | pd.Timedelta | None,
) -> tuple[np.ndarray, Timeframe, Timeframe, int]:
    """Bin number of every source bar; checks that each bar lies inside one bin."""
    check_bar_frame(bars)
    source, target = _timeframes(bars, timeframe)
    anchor = _anchor(origin, offset)
    index = cast(pd.DatetimeIndex, bars.index)  # check_bar_frame made sure
    rel = (index if index.unit == "ns" else index.as_unit("ns")).asi8 - anchor
    step_ns, src_ns = int(target.delta.value), int(source.delta.value)
    off_grid = np.flatnonzero(rel % src_ns)
    if off_grid.size:
        i = int(off_grid[0])
        raise BarDataError(
            f"bar stamped {bars.index[i]} is off the {source} grid anchored at "
            f"{pd.Timestamp(anchor, tz='UTC')}, so it would straddle two {target} bins",
            source=bars.attrs.get("symbol"),
            row=i + 1,
        )
    return rel // step_ns, source, target, anchor  # floor division: correct before the anchor


def _keep_mask(
    uniq: np.ndarray, bars: pd.DataFrame, source: Timeframe, target: Timeframe, anchor: int
) -> np.ndarray:
    """Per output bin (the sorted bin numbers ``uniq``), False for a partial first or last bin."""
    keep = np.ones(uniq.size, dtype=bool)
    if uniq.size == 0:
        return keep
    step_ns = int(target.delta.value)
    first_open = int(bars.index[0].value)
    last_close = int(bars.index[-1].value) + int(source.delta.value)
    if first_open > anchor + int(uniq[0]) * step_ns:
        keep[0] = False
    if last_close < anchor + (int(uniq[-1]) + 1) * step_ns:
        keep[-1] = False
    return keep


def _aggregate(bars: pd.DataFrame, codes: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The bin numbers present (sorted) and each OHLCV column aggregated per bin, value for
    value what ``bars.groupby(codes).agg(_AGG)`` gives (open = first, high = max, low = min,
    close = last, volume = sum). Source stamps strictly increase, so each bin is one run of
    rows: without NaN the reductions are numpy's ``reduceat`` over the runs, which is what
    pandas' groupby does for sorted groups, without its per-call overhead (checked bit for
    bit by tests/test_fastpath_mts.py); with NaN, pandas' NaN-skipping groupby itself."""
    values = bars.to_numpy(dtype=np.float64)
    if not len(values):
        return codes[:0], {c: np.empty(0) for c in OHLCV}
    if np.isnan(values).any():
        agg = bars.groupby(codes, sort=True).agg(_AGG)
        return agg.index.to_numpy(), {c: agg[c].to_numpy(dtype=np.float64) for c in OHLCV}
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    col = {c: np.ascontiguousarray(values[:, j]) for j, c in enumerate(OHLCV)}
    out = {
        "open": col["open"][starts],
        "high": np.maximum.reduceat(col["high"], starts),
        "low": np.minimum.reduceat(col["low"], starts),
        "close": col["close"][ends - 1],
        "volume": np.add.reduceat(col["volume"], starts),
    }
    return codes[starts], out


def resample(
    bars: pd.DataFrame,
    timeframe: str | Timeframe,
    *,
    origin: Origin = "epoch",
    offset: str | pd.Timedelta | None = None,
    drop_partial: bool = True,
) -> pd.DataFrame:
    """Aggregate a bar frame to the higher ``timeframe`` (a whole multiple of the source's).

    open = first, high = max, low = min, close = last, volume = sum (pandas' resample
    semantics, so NaN values are skipped). Returns a bar frame with the same ``symbol`` (and
    any other attrs) and ``attrs["timeframe"]`` set to the target. Raises
    :class:`TimeframeError` for a lower or non-multiple target and :class:`BarDataError`
    for an invalid frame or a bar off the source grid. See the module docstring for bins.
    """
    codes, source, target, anchor = _bins(bars, timeframe, origin, offset)
    # Only non-empty bins appear; the reductions are those of pandas' groupby-aggregate
    # (_AGG), computed on the contiguous runs of the precomputed integer bin numbers.
    uniq, agg = _aggregate(bars, codes)
    if drop_partial:
        keep = _keep_mask(uniq, bars, source, target, anchor)
        if not keep.all():
            uniq, agg = uniq[keep], {c: v[keep] for c, v in agg.items()}
    index = pd.DatetimeIndex(
        (anchor + uniq.astype(np.int64) * int(target.delta.value)).astype("datetime64[ns]"),
        name=INDEX_NAME,
    ).tz_localize("UTC")
    out = pd.DataFrame(np.column_stack([agg[c] for c in OHLCV]), index=index, columns=list(OHLCV))
    out.attrs.update(bars.attrs)
    out.attrs["timeframe"] = target.name
    return out


def bar_counts(
    bars: pd.DataFrame,
    timeframe: str | Timeframe,
    *,
    origin: Origin = "epoch",
    offset: str | pd.Timedelta | None = None,
    drop_partial: bool = True,
) -> pd.Series:
    """Number of source bars in each bin of :func:`resample` (same arguments, same index).

    A complete bin holds ``timeframe / source timeframe`` bars; fewer means bars were
    missing inside it (a gap, a halt) and its OHLCV cover only the bars present.
    """
    codes, source, target, anchor = _bins(bars, timeframe, origin, offset)
    uniq, counts = np.unique(codes, return_counts=True)
    if drop_partial:
        keep = _keep_mask(uniq, bars, source, target, anchor)
        uniq, counts = uniq[keep], counts[keep]
    index = pd.DatetimeIndex(
        (anchor + uniq.astype(np.int64) * int(target.delta.value)).astype("datetime64[ns]"),
        name=INDEX_NAME,
    ).tz_localize("UTC")
    return pd.Series(counts.astype(np.int64), index=index, name="n_bars")


def default_prefix(timeframe: str | Timeframe) -> str:
    """Column prefix for a timeframe: ``4h`` → ``h4``, ``15m`` → ``m15``, ``1d`` → ``d1``."""
    name = Timeframe.parse(timeframe).name
    return f"{name[-1]}{name[:-1]}"


def _utc_index(index: pd.Index, what: str) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise BarDataError(f"{what} must be a DatetimeIndex, got {type(index).__name__}")
    if index.tz is None:
        raise BarDataError(f"{what} must be tz-aware (UTC), got a naive DatetimeIndex")
    out = index  # UTC in nanoseconds: converted only when it is not already
    if out.tz is not datetime.UTC:
        out = out.tz_convert("UTC")
    if out.unit != "ns":
        out = out.as_unit("ns")
    if out.hasnans:
        i = int(np.flatnonzero(out.isna())[0])
        raise BarDataError(f"{what} holds NaT at position {i}", row=i + 1)
    steps = np.diff(out.asi8)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise BarDataError(
            f"{what} must be strictly increasing; position {i} ({out[i]}) is not", row=i + 1
        )
    return out


def _frame_timeframe(given: str | Timeframe | None, frame: object, what: str) -> Timeframe:
    if given is not None:
        return Timeframe.parse(given)
    attrs = getattr(frame, "attrs", {})
    if "timeframe" not in attrs:
        raise TimeframeError(
            f"{what} timeframe unknown: pass {what}_timeframe= or give a frame with "
            "attrs['timeframe']"
        )
    return Timeframe.parse(attrs["timeframe"])


def align_to_lower(
    higher: pd.DataFrame,
    lower_index: pd.DatetimeIndex | pd.DataFrame,
    *,
    lower_timeframe: str | Timeframe | None = None,
    higher_timeframe: str | Timeframe | None = None,
    prefix: str | None = None,
    include_ts: bool = False,
) -> pd.DataFrame:
    """Map higher-timeframe rows onto a lower-timeframe index using closed bars only.

    ``higher`` is indexed by higher bar open times: a bar frame, or features computed on one
    (a value at ``T`` known at ``T + htf``). The row at lower time ``t`` holds the most
    recent higher row ``T`` that had closed by the close of lower bar ``t``:

        higher bar ``T`` is available at lower row ``t``  iff  ``T + htf <= t + ltf``

    Rows before the first closed higher bar are NaN. Columns are renamed
    ``{prefix}_{column}`` (prefix default: :func:`default_prefix`, e.g. ``h4_close``);
    ``include_ts=True`` adds ``{prefix}_ts``, the open time of the higher bar used.
    Timeframes default to ``attrs["timeframe"]`` of ``higher`` and of ``lower_index`` when
    it is a frame. The rule uses nominal closes, so a partial last higher bin (from
    ``resample(drop_partial=False)``) only appears once its full period has passed.
    """
    htf = _frame_timeframe(higher_timeframe, higher, "higher")
    ltf = _frame_timeframe(lower_timeframe, lower_index, "lower")
    lower = _utc_index(
        lower_index.index if isinstance(lower_index, pd.DataFrame) else lower_index,
        "lower index",
    )
    pos = closed_positions(higher.index, lower, higher_timeframe=htf, lower_timeframe=ltf)
    pre = default_prefix(htf) if prefix is None else prefix
    right = higher.rename(columns=lambda c: f"{pre}_{c}")
    if include_ts:
        right = right.assign(**{f"{pre}_ts": _utc_index(higher.index, "higher index")})
    right = right.set_axis(pd.RangeIndex(len(right)), axis=0)
    # a missing position (-1) reindexes to a row of NaN, with the usual dtype promotion
    out = right.reindex(np.where(pos >= 0, pos, len(right)))
    return out.set_axis(pd.DatetimeIndex(lower, name=lower.name), axis=0)


def closed_positions(
    higher_index: pd.Index,
    lower_index: pd.Index,
    *,
    higher_timeframe: str | Timeframe,
    lower_timeframe: str | Timeframe,
) -> np.ndarray:
    """Per row of ``lower_index``, the position in ``higher_index`` of the higher row that
    :func:`align_to_lower` puts there (the last higher bar closed by the lower bar's close,
    ``T + htf <= t + ltf``, exact closes included), ``-1`` before the first; an ``int64``
    array.

    The positions alone, by binary search on the close times: what a caller that indexes
    arrays needs, without building frames. Both indexes are checked as there (tz-aware,
    strictly increasing, no NaT)."""
    htf = Timeframe.parse(higher_timeframe)
    ltf = Timeframe.parse(lower_timeframe)
    lower = _utc_index(lower_index, "lower index")
    high = _utc_index(higher_index, "higher index")
    closes = _shifted(high, htf, "higher index")
    # the last higher close <= the lower close
    pos = np.searchsorted(closes, _shifted(lower, ltf, "lower index"), side="right") - 1
    return pos.astype(np.int64, copy=False)


def _shifted(index: pd.DatetimeIndex, timeframe: Timeframe, what: str) -> np.ndarray:
    """Close times (nanoseconds) of the bars opening at ``index`` (UTC, ns unit)."""
    opens = index.asi8
    closes = opens + int(timeframe.delta.value)
    if closes.size and closes[-1] < opens[-1]:  # wrapped past the int64 range
        raise BarDataError(f"{what}: the {timeframe} bar at {index[-1]} closes out of range")
    return closes
