"""Read bars from CSV and Parquet files in the usual vendor layouts.

:func:`read_raw` turns a file into a *raw bar frame*: columns ``open high low close volume``
(float64) plus ``row`` (int64, the 1-based data row of the source, header and banner not
counted, blank lines not counted), indexed by ``ts`` (UTC, nanoseconds) in FILE ORDER — it may
be unsorted and hold duplicates; the quality validator reports and repairs those.
``attrs`` holds ``symbol``, ``timeframe``, ``source`` (the file name) and ``market`` (if
given). :func:`read_bars` validates the raw frame and returns a bar frame.

Detection, with no per-file arguments (``columns`` overrides any of it):

* Format: Parquet by suffix (``.parquet``, ``.pq``) or magic bytes, else CSV (gzip etc. by
  suffix). Delimiter: ``,`` ``;`` tab or ``|``. Header: the first line (of the first 64) that
  names a time column and open/high/low/close columns; lines above it (banners) are skipped.
* Names, case-insensitive, ignoring spaces and ``_-.<>``: time ``datetime``, ``timestamp``,
  ``ts``, ``open_time``, ``gmt time``, ..., ``time``, ``date``; a ``date`` column plus a
  ``time`` column holding only times of day are joined. ``open``/``o``, ``high``/``h``,
  ``low``/``l``, ``close``/``c``/``last``/``price``. ``Adj Close`` is ignored.
* Volume, when a file has several: an explicit base-asset column (``base_volume``,
  ``volumefrom``) first; then ``volume <CCY>`` where CCY is the base currency of the symbol
  (or the only non-quote currency); then a plain ``volume``/``vol``/``v``/``tickvol``; a lone
  ``volume <quote CCY>`` last. Vendors that publish both (CryptoDataDownload) put the
  quote-currency volume in the plain column, hence the order.
* Symbol: the ``symbol`` argument, else a ``symbol``/``ticker``/``pair`` column, else the file
  stem less ``_``-separated tokens naming a timeframe, date or price side
  (``EURUSD_1h_2017_ask.csv`` -> ``EURUSD``). A symbol column with several symbols needs
  ``symbol=``, which selects its rows. A ``symbol=`` that differs from the file's single symbol
  (ignoring case and punctuation) is an error: it most likely names the wrong file.
* Timeframe: the ``timeframe`` argument, else the most common step between sorted distinct
  timestamps (:func:`infer_timeframe`).

The reader rejects only what cannot become numbers and instants: unparsable or missing
timestamps, non-numeric, empty or infinite prices, non-numeric volume. An empty volume stays
NaN ("unknown"; the validator warns) rather than becoming an invented 0. Implausible values
(prices <= 0, high < low, ...) are the validator's to report.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlengine.data._timestamps import (
    SAMPLE_ROWS,
    TIMESTAMP_FORMATS,
    infer_timeframe,
    parse_timestamps,
)
from mlengine.data.schema import OHLCV, PRICE_COLUMNS, BarDataError, Timeframe, check_symbol
from mlengine.data.validate import ROW_COLUMN, validate

__all__ = [
    "ROW_COLUMN",
    "TIMESTAMP_FORMATS",
    "PathOrBuffer",
    "infer_timeframe",
    "parse_timestamps",
    "read_bars",
    "read_raw",
]

PathOrBuffer = str | os.PathLike[str] | IO[bytes] | IO[str]

_REQUIRED = ("time", *PRICE_COLUMNS)
_ROLES = ("time", "date", *OHLCV, "symbol")
_TIME_ALIASES = ("datetime", "timestamp", "ts", "opentime", "timeopen", "gmttime", "utctime",
                 "timeutc", "datetimeutc", "timestamputc", "localtime", "time", "date", "day",
                 "t", "indexlevel0")  # fmt: skip
_ALIASES: dict[str, tuple[str, ...]] = {
    "time": _TIME_ALIASES,
    "open": ("open", "o", "openprice", "first"),
    "high": ("high", "h", "highprice", "max"),
    "low": ("low", "l", "lowprice", "min"),
    "close": ("close", "c", "closeprice", "last", "price"),
    "symbol": ("symbol", "ticker", "pair", "instrument"),
}
_BASE_VOLUME = ("basevolume", "volumebase", "baseassetvolume", "volumefrom")
_PLAIN_VOLUME = ("volume", "vol", "v", "tickvolume", "tickvol", "realvolume")
_CCY_VOLUME = re.compile(r"^\s*vol(?:ume)?[\s_.\-]+([a-z0-9]{2,6})\s*$", re.IGNORECASE)
_QUOTE_CCYS = frozenset(("usd", "usdt", "usdc", "busd", "tusd", "dai", "eur", "gbp", "jpy",
                         "krw", "try", "brl", "aud", "cad", "chf", "cny", "rub"))  # fmt: skip
_DELIMITERS = (",", ";", "\t", "|")
_HEAD_BYTES = 1 << 16
_HEAD_LINES = 64
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_STRIP_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".csv", ".txt", ".tsv", *_PARQUET_SUFFIXES)
_TIME_OF_DAY = r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$"
_NAME_NOISE = re.compile(
    r"\d+(m|min|h|d|w)|[mhdw]\d+|(19|20)\d\d(\d\d){0,2}|ask|bid|mid|ohlcv?|bars|candles|data",
    re.IGNORECASE,
)
_NULL_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "#n/a", "-nan"})


# --- public API ------------------------------------------------------------------------------


def read_raw(
    path_or_buffer: PathOrBuffer,
    *,
    symbol: str | None = None,
    timeframe: str | Timeframe | None = None,
    market: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read a CSV or Parquet file of bars into a raw bar frame (file order, see module doc).

    ``columns`` maps roles (``time date open high low close volume symbol``) to column names
    of the file and overrides detection. Raises :class:`BarDataError` naming the source, row
    and column of input that cannot be read, :class:`TimeframeError` for a bad timeframe.
    """
    overrides = _check_overrides(columns)
    source, data = _open(path_or_buffer)
    if _is_parquet(source, data):
        table, roles, names = _read_parquet(data, source, overrides)
    else:
        table, roles, names = _read_csv(data, source, overrides)
    rows = np.arange(1, table.num_rows + 1, dtype=np.int64)
    _check_repeated_header(table, roles, rows, source)

    file_symbols: list[str] = []
    if "symbol" in roles:
        table, rows, file_symbols = _select_symbol(table, roles["symbol"], symbol, rows, source)
    name = symbol or (file_symbols[0] if file_symbols else _stem(source))
    if name == "<buffer>":
        raise BarDataError("cannot tell the symbol of a buffer: pass symbol=", source=source)
    roles["volume"] = roles.get("volume") or _choose_volume(names, name, source)

    index = _time_column(table, roles, rows, source)
    values = {c: _numbers(table.column(roles[c]), roles[c], rows, source, c) for c in OHLCV}
    frame = pd.DataFrame({**values, ROW_COLUMN: rows}, index=index)
    frame.attrs["symbol"] = check_symbol(name)
    frame.attrs["timeframe"] = (
        Timeframe.parse(timeframe).name if timeframe is not None else infer_timeframe(index)
    )
    frame.attrs["source"] = source
    if market is not None:
        frame.attrs["market"] = market
    return frame


