"""Timestamps of raw bars: parse text or epoch numbers to UTC, and infer the bar step.

Private to :mod:`mlengine.data.sources`, which re-exports :func:`parse_timestamps`,
:func:`infer_timeframe` and :data:`TIMESTAMP_FORMATS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlengine.data.schema import INDEX_NAME, BarDataError, Timeframe, TimeframeError

#: Timestamp formats, tried in this order: ``ISO8601`` is pandas' ISO 8601 parser (offsets
#: included), the rest go to pyarrow's strptime. Day-first ``%d/%m/%Y`` is used only when
#: month-first fails on some row of the column.
TIMESTAMP_FORMATS: tuple[str, ...] = (
    "ISO8601",
    "%d.%m.%Y %H:%M:%S.%f",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M:%S.%f GMT%z",
    "%Y-%m-%d %I-%p",
    "%Y-%m-%d %I %p",
    "%Y-%m-%d %I:%M %p",
    "%Y-%m-%d %I:%M:%S %p",
    "%Y-%m-%d %H:%M:%S UTC",
    "%Y.%m.%d %H:%M:%S",
    "%Y.%m.%d %H:%M",
    "%Y.%m.%d",
    "%Y%m%d %H%M%S",
    "%Y%m%d %H:%M:%S",
    "%Y%m%d %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
)

#: How many first rows decide a column's format.
SAMPLE_ROWS = 256
_NUMERIC = r"^[+-]?\d+(\.\d*)?$"
_OFFSET = r"\d:\d{2}(:\d{2}(\.\d+)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)$"
_FRACTION = r"^(?P<head>.*:\d{2})\.(?P<frac>\d{1,9})(?P<tail>.*)$"


def parse_timestamps(
    values: Sequence[str] | pd.Series | pa.Array | pa.ChunkedArray,
    *,
    source: str | None = None,
    column: str | None = None,
    rows: np.ndarray | None = None,
) -> pd.DatetimeIndex:
    """Parse timestamps in one of :data:`TIMESTAMP_FORMATS`, or epoch numbers, to UTC.

    The format is chosen on the first rows and must fit every row. Offsets are converted
    (naive means UTC; a mix of naive and offset-bearing values is an error). Strings of digits
    are epoch seconds, milliseconds, microseconds or nanoseconds by magnitude (below 1e11,
    1e14, 1e17, above), except 8 digits, which are ``%Y%m%d``. ``rows`` (default 1, 2, ...)
    numbers the values in error messages.
    """
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    rows = np.arange(1, len(arr) + 1) if rows is None else rows
    where: dict[str, Any] = {"source": source or "<values>", "column": column}
    try:
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            index = pd.DatetimeIndex(pd.to_datetime(arr.to_pandas(), utc=True))
        elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
            index = _from_numbers(arr.to_pandas())
        else:
            index = _from_strings(arr.cast(pa.string()), rows, where)
        index = index.as_unit("ns")
    except (OverflowError, pd.errors.OutOfBoundsDatetime) as err:
        raise BarDataError(f"timestamp outside 1677-09-22..2262-04-11: {err}", **where) from err
    nat = np.flatnonzero(index.isna())
    if nat.size:
        raise BarDataError("missing timestamp", row=int(rows[nat[0]]), **where)
    return index.rename(INDEX_NAME)


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """The canonical name of the most common positive step between sorted distinct times."""
    steps = np.diff(np.sort(index.as_unit("ns").asi8))
    steps = steps[steps > 0]
    if steps.size == 0:
        raise TimeframeError("cannot infer a timeframe from < 2 distinct times: pass timeframe=")
    counts = pd.Series(steps).value_counts()  # hashing: few distinct steps
    step = pd.Timedelta(int(counts.index[counts == counts.max()].min()), unit="ns")
    minutes, rest = divmod(step, pd.Timedelta(minutes=1))
    if rest or not minutes:
        raise TimeframeError(f"bars are {step} apart, not a whole number of minutes")
    if pd.Timedelta(days=28) <= step <= pd.Timedelta(days=31):
        raise TimeframeError(f"bars are {step} apart: monthly bars are not supported")
    return timeframe_of_minutes(minutes).name


def timeframe_of_minutes(minutes: int) -> Timeframe:
    """The canonical timeframe of a step of ``minutes`` (``60`` -> ``1h``, ``1440`` -> ``1d``)."""
    for unit, size in (("w", 7 * 1440), ("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return Timeframe.parse(f"{minutes // size}{unit}")
    return Timeframe.parse(f"{minutes}m")


# --- parsing -----------------------------------------------------------------------------------


def _from_numbers(numbers: pd.Series) -> pd.DatetimeIndex:
    """Epoch numbers, unit by magnitude (see :func:`parse_timestamps`)."""
    values = pd.to_numeric(numbers, errors="coerce")
    finite = values[np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))]
    top = float(np.abs(finite).max()) if len(finite) else 0.0
    unit: Literal["s", "ms", "us", "ns"] = (
        "s" if top < 1e11 else "ms" if top < 1e14 else "us" if top < 1e17 else "ns"
    )
    return pd.DatetimeIndex(pd.to_datetime(values, unit=unit, utc=True))


def _from_strings(arr: pa.Array, rows: np.ndarray, where: dict[str, Any]) -> pd.DatetimeIndex:
    arr = pc.utf8_trim_whitespace(arr)
    empty = pc.fill_null(pc.equal(arr, ""), True).to_numpy(zero_copy_only=False)
    if empty.any():
        raise BarDataError("missing timestamp", row=int(rows[np.argmax(empty)]), **where)
    first = str(arr[0].as_py()) if len(arr) else ""
    if re.fullmatch(_NUMERIC, first) and not re.fullmatch(r"\d{8}", first):
        for kind in (pa.int64(), pa.float64()):  # int64 keeps epoch nanoseconds exact
            try:
                return _from_numbers(pc.cast(arr, kind).to_pandas())
            except pa.ArrowInvalid:
                pass
        bad = np.flatnonzero(pd.to_numeric(arr.to_pandas(), errors="coerce").isna().to_numpy())
        raise BarDataError(f"unparsable epoch timestamp {arr[int(bad[0])].as_py()!r}",
                           row=int(rows[bad[0]]), **where)  # fmt: skip
    trials = {fmt: _strptime(arr.slice(0, SAMPLE_ROWS), fmt)[1] for fmt in TIMESTAMP_FORMATS}
    # the formats that fit the first rows, else those that fit the first row
    fits = [f for f, ok in trials.items() if ok.all()] or [f for f, ok in trials.items() if ok[0]]
    if not fits:
        raise BarDataError(
            f"unrecognised timestamp {first!r}; supported formats: "
            f"{', '.join(TIMESTAMP_FORMATS)}, epoch numbers",
            row=int(rows[0]),
            **where,
        )
    first_bad = -1
    for fmt in fits:
        ns, ok = _strptime(arr, fmt)
        if ok.all():
            if fmt == "ISO8601":
                _check_offsets(arr, rows, where)
            return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")
        if first_bad < 0:
            first_bad = int(np.argmin(ok))
    raise BarDataError(
        f"unparsable timestamp {arr[first_bad].as_py()!r}: it does not match the format "
        f"{fits[0]!r} of the first rows",
        row=int(rows[first_bad]),
        **where,
    )


def _strptime(arr: pa.Array, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """int64 nanoseconds (UTC) and a parsed mask, for one format."""
    if fmt == "ISO8601":
        parsed = pd.to_datetime(arr.to_pandas(), format="ISO8601", utc=True, errors="coerce")
        ok = parsed.notna().to_numpy()
        return pd.DatetimeIndex(parsed).as_unit("ns").asi8, ok
    # pyarrow's strptime is ~20x faster than pandas' for non-ISO formats but has no %f:
    # split the fraction off and add it back as nanoseconds.
    fraction = None
    if "%S.%f" in fmt:
        arr, fraction = _split_fraction(arr)
        fmt = fmt.replace("%S.%f", "%S")
    stamps = pc.strptime(arr, format=fmt, unit="ns", error_is_null=True)
    ns = pc.cast(stamps, pa.int64())
    if fraction is not None:
        ns = pc.add(ns, fraction)
    return ns.fill_null(0).to_numpy(), ns.is_valid().to_numpy(zero_copy_only=False)


def _split_fraction(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The text without its fraction of a second, and the fraction in nanoseconds."""
    first = re.match(_FRACTION, arr[0].as_py() or "") if len(arr) else None
    lengths = pc.min_max(pc.utf8_length(arr))
    if first and lengths["min"].as_py() == lengths["max"].as_py():
        # fixed-width text, the usual case: slicing is several times faster than the regex
        (start, stop), end = first.span("frac"), len(first.group(0))
        frac = pc.utf8_slice_codeunits(arr, start, stop)
        dot = pc.utf8_slice_codeunits(arr, start - 1, start)
        if pc.all(pc.and_(pc.utf8_is_digit(frac), pc.equal(dot, "."))).as_py():
            head = pc.utf8_slice_codeunits(arr, 0, start - 1)
            tail = pc.utf8_slice_codeunits(arr, stop, end)
            return pc.binary_join_element_wise(head, tail, ""), _nanoseconds(frac)
    parts = pc.extract_regex(arr, _FRACTION)
    text = pc.binary_join_element_wise(parts.field("head"), parts.field("tail"), "")
    return text, _nanoseconds(parts.field("frac"))


def _nanoseconds(fraction: pa.Array) -> pa.Array:
    return pc.cast(pc.utf8_rpad(fraction, 9, "0"), pa.int64())


def _check_offsets(arr: pa.Array, rows: np.ndarray, where: dict[str, Any]) -> None:
    has = pc.match_substring_regex(arr, _OFFSET).to_numpy(zero_copy_only=False)
    if has.any() and not has.all():
        naive = int(np.argmin(has))
        raise BarDataError(
            f"mixed timezones without offset: {arr[naive].as_py()!r} has no UTC offset while "
            f"row {int(rows[np.argmax(has)])} has one",
            row=int(rows[naive]),
            **where,
        )