def read_bars(
    path_or_buffer: PathOrBuffer,
    *,
    symbol: str | None = None,
    timeframe: str | Timeframe | None = None,
    market: str | None = None,
    columns: Mapping[str, str] | None = None,
    policy: Literal["strict", "repair", "report"] = "repair",
) -> pd.DataFrame:
    """Read a file with :func:`read_raw` and return the validator's bar frame.

    ``policy`` is the validator's: ``repair`` (sort, drop duplicates and partial bars),
    ``strict`` (raise on any error finding) or ``report``. Call
    :func:`mlengine.data.validate.validate` on :func:`read_raw` output for the full report.
    """
    raw = read_raw(path_or_buffer, symbol=symbol, timeframe=timeframe, market=market,
                   columns=columns)  # fmt: skip
    report = validate(raw, policy=policy, market=market)
    if report.bars is None:
        raise BarDataError("no bars left after validation", source=raw.attrs["source"])
    return report.bars


# --- opening and column detection ------------------------------------------------------------


def _check_overrides(columns: Mapping[str, str] | None) -> dict[str, str]:
    overrides = dict(columns or {})
    unknown = sorted(set(overrides) - set(_ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {unknown} in columns=: use {list(_ROLES)}")
    return overrides


def _open(path_or_buffer: PathOrBuffer) -> tuple[str, str | bytes]:
    """The source name, and a path (str) or the buffer's bytes."""
    if isinstance(path_or_buffer, str | os.PathLike):
        path = Path(path_or_buffer)
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        return path.name, str(path)
    content = path_or_buffer.read()
    data = content.encode() if isinstance(content, str) else bytes(content)
    name = getattr(path_or_buffer, "name", None)
    return (Path(name).name if isinstance(name, str) else "<buffer>"), data


def _stream(data: str | bytes) -> Any:
    return (
        pa.input_stream(data, compression="detect") if isinstance(data, str) else io.BytesIO(data)
    )


def _is_parquet(source: str, data: str | bytes) -> bool:
    if source.lower().endswith(_PARQUET_SUFFIXES):
        return True
    with _stream(data) as f:
        return bytes(f.read(4)) == b"PAR1"


def _stem(source: str) -> str:
    """The symbol a file name implies: its stem less ``_``-separated tokens that name a
    timeframe, a date or a price side (``EURUSD_1h_2017_ask.csv`` -> ``EURUSD``)."""
    name = source
    while name.lower().endswith(_STRIP_SUFFIXES):
        name = name.rsplit(".", 1)[0]
    kept = [t for t in re.split(r"[_\s]+", name) if t and not _NAME_NOISE.fullmatch(t)]
    return "_".join(kept) or name


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.casefold())


def _resolve(names: Sequence[str], overrides: Mapping[str, str]) -> dict[str, str]:
    """Map the roles found among ``names`` to column names (volume is chosen later)."""
    by_norm: dict[str, str] = {}
    for name in names:
        by_norm.setdefault(_norm(name), name)
    found: dict[str, str] = {}
    for role in _ROLES:
        if role in overrides:
            wanted = overrides[role]
            match = wanted if wanted in names else by_norm.get(_norm(wanted))
            if match is not None:
                found[role] = match
        elif role in _ALIASES:
            hit = next((by_norm[a] for a in _ALIASES[role] if a in by_norm), None)
            if hit is not None:
                found[role] = hit
    if "date" not in overrides and "time" in found and _norm(found["time"]) == "time":
        date = by_norm.get("date") or by_norm.get("day")
        if date is not None:
            found["date"] = date  # joined with time only if time holds times of day
    return found


def _volume_columns(names: Sequence[str]) -> list[str]:
    return [n for n in names if _norm(n) in _BASE_VOLUME + _PLAIN_VOLUME or _CCY_VOLUME.match(n)]


def _choose_volume(names: Sequence[str], symbol: str, source: str) -> str:
    """The volume column by the rule in the module docstring."""
    norms = {_norm(n): n for n in reversed(names)}
    for alias in _BASE_VOLUME:
        if alias in norms:
            return norms[alias]
    ccy = {n: m.group(1).casefold() for n in names if (m := _CCY_VOLUME.match(n))}
    base = [n for n, c in ccy.items() if _norm(symbol).startswith(c)]
    if len(base) != 1:
        base = [n for n, c in ccy.items() if c not in _QUOTE_CCYS]
    if len(base) == 1:
        return base[0]
    for alias in _PLAIN_VOLUME:
        if alias in norms:
            return norms[alias]
    if len(ccy) == 1:
        return next(iter(ccy))
    what = f"several volume columns {list(ccy)}" if ccy else "missing required column 'volume'"
    raise BarDataError(
        f"{what}; columns found: {list(names)}: pass columns={{'volume': NAME}}",
        source=source,
        column="volume",
    )


def _needed(roles: Mapping[str, str], names: Sequence[str]) -> list[str]:
    cols = [roles[r] for r in _ROLES if r in roles] + _volume_columns(names)
    return list(dict.fromkeys(cols))


# --- CSV -------------------------------------------------------------------------------------


def _read_csv(
    data: str | bytes, source: str, overrides: Mapping[str, str]
) -> tuple[pa.Table, dict[str, str], list[str]]:
    with _stream(data) as f:
        head = bytes(f.read(_HEAD_BYTES))
    lines = head.decode("utf-8-sig", errors="replace").splitlines()
    if len(head) == _HEAD_BYTES:
        lines = lines[:-1]  # the last line may be cut
    skip, delimiter, names, roles = _find_header(lines[:_HEAD_LINES], source, overrides)
    duplicated = [n for n in set(_needed(roles, names)) if names.count(n) > 1]
    if duplicated:
        raise BarDataError(f"column appears more than once in the header: {names}",
                           source=source, row=None, column=duplicated[0])  # fmt: skip
    first = next((ln for ln in lines[skip + 1 :] if ln.strip()), None)
    if first is None and len(head) < _HEAD_BYTES:
        raise BarDataError(f"no data rows after the header (line {skip + 1})", source=source)
    decimal = "."
    if delimiter != "," and first is not None:
        cells = dict(zip(names, next(csv.reader([first], delimiter=delimiter)), strict=False))
        if any(re.fullmatch(r"\s*-?\d+,\d+\s*", cells.get(roles[c], "")) for c in PRICE_COLUMNS):
            decimal = ","
    needed = _needed(roles, names)
    strings = {roles[r]: pa.string() for r in ("time", "date", "symbol") if r in roles}
    numbers = {c: pa.float64() for c in needed if c not in strings}

    def read(types: dict[str, pa.DataType], threads: bool = True) -> pa.Table:
        bad: list[Any] = []

        def on_invalid(row: Any) -> str:
            bad.append(row)
            return "error"

        try:
            return pacsv.read_csv(
                _stream(data),
                read_options=pacsv.ReadOptions(
                    skip_rows=skip + 1, column_names=names, use_threads=threads
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, invalid_row_handler=on_invalid
                ),
                convert_options=pacsv.ConvertOptions(
                    include_columns=needed, column_types=types, decimal_point=decimal
                ),
            )
        except pa.ArrowInvalid as err:
            if not bad:
                raise
            if bad[0].number is None:  # only a single-threaded read numbers the rows
                return read(types, threads=False)
            row = bad[0].number - skip - 1
            raise BarDataError(
                f"row has {bad[0].actual_columns} field(s) where the header has "
                f"{bad[0].expected_columns} (delimiter {delimiter!r}): {bad[0].text[:120]!r}",
                source=source,
                row=row,
            ) from err

    try:
        try:
            table = read({**strings, **numbers})
        except pa.ArrowInvalid as err:
            if "conversion error" not in str(err):
                raise
            # some value is not a number: read text and let _numbers name the row and value
            table = read({**strings, **{c: pa.string() for c in numbers}})
            if decimal == ",":
                for c in numbers:
                    i = table.column_names.index(c)
                    table = table.set_column(i, c, pc.replace_substring(table[c], ",", "."))
    except pa.ArrowInvalid as err:
        raise BarDataError(f"cannot read as CSV: {err}", source=source) from err
    if table.num_rows == 0:
        raise BarDataError(f"no data rows after the header (line {skip + 1})", source=source)
    return table, roles, names


def _find_header(
    lines: Sequence[str], source: str, overrides: Mapping[str, str]
) -> tuple[int, str, list[str], dict[str, str]]:
    """Line number (0-based), delimiter, column names and roles of the header."""
    best: tuple[int, list[str], dict[str, str]] = (-1, [], {})
    for i, line in enumerate(lines):
        for delimiter in _DELIMITERS:
            if delimiter not in line:
                continue
            fields = [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]
            roles = _resolve(fields, overrides)
            if all(r in roles for r in _REQUIRED):
                return i, delimiter, fields, roles
            score = sum(r in roles for r in _REQUIRED)
            if score > best[0]:
                best = (score, fields, roles)
    if not any(line.strip() for line in lines):
        raise BarDataError("file is empty", source=source)
    score, fields, roles = best
    if score >= 2:
        missing = [overrides.get(r, r) for r in _REQUIRED if r not in roles]
        raise BarDataError(
            f"missing required column(s) {missing}; columns found: {fields}",
            source=source,
            column=missing[0],
        )
    first = next(line for line in lines if line.strip())
    raise BarDataError(
        f"could not find a header with time, open, high, low, close columns in the first "
        f"{len(lines)} lines, splitting on ',', ';', tab or '|'; the first line reads "
        f"{first[:120]!r}",
        source=source,
        row=None,
    )


# --- Parquet ---------------------------------------------------------------------------------


def _read_parquet(
    data: str | bytes, source: str, overrides: Mapping[str, str]
) -> tuple[pa.Table, dict[str, str], list[str]]:
    try:
        file = pq.ParquetFile(data if isinstance(data, str) else pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as err:
        raise BarDataError(f"cannot read as Parquet: {err}", source=source) from err
    names = list(file.schema_arrow.names)
    roles = _resolve(names, overrides)
    missing = [overrides.get(r, r) for r in _REQUIRED if r not in roles]
    if missing:
        raise BarDataError(f"missing required column(s) {missing}; columns found: {names}",
                           source=source, column=missing[0])  # fmt: skip
    table = file.read(columns=_needed(roles, names))
    if table.num_rows == 0:
        raise BarDataError("no data rows", source=source)
    return table, roles, names


# --- columns to values -----------------------------------------------------------------------


def _check_repeated_header(
    table: pa.Table, roles: Mapping[str, str], rows: np.ndarray, source: str
) -> None:
    col = table.column(roles["time"])
    if not pa.types.is_string(col.type):
        return
    same = pc.equal(pc.utf8_lower(pc.utf8_trim_whitespace(col)), roles["time"].casefold())
    hits = np.flatnonzero(same.to_numpy(zero_copy_only=False) == True)  # noqa: E712 (nulls)
    if hits.size:
        raise BarDataError("the header line is repeated inside the data", source=source,
                           row=int(rows[hits[0]]), column=roles["time"])  # fmt: skip


def _select_symbol(
    table: pa.Table, column: str, symbol: str | None, rows: np.ndarray, source: str
) -> tuple[pa.Table, np.ndarray, list[str]]:
    """Keep the rows of ``symbol``; return the symbols of the file (one if it has one)."""
    col = pc.utf8_trim_whitespace(table.column(column).cast(pa.string()))
    found = [s for s in pc.unique(col).to_pylist() if s]
    if not found:
        return table, rows, []
    if symbol is None:
        if len(found) > 1:
            raise BarDataError(f"the file holds several symbols {found[:10]}: pass symbol=",
                               source=source, column=column)  # fmt: skip
        return table, rows, found
    matching = [s for s in found if _norm(s) == _norm(symbol)]
    if not matching:
        raise BarDataError(f"symbol={symbol!r} is not in the file, which holds {found[:10]}",
                           source=source, column=column)  # fmt: skip
    if len(found) == 1:
        return table, rows, [symbol]
    keep = pc.is_in(col, value_set=pa.array(matching))
    mask = keep.to_numpy(zero_copy_only=False).astype(bool)
    return table.filter(keep), rows[mask], [symbol]


def _time_column(
    table: pa.Table, roles: Mapping[str, str], rows: np.ndarray, source: str
) -> pd.DatetimeIndex:
    col = table.column(roles["time"])
    name = roles["time"]
    if "date" in roles and pa.types.is_string(col.type):
        sample = pc.utf8_trim_whitespace(col.slice(0, SAMPLE_ROWS).drop_null())
        if len(sample) and pc.all(pc.match_substring_regex(sample, _TIME_OF_DAY)).as_py():
            date = table.column(roles["date"])
            col = pc.binary_join_element_wise(date, col, " ")
            name = f"{roles['date']} + {roles['time']}"
    return parse_timestamps(col, source=source, column=name, rows=rows)


def _numbers(
    col: pa.ChunkedArray, name: str, rows: np.ndarray, source: str, role: str
) -> np.ndarray:
    """float64 values; non-numbers, missing or infinite prices raise (missing volume -> NaN)."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        text = col.to_pandas()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        token = text.str.strip().str.casefold()
        wrong = np.isnan(values) & text.notna().to_numpy() & ~token.isin(_NULL_TOKENS).to_numpy()
        if wrong.any():
            i = int(np.argmax(wrong))
            raise BarDataError(f"non-numeric value {text.iloc[i]!r}", source=source,
                               row=int(rows[i]), column=name)  # fmt: skip
    elif any(is_(col.type) for is_ in (pa.types.is_integer, pa.types.is_floating,
                                         pa.types.is_decimal, pa.types.is_null)):  # fmt: skip
        values = col.cast(pa.float64()).to_numpy()  # nulls become NaN
    else:
        raise BarDataError(f"holds {col.type}, not numbers", source=source, column=name)
    bad = np.isinf(values) if role == "volume" else ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        what = "missing value" if np.isnan(values[i]) else f"infinite value {values[i]}"
        raise BarDataError(what, source=source, row=int(rows[i]), column=name)
    return values
